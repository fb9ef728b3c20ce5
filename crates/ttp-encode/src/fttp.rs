//! The fTTP record-level Bloom filter of the Mainzelliste fTTP client library
//! (`RandomRecordBloomFilterGenerator`), bit-exact, built for throughput.
//!
//! # The scheme
//!
//! A record is a handful of already-normalised fields (first name, last name, birth date, ...).
//! Every field has its own secret seed; the record has one secret balancing seed.
//!
//! 1. **Vocabulary.** The distinct characters of `vocabulary`, first occurrence first.
//! 2. **Position tables.** For every field, `java.util.Random(field_seed)` draws `k`
//!    positions in `0..L` for every n-gram over the vocabulary, in lexicographic vocabulary order.
//!    The table *is* the hash function: a token sets the `k` positions listed for it.
//! 3. **Tokens.** The value is padded with `n - 1` spaces on each side and cut into n-grams
//!    (`"AB"` → `" A"`, `"AB"`, `"B "`); an n-gram with a character outside the vocabulary is
//!    skipped. An empty value therefore still contributes the all-space n-gram.
//! 4. **Record filter.** All fields set bits in one `L`-bit filter.
//! 5. **Balancing.** The `2L`-bit vector `bits ‖ NOT bits` is shuffled by `2L` swaps
//!    `(i, Random(balanced_seed).nextInt(2L))`. The result always has exactly `L` bits set, which
//!    hides how many tokens a record had.
//! 6. **Serialisation.** Java `BitSet` order (bit `i` is bit `i % 8` of byte `i / 8`), and
//!    always all `ceil(2L / 8)` bytes: the Java library drops trailing zero bytes, which makes
//!    E-PIX score such a filter 0 against every full-length one.
//!
//! # Why it is fast
//!
//! Everything that depends only on the configuration is computed once in [`FttpEncoder::new`]:
//! the position tables, a char → vocabulary-index map (a flat array for ASCII), and the balancing
//! shuffle. The swap sequence depends only on the seed and `L`, so it collapses into a fixed
//! permutation; since exactly one of `bits[i]` and `NOT bits[i]` is set, encoding a record ends
//! with one table lookup and one bit store per original bit instead of `2L` random draws and swaps.
//!
//! Where it costs little memory, each n-gram's `k` positions are also kept as a ready-made
//! `L`-bit mask, so a token ORs `⌈L/64⌉` whole words (which the compiler vectorises) instead of
//! setting `k` scattered bits one read-modify-write at a time. With the usual parameters
//! (`L = 900`, `k = 30`) a mask is 120 bytes, exactly the size of the 30 positions it replaces,
//! and this halves the time of an encoding; see BENCHMARKS.md.
//!
//! # Beyond the library
//!
//! The Java library ignores `nGramLength` and always uses bigrams. This encoder implements general
//! n-grams (n ≤ 3; tables grow as |V|ⁿ) by the same rules, but only `nGramLength = 2` is
//! compatible with sites running the library.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::java_random::JavaRandom;

/// The library's default vocabulary.
pub const DEFAULT_VOCABULARY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ .-0123456789";
/// The library's default (and only supported) n-gram length.
pub const DEFAULT_NGRAM_LENGTH: u32 = 2;
/// The longest n-grams supported: tables hold |V|ⁿ·k positions per field.
pub const MAX_NGRAM_LENGTH: u32 = 3;
/// Upper bound on `length`. Real profiles use hundreds to a few thousand bits; the bound turns
/// a typo (an extra zero or three) into an error instead of a multi-gigabyte allocation, and
/// keeps `2L` within Java's `int`.
pub const MAX_LENGTH: u32 = 1 << 20;
/// Upper bound on positions per field table (64 MiB of `u32`): |V|ⁿ·k.
pub const MAX_TABLE_POSITIONS: u64 = 1 << 24;
/// Largest total size of the n-gram masks (all fields); beyond it `encode` sets positions.
const MAX_MASK_BYTES: usize = 8 << 20;

/// The parameters of an fTTP filter, with the key names of the library's configuration
/// (`length`, `nGramLength`, `randomPositionNumber`, `vocabulary`) and the test vector's
/// `balanced_seed`, `field_seeds` and `field_order`.
///
/// `length` and `randomPositionNumber` have no defaults on purpose: they are agreed with the
/// fTTP per study, and silently falling back to the library's 900/30 would produce filters that
/// never match. Seeds are secrets: `Debug` redacts them, they are wiped on drop, and a
/// malformed seed is reported without echoing it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FttpParams {
    /// `L`, the record filter length in bits (the balanced output has `2L`).
    pub length: u32,
    /// `n`, the n-gram length.
    #[serde(rename = "nGramLength", default = "default_ngram_length")]
    pub n_gram_length: u32,
    /// `k`, the positions drawn per n-gram.
    #[serde(rename = "randomPositionNumber")]
    pub random_position_number: u32,
    /// Characters n-grams are built from; duplicates are ignored (first occurrence counts).
    #[serde(default = "default_vocabulary")]
    pub vocabulary: String,
    /// Seed of the balancing shuffle.
    #[serde(deserialize_with = "seed_serde::seed")]
    pub balanced_seed: i64,
    /// One seed per field.
    #[serde(deserialize_with = "seed_serde::seed_map")]
    pub field_seeds: BTreeMap<String, i64>,
    /// The order in which [`FttpEncoder::encode`] expects values.
    pub field_order: Vec<String>,
}

