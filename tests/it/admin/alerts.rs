//! Alerts over the known scenario (see `support::admin`): raised once per task and condition,
//! delivered to a webhook receiver on loopback that is down at first, kept in the store across
//! a restart, and given up on (visibly) after the configured time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::admin::*;
use crate::support::agent::*;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::Utc;
use ttp_agent::admin::alerts::{EXPIRING_SOON, NEEDS_ATTENTION};
use ttp_agent::admin::{AgentMetrics, Alerts, Site, WebhookSettings};
use ttp_agent::agent::shutdown;
use ttp_agent::cli::context;
use ttp_agent::store::Store;

/// A webhook receiver: answers 503 to the first `failures` requests, then 200, and keeps the
/// bodies it accepted.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<AtomicUsize>,
    failures: usize,
    accepted: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start(failures: usize) -> (Receiver, SocketAddr) {
        let receiver = Receiver {
            failures,
            ..Receiver::default()
        };
        let state = receiver.clone();
        let app = Router::new().route(
            "/hooks/s3cr3t-path",
            post(move |body: String| {
                let state = state.clone();
                async move {
                    let n = state.requests.fetch_add(1, Ordering::SeqCst);
                    if n < state.failures {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let json = serde_json::from_str(&body).expect("the body is JSON");
                    state.accepted.lock().unwrap().push(json);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn accepted(&self) -> Vec<serde_json::Value> {
        self.accepted.lock().unwrap().clone()
    }
}

fn webhook(addr: SocketAddr) -> WebhookSettings {
    let mut w = WebhookSettings::new(format!("http://{addr}/hooks/s3cr3t-path").parse().unwrap());
    w.timeout = Duration::from_secs(5);
    w.backoff.base = Duration::from_millis(20);
    w.backoff.cap = Duration::from_millis(100);
    w
}

fn alerts(
    store: &Arc<Store>,
    webhook: Option<WebhookSettings>,
) -> (Arc<Alerts>, Arc<AgentMetrics>) {
    let metrics = Arc::new(AgentMetrics::new());
    let alerts = Alerts::new(
        Arc::clone(store),
        chrono::Duration::hours(48),
        Site {
            study: STUDY.into(),
            target: TARGET.into(),
        },
        webhook,
        Arc::clone(&metrics),
    )
    .unwrap();
    (alerts, metrics)
}

fn status(store: &Store) -> ttp_agent::status::StatusReport {
    ttp_agent::status::build(store, chrono::Duration::hours(48), 1).unwrap()
}

/// The scenario raises exactly these two: the task due in 30 h, and the unknown task type.
fn assert_scenario_alerts(bodies: &[serde_json::Value]) {
    let mut kinds: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().unwrap().to_string(),
                b["task_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (EXPIRING_SOON.to_string(), "send_idat".to_string()),
            (NEEDS_ATTENTION.to_string(), UNKNOWN_TYPE.to_string()),
        ]
    );
    for b in bodies {
        assert_eq!(b["study"], STUDY);
        assert_eq!(b["site_target"], TARGET);
        assert!(b["task_key"].as_str().unwrap().contains('/'), "{b}");
        assert!(b["text"].as_str().unwrap().contains(STUDY), "{b}");
        for field in ["expires", "reason", "at"] {
            assert!(b.get(field).is_some(), "{field} missing: {b}");
        }
        if b["kind"] == EXPIRING_SOON {
            assert!(b["expires"].is_string() && b["reason"].is_null(), "{b}");
        } else {
            assert!(b["reason"].as_str().unwrap().contains(UNKNOWN_TYPE), "{b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_raised_once_and_delivered_once_the_receiver_recovers() {
    let s = scenario(&[]).await;
    let (receiver, addr) = Receiver::start(2).await;
    let (alerts, metrics) = alerts(s.agent.store(), Some(webhook(addr)));

    let eval = alerts.evaluate_now(Utc::now()).unwrap();
    assert_eq!(eval.raise.len(), 2, "{eval:?}");
    assert!(
        alerts.evaluate_now(Utc::now()).unwrap().raise.is_empty(),
        "raised once"
    );

    // The receiver is "down" (503) for the first round: both attempts fail and wait.
    let round = alerts.deliver_due(Utc::now()).await.unwrap();
    assert_eq!((round.delivered, round.failed), (0, 2), "{round:?}");
    let webhook_status = status(s.agent.store()).webhook;
    assert_eq!((webhook_status.pending, webhook_status.failing), (2, 2));
    let error = webhook_status.last_error.unwrap();
    assert!(error.contains("503"), "{error}");
    assert!(
        !error.contains("s3cr3t"),
        "the URL stays out of errors: {error}"
    );

    // Nothing is due before the backoff has passed; then both go through.
    let round = alerts
        .deliver_due(Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(round.delivered + round.failed, 0);
    let later = Utc::now() + chrono::Duration::seconds(1);
    let round = alerts.deliver_due(later).await.unwrap();
    assert_eq!((round.delivered, round.failed), (2, 0), "{round:?}");
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 4);
    assert_scenario_alerts(&receiver.accepted());
    assert_eq!(status(s.agent.store()).webhook.pending, 0);

    let mut text = String::new();
    prometheus_client_text(&metrics, &mut text);
    assert!(
        text.contains("ttp_agent_alerts_total{kind=\"expiring_soon\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("ttp_agent_alerts_total{kind=\"needs_attention\"} 1\n"));
    assert!(text.contains("ttp_agent_webhook_deliveries_total{result=\"failed\"} 2\n"));
    assert!(text.contains("ttp_agent_webhook_deliveries_total{result=\"delivered\"} 2\n"));

    // Once the urgent task is answered its mark goes; the unknown type's stays.
    let result = s.agent.poll_cycle().await.unwrap();
    assert!(result.dispatch.done >= 2, "{result:?}");
    alerts.evaluate_now(Utc::now()).unwrap();
    let marks = s.agent.store().alert_marks().unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].kind, NEEDS_ATTENTION);
    s.env.sim.shutdown().await;
}

fn prometheus_client_text(metrics: &AgentMetrics, out: &mut String) {
    out.push_str(&ttp_agent::admin::metrics::render_events(metrics).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart_and_are_sent_by_the_delivery_loop() {
    let s = scenario(&[]).await;
    // Nothing listens here: every attempt is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    {
        let (alerts, _) = alerts(s.agent.store(), Some(webhook(closed)));
        assert_eq!(alerts.evaluate_now(Utc::now()).unwrap().raise.len(), 2);
        let round = alerts.deliver_due(Utc::now()).await.unwrap();
        assert_eq!(round.failed, 2, "{round:?}");
        let error = status(s.agent.store()).webhook.last_error.unwrap();
        assert!(error.contains("connect"), "{error}");
    }
    let loaded = load(&s.env.config_path);
    let Scenario { env, agent, .. } = s;
    drop(agent);

    // "Restart": the store opens again, with a webhook that now answers.
    let store = context::open_store(&loaded.config, &loaded.secrets).expect("the store reopens");
    assert_eq!(store.pending_deliveries().unwrap().len(), 2);
    let (receiver, addr) = Receiver::start(0).await;
    let (alerts, _) = alerts(&store, Some(webhook(addr)));
    assert!(
        alerts.evaluate_now(Utc::now()).unwrap().raise.is_empty(),
        "the marks survived: nothing is raised twice"
    );
    let (trigger, listener) = shutdown::channel();
    let delivery = tokio::spawn(Arc::clone(&alerts).run_delivery(listener));
    let mut waited = Duration::ZERO;
    while receiver.accepted().len() < 2 {
        assert!(waited < Duration::from_secs(30), "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    trigger.trigger();
    delivery.await.unwrap();
    assert_scenario_alerts(&receiver.accepted());
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        2,
        "each sent once"
    );
    assert!(store.pending_deliveries().unwrap().is_empty());
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_for_too_long_is_dropped_and_counted() {
    let s = scenario(&[]).await;
    let (receiver, addr) = Receiver::start(usize::MAX).await;
    let mut w = webhook(addr);
    w.give_up_after = Some(Duration::ZERO);
    let (alerts, _) = alerts(s.agent.store(), Some(w));
    alerts.evaluate_now(Utc::now()).unwrap();
    let round = alerts.deliver_due(Utc::now()).await.unwrap();
    assert_eq!((round.dropped, round.failed, round.delivered), (2, 0, 0));
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        2,
        "each tried once"
    );
    let report = status(s.agent.store());
    assert_eq!((report.webhook.pending, report.webhook.dropped), (0, 2));
    assert!(
        ttp_agent::status::render_text(&report).contains("2 given up on"),
        "status tells"
    );
    s.env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_alerts_are_still_raised_once_and_nothing_is_queued() {
    let s = scenario(&[]).await;
    let (alerts, _) = alerts(s.agent.store(), None);
    assert_eq!(alerts.evaluate_now(Utc::now()).unwrap().raise.len(), 2);
    assert!(alerts.evaluate_now(Utc::now()).unwrap().raise.is_empty());
    assert!(s.agent.store().pending_deliveries().unwrap().is_empty());
    assert_eq!(s.agent.store().alert_marks().unwrap().len(), 2);
    s.env.sim.shutdown().await;
}
