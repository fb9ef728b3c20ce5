//! Registration with several `$requestPsnFromBfWorkflow` batches in flight
//! (`[submit] batches_in_flight`), against the simulator behind a small proxy in this test
//! (127.0.0.1) that can refuse the batches holding one filter (422), fail every request after
//! the first few (503), and observes how many requests are in flight at once.
//!
//! What must hold whatever the concurrency: the same records, states and statistics as
//! sending one batch after the other; a refused batch is split down to the one record the
//! fTTP objects to while the other batches go on; a transient failure stops sending, loses
//! nothing, and the next run sends exactly what was left.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::agent::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ttp_agent::agent::{Agent, Shutdown};
use ttp_agent::cli::context;
use ttp_agent::client::{RetryPolicy, TtpClient};
use ttp_agent::domain::RecordState;
use ttp_agent::submit::{self, RegisterStats};

/// What the proxy does with a request.
#[derive(Default)]
struct Rules {
    /// Answer 422 to a request whose body holds this text (a filter's base64).
    refuse_containing: Option<String>,
    /// Forward only this many requests; answer 503 to every later one.
    forward_at_most: Option<usize>,
    /// Hold each request until this many are in flight at once (once reached, never again),
    /// so that concurrency is observed whatever the timing; gives up after 5 s.
    hold_until_in_flight: Option<usize>,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Rules>,
    forwarded: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: tokio::sync::watch::Sender<usize>,
}

struct Proxy {
    state: Arc<ProxyState>,
    addr: SocketAddr,
    base_path: String,
}

impl Proxy {
    async fn start(sim: &ttp_sim::SimHandle) -> Proxy {
        let upstream = sim.base_url();
        let base_path = upstream
            .strip_prefix(&format!("http://{}", sim.addr()))
            .expect("simulator URL on its address")
            .to_string();
        let state = Arc::new(ProxyState {
            upstream: format!("http://{}", sim.addr()),
            http: {
                ttp_agent::client::tls::install_crypto_provider();
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("HTTP client")
            },
            rules: Mutex::new(Rules::default()),
            forwarded: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: tokio::sync::watch::channel(0).0,
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy {
            state,
            addr,
            base_path,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.base_path)
    }

    fn set(&self, rules: Rules) {
        *self.state.rules.lock().unwrap() = rules;
        self.state.forwarded.store(0, Ordering::SeqCst);
    }

    fn max_in_flight(&self) -> usize {
        *self.state.max_in_flight.borrow()
    }
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.send_if_modified(|max| {
        let higher = now > *max;
        *max = (*max).max(now);
        higher
    });
    let response = decide_and_forward(&state, method, uri, headers, body).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn decide_and_forward(
    state: &ProxyState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (refuse, limit, hold) = {
        let rules = state.rules.lock().unwrap();
        let text = String::from_utf8_lossy(&body);
        (
            rules
                .refuse_containing
                .as_deref()
                .is_some_and(|needle| text.contains(needle)),
            rules.forward_at_most,
            rules.hold_until_in_flight,
        )
    };
    if let Some(n) = hold {
        let mut max = state.max_in_flight.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), max.wait_for(|m| *m >= n)).await;
    }
    if refuse {
        return fhir_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "filter refused",
        );
    }
    if limit.is_some_and(|n| state.forwarded.fetch_add(1, Ordering::SeqCst) >= n) {
        return fhir_error(StatusCode::SERVICE_UNAVAILABLE, "transient", "maintenance");
    }
    let mut request = state
        .http
        .request(method, format!("{}{}", state.upstream, uri))
        .body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let content_type = upstream.headers().get("content-type").cloned();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert("content-type", ct);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn fhir_error(status: StatusCode, code: &str, text: &str) -> Response {
    let body = serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}]
    });
    (
        status,
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

struct Site {
    env: Env,
    proxy: Proxy,
    agent: Arc<Agent>,
}

/// A simulator, the proxy in front of it, a configuration with `batch_size` and
/// `batches_in_flight` pointing at the proxy, `n` records stored (`New`), and an agent whose
/// client does not retry (a 503 reaches registration at once). `same_filters_as` makes the
/// encoding use another site's seeds, so both sites have the same filters.
async fn site(
    seed: u64,
    batch_size: usize,
    in_flight: usize,
    n: usize,
    same_filters_as: Option<&Site>,
) -> Site {
    let edits = [
        (
            "[ttp]\n",
            "[ttp]\nrate_limit_per_second = 100000.0\nmax_concurrency = 8\n".to_string(),
        ),
        (
            "batch_size = 50",
            format!("batch_size = {batch_size}\nbatches_in_flight = {in_flight}"),
        ),
    ];
    let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let env = setup(sim_config(seed), &edits).await;
    let proxy = Proxy::start(&env.sim).await;
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        text.replace(&env.sim.base_url(), &proxy.base_url()),
    )
    .unwrap();
    if let Some(other) = same_filters_as {
        let seeds = Path::new("secrets").join("encoding-seeds.json");
        std::fs::copy(
            other.env.dir.path().join(&seeds),
            env.dir.path().join(&seeds),
        )
        .unwrap();
    }
    let loaded = load(&env.config_path);
    let mut settings = context::client_settings(&loaded.config, &loaded.secrets);
    settings.retry = RetryPolicy::no_retries();
    let store = context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let agent = Agent::new(
        store,
        TtpClient::new(settings).unwrap(),
        context::options(&loaded.config),
        Shutdown::never(),
    );
    let encoder = encoder(&loaded);
    let records = submit::read_records_from(records_csv(n).as_bytes(), "records.csv").unwrap();
    let encoded = submit::encode_records(&encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), &encoder).unwrap();
    let stored = submit::store_records(agent.store(), &encoded, 1000).unwrap();
    assert_eq!(stored.inserted, n);
    Site { env, proxy, agent }
}

