//! Normalisation of IDAT values before encoding: configuration, not code.
//!
//! Two sites only match a patient if they turn `"Dr. Jörg  Müller-Lüdenscheidt"` into the *same*
//! string before hashing, so the pipeline is agreed per study (with the fTTP) and has to live in
//! configuration, with a version number, next to the encoder parameters. The encoders in this
//! crate never normalise on their own.
//!
//! A pipeline is a list of [`Step`]s applied left to right. In JSON or TOML a step without
//! parameters is a string and a step with parameters is a one-key table:
//!
//! ```json
//! ["nfc", "strip_titles", "transliterate_de", "uppercase", {"keep_chars": "A-Z "}, "trim",
//!  {"date": {"from": "%d.%m.%Y", "to": "%Y%m%d"}}, {"map": {"male": "m", "female": "f"}}]
//! ```
//!
//! | step | effect |
//! |------|--------|
//! | `nfc`, `nfkc` | Unicode normalisation forms C / KC |
//! | `trim` | strip leading and trailing Unicode whitespace |
//! | `collapse_whitespace` | every run of Unicode whitespace becomes one space |
//! | `uppercase`, `lowercase` | full Unicode case mapping, locale-independent (`ß` → `SS`) |
//! | `transliterate_de` | `ä`→`ae`, `ß`→`ss`, `ø`→`oe`, ... then strips remaining accents (see below) |
//! | `strip_titles` / `{"strip_titles": [...]}` | removes academic titles ([`DEFAULT_TITLES`] or the given list) |
//! | `{"keep_chars": SET}` / `{"remove_chars": SET}` | keeps / removes the characters of a [set](#character-sets) |
//! | `{"replace": [[FROM, TO], ...]}` | literal substring replacements, in order |
//! | `{"date": {"from": FMT, "to": FMT}}` | re-formats a date (chrono `strftime` syntax); an invalid date is an error |
//! | `{"map": {FROM: TO, ...}}` | replaces the whole value; a value without an entry is an error |
//!
//! # Character sets
//!
//! The contents of a regular-expression bracket, without the brackets: single characters and
//! ranges `A-Z`; a space is a member like any other character; `\s` is Java's `\s`
//! (space, `\t`, `\n`, `\x0B`, `\f`, `\r`); `\d` is `0-9`; `\\` and `\-` are the literal
//! characters; a `-` at the start or end is literal. `"A-Z 0-9"` keeps capital letters, spaces and
//! digits.
//!
//! # `transliterate_de`
//!
//! German and ICAO 9303 (machine-readable passport) rules first, on the NFC form: `ä ö ü` →
//! `ae oe ue`, `ß` → `ss`, `æ œ ø å` → `ae oe oe aa`, `þ` → `th`, `ð đ ł ı ĳ ŋ` → `d d l i ij n`;
//! then canonical decomposition, removal of all combining marks (`é` → `e`, `č` → `c`) and
//! recomposition. Case is preserved *per character*: a lower-case letter yields lower-case
//! letters, an upper-case one upper-case letters (`Ä` → `AE`, also in `Äpfel` → `AEpfel`). So the
//! step commutes with `uppercase` and with `lowercase`: placing it before or after case folding
//! gives the same result.
//!
//! # `strip_titles`
//!
//! Works on whitespace-separated words, case-insensitively: a word that consists of titles is
//! dropped (`Dr.`, `Dr.med.`, `Prof.Dr.`), and titles ending in `.` are also removed from the
//! front of a word (`Dr.Müller` → `Müller`). Titles never match inside a word, so `"Dr"` in
//! `"Andrea"` is safe. The remaining words are joined with single spaces.
//!
//! # Errors
//!
//! Configuration problems are reported by [`Normaliser::new`] ([`StepConfigError`]); problems
//! with a value by [`Normaliser::apply`] ([`NormaliseError`]), which never contains the value:
//! IDAT must not reach logs.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use chrono::format::{Item, StrftimeItems};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Academic titles `strip_titles` removes unless given its own list. Only forms ending in `.`
/// (so that no real name is mistaken for one), longest alternatives included explicitly
/// (`Dipl.-Ing.` would otherwise leave `-Ing.` behind).
pub const DEFAULT_TITLES: &[&str] = &[
    "Dr.",
    "Dres.",
    "Prof.",
    "Priv.-Doz.",
    "Doz.",
    "Dipl.",
    "Dipl.-Ing.",
    "Dipl.-Kfm.",
    "Dipl.-Kff.",
    "Dipl.-Psych.",
    "Dipl.-Päd.",
    "Dipl.-Inf.",
    "Dipl.-Phys.",
    "Dipl.-Chem.",
    "Dr.-Ing.",
    "med.",
    "dent.",
    "vet.",
    "rer.",
    "nat.",
    "pol.",
    "oec.",
    "soc.",
    "phil.",
    "jur.",
    "theol.",
    "habil.",
    "h.c.",
    "mult.",
    "Mag.",
    "Ing.",
];

