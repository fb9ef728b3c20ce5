//! The fast path of [`super::parse_tasks_with`]: a listing read straight into borrowed views of
//! its entries, without building the generic JSON tree first.
//!
//! The generic path (`parameters::parse_body`, then one [`Parameter`] per entry, then the task
//! rules) has to accept *any* JSON and account for every oddity with a precise problem, so it
//! first builds a `serde_json::Value` of each entry (maps of owned keys and values), keeps it
//! as the entry's raw form (problem keys are digests of it), and then copies it into a
//! `Parameter`. For a listing of 10,000 well-formed tasks that is most of the parse time.
//!
//! This path accepts only the shape the dispatcher actually sends:
//!
//! ```text
//! { "resourceType": "Parameters", ...ignored keys..., "parameter": [
//!     { "name": <known task type>, "part": [
//!         { "name": <a part this task type knows>, <at most one of valueBase64Binary,
//!           valueId, valueString, valueInstant, valueDateTime: a string | valueIdentifier:
//!           {system?, value?} | valueCoding: {system?, code?, display?}> } ... ] } ... ] }
//! ```
//!
//! and gives up (`None`) on anything else: an unknown task type or part, any other key in an
//! entry, a part or an Identifier, a `null`, an array where an object belongs, a repeated key, more entries than
//! [`ParseLimits::max_tasks`], and any task the task rules turn into a problem. The caller then
//! parses the whole body again on the generic path, so every unusual body gets exactly the
//! answer it always got; this path only has to be right about the bodies it accepts.
//!
//! Memory: each entry becomes a task as soon as its view is read (the view borrows from the
//! body), and the first entry this path does not accept ends it, so it never holds more than
//! the tasks and one entry's view (at most `MAX_FAST_PARTS` parts); past
//! [`ParseLimits::max_tasks`] the generic path takes over as before.
//!
//! It is right about those because it does not re-implement the task rules: it builds the same
//! [`Parameter`] the generic codec builds for such an entry (names and values as received,
//! no `extra` keys, no resource) and hands it to the same `parse_known`. What it saves is the
//! intermediate `Value` tree (strings are borrowed from the body unless they contain escapes)
//! and the raw copy of each entry, which only problems and unknown parts need. The test
//! `fast_and_generic_paths_agree` in `tests/it/fast_path.rs` checks the claim on the reference
//! examples, every task shape of the test suite, and systematic mutations of them.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use super::{ParseLimits, Task, TaskList, is_known_type, parse_known, schema};
use crate::parameters::{Coding, Identifier, Parameter, RESOURCE_TYPE, Value};

/// Parses `body` on the fast path, or returns `None` when it is anything but the plain shape
/// described in the module docs (the caller then takes the generic path).
pub(super) fn parse(body: &[u8], limits: &ParseLimits) -> Option<TaskList> {
    // The same byte order mark the generic path skips.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let tasks = BodySeed { limits }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(TaskList {
        tasks,
        ..TaskList::default()
    })
}

/// The body. Other top-level keys are skipped, as on the generic path; a repeated
/// `resourceType` or `parameter`, or a missing `resourceType`, gives up (the generic path
/// reports it). Each entry becomes a task as soon as it is read, so no view of the whole
/// listing is ever held, and the first entry this path does not accept ends it.
struct BodySeed<'l> {
    limits: &'l ParseLimits,
}

/// Why the fast path gave up; never shown (the generic path then reads the body).
const GIVE_UP: &str = "not a plain listing";

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Vec<Task>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Task>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Vec<Task>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Parameters resource")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<Task>, A::Error> {
        let mut resource_type_seen = false;
        let mut tasks = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "resourceType" => {
                    let Text(value) = map.next_value::<Text<'de>>()?;
                    if resource_type_seen || value != RESOURCE_TYPE {
                        return Err(de::Error::custom(GIVE_UP));
                    }
                    resource_type_seen = true;
                }
                "parameter" => {
                    if tasks.is_some() {
                        return Err(de::Error::custom(GIVE_UP));
                    }
                    tasks = Some(map.next_value_seed(TasksSeed {
                        limits: self.limits,
                    })?);
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        if !resource_type_seen {
            return Err(de::Error::custom(GIVE_UP));
        }
        // Absent reads as no entries (as on the generic path).
        Ok(tasks.unwrap_or_default())
    }
}

/// The `parameter` array, read entry by entry into tasks; `null` or anything but an array
/// gives up (the generic path reports it).
struct TasksSeed<'l> {
    limits: &'l ParseLimits,
}

impl<'de> DeserializeSeed<'de> for TasksSeed<'_> {
    type Value = Vec<Task>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Task>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TasksSeed<'_> {
    type Value = Vec<Task>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of tasks")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Task>, A::Error> {
        let mut tasks = Vec::new();
        while let Some(Object(entry)) = seq.next_element::<Object<EntryView<'de>>>()? {
            if tasks.len() >= self.limits.max_tasks {
                return Err(de::Error::custom(GIVE_UP));
            }
            match entry_task(entry, self.limits) {
                Some(task) => tasks.push(task),
                None => return Err(de::Error::custom(GIVE_UP)),
            }
        }
        Ok(tasks)
    }
}

