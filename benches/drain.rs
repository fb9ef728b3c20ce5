//! Task drain: one `$requestTasks` response with 10,000 open tasks of all three types, every
//! one answered with durable state, by the real `ttp-agent poll --once` process.
//!
//! `cargo bench --bench drain`. The simulator runs in this process (its own threads); the agent
//! runs as a child process, so `wait4` gives the agent's own CPU time and peak RSS, untouched
//! by the simulator's share. Environment:
//!
//! * `DRAIN_BENCH_TASKS` (default 10,000): tasks in the listing.
//! * `DRAIN_BENCH_POLLS` (default 2): polls to time. The first answers every task; the second
//!   is the steady state that follows (the fTTP lists the `dic_psn_available` tasks again, and
//!   the tasks the answers raised: new `send_idat` after each `repeat_request`,
//!   `dic_psn_available` after each `send_idat`).
//! * `DRAIN_BENCH_LOG_LEVEL` (default `info`, the production default): the agent's log level;
//!   its log goes to a file.
//! * `DRAIN_BENCH_WRAP`: a command to run the agent under, e.g. `perf record -g -o drain.data`
//!   (then the CPU figures include the wrapper).
//! * `DRAIN_BENCH_KEEP`: keep the working directory (store, logs) and print its path.
//!
//! Set-up, not timed: `ttp-agent submit` registers as many synthetic records as there will be
//! tasks; the simulator (clearing 60 %, half of them starting with `repeat_request`) raises a
//! `repeat_request` or a `send_idat` for each record in a clearing and pseudonymises the rest;
//! for those the bench injects a `dic_psn_available` each (the pseudonym the agent already has,
//! as when a clearing's result arrives after a direct answer).
//!
//! The configuration lifts `[ttp] rate_limit_per_second` (default 5 requests/s, a courtesy to
//! the fTTP) to 100,000 and `max_concurrency` to 8 (= `[dispatch] concurrency`): at 5 requests/s
//! 6,000 answers would take 20 minutes whatever the agent does. Everything else is the starter
//! configuration.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::{BenchResult, env_or, machine_line};
use ttp_agent::domain::RecordState;

const GPAS: &str = "https://ths-greifswald.de/gpas";

fn dic_task(filter: &[u8], pseudonym: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "dic_psn_available",
        "part": [
            { "name": "bloomfilter",
              "valueBase64Binary": base64::engine::general_purpose::STANDARD.encode(filter) },
            { "name": "target", "valueIdentifier": { "system": GPAS, "value": support::TARGET } },
            { "name": "pseudonym", "valueIdentifier": { "system": GPAS, "value": pseudonym } }
        ]
    })
}

