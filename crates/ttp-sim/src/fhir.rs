//! Reading and writing the FHIR JSON the dispatcher speaks, on plain `serde_json::Value`.
//!
//! This is deliberately a second, independent implementation of the wire format (the agent has
//! its own in `ttp-proto`): if both shared one codec, a bug in it would cancel out in every
//! test. Reading is strict about what the IG specifies (a `study` must be a `valueString`, not
//! a `valueIdentifier`) so that agent bugs surface as 400s here rather than in production.

use serde_json::{Map, Value, json};

pub(crate) const IDAT_ELEMENTS_SYSTEM: &str =
    "https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements";
pub(crate) const ISSUE_TYPE_SYSTEM: &str = "http://hl7.org/fhir/issue-type";

/// The body is not a usable `Parameters` resource, or a parameter is missing or malformed.
/// The message goes into an OperationOutcome, so it names the parameter and never echoes a
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest(pub(crate) String);

/// The `parameter` entries of a Parameters body.
pub(crate) struct Parameters<'a> {
    entries: &'a [Value],
}

impl<'a> Parameters<'a> {
    /// Checks the envelope: a JSON object with `resourceType: Parameters` and, if present, a
    /// `parameter` array of objects that each have a string `name`.
    pub(crate) fn from_value(body: &'a Value) -> Result<Self, BadRequest> {
        let Some(object) = body.as_object() else {
            return Err(BadRequest("the body is not a JSON object".into()));
        };
        match object.get("resourceType").and_then(Value::as_str) {
            Some("Parameters") => {}
            Some(other) => {
                return Err(BadRequest(format!(
                    "expected a Parameters resource, got resourceType `{other}`"
                )));
            }
            None => return Err(BadRequest("the body has no resourceType".into())),
        }
        let entries = match object.get("parameter") {
            None => &[][..],
            Some(Value::Array(entries)) => entries.as_slice(),
            Some(_) => return Err(BadRequest("Parameters.parameter is not an array".into())),
        };
        for (index, entry) in entries.iter().enumerate() {
            if entry.get("name").and_then(Value::as_str).is_none() {
                return Err(BadRequest(format!(
                    "Parameters.parameter[{index}] has no string `name`"
                )));
            }
        }
        Ok(Self { entries })
    }

    /// All values of the repeated primitive parameter `name`, each of which must be given as
    /// `value_key` (e.g. `valueBase64Binary`).
    pub(crate) fn strings(&self, name: &str, value_key: &str) -> Result<Vec<&'a str>, BadRequest> {
        self.named(name)
            .into_iter()
            .map(|entry| {
                entry.get(value_key).and_then(Value::as_str).ok_or_else(|| {
                    BadRequest(format!(
                        "parameter `{name}` must have a string `{value_key}`"
                    ))
                })
            })
            .collect()
    }

    /// The single value of the primitive parameter `name`.
    pub(crate) fn string(&self, name: &str, value_key: &str) -> Result<&'a str, BadRequest> {
        match self.strings(name, value_key)?.as_slice() {
            [one] => Ok(one),
            [] => Err(BadRequest(format!("parameter `{name}` is missing"))),
            more => Err(BadRequest(format!(
                "parameter `{name}` occurs {} times, expected once",
                more.len()
            ))),
        }
    }

    /// Like [`Self::string`] but absent is fine.
    pub(crate) fn optional_string(
        &self,
        name: &str,
        value_key: &str,
    ) -> Result<Option<&'a str>, BadRequest> {
        match self.strings(name, value_key)?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            more => Err(BadRequest(format!(
                "parameter `{name}` occurs {} times, expected at most once",
                more.len()
            ))),
        }
    }

    /// The single resource parameter `name`.
    pub(crate) fn resource(&self, name: &str) -> Result<&'a Value, BadRequest> {
        let found = self.named(name);
        match found.as_slice() {
            [one] => one
                .get("resource")
                .ok_or_else(|| BadRequest(format!("parameter `{name}` must carry a `resource`"))),
            [] => Err(BadRequest(format!("parameter `{name}` is missing"))),
            more => Err(BadRequest(format!(
                "parameter `{name}` occurs {} times, expected once",
                more.len()
            ))),
        }
    }

    fn named(&self, name: &str) -> Vec<&'a Value> {
        self.entries
            .iter()
            .filter(|entry| entry.get("name").and_then(Value::as_str) == Some(name))
            .collect()
    }
}

