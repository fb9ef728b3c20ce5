//! Handing pseudonyms over to the site: the delivery webhook, and the hand-over status.
//!
//! Every pseudonym the agent obtains is appended to the store's pseudonym log in the same
//! transaction that stores it (see `store::psn_log`). Two consumers read that log, each with
//! its own cursor: `ttp-agent export --new` (a file) and this module's webhook worker.
//!
//! # The delivery protocol
//!
//! The worker POSTs **one JSON object per pseudonym**, in log order:
//!
//! ```json
//! {"seq": 17, "local_id": "case-0042", "pseudonym": "…", "study": "…", "target": "…",
//!  "obtained_at": "2025-03-01T10:00:00.000Z"}
//! ```
//!
//! with `Content-Type: application/json` and, if `[handover] webhook_token_file` is set,
//! `Authorization: Bearer <token>`. One object per request keeps receivers trivial (no partial
//! batches to reason about); pseudonyms arrive at the pace of clearings, not in bulk, so the
//! request count does not matter.
//!
//! Any 2xx answer is a delivery: the worker then moves its cursor past the event. Anything
//! else (a non-2xx status, a refused connection, a timeout) is retried, the same event again,
//! after a pause with the agent's one back-off (`crate::webhook`, which also sends: up to
//! about 1 s, doubling, capped at `[handover] webhook_retry_cap`; a `Retry-After` is a floor).
//! An event is never skipped, not even after a 4xx: a receiver that refuses an event is a
//! problem to fix, shown in `ttp-agent status`, not a reason to lose a pseudonym.
//!
//! Only durable pseudonyms are delivered: the worker flushes the store first if the log grew
//! since the last flush (`store::psn_log`, "Only durable events leave").
//!
//! Delivery is **at least once**: the cursor moves only after the 2xx, and it becomes durable
//! with the store's next flush (the worker flushes after each run of deliveries), so a crash
//! in between sends the last events again. They carry the same `seq`; receivers drop repeats.
//! Redirects are not followed (the token must not travel to another host).
//!
//! # State a human can see
//!
//! The worker keeps its last success, its last error and since when it has been failing in
//! the store (`meta`), so [`HandoverStatus`] can be built from the store alone: by
//! `ttp-agent status`, by the admin page inside the daemon, by the metrics.
//!
//! # Waking up
//!
//! New pseudonyms appear during poll cycles. [`WakeAfterCycles`] wraps the daemon's hooks and
//! wakes the worker at the end of each cycle; otherwise the worker looks at the log once a
//! minute, so it needs no coupling to where pseudonyms come from.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::agent::scheduler::DaemonHooks;
use crate::agent::{CycleError, CycleReport, Shutdown};
use crate::client::RetryPolicy;
use crate::config::{AgentConfig, Secrets};
use crate::store::{HandoverConsumer, META_HANDOVER_WEBHOOK_STATE, PsnEvent, Store, StoreError};
use crate::webhook::{Failure, Webhook, WebhookError, WebhookSettings};

/// Events read from the store at a time.
const BATCH: usize = 100;

/// How often an idle worker looks at the log when nothing woke it.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_secs(60);

/// Everything the webhook worker needs. `Debug` shows neither the URL's path nor the token.
#[derive(Clone, Debug)]
pub struct HandoverSettings {
    /// The receiver; its deliveries are never given up on (a pseudonym is never skipped).
    pub webhook: WebhookSettings,
    pub study: String,
    pub target: String,
    pub idle_interval: Duration,
}

impl HandoverSettings {
    /// The settings of `[handover]`, or `None` when no webhook is configured.
    pub fn from_config(config: &AgentConfig, secrets: &Secrets) -> Option<HandoverSettings> {
        let h = &config.handover;
        let url = h.webhook_url.clone()?;
        Some(HandoverSettings {
            webhook: WebhookSettings {
                url,
                token: secrets.handover_token.clone(),
                timeout: h.webhook_timeout,
                backoff: RetryPolicy {
                    max_attempts: u32::MAX,
                    base: Duration::from_secs(1).min(h.webhook_retry_cap),
                    cap: h.webhook_retry_cap,
                    max_retry_after: h.webhook_retry_cap.max(Duration::from_secs(3600)),
                },
                give_up_after: None,
            },
            study: config.ttp.study.clone(),
            target: config.ttp.target.clone(),
            idle_interval: DEFAULT_IDLE_INTERVAL,
        })
    }
}

