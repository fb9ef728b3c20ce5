//! The agent: one poll cycle, and the daemon loop around it.
//!
//! A cycle, in order (each step's durability is argued in ARCHITECTURE.md):
//!
//! 1. register records that are still waiting to be sent (`submit::register_pending`);
//! 2. fetch `$requestTasks`; a failure ends the cycle (nothing was changed);
//! 3. merge the listing into the stored tasks ([`merge`]), resolve in-doubt answers with it,
//!    expire what is past its deadline ([`expire`]) — one flush;
//! 4. dispatch the ready tasks, earliest deadline first ([`dispatch`]);
//! 5. housekeeping: purge finished tasks and IDAT past their retention.
//!
//! Tasks that are `Running` when the process starts were interrupted by a crash: [`Agent::recover`]
//! marks them `InDoubt` before anything else happens.

pub mod dispatch;
pub mod expire;
pub mod handlers;
pub mod merge;
pub mod plan;
pub mod retry;
pub mod scheduler;
pub mod shutdown;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ttp_proto::TaskKey;

use crate::client::{TtpClient, TtpError};
use crate::domain::{TaskRecord, TaskState};
use crate::store::{Store, StoreError};
pub use dispatch::{DispatchError, DispatchStats};
pub use merge::Relisting;
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
    pub register: crate::submit::RegisterStats,
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

