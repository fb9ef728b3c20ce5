//! Tasks, history, audit trail, meta values.

use crate::support;
use crate::support::store::{TempStore, dic_psn, repeat, send_idat, t, task};
use chrono::{Duration, NaiveDate};
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
        rec.task.expires = Some(t("2025-04-01T12:00:00+02:00"));
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
fn open_tasks_where_held_takes_held_records_and_decodes_only_the_others() {
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
        .open_tasks_where_held(
            |_| true,
            |key| {
                asked.borrow_mut().push(key.to_string());
                held.remove(key)
            },
        )
        .expect("scan");
    // Every open task's key is offered, in key order; held records are taken, the others
    // come from the store. Finished tasks are not looked at, held or not.
    assert_eq!(asked.into_inner(), ["a-open", "c-held"]);
    assert_eq!(
        held.keys().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["d-held-done"],
        "only the open held record was handed over"
    );
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
                    let rec = support::store::record(&format!("t{n}-{i}"), n * 1000 + i);
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

/// The open-task index follows every kind of write: the cycle and `status` read open tasks
/// through it only, so a task it missed would never be acted on or shown.
#[test]
fn open_tasks_are_exactly_the_tasks_not_finished() {
    let ts = TempStore::new();
    let store = ts.open();
    let done = TaskState::Done {
        at: t("2025-05-01T10:00:00Z"),
    };
    store
        .put_tasks(&[
            task("a", dic_psn(1), TaskState::Received),
            task("b", send_idat("T-1"), TaskState::Running),
            task("c", repeat(2), done.clone()),
            task(
                "d",
                dic_psn(3),
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
            ),
        ])
        .expect("put");
    let open_keys = |store: &ttp_agent::store::Store| -> Vec<String> {
        store
            .open_tasks_where(|_| true)
            .expect("open tasks")
            .into_iter()
            .map(|t| t.key.0)
            .collect()
    };
    assert_eq!(open_keys(&store), ["a", "b", "d"]);
    // The predicate filters among the open ones.
    let running = store
        .open_tasks_where(|s| *s == TaskState::Running)
        .expect("running");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].key.0, "b");

    // Finishing a task takes it out; a new occurrence of a finished key puts it back.
    store
        .put_tasks(&[
            task("a", dic_psn(1), done.clone()),
            task("c", repeat(2), TaskState::Received),
        ])
        .expect("put");
    assert_eq!(open_keys(&store), ["b", "c", "d"]);

    // A manual change goes through the index too.
    let d = store
        .get_task(&TaskKey("d".to_string()))
        .expect("get")
        .expect("stored");
    let mut handled = d.clone();
    handled.state = TaskState::Done {
        at: t("2025-05-02T00:00:00Z"),
    };
    let entry = AuditEntry {
        at: t("2025-05-02T00:00:00Z"),
        actor: "operator".to_string(),
        action: "resolve-task".to_string(),
        subject: "d".to_string(),
        detail: "test".to_string(),
    };
    assert!(
        store
            .replace_task_audited(&d, &handled, &entry)
            .expect("replace")
    );
    assert_eq!(open_keys(&store), ["b", "c"]);

    // Purging finished tasks leaves the open ones alone.
    store
        .purge_finished_tasks(t("2030-01-01T00:00:00Z"))
        .expect("purge");
    assert_eq!(open_keys(&store), ["b", "c"]);
    assert_eq!(store.tasks().expect("all").len(), 2);
    assert!(store.check_integrity().expect("check").is_ok());
}

/// History counts a task when it finishes: a finished task still stored, a purged one and a
/// finished occurrence replaced by a new one each count exactly once, whatever happens later.
#[test]
fn history_counts_each_finish_once_from_the_moment_it_finishes() {
    let ts = TempStore::new();
    let store = ts.open();
    let d1 = t("2025-05-01T10:00:00Z");
    store
        .put_tasks(&[task("a", dic_psn(1), TaskState::Received)])
        .expect("put");
    let total = |store: &ttp_agent::store::Store| -> (u64, u64) {
        let h = store.history_until(day("2025-05-03"), 3).expect("history");
        h.iter().fold((0, 0), |acc, d| {
            let t = d.total();
            (acc.0 + t.done, acc.1 + t.expired)
        })
    };
    assert_eq!(total(&store), (0, 0));
    store
        .put_tasks(&[task("a", dic_psn(1), TaskState::Done { at: d1 })])
        .expect("finish");
    assert_eq!(total(&store), (1, 0));
    // Writing the same finished state again (a later listing of a done task) counts nothing.
    store
        .put_tasks(&[task("a", dic_psn(1), TaskState::Done { at: d1 })])
        .expect("same again");
    assert_eq!(total(&store), (1, 0));
    // A new occurrence that expires counts on its own.
    store
        .put_tasks(&[task("a", dic_psn(1), TaskState::Received)])
        .expect("new occurrence");
    assert_eq!(total(&store), (1, 0));
    store
        .put_tasks(&[task(
            "a",
            dic_psn(1),
            TaskState::Expired {
                at: t("2025-05-02T10:00:00Z"),
            },
        )])
        .expect("expire");
    assert_eq!(total(&store), (1, 1));
    // The purge removes the task, not its count.
    assert_eq!(
        store
            .purge_finished_tasks(t("2030-01-01T00:00:00Z"))
            .expect("purge"),
        1
    );
    assert_eq!(total(&store), (1, 1));
    let by_day = store.history_until(day("2025-05-02"), 2).expect("history");
    assert_eq!(by_day[0].by_type["dic_psn_available"].done, 1);
    assert_eq!(by_day[1].by_type["dic_psn_available"].expired, 1);
}

