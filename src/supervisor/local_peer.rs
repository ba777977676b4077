//! Which local user a TCP client is, when its socket is on this host.
//!
//! Every TCP client is counted by its address prefix, and all of
//! `127.0.0.0/8` and `::1` used to be one client: one local user holding
//! `limits.max-connections-per-client` busy loopback sessions locked every
//! other local user (a web application, an upload service) out of TCP. But
//! when a connection's other end is a socket on this host, the kernel
//! records who made it. So root asks the kernel (`sock_diag`,
//! `NETLINK_SOCK_DIAG`, an exact lookup by the connection's four
//! addresses) for the owner of the client's socket, and that local user is
//! the client for every per-client limit and budget (`PeerKey::Uid`, one
//! client with the user's Unix-socket connections).
//!
//! Every TCP client is looked up, not only loopback ones: a local program
//! may connect from one of the host's other addresses (a LAN address,
//! bound as its source even towards 127.0.0.1), and counted by that
//! address it would be a second client beside its uid, spending the share
//! of the remote clients of the same network (the fourth outside review's
//! retry). A remote client's socket is not in this host's tables: the
//! kernel answers "no such socket" (`ENOENT`) and the client is counted by
//! its address. A socket bound to a device (`SO_BINDTODEVICE`) is found
//! only under that device, so for a client whose address is one of the
//! host's, every device is tried. A client from an address that is not
//! one of the host's is remote and not looked up: only a socket of this
//! host can complete a handshake from one of its addresses (the replies to
//! any other address leave the host), and a socket of this host found
//! under another host's address is an impostor — any user may bind any
//! address with `IP_FREEBIND` and leave the socket half open, waiting for
//! that host's connection (the fifth review's retry took a remote IPv6
//! client's identity so); a found socket must also have completed its
//! handshake. An IPv6
//! socket that used IPv4-mapped addresses is found by the IPv4 lookup and
//! named in its IPv6 form: the same socket (the fifth outside review
//! connected one towards an IPv4 listener, went unnamed, and was counted
//! as the /24 of the host's own address). A client from loopback or one of
//! the host's addresses whose socket the kernel does not find is refused:
//! a local client that reset its connection right after sending
//! (`SO_LINGER` 0) is gone before the lookup, and counted by the address it
//! would spend a remote network's share (the fifth review's retry); a
//! connection forwarded to one of the host's addresses by NAT from
//! elsewhere is refused too.
//!
//! Nothing the client says is used: the addresses are the kernel's
//! (`accept`, `getsockname`), and so is the answer. The answer is the
//! socket's owner when it was created (`sk_uid`); a process that got a
//! socket from another user speaks as that user, as with `SO_PEERCRED`.
//! A socket of this host that no process holds any more (its client closed
//! it: the remains report uid 0 and no inode) is refused, and so is a
//! loopback client the kernel does not find: a shared fallback key would be
//! one more client identity for whoever can make the lookup miss (the
//! fourth outside review did, with `SO_BINDTODEVICE`, before the lookup
//! named the devices). If the lookup itself fails (a kernel without
//! `inet_diag`), local clients are refused; remote ones are never looked
//! up. [`decide`] is that table, a pure function.
//!
//! The request and the answer are built and read by pure functions below;
//! the only I/O is a `send` and a `recv` on one netlink socket, made at
//! start and shared (so that a lookup needs no descriptor when the daemon
//! has run out of them), with a 250 ms receive timeout, and the list of the
//! host's interfaces and addresses, read at start and then at most every
//! 10 s (a failed read keeps the last list).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::net::{
    netlink, recv, send, socket_with, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags,
    SocketType,
};

use crate::policy::peer::canonical;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
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

/// The request for the client socket of the connection from `client` to
/// `server` (both as this host's side of the connection sees them).
#[cfg(test)]
fn request(client: SocketAddr, server: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    request_as(
        canonical(client.ip()),
        canonical(server.ip()),
        client,
        server,
        (seq, LOOPBACK_IFINDEX),
    )
}

