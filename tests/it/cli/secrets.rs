//! No secret and no identifying data in any output or in clear in the store.
//!
//! A full scenario through the binary with every crate's debug logging on (`RUST_LOG=debug`):
//! submit, polls that answer `send_idat` tasks with IDAT, the daemon, status, export, backup,
//! purge, and the error paths a site meets with real data (a bad value, a file without a
//! header line). Everything the processes print is captured, every file under the store
//! directory is read as raw bytes, and neither may contain:
//!
//! * a secret: the API key, the Basic password (also as the `Authorization` header value),
//!   the IDAT key (as in its file, and as raw bytes), the encoding seeds;
//! * an IDAT value of the synthetic records: names, birth dates, birthplaces -- as given and
//!   as normalised for encoding (upper case).
//!
//! The records are synthetic and use made-up names that cannot occur anywhere by chance.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::agent::*;
use crate::support::hermetic;
use crate::support::logs::KeptLog;
use crate::support::robust::{BIN, text};
use base64::Engine as _;

const BASIC_USER: &str = "site-agent-user";
const BASIC_PASSWORD: &str = "basic-pw-Xq7Vb2Lm9Rt4";

/// Synthetic people whose every value is unmistakable.
fn people(n: usize) -> Vec<[String; 6]> {
    const GIVEN: [&str; 5] = [
        "Quirinaxel",
        "Zephyrine",
        "Balthasarix",
        "Ottiliana",
        "Wendelgard",
    ];
    const FAMILY: [&str; 5] = [
        "Xylandermeyer",
        "Quappenbrink",
        "Zwirblhuber",
        "Ysselkotter",
        "Vogtsmaack",
    ];
    const PLACES: [&str; 3] = ["Quastenhagen", "Zirbelsee", "Xantenried"];
    (0..n)
        .map(|i| {
            [
                format!("secret-case-{i:03}"),
                GIVEN[i % GIVEN.len()].to_string(),
                FAMILY[(i / 2) % FAMILY.len()].to_string(),
                format!("19{:02}-{:02}-{:02}", 31 + i % 60, 1 + i % 12, 1 + i % 28),
                if i % 2 == 0 { "female" } else { "male" }.to_string(),
                PLACES[i % PLACES.len()].to_string(),
            ]
        })
        .collect()
}

fn csv_of(people: &[[String; 6]]) -> String {
    let mut out = String::from("local_id,given,family,birthdate,gender,birthplace\n");
    for p in people {
        out.push_str(&p.join(","));
        out.push('\n');
    }
    out
}

/// Every string that must never appear: (what it is, the text).
fn forbidden(dir: &Path, people: &[[String; 6]]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    out.push(("API key".into(), API_KEY.into()));
    out.push(("Basic password".into(), BASIC_PASSWORD.into()));
    out.push((
        "Basic Authorization header".into(),
        b64.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}")).into(),
    ));
    let idat_key = std::fs::read_to_string(dir.join("secrets/idat.key")).unwrap();
    let idat_key = idat_key.trim();
    out.push(("IDAT key (hex)".into(), idat_key.into()));
    out.push(("IDAT key (raw)".into(), hex::decode(idat_key).unwrap()));
    let seeds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("secrets/encoding-seeds.json")).unwrap(),
    )
    .unwrap();
    let mut numbers = vec![seeds["balanced_seed"].as_i64().unwrap()];
    numbers.extend(
        seeds["field_seeds"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap()),
    );
    for n in numbers {
        out.push(("encoding seed".into(), n.to_string().into()));
        out.push(("encoding seed (LE bytes)".into(), n.to_le_bytes().to_vec()));
    }
    for p in people {
        for (what, value) in [
            ("given", &p[1]),
            ("family", &p[2]),
            ("birthdate", &p[3]),
            ("birthplace", &p[5]),
        ] {
            out.push((format!("IDAT {what}"), value.clone().into_bytes()));
            out.push((
                format!("IDAT {what} (normalised)"),
                value.to_uppercase().into_bytes(),
            ));
        }
        // The date as the encoder normalises it (YYYYMMDD).
        out.push((
            "IDAT birthdate (compact)".into(),
            p[3].replace('-', "").into_bytes(),
        ));
    }
    out.sort();
    out.dedup();
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

struct Captured {
    outputs: Vec<(String, Vec<u8>)>,
}

