//! The domain value types of IDAT: what a site may hold for each element, parsed once into
//! the form the dispatcher's Idat profile accepts.
//!
//! [`parse_value`] is the one canonical parser. `submit` uses it to refuse a bad value with
//! its line and column before anything is stored, and [`crate::patient`] uses it again when
//! a `send_idat` task is answered, so a value that passed `submit` can never fail in the
//! middle of a task. The canonical text ([`IdatValue::canonical`]) parses back to the same
//! value, which is what lets other layers (CSV value mappings, `resolve add-element`) store
//! canonical text.
//!
//! Sources of the code lists (Idat profile, IG 2025.2.0, `input/fsh/profile-Idat.fsh`):
//! * gender: FHIR `administrative-gender` (`male`, `female`, `other`, `unknown`). German
//!   administrative values that FHIR can only call `other` keep their meaning in the German
//!   base profile's extension `http://fhir.de/StructureDefinition/gender-amtlich-de`, whose
//!   `valueCoding` comes from the CodeSystem `http://fhir.de/CodeSystem/gender-amtlich-de`
//!   (HL7 Deutschland, de.basisprofil / terminologie-basis-de: `M` männlich, `W` weiblich,
//!   `D` divers, `X` unbestimmt; the ValueSet `gender-other-de` holds `D` and `X`, the codes
//!   used with `gender = other`, and the MII person module requires the extension then).
//! * birthDate: a FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real calendar date.
//! * nationality: ISO 3166-1 alpha-2 (required binding).
//! * language: the R4 value set `http://hl7.org/fhir/ValueSet/languages` (required binding).
//! * maritalStatus: the R4 value set `marital-status` (v3-MaritalStatus codes and `UNK`).

use std::fmt;

use crate::IdatElement;

/// The German base profile's extension on `Patient.gender` (de.basisprofil).
pub const GENDER_AMTLICH_URL: &str = "http://fhir.de/StructureDefinition/gender-amtlich-de";
/// The CodeSystem of that extension's `valueCoding`.
pub const GENDER_AMTLICH_SYSTEM: &str = "http://fhir.de/CodeSystem/gender-amtlich-de";

/// Why a value cannot be held for an element. Never carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("the value is empty")]
    Empty,
    #[error("the value contains control characters")]
    ControlCharacters,
    #[error("not a date of the form YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date)")]
    NotADate,
    #[error(
        "not a gender: use male, female, other, unknown, or the German m, w, d, x \
         (männlich, weiblich, divers, unbestimmt, unbekannt)"
    )]
    NotAGender,
    #[error("not a language of the FHIR R4 `languages` value set (such as de, de-DE, en, en-GB)")]
    NotALanguage,
    #[error("not an ISO 3166-1 alpha-2 country code (such as DE, AT, TR)")]
    NotACountryCode,
    #[error("not a marital status code of the FHIR R4 value set (A D I L M P S T U W, or UNK)")]
    NotAMaritalStatus,
}

/// `Patient.gender`, with the German administrative distinction FHIR folds into `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gender {
    Male,
    Female,
    /// `other`; with `Some` the German code carried in the `gender-amtlich-de` extension.
    Other(Option<GermanOther>),
    Unknown,
}

/// The German administrative genders that FHIR can only express as `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GermanOther {
    /// `D`, divers.
    Divers,
    /// `X`, unbestimmt (no gender entered, PStG § 22 (3)).
    Unbestimmt,
}

impl GermanOther {
    /// Code and display in `http://fhir.de/CodeSystem/gender-amtlich-de`.
    pub fn coding(self) -> (&'static str, &'static str) {
        match self {
            GermanOther::Divers => ("D", "divers"),
            GermanOther::Unbestimmt => ("X", "unbestimmt"),
        }
    }
}

impl Gender {
    /// Accepts the FHIR codes and the German administrative values, case-insensitively.
    pub fn parse(text: &str) -> Result<Gender, InvalidValue> {
        let lower = text.trim().to_lowercase();
        Ok(match lower.as_str() {
            "male" | "m" | "männlich" | "maennlich" => Gender::Male,
            "female" | "f" | "w" | "weiblich" => Gender::Female,
            "other" => Gender::Other(None),
            "d" | "divers" | "diverse" => Gender::Other(Some(GermanOther::Divers)),
            "x" | "unbestimmt" => Gender::Other(Some(GermanOther::Unbestimmt)),
            "unknown" | "u" | "unbekannt" => Gender::Unknown,
            _ => return Err(InvalidValue::NotAGender),
        })
    }

