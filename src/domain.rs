//! The agent's domain types, in one place.
//!
//! Wire types (what the fTTP sends and expects) live in `ttp_proto`; the encoders in
//! `ttp_encode`. This module holds what the agent *keeps*: local records, the tasks it has
//! seen and the state each is in, and the pseudonyms it obtained. The store persists these
//! types; the dispatcher moves tasks between states; the admin surface reports them.
//!
//! Nothing here does I/O, so the state machine can be tested without a network or a store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ttp_proto::{IdatElement, TaskKey};

/// A patient record as the site registered it. The IDAT is kept only to answer `send_idat`
/// tasks later; it is encrypted at rest by the store (see `store::crypto`) and purged after the
/// retention period once nothing is open for the record.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The site's own identifier for the record (e.g. a hospital case number). Never sent.
    pub local_id: String,
    /// The full-length Bloom filter registered with the fTTP (raw bytes, not base64).
    pub bloom_filter: Vec<u8>,
    /// Identifying data, by fTTP element code; `None` once purged.
    pub idat: Option<Idat>,
    pub state: RecordState,
    pub pseudonym: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for LocalRecord {
    // IDAT never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRecord")
            .field("local_id", &self.local_id)
            .field("bloom_filter_len", &self.bloom_filter.len())
            .field("idat", &self.idat.as_ref().map(|_| "<redacted>"))
            .field("state", &self.state)
            .field("pseudonym", &self.pseudonym.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Identifying data of one patient, keyed by fTTP element code. Values are the site's
/// original values (before normalisation): `send_idat` answers send them as they are.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Idat(pub std::collections::BTreeMap<IdatElement, String>);

impl std::fmt::Debug for Idat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Element names are not identifying; values are.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Where a record is in its registration with the fTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// Encoded and stored, not yet sent.
    New,
    /// Part of a `$requestPsnFromBfWorkflow` batch whose answer is not yet stored. After a crash
    /// the batch is sent again: the operation is idempotent for a given filter (see
    /// ARCHITECTURE.md, "Which requests may be repeated").
    Sending { batch: u64 },
    /// The fTTP answered without a pseudonym: a clearing runs; it ends with a
    /// `dic_psn_available` task.
    AwaitingClearing,
    /// The pseudonym is known.
    Pseudonymised,
    /// The fTTP answered with an `error` part for this filter.
    Rejected { code: String },
}

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
                TaskState::Done { .. } | TaskState::Expired { .. } => s.finished_locally += 1,
                TaskState::NeedsAttention { .. } => s.need_person += 1,
                _ => s.working += 1,
            }
        }
        s
    }
}

/// How `resolve handled` starts a task's `last_error` (see `resolve::mark_handled`).
pub const MARKED_HANDLED_PREFIX: &str = "marked handled by ";

impl TaskRecord {
    /// Whether the task's request may simply be sent again when its answer was lost: a
    /// `repeat_request` registers a filter (idempotent); a `send_idat` carries IDAT and is
    /// never repeated blindly.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self.task.kind, ttp_proto::TaskKind::SendIdat { .. })
    }

    /// Finished because a person said so (`resolve handled`), not because the agent answered.
    pub fn was_marked_handled(&self) -> bool {
        matches!(self.state, TaskState::Done { .. })
            && self
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(MARKED_HANDLED_PREFIX))
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
    /// at the next successful poll (see `agent::reconcile`).
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
        }
    }

    /// Finished states are never acted on again (for this occurrence of the task).
    pub fn is_final(&self) -> bool {
        matches!(self, TaskState::Done { .. } | TaskState::Expired { .. })
    }
}

/// Why a task needs a human. The text is what a coordinator reads; it names no IDAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attention {
    UnknownRecord,
    MissingElements(Vec<IdatElement>),
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

/// A `$requestPsnFromBfWorkflow` that failed as a whole: a 4xx for the request (unknown study
/// or target, a refused body), an HTTP 200 whose `error` names no filter (the `all` shape), or
/// an answer that names none of the filters sent. It says nothing about any record: the
/// records stay pending registration. Never contains filters or IDAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeRequestFailure {
    /// A short, stable label: `http-404`, `all`, `error`, `foreign`. Two failures with the
    /// same label and code are the same cause (one log line, not one per batch).
    pub cause: String,
    /// The HTTP status, when the failure came as one.
    pub status: Option<u16>,
    /// The fTTP's error code (`system#code`), when it sent one.
    pub code: Option<String>,
    /// The fTTP's words for it (the Coding's `display`), when it sent them.
    pub display: Option<String>,
    /// One line for people: what the fTTP answered.
    pub detail: String,
}

