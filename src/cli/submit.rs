//! `ttp-agent submit --config F RECORDS.csv`: encode, store and register records.
//!
//! Idempotent: a record already stored with the same filter is not stored or sent again, so
//! running the same file twice sends nothing new, and a run interrupted at any point is
//! finished by running it again (or by the daemon's next cycle).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::agent::Shutdown;
use crate::config::LogFormat;
use crate::submit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// CSV with a header row: `local_id` and fTTP element codes (given, family, birthdate
    /// as YYYY, YYYY-MM or YYYY-MM-DD, gender as male/female/other/unknown or m/w/d/x, …).
    records: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(
    args: Args,
    format: Option<LogFormat>,
    level: Option<String>,
) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    context::init_logging(&loaded.config, format, level.as_deref());
    context::log_warnings(&loaded);
    let encoder = context::encoder(&loaded.config)?;

    let records = submit::read_records(&args.records)?;
    let total = records.len() as u64;
    let bar = progress_bar(total, "encoding");
    let encoded = submit::encode_records(&encoder, records, &|n| bar.inc(n))?;
    bar.finish_and_clear();

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let agent = context::agent(&loaded, Shutdown::never())?;
    submit::check_profile(agent.store(), &encoder).map_err(context::config_error)?;
    let stored = submit::store_records(agent.store(), &encoded, 10_000)?;
    let registered = runtime.block_on(agent.register_pending())?;

    if args.json {
        let out = serde_json::json!({
            "read": total, "stored": stored, "registration": registered,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{total} records read; {} stored new, {} already stored{}",
            stored.inserted,
            stored.unchanged,
            if stored.conflicts.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} conflicting (stored earlier with a different filter: {})",
                    stored.conflicts.len(),
                    stored.conflicts.join(", ")
                )
            }
        );
        println!(
            "registration: {} sent in {} batch(es): {} pseudonymised at once, {} awaiting clearing, {} rejected; {} still pending",
            registered.sent,
            registered.batches,
            registered.pseudonymised,
            registered.awaiting_clearing,
            registered.rejected,
            registered.pending_left
        );
        if let Some(why) = &registered.stopped {
            println!("registration paused: {why}; the daemon (or another `submit`) sends the rest");
        }
    }
    Ok(
        if registered.stopped.is_some() || !stored.conflicts.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// A progress bar on a terminal, nothing otherwise (logs and pipes stay clean).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || len < 1_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}
