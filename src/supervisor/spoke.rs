//! Whether a client has sent anything yet, as the kernel counts it — asked
//! of the supervisor's own copy of the socket, without reading a byte.
//!
//! Admission closes a client's oldest *idle* connection to make room for
//! its newcomer ([`super::gate::admission`]). The gate learns that a
//! connection is busy only when its worker reports the first command, which
//! takes a hand-off, a read and a report: under load, tens of
//! milliseconds. A flood of connections from one address (a NAT, a shared
//! host) would in that time close the honest request that shares the
//! address and has sent its command already. So before a connection is
//! closed as idle, the gate asks the kernel:
//!
//! * TCP: `TCP_INFO`'s `tcpi_bytes_received` (Linux 4.1) counts every byte
//!   the peer sent, read or not; the bytes root itself read (a PROXY
//!   header, its `preamble`) do not count.
//! * Unix: the bytes waiting unread (`FIONREAD`). Once the worker has read
//!   them and before its report arrives, the connection looks idle again;
//!   that window is a read and a message long, and a Unix client is one
//!   uid, so only that uid's own connections compete in it.
//!
//! A client that connects and then waits before sending its command is
//! indistinguishable from one that holds connections open on purpose; it
//! may still be closed as idle.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

/// Whether the peer has sent more than `preamble` bytes on `socket` and
/// may still be waiting for an answer. Errors (a socket already gone)
/// answer `false`: it may be closed as idle.
pub fn spoke(socket: impl AsFd, preamble: u64) -> bool {
    match tcp_bytes_received(socket.as_fd()) {
        Some(n) => n > preamble,
        None => rustix::io::ioctl_fionread(socket).is_ok_and(|n| n > 0),
    }
}

/// States (`tcpi_state`, numbered as in the kernel's
/// `include/net/tcp_states.h`; libc does not name them) in which the peer's
/// FIN has arrived, which the kernel counts as one byte received:
/// TIME_WAIT 6, CLOSE_WAIT 8, LAST_ACK 9, CLOSING 11.
const PEER_FIN_STATES: [u8; 4] = [6, 8, 9, 11];

/// `TCP_CLOSE`: the connection is over (a reset, or both sides closed).
const TCP_CLOSE: u8 = 7;

/// The bytes the peer sent (`tcpi_bytes_received`, less its FIN), or
/// `None` if `fd` is not a TCP socket or the kernel's `tcp_info` is too
/// short to hold them.
fn tcp_bytes_received(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: `tcp_info` is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // libc: rustix has no TCP_INFO.
    // SAFETY: `fd` is an open descriptor borrowed for the call; `info` and
    // `len` are valid for writes of `len` bytes, the size of `info`, and
    // the kernel writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let end =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + std::mem::size_of::<u64>();
    if rc != 0 || (len as usize) < end {
        return None;
    }
    if info.tcpi_state == TCP_CLOSE {
        // Reset or closed both ways: nobody is waiting for an answer.
        return Some(0);
    }
    let fin = u64::from(PEER_FIN_STATES.contains(&info.tcpi_state));
    Some(info.tcpi_bytes_received.saturating_sub(fin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn tcp_counts_bytes_sent_read_or_not_beyond_the_preamble() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        assert!(!spoke(&s, 0), "nothing sent yet");
        c.write_all(b"PROXYzPING\0").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        // Read or unread, sent bytes count; the 5 root read do not.
        assert!(spoke(&s, 5));
        assert!(!spoke(&s, 11));
        let mut rest = [0u8; 6];
        s.read_exact(&mut rest).unwrap();
        assert!(spoke(&s, 5), "read by someone else, still sent");
    }

    #[test]
    fn a_fin_is_not_a_byte_sent() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        // The FIN has arrived once a read sees the end.
        let mut buf = [0u8; 1];
        assert_eq!((&s).read(&mut buf).unwrap(), 0);
        assert!(!spoke(&s, 0), "only a FIN");
        drop(c);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"zPING\0").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = Vec::new();
        (&s).read_to_end(&mut all).unwrap();
        assert!(spoke(&s, 5), "a command, then a FIN");
        assert!(!spoke(&s, 6));
    }

    #[test]
    fn a_reset_connection_waits_for_nothing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"zPING\0").unwrap();
        rustix::net::sockopt::set_socket_linger(&c, Some(std::time::Duration::ZERO)).unwrap();
        drop(c);
        let mut buf = [0u8; 16];
        // The command, then the reset.
        while (&s).read(&mut buf).is_ok_and(|n| n > 0) {}
        assert!(!spoke(&s, 0));
    }

    #[test]
    fn unix_counts_bytes_not_read_yet() {
        let (mut c, mut s) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!spoke(&s, 0));
        c.write_all(b"zPING\0").unwrap();
        assert!(spoke(&s, 0));
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
        assert!(!spoke(&s, 0), "read: the worker's report says the rest");
    }
}
