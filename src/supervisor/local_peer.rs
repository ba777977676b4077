//! Which local user a loopback TCP client is, as the kernel knows it.
//!
//! Every TCP client is counted by its address prefix, and all of
//! `127.0.0.0/8` and `::1` used to be one client: one local user holding
//! `limits.max-connections-per-client` busy loopback sessions locked every
//! other local user (a web application, an upload service) out of TCP. But
//! a loopback connection's other end is a socket on this host, and the
//! kernel records who made it. So root asks the kernel (`sock_diag`,
//! `NETLINK_SOCK_DIAG`, an exact lookup by the connection's four
//! addresses) for the owner of the client's socket, and that uid is the
//! client for every per-client limit and budget (`PeerKey::Loopback`).
//!
//! Nothing the client says is used: the addresses are the kernel's
//! (`accept`, `getsockname`), and so is the answer. The answer is the
//! socket's owner when it was created (`sk_uid`); a process that got a
//! socket from another user speaks as that user, as with `SO_PEERCRED`.
//! When the lookup fails (the client is already gone, a kernel without
//! `inet_diag`, a socket in another network namespace), the client is
//! `127.0.0.0/8`, as before.
//!
//! Only loopback sources are looked up: a local process that connects to
//! one of the host's other addresses is counted by that address's prefix.
//! The request and the answer are built and read by pure functions below;
//! the only I/O is one `send` and one `recv` on a netlink socket.
#![forbid(unsafe_code)]

use rustix::net::{
    netlink, recv, send, socket_with, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType,
};
use std::net::{IpAddr, SocketAddr};

use crate::policy::peer::canonical;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
#[cfg(test)]
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_sockid`: sport, dport, src[4], dst[4], if, cookie[2].
const SOCKID_LEN: usize = 48;
/// `INET_DIAG_NOCOOKIE`: look the socket up by its addresses only.
const NO_COOKIE: u32 = u32::MAX;
/// Where `idiag_uid` lies in `struct inet_diag_msg`: family, state, timer,
/// retrans (4), sockid (48), expires, rqueue, wqueue (12).
const UID_AT: usize = 4 + SOCKID_LEN + 12;

/// Is `ip` a loopback source whose owner is worth asking for?
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// The request for the client socket of the connection from `client` to
/// `server` (both as this host's side of the connection sees them).
pub fn request(client: SocketAddr, server: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let (client_ip, server_ip) = (canonical(client.ip()), canonical(server.ip()));
    let family = match (client_ip, server_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => return None,
    };
    let len = NLMSG_HDRLEN + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
                                                  // The client's socket: its source is the client, its destination us.
    m.extend_from_slice(&client.port().to_be_bytes());
    m.extend_from_slice(&server.port().to_be_bytes());
    for ip in [client_ip, server_ip] {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => a.copy_from_slice(&v6.octets()),
        }
        m.extend_from_slice(&a);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(m.len(), len);
    Some(m)
}

/// The owner's uid in the kernel's answer to request `seq`, if it found
/// the socket.
pub fn owner(answer: &[u8], seq: u32) -> Option<u32> {
    let field = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let len = u32::from_ne_bytes(field(0)?) as usize;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if len > answer.len() || u32::from_ne_bytes(field(8)?) != seq {
        return None;
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    if len < NLMSG_HDRLEN + UID_AT + 4 {
        return None;
    }
    Some(u32::from_ne_bytes(field(NLMSG_HDRLEN + UID_AT)?))
}

/// Asks the kernel who owns the client end of the loopback connection from
/// `client` to `server` (this host's addresses of an accepted connection).
/// `None` if it is not loopback, or the kernel does not say.
pub fn uid_of(client: SocketAddr, server: SocketAddr) -> Option<u32> {
    if !is_loopback(client.ip()) {
        return None;
    }
    let seq = 1;
    let req = request(client, server, seq)?;
    let nl = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .ok()?;
    send(&nl, &req, SendFlags::empty()).ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = recv(&nl, &mut buf, RecvFlags::empty()).ok()?;
    owner(&buf[..n], seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_sources_are_asked_about() {
        for a in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(a.parse().unwrap()), "{a}");
        }
        for a in ["10.0.0.1", "192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_request_names_the_clients_socket() {
        let r = request(
            "127.0.0.9:40000".parse().unwrap(),
            "127.0.0.1:3310".parse().unwrap(),
            7,
        )
        .unwrap();
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], libc::IPPROTO_TCP as u8);
        // Source port is the client's, destination ours, in network order.
        assert_eq!(&r[24..26], &40000u16.to_be_bytes());
        assert_eq!(&r[26..28], &3310u16.to_be_bytes());
        assert_eq!(&r[28..32], &[127, 0, 0, 9]);
        assert_eq!(&r[44..48], &[127, 0, 0, 1]);
        // IPv4-mapped is IPv4; mixed families are not asked.
        let mapped = request(
            "[::ffff:127.0.0.9]:1".parse().unwrap(),
            "[::ffff:127.0.0.1]:2".parse().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(mapped[16], libc::AF_INET as u8);
        assert!(request(
            "127.0.0.1:1".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
            1
        )
        .is_none());
    }

    #[test]
    fn a_short_wrong_or_error_answer_names_nobody() {
        let mut ok = vec![0u8; NLMSG_HDRLEN + UID_AT + 4 + 4];
        let len = ok.len() as u32;
        ok[0..4].copy_from_slice(&len.to_ne_bytes());
        ok[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ok[8..12].copy_from_slice(&5u32.to_ne_bytes());
        ok[NLMSG_HDRLEN + UID_AT..NLMSG_HDRLEN + UID_AT + 4]
            .copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(owner(&ok, 5), Some(1000));
        assert_eq!(owner(&ok, 6), None, "another request's answer");
        assert_eq!(owner(&ok[..40], 5), None, "short");
        let mut err = ok.clone();
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(owner(&err, 5), None);
        let mut long = ok.clone();
        long[0..4].copy_from_slice(&(len + 1).to_ne_bytes());
        assert_eq!(owner(&long, 5), None, "claims more than it has");
        assert_eq!(owner(&[], 5), None);
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_loopback_client() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, from) = l.accept().unwrap();
        let me = s.local_addr().unwrap();
        assert_eq!(uid_of(from, me), Some(rustix::process::geteuid().as_raw()));
        // No such connection: nobody.
        let other = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
        assert_eq!(uid_of(other, me), None);
        drop(c);
        // Not loopback: not asked.
        assert_eq!(uid_of("192.0.2.1:1".parse().unwrap(), me), None);
    }
}
