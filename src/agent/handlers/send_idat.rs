//! `send_idat`: send the requested IDAT elements of one record with `$providePatientData`,
//! before the task expires.
//!
//! This is the one answer that is not repeated lightly: it carries names and dates of birth.
//! The dispatcher has put the task in `Running` on disk before this handler runs; a failure
//! that may have reached the fTTP becomes `InDoubt` and is resolved by the next listing
//! (`TaskRecord::reconcile_in_doubt`), never by blindly sending again.
//!
//! The Patient holds requested elements and nothing else (data minimisation); the mapping to
//! FHIR is `ttp_proto::patient`. Of the requested elements it holds those the record has: the
//! IG's `$providePatientData` carries them "soweit bekannt" (as far as known). A requested
//! element the record lacks is left out and named in the audit trail
//! ([`MissingElementsPolicy::SendKnown`], the default); with
//! [`MissingElementsPolicy::Hold`] the task waits for a person instead.
//!
//! Before any of that, the site's release policy (`[dispatch] release_elements`) takes out
//! every requested element the site does not let leave: it is never put in the Patient, and
//! it is named (as withheld by policy, apart from the elements the record lacks) in the audit
//! entry and `status`. When the policy withholds *every* requested element the task needs a
//! person ([`Attention::ReleaseWithheld`]) instead of an empty Patient; ARCHITECTURE.md
//! ("Release policy") says why.
//!
//! A task may name its record by pseudonym, by Bloom filter, or by both (the IG does not
//! forbid both). With both, the two must not point to different records: that is a
//! contradiction a person has to clear up, never a guess.

use super::{Effect, Outcome, effect_of_error};
use crate::client::TtpClient;
use crate::domain::{Attention, LocalRecord};
use ttp_proto::{ElementRequest, IdatElement};

/// What to do when a task asks for elements the record does not hold (`[dispatch]
/// missing_elements`).
pub use crate::config::MissingElements as MissingElementsPolicy;

/// Which elements may leave the site at all (`[dispatch] release_elements`).
pub use crate::config::ReleaseElements;

/// Which local record a task's subject names.
#[derive(Debug)]
pub enum Lookup {
    Found(LocalRecord),
    NotFound,
    /// Pseudonym and filter of one task name two different local records.
    Contradiction,
}

/// Decides, from what the pseudonym and the filter each found, which record the task is about.
/// A part that finds no record does not contradict the other: a task may carry a pseudonym
/// the site has not been told yet (a clearing still running) next to the filter it knows.
pub fn resolve_subject(
    by_pseudonym: Option<LocalRecord>,
    by_filter: Option<LocalRecord>,
) -> Lookup {
    match (by_pseudonym, by_filter) {
        (Some(p), Some(f)) => {
            // Several local ids may share one filter (the same person registered twice); they
            // are one person, so the pseudonym's record counts as the same if its filter is.
            if p.head.local_id == f.head.local_id || p.head.bloom_filter == f.head.bloom_filter {
                Lookup::Found(p)
            } else {
                Lookup::Contradiction
            }
        }
        (Some(record), None) | (None, Some(record)) => Lookup::Found(record),
        (None, None) => Lookup::NotFound,
    }
}

/// What to send: the Patient, and the requested elements left out of it (why, apart).
#[derive(Debug, PartialEq)]
pub struct Prepared {
    /// The record's local id (for the disclosure log; never sent).
    pub local_id: String,
    pub patient: serde_json::Value,
    /// Requested, allowed, but not held by the record (or not usable).
    pub missing: Vec<IdatElement>,
    /// Requested, but outside the release policy: never sent, whatever the record holds.
    pub withheld: Vec<IdatElement>,
}

impl Prepared {
    /// The element codes the Patient carries: requested, allowed and held.
    pub fn sent(&self) -> Vec<IdatElement> {
        ttp_proto::elements_present(&self.patient)
            .into_iter()
            .collect()
    }
}

