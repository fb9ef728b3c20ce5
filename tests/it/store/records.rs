//! Records: round trips, indexes, insert semantics, counters, IDAT purge, IDAT at rest.

use crate::support;
use crate::support::store::{TempStore, bytes_on_disk_contain, filter, idat, raw_db, record, t};
use ttp_agent::domain::{Idat, LocalRecord, RecordState};
use ttp_agent::store::{InsertOutcome, RecordCounts, Store, StoreError};

#[test]
fn records_round_trip_in_every_state() {
    let ts = TempStore::new();
    let store = ts.open();
    let states = [
        RecordState::New,
        RecordState::Sending { batch: 42 },
        RecordState::AwaitingClearing,
        RecordState::Pseudonymised,
        RecordState::Rejected {
            code: "invalid-filter".to_string(),
        },
    ];
    let mut recs = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let mut r = record(&format!("case-{i}"), i as u32);
        r.head.state = state.clone();
        r.head.pseudonym = (i % 2 == 1).then(|| format!("psn-{i}"));
        r.head.updated_at = t("2025-06-07T08:09:10.987654321Z");
        recs.push(r);
    }
    // One record without IDAT, one with an empty IDAT map, one with unusual text.
    recs[0].idat = None;
    recs[1].idat = Some(Idat::default());
    recs[2].idat = Some(idat("Ünïcödé-Nämé 名前", ""));
    assert!(
        store
            .insert_records(&recs)
            .expect("insert")
            .iter()
            .all(|o| *o == InsertOutcome::Inserted)
    );
    for r in &recs {
        assert_eq!(
            store.get_record(&r.head.local_id).expect("get").as_ref(),
            Some(r)
        );
    }
    assert_eq!(store.get_record("no-such-case").expect("get"), None);

    // And after reopening.
    drop(store);
    let store = ts.open();
    for r in &recs {
        assert_eq!(
            store.get_record(&r.head.local_id).expect("get").as_ref(),
            Some(r)
        );
    }
}

#[test]
fn insert_is_idempotent_and_reports_conflicts() {
    let ts = TempStore::new();
    let store = ts.open();
    let a = record("case-a", 1);
    let b = record("case-b", 2);
    assert_eq!(
        store
            .insert_records(&[a.clone(), b.clone()])
            .expect("insert"),
        vec![InsertOutcome::Inserted, InsertOutcome::Inserted]
    );

    // Same id and filter (even with other IDAT): unchanged, nothing written.
    let mut a_again = a.clone();
    a_again.idat = Some(idat("Other", "Name"));
    // Same id, different filter: conflict, nothing written.
    let mut b_other = b.clone();
    b_other.head.bloom_filter = filter(99);
    let c = record("case-c", 3);
    assert_eq!(
        store
            .insert_records(&[a_again, b_other, c.clone()])
            .expect("insert"),
        vec![
            InsertOutcome::Unchanged,
            InsertOutcome::Conflict,
            InsertOutcome::Inserted
        ]
    );
    assert_eq!(store.get_record("case-a").expect("get"), Some(a));
    assert_eq!(store.get_record("case-b").expect("get"), Some(b.clone()));
    assert!(
        store
            .records_by_bloom_filter(&filter(99))
            .expect("lookup")
            .is_empty()
    );
    assert_eq!(store.record_counts().expect("counts").total, 3);

    // A duplicate inside one call: the second occurrence sees the first.
    let d = record("case-d", 4);
    let mut d_other = d.clone();
    d_other.head.bloom_filter = filter(5);
    assert_eq!(
        store
            .insert_records(&[d.clone(), d.clone(), d_other])
            .expect("insert"),
        vec![
            InsertOutcome::Inserted,
            InsertOutcome::Unchanged,
            InsertOutcome::Conflict
        ]
    );
    assert_eq!(store.record_counts().expect("counts").total, 4);
}

