//! Encoding profiles end to end: the Mainzelliste vector through JSON and TOML profiles (inline
//! seeds and seeds files), normalisation before the core, field sources, and errors that name
//! keys and paths but never secrets or values.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use ttp_encode::profile::{
    EncodingProfile, FttpProfile, ProfileEncoder, ProfileError, RecordError, RecordErrorReason,
};

const VECTOR: &str = include_str!("../vectors/mainzelliste-fttp-vector-1.json");

fn vector() -> Value {
    serde_json::from_str(VECTOR).unwrap()
}

fn expected_base64() -> String {
    vector()["expected_base64"].as_str().unwrap().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The vector's config without its seeds, plus `seeds_file`.
fn config_with_seeds_file(file: &str) -> Value {
    let mut config = vector()["config"].clone();
    let object = config.as_object_mut().unwrap();
    object.remove("balanced_seed");
    object.remove("field_seeds");
    object.insert("seeds_file".into(), json!(file));
    config
}

fn vector_seeds() -> Value {
    let config = vector()["config"].clone();
    json!({"balanced_seed": config["balanced_seed"], "field_seeds": config["field_seeds"]})
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, content).unwrap();
    path
}

fn encode(encoder: &ProfileEncoder, record: &HashMap<&str, &str>) -> Result<String, RecordError> {
    encoder
        .encode_record(&|source| record.get(source).copied())
        .map(|bytes| b64(&bytes))
}

fn normalised_input() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("firstName", "HERR"),
        ("lastName", "MUSTERMANN"),
        ("birthDate", "19200101"),
        ("gender", "m"),
    ])
}

fn load_err(profile: &Value, dir: &Path) -> ProfileError {
    let path = write(dir, "profile.json", &profile.to_string());
    ProfileEncoder::from_fttp_profile_file(&path).unwrap_err()
}

#[test]
fn vector_config_as_profile_with_inline_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "profile.json", &vector()["config"].to_string());
    let encoder = ProfileEncoder::from_fttp_profile_file(&path).unwrap();
    assert_eq!(
        encoder.fields(),
        ["firstName", "lastName", "birthDate", "gender"]
    );
    assert_eq!(encoder.sources(), encoder.fields());
    assert_eq!(encoder.output_len(), 200);
    assert_eq!(
        encode(&encoder, &normalised_input()).unwrap(),
        expected_base64()
    );
}

#[test]
fn vector_config_with_a_seeds_file_relative_to_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "secrets/fttp-seeds.json",
        &vector_seeds().to_string(),
    );
    let profile = config_with_seeds_file("secrets/fttp-seeds.json");
    let path = write(dir.path(), "profile.json", &profile.to_string());
    let encoder = ProfileEncoder::from_fttp_profile_file(&path).unwrap();
    assert_eq!(
        encode(&encoder, &normalised_input()).unwrap(),
        expected_base64()
    );
}

/// The library's README flow: raw IDAT, its example normalisation, then the generator.
#[test]
fn normalisation_and_sources_apply_before_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let names = serde_json::to_value(ttp_encode::normalise::presets::mainzelliste_names()).unwrap();
    let mut profile = vector()["config"].clone();
    let object = profile.as_object_mut().unwrap();
    object.insert(
        "normalisation".into(),
        json!({"version": 7, "fields": {
            "firstName": names,
            "lastName": names,
            "birthDate": [{"date": {"from": "%d.%m.%Y", "to": "%Y%m%d"}}],
            "gender": [{"map": {"male": "m", "female": "f"}}]}}),
    );
    object.insert(
        "sources".into(),
        json!({"firstName": "vorname", "lastName": "nachname", "birthDate": "geburtsdatum"}),
    );
    let path = write(dir.path(), "profile.json", &profile.to_string());
    let encoder = ProfileEncoder::from_fttp_profile_file(&path).unwrap();
    assert_eq!(
        encoder.sources(),
        ["vorname", "nachname", "geburtsdatum", "gender"]
    );
    assert_eq!(encoder.normalisation_version(), Some(7));

    let raw = HashMap::from([
        ("vorname", "Herr"),
        ("nachname", "Mustermann"),
        ("geburtsdatum", "01.01.1920"),
        ("gender", "male"),
        ("firstName", "ignored: not a source"),
    ]);
    assert_eq!(encode(&encoder, &raw).unwrap(), expected_base64());
}

