//! Shared set-up for the hand-over and resolve tests: a site directory with a starter
//! configuration (the dispatcher is never contacted), its store, and the real binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Output, Stdio};

use ttp_agent::cli::context;
use ttp_agent::cli::init::{TtpSettings, write_starter};
use ttp_agent::config::AgentConfig;
use ttp_agent::store::Store;
use ttp_agent::testkit::{API_KEY, STUDY, TARGET};

pub const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub fn site() -> Site {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_starter(
        dir.path(),
        Some(&TtpSettings {
            // Never contacted: these commands work from the store alone.
            base_url: "http://127.0.0.1:9/dispatcher".into(),
            study: STUDY.into(),
            target: TARGET.into(),
            api_key: API_KEY.into(),
        }),
    )
    .expect("starter config");
    Site { dir, config }
}

impl Site {
    /// Appends `text` (TOML) to the configuration file.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).expect("config");
        config.push_str(text);
        std::fs::write(&self.config, config).expect("config written");
    }

    pub fn open_store(&self) -> std::sync::Arc<Store> {
        let config = AgentConfig::from_file_and_env(Some(&self.config), std::iter::empty())
            .expect("config loads");
        let secrets = config.load_secrets().expect("secrets load");
        context::open_store(&config, &secrets).expect("store opens")
    }

    /// Opens the store, runs `f`, flushes and closes it (the binary needs the lock).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let store = self.open_store();
        let out = f(&store);
        store.flush().expect("flushes");
        out
    }

    /// Runs `ttp-agent <args> --config <config>` as user `coordinator`, with `stdin` as input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = crate::support::hermetic::command(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("SUDO_USER")
            .env("USER", "coordinator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin written");
        child.wait_with_output().expect("binary runs")
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The output of a command that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "command failed: {}", stderr(&out));
    stdout(&out)
}
