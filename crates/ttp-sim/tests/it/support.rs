//! Helpers shared by the integration tests: a plain HTTP client that speaks the dispatcher's
//! JSON by hand (not through any codec), synthetic filters and synthetic patients.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use ttp_sim::{IDAT_PROFILE, SimConfig, SimHandle};

pub const STUDY: &str = "mii";
pub const TARGET: &str = "dic_sim";
pub const FHIR_JSON: &str = "application/fhir+json";

/// A synthetic 64-byte Bloom filter, distinct for each `n`.
pub fn filter(n: u32) -> String {
    filter_of_len(n, 64)
}

/// A synthetic filter of `len` (≥ 4) bytes whose first four bytes are `n`.
pub fn filter_of_len(n: u32, len: usize) -> String {
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(n.wrapping_mul(17)) as u8)
        .collect();
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    STANDARD.encode(bytes)
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    /// Extra headers for every request (authentication).
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(sim: &SimHandle) -> Self {
        Self::with_timeout(sim, Duration::from_secs(30))
    }

    pub fn with_timeout(sim: &SimHandle, timeout: Duration) -> Self {
        // In a workspace build, Cargo unifies reqwest's features with the agent's
        // (`rustls-no-provider`), and reqwest then needs a process-wide crypto provider even for
        // plain-HTTP clients. Installing one is harmless when rustls is not compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("reqwest client");
        Self {
            http,
            base: sim.base_url(),
            headers: Vec::new(),
        }
    }

    pub fn url(&self, op: &str) -> String {
        format!("{}/{op}", self.base)
    }

    pub fn request(&self, op: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.url(op))
            .header("content-type", FHIR_JSON)
            .body(body);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request
    }

    pub async fn post(&self, op: &str, body: &Value) -> Reply {
        let response = self
            .request(op, serde_json::to_vec(body).expect("json"))
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn register(&self, filters: &[&str]) -> Reply {
        self.post("$requestPsnFromBfWorkflow", &registration(filters))
            .await
    }

    pub async fn tasks(&self) -> Reply {
        self.post("$requestTasks", &tasks_request()).await
    }

    /// Lists the tasks and returns the first `send_idat` among them.
    pub async fn first_send_idat(&self) -> Value {
        let tasks = self.tasks().await.body;
        named(&tasks, "send_idat").swap_remove(0)
    }

    pub async fn provide(&self, task_id: &str, patient: Value) -> Reply {
        self.post(
            "$providePatientData",
            &provide_request(task_id, TARGET, patient),
        )
        .await
    }
}

/// A simulator started with `cfg` and a client for it: the first two lines of most tests.
pub async fn started(cfg: SimConfig) -> (SimHandle, Client) {
    let sim = ttp_sim::start(cfg).await.expect("start");
    let client = Client::new(&sim);
    (sim, client)
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        body,
    }
}

pub fn registration(filters: &[&str]) -> Value {
    let mut parameter = vec![json!({ "name": "study", "valueString": STUDY })];
    parameter.extend(
        filters
            .iter()
            .map(|f| json!({ "name": "bloomfilter", "valueBase64Binary": f })),
    );
    parameter.push(json!({ "name": "target", "valueString": TARGET }));
    json!({ "resourceType": "Parameters", "parameter": parameter })
}

pub fn tasks_request() -> Value {
    json!({ "resourceType": "Parameters", "parameter": [
        { "name": "study", "valueString": STUDY },
        { "name": "target", "valueString": TARGET } ] })
}

pub fn provide_request(task_id: &str, target: &str, patient: Value) -> Value {
    json!({ "resourceType": "Parameters", "parameter": [
        { "name": "taskId", "valueId": task_id },
        { "name": "target", "valueString": target },
        { "name": "patient", "resource": patient } ] })
}

/// The `parameter` entries of a Parameters body (empty when there are none).
pub fn params(body: &Value) -> Vec<Value> {
    body.get("parameter")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn named(body: &Value, name: &str) -> Vec<Value> {
    params(body)
        .into_iter()
        .filter(|p| p["name"] == name)
        .collect()
}

/// The first part called `name` of a multi-part parameter.
pub fn part<'a>(param: &'a Value, name: &str) -> &'a Value {
    param["part"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn parts<'a>(param: &'a Value, name: &str) -> Vec<&'a Value> {
    param["part"]
        .as_array()
        .map(|parts| parts.iter().filter(|p| p["name"] == name).collect())
        .unwrap_or_default()
}

