//! Backup and restore.

use crate::support;
use crate::support::store::{TempStore, dic_psn, filter, record, send_idat, t, task};
use chrono::NaiveDate;
use ttp_agent::domain::{RecordState, TaskState};
use ttp_agent::store::{AuditEntry, IdatKey, Store, StoreError, StoreOptions};

/// A store with something in every tree.
fn populated(ts: &TempStore) -> Store {
    let store = ts.open();
    let mut recs: Vec<_> = (0..40)
        .map(|i| record(&format!("case-{i:03}"), i))
        .collect();
    for (i, r) in recs.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.head.state = RecordState::Pseudonymised;
            r.head.pseudonym = Some(format!("psn-{i}"));
            r.head.updated_at = t("2024-01-01T00:00:00Z");
        }
    }
    store.insert_records(&recs).expect("insert");
    store
        .purge_idat(t("2024-06-01T00:00:00Z"), |r| r.head.local_id == "case-003")
        .expect("purge idat");
    store
        .put_tasks(&[
            task(
                "old",
                send_idat("S-1"),
                TaskState::Done {
                    at: t("2025-05-01T10:00:00Z"),
                },
            ),
            task("open", dic_psn(5), TaskState::Received),
            task(
                "fin",
                dic_psn(6),
                TaskState::Expired {
                    at: t("2025-05-02T10:00:00Z"),
                },
            ),
        ])
        .expect("put tasks");
    store
        .purge_finished_tasks(t("2025-05-02T00:00:00Z"))
        .expect("purge tasks");
    store
        .append_audit(&AuditEntry {
            at: t("2025-05-03T00:00:00Z"),
            actor: "operator".to_string(),
            action: "resolve-task".to_string(),
            subject: "open".to_string(),
            detail: "test".to_string(),
        })
        .expect("audit");
    store.next_poll_seq().expect("seq");
    store.next_poll_seq().expect("seq");
    store.next_batch_id().expect("batch");
    store
        .set_meta_time("last_poll", t("2025-05-04T00:00:00.5Z"))
        .expect("time");
    store
        .set_meta_string("profile_fingerprint", "fp-1")
        .expect("string");
    store
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day")
}

fn assert_same_content(a: &Store, b: &Store) {
    let all = |s: &Store| s.records_in_states(|_| true).expect("records");
    assert_eq!(all(a), all(b));
    assert_eq!(
        a.record_counts().expect("counts"),
        b.record_counts().expect("counts")
    );
    assert_eq!(a.tasks().expect("tasks"), b.tasks().expect("tasks"));
    assert_eq!(
        a.history_until(day("2025-05-03"), 5).expect("history"),
        b.history_until(day("2025-05-03"), 5).expect("history")
    );
    assert_eq!(a.audit().expect("audit"), b.audit().expect("audit"));
    assert_eq!(
        a.last_poll_seq().expect("seq"),
        b.last_poll_seq().expect("seq")
    );
    assert_eq!(
        a.meta_time("last_poll").expect("t"),
        b.meta_time("last_poll").expect("t")
    );
    assert_eq!(
        a.get_meta_string("profile_fingerprint").expect("s"),
        b.get_meta_string("profile_fingerprint").expect("s")
    );
    assert_eq!(a.store_id().expect("id"), b.store_id().expect("id"));
    assert_eq!(
        a.records_by_bloom_filter(&filter(9)).expect("lookup"),
        b.records_by_bloom_filter(&filter(9)).expect("lookup")
    );
    assert_eq!(
        a.record_by_pseudonym("psn-9").expect("lookup"),
        b.record_by_pseudonym("psn-9").expect("lookup")
    );
}

#[test]
fn backup_then_restore_reproduces_the_store() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("store.backup");
    let written = store.backup_to(&file).expect("backup");
    assert_eq!(written.records, 40);
    assert_eq!(written.tasks, 2);
    assert_eq!(written.audit_entries, 1);
    // One day per finished task: the purged one and the one still stored (the history counts
    // a task when it finishes, not when it is purged).
    assert_eq!(written.history_rows, 2);
    assert_eq!(written.bytes, std::fs::metadata(&file).expect("file").len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "backup readable by others: {mode:o}");
    }

    let target = StoreOptions::new(ts.sibling("restored"), ts.opts.idat_key.clone());
    let read = Store::restore_from(&file, &target).expect("restore");
    assert_eq!(read, written);
    let restored = Store::open(&target).expect("open restored");
    assert_same_content(&store, &restored);
    assert!(restored.check_integrity().expect("check").is_ok());
    // The restored store keeps working: sequences continue, new records are indexed.
    assert_eq!(restored.next_poll_seq().expect("seq"), 3);
    restored
        .insert_records(&[record("case-new", 1000)])
        .expect("insert");
    assert_eq!(restored.record_counts().expect("counts").total, 41);
    restored
        .append_audit(&AuditEntry {
            at: t("2025-06-01T00:00:00Z"),
            actor: "op".to_string(),
            action: "restore".to_string(),
            subject: "store".to_string(),
            detail: String::new(),
        })
        .expect("audit");
    assert_eq!(restored.audit().expect("audit").len(), 2);
}

