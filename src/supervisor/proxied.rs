//! PROXY protocol v2 on the listeners that expect it (`listen.tcp-proxy`,
//! or a systemd socket named `tcp-proxy`): who the client behind a load
//! balancer is.
//!
//! Rules, each a pure function below:
//!
//! * a connection whose peer is not in `listen.proxy-from` is closed unread
//!   ([`arrival`]): only a trusted balancer may say who the client is, and a
//!   port that expects PROXY headers serves nobody else (direct clients use
//!   a plain `listen.tcp` port);
//! * at most `listen.proxy-pending` headers are read at once per balancer
//!   address; its further connections are closed until one is done;
//! * the header must arrive whole within `listen.proxy-timeout` and decode
//!   ([`crate::proto::proxy`]); otherwise the connection is closed;
//! * a PROXY header names the client ([`identify`]): its address is the
//!   connection's identity for `listen.tcp-allow` (checked here, as for a
//!   direct connection), the per-client caps and shares, log budgets and
//!   VirusEvent. A LOCAL header is the balancer speaking for itself (its
//!   health check): the identity is the balancer's address. A PROXY header
//!   without a TCP client (UDP, UNIX, UNSPEC) is refused: there would be no
//!   client to apply the policy to.
//!
//! Every refusal is logged with its reason, within the per-identity budget
//! every refusal shares (`log.peer-lines-per-minute`, `log::limiter::
//! PeerBudgets`), charged to the balancer or, for a client outside
//! `tcp-allow`, to that client.
//!
//! **Why the root supervisor reads these bytes**, when it otherwise never
//! reads a byte a client sends: the identity that every share and policy
//! decision rests on must come from the process that makes those decisions,
//! not from a worker a hostile file may have taken over (a worker could
//! then claim any address). What root reads is bounded: at most
//! [`crate::proto::proxy::MAX_HEADER`] (1,040) bytes, only from addresses in
//! `proxy-from` (connections from anywhere else are closed before a byte is
//! read), within `proxy-timeout`, at most `proxy-pending` at once per
//! balancer, each in a task of its own so the event loop never waits; and it
//! is decoded by a pure function with no allocation, no `unsafe`, fuzzed
//! with a round trip against its encoder. Reads ask for no more than the
//! header still needs, so the client's own bytes stay in the socket for the
//! worker.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::log::limiter::{cost, Class, PeerBudgets};
use crate::policy::network::AllowList;
use crate::policy::peer::canonical;
use crate::policy::{PeerKey, Prefixes};
use crate::proto::proxy::{self, Command, Decoded, Header, Invalid, MAX_HEADER};

/// What a PROXY listener is configured with.
pub struct Settings {
    /// `listen.proxy-from`.
    pub from: AllowList,
    /// `listen.tcp-allow`, for the clients behind the balancers.
    pub allow: AllowList,
    /// `listen.proxy-timeout`.
    pub timeout: Duration,
    /// `listen.proxy-pending`.
    pub pending: u32,
    pub prefixes: Prefixes,
    budgets: Arc<PeerBudgets>,
    reading: Mutex<HashMap<IpAddr, u32>>,
}

impl Settings {
    /// `budgets`: the daemon's per-identity log budgets.
    pub fn from_config(config: &crate::config::Config, budgets: Arc<PeerBudgets>) -> Settings {
        Settings::new(
            AllowList::new(config.proxy_from().to_vec()),
            AllowList::new(config.tcp_allow().to_vec()),
            Duration::from_secs(config.listen.proxy_timeout),
            config.listen.proxy_pending,
            config.limits.prefixes(),
            budgets,
        )
    }

    pub fn new(
        from: AllowList,
        allow: AllowList,
        timeout: Duration,
        pending: u32,
        prefixes: Prefixes,
        budgets: Arc<PeerBudgets>,
    ) -> Settings {
        Settings {
            from,
            allow,
            timeout,
            pending,
            prefixes,
            budgets,
            reading: Mutex::default(),
        }
    }

