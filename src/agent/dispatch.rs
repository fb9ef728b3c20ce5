//! Dispatching ready tasks to their handlers, with bounded concurrency and group commits.
//!
//! The durability rule, in the order things happen for one wave of tasks:
//!
//! 1. **Intent.** Every task whose handler sends something is written as `Running` (attempt
//!    counted), and the store is flushed. Only then does any request leave.
//! 2. **Effect.** Handlers run concurrently (at most `concurrency` at once), earliest deadline
//!    first. Immediately before acting, the deadline is checked again.
//! 3. **Outcome.** Changed records, then the tasks' new states, are written and flushed.
//!
//! A crash between 1 and 3 leaves tasks `Running` on disk. At start-up the agent turns them into
//! `InDoubt` (see [`super::Agent::recover`]), and the next listing decides: still listed → send
//! again (the fTTP does not have it); gone → done. A crash after 3 loses nothing. Grouping a
//! wave into two flushes is what makes thousands of tasks per second possible with fsync.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use tracing::Instrument as _;
use ttp_proto::TaskKind;

use super::handlers::{self, Effect, Outcome};
use super::{Agent, expire, retry};
use crate::domain::{TaskRecord, TaskState};
use crate::store::StoreError;

/// Counts of what one dispatch did, for the cycle report and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchStats {
    pub done: usize,
    pub retry: usize,
    pub in_doubt: usize,
    pub attention: usize,
    pub expired: usize,
    pub auth_failed: usize,
}

/// Why dispatching stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the fTTP refused the agent's credentials: {0}")]
    Auth(String),
    #[error("shutting down")]
    ShuttingDown,
}

/// The span every log line about one task is written in: its key and type (no IDAT: keys
/// are type, target and a digest, or the fTTP's task id) and the attempt.
fn task_span(rec: &TaskRecord) -> tracing::Span {
    tracing::info_span!(
        "task",
        key = %rec.key,
        task_type = rec.task.kind.type_name(),
        attempt = rec.attempts
    )
}

/// Whether a task's handler has an effect outside the agent (a request to the fTTP).
fn sends_request(rec: &TaskRecord) -> bool {
    matches!(
        rec.task.kind,
        TaskKind::SendIdat { .. } | TaskKind::RepeatRequest { .. }
    )
}

