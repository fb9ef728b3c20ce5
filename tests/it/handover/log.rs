//! The pseudonym log and hand-over cursors in the store: what is logged, when, in which order,
//! the schema 2 back-fill, backup/restore, and guarded manual changes with their audit entries.

use crate::support;
use crate::support::store::{TempStore, raw_db, record, t, task};
use ttp_agent::domain::{RecordState, TaskState};
use ttp_agent::store::HandoverConsumer::{Export, Webhook};
use ttp_agent::store::{AuditEntry, CURRENT_SCHEMA, PsnEvent, Store, StoreError, StoreOptions};

fn pseudonymise(store: &Store, local_id: &str, psn: &str, at: &str) {
    let mut rec = store
        .get_record(local_id)
        .expect("reads")
        .expect("record exists");
    rec.head.assign_pseudonym(psn, t(at));
    store.update_records(&[rec]).expect("updates");
}

fn summary(events: &[PsnEvent]) -> Vec<(u64, &str, &str)> {
    events
        .iter()
        .map(|e| (e.seq, e.local_id.as_str(), e.pseudonym.as_str()))
        .collect()
}

fn audit(action: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        at: t("2025-03-01T10:00:00Z"),
        actor: "tester".into(),
        action: action.into(),
        subject: subject.into(),
        detail: String::new(),
    }
}

#[test]
fn a_new_pseudonym_is_logged_once_in_order_and_a_repeat_is_not() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("a", 1), record("b", 2), record("c", 3)])
        .expect("inserts");
    assert_eq!(store.pseudonym_log_head().expect("head"), 0);

    pseudonymise(&store, "b", "psn-b", "2025-03-01T00:00:01Z");
    pseudonymise(&store, "a", "psn-a", "2025-03-01T00:00:02Z");
    // The same pseudonym again (a repeated task) changes nothing.
    pseudonymise(&store, "b", "psn-b", "2025-03-01T00:00:03Z");
    // A state change without a pseudonym is not an event.
    let mut c = store.get_record("c").expect("reads").expect("exists");
    c.head.state = RecordState::AwaitingClearing;
    store.update_records(&[c]).expect("updates");

    let events = store.pseudonym_events_after(0, 100).expect("reads");
    assert_eq!(summary(&events), [(1, "b", "psn-b"), (2, "a", "psn-a")]);
    assert_eq!(events[0].obtained_at, t("2025-03-01T00:00:01Z"));
    assert_eq!(store.pseudonym_log_head().expect("head"), 2);
    assert_eq!(
        summary(&store.pseudonym_events_after(1, 100).expect("reads")),
        [(2, "a", "psn-a")]
    );
    assert_eq!(
        summary(&store.pseudonym_events_after(0, 1).expect("reads")).len(),
        1
    );
    assert!(
        store
            .pseudonym_events_after(u64::MAX, 10)
            .expect("reads")
            .is_empty()
    );
    // The pseudonym is not in the event's Debug output.
    assert!(!format!("{:?}", events[0]).contains("psn-b"));
}

#[test]
fn a_record_inserted_with_a_pseudonym_is_logged() {
    let ts = TempStore::new();
    let store = ts.open();
    let mut rec = record("x", 9);
    rec.head.pseudonym = Some("psn-x".into());
    rec.head.state = RecordState::Pseudonymised;
    store.insert_records(&[rec.clone()]).expect("inserts");
    // Inserting it again is `Unchanged` and logs nothing.
    store.insert_records(&[rec]).expect("inserts");
    let events = store.pseudonym_events_after(0, 10).expect("reads");
    assert_eq!(summary(&events), [(1, "x", "psn-x")]);
}

