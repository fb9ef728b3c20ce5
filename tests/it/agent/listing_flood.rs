//! The review's finding, reproduced against the real binary: one `$requestTasks` answer of
//! ~15 MB with 95,000 tasks of unknown types took 1.66 GB of memory and grew the store by
//! 161 MB. Now the agent keeps a sample and a count, answers every known task of the same
//! listing, and stays far inside the unit's MemoryMax=1G (figures: BENCHMARKS.md §7).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::agent::*;
use crate::support::logs::KeptLog;
use serde_json::json;
use ttp_agent::domain::TaskState;

/// Bytes of every file under `dir`.
fn tree_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => tree_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `ttp-agent poll --once` to its end; its exit status and peak resident memory
/// (bytes). The peak is the child's own `VmHWM` (its address space's high-water mark since
/// exec), read every 20 ms while it runs. Not `wait4`'s `ru_maxrss`: that counts from the
/// spawn, when the child still shares this (large) test process's memory.
fn poll_once_measured(config: &Path, log: &Path) -> (i32, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ttp-agent"))
        .args(["poll", "--once", "--config"])
        .arg(config)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let code = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(exit) = child.try_wait().unwrap() {
            break exit.code().unwrap_or(-1);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (code, peak_kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_flooded_with_unknown_tasks_costs_bounded_memory_and_disk() {
    const RECORDS: usize = 5;
    const FLOOD: usize = 95_000;
    let mut cfg = sim_config(62);
    cfg.clearing = 1.0;
    cfg.repeat_first = 0.0;
    let env = setup(cfg, &[]).await;
    drop(submit_records(&env, RECORDS).await);
    assert_eq!(
        env.sim.open_tasks().len(),
        RECORDS,
        "one send_idat per record"
    );
    for i in 0..FLOOD {
        env.sim
            .inject_task(json!({"name": format!("future_task_{}", i % 3), "part": [
            {"name": "n", "valueString": format!("{i:08}")},
            {"name": "payload", "valueString": "x".repeat(48)}]}));
    }
    let store_dir = env.dir.path().join("store");
    let before = tree_size(&store_dir);

    let config = env.config_path.clone();
    let log = env.dir.path().join("poll.log");
    let _log = KeptLog::copy_of(&log);
    let log_path = log.clone();
    let (code, peak_rss) =
        tokio::task::spawn_blocking(move || poll_once_measured(&config, &log_path))
            .await
            .unwrap();
    assert_eq!(
        code,
        0,
        "the cycle succeeds: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let grown = tree_size(&store_dir).saturating_sub(before);
    eprintln!(
        "hostile listing: peak RSS {} MiB, store growth {} KiB",
        peak_rss >> 20,
        grown >> 10
    );
    assert!(peak_rss < 160 << 20, "peak RSS {peak_rss} bytes");
    assert!(grown < 16 << 20, "the store grew by {grown} bytes");

    // Every known task was answered.
    let loaded = load(&env.config_path);
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    let send_idat: Vec<TaskState> = store
        .tasks()
        .unwrap()
        .into_iter()
        .filter(|t| t.key.0.starts_with("send_idat/"))
        .map(|t| t.state)
        .collect();
    assert_eq!(send_idat.len(), RECORDS);
    assert!(
        send_idat
            .iter()
            .all(|s| matches!(s, TaskState::Done { .. })),
        "{send_idat:?}"
    );
    // The unknown ones: a sample and one summary, all needing attention.
    let attention = store
        .tasks()
        .unwrap()
        .into_iter()
        .filter(|t| matches!(t.state, TaskState::NeedsAttention { .. }))
        .count();
    assert_eq!(attention, 20 + 1);
    env.sim.shutdown().await;
}
