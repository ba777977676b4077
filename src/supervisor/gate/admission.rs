//! Who gets a connection slot: a pure decision over the connections open
//! now, made before a new connection reaches a worker.
//!
//! Every client has a share, counted per [`PeerKey`] (a Unix uid, or a TCP
//! address prefix). Five limits, checked in this order, each with its own
//! scope:
//!
//! 1. `limits.max-connections-per-client`: connections of one client over
//!    one kind of listener (a local user's Unix-socket connections, and its
//!    loopback TCP ones, each have this share);
//! 2. `limits.max-connections-per-aggregate`: connections of the TCP
//!    clients of one /16 (IPv4) or /48 (IPv6) together
//!    ([`PeerKey::aggregate`]), so that an owner of many /24s or /64s (a
//!    routed range, a cloud tenant) does not get a client's share for each;
//! 3. the TCP share: TCP connections together may use at most
//!    `max-connections - unix-reserve`, so a TCP flood can never take the
//!    slots local clients (the MTA, freshclam) need;
//! 4. the administrators' reserve: clients that are not administrators
//!    (root, `policy.unix.admin-users`/`admin-groups`) may use at most
//!    `max-connections - admin-reserve`, so root's own clamdscan and
//!    freshclam's RELOAD always find a slot;
//! 5. `limits.max-connections`: all connections.
//!
//! When a scope is full, room is made by closing one connection in it:
//!
//! * first a connection that has not sent a command yet (idle), of the
//!   client holding the most connections in the scope (the oldest first);
//! * else a connection of the client holding the most, if that client holds
//!   at least two more than the newcomer's client would after admission:
//!   a client with many sessions loses one to a client with few, but two
//!   clients with about as many never take turns closing each other's;
//! * only in its own scope: a TCP newcomer never closes a Unix connection,
//!   and a client that is not an administrator never closes an
//!   administrator's connection.
//!
//! At the per-client limit only the client's own idle connections can make
//! room; a client whose connections are all busy is refused.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Instant;

use crate::policy::{ListenerKind, PeerKey};

use super::ConnId;

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_connections: usize,
    pub unix_reserve: usize,
    pub admin_reserve: usize,
    pub per_client: usize,
    pub per_aggregate: usize,
}

impl Caps {
    pub fn from_config(l: &crate::config::LimitsConfig) -> Caps {
        let max = l.max_connections as usize;
        Caps {
            max_connections: max,
            // Each reserve is capped at half, so that a small
            // max-connections leaves room for everyone.
            unix_reserve: (l.unix_reserve as usize).min(max / 2),
            admin_reserve: (l.admin_reserve as usize).min(max / 2),
            per_client: (l.max_connections_per_client as usize).max(1),
            per_aggregate: (l.max_connections_per_aggregate as usize).max(1),
        }
    }
}

/// What to do with a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admit it, after closing these connections.
    Admit { evict: Vec<ConnId> },
    /// Refuse it: this limit (its configuration key) is reached and nothing
    /// in its scope may be closed for it.
    Refuse(&'static str),
}

/// What admission needs of an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub id: ConnId,
    pub key: PeerKey,
    pub listener: ListenerKind,
    pub admin: bool,
    /// It sent a complete command.
    pub active: bool,
    pub accepted: Instant,
}

/// The newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newcomer {
    pub key: PeerKey,
    pub listener: ListenerKind,
    pub admin: bool,
}

#[derive(Clone, Copy)]
enum Scope {
    /// A client's connections over one kind of listener (a local user has
    /// a share over the Unix socket and one over loopback TCP).
    Client(PeerKey, ListenerKind),
    Aggregate(PeerKey),
    Tcp,
    NotAdmin,
    All,
}

impl Scope {
    fn contains(self, c: &Open) -> bool {
        match self {
            Scope::Client(k, kind) => c.key == k && c.listener == kind,
            Scope::Aggregate(a) => c.key.aggregate() == Some(a),
            Scope::Tcp => c.listener == ListenerKind::Tcp,
            Scope::NotAdmin => !c.admin,
            Scope::All => true,
        }
    }
}

pub const PER_CLIENT_KEY: &str = "limits.max-connections-per-client";
pub const AGGREGATE_KEY: &str = "limits.max-connections-per-aggregate";
pub const TCP_SHARE_KEY: &str = "limits.max-connections minus limits.unix-reserve (the TCP share)";
pub const ADMIN_RESERVE_KEY: &str =
    "limits.max-connections minus limits.admin-reserve (the administrators' reserve)";
