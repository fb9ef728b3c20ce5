//! Shared set-up for the admin tests: one known scenario built through the real flow
//! (simulator + submit + polls), and an admin server on a free loopback port.
//!
//! The scenario, after [`scenario`]:
//!
//! | task                                   | state            | deadline      |
//! |----------------------------------------|------------------|---------------|
//! | send_idat for record 4                 | done (today)     | +3 days       |
//! | send_idat for record 0                 | received         | +30 h (urgent)|
//! | send_idat for record 1                 | received         | +5 days       |
//! | send_idat for record 2                 | retry-wait (503) | +6 days       |
//! | send_idat for record 3                 | expired (today)  | passed        |
//! | `delete_everything` (unknown type)     | needs-attention  | none          |
//!
//! Five records, all pseudonymised. Open tasks stay open because the second poll runs with its
//! shutdown already triggered: the listing is merged (new tasks stored, the past deadline
//! expired, the unknown type handed to a person) but nothing is dispatched; one task is then
//! dispatched against a simulator answering 503, which leaves it retrying with its error.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use ttp_agent::admin::{self, AdminSettings, AdminState, AgentMetrics, Site};
use ttp_agent::agent::{Agent, Shutdown, plan, shutdown};
use ttp_agent::cli::context::{self, Loaded};
use ttp_agent::domain::TaskState;
use ttp_agent::submit;
use ttp_sim::{FaultConfig, FaultKind, FaultTiming};

use crate::support::agent::*;

pub const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";
pub const UNKNOWN_TYPE: &str = "delete_everything";

/// The numbers the scenario must show everywhere.
pub struct Expected {
    pub records: u64,
    pub pseudonymised: u64,
    pub open_received: usize,
    pub open_retry_wait: usize,
    pub needs_attention: usize,
    pub expiring_soon: usize,
    pub failing: usize,
    pub done_today: u64,
    pub expired_today: u64,
}

pub const EXPECTED: Expected = Expected {
    records: 5,
    pseudonymised: 5,
    open_received: 2,
    open_retry_wait: 1,
    needs_attention: 1,
    expiring_soon: 1,
    failing: 1,
    done_today: 1,
    expired_today: 1,
};

pub struct Scenario {
    pub env: Env,
    pub loaded: Loaded,
    pub agent: Arc<Agent>,
    /// Task keys and record ids of the scenario: none may appear in `/metrics`.
    pub identifiers: Vec<String>,
}

/// Configuration edits that add the admin token (written by [`scenario`] before loading).
pub fn token_edits() -> Vec<(&'static str, &'static str)> {
    vec![(
        "[admin]\n",
        "[admin]\ntoken_file = \"secrets/admin-token\"\n",
    )]
}

