//! Storage faults through the binary: a store that cannot be written, a full disk, a damaged
//! store. Each must end in a clear error and a non-zero exit -- the daemon included, which
//! stops rather than carry on without a store -- and never in silent loss: once the cause is
//! gone, the same commands finish the job with nothing missing.
//!
//! A real full disk and a real read-only file system need a small tmpfs, which only root can
//! mount (and a sandbox may forbid even that). Without it the tests fall back: a full disk is
//! simulated with a file-size limit (`RLIMIT_FSIZE`, the kernel then fails writes with `EFBIG`),
//! a read-only store with permissions (which bind everyone but root). What each run used is
//! printed.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::agent::*;
use crate::support::hermetic;
use crate::support::logs::KeptLog;
use crate::support::robust::{BIN, fast_schedule, run_bin, text};

/// A small tmpfs mounted on a fresh directory (root only), unmounted on drop.
struct TinyFs {
    dir: PathBuf,
}

impl TinyFs {
    /// `None` unless root and `mount` works; `TTP_TEST_NO_MOUNT=1` forces the fallbacks.
    fn mount(dir: &Path, size: &str) -> Option<TinyFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || std::env::var_os("TTP_TEST_NO_MOUNT").is_some() {
            return None;
        }
        std::fs::create_dir_all(dir).ok()?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| TinyFs {
            dir: dir.to_path_buf(),
        })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Runs the binary with writes limited to files of `limit` bytes (`SIGXFSZ` ignored, so the
/// write fails with `EFBIG` instead of killing the process).
fn run_limited(args: &[&str], env: &[(&str, &str)], limit: u64) -> Output {
    let mut cmd = hermetic::command(BIN);
    cmd.args(args)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd.output().expect("the agent binary runs")
}

fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", text(out));
    stderr
        .lines()
        .find(|l| l.starts_with("ttp-agent: error:"))
        .unwrap_or_else(|| panic!("no error line: {}", text(out)))
        .to_string()
}

fn records_in(config: &str, env: &[(&str, &str)]) -> u64 {
    let out = run_bin(&["status", "--config", config, "--json"], env);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["records"]["total"].as_u64().unwrap()
}

#[test]
fn a_store_path_that_cannot_be_a_directory_is_reported_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::robust::write_config(
        dir.path(),
        "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
        &[],
    );
    let config = config.to_str().unwrap();
    let records = dir.path().join("records.csv");
    std::fs::write(&records, records_csv(3)).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a store").unwrap();
    for (what, store) in [
        ("a file", file.clone()),
        ("below a file", file.join("store")),
    ] {
        let env = [("TTP_AGENT__STORE__PATH", store.to_str().unwrap())];
        for args in [
            vec!["status", "--config", config],
            vec!["submit", "--config", config, records.to_str().unwrap()],
            vec!["poll", "--once", "--config", config],
            vec!["run", "--config", config],
            vec!["backup", "--config", config, "/nonexistent-dir/x.bak"],
        ] {
            let out = run_bin(&args, &env);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what} {args:?}: {}",
                text(&out)
            );
            let line = error_line(&out);
            assert!(
                line.contains("cannot create or write the store")
                    && line.contains(store.to_str().unwrap())
                    && line.contains("writable"),
                "{what} {args:?}: {line}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a store");
}

#[test]
fn a_read_only_store_is_reported_and_intact_once_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::robust::write_config(
        dir.path(),
        "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
        &[],
    );
    let config = config.to_str().unwrap();
    let records = dir.path().join("records.csv");
    std::fs::write(&records, records_csv(40)).unwrap();
    let mnt = dir.path().join("mnt");
    let tmpfs = TinyFs::mount(&mnt, "16m");
    let store = match &tmpfs {
        Some(_) => mnt.join("store"),
        None => dir.path().join("store"),
    };
    let env = [("TTP_AGENT__STORE__PATH", store.to_str().unwrap())];
    // Records are stored even though the fTTP is unreachable (exit 1: registration pending).
    let out = run_bin(
        &["submit", "--config", config, records.to_str().unwrap()],
        &env,
    );
    assert!(text(&out).contains("40 stored new"), "{}", text(&out));

    let how = if let Some(fs) = &tmpfs {
        fs.remount("ro");
        "read-only tmpfs"
    } else if unsafe { libc::geteuid() } != 0 {
        set_writable(&store, false);
        "permissions"
    } else {
        eprintln!("read-only store: skipped (root without mount: nothing is read-only for root)");
        return;
    };
    for args in [
        vec!["status", "--config", config],
        vec!["submit", "--config", config, records.to_str().unwrap()],
        vec!["run", "--config", config],
    ] {
        let out = run_bin(&args, &env);
        assert_eq!(out.status.code(), Some(1), "{how} {args:?}: {}", text(&out));
        let line = error_line(&out);
        assert!(
            line.contains("cannot create or write the store") && line.contains("writable"),
            "{how} {args:?}: {line}"
        );
    }
    match &tmpfs {
        Some(fs) => fs.remount("rw"),
        None => set_writable(&store, true),
    }
    assert_eq!(records_in(config, &env), 40, "{how}: nothing lost");
    eprintln!("read-only store: tested with {how}");
}

