//! `ttp-agent poll --once --config F`: one poll cycle, then exit (non-zero when it failed).

use std::process::ExitCode;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::agent::Shutdown;
use crate::config::LogFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Run exactly one cycle (the only mode; the daemon is `ttp-agent run`).
    #[arg(long, required = true)]
    once: bool,
    /// Print the cycle report as JSON on stdout.
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
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let agent = context::agent(&loaded, Shutdown::never())?;
    agent.recover()?;
    // On a worker thread, as the daemon runs its cycles (`run` spawns the scheduler): run on
    // `block_on`'s own thread instead, the cycle would be woken across threads for every
    // response the runtime's workers read, a futex wake and a context switch each (about a
    // tenth of the CPU time of a 10,000-task drain).
    let cycle = runtime.spawn(async move { agent.poll_cycle().await });
    let report = match runtime.block_on(cycle) {
        Ok(result) => result?,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => anyhow::bail!("the poll cycle did not complete: {join}"),
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let d = &report.dispatch;
        crate::outln!(
            "poll {}: {} task(s) listed ({} new, {} unreadable); done {}, retry {}, in doubt {}, needs attention {}, expired {}; {} open",
            report.poll_seq,
            report.listed,
            report.new_tasks,
            report.problems,
            d.done,
            d.retry,
            d.in_doubt,
            d.attention,
            d.expired + report.expired_on_merge,
            report.open_after
        );
    }
    Ok(ExitCode::SUCCESS)
}
