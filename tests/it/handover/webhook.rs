//! The pseudonym delivery webhook against a real HTTP receiver on 127.0.0.1: retries after
//! 503s, a receiver that is down and comes up, order and completeness, the bearer token, the
//! state shown in the status report, and shutdown.
//!
//! Waiting is for conditions ("every event arrived"), bounded by a generous deadline that only
//! turns a hang into a failure; nothing asserts how long anything took.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::handover::{Site, site};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use ttp_agent::agent::shutdown;
use ttp_agent::domain::{LocalRecord, RecordHead, RecordState};
use ttp_agent::handover::{self, HandoverSettings, WebhookWorker};
use ttp_agent::store::{HandoverConsumer, Store};

const TOKEN: &str = "test-handover-token-42";

#[derive(Default)]
struct Received {
    /// Answer 503 to this many requests before accepting any.
    fail_first: usize,
    attempts: usize,
    accepted: Vec<serde_json::Value>,
    authorization: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let mut r = r.lock().expect("lock");
    r.attempts += 1;
    r.authorization.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    if r.attempts <= r.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_str(&body) {
        Ok(v) => {
            r.accepted.push(v);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// Serves the receiver on `listener` until the test ends.
fn serve(listener: tokio::net::TcpListener, fail_first: usize) -> Shared {
    let shared: Shared = Arc::new(Mutex::new(Received {
        fail_first,
        ..Received::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(Arc::clone(&shared));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    shared
}

/// A site whose `[handover]` points at `port`, with a token file.
fn site_with_webhook(port: u16) -> Site {
    let site = site();
    let token = site.dir.path().join("secrets").join("handover-token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token written");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    site.append_config(&format!(
        "\n[handover]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\nwebhook_token_file = \"secrets/handover-token\"\nwebhook_timeout = \"5s\"\n"
    ));
    site
}

/// The configured settings, with pauses short enough for a test.
fn settings(site: &Site) -> HandoverSettings {
    let config =
        ttp_agent::config::AgentConfig::from_file_and_env(Some(&site.config), std::iter::empty())
            .expect("config loads");
    let secrets = config.load_secrets().expect("secrets load");
    let mut s = HandoverSettings::from_config(&config, &secrets).expect("webhook configured");
    assert!(!format!("{s:?}").contains(TOKEN));
    s.webhook.backoff.base = Duration::from_millis(5);
    s.webhook.backoff.cap = Duration::from_millis(40);
    s.idle_interval = Duration::from_millis(20);
    s
}

fn obtain(store: &Store, ids: &[&str]) {
    let at = Utc::now();
    let recs: Vec<LocalRecord> = ids
        .iter()
        .map(|id| LocalRecord {
            head: RecordHead {
                local_id: (*id).to_string(),
                bloom_filter: id.as_bytes().to_vec(),
                state: RecordState::AwaitingClearing,
                pseudonym: None,
                created_at: at,
                updated_at: at,
            },
            idat: None,
        })
        .collect();
    store.insert_records(&recs).expect("inserts");
    for id in ids {
        let mut r = store.get_record(id).expect("reads").expect("exists");
        r.head.assign_pseudonym(&format!("psn-{id}"), Utc::now());
        store.update_records(&[r]).expect("updates");
    }
}

/// Waits until `done` holds (checked every 10 ms); panics after a minute.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A webhook worker running on the store until [`Running::stop`].
struct Running {
    trigger: shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
    waker: Arc<tokio::sync::Notify>,
}

impl Running {
    fn start(store: &Arc<Store>, site: &Site) -> Running {
        let (trigger, listener) = shutdown::channel();
        let worker = WebhookWorker::new(Arc::clone(store), settings(site)).expect("worker");
        let waker = worker.waker();
        let task = tokio::spawn(worker.run(listener));
        Running {
            trigger,
            task,
            waker,
        }
    }

    /// Stops the worker and waits until it has ended.
    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.expect("worker ends on shutdown");
    }
}

/// Waits until the receiver has accepted `n` events and the worker has stored its cursor past
/// them. Waiting for the receiver alone races with a stop: a delivery whose 200 arrives after
/// shutdown fires is abandoned by design and sent again at the next start (at least once).
async fn delivered(store: &Store, received: &Shared, n: u64) {
    until(&format!("{n} deliveries and their cursor"), || {
        accepted_seqs(received).len() as u64 == n
            && store.export_cursor(HandoverConsumer::Webhook).ok() == Some(n)
    })
    .await;
}

fn accepted_seqs(r: &Shared) -> Vec<u64> {
    r.lock()
        .expect("lock")
        .accepted
        .iter()
        .map(|v| v["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_in_order_after_503s_with_the_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let received = serve(listener, 3);
    let site = site_with_webhook(port);
    let store = site.open_store();
    obtain(&store, &["a", "b", "c"]);

    let worker = Running::start(&store, &site);

    until("three deliveries", || accepted_seqs(&received).len() == 3).await;
    // More pseudonyms while it runs: a wake-up (as after a poll cycle) delivers them.
    obtain(&store, &["d"]);
    worker.waker.notify_one();
    delivered(&store, &received, 4).await;
    worker.stop().await;

    // Each event exactly once (503 means "not processed"), in log order, none lost.
    assert_eq!(accepted_seqs(&received), [1, 2, 3, 4]);
    let r = received.lock().expect("lock");
    assert_eq!(r.attempts, 7);
    let first = &r.accepted[0];
    assert_eq!(first["local_id"], "a");
    assert_eq!(first["pseudonym"], "psn-a");
    assert_eq!(first["study"], "test-study");
    assert_eq!(first["target"], "dic_test");
    assert!(first["obtained_at"].is_string());
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        r.authorization
            .iter()
            .all(|a| a.as_deref() == Some(bearer.as_str()))
    );
    drop(r);

    assert_eq!(
        store
            .export_cursor(HandoverConsumer::Webhook)
            .expect("cursor"),
        4
    );
    let status = handover::status(&store).expect("status");
    let webhook = status.webhook.expect("webhook state shown");
    assert_eq!(webhook.pending, 0);
    assert_eq!(webhook.delivered_through, 4);
    assert!(webhook.state.last_success.is_some());
    assert_eq!(webhook.state.failing_since, None);
    assert_eq!(
        webhook.state.last_error.as_deref(),
        Some("the receiver answered HTTP 503")
    );
    // The webhook's cursor is its own: `export --new` still has everything to do.
    assert_eq!(status.export_pending, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_shows_as_failing_then_gets_everything_when_it_comes_up() {
    // Reserve a port, then close it: connections are refused until the receiver starts.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        l.local_addr().expect("addr").port()
    };
    let site = site_with_webhook(port);
    let store = site.open_store();
    obtain(&store, &["a", "b"]);

    let worker = Running::start(&store, &site);

    until("a failure shown in the status", || {
        handover::status(&store)
            .expect("status")
            .webhook
            .is_some_and(|w| w.state.consecutive_failures >= 2)
    })
    .await;
    let failing = handover::status(&store)
        .expect("status")
        .webhook
        .expect("webhook");
    assert_eq!(failing.pending, 2);
    assert!(failing.state.failing_since.is_some());
    let error = failing.state.last_error.expect("an error");
    assert!(error.contains("connect"), "{error}");
    // Neither the URL's path nor the token leaks into the error.
    assert!(
        !error.contains("/hook") && !error.contains(TOKEN),
        "{error}"
    );
    // The text report shows it too.
    let report = ttp_agent::status::build(&store, chrono::Duration::hours(48), 1).expect("report");
    let text = ttp_agent::status::render_text(&report);
    assert!(text.contains("webhook failing since"), "{text}");

    // The receiver comes up on the same port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebinds the reserved port");
    let received = serve(listener, 0);
    delivered(&store, &received, 2).await;
    worker.stop().await;
    assert_eq!(accepted_seqs(&received), [1, 2]);
    let w = handover::status(&store)
        .expect("status")
        .webhook
        .expect("webhook");
    assert_eq!((w.pending, w.state.failing_since), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_survives_a_restart_and_nothing_is_sent_twice_after_a_clean_stop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let received = serve(listener, 0);
    let site = site_with_webhook(port);
    {
        let store = site.open_store();
        obtain(&store, &["a", "b"]);
        let worker = Running::start(&store, &site);
        delivered(&store, &received, 2).await;
        worker.stop().await;
    }
    // Reopened (as after a restart): only the new pseudonym goes out.
    let store = site.open_store();
    obtain(&store, &["c"]);
    let worker = Running::start(&store, &site);
    delivered(&store, &received, 3).await;
    worker.stop().await;
    assert_eq!(accepted_seqs(&received), [1, 2, 3]);
}

/// What a receiver saw: each `seq` it got, and whether the store held that event durably at
/// that moment (the log's head at the store's last flush reached it).
type Durability = Arc<Mutex<Vec<(u64, bool)>>>;

async fn durability_hook(
    State((store, seen)): State<(Arc<Store>, Durability)>,
    body: String,
) -> StatusCode {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Some(seq) = v["seq"].as_u64() else {
        return StatusCode::BAD_REQUEST;
    };
    let durable = store.flushed_pseudonym_log_head() >= seq;
    seen.lock().expect("lock").push((seq, durable));
    StatusCode::OK
}

/// Only durable pseudonyms leave (found by the model checker, ARCHITECTURE.md "Durability
/// argument", point 7): pseudonyms the agent committed but has not flushed yet -- as between
/// a wave's outcome write and its flush -- reach the receiver only after the worker flushed
/// them. Before, a crash after the delivery lost the event and gave its `seq` to the next
/// pseudonym, which a receiver dropping repeats by `seq` never kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pseudonym_is_delivered_only_once_it_is_durable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let site = site_with_webhook(port);
    let store = site.open_store();
    let seen: Durability = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(durability_hook))
        .with_state((Arc::clone(&store), Arc::clone(&seen)));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Committed, not flushed.
    obtain(&store, &["a", "b"]);
    assert_eq!(store.flushed_pseudonym_log_head(), 0);
    let worker = Running::start(&store, &site);
    until("two deliveries", || seen.lock().expect("lock").len() == 2).await;
    obtain(&store, &["c"]);
    worker.waker.notify_one();
    until("three deliveries", || seen.lock().expect("lock").len() == 3).await;
    worker.stop().await;
    assert_eq!(
        *seen.lock().expect("lock"),
        [(1, true), (2, true), (3, true)]
    );
}
