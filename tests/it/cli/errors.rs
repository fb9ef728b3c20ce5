//! Errors as an operator meets them: through the binary.
//!
//! Configuration errors, for every command that reads the configuration, must end with exit
//! status 78 (`EX_CONFIG`, which systemd and supervisors can tell from a crash) and exactly one
//! line on stderr that names the problem -- nothing on stdout, no panic, no log noise before
//! it. A key the fTTP refuses is a runtime error (exit 1) that names the settings to check.

use std::path::Path;

use crate::support;
use crate::support::robust::{run_bin, text, write_config};

/// One broken configuration: what to do to a working one, and words the line must contain.
struct Case {
    what: &'static str,
    break_it: fn(&Path, &Path),
    expect: &'static [&'static str],
}

fn edit(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} not in the starter config");
    std::fs::write(config, text.replacen(from, to, 1)).unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "invalid TOML",
            break_it: |c, _| edit(c, "[schedule]\n", "[schedule\n"),
            expect: &["agent.toml", "line"],
        },
        Case {
            what: "unknown key",
            break_it: |c, _| edit(c, "batch_size = 50", "batch_sise = 50"),
            expect: &["unknown key", "batch_sise", "batch_size"],
        },
        Case {
            what: "missing required key",
            break_it: |c, _| edit(c, "study = \"test-study\"\n", ""),
            expect: &["study", "TTP_AGENT__TTP__STUDY"],
        },
        Case {
            what: "missing secret file",
            break_it: |c, _| edit(c, "secrets/api-key", "secrets/no-such-key"),
            expect: &["no-such-key"],
        },
        Case {
            what: "unreadable secret file",
            // A directory where the key file should be: unreadable even for root.
            break_it: |c, dir| {
                std::fs::create_dir(dir.join("secrets/key-dir")).unwrap();
                edit(c, "secrets/api-key", "secrets/key-dir")
            },
            expect: &["key-dir"],
        },
        Case {
            what: "bad cron expression",
            break_it: |c, _| edit(c, "cron = \"0 */15 * * * *\"", "cron = \"*/15 * * * *\""),
            expect: &["cron", "*/15 * * * *"],
        },
        Case {
            what: "bad time zone",
            break_it: |c, _| {
                edit(
                    c,
                    "timezone = \"Europe/Berlin\"",
                    "timezone = \"Europe/Greifswald\"",
                )
            },
            expect: &["Europe/Greifswald"],
        },
        Case {
            what: "wrongly typed value",
            break_it: |c, _| edit(c, "concurrency = 8", "concurrency = \"eight\""),
            expect: &["concurrency"],
        },
    ]
}

#[test]
fn every_configuration_error_exits_78_with_one_line_for_every_command() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
            &[],
        );
        (case.break_it)(&config, dir.path());
        let records = dir.path().join("records.csv");
        std::fs::write(&records, support::agent::records_csv(2)).unwrap();
        let config = config.to_str().unwrap();
        let records = records.to_str().unwrap();
        let commands: [&[&str]; 4] = [
            &["run", "--config", config],
            &["poll", "--once", "--config", config],
            &["submit", "--config", config, records],
            &["status", "--config", config],
        ];
        let mut first_line = None;
        for args in commands {
            let out = run_bin(args, &[]);
            let all = text(&out);
            let what = format!("{} / {}", case.what, args[0]);
            assert_eq!(out.status.code(), Some(78), "{what}: {all}");
            assert!(out.stdout.is_empty(), "{what}: {all}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{what}: one line: {all}");
            let line = lines[0];
            assert!(line.starts_with("ttp-agent: error: "), "{what}: {line}");
            for word in case.expect {
                assert!(line.contains(word), "{what}: {word:?} missing: {line}");
            }
            // The same problem reads the same whichever command met it.
            assert_eq!(*first_line.get_or_insert(line.to_string()), line, "{what}");
        }
    }
}

#[test]
fn a_missing_configuration_file_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let out = run_bin(&["status", "--config", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nowhere.toml"), "{stderr}");
}

#[test]
fn a_secret_in_an_error_is_never_echoed() {
    // The API key file holds two lines: not a usable key. The message must not quote it.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
        &[],
    );
    std::fs::write(
        dir.path().join("secrets/api-key"),
        "s3cr3t-first\ns3cr3t-second\n",
    )
    .unwrap();
    let out = run_bin(&["status", "--config", config.to_str().unwrap()], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(78), "{all}");
    assert!(all.contains("api_key_file"), "{all}");
    assert!(!all.contains("s3cr3t"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_names_the_settings_to_check() {
    let mut cfg = support::agent::sim_config(1);
    cfg.auth = ttp_sim::SimAuth::api_key_header("the-key-the-fttp-expects");
    let sim = ttp_sim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim.base_url(), &[]);
    let config = config.to_str().unwrap().to_string();
    let out =
        tokio::task::spawn_blocking(move || run_bin(&["poll", "--once", "--config", &config], &[]))
            .await
            .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ttp-agent: error:"))
        .unwrap_or_else(|| panic!("no error line: {all}"));
    assert!(
        line.contains("401") && line.contains("api_key_file"),
        "{line}"
    );
    assert!(!all.contains(support::agent::API_KEY), "{all}");
    assert_eq!(
        sim.stats().auth_failures,
        1,
        "an auth failure is not retried"
    );
    sim.shutdown().await;
}