/// One normalisation step. See the [module documentation](self) for the configuration syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nfc,
    Nfkc,
    Trim,
    CollapseWhitespace,
    Uppercase,
    Lowercase,
    TransliterateDe,
    /// Titles to remove; `"strip_titles"` alone means [`DEFAULT_TITLES`].
    StripTitles(Vec<String>),
    /// A [character set](self#character-sets) to keep.
    KeepChars(String),
    /// A [character set](self#character-sets) to remove.
    RemoveChars(String),
    /// Literal `(from, to)` replacements, applied one after another.
    Replace(Vec<(String, String)>),
    /// Re-format a date; both are chrono `strftime` formats.
    Date {
        from: String,
        to: String,
    },
    /// Whole-value mapping.
    Map(BTreeMap<String, String>),
}

impl Step {
    /// `strip_titles` with [`DEFAULT_TITLES`].
    pub fn strip_default_titles() -> Step {
        Step::StripTitles(DEFAULT_TITLES.iter().map(|t| t.to_string()).collect())
    }

    /// The step's name in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Nfc => "nfc",
            Step::Nfkc => "nfkc",
            Step::Trim => "trim",
            Step::CollapseWhitespace => "collapse_whitespace",
            Step::Uppercase => "uppercase",
            Step::Lowercase => "lowercase",
            Step::TransliterateDe => "transliterate_de",
            Step::StripTitles(_) => "strip_titles",
            Step::KeepChars(_) => "keep_chars",
            Step::RemoveChars(_) => "remove_chars",
            Step::Replace(_) => "replace",
            Step::Date { .. } => "date",
            Step::Map(_) => "map",
        }
    }
}

