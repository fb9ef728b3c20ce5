//! The seam between the HTTP layer and the wire format (`ttp_proto`).
//!
//! The client moves bytes; `ttp_proto` knows what the bytes mean. Every use of the wire format
//! goes through this file, so the HTTP layer can be built and tested on its own.
//!
//! # STUB until `ttp-proto` is merged
//!
//! `ttp_proto::ops` and `ttp_proto::outcome` are being written in parallel. Until they land,
//! this file builds the three request bodies itself (per the IG examples), accepts only
//! *empty* `Parameters` responses (a response with tasks or pseudonyms is reported as
//! malformed rather than silently dropped), and summarises error bodies itself. After the
//! merge, replace the body of this file below the imports with:
//!
//! ```text
//! pub use ttp_proto::ops::PsnResponse;
//!
//! pub(crate) fn request_tasks_body(study: &str, target: &str, api_key: Option<&str>) -> Vec<u8> {
//!     with_key(ttp_proto::ops::request_tasks(study, target), api_key).to_json_bytes()
//! }
//! pub(crate) fn request_psn_body(study: &str, target: &str, filters: &[BloomFilter], api_key: Option<&str>) -> Vec<u8> {
//!     with_key(ttp_proto::ops::request_psn_from_bf(study, target, filters), api_key).to_json_bytes()
//! }
//! pub(crate) fn provide_patient_data_body(task_id: &str, target: &str, patient: serde_json::Value, api_key: Option<&str>) -> Vec<u8> {
//!     with_key(ttp_proto::ops::provide_patient_data(task_id, target, patient), api_key).to_json_bytes()
//! }
//! fn with_key(p: ttp_proto::Parameters, api_key: Option<&str>) -> ttp_proto::Parameters {
//!     match api_key { Some(key) => p.with_api_key(key), None => p }
//! }
//! pub(crate) use ttp_proto::ops::parse_psn_response;
//! pub(crate) use ttp_proto::outcome::summarize_error_body;
//! pub(crate) use ttp_proto::task::parse_tasks;
//! ```
//!
//! and delete the stub tests at the bottom.

use serde_json::{Value, json};
use ttp_proto::{BloomFilter, ProtoError, TaskList};

/// STUB: stands in for `ttp_proto::ops::PsnResponse` (the typed `$requestPsnFromBfWorkflow`
/// answer) until `ttp-proto` is merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PsnResponse {}

fn parameters(mut parameter: Vec<Value>, api_key: Option<&str>) -> Vec<u8> {
    if let Some(key) = api_key {
        parameter.push(json!({ "name": "apikey", "valueString": key }));
    }
    json!({ "resourceType": "Parameters", "parameter": parameter })
        .to_string()
        .into_bytes()
}

pub(crate) fn request_tasks_body(study: &str, target: &str, api_key: Option<&str>) -> Vec<u8> {
    parameters(
        vec![
            json!({ "name": "study", "valueString": study }),
            json!({ "name": "target", "valueString": target }),
        ],
        api_key,
    )
}

pub(crate) fn request_psn_body(
    study: &str,
    target: &str,
    filters: &[BloomFilter],
    api_key: Option<&str>,
) -> Vec<u8> {
    let mut parameter = vec![json!({ "name": "study", "valueString": study })];
    parameter.extend(
        filters
            .iter()
            .map(|f| json!({ "name": "bloomfilter", "valueBase64Binary": f.to_base64() })),
    );
    parameter.push(json!({ "name": "target", "valueString": target }));
    parameters(parameter, api_key)
}

pub(crate) fn provide_patient_data_body(
    task_id: &str,
    target: &str,
    patient: Value,
    api_key: Option<&str>,
) -> Vec<u8> {
    parameters(
        vec![
            json!({ "name": "taskId", "valueId": task_id }),
            json!({ "name": "target", "valueString": target }),
            json!({ "name": "patient", "resource": patient }),
        ],
        api_key,
    )
}

/// STUB: accepts a `Parameters` resource without entries only.
fn parse_empty_parameters(body: &[u8]) -> Result<(), ProtoError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ProtoError::NotJson(e.to_string()))?;
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => {}
        other => {
            return Err(ProtoError::WrongResourceType(
                other.unwrap_or_default().to_string(),
            ));
        }
    }
    match value.get("parameter") {
        None => Ok(()),
        Some(Value::Array(entries)) if entries.is_empty() => Ok(()),
        Some(_) => Err(ProtoError::Malformed(
            "stub parser (ttp-proto not merged yet) cannot read parameters".into(),
        )),
    }
}

pub(crate) fn parse_tasks(body: &[u8]) -> Result<TaskList, ProtoError> {
    parse_empty_parameters(body).map(|()| TaskList::default())
}

pub(crate) fn parse_psn_response(body: &[u8]) -> Result<PsnResponse, ProtoError> {
    parse_empty_parameters(body).map(|()| PsnResponse::default())
}

/// STUB: a short, log-safe summary of an error body: the `OperationOutcome` issues when there
/// are any, the HTML `<title>` of a proxy page, or the size and type of anything else.
pub(crate) fn summarize_error_body(content_type: Option<&str>, body: &[u8]) -> String {
    if body.is_empty() {
        return "empty body".into();
    }
    let outcome = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome"));
    if let Some(value) = outcome {
        let issues: Vec<String> = value
            .get("issue")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|issue| {
                let field = |name: &str| issue.get(name).and_then(Value::as_str).unwrap_or("");
                let text = issue
                    .pointer("/details/text")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| field("diagnostics"));
                format!("{} {}: {}", field("severity"), field("code"), text)
            })
            .collect();
        return format!("OperationOutcome: {}", issues.join("; "));
    }
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>")) {
        // ASCII lowercasing keeps byte offsets, so they index `text` too.
        if let Some(title) = text.get(start + 7..end) {
            return format!("HTML page: {}", title.trim());
        }
    }
    format!(
        "{} bytes of {}",
        body.len(),
        content_type.unwrap_or("unknown content type")
    )
}

#[cfg(test)]
mod stub_tests {
    use super::*;

    #[test]
    fn request_bodies_follow_the_ig_examples() {
        let body: Value =
            serde_json::from_slice(&request_tasks_body("mii", "eyematics", None)).expect("json");
        assert_eq!(
            body,
            json!({ "resourceType": "Parameters", "parameter": [
                { "name": "study", "valueString": "mii" },
                { "name": "target", "valueString": "eyematics" } ] })
        );
        let body: Value = serde_json::from_slice(&request_psn_body(
            "mii",
            "dic",
            &[BloomFilter(vec![1, 2, 3])],
            Some("k"),
        ))
        .expect("json");
        assert_eq!(body["parameter"][1]["valueBase64Binary"], "AQID");
        assert_eq!(
            body["parameter"][3],
            json!({ "name": "apikey", "valueString": "k" })
        );
    }

    #[test]
    fn stub_parsers_refuse_what_they_cannot_read() {
        assert!(parse_tasks(br#"{"resourceType":"Parameters"}"#).is_ok());
        assert!(matches!(
            parse_tasks(br#"{"resourceType":"Parameters","parameter":[{"name":"x"}]}"#),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            parse_psn_response(br#"{"resourceType":"Bundle"}"#),
            Err(ProtoError::WrongResourceType(_))
        ));
        assert!(matches!(
            parse_tasks(b"<html>"),
            Err(ProtoError::NotJson(_))
        ));
    }
}
