//! Receiving bytes together with passed file descriptors.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// At most this many descriptors are accepted from one message; more are
/// closed (a client gains nothing by sending many).
pub const MAX_FDS: usize = 4;

/// Reads once from a non-blocking Unix stream socket, collecting any passed
/// descriptors into `fds` (each owned and close-on-exec). Returns the number
/// of data bytes read (0 at end of stream).
pub fn recv_with_fds(
    socket: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> std::io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let bytes = msg.bytes;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for
                    // this message; nothing else owns it, so we take ownership
                    // (and close it when dropped).
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if fds.len() < MAX_FDS {
                        fds.push(owned);
                    }
                }
            }
        }
    }
    Ok(bytes)
}
