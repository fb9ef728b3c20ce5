//! The disclosure log's rules: which change of a `send_idat` task is a disclosure, or settles
//! one that was in doubt (issue 15, item 4). Pure: the store calls [`step`] inside the write
//! transaction that stores the task's new state, so the log entry and the task's outcome are
//! on disk together or not at all (ARCHITECTURE.md, "Durability argument", point 11).
//!
//! What the answer carried is decided before the intent ([`Disclosure`], element codes only)
//! and stored with the `Running` state; the outcome's transition then says what it came to:
//!
//! | stored state → new state | log entry |
//! |---|---|
//! | `Running` → `Done` | `accepted` (the fTTP answered 2xx) |
//! | `Running` → `InDoubt` (lost answer, or a crash found at start-up) | `in-doubt` |
//! | `Running` → anything else (retry, refused, expired, credentials) | none: not accepted |
//! | `InDoubt` → `Done` by the listing | `settled-accepted` |
//! | `InDoubt` → `Done` marked handled by a person | `settled-handled` (unknown) |
//! | `InDoubt` → `Received` (listed again, or re-armed by a person) | `settled-sent-again` |
//! | `InDoubt` → `Expired` | `settled-expired` (unknown) |
//! | `InDoubt` → any other state | `settled-unknown` |
//!
//! A `settled-*` entry names the `in-doubt` entry it settles; nothing is ever changed in place.

use serde::{Deserialize, Serialize};
use ttp_proto::{IdatElement, TaskKind};

use super::{TaskRecord, TaskState};

/// What one `send_idat` answer carries, as element codes (never a value), decided before its
/// intent is written. `local_id` names the record (personal data, stored like every other
/// local id in the store); `study` is the configured study, so that the format stays when a
/// site runs several studies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    pub study: String,
    pub local_id: String,
    /// In the Patient: requested, allowed by the release policy and held by the record.
    pub sent: Vec<IdatElement>,
    /// Requested, but withheld by the release policy.
    pub withheld: Vec<IdatElement>,
    /// Requested and allowed, but not held by the record.
    pub missing: Vec<IdatElement>,
}

/// What a log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisclosureEvent {
    /// The fTTP accepted the answer (HTTP 2xx with a complete body).
    Accepted,
    /// The answer may or may not have reached the fTTP; a later entry settles it.
    InDoubt,
    /// In doubt, then the fTTP stopped listing the task before its deadline: it has the
    /// answer.
    SettledAccepted,
    /// In doubt, then listed again (the fTTP lacks the answer) or re-armed by a person: sent
    /// again; that send gets entries of its own.
    SettledSentAgain,
    /// In doubt until the deadline passed: whether the fTTP has it is unknown.
    SettledExpired,
    /// In doubt, then marked handled by a person: whether the fTTP has it is unknown.
    SettledHandled,
    /// In doubt, then left for a state this version does not judge: unknown.
    SettledUnknown,
}

impl DisclosureEvent {
    pub fn name(self) -> &'static str {
        match self {
            DisclosureEvent::Accepted => "accepted",
            DisclosureEvent::InDoubt => "in-doubt",
            DisclosureEvent::SettledAccepted => "settled-accepted",
            DisclosureEvent::SettledSentAgain => "settled-sent-again",
            DisclosureEvent::SettledExpired => "settled-expired",
            DisclosureEvent::SettledHandled => "settled-handled",
            DisclosureEvent::SettledUnknown => "settled-unknown",
        }
    }

    /// Whether the entry (with the one it settles) says the fTTP has the answer.
    pub fn is_accepted(self) -> bool {
        matches!(
            self,
            DisclosureEvent::Accepted | DisclosureEvent::SettledAccepted
        )
    }

    /// Whether the entry settles an earlier `in-doubt` one.
    pub fn is_settlement(self) -> bool {
        !matches!(self, DisclosureEvent::Accepted | DisclosureEvent::InDoubt)
    }
}

/// What the store does with a task's pending disclosure when it writes the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The entry to append (from the pending disclosure), if any.
    pub event: Option<DisclosureEvent>,
    /// Whether the pending disclosure is still needed afterwards (running or in doubt).
    pub keep_pending: bool,
}

