//! What the `[listen]` settings ask of the listening sockets clamsentry
//! binds itself: the mode, owner and group of the Unix socket file
//! (`listen.unix-mode`, `listen.unix-owner`, `listen.unix-group`: clamd's
//! LocalSocketMode, User and LocalSocketGroup) and the length of the queue
//! of connections not yet accepted (`listen.backlog`: clamd's
//! MaxConnectionQueueLength). The socket file is created with all of them
//! at once by `supervisor::runtime_files`. Sockets handed over by systemd
//! keep what their `.socket` unit set (`SocketUser=`, `SocketGroup=`,
//! `Backlog=`).
//!
//! Errors name the key, so that a typo in a group name says where to look.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;

use crate::sys::User;
use rustix::process::{Gid, Uid};

use crate::config::ListenConfig;

/// What the configuration asks of the Unix socket file clamsentry creates
/// (`supervisor::runtime_files` creates it with all of this at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// Permission bits (`listen.unix-mode`).
    pub mode: u32,
    /// Owner: `listen.unix-owner`, else the daemon's own user.
    pub uid: u32,
    /// Group: `listen.unix-group`; else, when `listen.unix-owner` is set,
    /// that user's primary group (clamd's socket belongs to `User` and its
    /// group); else the daemon's own group.
    pub gid: u32,
    /// The groups the socket's directory is checked with: the owner's
    /// supplementary groups (as clamd, which binds after `initgroups`).
    pub groups: Vec<u32>,
    /// `listen.backlog`.
    pub backlog: u32,
}

/// Resolves the owner, group and mode of the Unix socket. Errors name the
/// key.
pub fn unix_socket_spec(listen: &ListenConfig, mode: u32) -> io::Result<SocketSpec> {
    let my_gid = rustix::process::getegid().as_raw();
    let owner = match listen.unix_owner.as_str() {
        "" => None,
        spec => Some(lookup_user(spec).map_err(|m| invalid("listen.unix-owner", m))?),
    };
    let group = match listen.unix_group.as_str() {
        "" => None,
        spec => Some(
            resolve_group(spec)
                .map_err(|m| invalid("listen.unix-group", m))?
                .as_raw(),
        ),
    };
    let (uid, gid, mut groups) = match owner {
        None => (
            rustix::process::geteuid().as_raw(),
            group.unwrap_or(my_gid),
            vec![],
        ),
        Some((uid, None)) => (uid.as_raw(), group.unwrap_or(my_gid), vec![]),
        Some((uid, Some(user))) => {
            let groups = crate::sys::group_list(&user.name, user.gid).unwrap_or_default();
            (uid.as_raw(), group.unwrap_or(user.gid), groups)
        }
    };
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(SocketSpec {
        mode,
        uid,
        gid,
        groups,
        backlog: listen.backlog,
    })
}

/// A user by name or number, with its passwd entry when it has one.
fn lookup_user(spec: &str) -> Result<(Uid, Option<User>), String> {
    let uid = resolve_user(spec)?;
    Ok((uid, crate::sys::user_by_uid(uid.as_raw()).ok().flatten()))
}

/// Sets the accept queue length of a listening socket. Linux lets `listen`
/// run again on a listening socket to change it; the kernel caps it at
/// `net.core.somaxconn`.
pub fn set_backlog(socket: &impl AsFd, backlog: u32) -> io::Result<()> {
    let n = i32::try_from(backlog).unwrap_or(i32::MAX);
    rustix::net::listen(socket, n)
        .map_err(|e| invalid("listen.backlog", format!("listen() failed: {e}")))
}

/// A user given by name or number (as clamd reads LocalSocketGroup: a
/// string that is all digits is a number).
pub fn resolve_user(spec: &str) -> Result<Uid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match crate::sys::user_by_name(spec) {
        Ok(Some(u)) => Ok(Uid::from_raw(u.uid)),
        Ok(None) => Err(format!("no user {spec:?} on this system")),
        Err(e) => Err(format!("cannot look up user {spec:?}: {e}")),
    }
}

/// A group given by name or number.
pub fn resolve_group(spec: &str) -> Result<Gid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match crate::sys::group_by_name(spec) {
        Ok(Some(gid)) => Ok(Gid::from_raw(gid)),
        Ok(None) => Err(format!("no group {spec:?} on this system")),
        Err(e) => Err(format!("cannot look up group {spec:?}: {e}")),
    }
}

fn invalid(key: &str, message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(resolve_user("root").unwrap(), Uid::from_raw(0));
        assert_eq!(resolve_user("4242").unwrap(), Uid::from_raw(4242));
        assert_eq!(resolve_group("0").unwrap(), Gid::from_raw(0));
        let err = resolve_group("no-such-group-here").unwrap_err();
        assert_eq!(err, "no group \"no-such-group-here\" on this system");
    }

    #[test]
    fn the_socket_spec() {
        let listen = ListenConfig {
            unix_group: "no-such-group-here".into(),
            ..ListenConfig::default()
        };
        let err = unix_socket_spec(&listen, 0o660).unwrap_err().to_string();
        assert_eq!(
            err,
            "listen.unix-group: no group \"no-such-group-here\" on this system"
        );
        // Nothing set: the daemon's own user and group.
        let spec = unix_socket_spec(&ListenConfig::default(), 0o660).unwrap();
        assert_eq!(spec.uid, rustix::process::geteuid().as_raw());
        assert_eq!(spec.gid, rustix::process::getegid().as_raw());
        assert_eq!(spec.groups, vec![spec.gid]);
        // An owner: its primary group unless a group is named.
        let daemon = crate::sys::user_by_name("daemon")
            .unwrap()
            .expect("user daemon");
        let listen = ListenConfig {
            unix_owner: "daemon".into(),
            ..ListenConfig::default()
        };
        let spec = unix_socket_spec(&listen, 0o666).unwrap();
        assert_eq!((spec.uid, spec.gid), (daemon.uid, daemon.gid));
        assert!(spec.groups.contains(&daemon.gid));
        let listen = ListenConfig {
            unix_owner: "daemon".into(),
            unix_group: "0".into(),
            backlog: 17,
            ..ListenConfig::default()
        };
        let spec = unix_socket_spec(&listen, 0o666).unwrap();
        assert_eq!((spec.gid, spec.mode, spec.backlog), (0, 0o666, 17));
        assert!(spec.groups.contains(&0));
        let l =
            std::os::unix::net::UnixListener::bind(tempfile::tempdir().unwrap().path().join("s"))
                .unwrap();
        set_backlog(&l, 17).unwrap();
    }
}