fn set_writable(dir: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let mode = if writable { 0o600 } else { 0o400 };
        if entry.path().is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let mode = if writable { 0o700 } else { 0o500 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Fills the file system holding `dir` (a tmpfs) up to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5Au8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    // Smaller writes for the last pages.
    while f.write(&chunk[..512]).is_ok_and(|n| n > 0) {}
    filler
}

/// The daemon and `submit` on a full disk: both stop with a clear error and a non-zero exit;
/// after space is freed, a restarted daemon finishes every record and task with nothing lost
/// or done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_with_a_clear_error_and_loses_nothing() {
    let mut cfg = sim_config(77);
    cfg.clearing = 0.5;
    let edits = fast_schedule();
    let env = setup(cfg, &edits).await;
    let config = env.config_path.to_str().unwrap().to_string();
    let records = env.dir.path().join("records.csv");
    std::fs::write(&records, records_csv(60)).unwrap();
    let records = records.to_str().unwrap().to_string();
    let mnt = env.dir.path().join("mnt");
    let tmpfs = TinyFs::mount(&mnt, "8m");
    let store = match &tmpfs {
        Some(_) => mnt.join("store"),
        None => env.dir.path().join("store"),
    };
    let store_s = store.to_str().unwrap().to_string();

    let have_tmpfs = tmpfs.is_some();
    let sim = &env.sim;
    let how = tokio::task::block_in_place({
        let config = config.clone();
        let records = records.clone();
        let store_s = store_s.clone();
        let mnt = mnt.clone();
        let log = env.dir.path().join("interrupted.log");
        let _log = KeptLog::copy_of(&log);
        move || {
            let store_env = [("TTP_AGENT__STORE__PATH", store_s.as_str())];
            let submit = ["submit", "--config", config.as_str(), records.as_str()];
            let run = ["run", "--config", config.as_str()];
            // The records are stored and registered (the simulator answers) before any fault.
            let out = run_bin(&submit, &store_env);
            assert!(out.status.success(), "{}", text(&out));
            let (how, submit_out, run_out) = if have_tmpfs {
                let filler = fill(&mnt);
                // New records, more than the free pages inside the database file hold: the
                // submit must grow the file (records already stored need no space at all).
                let more = mnt.parent().unwrap().join("more-records.csv");
                std::fs::write(&more, records_csv(3000)).unwrap();
                let more_submit = [
                    "submit",
                    "--config",
                    config.as_str(),
                    more.to_str().unwrap(),
                ];
                let submit_out = run_bin(&more_submit, &store_env);
                std::fs::remove_file(filler).unwrap();
                // A daemon at work when the disk fills up stops by itself.
                let mut daemon = support::robust::Reaped(
                    hermetic::command(BIN)
                        .args(run)
                        .env("TTP_AGENT_LOG_FORMAT", "text")
                        .env("TTP_AGENT__STORE__PATH", &store_s)
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(&log).unwrap())
                        .spawn()
                        .unwrap(),
                );
                let started = Instant::now();
                while !std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("poll cycle finished")
                {
                    assert!(started.elapsed() < Duration::from_secs(30), "no cycle");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let filler = fill(&mnt);
                // New work the daemon must store: far more than fits in the free pages the
                // database file has left, so the next cycle needs space on the full disk.
                for i in 0..400 {
                    sim.inject_task(serde_json::json!({
                        "name": "future_task",
                        "part": [{"name": "note", "valueString": format!("{i} {}", "x".repeat(1000))}]
                    }));
                }
                let status = loop {
                    if let Some(status) = daemon.try_wait().unwrap() {
                        break status;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the daemon kept running on a full disk"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                };
                std::fs::remove_file(filler).unwrap();
                sim.clear_injected();
                let run_out = Output {
                    status,
                    stdout: Vec::new(),
                    stderr: std::fs::read(&log).unwrap(),
                };
                ("a full tmpfs (ENOSPC)", submit_out, run_out)
            } else {
                // Every store file is already larger than this: any write beyond fails.
                let submit_out = run_limited(&submit, &store_env, 4096);
                let run_out = run_limited(&run, &store_env, 4096);
                ("a file-size limit (EFBIG)", submit_out, run_out)
            };
            for (what, out) in [("submit", &submit_out), ("run", &run_out)] {
                assert_eq!(out.status.code(), Some(1), "{how}: {what}: {}", text(out));
                let line = error_line(out);
                assert!(
                    line.contains(&store_s)
                        && (line.contains("is full") || line.contains("too large")),
                    "{how}: {what}: {line}"
                );
            }
            how
        }
    });

    // Space is back: a daemon finishes the job.
    let log = env.dir.path().join("final.log");
    let _log = KeptLog::copy_of(&log);
    let mut daemon = support::robust::Reaped(
        hermetic::command(BIN)
            .args(["run", "--config", &config])
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .env("TTP_AGENT__STORE__PATH", &store_s)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        let stats = env.sim.stats();
        if env.sim.open_tasks().is_empty()
            && stats.clearings_finished == stats.clearings_started
            && stats.registrations == 60
        {
            break;
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon died: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{stats:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    assert!(daemon.wait().unwrap().success());

    let stats = env.sim.stats();
    assert_eq!(stats.duplicate_provides, 0, "{stats:?}");
    assert_eq!(stats.provide_violations_total, 0);
    assert!(stats.tasks_expired_by_type.values().all(|&n| n == 0));
    let out = run_bin(
        &["export", "--config", &config],
        &[("TTP_AGENT__STORE__PATH", &store_s)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        61,
        "every record has its pseudonym"
    );
    eprintln!("full disk: tested with {how}");
    drop(tmpfs);
    env.sim.shutdown().await;
}
