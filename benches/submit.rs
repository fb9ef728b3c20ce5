//! Submit: records from a CSV file encoded, stored and registered with
//! `$requestPsnFromBfWorkflow` in batches, against the simulator on loopback.
//!
//! `cargo bench --bench submit`. Two measurements on fresh stores:
//!
//! 1. **End to end**: the real `ttp-agent submit` process (wall time, its CPU time and peak RSS
//!    from `wait4`).
//! 2. **Split**, in this process with the library functions `submit` is made of: reading and
//!    validating the CSV, encoding (all cores), storing (`New`, flushed), registering (per batch:
//!    intents of a group of batches + one flush, requests with several batches in flight,
//!    answers stored as they arrive and flushed with the next group). The HTTP share of
//!    registering is then measured alone by sending the same batches again, as many at once
//!    (the simulator answers known filters the same way, as the fTTP does); the store share is
//!    the difference.
//!
//! Environment: `SUBMIT_BENCH_RECORDS` (default 100,000), `SUBMIT_BENCH_BATCH` (default 100,
//! `[submit] batch_size`), `SUBMIT_BENCH_IN_FLIGHT` (default 4, `[submit] batches_in_flight`;
//! `[ttp] max_concurrency` is set to match), `SUBMIT_BENCH_SKIP_CLI=1` (only the split),
//! `SUBMIT_BENCH_WRAP`: a command to run the agent under, e.g. `perf record -g -o submit.data`
//! (then the CPU figures include the wrapper).
//!
//! The configuration lifts `[ttp] rate_limit_per_second` (default 5 requests/s) to 100,000:
//! at 5 requests/s registration is capped at 5 × batch_size records/s by policy, not by the agent.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use support::{BenchResult, env_or, machine_line, per_sec};
use ttp_agent::agent::Shutdown;
use ttp_agent::cli::context::{self, Loaded};
use ttp_agent::config::AgentConfig;
use ttp_agent::submit;
use ttp_proto::BloomFilter;

fn setup(
    dir: &std::path::Path,
    base_url: &str,
    batch: usize,
    in_flight: usize,
    records: &str,
) -> BenchResult<(String, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let config = support::write_config(
        dir,
        base_url,
        &[
            (
                "[ttp]\n",
                &format!(
                    "[ttp]\nrate_limit_per_second = 100000.0\nmax_concurrency = {}\n",
                    in_flight.max(4)
                ),
            ),
            (
                "batch_size = 50",
                &format!("batch_size = {batch}\nbatches_in_flight = {in_flight}"),
            ),
        ],
    )?;
    let csv = dir.join("records.csv");
    std::fs::write(&csv, records)?;
    Ok((
        config
            .to_str()
            .ok_or("temporary path is not UTF-8")?
            .to_string(),
        csv,
    ))
}

fn line(what: &str, d: Duration, n: usize, total: Duration) -> String {
    format!(
        "  {what:<34} {:>7.3} s  {:>9.0} records/s  {:>5.1} %",
        d.as_secs_f64(),
        per_sec(n, d),
        100.0 * d.as_secs_f64() / total.as_secs_f64()
    )
}

