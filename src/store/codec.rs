//! Byte layouts of keys and values. Pure functions: no redb, no I/O.
//!
//! Records are the bulk of the store (up to millions), so their layout is compact:
//!
//! * value = postcard of [`StoredRecord`]: the sealed filter as length-prefixed bytes, the sealed IDAT,
//!   a one-byte state tag, the pseudonym, and both times as zig-zag varint nanoseconds since
//!   the Unix epoch (exact round trip of `DateTime<Utc>` for the years 1678–2261).
//! * IDAT plaintext (inside the seal) = `0x01 ‖ (tag u8 ‖ varint len ‖ UTF-8 value)*` with the
//!   element tags of `idat_tag`: one byte per element instead of its code.
//! * filter index key = `HMAC-SHA256(k_index, filter)[..16] ‖ local_id`, pseudonym index key =
//!   `sha256(pseudonym)[..16] ‖ local_id`, value empty: fixed-size digests keep the index small
//!   (not 225 bytes per filter), the `local_id` suffix lets several records share one filter or
//!   pseudonym, and a lookup is one prefix scan. The filter's digest is keyed (`k_index` is
//!   derived from the IDAT key, see `crypto`): a plain hash would let anyone with the encoding
//!   seeds confirm a guessed name and birth date against the index. Digest collisions are
//!   harmless: a lookup compares the full filter / pseudonym of every record it finds.
//!
//! Everything else is small and kept self-describing (JSON), so that a future version can read
//! what an older one wrote: tasks (which contain `serde_json::Value`, which postcard cannot
//! decode), audit entries.
//!
//! **Stability**: these layouts are the on-disk format of schema version
//! [`super::migrate::CURRENT_SCHEMA`]. Changing one means a new schema version and a migration.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use ttp_proto::IdatElement;

use super::error::StoreError;
use crate::domain::{Idat, RecordState};

/// The tag of an IDAT element inside sealed IDAT. **Never renumber or reuse a tag**: sealed
/// values written with it must keep decoding. A new element gets the next free number (the
/// match is exhaustive, so adding an element to `IdatElement` does not compile until it has one).
fn idat_tag(e: IdatElement) -> u8 {
    match e {
        IdatElement::Given => 1,
        IdatElement::Family => 2,
        IdatElement::Prefix => 3,
        IdatElement::Suffix => 4,
        IdatElement::Birthdate => 5,
        IdatElement::Gender => 6,
        IdatElement::AddressLine => 7,
        IdatElement::AddressCity => 8,
        IdatElement::AddressPostalcode => 9,
        IdatElement::Birthplace => 10,
        IdatElement::Maidenname => 11,
        IdatElement::Degree => 12,
        IdatElement::Language => 13,
        IdatElement::Nationality => 14,
        IdatElement::Maritalstatus => 15,
    }
}

fn idat_element(tag: u8) -> Option<IdatElement> {
    IdatElement::ALL.into_iter().find(|e| idat_tag(*e) == tag)
}

const IDAT_FORMAT_V1: u8 = 1;

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn push_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        // Truncation to the low 7 bits is the point of the encoding.
        buf.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: usize = 0;
    for (i, b) in bytes.iter().enumerate().take(5) {
        n |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// The exact length of [`encode_idat_into`]'s output, so the sealing buffer never reallocates.
pub(crate) fn idat_plaintext_len(idat: &Idat) -> usize {
    1 + idat
        .0
        .values()
        .map(|v| 1 + varint_len(v.len()) + v.len())
        .sum::<usize>()
}

pub(crate) fn encode_idat_into(idat: &Idat, buf: &mut Vec<u8>) {
    buf.push(IDAT_FORMAT_V1);
    for (element, value) in &idat.0 {
        buf.push(idat_tag(*element));
        push_varint(buf, value.len());
        buf.extend_from_slice(value.as_bytes());
    }
}

/// Decodes IDAT plaintext. Errors describe the structure only, never a value.
pub(crate) fn decode_idat(mut bytes: &[u8]) -> Result<Idat, String> {
    match bytes.split_first() {
        Some((&IDAT_FORMAT_V1, rest)) => bytes = rest,
        Some((other, _)) => return Err(format!("unknown IDAT format {other}")),
        None => return Err("empty IDAT plaintext".to_string()),
    }
    let mut map = BTreeMap::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let element = idat_element(tag).ok_or_else(|| format!("unknown IDAT element tag {tag}"))?;
        let (len, rest) = read_varint(rest).ok_or("truncated IDAT value length")?;
        if rest.len() < len {
            return Err(format!("IDAT value of element {element} is truncated"));
        }
        let (value, rest) = rest.split_at(len);
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| format!("IDAT value of element {element} is not UTF-8"))?;
        if map.insert(element, value).is_some() {
            return Err(format!("IDAT element {element} appears twice"));
        }
        bytes = rest;
    }
    Ok(Idat(map))
}

