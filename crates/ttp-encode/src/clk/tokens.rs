//! Tokenisers: how a rendered value becomes the strings that are hashed into the filter.
//!
//! * `ngram`: pad with `n − 1` spaces on each side (only when `n > 1`) and take every window of
//!   `n` *code points* (Python slices `str` by code point, so `"ÄB"` has the bigrams `" Ä"`,
//!   `"ÄB"`, `"B "`). `positional` prefixes the 1-based window index: `"1  Ä"`.
//! * `exact`: the value itself, one token.
//! * `numeric`: the neighbourhood tokens of Vatsalan & Christen (2015), see [`NumericParams`].
//!
//! An empty value has no tokens. Tokens are written into a reusable [`Scratch`] and handed to a
//! callback as byte slices, so tokenising allocates nothing once the scratch buffers have grown
//! to the size of the longest value.

use std::io::Write as _;

use super::pynum::{self, NumError};

/// The `comparison` of a hashed feature.
#[derive(Debug, Clone)]
pub(crate) enum Comparison {
    Ngram { n: usize, positional: bool },
    Exact,
    Numeric(NumericParams),
}

/// clkhash's `NumericComparison`: a number `x` becomes `2·resolution + 1` tokens that overlap
/// with those of every number closer than `thresholdDistance`.
///
/// As clkhash does: scale by `10^fractional_precision` (exactly for integers; for floats
/// `round(x·10^p)` with round-half-even, or truncation when `p = 0`), multiply by
/// `2·resolution`, round to the nearest multiple of
/// `distance_interval = round(thresholdDistance·10^p)` (ties upwards), and emit that value plus
/// `i·distance_interval` for `i` in `−resolution..=resolution` as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumericParams {
    pub(crate) distance_interval: i128,
    pub(crate) resolution: u32,
    pub(crate) fractional_precision: u32,
}

/// Reusable buffers for tokenising one record.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// The padded value (n-grams).
    padded: Vec<u8>,
    /// Byte offset of every code point in `padded`, plus its length.
    bounds: Vec<usize>,
    /// The token being built, when it is not a slice of `padded`.
    token: Vec<u8>,
}

impl Default for Scratch {
    /// Sized for typical values, so that most records tokenise without growing a buffer.
    fn default() -> Scratch {
        Scratch {
            padded: Vec::with_capacity(64),
            bounds: Vec::with_capacity(64),
            token: Vec::with_capacity(64),
        }
    }
}

impl Comparison {
    /// Number of tokens [`Comparison::for_each_token`] produces for `value` (needed up front by
    /// the `bitsPerFeature` strategy).
    pub(crate) fn token_count(&self, value: &str) -> usize {
        if value.is_empty() {
            return 0;
        }
        match self {
            // chars + 2(n−1) padded code points give chars + n − 1 windows; for n = 1 there is
            // no padding and there are `chars` windows: the same formula.
            Comparison::Ngram { n, .. } => value.chars().count() + n - 1,
            Comparison::Exact => 1,
            Comparison::Numeric(p) => 2 * p.resolution as usize + 1,
        }
    }