const STEP_NAMES: &[&str] = &[
    "nfc",
    "nfkc",
    "trim",
    "collapse_whitespace",
    "uppercase",
    "lowercase",
    "transliterate_de",
    "strip_titles",
    "keep_chars",
    "remove_chars",
    "replace",
    "date",
    "map",
];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DateSpec {
    from: String,
    to: String,
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn one<S: Serializer, V: Serialize + ?Sized>(
            serializer: S,
            key: &str,
            value: &V,
        ) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry(key, value)?;
            map.end()
        }
        match self {
            // Always the explicit list, so a change of the built-in default shows up in
            // anything derived from the serialised configuration (profile fingerprints).
            Step::StripTitles(titles) => one(serializer, self.name(), titles),
            Step::KeepChars(set) | Step::RemoveChars(set) => one(serializer, self.name(), set),
            Step::Replace(pairs) => one(serializer, self.name(), pairs),
            Step::Date { from, to } => one(
                serializer,
                self.name(),
                &DateSpec {
                    from: from.clone(),
                    to: to.clone(),
                },
            ),
            Step::Map(map) => one(serializer, self.name(), map),
            _ => serializer.serialize_str(self.name()),
        }
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Step, D::Error> {
        deserializer.deserialize_any(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = Step;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a step name such as \"trim\" or a one-key table such as {\"keep_chars\": \"A-Z\"}",
        )
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Step, E> {
        Ok(match name {
            "nfc" => Step::Nfc,
            "nfkc" => Step::Nfkc,
            "trim" => Step::Trim,
            "collapse_whitespace" => Step::CollapseWhitespace,
            "uppercase" => Step::Uppercase,
            "lowercase" => Step::Lowercase,
            "transliterate_de" => Step::TransliterateDe,
            "strip_titles" => Step::strip_default_titles(),
            "keep_chars" | "remove_chars" | "replace" | "date" | "map" => {
                return Err(E::custom(format_args!(
                    "step `{name}` needs parameters: write it as a table, e.g. {{\"{name}\": ...}}"
                )));
            }
            other => return Err(E::unknown_variant(other, STEP_NAMES)),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
        let Some(name) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "a step table must have exactly one key, the step name",
            ));
        };
        let step = match name.as_str() {
            "strip_titles" => Step::StripTitles(map.next_value()?),
            "keep_chars" => Step::KeepChars(map.next_value()?),
            "remove_chars" => Step::RemoveChars(map.next_value()?),
            "replace" => Step::Replace(map.next_value()?),
            "date" => {
                let DateSpec { from, to } = map.next_value()?;
                Step::Date { from, to }
            }
            "map" => Step::Map(map.next_value()?),
            "nfc"
            | "nfkc"
            | "trim"
            | "collapse_whitespace"
            | "uppercase"
            | "lowercase"
            | "transliterate_de" => {
                return Err(de::Error::custom(format_args!(
                    "step `{name}` takes no parameters: write it as the string \"{name}\""
                )));
            }
            other => return Err(de::Error::unknown_variant(other, STEP_NAMES)),
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format_args!(
                "a step table must have exactly one key; `{name}` has company (split it into \
                 separate steps)"
            )));
        }
        Ok(step)
    }
}

/// A versioned set of per-field pipelines, as it appears in configuration:
/// `{"version": 1, "fields": {"firstName": [...], "birthDate": [...]}}`.
///
/// `version` is the study's own label for the agreed rules; bump it whenever a pipeline changes,
/// because filters encoded under different rules do not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalisationConfig {
    pub version: u32,
    #[serde(default)]
    pub fields: BTreeMap<String, Vec<Step>>,
}

impl NormalisationConfig {
    /// Compiles every field's pipeline.
    pub fn build(&self) -> Result<BTreeMap<String, Normaliser>, FieldConfigError> {
        self.fields
            .iter()
            .map(|(field, steps)| {
                Normaliser::new(steps)
                    .map(|n| (field.clone(), n))
                    .map_err(|error| FieldConfigError {
                        field: field.clone(),
                        error,
                    })
            })
            .collect()
    }
}

/// A field's pipeline has a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("normalisation of field `{field}`: {error}")]
pub struct FieldConfigError {
    pub field: String,
    #[source]
    pub error: StepConfigError,
}

/// A step cannot be compiled. `position` is 1-based, as a person counts the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepConfigError {
    #[error("step {position} (`{step}`): invalid character set: {reason}")]
    CharSet {
        position: usize,
        step: &'static str,
        reason: String,
    },
    #[error("step {position} (`date`): `{key}` format `{format}` is invalid: {reason}")]
    DateFormat {
        position: usize,
        key: &'static str,
        format: String,
        reason: &'static str,
    },
    #[error("step {position} (`replace`): pair {pair} replaces the empty string")]
    EmptyReplacement { position: usize, pair: usize },
    #[error("step {position} (`strip_titles`): title {index} is empty or contains whitespace")]
    BadTitle { position: usize, index: usize },
    #[error("step {position} (`map`): the map is empty, so every value would be rejected")]
    EmptyMap { position: usize },
}

/// A value cannot be normalised. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    #[error("step {position} (`date`): the value is not a valid date in the format `{format}`")]
    InvalidDate { position: usize, format: String },
    #[error("step {position} (`map`): the value has no entry in the map")]
    Unmapped { position: usize },
}

