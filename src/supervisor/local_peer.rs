//! Which local user a loopback TCP client is, as the kernel knows it.
//!
//! Every TCP client is counted by its address prefix, and all of
//! `127.0.0.0/8` and `::1` used to be one client: one local user holding
//! `limits.max-connections-per-client` busy loopback sessions locked every
//! other local user (a web application, an upload service) out of TCP. But
//! a loopback connection's other end is a socket on this host, and the
//! kernel records who made it. So root asks the kernel (`sock_diag`,
//! `NETLINK_SOCK_DIAG`, an exact lookup by the connection's four
//! addresses) for the owner of the client's socket, and that local user is
//! the client for every per-client limit and budget (`PeerKey::Uid`, one
//! client with the user's Unix-socket connections).
//!
//! Nothing the client says is used: the addresses are the kernel's
//! (`accept`, `getsockname`), and so is the answer. The answer is the
//! socket's owner when it was created (`sk_uid`); a process that got a
//! socket from another user speaks as that user, as with `SO_PEERCRED`.
//! When the kernel names nobody — the client is already gone (a closed
//! socket's remains report uid 0 and no inode, and are not believed), a
//! kernel without `inet_diag` — the connection is refused: a shared
//! fallback key would be one more client identity for whoever can make the
//! lookup fail (the fourth outside review did, with `SO_BINDTODEVICE`,
//! before the lookup named the loopback device).
//!
//! Only loopback sources are looked up: a local process that connects to
//! one of the host's other addresses is counted by that address's prefix.
//! The request and the answer are built and read by pure functions below;
//! the only I/O is a `send` and a `recv` on one netlink socket, made at
//! start and shared (so that a lookup needs no descriptor when the daemon
//! has run out of them), with a 250 ms receive timeout.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rustix::net::{
    netlink, recv, send, socket_with, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags,
    SocketType,
};

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
/// The loopback device's index, the same in every network namespace
/// (`LOOPBACK_IFINDEX`). Named in the lookup so that a client socket bound
/// to it (`SO_BINDTODEVICE "lo"`) is found too; an unbound one matches any.
const LOOPBACK_IFINDEX: u32 = 1;
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
    request_as(
        canonical(client.ip()),
        canonical(server.ip()),
        client,
        server,
        seq,
    )
}

/// The request for a client socket of the IPv6 family that used
/// IPv4-mapped addresses (an IPv6 socket connecting to `::ffff:127.0.0.1`):
/// the kernel files it under IPv6 with the mapped addresses.
pub fn request_mapped(client: SocketAddr, server: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let to_v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    request_as(to_v6(client.ip()), to_v6(server.ip()), client, server, seq)
}

