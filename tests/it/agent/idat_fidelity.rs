//! End to end against the simulator: `send_idat` as real gateways ask for it (issue 11, What to
//! build 3 and 4). A task may ask for elements most records lack (`degree`, `birthplace`), may
//! name its record by pseudonym and filter together, and every Patient the agent sends must
//! follow the IG's Idat profile, German administrative genders and partial birth dates
//! included.

use std::collections::BTreeSet;

use crate::support::agent::*;
use ttp_agent::domain::{Attention, TaskState};
use ttp_agent::submit;
use ttp_proto::IdatElement;
use ttp_sim::IdatSubject;

/// Submits `csv` through the library path of the `submit` command.
async fn submit_csv(
    agent: &std::sync::Arc<ttp_agent::agent::Agent>,
    encoder: &ttp_encode::profile::ProfileEncoder,
    dir: &std::path::Path,
    csv: &str,
) -> submit::RegisterStats {
    let path = dir.join("records.csv");
    std::fs::write(&path, csv).unwrap();
    let records = submit::read_records(&path).expect("the file is valid");
    let encoded = submit::encode_records(encoder, records, &|_| {}).expect("encodes");
    submit::check_profile(agent.store(), encoder).unwrap();
    submit::store_records(agent.store(), &encoded, 1000).unwrap();
    agent.register_pending().await.unwrap()
}

/// Raises a `send_idat` asking for `elements` for every stored record, by its filter.
fn ask_every_record(env: &Env, agent: &std::sync::Arc<ttp_agent::agent::Agent>, elements: &[&str]) {
    let future = env.sim.now() + chrono::Duration::days(3);
    for record in agent.store().records_in_states(|_| true).unwrap() {
        let bf = ttp_proto::BloomFilter(record.head.bloom_filter.clone()).to_base64();
        env.sim.add_send_idat_for(&bf, elements, future);
    }
}

