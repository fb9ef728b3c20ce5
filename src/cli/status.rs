//! `ttp-agent status --config F [--json]`: open tasks, what needs attention, pseudonyms.

use std::process::ExitCode;

use super::{ConfigArg, context};
use crate::status;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Days of history to show.
    #[arg(long, default_value_t = 7)]
    days: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    let store = context::open_store(&loaded.config, &loaded.secrets)?;
    let warn = chrono::Duration::from_std(loaded.config.admin.warn_before_expiry)
        .unwrap_or(chrono::Duration::hours(48));
    let mut report = status::build(&store, warn, args.days)?;
    if loaded.config.handover.webhook_url.is_none() {
        // A webhook that ran once and was switched off since has nothing to report.
        report.handover.webhook = None;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}
