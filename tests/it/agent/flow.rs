//! End to end against the simulator on loopback: submit → some pseudonyms at once → clearing
//! → all three task types → every record ends with its pseudonym.

use std::collections::BTreeSet;

use crate::support::agent::*;
use serde_json::json;
use ttp_agent::domain::{Attention, TaskState};
use ttp_agent::submit;
use ttp_proto::IdatElement;

/// Submit `n` records through the library path the `submit` command uses.
async fn submit_records(
    agent: &std::sync::Arc<ttp_agent::agent::Agent>,
    encoder: &ttp_encode::profile::ProfileEncoder,
    dir: &std::path::Path,
    n: usize,
) -> (submit::StoreStats, submit::RegisterStats) {
    let path = dir.join("records.csv");
    std::fs::write(&path, records_csv(n)).unwrap();
    let records = submit::read_records(&path).unwrap();
    let encoded = submit::encode_records(encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), encoder).unwrap();
    let stored = submit::store_records(agent.store(), &encoded, 1000).unwrap();
    let reg = agent.register_pending().await.unwrap();
    (stored, reg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_ends_with_its_pseudonym_through_all_three_task_types() {
    let env = setup(sim_config(11), &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);

    let (stored, reg) = submit_records(&agent, &encoder, env.dir.path(), 40).await;
    assert_eq!(stored.inserted, 40);
    assert_eq!(reg.sent, 40);
    assert!(
        reg.pseudonymised > 0,
        "some pseudonyms come at once: {reg:?}"
    );
    assert!(
        reg.awaiting_clearing > 0,
        "some records need clearing: {reg:?}"
    );
    assert_eq!(reg.pseudonymised + reg.awaiting_clearing, 40);

    run_until_settled(&env, &agent).await;

    let stats = env.sim.stats();
    for ty in ["dic_psn_available", "send_idat", "repeat_request"] {
        assert!(
            stats.tasks_raised_by_type.get(ty).copied().unwrap_or(0) > 0,
            "the scenario must exercise {ty}: {stats:?}"
        );
    }
    assert_eq!(stats.duplicate_provides, 0);
    assert_eq!(
        stats.provide_violations_total, 0,
        "{:?}",
        stats.provide_violations
    );
    assert_eq!(stats.clearings_aborted, 0);

    // Every record's pseudonym is the one the fTTP assigned to its filter.
    let all = agent.store().records_in_states(|_| true).unwrap();
    assert_eq!(all.len(), 40);
    for rec in &all {
        let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
        assert_eq!(
            rec.head.pseudonym.as_deref(),
            env.sim.pseudonym_of(&bf).as_deref(),
            "{}",
            rec.head.local_id
        );
    }

    // send_idat answers held exactly the requested elements, with the record's values.
    let patients = env.sim.received_patients();
    assert!(!patients.is_empty());
    for (_task_id, patient) in &patients {
        let present = ttp_proto::patient::elements_present(patient);
        assert!(!present.is_empty());
        assert!(patient.get("identifier").is_none() && patient.get("telecom").is_none());
        let values = ttp_proto::patient::patient_values(patient);
        let rec = all
            .iter()
            .find(|r| {
                r.idat.as_ref().is_some_and(|idat| {
                    values
                        .iter()
                        .all(|(el, v)| idat.0.get(el).is_some_and(|mine| mine == v))
                })
            })
            .expect("the Patient's values belong to one local record");
        let idat = rec.idat.as_ref().unwrap();
        let requested: BTreeSet<IdatElement> = present.clone();
        assert!(requested.iter().all(|e| idat.0.contains_key(e)));
    }

    // Submitting the same file again stores and sends nothing.
    let before = env.sim.stats().requests_by_op.clone();
    let (stored, reg) = submit_records(&agent, &encoder, env.dir.path(), 40).await;
    assert_eq!((stored.inserted, stored.unchanged), (0, 40));
    assert_eq!(reg.sent, 0);
    assert_eq!(
        env.sim.stats().requests_by_op,
        before,
        "nothing new was sent"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_task_is_not_acted_on_and_an_unknown_type_is_reported() {
    let mut cfg = sim_config(3);
    cfg.clearing = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let (_, reg) = submit_records(&agent, &encoder, env.dir.path(), 3).await;
    assert_eq!(reg.pseudonymised, 3);

    // A send_idat for a known record whose deadline has already passed. (The simulator never
    // lists an expired task by itself; a gateway with a skewed clock or a slow proxy can.)
    let rec = &agent.store().records_in_states(|_| true).unwrap()[0];
    let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    env.sim.inject_task(json!({
        "name": "send_idat",
        "part": [
            {"name": "expires", "valueInstant": past},
            {"name": "taskId", "valueId": "expired-task-1"},
            {"name": "bloomfilter", "valueBase64Binary": bf},
            {"name": "element", "valueCoding": {
                "system": "https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements",
                "code": "given"}}
        ]
    }));
    // And a task type no agent knows yet.
    env.sim.inject_task(json!({
        "name": "delete_everything",
        "part": [{"name": "reason", "valueString": "newer gateway"}]
    }));

    let report = agent
        .poll_cycle()
        .await
        .expect("the cycle survives the unknown type");
    assert_eq!(report.listed, 2);
    let tasks = agent.store().tasks().unwrap();
    let expired: Vec<_> = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Expired { .. }))
        .collect();
    assert_eq!(expired.len(), 1, "{tasks:?}");
    assert!(
        env.sim.received_patients().is_empty(),
        "nothing was sent for it"
    );
    assert_eq!(
        env.sim.stats().requests_by_op.get("providePatientData"),
        None
    );

    let unknown: Vec<_> = tasks
        .iter()
        .filter(|t| {
            matches!(&t.state, TaskState::NeedsAttention { reason: Attention::UnknownTaskType(n) } if n == "delete_everything")
        })
        .collect();
    assert_eq!(unknown.len(), 1, "{tasks:?}");

    // The status report shows it, and a second poll neither duplicates nor loses it.
    agent.poll_cycle().await.unwrap();
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    assert_eq!(
        status.needs_attention.len(),
        1,
        "{:#?}",
        status.needs_attention
    );
    assert!(
        status.needs_attention[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("delete_everything")
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_idat_for_an_unknown_record_or_missing_element_needs_attention_with_hold() {
    let mut cfg = sim_config(5);
    cfg.clearing = 0.0;
    cfg.allow_missing_elements = true;
    // `hold` keeps the behaviour from before "as far as known": a person looks first.
    let env = setup(
        cfg,
        &[(
            "grace_period = \"10s\"",
            "grace_period = \"10s\"\nmissing_elements = \"hold\"",
        )],
    )
    .await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    submit_records(&agent, &encoder, env.dir.path(), 2).await;

    let future = env.sim.now() + chrono::Duration::days(3);
    let stranger = ttp_proto::BloomFilter(vec![0xAB; 225]).to_base64();
    env.sim.add_send_idat_for(&stranger, &["given"], future);
    let rec = &agent.store().records_in_states(|_| true).unwrap()[0];
    let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
    env.sim
        .add_send_idat_for(&bf, &["given", "maidenname"], future);

    let report = agent.poll_cycle().await.unwrap();
    assert_eq!(report.dispatch.attention, 2, "{report:?}");
    let reasons: Vec<Attention> = agent
        .store()
        .tasks()
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.state {
            TaskState::NeedsAttention { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(reasons.contains(&Attention::UnknownRecord), "{reasons:?}");
    assert!(
        reasons.contains(&Attention::MissingElements(vec![IdatElement::Maidenname])),
        "{reasons:?}"
    );
    assert!(env.sim.received_patients().is_empty(), "no partial answers");
    env.sim.shutdown().await;
}
