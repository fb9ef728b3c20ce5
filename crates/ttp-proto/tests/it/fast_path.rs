//! `parse_tasks` reads plain listings on a fast path and everything else on the generic
//! `Parameters` path. The two must agree on every body the fast path answers: these tests run
//! both over the reference example, every task shape of the suite, and systematic mutations
//! of them (values replaced, keys removed and added, entries removed and repeated, bytes
//! changed), and check that the fast path really answers a good share of them (so that the
//! agreement is not vacuous) and declines what it must leave to the generic path.

use crate::common::*;
use serde_json::{Value as Json, json};
use ttp_proto::task::{ParseLimits, parse_tasks_fast, parse_tasks_generic, parse_tasks_with};

/// Both paths over `body`: the fast path, where it answers, gives exactly the generic result,
/// and `parse_tasks_with` is the generic result either way. Returns whether the fast path
/// answered.
fn agree(body: &[u8], limits: &ParseLimits) -> bool {
    let generic = parse_tasks_generic(body, limits);
    assert_eq!(
        parse_tasks_with(body, limits),
        generic,
        "parse_tasks_with differs from the generic path for {}",
        String::from_utf8_lossy(body)
    );
    match parse_tasks_fast(body, limits) {
        Some(fast) => {
            assert_eq!(
                Ok(&fast),
                generic.as_ref(),
                "the fast path differs from the generic path for {}",
                String::from_utf8_lossy(body)
            );
            assert!(fast.problems.is_empty());
            true
        }
        None => false,
    }
}

/// Bodies of one or more tasks in every shape the suite builds.
fn fixtures() -> Vec<Json> {
    let example = example_json("requestTasks-response.json");
    let mut bodies = vec![example.clone()];
    let tasks = [
        task("dic_psn_available", dic_parts()),
        task("send_idat", send_idat_parts()),
        task("repeat_request", repeat_parts()),
        // Variants the task rules accept: a plain string for an Identifier, an Identifier
        // without system, a Coding with display, a dateTime, a filter as subject, no expires.
        task(
            "dic_psn_available",
            vec![
                json!({ "name": "expires", "valueDateTime": "2030-01-01T00:00:00Z" }),
                bf(OTHER_BF),
                json!({ "name": "target", "valueString": "eyematics" }),
                json!({ "name": "pseudonym", "valueIdentifier": { "value": "p\u{00fc}1" } }),
            ],
        ),
        task(
            "send_idat",
            vec![
                expires("2030-01-01T00:00:00.123456789Z"),
                task_id("a.b-C9"),
                bf(BF),
                json!({ "name": "element", "valueCoding": { "code": "birthdate", "display": "Geburtsdatum" } }),
                element("unknown-code"),
            ],
        ),
        task(
            "repeat_request",
            vec![
                bf(BF),
                json!({ "name": "study", "valueString": "mii" }),
                json!({ "name": "target", "valueIdentifier": { "value": "eyematics", "system": "urn:x" } }),
            ],
        ),
    ];
    for t in &tasks {
        bodies.push(json!({ "resourceType": "Parameters", "parameter": [t] }));
    }
    // All of them in one body (last: it is not mutated, its tasks are, one by one).
    bodies.push(json!({ "resourceType": "Parameters", "parameter": tasks.to_vec() }));
    bodies
}

