//! `send_idat`: send exactly the requested IDAT elements of one record with
//! `$providePatientData`, before the task expires.
//!
//! This is the one answer that is not repeated lightly: it carries names and dates of birth.
//! The dispatcher has put the task in `Running` on disk before this handler runs; a failure
//! that may have reached the fTTP becomes `InDoubt` and is resolved by the next listing
//! (`merge::reconcile_in_doubt`), never by blindly sending again.
//!
//! The Patient holds the requested elements and nothing else (data minimisation); the mapping
//! to FHIR is `ttp_proto::patient`.

use super::{Effect, Outcome, effect_of_error};
use crate::client::TtpClient;
use crate::domain::{Attention, LocalRecord};
use crate::store::{Store, StoreError};
use ttp_proto::{ElementRequest, IdatElement, SendIdatSubject};

/// Find the record a task is about. Several local ids may share one filter (the same person
/// registered twice); they carry the same identifying data, so the first one serves.
pub fn find_record(
    store: &Store,
    subject: &SendIdatSubject,
) -> Result<Option<LocalRecord>, StoreError> {
    match subject {
        SendIdatSubject::BloomFilter(bf) => {
            Ok(store.records_by_bloom_filter(&bf.0)?.into_iter().next())
        }
        SendIdatSubject::Pseudonym(p) => store.record_by_pseudonym(p),
    }
}

/// Decide what to send, without sending: the Patient JSON, or why the task needs a human.
/// Pure apart from the record lookup, so the data-minimisation rules are testable alone.
pub fn prepare(
    record: Option<LocalRecord>,
    elements: &[ElementRequest],
) -> Result<serde_json::Value, Attention> {
    let record = record.ok_or(Attention::UnknownRecord)?;
    let unknown: Vec<&str> = elements
        .iter()
        .filter_map(|e| match e {
            ElementRequest::Unknown(code) => Some(code.as_str()),
            ElementRequest::Known(_) => None,
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Attention::MalformedTask(format!(
            "send_idat asks for element code(s) this agent does not know: {}",
            unknown.join(", ")
        )));
    }
    let requested: Vec<IdatElement> = elements
        .iter()
        .filter_map(|e| match e {
            ElementRequest::Known(el) => Some(*el),
            ElementRequest::Unknown(_) => None,
        })
        .collect();
    let idat = record.idat.ok_or(Attention::IdatPurged)?;
    ttp_proto::patient::build_patient(&idat.0, &requested)
        .map_err(|missing| Attention::MissingElements(missing.0))
}

pub async fn handle(
    client: &TtpClient,
    store: &Store,
    task_id: &str,
    subject: &SendIdatSubject,
    elements: &[ElementRequest],
) -> Outcome {
    let record = match find_record(store, subject) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::effect(Effect::Retry {
                error: format!("store: {e}"),
                retry_after: None,
            });
        }
    };
    let patient = match prepare(record, elements) {
        Ok(p) => p,
        Err(attention) => return Outcome::effect(Effect::Attention(attention)),
    };
    match client.provide_patient_data(task_id, patient).await {
        Ok(()) => Outcome::effect(Effect::Done),
        Err(e) => Outcome::effect(effect_of_error(&e, false)),
    }
}
