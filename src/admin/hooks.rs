//! The daemon hooks of the admin surface, composed with the systemd hooks.
//!
//! The scheduler reports through [`DaemonHooks`]; [`AdminHooks`] passes every call on to the
//! hooks it wraps (sd_notify, watchdog) and also:
//!
//! * records the cycle for `/readyz` ([`super::Health`]);
//! * observes the poll duration and counts errors by class;
//! * counts task events by type — received, done, failed (needs attention), expired — by
//!   comparing what the store says after each cycle with what it said after the previous one
//!   ([`TaskTracker`]). The dispatcher does not report per-type outcomes, and it need not: the
//!   store is the truth about every task's state, so a diff of it cannot miss a transition made
//!   by any code path (merge, expiry, dispatch, a person resolving a task). The diff reads the
//!   open tasks (through the store's open-task index) and the finished-task totals (the
//!   history counters), never the finished tasks themselves: those are kept for 30 days and
//!   can number 100,000, and reading them all made start-up and every cycle grow with them;
//! * pokes the alert evaluator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::AdminState;
use super::alerts::Alerts;
use super::metrics::{AgentMetrics, TaskEvent, label_of_type};
use crate::agent::scheduler::DaemonHooks;
use crate::agent::{CycleError, CycleReport};
use crate::domain::TaskState;
use crate::store::{FinishedCounts, TaskSummary};

/// Where a task stands, as far as the event counters care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Attention,
    Done,
    Expired,
}

fn phase(state: &TaskState) -> Phase {
    match state {
        TaskState::NeedsAttention { .. } => Phase::Attention,
        TaskState::Done { .. } => Phase::Done,
        TaskState::Expired { .. } => Phase::Expired,
        _ => Phase::Open,
    }
}

/// What the store said at the last look: the phase of every open task (open ones are few), and
/// how many task occurrences of each type had finished (the history counters, which count each
/// occurrence once, in the transaction that finishes it).
#[derive(Debug, Default)]
pub struct TaskTracker {
    open: HashMap<String, (Phase, String)>,
    finished: BTreeMap<String, FinishedCounts>,
}

impl TaskTracker {
    /// Starts from what is stored now: tasks that exist at start-up are not "received" by
    /// this process, nor are tasks finished before it counted as done or expired.
    pub fn baseline(
        open: &[TaskSummary],
        finished: BTreeMap<String, FinishedCounts>,
    ) -> TaskTracker {
        TaskTracker {
            open: open
                .iter()
                .map(|t| (t.key.0.clone(), (phase(&t.state), t.task_type.clone())))
                .collect(),
            finished,
        }
    }

    /// The events between the previous look and this one (`open`: the open tasks now,
    /// `finished`: the finished totals now), and remember this one. Pure apart from the
    /// tracker's own memory.
    ///
    /// * done / expired: the growth of the finished totals, by type;
    /// * failed: an open task newly in `NeedsAttention`;
    /// * received: an open task not open at the last look (new, or a new occurrence of a
    ///   finished content-identified task), plus the occurrences that arrived and finished
    ///   between the two looks: the finished ones beyond those that were open at the last look
    ///   and are no longer (an open task is never removed, only finished).
    pub fn observe(
        &mut self,
        open: &[TaskSummary],
        finished: BTreeMap<String, FinishedCounts>,
    ) -> Vec<(TaskEvent, &'static str)> {
        let mut events = Vec::new();
        let mut now_open = HashMap::with_capacity(open.len());
        for t in open {
            let ty = label_of_type(&t.task_type);
            let cur = phase(&t.state);
            let prev = self.open.remove(&t.key.0).map(|(p, _)| p);
            if prev.is_none() {
                events.push((TaskEvent::Received, ty));
            }
            if cur == Phase::Attention && prev != Some(Phase::Attention) {
                events.push((TaskEvent::Failed, ty));
            }
            now_open.insert(t.key.0.clone(), (cur, t.task_type.clone()));
        }
        // What is left was open and is not any more: it finished.
        let mut closed: HashMap<String, u64> = HashMap::new();
        for (_, (_, task_type)) in self.open.drain() {
            *closed.entry(task_type).or_default() += 1;
        }
        for (task_type, now) in &finished {
            let before = self.finished.get(task_type).copied().unwrap_or_default();
            let done = now.done.saturating_sub(before.done);
            let expired = now.expired.saturating_sub(before.expired);
            let ty = label_of_type(task_type);
            let unseen = (done + expired)
                .saturating_sub(closed.get(task_type.as_str()).copied().unwrap_or(0));
            for _ in 0..unseen {
                events.push((TaskEvent::Received, ty));
            }
            for _ in 0..done {
                events.push((TaskEvent::Done, ty));
            }
            for _ in 0..expired {
                events.push((TaskEvent::Expired, ty));
            }
        }
        self.open = now_open;
        self.finished = finished;
        events
    }
}

/// The open tasks and the finished totals, as [`TaskTracker`] takes them.
fn look(store: &crate::store::Store) -> Result<TaskLook, crate::store::StoreError> {
    Ok((store.open_task_summaries()?, store.finished_totals()?))
}

type TaskLook = (Vec<TaskSummary>, BTreeMap<String, FinishedCounts>);

