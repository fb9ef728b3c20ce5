//! The disclosure log in the store (issue 15, item 4): written with the task's outcome from
//! what the intent recorded, settled after doubt, append-only, its chain verified; kept by
//! backups and never purged by the task retention.

use std::collections::BTreeMap;

use crate::support::store::{TempStore, send_idat, t, task};
use ttp_agent::domain::{Disclosure, DisclosureEvent, TaskRecord, TaskState};
use ttp_agent::store::{Store, StoreOptions};
use ttp_proto::IdatElement::*;

fn disclosure(local_id: &str) -> Disclosure {
    Disclosure {
        study: "study-x".into(),
        local_id: local_id.into(),
        sent: vec![Given, Family],
        withheld: vec![Birthdate],
        missing: vec![Degree],
    }
}

fn send(id: &str, state: TaskState) -> TaskRecord {
    task(&format!("send_idat/{id}"), send_idat(id), state)
}

/// Writes the intent of `id` (as the dispatcher does), then each of `states` in turn.
fn run(store: &Store, id: &str, local_id: &str, states: &[TaskState]) {
    store.put_tasks([&send(id, TaskState::Received)]).unwrap();
    let intent = BTreeMap::from([(format!("send_idat/{id}"), disclosure(local_id))]);
    store
        .put_tasks_disclosing([&send(id, TaskState::Running)], &intent)
        .unwrap();
    for state in states {
        store.put_tasks([&send(id, state.clone())]).unwrap();
    }
}

fn done() -> TaskState {
    TaskState::Done {
        at: t("2025-02-01T01:00:00Z"),
    }
}

fn events(store: &Store) -> Vec<(String, DisclosureEvent, Option<u64>)> {
    store
        .disclosures_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.task_id, e.event, e.settles))
        .collect()
}

#[test]
fn accepted_and_in_doubt_answers_are_logged_with_their_settlement_and_nothing_else() {
    let ts = TempStore::new();
    let store = ts.open();
    use DisclosureEvent::*;
    run(&store, "a", "case-1", &[done()]);
    // Lost answer, then absent from the listing: accepted.
    run(&store, "b", "case-2", &[TaskState::InDoubt, done()]);
    // In doubt, listed again, sent again and accepted.
    run(
        &store,
        "c",
        "case-3",
        &[TaskState::InDoubt, TaskState::Received],
    );
    run(&store, "c", "case-3", &[done()]);
    // Not accepted: refused for good, or retried.
    run(
        &store,
        "d",
        "case-4",
        &[TaskState::RetryWait {
            next_at: t("2025-02-01T02:00:00Z"),
        }],
    );
    // In doubt until the deadline.
    run(
        &store,
        "e",
        "case-5",
        &[
            TaskState::InDoubt,
            TaskState::InDoubt,
            TaskState::Expired {
                at: t("2025-02-03T00:00:00Z"),
            },
        ],
    );
    // An intent without a disclosure (the answer could not be prepared) logs nothing.
    store.put_tasks([&send("f", TaskState::Running)]).unwrap();
    store.put_tasks([&send("f", done())]).unwrap();
    assert_eq!(
        events(&store),
        vec![
            ("a".into(), Accepted, None),
            ("b".into(), InDoubt, None),
            ("b".into(), SettledAccepted, Some(2)),
            ("c".into(), InDoubt, None),
            ("c".into(), SettledSentAgain, Some(4)),
            ("c".into(), Accepted, None),
            ("e".into(), InDoubt, None),
            ("e".into(), SettledExpired, Some(7)),
        ]
    );
    let first = &store.disclosures_after(0, 1).unwrap()[0];
    assert_eq!(
        (
            first.seq,
            first.study.as_str(),
            first.local_id.as_str(),
            first.sent.clone(),
            first.withheld.clone(),
            first.missing.clone()
        ),
        (
            1,
            "study-x",
            "case-1",
            vec![Given, Family],
            vec![Birthdate],
            vec![Degree]
        )
    );
    let check = store.verify_disclosures().unwrap();
    assert_eq!((check.entries, check.broken), (8, None));
    assert!(store.check_integrity().unwrap().is_ok());

    // Kept by a backup, and not purged with the finished tasks.
    assert_eq!(
        store
            .purge_finished_tasks(t("2030-01-01T00:00:00Z"))
            .unwrap(),
        5
    );
    assert_eq!(events(&store).len(), 8);
    let file = ts.sibling("backup");
    store.backup_to(&file).unwrap();
    let target = StoreOptions::new(ts.sibling("restored"), ts.opts.idat_key.clone());
    Store::restore_from(&file, &target).unwrap();
    let restored = Store::open(&target).unwrap();
    assert_eq!(events(&restored), events(&store));
    assert_eq!(restored.verify_disclosures().unwrap().broken, None);
    // The chain goes on after a restore.
    run(&restored, "g", "case-7", &[done()]);
    assert_eq!(restored.verify_disclosures().unwrap().entries, 9);
}

#[test]
fn verify_names_an_edited_entry_a_removed_one_and_a_cut_off_end() {
    let ts = TempStore::new();
    let store = ts.open();
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        run(&store, id, &format!("case-{i}"), &[done()]);
    }
    assert_eq!(store.verify_disclosures().unwrap().broken, None);

    // Someone edits entry 2's local id in the file.
    let original = store.raw_disclosure(2).unwrap().unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let edited = text.replace("case-1", "case-9");
    assert_ne!(edited, text);
    store
        .tamper_with_disclosure(2, Some(edited.as_bytes()))
        .unwrap();
    let check = store.verify_disclosures().unwrap();
    let link = check.broken.expect("the edit is found");
    assert_eq!((link.seq, check.entries), (2, 1), "{link:?}");
    assert!(link.why.contains("entry 2 was changed"), "{link:?}");
    // `check --store` reports it too.
    let report = store.check_integrity().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("disclosure log: broken at entry 2: entry 2 was changed")),
        "{:?}",
        report.problems
    );

    // Undone, the chain holds again; a replaced entry before another is named.
    store.tamper_with_disclosure(2, Some(&original)).unwrap();
    assert_eq!(store.verify_disclosures().unwrap().broken, None);
    let third = store.raw_disclosure(3).unwrap().unwrap();
    store.tamper_with_disclosure(2, Some(&third)).unwrap();
    let link = store.verify_disclosures().unwrap().broken.unwrap();
    assert_eq!(link.seq, 2, "{link:?}");
    store.tamper_with_disclosure(2, Some(&original)).unwrap();

    // The last entry replaced by an older one that itself verifies is found by the head.
    let fourth = store.raw_disclosure(4).unwrap().unwrap();
    let text = String::from_utf8(fourth).unwrap();
    let edited = text.replace("\"task_id\":\"d\"", "\"task_id\":\"x\"");
    assert_ne!(edited, text);
    store
        .tamper_with_disclosure(4, Some(edited.as_bytes()))
        .unwrap();
    let link = store.verify_disclosures().unwrap().broken.unwrap();
    assert_eq!(link.seq, 4, "{link:?}");

    // Removed in the middle, or at the end (only the head in meta tells).
    store.tamper_with_disclosure(4, None).unwrap();
    let link = store.verify_disclosures().unwrap().broken.unwrap();
    assert_eq!(link.seq, 4, "{link:?}");
    assert!(link.why.contains("its head names entry 4"), "{link:?}");
    store.tamper_with_disclosure(2, None).unwrap();
    let link = store.verify_disclosures().unwrap().broken.unwrap();
    assert_eq!(link.seq, 2, "{link:?}");
    assert!(link.why.contains("entry 2 is missing"), "{link:?}");
}
