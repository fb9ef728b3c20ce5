//! IDAT at rest: the key, and XChaCha20-Poly1305 sealing.
//!
//! Each record's IDAT is sealed on its own with a fresh random 24-byte nonce (XChaCha's
//! nonce is long enough that random nonces never collide in practice, so no nonce counter has
//! to survive crashes) and the record's `local_id` as associated data. The AAD binds the
//! ciphertext to its record: copying one record's sealed IDAT into another record's value makes
//! it fail authentication instead of silently answering a `send_idat` task with the wrong
//! patient's data.
//!
//! Sealed layout: `nonce (24) ‖ ciphertext ‖ tag (16)`.
//!
//! The store also keeps a *key check* in `meta`: a constant sealed under the key when the store
//! was created. Opening it at start-up tells "wrong key file configured" ([`StoreError::WrongKey`])
//! apart from "one record is damaged" ([`StoreError::Corrupt`]) before any task is touched.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::Rng as _;
use zeroize::{Zeroize, Zeroizing};

use super::error::StoreError;

pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const KEY_LEN: usize = 32;

/// HKDF `info` labels of the keys derived from the IDAT key. Never change one: what was sealed
/// or keyed under it would no longer open.
const FILTER_SEAL_INFO: &[u8] = b"ttp-agent/store/filter-seal/v1";
const FILTER_INDEX_INFO: &[u8] = b"ttp-agent/store/filter-index/v1";
const TASK_SEAL_INFO: &[u8] = b"ttp-agent/store/task-seal/v1";
const BACKUP_INFO: &[u8] = b"ttp-agent/backup/v1";
const DISCLOSURE_CHAIN_INFO: &[u8] = b"ttp-agent/store/disclosure-chain/v1";

/// Bytes of a keyed filter digest in the filter index.
pub(crate) const FILTER_TAG_LEN: usize = 16;

/// The 32-byte key that seals IDAT at rest. Zeroed when dropped; `Debug` never shows it.
pub struct IdatKey(Box<[u8; KEY_LEN]>);