    /// Starts reading a header from `balancer` if it has fewer than
    /// `proxy-pending` being read; the slot is freed when the returned
    /// guard drops.
    fn start_reading(self: &Arc<Self>, balancer: IpAddr) -> Option<Reading> {
        let mut reading = lock(&self.reading);
        let n = reading.entry(balancer).or_insert(0);
        if *n >= self.pending {
            return None;
        }
        *n += 1;
        Some(Reading {
            settings: Arc::clone(self),
            balancer,
        })
    }

    /// Logs a refused connection within the budget of `key`.
    fn refused(&self, listener: &str, peer: SocketAddr, key: PeerKey, why: &Refusal) {
        if let Some(suppressed) = self.budgets.allow(Class::Lines, key, cost(&[])) {
            tracing::warn!(
                listener,
                peer = %peer,
                client = %key,
                reason = %why,
                suppressed,
                "connection refused"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A header being read; counts against its balancer's `proxy-pending`.
struct Reading {
    settings: Arc<Settings>,
    balancer: IpAddr,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut reading = lock(&self.settings.reading);
        if let Some(n) = reading.get_mut(&self.balancer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                reading.remove(&self.balancer);
            }
        }
    }
}

/// Why a connection to a PROXY listener was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is not a trusted balancer.
    NotABalancer,
    /// The balancer has `proxy-pending` headers being read already.
    TooManyPending,
    /// No whole header within `proxy-timeout`.
    Timeout,
    /// The balancer closed (or reset) the connection before the header
    /// was complete.
    Closed,
    Invalid(Invalid),
    /// A PROXY header without a TCP client.
    NoTcpClient,
    /// The client behind the balancer is outside `listen.tcp-allow`.
    ClientNotAllowed(SocketAddr),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotABalancer => f.write_str(
                "address not in listen.proxy-from (this port expects PROXY headers from a load balancer)",
            ),
            Refusal::TooManyPending => {
                f.write_str("the balancer has listen.proxy-pending headers being read already")
            }
            Refusal::Timeout => f.write_str("no whole PROXY header within listen.proxy-timeout"),
            Refusal::Closed => f.write_str("closed before its PROXY header was complete"),
            Refusal::Invalid(why) => write!(f, "{why}"),
            Refusal::NoTcpClient => {
                f.write_str("the PROXY header names no TCP client (UDP, UNIX or UNSPEC addresses)")
            }
            Refusal::ClientNotAllowed(client) => write!(
                f,
                "the client behind the balancer, {client}, is not in listen.tcp-allow"
            ),
        }
    }
}

/// What happens to a connection accepted on a PROXY listener before any
/// byte is read: refused unless its peer is a balancer.
pub fn arrival(from: &AllowList, peer: IpAddr) -> Result<(), Refusal> {
    if from.admits(peer) {
        Ok(())
    } else {
        Err(Refusal::NotABalancer)
    }
}

/// The client a decoded header names, as the connection's identity:
/// a PROXY header's TCP source (in `tcp-allow`), or for LOCAL the balancer
/// itself.
pub fn identify(
    header: &Header,
    balancer: SocketAddr,
    allow: &AllowList,
) -> Result<SocketAddr, Refusal> {
    if header.command == Command::Local {
        return Ok(balancer);
    }
    let client = header.tcp_source().ok_or(Refusal::NoTcpClient)?;
    let client = SocketAddr::new(canonical(client.ip()), client.port());
    if allow.admits(client.ip()) {
        Ok(client)
    } else {
        Err(Refusal::ClientNotAllowed(client))
    }
}

