//! `ttp-agent resolve retry|handled|add-element`: state changes, refusals, the audit trail,
//! IDAT kept out of every output, and a clear message while the daemon holds the store.

use crate::support::handover::{ok, site, stderr, stdout};
use crate::support::store::{dic_psn, record, send_idat, t as t_at, task};
use ttp_agent::domain::{Attention, TaskRecord, TaskState};
use ttp_agent::store::Store;
use ttp_proto::{IdatElement, TaskKey};

fn attention(key: &str, seed: u32) -> TaskRecord {
    let mut t = task(
        key,
        dic_psn(seed),
        TaskState::NeedsAttention {
            reason: Attention::UnknownRecord,
        },
    );
    // Far in the future: never expired while the test runs.
    t.task.expires = Some(t_at("2099-01-01T00:00:00+01:00"));
    t
}

fn task_state(store: &Store, key: &str) -> TaskState {
    store
        .get_task(&TaskKey(key.into()))
        .expect("reads")
        .expect("task exists")
        .state
}

#[test]
fn retry_moves_a_task_back_to_received_and_the_audit_trail_names_who_did_it() {
    let site = site();
    site.with_store(|s| s.put_tasks(&[attention("task-1", 1)]).expect("puts"));

    let out = ok(site.run(&["resolve", "retry", "task-1"], ""));
    assert!(out.contains("needs-attention -> received"), "{out}");

    site.with_store(|s| {
        assert_eq!(task_state(s, "task-1"), TaskState::Received);
        let trail = s.audit().expect("reads");
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].actor, "coordinator");
        assert_eq!(trail[0].action, "resolve-retry");
        assert_eq!(trail[0].subject, "task-1");
    });
    // `status` shows the audit trail.
    let status = ok(site.run(&["status"], ""));
    assert!(status.contains("recent manual actions"), "{status}");
    assert!(status.contains("coordinator"), "{status}");
    assert!(status.contains("resolve-retry"), "{status}");

    // Now `Received`: nothing to retry, and nothing is recorded.
    let again = site.run(&["resolve", "retry", "task-1"], "");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already waiting"),
        "{}",
        stderr(&again)
    );
    site.with_store(|s| assert_eq!(s.audit().expect("reads").len(), 1));
}

