//! Opening a store: lock, permissions, schema versions, damaged files, key files.

use crate::support;
use crate::support::store::{TempStore, filter, record};
use ttp_agent::domain::RecordState;
use ttp_agent::store::{CURRENT_SCHEMA, IdatKey, Store, StoreError};

#[test]
fn second_open_of_the_same_store_is_locked() {
    let ts = TempStore::new();
    let _first = ts.open();
    let err = Store::open(&ts.opts).expect_err("second open");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&ts.path().display().to_string()), "{msg}");
    assert!(msg.contains("already running"), "{msg}");
}

/// Another holder of the lock (the daemon, for `status`) is reported without waiting when the
/// caller asks for no wait, and the store opens once the holder lets go.
#[test]
fn a_lock_held_elsewhere_is_reported_at_once_with_no_wait() {
    use std::os::fd::AsRawFd as _;
    let ts = TempStore::new();
    drop(ts.open());
    let holder =
        std::fs::File::open(ts.path().join(ttp_agent::store::LOCK_FILE)).expect("lock file");
    // SAFETY: flock on a descriptor `holder` owns.
    assert_eq!(
        unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let mut opts = ts.opts.clone();
    opts.lock_wait = std::time::Duration::ZERO;
    let err = Store::open(&opts).expect_err("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(holder);
    Store::open(&opts).expect("opens once the lock is free");
}

#[test]
fn the_lock_is_released_when_the_store_is_dropped() {
    let ts = TempStore::new();
    drop(ts.open());
    drop(ts.open());
}

#[test]
fn a_path_below_a_file_is_not_writable() {
    let ts = TempStore::new();
    let file = ts.sibling("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let mut opts = ts.opts.clone();
    opts.path = file.join("store");
    let err = Store::open(&opts).expect_err("not a directory");
    assert!(matches!(err, StoreError::NotWritable { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
    // The store path itself being a file.
    opts.path = file;
    let err = Store::open(&opts).expect_err("a file");
    assert!(matches!(err, StoreError::NotWritable { .. }), "{err:?}");
}

/// Drops this thread's capabilities that bypass file permissions, so a test running as root
/// (as in CI containers) sees permission bits like any other user. Linux capabilities are
/// per thread: the rest of the test process is unaffected.
#[cfg(target_os = "linux")]
fn drop_permission_bypass_in_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_FOWNER: u32 = 3;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header read/write exactly two `Data` structs, which
    // `data` provides; pid 0 is the calling thread.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(got, 0, "capget");
    for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER] {
        data[0].effective &= !(1 << cap);
    }
    // SAFETY: as above.
    let set = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(set, 0, "capset");
}

#[cfg(target_os = "linux")]
#[test]
fn a_read_only_directory_is_not_writable() {
    use std::os::unix::fs::PermissionsExt as _;
    let ts = TempStore::new();
    let read_only = ts.sibling("read-only");
    std::fs::create_dir(&read_only).expect("mkdir");
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let existing_empty = read_only.join("existing");
    let mut in_new_dir = ts.opts.clone();
    in_new_dir.path = read_only.join("store");
    let results = std::thread::spawn({
        let existing = existing_empty.clone();
        move || {
            drop_permission_bypass_in_this_thread();
            let new_dir = Store::open(&in_new_dir).map(drop);
            // An existing but read-only store directory: the database file cannot be created.
            let mut in_existing = in_new_dir.clone();
            in_existing.path = existing;
            (new_dir, in_existing)
        }
    })
    .join()
    .expect("thread");
    let (new_dir, mut in_existing) = results;
    let err = new_dir.expect_err("read-only parent");
    assert!(matches!(err, StoreError::NotWritable { .. }), "{err:?}");

    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(&existing_empty).expect("mkdir");
    std::fs::set_permissions(&existing_empty, std::fs::Permissions::from_mode(0o555))
        .expect("chmod");
    in_existing.path = existing_empty.clone();
    let err = std::thread::spawn(move || {
        drop_permission_bypass_in_this_thread();
        Store::open(&in_existing).map(drop)
    })
    .join()
    .expect("thread")
    .expect_err("read-only store directory");
    assert!(matches!(err, StoreError::NotWritable { .. }), "{err:?}");
    assert!(err.to_string().contains("writable"), "{err}");
}

#[test]
fn new_store_gets_the_current_schema_version() {
    let ts = TempStore::new();
    let store = ts.open();
    assert_eq!(store.schema_version().expect("version"), CURRENT_SCHEMA);
    assert_eq!(CURRENT_SCHEMA, 6);
}

#[test]
fn a_version_0_store_is_migrated() {
    // A store as written before versioning: records, but no schema version, no indexes and
    // no counters. Opening it builds them.
    let ts = TempStore::new();
    let store = ts.open();
    let mut recs: Vec<_> = (0..5).map(|i| record(&format!("case-{i}"), i)).collect();
    recs[2].head.state = RecordState::Pseudonymised;
    recs[2].head.pseudonym = Some("psn-2".to_string());
    store.insert_records(&recs).expect("insert");
    let expected_counts = store.record_counts().expect("counts");
    drop(store);
    {
        let db = support::store::raw_db(ts.path());
        let meta = db.open_tree("meta").expect("meta");
        meta.remove("schema_version").expect("remove");
        for tree in ["idx_bf", "idx_psn", "counts"] {
            db.open_tree(tree).expect("tree").clear().expect("clear");
        }
        db.flush().expect("flush");
    }
    let store = ts.open();
    assert_eq!(store.schema_version().expect("version"), CURRENT_SCHEMA);
    assert_eq!(store.record_counts().expect("counts"), expected_counts);
    assert_eq!(
        store.records_by_bloom_filter(&filter(3)).expect("lookup"),
        vec![recs[3].clone()]
    );
    assert_eq!(
        store.record_by_pseudonym("psn-2").expect("lookup"),
        Some(recs[2].clone())
    );
    assert!(store.check_integrity().expect("check").is_ok());
}

#[test]
fn a_newer_schema_is_refused_without_touching_the_store() {
    let ts = TempStore::new();
    drop(ts.open());
    let set_version = |v: u64| {
        let db = support::store::raw_db(ts.path());
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("schema_version", v.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    };
    set_version(CURRENT_SCHEMA + 1);
    let err = Store::open(&ts.opts).expect_err("too new");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == CURRENT_SCHEMA + 1 && supported == CURRENT_SCHEMA),
        "{err:?}"
    );
    // Still the newer version on disk.
    let db = support::store::raw_db(ts.path());
    let v = db
        .open_tree("meta")
        .expect("meta")
        .get("schema_version")
        .expect("get")
        .expect("present");
    assert_eq!(v.as_ref(), (CURRENT_SCHEMA + 1).to_be_bytes());
}

/// A store directory of the sled-based development builds (`conf` and `db`, no redb file) is
/// refused with what to do, and left exactly as it was: no redb file, lock or marker is
/// created beside the data that the operator may still need.
#[test]
fn a_sled_store_is_refused_with_what_to_do_and_left_untouched() {
    let ts = TempStore::new();
    std::fs::create_dir_all(ts.path()).expect("store dir");
    std::fs::write(
        ts.path().join("conf"),
        "segment_size: 524288\nuse_compression: false\nversion: 0.34\n",
    )
    .expect("conf");
    std::fs::write(ts.path().join("db"), b"\x00sled log segment\x00").expect("db");
    let listing = |p: &std::path::Path| {
        let mut names: Vec<(String, Vec<u8>)> = std::fs::read_dir(p)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        names.sort();
        names
    };
    let before = listing(ts.path());

    let err = Store::open(&ts.opts).expect_err("a sled store");
    assert!(matches!(err, StoreError::SledStore { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&ts.path().display().to_string()), "{msg}");
    assert!(msg.contains("move the directory aside"), "{msg}");
    assert_eq!(listing(ts.path()), before, "nothing written beside it");

    // Moved aside, as the message says: a new store is created in its place.
    std::fs::rename(ts.path(), ts.sibling("store.sled")).expect("move aside");
    drop(ts.open());
}

#[test]
fn an_emptied_database_is_reported_not_silently_recreated() {
    let ts = TempStore::new();
    let store = ts.open();
    store
        .insert_records(&[record("case-1", 1)])
        .expect("insert");
    store.flush().expect("flush");
    drop(store);
    // An emptied database file would be initialised as a new database; the marker notices.
    let db_file = ts.path().join(ttp_agent::store::DB_FILE);
    std::fs::File::options()
        .write(true)
        .open(&db_file)
        .and_then(|f| f.set_len(0))
        .expect("empty the database file");
    let err = Store::open(&ts.opts).expect_err("emptied");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data is gone"), "{msg}");
    assert!(msg.contains("restore"), "{msg}");
}

#[test]
fn a_garbled_database_file_is_an_error_not_a_panic() {
    let ts = TempStore::new();
    let store = ts.open();
    let recs: Vec<_> = (0..300).map(|i| record(&format!("case-{i}"), i)).collect();
    store.insert_records(&recs).expect("insert");
    store.flush().expect("flush");
    drop(store);
    let db_file = ts.path().join(ttp_agent::store::DB_FILE);
    let mut bytes = std::fs::read(&db_file).expect("read");
    for b in &mut bytes {
        *b = !*b;
    }
    std::fs::write(&db_file, bytes).expect("write");
    let err = Store::open(&ts.opts).expect_err("garbled");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn database_files_of_another_store_are_refused() {
    let a = TempStore::new();
    let b = TempStore::new();
    drop(a.open());
    drop(b.open());
    // Someone copies b's marker into a's directory.
    std::fs::copy(
        b.path().join("ttp-agent-store.json"),
        a.path().join("ttp-agent-store.json"),
    )
    .expect("copy");
    let err = Store::open(&a.opts).expect_err("mismatch");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn key_files_load_and_errors_name_the_path_only() {
    let ts = TempStore::new();
    let key = IdatKey::generate();
    let path = ts.sibling("idat.key");
    std::fs::write(&path, key.to_file_text()).expect("write");
    let mut opts = ts.opts.clone();
    opts.idat_key = IdatKey::from_file(&path).expect("loads");
    drop(Store::open(&opts).expect("opens"));
    // The same key, read again, opens the store; it was the key the store was created with.
    opts.idat_key = IdatKey::from_file(&path).expect("loads");
    drop(Store::open(&opts).expect("reopens"));

    let bad = ts.sibling("bad.key");
    std::fs::write(&bad, "hunter2-not-a-key\n").expect("write");
    let err = IdatKey::from_file(&bad).expect_err("bad key");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::KeyFile { .. }), "{err:?}");
    assert!(msg.contains("bad.key"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    let missing = ts.sibling("missing.key");
    let err = IdatKey::from_file(&missing).expect_err("missing");
    assert!(err.to_string().contains("missing.key"), "{err}");
    assert_eq!(format!("{key:?}"), "IdatKey(<redacted>)");
}