impl WholeRequestFailure {
    /// What a person most likely has to do, in plain words.
    pub fn advice(&self) -> &'static str {
        match self.status {
            Some(400 | 404 | 422) => {
                "Check [ttp] study and target against what the fTTP operator gave you; after fixing them, restart or reload the agent: the waiting records are sent again by themselves."
            }
            _ => {
                "Ask the fTTP operator what the error means; the agent keeps asking with back-off and sends the waiting records as soon as the fTTP accepts them."
            }
        }
    }
}

impl std::fmt::Display for WholeRequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)?;
        match (&self.code, &self.display) {
            (Some(code), Some(display)) => write!(f, " (fTTP code {code}: {display})"),
            (Some(code), None) => write!(f, " (fTTP code {code})"),
            (None, Some(display)) => write!(f, " ({display})"),
            (None, None) => Ok(()),
        }
    }
}

/// Registration is paused because the fTTP refused whole requests (kept in the store's meta,
/// shown by `status`, `/readyz`, `check` and `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationBlocked {
    pub failure: WholeRequestFailure,
    /// The study and target the refused requests named: a configuration change makes the
    /// next cycle try at once, whatever the back-off says.
    pub study: String,
    pub target: String,
    /// The first failure of this cause.
    pub since: DateTime<Utc>,
    pub last_attempt: DateTime<Utc>,
    /// Failures in a row (of any cause), for the back-off.
    pub attempts: u32,
    /// Registration is not tried again before this (unless study or target changed).
    pub next_attempt: DateTime<Utc>,
}

impl RegistrationBlocked {
    /// The state after another whole-request failure, and whether its cause differs from the
    /// previous one (a change is worth a log line; a repetition is not). `next_attempt` is the
    /// back-off's choice for failure number `attempts` (see [`RegistrationBlocked::attempts`]
    /// of the result).
    pub fn after_failure(
        prev: Option<&RegistrationBlocked>,
        failure: WholeRequestFailure,
        study: &str,
        target: &str,
        now: DateTime<Utc>,
        next_attempt: impl FnOnce(u32) -> DateTime<Utc>,
    ) -> (RegistrationBlocked, bool) {
        let same = prev.is_some_and(|p| {
            p.failure.cause == failure.cause
                && p.failure.code == failure.code
                && p.study == study
                && p.target == target
        });
        let attempts = prev.map_or(0, |p| p.attempts).saturating_add(1);
        let since = match prev {
            Some(p) if same => p.since,
            _ => now,
        };
        (
            RegistrationBlocked {
                failure,
                study: study.to_owned(),
                target: target.to_owned(),
                since,
                last_attempt: now,
                attempts,
                next_attempt: next_attempt(attempts),
            },
            !same,
        )
    }

    /// Whether registration may be tried at `now` with this study and target.
    pub fn allows_attempt(&self, study: &str, target: &str, now: DateTime<Utc>) -> bool {
        now >= self.next_attempt || self.study != study || self.target != target
    }
}

/// What assigning a pseudonym did to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assigned {
    /// The record had no pseudonym and has one now.
    New,
    /// The record already had exactly this pseudonym (a repeated task or response).
    Same,
    /// The record has a different pseudonym; nothing was changed.
    Conflict,
}

impl LocalRecord {
    /// Give the record the pseudonym the fTTP assigned. Idempotent; never overwrites a
    /// different pseudonym (that needs a human).
    pub fn assign_pseudonym(&mut self, pseudonym: &str, now: DateTime<Utc>) -> Assigned {
        assign(
            &mut self.pseudonym,
            &mut self.state,
            &mut self.updated_at,
            pseudonym,
            now,
        )
    }

