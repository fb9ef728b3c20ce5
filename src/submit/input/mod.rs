//! Reading site exports: the records file of `submit` and the input of `encode`.
//!
//! One pure pipeline over the file's bytes, so that every path that takes records (the
//! command line, and a daemon that is handed a file) reads them the same way:
//!
//! 1. [`text`]: the encoding (UTF-8, a named one, or Windows-1252 detected) and line ends;
//! 2. [`table`]: the separator (named, or detected from the header line) and the rows, each
//!    with the line of the file it starts on;
//! 3. [`mapping`]: the site's date layouts and codes onto the agent's (the input settings);
//! 4. [`parse`]: the header's columns, then every row checked, *all* of them: the result holds
//!    the good records and one [`RowProblem`] per bad row, so a file with four bad rows is
//!    fixed in one round, not four. Problems name the line, the column and what is wrong,
//!    never the value (it is identifying data).

pub mod mapping;
pub mod table;
pub mod text;

use std::collections::{BTreeMap, HashMap};

use ttp_proto::IdatElement;

pub use mapping::{InputSettings, ValueMappings};

use crate::domain::Idat;

/// Longest accepted local id (characters).
pub const MAX_LOCAL_ID_CHARS: usize = 256;

/// One row of the input file, validated.
#[derive(Clone, PartialEq)]
pub struct InputRecord {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub local_id: String,
    pub idat: Idat,
}

impl std::fmt::Debug for InputRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputRecord")
            .field("line", &self.line)
            .field("local_id", &self.local_id)
            .field("idat", &self.idat)
            .finish()
    }
}

/// What is wrong with one row. Never contains a value from the file except a `local_id`
/// (the site's own identifier, not IDAT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    pub line: u64,
    /// The column, when one is to blame.
    pub column: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column `{c}`: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// A file that cannot be read at all (as opposed to bad rows).
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Text { path: String, reason: String },
    #[error("{path}: line 1 (header): {reason}")]
    Header { path: String, reason: String },
}

/// The file, read and checked.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<InputRecord>,
    /// Every bad row, in file order.
    pub problems: Vec<RowProblem>,
    /// What the reader decided on its own (encoding, separator), to tell the user.
    pub notes: Vec<String>,
}

/// The columns the header names.
struct Columns {
    id: usize,
    idat: Vec<(usize, IdatElement)>,
}

/// Check one value against the rules for its element (`ttp_proto::value`, the same parser
/// that shapes the Patient of a `send_idat` answer, so a value accepted here cannot fail
/// there) and return the form to store: its canonical text (`w` → `female`, `d` → `divers`,
/// `de-de` → `de-DE`, names trimmed). The reason never repeats the value.
pub fn validate_value(element: IdatElement, value: &str) -> Result<String, String> {
    ttp_proto::canonical_value(element, value).map_err(|e| e.to_string())
}

/// Reads and checks a records file: header `local_id` plus fTTP element codes. Pure: the
/// caller has read the bytes; `name` is used in messages.
pub fn parse(bytes: &[u8], name: &str, settings: &InputSettings) -> Result<Parsed, FileProblem> {
    let decoded = text::decode(bytes, settings.encoding).map_err(|reason| FileProblem::Text {
        path: name.to_owned(),
        reason,
    })?;
    let header_err = |reason: String| FileProblem::Header {
        path: name.to_owned(),
        reason,
    };
    let table = table::read(&decoded.text, settings.delimiter).map_err(header_err)?;
    let columns = columns(&table.header).map_err(header_err)?;
    let mut parsed = Parsed {
        notes: decoded.note.into_iter().chain(table.note).collect(),
        ..Parsed::default()
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    for row in table.rows {
        match check_row(&row, &columns, &settings.mappings, &mut seen) {
            Ok(record) => parsed.records.push(record),
            Err(problem) => parsed.problems.push(problem),
        }
    }
    Ok(parsed)
}

fn columns(header: &[String]) -> Result<Columns, String> {
    let mut id = None;
    let mut idat: Vec<(usize, IdatElement)> = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim();
        if h == "local_id" {
            if id.replace(i).is_some() {
                return Err("column `local_id` appears twice".into());
            }
        } else if let Some(el) = IdatElement::from_code(h) {
            if idat.iter().any(|(_, e)| *e == el) {
                return Err(format!("column `{h}` appears twice"));
            }
            idat.push((i, el));
        } else {
            // The name itself is not shown: in a file without a header line it is a patient's
            // name or date of birth. A close code is suggested instead.
            let known: Vec<&str> = IdatElement::ALL.iter().map(|e| e.code()).collect();
            let hint = closest_column(h)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "column {} is neither `local_id` nor an fTTP element code{hint}; expected `local_id` and codes from: {} (the name is not repeated here: if the file lacks its header line, it is patient data)",
                i + 1,
                known.join(", ")
            ));
        }
    }
    let id = id.ok_or("no `local_id` column")?;
    if idat.is_empty() {
        return Err("no IDAT columns".into());
    }
    Ok(Columns { id, idat })
}

