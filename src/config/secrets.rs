//! Reading the secrets the configuration points to.
//!
//! The configuration holds only *paths* to secrets, so it can be shown, diffed and logged.
//! The files are read once, at start-up, by [`super::AgentConfig::load_secrets`]: one trailing
//! newline (`\n` or `\r\n`, as `echo` and editors leave it) is removed, an empty file is an
//! error, and a file that group or others may read yields a warning (not an error: container
//! runtimes often mount secrets world-readable inside a private mount namespace).
//!
//! All secret files are treated as text (the IDAT key too: keep it hex- or base64-encoded, as
//! a raw binary key could end in a byte that looks like a newline).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ttp_encode::Secret;
use zeroize::Zeroizing;

use super::error::{ConfigError, KeyPath, Origin, SecretProblem};

/// Secret files are small; a bigger file is a wrong path (a log file, a device).
pub(crate) const MAX_SECRET_SIZE: usize = 64 * 1024;

/// The secrets named by the configuration. `Debug` shows none of them.
#[derive(Debug)]
#[non_exhaustive]
pub struct Secrets {
    /// `[ttp] api_key_file`: the dispatcher API key.
    pub api_key: Option<Secret>,
    /// `[ttp] basic_password_file`: the HTTP Basic password.
    pub basic_password: Option<Secret>,
    /// `[store] idat_key_file`: the key that encrypts IDAT at rest.
    pub idat_key: Secret,
    /// `[admin] token_file`: the bearer token the admin endpoints require.
    pub admin_token: Option<Secret>,
    /// `[handover] webhook_token_file`: the bearer token of the pseudonym delivery webhook.
    pub handover_token: Option<Secret>,
    /// `[encoding] seeds_file` or `secret_file`: the encoding profile's seeds or clkhash secret.
    pub encoding: Option<Secret>,
    /// `[ttp.oauth2] client_secret_file`: the OAuth2 client secret.
    pub oauth2_client_secret: Option<Secret>,
    /// Files other users may read. Report them (the `check` command, a log line at start-up).
    pub warnings: Vec<SecretFileWarning>,
}

/// A secret file whose permissions let group or others read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFileWarning {
    pub key: KeyPath,
    pub path: PathBuf,
    /// The permission bits (`0o644`).
    pub mode: u32,
}

impl fmt::Display for SecretFileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the secret file {} named by `{}` can be read by {} (mode {:04o}); restrict it, \
             e.g. with `chmod 600 {}`",
            self.path.display(),
            self.key,
            if self.mode & 0o004 != 0 {
                "all users"
            } else {
                "its group"
            },
            self.mode,
            self.path.display(),
        )
    }
}

/// What a secret must look like beyond being non-empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretKind {
    /// Goes into an HTTP header or a request body: one line of UTF-8 without control
    /// characters (a stray line break would be a header-injection or a silent auth failure).
    Line,
    /// Key material: any bytes.
    Bytes,
    /// A bearer token others must not guess: a [`SecretKind::Line`] of at least
    /// [`MIN_TOKEN_CHARS`] characters, whatever the listener (a loopback port is reachable by
    /// every local user and, through a browser, by web pages).
    Token,
}

/// The shortest admin token accepted: 32 characters of hex are 128 bits.
pub(crate) const MIN_TOKEN_CHARS: usize = 32;

/// Reads one secret file.
pub(crate) fn read_secret(
    key: KeyPath,
    path: &Path,
    origin: &Origin,
    kind: SecretKind,
    warnings: &mut Vec<SecretFileWarning>,
) -> Result<Secret, ConfigError> {
    let fail = |problem| ConfigError::SecretFile {
        key,
        path: path.to_owned(),
        origin: origin.clone(),
        problem,
    };
    // Metadata of the opened file, not of the path, so the checks apply to what is read.
    let file = File::open(path).map_err(|e| fail(SecretProblem::Unreadable(e)))?;
    let metadata = file
        .metadata()
        .map_err(|e| fail(SecretProblem::Unreadable(e)))?;
    if !metadata.is_file() {
        return Err(fail(SecretProblem::NotARegularFile));
    }
    if let Some(mode) = readable_by_others(&metadata) {
        warnings.push(SecretFileWarning {
            key,
            path: path.to_owned(),
            mode,
        });
    }

    // Capacity for the whole allowed size up front: the buffer never reallocates, so no
    // unwiped copy of the secret is left behind on the heap.
    let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_SECRET_SIZE + 1));
    file.take(MAX_SECRET_SIZE as u64 + 1)
        .read_to_end(&mut buffer)
        .map_err(|e| fail(SecretProblem::Unreadable(e)))?;
    if buffer.len() > MAX_SECRET_SIZE {
        return Err(fail(SecretProblem::TooLarge {
            limit: MAX_SECRET_SIZE,
        }));
    }
    let newline = if buffer.ends_with(b"\r\n") {
        2
    } else {
        usize::from(buffer.ends_with(b"\n"))
    };
    let len = buffer.len() - newline;
    buffer.truncate(len);
    if buffer.is_empty() {
        return Err(fail(SecretProblem::Empty));
    }
    if matches!(kind, SecretKind::Line | SecretKind::Token) {
        let text = std::str::from_utf8(&buffer).map_err(|_| fail(SecretProblem::NotText))?;
        if text.chars().any(char::is_control) {
            return Err(fail(SecretProblem::ControlCharacter));
        }
        let found = text.chars().count();
        if kind == SecretKind::Token && found < MIN_TOKEN_CHARS {
            return Err(fail(SecretProblem::TooShort { found }));
        }
    }
    Ok(Secret::new(std::mem::take(&mut *buffer)))
}

#[cfg(unix)]
fn readable_by_others(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}
