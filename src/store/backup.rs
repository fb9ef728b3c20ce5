//! Portable backups: one encrypted, authenticated file that does not depend on redb's format.
//!
//! A backup holds the primary tables (`meta`, `records`, `tasks`, `history`, `audit`,
//! `psn_log`) as raw key/value pairs; the derived tables (indexes, record counters) are rebuilt
//! on restore, which also repairs any drift in them. Because the format is independent of
//! redb's file, a backup also carries a store across a redb file-format upgrade or out of a
//! database file that no longer opens.
//!
//! # Crypto
//!
//! Everything after the header is encrypted and authenticated, so a backup shows nothing of the
//! store (not even local ids) and cannot be altered without the IDAT key: the frame stream is
//! cut into chunks of 64 KiB, each sealed with XChaCha20-Poly1305 under
//! `k_enc = HMAC-SHA256(k_backup, "encrypt")`, where `k_backup` is derived from the IDAT key
//! (HKDF, see `crypto`). A chunk's nonce is the file's random 16-byte nonce ‖ the chunk number
//! (u64 BE), so chunks cannot be reordered, dropped or taken from another backup; its AAD is
//! SHA-256 of magic and header ‖ a byte that is 1 on the last chunk only, so the header cannot
//! be changed and a truncated file is noticed even at a chunk boundary. The header carries a
//! key check, `HMAC-SHA256(k_backup, "key-check" ‖ nonce)`, which tells "made with another
//! IDAT key" apart from "altered or damaged". Restoring needs the key of the store the backup
//! was made from.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! "ttp-agent-store-backup\n"          magic, 23 bytes
//! u32 len, JSON header                 {"format":2,"schema_version":..,"created_at":..,"agent_version":..,
//!                                       "nonce": hex 16 bytes, "key_check": hex 32 bytes}
//! chunks: u32 len, ciphertext ‖ tag    plaintext: the frame stream, 64 KiB per chunk
//! ```
//!
//! Frame stream (the plaintext):
//!
//! ```text
//! frames: u8 table (1..=6), u32 klen, key, u32 vlen, value
//! u8 0                                 end of frames
//! u64 frame count
//! ```
//!
//! Format 1 (development builds: plain frames, a SHA-256 checksum anyone could recompute) is
//! refused.
//!
//! The backup is written to `<file>.partial`, created exclusively (`O_EXCL | O_NOFOLLOW`, mode
//! 0600: a symlink planted there is never followed), fsynced, then renamed over `<file>`: a crash
//! or a full disk during a backup never leaves a truncated file under the final name. A restore
//! builds the new store in a sibling directory, verifies authenticity, key and schema there,
//! and only then renames it into place; it never overwrites an existing store.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::crypto::{IdatCipher, NONCE_LEN, StoreKeys, TAG_LEN, hmac_sha256};
use super::{
    AUDIT, At as _, DB_FILE, DISCLOSURE_PENDING, DISCLOSURES, Def, HISTORY, META, PSN_LOG, RECORDS,
    Store, StoreError, StoreOptions, TASKS, WITHDRAWN, durable_commit, error, meta, migrate,
    records, rtree, tasks, wtree,
};

const MAGIC: &[u8] = b"ttp-agent-store-backup\n";
const FORMAT: u32 = 2;
const END: u8 = 0;
const MAX_HEADER: u32 = 64 * 1024;
const MAX_KEY: u32 = 1024 * 1024;
const MAX_VALUE: u32 = 64 * 1024 * 1024;
/// Frames per write transaction while a restore loads a backup.
const RESTORE_BATCH: u64 = 10_000;
/// Plaintext bytes per sealed chunk.
const CHUNK: usize = 64 * 1024;
const FILE_NONCE_LEN: usize = 16;

/// The tables a backup holds, with their frame tags. Never renumber a tag.
const BACKED_UP: [(u8, Def); 9] = [
    (1, META),
    (2, RECORDS),
    (3, TASKS),
    (4, HISTORY),
    (5, AUDIT),
    (6, PSN_LOG),
    (7, DISCLOSURES),
    (8, DISCLOSURE_PENDING),
    (9, WITHDRAWN),
];

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    schema_version: u64,
    created_at: DateTime<Utc>,
    agent_version: String,
    /// Hex of the file's 16 random nonce bytes (format 2).
    #[serde(default)]
    nonce: String,
    /// Hex of the key check (format 2).
    #[serde(default)]
    key_check: String,
}

