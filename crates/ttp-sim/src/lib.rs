//! A stateful simulator of the fTTP *dispatcher* (THS Greifswald's TTP-FHIR gateway), for the
//! agent's integration, crash and fault-injection tests, its benchmarks and `ttp-agent demo`.
//!
//! It serves the three operations a site uses, on 127.0.0.1, at the real path
//! (`http://127.0.0.1:PORT/ttp-fhir/fhir/dispatcher`), with the bodies of the IG's examples:
//! `$requestPsnFromBfWorkflow`, `$requestTasks`, `$providePatientData`, and `GET metadata`.
//! It is an independent implementation of the protocol on `serde_json::Value` — it does not
//! use the agent's codec (`ttp-proto`), so a misunderstanding in one cannot hide in both.
//!
//! # The simulated clearing
//!
//! A site registers Bloom filters. For each new filter the simulator decides, from the seed
//! and the filter's bytes (so every run decides the same), whether the fTTP "found a unique
//! match" or needs a *clearing* — a human-reviewed record linkage that needs the patient's
//! identifying data:
//!
//! * **No clearing** (fraction `1 - clearing`): the response carries a `pseudonym-bf` entry
//!   with a new pseudonym `<study>_<6 base32 characters>`. Registering the same filter again
//!   returns the same pseudonym (idempotent).
//! * **Clearing**: the response has no entry for the filter. Instead a task appears in
//!   `$requestTasks`:
//!   1. with probability `repeat_first`, first a `repeat_request`: the site must send the
//!      filter again with `$requestPsnFromBfWorkflow`, which then raises step 2;
//!   2. a `send_idat` with a `taskId`, an `expires` instant and a non-empty subset of the
//!      configured element codes, naming the record by its filter (or, with probability
//!      `idat_by_pseudonym`, by a provisional pseudonym the site cannot know);
//!   3. when the site answers with `$providePatientData` carrying exactly the requested
//!      elements, the clearing finishes: the filter gets its pseudonym and a
//!      `dic_psn_available` task delivers it. The site never acknowledges that task; it is
//!      listed `dic_listings` times and then dropped, so a site that misses it must register
//!      the filter again (which now answers directly).
//!
//!   A `repeat_request` or `send_idat` that expires (`task_ttl`, measured on a clock tests can
//!   [advance](SimHandle::advance)) is dropped and aborts its clearing; registering the filter
//!   again starts a new clearing with a `send_idat`.
//!
//! Filters that are not valid base64, or whose length differs from the first filter the
//! simulator saw, get an `error` entry with `http://hl7.org/fhir/issue-type#invalid`.
//!
//! # Faults and observation
//!
//! [`FaultConfig`] makes requests fail deterministically: statuses (with an OperationOutcome
//! or a proxy's HTML page), 429 with `Retry-After`, delays beyond the client's timeout, dropped
//! connections, truncated and malformed bodies — either before the request is processed or
//! after (then only as faults a client must read as "maybe processed"), and "200 with a body
//! cut short" ([`FaultKind::TruncatedOk`]). [`SimHandle::fault_next`] queues faults for one
//! operation's next requests ([`SimHandle::lose_answers`]: processed, answer lost).
//!
//! Whole-request failures of `$requestPsnFromBfWorkflow` as real gateways send them
//! ([`PsnFailure`], [`SimConfig::psn_failure`], [`SimHandle::set_psn_failure`]): the `all` +
//! `error-code` shape, an `error` naming no filter, a status, an answer naming other filters;
//! an unknown study or target gets [`SimConfig::unknown_study_status`] (404 by default, the
//! IG's "unknown content"). [`SimStats`] counts
//! what happened, including what an agent must never do (duplicate `$providePatientData`,
//! sending unrequested IDAT).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ttp_sim::start(ttp_sim::SimConfig { clearing: 1.0, ..Default::default() }).await?;
//! println!("dispatcher at {}", sim.base_url());
//! // ... run the agent against it ...
//! assert_eq!(sim.stats().duplicate_provides, 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod clock;
mod config;
mod fault;
mod fhir;
mod hash;
mod oauth;
mod patient;
mod server;
mod state;
mod stats;
mod traffic;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    FaultConfig, FaultKind, FaultTiming, InvalidConfig, KNOWN_ELEMENTS, PsnFailure, SimAuth,
    SimConfig, SimOperation,
};
pub use oauth::{OAuth2Client, TOKEN_PATH};
pub use patient::{IDAT_PROFILE, check_idat_patient};
pub use server::BASE_PATH;
pub use state::IdatSubject;
pub use stats::{MAX_VIOLATIONS_KEPT, SimStats};

use server::{Shared, lock};

/// Starts a simulator on `127.0.0.1` with an OS-assigned port.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    start_on(cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// Starts a simulator on `addr`. The library does not restrict the address; the `ttp-sim`
/// binary refuses non-loopback addresses unless told otherwise.
pub async fn start_on(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    cfg.validate()
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(
        cfg.auth.clone(),
        cfg.max_body,
        cfg.latency,
        state::Dispatcher::new(&cfg),
        fault::FaultPlan::new(cfg.faults.clone()),
        shutdown_rx.clone(),
    ));
    let server = tokio::spawn(server::serve(listener, shared.clone(), shutdown_rx));
    tracing::debug!(%addr, "ttp-sim: listening");
    Ok(SimHandle {
        shared,
        addr,
        shutdown: shutdown_tx,
        server,
    })
}

