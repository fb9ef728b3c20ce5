//! Checks a `$providePatientData` Patient against the IG's Idat profile and the task.
//!
//! Data minimisation is the point: a site must send exactly the elements a `send_idat` task
//! asked for, mapped as the profile's comment prescribes, and nothing else. The checker works
//! out which element codes a Patient *carries* and compares that set with the requested one.
//! Every field that maps to no element is reported, whether the profile forbids it explicitly
//! (`identifier`, `telecom`, ...) or simply has no use for it (`id`, `text`, `name.text`).
//!
//! Messages name paths and element codes, never values: the values are (synthetic) IDAT.

use std::collections::BTreeSet;

use serde_json::Value;

pub const IDAT_PROFILE: &str =
    "https://ths-greifswald.de/fhir/StructureDefinition/dispatcher/Patient/Idat";
const BIRTH_PLACE: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
const NATIONALITY: &str = "http://hl7.org/fhir/StructureDefinition/patient-nationality";
const EN_QUALIFIER: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier";

/// Patient fields the profile sets to `max = 0`.
const FORBIDDEN: [&str; 12] = [
    "identifier",
    "active",
    "telecom",
    "deceasedBoolean",
    "deceasedDateTime",
    "multipleBirthBoolean",
    "multipleBirthInteger",
    "photo",
    "contact",
    "generalPractitioner",
    "managingOrganization",
    "link",
];

/// Which element codes `patient` carries, and what is wrong with it.
#[derive(Debug, Default)]
struct Findings {
    present: BTreeSet<&'static str>,
    problems: Vec<String>,
}

impl Findings {
    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }
}

/// Every way `patient` departs from what the task `requested`; empty means acceptable.
pub(crate) fn check(patient: &Value, requested: &[String], allow_missing: bool) -> Vec<String> {
    let mut findings = Findings::default();
    let Some(object) = patient.as_object() else {
        return vec!["the `patient` parameter's resource is not a JSON object".into()];
    };
    if object.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return vec!["the `patient` parameter's resource is not a Patient".into()];
    }
    let profiles = object
        .get("meta")
        .and_then(|meta| meta.get("profile"))
        .and_then(Value::as_array);
    if !profiles.is_some_and(|p| p.iter().any(|p| p.as_str() == Some(IDAT_PROFILE))) {
        findings.problem(format!("Patient.meta.profile does not name {IDAT_PROFILE}"));
    }

    for (key, value) in object {
        match key.as_str() {
            "resourceType" | "meta" => {}
            "name" => each(value, "Patient.name", &mut findings, check_name),
            "address" => each(value, "Patient.address", &mut findings, check_address),
            "communication" => each(
                value,
                "Patient.communication",
                &mut findings,
                check_communication,
            ),
            "extension" => each(value, "Patient.extension", &mut findings, check_extension),
            "gender" => {
                if matches!(
                    value.as_str(),
                    Some("male" | "female" | "other" | "unknown")
                ) {
                    findings.present.insert("gender");
                } else {
                    findings.problem("Patient.gender is not one of male, female, other, unknown");
                }
            }
            "birthDate" => {
                if value.as_str().is_some_and(is_fhir_date) {
                    findings.present.insert("birthdate");
                } else {
                    findings.problem(
                        "Patient.birthDate is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
                    );
                }
            }
            "maritalStatus" => {
                if codeable_concept_has_content(value) {
                    findings.present.insert("maritalstatus");
                } else {
                    findings.problem("Patient.maritalStatus has neither coding.code nor text");
                }
            }
            other if FORBIDDEN.contains(&other) => {
                findings.problem(format!("Patient.{other} is forbidden by the Idat profile"));
            }
            other => findings.problem(format!(
                "Patient.{other} carries no requested element (data minimisation)"
            )),
        }
    }

    for code in &findings.present {
        if !requested.iter().any(|r| r == code) {
            findings.problems.push(format!(
                "element `{code}` was sent but not requested (data minimisation)"
            ));
        }
    }
    if !allow_missing {
        for code in requested {
            if !findings.present.contains(code.as_str()) {
                findings
                    .problems
                    .push(format!("requested element `{code}` is missing"));
            }
        }
    }
    findings.problems
}