/// A record as stored under its `local_id`. Borrowing: decoding does not copy the filter.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRecord<'a> {
    /// The Bloom filter, sealed (`nonce ‖ ciphertext ‖ tag` under the filter key, AAD the
    /// local id; see `crypto`). Before schema 4 the filter in clear.
    #[serde(borrow)]
    pub sealed_filter: &'a [u8],
    /// `nonce ‖ ciphertext ‖ tag`, see `crypto`; `None` once purged.
    #[serde(borrow)]
    pub sealed_idat: Option<&'a [u8]>,
    #[serde(borrow)]
    pub state: StoredState<'a>,
    #[serde(borrow)]
    pub pseudonym: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredRecord<'_> {
    // Same redaction as `LocalRecord`'s: sizes, not contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRecord")
            .field("sealed_filter_len", &self.sealed_filter.len())
            .field("sealed_idat_len", &self.sealed_idat.map(<[u8]>::len))
            .field("state", &self.state)
            .field("pseudonym", &self.pseudonym.map(|_| "<redacted>"))
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// [`RecordState`] on disk. postcard writes the variant index: **append new variants only**.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredState<'a> {
    New,
    Sending { batch: u64 },
    AwaitingClearing,
    Pseudonymised,
    Rejected { code: &'a str },
}

impl<'a> StoredState<'a> {
    pub(crate) fn from_state(s: &'a RecordState) -> StoredState<'a> {
        match s {
            RecordState::New => StoredState::New,
            RecordState::Sending { batch } => StoredState::Sending { batch: *batch },
            RecordState::AwaitingClearing => StoredState::AwaitingClearing,
            RecordState::Pseudonymised => StoredState::Pseudonymised,
            RecordState::Rejected { code } => StoredState::Rejected { code },
        }
    }

    pub(crate) fn to_state(self) -> RecordState {
        match self {
            StoredState::New => RecordState::New,
            StoredState::Sending { batch } => RecordState::Sending { batch },
            StoredState::AwaitingClearing => RecordState::AwaitingClearing,
            StoredState::Pseudonymised => RecordState::Pseudonymised,
            StoredState::Rejected { code } => RecordState::Rejected {
                code: code.to_string(),
            },
        }
    }
}

pub(crate) fn encode_record(rec: &StoredRecord<'_>) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(rec).map_err(|e| StoreError::Codec {
        what: "record",
        detail: e.to_string(),
    })
}

/// Decodes a record value; the error text is for a `Corrupt` detail (structure only).
pub(crate) fn decode_record(bytes: &[u8]) -> Result<StoredRecord<'_>, String> {
    match postcard::take_from_bytes::<StoredRecord<'_>>(bytes) {
        Ok((rec, [])) => Ok(rec),
        Ok((_, rest)) => Err(format!("record value has {} trailing bytes", rest.len())),
        Err(e) => Err(format!("record value does not decode: {e}")),
    }
}

/// Nanoseconds since the epoch. `DateTime<Utc>` outside 1678–2261 does not fit; the agent only
/// stores clock readings, so such a value is a caller bug, reported as `Codec`.
pub(crate) fn nanos(t: DateTime<Utc>) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt().ok_or_else(|| StoreError::Codec {
        what: "timestamp",
        detail: format!("{t} is outside the storable range (years 1678 to 2261)"),
    })
}

/// [`nanos`] for an index key, where a time outside the storable range sorts first or last
/// instead of failing the write (a task's finish time is not otherwise limited).
pub(crate) fn nanos_clamped(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

pub(crate) fn u64_value(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

pub(crate) fn read_i64(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_be_bytes)
}

pub(crate) const DIGEST_LEN: usize = 16;

/// The first 16 bytes of SHA-256: the index prefix for a filter or a pseudonym.
pub(crate) fn digest16(data: &[u8]) -> [u8; DIGEST_LEN] {
    let full = sha2::Sha256::digest(data);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full[..DIGEST_LEN]);
    out
}

