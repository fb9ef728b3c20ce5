//! Request builders and the `$requestPsnFromBfWorkflow` response parser.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::{Value as Json, json};
use ttp_proto::parameters::Value;
use ttp_proto::{
    BloomFilter, IdatElement, Parameters, ProtoError, PsnError, PsnResult, build_patient,
    parse_psn_response, provide_patient_data, request_psn_from_bf, request_tasks,
};

fn bytes_json(p: &Parameters) -> Json {
    serde_json::from_slice(&p.to_json_bytes()).unwrap()
}

#[test]
fn request_tasks_matches_the_example() {
    let body = request_tasks("mii", "eyematics");
    assert_eq!(bytes_json(&body), example_json("requestTasks-request.json"));
}

#[test]
fn request_psn_from_bf_matches_the_example() {
    let body = request_psn_from_bf("mii", "dic_muenster", &[BloomFilter(BF_BYTES.to_vec())]);
    assert_eq!(
        bytes_json(&body),
        example_json("requestPsnFromBfWorkflow-request.json")
    );
}

#[test]
fn provide_patient_data_matches_the_example() {
    let values: BTreeMap<IdatElement, String> = [
        (IdatElement::Given, "Martin"),
        (IdatElement::Family, "Mustermann"),
        (IdatElement::Degree, "Dr. med."),
        (IdatElement::Birthdate, "1965-12-03"),
        (IdatElement::Gender, "male"),
        (IdatElement::Birthplace, "Musterhausen"),
    ]
    .into_iter()
    .map(|(e, v)| (e, v.to_owned()))
    .collect();
    let requested: Vec<IdatElement> = values.keys().copied().collect();
    let patient = build_patient(&values, &requested).unwrap();
    let body = provide_patient_data("064ddebf-b20e-468a-97fd-88097bcdbc11", "eyematics", patient);
    assert_eq!(
        bytes_json(&body),
        example_json("providePatientData-request.json")
    );
}

