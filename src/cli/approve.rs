//! `ttp-agent approve` and `ttp-agent deny`: local users decide on the release of IDAT when
//! `[dispatch] idat_release = "approval"`.
//!
//! ```text
//! ttp-agent approve --config F [--study ID] TASK_KEY…
//! ttp-agent approve --config F [--study ID] --all
//! ttp-agent deny --config F [--study ID] TASK_KEY… --reason "no consent on file"
//! ```
//!
//! Who decides is never a flag: in the daemon it is the user the kernel reports for the
//! control socket's peer, in-process the local process's user (`Ctx::actor`). The logic (what
//! may be approved, once per user, the audit entry) is in [`crate::resolve`] and the domain's
//! `TaskRecord::approved_by` / `denied_by`.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use ttp_proto::TaskKey;

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::resolve;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The task keys, as `ttp-agent status` lists them under "awaiting approval".
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    task_keys: Vec<String>,
    /// Approve every task awaiting approval.
    #[arg(long)]
    all: bool,
    /// The study the tasks belong to; must be the configured `[ttp] study`.
    #[arg(long, value_name = "ID")]
    study: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The task keys, as `ttp-agent status` lists them under "awaiting approval".
    #[arg(required = true)]
    task_keys: Vec<String>,
    /// Why the release is denied (stored in clear with the task and in the audit trail: no
    /// IDAT).
    #[arg(long, short = 'm')]
    reason: String,
    /// The study the tasks belong to; must be the configured `[ttp] study`.
    #[arg(long, value_name = "ID")]
    study: Option<String>,
}

/// `approve`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApproveRequest {
    pub task_keys: Vec<String>,
    pub all: bool,
    pub study: Option<String>,
}

/// `deny`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DenyRequest {
    pub task_keys: Vec<String>,
    pub reason: String,
    pub study: Option<String>,
}

pub fn run_approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Approve(ApproveRequest {
        task_keys: args.task_keys,
        all: args.all,
        study: args.study,
    });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

pub fn run_deny(args: DenyArgs) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Deny(DenyRequest {
        task_keys: args.task_keys,
        reason: args.reason,
        study: args.study,
    });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

/// `--study` (approve, deny, withdraw, disclosures): one study per agent for now, so a given
/// study must be the configured one. A decision about another study's data must not silently
/// apply to this one's. A usage error (exit 2).
pub(crate) fn check_study(ctx: &Ctx, study: Option<&str>) -> anyhow::Result<()> {
    match study {
        Some(s) if s != ctx.config.ttp.study => Err(super::UsageError(format!(
            "--study {s:?}: this agent serves study {:?} only (one study per agent)",
            ctx.config.ttp.study
        ))
        .into()),
        _ => Ok(()),
    }
}

pub fn apply_approve(req: ApproveRequest, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    check_study(ctx, req.study.as_deref())?;
    let store = &ctx.store;
    let actor = &ctx.actor;
    let required = ctx.config.dispatch.approvals_required.max(1);
    let keys = if req.all {
        resolve::awaiting_approval(store)?
    } else {
        req.task_keys.into_iter().map(TaskKey).collect()
    };
    if keys.is_empty() {
        io.print("no task awaits approval\n");
        return Ok(0);
    }
    let mut failed = 0;
    for key in &keys {
        match resolve::approve_task(store, key, actor, required, chrono::Utc::now()) {
            Ok(done) => {
                let p = done.progress;
                let next = if p.complete() {
                    "ready: sent in the next cycle".to_string()
                } else {
                    format!(
                        "awaits {} more approval(s) by another local user",
                        p.need - p.have
                    )
                };
                io.print(&format!(
                    "{}: approved by {actor} ({} of {}); {next}\n",
                    done.key, p.have, p.need
                ));
            }
            Err(e) => {
                failed += 1;
                io.note(&format!("error: {e}"));
            }
        }
    }
    Ok(u8::from(failed > 0))
}

pub fn apply_deny(req: DenyRequest, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    check_study(ctx, req.study.as_deref())?;
    // The same reason for every task: checked once, before any is touched.
    resolve::check_reason(&req.reason)?;
    let mut failed = 0;
    for key in req.task_keys {
        match resolve::deny_task(
            &ctx.store,
            &TaskKey(key),
            &req.reason,
            &ctx.actor,
            chrono::Utc::now(),
        ) {
            Ok(done) => io.print(&format!(
                "{}: {} -> {} (recorded in the audit trail as {})\n",
                done.subject, done.from, done.to, ctx.actor
            )),
            Err(e) => {
                failed += 1;
                io.note(&format!("error: {e}"));
            }
        }
    }
    Ok(u8::from(failed > 0))
}
