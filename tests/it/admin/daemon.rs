//! The admin surface of the real daemon binary: `ttp-agent run` serves the endpoints next to
//! the scheduler, `ttp-agent status` goes through them while the daemon holds the store, and
//! an unprotected listener reachable from other hosts is refused with exit status 78.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::support::admin::*;
use crate::support::agent::*;
use crate::support::hermetic;
use crate::support::logs::KeptLog;
use ttp_agent::status::StatusReport;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

/// The admin address the daemon logged once it had bound it (`admin endpoints: …
/// listen=ADDR`). The daemon binds port 0 itself: a port the test picked by binding :0 and
/// letting go could be taken by another process before the daemon binds it (the daemon then
/// exits, or the test talks to a stranger).
async fn logged_admin_addr(daemon: &mut std::process::Child, log: &std::path::Path) -> SocketAddr {
    let mut waited = Duration::ZERO;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let bound = text
            .lines()
            .filter(|l| l.contains("admin endpoints"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")));
        if let Some(addr) = bound {
            return addr.parse().expect("a socket address");
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon exited before it listened: {text}"
        );
        assert!(waited < Duration::from_secs(60), "never listened: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_other_hosts_can_reach_needs_a_token() {
    let env = setup(
        sim_config(1),
        &[("listen = \"127.0.0.1:9464\"", "listen = \"0.0.0.0:0\"")],
    )
    .await;
    let config = env.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        hermetic::command(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("token_file"),
        "{stderr}"
    );
    assert_eq!(
        env.sim.stats().requests_by_op.len(),
        0,
        "nothing was polled"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_health_readiness_metrics_and_status_and_stops_on_sigterm() {
    let edits = token_edits();
    // The scenario's token file is written by `scenario`; here the daemon gets its own.
    let env = setup(sim_config(2), &edits).await;
    std::fs::write(
        env.dir.path().join("secrets/admin-token"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    let config = env.config_path.clone();
    let _log = KeptLog::copy_of(env.dir.path().join("daemon.log"));
    let mut daemon = hermetic::command(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = logged_admin_addr(&mut daemon, &env.dir.path().join("daemon.log")).await;
    let client = http();
    let url = |p: &str| format!("http://{addr}{p}");

    // Ready once the first poll has succeeded.
    let mut waited = Duration::ZERO;
    let reason = loop {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon exited: {}",
            std::fs::read_to_string(env.dir.path().join("daemon.log")).unwrap_or_default()
        );
        if let Ok(resp) = client.get(url("/readyz")).bearer_auth(TOKEN).send().await {
            let status = resp.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            let reason = body["reason"].as_str().unwrap().to_string();
            if status == 200 && reason.contains("last successful poll") {
                break reason;
            }
        }
        assert!(waited < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    };
    assert!(reason.contains("UTC"), "{reason}");

    let healthz = client.get(url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    let metrics = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(
        metrics.status().as_u16(),
        401,
        "the token protects /metrics"
    );
    let metrics = client
        .get(url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ttp_agent_poll_duration_seconds_count 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ttp_agent_fttp_requests_total{operation=\"requestTasks\",status=\"2xx\"} 1\n"
        )
    );

    // `status` while the daemon holds the store: answered by the daemon.
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        hermetic::command(BIN)
            .args(["status", "--json", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("running agent"));
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    let d = report.daemon.expect("from the daemon");
    assert!(d.ready && d.last_cycle_error.is_none(), "{d:?}");
    assert!(report.last_successful_poll.is_some());

    // SIGTERM: readiness goes, the process exits 0.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    env.sim.shutdown().await;
}
