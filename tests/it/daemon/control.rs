//! The control channel through the binary: every command that works on the store gives the
//! same results beside a running daemon as with the daemon stopped; a command whose daemon is
//! killed mid-way fails clearly and loses nothing; a user outside the operators group is
//! refused by the socket; a long command shows its progress at the terminal either way;
//! `approve`, `deny` and `withdraw` are audited with the peer's user.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::agent::{records_csv, sim_config};
use crate::support::hermetic;
use crate::support::logs::KeptLog;
use crate::support::robust::{BIN, OwnSim, Reaped, run_bin, text, write_config};
use serde_json::Value;

/// Generous bound for things that take a second or two; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(90);

struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    sim: OwnSim,
}

impl Site {
    fn new(edits: &[(&str, &str)]) -> Site {
        let mut cfg = sim_config(77);
        cfg.clearing = 0.0;
        cfg.repeat_first = 0.0;
        let sim = OwnSim::start(cfg);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &sim.base_url(), edits);
        Site { dir, config, sim }
    }

    fn cfg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("control.sock")
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write file");
        p.to_str().expect("utf-8").to_owned()
    }

    /// `ttp-agent run`, JSON logs into `daemon.log`; returns once the control channel is up.
    fn start_daemon(&self) -> Daemon {
        let log = self.path("daemon.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = hermetic::command(BIN)
            .args(["run", "--config", self.cfg()])
            .env("TTP_AGENT_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the daemon starts");
        let mut d = Daemon {
            child: Reaped(child),
            _kept: KeptLog::copy_of(&log),
            log,
        };
        d.wait_for_log("control channel:");
        d
    }
}

