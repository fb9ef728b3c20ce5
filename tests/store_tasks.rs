//! Tasks, history, audit trail, meta values.

mod store_support;

use chrono::{Duration, NaiveDate};
use store_support::{TempStore, dic_psn, repeat, send_idat, t, task};
use ttp_agent::domain::{Attention, TaskState};
use ttp_agent::store::{AuditEntry, FinishedCounts, META_PROFILE_FINGERPRINT, StoreError};
use ttp_proto::{IdatElement, TaskKey, TaskKind};

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("valid day")
}

#[test]
fn tasks_round_trip_in_every_state_and_kind() {
    let ts = TempStore::new();
    let store = ts.open();
    let states = [
        TaskState::Received,
        TaskState::Running,
        TaskState::InDoubt,
        TaskState::RetryWait {
            next_at: t("2025-03-01T10:00:00.000000001Z"),
        },
        TaskState::NeedsAttention {
            reason: Attention::MissingElements(vec![IdatElement::Birthplace]),
        },
        TaskState::NeedsAttention {
            reason: Attention::Rejected {
                status: 422,
                detail: "unprocessable".to_string(),
            },
        },
        TaskState::Done {
            at: t("2025-03-02T00:00:00Z"),
        },
        TaskState::Expired {
            at: t("2025-03-03T00:00:00Z"),
        },
    ];
    let unknown = TaskKind::Unknown {
        name: "future_task".to_string(),
        raw: serde_json::json!({"name": "future_task", "part": [{"name": "x", "valueInteger": 5}]}),
    };
    let kinds = [dic_psn(1), send_idat("T-1"), repeat(2), unknown];
    let mut all = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let mut rec = task(
            &format!("key-{i}"),
            kinds[i % kinds.len()].clone(),
            state.clone(),
        );
        rec.attempts = i as u32;
        rec.last_error = (i % 3 == 0).then(|| "timeout".to_string());
        rec.task.expires =
            Some(chrono::DateTime::parse_from_rfc3339("2025-04-01T12:00:00+02:00").expect("valid"));
        rec.task.unknown_parts = vec![serde_json::json!({"name": "extra", "valueString": "kept"})];
        all.push(rec);
    }
    store.put_tasks(&all).expect("put");
    for rec in &all {
        assert_eq!(store.get_task(&rec.key).expect("get").as_ref(), Some(rec));
    }
    assert_eq!(
        store.get_task(&TaskKey("absent".to_string())).expect("get"),
        None
    );
    drop(store);
    let store = ts.open();
    assert_eq!(store.tasks().expect("all"), all);
}

#[test]
fn tasks_where_held_takes_held_records_and_decodes_only_the_others() {
    let ts = TempStore::new();
    let store = ts.open();
    let open = task("a-open", dic_psn(1), TaskState::Received);
    let done = task(
        "b-done",
        repeat(2),
        TaskState::Done {
            at: t("2025-03-01T00:00:00Z"),
        },
    );
    let held_open = task("c-held", send_idat("T-1"), TaskState::InDoubt);
    let held_done = task(
        "d-held-done",
        dic_psn(3),
        TaskState::Done {
            at: t("2025-03-01T00:00:00Z"),
        },
    );
    store
        .put_tasks([&open, &done, &held_open, &held_done])
        .expect("put");

    // The held copies differ from what is stored, so the result shows which one was taken.
    let mut held = std::collections::HashMap::new();
    for rec in [&held_open, &held_done] {
        let mut copy = rec.clone();
        copy.last_seen_poll = 99;
        held.insert(rec.key.clone(), copy);
    }
    let asked = std::cell::RefCell::new(Vec::new());
    let found = store
        .tasks_where_held(
            |s| !s.is_final(),
            |key| {
                asked.borrow_mut().push(key.to_string());
                held.remove(key)
            },
        )
        .expect("scan");
    // Every stored key is offered, in key order; held records are taken (and filtered by
    // the same predicate); the others come from the store.
    assert_eq!(
        asked.into_inner(),
        ["a-open", "b-done", "c-held", "d-held-done"]
    );
    assert!(held.is_empty(), "both held records were handed over");
    let summary: Vec<(&str, u64, bool)> = found
        .iter()
        .map(|(rec, was_held)| (rec.key.0.as_str(), rec.last_seen_poll, *was_held))
        .collect();
    assert_eq!(summary, [("a-open", 1, false), ("c-held", 99, true)]);
    assert_eq!(found[0].0, open);
}

