//! The `$providePatientData` Patient: exact mapping, data minimisation, validation, inverse.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use serde_json::{Value as Json, json};
use ttp_proto::IdatElement::{self, *};
use ttp_proto::patient::{
    InvalidValue, PATIENT_PROFILE, forbidden_elements, normalize_value, patient_values,
};
use ttp_proto::{MissingElements, build_patient, elements_present};

/// A synthetic record with every element.
fn full_record() -> BTreeMap<IdatElement, String> {
    [
        (Given, "Erika Maria"),
        (Family, "Mustermann"),
        (Prefix, "Frau"),
        (Suffix, "MdB"),
        (Birthdate, "1964-08-12"),
        (Gender, "female"),
        (AddressLine, "Heidestraße 17"),
        (AddressCity, "Köln"),
        (AddressPostalcode, "51147"),
        (Birthplace, "Berlin"),
        (Maidenname, "Gabler"),
        (Degree, "Dr. rer. nat."),
        (Language, "de-DE"),
        (Nationality, "DE"),
        (Maritalstatus, "M"),
    ]
    .into_iter()
    .map(|(e, v)| (e, v.to_owned()))
    .collect()
}

fn values(pairs: &[(IdatElement, &str)]) -> BTreeMap<IdatElement, String> {
    pairs.iter().map(|(e, v)| (*e, (*v).to_owned())).collect()
}

#[test]
fn the_example_patient_is_reproduced_exactly() {
    let example = example_json("providePatientData-request.json");
    let expected = &example["parameter"][2]["resource"];
    let record = values(&[
        (Given, "Martin"),
        (Family, "Mustermann"),
        (Degree, "Dr. med."),
        (Birthdate, "1965-12-03"),
        (Gender, "male"),
        (Birthplace, "Musterhausen"),
    ]);
    // The elements the example send_idat task asks for, in its order.
    let requested = [Given, Family, Birthdate, Gender, Birthplace, Degree];
    let patient = build_patient(&record, &requested).unwrap();
    assert_eq!(&patient, expected);
    assert_eq!(patient_values(expected), record);
}

#[test]
fn the_full_mapping() {
    let patient = build_patient(&full_record(), &IdatElement::ALL).unwrap();
    let expected = json!({
        "resourceType": "Patient",
        "meta": { "profile": [PATIENT_PROFILE] },
        "extension": [
            { "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": { "city": "Berlin" } },
            { "url": "http://hl7.org/fhir/StructureDefinition/patient-nationality", "extension": [ {
                "url": "code",
                "valueCodeableConcept": { "coding": [ { "system": "urn:iso:std:iso:3166", "code": "DE" } ] } } ] }
        ],
        "name": [
            {
                "family": "Mustermann",
                "given": ["Erika Maria"],
                "prefix": ["Frau", "Dr. rer. nat."],
                "_prefix": [ null, { "extension": [ { "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "AC" } ] } ],
                "suffix": ["MdB"]
            },
            { "use": "maiden", "family": "Gabler" }
        ],
        "gender": "female",
        "birthDate": "1964-08-12",
        "address": [ { "line": ["Heidestraße 17"], "city": "Köln", "postalCode": "51147" } ],
        "maritalStatus": {
            "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M", "display": "Married" } ],
            "text": "Married"
        },
        "communication": [ { "language": { "coding": [ { "system": "urn:ietf:bcp:47", "code": "de-DE", "display": "German (Germany)" } ] }, "preferred": true } ]
    });
    assert_eq!(patient, expected);
    assert_eq!(patient_values(&patient), full_record());
}

#[test]
fn only_requested_elements_are_sent_for_every_single_element_and_pair() {
    let record = full_record();
    for a in IdatElement::ALL {
        for b in IdatElement::ALL {
            let requested = [a, b];
            let patient = build_patient(&record, &requested).unwrap();
            let want: BTreeSet<IdatElement> = requested.into_iter().collect();
            assert_eq!(elements_present(&patient), want, "{a} {b}");
            assert!(forbidden_elements(&patient).is_empty());
            assert_eq!(patient["meta"]["profile"][0], PATIENT_PROFILE);
        }
    }
}

#[test]
fn random_subsets_round_trip_through_the_inverse() {
    let record = full_record();
    let mut rng = Rng::new(2024);
    for _ in 0..500 {
        let mask = rng.next_u64();
        let requested: Vec<IdatElement> = IdatElement::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, e)| e)
            .collect();
        let patient = build_patient(&record, &requested).unwrap();
        let back = patient_values(&patient);
        let want: BTreeMap<IdatElement, String> =
            requested.iter().map(|e| (*e, record[e].clone())).collect();
        assert_eq!(back, want);
        // Serialise and read back: what goes on the wire is what was meant.
        let wire: Json = serde_json::from_str(&patient.to_string()).unwrap();
        assert_eq!(wire, patient);
    }
}

