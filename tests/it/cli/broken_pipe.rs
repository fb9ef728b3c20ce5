//! A reader that goes away (`ttp-agent check | head -2`) is not a crash: every command ends
//! quietly with status 141 (128 + SIGPIPE) or 0, never with a panic (status 101 and a
//! backtrace). The pipe is closed before the command starts, so the first write fails, every
//! time, without any timing involved.

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::Path;
use std::process::{Output, Stdio};

use crate::support::hermetic;
use ttp_agent::cli::init::{TtpSettings, write_starter};

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

/// The write end of a pipe whose read end is already closed.
fn widowed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two new descriptors into the array on success.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

enum Closed {
    Stdout,
    Stderr,
}

fn run(args: &[&str], closed: Closed) -> Output {
    let mut cmd = hermetic::command(BIN);
    cmd.args(args).stdin(Stdio::null());
    match closed {
        Closed::Stdout => cmd
            .stdout(Stdio::from(widowed_pipe()))
            .stderr(Stdio::piped()),
        Closed::Stderr => cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(widowed_pipe())),
    };
    cmd.output().expect("the agent runs")
}

fn assert_quiet(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(141) | Some(0)),
        "{args:?}: status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
}

fn site(dir: &Path) -> String {
    let config = write_starter(
        dir,
        Some(&TtpSettings {
            // A closed loopback port: `check` fails fast, nothing leaves the machine.
            base_url: "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher".into(),
            study: "s".into(),
            target: "t".into(),
            api_key: "k".into(),
        }),
    )
    .unwrap();
    config.display().to_string()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = site(&dir.path().join("site"));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let init_dir = dir.path().join("fresh");
    let init_dir = init_dir.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["init", "--dir", init_dir],
        vec!["check", "--config", &config],
        vec!["status", "--config", &config],
        vec!["status", "--config", &config, "--json"],
        vec!["purge", "--config", &config],
        vec!["healthcheck", "--address", &closed_port, "--timeout", "2s"],
    ];
    for args in &commands {
        let out = run(args, Closed::Stdout);
        assert_quiet(args, &out);
    }
}

#[test]
fn a_closed_stderr_ends_a_failing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = site(dir.path());
    let missing = dir.path().join("missing.csv");
    let args = ["submit", "--config", &config, missing.to_str().unwrap()];
    let out = run(&args, Closed::Stderr);
    // The failure itself is reported by the status (nothing can be said on stderr); what
    // matters is that it is not a panic.
    assert_ne!(out.status.code(), Some(101), "{:?}", out.status);
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}",
        out.status
    );
}
