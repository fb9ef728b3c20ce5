//! Encoding profiles: everything that decides which filter a record becomes, as configuration.
//!
//! A profile is *normalisation + one encoder core + field mapping*. Two places read one:
//!
//! * the agent's configuration, section `[encoding]` (TOML), as an [`EncodingProfile`] tagged by
//!   `encoder = "fttp"` or `encoder = "clk"`;
//! * `ttp-agent encode --fttp-profile PROFILE.json`, as a bare [`FttpProfile`].
//!
//! An fTTP profile accepts exactly the keys of the Mainzelliste vector's `config` object
//! (`length`, `nGramLength`, `randomPositionNumber`, `vocabulary`, `balanced_seed`, `field_seeds`,
//! `field_order`), where the two seed keys may be replaced by `"seeds_file": "seeds.json"`
//! (`{"balanced_seed": …, "field_seeds": {…}}`, resolved relative to the profile's directory),
//! plus two optional sections:
//!
//! ```json
//! {
//!   "length": 900, "nGramLength": 2, "randomPositionNumber": 30,
//!   "seeds_file": "fttp-seeds.json",
//!   "field_order": ["firstName", "lastName", "birthDate", "gender"],
//!   "normalisation": {"version": 1, "fields": {
//!       "firstName": ["nfc", "strip_titles", "transliterate_de", "uppercase", {"keep_chars": "A-Z "}, "trim"],
//!       "birthDate": [{"date": {"from": "%Y-%m-%d", "to": "%Y%m%d"}}]}},
//!   "sources": {"firstName": "vorname", "lastName": "nachname", "birthDate": "geburtsdatum"}
//! }
//! ```
//!
//! `sources` maps a field to the CSV column or IDAT element its raw value comes from (default:
//! the field's own name). Unknown keys anywhere are errors naming the key, because a typo in
//! a profile silently changes every filter.
//!
//! [`ProfileEncoder::load`] reads secret files and builds the core once; then
//! [`ProfileEncoder::encode_record`] fetches, normalises and encodes one record.
//! [`ProfileEncoder::fingerprint`] names the public part of the profile so a store can notice
//! that filters made before and after a configuration change are not comparable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::fttp::{self, FttpEncoder, FttpError, FttpParams, seed_serde};
use crate::normalise::{FieldConfigError, NormalisationConfig, NormaliseError, Normaliser};

/// Bumped whenever this crate changes what a profile *means* (e.g. a built-in normalisation
/// table), so fingerprints change with it.
const FINGERPRINT_SCHEME: &str = "ttp-encode/profile-fingerprint/v1";

/// The agent's `[encoding]` section: one encoder, chosen by `encoder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "encoder", rename_all = "lowercase")]
pub enum EncodingProfile {
    Fttp(FttpProfile),
    Clk(ClkProfile),
}

/// An fTTP profile (see the [module documentation](self)). Seeds are either inline or in
/// `seeds_file`; inline seeds are redacted in `Debug` and wiped on drop.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FttpProfile {
    pub length: u32,
    #[serde(rename = "nGramLength", default = "default_ngram_length")]
    pub n_gram_length: u32,
    #[serde(rename = "randomPositionNumber")]
    pub random_position_number: u32,
    #[serde(default = "default_vocabulary")]
    pub vocabulary: String,
    #[serde(default, deserialize_with = "seed_serde::optional_seed")]
    pub balanced_seed: Option<i64>,
    #[serde(default, deserialize_with = "seed_serde::optional_seed_map")]
    pub field_seeds: Option<BTreeMap<String, i64>>,
    /// Path of the seeds file, relative to the profile's directory.
    #[serde(default)]
    pub seeds_file: Option<PathBuf>,
    pub field_order: Vec<String>,
    #[serde(default)]
    pub normalisation: Option<NormalisationConfig>,
    /// Field → source column / IDAT element; fields not listed read their own name.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