fn request_as(
    client_ip: IpAddr,
    server_ip: IpAddr,
    client: SocketAddr,
    server: SocketAddr,
    (seq, ifindex): (u32, u32),
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
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(m.len(), len);
    Some(m)
}

/// What the kernel says of the client end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live socket of this host, made by this user.
    Owner(u32),
    /// A socket of this host with those four addresses that no process
    /// holds any more (closed: orphaned or in time-wait; the kernel reports
    /// uid 0 and no inode). A local client that already left.
    Left,
    /// No socket of this host has those addresses: a remote client, or a
    /// local one whose connection is already reset.
    Absent,
    /// A socket of this host with those addresses that never completed a
    /// handshake: not the client's.
    Impostor,
}

/// TCP states of a socket that completed its handshake: ESTABLISHED,
/// FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING
/// (`include/net/tcp_states.h`).
const HANDSHAKE_DONE: [u8; 8] = [1, 4, 5, 6, 7, 8, 9, 11];

/// What the kernel's answer to `request` (number `seq`) says, if it is
/// that answer and well formed: the socket found must name the same four
/// addresses; "no such socket" is `ENOENT`. Anything else is no answer.
pub fn found(answer: &[u8], request: &[u8], seq: u32) -> Option<Found> {
    let field = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let len = u32::from_ne_bytes(field(0)?) as usize;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if len > answer.len() || u32::from_ne_bytes(field(8)?) != seq {
        return None;
    }
    if kind == NLMSG_ERROR {
        let error = i32::from_ne_bytes(field(NLMSG_HDRLEN)?);
        return (error == -libc::ENOENT).then_some(Found::Absent);
    }
    if kind != SOCK_DIAG_BY_FAMILY || len < NLMSG_HDRLEN + UID_AT + 8 {
        return None;
    }
    // Ports and addresses: 36 bytes after family, state, timer, retrans in
    // the answer, after family, protocol, ext, pad, states in the request.
    // An IPv6 socket that used IPv4-mapped addresses is found by an IPv4
    // lookup and named by its IPv6 form: the same socket.
    let asked = sockid(
        *request.get(NLMSG_HDRLEN)?,
        request.get(NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 8 + 36)?,
    )?;
    let named = sockid(
        *answer.get(NLMSG_HDRLEN)?,
        answer.get(NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 4 + 36)?,
    )?;
    if asked != named {
        return None;
    }
    if u32::from_ne_bytes(field(NLMSG_HDRLEN + UID_AT + 4)?) == 0 {
        return Some(Found::Left);
    }
    // The client end of a connection that was accepted has completed its
    // handshake. A socket with those addresses that has not (SYN_SENT:
    // one made with IP_FREEBIND for another host's address, waiting for
    // that host's connection to take its place; the fifth review's retry)
    // is not that client.
    if !HANDSHAKE_DONE.contains(answer.get(NLMSG_HDRLEN + 1)?) {
        return Some(Found::Impostor);
    }
    Some(Found::Owner(u32::from_ne_bytes(field(
        NLMSG_HDRLEN + UID_AT,
    )?)))
}

/// Ports and addresses of a `struct inet_diag_sockid` of `family`, the
/// addresses canonical (an IPv4-mapped IPv6 address as IPv4).
fn sockid(family: u8, id: &[u8]) -> Option<(u16, u16, IpAddr, IpAddr)> {
    let port = |at: usize| Some(u16::from_be_bytes(id.get(at..at + 2)?.try_into().ok()?));
    let addr = |at: usize| -> Option<IpAddr> {
        Some(if i32::from(family) == libc::AF_INET {
            let a: [u8; 4] = id.get(at..at + 4)?.try_into().ok()?;
            IpAddr::from(a)
        } else if i32::from(family) == libc::AF_INET6 {
            let a: [u8; 16] = id.get(at..at + 16)?.try_into().ok()?;
            canonical(IpAddr::from(a))
        } else {
            return None;
        })
    };
    Some((port(0)?, port(2)?, addr(4)?, addr(20)?))
}

/// Who a TCP client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The local user that owns the client's socket.
    Local(u32),
    /// A client elsewhere: counted by its address.
    Remote,
    /// Not served: the reason, for the log.
    Refused(&'static str),
}

