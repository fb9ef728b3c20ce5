//! The status report: what is open, what expires soon, what needs a human, what was obtained.
//!
//! Built from the store alone (no network), shared by `ttp-agent status`, the admin page and
//! the metrics. It names tasks by their key and records by their local id; it never contains
//! IDAT, Bloom filters or pseudonyms. The audit trail's entries are shown as stored: they name
//! tasks and records, and hold the comments people gave.
//!
//! The report is also the wire format of the daemon's `/api/status` (`ttp-agent status` asks
//! the running daemon when the store is locked by it), so it deserialises too. Fields added
//! later carry `#[serde(default)]`, so a report from a slightly older daemon still reads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Attention, ListingSummary, RegistrationBlocked, TaskRecord, TaskState};
use crate::handover::{self, HandoverStatus};
use crate::store::{AuditEntry, Store, StoreError};

/// How many of the newest audit entries the report shows.
pub const RECENT_AUDIT_ENTRIES: usize = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub last_successful_poll: Option<DateTime<Utc>>,
    /// The warning window before expiry the `urgent` flags were computed with.
    #[serde(default)]
    pub warn_window_seconds: i64,
    /// The headline numbers.
    #[serde(default)]
    pub summary: Summary,
    /// Open tasks: type → state → count.
    pub open_by_type: BTreeMap<String, BTreeMap<String, usize>>,
    /// Open tasks, most urgent first.
    pub open: Vec<TaskLine>,
    /// Open tasks whose last attempt failed (retrying or in doubt), most urgent first.
    #[serde(default)]
    pub failing: Vec<TaskLine>,
    pub needs_attention: Vec<TaskLine>,
    pub records: RecordSummary,
    pub history: Vec<DayLine>,
    /// Alert deliveries to the webhook (`[admin] webhook_url`).
    #[serde(default)]
    pub webhook: WebhookSummary,
    /// Set when the report comes from the running daemon (`/api/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonInfo>,
    /// Pseudonym hand-over: export backlog, webhook deliveries.
    #[serde(default)]
    pub handover: HandoverStatus,
    /// The newest manual actions (resolve commands, restores), oldest first.
    #[serde(default)]
    pub recent_audit: Vec<AuditEntry>,
    /// Information, not attention: the newest `send_idat` answers sent "as far as known",
    /// without requested elements the records do not hold (oldest first).
    #[serde(default)]
    pub answered_without_elements: Vec<AuditEntry>,
    /// Set while registration is paused because the fTTP refused whole requests.
    #[serde(default)]
    pub registration_blocked: Option<RegistrationBlocked>,
    /// What became of each task the fTTP listed at the last successful poll.
    #[serde(default)]
    pub last_listing: Option<ListingSummary>,
    /// `send_idat` tasks waiting for local users to approve the release of their IDAT, most
    /// urgent first (`[dispatch] idat_release = "approval"`).
    #[serde(default)]
    pub awaiting_approval: Vec<ApprovalLine>,
    /// Distinct approvals a release needs (`[dispatch] approvals_required`), when the report
    /// was made with the configuration at hand (`ttp-agent status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<usize>,
    /// Consent withdrawals (`ttp-agent withdraw`): how many, and the newest by local id.
    #[serde(default)]
    pub withdrawals: WithdrawalSummary,
}