    /// The FHIR `administrative-gender` code.
    pub fn fhir_code(self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
            Gender::Other(_) => "other",
            Gender::Unknown => "unknown",
        }
    }

    /// The German code that travels in the extension, where FHIR says only `other`.
    pub fn german_other(self) -> Option<GermanOther> {
        match self {
            Gender::Other(german) => german,
            _ => None,
        }
    }

    fn canonical(self) -> &'static str {
        match self {
            Gender::Other(Some(GermanOther::Divers)) => "divers",
            Gender::Other(Some(GermanOther::Unbestimmt)) => "unbestimmt",
            other => other.fhir_code(),
        }
    }
}

/// A FHIR `date` of the precision the site knows: a year, a month, or a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartialDate {
    Year(u16),
    YearMonth(u16, u8),
    Date(chrono::NaiveDate),
}

impl PartialDate {
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` exactly (digits with leading zeros, a real date,
    /// year 0001 to 9999 as FHIR's `date` allows).
    pub fn parse(text: &str) -> Result<PartialDate, InvalidValue> {
        let text = text.trim();
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let number = |r: std::ops::Range<usize>| -> u32 {
            b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(*d - b'0'))
        };
        let shape_ok = match b.len() {
            4 => digits(0..4),
            7 => digits(0..4) && b[4] == b'-' && digits(5..7),
            10 => digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10),
            _ => false,
        };
        if !shape_ok {
            return Err(InvalidValue::NotADate);
        }
        let year = number(0..4);
        if year == 0 {
            return Err(InvalidValue::NotADate);
        }
        let year16 = u16::try_from(year).map_err(|_| InvalidValue::NotADate)?;
        match b.len() {
            4 => Ok(PartialDate::Year(year16)),
            7 => {
                let month = number(5..7);
                if (1..=12).contains(&month) {
                    Ok(PartialDate::YearMonth(year16, month as u8))
                } else {
                    Err(InvalidValue::NotADate)
                }
            }
            _ => chrono::NaiveDate::from_ymd_opt(year as i32, number(5..7), number(8..10))
                .map(PartialDate::Date)
                .ok_or(InvalidValue::NotADate),
        }
    }
}

impl fmt::Display for PartialDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartialDate::Year(y) => write!(f, "{y:04}"),
            PartialDate::YearMonth(y, m) => write!(f, "{y:04}-{m:02}"),
            PartialDate::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        }
    }
}

/// ISO 3166-1 alpha-2, the officially assigned codes (user-assigned codes such as `XK` are
/// not in the standard and so not in the required binding).
const ISO3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// A nationality: an ISO 3166-1 alpha-2 code, upper case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountryCode(&'static str);

impl CountryCode {
    pub fn parse(text: &str) -> Result<CountryCode, InvalidValue> {
        let upper = text.trim().to_ascii_uppercase();
        ISO3166_ALPHA2
            .iter()
            .find(|c| **c == upper)
            .map(|c| CountryCode(c))
            .ok_or(InvalidValue::NotACountryCode)
    }

    pub fn code(self) -> &'static str {
        self.0
    }
}

/// The R4 value set `languages` (codes and displays), bound required by the Idat profile.
const LANGUAGES: [(&str, &str); 56] = [
    ("ar", "Arabic"),
    ("bn", "Bengali"),
    ("cs", "Czech"),
    ("da", "Danish"),
    ("de", "German"),
    ("de-AT", "German (Austria)"),
    ("de-CH", "German (Switzerland)"),
    ("de-DE", "German (Germany)"),
    ("el", "Greek"),
    ("en", "English"),
    ("en-AU", "English (Australia)"),
    ("en-CA", "English (Canada)"),
    ("en-GB", "English (Great Britain)"),
    ("en-IN", "English (India)"),
    ("en-NZ", "English (New Zeland)"),
    ("en-SG", "English (Singapore)"),
    ("en-US", "English (United States)"),
    ("es", "Spanish"),
    ("es-AR", "Spanish (Argentina)"),
    ("es-ES", "Spanish (Spain)"),
    ("es-UY", "Spanish (Uruguay)"),
    ("fi", "Finnish"),
    ("fr", "French"),
    ("fr-BE", "French (Belgium)"),
    ("fr-CH", "French (Switzerland)"),
    ("fr-FR", "French (France)"),
    ("fy", "Frysian"),
    ("fy-NL", "Frysian (Netherlands)"),
    ("hi", "Hindi"),
    ("hr", "Croatian"),
    ("it", "Italian"),
    ("it-CH", "Italian (Switzerland)"),
    ("it-IT", "Italian (Italy)"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("nl", "Dutch"),
    ("nl-BE", "Dutch (Belgium)"),
    ("nl-NL", "Dutch (Netherlands)"),
    ("no", "Norwegian"),
    ("no-NO", "Norwegian (Norway)"),
    ("pa", "Punjabi"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("pt-BR", "Portuguese (Brazil)"),
    ("ru", "Russian"),
    ("ru-RU", "Russian (Russia)"),
    ("sr", "Serbian"),
    ("sr-RS", "Serbian (Serbia)"),
    ("sv", "Swedish"),
    ("sv-SE", "Swedish (Sweden)"),
    ("te", "Telegu"),
    ("zh", "Chinese"),
    ("zh-CN", "Chinese (China)"),
    ("zh-HK", "Chinese (Hong Kong)"),
    ("zh-SG", "Chinese (Singapore)"),
    ("zh-TW", "Chinese (Taiwan)"),
];

/// A language of the R4 `languages` value set, in its canonical case (`de-DE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Language(&'static str, &'static str);

impl Language {
    /// BCP 47 tags compare case-insensitively, so `DE-de` is `de-DE`.
    pub fn parse(text: &str) -> Result<Language, InvalidValue> {
        let text = text.trim();
        LANGUAGES
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(text))
            .map(|(code, display)| Language(code, display))
            .ok_or(InvalidValue::NotALanguage)
    }

