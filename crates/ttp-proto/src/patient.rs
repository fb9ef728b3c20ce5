//! The `Patient` of `$providePatientData`: exactly the IDAT elements a `send_idat` task asks
//! for, shaped as the dispatcher's profile
//! `https://ths-greifswald.de/fhir/StructureDefinition/dispatcher/Patient/Idat` expects.
//!
//! Data minimisation is the point of this module: [`build_patient`] writes the requested
//! elements and nothing else (no `identifier`, `telecom`, `contact` or `link`, which the profile
//! forbids anyway, and no element the task did not name even if the site has it).
//!
//! # Mapping
//!
//! | element | Patient |
//! |---|---|
//! | `given` | `name[official].given` — one entry holding the site's value as it is ("Anna Maria" stays one entry: splitting would guess at what the site's source system meant) |
//! | `family` | `name[official].family` (no `use`, as in the IG example; never `maiden`) |
//! | `prefix` | `name[official].prefix` |
//! | `degree` | `name[official].prefix`, with `_prefix` extension `iso21090-EN-qualifier` = `AC` |
//! | `suffix` | `name[official].suffix` |
//! | `maidenname` | a second `name` with `use: maiden` and `family` |
//! | `birthdate` | `birthDate` (`YYYY-MM-DD`, a real calendar date) |
//! | `gender` | `gender` (`male`, `female`, `other`, `unknown`; case-insensitive in, lower-case out) |
//! | `address-line`, `-city`, `-postalcode` | one `address` with `line[0]`, `city`, `postalCode` |
//! | `birthplace` | extension `patient-birthPlace`, `valueAddress.city` |
//! | `language` | `communication[0].language.coding` (`urn:ietf:bcp:47`), `preferred: true` |
//! | `nationality` | extension `patient-nationality`, sub-extension `code` (ISO 3166 alpha-2/-3, upper-cased) |
//! | `maritalstatus` | `maritalStatus.coding` (v3-MaritalStatus; `UNK` from v3-NullFlavor) |
//!
//! When both `prefix` and `degree` are requested the name has two prefixes, the plain one
//! first ("Herr", then "Dr. med."); FHIR JSON keeps a primitive array's extensions in a
//! parallel `_prefix` array, so that array has `null` where a prefix has no qualifier.
//!
//! Values are trimmed of surrounding whitespace (FHIR strings should not have any) and
//! otherwise sent as the site holds them, except for the coded elements, whose case is
//! normalised as above.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json, json};

use crate::IdatElement;

pub const PATIENT_PROFILE: &str =
    "https://ths-greifswald.de/fhir/StructureDefinition/dispatcher/Patient/Idat";
pub const BIRTH_PLACE_URL: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
pub const NATIONALITY_URL: &str = "http://hl7.org/fhir/StructureDefinition/patient-nationality";
pub const EN_QUALIFIER_URL: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier";
pub const BCP47_SYSTEM: &str = "urn:ietf:bcp:47";
pub const ISO3166_SYSTEM: &str = "urn:iso:std:iso:3166";
pub const MARITAL_STATUS_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
pub const NULL_FLAVOR_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";

/// Codes of the v3-MaritalStatus code system (R4 value set `marital-status` adds `UNK`).
const MARITAL_STATUS_CODES: [&str; 11] = ["A", "C", "D", "I", "L", "M", "P", "S", "T", "U", "W"];

/// Patient elements the profile forbids; [`build_patient`] never writes them.
pub const FORBIDDEN_ELEMENTS: [&str; 4] = ["identifier", "telecom", "contact", "link"];

/// Requested elements the site cannot send: absent from the record, empty, or not valid for
/// their FHIR type (see [`normalize_value`] for why a value is refused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", missing_message(.0))]
pub struct MissingElements(pub Vec<IdatElement>);

