//! Records into the store: read IDAT from CSV, encode, store. Sending them is registration
//! (`crate::agent::register`).
//!
//! The path is split where durability needs it:
//!
//! 1. [`read_records`] validates the whole file first ([`input`]): every bad row is
//!    reported, naming the line and column, and a file with bad rows stores nothing (unless
//!    the caller chooses to skip them), so nothing half-imported is left behind.
//! 2. [`encode_records`] runs the encoding profile on all cores.
//! 3. [`store_records`] inserts them (`New`); a record already stored with the same filter is
//!    left alone, so submitting a file twice changes nothing and sends nothing new.
//! 4. [`Agent::register_pending`](crate::agent::Agent::register_pending) sends them.

pub mod input;

use std::path::Path;

use chrono::Utc;
use rayon::prelude::*;
use ttp_encode::profile::ProfileEncoder;
use ttp_proto::IdatElement;

pub use crate::agent::register::{RegisterError, RegisterStats};
use crate::domain::{LocalRecord, RecordHead, RecordState};
use crate::store::{InsertOutcome, META_PROFILE_FINGERPRINT, Store, StoreError};
use input::{FileProblem, InputSettings, Parsed, RowProblem};

pub use input::{InputRecord, MAX_LOCAL_ID_CHARS, validate_value};

/// How many bad rows one message lists; the rest are counted.
pub const PROBLEMS_SHOWN: usize = 20;

/// A records file that cannot be used as a whole. Never contains a value from the file except
/// `local_id` (which is the site's own identifier, not IDAT).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    File(#[from] FileProblem),
    #[error("{path}: {}", describe_rows(problems))]
    Rows {
        path: String,
        problems: Vec<RowProblem>,
    },
}

/// "2 invalid rows: line 3, …; line 5, …" with at most [`PROBLEMS_SHOWN`] listed.
pub fn describe_rows(problems: &[RowProblem]) -> String {
    let listed: Vec<String> = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(ToString::to_string)
        .collect();
    let more = problems.len().saturating_sub(PROBLEMS_SHOWN);
    format!(
        "{} invalid row(s): {}{}",
        problems.len(),
        listed.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

/// Reads and validates a records file with the default input settings; any bad row is an
/// error listing the bad rows (see [`input`]).
pub fn read_records(path: &Path) -> Result<Vec<InputRecord>, InputError> {
    let shown = path.display().to_string();
    let parsed = read_records_with(path, &InputSettings::default())?;
    all_good(parsed, &shown)
}

/// [`read_records`] over any reader; `name` is used in messages.
pub fn read_records_from(
    mut reader: impl std::io::Read,
    name: &str,
) -> Result<Vec<InputRecord>, InputError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| FileProblem::Io {
            path: name.to_owned(),
            source,
        })?;
    all_good(input::parse(&bytes, name, &InputSettings::default())?, name)
}

/// Reads a records file with `settings`: the good records and every bad row.
pub fn read_records_with(path: &Path, settings: &InputSettings) -> Result<Parsed, FileProblem> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FileProblem::Io {
        path: shown.clone(),
        source,
    })?;
    input::parse(&bytes, &shown, settings)
}

fn all_good(parsed: Parsed, name: &str) -> Result<Vec<InputRecord>, InputError> {
    if parsed.problems.is_empty() {
        Ok(parsed.records)
    } else {
        Err(InputError::Rows {
            path: name.to_owned(),
            problems: parsed.problems,
        })
    }
}

/// A record the profile could not encode.
#[derive(Debug, thiserror::Error)]
#[error("line {line} (local_id `{local_id}`): {reason}")]
pub struct EncodeFailure {
    pub line: u64,
    pub local_id: String,
    pub reason: String,
}

/// Encode every record with the profile, on all cores. Input order is kept.
pub fn encode_records(
    encoder: &ProfileEncoder,
    records: Vec<InputRecord>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<LocalRecord>, EncodeFailure> {
    let now = Utc::now();
    records
        .into_par_iter()
        .map(|r| {
            let get = |source: &str| -> Option<&str> {
                IdatElement::from_code(source)
                    .and_then(|e| r.idat.0.get(&e))
                    .map(String::as_str)
            };
            let bloom_filter = encoder.encode_record(&get).map_err(|e| EncodeFailure {
                line: r.line,
                local_id: r.local_id.clone(),
                reason: e.to_string(),
            })?;
            progress(1);
            Ok(LocalRecord {
                head: RecordHead {
                    local_id: r.local_id,
                    bloom_filter,
                    state: RecordState::New,
                    pseudonym: None,
                    created_at: now,
                    updated_at: now,
                },
                idat: Some(r.idat),
            })
        })
        .collect()
}

/// What storing a set of records did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub inserted: usize,
    pub unchanged: usize,
    /// Local ids already stored with a different filter (the IDAT or the profile changed):
    /// left alone; the site must decide.
    pub conflicts: Vec<String>,
}

/// Insert encoded records in chunks, flushing after each, so a crash keeps whole chunks.
pub fn store_records(
    store: &Store,
    records: &[LocalRecord],
    chunk: usize,
) -> Result<StoreStats, StoreError> {
    let mut stats = StoreStats::default();
    for part in records.chunks(chunk.max(1)) {
        for (rec, outcome) in part.iter().zip(store.insert_records(part)?) {
            match outcome {
                InsertOutcome::Inserted => stats.inserted += 1,
                InsertOutcome::Unchanged => stats.unchanged += 1,
                InsertOutcome::Conflict => stats.conflicts.push(rec.head.local_id.clone()),
            }
        }
        store.flush()?;
    }
    Ok(stats)
}