fn default_ngram_length() -> u32 {
    fttp::DEFAULT_NGRAM_LENGTH
}

fn default_vocabulary() -> String {
    fttp::DEFAULT_VOCABULARY.to_owned()
}

impl FttpProfile {
    /// Parses the JSON of an `--fttp-profile` file.
    pub fn from_json(text: &str) -> Result<FttpProfile, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl std::fmt::Debug for FttpProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FttpProfile")
            .field("length", &self.length)
            .field("n_gram_length", &self.n_gram_length)
            .field("random_position_number", &self.random_position_number)
            .field("vocabulary", &self.vocabulary)
            .field("balanced_seed", &self.balanced_seed.map(|_| "<redacted>"))
            .field(
                "field_seeds",
                &self.field_seeds.as_ref().map(|m| {
                    m.keys()
                        .map(|k| (k, "<redacted>"))
                        .collect::<BTreeMap<_, _>>()
                }),
            )
            .field("seeds_file", &self.seeds_file)
            .field("field_order", &self.field_order)
            .field("normalisation", &self.normalisation)
            .field("sources", &self.sources)
            .finish()
    }
}

impl Drop for FttpProfile {
    fn drop(&mut self) {
        self.balanced_seed.zeroize();
        if let Some(seeds) = &mut self.field_seeds {
            seeds.values_mut().for_each(Zeroize::zeroize);
        }
    }
}

/// A clkhash profile: the linkage schema and the secret live in files (paths relative to the
/// configuration's directory); field order comes from the schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClkProfile {
    pub schema_file: PathBuf,
    pub secret_file: PathBuf,
    #[serde(default)]
    pub normalisation: Option<NormalisationConfig>,
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

/// A profile cannot be loaded. Paths are named; secret file contents never appear.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile file {path}: {source}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile file {path}: {source}")]
    ParseProfile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "no seeds: give `balanced_seed` and `field_seeds`, or `seeds_file` naming a JSON file \
         {{\"balanced_seed\": …, \"field_seeds\": {{…}}}}"
    )]
    NoSeeds,
    #[error("seeds are given both inline (`{inline}`) and as `seeds_file`; keep one")]
    SeedsTwice { inline: &'static str },
    #[error("inline seeds need both `balanced_seed` and `field_seeds`; `{missing}` is missing")]
    IncompleteInlineSeeds { missing: &'static str },
    #[error("cannot read seeds file {path}: {source}")]
    ReadSeeds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seeds file {path} is not valid JSON (line {line}, column {column})")]
    SeedsSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error(
        "seeds file {path}: {problem} (expected {{\"balanced_seed\": integer, \
         \"field_seeds\": {{field: integer, …}}}})"
    )]
    SeedsShape { path: PathBuf, problem: String },
    #[error("fTTP parameters: {0}")]
    Fttp(#[from] FttpError),
    #[error(transparent)]
    Normalisation(#[from] FieldConfigError),
    #[error("`normalisation.fields` has a pipeline for `{0}`, which is not in `field_order`")]
    NormalisedFieldUnknown(String),
    #[error("`sources` maps `{0}`, which is not in `field_order`")]
    SourceFieldUnknown(String),
    #[error("`sources` maps `{0}` to an empty source name")]
    EmptySource(String),
    #[error("cannot read {what} {path}: {source}")]
    ReadClkFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linkage schema {path}: {source}")]
    ClkSchema {
        path: PathBuf,
        #[source]
        source: crate::clk::SchemaError,
    },
    #[error("the clkhash secret file {path} is empty or not UTF-8 text")]
    ClkSecret { path: PathBuf },
}

/// Why a record could not be encoded. Names the field and its source, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub field: String,
    pub source: String,
    pub reason: RecordErrorReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordErrorReason {
    /// The source has no value in this record.
    Missing,
    /// The value is empty after normalisation (e.g. it had no letter the pipeline keeps).
    /// Encoding it would make every such record agree on this field.
    EmptyAfterNormalisation,
    /// A normalisation step rejected the value.
    Normalise(NormaliseError),
    /// The encoder's own validation rejected the value (clkhash formats: date, enum, …).
    Invalid(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field `{}` (source `{}`): {}",
            self.field, self.source, self.reason
        )
    }
}

impl std::fmt::Display for RecordErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordErrorReason::Missing => f.write_str("no value"),
            RecordErrorReason::EmptyAfterNormalisation => {
                f.write_str("the value is empty after normalisation")
            }
            RecordErrorReason::Normalise(e) => write!(f, "{e}"),
            RecordErrorReason::Invalid(reason) => f.write_str(reason),
        }
    }
}

