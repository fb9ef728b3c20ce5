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
/// The German base profile's extension on `Patient.gender` (de.basisprofil) and its
/// CodeSystem (HL7 Deutschland terminologie-basis-de: M, W, D divers, X unbestimmt).
const GENDER_AMTLICH: &str = "http://fhir.de/StructureDefinition/gender-amtlich-de";
const GENDER_AMTLICH_SYSTEM: &str = "http://fhir.de/CodeSystem/gender-amtlich-de";

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

/// Every way `patient` departs from the Idat profile (`input/fsh/profile-Idat.fsh`, IG
/// 2025.2.0) and from what the task `requested`; empty means acceptable. With
/// `allow_missing` a requested element may be absent (the IG's "soweit bekannt").
///
/// This is the one checker of the profile's rules: the simulator judges every
/// `$providePatientData` with it, and the agent's tests use it on the Patients the agent
/// builds. Messages name paths and element codes, never values.
pub fn check_idat_patient(
    patient: &Value,
    requested: &[String],
    allow_missing: bool,
) -> Vec<String> {
    check(patient, requested, allow_missing)
}

pub(crate) fn check(patient: &Value, requested: &[String], allow_missing: bool) -> Vec<String> {
    let mut findings = Findings::default();
    let Some(object) = patient.as_object() else {
        return vec!["the `patient` parameter's resource is not a JSON object".into()];
    };
    if object.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return vec!["the `patient` parameter's resource is not a Patient".into()];
    }
    // The IG's own example carries no `meta.profile`; a Patient that claims profiles must
    // claim this one.
    if let Some(profiles) = object.get("meta").and_then(|meta| meta.get("profile")) {
        let names_it = profiles
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p.as_str() == Some(IDAT_PROFILE)));
        if !names_it {
            findings.problem(format!("Patient.meta.profile does not name {IDAT_PROFILE}"));
        }
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
            "_gender" => check_gender_extension(value, object.get("gender"), &mut findings),
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
                let before = findings.problems.len();
                check_bound_concept(
                    value,
                    "Patient.maritalStatus",
                    &MARITAL_STATUS,
                    true,
                    &mut findings,
                );
                if findings.problems.len() == before {
                    findings.present.insert("maritalstatus");
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
    let Some(language) = communication.get("language") else {
        findings.problem(format!("{path}.language is missing"));
        return;
    };
    let before = findings.problems.len();
    check_bound_concept(
        language,
        &format!("{path}.language"),
        &LANGUAGES,
        false,
        findings,
    );
    if findings.problems.len() != before {
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
                Some(concept) => {
                    let before = findings.problems.len();
                    check_bound_concept(
                        concept,
                        &format!("{path} (nationality) code"),
                        &COUNTRIES,
                        false,
                        findings,
                    );
                    if findings.problems.len() == before {
                        findings.present.insert("nationality");
                    }
                }
                None => findings.problem(format!(
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

/// A required binding, as the profile's CodeableConcepts have it: `coding` 0..1, whose
/// `system` and `code` are both required and from `binding`; `text` 1..1 when
/// `text_required` (maritalStatus), else optional. A concept must say something, and with a
/// required binding that means a coding from the value set.
struct Binding {
    name: &'static str,
    /// `(system, codes)` pairs; codes separated by spaces.
    systems: &'static [(&'static str, &'static str)],
}

/// R4 `marital-status`: v3-MaritalStatus and `UNK` from v3-NullFlavor.
const MARITAL_STATUS: Binding = Binding {
    name: "the R4 marital-status value set",
    systems: &[
        (
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            "A D I L M P S T U W",
        ),
        ("http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "UNK"),
    ],
};

/// R4 `languages` (BCP 47 codes enumerated by the value set). Kept here in its own form
/// rather than taken from the agent's crates: the simulator is the independent reading.
const LANGUAGES: Binding = Binding {
    name: "the R4 languages value set",
    systems: &[(
        "urn:ietf:bcp:47",
        "ar bn cs da de de-AT de-CH de-DE el en en-AU en-CA en-GB en-IN en-NZ en-SG en-US es \
         es-AR es-ES es-UY fi fr fr-BE fr-CH fr-FR fy fy-NL hi hr it it-CH it-IT ja ko nl nl-BE \
         nl-NL no no-NO pa pl pt pt-BR ru ru-RU sr sr-RS sv sv-SE te zh zh-CN zh-HK zh-SG zh-TW",
    )],
};

/// ISO 3166-1 alpha-2, the officially assigned codes.
const COUNTRIES: Binding = Binding {
    name: "ISO 3166-1 alpha-2",
    systems: &[(
        "urn:iso:std:iso:3166",
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO \
         BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ \
         DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP \
         GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG \
         KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML \
         MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE \
         PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL \
         SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM \
         US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW",
    )],
};

fn check_bound_concept(
    concept: &Value,
    path: &str,
    binding: &Binding,
    text_required: bool,
    findings: &mut Findings,
) {
    let Some(object) = concept.as_object() else {
        findings.problem(format!("{path} is not a CodeableConcept"));
        return;
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "coding" | "text") {
            findings.problem(format!("{path}.{key} is not used by the Idat profile"));
        }
    }
    match object.get("text") {
        Some(text) if !non_empty_string(text) => {
            findings.problem(format!("{path}.text is empty or not a string"));
        }
        None if text_required => {
            findings.problem(format!(
                "{path}.text is missing (the Idat profile requires it)"
            ));
        }
        _ => {}
    }
    let codings = object.get("coding").map(|c| c.as_array());
    match codings {
        None => findings.problem(format!(
            "{path} has no coding (the binding to {} is required)",
            binding.name
        )),
        Some(None) => findings.problem(format!("{path}.coding is not an array")),
        Some(Some(codings)) if codings.len() != 1 => findings.problem(format!(
            "{path}.coding has {} entries; the Idat profile allows one",
            codings.len()
        )),
        Some(Some(codings)) => {
            let coding = &codings[0];
            let system = coding.get("system").and_then(Value::as_str);
            let code = coding.get("code").and_then(Value::as_str);
            let (Some(system), Some(code)) = (system, code) else {
                findings.problem(format!(
                    "{path}.coding needs both system and code (the Idat profile requires them)"
                ));
                return;
            };
            let bound = binding.systems.iter().any(|(bound_system, codes)| {
                *bound_system == system && codes.split_whitespace().any(|c| c == code)
            });
            if !bound {
                findings.problem(format!(
                    "{path}.coding is not a code of {} (required binding)",
                    binding.name
                ));
            }
        }
    }
}

/// `_gender`: only the German base profile's `gender-amtlich-de` extension, whose code must
/// agree with `gender` (`D`/`X` only with `other`).
fn check_gender_extension(value: &Value, gender: Option<&Value>, findings: &mut Findings) {
    let path = "Patient._gender";
    let Some(extensions) = value.get("extension").and_then(Value::as_array) else {
        findings.problem(format!("{path} has no extension array"));
        return;
    };
    if value.as_object().is_some_and(|o| o.len() != 1) {
        findings.problem(format!("{path} carries more than its extension"));
    }
    for (index, extension) in extensions.iter().enumerate() {
        if extension.get("url").and_then(Value::as_str) != Some(GENDER_AMTLICH) {
            findings.problem(format!(
                "{path}.extension[{index}] is an extension the Idat profile does not define"
            ));
            continue;
        }
        let coding = extension.get("valueCoding");
        let system = coding.and_then(|c| c.get("system")).and_then(Value::as_str);
        let code = coding.and_then(|c| c.get("code")).and_then(Value::as_str);
        let fits = system == Some(GENDER_AMTLICH_SYSTEM)
            && matches!(
                (code, gender.and_then(Value::as_str)),
                (Some("D" | "X"), Some("other"))
                    | (Some("M"), Some("male"))
                    | (Some("W"), Some("female"))
            );
        if !fits {
            findings.problem(format!(
                "{path}.extension[{index}] (gender-amtlich-de) has no code of \
                 {GENDER_AMTLICH_SYSTEM} that agrees with Patient.gender"
            ));
        }
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
            "maritalStatus": { "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M" } ], "text": "verheiratet" }
        });
        let all = codes(&crate::config::KNOWN_ELEMENTS);
        assert_eq!(check(&patient, &all, false), Vec::<String>::new());
    }

    #[test]
    fn the_profiles_bindings_and_required_texts_are_enforced() {
        let requested = codes(&["maritalstatus", "language", "nationality", "gender"]);
        let patient = |marital: Value, language: Value, nationality: Value| {
            json!({
                "resourceType": "Patient",
                "extension": [ { "url": NATIONALITY, "extension": [ { "url": "code", "valueCodeableConcept": nationality } ] } ],
                "gender": "other",
                "_gender": { "extension": [ { "url": GENDER_AMTLICH, "valueCoding": { "system": GENDER_AMTLICH_SYSTEM, "code": "D", "display": "divers" } } ] },
                "communication": [ { "language": language, "preferred": true } ],
                "maritalStatus": marital
            })
        };
        let good = patient(
            json!({ "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M" } ], "text": "Married" }),
            json!({ "coding": [ { "system": "urn:ietf:bcp:47", "code": "de-DE" } ] }),
            json!({ "coding": [ { "system": "urn:iso:std:iso:3166", "code": "DE" } ] }),
        );
        assert_eq!(check(&good, &requested, false), Vec::<String>::new());

        let bad = patient(
            json!({ "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M" } ] }),
            json!({ "coding": [ { "system": "urn:ietf:bcp:47", "code": "tr" } ] }),
            json!({ "coding": [ { "system": "urn:iso:std:iso:3166", "code": "DEU" } ] }),
        );
        let problems = check(&bad, &requested, true);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("maritalStatus.text is missing")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("R4 languages value set")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("ISO 3166-1 alpha-2")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 3, "{problems:?}");

        let mut wrong_gender = good.clone();
        wrong_gender["gender"] = json!("male");
        let problems = check(&wrong_gender, &requested, false);
        assert!(
            problems.iter().any(|p| p.contains("gender-amtlich-de")),
            "{problems:?}"
        );

        let mut no_system = good;
        no_system["communication"][0]["language"] = json!({ "coding": [ { "code": "de" } ] });
        no_system["communication"][0]["preferred"] = json!(false);
        let problems = check(&no_system, &requested, false);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("needs both system and code")),
            "{problems:?}"
        );
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
