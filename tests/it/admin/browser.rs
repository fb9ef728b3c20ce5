//! The status page in a real browser: headless Chromium opens a link `/#token=…` to an admin
//! server over the known scenario (see `support::admin`); the login form's script posts the
//! token (which never travels in a URL), the page's script fetches `/api/status` with it, and
//! the numbers in the rendered DOM (found by `data-testid`) are checked against the status report built from the store. A screenshot is written to
//! `target/test-artifacts/status-page.png` for people to look at.
//!
//! Chromium comes from Debian (`apt-get install chromium`, done by `.ci/run`). Without it the
//! test says why it skips, and passes only outside CI (`CI` unset): in CI it must run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::admin::*;
use ttp_agent::status::StatusReport;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `extra` arguments, in a throw-away profile.
async fn run_chromium(bin: &Path, url: &str, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend(extra.iter().cloned());
    args.push(url.to_owned());
    let bin = bin.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&args)
            .output()
            .expect("chromium starts")
    })
    .await
    .unwrap();
    drop(profile);
    out
}

/// The text of the first element carrying `data-testid="id"` (its first text node).
fn text_of(dom: &str, id: &str) -> String {
    texts_of(dom, id)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no element data-testid={id:?} in the DOM"))
}

fn texts_of(dom: &str, id: &str) -> Vec<String> {
    let needle = format!("data-testid=\"{id}\"");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &dom[i..];
            let start = rest.find('>').map_or(rest.len(), |j| j + 1);
            let end = rest[start..].find('<').map_or(rest.len(), |j| start + j);
            rest[start..end].trim().to_string()
        })
        .collect()
}

/// The opening tags carrying `data-testid="id"`.
fn tags_of<'a>(dom: &'a str, id: &str) -> Vec<&'a str> {
    let needle = format!("data-testid=\"{id}\"");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let open = dom[..i].rfind('<').unwrap_or(0);
            let close = dom[i..].find('>').map_or(dom.len(), |j| i + j);
            &dom[open..close]
        })
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

