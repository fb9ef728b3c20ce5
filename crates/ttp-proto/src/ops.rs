//! The dispatcher operations the agent calls: request bodies and the response parser of
//! `$requestPsnFromBfWorkflow`. (`$requestTasks` responses are parsed in [`crate::task`].)
//!
//! Builders return [`Parameters`]; the HTTP client sends `Parameters::to_json_bytes()` with
//! `Content-Type: application/fhir+json`. Entry order follows the IG's examples.

use std::fmt;

use serde_json::Value as Json;

use crate::ProtoError;
use crate::parameters::{self, Parameter, Parameters, Value, display_name};
use crate::task::{BloomFilter, Checker};

/// Name of the body parameter older gateways expect the API key in.
pub const API_KEY_PARAMETER: &str = "apikey";

/// At most this many entries of a `$requestPsnFromBfWorkflow` response are read (known
/// clients send 10 to 100 filters per request).
pub const MAX_PSN_ENTRIES: usize = 100_000;

/// `$requestTasks`: the open tasks of `target` in `study`.
pub fn request_tasks(study: &str, target: &str) -> Parameters {
    Parameters::new()
        .string("study", study)
        .string("target", target)
}

/// `$requestPsnFromBfWorkflow`: register `filters` (full length, see `BloomFilter`) for
/// `target` in `study`.
pub fn request_psn_from_bf(study: &str, target: &str, filters: &[BloomFilter]) -> Parameters {
    let mut body = Parameters::new().string("study", study);
    for filter in filters {
        body.push(Parameter::with_value(
            "bloomfilter",
            Value::Base64Binary(filter.to_base64()),
        ));
    }
    body.string("target", target)
}

/// `$providePatientData`: answer `send_idat` task `task_id` with `patient` (built by
/// [`crate::patient::build_patient`]).
pub fn provide_patient_data(task_id: &str, target: &str, patient: Json) -> Parameters {
    Parameters::new()
        .id("taskId", task_id)
        .string("target", target)
        .resource("patient", patient)
}

impl Parameters {
    /// Adds the API key as body parameter `apikey` (gateways before 2025-10 expect it there).
    /// `Debug` of the result shows neither the key nor its length.
    pub fn with_api_key(self, secret: &str) -> Parameters {
        self.string(API_KEY_PARAMETER, secret)
    }
}

/// The answer to `$requestPsnFromBfWorkflow`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PsnResponse {
    /// Filters the fTTP knew without clearing, with their pseudonyms.
    pub pseudonyms: Vec<PsnResult>,
    /// Filters the fTTP rejected.
    pub errors: Vec<PsnError>,
    /// `error` entries that name no filter (the IG makes `bloomfilter` and `target` 0..1),
    /// among them the EyeMatics shape `all` + `error-code`: the request failed as a whole.
    pub request_errors: Vec<RequestError>,
    /// Entries that could not be read or are not known to this version (positions, names and
    /// reasons, no values). Filters absent from both lists wait for clearing.
    pub problems: Vec<String>,
}

/// One `error` entry that names no filter: a failure of the whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// The entry carried an `all` part (the shape public clients check for).
    pub all: bool,
    /// As [`PsnError::code`]; `None` when the entry had no readable `error-code`.
    pub code: Option<String>,
    /// The Coding's `display`, if any (the fTTP's words for the cause).
    pub display: Option<String>,
}

/// One `pseudonym-bf` entry.
#[derive(Clone, PartialEq)]
pub struct PsnResult {
    pub bloom_filter: BloomFilter,
    pub target: String,
    pub pseudonym: String,
}

/// One `error` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PsnError {
    pub bloom_filter: BloomFilter,
    pub target: String,
    /// `"system#code"` (e.g. `http://hl7.org/fhir/issue-type#not-found`), or the bare code when
    /// the Coding has no system.
    pub code: String,
}

impl fmt::Debug for PsnResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PsnResult")
            .field("bloom_filter", &self.bloom_filter)
            .field("target", &self.target)
            .field("pseudonym", &"<redacted>")
            .finish()
    }
}

