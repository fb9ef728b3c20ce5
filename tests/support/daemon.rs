//! Running the real `ttp-agent` binary as a daemon in tests: JSON logs to a file, waiting for
//! log events (with a generous bound that only turns a hang into a failure), signals, exit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::logs::KeptLog;

pub const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

/// How long to wait for something that normally takes a second or two before calling it a
/// hang. Never a speed requirement.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A loopback port that was free a moment ago (for a daemon whose admin port a test must
/// know in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    /// Copies the log into the test's kept logs once the daemon is gone (and prints its tail
    /// if the test failed).
    _kept: KeptLog,
}

impl Daemon {
    /// `ttp-agent run --config CONFIG` with JSON logs on stderr (into `log`).
    pub fn run(config: &Path, log: &Path) -> Daemon {
        let mut cmd = crate::support::hermetic::command(BIN);
        cmd.args(["run", "--config", config.to_str().unwrap()]);
        Daemon::spawn(cmd, log)
    }

    /// Spawns `cmd` with stderr into `log`, JSON log format and no `RUST_LOG` (which would
    /// override the configured level).
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let child = cmd
            .env("TTP_AGENT_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the agent starts");
        Daemon {
            child: Some(child),
            log: log.to_owned(),
            _kept: KeptLog::copy_of(log),
        }
    }

    /// The daemon's pid while it runs. Never 0 for a daemon already reaped: `kill(0, sig)`
    /// signals the whole process group, which holds every daemon the tests of this binary
    /// started (a crash test's final daemon would end "by itself").
    pub fn pid(&self) -> i32 {
        let child = self
            .child
            .as_ref()
            .expect("the daemon was already reaped: it has no pid to signal");
        child.id() as i32
    }

    pub fn raw_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every complete log line, parsed; a line that is not a JSON object fails the test.
    pub fn events(&self) -> Vec<Value> {
        let text = self.raw_log();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        complete
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
                assert!(v.is_object(), "log line is not a JSON object: {line:?}");
                v
            })
            .collect()
    }

    /// Waits until `count` events satisfy `pred`; returns them.
    pub async fn wait_for(
        &mut self,
        what: &str,
        count: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let found: Vec<Value> = self.events().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= count {
                return found;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the daemon exited ({status}) while waiting for {what}:\n{}",
                    self.raw_log()
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no {what} after {PATIENCE:?}:\n{}",
                self.raw_log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for an event with this message.
    pub async fn wait_for_message(&mut self, message: &str, count: usize) -> Vec<Value> {
        self.wait_for(&format!("{message:?}"), count, |e| is_message(e, message))
            .await
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.pid();
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child (`pid` refuses a
        // reaped one, so this is never 0, the process group).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit (bounded by [`PATIENCE`]); returns the status and how long it took.
    pub async fn wait_exit(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the daemon did not exit:\n{}",
                self.raw_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn is_message(event: &Value, message: &str) -> bool {
    event.get("message").and_then(Value::as_str) == Some(message)
}

/// The name of the innermost span of an event, if any.
pub fn span_name(event: &Value) -> Option<&str> {
    event.get("span")?.get("name")?.as_str()
}

/// The names of all spans of an event, outermost first.
pub fn span_names(event: &Value) -> Vec<&str> {
    event
        .get("spans")
        .and_then(Value::as_array)
        .map(|spans| {
            spans
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}
