//! The task state machine: what the agent keeps about one fTTP task, and every transition
//! between its states as a pure function of the record and its inputs (the listing, the
//! clock, a handler's effect, a person's decision). The agent decides *when* a transition
//! runs, the store writes what it returned; nothing here does I/O, so each transition is
//! tested (and model-checked) without a network or a store. The diagram is in
//! ARCHITECTURE.md ("The task state machine").

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ttp_proto::{IdatElement, SendIdatSubject, Task, TaskKey, TaskKind, TaskProblem};

/// The agent's copy of one fTTP task and what it has done about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub key: TaskKey,
    /// The task as parsed from the wire (kept whole, unknown parts included).
    pub task: ttp_proto::Task,
    pub state: TaskState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sequence number of the last successful poll that listed this task. A content-identified
    /// task that is listed again after at least one poll without it is a new occurrence.
    pub last_seen_poll: u64,
    /// Who approved the release of this `send_idat`'s IDAT, and when (`[dispatch] idat_release =
    /// "approval"`): kept after the task became ready, so that a retry or a resend after a
    /// doubt does not ask again. One entry per user (the same user twice counts once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
}

/// One local user's approval of a release (see [`TaskRecord::approved_by`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The local user, as the control channel's peer credentials (or the local process's
    /// user) name them; never taken from a command-line flag.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// How far [`TaskRecord::approved_by`] brought a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalProgress {
    /// Distinct users who approved it so far.
    pub have: usize,
    pub need: usize,
}

impl ApprovalProgress {
    /// Enough approvals: the task is ready to send.
    pub fn complete(&self) -> bool {
        self.have >= self.need
    }
}

/// Why a task was finished locally without an answer to the fTTP ([`TaskState::Closed`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Closure {
    /// A local user denied the release of its IDAT.
    Denied { by: String, reason: String },
    /// The patient withdrew consent: the record named by the task was withdrawn (its IDAT and
    /// filter purged); the task is never answered.
    Withdrawn { local_id: String },
}

impl std::fmt::Display for Closure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closure::Denied { by, reason } => write!(f, "release denied by {by}: {reason}"),
            Closure::Withdrawn { local_id } => {
                write!(f, "consent withdrawn for record {local_id:?}: not answered")
            }
        }
    }
}

/// Whether `$requestTasks` keeps returning a task until it is done, or lists it once
/// (`[ttp] task_relisting`).
///
/// The dispatcher's behaviour is not published (see the wire-protocol notes), so the agent
/// assumes `until_done` (a task missing from a later listing was done or withdrawn). With
/// `once`, a task absent from a listing is kept until it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRelisting {
    UntilDone,
    Once,
}

/// What a handler's work came to (the handlers return it; [`TaskRecord::after_effect`] turns it
/// into the task's next state).
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Answered.
    Done,
    /// A `send_idat` answered as far as known: without requested elements the record does
    /// not hold (`missing`) or the release policy withholds (`withheld`). Done, plus an audit
    /// entry naming them apart.
    DoneWithout {
        missing: Vec<IdatElement>,
        withheld: Vec<IdatElement>,
    },
    /// Failed without reaching the fTTP (or the operation may be repeated): try again later.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The answer may have reached the fTTP; only a later listing can tell.
    InDoubt { error: String },
    /// A human must look at it.
    Attention(Attention),
    /// The fTTP refused our credentials: not the task's fault; the cycle stops.
    AuthFailed { error: String },
}

/// Where [`TaskRecord::after_effect`] moved a task (for counts and log lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Done,
    Retry,
    InDoubt,
    Attention,
    Expired,
    AuthFailed,
}

