//! The command-line interface: one file per command, this file only parses and routes.
//!
//! Exit status: 0 success; 1 the command failed (the message says why); 2 usage error (clap);
//! 78 (`EX_CONFIG`) a configuration problem — invalid file, unknown or missing key, unreadable
//! secret, bad cron expression.

pub mod approve;
pub mod backup;
mod check;
pub mod context;
pub mod control;
mod demo;
pub mod disclosures;
mod encode;
pub mod export;
mod healthcheck;
pub mod init;
pub mod out;
pub(crate) mod owner;
mod poll;
pub mod purge;
mod reload;
pub mod resolve;
mod restore;
mod run;
pub mod status;
pub mod submit;
pub mod withdraw;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

/// Exit status for configuration errors (sysexits.h `EX_CONFIG`).
pub const EX_CONFIG: u8 = crate::config::EXIT_CODE_CONFIG;

#[derive(Debug, Parser)]
#[command(
    name = "ttp-agent",
    version,
    about = "Site agent for the fTTP dispatcher: registers Bloom filters and answers clearing tasks",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format: auto (journald under systemd, else text), text, json, journald.
    #[arg(long, global = true, value_enum, env = "TTP_AGENT_LOG_FORMAT")]
    log_format: Option<CliLogFormat>,

    /// Log level or filter (overrides `[log] level`; `RUST_LOG` overrides both).
    #[arg(long, global = true, env = "TTP_AGENT_LOG_LEVEL")]
    log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CliLogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

impl From<CliLogFormat> for LogFormat {
    fn from(f: CliLogFormat) -> Self {
        match f {
            CliLogFormat::Auto => LogFormat::Auto,
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
            CliLogFormat::Journald => LogFormat::Journald,
        }
    }
}

/// `--config PATH`, shared by the commands that need the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (environment variables TTP_AGENT__SECTION__KEY override it).
    #[arg(long, short = 'c', value_name = "PATH", env = "TTP_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a complete, commented starting configuration with fresh secrets into a directory.
    Init(init::Args),
    /// Encode records into Bloom filters offline (fTTP filter or clkhash CLK), for checking
    /// interoperability.
    Encode(encode::Args),
    /// Encode, store and register records from a CSV file.
    Submit(submit::Args),
    /// Run the daemon: poll at start, then on the schedule, answering every task.
    Run(run::Args),
    /// Run poll cycles from the command line.
    Poll(poll::Args),
    /// Show open tasks, what needs attention, and pseudonyms obtained.
    Status(status::Args),
    /// Write local id → pseudonym.
    Export(export::Args),
    /// Print the disclosure log (what IDAT elements were sent about whom, when; codes only), or
    /// check its chain with --verify.
    Disclosures(disclosures::Args),
    /// Resolve what needs attention: retry a task, mark it handled, add a missing element.
    Resolve(resolve::Args),
    /// Show the whole job end to end against the built-in fTTP simulator.
    Demo(demo::Args),
    /// Check configuration, secrets, store, encoding profile and the fTTP connection; prints a
    /// checklist (exit 0 ready, 1 a check failed, 78 invalid configuration).
    Check(check::Args),
    /// Ask the running daemon's admin endpoint (GET /healthz); for container health checks.
    Healthcheck(healthcheck::Args),
    /// Write a consistent, encrypted and authenticated copy of the store to a file (through the
    /// running daemon when it runs).
    Backup(backup::Args),
    /// Restore the store from a backup file (refuses a running daemon; --force replaces a store
    /// that holds data, moving it aside).
    Restore(restore::Args),
    /// Apply the retention rules now: purge finished tasks and expired IDAT; prints counts.
    Purge(purge::Args),
    /// Approve the release of IDAT for tasks awaiting approval (`[dispatch] idat_release =
    /// "approval"`); recorded with the local user who runs it.
    Approve(approve::ApproveArgs),
    /// Deny the release of IDAT for tasks awaiting approval: they are closed locally, never
    /// answered.
    Deny(approve::DenyArgs),
    /// A patient withdrew consent: purge the records' IDAT and filters now, close their tasks
    /// unanswered (now and later), refuse to store them again without `submit --readmit`.
    Withdraw(withdraw::Args),
}

