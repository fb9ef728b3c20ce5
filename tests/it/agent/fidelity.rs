//! What production fTTP gateways do that the first simulator never did (issue 11, the
//! registration and visibility part), end to end against the simulator on loopback:
//! whole-request failures are not record verdicts, a lost answer of an idempotent request is
//! asked for again, a 2xx cut short is no answer, and a task the fTTP keeps listing is shown.

use std::sync::Arc;
use std::time::Duration;

use crate::support::agent::*;
use ttp_agent::agent::{Agent, AgentOptions, Shutdown, merge};
use ttp_agent::cli::context;
use ttp_agent::domain::{Attention, RecordState, TaskState};
use ttp_agent::resolve::{self, Actor, ResolveError};
use ttp_agent::{status, submit};
use ttp_sim::{FaultKind, FaultTiming, PsnFailure, SimOperation};

/// An agent over the configuration's store and client, with options adjusted for a test that
/// must not wait minutes (back-off, settle time).
fn agent_with(loaded: &context::Loaded, tweak: impl FnOnce(&mut AgentOptions)) -> Arc<Agent> {
    let store = context::open_store(&loaded.config, &loaded.secrets).expect("store opens");
    let client = context::client(&loaded.config, &loaded.secrets).expect("client builds");
    let mut opts = context::options(&loaded.config);
    tweak(&mut opts);
    Agent::new(store, client, opts, Shutdown::never())
}

fn quick(o: &mut AgentOptions) {
    o.retry.base = Duration::from_millis(200);
    o.retry.cap = Duration::from_millis(200);
    o.settle = chrono::Duration::zero();
}

/// Stores `n` records the way `submit` does, without registering them.
fn store_records(agent: &Arc<Agent>, loaded: &context::Loaded, dir: &std::path::Path, n: usize) {
    let path = dir.join("records.csv");
    std::fs::write(&path, records_csv(n)).unwrap();
    let encoder = encoder(loaded);
    let records = submit::read_records(&path).unwrap();
    let encoded = submit::encode_records(&encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), &encoder).unwrap();
    let stored = submit::store_records(agent.store(), &encoded, 1000).unwrap();
    assert_eq!(stored.inserted, n);
}

fn states(agent: &Agent) -> Vec<RecordState> {
    agent
        .store()
        .records_in_states(|_| true)
        .unwrap()
        .into_iter()
        .map(|r| r.head.state)
        .collect()
}

fn psn_requests(sim: &ttp_sim::SimHandle) -> u64 {
    sim.stats()
        .requests_by_op
        .get("$requestPsnFromBfWorkflow")
        .copied()
        .unwrap_or(0)
}

