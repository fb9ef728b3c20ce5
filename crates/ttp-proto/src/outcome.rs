//! One line about an error response, for logs and the status page.
//!
//! When a call fails, the agent records what the server said. Gateways answer with a FHIR
//! `OperationOutcome`; proxies in front of them with HTML pages; some with nothing or with
//! plain text. [`summarize_error_body`] turns any of these into a short single line. It reads
//! arbitrary bytes and never panics, and it bounds the result so a megabyte of HTML cannot
//! flood a log.

use serde_json::Value as Json;

/// Upper bound (in characters) of an `OperationOutcome` summary.
const MAX_OUTCOME_CHARS: usize = 500;
/// Upper bound (in characters) of a summary of any other body.
const MAX_TEXT_CHARS: usize = 200;
/// Only this much of a non-JSON body is looked at.
const MAX_SCAN_BYTES: usize = 64 * 1024;

/// Summarises an error body:
///
/// * an `OperationOutcome`: `"severity code: diagnostics"` per issue, joined with `"; "`
///   (`details.text` stands in for missing diagnostics), at most ~500 characters;
/// * HTML: the page's `<title>`, or `"HTML error page"`;
/// * nothing (or only whitespace): `"empty body"`;
/// * anything else: its first ~200 printable characters, control characters replaced.
pub fn summarize_error_body(content_type: Option<&str>, body: &[u8]) -> String {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = body.trim_ascii();
    if body.is_empty() {
        return "empty body".to_owned();
    }
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();

    if (content_type.contains("json") || body.starts_with(b"{"))
        && let Ok(json) = serde_json::from_slice::<Json>(body)
        && json.get("resourceType").and_then(Json::as_str) == Some("OperationOutcome")
    {
        return summarize_outcome(&json);
    }

    let scanned = &body[..body.len().min(MAX_SCAN_BYTES)];
    if content_type.contains("html")
        || starts_with_ignore_case(scanned, b"<!doctype html")
        || starts_with_ignore_case(scanned, b"<html")
    {
        return html_title(scanned).unwrap_or_else(|| "HTML error page".to_owned());
    }
    one_line(&String::from_utf8_lossy(scanned), MAX_TEXT_CHARS)
}

fn summarize_outcome(outcome: &Json) -> String {
    let issues = outcome
        .get("issue")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if issues.is_empty() {
        return "OperationOutcome without issues".to_owned();
    }
    let text_of =
        |issue: &Json, key: &str| issue.get(key).and_then(Json::as_str).map(str::to_owned);
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| {
            let severity = text_of(issue, "severity").unwrap_or_else(|| "?".to_owned());
            let code = text_of(issue, "code").unwrap_or_else(|| "?".to_owned());
            let detail = text_of(issue, "diagnostics").or_else(|| {
                issue
                    .pointer("/details/text")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            });
            match detail {
                Some(detail) => format!("{severity} {code}: {detail}"),
                None => format!("{severity} {code}"),
            }
        })
        .collect();
    one_line(&lines.join("; "), MAX_OUTCOME_CHARS)
}

/// The text of the first `<title>` element, whitespace collapsed, common entities decoded.
fn html_title(html: &[u8]) -> Option<String> {
    let open = find_ignore_case(html, b"<title")?;
    let after_open = &html[open..];
    let content_start = open + after_open.iter().position(|&b| b == b'>')? + 1;
    let content = &html[content_start..];
    let content_end = find_ignore_case(content, b"</title").unwrap_or(content.len());
    let raw = String::from_utf8_lossy(&content[..content_end]);
    let decoded = raw
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let title = one_line(&decoded, MAX_TEXT_CHARS);
    (!title.is_empty()).then_some(title)
}

/// `text` on one line: control characters and whitespace runs become one space, at most
/// `max` characters (an ellipsis marks a cut).
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = chars > 0;
            continue;
        }
        if chars + usize::from(pending_space) >= max {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_and_cuts() {
        assert_eq!(one_line("  a \n\t b\u{0}c  ", 100), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
        assert_eq!(one_line("ab cd", 3), "ab…");
        assert_eq!(one_line("", 3), "");
    }

    #[test]
    fn find_ignore_case_handles_short_haystacks() {
        assert_eq!(find_ignore_case(b"<ti", b"<title"), None);
        assert_eq!(find_ignore_case(b"x<TITLE>", b"<title"), Some(1));
    }
}
