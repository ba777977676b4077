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
//! * every loopback address (`127.0.0.0/8`, `::1`, `::ffff:127.x.y.z`) is
//!   one client, `127.0.0.0/8`: the whole /8 is this machine, and any local
//!   user may bind any address in it, so counting /24s there would give one
//!   local user 65,536 shares.
//!
//! Above the client, [`PeerKey::aggregate`] groups TCP clients into the
//! network they come from (`/16` for IPv4, `/48` for IPv6: a routed range, a
//! cloud tenant's block), for the caps that many /24s or /64s of one owner
//! must share (`limits.max-connections-per-aggregate`).
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Identity, ListenerKind};

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
    /// A local user: a Unix-socket client's uid, or the owner of a
    /// loopback TCP client's socket (`supervisor::local_peer`).
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

/// Leading bits of an IPv4 address that make one aggregate (see
/// [`PeerKey::aggregate`]).
pub const AGGREGATE_V4: u8 = 16;
/// Leading bits of an IPv6 address that make one aggregate.
pub const AGGREGATE_V6: u8 = 48;

/// `a` with all but its leading `len` bits cleared (`len` at most 32).
fn net4(a: Ipv4Addr, len: u8) -> PeerKey {
    let len = len.min(32);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    PeerKey::V4(Ipv4Addr::from(u32::from(a) & mask), len)
}

/// `a` with all but its leading `len` bits cleared (`len` at most 128).
fn net6(a: Ipv6Addr, len: u8) -> PeerKey {
    let len = len.min(128);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    PeerKey::V6(Ipv6Addr::from(u128::from(a) & mask), len)
}

impl PeerKey {
    /// The key of a TCP client at `ip`. Every loopback address is one
    /// client: `127.0.0.0/8` (or the configured IPv4 prefix, if shorter).
    pub fn of_ip(ip: IpAddr, prefixes: Prefixes) -> PeerKey {
        match canonical(ip) {
            IpAddr::V4(a) if a.is_loopback() => net4(a, prefixes.v4.min(8)),
            IpAddr::V6(a) if a.is_loopback() => net4(Ipv4Addr::LOCALHOST, prefixes.v4.min(8)),
            IpAddr::V4(a) => net4(a, prefixes.v4),
            IpAddr::V6(a) => net6(a, prefixes.v6),
        }
    }

    /// The network a TCP client belongs to for the caps above the client
    /// (`/16` for IPv4, `/48` for IPv6, or the client itself when its own
    /// prefix is shorter); `None` for a Unix-socket client, which is
    /// never grouped with others.
    pub fn aggregate(&self) -> Option<PeerKey> {
        match *self {
            PeerKey::Uid(_) => None,
            PeerKey::V4(a, len) => Some(net4(a, len.min(AGGREGATE_V4))),
            PeerKey::V6(a, len) => Some(net6(a, len.min(AGGREGATE_V6))),
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
            // A loopback client is the local user that owns its socket:
            // one client with its Unix-socket connections.
            Identity::Tcp {
                local_uid: Some(uid),
                ..
            } => PeerKey::Uid(*uid),
            Identity::Tcp { addr, .. } => PeerKey::of_ip(addr.ip(), prefixes),
        }
    }

    /// A local user (whether it came over the Unix socket or loopback
    /// TCP), not a network client.
    pub fn is_unix(&self) -> bool {
        matches!(self, PeerKey::Uid(_))
    }

    /// Which side's shares the client uses: a local user's are the Unix
    /// socket's (also for its loopback TCP connections: it is a local
    /// user, not a network client), a network client's are TCP's.
    pub fn kind(&self) -> ListenerKind {
        if self.is_unix() {
            ListenerKind::Unix
        } else {
            ListenerKind::Tcp
        }
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

    /// Attack: a local user binds 127.0.0.2, 127.0.1.1, 127.1.0.1, … (the
    /// whole /8 is local) to get a fresh budget for each /24.
    #[test]
    fn every_loopback_address_is_one_client() {
        let one = key("127.0.0.1");
        for a in [
            "127.0.0.2",
            "127.0.1.1",
            "127.1.0.1",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.9.8.7",
        ] {
            assert_eq!(key(a), one, "{a}");
        }
        assert_eq!(one.to_string(), "127.0.0.0/8");
        assert_ne!(key("128.0.0.1"), one);
        assert_ne!(key("126.255.255.255"), one);
        assert_ne!(key("::2"), one);
        // Also with exact addresses configured.
        let exact = Prefixes { v4: 32, v6: 128 };
        assert_eq!(
            PeerKey::of_ip("127.0.0.2".parse().unwrap(), exact),
            PeerKey::of_ip("::1".parse().unwrap(), exact)
        );
        assert_eq!(one.aggregate(), Some(one));
    }

    #[test]
    fn clients_group_into_slash_16_and_slash_48_aggregates() {
        let agg = |s: &str| key(s).aggregate().unwrap();
        assert_eq!(agg("192.0.2.7"), agg("192.0.200.1"));
        assert_ne!(agg("192.0.2.7"), agg("192.1.2.7"));
        assert_eq!(agg("192.0.2.7").to_string(), "192.0.0.0/16");
        assert_eq!(agg("2001:db8:1:2::1"), agg("2001:db8:1:ffff::1"));
        assert_ne!(agg("2001:db8:1:2::1"), agg("2001:db8:2:2::1"));
        assert_eq!(agg("2001:db8:1:2::1").to_string(), "2001:db8:1::/48");
        assert_eq!(PeerKey::unix(0).aggregate(), None);
        // A client prefix shorter than the aggregate's is its own aggregate.
        let wide = PeerKey::of_ip("10.1.2.3".parse().unwrap(), Prefixes { v4: 8, v6: 32 });
        assert_eq!(wide.aggregate(), Some(wide));
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
