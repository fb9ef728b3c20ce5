//! Text of a site export → header and rows, each row with its line in the file.
//!
//! The separator is `,` unless the caller names one or the header line says otherwise: German
//! Excel writes `;` (the comma is the decimal separator there), some systems a tab. The header
//! line is where the guess is safe: it holds column names, not values with commas in them.

/// A row as read, before any check of its values.
#[derive(Debug)]
pub struct Row {
    /// 1-based line in the file where the row starts (the header is line 1).
    pub line: u64,
    /// The fields, or why the row could not be read as CSV (never a value).
    pub fields: Result<csv::StringRecord, String>,
}

#[derive(Debug)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
    /// Set when the separator was detected rather than given or `,`.
    pub note: Option<String>,
}

/// The separator an argument names: one ASCII character, `\t`/`tab` for a tab.
pub fn delimiter_for(arg: &str) -> Result<u8, String> {
    match arg {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        s if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(format!(
            "`{arg}` is not a column separator; use one character such as `;` or `,`, or `tab`"
        )),
    }
}

/// The separator the header line uses: the most frequent of `,`, `;` and tab outside quotes.
fn detect(header_line: &str) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in header_line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(c) = counts.iter_mut().find(|(d, _)| *d == b) {
            c.1 += 1;
        }
    }
    // A stable choice: the comma wins ties.
    counts
        .iter()
        .max_by_key(|(d, n)| (*n, *d == b','))
        .map_or(b',', |(d, _)| *d)
}

/// Reads `text` (with `\n` line ends). The header row must be readable; every other row is
/// returned, readable or not, so that the caller can report all problems at once.
pub fn read(text: &str, delimiter: Option<u8>) -> Result<Table, String> {
    let (delimiter, note) = match delimiter {
        Some(d) => (d, None),
        None => {
            let d = detect(text.lines().next().unwrap_or(""));
            let note = (d != b',').then(|| {
                format!(
                    "columns are separated by {} (detected from the header line; name the \
                     separator with --delimiter)",
                    if d == b'\t' { "tabs" } else { "`;`" }
                )
            });
            (d, note)
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("not readable as CSV: {}", describe(&e)))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let width = header.len();
    let mut rows = Vec::new();
    for result in reader.records() {
        let row = match result {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let fields = if record.len() == width {
                    Ok(record)
                } else {
                    Err(format!(
                        "has {} fields, the header has {width}{}",
                        record.len(),
                        if record.len() == 1 && delimiter == b',' {
                            " (is the file separated by `;`? name it with --delimiter)"
                        } else {
                            ""
                        }
                    ))
                };
                Row { line, fields }
            }
            Err(e) => Row {
                line: e.position().map_or(0, |p| p.line()),
                fields: Err(describe(&e)),
            },
        };
        rows.push(row);
    }
    Ok(Table { header, rows, note })
}

/// A CSV error in words that never contain the data.
fn describe(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => "is not valid CSV (check quotes and separators)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_separator_is_taken_from_the_header_line() {
        assert_eq!(detect("local_id;given;family"), b';');
        assert_eq!(detect("local_id,given,family"), b',');
        assert_eq!(detect("local_id\tgiven"), b'\t');
        assert_eq!(detect("\"a;b\",c"), b',');
        assert_eq!(detect("local_id"), b',');
        let t = read("local_id;given\nA1;Anna\n", None).unwrap();
        assert_eq!(t.header, ["local_id", "given"]);
        assert!(t.note.unwrap().contains("`;`"));
        assert_eq!(t.rows[0].fields.as_ref().unwrap().get(1), Some("Anna"));
    }

    #[test]
    fn every_row_keeps_its_file_line_and_bad_rows_do_not_stop_the_rest() {
        let t = read(
            "local_id,given\nA1,Anna\nA2\n\"A3\nstill A3\",Bea\nA4,Carl\n",
            None,
        )
        .unwrap();
        let lines: Vec<u64> = t.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4, 6]);
        assert!(t.rows[1].fields.as_ref().unwrap_err().contains("1 fields"));
        assert!(t.rows[3].fields.is_ok());
    }

    #[test]
    fn separators_are_named_by_one_character() {
        assert_eq!(delimiter_for(";"), Ok(b';'));
        assert_eq!(delimiter_for("tab"), Ok(b'\t'));
        assert!(delimiter_for(";;").is_err());
        assert!(delimiter_for("\"").is_err());
    }
}