    pub fn code(self) -> &'static str {
        self.0
    }

    pub fn display(self) -> &'static str {
        self.1
    }
}

/// The R4 value set `marital-status`: v3-MaritalStatus codes, and `UNK` from v3-NullFlavor.
const MARITAL_STATUS: [(&str, &str); 11] = [
    ("A", "Annulled"),
    ("D", "Divorced"),
    ("I", "Interlocutory"),
    ("L", "Legally Separated"),
    ("M", "Married"),
    ("P", "Polygamous"),
    ("S", "Never Married"),
    ("T", "Domestic partner"),
    ("U", "unmarried"),
    ("W", "Widowed"),
    ("UNK", "unknown"),
];

/// A marital status code with its display (the profile requires `maritalStatus.text`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaritalStatus(&'static str, &'static str);

impl MaritalStatus {
    pub fn parse(text: &str) -> Result<MaritalStatus, InvalidValue> {
        let upper = text.trim().to_ascii_uppercase();
        MARITAL_STATUS
            .iter()
            .find(|(code, _)| *code == upper)
            .map(|(code, display)| MaritalStatus(code, display))
            .ok_or(InvalidValue::NotAMaritalStatus)
    }

    pub fn code(self) -> &'static str {
        self.0
    }

    pub fn display(self) -> &'static str {
        self.1
    }

    /// `UNK` is a null flavour, not a marital status.
    pub fn is_null_flavor(self) -> bool {
        self.0 == "UNK"
    }
}

/// One element's value, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdatValue {
    /// A FHIR `string` (names, address parts, birthplace), trimmed.
    Text(String),
    BirthDate(PartialDate),
    Gender(Gender),
    Language(Language),
    Nationality(CountryCode),
    MaritalStatus(MaritalStatus),
}

impl IdatValue {
    /// The text that [`parse_value`] reads back as this value: what a site's store should
    /// hold.
    pub fn canonical(&self) -> String {
        match self {
            IdatValue::Text(text) => text.clone(),
            IdatValue::BirthDate(date) => date.to_string(),
            IdatValue::Gender(gender) => gender.canonical().to_owned(),
            IdatValue::Language(language) => language.code().to_owned(),
            IdatValue::Nationality(country) => country.code().to_owned(),
            IdatValue::MaritalStatus(status) => status.code().to_owned(),
        }
    }
}

/// The one parser of IDAT values: `value` as `element` holds it, or why it cannot.
pub fn parse_value(element: IdatElement, value: &str) -> Result<IdatValue, InvalidValue> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidValue::Empty);
    }
    // FHIR `string` allows tab, CR and LF among the control characters; a value from a CSV
    // cell or a command line has no business holding any of them.
    if value.chars().any(char::is_control) {
        return Err(InvalidValue::ControlCharacters);
    }
    Ok(match element {
        IdatElement::Birthdate => IdatValue::BirthDate(PartialDate::parse(value)?),
        IdatElement::Gender => IdatValue::Gender(Gender::parse(value)?),
        IdatElement::Language => IdatValue::Language(Language::parse(value)?),
        IdatElement::Nationality => IdatValue::Nationality(CountryCode::parse(value)?),
        IdatElement::Maritalstatus => IdatValue::MaritalStatus(MaritalStatus::parse(value)?),
        IdatElement::Given
        | IdatElement::Family
        | IdatElement::Prefix
        | IdatElement::Suffix
        | IdatElement::AddressLine
        | IdatElement::AddressCity
        | IdatElement::AddressPostalcode
        | IdatElement::Birthplace
        | IdatElement::Maidenname
        | IdatElement::Degree => IdatValue::Text(value.to_owned()),
    })
}

