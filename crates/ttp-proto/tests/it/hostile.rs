//! Hostile and garbage input: no panic, no unbounded allocation, and every body is either
//! rejected as a whole or accounted for entry by entry.

use crate::common::*;
use serde_json::{Value as Json, json};
use ttp_proto::task::ParseLimits;
use ttp_proto::{
    Parameters, ProtoError, parse_psn_response, parse_tasks, parse_tasks_with, summarize_error_body,
};

/// Runs every public parser over `body`; none may panic.
fn all_parsers(body: &[u8]) {
    let _ = parse_tasks(body);
    let _ = parse_psn_response(body);
    let _ = Parameters::from_json_bytes(body);
    let _ = summarize_error_body(Some("application/fhir+json"), body);
    let _ = summarize_error_body(None, body);
}

/// The invariant of a successful task parse: every kept entry is a task or a problem.
fn assert_accounted(body: &[u8], entries: usize) {
    let list = parse_tasks(body).unwrap();
    assert_eq!(list.tasks.len() + list.problems.len(), entries);
}

#[test]
fn malformed_bodies_each_give_an_error_or_a_problem() {
    let bf = BF;
    let bodies: Vec<String> = vec![
        String::new(),
        "{".into(),
        "}".into(),
        "null".into(),
        "true".into(),
        "1e999".into(),
        "\"text\"".into(),
        "[]".into(),
        "[{}]".into(),
        "{}".into(),
        r#"{"resourceType":null}"#.into(),
        r#"{"resourceType":["Parameters"]}"#.into(),
        r#"{"resourceType":"Patient"}"#.into(),
        r#"{"resourceType":"OperationOutcome"}"#.into(),
        r#"{"resourceType":"OperationOutcome","issue":"nope"}"#.into(),
        r#"{"resourceType":"Parameters","parameter":1}"#.into(),
        r#"{"resourceType":"Parameters","parameter":true}"#.into(),
        r#"{"resourceType":"Parameters","parameter":{"name":"send_idat"}}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[1]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[[]]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[null]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":null}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":["send_idat"]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat"}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":null}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":"x"}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[1,2]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"taskId","valueId":5}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"expires","valueInstant":{}}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"element","valueCoding":[]}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"element","valueCoding":{"code":5}}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"dic_psn_available","part":[{"name":"bloomfilter","valueBase64Binary":7}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"dic_psn_available","part":[{"name":"target","valueIdentifier":"x"}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"dic_psn_available","part":[{"name":"target","valueIdentifier":{"value":[]}}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"repeat_request","part":[{"name":"study","valueIdentifier":null}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"repeat_request","valueString":"x","valueUri":"y"}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"repeat_request","resource":"Patient"}]}"#.into(),
        format!(r#"{{"resourceType":"Parameters","parameter":[{{"name":"dic_psn_available","part":[{{"name":"bloomfilter","valueBase64Binary":"{bf}"}},{{"name":"bloomfilter","valueBase64Binary":"{bf}"}}]}}]}}"#),
        format!(r#"{{"resourceType":"Parameters","parameter":[{{"name":"send_idat","part":[{{"name":"bloomfilter","valueBase64Binary":"{bf}"}}]}}]}}"#),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"taskId","valueId":"\ud800"}]}]}"#.into(),
        "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"send_idat\u{0}\"}]}".into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"dic_psn_available","part":[{"name":"target","valueInteger":99999999999999999999}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"dic_psn_available","part":[{"name":"target","valueDecimal":-0.0}]}]}"#.into(),
        r#"{"resourceType":"Parameters","parameter":[{"name":"send_idat","part":[{"name":"element","valueCoding":{"code":"given"}}]}],"parameter":[]}"#.into(),
    ];
    assert!(bodies.len() >= 40);
    for body in &bodies {
        all_parsers(body.as_bytes());
        match parse_tasks(body.as_bytes()) {
            Err(_) => {}
            Ok(list) => assert!(
                !list.problems.is_empty(),
                "no error and no problem for {body}: {list:?}"
            ),
        }
    }
}