#[test]
fn empty_local_id_is_refused() {
    let ts = TempStore::new();
    let store = ts.open();
    let err = store
        .insert_records(&[record("", 1)])
        .expect_err("empty id refused");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.record_counts().expect("counts").total, 0);
}

#[test]
fn records_sharing_a_filter_are_all_found() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut a = record("case-2", 7);
    let mut b = record("case-1", 7);
    a.idat = Some(idat("Ann", "Same"));
    b.idat = Some(idat("Anne", "Same"));
    let other = record("case-3", 8);
    store
        .insert_records(&[a.clone(), b.clone(), other])
        .expect("insert");
    // Ordered by local id.
    assert_eq!(
        store.records_by_bloom_filter(&filter(7)).expect("lookup"),
        vec![b, a]
    );
    assert!(
        store
            .records_by_bloom_filter(&filter(9))
            .expect("lookup")
            .is_empty()
    );
    assert!(
        store
            .records_by_bloom_filter(&[])
            .expect("lookup")
            .is_empty()
    );
}

#[test]
fn pseudonym_index_follows_updates() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut a = record("case-a", 1);
    let mut b = record("case-b", 2);
    store
        .insert_records(&[a.clone(), b.clone()])
        .expect("insert");
    assert_eq!(store.record_by_pseudonym("psn-x").expect("lookup"), None);

    // Set.
    a.head.pseudonym = Some("psn-x".to_string());
    a.head.state = RecordState::Pseudonymised;
    store
        .update_records(std::slice::from_ref(&a))
        .expect("update");
    assert_eq!(
        store.record_by_pseudonym("psn-x").expect("lookup"),
        Some(a.clone())
    );

    // Changed: the old pseudonym no longer finds it.
    a.head.pseudonym = Some("psn-y".to_string());
    store
        .update_records(std::slice::from_ref(&a))
        .expect("update");
    assert_eq!(store.record_by_pseudonym("psn-x").expect("lookup"), None);
    assert_eq!(
        store.record_by_pseudonym("psn-y").expect("lookup"),
        Some(a.clone())
    );

    // Shared by two records (one patient, two cases): both found, smallest id first.
    b.head.pseudonym = Some("psn-y".to_string());
    store
        .update_records(std::slice::from_ref(&b))
        .expect("update");
    assert_eq!(
        store.records_by_pseudonym("psn-y").expect("lookup"),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.record_by_pseudonym("psn-y").expect("lookup"),
        Some(a.clone())
    );

    // Cleared.
    a.head.pseudonym = None;
    store
        .update_records(std::slice::from_ref(&a))
        .expect("update");
    assert_eq!(
        store.records_by_pseudonym("psn-y").expect("lookup"),
        vec![b.clone()]
    );

    // A changed filter is re-indexed too.
    b.head.bloom_filter = filter(77);
    store
        .update_records(std::slice::from_ref(&b))
        .expect("update");
    assert!(
        store
            .records_by_bloom_filter(&filter(2))
            .expect("lookup")
            .is_empty()
    );
    assert_eq!(
        store.records_by_bloom_filter(&filter(77)).expect("lookup"),
        vec![b]
    );

    let report = store.check_integrity().expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn update_of_an_unknown_record_changes_nothing() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut a = record("case-a", 1);
    store
        .insert_records(std::slice::from_ref(&a))
        .expect("insert");
    a.head.state = RecordState::AwaitingClearing;
    let ghost = record("case-ghost", 2);
    let err = store
        .update_records(&[a, ghost])
        .expect_err("unknown record");
    assert!(
        matches!(&err, StoreError::UnknownRecord { local_id } if local_id == "case-ghost"),
        "{err:?}"
    );
    // Atomic: the first record was not updated either.
    assert_eq!(
        store
            .get_record("case-a")
            .expect("get")
            .map(|r| r.head.state),
        Some(RecordState::New)
    );
}