impl IdatKey {
    /// Reads a key file. Accepted contents: exactly 32 raw bytes, or text holding 64 hex
    /// characters or the standard base64 of 32 bytes (surrounding whitespace, such as a
    /// trailing newline, is ignored). Errors name the path and the expected formats, never
    /// the file's content.
    pub fn from_file(path: &Path) -> Result<IdatKey, StoreError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::KeyFile {
            path: path.to_path_buf(),
            problem: format!("cannot read it: {e}"),
        })?);
        warn_if_readable_by_others(path);
        parse_key(&bytes).map_err(|problem| StoreError::KeyFile {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// A key from bytes the caller already read from `path` (the configuration loads every
    /// secret file itself); same formats and errors as [`IdatKey::from_file`].
    pub fn from_key_file_bytes(bytes: &[u8], path: &Path) -> Result<IdatKey, StoreError> {
        parse_key(bytes).map_err(|problem| StoreError::KeyFile {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// A new random key from the operating system's CSPRNG (via `rand`'s thread RNG).
    pub fn generate() -> IdatKey {
        let mut key = Box::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(&mut key[..]);
        IdatKey(key)
    }

    /// The key as key-file text: 64 lowercase hex characters and a newline. The caller writes
    /// it to a file only it can read, and should zeroize the string afterwards.
    pub fn to_file_text(&self) -> String {
        let mut text = hex::encode(&self.0[..]);
        text.push('\n');
        text
    }

    pub(crate) fn cipher(&self) -> IdatCipher {
        IdatCipher::from_key(&self.0)
    }

    /// The IDAT cipher and the keys derived from the IDAT key (see [`StoreKeys`]).
    pub(crate) fn store_keys(&self) -> StoreKeys {
        StoreKeys {
            idat: self.cipher(),
            filter: IdatCipher::from_key(&self.derive(FILTER_SEAL_INFO)),
            task: IdatCipher::from_key(&self.derive(TASK_SEAL_INFO)),
            filter_index: self.derive(FILTER_INDEX_INFO),
            backup: self.derive(BACKUP_INFO),
            disclosure_chain: self.derive(DISCLOSURE_CHAIN_INFO),
        }
    }

    /// HKDF-SHA256 (RFC 5869) of the IDAT key with no salt (the key is uniformly random already)
    /// and `info` as the domain separation: one key per purpose, none usable for another.
    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0[..]);
        // 32 bytes are far below HKDF-SHA256's limit of 255 × 32.
        if hk.expand(info, &mut out[..]).is_err() {
            unreachable!("HKDF-SHA256 expands to 32 bytes");
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> IdatKey {
        IdatKey(Box::new(bytes))
    }
}

impl Clone for IdatKey {
    fn clone(&self) -> Self {
        IdatKey(Box::new(*self.0))
    }
}

impl Drop for IdatKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for IdatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdatKey(<redacted>)")
    }
}

/// Parses key-file content. The error text describes the shape only (lengths, formats).
fn parse_key(bytes: &[u8]) -> Result<IdatKey, String> {
    const EXPECTED: &str =
        "expected exactly 32 raw bytes, 64 hex characters, or the base64 of 32 bytes";
    // A text key is never 32 bytes long (hex is 64, base64 43 or 44), so 32 bytes are a raw
    // key -- unless they are all text, which a random key is with probability < 2^-45: then
    // they are a mistake (e.g. the base64 of a 24-byte key) and must not become a key.
    let looks_like_text = bytes
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if bytes.len() == KEY_LEN && !looks_like_text {
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        return Ok(IdatKey(key));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("{EXPECTED}; found {} bytes of binary data", bytes.len()))?
        .trim();
    if text.is_empty() {
        return Err(format!("the file is empty; {EXPECTED}"));
    }
    let decoded = Zeroizing::new(if text.len() == 2 * KEY_LEN {
        hex::decode(text)
            .map_err(|_| format!("64 characters long but not valid hex; {EXPECTED}"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| {
                format!(
                    "{} characters of text that are neither 64 hex characters nor valid base64; {EXPECTED}",
                    text.len()
                )
            })?
    });
    if decoded.len() != KEY_LEN {
        return Err(format!(
            "the text decodes to {} bytes, not 32; {EXPECTED}",
            decoded.len()
        ));
    }
    let mut key = Box::new([0u8; KEY_LEN]);
    key.copy_from_slice(&decoded);
    Ok(IdatKey(key))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the IDAT key file is accessible to group or others; restrict it (chmod 600)"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The AEAD instance built from an [`IdatKey`]. The key schedule is zeroed on drop (the
/// `zeroize` feature of `chacha20poly1305`).
pub(crate) struct IdatCipher {
    aead: XChaCha20Poly1305,
}

/// Everything the store seals or keys, all from the one IDAT key the site configures.
pub(crate) struct StoreKeys {
    /// Seals IDAT (the IDAT key itself).
    pub idat: IdatCipher,
    /// Seals Bloom filters in records (AAD: the local id).
    pub filter: IdatCipher,
    /// Seals stored tasks, which carry filters (AAD: the task key).
    pub task: IdatCipher,
    /// HMAC-SHA256 key of the filter index.
    filter_index: Zeroizing<[u8; KEY_LEN]>,
    /// Root of a backup's keys (see `backup`).
    pub backup: Zeroizing<[u8; KEY_LEN]>,
    /// HMAC-SHA256 key of the disclosure log's chain (see `disclosures`).
    disclosure_chain: Zeroizing<[u8; KEY_LEN]>,
}

impl StoreKeys {
    pub(crate) fn disclosure_chain(&self) -> &[u8] {
        &self.disclosure_chain[..]
    }

    /// The filter index's digest of a filter: HMAC-SHA256 under a key derived from the IDAT key,
    /// truncated. Without the key, a guessed name and birth date cannot be checked against the
    /// index (a plain hash could be).
    pub(crate) fn filter_tag(&self, filter: &[u8]) -> [u8; FILTER_TAG_LEN] {
        let full = hmac_sha256(&self.filter_index[..], &[filter]);
        let mut out = [0u8; FILTER_TAG_LEN];
        out.copy_from_slice(&full[..FILTER_TAG_LEN]);
        out
    }
}

/// HMAC-SHA256 of the concatenated `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac as _};
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Authentication failed: wrong key, or the sealed bytes / AAD were altered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthFailed;

impl IdatCipher {
    pub(crate) fn from_key(key: &[u8; KEY_LEN]) -> IdatCipher {
        let key: &Key = key.into();
        IdatCipher {
            aead: XChaCha20Poly1305::new(key),
        }
    }

    /// Seals a plaintext that `write` appends to a buffer. `plaintext_len` must be exact: the
    /// buffer is allocated once, so no reallocation leaves plaintext copies in freed memory.
    pub(crate) fn seal_with(
        &self,
        aad: &[u8],
        plaintext_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = XNonce::default();
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = Zeroizing::new(Vec::with_capacity(SEAL_OVERHEAD + plaintext_len));
        buf.extend_from_slice(&nonce);
        write(&mut buf);
        debug_assert_eq!(
            buf.len(),
            NONCE_LEN + plaintext_len,
            "plaintext length hint"
        );
        // XChaCha20-Poly1305 only refuses messages beyond 256 GiB.
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, aad, (&mut buf[NONCE_LEN..]).into())
            .map_err(|_| StoreError::Codec {
                what: "sealed IDAT",
                detail: format!("{plaintext_len} bytes are too long to seal"),
            })?;
        buf.extend_from_slice(&tag);
        // The buffer now holds ciphertext only; hand it out without the zeroizing wrapper.
        Ok(std::mem::take(&mut *buf))
    }

    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal_with(aad, plaintext.len(), |buf| buf.extend_from_slice(plaintext))
    }

    /// Opens a sealed value; the plaintext is zeroed when the returned buffer drops.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AuthFailed> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthFailed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| AuthFailed)?;
        let tag = Tag::try_from(tag).map_err(|_| AuthFailed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        self.aead
            .decrypt_inout_detached(&nonce, aad, (&mut buf[..]).into(), &tag)
            .map_err(|_| AuthFailed)?;
        Ok(buf)
    }

    /// Seals with a nonce the caller guarantees unique under this key (a backup's chunks:
    /// random file nonce ‖ chunk number). Returns `ciphertext ‖ tag`, no nonce.
    pub(crate) fn seal_at(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let nonce = XNonce::from(*nonce);
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, aad, (&mut buf[..]).into())
            .map_err(|_| StoreError::Codec {
                what: "backup chunk",
                detail: "too long to seal".to_string(),
            })?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    /// Opens what [`IdatCipher::seal_at`] sealed.
    pub(crate) fn open_at(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AuthFailed> {
        let Some(split) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(AuthFailed);
        };
        let (ciphertext, tag) = sealed.split_at(split);
        let tag = Tag::try_from(tag).map_err(|_| AuthFailed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        self.aead
            .decrypt_inout_detached(&XNonce::from(*nonce), aad, (&mut buf[..]).into(), &tag)
            .map_err(|_| AuthFailed)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_formats_are_accepted() {
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let hex_text = format!("{}\n", hex::encode(raw));
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw);
        for content in [
            raw.to_vec(),
            hex_text.into_bytes(),
            hex::encode_upper(raw).into_bytes(),
            format!("  {b64}\r\n").into_bytes(),
            b64_nopad.into_bytes(),
        ] {
            let key = parse_key(&content).expect("valid key file");
            assert_eq!(*key.0, raw);
        }
    }

    #[test]
    fn bad_key_files_are_rejected_without_echoing_content() {
        let secretish = "correct horse battery staple secret";
        for content in [
            Vec::new(),
            b"\n".to_vec(),
            vec![0xff; 31],
            b"0123456789abcdef0123456789abcdef".to_vec(),
            vec![0xfe; 33],
            secretish.as_bytes().to_vec(),
            "zz".repeat(32).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode([1u8; 24])
                .into_bytes(),
        ] {
            let err = match parse_key(&content) {
                Ok(_) => panic!("{} bytes accepted", content.len()),
                Err(e) => e,
            };
            assert!(!err.contains("horse"), "{err}");
            assert!(err.contains("expected"), "{err}");
        }
    }

    #[test]
    fn generated_keys_round_trip_through_file_text_and_differ() {
        let a = IdatKey::generate();
        let b = IdatKey::generate();
        assert_ne!(*a.0, *b.0);
        let text = a.to_file_text();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(*parse_key(text.as_bytes()).expect("own format").0, *a.0);
    }

    #[test]
    fn debug_is_redacted() {
        let key = IdatKey::from_bytes([0x41; 32]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "IdatKey(<redacted>)");
    }

    #[test]
    fn seal_open_round_trip_binds_aad_and_key() {
        let cipher = IdatKey::from_bytes([3; 32]).cipher();
        let sealed = cipher
            .seal(b"case-1", b"synthetic plaintext")
            .expect("seals");
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 19);
        assert_eq!(
            &cipher.open(b"case-1", &sealed).expect("opens")[..],
            b"synthetic plaintext"
        );
        // Same plaintext, fresh nonce: ciphertexts differ.
        assert_ne!(
            sealed,
            cipher
                .seal(b"case-1", b"synthetic plaintext")
                .expect("seals")
        );
        assert_eq!(cipher.open(b"case-2", &sealed), Err(AuthFailed));
        let other = IdatKey::from_bytes([4; 32]).cipher();
        assert_eq!(other.open(b"case-1", &sealed), Err(AuthFailed));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(cipher.open(b"case-1", &flipped), Err(AuthFailed));
        assert_eq!(cipher.open(b"case-1", &sealed[..10]), Err(AuthFailed));
    }
}