/// The canonical text of `value` for `element` ([`parse_value`], then
/// [`IdatValue::canonical`]).
pub fn canonical_value(element: IdatElement, value: &str) -> Result<String, InvalidValue> {
    parse_value(element, value).map(|v| v.canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdatElement as E;

    #[test]
    fn german_genders_map_to_fhir_with_the_amtlich_code_where_fhir_says_other() {
        for (input, fhir, german) in [
            ("m", "male", None),
            ("M", "male", None),
            ("männlich", "male", None),
            ("w", "female", None),
            ("Weiblich", "female", None),
            ("female", "female", None),
            ("d", "other", Some("D")),
            ("divers", "other", Some("D")),
            ("x", "other", Some("X")),
            ("unbestimmt", "other", Some("X")),
            ("other", "other", None),
            ("unbekannt", "unknown", None),
            ("unknown", "unknown", None),
        ] {
            let gender = Gender::parse(input).unwrap();
            assert_eq!(gender.fhir_code(), fhir, "{input}");
            assert_eq!(
                gender.german_other().map(|g| g.coding().0),
                german,
                "{input}"
            );
        }
        for bad in ["", "mw", "mann", "1", "intersex"] {
            assert_eq!(Gender::parse(bad), Err(InvalidValue::NotAGender), "{bad}");
        }
    }

    #[test]
    fn partial_birth_dates_keep_their_precision() {
        for (input, shown) in [
            ("1970", "1970"),
            ("1970-05", "1970-05"),
            ("1970-05-31", "1970-05-31"),
            ("2024-02-29", "2024-02-29"),
            ("0001", "0001"),
        ] {
            assert_eq!(PartialDate::parse(input).unwrap().to_string(), shown);
        }
        for bad in [
            "0000",
            "1970-13",
            "1970-00",
            "1970-5",
            "1970-02-30",
            "2023-02-29",
            "70",
            "31.05.1970",
            "1970-05-31T00:00:00",
            "１９７０",
        ] {
            assert_eq!(
                PartialDate::parse(bad),
                Err(InvalidValue::NotADate),
                "{bad}"
            );
        }
    }

    #[test]
    fn nationality_is_alpha_2_only_and_language_from_the_r4_value_set() {
        assert_eq!(CountryCode::parse("de").unwrap().code(), "DE");
        assert_eq!(CountryCode::parse("TR").unwrap().code(), "TR");
        for bad in ["DEU", "276", "Germany", "XK", "D", "ZZ"] {
            assert_eq!(
                CountryCode::parse(bad),
                Err(InvalidValue::NotACountryCode),
                "{bad}"
            );
        }
        assert_eq!(Language::parse("DE-de").unwrap().code(), "de-DE");
        assert_eq!(Language::parse("en").unwrap().display(), "English");
        for bad in ["de_DE", "tr", "German", "de-AT-x-foo", "gsw"] {
            assert_eq!(
                Language::parse(bad),
                Err(InvalidValue::NotALanguage),
                "{bad}"
            );
        }
        // The table is the R4 value set: sorted, without duplicates.
        assert!(LANGUAGES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ISO3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn marital_status_carries_a_display_for_the_required_text() {
        let married = MaritalStatus::parse("m").unwrap();
        assert_eq!((married.code(), married.display()), ("M", "Married"));
        assert!(MaritalStatus::parse("unk").unwrap().is_null_flavor());
        for bad in ["C", "married", "verheiratet", ""] {
            assert_eq!(
                MaritalStatus::parse(bad),
                Err(InvalidValue::NotAMaritalStatus),
                "{bad}"
            );
        }
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_value() {
        for (element, input) in [
            (E::Gender, "d"),
            (E::Gender, "X"),
            (E::Gender, "W"),
            (E::Birthdate, "1970-05"),
            (E::Language, "EN-gb"),
            (E::Nationality, "at"),
            (E::Maritalstatus, "w"),
            (E::Given, "  Anna Maria "),
        ] {
            let value = parse_value(element, input).unwrap();
            let again = parse_value(element, &value.canonical()).unwrap();
            assert_eq!(value, again, "{element} {input}");
        }
        assert_eq!(canonical_value(E::Gender, "d").unwrap(), "divers");
        assert_eq!(canonical_value(E::Given, " Anna ").unwrap(), "Anna");
    }

    #[test]
    fn empty_and_control_characters_are_refused_for_every_element() {
        for element in IdatElement::ALL {
            assert_eq!(parse_value(element, "  "), Err(InvalidValue::Empty));
            assert_eq!(
                parse_value(element, "a\u{7}b"),
                Err(InvalidValue::ControlCharacters)
            );
            assert_eq!(
                parse_value(element, "a\nb"),
                Err(InvalidValue::ControlCharacters)
            );
        }
    }
}
