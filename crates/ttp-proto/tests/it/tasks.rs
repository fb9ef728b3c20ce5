//! `$requestTasks` responses: the example, every cardinality rule, leniency, problems.

use crate::common::*;
use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use ttp_proto::task::{ParseLimits, parse_instant};
use ttp_proto::{
    BloomFilter, ElementRequest, IdatElement, SendIdatSubject, Task, TaskKind, parse_tasks,
    parse_tasks_with,
};

/// An RFC 3339 text as the UTC instant the parser keeps for a task's `expires`.
fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn with(mut parts: Vec<Json>, extra: Json) -> Vec<Json> {
    parts.push(extra);
    parts
}

fn without(parts: Vec<Json>, name: &str) -> Vec<Json> {
    parts.into_iter().filter(|p| p["name"] != name).collect()
}

fn replaced(parts: Vec<Json>, name: &str, part: Json) -> Vec<Json> {
    with(without(parts, name), part)
}

#[test]
fn the_example_response_yields_its_three_tasks() {
    let list = parse_tasks(&example("requestTasks-response.json")).unwrap();
    assert!(list.problems.is_empty(), "{:?}", list.problems);
    let filter = BloomFilter(BF_BYTES.to_vec());
    let expected = vec![
        Task {
            kind: TaskKind::DicPsnAvailable {
                bloom_filter: filter.clone(),
                target: "eyematics".into(),
                pseudonym: "mii_6348Q7".into(),
            },
            expires: None,
            unknown_parts: vec![],
        },
        Task {
            kind: TaskKind::SendIdat {
                task_id: "064ddebf-b20e-468a-97fd-88097bcdbc11".into(),
                subject: SendIdatSubject::Pseudonym("mii_1244Q2".into()),
                elements: [
                    IdatElement::Given,
                    IdatElement::Family,
                    IdatElement::Birthdate,
                    IdatElement::Gender,
                    IdatElement::Birthplace,
                    IdatElement::Degree,
                ]
                .into_iter()
                .map(ElementRequest::Known)
                .collect(),
            },
            expires: Some(utc("2021-05-28T13:00:00+02:00")),
            unknown_parts: vec![],
        },
        Task {
            kind: TaskKind::RepeatRequest {
                study: "mii".into(),
                bloom_filter: filter,
                target: "eyematics".into(),
            },
            expires: None,
            unknown_parts: vec![],
        },
    ];
    assert_eq!(list.tasks, expected);
    // The deadline is converted once, here at the wire boundary: the instant the fTTP named
    // (13:00 at +02:00), in UTC.
    assert_eq!(
        list.tasks[1].expires.map(|e| e.to_rfc3339()).as_deref(),
        Some("2021-05-28T11:00:00+00:00")
    );
}

#[test]
fn no_tasks_reads_as_an_empty_list_whether_absent_or_empty() {
    for body in [
        &br#"{"resourceType":"Parameters"}"#[..],
        br#"{"resourceType":"Parameters","parameter":[]}"#,
    ] {
        let list = parse_tasks(body).unwrap();
        assert!(list.tasks.is_empty() && list.problems.is_empty());
    }
}

