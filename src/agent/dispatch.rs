//! Dispatching ready tasks to their handlers, with bounded concurrency and group commits.
//!
//! The durability rule, in the order things happen for one wave of tasks:
//!
//! 1. **Intent.** Every task whose handler sends something is written as `Running` (attempt
//!    counted), and the store is flushed. Only then does any request leave.
//! 2. **Effect.** Handlers run concurrently (at most `concurrency` at once), earliest deadline
//!    first. Immediately before acting, the deadline is checked again.
//! 3. **Outcome.** Changed record heads (pseudonyms), then the tasks' new states, are written
//!    and flushed.
//!
//! A crash between 1 and 3 leaves tasks `Running` on disk. At start-up the agent turns them into
//! `InDoubt` (see [`super::Agent::recover`]), and the next listing decides: still listed → send
//! again (the fTTP does not have it); gone → done. A crash after 3 loses nothing. Grouping a
//! wave into two flushes is what makes thousands of tasks per second possible with fsync.
//!
//! The dispatcher is the I/O around pure parts: `Agent::route` hands a task to its handler (the
//! one match on the task's type), the handlers return an [`Outcome`], and the task's next state is
//! the domain's ([`TaskRecord::after_effect`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tracing::Instrument as _;
use ttp_proto::{BloomFilter, SendIdatSubject, TaskKind};

use super::handlers::send_idat::{Lookup, resolve_subject};
use super::handlers::{self, Effect, Outcome};
use super::{Agent, retry};
use crate::domain::{self, Attention, LocalRecord, RecordHead, Settled, TaskRecord, TaskState};
use crate::store::{Store, StoreError};

/// Counts of what one dispatch did, for the cycle report and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchStats {
    pub done: usize,
    pub retry: usize,
    pub in_doubt: usize,
    pub attention: usize,
    pub expired: usize,
    pub auth_failed: usize,
    /// `send_idat` tasks put aside to await approval of their release (not sent).
    pub awaiting_approval: usize,
    /// Tasks about a record whose consent was withdrawn: closed, not answered.
    pub withdrawn: usize,
}