#[test]
fn restore_into_an_empty_existing_directory_works() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    let dir = ts.sibling("empty");
    std::fs::create_dir(&dir).expect("mkdir");
    let target = StoreOptions::new(&dir, ts.opts.idat_key.clone());
    Store::restore_from(&file, &target).expect("restore");
    assert_same_content(&store, &Store::open(&target).expect("open"));
}

#[test]
fn restore_never_overwrites_a_store() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    drop(store);
    let err = Store::restore_from(&file, &ts.opts).expect_err("target exists");
    assert!(
        matches!(err, StoreError::RestoreTargetExists { .. }),
        "{err:?}"
    );
    assert_eq!(ts.open().record_counts().expect("counts").total, 40);
}

#[test]
fn restore_with_another_key_is_refused_and_leaves_nothing() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    let target = StoreOptions::new(ts.sibling("restored"), IdatKey::generate());
    let err = Store::restore_from(&file, &target).expect_err("wrong key");
    assert!(matches!(err, StoreError::WrongKey), "{err:?}");
    assert!(!target.path.exists());
    assert!(!ts.sibling(".restored.restoring").exists());
}

#[test]
fn damaged_or_foreign_backups_are_refused_and_leave_nothing() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    let good = std::fs::read(&file).expect("read");
    let target = StoreOptions::new(ts.sibling("restored"), ts.opts.idat_key.clone());

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flipped byte", flipped),
        ("truncated", good[..good.len() - 40].to_vec()),
        ("trailing data", [good.clone(), b"x".to_vec()].concat()),
        ("not a backup", b"PK\x03\x04 some zip file".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        let damaged = ts.sibling("damaged");
        std::fs::write(&damaged, bytes).expect("write");
        let err = Store::restore_from(&damaged, &target).expect_err(what);
        assert!(
            matches!(err, StoreError::BadBackup { .. }),
            "{what}: {err:?}"
        );
        assert!(!target.path.exists(), "{what}");
    }
    // The intact file still restores.
    Store::restore_from(&file, &target).expect("restore");
}

#[test]
fn a_backup_replaces_an_older_backup_file() {
    let ts = TempStore::new();
    let store = populated(&ts);
    let file = ts.sibling("b");
    std::fs::write(&file, b"previous").expect("write");
    let summary = store.backup_to(&file).expect("backup");
    assert_eq!(summary.bytes, std::fs::metadata(&file).expect("meta").len());
    assert!(!ts.sibling("b.partial").exists());
}

#[test]
fn backup_does_not_contain_idat_in_clear() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut r = record("case-x", 1);
    r.idat = Some(support::store::idat("Plonkwhistle", "Grazzlebeck"));
    store.insert_records(&[r]).expect("insert");
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    let bytes = std::fs::read(&file).expect("read");
    // The header is in clear: proves the search can find what is there.
    assert!(bytes.windows(22).any(|w| w == b"ttp-agent-store-backup"));
    // Everything after it is encrypted: not even the local id shows.
    assert!(!bytes.windows(6).any(|w| w == b"case-x"));
    assert!(!bytes.windows(12).any(|w| w == b"Plonkwhistle"));
}

