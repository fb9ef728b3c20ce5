//! The input settings: how a site's export is read and how its values map onto the agent's.
//!
//! `[input]` in the configuration file (only there: it holds lists and tables), overridden by
//! `submit`'s `--delimiter` and `--encoding`:
//!
//! ```toml
//! [input]
//! delimiter = ";"                              # default: detected from the header line
//! encoding = "windows-1252"                    # default: UTF-8, else Windows-1252 with a note
//! date_formats = ["DD.MM.YYYY", "YYYYMMDD"]    # besides the agent's own forms; default none
//! [input.gender]                               # the site's codes → the agent's
//! "1" = "male"
//! "2" = "female"
//! ```
//!
//! Mapping happens before validation and is pure: a value the mappings do not cover is passed
//! on unchanged and judged by the validation, whose message then names the settings.

use std::collections::BTreeMap;

use encoding_rs::Encoding;
use serde::Deserialize;

/// How to read an input file and map its values. `Default` reads UTF-8 (or detected
/// Windows-1252), detects the separator, and maps no values: a site's own layouts and codes
/// are named in `[input]`, so that nothing is reinterpreted behind the site's back (a
/// `01/02/1980` means different days in different countries).
#[derive(Clone, Debug, Default)]
pub struct InputSettings {
    pub delimiter: Option<u8>,
    pub encoding: Option<&'static Encoding>,
    pub mappings: ValueMappings,
}

/// Value mappings for common site exports.
#[derive(Clone, Debug, Default)]
pub struct ValueMappings {
    /// Date layouts accepted besides `YYYY-MM-DD`, tried in order.
    pub date_formats: Vec<DateFormat>,
    /// Site code (compared without case and surrounding blanks) → the agent's code.
    pub gender: BTreeMap<String, String>,
}

/// `[input]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    delimiter: Option<String>,
    encoding: Option<String>,
    date_formats: Option<Vec<String>>,
    #[serde(default)]
    gender: BTreeMap<String, String>,
}

impl InputSettings {
    /// The settings of an `[input]` table. The error names the key (the caller adds the
    /// file).
    pub fn from_table(table: &toml::Table) -> Result<InputSettings, String> {
        let raw: RawInput = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[input]: {}", e.message()))?;
        let mut settings = InputSettings::default();
        if let Some(d) = raw.delimiter {
            settings.delimiter = Some(
                super::table::delimiter_for(&d).map_err(|e| format!("[input] delimiter: {e}"))?,
            );
        }
        if let Some(e) = raw.encoding {
            settings.encoding = Some(
                super::text::encoding_for_label(&e)
                    .map_err(|e| format!("[input] encoding: {e}"))?,
            );
        }
        if let Some(formats) = raw.date_formats {
            settings.mappings.date_formats = formats
                .iter()
                .map(|f| DateFormat::parse(f).map_err(|e| format!("[input] date_formats: {e}")))
                .collect::<Result<_, _>>()?;
        }
        for (from, to) in raw.gender {
            if super::validate_value(ttp_proto::IdatElement::Gender, &to).is_err() {
                return Err(format!(
                    "[input.gender] `{from}`: `{to}` is not a gender code the agent accepts"
                ));
            }
            settings
                .mappings
                .gender
                .insert(from.trim().to_lowercase(), to);
        }
        Ok(settings)
    }
}

/// One part of a date layout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Year,
    Month,
    Day,
    Literal(char),
}

/// A date layout written the way people write it: `DD.MM.YYYY`, `D.M.YYYY`, `YYYYMMDD`,
/// `MM/YYYY`, `YYYY`. `DD`/`MM` take exactly two digits, `D`/`M` one or two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateFormat {
    text: String,
    parts: Vec<(Part, usize, usize)>,
}