#[test]
fn counters_track_states_pseudonyms_and_purges() {
    let ts = TempStore::new();
    let store = ts.open();
    let recs: Vec<_> = (0..10).map(|i| record(&format!("case-{i}"), i)).collect();
    store.insert_records(&recs).expect("insert");
    assert_eq!(
        store.record_counts().expect("counts"),
        RecordCounts {
            total: 10,
            new: 10,
            ..RecordCounts::default()
        }
    );

    let mut changed = recs.clone();
    for (i, r) in changed.iter_mut().enumerate() {
        r.head.state = match i {
            0..=2 => RecordState::Sending { batch: 1 },
            3 => RecordState::AwaitingClearing,
            4..=7 => RecordState::Pseudonymised,
            _ => RecordState::Rejected {
                code: "E".to_string(),
            },
        };
        if (4..=7).contains(&i) {
            r.head.pseudonym = Some(format!("psn-{i}"));
        }
    }
    changed[9].idat = None;
    store.update_records(&changed).expect("update");
    let expected = RecordCounts {
        total: 10,
        new: 0,
        sending: 3,
        awaiting_clearing: 1,
        pseudonymised: 4,
        rejected: 2,
        with_pseudonym: 4,
        idat_purged: 1,
    };
    assert_eq!(store.record_counts().expect("counts"), expected);
    drop(store);
    let store = ts.open();
    assert_eq!(store.record_counts().expect("counts"), expected);
    assert!(store.check_integrity().expect("check").is_ok());
}

#[test]
fn records_in_states_filters_by_state() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut recs: Vec<_> = (0..6).map(|i| record(&format!("case-{i}"), i)).collect();
    recs[1].head.state = RecordState::Sending { batch: 3 };
    recs[4].head.state = RecordState::Sending { batch: 4 };
    recs[5].head.state = RecordState::Pseudonymised;
    store.insert_records(&recs).expect("insert");
    let resume = store
        .records_in_states(|s| matches!(s, RecordState::New | RecordState::Sending { .. }))
        .expect("scan");
    let ids: Vec<&str> = resume.iter().map(|r| r.head.local_id.as_str()).collect();
    assert_eq!(ids, ["case-0", "case-1", "case-2", "case-3", "case-4"]);
    assert_eq!(resume[1], recs[1]);
}

#[test]
fn purge_idat_drops_only_old_finished_records_not_kept() {
    let ts = TempStore::new();
    let store = ts.open();
    let old = t("2024-01-01T00:00:00Z");
    let recent = t("2025-06-01T00:00:00Z");
    let cutoff = t("2025-01-01T00:00:00Z");
    let mut recs: Vec<_> = (0..6).map(|i| record(&format!("case-{i}"), i)).collect();
    // 0: pseudonymised, old -> purged
    // 1: rejected, old -> purged
    // 2: pseudonymised, recent -> kept (too new)
    // 3: awaiting clearing, old -> kept (not finished)
    // 4: pseudonymised, old, but keep() says so -> kept
    // 5: pseudonymised, old, IDAT already gone -> not counted again
    for (i, r) in recs.iter_mut().enumerate() {
        r.head.state = match i {
            1 => RecordState::Rejected {
                code: "E".to_string(),
            },
            3 => RecordState::AwaitingClearing,
            _ => RecordState::Pseudonymised,
        };
        r.head.updated_at = if i == 2 { recent } else { old };
    }
    recs[5].idat = None;
    store.insert_records(&recs).expect("insert");

    let purged = store
        .purge_idat(cutoff, |r| r.head.local_id == "case-4")
        .expect("purge");
    assert_eq!(purged, 2);
    let idat_of = |id: &str| store.get_record(id).expect("get").expect("exists").idat;
    assert_eq!(idat_of("case-0"), None);
    assert_eq!(idat_of("case-1"), None);
    assert!(idat_of("case-2").is_some());
    assert!(idat_of("case-3").is_some());
    assert!(idat_of("case-4").is_some());
    // Everything else about a purged record stays.
    let r0 = store.get_record("case-0").expect("get").expect("exists");
    assert_eq!(r0.head.updated_at, old);
    assert_eq!(r0.head.bloom_filter, recs[0].head.bloom_filter);
    assert_eq!(store.record_counts().expect("counts").idat_purged, 3);
    // Nothing left to purge.
    assert_eq!(store.purge_idat(cutoff, |_| false).expect("purge"), 1);
    assert_eq!(store.purge_idat(cutoff, |_| false).expect("purge"), 0);
    assert!(store.check_integrity().expect("check").is_ok());
}