#[test]
fn a_failed_update_logs_nothing() {
    let ts = TempStore::new();
    let store = ts.open();
    store.insert_records(&[record("a", 1)]).expect("inserts");
    let mut a = store.get_record("a").expect("reads").expect("exists");
    a.head.assign_pseudonym("psn-a", t("2025-03-01T00:00:00Z"));
    let mut unknown = record("missing", 2);
    unknown.head.pseudonym = Some("psn-m".into());
    // One transaction: the unknown record aborts the whole call, the log included.
    let err = store.update_records(&[a, unknown]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecord { .. }), "{err}");
    assert_eq!(store.pseudonym_log_head().expect("head"), 0);
    assert!(
        store
            .pseudonym_events_after(0, 10)
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        store
            .get_record("a")
            .expect("reads")
            .expect("exists")
            .head
            .pseudonym,
        None
    );
}

#[test]
fn cursors_are_per_consumer_persistent_and_bounded_by_the_head() {
    let ts = TempStore::new();
    {
        let store = ts.open();
        store
            .insert_records(&[record("a", 1), record("b", 2)])
            .expect("inserts");
        pseudonymise(&store, "a", "psn-a", "2025-03-01T00:00:01Z");
        pseudonymise(&store, "b", "psn-b", "2025-03-01T00:00:02Z");
        assert_eq!(store.export_cursor(Export).expect("reads"), 0);
        assert_eq!(store.pending_events(Export).expect("reads"), 2);
        store.set_export_cursor(Export, 1).expect("sets");
        assert_eq!(store.pending_events(Export).expect("reads"), 1);
        assert_eq!(store.pending_events(Webhook).expect("reads"), 2);
        let err = store.set_export_cursor(Export, 3).unwrap_err();
        assert!(err.to_string().contains("beyond"), "{err}");
        store.flush().expect("flushes");
    }
    let store = ts.open();
    assert_eq!(store.export_cursor(Export).expect("reads"), 1);
    assert_eq!(store.export_cursor(Webhook).expect("reads"), 0);
}

#[test]
fn opening_a_schema_1_store_back_fills_the_log_from_pseudonymised_records() {
    let ts = TempStore::new();
    {
        let store = ts.open();
        store
            .insert_records(&[record("r1", 1), record("r2", 2), record("r3", 3)])
            .expect("inserts");
        pseudonymise(&store, "r3", "psn-3", "2025-03-01T00:00:01Z");
        pseudonymise(&store, "r1", "psn-1", "2025-03-01T00:00:02Z");
        store.flush().expect("flushes");
    }
    {
        // Turn it into what schema 1 wrote: no log, no counter.
        let db = raw_db(ts.path());
        db.drop_tree("psn_log").expect("drops");
        let meta = db.open_tree("meta").expect("meta");
        meta.remove("psn_seq").expect("removes");
        meta.insert("schema_version", 1u64.to_be_bytes())
            .expect("sets");
        db.flush().expect("flushes");
    }
    let store = ts.open();
    assert_eq!(store.schema_version().expect("version"), CURRENT_SCHEMA);
    let events = store.pseudonym_events_after(0, 10).expect("reads");
    // Back-filled in local-id order, with the record's last update as the time.
    assert_eq!(summary(&events), [(1, "r1", "psn-1"), (2, "r3", "psn-3")]);
    assert_eq!(events[1].obtained_at, t("2025-03-01T00:00:01Z"));
    // New events continue the sequence.
    pseudonymise(&store, "r2", "psn-2", "2025-03-02T00:00:00Z");
    assert_eq!(store.pseudonym_log_head().expect("head"), 3);
    assert!(store.check_integrity().expect("checks").is_ok());
}

#[test]
fn backup_and_restore_keep_the_log_and_the_cursors() {
    let ts = TempStore::new();
    let backup = ts.sibling("store.backup");
    {
        let store = ts.open();
        store.insert_records(&[record("a", 1)]).expect("inserts");
        pseudonymise(&store, "a", "psn-a", "2025-03-01T00:00:01Z");
        store.set_export_cursor(Webhook, 1).expect("sets");
        store.backup_to(&backup).expect("backs up");
    }
    let target = StoreOptions {
        path: ts.sibling("restored"),
        ..ts.opts.clone()
    };
    Store::restore_from(&backup, &target).expect("restores");
    let restored = Store::open(&target).expect("opens");
    assert_eq!(
        summary(&restored.pseudonym_events_after(0, 10).expect("reads")),
        [(1, "a", "psn-a")]
    );
    assert_eq!(restored.export_cursor(Webhook).expect("reads"), 1);
}