impl Captured {
    fn run(&mut self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = hermetic::command(BIN);
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the agent runs");
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        self.outputs.push((args.join(" "), all));
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_and_no_idat_in_any_output_or_in_clear_in_the_store() {
    let mut cfg = sim_config(404);
    cfg.clearing = 0.6;
    cfg.auth = ttp_sim::SimAuth::AnyOf(vec![
        ttp_sim::SimAuth::api_key_header(API_KEY),
        ttp_sim::SimAuth::Basic {
            user: BASIC_USER.into(),
            password: BASIC_PASSWORD.into(),
        },
    ]);
    let env = setup(
        cfg,
        &[
            (
                "[ttp]\n",
                "[ttp]\nbasic_user = \"site-agent-user\"\nbasic_password_file = \"secrets/basic-password\"\ntimeout = \"2s\"\n",
            ),
            ("cron = \"0 */15 * * * *\"", "cron = \"* * * * * *\""),
            ("jitter = \"60s\"", "jitter = \"0s\""),
        ],
    )
    .await;
    let dir = env.dir.path().to_path_buf();
    std::fs::write(
        dir.join("secrets/basic-password"),
        format!("{BASIC_PASSWORD}\n"),
    )
    .unwrap();
    let people = people(24);
    let records = dir.join("records.csv");
    std::fs::write(&records, csv_of(&people)).unwrap();
    let config = env.config_path.to_str().unwrap().to_string();

    let mut cap = Captured {
        outputs: Vec::new(),
    };
    let sim_done = {
        let sim = &env.sim;
        move || {
            let s = sim.stats();
            sim.open_tasks().is_empty() && s.clearings_finished == s.clearings_started
        }
    };
    let records_s = records.to_str().unwrap().to_string();
    let out =
        tokio::task::block_in_place(|| cap.run(&["submit", "--config", &config, &records_s], &[]));
    assert!(out.status.success(), "{}", text(&out));
    for _ in 0..10 {
        if sim_done() {
            break;
        }
        let out =
            tokio::task::block_in_place(|| cap.run(&["poll", "--once", "--config", &config], &[]));
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(sim_done(), "{:?}", env.sim.stats());
    assert!(
        env.sim.stats().provide_ok > 5,
        "IDAT was sent: the scenario is real"
    );
    assert_eq!(env.sim.stats().auth_failures, 0);

    // The daemon, for a few cycles (one more send_idat so it has IDAT to send).
    let rec0 = {
        let loaded = load(&env.config_path);
        let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
        let r = store.get_record("secret-case-000").unwrap().unwrap();
        ttp_proto::BloomFilter(r.head.bloom_filter).to_base64()
    };
    env.sim.add_send_idat_for(
        &rec0,
        &["given", "family", "birthdate", "birthplace"],
        env.sim.now() + chrono::Duration::days(2),
    );
    let provided = env.sim.stats().provide_ok;
    let daemon_log = dir.join("daemon.log");
    let _log = KeptLog::copy_of(&daemon_log);
    let mut daemon = support::robust::Reaped(
        hermetic::command(BIN)
            .args(["run", "--config", &config])
            .env("RUST_LOG", "debug")
            .env("TTP_AGENT_LOG_FORMAT", "text")
            .stdout(std::fs::File::create(dir.join("daemon.out")).unwrap())
            .stderr(std::fs::File::create(&daemon_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while env.sim.stats().provide_ok == provided {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon answered nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    assert!(daemon.wait().unwrap().success());
    let mut daemon_output = std::fs::read(&daemon_log).unwrap();
    daemon_output.extend(std::fs::read(dir.join("daemon.out")).unwrap());
    assert!(find(&daemon_output, b"DEBUG"), "debug logging was on");
    cap.outputs.push(("run".into(), daemon_output));

    // What coordinators and operators run.
    let backup = dir.join("store.bak");
    let export_file = dir.join("pseudonyms.json");
    tokio::task::block_in_place(|| {
        for args in [
            vec!["status", "--config", &config],
            vec!["status", "--config", &config, "--json"],
            vec!["export", "--config", &config],
            vec![
                "export",
                "--config",
                &config,
                "--format",
                "json",
                "--output",
                export_file.to_str().unwrap(),
            ],
            vec!["backup", "--config", &config, backup.to_str().unwrap()],
            vec!["purge", "--config", &config],
        ] {
            let out = cap.run(&args, &[]);
            assert!(out.status.success(), "{args:?}: {}", text(&out));
        }
        // Error paths with real data in the input: a bad value, and a file whose header line
        // is missing (its first record becomes the "header").
        let bad_value = dir.join("bad-value.csv");
        let mut text_bad = csv_of(&people[..3]);
        text_bad.push_str("secret-case-999,Quirinaxel,Xylandermeyer,19.07.1931,female,Zirbelsee\n");
        std::fs::write(&bad_value, text_bad).unwrap();
        // Exported with the name first (`given,family,local_id,...`), without the header line.
        let no_header = dir.join("no-header.csv");
        let rows: String = people[..3]
            .iter()
            .map(|p| format!("{},{},{},{},{},{}\n", p[1], p[2], p[0], p[3], p[4], p[5]))
            .collect();
        std::fs::write(&no_header, rows).unwrap();
        for file in [&bad_value, &no_header] {
            let out = cap.run(
                &["submit", "--config", &config, file.to_str().unwrap()],
                &[],
            );
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        }
    });

    let forbidden = forbidden(&dir, &people);
    assert!(forbidden.len() > 40);
    let mut leaks = Vec::new();
    for (command, output) in &cap.outputs {
        for (what, needle) in &forbidden {
            if find(output, needle) {
                leaks.push(format!("`{command}` printed the {what}"));
            }
        }
    }
    // The store directory the agent created keeps other users out.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("store"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "store directory mode {mode:o}");
    let store_files = files_under(&dir.join("store"));
    assert!(store_files.len() >= 3, "{store_files:?}");
    let mut scanned = 0usize;
    for file in store_files.iter().chain([&backup, &export_file]) {
        let bytes = std::fs::read(file).unwrap();
        scanned += bytes.len();
        for (what, needle) in &forbidden {
            if find(&bytes, needle) {
                leaks.push(format!("{} holds the {what} in clear", file.display()));
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    println!(
        "secrets: {} outputs ({} bytes) and {} store files ({scanned} bytes) checked for {} forbidden strings",
        cap.outputs.len(),
        cap.outputs.iter().map(|(_, o)| o.len()).sum::<usize>(),
        store_files.len(),
        forbidden.len()
    );
    env.sim.shutdown().await;
}