/// Entry point used by `main.rs`.
/// Every command may hold the IDAT key, the API key, Bloom-filter seeds or decrypted IDAT in
/// memory. A core dump (the watchdog's SIGABRT, a crash) would write all of that to disk, and
/// a dumpable process can be read by any process of the same user through ptrace or
/// `/proc/PID/mem`. Not dumpable covers both, also where `LimitCORE=0` of the unit does not
/// apply (a command run by hand, a container). Failure is ignored: it only happens on
/// kernels without prctl, where there is nothing better to do.
fn forbid_core_dumps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes plain integers and touches no memory of this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

pub fn main() -> ExitCode {
    forbid_core_dumps();
    let cli = Cli::parse();
    let format = cli.log_format.map(LogFormat::from);
    let level = cli.log_level.clone();
    let result = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Encode(a) => encode::run(a),
        // Commands that log start logging themselves once they have read the configuration
        // (the command line's choices first, then `[log]`).
        Command::Submit(a) => submit::run(a, format, level),
        Command::Run(a) => run::run(a, format, level),
        Command::Poll(a) => poll::run(a, format, level),
        Command::Status(a) => status::run(a),
        Command::Export(a) => export::run(a),
        Command::Disclosures(a) => disclosures::run(a),
        Command::Resolve(a) => resolve::run(a),
        Command::Check(a) => check::run(a),
        Command::Healthcheck(a) => healthcheck::run(a),
        Command::Backup(a) => backup::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Purge(a) => purge::run(a),
        Command::Approve(a) => approve::run_approve(a),
        Command::Deny(a) => approve::run_deny(a),
        Command::Withdraw(a) => withdraw::run(a),
        Command::Demo(a) => {
            logging::init(
                format.unwrap_or(LogFormat::Text),
                level.as_deref().unwrap_or("warn"),
            );
            demo::run(a)
        }
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`… | head`): not an error, no message.
        Err(err) if out::is_broken_pipe(&err) => ExitCode::from(out::EXIT_BROKEN_PIPE),
        Err(err) => report(&err, format),
    }
}

/// Print an error chain on one line and choose the exit status.
///
/// In the log format the process uses (or would have used, when the error came before
/// logging was set up): a JSON object where logs are collected as JSON (containers), with the
/// error priority prefix for the journal (so `journalctl -p err` shows it), plain otherwise.
fn report(err: &anyhow::Error, format: Option<LogFormat>) -> ExitCode {
    let message = one_line(err);
    match logging::active_format().unwrap_or_else(|| logging::requested_format(format)) {
        LogFormat::Json => {
            // A no-op when logging is already set up in JSON.
            logging::init(LogFormat::Json, "error");
            tracing::error!(error = %message, "ttp-agent: exiting on an error");
        }
        LogFormat::Journald => crate::errln!("<3>ttp-agent: error: {message}"),
        _ => crate::errln!("ttp-agent: error: {message}"),
    }
    ExitCode::from(exit_status(err))
}

/// A command line that asks for something this agent does not have (another study): exit 2,
/// like the argument errors clap reports, so that a script can tell it from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The exit status for an error: 78 for a configuration problem, 2 for a usage error, 1
/// otherwise.
pub(crate) fn exit_status(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<UsageError>()) {
        return 2;
    }
    err.chain()
        .find_map(|c| c.downcast_ref::<crate::config::ConfigError>())
        .map_or(1, crate::config::ConfigError::exit_code)
}

/// The error and its causes on one line. Many messages already include their cause's text
/// (`"I/O error on X: {source}"`); a cause whose text is already there is not repeated.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod one_line_tests {
    use super::*;

    #[test]
    fn one_line_says_each_cause_once_and_on_one_line() {
        let io = std::io::Error::from_raw_os_error(libc::EEXIST);
        let shown = io.to_string();
        let err = anyhow::Error::new(io).context(format!("I/O error on /x: {shown}"));
        assert_eq!(one_line(&err), format!("I/O error on /x: {shown}"));

        let err = anyhow::anyhow!("inner problem").context("outer");
        assert_eq!(one_line(&err), "outer: inner problem");

        let err = anyhow::anyhow!("first line\n  second line\r\n").context("while reading");
        assert_eq!(one_line(&err), "while reading: first line second line");
    }
}
