//! Registering records with the fTTP: every record that is `New`, `Sending` from an
//! interrupted run, or awaiting clearing for too long is sent with
//! `$requestPsnFromBfWorkflow`, in batches, several in flight.
//!
//! A batch leaves only once its records are on disk as `Sending`: the intents of the next few
//! batches are written in one transaction and made durable by one flush. Answers are stored as
//! they arrive and ride along with the next flush. A crash sends the batches marked `Sending`
//! again — those in flight and those whose answer was not yet flushed — which the fTTP answers
//! the same way (the operation is idempotent per filter). ARCHITECTURE.md, "Durability
//! argument", point 5.
//!
//! Registration reads and writes record *heads* ([`RecordHead`]: filter, state, pseudonym,
//! times): the sealed IDAT stays on disk as it is, neither opened nor sealed again.
//!
//! The daemon calls [`Agent::register_pending`] at the start of every cycle, so records
//! submitted while the fTTP was down are registered as soon as it is back; `submit` calls it
//! after storing its records. It also picks up records that have been awaiting clearing for
//! `[submit] recheck_after`: the site never acknowledges a `dic_psn_available`, so if the agent
//! missed every listing of one, registering the filter again is the only way back to its
//! pseudonym — and it is safe, because the operation is idempotent.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tracing::Instrument as _;
use ttp_proto::BloomFilter;

use super::Agent;
use crate::client::classify::{PsnVerdict, classify_psn, psn_error_is_permanent};
use crate::client::{PsnResponse, TtpError};
use crate::domain::{RecordHead, RecordState, RegistrationBlocked, WholeRequestFailure};
use crate::store::StoreError;

