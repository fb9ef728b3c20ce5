//! Consent withdrawal end to end against the simulator on loopback: `ttp-agent withdraw`
//! (the real binary, beside the agent of this process, whose store is closed meanwhile) purges
//! the record, closes its open task, later tasks about it are closed unanswered before and
//! after a restart, `submit` refuses the local id without `--readmit`, `export` keeps the
//! pseudonym with a `withdrawn` column, and no IDAT value appears in any output.

use crate::support::agent::*;
use crate::support::robust::text;
use ttp_agent::agent::Agent;
use ttp_agent::domain::{Closure, TaskState};

fn assert_withdrawn(agent: &Agent, task_id: &str) {
    let key = send_idat_key(agent, task_id);
    let state = agent.store().get_task(&key).unwrap().unwrap().state;
    assert!(
        matches!(
            &state,
            TaskState::Closed { why: Closure::Withdrawn { local_id }, .. } if local_id == "case-00000"
        ),
        "{task_id}: {state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_record_is_purged_and_its_tasks_are_never_answered_before_and_after_a_restart()
{
    let mut cfg = sim_config(29);
    cfg.clearing = 0.0;
    // Approval mode keeps the first task open (awaiting approval) until the withdrawal.
    let env = setup(
        cfg,
        &[(
            "idat_release = \"automatic\"\n",
            "idat_release = \"approval\"\n",
        )],
    )
    .await;
    let agent = submit_records(&env, 2).await;
    let mut recs = agent.store().records_in_states(|_| true).unwrap();
    recs.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
    assert_eq!(recs[0].head.local_id, "case-00000");
    let bf0 = ttp_proto::BloomFilter(recs[0].head.bloom_filter.clone()).to_base64();
    let bf1 = ttp_proto::BloomFilter(recs[1].head.bloom_filter.clone()).to_base64();
    let psn0 = recs[0].head.pseudonym.clone().expect("pseudonym");
    let values: Vec<String> = recs
        .iter()
        .flat_map(|r| r.idat.clone().unwrap().0.into_values())
        .filter(|v| v.len() > 3)
        .collect();
    let later = env.sim.now() + chrono::Duration::hours(2);
    let open_before = env.sim.add_send_idat_for(&bf0, &["given", "family"], later);
    let other = env.sim.add_send_idat_for(&bf1, &["given"], later);
    agent.poll_cycle().await.expect("poll");
    assert_eq!(env.sim.stats().provide_ok, 0);
    agent.store().flush().unwrap();
    drop(agent);

    let out = run_as(&env, "dpo", &["withdraw", "case-00000"]);
    assert!(out.status.success(), "{}", text(&out));
    let withdraw_text = text(&out);
    assert!(
        withdraw_text.contains(
            "case-00000: consent withdrawn; IDAT and Bloom filter purged, 1 open task(s) closed"
        ),
        "{withdraw_text}"
    );
    // Repeating it is harmless; an unknown id is named.
    let again = run_as(&env, "dpo", &["withdraw", "case-00000", "no-such-id"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("withdrawn already"),
        "{}",
        text(&again)
    );
    assert!(text(&again).contains("\"no-such-id\""), "{}", text(&again));

    let agent = reopen(&env);
    assert_withdrawn(&agent, &open_before);
    assert!(agent.store().get_record("case-00000").unwrap().is_none());
    // A later task naming the filter, and one naming the pseudonym: closed, never answered.
    let by_filter = env.sim.add_send_idat_for(&bf0, &["birthdate"], later);
    let by_psn = env.sim.add_send_idat(
        ttp_sim::IdatSubject::Pseudonym(psn0.clone()),
        vec!["given".into()],
        later,
    );
    agent.poll_cycle().await.expect("poll");
    assert_withdrawn(&agent, &by_filter);
    assert_withdrawn(&agent, &by_psn);
    // The other record's release still works (approved here in-process).
    let other_key = send_idat_key(&agent, &other);
    ttp_agent::resolve::approve_task(
        agent.store(),
        &other_key,
        &ttp_agent::resolve::Actor::named("coordinator"),
        1,
        chrono::Utc::now(),
    )
    .expect("approve");
    agent.poll_cycle().await.expect("poll");
    agent.store().flush().unwrap();
    drop(agent);

    // After a restart: listed again, still closed; a new task after the restart too.
    let agent = reopen(&env);
    agent.recover().unwrap();
    let after_restart = env.sim.add_send_idat_for(&bf0, &["given"], later);
    agent.poll_cycle().await.expect("poll");
    agent.poll_cycle().await.expect("poll");
    for id in [&open_before, &by_filter, &by_psn, &after_restart] {
        assert_withdrawn(&agent, id);
    }
    let received: Vec<String> = env.sim.received_task_ids();
    assert_eq!(
        received,
        std::slice::from_ref(&other),
        "only the other record's task"
    );
    let trail = agent.store().audit().unwrap();
    assert!(
        trail
            .iter()
            .any(|e| e.action == "withdraw" && e.actor == "dpo" && e.subject == "case-00000")
    );
    agent.store().flush().unwrap();
    drop(agent);

    // submit of the same local id: refused without --readmit, nothing stored.
    let csv = env.dir.path().join("records.csv");
    let refused = run_as(&env, "dpo", &["submit", csv.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("consent was withdrawn for local id(s) case-00000"),
        "{}",
        text(&refused)
    );
    assert!(
        reopen(&env)
            .store()
            .get_record("case-00000")
            .unwrap()
            .is_none()
    );

    // export keeps the pseudonym, marked withdrawn; status shows the withdrawal.
    let export = run_as(&env, "dpo", &["export"]);
    assert!(export.status.success(), "{}", text(&export));
    let export_text = String::from_utf8_lossy(&export.stdout).into_owned();
    let row = export_text
        .lines()
        .find(|l| l.starts_with("case-00000,"))
        .unwrap_or_else(|| panic!("{export_text}"));
    let cells: Vec<&str> = row.split(',').collect();
    assert_eq!(cells[1], psn0);
    assert!(!cells[4].is_empty(), "withdrawn column: {row}");
    let other_row = export_text
        .lines()
        .find(|l| l.starts_with("case-00001,"))
        .unwrap();
    assert!(other_row.ends_with(','), "not withdrawn: {other_row}");
    let status = run_as(&env, "dpo", &["status"]);
    let status_text = text(&status);
    assert!(
        status_text.contains("consent withdrawn for 1 record(s)"),
        "{status_text}"
    );
    assert!(status_text.contains("case-00000  by dpo"), "{status_text}");
    let status_json = text(&run_as(&env, "dpo", &["status", "--json"]));

    // With --readmit it is stored again (consent given anew), audited.
    let readmitted = run_as(&env, "dpo", &["submit", "--readmit", csv.to_str().unwrap()]);
    assert!(readmitted.status.success(), "{}", text(&readmitted));
    let agent = reopen(&env);
    assert!(agent.store().get_record("case-00000").unwrap().is_some());
    assert!(agent.store().withdrawal("case-00000").unwrap().is_none());
    assert!(
        agent
            .store()
            .audit()
            .unwrap()
            .iter()
            .any(|e| e.action == "readmit" && e.subject == "case-00000")
    );
    drop(agent);

    for out in [
        &withdraw_text,
        &text(&again),
        &text(&refused),
        &status_text,
        &status_json,
        &export_text,
        &text(&readmitted),
    ] {
        for v in &values {
            assert!(!out.contains(v.as_str()), "an IDAT value in: {out}");
        }
    }
    env.sim.shutdown().await;
}
