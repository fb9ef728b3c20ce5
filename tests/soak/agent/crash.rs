//! The crash test: the agent binary is killed with SIGKILL at random points of a run (at least
//! 20 times, over a few hundred tasks) and restarted. In the end every task must be done exactly
//! as if no crash had happened: every record has the pseudonym the fTTP assigned to its filter,
//! every `send_idat` was answered exactly once, nothing expired or was aborted.
//!
//! The simulator runs in this test process and is the ground truth: it counts every request,
//! every duplicate `$providePatientData` (the one request that must never be repeated), and
//! every data-minimisation violation. The disclosure log must list exactly the answers it
//! accepted, and no log or output may name an IDAT value.

use std::time::{Duration, Instant};

use crate::support::agent::*;
use crate::support::hermetic;
use crate::support::logs::kept_dir;
use crate::support::robust::{
    BIN, CrashRun, FinalDaemon, assert_pseudonyms_are_the_fttps, settle_after_final_daemon,
};
use rand::{RngExt as _, SeedableRng as _};

const RECORDS: usize = 250;
const MIN_KILLS: usize = 20;

/// Poll every second, without jitter, judge in-doubt answers after 2 s (the robustness tests'
/// fast schedule), with debug logs; a missed dic_psn_available is recovered by registering
/// the filter again after 3 s.
fn fast_schedule() -> Vec<(&'static str, &'static str)> {
    let mut edits = crate::support::robust::fast_schedule();
    edits.extend([
        ("level = \"info\"", "level = \"debug\""),
        ("batch_size = 50", "batch_size = 50\nrecheck_after = \"3s\""),
    ]);
    edits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_repeats_nothing() {
    let mut cfg = sim_config(42);
    cfg.clearing = 0.6;
    cfg.repeat_first = 0.4;
    // A little latency per request spreads a cycle over a few hundred milliseconds, so the
    // kills land inside waves, between intent and outcome, mid-batch.
    cfg.latency = Some(Duration::from_millis(4));
    let env = setup(cfg, &fast_schedule()).await;
    let records = env.dir.path().join("records.csv");
    std::fs::write(&records, records_csv(RECORDS)).unwrap();
    let config = env.config_path.to_str().unwrap().to_string();
    // Kept after the test (target/tmp/test-logs/...), failure or not.
    let logs = kept_dir();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_125);
    let mut kills = 0usize;
    let mut runs = 0usize;
    let mut submitted = false;
    while kills < MIN_KILLS {
        assert!(runs < 80, "could not land {MIN_KILLS} kills in {runs} runs");
        runs += 1;
        // The first runs submit (kills land in encoding, storing, registering); the rest
        // run the daemon (kills land in merges, waves, sleeps). On a loaded machine all four
        // killed submits may end before anything was stored; a site then runs `submit` again
        // (it is idempotent), so the fifth run does that and is not killed. Without it the
        // daemon runs had nothing to work on and the test failed for want of records.
        let finish_submit = runs == 5 && !submitted;
        let args: Vec<&str> = if runs <= 4 || finish_submit {
            vec!["submit", "--config", &config, records.to_str().unwrap()]
        } else {
            vec!["run", "--config", &config]
        };
        if finish_submit {
            let out = hermetic::command(BIN)
                .args(&args)
                .env("TTP_AGENT_LOG_FORMAT", "text")
                .output()
                .expect("the agent starts");
            assert!(
                out.status.success(),
                "the completing submit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            submitted = true;
            continue;
        }
        let run = CrashRun::start(&args, logs.join(format!("run-{runs:02}.log")));
        let delay = Duration::from_millis(rng.random_range(30..900));
        let log = run.log_path();
        match run.kill_after(delay).await {
            None => kills += 1,
            Some(status) => {
                // `submit` may finish before the kill; that is fine. Anything else is not.
                assert!(
                    status.success() && args[0] == "submit",
                    "run {runs} ({}) exited by itself with {status}:\n{}",
                    args[0],
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                submitted = true;
            }
        }
    }

    // Let a final daemon run until the fTTP has nothing open and every filter is
    // pseudonymised, then stop it with SIGTERM (which must exit 0).
    let mut daemon = FinalDaemon::start(&config);
    let started = Instant::now();
    loop {
        let stats = env.sim.stats();
        let open = env.sim.open_tasks().len();
        if open == 0
            && stats.clearings_finished == stats.clearings_started
            && stats.registrations >= RECORDS as u64
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not converged: {open} open tasks, {stats:?}"
        );
        daemon.assert_alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more cycle so the agent stores what the last listing said.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    daemon.stop();

    assert_protocol_kept(&env.sim.stats(), 50);

    // The agent's own view must converge too. A dic_psn_available whose every listing was
    // fetched by a process killed before it reached the disk is recovered by registering the
    // filter again after `recheck_after`; give that a few one-shot cycles.
    let (all, open, rechecks) = settle_after_final_daemon(&env.config_path).await;
    assert_eq!(all.len(), RECORDS, "no record lost");
    assert_pseudonyms_are_the_fttps(&all, &env.sim);
    assert!(open.is_empty(), "tasks left open: {open:?}");
    let stats = env.sim.stats();
    assert_eq!(
        stats.duplicate_provides, 0,
        "an IDAT answer was sent twice: {stats:?}"
    );
    // The disclosure log has one accepted entry per answer the fTTP accepted: no gap, no
    // duplicate, whatever the kills hit (issue 15, item 4).
    let loaded = load(&env.config_path);
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let entries = assert_disclosures_match_the_sim(&store, &env.sim);
    drop(store);
    // Its output, and the logs of every killed and final run, name no IDAT value.
    let printed = crate::support::robust::run_bin(
        &["disclosures", "--config", &config, "--format", "json"],
        &[],
    );
    assert!(printed.status.success(), "{printed:?}");
    let mut texts = vec![String::from_utf8_lossy(&printed.stdout).into_owned()];
    for file in std::fs::read_dir(&logs).unwrap() {
        texts.push(std::fs::read_to_string(file.unwrap().path()).unwrap_or_default());
    }
    for value in idat_values() {
        for text in &texts {
            assert!(!text.contains(value), "{value} in the output or a log");
        }
    }
    eprintln!(
        "crash test: {kills} SIGKILLs over {runs} runs; {rechecks} recheck cycle(s); {} tasks raised, {} IDAT answers, {entries} disclosure log entries, {} registrations ({} repeated, idempotent)",
        stats.tasks_raised_by_type.values().sum::<u64>(),
        stats.provide_ok,
        stats.registrations,
        stats.duplicate_registrations
    );
    env.sim.shutdown().await;
}