/// Every JSON pointer in `json`, the root included.
fn pointers(json: &Json, at: String, out: &mut Vec<String>) {
    match json {
        Json::Object(map) => {
            for (key, value) in map {
                pointers(
                    value,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Json::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                pointers(value, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Structural mutations of `json`: each value replaced by each of a set of values (and, for
/// strings, by variants of itself), each key removed, a key added to each object, each array
/// element removed and repeated.
fn mutations(json: &Json) -> Vec<Json> {
    let mut all = Vec::new();
    let mut at = Vec::new();
    pointers(json, String::new(), &mut at);
    let replacements = [
        Json::Null,
        json!(true),
        json!(0),
        json!(-1.5),
        json!(""),
        json!(" "),
        json!("x"),
        json!([]),
        json!(["x", "y"]),
        json!([null, "eyematics"]),
        json!({}),
        json!("2021-05-28T13:00:00Z"),
        json!(BF),
        json!("send_idat"),
        json!("element"),
        json!("a\nb"),
        json!("n".repeat(300)),
    ];
    for pointer in &at {
        let Some(original) = json.pointer(pointer) else {
            continue;
        };
        let mut values: Vec<Json> = replacements.to_vec();
        if let Json::String(s) = original {
            values.push(json!(format!(" {s}")));
            values.push(json!(s.to_uppercase()));
            values.push(json!(s.chars().rev().collect::<String>()));
            values.push(json!(format!("{s}\u{0}")));
        }
        for value in values {
            let mut mutated = json.clone();
            if let Some(slot) = mutated.pointer_mut(pointer) {
                *slot = value;
                all.push(mutated);
            }
        }
        match original {
            Json::Object(map) => {
                for key in map.keys() {
                    let mut mutated = json.clone();
                    if let Some(Json::Object(m)) = mutated.pointer_mut(pointer) {
                        m.remove(key);
                        all.push(mutated);
                    }
                }
                for (key, value) in [
                    ("extra", json!(1)),
                    ("id", json!("x")),
                    ("valueString", json!("s")),
                    ("valueBoolean", json!(true)),
                    ("part", json!([])),
                    ("resource", json!({ "resourceType": "Patient" })),
                    ("_valueString", json!({})),
                ] {
                    let mut mutated = json.clone();
                    if let Some(Json::Object(m)) = mutated.pointer_mut(pointer)
                        && !m.contains_key(key)
                    {
                        m.insert(key.to_owned(), value);
                        all.push(mutated);
                    }
                }
            }
            Json::Array(items) => {
                for i in 0..items.len() {
                    for repeat in [false, true] {
                        let mut mutated = json.clone();
                        if let Some(Json::Array(a)) = mutated.pointer_mut(pointer) {
                            if repeat {
                                let copy = a[i].clone();
                                a.insert(i, copy);
                            } else {
                                a.remove(i);
                            }
                            all.push(mutated);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    all
}

#[test]
fn fast_and_generic_paths_agree() {
    let limits = ParseLimits::default();
    let mut bodies = 0usize;
    let mut fast = 0usize;
    let mut fast_with_tasks = 0usize;
    let fixtures = fixtures();
    let combined = fixtures.len() - 1;
    for (i, fixture) in fixtures.into_iter().enumerate() {
        let text = fixture.to_string();
        assert!(
            agree(text.as_bytes(), &limits),
            "the fast path declined a plain fixture: {text}"
        );
        // Pretty-printed, with a byte order mark: the same tasks.
        let pretty = serde_json::to_string_pretty(&fixture).unwrap();
        assert!(agree(pretty.as_bytes(), &limits));
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(text.as_bytes());
        assert!(agree(&bom, &limits));
        if i == combined {
            continue;
        }
        for mutated in mutations(&fixture) {
            let body = mutated.to_string();
            bodies += 1;
            if agree(body.as_bytes(), &limits) {
                fast += 1;
                if !parse_tasks_generic(body.as_bytes(), &limits)
                    .unwrap()
                    .tasks
                    .is_empty()
                {
                    fast_with_tasks += 1;
                }
            }
        }
    }
    // The fast path must answer a good share of the mutants itself (otherwise this test
    // compares the generic path with itself), and decline many.
    assert!(bodies > 4_000, "{bodies} mutated bodies");
    assert!(
        fast_with_tasks > bodies / 20 && fast < bodies * 3 / 4,
        "the fast path answered {fast} of {bodies} mutated bodies ({fast_with_tasks} with tasks)"
    );
}

#[test]
fn bodies_without_tasks_agree() {
    let limits = ParseLimits::default();
    for body in [
        r#"{"resourceType":"Parameters"}"#,
        r#"{"resourceType":"Parameters","parameter":[]}"#,
        r#"{"parameter":[],"id":"x","meta":{"a":[1,{}]},"resourceType":"Parameters"}"#,
    ] {
        assert!(agree(body.as_bytes(), &limits), "declined {body}");
        assert_eq!(
            parse_tasks_with(body.as_bytes(), &limits),
            Ok(Default::default())
        );
    }
}

#[test]
fn byte_level_changes_keep_the_paths_in_agreement() {
    let limits = ParseLimits::default();
    let original = example("requestTasks-response.json");
    let mut rng = Rng::new(0x5eed_fa57);
    let mut fast = 0usize;
    for _ in 0..4_000 {
        let mut body = original.clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(body.len());
            match rng.below(3) {
                0 => body[at] = rng.next_u64() as u8,
                1 => {
                    body.remove(at);
                }
                _ => body.insert(at, b"\\\"{}[],:0aZ/ "[rng.below(13)]),
            }
        }
        if agree(&body, &limits) {
            fast += 1;
        }
    }
    // Changes inside string values (names excepted) keep the shape: some are answered fast.
    assert!(
        fast > 100,
        "the fast path answered {fast} of 4000 changed bodies"
    );
    // A truncated body is not JSON: declined, and an error on the generic path.
    for len in 0..original.trim_ascii_end().len() {
        assert!(!agree(&original[..len], &limits), "truncated at {len}");
        assert!(parse_tasks_generic(&original[..len], &limits).is_err());
    }
}

/// What the fast path must leave to the generic path, because only that one reports it
/// (or keeps it) as it should.
#[test]
fn the_fast_path_declines_what_needs_the_generic_one() {
    let limits = ParseLimits::default();
    let declined = |body: &str| {
        assert!(
            parse_tasks_fast(body.as_bytes(), &limits).is_none(),
            "the fast path answered {body}"
        );
        // ... and the result is the generic one.
        agree(body.as_bytes(), &limits);
    };
    let bf = BF;
    let dic = |extra: &str| {
        format!(
            r#"{{"resourceType":"Parameters","parameter":[{{"name":"dic_psn_available","part":[{{"name":"bloomfilter","valueBase64Binary":"{bf}"}},{{"name":"target","valueIdentifier":{{"value":"t"}}}},{{"name":"pseudonym","valueString":"p"}}{extra}]}}]}}"#
        )
    };
    // The plain task is answered...
    assert!(parse_tasks_fast(dic("").as_bytes(), &limits).is_some());
    // ...but not with an unknown part (kept verbatim from the raw JSON),
    declined(&dic(r#",{"name":"future","valueString":"x"}"#));
    // a null value, a repeated key, two value[x] keys, a key the view does not know,
    declined(&dic(r#",{"name":"expires","valueInstant":null}"#));
    declined(&dic(
        r#",{"name":"expires","name":"expires","valueInstant":"2030-01-01T00:00:00Z"}"#,
    ));
    declined(&dic(
        r#",{"name":"expires","valueInstant":"2030-01-01T00:00:00Z","valueDateTime":"2030-01-01T00:00:00Z"}"#,
    ));
    declined(&dic(
        r#",{"name":"expires","valueInstant":"2030-01-01T00:00:00Z","id":"x"}"#,
    ));
    // an array where an object belongs (serde's derived structs would read it by position),
    declined(&dic(
        r#",{"name":"expires","valueInstant":"2030-01-01T00:00:00Z"}]},{"name":"send_idat","part":[["expires","x"]"#,
    ));
    declined(&dic("").replace(r#"{"value":"t"}"#, r#"[null,"t"]"#));
    declined(&dic("").replace(r#"{"value":"t"}"#, r#"["urn:x","t"]"#));
    declined(r#"["Parameters",[]]"#);
    declined(r#"{"resourceType":"Parameters","parameter":[["send_idat",[]]]}"#);
    // a task that is a problem (a repeated part), an unknown task type,
    declined(&dic(r#",{"name":"target","valueString":"u"}"#));
    declined(r#"{"resourceType":"Parameters","parameter":[{"name":"future_task","part":[]}]}"#);
    // a body that is not a Parameters resource, or repeats `parameter`.
    declined(r#"{"resourceType":"OperationOutcome","parameter":[]}"#);
    declined(r#"{"resourceType":"Parameters","parameter":[],"parameter":[]}"#);
    declined(r#"{"resourceType":"Parameters","parameter":null}"#);
    // More tasks than the limit: the generic path reports the rest as one problem.
    let tight = ParseLimits {
        max_tasks: 1,
        ..ParseLimits::default()
    };
    let two = format!(
        r#"{{"resourceType":"Parameters","parameter":[{t},{t}]}}"#,
        t = task("repeat_request", repeat_parts())
    );
    assert!(parse_tasks_fast(two.as_bytes(), &tight).is_none());
    assert!(!agree(two.as_bytes(), &tight));
    assert!(agree(two.as_bytes(), &limits));
}

/// Escaped strings cannot be borrowed from the body; the fast path unescapes them like the
/// generic one.
#[test]
fn escaped_strings_read_the_same_on_both_paths() {
    let limits = ParseLimits::default();
    let body = format!(
        r#"{{"resourceType":"Parameters","parameter":[{{"name":"dic_psn_\u0061vailable","part":[{{"name":"bloomfilter","valueBase64Binary":"{}"}},{{"name":"target","valueIdentifier":{{"system":"https:\/\/ths-greifswald.de\/gpas","value":"eye\u006datics"}}}},{{"name":"pseudonym","valueString":"mii_\u00fc\ud83d\ude00"}}]}}]}}"#,
        BF.replace('=', "\\u003d").replace('/', "\\/")
    );
    assert!(agree(body.as_bytes(), &limits));
    let list = parse_tasks_with(body.as_bytes(), &limits).unwrap();
    assert_eq!(list.tasks.len(), 1);
    assert_eq!(
        list.tasks[0].key(),
        parse_one(task(
            "dic_psn_available",
            vec![
                bf(BF),
                ident("target", "eyematics"),
                ident("pseudonym", "x")
            ]
        ))
        .unwrap()
        .key()
    );
}
