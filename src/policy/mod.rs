//! Who may do what, as pure decisions: per-listener command profiles, the
//! administrator rule, and which networks may connect over TCP.
//!
//! The rules (documented for operators in the README, "Listener policy"):
//! * Every listener has a command profile. Defaults: TCP allows PING,
//!   VERSION, VERSIONCOMMANDS, INSTREAM and IDSESSION/END; Unix allows
//!   everything, but RELOAD and SHUTDOWN/QUIT only for administrators:
//!   root and `policy.unix.admin-users`/`admin-groups` — never the sandbox
//!   user, whose processes are exactly what a compromised worker could run.
//!   A daemon started by an unprivileged user (no sandbox user then) also
//!   takes that user's own clients as administrators: they can signal it
//!   anyway. The daemon's own processes never are (the supervisor checks the
//!   peer's pid against its children).
//! * Identities are what the kernel told the supervisor at accept
//!   ([`Identity`]); a path command is answered with the client's own file
//!   access, which the kernel decides (`supervisor::broker`).
//! * TCP connections from outside `listen.tcp-allow` are closed unread.
#![forbid(unsafe_code)]

pub mod commands;
pub mod network;
pub mod peer;

use std::collections::HashSet;
use std::net::SocketAddr;

pub use commands::{Decision, Profile};
pub use peer::{PeerKey, Prefixes};

/// The two kinds of listener; each has its own profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    Unix,
    Tcp,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Unix => "unix",
            ListenerKind::Tcp => "tcp",
        }
    }
}

/// The peer of a connection as the supervisor recorded it at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// SO_PEERCRED and SO_PEERGROUPS of a Unix-socket peer.
    Unix {
        uid: u32,
        gid: u32,
        /// Supplementary groups (the primary one included).
        groups: Vec<u32>,
        pid: Option<i32>,
    },
    /// A TCP peer has no identity; file access (if an operator allows path
    /// commands over TCP) is that of "others".
    Tcp {
        addr: SocketAddr,
        /// A loopback client's owner, as the kernel names it
        /// (`supervisor::local_peer`): the client for per-client limits and
        /// budgets. It grants nothing: the peer is still a TCP client.
        local_uid: Option<u32>,
    },
}

impl Identity {
    /// A TCP peer known by its address only.
    pub fn tcp(addr: SocketAddr) -> Identity {
        Identity::Tcp {
            addr,
            local_uid: None,
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(self, Identity::Unix { uid: 0, .. })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Unix { uid, pid, .. } => {
                write!(f, "unix uid={uid}")?;
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Identity::Tcp {
                addr,
                local_uid: None,
            } => write!(f, "{addr}"),
            Identity::Tcp {
                addr,
                local_uid: Some(uid),
            } => write!(f, "{addr} uid={uid}"),
        }
    }
}

/// Who may RELOAD, SHUTDOWN and QUIT on a Unix socket: root, and the uids
/// and gids of `policy.unix.admin-users` and `admin-groups`.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
}

impl Admins {
    pub fn new(uids: impl IntoIterator<Item = u32>, gids: impl IntoIterator<Item = u32>) -> Admins {
        let mut uids: HashSet<u32> = uids.into_iter().collect();
        uids.insert(0);
        Admins {
            uids,
            gids: gids.into_iter().collect(),
        }
    }

    /// Also counts `uid` as an administrator: the daemon's own user when it
    /// does not run as root (a client of that user can already stop or
    /// reload it with a signal; refusing it SHUTDOWN or RELOAD would protect
    /// nothing).
    pub fn with_own_user(mut self, uid: u32) -> Admins {
        self.uids.insert(uid);
        self
    }

    /// Resolves the configured names from the user database (the
    /// supervisor can read it; names that do not exist are logged).
    pub fn resolve(policy: &crate::config::UnixPolicy) -> Admins {
        let uids = policy.admin_users.iter().filter_map(|name| {
            match crate::sys::user_by_name(name) {
                Ok(Some(u)) => Some(u.uid),
                _ => {
                    tracing::warn!(user = %name, "policy.unix.admin-users: no such user, ignored");
                    None
                }
            }
        });
        let uids: Vec<u32> = uids.collect();
        let gids: Vec<u32> = policy
            .admin_groups
            .iter()
            .filter_map(|name| match crate::sys::group_by_name(name) {
                Ok(Some(gid)) => Some(gid),
                _ => {
                    tracing::warn!(group = %name, "policy.unix.admin-groups: no such group, ignored");
                    None
                }
            })
            .collect();
        Admins::new(uids, gids)
    }

    /// Is this peer an administrator? TCP peers never are.
    pub fn admits(&self, who: &Identity) -> bool {
        match who {
            Identity::Unix {
                uid, gid, groups, ..
            } => {
                self.uids.contains(uid)
                    || self.gids.contains(gid)
                    || groups.iter().any(|g| self.gids.contains(g))
            }
            Identity::Tcp { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32, groups: &[u32]) -> Identity {
        Identity::Unix {
            uid,
            gid,
            groups: groups.to_vec(),
            pid: None,
        }
    }

    #[test]
    fn administrators_are_root_and_the_configured_ones() {
        let a = Admins::new([1234], [77]);
        assert!(a.admits(&unix(0, 0, &[])));
        assert!(a.admits(&unix(1234, 100, &[100])));
        assert!(a.admits(&unix(4321, 100, &[100, 77])));
        assert!(a.admits(&unix(4321, 77, &[])));
        assert!(!a.admits(&unix(65534, 65534, &[65534])));
        assert!(!a.admits(&Identity::tcp("127.0.0.1:1".parse().unwrap())));
    }

    #[test]
    fn the_daemons_own_user_is_not_an_administrator() {
        // Whatever user runs the daemon (or its sandbox), only the list counts.
        let me = rustix::process::geteuid().as_raw();
        let a = Admins::new([], []);
        assert_eq!(a.admits(&unix(me, me, &[])), me == 0);
    }

    #[test]
    fn an_unprivileged_daemons_own_user_is_one_when_added() {
        let a = Admins::new([], []).with_own_user(995);
        assert!(a.admits(&unix(995, 995, &[])));
        assert!(!a.admits(&unix(996, 996, &[])));
    }
}
