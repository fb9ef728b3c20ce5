//! Feature formats: how clkhash validates a value and renders it before tokenising.
//!
//! clkhash (with validation on, its default) rejects a record whose value does not fit the
//! feature's `format`, and hashes a canonical rendering: dates as `%Y%m%d`, integers as
//! `str(int(value))`, everything else unchanged. It performs **no** normalisation: `case`,
//! `minLength`, `maxLength` and `pattern` only validate. Normalising (upper-casing, trimming,
//! transliteration) is the job of [`crate::normalise`], before the encoder sees the value.
//!
//! Rejection reasons are phrased to follow "the value of feature N ..." and never quote the
//! value: it is patient data.

use std::borrow::Cow;
use std::collections::HashSet;

use regex::Regex;

use super::pynum::{self, NumError};
use super::strptime::{DateError, DateFormat};

/// The `format` of a feature that is hashed.
#[derive(Debug, Clone)]
pub(crate) enum Format {
    String(StringFormat),
    Integer {
        minimum: Option<i128>,
        maximum: Option<i128>,
    },
    Date {
        format: DateFormat,
        /// The format as written in the schema, for messages.
        source: String,
    },
    Enum(HashSet<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct StringFormat {
    /// `encoding: ascii`: values must be ASCII (the bytes hashed are then the same as UTF-8's).
    pub(crate) ascii: bool,
    pub(crate) rule: StringRule,
}

/// clkhash's two mutually exclusive kinds of string format.
#[derive(Debug, Clone)]
pub(crate) enum StringRule {
    /// `pattern`: the whole value must match (Python's `re.fullmatch`).
    Pattern {
        /// The pattern wrapped as `\A(?:…)\z`, so that a match is a full match.
        regex: Regex,
        source: String,
    },
    /// `case`, `minLength`, `maxLength` (lengths count code points, like Python's `len`).
    Plain {
        case: Case,
        min_length: Option<u64>,
        max_length: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Upper,
    Lower,
    Mixed,
}

impl Format {
    /// Validates a value that is not the missing-value sentinel and returns the string clkhash
    /// tokenises. `Err` holds the reason for [`super::ValueError`].
    pub(crate) fn render<'v>(&self, value: &'v str) -> Result<Cow<'v, str>, String> {
        match self {
            Format::String(f) => f.validate(value).map(|()| Cow::Borrowed(value)),
            Format::Integer { minimum, maximum } => {
                let n = pynum::parse_int(value).map_err(|e| match e {
                    NumError::Invalid if value.is_empty() => empty_reason("integer"),
                    NumError::Invalid => "is not a base-10 integer".to_owned(),
                    NumError::NonAsciiDigit => non_ascii_digit_reason(),
                    NumError::TooLarge => {
                        "is an integer too large for this encoder (beyond ±1.7e38)".to_owned()
                    }
                })?;
                if let Some(min) = minimum.filter(|&min| n < min) {
                    return Err(format!("is below the format's minimum {min}"));
                }
                if let Some(max) = maximum.filter(|&max| n > max) {
                    return Err(format!("is above the format's maximum {max}"));
                }
                Ok(Cow::Owned(n.to_string()))
            }
            Format::Date { format, source } => match format.parse(value) {
                Ok(date) => Ok(Cow::Owned(date.to_clkhash_string())),
                Err(_) if value.is_empty() => Err(empty_reason("date")),
                Err(DateError::NoMatch) if pynum::has_non_ascii_digit(value) => {
                    Err(non_ascii_digit_reason())
                }
                Err(DateError::NoMatch) => Err(format!("does not match date format {source}")),
                Err(DateError::TrailingCharacters) => Err(format!(
                    "does not match date format {source} (characters left over after the date)"
                )),
                Err(DateError::NotACalendarDate) => Err(format!(
                    "matches date format {source} but is not a valid calendar date"
                )),
            },
            Format::Enum(values) => {
                if values.contains(value) {
                    Ok(Cow::Borrowed(value))
                } else if value.is_empty() {
                    Err(empty_reason("enum"))
                } else {
                    Err("is not one of the enum values".to_owned())
                }
            }
        }
    }
}

impl StringFormat {
    fn validate(&self, value: &str) -> Result<(), String> {
        if self.ascii && !value.is_ascii() {
            return Err("contains non-ASCII characters but the format's encoding is ascii".into());
        }
        match &self.rule {
            StringRule::Pattern { regex, source } => {
                if regex.is_match(value) {
                    Ok(())
                } else {
                    Err(format!("does not match the format's pattern {source}"))
                }
            }
            StringRule::Plain {
                case,
                min_length,
                max_length,
            } => {
                let len = value.chars().count() as u64;
                if let Some(min) = min_length.filter(|&min| len < min) {
                    return Err(format!("is shorter than minLength {min}"));
                }
                if let Some(max) = max_length.filter(|&max| len > max) {
                    return Err(format!("is longer than maxLength {max}"));
                }
                match case {
                    Case::Upper if !value.chars().all(maps_to_itself(char::to_uppercase)) => {
                        Err("is not upper case (the format's case is upper)".into())
                    }
                    Case::Lower if !value.chars().all(maps_to_itself(char::to_lowercase)) => {
                        Err("is not lower case (the format's case is lower)".into())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

/// clkhash checks `value.upper() == value`. Every character maps to at least one character, so
/// the whole string is unchanged exactly when each character maps to itself alone; checking
/// per character avoids allocating. (`ß` upper-cases to `SS`, so it is not upper case, in
/// Python as here. Final-sigma handling in `lower()` cannot turn a non-lower string into a
/// lower one, so it does not change the verdict either.)
fn maps_to_itself<I: Iterator<Item = char>>(map: fn(char) -> I) -> impl Fn(char) -> bool {
    move |c| {
        let mut mapped = map(c);
        mapped.next() == Some(c) && mapped.next().is_none()
    }
}

fn empty_reason(kind: &str) -> String {
    format!(
        "is empty, which is not a valid {kind}; declare \"missingValue\": {{\"sentinel\": \"\"}} \
         in the feature's hashing to allow empty values"
    )
}

fn non_ascii_digit_reason() -> String {
    "contains non-ASCII digits, which clkhash reads but this encoder does not; \
     convert them to ASCII digits"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(case: Case, min: Option<u64>, max: Option<u64>) -> Format {
        Format::String(StringFormat {
            ascii: false,
            rule: StringRule::Plain {
                case,
                min_length: min,
                max_length: max,
            },
        })
    }

    #[test]
    fn strings_are_validated_not_changed() {
        let f = plain(Case::Upper, Some(2), Some(4));
        assert_eq!(f.render("MÜLL").as_deref(), Ok("MÜLL"));
        // Length counts code points: "ÄÖÜ" is 3 characters but 6 UTF-8 bytes.
        assert_eq!(f.render("ÄÖÜ").as_deref(), Ok("ÄÖÜ"));
        assert!(
            f.render("A")
                .unwrap_err()
                .contains("shorter than minLength 2")
        );
        assert!(
            f.render("ABCDE")
                .unwrap_err()
                .contains("longer than maxLength 4")
        );
        assert!(f.render("Anna").unwrap_err().contains("not upper case"));
        // Python: "ß".upper() == "SS" != "ß".
        assert!(f.render("GROß").unwrap_err().contains("not upper case"));
        // Characters without case are both upper and lower case.
        assert!(f.render("李-1").is_ok());
        let lower = plain(Case::Lower, None, None);
        assert!(lower.render("straße").is_ok());
        assert!(
            lower
                .render("Straße")
                .unwrap_err()
                .contains("not lower case")
        );
        assert!(plain(Case::Mixed, None, None).render("").is_ok());
    }

    #[test]
    fn ascii_encoding_rejects_other_characters() {
        let f = Format::String(StringFormat {
            ascii: true,
            rule: StringRule::Plain {
                case: Case::Mixed,
                min_length: None,
                max_length: None,
            },
        });
        assert!(f.render("Muller").is_ok());
        assert!(f.render("Müller").unwrap_err().contains("non-ASCII"));
    }

    #[test]
    fn pattern_must_match_the_whole_value() {
        let f = Format::String(StringFormat {
            ascii: false,
            rule: StringRule::Pattern {
                regex: Regex::new(r"\A(?:[0-9]{5}|[A-Z])\z").expect("test regex"),
                source: "[0-9]{5}|[A-Z]".into(),
            },
        });
        assert!(f.render("12345").is_ok());
        assert!(f.render("Q").is_ok());
        let err = f.render("123456").unwrap_err();
        assert_eq!(err, "does not match the format's pattern [0-9]{5}|[A-Z]");
    }

    #[test]
    fn integers_are_canonicalised_like_python_str_int() {
        let f = Format::Integer {
            minimum: Some(-5),
            maximum: Some(1000),
        };
        assert_eq!(f.render(" +0_42 ").as_deref(), Ok("42"));
        assert_eq!(f.render("-0").as_deref(), Ok("0"));
        assert!(
            f.render("1001")
                .unwrap_err()
                .contains("above the format's maximum 1000")
        );
        assert!(
            f.render("-6")
                .unwrap_err()
                .contains("below the format's minimum -5")
        );
        assert!(
            f.render("4.2")
                .unwrap_err()
                .contains("not a base-10 integer")
        );
        assert!(f.render("").unwrap_err().contains("missingValue"));
        assert!(f.render("٤٢").unwrap_err().contains("non-ASCII digits"));
    }

    #[test]
    fn dates_are_rendered_as_yyyymmdd() {
        let f = Format::Date {
            format: DateFormat::compile("%d.%m.%Y").expect("test format"),
            source: "%d.%m.%Y".into(),
        };
        assert_eq!(f.render("4.3.1985").as_deref(), Ok("19850304"));
        assert_eq!(
            f.render("1985-03-04").unwrap_err(),
            "does not match date format %d.%m.%Y"
        );
        assert!(
            f.render("31.02.1985")
                .unwrap_err()
                .contains("not a valid calendar date")
        );
        assert!(f.render("04.03.1985x").unwrap_err().contains("left over"));
        assert!(f.render("").unwrap_err().contains("missingValue"));
    }

    #[test]
    fn enums_compare_exactly() {
        let f = Format::Enum(["F", "M"].into_iter().map(String::from).collect());
        assert_eq!(f.render("F").as_deref(), Ok("F"));
        assert_eq!(f.render("f").unwrap_err(), "is not one of the enum values");
        assert!(f.render("").unwrap_err().contains("missingValue"));
    }

    #[test]
    fn reasons_never_contain_the_value() {
        let f = Format::Date {
            format: DateFormat::compile("%Y-%m-%d").expect("test format"),
            source: "%Y-%m-%d".into(),
        };
        for v in ["1985-02-31", "SECRET-VALUE", "1985-03-14-99"] {
            let reason = f.render(v).unwrap_err();
            assert!(!reason.contains(v) && !reason.contains("31"), "{reason}");
        }
    }
}