// Implemented by hand: thiserror would take the field named `source` for the error source.
impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            RecordErrorReason::Normalise(e) => Some(e),
            _ => None,
        }
    }
}

/// The encoder core behind a profile.
enum Core {
    Fttp(Box<FttpEncoder>),
    Clk(Box<crate::clk::ClkEncoder>),
}

/// A loaded profile: fetch → normalise → encode, with the core built once.
pub struct ProfileEncoder {
    core: Core,
    fields: Vec<String>,
    sources: Vec<String>,
    /// Per field (same order as `fields`); `None` passes the raw value through.
    normalisers: Vec<Option<Normaliser>>,
    normalisation_version: Option<u32>,
    fingerprint: String,
}

impl ProfileEncoder {
    /// Builds the encoder for `profile`; relative secret-file paths resolve against `base_dir`
    /// (the directory of the file the profile came from).
    pub fn load(
        profile: &EncodingProfile,
        base_dir: &Path,
    ) -> Result<ProfileEncoder, ProfileError> {
        ProfileEncoder::load_with_secret(profile, base_dir, None)
    }

    /// [`load`](Self::load) with the content of the profile's secret file (`seeds_file` of an
    /// fTTP profile, `secret_file` of a clkhash one) already read by the caller, which reads
    /// secrets under its own rules (permissions, size). `None` reads the file here.
    pub fn load_with_secret(
        profile: &EncodingProfile,
        base_dir: &Path,
        secret: Option<&[u8]>,
    ) -> Result<ProfileEncoder, ProfileError> {
        match profile {
            EncodingProfile::Fttp(fttp) => ProfileEncoder::load_fttp_with(fttp, base_dir, secret),
            EncodingProfile::Clk(p) => ProfileEncoder::load_clk_with(p, base_dir, secret),
        }
    }