/// How many records were withdrawn, and the newest [`RECENT_WITHDRAWALS`] of them (local id,
/// when, by whom), newest first. Local ids only: coordinators need them to act downstream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WithdrawalSummary {
    pub count: usize,
    pub recent: Vec<WithdrawalLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WithdrawalLine {
    pub local_id: String,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// How many withdrawals the report lists by local id.
pub const RECENT_WITHDRAWALS: usize = 50;

fn withdrawal_summary(store: &Store) -> Result<WithdrawalSummary, StoreError> {
    let mut all = store.withdrawals()?;
    all.sort_by(|a, b| b.at.cmp(&a.at).then(a.local_id.cmp(&b.local_id)));
    Ok(WithdrawalSummary {
        count: all.len(),
        recent: all
            .into_iter()
            .take(RECENT_WITHDRAWALS)
            .map(|w| WithdrawalLine {
                local_id: w.local_id,
                at: w.at,
                by: w.by,
            })
            .collect(),
    })
}

/// One task awaiting approval: what it asks for (element codes, never values), who approved
/// it so far, and the time left.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalLine {
    pub key: String,
    /// The requested IDAT element codes (`given`, `birthdate`, ...).
    pub elements: Vec<String>,
    /// The local users who approved it so far.
    pub approved_by: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
    pub seconds_to_expiry: Option<i64>,
    /// Within the warning window before expiry.
    pub urgent: bool,
    pub first_seen: DateTime<Utc>,
}

