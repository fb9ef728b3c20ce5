//! `ttp-agent encode`: encode a CSV file into Bloom filters, offline.
//!
//! ```text
//! ttp-agent encode --clk-schema SCHEMA.json --secret-file SECRET INPUT.csv
//! ttp-agent encode --fttp-profile PROFILE.json INPUT.csv
//! ```
//!
//! The output is `{"clks": ["<base64>", ...]}` in input order — the clkhash/anonlink format —
//! on stdout or in `--output FILE`. A bad row stops everything with an error naming its line and
//! field, and nothing is written; with `--skip-invalid` the row is reported on stderr and left
//! out. Rows are encoded on all cores; a progress bar shows on a terminal.
//!
//! The secret file is read as UTF-8; one trailing newline (`\n` or `\r\n`) is removed, since
//! editors add one (clkhash takes the secret as a command-line string, without it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use rayon::prelude::*;
use ttp_encode::Secret;
use ttp_encode::clk::{ClkEncoder, ClkSchema};
use ttp_encode::profile::ProfileEncoder;

use crate::cli::control::client::progress_bar;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("encoding").required(true).args(["clk_schema", "fttp_profile"])))]
pub struct Args {
    /// clkhash linkage schema (v3) to encode with.
    #[arg(long, value_name = "SCHEMA.json", requires = "secret_file")]
    clk_schema: Option<PathBuf>,
    /// The clkhash secret (with --clk-schema).
    #[arg(long, value_name = "SECRET")]
    secret_file: Option<PathBuf>,
    /// fTTP filter profile: the keys of the Mainzelliste configuration (seeds inline or in a
    /// `seeds_file`), plus optional `normalisation` and `sources`.
    #[arg(long, value_name = "PROFILE.json", conflicts_with = "secret_file")]
    fttp_profile: Option<PathBuf>,
    /// Write the output here instead of standard output (written only when encoding succeeded).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Report bad rows on stderr and leave them out instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    /// The column separator (default: detected from the header line: `,`, `;` or tab).
    #[arg(long, value_name = "CHAR", value_parser = crate::submit::input::table::delimiter_for)]
    delimiter: Option<u8>,
    /// The input's character encoding, e.g. `windows-1252` (default: UTF-8, or Windows-1252
    /// with a note when the file is not UTF-8).
    #[arg(long = "encoding", value_name = "NAME", value_parser = crate::submit::input::text::encoding_for_label)]
    input_encoding: Option<&'static encoding_rs::Encoding>,
    /// Input CSV; the header row names the fields (for clkhash: the feature identifiers,
    /// ignored features included).
    input: PathBuf,
}

/// One configured encoder, whichever kind.
enum Encoder {
    Clk {
        schema: Box<ClkSchema>,
        encoder: Box<ClkEncoder>,
    },
    Fttp(ProfileEncoder),
}

/// A row that could not be read or encoded. Names the line and the field, never the value.
#[derive(Debug)]
struct RowError {
    line: u64,
    field: Option<String>,
    reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field `{field}`: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let encoder = load_encoder(&args)?;
    let input_name = args.input.display().to_string();
    let (header, rows) = read_csv(&args)?;
    let columns = column_map(&encoder, &header)
        .map_err(|e| anyhow::anyhow!("{input_name}: line 1 (header): {e}"))?;

