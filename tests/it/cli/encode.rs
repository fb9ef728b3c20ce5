//! `ttp-agent encode` through the binary: the exact interface issue 2 specifies.

use std::path::{Path, PathBuf};

use crate::support::hermetic;

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
    let out = hermetic::command(BIN)
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
        let out = hermetic::command(BIN)
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
        hermetic::command(BIN)
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
    let out = hermetic::command(BIN)
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
    let out = hermetic::command(BIN)
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

/// Line numbers are the file's lines whatever the line ends, also in a one-column file whose
/// first data row is empty (with CRLF it used to be reported as line 1).
#[test]
fn line_numbers_are_file_lines_in_a_one_column_crlf_file() {
    let v = shared().join("clkhash");
    let dir = tempfile::tempdir().unwrap();
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v.join("schema-blake.json")).unwrap())
            .unwrap();
    let features = schema["features"].as_array().unwrap().clone();
    schema["features"] = serde_json::Value::Array(
        features
            .into_iter()
            .filter(|f| f["identifier"] == "birth_date")
            .collect(),
    );
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let mut errors = Vec::new();
    for end in ["\n", "\r\n"] {
        let input = dir.path().join("in.csv");
        std::fs::write(
            &input,
            ["birth_date", "", "1985-03-14", "02.11.1972", ""].join(end),
        )
        .unwrap();
        let out = hermetic::command(BIN)
            .args(["encode", "--clk-schema"])
            .arg(&schema_path)
            .arg("--secret-file")
            .arg(v.join("secret.txt"))
            .arg(&input)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{end:?}: {err}");
        // The empty row (line 2) or the bad date (line 4), never the header's line.
        assert!(
            err.contains("line 2") || err.contains("line 4"),
            "{end:?}: {err}"
        );
        assert!(
            !err.contains("line 1,") && !err.contains("line 1:"),
            "{end:?}: {err}"
        );
        errors.push(err.into_owned());
    }
    assert_eq!(errors[0], errors[1], "the line ends change nothing");
}

/// A German Excel export: `;`-separated, Windows-1252; read with a note saying so, or as
/// named with --delimiter and --encoding.
#[test]
fn a_semicolon_separated_windows_1252_file_is_read() {
    let v = shared().join("clkhash");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        b"given_name;family_name;birth_date;sex\r\nANNA;M\xdcLLER;1985-03-14;F\r\n",
    )
    .unwrap();
    let utf8 = dir.path().join("utf8.csv");
    std::fs::write(
        &utf8,
        "given_name,family_name,birth_date,sex\nANNA,MÜLLER,1985-03-14,F\n",
    )
    .unwrap();
    let run = |file: &Path, extra: &[&str]| {
        hermetic::command(BIN)
            .args(["encode", "--clk-schema"])
            .arg(v.join("schema-blake.json"))
            .arg("--secret-file")
            .arg(v.join("secret.txt"))
            .args(extra)
            .arg(file)
            .output()
            .unwrap()
    };
    let expected = run(&utf8, &[]);
    assert!(expected.status.success());
    let detected = run(&input, &[]);
    let err = String::from_utf8_lossy(&detected.stderr);
    assert!(detected.status.success(), "{err}");
    assert!(err.contains("Windows-1252") && err.contains("`;`"), "{err}");
    assert_eq!(clks(&detected.stdout), clks(&expected.stdout));
    let named = run(&input, &["--delimiter", ";", "--encoding", "windows-1252"]);
    assert!(named.status.success());
    assert!(String::from_utf8_lossy(&named.stderr).is_empty());
    assert_eq!(clks(&named.stdout), clks(&expected.stdout));
}
