//! The status page's content, rendered on the server from the [`StatusReport`].
//!
//! Pure: report and clock in, HTML out. The first view needs no JavaScript (a screenshot under
//! load, a browser with scripts off, a text browser on a server all see the numbers); the
//! page's script only fetches the same HTML again every 15 seconds, swaps it in and ticks the
//! countdowns. One renderer, so the page cannot show two versions of the truth.
//!
//! Rules the page keeps:
//!
//! * **Each task appears once**, in its most urgent section: *needs a person* first, then
//!   *expiring soon* (the deadline is near, a failing attempt included), then *retrying after
//!   an error*.
//! * **One date format**: ISO 8601 in UTC, `2026-12-07 03:43 UTC`, everywhere (the daemon's
//!   and the browser's time zones may differ; UTC is what the logs say).
//! * **An outage colours everything it affects**: when the last contact with the fTTP failed,
//!   the banner says so in a sentence (the technical detail folded away), and the cards whose
//!   numbers cannot move while it lasts (last contact, expiring, retrying, open tasks) turn
//!   amber or red. The page never looks greener than it is.
//! * Every value is escaped; no patient data is in the report to begin with.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::status::{StatusReport, TaskLine};

/// Deadlines closer than this are red.
const RED_HOURS: i64 = 12;

/// `2026-12-07 03:43 UTC`: the page's one date format.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn type_name(t: &str) -> String {
    match t {
        "send_idat" => "Send patient data".to_owned(),
        "dic_psn_available" => "Pseudonym ready".to_owned(),
        "repeat_request" => "Repeat registration".to_owned(),
        other => format!("Unknown task type \"{other}\""),
    }
}

const STATES: [(&str, &str, &str); 6] = [
    ("needs-attention", "Needs a person", "Needs a person"),
    (
        "awaiting-approval",
        "Awaiting approval",
        "Waiting for a person to approve the release",
    ),
    ("retry-wait", "Retrying", "Retrying after an error"),
    (
        "in-doubt",
        "Checking delivery",
        "Checking whether the fTTP received the answer",
    ),
    ("running", "Being answered", "Being answered right now"),
    ("received", "Waiting", "Waiting to be answered"),
];

fn state_words(state: &str) -> &str {
    STATES
        .iter()
        .find(|(s, _, _)| *s == state)
        .map_or(state, |(_, _, words)| words)
}

/// `1 alert`, `3 alerts`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "just now", "5 minutes ago", …
fn ago(secs: i64) -> String {
    let s = secs.max(0).unsigned_abs();
    match s {
        0..60 => "just now".to_owned(),
        60..3600 => counted(s / 60, "minute", "minutes") + " ago",
        3600..172_800 => counted(s / 3600, "hour", "hours") + " ago",
        _ => counted(s / 86_400, "day", "days") + " ago",
    }
}

/// The time left as the script writes it too: `1 d 5 h 59 min`, `3 h 2 min 5 s`, `42 s`.
fn time_left(secs: i64) -> String {
    if secs <= 0 {
        return "deadline passed".to_owned();
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d} d {h} h {m} min")
    } else if h > 0 {
        format!("{h} h {m} min {s} s")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else {
        format!("{s} s")
    }
}

/// The page's state of contact with the fTTP, from what the daemon reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact {
    /// The last poll succeeded (or the report comes from the store alone).
    Fine,
    /// The last poll failed; the agent retries by itself.
    Failing,
    /// The daemon is not ready (credentials refused, no success for too long, starting).
    Down,
}

pub fn contact(r: &StatusReport) -> Contact {
    match &r.daemon {
        Some(d) if !d.ready => Contact::Down,
        Some(d) if d.last_cycle_error.is_some() => Contact::Failing,
        _ => Contact::Fine,
    }
}

