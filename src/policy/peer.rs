//! Who a client is, for budgets that must be shared fairly between clients:
//! a [`PeerKey`] names one *client* as far as the daemon can tell clients
//! apart.
//!
//! * On the Unix socket: the peer's uid (SO_PEERCRED). Every process of one
//!   user is one client.
//! * Over TCP: the source address's network prefix, `/24` for IPv4 and
//!   `/64` for IPv6 by default ([`Prefixes`]). One host rarely has a single
//!   address: a local user can bind any of 127.0.0.0/8, and an IPv6 host is
//!   usually given a whole /64, so counting single addresses would let one
//!   client count as thousands. An IPv4-mapped IPv6 address
//!   (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4
//!   client) is the IPv4 address it maps, so both forms of one host are one
//!   client.
//!
//! Used by the VirusEvent budget (`supervisor::virus_event::budget`); meant
//! for every per-client share (connection admission included), so that all
//! of them agree on who a client is.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Identity, ListenerKind};

/// The prefix lengths that group TCP addresses into one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    v4: u8,
    v6: u8,
}

impl Prefixes {
    /// `/v4` and `/v6`; `None` when longer than the address (32, 128).
    pub fn new(v4: u8, v6: u8) -> Option<Prefixes> {
        (v4 <= 32 && v6 <= 128).then_some(Prefixes { v4, v6 })
    }

    pub fn v4(self) -> u8 {
        self.v4
    }

    pub fn v6(self) -> u8 {
        self.v6
    }
}

impl Default for Prefixes {
    /// `/24` and `/64`.
    fn default() -> Prefixes {
        Prefixes { v4: 24, v6: 64 }
    }
}

/// One client: a Unix uid, or a TCP network (host bits zero, IPv4-mapped
/// addresses as IPv4). Made only by the constructors, which keep it
/// canonical: two keys are equal exactly when they name the same client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(Key);

/// A [`PeerKey`]'s contents, read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerView {
    Uid(u32),
    Net(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Uid(u32),
    Net(IpNet),
}

impl PeerKey {
    /// The client behind a connection's recorded identity.
    pub fn of(identity: &Identity, prefixes: Prefixes) -> PeerKey {
        match identity {
            Identity::Unix { uid, .. } => PeerKey::uid(*uid),
            Identity::Tcp(addr) => PeerKey::tcp(addr.ip(), prefixes),
        }
    }

    /// A Unix-socket client.
    pub fn uid(uid: u32) -> PeerKey {
        PeerKey(Key::Uid(uid))
    }

    /// The TCP client `ip` belongs to.
    pub fn tcp(ip: IpAddr, prefixes: Prefixes) -> PeerKey {
        let net = match canonical_ip(ip) {
            IpAddr::V4(v4) => IpNet::V4(truncated_v4(v4, prefixes.v4)),
            IpAddr::V6(v6) => IpNet::V6(truncated_v6(v6, prefixes.v6)),
        };
        PeerKey(Key::Net(net))
    }

    /// A TCP key from its parts (as decoded from a message): `None` unless
    /// it is canonical (host bits zero, prefix within the address, not an
    /// IPv4-mapped IPv6 network).
    pub fn net(net: IpNet) -> Option<PeerKey> {
        let canonical = match net {
            IpNet::V4(n) => IpNet::V4(truncated_v4(n.addr(), n.prefix_len())),
            IpNet::V6(n) if n.addr().to_ipv4_mapped().is_some() => return None,
            IpNet::V6(n) => IpNet::V6(truncated_v6(n.addr(), n.prefix_len())),
        };
        (canonical == net).then_some(PeerKey(Key::Net(net)))
    }

    /// What the key holds (for encoding it).
    pub fn view(&self) -> PeerView {
        match self.0 {
            Key::Uid(u) => PeerView::Uid(u),
            Key::Net(n) => PeerView::Net(n),
        }
    }

    /// Which listener kind such a client comes through.
    pub fn kind(&self) -> ListenerKind {
        match self.0 {
            Key::Uid(_) => ListenerKind::Unix,
            Key::Net(_) => ListenerKind::Tcp,
        }
    }
}

impl std::fmt::Display for PeerKey {
    /// `uid=1000`, `127.0.0.0/24`, `2001:db8::/64`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Key::Uid(u) => write!(f, "uid={u}"),
            Key::Net(n) => write!(f, "{n}"),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn truncated_v4(ip: Ipv4Addr, len: u8) -> Ipv4Net {
    // `new` fails only for len > 32, which `Prefixes` and `Ipv4Net` exclude.
    Ipv4Net::new(ip, len.min(32))
        .map(|n| n.trunc())
        .unwrap_or_default()
}

fn truncated_v6(ip: Ipv6Addr, len: u8) -> Ipv6Net {
    Ipv6Net::new(ip, len.min(128))
        .map(|n| n.trunc())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: &str) -> PeerKey {
        PeerKey::tcp(ip.parse().unwrap(), Prefixes::default())
    }

    #[test]
    fn addresses_of_one_prefix_are_one_client() {
        assert_eq!(tcp("127.0.0.1"), tcp("127.0.0.200"));
        assert_ne!(tcp("127.0.0.1"), tcp("127.0.1.1"));
        assert_eq!(tcp("2001:db8:0:1::1"), tcp("2001:db8:0:1:ffff::9"));
        assert_ne!(tcp("2001:db8:0:1::1"), tcp("2001:db8:0:2::1"));
        assert_eq!(tcp("127.0.0.9").to_string(), "127.0.0.0/24");
        assert_eq!(tcp("2001:db8:0:1::1").to_string(), "2001:db8:0:1::/64");
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        assert_eq!(tcp("::ffff:192.0.2.7"), tcp("192.0.2.1"));
        assert_eq!(tcp("::ffff:192.0.2.7").kind(), ListenerKind::Tcp);
        assert_eq!(tcp("::ffff:192.0.2.7").to_string(), "192.0.2.0/24");
    }

    #[test]
    fn unix_clients_are_their_uid() {
        let who = Identity::Unix {
            uid: 1000,
            gid: 100,
            groups: vec![100],
            pid: Some(7),
        };
        let key = PeerKey::of(&who, Prefixes::default());
        assert_eq!(key, PeerKey::uid(1000));
        assert_eq!(key.kind(), ListenerKind::Unix);
        assert_eq!(key.to_string(), "uid=1000");
        assert_ne!(key, PeerKey::uid(1001));
    }

    #[test]
    fn prefixes_are_configurable_and_bounded() {
        let p = Prefixes::new(32, 128).unwrap();
        let a = PeerKey::tcp("10.0.0.1".parse().unwrap(), p);
        let b = PeerKey::tcp("10.0.0.2".parse().unwrap(), p);
        assert_ne!(a, b);
        let p = Prefixes::new(16, 48).unwrap();
        assert_eq!(
            PeerKey::tcp("10.1.2.3".parse().unwrap(), p),
            PeerKey::tcp("10.1.200.3".parse().unwrap(), p)
        );
        assert!(Prefixes::new(33, 64).is_none());
        assert!(Prefixes::new(24, 129).is_none());
    }

    #[test]
    fn only_canonical_networks_make_keys() {
        assert_eq!(
            PeerKey::net("127.0.0.0/24".parse().unwrap()),
            Some(tcp("127.0.0.1"))
        );
        assert_eq!(PeerKey::net("127.0.0.1/24".parse().unwrap()), None);
        assert_eq!(PeerKey::net("::ffff:127.0.0.0/120".parse().unwrap()), None);
        assert!(PeerKey::net("2001:db8::/64".parse().unwrap()).is_some());
    }
}
