//! The disclosure log end to end against the simulator (issue 15, item 4): it lists exactly
//! the `$providePatientData` answers the simulator accepted, with the element codes the
//! Patients carried, also when answers were lost (in doubt, then settled); the `disclosures`
//! command prints it and `--verify` finds an edited entry; no IDAT value appears in its
//! output, `status` or the audit trail.

use std::sync::Arc;
use std::time::Duration;

use crate::support::agent::*;
use crate::support::robust::run_bin;
use ttp_agent::agent::{Agent, Shutdown};
use ttp_agent::cli::context;
use ttp_agent::domain::DisclosureEvent;
use ttp_proto::IdatElement;
use ttp_sim::{FaultKind, FaultTiming, SimOperation};

const CSV: &str = "local_id,given,family,birthdate,gender,birthplace\n\
                   case-1,Annegret,Quandtmüller,1970-05-31,w,Wolgast\n\
                   case-2,Jürgen,Schmidtbauer,1964-02-29,m,\n\
                   case-3,Zoë,Weißenborn,1988-12-01,d,Loitz\n";
const VALUES: &[&str] = &[
    "Annegret",
    "Quandtmüller",
    "1970-05-31",
    "Wolgast",
    "Jürgen",
    "Schmidtbauer",
    "1964-02-29",
    "Weißenborn",
    "1988-12-01",
    "Loitz",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disclosure_log_lists_exactly_the_answers_the_fttp_accepted() {
    let mut cfg = sim_config(41);
    cfg.clearing = 0.0;
    let env = setup(
        cfg,
        &[(
            "grace_period = \"10s\"",
            "grace_period = \"10s\"\nrelease_elements = [\"given\", \"family\", \"birthplace\"]",
        )],
    )
    .await;
    let loaded = load(&env.config_path);
    let store = context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let client = context::client(&loaded.config, &loaded.secrets).unwrap();
    let mut opts = context::options(&loaded.config);
    opts.retry.base = Duration::from_millis(200);
    opts.retry.cap = Duration::from_millis(200);
    opts.settle = chrono::Duration::zero();
    let agent = Agent::new(store, client, opts, Shutdown::never());
    let encoder = encoder(&loaded);
    let path = env.dir.path().join("records.csv");
    std::fs::write(&path, CSV).unwrap();
    let records = ttp_agent::submit::read_records(&path).unwrap();
    let encoded = ttp_agent::submit::encode_records(&encoder, records, &|_| {}).unwrap();
    ttp_agent::submit::store_records(agent.store(), &encoded, 1000).unwrap();
    assert_eq!(agent.register_pending().await.unwrap().pseudonymised, 3);

    let future = env.sim.now() + chrono::Duration::days(3);
    for record in agent.store().records_in_states(|_| true).unwrap() {
        let bf = ttp_proto::BloomFilter(record.head.bloom_filter.clone()).to_base64();
        env.sim
            .add_send_idat_for(&bf, &["given", "birthdate", "birthplace"], future);
        env.sim.add_send_idat_for(&bf, &["family"], future);
    }
    // The first answer is processed and its answer lost (in doubt, then accepted by the
    // listing); the next one never reaches the fTTP's processing (in doubt, then listed again
    // and sent again); a 503 is plainly not accepted.
    env.sim.fault_next(
        SimOperation::ProvidePatientData,
        vec![
            (FaultKind::Drop, FaultTiming::After),
            (FaultKind::Drop, FaultTiming::Before),
            (FaultKind::Status(503), FaultTiming::Before),
        ],
    );
    let mut cycles = 0;
    while !env.sim.open_tasks().is_empty() || !settled(&agent) {
        cycles += 1;
        assert!(cycles <= 60, "not settled: {:?}", env.sim.open_tasks());
        agent.poll_cycle().await.expect("the cycle succeeds");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let stats = env.sim.stats();
    assert_eq!(stats.duplicate_provides, 0, "{stats:?}");
    let patients = env.sim.received_patients();
    assert_eq!(patients.len(), 6, "every task answered once");
    assert_disclosures_match_the_sim(agent.store(), &env.sim);
    // The values below did leave, in the Patients: the checks for them further down can fail.
    let sent = format!("{patients:?}");
    assert!(
        sent.contains("Annegret") && sent.contains("Wolgast"),
        "{sent}"
    );
    let log = agent.store().disclosures_after(0, 1000).unwrap();
    let kinds: Vec<DisclosureEvent> = log.iter().map(|e| e.event).collect();
    assert!(
        kinds.contains(&DisclosureEvent::SettledAccepted),
        "{log:#?}"
    );
    assert!(
        kinds.contains(&DisclosureEvent::SettledSentAgain),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .filter(|e| !e.withheld.is_empty())
            .all(|e| e.withheld == vec![IdatElement::Birthdate] && e.study == STUDY),
        "{log:#?}"
    );

    // The command, without a daemon (the agent lets go of the store first).
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    let status_text = format!(
        "{}{}{:?}",
        ttp_agent::status::render_text(&status),
        serde_json::to_string(&status).unwrap(),
        agent.store().audit().unwrap()
    );
    drop(agent);
    let cfg = env.config_path.to_str().unwrap();
    let json = run_bin(&["disclosures", "--config", cfg, "--format", "json"], &[]);
    assert!(json.status.success(), "{json:?}");
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), log.len());
    let csv = run_bin(
        &["disclosures", "--config", cfg, "--local-id", "case-2"],
        &[],
    );
    assert!(csv.status.success(), "{csv:?}");
    let csv_text = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert!(
        csv_text.starts_with("seq,at,study,task_id,local_id,event,settles,sent,withheld,missing\n"),
        "{csv_text}"
    );
    let expected = log.iter().filter(|e| e.local_id == "case-2").count();
    assert!(expected >= 2, "{log:#?}");
    assert_eq!(csv_text.lines().count(), 1 + expected, "{csv_text}");
    assert!(
        csv_text.lines().skip(1).all(|l| l.contains(",case-2,")),
        "{csv_text}"
    );
    let verify = run_bin(&["disclosures", "--verify", "--config", cfg], &[]);
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    let verified = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(
        verified,
        format!("disclosure log: {} entries, chain intact\n", log.len())
    );

    // No IDAT value anywhere a person reads (the daemon's logs: the soak crash test).
    for value in VALUES {
        for (what, text) in [
            (
                "disclosures json",
                String::from_utf8_lossy(&json.stdout).into_owned(),
            ),
            ("disclosures csv", csv_text.clone()),
            (
                "disclosures stderr",
                String::from_utf8_lossy(&json.stderr).into_owned(),
            ),
            ("status and audit", status_text.clone()),
        ] {
            assert!(!text.contains(value), "{value} in {what}: {text}");
        }
    }

    // An entry edited in the store is found and named.
    let store = context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let raw = String::from_utf8(store.raw_disclosure(3).unwrap().unwrap()).unwrap();
    let edited = raw.replacen("\"sent\":[\"", "\"sent\":[\"degree\",\"", 1);
    assert_ne!(raw, edited);
    store
        .tamper_with_disclosure(3, Some(edited.as_bytes()))
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let broken = run_bin(&["disclosures", "--verify", "--config", cfg], &[]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let said = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert!(
        said.starts_with("disclosure log: broken at entry 3: entry 3 was changed"),
        "{said}"
    );
    env.sim.shutdown().await;
}

/// No task in doubt or running any more (the log's open ends are settled).
fn settled(agent: &Arc<Agent>) -> bool {
    agent
        .store()
        .open_tasks_where(|s| {
            matches!(
                s,
                ttp_agent::domain::TaskState::InDoubt | ttp_agent::domain::TaskState::Running
            )
        })
        .unwrap()
        .is_empty()
}
