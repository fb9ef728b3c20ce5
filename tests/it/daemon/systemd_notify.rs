//! The `Type=notify` contract of systemd/ttp-agent.service, with the real binary and a
//! notification socket in the test standing in for systemd: READY=1 once the daemon runs,
//! STATUS= after each poll, WATCHDOG=1 at a quarter of WATCHDOG_USEC while it makes progress,
//! STOPPING=1 on SIGTERM, then exit 0.

use std::time::Duration;

use crate::support::agent::*;
use crate::support::daemon::*;
use crate::support::hermetic;
use tokio::net::UnixDatagram;

/// Receives datagrams until `pred` holds for the collected messages (bounded by PATIENCE).
async fn collect_until(
    socket: &UnixDatagram,
    got: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !pred(got) {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {what}; received so far: {got:?}"))
            .unwrap();
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn count(got: &[String], message: &str) -> usize {
    got.iter()
        .filter(|m| m.lines().any(|l| l == message))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let env = setup(
        sim_config(41),
        &[
            ("cron = \"0 */15 * * * *\"", "cron = \"0 0 0 1 1 *\""),
            ("jitter = \"60s\"", "jitter = \"0s\""),
        ],
    )
    .await;
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let mut cmd = hermetic::command(BIN);
    cmd.args(["run", "--config", env.config_path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        // 2 s: the agent pings every 0.5 s while idle between polls.
        .env("WATCHDOG_USEC", "2000000");
    let mut daemon = Daemon::spawn(cmd, &env.dir.path().join("daemon.log"));

    let mut got = Vec::new();
    collect_until(&socket, &mut got, "READY=1", |g| count(g, "READY=1") == 1).await;
    collect_until(&socket, &mut got, "a poll status", |g| {
        g.iter()
            .any(|m| m.starts_with("STATUS=last poll ok: 0 listed, 0 open"))
    })
    .await;
    // Idle until next year: only the watchdog pings keep coming.
    collect_until(&socket, &mut got, "watchdog pings", |g| {
        count(g, "WATCHDOG=1") >= 4
    })
    .await;
    let ready_at = got.iter().position(|m| m.starts_with("READY=1")).unwrap();
    let first_ping = got.iter().position(|m| m == "WATCHDOG=1").unwrap();
    assert!(ready_at < first_ping, "{got:?}");
    assert_eq!(count(&got, "STOPPING=1"), 0, "{got:?}");

    daemon.signal(libc::SIGTERM);
    collect_until(&socket, &mut got, "STOPPING=1", |g| {
        count(g, "STOPPING=1") >= 1
    })
    .await;
    let (status, _) = daemon.wait_exit().await;
    assert!(status.success(), "{status}:\n{}", daemon.raw_log());
    // No ping after STOPPING=1 (a stopping service must not look alive).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut buf = [0u8; 256];
    while let Ok(n) = socket.try_recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let stopping_at = got.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(
        !got[stopping_at..].iter().any(|m| m == "WATCHDOG=1"),
        "{got:?}"
    );
    env.sim.shutdown().await;
}
