//! Remembered token hashes, so that common tokens are hashed once per encoder.
//!
//! Hashing dominates encoding: HMAC-SHA1 plus HMAC-MD5 cost about 0.4 µs per token, and a
//! record has some twenty tokens. But tokens repeat: names are made of a few hundred distinct
//! bigrams, a positional date digit is one of 80 tokens, a sex code one of four. clkhash keeps
//! an LRU cache keyed by token text for the same reason.
//!
//! This module does it without keeping any token text. Each hashed feature gets a fixed
//! *key space* derived from its schema alone, never from data:
//!
//! * n-grams over a small alphabet chosen from the format (digits for dates and integers, the
//!   characters of the enum values, Latin letters with umlauts, common accented letters and
//!   `' -.` for strings, upper or lower case only when the format says so), optionally with a
//!   window position (as many positions as fit the size limit), are
//!   numbered `position · |alphabet|^n + Σ index(cᵢ)·|alphabet|^(n−1−i)`;
//! * the values of an `enum` format hashed with `exact` are numbered in schema order.
//!
//! A slot holds the token's hash result (double hashing's `(h1, h2)` or BLAKE2b's first
//! digests) once some record needed it. Slots are atomics written at most once with the same
//! value by whichever thread gets there first, so an encoder stays `Sync` without locks, and
//! threads only ever read shared cache lines once a slot is filled. Tokens outside the key
//! space (other characters, long positional values, numbers) are hashed every time.
//!
//! What the table reveals is which slots are filled, i.e. which n-grams some record contained,
//! for as long as the encoder lives; the slots are zeroed when it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::format::{Case, Format, StringRule};
use super::hash::{self, KeyedHash, Modulus, Shorts};
use super::schema::{FeatureSpec, Strategy};
use super::tokens::Comparison;

/// Upper bound of slots per feature and of the bytes they may occupy.
const MAX_SLOTS: usize = 1 << 13;
const MAX_TABLE_BYTES: usize = 512 * 1024;
/// Most BLAKE2b digests (32 positions each) stored per slot.
const MAX_STORED_DIGESTS: usize = 4;

/// Maps a token to its slot number.
#[derive(Debug)]
enum KeySpace {
    Grams {
        alphabet: Alphabet,
        n: usize,
        positional: bool,
        /// Window positions covered (1-based positions `1..=max_position`); 1 if not positional.
        max_position: usize,
        /// `|alphabet|^n`.
        per_position: usize,
    },
    Words(HashMap<Box<[u8]>, usize>),
}

#[derive(Debug)]
enum Slots {
    /// `FILLED | h1 << 32 | h2` (both below 2^24), 0 while empty.
    Double(Box<[AtomicU64]>),
    /// `digests` BLAKE2b digests per slot as `8·digests` words of four shorts each.
    Blake {
        filled: Box<[AtomicBool]>,
        words: Box<[AtomicU64]>,
        digests: usize,
    },
}

const FILLED: u64 = 1 << 63;

/// Remembered hashes of the tokens of one feature.
#[derive(Debug)]
pub(crate) struct TokenTable {
    keys: KeySpace,
    slots: Slots,
}

impl TokenTable {
    /// The table for a feature, or `None` when its tokens are not worth remembering (numeric
    /// comparisons, exact non-enum values, key spaces too large).
    pub(crate) fn for_feature(spec: &FeatureSpec) -> Option<TokenTable> {
        let double = matches!(spec.hash, super::schema::HashKind::Double { .. });
        // Digests a token needs: all of them for bitsPerToken; with bitsPerFeature, an n-gram
        // usually needs one (its share of the budget) while an exact value takes it all.
        // Positions beyond the stored digests are computed each time.
        let max_k = match (spec.strategy, &spec.comparison) {
            (Strategy::BitsPerFeature(_), Comparison::Ngram { .. }) => 32,
            (strategy, _) => strategy.max_k(),
        };
        let digests = (max_k as usize).div_ceil(32).clamp(1, MAX_STORED_DIGESTS);
        let slot_bytes = if double { 8 } else { 64 * digests + 1 };
        let budget = MAX_SLOTS.min(MAX_TABLE_BYTES / slot_bytes);
        let (keys, count) = match (&spec.comparison, &spec.format) {
            (Comparison::Exact, Format::Enum(values)) => {
                let mut words: Vec<&String> = values.iter().collect();
                words.sort();
                let map: HashMap<Box<[u8]>, usize> = words
                    .into_iter()
                    .enumerate()
                    .map(|(i, w)| (w.as_bytes().into(), i))
                    .collect();
                let count = map.len();
                (KeySpace::Words(map), count)
            }
            (Comparison::Ngram { n, positional }, format) => {
                let alphabet = Alphabet::for_format(format, *n > 1);
                let per_position = alphabet.len().checked_pow(u32::try_from(*n).ok()?)?;
                let max_position = if *positional {
                    (budget / per_position).min(64)
                } else {
                    1
                };
                if max_position == 0 || per_position * max_position > budget {
                    return None;
                }
                let keys = KeySpace::Grams {
                    alphabet,
                    n: *n,
                    positional: *positional,
                    max_position,
                    per_position,
                };
                (keys, per_position * max_position)
            }
            _ => return None,
        };
        let slots = if double {
            Slots::Double(zeroed(count))
        } else {
            Slots::Blake {
                filled: (0..count).map(|_| AtomicBool::new(false)).collect(),
                words: zeroed(count * 8 * digests),
                digests,
            }
        };
        Some(TokenTable { keys, slots })
    }