impl Agent {
    /// Work off `ready` (already ordered, earliest deadline first) in waves.
    pub async fn dispatch(
        self: &Arc<Self>,
        ready: Vec<TaskRecord>,
    ) -> Result<DispatchStats, DispatchError> {
        let mut stats = DispatchStats::default();
        let wave_size = self.opts.wave_size.max(1);
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            if self.shutdown.is_triggered() {
                return Err(DispatchError::ShuttingDown);
            }
            let wave: Vec<TaskRecord> = ready.by_ref().take(wave_size).collect();
            self.dispatch_wave(wave, &mut stats).await?;
            if stats.auth_failed > 0 {
                return Err(DispatchError::Auth(
                    "HTTP 401/403 while answering tasks; check [ttp] api_key_file and the Basic-auth settings"
                        .into(),
                ));
            }
        }
        Ok(stats)
    }

    async fn dispatch_wave(
        self: &Arc<Self>,
        wave: Vec<TaskRecord>,
        stats: &mut DispatchStats,
    ) -> Result<(), DispatchError> {
        let now = Utc::now();
        let mut finished = Vec::new();
        let mut record_updates = Vec::new();
        let mut to_send = Vec::new();
        for mut rec in wave {
            let span = task_span(&rec);
            let _entered = span.enter();
            if expire::expire_if_due(&mut rec, now) {
                stats.expired += 1;
                tracing::warn!("task expired before it could be answered");
                finished.push(rec);
            } else if sends_request(&rec) {
                rec.state = TaskState::Running;
                rec.attempts += 1;
                rec.updated_at = now;
                to_send.push(rec);
            } else {
                // Local-only work (dic_psn_available): no intent needed, it is idempotent.
                let Outcome { effect, records } = self.handle_local(&rec, now)?;
                record_updates.extend(records);
                finished.push(self.apply(rec, effect, now, stats));
            }
        }

        // 1. Intent: the tasks about to be sent, as `Running` (and the local-only results,
        //    which ride along in the same flush).
        if !record_updates.is_empty() {
            self.store.update_records(&record_updates)?;
        }
        if !to_send.is_empty() || !finished.is_empty() {
            self.store.put_tasks(to_send.iter().chain(&finished))?;
            self.store.flush()?;
        }
        if to_send.is_empty() {
            return Ok(());
        }

        // 2. Effects, bounded.
        let concurrency = self.opts.concurrency.max(1);
        let outcomes: Vec<(TaskRecord, Outcome)> = futures_util::stream::iter(to_send)
            .map(|rec| {
                let agent = Arc::clone(self);
                let span = task_span(&rec);
                async move {
                    let outcome = agent.handle_network(&rec).await;
                    (rec, outcome)
                }
                .instrument(span)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;

        // 3. Outcomes: records first (a crash in between only repeats idempotent work).
        let now = Utc::now();
        let mut records = Vec::new();
        let mut tasks = Vec::with_capacity(outcomes.len());
        let mut notes = Vec::new();
        for (rec, outcome) in outcomes {
            records.extend(outcome.records);
            if let Effect::DoneWithout { missing } = &outcome.effect {
                notes.push(handlers::send_idat::missing_elements_entry(
                    &rec.key.0, missing, now,
                ));
            }
            let span = task_span(&rec);
            let _entered = span.enter();
            tasks.push(self.apply(rec, outcome.effect, now, stats));
        }
        if !records.is_empty() {
            self.store.update_records(&records)?;
        }
        // Before the tasks: a crash in between may repeat a note, never lose one.
        for note in &notes {
            self.store.append_audit(note)?;
        }
        self.store.put_tasks(&tasks)?;
        self.store.flush()?;
        Ok(())
    }

    fn handle_local(&self, rec: &TaskRecord, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        match &rec.task.kind {
            TaskKind::DicPsnAvailable {
                bloom_filter,
                target,
                pseudonym,
            } => {
                if target != &self.opts.target {
                    tracing::warn!(
                        "task names another target than this site's; acting on it anyway"
                    );
                }
                handlers::dic_psn_available::handle(&self.store, bloom_filter, pseudonym, now)
            }
            // Unknown and malformed tasks never become `Received`; nothing else is local.
            _ => Ok(Outcome::effect(Effect::Attention(
                crate::domain::Attention::UnknownTaskType(rec.key.0.clone()),
            ))),
        }
    }

    /// Runs in the task's span (see `dispatch_wave`).
    async fn handle_network(&self, rec: &TaskRecord) -> Outcome {
        // Re-check the deadline at the last moment: a long wave must not answer late.
        if expire::is_past_deadline(rec, Utc::now()) {
            return Outcome::effect(Effect::Retry {
                error: "expired while waiting in the wave".into(),
                retry_after: None,
            });
        }
        tracing::debug!("sending the task's request to the fTTP");
        match &rec.task.kind {
            TaskKind::SendIdat {
                task_id,
                subject,
                elements,
            } => {
                handlers::send_idat::handle(
                    &self.client,
                    &self.store,
                    task_id,
                    subject,
                    elements,
                    self.opts.missing_elements,
                )
                .await
            }
            TaskKind::RepeatRequest {
                study,
                bloom_filter,
                target,
            } => {
                handlers::repeat_request::handle(
                    &self.client,
                    &self.store,
                    study,
                    target,
                    bloom_filter,
                    Utc::now(),
                )
                .await
            }
            _ => Outcome::effect(Effect::Attention(
                crate::domain::Attention::UnknownTaskType(rec.key.0.clone()),
            )),
        }
    }

    /// The state a task moves to after its handler ran.
    fn apply(
        &self,
        mut rec: TaskRecord,
        effect: Effect,
        now: DateTime<Utc>,
        stats: &mut DispatchStats,
    ) -> TaskRecord {
        rec.updated_at = now;
        match effect {
            Effect::Done | Effect::DoneWithout { .. } => {
                stats.done += 1;
                if let Effect::DoneWithout { missing } = &effect {
                    let codes: Vec<&str> = missing.iter().map(|e| e.code()).collect();
                    tracing::info!(
                        missing = %codes.join(","),
                        "task done as far as known (requested elements the record does not hold were left out)"
                    );
                } else {
                    tracing::info!("task done");
                }
                rec.state = TaskState::Done { at: now };
                rec.last_error = None;
            }
            Effect::Retry { error, retry_after } => {
                if expire::is_past_deadline(&rec, now) {
                    stats.expired += 1;
                    rec.state = TaskState::Expired { at: now };
                } else {
                    stats.retry += 1;
                    let next_at = retry::next_attempt(
                        rec.attempts,
                        &self.opts.retry,
                        retry_after,
                        rec.task.expires.map(|e| e.with_timezone(&Utc)),
                        now,
                    );
                    tracing::warn!(%error, retry_at = %next_at, "task failed; will retry");
                    rec.state = TaskState::RetryWait { next_at };
                }
                rec.last_error = Some(error);
            }
            Effect::InDoubt { error } => {
                stats.in_doubt += 1;
                tracing::warn!(%error, "answer may or may not have reached the fTTP; the next listing decides");
                rec.state = TaskState::InDoubt;
                rec.last_error = Some(error);
            }
            Effect::Attention(reason) => {
                stats.attention += 1;
                tracing::warn!(reason = %reason, "task needs attention");
                rec.last_error = Some(reason.to_string());
                rec.state = TaskState::NeedsAttention { reason };
            }
            Effect::AuthFailed { error } => {
                stats.auth_failed += 1;
                tracing::error!(%error, "the fTTP refused the agent's credentials");
                // Not processed and not the task's fault: back to the queue, attempt not counted.
                rec.state = TaskState::Received;
                rec.attempts = rec.attempts.saturating_sub(1);
                rec.last_error = Some(error);
            }
        }
        rec
    }
}
