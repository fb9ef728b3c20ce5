//! `ttp-agent purge --config F`: apply the retention rules now instead of at the daemon's next
//! hourly housekeeping -- finished tasks older than `[store] task_retention` move into the
//! per-day history, IDAT of records finished longer than `[store] idat_retention` ago is
//! dropped (unless an open task still refers to the record). Prints what it removed.

use std::process::ExitCode;

use super::{ConfigArg, context};
use crate::agent::Shutdown;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    let agent = context::agent(&loaded, Shutdown::never())?;
    let purged = agent.purge(chrono::Utc::now())?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&purged)?);
    } else {
        let store = &loaded.config.store;
        crate::outln!(
            "{} finished task(s) older than {} moved into the history; IDAT of {} record(s) finished more than {} ago dropped",
            purged.tasks,
            humantime::format_duration(store.task_retention),
            purged.idat,
            humantime::format_duration(store.idat_retention),
        );
    }
    Ok(ExitCode::SUCCESS)
}