/// What a backup holds (returned by both [`Store::backup_to`] and [`Store::restore_from`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub schema_version: u64,
    /// When the backup was made.
    pub created_at: DateTime<Utc>,
    pub records: u64,
    pub tasks: u64,
    /// Day × task type history counters.
    pub history_rows: u64,
    pub audit_entries: u64,
    /// Size of the backup file.
    pub bytes: u64,
    /// SHA-256 of the whole file, hex: to compare copies (authenticity is the chunks' tags).
    pub sha256: String,
}

impl BackupSummary {
    fn new(schema_version: u64, created_at: DateTime<Utc>) -> BackupSummary {
        BackupSummary {
            schema_version,
            created_at,
            records: 0,
            tasks: 0,
            history_rows: 0,
            audit_entries: 0,
            bytes: 0,
            sha256: String::new(),
        }
    }

    fn count(&mut self, tag: u8) {
        match tag {
            2 => self.records += 1,
            3 => self.tasks += 1,
            4 => self.history_rows += 1,
            5 => self.audit_entries += 1,
            _ => {}
        }
    }
}

/// The keys of one backup file.
struct BackupKeys {
    cipher: IdatCipher,
    key_check: [u8; 32],
}

impl BackupKeys {
    fn new(keys: &StoreKeys, file_nonce: &[u8; FILE_NONCE_LEN]) -> BackupKeys {
        let enc = Zeroizing::new(hmac_sha256(&keys.backup[..], &[b"encrypt"]));
        BackupKeys {
            cipher: IdatCipher::from_key(&enc),
            key_check: hmac_sha256(&keys.backup[..], &[b"key-check", file_nonce]),
        }
    }
}

/// SHA-256 of magic ‖ header length ‖ header: the AAD prefix of every chunk.
fn header_digest(header_json: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(MAGIC);
    h.update((header_json.len() as u32).to_be_bytes());
    h.update(header_json);
    h.finalize().into()
}

fn chunk_nonce(file_nonce: &[u8; FILE_NONCE_LEN], chunk: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..FILE_NONCE_LEN].copy_from_slice(file_nonce);
    nonce[FILE_NONCE_LEN..].copy_from_slice(&chunk.to_be_bytes());
    nonce
}

fn chunk_aad(digest: &[u8; 32], last: bool) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[..32].copy_from_slice(digest);
    aad[32] = u8::from(last);
    aad
}

/// Counts and hashes every byte that goes into the file.
struct FileWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> FileWriter<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data)
    }
}

/// Buffers the frame stream and writes it as sealed chunks.
struct SealingWriter<W> {
    out: FileWriter<W>,
    keys: BackupKeys,
    file_nonce: [u8; FILE_NONCE_LEN],
    digest: [u8; 32],
    plain: Zeroizing<Vec<u8>>,
    chunk: u64,
}

impl<W: Write> SealingWriter<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.plain.extend_from_slice(data);
        // Strictly more than a chunk: the last chunk is sealed by `finish`, never here.
        while self.plain.len() > CHUNK {
            self.seal_chunk(CHUNK, false)?;
        }
        Ok(())
    }

    fn put_len(&mut self, len: usize) -> std::io::Result<()> {
        let len = u32::try_from(len)
            .map_err(|_| std::io::Error::other("a key or value is larger than 4 GiB"))?;
        self.put(&len.to_be_bytes())
    }

    fn seal_chunk(&mut self, n: usize, last: bool) -> std::io::Result<()> {
        let nonce = chunk_nonce(&self.file_nonce, self.chunk);
        let sealed = self
            .keys
            .cipher
            .seal_at(&nonce, &chunk_aad(&self.digest, last), &self.plain[..n])
            .map_err(std::io::Error::other)?;
        self.out.put(&(sealed.len() as u32).to_be_bytes())?;
        self.out.put(&sealed)?;
        self.plain.drain(..n);
        self.chunk += 1;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<FileWriter<W>> {
        let n = self.plain.len();
        self.seal_chunk(n, true)?;
        Ok(self.out)
    }
}