/// Why the worker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("`[handover] webhook_token_file`: the token is not a valid HTTP header value")]
    BadToken,
    #[error("cannot build the webhook's HTTP client: {0}")]
    Client(String),
}

impl From<WebhookError> for HandoverError {
    fn from(e: WebhookError) -> HandoverError {
        match e {
            WebhookError::BadToken => HandoverError::BadToken,
            WebhookError::Client(detail) => HandoverError::Client(detail),
        }
    }
}

/// What the worker last saw, kept in the store for the status report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookState {
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// The first failure since the last success; `None` while deliveries succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last failure (status or transport error; never the URL or the token).
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// The hand-over part of the status report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HandoverStatus {
    /// Pseudonyms obtained so far (the pseudonym log's newest sequence number).
    pub obtained: u64,
    /// Pseudonyms not yet written by `ttp-agent export --new`.
    pub export_pending: u64,
    /// The webhook's state, once a webhook worker has run.
    pub webhook: Option<WebhookStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WebhookStatus {
    /// Pseudonyms waiting for delivery.
    pub pending: u64,
    /// Every pseudonym up to this sequence number was delivered.
    pub delivered_through: u64,
    #[serde(flatten)]
    pub state: WebhookState,
}

/// The hand-over status, from the store alone.
pub fn status(store: &Store) -> Result<HandoverStatus, StoreError> {
    let webhook = match load_state(store)? {
        None => None,
        Some(state) => Some(WebhookStatus {
            pending: store.pending_events(HandoverConsumer::Webhook)?,
            delivered_through: store.export_cursor(HandoverConsumer::Webhook)?,
            state,
        }),
    };
    Ok(HandoverStatus {
        obtained: store.pseudonym_log_head()?,
        export_pending: store.pending_events(HandoverConsumer::Export)?,
        webhook,
    })
}

fn load_state(store: &Store) -> Result<Option<WebhookState>, StoreError> {
    match store.get_meta_string(META_HANDOVER_WEBHOOK_STATE)? {
        None => Ok(None),
        // A state this version cannot read is only status information: start afresh.
        Some(json) => Ok(Some(serde_json::from_str(&json).unwrap_or_default())),
    }
}

fn save_state(store: &Store, state: &WebhookState) -> Result<(), StoreError> {
    let json = serde_json::to_string(state).map_err(|e| StoreError::Codec {
        what: "webhook state",
        detail: e.to_string(),
    })?;
    store.set_meta_string(META_HANDOVER_WEBHOOK_STATE, &json)
}

/// The webhook worker: drains the pseudonym log from its cursor, one POST per event.
pub struct WebhookWorker {
    store: Arc<Store>,
    settings: HandoverSettings,
    webhook: Webhook,
    wake: Arc<Notify>,
}

