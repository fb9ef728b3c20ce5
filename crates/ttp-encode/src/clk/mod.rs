//! CLKs exactly as Data61/CSIRO's clkhash 0.18.3 makes them (linkage schema v3).
//!
//! A *cryptographic long-term key* (CLK) is one Bloom filter per record into which every
//! identifying feature (name, birth date, ...) is hashed with secret keys. Records of the same
//! person share most bits even when a name is misspelt, so a linkage unit can compare CLKs
//! (Dice coefficient) without seeing names. This only works if every site encodes
//! *bit-for-bit* like every other, hence like clkhash, the reference implementation of the
//! anonlink ecosystem.
//!
//! # Pipeline
//! For each record, with one string value per schema feature (the private submodules named
//! in parentheses implement each stage and document clkhash's exact behaviour):
//!
//! 1. **Keys** (once, in [`ClkEncoder::new`]): HKDF over the secret gives two keys per
//!    feature, ignored features included (`hash`).
//! 2. **Validate and render** each value per its `format` (`format`, `strptime`, `pynum`):
//!    a `missingValue` sentinel becomes its replacement; dates become `%Y%m%d`, integers
//!    `str(int(v))`; nothing is normalised.
//! 3. **Tokenise** per `comparison` (`tokens`): n-grams over code points, the exact value,
//!    or numeric neighbourhoods.
//! 4. **k per token** per `strategy` (`bitsPerToken`, or `bitsPerFeature` spread over
//!    tokens).
//! 5. **Positions** per `hash` (`hash`, remembered by `table`): HMAC-SHA1/MD5 double
//!    hashing or keyed BLAKE2b.
//! 6. **Filter**: set the positions in an `l · 2^xor_folds`-bit filter, XOR-fold
//!    `xor_folds` times, serialise most significant bit first (`bits`).
//!
//! ```
//! use ttp_encode::Secret;
//! use ttp_encode::clk::{ClkEncoder, ClkSchema, to_base64};
//!
//! let schema = ClkSchema::from_json(r#"{
//!   "version": 3,
//!   "clkConfig": {"l": 64, "kdf": {"type": "HKDF"}},
//!   "features": [
//!     {"identifier": "id", "ignored": true},
//!     {"identifier": "name", "format": {"type": "string"},
//!      "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 5}}}
//!   ]
//! }"#)?;
//! assert_eq!(schema.feature_names(), ["id", "name"]);
//! let encoder = ClkEncoder::new(&schema, &Secret::from_text("synthetic test secret"));
//! let clk = encoder.encode(&["17", "ANNA"])?;
//! assert_eq!(clk.len(), 8);
//! assert_ne!(clk, encoder.encode(&["17", "ANNE"])?);
//! let _for_json = to_base64(&clk);
//! // An empty string is a valid `string` value; it just contributes no tokens.
//! assert!(encoder.encode(&["17", ""]).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Speed
//! Hashing dominates. Keys are derived and hash states keyed once per feature; per token the
//! encoder clones a keyed state and hashes a byte slice, with no allocation (`hash`). On top
//! of that, the hash results of common tokens (name bigrams, positional date digits, enum
//! values) are remembered in lock-free per-feature tables whose key space comes from the
//! schema, not from the data (`table`). On one core of the development machine this encodes
//! roughly 800,000 records/s with either vector schema and typical names (clkhash: 20–25k);
//! tokens outside the tables (e.g. CJK names) cost about 0.4 µs (doubleHash) or 0.15 µs
//! (blakeHash) each.
//!
//! # Patient data
//! Values are IDAT. [`ValueError`] says *why* a value was rejected but never contains it; the
//! trace types redact values, tokens and keys in `Debug`.

mod bits;
mod format;
mod hash;
mod pynum;
mod schema;
mod strptime;
mod table;
mod tokens;

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::Secret;
use bits::Bits;
use hash::{KeyedHash, Modulus};
use schema::FeatureSpec;
use table::TokenTable;
use tokens::Scratch;

pub use schema::{ClkSchema, MAX_FILTER_BITS, SchemaError};

/// A value of a record could not be encoded.
///
/// `reason` completes the sentence "value N (feature) ...", e.g. "does not match date format
/// %Y-%m-%d". It never contains the value: values are patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Position of the value in the record (= feature position in the schema), from 0.
    pub index: usize,
    /// The feature's identifier; empty for a value beyond the schema's features.
    pub feature: String,
    pub reason: String,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.feature.is_empty() {
            write!(f, "value {} {}", self.index, self.reason)
        } else {
            write!(f, "value {} ({}) {}", self.index, self.feature, self.reason)
        }
    }
}

