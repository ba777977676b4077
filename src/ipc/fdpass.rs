//! Receiving bytes together with passed file descriptors.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

/// At most this many descriptors are accepted from one message; more are
/// closed (a client gains nothing by sending many).
pub const MAX_FDS: usize = 4;

/// Reads once from a non-blocking Unix stream socket, collecting any passed
/// descriptors into `fds` (each owned and close-on-exec). Returns the number
/// of data bytes read (0 at end of stream). Descriptors of a message whose
/// control data was truncated are closed, none kept.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> std::io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg(
        socket,
        &mut iov,
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let truncated = msg.flags.contains(ReturnFlags::CTRUNC);
    for c in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = c {
            // Each descriptor is owned from here: kept, or closed when dropped.
            for owned in received {
                if !truncated && fds.len() < MAX_FDS {
                    fds.push(owned);
                }
            }
        }
    }
    Ok(msg.bytes)
}