/// Why a person's request to change a task ([`TaskRecord::retried_by_person`],
/// [`TaskRecord::marked_handled`]) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Finished (`done`, `expired`): nothing to resolve.
    Finished { state: &'static str },
    /// Its request may be on the wire.
    Running,
    /// `Received`: the agent works on it in the next cycle anyway.
    AlreadyWaiting,
    /// The deadline passed: the fTTP no longer accepts an answer.
    DeadlinePassed { at: DateTime<Utc> },
    /// A `send_idat` answered once that the fTTP still lists: re-arming it sends IDAT again,
    /// which needs an explicit confirmation.
    NeedsConfirmation { answered_at: DateTime<Utc> },
    /// The task awaits approval of its release: `approve` or `deny` it instead.
    AwaitsApproval,
    /// Approve and deny apply to a task awaiting approval only.
    NotAwaitingApproval { state: &'static str },
    /// This user approved the task already; with two approvals required the second must come
    /// from another user (four eyes).
    AlreadyApprovedBy { by: String },
}

/// How `resolve handled` starts a task's `last_error` (see `resolve::mark_handled`).
pub const MARKED_HANDLED_PREFIX: &str = "marked handled by ";

impl TaskRecord {
    /// A task seen for the first time in a listing: `Received`, or needing a person when its
    /// type is unknown.
    pub fn listed(key: TaskKey, task: Task, now: DateTime<Utc>, poll_seq: u64) -> TaskRecord {
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
            approvals: Vec::new(),
        }
    }

    /// A listed task the agent could not parse: stored as needing a person, never acted on.
    pub fn unreadable(problem: &TaskProblem, now: DateTime<Utc>, poll_seq: u64) -> TaskRecord {
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
            approvals: Vec::new(),
        }
    }

    /// A stored task the poll `poll_seq` lists again (successful polls are numbered without
    /// gaps, so "listed in the previous poll" is `last_seen_poll + 1 == poll_seq`).
    ///
    /// * A finished content-identified task (`dic_psn_available`, `repeat_request`) back after
    ///   at least one successful poll without it is a new occurrence: it starts over at
    ///   `Received`, keeping its first sighting. Its effect is idempotent.
    /// * Otherwise it is the same occurrence: it keeps its state; a new `expires` (an
    ///   extension: the fTTP is the authority on its deadline) is taken while it is open.
    ///
    /// Returns whether it started over.
    pub fn listed_again(&mut self, task: Task, now: DateTime<Utc>, poll_seq: u64) -> bool {
        let continuously_listed = self.last_seen_poll + 1 >= poll_seq;
        if self.state.is_final() && self.is_idempotent() && !continuously_listed {
            let first_seen = self.first_seen;
            *self = TaskRecord::listed(self.key.clone(), task, now, poll_seq);
            self.first_seen = first_seen;
            return true;
        }
        if task.expires != self.task.expires && !self.state.is_final() {
            self.task.expires = task.expires;
            self.updated_at = now;
        }
        self.last_seen_poll = poll_seq;
        false
    }

    /// The task's deadline (its `expires`, in UTC since the wire parser), if it has one.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.task.expires
    }

    /// Whether the deadline has passed at `now`. Tasks without one never expire.
    pub fn is_past_deadline(&self, now: DateTime<Utc>) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }

    /// Seconds until the deadline (negative when past); `None` without one.
    pub fn seconds_to_deadline(&self, now: DateTime<Utc>) -> Option<i64> {
        self.deadline().map(|d| (d - now).num_seconds())
    }

    /// An open task past its deadline becomes `Expired`: acting on it is worse than not
    /// acting (the fTTP has aborted the clearing; a late answer would be rejected or, worse,
    /// misattributed). `Running` is left to the dispatcher, which checks again before acting.
    /// Returns whether it changed.
    pub fn expire_if_due(&mut self, now: DateTime<Utc>) -> bool {
        if self.state.may_expire() && self.is_past_deadline(now) {
            self.state = TaskState::Expired { at: now };
            self.updated_at = now;
            return true;
        }
        false
    }

    /// The intent: the task's request is about to leave. `Running`, one attempt more; the
    /// dispatcher flushes this before the request is sent.
    pub fn begin_effect(&mut self, now: DateTime<Utc>) {
        self.state = TaskState::Running;
        self.attempts += 1;
        self.updated_at = now;
    }

    /// The state after the handler's `effect`. A retry goes to `RetryWait` at the moment
    /// `retry_at(attempts, retry_after, deadline)` chooses (the back-off policy; it must not
    /// lie past the deadline), or to `Expired` when the deadline has passed. A refusal of the
    /// credentials is not the task's fault: back to `Received`, the attempt not counted.
    pub fn after_effect(
        &mut self,
        effect: Effect,
        now: DateTime<Utc>,
        retry_at: impl FnOnce(u32, Option<Duration>, Option<DateTime<Utc>>) -> DateTime<Utc>,
    ) -> Settled {
        self.updated_at = now;
        match effect {
            Effect::Done | Effect::DoneWithout { .. } => {
                self.state = TaskState::Done { at: now };
                self.last_error = None;
                Settled::Done
            }
            Effect::Retry { error, retry_after } => {
                self.last_error = Some(error);
                if self.is_past_deadline(now) {
                    self.state = TaskState::Expired { at: now };
                    Settled::Expired
                } else {
                    let next_at = retry_at(self.attempts, retry_after, self.deadline());
                    self.state = TaskState::RetryWait { next_at };
                    Settled::Retry
                }
            }
            Effect::InDoubt { error } => {
                self.state = TaskState::InDoubt;
                self.last_error = Some(error);
                Settled::InDoubt
            }
            Effect::Attention(reason) => {
                self.last_error = Some(reason.to_string());
                self.state = TaskState::NeedsAttention { reason };
                Settled::Attention
            }
            Effect::AuthFailed { error } => {
                self.state = TaskState::Received;
                self.attempts = self.attempts.saturating_sub(1);
                self.last_error = Some(error);
                Settled::AuthFailed
            }
        }
    }

    /// A `Running` task found at start-up: the process died while its request was in
    /// flight. An idempotent one is asked again at once (`Received`): a listing that no longer
    /// shows it proves only that the fTTP acted, not that the agent has the answer. A
    /// `send_idat` is `InDoubt` until a listing decides. The moment it was sent is kept.
    pub fn interrupted(&mut self) {
        self.state = if self.is_idempotent() {
            TaskState::Received
        } else {
            TaskState::InDoubt
        };
    }

    /// An `InDoubt` task judged by the listing of a successful poll that *started after* the
    /// answer was sent (`updated_at + settle <= now` gives the fTTP time to process it):
    ///
    /// * an idempotent task (`repeat_request`) is asked again at once, whatever the listing
    ///   says (absence proves that the fTTP acted, not that the agent has the pseudonym);
    /// * listed: the fTTP does not have the answer: `Received`, sent again;
    /// * not listed, the fTTP relists until done: it has the answer: `Done`, not sent twice;
    /// * not listed, the fTTP lists once: absence proves nothing: `Received` (at least once);
    /// * not listed and past its deadline: the fTTP stops listing an expired task whether or not
    ///   it has the answer, so absence proves nothing: unchanged, left to `expire_if_due`
    ///   (found by the model check, `stored_done_is_backed_by_the_fttp`).
    ///
    /// Returns whether it changed (not while the answer is too recent to judge, nor for a task
    /// that is not in doubt).
    pub fn reconcile_in_doubt(
        &mut self,
        listed_now: bool,
        relisting: TaskRelisting,
        settle: chrono::Duration,
        now: DateTime<Utc>,
    ) -> bool {
        if self.state != TaskState::InDoubt {
            return false;
        }
        if self.is_idempotent() {
            self.state = TaskState::Received;
        } else if self.updated_at + settle > now || (!listed_now && self.is_past_deadline(now)) {
            return false;
        } else {
            self.state = match (listed_now, relisting) {
                (false, TaskRelisting::UntilDone) => TaskState::Done { at: now },
                _ => TaskState::Received,
            };
        }
        self.updated_at = now;
        true
    }

    /// A finished `send_idat` the fTTP lists again: once the in-doubt settle time after its
    /// answer has passed, the fTTP evidently lacks the answer and a person must decide
    /// (`NeedsAttention { StillListed }`). Tasks a person marked handled stay finished. Returns
    /// whether the state changed.
    pub fn relisted_after_answer(&mut self, settle: chrono::Duration, now: DateTime<Utc>) -> bool {
        let TaskState::Done { at } = self.state else {
            return false;
        };
        if self.is_idempotent() || self.was_marked_handled() || at + settle > now {
            return false;
        }
        self.state = TaskState::NeedsAttention {
            reason: Attention::StillListed { answered_at: at },
        };
        self.updated_at = now;
        true
    }

    /// A `StillListed` task the fTTP no longer lists has caught up: done, as answered.
    pub fn caught_up(&mut self, now: DateTime<Utc>) -> bool {
        let TaskState::NeedsAttention {
            reason: Attention::StillListed { answered_at },
        } = self.state
        else {
            return false;
        };
        self.state = TaskState::Done { at: answered_at };
        self.updated_at = now;
        true
    }

    /// A person re-arms the task (`resolve retry`): from `NeedsAttention`, `RetryWait` or
    /// `InDoubt` back to `Received`, worked on in the next cycle. A `send_idat` the fTTP still
    /// lists although answered (`StillListed`) only when `confirmed`: its IDAT goes out again.
    /// Returns a warning for the person when the answer may now reach the fTTP twice.
    pub fn retried_by_person(
        &mut self,
        confirmed: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<&'static str>, Refusal> {
        let warning = match &self.state {
            TaskState::NeedsAttention {
                reason: Attention::StillListed { answered_at },
            } => {
                if !confirmed {
                    return Err(Refusal::NeedsConfirmation {
                        answered_at: *answered_at,
                    });
                }
                Some(
                    "the answer is sent again although the agent sent it once already (confirmed with --yes)",
                )
            }
            TaskState::NeedsAttention { .. } | TaskState::RetryWait { .. } => None,
            TaskState::InDoubt => Some(
                "the task was in doubt: the fTTP may already have the answer, which is now sent again",
            ),
            TaskState::Received => return Err(Refusal::AlreadyWaiting),
            TaskState::Running => return Err(Refusal::Running),
            // A retry must not bypass the approval of a release.
            TaskState::AwaitingApproval => return Err(Refusal::AwaitsApproval),
            TaskState::Done { .. } | TaskState::Expired { .. } | TaskState::Closed { .. } => {
                return Err(Refusal::Finished {
                    state: self.state.name(),
                });
            }
        };
        if let Some(at) = self.deadline().filter(|d| *d <= now) {
            return Err(Refusal::DeadlinePassed { at });
        }
        self.state = TaskState::Received;
        self.updated_at = now;
        Ok(warning)
    }

    /// A person dealt with the task outside the agent (`resolve handled`): `Done` now, with
    /// who and why in `last_error` (see `resolve.rs` for why this is `Done`). Refused for a
    /// finished task and for a `Running` one (its request may be on the wire).
    pub fn marked_handled(
        &mut self,
        actor: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        match &self.state {
            TaskState::Done { .. } | TaskState::Expired { .. } | TaskState::Closed { .. } => {
                return Err(Refusal::Finished {
                    state: self.state.name(),
                });
            }
            TaskState::Running => return Err(Refusal::Running),
            _ => {}
        }
        self.state = TaskState::Done { at: now };
        self.updated_at = now;
        self.last_error = Some(format!("{MARKED_HANDLED_PREFIX}{actor}: {comment}"));
        Ok(())
    }

    /// Whether this task must wait for approval before it is sent, with `required` distinct
    /// approvals (`[dispatch] idat_release = "approval"`): a `send_idat` that has fewer. Other
    /// task types disclose no IDAT and never wait.
    pub fn needs_approval(&self, required: usize) -> bool {
        matches!(self.task.kind, TaskKind::SendIdat { .. }) && self.approvals.len() < required
    }

    /// A ready `send_idat` that must be approved first: `AwaitingApproval`, until enough local
    /// users approve it ([`TaskRecord::approved_by`]) or one denies it, or its deadline passes
    /// (it expires like any open task). Only from `Received` or `RetryWait` (what the
    /// dispatcher is handed); returns whether it changed.
    pub fn hold_for_approval(&mut self, now: DateTime<Utc>) -> bool {
        if !matches!(
            self.state,
            TaskState::Received | TaskState::RetryWait { .. }
        ) {
            return false;
        }
        self.state = TaskState::AwaitingApproval;
        self.updated_at = now;
        true
    }

    /// A local user approves the release (`ttp-agent approve`). The same user twice counts
    /// once (refused, so that the person learns that a second user is needed). With `required`
    /// distinct approvals in, the task is `Received`: the next cycle sends it, unless its
    /// deadline has passed by then (the dispatcher expires it first). Refused once the
    /// deadline has passed: an approval can no longer lead to a send.
    pub fn approved_by(
        &mut self,
        by: &str,
        required: usize,
        now: DateTime<Utc>,
    ) -> Result<ApprovalProgress, Refusal> {
        if self.state != TaskState::AwaitingApproval {
            return Err(Refusal::NotAwaitingApproval {
                state: self.state.name(),
            });
        }
        if let Some(at) = self.deadline().filter(|d| *d <= now) {
            return Err(Refusal::DeadlinePassed { at });
        }
        if self.approvals.iter().any(|a| a.by == by) {
            return Err(Refusal::AlreadyApprovedBy { by: by.to_owned() });
        }
        self.approvals.push(Approval {
            by: by.to_owned(),
            at: now,
        });
        let progress = ApprovalProgress {
            have: self.approvals.len(),
            need: required.max(1),
        };
        if progress.complete() {
            self.state = TaskState::Received;
        }
        self.updated_at = now;
        Ok(progress)
    }

    /// A local user denies the release (`ttp-agent deny --reason`): closed locally with who
    /// and why, never answered. Only from `AwaitingApproval`.
    pub fn denied_by(&mut self, by: &str, reason: &str, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.state != TaskState::AwaitingApproval {
            return Err(Refusal::NotAwaitingApproval {
                state: self.state.name(),
            });
        }
        self.state = TaskState::Closed {
            at: now,
            why: Closure::Denied {
                by: by.to_owned(),
                reason: reason.to_owned(),
            },
        };
        self.last_error = None;
        self.updated_at = now;
        Ok(())
    }

    /// The task is about a record whose consent was withdrawn: closed locally, never answered.
    /// From any open state but `Running` (its request may be on the wire; the dispatcher checks
    /// for a withdrawal again before it next acts on the task). Returns whether it changed.
    pub fn withdrawn(&mut self, local_id: &str, now: DateTime<Utc>) -> bool {
        if self.state.is_final() || self.state == TaskState::Running {
            return false;
        }
        self.state = TaskState::Closed {
            at: now,
            why: Closure::Withdrawn {
                local_id: local_id.to_owned(),
            },
        };
        self.updated_at = now;
        true
    }

    /// Whether the task's request may simply be sent again when its answer was lost: a
    /// `repeat_request` registers a filter (idempotent); a `send_idat` carries IDAT and is
    /// never repeated blindly.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self.task.kind, ttp_proto::TaskKind::SendIdat { .. })
    }

    /// The filters and pseudonyms (as bytes) the task is about: while it is open, their
    /// records keep their IDAT and are not registered again.
    pub fn subjects(&self) -> Vec<&[u8]> {
        match &self.task.kind {
            TaskKind::SendIdat { subject, .. } => match subject {
                SendIdatSubject::BloomFilter(bf) => vec![bf.0.as_slice()],
                SendIdatSubject::Pseudonym(p) => vec![p.as_bytes()],
                SendIdatSubject::Both {
                    pseudonym,
                    bloom_filter,
                } => vec![pseudonym.as_bytes(), bloom_filter.0.as_slice()],
            },
            TaskKind::DicPsnAvailable { bloom_filter, .. }
            | TaskKind::RepeatRequest { bloom_filter, .. } => vec![bloom_filter.0.as_slice()],
            TaskKind::Unknown { .. } => Vec::new(),
        }
    }

    /// The Bloom filters and pseudonyms the task names, apart (a withdrawal is matched against
    /// each kind in its own way).
    pub fn subject_parts(&self) -> (Vec<&[u8]>, Vec<&str>) {
        match &self.task.kind {
            TaskKind::SendIdat { subject, .. } => match subject {
                SendIdatSubject::BloomFilter(bf) => (vec![bf.0.as_slice()], Vec::new()),
                SendIdatSubject::Pseudonym(p) => (Vec::new(), vec![p.as_str()]),
                SendIdatSubject::Both {
                    pseudonym,
                    bloom_filter,
                } => (vec![bloom_filter.0.as_slice()], vec![pseudonym.as_str()]),
            },
            TaskKind::DicPsnAvailable {
                bloom_filter,
                pseudonym,
                ..
            } => (vec![bloom_filter.0.as_slice()], vec![pseudonym.as_str()]),
            TaskKind::RepeatRequest { bloom_filter, .. } => {
                (vec![bloom_filter.0.as_slice()], Vec::new())
            }
            TaskKind::Unknown { .. } => (Vec::new(), Vec::new()),
        }
    }

    /// Finished because a person said so (`resolve handled`), not because the agent answered.
    pub fn was_marked_handled(&self) -> bool {
        matches!(self.state, TaskState::Done { .. })
            && self
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(MARKED_HANDLED_PREFIX))
    }
}