#[test]
fn retrying_an_in_doubt_task_warns_that_the_answer_may_be_sent_twice() {
    let site = site();
    let mut t = task("send-1", send_idat("id-1"), TaskState::InDoubt);
    t.task.expires = None;
    site.with_store(|s| s.put_tasks(&[t]).expect("puts"));
    let out = site.run(&["resolve", "retry", "send-1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("sent again"), "{}", stderr(&out));
    site.with_store(|s| {
        assert_eq!(task_state(s, "send-1"), TaskState::Received);
        assert!(s.audit().expect("reads")[0].detail.contains("in-doubt"));
    });
}

#[test]
fn finished_running_unknown_and_expired_tasks_are_refused_without_an_audit_entry() {
    let site = site();
    let now = chrono::Utc::now();
    let mut expired_deadline = attention("late", 4);
    expired_deadline.task.expires = Some(t_at("2020-01-01T00:00:00Z"));
    site.with_store(|s| {
        s.put_tasks(&[
            task("done", dic_psn(1), TaskState::Done { at: now }),
            task("gone", dic_psn(2), TaskState::Expired { at: now }),
            task("busy", dic_psn(3), TaskState::Running),
            expired_deadline,
        ])
        .expect("puts")
    });
    for (args, expected) in [
        (&["resolve", "retry", "done"][..], "already finished (done)"),
        (
            &["resolve", "retry", "gone"][..],
            "already finished (expired)",
        ),
        (&["resolve", "retry", "busy"][..], "is running"),
        (&["resolve", "retry", "late"][..], "deadline passed"),
        (
            &["resolve", "retry", "nope"][..],
            "no task with key \"nope\"",
        ),
        (
            &["resolve", "handled", "done", "--comment", "x"][..],
            "already finished",
        ),
        (
            &["resolve", "handled", "busy", "--comment", "x"][..],
            "is running",
        ),
    ] {
        let out = site.run(args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    site.with_store(|s| {
        assert!(s.audit().expect("reads").is_empty());
        assert_eq!(task_state(s, "busy"), TaskState::Running);
    });
}

#[test]
fn handled_finishes_the_task_with_the_comment_and_counts_it_in_the_history() {
    let site = site();
    site.with_store(|s| {
        s.put_tasks(&[attention("task-2", 2), attention("task-3", 3)])
            .expect("puts")
    });
    let empty = site.run(&["resolve", "handled", "task-2", "--comment", "  "], "");
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("comment is empty"),
        "{}",
        stderr(&empty)
    );

    ok(site.run(
        &[
            "resolve",
            "handled",
            "task-2",
            "--comment",
            "answered by phone, ticket 4711",
        ],
        "",
    ));
    site.with_store(|s| {
        let t = s
            .get_task(&TaskKey("task-2".into()))
            .expect("reads")
            .expect("exists");
        assert!(matches!(t.state, TaskState::Done { .. }), "{:?}", t.state);
        assert_eq!(
            t.last_error.as_deref(),
            Some("marked handled by coordinator: answered by phone, ticket 4711")
        );
        let trail = s.audit().expect("reads");
        assert_eq!(trail[0].action, "resolve-handled");
        assert!(trail[0].detail.contains("ticket 4711"));
    });

    let json = ok(site.run(&["status", "--json"], ""));
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let attention_keys: Vec<&str> = report["needs_attention"]
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["key"].as_str().expect("key"))
        .collect();
    assert_eq!(attention_keys, ["task-3"]);
    assert!(report["open"].as_array().expect("array").is_empty());
    let done_today: u64 = report["history"]
        .as_array()
        .expect("array")
        .iter()
        .flat_map(|d| d["done"].as_object().expect("object").values())
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(done_today, 1);
}

#[test]
fn add_element_seals_the_value_and_never_shows_it() {
    let site = site();
    site.with_store(|s| {
        s.insert_records(&[record("case-1", 1)]).expect("inserts");
    });
    const VALUE: &str = "Synthstadt-an-der-Test";

    // From standard input (the recommended way), trimmed.
    let out = site.run(
        &["resolve", "add-element", "case-1", "birthplace"],
        &format!("  {VALUE}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(VALUE) && !stderr(&out).contains(VALUE));
    assert!(
        stdout(&out).contains("element birthplace -> added"),
        "{}",
        stdout(&out)
    );

    site.with_store(|s| {
        let rec = s.get_record("case-1").expect("reads").expect("exists");
        let idat = rec.idat.expect("IDAT kept");
        assert_eq!(
            idat.0.get(&IdatElement::Birthplace).map(String::as_str),
            Some(VALUE)
        );
        // The other elements are untouched.
        assert_eq!(
            idat.0.len(),
            record("case-1", 1).idat.expect("IDAT").0.len() + 1
        );
        let trail = s.audit().expect("reads");
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].action, "resolve-add-element");
        assert_eq!(trail[0].subject, "case-1");
        assert_eq!(trail[0].detail, "element birthplace added");
        assert!(!serde_json::to_string(&trail).expect("JSON").contains(VALUE));
    });

    // Present now: refused without --replace; replaced with it (value as an argument).
    let again = site.run(
        &["resolve", "add-element", "case-1", "birthplace", "Other"],
        "",
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--replace"), "{}", stderr(&again));
    ok(site.run(
        &[
            "resolve",
            "add-element",
            "case-1",
            "birthplace",
            "Neuort",
            "--replace",
        ],
        "",
    ));
    site.with_store(|s| {
        let rec = s.get_record("case-1").expect("reads").expect("exists");
        assert_eq!(
            rec.idat
                .expect("IDAT")
                .0
                .get(&IdatElement::Birthplace)
                .map(String::as_str),
            Some("Neuort")
        );
        assert_eq!(
            s.audit().expect("reads")[1].detail,
            "element birthplace replaced"
        );
    });
}

#[test]
fn add_element_refuses_invalid_values_unknown_elements_records_and_purged_idat() {
    let site = site();
    site.with_store(|s| {
        let mut purged = record("case-p", 2);
        purged.idat = None;
        s.insert_records(&[record("case-1", 1), purged])
            .expect("inserts");
    });
    let mut without_birthdate = record("case-1", 1);
    without_birthdate
        .idat
        .as_mut()
        .expect("IDAT")
        .0
        .remove(&IdatElement::Birthdate);
    site.with_store(|s| s.update_records(&[without_birthdate]).expect("updates"));

    for (args, stdin, expected) in [
        (
            &["resolve", "add-element", "case-1", "birthdate"][..],
            "12.03.1980\n",
            "YYYY-MM-DD",
        ),
        (
            &["resolve", "add-element", "case-1", "shoe-size", "42"][..],
            "",
            "unknown IDAT element",
        ),
        (
            &["resolve", "add-element", "case-x", "birthplace", "Ort"][..],
            "",
            "no local record \"case-x\"",
        ),
        (
            &["resolve", "add-element", "case-p", "birthplace", "Ort"][..],
            "",
            "holds no IDAT",
        ),
        (
            &["resolve", "add-element", "case-1", "birthplace"][..],
            "\n",
            "value is empty",
        ),
    ] {
        let out = site.run(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("12.03.1980"), "{err}");
    }
    site.with_store(|s| assert!(s.audit().expect("reads").is_empty()));
}

#[test]
fn while_the_daemon_holds_the_store_the_command_says_what_to_do() {
    let site = site();
    site.with_store(|s| s.put_tasks(&[attention("task-1", 1)]).expect("puts"));
    // This process plays the daemon: it holds the store open (and locked).
    let held = site.open_store();
    let out = site.run(&["resolve", "retry", "task-1"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // No daemon serves the control channel, so the command can neither run in it nor open
    // the store: it says so.
    assert!(err.contains("no ttp-agent daemon answers"), "{err}");
    assert!(err.contains("[control] socket"), "{err}");
    // Every hint names a command that exists.
    assert!(!err.contains("admin API"), "{err}");
    assert_eq!(task_state(&held, "task-1"), attention("task-1", 1).state);
}