#[test]
fn idat_is_not_stored_in_clear() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut r = record("case-secret", 1);
    r.idat = Some(idat("Quxzelbrimwort", "Vrondelsnapper"));
    // A value stored in clear on purpose proves the search below can find things.
    r.head.pseudonym = Some("PSN-CANARY-5317".to_string());
    store
        .insert_records(std::slice::from_ref(&r))
        .expect("insert");
    // Also through an update (re-sealed).
    r.head.state = RecordState::Pseudonymised;
    store
        .update_records(std::slice::from_ref(&r))
        .expect("update");
    store.flush().expect("flush");
    drop(store);
    assert!(bytes_on_disk_contain(ts.path(), b"PSN-CANARY-5317"));
    assert!(!bytes_on_disk_contain(ts.path(), b"Quxzelbrimwort"));
    assert!(!bytes_on_disk_contain(ts.path(), b"Vrondelsnapper"));
    let store = ts.open();
    assert_eq!(store.get_record("case-secret").expect("get"), Some(r));
}

#[test]
fn wrong_key_is_refused_at_open() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("case-1", 1)])
        .expect("insert");
    drop(store);
    let mut wrong = ts.opts.clone();
    wrong.idat_key = ttp_agent::store::IdatKey::generate();
    let err = Store::open(&wrong).expect_err("wrong key");
    assert!(matches!(err, StoreError::WrongKey), "{err:?}");
    // The right key still works: the failed open changed nothing.
    assert!(ts.open().get_record("case-1").expect("get").is_some());
}

#[test]
fn wrong_key_is_refused_even_without_a_key_check() {
    // A store whose key check is missing (as if written before there was one) is verified
    // against its sealed IDAT instead of adopting whatever key is configured.
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("case-1", 1)])
        .expect("insert");
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        let meta = db.open_tree("meta").expect("meta");
        assert!(meta.remove("key_check").expect("remove").is_some());
        db.flush().expect("flush");
    }
    let mut wrong = ts.opts.clone();
    wrong.idat_key = ttp_agent::store::IdatKey::generate();
    assert!(matches!(Store::open(&wrong), Err(StoreError::WrongKey)));
    // The right key re-creates the check and reads the record.
    assert!(ts.open().get_record("case-1").expect("get").is_some());
    assert!(matches!(Store::open(&wrong), Err(StoreError::WrongKey)));
}

#[test]
fn sealed_idat_moved_to_another_record_fails_authentication() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("case-1", 1), record("case-2", 2)])
        .expect("insert");
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        let records = db.open_tree("records").expect("records");
        let v1 = records.get("case-1").expect("get").expect("exists");
        records.insert("case-2", v1).expect("insert");
        db.flush().expect("flush");
    }
    let store = ts.open();
    assert!(store.get_record("case-1").expect("get").is_some());
    let err = store.get_record("case-2").expect_err("moved IDAT");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(!err.to_string().contains("Synthetica"), "{err}");
    assert!(!store.check_integrity().expect("check").is_ok());
}

#[test]
fn counts_are_cheap_and_survive_many_batches() {
    let ts = TempStore::new();
    let store = ts.open();
    // More than one insert transaction (512 records each).
    let recs: Vec<_> = (0..1300)
        .map(|i| record(&format!("case-{i:05}"), i))
        .collect();
    let outcomes = store.insert_records(&recs).expect("insert");
    assert_eq!(outcomes.len(), 1300);
    assert_eq!(store.record_counts().expect("counts").total, 1300);
    assert_eq!(
        store
            .records_by_bloom_filter(&filter(1299))
            .expect("lookup")[0]
            .head
            .local_id,
        "case-01299"
    );
    assert!(store.check_integrity().expect("check").is_ok());
}