/// A compiled pipeline. Cheap to share; `apply` is pure.
#[derive(Debug, Clone)]
pub struct Normaliser {
    ops: Vec<Op>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Op {
    Nfc,
    Nfkc,
    Trim,
    CollapseWhitespace,
    Uppercase,
    Lowercase,
    TransliterateDe,
    /// Titles, longest first, so that `Dipl.-Ing.` wins over `Dipl.`.
    StripTitles(Vec<String>),
    Keep(CharSet),
    Remove(CharSet),
    Replace(Vec<(String, String)>),
    Date {
        from: String,
        to: String,
    },
    Map(BTreeMap<String, String>),
}

impl Normaliser {
    /// Validates and compiles `steps`.
    pub fn new(steps: &[Step]) -> Result<Normaliser, StepConfigError> {
        let ops = steps
            .iter()
            .enumerate()
            .map(|(i, step)| compile(i + 1, step))
            .collect::<Result<_, _>>()?;
        Ok(Normaliser {
            ops,
            steps: steps.to_vec(),
        })
    }

    /// The steps this normaliser was built from.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Runs the pipeline on one value.
    pub fn apply(&self, value: &str) -> Result<String, NormaliseError> {
        let mut current = value.to_owned();
        for (i, op) in self.ops.iter().enumerate() {
            current = run(i + 1, op, &current)?;
        }
        Ok(current)
    }
}

fn compile(position: usize, step: &Step) -> Result<Op, StepConfigError> {
    Ok(match step {
        Step::Nfc => Op::Nfc,
        Step::Nfkc => Op::Nfkc,
        Step::Trim => Op::Trim,
        Step::CollapseWhitespace => Op::CollapseWhitespace,
        Step::Uppercase => Op::Uppercase,
        Step::Lowercase => Op::Lowercase,
        Step::TransliterateDe => Op::TransliterateDe,
        Step::StripTitles(titles) => {
            if let Some(index) = titles
                .iter()
                .position(|t| t.is_empty() || t.chars().any(char::is_whitespace))
            {
                return Err(StepConfigError::BadTitle {
                    position,
                    index: index + 1,
                });
            }
            let mut sorted = titles.clone();
            sorted.sort_by_key(|t| std::cmp::Reverse(t.chars().count()));
            Op::StripTitles(sorted)
        }
        Step::KeepChars(spec) => {
            Op::Keep(
                CharSet::parse(spec).map_err(|reason| StepConfigError::CharSet {
                    position,
                    step: "keep_chars",
                    reason,
                })?,
            )
        }
        Step::RemoveChars(spec) => {
            Op::Remove(
                CharSet::parse(spec).map_err(|reason| StepConfigError::CharSet {
                    position,
                    step: "remove_chars",
                    reason,
                })?,
            )
        }
        Step::Replace(pairs) => {
            if let Some(pair) = pairs.iter().position(|(from, _)| from.is_empty()) {
                return Err(StepConfigError::EmptyReplacement {
                    position,
                    pair: pair + 1,
                });
            }
            Op::Replace(pairs.clone())
        }
        Step::Date { from, to } => {
            check_date_formats(position, from, to)?;
            Op::Date {
                from: from.clone(),
                to: to.clone(),
            }
        }
        Step::Map(map) => {
            if map.is_empty() {
                return Err(StepConfigError::EmptyMap { position });
            }
            Op::Map(map.clone())
        }
    })
}

fn run(position: usize, op: &Op, value: &str) -> Result<String, NormaliseError> {
    Ok(match op {
        Op::Nfc => value.nfc().collect(),
        Op::Nfkc => value.nfkc().collect(),
        Op::Trim => value.trim().to_owned(),
        Op::CollapseWhitespace => collapse_whitespace(value),
        Op::Uppercase => value.to_uppercase(),
        Op::Lowercase => value.to_lowercase(),
        Op::TransliterateDe => transliterate_de(value),
        Op::StripTitles(titles) => strip_titles(value, titles),
        Op::Keep(set) => value.chars().filter(|&c| set.contains(c)).collect(),
        Op::Remove(set) => value.chars().filter(|&c| !set.contains(c)).collect(),
        Op::Replace(pairs) => pairs.iter().fold(value.to_owned(), |acc, (from, to)| {
            acc.replace(from.as_str(), to)
        }),
        Op::Date { from, to } => {
            let invalid = || NormaliseError::InvalidDate {
                position,
                format: from.clone(),
            };
            let date = NaiveDate::parse_from_str(value, from).map_err(|_| invalid())?;
            // Formats were checked at construction; a failure here would still be reported
            // rather than panicking inside `to_string`.
            format_date(date, to).ok_or_else(invalid)?
        }
        Op::Map(map) => map
            .get(value)
            .cloned()
            .ok_or(NormaliseError::Unmapped { position })?,
    })
}

fn collapse_whitespace(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_space = false;
    for c in value.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// German/ICAO replacements, case-preserving per character; `None` for everything else.
fn transliterate_special(c: char) -> Option<&'static str> {
    Some(match c {
        'ä' => "ae",
        'Ä' => "AE",
        'ö' => "oe",
        'Ö' => "OE",
        'ü' => "ue",
        'Ü' => "UE",
        'ß' => "ss",
        'ẞ' => "SS",
        'æ' => "ae",
        'Æ' => "AE",
        'œ' => "oe",
        'Œ' => "OE",
        'ø' => "oe",
        'Ø' => "OE",
        'å' => "aa",
        'Å' => "AA",
        'þ' => "th",
        'Þ' => "TH",
        'ð' | 'đ' => "d",
        'Ð' | 'Đ' => "D",
        'ł' => "l",
        'Ł' => "L",
        'ı' => "i",
        'ĳ' => "ij",
        'Ĳ' => "IJ",
        'ŋ' => "n",
        'Ŋ' => "N",
        _ => return None,
    })
}

fn transliterate_de(value: &str) -> String {
    // Composed first, so that a decomposed "a + U+0308" is still recognised as `ä` (→ "ae")
    // instead of losing its diaeresis to the accent stripping below (→ "a").
    let mut replaced = String::with_capacity(value.len() + 8);
    for c in value.nfc() {
        match transliterate_special(c) {
            Some(s) => replaced.push_str(s),
            None => replaced.push(c),
        }
    }
    replaced
        .nfd()
        .filter(|&c| !is_combining_mark(c))
        .nfc()
        .collect()
}

/// Case-insensitive `strip_prefix`, comparing full lower-case mappings character by character.
fn strip_prefix_ci<'a>(word: &'a str, prefix: &str) -> Option<&'a str> {
    let mut rest = word.char_indices();
    for p in prefix.chars() {
        let (_, w) = rest.next()?;
        if !w.to_lowercase().eq(p.to_lowercase()) {
            return None;
        }
    }
    Some(rest.next().map_or("", |(i, _)| &word[i..]))
}