/// A running simulator. Dropping it stops the server too (without waiting);
/// [`SimHandle::shutdown`] waits until in-flight requests are done.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/ttp-fhir/fhir/dispatcher`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }

    /// A snapshot of all counters.
    pub fn stats(&self) -> SimStats {
        let mut stats = lock(&self.shared.dispatcher).stats();
        lock(&self.shared.traffic).fill(&mut stats);
        stats.max_concurrent_requests = self.shared.max_in_flight.load(Ordering::Relaxed);
        let tokens = lock(&self.shared.tokens);
        stats.oauth_token_requests = tokens.requests;
        stats.oauth_token_refusals = tokens.refused;
        stats
    }

    /// The OAuth2 token endpoint's URL (it answers only with [`SimAuth::Bearer`]).
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// Revokes every token issued so far: the next request with one of them gets 401, as
    /// after a restart of the authorisation server or a key rotation.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).revoke_all();
    }

    /// Replaces the fault configuration; the fault sequence restarts at request 0.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), InvalidConfig> {
        faults.validate()?;
        *lock(&self.shared.faults) = fault::FaultPlan::new(faults);
        Ok(())
    }

    /// Makes every later `$requestPsnFromBfWorkflow` fail as a whole in the given shape
    /// (nothing is registered); `None` answers normally again.
    pub fn set_psn_failure(&self, failure: Option<PsnFailure>) -> Result<(), InvalidConfig> {
        if let Some(f) = &failure {
            f.validate()?;
        }
        lock(&self.shared.dispatcher).set_psn_failure(failure);
        Ok(())
    }

    /// The next requests of `op` get these faults, one each, in order (before the seeded
    /// [`FaultConfig`] is asked); replaces what was queued for `op`. A timing of `After` applies
    /// only to kinds that may follow processing ([`FaultKind::can_follow_processing`]).
    pub fn fault_next(&self, op: SimOperation, faults: Vec<(FaultKind, FaultTiming)>) {
        let queue = faults
            .into_iter()
            .map(|(kind, when)| fault::Fault {
                after: when != FaultTiming::Before && kind.can_follow_processing(),
                kind,
                html: false,
            })
            .collect();
        lock(&self.shared.op_faults).insert(op, queue);
    }

    /// The next `count` requests of `op` are processed (their effect happens), then the
    /// connection is closed without an answer: a lost answer after the effect.
    pub fn lose_answers(&self, op: SimOperation, count: u32) {
        let lost = (0..count)
            .map(|_| (FaultKind::Drop, FaultTiming::After))
            .collect();
        self.fault_next(op, lost);
    }

    /// Adds `raw` (any JSON, e.g. an unknown task type or a malformed task) as one more
    /// `parameter` at the end of every `$requestTasks` response until
    /// [`SimHandle::clear_injected`].
    pub fn inject_task(&self, raw: Value) {
        lock(&self.shared.dispatcher).inject(raw);
    }

    pub fn clear_injected(&self) {
        lock(&self.shared.dispatcher).clear_injected();
    }

    /// Raises a `send_idat` for a filter outside any clearing (answering it raises nothing
    /// further). Returns the task id.
    pub fn add_send_idat_for(
        &self,
        bf_base64: &str,
        elements: &[&str],
        expires: DateTime<Utc>,
    ) -> String {
        self.add_send_idat(
            IdatSubject::BloomFilter(bf_base64.to_owned()),
            elements.iter().map(|code| (*code).to_owned()).collect(),
            expires,
        )
    }

    /// Raises a `send_idat` naming the record by filter or pseudonym; `elements` are sent as
    /// given, unchecked (so tests can send unknown codes). Returns the task id.
    pub fn add_send_idat(
        &self,
        subject: IdatSubject,
        elements: Vec<String>,
        expires: DateTime<Utc>,
    ) -> String {
        lock(&self.shared.dispatcher).add_send_idat(subject, elements, expires)
    }

    /// Expires every open `send_idat` and `repeat_request` now (aborting their clearings).
    pub fn expire_all_now(&self) {
        lock(&self.shared.dispatcher).expire_all();
    }

    /// Moves the simulator's clock forward; tasks whose `expires` has passed are dropped at
    /// the next request or query.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// The simulator's "now" (real time plus every [`SimHandle::advance`]).
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Every accepted `$providePatientData` patient, with its task id, in arrival order.
    pub fn received_patients(&self) -> Vec<(String, Value)> {
        lock(&self.shared.dispatcher).received_patients()
    }

    /// The task ids of [`SimHandle::received_patients`], in arrival order: which `send_idat`
    /// tasks were answered.
    pub fn received_task_ids(&self) -> Vec<String> {
        self.received_patients()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The pseudonym of a registered filter, once it has one.
    pub fn pseudonym_of(&self, bf_base64: &str) -> Option<String> {
        lock(&self.shared.dispatcher).pseudonym_of(bf_base64)
    }

    /// The tasks a `$requestTasks` would list now, as `parameter` entries (listing them here
    /// does not count towards `dic_listings`).
    pub fn open_tasks(&self) -> Vec<Value> {
        let now = self.shared.clock.now();
        lock(&self.shared.dispatcher).open_tasks(now)
    }

    /// Stops accepting connections, lets in-flight requests finish (for up to two seconds;
    /// injected delays end at once) and waits for the server to stop.
    pub async fn shutdown(self) {
        // Err only if the server already stopped, which is what we want anyway.
        let _ = self.shutdown.send(true);
        if let Err(err) = self.server.await {
            tracing::warn!(error = %err, "ttp-sim: server task ended abnormally");
        }
    }
}
