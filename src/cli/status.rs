//! `ttp-agent status --config F [--json] [--days N]`: open tasks, what needs attention,
//! pseudonyms.
//!
//! Runs through the daemon's control channel when the daemon runs (`crate::cli::control`): the
//! report then carries the daemon's own state too (readiness, last cycle), and a note on
//! stderr says so. Without a daemon, the command opens the store itself.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
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

/// `status`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub json: bool,
    pub days: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Status(Request {
        json: args.json,
        days: args.days,
    });
    client::run(
        config,
        request,
        None,
        OutputTarget::Stdout,
        Some("ttp-agent: the store is in use by the running agent; showing its status"),
    )
}

/// The report from the store (and, in the daemon, the daemon's state), as text or JSON.
pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let mut report = match &ctx.daemon {
        Some(state) => crate::admin::api::report(state, req.days)?,
        None => status::build(
            &ctx.store,
            crate::admin::warn_window(&ctx.config.admin),
            req.days,
        )?,
    };
    report.approvals_required = (ctx.config.dispatch.idat_release
        == crate::config::IdatRelease::Approval)
        .then_some(ctx.config.dispatch.approvals_required);
    if ctx.config.handover.webhook_url.is_none() {
        // A webhook that ran once and was switched off since has nothing to report.
        report.handover.webhook = None;
    }
    let text = if req.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        status::render_text(&report)
    };
    io.print(&text);
    Ok(0)
}