#[test]
fn record_errors_name_field_and_source_but_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut profile = vector()["config"].clone();
    let object = profile.as_object_mut().unwrap();
    object.insert(
        "normalisation".into(),
        json!({"version": 1, "fields": {
            "lastName": ["uppercase", {"keep_chars": "A-Z"}],
            "birthDate": [{"date": {"from": "%Y-%m-%d", "to": "%Y%m%d"}}]}}),
    );
    object.insert("sources".into(), json!({"birthDate": "dob"}));
    let path = write(dir.path(), "profile.json", &profile.to_string());
    let encoder = ProfileEncoder::from_fttp_profile_file(&path).unwrap();

    let mut record = HashMap::from([
        ("firstName", "Erika"),
        ("lastName", "Gabler"),
        ("dob", "1964-08-12"),
        ("gender", "f"),
    ]);
    assert!(encode(&encoder, &record).is_ok());

    record.insert("dob", "1964-02-30");
    let err = encode(&encoder, &record).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.source.as_str()),
        ("birthDate", "dob")
    );
    assert!(matches!(err.reason, RecordErrorReason::Normalise(_)));
    let text = err.to_string();
    assert!(
        text.contains("`birthDate`") && text.contains("`dob`"),
        "{text}"
    );
    assert!(
        !text.contains("1964") && !format!("{err:?}").contains("1964"),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());

    record.insert("dob", "1964-08-12");
    record.insert("lastName", "Ωμέγα");
    let err = encode(&encoder, &record).unwrap_err();
    assert_eq!(err.reason, RecordErrorReason::EmptyAfterNormalisation);
    assert_eq!(err.field, "lastName");

    record.remove("gender");
    record.insert("lastName", "Gabler");
    let err = encode(&encoder, &record).unwrap_err();
    assert_eq!(err.reason, RecordErrorReason::Missing);
    assert_eq!(
        err.to_string(),
        "field `gender` (source `gender`): no value"
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (section, key) in [(None, "lenght"), (Some("normalisation"), "versoin")] {
        let mut profile = vector()["config"].clone();
        match section {
            None => {
                profile[key] = json!(800);
            }
            Some(s) => profile[s] = json!({"version": 1, key: 1}),
        }
        let msg = load_err(&profile, dir.path()).to_string();
        assert!(msg.contains(&format!("unknown field `{key}`")), "{msg}");
        assert!(msg.contains("profile.json"), "{msg}");
    }

    let mut profile = vector()["config"].clone();
    profile["sources"] = json!({"firstname": "vorname"});
    let msg = load_err(&profile, dir.path()).to_string();
    assert!(
        msg.contains("`firstname`") && msg.contains("not in `field_order`"),
        "{msg}"
    );

    let mut profile = vector()["config"].clone();
    profile["normalisation"] = json!({"version": 1, "fields": {"surname": ["trim"]}});
    let msg = load_err(&profile, dir.path()).to_string();
    assert!(msg.contains("`surname`"), "{msg}");
}

#[test]
fn secret_file_errors_name_the_path_but_never_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let profile = config_with_seeds_file("seeds.json");

    // Missing file: the message names the resolved path.
    let msg = load_err(&profile, dir.path()).to_string();
    assert!(msg.contains("cannot read seeds file"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("seeds.json").display().to_string()),
        "{msg}"
    );

    // Files whose content must not leak into the message.
    let leaky = [
        (
            r#"{"balanced_seed": "154866848", "field_seeds": {}}"#,
            "`balanced_seed`",
        ),
        (
            r#"{"balanced_seed": 1, "field_seeds": "firstName=487484864"}"#,
            "`field_seeds`",
        ),
        (
            r#"{"balanced_seed": 1, "field_seeds": {"firstName": 487484864.5}}"#,
            "`field_seeds.firstName`",
        ),
        (
            r#"{"balanced_seed": 1, "field_seeds": {}, "balanced": 154866848}"#,
            "unknown key `balanced`",
        ),
        (
            r#"{"balanced_seed": 154866848, "field_seeds": {"firstName": 487484864"#,
            "not valid JSON",
        ),
        (r#"[154866848, 487484864]"#, "not an object"),
        (
            r#"{"field_seeds": {"firstName": 487484864}}"#,
            "`balanced_seed` is missing",
        ),
    ];
    for (content, expected) in leaky {
        write(dir.path(), "seeds.json", content);
        let msg = load_err(&profile, dir.path()).to_string();
        assert!(msg.contains(expected), "{content}: {msg}");
        assert!(msg.contains("seeds.json"), "{msg}");
        for secret in ["154866848", "487484864"] {
            assert!(!msg.contains(secret), "{content}: {msg}");
        }
    }

    // A seeds file missing a field's seed reaches the core's validation, naming the field.
    write(
        dir.path(),
        "seeds.json",
        r#"{"balanced_seed": 1, "field_seeds": {"firstName": 2}}"#,
    );
    let msg = load_err(&profile, dir.path()).to_string();
    assert!(
        msg.contains("`lastName`") && msg.contains("no seed"),
        "{msg}"
    );
}

