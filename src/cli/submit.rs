//! `ttp-agent submit --config F RECORDS.csv`: encode, store and register records.
//!
//! Idempotent: a record already stored with the same filter is not stored or sent again, so
//! running the same file twice sends nothing new, and a run interrupted at any point is
//! finished by running it again (or by the daemon's next cycle).
//!
//! The whole file is checked first (`crate::submit::input`, a pure function over its bytes): every bad
//! row is listed and nothing is stored, unless `--skip-invalid` stores the good rows and writes
//! the bad rows' lines to a reject file. This check runs here, under the operator's account
//! (which writes the reject file), before anything is sent.
//!
//! Runs in the daemon when it runs (`crate::cli::control`): this command opens the file under the
//! operator's account and streams its bytes unchanged; the daemon validates again with the same
//! function and settings, encodes (it holds the secrets), stores and registers, reporting
//! progress. Without a daemon, the same steps run in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{ConfigArg, context};
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::config::LogFormat;
use crate::submit;
use crate::submit::input::{self, InputSettings, RowProblem};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// CSV with a header row: `local_id` and fTTP element codes (given, family, birthdate
    /// as YYYY, YYYY-MM or YYYY-MM-DD, gender as male/female/other/unknown or m/w/d/x,
    /// …). `,`- or `;`-separated, UTF-8 or Windows-1252; `[input]` in the
    /// configuration maps other layouts and codes.
    records: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Store the valid rows and leave the invalid ones out, listing their line numbers in the
    /// reject file (without this, a file with an invalid row stores nothing).
    #[arg(long)]
    skip_invalid: bool,
    /// Where `--skip-invalid` lists the rows it left out (default: RECORDS.rejected.csv).
    #[arg(long, value_name = "PATH", requires = "skip_invalid")]
    rejects: Option<PathBuf>,
    /// The column separator (default: `[input] delimiter`, else detected from the header
    /// line: `,`, `;` or tab).
    #[arg(long, value_name = "CHAR", value_parser = crate::submit::input::table::delimiter_for)]
    delimiter: Option<u8>,
    /// The file's character encoding, e.g. `windows-1252` (default: `[input] encoding`, else
    /// UTF-8, or Windows-1252 with a note when the file is not UTF-8).
    #[arg(long, value_name = "NAME")]
    encoding: Option<String>,
    /// Store records whose consent was withdrawn (`ttp-agent withdraw`) again: consent was
    /// given anew. Without it a file naming such a local id stores nothing.
    #[arg(long)]
    readmit: bool,
}

/// `submit`, as the daemon receives it; the file's bytes follow as the input stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The file as given, for messages.
    pub name: String,
    pub json: bool,
    /// Store the valid rows of a file with invalid ones (the command has written the reject
    /// file).
    #[serde(default)]
    pub skip_invalid: bool,
    /// `--delimiter`, over `[input] delimiter`.
    #[serde(default)]
    pub delimiter: Option<u8>,
    /// `--encoding` (a label), over `[input] encoding`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `--readmit`: local ids whose consent was withdrawn may be stored again.
    #[serde(default)]
    pub readmit: bool,
}

/// Records encoded (and stored) between two progress reports.
const ENCODE_CHUNK: usize = 10_000;

/// How often registration reports its progress.
const REGISTER_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub fn run(
    args: Args,
    format: Option<LogFormat>,
    level: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    context::init_logging(&config, format, level.as_deref());
    let name = args.records.display().to_string();
    let bytes = std::fs::read(&args.records).map_err(|source| input::FileProblem::Io {
        path: name.clone(),
        source,
    })?;
    let request = Request {
        name,
        json: args.json,
        skip_invalid: args.skip_invalid,
        delimiter: args.delimiter,
        encoding: args.encoding.clone(),
        readmit: args.readmit,
    };
    // Checked here first: the operator sees every problem before anything is sent, and the
    // reject file is written under the operator's account.
    let settings = input_settings(&request, &config)?;
    let parsed = input::parse(&bytes, &request.name, &settings)?;
    for note in &parsed.notes {
        crate::errln!("ttp-agent: {}: note: {note}", request.name);
    }
    if !parsed.problems.is_empty() {
        report_problems(&request.name, &parsed.problems);
        let n = parsed.problems.len();
        if !args.skip_invalid {
            anyhow::bail!(
                "{}: {n} invalid row(s), listed above; nothing was stored. Fix them and run \
                 `submit` again, or store the valid rows with --skip-invalid",
                request.name
            );
        }
        let rejects = args.rejects.clone().unwrap_or_else(|| {
            let mut p = args.records.clone().into_os_string();
            p.push(".rejected.csv");
            PathBuf::from(p)
        });
        std::fs::write(&rejects, rejects_csv(&parsed.problems))
            .with_context(|| format!("writing the reject file {}", rejects.display()))?;
        crate::errln!(
            "ttp-agent: {}: left out {n} invalid row(s); their line numbers and problems are in {}",
            request.name,
            rejects.display()
        );
    }
    client::run(
        config,
        crate::cli::control::Request::Submit(request),
        Some(Box::new(std::io::Cursor::new(bytes))),
        OutputTarget::Stdout,
        None,
    )
}