#[test]
fn batches_keep_filters_full_length_and_in_order() {
    let mut rng = Rng::new(7);
    let filters: Vec<BloomFilter> = (0..100)
        .map(|i| {
            let mut bytes = rng.bytes(125);
            // Trailing zero bytes are part of the filter (E-PIX compares full lengths).
            if i % 3 == 0 {
                bytes[120..].fill(0);
            }
            BloomFilter(bytes)
        })
        .collect();
    let body = request_psn_from_bf("study", "site", &filters);
    let parsed = Parameters::from_json_bytes(&body.to_json_bytes()).unwrap();
    let names: Vec<&str> = parsed.parameter.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"study"));
    assert_eq!(names.last(), Some(&"target"));
    let back: Vec<BloomFilter> = parsed
        .named("bloomfilter")
        .map(|p| match &p.value {
            Some(Value::Base64Binary(text)) => BloomFilter::from_base64(text).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(back, filters);
}

#[test]
fn the_api_key_goes_in_the_body_but_never_in_debug() {
    let body = request_tasks("mii", "eyematics").with_api_key("k3y-SECRET-value");
    let json = bytes_json(&body);
    assert_eq!(
        json["parameter"][2],
        json!({ "name": "apikey", "valueString": "k3y-SECRET-value" })
    );
    let debug = format!("{body:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(!debug.contains("16"), "{debug}");
    assert!(debug.contains("apikey"));
}

#[test]
fn the_example_psn_response_is_parsed() {
    let response = parse_psn_response(&example("requestPsnFromBfWorkflow-response.json")).unwrap();
    assert_eq!(
        response.pseudonyms,
        vec![PsnResult {
            bloom_filter: BloomFilter(BF_BYTES.to_vec()),
            target: "dic_muenster".into(),
            pseudonym: "dic_1H51T".into(),
        }]
    );
    assert_eq!(
        response.errors,
        vec![PsnError {
            bloom_filter: BloomFilter(b"Anderer Bloomfilter.".to_vec()),
            target: "dic_muenster".into(),
            code: "http://hl7.org/fhir/issue-type#not-found".into(),
        }]
    );
    assert!(response.problems.is_empty());
    let debug = format!("{response:?}");
    assert!(!debug.contains("dic_1H51T"), "{debug}");
}

#[test]
fn psn_responses_without_entries_are_empty() {
    for body in [
        &br#"{"resourceType":"Parameters"}"#[..],
        br#"{"resourceType":"Parameters","parameter":[]}"#,
    ] {
        let response = parse_psn_response(body).unwrap();
        assert!(
            response.pseudonyms.is_empty()
                && response.errors.is_empty()
                && response.problems.is_empty()
        );
    }
}

#[test]
fn psn_error_codes_accept_bare_codes() {
    let entries = json!([
        { "name": "error", "part": [ bf(BF), ident("target", "t"), { "name": "error-code", "valueCoding": { "code": "invalid" } } ] },
        { "name": "error", "part": [ bf(BF), ident("target", "t"), { "name": "error-code", "valueCode": "processing" } ] },
        { "name": "error", "part": [ bf(BF), ident("target", "t"), { "name": "error-code", "valueCoding": { "system": "", "code": "x" } } ] }
    ]);
    let response = parse_psn_response(&body(entries)).unwrap();
    let codes: Vec<&str> = response.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["invalid", "processing", "x"]);
    assert!(response.problems.is_empty());
}

#[test]
fn psn_problems_are_reported_and_the_rest_is_used() {
    let entries = json!([
        { "name": "pseudonym-bf", "part": [ bf(BF), ident("target", "t"), ident("pseudonym", "p1") ] },
        { "name": "pseudonym-bf", "part": [ bf(BF), ident("target", "t") ] },
        { "name": "error", "part": [ bf(BF), ident("target", "t"), { "name": "error-code", "valueCoding": { "system": "s" } } ] },
        { "name": "warning", "valueString": "something new" },
        { "name": "pseudonym-bf", "part": [ bf(OTHER_BF), ident("target", "t"), ident("pseudonym", "p2"), { "name": "since", "valueDate": "2024-01-01" } ] },
        { "name": "pseudonym-bf", "valueString": "a", "valueId": "b" },
        { "valueString": "nameless" },
        { "name": "error", "part": [ bf("***"), ident("target", "t"), { "name": "error-code", "valueInteger": 404 } ] }
    ]);
    let response = parse_psn_response(&body(entries)).unwrap();
    let pseudonyms: Vec<&str> = response
        .pseudonyms
        .iter()
        .map(|p| p.pseudonym.as_str())
        .collect();
    assert_eq!(pseudonyms, ["p1", "p2"]);
    assert!(response.errors.is_empty());
    assert_eq!(
        response.problems,
        vec![
            "parameter 1 (`pseudonym-bf`): part `pseudonym` is missing",
            "parameter 2 (`error`): part `error-code` is a Coding without `code`",
            "parameter 3 (`warning`): unknown parameter, ignored",
            "parameter 4 (`pseudonym-bf`): unknown part `since` ignored",
            "parameter 5 (`pseudonym-bf`): has 2 value[x] keys (valueId, valueString), at most one is allowed",
            "parameter 6: has no `name`",
            "parameter 7 (`error`): part `bloomfilter` is not valid base64 (standard alphabet, with padding); part `error-code` has valueInteger, expected valueCoding",
        ]
    );
    for problem in &response.problems {
        assert!(!problem.contains("p1") && !problem.contains("something new"));
    }
}

#[test]
fn psn_whole_body_errors() {
    assert!(matches!(
        parse_psn_response(b"<html>"),
        Err(ProtoError::NotJson(_))
    ));
    assert!(matches!(
        parse_psn_response(b"[]"),
        Err(ProtoError::Malformed(_))
    ));
    let outcome = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"study unknown"}]}"#;
    assert_eq!(
        parse_psn_response(outcome),
        Err(ProtoError::OperationOutcome(
            "error invalid: study unknown".into()
        ))
    );
    assert_eq!(
        parse_psn_response(br#"{"resourceType":"Bundle"}"#),
        Err(ProtoError::WrongResourceType("Bundle".into()))
    );
}

#[test]
fn an_error_naming_no_filter_is_a_request_error_not_a_problem() {
    let entries = json!([
        { "name": "error", "part": [
            { "name": "all", "valueBoolean": true },
            { "name": "error-code", "valueCoding": {
                "system": "http://hl7.org/fhir/issue-type", "code": "not-found",
                "display": "unknown study\nfoo" } }
        ] },
        { "name": "error", "part": [
            { "name": "error-code", "valueCoding": { "code": "exception" } }
        ] },
        { "name": "error", "part": [ bf(BF), { "name": "error-code", "valueCode": "invalid" } ] }
    ]);
    let response = parse_psn_response(&body(entries)).unwrap();
    assert_eq!(
        response.request_errors,
        vec![
            ttp_proto::RequestError {
                all: true,
                code: Some("http://hl7.org/fhir/issue-type#not-found".into()),
                display: Some("unknown study foo".into()),
            },
            ttp_proto::RequestError {
                all: false,
                code: Some("exception".into()),
                display: None,
            },
        ]
    );
    assert_eq!(
        response.errors.len(),
        1,
        "a filter without target still names a filter"
    );
    assert_eq!(response.errors[0].code, "invalid");
    assert!(response.problems.is_empty(), "{:?}", response.problems);
}