/// Parses a `$requestPsnFromBfWorkflow` response. Errors only when the body is not a
/// `Parameters` resource; broken or unknown entries become [`PsnResponse::problems`].
pub fn parse_psn_response(body: &[u8]) -> Result<PsnResponse, ProtoError> {
    let parsed = parameters::parse_body(body, MAX_PSN_ENTRIES)?;
    let mut response = PsnResponse::default();
    for entry in &parsed.entries {
        let label = match &entry.decoded {
            Ok(p) => format!("parameter {} (`{}`)", entry.index, display_name(&p.name)),
            Err(e) => match &e.name {
                Some(name) => format!("parameter {} (`{}`)", entry.index, display_name(name)),
                None => format!("parameter {}", entry.index),
            },
        };
        let parameter = match &entry.decoded {
            Ok(p) => p,
            Err(e) => {
                response.problems.push(format!("{label}: {}", e.reason));
                continue;
            }
        };
        let mut c = Checker::default();
        match parameter.name.as_str() {
            "pseudonym-bf" => {
                report_unknown_parts(&mut c, parameter, &["bloomfilter", "target", "pseudonym"]);
                let bloom_filter = c
                    .exactly_one(parameter, "bloomfilter")
                    .and_then(|x| c.bloom_filter(x));
                let target = c
                    .exactly_one(parameter, "target")
                    .and_then(|x| c.identifier(x));
                let pseudonym = c
                    .exactly_one(parameter, "pseudonym")
                    .and_then(|x| c.identifier(x));
                if let (Some(bloom_filter), Some(target), Some(pseudonym)) =
                    (bloom_filter, target, pseudonym)
                {
                    response.pseudonyms.push(PsnResult {
                        bloom_filter,
                        target,
                        pseudonym,
                    });
                }
            }
            "error" => {
                report_unknown_parts(
                    &mut c,
                    parameter,
                    &["bloomfilter", "target", "error-code", "all"],
                );
                // `bloomfilter` and `target` are 0..1 in the IG: an entry without a filter is
                // about the whole request, and must never vanish into `problems`.
                let filter_part = c.at_most_one(parameter, "bloomfilter");
                let all = matches!(c.at_most_one(parameter, "all"), Ok(Some(_)));
                // `Some(..)`: the entry names a filter (read or not); `None`: it names none.
                let named = match filter_part {
                    Ok(Some(part)) if !all => Some(c.bloom_filter(part)),
                    _ => None,
                };
                let target = match (&named, c.at_most_one(parameter, "target")) {
                    (Some(_), Ok(Some(t))) => c.identifier(t),
                    (Some(_), _) => Some(String::new()),
                    (None, _) => None,
                };
                let code_part = c.exactly_one(parameter, "error-code");
                let code = code_part.and_then(|x| error_code(&mut c, x));
                let display = code_part.and_then(coding_display);
                match named {
                    Some(bloom_filter) => {
                        if let (Some(bloom_filter), Some(target), Some(code)) =
                            (bloom_filter, target, code)
                        {
                            response.errors.push(PsnError {
                                bloom_filter,
                                target,
                                code,
                            });
                        }
                    }
                    // A repeated `bloomfilter` makes the entry unreadable: not a verdict on
                    // any one filter, and not silently nothing either.
                    None => response
                        .request_errors
                        .push(RequestError { all, code, display }),
                }
            }
            _ => c.push("unknown parameter, ignored".to_owned()),
        }
        if !c.problems.is_empty() {
            response
                .problems
                .push(format!("{label}: {}", c.problems.join("; ")));
        }
    }
    if parsed.omitted > 0 {
        response.problems.push(format!(
            "{} entries after the first {MAX_PSN_ENTRIES} were not read",
            parsed.omitted
        ));
    }
    Ok(response)
}

/// Unknown parts do not make an entry unusable, but they are worth a line in the log: they
/// are how a newer gateway would announce something this version misses.
fn report_unknown_parts(c: &mut Checker, parameter: &Parameter, known: &[&str]) {
    for part in &parameter.part {
        if !known.contains(&part.name.as_str()) {
            c.push(format!(
                "unknown part `{}` ignored",
                display_name(&part.name)
            ));
        }
    }
}

/// The `display` of an `error-code` Coding, bounded and on one line (it is shown to people).
fn coding_display(part: &Parameter) -> Option<String> {
    let Some(Value::Coding(coding)) = &part.value else {
        return None;
    };
    let text: String = coding
        .display
        .as_deref()?
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .take(200)
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `error-code`: a Coding (`system#code`); a bare `valueCode` is accepted too.
fn error_code(c: &mut Checker, part: &Parameter) -> Option<String> {
    match &part.value {
        Some(Value::Coding(coding)) => match (coding.system.as_deref(), coding.code.as_deref()) {
            (_, None) | (_, Some("")) => {
                c.push(format!("part `{}` is a Coding without `code`", part.name));
                None
            }
            (Some(system), Some(code)) if !system.is_empty() => Some(format!("{system}#{code}")),
            (_, Some(code)) => Some(code.to_owned()),
        },
        Some(Value::Code(code)) if !code.is_empty() => Some(code.clone()),
        _ => {
            c.wrong_type(part, "valueCoding");
            None
        }
    }
}