/// Runs `check_one` on every entry of a FHIR array field (which must be a non-empty array).
fn each(
    value: &Value,
    path: &str,
    findings: &mut Findings,
    check_one: fn(&Value, &str, &mut Findings),
) {
    match value.as_array() {
        Some(items) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                check_one(item, &format!("{path}[{index}]"), findings);
            }
        }
        _ => findings.problem(format!("{path} is not a non-empty array")),
    }
}

fn non_empty_string(value: &Value) -> bool {
    value.as_str().is_some_and(|s| !s.trim().is_empty())
}

fn non_empty_strings(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| !items.is_empty() && items.iter().all(non_empty_string))
}

fn is_fhir_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    match bytes.len() {
        4 => digits(0..4),
        7 => digits(0..4) && bytes[4] == b'-' && digits(5..7),
        10 => {
            digits(0..4)
                && bytes[4] == b'-'
                && digits(5..7)
                && bytes[7] == b'-'
                && digits(8..10)
                && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
        }
        _ => false,
    }
}

fn codeable_concept_has_content(value: &Value) -> bool {
    let coded = value
        .get("coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings
                .iter()
                .any(|coding| coding.get("code").is_some_and(non_empty_string))
        });
    coded || value.get("text").is_some_and(non_empty_string)
}

fn check_name(name: &Value, path: &str, findings: &mut Findings) {
    let Some(object) = name.as_object() else {
        findings.problem(format!("{path} is not an object"));
        return;
    };
    let maiden = object.get("use").and_then(Value::as_str) == Some("maiden");
    for (key, value) in object {
        match (key.as_str(), maiden) {
            ("use", _) => {}
            ("family", _) if !non_empty_string(value) => {
                findings.problem(format!("{path}.family is empty or not a string"));
            }
            ("family", true) => {
                findings.present.insert("maidenname");
            }
            ("family", false) => {
                findings.present.insert("family");
            }
            ("given", false) => {
                if non_empty_strings(value) {
                    findings.present.insert("given");
                } else {
                    findings.problem(format!("{path}.given is not a list of non-empty strings"));
                }
            }
            ("prefix", false) => check_prefixes(object, path, findings),
            ("_prefix", false) => {
                if object.get("prefix").is_none() {
                    findings.problem(format!("{path}._prefix has no matching prefix"));
                }
            }
            ("suffix", false) => {
                if non_empty_strings(value) {
                    findings.present.insert("suffix");
                } else {
                    findings.problem(format!("{path}.suffix is not a list of non-empty strings"));
                }
            }
            ("text" | "period", _) => {
                findings.problem(format!("{path}.{key} is forbidden by the Idat profile"));
            }
            (other, true) => findings.problem(format!(
                "{path}.{other} in a maiden name (use = maiden carries only family)"
            )),
            (other, false) => findings.problem(format!(
                "{path}.{other} carries no requested element (data minimisation)"
            )),
        }
    }
}

/// `prefix[i]` is a degree (`degree`) when `_prefix[i]` carries the EN qualifier `AC`, an
/// ordinary prefix (`prefix`) otherwise.
fn check_prefixes(name: &serde_json::Map<String, Value>, path: &str, findings: &mut Findings) {
    let Some(prefixes) = name
        .get("prefix")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
    else {
        findings.problem(format!("{path}.prefix is not a non-empty array"));
        return;
    };
    let qualifiers = name.get("_prefix").and_then(Value::as_array);
    for (index, prefix) in prefixes.iter().enumerate() {
        if !non_empty_string(prefix) {
            findings.problem(format!("{path}.prefix[{index}] is empty or not a string"));
            continue;
        }
        let academic = qualifiers
            .and_then(|q| q.get(index))
            .and_then(|q| q.get("extension"))
            .and_then(Value::as_array)
            .is_some_and(|extensions| {
                extensions.iter().any(|e| {
                    e.get("url").and_then(Value::as_str) == Some(EN_QUALIFIER)
                        && e.get("valueCode").and_then(Value::as_str) == Some("AC")
                })
            });
        findings
            .present
            .insert(if academic { "degree" } else { "prefix" });
    }
}

