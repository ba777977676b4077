//! Which detection may run a VirusEvent command: a pure machine, decided
//! in the supervisor *before* an event goes to the launcher, because the
//! budget is about what clients can make the daemon do. Time is passed in.
//!
//! Every detection is charged to the client whose scan found it, its
//! [`PeerKey`] (a Unix uid, or a TCP address prefix). The rules (running
//! at once checked first, so that a detection refused as busy does not use
//! up a minute's start; in each column the client's bound, then everyone's,
//! then the listener kind's):
//!
//! | bound | running at once | started per minute |
//! |---|---|---|
//! | one client | half of `max-concurrent`, rounded up, while another client runs one; `max-concurrent` − 1 while none does | `max-per-minute-per-peer` (default: a quarter of `max-per-minute`, rounded up) |
//! | the TCP clients of one /16 or /48 ([`PeerKey::aggregate`]) | the kind's bound minus one, at least a client's bound beside others | the kind's bound minus `max-per-minute-per-peer`, at least `max-per-minute-per-peer` |
//! | all clients of one listener kind, when the daemon listens on both Unix and TCP | `max-concurrent` minus a quarter of it (rounded down, at least 1 when `max-concurrent` ≥ 2) | `max-per-minute` minus a quarter of it (the same rounding) |
//! | everyone | `max-concurrent` | `max-per-minute` |
//!
//! So with the defaults (4 and 60): one client runs at most 3 commands at
//! once alone and starts a command only while it runs fewer than 2 when
//! another client runs one, and starts 15 a minute; the clients of one /16
//! or /48 2 and 30 (so a routed range's owner, with many /24s or /64s,
//! leaves other networks a client's full share); TCP clients together 3
//! and 45, and so do Unix clients; 4 and 60 in all. A client can never
//! use another client's share: one slot always stays free for a second
//! client, which also finds starts left in the minute (with
//! `max-concurrent` ≥ 2), and no number of TCP clients can stop a local
//! user's command, nor the reverse. Nothing is queued (commands cannot be
//! stopped to make room): a detection beyond a bound runs no command
//! (counted and logged).
//!
//! The minute is a fixed window that starts with the first start after the
//! previous one ended. A slot is held from the decision until the
//! launcher's outcome, or until [`Budget::overdue`] says the outcome is late
//! (the timeout plus [`OUTCOME_GRACE`]: the launcher is then broken and is
//! restarted, which ends every slot, [`Budget::finish_all`]).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::VirusEventConfig;
use crate::policy::{ListenerKind, PeerKey};

/// The length of the rate window.
pub const MINUTE: Duration = Duration::from_secs(60);
/// How long after the timeout an outcome may still come.
pub const OUTCOME_GRACE: Duration = Duration::from_secs(10);

/// The bounds, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent: u32,
    pub max_per_minute: u32,
    pub per_peer_per_minute: u32,
    /// The daemon listens on both kinds: each keeps a reserve.
    pub both_kinds: bool,
    /// How long a slot may be held without an outcome.
    pub slot_deadline: Duration,
}

impl Limits {
    pub fn from_config(c: &VirusEventConfig, both_kinds: bool) -> Limits {
        Limits {
            max_concurrent: c.max_concurrent,
            max_per_minute: c.max_per_minute,
            per_peer_per_minute: c.per_peer_per_minute(),
            both_kinds,
            slot_deadline: Duration::from_secs(c.timeout) + OUTCOME_GRACE,
        }
    }

    /// Commands one client may run at once: half of `max_concurrent`
    /// (rounded up) while `others` (other clients run commands), else all
    /// but one, so that a slot always stays free for another client.
    pub fn peer_concurrent(&self, others: bool) -> u32 {
        let half = self.max_concurrent.div_ceil(2).max(1);
        if others {
            half
        } else {
            (self.max_concurrent - 1).max(half)
        }
    }

    /// Commands the TCP clients of one aggregate may run at once: one
    /// less than their kind, so another network always finds a slot.
    pub fn aggregate_concurrent(&self) -> u32 {
        self.kind_concurrent()
            .saturating_sub(1)
            .max(self.peer_concurrent(true))
    }