/// The tasks of each section, each task once: (needs a person, expiring soon, retrying).
pub fn sections(r: &StatusReport) -> (Vec<&TaskLine>, Vec<&TaskLine>, Vec<&TaskLine>) {
    let attention: Vec<&TaskLine> = r.needs_attention.iter().collect();
    let taken = |key: &str| attention.iter().any(|t| t.key == key);
    let mut expiring: Vec<&TaskLine> = r
        .open
        .iter()
        .filter(|t| t.urgent && !taken(&t.key))
        .collect();
    expiring.sort_by_key(|t| t.seconds_to_expiry.unwrap_or(i64::MAX));
    let retrying: Vec<&TaskLine> = r
        .failing
        .iter()
        .filter(|t| !taken(&t.key) && !expiring.iter().any(|e| e.key == t.key))
        .collect();
    (attention, expiring, retrying)
}

/// The page's `<header>` content and `<main>`: everything the report shows.
pub fn render(r: &StatusReport, now: DateTime<Utc>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let contact = contact(r);
    let warn = r.warn_window_seconds.max(1);
    let (attention, expiring, retrying) = sections(r);

    // Header.
    let site = match &r.daemon {
        Some(d) => format!(
            "Study {} · site {} · agent version {}",
            esc(&d.study),
            esc(&d.target),
            esc(&d.version)
        ),
        None => "Status from the agent's store".to_owned(),
    };
    let _ = write!(
        h,
        "<header class=\"top\"><div><h1>Patient clearing agent</h1>\
         <p class=\"sub\" data-testid=\"site\">{site}</p></div>\
         <p class=\"updated\" data-testid=\"updated\" data-generated=\"{}\">Status of {} · refreshes every 15 seconds</p></header>",
        r.generated_at.to_rfc3339(),
        when(r.generated_at)
    );

    h.push_str("<main>");
    banners(&mut h, r, contact);

    // Tiles.
    let s = &r.summary;
    let on_hold = contact != Contact::Fine;
    h.push_str("<section class=\"tiles\" aria-label=\"Overview\">");
    let level = |bad: bool, outage_level: &'static str| -> &'static str {
        if on_hold {
            outage_level
        } else if bad {
            "amber"
        } else {
            "green"
        }
    };
    tile(
        &mut h,
        "tile-attention",
        s.needs_attention,
        "need a person",
        if s.needs_attention > 0 {
            "red"
        } else {
            "green"
        },
        None,
    );
    let hours = warn / 3600;
    tile(
        &mut h,
        "tile-expiring",
        s.expiring_soon,
        &format!("expire within {hours} hours"),
        if on_hold && s.expiring_soon > 0 {
            "red outage"
        } else {
            level(s.expiring_soon > 0, "amber outage")
        },
        on_hold.then_some("cannot be answered while the fTTP is out of reach"),
    );
    tile(
        &mut h,
        "tile-failing",
        s.failing,
        "retrying after an error",
        if on_hold {
            "amber outage"
        } else if s.failing > 0 {
            "amber"
        } else {
            ""
        },
        None,
    );
    tile(
        &mut h,
        "tile-open",
        s.open,
        "open tasks the agent handles by itself",
        if on_hold { "amber outage" } else { "" },
        on_hold.then_some("on hold until the fTTP answers again"),
    );
    // Last contact.
    let (poll_text, poll_when) = match r.last_successful_poll {
        Some(t) => (ago((now - t).num_seconds()), when(t)),
        None => ("never".to_owned(), String::new()),
    };
    let poll_class = match contact {
        Contact::Down => "red outage",
        Contact::Failing => "amber outage",
        Contact::Fine if r.last_successful_poll.is_some() => "green",
        Contact::Fine => "amber",
    };
    let failed_at = r
        .daemon
        .as_ref()
        .filter(|_| on_hold)
        .and_then(|d| d.last_cycle_at)
        .map(|t| {
            format!(
                "<span class=\"note\">last attempt failed at {}</span>",
                when(t)
            )
        })
        .unwrap_or_default();
    let _ = write!(
        h,
        "<div class=\"tile {poll_class}\" id=\"tile-poll\"><span class=\"num small\" data-testid=\"last-poll\">{}</span>\
         <span class=\"when\">{}</span><span class=\"label\">last successful contact with the fTTP</span>{failed_at}</div>",
        esc(&poll_text),
        esc(&poll_when)
    );
    let rec = &r.records;
    let _ = write!(
        h,
        "<div class=\"tile\" id=\"tile-pseudonyms\"><span class=\"num\" data-testid=\"tile-pseudonyms\">{}</span>\
         <span class=\"label\">pseudonyms obtained, of {} records</span></div></section>",
        rec.pseudonymised, rec.total
    );

    // Needs a person.
    if !attention.is_empty() {
        h.push_str(
            "<section id=\"attention\"><h2 class=\"red\">Needs a person</h2>\
             <p class=\"hint\">The agent cannot answer these tasks by itself. Each row says why and what to do. A task that is not answered before its deadline is lost.</p>\
             <table><thead><tr><th>Task</th><th>Why</th><th>What to do</th><th>Deadline</th></tr></thead><tbody>",
        );
        for t in &attention {
            let (why, what) = why_and_what(t);
            let _ = write!(
                h,
                "<tr data-testid=\"attention-row\" data-task-key=\"{}\">{}<td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&t.key),
                task_cell(t),
                esc(&why),
                esc(&what),
                if t.unknown_record {
                    foreign_filter_help(t, r)
                } else {
                    String::new()
                },
                deadline(t, now, warn)
            );
        }
        h.push_str("</tbody></table></section>");
    }

    // Awaiting approval: a person decides each release; codes only, never values.
    if !r.awaiting_approval.is_empty() {
        let need = r
            .approvals_required
            .map_or(String::new(), |n| format!(" (a release needs {n})"));
        let _ = write!(
            h,
            "<section id=\"approval\"><h2 class=\"amber\">Awaiting approval</h2>\
             <p class=\"hint\">The fTTP asks for these patients' data. Nothing is sent until it is approved{}: \
             <code>ttp-agent approve TASK</code>, or <code>ttp-agent deny TASK --reason ...</code>. \
             A task not approved before its deadline expires and nothing is sent.</p>\
             <table><thead><tr><th>Task</th><th>Requested data</th><th>Approvals so far</th><th>Time left</th></tr></thead><tbody>",
            esc(&need)
        );
        for a in &r.awaiting_approval {
            let by = if a.approved_by.is_empty() {
                "none".to_owned()
            } else {
                format!("{} ({})", a.approved_by.len(), a.approved_by.join(", "))
            };
            let _ = write!(
                h,
                "<tr data-testid=\"approval-row\" data-task-key=\"{}\"><td>{}<span class=\"key\">{}</span></td>\
                 <td data-testid=\"approval-elements\">{}</td><td data-testid=\"approval-count\">{}</td><td>{}</td></tr>",
                esc(&a.key),
                esc(&type_name("send_idat")),
                esc(&a.key),
                esc(&a.elements.join(", ")),
                esc(&by),
                deadline_at(a.expires, now, warn)
            );
        }
        h.push_str("</tbody></table></section>");
    }

    // Consent withdrawn: the count, and the local ids a coordinator acts on downstream.
    if r.withdrawals.count > 0 {
        let _ = write!(
            h,
            "<section id=\"withdrawn\"><h2>Consent withdrawn</h2>\
             <p class=\"hint\"><span data-testid=\"withdrawn-count\">{}</span> record(s): their patient data and Bloom filters were deleted, their tasks are closed and never answered. \
             The pseudonyms stay in the export (column <code>withdrawn</code>) for deleting the data downstream.</p>\
             <table><thead><tr><th>Local id</th><th>Withdrawn</th><th>By</th></tr></thead><tbody>",
            r.withdrawals.count
        );
        for l in &r.withdrawals.recent {
            let _ = write!(
                h,
                "<tr data-testid=\"withdrawn-row\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.local_id),
                esc(&when(l.at)),
                esc(&l.by)
            );
        }
        h.push_str("</tbody></table></section>");
    }

    // Expiring soon.
    if !expiring.is_empty() {
        h.push_str(
            "<section id=\"expiring\"><h2 class=\"amber\">Expiring soon</h2>\
             <p class=\"hint\">These tasks reach their deadline soon. The agent keeps working on them; one that failed at its last attempt shows the error.</p>\
             <table><thead><tr><th>Task</th><th>Where it stands</th><th>Time left</th></tr></thead><tbody>",
        );
        for t in &expiring {
            let error = t
                .last_error
                .as_deref()
                .map(|e| format!("<span class=\"err\">last attempt failed: {}</span>", esc(e)))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr data-testid=\"expiring-row\" data-task-key=\"{}\">{}<td>{}{error}</td><td>{}</td></tr>",
                esc(&t.key),
                task_cell(t),
                esc(state_words(&t.state)),
                deadline(t, now, warn)
            );
        }
        h.push_str("</tbody></table></section>");
    }

    // Retrying.
    if !retrying.is_empty() {
        h.push_str(
            "<section id=\"failing\"><h2 class=\"amber\">Retrying after an error</h2>\
             <p class=\"hint\">The last attempt to answer these tasks failed. The agent tries again by itself; nothing to do unless the same error keeps coming back.</p>\
             <table><thead><tr><th>Task</th><th>Attempts</th><th>Last error</th><th>Next try</th></tr></thead><tbody>",
        );
        for t in &retrying {
            let next = match t.next_attempt {
                Some(at) => moment(at, now),
                None => "soon".to_owned(),
            };
            let _ = write!(
                h,
                "<tr data-testid=\"failing-row\" data-task-key=\"{}\">{}<td class=\"n\">{}</td><td class=\"err\">{}</td><td>{next}</td></tr>",
                esc(&t.key),
                task_cell(t),
                t.attempts,
                esc(t.last_error.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</tbody></table></section>");
    }

    // Open tasks and records.
    h.push_str("<div class=\"columns\"><section><h2>Open tasks</h2>");
    if r.open_by_type.is_empty() {
        h.push_str("<p class=\"hint\" id=\"open-none\">No open tasks.</p>");
    } else {
        h.push_str("<table class=\"matrix\" id=\"open-table\"><thead><tr><th>Task type</th>");
        for (_, short, _) in STATES {
            let _ = write!(h, "<th class=\"n\">{short}</th>");
        }
        h.push_str("<th class=\"n\">All</th></tr></thead><tbody>");
        for (ty, states) in &r.open_by_type {
            let _ = write!(h, "<tr><th>{}</th>", esc(&type_name(ty)));
            let mut total = 0;
            for (state, _, _) in STATES {
                let n = states.get(state).copied().unwrap_or(0);
                total += n;
                let _ = write!(
                    h,
                    "<td class=\"n{}\" data-testid=\"open-count\" data-type=\"{}\" data-state=\"{state}\">{n}</td>",
                    if n == 0 { " zero" } else { "" },
                    esc(ty)
                );
            }
            let _ = write!(
                h,
                "<td class=\"n\" data-testid=\"open-total\" data-type=\"{}\">{total}</td></tr>",
                esc(ty)
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = write!(
        h,
        "</section><section><h2>Records registered by this site</h2><table class=\"kv\">\
         <tr><th>Registered records</th><td data-testid=\"records-total\">{}</td></tr>\
         <tr><th>Pseudonym obtained</th><td data-testid=\"records-pseudonymised\">{}</td></tr>\
         <tr><th>Waiting for the fTTP's clearing</th><td data-testid=\"records-awaiting\">{}</td></tr>\
         <tr><th>Not yet sent to the fTTP</th><td data-testid=\"records-pending\" class=\"{}\">{}</td></tr>\
         <tr><th>Rejected by the fTTP</th><td data-testid=\"records-rejected\">{}</td></tr>\
         </table></section></div>",
        rec.total,
        rec.pseudonymised,
        rec.awaiting_clearing,
        if on_hold && rec.pending_registration > 0 {
            "outage"
        } else {
            ""
        },
        rec.pending_registration,
        rec.rejected
    );

    chart(&mut h, r);
    h.push_str("</main>");
    h
}

fn tile(h: &mut String, id: &str, n: usize, label: &str, class: &str, note: Option<&str>) {
    let note = note
        .map(|n| format!("<span class=\"note\">{}</span>", esc(n)))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<div class=\"tile {class}\" id=\"{id}\"><span class=\"num\" data-testid=\"{id}\">{n}</span>\
         <span class=\"label\">{}</span>{note}</div>",
        esc(label)
    );
}

fn banners(h: &mut String, r: &StatusReport, contact: Contact) {
    h.push_str("<div id=\"banners\">");
    if let Some(d) = &r.daemon {
        let since = d
            .last_cycle_at
            .map(|t| format!(" (last attempt {})", when(t)))
            .unwrap_or_default();
        let (class, sentence, detail) = match contact {
            Contact::Down => {
                let reason = d.not_ready_reason.as_deref().unwrap_or("");
                let sentence = if reason.starts_with("starting") {
                    "The agent has just started and has not reached the fTTP yet. Tasks are answered once it has.".to_owned()
                } else if d.last_cycle_class.as_deref() == Some("auth") {
                    "The fTTP refuses the agent's access key, so no task can be answered. Tell your IT team: the key must be renewed.".to_owned()
                } else {
                    format!(
                        "The agent has not been able to work with the fTTP for a while{since}. No task is answered until this is fixed; tell your IT team."
                    )
                };
                let detail = [Some(reason), d.last_cycle_error.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" — ");
                ("red", sentence, detail)
            }
            Contact::Failing => (
                "amber",
                if d.last_cycle_class.as_deref() == Some("store") {
                    format!(
                        "The agent could not read or write its own data at its last attempt{since}. It tries again by itself; if this persists, tell your IT team (disk full or permissions)."
                    )
                } else {
                    format!(
                        "The agent could not reach the fTTP at its last attempt{since}. It tries again by itself; tasks wait until contact is back."
                    )
                },
                d.last_cycle_error.clone().unwrap_or_default(),
            ),
            Contact::Fine => ("", String::new(), String::new()),
        };
        if contact != Contact::Fine {
            let _ = write!(
                h,
                "<div class=\"banner {class}\" role=\"alert\" data-testid=\"outage\">{}{}</div>",
                esc(&sentence),
                folded(&detail)
            );
        }
    }
    let w = &r.webhook;
    if w.failing > 0 {
        let _ = write!(
            h,
            "<div class=\"banner amber\" role=\"alert\" data-testid=\"banner\">{} could not be sent to the alert webhook yet; the agent keeps trying.{}</div>",
            counted(w.pending as u64, "alert", "alerts"),
            folded(w.last_error.as_deref().unwrap_or(""))
        );
    }
    if w.dropped > 0 {
        let _ = write!(
            h,
            "<div class=\"banner amber\" role=\"alert\" data-testid=\"banner\">{} never delivered to the alert webhook.<span>This page still shows every task that needs a person.</span></div>",
            counted(w.dropped, "alert was", "alerts were")
        );
    }
    h.push_str("</div>");
}

/// Technical detail, folded away under the human sentence.
pub fn folded(detail: &str) -> String {
    if detail.is_empty() {
        return String::new();
    }
    format!(
        "<details data-testid=\"technical-detail\"><summary>Technical detail</summary><code class=\"err\">{}</code></details>",
        esc(detail)
    )
}

fn task_cell(t: &TaskLine) -> String {
    format!(
        "<td>{}<span class=\"key\">{}</span></td>",
        esc(&type_name(&t.task_type)),
        esc(&t.key)
    )
}

/// The reason reads "what happened; a hint" (`domain::Attention`); the advice comes separately.
fn why_and_what(t: &TaskLine) -> (String, String) {
    let text = t.reason.as_deref().unwrap_or("unknown");
    let (why, rest) = text.split_once("; ").unwrap_or((text, ""));
    let what = match (&t.advice, rest) {
        (Some(a), _) => a.clone(),
        (None, "") => "Ask your IT team to look at this task with `ttp-agent status`.".to_owned(),
        (None, rest) => capitalise(rest),
    };
    (capitalise(why), what)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// For a task whose filter matches no local record: what a coordinator can find out, and a
/// summary (task id, type, deadline, site; no patient data) to send to the fTTP operator.
fn foreign_filter_help(t: &TaskLine, r: &StatusReport) -> String {
    let site = r
        .daemon
        .as_ref()
        .map(|d| format!("Study {}, site {}", d.study, d.target))
        .unwrap_or_default();
    let deadline = t.expires.map_or("none".to_owned(), when);
    let summary = format!(
        "Task {} ({}) asks for a patient this site has no record of. Deadline: {deadline}. {site}. Which patient is meant, and was the record registered from this site?",
        t.key, t.task_type
    );
    format!(
        "<ol class=\"steps\" data-testid=\"foreign-filter-help\">\
         <li>Check this site's recent submissions: was the patient's record submitted here (and not rejected)? If it was submitted with other data, submit it again as it is now.</li>\
         <li>If not, send the fTTP operator the summary below: it names the task, not the patient.</li>\
         <li>When it is settled, mark the task handled: <code>ttp-agent resolve handled {} --comment \"…\"</code>.</li></ol>\
         <textarea class=\"copy\" readonly rows=\"3\" data-testid=\"copy-summary\" aria-label=\"Summary for the fTTP operator\">{}</textarea>\
         <button type=\"button\" class=\"copy-button\" data-copy=\"{}\">Copy summary</button>",
        esc(&t.key),
        esc(&summary),
        esc(&t.key)
    )
}

/// A deadline: the time left (ticked by the script) and the moment.
fn deadline(t: &TaskLine, now: DateTime<Utc>, warn: i64) -> String {
    deadline_at(t.expires, now, warn)
}

fn deadline_at(expires: Option<DateTime<Utc>>, now: DateTime<Utc>, warn: i64) -> String {
    let Some(at) = expires else {
        return "<span class=\"when\">no deadline</span>".to_owned();
    };
    let left = (at - now).num_seconds();
    let class = if left < RED_HOURS * 3600 {
        " red"
    } else if left <= warn {
        " amber"
    } else {
        ""
    };
    format!(
        "<span><span class=\"countdown{class}\" data-until=\"{}\" data-deadline=\"yes\">{}</span><span class=\"when\">{}</span></span>",
        at.to_rfc3339(),
        time_left(left),
        when(at)
    )
}

/// A moment that is not a deadline (the next retry).
fn moment(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = (at - now).num_seconds();
    format!(
        "<span><span class=\"countdown\" data-until=\"{}\" data-deadline=\"no\">{}</span><span class=\"when\">{}</span></span>",
        at.to_rfc3339(),
        if left <= 0 {
            "any moment".to_owned()
        } else {
            format!("in {}", time_left(left))
        },
        when(at)
    )
}

/// The smallest of 2, 4, 6, 8, 10, 20, 40, … that is at least `v`: even, so the middle
/// gridline falls on a whole number.
fn nice_ceil(v: u64) -> u64 {
    let mut m = 1u64;
    loop {
        for step in [2, 4, 6, 8, 10] {
            if step * m >= v {
                return step * m;
            }
        }
        m = m.saturating_mul(10);
    }
}

fn chart(h: &mut String, r: &StatusReport) {
    let days: Vec<(&str, u64, u64)> = r
        .history
        .iter()
        .map(|d| {
            (
                d.day.as_str(),
                d.done.values().sum::<u64>(),
                d.expired.values().sum::<u64>(),
            )
        })
        .collect();
    let done: u64 = days.iter().map(|d| d.1).sum();
    let expired: u64 = days.iter().map(|d| d.2).sum();
    let _ = write!(
        h,
        "<section><h2>Tasks finished per day</h2><p class=\"hint\" id=\"history-summary\">\
         <span data-testid=\"history-done-total\">{done}</span> answered and \
         <span data-testid=\"history-expired-total\">{expired}</span> expired in the last {} days (UTC days).</p>\
         <div id=\"chart\" role=\"img\" aria-label=\"Bar chart of tasks answered and expired per day\">",
        days.len()
    );
    let (w, ht, left, right, top, bottom) = (1100.0, 240.0, 40.0, 10.0, 28.0, 34.0);
    let (plot_w, plot_h) = (w - left - right, ht - top - bottom);
    let max = nice_ceil(days.iter().map(|d| d.1.max(d.2)).max().unwrap_or(0)) as f64;
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {w} {ht}\" data-testid=\"history-chart\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for f in [0.0, 0.5, 1.0] {
        let y = top + plot_h - f * plot_h;
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" class=\"axis\"></line>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            f * max
        );
    }
    let group = if days.is_empty() {
        plot_w
    } else {
        plot_w / days.len() as f64
    };
    let bar = (group * 0.34).clamp(2.0, 28.0);
    for (i, (day, d, e)) in days.iter().enumerate() {
        let cx = left + group * i as f64 + group / 2.0;
        let _ = write!(
            h,
            "<g data-testid=\"history-day\" data-day=\"{}\" data-done=\"{d}\" data-expired=\"{e}\">",
            esc(day)
        );
        for (kind, n, x) in [("done", *d, cx - bar - 1.0), ("expired", *e, cx + 1.0)] {
            let bh = n as f64 / max * plot_h;
            let _ = write!(
                h,
                "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{bh}\" class=\"bar-{kind}\"><title>{n} {} on {}</title></rect>",
                top + plot_h - bh,
                if kind == "done" {
                    "answered"
                } else {
                    "expired"
                },
                esc(day)
            );
            if n > 0 {
                let _ = write!(
                    h,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"value\">{n}</text>",
                    x + bar / 2.0,
                    top + plot_h - bh - 3.0
                );
            }
        }
        // The day in the page's one date format (ISO); the year only where it changes.
        let label = if i == 0 || day.get(..4) != days[i - 1].0.get(..4) {
            (*day).to_owned()
        } else {
            day.get(5..).unwrap_or(day).to_owned()
        };
        let _ = write!(
            h,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
            ht - bottom + 16.0,
            esc(&label)
        );
    }
    let _ = write!(
        h,
        "<g><rect x=\"{}\" y=\"6\" width=\"12\" height=\"12\" class=\"bar-done\"></rect><text x=\"{}\" y=\"16\">answered</text>\
         <rect x=\"{}\" y=\"6\" width=\"12\" height=\"12\" class=\"bar-expired\"></rect><text x=\"{}\" y=\"16\">expired (lost)</text></g></svg></div></section>",
        w - 210.0,
        w - 193.0,
        w - 120.0,
        w - 103.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: serde_json::Value) -> StatusReport {
        serde_json::from_value(json).unwrap()
    }

    fn task(key: &str, state: &str, urgent: bool, error: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "key": key, "task_type": "send_idat", "state": state,
            "expires": "2026-06-02T10:00:00Z", "seconds_to_expiry": 86400, "urgent": urgent,
            "attempts": 2, "last_error": error, "reason": if state == "needs-attention" { Some("no local record for the task's filter; check") } else { None },
            "first_seen": "2026-06-01T09:00:00Z", "unknown_record": state == "needs-attention",
        })
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "generated_at": "2026-06-01T10:00:00Z",
            "last_successful_poll": "2026-06-01T09:59:30Z",
            "warn_window_seconds": 172800,
            "summary": {"open": 2, "needs_attention": 1, "expiring_soon": 2, "failing": 2},
            "open_by_type": {"send_idat": {"needs-attention": 1, "retry-wait": 2}},
            "open": [task("a", "retry-wait", true, Some("HTTP 503")), task("b", "retry-wait", false, Some("HTTP 503"))],
            "failing": [task("a", "retry-wait", true, Some("HTTP 503")), task("b", "retry-wait", false, Some("HTTP 503"))],
            "needs_attention": [task("c", "needs-attention", true, None)],
            "records": {"total": 3, "pending_registration": 1, "awaiting_clearing": 0, "pseudonymised": 2, "rejected": 0},
            "history": [{"day": "2026-05-31", "done": {"send_idat": 3}, "expired": {}},
                        {"day": "2026-06-01", "done": {}, "expired": {"send_idat": 1}}],
            "daemon": {"version": "0.1.0", "started_at": "2026-06-01T08:00:00Z", "study": "s<x>",
                       "target": "t", "ready": true, "not_ready_reason": null,
                       "last_cycle_at": "2026-06-01T09:59:30Z", "last_cycle_error": null},
        })
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Withdrawals: the count and each local id (escaped), newest first as the report has
    /// them; no section without any.
    #[test]
    fn withdrawals_show_their_count_and_local_ids() {
        assert!(!render(&report(base()), now()).contains("Consent withdrawn"));
        let mut json = base();
        json["withdrawals"] = serde_json::json!({
            "count": 2,
            "recent": [
                {"local_id": "case-<2>", "at": "2026-06-01T09:00:00Z", "by": "dpo"},
                {"local_id": "case-1", "at": "2026-05-31T09:00:00Z", "by": "alice"},
            ],
        });
        let html = render(&report(json), now());
        assert!(
            html.contains("<span data-testid=\"withdrawn-count\">2</span>"),
            "{html}"
        );
        assert_eq!(html.matches("data-testid=\"withdrawn-row\"").count(), 2);
        assert!(html.contains("case-&lt;2&gt;") && !html.contains("case-<2>"));
        assert!(html.contains("2026-06-01 09:00 UTC"));
    }

    fn keys(html: &str, testid: &str) -> Vec<String> {
        let needle = format!("data-testid=\"{testid}\" data-task-key=\"");
        html.match_indices(&needle)
            .map(|(i, _)| {
                let rest = &html[i + needle.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect()
    }

    #[test]
    fn each_task_appears_once_in_its_most_urgent_section() {
        let html = render(&report(base()), now());
        assert_eq!(keys(&html, "attention-row"), ["c"]);
        assert_eq!(keys(&html, "expiring-row"), ["a"]);
        assert_eq!(keys(&html, "failing-row"), ["b"]);
    }

    #[test]
    fn dates_have_one_format_with_the_time_zone() {
        let html = render(&report(base()), now());
        assert!(html.contains("2026-06-02 10:00 UTC"), "{html}");
        assert!(!html.contains(" AM") && !html.contains(" PM"));
        assert!(
            html.contains(">2026-05-31<") && html.contains(">06-01<"),
            "{html}"
        );
    }

    #[test]
    fn values_are_escaped() {
        let html = render(&report(base()), now());
        assert!(html.contains("Study s&lt;x&gt;"), "{html}");
        assert!(!html.contains("s<x>"));
    }

    #[test]
    fn an_outage_colours_every_card_it_affects_and_folds_the_detail() {
        let mut r = base();
        r["daemon"]["last_cycle_error"] = "connection refused (os error 111)".into();
        let html = render(&report(r), now());
        let banner = &html[html.find("data-testid=\"outage\"").unwrap()..];
        assert!(banner.contains("could not reach the fTTP"), "{banner}");
        let detail = banner.find("<details").unwrap();
        assert!(
            banner.find("os error 111").unwrap() > detail,
            "the raw error is folded"
        );
        for id in ["tile-expiring", "tile-failing", "tile-open", "tile-poll"] {
            let tag = &html[html[..html.find(&format!("id=\"{id}\"")).unwrap()]
                .rfind('<')
                .unwrap()..];
            let tag = &tag[..tag.find('>').unwrap()];
            assert!(tag.contains("outage"), "{id}: {tag}");
            assert!(!tag.contains("green"), "{id}: {tag}");
        }
        // Without an outage, no card is marked.
        let html = render(&report(base()), now());
        assert!(!html.contains("outage"), "{html}");
    }

    #[test]
    fn a_foreign_filter_says_what_to_do_and_offers_a_summary() {
        let html = render(&report(base()), now());
        let help = &html[html.find("data-testid=\"foreign-filter-help\"").unwrap()..];
        assert!(help.contains("recent submissions"), "{help}");
        assert!(help.contains("ttp-agent resolve handled c"), "{help}");
        let summary = &html[html.find("data-testid=\"copy-summary\"").unwrap()..];
        assert!(summary.contains("Task c (send_idat)"), "{summary}");
        assert!(summary.contains("2026-06-02 10:00 UTC"), "{summary}");
    }
}