fn default_ngram_length() -> u32 {
    DEFAULT_NGRAM_LENGTH
}

fn default_vocabulary() -> String {
    DEFAULT_VOCABULARY.to_owned()
}

impl std::fmt::Debug for FttpParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FttpParams")
            .field("length", &self.length)
            .field("n_gram_length", &self.n_gram_length)
            .field("random_position_number", &self.random_position_number)
            .field("vocabulary", &self.vocabulary)
            .field("balanced_seed", &"<redacted>")
            .field(
                "field_seeds",
                &self
                    .field_seeds
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("field_order", &self.field_order)
            .finish()
    }
}

impl Drop for FttpParams {
    fn drop(&mut self) {
        self.balanced_seed.zeroize();
        self.field_seeds.values_mut().for_each(Zeroize::zeroize);
    }
}

/// Why an [`FttpParams`] cannot be turned into an encoder. Messages name the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FttpError {
    #[error("`length` must be at least 1")]
    ZeroLength,
    #[error("`length` is {0}; at most {MAX_LENGTH} bits are supported")]
    LengthTooLarge(u32),
    #[error("`randomPositionNumber` must be at least 1")]
    ZeroPositions,
    #[error(
        "`nGramLength` is {0}; supported are 1 to {MAX_NGRAM_LENGTH} \
         (only 2 is compatible with the Mainzelliste library)"
    )]
    UnsupportedNGramLength(u32),
    #[error("`vocabulary` is empty")]
    EmptyVocabulary,
    #[error(
        "`vocabulary` contains U+{0:04X}, outside the Basic Multilingual Plane; Java splits such \
         characters into two UTF-16 units, which this encoder does not reproduce"
    )]
    NonBmpVocabulary(u32),
    #[error("`field_order` is empty")]
    NoFields,
    #[error("`field_order` lists field `{0}` twice")]
    DuplicateField(String),
    #[error("field `{0}` is in `field_order` but has no seed in `field_seeds`")]
    MissingSeed(String),
    #[error("`field_seeds` has a seed for `{0}`, which is not in `field_order`")]
    UnusedSeed(String),
    #[error(
        "a position table would hold {positions} positions (|vocabulary|^nGramLength × \
         randomPositionNumber); at most {MAX_TABLE_POSITIONS} are supported"
    )]
    TableTooLarge { positions: u64 },
}

/// Sentinel in the ASCII index map: not in the vocabulary.
const NOT_IN_VOCABULARY: u32 = u32::MAX;

/// A ready-to-use fTTP encoder: all tables built, `encode` allocation-light and branch-poor.
///
/// Holds secret-derived tables (the hash functions): `Debug` shows only public parameters and
/// the tables are wiped on drop.
pub struct FttpEncoder {
    /// `L`.
    length: usize,
    /// `n`.
    n: usize,
    /// `k`.
    k: usize,
    /// The distinct vocabulary characters, in table order.
    vocabulary: String,
    /// Number of distinct vocabulary characters, `|V|`.
    vocab_size: u32,
    /// `|V|^(n-1)`: the rolling n-gram code keeps its last `n-1` digits modulo this.
    code_window: u32,
    /// `|V|^n`, the entries per field table.
    entries: usize,
    /// Vocabulary index of the padding space, if the space is in the vocabulary.
    space: Option<u32>,
    /// char → vocabulary index for ASCII; `NOT_IN_VOCABULARY` otherwise.
    ascii_index: [u32; 128],
    /// char → vocabulary index for the rest (empty for ASCII vocabularies).
    other_index: HashMap<char, u32>,
    /// Field tables, flattened: positions of n-gram `g` in field `f` are at
    /// `((f * entries) + g) * k .. + k`.
    positions: Zeroizing<Vec<u32>>,
    /// The same tables as `L`-bit masks (`words` u64 per n-gram, same order), when they are
    /// small enough (see [`mask_tables`]); `None` makes `encode` use `positions`.
    masks: Option<Zeroizing<Vec<u64>>>,
    /// Balancing, precomputed: for original bit `i`, `destinations[2i + b]` is the output
    /// position that ends up set when the bit's value is `b`.
    destinations: Zeroizing<Vec<u32>>,
    field_order: Vec<String>,
}

