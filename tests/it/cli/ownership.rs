//! Commands run by hand as another user (root, typically) never leave files in the service
//! user's store that the service cannot write: they refuse before opening it, and say as whom
//! to run them. Needs root to hand the store to another user; without root the test says so
//! and passes only outside CI (`CI` unset).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::support::handover::*;

/// Every file and directory under `dir` with its owner.
fn owners(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        out.push((entry.path().display().to_string(), meta.uid()));
        if meta.is_dir() {
            owners(&entry.path(), out);
        }
    }
}

fn chown_all(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    let mut all = Vec::new();
    owners(dir, &mut all);
    for (path, _) in all {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).unwrap();
    }
}

#[test]
fn commands_as_another_user_refuse_the_service_users_store() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "in CI this test must run as root"
        );
        eprintln!("SKIPPED: handing a store to another user needs root");
        return;
    }
    let site = site();
    site.with_store(|_| ());
    let store = site.dir.path().join("store");
    // The service's user: nobody (65534) stands in for ttp-agent.
    const SERVICE: u32 = 65534;
    chown_all(&store, SERVICE);

    for args in [
        vec!["export"],
        vec!["purge"],
        vec!["resolve", "retry", "some-task"],
        vec!["backup", site.dir.path().join("b.tar").to_str().unwrap()],
    ] {
        let out = site.run(&args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("belongs to") && err.contains("65534") && err.contains("sudo -u"),
            "{args:?}: {err}"
        );
        let mut all = Vec::new();
        owners(&store, &mut all);
        let foreign: Vec<_> = all.iter().filter(|(_, uid)| *uid != SERVICE).collect();
        assert!(
            foreign.is_empty(),
            "{args:?} left files the service cannot write: {foreign:?}"
        );
    }

    // A store that does not exist yet, in the service user's directory: not created by root.
    std::fs::remove_dir_all(&store).unwrap();
    std::os::unix::fs::chown(site.dir.path(), Some(SERVICE), Some(SERVICE)).unwrap();
    let out = site.run(&["export"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !store.exists(),
        "root created the store in the service user's directory"
    );
}
