//! Helpers shared by the integration tests. All data is synthetic (the IG's "Mustermann").
#![allow(dead_code)]

use serde_json::{Value as Json, json};
use ttp_proto::task::{Task, TaskList, TaskProblem};

/// An example body from the reference material.
///
/// The reference directory `shared/` sits next to the main checkout (`/work/shared` for
/// `/work/main`), so its depth above this crate differs between the main checkout and
/// worktrees: look for it in each ancestor.
pub fn example(name: &str) -> Vec<u8> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = manifest
        .ancestors()
        .map(|dir| dir.join("shared/reference/fttp-examples").join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("no shared/reference/fttp-examples/{name} above {manifest:?}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
}

pub fn example_json(name: &str) -> Json {
    serde_json::from_slice(&example(name)).unwrap()
}

/// The Bloom filter of the examples, base64 and raw.
pub const BF: &str = "SWNoIGJpbiBlaW4gQmxvb21maWx0ZXIuIFZlcnNwcm9jaGVuLg==";
pub const BF_BYTES: &[u8] = b"Ich bin ein Bloomfilter. Versprochen.";
pub const OTHER_BF: &str = "QW5kZXJlciBCbG9vbWZpbHRlci4=";
pub const GPAS: &str = "https://ths-greifswald.de/gpas";
pub const ELEMENTS: &str = "https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements";

pub fn body(parameters: Json) -> Vec<u8> {
    json!({ "resourceType": "Parameters", "parameter": parameters })
        .to_string()
        .into_bytes()
}

pub fn task(name: &str, parts: Vec<Json>) -> Json {
    json!({ "name": name, "part": parts })
}

pub fn ident(name: &str, value: &str) -> Json {
    json!({ "name": name, "valueIdentifier": { "system": GPAS, "value": value } })
}

pub fn bf(value: &str) -> Json {
    json!({ "name": "bloomfilter", "valueBase64Binary": value })
}

pub fn expires(value: &str) -> Json {
    json!({ "name": "expires", "valueInstant": value })
}

pub fn task_id(value: &str) -> Json {
    json!({ "name": "taskId", "valueId": value })
}

pub fn element(code: &str) -> Json {
    json!({ "name": "element", "valueCoding": { "system": ELEMENTS, "code": code } })
}

pub fn dic_parts() -> Vec<Json> {
    vec![
        bf(BF),
        ident("target", "eyematics"),
        ident("pseudonym", "mii_6348Q7"),
    ]
}

pub fn send_idat_parts() -> Vec<Json> {
    vec![
        expires("2021-05-28T13:00:00.00+02:00"),
        task_id("064ddebf-b20e-468a-97fd-88097bcdbc11"),
        ident("pseudonym", "mii_1244Q2"),
        element("given"),
        element("family"),
    ]
}

pub fn repeat_parts() -> Vec<Json> {
    vec![ident("study", "mii"), bf(BF), ident("target", "eyematics")]
}

/// Parses a body holding exactly one task parameter.
pub fn parse_list(parameters: Vec<Json>) -> TaskList {
    ttp_proto::parse_tasks(&body(Json::Array(parameters))).unwrap()
}

pub fn parse_one(parameter: Json) -> Result<Task, TaskProblem> {
    let mut list = parse_list(vec![parameter]);
    assert_eq!(list.tasks.len() + list.problems.len(), 1, "{list:?}");
    match list.tasks.pop() {
        Some(task) => Ok(task),
        None => Err(list.problems.pop().unwrap()),
    }
}

pub fn problem_of(parameter: Json) -> TaskProblem {
    match parse_one(parameter) {
        Ok(task) => panic!("expected a problem, got {task:?}"),
        Err(problem) => problem,
    }
}

/// Deterministic pseudo-random numbers (xorshift64*), for property-style tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