fn request_as(
    client_ip: IpAddr,
    server_ip: IpAddr,
    client: SocketAddr,
    server: SocketAddr,
    seq: u32,
) -> Option<Vec<u8>> {
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
    m.extend_from_slice(&LOOPBACK_IFINDEX.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(m.len(), len);
    Some(m)
}

/// The owner's uid in the kernel's answer to `request` (number `seq`), if
/// it found that very socket alive: the answer names the same four
/// addresses, and the socket still has an inode (a closed socket's remains
/// report uid 0 and inode 0: not the client's owner).
pub fn owner(answer: &[u8], request: &[u8], seq: u32) -> Option<u32> {
    let field = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let len = u32::from_ne_bytes(field(0)?) as usize;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if len > answer.len() || u32::from_ne_bytes(field(8)?) != seq {
        return None;
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    if len < NLMSG_HDRLEN + UID_AT + 8 {
        return None;
    }
    // Ports and addresses: 36 bytes after family, state, timer, retrans in
    // the answer, after family, protocol, ext, pad, states in the request.
    let asked = request.get(NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 8 + 36)?;
    if answer.get(NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 4 + 36)? != asked {
        return None;
    }
    if u32::from_ne_bytes(field(NLMSG_HDRLEN + UID_AT + 4)?) == 0 {
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
    let mut nl = NETLINK.lock().unwrap_or_else(|e| e.into_inner());
    if nl.is_none() {
        *nl = open().ok();
    }
    let fd = nl.as_ref()?;
    let ask = |req: Vec<u8>, seq: u32| -> Result<Option<u32>, ()> {
        send(fd, &req, SendFlags::empty()).map_err(drop)?;
        // The answer to this request; one left over from a request whose
        // answer came late is skipped.
        for _ in 0..4 {
            let mut buf = [0u8; 512];
            let (n, _) = recv(fd, &mut buf, RecvFlags::empty()).map_err(drop)?;
            let answer = &buf[..n];
            if answer.get(8..12) == Some(&seq.to_ne_bytes()[..]) {
                return Ok(owner(answer, &req, seq));
            }
        }
        Err(())
    };
    let next = || SEQ.fetch_add(1, Ordering::Relaxed);
    // An IPv4 client, or an IPv6 one; an IPv4 address of an IPv6 socket.
    let (first, second) = (next(), next());
    let found = request(client, server, first)
        .map_or(Ok(None), |r| ask(r, first))
        .and_then(|uid| match uid {
            Some(uid) => Ok(Some(uid)),
            None => request_mapped(client, server, second).map_or(Ok(None), |r| ask(r, second)),
        });
    match found {
        Ok(uid) => uid,
        Err(()) => {
            // The socket failed or answered nothing in time: a new one next
            // time.
            *nl = None;
            None
        }
    }
}

/// The netlink socket all lookups share, made once (at start, by
/// [`prepare`], while descriptors are plenty: a lookup must not need a
/// descriptor of its own when the daemon has run out of them).
static NETLINK: Mutex<Option<OwnedFd>> = Mutex::new(None);
static SEQ: AtomicU32 = AtomicU32::new(1);

/// Makes the shared netlink socket now.
pub fn prepare() {
    let mut nl = NETLINK.lock().unwrap_or_else(|e| e.into_inner());
    if nl.is_none() {
        *nl = open().ok();
    }
}

/// A sock_diag socket whose answers come within 250 ms (a lookup never
/// holds up the accept loop for long).
fn open() -> rustix::io::Result<OwnedFd> {
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    sockopt::set_socket_timeout(
        &fd,
        sockopt::Timeout::Recv,
        Some(std::time::Duration::from_millis(250)),
    )?;
    Ok(fd)
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
        assert_eq!(&r[60..64], &1u32.to_ne_bytes(), "the loopback device");
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
        let client: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:3310".parse().unwrap();
        let req = request(client, server, 5).unwrap();
        // An answer as the kernel writes it: the same addresses, an inode.
        let mut ok = vec![0u8; NLMSG_HDRLEN + UID_AT + 8 + 4];
        let len = ok.len() as u32;
        ok[0..4].copy_from_slice(&len.to_ne_bytes());
        ok[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ok[8..12].copy_from_slice(&5u32.to_ne_bytes());
        ok[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 40]
            .copy_from_slice(&req[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 44]);
        let uid_at = NLMSG_HDRLEN + UID_AT;
        ok[uid_at..uid_at + 4].copy_from_slice(&1000u32.to_ne_bytes());
        ok[uid_at + 4..uid_at + 8].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(owner(&ok, &req, 5), Some(1000));
        assert_eq!(owner(&ok, &req, 6), None, "another request's answer");
        assert_eq!(owner(&ok[..40], &req, 5), None, "short");
        let mut err = ok.clone();
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(owner(&err, &req, 5), None);
        let mut long = ok.clone();
        long[0..4].copy_from_slice(&(len + 1).to_ne_bytes());
        assert_eq!(owner(&long, &req, 5), None, "claims more than it has");
        assert_eq!(owner(&[], &req, 5), None);
        // Another socket's answer.
        let other = request("127.0.0.9:40001".parse().unwrap(), server, 5).unwrap();
        assert_eq!(owner(&ok, &other, 5), None);
        // A closed socket's remains: no inode, uid 0.
        let mut gone = ok.clone();
        gone[uid_at..uid_at + 8].fill(0);
        assert_eq!(owner(&gone, &req, 5), None);
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
        // A client bound to the loopback device is found too.
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.bind_device(Some(b"lo")).unwrap();
        c.connect(&l.local_addr().unwrap().into()).unwrap();
        let (s, from) = l.accept().unwrap();
        let me = s.local_addr().unwrap();
        assert_eq!(uid_of(from, me), Some(rustix::process::geteuid().as_raw()));
        // Once the client has closed, its socket's remains (orphaned: no
        // inode from the moment of close) name nobody.
        drop(c);
        assert_eq!(uid_of(from, me), None, "a closed client is nobody");
        // An IPv6 socket that connects to an IPv4-mapped address.
        let l6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        l6.set_only_v6(false).unwrap();
        l6.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        l6.listen(8).unwrap();
        let port = l6.local_addr().unwrap().as_socket().unwrap().port();
        let c6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        c6.connect(
            &format!("[::ffff:127.0.0.1]:{port}")
                .parse::<SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let (s, from) = l6.accept().unwrap();
        let (from, me) = (
            from.as_socket().unwrap(),
            s.local_addr().unwrap().as_socket().unwrap(),
        );
        assert_eq!(
            uid_of(from, me),
            Some(rustix::process::geteuid().as_raw()),
            "{from} {me}"
        );
        drop(c6);
        // IPv6 loopback, where the host has it.
        if let Ok(l) = std::net::TcpListener::bind("[::1]:0") {
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, from) = l.accept().unwrap();
            let me = s.local_addr().unwrap();
            assert_eq!(uid_of(from, me), Some(rustix::process::geteuid().as_raw()));
        }
    }
}
