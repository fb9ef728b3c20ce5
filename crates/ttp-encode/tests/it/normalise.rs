//! The normalisation pipeline: each step's behaviour, the presets, the configuration syntax
//! in JSON and TOML, and errors that never reveal the value. All names are synthetic.

use std::collections::BTreeMap;

use ttp_encode::normalise::{
    NormalisationConfig, NormaliseError, Normaliser, Step, StepConfigError, presets,
};

fn apply(steps: &[Step], value: &str) -> String {
    Normaliser::new(steps).unwrap().apply(value).unwrap()
}

fn steps_from_json(json: &str) -> Vec<Step> {
    serde_json::from_str(json).unwrap()
}

#[test]
fn unicode_forms_and_whitespace() {
    let decomposed = "Mu\u{308}ller";
    assert_eq!(apply(&[Step::Nfc], decomposed), "Müller");
    assert_eq!(apply(&[Step::Nfkc], "ﬁnk²"), "fink2");
    assert_eq!(apply(&[Step::Nfc], "ﬁnk²"), "ﬁnk²");
    assert_eq!(apply(&[Step::Trim], " \u{a0}\tAnna Lena \n"), "Anna Lena");
    assert_eq!(
        apply(&[Step::CollapseWhitespace], " Anna \t\u{a0} Lena  "),
        " Anna Lena "
    );
    assert_eq!(apply(&[Step::Uppercase], "straße"), "STRASSE");
    assert_eq!(apply(&[Step::Lowercase], "ÄRGER"), "ärger");
}

#[test]
fn transliterate_de_german_rules_then_accent_stripping() {
    let t = |v| apply(&[Step::TransliterateDe], v);
    assert_eq!(t("Jörg Müller-Lüdenscheidt"), "Joerg Mueller-Luedenscheidt");
    assert_eq!(t("ÄÖÜ äöü ß ẞ"), "AEOEUE aeoeue ss SS");
    assert_eq!(t("Renée Çelik Dvořák"), "Renee Celik Dvorak");
    assert_eq!(
        t("Søren Ærø Åsa Łukasz Þór"),
        "Soeren AEroe AAsa Lukasz THor"
    );
    // A decomposed umlaut is still an umlaut, not an accented `u`.
    assert_eq!(t("Mu\u{308}ller"), "Mueller");
    // Non-Latin scripts pass through (minus combining marks).
    assert_eq!(t("Ωμέγα"), "Ωμεγα");
}

#[test]
fn transliterate_de_commutes_with_case_folding() {
    let samples = [
        "Jörg Müller",
        "ÄRGER",
        "Straße",
        "ẞ",
        "Øre Æble Œuvre",
        "Ĳsselmeer",
        "Renée",
        "ı",
        "Mu\u{308}ller",
    ];
    for s in samples {
        let up_first = apply(&[Step::Uppercase, Step::TransliterateDe], s);
        let translit_first = apply(&[Step::TransliterateDe, Step::Uppercase], s);
        assert_eq!(up_first, translit_first, "uppercase, {s:?}");
        let low_first = apply(&[Step::Lowercase, Step::TransliterateDe], s);
        let translit_low = apply(&[Step::TransliterateDe, Step::Lowercase], s);
        assert_eq!(low_first, translit_low, "lowercase, {s:?}");
    }
}

#[test]
fn strip_titles_removes_whole_title_words_and_title_prefixes() {
    let s = |v| apply(&[Step::strip_default_titles()], v);
    assert_eq!(s("Prof. Dr. med. Anna Beispiel"), "Anna Beispiel");
    assert_eq!(s("Dipl.-Ing. Jörg"), "Jörg");
    assert_eq!(s("dr.med.dent. Jörg"), "Jörg");
    assert_eq!(s("PROF.DR. ANNA"), "ANNA");
    assert_eq!(s("Dr.Müller"), "Müller");
    assert_eq!(s("Dr. rer. nat. h.c. mult. Lena"), "Lena");
    // Titles only match at the start of words.
    assert_eq!(s("Andrea Drmed Hendr."), "Andrea Drmed Hendr.");
    assert_eq!(s("Dr."), "");
    // A custom list replaces the default one; a title without a dot must be a whole word.
    let custom = Step::StripTitles(vec!["PD".into()]);
    assert_eq!(
        apply(std::slice::from_ref(&custom), "PD Dr. Anna PDX"),
        "Dr. Anna PDX"
    );
}

#[test]
fn keep_remove_and_replace() {
    assert_eq!(
        apply(&[Step::KeepChars("A-Z ".into())], "O'BRIEN-SMITH 3RD"),
        "OBRIENSMITH RD"
    );
    assert_eq!(
        apply(&[Step::RemoveChars(r"\d\-.".into())], "Anna-Lena 2. Teil"),
        "AnnaLena  Teil"
    );
    let replace = Step::Replace(vec![("ss".into(), "ß".into()), ("ß".into(), "SS".into())]);
    // Pairs apply in order, each to the output of the previous one.
    assert_eq!(apply(&[replace], "Strasse Straße"), "StraSSe StraSSe");
}