/// `digest16(indexed) ‖ local_id`: the pseudonym index key.
pub(crate) fn index_key(indexed: &[u8], local_id: &str) -> Vec<u8> {
    index_key_with(&digest16(indexed), local_id)
}

/// `digest ‖ local_id` for a digest computed by the caller (the filter index's keyed one).
pub(crate) fn index_key_with(digest: &[u8; DIGEST_LEN], local_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(DIGEST_LEN + local_id.len());
    key.extend_from_slice(digest);
    key.extend_from_slice(local_id.as_bytes());
    key
}

/// The `local_id` part of an index key.
pub(crate) fn index_key_local_id(key: &[u8]) -> Option<&str> {
    key.get(DIGEST_LEN..)
        .and_then(|id| std::str::from_utf8(id).ok())
}

/// History key: `days since 0001-01-01 (u32 BE) ‖ task type`, so a day range is a key range.
/// `time ‖ suffix` for the indexes kept in time order (`idx_idat_due`, `idx_finished_tasks`):
/// the nanoseconds with the sign bit flipped, big-endian, so that byte order is time order
/// (before 1970 included) and a purge reads a key range up to its cut-off.
pub(crate) fn time_key(nanos: i64, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + suffix.len());
    key.extend_from_slice(&time_prefix(nanos));
    key.extend_from_slice(suffix);
    key
}

/// The first 8 bytes of every [`time_key`] of `nanos`: the exclusive end of a range "before".
pub(crate) fn time_prefix(nanos: i64) -> [u8; 8] {
    (nanos.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

/// The suffix of a [`time_key`].
pub(crate) fn time_key_suffix(key: &[u8]) -> Option<&[u8]> {
    key.get(8..)
}

pub(crate) fn history_key(day: NaiveDate, task_type: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + task_type.len());
    key.extend_from_slice(&day_number(day).to_be_bytes());
    key.extend_from_slice(task_type.as_bytes());
    key
}

pub(crate) fn day_number(day: NaiveDate) -> u32 {
    // Days before the common era cannot be finish dates of tasks; clamp rather than wrap.
    u32::try_from(chrono::Datelike::num_days_from_ce(&day)).unwrap_or(0)
}

pub(crate) fn parse_history_key(key: &[u8]) -> Option<(NaiveDate, &str)> {
    let (day, name) = key.split_at_checked(4)?;
    let day = u32::from_be_bytes(day.try_into().ok()?);
    let day = NaiveDate::from_num_days_from_ce_opt(i32::try_from(day).ok()?)?;
    Some((day, std::str::from_utf8(name).ok()?))
}

/// History value: `done (u64 BE) ‖ expired (u64 BE)`.
pub(crate) fn history_value(done: u64, expired: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&done.to_be_bytes());
    v[8..].copy_from_slice(&expired.to_be_bytes());
    v
}