/// Decide what to send, without sending: the Patient JSON, or why the task needs a human.
/// Pure, so the data-minimisation rules are testable alone.
///
/// The release policy comes first: an element it withholds is not looked at in the record.
/// When it withholds every requested element, the task needs a person: an empty Patient would
/// tell the fTTP "nothing known" about a patient the site does know, and would close the task
/// for good, while a person can still change the policy or tell the fTTP operator.
pub fn prepare(
    lookup: Lookup,
    elements: &[ElementRequest],
    policy: MissingElementsPolicy,
    release: &ReleaseElements,
) -> Result<Prepared, Attention> {
    let record = match lookup {
        Lookup::Found(record) => record,
        Lookup::NotFound => return Err(Attention::UnknownRecord),
        Lookup::Contradiction => return Err(Attention::SubjectMismatch),
    };
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
    let requested: std::collections::BTreeSet<IdatElement> = elements
        .iter()
        .filter_map(|e| match e {
            ElementRequest::Known(el) => Some(*el),
            ElementRequest::Unknown(_) => None,
        })
        .collect();
    let (allowed, withheld): (Vec<IdatElement>, Vec<IdatElement>) =
        requested.into_iter().partition(|e| release.allows(*e));
    if allowed.is_empty() && !withheld.is_empty() {
        return Err(Attention::ReleaseWithheld(withheld));
    }
    let idat = record.idat.ok_or(Attention::IdatPurged)?;
    let known = ttp_proto::build_known_patient(&idat.0, &allowed);
    if !known.missing.is_empty() && policy == MissingElementsPolicy::Hold {
        return Err(Attention::MissingElements(known.missing));
    }
    Ok(Prepared {
        local_id: record.head.local_id,
        patient: known.patient,
        missing: known.missing,
        withheld,
    })
}

/// The audit entry that says which requested elements an answer went without, and why: the
/// record does not hold them, or the release policy withholds them. Names the task and
/// element codes only, never a value.
pub fn missing_elements_entry(
    task_key: &str,
    missing: &[IdatElement],
    withheld: &[IdatElement],
    at: chrono::DateTime<chrono::Utc>,
) -> crate::store::AuditEntry {
    let codes = |els: &[IdatElement]| els.iter().map(|e| e.code()).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !withheld.is_empty() {
        parts.push(format!(
            "withheld by the release policy ([dispatch] release_elements): {}",
            codes(withheld)
        ));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "the record does not hold the requested element(s) {}",
            codes(missing)
        ));
    }
    crate::store::AuditEntry {
        at,
        actor: "ttp-agent".to_owned(),
        action: MISSING_ELEMENTS_ACTION.to_owned(),
        subject: task_key.to_owned(),
        detail: format!("answered as far as known; {}", parts.join("; ")),
    }
}

pub use crate::store::MISSING_ELEMENTS_ACTION;