#[test]
fn garbage_bytes_never_panic() {
    let mut rng = Rng::new(0x7474_702d_7072_6f74);
    for round in 0..2_000 {
        let len = rng.below(200);
        let mut bytes = rng.bytes(len);
        // Half of the rounds start like JSON, so the parser gets past the first byte.
        if round % 2 == 0 {
            bytes.insert(0, b'{');
        }
        all_parsers(&bytes);
        assert!(parse_tasks(&bytes).is_err() || bytes.starts_with(b"{"));
    }
}

#[test]
fn every_truncation_of_the_examples_is_rejected_without_panic() {
    for name in [
        "requestTasks-response.json",
        "requestPsnFromBfWorkflow-response.json",
    ] {
        let body = example(name);
        let full = body.trim_ascii_end().len();
        for cut in 0..full {
            let _ = parse_psn_response(&body[..cut]);
            assert!(parse_tasks(&body[..cut]).is_err(), "{name} cut at {cut}");
        }
    }
}

#[test]
fn byte_mutations_of_the_example_never_panic_and_stay_accounted() {
    let original = example("requestTasks-response.json");
    let mut rng = Rng::new(42);
    for _ in 0..1_000 {
        let mut body = original.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(body.len());
            body[at] = rng.next_u64() as u8;
        }
        all_parsers(&body);
        if let Ok(list) = parse_tasks(&body) {
            let entries = serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j.get("parameter").and_then(Json::as_array).map(Vec::len))
                .unwrap_or(0);
            assert_eq!(list.tasks.len() + list.problems.len(), entries);
        }
    }
}

