//! The agent's domain types, in one place.
//!
//! Wire types (what the fTTP sends and expects) live in `ttp_proto`; the encoders in
//! `ttp_encode`. This module holds what the agent *keeps*: local records, the tasks it has
//! seen and the state each is in, and the pseudonyms it obtained. The store persists these
//! types; the dispatcher moves tasks between states; the admin surface reports them.
//!
//! Nothing here does I/O, so the state machines can be tested without a network or a store:
//! the task's in [`task`], the record's (registration, pseudonyms) here.

pub mod disclosure;
mod task;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ttp_proto::IdatElement;

pub use disclosure::{Disclosure, DisclosureEvent};
pub use task::{
    Approval, ApprovalProgress, Attention, Closure, Effect, ListingSummary, MARKED_HANDLED_PREFIX,
    Refusal, Settled, TaskRecord, TaskRelisting, TaskState,
};

/// A patient record as the site registered it: its head (identifier, filter, registration
/// state, pseudonym) and its IDAT. The IDAT is kept only to answer `send_idat` tasks later; the
/// store keeps it sealed apart from the head (see `store::crypto`), so that registration and
/// pseudonyms change the head alone, and purges it after the retention period once nothing is
/// open for the record.
#[derive(Clone, PartialEq)]
pub struct LocalRecord {
    pub head: RecordHead,
    /// Identifying data, by fTTP element code; `None` once purged.
    pub idat: Option<Idat>,
}

impl std::fmt::Debug for LocalRecord {
    // IDAT never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRecord")
            .field("head", &self.head)
            .field("idat", &self.idat.as_ref().map(|_| "<redacted>"))
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

/// The record's registration (`$requestPsnFromBfWorkflow`): the only code that changes a
/// record's state. The registration decides when (agent/register.rs, resolve.rs), the store
/// writes the head these return; `scripts/check-imports.sh` fails on a record state assigned
/// outside `src/domain/`.
impl RecordHead {
    /// The intent: the record is part of batch `batch`, about to be sent. A record already
    /// `Sending` (a batch a crash or a pause interrupted) keeps its batch; returns whether the
    /// head changed (and must be written before the request leaves).
    pub fn sending(&mut self, batch: u64) -> bool {
        if matches!(self.state, RecordState::Sending { .. }) {
            return false;
        }
        self.state = RecordState::Sending { batch };
        true
    }

    /// The fTTP answered the record's filter with `pseudonym`. A record that already has a
    /// different one keeps it (a person must decide; [`Assigned::Conflict`]) and is
    /// pseudonymised all the same: the filter's clearing is over.
    pub fn answered_with_pseudonym(&mut self, pseudonym: &str, now: DateTime<Utc>) -> Assigned {
        let assigned = self.assign_pseudonym(pseudonym, now);
        self.state = RecordState::Pseudonymised;
        self.updated_at = now;
        assigned
    }

    /// The fTTP answered the record's filter with a permanent `error` code.
    pub fn rejected(&mut self, code: &str, now: DateTime<Utc>) {
        self.state = RecordState::Rejected {
            code: code.to_owned(),
        };
        self.updated_at = now;
    }

    /// The fTTP answered without a pseudonym for the filter: a clearing runs, which ends with
    /// a `dic_psn_available` task.
    pub fn awaiting_clearing(&mut self, now: DateTime<Utc>) {
        self.state = RecordState::AwaitingClearing;
        self.updated_at = now;
    }

    /// A person asked for a rejected record to be registered again: `New`, sent in the next
    /// cycle. Returns the code it was rejected with; `None` (and nothing changed) when the
    /// record is not rejected.
    pub fn registered_again(&mut self, now: DateTime<Utc>) -> Option<String> {
        let RecordState::Rejected { code } = &self.state else {
            return None;
        };
        let code = code.clone();
        self.state = RecordState::New;
        self.updated_at = now;
        Some(code)
    }

    /// Give the record the pseudonym the fTTP assigned. Idempotent; never overwrites a
    /// different pseudonym (that needs a human).
    pub fn assign_pseudonym(&mut self, pseudonym: &str, now: DateTime<Utc>) -> Assigned {
        match self.pseudonym.as_deref() {
            Some(p) if p == pseudonym => {
                if self.state != RecordState::Pseudonymised {
                    self.state = RecordState::Pseudonymised;
                    self.updated_at = now;
                }
                Assigned::Same
            }
            Some(_) => Assigned::Conflict,
            None => {
                self.pseudonym = Some(pseudonym.to_owned());
                self.state = RecordState::Pseudonymised;
                self.updated_at = now;
                Assigned::New
            }
        }
    }
}

/// What giving every local record of one filter the fTTP's pseudonym did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Heads whose pseudonym or state changed: to be written (heads only; the sealed IDAT is
    /// not touched).
    pub changed: Vec<RecordHead>,
    /// Records of the filter found.
    pub found: usize,
    /// A record already has a different pseudonym (kept; a person must decide).
    pub conflict: bool,
}