/// Every record has the pseudonym the fTTP holds for its filter.
fn assert_all_pseudonymised(agent: &Agent, sim: &ttp_sim::SimHandle) {
    for rec in agent.store().records_in_states(|_| true).unwrap() {
        let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
        assert_eq!(
            rec.head.state,
            RecordState::Pseudonymised,
            "{}",
            rec.head.local_id
        );
        assert!(rec.head.pseudonym.is_some());
        assert_eq!(
            rec.head.pseudonym,
            sim.pseudonym_of(&bf),
            "{}",
            rec.head.local_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_study_holds_the_records_until_the_right_one_is_configured() {
    let mut cfg = sim_config(21);
    cfg.clearing = 0.0;
    cfg.unknown_study_status = 404;
    let env = setup(
        cfg,
        &[("study = \"test-study\"", "study = \"wrong-study\"")],
    )
    .await;
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, |_| {});
    store_records(&agent, &loaded, env.dir.path(), 12);

    let reg = agent
        .register_pending()
        .await
        .expect("no store or auth failure");
    assert_eq!(reg.rejected, 0, "{reg:?}");
    let blocked = reg.blocked.clone().expect("a whole-request failure");
    assert_eq!(blocked.cause, "http-404");
    assert!(
        states(&agent)
            .iter()
            .all(|s| matches!(s, RecordState::New | RecordState::Sending { .. })),
        "every record stays pending: {:?}",
        states(&agent)
    );
    // Not a verdict per record: the batch was not bisected into twelve requests.
    let sent = psn_requests(&env.sim);
    assert!(sent <= 2, "{sent} requests for one refused batch");

    // Shown where an operator looks.
    let report = status::build(agent.store(), chrono::Duration::hours(48), 1).unwrap();
    assert_eq!(report.records.pending_registration, 12);
    assert_eq!(report.records.rejected, 0);
    let text = status::render_text(&report);
    assert!(text.contains("registration paused since"), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(text.contains("[ttp] study and target"), "{text}");

    // Within the back-off nothing is sent again.
    let again = agent.register_pending().await.unwrap();
    assert!(again.blocked.is_some());
    assert_eq!(psn_requests(&env.sim), sent, "the back-off holds");

    // The operator fixes the study and restarts: no second submit.
    drop(agent);
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("study = \"wrong-study\"", "study = \"test-study\"");
    std::fs::write(&env.config_path, text).unwrap();
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, |_| {});
    let report = agent.poll_cycle().await.expect("the cycle succeeds");
    assert_eq!(report.register.pseudonymised, 12, "{report:?}");
    assert_all_pseudonymised(&agent, &env.sim);
    assert!(
        agent.store().registration_blocked().unwrap().is_none(),
        "the pause ends with the first answer per filter"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_with_the_all_shape_is_registered_on_a_later_cycle() {
    let mut cfg = sim_config(22);
    cfg.clearing = 0.0;
    cfg.psn_failure = Some(PsnFailure::All {
        code: "processing".into(),
        display: "Projekt nicht freigeschaltet".into(),
    });
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, quick);
    store_records(&agent, &loaded, env.dir.path(), 32);

    let report = agent.poll_cycle().await.expect("the cycle succeeds");
    let blocked = report.register.blocked.clone().expect("the all shape");
    assert_eq!(blocked.cause, "all");
    assert_eq!(
        blocked.display.as_deref(),
        Some("Projekt nicht freigeschaltet")
    );
    assert_eq!(
        (report.register.awaiting_clearing, report.register.rejected),
        (0, 0),
        "nothing is parked as awaiting clearing or rejected: {report:?}"
    );
    let text =
        status::render_text(&status::build(agent.store(), chrono::Duration::hours(48), 1).unwrap());
    assert!(text.contains("Projekt nicht freigeschaltet"), "{text}");
    assert!(text.contains("32 record(s) wait"), "{text}");

    // The fTTP recovers; a later cycle registers everything, once the back-off allows.
    env.sim.set_psn_failure(None).unwrap();
    let mut cycles = 0;
    while states(&agent)
        .iter()
        .any(|s| *s != RecordState::Pseudonymised)
    {
        cycles += 1;
        assert!(cycles <= 100, "not registered after {cycles} cycles");
        tokio::time::sleep(Duration::from_millis(100)).await;
        agent.poll_cycle().await.expect("the cycle succeeds");
    }
    assert_all_pseudonymised(&agent, &env.sim);
    assert!(agent.store().registration_blocked().unwrap().is_none());
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_answer_lost_in_a_crash_is_asked_for_again() {
    let mut cfg = sim_config(23);
    cfg.clearing = 1.0;
    cfg.repeat_first = 1.0;
    cfg.repeat_answers_pseudonym = true;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    // recheck_after stays at its default (7 days): only asking again can help.
    let agent = agent_with(&loaded, |o| o.settle = chrono::Duration::zero());
    assert_eq!(agent.options().recheck_after, chrono::Duration::days(7));
    store_records(&agent, &loaded, env.dir.path(), 3);
    let reg = agent.register_pending().await.unwrap();
    assert_eq!(reg.awaiting_clearing, 3);

    // The dispatcher's intent, then the effect, then a crash before the answer is stored:
    // the fTTP has registered the repeat (and stops listing it), the agent has no pseudonym.
    let listing = agent.client().request_tasks().await.unwrap();
    assert_eq!(listing.tasks.len(), 3);
    let now = chrono::Utc::now();
    let mut running = Vec::new();
    for task in listing.tasks {
        let mut rec = merge::merge_listed(None, task.key(), task, now, 1);
        rec.state = TaskState::Running;
        rec.attempts = 1;
        running.push(rec);
    }
    agent.store().put_tasks(&running).unwrap();
    agent.store().flush().unwrap();
    for rec in &running {
        let ttp_proto::TaskKind::RepeatRequest {
            study,
            bloom_filter,
            target,
        } = &rec.task.kind
        else {
            panic!("a repeat_request");
        };
        let answer = agent
            .client()
            .request_psn_for(study, target, std::slice::from_ref(bloom_filter))
            .await
            .unwrap();
        assert_eq!(answer.pseudonyms.len(), 1, "the answer that is lost");
    }
    assert!(env.sim.open_tasks().is_empty(), "the fTTP has acted");

    agent.recover().unwrap();
    for _ in 0..3 {
        agent.poll_cycle().await.expect("the cycle succeeds");
    }
    assert_all_pseudonymised(&agent, &env.sim);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_idat_answered_with_a_2xx_cut_short_is_answered_again() {
    let mut cfg = sim_config(24);
    cfg.clearing = 1.0;
    cfg.repeat_first = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, quick);
    store_records(&agent, &loaded, env.dir.path(), 1);
    agent.register_pending().await.unwrap();

    // The three attempts of the report, none of them processed by the fTTP: a dropped
    // connection, a 429, and "200, Content-Length n" with fewer bytes before the close.
    env.sim.fault_next(
        SimOperation::ProvidePatientData,
        vec![
            (FaultKind::Drop, FaultTiming::Before),
            (
                FaultKind::Status429 {
                    retry_after_secs: 1,
                },
                FaultTiming::Before,
            ),
            (FaultKind::TruncatedOk, FaultTiming::Before),
        ],
    );
    let mut cycles = 0;
    while env.sim.stats().provide_ok == 0 {
        cycles += 1;
        assert!(
            cycles <= 60,
            "the send_idat was never answered: open at the fTTP {:?}, the agent's tasks {:?}",
            env.sim.open_tasks(),
            agent.store().open_tasks_where(|_| true).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        agent.poll_cycle().await.expect("the cycle succeeds");
    }
    for _ in 0..3 {
        agent.poll_cycle().await.expect("the cycle succeeds");
    }
    let stats = env.sim.stats();
    assert_eq!(stats.duplicate_provides, 0, "{stats:?}");
    assert_eq!(stats.provide_ok, 1);
    assert_all_pseudonymised(&agent, &env.sim);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_send_idat_the_fttp_still_lists_needs_a_person() {
    let mut cfg = sim_config(25);
    cfg.clearing = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, |o| o.settle = chrono::Duration::zero());
    store_records(&agent, &loaded, env.dir.path(), 1);
    agent.register_pending().await.unwrap();
    let rec = agent.store().records_in_states(|_| true).unwrap().remove(0);
    let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
    let expires = env.sim.now() + chrono::Duration::minutes(53);
    env.sim.add_send_idat_for(&bf, &["given"], expires);

    // The agent holds the task as answered (an earlier run), the fTTP lists it anyway.
    let listing = agent.client().request_tasks().await.unwrap();
    let task = listing.tasks.into_iter().next().expect("the send_idat");
    let key = task.key();
    let answered_at = chrono::Utc::now() - chrono::Duration::minutes(5);
    let mut done = merge::merge_listed(None, key.clone(), task, answered_at, 1);
    done.state = TaskState::Done { at: answered_at };
    agent.store().put_tasks(std::iter::once(&done)).unwrap();
    agent.store().flush().unwrap();

    let report = agent.poll_cycle().await.expect("the cycle succeeds");
    assert_eq!(report.relisted_finished, 1, "{report:?}");
    let stored = agent.store().get_task(&key).unwrap().unwrap();
    assert!(
        matches!(
            stored.state,
            TaskState::NeedsAttention {
                reason: Attention::StillListed { .. }
            }
        ),
        "{:?}",
        stored.state
    );
    let r = status::build(agent.store(), chrono::Duration::hours(48), 1).unwrap();
    assert_eq!(r.summary.needs_attention, 1);
    assert_eq!(r.summary.expiring_soon, 1);
    let text = status::render_text(&r);
    assert!(
        text.contains("the fTTP still lists a task answered at"),
        "{text}"
    );
    assert!(
        text.contains("tasks open: 1, of which the agent works on 0, 1 need a person"),
        "{text}"
    );
    assert!(text.contains("listed by the fTTP"), "{text}");
    let line = &r.needs_attention[0];
    assert!(line.expires.is_some() && line.urgent, "{line:?}");

    // Re-armed only with confirmation, and then answered.
    let actor = Actor::named("coordinator");
    let refused = resolve::retry_task(agent.store(), &key, &actor, chrono::Utc::now(), false);
    assert!(
        matches!(refused, Err(ResolveError::NeedsConfirmation { .. })),
        "{refused:?}"
    );
    resolve::retry_task(agent.store(), &key, &actor, chrono::Utc::now(), true).unwrap();
    let audit = agent.store().recent_audit(5).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "resolve-retry" && a.subject == key.0)
    );
    agent.poll_cycle().await.expect("the cycle succeeds");
    assert_eq!(env.sim.stats().provide_ok, 1);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_an_older_version_rejected_for_a_wrong_study_are_sent_again() {
    let mut cfg = sim_config(26);
    cfg.clearing = 0.0;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent_with(&loaded, |_| {});
    store_records(&agent, &loaded, env.dir.path(), 4);
    // What older versions left behind: every record rejected with the batch's HTTP status.
    let mut recs = agent.store().records_in_states(|_| true).unwrap();
    recs.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
    for (i, rec) in recs.iter_mut().enumerate() {
        rec.head.state = RecordState::Rejected {
            code: if i < 3 {
                "http-404"
            } else {
                "http://hl7.org/fhir/issue-type#invalid"
            }
            .into(),
        };
    }
    agent.store().update_records(&recs).unwrap();
    agent.store().flush().unwrap();
    let actor = Actor::named("coordinator");
    let now = chrono::Utc::now();

    let missing = resolve::retry_records(
        agent.store(),
        &resolve::RecordSelection::Cause("http-400".into()),
        &actor,
        now,
    );
    assert!(
        matches!(missing, Err(ResolveError::NoRejectedRecords { .. })),
        "{missing:?}"
    );
    let done = resolve::retry_records(
        agent.store(),
        &resolve::RecordSelection::Cause("http-404".into()),
        &actor,
        now,
    )
    .unwrap();
    assert_eq!(done.len(), 3);
    let one = resolve::retry_records(
        agent.store(),
        &resolve::RecordSelection::Ids(vec![recs[3].head.local_id.clone()]),
        &actor,
        now,
    )
    .unwrap();
    assert_eq!(
        one[0].from,
        "rejected (http://hl7.org/fhir/issue-type#invalid)"
    );
    let again = resolve::retry_records(
        agent.store(),
        &resolve::RecordSelection::Ids(vec![recs[3].head.local_id.clone()]),
        &actor,
        now,
    );
    assert!(
        matches!(again, Err(ResolveError::RecordNotRejected { .. })),
        "{again:?}"
    );
    let audit = agent.store().recent_audit(10).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "resolve-retry-record")
            .count(),
        4
    );

    agent.register_pending().await.unwrap();
    assert_all_pseudonymised(&agent, &env.sim);
    env.sim.shutdown().await;
}