impl std::error::Error for ValueError {}

/// Encodes records into CLKs for one schema and secret. Cheap to share: `Send + Sync`, and
/// [`ClkEncoder::encode`] takes `&self`, so one encoder serves all threads.
pub struct ClkEncoder {
    schema: ClkSchema,
    /// One per feature; `None` for ignored features.
    hashers: Vec<Option<HashedFeature>>,
    /// All derived keys, kept for [`ClkEncoder::encode_traced`].
    keys: Zeroizing<Vec<u8>>,
    modulus: Modulus,
}

// The CLI encodes in parallel; keep this a compile-time guarantee.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClkEncoder>();
};

impl fmt::Debug for ClkEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClkEncoder")
            .field("features", &self.schema.feature_names())
            .field("l", &self.schema.l)
            .field("xor_folds", &self.schema.xor_folds)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl ClkEncoder {
    /// Derives the keys and keys the hash functions. The secret is used as given (clkhash
    /// encodes a text secret as UTF-8; pass those bytes).
    pub fn new(schema: &ClkSchema, secret: &Secret) -> ClkEncoder {
        let key_size = schema.kdf.key_size;
        let keys = hash::derive_keys(&schema.kdf, secret.expose(), schema.features.len());
        let hashers = schema
            .features
            .iter()
            .enumerate()
            .map(|(i, feature)| {
                feature.spec.as_ref().map(|spec| {
                    let key0 = &keys[2 * i * key_size..(2 * i + 1) * key_size];
                    let key1 = &keys[(2 * i + 1) * key_size..(2 * i + 2) * key_size];
                    HashedFeature {
                        hash: KeyedHash::new(spec.hash, key0, key1, spec.strategy.max_k()),
                        table: TokenTable::for_feature(spec),
                    }
                })
            })
            .collect();
        ClkEncoder {
            schema: schema.clone(),
            hashers,
            keys,
            modulus: Modulus::new(schema.filter_bits()),
        }
    }

    /// The schema this encoder was built for.
    pub fn schema(&self) -> &ClkSchema {
        &self.schema
    }

    /// Encodes one record: `values` holds one value per feature in schema order (ignored
    /// features' values are accepted and not used). Returns the CLK, `ceil(l / 8)` bytes.
    pub fn encode(&self, values: &[&str]) -> Result<Vec<u8>, ValueError> {
        self.encode_with(values, &mut NoTrace)
    }

    /// [`ClkEncoder::encode`] that also records every intermediate stage, for tests that check
    /// an implementation stage by stage. Not for production: the trace holds keys and values.
    #[doc(hidden)]
    pub fn encode_traced(&self, values: &[&str]) -> Result<ClkTrace, ValueError> {
        let mut tracer = Tracer {
            encoder: self,
            fields: Vec::new(),
        };
        let clk = self.encode_with(values, &mut tracer)?;
        Ok(ClkTrace {
            fields: tracer.fields,
            clk,
        })
    }

    fn encode_with<O: Observer>(
        &self,
        values: &[&str],
        observer: &mut O,
    ) -> Result<Vec<u8>, ValueError> {
        let features = &self.schema.features;
        if values.len() != features.len() {
            return Err(self.count_error(values.len()));
        }
        let mut bits = Bits::zeros(self.schema.filter_bits());
        let mut scratch = Scratch::default();
        for (index, ((feature, hasher), value)) in
            features.iter().zip(&self.hashers).zip(values).enumerate()
        {
            let (Some(spec), Some(hasher)) = (&feature.spec, hasher) else {
                observer.field(index, None);
                continue;
            };
            let error = |reason| ValueError {
                index,
                feature: feature.identifier.clone(),
                reason,
            };
            let rendered = render(spec, value).map_err(error)?;
            observer.field(index, Some(&rendered));
            let count = spec.comparison.token_count(&rendered);
            spec.comparison
                .for_each_token(&rendered, &mut scratch, |j, token| {
                    let k = spec.strategy.k(j, count);
                    if O::ACTIVE {
                        let mut positions = Vec::with_capacity(k as usize);
                        hasher.positions(token, k, self.modulus, |p| {
                            bits.set(p);
                            positions.push(p);
                        });
                        observer.token(token, k, positions);
                    } else {
                        hasher.positions(token, k, self.modulus, |p| bits.set(p));
                    }
                })
                .map_err(error)?;
        }
        for _ in 0..self.schema.xor_folds {
            bits.fold();
        }
        Ok(bits.to_bytes())
    }

    fn count_error(&self, got: usize) -> ValueError {
        let features = &self.schema.features;
        let summary = format!(
            "(the record has {got} values, the schema {} features)",
            features.len()
        );
        match features.get(got) {
            Some(missing) => ValueError {
                index: got,
                feature: missing.identifier.clone(),
                reason: format!("is missing {summary}"),
            },
            None => ValueError {
                index: features.len(),
                feature: String::new(),
                reason: format!("has no feature in the schema {summary}"),
            },
        }
    }
}