/// Every JSON node of the example replaced by every JSON type: no panic, and each entry is a
/// task or a problem.
#[test]
fn wrong_types_everywhere_in_the_example() {
    fn pointers(json: &Json, at: String, out: &mut Vec<String>) {
        match json {
            Json::Object(map) => {
                for (k, v) in map {
                    let p = format!("{at}/{k}");
                    out.push(p.clone());
                    pointers(v, p, out);
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(v, p, out);
                }
            }
            _ => {}
        }
    }
    let original = example_json("requestTasks-response.json");
    let mut all = Vec::new();
    pointers(&original, String::new(), &mut all);
    assert!(all.len() > 50, "{}", all.len());
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(""),
        json!([]),
        json!({}),
        json!("send_idat"),
    ];
    let mut errors = 0;
    let mut problems = 0;
    for pointer in &all {
        for replacement in &replacements {
            let mut mutated = original.clone();
            *mutated.pointer_mut(pointer).unwrap() = replacement.clone();
            let body = mutated.to_string().into_bytes();
            all_parsers(&body);
            match parse_tasks(&body) {
                Err(_) => errors += 1,
                Ok(list) => {
                    let entries = mutated["parameter"].as_array().map_or(0, Vec::len);
                    assert_eq!(list.tasks.len() + list.problems.len(), entries, "{pointer}");
                    problems += list.problems.len();
                }
            }
        }
    }
    assert!(errors > 0 && problems > 0);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let top_level = nested.clone();
    let in_parameter = format!(r#"{{"resourceType":"Parameters","parameter":{nested}}}"#);
    let in_part = format!(
        r#"{{"resourceType":"Parameters","parameter":[{{"name":"send_idat","part":{nested}}}]}}"#
    );
    let in_ignored_key = format!(r#"{{"resourceType":"Parameters","meta":{nested}}}"#);
    for body in [&top_level, &in_parameter, &in_part, &in_ignored_key] {
        all_parsers(body.as_bytes());
    }
    // Kept values hit serde_json's recursion limit...
    for body in [&in_parameter, &in_part] {
        assert!(matches!(
            parse_tasks(body.as_bytes()),
            Err(ProtoError::NotJson(_))
        ));
    }
    // ...skipped ones are consumed iteratively and cost nothing.
    assert!(matches!(
        parse_tasks(top_level.as_bytes()),
        Err(ProtoError::Malformed(_))
    ));
    assert_eq!(
        parse_tasks(in_ignored_key.as_bytes()).unwrap().tasks.len(),
        0
    );
    // Nesting within serde_json's limit is fine, and kept verbatim in an unknown part.
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let parts = vec![
        bf(BF),
        ident("target", "t"),
        ident("pseudonym", "p"),
        json!({ "name": "x", "valueQuantity": deep }),
    ];
    let list = parse_list(vec![task("dic_psn_available", parts)]);
    assert_eq!(list.tasks.len(), 1);
}

#[test]
fn large_task_counts_within_the_limits_all_parse() {
    let n = 5_000;
    let tasks: Vec<Json> = (0..n)
        .map(|i| {
            let mut parts = send_idat_parts();
            parts[1] = task_id(&format!("task-{i}"));
            task("send_idat", parts)
        })
        .collect();
    let list = parse_tasks(&body(Json::Array(tasks))).unwrap();
    assert_eq!(list.tasks.len(), n);
    assert!(list.problems.is_empty());
    let keys: std::collections::BTreeSet<_> = list.tasks.iter().map(|t| t.key()).collect();
    assert_eq!(keys.len(), n);
}

#[test]
fn task_counts_beyond_the_limit_are_one_problem_not_an_allocation() {
    let limits = ParseLimits {
        max_tasks: 10,
        ..ParseLimits::default()
    };
    let n = 5_000;
    let mut text = String::from(r#"{"resourceType":"Parameters","parameter":["#);
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&task("repeat_request", repeat_parts()).to_string());
    }
    text.push_str("]}");
    let list = parse_tasks_with(text.as_bytes(), &limits).unwrap();
    assert_eq!(list.tasks.len(), 10);
    assert_eq!(list.problems.len(), 1);
    assert_eq!(list.problems[0].index, 10);
    assert!(
        list.problems[0].reason.contains("lists 5000 tasks"),
        "{:?}",
        list.problems
    );
    // Entries past the limit are skipped even when they are broken JSON values of any shape.
    let mixed =
        r#"{"resourceType":"Parameters","parameter":[{"name":"a"},{"x":[1,{"y":null}]},"s",7]}"#;
    let one = ParseLimits {
        max_tasks: 1,
        ..ParseLimits::default()
    };
    let list = parse_tasks_with(mixed.as_bytes(), &one).unwrap();
    assert_eq!((list.tasks.len(), list.problems.len()), (1, 1));
}

#[test]
fn a_huge_element_list_is_a_problem() {
    let mut parts = send_idat_parts();
    parts.extend((0..10_000).map(|_| element("given")));
    let entry = task("send_idat", parts);
    // Larger than an entry may be (ParseLimits::max_entry_bytes): a problem, without a tree.
    let problem = problem_of(entry.clone());
    assert!(
        problem.reason.contains("bytes, more than the limit"),
        "{problem:?}"
    );
    // Within that limit, the element count is the problem.
    let roomy = ParseLimits {
        max_entry_bytes: 4 << 20,
        ..ParseLimits::default()
    };
    let list = parse_tasks_with(&body(json!([entry])), &roomy).unwrap();
    assert!(
        list.problems[0].reason.contains("10002 `element` parts"),
        "{:?}",
        list.problems
    );
}

#[test]
fn huge_strings_are_handled() {
    let big = "A".repeat(200_000);
    let parts = vec![bf(&big), ident("target", "t"), ident("pseudonym", "p")];
    // 200 kB of 'A' is valid base64: a (silly) 150 kB filter, accepted as such.
    let list = parse_list(vec![task("dic_psn_available", parts)]);
    assert_eq!(list.tasks.len(), 1);
    let parts = vec![bf(BF), ident("target", &big), ident("pseudonym", "p")];
    let problem = problem_of(task("dic_psn_available", parts));
    assert!(problem.reason.contains("longer than 256"));
    assert!(problem.reason.len() < 200);
    assert_accounted(&body(json!([{ "name": big }])), 1);
}