    /// Commands the TCP clients of one aggregate may start per minute: a
    /// client's share less than their kind.
    pub fn aggregate_per_minute(&self) -> u32 {
        self.kind_per_minute()
            .saturating_sub(self.per_peer_per_minute)
            .max(self.per_peer_per_minute)
    }

    /// Commands the clients of one listener kind may run at once.
    pub fn kind_concurrent(&self) -> u32 {
        self.max_concurrent - self.reserve(self.max_concurrent)
    }

    /// Commands the clients of one listener kind may start per minute.
    pub fn kind_per_minute(&self) -> u32 {
        self.max_per_minute - self.reserve(self.max_per_minute)
    }

    /// What one kind leaves to the other out of `total`.
    fn reserve(&self, total: u32) -> u32 {
        if self.both_kinds && total >= 2 {
            (total / 4).max(1)
        } else {
            0
        }
    }
}

/// Why a detection runs no command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client runs its share of `max-concurrent`.
    PeerBusy,
    /// The clients of its /16 or /48 run their share.
    AggregateBusy,
    /// The clients of its listener kind run their share.
    KindBusy,
    /// `max-concurrent` commands run.
    Busy,
    /// This client started `max-per-minute-per-peer` this minute.
    PeerRate,
    /// The clients of its /16 or /48 started their share this minute.
    AggregateRate,
    /// The clients of its kind started their share of `max-per-minute`.
    KindRate,
    /// `max-per-minute` started this minute.
    Rate,
}

impl Refusal {
    /// For the log: what was reached, by the configuration key.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PeerBusy => {
                "this client runs its share of virus-event.max-concurrent (all but one alone, half beside others)"
            }
            Refusal::AggregateBusy => {
                "the clients of this /16 or /48 run their share of virus-event.max-concurrent"
            }
            Refusal::AggregateRate => {
                "the clients of this /16 or /48 started their share of virus-event.max-per-minute this minute"
            }
            Refusal::KindBusy => {
                "the clients of this listener kind run their share of virus-event.max-concurrent"
            }
            Refusal::Busy => "virus-event.max-concurrent commands are running",
            Refusal::PeerRate => {
                "this client started virus-event.max-per-minute-per-peer commands this minute"
            }
            Refusal::KindRate => {
                "the clients of this listener kind started their share of virus-event.max-per-minute this minute"
            }
            Refusal::Rate => "virus-event.max-per-minute commands started this minute",
        }
    }
}

/// Counts per client, per listener kind and in all.
#[derive(Debug, Default)]
struct Counts {
    peers: HashMap<PeerKey, u32>,
    /// By [`PeerKey::aggregate`] (TCP clients only).
    aggregates: HashMap<PeerKey, u32>,
    unix: u32,
    tcp: u32,
    total: u32,
}

impl Counts {
    fn peer(&self, p: &PeerKey) -> u32 {
        self.peers.get(p).copied().unwrap_or(0)
    }

    fn aggregate(&self, p: &PeerKey) -> u32 {
        p.aggregate()
            .and_then(|a| self.aggregates.get(&a).copied())
            .unwrap_or(0)
    }

    fn kind(&self, k: ListenerKind) -> u32 {
        match k {
            ListenerKind::Unix => self.unix,
            ListenerKind::Tcp => self.tcp,
        }
    }

    fn add(&mut self, p: PeerKey) {
        *self.peers.entry(p).or_insert(0) += 1;
        if let Some(a) = p.aggregate() {
            *self.aggregates.entry(a).or_insert(0) += 1;
        }
        match p.kind() {
            ListenerKind::Unix => self.unix += 1,
            ListenerKind::Tcp => self.tcp += 1,
        }
        self.total += 1;
    }

    fn remove(&mut self, p: &PeerKey) {
        if let Some(n) = self.peers.get_mut(p) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(p);
            }
        }
        if let Some(a) = p.aggregate() {
            if let Some(n) = self.aggregates.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    self.aggregates.remove(&a);
                }
            }
        }
        match p.kind() {
            ListenerKind::Unix => self.unix = self.unix.saturating_sub(1),
            ListenerKind::Tcp => self.tcp = self.tcp.saturating_sub(1),
        }
        self.total = self.total.saturating_sub(1);
    }
}