fn strip_titles(value: &str, titles: &[String]) -> String {
    let mut kept = Vec::new();
    for word in value.split_whitespace() {
        let mut rest = word;
        // Peel titles off the front: a title ending in '.' may be followed by more text in
        // the same word ("Dr.med.", "Dr.Müller"); any other title must be the whole remainder.
        while let Some(after) = titles.iter().find_map(|t| {
            strip_prefix_ci(rest, t).filter(|after| after.is_empty() || t.ends_with('.'))
        }) {
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        if !rest.is_empty() {
            kept.push(rest);
        }
    }
    kept.join(" ")
}

/// Formats a date without chrono's panicking `to_string` (which panics on specifiers a date
/// cannot fill, such as `%H`).
fn format_date(date: NaiveDate, format: &str) -> Option<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    write!(out, "{}", date.format(format)).ok()?;
    Some(out)
}

fn check_date_formats(position: usize, from: &str, to: &str) -> Result<(), StepConfigError> {
    let bad = |key: &'static str, format: &str, reason: &'static str| StepConfigError::DateFormat {
        position,
        key,
        format: format.to_owned(),
        reason,
    };
    for (key, format) in [("from", from), ("to", to)] {
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(bad(key, format, "unknown or incomplete `%` specifier"));
        }
    }
    // A fixed date whose fields are all distinct catches formats that lose information.
    let probe = NaiveDate::from_ymd_opt(1987, 11, 23).ok_or_else(|| bad("to", to, "internal"))?;
    let Some(_) = format_date(probe, to) else {
        return Err(bad(
            "to",
            to,
            "contains a specifier a date cannot fill (a time or zone)",
        ));
    };
    let round_trip =
        format_date(probe, from).and_then(|text| NaiveDate::parse_from_str(&text, from).ok());
    if round_trip != Some(probe) {
        return Err(bad(
            "from",
            from,
            "does not identify a full date (it needs year, month and day, or year and ordinal day)",
        ));
    }
    Ok(())
}

