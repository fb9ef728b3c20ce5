//! The daemon hooks of the admin surface, composed with the systemd hooks.
//!
//! The scheduler reports through [`DaemonHooks`]; [`AdminHooks`] passes every call on to the
//! hooks it wraps (sd_notify, watchdog) and also:
//!
//! * records the cycle for `/readyz` ([`super::Health`]);
//! * observes the poll duration and counts errors by class;
//! * counts task events by type — received, done, failed (needs attention), expired — by
//!   comparing the stored tasks after each cycle with what it saw after the previous one
//!   ([`TaskTracker`]). The dispatcher does not report per-type outcomes, and it need not: the
//!   store is the truth about every task's state, so a diff of it cannot miss a transition made
//!   by any code path (merge, expiry, dispatch, a person resolving a task);
//! * pokes the alert evaluator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::AdminState;
use super::alerts::Alerts;
use super::metrics::{AgentMetrics, TaskEvent, label_of_type};
use crate::agent::scheduler::DaemonHooks;
use crate::agent::{CycleError, CycleReport};
use crate::domain::TaskState;
use crate::store::TaskSummary;

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

fn finished(p: Phase) -> bool {
    matches!(p, Phase::Done | Phase::Expired)
}

/// The last seen phase of every stored task, to turn successive scans into events.
#[derive(Debug, Default)]
pub struct TaskTracker {
    seen: HashMap<String, Phase>,
}

impl TaskTracker {
    /// Starts from what is stored now: tasks that exist at start-up are not "received" by
    /// this process.
    pub fn baseline(tasks: &[TaskSummary]) -> TaskTracker {
        TaskTracker {
            seen: tasks
                .iter()
                .map(|t| (t.key.0.clone(), phase(&t.state)))
                .collect(),
        }
    }

    /// The events between the previous scan and `tasks`, and remember `tasks`. Pure apart
    /// from the tracker's own memory.
    pub fn observe(&mut self, tasks: &[TaskSummary]) -> Vec<(TaskEvent, &'static str)> {
        let mut events = Vec::new();
        let mut now_seen = HashMap::with_capacity(tasks.len());
        for t in tasks {
            let ty = label_of_type(&t.task_type);
            let cur = phase(&t.state);
            let prev = self.seen.get(&t.key.0).copied();
            // New, or a new occurrence of a finished content-identified task.
            let fresh = match prev {
                None => true,
                Some(p) => finished(p) && !finished(cur),
            };
            if fresh {
                events.push((TaskEvent::Received, ty));
            }
            if fresh || prev != Some(cur) {
                match cur {
                    Phase::Done => events.push((TaskEvent::Done, ty)),
                    Phase::Expired => events.push((TaskEvent::Expired, ty)),
                    Phase::Attention => events.push((TaskEvent::Failed, ty)),
                    Phase::Open => {}
                }
            }
            now_seen.insert(t.key.0.clone(), cur);
        }
        // Purged tasks simply drop out.
        self.seen = now_seen;
        events
    }
}

/// [`DaemonHooks`] that feed the admin surface and then the wrapped hooks.
pub struct AdminHooks {
    inner: Arc<dyn DaemonHooks>,
    state: Arc<AdminState>,
    alerts: Arc<Alerts>,
    tracker: Mutex<TaskTracker>,
}

impl AdminHooks {
    pub fn new(inner: Arc<dyn DaemonHooks>, state: Arc<AdminState>, alerts: Arc<Alerts>) -> Self {
        let tracker = match state.store.task_summaries() {
            Ok(tasks) => TaskTracker::baseline(&tasks),
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
        let tasks = match self.state.store.task_summaries() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored tasks for the task counters");
                return;
            }
        };
        let events = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&tasks);
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

    #[test]
    fn successive_scans_become_events_by_type() {
        let now = Utc::now();
        let old = send_idat("old", TaskState::Received);
        let mut tracker = TaskTracker::baseline(std::slice::from_ref(&old));

        // The old task is answered; a new one arrives and is answered in the same cycle; a
        // third arrives and needs a person; a fourth waits.
        let scan = vec![
            send_idat("old", TaskState::Done { at: now }),
            dic("d1", TaskState::Done { at: now }),
            send_idat(
                "s2",
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
            ),
            send_idat("s3", TaskState::Received),
        ];
        let mut events = tracker.observe(&scan);
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

        // Nothing changed: nothing counted. Then s3 expires, "old" is purged, and d1 comes back
        // as a new occurrence.
        assert!(tracker.observe(&scan).is_empty());
        let scan = vec![
            dic("d1", TaskState::Received),
            scan[2].clone(),
            send_idat("s3", TaskState::Expired { at: now }),
        ];
        let mut events = tracker.observe(&scan);
        events.sort();
        assert_eq!(
            events,
            [
                (TaskEvent::Received, "dic_psn_available"),
                (TaskEvent::Expired, "send_idat"),
            ]
        );
    }
}
