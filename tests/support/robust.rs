//! Set-up shared by the robustness tests (faults, crashes, storage, secrets, configuration):
//! a simulator on a runtime of its own, starter configurations, running the binary.
//!
//! The simulator gets its own runtime (own threads) so that what it measures -- arrival times
//! for the request-rate check, above all -- does not depend on the agent's runtime, whose
//! workers block in store I/O (fsync) now and then.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

/// A simulator served by a runtime of its own.
pub struct OwnSim {
    pub sim: ttp_sim::SimHandle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnSim {
    /// Starts `cfg` on a fresh one-thread runtime; callable from sync and async code alike.
    pub fn start(cfg: ttp_sim::SimConfig) -> OwnSim {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ttp-sim")
                .enable_all()
                .build()
                .expect("simulator runtime");
            let sim = runtime
                .block_on(ttp_sim::start(cfg))
                .expect("simulator starts");
            OwnSim {
                sim,
                runtime: Some(runtime),
            }
        })
        .join()
        .expect("simulator thread")
    }
}

impl std::ops::Deref for OwnSim {
    type Target = ttp_sim::SimHandle;
    fn deref(&self) -> &ttp_sim::SimHandle {
        &self.sim
    }
}

impl Drop for OwnSim {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A starter configuration for `base_url` in `dir`, with text replacements applied (each
/// `from` must occur in the starter file) and the admin endpoint on a port the OS picks: the
/// testkit's, which the benches and the other tests use too.
pub fn write_config(dir: &Path, base_url: &str, edits: &[(&str, &str)]) -> PathBuf {
    ttp_agent::testkit::starter_config(dir, base_url, edits)
        .unwrap_or_else(|e| panic!("starter config: {e:#}"))
}

/// Settings that make a daemon poll every second, judge in-doubt answers after 2 s and retry
/// tasks after 1-2 s: a run of minutes becomes a run of seconds.
pub fn fast_schedule() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cron = \"0 */15 * * * *\"", "cron = \"* * * * * *\""),
        ("jitter = \"60s\"", "jitter = \"0s\""),
        ("[ttp]\n", "[ttp]\ntimeout = \"1s\"\n"),
        (
            "[dispatch]\n",
            "[dispatch]\nretry_base = \"1s\"\nretry_cap = \"2s\"\n",
        ),
    ]
}

/// Runs the binary to completion with `args`, text logs, and extra environment.
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = crate::support::hermetic::command(BIN);
    cmd.args(args)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .env_remove("TTP_AGENT_CONFIG")
        .env_remove("TTP_AGENT_LOG_LEVEL")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the agent binary runs")
}

/// stdout and stderr of a finished run, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A child process that is killed (SIGKILL) if it still runs when dropped: a failing test
/// must not leave a daemon behind.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One run of the binary in a crash test: `args`, text logs to `log`, stdout discarded. The
/// child is [`Reaped`], so a failing test leaves no agent behind.
pub struct CrashRun {
    child: Reaped,
    log: PathBuf,
}

impl CrashRun {
    pub fn start(args: &[&str], log: PathBuf) -> CrashRun {
        let child = crate::support::hermetic::command(BIN)
            .args(args)
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("run log"))
            .spawn()
            .expect("the agent starts");
        CrashRun {
            child: Reaped(child),
            log,
        }
    }

    /// Lets the run go on for `delay`, then kills it with SIGKILL and reaps it: `None`. A run
    /// that ended by itself first is not killed: `Some(its status)`.
    pub async fn kill_after(mut self, delay: std::time::Duration) -> Option<ExitStatus> {
        tokio::time::sleep(delay).await;
        match self.child.try_wait().expect("try_wait") {
            None => {
                self.child.kill().expect("SIGKILL");
                self.child.wait().expect("reaped");
                None
            }
            Some(status) => Some(status),
        }
    }

    /// Waits for the run to end by itself (at most `patience`, then the test fails).
    pub async fn wait_for_end(mut self, patience: std::time::Duration) -> ExitStatus {
        let waiting = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                waiting.elapsed() < patience,
                "the run did not end within {patience:?}; its log: {}",
                self.log.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Where the run logs.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
}

/// The last daemon of a crash test, which must finish the job undisturbed: its log is kept
/// (`final.log`, its tail printed if the test fails), and it is killed if the test fails.
pub struct FinalDaemon {
    child: Reaped,
    log: crate::support::logs::KeptLog,
}

impl FinalDaemon {
    pub fn start(config: &str) -> FinalDaemon {
        let log = crate::support::logs::KeptLog::new("final.log");
        let child = crate::support::hermetic::command(BIN)
            .args(["run", "--config", config])
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(log.create())
            .spawn()
            .expect("the final daemon starts");
        FinalDaemon {
            child: Reaped(child),
            log,
        }
    }

    /// Fails the test if the daemon has ended (it never ends by itself while its store works).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "the final daemon died ({status}); its log: {}",
                self.log.path().display()
            );
        }
    }

    /// Sends SIGTERM and waits for the daemon to end (it flushes what it has first).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        self.child.wait().expect("reaped")
    }

    /// Stops the daemon with SIGTERM, which must end it with status 0.
    pub fn stop(self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "SIGTERM must end the daemon with 0, got {status}"
        );
    }
}

/// Every record has the pseudonym the simulator assigned to its filter: the end state of a
/// crash test, whatever was done to the agent in between.
pub fn assert_pseudonyms_are_the_fttps(
    records: &[ttp_agent::domain::LocalRecord],
    sim: &ttp_sim::SimHandle,
) {
    for rec in records {
        assert_eq!(
            rec.head.state,
            ttp_agent::domain::RecordState::Pseudonymised,
            "{}",
            rec.head.local_id
        );
        let bf = ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64();
        assert_eq!(
            rec.head.pseudonym,
            sim.pseudonym_of(&bf),
            "{}",
            rec.head.local_id
        );
    }
}

/// The agent's own view once a crash test's final daemon has stopped: every record and the
/// tasks still open, after up to six one-shot cycles (`poll --once`, 3.2 s apart) while
/// records still wait for a pseudonym or tasks are open. A `dic_psn_available` whose every
/// listing was fetched by a process killed before its merge reached the disk is recovered by
/// registering the filter again after `[submit] recheck_after` (ARCHITECTURE.md, durability
/// point 9), which the crash tests set to 3 s. Returns the cycles it took, too.
pub async fn settle_after_final_daemon(
    config_path: &Path,
) -> (
    Vec<ttp_agent::domain::LocalRecord>,
    Vec<ttp_agent::domain::TaskRecord>,
    usize,
) {
    let loaded = crate::support::agent::load(config_path);
    let config = config_path.to_str().expect("utf-8 path");
    let mut rechecks = 0;
    loop {
        let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets)
            .expect("the store opens");
        let all = store.records_in_states(|_| true).expect("records");
        let open: Vec<_> = store
            .tasks()
            .expect("tasks")
            .into_iter()
            .filter(|t| !t.state.is_final())
            .collect();
        let waiting = all
            .iter()
            .filter(|r| r.head.state != ttp_agent::domain::RecordState::Pseudonymised)
            .count();
        drop(store);
        if (waiting == 0 && open.is_empty()) || rechecks == 6 {
            return (all, open, rechecks);
        }
        rechecks += 1;
        tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
        let out = run_bin(&["poll", "--once", "--config", config], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
}
