//! `ttp-agent export --config F [--format csv|json] [--output FILE]`: local id → pseudonym.
//!
//! Only pseudonymised records are written; columns `local_id`, `pseudonym`, then `obtained_at`.
//! The output is the site's own mapping and goes to its data integration pipeline; it holds no
//! IDAT.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::domain::RecordState;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    let store = context::open_store(&loaded.config, &loaded.secrets)?;
    let mut rows: Vec<(String, String, String)> = store
        .records_in_states(|s| *s == RecordState::Pseudonymised)?
        .into_iter()
        .filter_map(|r| {
            let p = r.pseudonym?;
            Some((r.local_id, p, r.updated_at.to_rfc3339()))
        })
        .collect();
    rows.sort();
    let mut out: Vec<u8> = Vec::new();
    match args.format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(["local_id", "pseudonym", "obtained_at"])?;
            for (id, p, at) in &rows {
                w.write_record([id, p, at])?;
            }
            w.flush()?;
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|(id, p, at)| serde_json::json!({"local_id": id, "pseudonym": p, "obtained_at": at}))
                .collect();
            serde_json::to_writer_pretty(&mut out, &items)?;
            out.push(b'\n');
        }
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(&out)
            .context("writing to standard output")?,
    }
    eprintln!("{} pseudonym(s) exported", rows.len());
    Ok(ExitCode::SUCCESS)
}