struct Daemon {
    child: Reaped,
    log: PathBuf,
    /// Keeps a copy of the log once the daemon is gone, and prints its tail on failure.
    _kept: KeptLog,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&mut self, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no {needle:?} in the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM and wait for the exit (status 0).
    fn stop(mut self) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let status = self.wait_exit();
        assert!(status.success(), "{status}:\n{}", self.log());
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.wait_exit();
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A run of the binary: exit status, stdout, the `ttp-agent: error:` line (if any).
#[derive(Debug, PartialEq, Eq)]
struct Result3 {
    code: Option<i32>,
    stdout: String,
    error: Option<String>,
}

fn outcome(out: &Output) -> Result3 {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", text(out));
    Result3 {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        error: stderr
            .lines()
            .find(|l| l.starts_with("ttp-agent: error:"))
            .map(str::to_owned),
    }
}

/// A run that failed with exit status 1: its error line.
fn failure(out: &Output) -> String {
    let r = outcome(out);
    assert_eq!(r.code, Some(1), "{}", text(out));
    r.error.expect("an error line")
}

fn cmd(args: &[&str]) -> Result3 {
    outcome(&run_bin(args, &[]))
}

fn ok(args: &[&str]) -> String {
    let r = cmd(args);
    assert_eq!(r.code, Some(0), "{args:?}: {r:?}");
    r.stdout
}

/// `ttp-agent ARGS` in the background, text logs, output captured.
fn spawn_bin(args: &[&str], stdin: Stdio) -> std::process::Child {
    hermetic::command(BIN)
        .args(args)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent runs")
}

/// `resolve add-element` with the value on standard input.
fn add_element(config: &str, local_id: &str, value: &str, replace: bool) -> Result3 {
    let mut args = vec![
        "resolve",
        "add-element",
        "--config",
        config,
        local_id,
        "birthplace",
    ];
    if replace {
        args.push("--replace");
    }
    let mut child = spawn_bin(&args, Stdio::piped());
    use std::io::Write as _;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{value}\n").as_bytes()).unwrap();
    drop(stdin);
    outcome(&child.wait_with_output().expect("finishes"))
}

/// The status report without what changes by itself (times, the daemon's own state).
fn status_json(config: &str) -> Value {
    let mut v: Value =
        serde_json::from_str(&ok(&["status", "--json", "--config", config])).expect("status JSON");
    let o = v.as_object_mut().expect("an object");
    // `last_listing` is the daemon's own start-up poll (which finds nothing to do here).
    for volatile in [
        "generated_at",
        "last_successful_poll",
        "last_listing",
        "daemon",
    ] {
        o.remove(volatile);
    }
    v
}

/// The backup summary without what differs from one backup to the next (its creation time
/// makes the bytes and the checksum differ).
fn backup_summary(out: &str) -> String {
    out.lines()
        .map(|l| l.split("; ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything the six commands show, from one state of the store.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    export_csv: String,
    export_json_file: String,
    status: Value,
    status_text_shown: bool,
    backup: String,
    backup_refused: Result3,
    purge: String,
    submit_again: Result3,
    submit_bad: Result3,
    resolve_unknown: Result3,
    disclosures: String,
    disclosures_verify: String,
    disclosures_other_study: Result3,
}

fn observe(site: &Site, tag: &str) -> Observed {
    let c = site.cfg();
    let export_file = site.path(&format!("export-{tag}.json"));
    let r = cmd(&[
        "export",
        "--config",
        c,
        "--format",
        "json",
        "-o",
        export_file.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "", "the rows went to the file");
    let backup = site.path(&format!("backup-{tag}.bin"));
    let backup_out = ok(&["backup", "--config", c, backup.to_str().unwrap()]);
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup is private");
    let csv = site.write("records.csv", &records_csv(12));
    let bad = site.write("bad.csv", "local_id,given\ncase-1,\u{7}\n");
    Observed {
        export_csv: ok(&["export", "--config", c]),
        export_json_file: std::fs::read_to_string(&export_file).unwrap(),
        status: status_json(c),
        status_text_shown: !ok(&["status", "--config", c]).is_empty(),
        backup: backup_summary(&backup_out).replace(tag, "TAG"),
        backup_refused: cmd(&["backup", "--config", c, backup.to_str().unwrap()]),
        purge: ok(&["purge", "--config", c]),
        submit_again: cmd(&["submit", "--config", c, &csv]),
        submit_bad: cmd(&["submit", "--config", c, &bad]),
        resolve_unknown: cmd(&["resolve", "retry", "--config", c, "no-such-task"]),
        disclosures: ok(&["disclosures", "--config", c, "--format", "json"]),
        disclosures_verify: ok(&["disclosures", "--verify", "--config", c]),
        disclosures_other_study: cmd(&["disclosures", "--config", c, "--study", "other"]),
    }
    .normalised(tag)
}

impl Observed {
    fn normalised(mut self, tag: &str) -> Observed {
        if let Some(e) = &mut self.backup_refused.error {
            *e = e.replace(tag, "TAG");
        }
        self
    }
}

#[test]
fn every_command_gives_the_same_results_beside_the_daemon_and_without_it() {
    let site = Site::new(&[]);
    let c = site.cfg().to_owned();
    // A store with pseudonyms: the simulator answers every filter at once.
    let csv = site.write("records.csv", &records_csv(12));
    let first = ok(&["submit", "--config", &c, &csv]);
    assert!(first.contains("12 stored new"), "{first}");

    let stopped = observe(&site, "stopped");
    assert_eq!(
        stopped.export_csv.lines().count(),
        13,
        "{}",
        stopped.export_csv
    );
    assert!(stopped.submit_again.stdout.contains("12 already stored"));
    assert_eq!(stopped.submit_bad.code, Some(1));
    assert_eq!(stopped.resolve_unknown.code, Some(1));
    assert_eq!(stopped.disclosures, "[]\n", "no send_idat was answered");
    assert_eq!(
        stopped.disclosures_verify,
        "disclosure log: 0 entries, chain intact\n"
    );
    assert_eq!(stopped.disclosures_other_study.code, Some(2));

    let mut daemon = site.start_daemon();
    let beside = observe(&site, "beside");
    assert_eq!(beside, stopped, "the same results beside the daemon");

    // They did run in the daemon: it logged each of them with the connecting user.
    let log = daemon.log();
    for command in [
        "submit",
        "export",
        "resolve",
        "backup",
        "purge",
        "status",
        "disclosures",
    ] {
        assert!(
            log.contains(&format!("\"command\":\"{command}\"")),
            "{command} did not run in the daemon:\n{log}"
        );
    }
    assert!(log.contains("\"peer\":\""), "{log}");

    // New records through the daemon are encoded, stored and registered by it.
    let more = site.write("more.csv", &records_csv(15));
    let out = ok(&["submit", "--config", &c, &more]);
    assert!(
        out.contains("15 records read; 3 stored new, 12 already stored"),
        "{out}"
    );
    assert!(out.contains("registration: 3 sent"), "{out}");

    // `export --new` moves its mark only through a completed hand-over, whoever runs it.
    let new = ok(&["export", "--new", "--config", &c]);
    assert_eq!(new.lines().count(), 16, "{new}");
    let again = ok(&["export", "--new", "--config", &c]);
    assert_eq!(again.lines().count(), 1, "only the header: {again}");

    // A manual action is audited with the user the kernel reports.
    let added = add_element(&c, "case-00001", "Anklam", true);
    assert_eq!(added.code, Some(0), "{added:?}");
    assert!(added.stdout.contains("case-00001"), "{added:?}");
    // Named from the connection's credentials (root's name here: the tests run as root or
    // as the user the daemon runs as).
    let audit = status_json(&c)["recent_audit"].to_string();
    assert!(audit.contains("case-00001"), "{audit}");
    assert!(
        log_actor(&daemon.log()).is_some_and(|a| audit.contains(&format!("\"{a}\""))),
        "the audit names the peer the daemon logged: {audit}"
    );
    let twice_beside = add_element(&c, "case-00001", "Wolgast", false);
    daemon.wait_for_log("\"command\":\"resolve\"");
    daemon.stop();
    let twice_stopped = add_element(&c, "case-00001", "Wolgast", false);
    assert_eq!(twice_beside.code, Some(1));
    assert_eq!(twice_beside, twice_stopped, "the same refusal either way");

    let after = ok(&["export", "--new", "--config", &c]);
    assert_eq!(after.lines().count(), 1, "the mark stayed: {after}");
    assert!(
        !site.socket().exists(),
        "a stopped daemon removes its socket"
    );
}

#[test]
fn a_command_whose_daemon_is_killed_mid_way_fails_clearly_and_loses_nothing() {
    // Registration at two requests per second keeps the daemon busy for many seconds.
    let site = Site::new(&[
        ("[submit]\nbatch_size = 50", "[submit]\nbatch_size = 10"),
        ("[ttp]\n", "[ttp]\nrate_limit_per_second = 2.0\n"),
    ]);
    let c = site.cfg().to_owned();
    let csv = site.write("records.csv", &records_csv(200));
    let daemon = site.start_daemon();
    let submit = spawn_bin(&["submit", "--config", &c, &csv], Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(submit.wait_with_output());
    });
    // Killed once the daemon is registering this file's records.
    let mut daemon = daemon;
    // The daemon shows the progress of both long steps in its log (and to the command).
    daemon.wait_for_log("\"what\":\"encoding\"");
    daemon.wait_for_log("\"what\":\"registering\"");
    wait_until(
        || site.sim.stats().registrations > 0,
        "a registration request",
    );
    daemon.kill();

    let out = rx
        .recv_timeout(PATIENCE)
        .expect("submit ends after the kill")
        .expect("its output");
    let line = failure(&out);
    assert!(
        line.contains("ended the connection before `submit` finished")
            && line.contains("run the command again"),
        "{line}"
    );

    // Nothing lost: the same file again (no daemon now) finishes the job.
    let again = ok(&["submit", "--config", &c, &csv]);
    assert!(again.contains("200 records read"), "{again}");
    let status = status_json(&c);
    assert_eq!(status["records"]["total"], 200, "{status}");
    assert_eq!(status["records"]["pending_registration"], 0, "{status}");
    let export = ok(&["export", "--config", &c]);
    assert_eq!(
        export.lines().count(),
        201,
        "every record has its pseudonym"
    );
}

/// The `actor` of the daemon's last `resolve` command, as its log names it.
fn log_actor(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["fields"]["command"] == "resolve" || e["command"] == "resolve")
        .filter_map(|e| {
            e["fields"]["actor"]
                .as_str()
                .or_else(|| e["actor"].as_str())
                .map(str::to_owned)
        })
        .next()
}

fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < PATIENCE, "no {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `ttp-agent ARGS` as `uid`/`gid` (no supplementary groups); needs root.
fn run_as(uid: u32, gid: u32, args: &[&str]) -> Output {
    hermetic::command(BIN)
        .args(args)
        .env("TTP_AGENT_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .env_remove("SUDO_USER")
        .stdin(Stdio::null())
        .gid(gid)
        .uid(uid)
        .output()
        .expect("runs")
}

fn readable_by_all(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_user_outside_the_operators_group_is_refused_by_the_socket() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: switching users needs root (the checks are unit-tested in control::access)"
        );
        return;
    }
    const OPERATORS: u32 = 4242;
    const NOBODY: u32 = 65534;
    let site = Site::new(&[("[control]\n", "[control]\ngroup = \"4242\"\n")]);
    let c = site.cfg().to_owned();
    // The configuration is readable by every user (as /etc/ttp-agent/agent.toml is); the
    // secrets and the store are not.
    readable_by_all(site.dir.path(), 0o755);
    readable_by_all(&site.config, 0o644);
    let daemon = site.start_daemon();

    let meta = std::fs::metadata(site.socket()).expect("the socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), OPERATORS);

    // Outside the group: the kernel refuses the connection.
    let out = run_as(NOBODY, NOBODY, &["status", "--config", &c]);
    let line = failure(&out);
    assert!(
        line.contains("permission denied on the control socket")
            && line.contains("operators group"),
        "{line}"
    );

    // In the group: served by the daemon, without access to any secret or the store.
    let out = run_as(NOBODY, OPERATORS, &["status", "--json", "--config", &c]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(report.get("daemon").is_some(), "answered by the daemon");

    // A coordinator's account in the group submits and exports: it reads only the CSV it
    // streams; the daemon reads the secrets (a 0700 directory this account cannot enter),
    // encodes and stores.
    let secrets = std::fs::metadata(site.path("secrets")).expect("the secrets directory");
    assert_eq!(
        secrets.permissions().mode() & 0o077,
        0,
        "secrets are private"
    );
    let csv = site.write("operator.csv", &records_csv(3));
    readable_by_all(Path::new(&csv), 0o644);
    let out = run_as(NOBODY, OPERATORS, &["submit", "--config", &c, &csv]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 stored new"),
        "{}",
        text(&out)
    );
    let out = run_as(NOBODY, OPERATORS, &["export", "--config", &c]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        4,
        "the header and the three records: {}",
        text(&out)
    );

    // A socket an administrator opened up by mistake: the daemon's own check refuses.
    readable_by_all(&site.socket(), 0o666);
    let out = run_as(NOBODY, NOBODY, &["status", "--config", &c]);
    let line = failure(&out);
    assert!(
        line.contains("refuses") && line.contains("uid 65534") && line.contains("4242"),
        "{line}"
    );
    let mut daemon = daemon;
    daemon.wait_for_log("refused a user outside the operators group");
    daemon.stop();
}

#[test]
fn a_backup_taken_beside_a_working_daemon_restores_to_a_consistent_store() {
    // Registration at two requests per second keeps the daemon writing for many seconds.
    let site = Site::new(&[
        ("[submit]\nbatch_size = 50", "[submit]\nbatch_size = 10"),
        ("[ttp]\n", "[ttp]\nrate_limit_per_second = 2.0\n"),
    ]);
    let c = site.cfg().to_owned();
    let csv = site.write("records.csv", &records_csv(200));
    let mut daemon = site.start_daemon();
    let submit = spawn_bin(&["submit", "--config", &c, &csv], Stdio::null());
    daemon.wait_for_log("\"what\":\"registering\"");
    wait_until(
        || site.sim.stats().registrations > 0,
        "a registration request",
    );

    // Taken while the daemon stores the answers of the batches it registers.
    let backup = site.path("during.bak");
    let out = ok(&["backup", "--config", &c, backup.to_str().unwrap()]);
    assert!(out.contains("200 record"), "every stored record: {out}");
    let submitted = outcome(&submit.wait_with_output().expect("submit finishes"));
    assert_eq!(submitted.code, Some(0), "{submitted:?}");
    daemon.wait_for_log("\"command\":\"backup\"");
    daemon.stop();

    let restored = ok(&[
        "restore",
        "--force",
        "--config",
        &c,
        backup.to_str().unwrap(),
    ]);
    assert!(restored.contains("restored 200 record(s)"), "{restored}");
    let status = status_json(&c);
    let records = &status["records"];
    assert_eq!(records["total"], 200, "{status}");
    // One moment: every pseudonym of a record (counted from the records at restore) has its
    // entry in the pseudonym log (what `export` reads), and no log entry lacks its record.
    let pseudonymised = records["pseudonymised"].as_u64().expect("a count");
    let export = ok(&["export", "--config", &c]);
    assert_eq!(
        export.lines().count() as u64,
        1 + pseudonymised,
        "{status}\n{export}"
    );
    let sum: u64 = [
        "pending_registration",
        "awaiting_clearing",
        "pseudonymised",
        "rejected",
    ]
    .iter()
    .map(|k| records[k].as_u64().expect("a count"))
    .sum();
    assert_eq!(sum, 200, "{status}");
    // The restored store carries on: the next submit of the same file registers the rest.
    let again = ok(&["submit", "--config", &c, &csv]);
    assert!(again.contains("200 already stored"), "{again}");
    let export = ok(&["export", "--config", &c]);
    assert_eq!(
        export.lines().count(),
        201,
        "every record has its pseudonym"
    );
}

#[test]
fn after_a_run_neither_the_store_nor_a_backup_shows_a_registered_filter_or_a_name() {
    let site = Site::new(&[]);
    let c = site.cfg().to_owned();
    let text = records_csv(30);
    let csv = site.write("records.csv", &text);
    let first = ok(&["submit", "--config", &c, &csv]);
    assert!(first.contains("30 stored new"), "{first}");
    let daemon = site.start_daemon();
    let backup = site.path("after-run.bak");
    ok(&["backup", "--config", &c, backup.to_str().unwrap()]);
    daemon.stop();

    // The filters the agent registered, as it unseals them itself.
    let config =
        ttp_agent::config::AgentConfig::from_file_and_env(Some(&site.config), std::iter::empty())
            .expect("configuration");
    let secrets = config.load_secrets().expect("secrets");
    let opts = ttp_agent::cli::context::store_options(&config, &secrets).expect("store options");
    let store = ttp_agent::store::Store::open(&opts).expect("store");
    let filters: Vec<Vec<u8>> = store
        .records_in_states(|_| true)
        .expect("records")
        .into_iter()
        .map(|r| r.head.bloom_filter)
        .collect();
    drop(store);
    assert_eq!(filters.len(), 30);
    assert!(site.sim.stats().registrations > 0, "registered");
    // The names, family names and places of the CSV (the short ones could occur by chance).
    let mut names: Vec<String> = text
        .lines()
        .skip(1)
        .flat_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            [f[1], f[2], f[5]].map(str::to_owned)
        })
        .filter(|n| n.len() >= 6)
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");

    let mut files = support::store::files_under(&opts.path);
    assert!(files.iter().any(|f| f.ends_with("store.redb")), "{files:?}");
    files.push(backup);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    support::store::assert_no_filter_or_name(&files, &filters, &names);
}

/// A pseudo-terminal: what a command shows a person at a terminal, read back by the test.
struct Pty {
    /// The terminal's side of the process under test (its standard error).
    slave: std::os::fd::OwnedFd,
    master: std::fs::File,
}

impl Pty {
    fn open() -> Pty {
        use std::os::fd::FromRawFd as _;
        let (mut master, mut slave) = (-1, -1);
        // 100 columns: wide enough that a progress bar is drawn with its message.
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two new file descriptors into the two integers; the name and
        // terminal attributes are not asked for (null), the window size is read only.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
        unsafe {
            Pty {
                slave: std::os::fd::OwnedFd::from_raw_fd(slave),
                master: std::fs::File::from_raw_fd(master),
            }
        }
    }

