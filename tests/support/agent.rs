//! Shared set-up for the agent's end-to-end tests: a simulator on loopback, a starter
//! configuration pointing at it, and synthetic records.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ttp_agent::agent::{Agent, Shutdown};
use ttp_agent::cli::context::{self, Loaded};
use ttp_agent::config::AgentConfig;
use ttp_encode::profile::ProfileEncoder;

// Both test binaries include this module; the soak binary uses not every name.
#[allow(unused_imports)]
pub use ttp_agent::testkit::{API_KEY, STUDY, TARGET, sim_config};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub sim: ttp_sim::SimHandle,
}

/// Start a simulator and write a starter configuration for it with `edits` (text
/// replacements of agent.toml, each must match); the admin endpoint is on a port the OS picks.
pub async fn setup(sim: ttp_sim::SimConfig, edits: &[(&str, &str)]) -> Env {
    let sim = ttp_sim::start(sim).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = ttp_agent::testkit::starter_config(dir.path(), &sim.base_url(), edits)
        .unwrap_or_else(|e| panic!("starter config: {e:#}"));
    Env {
        dir,
        config_path,
        sim,
    }
}

pub fn load(config_path: &Path) -> Loaded {
    let config = AgentConfig::from_file_and_env(Some(config_path), std::iter::empty())
        .expect("config loads");
    let secrets = config.load_secrets().expect("secrets load");
    Loaded { config, secrets }
}

pub fn agent(loaded: &Loaded) -> Arc<Agent> {
    context::agent(loaded, Shutdown::never()).expect("agent builds")
}

pub fn encoder(loaded: &Loaded) -> ProfileEncoder {
    context::encoder(&loaded.config).expect("encoder loads")
}

/// Stores `n` records of [`records_csv`] and registers them, as `submit` does; the store is
/// flushed, so a process started after the returned agent is dropped finds them.
pub async fn submit_records(env: &Env, n: usize) -> Arc<Agent> {
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let path = env.dir.path().join("records.csv");
    std::fs::write(&path, records_csv(n)).unwrap();
    let records = ttp_agent::submit::read_records(&path).unwrap();
    let encoded = ttp_agent::submit::encode_records(&encoder, records, &|_| {}).unwrap();
    ttp_agent::submit::check_profile(agent.store(), &encoder).unwrap();
    ttp_agent::submit::store_records(agent.store(), &encoded, 100).unwrap();
    agent.register_pending().await.unwrap();
    agent.store().flush().unwrap();
    agent
}

const GIVEN: [&str; 12] = [
    "Anna",
    "Jürgen",
    "Maria",
    "Karl-Heinz",
    "Zoë",
    "Ömer",
    "Lena",
    "Till",
    "Sophie",
    "Jonas",
    "Mia",
    "Felix",
];
const FAMILY: [&str; 12] = [
    "Müller", "Schmidt", "Schäfer", "Weiß", "Bauer", "Yılmaz", "Fischer", "Becker", "Wagner",
    "Hoffmann", "Schulz", "Koch",
];
const CITIES: [&str; 6] = [
    "Greifswald",
    "Rostock",
    "Stralsund",
    "Anklam",
    "Wolgast",
    "Berlin",
];

/// `n` synthetic records as CSV (distinct people: the birth date varies with the index).
pub fn records_csv(n: usize) -> String {
    let mut out = String::from("local_id,given,family,birthdate,gender,birthplace\n");
    for i in 0..n {
        let day = 1 + i % 28;
        let month = 1 + (i / 28) % 12;
        let year = 1930 + (i / 336) % 90;
        out.push_str(&format!(
            "case-{i:05},{},{},{year:04}-{month:02}-{day:02},{},{}\n",
            GIVEN[i % GIVEN.len()],
            FAMILY[(i / 3) % FAMILY.len()],
            if i % 2 == 0 { "female" } else { "male" },
            CITIES[i % CITIES.len()],
        ));
    }
    out
}

/// The names and places [`records_csv`] puts into records: none of them may appear where only
/// codes and identifiers belong (logs, `status`, the disclosure log).
pub fn idat_values() -> Vec<&'static str> {
    GIVEN
        .iter()
        .chain(&FAMILY)
        .chain(&CITIES)
        .copied()
        .collect()
}