/// Reads one header from `stream`: never more bytes than it needs, so what
/// the client sent after it stays unread. Returns it and its length.
pub async fn read_header(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<(Header, u64), Refusal> {
    let mut buf = [0u8; MAX_HEADER];
    let mut have = 0usize;
    let read = async {
        loop {
            let want = match proxy::decode(&buf[..have]) {
                Decoded::Done { header, consumed } => {
                    debug_assert_eq!(consumed, have);
                    return Ok((header, have as u64));
                }
                Decoded::Invalid(why) => return Err(Refusal::Invalid(why)),
                Decoded::NeedMore(want) => want,
            };
            match stream.read(&mut buf[have..want]).await {
                Ok(0) | Err(_) => return Err(Refusal::Closed),
                Ok(n) => have += n,
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(Refusal::Timeout))
}

/// The whole path of a connection on a PROXY listener, from accept to the
/// client's address and the header's length (`Some`) or a logged refusal
/// (`None`, the connection closed). Runs in a task of its own.
pub async fn admit(
    settings: Arc<Settings>,
    listener: &str,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, SocketAddr, u64)> {
    let by_peer = PeerKey::of_ip(peer.ip(), settings.prefixes);
    let refuse = |key: PeerKey, why: Refusal| {
        settings.refused(listener, peer, key, &why);
        None
    };
    if let Err(why) = arrival(&settings.from, peer.ip()) {
        return refuse(by_peer, why);
    }
    let Some(slot) = settings.start_reading(canonical(peer.ip())) else {
        return refuse(by_peer, Refusal::TooManyPending);
    };
    let header = read_header(&mut stream, settings.timeout).await;
    drop(slot);
    let (header, length) = match header {
        Ok(h) => h,
        Err(why) => return refuse(by_peer, why),
    };
    match identify(&header, peer, &settings.allow) {
        Ok(client) => {
            tracing::debug!(listener, balancer = %peer, client = %client, "PROXY header read");
            Some((stream, client, length))
        }
        Err(why) => {
            let key = match &why {
                Refusal::ClientNotAllowed(c) => PeerKey::of_ip(c.ip(), settings.prefixes),
                _ => by_peer,
            };
            refuse(key, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::proxy::{encode, Addresses, Transport};

    fn nets(list: &[&str]) -> AllowList {
        AllowList::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn header(command: Command, addresses: Addresses) -> Header {
        let bytes = encode(command, &addresses, &[]).unwrap();
        match proxy::decode(&bytes) {
            Decoded::Done { header, .. } => header,
            other => panic!("{other:?}"),
        }
    }

    fn tcp(src: &str) -> Addresses {
        Addresses::Inet {
            transport: Transport::Stream,
            source: src.parse().unwrap(),
            destination: "192.0.2.1:3310".parse().unwrap(),
        }
    }

    const BALANCER: &str = "192.0.2.10:50000";

    #[test]
    fn only_balancers_may_connect() {
        let from = nets(&["192.0.2.10/32", "2001:db8::10/128"]);
        assert_eq!(arrival(&from, "192.0.2.10".parse().unwrap()), Ok(()));
        assert_eq!(arrival(&from, "::ffff:192.0.2.10".parse().unwrap()), Ok(()));
        assert_eq!(
            arrival(&from, "192.0.2.11".parse().unwrap()),
            Err(Refusal::NotABalancer)
        );
        assert_eq!(
            arrival(&nets(&[]), "192.0.2.10".parse().unwrap()),
            Err(Refusal::NotABalancer)
        );
    }

    #[test]
    fn the_client_is_who_the_header_names_within_tcp_allow() {
        let allow = nets(&["198.51.100.0/24"]);
        let balancer: SocketAddr = BALANCER.parse().unwrap();
        let h = header(Command::Proxy, tcp("198.51.100.7:40000"));
        assert_eq!(
            identify(&h, balancer, &allow),
            Ok("198.51.100.7:40000".parse().unwrap())
        );
        let h = header(Command::Proxy, tcp("203.0.113.5:40000"));
        assert_eq!(
            identify(&h, balancer, &allow),
            Err(Refusal::ClientNotAllowed(
                "203.0.113.5:40000".parse().unwrap()
            ))
        );
        // An IPv4-mapped client is its IPv4 address.
        let mapped = Addresses::Inet {
            transport: Transport::Stream,
            source: "[::ffff:198.51.100.9]:1".parse().unwrap(),
            destination: "[::1]:3310".parse().unwrap(),
        };
        let h = header(Command::Proxy, mapped);
        assert_eq!(
            identify(&h, balancer, &allow),
            Ok("198.51.100.9:1".parse().unwrap())
        );
    }

    #[test]
    fn local_is_the_balancer_and_other_families_are_refused() {
        let allow = nets(&["198.51.100.0/24"]);
        let balancer: SocketAddr = BALANCER.parse().unwrap();
        let h = header(Command::Local, Addresses::Unspec);
        assert_eq!(identify(&h, balancer, &allow), Ok(balancer));
        for a in [
            Addresses::Unspec,
            Addresses::Unix {
                transport: Transport::Stream,
            },
            Addresses::Inet {
                transport: Transport::Dgram,
                source: "198.51.100.7:53".parse().unwrap(),
                destination: "192.0.2.1:53".parse().unwrap(),
            },
        ] {
            let h = header(Command::Proxy, a);
            assert_eq!(identify(&h, balancer, &allow), Err(Refusal::NoTcpClient));
        }
    }

    #[test]
    fn headers_being_read_are_bounded_per_balancer() {
        let s = Arc::new(Settings::new(
            nets(&["192.0.2.0/24"]),
            nets(&["0.0.0.0/0"]),
            Duration::from_secs(5),
            2,
            Prefixes::default(),
            Arc::new(PeerBudgets::new(
                crate::log::limiter::PeerSizes::from_config(&Default::default()),
            )),
        ));
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.11".parse().unwrap();
        let one = s.start_reading(a).unwrap();
        let two = s.start_reading(a).unwrap();
        assert!(
            s.start_reading(a).is_none(),
            "a third from the same balancer"
        );
        let other = s.start_reading(b).unwrap();
        drop(one);
        let three = s.start_reading(a).unwrap();
        drop((two, three, other));
        assert!(lock(&s.reading).is_empty(), "every slot given back");
    }

    #[test]
    fn refusals_say_what_to_do() {
        for (why, words) in [
            (Refusal::NotABalancer, "listen.proxy-from"),
            (Refusal::TooManyPending, "listen.proxy-pending"),
            (Refusal::Timeout, "listen.proxy-timeout"),
            (Refusal::Invalid(Invalid::NotProxy), "send-proxy-v2"),
            (
                Refusal::ClientNotAllowed("203.0.113.5:1".parse().unwrap()),
                "203.0.113.5:1, is not in listen.tcp-allow",
            ),
        ] {
            assert!(why.to_string().contains(words), "{why}");
        }
    }

    /// The reader over a real socket: it stops at the header's end (the
    /// client's command stays unread), and refuses a plain client at its
    /// first byte, a stalled balancer at the deadline.
    #[tokio::test]
    async fn the_reader_takes_the_header_and_nothing_more() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut bytes = encode(Command::Proxy, &tcp("198.51.100.7:40000"), &[]).unwrap();
        bytes.extend_from_slice(b"zPING\0");
        let bytes_len = bytes.len();
        let mut client = TcpStream::connect(addr).await.unwrap();
        // In two pieces, the second with the client's command.
        client.write_all(&bytes[..10]).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&bytes[10..]).await.unwrap();
            client
        });
        let (h, length) = read_header(&mut server, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(h.tcp_source(), Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(
            length as usize,
            bytes_len - 6,
            "the header, not the command"
        );
        let _client = sender.await.unwrap();
        let mut rest = [0u8; 6];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"zPING\0");

        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"zPING\0").await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert_eq!(
            read_header(&mut server, Duration::from_secs(30)).await,
            Err(Refusal::Invalid(Invalid::NotProxy))
        );

        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&proxy::SIGNATURE[..5]).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert_eq!(
            read_header(&mut server, Duration::from_millis(50)).await,
            Err(Refusal::Timeout)
        );
        drop(stalled);
        let gone = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        drop(gone);
        assert_eq!(
            read_header(&mut server, Duration::from_secs(30)).await,
            Err(Refusal::Closed)
        );
    }
}