/// A store written by schema 2 (finished tasks counted by a scan, no open-task index) opens
/// with the same history and its open tasks indexed, and opening it again counts nothing twice.
#[test]
fn schema_2_stores_move_retained_finished_tasks_into_the_history() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .put_tasks(&[
            task("open", dic_psn(1), TaskState::Received),
            task(
                "done",
                send_idat("T-1"),
                TaskState::Done {
                    at: t("2025-05-01T10:00:00Z"),
                },
            ),
            task(
                "expired",
                repeat(2),
                TaskState::Expired {
                    at: t("2025-05-02T10:00:00Z"),
                },
            ),
        ])
        .expect("put");
    let expected = store.history_until(day("2025-05-02"), 2).expect("history");
    drop(store);
    {
        // What schema 2 had on disk: no index, and no counters for finished tasks still stored.
        let db = support::store::raw_db(ts.path());
        db.open_tree("history")
            .expect("tree")
            .clear()
            .expect("clear");
        assert!(db.drop_tree("idx_open_tasks").expect("drop"));
        db.open_tree("meta")
            .expect("meta")
            .insert("schema_version", 2u64.to_be_bytes())
            .expect("version");
        db.flush().expect("flush");
    }
    for _ in 0..2 {
        let store = ts.open();
        assert_eq!(
            store.schema_version().expect("version"),
            ttp_agent::store::CURRENT_SCHEMA
        );
        assert_eq!(
            store.history_until(day("2025-05-02"), 2).expect("history"),
            expected
        );
        let open = store.open_tasks_where(|_| true).expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].key.0, "open");
        assert!(store.check_integrity().expect("check").is_ok());
    }
}

/// `check_integrity` notices an index that disagrees with the tasks.
#[test]
fn a_damaged_open_task_index_is_reported() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .put_tasks(&[task("open", dic_psn(1), TaskState::Received)])
        .expect("put");
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        let idx = db.open_tree("idx_open_tasks").expect("tree");
        idx.clear().expect("clear");
        idx.insert("ghost", &[] as &[u8]).expect("insert");
        db.flush().expect("flush");
    }
    let report = ts.open().check_integrity().expect("check");
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("\"open\"")));
    assert!(report.problems.iter().any(|p| p.contains("\"ghost\"")));
}

/// `purge_finished_tasks` reads `idx_finished_tasks` (finished tasks by finish time), not every
/// task: the index follows every kind of task write, and a finished task missing from it is
/// not purged — which `check --store` reports.
#[test]
fn the_finished_task_index_follows_every_write_and_is_what_the_purge_reads() {
    let ts = TempStore::new();
    let store = ts.open();
    let d1 = t("2025-05-01T10:00:00Z");
    let d2 = t("2025-05-02T10:00:00Z");
    let d3 = t("2025-05-03T10:00:00Z");
    store
        .put_tasks(&[
            task("a", dic_psn(1), TaskState::Done { at: d1 }),
            task("b", send_idat("T-1"), TaskState::Received),
            task("c", repeat(2), TaskState::Expired { at: d1 }),
        ])
        .expect("put");
    assert!(store.check_integrity().expect("check").is_ok());
    // A new occurrence of a finished key leaves the index; a finished task finishing again at
    // another time moves in it; a manual change finishes a task.
    store
        .put_tasks(&[
            task("a", dic_psn(1), TaskState::Received),
            task("c", repeat(2), TaskState::Done { at: d3 }),
        ])
        .expect("put");
    let b = store
        .get_task(&TaskKey("b".to_string()))
        .expect("get")
        .expect("stored");
    let mut done_b = b.clone();
    done_b.state = TaskState::Done { at: d1 };
    let entry = AuditEntry {
        at: d1,
        actor: "operator".to_string(),
        action: "resolve-task".to_string(),
        subject: "b".to_string(),
        detail: "test".to_string(),
    };
    assert!(
        store
            .replace_task_audited(&b, &done_b, &entry)
            .expect("replace")
    );
    assert!(store.check_integrity().expect("check").is_ok());

    // Before d2: only b (c finished again at d3, a is open).
    assert_eq!(store.purge_finished_tasks(d2).expect("purge"), 1);
    let keys = |s: &ttp_agent::store::Store| -> Vec<String> {
        s.tasks()
            .expect("all")
            .into_iter()
            .map(|t| t.key.0)
            .collect()
    };
    assert_eq!(keys(&store), ["a", "c"]);
    assert!(store.check_integrity().expect("check").is_ok());
    drop(store);

    // A finished task the index does not list is not read by the purge.
    {
        let db = support::store::raw_db(ts.path());
        db.open_tree("idx_finished_tasks")
            .expect("tree")
            .clear()
            .expect("clear");
        db.flush().expect("flush");
    }
    let store = ts.open();
    assert_eq!(
        store
            .purge_finished_tasks(t("2030-01-01T00:00:00Z"))
            .expect("purge"),
        0
    );
    assert_eq!(keys(&store), ["a", "c"]);
    let report = store.check_integrity().expect("check");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("\"c\""));
}