/// A compiled character set: a bitmap for ASCII, ranges for the rest.
#[derive(Clone)]
struct CharSet {
    ascii: [bool; 128],
    ranges: Vec<(char, char)>,
}

impl fmt::Debug for CharSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii: String = (0u8..128)
            .filter(|&b| self.ascii[b as usize])
            .map(char::from)
            .collect();
        f.debug_struct("CharSet")
            .field("ascii", &ascii)
            .field("ranges", &self.ranges)
            .finish()
    }
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
        }
    }

    fn add_range(&mut self, lo: char, hi: char) {
        for b in 0u8..128 {
            let c = char::from(b);
            if lo <= c && c <= hi {
                self.ascii[b as usize] = true;
            }
        }
        if !hi.is_ascii() {
            self.ranges.push((lo.max('\u{80}'), hi));
        }
    }

    fn parse(spec: &str) -> Result<CharSet, String> {
        /// One parsed element: a character (with whether it was escaped, since only an
        /// unescaped '-' forms a range) or a class.
        enum Atom {
            Char(char, bool),
            Class(&'static [(char, char)]),
        }
        const JAVA_SPACE: &[(char, char)] = &[('\t', '\r'), (' ', ' ')];
        const DIGITS: &[(char, char)] = &[('0', '9')];

        let mut atoms = Vec::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            atoms.push(if c == '\\' {
                match chars.next() {
                    Some('s') => Atom::Class(JAVA_SPACE),
                    Some('d') => Atom::Class(DIGITS),
                    Some(e @ ('\\' | '-')) => Atom::Char(e, true),
                    Some(e) => {
                        return Err(format!(
                            "unknown escape `\\{e}` (known: \\s, \\d, \\\\, \\-)"
                        ));
                    }
                    None => return Err("a lone `\\` at the end".to_owned()),
                }
            } else {
                Atom::Char(c, false)
            });
        }
        if atoms.is_empty() {
            return Err("the set is empty".to_owned());
        }

        let mut set = CharSet {
            ascii: [false; 128],
            ranges: Vec::new(),
        };
        let mut i = 0;
        while i < atoms.len() {
            match (&atoms[i], atoms.get(i + 1), atoms.get(i + 2)) {
                (Atom::Char(lo, _), Some(Atom::Char('-', false)), Some(Atom::Char(hi, _))) => {
                    if lo > hi {
                        return Err(format!("range `{lo}-{hi}` is reversed"));
                    }
                    set.add_range(*lo, *hi);
                    i += 3;
                }
                (Atom::Char(c, _), _, _) => {
                    set.add_range(*c, *c);
                    i += 1;
                }
                (Atom::Class(ranges), _, _) => {
                    for &(lo, hi) in *ranges {
                        set.add_range(lo, hi);
                    }
                    i += 1;
                }
            }
        }
        Ok(set)
    }
}

/// Ready-made pipelines. Each returns the steps, so it can be inspected, serialised into a
/// configuration file, or extended.
pub mod presets {
    use super::Step;

