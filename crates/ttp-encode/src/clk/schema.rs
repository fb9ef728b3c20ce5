//! Loading and validating a clkhash linkage schema (version 3).
//!
//! A linkage schema is the contract between every site of a linkage: two CLKs are comparable
//! only if they were made with the same schema (and secret). clkhash validates schemas with a
//! JSON Schema that lets several mistakes through silently. The costliest is `xorFolds`: the
//! published v3 master schema documents that spelling, but clkhash 0.18.3 reads `xor_folds`,
//! so a schema saying `"xorFolds": 1` produces *unfolded* filters without a word. This loader
//! therefore accepts exactly what clkhash accepts *and acts on*, and rejects the rest:
//!
//! * unknown keys everywhere, including the places clkhash ignores them (with a hint when the
//!   key looks like a misspelt known one);
//! * settings clkhash would crash on later (`l` not a power of two with `blakeHash`,
//!   `prevent_singularity` on `blakeHash`, a `keySize` above BLAKE2b's 64 bytes, more key
//!   material than HKDF can produce, a regular expression Python cannot compile);
//! * settings that make every value invalid or every filter empty (`minLength > maxLength`,
//!   an empty enum, only ignored features) and duplicate feature identifiers (a CSV header
//!   could not say which column is which);
//! * what this encoder does not implement (encodings `utf-16`/`utf-32`, whose bytes depend on
//!   the platform in clkhash; date directives other than `%Y %y %m %d %b %B %%`).
//!
//! Every error names the JSON path of the offending setting, e.g.
//! `features[2].hashing.strategy: ...`.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use regex::Regex;
use serde_json::{Map, Number, Value};

use super::format::{Case, Format, StringFormat, StringRule};
use super::strptime::DateFormat;
use super::tokens::{Comparison, NumericParams};

/// The largest filter (`l · 2^xor_folds` bits) a schema may ask for. clkhash has no limit;
/// this one keeps a typo from allocating gigabytes per record (real schemas use ≤ 4096).
pub const MAX_FILTER_BITS: usize = 1 << 24;
/// Upper bound for `n` of an n-gram comparison (clkhash: none; real schemas use 1–4).
const MAX_NGRAM_N: i128 = 100;
/// Upper bound for `bitsPerToken` and `bitsPerFeature`.
const MAX_BITS: i128 = 1 << 20;
/// Upper bound for the numeric comparison's `resolution` (it makes `2·resolution + 1` tokens).
const MAX_RESOLUTION: i128 = 10_000;
/// Upper bound for `fractional_precision`, so that `10^p` fits the integer arithmetic.
const MAX_FRACTIONAL_PRECISION: i128 = 30;

/// Why a linkage schema was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The text is not JSON at all (the message gives line and column).
    #[error("the linkage schema is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A setting is missing, has the wrong type or value, or is not supported.
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path of the setting, e.g. `features[2].hashing.strategy`; `(top level)` for
        /// the document itself.
        path: String,
        message: String,
    },
}

impl SchemaError {
    /// The JSON path of the offending setting (`None` for a JSON syntax error).
    pub fn path(&self) -> Option<&str> {
        match self {
            SchemaError::Json(_) => None,
            SchemaError::Invalid { path, .. } => Some(path),
        }
    }
}

/// A validated linkage schema v3. Build it with [`ClkSchema::from_json`]; encode with
/// [`super::ClkEncoder`].
#[derive(Debug, Clone)]
pub struct ClkSchema {
    /// Length of the CLK in bits, after folding.
    pub(crate) l: usize,
    pub(crate) xor_folds: u32,
    pub(crate) kdf: KdfConfig,
    pub(crate) features: Vec<Feature>,
}

/// `clkConfig.kdf`. Salt and info are public parameters, shared with the linkage unit.
#[derive(Debug, Clone)]
pub(crate) struct KdfConfig {
    pub(crate) hash: KdfHash,
    pub(crate) salt: Option<Vec<u8>>,
    pub(crate) info: Vec<u8>,
    pub(crate) key_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KdfHash {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone)]
pub(crate) struct Feature {
    pub(crate) identifier: String,
    /// `None` for an ignored feature: it still has a CSV column and consumes keys.
    pub(crate) spec: Option<FeatureSpec>,
}