#[test]
fn a_guarded_task_change_is_written_with_its_audit_entry_or_not_at_all() {
    let ts = TempStore::new();
    let store = ts.open();
    let before = task(
        "task-1",
        support::store::dic_psn(1),
        TaskState::NeedsAttention {
            reason: ttp_agent::domain::Attention::UnknownRecord,
        },
    );
    store
        .put_tasks(std::slice::from_ref(&before))
        .expect("puts");
    let mut after = before.clone();
    after.state = TaskState::Received;
    assert!(
        store
            .replace_task_audited(&before, &after, &audit("resolve-retry", "task-1"))
            .expect("writes")
    );
    assert_eq!(
        store.get_task(&before.key).expect("reads"),
        Some(after.clone())
    );
    // `before` is stale now: nothing is written, no audit entry either.
    let mut other = before.clone();
    other.state = TaskState::Done {
        at: t("2025-03-01T00:00:00Z"),
    };
    assert!(
        !store
            .replace_task_audited(&before, &other, &audit("resolve-handled", "task-1"))
            .expect("runs")
    );
    assert_eq!(store.get_task(&before.key).expect("reads"), Some(after));
    let trail = store.audit().expect("reads");
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].action, "resolve-retry");
    assert_eq!(store.recent_audit(5).expect("reads"), trail);
}

#[test]
fn a_guarded_record_change_notices_a_concurrent_pseudonym() {
    let ts = TempStore::new();
    let store = ts.open();
    store.insert_records(&[record("a", 1)]).expect("inserts");
    let read = store.get_record("a").expect("reads").expect("exists");
    // The daemon assigns a pseudonym between the operator's read and write.
    pseudonymise(&store, "a", "psn-a", "2025-03-01T00:00:01Z");
    let mut changed = read.clone();
    changed.head.updated_at = t("2025-03-01T00:00:02Z");
    assert!(
        !store
            .update_record_audited(&read, &changed, &audit("add-element", "a"))
            .expect("runs")
    );
    let now = store.get_record("a").expect("reads").expect("exists");
    assert_eq!(now.head.pseudonym.as_deref(), Some("psn-a"));
    assert!(store.audit().expect("reads").is_empty());
    // From the current record it succeeds, with the audit entry.
    let mut changed = now.clone();
    changed.head.updated_at = t("2025-03-01T00:00:03Z");
    assert!(
        store
            .update_record_audited(&now, &changed, &audit("add-element", "a"))
            .expect("writes")
    );
    assert_eq!(store.audit().expect("reads").len(), 1);
    assert_eq!(store.pseudonym_log_head().expect("head"), 1);
}

#[test]
fn the_integrity_check_notices_a_gap_in_the_log() {
    let ts = TempStore::new();
    {
        let store = ts.open();
        store
            .insert_records(&[record("a", 1), record("b", 2)])
            .expect("inserts");
        pseudonymise(&store, "a", "psn-a", "2025-03-01T00:00:01Z");
        pseudonymise(&store, "b", "psn-b", "2025-03-01T00:00:02Z");
        assert!(store.check_integrity().expect("checks").is_ok());
        store.flush().expect("flushes");
    }
    {
        let db = raw_db(ts.path());
        let log = db.open_tree("psn_log").expect("log");
        log.remove(1u64.to_be_bytes()).expect("removes");
        db.flush().expect("flushes");
    }
    let report = ts.open().check_integrity().expect("checks");
    assert!(
        report.problems.iter().any(|p| p.contains("pseudonym log")),
        "{:?}",
        report.problems
    );
}