#[test]
fn integrity_check_finds_index_and_counter_drift() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut a = record("case-a", 1);
    a.head.pseudonym = Some("psn-a".to_string());
    store
        .insert_records(&[a, record("case-b", 2)])
        .expect("insert");
    assert!(store.check_integrity().expect("check").is_ok());
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        // One stale filter entry, one missing pseudonym entry, counters off.
        db.open_tree("idx_bf")
            .expect("tree")
            .insert([7u8; 20], [])
            .expect("insert");
        db.open_tree("idx_psn")
            .expect("tree")
            .clear()
            .expect("clear");
        db.open_tree("counts")
            .expect("tree")
            .insert("records", &[0u8; 64][..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let report = ts.open().check_integrity().expect("check");
    assert_eq!(report.records, 2);
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("1 stale")));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("pseudonym index lacks"))
    );
    assert!(report.problems.iter().any(|p| p.contains("counters")));
}

/// The sealed IDAT inside a raw record value (postcard: filter as varint length + bytes, then
/// `Some` = 1 + varint length + bytes).
fn sealed_part(value: &[u8]) -> Vec<u8> {
    fn varint(bytes: &[u8]) -> (usize, usize) {
        let mut n = 0usize;
        for (i, b) in bytes.iter().enumerate() {
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (n, i + 1);
            }
        }
        panic!("unterminated varint");
    }
    let (filter_len, used) = varint(value);
    let rest = &value[used + filter_len..];
    assert_eq!(rest[0], 1, "the record holds sealed IDAT");
    let (sealed_len, used) = varint(&rest[1..]);
    rest[1 + used..1 + used + sealed_len].to_vec()
}

#[test]
fn head_updates_keep_the_sealed_idat_bytes_and_the_derived_data_right() {
    let ts = TempStore::new();
    let store = ts.open();
    let a = record("case-a", 1);
    let b = record("case-b", 2);
    store
        .insert_records(&[a.clone(), b.clone()])
        .expect("insert");
    store.flush().expect("flush");
    drop(store);
    let raw_value = |local_id: &str| {
        let db = raw_db(ts.path());
        let value = db
            .open_tree("records")
            .expect("tree")
            .get(local_id)
            .expect("read")
            .expect("stored");
        value.to_vec()
    };
    let sealed_before = sealed_part(&raw_value("case-a"));

    let store = ts.open();
    let mut heads = store
        .record_heads_in_states(|s| *s == RecordState::New)
        .expect("heads");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0], a.head.clone());
    heads[0].state = RecordState::Pseudonymised;
    heads[0].pseudonym = Some("psn-a".to_string());
    heads[0].updated_at = t("2025-03-04T05:06:07Z");
    heads[1].state = RecordState::Sending { batch: 9 };
    store.update_record_heads(&heads).expect("update");

    let stored_a = store.get_record("case-a").expect("get").expect("stored");
    assert_eq!(
        stored_a,
        LocalRecord {
            head: heads[0].clone(),
            ..a.clone()
        }
    );
    assert_eq!(
        store.record_by_pseudonym("psn-a").expect("lookup"),
        Some(stored_a)
    );
    let log = store.pseudonym_events_after(0, 10).expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    let counts = store.record_counts().expect("counts");
    assert_eq!(
        (
            counts.new,
            counts.sending,
            counts.pseudonymised,
            counts.with_pseudonym
        ),
        (0, 1, 1, 1)
    );
    assert!(store.check_integrity().expect("check").is_ok());

    // Refused, and nothing written: a changed filter, an unknown record.
    let mut changed = heads[1].clone();
    changed.bloom_filter = filter(77);
    changed.state = RecordState::AwaitingClearing;
    let err = store
        .update_record_heads(&[changed])
        .expect_err("changed filter");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let mut ghost = b.head.clone();
    ghost.local_id = "case-ghost".to_string();
    let mut first = heads[1].clone();
    first.state = RecordState::AwaitingClearing;
    let err = store
        .update_record_heads(&[first, ghost])
        .expect_err("unknown record");
    assert!(
        matches!(&err, StoreError::UnknownRecord { local_id } if local_id == "case-ghost"),
        "{err:?}"
    );
    assert_eq!(
        store
            .get_record("case-b")
            .expect("get")
            .map(|r| r.head.state),
        Some(RecordState::Sending { batch: 9 })
    );

    store.flush().expect("flush");
    drop(store);
    assert_eq!(
        sealed_part(&raw_value("case-a")),
        sealed_before,
        "the sealed IDAT is kept byte for byte (not sealed again)"
    );
}

