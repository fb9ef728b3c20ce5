//! Task identity: keys are stable store keys, independent of what may vary between listings
//! of the same task, and safe to log.

use crate::common::*;
use serde_json::{Value as Json, json};
use sha2::Digest as _;
use ttp_proto::task::ParseLimits;
use ttp_proto::{TaskKey, parse_tasks_with};

fn digest32(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))[..32].to_owned()
}

fn key_of(parameter: Json) -> TaskKey {
    parse_one(parameter).unwrap().key()
}

/// Every ordering of `items` (Heap's algorithm; fine for the 3 to 5 parts used here).
fn permutations(items: Vec<Json>) -> Vec<Vec<Json>> {
    fn heap(k: usize, items: &mut Vec<Json>, out: &mut Vec<Vec<Json>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    let mut items = items;
    let n = items.len();
    heap(n, &mut items, &mut out);
    out
}

#[test]
fn example_tasks_have_the_documented_keys() {
    let list = ttp_proto::parse_tasks(&example("requestTasks-response.json")).unwrap();
    let keys: Vec<String> = list.tasks.iter().map(|t| t.key().0).collect();
    let digest = digest32(BF_BYTES);
    assert_eq!(
        keys,
        [
            format!("dic_psn_available/eyematics/{digest}"),
            "send_idat/064ddebf-b20e-468a-97fd-88097bcdbc11".to_owned(),
            format!("repeat_request/eyematics/{digest}"),
        ]
    );
}

#[test]
fn part_order_does_not_change_content_keys() {
    for (name, parts) in [
        ("dic_psn_available", with_expires(dic_parts())),
        ("repeat_request", with_expires(repeat_parts())),
        ("send_idat", send_idat_parts()),
    ] {
        let orders = permutations(parts.clone());
        assert!(orders.len() >= 24);
        let reference = key_of(task(name, parts));
        for order in orders {
            assert_eq!(key_of(task(name, order)), reference, "{name}");
        }
    }
}

fn with_expires(mut parts: Vec<Json>) -> Vec<Json> {
    parts.insert(1, expires("2030-01-01T00:00:00Z"));
    parts
}

#[test]
fn expires_and_unknown_parts_do_not_change_content_keys() {
    for (name, parts) in [
        ("dic_psn_available", dic_parts()),
        ("repeat_request", repeat_parts()),
    ] {
        let reference = key_of(task(name, parts.clone()));
        for variant in [
            with_expires(parts.clone()),
            {
                let mut p = parts.clone();
                p.push(expires("2031-06-01T12:00:00.123+01:00"));
                p
            },
            {
                let mut p = parts.clone();
                p.push(json!({ "name": "priority", "valueCode": "high" }));
                p
            },
        ] {
            assert_eq!(key_of(task(name, variant)), reference, "{name}");
        }
    }
}

#[test]
fn identifier_systems_and_the_pseudonym_do_not_change_dic_keys() {
    let reference = key_of(task("dic_psn_available", dic_parts()));
    let other_system = vec![
        bf(BF),
        json!({ "name": "target", "valueIdentifier": { "system": "https://ths-greifswald.de/dispatcher", "value": "eyematics" } }),
        json!({ "name": "pseudonym", "valueString": "another" }),
    ];
    assert_eq!(key_of(task("dic_psn_available", other_system)), reference);
    let padded_filter = vec![
        bf(&format!("\n{BF} ")),
        ident("target", "eyematics"),
        ident("pseudonym", "mii_6348Q7"),
    ];
    assert_eq!(key_of(task("dic_psn_available", padded_filter)), reference);
}

#[test]
fn filter_target_and_type_distinguish_content_keys() {
    let base = key_of(task("dic_psn_available", dic_parts()));
    let other_filter = vec![
        bf(OTHER_BF),
        ident("target", "eyematics"),
        ident("pseudonym", "p"),
    ];
    let other_target = vec![
        bf(BF),
        ident("target", "dic_muenster"),
        ident("pseudonym", "p"),
    ];
    let repeat = key_of(task("repeat_request", repeat_parts()));
    let keys = [
        base,
        key_of(task("dic_psn_available", other_filter)),
        key_of(task("dic_psn_available", other_target)),
        repeat,
    ];
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i], keys[j]);
        }
    }
}

#[test]
fn send_idat_keys_follow_the_task_id_only() {
    let base = key_of(task("send_idat", send_idat_parts()));
    assert_eq!(base.0, "send_idat/064ddebf-b20e-468a-97fd-88097bcdbc11");
    let mut other_content = send_idat_parts();
    other_content[0] = expires("2040-01-01T00:00:00Z");
    other_content[2] = bf(BF);
    other_content.push(element("gender"));
    assert_eq!(key_of(task("send_idat", other_content)), base);
    let mut other_id = send_idat_parts();
    other_id[1] = task_id("064ddebf-b20e-468a-97fd-88097bcdbc12");
    assert_ne!(key_of(task("send_idat", other_id)), base);
}