impl FttpEncoder {
    /// Validates `params` and builds the position tables and the balancing permutation.
    pub fn new(params: &FttpParams) -> Result<FttpEncoder, FttpError> {
        let vocabulary = dedup_vocabulary(&params.vocabulary)?;
        let (length, n, k) = validate_shape(params, vocabulary.len())?;
        validate_fields(params)?;

        let vocab_size = vocabulary.len() as u32;
        let entries = vocabulary.len().pow(n as u32);
        let code_window = vocab_size.pow(n as u32 - 1);

        let mut ascii_index = [NOT_IN_VOCABULARY; 128];
        let mut other_index = HashMap::new();
        for (i, &c) in vocabulary.iter().enumerate() {
            match ascii_slot(c) {
                Some(slot) => ascii_index[slot] = i as u32,
                None => {
                    other_index.insert(c, i as u32);
                }
            }
        }

        let bound = length as i32;
        let mut positions =
            Zeroizing::new(Vec::with_capacity(params.field_order.len() * entries * k));
        for field in &params.field_order {
            // Validated above: every field in `field_order` has a seed.
            let Some(&seed) = params.field_seeds.get(field) else {
                return Err(FttpError::MissingSeed(field.clone()));
            };
            let mut rnd = JavaRandom::new(seed);
            // Entry `g` enumerates n-grams with the first character as the most significant
            // digit, i.e. the library's nested loops (outer loop = first character).
            for _ in 0..entries * k {
                positions.push(rnd.next_int(bound) as u32);
            }
        }

        let masks = mask_tables(&positions, length, k);
        let destinations = balancing_destinations(length, params.balanced_seed);

        Ok(FttpEncoder {
            length,
            n,
            k,
            vocabulary: vocabulary.iter().collect(),
            vocab_size,
            code_window,
            entries,
            space: index_in(&vocabulary, ' '),
            ascii_index,
            other_index,
            positions,
            masks,
            destinations,
            field_order: params.field_order.clone(),
        })
    }

    /// The fields, in the order `encode` expects their values.
    pub fn fields(&self) -> &[String] {
        &self.field_order
    }

    /// `L`, the record filter length; the encoded filter has `2L` bits.
    pub fn length(&self) -> usize {
        self.length
    }

    /// `n`, the n-gram length.
    pub fn n_gram_length(&self) -> usize {
        self.n
    }

    /// `k`, the positions set per n-gram.
    pub fn random_position_number(&self) -> usize {
        self.k
    }

    /// The distinct vocabulary characters in first-occurrence order (what the tables are
    /// built over; duplicates in the configured string make no difference).
    pub fn vocabulary(&self) -> &str {
        &self.vocabulary
    }

    /// The size of every encoded filter: `ceil(2L / 8)` bytes.
    pub fn output_len(&self) -> usize {
        (2 * self.length).div_ceil(8)
    }

    /// Encodes one record. `values[i]` is the *normalised* value of `fields()[i]`.
    ///
    /// Always returns [`output_len`](Self::output_len) bytes, in Java `BitSet` order.
    ///
    /// If `values` is shorter than `fields()`, the missing fields contribute nothing, which is
    /// what the library does for a field absent from its IDAT map (an *empty* value, in contrast,
    /// contributes the all-space n-gram); values beyond `fields()` are ignored. Both are caller
    /// bugs in practice, hence the debug assertion.
    pub fn encode(&self, values: &[&str]) -> Vec<u8> {
        debug_assert_eq!(
            values.len(),
            self.field_order.len(),
            "FttpEncoder::encode: one value per field expected"
        );
        let mut filter = vec![0u64; self.length.div_ceil(64)];
        for (field, value) in values.iter().take(self.field_order.len()).enumerate() {
            self.add_field(field, value, &mut filter);
        }
        self.balance_and_serialise(&filter)
    }