    /// Calls `f` with the positions of `token`, like [`KeyedHash::positions`], using and
    /// filling the table. Returns `false` (without calling `f`) if the token has no slot.
    #[inline]
    pub(crate) fn positions(
        &self,
        hash: &KeyedHash,
        token: &[u8],
        k: u32,
        modulus: Modulus,
        mut f: impl FnMut(usize),
    ) -> bool {
        let Some(slot) = self.keys.slot(token) else {
            return false;
        };
        if k == 0 {
            return true;
        }
        match &self.slots {
            Slots::Double(cells) => {
                let cell = &cells[slot];
                let packed = cell.load(Ordering::Relaxed);
                let (h1, h2) = if packed & FILLED != 0 {
                    ((packed >> 32) & 0x7fff_ffff, packed & 0xffff_ffff)
                } else {
                    let Some((h1, h2)) = hash.double_pair(token, modulus) else {
                        return false;
                    };
                    // A single atomic word: readers see all of it or nothing.
                    cell.store(FILLED | h1 << 32 | h2, Ordering::Relaxed);
                    (h1, h2)
                };
                hash::emit_double(h1, h2, k, modulus, f);
            }
            Slots::Blake {
                filled,
                words,
                digests,
            } => {
                let stored = *digests;
                let words = &words[slot * 8 * stored..(slot + 1) * 8 * stored];
                let wanted = (k as usize).div_ceil(32).min(stored);
                let mut shorts: [Shorts; MAX_STORED_DIGESTS] = [[0; 32]; MAX_STORED_DIGESTS];
                if filled[slot].load(Ordering::Acquire) {
                    for (word, chunk) in words
                        .iter()
                        .zip(shorts.as_flattened_mut().chunks_exact_mut(4))
                        .take(8 * wanted)
                    {
                        let w = word.load(Ordering::Relaxed);
                        for (i, short) in chunk.iter_mut().enumerate() {
                            *short = (w >> (16 * i)) as u16;
                        }
                    }
                } else {
                    for (j, digest) in shorts.iter_mut().enumerate().take(stored) {
                        let Some(d) = hash.blake_shorts(token, j) else {
                            return false;
                        };
                        *digest = d;
                    }
                    for (word, chunk) in words.iter().zip(shorts.as_flattened().chunks_exact(4)) {
                        let w = chunk
                            .iter()
                            .enumerate()
                            .fold(0u64, |w, (i, &s)| w | u64::from(s) << (16 * i));
                        word.store(w, Ordering::Relaxed);
                    }
                    // Publishes the words above. Racing threads store identical values.
                    filled[slot].store(true, Ordering::Release);
                }
                let k = k as usize;
                let from_table = k.min(32 * stored);
                hash::emit_shorts(&shorts.as_flattened()[..from_table], modulus, &mut f);
                if k > from_table {
                    hash.emit_blake_from(token, stored, k - from_table, modulus, f);
                }
            }
        }
        true
    }
}

impl Drop for TokenTable {
    fn drop(&mut self) {
        // Hash results are key material in all but name: wipe them.
        let cells = match &self.slots {
            Slots::Double(cells) => cells,
            Slots::Blake { words, .. } => words,
        };
        for cell in cells.iter() {
            cell.store(0, Ordering::Relaxed);
        }
    }
}

