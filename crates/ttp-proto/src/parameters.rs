//! A generic codec for the FHIR `Parameters` resource, the envelope of every dispatcher call.
//!
//! A `Parameters` resource is a list of named entries. Each entry carries either one typed value
//! (`valueString`, `valueIdentifier`, ...: the FHIR `value[x]` choice), a whole resource, or
//! nested entries (`part`), which is how the dispatcher shapes its tasks:
//!
//! ```json
//! { "resourceType": "Parameters",
//!   "parameter": [
//!     { "name": "send_idat", "part": [
//!         { "name": "taskId", "valueId": "064ddebf" },
//!         { "name": "element", "valueCoding": { "code": "given" } } ] } ] }
//! ```
//!
//! This module knows nothing about tasks; it only maps that JSON to [`Parameters`] and back.
//!
//! # Two ways in
//!
//! * [`Parameters::from_json_bytes`] is strict: any entry it cannot represent fails the whole
//!   body. Good for bodies we built ourselves and for tests.
//! * [`parse_body`] is what response parsers use. Responses come from gateways we do not
//!   control, and one odd entry (two `value[x]` keys, no `name`) must not cost us the other
//!   ninety-nine tasks. So it splits errors in two:
//!   - whole-body errors ([`ProtoError`]): not JSON, not an object, not a `Parameters`
//!     resource, `parameter` not an array. Nothing in such a body can be trusted.
//!   - entry errors ([`ParameterError`]): kept per top-level entry in [`Entry::decoded`], next
//!     to the entry's JSON as received ([`Entry::raw`]), so the caller can report the entry,
//!     derive a stable identity from it, and carry on with the rest.
//!
//!   It also caps the number of entries it keeps ([`ParsedBody::omitted`] counts the rest)
//!   while streaming, so a hostile body with millions of entries costs parse time but not
//!   memory beyond the cap. [`for_each_entry`] is the streaming core: it hands each entry to
//!   the caller as borrowed JSON text and keeps nothing, for callers that decide per entry
//!   what to keep (the task listing).
//!
//! # What is and is not kept
//!
//! Per entry: `name`, the one `value[x]`, `part` and `resource`. Values of the types listed in
//! [`Value`] are typed; any other `value[x]` is kept verbatim as [`Value::Other`]. Entry-level
//! `id`, `extension`, `modifierExtension` and primitive extensions (`_valueString`) are not
//! represented (the dispatcher uses none of them); callers that need them have [`Entry::raw`].
//!
//! # Secrets and IDAT in `Debug`
//!
//! `Parameters` carry Bloom filters, pseudonyms, the IDAT of `$providePatientData` and,
//! optionally, the API key. Their `Debug` output therefore shows the structure only (names,
//! value types, lengths, resource types), never a value, so a `{:?}` in a log line is safe.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value as Json};

use crate::ProtoError;

/// The `resourceType` of a `Parameters` resource.
pub const RESOURCE_TYPE: &str = "Parameters";

/// A FHIR `Parameters` resource. Serialises with `"resourceType": "Parameters"`.
#[derive(Clone, Default, PartialEq)]
pub struct Parameters {
    pub parameter: Vec<Parameter>,
}

/// One `parameter` (or `part`) entry.
#[derive(Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    /// The entry's `value[x]`, if it has one.
    pub value: Option<Value>,
    /// Nested entries (`part`); empty when absent.
    pub part: Vec<Parameter>,
    /// A whole resource (for example the `Patient` of `$providePatientData`), verbatim.
    pub resource: Option<Json>,
}

/// A `value[x]`. The variant fixes the JSON key (`Value::Id` is `valueId`).
///
/// Date and time types are kept as the text received: this codec is faithful, and the task
/// parser decides which lexical forms it accepts.
#[derive(Clone, PartialEq)]
pub enum Value {
    String(String),
    Id(String),
    Code(String),
    Uri(String),
    Instant(String),
    DateTime(String),
    Date(String),
    Boolean(bool),
    /// FHIR `integer` is a signed 32-bit number.
    Integer(i32),
    /// Held as a JSON number: without serde_json's `arbitrary_precision` feature, digits
    /// beyond an `f64` and trailing zeros (`1.50`) are not preserved. The dispatcher sends no
    /// decimals; this is here for completeness.
    Decimal(Number),
    Base64Binary(String),
    Identifier(Identifier),
    Coding(Coding),
    /// Any other `value[x]`: its key (`"valueQuantity"`) and its JSON, verbatim.
    Other(String, Json),
}

