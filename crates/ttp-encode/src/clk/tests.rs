//! Encoder-level behaviour and every schema rejection. Bit-exactness against clkhash itself
//! is covered by `tests/it/clk_vectors.rs` and `tests/it/clk_generated.rs`.

use serde_json::{Value, json};

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A valid schema to start from: two hashed features and an ignored one.
fn base() -> Value {
    json!({
        "version": 3,
        "clkConfig": {"l": 1024, "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64}},
        "features": [
            {"identifier": "name", "format": {"type": "string", "encoding": "utf-8", "case": "upper"},
             "hashing": {"comparison": {"type": "ngram", "n": 2},
                         "strategy": {"bitsPerToken": 20}, "hash": {"type": "blakeHash"}}},
            {"identifier": "dob", "format": {"type": "date", "format": "%Y-%m-%d"},
             "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true},
                         "strategy": {"bitsPerToken": 10}}},
            {"identifier": "row_id", "ignored": true}
        ]
    })
}

fn schema(v: &Value) -> ClkSchema {
    ClkSchema::from_json(&v.to_string()).unwrap_or_else(|e| panic!("schema should load: {e}"))
}

fn encoder(v: &Value) -> ClkEncoder {
    ClkEncoder::new(&schema(v), &Secret::from_text("synthetic unit-test secret"))
}

/// Applies `edit` to the base schema and asserts the load fails at `path` with `needle` in
/// the message.
fn rejects(edit: impl FnOnce(&mut Value), path: &str, needle: &str) {
    let mut v = base();
    edit(&mut v);
    match ClkSchema::from_json(&v.to_string()) {
        Ok(_) => panic!("schema should be rejected ({path}: {needle})"),
        Err(e) => {
            assert_eq!(e.path(), Some(path), "{e}");
            assert!(
                e.to_string().contains(needle),
                "{e:?} should mention {needle:?}"
            );
        }
    }
}

fn feature(v: &mut Value, i: usize) -> &mut Value {
    &mut v["features"][i]
}

// ----------------------------------------------------------------------------- schema: accepted

#[test]
fn base_schema_loads_with_its_accessors() {
    let s = schema(&base());
    assert_eq!(s.feature_names(), ["name", "dob", "row_id"]);
    assert_eq!(s.feature_count(), 3);
    assert_eq!(s.l(), 1024);
    assert_eq!(s.xor_folds(), 0);
}

#[test]
fn defaults_match_clkhash() {
    // No hash (blakeHash), no kdf hash (SHA256), no keySize (64), no xor_folds (0): the
    // explicit spelling of the defaults must give the same CLK.
    let mut implicit = base();
    implicit["clkConfig"]["kdf"] = json!({"type": "HKDF"});
    feature(&mut implicit, 0)["hashing"]
        .as_object_mut()
        .expect("object")
        .remove("hash");
    let mut explicit = base();
    explicit["clkConfig"]["xor_folds"] = json!(0);
    feature(&mut explicit, 1)["hashing"]["hash"] = json!({"type": "blakeHash"});
    let values = ["ANNA", "1985-03-14", "x"];
    assert_eq!(
        encoder(&implicit).encode(&values).expect("encodes"),
        encoder(&explicit).encode(&values).expect("encodes")
    );
}

