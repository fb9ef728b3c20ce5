//! Which tasks to work on now, in which order, and when to wake up next. Pure.

use chrono::{DateTime, Utc};

use crate::domain::{TaskRecord, TaskState};

/// Tasks the dispatcher may act on at `now`: `Received`, and `RetryWait` whose time has come.
/// Earliest deadline first (a missed deadline aborts a clearing; tasks without a deadline go
/// last), then oldest first, so that the order is stable across restarts.
pub fn ready(tasks: impl IntoIterator<Item = TaskRecord>, now: DateTime<Utc>) -> Vec<TaskRecord> {
    let mut ready: Vec<TaskRecord> = tasks
        .into_iter()
        .filter(|t| match t.state {
            TaskState::Received => true,
            TaskState::RetryWait { next_at } => next_at <= now,
            _ => false,
        })
        .collect();
    ready.sort_by(|a, b| {
        match (a.deadline(), b.deadline()) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.first_seen.cmp(&b.first_seen))
        .then(a.key.cmp(&b.key))
    });
    ready
}

/// The earliest moment a waiting task becomes ready (a `RetryWait`), if any. The daemon wakes
/// then even if the cron schedule would wait longer.
pub fn next_retry(tasks: &[TaskRecord]) -> Option<DateTime<Utc>> {
    tasks
        .iter()
        .filter_map(|t| match t.state {
            TaskState::RetryWait { next_at } => Some(next_at),
            _ => None,
        })
        .min()
}

/// The earliest moment an in-doubt task can be judged (its settle time has passed). The
/// daemon polls then, because only a fresh listing resolves it.
pub fn next_reconcile(tasks: &[TaskRecord], settle: chrono::Duration) -> Option<DateTime<Utc>> {
    tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::InDoubt))
        .map(|t| t.updated_at + settle)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, expires: Option<&str>, state: TaskState, seen: i64) -> TaskRecord {
        let base = crate::testkit::at("2026-01-01T00:00:00Z");
        let kind = crate::testkit::repeat_request(vec![0]);
        let mut rec = crate::testkit::task(key, kind, state, base);
        rec.task.expires = expires.map(crate::testkit::at);
        rec.first_seen = base + chrono::Duration::seconds(seen);
        rec
    }

    #[test]
    fn earliest_deadline_first_then_oldest_then_no_deadline() {
        let now = Utc::now();
        let tasks = vec![
            rec("none-old", None, TaskState::Received, 0),
            rec("late", Some("2026-03-01T00:00:00Z"), TaskState::Received, 0),
            rec(
                "early",
                Some("2026-02-01T00:00:00+05:00"),
                TaskState::Received,
                5,
            ),
            rec(
                "early-older",
                Some("2026-01-31T19:00:00Z"),
                TaskState::Received,
                1,
            ),
            rec(
                "done",
                Some("2026-01-01T00:00:00Z"),
                TaskState::Done { at: now },
                0,
            ),
        ];
        let keys: Vec<String> = ready(tasks, now).into_iter().map(|t| t.key.0).collect();
        assert_eq!(keys, ["early-older", "early", "late", "none-old"]);
    }

    #[test]
    fn retry_wait_is_ready_only_when_due() {
        let now = Utc::now();
        let due = rec("due", None, TaskState::RetryWait { next_at: now }, 0);
        let later = rec(
            "later",
            None,
            TaskState::RetryWait {
                next_at: now + chrono::Duration::seconds(5),
            },
            0,
        );
        let keys: Vec<String> = ready(vec![due, later.clone()], now)
            .into_iter()
            .map(|t| t.key.0)
            .collect();
        assert_eq!(keys, ["due"]);
        assert_eq!(
            next_retry(&[later]),
            Some(now + chrono::Duration::seconds(5))
        );
    }

    #[test]
    fn reconcile_time_is_the_earliest_settled_in_doubt() {
        let a = rec("a", None, TaskState::InDoubt, 0);
        let settle = chrono::Duration::seconds(90);
        assert_eq!(
            next_reconcile(std::slice::from_ref(&a), settle),
            Some(a.updated_at + settle)
        );
        assert_eq!(next_reconcile(&[], settle), None);
    }
}