#[test]
fn nothing_requested_gives_a_bare_profiled_patient() {
    let patient = build_patient(&full_record(), &[]).unwrap();
    assert_eq!(
        patient,
        json!({ "resourceType": "Patient", "meta": { "profile": [PATIENT_PROFILE] } })
    );
}

#[test]
fn every_missing_element_is_reported() {
    let record = values(&[(Given, "Max"), (Family, "  "), (Birthdate, "")]);
    let err = build_patient(&record, &[Gender, Given, Family, Birthdate, Nationality]).unwrap_err();
    assert_eq!(
        err,
        MissingElements(vec![Family, Birthdate, Gender, Nationality])
    );
    assert_eq!(
        err.to_string(),
        "no usable value for requested IDAT element(s) family, birthdate, gender, nationality (absent, empty or not valid for FHIR)"
    );
}

#[test]
fn invalid_values_are_refused_with_reasons_and_never_quoted() {
    let cases = [
        (Birthdate, "03.12.1965", InvalidValue::NotADate),
        (Birthdate, "1965-13-03", InvalidValue::NotADate),
        (Birthdate, "1965-02-30", InvalidValue::NotADate),
        (Birthdate, "1965-2-3", InvalidValue::NotADate),
        (Birthdate, "1965-12-03T00:00:00", InvalidValue::NotADate),
        (Birthdate, "19", InvalidValue::NotADate),
        (Birthdate, "1965-13", InvalidValue::NotADate),
        (Gender, "mw", InvalidValue::NotAGender),
        (Gender, "intersex", InvalidValue::NotAGender),
        (Language, "de_DE", InvalidValue::NotALanguage),
        (Language, "German language", InvalidValue::NotALanguage),
        (Language, "1de", InvalidValue::NotALanguage),
        (Language, "zh-Hant-TW", InvalidValue::NotALanguage),
        (Nationality, "Germany", InvalidValue::NotACountryCode),
        (Nationality, "276", InvalidValue::NotACountryCode),
        (Nationality, "DEU", InvalidValue::NotACountryCode),
        (Maritalstatus, "married", InvalidValue::NotAMaritalStatus),
        (Maritalstatus, "C", InvalidValue::NotAMaritalStatus),
        (Family, "Muster\u{0}mann", InvalidValue::ControlCharacters),
        (Given, "\u{7}", InvalidValue::ControlCharacters),
        (AddressCity, "   ", InvalidValue::Empty),
    ];
    for (element, value, reason) in cases {
        assert_eq!(
            normalize_value(element, value),
            Err(reason),
            "{element} {value:?}"
        );
        let err = build_patient(&values(&[(element, value)]), &[element]).unwrap_err();
        assert_eq!(err.0, vec![element]);
        assert!(!err.to_string().contains(value.trim()) || value.trim().is_empty());
    }
}

#[test]
fn coded_values_are_normalised() {
    let cases = [
        (Gender, "Female", "female"),
        (Gender, " UNKNOWN ", "unknown"),
        (Gender, "W", "female"),
        (Gender, "d", "divers"),
        (Gender, "X", "unbestimmt"),
        (Nationality, "de", "DE"),
        (Maritalstatus, "w", "W"),
        (Language, "en", "en"),
        (Language, "zh-tw", "zh-TW"),
        (Family, "  von Musterhausen ", "von Musterhausen"),
        (Birthdate, " 2000-02-29", "2000-02-29"),
        (Birthdate, "1970", "1970"),
        (Birthdate, "1970-05", "1970-05"),
    ];
    for (element, input, output) in cases {
        assert_eq!(
            normalize_value(element, input).as_deref(),
            Ok(output),
            "{element}"
        );
    }
}

#[test]
fn unknown_marital_status_uses_the_null_flavor_system() {
    let patient = build_patient(&values(&[(Maritalstatus, "unk")]), &[Maritalstatus]).unwrap();
    assert_eq!(
        patient["maritalStatus"],
        json!({
            "coding": [ { "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown" } ],
            "text": "unknown"
        })
    );
}

#[test]
fn marital_status_carries_the_required_text() {
    let patient = build_patient(&values(&[(Maritalstatus, "m")]), &[Maritalstatus]).unwrap();
    assert_eq!(patient["maritalStatus"]["text"], json!("Married"));
    assert_eq!(patient["maritalStatus"]["coding"][0]["code"], json!("M"));
}

