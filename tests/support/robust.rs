//! Set-up shared by the robustness tests (faults, crashes, storage, secrets, configuration):
//! a simulator on a runtime of its own, starter configurations, running the binary.
//!
//! The simulator gets its own runtime (own threads) so that what it measures -- arrival times
//! for the request-rate check, above all -- does not depend on the agent's runtime, whose
//! workers block in store I/O (fsync) now and then.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use ttp_agent::cli::init::{TtpSettings, write_starter};

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
/// `from` must occur in the starter file).
pub fn write_config(dir: &Path, base_url: &str, edits: &[(&str, &str)]) -> PathBuf {
    let config_path = write_starter(
        dir,
        Some(&TtpSettings {
            base_url: base_url.to_string(),
            study: crate::support::agent::STUDY.into(),
            target: crate::support::agent::TARGET.into(),
            api_key: crate::support::agent::API_KEY.into(),
        }),
    )
    .expect("starter config");
    let mut text = std::fs::read_to_string(&config_path).expect("read config");
    for (from, to) in edits {
        assert!(text.contains(from), "starter config lacks {from:?}");
        text = text.replace(from, to);
    }
    std::fs::write(&config_path, text).expect("write config");
    config_path
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
