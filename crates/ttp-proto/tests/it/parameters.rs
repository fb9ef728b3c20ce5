//! The generic `Parameters` codec: faithful round trips, tolerant entry decoding, body errors.

use crate::common::*;
use serde_json::{Value as Json, json};
use ttp_proto::ProtoError;
use ttp_proto::parameters::{Coding, Identifier, Parameter, Parameters, Value, parse_body};

const EXAMPLES: [&str; 5] = [
    "providePatientData-request.json",
    "requestPsnFromBfWorkflow-request.json",
    "requestPsnFromBfWorkflow-response.json",
    "requestTasks-request.json",
    "requestTasks-response.json",
];

#[test]
fn every_example_parses_strictly_and_re_encodes_to_the_same_json() {
    for name in EXAMPLES {
        let parsed =
            Parameters::from_json_bytes(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!parsed.parameter.is_empty(), "{name}");
        assert_eq!(parsed.to_json_value(), example_json(name), "{name}");
        let reparsed = Parameters::from_json_bytes(&parsed.to_json_bytes()).unwrap();
        assert_eq!(reparsed, parsed, "{name}");
    }
}

#[test]
fn example_values_are_typed() {
    let parsed = Parameters::from_json_bytes(&example("requestTasks-response.json")).unwrap();
    let send_idat = parsed.first("send_idat").unwrap();
    let expires = send_idat.parts_named("expires").next().unwrap();
    assert_eq!(
        expires.value,
        Some(Value::Instant("2021-05-28T13:00:00.00+02:00".into()))
    );
    let pseudonym = send_idat.parts_named("pseudonym").next().unwrap();
    match &pseudonym.value {
        Some(Value::Identifier(id)) => {
            assert_eq!(id.system.as_deref(), Some(GPAS));
            assert_eq!(id.value.as_deref(), Some("mii_1244Q2"));
            assert!(id.extra.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(send_idat.parts_named("element").count(), 6);
    let patient = Parameters::from_json_bytes(&example("providePatientData-request.json"))
        .unwrap()
        .first("patient")
        .unwrap()
        .resource
        .clone()
        .unwrap();
    assert_eq!(patient["resourceType"], "Patient");
}

fn every_value_type() -> Parameters {
    let mut identifier = Identifier::new(Some("urn:sys"), "v-1");
    identifier.extra.insert("use".into(), json!("official"));
    let mut coding = Coding::new(Some("urn:codes"), "c");
    coding.display = Some("Display".into());
    coding.extra.insert("version".into(), json!("2"));
    Parameters::new()
        .string("s", "text with ü and \"quotes\"")
        .id("i", "abc-1.2")
        .code("c", "active")
        .uri("u", "urn:uuid:1")
        .value("inst", Value::Instant("2024-01-02T03:04:05.123Z".into()))
        .value("dt", Value::DateTime("2024-01-02".into()))
        .value("d", Value::Date("2024-01-02".into()))
        .boolean("b", false)
        .integer("n", -2_147_483_648)
        .value(
            "dec",
            Value::Decimal(serde_json::Number::from_f64(1.5).unwrap()),
        )
        .base64_binary("bin", b"\x00\x01\xff")
        .value("id", Value::Identifier(identifier))
        .value("cod", Value::Coding(coding))
        .value(
            "q",
            Value::Other("valueQuantity".into(), json!({ "value": 3, "unit": "mg" })),
        )
        .resource("r", json!({ "resourceType": "Patient", "gender": "other" }))
        .part(
            "nested",
            Parameters::new()
                .string("inner", "x")
                .part("deeper", Parameters::new().boolean("flag", true)),
        )
}

#[test]
fn every_value_type_round_trips_through_bytes() {
    let original = every_value_type();
    let bytes = original.to_json_bytes();
    let parsed = Parameters::from_json_bytes(&bytes).unwrap();
    assert_eq!(parsed, original);
    // And through serde, which the store or a caller may use.
    let via_serde: Parameters = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(via_serde, original);
    assert_eq!(
        serde_json::to_value(&original).unwrap(),
        original.to_json_value()
    );
}

#[test]
fn value_keys_match_fhir_names() {
    let json = every_value_type().to_json_value();
    let keys: Vec<String> = json["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p.as_object().unwrap().keys().cloned())
        .filter(|k| k.starts_with("value"))
        .collect();
    for expected in [
        "valueString",
        "valueId",
        "valueCode",
        "valueUri",
        "valueInstant",
        "valueDateTime",
        "valueDate",
        "valueBoolean",
        "valueInteger",
        "valueDecimal",
        "valueBase64Binary",
        "valueIdentifier",
        "valueCoding",
        "valueQuantity",
    ] {
        assert!(keys.iter().any(|k| k == expected), "{expected} in {keys:?}");
    }
    assert_eq!(json["parameter"][10]["valueBase64Binary"], "AAH/");
    assert_eq!(json["parameter"][11]["valueIdentifier"]["use"], "official");
}

#[test]
fn serialises_resource_type_first_and_leaves_out_empty_arrays() {
    let empty = Parameters::new().to_json_bytes();
    assert_eq!(empty, br#"{"resourceType":"Parameters"}"#);
    let one = Parameters::new()
        .with(Parameter::with_parts("p", vec![]))
        .to_json_bytes();
    assert_eq!(
        String::from_utf8(one).unwrap(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"p"}]}"#
    );
}

#[test]
fn instant_builder_writes_fhir_instants() {
    let at = chrono::DateTime::parse_from_rfc3339("2021-05-28T13:00:00+02:00").unwrap();
    let json = Parameters::new().instant("expires", at).to_json_value();
    assert_eq!(
        json["parameter"][0]["valueInstant"],
        "2021-05-28T13:00:00+02:00"
    );
    let utc = chrono::DateTime::parse_from_rfc3339("2021-05-28T11:00:00.250Z").unwrap();
    let json = Parameters::new().instant("expires", utc).to_json_value();
    assert_eq!(
        json["parameter"][0]["valueInstant"],
        "2021-05-28T11:00:00.250Z"
    );
}

#[test]
fn absent_and_empty_parameter_arrays_read_alike() {
    for body in [
        &br#"{"resourceType":"Parameters"}"#[..],
        br#"{"resourceType":"Parameters","parameter":[]}"#,
        br#"{"resourceType":"Parameters","id":"x","meta":{"lastUpdated":"2020-01-01T00:00:00Z"}}"#,
    ] {
        assert_eq!(
            Parameters::from_json_bytes(body).unwrap(),
            Parameters::new()
        );
    }
}

#[test]
fn whole_body_errors_are_classified() {
    let not_json = |r: Result<Parameters, ProtoError>| matches!(r, Err(ProtoError::NotJson(_)));
    let malformed = |r: Result<Parameters, ProtoError>| matches!(r, Err(ProtoError::Malformed(_)));
    let wrong_type =
        |r: Result<Parameters, ProtoError>| matches!(r, Err(ProtoError::WrongResourceType(_)));
    type Check = fn(Result<Parameters, ProtoError>) -> bool;
    let cases: Vec<(&[u8], Check)> = vec![
        (b"", not_json),
        (b"   ", not_json),
        (b"<html>", not_json),
        (b"{", not_json),
        (br#"{"resourceType":"Parameters"} trailing"#, not_json),
        (b"\xff\xfe", not_json),
        (b"[]", malformed),
        (b"\"Parameters\"", malformed),
        (b"42", malformed),
        (b"null", malformed),
        (br#"{"parameter":[]}"#, malformed),
        (br#"{"resourceType":7}"#, malformed),
        (
            br#"{"resourceType":"Parameters","parameter":{}}"#,
            malformed,
        ),
        (
            br#"{"resourceType":"Parameters","parameter":"x"}"#,
            malformed,
        ),
        (
            br#"{"resourceType":"Parameters","parameter":null}"#,
            malformed,
        ),
        (
            br#"{"resourceType":"Parameters","parameter":[],"parameter":[]}"#,
            malformed,
        ),
        (
            br#"{"resourceType":"Parameters","resourceType":"Parameters"}"#,
            malformed,
        ),
        (br#"{"resourceType":"Bundle","entry":[]}"#, wrong_type),
        (br#"{"resourceType":"parameters"}"#, wrong_type),
    ];
    for (body, check) in cases {
        let result = Parameters::from_json_bytes(body);
        assert!(
            check(result.clone()),
            "{:?} gave {result:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn error_messages_name_the_problem_without_quoting_values() {
    let err = Parameters::from_json_bytes(br#"{"resourceType":"Parameters","parameter":{"a":1}}"#)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the Parameters resource is malformed: `parameter` is an object, expected an array"
    );
    let err = Parameters::from_json_bytes(br#"{"resourceType":"Bundle"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected a FHIR Parameters resource, got resourceType \"Bundle\""
    );
    let err = Parameters::from_json_bytes(
        br#"{"resourceType":"Parameters","parameter":[{"name":"a","valueBoolean":"Mustermann"}]}"#,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("parameter 0 (a)"), "{text}");
    assert!(
        text.contains("`valueBoolean` is a string, expected a boolean"),
        "{text}"
    );
    assert!(!text.contains("Mustermann"), "{text}");
}

#[test]
fn an_operation_outcome_body_has_its_own_error() {
    let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"security","diagnostics":"API key missing"}]}"#;
    assert_eq!(
        Parameters::from_json_bytes(body),
        Err(ProtoError::OperationOutcome(
            "error security: API key missing".into()
        ))
    );
}

#[test]
fn a_byte_order_mark_is_tolerated() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(&example("requestTasks-request.json"));
    assert_eq!(
        Parameters::from_json_bytes(&body).unwrap().parameter.len(),
        2
    );
}

#[test]
fn bad_entries_are_isolated_with_precise_reasons() {
    let entries = json!([
        { "name": "ok", "valueString": "fine" },
        { "name": "two", "valueString": "a", "valueCode": "b" },
        { "valueString": "no name" },
        { "name": 5 },
        { "name": "" },
        "a string",
        { "name": "parts", "part": { "name": "x" } },
        { "name": "nested", "part": [ { "name": "fine" }, { "name": "inner", "valueInteger": 1.5 } ] },
        { "name": "big", "valueInteger": 3_000_000_000u64 },
        { "name": "res", "resource": [] },
        { "name": "ident", "valueIdentifier": { "value": 12 } },
        { "name": "coding", "valueCoding": "given" },
        { "name": "nul", "valueString": null },
        { "name": "other-null", "valueQuantity": null },
        { "name": "also-ok", "part": [ { "name": "x", "valueBoolean": true } ] }
    ]);
    let parsed = parse_body(&body(entries), usize::MAX).unwrap();
    let reasons: Vec<Result<String, String>> = parsed
        .entries
        .iter()
        .map(|e| match &e.decoded {
            Ok(p) => Ok(p.name.clone()),
            Err(err) => Err(err.reason.clone()),
        })
        .collect();
    let expected: Vec<Result<&str, &str>> = vec![
        Ok("ok"),
        Err("has 2 value[x] keys (valueCode, valueString), at most one is allowed"),
        Err("has no `name`"),
        Err("`name` is a number, expected a string"),
        Err("has an empty `name`"),
        Err("is a string, not an object"),
        Err("`part` is an object, expected an array"),
        Err("part 1 (`inner`) `valueInteger` is a number, expected an integer"),
        Err("`valueInteger` is out of the 32-bit range"),
        Err("`resource` is an array, expected an object"),
        Err("`valueIdentifier.value` is a number, expected a string"),
        Err("`valueCoding` is a string, expected an object"),
        Err("`valueString` is null, expected a string"),
        Err("`valueQuantity` is null"),
        Ok("also-ok"),
    ];
    let expected: Vec<Result<String, String>> = expected
        .into_iter()
        .map(|r| r.map(str::to_owned).map_err(str::to_owned))
        .collect();
    assert_eq!(reasons, expected);
    for (i, entry) in parsed.entries.iter().enumerate() {
        assert_eq!(entry.index, i);
    }
    // The name is kept for reporting when it is readable.
    assert_eq!(
        parsed.entries[1]
            .decoded
            .as_ref()
            .unwrap_err()
            .name
            .as_deref(),
        Some("two")
    );
    assert_eq!(parsed.entries[2].decoded.as_ref().unwrap_err().name, None);
}

#[test]
fn strict_parsing_rejects_one_bad_entry_and_names_it() {
    let entries = json!([{ "name": "a" }, { "name": "b", "valueString": "x", "valueId": "y" }]);
    match Parameters::from_json_bytes(&body(entries)) {
        Err(ProtoError::Malformed(message)) => {
            assert!(
                message.starts_with("parameter 1 (b): has 2 value[x] keys"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_keys_and_primitive_extensions_do_not_count_as_values() {
    let entries = json!([{
        "name": "p",
        "id": "x",
        "extension": [],
        "_valueString": { "extension": [] },
        "valueString": "v"
    }, {
        "name": "absent-with-reason",
        "_valueString": { "extension": [] }
    }]);
    let parsed = Parameters::from_json_bytes(&body(entries)).unwrap();
    assert_eq!(parsed.parameter[0].value, Some(Value::String("v".into())));
    assert_eq!(parsed.parameter[1].value, None);
}

#[test]
fn parse_body_keeps_at_most_max_entries_and_counts_the_rest() {
    let entries: Vec<Json> = (0..7).map(|i| json!({ "name": format!("p{i}") })).collect();
    let parsed = parse_body(&body(Json::Array(entries)), 3).unwrap();
    assert_eq!(parsed.entries.len(), 3);
    assert_eq!(parsed.omitted, 4);
    assert_eq!(parsed.entries[2].raw["name"], "p2");
    let none = parse_body(&body(json!([{ "name": "x" }])), 0).unwrap();
    assert_eq!((none.entries.len(), none.omitted), (0, 1));
}

#[test]
fn accessors_find_entries_and_parts_by_name() {
    let p = Parameters::new()
        .string("a", "1")
        .string("b", "2")
        .string("a", "3")
        .part("t", Parameters::new().string("x", "4").string("x", "5"));
    let a: Vec<_> = p
        .named("a")
        .filter_map(|e| e.value.as_ref()?.as_str())
        .collect();
    assert_eq!(a, ["1", "3"]);
    assert!(p.first("missing").is_none());
    assert_eq!(p.first("t").unwrap().parts_named("x").count(), 2);
    assert_eq!(Value::Boolean(true).as_str(), None);
    assert_eq!(Value::Id("x".into()).key(), "valueId");
}

#[test]
fn debug_output_shows_structure_but_no_values() {
    let p = Parameters::new()
        .string("study", "secret-study-name")
        .identifier("pseudonym", Some(GPAS), "psn-SECRET")
        .base64_binary("bloomfilter", b"filter-bytes-SECRET")
        .resource(
            "patient",
            json!({ "resourceType": "Patient", "name": [{ "family": "Mustermann" }] }),
        )
        .with_api_key("api-key-SECRET");
    let debug = format!("{p:?}");
    for secret in ["secret-study-name", "SECRET", "Mustermann", "ZmlsdGVy"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    for shown in [
        "study",
        "pseudonym",
        "bloomfilter",
        "Patient",
        "apikey",
        GPAS,
    ] {
        assert!(debug.contains(shown), "{shown} not in {debug}");
    }
    // Not even the key's length.
    assert!(debug.contains("valueString(<secret>)"), "{debug}");
    assert!(!debug.contains("14 bytes"), "{debug}");

    let parsed = parse_body(&example("requestTasks-response.json"), 10).unwrap();
    let debug = format!("{parsed:?}");
    assert!(
        !debug.contains("mii_6348Q7") && !debug.contains(BF),
        "{debug}"
    );
}