fn main() -> BenchResult {
    let n: usize = env_or("SUBMIT_BENCH_RECORDS", 100_000)?;
    let batch: usize = env_or("SUBMIT_BENCH_BATCH", 100)?;
    let in_flight: usize = env_or("SUBMIT_BENCH_IN_FLIGHT", 4)?;
    let skip_cli: u8 = env_or("SUBMIT_BENCH_SKIP_CLI", 0)?;
    println!("submit: {n} records, batch_size {batch}, batches_in_flight {in_flight}");
    println!("{}", machine_line());

    let sim_rt = support::sim_runtime()?;
    let sim = sim_rt.block_on(ttp_sim::start(support::sim_config(3)))?;
    let temp = tempfile::tempdir()?;
    let records = support::records_csv(n, 5);

    if skip_cli == 0 {
        let (config, csv) = setup(
            &temp.path().join("cli"),
            &sim.base_url(),
            batch,
            in_flight,
            &records,
        )?;
        let log = temp.path().join("cli-submit.log");
        let out = tempfile::NamedTempFile::new()?;
        let started = Instant::now();
        let wrap = std::env::var("SUBMIT_BENCH_WRAP").unwrap_or_default();
        let mut words: Vec<&str> = wrap.split_whitespace().collect();
        words.push(support::AGENT_BIN);
        let child = Command::new(words[0])
            .args(&words[1..])
            .args(["submit", "--json", "--config", &config])
            .arg(&csv)
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(out.reopen()?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let usage = support::wait_child(child)?;
        let wall = started.elapsed();
        let stdout = std::fs::read_to_string(out.path())?;
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        let sent = summary
            .pointer("/registration/sent")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if usage.exit_code != 0 || sent != n as u64 {
            return Err(format!(
                "ttp-agent submit exited with {} and registered {sent} of {n}; log: {}",
                usage.exit_code,
                std::fs::read_to_string(&log).unwrap_or_default()
            )
            .into());
        }
        println!(
            "RESULT submit-cli records={n} wall_s={:.2} records_per_s={:.0} cpu_s={:.2} (user {:.2}, sys {:.2}) peak_rss_mib={:.1} load={}",
            wall.as_secs_f64(),
            per_sec(n, wall),
            usage.cpu().as_secs_f64(),
            usage.user.as_secs_f64(),
            usage.system.as_secs_f64(),
            support::mib(usage.max_rss_kib),
            support::loadavg()
        );
    }

    // The split, in-process.
    let (config, csv) = setup(
        &temp.path().join("split"),
        &sim.base_url(),
        batch,
        in_flight,
        &records,
    )?;
    let agent_config =
        AgentConfig::from_file_and_env(Some(std::path::Path::new(&config)), std::iter::empty())?;
    let secrets = agent_config.load_secrets()?;
    let loaded = Loaded {
        config: agent_config,
        secrets,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let encoder = context::encoder(&loaded.config).map_err(|e| format!("{e:#}"))?;

    let t0 = Instant::now();
    let input = submit::read_records(&csv)?;
    let t_read = t0.elapsed();

    let t1 = Instant::now();
    let encoded = submit::encode_records(&encoder, input, &|_| {})?;
    let t_encode = t1.elapsed();

    let t2 = Instant::now();
    let agent = context::agent(&loaded, Shutdown::never()).map_err(|e| format!("{e:#}"))?;
    submit::check_profile(agent.store(), &encoder)?;
    let stored = submit::store_records(agent.store(), &encoded, 10_000)?;
    let t_store = t2.elapsed();

    let t3 = Instant::now();
    let registered = rt.block_on(agent.register_pending())?;
    let t_register = t3.elapsed();
    let total = t0.elapsed();
    if stored.inserted != n || registered.sent != n {
        return Err(format!("stored {stored:?}, registered {registered:?}").into());
    }

    // The HTTP share: the same batches again, without the store.
    let filters: Vec<BloomFilter> = encoded
        .iter()
        .map(|r| BloomFilter(r.head.bloom_filter.clone()))
        .collect();
    let t4 = Instant::now();
    rt.block_on(async {
        let mut replies = futures_util::stream::iter(filters.chunks(batch))
            .map(|chunk| agent.client().request_psn(chunk))
            .buffer_unordered(in_flight.max(1));
        while let Some(reply) = replies.next().await {
            reply?;
        }
        Ok::<(), ttp_agent::client::TtpError>(())
    })?;
    let t_http = t4.elapsed();
    let t_register_store = t_register.saturating_sub(t_http);

    println!(
        "RESULT submit-split records={n} total_s={:.2} records_per_s={:.0} load={}",
        total.as_secs_f64(),
        per_sec(n, total),
        support::loadavg()
    );
    println!("{}", line("read + validate CSV", t_read, n, total));
    println!("{}", line("encode (all cores)", t_encode, n, total));
    println!("{}", line("store New + flush", t_store, n, total));
    println!("{}", line("register (batches)", t_register, n, total));
    println!(
        "{}",
        line("  of which HTTP (replayed alone)", t_http, n, total)
    );
    println!(
        "{}",
        line("  of which store (difference)", t_register_store, n, total)
    );
    println!(
        "  {} batches; store {:.1} MiB on disk",
        registered.batches,
        agent.store().size_on_disk()? as f64 / (1024.0 * 1024.0)
    );
    sim_rt.block_on(sim.shutdown());
    Ok(())
}
