//! The subset of Python's `datetime.strptime` that clkhash's `date` format relies on.
//!
//! clkhash validates a date with `datetime.strptime(value, format)` and hashes
//! `strftime("%Y%m%d")` of the result, so two sites only agree on a CLK if they parse dates
//! *identically*, including Python's odd corners. CPython's `_strptime` turns the format into a
//! regular expression and runs `re.match` (anchored at the start, not at the end), then rejects
//! any "unconverted data" left over. The consequences this module reproduces:
//!
//! * `%m` and `%d` take one *or* two digits, tried in the regex's alternation order
//!   (`%m` = `1[0-2]|0[1-9]|[1-9]`, `%d` = `3[01]|[12]\d|0[1-9]|[1-9]| [1-9]`), with
//!   backtracking: `%Y%m%d` reads `2020111` as 2020-11-01 but `2020110` as 2020-01-10.
//! * The first successful match wins even if it leaves input unconsumed (then the value is
//!   rejected), exactly like `re.match` followed by the "unconverted data remains" check.
//! * A run of whitespace in the format matches one or more whitespace characters.
//! * Literal characters and month names match case-insensitively (`re.IGNORECASE`).
//! * `%y` maps `00..=68` to 2000–2068 and `69..=99` to 1969–1999; missing fields default to
//!   1900-01-01; the result must be a real calendar date (year 1–9999).
//! * `%Y%m%d` output renders years below 1000 without zero padding, as glibc's `strftime`
//!   does under CPython on Linux (where the anonlink tools run).
//!
//! Supported directives: `%Y %y %m %d %b %B %%` (month names in the C locale, as Python uses
//! unless the program changed `LC_TIME`). Anything else is rejected when the schema is loaded.
//! Differences that remain, all of them cases where clkhash accepts a date that this module
//! rejects (never a different result): Python's `\d` also matches non-ASCII decimal digits
//! (e.g. full-width `１`), and its case-insensitive matching treats a few non-ASCII look-alikes
//! (`ſ`, the Kelvin sign) as ASCII letters.

/// One element of a compiled date format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A character that must appear as is (compared case-insensitively).
    Literal(char),
    /// A run of whitespace in the format: one or more whitespace characters in the value.
    Whitespace,
    /// `%Y`: exactly four digits.
    Year4,
    /// `%y`: exactly two digits.
    Year2,
    /// `%m`: month number, one or two digits.
    Month,
    /// `%b`: abbreviated English month name.
    MonthAbbr,
    /// `%B`: full English month name.
    MonthFull,
    /// `%d`: day of month, one or two digits, or a space and one digit.
    Day,
}

const MONTH_ABBR: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const MONTH_FULL: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A validated strptime-style format, ready to parse values.
#[derive(Debug, Clone)]
pub(crate) struct DateFormat {
    items: Vec<Item>,
}

/// Why a value is not a date in the expected format. The messages never contain the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateError {
    /// The value does not have the shape the format describes.
    NoMatch,
    /// The format matched a prefix of the value and characters remain.
    TrailingCharacters,
    /// The fields parsed but do not form a real calendar date (e.g. 31 February, year 0).
    NotACalendarDate,
}

/// A parsed calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Date {
    pub(crate) year: u32,
    pub(crate) month: u32,
    pub(crate) day: u32,
}