fn number(dom: &str, id: &str) -> u64 {
    let t = text_of(dom, id);
    t.parse()
        .unwrap_or_else(|_| panic!("data-testid={id:?} shows {t:?}, not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_stores_numbers_in_a_real_browser() {
    let Some(bin) = chromium() else {
        let msg = "chromium not found on PATH (install it with `apt-get install -y chromium`)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}: in CI the browser test must run"
        );
        eprintln!("SKIPPED the_status_page_shows_the_stores_numbers_in_a_real_browser: {msg}");
        return;
    };
    let s = scenario(&token_edits()).await;
    // Besides the scenario: a task for a filter no local record has (a foreign filter), due
    // within the warning window, so it belongs both to "needs a person" and to "expiring
    // soon" and must be shown once.
    let now = chrono::Utc::now();
    let mut foreign = ttp_agent::testkit::task(
        "dic_psn_available/foreign-filter",
        ttp_agent::testkit::dic_psn_available(vec![0xA5; 16], "psn-of-someone-else"),
        ttp_agent::domain::TaskState::NeedsAttention {
            reason: ttp_agent::domain::Attention::UnknownRecord,
        },
        now,
    );
    foreign.task.expires = Some(now + chrono::Duration::hours(20));
    foreign.attempts = 1;
    // And a send_idat awaiting approval of its release, approved once (by alice) so far: the
    // page lists it with the requested element codes, the approvals and the time left.
    let mut approval = ttp_agent::testkit::task(
        "send_idat/awaiting-approval",
        ttp_proto::TaskKind::SendIdat {
            task_id: "awaiting-approval".into(),
            subject: ttp_proto::SendIdatSubject::Pseudonym("psn-awaiting".into()),
            elements: vec![
                ttp_proto::ElementRequest::Known(ttp_proto::IdatElement::Given),
                ttp_proto::ElementRequest::Known(ttp_proto::IdatElement::Birthdate),
            ],
        },
        ttp_agent::domain::TaskState::AwaitingApproval,
        now,
    );
    approval.task.expires = Some(now + chrono::Duration::hours(30));
    approval.approvals = vec![ttp_agent::domain::Approval {
        by: "alice".into(),
        at: now,
    }];
    s.agent.store().put_tasks([&foreign, &approval]).unwrap();
    s.agent.store().flush().unwrap();
    // Approval mode with four eyes: the page says how many approvals a release needs.
    let server = serve_with(&s, |settings| settings.approvals_required = Some(2)).await;
    let url = server.url(&format!("/#token={TOKEN}"));

    let out = run_chromium(&bin, &url, &["--dump-dom".to_owned()]).await;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-state=\"loaded\""),
        "the page did not load its data; chromium said:\n{}\nDOM:\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the store says, through the same report the API serves.
    let r: StatusReport =
        ttp_agent::status::build(s.agent.store(), chrono::Duration::hours(48), 14).unwrap();
    assert_eq!(
        number(&dom, "tile-attention"),
        r.summary.needs_attention as u64
    );
    assert_eq!(
        number(&dom, "tile-expiring"),
        r.summary.expiring_soon as u64
    );
    assert_eq!(number(&dom, "tile-failing"), r.summary.failing as u64);
    assert_eq!(number(&dom, "tile-open"), r.summary.open as u64);
    assert_eq!(number(&dom, "tile-pseudonyms"), r.records.pseudonymised);
    assert_eq!(number(&dom, "records-total"), r.records.total);
    assert_eq!(
        number(&dom, "records-pseudonymised"),
        r.records.pseudonymised
    );
    assert_eq!(
        number(&dom, "records-awaiting"),
        r.records.awaiting_clearing
    );
    assert_eq!(
        number(&dom, "records-pending"),
        r.records.pending_registration
    );
    assert_eq!(number(&dom, "records-rejected"), r.records.rejected);
    let done: u64 = r.history.iter().flat_map(|d| d.done.values()).sum();
    let expired: u64 = r.history.iter().flat_map(|d| d.expired.values()).sum();
    assert_eq!(number(&dom, "history-done-total"), done);
    assert_eq!(number(&dom, "history-expired-total"), expired);
    assert_eq!(text_of(&dom, "last-poll"), "just now");

    // Open tasks by type and state: every cell against the report.
    let cells = tags_of(&dom, "open-count");
    let counts = texts_of(&dom, "open-count");
    assert!(!cells.is_empty());
    for (tag, shown) in cells.iter().zip(&counts) {
        let (ty, state) = (
            attr(tag, "data-type").unwrap(),
            attr(tag, "data-state").unwrap(),
        );
        let expected = r
            .open_by_type
            .get(ty)
            .and_then(|m| m.get(state))
            .copied()
            .unwrap_or(0);
        assert_eq!(shown, &expected.to_string(), "{ty}/{state}");
    }
    assert_eq!(cells.len(), r.open_by_type.len() * 6);

    // The lists name the right tasks.
    let rows = |id: &str| -> Vec<String> {
        tags_of(&dom, id)
            .iter()
            .map(|t| attr(t, "data-task-key").unwrap().to_string())
            .collect()
    };
    let keys = |lines: &[ttp_agent::status::TaskLine]| -> Vec<String> {
        lines.iter().map(|l| l.key.clone()).collect()
    };
    // Each task once, in its most urgent section: a person first, then the deadline, then
    // the retries.
    assert_eq!(rows("attention-row"), keys(&r.needs_attention));
    // What awaits approval: the task, the requested codes, the approvals so far.
    assert_eq!(
        rows("approval-row"),
        r.awaiting_approval
            .iter()
            .map(|a| a.key.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(rows("approval-row"), ["send_idat/awaiting-approval"]);
    assert_eq!(texts_of(&dom, "approval-elements"), ["given, birthdate"]);
    assert_eq!(texts_of(&dom, "approval-count"), ["1 (alice)"]);
    assert!(dom.contains("(a release needs 2)"), "{dom}");
    let urgent: Vec<String> = r
        .open
        .iter()
        .filter(|l| l.urgent)
        .map(|l| l.key.clone())
        .collect();
    assert_eq!(rows("expiring-row"), urgent);
    let retrying: Vec<String> = r
        .failing
        .iter()
        .filter(|l| !l.urgent)
        .map(|l| l.key.clone())
        .collect();
    assert_eq!(rows("failing-row"), retrying);
    let mut all: Vec<String> = ["attention-row", "expiring-row", "failing-row"]
        .iter()
        .flat_map(|id| rows(id))
        .collect();
    let shown = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), shown, "a task appears in two sections: {all:?}");
    assert!(
        r.needs_attention.iter().any(|l| l.urgent),
        "the scenario has an urgent task needing a person, which must not repeat under \"Expiring soon\""
    );
    // One date format, with the time zone.
    assert!(!dom.contains(" AM") && !dom.contains(" PM"), "{dom}");
    let deadline = r.needs_attention[0].expires.unwrap();
    assert!(
        dom.contains(&deadline.format("%Y-%m-%d %H:%M UTC").to_string()),
        "{dom}"
    );
    assert!(
        dom.contains("503"),
        "the failing task's last error is shown"
    );
    assert!(dom.contains(UNKNOWN_TYPE), "the unknown type is named");

    // The chart has one group per day, today's with the scenario's numbers.
    let days = tags_of(&dom, "history-day");
    assert_eq!(days.len(), 14);
    let today = days.last().unwrap();
    assert_eq!(
        attr(today, "data-done"),
        Some(EXPECTED.done_today.to_string().as_str())
    );
    assert_eq!(
        attr(today, "data-expired"),
        Some(EXPECTED.expired_today.to_string().as_str())
    );

    // A live countdown was written by the script (e.g. "1 d 5 h 59 min").
    assert!(dom.contains("class=\"countdown amber\""), "{dom}");
    // The token left the address bar and never reached the DOM; no patient data either.
    assert!(!dom.contains(TOKEN));
    for id in &s.identifiers {
        if !id.contains('/') {
            // Record ids and pseudonyms (task keys are shown on purpose).
            assert!(!dom.contains(id.as_str()), "{id} in the page");
        }
    }
    for name in [
        "Anna",
        "Jürgen",
        "Müller",
        "Greifswald",
        "psn-of-someone-else",
    ] {
        assert!(
            !dom.contains(name),
            "IDAT or a pseudonym in the page: {name}"
        );
    }

    // Without JavaScript: the same first view, rendered by the server. The page as the server
    // sends it, with its script element removed, in the browser: what a browser with scripts
    // off (or a screenshot before any script ran) shows.
    let served = http()
        .get(server.url("/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = served.find("<script>").expect("the page has its script");
    let script_end = served.find("</script>").unwrap() + "</script>".len();
    let without_js = format!("{}{}", &served[..script], &served[script_end..]);
    assert!(!without_js.contains("<script"));
    let static_page = tempfile::tempdir().unwrap();
    let static_file = static_page.path().join("page.html");
    std::fs::write(&static_file, &without_js).unwrap();
    let out = run_chromium(
        &bin,
        &format!("file://{}", static_file.display()),
        &["--dump-dom".to_owned()],
    )
    .await;
    let plain = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!plain.contains("Loading"), "{plain}");
    for (id, n) in [
        ("tile-attention", r.summary.needs_attention as u64),
        ("tile-open", r.summary.open as u64),
        ("records-total", r.records.total),
        ("history-done-total", done),
    ] {
        assert_eq!(number(&plain, id), n, "{id} without JavaScript");
    }
    assert_eq!(
        tags_of(&plain, "attention-row").len(),
        r.needs_attention.len()
    );
    assert!(plain.contains("data-testid=\"copy-summary\""), "{plain}");

    // An outage: the credentials were refused at the last poll. A sentence for people, the
    // technical detail folded away, and no card that stays green.
    server.state.health().cycle_finished(
        &Err(ttp_agent::agent::CycleError::Auth(
            "HTTP 401 from the dispatcher".into(),
        )),
        chrono::Utc::now(),
    );
    let out = run_chromium(&bin, &url, &["--dump-dom".to_owned()]).await;
    let down = String::from_utf8_lossy(&out.stdout).into_owned();
    let banner = tags_of(&down, "outage");
    assert_eq!(banner.len(), 1, "{down}");
    assert!(down.contains("refuses the agent's access key"), "{down}");
    let detail = down
        .find("data-testid=\"technical-detail\"")
        .expect("folded detail");
    assert!(
        down[detail..].contains("HTTP 401 from the dispatcher"),
        "{down}"
    );
    for id in ["tile-poll", "tile-open", "tile-failing", "tile-expiring"] {
        let tag = down[..down.find(&format!("id=\"{id}\"")).unwrap()]
            .rfind('<')
            .map(|i| &down[i..down[i..].find('>').unwrap() + i])
            .unwrap();
        assert!(
            tag.contains("outage") && !tag.contains("green"),
            "{id}: {tag}"
        );
    }

    // Without the token: the login form, and no data.
    let out = run_chromium(&bin, &server.url("/"), &["--dump-dom".to_owned()]).await;
    let login = String::from_utf8_lossy(&out.stdout);
    assert!(login.contains("data-testid=\"login-message\""), "{login}");
    assert!(!login.contains("tile-attention"));

    // A screenshot for people.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let out = run_chromium(
        &bin,
        &url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1000".to_owned(),
            "--hide-scrollbars".to_owned(),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}); chromium said:\n{}",
            png.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "a real image"
    );
    // And the whole page, chart included.
    let full = artifacts.join("status-page-full.png");
    run_chromium(
        &bin,
        &url,
        &[
            format!("--screenshot={}", full.display()),
            "--window-size=1280,1700".to_owned(),
            "--hide-scrollbars".to_owned(),
        ],
    )
    .await;
    assert!(full.is_file(), "no screenshot at {}", full.display());
    eprintln!("screenshots: {} and {}", png.display(), full.display());
    s.env.sim.shutdown().await;
}
