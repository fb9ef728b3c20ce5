//! What the store and its backups let a reader of their files see (issue 13, item 3): no Bloom
//! filter and no name in clear, nothing of purged IDAT that the IDAT key could still open, and
//! backups that cannot be forged, cut short or restored under another key.

use std::path::{Path, PathBuf};

use crate::support;
use crate::support::store::{
    TempStore, assert_no_filter_or_name, dic_psn, files_under, idat, pseudonymised_head, record,
    repeat, task,
};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use chrono::Utc;
use sha2::Digest as _;
use ttp_agent::domain::{RecordHead, RecordState, TaskState};
use ttp_agent::store::{IdatKey, Store, StoreError, StoreOptions};

/// Invented names, unusual enough that a hit cannot be a coincidence.
const GIVEN: &str = "Zyxomira";
const FAMILY: &str = "Quorvelin";

/// A store with records (IDAT, filters, pseudonyms) and tasks that carry filters.
fn populated(ts: &TempStore) -> (Store, Vec<Vec<u8>>) {
    let store = ts.open();
    let mut filters = Vec::new();
    let recs: Vec<_> = (0..20u32)
        .map(|i| {
            let mut r = record(&format!("case-{i}"), i);
            r.idat = Some(idat(GIVEN, &format!("{FAMILY}{i}")));
            filters.push(r.head.bloom_filter.clone());
            r
        })
        .collect();
    store.insert_records(&recs).expect("insert");
    let heads: Vec<RecordHead> = recs.iter().take(10).map(pseudonymised_head).collect();
    store.update_record_heads(&heads).expect("pseudonymise");
    store
        .put_tasks(&[
            task("dic/1", dic_psn(3), TaskState::Received),
            task("rep/1", repeat(4), TaskState::Done { at: Utc::now() }),
        ])
        .expect("tasks");
    store.flush().expect("flush");
    (store, filters)
}

/// What must not be readable: every filter, its plain digest, and the names.
fn assert_nothing_readable(files: &[PathBuf], filters: &[Vec<u8>]) {
    assert_no_filter_or_name(files, filters, &[GIVEN, FAMILY, "Testa", "Musterstadt"]);
}

#[test]
fn neither_the_store_nor_a_backup_shows_a_filter_or_a_name() {
    let ts = TempStore::new();
    let (store, filters) = populated(&ts);
    // The filters are still there for the agent, unsealed.
    assert_eq!(
        store.records_by_bloom_filter(&filters[3]).expect("lookup")[0]
            .head
            .local_id,
        "case-3"
    );
    let heads = store
        .record_heads_in_states(|s| matches!(s, RecordState::Pseudonymised))
        .expect("heads");
    assert_eq!(heads.len(), 10);
    assert!(heads.iter().all(|h| filters.contains(&h.bloom_filter)));
    let backup = ts.sibling("store.bak");
    store.backup_to(&backup).expect("backup");
    drop(store);

    // The scan finds what is in clear: local ids are stored as keys.
    assert!(support::store::bytes_on_disk_contain(ts.path(), b"case-13"));
    assert_nothing_readable(&files_under(ts.path()), &filters);
    assert_nothing_readable(&[backup], &filters);
}