/// A `Parameters` resource with these entries; with none, the bare `{"resourceType":
/// "Parameters"}` (FHIR forbids empty arrays).
pub(crate) fn parameters(entries: Vec<Value>) -> Value {
    let mut object = Map::new();
    object.insert("resourceType".into(), Value::from("Parameters"));
    if !entries.is_empty() {
        object.insert("parameter".into(), Value::Array(entries));
    }
    Value::Object(object)
}

/// A multi-part parameter.
pub(crate) fn multi(name: &str, parts: Vec<Value>) -> Value {
    json!({ "name": name, "part": parts })
}

pub(crate) fn identifier_part(name: &str, system: &str, value: &str) -> Value {
    json!({ "name": name, "valueIdentifier": { "system": system, "value": value } })
}

pub(crate) fn base64_part(name: &str, value: &str) -> Value {
    json!({ "name": name, "valueBase64Binary": value })
}

pub(crate) fn instant_part(name: &str, value: &str) -> Value {
    json!({ "name": name, "valueInstant": value })
}

pub(crate) fn id_part(name: &str, value: &str) -> Value {
    json!({ "name": name, "valueId": value })
}

pub(crate) fn element_part(code: &str) -> Value {
    json!({ "name": "element", "valueCoding": { "system": IDAT_ELEMENTS_SYSTEM, "code": code } })
}

pub(crate) fn issue_type_part(code: &str) -> Value {
    json!({ "name": "error-code", "valueCoding": { "system": ISSUE_TYPE_SYSTEM, "code": code } })
}

/// An OperationOutcome with one issue per message. `code` is an issue-type code (`invalid`,
/// `security`, `not-found`, `processing`, ...).
pub(crate) fn outcome(code: &str, diagnostics: &[String]) -> Value {
    let issues: Vec<Value> = diagnostics
        .iter()
        .map(|text| json!({ "severity": "error", "code": code, "diagnostics": text }))
        .collect();
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON")
    }

    #[test]
    fn reads_the_example_request() {
        let value = body(include_str!(
            "../tests/fixtures/requestPsnFromBfWorkflow-request.json"
        ));
        let params = Parameters::from_value(&value).expect("valid");
        assert_eq!(params.string("study", "valueString"), Ok("mii"));
        assert_eq!(params.string("target", "valueString"), Ok("dic_muenster"));
        assert_eq!(
            params.strings("bloomfilter", "valueBase64Binary"),
            Ok(vec!["SWNoIGJpbiBlaW4gQmxvb21maWx0ZXIuIFZlcnNwcm9jaGVuLg=="])
        );
        assert_eq!(params.optional_string("apikey", "valueString"), Ok(None));
    }

    #[test]
    fn names_what_is_wrong() {
        let wrong_type = body(
            r#"{"resourceType":"Parameters","parameter":[{"name":"study","valueIdentifier":{"value":"mii"}}]}"#,
        );
        let params = Parameters::from_value(&wrong_type).expect("envelope ok");
        let err = params
            .string("study", "valueString")
            .expect_err("wrong type");
        assert!(
            err.0.contains("`study`") && err.0.contains("valueString"),
            "{err:?}"
        );

        let twice = body(
            r#"{"resourceType":"Parameters","parameter":[{"name":"study","valueString":"a"},{"name":"study","valueString":"b"}]}"#,
        );
        let params = Parameters::from_value(&twice).expect("envelope ok");
        assert!(params.string("study", "valueString").is_err());
        assert!(
            params
                .string("target", "valueString")
                .expect_err("missing")
                .0
                .contains("missing")
        );

        for bad in [
            r#"[]"#,
            r#"{"resourceType":"Bundle"}"#,
            r#"{"parameter":[]}"#,
            r#"{"resourceType":"Parameters","parameter":{}}"#,
            r#"{"resourceType":"Parameters","parameter":[{"valueString":"x"}]}"#,
        ] {
            assert!(Parameters::from_value(&body(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_parameters_has_no_parameter_array() {
        assert_eq!(parameters(vec![]), json!({ "resourceType": "Parameters" }));
    }
}
