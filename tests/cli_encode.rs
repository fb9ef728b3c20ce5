//! `ttp-agent encode` through the binary: the exact interface issue 2 specifies.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors")
}

fn vector() -> serde_json::Value {
    let text = std::fs::read_to_string(shared().join("mainzelliste-fttp/vector-1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn clks(stdout: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("stdout is JSON");
    v["clks"]
        .as_array()
        .expect("a clks array")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_fttp_vector_through_a_profile_file() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, vector()["config"].to_string()).unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "firstName,lastName,birthDate,gender\nHERR,MUSTERMANN,19200101,m\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["encode", "--fttp-profile"])
        .arg(&profile)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        clks(&out.stdout),
        [vector()["expected_base64"].as_str().unwrap()]
    );
}

#[test]
fn the_clkhash_vectors_through_the_cli() {
    let v = shared().join("clkhash");
    for variant in ["blake", "doublehash"] {
        let out = Command::new(BIN)
            .args(["encode", "--clk-schema"])
            .arg(v.join(format!("schema-{variant}.json")))
            .arg("--secret-file")
            .arg(v.join("secret.txt"))
            .arg(v.join("records.csv"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(v.join(format!("clks-{variant}.json"))).unwrap(),
        )
        .unwrap();
        let expected: Vec<String> = expected["clks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(clks(&out.stdout), expected, "{variant}");
    }
}

#[test]
fn a_bad_row_names_line_and_field_and_writes_nothing() {
    let v = shared().join("clkhash");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "given_name,family_name,birth_date,sex\nANNA,MÜLLER,1985-03-14,F\nJÜRGEN,SCHMIDT,02.11.1972,M\nANA,MUELLER,1985-03-14,F\n",
    )
    .unwrap();
    let output = dir.path().join("out.json");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["encode", "--clk-schema"])
            .arg(v.join("schema-blake.json"))
            .arg("--secret-file")
            .arg(v.join("secret.txt"))
            .arg("--output")
            .arg(&output)
            .args(extra)
            .arg(&input)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("birth_date"),
        "{err}"
    );
    assert!(
        !err.contains("02.11.1972") && !err.contains("JÜRGEN"),
        "no IDAT in errors: {err}"
    );
    assert!(!output.exists(), "nothing is written");

    let out = run(&["--skip-invalid"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("skipped 1"), "{err}");
    assert_eq!(clks(&std::fs::read(&output).unwrap()).len(), 2);
}

#[test]
fn a_header_that_does_not_match_the_schema_is_refused() {
    let v = shared().join("clkhash");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "given_name,family_name,dob,sex\nA,B,1985-03-14,F\n").unwrap();
    let out = Command::new(BIN)
        .args(["encode", "--clk-schema"])
        .arg(v.join("schema-blake.json"))
        .arg("--secret-file")
        .arg(v.join("secret.txt"))
        .arg(&input)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("`birth_date`"),
        "{err}"
    );
}

#[test]
fn a_schema_clkhash_would_misread_is_a_configuration_error() {
    let v = shared().join("clkhash");
    let dir = tempfile::tempdir().unwrap();
    let schema = std::fs::read_to_string(v.join("schema-blake.json"))
        .unwrap()
        .replace("\"xor_folds\"", "\"xorFolds\"");
    let path = dir.path().join("schema.json");
    std::fs::write(&path, schema).unwrap();
    let out = Command::new(BIN)
        .args(["encode", "--clk-schema"])
        .arg(&path)
        .arg("--secret-file")
        .arg(v.join("secret.txt"))
        .arg(v.join("records.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("xorFolds") && err.contains("xor_folds"),
        "{err}"
    );
}
