//! `ttp-agent status` (the real binary) on the known scenario (see `support::admin`), both ways:
//! while a process holds the store it runs in that process, through its control channel; once
//! the store is free it reads the store itself. Same numbers either way.

use std::path::Path;
use std::process::Output;

use crate::support::admin::*;
use crate::support::hermetic;
use ttp_agent::status::StatusReport;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

async fn status_cli(config: &Path, json: bool) -> Output {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = hermetic::command(BIN);
        cmd.arg("status")
            .arg("--config")
            .arg(&config)
            .args(["--days", "2"]);
        if json {
            cmd.arg("--json");
        }
        cmd.env_remove("TTP_AGENT_CONFIG")
            .output()
            .expect("the CLI runs")
    })
    .await
    .unwrap()
}

fn parse(out: &Output) -> StatusReport {
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn assert_expected(r: &StatusReport) {
    assert_eq!(r.summary.needs_attention, EXPECTED.needs_attention);
    assert_eq!(r.summary.expiring_soon, EXPECTED.expiring_soon);
    assert_eq!(r.summary.failing, EXPECTED.failing);
    assert_eq!(
        r.summary.open,
        EXPECTED.open_received + EXPECTED.open_retry_wait
    );
    assert_eq!(
        r.open_by_type["send_idat"]["received"],
        EXPECTED.open_received
    );
    assert_eq!(
        r.open_by_type["send_idat"]["retry-wait"],
        EXPECTED.open_retry_wait
    );
    assert_eq!(r.open_by_type[UNKNOWN_TYPE]["needs-attention"], 1);
    assert_eq!(r.records.total, EXPECTED.records);
    assert_eq!(r.records.pseudonymised, EXPECTED.pseudonymised);
    let today = r.history.last().unwrap();
    assert_eq!(today.done.values().sum::<u64>(), EXPECTED.done_today);
    assert_eq!(today.expired.values().sum::<u64>(), EXPECTED.expired_today);
    assert_eq!(r.history.len(), 2);
}

/// The lines of the text output that do not depend on the clock.
fn stable_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.starts_with("tasks open:")
                || l.starts_with("records registered by this site:")
                || l.starts_with("  send_idat")
                || l.starts_with("  delete_everything ")
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_the_running_daemon_while_the_store_is_locked_and_reads_it_otherwise() {
    let s = scenario(&token_edits()).await;
    let config = s.env.config_path.clone();

    // The store is held by this process, which serves the control channel like the daemon.
    let server = serve(&s).await;
    let control = ttp_agent::cli::control::server::bind(&s.loaded.config.control)
        .expect("binds")
        .serve(ttp_agent::cli::control::server::Shared {
            agent: std::sync::Arc::clone(&s.agent),
            config: std::sync::Arc::new(s.loaded.config.clone()),
            admin: std::sync::Arc::clone(&server.state),
            runtime: tokio::runtime::Handle::current(),
            active: std::sync::atomic::AtomicUsize::new(0),
        })
        .expect("serves");
    let via_daemon = status_cli(&config, true).await;
    let stderr = String::from_utf8_lossy(&via_daemon.stderr);
    assert!(stderr.contains("in use by the running agent"), "{stderr}");
    assert!(
        stderr.contains(control.path().to_str().unwrap()),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
    let r = parse(&via_daemon);
    assert_expected(&r);
    assert!(r.daemon.is_some(), "the daemon adds its own state");
    let text_via_daemon = status_cli(&config, false).await;
    assert!(text_via_daemon.status.success());
    let text_via_daemon = String::from_utf8(text_via_daemon.stdout).unwrap();
    assert!(
        text_via_daemon.contains(
            "tasks open: 4, of which the agent works on 3, 1 need a person; 1 expire soon, 1 failing"
        ),
        "{text_via_daemon}"
    );
    assert!(text_via_daemon.contains("agent: running since"));

    // The "daemon" stops: the store is free, and the CLI reads it itself.
    tokio::task::spawn_blocking(move || control.stop())
        .await
        .unwrap();
    drop(server);
    let store_path = s.loaded.config.store.path.clone();
    let Scenario { env, agent, .. } = s;
    drop(agent);
    // The server task lets go of the store once its last connection has closed: wait for that
    // (polling, generously), not for a fixed time.
    let free_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while matches!(
        ttp_agent::store::probe_lock(&store_path),
        ttp_agent::store::LockState::Held
    ) {
        assert!(
            std::time::Instant::now() < free_by,
            "the store stays locked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let direct = status_cli(&config, true).await;
    let stderr = String::from_utf8_lossy(&direct.stderr);
    assert!(!stderr.contains("running agent"), "{stderr}");
    let r = parse(&direct);
    assert_expected(&r);
    assert!(r.daemon.is_none());
    let text_direct = String::from_utf8(status_cli(&config, false).await.stdout).unwrap();
    assert_eq!(
        stable_lines(&text_direct),
        stable_lines(&text_via_daemon),
        "the same table either way"
    );
    assert!(stable_lines(&text_direct).len() >= 4, "{text_direct}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_without_a_daemon_answering_is_explained() {
    let s = scenario(&[]).await;
    // Held by this process, but nothing serves the control channel.
    let out = status_cli(&s.env.config_path, false).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("waiting"),
        "it said what it waited for: {stderr}"
    );
    assert!(stderr.contains("no ttp-agent daemon answers"), "{stderr}");
    assert!(
        stderr.contains(s.loaded.config.control.socket_path().to_str().unwrap()),
        "{stderr}"
    );
    s.env.sim.shutdown().await;
}
