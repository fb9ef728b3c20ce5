//! Python's `int(s, 10)` and `float(s)` for the inputs clkhash feeds them.
//!
//! clkhash canonicalises `integer` values with `str(int(value, 10))` and the `numeric`
//! comparison parses with `int(...)`, falling back to `float(...)`. Both accept more than a
//! plain digit string: surrounding whitespace, a `+` sign, and underscores between digits
//! (`" +1_000 "` is 1000). Reproducing that matters: a site that rejected `" 42"` where another
//! accepted it would silently fail to link.
//!
//! "Whitespace" here is Unicode `White_Space` (`char::is_whitespace`): unlike `str.isspace`,
//! `int()` and `float()` do not strip U+001C..=U+001F.
//!
//! Deliberate differences: Python also accepts non-ASCII decimal digits (`"١٢"` is 12) and
//! integers of any size; here the former are reported as [`NumError::NonAsciiDigit`] and values
//! beyond `i128` as [`NumError::TooLarge`], so the caller rejects the value instead of
//! producing a CLK that differs from clkhash's.

/// Why a string is not a number Python would parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not the syntax Python accepts.
    Invalid,
    /// Contains a non-ASCII decimal digit, which Python would accept and this code does not.
    NonAsciiDigit,
    /// Python would accept it, but it does not fit the range this code supports.
    TooLarge,
}

/// True if `s` contains a decimal digit other than ASCII `0`–`9`.
///
/// `char::is_numeric` is broader than Python's decimal digits (it includes e.g. `½`), which
/// only makes us reject a few more strings that Python would also reject.
pub(crate) fn has_non_ascii_digit(s: &str) -> bool {
    s.chars().any(|c| !c.is_ascii() && c.is_numeric())
}

/// True if every `_` in `digits` sits between two ASCII digits (PEP 515), the only place
/// Python allows it in `int()` and `float()` input.
fn underscores_ok(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'_'
            || (i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
    })
}

/// `int(s, 10)`.
pub(crate) fn parse_int(s: &str) -> Result<i128, NumError> {
    if has_non_ascii_digit(s) {
        return Err(NumError::NonAsciiDigit);
    }
    let t = s.trim_matches(char::is_whitespace);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        || !underscores_ok(digits)
    {
        return Err(NumError::Invalid);
    }
    let mut value: i128 = 0;
    for b in digits.bytes().filter(u8::is_ascii_digit) {
        let d = i128::from(b - b'0');
        // Accumulate negatively so that i128::MIN itself is representable.
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(d))
            .ok_or(NumError::TooLarge)?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(NumError::TooLarge)
    }
}

/// `float(s)`. Infinities and NaN parse (as Python's do); callers decide what they mean.
pub(crate) fn parse_float(s: &str) -> Result<f64, NumError> {
    if has_non_ascii_digit(s) {
        return Err(NumError::NonAsciiDigit);
    }
    let t = s.trim_matches(char::is_whitespace);
    if !t.is_ascii() || !underscores_ok(t) {
        return Err(NumError::Invalid);
    }
    // Rust's grammar for the underscore-free remainder is Python's: optional sign, digits
    // with an optional point (`1.`, `.5`), optional exponent, or inf/infinity/nan in any case.
    // Both round correctly, so the results are identical.
    let cleaned: String = t.chars().filter(|&c| c != '_').collect();
    cleaned.parse::<f64>().map_err(|_| NumError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_accepts_what_python_accepts() {
        // Each of these is accepted by CPython 3.11's int(s, 10) with the value shown.
        for (s, v) in [
            ("0", 0),
            ("42", 42),
            (" 42 ", 42),
            ("\t+42\n", 42),
            ("-7", -7),
            ("-0", 0),
            ("007", 7),
            ("1_000", 1000),
            ("1_0_0", 100),
            ("\u{3000}5\u{85}", 5),
            ("170141183460469231731687303715884105727", i128::MAX),
            ("-170141183460469231731687303715884105728", i128::MIN),
        ] {
            assert_eq!(parse_int(s), Ok(v), "{s:?}");
        }
    }

    #[test]
    fn int_rejects_what_python_rejects() {
        for s in [
            "", " ", "+", "-", "4 2", "- 4", "_1", "1_", "1__0", "0x10", "1.0", "1e3", "++1",
            "5\u{1c}",
        ] {
            assert_eq!(parse_int(s), Err(NumError::Invalid), "{s:?}");
        }
    }

    #[test]
    fn int_reports_unsupported_inputs_distinctly() {
        assert_eq!(parse_int("١٢"), Err(NumError::NonAsciiDigit));
        assert_eq!(parse_int("１２"), Err(NumError::NonAsciiDigit));
        assert_eq!(
            parse_int("170141183460469231731687303715884105728"),
            Err(NumError::TooLarge)
        );
    }

    #[test]
    fn float_grammar() {
        for (s, v) in [
            ("1.5", 1.5),
            (" -2.5e1 ", -25.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("1_000.000_1", 1000.0001),
            ("1E+2", 100.0),
        ] {
            assert_eq!(parse_float(s), Ok(v), "{s:?}");
        }
        assert!(parse_float("inf").is_ok_and(f64::is_infinite));
        assert!(parse_float("-Infinity").is_ok_and(f64::is_infinite));
        assert!(parse_float("nan").is_ok_and(f64::is_nan));
        for s in ["", ".", "e5", "1e", "1_.5", "1._5", "0x1p3", "1,5", "--1"] {
            assert_eq!(parse_float(s), Err(NumError::Invalid), "{s:?}");
        }
    }
}