/// What writing `new` over a stored task in state `old` means for the disclosure log. `None`
/// for anything but a `send_idat` leaving `Running` or `InDoubt` (nothing to log, and the
/// pending disclosure, if any, is the dispatcher's business: it writes a new one with each
/// intent).
pub fn step(old: Option<&TaskState>, new: &TaskRecord) -> Option<Step> {
    if !matches!(new.task.kind, TaskKind::SendIdat { .. }) {
        return None;
    }
    let event = match (old?, &new.state) {
        (TaskState::Running, TaskState::Running) | (TaskState::InDoubt, TaskState::InDoubt) => {
            return Some(Step {
                event: None,
                keep_pending: true,
            });
        }
        (TaskState::Running, TaskState::Done { .. }) => Some(DisclosureEvent::Accepted),
        (TaskState::Running, TaskState::InDoubt) => {
            return Some(Step {
                event: Some(DisclosureEvent::InDoubt),
                keep_pending: true,
            });
        }
        (TaskState::Running, _) => None,
        (TaskState::InDoubt, TaskState::Done { .. }) if new.was_marked_handled() => {
            Some(DisclosureEvent::SettledHandled)
        }
        (TaskState::InDoubt, TaskState::Done { .. }) => Some(DisclosureEvent::SettledAccepted),
        (TaskState::InDoubt, TaskState::Received) => Some(DisclosureEvent::SettledSentAgain),
        (TaskState::InDoubt, TaskState::Expired { .. }) => Some(DisclosureEvent::SettledExpired),
        (TaskState::InDoubt, _) => Some(DisclosureEvent::SettledUnknown),
        _ => return None,
    };
    Some(Step {
        event,
        keep_pending: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, at};

    fn send_idat(state: TaskState) -> TaskRecord {
        testkit::task(
            "send_idat/t-1",
            testkit::send_idat("t-1", "psn"),
            state,
            at("2026-01-10T10:00:00Z"),
        )
    }

    fn event(old: TaskState, new: TaskState) -> Option<DisclosureEvent> {
        step(Some(&old), &send_idat(new)).and_then(|s| s.event)
    }

    #[test]
    fn an_answer_is_logged_when_accepted_or_in_doubt_and_only_then() {
        let done = TaskState::Done {
            at: at("2026-01-10T11:00:00Z"),
        };
        use DisclosureEvent::*;
        assert_eq!(event(TaskState::Running, done.clone()), Some(Accepted));
        assert_eq!(event(TaskState::Running, TaskState::InDoubt), Some(InDoubt));
        for not_accepted in [
            TaskState::Received,
            TaskState::RetryWait {
                next_at: at("2026-01-10T12:00:00Z"),
            },
            TaskState::Expired {
                at: at("2026-01-10T12:00:00Z"),
            },
            TaskState::NeedsAttention {
                reason: super::super::Attention::UnknownRecord,
            },
        ] {
            assert_eq!(event(TaskState::Running, not_accepted), None);
        }
        assert_eq!(event(TaskState::Received, TaskState::Running), None);
        assert_eq!(event(TaskState::Received, done.clone()), None);
        assert_eq!(step(None, &send_idat(TaskState::Received)), None);
        // Written again unchanged: nothing new, the pending disclosure stays.
        assert_eq!(
            step(Some(&TaskState::InDoubt), &send_idat(TaskState::InDoubt)),
            Some(Step {
                event: None,
                keep_pending: true
            })
        );
    }

    #[test]
    fn every_way_out_of_doubt_settles_the_entry() {
        use DisclosureEvent::*;
        let done = TaskState::Done {
            at: at("2026-01-10T11:00:00Z"),
        };
        assert_eq!(
            event(TaskState::InDoubt, done.clone()),
            Some(SettledAccepted)
        );
        assert_eq!(
            event(TaskState::InDoubt, TaskState::Received),
            Some(SettledSentAgain)
        );
        assert_eq!(
            event(
                TaskState::InDoubt,
                TaskState::Expired {
                    at: at("2026-01-12T10:00:00Z")
                }
            ),
            Some(SettledExpired)
        );
        let mut handled = send_idat(TaskState::InDoubt);
        handled
            .marked_handled("dpo", "asked the fTTP", at("2026-01-10T12:00:00Z"))
            .unwrap();
        assert_eq!(
            step(Some(&TaskState::InDoubt), &handled).and_then(|s| s.event),
            Some(SettledHandled)
        );
        for e in [
            SettledAccepted,
            SettledSentAgain,
            SettledExpired,
            SettledHandled,
        ] {
            assert!(e.is_settlement());
        }
        assert!(SettledAccepted.is_accepted() && Accepted.is_accepted());
        assert!(!InDoubt.is_accepted() && !SettledExpired.is_accepted());
    }

    #[test]
    fn other_task_types_are_never_logged() {
        let rec = testkit::task(
            "repeat_request/f",
            testkit::repeat_request(vec![1; 8]),
            TaskState::Done {
                at: at("2026-01-10T11:00:00Z"),
            },
            at("2026-01-10T10:00:00Z"),
        );
        assert_eq!(step(Some(&TaskState::Running), &rec), None);
    }
}