fn missing_message(elements: &[IdatElement]) -> String {
    let codes: Vec<&str> = elements.iter().map(|e| e.code()).collect();
    format!(
        "no usable value for requested IDAT element(s) {} (absent, empty or not valid for FHIR)",
        codes.join(", ")
    )
}

/// Why a value cannot be sent for an element. Never carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("the value is empty")]
    Empty,
    #[error("the value contains control characters")]
    ControlCharacters,
    #[error("not a date of the form YYYY-MM-DD")]
    NotADate,
    #[error("not one of male, female, other, unknown")]
    NotAGender,
    #[error("not a BCP 47 language tag (like de or de-DE)")]
    NotALanguageTag,
    #[error("not an ISO 3166 alpha-2 or alpha-3 country code")]
    NotACountryCode,
    #[error("not a v3-MaritalStatus code (A C D I L M P S T U W) or UNK")]
    NotAMaritalStatus,
}

/// The form in which `value` is sent for `element`, or why it cannot be.
pub fn normalize_value(element: IdatElement, value: &str) -> Result<String, InvalidValue> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidValue::Empty);
    }
    // FHIR `string` allows tab, CR and LF among the control characters, nothing else.
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        return Err(InvalidValue::ControlCharacters);
    }
    match element {
        IdatElement::Birthdate => {
            let shape_ok = value.len() == 10
                && value.bytes().enumerate().all(|(i, b)| match i {
                    4 | 7 => b == b'-',
                    _ => b.is_ascii_digit(),
                });
            if shape_ok && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() {
                Ok(value.to_owned())
            } else {
                Err(InvalidValue::NotADate)
            }
        }
        IdatElement::Gender => {
            let lower = value.to_ascii_lowercase();
            match lower.as_str() {
                "male" | "female" | "other" | "unknown" => Ok(lower),
                _ => Err(InvalidValue::NotAGender),
            }
        }
        IdatElement::Language => {
            let well_formed = value.len() <= 35
                && value.split('-').enumerate().all(|(i, subtag)| {
                    (1..=8).contains(&subtag.len())
                        && subtag.bytes().all(|b| b.is_ascii_alphanumeric())
                        && (i > 0 || subtag.bytes().all(|b| b.is_ascii_alphabetic()))
                });
            if well_formed {
                Ok(value.to_owned())
            } else {
                Err(InvalidValue::NotALanguageTag)
            }
        }
        IdatElement::Nationality => {
            if (2..=3).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(value.to_ascii_uppercase())
            } else {
                Err(InvalidValue::NotACountryCode)
            }
        }
        IdatElement::Maritalstatus => {
            let upper = value.to_ascii_uppercase();
            if upper == "UNK" || MARITAL_STATUS_CODES.contains(&upper.as_str()) {
                Ok(upper)
            } else {
                Err(InvalidValue::NotAMaritalStatus)
            }
        }
        IdatElement::Given
        | IdatElement::Family
        | IdatElement::Prefix
        | IdatElement::Suffix
        | IdatElement::AddressLine
        | IdatElement::AddressCity
        | IdatElement::AddressPostalcode
        | IdatElement::Birthplace
        | IdatElement::Maidenname
        | IdatElement::Degree => Ok(value.to_owned()),
    }
}