    /// Runs `ttp-agent ARGS` with its standard error on the terminal; returns its exit code,
    /// its standard output and everything it showed on the terminal.
    fn run(self, args: &[&str]) -> (Option<i32>, String, String) {
        let Pty { slave, mut master } = self;
        let child = hermetic::command(BIN)
            .args(args)
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .env("TERM", "xterm")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("the agent runs");
        // The command holds the only other copy of the terminal's side now: reading the
        // master ends (EIO on Linux) once it exits.
        let reader = std::thread::spawn(move || {
            use std::io::Read as _;
            let mut shown = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => shown.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&shown).into_owned()
        });
        let out = child.wait_with_output().expect("its output");
        let shown = reader.join().expect("the terminal reader");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            shown,
        )
    }
}

/// The progress bars a command showed: each step's message with its total, as drawn.
fn bars_shown(terminal: &str, steps: &[&str], total: usize) -> Vec<String> {
    steps
        .iter()
        .filter(|step| {
            terminal
                .lines()
                .flat_map(|l| l.split('\r'))
                .any(|l| l.contains(*step) && l.contains(&format!("/{total}")))
        })
        .map(|s| (*s).to_owned())
        .collect()
}

#[test]
fn a_long_command_shows_its_progress_at_the_terminal_beside_the_daemon_and_without_it() {
    // Bars are drawn from 1,000 units on; fewer would stay hidden.
    const N: usize = 1_200;
    let steps = ["encoding", "registering"];
    let site = Site::new(&[]);
    let c = site.cfg().to_owned();
    let all = records_csv(2 * N);
    let mut lines = all.lines();
    let header = lines.next().expect("header").to_owned();
    let body: Vec<&str> = lines.collect();
    let part = |rows: &[&str]| format!("{header}\n{}\n", rows.join("\n"));
    let beside_csv = site.write("beside.csv", &part(&body[..N]));
    let alone_csv = site.write("alone.csv", &part(&body[N..]));

    // Beside the daemon: the daemon works, the command draws the daemon's progress messages.
    let daemon = site.start_daemon();
    let (code, out, shown) = Pty::open().run(&["submit", "--config", &c, &beside_csv]);
    assert_eq!(code, Some(0), "{out}\n{shown}");
    assert!(out.contains(&format!("{N} records read")), "{out}");
    assert_eq!(
        bars_shown(&shown, &steps, N),
        steps,
        "beside the daemon, the terminal showed: {shown:?}"
    );
    daemon.stop();

    // Daemon stopped: the same steps run in the command, with the same bars.
    let (code, out, shown) = Pty::open().run(&["submit", "--config", &c, &alone_csv]);
    assert_eq!(code, Some(0), "{out}\n{shown}");
    assert!(out.contains(&format!("{N} records read")), "{out}");
    assert_eq!(
        bars_shown(&shown, &steps, N),
        steps,
        "without the daemon, the terminal showed: {shown:?}"
    );
}