#[test]
fn unknown_task_keys_digest_the_canonical_json() {
    let a: Json = serde_json::from_str(
        r#"{"name":"send_consent","part":[{"name":"what","valueCoding":{"system":"s","code":"c"}}]}"#,
    )
    .unwrap();
    // Same content, other key order in the objects (as another serialiser would write it).
    let b: Json = serde_json::from_str(
        r#"{"part":[{"valueCoding":{"code":"c","system":"s"},"name":"what"}],"name":"send_consent"}"#,
    )
    .unwrap();
    let key = key_of(a.clone());
    assert_eq!(key_of(b), key);
    assert_eq!(
        key.0,
        format!("send_consent/sha256:{}", digest32(a.to_string().as_bytes()))
    );
    assert_eq!(
        a.to_string(),
        r#"{"name":"send_consent","part":[{"name":"what","valueCoding":{"code":"c","system":"s"}}]}"#
    );
    let changed = json!({ "name": "send_consent", "part": [ { "name": "what", "valueCoding": { "system": "s", "code": "d" } } ] });
    assert_ne!(key_of(changed), key);
}

#[test]
fn problem_keys_are_stable_and_distinct() {
    let broken = json!({ "name": "send_idat", "part": [ task_id("t1"), element("given") ] });
    let reordered: Json = serde_json::from_str(
        r#"{"part":[{"valueId":"t1","name":"taskId"},{"name":"element","valueCoding":{"code":"given","system":"https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements"}}],"name":"send_idat"}"#,
    )
    .unwrap();
    let key = problem_of(broken.clone()).key;
    assert_eq!(problem_of(reordered).key, key);
    assert_eq!(
        key.0,
        format!(
            "malformed/send_idat/{}",
            digest32(broken.to_string().as_bytes())
        )
    );
    let other = json!({ "name": "send_idat", "part": [ task_id("t2"), element("given") ] });
    assert_ne!(problem_of(other).key, key);
    let unnamed = problem_of(json!({ "part": [] }));
    assert!(
        unnamed.key.0.starts_with("malformed/unnamed/"),
        "{:?}",
        unnamed.key
    );
    assert_eq!(unnamed.key(), &unnamed.key);
}

#[test]
fn keys_are_single_printable_lines_without_secrets() {
    let parts = vec![
        bf(BF),
        ident("target", "eyematics"),
        ident("pseudonym", "mii_6348Q7"),
    ];
    let plain = key_of(task("dic_psn_available", parts));
    assert!(!plain.0.contains(BF) && !plain.0.contains("mii_6348Q7"));

    let hostile_target = json!({ "name": "target", "valueString": "a/b c%ü" });
    let parts = vec![bf(BF), hostile_target, ident("pseudonym", "p")];
    let escaped = key_of(task("dic_psn_available", parts));
    assert_eq!(
        escaped.0,
        format!(
            "dic_psn_available/a%2Fb%20c%25%C3%BC/{}",
            digest32(BF_BYTES)
        )
    );
    let hostile_name = key_of(json!({ "name": "x/y\u{7}z", "valueString": "v" }));
    assert!(
        hostile_name.0.starts_with("x%2Fy%07z/sha256:"),
        "{hostile_name}"
    );
    let long_name = key_of(json!({ "name": "n".repeat(10_000) }));
    assert!(long_name.0.starts_with("long-name/sha256:") && long_name.0.len() < 100);
    for key in [plain, escaped, hostile_name, long_name] {
        assert!(key.0.chars().all(|c| c.is_ascii_graphic()), "{key}");
        assert_eq!(
            key.0.split('/').count(),
            if key.0.starts_with("dic") { 3 } else { 2 },
            "{key}"
        );
    }
}

#[test]
fn the_task_limit_problem_has_one_stable_key() {
    let limits = ParseLimits {
        max_tasks: 2,
        ..ParseLimits::default()
    };
    let body_of = |n: usize| {
        body(Json::Array(
            (0..n)
                .map(|_| task("dic_psn_available", dic_parts()))
                .collect(),
        ))
    };
    let five = parse_tasks_with(&body_of(5), &limits).unwrap();
    let nine = parse_tasks_with(&body_of(9), &limits).unwrap();
    assert_eq!(five.problems.len(), 1);
    assert_eq!(five.problems[0].key, nine.problems[0].key);
    assert!(five.problems[0].key.0.starts_with("malformed/task-limit/"));
    assert_eq!(
        nine.problems[0].reason,
        "the response lists 9 tasks, more than the limit of 2 (ParseLimits::max_tasks); the last 7 were not read"
    );
}