fn approval_line(rec: &TaskRecord, now: DateTime<Utc>, warn: chrono::Duration) -> ApprovalLine {
    let secs = rec.seconds_to_deadline(now);
    let elements = match &rec.task.kind {
        ttp_proto::TaskKind::SendIdat { elements, .. } => elements
            .iter()
            .map(|e| match e {
                ttp_proto::ElementRequest::Known(el) => el.code().to_owned(),
                ttp_proto::ElementRequest::Unknown(code) => code.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    ApprovalLine {
        key: rec.key.0.clone(),
        elements,
        approved_by: rec.approvals.iter().map(|a| a.by.clone()).collect(),
        expires: rec.deadline(),
        seconds_to_expiry: secs,
        urgent: secs.is_some_and(|s| s <= warn.num_seconds()),
        first_seen: rec.first_seen,
    }
}

/// The numbers a coordinator looks at first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Open tasks the agent works on by itself (not waiting for a person).
    pub open: usize,
    pub needs_attention: usize,
    /// Open or needs-attention tasks that expire within the warning window.
    pub expiring_soon: usize,
    /// Open tasks whose last attempt failed.
    pub failing: usize,
    /// `send_idat` tasks waiting for approval of their release.
    #[serde(default)]
    pub awaiting_approval: usize,
}

/// Webhook deliveries still to be made, and those given up on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSummary {
    pub pending: usize,
    /// Pending deliveries that have failed at least once.
    pub failing: usize,
    pub oldest_pending: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// The error of the most recent failed attempt.
    pub last_error: Option<String>,
    /// Deliveries abandoned after retrying for too long (since the store was created).
    pub dropped: u64,
}

/// What only the running daemon knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub study: String,
    pub target: String,
    pub ready: bool,
    /// Why `/readyz` answers 503, in plain words.
    pub not_ready_reason: Option<String>,
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// The error of the last poll cycle, if it failed.
    pub last_cycle_error: Option<String>,
    /// What kind of failure that was: `fetch` (the fTTP could not be reached or failed),
    /// `auth` (credentials refused), `store` (the agent's own store).
    #[serde(default)]
    pub last_cycle_class: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskLine {
    pub key: String,
    pub task_type: String,
    pub state: String,
    pub expires: Option<DateTime<Utc>>,
    pub seconds_to_expiry: Option<i64>,
    /// Within the warning window before expiry.
    pub urgent: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    /// What a person should do about a task that needs attention, in plain words.
    #[serde(default)]
    pub advice: Option<String>,
    pub first_seen: DateTime<Utc>,
    /// When a task waiting to be retried is tried again.
    #[serde(default)]
    pub next_attempt: Option<DateTime<Utc>>,
    /// The task names a Bloom filter no local record has (a foreign filter): the page shows
    /// what a coordinator can find out and a summary to send to the fTTP.
    #[serde(default)]
    pub unknown_record: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordSummary {
    pub total: u64,
    pub pending_registration: u64,
    pub awaiting_clearing: u64,
    pub pseudonymised: u64,
    pub rejected: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DayLine {
    pub day: String,
    pub done: BTreeMap<String, u64>,
    pub expired: BTreeMap<String, u64>,
}

pub fn task_type(rec: &TaskRecord) -> String {
    rec.task.kind.type_name().to_owned()
}

fn line(rec: &TaskRecord, now: DateTime<Utc>, warn: chrono::Duration) -> TaskLine {
    let secs = rec.seconds_to_deadline(now);
    TaskLine {
        key: rec.key.0.clone(),
        task_type: task_type(rec),
        state: rec.state.name().into(),
        expires: rec.deadline(),
        seconds_to_expiry: secs,
        urgent: secs.is_some_and(|s| s <= warn.num_seconds()),
        attempts: rec.attempts,
        last_error: rec.last_error.clone(),
        reason: match &rec.state {
            TaskState::NeedsAttention { reason } => Some(reason.to_string()),
            _ => None,
        },
        advice: match &rec.state {
            TaskState::NeedsAttention { reason } => advice(reason).map(str::to_owned),
            _ => None,
        },
        first_seen: rec.first_seen,
        next_attempt: match rec.state {
            TaskState::RetryWait { next_at } => Some(next_at),
            _ => None,
        },
        unknown_record: matches!(
            rec.state,
            TaskState::NeedsAttention {
                reason: Attention::UnknownRecord
            }
        ),
    }
}

/// What to do about a task that needs a person: the step a coordinator (or the site's IT)
/// takes, for the status page and alerts. `None` when nothing is left to do.
pub fn advice(reason: &Attention) -> Option<&'static str> {
    Some(match reason {
        Attention::UnknownRecord => {
            "Check that the patient's record was submitted from this site; if it was not, tell the fTTP operator."
        }
        Attention::MissingElements(_) => {
            "Add the missing data to the record with `ttp-agent resolve add-element` before the deadline."
        }
        Attention::ReleaseWithheld(_) => {
            "The site's release policy forbids every element the task asks for. If the data may be released, add the elements to `[dispatch] release_elements`, restart and `ttp-agent resolve retry TASK_KEY`; otherwise mark it handled and tell the fTTP operator."
        }
        Attention::UnknownTaskType(_) => {
            "Update ttp-agent to a version that knows this task type; until then it is kept and shown here."
        }
        Attention::MalformedTask(_) => {
            "Tell the fTTP operator that the agent received a task it cannot read; it is kept and shown here."
        }
        Attention::Rejected { .. } => {
            "Ask the fTTP operator what the error means; the answer is not sent again by itself."
        }
        Attention::IdatPurged => {
            "Submit the patient's record again (its data was deleted after the retention period)."
        }
        Attention::PseudonymConflict => {
            "Ask the fTTP operator which pseudonym is valid for this patient."
        }
        Attention::ForeignStudy { .. } => {
            "Ask the fTTP operator why the task names another study or target; if the site takes part in it, configure it."
        }
        Attention::SubjectMismatch => {
            "Ask the fTTP operator which record the task means (its pseudonym and Bloom filter disagree); then answer with `ttp-agent resolve` or mark it handled."
        }
        Attention::Handled => return None,
        Attention::StillListed { .. } => {
            "Ask the fTTP operator whether the answer arrived; if not, send it again with `ttp-agent resolve retry TASK_KEY --yes` before the deadline."
        }
    })
}

/// Build the report. `warn` is the warning window before expiry (`[admin] warn_before_expiry`).
pub fn build(
    store: &Store,
    warn: chrono::Duration,
    history_days: u32,
) -> Result<StatusReport, StoreError> {
    let now = Utc::now();
    // Only open tasks are listed; finished ones only count in the history.
    let tasks = store.open_tasks_where(|_| true)?;
    let mut open_by_type: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut open = Vec::new();
    let mut failing = Vec::new();
    let mut needs_attention = Vec::new();
    let mut awaiting_approval = Vec::new();
    for t in &tasks {
        *open_by_type
            .entry(task_type(t))
            .or_default()
            .entry(t.state.name().to_string())
            .or_default() += 1;
        if t.state == TaskState::AwaitingApproval {
            awaiting_approval.push(approval_line(t, now, warn));
            continue;
        }
        let l = line(t, now, warn);
        if matches!(t.state, TaskState::NeedsAttention { .. }) {
            needs_attention.push(l);
        } else {
            if l.last_error.is_some() {
                failing.push(l.clone());
            }
            open.push(l);
        }
    }
    let by_urgency = |a: &TaskLine, b: &TaskLine| {
        a.seconds_to_expiry
            .unwrap_or(i64::MAX)
            .cmp(&b.seconds_to_expiry.unwrap_or(i64::MAX))
            .then(a.first_seen.cmp(&b.first_seen))
    };
    open.sort_by(by_urgency);
    failing.sort_by(by_urgency);
    needs_attention.sort_by(by_urgency);
    awaiting_approval.sort_by(|a: &ApprovalLine, b: &ApprovalLine| {
        a.seconds_to_expiry
            .unwrap_or(i64::MAX)
            .cmp(&b.seconds_to_expiry.unwrap_or(i64::MAX))
            .then(a.first_seen.cmp(&b.first_seen))
    });
    let summary = Summary {
        open: open.len(),
        needs_attention: needs_attention.len(),
        expiring_soon: open
            .iter()
            .chain(&needs_attention)
            .filter(|l| l.urgent)
            .count()
            + awaiting_approval.iter().filter(|l| l.urgent).count(),
        failing: failing.len(),
        awaiting_approval: awaiting_approval.len(),
    };
    let counts = store.record_counts()?;
    let history = store
        .history(history_days)?
        .into_iter()
        .map(|d| DayLine {
            day: d.day.to_string(),
            done: d.by_type.iter().map(|(t, c)| (t.clone(), c.done)).collect(),
            expired: d
                .by_type
                .iter()
                .map(|(t, c)| (t.clone(), c.expired))
                .collect(),
        })
        .collect();
    // Agent notes can outnumber manual actions; read enough to show the newest of both.
    let (recent_audit, answered_without_elements) =
        split_audit(store.recent_audit(RECENT_AUDIT_ENTRIES * 20)?);
    Ok(StatusReport {
        generated_at: now,
        last_successful_poll: store.meta_time(crate::store::META_LAST_POLL_OK)?,
        warn_window_seconds: warn.num_seconds(),
        summary,
        open_by_type,
        open,
        failing,
        needs_attention,
        records: RecordSummary {
            total: counts.total,
            pending_registration: counts.new + counts.sending,
            awaiting_clearing: counts.awaiting_clearing,
            pseudonymised: counts.pseudonymised,
            rejected: counts.rejected,
        },
        history,
        webhook: webhook_summary(store)?,
        daemon: None,
        handover: handover::status(store)?,
        recent_audit,
        answered_without_elements,
        registration_blocked: store.registration_blocked()?,
        last_listing: store
            .get_meta_string(crate::store::META_LAST_LISTING)?
            .and_then(|text| serde_json::from_str(&text).ok()),
        awaiting_approval,
        approvals_required: None,
        withdrawals: withdrawal_summary(store)?,
    })
}

/// Splits the newest audit entries into manual actions and the agent's own notes about
/// answers sent without elements, the newest [`RECENT_AUDIT_ENTRIES`] of each.
fn split_audit(entries: Vec<AuditEntry>) -> (Vec<AuditEntry>, Vec<AuditEntry>) {
    let (notes, manual): (Vec<AuditEntry>, Vec<AuditEntry>) = entries
        .into_iter()
        .partition(|e| e.action == crate::store::MISSING_ELEMENTS_ACTION);
    let newest = |mut v: Vec<AuditEntry>| {
        let skip = v.len().saturating_sub(RECENT_AUDIT_ENTRIES);
        v.drain(..skip);
        v
    };
    (newest(manual), newest(notes))
}

fn webhook_summary(store: &Store) -> Result<WebhookSummary, StoreError> {
    let pending = store.pending_deliveries()?;
    let last_failed = pending
        .iter()
        .filter(|d| d.last_error.is_some())
        .max_by_key(|d| d.last_attempt);
    Ok(WebhookSummary {
        pending: pending.len(),
        failing: pending.iter().filter(|d| d.attempts > 0).count(),
        oldest_pending: pending.iter().map(|d| d.created_at).min(),
        last_attempt: pending.iter().filter_map(|d| d.last_attempt).max(),
        last_error: last_failed.and_then(|d| d.last_error.clone()),
        dropped: store.dropped_deliveries()?,
    })
}

fn render_handover(out: &mut String, h: &HandoverStatus) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\npseudonym hand-over: {} pseudonyms obtained, {} of them not yet exported with `export --new`",
        h.obtained, h.export_pending
    );
    if let Some(w) = &h.webhook {
        let when = |t: Option<DateTime<Utc>>| {
            t.map_or("never".to_string(), |t| {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            })
        };
        let _ = writeln!(
            out,
            "  webhook: {} pending, delivered through seq {}, last success {}",
            w.pending,
            w.delivered_through,
            when(w.state.last_success)
        );
        if let Some(since) = w.state.failing_since {
            let _ = writeln!(
                out,
                "  ! webhook failing since {} ({} attempts): {}",
                when(Some(since)),
                w.state.consecutive_failures,
                w.state.last_error.as_deref().unwrap_or("")
            );
        }
    }
}