#[derive(Debug)]
struct Slot {
    peer: PeerKey,
    deadline: Instant,
}

/// The VirusEvent budget.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    /// Start of the current minute; `None` before the first start.
    window: Option<Instant>,
    started: Counts,
    running: Counts,
    slots: HashMap<u64, Slot>,
    next_id: u64,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            window: None,
            started: Counts::default(),
            running: Counts::default(),
            slots: HashMap::new(),
            next_id: 0,
        }
    }

    /// May a detection charged to `peer` run the command at `now`? If so,
    /// its slot is taken and the event id returned.
    pub fn decide(&mut self, peer: PeerKey, now: Instant) -> Result<u64, Refusal> {
        let l = &self.limits;
        let kind = peer.kind();
        let mine = self.running.peer(&peer);
        if mine >= l.peer_concurrent(self.running.total > mine) {
            return Err(Refusal::PeerBusy);
        }
        if peer.aggregate().is_some() && self.running.aggregate(&peer) >= l.aggregate_concurrent() {
            return Err(Refusal::AggregateBusy);
        }
        if self.running.total >= l.max_concurrent {
            return Err(Refusal::Busy);
        }
        if self.running.kind(kind) >= l.kind_concurrent() {
            return Err(Refusal::KindBusy);
        }
        if self
            .window
            .map_or(true, |w| now.saturating_duration_since(w) >= MINUTE)
        {
            self.window = Some(now);
            self.started = Counts::default();
        }
        if self.started.peer(&peer) >= l.per_peer_per_minute {
            return Err(Refusal::PeerRate);
        }
        if peer.aggregate().is_some() && self.started.aggregate(&peer) >= l.aggregate_per_minute() {
            return Err(Refusal::AggregateRate);
        }
        if self.started.total >= l.max_per_minute {
            return Err(Refusal::Rate);
        }
        if self.started.kind(kind) >= l.kind_per_minute() {
            return Err(Refusal::KindRate);
        }
        self.started.add(peer);
        self.running.add(peer);
        self.next_id += 1;
        let id = self.next_id;
        self.slots.insert(
            id,
            Slot {
                peer,
                deadline: now + l.slot_deadline,
            },
        );
        Ok(id)
    }

    /// The command of event `id` ended: its slot is free. `None` when no
    /// such event is running (an outcome nobody asked for).
    pub fn finish(&mut self, id: u64) -> Option<PeerKey> {
        let slot = self.slots.remove(&id)?;
        self.running.remove(&slot.peer);
        Some(slot.peer)
    }

    /// Frees every slot (the launcher is gone); returns how many there were.
    pub fn finish_all(&mut self) -> usize {
        let n = self.slots.len();
        self.slots.clear();
        self.running = Counts::default();
        n
    }

    /// An event whose outcome is overdue at `now`, if any.
    pub fn overdue(&self, now: Instant) -> Option<u64> {
        self.slots
            .iter()
            .find(|(_, s)| now >= s.deadline)
            .map(|(id, _)| *id)
    }

    /// Commands running (slots held).
    pub fn running(&self) -> usize {
        self.slots.len()
    }

    /// The peer an event in flight was charged to.
    pub fn peer_of(&self, id: u64) -> Option<PeerKey> {
        self.slots.get(&id).map(|s| s.peer)
    }
}

