//! A SEQPACKET socket pair between two of the daemon's processes: one
//! datagram is one message (at most [`MAX_MESSAGE`] bytes), descriptors
//! travel as SCM_RIGHTS. A datagram that was truncated (too long, or with
//! more descriptors than allowed) is an error, never a partial message.
//!
//! With [`Channel::pass_credentials`] on, every datagram received carries the
//! sender's pid as the kernel saw it (SCM_CREDENTIALS): the supervisor learns
//! which process holds the other end without taking its word for it.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

// nix only for receiving: rustix reads SCM_CREDENTIALS into a `UCred`
// whose pid is a non-zero type, and the kernel writes 0 for a sender in
// another pid namespace (reading that would be undefined behaviour); nix
// keeps the kernel's plain integer.
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use rustix::net::{
    sendmsg, socketpair, sockopt, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

use super::messages::MAX_MESSAGE;

/// Most descriptors one message may carry, unless the channel allows more
/// ([`Channel::allow_fds`]).
const MAX_FDS: usize = 4;

/// The kernel's limit of descriptors in one message (SCM_MAX_FD).
pub const SCM_MAX_FD: usize = 253;

/// One end of a channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    /// Most descriptors a received message may carry.
    max_fds: usize,
}

impl Channel {
    /// A connected pair (close-on-exec; the spawner hands one end to the child).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            max_fds: MAX_FDS,
        }
    }

    /// Accepts messages with up to `n` descriptors (at most
    /// [`SCM_MAX_FD`]); a message with more is an error, as before.
    pub fn allow_fds(&mut self, n: usize) {
        self.max_fds = n.clamp(MAX_FDS, SCM_MAX_FD);
    }

    /// The channel a parent placed at descriptor `fd` before exec (checked
    /// to be open and a SEQPACKET socket), made close-on-exec.
    pub fn inherit(fd: RawFd) -> std::io::Result<Channel> {
        // libc: is the bare number open at all? (rustix only takes
        // descriptors it can borrow, and borrowing a closed one is wrong.)
        if !crate::sys::is_open(fd) {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        let borrowed = unsafe_borrow(fd);
        if sockopt::socket_type(borrowed)? != SocketType::SEQPACKET {
            return Err(std::io::Error::other("not a SEQPACKET socket"));
        }
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)?;
        // SAFETY: the descriptor is open (checked above) and was placed
        // here for this process, which has no other owner for it.
        Ok(Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Asks the kernel to attach the sender's credentials to every datagram
    /// received from now on (SO_PASSCRED); [`Channel::recv`] then returns
    /// the sender's pid.
    pub fn pass_credentials(&self) -> std::io::Result<()> {
        sockopt::set_socket_passcred(&self.fd, true)?;
        Ok(())
    }

    /// Ends the channel in both directions for every holder of either end:
    /// a blocked `recv` on this side returns, and the other side's sends
    /// and receives fail. Used to revoke a worker's channels at once.
    pub fn shutdown(&self) {
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
    }

    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        rustix::io::ioctl_fionbio(&self.fd, on)?;
        Ok(())
    }

    /// Sends one message with optional descriptors.
    pub fn send(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        if msg.len() > MAX_MESSAGE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "message too long",
            ));
        }
        // The usual message carries at most MAX_FDS descriptors: its
        // control space on the stack, no allocation per hand-off.
        let mut small =
            [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut large = Vec::new();
        let space: &mut [std::mem::MaybeUninit<u8>] = if fds.len() <= MAX_FDS {
            &mut small
        } else {
            large.resize(
                rustix::cmsg_space!(ScmRights(fds.len())),
                std::mem::MaybeUninit::uninit(),
            );
            &mut large
        };
        let mut cmsg = SendAncillaryBuffer::new(space);
        if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other("descriptors do not fit the message"));
        }
        let iov = [IoSlice::new(msg)];
        sendmsg(&self.fd, &iov, &mut cmsg, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the other end has closed.
    pub fn recv(&self) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        Ok(self.recv_from()?.map(|m| (m.bytes, m.fds)))
    }

    /// Receives one message with the sender's pid, when
    /// [`pass_credentials`](Self::pass_credentials) is on.
    pub fn recv_from(&self) -> std::io::Result<Option<Received>> {
        // One zeroed buffer of the largest message per thread, reused: most
        // messages are a few dozen bytes, and clearing 64 KiB for each was a
        // visible share of the supervisor's time per connection.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_MESSAGE]);
        }
        BUF.with(|b| self.recv_into(&mut b.borrow_mut()))
    }

    fn recv_into(&self, buf: &mut [u8]) -> std::io::Result<Option<Received>> {
        let mut cmsg = if self.max_fds == MAX_FDS {
            nix::cmsg_space!([RawFd; MAX_FDS], nix::sys::socket::UnixCredentials)
        } else {
            // SAFETY: CMSG_SPACE is arithmetic on its argument (a length
            // at most SCM_MAX_FD descriptors long); it touches no memory.
            let space = unsafe {
                libc::CMSG_SPACE((self.max_fds * std::mem::size_of::<RawFd>()) as u32)
                    + libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
            };
            Vec::with_capacity(space as usize)
        };
        let (n, flags, raw, pid) = {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut raw = Vec::new();
            let mut pid = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmRights(fds) => raw.extend(fds),
                        ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                        _ => {}
                    }
                }
            }
            (msg.bytes, msg.flags, raw, pid)
        };
        // SAFETY: the kernel installed these descriptors in our table for this
        // message and nothing else refers to them; we take ownership.
        let fds: Vec<OwnedFd> = raw
            .into_iter()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || fds.len() > self.max_fds
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "message longer than the channel allows",
            ));
        }
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        Ok(Some(Received {
            bytes: buf[..n].to_vec(),
            fds,
            pid,
        }))
    }
}

