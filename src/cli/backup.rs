//! `ttp-agent backup --config F OUT`: a consistent, checksummed copy of the store in one file.
//!
//! The file does not depend on redb's on-disk format (see `store::backup`), so it also carries
//! a store across an upgrade. IDAT stays sealed under the IDAT key: a backup is useless without
//! the key file, and as sensitive as the store with it. The store must not be in use: stop the
//! daemon first (its lock would make this command fail with a message saying so).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{ConfigArg, context};

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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    let store_dir = &loaded.config.store.path;
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
    let store = context::open_store(&loaded.config, &loaded.secrets)?;
    let summary = store.backup_to(&args.output)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "backup written to {}: {} record(s), {} task(s), {} history row(s), {} audit entr(ies); {} bytes, sha256 {}",
            args.output.display(),
            summary.records,
            summary.tasks,
            summary.history_rows,
            summary.audit_entries,
            summary.bytes,
            summary.sha256
        );
        println!(
            "IDAT in it is sealed with the key in {}: keep that key file (and only that) with the backup",
            loaded.config.store.idat_key_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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