/// The decision, from where the client's address is and the kernel's
/// answer (`None`: the lookup failed). A client from an address that is
/// not the host's is remote, whatever the kernel would say. From loopback
/// or one of the host's addresses, a live socket that completed its
/// handshake is its owner's; anything else (closed, reset, never
/// connected, not found, not asked) is refused: a shared fallback key
/// would be one more identity for whoever can make the lookup miss.
pub fn decide(source: Source, answer: Option<Found>) -> Client {
    match (source, answer) {
        // Only a socket of this host can complete a handshake from one of
        // its addresses: the replies to any other address leave the host.
        // A socket found for another address is an impostor (IP_FREEBIND
        // binds any address without privilege), whatever it says.
        (Source::Elsewhere, _) => Client::Remote,
        (_, Some(Found::Owner(uid))) => Client::Local(uid),
        (_, Some(Found::Left)) => Client::Refused("a local client that closed its socket already"),
        (_, Some(Found::Impostor)) => {
            Client::Refused("a local socket with the client's addresses that never connected")
        }
        // From the host's own address, the client's socket is gone: it
        // reset its connection (SO_LINGER 0) after sending, to be counted
        // by the address (the fifth review's retry). Refused, as from
        // loopback.
        (_, Some(Found::Absent)) => {
            Client::Refused("local client whose owner the kernel does not name")
        }
        (_, None) => Client::Refused("local client whose owner the kernel could not be asked for"),
    }
}

/// Where a TCP client's address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// 127.0.0.0/8, `::1` (IPv4-mapped too).
    Loopback,
    /// One of this host's other addresses.
    OwnAddress,
    /// Any other address.
    Elsewhere,
}

/// Who the client of the connection from `client` to `server` is (this
/// host's addresses of an accepted connection), as the kernel says.
pub fn client(client: SocketAddr, server: SocketAddr) -> Client {
    match source_of(client.ip()) {
        Source::Elsewhere => Client::Remote,
        source => decide(source, lookup(client, server)),
    }
}

/// Where `ip` is, by the host's list of its addresses.
fn source_of(ip: IpAddr) -> Source {
    let ip = canonical(ip);
    if ip.is_loopback() {
        return Source::Loopback;
    }
    let mut host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    refresh(&mut host);
    match host.as_ref() {
        Some(h) if h.addresses.contains(&ip) => Source::OwnAddress,
        _ => Source::Elsewhere,
    }
}