/// What the admin surface's event counters read after every cycle and at start-up: the open
/// tasks (through the open-task index) and the finished totals (the history counters), which
/// stay exact when finished tasks are purged.
#[test]
fn open_task_summaries_and_finished_totals_read_no_finished_task() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .put_tasks(&[
            task("a", dic_psn(1), TaskState::Received),
            task(
                "d",
                send_idat("T-1"),
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
            ),
            task(
                "x",
                send_idat("T-2"),
                TaskState::Done {
                    at: t("2025-05-01T10:00:00Z"),
                },
            ),
            task(
                "y",
                repeat(2),
                TaskState::Expired {
                    at: t("2025-05-02T10:00:00Z"),
                },
            ),
            task(
                "z",
                send_idat("T-3"),
                TaskState::Done {
                    at: t("2025-05-02T10:00:00Z"),
                },
            ),
        ])
        .expect("put");
    let open = store.open_task_summaries().expect("open");
    let open: Vec<(&str, &str)> = open
        .iter()
        .map(|s| (s.key.0.as_str(), s.task_type.as_str()))
        .collect();
    assert_eq!(open, [("a", "dic_psn_available"), ("d", "send_idat")]);
    let expected = std::collections::BTreeMap::from([
        (
            "repeat_request".to_string(),
            FinishedCounts {
                done: 0,
                expired: 1,
            },
        ),
        (
            "send_idat".to_string(),
            FinishedCounts {
                done: 2,
                expired: 0,
            },
        ),
    ]);
    assert_eq!(store.finished_totals().expect("totals"), expected);
    assert_eq!(
        store
            .purge_finished_tasks(t("2030-01-01T00:00:00Z"))
            .expect("purge"),
        3
    );
    assert_eq!(store.finished_totals().expect("totals"), expected);
    // A new occurrence finishing counts once more.
    store
        .put_tasks(&[task(
            "a",
            dic_psn(1),
            TaskState::Done {
                at: t("2025-05-03T10:00:00Z"),
            },
        )])
        .expect("finish");
    assert_eq!(
        store.finished_totals().expect("totals")["dic_psn_available"],
        FinishedCounts {
            done: 1,
            expired: 0
        }
    );
    assert_eq!(store.open_task_summaries().expect("open").len(), 1);
}

/// A store written by schema 4 (no time-ordered indexes) gets them at open (steps 4 → 5 and
/// 5 → 6), and its purges and registration then find what is due; opening it again changes
/// nothing.
#[test]
fn schema_4_stores_get_the_purge_indexes() {
    let ts = TempStore::new();
    let store = ts.open();
    let old = t("2024-01-01T00:00:00Z");
    let mut rec = support::store::record("case-1", 1);
    rec.head.state = ttp_agent::domain::RecordState::Pseudonymised;
    rec.head.updated_at = old;
    let waiting = support::store::record("case-2", 2);
    store.insert_records(&[rec, waiting]).expect("insert");
    store
        .put_tasks(&[
            task("done", send_idat("T-1"), TaskState::Done { at: old }),
            task("open", dic_psn(1), TaskState::Received),
        ])
        .expect("put");
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        assert!(db.drop_tree("idx_idat_due").expect("drop"));
        assert!(db.drop_tree("idx_finished_tasks").expect("drop"));
        assert!(db.drop_tree("idx_waiting_records").expect("drop"));
        db.open_tree("meta")
            .expect("meta")
            .insert("schema_version", 4u64.to_be_bytes())
            .expect("version");
        db.flush().expect("flush");
    }
    for _ in 0..2 {
        let store = ts.open();
        assert_eq!(
            store.schema_version().expect("version"),
            ttp_agent::store::CURRENT_SCHEMA
        );
        assert!(store.check_integrity().expect("check").is_ok());
    }
    let store = ts.open();
    let cutoff = t("2025-01-01T00:00:00Z");
    assert_eq!(store.purge_finished_tasks(cutoff).expect("purge"), 1);
    assert_eq!(store.purge_idat(cutoff, |_| false).expect("purge"), 1);
    let to_register = store.record_heads_to_register().expect("to register");
    assert_eq!(to_register.len(), 1);
    assert_eq!(to_register[0].local_id, "case-2");
    assert!(store.check_integrity().expect("check").is_ok());
}