/// Builds the `Patient` holding exactly the `requested` elements (duplicates are harmless).
/// Fails with every requested element that has no usable value, so one answer to the fTTP
/// operator names them all.
pub fn build_patient(
    values: &BTreeMap<IdatElement, String>,
    requested: &[IdatElement],
) -> Result<Json, MissingElements> {
    let requested: BTreeSet<IdatElement> = requested.iter().copied().collect();
    let mut v: BTreeMap<IdatElement, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for &element in &requested {
        match values
            .get(&element)
            .map(|value| normalize_value(element, value))
        {
            Some(Ok(value)) => {
                v.insert(element, value);
            }
            _ => missing.push(element),
        }
    }
    if !missing.is_empty() {
        return Err(MissingElements(missing));
    }
    let get = |e: IdatElement| v.get(&e).cloned();

    let mut patient = Map::new();
    patient.insert("resourceType".into(), json!("Patient"));
    patient.insert("meta".into(), json!({ "profile": [PATIENT_PROFILE] }));

    let mut extensions = Vec::new();
    if let Some(city) = get(IdatElement::Birthplace) {
        extensions.push(json!({ "url": BIRTH_PLACE_URL, "valueAddress": { "city": city } }));
    }
    if let Some(code) = get(IdatElement::Nationality) {
        extensions.push(json!({
            "url": NATIONALITY_URL,
            "extension": [ {
                "url": "code",
                "valueCodeableConcept": { "coding": [ { "system": ISO3166_SYSTEM, "code": code } ] }
            } ]
        }));
    }
    if !extensions.is_empty() {
        patient.insert("extension".into(), Json::Array(extensions));
    }

    let mut names = Vec::new();
    let mut official = Map::new();
    if let Some(family) = get(IdatElement::Family) {
        official.insert("family".into(), json!(family));
    }
    if let Some(given) = get(IdatElement::Given) {
        official.insert("given".into(), json!([given]));
    }
    let prefixes: Vec<(String, bool)> = [
        (get(IdatElement::Prefix), false),
        (get(IdatElement::Degree), true),
    ]
    .into_iter()
    .filter_map(|(value, degree)| value.map(|v| (v, degree)))
    .collect();
    if !prefixes.is_empty() {
        let texts: Vec<Json> = prefixes.iter().map(|(v, _)| json!(v)).collect();
        official.insert("prefix".into(), Json::Array(texts));
        if prefixes.iter().any(|(_, degree)| *degree) {
            let qualifiers: Vec<Json> = prefixes
                .iter()
                .map(|(_, degree)| {
                    if *degree {
                        json!({ "extension": [ { "url": EN_QUALIFIER_URL, "valueCode": "AC" } ] })
                    } else {
                        Json::Null
                    }
                })
                .collect();
            official.insert("_prefix".into(), Json::Array(qualifiers));
        }
    }
    if let Some(suffix) = get(IdatElement::Suffix) {
        official.insert("suffix".into(), json!([suffix]));
    }
    if !official.is_empty() {
        names.push(Json::Object(official));
    }
    if let Some(maiden) = get(IdatElement::Maidenname) {
        names.push(json!({ "use": "maiden", "family": maiden }));
    }
    if !names.is_empty() {
        patient.insert("name".into(), Json::Array(names));
    }

    if let Some(gender) = get(IdatElement::Gender) {
        patient.insert("gender".into(), json!(gender));
    }
    if let Some(date) = get(IdatElement::Birthdate) {
        patient.insert("birthDate".into(), json!(date));
    }

    let mut address = Map::new();
    if let Some(line) = get(IdatElement::AddressLine) {
        address.insert("line".into(), json!([line]));
    }
    if let Some(city) = get(IdatElement::AddressCity) {
        address.insert("city".into(), json!(city));
    }
    if let Some(postal_code) = get(IdatElement::AddressPostalcode) {
        address.insert("postalCode".into(), json!(postal_code));
    }
    if !address.is_empty() {
        patient.insert("address".into(), json!([address]));
    }

    if let Some(status) = get(IdatElement::Maritalstatus) {
        let system = if status == "UNK" {
            NULL_FLAVOR_SYSTEM
        } else {
            MARITAL_STATUS_SYSTEM
        };
        patient.insert(
            "maritalStatus".into(),
            json!({ "coding": [ { "system": system, "code": status } ] }),
        );
    }
    if let Some(language) = get(IdatElement::Language) {
        patient.insert(
            "communication".into(),
            json!([ {
                "language": { "coding": [ { "system": BCP47_SYSTEM, "code": language } ] },
                "preferred": true
            } ]),
        );
    }

    Ok(Json::Object(patient))
}