/// Sends what [`prepare`] decided (the dispatcher looked the record up by the task's subject
/// and prepared the answer before it wrote the task's intent).
pub async fn handle(client: &TtpClient, task_id: &str, prepared: Prepared) -> Outcome {
    let Prepared {
        patient,
        missing,
        withheld,
        ..
    } = prepared;
    match client.provide_patient_data(task_id, patient).await {
        Ok(()) if missing.is_empty() && withheld.is_empty() => Outcome::effect(Effect::Done),
        Ok(()) => Outcome::effect(Effect::DoneWithout { missing, withheld }),
        Err(e) => Outcome::effect(effect_of_error(&e, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Idat, RecordState};
    use IdatElement::*;

    fn record(local_id: &str, filter: u8, idat: &[(IdatElement, &str)]) -> LocalRecord {
        let mut head = crate::testkit::head(
            local_id,
            vec![filter; 8],
            RecordState::Pseudonymised,
            chrono::DateTime::UNIX_EPOCH,
        );
        head.pseudonym = Some("psn".into());
        LocalRecord {
            head,
            idat: Some(Idat(
                idat.iter().map(|(e, v)| (*e, (*v).to_owned())).collect(),
            )),
        }
    }

    fn asks(elements: &[IdatElement]) -> Vec<ElementRequest> {
        elements.iter().map(|e| ElementRequest::Known(*e)).collect()
    }

    #[test]
    fn pseudonym_and_filter_must_name_the_same_record() {
        let a = record("a", 1, &[]);
        let a_again = record("a2", 1, &[]);
        let b = record("b", 2, &[]);
        assert!(matches!(
            resolve_subject(Some(a.clone()), Some(a.clone())),
            Lookup::Found(r) if r.head.local_id == "a"
        ));
        assert!(matches!(
            resolve_subject(Some(a.clone()), Some(a_again)),
            Lookup::Found(_)
        ));
        assert!(matches!(
            resolve_subject(Some(a.clone()), Some(b.clone())),
            Lookup::Contradiction
        ));
        assert!(matches!(
            resolve_subject(None, Some(b)),
            Lookup::Found(r) if r.head.local_id == "b"
        ));
        assert!(matches!(resolve_subject(None, None), Lookup::NotFound));
    }

    #[test]
    fn send_known_answers_with_the_held_elements_and_names_the_rest() {
        let rec = record("a", 1, &[(Given, "Max"), (Family, "Muster")]);
        let prepared = prepare(
            Lookup::Found(rec),
            &asks(&[Given, Degree, Birthplace]),
            MissingElementsPolicy::SendKnown,
            &ReleaseElements::default(),
        )
        .unwrap();
        assert_eq!(prepared.missing, vec![Birthplace, Degree]);
        assert_eq!(
            ttp_proto::elements_present(&prepared.patient),
            [Given].into_iter().collect()
        );
    }

    #[test]
    fn hold_keeps_the_old_behaviour_and_contradictions_need_a_person() {
        let rec = record("a", 1, &[(Given, "Max")]);
        assert_eq!(
            prepare(
                Lookup::Found(rec.clone()),
                &asks(&[Given, Degree]),
                MissingElementsPolicy::Hold,
                &ReleaseElements::default(),
            ),
            Err(Attention::MissingElements(vec![Degree]))
        );
        assert!(
            prepare(
                Lookup::Found(rec),
                &asks(&[Given]),
                MissingElementsPolicy::Hold,
                &ReleaseElements::default(),
            )
            .is_ok()
        );
        assert_eq!(
            prepare(
                Lookup::Contradiction,
                &asks(&[Given]),
                MissingElementsPolicy::SendKnown,
                &ReleaseElements::default(),
            ),
            Err(Attention::SubjectMismatch)
        );
        assert_eq!(
            prepare(
                Lookup::NotFound,
                &asks(&[Given]),
                MissingElementsPolicy::SendKnown,
                &ReleaseElements::default(),
            ),
            Err(Attention::UnknownRecord)
        );
    }

    #[test]
    fn the_audit_entry_names_codes_not_values() {
        let entry = missing_elements_entry(
            "send_idat/t-1",
            &[Birthplace, Degree],
            &[],
            chrono::Utc::now(),
        );
        assert_eq!(entry.action, MISSING_ELEMENTS_ACTION);
        assert_eq!(entry.subject, "send_idat/t-1");
        assert!(entry.detail.ends_with("birthplace, degree"), "{entry:?}");
        let both = missing_elements_entry(
            "send_idat/t-1",
            &[Degree],
            &[Given, Birthdate],
            chrono::Utc::now(),
        );
        assert_eq!(
            both.detail,
            "answered as far as known; withheld by the release policy ([dispatch] release_elements): given, birthdate; the record does not hold the requested element(s) degree"
        );
    }

    #[test]
    fn an_element_outside_the_release_policy_is_never_sent_even_when_held() {
        let rec = record(
            "a",
            1,
            &[
                (Given, "Max"),
                (Family, "Muster"),
                (Birthdate, "1970-01-02"),
            ],
        );
        let release = ReleaseElements::only([Family, Birthdate, Degree]);
        let prepared = prepare(
            Lookup::Found(rec),
            &asks(&[Given, Family, Degree, Given]),
            MissingElementsPolicy::SendKnown,
            &release,
        )
        .unwrap();
        assert_eq!(prepared.withheld, vec![Given], "named once, as withheld");
        assert_eq!(prepared.missing, vec![Degree], "allowed but not held");
        assert_eq!(prepared.sent(), vec![Family]);
        assert_eq!(prepared.local_id, "a");
        assert_eq!(
            ttp_proto::elements_present(&prepared.patient),
            [Family].into_iter().collect()
        );
    }

    #[test]
    fn hold_counts_only_allowed_elements_as_missing() {
        let rec = record("a", 1, &[(Given, "Max")]);
        // Degree is withheld, not missing: holding for a person would not help.
        let prepared = prepare(
            Lookup::Found(rec.clone()),
            &asks(&[Given, Degree]),
            MissingElementsPolicy::Hold,
            &ReleaseElements::only([Given]),
        )
        .unwrap();
        assert_eq!(
            (prepared.missing, prepared.withheld),
            (vec![], vec![Degree])
        );
        assert_eq!(
            prepare(
                Lookup::Found(rec),
                &asks(&[Given, Family]),
                MissingElementsPolicy::Hold,
                &ReleaseElements::only([Given, Family]),
            ),
            Err(Attention::MissingElements(vec![Family]))
        );
    }

    #[test]
    fn when_the_policy_withholds_every_requested_element_a_person_decides() {
        let rec = record("a", 1, &[(Given, "Max"), (Birthplace, "Greifswald")]);
        let release = ReleaseElements::only([Family]);
        assert_eq!(
            prepare(
                Lookup::Found(rec.clone()),
                &asks(&[Birthplace, Given]),
                MissingElementsPolicy::SendKnown,
                &release,
            ),
            Err(Attention::ReleaseWithheld(vec![Given, Birthplace]))
        );
        // Even without IDAT: the policy is decided first, the record not opened.
        let purged = LocalRecord { idat: None, ..rec };
        assert_eq!(
            prepare(
                Lookup::Found(purged),
                &asks(&[Given]),
                MissingElementsPolicy::SendKnown,
                &release,
            ),
            Err(Attention::ReleaseWithheld(vec![Given]))
        );
    }
}
