//! The admin endpoints over HTTP, against the known scenario (see `support::admin`): token
//! handling, readiness transitions driven through the daemon hooks, the metrics exposition and
//! the status API.

use std::sync::Arc;
use std::time::Duration;

use crate::support::admin::*;
use crate::support::agent::*;
use ttp_agent::admin::{AdminHooks, AdminState, Alerts, Site};
use ttp_agent::agent::scheduler::{DaemonHooks, NoHooks};
use ttp_agent::agent::{Agent, CycleError, CycleReport};
use ttp_agent::cli::context;
use ttp_agent::status::StatusReport;
use ttp_encode::Secret;

async fn get(url: &str, token: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the admin server answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_healthz_requires_the_token() {
    let s = scenario(&token_edits()).await;
    let server = serve(&s).await;

    let (status, body, _) = get(&server.url("/healthz"), None).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    for path in ["/readyz", "/metrics", "/api/status"] {
        let (status, body, headers) = get(&server.url(path), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"ttp-agent\"");
        assert!(!body.contains(TOKEN));
        let (status, body, _) = get(&server.url(path), Some("not-the-token")).await;
        assert_eq!(status, 401, "{path}");
        assert!(body.contains("wrong"), "{body}");
        let (status, _, headers) = get(&server.url(path), Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["cache-control"], "no-store");
    }

    // The page: a login form without the token, the page with it (header or the form's POST;
    // never from the URL).
    let (status, body, headers) = get(&server.url("/"), None).await;
    assert_eq!(status, 401);
    assert!(body.contains("access token") && body.contains("data-rejected=\"false\""));
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let (status, body, _) = get(&server.url(&format!("/?token={TOKEN}")), None).await;
    assert_eq!(status, 401, "a token in the URL is not taken");
    assert!(body.contains("data-rejected=\"false\""));
    let post = |token: &'static str| {
        let url = server.url("/");
        async move {
            let resp = http()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, resp.text().await.unwrap(), headers)
        }
    };
    let (status, body, _) = post("wrong").await;
    assert_eq!(status, 401);
    assert!(body.contains("data-rejected=\"true\""));
    let (status, body, headers) = post(TOKEN).await;
    assert_eq!(status, 200);
    assert!(body.contains("data-testid=\"tile-attention\""));
    assert!(!body.contains(TOKEN), "the page never echoes the token");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let (status, _, _) = get(&server.url("/"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    s.env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_and_the_metrics_show_the_scenario_and_no_identifiers() {
    let s = scenario(&[]).await;
    let server = serve(&s).await;

    let (status, body, _) = get(&server.url("/api/status?days=3"), None).await;
    assert_eq!(status, 200, "{body}");
    let r: StatusReport = serde_json::from_str(&body).unwrap();
    assert_eq!(r.summary.needs_attention, EXPECTED.needs_attention);
    assert_eq!(r.summary.expiring_soon, EXPECTED.expiring_soon);
    assert_eq!(r.summary.failing, EXPECTED.failing);
    assert_eq!(
        r.summary.open,
        EXPECTED.open_received + EXPECTED.open_retry_wait
    );
    assert_eq!(r.records.total, EXPECTED.records);
    assert_eq!(r.records.pseudonymised, EXPECTED.pseudonymised);
    assert_eq!(r.history.len(), 3);
    let today = r.history.last().unwrap();
    assert_eq!(today.done.values().sum::<u64>(), EXPECTED.done_today);
    assert_eq!(today.expired.values().sum::<u64>(), EXPECTED.expired_today);
    assert!(r.failing[0].last_error.as_deref().unwrap().contains("503"));
    assert!(r.last_successful_poll.is_some());
    let daemon = r.daemon.expect("the daemon adds its own state");
    assert_eq!(
        (daemon.study.as_str(), daemon.target.as_str()),
        (STUDY, TARGET)
    );
    assert!(daemon.ready, "{daemon:?}");
    for name in ["Anna", "Jürgen", "Müller", "Greifswald"] {
        assert!(!body.contains(name), "IDAT in /api/status: {name}");
    }

    let (status, text, headers) = get(&server.url("/metrics"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "ttp_agent_open_tasks{task_type=\"send_idat\",state=\"received\"} 2",
        "ttp_agent_open_tasks{task_type=\"send_idat\",state=\"retry-wait\"} 1",
        "ttp_agent_open_tasks{task_type=\"unknown\",state=\"needs-attention\"} 1",
        "ttp_agent_open_tasks{task_type=\"repeat_request\",state=\"in-doubt\"} 0",
        "ttp_agent_tasks_in_warning_window 1",
        "ttp_agent_records{state=\"pseudonymised\"} 5",
        "ttp_agent_pseudonyms 5",
        "ttp_agent_webhook_pending 0",
        "ttp_agent_store_readable 1",
        "ttp_agent_fttp_requests_total{operation=\"providePatientData\",status=\"5xx\"} 1",
        "ttp_agent_fttp_requests_total{operation=\"providePatientData\",status=\"2xx\"} 1",
        "ttp_agent_fttp_requests_total{operation=\"requestPsnFromBfWorkflow\",status=\"2xx\"} 1",
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?} in:\n{text}"
        );
    }
    // Two listings by this agent's client (the merge-only polls used a client of their own).
    assert!(
        text.contains(
            "ttp_agent_fttp_requests_total{operation=\"requestTasks\",status=\"2xx\"} 2\n"
        ),
        "{text}"
    );
    // The earliest deadline is the urgent task's, about 30 h away.
    let earliest: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ttp_agent_earliest_expiry_seconds "))
        .expect("earliest expiry")
        .parse()
        .unwrap();
    assert!((29 * 3600..=30 * 3600).contains(&earliest), "{earliest}");
    assert!(text.contains("ttp_agent_last_successful_poll_timestamp_seconds "));
    assert!(text.ends_with("# EOF\n"));
    for id in &s.identifiers {
        assert!(!text.contains(id.as_str()), "identifier {id} in /metrics");
    }
    assert!(
        !text.contains(UNKNOWN_TYPE),
        "the fTTP's free text is no label"
    );
    s.env.sim.shutdown().await;
}

fn state_with_window(s: &Scenario, window: Duration) -> Arc<AdminState> {
    state_with(s, |settings| settings.ready_window = window)
}

fn hooks_for(s: &Scenario, state: &Arc<AdminState>) -> AdminHooks {
    let alerts = Alerts::new(
        Arc::clone(s.agent.store()),
        chrono::Duration::hours(48),
        Site {
            study: STUDY.into(),
            target: TARGET.into(),
        },
        None,
        Arc::clone(state.metrics()),
    )
    .unwrap();
    AdminHooks::new(Arc::new(NoHooks), Arc::clone(state), alerts)
}

async fn ready(server: &Server) -> (u16, String) {
    let (status, body, _) = get(&server.url("/readyz"), None).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (status, v["reason"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_cycles_the_hooks_report() {
    let s = scenario(&[]).await;
    let state = state_with_window(&s, Duration::from_secs(3600));
    let hooks = hooks_for(&s, &state);
    let server = serve_state(Arc::clone(&state)).await;
    let took = Duration::from_millis(250);

    // Not ready before the first successful poll: a start-up probe waits for it.
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("first poll"), "{reason}");

    // A real cycle against the simulator with a wrong API key: credentials refused.
    let mut wrong = admin_support_load(&s);
    wrong.secrets.api_key = Some(Secret::from_text("not-the-api-key"));
    let refused = Agent::new(
        Arc::clone(s.agent.store()),
        context::client(&wrong.config, &wrong.secrets).unwrap(),
        context::options(&wrong.config),
        never(),
    );
    let result = refused.poll_cycle().await;
    assert!(matches!(result, Err(CycleError::Auth(_))), "{result:?}");
    hooks.cycle_finished(&result, took);
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 503);
    assert!(reason.contains("credentials"), "{reason}");

    // Shutdown interruptions say nothing; a good cycle makes it ready again.
    hooks.cycle_finished(&Err(CycleError::ShuttingDown), took);
    assert_eq!(ready(&server).await.0, 503);
    let result = s.agent.poll_cycle().await;
    assert!(result.is_ok(), "{result:?}");
    hooks.cycle_finished(&result, took);
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 200);
    assert!(reason.contains("last successful poll"), "{reason}");

    // A failed fetch while the last success is recent: still ready.
    s.env
        .sim
        .set_faults(ttp_sim::FaultConfig::always(
            ttp_sim::FaultKind::Status(400),
            ttp_sim::FaultTiming::Before,
        ))
        .unwrap();
    let result = s.agent.poll_cycle().await;
    assert!(matches!(result, Err(CycleError::Fetch(_))), "{result:?}");
    hooks.cycle_finished(&result, took);
    assert_eq!(ready(&server).await.0, 200);

    let (_, metrics, _) = get(&server.url("/metrics"), None).await;
    assert!(
        metrics.contains("ttp_agent_poll_errors_total{class=\"auth\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("ttp_agent_poll_errors_total{class=\"fetch\"} 1\n"));
    assert!(
        metrics.contains("ttp_agent_poll_duration_seconds_count 3\n"),
        "{metrics}"
    );

    hooks.stopping();
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 503);
    assert!(reason.contains("shutting down"), "{reason}");
    s.env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_last_success_makes_the_daemon_not_ready_once_a_poll_has_failed() {
    let s = scenario(&[]).await;
    // A window far shorter than the time since the scenario's last successful poll.
    let state = state_with_window(&s, Duration::from_nanos(1));
    let hooks = hooks_for(&s, &state);
    let server = serve_state(Arc::clone(&state)).await;
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 503, "the first poll is still pending: {reason}");
    assert!(reason.contains("first poll"), "{reason}");
    // One success since the start (the store keeps the scenario's older time), then a failure.
    hooks.cycle_finished(&Ok(CycleReport::default()), Duration::from_millis(5));
    let fetch_failed: Result<CycleReport, CycleError> =
        Err(CycleError::Store(ttp_agent::store::StoreError::Invalid {
            what: "test",
            why: "a failing cycle".into(),
        }));
    hooks.cycle_finished(&fetch_failed, Duration::from_millis(5));
    let (status, reason) = ready(&server).await;
    assert_eq!(status, 503);
    assert!(reason.contains("no successful poll since"), "{reason}");
    assert!(reason.contains("a failing cycle"), "{reason}");
    s.env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_counters_follow_the_store_across_cycles() {
    let s = scenario(&[]).await;
    let state = state_with_window(&s, Duration::from_secs(3600));
    let hooks = hooks_for(&s, &state);
    let server = serve_state(Arc::clone(&state)).await;

    // One new task; the cycle also answers the two waiting ones, and the retrying one if its
    // (jittered) retry time has come.
    let done = |store: &ttp_agent::store::Store| {
        store
            .tasks()
            .unwrap()
            .iter()
            .filter(|t| matches!(t.state, ttp_agent::domain::TaskState::Done { .. }))
            .count()
    };
    let done_before = done(s.agent.store());
    let rec = &s.agent.store().records_in_states(|_| true).unwrap()[0];
    let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
    s.env.sim.add_send_idat_for(
        &bf,
        &["family"],
        s.env.sim.now() + chrono::Duration::hours(80),
    );
    let result = s.agent.poll_cycle().await;
    let report = result.as_ref().unwrap();
    assert_eq!(report.new_tasks, 1, "{report:?}");
    assert!((3..=4).contains(&report.dispatch.done), "{report:?}");
    let newly_done = done(s.agent.store()) - done_before;
    assert_eq!(newly_done, report.dispatch.done);
    hooks.cycle_finished(&result, Duration::from_millis(100));

    let (_, text, _) = get(&server.url("/metrics"), None).await;
    for line in [
        "ttp_agent_tasks_received_total{task_type=\"send_idat\"} 1".to_string(),
        format!("ttp_agent_tasks_done_total{{task_type=\"send_idat\"}} {newly_done}"),
        "ttp_agent_tasks_failed_total{task_type=\"unknown\"} 0".to_string(),
        "ttp_agent_tasks_expired_total{task_type=\"send_idat\"} 0".to_string(),
        "ttp_agent_open_tasks{task_type=\"send_idat\",state=\"received\"} 0".to_string(),
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?} in:\n{text}"
        );
    }
    s.env.sim.shutdown().await;
}

/// The scenario's configuration, loaded afresh (so a test may change its secrets).
fn admin_support_load(s: &Scenario) -> ttp_agent::cli::context::Loaded {
    load(&s.env.config_path)
}
