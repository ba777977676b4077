//! Who gets a connection slot: a pure decision over the connections open
//! now, made by the supervisor before a new connection reaches a worker.
//!
//! Three limits, checked in this order:
//! 1. `limits.max-connections-per-address` — TCP connections from one source
//!    address;
//! 2. the TCP share — TCP connections all together may use at most
//!    `max-connections - unix-reserve`, so a TCP flood can never take the
//!    slots the Unix socket (the MTA, freshclam) needs;
//! 3. `limits.max-connections` — all connections.
//!
//! When a limit is reached, a connection that has not yet sent a complete
//! command (idle; the worker reports the first command) in the same scope is
//! closed first, the oldest first, and the newcomer is admitted; only when no
//! idle connection is left in that scope is the newcomer refused. A TCP
//! newcomer never takes a Unix connection's slot.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Instant;

use super::conns::Conn;
use crate::policy::ListenerKind;

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_connections: usize,
    pub unix_reserve: usize,
    pub per_address: usize,
}

impl Caps {
    pub fn from_config(l: &crate::config::LimitsConfig) -> Caps {
        Caps {
            max_connections: l.max_connections as usize,
            // Capped at half, so that a small max-connections keeps a TCP share.
            unix_reserve: (l.unix_reserve as usize).min(l.max_connections as usize / 2),
            per_address: l.max_connections_per_address as usize,
        }
    }
}

/// What to do with a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admit it, after closing these idle connections.
    Admit { evict: Vec<u64> },
    /// Refuse it: the named limit is reached and no idle connection is left
    /// to close in its scope.
    Refuse(&'static str),
}

/// What admission needs of an open connection.
#[derive(Debug, Clone, Copy)]
pub struct Open {
    pub id: u64,
    pub listener: ListenerKind,
    pub addr: Option<IpAddr>,
    pub active: bool,
    pub accepted: Instant,
}

impl Open {
    pub fn of(id: u64, c: &Conn) -> Open {
        Open {
            id,
            listener: c.listener,
            addr: c.addr(),
            active: c.active,
            accepted: c.accepted,
        }
    }
}

#[derive(Clone, Copy)]
enum Scope {
    Address(IpAddr),
    Tcp,
    All,
}

impl Scope {
    fn contains(self, c: &Open) -> bool {
        match self {
            Scope::Address(ip) => c.addr == Some(ip),
            Scope::Tcp => c.listener == ListenerKind::Tcp,
            Scope::All => true,
        }
    }
}