#[test]
fn an_ignored_feature_may_keep_its_definition() {
    let mut v = base();
    *feature(&mut v, 2) = json!({"identifier": "row_id", "ignored": true,
        "format": {"type": "integer"},
        "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 5}}});
    let e = encoder(&v);
    // Not validated as an integer, and not hashed.
    assert_eq!(
        e.encode(&["ANNA", "1985-03-14", "not a number"]),
        encoder(&base()).encode(&["ANNA", "1985-03-14", "whatever"])
    );
}

// ----------------------------------------------------------------------------- schema: rejected

#[test]
fn rejects_invalid_json() {
    let err = ClkSchema::from_json("{\"version\": 3,").expect_err("truncated JSON");
    assert!(matches!(err, SchemaError::Json(_)));
    assert_eq!(err.path(), None);
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn rejects_top_level_problems() {
    rejects(|v| v["version"] = json!(2), "version", "only version 3");
    rejects(
        |v| v["version"] = json!("3"),
        "version",
        "must be the number 3",
    );
    rejects(
        |v| v["comment"] = json!("x"),
        "comment",
        "allowed here: version, clkConfig, features",
    );
    rejects(
        |v| v["features"] = json!([]),
        "features",
        "at least one feature",
    );
    rejects(
        |v| v["features"] = json!({}),
        "features",
        "must be an array",
    );
    rejects(
        |v| {
            v.as_object_mut().expect("object").remove("clkConfig");
        },
        "(top level)",
        "missing required key \"clkConfig\"",
    );
}

#[test]
fn rejects_xor_folds_misspelling_with_an_explanation() {
    rejects(
        |v| v["clkConfig"]["xorFolds"] = json!(1),
        "clkConfig.xorFolds",
        "reads \"xor_folds\", so it would silently not fold",
    );
}

#[test]
fn rejects_bad_lengths() {
    rejects(
        |v| v["clkConfig"]["l"] = json!(0),
        "clkConfig.l",
        "at least 1",
    );
    rejects(
        |v| v["clkConfig"]["l"] = json!(1024.0),
        "clkConfig.l",
        "must be an integer",
    );
    rejects(
        |v| v["clkConfig"]["l"] = json!(1000),
        "clkConfig.l",
        "power of two because features[0] uses blakeHash",
    );
    rejects(
        |v| v["clkConfig"]["xor_folds"] = json!(-1),
        "clkConfig.xor_folds",
        "at least 0",
    );
    rejects(
        |v| v["clkConfig"]["xor_folds"] = json!(15),
        "clkConfig.xor_folds",
        "exceeds this encoder's limit",
    );
}

#[test]
fn rejects_bad_kdf_settings() {
    rejects(
        |v| v["clkConfig"]["kdf"]["type"] = json!("legacy"),
        "clkConfig.kdf.type",
        "only \"HKDF\"",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["hash"] = json!("MD5"),
        "clkConfig.kdf.hash",
        "\"SHA256\" or \"SHA512\"",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["salt"] = json!("not base64!"),
        "clkConfig.kdf.salt",
        "not standard base64",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["info"] = json!(17),
        "clkConfig.kdf.info",
        "must be a string",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["keySize"] = json!(0),
        "clkConfig.kdf.keySize",
        "at least 1",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["keySize"] = json!(65),
        "clkConfig.kdf.keySize",
        "at most 64 because features[0] uses blakeHash",
    );
    rejects(
        |v| v["clkConfig"]["kdf"]["key_size"] = json!(32),
        "clkConfig.kdf.key_size",
        "did you mean \"keySize\"?",
    );
}

#[test]
fn rejects_more_keys_than_hkdf_can_derive() {
    // 64 features × 2 keys × 64 bytes = 8192 > 255 × 32.
    let many = |v: &mut Value| {
        let ignored: Vec<Value> = (0..62)
            .map(|i| json!({"identifier": format!("extra{i}"), "ignored": true}))
            .collect();
        v["features"].as_array_mut().expect("array").extend(ignored);
    };
    rejects(many, "clkConfig.kdf.keySize", "or hash SHA512");
    let mut v = base();
    many(&mut v);
    v["clkConfig"]["kdf"]["hash"] = json!("SHA512");
    assert_eq!(schema(&v).feature_count(), 65);
}

#[test]
fn rejects_bad_features() {
    rejects(
        |v| feature(v, 1)["identifier"] = json!("name"),
        "features[1].identifier",
        "duplicate identifier \"name\" (also features[0])",
    );
    rejects(
        |v| feature(v, 0)["identifier"] = json!(7),
        "features[0].identifier",
        "must be a string",
    );
    rejects(
        |v| feature(v, 0)["description"] = json!(["x"]),
        "features[0].description",
        "must be a string",
    );
    rejects(
        |v| {
            feature(v, 0)
                .as_object_mut()
                .expect("object")
                .remove("hashing");
        },
        "features[0]",
        "missing required key \"hashing\"",
    );
    rejects(
        |v| feature(v, 2)["format"] = json!({"type": "string"}),
        "features[2]",
        "both \"format\" and \"hashing\" or neither",
    );
    rejects(
        |v| feature(v, 2)["ignored"] = json!("yes"),
        "features[2].ignored",
        "must be true or false",
    );
    rejects(
        |v| {
            v["features"] = json!([{"identifier": "a", "ignored": true},
                                   {"identifier": "b", "ignored": true}]);
        },
        "features",
        "every feature is ignored",
    );
}

#[test]
fn rejects_bad_formats() {
    let fmt = |v: &mut Value, f: Value| feature(v, 0)["format"] = f;
    rejects(
        |v| fmt(v, json!({"type": "text"})),
        "features[0].format.type",
        "unknown format type \"text\"",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "encoding": "utf-16"})),
        "features[0].format.encoding",
        "use \"utf-8\"",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "encoding": "latin-1"})),
        "features[0].format.encoding",
        "unknown encoding",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "case": "title"})),
        "features[0].format.case",
        "unknown case \"title\"",
    );
    rejects(
        |v| {
            fmt(
                v,
                json!({"type": "string", "pattern": "[A-Z]+", "case": "upper"}),
            )
        },
        "features[0].format.case",
        "cannot be combined with \"pattern\"",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "pattern": "[A-Z"})),
        "features[0].format.pattern",
        "not a regular expression",
    );
    // Would escape the anchoring group if not checked on its own.
    rejects(
        |v| fmt(v, json!({"type": "string", "pattern": "a)|(b"})),
        "features[0].format.pattern",
        "not a regular expression",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "pattern": "(a)\\1"})),
        "features[0].format.pattern",
        "not a regular expression",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "minLength": 5, "maxLength": 4})),
        "features[0].format.minLength",
        "5 exceeds maxLength 4",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "maxLength": 0})),
        "features[0].format.maxLength",
        "at least 1",
    );
    rejects(
        |v| fmt(v, json!({"type": "string", "min_length": 1})),
        "features[0].format.min_length",
        "did you mean \"minLength\"?",
    );
    rejects(
        |v| fmt(v, json!({"type": "integer", "minimum": 10, "maximum": 1})),
        "features[0].format.minimum",
        "10 exceeds maximum 1",
    );
    rejects(
        |v| fmt(v, json!({"type": "integer", "maximum": 1.5})),
        "features[0].format.maximum",
        "must be an integer",
    );
    rejects(
        |v| fmt(v, json!({"type": "date"})),
        "features[0].format",
        "missing required key \"format\"",
    );
    rejects(
        |v| fmt(v, json!({"type": "date", "format": "%Y-%m-%dT%H:%M"})),
        "features[0].format.format",
        "'%H' is not supported",
    );
    rejects(
        |v| fmt(v, json!({"type": "enum", "values": []})),
        "features[0].format.values",
        "must not be empty",
    );
    rejects(
        |v| fmt(v, json!({"type": "enum", "values": ["F", 1]})),
        "features[0].format.values[1]",
        "must be a string",
    );
}

