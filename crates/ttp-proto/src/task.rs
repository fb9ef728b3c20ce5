//! Tasks from `$requestTasks`: one multi-part parameter per task, the parameter name is the type.
//!
//! ```json
//! { "name": "dic_psn_available", "part": [
//!     { "name": "bloomfilter", "valueBase64Binary": "SWNo..." },
//!     { "name": "target",    "valueIdentifier": { "system": "...", "value": "eyematics" } },
//!     { "name": "pseudonym", "valueIdentifier": { "system": "...", "value": "mii_6348Q7" } } ] }
//! ```
//!
//! [`parse_tasks`] turns a response into a [`TaskList`]: the tasks it could read and, for each
//! entry it could not, a [`TaskProblem`]. One broken task never hides the others, and nothing a
//! gateway sends makes the parser panic or allocate beyond the body (see [`ParseLimits`]).
//!
//! # How lenient
//!
//! Lenient where deployments are known to differ, strict where a guess could do harm:
//!
//! * Identifier-typed parts (`target`, `pseudonym`, `study`) use the Identifier's `value`
//!   whatever its `system` (systems differ between deployments); a plain `valueString` is
//!   accepted too.
//! * `expires` is a FHIR instant (`2021-05-28T13:00:00.00+02:00`, `...Z`, any number of
//!   fractional digits); a `valueDateTime` is accepted when it has a full time and an offset.
//!   It is kept as the instant it names, in UTC ([`Task::expires`]): the offset says nothing
//!   the agent uses, and this parser is the one place that converts.
//! * Unknown task types become [`TaskKind::Unknown`], unknown parts land in
//!   [`Task::unknown_parts`], unknown element codes in [`ElementRequest::Unknown`]: newer
//!   gateways will send them, and the agent reports rather than ignores them.
//! * Everything else that does not match the cardinalities of the dispatcher IG (a missing or
//!   repeated part, neither of `pseudonym` and `bloomfilter`, bad base64, a bad
//!   instant, an `element` without code...) makes the task a [`TaskProblem`]. Problem reasons
//!   name the task type and the part, never a part's value.
//!
//! # Identity
//!
//! The fTTP gives only `send_idat` an id, yet repeats every task until it is done, so the
//! agent needs a stable identity for each: [`Task::key`] and [`TaskProblem::key`]. Content-
//! identified tasks are keyed by type, target and a digest of the Bloom filter, deliberately
//! not by `expires`, part order or unknown parts, which may change between listings of the
//! same task. Keys contain no filter, pseudonym or IDAT and are safe to log.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::Digest as _;

use crate::IdatElement;
use crate::ProtoError;
use crate::parameters::{self, Entry, Parameter, Value, display_name};

mod fast;

/// A Bloom filter as raw bytes. On the wire it is standard base64 with padding.
///
/// `Debug` and `Display` show only a short digest: a filter is not IDAT, but it is the
/// patient's pseudonymous identity towards the fTTP and has no business in logs.
///
/// With serde it is base64 text in human-readable formats (the agent stores tasks as JSON)
/// and bytes in binary ones. Reading also accepts a sequence of byte values, the form of the
/// derived implementation this replaced, so stores written with it still read: base64 is a
/// third of the size and a fraction of the parsing time of 225 JSON numbers.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BloomFilter(pub Vec<u8>);

