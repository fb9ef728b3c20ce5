//! `ttp-agent backup --config F OUT`: a consistent, checksummed copy of the store in one file.
//!
//! The file does not depend on the store engine's on-disk format (see `store::backup`), so it
//! also carries a store across an upgrade. IDAT stays sealed under the IDAT key: a backup is
//! useless without the key file, and as sensitive as the store with it.
//!
//! Works beside the running daemon (`crate::cli::control`): the process that holds the store writes
//! the snapshot into a private scratch file next to the store directory while it goes on
//! working, and streams it to this command, which writes `OUT` under the operator's own
//! account through an exclusive temporary file (mode 0600, never following a symlink),
//! fsynced and renamed into place. Without a daemon the command does the same in-process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The backup file to write (mode 0600; written next to it first, then renamed).
    output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `backup`, as the daemon receives it: the file is the command's, so only its name travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// `OUT` as given, for the summary.
    pub output_shown: String,
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = client::load_config(&args.config)?;
    let store_dir = &config.store.path;
    if inside(&args.output, store_dir) {
        anyhow::bail!(
            "{} is inside the store directory {}; a backup must live elsewhere (it is what remains when the store is lost)",
            args.output.display(),
            store_dir.display()
        );
    }
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "{} exists; choose another file, or add --force to replace it",
            args.output.display()
        );
    }
    let request = crate::cli::control::Request::Backup(Request {
        output_shown: args.output.display().to_string(),
        json: args.json,
    });
    let target = OutputTarget::File {
        path: args.output,
        replace: args.force,
    };
    client::run(config, request, None, target, None)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    // The snapshot goes to a private directory next to the store (on the same file system,
    // writable by the store's owner, outside the store directory), then to the command.
    let store_dir = ctx.store.path();
    let beside = match store_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".ttp-agent-backup.")
        .tempdir_in(beside)
        .with_context(|| format!("creating a scratch directory in {}", beside.display()))?;
    let file = scratch.path().join("backup");
    let summary = ctx.store.backup_to(&file)?;
    let mut snapshot = std::fs::File::open(&file)
        .with_context(|| format!("reading the snapshot {}", file.display()))?;
    let total = summary.bytes;
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = std::io::Read::read(&mut snapshot, &mut buf)
            .with_context(|| format!("reading the snapshot {}", file.display()))?;
        if n == 0 {
            break;
        }
        io.output()
            .write_all(&buf[..n])
            .with_context(|| format!("writing {}", req.output_shown))?;
        done += n as u64;
        io.progress("copying the backup", done, total);
    }
    drop(snapshot);
    drop(scratch);
    io.commit_output()?;
    if req.json {
        io.print(&format!("{}\n", serde_json::to_string_pretty(&summary)?));
    } else {
        io.print(&format!(
            "backup written to {}: {} record(s), {} task(s), {} history row(s), {} audit entr(ies); {} bytes, sha256 {}\n",
            req.output_shown,
            summary.records,
            summary.tasks,
            summary.history_rows,
            summary.audit_entries,
            summary.bytes,
            summary.sha256
        ));
        io.print(&format!(
            "IDAT in it is sealed with the key in {}: back that key file up too, but keep its copy apart from the store backups (docs/OPERATIONS.md, \"Backup and restore\")\n",
            ctx.config.store.idat_key_file.display()
        ));
    }
    Ok(0)
}

/// Whether `file` would be written inside `dir` (both made absolute; symlinks resolved where
/// they exist).
fn inside(file: &Path, dir: &Path) -> bool {
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .ok()
            .map(|a| a.canonicalize().unwrap_or(a))
    };
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (absolute(parent), absolute(dir)) {
        (Some(parent), Some(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_inside_the_store_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("blobs")).unwrap();
        assert!(inside(&store.join("backup.bin"), &store));
        assert!(inside(&store.join("blobs/backup.bin"), &store));
        assert!(inside(&store.join("blobs/../x.bin"), &store));
        assert!(!inside(&dir.path().join("backup.bin"), &store));
        assert!(!inside(&dir.path().join("store-backup.bin"), &store));
    }
}