/// Runs `ttp-agent ARGS` to completion; returns its stdout, usage and wall time.
fn run_agent(
    args: &[&str],
    log: &std::path::Path,
    level: &str,
) -> BenchResult<(String, support::ChildUsage, Duration)> {
    let wrap = std::env::var("DRAIN_BENCH_WRAP").unwrap_or_default();
    let mut words: Vec<&str> = wrap.split_whitespace().collect();
    words.push(support::AGENT_BIN);
    let out = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let child = Command::new(words[0])
        .args(&words[1..])
        .args(args)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env("TTP_AGENT_LOG_LEVEL", level)
        .stdin(Stdio::null())
        .stdout(out.reopen()?)
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let usage = support::wait_child(child)?;
    let wall = started.elapsed();
    let stdout = std::fs::read_to_string(out.path())?;
    if usage.exit_code != 0 {
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log_text.lines().rev().take(20).collect();
        return Err(format!(
            "ttp-agent {} exited with {}; stdout: {stdout}\nlast log lines:\n{}",
            args.join(" "),
            usage.exit_code,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
        .into());
    }
    Ok((stdout, usage, wall))
}

fn main() -> BenchResult {
    let tasks: usize = env_or("DRAIN_BENCH_TASKS", 10_000)?;
    let polls: usize = env_or("DRAIN_BENCH_POLLS", 2)?;
    let level: String = env_or("DRAIN_BENCH_LOG_LEVEL", "info".to_string())?;
    println!("drain: {tasks} tasks, {polls} poll(s), agent log level {level}");
    println!("{}", machine_line());

    let runtime = support::sim_runtime()?;
    let sim = runtime.block_on(ttp_sim::start(ttp_sim::SimConfig {
        clearing: 0.6,
        repeat_first: 0.5,
        ..support::sim_config(7)
    }))?;
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let config = support::write_config(
        dir,
        &sim.base_url(),
        &[
            (
                "[ttp]\n",
                "[ttp]\nrate_limit_per_second = 100000.0\nmax_concurrency = 8\n",
            ),
            ("batch_size = 50", "batch_size = 100"),
        ],
    )?;
    let config = config
        .to_str()
        .ok_or("temporary path is not UTF-8")?
        .to_string();
    let records = dir.join("records.csv");
    std::fs::write(&records, support::records_csv(tasks, 11))?;

    // Set-up: register the records (this is also a small submit benchmark).
    let (_, usage, wall) = run_agent(
        &[
            "submit",
            "--config",
            &config,
            records.to_str().ok_or("path")?,
        ],
        &dir.join("submit.log"),
        &level,
    )?;
    println!(
        "set-up: submit of {tasks} records: {:.2} s wall, {:.2} s CPU",
        wall.as_secs_f64(),
        usage.cpu().as_secs_f64()
    );

    let open = sim.open_tasks().len();
    let pseudonymised = {
        let agent_config = ttp_agent::config::AgentConfig::from_file_and_env(
            Some(std::path::Path::new(&config)),
            std::iter::empty(),
        )?;
        let secrets = agent_config.load_secrets()?;
        let store = ttp_agent::cli::context::open_store(&agent_config, &secrets)
            .map_err(|e| format!("{e:#}"))?;
        store.records_in_states(|s| *s == RecordState::Pseudonymised)?
    };
    let dic = tasks.saturating_sub(open).min(pseudonymised.len());
    for rec in &pseudonymised[..dic] {
        let psn = rec
            .head
            .pseudonym
            .as_deref()
            .ok_or("pseudonymised record without pseudonym")?;
        sim.inject_task(dic_task(&rec.head.bloom_filter, psn));
    }
    let by_type = |v: &[serde_json::Value]| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for t in v {
            *counts
                .entry(t["name"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        counts
    };
    println!(
        "listing: {} open tasks at the simulator {:?} + {dic} injected dic_psn_available",
        open,
        by_type(&sim.open_tasks())
    );

    for poll in 1..=polls {
        let before = sim.stats();
        let sim_cpu = support::threads_cpu("ttp-sim");
        let (stdout, usage, wall) = run_agent(
            &["poll", "--once", "--json", "--config", &config],
            &dir.join(format!("poll-{poll}.log")),
            &level,
        )?;
        let sim_cpu = support::threads_cpu("ttp-sim").saturating_sub(sim_cpu);
        let after = sim.stats();
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| format!("poll report is not JSON ({e}): {stdout}"))?;
        let n = |path: &str| {
            report
                .pointer(path)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let listed = n("/listed") as usize;
        let answered = n("/dispatch/done");
        let provides = after.provide_ok - before.provide_ok;
        println!(
            "poll {poll}: listed {listed} ({} new); done {answered}, retry {}, in doubt {}, attention {}, expired {}; {} open after; \
             fTTP received {provides} $providePatientData, {} duplicates",
            n("/new_tasks"),
            n("/dispatch/retry"),
            n("/dispatch/in_doubt"),
            n("/dispatch/attention"),
            n("/dispatch/expired"),
            n("/open_after"),
            after.duplicate_provides
        );
        if after.duplicate_provides != 0 || n("/dispatch/retry") + n("/dispatch/in_doubt") != 0 {
            return Err(
                "the drain did not complete cleanly; the figures would mean nothing".into(),
            );
        }
        let per_task = |d: Duration| d.as_secs_f64() * 1e6 / listed.max(1) as f64;
        println!(
            "RESULT drain poll={poll} tasks={listed} wall_s={:.3} tasks_per_s={:.0} agent_cpu_s={:.3} \
             (user {:.3}, sys {:.3}) agent_cpu_us_per_task={:.1} peak_rss_mib={:.1} \
             voluntary_ctx_switches={} sim_cpu_s={:.3} load={}",
            wall.as_secs_f64(),
            listed as f64 / wall.as_secs_f64(),
            usage.cpu().as_secs_f64(),
            usage.user.as_secs_f64(),
            usage.system.as_secs_f64(),
            per_task(usage.cpu()),
            support::mib(usage.max_rss_kib),
            usage.voluntary_switches,
            sim_cpu.as_secs_f64(),
            support::loadavg()
        );
    }
    let store_dir = dir.join("store");
    let on_disk: u64 = walk_size(&store_dir);
    println!(
        "store after the drain: {:.1} MiB on disk",
        on_disk as f64 / (1024.0 * 1024.0)
    );
    if std::env::var_os("DRAIN_BENCH_KEEP").is_some() {
        println!("kept: {}", temp.keep().display());
    }
    runtime.block_on(sim.shutdown());
    Ok(())
}

fn walk_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