#[test]
fn rejects_bad_comparisons() {
    let cmp = |v: &mut Value, c: Value| feature(v, 0)["hashing"]["comparison"] = c;
    rejects(
        |v| cmp(v, json!({"type": "ngram", "n": 0})),
        "features[0].hashing.comparison.n",
        "at least 1",
    );
    rejects(
        |v| cmp(v, json!({"type": "ngram"})),
        "features[0].hashing.comparison",
        "missing required key \"n\"",
    );
    rejects(
        |v| cmp(v, json!({"type": "ngram", "n": 2, "positional": 1})),
        "features[0].hashing.comparison.positional",
        "must be true or false",
    );
    rejects(
        |v| cmp(v, json!({"type": "soundex"})),
        "features[0].hashing.comparison.type",
        "unknown comparison \"soundex\"",
    );
    rejects(
        |v| cmp(v, json!({"type": "exact", "n": 2})),
        "features[0].hashing.comparison.n",
        "unknown key",
    );
    rejects(
        |v| {
            cmp(
                v,
                json!({"type": "numeric", "thresholdDistance": 2, "resolution": 1,
                       "fractionalPrecision": 1}),
            )
        },
        "features[0].hashing.comparison.fractionalPrecision",
        "reads \"fractional_precision\"",
    );
    rejects(
        |v| {
            cmp(
                v,
                json!({"type": "numeric", "thresholdDistance": 0.04, "resolution": 1}),
            )
        },
        "features[0].hashing.comparison.thresholdDistance",
        "increase fractional_precision",
    );
    rejects(
        |v| {
            cmp(
                v,
                json!({"type": "numeric", "thresholdDistance": -1, "resolution": 1}),
            )
        },
        "features[0].hashing.comparison.thresholdDistance",
        "greater than 0",
    );
    rejects(
        |v| {
            cmp(
                v,
                json!({"type": "numeric", "thresholdDistance": 1, "resolution": 0}),
            )
        },
        "features[0].hashing.comparison.resolution",
        "at least 1",
    );
}

