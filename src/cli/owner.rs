//! Whose store is it? Commands run by hand must not leave files the service cannot use.
//!
//! The store belongs to the service's user (`ttp-agent` in the Debian package, uid 65532 in
//! the container). A command run as root (or as anyone else) that opened it would create
//! files owned by root inside it — sled and redb write on open — and the daemon, running as
//! its own user, would then fail on them ("permission denied" at the next start). So every
//! command that opens the store refuses, before touching anything, when the store directory
//! belongs to someone else, and names the user to run it as. `check` uses the same test to
//! skip opening, and [`writable`] to say whether the service user can create or write it.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The owner of `path` when it exists and is not this process's effective user.
pub fn foreign_owner(path: &Path) -> Option<u32> {
    let owner = std::fs::metadata(path).ok()?.uid();
    (owner != euid()).then_some(owner)
}

/// A user's name, for messages (`uid 1234` when it has none).
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result = std::ptr::null_mut();
    // SAFETY: getpwuid_r(3) writes into `pwd` and `buf`, both live and sized as passed; on
    // success `result` points at `pwd`, whose `pw_name` points into `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: see above; the name is NUL-terminated within `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr((*result).pw_name) };
    format!("{} (uid {uid})", name.to_string_lossy())
}

/// Refuses to open a store that belongs to another user (see the module docs). A store
/// that does not exist yet is judged by the directory it would be created in, unless that
/// belongs to root (`/var/lib`): root creating a store there is an installation's choice.
pub fn refuse_foreign_store(store: &Path) -> anyhow::Result<()> {
    let judged = if store.exists() {
        store
    } else {
        match store.ancestors().skip(1).find(|p| p.exists()) {
            Some(dir) if std::fs::metadata(dir).is_ok_and(|m| m.uid() != 0) => dir,
            _ => return Ok(()),
        }
    };
    let Some(owner) = foreign_owner(judged) else {
        return Ok(());
    };
    let who = user_name(owner);
    let me = user_name(euid());
    anyhow::bail!(
        "the store at {} belongs to {who}, and this command runs as {me}: it would leave files \
         there that {who} cannot write, which stops the agent. Run the command as {who} (for \
         example `sudo -u {} ttp-agent …`; docs/OPERATIONS.md, \"Other commands and the \
         running daemon\")",
        store.display(),
        name_only(&who),
    )
}

/// `ttp-agent (uid 999)` → `ttp-agent`; `uid 999` → `#999` (sudo's syntax for a uid).
fn name_only(who: &str) -> String {
    match who.split_once(" (uid ") {
        Some((name, _)) => name.to_owned(),
        None => format!("'#{}'", who.trim_start_matches("uid ")),
    }
}

/// Whether the directory `dir` lets its future store be created or written: by this process
/// (tried for real: a directory made and removed, which catches read-only file systems,
/// modes and ACLs alike), or, when root checks a directory that belongs to another user (the
/// service's), by the owner's permission bits and the file system's read-only flag, since
/// root's own success would prove nothing.
pub fn writable(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if euid() == 0 && meta.uid() != 0 {
        let who = user_name(meta.uid());
        if meta.mode() & 0o300 != 0o300 {
            return Err(format!(
                "{} belongs to {who} but its mode {:o} does not let {who} create files in it; \
                 `chmod u+rwx {}`",
                dir.display(),
                meta.mode() & 0o7777,
                dir.display()
            ));
        }
        return read_only_fs(dir);
    }
    let probe = dir.join(format!(".ttp-agent-check-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot create anything in {} as {}: {e}; make it writable by the agent's user \
             (`chown` / `chmod`), or choose another `[store] path`",
            dir.display(),
            user_name(euid())
        )),
    }
}

fn read_only_fs(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(());
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs(3) fills `st` on success; `c` is a valid NUL-terminated path.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Ok(());
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let flags = unsafe { st.assume_init() }.f_flag;
    if flags & libc::ST_RDONLY != 0 {
        return Err(format!(
            "{} is on a read-only file system; choose a `[store] path` on a writable one",
            dir.display()
        ));
    }
    Ok(())
}