impl Date {
    /// clkhash's canonical rendering, `strftime("%Y%m%d")` (see the module docs on years < 1000).
    pub(crate) fn to_clkhash_string(self) -> String {
        format!("{}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Python's `str.isspace` (and the regex `\s` class on `str` patterns): Unicode `White_Space`
/// plus the four ASCII information separators U+001C..=U+001F.
pub(crate) fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

impl DateFormat {
    /// Compiles a format, rejecting directives this module does not implement and formats that
    /// Python itself could not compile (a repeated directive is a regex group redefinition).
    pub(crate) fn compile(format: &str) -> Result<DateFormat, String> {
        let mut items = Vec::new();
        let mut chars = format.chars().peekable();
        let (mut year, mut month, mut day) = (None, None, None);
        while let Some(c) = chars.next() {
            if is_py_whitespace(c) {
                while chars.peek().is_some_and(|&c| is_py_whitespace(c)) {
                    chars.next();
                }
                items.push(Item::Whitespace);
                continue;
            }
            if c != '%' {
                items.push(Item::Literal(c));
                continue;
            }
            let Some(d) = chars.next() else {
                return Err("ends with a lone '%' (write '%%' for a literal percent sign)".into());
            };
            let (item, slot) = match d {
                '%' => {
                    items.push(Item::Literal('%'));
                    continue;
                }
                'Y' => (Item::Year4, &mut year),
                'y' => (Item::Year2, &mut year),
                'm' => (Item::Month, &mut month),
                'b' => (Item::MonthAbbr, &mut month),
                'B' => (Item::MonthFull, &mut month),
                'd' => (Item::Day, &mut day),
                other => {
                    return Err(format!(
                        "directive '%{other}' is not supported (supported: %Y %y %m %d %b %B %%)"
                    ));
                }
            };
            if let Some(previous) = slot.replace(d) {
                return Err(format!(
                    "directive '%{d}' sets a date field that '%{previous}' already sets"
                ));
            }
            items.push(item);
        }
        Ok(DateFormat { items })
    }

    /// Parses a value the way `datetime.strptime(value, format)` does.
    pub(crate) fn parse(&self, value: &str) -> Result<Date, DateError> {
        let mut fields = Fields::default();
        let end = match_items(&self.items, value, 0, &mut fields).ok_or(DateError::NoMatch)?;
        if end != value.len() {
            return Err(DateError::TrailingCharacters);
        }
        let year = fields.year.unwrap_or(1900);
        let month = fields.month.unwrap_or(1);
        let day = fields.day.unwrap_or(1);
        if !(1..=9999).contains(&year) || day > days_in_month(year, month) {
            return Err(DateError::NotACalendarDate);
        }
        Ok(Date { year, month, day })
    }
}

/// Values captured by the directives of the successful match.
#[derive(Debug, Default)]
struct Fields {
    year: Option<u32>,
    month: Option<u32>,
    day: Option<u32>,
}

/// Depth-first search over the alternatives of each item, in the regex's priority order.
/// Returns the end of the first complete match of all items (like `re.match`, it does not
/// require the whole input to be consumed).
fn match_items(items: &[Item], input: &str, pos: usize, fields: &mut Fields) -> Option<usize> {
    let Some((&item, rest)) = items.split_first() else {
        return Some(pos);
    };
    let tail = &input[pos..];
    match item {
        Item::Literal(expected) => {
            let c = tail.chars().next()?;
            if !chars_eq_ignore_case(c, expected) {
                return None;
            }
            match_items(rest, input, pos + c.len_utf8(), fields)
        }
        Item::Whitespace => {
            // `\s+` is greedy: try the longest run first, then give characters back.
            let ends: Vec<usize> = tail
                .char_indices()
                .take_while(|&(_, c)| is_py_whitespace(c))
                .map(|(i, c)| pos + i + c.len_utf8())
                .collect();
            ends.iter()
                .rev()
                .find_map(|&end| match_items(rest, input, end, fields))
        }
        Item::Year4 => {
            let year = digits(tail, 4)?;
            fields.year = Some(year);
            match_items(rest, input, pos + 4, fields)
        }
        Item::Year2 => {
            let yy = digits(tail, 2)?;
            fields.year = Some(if yy <= 68 { 2000 + yy } else { 1900 + yy });
            match_items(rest, input, pos + 2, fields)
        }
        Item::Month => {
            for (len, month) in month_candidates(tail.as_bytes()).into_iter().flatten() {
                fields.month = Some(month);
                if let Some(end) = match_items(rest, input, pos + len, fields) {
                    return Some(end);
                }
            }
            None
        }
        Item::Day => {
            for (len, day) in day_candidates(tail.as_bytes()).into_iter().flatten() {
                fields.day = Some(day);
                if let Some(end) = match_items(rest, input, pos + len, fields) {
                    return Some(end);
                }
            }
            None
        }
        Item::MonthAbbr | Item::MonthFull => {
            let names = if item == Item::MonthAbbr {
                &MONTH_ABBR
            } else {
                &MONTH_FULL
            };
            // No month name is a prefix of another one in the same list, so at most one
            // alternative can match and the order of trying them does not matter.
            let (index, name) = names.iter().enumerate().find(|(_, name)| {
                tail.len() >= name.len()
                    && tail.as_bytes()[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            })?;
            fields.month = Some(index as u32 + 1);
            match_items(rest, input, pos + name.len(), fields)
        }
    }
}

/// `count` ASCII digits at the start of `s`, as a number.
fn digits(s: &str, count: usize) -> Option<u32> {
    let bytes = s.as_bytes().get(..count)?;
    bytes.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn digit(b: Option<&u8>) -> Option<u32> {
    b.filter(|b| b.is_ascii_digit())
        .map(|&b| u32::from(b - b'0'))
}

/// `%m`'s alternatives `1[0-2] | 0[1-9] | [1-9]` as (length, month), in priority order.
fn month_candidates(s: &[u8]) -> [Option<(usize, u32)>; 3] {
    let (a, b) = (digit(s.first()), digit(s.get(1)));
    [
        match (a, b) {
            (Some(1), Some(b @ 0..=2)) => Some((2, 10 + b)),
            _ => None,
        },
        match (a, b) {
            (Some(0), Some(b @ 1..=9)) => Some((2, b)),
            _ => None,
        },
        match a {
            Some(a @ 1..=9) => Some((1, a)),
            _ => None,
        },
    ]
}

/// `%d`'s alternatives `3[01] | [12]\d | 0[1-9] | [1-9] | " "[1-9]` as (length, day).
fn day_candidates(s: &[u8]) -> [Option<(usize, u32)>; 5] {
    let (a, b) = (digit(s.first()), digit(s.get(1)));
    [
        match (a, b) {
            (Some(3), Some(b @ 0..=1)) => Some((2, 30 + b)),
            _ => None,
        },
        match (a, b) {
            (Some(a @ 1..=2), Some(b)) => Some((2, a * 10 + b)),
            _ => None,
        },
        match (a, b) {
            (Some(0), Some(b @ 1..=9)) => Some((2, b)),
            _ => None,
        },
        match a {
            Some(a @ 1..=9) => Some((1, a)),
            _ => None,
        },
        match (s.first(), b) {
            (Some(b' '), Some(b @ 1..=9)) => Some((2, b)),
            _ => None,
        },
    ]
}

/// Case-insensitive comparison of single characters, as `re.IGNORECASE` does for literals.
fn chars_eq_ignore_case(a: char, b: char) -> bool {
    a == b || {
        let mut la = a.to_lowercase();
        let mut lb = b.to_lowercase();
        la.next() == lb.next() && la.next().is_none() && lb.next().is_none()
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: &str, value: &str) -> Result<String, DateError> {
        let f = DateFormat::compile(format).expect("test format compiles");
        f.parse(value).map(Date::to_clkhash_string)
    }

    #[test]
    fn iso_dates() {
        assert_eq!(parse("%Y-%m-%d", "1985-03-14"), Ok("19850314".into()));
        assert_eq!(parse("%Y-%m-%d", "1985-3-4"), Ok("19850304".into()));
        assert_eq!(parse("%d.%m.%Y", "14.03.1985"), Ok("19850314".into()));
        assert_eq!(
            parse("%Y-%m-%d", "1985-03-14 "),
            Err(DateError::TrailingCharacters)
        );
        assert_eq!(parse("%Y-%m-%d", "85-03-14"), Err(DateError::NoMatch));
        assert_eq!(parse("%Y-%m-%d", ""), Err(DateError::NoMatch));
    }

    #[test]
    fn backtracking_follows_python_alternation_order() {
        // Values checked against CPython 3.11's datetime.strptime.
        assert_eq!(parse("%Y%m%d", "2020111"), Ok("20201101".into()));
        assert_eq!(parse("%Y%m%d", "2020110"), Ok("20200110".into()));
        assert_eq!(parse("%Y%m%d", "20201231"), Ok("20201231".into()));
        // `re.match` stops at the first complete match: %m takes "12", %d takes "3" (its
        // two-digit alternatives fail on "32") and the "2" left over is "unconverted data".
        assert_eq!(parse("%m%d", "1231"), Ok("19001231".into()));
        assert_eq!(parse("%m%d", "1232"), Err(DateError::TrailingCharacters));
    }

    #[test]
    fn space_padded_day_and_whitespace_runs() {
        assert_eq!(parse("%Y-%m-%d", "2020-01- 5"), Ok("20200105".into()));
        assert_eq!(parse("%Y %m %d", "2020 1  5"), Ok("20200105".into()));
        assert_eq!(parse("%Y %m %d", "2020\t1 \u{a0}5"), Ok("20200105".into()));
        assert_eq!(parse("%Y %m", "20201"), Err(DateError::NoMatch));
    }

    #[test]
    fn month_names_and_case_insensitive_literals() {
        assert_eq!(parse("%d %b %Y", "14 MAR 1985"), Ok("19850314".into()));
        assert_eq!(parse("%d %B %Y", "14 march 1985"), Ok("19850314".into()));
        assert_eq!(parse("%d %b %Y", "14 Mrz 1985"), Err(DateError::NoMatch));
        assert_eq!(parse("%Y-%m-%dT", "1985-03-14t"), Ok("19850314".into()));
    }

    #[test]
    fn two_digit_years_pivot_at_68() {
        assert_eq!(parse("%y%m%d", "680101"), Ok("20680101".into()));
        assert_eq!(parse("%y%m%d", "690101"), Ok("19690101".into()));
    }

    #[test]
    fn calendar_validity() {
        assert_eq!(parse("%Y-%m-%d", "2000-02-29"), Ok("20000229".into()));
        assert_eq!(
            parse("%Y-%m-%d", "1900-02-29"),
            Err(DateError::NotACalendarDate)
        );
        assert_eq!(
            parse("%Y-%m-%d", "2021-04-31"),
            Err(DateError::NotACalendarDate)
        );
        assert_eq!(
            parse("%Y-%m-%d", "0000-01-01"),
            Err(DateError::NotACalendarDate)
        );
        // Without a year Python computes in 1900, which has no 29 February.
        assert_eq!(parse("%m-%d", "02-29"), Err(DateError::NotACalendarDate));
        assert_eq!(parse("%m-%d", "02-28"), Ok("19000228".into()));
        // glibc's strftime does not pad years below 1000.
        assert_eq!(parse("%Y-%m-%d", "0999-01-02"), Ok("9990102".into()));
    }

    #[test]
    fn non_ascii_digits_are_not_digits() {
        assert_eq!(parse("%Y-%m-%d", "１９８５-03-14"), Err(DateError::NoMatch));
    }

    #[test]
    fn percent_literal() {
        assert_eq!(parse("%Y%%%m%%%d", "1985%03%14"), Ok("19850314".into()));
    }

    #[test]
    fn rejected_formats() {
        for (format, needle) in [
            ("%Y-%m-%d %H", "'%H' is not supported"),
            ("%Y-%j", "'%j' is not supported"),
            ("%Y-%m-%", "lone '%'"),
            ("%Y-%m-%d-%y", "'%y' sets a date field that '%Y'"),
            ("%m %b", "'%b' sets a date field that '%m'"),
            ("%d%d", "'%d' sets a date field that '%d'"),
        ] {
            let err = DateFormat::compile(format).expect_err(format);
            assert!(err.contains(needle), "{format}: {err}");
        }
    }
}