#[derive(Debug, Clone)]
pub(crate) struct FeatureSpec {
    pub(crate) format: Format,
    pub(crate) comparison: Comparison,
    pub(crate) strategy: Strategy,
    pub(crate) hash: HashKind,
    pub(crate) missing: Option<MissingValue>,
}

/// How many positions each token sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    BitsPerToken(u32),
    /// Spread over the tokens: the first `B mod T` get `⌊B/T⌋ + 1`, the rest `⌊B/T⌋`.
    BitsPerFeature(u32),
}

impl Strategy {
    /// `k` for token `index` of `count`.
    #[inline]
    pub(crate) fn k(self, index: usize, count: usize) -> u32 {
        match self {
            Strategy::BitsPerToken(k) => k,
            Strategy::BitsPerFeature(b) => {
                // count ≥ 1 whenever there is a token to ask about.
                let count = count as u64;
                let (q, r) = (u64::from(b) / count, u64::from(b) % count);
                (q + u64::from((index as u64) < r)) as u32
            }
        }
    }

    /// The most positions a single token can need.
    pub(crate) fn max_k(self) -> u32 {
        match self {
            Strategy::BitsPerToken(k) | Strategy::BitsPerFeature(k) => k,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashKind {
    Double { prevent_singularity: bool },
    Blake,
}

/// `missingValue`: a value equal to `sentinel` is not validated and is hashed as
/// `replace_with` (which defaults to the sentinel itself).
#[derive(Debug, Clone)]
pub(crate) struct MissingValue {
    pub(crate) sentinel: String,
    pub(crate) replace_with: String,
}

impl ClkSchema {
    /// Parses and validates a linkage schema v3 (see the module docs for what is rejected).
    pub fn from_json(text: &str) -> Result<ClkSchema, SchemaError> {
        let document: Value = serde_json::from_str(text)?;
        let root = Obj::new(&document, String::new())?;
        root.only_keys(&["version", "clkConfig", "features"])?;
        parse_version(&root)?;

        let config = root.required_object("clkConfig")?;
        config.only_keys(&["l", "kdf", "xor_folds"])?;
        let l = config.required_integer("l", 1, MAX_FILTER_BITS as i128)? as usize;
        let xor_folds = config.integer("xor_folds", 0, 24)?.unwrap_or(0) as u32;
        let filter_bits = l << xor_folds;
        if filter_bits > MAX_FILTER_BITS {
            return Err(invalid(
                config.path_of("xor_folds"),
                format!(
                    "l · 2^xor_folds = {filter_bits} bits before folding exceeds this \
                     encoder's limit of {MAX_FILTER_BITS}"
                ),
            ));
        }
        let kdf_obj = config.required_object("kdf")?;
        let kdf = parse_kdf(&kdf_obj)?;

        let features_path = root.path_of("features");
        let Value::Array(items) = root.required("features")? else {
            return Err(invalid(
                features_path,
                "must be an array of feature objects",
            ));
        };
        if items.is_empty() {
            return Err(invalid(features_path, "must contain at least one feature"));
        }
        let mut features = Vec::with_capacity(items.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let obj = Obj::new(item, format!("{features_path}[{i}]"))?;
            let feature = parse_feature(&obj)?;
            if let Some(first) = seen.insert(obj.required_str("identifier")?, i) {
                return Err(invalid(
                    obj.path_of("identifier"),
                    format!(
                        "duplicate identifier {:?} (also features[{first}]); CSV columns are \
                         matched by identifier, so each must be unique",
                        feature.identifier
                    ),
                ));
            }
            features.push(feature);
        }

        let schema = ClkSchema {
            l,
            xor_folds,
            kdf,
            features,
        };
        schema.check_cross_field_rules(&config, &kdf_obj, &features_path)?;
        Ok(schema)
    }

    /// The identifiers of all features in schema order, ignored ones included: the CSV header
    /// an input file must have.
    pub fn feature_names(&self) -> Vec<&str> {
        self.features
            .iter()
            .map(|f| f.identifier.as_str())
            .collect()
    }

    /// Number of features, ignored ones included.
    pub fn feature_count(&self) -> usize {
        self.features.len()
    }

    /// Length of a CLK in bits (after folding).
    pub fn l(&self) -> usize {
        self.l
    }

    /// Number of XOR folds.
    pub fn xor_folds(&self) -> u32 {
        self.xor_folds
    }

    /// Length of the filter before folding (`l · 2^xor_folds`).
    pub(crate) fn filter_bits(&self) -> usize {
        self.l << self.xor_folds
    }

    fn check_cross_field_rules(
        &self,
        config: &Obj<'_>,
        kdf: &Obj<'_>,
        features_path: &str,
    ) -> Result<(), SchemaError> {
        let hashed = || {
            self.features
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.spec.as_ref().map(|s| (i, s)))
        };
        if hashed().next().is_none() {
            return Err(invalid(
                features_path,
                "every feature is ignored, so every CLK would be all zeros",
            ));
        }
        if let Some((i, _)) = hashed().find(|(_, s)| s.hash == HashKind::Blake) {
            if !self.l.is_power_of_two() {
                return Err(invalid(
                    config.path_of("l"),
                    format!(
                        "must be a power of two because features[{i}] uses blakeHash \
                         (clkhash would fail when encoding)"
                    ),
                ));
            }
            if self.kdf.key_size > 64 {
                return Err(invalid(
                    kdf.path_of("keySize"),
                    format!(
                        "must be at most 64 because features[{i}] uses blakeHash, whose key \
                         is at most 64 bytes (clkhash would fail when encoding)"
                    ),
                ));
            }
        }
        if let Some((i, _)) = hashed().find(|(_, s)| {
            s.hash
                == HashKind::Double {
                    prevent_singularity: true,
                }
        }) && self.filter_bits() < 2
        {
            return Err(invalid(
                config.path_of("l"),
                format!(
                    "features[{i}] sets prevent_singularity, which cannot succeed with a \
                     1-bit filter (clkhash would loop until it fails)"
                ),
            ));
        }
        let (hash_name, hash_len) = match self.kdf.hash {
            KdfHash::Sha256 => ("SHA256", 32),
            KdfHash::Sha512 => ("SHA512", 64),
        };
        let needed = 2 * self.features.len() * self.kdf.key_size;
        if needed > 255 * hash_len {
            return Err(invalid(
                kdf.path_of("keySize"),
                format!(
                    "{} features need 2 × {} × {} = {needed} bytes of keys, more than \
                     HKDF-{hash_name} can derive ({}); use a smaller keySize{}",
                    self.features.len(),
                    self.features.len(),
                    self.kdf.key_size,
                    255 * hash_len,
                    if self.kdf.hash == KdfHash::Sha256 {
                        " or hash SHA512"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }
}

fn parse_version(root: &Obj<'_>) -> Result<(), SchemaError> {
    let path = root.path_of("version");
    match root.required("version")? {
        Value::Number(n) if n.as_u64() == Some(3) => Ok(()),
        Value::Number(n) => Err(invalid(
            path,
            format!(
                "linkage schema version {n} is not supported, only version 3 (clkhash's \
                 convert_to_latest_version upgrades v1 and v2 schemas)"
            ),
        )),
        other => Err(invalid(
            path,
            format!("must be the number 3, found {}", kind(other)),
        )),
    }
}

fn parse_kdf(kdf: &Obj<'_>) -> Result<KdfConfig, SchemaError> {
    kdf.only_keys(&["type", "hash", "salt", "info", "keySize"])?;
    let kdf_type = kdf.required_str("type")?;
    if kdf_type != "HKDF" {
        return Err(invalid(
            kdf.path_of("type"),
            format!(
                "unsupported key derivation {kdf_type:?}; linkage schema v3 allows only \"HKDF\""
            ),
        ));
    }
    let hash = match kdf.str("hash")? {
        None | Some("SHA256") => KdfHash::Sha256,
        Some("SHA512") => KdfHash::Sha512,
        Some(other) => {
            return Err(invalid(
                kdf.path_of("hash"),
                format!("unsupported hash {other:?}; expected \"SHA256\" or \"SHA512\""),
            ));
        }
    };
    let base64 = |key: &str| -> Result<Option<Vec<u8>>, SchemaError> {
        kdf.str(key)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| {
                        invalid(
                            kdf.path_of(key),
                            format!("is not standard base64 with padding: {e}"),
                        )
                    })
            })
            .transpose()
    };
    let salt = base64("salt")?;
    let info = base64("info")?.unwrap_or_default();
    // The upper bound only keeps the arithmetic small; HKDF's own limit is checked later.
    let key_size = kdf.integer("keySize", 1, 1 << 16)?.unwrap_or(64) as usize;
    Ok(KdfConfig {
        hash,
        salt,
        info,
        key_size,
    })
}

fn parse_feature(obj: &Obj<'_>) -> Result<Feature, SchemaError> {
    obj.only_keys(&["identifier", "description", "ignored", "format", "hashing"])?;
    let identifier = obj.required_str("identifier")?.to_owned();
    obj.str("description")?;
    let ignored = obj.bool("ignored")?.unwrap_or(false);
    let format = obj.object("format")?;
    let hashing = obj.object("hashing")?;
    if ignored {
        // clkhash's schema has two shapes for this: {identifier, ignored: true} and a full
        // feature that happens to say `ignored: true`. The second is still checked, so that
        // flipping `ignored` back cannot reveal a broken definition.
        return match (format, hashing) {
            (None, None) => Ok(Feature {
                identifier,
                spec: None,
            }),
            (Some(format), Some(hashing)) => {
                parse_spec(&format, &hashing)?;
                Ok(Feature {
                    identifier,
                    spec: None,
                })
            }
            _ => Err(invalid(
                obj.path.clone(),
                "an ignored feature has both \"format\" and \"hashing\" or neither",
            )),
        };
    }
    let (Some(format), Some(hashing)) = (format, hashing) else {
        let missing = if obj.get("format").is_none() {
            "format"
        } else {
            "hashing"
        };
        return Err(invalid(
            obj.path.clone(),
            format!(
                "missing required key {missing:?} (a feature that is not hashed needs \
                 \"ignored\": true)"
            ),
        ));
    };
    Ok(Feature {
        identifier,
        spec: Some(parse_spec(&format, &hashing)?),
    })
}

fn parse_spec(format_obj: &Obj<'_>, hashing: &Obj<'_>) -> Result<FeatureSpec, SchemaError> {
    let format = parse_format(format_obj)?;
    hashing.only_keys(&["comparison", "strategy", "hash", "missingValue"])?;
    let comparison = parse_comparison(&hashing.required_object("comparison")?)?;
    let strategy = parse_strategy(&hashing.required_object("strategy")?)?;
    let hash = match hashing.object("hash")? {
        None => HashKind::Blake,
        Some(hash) => parse_hash(&hash)?,
    };
    let missing = match hashing.object("missingValue")? {
        None => None,
        Some(mv) => {
            mv.only_keys(&["sentinel", "replaceWith"])?;
            let sentinel = mv.required_str("sentinel")?.to_owned();
            let replace_with = mv
                .str("replaceWith")?
                .map_or_else(|| sentinel.clone(), str::to_owned);
            if matches!(&format, Format::String(StringFormat { ascii: true, .. }))
                && !replace_with.is_ascii()
            {
                return Err(invalid(
                    mv.path_of(if mv.get("replaceWith").is_some() {
                        "replaceWith"
                    } else {
                        "sentinel"
                    }),
                    "must be ASCII because the format's encoding is ascii (clkhash would fail \
                     to encode it)",
                ));
            }
            Some(MissingValue {
                sentinel,
                replace_with,
            })
        }
    };
    Ok(FeatureSpec {
        format,
        comparison,
        strategy,
        hash,
        missing,
    })
}

fn parse_format(obj: &Obj<'_>) -> Result<Format, SchemaError> {
    match obj.required_str("type")? {
        "string" => {
            obj.only_keys(&[
                "type",
                "encoding",
                "case",
                "minLength",
                "maxLength",
                "pattern",
                "description",
            ])?;
            obj.str("description")?;
            let ascii = match obj.str("encoding")? {
                None | Some("utf-8") => false,
                Some("ascii") => true,
                Some(e @ ("utf-16" | "utf-32")) => {
                    return Err(invalid(
                        obj.path_of("encoding"),
                        format!(
                            "{e:?} is not supported: clkhash hashes Python's {e} bytes, which \
                             start with a byte-order mark and follow the machine's byte order; \
                             use \"utf-8\""
                        ),
                    ));
                }
                Some(other) => {
                    return Err(invalid(
                        obj.path_of("encoding"),
                        format!("unknown encoding {other:?}; expected \"utf-8\" or \"ascii\""),
                    ));
                }
            };
            let rule = match obj.str("pattern")? {
                Some(pattern) => {
                    if let Some(key) = ["case", "minLength", "maxLength"]
                        .into_iter()
                        .find(|k| obj.get(k).is_some())
                    {
                        return Err(invalid(
                            obj.path_of(key),
                            "cannot be combined with \"pattern\" (clkhash's schema allows a \
                             pattern or case/minLength/maxLength, not both)",
                        ));
                    }
                    StringRule::Pattern {
                        regex: compile_pattern(pattern)
                            .map_err(|e| invalid(obj.path_of("pattern"), e))?,
                        source: pattern.to_owned(),
                    }
                }
                None => {
                    let case = match obj.str("case")? {
                        None | Some("mixed") => Case::Mixed,
                        Some("upper") => Case::Upper,
                        Some("lower") => Case::Lower,
                        Some(other) => {
                            return Err(invalid(
                                obj.path_of("case"),
                                format!(
                                    "unknown case {other:?}; expected \"upper\", \"lower\" or \
                                     \"mixed\""
                                ),
                            ));
                        }
                    };
                    let min_length = obj.integer("minLength", 0, i128::from(u32::MAX))?;
                    let max_length = obj.integer("maxLength", 1, i128::from(u32::MAX))?;
                    if let (Some(min), Some(max)) = (min_length, max_length)
                        && min > max
                    {
                        return Err(invalid(
                            obj.path_of("minLength"),
                            format!("{min} exceeds maxLength {max}: no value could be valid"),
                        ));
                    }
                    StringRule::Plain {
                        case,
                        min_length: min_length.map(|v| v as u64),
                        max_length: max_length.map(|v| v as u64),
                    }
                }
            };
            Ok(Format::String(StringFormat { ascii, rule }))
        }
        "integer" => {
            obj.only_keys(&["type", "minimum", "maximum", "description"])?;
            obj.str("description")?;
            let minimum = obj.integer("minimum", i128::MIN, i128::MAX)?;
            let maximum = obj.integer("maximum", i128::MIN, i128::MAX)?;
            if let (Some(min), Some(max)) = (minimum, maximum)
                && min > max
            {
                return Err(invalid(
                    obj.path_of("minimum"),
                    format!("{min} exceeds maximum {max}: no value could be valid"),
                ));
            }
            Ok(Format::Integer { minimum, maximum })
        }
        "date" => {
            obj.only_keys(&["type", "format", "description"])?;
            obj.str("description")?;
            let source = obj.required_str("format")?;
            let format =
                DateFormat::compile(source).map_err(|e| invalid(obj.path_of("format"), e))?;
            Ok(Format::Date {
                format,
                source: source.to_owned(),
            })
        }
        "enum" => {
            obj.only_keys(&["type", "values", "description"])?;
            obj.str("description")?;
            let path = obj.path_of("values");
            let Value::Array(items) = obj.required("values")? else {
                return Err(invalid(path, "must be an array of strings"));
            };
            if items.is_empty() {
                return Err(invalid(path, "must not be empty: no value could be valid"));
            }
            let values = items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(
                        format!("{path}[{i}]"),
                        format!("must be a string, found {}", kind(other)),
                    )),
                })
                .collect::<Result<HashSet<String>, _>>()?;
            Ok(Format::Enum(values))
        }
        other => Err(invalid(
            obj.path_of("type"),
            format!(
                "unknown format type {other:?}; expected \"string\", \"integer\", \"date\" or \
                 \"enum\""
            ),
        )),
    }
}

/// Compiles a `pattern` for full matching.
///
/// clkhash uses Python's `re.fullmatch`; this uses the `regex` crate. For the syntax both
/// share (classes, alternation, repetition, groups, anchors, `\d \w \s`, inline flags) a value
/// matches in both or in neither. What differs: look-around and backreferences do not compile
/// here (the schema is rejected, never a value misjudged); `\s` lacks U+001C..=U+001F and `\d`,
/// `\w` and case-insensitive matching follow a newer Unicode version than Python 3.11's.
fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    // Compiling the pattern on its own first rejects unbalanced input such as `a)|(b`, which
    // would otherwise escape the anchoring group below and change the meaning.
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!(r"\A(?:{pattern})\z")))
        .map_err(|e| format!("is not a regular expression this encoder supports: {e}"))
}