#[test]
fn send_idat_may_name_its_record_by_bloom_filter() {
    let parts = replaced(send_idat_parts(), "pseudonym", bf(&format!("  {BF}\n")));
    let task = parse_one(task("send_idat", parts)).unwrap();
    match task.kind {
        TaskKind::SendIdat { subject, .. } => {
            assert_eq!(
                subject,
                SendIdatSubject::BloomFilter(BloomFilter(BF_BYTES.to_vec()))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expires_accepts_fhir_instants_and_full_date_times() {
    let cases = [
        (
            "valueInstant",
            "2021-05-28T13:00:00.00+02:00",
            "2021-05-28T11:00:00Z",
        ),
        (
            "valueInstant",
            "2021-05-28T11:00:00Z",
            "2021-05-28T11:00:00Z",
        ),
        (
            "valueInstant",
            "2021-05-28T11:00:00.5Z",
            "2021-05-28T11:00:00.5Z",
        ),
        (
            "valueInstant",
            "2021-05-28T13:00:00.123456789012+02:00",
            "2021-05-28T11:00:00.123456789Z",
        ),
        (
            "valueInstant",
            "2021-05-28T05:30:00-05:30",
            "2021-05-28T11:00:00Z",
        ),
        (
            "valueInstant",
            "2021-05-28T11:00:00+00:00",
            "2021-05-28T11:00:00Z",
        ),
        (
            "valueDateTime",
            "2021-05-28T13:00:00+02:00",
            "2021-05-28T11:00:00Z",
        ),
    ];
    for (key, text, utc) in cases {
        let parts = replaced(
            send_idat_parts(),
            "expires",
            json!({ "name": "expires", key: text }),
        );
        let parsed =
            parse_one(task("send_idat", parts)).unwrap_or_else(|p| panic!("{text}: {p:?}"));
        let expected = self::utc(utc);
        assert_eq!(parsed.expires, Some(expected), "{text}");
        // Same for the optional expires of the content-identified types.
        let dic = parse_one(task(
            "dic_psn_available",
            with(dic_parts(), json!({ "name": "expires", key: text })),
        ))
        .unwrap();
        assert_eq!(dic.expires, Some(expected), "{text}");
    }
}

#[test]
fn expires_rejects_what_is_not_an_instant() {
    let bad = [
        json!({ "name": "expires", "valueInstant": "2021-05-28" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28 13:00:00Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28t13:00:00Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00.Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00+0200" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00 UTC" }),
        json!({ "name": "expires", "valueInstant": "2021-02-30T13:00:00Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T25:00:00Z" }),
        json!({ "name": "expires", "valueInstant": "2021-05-28T13:00:00+02:00 " }),
        json!({ "name": "expires", "valueInstant": "" }),
        json!({ "name": "expires", "valueDateTime": "2021-05-28" }),
        json!({ "name": "expires", "valueString": "2021-05-28T13:00:00Z" }),
        json!({ "name": "expires", "valueInteger": 1622199600 }),
        json!({ "name": "expires" }),
    ];
    for part in bad {
        for (name, parts) in [
            ("send_idat", send_idat_parts()),
            ("dic_psn_available", dic_parts()),
            ("repeat_request", repeat_parts()),
        ] {
            let problem = problem_of(task(name, replaced(parts, "expires", part.clone())));
            assert!(
                problem.reason.starts_with(&format!("{name} task: ")),
                "{problem:?}"
            );
            assert!(
                problem.reason.contains("part `expires`"),
                "{part}: {problem:?}"
            );
        }
    }
}

#[test]
fn parse_instant_is_public_and_strict() {
    assert!(parse_instant("2021-05-28T13:00:00.00+02:00").is_some());
    assert!(parse_instant("2021-05-28T13:00:00ü").is_none());
    assert!(parse_instant("ü021-05-28T13:00:00Z").is_none());
    assert!(parse_instant("").is_none());
}

#[test]
fn missing_required_parts_are_problems_naming_type_and_part() {
    let cases = [
        ("dic_psn_available", dic_parts(), "bloomfilter"),
        ("dic_psn_available", dic_parts(), "target"),
        ("dic_psn_available", dic_parts(), "pseudonym"),
        ("send_idat", send_idat_parts(), "expires"),
        ("send_idat", send_idat_parts(), "taskId"),
        ("repeat_request", repeat_parts(), "study"),
        ("repeat_request", repeat_parts(), "bloomfilter"),
        ("repeat_request", repeat_parts(), "target"),
    ];
    for (name, parts, missing) in cases {
        let problem = problem_of(task(name, without(parts, missing)));
        assert_eq!(
            problem.reason,
            format!("{name} task: part `{missing}` is missing")
        );
        assert_eq!(problem.name, name);
        assert_eq!(problem.index, 0);
    }
}

#[test]
fn repeated_single_parts_are_problems() {
    let cases = [
        (
            "dic_psn_available",
            dic_parts(),
            bf(OTHER_BF),
            "bloomfilter",
        ),
        (
            "dic_psn_available",
            dic_parts(),
            ident("target", "x"),
            "target",
        ),
        (
            "dic_psn_available",
            dic_parts(),
            ident("pseudonym", "x"),
            "pseudonym",
        ),
        (
            "dic_psn_available",
            with(dic_parts(), expires("2030-01-01T00:00:00Z")),
            expires("2030-01-01T00:00:00Z"),
            "expires",
        ),
        (
            "send_idat",
            send_idat_parts(),
            expires("2030-01-01T00:00:00Z"),
            "expires",
        ),
        ("send_idat", send_idat_parts(), task_id("other"), "taskId"),
        (
            "send_idat",
            send_idat_parts(),
            ident("pseudonym", "x"),
            "pseudonym",
        ),
        (
            "repeat_request",
            repeat_parts(),
            ident("study", "x"),
            "study",
        ),
        (
            "repeat_request",
            repeat_parts(),
            ident("target", "x"),
            "target",
        ),
    ];
    for (name, parts, extra, part) in cases {
        let problem = problem_of(task(name, with(parts, extra)));
        assert_eq!(
            problem.reason,
            format!("{name} task: part `{part}` appears 2 times, at most once is allowed")
        );
    }
}

#[test]
fn send_idat_needs_pseudonym_or_bloomfilter_and_keeps_both_when_both_come() {
    // The IG requires one and does not forbid both: the agent checks they name one record.
    let both = parse_one(task("send_idat", with(send_idat_parts(), bf(BF)))).unwrap();
    match both.kind {
        TaskKind::SendIdat {
            subject:
                SendIdatSubject::Both {
                    pseudonym,
                    bloom_filter,
                },
            ..
        } => {
            assert_eq!(pseudonym, "mii_1244Q2");
            assert_eq!(bloom_filter.to_base64(), BF);
        }
        other => panic!("expected both subjects, got {other:?}"),
    }
    let bad_filter = problem_of(task(
        "send_idat",
        with(
            send_idat_parts(),
            json!({ "name": "bloomfilter", "valueBase64Binary": "!!" }),
        ),
    ));
    assert!(bad_filter.reason.contains("bloomfilter"), "{bad_filter:?}");
    let neither = problem_of(task("send_idat", without(send_idat_parts(), "pseudonym")));
    assert_eq!(
        neither.reason,
        "send_idat task: has neither `pseudonym` nor `bloomfilter`, one is required"
    );
}

#[test]
fn every_defect_of_a_task_is_listed() {
    let parts = vec![
        expires("tomorrow"),
        element("given"),
        json!({ "name": "element", "valueCoding": {} }),
    ];
    let problem = problem_of(task("send_idat", parts));
    assert_eq!(
        problem.reason,
        "send_idat task: \
         part `expires` is not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm); \
         part `taskId` is missing; \
         has neither `pseudonym` nor `bloomfilter`, one is required; \
         part `element` 1 is a Coding without `code`"
    );
}

#[test]
fn bloom_filters_must_be_padded_standard_base64() {
    let bad = [
        "not base64!",
        "SWNoIGJpbg",
        "SWNoIGJpbg=",
        "SWNo IGJpbg==",
        "SWNoIGJpbg==\nSWNo",
        "SWNoIGJpbg-_",
        "SWNoIGJpbh==",
        "",
        "   ",
    ];
    for text in bad {
        for (name, parts) in [
            (
                "send_idat",
                replaced(send_idat_parts(), "pseudonym", bf(text)),
            ),
            (
                "dic_psn_available",
                replaced(dic_parts(), "bloomfilter", bf(text)),
            ),
            (
                "repeat_request",
                replaced(repeat_parts(), "bloomfilter", bf(text)),
            ),
        ] {
            let problem = problem_of(task(name, parts));
            assert!(
                problem.reason.contains("part `bloomfilter`"),
                "{text:?}: {problem:?}"
            );
        }
    }
    // Surrounding whitespace is tolerated.
    for text in [format!(" {BF}"), format!("{BF}\r\n"), format!("\t{BF} ")] {
        let parts = replaced(dic_parts(), "bloomfilter", bf(&text));
        assert!(
            parse_one(task("dic_psn_available", parts)).is_ok(),
            "{text:?}"
        );
    }
    // Only valueBase64Binary carries a filter.
    let as_string = json!({ "name": "bloomfilter", "valueString": BF });
    let problem = problem_of(task(
        "dic_psn_available",
        replaced(dic_parts(), "bloomfilter", as_string),
    ));
    assert_eq!(
        problem.reason,
        "dic_psn_available task: part `bloomfilter` has valueString, expected valueBase64Binary"
    );
}

#[test]
fn identifiers_use_their_value_whatever_the_system_and_strings_are_accepted() {
    let parts = vec![
        bf(BF),
        json!({ "name": "target", "valueIdentifier": { "system": "https://ths-greifswald.de/dispatcher", "value": "eyematics" } }),
        json!({ "name": "pseudonym", "valueString": "mii_6348Q7" }),
    ];
    let task_value = parse_one(task("dic_psn_available", parts)).unwrap();
    let no_system = vec![
        bf(BF),
        json!({ "name": "target", "valueIdentifier": { "value": "eyematics" } }),
        json!({ "name": "pseudonym", "valueIdentifier": { "value": "mii_6348Q7", "use": "secondary" } }),
    ];
    let task_no_system = parse_one(task("dic_psn_available", no_system)).unwrap();
    let example = parse_one(task("dic_psn_available", dic_parts())).unwrap();
    assert_eq!(task_value, example);
    assert_eq!(task_no_system, example);
}

#[test]
fn unusable_identifiers_are_problems() {
    let cases = [
        (
            json!({ "name": "target", "valueIdentifier": { "system": GPAS } }),
            "part `target` is an Identifier without `value`",
        ),
        (
            json!({ "name": "target", "valueInteger": 3 }),
            "part `target` has valueInteger, expected valueIdentifier or valueString",
        ),
        (
            json!({ "name": "target" }),
            "part `target` has no value, expected valueIdentifier or valueString",
        ),
        (
            json!({ "name": "target", "valueString": " " }),
            "part `target` is empty",
        ),
        (
            json!({ "name": "target", "valueString": "eye\u{1b}[31m" }),
            "part `target` contains control characters",
        ),
        (
            json!({ "name": "target", "valueString": "x".repeat(257) }),
            "part `target` is longer than 256 characters",
        ),
    ];
    for (part, reason) in cases {
        let problem = problem_of(task(
            "dic_psn_available",
            replaced(dic_parts(), "target", part),
        ));
        assert_eq!(problem.reason, format!("dic_psn_available task: {reason}"));
    }
    let long_but_fine = replaced(dic_parts(), "target", ident("target", &"x".repeat(256)));
    assert!(parse_one(task("dic_psn_available", long_but_fine)).is_ok());
}

#[test]
fn task_ids_must_be_fhir_ids_and_may_come_as_strings() {
    let as_string = replaced(
        send_idat_parts(),
        "taskId",
        json!({ "name": "taskId", "valueString": "abc.1-2" }),
    );
    assert!(parse_one(task("send_idat", as_string)).is_ok());
    for bad in ["", "has space", "a/b", "../etc", &"a".repeat(65), "ümlaut"] {
        let parts = replaced(send_idat_parts(), "taskId", task_id(bad));
        let problem = problem_of(task("send_idat", parts));
        assert!(
            problem.reason.contains("part `taskId` is not a FHIR id"),
            "{bad:?}: {problem:?}"
        );
    }
    let wrong_type = replaced(
        send_idat_parts(),
        "taskId",
        json!({ "name": "taskId", "valueInteger": 7 }),
    );
    assert_eq!(
        problem_of(task("send_idat", wrong_type)).reason,
        "send_idat task: part `taskId` has valueInteger, expected valueId"
    );
}

#[test]
fn elements_keep_unknown_codes_and_reject_unusable_ones() {
    let parts = vec![
        expires("2030-01-01T00:00:00Z"),
        task_id("t1"),
        ident("pseudonym", "p"),
        element("given"),
        element("shoe-size"),
        json!({ "name": "element", "valueCoding": { "system": "urn:other", "code": "family" } }),
        json!({ "name": "element", "valueCoding": { "code": "address-city" } }),
    ];
    match parse_one(task("send_idat", parts)).unwrap().kind {
        TaskKind::SendIdat { elements, .. } => assert_eq!(
            elements,
            vec![
                ElementRequest::Known(IdatElement::Given),
                ElementRequest::Unknown("shoe-size".into()),
                ElementRequest::Known(IdatElement::Family),
                ElementRequest::Known(IdatElement::AddressCity),
            ]
        ),
        other => panic!("{other:?}"),
    }

    let no_elements = without(send_idat_parts(), "element");
    assert_eq!(
        problem_of(task("send_idat", no_elements)).reason,
        "send_idat task: has no `element` part, at least one is required"
    );
    let bad_elements = [
        (
            json!({ "name": "element", "valueCoding": { "system": ELEMENTS } }),
            "part `element` 2 is a Coding without `code`",
        ),
        (
            json!({ "name": "element", "valueCoding": { "code": "" } }),
            "part `element` 2 is a Coding without `code`",
        ),
        (
            json!({ "name": "element", "valueCode": "given" }),
            "part `element` has valueCode, expected valueCoding",
        ),
        (
            json!({ "name": "element" }),
            "part `element` has no value, expected valueCoding",
        ),
        (
            json!({ "name": "element", "valueCoding": { "code": "a\nb" } }),
            "part `element` 2 has a code that is not a plausible element code \
             (over 256 characters or control characters)",
        ),
        (
            json!({ "name": "element", "valueCoding": { "code": "x".repeat(257) } }),
            "part `element` 2 has a code that is not a plausible element code \
             (over 256 characters or control characters)",
        ),
    ];
    for (part, reason) in bad_elements {
        let problem = problem_of(task("send_idat", with(send_idat_parts(), part)));
        assert_eq!(problem.reason, format!("send_idat task: {reason}"));
    }
}

#[test]
fn the_element_limit_is_enforced_and_configurable() {
    let many = |n: usize| {
        let mut parts = without(send_idat_parts(), "element");
        parts.extend((0..n).map(|i| element(IdatElement::ALL[i % 15].code())));
        task("send_idat", parts)
    };
    assert!(parse_one(many(64)).is_ok());
    let problem = problem_of(many(65));
    assert_eq!(
        problem.reason,
        "send_idat task: has 65 `element` parts, more than the limit of 64 (ParseLimits::max_elements)"
    );
    let strict = ParseLimits {
        max_elements: 3,
        ..ParseLimits::default()
    };
    let list = parse_tasks_with(&body(json!([many(3), many(4)])), &strict).unwrap();
    assert_eq!((list.tasks.len(), list.problems.len()), (1, 1));
    assert_eq!(list.problems[0].index, 1);
    assert_eq!(
        ParseLimits::default(),
        ParseLimits {
            max_tasks: 100_000,
            max_elements: 64,
            max_unknown: 20,
            max_entry_bytes: 256 * 1024,
        }
    );
}

#[test]
fn unknown_parts_are_kept_verbatim_in_order() {
    let odd1 =
        json!({ "name": "priority", "valueCode": "high", "extension": [ { "url": "urn:x" } ] });
    let odd2 = json!({ "name": "note", "part": [ { "name": "text", "valueString": "hi" } ] });
    let parts = with(with(dic_parts(), odd1.clone()), odd2.clone());
    let task_value = parse_one(task("dic_psn_available", parts)).unwrap();
    assert_eq!(task_value.unknown_parts, vec![odd1, odd2]);
    // A part name that belongs to another type is unknown here.
    let parts = with(repeat_parts(), element("given"));
    let task_value = parse_one(task("repeat_request", parts)).unwrap();
    assert_eq!(task_value.unknown_parts, vec![element("given")]);
}

#[test]
fn unknown_task_types_are_kept_whole() {
    let raw = json!({ "name": "send_consent", "part": [ expires("2030-01-01T00:00:00Z"), { "name": "what", "valueString": "x" } ] });
    let task_value = parse_one(raw.clone()).unwrap();
    assert_eq!(
        task_value.kind,
        TaskKind::Unknown {
            name: "send_consent".into(),
            raw: raw.clone()
        }
    );
    assert_eq!(task_value.kind.type_name(), "send_consent");
    assert_eq!(task_value.expires, Some(utc("2030-01-01T00:00:00Z")));
    assert!(task_value.unknown_parts.is_empty());

    // Even when its shape is odd: it is reported, never acted on.
    let odd = json!({ "name": "future_task", "valueString": "a", "valueCode": "b", "part": 7 });
    let task_value = parse_one(odd.clone()).unwrap();
    assert_eq!(
        task_value.kind,
        TaskKind::Unknown {
            name: "future_task".into(),
            raw: odd
        }
    );
    assert_eq!(task_value.expires, None);
}

#[test]
fn undecodable_or_unnamed_entries_are_problems() {
    let cases = [
        (
            json!({ "name": "send_idat", "part": { "name": "x" } }),
            "send_idat",
            "send_idat task: `part` is an object, expected an array",
        ),
        (
            json!({ "name": "dic_psn_available", "part": [ { "name": "target", "valueString": "a", "valueId": "b" } ] }),
            "dic_psn_available",
            "dic_psn_available task: part 0 (`target`) has 2 value[x] keys (valueId, valueString), at most one is allowed",
        ),
        (
            json!({ "part": dic_parts() }),
            "",
            "unnamed task: has no `name`",
        ),
        (
            json!({ "name": "", "part": dic_parts() }),
            "",
            "unnamed task: has an empty `name`",
        ),
        (
            json!({ "name": 12 }),
            "",
            "unnamed task: `name` is a number, expected a string",
        ),
        (
            json!("send_idat"),
            "",
            "unnamed task: is a string, not an object",
        ),
        (json!(null), "", "unnamed task: is null, not an object"),
    ];
    for (raw, name, reason) in cases {
        let problem = problem_of(raw);
        assert_eq!(
            (problem.name.as_str(), problem.reason.as_str()),
            (name, reason)
        );
    }
}

#[test]
fn a_known_task_without_parts_lists_all_missing_parts() {
    let problem = problem_of(json!({ "name": "repeat_request" }));
    assert_eq!(
        problem.reason,
        "repeat_request task: part `study` is missing; part `bloomfilter` is missing; part `target` is missing"
    );
    let problem = problem_of(json!({ "name": "dic_psn_available", "valueString": "x" }));
    assert!(
        problem.reason.contains("part `bloomfilter` is missing"),
        "{problem:?}"
    );
}

#[test]
fn problems_never_quote_values() {
    let secret = "SECRET_VALUE_4711";
    let cases = vec![
        task(
            "dic_psn_available",
            replaced(dic_parts(), "bloomfilter", bf(secret)),
        ),
        task(
            "dic_psn_available",
            with(dic_parts(), ident("pseudonym", secret)),
        ),
        task(
            "send_idat",
            replaced(send_idat_parts(), "expires", expires(secret)),
        ),
        task(
            "send_idat",
            replaced(send_idat_parts(), "taskId", task_id(secret)),
        ),
        task(
            "send_idat",
            with(
                send_idat_parts(),
                json!({ "name": "element", "valueString": secret }),
            ),
        ),
        task(
            "send_idat",
            with(
                send_idat_parts(),
                json!({ "name": "element", "valueCoding": { "display": secret } }),
            ),
        ),
        task(
            "repeat_request",
            replaced(
                repeat_parts(),
                "target",
                json!({ "name": "target", "valueInteger": 4711 }),
            ),
        ),
        json!({ "name": "send_idat", "part": [ { "name": "taskId", "valueId": secret, "valueString": secret } ] }),
        json!({ "name": "send_idat", "part": [ { "name": "taskId", "valueBoolean": secret } ] }),
    ];
    for raw in cases {
        let problem = problem_of(raw.clone());
        assert!(!problem.reason.contains(secret), "{problem:?}");
        assert!(!problem.reason.contains("4711"), "{problem:?}");
        assert!(!problem.key.0.contains(secret), "{problem:?}");
        assert!(!format!("{problem:?}").contains(secret));
    }
}

#[test]
fn broken_tasks_do_not_hide_the_others() {
    let parameters = vec![
        task("dic_psn_available", dic_parts()),
        task("send_idat", without(send_idat_parts(), "taskId")),
        task("send_idat", send_idat_parts()),
        json!(42),
        task("repeat_request", repeat_parts()),
        task("something_new", vec![]),
        task("dic_psn_available", without(dic_parts(), "target")),
    ];
    let list = parse_list(parameters);
    let names: Vec<&str> = list.tasks.iter().map(|t| t.kind.type_name()).collect();
    assert_eq!(
        names,
        [
            "dic_psn_available",
            "send_idat",
            "repeat_request",
            "something_new"
        ]
    );
    let indices: Vec<usize> = list.problems.iter().map(|p| p.index).collect();
    assert_eq!(indices, [1, 3, 6]);
}

#[test]
fn tasks_survive_the_store_round_trip() {
    let list = parse_tasks(&example("requestTasks-response.json")).unwrap();
    let mut tasks = list.tasks;
    tasks.push(
        parse_one(task(
            "future",
            vec![json!({ "name": "x", "valueInteger": 1 })],
        ))
        .unwrap(),
    );
    tasks.push(
        parse_one(task(
            "dic_psn_available",
            with(
                dic_parts(),
                json!({ "name": "extra", "valueBoolean": true }),
            ),
        ))
        .unwrap(),
    );
    for t in tasks {
        let stored = serde_json::to_vec(&t).unwrap();
        let back: Task = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.key(), t.key());
    }
}

#[test]
fn task_debug_redacts_pseudonyms_and_unknown_json() {
    let list = parse_tasks(&example("requestTasks-response.json")).unwrap();
    let debug = format!("{:?}", list.tasks);
    for secret in ["mii_6348Q7", "mii_1244Q2", BF] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("064ddebf-b20e-468a-97fd-88097bcdbc11"));
    assert!(debug.contains("eyematics"));
    let unknown = parse_one(task(
        "future",
        vec![json!({ "name": "who", "valueString": "Mustermann" })],
    ))
    .unwrap();
    let with_unknown_part = parse_one(task(
        "dic_psn_available",
        with(
            dic_parts(),
            json!({ "name": "who", "valueString": "Mustermann" }),
        ),
    ))
    .unwrap();
    for t in [unknown, with_unknown_part] {
        let debug = format!("{t:?}");
        assert!(!debug.contains("Mustermann"), "{debug}");
    }
}