/// A feature's keyed hash and its remembered token hashes.
struct HashedFeature {
    hash: KeyedHash,
    table: Option<TokenTable>,
}

impl HashedFeature {
    #[inline]
    fn positions(&self, token: &[u8], k: u32, modulus: Modulus, mut f: impl FnMut(usize)) {
        if let Some(table) = &self.table
            && table.positions(&self.hash, token, k, modulus, &mut f)
        {
            return;
        }
        self.hash.positions(token, k, modulus, f);
    }
}

/// Validates and renders a value, honouring the missing-value sentinel first (clkhash neither
/// validates nor reformats a sentinel: it hashes the replacement as is).
fn render<'a>(spec: &'a FeatureSpec, value: &'a str) -> Result<Cow<'a, str>, String> {
    match &spec.missing {
        Some(missing) if missing.sentinel == value => Ok(Cow::Borrowed(&missing.replace_with)),
        _ => spec.format.render(value),
    }
}

/// Standard base64 with padding: how clkhash and anonlink serialise a CLK (`{"clks": [...]}`).
pub fn to_base64(clk: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(clk)
}

/// Receives the intermediate stages of an encoding. The fast path uses [`NoTrace`], which the
/// compiler removes entirely.
trait Observer {
    const ACTIVE: bool;
    fn field(&mut self, index: usize, rendered: Option<&str>);
    fn token(&mut self, token: &[u8], k: u32, positions: Vec<usize>);
}

struct NoTrace;

impl Observer for NoTrace {
    const ACTIVE: bool = false;
    fn field(&mut self, _: usize, _: Option<&str>) {}
    fn token(&mut self, _: &[u8], _: u32, _: Vec<usize>) {}
}

struct Tracer<'e> {
    encoder: &'e ClkEncoder,
    fields: Vec<FieldTrace>,
}

impl Observer for Tracer<'_> {
    const ACTIVE: bool = true;

    fn field(&mut self, index: usize, rendered: Option<&str>) {
        let e = self.encoder;
        let ks = e.schema.kdf.key_size;
        let key = |n: usize| Secret::new(e.keys[n * ks..(n + 1) * ks].to_vec());
        self.fields.push(FieldTrace {
            feature: e.schema.features[index].identifier.clone(),
            key0: key(2 * index),
            key1: key(2 * index + 1),
            formatted: rendered.map(str::to_owned),
            tokens: Vec::new(),
        });
    }

    fn token(&mut self, token: &[u8], k: u32, positions: Vec<usize>) {
        if let Some(field) = self.fields.last_mut() {
            field.tokens.push(TokenTrace {
                token: String::from_utf8_lossy(token).into_owned(),
                k,
                positions,
            });
        }
    }
}

/// Every stage of one record's encoding (see [`ClkEncoder::encode_traced`]).
#[doc(hidden)]
pub struct ClkTrace {
    /// One per feature, in schema order.
    pub fields: Vec<FieldTrace>,
    pub clk: Vec<u8>,
}

#[doc(hidden)]
pub struct FieldTrace {
    pub feature: String,
    /// HMAC-SHA1 / BLAKE2b key.
    pub key0: Secret,
    /// HMAC-MD5 key (unused by BLAKE2b).
    pub key1: Secret,
    /// The rendered value that was tokenised; `None` for an ignored feature.
    pub formatted: Option<String>,
    pub tokens: Vec<TokenTrace>,
}

#[doc(hidden)]
pub struct TokenTrace {
    pub token: String,
    pub k: u32,
    /// Positions in the unfolded filter, in generation order (duplicates kept).
    pub positions: Vec<usize>,
}

impl fmt::Debug for ClkTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClkTrace")
            .field("fields", &self.fields)
            .field("clk_bytes", &self.clk.len())
            .finish()
    }
}

impl fmt::Debug for FieldTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldTrace")
            .field("feature", &self.feature)
            .field("keys", &"<redacted>")
            .field("formatted", &self.formatted.as_ref().map(|_| "<redacted>"))
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl fmt::Debug for TokenTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTrace")
            .field("token", &"<redacted>")
            .field("k", &self.k)
            .field("positions", &self.positions.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
