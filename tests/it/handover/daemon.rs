//! End to end: `ttp-agent submit`, then `ttp-agent run` with `[handover] webhook_url` against
//! the simulator; every pseudonym the agent obtains (at registration or after a clearing)
//! reaches the receiver, and SIGTERM stops daemon and worker cleanly.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::agent::*;
use crate::support::hermetic;
use crate::support::logs::KeptLog;
use axum::extract::State;
use axum::http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");
const RECORDS: usize = 20;

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

async fn hook(State(r): State<Received>, body: String) -> StatusCode {
    match serde_json::from_str(&body) {
        Ok(v) => {
            r.lock().expect("lock").push(v);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_every_pseudonym_it_obtains() {
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = receiver.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move {
        let _ = axum::serve(receiver, app).await;
    });

    let mut cfg = sim_config(7);
    cfg.clearing = 0.5;
    cfg.repeat_first = 0.0;
    let env = setup(
        cfg,
        &[
            ("cron = \"0 */15 * * * *\"", "cron = \"* * * * * *\""),
            ("jitter = \"60s\"", "jitter = \"0s\""),
            (
                "[log]\n",
                &format!("[handover]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\n\n[log]\n"),
            ),
        ],
    )
    .await;
    let config = env.config_path.to_str().expect("UTF-8").to_string();
    let records = env.dir.path().join("records.csv");
    std::fs::write(&records, records_csv(RECORDS)).expect("records written");
    let submit = hermetic::command(BIN)
        .args([
            "submit",
            "--config",
            &config,
            records.to_str().expect("UTF-8"),
        ])
        .output()
        .expect("submit runs");
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );

    let log = env.dir.path().join("daemon.log");
    let _log = KeptLog::copy_of(&log);
    let mut daemon = hermetic::command(BIN)
        .args(["run", "--config", &config])
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("daemon starts");
    let mut waited = 0;
    while received.lock().expect("lock").len() < RECORDS {
        assert!(
            daemon.try_wait().expect("status").is_none(),
            "the daemon died: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            waited < 1200,
            "only {} of {RECORDS} pseudonyms delivered: {}",
            received.lock().expect("lock").len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let status = daemon.wait().expect("daemon ends");
    assert!(status.success(), "{status}");

    let got = received.lock().expect("lock").clone();
    let seqs: Vec<u64> = got
        .iter()
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=RECORDS as u64).collect::<Vec<_>>());
    // Each matches the record's pseudonym in the store and the simulator's assignment.
    let loaded = load(&env.config_path);
    let store =
        ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).expect("store opens");
    for v in &got {
        let id = v["local_id"].as_str().expect("local id");
        let rec = store.get_record(id).expect("reads").expect("record");
        assert_eq!(
            rec.head.pseudonym.as_deref(),
            v["pseudonym"].as_str(),
            "{id}"
        );
        assert_eq!(
            env.sim
                .pseudonym_of(&ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64())
                .as_deref(),
            v["pseudonym"].as_str(),
            "{id}"
        );
    }
    assert_eq!(
        store
            .pending_events(ttp_agent::store::HandoverConsumer::Webhook)
            .expect("pending"),
        0
    );
}
