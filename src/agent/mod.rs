//! The agent: registration ([`register`]), the poll cycle ([`cycle`]), dispatching tasks to
//! their handlers ([`dispatch`]), and the daemon loop around them ([`scheduler`]). The task
//! and record state machines they drive are the domain's (`crate::domain`).

pub mod cycle;
pub mod dispatch;
pub mod handlers;
pub mod merge;
pub mod plan;
pub mod register;
pub mod retry;
pub mod scheduler;
pub mod shutdown;

use std::sync::Arc;

use crate::client::{TtpClient, TtpError};
use crate::store::{Store, StoreError};
pub use dispatch::{DispatchError, DispatchStats};
pub use merge::Relisting;
pub use register::{RegisterError, RegisterStats};
pub use retry::RetrySettings;
pub use shutdown::Shutdown;

/// Settings the agent's logic needs (built from the configuration by the CLI).
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub study: String,
    pub target: String,
    pub relisting: Relisting,
    /// How long an in-doubt answer must be old before a listing may judge it (the fTTP needs
    /// time to process what it received; twice the request timeout is safe).
    pub settle: chrono::Duration,
    pub concurrency: usize,
    /// Tasks per group commit.
    pub wave_size: usize,
    pub retry: RetrySettings,
    pub batch_size: usize,
    /// `$requestPsnFromBfWorkflow` batches in flight at once during registration (the CLI caps
    /// it by `[ttp] max_concurrency`); 1 sends them one after the other.
    pub batches_in_flight: usize,
    /// A record `AwaitingClearing` this long, with no open task about it, is registered again
    /// (see `Agent::register_pending`): its `dic_psn_available` may have been lost.
    pub recheck_after: chrono::Duration,
    pub task_retention: chrono::Duration,
    pub idat_retention: chrono::Duration,
    /// `send_idat` asking for elements the record lacks (`[dispatch] missing_elements`).
    pub missing_elements: handlers::send_idat::MissingElementsPolicy,
    /// Distinct local users who must approve a `send_idat` before it is sent; 0 when releases
    /// are automatic (`[dispatch] idat_release`, `approvals_required`).
    pub approvals_required: usize,
    /// The elements a `send_idat` may be answered with (`[dispatch] release_elements`).
    pub release_elements: handlers::send_idat::ReleaseElements,
}

impl AgentOptions {
    pub fn new(study: impl Into<String>, target: impl Into<String>) -> AgentOptions {
        AgentOptions {
            study: study.into(),
            target: target.into(),
            relisting: Relisting::UntilDone,
            settle: chrono::Duration::seconds(60),
            concurrency: 8,
            wave_size: 512,
            retry: RetrySettings::default(),
            batch_size: 50,
            batches_in_flight: 4,
            recheck_after: chrono::Duration::days(7),
            task_retention: chrono::Duration::days(30),
            idat_retention: chrono::Duration::days(90),
            missing_elements: handlers::send_idat::MissingElementsPolicy::SendKnown,
            approvals_required: 0,
            release_elements: handlers::send_idat::ReleaseElements::default(),
        }
    }
}

pub struct Agent {
    pub(crate) store: Arc<Store>,
    pub(crate) client: TtpClient,
    pub(crate) opts: AgentOptions,
    pub(crate) shutdown: Shutdown,
    /// Held by [`Agent::register_pending`]: one registration at a time per process.
    pub(crate) registering: tokio::sync::Mutex<()>,
}

/// What one cycle did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CycleReport {
    pub poll_seq: u64,
    pub listed: usize,
    pub new_tasks: usize,
    pub problems: usize,
    pub in_doubt_resolved: usize,
    pub expired_on_merge: usize,
    pub dispatch: DispatchStats,
    pub register: RegisterStats,
    /// Open tasks left after the cycle (not final, not waiting for a human).
    pub open_after: usize,
    pub purged_tasks: usize,
    pub purged_idat: usize,
    /// Listed tasks the agent does not work on by itself (finished locally, handled, waiting
    /// for a person).
    pub not_acted_on: usize,
    /// Finished `send_idat` tasks the fTTP still lists, turned into needs-attention now.
    pub relisted_finished: usize,
}

/// What [`Agent::purge`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Finished tasks moved into the per-day history.
    pub tasks: usize,
    /// Records whose IDAT was dropped.
    pub idat: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    // Shown in the message, so not a `#[source]`: `{:#}` would print it twice.
    #[error("could not fetch tasks: {0}")]
    Fetch(TtpError),
    #[error(
        "the fTTP refused the agent's credentials (HTTP 401/403); check [ttp] api_key_file, api_key_header and the Basic-auth settings: {0}"
    )]
    Auth(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("interrupted by shutdown")]
    ShuttingDown,
}

impl CycleError {
    /// Which errors stop the daemon instead of being tried again later: a store that
    /// failed (full disk, unwritable, corrupt) ends `run` with what was flushed, because
    /// going on without being able to record what was done is never better (ARCHITECTURE.md,
    /// "Durability argument", point 8; the model checker's crash transition is this stop).
    /// `Ok`: the store error the daemon stops with; `Err`: an error to try again after.
    pub fn into_stop(self) -> Result<StoreError, CycleError> {
        match self {
            CycleError::Store(e) => Ok(e),
            other => Err(other),
        }
    }

    /// For metrics and logs: `fetch`, `auth`, `store`, `shutdown`.
    pub fn class(&self) -> &'static str {
        match self {
            CycleError::Fetch(_) => "fetch",
            CycleError::Auth(_) => "auth",
            CycleError::Store(_) => "store",
            CycleError::ShuttingDown => "shutdown",
        }
    }
}

impl From<DispatchError> for CycleError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(s) => CycleError::Store(s),
            DispatchError::Auth(a) => CycleError::Auth(a),
            DispatchError::ShuttingDown => CycleError::ShuttingDown,
        }
    }
}

impl Agent {
    pub fn new(
        store: Arc<Store>,
        client: TtpClient,
        opts: AgentOptions,
        shutdown: Shutdown,
    ) -> Arc<Agent> {
        Arc::new(Agent {
            store,
            client,
            opts,
            shutdown,
            registering: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a registration is under way (a caller about to wait for it can say so).
    pub fn registration_running(&self) -> bool {
        self.registering.try_lock().is_err()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn client(&self) -> &TtpClient {
        &self.client
    }

    pub fn options(&self) -> &AgentOptions {
        &self.opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing store stops the daemon; a failed fetch or refused credentials are tried
    /// again (ARCHITECTURE.md, "Durability argument", point 8).
    #[test]
    fn only_a_store_error_stops_the_daemon() {
        let store = CycleError::Store(StoreError::Invalid {
            what: "test",
            why: "disk full".into(),
        });
        assert!(store.into_stop().is_ok());
        assert!(CycleError::Auth("401".into()).into_stop().is_err());
        assert!(CycleError::ShuttingDown.into_stop().is_err());
    }
}