#[test]
fn empty_task_key_is_refused_and_the_batch_is_not_written() {
    let ts = TempStore::new();
    let store = ts.open();
    let good = task("k", dic_psn(1), TaskState::Received);
    let bad = task("", dic_psn(2), TaskState::Received);
    assert!(matches!(
        store.put_tasks(&[good, bad]),
        Err(StoreError::Invalid { .. })
    ));
    assert!(store.tasks().expect("all").is_empty());
}

#[test]
fn purge_moves_finished_tasks_into_history_exactly_once() {
    let ts = TempStore::new();
    let store = ts.open();
    let d1 = t("2025-05-10T23:59:59.999Z");
    let d2 = t("2025-05-11T00:00:00Z");
    let tasks = vec![
        task("a", send_idat("A"), TaskState::Done { at: d1 }),
        task("b", send_idat("B"), TaskState::Done { at: d2 }),
        task("c", dic_psn(3), TaskState::Done { at: d2 }),
        task("d", repeat(4), TaskState::Expired { at: d1 }),
        task("open", repeat(5), TaskState::Received),
    ];
    store.put_tasks(&tasks).expect("put");

    let expected = |h: &[ttp_agent::store::DayHistory]| {
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].day, day("2025-05-10"));
        assert_eq!(
            h[0].by_type["send_idat"],
            FinishedCounts {
                done: 1,
                expired: 0
            }
        );
        assert_eq!(
            h[0].by_type["repeat_request"],
            FinishedCounts {
                done: 0,
                expired: 1
            }
        );
        assert_eq!(h[1].day, day("2025-05-11"));
        assert_eq!(
            h[1].by_type["send_idat"],
            FinishedCounts {
                done: 1,
                expired: 0
            }
        );
        assert_eq!(
            h[1].by_type["dic_psn_available"],
            FinishedCounts {
                done: 1,
                expired: 0
            }
        );
        assert_eq!(
            h[1].total(),
            FinishedCounts {
                done: 2,
                expired: 0
            }
        );
        assert!(h[2].by_type.is_empty());
    };
    // Before the purge: counted from the stored tasks.
    expected(&store.history_until(day("2025-05-12"), 3).expect("history"));

    // Purge only what finished before d2: the two d1 tasks.
    assert_eq!(store.purge_finished_tasks(d2).expect("purge"), 2);
    expected(&store.history_until(day("2025-05-12"), 3).expect("history"));
    // Then everything finished.
    assert_eq!(
        store
            .purge_finished_tasks(d2 + Duration::seconds(1))
            .expect("purge"),
        2
    );
    expected(&store.history_until(day("2025-05-12"), 3).expect("history"));
    assert_eq!(
        store
            .tasks()
            .expect("all")
            .into_iter()
            .map(|t| t.key.0)
            .collect::<Vec<_>>(),
        ["open"]
    );
    // Purging again finds nothing and counts nothing.
    assert_eq!(
        store
            .purge_finished_tasks(d2 + Duration::days(30))
            .expect("purge"),
        0
    );
    drop(store);
    let store = ts.open();
    expected(&store.history_until(day("2025-05-12"), 3).expect("history"));

    // Windows: one day, none, and a window that misses everything.
    let one = store.history_until(day("2025-05-11"), 1).expect("history");
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0].total(),
        FinishedCounts {
            done: 2,
            expired: 0
        }
    );
    assert!(
        store
            .history_until(day("2025-05-11"), 0)
            .expect("history")
            .is_empty()
    );
    let later = store.history_until(day("2025-07-01"), 7).expect("history");
    assert!(later.iter().all(|d| d.by_type.is_empty()));
}