/// Hashes and counts every byte read from the file.
struct FileReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for FileReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Why a backup is refused, carried through `std::io::Error` (kind `InvalidData`) from the
/// chunk reader to [`bad`].
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, Refused(why))
}

/// Opens the sealed chunks and hands out the frame stream.
struct OpeningReader<R> {
    file: FileReader<R>,
    keys: BackupKeys,
    file_nonce: [u8; FILE_NONCE_LEN],
    digest: [u8; 32],
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    chunk: u64,
    ended: bool,
}

impl<R: Read> OpeningReader<R> {
    fn next_chunk(&mut self) -> std::io::Result<()> {
        let mut len = [0u8; 4];
        self.file.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > CHUNK + TAG_LEN {
            return Err(refused(
                "a chunk length is implausible (the file is damaged)",
            ));
        }
        let mut sealed = vec![0u8; len];
        self.file.read_exact(&mut sealed)?;
        let nonce = chunk_nonce(&self.file_nonce, self.chunk);
        let cipher = &self.keys.cipher;
        let (plain, last) = match cipher.open_at(&nonce, &chunk_aad(&self.digest, false), &sealed) {
            Ok(p) => (p, false),
            Err(_) => match cipher.open_at(&nonce, &chunk_aad(&self.digest, true), &sealed) {
                Ok(p) => (p, true),
                Err(_) => {
                    return Err(refused(
                        "it does not authenticate under this IDAT key: it was altered or damaged after it was written",
                    ));
                }
            },
        };
        self.plain = plain;
        self.pos = 0;
        self.chunk += 1;
        if last {
            self.ended = true;
            let mut rest = [0u8; 1];
            if self.file.read(&mut rest)? != 0 {
                return Err(refused("it has data after its last chunk"));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.ended {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads the frame stream's fields.
struct FrameReader<R> {
    inner: R,
}

impl<R: Read> FrameReader<R> {
    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)
    }

    fn take_u8(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }

    fn take_u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn take_u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn take_vec(&mut self, len: u32) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.take(&mut v)?;
        Ok(v)
    }
}

/// `<dir>/<prefix><file name><suffix>`: a sibling of `path` for temporary files.
fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

/// Makes a rename durable: fsync the directory that holds the renamed entry.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Creates the temporary file a backup is written to: exclusively, mode 0600, never through a
/// symlink. A regular file left there by an interrupted backup is removed first; anything else
/// (a symlink, a directory) is refused, not followed or replaced.
fn create_partial(partial: &Path) -> Result<File, StoreError> {
    match std::fs::symlink_metadata(partial) {
        Ok(meta) if meta.file_type().is_file() => {
            std::fs::remove_file(partial).map_err(|e| error::from_io(partial, e))?;
        }
        Ok(_) => {
            return Err(StoreError::Invalid {
                what: "backup temporary file",
                why: format!(
                    "{} exists and is not a regular file (a symlink?); it is not followed: remove it and run the backup again",
                    partial.display()
                ),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error::from_io(partial, e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(partial).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            StoreError::Invalid {
                what: "backup temporary file",
                why: format!(
                    "{} appeared while the backup started (another backup running?); it is not touched: try again",
                    partial.display()
                ),
            }
        } else {
            error::from_io(partial, e)
        }
    })
}

impl Store {
    /// Writes a consistent snapshot of the store to `path` (replacing an existing file there
    /// atomically; mode 0600), encrypted and authenticated (see the module documentation). The
    /// backup reads one redb snapshot: writers go on meanwhile.
    pub fn backup_to(&self, path: &Path) -> Result<BackupSummary, StoreError> {
        let partial = sibling(path, "", ".partial");
        let file = create_partial(&partial)?;
        let summary = match self.write_backup(file, &partial) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        let io = |e| error::from_io(path, e);
        std::fs::rename(&partial, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
        Ok(summary)
    }

    fn write_backup(&self, file: File, partial: &Path) -> Result<BackupSummary, StoreError> {
        let io = |e| error::from_io(partial, e);
        // One snapshot for every table: no write can land between two tables' iterations.
        let tx = self.read_tx()?;
        let schema_version = match rtree(&tx, META, &self.path)?.get(meta::SCHEMA_VERSION)? {
            None => 0,
            Some(v) => super::codec::read_u64(&v)
                .ok_or_else(|| self.corrupt("schema_version is not 8 bytes"))?,
        };
        let mut file_nonce = [0u8; FILE_NONCE_LEN];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut file_nonce);
        let keys = BackupKeys::new(&self.keys, &file_nonce);
        let header = Header {
            format: FORMAT,
            schema_version,
            created_at: Utc::now(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            nonce: hex::encode(file_nonce),
            key_check: hex::encode(keys.key_check),
        };
        let header_json = serde_json::to_vec(&header).map_err(|e| StoreError::Codec {
            what: "backup header",
            detail: e.to_string(),
        })?;
        let mut summary = BackupSummary::new(header.schema_version, header.created_at);
        let mut out = FileWriter {
            inner: BufWriter::new(file),
            hasher: sha2::Sha256::new(),
            bytes: 0,
        };
        out.put(MAGIC).map_err(io)?;
        out.put(&(header_json.len() as u32).to_be_bytes())
            .map_err(io)?;
        out.put(&header_json).map_err(io)?;
        let mut w = SealingWriter {
            out,
            keys,
            file_nonce,
            digest: header_digest(&header_json),
            plain: Zeroizing::new(Vec::with_capacity(2 * CHUNK)),
            chunk: 0,
        };
        let mut frames: u64 = 0;
        for (tag, def) in BACKED_UP {
            let tree = rtree(&tx, def, &self.path)?;
            for entry in tree.iter()? {
                let (key, value) = entry?;
                let (key, value) = (key.value(), value.value());
                w.put(&[tag]).map_err(io)?;
                w.put_len(key.len()).map_err(io)?;
                w.put(key).map_err(io)?;
                w.put_len(value.len()).map_err(io)?;
                w.put(value).map_err(io)?;
                frames += 1;
                summary.count(tag);
            }
        }
        w.put(&[END]).map_err(io)?;
        w.put(&frames.to_be_bytes()).map_err(io)?;
        let out = w.finish().map_err(io)?;
        let file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        summary.bytes = out.bytes;
        summary.sha256 = hex::encode(out.hasher.finalize());
        Ok(summary)
    }

    /// Restores `backup` into `opts.path`, which must not hold a store yet (move a damaged
    /// store aside first: [`StoreError::RestoreTargetExists`]). The store is built next to the
    /// target, checked (authenticity, IDAT key, schema, derived data rebuilt), and renamed into
    /// place only when complete. No agent may use the target path meanwhile.
    pub fn restore_from(backup: &Path, opts: &StoreOptions) -> Result<BackupSummary, StoreError> {
        let target = opts.path.as_path();
        if holds_data(target)? {
            return Err(StoreError::RestoreTargetExists {
                path: target.to_path_buf(),
            });
        }
        let staging = sibling(target, ".", ".restoring");
        if staging.exists() {
            // Left by an interrupted restore (the name is ours): start over.
            std::fs::remove_dir_all(&staging).map_err(|e| error::from_io(&staging, e))?;
        }
        let summary = match build_restored(backup, &staging, opts) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let io = |e| error::from_io(target, e);
        if target.exists() {
            // An empty directory (checked above): replace it.
            std::fs::remove_dir(target).map_err(io)?;
        }
        std::fs::rename(&staging, target).map_err(io)?;
        sync_parent(target).map_err(io)?;
        // Opening proves the result is a store this build accepts under this key.
        Store::open(opts)?.flush()?;
        Ok(summary)
    }
}

/// Whether `path` exists and is anything but an empty directory.
fn holds_data(path: &Path) -> Result<bool, StoreError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(error::from_io(path, e)),
    }
}

fn bad(backup: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::BadBackup {
        path: backup.to_path_buf(),
        detail: detail.into(),
    }
}

/// Maps a read error of the backup: truncation and refusals are a bad backup, the rest I/O.
fn read_error(backup: &Path, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(backup, "the file ends early (truncated copy?)"),
        std::io::ErrorKind::InvalidData => bad(backup, e.to_string()),
        _ => error::from_io(backup, e),
    }
}

/// The frame stream of a backup file being restored.
type BackupFrames = FrameReader<OpeningReader<BufReader<File>>>;

/// Reads the header and checks format, schema and key; returns the reader of the frame stream.
fn open_backup(backup: &Path, keys: &StoreKeys) -> Result<(Header, BackupFrames), StoreError> {
    let file = File::open(backup).map_err(|e| error::from_io(backup, e))?;
    let mut file = FileReader {
        inner: BufReader::new(file),
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    file.read_exact(&mut magic)
        .map_err(|_| bad(backup, "not a ttp-agent store backup"))?;
    if magic != MAGIC {
        return Err(bad(backup, "not a ttp-agent store backup"));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|e| read_error(backup, e))?;
    let header_len = u32::from_be_bytes(len);
    if header_len > MAX_HEADER {
        return Err(bad(backup, "the header length is implausible"));
    }
    let mut header_json = vec![0u8; header_len as usize];
    file.read_exact(&mut header_json)
        .map_err(|e| read_error(backup, e))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|e| bad(backup, format!("the header does not decode: {e}")))?;
    if header.format == 1 {
        return Err(bad(
            backup,
            "it is in format 1 (written by a development build, not encrypted, not authenticated), which this version does not restore; make a new backup with this version",
        ));
    }
    if header.format != FORMAT {
        return Err(bad(
            backup,
            format!(
                "backup format {} is not supported by this version (it reads format {FORMAT})",
                header.format
            ),
        ));
    }
    let file_nonce: [u8; FILE_NONCE_LEN] = hex::decode(&header.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| bad(backup, "the header's nonce is malformed"))?;
    let backup_keys = BackupKeys::new(keys, &file_nonce);
    let stated = hex::decode(&header.key_check).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        stated.as_slice(),
        backup_keys.key_check.as_slice(),
    )) {
        // Made with another IDAT key (or the header was altered): nothing in it can be read.
        return Err(StoreError::WrongKey);
    }
    if header.schema_version > migrate::CURRENT_SCHEMA {
        return Err(StoreError::SchemaTooNew {
            found: header.schema_version,
            supported: migrate::CURRENT_SCHEMA,
        });
    }
    let reader = OpeningReader {
        file,
        keys: backup_keys,
        file_nonce,
        digest: header_digest(&header_json),
        plain: Zeroizing::new(Vec::new()),
        pos: 0,
        chunk: 0,
        ended: false,
    };
    Ok((header, FrameReader { inner: reader }))
}