#[test]
fn seeds_must_come_from_exactly_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut both = vector()["config"].clone();
    both["seeds_file"] = json!("seeds.json");
    assert!(matches!(
        load_err(&both, dir.path()),
        ProfileError::SeedsTwice { .. }
    ));

    let none = {
        let mut p = config_with_seeds_file("x");
        p.as_object_mut().unwrap().remove("seeds_file");
        p
    };
    assert!(matches!(load_err(&none, dir.path()), ProfileError::NoSeeds));

    let mut half = vector()["config"].clone();
    half.as_object_mut().unwrap().remove("field_seeds");
    assert!(matches!(
        load_err(&half, dir.path()),
        ProfileError::IncompleteInlineSeeds {
            missing: "field_seeds"
        }
    ));

    let mut bad = vector()["config"].clone();
    bad["balanced_seed"] = json!("154866848");
    let msg = load_err(&bad, dir.path()).to_string();
    assert!(
        msg.contains("seed must be an integer") && !msg.contains("154866848"),
        "{msg}"
    );
}

#[test]
fn toml_encoding_section_loads_like_the_json_profile() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fttp-seeds.json", &vector_seeds().to_string());
    let agent_toml = r#"
        [encoding]
        encoder = "fttp"
        length = 800
        nGramLength = 2
        randomPositionNumber = 30
        vocabulary = "abcdefghijkalmnoprstuvmxyzABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"
        seeds_file = "fttp-seeds.json"
        field_order = ["firstName", "lastName", "birthDate", "gender"]

        [encoding.normalisation]
        version = 2
        fields.firstName = ["trim", "uppercase"]
        fields.lastName = ["trim", "uppercase"]

        [encoding.sources]
        lastName = "name"
    "#;
    #[derive(serde::Deserialize)]
    struct AgentConfig {
        encoding: EncodingProfile,
    }
    let config: AgentConfig = toml::from_str(agent_toml).unwrap();
    let encoder = ProfileEncoder::load(&config.encoding, dir.path()).unwrap();
    let raw = HashMap::from([
        ("firstName", " herr "),
        ("name", "Mustermann"),
        ("birthDate", "19200101"),
        ("gender", "m"),
    ]);
    assert_eq!(encode(&encoder, &raw).unwrap(), expected_base64());

    let typo = agent_toml.replace("seeds_file", "seed_file");
    let msg = toml::from_str::<AgentConfig>(&typo)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("seed_file"), "{msg}");
}

fn clk_vectors() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/clkhash")
}

#[test]
fn clk_profiles_reproduce_the_clkhash_vectors() {
    let vectors = clk_vectors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        vectors.join("schema-blake.json"),
        dir.path().join("schema.json"),
    )
    .unwrap();
    // A trailing newline, as an editor leaves it, must not change the keys.
    let secret = std::fs::read_to_string(vectors.join("secret.txt")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), format!("{secret}\n")).unwrap();
    let profile: EncodingProfile = serde_json::from_value(json!({
        "encoder": "clk", "schema_file": "schema.json", "secret_file": "secret.txt"
    }))
    .unwrap();
    let encoder = ProfileEncoder::load(&profile, dir.path()).unwrap();
    assert_eq!(
        encoder.fields(),
        ["given_name", "family_name", "birth_date", "sex"]
    );
    assert!(encoder.fingerprint().starts_with("clk:"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vectors.join("clks-blake.json")).unwrap())
            .unwrap();
    let records = [
        ("ANNA", "MÜLLER", "1985-03-14", "F"),
        ("", "SCHMIDT", "1972-11-02", "M"),
    ];
    for ((g, f, d, x), want) in records
        .iter()
        .zip([&expected["clks"][0], &expected["clks"][3]])
    {
        let raw = HashMap::from([
            ("given_name", *g),
            ("family_name", *f),
            ("birth_date", *d),
            ("sex", *x),
        ]);
        assert_eq!(&json!(encode(&encoder, &raw).unwrap()), want);
    }
    // clkhash's own validation speaks through the profile, naming the field, not the value.
    let bad = HashMap::from([
        ("given_name", "ANNA"),
        ("family_name", "X"),
        ("birth_date", "14.03.1985"),
        ("sex", "F"),
    ]);
    let err = encode(&encoder, &bad).unwrap_err().to_string();
    assert!(
        err.contains("birth_date") && !err.contains("14.03.1985"),
        "{err}"
    );
}