    let bar = progress_bar(rows.len() as u64, "encoding");
    let results: Vec<Result<String, RowError>> = rows
        .par_iter()
        .map(|(line, row)| {
            let r = match row {
                Ok(row) => encode_row(&encoder, &columns, &header, *line, row),
                Err(reason) => Err(RowError {
                    line: *line,
                    field: None,
                    reason: reason.clone(),
                }),
            };
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();

    let mut clks = Vec::with_capacity(results.len());
    let mut skipped = 0usize;
    for r in results {
        match r {
            Ok(c) => clks.push(c),
            Err(e) if args.skip_invalid => {
                crate::errln!("ttp-agent: skipped {input_name}: {e}");
                skipped += 1;
            }
            Err(e) => anyhow::bail!("{input_name}: {e}; nothing was written"),
        }
    }
    let mut out = String::with_capacity(clks.iter().map(|c| c.len() + 4).sum::<usize>() + 16);
    out.push_str("{\"clks\": [");
    for (i, c) in clks.iter().enumerate() {
        out.push_str(if i == 0 { "\n  \"" } else { ",\n  \"" });
        out.push_str(c);
        out.push('"');
    }
    out.push_str("\n]}\n");
    match &args.output {
        Some(p) => write_atomically(p, out.as_bytes())?,
        None => std::io::stdout()
            .write_all(out.as_bytes())
            .context("writing to standard output")?,
    }
    if skipped > 0 || args.output.is_some() {
        crate::errln!(
            "ttp-agent: encoded {} record(s), skipped {skipped}",
            clks.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_encoder(args: &Args) -> anyhow::Result<Encoder> {
    if let Some(path) = &args.fttp_profile {
        let enc = ProfileEncoder::from_fttp_profile_file(path)
            .map_err(|e| super::context::config_error(format!("{}: {e}", path.display())))?;
        return Ok(Encoder::Fttp(enc));
    }
    let (Some(schema_path), Some(secret_path)) = (&args.clk_schema, &args.secret_file) else {
        anyhow::bail!("--clk-schema needs --secret-file");
    };
    let text = std::fs::read_to_string(schema_path)
        .with_context(|| format!("reading {}", schema_path.display()))?;
    let schema = ClkSchema::from_json(&text)
        .map_err(|e| super::context::config_error(format!("{}: {e}", schema_path.display())))?;
    let secret = read_secret(secret_path)?;
    let encoder = ClkEncoder::new(&schema, &secret);
    Ok(Encoder::Clk {
        schema: Box::new(schema),
        encoder: Box::new(encoder),
    })
}

fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    if bytes.is_empty() {
        anyhow::bail!("the secret file {} is empty", path.display());
    }
    if std::str::from_utf8(&bytes).is_err() {
        anyhow::bail!("the secret file {} is not UTF-8 text", path.display());
    }
    Ok(Secret::new(bytes))
}

/// Rows with their line in the file; a row that is not readable CSV carries why.
type Rows = Vec<(u64, Result<csv::StringRecord, String>)>;

/// The input through the same reader as `submit`'s (encoding, separator, file line numbers).
fn read_csv(args: &Args) -> anyhow::Result<(Vec<String>, Rows)> {
    let name = args.input.display();
    let bytes = std::fs::read(&args.input).with_context(|| format!("reading {name}"))?;
    let decoded = crate::submit::input::text::decode(&bytes, args.input_encoding)
        .map_err(|reason| anyhow::anyhow!("{name}: {reason}"))?;
    let table = crate::submit::input::table::read(&decoded.text, args.delimiter)
        .map_err(|reason| anyhow::anyhow!("{name}: line 1 (header): {reason}"))?;
    for note in decoded.note.iter().chain(&table.note) {
        crate::errln!("ttp-agent: {name}: note: {note}");
    }
    let rows = table.rows.into_iter().map(|r| (r.line, r.fields)).collect();
    Ok((table.header, rows))
}

/// For each encoder input (feature / source), the CSV column it comes from.
fn column_map(encoder: &Encoder, header: &[String]) -> Result<Vec<usize>, String> {
    let wanted: Vec<&str> = match encoder {
        Encoder::Clk { schema, .. } => schema.feature_names(),
        Encoder::Fttp(p) => p.sources().iter().map(String::as_str).collect(),
    };
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            return Err(format!("column `{h}` appears twice"));
        }
    }
    let mut map = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for w in &wanted {
        match header.iter().position(|h| h == w) {
            Some(i) => map.push(i),
            None => missing.push(*w),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing column(s) {}; expected {}",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            wanted.join(",")
        ));
    }
    if let Encoder::Clk { .. } = encoder {
        // clkhash requires the header to be exactly the schema's features.
        let extra: Vec<&String> = header
            .iter()
            .filter(|h| !wanted.contains(&h.as_str()))
            .collect();
        if !extra.is_empty() {
            return Err(format!(
                "column(s) not in the schema: {}",
                extra
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(map)
}

fn encode_row(
    encoder: &Encoder,
    columns: &[usize],
    header: &[String],
    line: u64,
    row: &csv::StringRecord,
) -> Result<String, RowError> {
    match encoder {
        Encoder::Clk { encoder, .. } => {
            let values: Vec<&str> = columns.iter().map(|&i| row.get(i).unwrap_or("")).collect();
            encoder
                .encode(&values)
                .map(|clk| ttp_encode::clk::to_base64(&clk))
                .map_err(|e| RowError {
                    line,
                    field: Some(e.feature.clone()),
                    reason: e.reason.clone(),
                })
        }
        Encoder::Fttp(p) => {
            let get = |source: &str| -> Option<&str> {
                header
                    .iter()
                    .position(|h| h == source)
                    .and_then(|i| row.get(i))
            };
            p.encode_record(&get)
                .map(|bf| ttp_proto::BloomFilter(bf).to_base64())
                .map_err(|e| RowError {
                    line,
                    field: Some(e.source.clone()),
                    reason: e.reason.to_string(),
                })
        }
    }
}

/// Write next to the destination and rename, so a failure never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error))?;
    Ok(())
}