    /// [`encode`](Self::encode), as standard base64 with padding (the wire format).
    pub fn encode_base64(&self, values: &[&str]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.encode(values))
    }

    fn index_of(&self, c: char) -> Option<u32> {
        let idx = match ascii_slot(c) {
            Some(slot) => self.ascii_index[slot],
            None => *self.other_index.get(&c)?,
        };
        (idx != NOT_IN_VOCABULARY).then_some(idx)
    }

    /// Sets the bits of every n-gram of the padded value.
    fn add_field(&self, field: usize, value: &str, filter: &mut [u64]) {
        // A rolling base-|V| code of the last n characters; `run` counts how many consecutive
        // characters were in the vocabulary, so an n-gram is complete once `run >= n`, and an
        // unknown character skips every n-gram it would be part of.
        let mut code = 0u32;
        let mut run = 0usize;
        let padding = std::iter::repeat_n(' ', self.n - 1);
        let padded = padding.clone().chain(value.chars()).chain(padding);
        let words = filter.len();
        let masks = self
            .masks
            .as_ref()
            .map(|m| &m[field * self.entries * words..][..self.entries * words]);
        let table = &self.positions[field * self.entries * self.k..][..self.entries * self.k];
        for c in padded {
            let idx = if c == ' ' {
                self.space
            } else {
                self.index_of(c)
            };
            let Some(idx) = idx else {
                run = 0;
                continue;
            };
            code = (code % self.code_window) * self.vocab_size + idx;
            run += 1;
            if run >= self.n {
                match masks {
                    Some(masks) => {
                        let mask = &masks[code as usize * words..][..words];
                        for (f, m) in filter.iter_mut().zip(mask) {
                            *f |= m;
                        }
                    }
                    None => {
                        for &p in &table[code as usize * self.k..][..self.k] {
                            filter[p as usize >> 6] |= 1 << (p & 63);
                        }
                    }
                }
            }
        }
    }

    fn balance_and_serialise(&self, filter: &[u64]) -> Vec<u8> {
        let mut out = vec![0u64; (2 * self.length).div_ceil(64)];
        for (i, pair) in self.destinations.chunks_exact(2).enumerate() {
            let bit = (filter[i >> 6] >> (i & 63)) & 1;
            let p = pair[bit as usize];
            out[p as usize >> 6] |= 1 << (p & 63);
        }
        let mut bytes = Vec::with_capacity(out.len() * 8);
        for word in &out {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(self.output_len());
        bytes
    }
}

impl std::fmt::Debug for FttpEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FttpEncoder")
            .field("length", &self.length)
            .field("n_gram_length", &self.n)
            .field("random_position_number", &self.k)
            .field("vocabulary_size", &self.vocab_size)
            .field("fields", &self.field_order)
            .field("tables", &"<redacted>")
            .finish()
    }
}

fn ascii_slot(c: char) -> Option<usize> {
    c.is_ascii().then_some(c as usize)
}

fn index_in(vocabulary: &[char], c: char) -> Option<u32> {
    vocabulary.iter().position(|&v| v == c).map(|i| i as u32)
}

/// The distinct characters in first-occurrence order: the library's `LinkedHashMap` keeps the
/// position where a bigram was first inserted, so repeated characters change nothing.
fn dedup_vocabulary(vocabulary: &str) -> Result<Vec<char>, FttpError> {
    let mut seen = HashSet::new();
    let mut distinct = Vec::new();
    for c in vocabulary.chars() {
        if u32::from(c) > 0xFFFF {
            return Err(FttpError::NonBmpVocabulary(u32::from(c)));
        }
        if seen.insert(c) {
            distinct.push(c);
        }
    }
    if distinct.is_empty() {
        return Err(FttpError::EmptyVocabulary);
    }
    Ok(distinct)
}

/// Checks `L`, `n`, `k` and the table size; returns them as `usize`.
fn validate_shape(
    params: &FttpParams,
    vocab_size: usize,
) -> Result<(usize, usize, usize), FttpError> {
    if params.length == 0 {
        return Err(FttpError::ZeroLength);
    }
    if params.length > MAX_LENGTH {
        return Err(FttpError::LengthTooLarge(params.length));
    }
    if params.random_position_number == 0 {
        return Err(FttpError::ZeroPositions);
    }
    if !(1..=MAX_NGRAM_LENGTH).contains(&params.n_gram_length) {
        return Err(FttpError::UnsupportedNGramLength(params.n_gram_length));
    }
    let positions = (vocab_size as u64)
        .checked_pow(params.n_gram_length)
        .and_then(|e| e.checked_mul(u64::from(params.random_position_number)))
        .unwrap_or(u64::MAX);
    if positions > MAX_TABLE_POSITIONS {
        return Err(FttpError::TableTooLarge { positions });
    }
    Ok((
        params.length as usize,
        params.n_gram_length as usize,
        params.random_position_number as usize,
    ))
}

fn validate_fields(params: &FttpParams) -> Result<(), FttpError> {
    if params.field_order.is_empty() {
        return Err(FttpError::NoFields);
    }
    let mut seen = HashSet::new();
    for field in &params.field_order {
        if !seen.insert(field.as_str()) {
            return Err(FttpError::DuplicateField(field.clone()));
        }
        if !params.field_seeds.contains_key(field) {
            return Err(FttpError::MissingSeed(field.clone()));
        }
    }
    if let Some(unused) = params
        .field_seeds
        .keys()
        .find(|k| !seen.contains(k.as_str()))
    {
        return Err(FttpError::UnusedSeed(unused.clone()));
    }
    Ok(())
}