/// What registering pending records did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegisterStats {
    pub batches: usize,
    pub sent: usize,
    pub pseudonymised: usize,
    pub awaiting_clearing: usize,
    pub rejected: usize,
    /// Records still waiting to be sent when registration stopped (fTTP unreachable).
    pub pending_left: usize,
    /// Why registration stopped early, if it did.
    pub stopped: Option<String>,
    /// Records sent again because their clearing had gone quiet (included in `sent`).
    pub rechecked: usize,
    /// Records named by an `error` with a passing code (`transient`, `throttled`, ...): they
    /// stay pending and are sent again.
    pub retry_later: usize,
    /// Set when the fTTP refused whole requests: registration is paused with back-off, and
    /// the records stay pending (see [`RegistrationBlocked`]).
    pub blocked: Option<WholeRequestFailure>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the fTTP refused the agent's credentials: {0}")]
    Auth(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Apply a `$requestPsnFromBfWorkflow` answer, received at `now`, to the records of one
/// batch. Pure.
pub fn apply_psn_response(
    batch: &mut [RecordHead],
    response: &ttp_proto::ops::PsnResponse,
    now: DateTime<Utc>,
    stats: &mut RegisterStats,
) {
    let pseudonyms: HashMap<&[u8], &str> = response
        .pseudonyms
        .iter()
        .map(|p| (p.bloom_filter.0.as_slice(), p.pseudonym.as_str()))
        .collect();
    let errors: HashMap<&[u8], &str> = response
        .errors
        .iter()
        .map(|e| (e.bloom_filter.0.as_slice(), e.code.as_str()))
        .collect();
    for rec in batch.iter_mut() {
        rec.updated_at = now;
        if let Some(psn) = pseudonyms.get(rec.bloom_filter.as_slice()) {
            // A conflict here would mean the fTTP gave one filter two pseudonyms; keep ours.
            rec.answered_with_pseudonym(psn, now);
            stats.pseudonymised += 1;
        } else if let Some(code) = errors.get(rec.bloom_filter.as_slice()) {
            if psn_error_is_permanent(code) {
                rec.rejected(code, now);
                stats.rejected += 1;
            } else {
                // A passing condition on the fTTP's side: the record stays pending (its
                // `Sending` state is what sends it again).
                stats.retry_later += 1;
            }
        } else {
            rec.awaiting_clearing(now);
            stats.awaiting_clearing += 1;
        }
    }
}

/// Whether `register_pending` sends this record: new ones, interrupted batches, and records
/// whose clearing has shown no result for `recheck_after`. Pure.
pub fn needs_registration(
    rec: &RecordHead,
    now: DateTime<Utc>,
    recheck_after: chrono::Duration,
) -> bool {
    match rec.state {
        RecordState::New | RecordState::Sending { .. } => true,
        RecordState::AwaitingClearing => rec.updated_at + recheck_after <= now,
        RecordState::Pseudonymised | RecordState::Rejected { .. } => false,
    }
}

/// The filters of one batch, each once (several local records may share a filter).
fn distinct_filters(batch: &[RecordHead]) -> Vec<BloomFilter> {
    let mut seen = HashSet::with_capacity(batch.len());
    batch
        .iter()
        .filter(|r| seen.insert(r.bloom_filter.as_slice()))
        .map(|r| BloomFilter(r.bloom_filter.clone()))
        .collect()
}

/// With several batches in flight, intents are written for this many times
/// `batches_in_flight` batches at once: one flush then covers the intents of the next rounds
/// of requests and the answers that came in since the last. A crash sends at most these
/// batches again, plus answered ones whose answer was not flushed yet (idempotent).
const INTENT_GROUP: usize = 2;

/// The batches of one registration run, from "to be sent" to "answered".
///
/// `queue` holds batches nothing has been written for. `marked` holds batches whose records
/// are on disk (flushed) as `Sending`, not yet sent: only these may leave. Intents are written
/// for a group of batches at once, answers are written as they arrive, and one flush makes
/// both durable — so a run costs about one flush per `group` batches instead of two per batch.
struct Batches {
    queue: VecDeque<Vec<RecordHead>>,
    marked: VecDeque<Vec<RecordHead>>,
    /// Answers written but not yet flushed.
    unflushed: bool,
}

impl Batches {
    fn pending_left(&self) -> usize {
        self.queue.iter().chain(&self.marked).map(Vec::len).sum()
    }
}

impl Agent {
    /// Send every record that is `New`, `Sending` from an interrupted run, or awaiting clearing
    /// for longer than `recheck_after`, in batches, up to `batches_in_flight` at once.
    ///
    /// Durability (ARCHITECTURE.md, point 5): a batch leaves only once its records are on
    /// disk as `Sending`. Answers are written as they arrive and flushed with the next group
    /// of intents (or at the end); one lost in a crash leaves its records `Sending`, and they
    /// are sent again, which the fTTP answers the same way.
    ///
    /// Failures (classified by [`classify_psn`]): 401/403 stops everything; a 413 splits the
    /// batch; a whole-request failure (a 4xx for the request, an HTTP 200 `error` naming no
    /// filter, an answer naming none of the filters sent) judges no record: registration
    /// pauses with back-off, the records stay pending, and the cause is kept for `status`,
    /// `/readyz` and `/metrics`; anything else (the fTTP unreachable, an answer lost or in
    /// doubt) stops sending new batches, lets those in flight finish, and leaves the rest to be
    /// asked again next cycle. Shutdown likewise sends nothing new. Only an `error` that names a
    /// filter with a lasting code rejects that record.
    pub async fn register_pending(&self) -> Result<RegisterStats, RegisterError> {
        // The daemon's cycle and a `submit` through the control channel may both get here:
        // two registrations at once would pick the same `New` records.
        let _one_at_a_time = self.registering.lock().await;
        let mut stats = RegisterStats::default();
        let now = Utc::now();
        let blocked = self.store.registration_blocked()?;
        if let Some(b) = &blocked
            && !b.allows_attempt(&self.opts.study, &self.opts.target, now)
        {
            let counts = self.store.record_counts()?;
            stats.pending_left = usize::try_from(counts.new + counts.sending).unwrap_or(usize::MAX);
            stats.stopped = Some(b.failure.to_string());
            stats.blocked = Some(b.failure.clone());
            return Ok(stats);
        }
        // The counters are kept in the same transactions as the records, so they are exact:
        // when nothing waits, skip the full scan (every cycle calls this, and a site may hold
        // a million records).
        let counts = self.store.record_counts()?;
        let mut pending = if counts.new == 0 && counts.sending == 0 {
            Vec::new()
        } else {
            // Through the store's index of waiting records: a few new records on a store of a
            // million cost what the few cost.
            self.store.record_heads_to_register()?
        };
        let quiet = self.quiet_clearings(now)?;
        if !quiet.is_empty() {
            tracing::info!(
                count = quiet.len(),
                "registering records again whose clearing has gone quiet (no task about them for {}h); a pseudonym the fTTP announced in a lost listing comes back this way",
                self.opts.recheck_after.num_hours()
            );
            stats.rechecked = quiet.len();
            pending.extend(quiet);
        }
        if pending.is_empty() {
            if blocked.is_some() {
                // Nothing waits any more (records resolved otherwise): nothing is paused.
                self.store.set_registration_blocked(None)?;
                self.store.flush()?;
            }
            return Ok(stats);
        }
        // Interrupted batches first, then in submission order.
        pending.sort_by_key(|r| {
            (
                !matches!(r.state, RecordState::Sending { .. }),
                r.created_at,
            )
        });
        let mut batches = Batches {
            queue: pending
                .chunks(self.opts.batch_size.max(1))
                .map(<[RecordHead]>::to_vec)
                .collect(),
            marked: VecDeque::new(),
            unflushed: false,
        };
        let in_flight_max = self.opts.batches_in_flight.max(1);
        // One batch at a time keeps the sequential guarantee: each answer is flushed (with
        // the next intent) before the next batch leaves.
        let intent_group = if in_flight_max == 1 {
            1
        } else {
            INTENT_GROUP * in_flight_max
        };
        // Each request runs as its own task, so that answers are received and parsed on the
        // runtime's workers while this loop writes to the store. Dropping the set (an error
        // return) aborts the requests still in flight; their records stay `Sending`.
        let mut in_flight: JoinSet<Result<PsnResponse, TtpError>> = JoinSet::new();
        let mut sent_batches: HashMap<tokio::task::Id, Vec<RecordHead>> = HashMap::new();
        let mut stopping = false;
        let mut whole_request: Option<WholeRequestFailure> = None;
        let mut answered = false;
        loop {
            while !stopping && in_flight.len() < in_flight_max {
                if self.shutdown.is_triggered() {
                    stopping = true;
                    break;
                }
                if batches.marked.is_empty() {
                    if batches.queue.is_empty() {
                        break;
                    }
                    self.mark_sending(&mut batches, intent_group)?;
                }
                let Some(batch) = batches.marked.pop_front() else {
                    break;
                };
                stats.batches += 1;
                let client = self.client.clone();
                let filters = distinct_filters(&batch);
                // In the caller's span (the poll cycle's), as if the request ran inline.
                let request = async move { client.request_psn(&filters).await };
                let task = in_flight.spawn(request.instrument(tracing::Span::current()));
                sent_batches.insert(task.id(), batch);
            }
            let Some(joined) = in_flight.join_next_with_id().await else {
                break;
            };
            let (id, result) = match joined {
                Ok((id, result)) => (id, result),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    // Cancelled: only when the runtime shuts down under us. The batch stays
                    // `Sending` on disk and goes out again next time.
                    if let Some(batch) = sent_batches.remove(&e.id()) {
                        batches.marked.push_front(batch);
                    }
                    stopping = true;
                    continue;
                }
            };
            let Some(mut batch) = sent_batches.remove(&id) else {
                continue;
            };
            let verdict = classify_psn(&distinct_filters(&batch), result.as_ref());
            match (verdict, result) {
                (PsnVerdict::PerFilter, Ok(response)) => {
                    stats.sent += batch.len();
                    answered = true;
                    apply_psn_response(&mut batch, &response, Utc::now(), &mut stats);
                    self.store.update_record_heads(&batch)?;
                    batches.unflushed = true;
                }
                (PsnVerdict::Auth, result) => {
                    // Keep what was answered; the batches still in flight are dropped and
                    // stay `Sending` on disk (sent again once the credentials are fixed).
                    self.store.flush()?;
                    let why = result.err().map_or_else(String::new, |e| e.to_string());
                    return Err(RegisterError::Auth(why));
                }
                (PsnVerdict::TooLarge, _) if batch.len() > 1 => {
                    // The gateway limits the request size: halves may pass. Both halves are on
                    // disk as `Sending` already.
                    tracing::warn!(
                        size = batch.len(),
                        "the fTTP refused a batch as too large (413); splitting it"
                    );
                    let second = batch.split_off(batch.len() / 2);
                    batches.marked.push_front(second);
                    batches.marked.push_front(batch);
                }
                (PsnVerdict::WholeRequest(failure), _) => {
                    // About the request, not the records: they stay `Sending` (pending) and
                    // go out again once the back-off allows.
                    stopping = true;
                    whole_request.get_or_insert(failure);
                    batches.marked.push_front(batch);
                }
                (PsnVerdict::TooLarge, _) => {
                    stopping = true;
                    whole_request.get_or_insert(WholeRequestFailure {
                        cause: "http-413".into(),
                        status: Some(413),
                        code: None,
                        display: None,
                        detail: "the fTTP refuses even a request with a single filter as too large (HTTP 413)".into(),
                    });
                    batches.marked.push_front(batch);
                }
                (PsnVerdict::PerFilter | PsnVerdict::AskAgain, result) => {
                    // Unreachable, lost or in doubt: the records stay `Sending` and are asked
                    // again next time (idempotent). No point hammering an fTTP that is down;
                    // the batches in flight finish.
                    if stats.stopped.is_none() {
                        let why = result.err().map_or_else(String::new, |e| e.to_string());
                        tracing::warn!(error = %why, "registration paused; pending records are sent again on the next cycle");
                        stats.stopped = Some(why);
                    }
                    stopping = true;
                    batches.marked.push_front(batch);
                }
            }
        }
        match (&whole_request, &blocked) {
            (Some(failure), prev) => {
                let (next, changed) = RegistrationBlocked::after_failure(
                    prev.as_ref(),
                    failure.clone(),
                    &self.opts.study,
                    &self.opts.target,
                    Utc::now(),
                    |n| super::retry::next_attempt(n, &self.opts.retry, None, None, Utc::now()),
                );
                if changed {
                    tracing::warn!(
                        cause = %next.failure.cause,
                        next_attempt = %next.next_attempt,
                        "registration paused: {}; the records stay pending and are sent again with back-off",
                        next.failure
                    );
                }
                self.store.set_registration_blocked(Some(&next))?;
                batches.unflushed = true;
                stats.stopped = Some(failure.to_string());
                stats.blocked = Some(failure.clone());
            }
            (None, Some(prev)) if answered => {
                tracing::info!(cause = %prev.failure.cause, "registration works again: the fTTP answered per filter");
                self.store.set_registration_blocked(None)?;
                batches.unflushed = true;
            }
            (None, _) => {}
        }
        if batches.unflushed {
            self.store.flush()?;
        }
        stats.pending_left = batches.pending_left();
        Ok(stats)
    }

    /// Marks the next `group` batches of the queue `Sending`: one transaction for all their
    /// records, and one flush makes them (and every answer written since the last flush)
    /// durable. Records already `Sending` (a batch a crash or a pause interrupted) are on disk
    /// as such and are not written again.
    fn mark_sending(&self, batches: &mut Batches, group: usize) -> Result<(), StoreError> {
        let mut intents = Vec::new();
        let mut marked = Vec::with_capacity(group);
        while marked.len() < group {
            let Some(mut batch) = batches.queue.pop_front() else {
                break;
            };
            let id = self.store.next_batch_id()?;
            for r in &mut batch {
                if r.sending(id) {
                    intents.push(r.clone());
                }
            }
            marked.push(batch);
        }
        if !intents.is_empty() {
            self.store.update_record_heads(&intents)?;
        }
        if !intents.is_empty() || batches.unflushed {
            self.store.flush()?;
            batches.unflushed = false;
        }
        batches.marked.extend(marked);
        Ok(())
    }

    /// Records `AwaitingClearing` for longer than `recheck_after` that no open task refers
    /// to. Their clearing may have finished with a `dic_psn_available` the agent never saw: the
    /// fTTP may list that task only a few times (or once), and a listing can be lost after the
    /// fTTP sent it (a timeout, a dropped connection, a crash before the merge was stored).
    /// Registering the filter again is the protocol's way back: a finished clearing answers
    /// with the pseudonym, one still running answers with nothing (no harm done), and the
    /// record waits another `recheck_after` before the next try.
    fn quiet_clearings(&self, now: DateTime<Utc>) -> Result<Vec<RecordHead>, StoreError> {
        if self.store.record_counts()?.awaiting_clearing == 0 {
            return Ok(Vec::new());
        }
        // Only those quiet long enough are read (the index orders them by their last update):
        // records awaiting a clearing for less than `recheck_after` are the usual state of a
        // site, and a cycle must not read them all.
        let quiet: Vec<RecordHead> = self
            .store
            .record_heads_awaiting_clearing(now - self.opts.recheck_after)?
            .into_iter()
            .filter(|r| needs_registration(r, now, self.opts.recheck_after))
            .collect();
        if quiet.is_empty() {
            return Ok(quiet);
        }
        let open = self.open_task_subjects()?;
        Ok(quiet
            .into_iter()
            .filter(|r| !open.contains(&r.bloom_filter))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_picks_new_interrupted_and_long_waiting_records() {
        let now = Utc::now();
        let week = chrono::Duration::days(7);
        let rec = |state: RecordState, age_days: i64| RecordHead {
            updated_at: now - chrono::Duration::days(age_days),
            ..crate::testkit::head("x", vec![1], state, now)
        };
        assert!(needs_registration(&rec(RecordState::New, 0), now, week));
        assert!(needs_registration(
            &rec(RecordState::Sending { batch: 3 }, 0),
            now,
            week
        ));
        assert!(!needs_registration(
            &rec(RecordState::AwaitingClearing, 6),
            now,
            week
        ));
        assert!(needs_registration(
            &rec(RecordState::AwaitingClearing, 7),
            now,
            week
        ));
        assert!(!needs_registration(
            &rec(RecordState::Pseudonymised, 99),
            now,
            week
        ));
        let rejected = RecordState::Rejected {
            code: "invalid".into(),
        };
        assert!(!needs_registration(&rec(rejected, 99), now, week));
    }

    #[test]
    fn psn_answers_are_applied_per_filter() {
        use ttp_proto::ops::{PsnError, PsnResponse, PsnResult};
        let now = Utc::now();
        let rec = |id: &str, bf: u8| {
            crate::testkit::head(id, vec![bf; 4], RecordState::Sending { batch: 1 }, now)
        };
        let mut batch = vec![rec("a", 1), rec("b", 2), rec("c", 3), rec("d", 1)];
        let response = PsnResponse {
            pseudonyms: vec![PsnResult {
                bloom_filter: BloomFilter(vec![1; 4]),
                target: "t".into(),
                pseudonym: "P1".into(),
            }],
            errors: vec![PsnError {
                bloom_filter: BloomFilter(vec![3; 4]),
                target: "t".into(),
                code: "http://hl7.org/fhir/issue-type#invalid".into(),
            }],
            request_errors: vec![],
            problems: vec![],
        };
        let mut stats = RegisterStats::default();
        apply_psn_response(&mut batch, &response, now, &mut stats);
        assert_eq!(batch[0].pseudonym.as_deref(), Some("P1"));
        assert_eq!(
            batch[3].pseudonym.as_deref(),
            Some("P1"),
            "same filter, same pseudonym"
        );
        assert_eq!(batch[1].state, RecordState::AwaitingClearing);
        assert!(matches!(batch[2].state, RecordState::Rejected { .. }));
        assert_eq!(
            (stats.pseudonymised, stats.awaiting_clearing, stats.rejected),
            (2, 1, 1)
        );
    }
}