/// Gives the records of one filter (`heads`, several local ids may share one) `pseudonym`,
/// as a `dic_psn_available` or the answer to a `repeat_request` says. A repeated answer
/// usually changes nothing, and then nothing needs writing. Pure.
pub fn assign_pseudonym_to(
    heads: Vec<RecordHead>,
    pseudonym: &str,
    now: DateTime<Utc>,
) -> Assignment {
    let mut out = Assignment {
        found: heads.len(),
        ..Assignment::default()
    };
    for mut head in heads {
        let state_before = head.state.clone();
        match head.assign_pseudonym(pseudonym, now) {
            Assigned::New => out.changed.push(head),
            Assigned::Same if head.state != state_before => out.changed.push(head),
            Assigned::Same => {}
            Assigned::Conflict => out.conflict = true,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LocalRecord {
        let now = Utc::now();
        let mut idat = Idat::default();
        idat.0.insert(IdatElement::Family, "Mustermann".into());
        LocalRecord {
            head: crate::testkit::head("case-1", vec![1, 2, 3], RecordState::AwaitingClearing, now),
            idat: Some(idat),
        }
    }

    #[test]
    fn debug_output_names_no_idat_and_no_pseudonym() {
        let mut r = record();
        r.head.pseudonym = Some("psn_SECRETISH".into());
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
        let r = &mut r.head;
        assert_eq!(r.assign_pseudonym("p1", now), Assigned::New);
        assert_eq!(r.state, RecordState::Pseudonymised);
        assert_eq!(r.assign_pseudonym("p1", now), Assigned::Same);
        assert_eq!(r.assign_pseudonym("p2", now), Assigned::Conflict);
        assert_eq!(r.pseudonym.as_deref(), Some("p1"));
    }

    #[test]
    fn registration_moves_a_record_through_its_states() {
        let t0 = Utc::now();
        let later = t0 + chrono::Duration::seconds(5);
        let mut r = record().head;
        r.state = RecordState::New;
        assert!(r.sending(7));
        assert_eq!(r.state, RecordState::Sending { batch: 7 });
        // An interrupted batch is sent again as it is; nothing to write.
        assert!(!r.sending(8));
        assert_eq!(r.state, RecordState::Sending { batch: 7 });

        let mut clearing = r.clone();
        clearing.awaiting_clearing(later);
        assert_eq!(clearing.state, RecordState::AwaitingClearing);
        assert_eq!(clearing.updated_at, later);

        let mut refused = r.clone();
        assert_eq!(
            refused.registered_again(later),
            None,
            "only a rejected record"
        );
        refused.rejected("invalid-filter", later);
        assert_eq!(
            refused.state,
            RecordState::Rejected {
                code: "invalid-filter".into()
            }
        );
        assert_eq!(
            refused.registered_again(later).as_deref(),
            Some("invalid-filter")
        );
        assert_eq!(refused.state, RecordState::New);

        assert_eq!(r.answered_with_pseudonym("p1", later), Assigned::New);
        assert_eq!(
            (r.state.clone(), r.pseudonym.as_deref()),
            (RecordState::Pseudonymised, Some("p1"))
        );
        // A second pseudonym for the filter: ours is kept, the clearing is over all the same.
        let mut other = r.clone();
        other.state = RecordState::Sending { batch: 9 };
        assert_eq!(
            other.answered_with_pseudonym("p2", later),
            Assigned::Conflict
        );
        assert_eq!(
            (other.state, other.pseudonym.as_deref()),
            (RecordState::Pseudonymised, Some("p1"))
        );
    }

    #[test]
    fn a_pseudonym_is_set_on_every_head_of_its_filter_once() {
        let now = Utc::now();
        let head = |id: &str, pseudonym: Option<&str>| {
            let mut h = record().head;
            h.local_id = id.into();
            h.pseudonym = pseudonym.map(str::to_owned);
            h
        };
        let a = assign_pseudonym_to(vec![head("a", None), head("b", Some("p1"))], "p1", now);
        assert_eq!((a.found, a.conflict), (2, false));
        // `b` had it already but was not yet `Pseudonymised`: its state is written.
        assert_eq!(a.changed.len(), 2);
        assert!(
            a.changed
                .iter()
                .all(|h| h.pseudonym.as_deref() == Some("p1")
                    && h.state == RecordState::Pseudonymised)
        );
        let again = assign_pseudonym_to(a.changed, "p1", now);
        assert!(again.changed.is_empty(), "a repeated answer writes nothing");
        let other = assign_pseudonym_to(vec![head("c", Some("p2"))], "p1", now);
        assert!(other.conflict && other.changed.is_empty());
        assert_eq!(assign_pseudonym_to(Vec::new(), "p1", now).found, 0);
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
}
