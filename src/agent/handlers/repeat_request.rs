//! `repeat_request`: send `$requestPsnFromBfWorkflow` again for one filter.
//!
//! The operation is idempotent for a given filter (the fTTP answers a known filter with the
//! same pseudonym, and asks for exactly this repetition), so any failure short of a rejection
//! of this filter is simply retried later, and an answer lost after the fTTP acted is asked
//! for again (see `TaskRecord::interrupted`). A whole-request failure (the task's study or
//! target unknown, the `all` shape) is retried with back-off too: it judges no record. Study and target come from the task (the Identifiers' values), as the
//! reference says; a task naming a study or target the site is not configured for needs
//! attention instead: a hostile or confused dispatcher must not make the site register its
//! filters in another project.

use super::{Effect, Outcome, PseudonymFor, effect_of_error};
use crate::client::TtpClient;
use crate::client::classify::{PsnVerdict, classify_psn, psn_error_is_permanent};
use crate::domain::Attention;
use ttp_proto::BloomFilter;

/// Asks for the filter's pseudonym; one in the answer is for the filter's records (set on
/// their heads by the dispatcher).
pub async fn handle(
    client: &TtpClient,
    study: &str,
    target: &str,
    bloom_filter: &BloomFilter,
) -> Outcome {
    if !client.is_configured_study(study, target) {
        return Outcome::effect(Effect::Attention(Attention::ForeignStudy {
            study: study.to_owned(),
            target: target.to_owned(),
        }));
    }
    let filters = std::slice::from_ref(bloom_filter);
    let result = client.request_psn_for(study, target, filters).await;
    let response = match (classify_psn(filters, result.as_ref()), result) {
        (PsnVerdict::PerFilter, Ok(response)) => response,
        (PsnVerdict::Auth, Err(e)) => return Outcome::effect(effect_of_error(&e, true)),
        // About the request (the task's study or target unknown, a gateway failing every
        // request), not this record: ask again after the back-off, until the deadline.
        (PsnVerdict::WholeRequest(failure), _) => {
            return Outcome::effect(Effect::Retry {
                error: failure.to_string(),
                retry_after: None,
            });
        }
        (_, Err(e)) => return Outcome::effect(effect_of_error(&e, true)),
        (_, Ok(_)) => {
            return Outcome::effect(Effect::Retry {
                error: "the fTTP refused the request as too large".into(),
                retry_after: None,
            });
        }
    };
    if let Some(err) = response
        .errors
        .iter()
        .find(|e| &e.bloom_filter == bloom_filter)
    {
        if !psn_error_is_permanent(&err.code) {
            return Outcome::effect(Effect::Retry {
                error: format!("the fTTP answered with error code {} (passing)", err.code),
                retry_after: None,
            });
        }
        return Outcome::effect(Effect::Attention(Attention::Rejected {
            status: 200,
            detail: format!("the fTTP answered with error code {}", err.code),
        }));
    }
    let Some(psn) = response
        .pseudonyms
        .iter()
        .find(|p| &p.bloom_filter == bloom_filter)
    else {
        // No pseudonym yet: the clearing goes on and will end with `dic_psn_available`.
        return Outcome::effect(Effect::Done);
    };
    Outcome {
        effect: Effect::Done,
        pseudonym: Some(PseudonymFor {
            bloom_filter: bloom_filter.clone(),
            pseudonym: psn.pseudonym.clone(),
            // A filter no local record has any more: nothing to do.
            unknown_record: None,
        }),
    }
}