impl Serialize for BloomFilter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_base64())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for BloomFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FilterVisitor;

        impl<'de> serde::de::Visitor<'de> for FilterVisitor {
            type Value = BloomFilter;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Bloom filter as base64 text or as a sequence of bytes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BloomFilter, E> {
                use base64::Engine as _;
                // The message must not repeat the value.
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(BloomFilter)
                    .map_err(|_| E::custom("a Bloom filter is not valid standard base64"))
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BloomFilter, E> {
                Ok(BloomFilter(v.to_vec()))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BloomFilter, E> {
                Ok(BloomFilter(v))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BloomFilter, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(BloomFilter(bytes))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_any(FilterVisitor)
        } else {
            deserializer.deserialize_byte_buf(FilterVisitor)
        }
    }
}

/// A task's identity. `send_idat` tasks are identified by their `taskId`; the other types by
/// content (type, target, Bloom filter); a task the agent cannot parse, by a digest of its JSON.
/// The string form is stable (it is a store key) and safe to log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey(pub String);

/// Key prefixes of the problems that stand for many listed entries at once (the parser's
/// count of entries beyond its limits), as opposed to one broken entry each.
const UNKNOWN_SUMMARY_PREFIX: &str = "malformed/unknown-summary/";
const TASK_LIMIT_PREFIX: &str = "malformed/task-limit/";

impl TaskKey {
    /// Whether this is the key of a problem that counts entries beyond the parser's limits
    /// ([`TaskList::not_kept`] has their number) rather than one listed entry.
    pub fn is_count_summary(&self) -> bool {
        self.0.starts_with(UNKNOWN_SUMMARY_PREFIX) || self.0.starts_with(TASK_LIMIT_PREFIX)
    }
}

/// One task, as parsed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub kind: TaskKind,
    /// `expires` (required for `send_idat`, optional for the others), converted to UTC here,
    /// at the wire boundary: the deadline is an instant, the fTTP's offset only its spelling
    /// (nothing the agent shows uses it), so the domain, the store and every comparison deal
    /// in one time type (ARCHITECTURE.md, "Time").
    pub expires: Option<DateTime<Utc>>,
    /// Parts this version does not know, kept verbatim for reporting.
    pub unknown_parts: Vec<serde_json::Value>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendIdatSubject {
    BloomFilter(BloomFilter),
    Pseudonym(String),
    /// Both parts were sent; they must name the same record.
    Both {
        pseudonym: String,
        bloom_filter: BloomFilter,
    },
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
    /// Entries the response listed that were only counted, not kept: unknown or unreadable
    /// ones beyond [`ParseLimits::max_unknown`] and tasks beyond [`ParseLimits::max_tasks`].
    /// A problem in `problems` names them; this is their number, so that the agent can show
    /// how many listed tasks it will not act on.
    pub not_kept: usize,
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

/// Lets maps keyed by `TaskKey` be searched with the key's text (a store key read back),
/// without building a `TaskKey` for it. Hash and equality are those of the string.
impl std::borrow::Borrow<str> for TaskKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Task types and limits
// ---------------------------------------------------------------------------------------------

/// Parameter name of the "pseudonym available after clearing" task.
pub const DIC_PSN_AVAILABLE: &str = "dic_psn_available";
/// Parameter name of the "send IDAT" task.
pub const SEND_IDAT: &str = "send_idat";
/// Parameter name of the "send the Bloom filter request again" task.
pub const REPEAT_REQUEST: &str = "repeat_request";

/// Identifier-typed values (targets, pseudonyms, studies) are short codes; anything longer than
/// this is not one, and would bloat store keys.
pub const MAX_IDENTIFIER_CHARS: usize = 256;

/// Bounds on what one response may make the parser keep. Beyond them the parser reports
/// problems instead of allocating without limit; together with the client's response size
/// limit they bound the memory and the store growth one listing can cause (BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Entries kept from one response (tasks, and the unknown or unreadable ones of the
    /// sample); later ones are skipped and reported as one problem. Unknown or unreadable
    /// entries beyond the sample do not count: they cannot push a known task out.
    pub max_tasks: usize,
    /// `element` parts in one `send_idat` task (there are 15 element codes).
    pub max_elements: usize,
    /// Unknown task types and unreadable entries kept one by one (each becomes a stored task
    /// that needs attention). The rest are only counted, by type, in one summary problem.
    pub max_unknown: usize,
    /// The JSON text of one entry. A larger entry is reported without being parsed into a
    /// tree (which costs many times its size).
    pub max_entry_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_tasks: 100_000,
            max_elements: 64,
            max_unknown: 20,
            max_entry_bytes: 256 * 1024,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses a `$requestTasks` response with the default [`ParseLimits`].
pub fn parse_tasks(body: &[u8]) -> Result<TaskList, ProtoError> {
    parse_tasks_with(body, &ParseLimits::default())
}

/// Parses a `$requestTasks` response. Errors only for a body that is not a `Parameters`
/// resource at all; every task-level defect is a [`TaskProblem`] in the result.
pub fn parse_tasks_with(body: &[u8], limits: &ParseLimits) -> Result<TaskList, ProtoError> {
    // Listings of well-formed tasks, the normal case, take the fast path; anything unusual
    // is parsed (again) on the generic one, which accounts for every defect (see `fast`).
    match fast::parse(body, limits) {
        Some(list) => Ok(list),
        None => parse_tasks_generic(body, limits),
    }
}

/// The fast path of [`parse_tasks_with`] alone: `None` where it leaves the body to the
/// generic path. Public for the differential tests only.
#[doc(hidden)]
pub fn parse_tasks_fast(body: &[u8], limits: &ParseLimits) -> Option<TaskList> {
    fast::parse(body, limits)
}

/// [`parse_tasks_with`] without the fast path: every body through the generic `Parameters`
/// codec. Public for the differential tests (the two paths must agree wherever the fast path
/// answers); callers want [`parse_tasks_with`].
#[doc(hidden)]
pub fn parse_tasks_generic(body: &[u8], limits: &ParseLimits) -> Result<TaskList, ProtoError> {
    let mut acc = Accumulator::new(limits);
    parameters::for_each_entry(body, &mut |index, raw| acc.entry(index, raw))?;
    acc.finish()
}

/// What the generic path keeps while the entries stream by. Only the entries it keeps are
/// parsed into a tree, one at a time, so a hostile body of countless unknown tasks costs
/// parse time, a counter per type name, and the small sample.
struct Accumulator<'l> {
    limits: &'l ParseLimits,
    list: TaskList,
    /// Unknown and unreadable entries kept (tasks of unknown type plus problems).
    sampled: usize,
    /// Entries past `max_tasks`, skipped unread.
    omitted: usize,
    /// Unknown or unreadable entries past the sample: count by type name.
    summarised: std::collections::BTreeMap<String, usize>,
    summarised_total: usize,
    first_summarised: Option<usize>,
    /// An entry too deeply nested to build a tree of: the body is not usable JSON for us.
    too_deep: Option<serde_json::Error>,
}

/// Distinct type names counted in the summary; further names are counted together.
const MAX_SUMMARISED_NAMES: usize = 16;

impl<'l> Accumulator<'l> {
    fn new(limits: &'l ParseLimits) -> Self {
        Accumulator {
            limits,
            list: TaskList::default(),
            sampled: 0,
            omitted: 0,
            summarised: std::collections::BTreeMap::new(),
            summarised_total: 0,
            first_summarised: None,
            too_deep: None,
        }
    }

    fn kept(&self) -> usize {
        self.list.tasks.len() + self.list.problems.len()
    }

    fn sample_full(&self) -> bool {
        self.sampled >= self.limits.max_unknown
    }

    fn entry(&mut self, index: usize, raw: &serde_json::value::RawValue) {
        if self.too_deep.is_some() {
            return;
        }
        let name = peek_name(raw.get());
        let known = name.as_deref().is_some_and(is_known_type);
        if !known && self.sample_full() {
            self.summarise(index, name.as_deref());
            return;
        }
        if self.kept() >= self.limits.max_tasks {
            self.omitted = self.omitted.saturating_add(1);
            return;
        }
        let text = raw.get();
        let result = if text.len() > self.limits.max_entry_bytes {
            Err(oversized(index, name.as_deref(), text, self.limits))
        } else {
            match serde_json::from_str::<Json>(text) {
                Ok(json) => {
                    let entry = Entry {
                        index,
                        decoded: Parameter::from_json_value(&json),
                        raw: json,
                    };
                    parse_entry(&entry, self.limits)
                }
                Err(e) => {
                    self.too_deep = Some(e);
                    return;
                }
            }
        };
        match result {
            Ok(task) => {
                if matches!(task.kind, TaskKind::Unknown { .. }) {
                    self.sampled += 1;
                }
                self.list.tasks.push(task);
            }
            // A broken entry of a known type counts against the sample too: a listing of
            // countless malformed tasks must not become countless stored ones.
            Err(_) if self.sample_full() => self.summarise(index, name.as_deref()),
            Err(problem) => {
                self.sampled += 1;
                self.list.problems.push(problem);
            }
        }
    }

    fn summarise(&mut self, index: usize, name: Option<&str>) {
        let label = match name {
            Some(name) => display_name(name),
            None => "(no name)".to_owned(),
        };
        let label = if self.summarised.contains_key(&label)
            || self.summarised.len() < MAX_SUMMARISED_NAMES
        {
            label
        } else {
            "(other names)".to_owned()
        };
        *self.summarised.entry(label).or_insert(0) += 1;
        self.summarised_total = self.summarised_total.saturating_add(1);
        self.first_summarised.get_or_insert(index);
    }

    fn finish(mut self) -> Result<TaskList, ProtoError> {
        if let Some(e) = self.too_deep {
            return Err(ProtoError::NotJson(e.to_string()));
        }
        self.list.not_kept = self.summarised_total.saturating_add(self.omitted);
        if self.summarised_total > 0 {
            let counts: Vec<String> = self
                .summarised
                .iter()
                .map(|(name, n)| format!("{n} × `{name}`"))
                .collect();
            let names: Vec<&str> = self.summarised.keys().map(String::as_str).collect();
            self.list.problems.push(TaskProblem {
                index: self.first_summarised.unwrap_or(0),
                name: String::new(),
                reason: format!(
                    "the response lists {} more unknown or unreadable tasks than the {} kept \
                     one by one (ParseLimits::max_unknown); they were counted, not kept: {}",
                    self.summarised_total,
                    self.limits.max_unknown,
                    counts.join(", ")
                ),
                // Stable while the same kinds keep coming, whatever their number.
                key: TaskKey(format!(
                    "{UNKNOWN_SUMMARY_PREFIX}{}",
                    digest32(names.join("\n").as_bytes())
                )),
            });
        }
        if self.omitted > 0 {
            let max = self.limits.max_tasks;
            self.list.problems.push(TaskProblem {
                index: max,
                name: String::new(),
                reason: format!(
                    "the response lists {} tasks, more than the limit of {max} \
                     (ParseLimits::max_tasks); the last {} were not read",
                    max.saturating_add(self.omitted),
                    self.omitted
                ),
                // Stable for a given limit, so a response that stays too long is reported once.
                key: TaskKey(format!(
                    "{TASK_LIMIT_PREFIX}{}",
                    digest32(format!("ttp-proto task limit {max}").as_bytes())
                )),
            });
        }
        Ok(self.list)
    }
}

/// The `name` of an entry, read without building anything (other keys are skipped). `None`
/// when the entry is not an object or its name is not a string. A repeated `name` reads as
/// the last one, as in a JSON tree.
fn peek_name(text: &str) -> Option<String> {
    struct NameVisitor;

    impl<'de> serde::de::Visitor<'de> for NameVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an entry")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Option<String>, A::Error> {
            let mut name = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "name" {
                    name = map.next_value::<StringOrSkip>()?.0;
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(name)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, NameVisitor)
        .ok()
        .flatten()
}

/// A string, or anything else skipped without building it (`None`).
struct StringOrSkip(Option<String>);

impl<'de> Deserialize<'de> for StringOrSkip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringOrSkip;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(Some(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(None))
            }
            fn visit_unit<E>(self) -> Result<StringOrSkip, E> {
                Ok(StringOrSkip(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringOrSkip, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(StringOrSkip(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StringOrSkip, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringOrSkip(None))
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// The problem for an entry too large to parse: keyed by a digest of its text.
fn oversized(index: usize, name: Option<&str>, text: &str, limits: &ParseLimits) -> TaskProblem {
    let name = name.unwrap_or_default().to_owned();
    let label = if name.is_empty() {
        "unnamed".to_owned()
    } else {
        display_name(&name)
    };
    TaskProblem {
        index,
        reason: format!(
            "{label} task: the entry is {} bytes, more than the limit of {} \
             (ParseLimits::max_entry_bytes); it was not read",
            text.len(),
            limits.max_entry_bytes
        ),
        key: TaskKey(format!(
            "malformed/{}/{}",
            name_segment(if name.is_empty() { "unnamed" } else { &name }),
            digest32(text.as_bytes())
        )),
        name,
    }
}

fn parse_entry(entry: &Entry, limits: &ParseLimits) -> Result<Task, TaskProblem> {
    let name = entry
        .raw
        .get("name")
        .and_then(Json::as_str)
        .filter(|n| !n.is_empty());
    match (name, &entry.decoded) {
        // An unknown type is kept whole even if its shape is odd: it is reported, not acted on,
        // and newer gateways may well use shapes this version cannot decode.
        (Some(name), decoded) if !is_known_type(name) => Ok(Task {
            kind: TaskKind::Unknown {
                name: name.to_owned(),
                raw: entry.raw.clone(),
            },
            expires: decoded.as_ref().ok().and_then(lenient_expires),
            unknown_parts: Vec::new(),
        }),
        (_, Err(e)) => Err(problem(entry, e.reason.clone())),
        (_, Ok(parameter)) => {
            let raw_parts = entry.raw.get("part").and_then(Json::as_array);
            parse_known(parameter, raw_parts.map(Vec::as_slice), limits)
                .map_err(|reasons| problem(entry, reasons.join("; ")))
        }
    }
}

fn is_known_type(name: &str) -> bool {
    matches!(name, DIC_PSN_AVAILABLE | SEND_IDAT | REPEAT_REQUEST)
}

/// The parts each known type may have; others go to `unknown_parts`.
fn schema(name: &str) -> &'static [&'static str] {
    match name {
        DIC_PSN_AVAILABLE => &["expires", "bloomfilter", "target", "pseudonym"],
        SEND_IDAT => &["expires", "taskId", "pseudonym", "bloomfilter", "element"],
        REPEAT_REQUEST => &["expires", "study", "bloomfilter", "target"],
        _ => &[],
    }
}

fn problem(entry: &Entry, detail: String) -> TaskProblem {
    let name = entry
        .raw
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let label = if name.is_empty() {
        "unnamed".to_owned()
    } else {
        display_name(&name)
    };
    TaskProblem {
        index: entry.index,
        reason: format!("{label} task: {detail}"),
        key: TaskKey(format!(
            "malformed/{}/{}",
            name_segment(if name.is_empty() { "unnamed" } else { &name }),
            digest32(canonical_json(&entry.raw).as_bytes())
        )),
        name,
    }
}

/// `expires` of an unknown task, if it has a readable one (never a problem: it is a hint).
fn lenient_expires(parameter: &Parameter) -> Option<DateTime<Utc>> {
    match parameter.parts_named("expires").next()?.value.as_ref()? {
        Value::Instant(text) | Value::DateTime(text) => parse_deadline(text),
        _ => None,
    }
}

/// The task rules for a known type. `raw_parts` are the entry's parts as received, from which
/// unknown parts are kept verbatim (the fast path passes none: it gives up on unknown parts).
fn parse_known(
    p: &Parameter,
    raw_parts: Option<&[Json]>,
    limits: &ParseLimits,
) -> Result<Task, Vec<String>> {
    let known = schema(&p.name);
    let unknown_parts = p
        .part
        .iter()
        .enumerate()
        .filter(|(_, part)| !known.contains(&part.name.as_str()))
        .map(|(i, part)| {
            // The JSON as received, so nothing the codec does not model is lost.
            raw_parts
                .and_then(|parts| parts.get(i))
                .cloned()
                .unwrap_or_else(|| part.to_json_value())
        })
        .collect();

    let mut c = Checker::default();
    // `expires` is 1..1 for send_idat, 0..1 for the others.
    let expires = if p.name == SEND_IDAT {
        c.exactly_one(p, "expires").and_then(|x| c.instant(x))
    } else {
        c.at_most_one(p, "expires")
            .ok()
            .flatten()
            .and_then(|x| c.instant(x))
    };

    let kind = match p.name.as_str() {
        DIC_PSN_AVAILABLE => {
            let bloom_filter = c
                .exactly_one(p, "bloomfilter")
                .and_then(|x| c.bloom_filter(x));
            let target = c.exactly_one(p, "target").and_then(|x| c.identifier(x));
            let pseudonym = c.exactly_one(p, "pseudonym").and_then(|x| c.identifier(x));
            match (bloom_filter, target, pseudonym) {
                (Some(bloom_filter), Some(target), Some(pseudonym)) => {
                    Some(TaskKind::DicPsnAvailable {
                        bloom_filter,
                        target,
                        pseudonym,
                    })
                }
                _ => None,
            }
        }
        SEND_IDAT => {
            let task_id = c.exactly_one(p, "taskId").and_then(|x| c.task_id(x));
            let subject = c.send_idat_subject(p);
            let elements = c.elements(p, limits.max_elements);
            match (task_id, subject, elements) {
                (Some(task_id), Some(subject), Some(elements)) => Some(TaskKind::SendIdat {
                    task_id,
                    subject,
                    elements,
                }),
                _ => None,
            }
        }
        REPEAT_REQUEST => {
            let study = c.exactly_one(p, "study").and_then(|x| c.identifier(x));
            let bloom_filter = c
                .exactly_one(p, "bloomfilter")
                .and_then(|x| c.bloom_filter(x));
            let target = c.exactly_one(p, "target").and_then(|x| c.identifier(x));
            match (study, bloom_filter, target) {
                (Some(study), Some(bloom_filter), Some(target)) => Some(TaskKind::RepeatRequest {
                    study,
                    bloom_filter,
                    target,
                }),
                _ => None,
            }
        }
        other => {
            // parse_entry routes only known types here.
            c.push(format!(
                "`{}` is not a known task type",
                display_name(other)
            ));
            None
        }
    };
    match kind {
        Some(kind) if c.problems.is_empty() => Ok(Task {
            kind,
            expires,
            unknown_parts,
        }),
        _ => Err(c.problems),
    }
}

/// Collects what is wrong with one task while its parts are read, so that the problem lists
/// every defect at once rather than the first.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) problems: Vec<String>,
}

impl Checker {
    pub(crate) fn push(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// The single part `name`; records a problem if it is missing or repeated.
    pub(crate) fn exactly_one<'a>(
        &mut self,
        p: &'a Parameter,
        name: &str,
    ) -> Option<&'a Parameter> {
        match self.at_most_one(p, name) {
            Ok(Some(part)) => Some(part),
            Ok(None) => {
                self.push(format!("part `{name}` is missing"));
                None
            }
            Err(()) => None,
        }
    }

    /// The part `name` if present; `Err` (problem recorded) if repeated.
    pub(crate) fn at_most_one<'a>(
        &mut self,
        p: &'a Parameter,
        name: &str,
    ) -> Result<Option<&'a Parameter>, ()> {
        let mut parts = p.part.iter().filter(|part| part.name == name);
        let first = parts.next();
        let more = parts.count();
        if more > 0 {
            self.push(format!(
                "part `{name}` appears {} times, at most once is allowed",
                more + 1
            ));
            return Err(());
        }
        Ok(first)
    }

    pub(crate) fn wrong_type(&mut self, part: &Parameter, expected: &str) {
        match &part.value {
            Some(value) => self.push(format!(
                "part `{}` has {}, expected {expected}",
                part.name,
                display_name(value.key())
            )),
            None => self.push(format!(
                "part `{}` has no value, expected {expected}",
                part.name
            )),
        }
    }

    /// The text of an Identifier-typed part: the Identifier's `value` whatever its `system`,
    /// or a plain string.
    pub(crate) fn identifier(&mut self, part: &Parameter) -> Option<String> {
        let text = match &part.value {
            Some(Value::Identifier(identifier)) => match &identifier.value {
                Some(text) => text,
                None => {
                    self.push(format!(
                        "part `{}` is an Identifier without `value`",
                        part.name
                    ));
                    return None;
                }
            },
            Some(Value::String(text)) => text,
            _ => {
                self.wrong_type(part, "valueIdentifier or valueString");
                return None;
            }
        };
        if text.trim().is_empty() {
            self.push(format!("part `{}` is empty", part.name));
            None
        } else if text.chars().count() > MAX_IDENTIFIER_CHARS {
            self.push(format!(
                "part `{}` is longer than {MAX_IDENTIFIER_CHARS} characters",
                part.name
            ));
            None
        } else if text.chars().any(char::is_control) {
            self.push(format!("part `{}` contains control characters", part.name));
            None
        } else {
            Some(text.clone())
        }
    }

    pub(crate) fn bloom_filter(&mut self, part: &Parameter) -> Option<BloomFilter> {
        let Some(Value::Base64Binary(text)) = &part.value else {
            self.wrong_type(part, "valueBase64Binary");
            return None;
        };
        match BloomFilter::from_base64(text) {
            Ok(filter) if filter.0.is_empty() => {
                self.push(format!("part `{}` is empty", part.name));
                None
            }
            Ok(filter) => Some(filter),
            Err(_) => {
                self.push(format!(
                    "part `{}` is not valid base64 (standard alphabet, with padding)",
                    part.name
                ));
                None
            }
        }
    }

    fn instant(&mut self, part: &Parameter) -> Option<DateTime<Utc>> {
        let (Some(Value::Instant(text)) | Some(Value::DateTime(text))) = &part.value else {
            self.wrong_type(part, "valueInstant");
            return None;
        };
        let parsed = parse_deadline(text);
        if parsed.is_none() {
            self.push(format!(
                "part `{}` is not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm)",
                part.name
            ));
        }
        parsed
    }

    fn task_id(&mut self, part: &Parameter) -> Option<String> {
        let (Some(Value::Id(text)) | Some(Value::String(text))) = &part.value else {
            self.wrong_type(part, "valueId");
            return None;
        };
        if is_fhir_id(text) {
            Some(text.clone())
        } else {
            self.push(format!(
                "part `{}` is not a FHIR id (1 to 64 of A-Z, a-z, 0-9, '-', '.')",
                part.name
            ));
            None
        }
    }

    /// `pseudonym` and/or `bloomfilter`, each 0..1: the IG requires one and does not forbid
    /// both (whether both name the same record is the agent's question, not the parser's).
    fn send_idat_subject(&mut self, p: &Parameter) -> Option<SendIdatSubject> {
        let pseudonym = self.at_most_one(p, "pseudonym");
        let bloom_filter = self.at_most_one(p, "bloomfilter");
        match (pseudonym, bloom_filter) {
            (Ok(Some(psn)), Ok(Some(bf))) => {
                let pseudonym = self.identifier(psn);
                let bloom_filter = self.bloom_filter(bf);
                Some(SendIdatSubject::Both {
                    pseudonym: pseudonym?,
                    bloom_filter: bloom_filter?,
                })
            }
            (Ok(Some(part)), Ok(None)) => self.identifier(part).map(SendIdatSubject::Pseudonym),
            (Ok(None), Ok(Some(part))) => self.bloom_filter(part).map(SendIdatSubject::BloomFilter),
            (Ok(None), Ok(None)) => {
                self.push("has neither `pseudonym` nor `bloomfilter`, one is required".to_owned());
                None
            }
            // A repeated part, already recorded.
            _ => None,
        }
    }

    fn elements(&mut self, p: &Parameter, max: usize) -> Option<Vec<ElementRequest>> {
        let parts: Vec<&Parameter> = p.parts_named("element").collect();
        if parts.is_empty() {
            self.push("has no `element` part, at least one is required".to_owned());
            return None;
        }
        if parts.len() > max {
            self.push(format!(
                "has {} `element` parts, more than the limit of {max} (ParseLimits::max_elements)",
                parts.len()
            ));
            return None;
        }
        let problems_before = self.problems.len();
        let mut elements = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            match &part.value {
                Some(Value::Coding(coding)) => match coding.code.as_deref() {
                    // An unknown code is passed on to be reported, so it must be fit for a
                    // log line: element codes are short words, never text blocks.
                    Some(code)
                        if code.chars().count() > MAX_IDENTIFIER_CHARS
                            || code.chars().any(char::is_control) =>
                    {
                        self.push(format!(
                            "part `element` {i} has a code that is not a plausible element code \
                             (over {MAX_IDENTIFIER_CHARS} characters or control characters)"
                        ));
                    }
                    Some(code) if !code.trim().is_empty() => {
                        elements.push(match IdatElement::from_code(code) {
                            Some(known) => ElementRequest::Known(known),
                            None => ElementRequest::Unknown(code.to_owned()),
                        });
                    }
                    _ => self.push(format!("part `element` {i} is a Coding without `code`")),
                },
                _ => self.wrong_type(part, "valueCoding"),
            }
        }
        (self.problems.len() == problems_before).then_some(elements)
    }
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`. A task id becomes part of a store key, so it is checked,
/// not trusted.
fn is_fhir_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses a FHIR `instant`. chrono's RFC 3339 parser is laxer than FHIR (it takes a space or
/// `t` as separator, a lower-case `z`), so the shape is checked first; chrono then validates
/// the calendar and clock values and keeps up to nanoseconds of the fraction. The offset is
/// kept (this is the FHIR syntax); a task's deadline is read through `parse_deadline`, in UTC.
pub fn parse_instant(text: &str) -> Option<DateTime<FixedOffset>> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !bytes[..19].is_ascii() || bytes[10] != b'T' {
        return None;
    }
    let mut zone = &bytes[19..];
    if let Some(rest) = zone.strip_prefix(b".") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        zone = &rest[digits..];
    }
    let zone_ok = zone == b"Z"
        || (zone.len() == 6
            && matches!(zone[0], b'+' | b'-')
            && zone[1..3].iter().all(u8::is_ascii_digit)
            && zone[3] == b':'
            && zone[4..].iter().all(u8::is_ascii_digit));
    if !zone_ok {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok()
}

/// A task's `expires`: a FHIR instant ([`parse_instant`]) as the UTC instant it names. The one
/// conversion of a deadline from the wire's offset (both the known and the unknown task types
/// read theirs through it).
fn parse_deadline(text: &str) -> Option<DateTime<Utc>> {
    parse_instant(text).map(|at| at.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

impl TaskKind {
    /// The task type as on the wire (`"send_idat"`, or the unknown type's name).
    pub fn type_name(&self) -> &str {
        match self {
            TaskKind::DicPsnAvailable { .. } => DIC_PSN_AVAILABLE,
            TaskKind::SendIdat { .. } => SEND_IDAT,
            TaskKind::RepeatRequest { .. } => REPEAT_REQUEST,
            TaskKind::Unknown { name, .. } => name,
        }
    }
}

impl Task {
    /// The task's stable identity (see the module docs):
    ///
    /// * `send_idat/<taskId>`
    /// * `dic_psn_available/<target>/<first 32 hex digits of SHA-256 of the filter>`
    /// * `repeat_request/<target>/<same digest>`
    /// * `<name>/sha256:<first 32 hex digits of SHA-256 of the parameter's canonical JSON>`
    ///   for unknown types.
    ///
    /// Characters outside `A-Z a-z 0-9 - . _ ~` in targets and names are percent-encoded, so a
    /// key is one printable line and `/` separates its fields unambiguously.
    pub fn key(&self) -> TaskKey {
        TaskKey(match &self.kind {
            TaskKind::SendIdat { task_id, .. } => {
                format!("{SEND_IDAT}/{}", key_segment(task_id))
            }
            TaskKind::DicPsnAvailable {
                bloom_filter,
                target,
                ..
            } => format!(
                "{DIC_PSN_AVAILABLE}/{}/{}",
                key_segment(target),
                digest32(&bloom_filter.0)
            ),
            TaskKind::RepeatRequest {
                bloom_filter,
                target,
                ..
            } => format!(
                "{REPEAT_REQUEST}/{}/{}",
                key_segment(target),
                digest32(&bloom_filter.0)
            ),
            TaskKind::Unknown { name, raw } => format!(
                "{}/sha256:{}",
                name_segment(name),
                digest32(canonical_json(raw).as_bytes())
            ),
        })
    }
}

