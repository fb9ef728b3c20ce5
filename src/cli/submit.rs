//! `ttp-agent submit --config F RECORDS.csv`: encode, store and register records.
//!
//! Idempotent: a record already stored with the same filter is not stored or sent again, so
//! running the same file twice sends nothing new, and a run interrupted at any point is
//! finished by running it again (or by the daemon's next cycle).
//!
//! Runs in the daemon when it runs (`crate::control`): this command opens the file under the
//! operator's account and streams its bytes unchanged; the daemon validates, encodes (it holds
//! the secrets), stores and registers, reporting progress. Without a daemon, the same steps
//! run in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::{ConfigArg, context};
use crate::config::LogFormat;
use crate::control::client::{self, OutputTarget};
use crate::control::{Ctx, Session};
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

/// `submit`, as the daemon receives it; the file's bytes follow as the input stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The file as given, for messages.
    pub name: String,
    pub json: bool,
}

/// Records encoded between two progress reports.
const ENCODE_CHUNK: usize = 10_000;

pub fn run(
    args: Args,
    format: Option<LogFormat>,
    level: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    context::init_logging(&config, format, level.as_deref());
    let name = args.records.display().to_string();
    let file = std::fs::File::open(&args.records).map_err(|source| submit::InputError::Io {
        path: name.clone(),
        source,
    })?;
    let request = crate::control::Request::Submit(Request {
        name,
        json: args.json,
    });
    client::run(
        config,
        request,
        Some(Box::new(file)),
        OutputTarget::Stdout,
        None,
    )
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let encoder = context::encoder(&ctx.config)?;
    let records = submit::read_records_from(io.input(), &req.name)?;
    let total = records.len() as u64;
    let mut encoded = Vec::with_capacity(records.len());
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(ENCODE_CHUNK));
        encoded.extend(submit::encode_records(&encoder, rest, &|_| {})?);
        rest = tail;
        io.progress("encoding", encoded.len() as u64, total);
    }

    let agent = ctx.agent()?;
    submit::check_profile(&ctx.store, &encoder).map_err(context::config_error)?;
    let stored = submit::store_records(&ctx.store, &encoded, 10_000)?;
    if agent.registration_running() {
        io.waiting(
            "the daemon is registering records in its poll cycle; this file's records are stored, and are sent when that registration is done",
        );
    }
    let registered = ctx.block_on(agent.register_pending())??;

    if req.json {
        let out = serde_json::json!({
            "read": total, "stored": stored, "registration": registered,
        });
        io.print(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    } else {
        let mut text = format!(
            "{total} records read; {} stored new, {} already stored{}\n",
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
        text.push_str(&format!(
            "registration: {} sent in {} batch(es): {} pseudonymised at once, {} awaiting clearing, {} rejected; {} still pending\n",
            registered.sent,
            registered.batches,
            registered.pseudonymised,
            registered.awaiting_clearing,
            registered.rejected,
            registered.pending_left
        ));
        if let Some(why) = &registered.stopped {
            text.push_str(&format!(
                "registration paused: {why}; the daemon (or another `submit`) sends the rest\n"
            ));
        }
        io.print(&text);
    }
    Ok(
        if registered.stopped.is_some() || !stored.conflicts.is_empty() {
            1
        } else {
            0
        },
    )
}