fn zeroed(count: usize) -> Box<[AtomicU64]> {
    (0..count).map(|_| AtomicU64::new(0)).collect()
}

impl KeySpace {
    #[inline]
    fn slot(&self, token: &[u8]) -> Option<usize> {
        match self {
            KeySpace::Words(map) => map.get(token).copied(),
            KeySpace::Grams {
                alphabet,
                n,
                positional,
                max_position,
                per_position,
            } => {
                let (position, gram) = if *positional {
                    // "<j+1> <gram>"
                    let space = token.iter().position(|&b| b == b' ')?;
                    let digits = &token[..space];
                    if digits.is_empty() || digits.len() > 3 {
                        return None;
                    }
                    let p = digits.iter().try_fold(0usize, |p, &b| {
                        b.is_ascii_digit().then(|| p * 10 + usize::from(b - b'0'))
                    })?;
                    if p == 0 || p > *max_position {
                        return None;
                    }
                    (p - 1, &token[space + 1..])
                } else {
                    (0, token)
                };
                let gram = std::str::from_utf8(gram).ok()?;
                let mut index = 0;
                let mut count = 0;
                for c in gram.chars() {
                    index = index * alphabet.len() + alphabet.index(c)?;
                    count += 1;
                }
                (count == *n).then_some(position * per_position + index)
            }
        }
    }
}