/// The position tables as masks of `⌈L/64⌉` words per n-gram, if a mask is at most twice the
/// size of the `k` positions it replaces and all masks fit in [`MAX_MASK_BYTES`]. A larger
/// mask would cost more memory traffic than the scattered bit stores it saves.
fn mask_tables(positions: &[u32], length: usize, k: usize) -> Option<Zeroizing<Vec<u64>>> {
    let words = length.div_ceil(64);
    let grams = positions.len() / k;
    if words * 8 > 2 * k * 4 || grams.saturating_mul(words * 8) > MAX_MASK_BYTES {
        return None;
    }
    let mut masks = Zeroizing::new(vec![0u64; grams * words]);
    for (mask, gram) in masks.chunks_exact_mut(words).zip(positions.chunks_exact(k)) {
        for &p in gram {
            mask[p as usize >> 6] |= 1 << (p & 63);
        }
    }
    Some(masks)
}

/// Replays the library's `2L` swaps on positions instead of bits.
///
/// `at[p]` tracks which slot of `bits ‖ NOT bits` currently sits at output position `p`; after
/// the swaps, inverting it tells where slot `i` (the bit) and slot `L + i` (its complement) land.
fn balancing_destinations(length: usize, seed: i64) -> Zeroizing<Vec<u32>> {
    let total = 2 * length;
    let mut at: Zeroizing<Vec<u32>> = Zeroizing::new((0..total as u32).collect());
    let mut rnd = JavaRandom::new(seed);
    for i in 0..total {
        let j = rnd.next_int(total as i32) as usize;
        at.swap(i, j);
    }
    let mut landing = Zeroizing::new(vec![0u32; total]);
    for (p, &slot) in at.iter().enumerate() {
        landing[slot as usize] = p as u32;
    }
    let mut destinations = Zeroizing::new(Vec::with_capacity(total));
    for i in 0..length {
        // Bit value 0: the complement slot `L + i` holds the one; value 1: slot `i` does.
        destinations.push(landing[length + i]);
        destinations.push(landing[i]);
    }
    destinations
}

/// Seed deserialisation that never echoes the value: serde's stock "invalid type" errors quote
/// the offending input (`invalid type: string "4874…"`), which for a seed is the secret itself.
/// Both visitors therefore reject every unexpected shape with a fixed message.
pub(crate) mod seed_serde {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

    const NOT_A_SEED: &str = "a seed must be an integer between -2^63 and 2^63-1 \
                              (the value given is not shown)";
    const NOT_A_SEED_MAP: &str = "`field_seeds` must be a table of field name → integer seed \
                                  (the value given is not shown)";

