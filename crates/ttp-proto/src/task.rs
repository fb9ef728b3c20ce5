//! Tasks from `$requestTasks`: one multi-part parameter per task, the parameter name is the type.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::IdatElement;

/// A Bloom filter as raw bytes. On the wire it is standard base64 with padding.
///
/// `Debug` and `Display` show only a short digest: a filter is not IDAT, but it is the
/// patient's pseudonymous identity towards the fTTP and has no business in logs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BloomFilter(pub Vec<u8>);

/// A task's identity. `send_idat` tasks are identified by their `taskId`; the other types by
/// content (type, target, Bloom filter); a task the agent cannot parse, by a digest of its JSON.
/// The string form is stable (it is a store key) and safe to log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey(pub String);

/// One task, as parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub kind: TaskKind,
    /// `expires` (required for `send_idat`, optional for the others).
    pub expires: Option<DateTime<FixedOffset>>,
    /// Parts this version does not know, kept verbatim for reporting.
    pub unknown_parts: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskKind {
    /// A clearing finished: store `pseudonym` for the record whose filter equals `bloom_filter`.
    DicPsnAvailable {
        bloom_filter: BloomFilter,
        target: String,
        pseudonym: String,
    },
    /// Send exactly `elements` of the record named by `subject` with `$providePatientData`.
    SendIdat {
        task_id: String,
        subject: SendIdatSubject,
        elements: Vec<ElementRequest>,
    },
    /// Send `$requestPsnFromBfWorkflow` again for `bloom_filter`.
    RepeatRequest {
        study: String,
        bloom_filter: BloomFilter,
        target: String,
    },
    /// A task type this version does not know: kept whole, reported, never acted on.
    Unknown {
        name: String,
        raw: serde_json::Value,
    },
}

/// Which record a `send_idat` task is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendIdatSubject {
    BloomFilter(BloomFilter),
    Pseudonym(String),
}

/// One requested element; a code this version does not know is kept so it can be reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElementRequest {
    Known(IdatElement),
    Unknown(String),
}

/// A task parameter that could not be turned into a [`Task`] (missing or duplicate required
/// part, invalid base64 or instant, ...). The agent stores it as needing attention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskProblem {
    /// Position of the parameter in the response (0-based).
    pub index: usize,
    /// The parameter's name (the task type), or `""` when absent.
    pub name: String,
    /// What is wrong, for a log line and the status page. Never contains part values.
    pub reason: String,
    /// A stable identity for the broken task (digest of its JSON), so it is reported once.
    pub key: TaskKey,
}

/// The result of parsing one `$requestTasks` response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    pub problems: Vec<TaskProblem>,
}

impl BloomFilter {
    /// Standard base64 with padding, as E-PIX compares it (full length, trailing zero bytes kept).
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    pub fn from_base64(text: &str) -> Result<BloomFilter, base64::DecodeError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(BloomFilter)
    }

    /// The first 8 bytes of SHA-256 over the filter, hex: enough to tell filters apart in a
    /// log or a task key, useless for an attacker.
    pub fn short_digest(&self) -> String {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(&self.0);
        hex::encode(&d[..8])
    }
}

impl std::fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BloomFilter({} bytes, sha256:{})",
            self.0.len(),
            self.short_digest()
        )
    }
}

impl std::fmt::Display for BloomFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bf:{}", self.short_digest())
    }
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
