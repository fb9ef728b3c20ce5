//! The agent at scale: a store of 1,000,000 records and 100,000 finished tasks.
//!
//! `cargo bench --bench scale` measures, in order:
//!
//! 1. **Import**: building the store through the store API (records `Pseudonymised`, with
//!    sealed IDAT and a 225-byte filter, i.e. the starter profile's L = 900; tasks `Done` over
//!    the last 25 days, inside the 30-day retention), its size on disk against the raw data.
//! 2. **Open**: `Store::open` time and the RSS it adds to this process.
//! 3. **Status**: `status::build` in this process, and the whole `ttp-agent status` command.
//! 4. **Start-up**: `ttp-agent run` from `exec` to `READY=1` on `NOTIFY_SOCKET` (a datagram
//!    socket of this bench, as systemd would pass it), then the first poll cycle (READY to the
//!    `STATUS=last poll …` notification): an empty listing, over the full store.
//! 5. **Idle**: after that cycle the daemon sleeps until its next cron time (a day away); for
//!    `SCALE_BENCH_IDLE_SECS` (default 60) the bench samples its RSS, CPU time and context
//!    switches (all threads, from `/proc/PID/task/*/status`): wake-ups per second.
//!
//! 6. **Start-up again**, `SCALE_BENCH_STARTUPS` (default 3) rounds of three: after a clean
//!    stop, and after a crash whose last durable commit used redb's quick-repair (as every
//!    durable commit of the store does) or did not (then redb's open repairs by walking the
//!    whole file). A child process opens the database, commits one durable write either way
//!    and SIGKILLs itself; then the daemon is started and timed to `READY=1`.
//!
//! The same start-up and idle measurements run first on an empty store, for the footprint of
//! the agent itself. Environment: `SCALE_BENCH_RECORDS` (default 1,000,000),
//! `SCALE_BENCH_TASKS` (default 100,000), `SCALE_BENCH_IDLE_SECS` (default 60),
//! `SCALE_BENCH_DIR` (keep and reuse the store there: building it takes minutes).

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use support::agent_data::{finished_task, record, record_raw_size};
use support::{BenchResult, env_or, machine_line, mib};
use ttp_agent::domain::{LocalRecord, TaskRecord};
use ttp_agent::store::Store;

const CHUNK: u64 = 10_000;
/// Far from any bench run: the daemon polls once at start-up and then sleeps.
const CRON_DAILY: &str = "cron = \"0 30 3 * * *\"";