#[test]
fn date_reformatting() {
    let iso = Step::Date {
        from: "%Y-%m-%d".into(),
        to: "%Y%m%d".into(),
    };
    assert_eq!(apply(std::slice::from_ref(&iso), "1920-01-01"), "19200101");
    let german = Step::Date {
        from: "%d.%m.%Y".into(),
        to: "%Y-%m-%d".into(),
    };
    assert_eq!(apply(&[german], "29.02.2000"), "2000-02-29");

    let normaliser = Normaliser::new(&[Step::Trim, iso]).unwrap();
    for bad in [
        "1999-02-29",
        "1920-13-01",
        "19200101",
        "1920-01-01T00:00",
        "",
        "gestern",
    ] {
        let err = normaliser.apply(bad).unwrap_err();
        assert_eq!(
            err,
            NormaliseError::InvalidDate {
                position: 2,
                format: "%Y-%m-%d".into()
            },
            "{bad:?}"
        );
    }
}

#[test]
fn map_replaces_whole_values_and_rejects_unknown_ones() {
    let map = Step::Map(BTreeMap::from([
        ("male".to_owned(), "m".to_owned()),
        ("female".to_owned(), "f".to_owned()),
    ]));
    let normaliser = Normaliser::new(&[Step::Trim, Step::Lowercase, map]).unwrap();
    assert_eq!(normaliser.apply(" Male ").unwrap(), "m");
    assert_eq!(normaliser.apply("female").unwrap(), "f");
    assert_eq!(
        normaliser.apply("femalex").unwrap_err(),
        NormaliseError::Unmapped { position: 3 }
    );
}

#[test]
fn errors_never_contain_the_value() {
    let normaliser = Normaliser::new(&steps_from_json(
        r#"[{"date": {"from": "%Y-%m-%d", "to": "%Y%m%d"}}, {"map": {"19200101": "x"}}]"#,
    ))
    .unwrap();
    let secret_date = "1931-02-30";
    let err = normaliser.apply(secret_date).unwrap_err();
    assert!(!err.to_string().contains("1931"), "{err}");
    assert!(!format!("{err:?}").contains("1931"), "{err:?}");

    let err = normaliser.apply("1931-02-03").unwrap_err();
    assert!(matches!(err, NormaliseError::Unmapped { position: 2 }));
    assert!(!err.to_string().contains("1931"), "{err}");
    assert!(!err.to_string().contains("19310203"), "{err}");
}

/// Ground truth from the library's `StringFieldTransformer` with its README configuration,
/// run on OpenJDK 17.
#[test]
fn mainzelliste_preset_matches_the_java_library() {
    let normaliser = Normaliser::new(&presets::mainzelliste_names()).unwrap();
    let cases = [
        ("Herr", "HERR"),
        ("Dr. Hans", " HANS"),
        ("Dipl.-Ing. Jörg Müller", "ING JOERG MUELLER"),
        ("Renée Ärger", "RENEE AERGER"),
        ("Çelik", "ELIK"),
        ("Straße", "STRASSE"),
        ("José", "JOSE"),
        ("Mu\u{308}ller", "MULLER"),
        ("dr. hans", "DR HANS"),
        ("Hans-Peter\tO'Brien", "HANSPETER\tOBRIEN"),
        ("Ölçer è", "OELER "),
        ("Dr.Dr. Anna  ", " ANNA  "),
    ];
    for (input, expected) in cases {
        assert_eq!(normaliser.apply(input).unwrap(), expected, "{input:?}");
    }
}