pub const TOTAL_KEY: &str = "limits.max-connections";

/// Decides for `newcomer`, given the open connections.
pub fn decide(caps: Caps, open: &[Open], newcomer: Newcomer) -> Verdict {
    let mut evict: Vec<ConnId> = Vec::new();
    let mut checks: Vec<(Scope, usize, &'static str)> = vec![(
        Scope::Client(newcomer.key, newcomer.listener),
        caps.per_client,
        PER_CLIENT_KEY,
    )];
    if let Some(aggregate) = newcomer.key.aggregate() {
        checks.push((
            Scope::Aggregate(aggregate),
            caps.per_aggregate,
            AGGREGATE_KEY,
        ));
    }
    if newcomer.listener == ListenerKind::Tcp {
        checks.push((
            Scope::Tcp,
            caps.max_connections.saturating_sub(caps.unix_reserve),
            TCP_SHARE_KEY,
        ));
    }
    if !newcomer.admin && caps.admin_reserve > 0 {
        checks.push((
            Scope::NotAdmin,
            caps.max_connections.saturating_sub(caps.admin_reserve),
            ADMIN_RESERVE_KEY,
        ));
    }
    checks.push((Scope::All, caps.max_connections, TOTAL_KEY));
    // Usually no scope is full: one pass of counting, no lists, says so.
    let mut counts = [0usize; 5];
    for c in open {
        for (n, (scope, _, _)) in counts.iter_mut().zip(&checks) {
            *n += usize::from(scope.contains(c));
        }
    }
    if counts
        .iter()
        .zip(&checks)
        .all(|(n, (_, limit, _))| n < limit)
    {
        return Verdict::Admit { evict };
    }
    for (scope, limit, key) in checks {
        loop {
            let live: Vec<&Open> = open.iter().filter(|c| !evict.contains(&c.id)).collect();
            let in_scope: Vec<&Open> = live.iter().copied().filter(|c| scope.contains(c)).collect();
            if in_scope.len() < limit {
                break;
            }
            let own = live.iter().filter(|c| c.key == newcomer.key).count();
            match victim(&in_scope, newcomer, own, matches!(scope, Scope::Client(..))) {
                Some(id) => evict.push(id),
                None => return Verdict::Refuse(key),
            }
        }
    }
    Verdict::Admit { evict }
}