/// A FHIR `Identifier`. Elements other than `system` and `value` (`use`, `type`, `period`,
/// `assigner`, ...) are kept verbatim in `extra`.
#[derive(Clone, Default, PartialEq)]
pub struct Identifier {
    pub system: Option<String>,
    pub value: Option<String>,
    pub extra: Map<String, Json>,
}

/// A FHIR `Coding`. Elements other than `system`, `code` and `display` (`version`,
/// `userSelected`, ...) are kept verbatim in `extra`.
#[derive(Clone, Default, PartialEq)]
pub struct Coding {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    pub extra: Map<String, Json>,
}

/// Why one entry of a body could not be decoded. The reason names keys and positions, never
/// values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParameterError {
    /// The entry's `name`, when it has a readable one.
    pub name: Option<String>,
    pub reason: String,
}

/// One top-level entry of a body parsed with [`parse_body`].
#[derive(Clone, PartialEq)]
pub struct Entry {
    /// Position in the body's `parameter` array (0-based).
    pub index: usize,
    /// The entry's JSON as received: the source for digests and for reporting entries this
    /// version does not understand.
    pub raw: Json,
    /// The entry decoded, or why it could not be.
    pub decoded: Result<Parameter, ParameterError>,
}

/// The entries of a `Parameters` body parsed with [`parse_body`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedBody {
    /// The first `max_entries` entries.
    pub entries: Vec<Entry>,
    /// How many entries beyond `max_entries` the body had (skipped without being kept).
    pub omitted: usize,
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

impl Parameters {
    pub fn new() -> Parameters {
        Parameters::default()
    }

    /// Appends an entry (builder style).
    pub fn with(mut self, parameter: Parameter) -> Parameters {
        self.parameter.push(parameter);
        self
    }

    /// Appends an entry.
    pub fn push(&mut self, parameter: Parameter) {
        self.parameter.push(parameter);
    }

    /// Appends an entry with a `value[x]`.
    pub fn value(self, name: impl Into<String>, value: Value) -> Parameters {
        self.with(Parameter::with_value(name, value))
    }

    pub fn string(self, name: impl Into<String>, value: impl Into<String>) -> Parameters {
        self.value(name, Value::String(value.into()))
    }

    pub fn id(self, name: impl Into<String>, value: impl Into<String>) -> Parameters {
        self.value(name, Value::Id(value.into()))
    }

    pub fn code(self, name: impl Into<String>, value: impl Into<String>) -> Parameters {
        self.value(name, Value::Code(value.into()))
    }

    pub fn uri(self, name: impl Into<String>, value: impl Into<String>) -> Parameters {
        self.value(name, Value::Uri(value.into()))
    }

    pub fn boolean(self, name: impl Into<String>, value: bool) -> Parameters {
        self.value(name, Value::Boolean(value))
    }

    pub fn integer(self, name: impl Into<String>, value: i32) -> Parameters {
        self.value(name, Value::Integer(value))
    }

    /// Appends a `valueInstant` in FHIR form (`Z` for UTC, fractional seconds only if any).
    pub fn instant(
        self,
        name: impl Into<String>,
        value: chrono::DateTime<chrono::FixedOffset>,
    ) -> Parameters {
        self.value(name, Value::instant(value))
    }

    /// Appends a `valueBase64Binary` holding `bytes` (standard alphabet, padded).
    pub fn base64_binary(self, name: impl Into<String>, bytes: &[u8]) -> Parameters {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.value(name, Value::Base64Binary(text))
    }

    pub fn identifier(
        self,
        name: impl Into<String>,
        system: Option<&str>,
        value: impl Into<String>,
    ) -> Parameters {
        self.value(name, Value::Identifier(Identifier::new(system, value)))
    }

    pub fn coding(self, name: impl Into<String>, system: Option<&str>, code: &str) -> Parameters {
        self.value(name, Value::Coding(Coding::new(system, code)))
    }

    /// Appends an entry holding a whole resource.
    pub fn resource(self, name: impl Into<String>, resource: Json) -> Parameters {
        self.with(Parameter::with_resource(name, resource))
    }

