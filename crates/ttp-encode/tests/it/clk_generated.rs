//! Random schemas and records encoded by clkhash 0.18.3 (`tests/data/clkhash-cases.json`,
//! made by `scripts/clkhash-interop/gen_cases.py --fixture FILE --seed 7 --schemas 12
//! --records 15`): every CLK must match bit for bit. This covers, without Python at test
//! time, what the vectors do not: both hashes mixed in one schema, SHA512, salts and infos,
//! key sizes, lengths that are not powers of two or multiples of 8, folds, trigrams,
//! numeric comparisons, bitsPerFeature, sentinels, patterns, accented/CJK/emoji values.

use serde_json::Value;
use ttp_encode::Secret;
use ttp_encode::clk::{ClkEncoder, ClkSchema, to_base64};

fn cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/clkhash-cases.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(fixture["clkhash_version"], "0.18.3");
    fixture["cases"].as_array().expect("cases").clone()
}

fn bit_difference(a: &str, b: &str) -> String {
    use base64::Engine as _;
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default()
    };
    let (a, b) = (decode(a), decode(b));
    if a.len() != b.len() {
        return format!("{} bytes instead of {}", a.len(), b.len());
    }
    let bits: u32 = a.iter().zip(&b).map(|(x, y)| (x ^ y).count_ones()).sum();
    format!("{bits} bits differ")
}

#[test]
fn generated_cases_match_clkhash_bit_for_bit() {
    let cases = cases();
    assert!(
        cases.len() >= 8,
        "the fixture covers at least the 8 planned schemas"
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let schema = ClkSchema::from_json(&case["schema"].to_string())
            .unwrap_or_else(|e| panic!("{name}: clkhash accepted this schema but we do not: {e}"));
        let header: Vec<&str> = case["header"]
            .as_array()
            .expect("header")
            .iter()
            .map(|v| v.as_str().expect("identifier"))
            .collect();
        assert_eq!(schema.feature_names(), header, "{name}");
        let secret = Secret::from_text(case["secret"].as_str().expect("secret"));
        let encoder = ClkEncoder::new(&schema, &secret);
        let records = case["records"].as_array().expect("records");
        let clks = case["clks"].as_array().expect("clks");
        assert_eq!(records.len(), clks.len(), "{name}");
        for (i, (record, want)) in records.iter().zip(clks).enumerate() {
            let values: Vec<&str> = record
                .as_array()
                .expect("record")
                .iter()
                .map(|v| v.as_str().expect("value"))
                .collect();
            let want = want.as_str().expect("clk");
            match encoder.encode(&values) {
                Ok(clk) if to_base64(&clk) == want => {}
                Ok(clk) => failures.push(format!(
                    "{name} record {i}: {}",
                    bit_difference(&to_base64(&clk), want)
                )),
                Err(e) => failures.push(format!("{name} record {i}: rejected: {e}")),
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 100);
}
