//! Bytes of a site export → text with `\n` line ends.
//!
//! Exports come as UTF-8 (with or without a byte-order mark) or, from German Excel and older
//! hospital systems, in a legacy single-byte encoding, almost always Windows-1252. The caller
//! may name the encoding; otherwise a file that is not valid UTF-8 is read as Windows-1252 and
//! a note says so (every byte sequence is valid Windows-1252, so a wrong guess shows as odd
//! umlauts in the note's advice, never as lost rows).
//!
//! Line ends become `\n` whatever they were (`\r\n` from Windows, a lone `\r` from old Mac
//! exports), so that line numbers in messages are the lines an editor shows.

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

/// The decoded text and what the reader decided on its own.
#[derive(Debug)]
pub struct Decoded {
    pub text: String,
    /// Set when the encoding was detected rather than given or UTF-8.
    pub note: Option<String>,
}

/// The encoding an `--encoding` label names (`windows-1252`, `latin1`, `utf-8`, …; the
/// WHATWG labels).
pub fn encoding_for_label(label: &str) -> Result<&'static Encoding, String> {
    Encoding::for_label_no_replacement(label.trim().as_bytes()).ok_or_else(|| {
        format!(
            "`{label}` is not an encoding name; use for example `utf-8`, `windows-1252` or \
             `iso-8859-15`"
        )
    })
}

/// Decodes `bytes`. With `requested` the bytes must be valid in it; without, UTF-8 is tried
/// first and Windows-1252 is the fallback. The error names the line of the first byte that is
/// not valid, never the bytes.
pub fn decode(bytes: &[u8], requested: Option<&'static Encoding>) -> Result<Decoded, String> {
    let (bytes, had_bom) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    let (text, note) = match requested {
        Some(enc) if enc == UTF_8 || had_bom => (strict_utf8(bytes)?, None),
        Some(enc) => match enc.decode_without_bom_handling_and_without_replacement(bytes) {
            Some(text) => (text.into_owned(), None),
            None => {
                return Err(format!(
                    "is not valid {} (first at line {})",
                    enc.name(),
                    first_bad_line(bytes, enc)
                ));
            }
        },
        None => match std::str::from_utf8(bytes) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => {
                let (text, _) = WINDOWS_1252.decode_without_bom_handling(bytes);
                (
                    text.into_owned(),
                    Some(
                        "the file is not UTF-8; it was read as Windows-1252, the usual encoding \
                         of German Excel exports (name another with --encoding, e.g. \
                         iso-8859-15, if umlauts come out wrong)"
                            .to_owned(),
                    ),
                )
            }
        },
    };
    Ok(Decoded {
        text: unix_line_ends(&text),
        note,
    })
}

fn strict_utf8(bytes: &[u8]) -> Result<String, String> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!(
            "is not valid UTF-8 (first at line {line}); if it comes from Excel or an older \
             system, try --encoding windows-1252"
        )
    })
}

fn first_bad_line(bytes: &[u8], enc: &'static Encoding) -> usize {
    let mut line = 1;
    for chunk in bytes.split_inclusive(|&b| b == b'\n') {
        if enc
            .decode_without_bom_handling_and_without_replacement(chunk)
            .is_none()
        {
            return line;
        }
        line += 1;
    }
    line
}

/// `\r\n` and a lone `\r` become `\n`.
pub fn unix_line_ends(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_or_without_a_bom_is_read_as_it_is() {
        let d = decode("\u{feff}given\nJürgen\n".as_bytes(), None).unwrap();
        assert_eq!(d.text, "given\nJürgen\n");
        assert!(d.note.is_none());
    }

    #[test]
    fn windows_1252_is_detected_with_a_note_or_read_when_named() {
        let bytes = b"given;family\nJ\xfcrgen;M\xfcller\n";
        let d = decode(bytes, None).unwrap();
        assert_eq!(d.text, "given;family\nJürgen;Müller\n");
        assert!(d.note.unwrap().contains("Windows-1252"));
        let named = decode(bytes, Some(encoding_for_label("windows-1252").unwrap())).unwrap();
        assert_eq!(named.text, d.text);
        assert!(named.note.is_none());
    }

    #[test]
    fn a_named_encoding_that_does_not_fit_names_the_line_not_the_bytes() {
        let e = decode(b"given\nok\nJ\xfcrgen\n", Some(UTF_8)).unwrap_err();
        assert!(e.contains("line 3") && e.contains("windows-1252"), "{e}");
        assert!(encoding_for_label("klingon").is_err());
    }

    #[test]
    fn every_kind_of_line_end_becomes_a_newline() {
        assert_eq!(unix_line_ends("a\r\nb\rc\n\r\n"), "a\nb\nc\n\n");
    }
}