#[test]
fn german_divers_and_unbestimmt_are_other_with_the_amtlich_extension() {
    for (input, code, display) in [("d", "D", "divers"), ("unbestimmt", "X", "unbestimmt")] {
        let record = values(&[(Gender, input)]);
        let patient = build_patient(&record, &[Gender]).unwrap();
        assert_eq!(patient["gender"], json!("other"));
        assert_eq!(
            patient["_gender"],
            json!({ "extension": [ {
                "url": "http://fhir.de/StructureDefinition/gender-amtlich-de",
                "valueCoding": { "system": "http://fhir.de/CodeSystem/gender-amtlich-de", "code": code, "display": display }
            } ] })
        );
        // Read back, the German value is kept.
        assert_eq!(patient_values(&patient)[&Gender], display);
    }
    for (input, fhir) in [("m", "male"), ("w", "female"), ("unbekannt", "unknown")] {
        let patient = build_patient(&values(&[(Gender, input)]), &[Gender]).unwrap();
        assert_eq!(patient["gender"], json!(fhir));
        assert!(patient.get("_gender").is_none(), "{input}");
    }
}

#[test]
fn partial_birth_dates_are_sent_as_they_are_known() {
    for date in ["1970", "1970-05", "1970-05-31"] {
        let patient = build_patient(&values(&[(Birthdate, date)]), &[Birthdate]).unwrap();
        assert_eq!(patient["birthDate"], json!(date));
    }
}

#[test]
fn as_far_as_known_sends_the_held_elements_and_names_the_missing_ones() {
    let record = values(&[(Given, "Max"), (Family, "Muster"), (Nationality, "DEU")]);
    let known = ttp_proto::build_known_patient(&record, &[Degree, Given, Birthplace, Nationality]);
    assert_eq!(known.missing, vec![Birthplace, Degree, Nationality]);
    assert_eq!(elements_present(&known.patient), BTreeSet::from([Given]));
    assert!(
        known.patient["name"][0].get("family").is_none(),
        "never an unrequested one"
    );
    let nothing = ttp_proto::build_known_patient(&record, &[Degree]);
    assert_eq!(nothing.missing, vec![Degree]);
    assert!(elements_present(&nothing.patient).is_empty());
}

#[test]
fn prefixes_without_degree_carry_no_qualifier_array() {
    let patient = build_patient(&full_record(), &[Prefix]).unwrap();
    assert_eq!(patient["name"], json!([ { "prefix": ["Frau"] } ]));
    let patient = build_patient(&full_record(), &[Degree]).unwrap();
    assert_eq!(patient["name"][0]["prefix"], json!(["Dr. rer. nat."]));
    assert_eq!(patient["name"][0]["_prefix"].as_array().unwrap().len(), 1);
    assert_eq!(elements_present(&patient), BTreeSet::from([Degree]));
}

#[test]
fn maiden_name_is_its_own_name_and_never_the_family_name() {
    let patient = build_patient(&full_record(), &[Maidenname]).unwrap();
    assert_eq!(
        patient["name"],
        json!([ { "use": "maiden", "family": "Gabler" } ])
    );
    let patient = build_patient(&full_record(), &[Family, Maidenname]).unwrap();
    assert_eq!(
        patient["name"],
        json!([ { "family": "Mustermann" }, { "use": "maiden", "family": "Gabler" } ])
    );
    assert_eq!(
        elements_present(&patient),
        BTreeSet::from([Family, Maidenname])
    );
}

#[test]
fn address_parts_share_one_address() {
    let patient = build_patient(&full_record(), &[AddressPostalcode, AddressCity]).unwrap();
    assert_eq!(
        patient["address"],
        json!([ { "city": "Köln", "postalCode": "51147" } ])
    );
}

#[test]
fn a_given_name_with_spaces_stays_one_entry_and_duplicates_are_harmless() {
    let patient = build_patient(&full_record(), &[Given, Given]).unwrap();
    assert_eq!(patient["name"], json!([ { "given": ["Erika Maria"] } ]));
}

#[test]
fn elements_present_reads_other_senders_shapes() {
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [ { "value": "x" } ],
        "name": [ { "use": "official", "given": ["A", "B"], "prefix": ["Prof.", "Dr."],
                    "_prefix": [ { "extension": [ { "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "AC" } ] } ] } ],
        "telecom": [],
        "extension": [ { "url": "urn:other", "valueString": "x" } ]
    });
    assert_eq!(
        elements_present(&patient),
        BTreeSet::from([Given, Degree, Prefix])
    );
    let values = patient_values(&patient);
    assert_eq!(values[&Given], "A B");
    assert_eq!(values[&Degree], "Prof.");
    assert_eq!(values[&Prefix], "Dr.");
    assert_eq!(forbidden_elements(&patient), ["identifier", "telecom"]);
    assert!(elements_present(&json!("not a patient")).is_empty());
    assert!(elements_present(&json!({ "name": "wrong type", "address": 3 })).is_empty());
}
