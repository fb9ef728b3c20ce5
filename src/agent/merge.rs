//! Merging a `$requestTasks` listing into what the agent already knows. Pure.
//!
//! The fTTP does not publish whether a task is listed again until it is done, nor what "done"
//! means for `dic_psn_available` (the site never acknowledges it). So the merge is written for
//! both possibilities:
//!
//! * A task listed again while the agent still works on it is the *same* task: the stored
//!   copy keeps its state; only `last_seen_poll` moves.
//! * A finished content-identified task (`dic_psn_available`, `repeat_request`: no task id)
//!   that is listed again in the very next successful poll is still the same occurrence (the
//!   fTTP has not caught up yet). If it comes back after at least one successful poll without
//!   it, it is a *new* occurrence and is done again. Their effects are idempotent (storing the
//!   same pseudonym, registering the same filter), so re-arming can never do harm twice.
//! * A finished `send_idat` (identified by its task id) is never re-armed by itself: its answer
//!   carries IDAT and is not repeated. Listed again after the in-doubt settle time, it needs a
//!   person (`TaskRecord::relisted_after_answer`, applied by the cycle), who can re-arm it
//!   with `resolve retry --yes`.
//!
//! An `InDoubt` task (the agent crashed or timed out while its answer was in flight) is
//! resolved here, by the listing itself: see [`reconcile_in_doubt`].

use chrono::{DateTime, Utc};
use ttp_proto::{Task, TaskKey, TaskKind, TaskProblem};

use crate::domain::{Attention, TaskRecord, TaskState};

pub use crate::config::TaskRelisting as Relisting;

/// Merge one listed task into its stored record (if any). Returns the record to persist, or
/// `None` when nothing changed that needs writing.
///
/// `poll_seq` is the sequence number of this (successful) poll; successful polls are numbered
/// without gaps, so "listed in the previous poll" is `last_seen_poll + 1 == poll_seq`.
pub fn merge_listed(
    existing: Option<TaskRecord>,
    key: TaskKey,
    task: Task,
    now: DateTime<Utc>,
    poll_seq: u64,
) -> TaskRecord {
    let Some(mut rec) = existing else {
        return new_record(key, task, now, poll_seq);
    };
    let continuously_listed = rec.last_seen_poll + 1 >= poll_seq;
    let content_identified = !matches!(rec.task.kind, TaskKind::SendIdat { .. });
    if rec.state.is_final() && content_identified && !continuously_listed {
        // A new occurrence of an idempotent task: start over, keep the history fields.
        let mut fresh = new_record(key, task, now, poll_seq);
        fresh.first_seen = rec.first_seen;
        fresh.attempts = 0;
        return fresh;
    }
    // Same occurrence. A later listing may carry a new `expires` (an extension): take it, since
    // the fTTP is the authority on its deadline. Everything else about the task is identity.
    if task.expires != rec.task.expires && !rec.state.is_final() {
        rec.task.expires = task.expires;
        rec.updated_at = now;
    }
    rec.last_seen_poll = poll_seq;
    rec
}

fn new_record(key: TaskKey, task: Task, now: DateTime<Utc>, poll_seq: u64) -> TaskRecord {
    let state = match &task.kind {
        TaskKind::Unknown { name, .. } => TaskState::NeedsAttention {
            reason: Attention::UnknownTaskType(name.clone()),
        },
        _ => TaskState::Received,
    };
    TaskRecord {
        key,
        task,
        state,
        attempts: 0,
        last_error: None,
        first_seen: now,
        updated_at: now,
        last_seen_poll: poll_seq,
    }
}

/// A listed task the agent could not parse. It is stored once, as needing attention, so that
/// a coordinator sees it; it is never acted on.
pub fn merge_problem(
    existing: Option<TaskRecord>,
    problem: &TaskProblem,
    now: DateTime<Utc>,
    poll_seq: u64,
) -> TaskRecord {
    if let Some(mut rec) = existing {
        rec.last_seen_poll = poll_seq;
        return rec;
    }
    TaskRecord {
        key: problem.key.clone(),
        task: Task {
            kind: TaskKind::Unknown {
                name: problem.name.clone(),
                raw: serde_json::Value::Null,
            },
            expires: None,
            unknown_parts: Vec::new(),
        },
        state: TaskState::NeedsAttention {
            reason: Attention::MalformedTask(problem.reason.clone()),
        },
        attempts: 0,
        last_error: Some(problem.reason.clone()),
        first_seen: now,
        updated_at: now,
        last_seen_poll: poll_seq,
    }
}