/// Builds the scenario of the module docs. `edits` change the starter configuration.
pub async fn scenario(edits: &[(&str, &str)]) -> Scenario {
    let mut cfg = sim_config(17);
    cfg.clearing = 0.0;
    let env = setup(cfg, edits).await;
    write_token(env.dir.path());
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);

    let csv = env.dir.path().join("records.csv");
    std::fs::write(&csv, records_csv(5)).unwrap();
    let records = submit::read_records(&csv).unwrap();
    let encoded = submit::encode_records(&encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), &encoder).unwrap();
    submit::store_records(agent.store(), &encoded, 1000).unwrap();
    let reg = agent.register_pending().await.unwrap();
    assert_eq!(reg.pseudonymised, 5, "{reg:?}");
    agent.poll_cycle().await.expect("first poll");

    let mut recs = agent.store().records_in_states(|_| true).unwrap();
    recs.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
    let bf = |i: usize| ttp_proto::BloomFilter(recs[i].head.bloom_filter.clone()).to_base64();
    let now = env.sim.now();
    let hours = chrono::Duration::hours;

    // One answered today.
    env.sim
        .add_send_idat_for(&bf(4), &["given"], now + hours(72));
    let report = agent.poll_cycle().await.expect("second poll");
    assert_eq!(report.dispatch.done, 1, "{report:?}");

    // The rest: listed and merged, not dispatched.
    env.sim
        .add_send_idat_for(&bf(0), &["given"], now + hours(30));
    env.sim
        .add_send_idat_for(&bf(1), &["given", "family"], now + hours(120));
    let retried = env
        .sim
        .add_send_idat_for(&bf(2), &["birthdate"], now + hours(144));
    // The simulator never lists a task past its deadline, so this one gets a deadline a few
    // seconds away: listed and stored now, expired by the agent at the next merge.
    let short = chrono::Utc::now() + chrono::Duration::seconds(3);
    env.sim.add_send_idat_for(&bf(3), &["given"], short);
    env.sim.inject_task(json!({
        "name": UNKNOWN_TYPE,
        "part": [{"name": "reason", "valueString": "a newer gateway"}]
    }));
    let (trigger, stopped) = shutdown::channel();
    trigger.trigger();
    let merging = Agent::new(
        Arc::clone(agent.store()),
        context::client(&loaded.config, &loaded.secrets).unwrap(),
        context::options(&loaded.config),
        stopped,
    );
    assert!(
        merging.poll_cycle().await.is_err(),
        "shut down before dispatch"
    );
    assert_eq!(
        agent.store().tasks().unwrap().len(),
        6,
        "every task was merged"
    );

    // One answered against a failing fTTP: retry-wait with its error.
    env.sim
        .set_faults(FaultConfig::always(
            FaultKind::Status(503),
            FaultTiming::Before,
        ))
        .unwrap();
    let tasks = agent.store().tasks().unwrap();
    let target: Vec<_> = plan::ready(tasks.clone(), chrono::Utc::now())
        .into_iter()
        .filter(|t| t.key.0.contains(&retried))
        .collect();
    assert_eq!(target.len(), 1, "{tasks:?}");
    let stats = agent.dispatch(target).await.unwrap();
    assert_eq!(stats.retry, 1, "{stats:?}");
    env.sim.set_faults(FaultConfig::none()).unwrap();

    // The short deadline passes; the next merge expires the task.
    let wait = (short - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(50)).await;
    assert!(
        merging.poll_cycle().await.is_err(),
        "shut down before dispatch"
    );

    let tasks = agent.store().tasks().unwrap();
    let count = |f: &dyn Fn(&TaskState) -> bool| tasks.iter().filter(|t| f(&t.state)).count();
    assert_eq!(
        count(&|s| *s == TaskState::Received),
        EXPECTED.open_received
    );
    assert_eq!(
        count(&|s| matches!(s, TaskState::RetryWait { .. })),
        EXPECTED.open_retry_wait
    );
    assert_eq!(
        count(&|s| matches!(s, TaskState::NeedsAttention { .. })),
        EXPECTED.needs_attention
    );
    assert_eq!(
        count(&|s| matches!(s, TaskState::Expired { .. })),
        1,
        "{:#?}",
        tasks
            .iter()
            .map(|t| (&t.key.0, t.state.name()))
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&|s| matches!(s, TaskState::Done { .. })), 1);

    let mut identifiers: Vec<String> = tasks.iter().map(|t| t.key.0.clone()).collect();
    identifiers.extend(recs.iter().map(|r| r.head.local_id.clone()));
    identifiers.extend(recs.iter().filter_map(|r| r.head.pseudonym.clone()));
    Scenario {
        env,
        loaded,
        agent,
        identifiers,
    }
}

fn write_token(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("secrets").join("admin-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A running admin server over the scenario's store.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AdminState>,
    trigger: shutdown::ShutdownTrigger,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// The scenario's admin state, with the configuration's settings changed by `adjust`.
pub fn state_with(s: &Scenario, adjust: impl FnOnce(&mut AdminSettings)) -> Arc<AdminState> {
    let mut settings = AdminSettings::from_config(&s.loaded.config.admin, &s.loaded.secrets);
    adjust(&mut settings);
    AdminState::new(
        Arc::clone(s.agent.store()),
        Some(s.agent.client().clone()),
        settings,
        Site {
            study: STUDY.into(),
            target: TARGET.into(),
        },
        Arc::new(AgentMetrics::new()),
    )
}

/// Starts the admin server on a free loopback port, with the configuration's settings, as a
/// daemon that has polled: its first poll succeeded.
pub async fn serve(s: &Scenario) -> Server {
    serve_with(s, |_| {}).await
}

/// [`serve`], with the configuration's settings changed by `adjust`.
pub async fn serve_with(s: &Scenario, adjust: impl FnOnce(&mut AdminSettings)) -> Server {
    let state = state_with(s, adjust);
    state.health().cycle_finished(
        &Ok(ttp_agent::agent::CycleReport::default()),
        chrono::Utc::now(),
    );
    serve_state(state).await
}

pub async fn serve_state(state: Arc<AdminState>) -> Server {
    let listener = admin::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, listener_shutdown) = shutdown::channel();
    tokio::spawn(admin::serve(
        listener,
        Arc::clone(&state),
        listener_shutdown,
    ));
    Server {
        addr,
        state,
        trigger,
    }
}

/// An HTTP client for the tests (the crate's reqwest needs the crypto provider installed).
pub fn http() -> reqwest::Client {
    ttp_agent::client::tls::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Points `[admin] listen` of the configuration file at `addr`.
pub fn set_listen(config_path: &std::path::Path, addr: SocketAddr) {
    // `support::agent::setup` has set the starter's port to 0 (any free port).
    let text = std::fs::read_to_string(config_path).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:0\""));
    std::fs::write(
        config_path,
        text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\"")),
    )
    .unwrap();
}

/// A shutdown listener that never fires, for agents built by hand.
pub fn never() -> Shutdown {
    Shutdown::never()
}