impl DateFormat {
    pub fn parse(text: &str) -> Result<DateFormat, String> {
        let mut parts = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let run = chars[i..].iter().take_while(|&&x| x == c).count();
            let part = match (c, run) {
                ('Y', 4) => (Part::Year, 4, 4),
                ('M', 2) => (Part::Month, 2, 2),
                ('M', 1) => (Part::Month, 1, 2),
                ('D', 2) => (Part::Day, 2, 2),
                ('D', 1) => (Part::Day, 1, 2),
                ('Y' | 'M' | 'D', _) => {
                    return Err(format!(
                        "`{text}`: use YYYY for the year, MM or M for the month, DD or D for the day"
                    ));
                }
                (c, _) if c.is_ascii_digit() || c.is_alphabetic() => {
                    return Err(format!(
                        "`{text}`: `{c}` is neither YYYY, MM, DD nor a separator"
                    ));
                }
                (c, _) => {
                    i += 1;
                    parts.push((Part::Literal(c), 1, 1));
                    continue;
                }
            };
            parts.push(part);
            i += run;
        }
        let has = |p: Part| parts.iter().filter(|(q, _, _)| *q == p).count();
        if has(Part::Year) != 1 || has(Part::Month) > 1 || has(Part::Day) > 1 {
            return Err(format!(
                "`{text}` needs one YYYY and at most one month and day"
            ));
        }
        if has(Part::Day) == 1 && has(Part::Month) == 0 {
            return Err(format!("`{text}` has a day but no month"));
        }
        Ok(DateFormat {
            text: text.to_owned(),
            parts,
        })
    }

    /// The value in the agent's form (`YYYY-MM-DD`, or `YYYY-MM` / `YYYY` for a layout without
    /// day or month), if it fits this layout and is a real calendar date.
    pub fn canonical(&self, value: &str) -> Option<String> {
        let bytes = value.as_bytes();
        let mut at = 0;
        let (mut year, mut month, mut day) = (None, None, None);
        for (i, (part, min, max)) in self.parts.iter().enumerate() {
            if let Part::Literal(c) = part {
                let mut buf = [0u8; 4];
                let lit = c.encode_utf8(&mut buf).as_bytes();
                if !bytes[at..].starts_with(lit) {
                    return None;
                }
                at += lit.len();
                continue;
            }
            let digits = bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            // Without a separator after it, a field takes its minimum width (YYYYMMDD).
            let next_is_field =
                matches!(self.parts.get(i + 1), Some((p, _, _)) if !matches!(p, Part::Literal(_)));
            let take = if next_is_field {
                *min
            } else {
                digits.min(*max)
            };
            if take < *min || digits < take {
                return None;
            }
            let n: u32 = value.get(at..at + take)?.parse().ok()?;
            at += take;
            match part {
                Part::Year => year = Some(n),
                Part::Month => month = Some(n),
                Part::Day => day = Some(n),
                Part::Literal(_) => {}
            }
        }
        if at != bytes.len() {
            return None;
        }
        let year = i32::try_from(year?).ok()?;
        match (month, day) {
            (Some(m), Some(d)) => chrono::NaiveDate::from_ymd_opt(year, m, d)
                .map(|date| date.format("%Y-%m-%d").to_string()),
            (Some(m), None) => (1..=12).contains(&m).then(|| format!("{year:04}-{m:02}")),
            _ => Some(format!("{year:04}")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl ValueMappings {
    /// The birth date in the agent's form when a configured layout fits, else `value` as it is.
    pub fn birthdate(&self, value: &str) -> String {
        self.date_formats
            .iter()
            .find_map(|f| f.canonical(value))
            .unwrap_or_else(|| value.to_owned())
    }

    /// The agent's gender code for a site code, else `value` as it is.
    pub fn gender(&self, value: &str) -> String {
        self.gender
            .get(&value.trim().to_lowercase())
            .cloned()
            .unwrap_or_else(|| value.to_owned())
    }

    /// What to say after a date no layout fits: the layouts configured, and where to add one.
    pub fn date_hint(&self) -> String {
        if self.date_formats.is_empty() {
            " (a site export's layout such as DD.MM.YYYY is read once `[input] date_formats` \
             names it)"
                .to_owned()
        } else {
            format!(
                " (also accepted here: {}; more in `[input] date_formats`)",
                self.date_formats
                    .iter()
                    .map(DateFormat::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> DateFormat {
        DateFormat::parse(s).unwrap()
    }

    #[test]
    fn german_and_compact_dates_become_iso_dates() {
        assert_eq!(
            f("DD.MM.YYYY").canonical("02.01.1980").as_deref(),
            Some("1980-01-02")
        );
        assert_eq!(
            f("D.M.YYYY").canonical("2.1.1980").as_deref(),
            Some("1980-01-02")
        );
        assert_eq!(
            f("D.M.YYYY").canonical("12.11.1980").as_deref(),
            Some("1980-11-12")
        );
        assert_eq!(
            f("YYYYMMDD").canonical("19800102").as_deref(),
            Some("1980-01-02")
        );
        assert_eq!(
            f("MM/DD/YYYY").canonical("01/02/1980").as_deref(),
            Some("1980-01-02")
        );
        // Not a calendar date, or not this layout.
        assert_eq!(f("DD.MM.YYYY").canonical("30.02.1980"), None);
        assert_eq!(f("DD.MM.YYYY").canonical("2.1.1980"), None);
        assert_eq!(f("DD.MM.YYYY").canonical("1980-01-02"), None);
        assert_eq!(f("DD.MM.YYYY").canonical("02.01.1980x"), None);
    }

    #[test]
    fn layouts_without_day_or_month_give_partial_dates() {
        assert_eq!(
            f("MM.YYYY").canonical("03.1980").as_deref(),
            Some("1980-03")
        );
        assert_eq!(f("YYYY").canonical("1980").as_deref(), Some("1980"));
        assert_eq!(f("MM.YYYY").canonical("13.1980"), None);
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        for bad in [
            "DD.MM.YY",
            "DD.YYYY",
            "MM.MM.YYYY",
            "DDD.MM.YYYY",
            "DD.MM.YYYYx",
        ] {
            assert!(DateFormat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_input_table_is_read_strictly() {
        let table: toml::Table = toml::from_str(
            "delimiter = \";\"\nencoding = \"windows-1252\"\ndate_formats = [\"YYYYMMDD\"]\n\
             [gender]\n\"1\" = \"male\"\n\"2\" = \"female\"\n",
        )
        .unwrap();
        let s = InputSettings::from_table(&table).unwrap();
        assert_eq!(s.delimiter, Some(b';'));
        assert_eq!(s.encoding, Some(encoding_rs::WINDOWS_1252));
        assert_eq!(s.mappings.birthdate("19800102"), "1980-01-02");
        assert_eq!(s.mappings.birthdate("02.01.1980"), "02.01.1980");
        assert_eq!(s.mappings.gender(" 1 "), "male");
        assert_eq!(s.mappings.gender("female"), "female");
        for bad in [
            "delimiter = \";;\"",
            "encoding = \"klingon\"",
            "date_formats = [\"DD.MM.YY\"]",
            "separator = \";\"",
            "[gender]\n\"1\" = \"mann\"",
        ] {
            let table: toml::Table = toml::from_str(bad).unwrap();
            let e = InputSettings::from_table(&table).unwrap_err();
            assert!(e.starts_with("[input"), "{bad}: {e}");
        }
    }
}