/// The acceptance helper: every Patient the simulator received follows the Idat profile's
/// rules (`profile-Idat.fsh`, written out in `ttp_sim::check_idat_patient`, the checker the
/// simulator judges every answer with).
fn assert_patients_follow_the_idat_profile(sim: &ttp_sim::SimHandle) -> usize {
    let all: Vec<String> = ttp_sim::KNOWN_ELEMENTS
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let patients = sim.received_patients();
    for (task_id, patient) in &patients {
        let problems = ttp_sim::check_idat_patient(patient, &all, true);
        assert!(problems.is_empty(), "task {task_id}: {problems:?}");
    }
    let stats = sim.stats();
    assert_eq!(
        stats.provide_violations_total, 0,
        "{:?}",
        stats.provide_violations
    );
    patients.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_idat_asking_for_degree_and_birthplace_is_answered_with_the_held_elements_only() {
    let mut cfg = sim_config(21);
    cfg.clearing = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let csv = "local_id,given,family,birthdate,gender,birthplace\n\
               case-1,Anna,Müller,1970-05-31,w,Greifswald\n\
               case-2,Jürgen,Schmidt,1964-02-29,m,\n\
               case-3,Zoë,Weiß,1988-12-01,d,\n";
    let reg = submit_csv(&agent, &encoder, env.dir.path(), csv).await;
    assert_eq!(reg.pseudonymised, 3, "{reg:?}");
    // Every task asks for all five; no record holds a degree, only one a birthplace.
    ask_every_record(
        &env,
        &agent,
        &["given", "family", "birthdate", "degree", "birthplace"],
    );

    run_until_settled(&env, &agent).await;

    let stats = env.sim.stats();
    assert_eq!(stats.provide_ok, 3, "every send_idat answered: {stats:?}");
    let mut with_birthplace = 0;
    for (_, patient) in env.sim.received_patients() {
        let present = ttp_proto::patient::elements_present(&patient);
        assert!(
            !present.contains(&IdatElement::Degree),
            "never held, never sent"
        );
        assert!(
            !present.contains(&IdatElement::Gender),
            "held, but not requested"
        );
        assert!(
            [
                IdatElement::Given,
                IdatElement::Family,
                IdatElement::Birthdate
            ]
            .iter()
            .all(|e| present.contains(e)),
            "{present:?}"
        );
        with_birthplace += usize::from(present.contains(&IdatElement::Birthplace));
    }
    assert_eq!(with_birthplace, 1, "only case-1 holds a birthplace");
    assert_eq!(assert_patients_follow_the_idat_profile(&env.sim), 3);

    // The audit trail names what was missing, and `status` shows it as information only.
    let notes: Vec<_> = agent
        .store()
        .audit()
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "send-idat-without-elements")
        .collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(
        notes
            .iter()
            .filter(|a| a.detail.ends_with("birthplace, degree"))
            .count(),
        2,
        "{notes:?}"
    );
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    assert_eq!(status.summary.needs_attention, 0);
    assert_eq!(status.answered_without_elements.len(), 3);
    assert!(
        status.recent_audit.is_empty(),
        "no manual actions were taken"
    );
    let text = ttp_agent::status::render_text(&status);
    assert!(text.contains("answered as far as known"), "{text}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn german_genders_partial_dates_and_coded_elements_follow_the_idat_profile() {
    let mut cfg = sim_config(22);
    cfg.clearing = 0.0;
    // A site whose encoding takes a birth date as it comes (a partial one cannot be
    // re-formatted by a `date` step).
    let env = setup(
        cfg,
        &[(
            r#"fields.birthDate = [{ date = { from = "%Y-%m-%d", to = "%Y%m%d" } }]"#,
            r#"fields.birthDate = ["trim"]"#,
        )],
    )
    .await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let csv = "local_id,given,family,birthdate,gender,nationality,language,maritalstatus\n\
               case-1,Anna,Müller,1970,d,de,de-DE,M\n\
               case-2,Jürgen,Schmidt,1964-02,X,TR,en,w\n\
               case-3,Zoë,Weiß,1988-12-01,weiblich,AT,DE-at,unk\n\
               case-4,Till,Bauer,1990-01-02,unbekannt,DE,de,S\n";
    submit_csv(&agent, &encoder, env.dir.path(), csv).await;
    ask_every_record(
        &env,
        &agent,
        &[
            "given",
            "family",
            "birthdate",
            "gender",
            "nationality",
            "language",
            "maritalstatus",
        ],
    );

    run_until_settled(&env, &agent).await;
    assert_eq!(assert_patients_follow_the_idat_profile(&env.sim), 4);

    let patients = env.sim.received_patients();
    let by_given = |given: &str| {
        patients
            .iter()
            .map(|(_, p)| p)
            .find(|p| p["name"][0]["given"][0] == given)
            .unwrap_or_else(|| panic!("no Patient for {given}"))
            .clone()
    };
    let anna = by_given("Anna");
    assert_eq!(anna["birthDate"], "1970", "a partial date is sent as such");
    assert_eq!(anna["gender"], "other");
    assert_eq!(
        anna["_gender"]["extension"][0]["url"],
        "http://fhir.de/StructureDefinition/gender-amtlich-de"
    );
    assert_eq!(anna["_gender"]["extension"][0]["valueCoding"]["code"], "D");
    assert_eq!(anna["maritalStatus"]["text"], "Married");
    let jurgen = by_given("Jürgen");
    assert_eq!(jurgen["birthDate"], "1964-02");
    assert_eq!(
        jurgen["_gender"]["extension"][0]["valueCoding"]["code"],
        "X"
    );
    let zoe = by_given("Zoë");
    assert_eq!(zoe["gender"], "female");
    assert!(zoe.get("_gender").is_none());
    assert_eq!(
        zoe["communication"][0]["language"]["coding"][0]["code"],
        "de-AT"
    );
    assert_eq!(
        zoe["maritalStatus"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
    );
    assert_eq!(by_given("Till")["gender"], "unknown");
    env.sim.shutdown().await;
}

#[test]
fn a_bad_value_is_refused_at_submit_with_its_line_and_column() {
    let cases = [
        ("nationality", "DEU", "ISO 3166-1 alpha-2"),
        ("nationality", "Deutschland", "ISO 3166-1 alpha-2"),
        ("language", "tr", "languages"),
        ("language", "de_DE", "languages"),
        ("maritalstatus", "verheiratet", "marital status"),
        ("birthdate", "1970-13", "YYYY-MM"),
        ("birthdate", "31.5.70", "YYYY"),
        ("gender", "q", "gender"),
    ];
    for (column, value, expected) in cases {
        let csv = format!("local_id,given,{column}\nc1,Anna,\nc2,Berta,{value}\n");
        let err = submit::read_records_from(csv.as_bytes(), "records.csv")
            .expect_err(value)
            .to_string();
        assert!(
            err.contains("line 3") && err.contains(&format!("`{column}`")),
            "{value}: {err}"
        );
        assert!(err.contains(expected), "{value}: {err}");
        assert!(!err.contains(value), "the value is not repeated: {err}");
    }
    // Accepted values are stored in their canonical form.
    let csv = "local_id,gender,birthdate,nationality,language\nc1,W,1970-05,de,EN-gb\n";
    let records = submit::read_records_from(csv.as_bytes(), "records.csv").unwrap();
    let idat = &records[0].idat.0;
    assert_eq!(idat[&IdatElement::Gender], "female");
    assert_eq!(idat[&IdatElement::Birthdate], "1970-05");
    assert_eq!(idat[&IdatElement::Nationality], "DE");
    assert_eq!(idat[&IdatElement::Language], "en-GB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_naming_pseudonym_and_filter_is_answered_only_when_both_name_one_record() {
    let mut cfg = sim_config(23);
    cfg.clearing = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let reg = submit_csv(&agent, &encoder, env.dir.path(), &records_csv(3)).await;
    assert_eq!(reg.pseudonymised, 3);

    let records = agent.store().records_in_states(|_| true).unwrap();
    let bf = |i: usize| ttp_proto::BloomFilter(records[i].head.bloom_filter.clone()).to_base64();
    let psn = |i: usize| records[i].head.pseudonym.clone().unwrap();
    let future = env.sim.now() + chrono::Duration::days(3);
    let both = |filter: String, pseudonym: String| IdatSubject::Both {
        bloom_filter: filter,
        pseudonym,
    };
    let same = env
        .sim
        .add_send_idat(both(bf(0), psn(0)), vec!["given".into()], future);
    // A pseudonym the site has not been told yet (a clearing still running) next to the
    // filter it knows: the filter decides.
    let unknown_psn = env.sim.add_send_idat(
        both(bf(1), "dic_NOTYET".into()),
        vec!["family".into()],
        future,
    );
    let contradiction = env
        .sim
        .add_send_idat(both(bf(0), psn(2)), vec!["given".into()], future);

    let report = agent.poll_cycle().await.unwrap();
    assert_eq!(report.problems, 0, "the listing parses: {report:?}");
    assert_eq!(report.dispatch.done, 2, "{report:?}");
    assert_eq!(report.dispatch.attention, 1, "{report:?}");

    let answered: BTreeSet<String> = env.sim.received_task_ids().into_iter().collect();
    assert_eq!(
        answered,
        BTreeSet::from([same.clone(), unknown_psn.clone()])
    );
    let values = ttp_proto::patient::patient_values(
        &env.sim
            .received_patients()
            .into_iter()
            .find(|(id, _)| *id == same)
            .unwrap()
            .1,
    );
    assert_eq!(
        Some(&values[&IdatElement::Given]),
        records[0].idat.as_ref().unwrap().0.get(&IdatElement::Given)
    );

    let waiting: Vec<_> = agent
        .store()
        .tasks()
        .unwrap()
        .into_iter()
        .filter(|t| t.key.0.ends_with(&contradiction))
        .collect();
    assert!(
        matches!(
            &waiting[0].state,
            TaskState::NeedsAttention {
                reason: Attention::SubjectMismatch
            }
        ),
        "{waiting:?}"
    );
    assert_patients_follow_the_idat_profile(&env.sim);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearings_whose_send_idat_names_filter_and_provisional_pseudonym_finish() {
    let mut cfg = sim_config(24);
    cfg.clearing = 1.0;
    cfg.idat_by_both = 1.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    submit_csv(&agent, &encoder, env.dir.path(), &records_csv(6)).await;
    run_until_settled(&env, &agent).await;
    let stats = env.sim.stats();
    assert_eq!(stats.clearings_finished, 6, "{stats:?}");
    assert_protocol_kept(&stats, 5);
    env.sim.shutdown().await;
}
