//! Who is on the other end of a Unix socket, from the kernel: SO_PEERCRED
//! (uid, gid and pid at connect time) and SO_PEERGROUPS (supplementary
//! groups, Linux 4.13+). The supervisor reads both once, when it accepts a
//! connection, and records them; nothing later changes what it recorded.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// A Unix-socket peer as the kernel recorded it at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixPeer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (the primary group included when the kernel
    /// lists it; callers add `gid` themselves).
    pub groups: Vec<u32>,
}

/// The peer of a connected Unix stream socket; `None` for other sockets.
pub fn unix_peer(socket: BorrowedFd<'_>) -> Option<UnixPeer> {
    let c = peer_credentials(socket)?;
    Some(UnixPeer {
        uid: c.uid,
        gid: c.gid,
        pid: Some(c.pid).filter(|p| *p > 0),
        groups: peer_groups(socket).unwrap_or_default(),
    })
}

/// SO_PEERCRED through libc: rustix's `UCred` holds a non-zero `Pid`, but
/// the kernel reports pid 0 for a peer in a pid namespace we cannot see.
fn peer_credentials(socket: BorrowedFd<'_>) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` of `len` bytes, and `len`
    // a valid in/out length; the socket stays open for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred)
}

/// The peer's groups as the kernel recorded them at connect time, or `None`
/// if the socket has none (not a Unix socket, old kernel).
pub fn peer_groups(socket: BorrowedFd<'_>) -> Option<Vec<u32>> {
    // libc: rustix has no SO_PEERGROUPS.
    // 64 groups first; the kernel says how many it has if that is too few.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a valid, writable buffer of `len` bytes, and
        // `len` a valid in/out length; the socket stays open for the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast::<libc::c_void>(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Some(groups);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len()
        {
            return None;
        }
        groups.resize(n.min(65_536), 0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_socketpair_reports_our_own_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).expect("SO_PEERGROUPS works on Linux");
        let mut ours: Vec<u32> = rustix::process::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }
}