/// Reads `backup` into a new store at `staging` and checks it.
fn build_restored(
    backup: &Path,
    staging: &Path,
    opts: &StoreOptions,
) -> Result<BackupSummary, StoreError> {
    let keys = opts.idat_key.store_keys();
    let (header, mut r) = open_backup(backup, &keys)?;
    let mut summary = BackupSummary::new(header.schema_version, header.created_at);
    let truncated = |e| read_error(backup, e);

    super::create_private_dir(staging)?;
    let db = super::open_db(&staging.join(DB_FILE), opts.cache_capacity, staging)?;
    super::create_tables(&db, staging)?;
    let mut frames: u64 = 0;
    // Frames go in in batches of write transactions: one transaction per frame would cost a
    // commit each, one for the whole backup would hold every dirty page until the end.
    let mut tx = Some(db.begin_write().at(staging)?);
    loop {
        let tag = r.take_u8().map_err(truncated)?;
        if tag == END {
            break;
        }
        let Some(&(_, def)) = BACKED_UP.iter().find(|(t, _)| *t == tag) else {
            return Err(bad(
                backup,
                format!("unknown table tag {tag} in frame {frames}"),
            ));
        };
        let key_len = r.take_u32().map_err(truncated)?;
        if key_len > MAX_KEY {
            return Err(bad(
                backup,
                format!("frame {frames} has an implausible key length"),
            ));
        }
        let key = r.take_vec(key_len).map_err(truncated)?;
        let value_len = r.take_u32().map_err(truncated)?;
        if value_len > MAX_VALUE {
            return Err(bad(
                backup,
                format!("frame {frames} has an implausible value length"),
            ));
        }
        let value = r.take_vec(value_len).map_err(truncated)?;
        let Some(open) = tx.as_ref() else {
            return Err(error::corrupt(staging, "no write transaction"));
        };
        wtree(open, def, staging)?.insert(&key, &value)?;
        frames += 1;
        summary.count(tag);
        if frames.is_multiple_of(RESTORE_BATCH) {
            if let Some(mut done) = tx.take() {
                done.set_durability(redb::Durability::None).at(staging)?;
                done.commit().at(staging)?;
            }
            tx = Some(db.begin_write().at(staging)?);
        }
    }
    let declared = r.take_u64().map_err(truncated)?;
    if declared != frames {
        return Err(bad(backup, "the entry count does not match"));
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest).map_err(truncated)? != 0 {
        return Err(bad(backup, "unexpected data after the end of the entries"));
    }
    if let Some(done) = tx.take() {
        // A restore must not certify whatever key it runs with: every store this version
        // writes has a key check, so a backup without one is not a backup of such a store.
        let has_check = meta::has_key_check(&wtree(&done, META, staging)?)?;
        if !has_check {
            return Err(bad(
                backup,
                "it holds no IDAT key check, so nothing proves which key its data was sealed with",
            ));
        }
        let mut done = done;
        done.set_durability(redb::Durability::None).at(staging)?;
        done.commit().at(staging)?;
    }
    summary.bytes = r.inner.file.bytes;
    summary.sha256 = hex::encode(r.inner.file.hasher.clone().finalize());

    meta::verify_or_install_key_check(&db, &keys, staging)?;
    migrate::bring_up_to_date(&db, &keys, staging)?;
    durable_commit(&db, staging, |tx| {
        records::rebuild_derived(tx, &keys, staging, false)?;
        tasks::rebuild_open_index(tx, &keys, staging)
    })?;
    Ok(summary)
}

