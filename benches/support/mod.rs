//! Shared plumbing for the benchmarks: environment knobs, the machine line every bench prints,
//! process measurements from `/proc` and `getrusage`, synthetic people for the encoders. The
//! simulator settings, the starter configuration and the store's records and tasks are
//! `ttp_agent::testkit`'s, shared with the tests.
//!
//! The benchmarks print figures; they assert only that the work was done (a benchmark whose
//! work silently failed would report a wonderful and meaningless speed). Speed targets are
//! compared in BENCHMARKS.md, never asserted.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod agent_data;

pub use ttp_agent::testkit::{STUDY, TARGET};

/// The agent binary the end-to-end benches run (built by `cargo bench` with the bench profile).
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

pub type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// `name` from the environment, parsed, or `default`. A value that does not parse is an error:
/// silently benchmarking something else than asked is worse than stopping.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> BenchResult<T> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} does not parse").into()),
    }
}

/// One line describing where the figures come from: CPU model, cores, memory, load.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = proc_field("/proc/meminfo", "MemTotal:").unwrap_or(0) / 1024;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("machine: {model}, {cores} cores, {mem} MiB RAM, load average (1 min) {load}")
}

/// The 1-minute load average: the machine is shared, so every figure is printed with it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A numeric field (first number after `name`) of a `/proc` key-value file, e.g. `VmRSS:`.
pub fn proc_field(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Current and peak RSS of this process in KiB.
pub fn self_rss_kib() -> (u64, u64) {
    (
        proc_field("/proc/self/status", "VmRSS:").unwrap_or(0),
        proc_field("/proc/self/status", "VmHWM:").unwrap_or(0),
    )
}

/// CPU time of this process so far (user + system).
pub fn self_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF).0
}

/// (user + system CPU, peak RSS in KiB) of `who` (`RUSAGE_SELF`, `RUSAGE_CHILDREN`, `RUSAGE_THREAD`).
pub fn rusage_cpu(who: libc::c_int) -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return (Duration::ZERO, 0);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

/// What one child process cost, from `wait4`: wall time is measured by the caller.
#[derive(Clone, Copy, Debug)]
pub struct ChildUsage {
    pub user: Duration,
    pub system: Duration,
    pub max_rss_kib: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub exit_code: i32,
}

impl ChildUsage {
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

/// Waits for `child` with `wait4`, returning its own resource usage (not the sum of all
/// children, which `getrusage(RUSAGE_CHILDREN)` would give).
pub fn wait_child(child: std::process::Child) -> BenchResult<ChildUsage> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is valid; wait4 writes it and `status`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    // The Child handle must not wait again (it would fail with ECHILD, harmlessly); forget it.
    std::mem::forget(child);
    if rc != pid {
        return Err(format!("wait4({pid}) failed: {}", std::io::Error::last_os_error()).into());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok(ChildUsage {
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        voluntary_switches: ru.ru_nvcsw as u64,
        involuntary_switches: ru.ru_nivcsw as u64,
        exit_code,
    })
}

/// `splitmix64`: deterministic, dependency-free randomness for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// One synthetic person, in the simple form both encoders' benches use.
#[derive(Clone, Debug)]
pub struct Person {
    pub given: String,
    pub family: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `F` or `M`.
    pub sex: &'static str,
}

const GIVEN: [&str; 24] = [
    "ANNA",
    "MARIA",
    "LENA",
    "SOPHIE",
    "MIA",
    "EMMA",
    "HANNAH",
    "LEA",
    "KLARA",
    "JULIA",
    "LAURA",
    "SARAH",
    "JONAS",
    "FELIX",
    "LUKAS",
    "TILL",
    "PAUL",
    "LEON",
    "ELIAS",
    "NOAH",
    "BEN",
    "FINN",
    "KARL HEINZ",
    "JUERGEN",
];
const FAMILY: [&str; 20] = [
    "MUELLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
    "WEBER",
    "MEYER",
    "WAGNER",
    "BECKER",
    "SCHULZ",
    "HOFFMANN",
    "SCHAEFER",
    "KOCH",
    "BAUER",
    "RICHTER",
    "KLEIN",
    "WOLF",
    "SCHROEDER",
    "NEUMANN",
    "SCHWARZ",
    "ZIMMERMANN",
];

/// `n` synthetic people. Half the names come from short lists (tokens repeat, as in real data),
/// half are random 5–10 letter strings (every record distinct): neither flatters a cache.
pub fn people(n: usize, seed: u64) -> Vec<Person> {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = Rng::new(seed);
    let random_name = |rng: &mut Rng| -> String {
        let len = rng.range(5, 10) as usize;
        (0..len).map(|_| *rng.pick(LETTERS) as char).collect()
    };
    (0..n)
        .map(|i| {
            let (given, family) = if i % 2 == 0 {
                (rng.pick(&GIVEN).to_string(), rng.pick(&FAMILY).to_string())
            } else {
                (random_name(&mut rng), random_name(&mut rng))
            };
            Person {
                given,
                family,
                birth_date: format!(
                    "{:04}-{:02}-{:02}",
                    rng.range(1920, 2023),
                    rng.range(1, 12),
                    rng.range(1, 28)
                ),
                sex: if rng.next_u64().is_multiple_of(2) {
                    "F"
                } else {
                    "M"
                },
            }
        })
        .collect()
}

/// `n` synthetic records in the agent's `submit` CSV format (`local_id` + element codes).
pub fn records_csv(n: usize, seed: u64) -> String {
    let mut out = String::with_capacity(n * 64);
    out.push_str("local_id,given,family,birthdate,gender\n");
    for (i, p) in people(n, seed).iter().enumerate() {
        let gender = if p.sex == "F" { "female" } else { "male" };
        out.push_str(&format!(
            "case-{i:08},{},{},{},{gender}\n",
            p.given, p.family, p.birth_date
        ));
    }
    out
}

/// A starter configuration (as `ttp-agent init` writes it) in `dir`, pointing at `base_url`,
/// with `edits` applied as text replacements and the admin endpoint on a port the OS picks
/// (unless an edit moved it). Returns the path of `agent.toml`.
pub fn write_config(dir: &Path, base_url: &str, edits: &[(&str, &str)]) -> BenchResult<PathBuf> {
    ttp_agent::testkit::starter_config(dir, base_url, edits).map_err(|e| format!("{e:#}").into())
}

/// Simulator settings for the benches: the tests' study, target and key, the simulator's
/// default task mix, and the four elements [`records_csv`] has (no birthplace).
pub fn sim_config(seed: u64) -> ttp_sim::SimConfig {
    let default = ttp_sim::SimConfig::default();
    ttp_sim::SimConfig {
        clearing: default.clearing,
        repeat_first: default.repeat_first,
        elements: ["given", "family", "birthdate", "gender"]
            .map(str::to_owned)
            .to_vec(),
        ..ttp_agent::testkit::sim_config(seed)
    }
}

/// A tokio runtime for the simulator on its own threads, named so that their CPU time can be
/// told apart from the agent's when both run in this process.
pub fn sim_runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ttp-sim")
        .enable_all()
        .build()?)
}

/// CPU time of this process's threads whose name starts with `prefix` (from
/// `/proc/self/task/*/stat`, in clock ticks converted to time).
pub fn threads_cpu(prefix: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += num(11) + num(12);
    }
    Duration::from_secs_f64(total as f64 / ticks)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A fixed-width, human-readable rate.
pub fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
