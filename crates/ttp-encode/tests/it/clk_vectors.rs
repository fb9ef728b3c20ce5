//! The clkhash 0.18.3 test vectors in `shared/vectors/clkhash/`: every CLK bit for bit, and
//! every stage (keys, rendered value, tokens, k, positions) against clkhash's traces.

use std::path::{Path, PathBuf};

use serde_json::Value;
use ttp_encode::Secret;
use ttp_encode::clk::{ClkEncoder, ClkSchema, to_base64};

/// `shared/` lives next to the checkout (`<dir>/<checkout>/crates/ttp-encode` and
/// `<dir>/shared`); walking up also finds it from a worktree nested deeper.
fn vectors_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/vectors/clkhash"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "clkhash vectors not found: expected shared/vectors/clkhash beside an ancestor \
                 of {}",
                manifest.display()
            )
        })
}

fn read(name: &str) -> String {
    let path = vectors_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// records.csv has no quoting (checked), so splitting on commas is exact.
fn records() -> (Vec<String>, Vec<Vec<String>>) {
    let text = read("records.csv");
    assert!(
        !text.contains('"'),
        "records.csv unexpectedly uses CSV quoting"
    );
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>());
    let header = lines.next().expect("records.csv has a header");
    (header, lines.collect())
}

fn encoder(variant: &str) -> ClkEncoder {
    let schema = ClkSchema::from_json(&read(&format!("schema-{variant}.json")))
        .unwrap_or_else(|e| panic!("schema-{variant}.json: {e}"));
    ClkEncoder::new(&schema, &Secret::new(read("secret.txt").into_bytes()))
}

fn check_clks(variant: &str) {
    let encoder = encoder(variant);
    let (header, rows) = records();
    assert_eq!(encoder.schema().feature_names(), header);
    let expected = json(&format!("clks-{variant}.json"));
    let expected = expected["clks"].as_array().expect("clks array");
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.len(), 4);
    for (i, (row, want)) in rows.iter().zip(expected).enumerate() {
        let values: Vec<&str> = row.iter().map(String::as_str).collect();
        let clk = encoder
            .encode(&values)
            .unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(clk.len(), 128, "1024 bits");
        assert_eq!(
            Some(to_base64(&clk).as_str()),
            want.as_str(),
            "{variant} record {i}"
        );
    }
}

fn check_traces(variant: &str) {
    let encoder = encoder(variant);
    let trace = json(&format!("trace-{variant}.json"));
    assert_eq!(trace["clkhash_version"], "0.18.3");
    let header = encoder.schema().feature_names();
    let records = trace["records"].as_array().expect("records array");
    assert_eq!(records.len(), 4);
    for (r, record) in records.iter().enumerate() {
        let values: Vec<&str> = header
            .iter()
            .map(|name| record["record"][name].as_str().expect("record value"))
            .collect();
        let got = encoder.encode_traced(&values).expect("encodes");
        let fields = record["fields"].as_array().expect("fields array");
        assert_eq!(got.fields.len(), fields.len());
        for (f, (mine, theirs)) in got.fields.iter().zip(fields).enumerate() {
            let at = format!("{variant} record {r} field {f}");
            assert_eq!(mine.feature, theirs["field"], "{at}");
            assert_eq!(hex(mine.key0.expose()), theirs["key0_hex"], "{at} key0");
            assert_eq!(hex(mine.key1.expose()), theirs["key1_hex"], "{at} key1");
            assert_eq!(
                mine.formatted.as_deref(),
                theirs["formatted"].as_str(),
                "{at}"
            );
            let tokens = theirs["tokens"].as_array().expect("tokens array");
            assert_eq!(mine.tokens.len(), tokens.len(), "{at} token count");
            for (t, (mine, theirs)) in mine.tokens.iter().zip(tokens).enumerate() {
                assert_eq!(mine.token, theirs["token"], "{at} token {t}");
                assert_eq!(u64::from(mine.k), theirs["k"], "{at} token {t} k");
                let positions: Vec<u64> = theirs["indices"]
                    .as_array()
                    .expect("indices array")
                    .iter()
                    .map(|v| v.as_u64().expect("index"))
                    .collect();
                let mine: Vec<u64> = mine.positions.iter().map(|&p| p as u64).collect();
                assert_eq!(mine, positions, "{at} token {t} positions");
            }
        }
        let popcount: u32 = got.clk.iter().map(|b| b.count_ones()).sum();
        assert_eq!(
            u64::from(popcount),
            record["popcount"],
            "{variant} record {r}"
        );
        assert_eq!(hex(&got.clk), record["clk_hex"], "{variant} record {r}");
        assert_eq!(
            to_base64(&got.clk),
            record["clk_base64"],
            "{variant} record {r}"
        );
    }
}

#[test]
fn doublehash_clks_match_clkhash() {
    check_clks("doublehash");
}

#[test]
fn blake_clks_match_clkhash() {
    check_clks("blake");
}

#[test]
fn doublehash_stages_match_clkhash_trace() {
    check_traces("doublehash");
}

#[test]
fn blake_stages_match_clkhash_trace() {
    check_traces("blake");
}

#[test]
fn traced_and_plain_encoding_agree() {
    let (_, rows) = records();
    for variant in ["doublehash", "blake"] {
        let encoder = encoder(variant);
        for row in &rows {
            let values: Vec<&str> = row.iter().map(String::as_str).collect();
            let plain = encoder.encode(&values).expect("encodes");
            let traced = encoder.encode_traced(&values).expect("encodes");
            assert_eq!(plain, traced.clk);
        }
    }
}

#[test]
fn a_different_secret_gives_a_different_clk() {
    let schema = ClkSchema::from_json(&read("schema-blake.json")).expect("schema");
    let (_, rows) = records();
    let values: Vec<&str> = rows[0].iter().map(String::as_str).collect();
    let a = ClkEncoder::new(&schema, &Secret::from_text("synthetic secret A"));
    let b = ClkEncoder::new(&schema, &Secret::from_text("synthetic secret B"));
    assert_ne!(a.encode(&values).expect("a"), b.encode(&values).expect("b"));
}