/// The last listing, bucket by bucket: nothing the fTTP lists goes unseen.
fn render_listing(out: &mut String, l: &ListingSummary) {
    use std::fmt::Write as _;
    let at = l.at.map_or_else(String::new, |t| {
        format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC"))
    });
    let _ = writeln!(
        out,
        "listed by the fTTP{at}: {}, of which the agent works on {}, {} wait for a person, {} finished here but still listed, {} marked handled, {} beyond the listing limits (only counted)",
        l.listed, l.working, l.need_person, l.finished_locally, l.handled, l.not_kept
    );
}

/// The paused registration: what the fTTP said, since when, what happens next, what to do.
fn render_blocked(out: &mut String, b: &RegistrationBlocked, pending: u64) {
    use std::fmt::Write as _;
    let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let _ = writeln!(
        out,
        "! registration paused since {} (study {:?}, target {:?}): {}",
        at(b.since),
        b.study,
        b.target,
        b.failure
    );
    let _ = writeln!(
        out,
        "  {pending} record(s) wait to be registered; not one was judged by this answer. Next attempt at {} ({} so far).",
        at(b.next_attempt),
        b.attempts
    );
    let _ = writeln!(out, "  what to do: {}", b.failure.advice());
}

/// Seconds as a short human duration: `3d 4h`, `5h 12m`, `42m`, `expired`.
pub fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{}m", m.max(1)),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The report as a terminal table.
pub fn render_text(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(d) = &r.daemon {
        let _ = writeln!(
            out,
            "agent: running since {} (version {}), {}",
            d.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            d.version,
            match (&d.not_ready_reason, d.ready) {
                (_, true) => "ready".to_string(),
                (Some(why), false) => format!("NOT READY: {why}"),
                (None, false) => "NOT READY".to_string(),
            }
        );
        if let Some(e) = &d.last_cycle_error {
            let _ = writeln!(out, "last poll failed: {e}");
        }
    }
    let s = &r.summary;
    let approval = if r.awaiting_approval.is_empty() {
        String::new()
    } else {
        format!(", {} await approval", r.awaiting_approval.len())
    };
    let _ = writeln!(
        out,
        "tasks open: {}, of which the agent works on {}, {} need a person{approval}; {} expire soon, {} failing",
        s.open + s.needs_attention + r.awaiting_approval.len(),
        s.open,
        s.needs_attention,
        s.expiring_soon,
        s.failing
    );
    if let Some(l) = &r.last_listing {
        render_listing(&mut out, l);
    }
    let _ = writeln!(
        out,
        "last successful poll: {}",
        r.last_successful_poll.map_or("never".to_string(), |t| t
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string())
    );
    let rc = &r.records;
    let _ = writeln!(
        out,
        "records registered by this site: {} in all: {} with a pseudonym, {} waiting for the fTTP's clearing, {} not yet sent to the fTTP, {} rejected by the fTTP",
        rc.total, rc.pseudonymised, rc.awaiting_clearing, rc.pending_registration, rc.rejected
    );
    if let Some(b) = &r.registration_blocked {
        render_blocked(&mut out, b, rc.pending_registration);
    }
    let w = &r.withdrawals;
    if w.count > 0 {
        let _ = writeln!(
            out,
            "consent withdrawn for {} record(s) (IDAT and filters purged, tasks closed unanswered){}:",
            w.count,
            if w.count > w.recent.len() {
                format!("; the newest {}", w.recent.len())
            } else {
                String::new()
            }
        );
        for l in &w.recent {
            let _ = writeln!(
                out,
                "  {}  {}  by {}",
                l.at.format("%Y-%m-%d %H:%M:%S UTC"),
                l.local_id,
                l.by
            );
        }
    }
    let _ = writeln!(
        out,
        "\nunfinished tasks by type and state (those needing a person included):"
    );
    if r.open_by_type.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (ty, states) in &r.open_by_type {
        let parts: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(out, "  {ty:<20} {}", parts.join(", "));
    }
    if !r.open.is_empty() {
        let _ = writeln!(
            out,
            "\ntasks the agent works on by itself ({}), most urgent first:",
            r.open.len()
        );
        let _ = writeln!(
            out,
            "  {:<2}{:<56} {:<12} {:>10}  last error",
            "", "task", "state", "expires in"
        );
        for t in &r.open {
            let _ = writeln!(
                out,
                "  {:<2}{:<56} {:<12} {:>10}  {}",
                if t.urgent { "!" } else { "" },
                t.key,
                t.state,
                t.seconds_to_expiry.map_or("-".into(), human_duration),
                t.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !r.failing.is_empty() {
        let _ = writeln!(
            out,
            "\ntasks whose last attempt failed ({}; the agent retries them by itself):",
            r.failing.len()
        );
        for t in &r.failing {
            let _ = writeln!(
                out,
                "  {} ({}, {} attempt(s)): {}",
                t.key,
                t.task_type,
                t.attempts,
                t.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !r.awaiting_approval.is_empty() {
        let need = r
            .approvals_required
            .map_or(String::new(), |n| format!(" of {n}"));
        let _ = writeln!(
            out,
            "\nawaiting approval of the release ({}; `ttp-agent approve TASK` or `ttp-agent deny TASK --reason ...`):",
            r.awaiting_approval.len()
        );
        for a in &r.awaiting_approval {
            let by = if a.approved_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", a.approved_by.join(", "))
            };
            let _ = writeln!(
                out,
                "  {:<2}{} asks for {}; expires in {}; approvals {}{need}{by}",
                if a.urgent { "!" } else { "" },
                a.key,
                a.elements.join(", "),
                a.seconds_to_expiry.map_or("-".into(), human_duration),
                a.approved_by.len(),
            );
        }
    }
    if !r.needs_attention.is_empty() {
        let _ = writeln!(
            out,
            "\ntasks that need a person ({}; the agent cannot answer them by itself):",
            r.needs_attention.len()
        );
        for t in &r.needs_attention {
            let _ = writeln!(
                out,
                "  {} ({}, expires in {}): {}",
                t.key,
                t.task_type,
                t.seconds_to_expiry.map_or("-".into(), human_duration),
                t.reason.as_deref().unwrap_or("")
            );
            if let Some(advice) = &t.advice {
                let _ = writeln!(out, "    what to do: {advice}");
            }
        }
    }
    let w = &r.webhook;
    if w.pending > 0 || w.dropped > 0 {
        let _ = writeln!(
            out,
            "\nalert webhook: {} alert(s) waiting to be delivered ({} of them failed at least once), {} given up on{}",
            w.pending,
            w.failing,
            w.dropped,
            w.last_error
                .as_deref()
                .map_or(String::new(), |e| format!("; last error: {e}"))
        );
    }
    render_handover(&mut out, &r.handover);
    if !r.answered_without_elements.is_empty() {
        let _ = writeln!(
            out,
            "\ninformation: send_idat answered without requested elements (the release policy withholds them, or the records do not hold them; nothing to do):"
        );
        for a in &r.answered_without_elements {
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                a.at.format("%Y-%m-%d %H:%M:%S UTC"),
                a.subject,
                a.detail
            );
        }
    }
    if !r.recent_audit.is_empty() {
        let _ = writeln!(out, "\nrecent manual actions (audit trail):");
        for a in &r.recent_audit {
            let _ = writeln!(
                out,
                "  {}  {:<12} {:<20} {}  {}",
                a.at.format("%Y-%m-%d %H:%M:%S UTC"),
                a.actor,
                a.action,
                a.subject,
                a.detail
            );
        }
    }
    if !r.history.is_empty() {
        let _ = writeln!(
            out,
            "\ntasks finished per day (UTC): answered / expired before an answer"
        );
        for d in &r.history {
            let done: u64 = d.done.values().sum();
            let expired: u64 = d.expired.values().sum();
            let _ = writeln!(out, "  {}  {done:>6} / {expired}", d.day);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_but_handled_tells_what_to_do() {
        use ttp_proto::IdatElement;
        let reasons = [
            Attention::UnknownRecord,
            Attention::MissingElements(vec![IdatElement::Family]),
            Attention::UnknownTaskType("x".into()),
            Attention::MalformedTask("x".into()),
            Attention::Rejected {
                status: 422,
                detail: "x".into(),
            },
            Attention::IdatPurged,
            Attention::PseudonymConflict,
        ];
        for r in &reasons {
            let advice = advice(r).unwrap_or_else(|| panic!("no advice for {r:?}"));
            assert!(advice.ends_with('.'), "{advice}");
        }
        assert_eq!(advice(&Attention::Handled), None);
    }

    /// Every number in the text says what it counts: a reader must never meet "0 open" and
    /// then a list of open tasks.
    #[test]
    fn every_count_in_the_text_says_what_it_counts() {
        let task = |key: &str, state: &str| {
            serde_json::json!({
                "key": key, "task_type": "send_idat", "state": state, "expires": null,
                "seconds_to_expiry": 3600, "urgent": true, "attempts": 1,
                "last_error": null, "reason": "no local record", "first_seen": "2026-06-01T10:00:00Z",
            })
        };
        let report: StatusReport = serde_json::from_value(serde_json::json!({
            "generated_at": "2026-06-01T10:00:00Z",
            "last_successful_poll": null,
            "open_by_type": {"send_idat": {"needs-attention": 2, "received": 1}},
            "open": [task("send_idat/c", "received")],
            "needs_attention": [task("send_idat/a", "needs-attention"), task("send_idat/b", "needs-attention")],
            "records": {"total": 5, "pending_registration": 1, "awaiting_clearing": 2,
                        "pseudonymised": 2, "rejected": 0},
            "history": [],
        }))
        .unwrap();
        let text = render_text(&report);
        for phrase in [
            "records registered by this site: 5 in all: 2 with a pseudonym, 2 waiting for the fTTP's clearing, 1 not yet sent to the fTTP, 0 rejected by the fTTP",
            "unfinished tasks by type and state (those needing a person included)",
            "tasks the agent works on by itself (1), most urgent first",
            "tasks that need a person (2; the agent cannot answer them by itself)",
        ] {
            assert!(text.contains(phrase), "{phrase:?} not in:\n{text}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(-5), "expired");
        assert_eq!(human_duration(30), "1m");
        assert_eq!(human_duration(42 * 60), "42m");
        assert_eq!(human_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }
}
