//! Secret material (seeds, keys, passwords): zeroised on drop, never printed.

use zeroize::Zeroizing;

/// Bytes that must not leak. `Debug` and `Display` print `<redacted>`; the memory is wiped on
/// drop. There is deliberately no `Serialize`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    pub fn from_text(text: &str) -> Secret {
        Secret::new(text.as_bytes().to_vec())
    }

    /// Access for the code that needs the value (key derivation, an HTTP header). Keep the
    /// borrow short and never format it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8, when it is text (API keys, passwords).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::from_text("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), b"hunter2-very-secret");
    }
}
