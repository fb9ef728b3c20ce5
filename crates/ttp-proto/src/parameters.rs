//! The generic FHIR `Parameters` codec. TODO(helper): implement.
use serde::{Deserialize, Serialize};

/// A FHIR `Parameters` resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    pub parameter: Vec<Parameter>,
}

/// One `parameter` (or `part`) entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
}