/// `purge_idat` reads `idx_idat_due` (the finished records still holding IDAT, by
/// `updated_at`), not every record: the index follows every kind of record write, and a record
/// missing from it is not purged — which `check --store` reports.
#[test]
fn the_idat_purge_index_follows_every_write_and_is_what_the_purge_reads() {
    let ts = TempStore::new();
    let store = ts.open();
    let old = t("2024-01-01T00:00:00Z");
    let cutoff = t("2025-01-01T00:00:00Z");
    let mut recs: Vec<_> = (0..5).map(|i| record(&format!("case-{i}"), i)).collect();
    for r in &mut recs {
        r.head.updated_at = old;
    }
    // Inserted finished (a restore-like import): indexed at once.
    recs[0].head.state = RecordState::Pseudonymised;
    store.insert_records(&recs).expect("insert");
    assert!(store.check_integrity().expect("check").is_ok());

    // Finished by registration's head update, and by a full update.
    let mut head = support::store::pseudonymised_head(&recs[1]);
    head.updated_at = old;
    store.update_record_heads(&[head]).expect("heads");
    let mut rejected = recs[2].clone();
    rejected.head.state = RecordState::Rejected {
        code: "E".to_string(),
    };
    store.update_records(&[rejected]).expect("update");
    // Taken out of a finished state again (a person re-opens it): out of the index.
    let mut reopened = recs[0].clone();
    reopened.head.state = RecordState::AwaitingClearing;
    store.update_records(&[reopened]).expect("update");
    // Finished recently: indexed, but not due.
    let mut recent = recs[3].clone();
    recent.head.state = RecordState::Pseudonymised;
    recent.head.updated_at = t("2025-06-01T00:00:00Z");
    store.update_records(&[recent]).expect("update");
    assert!(store.check_integrity().expect("check").is_ok());

    assert_eq!(store.purge_idat(cutoff, |_| false).expect("purge"), 2);
    let idat_of = |s: &Store, id: &str| s.get_record(id).expect("get").expect("exists").idat;
    assert_eq!(idat_of(&store, "case-1"), None);
    assert_eq!(idat_of(&store, "case-2"), None);
    for kept in ["case-0", "case-3", "case-4"] {
        assert!(idat_of(&store, kept).is_some(), "{kept}");
    }
    assert!(store.check_integrity().expect("check").is_ok());

    // A finished old record the index does not list is not read by the purge.
    let mut due = recs[4].clone();
    due.head.state = RecordState::Pseudonymised;
    store.update_records(&[due]).expect("update");
    drop(store);
    {
        let db = raw_db(ts.path());
        db.open_tree("idx_idat_due")
            .expect("tree")
            .clear()
            .expect("clear");
        db.flush().expect("flush");
    }
    let store = ts.open();
    assert_eq!(store.purge_idat(cutoff, |_| false).expect("purge"), 0);
    assert!(idat_of(&store, "case-4").is_some());
    let report = store.check_integrity().expect("check");
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.contains("IDAT purge index lacks"))
    );
}