/// Asks the kernel for the client end of the connection from `client` to
/// `server`, under each device in turn (a socket bound to a device is
/// found only under it); `None` if the lookup failed.
fn lookup(client: SocketAddr, server: SocketAddr) -> Option<Found> {
    let mut nl = NETLINK.lock().unwrap_or_else(|e| e.into_inner());
    if nl.is_none() {
        *nl = open().ok();
    }
    let fd = nl.as_ref()?;
    let ask = |req: Vec<u8>, seq: u32| -> Result<Option<Found>, ()> {
        send(fd, &req, SendFlags::empty()).map_err(drop)?;
        // The answer to this request; one left over from a request whose
        // answer came late is skipped.
        for _ in 0..4 {
            let mut buf = [0u8; 512];
            let (n, _) = recv(fd, &mut buf, RecvFlags::empty()).map_err(drop)?;
            let answer = &buf[..n];
            if answer.get(8..12) == Some(&seq.to_ne_bytes()[..]) {
                return Ok(found(answer, &req, seq));
            }
        }
        Err(())
    };
    let next = || SEQ.fetch_add(1, Ordering::Relaxed);
    let (c, s) = (canonical(client.ip()), canonical(server.ip()));
    let to_v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    let searched = (|| {
        // An answer that is not about this socket (an IPv4 lookup that
        // found an IPv6 socket names it by its mapped addresses): the next
        // form is asked; if no form finds the socket, the lookup failed.
        let mut unsure = false;
        for ifindex in devices() {
            // An IPv4 client, or an IPv6 one; for an IPv4 address, also in
            // its IPv4-mapped form, as an IPv6 client socket that used it
            // (the fifth outside review: asked only towards an IPv6
            // listener, such a socket towards an IPv4 one went unnamed and
            // was counted as a remote network).
            let mut asks = vec![(c, s)];
            if c.is_ipv4() && s.is_ipv4() {
                asks.push((to_v6(c), to_v6(s)));
            }
            for (ci, si) in asks {
                let seq = next();
                let Some(req) = request_as(ci, si, client, server, (seq, ifindex)) else {
                    continue;
                };
                match ask(req, seq)? {
                    Some(Found::Absent) => {}
                    Some(hit) => return Ok(Some(hit)),
                    None => unsure = true,
                }
            }
        }
        Ok((!unsure).then_some(Found::Absent))
    })();
    match searched {
        Ok(answer) => answer,
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
    refresh(&mut HOST.lock().unwrap_or_else(|e| e.into_inner()));
}

/// The host's interfaces and addresses, as last read (at start, then at
/// most every 10 s; a failed read keeps the last list, so that a daemon
/// out of descriptors still knows them).
struct Host {
    at: Instant,
    devices: Vec<u32>,
    addresses: Vec<IpAddr>,
}

static HOST: Mutex<Option<Host>> = Mutex::new(None);

/// Reads the host's interfaces if the last read is older than 10 s.
fn refresh(host: &mut Option<Host>) {
    if host
        .as_ref()
        .is_some_and(|h| h.at.elapsed() < Duration::from_secs(10))
    {
        return;
    }
    if let Some((devices, addresses)) = crate::sys::interfaces() {
        *host = Some(Host {
            at: Instant::now(),
            devices,
            addresses: addresses.into_iter().map(canonical).collect(),
        });
    }
}

/// The devices to name in the lookup (for a client from loopback or one
/// of the host's addresses): the loopback device first (which also finds a
/// socket bound to no device), then every other device, since a socket
/// bound to a device (`SO_BINDTODEVICE`) is found only under it.
fn devices() -> Vec<u32> {
    let host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let mut all = vec![LOOPBACK_IFINDEX];
    if let Some(h) = host.as_ref() {
        all.extend(h.devices.iter().filter(|&&i| i != LOOPBACK_IFINDEX));
    }
    all
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
    fn sources_are_placed() {
        for a in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(source_of(a.parse().unwrap()), Source::Loopback, "{a}");
        }
        for a in ["192.0.2.1", "2001:db8::1", "::ffff:198.51.100.1"] {
            assert_eq!(source_of(a.parse().unwrap()), Source::Elsewhere, "{a}");
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
        ok[NLMSG_HDRLEN] = libc::AF_INET as u8;
        ok[NLMSG_HDRLEN + 1] = 1; // ESTABLISHED
        ok[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 40]
            .copy_from_slice(&req[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 44]);
        let uid_at = NLMSG_HDRLEN + UID_AT;
        ok[uid_at..uid_at + 4].copy_from_slice(&1000u32.to_ne_bytes());
        ok[uid_at + 4..uid_at + 8].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(found(&ok, &req, 5), Some(Found::Owner(1000)));
        // A socket that never completed its handshake (SYN_SENT) is not
        // the client, whoever made it.
        let mut squat = ok.clone();
        squat[NLMSG_HDRLEN + 1] = 2;
        assert_eq!(found(&squat, &req, 5), Some(Found::Impostor));
        // The same socket named by its IPv6 form (an IPv6 socket that used
        // IPv4-mapped addresses): the same answer.
        let mut v6 = ok.clone();
        v6[NLMSG_HDRLEN] = libc::AF_INET6 as u8;
        let mapped = |ip: [u8; 4]| {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&ip);
            a
        };
        v6[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 24].copy_from_slice(&mapped([127, 0, 0, 9]));
        v6[NLMSG_HDRLEN + 24..NLMSG_HDRLEN + 40].copy_from_slice(&mapped([127, 0, 0, 1]));
        assert_eq!(found(&v6, &req, 5), Some(Found::Owner(1000)));
        v6[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 24].copy_from_slice(&mapped([127, 0, 0, 8]));
        assert_eq!(found(&v6, &req, 5), None, "another address");
        assert_eq!(found(&ok, &req, 6), None, "another request's answer");
        assert_eq!(found(&ok[..40], &req, 5), None, "short");
        // "No such socket" is an answer; any other error is not.
        let mut err = vec![0u8; NLMSG_HDRLEN + 4 + 16];
        let n = err.len() as u32;
        err[0..4].copy_from_slice(&n.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&5u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(found(&err, &req, 5), Some(Found::Absent));
        err[16..20].copy_from_slice(&(-libc::EINVAL).to_ne_bytes());
        assert_eq!(found(&err, &req, 5), None);
        let mut long = ok.clone();
        long[0..4].copy_from_slice(&(len + 1).to_ne_bytes());
        assert_eq!(found(&long, &req, 5), None, "claims more than it has");
        assert_eq!(found(&[], &req, 5), None);
        // Another socket's answer.
        let other = request("127.0.0.9:40001".parse().unwrap(), server, 5).unwrap();
        assert_eq!(found(&ok, &other, 5), None);
        // A closed socket's remains: no inode, uid 0.
        let mut gone = ok.clone();
        gone[uid_at..uid_at + 8].fill(0);
        assert_eq!(found(&gone, &req, 5), Some(Found::Left));
    }

    #[test]
    fn who_the_client_is() {
        use Client::*;
        use Source::*;
        for source in [Loopback, OwnAddress] {
            assert_eq!(decide(source, Some(Found::Owner(7))), Local(7));
            for gone in [
                Some(Found::Left),
                Some(Found::Impostor),
                // Reset before the lookup (fifth review's retry), or the
                // lookup failed: never counted by the address.
                Some(Found::Absent),
                None,
            ] {
                assert!(matches!(decide(source, gone), Refused(_)), "{gone:?}");
            }
        }
        // From an address that is not the host's, a socket found is an
        // impostor (IP_FREEBIND; fifth review's retry): remote, always.
        for answer in [
            Some(Found::Owner(7)),
            Some(Found::Impostor),
            Some(Found::Absent),
            None,
        ] {
            assert_eq!(decide(Elsewhere, answer), Remote, "{answer:?}");
        }
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_loopback_client() {
        use Client::*;
        let me_uid = || rustix::process::geteuid().as_raw();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, from) = l.accept().unwrap();
        let me = s.local_addr().unwrap();
        assert_eq!(client(from, me), Local(me_uid()));
        // No such connection: nobody.
        let other = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
        assert!(matches!(client(other, me), Refused(_)));
        drop(c);
        // Not one of this host's addresses: remote, not asked.
        assert_eq!(client("192.0.2.1:1".parse().unwrap(), me), Remote);
        // A client bound to the loopback device is found too.
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.bind_device(Some(b"lo")).unwrap();
        c.connect(&l.local_addr().unwrap().into()).unwrap();
        let (s, from) = l.accept().unwrap();
        let me = s.local_addr().unwrap();
        assert_eq!(client(from, me), Local(me_uid()));
        // Once the client has closed, its socket's remains (orphaned: no
        // inode from the moment of close) name nobody.
        drop(c);
        assert!(
            matches!(client(from, me), Refused(_)),
            "a closed client is nobody"
        );
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
        assert_eq!(client(from, me), Local(me_uid()), "{from} {me}");
        drop(c6);
        // The fifth review: an IPv6 socket that uses IPv4-mapped addresses
        // towards an IPv4 listener (the kernel files it under IPv4 and
        // names it by its IPv6 form).
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        c6.set_only_v6(false).unwrap();
        let to = format!("[::ffff:127.0.0.1]:{}", l4.local_addr().unwrap().port());
        c6.connect(&to.parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let (s, from) = l4.accept().unwrap();
        assert_eq!(client(from, s.local_addr().unwrap()), Local(me_uid()));
        drop(c6);
        // IPv6 loopback, where the host has it.
        if let Ok(l) = std::net::TcpListener::bind("[::1]:0") {
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, from) = l.accept().unwrap();
            let me = s.local_addr().unwrap();
            assert_eq!(client(from, me), Local(me_uid()));
        }
    }
}
