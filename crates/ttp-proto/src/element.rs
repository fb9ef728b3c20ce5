//! IDAT element codes (CodeSystem `https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements`).

use serde::{Deserialize, Serialize};

/// The system URL of the element codes in `send_idat` tasks.
pub const IDAT_ELEMENTS_SYSTEM: &str =
    "https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements";

/// One identifying data element the fTTP may ask for. Serialised as its code (`"address-city"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdatElement {
    Given,
    Family,
    Prefix,
    Suffix,
    Birthdate,
    Gender,
    AddressLine,
    AddressCity,
    AddressPostalcode,
    Birthplace,
    Maidenname,
    Degree,
    Language,
    Nationality,
    Maritalstatus,
}

impl IdatElement {
    pub const ALL: [IdatElement; 15] = [
        IdatElement::Given,
        IdatElement::Family,
        IdatElement::Prefix,
        IdatElement::Suffix,
        IdatElement::Birthdate,
        IdatElement::Gender,
        IdatElement::AddressLine,
        IdatElement::AddressCity,
        IdatElement::AddressPostalcode,
        IdatElement::Birthplace,
        IdatElement::Maidenname,
        IdatElement::Degree,
        IdatElement::Language,
        IdatElement::Nationality,
        IdatElement::Maritalstatus,
    ];

    /// The code as it appears on the wire and in CSV headers.
    pub fn code(self) -> &'static str {
        match self {
            IdatElement::Given => "given",
            IdatElement::Family => "family",
            IdatElement::Prefix => "prefix",
            IdatElement::Suffix => "suffix",
            IdatElement::Birthdate => "birthdate",
            IdatElement::Gender => "gender",
            IdatElement::AddressLine => "address-line",
            IdatElement::AddressCity => "address-city",
            IdatElement::AddressPostalcode => "address-postalcode",
            IdatElement::Birthplace => "birthplace",
            IdatElement::Maidenname => "maidenname",
            IdatElement::Degree => "degree",
            IdatElement::Language => "language",
            IdatElement::Nationality => "nationality",
            IdatElement::Maritalstatus => "maritalstatus",
        }
    }

    pub fn from_code(code: &str) -> Option<IdatElement> {
        IdatElement::ALL.into_iter().find(|e| e.code() == code)
    }
}

impl std::fmt::Display for IdatElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for e in IdatElement::ALL {
            assert_eq!(IdatElement::from_code(e.code()), Some(e));
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.code())
            );
        }
        assert_eq!(IdatElement::from_code("shoe-size"), None);
    }
}