fn parse_comparison(obj: &Obj<'_>) -> Result<Comparison, SchemaError> {
    match obj.required_str("type")? {
        "ngram" => {
            obj.only_keys(&["type", "n", "positional"])?;
            let n = obj.required_integer("n", 1, MAX_NGRAM_N)? as usize;
            let positional = obj.bool("positional")?.unwrap_or(false);
            Ok(Comparison::Ngram { n, positional })
        }
        "exact" => {
            obj.only_keys(&["type"])?;
            Ok(Comparison::Exact)
        }
        "numeric" => {
            obj.only_keys(&[
                "type",
                "thresholdDistance",
                "resolution",
                "fractional_precision",
            ])?;
            let resolution = obj.required_integer("resolution", 1, MAX_RESOLUTION)? as u32;
            let fractional_precision = obj
                .integer("fractional_precision", 0, MAX_FRACTIONAL_PRECISION)?
                .unwrap_or(0) as u32;
            let distance_interval = distance_interval(obj, fractional_precision)?;
            Ok(Comparison::Numeric(NumericParams {
                distance_interval,
                resolution,
                fractional_precision,
            }))
        }
        other => Err(invalid(
            obj.path_of("type"),
            format!("unknown comparison {other:?}; expected \"ngram\", \"exact\" or \"numeric\""),
        )),
    }
}