impl TaskProblem {
    /// The problem's stable identity: `malformed/<name or "unnamed">/<digest of its JSON>`
    /// (also available as the `key` field).
    pub fn key(&self) -> &TaskKey {
        &self.key
    }
}

/// JSON with object keys sorted. serde_json's `Map` is a `BTreeMap` unless the
/// `preserve_order` feature is on; the test `canonical_json_sorts_keys` guards against a
/// dependency switching it on for the whole build.
fn canonical_json(json: &Json) -> String {
    json.to_string()
}

/// The first 32 hex digits (128 bits) of SHA-256.
fn digest32(bytes: &[u8]) -> String {
    let mut hex = hex::encode(sha2::Sha256::digest(bytes));
    hex.truncate(32);
    hex
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn key_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A type name as a key segment. Names are not identity (the digest after them is), so an
/// absurdly long one is replaced rather than carried into every key.
fn name_segment(name: &str) -> String {
    let segment = key_segment(name);
    if segment.is_empty() {
        "unnamed".to_owned()
    } else if segment.len() > 64 {
        "long-name".to_owned()
    } else {
        segment
    }
}

// ---------------------------------------------------------------------------------------------
// Redacting Debug: pseudonyms and unknown JSON stay out of logs
// ---------------------------------------------------------------------------------------------

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unknown: Vec<String> = self
            .unknown_parts
            .iter()
            .map(|part| {
                part.get("name")
                    .and_then(Json::as_str)
                    .map_or_else(|| "(unnamed)".to_owned(), display_name)
            })
            .collect();
        f.debug_struct("Task")
            .field("kind", &self.kind)
            .field("expires", &self.expires)
            .field("unknown_parts", &unknown)
            .finish()
    }
}

