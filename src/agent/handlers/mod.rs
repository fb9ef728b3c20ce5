//! One handler per task type. A handler decides what a task needs and returns an [`Outcome`];
//! it never writes task state itself. The dispatcher persists outcomes in group commits, which
//! keeps the durability argument in one place (`dispatch.rs`) and the handlers easy to test.

pub mod dic_psn_available;
pub mod repeat_request;
pub mod send_idat;

use std::time::Duration;

use crate::client::{ErrorClass, TtpError};
use crate::domain::{Attention, LocalRecord};

/// What a handler did, and what the dispatcher must persist.
#[derive(Debug)]
pub struct Outcome {
    pub effect: Effect,
    /// Records changed by the handler (pseudonym assigned), written before the task state.
    pub records: Vec<LocalRecord>,
}

#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Answered.
    Done,
    /// A `send_idat` answered as far as known: without these requested elements, which the
    /// record does not hold. Done, plus an audit entry naming them.
    DoneWithout {
        missing: Vec<ttp_proto::IdatElement>,
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

impl Outcome {
    pub fn effect(effect: Effect) -> Outcome {
        Outcome {
            effect,
            records: Vec::new(),
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