/// The IDAT key as raw bytes (the test reads it the way an attacker with the key file would).
fn key_bytes(key: &IdatKey) -> [u8; 32] {
    let text = key.to_file_text();
    hex::decode(text.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// Whether any window of `len` bytes of any file opens as sealed IDAT of `local_id` (layout
/// `nonce ‖ ciphertext ‖ tag`, AAD the local id) under `key`.
fn decrypts_anywhere(files: &[PathBuf], key: &[u8; 32], local_id: &str, len: usize) -> bool {
    find_sealed(files, key, local_id, len).is_some()
}

/// The first window of `len` bytes in `files` that opens as sealed IDAT of `local_id`: the
/// sealed value as it lies on disk.
fn find_sealed(files: &[PathBuf], key: &[u8; 32], local_id: &str, len: usize) -> Option<Vec<u8>> {
    let aead = XChaCha20Poly1305::new(key.into());
    files.iter().find_map(|f| {
        let bytes = std::fs::read(f).expect("read");
        bytes
            .windows(len)
            .find(|w| {
                let (nonce, rest) = w.split_at(24);
                let (ciphertext, tag) = rest.split_at(rest.len() - 16);
                let (Ok(nonce), Ok(tag)) = (XNonce::try_from(nonce), Tag::try_from(tag)) else {
                    return false;
                };
                let mut buf = ciphertext.to_vec();
                aead.decrypt_inout_detached(
                    &nonce,
                    local_id.as_bytes(),
                    buf.as_mut_slice().into(),
                    &tag,
                )
                .is_ok()
            })
            .map(<[u8]>::to_vec)
    })
}

/// Sealed length of `idat(GIVEN, FAMILY ‖ i)` for one-digit `i`: nonce, format byte, per
/// element tag + one-byte length + value, tag.
fn sealed_len(i: u32) -> usize {
    let values = [
        GIVEN.len(),
        format!("{FAMILY}{i}").len(),
        "1980-02-29".len(),
        "diverse".len(),
        "Musterstadt".len(),
    ];
    24 + 1 + values.iter().map(|v| 2 + v).sum::<usize>() + 16
}

/// Records `case-0` … `case-{n-1}`, pseudonymised (`psn-i`), each holding IDAT of the
/// length [`sealed_len`] expects.
fn pseudonymised(n: u32) -> Vec<ttp_agent::domain::LocalRecord> {
    (0..n)
        .map(|i| {
            let mut r = record(&format!("case-{i}"), i);
            r.idat = Some(idat(GIVEN, &format!("{FAMILY}{i}")));
            r.head.state = RecordState::Pseudonymised;
            r.head.pseudonym = Some(format!("psn-{i}"));
            r
        })
        .collect()
}

/// Writes `recs` three more times, flushed each time: old copies of the sealed IDAT land in
/// free pages, where a purge or withdrawal must not leave them readable.
fn rewrite_three_times(store: &Store, recs: &[ttp_agent::domain::LocalRecord]) {
    for round in 0..3 {
        let mut again = recs.to_vec();
        for r in &mut again {
            r.head.updated_at =
                support::store::t("2025-01-03T00:00:00Z") + chrono::Duration::seconds(round);
        }
        store.update_records(&again).expect("update");
        store.flush().expect("flush");
    }
}

#[test]
fn purged_idat_cannot_be_decrypted_from_any_window_of_the_store_files() {
    let ts = TempStore::new();
    let store = ts.open();
    let recs = pseudonymised(3);
    store.insert_records(&recs).expect("insert");
    rewrite_three_times(&store, &recs);
    let key = key_bytes(&ts.opts.idat_key);
    drop(store);
    let files = files_under(ts.path());
    // The scan works: before the purge, the IDAT opens somewhere.
    assert!(
        decrypts_anywhere(&files, &key, "case-0", sealed_len(0)),
        "case-0 before the purge"
    );

    let store = ts.open();
    // case-2 is kept (an open task needs it); the others are purged.
    let purged = store
        .purge_idat(Utc::now(), |r| r.head.local_id == "case-2")
        .expect("purge");
    assert_eq!(purged, 2);
    store.flush().expect("flush");
    assert!(
        store
            .get_record("case-2")
            .expect("get")
            .expect("kept")
            .idat
            .is_some()
    );
    drop(store);
    let files = files_under(ts.path());
    for i in 0..2 {
        assert!(
            !decrypts_anywhere(&files, &key, &format!("case-{i}"), sealed_len(i)),
            "purged IDAT of case-{i} still opens from the store's files"
        );
    }
    assert!(decrypts_anywhere(&files, &key, "case-2", sealed_len(2)));
    assert!(ts.open().check_integrity().expect("check").is_ok());
}

/// [`find_sealed`], which must find it: later scans look for its bytes (fast) instead of
/// trying the key on every window (slow).
fn sealed_on_disk(files: &[PathBuf], key: &[u8; 32], local_id: &str, len: usize) -> Vec<u8> {
    find_sealed(files, key, local_id, len)
        .unwrap_or_else(|| panic!("the sealed IDAT of {local_id} is in none of the store's files"))
}

/// The rewrite is what takes removed IDAT out of the file. A purge or a withdrawal frees the
/// pages that held it, and a freed page keeps its bytes until it is reused; in a store of a
/// few records the database's own writes at close reuse them at once, which hides a missing
/// rewrite (the tests above and below pass without it). Here many pages are freed: without
/// the rewrite the sealed values are still in the file, byte for byte. `remove` takes out
/// case-0 and 298 others, and keeps case-9 and case-300 to case-399.
fn removed_idat_is_gone_from_a_store_of_many_pages(remove: impl FnOnce(&Store)) {
    let ts = TempStore::new();
    let store = ts.open();
    let recs = pseudonymised(400);
    store.insert_records(&recs).expect("insert");
    store.flush().expect("flush");
    let key = key_bytes(&ts.opts.idat_key);
    let files = files_under(ts.path());
    // Two scans with the key (slow); afterwards only their bytes are looked for.
    let removed_value = sealed_on_disk(&files, &key, "case-0", sealed_len(0));
    let kept_value = sealed_on_disk(&files, &key, "case-9", sealed_len(9));

    remove(&store);
    drop(store);

    let files = files_under(ts.path());
    let on_disk = |value: &[u8]| {
        files.iter().any(|f| {
            let bytes = std::fs::read(f).expect("read");
            bytes.windows(value.len()).any(|w| w == value)
        })
    };
    assert!(
        !on_disk(&removed_value),
        "the removed sealed IDAT of case-0 is still in the store's files"
    );
    // The search works: the kept record's sealed IDAT is found, byte for byte.
    assert!(on_disk(&kept_value), "case-9 kept");
    assert!(ts.open().check_integrity().expect("check").is_ok());
}

/// The ids `removed_idat_is_gone_from_a_store_of_many_pages` removes.
fn removed(i: u32) -> bool {
    i != 9 && i < 300
}

#[test]
fn purged_idat_is_gone_from_the_files_of_a_store_of_many_pages() {
    removed_idat_is_gone_from_a_store_of_many_pages(|store| {
        let number = |r: &ttp_agent::domain::LocalRecord| -> u32 {
            r.head.local_id["case-".len()..].parse().expect("case-N")
        };
        let purged = store
            .purge_idat(Utc::now(), |r| !removed(number(r)))
            .expect("purge");
        assert_eq!(purged, 299);
        store.flush().expect("flush");
    });
}

/// The same for `withdraw` (what the command runs), which must rewrite the file too.
#[test]
fn withdrawn_idat_is_gone_from_the_files_of_a_store_of_many_pages() {
    removed_idat_is_gone_from_a_store_of_many_pages(|store| {
        let ids: Vec<String> = (0..400u32)
            .filter(|i| removed(*i))
            .map(|i| format!("case-{i}"))
            .collect();
        let results = ttp_agent::withdraw::withdraw(
            store,
            &ids,
            &ttp_agent::resolve::Actor::named("dpo"),
            Utc::now(),
        )
        .expect("withdraw");
        assert!(results.iter().all(Result::is_ok));
    });
}

/// Consent withdrawal (issue 15, item 3): the record's IDAT and filter are gone from every file
/// of the store at once, what is kept matches later tasks, and the store checks clean.
#[test]
fn a_withdrawn_records_idat_cannot_be_decrypted_and_its_tasks_can_still_be_matched() {
    let ts = TempStore::new();
    let store = ts.open();
    let recs = pseudonymised(2);
    store.insert_records(&recs).expect("insert");
    rewrite_three_times(&store, &recs);
    let key = key_bytes(&ts.opts.idat_key);
    drop(store);
    // The scan works: before the withdrawal, the IDAT opens somewhere.
    assert!(
        decrypts_anywhere(&files_under(ts.path()), &key, "case-0", sealed_len(0)),
        "case-0 before the withdrawal"
    );
    let store = ts.open();
    let entry = ttp_agent::store::AuditEntry {
        at: Utc::now(),
        actor: "dpo".into(),
        action: "withdraw".into(),
        subject: "case-0".into(),
        detail: "consent withdrawn".into(),
    };
    let w = store
        .withdraw_record("case-0", "dpo", Utc::now(), &entry)
        .expect("withdraw")
        .expect("stored");
    assert_eq!(w.pseudonym.as_deref(), Some("psn-0"));
    store.rewrite_after_purge().expect("rewrite");
    assert!(store.get_record("case-0").expect("get").is_none());
    assert!(store.withdrawal("case-0").expect("get").is_some());
    let filter0 = recs[0].head.bloom_filter.clone();
    assert_eq!(
        store
            .withdrawn_subject(&[filter0.as_slice()], &[])
            .expect("match"),
        Some("case-0".into()),
        "a later task naming the filter is recognised"
    );
    assert_eq!(
        store.withdrawn_subject(&[], &["psn-0"]).expect("match"),
        Some("case-0".into()),
        "and one naming the pseudonym"
    );
    assert_eq!(
        store
            .withdrawn_subject(&[recs[1].head.bloom_filter.as_slice()], &["psn-1"])
            .expect("match"),
        None
    );
    assert_eq!(store.record_counts().expect("counts").total, 1);
    assert!(store.check_integrity().expect("check").is_ok());
    drop(store);
    let files = files_under(ts.path());
    assert!(
        !decrypts_anywhere(&files, &key, "case-0", sealed_len(0)),
        "the withdrawn record's IDAT still opens from the store's files"
    );
    assert!(
        decrypts_anywhere(&files, &key, "case-1", sealed_len(1)),
        "the scan works: the other record's IDAT opens"
    );
    assert_nothing_readable(&files, &[filter0]);
}

/// The offsets at which a backup's chunks start (after magic and header).
fn chunk_starts(bytes: &[u8]) -> Vec<usize> {
    let magic = b"ttp-agent-store-backup\n".len();
    let header = u32::from_be_bytes(bytes[magic..magic + 4].try_into().expect("4")) as usize;
    let mut at = magic + 4 + header;
    let mut starts = Vec::new();
    while at < bytes.len() {
        starts.push(at);
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        at += 4 + len;
    }
    starts
}

fn restore_err(file: &Path, bytes: &[u8], target: &StoreOptions) -> StoreError {
    std::fs::write(file, bytes).expect("write");
    let err = Store::restore_from(file, target).expect_err("refused");
    assert!(!target.path.exists(), "{err}");
    err
}

#[test]
fn forged_truncated_and_other_key_backups_are_refused() {
    let ts = TempStore::new();
    let store = ts.open();
    // Enough for several chunks of 64 KiB.
    let recs: Vec<_> = (0..600u32)
        .map(|i| record(&format!("case-{i}"), i))
        .collect();
    store.insert_records(&recs).expect("insert");
    let file = ts.sibling("b");
    store.backup_to(&file).expect("backup");
    drop(store);
    let good = std::fs::read(&file).expect("read");
    let starts = chunk_starts(&good);
    assert!(starts.len() >= 3, "{} chunks", starts.len());
    let target = StoreOptions::new(ts.sibling("restored"), ts.opts.idat_key.clone());
    let probe = ts.sibling("probe");

    // Altered: a byte of a chunk, or of the header (its digest is in every chunk's AAD).
    let mut flipped = good.clone();
    flipped[starts[1] + 30] ^= 0x01;
    let text = String::from_utf8_lossy(&good).into_owned();
    let year = text.find("\"created_at\":\"20").expect("header time") + 14;
    let mut header = good.clone();
    header[year] = if header[year] == b'1' { b'2' } else { b'1' };
    // Truncated: inside a chunk, and exactly at a chunk boundary (the last chunk dropped).
    let cut_inside = good[..good.len() - 40].to_vec();
    let cut_at_chunk = good[..*starts.last().expect("last")].to_vec();
    // Chunks swapped.
    let mut swapped = good[..starts[1]].to_vec();
    swapped.extend_from_slice(&good[starts[2]..starts[3.min(starts.len() - 1)]]);
    swapped.extend_from_slice(&good[starts[1]..starts[2]]);
    for (what, bytes) in [
        ("flipped chunk byte", flipped),
        ("altered header", header),
        ("truncated inside a chunk", cut_inside),
        ("truncated at a chunk boundary", cut_at_chunk),
        ("chunks reordered", swapped),
    ] {
        let err = restore_err(&probe, &bytes, &target);
        assert!(
            matches!(err, StoreError::BadBackup { .. }),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("authenticate") || msg.contains("ends early"),
            "{what}: {msg}"
        );
    }

    // A forged backup in the old format, with a correct plain checksum.
    let mut forged = b"ttp-agent-store-backup\n".to_vec();
    let header = br#"{"format":1,"schema_version":3,"created_at":"2025-01-01T00:00:00Z","agent_version":"0.1.0"}"#;
    forged.extend_from_slice(&(header.len() as u32).to_be_bytes());
    forged.extend_from_slice(header);
    forged.push(0);
    forged.extend_from_slice(&0u64.to_be_bytes());
    let digest = sha2::Sha256::digest(&forged);
    forged.extend_from_slice(&digest);
    let err = restore_err(&probe, &forged, &target);
    assert!(
        matches!(err, StoreError::BadBackup { .. }) && err.to_string().contains("format 1"),
        "{err:?}"
    );

    // Made with another key: the backup of another store, or the right backup with a wrong key.
    let other = TempStore::new();
    let other_store = other.open();
    other_store
        .insert_records(&[record("case-x", 1)])
        .expect("insert");
    let other_file = other.sibling("other.bak");
    other_store.backup_to(&other_file).expect("backup");
    let err = Store::restore_from(&other_file, &target).expect_err("other key");
    assert!(matches!(err, StoreError::WrongKey), "{err:?}");
    let wrong = StoreOptions::new(ts.sibling("restored"), IdatKey::generate());
    let err = Store::restore_from(&file, &wrong).expect_err("wrong key");
    assert!(matches!(err, StoreError::WrongKey), "{err:?}");
    assert!(!target.path.exists());

    // The intact file restores.
    let summary = Store::restore_from(&file, &target).expect("restore");
    assert_eq!(summary.records, 600);
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_temporary_path_is_not_followed() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("case-1", 1)])
        .expect("insert");
    let victim = ts.sibling("victim");
    std::fs::write(&victim, b"precious").expect("write");
    let out = ts.sibling("store.bak");
    let partial = ts.sibling("store.bak.partial");
    std::os::unix::fs::symlink(&victim, &partial).expect("symlink");
    let err = store.backup_to(&out).expect_err("refused");
    assert!(err.to_string().contains("not followed"), "{err}");
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    assert!(
        std::fs::symlink_metadata(&partial)
            .expect("still there")
            .file_type()
            .is_symlink()
    );
    assert!(!out.exists());
    // Once it is gone, the backup is written with mode 0600.
    std::fs::remove_file(&partial).expect("remove");
    store.backup_to(&out).expect("backup");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