/// Refuse to mix filters of two different profiles in one store: they would not link.
pub fn check_profile(store: &Store, encoder: &ProfileEncoder) -> Result<(), String> {
    let current = encoder.fingerprint();
    match store
        .get_meta_string(META_PROFILE_FINGERPRINT)
        .map_err(|e| e.to_string())?
    {
        None => store
            .set_meta_string(META_PROFILE_FINGERPRINT, &current)
            .map_err(|e| e.to_string()),
        Some(stored) if stored == current => Ok(()),
        Some(stored) => Err(format!(
            "the encoding profile changed since this store's records were encoded (profile fingerprint {stored} in the store, {current} in the configuration); filters of different profiles do not link. Use the original [encoding] settings, or a new store for the new profile"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<InputRecord>, InputError> {
        read_records_from(text.as_bytes(), "records.csv")
    }

    #[test]
    fn a_valid_file_is_read_with_line_numbers_and_empty_values_left_out() {
        let recs = read(
            "local_id,given,family,birthdate,gender,birthplace\n\
             c1,Anna,Müller,1985-03-14,female,\n\
             c2, Jürgen ,Schmidt,1972-11-02,male,Berlin\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].line, 2);
        assert_eq!(recs[1].line, 3);
        assert!(!recs[0].idat.0.contains_key(&IdatElement::Birthplace));
        assert_eq!(recs[1].idat.0[&IdatElement::Given], "Jürgen");
    }

    #[test]
    fn errors_name_the_line_and_column_but_not_the_value() {
        let e = read("local_id,given,birthdate\nc1,Anna,1985-03-14\nc2,Zoë,14/03/1985\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("`birthdate`"), "{e}");
        assert!(!e.contains("14/03/1985") && !e.contains("Zoë"), "{e}");

        let e = read("local_id,given,gender\nc1,Anna,q\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("`gender`") && e.contains("male"),
            "{e}"
        );
    }

    #[test]
    fn header_problems_are_reported() {
        for (text, needle) in [
            ("given,family\nA,B\n", "no `local_id`"),
            ("local_id,givn\nc1,A\n", "column 2 is neither"),
            ("local_id,givn\nc1,A\n", "did you mean `given`?"),
            ("local_id,given,given\nc1,A,B\n", "appears twice"),
            ("local_id\nc1\n", "no IDAT columns"),
        ] {
            let e = read(text).unwrap_err().to_string();
            assert!(e.contains("line 1") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_file_without_its_header_line_does_not_echo_patient_data() {
        let e = read("Quirinaxel,Xylandermeyer,c1,1931-07-19\nAnna,B,c2,1940-01-01\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("column 1"), "{e}");
        assert!(
            !e.contains("Quirinaxel") && !e.contains("did you mean"),
            "{e}"
        );
    }

    /// Found by fuzzing (`fuzz/artifacts/read_records/crash-6ed49d51…`): with `\r` as the
    /// line end, every record was reported on line 1.
    #[test]
    fn line_numbers_are_right_whatever_the_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let text = [
                "local_id,given,birthdate",
                "c1,Anna,1985-03-14",
                "c2,Bert,1985-3-14",
            ]
            .join(end)
                + end;
            let e = read(&text).unwrap_err().to_string();
            assert!(e.contains("line 3"), "{end:?}: {e}");
            let ok = read(&text.replace("1985-3-14", "1985-03-14")).unwrap();
            assert_eq!(
                ok.iter().map(|r| r.line).collect::<Vec<_>>(),
                vec![2, 3],
                "{end:?}"
            );
        }
        // The fuzzer's input itself: a `\r` after the header, `\n` later.
        let recs = read(
            "local_id,given,family,birthdate,gender,birthplace\rcase-0,rika,Mustermann,1964-07-12,female,Berlin\ncase-2, Max ,Mustermann,1960-02-29,male,\n",
        )
        .unwrap();
        assert_eq!(recs.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn local_ids_are_one_short_line() {
        let e = read("local_id,given\n\"c\n1\",Anna\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`local_id`") && e.contains("control"), "{e}");
        let long = "x".repeat(MAX_LOCAL_ID_CHARS + 1);
        let e = read(&format!("local_id,given\n{long},Anna\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 256"), "{e}");
    }

    #[test]
    fn row_problems_are_reported() {
        let e = read("local_id,given\nc1,A\nc1,B\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("already appeared on line 2"),
            "{e}"
        );
        let e = read("local_id,given\nc1,A,extra\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
        let e = read("local_id,given\n,A\n").unwrap_err().to_string();
        assert!(e.contains("`local_id`") && e.contains("empty"), "{e}");
    }

    #[test]
    fn birthdates_must_be_real_calendar_dates() {
        assert!(validate_value(IdatElement::Birthdate, "2024-02-29").is_ok());
        assert!(validate_value(IdatElement::Birthdate, "2023-02-29").is_err());
        assert!(validate_value(IdatElement::Birthdate, "1985-3-14").is_err());
        assert!(validate_value(IdatElement::Given, "A\u{0}B").is_err());
    }
}
