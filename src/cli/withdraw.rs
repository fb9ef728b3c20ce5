//! `ttp-agent withdraw`: a patient withdrew consent.
//!
//! ```text
//! ttp-agent withdraw --config F [--study ID] LOCAL_ID…
//! ttp-agent withdraw --config F [--study ID] --file WITHDRAWN.csv   # a `local_id` column
//! ```
//!
//! The record's IDAT and Bloom filter are purged at once, its open tasks are closed and never
//! answered, later tasks about it are closed the same way, and `submit` refuses the local id
//! unless `--readmit`; the pseudonym stays available to `export` (column `withdrawn`). The
//! logic is [`crate::withdraw`]. Recorded with the local user who runs the command (through
//! the daemon: the control socket's peer), never a name given on the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::withdraw;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The local ids of the records whose consent was withdrawn.
    #[arg(required_unless_present = "file")]
    local_ids: Vec<String>,
    /// A CSV file with a `local_id` column (other columns are ignored and never shown).
    #[arg(long, value_name = "CSV")]
    file: Option<PathBuf>,
    /// The study the records belong to; must be the configured `[ttp] study`.
    #[arg(long, value_name = "ID")]
    study: Option<String>,
}

/// `withdraw`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub local_ids: Vec<String>,
    pub study: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut local_ids = args.local_ids;
    if let Some(file) = &args.file {
        local_ids.extend(read_local_ids(file)?);
    }
    local_ids.dedup();
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Withdraw(Request {
        local_ids,
        study: args.study,
    });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

/// The `local_id` column of a CSV file (`,` or `;`), in file order, without empty cells.
fn read_local_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not UTF-8; save the list of local ids as UTF-8",
            path.display()
        )
    })?;
    let first = text.lines().next().unwrap_or_default();
    let delimiter = if first.contains(';') && !first.contains(',') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .with_context(|| format!("{}: reading the header line", path.display()))?
        .clone();
    let Some(column) = headers.iter().position(|h| h.trim() == "local_id") else {
        anyhow::bail!(
            "{}: no `local_id` column in the header line",
            path.display()
        );
    };
    let mut ids = Vec::new();
    for (i, row) in reader.records().enumerate() {
        // Line numbers only: a row may hold more than the id.
        let row = row.map_err(|_| {
            anyhow::anyhow!("{}, line {}: not a readable CSV row", path.display(), i + 2)
        })?;
        if let Some(id) = row.get(column).map(str::trim).filter(|s| !s.is_empty()) {
            ids.push(id.to_owned());
        }
    }
    if ids.is_empty() {
        anyhow::bail!("{}: no local id in the `local_id` column", path.display());
    }
    Ok(ids)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    super::approve::check_study(ctx, req.study.as_deref())?;
    if req.local_ids.is_empty() {
        anyhow::bail!("no local id given");
    }
    // Registration must not write a record that is being removed: wait for a running one.
    let agent = ctx.agent()?;
    if agent.registration_running() {
        io.waiting("the daemon is registering records in its poll cycle; the withdrawal follows when that registration is done");
    }
    let _no_registration = ctx.block_on(agent.registering.lock())?;
    let results = withdraw::withdraw(&ctx.store, &req.local_ids, &ctx.actor, chrono::Utc::now())?;
    let mut failed = 0;
    for result in results {
        match result {
            Ok(w) if w.already => io.print(&format!(
                "{}: withdrawn already (at {} by {}); {}\n",
                w.withdrawal.local_id,
                w.withdrawal.at.format("%Y-%m-%d %H:%M:%S UTC"),
                w.withdrawal.by,
                // An earlier run may have stopped before it closed them.
                closed_text(
                    &w.tasks_closed,
                    "nothing more to do",
                    "open task(s) about it closed now"
                )
            )),
            Ok(w) => {
                let closed = closed_text(
                    &w.tasks_closed,
                    "no open task about it",
                    "open task(s) closed",
                );
                io.print(&format!(
                    "{}: consent withdrawn; IDAT and Bloom filter purged, {closed}; {} (recorded in the audit trail as {})\n",
                    w.withdrawal.local_id,
                    if w.withdrawal.pseudonym.is_some() {
                        "its pseudonym stays in `export` (column withdrawn)"
                    } else {
                        "it had no pseudonym yet"
                    },
                    ctx.actor
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

/// "`N` `what`, not answered: keys", or `none` when no task was closed.
fn closed_text(keys: &[String], none: &str, what: &str) -> String {
    if keys.is_empty() {
        return none.to_owned();
    }
    format!("{} {what}, not answered: {}", keys.len(), keys.join(", "))
}