/// Builds the store (or reuses a complete one); returns the raw data size.
fn build_store(config: &Path, records: u64, tasks: u64) -> BenchResult<u64> {
    let store = open(config)?;
    let now = Utc::now();
    let have = store.record_counts()?.total;
    let mut raw = 0u64;
    let started = Instant::now();
    for start in (0..records).step_by(CHUNK as usize) {
        let recs: Vec<LocalRecord> = (start..(start + CHUNK).min(records))
            .map(|i| record(i, now))
            .collect();
        raw += recs.iter().map(record_raw_size).sum::<u64>();
        if start + CHUNK > have {
            store.insert_records(&recs)?;
        }
    }
    if have < records {
        store.flush()?;
        println!(
            "import: {records} records in {:.1} s ({:.0} records/s)",
            started.elapsed().as_secs_f64(),
            records as f64 / started.elapsed().as_secs_f64()
        );
    }
    let stored_tasks = store.tasks()?.len() as u64;
    if stored_tasks < tasks {
        let started = Instant::now();
        for start in (0..tasks).step_by(CHUNK as usize) {
            let batch: Vec<TaskRecord> = (start..(start + CHUNK).min(tasks))
                .map(|i| finished_task(i, now))
                .collect();
            store.put_tasks(&batch)?;
        }
        store.flush()?;
        println!(
            "import: {tasks} finished tasks in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let tasks_raw: u64 = (0..tasks)
        .map(|i| {
            let t = finished_task(i, now);
            (t.key.0.len() + serde_json::to_vec(&t).map_or(0, |v| v.len())) as u64
        })
        .sum();
    let size = store.size_on_disk()?;
    println!(
        "RESULT store records={records} tasks={tasks} on_disk_mib={:.1} raw_records_mib={:.1} ratio_to_raw_records={:.2} \
         (tasks as JSON: {:.1} MiB; ratio to records + tasks {:.2})",
        size as f64 / 1048576.0,
        raw as f64 / 1048576.0,
        size as f64 / raw as f64,
        tasks_raw as f64 / 1048576.0,
        size as f64 / (raw + tasks_raw) as f64
    );
    Ok(raw)
}

fn open(config: &Path) -> BenchResult<Store> {
    let c = ttp_agent::config::AgentConfig::from_file_and_env(Some(config), std::iter::empty())?;
    let secrets = c.load_secrets()?;
    let opts =
        ttp_agent::cli::context::store_options(&c, &secrets).map_err(|e| format!("{e:#}"))?;
    Ok(Store::open(&opts)?)
}

/// Per-process figures from /proc: RSS (KiB), CPU ticks, context switches of all threads.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    cpu: Duration,
    switches: u64,
    threads: u64,
}

fn sample(pid: u32) -> ProcSample {
    let base = format!("/proc/{pid}");
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let cpu_ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let mut switches = 0;
    let mut threads = 0;
    if let Ok(dir) = std::fs::read_dir(format!("{base}/task")) {
        for t in dir.flatten() {
            let status = t.path().join("status");
            let status = status.to_str().unwrap_or("");
            threads += 1;
            switches += support::proc_field(status, "voluntary_ctxt_switches:").unwrap_or(0)
                + support::proc_field(status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        }
    }
    let status = format!("{base}/status");
    ProcSample {
        rss_kib: support::proc_field(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: support::proc_field(&status, "VmHWM:").unwrap_or(0),
        cpu: Duration::from_secs_f64(cpu_ticks as f64 / ticks),
        switches,
        threads,
    }
}

/// A daemon under test, with the notification socket it reports to.
struct Daemon {
    child: Child,
    socket: UnixDatagram,
    started: Instant,
}

impl Daemon {
    fn start(config: &Path, dir: &Path) -> BenchResult<Daemon> {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        let started = Instant::now();
        let child = Command::new(support::AGENT_BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &path)
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log"))?)
            .spawn()?;
        Ok(Daemon {
            child,
            socket,
            started,
        })
    }

    /// Waits for a notification containing `needle`; returns it and the time since `exec`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> BenchResult<(String, Duration)> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no {needle:?} notification within {timeout:?}").into());
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    if msg.contains(needle) {
                        return Ok((msg, self.started.elapsed()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the daemon exited with {status}").into());
            }
        }
    }

    fn stop(mut self) -> BenchResult {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the daemon exited with {status} after SIGTERM").into());
        }
        Ok(())
    }
}

/// Start-up to READY, the first cycle, then `idle` of sleeping. `label` names the store.
fn daemon_run(label: &str, config: &Path, dir: &Path, idle: Duration) -> BenchResult {
    let mut daemon = Daemon::start(config, dir)?;
    let pid = daemon.child.id();
    let (_, ready) = daemon.wait_for("READY=1", Duration::from_secs(120))?;
    let at_ready = sample(pid);
    let (status, polled) = daemon.wait_for("STATUS=last poll", Duration::from_secs(600))?;
    if !status.contains("last poll ok") {
        return Err(format!("the first poll failed: {status}").into());
    }
    // Let the last log line and the flush settle before the idle window.
    std::thread::sleep(Duration::from_secs(2));
    let before = sample(pid);
    std::thread::sleep(idle);
    let after = sample(pid);
    // With the daemon running the store is locked, so `status` asks the daemon's admin API.
    let via_daemon = time_status_cli(config)?;
    daemon.stop()?;
    print_status_cli("status-cli-via-daemon", label, &via_daemon);
    let secs = idle.as_secs_f64();
    println!(
        "RESULT daemon store={label} ready_s={:.3} first_poll_s={:.3} rss_at_ready_mib={:.1} \
         idle_rss_mib={:.1} peak_rss_mib={:.1} idle_cpu_s={:.3} idle_cpu_percent={:.3} \
         wakeups_per_s={:.2} threads={} idle_window_s={secs:.0} load={}",
        ready.as_secs_f64(),
        (polled - ready).as_secs_f64(),
        mib(at_ready.rss_kib),
        mib(after.rss_kib),
        mib(after.hwm_kib),
        (after.cpu.saturating_sub(before.cpu)).as_secs_f64(),
        100.0 * after.cpu.saturating_sub(before.cpu).as_secs_f64() / secs,
        after.switches.saturating_sub(before.switches) as f64 / secs,
        after.threads,
        support::loadavg()
    );
    Ok(())
}

/// Runs `ttp-agent status` three times: wall time and the child's resources each.
fn time_status_cli(config: &Path) -> BenchResult<Vec<(Duration, support::ChildUsage)>> {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let child = Command::new(support::AGENT_BIN)
            .args(["status", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let usage = support::wait_child(child)?;
        if usage.exit_code != 0 {
            return Err(format!("ttp-agent status exited with {}", usage.exit_code).into());
        }
        runs.push((started.elapsed(), usage));
    }
    Ok(runs)
}

fn print_status_cli(what: &str, label: &str, runs: &[(Duration, support::ChildUsage)]) {
    println!(
        "RESULT {what} store={label} wall_ms={:?} cpu_ms={:?} peak_rss_mib={:.1}",
        runs.iter()
            .map(|(d, _)| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        runs.iter()
            .map(|(_, u)| (u.cpu().as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        mib(runs.iter().map(|(_, u)| u.max_rss_kib).max().unwrap_or(0))
    );
}

fn write_config(dir: &Path, base_url: &str) -> BenchResult<PathBuf> {
    // A free port of its own for the admin API (`status` asks it while the daemon runs).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    support::write_config(
        dir,
        base_url,
        &[
            ("cron = \"0 */15 * * * *\"", CRON_DAILY),
            ("jitter = \"60s\"", "jitter = \"0s\""),
            ("listen = \"127.0.0.1:9464\"", &listen),
        ],
    )
}

/// The child of stage 6: leaves the store as a daemon killed right after a durable commit
/// would, with (`quick`) or without redb's quick-repair on that commit.
fn crash_child(config: &Path, quick: bool) -> BenchResult {
    let c = ttp_agent::config::AgentConfig::from_file_and_env(Some(config), std::iter::empty())?;
    let secrets = c.load_secrets()?;
    let opts =
        ttp_agent::cli::context::store_options(&c, &secrets).map_err(|e| format!("{e:#}"))?;
    // redb directly: the store's API commits durably with quick-repair only.
    use redb::ReadableTable as _;
    let db = redb::Database::create(opts.path.join(ttp_agent::store::DB_FILE))?;
    let meta: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("meta");
    let mut tx = db.begin_write()?;
    tx.set_durability(redb::Durability::Immediate)?;
    tx.set_quick_repair(quick);
    {
        let mut table = tx.open_table(meta)?;
        let version = table
            .get(b"schema_version".as_slice())?
            .map(|v| v.value().to_vec())
            .ok_or("the store has no schema version")?;
        table.insert(b"schema_version".as_slice(), version.as_slice())?;
    }
    tx.commit()?;
    // SAFETY: kill(2) of this very process; nothing after it runs.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    Err("still alive after SIGKILL".into())
}

/// Stage 6: start-up to READY after a clean stop and after a crash (quick / full repair).
fn startups(config: &Path, dir: &Path, rounds: u64) -> BenchResult {
    for round in 0..rounds {
        for mode in ["clean", "crash-quick-repair", "crash-full-repair"] {
            if mode != "clean" {
                let status = Command::new(std::env::current_exe()?)
                    .env("SCALE_BENCH_CRASH_CHILD", mode)
                    .env("SCALE_BENCH_CRASH_CONFIG", config)
                    .stdin(Stdio::null())
                    .status()?;
                if status.code().is_some() {
                    return Err(format!("the crash child exited with {status}").into());
                }
            }
            let mut daemon = Daemon::start(config, dir)?;
            let (_, ready) = daemon.wait_for("READY=1", Duration::from_secs(300))?;
            let at_ready = sample(daemon.child.id());
            daemon.wait_for("STATUS=last poll", Duration::from_secs(600))?;
            daemon.stop()?;
            println!(
                "RESULT startup store=big round={round} after={mode} ready_s={:.3} cpu_to_ready_s={:.3} rss_at_ready_mib={:.1} load={}",
                ready.as_secs_f64(),
                at_ready.cpu.as_secs_f64(),
                mib(at_ready.rss_kib),
                support::loadavg()
            );
        }
    }
    Ok(())
}

fn main() -> BenchResult {
    if let Ok(mode) = std::env::var("SCALE_BENCH_CRASH_CHILD") {
        let config = std::env::var_os("SCALE_BENCH_CRASH_CONFIG").ok_or("no config")?;
        return crash_child(Path::new(&config), mode == "crash-quick-repair");
    }
    let records: u64 = env_or("SCALE_BENCH_RECORDS", 1_000_000)?;
    let tasks: u64 = env_or("SCALE_BENCH_TASKS", 100_000)?;
    let idle = Duration::from_secs(env_or("SCALE_BENCH_IDLE_SECS", 60)?);
    println!("scale: {records} records, {tasks} finished tasks, idle window {idle:?}");
    println!("{}", machine_line());

    let sim_rt = support::sim_runtime()?;
    let sim = sim_rt.block_on(ttp_sim::start(support::sim_config(1)))?;
    let temp = tempfile::tempdir()?;

    // The agent alone: an empty store.
    let empty_dir = temp.path().join("empty");
    std::fs::create_dir_all(&empty_dir)?;
    let empty_config = write_config(&empty_dir, &sim.base_url())?;
    daemon_run("empty", &empty_config, &empty_dir, idle)?;

    // The big store, built once (or reused from SCALE_BENCH_DIR).
    let big_dir = match std::env::var_os("SCALE_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => temp.path().join("big"),
    };
    std::fs::create_dir_all(&big_dir)?;
    let big_config = big_dir.join("agent.toml");
    let big_config = if big_config.exists() {
        // Reused: point it at this run's simulator.
        let text = std::fs::read_to_string(&big_config)?;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("base_url = ") {
                    format!("base_url = {:?}", sim.base_url())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&big_config, text + "\n")?;
        big_config
    } else {
        write_config(&big_dir, &sim.base_url())?
    };
    build_store(&big_config, records, tasks)?;

    // Open: time and memory.
    let (rss0, _) = support::self_rss_kib();
    let started = Instant::now();
    let store = open(&big_config)?;
    let open_time = started.elapsed();
    let (rss1, _) = support::self_rss_kib();
    let mut builds = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let report = ttp_agent::status::build(&store, chrono::Duration::hours(48), 7)?;
        builds.push(started.elapsed());
        std::hint::black_box(report);
    }
    let (rss2, _) = support::self_rss_kib();
    drop(store);
    println!(
        "RESULT open store=big open_s={:.3} rss_added_by_open_mib={:.1} status_build_ms={:?} rss_after_status_mib={:.1}",
        open_time.as_secs_f64(),
        mib(rss1.saturating_sub(rss0)),
        builds
            .iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        mib(rss2)
    );

    print_status_cli("status-cli", "big", &time_status_cli(&big_config)?);

    daemon_run("big", &big_config, &big_dir, idle)?;
    startups(&big_config, &big_dir, env_or("SCALE_BENCH_STARTUPS", 3)?)?;
    sim_rt.block_on(sim.shutdown());
    Ok(())
}
