//! Who a client is for sharing the daemon's resources between clients: a
//! Unix-socket client is its uid; a TCP client is its address prefix (IPv4
//! /24, IPv6 /64; an IPv4-mapped IPv6 address counts as its IPv4 form), so
//! that one host, or one network a client controls, is one peer however
//! many addresses it uses.
//!
//! Minimal version, made for the scan pool's fair queue; the supervisor's
//! admission uses the same key.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 addresses in one /24 are one peer.
pub const V4_PREFIX: u8 = 24;
/// IPv6 addresses in one /64 are one peer.
pub const V6_PREFIX: u8 = 64;

/// A client identity for per-identity shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKey {
    /// A Unix-socket client: its uid.
    Uid(u32),
    /// A TCP client: its network (the address with the host bits cleared)
    /// and the prefix length.
    Net { net: IpAddr, prefix: u8 },
}

impl PeerKey {
    /// The key of a TCP client at `ip`, with the default prefixes.
    pub fn tcp(ip: IpAddr) -> PeerKey {
        PeerKey::tcp_with(ip, V4_PREFIX, V6_PREFIX)
    }

    /// The key of a TCP client at `ip`: IPv4 (and IPv4-mapped IPv6) masked
    /// to `v4` bits, IPv6 to `v6` bits.
    pub fn tcp_with(ip: IpAddr, v4: u8, v6: u8) -> PeerKey {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let prefix = v4.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                PeerKey::Net {
                    net: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    prefix,
                }
            }
            IpAddr::V6(a) => {
                let prefix = v6.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                PeerKey::Net {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    prefix,
                }
            }
        }
    }

    /// The key of a Unix-socket client.
    pub fn unix(uid: u32) -> PeerKey {
        PeerKey::Uid(uid)
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Uid(uid) => write!(f, "uid={uid}"),
            PeerKey::Net { net, prefix } => write!(f, "{net}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> PeerKey {
        PeerKey::tcp(s.parse().unwrap())
    }

    #[test]
    fn prefixes_group_addresses() {
        assert_eq!(key("127.0.0.1"), key("127.0.0.200"));
        assert_ne!(key("127.0.0.1"), key("127.0.1.1"));
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:127.0.0.9"), key("127.0.0.1"));
        assert_eq!(key("10.1.2.3").to_string(), "10.1.2.0/24");
        assert_eq!(key("2001:db8::1").to_string(), "2001:db8::/64");
        assert_eq!(PeerKey::unix(1000).to_string(), "uid=1000");
        assert_ne!(PeerKey::unix(0), key("0.0.0.0"));
    }

    #[test]
    fn odd_prefix_lengths_are_clamped() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            PeerKey::tcp_with(ip, 0, 0).to_string(),
            "0.0.0.0/0",
            "a /0 is every address"
        );
        assert_eq!(PeerKey::tcp_with(ip, 40, 200).to_string(), "10.1.2.3/32");
    }
}