    /// Reads an `--fttp-profile` JSON file; `seeds_file` resolves against its directory.
    pub fn from_fttp_profile_file(path: &Path) -> Result<ProfileEncoder, ProfileError> {
        // The profile may hold inline seeds: keep its text in wiped memory.
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ProfileError::ReadProfile {
                path: path.to_owned(),
                source,
            }
        })?);
        let profile =
            FttpProfile::from_json(&text).map_err(|source| ProfileError::ParseProfile {
                path: path.to_owned(),
                source,
            })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        ProfileEncoder::load_fttp(&profile, base_dir)
    }

    /// [`load`](Self::load) for an fTTP profile.
    pub fn load_fttp(
        profile: &FttpProfile,
        base_dir: &Path,
    ) -> Result<ProfileEncoder, ProfileError> {
        ProfileEncoder::load_fttp_with(profile, base_dir, None)
    }

    fn load_fttp_with(
        profile: &FttpProfile,
        base_dir: &Path,
        seeds_text: Option<&[u8]>,
    ) -> Result<ProfileEncoder, ProfileError> {
        let (balanced_seed, field_seeds) = resolve_seeds(profile, base_dir, seeds_text)?;
        let params = FttpParams {
            length: profile.length,
            n_gram_length: profile.n_gram_length,
            random_position_number: profile.random_position_number,
            vocabulary: profile.vocabulary.clone(),
            balanced_seed,
            field_seeds,
            field_order: profile.field_order.clone(),
        };
        let encoder = FttpEncoder::new(&params)?;
        drop(params);

        let fingerprint = fingerprint(
            &serde_json::json!({
                "encoder": "fttp",
                "length": encoder.length(),
                "nGramLength": encoder.n_gram_length(),
                "randomPositionNumber": encoder.random_position_number(),
                "vocabulary": encoder.vocabulary(),
            }),
            &profile.field_order,
            &profile.sources,
            profile.normalisation.as_ref(),
        );

        with_fields(
            Core::Fttp(Box::new(encoder)),
            &profile.field_order,
            &profile.sources,
            profile.normalisation.as_ref(),
            fingerprint,
        )
    }

    /// [`load`](Self::load) for a clkhash profile: the schema decides the features and their
    /// order (ignored ones included); clkhash's own rules decide what a value may be, and an
    /// empty or absent value is a missing value (no tokens), as in clkhash.
    pub fn load_clk(profile: &ClkProfile, base_dir: &Path) -> Result<ProfileEncoder, ProfileError> {
        ProfileEncoder::load_clk_with(profile, base_dir, None)
    }

    fn load_clk_with(
        profile: &ClkProfile,
        base_dir: &Path,
        secret_bytes: Option<&[u8]>,
    ) -> Result<ProfileEncoder, ProfileError> {
        let schema_path = base_dir.join(&profile.schema_file);
        let text =
            std::fs::read_to_string(&schema_path).map_err(|source| ProfileError::ReadClkFile {
                what: "linkage schema",
                path: schema_path.clone(),
                source,
            })?;
        let schema =
            crate::clk::ClkSchema::from_json(&text).map_err(|source| ProfileError::ClkSchema {
                path: schema_path.clone(),
                source,
            })?;
        let secret_path = base_dir.join(&profile.secret_file);
        let mut bytes = match secret_bytes {
            Some(bytes) => Zeroizing::new(bytes.to_vec()),
            None => Zeroizing::new(std::fs::read(&secret_path).map_err(|source| {
                ProfileError::ReadClkFile {
                    what: "clkhash secret",
                    path: secret_path.clone(),
                    source,
                }
            })?),
        };
        // Editors end files with a newline; clkhash takes the secret without one.
        if bytes.ends_with(b"\r\n") {
            let n = bytes.len() - 2;
            bytes.truncate(n);
        } else if bytes.ends_with(b"\n") {
            let n = bytes.len() - 1;
            bytes.truncate(n);
        }
        if bytes.is_empty() || std::str::from_utf8(&bytes).is_err() {
            return Err(ProfileError::ClkSecret { path: secret_path });
        }
        let secret = crate::Secret::new(bytes.to_vec());
        let encoder = crate::clk::ClkEncoder::new(&schema, &secret);
        let fields: Vec<String> = schema
            .feature_names()
            .iter()
            .map(|f| f.to_string())
            .collect();
        // The schema is public configuration; its digest (not the secret) identifies the profile.
        let fingerprint = fingerprint(
            &serde_json::json!({ "encoder": "clk", "schema_sha256": sha256_hex(text.as_bytes()) }),
            &fields,
            &profile.sources,
            profile.normalisation.as_ref(),
        );
        with_fields(
            Core::Clk(Box::new(encoder)),
            &fields,
            &profile.sources,
            profile.normalisation.as_ref(),
            fingerprint,
        )
    }

    /// The fields, in encoding order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The source (CSV column / IDAT element) of each field, in the order of [`fields`](Self::fields).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The profile's normalisation version, if it has a normalisation section.
    pub fn normalisation_version(&self) -> Option<u32> {
        self.normalisation_version
    }

    /// Bytes of every encoded filter.
    pub fn output_len(&self) -> usize {
        match &self.core {
            Core::Fttp(e) => e.output_len(),
            Core::Clk(e) => e.schema().l().div_ceil(8),
        }
    }

    /// A short digest of the profile's *public* content: encoder parameters, vocabulary, fields,
    /// sources and normalisation (with its version). Equal fingerprints mean filters are
    /// comparable as far as configuration goes.
    ///
    /// Seeds and keys are deliberately left out: an fTTP seed has only 48 effective bits, so any
    /// digest over it could be brute-forced back to the seed. A seed rotation is therefore *not*
    /// visible in the fingerprint.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Encodes one record. `get(source)` returns the raw value of a source column / element;
    /// each field's value is normalised, then the core encodes all fields.
    ///
    /// A missing value, a value the normalisation rejects and a value that is empty after
    /// normalisation are errors naming the field, never the value.
    pub fn encode_record<'v>(
        &self,
        get: &dyn Fn(&str) -> Option<&'v str>,
    ) -> Result<Vec<u8>, RecordError> {
        let mut values: Vec<Zeroizing<String>> = Vec::with_capacity(self.fields.len());
        for ((field, source), normaliser) in
            self.fields.iter().zip(&self.sources).zip(&self.normalisers)
        {
            let error = |reason| RecordError {
                field: field.clone(),
                source: source.clone(),
                reason,
            };
            let clk = matches!(self.core, Core::Clk(_));
            let raw = match get(source) {
                Some(v) => v,
                // clkhash: an absent value is a missing value, not an error.
                None if clk => "",
                None => return Err(error(RecordErrorReason::Missing)),
            };
            let value = match normaliser {
                Some(n) => n
                    .apply(raw)
                    .map_err(|e| error(RecordErrorReason::Normalise(e)))?,
                None => raw.to_owned(),
            };
            if value.is_empty() && !clk {
                return Err(error(RecordErrorReason::EmptyAfterNormalisation));
            }
            values.push(Zeroizing::new(value));
        }
        let refs: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
        match &self.core {
            Core::Fttp(e) => Ok(e.encode(&refs)),
            Core::Clk(e) => e.encode(&refs).map_err(|v| {
                let i = v.index.min(self.fields.len().saturating_sub(1));
                RecordError {
                    field: self.fields.get(i).cloned().unwrap_or_default(),
                    source: self.sources.get(i).cloned().unwrap_or_default(),
                    reason: RecordErrorReason::Invalid(v.reason),
                }
            }),
        }
    }
}