#[test]
fn german_names_preset() {
    let normaliser = Normaliser::new(&presets::german_names()).unwrap();
    let cases = [
        ("Herr", "HERR"),
        ("  Prof. Dr. med.  Jörg-Peter ", "JOERG PETER"),
        ("Müller - Lüdenscheidt", "MUELLER LUEDENSCHEIDT"),
        ("O'Brien", "OBRIEN"),
        ("Mu\u{308}ller", "MUELLER"),
        ("Renée\tÇelik", "RENEE CELIK"),
        ("straße", "STRASSE"),
        ("Dr.", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(normaliser.apply(input).unwrap(), expected, "{input:?}");
    }
}

#[test]
fn steps_deserialise_from_json_and_toml_alike() {
    let json = r#"["nfc", "strip_titles", {"strip_titles": ["Dr."]}, {"keep_chars": "A-Z "},
        {"remove_chars": "-"}, {"replace": [["ß", "SS"]]},
        {"date": {"from": "%d.%m.%Y", "to": "%Y%m%d"}}, {"map": {"male": "m"}},
        "trim", "collapse_whitespace", "uppercase", "lowercase", "transliterate_de", "nfkc"]"#;
    let toml_text = r#"
        steps = ["nfc", "strip_titles", { strip_titles = ["Dr."] }, { keep_chars = "A-Z " },
            { remove_chars = "-" }, { replace = [["ß", "SS"]] },
            { date = { from = "%d.%m.%Y", to = "%Y%m%d" } }, { map = { male = "m" } },
            "trim", "collapse_whitespace", "uppercase", "lowercase", "transliterate_de", "nfkc"]
    "#;
    #[derive(serde::Deserialize)]
    struct Wrapper {
        steps: Vec<Step>,
    }
    let from_json = steps_from_json(json);
    let from_toml = toml::from_str::<Wrapper>(toml_text).unwrap().steps;
    assert_eq!(from_json, from_toml);
    assert_eq!(from_json.len(), 14);
    assert_eq!(from_json[1], Step::strip_default_titles());
    assert_eq!(from_json[2], Step::StripTitles(vec!["Dr.".into()]));
    assert_eq!(
        from_json[6],
        Step::Date {
            from: "%d.%m.%Y".into(),
            to: "%Y%m%d".into()
        }
    );

    // Serialising and reading back is lossless (profiles fingerprint the serialised form).
    let text = serde_json::to_string(&from_json).unwrap();
    assert_eq!(steps_from_json(&text), from_json);
    assert!(
        text.starts_with(r#"["nfc",{"strip_titles":["Dr.","#),
        "{text}"
    );
}

#[test]
fn malformed_steps_are_rejected_with_precise_messages() {
    let err = |json: &str| {
        serde_json::from_str::<Vec<Step>>(json)
            .unwrap_err()
            .to_string()
    };
    assert!(err(r#"["uppercse"]"#).contains("unknown variant `uppercse`"));
    assert!(err(r#"["keep_chars"]"#).contains("needs parameters"));
    assert!(err(r#"[{"trim": true}]"#).contains("takes no parameters"));
    assert!(err(r#"[{"keep_chars": "A-Z", "trim": 1}]"#).contains("exactly one key"));
    assert!(err(r#"[{}]"#).contains("exactly one key"));
    assert!(err(r#"[{"date": {"from": "%Y", "too": "%Y"}}]"#).contains("unknown field `too`"));
    assert!(err(r#"[{"replace": [["a"]]}]"#).contains("invalid length"));
}

#[test]
fn invalid_step_parameters_are_rejected_at_construction() {
    let build = |json: &str| Normaliser::new(&steps_from_json(json)).unwrap_err();
    assert!(matches!(
        build(r#"["trim", {"keep_chars": "Z-A"}]"#),
        StepConfigError::CharSet {
            position: 2,
            step: "keep_chars",
            ..
        }
    ));
    assert!(matches!(
        build(r#"[{"replace": [["a", "b"], ["", "x"]]}]"#),
        StepConfigError::EmptyReplacement {
            position: 1,
            pair: 2
        }
    ));
    assert!(matches!(
        build(r#"[{"strip_titles": ["Dr.", "Dr med."]}]"#),
        StepConfigError::BadTitle {
            position: 1,
            index: 2
        }
    ));
    assert!(matches!(
        build(r#"[{"map": {}}]"#),
        StepConfigError::EmptyMap { position: 1 }
    ));
    let msg = build(r#"[{"date": {"from": "%Y-%m", "to": "%Y%m%d"}}]"#).to_string();
    assert!(
        msg.contains("step 1") && msg.contains("`from`") && msg.contains("%Y-%m"),
        "{msg}"
    );
}

#[test]
fn normalisation_config_builds_per_field_and_names_the_field_on_error() {
    let config: NormalisationConfig = serde_json::from_str(
        r#"{"version": 3, "fields": {
            "firstName": ["trim", "uppercase"],
            "birthDate": [{"date": {"from": "%Y-%m-%d", "to": "%Y%m%d"}}]}}"#,
    )
    .unwrap();
    assert_eq!(config.version, 3);
    let built = config.build().unwrap();
    assert_eq!(built["firstName"].apply(" anna ").unwrap(), "ANNA");
    assert_eq!(built["birthDate"].apply("2001-02-03").unwrap(), "20010203");

    let broken: NormalisationConfig = serde_json::from_str(
        r#"{"version": 1, "fields": {"lastName": ["trim", {"keep_chars": "\\x"}]}}"#,
    )
    .unwrap();
    let msg = broken.build().unwrap_err().to_string();
    assert!(
        msg.contains("`lastName`") && msg.contains("step 2"),
        "{msg}"
    );

    let unknown = serde_json::from_str::<NormalisationConfig>(r#"{"version": 1, "field": {}}"#)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field `field`"), "{unknown}");
}