impl WebhookWorker {
    pub fn new(
        store: Arc<Store>,
        settings: HandoverSettings,
    ) -> Result<WebhookWorker, HandoverError> {
        let webhook = Webhook::new(settings.webhook.clone())?;
        Ok(WebhookWorker {
            store,
            settings,
            webhook,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Wakes the worker to look for new events now (cheap; may be called from any thread).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Wraps the daemon's hooks so that every finished cycle wakes this worker.
    pub fn wake_after_cycles(&self, inner: Arc<dyn DaemonHooks>) -> Arc<dyn DaemonHooks> {
        Arc::new(WakeAfterCycles {
            inner,
            wake: self.waker(),
        })
    }

    /// Delivers until `shutdown` fires. A request in flight when it fires is abandoned; its
    /// event is delivered again at the next start (at least once).
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut state = match load_state(&self.store) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "webhook: cannot read its state from the store");
                WebhookState::default()
            }
        };
        // Marks "a worker runs" for the status report even before the first delivery.
        self.persist(&state);
        tracing::info!(url = %self.webhook.redacted_url(), "pseudonym delivery webhook started");
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let pause = match self.drain(&mut state, &mut shutdown).await {
                Ok(Drained::Empty) => self.settings.idle_interval,
                Ok(Drained::Failed(pause)) => pause,
                Ok(Drained::Stopped) => break,
                Err(e) => {
                    tracing::error!(error = %e, "webhook: the store failed; trying again later");
                    self.settings.webhook.backoff.cap
                }
            };
            if !crate::webhook::wait(&self.wake, &mut shutdown, Some(pause)).await {
                break;
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "webhook: flushing the cursor at shutdown failed");
        }
        tracing::info!("pseudonym delivery webhook stopped");
    }

    /// Delivers events until the log is drained, a delivery fails, or shutdown.
    async fn drain(
        &self,
        state: &mut WebhookState,
        shutdown: &mut Shutdown,
    ) -> Result<Drained, StoreError> {
        loop {
            let cursor = self.store.export_cursor(HandoverConsumer::Webhook)?;
            // Only durable events leave (`store::psn_log`): one not yet flushed could be lost
            // to a crash after the receiver got it, and its `seq` given to another pseudonym.
            let durable = self.store.durable_pseudonym_log_head()?;
            let count = crate::store::handover_window(cursor, durable, BATCH);
            let batch = self.store.pseudonym_events_after(cursor, count)?;
            if batch.is_empty() {
                return Ok(Drained::Empty);
            }
            let mut delivered = 0usize;
            for event in &batch {
                let outcome = tokio::select! {
                    _ = shutdown.wait() => None,
                    r = self.deliver(event) => Some(r),
                };
                let now = Utc::now();
                state.last_attempt = Some(now);
                match outcome {
                    None => {
                        self.finish_run(delivered, state)?;
                        return Ok(Drained::Stopped);
                    }
                    Some(Ok(())) => {
                        self.store
                            .set_export_cursor(HandoverConsumer::Webhook, event.seq)?;
                        delivered += 1;
                        if state.failing_since.is_some() {
                            tracing::info!(seq = event.seq, "webhook: delivering again");
                        }
                        state.last_success = Some(now);
                        state.failing_since = None;
                        state.consecutive_failures = 0;
                    }
                    Some(Err(failure)) => {
                        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                        state.failing_since.get_or_insert(now);
                        let pause = self
                            .settings
                            .webhook
                            .pause(state.consecutive_failures, failure.retry_after);
                        tracing::warn!(
                            seq = event.seq,
                            attempt = state.consecutive_failures,
                            retry_in = ?pause,
                            error = %failure.message,
                            "webhook: delivery failed; will retry"
                        );
                        state.last_error = Some(failure.message);
                        self.finish_run(delivered, state)?;
                        return Ok(Drained::Failed(pause));
                    }
                }
            }
            self.finish_run(delivered, state)?;
        }
    }

    /// Makes the moved cursor durable and records the state.
    fn finish_run(&self, delivered: usize, state: &WebhookState) -> Result<(), StoreError> {
        save_state(&self.store, state)?;
        if delivered > 0 {
            self.store.flush()?;
            tracing::debug!(delivered, "webhook: pseudonyms delivered");
        }
        Ok(())
    }

    fn persist(&self, state: &WebhookState) {
        if let Err(e) = save_state(&self.store, state) {
            tracing::warn!(error = %e, "webhook: cannot record its state in the store");
        }
    }

    async fn deliver(&self, event: &PsnEvent) -> Result<(), Failure> {
        let body = serde_json::json!({
            "seq": event.seq,
            "local_id": event.local_id,
            "pseudonym": event.pseudonym,
            "study": self.settings.study,
            "target": self.settings.target,
            "obtained_at": event.obtained_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        self.webhook.post(body.to_string()).await
    }
}

enum Drained {
    Empty,
    Failed(Duration),
    Stopped,
}

/// Daemon hooks that wake the webhook worker after each poll cycle and otherwise behave like
/// the hooks they wrap.
struct WakeAfterCycles {
    inner: Arc<dyn DaemonHooks>,
    wake: Arc<Notify>,
}

impl DaemonHooks for WakeAfterCycles {
    fn ready(&self) {
        self.inner.ready();
    }

    fn cycle_finished(&self, result: &Result<CycleReport, CycleError>, took: Duration) {
        self.inner.cycle_finished(result, took);
        self.wake.notify_one();
    }

    fn alive(&self) {
        self.inner.alive();
    }

    fn stopping(&self) {
        self.inner.stopping();
    }
}