/// How long to wait before starting the launcher again after its
/// `failures`-th exit in a row (1 s, doubling, at most 60 s).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs((1u64 << exp).min(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(c: u32, m: u32, p: u32, both: bool) -> Limits {
        Limits {
            max_concurrent: c,
            max_per_minute: m,
            per_peer_per_minute: p,
            both_kinds: both,
            slot_deadline: Duration::from_secs(40),
        }
    }

    fn tcp(ip: &str) -> PeerKey {
        PeerKey::tcp(ip.parse().unwrap())
    }

    fn defaults(both: bool) -> Limits {
        let c = VirusEventConfig::default();
        Limits::from_config(&c, both)
    }

    #[test]
    fn defaults_give_each_client_a_share() {
        let l = defaults(true);
        assert_eq!(
            (l.max_concurrent, l.max_per_minute, l.per_peer_per_minute),
            (4, 60, 15)
        );
        assert_eq!((l.peer_concurrent(true), l.peer_concurrent(false)), (2, 3));
        assert_eq!(l.kind_concurrent(), 3);
        assert_eq!(l.kind_per_minute(), 45);
        assert_eq!(
            (l.aggregate_concurrent(), l.aggregate_per_minute()),
            (2, 30)
        );
        assert_eq!(l.slot_deadline, Duration::from_secs(40));
        // With one listener kind there is nobody to keep a reserve for.
        let l = defaults(false);
        assert_eq!((l.kind_concurrent(), l.kind_per_minute()), (4, 60));
        // A single slot cannot be shared; the reserve never empties a kind.
        let l = limits(1, 1, 1, true);
        assert_eq!(
            (
                l.peer_concurrent(false),
                l.kind_concurrent(),
                l.kind_per_minute()
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn one_client_cannot_use_another_clients_share_at_once() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(4, 60, 15, false));
        let a = PeerKey::unix(1000);
        // Alone: all slots but one.
        let first = b.decide(a, t0).unwrap();
        assert!(b.decide(a, t0).is_ok());
        assert!(b.decide(a, t0).is_ok());
        assert_eq!(b.decide(a, t0), Err(Refusal::PeerBusy));
        // The last slot is another client's; then everyone is busy.
        let other = PeerKey::unix(1001);
        let id = b.decide(other, t0).unwrap();
        assert_eq!(b.decide(PeerKey::unix(1002), t0), Err(Refusal::Busy));
        // Beside another client, a client starts only below half.
        b.finish(first);
        assert_eq!(b.decide(a, t0), Err(Refusal::PeerBusy));
        assert!(b.decide(other, t0).is_ok());
        assert_eq!(b.finish(id), Some(other));
        assert_eq!(b.finish(id), None, "an outcome counts once");
        assert!(b.decide(PeerKey::unix(1002), t0).is_ok());
        assert_eq!(b.running(), 4);
    }

    #[test]
    fn one_client_cannot_use_another_clients_share_of_the_minute() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(4, 60, 15, false));
        let flood = tcp("127.0.0.1");
        let mut started = 0;
        for i in 0..70 {
            // Each command ends before the next detection.
            match b.decide(tcp(&format!("127.0.0.{}", 1 + i % 200)), t0) {
                Ok(id) => {
                    assert_eq!(b.finish(id), Some(flood));
                    started += 1;
                }
                Err(r) => assert_eq!(r, Refusal::PeerRate),
            }
        }
        assert_eq!(started, 15, "a /24 is one client");
        // A local user's detection still runs, and so does another network's.
        assert!(b.decide(PeerKey::unix(1000), t0).is_ok());
        assert!(b.decide(tcp("10.0.1.1"), t0).is_ok());
        // A minute later the flood has its share again.
        assert!(b.decide(flood, t0 + MINUTE).is_ok());
    }

    #[test]
    fn many_tcp_clients_leave_the_unix_reserve() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(4, 60, 15, true));
        // 16 /24s of 16 /16s, each within its own share: together they
        // stop at 45.
        let mut started = 0;
        for net in 0..16 {
            for _ in 0..15 {
                if let Ok(id) = b.decide(tcp(&format!("10.{net}.0.1")), t0) {
                    b.finish(id);
                    started += 1;
                }
            }
        }
        assert_eq!(started, 45);
        assert_eq!(b.decide(tcp("10.99.0.1"), t0), Err(Refusal::KindRate));
        for _ in 0..15 {
            let id = b.decide(PeerKey::unix(0), t0).unwrap();
            b.finish(id);
        }
        assert_eq!(b.decide(PeerKey::unix(0), t0), Err(Refusal::PeerRate));
        assert_eq!(b.decide(PeerKey::unix(1), t0), Err(Refusal::Rate));
        // At once: TCP clients hold at most 3 of 4, a Unix user gets the 4th.
        let mut b = Budget::new(limits(4, 60, 15, true));
        assert!(b.decide(tcp("10.0.1.1"), t0).is_ok());
        assert!(b.decide(tcp("10.0.1.1"), t0).is_ok());
        assert!(b.decide(tcp("10.1.2.1"), t0).is_ok());
        assert_eq!(b.decide(tcp("10.2.3.1"), t0), Err(Refusal::KindBusy));
        assert!(b.decide(PeerKey::unix(1000), t0).is_ok());
        assert_eq!(b.decide(PeerKey::unix(1001), t0), Err(Refusal::Busy));
    }

    /// Attack (third outside review): the owner of a /48 used three of
    /// its /64s, each with a client's share, to start the whole TCP share
    /// of the minute; another network's detection then ran nothing.
    #[test]
    fn the_networks_of_one_routed_range_share_one_budget() {
        let t0 = Instant::now();
        let mut b = Budget::new(defaults(true));
        let mut started = 0;
        for net in 0..8 {
            for _ in 0..15 {
                let key = tcp(&format!("2001:db8:1:{net}::1"));
                match b.decide(key, t0) {
                    Ok(id) => {
                        b.finish(id);
                        started += 1;
                    }
                    Err(r) => assert!(
                        matches!(r, Refusal::AggregateRate | Refusal::PeerRate),
                        "{r:?}"
                    ),
                }
            }
        }
        assert_eq!(started, 30, "the /48's share of the minute");
        // Another network's client has its full share left.
        for _ in 0..15 {
            let id = b.decide(tcp("2001:db8:2::1"), t0).unwrap();
            b.finish(id);
        }
        // At once: two commands for the /48, the third TCP slot is another
        // network's.
        let mut b = Budget::new(defaults(true));
        assert!(b.decide(tcp("192.0.2.1"), t0).is_ok());
        assert!(b.decide(tcp("192.0.3.1"), t0).is_ok());
        assert_eq!(b.decide(tcp("192.0.4.1"), t0), Err(Refusal::AggregateBusy));
        assert!(b.decide(tcp("198.51.100.1"), t0).is_ok());
        // Local users (over Unix or loopback TCP) have no aggregate.
        let mut b = Budget::new(defaults(false));
        assert!(b.decide(PeerKey::unix(1000), t0).is_ok());
        assert!(b.decide(PeerKey::unix(1000), t0).is_ok());
        assert!(b.decide(PeerKey::unix(1000), t0).is_ok());
    }

    #[test]
    fn busy_refusals_do_not_use_up_the_minute() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(2, 3, 3, false));
        let a = PeerKey::unix(5);
        let first = b.decide(a, t0).unwrap();
        for _ in 0..10 {
            assert_eq!(b.decide(a, t0), Err(Refusal::PeerBusy));
        }
        b.finish(first);
        let second = b.decide(a, t0).unwrap();
        b.finish(second);
        let third = b.decide(a, t0).unwrap();
        b.finish(third);
        assert_eq!(b.decide(a, t0), Err(Refusal::PeerRate));
    }

    #[test]
    fn late_outcomes_are_noticed_and_a_dead_launcher_frees_every_slot() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(4, 60, 15, false));
        let id = b.decide(PeerKey::unix(1), t0).unwrap();
        b.decide(PeerKey::unix(2), t0 + Duration::from_secs(5))
            .unwrap();
        assert_eq!(b.overdue(t0 + Duration::from_secs(39)), None);
        assert_eq!(b.overdue(t0 + Duration::from_secs(40)), Some(id));
        assert_eq!(b.peer_of(id), Some(PeerKey::unix(1)));
        assert_eq!(b.finish_all(), 2);
        assert_eq!(b.running(), 0);
        assert!(b.decide(PeerKey::unix(1), t0).is_ok());
        assert!(b.decide(PeerKey::unix(1), t0).is_ok());
    }

    #[test]
    fn restarts_back_off() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0).as_secs(), 1);
    }
}
