//! The supplementary groups of a Unix-socket peer, from the kernel
//! (SO_PEERGROUPS, Linux 4.13+): no /proc or /etc/group lookup, so it works
//! inside the worker's sandbox too.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The peer's groups as the kernel recorded them at connect time, or `None`
/// if the socket has none (not a Unix socket, old kernel).
pub fn peer_groups(socket: BorrowedFd<'_>) -> Option<Vec<u32>> {
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
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }
}