/// What [`Store::compact`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CompactSummary {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// Compacts the store's file in place (redb's `compact`: live pages move to the front, the
    /// file is truncated after them). No other process may use the store meanwhile (it holds
    /// the lock).
    pub fn compact(opts: &StoreOptions) -> Result<CompactSummary, StoreError> {
        let store = Store::open(opts)?;
        let bytes_before = store.size_on_disk()?;
        {
            let mut db = store
                .db
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // `compact` returns whether it could compact further; one pass is what is asked.
            db.compact().at(&store.path)?;
        }
        let bytes_after = store.size_on_disk()?;
        Ok(CompactSummary {
            bytes_before,
            bytes_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::IdatKey;
    use super::*;

    /// A backup that authenticates but whose store holds no key check (a store written before
    /// key checks, or one whose check was removed) must not be certified with whatever key the
    /// restore runs with: the review found that restore installed one.
    #[test]
    fn restore_refuses_a_backup_without_a_key_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = IdatKey::generate();
        let store =
            Store::open(&StoreOptions::new(dir.path().join("store"), key.clone())).expect("open");
        store
            .write(|tx| {
                let removed = wtree(tx, META, &store.path)?.remove(meta::KEY_CHECK)?;
                assert!(removed.is_some(), "a new store has a key check");
                Ok(())
            })
            .expect("remove the key check");
        let file = dir.path().join("no-check.bak");
        store.backup_to(&file).expect("backup");
        drop(store);

        let target = StoreOptions::new(dir.path().join("restored"), key);
        let err = Store::restore_from(&file, &target).expect_err("refused");
        assert!(matches!(err, StoreError::BadBackup { .. }), "{err:?}");
        assert!(err.to_string().contains("no IDAT key check"), "{err}");
        assert!(!target.path.exists(), "nothing restored");
        assert!(!dir.path().join(".restored.restoring").exists());
    }
}