/// The characters a feature's n-grams are expected to consist of.
#[derive(Debug)]
struct Alphabet {
    /// Index of each ASCII character, `usize::MAX` if absent.
    ascii: Box<[usize; 128]>,
    /// Non-ASCII members with their indices, sorted by character.
    other: Vec<(char, usize)>,
    len: usize,
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜÉÈÁÀÂÇÑØÅŁ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyzäöüßéèáàâçñøåł";
const NAME_PUNCTUATION: &str = " -'.";

impl Alphabet {
    fn for_format(format: &Format, padded: bool) -> Alphabet {
        let mut chars: Vec<char> = match format {
            Format::Date { .. } => "0123456789".chars().collect(),
            Format::Integer { .. } => "-0123456789".chars().collect(),
            Format::Enum(values) => values.iter().flat_map(|v| v.chars()).collect(),
            Format::String(s) => {
                let case = match &s.rule {
                    StringRule::Plain { case, .. } => *case,
                    StringRule::Pattern { .. } => Case::Mixed,
                };
                let letters = match case {
                    Case::Upper => UPPER.to_owned(),
                    Case::Lower => LOWER.to_owned(),
                    Case::Mixed => format!("{UPPER}{LOWER}"),
                };
                letters
                    .chars()
                    .chain(NAME_PUNCTUATION.chars())
                    .filter(|c| !s.ascii || c.is_ascii())
                    .collect()
            }
        };
        if padded {
            chars.push(' ');
        }
        chars.sort_unstable();
        chars.dedup();
        let mut alphabet = Alphabet {
            ascii: Box::new([usize::MAX; 128]),
            other: Vec::new(),
            len: chars.len(),
        };
        for (i, c) in chars.into_iter().enumerate() {
            if c.is_ascii() {
                alphabet.ascii[c as usize] = i;
            } else {
                alphabet.other.push((c, i));
            }
        }
        alphabet
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn index(&self, c: char) -> Option<usize> {
        if c.is_ascii() {
            let i = self.ascii[c as usize];
            (i != usize::MAX).then_some(i)
        } else {
            self.other
                .binary_search_by_key(&c, |&(o, _)| o)
                .ok()
                .map(|at| self.other[at].1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::HashKind;
    use super::super::strptime::DateFormat;
    use super::*;

    fn spec(
        format: Format,
        comparison: Comparison,
        strategy: Strategy,
        hash: HashKind,
    ) -> FeatureSpec {
        FeatureSpec {
            format,
            comparison,
            strategy,
            hash,
            missing: None,
        }
    }

    fn date() -> Format {
        Format::Date {
            format: DateFormat::compile("%Y-%m-%d").expect("format"),
            source: "%Y-%m-%d".into(),
        }
    }

    fn positions_both_ways(table: &TokenTable, hash: &KeyedHash, token: &[u8], k: u32) {
        let modulus = Modulus::new(1000);
        let mut direct = Vec::new();
        hash.positions(token, k, modulus, |p| direct.push(p));
        for round in 0..2 {
            let mut cached = Vec::new();
            assert!(table.positions(hash, token, k, modulus, |p| cached.push(p)));
            assert_eq!(
                cached,
                direct,
                "round {round} for {:?}",
                String::from_utf8_lossy(token)
            );
        }
    }

    #[test]
    fn positional_date_digits_are_remembered() {
        for hash_kind in [
            HashKind::Double {
                prevent_singularity: true,
            },
            HashKind::Blake,
        ] {
            let s = spec(
                date(),
                Comparison::Ngram {
                    n: 1,
                    positional: true,
                },
                Strategy::BitsPerToken(40),
                hash_kind,
            );
            let table = TokenTable::for_feature(&s).expect("a table");
            let hash = KeyedHash::new(hash_kind, b"key zero", b"key one", 40);
            for token in ["1 1", "8 9", "3 0", "12 5"] {
                positions_both_ways(&table, &hash, token.as_bytes(), 40);
            }
            // Not in the key space: a letter, and position 0.
            assert!(!table.positions(&hash, b"1 X", 40, Modulus::new(1000), |_| {}));
            assert!(!table.positions(&hash, b"0 1", 40, Modulus::new(1000), |_| {}));
        }
    }

    #[test]
    fn name_bigrams_are_remembered_and_others_are_not() {
        let format = Format::String(super::super::format::StringFormat {
            ascii: false,
            rule: StringRule::Plain {
                case: Case::Upper,
                min_length: None,
                max_length: None,
            },
        });
        let s = spec(
            format,
            Comparison::Ngram {
                n: 2,
                positional: false,
            },
            Strategy::BitsPerToken(20),
            HashKind::Blake,
        );
        let table = TokenTable::for_feature(&s).expect("a table");
        let hash = KeyedHash::new(HashKind::Blake, b"k", b"unused", 20);
        for token in [" A", "ÄÖ", "Z ", "--", "A'"] {
            positions_both_ways(&table, &hash, token.as_bytes(), 20);
            // Fewer positions than stored are a prefix of the stored ones.
            positions_both_ways(&table, &hash, token.as_bytes(), 3);
        }
        for token in ["ab", "李A", "A", "ABC", "ß "] {
            assert!(
                !table.positions(&hash, token.as_bytes(), 20, Modulus::new(1000), |_| {}),
                "{token}"
            );
        }
    }

    #[test]
    fn blake_tokens_needing_more_digests_than_stored_compute_the_rest() {
        let s = spec(
            Format::Enum(["F", "M"].into_iter().map(String::from).collect()),
            Comparison::Exact,
            Strategy::BitsPerFeature(100),
            HashKind::Blake,
        );
        let table = TokenTable::for_feature(&s).expect("a table");
        let hash = KeyedHash::new(HashKind::Blake, b"k", b"unused", 100);
        positions_both_ways(&table, &hash, b"F", 100);
        positions_both_ways(&table, &hash, b"M", 31);
        assert!(!table.positions(&hash, b"X", 1, Modulus::new(1000), |_| {}));
    }

    #[test]
    fn non_ascii_alphabets_index_every_character() {
        // 300 distinct CJK characters: the alphabet is larger than any byte-sized index.
        let values: Vec<String> = (0..300u32)
            .map(|i| char::from_u32(0x4e00 + i * 3).expect("CJK").to_string())
            .collect();
        let s = spec(
            Format::Enum(values.iter().cloned().collect()),
            Comparison::Ngram {
                n: 1,
                positional: false,
            },
            Strategy::BitsPerToken(8),
            HashKind::Double {
                prevent_singularity: false,
            },
        );
        let table = TokenTable::for_feature(&s).expect("a table");
        let hash = KeyedHash::new(s.hash, b"k0", b"k1", 8);
        for v in values.iter().step_by(7) {
            positions_both_ways(&table, &hash, v.as_bytes(), 8);
        }
        let mut slots: Vec<usize> = values
            .iter()
            .filter_map(|v| table.keys.slot(v.as_bytes()))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 300, "every character has its own slot");
    }

    #[test]
    fn numeric_and_free_text_exact_features_have_no_table() {
        let free_text = Format::String(super::super::format::StringFormat {
            ascii: false,
            rule: StringRule::Plain {
                case: Case::Mixed,
                min_length: None,
                max_length: None,
            },
        });
        let s = spec(
            free_text,
            Comparison::Exact,
            Strategy::BitsPerToken(20),
            HashKind::Blake,
        );
        assert!(TokenTable::for_feature(&s).is_none());
    }
}