/// What the agent makes of the tasks the fTTP listed at the last successful poll: every
/// listed task is in exactly one bucket, so nothing listed goes unseen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingSummary {
    pub at: Option<DateTime<Utc>>,
    /// Tasks (and unreadable entries) in the listing.
    pub listed: usize,
    /// Listed tasks the agent works on by itself.
    pub working: usize,
    /// Listed tasks waiting for a person (unknown type, malformed, needs attention).
    pub need_person: usize,
    /// Listed tasks the agent finished (answered, expired) that the fTTP lists anyway; a
    /// `send_idat` among them needs attention once the settle time has passed.
    pub finished_locally: usize,
    /// Listed tasks a person marked handled.
    pub handled: usize,
    /// Listed entries beyond the parser's limits (`[ttp] max_listed_tasks`,
    /// `max_unknown_tasks`): only counted, never acted on; one attention item names them.
    #[serde(default)]
    pub not_kept: usize,
}

impl ListingSummary {
    /// Counts the stored records of the listed tasks (after the merge) and the `not_kept`
    /// entries the parser only counted. The attention items that stand for those counted
    /// entries are not listed tasks themselves, so they are not counted again. Pure.
    pub fn count<'a>(
        listed: impl IntoIterator<Item = &'a TaskRecord>,
        not_kept: usize,
        at: DateTime<Utc>,
    ) -> ListingSummary {
        let mut s = ListingSummary {
            at: Some(at),
            listed: not_kept,
            not_kept,
            ..ListingSummary::default()
        };
        for rec in listed {
            if rec.key.is_count_summary() {
                continue;
            }
            s.listed += 1;
            match &rec.state {
                _ if rec.was_marked_handled() => s.handled += 1,
                TaskState::Done { .. } | TaskState::Expired { .. } | TaskState::Closed { .. } => {
                    s.finished_locally += 1
                }
                TaskState::NeedsAttention { .. } | TaskState::AwaitingApproval => {
                    s.need_person += 1
                }
                _ => s.working += 1,
            }
        }
        s
    }
}