#[cfg(target_os = "linux")]
#[test]
fn compaction_keeps_the_content_and_leaves_nothing_behind() {
    let ts = TempStore::new();
    let store = populated(&ts);
    // Some churn, so there is garbage to drop.
    let mut recs = store.records_in_states(|_| true).expect("records");
    for r in &mut recs {
        r.head.state = RecordState::AwaitingClearing;
    }
    store.update_records(&recs).expect("update");
    let before_dir = ts.sibling("before");
    let reference = {
        let file = ts.sibling("reference.backup");
        store.backup_to(&file).expect("backup");
        let opts = StoreOptions::new(&before_dir, ts.opts.idat_key.clone());
        Store::restore_from(&file, &opts).expect("restore");
        opts
    };

    // Refused while the store is in use.
    assert!(matches!(
        Store::compact(&ts.opts),
        Err(StoreError::Locked { .. })
    ));
    drop(store);
    let summary = Store::compact(&ts.opts).expect("compact");
    assert!(summary.bytes_after > 0);

    let compacted = ts.open();
    assert_same_content(&Store::open(&reference).expect("reference"), &compacted);
    assert!(compacted.check_integrity().expect("check").is_ok());
    let leftovers: Vec<_> = std::fs::read_dir(ts.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("compact"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `backup` reads one snapshot while a writer goes on (as the daemon does when a backup is
/// asked for beside it): every backup taken meanwhile restores to a state the writer actually
/// passed through. The writer's transactions each store a batch of records or pseudonymise the
/// previous batch (record, index and pseudonym-log entry together); a backup that mixed two
/// moments would show a batch in part, a gap in the batches, or pseudonyms without their log
/// entries.
#[test]
fn a_backup_taken_while_the_store_is_written_restores_to_a_consistent_store() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const PER_BATCH: u32 = 20;
    let ts = TempStore::new();
    let store = Arc::new(ts.open());
    let stop = Arc::new(AtomicBool::new(false));
    // Transactions committed so far (two per batch).
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, committed) = (store.clone(), stop.clone(), committed.clone());
        std::thread::spawn(move || {
            let mut batch = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let recs: Vec<_> = (0..PER_BATCH)
                    .map(|i| record(&format!("w-{batch:05}-{i:02}"), batch * PER_BATCH + i))
                    .collect();
                store.insert_records(&recs).expect("insert");
                committed.fetch_add(1, Ordering::SeqCst);
                let heads: Vec<_> = recs
                    .iter()
                    .map(support::store::pseudonymised_head)
                    .collect();
                store.update_record_heads(&heads).expect("pseudonymise");
                committed.fetch_add(1, Ordering::SeqCst);
                if batch.is_multiple_of(8) {
                    store.flush().expect("flush");
                }
                batch += 1;
            }
            batch
        })
    };
    let wait_for = |n: u64| {
        let started = std::time::Instant::now();
        while committed.load(Ordering::SeqCst) < n {
            assert!(started.elapsed() < std::time::Duration::from_secs(120));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };

    let mut overlapped = 0;
    let mut restored_batches = Vec::new();
    for round in 0..4u64 {
        wait_for(5 + round * 10);
        let file = ts.sibling(&format!("during-{round}.bak"));
        let before = committed.load(Ordering::SeqCst);
        store.backup_to(&file).expect("backup while writing");
        if committed.load(Ordering::SeqCst) > before {
            overlapped += 1;
        }
        let target = StoreOptions::new(
            ts.sibling(&format!("restored-{round}")),
            ts.opts.idat_key.clone(),
        );
        Store::restore_from(&file, &target).expect("restore");
        let restored = Store::open(&target).expect("open restored");
        assert!(restored.check_integrity().expect("check").is_ok());

        let records = restored.records_in_states(|_| true).expect("records");
        let mut per_batch = std::collections::BTreeMap::<u32, (u32, u32)>::new();
        for r in &records {
            let batch: u32 = r.head.local_id[2..7].parse().expect("batch number");
            let entry = per_batch.entry(batch).or_default();
            entry.0 += 1;
            if r.head.pseudonym.is_some() {
                entry.1 += 1;
            }
        }
        let batches = per_batch.len() as u32;
        // A prefix of the batches, each whole, each pseudonymised all or not at all, and only
        // the last one may still wait for its pseudonyms.
        assert_eq!(
            per_batch.keys().copied().collect::<Vec<_>>(),
            (0..batches).collect::<Vec<_>>(),
            "round {round}: a gap in the batches"
        );
        for (batch, (n, with_psn)) in &per_batch {
            assert_eq!(*n, PER_BATCH, "round {round}: batch {batch} in part");
            let last = *batch + 1 == batches;
            assert!(
                *with_psn == PER_BATCH || (*with_psn == 0 && last),
                "round {round}: batch {batch} has {with_psn} pseudonyms"
            );
        }
        let with_psn: u64 = per_batch.values().map(|(_, p)| u64::from(*p)).sum();
        assert_eq!(
            restored.pseudonym_log_head().expect("log head"),
            with_psn,
            "round {round}: pseudonyms and their log entries from one moment"
        );
        assert_eq!(
            restored.record_counts().expect("counts").total,
            records.len() as u64
        );
        restored_batches.push(batches);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().expect("writer");
    assert!(
        restored_batches.windows(2).all(|w| w[0] <= w[1]),
        "{restored_batches:?}"
    );
    assert!(restored_batches.iter().all(|b| *b <= written));
    // Not asserted (it depends on the scheduler), but shown: how many backups saw the writer
    // commit while they ran.
    eprintln!("{overlapped} of 4 backups overlapped a commit; batches {restored_batches:?}");
}
