//! The site's release policy end to end against the simulator (issue 15, item 1): a requested
//! element outside `[dispatch] release_elements` is never in a Patient the fTTP receives, the
//! answer carries the allowed elements the record holds, and the audit entry and `status` say
//! what was withheld by policy, apart from what the record does not hold.

use crate::support::agent::*;
use ttp_agent::domain::{Attention, TaskState};
use ttp_proto::IdatElement;

const CSV: &str = "local_id,given,family,birthdate,gender,birthplace\n\
                   case-1,Annegret,Quandtmüller,1970-05-31,w,Wolgast\n\
                   case-2,Jürgen,Schmidtbauer,1964-02-29,m,\n";

/// Values of the records above that must never show up where only codes belong.
pub(crate) const VALUES: &[&str] = &[
    "Annegret",
    "Quandtmüller",
    "1970-05-31",
    "Wolgast",
    "Jürgen",
    "Schmidtbauer",
    "1964-02-29",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_outside_the_release_list_is_never_in_a_patient_the_fttp_receives() {
    let mut cfg = sim_config(31);
    cfg.clearing = 0.0;
    let env = setup(
        cfg,
        &[(
            "grace_period = \"10s\"",
            "grace_period = \"10s\"\nrelease_elements = [\"given\", \"family\", \"birthplace\", \"degree\"]",
        )],
    )
    .await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let path = env.dir.path().join("records.csv");
    std::fs::write(&path, CSV).unwrap();
    let records = ttp_agent::submit::read_records(&path).unwrap();
    let encoded = ttp_agent::submit::encode_records(&encoder, records, &|_| {}).unwrap();
    ttp_agent::submit::store_records(agent.store(), &encoded, 1000).unwrap();
    let reg = agent.register_pending().await.unwrap();
    assert_eq!(reg.pseudonymised, 2, "{reg:?}");

    let future = env.sim.now() + chrono::Duration::days(3);
    let mut only_withheld = Vec::new();
    for record in agent.store().records_in_states(|_| true).unwrap() {
        let bf = ttp_proto::BloomFilter(record.head.bloom_filter.clone()).to_base64();
        // Held and allowed (given, family), held but withheld (birthdate, gender), allowed
        // but held by one record only (birthplace), allowed and never held (degree).
        env.sim.add_send_idat_for(
            &bf,
            &[
                "given",
                "family",
                "birthdate",
                "gender",
                "birthplace",
                "degree",
            ],
            future,
        );
        // Only withheld elements: a person decides, nothing is sent.
        only_withheld.push(
            env.sim
                .add_send_idat_for(&bf, &["birthdate", "gender"], future),
        );
    }

    // Not `run_until_settled`: two tasks are meant to wait for a person.
    for cycle in 1.. {
        agent.poll_cycle().await.expect("cycle succeeds");
        if env.sim.open_tasks().len() <= only_withheld.len() {
            break;
        }
        assert!(cycle < 12, "not settled after {cycle} cycles");
    }

    let patients = env.sim.received_patients();
    assert_eq!(patients.len(), 2, "one answer per record: {patients:?}");
    for (task_id, patient) in &patients {
        assert!(!only_withheld.contains(task_id), "{task_id} was answered");
        let present = ttp_proto::patient::elements_present(patient);
        assert!(!present.contains(&IdatElement::Birthdate), "{present:?}");
        assert!(!present.contains(&IdatElement::Gender), "{present:?}");
        assert!(present.contains(&IdatElement::Given), "{present:?}");
        assert!(present.contains(&IdatElement::Family), "{present:?}");
        let text = patient.to_string();
        for date in ["1970-05-31", "1964-02-29", "female", "male"] {
            assert!(!text.contains(date), "{date} in {text}");
        }
    }
    assert_eq!(
        patients
            .iter()
            .filter(
                |(_, p)| ttp_proto::patient::elements_present(p).contains(&IdatElement::Birthplace)
            )
            .count(),
        1,
        "the allowed birthplace is sent where held"
    );
    assert_eq!(env.sim.stats().provide_violations_total, 0);

    // The tasks asking only for withheld elements wait for a person, with the reason.
    let waiting = agent
        .store()
        .open_tasks_where(|s| matches!(s, TaskState::NeedsAttention { .. }))
        .unwrap();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    for task in &waiting {
        assert_eq!(
            task.state,
            TaskState::NeedsAttention {
                reason: Attention::ReleaseWithheld(vec![
                    IdatElement::Birthdate,
                    IdatElement::Gender
                ])
            }
        );
    }

    // The audit trail and `status` say what the policy withheld, apart from what is missing.
    let notes: Vec<_> = agent
        .store()
        .audit()
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "send-idat-without-elements")
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    for note in &notes {
        assert!(
            note.detail.contains(
                "withheld by the release policy ([dispatch] release_elements): birthdate, gender"
            ),
            "{note:?}"
        );
    }
    assert_eq!(
        notes
            .iter()
            .filter(|a| a
                .detail
                .ends_with("does not hold the requested element(s) degree"))
            .count(),
        1,
        "{notes:?}"
    );
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    let text = ttp_agent::status::render_text(&status);
    assert!(text.contains("withheld by the release policy"), "{text}");
    assert!(
        text.contains("release policy ([dispatch] release_elements) withholds"),
        "{text}"
    );
    let json = serde_json::to_string(&status).unwrap();
    for value in VALUES {
        assert!(!text.contains(value), "{value} in status: {text}");
        assert!(!json.contains(value), "{value} in status JSON");
        assert!(
            !format!("{notes:?}").contains(value),
            "{value} in the audit"
        );
    }
    env.sim.shutdown().await;
}