/// The disclosure log against the simulator's own record of accepted answers: the fTTP task ids
/// the log says the fTTP has (an `accepted` entry, or an `in-doubt` one settled as accepted),
/// each logged once and with the element codes the Patient the simulator accepted carried;
/// every `in-doubt` entry settled exactly once by a later entry; the chain intact. Returns the
/// number of entries.
pub fn assert_disclosures_match_the_sim(
    store: &ttp_agent::store::Store,
    sim: &ttp_sim::SimHandle,
) -> usize {
    use std::collections::BTreeMap;
    use ttp_agent::domain::DisclosureEvent;
    let log = store.disclosures_after(0, usize::MAX).unwrap();
    let mut logged: BTreeMap<String, Vec<ttp_proto::IdatElement>> = BTreeMap::new();
    for e in &log {
        if matches!(
            e.event,
            DisclosureEvent::Accepted | DisclosureEvent::SettledAccepted
        ) {
            assert!(
                logged.insert(e.task_id.clone(), e.sent.clone()).is_none(),
                "{} logged as accepted twice: {e:?}",
                e.task_id
            );
        }
    }
    for doubt in log.iter().filter(|e| e.event == DisclosureEvent::InDoubt) {
        let settled: Vec<_> = log
            .iter()
            .filter(|e| e.settles == Some(doubt.seq))
            .collect();
        assert_eq!(settled.len(), 1, "{doubt:?} settled by {settled:?}");
        assert!(settled[0].seq > doubt.seq, "{settled:?}");
    }
    let mut accepted: BTreeMap<String, Vec<ttp_proto::IdatElement>> = BTreeMap::new();
    for (id, patient) in sim.received_patients() {
        let codes = ttp_proto::patient::elements_present(&patient)
            .into_iter()
            .collect();
        assert!(
            accepted.insert(id.clone(), codes).is_none(),
            "{id} accepted twice"
        );
    }
    let only_logged: Vec<_> = logged
        .keys()
        .filter(|k| !accepted.contains_key(*k))
        .collect();
    let only_accepted: Vec<_> = accepted
        .keys()
        .filter(|k| !logged.contains_key(*k))
        .collect();
    assert!(
        only_logged.is_empty() && only_accepted.is_empty(),
        "the log and the fTTP disagree: logged but not accepted {only_logged:?}, accepted but not logged {only_accepted:?}"
    );
    assert_eq!(logged, accepted, "the element codes differ");
    let check = store.verify_disclosures().unwrap();
    assert_eq!(check.broken, None);
    assert_eq!(check.entries, log.len() as u64);
    log.len()
}

/// What a run against the simulator must show at the end, whatever was done to the agent in
/// between (kills, faults): no IDAT answer sent twice or out of protocol, no clearing aborted,
/// no task expired, a substantial scenario (more than `min_send_idat` `send_idat` tasks), and
/// every `send_idat` answered exactly once.
pub fn assert_protocol_kept(stats: &ttp_sim::SimStats, min_send_idat: u64) {
    assert_eq!(stats.duplicate_provides, 0, "IDAT sent twice: {stats:?}");
    assert_eq!(
        stats.provide_violations_total, 0,
        "{:?}",
        stats.provide_violations
    );
    assert_eq!(stats.clearings_aborted, 0, "{stats:?}");
    assert!(
        stats.tasks_expired_by_type.values().all(|&n| n == 0),
        "{stats:?}"
    );
    let send_idat = stats
        .tasks_raised_by_type
        .get("send_idat")
        .copied()
        .unwrap_or(0);
    assert!(
        send_idat > min_send_idat,
        "the scenario must be substantial: {stats:?}"
    );
    assert_eq!(stats.provide_ok, send_idat, "every send_idat answered once");
}

/// Polls until every record has its pseudonym and the simulator lists nothing; no cycle may
/// leave a task needing attention, and at most 11 cycles may be needed.
pub async fn run_until_settled(env: &Env, agent: &Arc<Agent>) {
    for cycle in 1.. {
        let report = agent.poll_cycle().await.expect("cycle succeeds");
        assert_eq!(report.dispatch.attention, 0, "{report:?}");
        let waiting = agent
            .store()
            .records_in_states(|s| *s != ttp_agent::domain::RecordState::Pseudonymised)
            .unwrap();
        if waiting.is_empty() && env.sim.open_tasks().is_empty() {
            return;
        }
        assert!(
            cycle < 12,
            "not settled after {cycle} cycles: {} waiting",
            waiting.len()
        );
    }
}

/// `ttp-agent <args> --config <env's config>` as local user `user` (the actor a command records
/// when no daemon runs: `USER`, with `SUDO_USER` removed).
pub fn run_as(env: &Env, user: &str, args: &[&str]) -> std::process::Output {
    crate::support::hermetic::command(env!("CARGO_BIN_EXE_ttp-agent"))
        .args(args)
        .arg("--config")
        .arg(&env.config_path)
        .env_remove("SUDO_USER")
        .env("USER", user)
        .output()
        .expect("binary runs")
}

/// The stored key of the `send_idat` with the fTTP's task id `task_id`.
pub fn send_idat_key(agent: &Agent, task_id: &str) -> ttp_proto::TaskKey {
    agent
        .store()
        .tasks()
        .unwrap()
        .into_iter()
        .find(|t| {
            matches!(&t.task.kind, ttp_proto::TaskKind::SendIdat { task_id: id, .. } if id == task_id)
        })
        .unwrap_or_else(|| panic!("no stored task for {task_id}"))
        .key
}

/// A new agent on the env's store, as after a restart.
pub fn reopen(env: &Env) -> Arc<Agent> {
    agent(&load(&env.config_path))
}