pub const META_LAST_POLL_OK: &str = "last_poll_ok";
pub const META_LAST_PURGE: &str = "last_purge";
/// [`crate::domain::ListingSummary`] of the last successful poll (JSON).
pub const META_LAST_LISTING: &str = "last_listing";

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

    /// Run once at start-up, before any cycle: a task still `Running` on disk was interrupted
    /// while its request was in flight. A `send_idat` becomes `InDoubt` (the next listing
    /// decides), an idempotent `repeat_request` is asked again (`TaskRecord::interrupted`).
    pub fn recover(&self) -> Result<usize, StoreError> {
        let interrupted: Vec<TaskRecord> = self
            .store
            .open_tasks_where(|s| *s == TaskState::Running)?
            .into_iter()
            .map(|mut t| {
                t.interrupted();
                t
            })
            .collect();
        if !interrupted.is_empty() {
            tracing::warn!(
                count = interrupted.len(),
                "tasks were interrupted while their answer was in flight; registrations are asked again, IDAT answers wait for the next listing to decide"
            );
            self.store.put_tasks(&interrupted)?;
            self.store.flush()?;
        }
        Ok(interrupted.len())
    }

    /// One poll cycle (see the module docs), in a `poll` span that carries the poll's
    /// sequence number once the listing has been fetched.
    pub async fn poll_cycle(self: &Arc<Self>) -> Result<CycleReport, CycleError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!("poll", seq = tracing::field::Empty);
        self.poll_cycle_inner(span.clone()).instrument(span).await
    }

    async fn poll_cycle_inner(
        self: &Arc<Self>,
        span: tracing::Span,
    ) -> Result<CycleReport, CycleError> {
        let mut report = CycleReport {
            register: self.register_pending().await.map_err(|e| match e {
                crate::submit::RegisterError::Auth(msg) => CycleError::Auth(msg),
                crate::submit::RegisterError::Store(s) => CycleError::Store(s),
            })?,
            ..CycleReport::default()
        };

        let listing = self.client.request_tasks().await.map_err(|e| {
            if e.class == crate::client::ErrorClass::Auth {
                CycleError::Auth(e.to_string())
            } else {
                CycleError::Fetch(e)
            }
        })?;
        let now = Utc::now();
        let seq = self.store.next_poll_seq()?;
        span.record("seq", seq);
        report.poll_seq = seq;
        report.listed = listing.tasks.len();
        report.problems = listing.problems.len();

        // Merge. A key listed twice in one response merges into itself.
        let mut merged: HashMap<TaskKey, TaskRecord> = HashMap::new();
        for task in listing.tasks {
            let key = task.key();
            let existing = match merged.remove(&key) {
                Some(r) => Some(r),
                None => self.store.get_task(&key)?,
            };
            if existing.is_none() {
                report.new_tasks += 1;
            }
            let rec = merge::merge_listed(existing, key.clone(), task, now, seq);
            merged.insert(key, rec);
        }
        for problem in &listing.problems {
            tracing::warn!(index = problem.index, task_type = %problem.name, reason = %problem.reason, "the fTTP listed a task this agent cannot read");
            let existing = match merged.remove(&problem.key) {
                Some(r) => Some(r),
                None => self.store.get_task(&problem.key)?,
            };
            let rec = merge::merge_problem(existing, problem, now, seq);
            merged.insert(problem.key.clone(), rec);
        }
        // A finished send_idat listed again after the settle time: the fTTP lacks the answer.
        for rec in merged.values_mut() {
            if rec.relisted_after_answer(self.opts.settle, now) {
                report.relisted_finished += 1;
                tracing::warn!(task = %rec.key, "the fTTP still lists a send_idat the agent answered; it needs a person (`ttp-agent resolve retry --yes`)");
            }
        }
        let listing_summary =
            crate::domain::ListingSummary::count(merged.values(), listing.not_kept, now);
        report.not_acted_on = listing_summary.listed - listing_summary.working;
        self.store.set_meta_string(
            META_LAST_LISTING,
            &serde_json::to_string(&listing_summary).unwrap_or_default(),
        )?;
        if !merged.is_empty() {
            self.store.put_tasks(merged.values())?;
        }

        // Reconcile in-doubt answers and expire, over every open task (finished ones can
        // neither be reconciled, expired nor dispatched; they are many, so they are skipped
        // without being decoded). The listed ones are the records just stored from `merged`:
        // they are taken from there rather than decoded again.
        let mut changed = Vec::new();
        let mut all = Vec::new();
        let open = self
            .store
            .open_tasks_where_held(|_| true, |key| merged.remove(key))?;
        for (mut rec, listed_now) in open {
            if !listed_now && rec.caught_up(now) {
                tracing::info!(task = %rec.key, "the fTTP no longer lists the task: it has the answer");
                changed.push(rec.clone());
            }
            if rec.state == TaskState::InDoubt
                && let Some(resolved) = merge::reconcile_in_doubt(
                    rec.clone(),
                    listed_now,
                    self.opts.relisting,
                    self.opts.settle,
                    now,
                )
            {
                report.in_doubt_resolved += 1;
                tracing::info!(task = %resolved.key, state = resolved.state.name(), "in-doubt answer resolved by the listing");
                rec = resolved;
                changed.push(rec.clone());
            }
            if expire::expire_if_due(&mut rec, now) {
                report.expired_on_merge += 1;
                tracing::warn!(task = %rec.key, "task expired before it could be answered");
                changed.push(rec.clone());
            }
            all.push(rec);
        }
        if !changed.is_empty() {
            self.store.put_tasks(&changed)?;
        }
        self.store.flush()?;

        // Dispatch.
        let open_before = all
            .iter()
            .filter(|t| {
                matches!(
                    t.state,
                    TaskState::Received
                        | TaskState::Running
                        | TaskState::InDoubt
                        | TaskState::RetryWait { .. }
                )
            })
            .count();
        let ready = plan::ready(all, now);
        report.dispatch = self.dispatch(ready).await?;
        // Every dispatched task was open (`Received` or a due `RetryWait`) and is counted in
        // exactly one outcome; done, attention and expired leave the open set, the others stay
        // in it. Counting so spares a scan (and decode) of every stored task.
        let d = &report.dispatch;
        report.open_after = open_before.saturating_sub(d.done + d.attention + d.expired);
        self.housekeeping(now, &mut report)?;
        self.store.set_meta_time(META_LAST_POLL_OK, Utc::now())?;
        self.store.flush()?;
        Ok(report)
    }

    /// Purge finished tasks (into the per-day history) and IDAT past retention, at most once
    /// an hour: a scan of every record is not something to do every cycle.
    fn housekeeping(&self, now: DateTime<Utc>, report: &mut CycleReport) -> Result<(), StoreError> {
        let due = match self.store.meta_time(META_LAST_PURGE)? {
            Some(last) => now - last >= chrono::Duration::hours(1),
            None => true,
        };
        if !due {
            return Ok(());
        }
        let purged = self.purge(now)?;
        report.purged_tasks = purged.tasks;
        report.purged_idat = purged.idat;
        Ok(())
    }

    /// The retention rules, applied now (the cycle does this hourly; `ttp-agent purge` on
    /// demand): tasks finished more than `task_retention` ago move into the per-day history,
    /// and records finished more than `idat_retention` ago lose their IDAT -- unless an open
    /// task (one that needs attention included) still refers to them. Flushed before it
    /// returns.
    pub fn purge(&self, now: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let tasks = self
            .store
            .purge_finished_tasks(now - self.opts.task_retention)?;
        let open_subjects = self.open_task_subjects()?;
        let idat = self
            .store
            .purge_idat(now - self.opts.idat_retention, |rec| {
                open_subjects.contains(&rec.bloom_filter)
                    || rec
                        .pseudonym
                        .as_ref()
                        .is_some_and(|p| open_subjects.contains(p.as_bytes()))
            })?;
        self.store.set_meta_time(META_LAST_PURGE, now)?;
        self.store.flush()?;
        Ok(PurgeReport { tasks, idat })
    }

    /// Filters and pseudonyms that open tasks refer to: their records keep their IDAT.
    pub(crate) fn open_task_subjects(
        &self,
    ) -> Result<std::collections::HashSet<Vec<u8>>, StoreError> {
        use ttp_proto::{SendIdatSubject, TaskKind};
        let mut subjects = std::collections::HashSet::new();
        for t in self.store.open_tasks_where(|_| true)? {
            match &t.task.kind {
                TaskKind::SendIdat { subject, .. } => match subject {
                    SendIdatSubject::BloomFilter(bf) => subjects.insert(bf.0.clone()),
                    SendIdatSubject::Pseudonym(p) => subjects.insert(p.as_bytes().to_vec()),
                    SendIdatSubject::Both {
                        pseudonym,
                        bloom_filter,
                    } => {
                        subjects.insert(pseudonym.as_bytes().to_vec());
                        subjects.insert(bloom_filter.0.clone())
                    }
                },
                TaskKind::DicPsnAvailable { bloom_filter, .. }
                | TaskKind::RepeatRequest { bloom_filter, .. } => {
                    subjects.insert(bloom_filter.0.clone())
                }
                TaskKind::Unknown { .. } => false,
            };
        }
        Ok(subjects)
    }

    /// When the daemon must wake up for work of its own (a retry coming due, an in-doubt
    /// answer that a fresh listing can now judge), independent of the cron schedule.
    pub fn next_own_wakeup(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let tasks = self
            .store
            .open_tasks_where(|s| matches!(s, TaskState::RetryWait { .. } | TaskState::InDoubt))?;
        Ok([
            plan::next_retry(&tasks),
            plan::next_reconcile(&tasks, self.opts.settle),
        ]
        .into_iter()
        .flatten()
        .min())
    }
}
