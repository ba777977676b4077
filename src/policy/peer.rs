//! Who a client is for shares and budgets: its [`PeerKey`].
//!
//! Every limit that is "per client" — connection slots, scan threads, log
//! lines, VirusEvent commands — counts per key, not per connection:
//!
//! * a Unix-socket client is its uid (the kernel's word, SO_PEERCRED): one
//!   local user is one client however many processes it runs;
//! * a TCP client is its address prefix: `/24` for IPv4 and `/64` for IPv6
//!   by default (`limits.ipv4-prefix`, `limits.ipv6-prefix`). One host, or
//!   one customer's subnet, is one client: a /64 is what a single IPv6 host
//!   is routinely given, so counting single addresses would give it
//!   2^64 shares. An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a
//!   dual-stack socket reports for an IPv4 peer) is the IPv4 address it
//!   maps, so one host cannot count twice.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Identity;

/// How many leading bits of a TCP client's address make one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    pub v4: u8,
    pub v6: u8,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes { v4: 24, v6: 64 }
    }
}

/// One client, for everything counted per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// A Unix-socket client: its uid.
    Uid(u32),
    /// A TCP client's IPv4 network (address with the host bits cleared).
    V4(Ipv4Addr, u8),
    /// A TCP client's IPv6 network.
    V6(Ipv6Addr, u8),
}

/// The address as the client would name it: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl PeerKey {
    /// The key of a TCP client at `ip`.
    pub fn of_ip(ip: IpAddr, prefixes: Prefixes) -> PeerKey {
        match canonical(ip) {
            IpAddr::V4(a) => {
                let len = prefixes.v4.min(32);
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                PeerKey::V4(Ipv4Addr::from(u32::from(a) & mask), len)
            }
            IpAddr::V6(a) => {
                let len = prefixes.v6.min(128);
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                PeerKey::V6(Ipv6Addr::from(u128::from(a) & mask), len)
            }
        }
    }

    /// The key of a Unix-socket client.
    pub fn unix(uid: u32) -> PeerKey {
        PeerKey::Uid(uid)
    }

    /// The key of a TCP client with the default prefixes (/24, /64).
    pub fn tcp(ip: IpAddr) -> PeerKey {
        PeerKey::of_ip(ip, Prefixes::default())
    }

    /// The key of a recorded identity.
    pub fn of(identity: &Identity, prefixes: Prefixes) -> PeerKey {
        match identity {
            Identity::Unix { uid, .. } => PeerKey::Uid(*uid),
            Identity::Tcp(addr) => PeerKey::of_ip(addr.ip(), prefixes),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, PeerKey::Uid(_))
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Uid(uid) => write!(f, "uid={uid}"),
            PeerKey::V4(net, len) => write!(f, "{net}/{len}"),
            PeerKey::V6(net, len) => write!(f, "{net}/{len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> PeerKey {
        PeerKey::of_ip(s.parse().unwrap(), Prefixes::default())
    }

    #[test]
    fn one_host_or_subnet_is_one_client() {
        assert_eq!(key("192.0.2.7"), key("192.0.2.200"));
        assert_ne!(key("192.0.2.7"), key("192.0.3.7"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.0/24");
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
    }

    #[test]
    fn prefixes_are_configurable_and_clamped() {
        let exact = Prefixes { v4: 32, v6: 128 };
        let a = PeerKey::of_ip("192.0.2.7".parse().unwrap(), exact);
        let b = PeerKey::of_ip("192.0.2.8".parse().unwrap(), exact);
        assert_ne!(a, b);
        let all = Prefixes { v4: 0, v6: 0 };
        assert_eq!(
            PeerKey::of_ip("192.0.2.7".parse().unwrap(), all),
            PeerKey::of_ip("10.1.2.3".parse().unwrap(), all)
        );
        let wide = Prefixes { v4: 99, v6: 200 };
        assert_eq!(
            PeerKey::of_ip("192.0.2.7".parse().unwrap(), wide).to_string(),
            "192.0.2.7/32"
        );
    }
}