    /// Appends a multi-part entry.
    pub fn part(self, name: impl Into<String>, parts: Parameters) -> Parameters {
        self.with(Parameter::with_parts(name, parts.parameter))
    }

    /// The entries called `name`, in order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Parameter> + 'a {
        self.parameter.iter().filter(move |p| p.name == name)
    }

    /// The first entry called `name`.
    pub fn first(&self, name: &str) -> Option<&Parameter> {
        self.parameter.iter().find(|p| p.name == name)
    }
}

impl Parameter {
    pub fn with_value(name: impl Into<String>, value: Value) -> Parameter {
        Parameter {
            name: name.into(),
            value: Some(value),
            part: Vec::new(),
            resource: None,
        }
    }

    pub fn with_parts(name: impl Into<String>, part: Vec<Parameter>) -> Parameter {
        Parameter {
            name: name.into(),
            value: None,
            part,
            resource: None,
        }
    }

    pub fn with_resource(name: impl Into<String>, resource: Json) -> Parameter {
        Parameter {
            name: name.into(),
            value: None,
            part: Vec::new(),
            resource: Some(resource),
        }
    }

    /// The parts called `name`, in order.
    pub fn parts_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Parameter> + 'a {
        self.part.iter().filter(move |p| p.name == name)
    }
}

impl Identifier {
    pub fn new(system: Option<&str>, value: impl Into<String>) -> Identifier {
        Identifier {
            system: system.map(str::to_owned),
            value: Some(value.into()),
            extra: Map::new(),
        }
    }
}

impl Coding {
    pub fn new(system: Option<&str>, code: &str) -> Coding {
        Coding {
            system: system.map(str::to_owned),
            code: Some(code.to_owned()),
            display: None,
            extra: Map::new(),
        }
    }
}

impl Value {
    /// A `valueInstant` in canonical FHIR form.
    pub fn instant(at: chrono::DateTime<chrono::FixedOffset>) -> Value {
        Value::Instant(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }

    /// The JSON key of this value: `"valueString"`, `"valueIdentifier"`, ...
    pub fn key(&self) -> &str {
        match self {
            Value::String(_) => "valueString",
            Value::Id(_) => "valueId",
            Value::Code(_) => "valueCode",
            Value::Uri(_) => "valueUri",
            Value::Instant(_) => "valueInstant",
            Value::DateTime(_) => "valueDateTime",
            Value::Date(_) => "valueDate",
            Value::Boolean(_) => "valueBoolean",
            Value::Integer(_) => "valueInteger",
            Value::Decimal(_) => "valueDecimal",
            Value::Base64Binary(_) => "valueBase64Binary",
            Value::Identifier(_) => "valueIdentifier",
            Value::Coding(_) => "valueCoding",
            Value::Other(key, _) => key,
        }
    }

    /// The text of a string-typed value (string, id, code, uri, the date/time types and
    /// base64Binary); `None` for the others.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s)
            | Value::Id(s)
            | Value::Code(s)
            | Value::Uri(s)
            | Value::Instant(s)
            | Value::DateTime(s)
            | Value::Date(s)
            | Value::Base64Binary(s) => Some(s),
            _ => None,
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Value::String(s)
            | Value::Id(s)
            | Value::Code(s)
            | Value::Uri(s)
            | Value::Instant(s)
            | Value::DateTime(s)
            | Value::Date(s)
            | Value::Base64Binary(s) => Json::String(s.clone()),
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => Json::from(*i),
            Value::Decimal(n) => Json::Number(n.clone()),
            Value::Identifier(identifier) => {
                let mut object = identifier.extra.clone();
                insert_opt(&mut object, "system", &identifier.system);
                insert_opt(&mut object, "value", &identifier.value);
                Json::Object(object)
            }
            Value::Coding(coding) => {
                let mut object = coding.extra.clone();
                insert_opt(&mut object, "system", &coding.system);
                insert_opt(&mut object, "code", &coding.code);
                insert_opt(&mut object, "display", &coding.display);
                Json::Object(object)
            }
            Value::Other(_, json) => json.clone(),
        }
    }

    /// Decodes the value of JSON key `key` (already known to be a `value[x]` key).
    fn from_json(key: &str, json: &Json) -> Result<Value, String> {
        let text = || match json {
            Json::String(s) => Ok(s.clone()),
            other => Err(wrong_kind(key, other, "a string")),
        };
        Ok(match key {
            "valueString" => Value::String(text()?),
            "valueId" => Value::Id(text()?),
            "valueCode" => Value::Code(text()?),
            "valueUri" => Value::Uri(text()?),
            "valueInstant" => Value::Instant(text()?),
            "valueDateTime" => Value::DateTime(text()?),
            "valueDate" => Value::Date(text()?),
            "valueBase64Binary" => Value::Base64Binary(text()?),
            "valueBoolean" => match json {
                Json::Bool(b) => Value::Boolean(*b),
                other => return Err(wrong_kind(key, other, "a boolean")),
            },
            "valueInteger" => match json.as_i64().map(i32::try_from) {
                Some(Ok(i)) => Value::Integer(i),
                Some(Err(_)) => return Err(format!("`{key}` is out of the 32-bit range")),
                None => return Err(wrong_kind(key, json, "an integer")),
            },
            "valueDecimal" => match json {
                Json::Number(n) => Value::Decimal(n.clone()),
                other => return Err(wrong_kind(key, other, "a number")),
            },
            "valueIdentifier" => {
                let mut extra = object_of(key, json)?;
                Value::Identifier(Identifier {
                    system: take_string(&mut extra, key, "system")?,
                    value: take_string(&mut extra, key, "value")?,
                    extra,
                })
            }
            "valueCoding" => {
                let mut extra = object_of(key, json)?;
                Value::Coding(Coding {
                    system: take_string(&mut extra, key, "system")?,
                    code: take_string(&mut extra, key, "code")?,
                    display: take_string(&mut extra, key, "display")?,
                    extra,
                })
            }
            other => {
                if json.is_null() {
                    return Err(format!("`{other}` is null"));
                }
                Value::Other(other.to_owned(), json.clone())
            }
        })
    }
}