/// `approve`, `deny` and `withdraw` beside the running daemon (issue 15, items 2 and 3): they
/// act through the control channel, the daemon sends the approved release and nothing else,
/// and the audit trail names the user the kernel reports for the connection, not the
/// `$USER` the command claims.
#[test]
fn approve_deny_and_withdraw_beside_the_daemon_are_recorded_with_the_peers_user() {
    let mut edits = crate::support::robust::fast_schedule();
    edits.push((
        "idat_release = \"automatic\"\n",
        "idat_release = \"approval\"\n",
    ));
    let site = Site::new(&edits);
    let c = site.cfg().to_owned();
    let csv = site.write("records.csv", &records_csv(3));
    ok(&["submit", "--config", &c, &csv]);
    let filters: Vec<String> = {
        let loaded = crate::support::agent::load(&site.config);
        let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets)
            .expect("store opens");
        let mut recs = store.records_in_states(|_| true).expect("records");
        recs.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
        recs.iter()
            .map(|r| ttp_proto::BloomFilter(r.head.bloom_filter.clone()).to_base64())
            .collect()
    };
    let later = site.sim.now() + chrono::Duration::hours(2);
    let approved = site.sim.add_send_idat_for(&filters[0], &["given"], later);
    let denied = site.sim.add_send_idat_for(&filters[1], &["family"], later);
    let d = site.start_daemon();
    let awaiting = || -> Vec<String> {
        status_json(&c)["awaiting_approval"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| l["key"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until(|| awaiting().len() == 2, "two tasks awaiting approval");
    assert_eq!(
        site.sim.stats().provide_ok,
        0,
        "nothing sent before approval"
    );
    let keys = awaiting();
    let key_of = |task_id: &str| {
        keys.iter()
            .find(|k| k.ends_with(task_id))
            .unwrap_or_else(|| panic!("{task_id} in {keys:?}"))
            .clone()
    };
    let impostor = [("USER", "impostor"), ("LOGNAME", "impostor")];
    let out = run_bin(&["approve", "--config", &c, &key_of(&approved)], &impostor);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_bin(
        &[
            "deny",
            "--config",
            &c,
            &key_of(&denied),
            "--reason",
            "no consent on file",
        ],
        &impostor,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_bin(&["withdraw", "--config", &c, "case-00002"], &impostor);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        || site.sim.stats().provide_ok == 1,
        "the approved answer sent",
    );
    d.stop();
    assert_eq!(site.sim.stats().provide_ok, 1);
    let received: Vec<String> = site.sim.received_task_ids();
    assert_eq!(received, std::slice::from_ref(&approved));

    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id runs")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_owned();
    assert_ne!(me, "impostor");
    let loaded = crate::support::agent::load(&site.config);
    let store =
        ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).expect("store opens");
    let trail = store.audit().expect("audit");
    for action in ["approve", "deny", "withdraw"] {
        let entry = trail
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} entry: {trail:?}"));
        assert_eq!(entry.actor, me, "{action}: the peer's user, not $USER");
    }
    assert!(store.get_record("case-00002").expect("get").is_none());
}
