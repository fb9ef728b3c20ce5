//! The fTTP dispatcher's wire format: FHIR `Parameters` bodies, typed.
//!
//! This crate is pure (no I/O): it turns request intents into `Parameters` JSON and response
//! bodies into typed values, tolerating what real gateways send (unknown task types, unknown
//! parts, odd Identifier systems) and reporting what it cannot use instead of failing the whole
//! response. The HTTP client (in the agent) and the simulator (in `ttp-sim`, which deliberately
//! does not use this crate) are elsewhere.
//!
//! * [`parameters`]: the generic FHIR `Parameters` codec, strict for our own bodies and
//!   tolerant (entry by entry, bounded) for responses.
//! * [`task`]: `$requestTasks` responses as typed [`Task`]s plus [`TaskProblem`]s, and the
//!   stable identity of each ([`Task::key`]).
//! * [`ops`]: request bodies of the operations the agent calls, and the
//!   `$requestPsnFromBfWorkflow` response.
//! * [`patient`]: the minimal `Patient` answering a `send_idat` task.
//! * [`value`]: the domain value types of IDAT (gender with the German codes, partial dates,
//!   country, language, marital status) and their one canonical parser.
//! * [`outcome`]: one-line summaries of error bodies.
//!
//! A poll, as the agent does it:
//!
//! ```
//! use ttp_proto::{TaskKind, parse_tasks, request_tasks};
//!
//! let request = request_tasks("mii", "eyematics").to_json_bytes();
//! assert!(request.starts_with(br#"{"resourceType":"Parameters""#));
//!
//! // ... POST `request` to `.../dispatcher/$requestTasks`; the gateway answers:
//! let response = br#"{"resourceType":"Parameters","parameter":[
//!     {"name":"send_idat","part":[
//!         {"name":"expires","valueInstant":"2030-05-28T13:00:00.00+02:00"},
//!         {"name":"taskId","valueId":"t-1"},
//!         {"name":"pseudonym","valueIdentifier":{"value":"psn-1"}},
//!         {"name":"element","valueCoding":{"code":"given"}}]},
//!     {"name":"send_idat","part":[{"name":"taskId","valueId":"t-2"}]}]}"#;
//!
//! let list = parse_tasks(response)?;
//! assert_eq!(list.tasks.len(), 1);
//! assert_eq!(list.tasks[0].key().0, "send_idat/t-1");
//! assert!(matches!(list.tasks[0].kind, TaskKind::SendIdat { .. }));
//! // The broken second task is reported, not dropped silently, and did not cost the first.
//! assert_eq!(list.problems[0].index, 1);
//! assert!(list.problems[0].reason.contains("part `expires` is missing"));
//! # Ok::<(), ttp_proto::ProtoError>(())
//! ```

pub mod element;
pub mod ops;
pub mod outcome;
pub mod parameters;
pub mod patient;
pub mod task;
pub mod value;

pub use element::IdatElement;
pub use ops::{
    PsnError, PsnResponse, PsnResult, RequestError, parse_psn_response, provide_patient_data,
    request_psn_from_bf, request_tasks,
};
pub use outcome::summarize_error_body;
pub use parameters::{Coding, Identifier, Parameter, Parameters, Value};
pub use patient::{
    KnownPatient, MissingElements, build_known_patient, build_patient, elements_present,
};
pub use task::{
    BloomFilter, ElementRequest, ParseLimits, SendIdatSubject, Task, TaskKey, TaskKind, TaskList,
    TaskProblem, parse_tasks, parse_tasks_with,
};
pub use value::{IdatValue, InvalidValue, canonical_value, parse_value};

/// What can go wrong with a whole body. Problems with single tasks or parts are not errors: they
/// are reported in [`TaskList::problems`] and the rest of the body is still used.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("expected a FHIR Parameters resource, got resourceType {0:?}")]
    WrongResourceType(String),
    #[error("the Parameters resource is malformed: {0}")]
    Malformed(String),
    /// The server answered with an `OperationOutcome` instead of `Parameters` (some gateways
    /// do so with HTTP 200). The text is [`outcome::summarize_error_body`]'s summary.
    #[error("the server answered with an OperationOutcome: {0}")]
    OperationOutcome(String),
}
