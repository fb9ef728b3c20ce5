//! Expiry: a task whose `expires` has passed is not acted on. Pure.
//!
//! The check runs twice: when a listing is merged (so the status is honest even if nothing
//! is dispatched), and again immediately before a handler acts, because a wave can take a
//! while and acting on an expired task is worse than not acting (the fTTP has already aborted
//! the clearing; an answer now would be rejected or, worse, misattributed).

use chrono::{DateTime, Utc};

use crate::domain::{TaskRecord, TaskState};

/// Whether the task's deadline has passed at `now`. Tasks without `expires` never expire here.
pub fn is_past_deadline(rec: &TaskRecord, now: DateTime<Utc>) -> bool {
    rec.task.expires.is_some_and(|e| e <= now)
}

/// Move a task that is past its deadline and not finished to `Expired`. `Running` is left
/// alone: the dispatcher owns it and re-checks before acting. Returns whether it changed.
pub fn expire_if_due(rec: &mut TaskRecord, now: DateTime<Utc>) -> bool {
    let expirable = matches!(
        rec.state,
        TaskState::Received
            | TaskState::RetryWait { .. }
            | TaskState::InDoubt
            | TaskState::NeedsAttention { .. }
    );
    if expirable && is_past_deadline(rec, now) {
        rec.state = TaskState::Expired { at: now };
        rec.updated_at = now;
        return true;
    }
    false
}

/// Seconds until the deadline (negative when past); `None` for tasks without one.
pub fn seconds_to_expiry(rec: &TaskRecord, now: DateTime<Utc>) -> Option<i64> {
    rec.task
        .expires
        .map(|e| (e.with_timezone(&Utc) - now).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Attention;
    use ttp_proto::{SendIdatSubject, Task, TaskKey, TaskKind};

    fn rec(expires: Option<&str>, state: TaskState) -> TaskRecord {
        let now = Utc::now();
        TaskRecord {
            key: TaskKey("send_idat/x".into()),
            task: Task {
                kind: TaskKind::SendIdat {
                    task_id: "x".into(),
                    subject: SendIdatSubject::Pseudonym("p".into()),
                    elements: vec![],
                },
                expires: expires.map(|e| DateTime::parse_from_rfc3339(e).unwrap()),
                unknown_parts: vec![],
            },
            state,
            attempts: 0,
            last_error: None,
            first_seen: now,
            updated_at: now,
            last_seen_poll: 1,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_deadline_is_compared_across_offsets() {
        // 13:00+02:00 is 11:00Z.
        let r = rec(Some("2021-05-28T13:00:00.00+02:00"), TaskState::Received);
        assert!(!is_past_deadline(&r, at("2021-05-28T10:59:59Z")));
        assert!(is_past_deadline(&r, at("2021-05-28T11:00:00Z")));
        assert_eq!(
            seconds_to_expiry(&r, at("2021-05-28T10:00:00Z")),
            Some(3600)
        );
    }

    #[test]
    fn open_states_expire_finished_and_running_do_not() {
        let now = at("2030-01-01T00:00:00Z");
        for state in [
            TaskState::Received,
            TaskState::InDoubt,
            TaskState::RetryWait { next_at: now },
            TaskState::NeedsAttention {
                reason: Attention::UnknownRecord,
            },
        ] {
            let mut r = rec(Some("2021-05-28T13:00:00Z"), state);
            assert!(expire_if_due(&mut r, now));
            assert!(matches!(r.state, TaskState::Expired { .. }));
        }
        for state in [TaskState::Running, TaskState::Done { at: now }] {
            let mut r = rec(Some("2021-05-28T13:00:00Z"), state.clone());
            assert!(!expire_if_due(&mut r, now));
            assert_eq!(r.state, state);
        }
    }

    #[test]
    fn tasks_without_a_deadline_never_expire() {
        let mut r = rec(None, TaskState::Received);
        assert!(!expire_if_due(&mut r, at("2999-01-01T00:00:00Z")));
    }
}
