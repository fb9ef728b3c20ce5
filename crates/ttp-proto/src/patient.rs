//! The `Patient` of `$providePatientData`: exactly the IDAT elements a `send_idat` task asks
//! for, shaped as the dispatcher's profile
//! `https://ths-greifswald.de/fhir/StructureDefinition/dispatcher/Patient/Idat` expects.
//!
//! Data minimisation is the point of this module: [`build_known_patient`] writes the requested
//! elements and nothing else (no `identifier`, `telecom`, `contact` or `link`, which the profile
//! forbids anyway, and no element the task did not name even if the site has it). Of the
//! requested elements it writes those the record holds: the IG's `$providePatientData` carries
//! them "soweit bekannt" (as far as known), and it names the ones left out.
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
//! | `birthdate` | `birthDate` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`, as precise as the site knows it) |
//! | `gender` | `gender` (`male`, `female`, `other`, `unknown`); German `d`/`divers` and `x`/`unbestimmt` are `other` with `_gender` extension `http://fhir.de/StructureDefinition/gender-amtlich-de` (`D`, `X` of `http://fhir.de/CodeSystem/gender-amtlich-de`) |
//! | `address-line`, `-city`, `-postalcode` | one `address` with `line[0]`, `city`, `postalCode` |
//! | `birthplace` | extension `patient-birthPlace`, `valueAddress.city` |
//! | `language` | `communication[0].language.coding` (`urn:ietf:bcp:47`, a code of the R4 `languages` value set), `preferred: true` |
//! | `nationality` | extension `patient-nationality`, sub-extension `code` (ISO 3166-1 alpha-2, upper-cased) |
//! | `maritalstatus` | `maritalStatus.coding` (v3-MaritalStatus; `UNK` from v3-NullFlavor) and the required `text` |
//!
//! When both `prefix` and `degree` are requested the name has two prefixes, the plain one
//! first ("Herr", then "Dr. med."); FHIR JSON keeps a primitive array's extensions in a
//! parallel `_prefix` array, so that array has `null` where a prefix has no qualifier.
//!
//! Values are parsed by [`crate::value::parse_value`] (the same parser `submit` validates
//! with): strings are trimmed and otherwise sent as the site holds them, coded elements in
//! their canonical form.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json, json};

use crate::IdatElement;
pub use crate::value::InvalidValue;
use crate::value::{GENDER_AMTLICH_SYSTEM, GENDER_AMTLICH_URL, IdatValue, parse_value};

pub const PATIENT_PROFILE: &str =
    "https://ths-greifswald.de/fhir/StructureDefinition/dispatcher/Patient/Idat";
pub const BIRTH_PLACE_URL: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
pub const NATIONALITY_URL: &str = "http://hl7.org/fhir/StructureDefinition/patient-nationality";
pub const EN_QUALIFIER_URL: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier";
pub const BCP47_SYSTEM: &str = "urn:ietf:bcp:47";
pub const ISO3166_SYSTEM: &str = "urn:iso:std:iso:3166";
pub const MARITAL_STATUS_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
pub const NULL_FLAVOR_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";

/// Patient elements the profile forbids; [`build_patient`] never writes them.
pub const FORBIDDEN_ELEMENTS: [&str; 4] = ["identifier", "telecom", "contact", "link"];

/// Requested elements the site cannot send: absent from the record, empty, or not valid for
/// their FHIR type (see [`crate::value::parse_value`] for why a value is refused).
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

/// The form in which `value` is sent for `element`, or why it cannot be (the canonical text
/// of [`crate::value::parse_value`]).
pub fn normalize_value(element: IdatElement, value: &str) -> Result<String, InvalidValue> {
    crate::value::canonical_value(element, value)
}

/// A Patient "as far as known": the requested elements the record holds, and the requested
/// ones it lacks (absent, or a stored value that is not valid for FHIR), in element order.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownPatient {
    pub patient: Json,
    pub missing: Vec<IdatElement>,
}

/// Builds the `Patient` holding exactly the `requested` elements (duplicates are harmless).
/// Fails with every requested element that has no usable value, so one answer to the fTTP
/// operator names them all. For the IG's "as far as known" answer see [`build_known_patient`].
pub fn build_patient(
    values: &BTreeMap<IdatElement, String>,
    requested: &[IdatElement],
) -> Result<Json, MissingElements> {
    let known = build_known_patient(values, requested);
    if known.missing.is_empty() {
        Ok(known.patient)
    } else {
        Err(MissingElements(known.missing))
    }
}

/// Builds the `Patient` with those `requested` elements the record holds (data minimisation:
/// never one that was not requested) and lists the requested ones it lacks.
pub fn build_known_patient(
    values: &BTreeMap<IdatElement, String>,
    requested: &[IdatElement],
) -> KnownPatient {
    let requested: BTreeSet<IdatElement> = requested.iter().copied().collect();
    let mut parsed: BTreeMap<IdatElement, IdatValue> = BTreeMap::new();
    let mut missing = Vec::new();
    for &element in &requested {
        match values
            .get(&element)
            .map(|value| parse_value(element, value))
        {
            Some(Ok(value)) => {
                parsed.insert(element, value);
            }
            _ => missing.push(element),
        }
    }
    KnownPatient {
        patient: patient_json(&parsed),
        missing,
    }
}

fn patient_json(parsed: &BTreeMap<IdatElement, IdatValue>) -> Json {
    let get = |e: IdatElement| parsed.get(&e).map(IdatValue::canonical);

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

    if let Some(IdatValue::Gender(gender)) = parsed.get(&IdatElement::Gender) {
        patient.insert("gender".into(), json!(gender.fhir_code()));
        // FHIR has only `other` for the German `D` and `X`: the German base profile's
        // extension on the primitive keeps which one it is.
        if let Some(german) = gender.german_other() {
            let (code, display) = german.coding();
            patient.insert(
                "_gender".into(),
                json!({ "extension": [ {
                    "url": GENDER_AMTLICH_URL,
                    "valueCoding": { "system": GENDER_AMTLICH_SYSTEM, "code": code, "display": display }
                } ] }),
            );
        }
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

    if let Some(IdatValue::MaritalStatus(status)) = parsed.get(&IdatElement::Maritalstatus) {
        let system = if status.is_null_flavor() {
            NULL_FLAVOR_SYSTEM
        } else {
            MARITAL_STATUS_SYSTEM
        };
        // The profile requires `text` (1..1); the code's display is the site-neutral text.
        patient.insert(
            "maritalStatus".into(),
            json!({
                "coding": [ { "system": system, "code": status.code(), "display": status.display() } ],
                "text": status.display()
            }),
        );
    }
    if let Some(IdatValue::Language(language)) = parsed.get(&IdatElement::Language) {
        patient.insert(
            "communication".into(),
            json!([ {
                "language": { "coding": [ {
                    "system": BCP47_SYSTEM, "code": language.code(), "display": language.display()
                } ] },
                "preferred": true
            } ]),
        );
    }

    Json::Object(patient)
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
    let german_gender = patient
        .pointer("/_gender/extension")
        .and_then(Json::as_array)
        .and_then(|extensions| {
            extensions
                .iter()
                .find(|e| e.get("url").and_then(Json::as_str) == Some(GENDER_AMTLICH_URL))
        })
        .and_then(|e| e.pointer("/valueCoding/code"))
        .and_then(Json::as_str)
        .and_then(|code| match code {
            "D" => Some("divers"),
            "X" => Some("unbestimmt"),
            _ => None,
        });
    put(
        IdatElement::Gender,
        german_gender.or_else(|| patient.get("gender").and_then(Json::as_str)),
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