/// Decides for a newcomer on `listener` from `addr` (TCP), given the open
/// connections.
pub fn decide(caps: Caps, open: &[Open], listener: ListenerKind, addr: Option<IpAddr>) -> Verdict {
    let mut evict: Vec<u64> = Vec::new();
    let tcp_share = caps.max_connections.saturating_sub(caps.unix_reserve);
    let mut checks: Vec<(Scope, usize, &'static str)> = Vec::new();
    if listener == ListenerKind::Tcp {
        if let Some(ip) = addr {
            checks.push((
                Scope::Address(ip),
                caps.per_address,
                "limits.max-connections-per-address",
            ));
        }
        checks.push((
            Scope::Tcp,
            tcp_share,
            "limits.max-connections minus limits.unix-reserve (the TCP share)",
        ));
    }
    checks.push((Scope::All, caps.max_connections, "limits.max-connections"));
    for (scope, limit, key) in checks {
        loop {
            let live = || open.iter().filter(|c| !evict.contains(&c.id));
            let n = live().filter(|c| scope.contains(c)).count();
            if n < limit {
                break;
            }
            // A TCP newcomer may only displace TCP connections.
            let candidate = live()
                .filter(|c| scope.contains(c) && !c.active)
                .filter(|c| listener == ListenerKind::Unix || c.listener == ListenerKind::Tcp)
                .min_by_key(|c| (c.accepted, c.id));
            match candidate {
                Some(c) => evict.push(c.id),
                None => return Verdict::Refuse(key),
            }
        }
    }
    Verdict::Admit { evict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caps() -> Caps {
        Caps {
            max_connections: 10,
            unix_reserve: 3,
            per_address: 4,
        }
    }

    fn conn(id: u64, listener: ListenerKind, ip: Option<&str>, active: bool, t0: Instant) -> Open {
        Open {
            id,
            listener,
            addr: ip.map(|s| s.parse().unwrap()),
            active,
            accepted: t0 + Duration::from_secs(id),
        }
    }

    const A: &str = "127.0.0.1";
    const B: &str = "127.0.0.2";

    #[test]
    fn under_the_limits_everyone_is_admitted() {
        let t0 = Instant::now();
        let open = vec![conn(1, ListenerKind::Tcp, Some(A), false, t0)];
        assert_eq!(
            decide(caps(), &open, ListenerKind::Tcp, Some(A.parse().unwrap())),
            Verdict::Admit { evict: vec![] }
        );
    }

    #[test]
    fn a_full_address_loses_its_oldest_idle_connection() {
        let t0 = Instant::now();
        let open: Vec<Open> = (1..=4)
            .map(|i| conn(i, ListenerKind::Tcp, Some(A), i == 1, t0))
            .collect();
        // #1 is active (sent a command): #2 is the oldest idle one.
        assert_eq!(
            decide(caps(), &open, ListenerKind::Tcp, Some(A.parse().unwrap())),
            Verdict::Admit { evict: vec![2] }
        );
        // Another address is not affected by A's count.
        assert_eq!(
            decide(caps(), &open, ListenerKind::Tcp, Some(B.parse().unwrap())),
            Verdict::Admit { evict: vec![] }
        );
        // All active: refused.
        let busy: Vec<Open> = (1..=4)
            .map(|i| conn(i, ListenerKind::Tcp, Some(A), true, t0))
            .collect();
        assert_eq!(
            decide(caps(), &busy, ListenerKind::Tcp, Some(A.parse().unwrap())),
            Verdict::Refuse("limits.max-connections-per-address")
        );
    }

    #[test]
    fn tcp_never_takes_the_unix_reserve() {
        let t0 = Instant::now();
        // 7 active TCP connections from many addresses fill the TCP share.
        let mut open: Vec<Open> = (1..=7)
            .map(|i| {
                let ip = format!("127.0.1.{i}");
                Open {
                    addr: Some(ip.parse().unwrap()),
                    ..conn(i, ListenerKind::Tcp, None, true, t0)
                }
            })
            .collect();
        assert!(matches!(
            decide(caps(), &open, ListenerKind::Tcp, Some(B.parse().unwrap())),
            Verdict::Refuse(_)
        ));
        // The Unix socket still gets in, up to the total.
        assert_eq!(
            decide(caps(), &open, ListenerKind::Unix, None),
            Verdict::Admit { evict: vec![] }
        );
        // With the total full of active connections, Unix is refused too,
        // but an idle TCP connection would have been displaced first.
        open.push(conn(8, ListenerKind::Unix, None, true, t0));
        open.push(conn(9, ListenerKind::Unix, None, true, t0));
        open.push(conn(10, ListenerKind::Unix, None, true, t0));
        assert_eq!(
            decide(caps(), &open, ListenerKind::Unix, None),
            Verdict::Refuse("limits.max-connections")
        );
        open[0].active = false;
        assert_eq!(
            decide(caps(), &open, ListenerKind::Unix, None),
            Verdict::Admit { evict: vec![1] }
        );
    }

    #[test]
    fn a_tcp_newcomer_never_displaces_a_unix_connection() {
        let t0 = Instant::now();
        let caps = Caps {
            max_connections: 3,
            unix_reserve: 0,
            per_address: 10,
        };
        let open = vec![
            conn(1, ListenerKind::Unix, None, false, t0),
            conn(2, ListenerKind::Unix, None, false, t0),
            conn(3, ListenerKind::Unix, None, false, t0),
        ];
        assert_eq!(
            decide(caps, &open, ListenerKind::Tcp, Some(A.parse().unwrap())),
            Verdict::Refuse("limits.max-connections")
        );
    }
}