/// Registration reads `idx_waiting_records` (records in `New`, `Sending` or
/// `AwaitingClearing`, by state and last update), not every record: the index follows every
/// kind of record write, the clearing recheck asks only for records quiet long enough, and a
/// record missing from the index is not read — which `check --store` reports.
#[test]
fn registration_reads_only_the_records_that_wait() {
    let ts = TempStore::new();
    let store = ts.open();
    let early = t("2025-01-01T00:00:00Z");
    let late = t("2025-03-01T00:00:00Z");
    let mut recs: Vec<_> = (0..6).map(|i| record(&format!("case-{i}"), i)).collect();
    recs[1].head.state = RecordState::Sending { batch: 7 };
    recs[2].head.state = RecordState::AwaitingClearing;
    recs[2].head.updated_at = early;
    recs[3].head.state = RecordState::AwaitingClearing;
    recs[3].head.updated_at = late;
    recs[4].head.state = RecordState::Pseudonymised;
    // Inserted in an order that is neither local id nor time order.
    let order = [5, 3, 0, 4, 2, 1];
    let shuffled: Vec<_> = order.iter().map(|&i| recs[i].clone()).collect();
    store.insert_records(&shuffled).expect("insert");
    let ids = |heads: Vec<ttp_agent::domain::RecordHead>| -> Vec<String> {
        heads.into_iter().map(|h| h.local_id).collect()
    };
    assert_eq!(
        ids(store.record_heads_to_register().expect("to register")),
        ["case-0", "case-1", "case-5"]
    );
    // The recheck asks for the records last updated at or before its moment, inclusive.
    assert_eq!(
        ids(store
            .record_heads_awaiting_clearing(early - chrono::Duration::nanoseconds(1))
            .expect("quiet")),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(store.record_heads_awaiting_clearing(early).expect("quiet")),
        ["case-2"]
    );
    assert_eq!(
        ids(store.record_heads_awaiting_clearing(late).expect("quiet")),
        ["case-2", "case-3"]
    );
    // The heads are what the records hold (filter unsealed, no IDAT).
    let heads = store.record_heads_to_register().expect("to register");
    assert_eq!(heads[1], recs[1].head);
    assert!(store.check_integrity().expect("check").is_ok());

    // Registration's head update and a full update move records between states and out.
    let mut sending = recs[0].head.clone();
    sending.state = RecordState::Sending { batch: 8 };
    let mut clearing = recs[1].head.clone();
    clearing.state = RecordState::AwaitingClearing;
    clearing.updated_at = early;
    store
        .update_record_heads(&[sending, support::store::pseudonymised_head(&recs[5])])
        .expect("heads");
    store.update_record_heads(&[clearing]).expect("heads");
    let mut again = recs[3].clone();
    again.head.state = RecordState::New;
    store.update_records(&[again]).expect("update");
    assert_eq!(
        ids(store.record_heads_to_register().expect("to register")),
        ["case-0", "case-3"]
    );
    assert_eq!(
        ids(store.record_heads_awaiting_clearing(late).expect("quiet")),
        ["case-1", "case-2"]
    );
    assert!(store.check_integrity().expect("check").is_ok());
    drop(store);

    // A waiting record the index does not list is not read.
    {
        let db = raw_db(ts.path());
        db.open_tree("idx_waiting_records")
            .expect("tree")
            .clear()
            .expect("clear");
        db.flush().expect("flush");
    }
    let store = ts.open();
    assert!(
        store
            .record_heads_to_register()
            .expect("to register")
            .is_empty()
    );
    assert!(
        store
            .record_heads_awaiting_clearing(late)
            .expect("quiet")
            .is_empty()
    );
    let report = store.check_integrity().expect("check");
    assert_eq!(report.problems.len(), 4, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.contains("waiting-records index lacks"))
    );
}
