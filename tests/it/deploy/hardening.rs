//! Process hardening that lives outside the code: the systemd unit's limits.

const UNIT: &str = include_str!("../../../systemd/ttp-agent.service");

/// The value of the last `KEY=` line of the unit's `[Service]` section (later lines win, as
/// in systemd).
fn service_setting(key: &str) -> Option<&'static str> {
    let service = UNIT.split("[Service]").nth(1)?.split("\n[").next()?;
    service
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_unit_forbids_core_dumps() {
    // A core would hold the IDAT key, the API key and decrypted IDAT.
    assert_eq!(service_setting("LimitCORE"), Some("0"));
}

#[test]
fn ci_checks_the_dependencies_against_the_offline_advisory_database() {
    let ci = include_str!("../../../.ci/run");
    let audit_step = ci
        .lines()
        .position(|l| l.trim() == "scripts/audit.sh")
        .expect(".ci/run runs scripts/audit.sh");
    let tests_step = ci
        .lines()
        .position(|l| l.trim() == "scripts/test.sh")
        .expect(".ci/run runs the tests");
    assert!(audit_step < tests_step, "the audit fails fast");
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/audit.sh"),
    )
    .expect("scripts/audit.sh exists");
    for needed in [
        "../shared/advisory-db",
        "SNAPSHOT",
        "cargo audit --db \"$db\" --no-fetch",
        "cargo install cargo-audit --locked",
    ] {
        assert!(script.contains(needed), "scripts/audit.sh lacks {needed:?}");
    }
    // A vulnerability fails the run: no --ignore, and errors are not swallowed.
    assert!(!script.contains("--ignore") && script.contains("set -euo pipefail"));
}

/// The agent makes itself non-dumpable first thing, whatever the command: no core dump of its
/// memory (IDAT key, API key, decrypted IDAT), and no same-user ptrace or /proc/PID/mem. The
/// kernel shows it: the /proc/PID files of a non-dumpable process belong to root. So the agent
/// runs as an unprivileged user (when the test is root, as in CI) and is held at start-up
/// by a profile file that is a FIFO nobody writes to yet.
#[test]
fn the_running_process_is_not_dumpable() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = dir.path().join("profile.json");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0);
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ttp-agent"));
    cmd.arg("encode")
        .arg("--fttp-profile")
        .arg(&fifo)
        .arg(dir.path().join("records.csv"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().unwrap();
    let proc_dir = format!("/proc/{}", child.id());

    // Wait (generously) until it blocks opening the FIFO: past start-up.
    let mut blocked = false;
    for _ in 0..600 {
        let wchan = std::fs::read_to_string(format!("{proc_dir}/wchan")).unwrap_or_default();
        if wchan.contains("wait_for_partner") || wchan.contains("fifo") {
            blocked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let owner = std::fs::metadata(format!("{proc_dir}/status")).map(|m| m.uid());
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap_or_default();
    // Let it go: open the FIFO for writing and close it (an empty profile ends the command).
    drop(std::fs::OpenOptions::new().write(true).open(&fifo));
    let _ = child.wait();

    assert!(blocked, "the agent never reached the profile: {status}");
    let runs_as_root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        !runs_as_root,
        "the check needs an unprivileged agent: {status}"
    );
    assert_eq!(
        owner.unwrap(),
        0,
        "the agent's /proc files belong to its user: it is dumpable"
    );
}
