//! Logs of the processes a test starts, kept after the test, and printed when it fails.
//!
//! A daemon's log used to live in the test's temporary directory and went with it, failure or
//! not: `soak::agent::crash` once failed with "the final daemon died" and nobody could tell
//! why. A [`KeptLog`] lives under `target/tmp/test-logs/<binary>/<test>/` (cargo's
//! `CARGO_TARGET_TMPDIR`), one directory per test, emptied when the test opens its first log,
//! so after a run it holds the last run's logs. When a test panics, every `KeptLog` it holds
//! prints the tail of its file as the panic unwinds.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Lines of a log printed when its test fails.
const TAIL_LINES: usize = 60;

/// The directory for the logs of the running test: named after the test's thread, which the
/// test harness names after the test (`store::cli::backup_then_restore` →
/// `store/cli/backup_then_restore`).
pub fn test_dir() -> PathBuf {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.split('-').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "tests".into());
    let mut dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("test-logs")
        .join(binary);
    for part in name.split("::") {
        dir.push(part);
    }
    dir
}

/// The test directories emptied by this process: a test's first log empties its directory
/// (what an earlier run left), its later logs do not.
static PREPARED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn prepared(dir: &Path) -> PathBuf {
    let mut seen = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.insert(dir.to_path_buf()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(dir).expect("test log directory");
    dir.to_path_buf()
}

/// The running test's log directory, emptied of what an earlier run left.
pub fn kept_dir() -> PathBuf {
    prepared(&test_dir())
}

/// A log file of the running test, kept after it; its tail is printed if the test fails
/// while this value is alive.
pub struct KeptLog {
    path: PathBuf,
    /// Where a log written elsewhere (a test's temporary directory) is copied when dropped.
    copy_to: Option<PathBuf>,
}

impl KeptLog {
    /// `name` (e.g. `daemon.log`) in the running test's log directory; not created yet.
    pub fn new(name: &str) -> KeptLog {
        KeptLog {
            path: kept_dir().join(name),
            copy_to: None,
        }
    }

    /// A log the test writes at `path` (where the test needs it): copied into the test's log
    /// directory when this value is dropped, so declare it after the temporary directory
    /// that holds `path` (it is dropped first).
    pub fn copy_of(path: impl Into<PathBuf>) -> KeptLog {
        let path = path.into();
        let name = path.file_name().expect("a log file name").to_owned();
        KeptLog {
            copy_to: Some(kept_dir().join(name)),
            path,
        }
    }

    /// Creates (or empties) the file, for a child's stderr.
    pub fn create(&self) -> File {
        File::create(&self.path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log so far (empty if there is none yet).
    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// The last `lines` lines, with where the whole log is.
    pub fn tail(&self, lines: usize) -> String {
        tail_of(&self.path, lines)
    }
}

impl Drop for KeptLog {
    fn drop(&mut self) {
        // (Never onto itself: the copy would truncate the file it reads.)
        if let Some(to) = self.copy_to.as_ref().filter(|to| **to != self.path) {
            let _ = std::fs::copy(&self.path, to);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.tail(TAIL_LINES));
        }
    }
}

/// The last `lines` lines of the file at `path`, headed by its path.
pub fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    format!(
        "--- last {} of {} lines of {}\n{}\n--- end of {}",
        all.len() - from,
        all.len(),
        path.display(),
        all[from..].join("\n"),
        path.display()
    )
}