/// The input settings: `[input]` from the configuration, then the command line.
fn input_settings(
    req: &Request,
    config: &crate::config::AgentConfig,
) -> anyhow::Result<InputSettings> {
    let in_file = |e: String| {
        context::config_error(match config.source_file() {
            Some(file) => format!("{}: {e}", file.display()),
            None => e,
        })
    };
    let mut settings = match &config.input {
        Some(table) => InputSettings::from_table(table).map_err(in_file)?,
        None => InputSettings::default(),
    };
    settings.delimiter = req.delimiter.or(settings.delimiter);
    if let Some(label) = &req.encoding {
        settings.encoding = Some(
            input::text::encoding_for_label(label)
                .map_err(|e| anyhow::anyhow!("--encoding: {e}"))?,
        );
    }
    Ok(settings)
}

/// Every problem on stderr, up to [`submit::PROBLEMS_SHOWN`], then how many more.
fn report_problems(name: &str, problems: &[RowProblem]) {
    for p in problems.iter().take(submit::PROBLEMS_SHOWN) {
        crate::errln!("ttp-agent: {name}: {p}");
    }
    if problems.len() > submit::PROBLEMS_SHOWN {
        crate::errln!(
            "ttp-agent: {name}: … and {} more invalid row(s)",
            problems.len() - submit::PROBLEMS_SHOWN
        );
    }
}

/// `line,column,problem`: what was wrong with each row left out, never a value.
fn rejects_csv(problems: &[RowProblem]) -> String {
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("line,column,problem\n");
    for p in problems {
        out.push_str(&format!(
            "{},{},{}\n",
            p.line,
            p.column.as_deref().map(quoted).unwrap_or_default(),
            quoted(&p.reason)
        ));
    }
    out
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let encoder = context::encoder(&ctx.config)?;
    let settings = input_settings(&req, &ctx.config)?;
    let mut bytes = Vec::new();
    io.input()
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", req.name))?;
    // The same pure check as the command's; it already listed the problems.
    let parsed = input::parse(&bytes, &req.name, &settings)?;
    if !parsed.problems.is_empty() && !req.skip_invalid {
        return Err(submit::InputError::Rows {
            path: req.name,
            problems: parsed.problems,
        }
        .into());
    }
    let records = parsed.records;
    // A withdrawn local id is stored again only on purpose: before anything is encoded.
    let mut withdrawn: Vec<&str> = Vec::new();
    for r in &records {
        if ctx.store.withdrawal(&r.local_id)?.is_some() && !withdrawn.contains(&r.local_id.as_str())
        {
            withdrawn.push(&r.local_id);
        }
    }
    if !withdrawn.is_empty() {
        if !req.readmit {
            anyhow::bail!(
                "{}: consent was withdrawn for local id(s) {} (`ttp-agent withdraw`); nothing was stored. Only with new consent: submit again with --readmit",
                req.name,
                withdrawn.join(", ")
            );
        }
        let now = chrono::Utc::now();
        for id in &withdrawn {
            crate::withdraw::readmit(&ctx.store, id, &ctx.actor, now)?;
            io.note(&format!(
                "{id}: consent withdrawal lifted (--readmit; recorded in the audit trail as {})",
                ctx.actor
            ));
        }
        ctx.store.flush()?;
    }
    let total = records.len() as u64;
    let mut encoded = Vec::with_capacity(records.len());
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(ENCODE_CHUNK));
        encoded.extend(
            submit::encode_records(&encoder, rest, &|_| {})
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was stored", req.name))?,
        );
        rest = tail;
        io.progress("encoding", encoded.len() as u64, total);
    }

    let agent = ctx.agent()?;
    submit::check_profile(&ctx.store, &encoder).map_err(context::config_error)?;
    // Chunk by chunk (each flushed, as `store_records` does), to show progress.
    let mut stored = submit::StoreStats::default();
    let mut done = 0u64;
    for part in encoded.chunks(ENCODE_CHUNK) {
        let s = submit::store_records(&ctx.store, part, ENCODE_CHUNK)?;
        stored.inserted += s.inserted;
        stored.unchanged += s.unchanged;
        stored.conflicts.extend(s.conflicts);
        done += part.len() as u64;
        io.progress("storing", done, total);
    }
    if agent.registration_running() {
        io.waiting(
            "the daemon is registering records in its poll cycle; this file's records are stored, and are sent when that registration is done",
        );
    }
    let registered = ctx.block_on(register_showing_progress(&agent, &ctx.store, io))??;

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

/// Registers what is pending, reporting how many of the records waiting at the start have left
/// (read from the store's counters, which cost nothing to read).
async fn register_showing_progress(
    agent: &crate::agent::Agent,
    store: &crate::store::Store,
    io: &mut dyn Session,
) -> Result<submit::RegisterStats, submit::RegisterError> {
    let waiting = |store: &crate::store::Store| {
        store
            .record_counts()
            .map(|c| c.new + c.sending)
            .unwrap_or(0)
    };
    let at_start = waiting(store);
    let registration = agent.register_pending();
    tokio::pin!(registration);
    let mut tick = tokio::time::interval(REGISTER_PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut registration => return result,
            _ = tick.tick() => {
                if at_start > 0 {
                    let left = waiting(store).min(at_start);
                    io.progress("registering", at_start - left, at_start);
                }
            }
        }
    }
}