impl std::fmt::Debug for ProfileEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("ProfileEncoder");
        match &self.core {
            Core::Fttp(e) => s.field("core", e),
            Core::Clk(_) => s.field("core", &"ClkEncoder(<redacted>)"),
        };
        s.field("fields", &self.fields)
            .field("sources", &self.sources)
            .field("normalisation_version", &self.normalisation_version)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// The field mapping and normalisation shared by every core.
fn with_fields(
    core: Core,
    fields: &[String],
    sources: &BTreeMap<String, String>,
    normalisation: Option<&NormalisationConfig>,
    fingerprint: String,
) -> Result<ProfileEncoder, ProfileError> {
    if let Some(unknown) = sources.keys().find(|k| !fields.contains(k)) {
        return Err(ProfileError::SourceFieldUnknown(unknown.clone()));
    }
    if let Some((field, _)) = sources.iter().find(|(_, s)| s.is_empty()) {
        return Err(ProfileError::EmptySource(field.clone()));
    }
    let mut compiled = match normalisation {
        Some(config) => {
            if let Some(unknown) = config.fields.keys().find(|k| !fields.contains(k)) {
                return Err(ProfileError::NormalisedFieldUnknown(unknown.clone()));
            }
            config.build()?
        }
        None => BTreeMap::new(),
    };
    Ok(ProfileEncoder {
        core,
        fields: fields.to_vec(),
        sources: fields
            .iter()
            .map(|f| sources.get(f).unwrap_or(f).clone())
            .collect(),
        normalisers: fields.iter().map(|f| compiled.remove(f)).collect(),
        normalisation_version: normalisation.map(|n| n.version),
        fingerprint,
    })
}