impl DispatchStats {
    fn count(&mut self, settled: Settled) {
        *match settled {
            Settled::Done => &mut self.done,
            Settled::Retry => &mut self.retry,
            Settled::InDoubt => &mut self.in_doubt,
            Settled::Attention => &mut self.attention,
            Settled::Expired => &mut self.expired,
            Settled::AuthFailed => &mut self.auth_failed,
        } += 1;
    }
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

/// How a task is worked on, decided by its type.
enum Route {
    /// Local work only (no request leaves, so no intent is needed: it is idempotent).
    Local(Outcome),
    /// A request to the fTTP, not yet sent: the task is written as `Running` and flushed
    /// before it is awaited; with what a `send_idat` answer will disclose, written with it
    /// (the disclosure log's entry is then written with the outcome).
    Send(BoxFuture<'static, Outcome>, Option<domain::Disclosure>),
}

impl Agent {
    /// Hands a task to its handler: the one match on the task's type.
    fn route(self: &Arc<Self>, rec: &TaskRecord) -> Route {
        let agent = Arc::clone(self);
        match &rec.task.kind {
            TaskKind::DicPsnAvailable {
                bloom_filter,
                target,
                pseudonym,
            } => {
                if *target != self.opts.target {
                    tracing::warn!(
                        "task names another target than this site's; acting on it anyway"
                    );
                }
                Route::Local(handlers::dic_psn_available::handle(bloom_filter, pseudonym))
            }
            TaskKind::SendIdat {
                task_id,
                subject,
                elements,
            } => {
                // Looked up and prepared before the intent, so that what the answer will
                // carry is decided once; a task that cannot be answered still goes through the
                // intent (the attempt is counted) and settles with its reason.
                let prepared = find_record(&self.store, subject).map(|lookup| {
                    handlers::send_idat::prepare(
                        lookup,
                        elements,
                        self.opts.missing_elements,
                        &self.opts.release_elements,
                    )
                });
                let outcome = match prepared {
                    Ok(Ok(prepared)) => {
                        let disclosure = domain::Disclosure {
                            study: self.opts.study.clone(),
                            local_id: prepared.local_id.clone(),
                            sent: prepared.sent(),
                            withheld: prepared.withheld.clone(),
                            missing: prepared.missing.clone(),
                        };
                        let task_id = task_id.clone();
                        return Route::Send(
                            Box::pin(async move {
                                handlers::send_idat::handle(&agent.client, &task_id, prepared).await
                            }),
                            Some(disclosure),
                        );
                    }
                    Ok(Err(attention)) => Outcome::effect(Effect::Attention(attention)),
                    Err(e) => Outcome::effect(Effect::Retry {
                        error: format!("store: {e}"),
                        retry_after: None,
                    }),
                };
                Route::Send(Box::pin(std::future::ready(outcome)), None)
            }
            TaskKind::RepeatRequest {
                study,
                bloom_filter,
                target,
            } => {
                let (study, bloom_filter, target) =
                    (study.clone(), bloom_filter.clone(), target.clone());
                Route::Send(
                    Box::pin(async move {
                        handlers::repeat_request::handle(
                            &agent.client,
                            &study,
                            &target,
                            &bloom_filter,
                        )
                        .await
                    }),
                    None,
                )
            }
            // Unknown and malformed tasks never become `Received`.
            TaskKind::Unknown { .. } => Route::Local(Outcome::effect(Effect::Attention(
                Attention::UnknownTaskType(rec.key.0.clone()),
            ))),
        }
    }
}

/// The record a `send_idat` names. Several local ids may share one filter (the same person
/// registered twice); they carry the same identifying data, so the first one serves.
pub fn find_record(store: &Store, subject: &SendIdatSubject) -> Result<Lookup, StoreError> {
    let by_filter = |bf: &BloomFilter| -> Result<Option<LocalRecord>, StoreError> {
        Ok(store.records_by_bloom_filter(&bf.0)?.into_iter().next())
    };
    Ok(match subject {
        SendIdatSubject::BloomFilter(bf) => resolve_subject(None, by_filter(bf)?),
        SendIdatSubject::Pseudonym(p) => resolve_subject(store.record_by_pseudonym(p)?, None),
        SendIdatSubject::Both {
            pseudonym,
            bloom_filter,
        } => resolve_subject(
            store.record_by_pseudonym(pseudonym)?,
            by_filter(bloom_filter)?,
        ),
    })
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
        let mut heads = Vec::new();
        let mut to_send = Vec::new();
        let mut disclosures = std::collections::BTreeMap::new();
        for mut rec in wave {
            let span = task_span(&rec);
            let _entered = span.enter();
            if rec.expire_if_due(now) {
                stats.expired += 1;
                tracing::warn!("task expired before it could be answered");
                finished.push(rec);
                continue;
            }
            // Consent withdrawn for the record the task names: closed, never answered. Checked
            // before every action, so a task that was running, retrying or in doubt when the
            // withdrawal came is caught here the next time it is ready.
            let (filters, pseudonyms) = rec.subject_parts();
            if let Some(local_id) = self.store.withdrawn_subject(&filters, &pseudonyms)?
                && rec.withdrawn(&local_id, now)
            {
                stats.withdrawn += 1;
                tracing::info!(
                    local_id = %local_id,
                    "task about a record whose consent was withdrawn closed; not answered"
                );
                finished.push(rec);
                continue;
            }
            // Approval mode: a release nobody approved yet waits for people, before its record
            // is even looked up (nothing is read of the IDAT for a task that may be denied).
            if rec.needs_approval(self.opts.approvals_required) && rec.hold_for_approval(now) {
                stats.awaiting_approval += 1;
                tracing::info!(
                    "send_idat awaits approval of its release (`ttp-agent approve` / `deny`)"
                );
                finished.push(rec);
                continue;
            }
            match self.route(&rec) {
                Route::Send(request, disclosure) => {
                    if let Some(d) = disclosure {
                        disclosures.insert(rec.key.0.clone(), d);
                    }
                    rec.begin_effect(now);
                    to_send.push((rec, request));
                }
                Route::Local(outcome) => {
                    let (effect, changed) = self.assign_pseudonym(outcome, now)?;
                    heads.extend(changed);
                    self.settle(&mut rec, effect, now, stats);
                    finished.push(rec);
                }
            }
        }

        // 1. Intent: the tasks about to be sent, as `Running` (and the local-only results,
        //    which ride along in the same flush).
        if !heads.is_empty() {
            self.store.update_record_heads(&heads)?;
        }
        if !to_send.is_empty() || !finished.is_empty() {
            self.store.put_tasks_disclosing(
                to_send.iter().map(|(rec, _)| rec).chain(&finished),
                &disclosures,
            )?;
            self.store.flush()?;
        }
        if to_send.is_empty() {
            return Ok(());
        }

        // 2. Effects, bounded.
        let concurrency = self.opts.concurrency.max(1);
        // The futures are made before the stream: a closure kept across the await would have
        // to be `Send` for every lifetime, which the compiler cannot prove for a boxed request.
        let requests: Vec<_> = to_send
            .into_iter()
            .map(|(rec, request)| {
                let span = task_span(&rec);
                async move {
                    let outcome = Agent::send(&rec, request).await;
                    (rec, outcome)
                }
                .instrument(span)
            })
            .collect();
        let outcomes: Vec<(TaskRecord, Outcome)> = futures_util::stream::iter(requests)
            .buffer_unordered(concurrency)
            .collect()
            .await;

        // 3. Outcomes: records first (a crash in between only repeats idempotent work).
        let now = Utc::now();
        let mut heads = Vec::new();
        let mut tasks = Vec::with_capacity(outcomes.len());
        let mut notes = Vec::new();
        for (mut rec, outcome) in outcomes {
            let (effect, changed) = self.assign_pseudonym(outcome, now)?;
            heads.extend(changed);
            if let Effect::DoneWithout { missing, withheld } = &effect {
                notes.push(handlers::send_idat::missing_elements_entry(
                    &rec.key.0, missing, withheld, now,
                ));
            }
            let span = task_span(&rec);
            let _entered = span.enter();
            self.settle(&mut rec, effect, now, stats);
            tasks.push(rec);
        }
        if !heads.is_empty() {
            self.store.update_record_heads(&heads)?;
        }
        // Before the tasks: a crash in between may repeat a note, never lose one.
        for note in &notes {
            self.store.append_audit(note)?;
        }
        // The tasks' outcomes, and with them the disclosure log's entries (same transaction).
        self.store.put_tasks(&tasks)?;
        self.store.flush()?;
        Ok(())
    }