/// Every record's local id → its state, and whether its pseudonym is the one the simulator
/// assigned to its filter (`None` when it has none).
fn outcome(site: &Site) -> BTreeMap<String, (RecordState, Option<bool>)> {
    site.agent
        .store()
        .records_in_states(|_| true)
        .unwrap()
        .into_iter()
        .map(|r| {
            let bf = ttp_proto::BloomFilter(r.head.bloom_filter.clone()).to_base64();
            let matches = r
                .head
                .pseudonym
                .as_ref()
                .map(|p| Some(p) == site.env.sim.pseudonym_of(&bf).as_ref());
            (r.head.local_id, (r.head.state, matches))
        })
        .collect()
}

fn assert_store_consistent(site: &Site) {
    let report = site.agent.store().check_integrity().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_give_the_same_result_as_one_after_the_other() {
    const N: usize = 200;
    let sequential = site(31, 10, 1, N, None).await;
    let concurrent = site(31, 10, 4, N, Some(&sequential)).await;
    concurrent.proxy.set(Rules {
        hold_until_in_flight: Some(4),
        ..Rules::default()
    });
    let idat_before = concurrent
        .agent
        .store()
        .get_record("case-00007")
        .unwrap()
        .unwrap()
        .idat;

    let one: RegisterStats = sequential.agent.register_pending().await.unwrap();
    let four: RegisterStats = concurrent.agent.register_pending().await.unwrap();

    assert_eq!(sequential.proxy.max_in_flight(), 1, "one batch at a time");
    assert_eq!(concurrent.proxy.max_in_flight(), 4, "four batches at once");
    assert_eq!(one, four);
    assert_eq!((one.batches, one.sent, one.pending_left), (N / 10, N, 0));
    assert!(
        one.pseudonymised > 0 && one.awaiting_clearing > 0,
        "{one:?}"
    );
    assert_eq!(one.pseudonymised + one.awaiting_clearing, N);

    let (a, b) = (outcome(&sequential), outcome(&concurrent));
    assert_eq!(a, b);
    assert_eq!(a.len(), N);
    for (id, (state, psn_matches)) in &b {
        match state {
            RecordState::Pseudonymised => assert_eq!(*psn_matches, Some(true), "{id}"),
            RecordState::AwaitingClearing => assert_eq!(*psn_matches, None, "{id}"),
            other => panic!("{id} ended {other:?}"),
        }
    }
    for s in [&sequential, &concurrent] {
        let stats = s.env.sim.stats();
        assert_eq!(
            (stats.registrations, stats.duplicate_registrations),
            (N as u64, 0)
        );
        assert_store_consistent(s);
        let counts = s.agent.store().record_counts().unwrap();
        assert_eq!(counts.new + counts.sending, 0, "{counts:?}");
        assert_eq!(counts.with_pseudonym, one.pseudonymised as u64);
    }
    // State changes keep the sealed IDAT as it was.
    let after = concurrent
        .agent
        .store()
        .get_record("case-00007")
        .unwrap()
        .unwrap();
    assert!(after.idat.is_some());
    assert_eq!(after.idat, idat_before);
}

/// A 4xx for the whole request is about the request (study, target, the gateway), never a
/// verdict on the records in it (issue 11): nothing is rejected or bisected; the refused batch
/// stays pending, registration pauses with back-off, the batches already in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_a_whole_rejects_no_record_while_others_go_on() {
    const N: usize = 40;
    let site = site(32, 10, 4, N, None).await;
    let bad = site
        .agent
        .store()
        .get_record("case-00013")
        .unwrap()
        .unwrap();
    site.proxy.set(Rules {
        refuse_containing: Some(ttp_proto::BloomFilter(bad.head.bloom_filter.clone()).to_base64()),
        ..Rules::default()
    });

    let stats = site.agent.register_pending().await.unwrap();

    // All four batches leave at once; batch 2 (case-00010..19) is refused as a whole.
    assert_eq!(stats.batches, 4, "{stats:?}");
    assert_eq!((stats.sent, stats.rejected), (N - 10, 0), "{stats:?}");
    assert_eq!(stats.pseudonymised + stats.awaiting_clearing, N - 10);
    assert_eq!(stats.pending_left, 10, "{stats:?}");
    let blocked = stats.blocked.clone().expect("a whole-request failure");
    assert_eq!(blocked.cause, "http-422");
    let outcome = outcome(&site);
    for (id, (state, _)) in &outcome {
        let refused = ("case-00010".."case-00020").contains(&id.as_str());
        if refused {
            assert!(
                matches!(state, RecordState::Sending { .. }),
                "{id} stays pending, ended {state:?}"
            );
        } else {
            assert!(
                matches!(
                    state,
                    RecordState::Pseudonymised | RecordState::AwaitingClearing
                ),
                "{id} ended {state:?}"
            );
        }
    }
    assert_eq!(site.env.sim.stats().registrations, N as u64 - 10);
    assert!(site.agent.store().registration_blocked().unwrap().is_some());
    assert_store_consistent(&site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_leaves_the_unsent_records_pending_and_loses_nothing() {
    const N: usize = 100;
    const FORWARDED: usize = 6;
    let site = site(33, 10, 4, N, None).await;
    site.proxy.set(Rules {
        forward_at_most: Some(FORWARDED),
        ..Rules::default()
    });

    let first = site.agent.register_pending().await.unwrap();

    let why = first.stopped.clone().expect("registration stopped");
    assert!(why.contains("503"), "{why}");
    // Every forwarded batch was answered and stored, the batches in flight included; the
    // refused ones and those never sent are left, `New` or `Sending`.
    assert_eq!(first.sent, FORWARDED * 10, "{first:?}");
    assert_eq!(first.sent + first.pending_left, N, "{first:?}");
    let counts = site.agent.store().record_counts().unwrap();
    assert_eq!(
        (counts.new + counts.sending) as usize,
        first.pending_left,
        "{counts:?}"
    );
    assert_eq!(
        (counts.pseudonymised + counts.awaiting_clearing) as usize,
        first.sent
    );
    assert_store_consistent(&site);

    // The fTTP is back: the next run sends exactly what was left.
    site.proxy.set(Rules::default());
    let second = site.agent.register_pending().await.unwrap();
    assert_eq!(second.sent, first.pending_left, "{second:?}");
    assert_eq!((second.pending_left, second.stopped.as_deref()), (0, None));
    for (id, (state, psn_matches)) in outcome(&site) {
        match state {
            RecordState::Pseudonymised => assert_eq!(psn_matches, Some(true), "{id}"),
            RecordState::AwaitingClearing => {}
            other => panic!("{id} ended {other:?}"),
        }
    }
    let stats = site.env.sim.stats();
    assert_eq!(
        (stats.registrations, stats.duplicate_registrations),
        (N as u64, 0),
        "each filter reached the fTTP once"
    );
    assert_store_consistent(&site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_are_capped_by_max_concurrency() {
    let env = setup(
        sim_config(34),
        &[
            ("[ttp]\n", "[ttp]\nmax_concurrency = 3\n"),
            ("batch_size = 50", "batch_size = 50\nbatches_in_flight = 16"),
        ],
    )
    .await;
    let loaded = load(&env.config_path);
    assert_eq!(loaded.config.submit.batches_in_flight, 16);
    assert_eq!(context::options(&loaded.config).batches_in_flight, 3);
}