fn check_address(address: &Value, path: &str, findings: &mut Findings) {
    let Some(object) = address.as_object() else {
        findings.problem(format!("{path} is not an object"));
        return;
    };
    for (key, value) in object {
        match key.as_str() {
            "use" | "type" => {}
            "line" if non_empty_strings(value) => {
                findings.present.insert("address-line");
            }
            "city" if non_empty_string(value) => {
                findings.present.insert("address-city");
            }
            "postalCode" if non_empty_string(value) => {
                findings.present.insert("address-postalcode");
            }
            "line" | "city" | "postalCode" => {
                findings.problem(format!("{path}.{key} is empty or has the wrong type"));
            }
            "text" | "district" | "state" | "country" | "period" => {
                findings.problem(format!("{path}.{key} is forbidden by the Idat profile"));
            }
            other => findings.problem(format!(
                "{path}.{other} carries no requested element (data minimisation)"
            )),
        }
    }
}

fn check_communication(communication: &Value, path: &str, findings: &mut Findings) {
    let language = communication.get("language");
    if !language.is_some_and(codeable_concept_has_content) {
        findings.problem(format!("{path}.language has neither coding.code nor text"));
        return;
    }
    if communication.get("preferred").and_then(Value::as_bool) != Some(true) {
        findings.problem(format!(
            "{path}.preferred must be true (the profile fixes it)"
        ));
        return;
    }
    if let Some(extra) = communication.as_object().and_then(|o| {
        o.keys()
            .find(|k| !matches!(k.as_str(), "language" | "preferred"))
    }) {
        findings.problem(format!(
            "{path}.{extra} carries no requested element (data minimisation)"
        ));
    }
    findings.present.insert("language");
}