    /// Calls `f(index, token)` for every token of `value`, in clkhash's order (duplicates
    /// included). `Err` is a rejection reason (only `numeric` can fail: its value must be a
    /// number).
    pub(crate) fn for_each_token(
        &self,
        value: &str,
        scratch: &mut Scratch,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<(), String> {
        if value.is_empty() {
            return Ok(());
        }
        match self {
            Comparison::Exact => f(0, value.as_bytes()),
            Comparison::Ngram { n, positional } => {
                let n = *n;
                let Scratch {
                    padded,
                    bounds,
                    token,
                } = scratch;
                padded.clear();
                bounds.clear();
                let pad = n.saturating_sub(1);
                padded.resize(pad, b' ');
                padded.extend_from_slice(value.as_bytes());
                padded.resize(padded.len() + pad, b' ');
                bounds.extend(0..pad);
                bounds.extend(value.char_indices().map(|(i, _)| pad + i));
                bounds.extend((0..=pad).map(|i| pad + value.len() + i));
                // `bounds` has one entry per padded code point plus one, and there are at least `n`
                // padded code points, so this cannot underflow.
                let windows = bounds.len() - n;
                for j in 0..windows {
                    let gram = &padded[bounds[j]..bounds[j + n]];
                    if *positional {
                        token.clear();
                        push_decimal(token, j + 1);
                        token.push(b' ');
                        token.extend_from_slice(gram);
                        f(j, token);
                    } else {
                        f(j, gram);
                    }
                }
            }
            Comparison::Numeric(p) => {
                let centre = p.quantise(value)?;
                let di = p.distance_interval;
                let res = i128::from(p.resolution);
                for (j, i) in (-res..=res).enumerate() {
                    let v = i
                        .checked_mul(di)
                        .and_then(|d| centre.checked_add(d))
                        .ok_or_else(too_large)?;
                    scratch.token.clear();
                    let _ = write!(scratch.token, "{v}");
                    f(j, &scratch.token);
                }
            }
        }
        Ok(())
    }
}

/// Appends `n` in decimal (what `format!("{n}")` gives, without the formatting machinery on
/// the per-token path).
fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn too_large() -> String {
    "is a number too large for this encoder's numeric comparison".to_owned()
}

impl NumericParams {
    /// The middle token's value for `word` (clkhash's `NumericComparison.tokenize` up to the
    /// neighbourhood).
    fn quantise(&self, word: &str) -> Result<i128, String> {
        let scale = 10i128
            .checked_pow(self.fractional_precision)
            .ok_or_else(too_large)?;
        let v = match pynum::parse_int(word) {
            Ok(v) => v.checked_mul(scale).ok_or_else(too_large)?,
            Err(NumError::TooLarge) => return Err(too_large()),
            Err(NumError::NonAsciiDigit) => {
                return Err(
                    "contains non-ASCII digits, which clkhash reads but this encoder \
                            does not; convert them to ASCII digits"
                        .to_owned(),
                );
            }
            // Like clkhash: not an integer, so try it as a float.
            Err(NumError::Invalid) => {
                let x = pynum::parse_float(word)
                    .map_err(|_| "is not a number (numeric comparison)".to_owned())?;
                let scaled = if self.fractional_precision > 0 {
                    // Python: round(x * 10**p). The int power is converted to the nearest
                    // double first, exactly what parsing "1e{p}" yields.
                    let factor: f64 = format!("1e{}", self.fractional_precision)
                        .parse()
                        .map_err(|_| too_large())?;
                    (x * factor).round_ties_even()
                } else {
                    x.trunc()
                };
                if !scaled.is_finite() {
                    return Err("is not a finite number (numeric comparison)".to_owned());
                }
                // 2^127: beyond it the conversion below would saturate instead of failing.
                if scaled.abs() >= 1.7014118346046923e38 {
                    return Err(too_large());
                }
                scaled as i128
            }
        };
        let v = v
            .checked_mul(2 * i128::from(self.resolution))
            .ok_or_else(too_large)?;
        let di = self.distance_interval;
        let residue = v.rem_euclid(di);
        // clkhash compares `residue < di / 2` in floating point; `di` is at most 2^53 (checked
        // when the schema is loaded), so `di / 2` is exact and this integer test is the same.
        let centre = if residue == 0 {
            Some(v)
        } else if 2 * residue < di {
            v.checked_sub(residue)
        } else {
            v.checked_add(di - residue)
        };
        centre.ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(c: &Comparison, value: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        c.for_each_token(value, &mut scratch, |j, t| {
            assert_eq!(j, out.len());
            out.push(String::from_utf8(t.to_vec()).expect("tokens are UTF-8"));
        })
        .expect("tokenises");
        assert_eq!(out.len(), c.token_count(value), "token_count for {value:?}");
        out
    }

    fn ngram(n: usize, positional: bool) -> Comparison {
        Comparison::Ngram { n, positional }
    }

    #[test]
    fn bigrams_are_padded() {
        assert_eq!(
            tokens(&ngram(2, false), "ANNA"),
            [" A", "AN", "NN", "NA", "A "]
        );
        assert_eq!(tokens(&ngram(2, false), "A"), [" A", "A "]);
        assert!(tokens(&ngram(2, false), "").is_empty());
    }

    #[test]
    fn unigrams_and_trigrams() {
        assert_eq!(tokens(&ngram(1, false), "ABA"), ["A", "B", "A"]);
        assert_eq!(tokens(&ngram(3, false), "AB"), ["  A", " AB", "AB ", "B  "]);
    }

    #[test]
    fn ngrams_slice_code_points_not_bytes() {
        assert_eq!(tokens(&ngram(2, false), "ÄÖ"), [" Ä", "ÄÖ", "Ö "]);
        assert_eq!(tokens(&ngram(1, false), "李😀"), ["李", "😀"]);
        // A combining sequence is two code points, as in Python.
        assert_eq!(tokens(&ngram(1, false), "e\u{301}"), ["e", "\u{301}"]);
    }

    #[test]
    fn positional_ngrams_carry_their_index() {
        assert_eq!(
            tokens(&ngram(1, true), "1985"),
            ["1 1", "2 9", "3 8", "4 5"]
        );
        assert_eq!(tokens(&ngram(2, true), "AB"), ["1  A", "2 AB", "3 B "]);
        let long: Vec<String> = tokens(&ngram(1, true), &"x".repeat(120));
        assert_eq!(long[9], "10 x");
        assert_eq!(long[119], "120 x");
    }

    #[test]
    fn exact_is_one_token() {
        assert_eq!(tokens(&Comparison::Exact, "F"), ["F"]);
        assert!(tokens(&Comparison::Exact, "").is_empty());
    }

    fn numeric(distance_interval: i128, resolution: u32, fractional_precision: u32) -> Comparison {
        Comparison::Numeric(NumericParams {
            distance_interval,
            resolution,
            fractional_precision,
        })
    }

    #[test]
    fn numeric_neighbourhoods_match_clkhash() {
        // Expected values from clkhash 0.18.3's NumericComparison.tokenize.
        // NumericComparison(threshold_distance=8, resolution=2): the docstring's example.
        assert_eq!(
            tokens(&numeric(8, 2, 0), "25"),
            ["88", "96", "104", "112", "120"]
        );
        assert_eq!(
            tokens(&numeric(8, 2, 0), "-3"),
            ["-24", "-16", "-8", "0", "8"]
        );
        // threshold_distance=2.5, resolution=1, fractional_precision=1 -> distance_interval 25.
        assert_eq!(tokens(&numeric(25, 1, 1), "3.14"), ["25", "50", "75"]);
        assert_eq!(tokens(&numeric(25, 1, 1), " 7 "), ["125", "150", "175"]);
        // Float without fractional precision truncates towards zero.
        assert_eq!(tokens(&numeric(5, 1, 0), "-2.9"), ["-10", "-5", "0"]);
    }

    #[test]
    fn numeric_rejects_non_numbers() {
        let c = numeric(8, 2, 0);
        let mut scratch = Scratch::default();
        for v in ["abc", "nan", "inf", "1e400"] {
            let err = c.for_each_token(v, &mut scratch, |_, _| {}).unwrap_err();
            assert!(err.contains("number"), "{v}: {err}");
        }
    }
}