#[test]
fn clk_profile_file_errors_name_the_file() {
    let profile: EncodingProfile = serde_json::from_value(json!({
        "encoder": "clk", "schema_file": "no-such-schema.json", "secret_file": "secret.txt"
    }))
    .unwrap();
    let err = ProfileEncoder::load(&profile, Path::new("/nonexistent")).unwrap_err();
    assert!(err.to_string().contains("no-such-schema.json"), "{err}");
}

#[test]
fn fingerprint_tracks_public_parameters_only() {
    let dir = tempfile::tempdir().unwrap();
    let load = |profile: &Value| {
        let path = write(dir.path(), "p.json", &profile.to_string());
        ProfileEncoder::from_fttp_profile_file(&path)
            .unwrap()
            .fingerprint()
    };
    let base = vector()["config"].clone();
    let fp = load(&base);
    assert!(fp.starts_with("fttp:") && fp.len() == 5 + 16, "{fp}");
    assert!(fp[5..].chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
    assert_eq!(load(&base), fp, "deterministic");

    // Where the seeds live, and their values, do not enter the fingerprint.
    write(dir.path(), "s.json", &vector_seeds().to_string());
    assert_eq!(load(&config_with_seeds_file("s.json")), fp);
    let mut reseeded = base.clone();
    reseeded["balanced_seed"] = json!(1);
    assert_eq!(load(&reseeded), fp);
    // Neither do repeated vocabulary characters (the tables do not change).
    let mut dup = base.clone();
    dup["vocabulary"] = json!(format!("{}abc", base["vocabulary"].as_str().unwrap()));
    assert_eq!(load(&dup), fp);

    // Everything that changes the filters does.
    let variants = [
        json!({"length": 900}),
        json!({"randomPositionNumber": 20}),
        json!({"vocabulary": "ABC"}),
        json!({"field_order": ["lastName", "firstName", "birthDate", "gender"]}),
        json!({"sources": {"lastName": "name"}}),
        json!({"normalisation": {"version": 1, "fields": {"lastName": ["trim"]}}}),
        json!({"normalisation": {"version": 2, "fields": {"lastName": ["trim"]}}}),
        json!({"normalisation": {"version": 1, "fields": {"lastName": ["trim", "uppercase"]}}}),
    ];
    let mut seen = vec![fp];
    for variant in variants {
        let mut profile = base.clone();
        for (k, v) in variant.as_object().unwrap() {
            profile[k] = v.clone();
        }
        let fp = load(&profile);
        assert!(!seen.contains(&fp), "{variant}: {fp}");
        seen.push(fp);
    }
}

#[test]
fn debug_output_never_contains_seeds() {
    let profile: FttpProfile = FttpProfile::from_json(&vector()["config"].to_string()).unwrap();
    let encoder =
        ProfileEncoder::load(&EncodingProfile::Fttp(profile.clone()), Path::new(".")).unwrap();
    for text in [format!("{profile:?}"), format!("{encoder:?}")] {
        for seed in [
            "154866848",
            "487484864",
            "311296856",
            "897689196",
            "298767897",
        ] {
            assert!(!text.contains(seed), "{text}");
        }
        assert!(text.contains("firstName"), "{text}");
    }
}

#[test]
fn encoders_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ProfileEncoder>();
    shareable::<ttp_encode::fttp::FttpEncoder>();
    shareable::<ttp_encode::normalise::Normaliser>();
}