#[test]
fn a_new_occurrence_replacing_a_finished_one_keeps_it_in_history() {
    let ts = TempStore::new();
    let store = ts.open();
    let first_done = t("2025-05-10T08:00:00Z");
    let mut rec = task("dic:1", dic_psn(1), TaskState::Done { at: first_done });
    store.put_tasks(std::slice::from_ref(&rec)).expect("put");
    // Re-putting the same finished state (e.g. last_seen_poll bumped) counts nothing extra.
    rec.last_seen_poll = 2;
    store.put_tasks(std::slice::from_ref(&rec)).expect("put");
    // The task is listed again later: a new occurrence replaces the finished one.
    rec.state = TaskState::Received;
    rec.last_seen_poll = 5;
    store.put_tasks(std::slice::from_ref(&rec)).expect("put");
    let h = store.history_until(day("2025-05-12"), 3).expect("history");
    assert_eq!(
        h[0].by_type["dic_psn_available"],
        FinishedCounts {
            done: 1,
            expired: 0
        }
    );
    // It finishes too, on another day: both occurrences are counted, each once.
    rec.state = TaskState::Done {
        at: t("2025-05-12T09:00:00Z"),
    };
    store.put_tasks(std::slice::from_ref(&rec)).expect("put");
    assert_eq!(
        store
            .purge_finished_tasks(t("2025-06-01T00:00:00Z"))
            .expect("purge"),
        1
    );
    let h = store.history_until(day("2025-05-12"), 3).expect("history");
    assert_eq!(
        h[0].total(),
        FinishedCounts {
            done: 1,
            expired: 0
        }
    );
    assert_eq!(h[1].total(), FinishedCounts::default());
    assert_eq!(
        h[2].total(),
        FinishedCounts {
            done: 1,
            expired: 0
        }
    );
}

#[test]
fn audit_entries_are_kept_in_order() {
    let ts = TempStore::new();
    let store = ts.open();
    let entries: Vec<AuditEntry> = (0..12)
        .map(|i| AuditEntry {
            at: t("2025-01-01T00:00:00Z") + Duration::minutes(i),
            actor: "operator".to_string(),
            action: "resolve-task".to_string(),
            subject: format!("send_idat:T-{i}"),
            detail: format!("attempt {i}"),
        })
        .collect();
    for e in &entries {
        store.append_audit(e).expect("append");
    }
    assert_eq!(store.audit().expect("audit"), entries);
    drop(store);
    let store = ts.open();
    let extra = AuditEntry {
        detail: "after reopen".to_string(),
        ..entries[0].clone()
    };
    store.append_audit(&extra).expect("append");
    let all = store.audit().expect("audit");
    assert_eq!(all.len(), 13);
    assert_eq!(all[12], extra);
}

#[test]
fn meta_counters_times_and_strings() {
    let ts = TempStore::new();
    let store = ts.open();
    assert_eq!(store.last_poll_seq().expect("seq"), 0);
    assert_eq!(store.next_poll_seq().expect("seq"), 1);
    assert_eq!(store.next_poll_seq().expect("seq"), 2);
    assert_eq!(store.last_poll_seq().expect("seq"), 2);
    assert_eq!(store.next_batch_id().expect("batch"), 1);
    assert_eq!(store.next_batch_id().expect("batch"), 2);

    assert_eq!(store.meta_time("last_poll").expect("time"), None);
    let when = t("2025-08-09T10:11:12.131415161Z");
    store.set_meta_time("last_poll", when).expect("set");
    assert_eq!(store.meta_time("last_poll").expect("time"), Some(when));
    // Same name, other kind of value: separate slots.
    assert_eq!(store.get_meta_string("last_poll").expect("string"), None);

    assert_eq!(
        store
            .get_meta_string(META_PROFILE_FINGERPRINT)
            .expect("string"),
        None
    );
    store
        .set_meta_string(META_PROFILE_FINGERPRINT, "sha256:abc")
        .expect("set");
    assert!(matches!(
        store.set_meta_string("", "x"),
        Err(StoreError::Invalid { .. })
    ));
    assert!(store.store_id().expect("id").is_some());
    let id = store.store_id().expect("id");
    drop(store);

    let store = ts.open();
    assert_eq!(store.last_poll_seq().expect("seq"), 2);
    assert_eq!(store.next_poll_seq().expect("seq"), 3);
    assert_eq!(store.next_batch_id().expect("batch"), 3);
    assert_eq!(store.meta_time("last_poll").expect("time"), Some(when));
    assert_eq!(
        store
            .get_meta_string(META_PROFILE_FINGERPRINT)
            .expect("string")
            .as_deref(),
        Some("sha256:abc")
    );
    assert_eq!(store.store_id().expect("id"), id);
}

#[test]
fn concurrent_writers_keep_counters_exact() {
    let ts = TempStore::new();
    let store = std::sync::Arc::new(ts.open());
    let threads: Vec<_> = (0..4u32)
        .map(|n| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    store.next_poll_seq().expect("seq");
                    let rec = store_support::record(&format!("t{n}-{i}"), n * 1000 + i);
                    store.insert_records(&[rec]).expect("insert");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("thread");
    }
    assert_eq!(store.last_poll_seq().expect("seq"), 200);
    assert_eq!(store.record_counts().expect("counts").total, 200);
    assert!(store.check_integrity().expect("check").is_ok());
}
