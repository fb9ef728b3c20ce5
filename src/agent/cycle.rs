//! One poll cycle, and recovery at start-up. The cycle decides *when* a task changes state;
//! the changes are the domain's transitions (`TaskRecord`), applied to a listing by the pure
//! [`merge`](super::merge), and the store writes what they returned.
//!
//! A cycle, in order (each step's durability is argued in ARCHITECTURE.md, "Durability
//! argument"):
//!
//! 1. register records that are still waiting to be sent ([`Agent::register_pending`]);
//! 2. fetch `$requestTasks`; a failure ends the cycle (nothing was changed);
//! 3. merge the listing into the stored tasks, resolve in-doubt answers with it, expire what
//!    is past its deadline — one flush;
//! 4. dispatch the ready tasks, earliest deadline first ([`super::dispatch`]);
//! 5. housekeeping: purge finished tasks and IDAT past their retention.
//!
//! Tasks that are `Running` when the process starts were interrupted by a crash:
//! [`Agent::recover`] settles them (`TaskRecord::interrupted`) before anything else happens.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::register::RegisterError;
use super::{Agent, CycleError, CycleReport, PurgeReport, merge, plan};
use crate::domain::{TaskRecord, TaskState};
use crate::store::{META_LAST_LISTING, META_LAST_POLL_OK, META_LAST_PURGE, StoreError};

impl Agent {
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
                RegisterError::Auth(msg) => CycleError::Auth(msg),
                RegisterError::Store(s) => CycleError::Store(s),
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
        for problem in &listing.problems {
            tracing::warn!(index = problem.index, task_type = %problem.name, reason = %problem.reason, "the fTTP listed a task this agent cannot read");
        }

        // From the read of the listed tasks to the write of the reviewed ones, no person's
        // change of a task may commit in between, or the copies written back would undo it
        // (`Store::task_gate`). Nothing in this stretch waits for the network.
        let gate = self.store.task_gate();

        // Merge (pure, over the stored copies of the listed tasks).
        let mut stored = HashMap::new();
        for key in merge::listed_keys(&listing) {
            if !stored.contains_key(&key)
                && let Some(rec) = self.store.get_task(&key)?
            {
                stored.insert(key, rec);
            }
        }
        let merge::Merged {
            records: mut merged,
            new_tasks,
            relisted_finished,
            summary,
        } = merge::merge_listing(listing, stored, now, seq, self.opts.settle);
        report.new_tasks = new_tasks;
        report.relisted_finished = relisted_finished.len();
        for key in &relisted_finished {
            tracing::warn!(task = %key, "the fTTP still lists a send_idat the agent answered; it needs a person (`ttp-agent resolve retry --yes`)");
        }
        report.not_acted_on = summary.listed - summary.working;
        self.store.set_meta_string(
            META_LAST_LISTING,
            &serde_json::to_string(&summary).unwrap_or_default(),
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
            let reviewed = merge::review_open(
                &mut rec,
                listed_now,
                self.opts.relisting,
                self.opts.settle,
                now,
            );
            if reviewed.caught_up {
                tracing::info!(task = %rec.key, "the fTTP no longer lists the task: it has the answer");
            }
            if reviewed.in_doubt_resolved {
                report.in_doubt_resolved += 1;
                tracing::info!(task = %rec.key, state = rec.state.name(), "in-doubt answer resolved by the listing");
            }
            if reviewed.expired {
                report.expired_on_merge += 1;
                tracing::warn!(task = %rec.key, "task expired before it could be answered");
            }
            if reviewed.changed() {
                changed.push(rec.clone());
            }
            all.push(rec);
        }
        if !changed.is_empty() {
            self.store.put_tasks(&changed)?;
        }
        drop(gate);
        self.store.flush()?;

        // Dispatch.
        let open_before = all.iter().filter(|t| t.state.is_agents()).count();
        let ready = plan::ready(all, now);
        report.dispatch = self.dispatch(ready).await?;
        // Every dispatched task was open (`Received` or a due `RetryWait`) and is counted in
        // exactly one outcome; done, attention and expired leave the open set, the others stay
        // in it. Counting so spares a scan (and decode) of every stored task.
        let d = &report.dispatch;
        report.open_after = open_before
            .saturating_sub(d.done + d.attention + d.expired + d.awaiting_approval + d.withdrawn);
        self.housekeeping(now, &mut report)?;
        self.store.set_meta_time(META_LAST_POLL_OK, Utc::now())?;
        self.store.flush()?;
        Ok(report)
    }

    /// Purge finished tasks (into the per-day history) and IDAT past retention, at most once
    /// an hour. The purges read only what is due (the store's time-ordered indexes), but one
    /// that drops IDAT rewrites the store's file.
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
        // From the read of the open tasks to the purge's commit, under the task gate:
        // `ttp-agent purge` runs beside the cycle, whose merge could otherwise store a new task
        // about a record in between (its IDAT then purged although an open task needs it), and
        // whose dispatch wave could prepare an answer from IDAT the purge then drops (found by
        // the model checker, ARCHITECTURE.md "Which check backs which claim").
        let gate = self.store.task_gate();
        let open_subjects = self.open_task_subjects()?;
        let idat = self
            .store
            .purge_idat(now - self.opts.idat_retention, |rec| {
                open_subjects.contains(&rec.head.bloom_filter)
                    || rec
                        .head
                        .pseudonym
                        .as_ref()
                        .is_some_and(|p| open_subjects.contains(p.as_bytes()))
            })?;
        drop(gate);
        self.store.set_meta_time(META_LAST_PURGE, now)?;
        self.store.flush()?;
        Ok(PurgeReport { tasks, idat })
    }

    /// Filters and pseudonyms that open tasks refer to: their records keep their IDAT.
    pub(crate) fn open_task_subjects(&self) -> Result<HashSet<Vec<u8>>, StoreError> {
        let mut subjects = HashSet::new();
        for t in self.store.open_tasks_where(|_| true)? {
            subjects.extend(t.subjects().into_iter().map(<[u8]>::to_vec));
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