#[test]
fn rejects_bad_strategies_and_hashes() {
    let hashing = |v: &mut Value, key: &str, x: Value| feature(v, 0)["hashing"][key] = x;
    rejects(
        |v| {
            hashing(
                v,
                "strategy",
                json!({"bitsPerToken": 1, "bitsPerFeature": 1}),
            )
        },
        "features[0].hashing.strategy",
        "not both",
    );
    rejects(
        |v| hashing(v, "strategy", json!({})),
        "features[0].hashing.strategy",
        "missing \"bitsPerToken\" or \"bitsPerFeature\"",
    );
    rejects(
        |v| hashing(v, "strategy", json!({"bitsPerToken": 0})),
        "features[0].hashing.strategy.bitsPerToken",
        "at least 1",
    );
    rejects(
        |v| hashing(v, "strategy", json!({"k": 20})),
        "features[0].hashing.strategy.k",
        "v1/v2 syntax",
    );
    rejects(
        |v| hashing(v, "hash", json!({"type": "sha256"})),
        "features[0].hashing.hash.type",
        "unknown hash \"sha256\"",
    );
    rejects(
        |v| {
            hashing(
                v,
                "hash",
                json!({"type": "blakeHash", "prevent_singularity": true}),
            )
        },
        "features[0].hashing.hash.prevent_singularity",
        "applies only to doubleHash",
    );
    rejects(
        |v| {
            hashing(
                v,
                "hash",
                json!({"type": "doubleHash", "preventSingularity": true}),
            )
        },
        "features[0].hashing.hash.preventSingularity",
        "reads \"prevent_singularity\"",
    );
    rejects(
        |v| hashing(v, "weight", json!(1.0)),
        "features[0].hashing.weight",
        "v1/v2 syntax",
    );
    rejects(
        |v| {
            v["clkConfig"]["l"] = json!(1);
            for f in 0..2 {
                feature(v, f)["hashing"]["hash"] =
                    json!({"type": "doubleHash", "prevent_singularity": true});
            }
        },
        "clkConfig.l",
        "1-bit filter",
    );
}

#[test]
fn rejects_bad_missing_values() {
    let mv = |v: &mut Value, x: Value| feature(v, 0)["hashing"]["missingValue"] = x;
    rejects(
        |v| mv(v, json!({"replaceWith": ""})),
        "features[0].hashing.missingValue",
        "missing required key \"sentinel\"",
    );
    rejects(
        |v| mv(v, json!({"sentinel": "", "replace_with": "x"})),
        "features[0].hashing.missingValue.replace_with",
        "did you mean \"replaceWith\"?",
    );
    rejects(
        |v| {
            feature(v, 0)["format"] = json!({"type": "string", "encoding": "ascii"});
            mv(v, json!({"sentinel": "", "replaceWith": "unbekannt-ä"}));
        },
        "features[0].hashing.missingValue.replaceWith",
        "must be ASCII",
    );
}

// ----------------------------------------------------------------------------- encoding

