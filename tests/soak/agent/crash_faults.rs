//! Crashes and faults together: the agent binary is killed with SIGKILL at random points while
//! it submits and runs against a simulator that fails 20 % of all responses (before and after
//! processing them), then restarted. In the end every record must have the pseudonym the fTTP
//! assigned to its filter and every `send_idat` must have been answered exactly once -- as if
//! neither the crashes nor the faults had happened.
//!
//! `TTP_CRASH_KILLS` sets the number of kills (default 20, the CI run), `TTP_CRASH_SEED` the
//! seed of the kill moments and the fault sequence, `TTP_CRASH_RECORDS` the number of records.
//! `scripts/crash-soak.sh N` runs this test with N kills in release mode.

use std::time::{Duration, Instant};

use crate::support::agent::*;
use crate::support::logs::kept_dir;
use crate::support::robust::{
    CrashRun, FinalDaemon, assert_pseudonyms_are_the_fttps, settle_after_final_daemon,
};
use rand::{RngExt as _, SeedableRng as _};
use ttp_sim::{FaultConfig, FaultKind, FaultTiming};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn edits() -> Vec<(&'static str, &'static str)> {
    vec![
        // Poll every second without jitter; judge in-doubt answers after 2 s; retry fast.
        ("cron = \"0 */15 * * * *\"", "cron = \"* * * * * *\""),
        ("jitter = \"60s\"", "jitter = \"0s\""),
        (
            "[ttp]\n",
            "[ttp]\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\nrate_limit_per_second = 50.0\n",
        ),
        (
            "[dispatch]\n",
            "[dispatch]\nretry_base = \"1s\"\nretry_cap = \"2s\"\n",
        ),
        ("level = \"info\"", "level = \"debug\""),
        // A missed dic_psn_available is recovered by registering the filter again (see below).
        ("batch_size = 50", "batch_size = 50\nrecheck_after = \"3s\""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_fault_injection_loses_nothing_and_repeats_nothing() {
    let kills_wanted = env_number("TTP_CRASH_KILLS", 20) as usize;
    let seed = env_number("TTP_CRASH_SEED", 20_261_126);
    let records_n = env_number("TTP_CRASH_RECORDS", 150) as usize;

    let mut cfg = sim_config(seed);
    cfg.clearing = 0.6;
    cfg.repeat_first = 0.4;
    cfg.latency = Some(Duration::from_millis(3));
    // A `dic_psn_available` lost to a kill or a fault is recovered by registering the filter
    // again after `[submit] recheck_after` (7 days by default, 3 s here). The fTTP lists it a
    // few more times, so that the recheck is seldom needed; but on a loaded machine the killed
    // runs can fetch all six listings of one before any merge reaches the disk (one run ended
    // with a record awaiting clearing that way), so the end waits for rechecks as
    // `agent::crash` does.
    cfg.dic_listings = 6;
    cfg.faults = FaultConfig {
        probability: 0.2,
        kinds: vec![
            FaultKind::Status(500),
            FaultKind::Status(502),
            FaultKind::Status(503),
            FaultKind::Status(504),
            FaultKind::Status429 {
                retry_after_secs: 1,
            },
            FaultKind::Delay(Duration::from_secs(2)),
            FaultKind::Drop,
            FaultKind::Truncate,
            FaultKind::Malformed,
        ],
        seed,
        when: FaultTiming::Mixed,
    };
    let env = setup(cfg, &edits()).await;
    let records = env.dir.path().join("records.csv");
    std::fs::write(&records, records_csv(records_n)).unwrap();
    // Different people can share a filter (from 252 records on, `records_csv` has birth dates
    // such as 1930-01-01 and 1930-10-01 whose bigram sets are equal): the fTTP sees each
    // filter once, and both records get its pseudonym.
    let filters = {
        let loaded = load(&env.config_path);
        let read = ttp_agent::submit::read_records(&records).unwrap();
        let encoded = ttp_agent::submit::encode_records(&encoder(&loaded), read, &|_| {}).unwrap();
        encoded
            .into_iter()
            .map(|r| r.head.bloom_filter)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
    };
    let config = env.config_path.to_str().unwrap().to_string();
    // Kept after the test (target/tmp/test-logs/...), failure or not.
    let logs = kept_dir();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut kills = 0usize;
    let mut runs = 0usize;
    let mut submits_finished = 0usize;
    while kills < kills_wanted {
        assert!(
            runs < 4 * kills_wanted + 20,
            "could not land {kills_wanted} kills in {runs} runs"
        );
        runs += 1;
        // Every fourth run submits (again): kills land in reading, encoding, storing and
        // registering, and in the registration of what an earlier submit left pending.
        let args: Vec<&str> = if runs % 4 == 1 {
            vec!["submit", "--config", &config, records.to_str().unwrap()]
        } else {
            vec!["run", "--config", &config]
        };
        // On a loaded machine every killed submit may end before it stored anything (one run
        // failed so: 0 records stored, nothing registered, "not converged"). A site then runs
        // `submit` again, which is idempotent; so the second submit turn runs to its end if no
        // submit has so far, as in `agent::crash`. Its kill point is drawn all the same, so the
        // plan of the later runs does not change.
        let finish_submit = args[0] == "submit" && runs > 1 && submits_finished == 0;
        let log_path = logs.join(format!("run-{runs:03}.log"));
        let run = CrashRun::start(&args, log_path.clone());
        let delay = Duration::from_millis(rng.random_range(30..1200));
        let ended = if finish_submit {
            Some(run.wait_for_end(Duration::from_secs(300)).await)
        } else {
            run.kill_after(delay).await
        };
        match ended {
            None => kills += 1,
            Some(status) => {
                // `submit` may finish first: with status 1 when a fault paused the
                // registration (the daemon sends the rest). A daemon never ends by itself.
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(
                    args[0] == "submit" && status.code().is_some_and(|c| c == 0 || c == 1),
                    "run {runs} ({}) exited by itself with {status}:\n{log}",
                    args[0]
                );
                assert!(!log.contains("panicked"), "{log}");
                submits_finished += 1;
            }
        }
    }

    // A last daemon, undisturbed (but still with faults), finishes the job.
    let mut daemon = FinalDaemon::start(&config);
    let converging = Instant::now();
    loop {
        let stats = env.sim.stats();
        if env.sim.open_tasks().is_empty()
            && stats.clearings_finished == stats.clearings_started
            && stats.registrations == filters
        {
            break;
        }
        if converging.elapsed() > Duration::from_secs(180) {
            let _ = daemon.terminate();
            panic!(
                "not converged: {} open tasks, {stats:?}\n{}",
                env.sim.open_tasks().len(),
                diagnose(&env)
            );
        }
        daemon.assert_alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Without faults, let the agent store what the last listings said (and resolve in-doubt
    // answers, which needs a listing after the settle time).
    env.sim.set_faults(FaultConfig::none()).unwrap();
    let loaded = load(&env.config_path);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    daemon.stop();

    let stats = env.sim.stats();
    assert_protocol_kept(&stats, 30);

    let (all, open, rechecks) = settle_after_final_daemon(&env.config_path).await;
    assert_eq!(all.len(), records_n, "no record lost");
    assert_pseudonyms_are_the_fttps(&all, &env.sim);
    assert!(open.is_empty(), "tasks left open: {open:?}");
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let integrity = store.check_integrity().unwrap();
    assert!(integrity.is_ok(), "{integrity:?}");
    // Lost answers and kills: the disclosure log still holds exactly the accepted answers.
    let entries = assert_disclosures_match_the_sim(&store, &env.sim);
    let requests: u64 = stats.requests_by_op.values().sum();
    println!(
        "crash + faults: {kills} SIGKILLs over {runs} runs ({submits_finished} submits finished \
         first, {rechecks} recheck cycle(s) at the end); {} faults injected ({} after \
         processing) in {requests} requests; {} tasks raised, {} IDAT answers, {entries} disclosure \
         log entries, {} registrations \
         of {filters} filters ({} repeated); seed {seed}; {:.0} s",
        stats.faults_injected,
        stats.faults_after_processing,
        stats.tasks_raised_by_type.values().sum::<u64>(),
        stats.provide_ok,
        stats.registrations,
        stats.duplicate_registrations,
        started.elapsed().as_secs_f64()
    );
    env.sim.shutdown().await;
}

/// What the store says about records the fTTP never saw, for a failure message, and where
/// the run logs are kept.
fn diagnose(env: &Env) -> String {
    let loaded = load(&env.config_path);
    let mut out = String::new();
    match ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets) {
        Ok(store) => {
            let all = store.records_in_states(|_| true).unwrap_or_default();
            out.push_str(&format!("{} records stored\n", all.len()));
            for rec in all {
                let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
                if env.sim.pseudonym_of(&bf).is_none() {
                    out.push_str(&format!(
                        "  {} {:?} created {} updated {} (bf {})\n",
                        rec.head.local_id,
                        rec.head.state,
                        rec.head.created_at,
                        rec.head.updated_at,
                        ttp_proto::BloomFilter(rec.head.bloom_filter).short_digest()
                    ));
                }
            }
        }
        Err(e) => out.push_str(&format!("store: {e}\n")),
    }
    out.push_str(&format!("run logs kept in {}\n", kept_dir().display()));
    out
}