/// `(part name, value key)` for every part: what a parameter looks like, without values.
pub fn shape(param: &Value) -> Vec<(String, String)> {
    param["part"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    let key = p
                        .as_object()
                        .and_then(|o| o.keys().find(|k| k.as_str() != "name").cloned())
                        .unwrap_or_default();
                    (p["name"].as_str().unwrap_or_default().to_owned(), key)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `send_idat` task's `taskId`.
pub fn task_id(send_idat: &Value) -> &str {
    part(send_idat, "taskId")["valueId"].as_str().expect("id")
}

pub fn requested_elements(send_idat: &Value) -> Vec<String> {
    parts(send_idat, "element")
        .iter()
        .map(|e| e["valueCoding"]["code"].as_str().expect("code").to_owned())
        .collect()
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture json")
}

/// A synthetic Patient carrying exactly `elements`, mapped as the Idat profile prescribes.
pub fn patient_with(elements: &[String]) -> Value {
    let has = |code: &str| elements.iter().any(|e| e == code);
    let mut patient = json!({
        "resourceType": "Patient",
        "meta": { "profile": [IDAT_PROFILE] }
    });
    let mut name = serde_json::Map::new();
    if has("family") {
        name.insert("family".into(), json!("Testfamilie"));
    }
    if has("given") {
        name.insert("given".into(), json!(["Testvorname"]));
    }
    let mut prefixes = Vec::new();
    let mut qualifiers = Vec::new();
    if has("prefix") {
        prefixes.push(json!("Frau"));
        qualifiers.push(Value::Null);
    }
    if has("degree") {
        prefixes.push(json!("Dr."));
        qualifiers.push(json!({ "extension": [ {
            "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
            "valueCode": "AC" } ] }));
    }
    if !prefixes.is_empty() {
        name.insert("prefix".into(), Value::Array(prefixes));
        if has("degree") {
            name.insert("_prefix".into(), Value::Array(qualifiers));
        }
    }
    if has("suffix") {
        name.insert("suffix".into(), json!(["Jr."]));
    }
    let mut names = Vec::new();
    if !name.is_empty() {
        names.push(Value::Object(name));
    }
    if has("maidenname") {
        names.push(json!({ "use": "maiden", "family": "Testgeburtsname" }));
    }
    if !names.is_empty() {
        patient["name"] = Value::Array(names);
    }
    if has("birthdate") {
        patient["birthDate"] = json!("1970-01-01");
    }
    if has("gender") {
        patient["gender"] = json!("other");
    }
    let mut address = serde_json::Map::new();
    if has("address-line") {
        address.insert("line".into(), json!(["Teststrasse 1"]));
    }
    if has("address-city") {
        address.insert("city".into(), json!("Teststadt"));
    }
    if has("address-postalcode") {
        address.insert("postalCode".into(), json!("00000"));
    }
    if !address.is_empty() {
        patient["address"] = json!([Value::Object(address)]);
    }
    let mut extensions = Vec::new();
    if has("birthplace") {
        extensions.push(json!({
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": { "city": "Testgeburtsort" } }));
    }
    if has("nationality") {
        extensions.push(json!({
            "url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
            "extension": [ { "url": "code", "valueCodeableConcept": {
                "coding": [ { "system": "urn:iso:std:iso:3166", "code": "DE" } ] } } ] }));
    }
    if !extensions.is_empty() {
        patient["extension"] = Value::Array(extensions);
    }
    if has("language") {
        patient["communication"] = json!([ { "language": { "coding": [ {
            "system": "urn:ietf:bcp:47", "code": "de" } ] }, "preferred": true } ]);
    }
    if has("maritalstatus") {
        patient["maritalStatus"] = json!({ "coding": [ {
            "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "U" } ] });
    }
    patient
}

pub fn all_elements() -> Vec<String> {
    ttp_sim::KNOWN_ELEMENTS
        .iter()
        .map(|code| (*code).to_owned())
        .collect()
}

pub fn codes(list: &[&str]) -> Vec<String> {
    list.iter().map(|code| (*code).to_owned()).collect()
}