#[test]
fn bits_per_feature_spreads_the_budget_over_the_tokens() {
    let mut v = base();
    feature(&mut v, 0)["hashing"]["strategy"] = json!({"bitsPerFeature": 10});
    let e = encoder(&v);
    // "ABC" has 4 bigrams: 10 = 3 + 3 + 2 + 2.
    let t = e
        .encode_traced(&["ABC", "", ""])
        .expect_err("empty date is invalid");
    assert_eq!(t.index, 1);
    let mut v2 = v.clone();
    feature(&mut v2, 1)["hashing"]["missingValue"] = json!({"sentinel": ""});
    let t = encoder(&v2)
        .encode_traced(&["ABC", "", ""])
        .expect("encodes");
    let ks: Vec<u32> = t.fields[0].tokens.iter().map(|t| t.k).collect();
    assert_eq!(ks, [3, 3, 2, 2]);
    // A budget smaller than the token count leaves later tokens with k = 0.
    feature(&mut v2, 0)["hashing"]["strategy"] = json!({"bitsPerFeature": 2});
    let t = encoder(&v2)
        .encode_traced(&["ABC", "", ""])
        .expect("encodes");
    let ks: Vec<u32> = t.fields[0].tokens.iter().map(|t| t.k).collect();
    assert_eq!(ks, [1, 1, 0, 0]);
    assert!(t.fields[0].tokens[3].positions.is_empty());
}

#[test]
fn positional_unigrams_encode_position_and_digit() {
    let e = encoder(&base());
    let t = e.encode_traced(&["", "1985-03-14", ""]).expect("encodes");
    let tokens: Vec<&str> = t.fields[1]
        .tokens
        .iter()
        .map(|t| t.token.as_str())
        .collect();
    assert_eq!(
        tokens,
        ["1 1", "2 9", "3 8", "4 5", "5 0", "6 3", "7 1", "8 4"]
    );
    assert_eq!(t.fields[1].formatted.as_deref(), Some("19850314"));
    // The two 1s (positions 1 and 7) are different tokens, so they set different bits.
    assert_ne!(
        t.fields[1].tokens[0].positions,
        t.fields[1].tokens[6].positions
    );
}

#[test]
fn non_ascii_values_are_tokenised_by_code_point_and_hashed_as_utf8() {
    let mut v = base();
    feature(&mut v, 0)["format"] = json!({"type": "string"});
    let e = encoder(&v);
    let t = e
        .encode_traced(&["Zoë 李😀", "1985-03-14", ""])
        .expect("encodes");
    let tokens: Vec<&str> = t.fields[0]
        .tokens
        .iter()
        .map(|t| t.token.as_str())
        .collect();
    assert_eq!(tokens, [" Z", "Zo", "oë", "ë ", " 李", "李😀", "😀 "]);
    // Decomposed and composed ë are different values to clkhash (no normalisation).
    let composed = e.encode(&["Zo\u{eb}", "2000-01-01", ""]);
    let decomposed = e.encode(&["Zoe\u{308}", "2000-01-01", ""]);
    assert_ne!(composed.expect("encodes"), decomposed.expect("encodes"));
}

#[test]
fn prevent_singularity_gives_every_token_two_bits_in_a_two_bit_filter() {
    let schema_for = |prevent: bool| {
        json!({
            "version": 3,
            "clkConfig": {"l": 2, "kdf": {"type": "HKDF"}},
            "features": [
                {"identifier": "code", "format": {"type": "string"},
                 "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 2},
                             "hash": {"type": "doubleHash", "prevent_singularity": prevent}}}
            ]
        })
    };
    let (plain, fixed) = (encoder(&schema_for(false)), encoder(&schema_for(true)));
    let mut singular = 0;
    for i in 0..64 {
        let value = format!("code-{i}");
        let p = plain.encode(&[&value]).expect("encodes");
        let f = fixed.encode(&[&value]).expect("encodes");
        assert_eq!(f, [0b1100_0000], "{value}: both bits set");
        if p != f {
            singular += 1;
        }
    }
    assert!(
        singular > 10,
        "about half the tokens are singular with L = 2 ({singular})"
    );
}

