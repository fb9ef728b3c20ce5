//! `ttp-agent purge --config F`: apply the retention rules now instead of at the daemon's next
//! hourly housekeeping -- finished tasks older than `[store] task_retention` move into the
//! per-day history, IDAT of records finished longer than `[store] idat_retention` ago is
//! dropped (unless an open task still refers to the record). Prints what it removed.
//!
//! Runs in the daemon when it runs (`crate::cli::control`), with the daemon's retention settings.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

/// `purge`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Purge(Request { json: args.json });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let purged = ctx.agent()?.purge(chrono::Utc::now())?;
    if req.json {
        io.print(&format!("{}\n", serde_json::to_string_pretty(&purged)?));
    } else {
        let store = &ctx.config.store;
        io.print(&format!(
            "{} finished task(s) older than {} moved into the history; IDAT of {} record(s) finished more than {} ago dropped\n",
            purged.tasks,
            humantime::format_duration(store.task_retention.std()),
            purged.idat,
            humantime::format_duration(store.idat_retention.std()),
        ));
    }
    Ok(0)
}