fn check_extension(extension: &Value, path: &str, findings: &mut Findings) {
    match extension.get("url").and_then(Value::as_str) {
        Some(BIRTH_PLACE) => {
            let Some(address) = extension.get("valueAddress").and_then(Value::as_object) else {
                findings.problem(format!("{path} (birthPlace) has no valueAddress"));
                return;
            };
            if !address.get("city").is_some_and(non_empty_string) {
                findings.problem(format!(
                    "{path} (birthPlace) valueAddress.city is missing or empty"
                ));
            }
            for key in address.keys().filter(|k| k.as_str() != "city") {
                findings.problem(format!(
                    "{path} (birthPlace) valueAddress.{key} is forbidden by the Idat profile"
                ));
            }
            if address.get("city").is_some_and(non_empty_string) {
                findings.present.insert("birthplace");
            }
        }
        Some(NATIONALITY) => {
            // The HL7 extension is complex: the country sits in a sub-extension `code`.
            let code = extension
                .get("extension")
                .and_then(Value::as_array)
                .and_then(|subs| {
                    subs.iter()
                        .find(|s| s.get("url").and_then(Value::as_str) == Some("code"))
                });
            match code.and_then(|c| c.get("valueCodeableConcept")) {
                Some(concept) if codeable_concept_has_content(concept) => {
                    findings.present.insert("nationality");
                }
                _ => findings.problem(format!(
                    "{path} (nationality) has no sub-extension `code` with a valueCodeableConcept"
                )),
            }
        }
        Some(_) => findings.problem(format!(
            "{path} is an extension the Idat profile does not define (data minimisation)"
        )),
        None => findings.problem(format!("{path} has no url")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn example_patient() -> Value {
        let request: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/providePatientData-request.json"
        ))
        .expect("fixture");
        request["parameter"][2]["resource"].clone()
    }

    #[test]
    fn the_ig_example_carries_exactly_the_example_tasks_elements() {
        let requested = codes(&[
            "given",
            "family",
            "birthdate",
            "gender",
            "birthplace",
            "degree",
        ]);
        assert_eq!(
            check(&example_patient(), &requested, false),
            Vec::<String>::new()
        );
    }

    #[test]
    fn extra_and_missing_elements_are_reported_by_code() {
        let problems = check(
            &example_patient(),
            &codes(&["given", "family", "birthdate", "gender", "address-city"]),
            false,
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`birthplace` was sent but not requested"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`degree` was sent but not requested"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`address-city` is missing"))
        );
        assert_eq!(problems.len(), 3, "{problems:?}");

        let lenient = check(
            &example_patient(),
            &codes(&[
                "given",
                "family",
                "birthdate",
                "gender",
                "birthplace",
                "degree",
                "suffix",
            ]),
            true,
        );
        assert!(lenient.is_empty(), "{lenient:?}");
    }

    #[test]
    fn forbidden_and_unmapped_fields_are_reported_without_values() {
        let mut patient = example_patient();
        patient["identifier"] = json!([{ "value": "LOCAL-4711" }]);
        patient["telecom"] = json!([{ "system": "phone", "value": "0123" }]);
        patient["id"] = json!("local-4711");
        patient["name"][0]["text"] = json!("Martin Mustermann");
        let requested = codes(&[
            "given",
            "family",
            "birthdate",
            "gender",
            "birthplace",
            "degree",
        ]);
        let problems = check(&patient, &requested, false);
        assert!(
            problems
                .iter()
                .any(|p| p == "Patient.identifier is forbidden by the Idat profile")
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "Patient.telecom is forbidden by the Idat profile")
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("Patient.id carries no requested element"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "Patient.name[0].text is forbidden by the Idat profile")
        );
        let all = problems.join("\n");
        for value in ["4711", "0123", "Martin", "Mustermann"] {
            assert!(!all.contains(value), "a value leaked into: {all}");
        }
    }

    #[test]
    fn wrong_profile_and_wrong_resource_are_reported() {
        let mut patient = example_patient();
        patient["meta"]["profile"] = json!(["http://hl7.org/fhir/StructureDefinition/Patient"]);
        let requested = codes(&[
            "given",
            "family",
            "birthdate",
            "gender",
            "birthplace",
            "degree",
        ]);
        let problems = check(&patient, &requested, false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("meta.profile"));
        assert_eq!(
            check(&json!({"resourceType": "Person"}), &requested, false).len(),
            1
        );
    }

    #[test]
    fn maps_every_element_code_as_the_profile_says() {
        let patient = json!({
            "resourceType": "Patient",
            "meta": { "profile": [IDAT_PROFILE] },
            "extension": [
                { "url": BIRTH_PLACE, "valueAddress": { "city": "Beispielstadt" } },
                { "url": NATIONALITY, "extension": [ { "url": "code", "valueCodeableConcept": {
                    "coding": [ { "system": "urn:iso:std:iso:3166", "code": "DE" } ] } } ] }
            ],
            "name": [
                { "use": "official", "family": "Muster", "given": ["Erika"],
                  "prefix": ["Frau", "Dr."],
                  "_prefix": [ null, { "extension": [ { "url": EN_QUALIFIER, "valueCode": "AC" } ] } ],
                  "suffix": ["MBA"] },
                { "use": "maiden", "family": "Beispiel" }
            ],
            "gender": "female",
            "birthDate": "1970-01-31",
            "address": [ { "line": ["Teststr. 1"], "city": "Teststadt", "postalCode": "12345" } ],
            "communication": [ { "language": { "coding": [ { "system": "urn:ietf:bcp:47", "code": "de" } ] }, "preferred": true } ],
            "maritalStatus": { "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M" } ] }
        });
        let all = codes(&crate::config::KNOWN_ELEMENTS);
        assert_eq!(check(&patient, &all, false), Vec::<String>::new());
    }

    #[test]
    fn malformed_values_do_not_count_as_present() {
        let patient = json!({
            "resourceType": "Patient",
            "meta": { "profile": [IDAT_PROFILE] },
            "name": [ { "family": "", "given": [] } ],
            "birthDate": "31.01.1970",
            "gender": "M"
        });
        let requested = codes(&["given", "family", "birthdate", "gender"]);
        let problems = check(&patient, &requested, false);
        for code in ["given", "family", "birthdate", "gender"] {
            assert!(
                problems
                    .iter()
                    .any(|p| p == &format!("requested element `{code}` is missing")),
                "{code}: {problems:?}"
            );
        }
        assert!(is_fhir_date("1970") && is_fhir_date("1970-01") && !is_fhir_date("1970-02-30"));
    }
}