/// The connection to close in a full scope, if any may be closed.
/// `own`: connections the newcomer's client holds now.
fn victim(in_scope: &[&Open], newcomer: Newcomer, own: usize, own_scope: bool) -> Option<ConnId> {
    let closable: Vec<&Open> = in_scope
        .iter()
        .copied()
        .filter(|c| newcomer.listener == ListenerKind::Unix || c.listener == ListenerKind::Tcp)
        .filter(|c| newcomer.admin || !c.admin)
        .collect();
    let mut held: HashMap<PeerKey, usize> = HashMap::new();
    for c in in_scope {
        *held.entry(c.key).or_default() += 1;
    }
    // Idle connections first: of the client holding the most, the oldest.
    let idle = closable
        .iter()
        .filter(|c| !c.active)
        .max_by_key(|c| (held[&c.key], std::cmp::Reverse((c.accepted, c.id))));
    if let Some(c) = idle {
        return Some(c.id);
    }
    if own_scope {
        return None;
    }
    // Then a busy one, only from a client holding clearly more.
    closable
        .iter()
        .filter(|c| held[&c.key] >= own + 1 + 2)
        .max_by_key(|c| (held[&c.key], std::cmp::Reverse((c.accepted, c.id))))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caps() -> Caps {
        Caps {
            max_connections: 10,
            unix_reserve: 3,
            admin_reserve: 2,
            per_client: 4,
            per_aggregate: 6,
        }
    }

    fn ip(s: &str) -> PeerKey {
        PeerKey::of_ip(s.parse().unwrap(), crate::policy::Prefixes::default())
    }

    struct T {
        t0: Instant,
        open: Vec<Open>,
    }

    impl T {
        fn new() -> T {
            T {
                t0: Instant::now(),
                open: Vec::new(),
            }
        }
        fn add(
            &mut self,
            key: PeerKey,
            listener: ListenerKind,
            admin: bool,
            active: bool,
        ) -> ConnId {
            let id = self.open.len() as ConnId + 1;
            self.open.push(Open {
                id,
                key,
                listener,
                admin,
                active,
                accepted: self.t0 + Duration::from_secs(id),
            });
            id
        }
        fn tcp(&mut self, a: &str, active: bool) -> ConnId {
            self.add(ip(a), ListenerKind::Tcp, false, active)
        }
        fn uid(&mut self, uid: u32, active: bool) -> ConnId {
            self.add(PeerKey::Uid(uid), ListenerKind::Unix, uid == 0, active)
        }
        fn decide(&self, key: PeerKey, listener: ListenerKind, admin: bool) -> Verdict {
            decide(
                caps(),
                &self.open,
                Newcomer {
                    key,
                    listener,
                    admin,
                },
            )
        }
        fn tcp_newcomer(&self, a: &str) -> Verdict {
            self.decide(ip(a), ListenerKind::Tcp, false)
        }
        fn uid_newcomer(&self, uid: u32) -> Verdict {
            self.decide(PeerKey::Uid(uid), ListenerKind::Unix, uid == 0)
        }
    }

    fn admit(evict: &[ConnId]) -> Verdict {
        Verdict::Admit {
            evict: evict.to_vec(),
        }
    }

    #[test]
    fn under_the_limits_everyone_is_admitted() {
        let mut t = T::new();
        t.tcp("127.0.0.1", false);
        assert_eq!(t.tcp_newcomer("127.0.0.1"), admit(&[]));
        assert_eq!(t.uid_newcomer(1000), admit(&[]));
    }

    #[test]
    fn a_full_client_closes_its_own_oldest_idle_connection_or_is_refused() {
        let mut t = T::new();
        t.tcp("127.0.0.1", true);
        for _ in 0..3 {
            t.tcp("127.0.0.9", false);
        }
        // Loopback is one client: 127.0.0.1 and .9 are the same. #1 is busy.
        assert_eq!(t.tcp_newcomer("127.0.0.200"), admit(&[2]));
        // Another client is not affected.
        assert_eq!(t.tcp_newcomer("192.0.2.1"), admit(&[]));
        for c in &mut t.open {
            c.active = true;
        }
        assert_eq!(t.tcp_newcomer("127.0.0.1"), Verdict::Refuse(PER_CLIENT_KEY));
    }

    #[test]
    fn one_local_user_cannot_hold_the_table() {
        // Attack: one uid holds as many sessions as it may, all busy.
        let mut t = T::new();
        for _ in 0..4 {
            t.uid(1000, true);
        }
        assert_eq!(t.uid_newcomer(1000), Verdict::Refuse(PER_CLIENT_KEY));
        // Another user and root still get in.
        assert_eq!(t.uid_newcomer(1001), admit(&[]));
        assert_eq!(t.uid_newcomer(0), admit(&[]));
    }

    #[test]
    fn ipv4_mapped_and_plain_ipv4_are_one_client() {
        let mut t = T::new();
        for _ in 0..4 {
            t.tcp("::ffff:127.0.0.1", true);
        }
        assert_eq!(t.tcp_newcomer("127.0.0.1"), Verdict::Refuse(PER_CLIENT_KEY));
    }

    /// Attack: one owner of a /16 connects from many /24s, each within
    /// its own client share, to hold the whole TCP share.
    #[test]
    fn many_slash_24s_of_one_slash_16_share_one_aggregate() {
        let mut t = T::new();
        for i in 1..=6 {
            t.tcp(&format!("10.7.{i}.1"), true);
        }
        // A seventh /24 of 10.7.0.0/16, holding nothing yet: refused, and
        // no one else's connection is closed for it.
        assert_eq!(t.tcp_newcomer("10.7.99.1"), Verdict::Refuse(AGGREGATE_KEY));
        // Another /16 is another aggregate, and the Unix socket is apart.
        assert_eq!(t.tcp_newcomer("10.8.0.1"), admit(&[]));
        assert_eq!(t.uid_newcomer(1000), admit(&[]));
        // Within the aggregate, an idle connection of its biggest holder
        // makes room, as in the TCP share.
        let mut idle = T::new();
        for _ in 0..3 {
            idle.tcp("10.7.1.1", false); // 1..=3
        }
        for i in 2..=4 {
            idle.tcp(&format!("10.7.{i}.1"), true);
        }
        assert_eq!(idle.tcp_newcomer("10.7.99.1"), admit(&[1]));
    }

    /// Attack: a local user binds 127.0.0.2, 127.0.1.1, 127.1.0.1, … to
    /// get a client's share for each /24: all of loopback is one client.
    #[test]
    fn every_loopback_address_counts_as_one_client() {
        let mut t = T::new();
        for a in ["127.0.0.2", "127.0.1.1", "127.1.0.1", "::1"] {
            t.tcp(a, true);
        }
        assert_eq!(t.tcp_newcomer("127.2.0.1"), Verdict::Refuse(PER_CLIENT_KEY));
        assert_eq!(
            t.tcp_newcomer("::ffff:127.0.0.1"),
            Verdict::Refuse(PER_CLIENT_KEY)
        );
    }

    #[test]
    fn tcp_never_takes_the_unix_reserve() {
        let mut t = T::new();
        // 7 busy TCP connections from many networks fill the TCP share (10 - 3).
        for i in 1..=7 {
            t.tcp(&format!("10.0.{i}.1"), true);
        }
        assert_eq!(t.tcp_newcomer("10.9.0.1"), Verdict::Refuse(TCP_SHARE_KEY));
        assert_eq!(t.uid_newcomer(1000), admit(&[]));
    }

    #[test]
    fn a_hog_loses_sessions_to_clients_with_few() {
        // Many networks each holding a few busy sessions fill the TCP share;
        // the biggest holder loses one to a newcomer with none.
        let mut t = T::new();
        for _ in 0..3 {
            t.tcp("10.0.1.1", true); // ids 1..=3
        }
        for i in 2..=5 {
            t.tcp(&format!("10.0.{i}.1"), true); // ids 4..=7, one each
        }
        assert_eq!(t.tcp_newcomer("10.9.0.1"), admit(&[1]));
        // A client holding one is never closed for a client holding none.
        let mut even = T::new();
        for i in 1..=7 {
            even.tcp(&format!("10.0.{i}.1"), true);
        }
        assert_eq!(
            even.tcp_newcomer("10.9.0.1"),
            Verdict::Refuse(TCP_SHARE_KEY)
        );
    }

    #[test]
    fn idle_connections_go_first_and_of_the_biggest_holder() {
        let mut t = T::new();
        t.tcp("10.0.1.1", false); // 1: idle, holder of 1
        for _ in 0..3 {
            t.tcp("10.0.2.1", false); // 2..=4 idle, holder of 3
        }
        for i in 3..=5 {
            t.tcp(&format!("10.0.{i}.1"), true);
        }
        assert_eq!(t.tcp_newcomer("10.9.0.1"), admit(&[2]));
    }

    #[test]
    fn the_administrators_reserve_holds() {
        let mut t = T::new();
        // 8 busy non-admin connections (10 - 2 reserved), from 8 users.
        for uid in 1000..1008 {
            t.uid(uid, true);
        }
        assert_eq!(t.uid_newcomer(2000), Verdict::Refuse(ADMIN_RESERVE_KEY));
        assert_eq!(t.uid_newcomer(0), admit(&[]));
        // Root's connections, even idle ones, are never closed for a
        // client that is not an administrator.
        let mut r = T::new();
        for _ in 0..4 {
            r.uid(0, false);
        }
        for uid in 1000..1006 {
            r.uid(uid, true);
        }
        assert_eq!(r.uid_newcomer(2000), Verdict::Refuse(TOTAL_KEY));
    }

    #[test]
    fn a_tcp_newcomer_never_closes_a_unix_connection() {
        let caps = Caps {
            max_connections: 3,
            unix_reserve: 0,
            admin_reserve: 0,
            per_client: 10,
            per_aggregate: 10,
        };
        let t0 = Instant::now();
        let open: Vec<Open> = (1..=3)
            .map(|id| Open {
                id,
                key: PeerKey::Uid(1000),
                listener: ListenerKind::Unix,
                admin: false,
                active: false,
                accepted: t0,
            })
            .collect();
        let n = Newcomer {
            key: ip("127.0.0.1"),
            listener: ListenerKind::Tcp,
            admin: false,
        };
        assert_eq!(decide(caps, &open, n), Verdict::Refuse(TOTAL_KEY));
        let unix = Newcomer {
            key: PeerKey::Uid(1001),
            listener: ListenerKind::Unix,
            admin: false,
        };
        assert_eq!(decide(caps, &open, unix), admit(&[1]));
    }
}