/// clkhash's `int(round(thresholdDistance * 10**fractional_precision))`: exact integer
/// arithmetic for an integer threshold, IEEE doubles (with Python's round-half-even) for a
/// fractional one. (serde_json parses short decimals such as `2.5` or `0.1` exactly as Python
/// does; it may differ in the last bit for literals with more than 19 significant digits.)
fn distance_interval(obj: &Obj<'_>, fractional_precision: u32) -> Result<i128, SchemaError> {
    let path = obj.path_of("thresholdDistance");
    let threshold = match obj.required("thresholdDistance")? {
        Value::Number(n) => n,
        other => {
            return Err(invalid(
                path,
                format!("must be a number, found {}", kind(other)),
            ));
        }
    };
    let too_big = || {
        invalid(
            path.clone(),
            "thresholdDistance × 10^fractional_precision must be at most 2^53",
        )
    };
    let scale = 10i128.pow(fractional_precision);
    let interval = if let Some(t) = integer_of(threshold) {
        if t <= 0 {
            return Err(invalid(path, "must be greater than 0"));
        }
        t.checked_mul(scale).ok_or_else(too_big)?
    } else {
        let t = threshold.as_f64().unwrap_or(f64::NAN);
        if !(t > 0.0 && t.is_finite()) {
            return Err(invalid(path, "must be a finite number greater than 0"));
        }
        let factor: f64 = format!("1e{fractional_precision}")
            .parse()
            .unwrap_or(f64::INFINITY);
        let scaled = (t * factor).round_ties_even();
        if scaled > 2f64.powi(53) {
            return Err(too_big());
        }
        scaled as i128
    };
    if interval == 0 {
        return Err(invalid(
            path,
            "rounds to 0 at this fractional_precision (clkhash: not enough fractional \
             precision to encode threshold_distance); increase fractional_precision",
        ));
    }
    if interval > 1 << 53 {
        return Err(too_big());
    }
    Ok(interval)
}