/// The task state machine (drawn in ARCHITECTURE.md).
///
/// ```text
///  Received ──► Running ──► Done
///     ▲  │         │ ├────► RetryWait ──► (Received when due)
///     │  │         │ └────► NeedsAttention
///     │  └─────────┴──────► Expired          (expires passed before the effect)
///     └── InDoubt ◄── Running found at start-up (crash while in flight)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskState {
    /// Seen, persisted, nothing done yet.
    Received,
    /// The intent to act is on disk; the effect (an HTTP request) may be under way.
    Running,
    /// A crash interrupted `Running`: the effect may or may not have reached the fTTP. Resolved
    /// at the next successful poll ([`TaskRecord::reconcile_in_doubt`]).
    InDoubt,
    /// A transient failure; tried again at `next_at`.
    RetryWait { next_at: DateTime<Utc> },
    /// The agent cannot answer the task without a human (unknown record, missing element,
    /// permanent fTTP error, unknown task type).
    NeedsAttention { reason: Attention },
    /// Answered.
    Done { at: DateTime<Utc> },
    /// `expires` passed before the task was answered; not acted on.
    Expired { at: DateTime<Utc> },
    /// A `send_idat` waiting for local users to approve the release of its IDAT (`[dispatch]
    /// idat_release = "approval"`); the approvals so far are [`TaskRecord::approvals`]. Expires
    /// like any open task.
    AwaitingApproval,
    /// Finished locally without an answer to the fTTP: denied by a local user, or about a
    /// record whose consent was withdrawn. Never acted on again.
    Closed { at: DateTime<Utc>, why: Closure },
}