    /// Rejects the listed primitive shapes with `$message`, without looking at the value.
    macro_rules! reject {
        ($message:expr; $($method:ident($ty:ty)),* $(,)?) => {
            $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
                Err(E::custom($message))
            })*
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom($message))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom($message))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom($message))
            }
        };
    }

    /// An `i64` seed, wiped on drop.
    pub(crate) struct Seed(pub(crate) i64);

    impl Drop for Seed {
        fn drop(&mut self) {
            zeroize::Zeroize::zeroize(&mut self.0);
        }
    }

    struct SeedVisitor;

    impl<'de> Visitor<'de> for SeedVisitor {
        type Value = Seed;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer seed")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seed, E> {
            Ok(Seed(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seed, E> {
            i64::try_from(v)
                .map(Seed)
                .map_err(|_| E::custom(NOT_A_SEED))
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Seed, E> {
            i64::try_from(v)
                .map(Seed)
                .map_err(|_| E::custom(NOT_A_SEED))
        }

        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Seed, E> {
            i64::try_from(v)
                .map(Seed)
                .map_err(|_| E::custom(NOT_A_SEED))
        }

        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Seed, A::Error> {
            Err(de::Error::custom(NOT_A_SEED))
        }

        reject!(NOT_A_SEED; visit_bool(bool), visit_f64(f64), visit_char(char),
            visit_str(&str), visit_bytes(&[u8]));
    }

    impl<'de> Deserialize<'de> for Seed {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seed, D::Error> {
            deserializer.deserialize_any(SeedVisitor)
        }
    }

    struct SeedMapVisitor;

    impl<'de> Visitor<'de> for SeedMapVisitor {
        type Value = BTreeMap<String, i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of field name → integer seed")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seeds = BTreeMap::new();
            while let Some((field, seed)) = map.next_entry::<String, Seed>()? {
                seeds.insert(field, seed.0);
            }
            Ok(seeds)
        }

        reject!(NOT_A_SEED_MAP; visit_bool(bool), visit_i64(i64), visit_u64(u64),
            visit_i128(i128), visit_u128(u128), visit_f64(f64), visit_char(char),
            visit_str(&str), visit_bytes(&[u8]));
    }

    pub(crate) fn seed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        Seed::deserialize(deserializer).map(|s| s.0)
    }

    pub(crate) fn seed_map<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, i64>, D::Error> {
        deserializer.deserialize_any(SeedMapVisitor)
    }

    pub(crate) fn optional_seed<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        seed(deserializer).map(Some)
    }

    pub(crate) fn optional_seed_map<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<BTreeMap<String, i64>>, D::Error> {
        seed_map(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(vocabulary: &str, length: u32, k: u32, fields: &[(&str, i64)]) -> FttpParams {
        FttpParams {
            length,
            n_gram_length: 2,
            random_position_number: k,
            vocabulary: vocabulary.to_owned(),
            balanced_seed: 17,
            field_seeds: fields.iter().map(|&(f, s)| (f.to_owned(), s)).collect(),
            field_order: fields.iter().map(|&(f, _)| f.to_owned()).collect(),
        }
    }

    fn ones(bytes: &[u8]) -> u32 {
        bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// The unbalanced filter, for tests that reason about which tokens set bits.
    fn record_filter(enc: &FttpEncoder, values: &[&str]) -> Vec<u64> {
        let mut filter = vec![0u64; enc.length.div_ceil(64)];
        for (f, v) in values.iter().enumerate() {
            enc.add_field(f, v, &mut filter);
        }
        filter
    }

    /// The table entry of a bigram, straight from the definition (outer loop = first char).
    fn bigram_positions(enc: &FttpEncoder, field: usize, a: char, b: char) -> Vec<u32> {
        let g = (enc.index_of(a).unwrap() * enc.vocab_size + enc.index_of(b).unwrap()) as usize;
        let start = (field * enc.entries + g) * enc.k;
        enc.positions[start..start + enc.k].to_vec()
    }

    fn filter_of_bigrams(enc: &FttpEncoder, bigrams: &[(char, char)]) -> Vec<u64> {
        let mut filter = vec![0u64; enc.length.div_ceil(64)];
        for &(a, b) in bigrams {
            for p in bigram_positions(enc, 0, a, b) {
                filter[p as usize / 64] |= 1 << (p % 64);
            }
        }
        filter
    }

    #[test]
    fn masks_and_scattered_positions_encode_alike() {
        let fields = [("a", 11), ("b", 12), ("c", 13)];
        // L = 900, k = 30 (the usual parameters): a mask is as large as its 30 positions.
        let mut enc = FttpEncoder::new(&params(DEFAULT_VOCABULARY, 900, 30, &fields)).unwrap();
        assert!(enc.masks.is_some());
        let values = [
            ["ANNA", "MUELLER", "19850314"],
            ["", "X-Y  Z", "0"],
            ["KARL HEINZ", "ÄÖ", "1"],
        ];
        let with: Vec<Vec<u8>> = values.iter().map(|v| enc.encode(v)).collect();
        assert_ne!(with[0], with[1]);
        enc.masks = None;
        let without: Vec<Vec<u8>> = values.iter().map(|v| enc.encode(v)).collect();
        assert_eq!(with, without);
        // A long filter with few positions per n-gram keeps setting single bits.
        let sparse = FttpEncoder::new(&params(DEFAULT_VOCABULARY, 4096, 2, &fields)).unwrap();
        assert!(sparse.masks.is_none());
    }

    #[test]
    fn position_table_draws_follow_the_library_loop_order() {
        let enc = FttpEncoder::new(&params("AB", 50, 3, &[("f", 99)])).unwrap();
        // Bigrams in order AA, AB, BA, BB, each drawing 3 positions from Random(99).
        let mut rnd = JavaRandom::new(99);
        let expected: Vec<u32> = (0..12).map(|_| rnd.next_int(50) as u32).collect();
        let table: Vec<u32> = [('A', 'A'), ('A', 'B'), ('B', 'A'), ('B', 'B')]
            .iter()
            .flat_map(|&(a, b)| bigram_positions(&enc, 0, a, b))
            .collect();
        assert_eq!(table, expected);
    }

    #[test]
    fn vocabulary_dedup_keeps_first_occurrence() {
        let dup = FttpEncoder::new(&params("ABAC B", 64, 4, &[("f", 5)])).unwrap();
        let plain = FttpEncoder::new(&params("ABC ", 64, 4, &[("f", 5)])).unwrap();
        assert_eq!(dup.vocab_size, 4);
        assert_eq!(dup.vocabulary(), "ABC ");
        assert_eq!(dup.positions, plain.positions);
        assert_eq!(dup.encode(&["CAB"]), plain.encode(&["CAB"]));
        // A different first-occurrence order assigns the draws to different n-grams.
        let reordered = FttpEncoder::new(&params("BAC ", 64, 4, &[("f", 5)])).unwrap();
        assert_ne!(reordered.encode(&["CAB"]), plain.encode(&["CAB"]));
    }

    #[test]
    fn tokens_are_padded_bigrams() {
        let enc = FttpEncoder::new(&params("AB ", 200, 5, &[("f", 1)])).unwrap();
        assert_eq!(
            record_filter(&enc, &["AB"]),
            filter_of_bigrams(&enc, &[(' ', 'A'), ('A', 'B'), ('B', ' ')])
        );
        // An empty value still contributes the all-space bigram, as in the library.
        assert_eq!(
            record_filter(&enc, &[""]),
            filter_of_bigrams(&enc, &[(' ', ' ')])
        );
    }

    #[test]
    fn bigrams_with_characters_outside_the_vocabulary_are_skipped() {
        let enc = FttpEncoder::new(&params("AB ", 200, 5, &[("f", 1)])).unwrap();
        // "AxB": " A", "Ax" (skipped), "xB" (skipped), "B ".
        assert_eq!(
            record_filter(&enc, &["AxB"]),
            filter_of_bigrams(&enc, &[(' ', 'A'), ('B', ' ')])
        );
        // Non-ASCII characters take the other lookup path and are skipped the same way.
        assert_eq!(record_filter(&enc, &["AéB"]), record_filter(&enc, &["AxB"]));
        // Without a space in the vocabulary the padding bigrams are skipped too.
        let no_space = FttpEncoder::new(&params("AB", 200, 5, &[("f", 1)])).unwrap();
        assert_eq!(
            record_filter(&no_space, &["AB"]),
            filter_of_bigrams(&no_space, &[('A', 'B')])
        );
    }

    #[test]
    fn non_ascii_vocabulary_characters_are_hashed() {
        let enc = FttpEncoder::new(&params("AÄ ", 200, 5, &[("f", 1)])).unwrap();
        assert_eq!(
            record_filter(&enc, &["ÄA"]),
            filter_of_bigrams(&enc, &[(' ', 'Ä'), ('Ä', 'A'), ('A', ' ')])
        );
    }

    #[test]
    fn fields_use_their_own_tables() {
        let enc = FttpEncoder::new(&params("AB ", 400, 8, &[("x", 1), ("y", 2)])).unwrap();
        assert_ne!(enc.encode(&["AB", "BA"]), enc.encode(&["BA", "AB"]));
        // Missing trailing values contribute nothing (the library's absent field).
        let only_x = record_filter(&enc, &["AB"]);
        let mut expected = vec![0u64; 7];
        for (a, b) in [(' ', 'A'), ('A', 'B'), ('B', ' ')] {
            for p in bigram_positions(&enc, 0, a, b) {
                expected[p as usize / 64] |= 1 << (p % 64);
            }
        }
        assert_eq!(only_x, expected);
    }

    #[test]
    fn trigrams_pad_with_two_spaces() {
        let mut p = params("AB ", 300, 4, &[("f", 3)]);
        p.n_gram_length = 3;
        let enc = FttpEncoder::new(&p).unwrap();
        assert_eq!(enc.entries, 27);
        let tri = |s: &str| -> Vec<u32> {
            let g = s
                .chars()
                .fold(0, |acc, c| acc * 3 + enc.index_of(c).unwrap()) as usize;
            enc.positions[g * 4..g * 4 + 4].to_vec()
        };
        let mut expected = vec![0u64; 5];
        for t in ["  A", " AB", "AB ", "B  "] {
            for p in tri(t) {
                expected[p as usize / 64] |= 1 << (p % 64);
            }
        }
        assert_eq!(record_filter(&enc, &["AB"]), expected);
    }

    #[test]
    fn balancing_is_the_library_swap_loop() {
        let enc = FttpEncoder::new(&params("AB ", 37, 3, &[("f", 8)])).unwrap();
        let filter = record_filter(&enc, &["ABBA"]);
        // The library, literally: bits ‖ NOT bits, then 2L swaps.
        let l = 37;
        let mut bits: Vec<bool> = (0..l)
            .map(|i| filter[i / 64] >> (i % 64) & 1 == 1)
            .collect();
        bits.extend((0..l).map(|i| filter[i / 64] >> (i % 64) & 1 == 0));
        let mut rnd = JavaRandom::new(17);
        for i in 0..2 * l {
            let j = rnd.next_int(2 * l as i32) as usize;
            bits.swap(i, j);
        }
        let mut expected = vec![0u8; (2 * l).div_ceil(8)];
        for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
            expected[i / 8] |= 1 << (i % 8);
        }
        assert_eq!(enc.encode(&["ABBA"]), expected);
    }

    #[test]
    fn output_always_has_full_length_and_exactly_l_ones() {
        for length in [1, 7, 8, 63, 64, 65, 100, 900] {
            let enc =
                FttpEncoder::new(&params(DEFAULT_VOCABULARY, length, 30, &[("f", 4)])).unwrap();
            for value in ["", "MUSTERMANN", "?"] {
                let out = enc.encode(&[value]);
                assert_eq!(out.len(), (2 * length as usize).div_ceil(8), "L = {length}");
                assert_eq!(ones(&out), length, "L = {length}");
            }
        }
    }

    #[test]
    fn trailing_zero_bytes_are_kept() {
        // L = 5: 10 output bits in 2 bytes, the second holding bits 8 and 9. Whenever the
        // shuffle leaves both unset, the library's `toByteArray` would emit a single byte.
        let zero_tail = (0..100)
            .map(|seed| {
                let mut p = params("AB ", 5, 1, &[("f", 1)]);
                p.balanced_seed = seed;
                FttpEncoder::new(&p).unwrap().encode(&["AB"])
            })
            .find(|out| out.last() == Some(&0))
            .expect("some seed below 100 leaves the last byte empty");
        assert_eq!(zero_tail.len(), 2);
        assert_eq!(ones(&zero_tail), 5);
    }

    #[test]
    fn invalid_parameters_are_rejected_naming_the_key() {
        let ok = || params("AB ", 100, 3, &[("a", 1), ("b", 2)]);
        let err = |p: FttpParams| FttpEncoder::new(&p).unwrap_err();

        let mut p = ok();
        p.length = 0;
        assert_eq!(err(p), FttpError::ZeroLength);
        let mut p = ok();
        p.length = MAX_LENGTH + 1;
        assert_eq!(err(p), FttpError::LengthTooLarge(MAX_LENGTH + 1));
        let mut p = ok();
        p.random_position_number = 0;
        assert_eq!(err(p), FttpError::ZeroPositions);
        for n in [0, 4] {
            let mut p = ok();
            p.n_gram_length = n;
            assert_eq!(err(p), FttpError::UnsupportedNGramLength(n));
        }
        let mut p = ok();
        p.vocabulary = String::new();
        assert_eq!(err(p), FttpError::EmptyVocabulary);
        let mut p = ok();
        p.vocabulary = "AB😀".into();
        assert_eq!(err(p), FttpError::NonBmpVocabulary(0x1F600));
        let mut p = ok();
        p.field_order.clear();
        p.field_seeds.clear();
        assert_eq!(err(p), FttpError::NoFields);
        let mut p = ok();
        p.field_order.push("a".into());
        assert_eq!(err(p), FttpError::DuplicateField("a".into()));
        let mut p = ok();
        p.field_seeds.remove("b");
        assert_eq!(err(p), FttpError::MissingSeed("b".into()));
        let mut p = ok();
        p.field_seeds.insert("c".into(), 3);
        assert_eq!(err(p), FttpError::UnusedSeed("c".into()));
        let mut p = ok();
        p.vocabulary = (0u8..128).map(char::from).collect();
        p.n_gram_length = 3;
        p.random_position_number = 30;
        assert!(matches!(err(p), FttpError::TableTooLarge { .. }));
        assert!(
            err({
                let mut p = ok();
                p.field_seeds.remove("b");
                p
            })
            .to_string()
            .contains("`b`")
        );
    }

    #[test]
    fn debug_output_redacts_seeds_and_tables() {
        let mut p = params("AB ", 100, 3, &[("firstName", 487_484_864)]);
        p.balanced_seed = 154_866_848;
        let enc = FttpEncoder::new(&p).unwrap();
        for text in [format!("{p:?}"), format!("{enc:?}")] {
            assert!(!text.contains("487484864"), "{text}");
            assert!(!text.contains("154866848"), "{text}");
            assert!(text.contains("firstName"), "{text}");
        }
        assert!(format!("{enc:?}").contains("<redacted>"));
    }

    #[test]
    fn malformed_seeds_are_not_echoed() {
        let json = r#"{"length": 10, "randomPositionNumber": 2, "balanced_seed": "98765",
            "field_seeds": {"f": 1}, "field_order": ["f"]}"#;
        let msg = serde_json::from_str::<FttpParams>(json)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("seed must be an integer"), "{msg}");
        assert!(!msg.contains("98765"), "{msg}");
        let json = r#"{"length": 10, "randomPositionNumber": 2, "balanced_seed": 1,
            "field_seeds": {"f": 12345.5}, "field_order": ["f"]}"#;
        let msg = serde_json::from_str::<FttpParams>(json)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("12345"), "{msg}");
        let json = r#"{"length": 10, "randomPositionNumber": 2, "balanced_seed": 18446744073709551615,
            "field_seeds": {"f": 1}, "field_order": ["f"]}"#;
        let msg = serde_json::from_str::<FttpParams>(json)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("18446744073709551615"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let json = r#"{"length": 10, "randomPositionNumber": 2, "balanced_seed": 1,
            "field_seeds": {"f": 1}, "field_order": ["f"], "ngramLength": 2}"#;
        let msg = serde_json::from_str::<FttpParams>(json)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ngramLength"), "{msg}");
    }
}