pub(crate) fn read_history_value(bytes: &[u8]) -> Option<(u64, u64)> {
    let (done, expired) = bytes.split_at_checked(8)?;
    Some((read_u64(done)?, read_u64(expired)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idat(pairs: &[(IdatElement, &str)]) -> Idat {
        Idat(pairs.iter().map(|(e, v)| (*e, (*v).to_string())).collect())
    }

    #[test]
    fn time_keys_sort_in_time_order_before_and_after_1970() {
        let times = [
            i64::MIN,
            -5_000_000_000,
            -1,
            0,
            1,
            1_700_000_000_000_000_000,
            i64::MAX,
        ];
        let keys: Vec<Vec<u8>> = times.iter().map(|n| time_key(*n, b"id")).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // The prefix of a time is the exclusive end of the range "before it".
        for (i, n) in times.iter().enumerate() {
            let end = time_prefix(*n);
            assert!(keys[..i].iter().all(|k| k.as_slice() < end.as_slice()));
            assert!(keys[i..].iter().all(|k| k.as_slice() >= end.as_slice()));
        }
        assert_eq!(time_key_suffix(&keys[3]), Some(&b"id"[..]));
        let far = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        assert_eq!(nanos_clamped(far), i64::MAX);
        assert_eq!(
            nanos_clamped(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            i64::MIN
        );
    }

    #[test]
    fn every_element_has_a_unique_tag() {
        for e in IdatElement::ALL {
            assert_eq!(idat_element(idat_tag(e)), Some(e), "{e}");
        }
        let mut tags: Vec<u8> = IdatElement::ALL.into_iter().map(idat_tag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), IdatElement::ALL.len());
        assert_eq!(idat_element(0), None);
    }

    #[test]
    fn idat_plaintext_round_trips_with_exact_length() {
        let long = "x".repeat(300); // two-byte varint length
        for value in [
            Idat::default(),
            idat(&[
                (IdatElement::Given, "Erika"),
                (IdatElement::Family, "Mustermann"),
                (IdatElement::Birthdate, "1964-08-12"),
                (IdatElement::AddressCity, "Köln"),
            ]),
            idat(&[(IdatElement::AddressLine, &long), (IdatElement::Degree, "")]),
        ] {
            let mut buf = Vec::new();
            encode_idat_into(&value, &mut buf);
            assert_eq!(buf.len(), idat_plaintext_len(&value));
            assert_eq!(decode_idat(&buf), Ok(value));
        }
    }

    #[test]
    fn malformed_idat_plaintext_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[9][..],
            &[1, 99, 0][..],
            &[1, 1][..],
            &[1, 1, 5, b'a'][..],
            &[1, 1, 1, 0xff][..],
            &[1, 1, 1, b'a', 1, 1, b'b'][..],
            &[1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode_idat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_value_round_trips_and_is_compact() {
        let bf = vec![0xa5u8; 225];
        let sealed = vec![7u8; 100];
        for state in [
            RecordState::New,
            RecordState::Sending { batch: 300 },
            RecordState::AwaitingClearing,
            RecordState::Pseudonymised,
            RecordState::Rejected {
                code: "E-1".to_string(),
            },
        ] {
            let stored = StoredRecord {
                sealed_filter: &bf,
                sealed_idat: Some(&sealed),
                state: StoredState::from_state(&state),
                pseudonym: Some("psn-1"),
                created_at: 1_700_000_000_123_456_789,
                updated_at: -5,
            };
            let bytes = encode_record(&stored).expect("encodes");
            assert!(bytes.len() < 225 + 100 + 40, "{} bytes", bytes.len());
            let back = decode_record(&bytes).expect("decodes");
            assert_eq!(back, stored);
            assert_eq!(back.state.to_state(), state);
        }
    }

    #[test]
    fn truncated_or_padded_record_values_are_rejected() {
        let stored = StoredRecord {
            sealed_filter: &[1, 2, 3],
            sealed_idat: None,
            state: StoredState::New,
            pseudonym: None,
            created_at: 1,
            updated_at: 2,
        };
        let bytes = encode_record(&stored).expect("encodes");
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_record(&padded).is_err());
        assert!(decode_record(&[0xff; 3]).is_err());
    }

    #[test]
    fn times_round_trip_exactly() {
        let t = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456789Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(from_nanos(nanos(t).expect("in range")), t);
        let far = DateTime::parse_from_rfc3339("2500-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert!(matches!(nanos(far), Err(StoreError::Codec { .. })));
    }

    #[test]
    fn index_keys_share_a_prefix_per_indexed_value() {
        let a = index_key(b"filter", "id-1");
        let b = index_key(b"filter", "id-2");
        assert_eq!(a[..DIGEST_LEN], b[..DIGEST_LEN]);
        assert_ne!(a[..DIGEST_LEN], index_key(b"other", "id-1")[..DIGEST_LEN]);
        assert_eq!(index_key_local_id(&a), Some("id-1"));
    }

    #[test]
    fn history_keys_sort_by_day_and_round_trip() {
        let d1 = NaiveDate::from_ymd_opt(2025, 12, 31).expect("date");
        let d2 = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let k1 = history_key(d1, "send_idat");
        let k2 = history_key(d2, "dic_psn_available");
        assert!(k1 < k2);
        assert_eq!(parse_history_key(&k1), Some((d1, "send_idat")));
        assert_eq!(read_history_value(&history_value(3, 4)), Some((3, 4)));
    }
}