impl std::fmt::Debug for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskKind::DicPsnAvailable {
                bloom_filter,
                target,
                pseudonym: _,
            } => f
                .debug_struct("DicPsnAvailable")
                .field("bloom_filter", bloom_filter)
                .field("target", target)
                .field("pseudonym", &"<redacted>")
                .finish(),
            TaskKind::SendIdat {
                task_id,
                subject,
                elements,
            } => f
                .debug_struct("SendIdat")
                .field("task_id", task_id)
                .field("subject", subject)
                .field("elements", elements)
                .finish(),
            TaskKind::RepeatRequest {
                study,
                bloom_filter,
                target,
            } => f
                .debug_struct("RepeatRequest")
                .field("study", study)
                .field("bloom_filter", bloom_filter)
                .field("target", target)
                .finish(),
            TaskKind::Unknown { name, raw: _ } => f
                .debug_struct("Unknown")
                .field("name", &display_name(name))
                .field("raw", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Debug for SendIdatSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendIdatSubject::BloomFilter(filter) => {
                f.debug_tuple("BloomFilter").field(filter).finish()
            }
            SendIdatSubject::Pseudonym(_) => f.write_str("Pseudonym(<redacted>)"),
            SendIdatSubject::Both { bloom_filter, .. } => f
                .debug_struct("Both")
                .field("pseudonym", &"<redacted>")
                .field("bloom_filter", bloom_filter)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_filters_are_base64_in_json_and_old_byte_arrays_still_read() {
        let bf = BloomFilter(vec![0, 1, 2, 253, 254, 255]);
        let json = serde_json::to_string(&bf).unwrap();
        assert_eq!(json, r#""AAEC/f7/""#);
        assert_eq!(serde_json::from_str::<BloomFilter>(&json).unwrap(), bf);
        // The derived form earlier versions stored.
        assert_eq!(
            serde_json::from_str::<BloomFilter>("[0,1,2,253,254,255]").unwrap(),
            bf
        );
        let err = serde_json::from_str::<BloomFilter>(r#""not*base64""#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not valid standard base64") && !err.contains("not*base64"),
            "{err}"
        );
        assert!(serde_json::from_str::<BloomFilter>("[256]").is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let json: Json = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        assert_eq!(canonical_json(&json), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn key_segments_escape_separators_and_controls() {
        assert_eq!(key_segment("dic_muenster"), "dic_muenster");
        assert_eq!(key_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(key_segment("x\n%"), "x%0A%25");
        assert_eq!(key_segment("ü"), "%C3%BC");
        assert_eq!(name_segment(""), "unnamed");
        assert_eq!(name_segment(&"n".repeat(65)), "long-name");
    }

    #[test]
    fn fhir_ids_are_checked() {
        assert!(is_fhir_id("064ddebf-b20e-468a-97fd-88097bcdbc11"));
        assert!(is_fhir_id("a.b-C9"));
        assert!(!is_fhir_id(""));
        assert!(!is_fhir_id("a/b"));
        assert!(!is_fhir_id("a_b"));
        assert!(!is_fhir_id(&"a".repeat(65)));
    }

    #[test]
    fn digest32_is_a_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(digest32(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }
}