#[test]
fn sha512_kdf_matches_clkhash_key_derivation() {
    // clkhash.key_derivation.generate_key_lists("synthetic-secret-ä", 2, key_size=24,
    //     salt=b"salt", info=b"info", hash_algo="SHA512")
    let v = json!({
        "version": 3,
        "clkConfig": {"l": 64, "kdf": {"type": "HKDF", "hash": "SHA512", "keySize": 24,
                                      "salt": "c2FsdA==", "info": "aW5mbw=="}},
        "features": [
            {"identifier": "skipped", "ignored": true},
            {"identifier": "x", "format": {"type": "string"},
             "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 1}}}
        ]
    });
    let e = ClkEncoder::new(&schema(&v), &Secret::from_text("synthetic-secret-ä"));
    let t = e.encode_traced(&["", "v"]).expect("encodes");
    assert_eq!(
        hex(t.fields[0].key0.expose()),
        "cc92e5d7f10978ff7724e83a1e5f2a73f67c4378d725228f"
    );
    assert_eq!(
        hex(t.fields[0].key1.expose()),
        "c8b185e9652c412e14289f848cda301b791a554b3f0989af"
    );
    assert_eq!(
        hex(t.fields[1].key0.expose()),
        "e20bd7b0b1e3a00f1ff72abb8b9b32a1794209255dec23b8"
    );
    assert_eq!(
        hex(t.fields[1].key1.expose()),
        "f0617a0bc1d6262142ef00450dfb5cb111ac49f9efe1e384"
    );
    assert_eq!(t.fields[0].formatted, None, "ignored");
}

#[test]
fn ignored_features_consume_keys() {
    // Moving the ignored feature changes which keys `name` gets, hence its bits.
    let mut first = base();
    let features = first["features"].as_array_mut().expect("array");
    let ignored = features.remove(2);
    features.insert(0, ignored);
    let a = encoder(&base())
        .encode_traced(&["ANNA", "1985-03-14", "7"])
        .expect("a");
    let b = encoder(&first)
        .encode_traced(&["7", "ANNA", "1985-03-14"])
        .expect("b");
    assert_eq!(a.fields[0].tokens.len(), b.fields[1].tokens.len());
    assert_ne!(a.fields[0].key0.expose(), b.fields[1].key0.expose());
    assert_ne!(a.clk, b.clk);
}

#[test]
fn missing_value_sentinel_is_replaced_and_not_validated() {
    let mut v = base();
    feature(&mut v, 1)["hashing"]["missingValue"] =
        json!({"sentinel": "unbekannt", "replaceWith": ""});
    let e = encoder(&v);
    let t = e
        .encode_traced(&["ANNA", "unbekannt", ""])
        .expect("sentinel accepted");
    assert_eq!(t.fields[1].formatted.as_deref(), Some(""));
    assert!(t.fields[1].tokens.is_empty());
    // Without replaceWith the sentinel itself is hashed, as is (not as a date).
    feature(&mut v, 1)["hashing"]["missingValue"] = json!({"sentinel": "N/A"});
    let t = encoder(&v)
        .encode_traced(&["ANNA", "N/A", ""])
        .expect("sentinel accepted");
    assert_eq!(t.fields[1].formatted.as_deref(), Some("N/A"));
    assert_eq!(t.fields[1].tokens.len(), 3);
    // Anything else still has to be a date.
    let err = encoder(&v)
        .encode(&["ANNA", "n/a", ""])
        .expect_err("not the sentinel");
    assert_eq!(err.index, 1);
}

#[test]
fn folding_xors_the_halves_of_the_unfolded_filter() {
    let values = ["ANNA", "1985-03-14", ""];
    let unfolded = encoder(&base()).encode(&values).expect("encodes");
    let mut folded_schema = base();
    folded_schema["clkConfig"]["l"] = json!(256);
    folded_schema["clkConfig"]["xor_folds"] = json!(2);
    let folded = encoder(&folded_schema).encode(&values).expect("encodes");
    assert_eq!(folded.len(), 32);
    let expected: Vec<u8> = (0..32)
        .map(|i| unfolded[i] ^ unfolded[i + 32] ^ unfolded[i + 64] ^ unfolded[i + 96])
        .collect();
    assert_eq!(folded, expected);
}

#[test]
fn lengths_that_are_not_a_multiple_of_8_are_zero_padded() {
    let mut v = base();
    v["clkConfig"]["l"] = json!(777);
    for f in 0..2 {
        feature(&mut v, f)["hashing"]["hash"] = json!({"type": "doubleHash"});
    }
    let clk = encoder(&v)
        .encode(&["ANNA", "1985-03-14", ""])
        .expect("encodes");
    assert_eq!(clk.len(), 98);
    assert_eq!(clk[97] & 0b0111_1111, 0, "bits 777..784 are padding");
}

// ----------------------------------------------------------------------------- errors, privacy

#[test]
fn value_errors_name_the_feature_but_not_the_value() {
    let e = encoder(&base());
    let err = e
        .encode(&["Anna-Geheim", "1985-03-14", ""])
        .expect_err("not upper case");
    assert_eq!((err.index, err.feature.as_str()), (0, "name"));
    assert!(!err.to_string().contains("Geheim"), "{err}");
    let err = e
        .encode(&["ANNA", "14.03.1985", ""])
        .expect_err("wrong date format");
    assert_eq!(err.index, 1);
    assert_eq!(err.reason, "does not match date format %Y-%m-%d");
    assert_eq!(
        err.to_string(),
        "value 1 (dob) does not match date format %Y-%m-%d"
    );
    assert!(!format!("{err:?}").contains("14.03"));
}

#[test]
fn wrong_value_counts_are_reported() {
    let e = encoder(&base());
    let err = e.encode(&["ANNA", "1985-03-14"]).expect_err("too few");
    assert_eq!((err.index, err.feature.as_str()), (2, "row_id"));
    assert!(
        err.reason
            .contains("is missing (the record has 2 values, the schema 3"),
        "{err}"
    );
    let err = e
        .encode(&["ANNA", "1985-03-14", "", "extra"])
        .expect_err("too many");
    assert_eq!((err.index, err.feature.as_str()), (3, ""));
    assert_eq!(
        err.to_string(),
        "value 3 has no feature in the schema (the record has 4 values, the schema 3 features)"
    );
}

#[test]
fn debug_output_reveals_neither_keys_nor_values() {
    let e = encoder(&base());
    let t = e
        .encode_traced(&["ANNA", "1985-03-14", ""])
        .expect("encodes");
    let key_hex = hex(t.fields[0].key0.expose());
    for text in [format!("{e:?}"), format!("{t:?}")] {
        assert!(
            !text.contains("ANNA") && !text.contains("19850314"),
            "{text}"
        );
        assert!(!text.contains(&key_hex[..16]), "{text}");
        assert!(!text.contains(" A"), "tokens must be redacted: {text}");
    }
}

#[test]
fn the_same_record_always_gives_the_same_clk() {
    let e = encoder(&base());
    let values = ["MÜLLER", "1972-11-02", "42"];
    assert_eq!(e.encode(&values), e.encode(&values));
    let again = encoder(&base());
    assert_eq!(e.encode(&values), again.encode(&values));
}

#[test]
fn to_base64_uses_the_standard_alphabet_with_padding() {
    assert_eq!(to_base64(&[0xfb, 0xff]), "+/8=");
}

#[test]
fn threads_sharing_one_encoder_get_the_same_clks_as_a_fresh_encoder() {
    // Racing threads fill the same token-table slots; every result must still be exact.
    let names = [
        "ANNA", "ANNE", "MÜLLER", "ÖZDEMIR", "LI", "JÜRGEN", "SCHMIDT", "O'NEILL",
    ];
    let records: Vec<[String; 3]> = (0..64)
        .map(|i| {
            let name = format!("{}{}", names[i % 8], names[(i / 8) % 8]);
            [
                name,
                format!("19{:02}-0{}-1{}", i, 1 + i % 9, i % 10),
                String::new(),
            ]
        })
        .collect();
    for hash in [json!({"type": "blakeHash"}), json!({"type": "doubleHash"})] {
        let mut v = base();
        for f in 0..2 {
            feature(&mut v, f)["hashing"]["hash"] = hash.clone();
        }
        let expected: Vec<Vec<u8>> = records
            .iter()
            .map(|r| encoder(&v).encode(&[&r[0], &r[1], &r[2]]).expect("encodes"))
            .collect();
        let shared = encoder(&v);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (shared, records, expected) = (&shared, &records, &expected);
                scope.spawn(move || {
                    for i in (0..records.len()).map(|i| (i * 7 + t * 13) % records.len()) {
                        let r = &records[i];
                        let clk = shared.encode(&[&r[0], &r[1], &r[2]]).expect("encodes");
                        assert_eq!(clk, expected[i], "thread {t} record {i}");
                    }
                });
            }
        });
    }
}
