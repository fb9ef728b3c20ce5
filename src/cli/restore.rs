//! `ttp-agent restore --config F IN [--force]`: put a backup back as the store.
//!
//! The backup is checked completely (authentication, schema, IDAT key) in a staging directory before
//! it becomes the store (`Store::restore_from`). What is at the store path already is never
//! deleted and never restored over:
//!
//! * a store a running agent holds (its lock is taken) is refused, with or without `--force`;
//! * an empty store (no records, no tasks) is replaced without asking;
//! * a store with data, or one that cannot be opened (the usual reason to restore: it is
//!   corrupt), is replaced only with `--force`.
//!
//! Replaced stores are moved aside to `<store>.replaced-<UTC time>` and named in the output. If
//! the restore fails, the previous store is moved back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::store::{LockState, Store, StoreOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The backup file (written by `ttp-agent backup`).
    input: PathBuf,
    /// Replace a store that holds data or cannot be opened (it is moved aside, not deleted).
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    super::owner::refuse_foreign_store(&loaded.config.store.path)?;
    let opts = context::store_options(&loaded.config, &loaded.secrets)?;
    let target = opts.path.clone();
    if !args.input.is_file() {
        anyhow::bail!(
            "backup file {} does not exist or is not a file",
            args.input.display()
        );
    }

    let aside = if holds_data(&target)? {
        refuse_if_in_use(&target)?;
        if !args.force {
            check_replaceable(&opts)?;
        }
        Some(move_aside(&target)?)
    } else {
        None
    };

    let summary = match Store::restore_from(&args.input, &opts) {
        Ok(summary) => summary,
        Err(e) => {
            let mut err = anyhow::Error::new(e);
            if let Some(aside) = &aside {
                err = match put_back(aside, &target) {
                    Ok(()) => err.context(format!(
                        "restoring {} failed; the previous store is back in place",
                        args.input.display()
                    )),
                    Err(back) => err.context(format!(
                        "restoring {} failed, and the previous store could not be moved back from {} ({back:#}): move it back by hand",
                        args.input.display(),
                        aside.display()
                    )),
                };
            }
            return Err(err);
        }
    };

    if args.json {
        let out = serde_json::json!({ "restored": summary, "previous_store_moved_to": aside });
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        crate::outln!(
            "restored {} record(s), {} task(s), {} history row(s), {} audit entr(ies) from {} (made {}) into {}",
            summary.records,
            summary.tasks,
            summary.history_rows,
            summary.audit_entries,
            args.input.display(),
            summary.created_at.to_rfc3339(),
            target.display()
        );
        if let Some(aside) = &aside {
            crate::outln!(
                "the previous store was moved to {}; delete it once the restored store has proved good",
                aside.display()
            );
        }
        crate::outln!(
            "tasks the fTTP still lists are picked up again at the next poll; answers sent after the backup was made are not repeated for tasks the fTTP no longer lists"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` exists and is anything but an empty directory.
fn holds_data(path: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading the store directory {}", path.display())),
    }
}

/// A running agent holds an exclusive `flock` on the store's lock file; taking it for a moment
/// tells whether one does, without opening the store.
fn refuse_if_in_use(target: &Path) -> anyhow::Result<()> {
    match crate::store::probe_lock(target) {
        LockState::Free | LockState::NoDatabase => Ok(()),
        LockState::Held => anyhow::bail!(
            "the store at {} is in use by a running ttp-agent (its lock is held); stop the daemon before restoring (--force does not override this)",
            target.display()
        ),
        LockState::Unknown(err) => Err(err).with_context(|| {
            format!(
                "checking the lock on {}",
                target.join(crate::store::LOCK_FILE).display()
            )
        }),
    }
}

/// Without `--force`, only an empty store may be replaced.
fn check_replaceable(opts: &StoreOptions) -> anyhow::Result<()> {
    let path = opts.path.display();
    let store = Store::open(opts).map_err(|e| {
        anyhow::anyhow!(
            "the existing store at {path} cannot be opened ({e}); to replace it with the backup, run again with --force (it is moved aside, not deleted)"
        )
    })?;
    let records = store.record_counts()?.total;
    let tasks = store.tasks()?.len();
    if records > 0 || tasks > 0 {
        anyhow::bail!(
            "the store at {path} holds {records} record(s) and {tasks} task(s); restoring replaces it: run again with --force (it is moved aside, not deleted)"
        );
    }
    Ok(())
}

fn move_aside(target: &Path) -> anyhow::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = target.as_os_str().to_owned();
    name.push(format!(".replaced-{stamp}"));
    let aside = PathBuf::from(name);
    if aside.exists() {
        anyhow::bail!(
            "{} exists already (a restore in the same second?); try again in a moment",
            aside.display()
        );
    }
    std::fs::rename(target, &aside).with_context(|| {
        format!(
            "moving the existing store {} aside to {}",
            target.display(),
            aside.display()
        )
    })?;
    Ok(aside)
}

fn put_back(aside: &Path, target: &Path) -> anyhow::Result<()> {
    if holds_data(target)? {
        anyhow::bail!("{} is not empty", target.display());
    }
    if target.exists() {
        std::fs::remove_dir(target)?;
    }
    std::fs::rename(aside, target)?;
    Ok(())
}
