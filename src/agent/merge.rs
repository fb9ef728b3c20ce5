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
//! resolved by the listing itself: see [`review_open`].
//!
//! The transitions themselves are the domain's (`TaskRecord::listed`, `listed_again`,
//! `relisted_after_answer`, `reconcile_in_doubt`, `caught_up`, `expire_if_due`); this module
//! applies them to a whole listing. The cycle (`cycle.rs`) reads the stored copies before and
//! writes the results after.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ttp_proto::{Task, TaskKey, TaskList, TaskProblem};

use crate::domain::{ListingSummary, TaskRecord};

pub use crate::domain::TaskRelisting as Relisting;

/// Merge one listed task into its stored record (if any): the record to persist.
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
    match existing {
        None => TaskRecord::listed(key, task, now, poll_seq),
        Some(mut rec) => {
            rec.listed_again(task, now, poll_seq);
            rec
        }
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
    match existing {
        None => TaskRecord::unreadable(problem, now, poll_seq),
        Some(mut rec) => {
            rec.last_seen_poll = poll_seq;
            rec
        }
    }
}

/// A listing merged into the stored tasks.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every listed task's record after the merge: all are written.
    pub records: HashMap<TaskKey, TaskRecord>,
    pub new_tasks: usize,
    /// Finished `send_idat` tasks listed again after the settle time: now needing a person.
    pub relisted_finished: Vec<TaskKey>,
    pub summary: ListingSummary,
}

/// The keys of a listing whose stored copies [`merge_listing`] needs.
pub fn listed_keys(listing: &TaskList) -> Vec<TaskKey> {
    listing
        .tasks
        .iter()
        .map(Task::key)
        .chain(listing.problems.iter().map(|p| p.key.clone()))
        .collect()
}

/// Merges a listing into `stored` (the stored copies of its tasks, by key: those of
/// [`listed_keys`] the store has). A key listed twice in one response merges into itself.
/// Pure.
pub fn merge_listing(
    listing: TaskList,
    mut stored: HashMap<TaskKey, TaskRecord>,
    now: DateTime<Utc>,
    poll_seq: u64,
    settle: chrono::Duration,
) -> Merged {
    let mut merged = Merged::default();
    for task in listing.tasks {
        let key = task.key();
        let existing = merged.records.remove(&key).or_else(|| stored.remove(&key));
        if existing.is_none() {
            merged.new_tasks += 1;
        }
        let rec = merge_listed(existing, key.clone(), task, now, poll_seq);
        merged.records.insert(key, rec);
    }
    for problem in &listing.problems {
        let existing = merged
            .records
            .remove(&problem.key)
            .or_else(|| stored.remove(&problem.key));
        let rec = merge_problem(existing, problem, now, poll_seq);
        merged.records.insert(problem.key.clone(), rec);
    }
    // A finished send_idat listed again after the settle time: the fTTP lacks the answer.
    for rec in merged.records.values_mut() {
        if rec.relisted_after_answer(settle, now) {
            merged.relisted_finished.push(rec.key.clone());
        }
    }
    merged.summary = ListingSummary::count(merged.records.values(), listing.not_kept, now);
    merged
}

/// What [`review_open`] did to one open task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reviewed {
    /// A `StillListed` task no longer listed: done, as answered.
    pub caught_up: bool,
    /// An in-doubt answer judged by the listing.
    pub in_doubt_resolved: bool,
    /// Past its deadline.
    pub expired: bool,
}

impl Reviewed {
    pub fn changed(&self) -> bool {
        self.caught_up || self.in_doubt_resolved || self.expired
    }
}

/// One open task after a successful poll (`listed_now`: whether the listing had it): caught
/// up, in-doubt answers judged, expired when past its deadline. Pure.
pub fn review_open(
    rec: &mut TaskRecord,
    listed_now: bool,
    relisting: Relisting,
    settle: chrono::Duration,
    now: DateTime<Utc>,
) -> Reviewed {
    Reviewed {
        caught_up: !listed_now && rec.caught_up(now),
        in_doubt_resolved: rec.reconcile_in_doubt(listed_now, relisting, settle, now),
        expired: rec.expire_if_due(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attention, TaskState};
    use crate::testkit::{self, wire_task};
    use ttp_proto::TaskKind;

    fn reconcile_in_doubt(
        mut rec: TaskRecord,
        listed_now: bool,
        relisting: Relisting,
        settle: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<TaskRecord> {
        rec.reconcile_in_doubt(listed_now, relisting, settle, now)
            .then_some(rec)
    }

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
        testkit::at("2026-01-10T10:00:00Z")
    }

    fn dic() -> Task {
        wire_task(testkit::dic_psn_available(vec![1, 2, 3], "psn_1"), None)
    }

    fn send_idat() -> Task {
        let due = testkit::at("2026-01-12T10:00:00+01:00");
        wire_task(testkit::send_idat("t-1", "psn_1"), Some(due))
    }

    fn key() -> TaskKey {
        TaskKey("k".into())
    }

    #[test]
    fn a_new_task_is_received_and_an_unknown_type_needs_attention() {
        let rec = merge_listed(None, key(), dic(), t0(), 7);
        assert_eq!(rec.state, TaskState::Received);
        assert_eq!(rec.last_seen_poll, 7);

        let unknown = wire_task(
            TaskKind::Unknown {
                name: "delete_everything".into(),
                raw: serde_json::json!({}),
            },
            None,
        );
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
        extended.expires = Some(crate::testkit::at("2026-02-01T00:00:00Z"));
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
        wire_task(testkit::repeat_request(vec![1, 2, 3]), None)
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