/// Resolve an in-doubt answer with the listing of a successful poll that *started after* the
/// answer was sent (`rec.updated_at + settle < now` guarantees the fTTP had time to process it).
///
/// * An idempotent task (`repeat_request`): asked again at once, whatever the listing says.
///
/// * Listed again: the fTTP does not have the answer: sending it again is safe.
/// * Not listed, fTTP relists until done: the fTTP has it: done, without sending twice.
/// * Not listed, fTTP lists once: absence proves nothing; send again (at least once).
///
/// Returns `None` while the answer is too recent to judge.
pub fn reconcile_in_doubt(
    mut rec: TaskRecord,
    listed_now: bool,
    relisting: Relisting,
    settle: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<TaskRecord> {
    debug_assert!(matches!(rec.state, TaskState::InDoubt));
    if rec.is_idempotent() {
        // Asking again is harmless and the only way to the answer that was lost: absence
        // from the listing proves the fTTP acted, not that the agent has the pseudonym.
        rec.state = TaskState::Received;
        rec.updated_at = now;
        return Some(rec);
    }
    if rec.updated_at + settle > now {
        return None;
    }
    if !listed_now && super::expire::is_past_deadline(&rec, now) {
        // Past its deadline the fTTP stops listing a task whether or not it has the answer:
        // absence proves nothing, so expiry decides, never "done" (found by the model checker,
        // `stored_done_is_backed_by_the_fttp`).
        return None;
    }
    rec.state = match (listed_now, relisting) {
        (false, Relisting::UntilDone) => TaskState::Done { at: now },
        _ => TaskState::Received,
    };
    rec.updated_at = now;
    Some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttp_proto::BloomFilter;

    /// Issue 11 ("nothing the fTTP lists goes unseen") with the parser's limits: entries it
    /// only counts still show up in the listing summary, and the attention item that names
    /// them is not counted as one more listed task.
    #[test]
    fn listed_entries_beyond_the_parser_limits_are_counted_not_hidden() {
        let entry = |n: usize| {
            format!(r#"{{"name":"future_task_{n}","part":[{{"name":"x","valueString":"y"}}]}}"#)
        };
        let body = format!(
            r#"{{"resourceType":"Parameters","parameter":[{}]}}"#,
            (0..5).map(entry).collect::<Vec<_>>().join(",")
        );
        let limits = ttp_proto::ParseLimits {
            max_unknown: 2,
            ..ttp_proto::ParseLimits::default()
        };
        let list = ttp_proto::parse_tasks_with(body.as_bytes(), &limits).unwrap();
        assert_eq!((list.tasks.len(), list.not_kept), (2, 3));
        // The two kept unknown tasks (each needs a person) and the one summary problem.
        let mut stored: Vec<TaskRecord> = list
            .tasks
            .iter()
            .map(|t| merge_listed(None, t.key(), t.clone(), t0(), 1))
            .collect();
        stored.extend(
            list.problems
                .iter()
                .map(|p| merge_problem(None, p, t0(), 1)),
        );
        assert_eq!(stored.len(), 3);
        let summary = crate::domain::ListingSummary::count(stored.iter(), list.not_kept, t0());
        assert_eq!(summary.listed, 5, "{summary:?}");
        assert_eq!(summary.need_person, 2, "{summary:?}");
        assert_eq!(summary.not_kept, 3, "{summary:?}");
        assert_eq!(summary.working, 0, "{summary:?}");
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn dic() -> Task {
        Task {
            kind: TaskKind::DicPsnAvailable {
                bloom_filter: BloomFilter(vec![1, 2, 3]),
                target: "dic_a".into(),
                pseudonym: "psn_1".into(),
            },
            expires: None,
            unknown_parts: vec![],
        }
    }

    fn send_idat() -> Task {
        Task {
            kind: TaskKind::SendIdat {
                task_id: "t-1".into(),
                subject: ttp_proto::SendIdatSubject::Pseudonym("psn_1".into()),
                elements: vec![],
            },
            expires: Some(DateTime::parse_from_rfc3339("2026-01-12T10:00:00+01:00").unwrap()),
            unknown_parts: vec![],
        }
    }

    fn key() -> TaskKey {
        TaskKey("k".into())
    }

    #[test]
    fn a_new_task_is_received_and_an_unknown_type_needs_attention() {
        let rec = merge_listed(None, key(), dic(), t0(), 7);
        assert_eq!(rec.state, TaskState::Received);
        assert_eq!(rec.last_seen_poll, 7);

        let unknown = Task {
            kind: TaskKind::Unknown {
                name: "delete_everything".into(),
                raw: serde_json::json!({}),
            },
            expires: None,
            unknown_parts: vec![],
        };
        let rec = merge_listed(None, key(), unknown, t0(), 7);
        assert!(matches!(
            rec.state,
            TaskState::NeedsAttention { reason: Attention::UnknownTaskType(ref n) } if n == "delete_everything"
        ));
    }

    #[test]
    fn a_task_seen_again_keeps_its_state() {
        let mut rec = merge_listed(None, key(), send_idat(), t0(), 1);
        rec.state = TaskState::Running;
        let again = merge_listed(Some(rec), key(), send_idat(), t0(), 2);
        assert_eq!(again.state, TaskState::Running);
        assert_eq!(again.last_seen_poll, 2);
    }

    #[test]
    fn a_finished_content_task_listed_in_the_next_poll_is_the_same_occurrence() {
        let mut rec = merge_listed(None, key(), dic(), t0(), 1);
        rec.state = TaskState::Done { at: t0() };
        let again = merge_listed(Some(rec), key(), dic(), t0(), 2);
        assert!(matches!(again.state, TaskState::Done { .. }));
    }

    #[test]
    fn a_finished_content_task_back_after_a_gap_is_a_new_occurrence() {
        let mut rec = merge_listed(None, key(), dic(), t0(), 1);
        rec.state = TaskState::Done { at: t0() };
        rec.attempts = 3;
        let again = merge_listed(
            Some(rec),
            key(),
            dic(),
            t0() + chrono::Duration::hours(1),
            3,
        );
        assert_eq!(again.state, TaskState::Received);
        assert_eq!(again.attempts, 0);
        assert_eq!(again.first_seen, t0(), "history keeps the first sighting");
    }

    #[test]
    fn a_finished_send_idat_is_never_rearmed() {
        let mut rec = merge_listed(None, key(), send_idat(), t0(), 1);
        rec.state = TaskState::Done { at: t0() };
        let again = merge_listed(Some(rec), key(), send_idat(), t0(), 9);
        assert!(matches!(again.state, TaskState::Done { .. }));
        assert_eq!(again.last_seen_poll, 9);
    }

    #[test]
    fn a_later_listing_may_extend_the_deadline() {
        let rec = merge_listed(None, key(), send_idat(), t0(), 1);
        let mut extended = send_idat();
        extended.expires = Some(DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap());
        let again = merge_listed(Some(rec), key(), extended.clone(), t0(), 2);
        assert_eq!(again.task.expires, extended.expires);
    }

    fn in_doubt_at(t: DateTime<Utc>) -> TaskRecord {
        let mut rec = merge_listed(None, key(), send_idat(), t, 1);
        rec.state = TaskState::InDoubt;
        rec
    }

    #[test]
    fn in_doubt_is_resolved_by_the_listing() {
        let settle = chrono::Duration::seconds(60);
        let later = t0() + chrono::Duration::seconds(61);
        let listed =
            reconcile_in_doubt(in_doubt_at(t0()), true, Relisting::UntilDone, settle, later)
                .unwrap();
        assert_eq!(
            listed.state,
            TaskState::Received,
            "still listed: the fTTP lacks it"
        );
        let gone = reconcile_in_doubt(
            in_doubt_at(t0()),
            false,
            Relisting::UntilDone,
            settle,
            later,
        )
        .unwrap();
        assert!(
            matches!(gone.state, TaskState::Done { .. }),
            "gone: the fTTP has it"
        );
        let once =
            reconcile_in_doubt(in_doubt_at(t0()), false, Relisting::Once, settle, later).unwrap();
        assert_eq!(once.state, TaskState::Received, "listed once: resend");
    }

    #[test]
    fn an_in_doubt_repeat_request_is_asked_again_even_when_no_longer_listed() {
        let mut rec = merge_listed(None, key(), repeat(), t0(), 1);
        rec.state = TaskState::Running;
        rec.interrupted();
        assert_eq!(rec.state, TaskState::Received, "a crash: ask again at once");
        rec.state = TaskState::InDoubt;
        let soon = t0() + chrono::Duration::seconds(1);
        let again = reconcile_in_doubt(
            rec,
            false,
            Relisting::UntilDone,
            chrono::Duration::seconds(60),
            soon,
        )
        .expect("no settle time needed");
        assert_eq!(again.state, TaskState::Received, "absence is not an answer");

        let mut idat = merge_listed(None, key(), send_idat(), t0(), 1);
        idat.state = TaskState::Running;
        idat.interrupted();
        assert_eq!(idat.state, TaskState::InDoubt, "IDAT is never sent blindly");
    }

    fn repeat() -> Task {
        Task {
            kind: TaskKind::RepeatRequest {
                study: "s".into(),
                bloom_filter: BloomFilter(vec![1, 2, 3]),
                target: "dic_a".into(),
            },
            expires: None,
            unknown_parts: vec![],
        }
    }

    /// Regression (model checker, `stored_done_is_backed_by_the_fttp`): intent flushed, crash
    /// before the request left, the deadline passed; the next listing no longer shows the task
    /// because it expired, not because the fTTP has the answer. It must not be judged done.
    #[test]
    fn an_in_doubt_send_idat_past_its_deadline_is_not_done_by_absence() {
        let settle = chrono::Duration::seconds(60);
        let mut rec = in_doubt_at(t0());
        let deadline = t0() + chrono::Duration::minutes(5);
        rec.task.expires = Some(deadline.fixed_offset());
        let after = deadline + chrono::Duration::minutes(1);
        assert!(
            reconcile_in_doubt(rec.clone(), false, Relisting::UntilDone, settle, after).is_none(),
            "absence after the deadline proves nothing"
        );
        let mut expired = rec.clone();
        assert!(crate::agent::expire::expire_if_due(&mut expired, after));
        assert!(matches!(expired.state, TaskState::Expired { .. }));
        // Before the deadline, absence still proves the fTTP has it.
        let before = deadline - chrono::Duration::minutes(1);
        let done = reconcile_in_doubt(rec, false, Relisting::UntilDone, settle, before).unwrap();
        assert!(matches!(done.state, TaskState::Done { .. }));
    }

    #[test]
    fn in_doubt_waits_for_the_settle_time() {
        let settle = chrono::Duration::seconds(60);
        let soon = t0() + chrono::Duration::seconds(10);
        assert!(
            reconcile_in_doubt(in_doubt_at(t0()), false, Relisting::UntilDone, settle, soon)
                .is_none()
        );
    }

    #[test]
    fn a_problem_is_stored_once_as_needing_attention() {
        let p = TaskProblem {
            index: 0,
            name: "send_idat".into(),
            reason: "send_idat: part `taskId` is missing".into(),
            key: TaskKey("malformed/send_idat/abc".into()),
        };
        let rec = merge_problem(None, &p, t0(), 4);
        assert!(matches!(
            rec.state,
            TaskState::NeedsAttention {
                reason: Attention::MalformedTask(_)
            }
        ));
        let again = merge_problem(Some(rec.clone()), &p, t0(), 5);
        assert_eq!(again.first_seen, rec.first_seen);
        assert_eq!(again.last_seen_poll, 5);
    }
}