    /// The Mainzelliste fTTP library's own example for first and last names (its README and
    /// `RandomRecordBloomFilterGeneratorTest`), reproducing `StringFieldTransformer` exactly:
    /// remove the substrings `Dr.` and `Dipl.` (case-sensitive, anywhere), replace
    /// `é ä Ä ö Ö ü Ü` by `e ae AE oe OE ue UE`, upper-case, keep only `[A-Z\s]`.
    ///
    /// Note what the library does *not* do: it does not trim (`"Dr. Hans"` becomes `" HANS"`,
    /// whose leading space yields an extra `"  "` bigram), it does not touch other accents (`è`
    /// is dropped, not mapped to `E`), and it only maps *precomposed* umlauts. Use this preset to
    /// interoperate with sites running that configuration; prefer [`german_names`] otherwise.
    pub fn mainzelliste_names() -> Vec<Step> {
        let pairs = [
            ("Dr.", ""),
            ("Dipl.", ""),
            ("é", "e"),
            ("ä", "ae"),
            ("Ä", "AE"),
            ("ö", "oe"),
            ("Ö", "OE"),
            ("ü", "ue"),
            ("Ü", "UE"),
        ];
        vec![
            Step::Replace(
                pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
            Step::Uppercase,
            Step::KeepChars(r"A-Z\s".to_owned()),
        ]
    }

    /// Robust German names for the default fTTP vocabulary: NFC, whitespace collapsed, academic
    /// titles removed, transliterated (`Müller` → `MUELLER`, `José` → `JOSE`), upper-cased,
    /// hyphens as spaces (`Hans-Peter` = `Hans Peter`), only `A-Z` and single inner spaces kept.
    pub fn german_names() -> Vec<Step> {
        vec![
            Step::Nfc,
            Step::CollapseWhitespace,
            Step::strip_default_titles(),
            Step::TransliterateDe,
            Step::Uppercase,
            Step::Replace(vec![("-".to_owned(), " ".to_owned())]),
            Step::KeepChars("A-Z ".to_owned()),
            Step::CollapseWhitespace,
            Step::Trim,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_set_syntax() {
        let set = CharSet::parse(r"A-Z 0-9").unwrap();
        assert!(set.contains('Q') && set.contains(' ') && set.contains('5'));
        assert!(!set.contains('a') && !set.contains('-') && !set.contains('\t'));

        let set = CharSet::parse(r"A-Z\s").unwrap();
        assert!(set.contains('\t') && set.contains('\u{b}') && set.contains('\r'));
        assert!(
            !set.contains('\u{a0}'),
            "Java's \\s is ASCII whitespace only"
        );

        let set = CharSet::parse(r"-a\-c\\").unwrap();
        assert!(set.contains('-') && set.contains('a') && set.contains('c'));
        assert!(!set.contains('b'), "an escaped dash does not form a range");
        assert!(set.contains('\\'));

        let set = CharSet::parse("a-").unwrap();
        assert!(set.contains('a') && set.contains('-'));

        let set = CharSet::parse("À-ÿ\\d").unwrap();
        assert!(set.contains('é') && set.contains('7') && !set.contains('A'));

        assert!(CharSet::parse("Z-A").unwrap_err().contains("reversed"));
        assert!(CharSet::parse(r"\q").unwrap_err().contains(r"\q"));
        assert!(CharSet::parse("ab\\").is_err());
        assert!(CharSet::parse("").is_err());
    }

    #[test]
    fn strip_prefix_is_case_insensitive_and_char_aligned() {
        assert_eq!(strip_prefix_ci("DR.MED.", "Dr."), Some("MED."));
        assert_eq!(strip_prefix_ci("Dipl.-Päd.", "DIPL.-PÄD."), Some(""));
        assert_eq!(strip_prefix_ci("Dr", "Dr."), None);
        assert_eq!(strip_prefix_ci("Andrea", "Dr."), None);
    }

    #[test]
    fn date_format_validation() {
        let date = |from: &str, to: &str| {
            Normaliser::new(&[Step::Date {
                from: from.into(),
                to: to.into(),
            }])
        };
        assert!(date("%Y-%m-%d", "%Y%m%d").is_ok());
        assert!(date("%d.%m.%Y", "%Y%m%d").is_ok());
        assert!(date("%Y-%j", "%Y%m%d").is_ok());
        for (from, to, key) in [
            ("%Y-%m", "%Y%m%d", "from"),
            ("%Y-%m-%Q", "%Y%m%d", "from"),
            ("%Y-%m-%d", "%Y%m%d %H", "to"),
            ("%Y-%m-%d", "%Y%m%", "to"),
        ] {
            match date(from, to) {
                Err(StepConfigError::DateFormat { key: k, .. }) => {
                    assert_eq!(k, key, "{from} {to}")
                }
                other => panic!("{from} → {to}: {other:?}"),
            }
        }
    }
}