    /// The record without its IDAT.
    pub fn head(&self) -> RecordHead {
        RecordHead {
            local_id: self.local_id.clone(),
            bloom_filter: self.bloom_filter.clone(),
            state: self.state.clone(),
            pseudonym: self.pseudonym.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A [`LocalRecord`] without its IDAT: everything registration works with. The store lists
/// and updates heads without opening (or re-sealing) the IDAT, which is most of the cost of a
/// record write and need not be in memory in clear just to send a filter.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordHead {
    pub local_id: String,
    pub bloom_filter: Vec<u8>,
    pub state: RecordState,
    pub pseudonym: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for RecordHead {
    // Same redaction as `LocalRecord`'s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordHead")
            .field("local_id", &self.local_id)
            .field("bloom_filter_len", &self.bloom_filter.len())
            .field("state", &self.state)
            .field("pseudonym", &self.pseudonym.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RecordHead {
    /// As [`LocalRecord::assign_pseudonym`].
    pub fn assign_pseudonym(&mut self, pseudonym: &str, now: DateTime<Utc>) -> Assigned {
        assign(
            &mut self.pseudonym,
            &mut self.state,
            &mut self.updated_at,
            pseudonym,
            now,
        )
    }
}

fn assign(
    current: &mut Option<String>,
    state: &mut RecordState,
    updated_at: &mut DateTime<Utc>,
    pseudonym: &str,
    now: DateTime<Utc>,
) -> Assigned {
    match current.as_deref() {
        Some(p) if p == pseudonym => {
            if *state != RecordState::Pseudonymised {
                *state = RecordState::Pseudonymised;
                *updated_at = now;
            }
            Assigned::Same
        }
        Some(_) => Assigned::Conflict,
        None => {
            *current = Some(pseudonym.to_owned());
            *state = RecordState::Pseudonymised;
            *updated_at = now;
            Assigned::New
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LocalRecord {
        let now = Utc::now();
        let mut idat = Idat::default();
        idat.0.insert(IdatElement::Family, "Mustermann".into());
        LocalRecord {
            local_id: "case-1".into(),
            bloom_filter: vec![1, 2, 3],
            idat: Some(idat),
            state: RecordState::AwaitingClearing,
            pseudonym: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn debug_output_names_no_idat_and_no_pseudonym() {
        let mut r = record();
        r.pseudonym = Some("psn_SECRETISH".into());
        let shown = format!("{r:?}");
        assert!(!shown.contains("Mustermann"), "{shown}");
        assert!(!shown.contains("psn_SECRETISH"), "{shown}");
        assert!(shown.contains("case-1"));
        assert_eq!(format!("{:?}", r.idat.unwrap()), "{Family}");
    }

    #[test]
    fn assigning_a_pseudonym_is_idempotent_and_never_overwrites() {
        let now = Utc::now();
        let mut r = record();
        assert_eq!(r.assign_pseudonym("p1", now), Assigned::New);
        assert_eq!(r.state, RecordState::Pseudonymised);
        assert_eq!(r.assign_pseudonym("p1", now), Assigned::Same);
        assert_eq!(r.assign_pseudonym("p2", now), Assigned::Conflict);
        assert_eq!(r.pseudonym.as_deref(), Some("p1"));
    }

    fn failure(cause: &str, code: Option<&str>) -> WholeRequestFailure {
        WholeRequestFailure {
            cause: cause.into(),
            status: None,
            code: code.map(str::to_owned),
            display: None,
            detail: "refused".into(),
        }
    }

    #[test]
    fn a_repeated_cause_is_one_change_and_keeps_its_start() {
        let t0 = Utc::now();
        let later = t0 + chrono::Duration::minutes(5);
        let backoff = |n: u32| t0 + chrono::Duration::minutes(i64::from(n));
        let (first, changed) = RegistrationBlocked::after_failure(
            None,
            failure("all", Some("x")),
            "s",
            "t",
            t0,
            backoff,
        );
        assert!(changed);
        assert_eq!((first.attempts, first.since), (1, t0));
        let (second, changed) = RegistrationBlocked::after_failure(
            Some(&first),
            failure("all", Some("x")),
            "s",
            "t",
            later,
            backoff,
        );
        assert!(!changed, "same cause: no new log line");
        assert_eq!((second.attempts, second.since), (2, t0));
        assert_eq!(second.next_attempt, t0 + chrono::Duration::minutes(2));
        let (third, changed) = RegistrationBlocked::after_failure(
            Some(&second),
            failure("http-404", None),
            "s",
            "t",
            later,
            backoff,
        );
        assert!(changed, "another cause is news");
        assert_eq!(third.since, later);
    }

    #[test]
    fn the_back_off_holds_unless_the_configuration_changed() {
        let t0 = Utc::now();
        let (b, _) = RegistrationBlocked::after_failure(
            None,
            failure("http-404", None),
            "wrong",
            "t",
            t0,
            |_| t0 + chrono::Duration::minutes(10),
        );
        assert!(!b.allows_attempt("wrong", "t", t0 + chrono::Duration::minutes(9)));
        assert!(b.allows_attempt("wrong", "t", t0 + chrono::Duration::minutes(10)));
        assert!(
            b.allows_attempt("right", "t", t0),
            "a new study is tried at once"
        );
        assert!(b.allows_attempt("wrong", "t2", t0), "a new target too");
    }

    #[test]
    fn task_state_names_are_the_documented_ones() {
        let now = Utc::now();
        let names: Vec<&str> = [
            TaskState::Received,
            TaskState::Running,
            TaskState::InDoubt,
            TaskState::RetryWait { next_at: now },
            TaskState::NeedsAttention {
                reason: Attention::UnknownRecord,
            },
            TaskState::Done { at: now },
            TaskState::Expired { at: now },
        ]
        .iter()
        .map(|s| s.name())
        .collect();
        assert_eq!(
            names,
            [
                "received",
                "running",
                "in-doubt",
                "retry-wait",
                "needs-attention",
                "done",
                "expired"
            ]
        );
    }
}