impl TaskState {
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Received => "received",
            TaskState::Running => "running",
            TaskState::InDoubt => "in-doubt",
            TaskState::RetryWait { .. } => "retry-wait",
            TaskState::NeedsAttention { .. } => "needs-attention",
            TaskState::Done { .. } => "done",
            TaskState::Expired { .. } => "expired",
            TaskState::AwaitingApproval => "awaiting-approval",
            TaskState::Closed { .. } => "closed",
        }
    }

    /// Finished states are never acted on again (for this occurrence of the task).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Done { .. } | TaskState::Expired { .. } | TaskState::Closed { .. }
        )
    }

    /// Not finished: the agent or a person still has to do something about the task. The
    /// store's index of open tasks holds exactly these.
    pub fn is_open(&self) -> bool {
        !self.is_final()
    }

    /// Open and the agent's to work on (not waiting for a person).
    pub fn is_agents(&self) -> bool {
        self.is_open()
            && !matches!(
                self,
                TaskState::NeedsAttention { .. } | TaskState::AwaitingApproval
            )
    }

    /// Open states a passed deadline ends. `Running` is not one: its request may be on the
    /// wire, and the dispatcher checks the deadline again before acting.
    pub fn may_expire(&self) -> bool {
        self.is_open() && *self != TaskState::Running
    }
}

/// Why a task needs a human. The text is what a coordinator reads; it names no IDAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attention {
    UnknownRecord,
    MissingElements(Vec<IdatElement>),
    /// A `send_idat` asks only for elements the release policy (`[dispatch]
    /// release_elements`) withholds: nothing would be left to send.
    ReleaseWithheld(Vec<IdatElement>),
    UnknownTaskType(String),
    MalformedTask(String),
    Rejected {
        status: u16,
        detail: String,
    },
    IdatPurged,
    /// The fTTP sent a pseudonym for a record that already has a different one.
    PseudonymConflict,
    /// A `send_idat` names its record by pseudonym and by Bloom filter, and the two point to
    /// different local records.
    SubjectMismatch,
    /// A human marked the task handled (with a comment, in the audit trail).
    Handled,
    /// A `repeat_request` names a study or target other than the configured ones: sending it
    /// would register the site's filter in a project it may not take part in.
    ForeignStudy {
        study: String,
        target: String,
    },
    /// A `send_idat` the agent answered (the fTTP took it, as far as the agent could tell)
    /// that the fTTP still lists after the in-doubt settle time: the fTTP does not have the
    /// answer. Not sent again by itself (IDAT); `resolve retry --yes` does.
    StillListed {
        answered_at: DateTime<Utc>,
    },
}