fn entry_task(entry: EntryView<'_>, limits: &ParseLimits) -> Option<Task> {
    let name = entry.name.0;
    if !is_known_type(&name) {
        return None;
    }
    let known = schema(&name);
    let mut parts = Vec::with_capacity(entry.part.0.len());
    for Object(part) in entry.part.0 {
        if !known.contains(&part.name.0.as_ref()) {
            return None;
        }
        parts.push(part.into_parameter()?);
    }
    let parameter = Parameter {
        name: name.into_owned(),
        value: None,
        part: parts,
        resource: None,
    };
    // No unknown parts (checked above), so `parse_known` needs no raw JSON for them.
    parse_known(&parameter, None, limits).ok()
}

// ---------------------------------------------------------------------------------------------
// The views
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryView<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    part: Parts<'a>,
}

/// The parts of one entry, at most [`MAX_FAST_PARTS`]: a known task has a handful (plus up
/// to `max_elements` elements); an entry with more gives up before its views pile up, and
/// the generic path reports it.
struct Parts<'a>(Vec<Object<PartView<'a>>>);

const MAX_FAST_PARTS: usize = 128;

impl<'de: 'a, 'a> Deserialize<'de> for Parts<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartsVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for PartsVisitor<'a> {
            type Value = Parts<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of parts")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parts<'a>, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<Object<PartView<'a>>>()? {
                    if parts.len() >= MAX_FAST_PARTS {
                        return Err(de::Error::custom(GIVE_UP));
                    }
                    parts.push(part);
                }
                Ok(Parts(parts))
            }
        }

        deserializer.deserialize_seq(PartsVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartView<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(
        rename = "valueBase64Binary",
        default,
        borrow,
        deserialize_with = "present"
    )]
    base64_binary: Option<Text<'a>>,
    #[serde(rename = "valueId", default, borrow, deserialize_with = "present")]
    id: Option<Text<'a>>,
    #[serde(rename = "valueString", default, borrow, deserialize_with = "present")]
    string: Option<Text<'a>>,
    #[serde(rename = "valueInstant", default, borrow, deserialize_with = "present")]
    instant: Option<Text<'a>>,
    #[serde(
        rename = "valueDateTime",
        default,
        borrow,
        deserialize_with = "present"
    )]
    date_time: Option<Text<'a>>,
    #[serde(
        rename = "valueIdentifier",
        default,
        borrow,
        deserialize_with = "present"
    )]
    identifier: Option<Object<IdentifierView<'a>>>,
    #[serde(rename = "valueCoding", default, borrow, deserialize_with = "present")]
    coding: Option<Object<CodingView<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifierView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    system: Option<Text<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodingView<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    system: Option<Text<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    code: Option<Text<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    display: Option<Text<'a>>,
}

impl PartView<'_> {
    /// The `Parameter` the generic codec builds for this part, or `None` where the generic
    /// codec would refuse it (an empty name, two `value[x]` keys).
    fn into_parameter(self) -> Option<Parameter> {
        let PartView {
            name,
            base64_binary,
            id,
            string,
            instant,
            date_time,
            identifier,
            coding,
        } = self;
        if name.0.is_empty() {
            return None;
        }
        let values = [
            base64_binary.map(|t| Value::Base64Binary(t.owned())),
            id.map(|t| Value::Id(t.owned())),
            string.map(|t| Value::String(t.owned())),
            instant.map(|t| Value::Instant(t.owned())),
            date_time.map(|t| Value::DateTime(t.owned())),
            identifier.map(|Object(i)| {
                Value::Identifier(Identifier {
                    system: i.system.map(Text::owned),
                    value: i.value.map(Text::owned),
                    extra: serde_json::Map::new(),
                })
            }),
            coding.map(|Object(c)| {
                Value::Coding(Coding {
                    system: c.system.map(Text::owned),
                    code: c.code.map(Text::owned),
                    display: c.display.map(Text::owned),
                    extra: serde_json::Map::new(),
                })
            }),
        ];
        let mut values = values.into_iter().flatten();
        let value = values.next();
        if values.next().is_some() {
            return None;
        }
        Some(Parameter {
            name: name.owned(),
            value,
            part: Vec::new(),
            resource: None,
        })
    }
}

/// A JSON object read as `T`. serde's derived structs also accept a JSON array of their
/// fields in order (`["https://...", "eyematics"]` for an Identifier), which the generic codec
/// rightly reports as a wrong type; every view is therefore read through this, which accepts
/// an object and nothing else.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// A JSON string, borrowed from the body unless it had to be unescaped. Anything but a string
/// (`null` included) is an error.
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    fn owned(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// For an optional key whose value must not be `null`: serde's `Option` reads `null` as
/// absent, where the generic codec reports it ("`valueString` is null, expected a string").
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