/// A listing of 95,000 tasks of unknown types (the size of a real finding: ~15 MB), with the
/// site's real tasks spread between them and after them.
fn flood(unknown: usize, known_every: usize) -> (String, usize) {
    let mut text = String::from(r#"{"resourceType":"Parameters","parameter":["#);
    let mut known = 0;
    for i in 0..unknown {
        if i > 0 {
            text.push(',');
        }
        let name = if i % 2 == 0 {
            "delete_everything"
        } else {
            "mine_coins"
        };
        text.push_str(&format!(
            r#"{{"name":"{name}","part":[{{"name":"n","valueString":"{i:08}"}},{{"name":"payload","valueString":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}]}}"#
        ));
        if i % known_every == 0 {
            let id = format!("t-{i}");
            let mut parts = send_idat_parts();
            parts[1] = task_id(&id);
            text.push(',');
            text.push_str(&task("send_idat", parts).to_string());
            known += 1;
        }
    }
    text.push_str("]}");
    (text, known)
}

#[test]
fn a_flood_of_unknown_tasks_is_summarised_and_every_known_task_is_kept() {
    let (text, known) = flood(95_000, 1_000);
    let limits = ParseLimits::default();
    let list = parse_tasks_with(text.as_bytes(), &limits).unwrap();
    let unknown: Vec<_> = list
        .tasks
        .iter()
        .filter(|t| matches!(t.kind, ttp_proto::TaskKind::Unknown { .. }))
        .collect();
    assert_eq!(unknown.len(), limits.max_unknown);
    assert_eq!(
        list.tasks.len() - unknown.len(),
        known,
        "every known task is kept"
    );
    assert_eq!(list.problems.len(), 1, "{:?}", list.problems);
    let summary = &list.problems[0];
    assert!(summary.key.0.starts_with("malformed/unknown-summary/"));
    assert!(
        summary
            .reason
            .contains("94980 more unknown or unreadable tasks")
            && summary.reason.contains("47490 × `delete_everything`")
            && summary.reason.contains("47490 × `mine_coins`"),
        "{}",
        summary.reason
    );
    // The summary keeps its identity while the same kinds keep coming, in any number.
    let (fewer, _) = flood(30_000, 1_000);
    let again = parse_tasks_with(fewer.as_bytes(), &limits).unwrap();
    assert_eq!(again.problems[0].key, summary.key);
}

#[test]
fn countless_broken_known_tasks_are_summarised_too() {
    let broken = task("dic_psn_available", vec![bf("not*base64")]);
    let n = 5_000;
    let list = parse_list((0..n).map(|_| broken.clone()).collect());
    assert_eq!(list.tasks.len(), 0);
    let limits = ParseLimits::default();
    assert_eq!(list.problems.len(), limits.max_unknown + 1);
    let summary = list.problems.last().unwrap();
    assert!(
        summary
            .reason
            .contains(&format!("{} × `dic_psn_available`", n - limits.max_unknown)),
        "{}",
        summary.reason
    );
}

#[test]
fn an_entry_larger_than_the_limit_is_a_problem_without_being_parsed() {
    let limits = ParseLimits {
        max_entry_bytes: 1_000,
        ..ParseLimits::default()
    };
    let big = task("send_idat", vec![ident("x", &"y".repeat(2_000))]);
    let list = parse_tasks_with(
        &body(json!([big, task("repeat_request", repeat_parts())])),
        &limits,
    )
    .unwrap();
    assert_eq!(list.tasks.len(), 1);
    assert_eq!(list.problems.len(), 1);
    assert!(
        list.problems[0]
            .reason
            .contains("more than the limit of 1000"),
        "{:?}",
        list.problems
    );
    assert!(list.problems[0].key.0.starts_with("malformed/send_idat/"));
}
