//! What clamsentry does to the listening sockets it binds itself, from the
//! `[listen]` settings: the owner and group of the Unix socket file
//! (`listen.unix-owner`, `listen.unix-group`: clamd's LocalSocketGroup) and
//! the length of the queue of connections not yet accepted
//! (`listen.backlog`: clamd's MaxConnectionQueueLength). Sockets handed over
//! by systemd keep what their `.socket` unit set (`SocketUser=`,
//! `SocketGroup=`, `Backlog=`).
//!
//! Errors name the key, so that a typo in a group name says where to look.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::ListenConfig;

/// Gives the Unix socket file at `path` the configured owner and group
/// (either may be empty: left as created). Needs `CAP_CHOWN` unless the
/// owner stays ours and the group is one of ours, as for chown(1).
pub fn apply_unix_owner(path: &Path, listen: &ListenConfig) -> io::Result<()> {
    let owner = match listen.unix_owner.as_str() {
        "" => None,
        spec => Some(resolve_user(spec).map_err(|m| invalid("listen.unix-owner", m))?),
    };
    let group = match listen.unix_group.as_str() {
        "" => None,
        spec => Some(resolve_group(spec).map_err(|m| invalid("listen.unix-group", m))?),
    };
    if owner.is_none() && group.is_none() {
        return Ok(());
    }
    // The socket file itself, never a symlink's target.
    nix::unistd::fchownat(
        None,
        path,
        owner,
        group,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| {
        let key = if owner.is_some() {
            "listen.unix-owner"
        } else {
            "listen.unix-group"
        };
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "cannot give {} owner {:?} and group {:?} ({key}): {e}",
                path.display(),
                listen.unix_owner,
                listen.unix_group
            ),
        )
    })
}

/// Removes a socket file left by a previous run at `path`, so that it can
/// be bound again. Never another kind of file, and never a socket a live
/// daemon still answers on (clamd checks the same with `connect`: "Socket
/// file … is in use by another process"); both are errors that say what to
/// do.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display();
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{shown} exists and is not a socket: remove it or choose another listen.unix"),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{shown} is in use by another process (is clamd still running?): stop it or choose another listen.unix"
            ),
        ));
    }
    std::fs::remove_file(path)
}

/// Sets the accept queue length of a listening socket. Linux lets `listen`
/// run again on a listening socket to change it; the kernel caps it at
/// `net.core.somaxconn`.
pub fn set_backlog(socket: &impl AsFd, backlog: u32) -> io::Result<()> {
    let n = i32::try_from(backlog).unwrap_or(i32::MAX);
    let backlog = nix::sys::socket::Backlog::new(n)
        .map_err(|e| invalid("listen.backlog", format!("{backlog}: {e}")))?;
    nix::sys::socket::listen(socket, backlog)
        .map_err(|e| invalid("listen.backlog", format!("listen() failed: {e}")))
}

/// A user given by name or number (as clamd reads LocalSocketGroup: a
/// string that is all digits is a number).
pub fn resolve_user(spec: &str) -> Result<Uid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(spec) {
        Ok(Some(u)) => Ok(u.uid),
        Ok(None) => Err(format!("no user {spec:?} on this system")),
        Err(e) => Err(format!("cannot look up user {spec:?}: {e}")),
    }
}

/// A group given by name or number.
pub fn resolve_group(spec: &str) -> Result<Gid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid),
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
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listen = ListenConfig {
            unix_group: "no-such-group-here".into(),
            ..ListenConfig::default()
        };
        let err = apply_unix_owner(&path, &listen).unwrap_err().to_string();
        assert_eq!(
            err,
            "listen.unix-group: no group \"no-such-group-here\" on this system"
        );
        // Nothing to change is not an error.
        apply_unix_owner(&path, &ListenConfig::default()).unwrap();
        set_backlog(&_l, 17).unwrap();
    }

    #[test]
    fn stale_sockets_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = remove_stale_socket(&path).unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
        assert!(path.exists());
        drop(live);
        remove_stale_socket(&path).unwrap();
        assert!(!path.exists());
        remove_stale_socket(&path).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        assert!(remove_stale_socket(&path).is_err());
    }
}
