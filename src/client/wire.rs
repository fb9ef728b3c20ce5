//! The seam between the HTTP layer and the wire format (`ttp_proto`).
//!
//! The client moves bytes; `ttp_proto` knows what the bytes mean. Every use of the wire format
//! goes through this file, so the HTTP layer can be built and tested on its own.

use ttp_proto::BloomFilter;

pub use ttp_proto::ops::PsnResponse;
pub(crate) use ttp_proto::ops::parse_psn_response;
pub(crate) use ttp_proto::outcome::summarize_error_body;
pub use ttp_proto::task::ParseLimits;
pub(crate) use ttp_proto::task::parse_tasks_with;

pub(crate) fn request_tasks_body(study: &str, target: &str, api_key: Option<&str>) -> Vec<u8> {
    with_key(ttp_proto::ops::request_tasks(study, target), api_key).to_json_bytes()
}

pub(crate) fn request_psn_body(
    study: &str,
    target: &str,
    filters: &[BloomFilter],
    api_key: Option<&str>,
) -> Vec<u8> {
    with_key(
        ttp_proto::ops::request_psn_from_bf(study, target, filters),
        api_key,
    )
    .to_json_bytes()
}

pub(crate) fn provide_patient_data_body(
    task_id: &str,
    target: &str,
    patient: serde_json::Value,
    api_key: Option<&str>,
) -> Vec<u8> {
    with_key(
        ttp_proto::ops::provide_patient_data(task_id, target, patient),
        api_key,
    )
    .to_json_bytes()
}

fn with_key(p: ttp_proto::Parameters, api_key: Option<&str>) -> ttp_proto::Parameters {
    match api_key {
        Some(key) => p.with_api_key(key),
        None => p,
    }
}