impl std::fmt::Display for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attention::UnknownRecord => write!(
                f,
                "no local record matches the task's Bloom filter or pseudonym; check that the record was submitted from this site"
            ),
            Attention::MissingElements(els) => {
                let names: Vec<&str> = els.iter().map(|e| e.code()).collect();
                write!(
                    f,
                    "the local record lacks the requested element(s) {}; add them with `ttp-agent resolve add-element`",
                    names.join(", ")
                )
            }
            Attention::ReleaseWithheld(els) => {
                let names: Vec<&str> = els.iter().map(|e| e.code()).collect();
                write!(
                    f,
                    "the task asks only for element(s) {} that the release policy ([dispatch] release_elements) withholds; nothing was sent",
                    names.join(", ")
                )
            }
            Attention::UnknownTaskType(t) => write!(
                f,
                "task type `{t}` is not known to this agent version; it is stored and reported, not acted on"
            ),
            Attention::MalformedTask(why) => write!(f, "the fTTP sent a malformed task: {why}"),
            Attention::Rejected { status, detail } => {
                write!(f, "the fTTP rejected the answer (HTTP {status}): {detail}")
            }
            Attention::PseudonymConflict => write!(
                f,
                "the fTTP sent a pseudonym for a record that already has a different one; the stored pseudonym was kept — ask the fTTP operator which is valid"
            ),
            Attention::SubjectMismatch => write!(
                f,
                "the task's pseudonym and Bloom filter point to different local records; nothing was sent — ask the fTTP operator which record is meant"
            ),
            Attention::Handled => write!(f, "marked handled by a person (see the audit trail)"),
            Attention::ForeignStudy { study, target } => write!(
                f,
                "the task asks to register a filter for study `{study}` and target `{target}`, which are not the configured ones; it was not sent"
            ),
            Attention::StillListed { answered_at } => write!(
                f,
                "the fTTP still lists a task answered at {}: it does not seem to have the answer",
                answered_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Attention::IdatPurged => write!(
                f,
                "the record's IDAT was purged by the retention rule; re-submit the record's IDAT"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, at, wire_task};

    fn t0() -> DateTime<Utc> {
        at("2026-01-10T10:00:00Z")
    }

    fn send_idat(expires: Option<&str>) -> TaskRecord {
        let task = wire_task(testkit::send_idat("t-1", "psn_1"), expires.map(at));
        TaskRecord::listed(TaskKey("send_idat/t-1".into()), task, t0(), 1)
    }

    fn repeat() -> TaskRecord {
        let task = wire_task(testkit::repeat_request(vec![1, 2, 3]), None);
        TaskRecord::listed(TaskKey("repeat/x".into()), task, t0(), 1)
    }

    fn in_state(mut rec: TaskRecord, state: TaskState) -> TaskRecord {
        rec.state = state;
        rec
    }

    fn every_state() -> Vec<TaskState> {
        vec![
            TaskState::Received,
            TaskState::Running,
            TaskState::InDoubt,
            TaskState::RetryWait { next_at: t0() },
            TaskState::NeedsAttention {
                reason: Attention::UnknownRecord,
            },
            TaskState::Done { at: t0() },
            TaskState::Expired { at: t0() },
            TaskState::AwaitingApproval,
            TaskState::Closed {
                at: t0(),
                why: Closure::Withdrawn {
                    local_id: "a".into(),
                },
            },
        ]
    }

    /// No retry expected: a test that reaches the back-off fails.
    fn no_retry(_: u32, _: Option<Duration>, _: Option<DateTime<Utc>>) -> DateTime<Utc> {
        panic!("the back-off was asked")
    }

    #[test]
    fn the_state_classes_partition_the_states() {
        let names = |pred: fn(&TaskState) -> bool| -> Vec<&str> {
            every_state()
                .iter()
                .filter(|s| pred(s))
                .map(TaskState::name)
                .collect()
        };
        assert_eq!(
            names(TaskState::is_open),
            [
                "received",
                "running",
                "in-doubt",
                "retry-wait",
                "needs-attention",
                "awaiting-approval"
            ]
        );
        assert_eq!(names(TaskState::is_final), ["done", "expired", "closed"]);
        assert_eq!(
            names(TaskState::is_agents),
            ["received", "running", "in-doubt", "retry-wait"]
        );
        assert_eq!(
            names(TaskState::may_expire),
            [
                "received",
                "in-doubt",
                "retry-wait",
                "needs-attention",
                "awaiting-approval"
            ]
        );
    }

    #[test]
    fn the_deadline_is_compared_across_offsets() {
        // 13:00+02:00 is 11:00Z.
        let r = send_idat(Some("2021-05-28T13:00:00.00+02:00"));
        assert_eq!(r.deadline(), Some(at("2021-05-28T11:00:00Z")));
        assert!(!r.is_past_deadline(at("2021-05-28T10:59:59Z")));
        assert!(r.is_past_deadline(at("2021-05-28T11:00:00Z")));
        assert_eq!(
            r.seconds_to_deadline(at("2021-05-28T10:00:00Z")),
            Some(3600)
        );
        assert_eq!(repeat().deadline(), None);
    }

    #[test]
    fn open_states_expire_finished_and_running_do_not() {
        let now = at("2030-01-01T00:00:00Z");
        for state in every_state() {
            let mut r = in_state(send_idat(Some("2021-05-28T13:00:00Z")), state.clone());
            let expired = r.expire_if_due(now);
            assert_eq!(expired, state.may_expire(), "{state:?}");
            if expired {
                assert_eq!(r.state, TaskState::Expired { at: now });
                assert_eq!(r.updated_at, now);
            } else {
                assert_eq!(r.state, state);
            }
        }
        let mut no_deadline = repeat();
        assert!(!no_deadline.expire_if_due(at("2999-01-01T00:00:00Z")));
    }

    #[test]
    fn an_effect_is_intent_first_then_the_domain_decides_the_state() {
        let now = t0() + chrono::Duration::minutes(1);
        let mut r = send_idat(Some("2026-01-12T10:00:00Z"));
        r.begin_effect(now);
        assert_eq!((r.state.clone(), r.attempts), (TaskState::Running, 1));

        let mut done = r.clone();
        assert_eq!(
            done.after_effect(Effect::Done, now, no_retry),
            Settled::Done
        );
        assert_eq!(done.state, TaskState::Done { at: now });
        assert_eq!(done.last_error, None);
        let mut without = r.clone();
        let missing = Effect::DoneWithout {
            missing: vec![IdatElement::Degree],
            withheld: vec![IdatElement::Birthplace],
        };
        assert_eq!(without.after_effect(missing, now, no_retry), Settled::Done);

        let mut retry = r.clone();
        let asked = std::cell::Cell::new(None);
        let settled = retry.after_effect(
            Effect::Retry {
                error: "503".into(),
                retry_after: Some(Duration::from_secs(9)),
            },
            now,
            |attempts, retry_after, deadline| {
                asked.set(Some((attempts, retry_after, deadline)));
                now + chrono::Duration::seconds(30)
            },
        );
        assert_eq!(settled, Settled::Retry);
        assert_eq!(
            asked.get(),
            Some((1, Some(Duration::from_secs(9)), r.deadline())),
            "the back-off sees the attempt, the fTTP's Retry-After and the deadline"
        );
        assert_eq!(
            retry.state,
            TaskState::RetryWait {
                next_at: now + chrono::Duration::seconds(30)
            }
        );
        assert_eq!(retry.last_error.as_deref(), Some("503"));

        let mut doubt = r.clone();
        let settled = doubt.after_effect(
            Effect::InDoubt {
                error: "reset".into(),
            },
            now,
            no_retry,
        );
        assert_eq!(
            (settled, doubt.state),
            (Settled::InDoubt, TaskState::InDoubt)
        );

        let mut person = r.clone();
        let settled =
            person.after_effect(Effect::Attention(Attention::UnknownRecord), now, no_retry);
        assert_eq!(settled, Settled::Attention);
        assert_eq!(
            person.last_error.as_deref(),
            Some(Attention::UnknownRecord.to_string().as_str())
        );

        let mut auth = r.clone();
        let settled = auth.after_effect(
            Effect::AuthFailed {
                error: "401".into(),
            },
            now,
            no_retry,
        );
        assert_eq!(settled, Settled::AuthFailed);
        assert_eq!(
            (auth.state, auth.attempts),
            (TaskState::Received, 0),
            "not the task's fault: the attempt is not counted"
        );
    }

    #[test]
    fn a_retry_past_the_deadline_expires_instead() {
        let mut r = send_idat(Some("2026-01-10T10:30:00Z"));
        r.begin_effect(t0());
        let late = at("2026-01-10T10:30:00Z");
        let retry = Effect::Retry {
            error: "expired while waiting in the wave".into(),
            retry_after: None,
        };
        assert_eq!(r.after_effect(retry, late, no_retry), Settled::Expired);
        assert_eq!(r.state, TaskState::Expired { at: late });
    }

    #[test]
    fn an_interrupted_request_is_asked_again_only_when_idempotent() {
        let mut idat = in_state(send_idat(None), TaskState::Running);
        idat.interrupted();
        assert_eq!(idat.state, TaskState::InDoubt, "IDAT is never sent blindly");
        let mut again = in_state(repeat(), TaskState::Running);
        again.interrupted();
        assert_eq!(again.state, TaskState::Received);
    }

    #[test]
    fn in_doubt_is_judged_by_a_listing_after_the_settle_time() {
        let settle = chrono::Duration::seconds(60);
        let soon = t0() + chrono::Duration::seconds(10);
        let later = t0() + chrono::Duration::seconds(61);
        let doubt = in_state(send_idat(None), TaskState::InDoubt);
        let judge = |listed, relisting, now| {
            let mut r = doubt.clone();
            r.reconcile_in_doubt(listed, relisting, settle, now)
                .then_some(r.state)
        };
        assert_eq!(judge(false, TaskRelisting::UntilDone, soon), None);
        assert_eq!(
            judge(true, TaskRelisting::UntilDone, later),
            Some(TaskState::Received)
        );
        assert_eq!(
            judge(false, TaskRelisting::UntilDone, later),
            Some(TaskState::Done { at: later })
        );
        assert_eq!(
            judge(false, TaskRelisting::Once, later),
            Some(TaskState::Received)
        );
        let mut r = in_state(repeat(), TaskState::InDoubt);
        assert!(r.reconcile_in_doubt(false, TaskRelisting::UntilDone, settle, soon));
        assert_eq!(r.state, TaskState::Received, "absence is not an answer");
        let mut received = send_idat(None);
        assert!(!received.reconcile_in_doubt(true, TaskRelisting::UntilDone, settle, later));
    }

    /// Regression (model check, `stored_done_is_backed_by_the_fttp`): the intent was flushed,
    /// the process died before the request left, the deadline passed; the next listing lacks
    /// the task because it expired, not because the fTTP has the answer.
    #[test]
    fn an_in_doubt_send_idat_past_its_deadline_is_not_done_by_absence() {
        let settle = chrono::Duration::seconds(60);
        let mut r = in_state(send_idat(Some("2026-01-10T10:05:00Z")), TaskState::InDoubt);
        let after = at("2026-01-10T10:06:00Z");
        assert!(!r.reconcile_in_doubt(false, TaskRelisting::UntilDone, settle, after));
        assert_eq!(r.state, TaskState::InDoubt);
        assert!(r.expire_if_due(after));
        assert_eq!(r.state, TaskState::Expired { at: after });
        let mut before = in_state(send_idat(Some("2026-01-10T10:05:00Z")), TaskState::InDoubt);
        let now = at("2026-01-10T10:04:00Z");
        assert!(before.reconcile_in_doubt(false, TaskRelisting::UntilDone, settle, now));
        assert_eq!(
            before.state,
            TaskState::Done { at: now },
            "before it, absence proves it"
        );
    }

    #[test]
    fn a_relisted_answer_needs_a_person_until_the_ftpp_catches_up() {
        let settle = chrono::Duration::seconds(60);
        let answered = in_state(send_idat(None), TaskState::Done { at: t0() });
        let mut soon = answered.clone();
        assert!(!soon.relisted_after_answer(settle, t0() + chrono::Duration::seconds(59)));
        let mut r = answered.clone();
        let later = t0() + chrono::Duration::seconds(60);
        assert!(r.relisted_after_answer(settle, later));
        assert_eq!(
            r.state,
            TaskState::NeedsAttention {
                reason: Attention::StillListed { answered_at: t0() }
            }
        );
        assert!(r.caught_up(later));
        assert_eq!(r.state, TaskState::Done { at: t0() });
        let mut content = in_state(repeat(), TaskState::Done { at: t0() });
        assert!(!content.relisted_after_answer(settle, later));
        let mut handled = send_idat(None);
        handled.marked_handled("alice", "by phone", t0()).unwrap();
        assert!(!handled.relisted_after_answer(settle, later));
    }

    #[test]
    fn listed_again_keeps_the_occurrence_or_starts_a_new_one() {
        let mut r = send_idat(Some("2026-01-12T10:00:00+01:00"));
        let mut extended = r.task.clone();
        extended.expires = Some(at("2026-02-01T00:00:00Z"));
        assert!(!r.listed_again(extended.clone(), t0(), 2));
        assert_eq!(r.task.expires, extended.expires, "the fTTP may extend");
        assert_eq!(r.last_seen_poll, 2);

        let mut done = in_state(repeat(), TaskState::Done { at: t0() });
        done.attempts = 3;
        let task = done.task.clone();
        assert!(
            !done.listed_again(task.clone(), t0(), 2),
            "the next poll: same"
        );
        let later = t0() + chrono::Duration::hours(1);
        assert!(
            done.listed_again(task, later, 4),
            "after a gap: new occurrence"
        );
        assert_eq!(
            (done.state.clone(), done.attempts),
            (TaskState::Received, 0)
        );
        assert_eq!(done.first_seen, t0());
    }

    #[test]
    fn a_person_may_retry_what_waits_and_nothing_else() {
        let now = t0();
        let retry = |state: TaskState, confirmed: bool| {
            let mut r = in_state(send_idat(Some("2026-01-12T10:00:00Z")), state);
            r.retried_by_person(confirmed, now)
                .map(|w| (w.is_some(), r.state))
        };
        assert_eq!(
            retry(TaskState::RetryWait { next_at: now }, false),
            Ok((false, TaskState::Received))
        );
        assert_eq!(
            retry(TaskState::InDoubt, false),
            Ok((true, TaskState::Received)),
            "IDAT may go out twice: a warning"
        );
        assert_eq!(
            retry(TaskState::Received, false),
            Err(Refusal::AlreadyWaiting)
        );
        assert_eq!(retry(TaskState::Running, true), Err(Refusal::Running));
        assert_eq!(
            retry(TaskState::Expired { at: now }, true),
            Err(Refusal::Finished { state: "expired" })
        );
        let still = TaskState::NeedsAttention {
            reason: Attention::StillListed { answered_at: now },
        };
        assert_eq!(
            retry(still.clone(), false),
            Err(Refusal::NeedsConfirmation { answered_at: now })
        );
        assert_eq!(retry(still, true), Ok((true, TaskState::Received)));

        let mut late = in_state(send_idat(Some("2026-01-10T09:00:00Z")), TaskState::InDoubt);
        assert_eq!(
            late.retried_by_person(true, now),
            Err(Refusal::DeadlinePassed {
                at: at("2026-01-10T09:00:00Z")
            })
        );
        assert_eq!(late.state, TaskState::InDoubt, "a refusal changes nothing");
    }

    #[test]
    fn marked_handled_is_done_with_who_and_why() {
        let now = t0();
        for state in every_state() {
            let mut r = in_state(send_idat(None), state.clone());
            let result = r.marked_handled("alice", "answered by phone", now);
            match state {
                TaskState::Running => assert_eq!(result, Err(Refusal::Running)),
                TaskState::Done { .. } | TaskState::Expired { .. } | TaskState::Closed { .. } => {
                    assert!(matches!(result, Err(Refusal::Finished { .. })), "{state:?}")
                }
                _ => {
                    assert_eq!(result, Ok(()));
                    assert_eq!(r.state, TaskState::Done { at: now });
                    assert!(r.was_marked_handled());
                    assert_eq!(
                        r.last_error.as_deref(),
                        Some("marked handled by alice: answered by phone")
                    );
                }
            }
        }
    }

    #[test]
    fn subjects_are_the_filters_and_pseudonyms_a_task_names() {
        assert_eq!(send_idat(None).subjects(), [b"psn_1".as_slice()]);
        assert_eq!(repeat().subjects(), [[1u8, 2, 3].as_slice()]);
    }

    #[test]
    fn task_state_names_are_the_documented_ones() {
        let names: Vec<&str> = every_state().iter().map(TaskState::name).collect();
        assert_eq!(
            names,
            [
                "received",
                "running",
                "in-doubt",
                "retry-wait",
                "needs-attention",
                "done",
                "expired",
                "awaiting-approval",
                "closed"
            ]
        );
    }

    #[test]
    fn only_a_send_idat_waits_for_approval_and_only_when_ready() {
        let r = send_idat(None);
        assert!(!r.needs_approval(0), "automatic release");
        assert!(r.needs_approval(1));
        assert!(!repeat().needs_approval(2), "no IDAT in a repeat_request");
        for state in every_state() {
            let mut t = in_state(send_idat(None), state.clone());
            let held = t.hold_for_approval(t0());
            let expected = matches!(state, TaskState::Received | TaskState::RetryWait { .. });
            assert_eq!(held, expected, "{state:?}");
            if held {
                assert_eq!(t.state, TaskState::AwaitingApproval);
            } else {
                assert_eq!(t.state, state);
            }
        }
    }

    #[test]
    fn two_approvals_need_two_users_and_the_same_user_twice_counts_once() {
        let mut r = send_idat(Some("2026-01-12T10:00:00Z"));
        assert!(r.hold_for_approval(t0()));
        let p = r.approved_by("alice", 2, t0()).unwrap();
        assert_eq!((p.have, p.need, p.complete()), (1, 2, false));
        assert_eq!(r.state, TaskState::AwaitingApproval, "one is not enough");
        assert_eq!(
            r.approved_by("alice", 2, t0()),
            Err(Refusal::AlreadyApprovedBy { by: "alice".into() })
        );
        assert_eq!(r.approvals.len(), 1, "the same user twice counts once");
        assert!(r.needs_approval(2));
        let p = r.approved_by("bob", 2, t0()).unwrap();
        assert_eq!((p.have, p.complete()), (2, true));
        assert_eq!(r.state, TaskState::Received, "ready to send");
        assert!(!r.needs_approval(2), "not asked again after a retry");
        assert_eq!(
            r.approvals
                .iter()
                .map(|a| a.by.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(
            r.approved_by("carol", 2, t0()),
            Err(Refusal::NotAwaitingApproval { state: "received" })
        );
    }

    #[test]
    fn one_approval_is_enough_when_one_is_required() {
        let mut r = send_idat(None);
        r.hold_for_approval(t0());
        assert!(r.approved_by("alice", 1, t0()).unwrap().complete());
        assert_eq!(r.state, TaskState::Received);
    }

    #[test]
    fn an_approval_after_the_deadline_changes_nothing_and_the_task_expires() {
        let mut r = send_idat(Some("2026-01-10T10:30:00Z"));
        r.hold_for_approval(t0());
        let late = at("2026-01-10T10:30:00Z");
        assert_eq!(
            r.approved_by("alice", 1, late),
            Err(Refusal::DeadlinePassed { at: late })
        );
        assert_eq!(r.state, TaskState::AwaitingApproval);
        assert!(r.approvals.is_empty());
        assert!(r.expire_if_due(late), "awaiting approval expires");
        assert_eq!(r.state, TaskState::Expired { at: late });
    }

    #[test]
    fn a_denied_task_is_closed_with_who_and_why_and_cannot_be_retried() {
        let mut r = send_idat(None);
        assert_eq!(
            r.denied_by("alice", "no consent", t0()),
            Err(Refusal::NotAwaitingApproval { state: "received" })
        );
        r.hold_for_approval(t0());
        assert_eq!(
            in_state(r.clone(), TaskState::AwaitingApproval).retried_by_person(true, t0()),
            Err(Refusal::AwaitsApproval),
            "a retry does not bypass the approval"
        );
        r.denied_by("alice", "no consent", t0()).unwrap();
        let closed = TaskState::Closed {
            at: t0(),
            why: Closure::Denied {
                by: "alice".into(),
                reason: "no consent".into(),
            },
        };
        assert_eq!(r.state, closed);
        assert!(r.state.is_final());
        assert!(matches!(
            r.retried_by_person(true, t0()),
            Err(Refusal::Finished { state: "closed" })
        ));
        let settle = chrono::Duration::seconds(1);
        assert!(
            !r.relisted_after_answer(settle, t0() + chrono::Duration::hours(1)),
            "a denied task listed again stays closed"
        );
        assert!(!r.expire_if_due(at("2999-01-01T00:00:00Z")));
    }

    #[test]
    fn a_withdrawal_closes_every_open_task_but_a_running_one() {
        for state in every_state() {
            let mut r = in_state(send_idat(None), state.clone());
            let closed = r.withdrawn("case-1", t0());
            let expected = state.is_open() && state != TaskState::Running;
            assert_eq!(closed, expected, "{state:?}");
            if closed {
                assert_eq!(
                    r.state,
                    TaskState::Closed {
                        at: t0(),
                        why: Closure::Withdrawn {
                            local_id: "case-1".into()
                        }
                    }
                );
            }
        }
    }
}
