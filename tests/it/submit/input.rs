//! `submit` reads a site's export as it comes: the whole file is checked first, every bad row
//! is reported (line, column, what is wrong, never the value) and nothing is stored; with
//! `--skip-invalid` the good rows are stored and the bad rows' lines go to a reject file;
//! `;`-separated Windows-1252 files with German dates are read (with a note); `[input]` maps a
//! site's own codes.

use std::path::Path;
use std::process::Output;

use crate::support::agent::*;
use crate::support::hermetic;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

async fn submit(config: &Path, args: &[&str]) -> Output {
    hermetic::command_async(BIN)
        .args(["submit", "--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .await
        .expect("the agent runs")
}

fn stored(config: &Path) -> u64 {
    let loaded = load(config);
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    store.record_counts().unwrap().total
}

const FILE_WITH_BAD_ROWS: &str = "local_id,given,family,birthdate,gender\n\
    r1,Anna,Muster,1980-01-02,female\n\
    r2,Bea,Muster,1980-13-02,female\n\
    r3,Carl,Muster,1980-01-04,male\n\
    r4,Dora,Muster,1980-01-05,zz\n\
    ,Emil,Muster,1980-01-06,male\n\
    r6,Fritz,Muster\n\
    r7,Gustav,Muster,1980-01-08,male\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_row_is_reported_at_once_and_nothing_is_stored() {
    let env = setup(sim_config(21), &[]).await;
    let file = env.dir.path().join("records.csv");
    std::fs::write(&file, FILE_WITH_BAD_ROWS).unwrap();
    let out = submit(&env.config_path, &[file.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (line, column) in [
        ("line 3", Some("`birthdate`")),
        ("line 5", Some("`gender`")),
        ("line 6", Some("`local_id`")),
        ("line 7", None),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("records.csv: {line}"))
                    && column.is_none_or(|c| l.contains(c))),
            "{line} {column:?}: {err}"
        );
    }
    assert!(
        err.contains("4 invalid row(s)") && err.contains("nothing was stored"),
        "{err}"
    );
    assert!(err.contains("--skip-invalid"), "{err}");
    for value in ["1980-13-02", "zz", "Emil", "Fritz"] {
        assert!(
            !err.contains(value),
            "a value in the messages: {value}: {err}"
        );
    }
    assert_eq!(stored(&env.config_path), 0);
    assert_eq!(env.sim.stats().registrations, 0);

    // --skip-invalid: the three good rows are stored, the bad rows' lines are in the rejects.
    let rejects = env.dir.path().join("rejects.csv");
    let out = submit(
        &env.config_path,
        &[
            "--skip-invalid",
            "--rejects",
            rejects.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(stored(&env.config_path), 3);
    let listed = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = listed
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(lines, ["3", "5", "6", "7"], "{listed}");
    for value in ["1980-13-02", "zz", "Emil", "Fritz"] {
        assert!(
            !listed.contains(value),
            "a value in the reject file: {listed}"
        );
    }
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_excel_export_is_read_and_a_sites_codes_are_mapped() {
    let env = setup(sim_config(22), &[]).await;
    // The site's system writes German dates and 1/2 for the gender; [input] says what they
    // mean.
    let mut config = std::fs::read_to_string(&env.config_path).unwrap();
    config.push_str(
        "\n[input]\ndate_formats = [\"DD.MM.YYYY\"]\n[input.gender]\n\"1\" = \"male\"\n\"2\" = \"female\"\n",
    );
    std::fs::write(&env.config_path, config).unwrap();
    let file = env.dir.path().join("export.csv");
    std::fs::write(
        &file,
        b"local_id;given;family;birthdate;gender\r\nr1;J\xfcrgen;M\xfcller;02.01.1980;1\r\nr2;Anna;Stra\xdfer;14.03.1985;2\r\n",
    )
    .unwrap();
    let out = submit(&env.config_path, &[file.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Windows-1252"), "{err}");
    assert!(err.contains("`;`"), "{err}");
    assert_eq!(stored(&env.config_path), 2);

    // The same people written as UTF-8 with ISO dates and FHIR codes give the same filters:
    // submitting them again stores nothing new.
    let same = env.dir.path().join("same.csv");
    std::fs::write(
        &same,
        "local_id,given,family,birthdate,gender\nr1,Jürgen,Müller,1980-01-02,male\nr2,Anna,Straßer,1985-03-14,female\n",
    )
    .unwrap();
    let out = submit(&env.config_path, &["--json", same.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stored"]["unchanged"], 2, "{v}");
    env.sim.shutdown().await;
}