/// `"<encoder>:<16 hex digits>"`: SHA-256 over a canonical JSON of the public parameters.
fn fingerprint(
    core: &Value,
    fields: &[String],
    sources: &BTreeMap<String, String>,
    normalisation: Option<&NormalisationConfig>,
) -> String {
    let effective_sources: Vec<&String> =
        fields.iter().map(|f| sources.get(f).unwrap_or(f)).collect();
    // Canonical either way: serde_json's map sorts keys, and should a dependency enable its
    // `preserve_order` feature, insertion order is fixed by this code and every nested map
    // (normalisation fields, `map` steps) is a `BTreeMap`.
    let canonical = serde_json::json!({
        "scheme": FINGERPRINT_SCHEME,
        "core": core,
        "fields": fields,
        "sources": effective_sources,
        "normalisation": normalisation,
    })
    .to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let encoder = core["encoder"].as_str().unwrap_or("profile");
    format!("{encoder}:{hex}")
}

/// The seeds, from the profile itself or from its `seeds_file`.
fn resolve_seeds(
    profile: &FttpProfile,
    base_dir: &Path,
    seeds_text: Option<&[u8]>,
) -> Result<(i64, BTreeMap<String, i64>), ProfileError> {
    match (
        &profile.balanced_seed,
        &profile.field_seeds,
        &profile.seeds_file,
    ) {
        (Some(_), _, Some(_)) => Err(ProfileError::SeedsTwice {
            inline: "balanced_seed",
        }),
        (_, Some(_), Some(_)) => Err(ProfileError::SeedsTwice {
            inline: "field_seeds",
        }),
        (Some(balanced), Some(fields), None) => Ok((*balanced, fields.clone())),
        (Some(_), None, None) => Err(ProfileError::IncompleteInlineSeeds {
            missing: "field_seeds",
        }),
        (None, Some(_), None) => Err(ProfileError::IncompleteInlineSeeds {
            missing: "balanced_seed",
        }),
        (None, None, Some(file)) => read_seeds_file(&base_dir.join(file), seeds_text),
        (None, None, None) => Err(ProfileError::NoSeeds),
    }
}

/// Reads `{"balanced_seed": …, "field_seeds": {…}}`. Validated by hand on a `Value` rather than
/// with serde derive, so that no error message can quote the file's content.
fn read_seeds_file(
    path: &Path,
    given: Option<&[u8]>,
) -> Result<(i64, BTreeMap<String, i64>), ProfileError> {
    let text = match given {
        Some(bytes) => Zeroizing::new(
            std::str::from_utf8(bytes)
                .map_err(|_| ProfileError::ReadSeeds {
                    path: path.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
                })?
                .to_owned(),
        ),
        None => Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ProfileError::ReadSeeds {
                path: path.to_owned(),
                source,
            }
        })?),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| ProfileError::SeedsSyntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
    })?;
    let shape = |problem: String| ProfileError::SeedsShape {
        path: path.to_owned(),
        problem,
    };
    let Value::Object(top) = value else {
        return Err(shape("the top level is not an object".into()));
    };
    if let Some(key) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "balanced_seed" | "field_seeds"))
    {
        return Err(shape(format!("unknown key `{key}`")));
    }
    let balanced = top
        .get("balanced_seed")
        .ok_or_else(|| shape("`balanced_seed` is missing".into()))?
        .as_i64()
        .ok_or_else(|| shape("`balanced_seed` is not a 64-bit integer".into()))?;
    let Some(Value::Object(fields)) = top.get("field_seeds") else {
        return Err(shape("`field_seeds` is missing or not an object".into()));
    };
    let mut seeds = BTreeMap::new();
    for (field, seed) in fields {
        let seed = seed
            .as_i64()
            .ok_or_else(|| shape(format!("`field_seeds.{field}` is not a 64-bit integer")))?;
        seeds.insert(field.clone(), seed);
    }
    Ok((balanced, seeds))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
