//! `ttp-agent disclosures --config F [--local-id ID] [--since DATE] [--format csv|json]
//! [--study ID]` prints the disclosure log: every `$providePatientData` answer the fTTP
//! accepted, and every answer that was in doubt with the entry that settled it (element codes
//! only, never a value; see `store::disclosures`). `ttp-agent disclosures --verify` checks the
//! log's chain and names the first broken link (exit 1).
//!
//! For a data protection officer answering an access request (GDPR Art. 15): `--local-id`
//! selects one patient's entries. `--study` is checked against the configured study (`[ttp]
//! study`), so that scripts written now keep working once a site runs several studies.
//!
//! Runs through the daemon when it runs (`crate::cli::control`), like `export`; the output is
//! the command's.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ConfigArg;
use super::export::{Format, spreadsheet_safe};
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::store::{DisclosureEntry, Store};

/// Entries read from the store at a time: bounded memory for any log size.
const PAGE: usize = 10_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Only the entries about this local id.
    #[arg(long, value_name = "ID")]
    local_id: Option<String>,
    /// Only entries from this moment on: a date (YYYY-MM-DD, from its start in UTC) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "DATE", value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// The study the entries are for; must be the configured one (`[ttp] study`).
    #[arg(long, value_name = "ID")]
    study: Option<String>,
    /// Check the log's chain instead of printing it: names the first broken link (exit 1).
    #[arg(long, conflicts_with_all = ["local_id", "since"])]
    verify: bool,
}

/// `disclosures`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub local_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub format: Format,
    pub study: Option<String>,
    pub verify: bool,
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let request = crate::cli::control::Request::Disclosures(Request {
        local_id: args.local_id,
        since: args.since,
        format: args.format,
        study: args.study,
        verify: args.verify,
    });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    super::approve::check_study(ctx, req.study.as_deref())?;
    let store = &ctx.store;
    if req.verify {
        let check = store.verify_disclosures()?;
        return Ok(match check.broken {
            None => {
                io.print(&format!(
                    "disclosure log: {} entries, chain intact\n",
                    check.entries
                ));
                0
            }
            Some(link) => {
                io.print(&format!(
                    "disclosure log: broken at entry {}: {} ({} entries before it verified)\n",
                    link.seq, link.why, check.entries
                ));
                1
            }
        });
    }
    let rows = write_entries(store, &req, io.output())?;
    io.commit_output()?;
    io.note(&format!(
        "{rows} disclosure log entr{}",
        if rows == 1 { "y" } else { "ies" }
    ));
    Ok(0)
}

fn codes(els: &[ttp_proto::IdatElement]) -> String {
    els.iter().map(|e| e.code()).collect::<Vec<_>>().join(" ")
}

/// Writes the selected entries, page by page. The writer is not flushed.
fn write_entries(store: &Store, req: &Request, w: &mut dyn Write) -> anyhow::Result<u64> {
    let wanted = |e: &DisclosureEntry| {
        req.local_id.as_ref().is_none_or(|id| *id == e.local_id)
            && req.since.is_none_or(|since| e.at >= since)
    };
    enum Sink<'w> {
        Csv(Box<csv::Writer<&'w mut dyn Write>>),
        Json(&'w mut dyn Write, bool),
    }
    let mut sink = match req.format {
        Format::Csv => {
            let mut c = csv::Writer::from_writer(w);
            c.write_record([
                "seq", "at", "study", "task_id", "local_id", "event", "settles", "sent",
                "withheld", "missing",
            ])?;
            Sink::Csv(Box::new(c))
        }
        Format::Json => {
            w.write_all(b"[")?;
            Sink::Json(w, true)
        }
    };
    let mut rows = 0;
    let mut after = 0;
    loop {
        let page = store.disclosures_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| wanted(e)) {
            let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            match &mut sink {
                Sink::Csv(c) => c.write_record([
                    &e.seq.to_string(),
                    &at,
                    &*spreadsheet_safe(&e.study),
                    &*spreadsheet_safe(&e.task_id),
                    &*spreadsheet_safe(&e.local_id),
                    e.event.name(),
                    &e.settles.map_or(String::new(), |s| s.to_string()),
                    &codes(&e.sent),
                    &codes(&e.withheld),
                    &codes(&e.missing),
                ])?,
                Sink::Json(w, first) => {
                    // The MACs are the chain's business (`--verify`), not the reader's.
                    let item = serde_json::json!({
                        "seq": e.seq,
                        "at": at,
                        "study": e.study,
                        "task_id": e.task_id,
                        "local_id": e.local_id,
                        "event": e.event.name(),
                        "settles": e.settles,
                        "sent": e.sent,
                        "withheld": e.withheld,
                        "missing": e.missing,
                    });
                    w.write_all(if *first { b"\n  " } else { b",\n  " })?;
                    *first = false;
                    serde_json::to_writer(&mut **w, &item)?;
                }
            }
            rows += 1;
        }
    }
    match sink {
        Sink::Csv(mut c) => c.flush()?,
        Sink::Json(w, first) => w.write_all(if first { b"]\n" } else { b"\n]\n" })?,
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_a_date_or_a_time_and_nothing_else() {
        assert_eq!(
            parse_since("2026-12-07").unwrap().to_rfc3339(),
            "2026-12-07T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-12-07T10:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-07T09:00:00+00:00"
        );
        assert!(parse_since("07.12.2026").is_err());
    }
}
