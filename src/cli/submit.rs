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
use crate::input::InputSettings;
use crate::submit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// CSV with a header row: `local_id` and fTTP element codes (given, family, birthdate
    /// as YYYY, YYYY-MM or YYYY-MM-DD, also DD.MM.YYYY; gender as male/female/other/unknown
    /// or m/w/d/x, …). `,`- or `;`-separated, UTF-8 or Windows-1252; `[input]` in the
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
    #[arg(long, value_name = "CHAR", value_parser = crate::input::table::delimiter_for)]
    delimiter: Option<u8>,
    /// The file's character encoding, e.g. `windows-1252` (default: `[input] encoding`, else
    /// UTF-8, or Windows-1252 with a note when the file is not UTF-8).
    #[arg(long, value_name = "NAME", value_parser = crate::input::text::encoding_for_label)]
    encoding: Option<&'static encoding_rs::Encoding>,
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

    let records = read_valid(&args, &loaded.config)?;
    let total = records.len() as u64;
    let bar = progress_bar(total, "encoding");
    let encoded = submit::encode_records(&encoder, records, &|n| bar.inc(n))
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was stored", args.records.display()))?;
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
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        crate::outln!(
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
        crate::outln!(
            "registration: {} sent in {} batch(es): {} pseudonymised at once, {} awaiting clearing, {} rejected; {} still pending",
            registered.sent,
            registered.batches,
            registered.pseudonymised,
            registered.awaiting_clearing,
            registered.rejected,
            registered.pending_left
        );
        if let Some(why) = &registered.stopped {
            crate::outln!(
                "registration paused: {why}; the daemon (or another `submit`) sends the rest"
            );
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

/// The input settings: `[input]` from the configuration, then the command line.
fn input_settings(
    args: &Args,
    config: &crate::config::AgentConfig,
) -> anyhow::Result<InputSettings> {
    let mut settings = match &config.input {
        Some(table) => InputSettings::from_table(table).map_err(|e| {
            context::config_error(match config.source_file() {
                Some(file) => format!("{}: {e}", file.display()),
                None => e,
            })
        })?,
        None => InputSettings::default(),
    };
    settings.delimiter = args.delimiter.or(settings.delimiter);
    settings.encoding = args.encoding.or(settings.encoding);
    Ok(settings)
}

/// Reads the whole file first. Every invalid row is listed (up to a limit) and nothing is
/// stored, unless `--skip-invalid` stores the valid ones and writes the others' line numbers
/// to the reject file.
fn read_valid(
    args: &Args,
    config: &crate::config::AgentConfig,
) -> anyhow::Result<Vec<submit::InputRecord>> {
    let settings = input_settings(args, config)?;
    let name = args.records.display().to_string();
    let parsed = submit::read_records_with(&args.records, &settings)?;
    for note in &parsed.notes {
        crate::errln!("ttp-agent: {name}: note: {note}");
    }
    if parsed.problems.is_empty() {
        return Ok(parsed.records);
    }
    let n = parsed.problems.len();
    for p in parsed.problems.iter().take(submit::PROBLEMS_SHOWN) {
        crate::errln!("ttp-agent: {name}: {p}");
    }
    if n > submit::PROBLEMS_SHOWN {
        crate::errln!(
            "ttp-agent: {name}: … and {} more invalid row(s)",
            n - submit::PROBLEMS_SHOWN
        );
    }
    if !args.skip_invalid {
        anyhow::bail!(
            "{name}: {n} invalid row(s), listed above; nothing was stored. Fix them and run \
             `submit` again, or store the valid rows with --skip-invalid"
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
        "ttp-agent: {name}: left out {n} invalid row(s); their line numbers and problems are in {}",
        rejects.display()
    );
    Ok(parsed.records)
}

/// `line,column,problem`: what was wrong with each row left out, never a value.
fn rejects_csv(problems: &[crate::input::RowProblem]) -> String {
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