fn parse_strategy(obj: &Obj<'_>) -> Result<Strategy, SchemaError> {
    obj.only_keys(&["bitsPerToken", "bitsPerFeature"])?;
    let per_token = obj.integer("bitsPerToken", 1, MAX_BITS)?;
    let per_feature = obj.integer("bitsPerFeature", 1, MAX_BITS)?;
    match (per_token, per_feature) {
        (Some(k), None) => Ok(Strategy::BitsPerToken(k as u32)),
        (None, Some(b)) => Ok(Strategy::BitsPerFeature(b as u32)),
        (Some(_), Some(_)) => Err(invalid(
            obj.path.clone(),
            "set either \"bitsPerToken\" or \"bitsPerFeature\", not both",
        )),
        (None, None) => Err(invalid(
            obj.path.clone(),
            "missing \"bitsPerToken\" or \"bitsPerFeature\"",
        )),
    }
}

fn parse_hash(obj: &Obj<'_>) -> Result<HashKind, SchemaError> {
    match obj.required_str("type")? {
        "doubleHash" => {
            obj.only_keys(&["type", "prevent_singularity"])?;
            Ok(HashKind::Double {
                prevent_singularity: obj.bool("prevent_singularity")?.unwrap_or(false),
            })
        }
        "blakeHash" => {
            if obj.get("prevent_singularity").is_some() {
                return Err(invalid(
                    obj.path_of("prevent_singularity"),
                    "applies only to doubleHash (clkhash rejects it with blakeHash)",
                ));
            }
            obj.only_keys(&["type"])?;
            Ok(HashKind::Blake)
        }
        other => Err(invalid(
            obj.path_of("type"),
            format!("unknown hash {other:?}; expected \"blakeHash\" or \"doubleHash\""),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Path-aware access to JSON objects.

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    let path = path.into();
    SchemaError::Invalid {
        path: if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path
        },
        message: message.into(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value of a JSON integer literal (`3`, not `3.0`), as JSON Schema's "integer" and
/// Python's `int` see it.
fn integer_of(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Why a key is unknown, when we can guess: clkhash's own spelling traps first, then any
/// allowed key that differs only in case and underscores.
fn unknown_key_hint(key: &str, allowed: &[&str]) -> String {
    let special = match key {
        "xorFolds" => Some(
            "clkhash 0.18.3 accepts \"xorFolds\" (the v3 documentation's spelling) but reads \
             \"xor_folds\", so it would silently not fold; write \"xor_folds\"",
        ),
        "fractionalPrecision" => Some(
            "clkhash reads \"fractional_precision\" and would silently ignore \
             \"fractionalPrecision\"",
        ),
        "preventSingularity" => Some(
            "clkhash reads \"prevent_singularity\" and would silently ignore \
             \"preventSingularity\"",
        ),
        "k" | "numBits" | "weight" | "ngram" | "positional" => Some(
            "this is linkage schema v1/v2 syntax; v3 uses comparison {type, n, positional} and \
             strategy {bitsPerToken | bitsPerFeature}",
        ),
        _ => None,
    };
    if let Some(text) = special {
        return text.to_owned();
    }
    let squash = |s: &str| s.replace('_', "").to_lowercase();
    match allowed.iter().find(|a| squash(a) == squash(key)) {
        Some(similar) => format!("did you mean {similar:?}?"),
        None => format!("allowed here: {}", allowed.join(", ")),
    }
}

struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: String) -> Result<Obj<'a>, SchemaError> {
        match value {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(invalid(
                path,
                format!("must be an object, found {}", kind(other)),
            )),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn only_keys(&self, allowed: &[&str]) -> Result<(), SchemaError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => Err(invalid(
                self.path_of(key),
                format!("unknown key {key:?}: {}", unknown_key_hint(key, allowed)),
            )),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn required(&self, key: &str) -> Result<&'a Value, SchemaError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, SchemaError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(
                self.path_of(key),
                format!("must be a string, found {}", kind(other)),
            )),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str, SchemaError> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> SchemaError {
        invalid(self.path.clone(), format!("missing required key {key:?}"))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, SchemaError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(
                self.path_of(key),
                format!("must be true or false, found {}", kind(other)),
            )),
        }
    }

    /// An optional integer in `min..=max`.
    fn integer(&self, key: &str, min: i128, max: i128) -> Result<Option<i128>, SchemaError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => integer_of(n).ok_or_else(|| {
                invalid(self.path_of(key), format!("must be an integer, found {n}"))
            }),
            other => Err(invalid(
                self.path_of(key),
                format!("must be an integer, found {}", kind(other)),
            )),
        }?;
        if n < min {
            return Err(invalid(
                self.path_of(key),
                format!("must be at least {min}, found {n}"),
            ));
        }
        if n > max {
            return Err(invalid(
                self.path_of(key),
                format!("must be at most {max}, found {n}"),
            ));
        }
        Ok(Some(n))
    }

    fn required_integer(&self, key: &str, min: i128, max: i128) -> Result<i128, SchemaError> {
        self.integer(key, min, max)?
            .ok_or_else(|| self.missing(key))
    }

    fn object(&self, key: &str) -> Result<Option<Obj<'a>>, SchemaError> {
        self.get(key)
            .map(|v| Obj::new(v, self.path_of(key)))
            .transpose()
    }

    fn required_object(&self, key: &str) -> Result<Obj<'a>, SchemaError> {
        Obj::new(self.required(key)?, self.path_of(key))
    }
}
