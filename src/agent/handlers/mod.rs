//! One handler per task type. The dispatcher hands a task to its handler with what it needs
//! (the task's parts; for `send_idat` the record it names, IDAT opened), and the handler
//! returns an [`Outcome`]: it neither reads nor writes the store, and never sets task state.
//! The dispatcher persists outcomes in group commits, which keeps the durability argument in
//! one place (`dispatch.rs`) and the handlers easy to test.

pub mod dic_psn_available;
pub mod repeat_request;
pub mod send_idat;

use crate::client::{ErrorClass, TtpError};
pub use crate::domain::Effect;
use crate::domain::{Assignment, Attention};
use ttp_proto::BloomFilter;

/// What a handler did, and what the dispatcher must persist.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub effect: Effect,
    /// A pseudonym the fTTP gave for a filter: the dispatcher sets it on the heads of the
    /// filter's records (written before the task state) and may turn the effect into a need
    /// for a person ([`PseudonymFor::effect_after`]).
    pub pseudonym: Option<PseudonymFor>,
}

/// A pseudonym for every local record of one filter.
#[derive(Debug, PartialEq)]
pub struct PseudonymFor {
    pub bloom_filter: BloomFilter,
    pub pseudonym: String,
    /// What it means when no local record has the filter: `None` for nothing (a
    /// `repeat_request` the site no longer needs), or why a person must look.
    pub unknown_record: Option<Attention>,
}

impl PseudonymFor {
    /// The task's effect once the pseudonym was assigned: a record with another pseudonym
    /// already, or no record where one is needed, is for a person. Pure.
    pub fn effect_after(self, effect: Effect, assignment: &Assignment) -> Effect {
        if assignment.conflict {
            Effect::Attention(Attention::PseudonymConflict)
        } else if assignment.found == 0
            && let Some(reason) = self.unknown_record
        {
            Effect::Attention(reason)
        } else {
            effect
        }
    }
}

impl Outcome {
    pub fn effect(effect: Effect) -> Outcome {
        Outcome {
            effect,
            pseudonym: None,
        }
    }
}

/// Map a failed request to the effect on its task. `idempotent` says whether the operation may
/// simply be sent again (then "maybe processed" is no reason for doubt).
pub fn effect_of_error(err: &TtpError, idempotent: bool) -> Effect {
    let error = err.to_string();
    match err.class {
        ErrorClass::Auth => Effect::AuthFailed { error },
        ErrorClass::Permanent => Effect::Attention(Attention::Rejected {
            status: err.status.unwrap_or(0),
            detail: err.detail.clone(),
        }),
        ErrorClass::Transient => Effect::Retry {
            error,
            retry_after: err.retry_after,
        },
        ErrorClass::InDoubt | ErrorClass::Protocol if idempotent => Effect::Retry {
            error,
            retry_after: err.retry_after,
        },
        ErrorClass::InDoubt | ErrorClass::Protocol => Effect::InDoubt { error },
    }
}