    /// The request of one task. Runs in the task's span (see `dispatch_wave`).
    async fn send(rec: &TaskRecord, request: BoxFuture<'static, Outcome>) -> Outcome {
        // Re-check the deadline at the last moment: a long wave must not answer late.
        if rec.is_past_deadline(Utc::now()) {
            return Outcome::effect(Effect::Retry {
                error: "expired while waiting in the wave".into(),
                retry_after: None,
            });
        }
        tracing::debug!("sending the task's request to the fTTP");
        request.await
    }

    /// Sets the pseudonym an outcome carries on the heads of its filter's records (no IDAT
    /// opened); returns the effect on the task and the heads to write.
    fn assign_pseudonym(
        &self,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(Effect, Vec<RecordHead>), StoreError> {
        let Some(given) = outcome.pseudonym else {
            return Ok((outcome.effect, Vec::new()));
        };
        let heads = self
            .store
            .record_heads_by_bloom_filter(&given.bloom_filter.0)?;
        let assignment = domain::assign_pseudonym_to(heads, &given.pseudonym, now);
        let effect = given.effect_after(outcome.effect, &assignment);
        Ok((effect, assignment.changed))
    }

    /// The task's state after its handler ran (the domain's transition), counted and logged.
    fn settle(
        &self,
        rec: &mut TaskRecord,
        effect: Effect,
        now: DateTime<Utc>,
        stats: &mut DispatchStats,
    ) {
        if let Effect::DoneWithout { missing, withheld } = &effect {
            let codes = |els: &[ttp_proto::IdatElement]| {
                els.iter().map(|e| e.code()).collect::<Vec<_>>().join(",")
            };
            tracing::info!(
                missing = %codes(missing),
                withheld = %codes(withheld),
                "task done as far as known (requested elements the record does not hold, or the release policy withholds, were left out)"
            );
        } else if effect == Effect::Done {
            tracing::info!("task done");
        }
        let settled = rec.after_effect(effect, now, |attempts, retry_after, deadline| {
            retry::next_attempt(attempts, &self.opts.retry, retry_after, deadline, now)
        });
        stats.count(settled);
        let error = rec.last_error.as_deref().unwrap_or_default();
        match (settled, &rec.state) {
            (Settled::Retry, TaskState::RetryWait { next_at }) => {
                tracing::warn!(%error, retry_at = %next_at, "task failed; will retry");
            }
            (Settled::InDoubt, _) => tracing::warn!(
                %error,
                "answer may or may not have reached the fTTP; the next listing decides"
            ),
            (Settled::Attention, _) => tracing::warn!(reason = %error, "task needs attention"),
            (Settled::AuthFailed, _) => {
                tracing::error!(%error, "the fTTP refused the agent's credentials");
            }
            _ => {}
        }
    }
}