fn check_row(
    row: &table::Row,
    columns: &Columns,
    mappings: &ValueMappings,
    seen: &mut HashMap<String, u64>,
) -> Result<InputRecord, RowProblem> {
    let line = row.line;
    let problem = |column: Option<&str>, reason: String| RowProblem {
        line,
        column: column.map(str::to_owned),
        reason,
    };
    let fields = row.fields.as_ref().map_err(|e| problem(None, e.clone()))?;
    let local_id = fields.get(columns.id).unwrap_or("").trim().to_string();
    let id_problem = |reason: String| problem(Some("local_id"), reason);
    if local_id.is_empty() {
        return Err(id_problem("is empty".into()));
    }
    // Local ids go into logs and the status page: no line breaks (a forged log line) and no
    // essays.
    if local_id.chars().any(char::is_control) {
        return Err(id_problem("contains control characters".into()));
    }
    if local_id.chars().count() > MAX_LOCAL_ID_CHARS {
        return Err(id_problem(format!(
            "is longer than {MAX_LOCAL_ID_CHARS} characters"
        )));
    }
    let mut idat = BTreeMap::new();
    for (i, el) in &columns.idat {
        let value = fields.get(*i).unwrap_or("").trim();
        if value.is_empty() {
            continue;
        }
        let value = match el {
            IdatElement::Birthdate => mappings.birthdate(value),
            IdatElement::Gender => mappings.gender(value),
            _ => value.to_owned(),
        };
        let value = validate_value(*el, &value).map_err(|reason| {
            let hint = match el {
                IdatElement::Birthdate => mappings.date_hint(),
                IdatElement::Gender => " (map the site's codes in `[input.gender]`)".to_owned(),
                _ => String::new(),
            };
            problem(Some(el.code()), format!("{reason}{hint}"))
        })?;
        idat.insert(*el, value);
    }
    // Checked last, so that a row with another problem does not claim the id.
    if let Some(first) = seen.get(&local_id) {
        return Err(id_problem(format!(
            "`{local_id}` already appeared on line {first}"
        )));
    }
    seen.insert(local_id.clone(), line);
    Ok(InputRecord {
        line,
        local_id,
        idat: Idat(idat),
    })
}

/// The column name a misspelt header most likely meant: within two edits, case ignored.
fn closest_column(header: &str) -> Option<&'static str> {
    let header = header.to_lowercase();
    std::iter::once("local_id")
        .chain(IdatElement::ALL.iter().map(|e| e.code()))
        .map(|code| (edit_distance(&header, code), code))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, code)| code)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Parsed {
        parse(text.as_bytes(), "records.csv", &InputSettings::default()).unwrap()
    }

    #[test]
    fn every_bad_row_is_reported_with_line_and_column_and_never_the_value() {
        let p = parse_text(
            "local_id,given,birthdate,gender\n\
             A1,Anna,1980-01-02,female\n\
             A2,Bea,1980-13-01,female\n\
             A3,Carl,1980-01-03,mann\n\
             ,Dora,1980-01-04,female\n\
             A5,Emil\n\
             A1,Fritz,1980-01-05,male\n\
             A7,Gustav,1980-01-06,male\n",
        );
        assert_eq!(p.records.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 8]);
        let shown: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            p.problems.iter().map(|p| p.line).collect::<Vec<_>>(),
            [3, 4, 5, 6, 7],
            "{shown:?}"
        );
        assert!(
            shown[0].starts_with("line 3, column `birthdate`:"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("line 4, column `gender`:"),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with("line 5, column `local_id`: is empty"),
            "{shown:?}"
        );
        assert!(shown[3].starts_with("line 6: has 2 fields"), "{shown:?}");
        assert!(shown[4].contains("already appeared on line 2"), "{shown:?}");
        for value in ["1980-13-01", "mann", "Dora", "Fritz"] {
            assert!(
                !shown.iter().any(|s| s.contains(value)),
                "{value} in {shown:?}"
            );
        }
    }

    #[test]
    fn a_german_excel_export_is_read_with_a_note() {
        let bytes = b"local_id;given;family;birthdate\r\nA1;J\xfcrgen;M\xfcller;02.01.1980\r\n";
        // Without the layout in the settings, the date is refused with a hint.
        let p = parse(bytes, "export.csv", &InputSettings::default()).unwrap();
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].reason.contains("[input] date_formats"),
            "{:?}",
            p.problems
        );
        let mut settings = InputSettings::default();
        settings.mappings.date_formats = vec![mapping::DateFormat::parse("DD.MM.YYYY").unwrap()];
        let p = parse(bytes, "export.csv", &settings).unwrap();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let r = &p.records[0];
        assert_eq!(r.idat.0[&IdatElement::Given], "Jürgen");
        assert_eq!(r.idat.0[&IdatElement::Birthdate], "1980-01-02");
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes.iter().any(|n| n.contains("Windows-1252")));
        assert!(p.notes.iter().any(|n| n.contains("`;`")));
    }

    #[test]
    fn line_numbers_are_file_lines_whatever_the_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let text = ["local_id,birthdate", "A1,1980-01-01", "A2,1980-01-32", ""].join(end);
            let p = parse_text(&text);
            assert_eq!(p.problems.len(), 1, "{end:?}");
            assert_eq!(p.problems[0].line, 3, "{end:?}");
            assert_eq!(p.records[0].line, 2, "{end:?}");
        }
    }

    #[test]
    fn header_problems_stop_the_file() {
        for (text, needle) in [
            ("given\nAnna\n", "no `local_id`"),
            ("local_id\nA1\n", "no IDAT"),
            ("local_id,given,given\n", "twice"),
            ("Anna,Müller\n", "column 1"),
        ] {
            let e = parse(text.as_bytes(), "r.csv", &InputSettings::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 1") && e.contains(needle), "{e}");
            assert!(!e.contains("Anna") && !e.contains("Müller"), "{e}");
        }
        assert_eq!(closest_column("Birthdate"), Some("birthdate"));
        assert_eq!(closest_column("localid"), Some("local_id"));
        assert_eq!(closest_column("Xylandermeyer"), None);
    }
}