/// A borrow of a descriptor number that was just checked to be open.
fn unsafe_borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller checked `fd` is open, and it stays open while the
    // borrow is used (only for the getsockopt and fcntl right after).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// One received datagram.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// The sending process, as the kernel saw it (with SO_PASSCRED).
    pub pid: Option<i32>,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.fd
    }
}

/// The async face of a channel (tokio), for the control loops.
pub struct AsyncChannel {
    inner: tokio::io::unix::AsyncFd<Channel>,
}

impl AsyncChannel {
    pub fn new(ch: Channel) -> std::io::Result<AsyncChannel> {
        ch.set_nonblocking(true)?;
        // SAFETY: `Channel` owns its descriptor for its whole life and
        // `as_raw_fd` always returns that same descriptor, as `register` requires.
        let inner = unsafe { tokio::io::unix::AsyncFd::register(ch)? };
        Ok(AsyncChannel { inner })
    }

    pub async fn recv(&self) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        Ok(self.recv_from().await?.map(|m| (m.bytes, m.fds)))
    }

    pub async fn recv_from(&self) -> std::io::Result<Option<Received>> {
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|inner| inner.get_ref().recv_from()) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        self.send_with(msg, &[]).await
    }

    pub async fn send_with(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        loop {
            let mut guard = self.inner.writable().await?;
            match guard.try_io(|inner| inner.get_ref().send(msg, fds)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv(&self) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        self.inner.get_ref().recv()
    }

    /// [`try_recv`](Self::try_recv) with the sender's pid.
    pub fn try_recv_from(&self) -> std::io::Result<Option<Received>> {
        self.inner.get_ref().recv_from()
    }

    /// Sends without waiting: `WouldBlock` when the peer's queue is full.
    pub fn try_send(&self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        self.inner.get_ref().send(msg, fds)
    }

    /// See [`Channel::shutdown`].
    pub fn shutdown(&self) {
        self.inner.get_ref().shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = Channel::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        a.send(b"hello", &[file.as_fd()]).unwrap();
        let (msg, fds) = b.recv().unwrap().unwrap();
        assert_eq!(msg, b"hello");
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }

    #[test]
    fn a_channel_may_allow_more_descriptors() {
        let (a, mut b) = Channel::pair().unwrap();
        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        // Four by default: more is an error, never a partial message.
        a.send(b"many", &fds).unwrap();
        assert!(b.recv().is_err());
        b.allow_fds(64);
        a.send(b"many", &fds).unwrap();
        let (msg, got) = b.recv().unwrap().unwrap();
        assert_eq!((msg.as_slice(), got.len()), (&b"many"[..], 64));
        a.send(b"more", &[fds.as_slice(), &fds[..1]].concat())
            .unwrap();
        assert!(b.recv().is_err());
    }

    #[test]
    fn oversized_messages_are_refused() {
        let (a, b) = Channel::pair().unwrap();
        assert!(a.send(&vec![0u8; MAX_MESSAGE + 1], &[]).is_err());
        // A peer that bypasses `send` still cannot make us accept a cut message.
        let big = vec![1u8; MAX_MESSAGE + 10];
        let iov = [IoSlice::new(&big)];
        let mut none = SendAncillaryBuffer::default();
        if sendmsg(&a, &iov, &mut none, SendFlags::empty()).is_ok() {
            assert!(b.recv().is_err());
        }
    }
}