/// [`DaemonHooks`] that feed the admin surface and then the wrapped hooks.
pub struct AdminHooks {
    inner: Arc<dyn DaemonHooks>,
    state: Arc<AdminState>,
    alerts: Arc<Alerts>,
    tracker: Mutex<TaskTracker>,
}

impl AdminHooks {
    pub fn new(inner: Arc<dyn DaemonHooks>, state: Arc<AdminState>, alerts: Arc<Alerts>) -> Self {
        let tracker = match look(&state.store) {
            Ok((open, finished)) => TaskTracker::baseline(&open, finished),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored tasks; task counters start from an empty baseline");
                TaskTracker::default()
            }
        };
        AdminHooks {
            inner,
            state,
            alerts,
            tracker: Mutex::new(tracker),
        }
    }

    fn count_task_events(&self, metrics: &AgentMetrics) {
        let (open, finished) = match look(&self.state.store) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored tasks for the task counters");
                return;
            }
        };
        let events = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&open, finished);
        for (event, ty) in events {
            metrics.task_event(event, ty);
        }
    }
}

impl DaemonHooks for AdminHooks {
    fn ready(&self) {
        self.inner.ready();
    }

    fn cycle_finished(&self, result: &Result<CycleReport, CycleError>, took: Duration) {
        self.state.health.cycle_finished(result, Utc::now());
        self.state
            .metrics
            .cycle_finished(result, took.as_secs_f64());
        // Even a failed cycle may have changed tasks (a wave before an auth failure).
        self.count_task_events(&self.state.metrics);
        self.alerts.poke();
        self.inner.cycle_finished(result, took);
    }

    fn alive(&self) {
        self.inner.alive();
    }

    fn stopping(&self) {
        self.state.health.stopping();
        self.inner.stopping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Attention;
    use ttp_proto::{BloomFilter, SendIdatSubject, TaskKind};

    fn rec(key: &str, kind: TaskKind, state: TaskState) -> TaskSummary {
        TaskSummary::from(&crate::testkit::task(key, kind, state, Utc::now()))
    }

    fn send_idat(key: &str, state: TaskState) -> TaskSummary {
        rec(
            key,
            TaskKind::SendIdat {
                task_id: key.into(),
                subject: SendIdatSubject::Pseudonym("p".into()),
                elements: vec![],
            },
            state,
        )
    }

    fn dic(key: &str, state: TaskState) -> TaskSummary {
        rec(
            key,
            TaskKind::DicPsnAvailable {
                bloom_filter: BloomFilter(vec![1]),
                target: "t".into(),
                pseudonym: "p".into(),
            },
            state,
        )
    }

    fn totals(entries: &[(&str, u64, u64)]) -> BTreeMap<String, FinishedCounts> {
        entries
            .iter()
            .map(|(ty, done, expired)| {
                (
                    ty.to_string(),
                    FinishedCounts {
                        done: *done,
                        expired: *expired,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn successive_looks_become_events_by_type() {
        // At start-up: one open task, and finished ones from before this process.
        let old = send_idat("old", TaskState::Received);
        let mut tracker = TaskTracker::baseline(
            std::slice::from_ref(&old),
            totals(&[("send_idat", 40, 2), ("dic_psn_available", 7, 0)]),
        );

        // The old task is answered; a new one arrives and is answered in the same cycle (never
        // seen open); a third arrives and needs a person; a fourth waits.
        let open = vec![
            send_idat(
                "s2",
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
            ),
            send_idat("s3", TaskState::Received),
        ];
        let finished = totals(&[("send_idat", 41, 2), ("dic_psn_available", 8, 0)]);
        let mut events = tracker.observe(&open, finished.clone());
        events.sort();
        assert_eq!(
            events,
            [
                (TaskEvent::Received, "dic_psn_available"),
                (TaskEvent::Received, "send_idat"),
                (TaskEvent::Received, "send_idat"),
                (TaskEvent::Done, "dic_psn_available"),
                (TaskEvent::Done, "send_idat"),
                (TaskEvent::Failed, "send_idat"),
            ]
        );

        // Nothing changed: nothing counted. Then s3 expires, d1 comes back as a new occurrence
        // of a finished task (open again), and s2 is still waiting for a person.
        assert!(tracker.observe(&open, finished).is_empty());
        let open = vec![dic("d1", TaskState::Received), open[0].clone()];
        let mut events = tracker.observe(
            &open,
            totals(&[("send_idat", 41, 3), ("dic_psn_available", 8, 0)]),
        );
        events.sort();
        assert_eq!(
            events,
            [
                (TaskEvent::Received, "dic_psn_available"),
                (TaskEvent::Expired, "send_idat"),
            ]
        );

        // s2 still waits for a person (no second failure); d1 is answered; a task of a type
        // never seen before arrives and expires between two looks.
        let mut events = tracker.observe(
            std::slice::from_ref(&open[1]),
            totals(&[
                ("send_idat", 41, 3),
                ("dic_psn_available", 9, 0),
                ("future_task", 0, 1),
            ]),
        );
        events.sort();
        assert_eq!(
            events,
            [
                (TaskEvent::Received, "unknown"),
                (TaskEvent::Done, "dic_psn_available"),
                (TaskEvent::Expired, "unknown"),
            ]
        );
    }
}
