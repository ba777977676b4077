//! Who a client is, for per-identity limits: a Unix uid, or a TCP
//! address prefix.
//!
//! A local user can open as many connections as it likes but has one uid;
//! a TCP client can use many addresses, but rarely more than one /24 (IPv4)
//! or /64 (IPv6, what one host or one customer line gets). An IPv4-mapped
//! IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports for an
//! IPv4 client) is the IPv4 address it maps, so one host does not count
//! twice.
//!
//! Used for the log budgets (`log.peer-lines-per-minute`): the
//! supervisor's broker refusals, evictions and admission refusals, and its
//! workers' lines for that client, all share one budget per key.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Identity;

/// A client identity for per-identity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// A Unix-socket client: its uid.
    Uid(u32),
    /// A TCP client from IPv4: the first three bytes of its address (/24).
    V4([u8; 3]),
    /// A TCP client from IPv6: the first eight bytes of its address (/64).
    V6([u8; 8]),
}

impl PeerKey {
    /// The key of a Unix-socket client.
    pub fn unix(uid: u32) -> PeerKey {
        PeerKey::Uid(uid)
    }

    /// The key of a TCP client: its /24 or /64; IPv4-mapped IPv6 as IPv4.
    pub fn tcp(ip: IpAddr) -> PeerKey {
        let v4 = |a: Ipv4Addr| {
            let [a, b, c, _] = a.octets();
            PeerKey::V4([a, b, c])
        };
        match ip {
            IpAddr::V4(a) => v4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => v4(m),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&a.octets()[..8]);
                    PeerKey::V6(prefix)
                }
            },
        }
    }

    /// The key of an identity the supervisor recorded at accept.
    pub fn of(who: &Identity) -> PeerKey {
        match who {
            Identity::Unix { uid, .. } => PeerKey::unix(*uid),
            Identity::Tcp(addr) => PeerKey::tcp(addr.ip()),
        }
    }
}

/// `uid:1000`, `10.1.2.0/24`, `2001:db8:1:2::/64`: one token (no space, no
/// `=`), so a log line shows it unquoted.
impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Uid(uid) => write!(f, "uid:{uid}"),
            PeerKey::V4([a, b, c]) => write!(f, "{}/24", Ipv4Addr::new(*a, *b, *c, 0)),
            PeerKey::V6(p) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(p);
                write!(f, "{}/64", Ipv6Addr::from(full))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> PeerKey {
        PeerKey::tcp(s.parse().unwrap())
    }

    #[test]
    fn ipv4_clients_share_their_slash_24() {
        assert_eq!(tcp("10.1.2.3"), tcp("10.1.2.254"));
        assert_ne!(tcp("10.1.2.3"), tcp("10.1.3.3"));
        assert_eq!(tcp("10.1.2.3").to_string(), "10.1.2.0/24");
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        assert_eq!(tcp("2001:db8:1:2::1"), tcp("2001:db8:1:2:ffff::9"));
        assert_ne!(tcp("2001:db8:1:2::1"), tcp("2001:db8:1:3::1"));
        assert_eq!(tcp("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(tcp("::ffff:127.0.0.1"), tcp("127.0.0.1"));
        assert_eq!(tcp("::ffff:127.0.0.1").to_string(), "127.0.0.0/24");
        // Not mapped: ::1 is IPv6 loopback, its own /64.
        assert_ne!(tcp("::1"), tcp("127.0.0.1"));
    }

    #[test]
    fn unix_clients_are_their_uid() {
        assert_eq!(PeerKey::unix(1000).to_string(), "uid:1000");
        let who = Identity::Unix {
            uid: 1000,
            gid: 1000,
            groups: vec![],
            pid: Some(5),
        };
        assert_eq!(PeerKey::of(&who), PeerKey::Uid(1000));
        assert_ne!(PeerKey::unix(0), PeerKey::unix(1000));
    }
}