/// The IDAT elements a Patient carries (the inverse of [`build_patient`], for checks that an
/// answer holds exactly what was asked for).
pub fn elements_present(patient: &Json) -> BTreeSet<IdatElement> {
    patient_values(patient).into_keys().collect()
}

/// The IDAT values a Patient carries, read back along the mapping of [`build_patient`].
/// Repeated entries (several `given` names) are joined with a space. Shapes outside the
/// mapping are ignored.
pub fn patient_values(patient: &Json) -> BTreeMap<IdatElement, String> {
    let mut out = BTreeMap::new();
    let mut put = |element: IdatElement, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.entry(element)
                .and_modify(|existing: &mut String| {
                    existing.push(' ');
                    existing.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
    };
    let array = |json: Option<&Json>| -> Vec<Json> {
        json.and_then(Json::as_array).cloned().unwrap_or_default()
    };

    for name in array(patient.get("name")) {
        if name.get("use").and_then(Json::as_str) == Some("maiden") {
            put(
                IdatElement::Maidenname,
                name.get("family").and_then(Json::as_str),
            );
            continue;
        }
        put(
            IdatElement::Family,
            name.get("family").and_then(Json::as_str),
        );
        for given in array(name.get("given")) {
            put(IdatElement::Given, given.as_str());
        }
        for suffix in array(name.get("suffix")) {
            put(IdatElement::Suffix, suffix.as_str());
        }
        let qualifiers = array(name.get("_prefix"));
        for (i, prefix) in array(name.get("prefix")).iter().enumerate() {
            let is_degree = qualifiers.get(i).is_some_and(has_academic_qualifier);
            let element = if is_degree {
                IdatElement::Degree
            } else {
                IdatElement::Prefix
            };
            put(element, prefix.as_str());
        }
    }
    put(
        IdatElement::Birthdate,
        patient.get("birthDate").and_then(Json::as_str),
    );
    put(
        IdatElement::Gender,
        patient.get("gender").and_then(Json::as_str),
    );
    for address in array(patient.get("address")) {
        for line in array(address.get("line")) {
            put(IdatElement::AddressLine, line.as_str());
        }
        put(
            IdatElement::AddressCity,
            address.get("city").and_then(Json::as_str),
        );
        put(
            IdatElement::AddressPostalcode,
            address.get("postalCode").and_then(Json::as_str),
        );
    }
    for extension in array(patient.get("extension")) {
        match extension.get("url").and_then(Json::as_str) {
            Some(BIRTH_PLACE_URL) => put(
                IdatElement::Birthplace,
                extension
                    .pointer("/valueAddress/city")
                    .and_then(Json::as_str),
            ),
            Some(NATIONALITY_URL) => {
                for sub in array(extension.get("extension")) {
                    if sub.get("url").and_then(Json::as_str) == Some("code") {
                        put(
                            IdatElement::Nationality,
                            sub.pointer("/valueCodeableConcept/coding/0/code")
                                .and_then(Json::as_str),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for communication in array(patient.get("communication")) {
        put(
            IdatElement::Language,
            communication
                .pointer("/language/coding/0/code")
                .and_then(Json::as_str),
        );
    }
    put(
        IdatElement::Maritalstatus,
        patient
            .pointer("/maritalStatus/coding/0/code")
            .and_then(Json::as_str),
    );
    out
}

/// The elements of `patient` the dispatcher profile forbids.
pub fn forbidden_elements(patient: &Json) -> Vec<&'static str> {
    FORBIDDEN_ELEMENTS
        .into_iter()
        .filter(|key| patient.get(key).is_some())
        .collect()
}

fn has_academic_qualifier(element: &Json) -> bool {
    element
        .get("extension")
        .and_then(Json::as_array)
        .is_some_and(|extensions| {
            extensions.iter().any(|e| {
                e.get("url").and_then(Json::as_str) == Some(EN_QUALIFIER_URL)
                    && e.get("valueCode").and_then(Json::as_str) == Some("AC")
            })
        })
}