fn insert_opt(object: &mut Map<String, Json>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        object.insert(key.to_owned(), Json::String(v.clone()));
    }
}

fn object_of(key: &str, json: &Json) -> Result<Map<String, Json>, String> {
    match json {
        Json::Object(map) => Ok(map.clone()),
        other => Err(wrong_kind(key, other, "an object")),
    }
}

fn take_string(
    object: &mut Map<String, Json>,
    key: &str,
    field: &str,
) -> Result<Option<String>, String> {
    match object.remove(field) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_kind(&format!("{key}.{field}"), &other, "a string")),
    }
}

fn wrong_kind(key: &str, found: &Json, expected: &str) -> String {
    format!("`{key}` is {}, expected {expected}", json_kind(found))
}

/// "a string", "an object", ...: for messages that must not show the value itself.
pub(crate) fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Whether a JSON key is a FHIR choice element `value[x]` (`valueString`, but not `value` or
/// the primitive-extension key `_valueString`).
fn is_value_key(key: &str) -> bool {
    key.strip_prefix("value")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

/// A name as it may appear in a message: short printable names as they are, others described.
/// Names are not values, but a hostile gateway could send a megabyte of control characters.
pub(crate) fn display_name(name: &str) -> String {
    const MAX: usize = 64;
    if name.is_empty() {
        "(empty name)".to_owned()
    } else if name.chars().count() <= MAX && !name.chars().any(char::is_control) {
        name.to_owned()
    } else {
        format!("(a {}-byte name with unusual characters)", name.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

impl Parameters {
    /// The resource as JSON, `resourceType` included. Empty `parameter` arrays are left out, as
    /// FHIR forbids empty arrays.
    pub fn to_json_value(&self) -> Json {
        let mut object = Map::new();
        object.insert("resourceType".into(), Json::String(RESOURCE_TYPE.into()));
        if !self.parameter.is_empty() {
            let entries = self
                .parameter
                .iter()
                .map(Parameter::to_json_value)
                .collect();
            object.insert("parameter".into(), Json::Array(entries));
        }
        Json::Object(object)
    }

    /// The request body, `resourceType` first and each entry's keys in the usual FHIR order
    /// (`name`, `value[x]`, `resource`, `part`), which makes traced bodies easy to read.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail (every map key is a string); the fallback only
        // exists so that this function has no panic path.
        serde_json::to_vec(self).unwrap_or_else(|_| self.to_json_value().to_string().into_bytes())
    }

    /// Strict decoding: every entry must be representable, else the whole body is rejected.
    /// For responses from a gateway use [`parse_body`], which isolates bad entries.
    pub fn from_json_bytes(body: &[u8]) -> Result<Parameters, ProtoError> {
        Parameters::from_parsed(parse_body(body, usize::MAX)?)
    }

    /// Strict decoding from a JSON value (see [`Parameters::from_json_bytes`]).
    pub fn from_json_value(json: &Json) -> Result<Parameters, ProtoError> {
        // Re-serialising keeps a single code path (and its checks) for bytes and values.
        Parameters::from_json_bytes(json.to_string().as_bytes())
    }

    fn from_parsed(parsed: ParsedBody) -> Result<Parameters, ProtoError> {
        let mut parameter = Vec::with_capacity(parsed.entries.len());
        for entry in parsed.entries {
            match entry.decoded {
                Ok(p) => parameter.push(p),
                Err(e) => {
                    return Err(ProtoError::Malformed(format!(
                        "parameter {} ({}): {}",
                        entry.index,
                        e.name.as_deref().map_or("unnamed".into(), display_name),
                        e.reason
                    )));
                }
            }
        }
        Ok(Parameters { parameter })
    }
}

impl Parameter {
    pub fn to_json_value(&self) -> Json {
        let mut object = Map::new();
        object.insert("name".into(), Json::String(self.name.clone()));
        if let Some(value) = &self.value {
            object.insert(value.key().to_owned(), value.to_json());
        }
        if let Some(resource) = &self.resource {
            object.insert("resource".into(), resource.clone());
        }
        if !self.part.is_empty() {
            let parts = self.part.iter().map(Parameter::to_json_value).collect();
            object.insert("part".into(), Json::Array(parts));
        }
        Json::Object(object)
    }

    /// Decodes one entry (and its parts). Tolerates unknown keys; rejects what this type
    /// cannot hold faithfully.
    pub fn from_json_value(json: &Json) -> Result<Parameter, ParameterError> {
        let name = json
            .get("name")
            .and_then(Json::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        decode_parameter(json).map_err(|reason| ParameterError { name, reason })
    }
}

fn decode_parameter(json: &Json) -> Result<Parameter, String> {
    let Json::Object(object) = json else {
        return Err(format!("is {}, not an object", json_kind(json)));
    };
    let name = match object.get("name") {
        None => return Err("has no `name`".into()),
        Some(Json::String(s)) if s.is_empty() => return Err("has an empty `name`".into()),
        Some(Json::String(s)) => s.clone(),
        Some(other) => return Err(wrong_kind("name", other, "a string")),
    };

    let value_keys: Vec<&String> = object.keys().filter(|k| is_value_key(k)).collect();
    let value = match value_keys.as_slice() {
        [] => None,
        [key] => Some(Value::from_json(key, &object[key.as_str()])?),
        keys => {
            let list: Vec<String> = keys.iter().map(|k| display_name(k)).collect();
            return Err(format!(
                "has {} value[x] keys ({}), at most one is allowed",
                keys.len(),
                list.join(", ")
            ));
        }
    };

    let resource = match object.get("resource") {
        None => None,
        Some(r @ Json::Object(_)) => Some(r.clone()),
        Some(other) => return Err(wrong_kind("resource", other, "an object")),
    };

    let part = match object.get("part") {
        None => Vec::new(),
        Some(Json::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match decode_parameter(item) {
                    Ok(p) => parts.push(p),
                    Err(reason) => {
                        let label = match item.get("name").and_then(Json::as_str) {
                            Some(n) if !n.is_empty() => format!(" (`{}`)", display_name(n)),
                            _ => String::new(),
                        };
                        return Err(format!("part {i}{label} {reason}"));
                    }
                }
            }
            parts
        }
        Some(other) => return Err(wrong_kind("part", other, "an array")),
    };

    Ok(Parameter {
        name,
        value,
        part,
        resource,
    })
}

impl serde::Serialize for Parameters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("resourceType", RESOURCE_TYPE)?;
        if !self.parameter.is_empty() {
            map.serialize_entry("parameter", &self.parameter)?;
        }
        map.end()
    }
}

impl serde::Serialize for Parameter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        if let Some(value) = &self.value {
            map.serialize_entry(value.key(), &value.to_json())?;
        }
        if let Some(resource) = &self.resource {
            map.serialize_entry("resource", resource)?;
        }
        if !self.part.is_empty() {
            map.serialize_entry("part", &self.part)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Parameters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        Parameters::from_json_value(&json).map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Tolerant, bounded parsing of response bodies
// ---------------------------------------------------------------------------------------------

/// Parses a response body that must be a `Parameters` resource, keeping at most `max_entries`
/// top-level entries (the rest are skipped while streaming and counted in
/// [`ParsedBody::omitted`]). A missing `parameter` key reads as no entries.
///
/// A body without `resourceType` is rejected rather than read as "empty": a proxy's
/// `{"error": ...}` must not look like "no tasks".
pub fn parse_body(body: &[u8], max_entries: usize) -> Result<ParsedBody, ProtoError> {
    let mut items: Vec<Json> = Vec::new();
    let mut omitted = 0usize;
    let mut too_deep = None;
    for_each_entry(body, &mut |_, raw| {
        if items.len() < max_entries {
            match serde_json::from_str(raw.get()) {
                Ok(item) => items.push(item),
                Err(e) => {
                    too_deep.get_or_insert(e);
                }
            }
        } else {
            omitted = omitted.saturating_add(1);
        }
    })?;
    if let Some(e) = too_deep {
        return Err(ProtoError::NotJson(e.to_string()));
    }
    Ok(ParsedBody {
        entries: items
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Entry {
                index,
                decoded: Parameter::from_json_value(&raw),
                raw,
            })
            .collect(),
        omitted,
    })
}

/// The streaming core of [`parse_body`]: checks that `body` is a `Parameters` resource and
/// hands each entry of its `parameter` array to `on_entry` as its JSON text (position,
/// text), borrowed from the body, without building any tree. What the caller keeps is up to
/// it, so a hostile body costs memory only for what the caller decides to keep.
///
/// `on_entry` may be called before the body turns out not to be a `Parameters` resource
/// (`resourceType` may come after `parameter`); the error then tells the caller to discard
/// what it collected.
///
/// An entry text is valid JSON, but may be nested deeper than serde_json builds trees for
/// (skipping is iterative, building is recursive): a caller that parses it must expect
/// that error.
pub fn for_each_entry<'de>(
    body: &'de [u8],
    on_entry: &mut dyn FnMut(usize, &'de RawValue),
) -> Result<(), ProtoError> {
    // Some servers prefix JSON with a UTF-8 byte order mark; serde_json does not skip it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let top = TopSeed { on_entry }
        .deserialize(&mut deserializer)
        .and_then(|top| deserializer.end().map(|()| top))
        .map_err(|e| ProtoError::NotJson(e.to_string()))?;

    let body_fields = match top {
        Top::Object(fields) => fields,
        Top::NotObject(kind) => {
            return Err(ProtoError::Malformed(format!(
                "the body is {kind}, not a JSON object"
            )));
        }
    };
    if let Some(key) = body_fields.duplicate_key {
        return Err(ProtoError::Malformed(format!(
            "the key `{key}` appears more than once"
        )));
    }
    match &body_fields.resource_type {
        None => {
            return Err(ProtoError::Malformed(
                "the body has no `resourceType` (expected \"Parameters\")".into(),
            ));
        }
        Some(Json::String(t)) if t == RESOURCE_TYPE => {}
        Some(Json::String(t)) if t == "OperationOutcome" => {
            return Err(ProtoError::OperationOutcome(
                crate::outcome::summarize_error_body(Some("application/fhir+json"), body),
            ));
        }
        Some(Json::String(t)) => {
            return Err(ProtoError::WrongResourceType(display_name(t)));
        }
        Some(other) => {
            return Err(ProtoError::Malformed(format!(
                "`resourceType` is {}, expected a string",
                json_kind(other)
            )));
        }
    }
    match body_fields.parameter {
        None | Some(Entries::Array) => Ok(()),
        Some(Entries::NotArray(kind)) => Err(ProtoError::Malformed(format!(
            "`parameter` is {kind}, expected an array"
        ))),
    }
}

// The streaming part: serde visitors that accept *any* JSON shape (so serde_json never reports
// a type error, whose message could quote a value), keep `resourceType`, hand each entry of
// `parameter` to the caller as borrowed text, and skip everything else without allocating it.

enum Top {
    Object(BodyFields),
    NotObject(&'static str),
}

#[derive(Default)]
struct BodyFields {
    resource_type: Option<Json>,
    parameter: Option<Entries>,
    duplicate_key: Option<&'static str>,
}

enum Entries {
    /// An array, whose entries went to the caller.
    Array,
    NotArray(&'static str),
}

/// Visitor methods for JSON scalars, mapping each to `$ctor(kind)`.
macro_rules! scalar_kinds {
    ($ctor:path) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($ctor("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($ctor("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($ctor("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($ctor("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($ctor("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($ctor("null"))
        }
    };
}

struct TopSeed<'s, 'de> {
    on_entry: &'s mut dyn FnMut(usize, &'de RawValue),
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, 'de> {
    type Value = Top;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Top, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, 'de> {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a FHIR resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut fields = BodyFields::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resourceType" => {
                    if fields.resource_type.is_some() {
                        fields.duplicate_key = Some("resourceType");
                    }
                    fields.resource_type = Some(map.next_value()?);
                }
                "parameter" => {
                    if fields.parameter.is_some() {
                        fields.duplicate_key = Some("parameter");
                    }
                    fields.parameter = Some(map.next_value_seed(EntriesSeed {
                        on_entry: &mut *self.on_entry,
                    })?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Top::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::NotObject("an array"))
    }

    scalar_kinds!(Top::NotObject);
}

struct EntriesSeed<'s, 'de> {
    on_entry: &'s mut dyn FnMut(usize, &'de RawValue),
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, 'de> {
    type Value = Entries;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Entries, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, 'de> {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of parameters")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
        let mut index = 0usize;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            (self.on_entry)(index, raw);
            index = index.saturating_add(1);
        }
        Ok(Entries::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Entries::NotArray("an object"))
    }

    scalar_kinds!(Entries::NotArray);
}

// ---------------------------------------------------------------------------------------------
// Redacting Debug
// ---------------------------------------------------------------------------------------------

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parameters")
            .field("parameter", &self.parameter)
            .finish()
    }
}

impl fmt::Debug for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Parameter");
        s.field("name", &self.name);
        if let Some(value) = &self.value {
            if self
                .name
                .eq_ignore_ascii_case(crate::ops::API_KEY_PARAMETER)
            {
                // Not even the length of a secret.
                s.field("value", &format_args!("{}(<secret>)", value.key()));
            } else {
                s.field("value", value);
            }
        }
        if let Some(resource) = &self.resource {
            let kind = resource
                .get("resourceType")
                .and_then(Json::as_str)
                .map_or_else(|| "resource".to_owned(), display_name);
            s.field("resource", &format_args!("<{kind} redacted>"));
        }
        if !self.part.is_empty() {
            s.field("part", &self.part);
        }
        s.finish()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => write!(f, "valueBoolean({b})"),
            Value::Integer(i) => write!(f, "valueInteger({i})"),
            Value::Decimal(n) => write!(f, "valueDecimal({n})"),
            Value::Coding(coding) => coding.fmt(f),
            Value::Identifier(identifier) => identifier.fmt(f),
            other => match other.as_str() {
                Some(text) => write!(f, "{}(<{} bytes redacted>)", other.key(), text.len()),
                None => write!(f, "{}(<redacted>)", other.key()),
            },
        }
    }
}

impl fmt::Debug for Identifier {
    /// The system says which namespace; the value is a pseudonym or similar: redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("valueIdentifier")
            .field("system", &self.system)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Coding {
    /// Codes come from published code systems, not from patients: shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("valueCoding")
            .field("system", &self.system)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("index", &self.index)
            .field("raw", &format_args!("<{} redacted>", json_kind(&self.raw)))
            .field("decoded", &self.decoded)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_keys_are_recognised_exactly() {
        assert!(is_value_key("valueString"));
        assert!(is_value_key("valueX"));
        assert!(!is_value_key("value"));
        assert!(!is_value_key("values"));
        assert!(!is_value_key("_valueString"));
        assert!(!is_value_key("name"));
    }

    #[test]
    fn display_name_describes_hostile_names() {
        assert_eq!(display_name("send_idat"), "send_idat");
        assert_eq!(display_name(""), "(empty name)");
        assert!(display_name("a\nb").starts_with("(a 3-byte name"));
        assert!(display_name(&"x".repeat(65)).starts_with("(a 65-byte name"));
    }
}
