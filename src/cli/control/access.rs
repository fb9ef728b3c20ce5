//! Who is on the other end of the socket, and whether they may use it.
//!
//! The socket file's permissions are the access control the kernel enforces (mode 0660, owned
//! by the agent's user and the operators group: `connect(2)` needs write permission). The
//! daemon checks the peer again with the credentials the kernel gives for the connection
//! (`SO_PEERCRED`): a socket whose mode or group an administrator loosened by mistake still
//! admits only the agent's user, root and the operators group. The peer's identity goes into
//! the audit trail ([`Peer::actor`]); it is never taken from the client's word.

use std::ffi::CStr;

use crate::resolve::Actor;

/// The connecting process, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// The user's login name, when the user database knows the uid.
    pub user: Option<String>,
}

impl Peer {
    /// The credentials of the process connected to `stream`.
    #[cfg(target_os = "linux")]
    pub fn of(stream: &std::os::unix::net::UnixStream) -> std::io::Result<Peer> {
        use std::os::fd::AsRawFd as _;
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which lives on the stack
        // for the whole call; the descriptor belongs to `stream`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Peer {
            uid: cred.uid,
            gid: cred.gid,
            pid: cred.pid,
            user: user_name(cred.uid),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn of(_stream: &std::os::unix::net::UnixStream) -> std::io::Result<Peer> {
        Err(std::io::Error::other(
            "peer credentials need SO_PEERCRED (Linux)",
        ))
    }

    /// Who the audit trail names: the user (or `uid N`); for root or the agent's own user, the
    /// person behind `sudo` when the command reports one, as [`Actor::from_env`] would.
    pub fn actor(&self, own_uid: u32, sudo_user: Option<&str>) -> Actor {
        let sudo = sudo_user
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
            .filter(|_| self.uid == 0 || self.uid == own_uid);
        match (sudo, &self.user) {
            (Some(s), _) => Actor::named(s),
            (None, Some(u)) => Actor::named(u.clone()),
            (None, None) => Actor::named(format!("uid {}", self.uid)),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user {
            Some(u) => write!(f, "{u} (uid {}, pid {})", self.uid, self.pid),
            None => write!(f, "uid {} (pid {})", self.uid, self.pid),
        }
    }
}

/// Who may use the control channel besides root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The daemon's own user.
    pub owner_uid: u32,
    /// The operators group, if configured.
    pub group: Option<u32>,
}

impl Policy {
    /// Whether a peer with this uid and these groups (primary first) may connect. Pure.
    pub fn allows(&self, uid: u32, groups: &[u32]) -> bool {
        uid == 0 || uid == self.owner_uid || self.group.is_some_and(|g| groups.contains(&g))
    }

    /// The refusal a peer sees (no detail beyond what the socket's permissions already say).
    pub fn refusal(&self, peer: &Peer) -> String {
        match self.group {
            Some(g) => format!(
                "the running agent refuses {peer}: only its own user, root and members of the operators group (gid {g}, `[control] group`) may use the control channel"
            ),
            None => format!(
                "the running agent refuses {peer}: only its own user and root may use the control channel (no operators group is configured: `[control] group`)"
            ),
        }
    }
}

/// The groups of a peer: its primary group and, from the group database, the supplementary
/// groups of its user. (The daemon's sandbox hides other users' `/proc` entries, so the
/// process's own list is not readable.)
pub fn peer_groups(peer: &Peer) -> Vec<u32> {
    let mut groups = vec![peer.gid];
    if let Some(user) = &peer.user {
        groups.extend(group_list(user, peer.gid));
    }
    groups
}

/// The effective uid of this process.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A group given as a name or a numeric gid.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| format!("group name {group:?} contains a NUL byte"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero `group` is a valid value for getgrnam_r to overwrite.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to memory owned here that outlives the call; `buf` is as
    // long as claimed.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!(
            "group {group:?} does not exist (create it with `groupadd {group}`, or give a numeric gid)"
        ));
    }
    Ok(grp.gr_gid)
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value for getpwuid_r to overwrite.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to memory owned here that outlives the call.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { CStr::from_ptr(pw.pw_name) };
    name.to_str().ok().map(str::to_owned)
}

fn group_list(user: &str, gid: u32) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(user) else {
        return Vec::new();
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many and
        // reports the number it needs when it is too small.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(usize::try_from(n).unwrap_or(0));
            return groups;
        }
        let wanted = usize::try_from(n).unwrap_or(0);
        if wanted <= groups.len() || wanted > 65_536 {
            return Vec::new();
        }
        groups.resize(wanted, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, user: Option<&str>) -> Peer {
        Peer {
            uid,
            gid: 100,
            pid: 42,
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn root_the_owner_and_the_operators_group_only() {
        let p = Policy {
            owner_uid: 998,
            group: Some(4242),
        };
        assert!(p.allows(0, &[0]));
        assert!(p.allows(998, &[998]));
        assert!(p.allows(1000, &[1000, 4242]), "a supplementary member");
        assert!(p.allows(1000, &[4242]), "the primary group");
        assert!(!p.allows(65534, &[65534]));
        assert!(!p.allows(1000, &[1000, 27]));
        let no_group = Policy {
            owner_uid: 998,
            group: None,
        };
        assert!(!no_group.allows(1000, &[4242]));
        assert!(no_group.allows(998, &[]));
        let msg = p.refusal(&peer(65534, Some("nobody")));
        assert!(
            msg.contains("nobody (uid 65534") && msg.contains("4242"),
            "{msg}"
        );
    }

    #[test]
    fn the_audit_names_the_kernel_s_user_and_sudo_only_from_root_or_the_owner() {
        let alice = peer(1000, Some("alice"));
        assert_eq!(alice.actor(998, None).as_str(), "alice");
        // A member of the group cannot claim to be someone else.
        assert_eq!(alice.actor(998, Some("bob")).as_str(), "alice");
        assert_eq!(
            peer(0, Some("root")).actor(998, Some("bob")).as_str(),
            "bob"
        );
        assert_eq!(
            peer(998, Some("ttp-agent"))
                .actor(998, Some("carol"))
                .as_str(),
            "carol"
        );
        assert_eq!(
            peer(0, Some("root")).actor(998, Some(" \n")).as_str(),
            "root"
        );
        assert_eq!(peer(4711, None).actor(998, None).as_str(), "uid 4711");
    }

    #[test]
    fn numeric_groups_need_no_lookup() {
        assert_eq!(resolve_group("4242"), Ok(4242));
        assert!(resolve_group("no\0pe").is_err());
    }
}
