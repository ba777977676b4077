//! Rate limiting of log lines, per peer and per connection, so that a
//! hostile client cannot flood the log, and so that the log still says how
//! much it did not show.
//!
//! A budget counts lines and bytes ([`Size`]): a line is written when both
//! the minute's lines and its bytes stay within the budget, so a client
//! whose lines carry the longest fields it may send (a 4 KiB path, a long
//! virus name) gets fewer lines, not more bytes. A line costs [`LINE_COST`]
//! bytes plus the escaped length of the text in it that came from outside
//! ([`cost`]), or of all its fields when it is relayed from a child
//! ([`record_cost`]).
//!
//! * [`Budget`]: at most N lines and B bytes per minute for one thing (a
//!   connection); a plain struct, no map.
//! * [`Limiter`]: a [`Budget`] per key (a uid, an address prefix), at most
//!   `capacity` keys;
//! * [`PeerBudgets`]: the supervisor's two limiters per client identity
//!   ([`PeerKey`]), one per [`Class`] of line, and for each class one more
//!   budget that every TCP client's lines are also charged to
//!   (`log.tcp-peer-bytes-per-minute`, `log.tcp-result-bytes-per-minute`):
//!   256 /24s have 256 budgets of their own, but share that one, so the
//!   network as a whole cannot flood the journal. Unix users keep their own.
//!
//! When a line is allowed after some were suppressed, the verdict carries
//! how many were, and the caller logs them once: `suppressed = N`.
//!
//! Windows are fixed: a budget's minute starts with its first line, and
//! after [`WINDOW`] a new minute starts with the next line. The clock is
//! passed in (`now`), so everything here is pure and tested with made-up
//! instants.
//!
//! A flood of distinct keys (addresses of a large network, many uids)
//! cannot grow memory, nor reset budgets: the table never holds more than
//! `capacity` keys, and a key is forgotten only once its minute is over.
//! While every tracked key is inside its minute, new keys share one more
//! budget, the *overflow* budget. So at most `(capacity + 1) × N` lines are
//! logged per minute whatever the clients do. Lines suppressed for a key
//! that is then forgotten are not lost: they are added to the overflow
//! budget's count and reported with its next allowed line.
#![forbid(unsafe_code)]

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::PeerKey;

/// The length of a budget's window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How often a full table is searched for keys whose minute is over (the
/// search costs one pass over the table).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// May this line be logged?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were not logged since the last allowed
    /// one (log that number with it when it is not 0).
    Allow { suppressed: u64 },
    /// Do not log it; it is counted.
    Suppress,
}

/// What a line costs besides the text from outside in it: the time, the
/// level, the message and the fields the daemon chose (a "path refused"
/// line about a Unix client is about 270 bytes with an empty path).
pub const LINE_COST: u64 = 320;

/// The cost of a line written by the daemon whose text from outside (a
/// path, a virus name, a peer's words) is `outside`: [`LINE_COST`] plus
/// the escaped length of each.
pub fn cost(outside: &[&[u8]]) -> u64 {
    outside.iter().fold(LINE_COST, |n, b| {
        n.saturating_add(super::escape::escaped_len(b) as u64)
    })
}

/// The cost of a child's record as the supervisor would write it:
/// [`LINE_COST`] plus its message, target and every field, name and
/// escaped value (the child chose all of them).
pub fn record_cost(rec: &crate::ipc::logrec::LogRecord) -> u64 {
    let fields = rec.fields.iter().fold(0u64, |n, (name, value)| {
        n.saturating_add((name.len() + 2 + super::escape::escaped_len(value)) as u64)
    });
    cost(&[&rec.message, rec.target.as_bytes()]).saturating_add(fields)
}

/// What a budget allows per [`WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub lines: u32,
    /// Bytes, as [`cost`] counts them.
    pub bytes: u64,
}

impl Size {
    /// `lines` a minute, bytes unbounded (a budget whose lines are bounded
    /// again by a [`Size`] with bytes, as a worker's before the
    /// supervisor's).
    pub fn lines(lines: u32) -> Size {
        Size {
            lines,
            bytes: u64::MAX,
        }
    }
}

/// At most `size.lines` lines and `size.bytes` bytes per [`WINDOW`] for one
/// thing. The first line of a window is always written, however long
/// (else a line longer than the budget would never be, nor the count of
/// those suppressed): a window writes at most `max(size.bytes, one
/// line)`.
#[derive(Debug, Clone)]
pub struct Budget {
    size: Size,
    /// Start of the current window; `None` before the first line.
    start: Option<Instant>,
    used: u32,
    used_bytes: u64,
    suppressed: u64,
}

impl Budget {
    /// A budget of `per_minute` lines, bytes unbounded (0 is taken as 1: a
    /// budget that logs nothing could never report what it suppressed).
    pub fn new(per_minute: u32) -> Budget {
        Budget::sized(Size::lines(per_minute))
    }

    /// A budget of `size` (0 lines or bytes are taken as 1).
    pub fn sized(size: Size) -> Budget {
        Budget {
            size: Size {
                lines: size.lines.max(1),
                bytes: size.bytes.max(1),
            },
            start: None,
            used: 0,
            used_bytes: 0,
            suppressed: 0,
        }
    }

    /// Counts one line at `now`, of no bytes (for budgets of lines only).
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.charge(now, 0)
    }

    /// Counts one line of `bytes` at `now`.
    pub fn charge(&mut self, now: Instant, bytes: u64) -> Verdict {
        if self.fits(now, bytes) {
            self.take(now, bytes)
        } else {
            self.refuse();
            Verdict::Suppress
        }
    }

    /// Would a line of `bytes` be written at `now`?
    fn fits(&self, now: Instant, bytes: u64) -> bool {
        if self.window_over(now) || self.used == 0 {
            return true;
        }
        self.used < self.size.lines && self.used_bytes.saturating_add(bytes) <= self.size.bytes
    }

    /// Writes a line that [`Budget::fits`].
    fn take(&mut self, now: Instant, bytes: u64) -> Verdict {
        if self.window_over(now) {
            self.start = Some(now);
            self.used = 0;
            self.used_bytes = 0;
        }
        self.used += 1;
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        let suppressed = std::mem::take(&mut self.suppressed);
        Verdict::Allow { suppressed }
    }

    /// Counts a line not written.
    fn refuse(&mut self) {
        self.suppressed = self.suppressed.saturating_add(1);
    }

    /// Lines suppressed and not yet reported (for a summary when the
    /// connection ends).
    pub fn pending(&self) -> u64 {
        self.suppressed
    }

    /// Takes the count of suppressed lines, to report it elsewhere.
    pub fn take_pending(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// True when no window is running at `now` (none yet, or it is over).
    fn window_over(&self, now: Instant) -> bool {
        self.start
            .map_or(true, |s| now.saturating_duration_since(s) >= WINDOW)
    }
}

/// A [`Budget`] per key, for at most `capacity` keys (see the module
/// documentation for what happens beyond).
#[derive(Debug)]
pub struct Limiter<K> {
    size: Size,
    capacity: usize,
    budgets: HashMap<K, Budget>,
    overflow: Budget,
    /// No sweep of a full table before this instant.
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq> Limiter<K> {
    /// `per_minute` lines per key and minute (bytes unbounded), at most
    /// `capacity` keys tracked (0 is taken as 1).
    pub fn new(per_minute: u32, capacity: usize) -> Limiter<K> {
        Limiter::sized(Size::lines(per_minute), capacity)
    }

    /// A budget of `size` per key, at most `capacity` keys tracked.
    pub fn sized(size: Size, capacity: usize) -> Limiter<K> {
        Limiter {
            size,
            capacity: capacity.max(1),
            budgets: HashMap::new(),
            overflow: Budget::sized(size),
            next_sweep: None,
        }
    }

    /// Counts one line for `key` at `now` (of no bytes).
    pub fn check<Q>(&mut self, key: &Q, now: Instant) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.charge(key, now, 0, None)
    }

    /// Counts one line of `bytes` for `key` at `now`; with `shared`, the
    /// line must fit that budget too, and is charged to both.
    pub fn charge<Q>(
        &mut self,
        key: &Q,
        now: Instant,
        bytes: u64,
        shared: Option<&mut Budget>,
    ) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.budgets.contains_key(key) && self.make_room(now) {
            self.budgets
                .insert(key.to_owned(), Budget::sized(self.size));
        }
        let own = match self.budgets.get_mut(key) {
            Some(b) => b,
            None => &mut self.overflow,
        };
        match shared {
            None => own.charge(now, bytes),
            Some(shared) => {
                if own.fits(now, bytes) && shared.fits(now, bytes) {
                    shared.take(now, bytes);
                    own.take(now, bytes)
                } else {
                    own.refuse();
                    Verdict::Suppress
                }
            }
        }
    }

    /// Forgets every key whose minute is over at `now` and returns those
    /// that had lines suppressed, with their counts (`None` for the shared
    /// overflow budget), so that a client that stopped is still reported
    /// ("suppressed=N") without waiting for its next line.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(Option<K>, u64)>
    where
        K: Clone,
    {
        let mut out = Vec::new();
        self.budgets.retain(|k, b| {
            if !b.window_over(now) {
                return true;
            }
            let n = b.take_pending();
            if n > 0 {
                out.push((Some(k.clone()), n));
            }
            false
        });
        if self.overflow.window_over(now) && self.overflow.pending() > 0 {
            out.push((None, self.overflow.take_pending()));
        }
        out
    }

    /// Keys tracked now (at most `capacity`).
    pub fn len(&self) -> usize {
        self.budgets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// True when a new key can be tracked: the table has room, or a sweep
    /// (at most one per [`SWEEP_INTERVAL`]) freed keys whose minute is over.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.budgets.len() < self.capacity {
            return true;
        }
        if self.next_sweep.is_some_and(|t| now < t) {
            return false;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        let mut forgotten = 0u64;
        self.budgets.retain(|_, b| {
            if b.window_over(now) {
                forgotten = forgotten.saturating_add(b.take_pending());
                false
            } else {
                true
            }
        });
        self.overflow.suppressed = self.overflow.suppressed.saturating_add(forgotten);
        self.budgets.len() < self.capacity
    }
}

/// The two budgets a line can be charged to (`log::relay::classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Refusals, client errors, warnings: `log.peer-lines-per-minute`,
    /// `log.peer-bytes-per-minute`.
    Lines,
    /// Scan results and debug lines: `log.result-lines-per-minute`,
    /// `log.result-bytes-per-minute`.
    Volume,
}

impl Class {
    /// The configuration keys of this class's budgets.
    pub fn keys(self) -> &'static str {
        match self {
            Class::Lines => "log.peer-lines-per-minute, log.peer-bytes-per-minute, log.tcp-peer-bytes-per-minute",
            Class::Volume => "log.result-lines-per-minute, log.result-bytes-per-minute, log.tcp-result-bytes-per-minute",
        }
    }
}

/// The sizes of [`PeerBudgets`]: per client identity and class, and for all
/// TCP clients together per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSizes {
    pub lines: Size,
    pub volume: Size,
    /// Bytes of all TCP clients' [`Class::Lines`] lines a minute.
    pub tcp_lines_bytes: u64,
    /// Bytes of all TCP clients' [`Class::Volume`] lines a minute.
    pub tcp_volume_bytes: u64,
}

impl PeerSizes {
    pub fn from_config(log: &crate::config::LogConfig) -> PeerSizes {
        PeerSizes {
            lines: Size {
                lines: log.peer_lines_per_minute,
                bytes: log.peer_bytes_per_minute.0,
            },
            volume: Size {
                lines: log.result_lines_per_minute,
                bytes: log.result_bytes_per_minute.0,
            },
            tcp_lines_bytes: log.tcp_peer_bytes_per_minute.0,
            tcp_volume_bytes: log.tcp_result_bytes_per_minute.0,
        }
    }

    /// The size of one client's budget of `class`.
    pub fn of(&self, class: Class) -> Size {
        match class {
            Class::Lines => self.lines,
            Class::Volume => self.volume,
        }
    }
}

/// TCP clients reported one by one each time expired budgets are taken
/// ([`PeerBudgets::take_expired`]); the others are summed in one count, so
/// that many /24s cannot make as many summary lines.
pub const TCP_REPORTS: usize = 16;

/// Client identities whose budgets are tracked at once (beyond, they share
/// one overflow budget, see [`Limiter`]).
pub const PEER_KEYS: usize = 4096;

/// The supervisor's per-identity budgets, one [`Limiter`] per [`Class`],
/// shared by everything it writes about a client: broker refusals,
/// evictions, admission refusals and its workers' relayed lines.
#[derive(Debug)]
pub struct PeerBudgets {
    lines: Mutex<Classed>,
    volume: Mutex<Classed>,
}

/// One class's budgets: per identity, and all TCP clients together.
#[derive(Debug)]
struct Classed {
    peers: Limiter<PeerKey>,
    tcp: Budget,
}

impl PeerBudgets {
    pub fn new(sizes: PeerSizes) -> PeerBudgets {
        let classed = |size: Size, tcp_bytes: u64| {
            Mutex::new(Classed {
                peers: Limiter::sized(size, PEER_KEYS),
                tcp: Budget::sized(Size {
                    lines: u32::MAX,
                    bytes: tcp_bytes,
                }),
            })
        };
        PeerBudgets {
            lines: classed(sizes.lines, sizes.tcp_lines_bytes),
            volume: classed(sizes.volume, sizes.tcp_volume_bytes),
        }
    }

    fn class(&self, class: Class) -> std::sync::MutexGuard<'_, Classed> {
        match class {
            Class::Lines => &self.lines,
            Class::Volume => &self.volume,
        }
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one line of `class` about `key`, of `bytes` ([`cost`]), at
    /// `now`: within the identity's budget, and for a TCP client within
    /// all TCP clients' budget too.
    pub fn check(&self, class: Class, key: PeerKey, now: Instant, bytes: u64) -> Verdict {
        let mut c = self.class(class);
        let Classed { peers, tcp } = &mut *c;
        let shared = (!key.is_unix()).then_some(tcp);
        peers.charge(&key, now, bytes, shared)
    }

    /// Counts of lines suppressed for identities whose minute is over (see
    /// [`Limiter::take_expired`]); `None`: identities beyond the table, and
    /// TCP clients beyond the first [`TCP_REPORTS`], summed.
    pub fn take_expired(&self, now: Instant) -> Vec<(Class, Option<PeerKey>, u64)> {
        let mut out = Vec::new();
        for class in [Class::Lines, Class::Volume] {
            let mut tcp_reports = 0;
            let mut rest = 0u64;
            for (key, n) in self.class(class).peers.take_expired(now) {
                match key {
                    Some(k) if k.is_unix() || tcp_reports < TCP_REPORTS => {
                        tcp_reports += usize::from(!k.is_unix());
                        out.push((class, Some(k), n));
                    }
                    _ => rest = rest.saturating_add(n),
                }
            }
            if rest > 0 {
                out.push((class, None, rest));
            }
        }
        out
    }

    /// May a line of `class` about `key`, of `bytes` ([`cost`]), be written
    /// now? `Some(n)`: yes, `n` lines about it were suppressed before (log
    /// `suppressed = n`).
    pub fn allow(&self, class: Class, key: PeerKey, bytes: u64) -> Option<u64> {
        match self.check(class, key, Instant::now(), bytes) {
            Verdict::Allow { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    const ALLOW: Verdict = Verdict::Allow { suppressed: 0 };

    #[test]
    fn budget_allows_n_per_minute_then_reports_the_suppressed() {
        let t0 = Instant::now();
        let mut b = Budget::new(2);
        assert_eq!(b.check(t0), ALLOW);
        assert_eq!(b.check(secs(t0, 1)), ALLOW);
        assert_eq!(b.check(secs(t0, 2)), Verdict::Suppress);
        assert_eq!(b.check(secs(t0, 59)), Verdict::Suppress);
        assert_eq!(b.pending(), 2);
        // The minute started at t0 is over at t0 + 60 s.
        assert_eq!(b.check(secs(t0, 60)), Verdict::Allow { suppressed: 2 });
        assert_eq!(b.check(secs(t0, 61)), ALLOW);
        assert_eq!(b.check(secs(t0, 62)), Verdict::Suppress);
        assert_eq!(b.take_pending(), 1);
        assert_eq!(b.check(secs(t0, 200)), ALLOW);
    }

    fn sizes(lines: u32, volume: u32) -> PeerSizes {
        PeerSizes {
            lines: Size::lines(lines),
            volume: Size::lines(volume),
            tcp_lines_bytes: u64::MAX,
            tcp_volume_bytes: u64::MAX,
        }
    }

    #[test]
    fn peer_budgets_are_per_class_and_per_identity() {
        let t0 = Instant::now();
        let b = PeerBudgets::new(sizes(1, 2));
        let uid = PeerKey::unix(1000);
        let net = PeerKey::tcp("10.0.0.1".parse().unwrap());
        assert_eq!(b.check(Class::Lines, uid, t0, 0), ALLOW);
        assert_eq!(b.check(Class::Lines, uid, t0, 0), Verdict::Suppress);
        assert_eq!(b.check(Class::Lines, net, t0, 0), ALLOW);
        // The same /24: the same budget.
        let same = PeerKey::tcp("10.0.0.200".parse().unwrap());
        assert_eq!(b.check(Class::Lines, same, t0, 0), Verdict::Suppress);
        // Every loopback address: one budget.
        let lo = PeerKey::tcp("127.0.0.1".parse().unwrap());
        assert_eq!(b.check(Class::Lines, lo, t0, 0), ALLOW);
        for other in ["127.0.1.1", "127.1.0.1", "::1"] {
            let k = PeerKey::tcp(other.parse().unwrap());
            assert_eq!(b.check(Class::Lines, k, t0, 0), Verdict::Suppress);
        }
        assert_eq!(b.check(Class::Volume, uid, t0, 0), ALLOW);
        assert_eq!(b.check(Class::Volume, uid, t0, 0), ALLOW);
        assert_eq!(b.check(Class::Volume, uid, t0, 0), Verdict::Suppress);
        assert_eq!(
            b.check(Class::Lines, uid, secs(t0, 60), 0),
            Verdict::Allow { suppressed: 1 }
        );
    }

    /// Attack: a client whose lines carry the longest fields it may send
    /// writes more bytes per budgeted line. A budget counts bytes too.
    #[test]
    fn a_budget_counts_bytes_as_well_as_lines() {
        let t0 = Instant::now();
        let mut b = Budget::sized(Size {
            lines: 30,
            bytes: 10_000,
        });
        // Long lines: the bytes run out first.
        let mut written = 0;
        let mut lines = 0;
        for _ in 0..30 {
            if let Verdict::Allow { .. } = b.charge(t0, 4_400) {
                written += 4_400;
                lines += 1;
            }
        }
        assert_eq!((lines, written), (2, 8_800));
        // A short line still fits in what is left.
        assert_eq!(
            b.charge(secs(t0, 1), 1_000),
            Verdict::Allow { suppressed: 28 }
        );
        assert_eq!(b.charge(secs(t0, 1), 300), Verdict::Suppress);
        // Short lines: the lines run out first.
        let mut b = Budget::sized(Size {
            lines: 3,
            bytes: 10_000,
        });
        for _ in 0..3 {
            assert_eq!(b.charge(t0, 100), ALLOW);
        }
        assert_eq!(b.charge(t0, 100), Verdict::Suppress);
        // A line longer than the whole budget is written once a window.
        let mut b = Budget::sized(Size {
            lines: 3,
            bytes: 100,
        });
        assert_eq!(b.charge(t0, 5_000), ALLOW);
        assert_eq!(b.charge(t0, 1), Verdict::Suppress);
        assert_eq!(
            b.charge(secs(t0, 60), 5_000),
            Verdict::Allow { suppressed: 1 }
        );
    }

    #[test]
    fn a_line_costs_its_fixed_part_and_its_escaped_outside_text() {
        assert_eq!(cost(&[]), LINE_COST);
        assert_eq!(cost(&[b"/tmp/x"]), LINE_COST + 6);
        // Bytes shown as \xNN weigh four.
        assert_eq!(cost(&[&[0xff; 4096]]), LINE_COST + 4 * 4096);
        let rec = crate::ipc::logrec::LogRecord {
            level: crate::ipc::logrec::LogLevel::Info,
            truncated: false,
            dropped: 0,
            target: "t".into(),
            file: None,
            line: None,
            message: b"hello".to_vec(),
            fields: vec![("path".into(), vec![0xff; 10])],
        };
        assert_eq!(record_cost(&rec), LINE_COST + 5 + 1 + 4 + 2 + 40);
    }

    /// Attack: 256 /24s each write their own budget's worth (the review's
    /// "detection line budget bypass via rotating /24s"). All TCP clients
    /// share one more budget; Unix users keep theirs.
    #[test]
    fn tcp_clients_together_share_one_byte_budget_beyond_their_own() {
        let t0 = Instant::now();
        let per_peer = Size {
            lines: 100,
            bytes: 1_000,
        };
        let b = PeerBudgets::new(PeerSizes {
            lines: per_peer,
            volume: per_peer,
            tcp_lines_bytes: 4_000,
            tcp_volume_bytes: 8_000,
        });
        let mut written = 0u64;
        for net in 0..=255u8 {
            let key = PeerKey::tcp(std::net::IpAddr::from([10, 9, net, 1]));
            for _ in 0..10 {
                if let Verdict::Allow { .. } = b.check(Class::Volume, key, t0, 100) {
                    written += 100;
                }
            }
        }
        // Without the shared budget: 256 × 1,000.
        assert_eq!(written, 8_000);
        // The other class has a budget of its own.
        let one = PeerKey::tcp("192.0.2.1".parse().unwrap());
        assert_eq!(b.check(Class::Lines, one, t0, 100), ALLOW);
        // A Unix user is not charged to it, nor refused by it.
        for _ in 0..10 {
            assert_eq!(b.check(Class::Volume, PeerKey::unix(1000), t0, 100), ALLOW);
        }
        // A TCP client refused by the shared budget has its lines counted.
        let late = PeerKey::tcp("192.0.2.9".parse().unwrap());
        assert_eq!(b.check(Class::Volume, late, t0, 100), Verdict::Suppress);
        assert_eq!(
            b.check(Class::Volume, late, secs(t0, 60), 100),
            Verdict::Allow { suppressed: 1 }
        );
    }

    #[test]
    fn expired_tcp_clients_beyond_a_few_are_reported_in_one_count() {
        let t0 = Instant::now();
        let b = PeerBudgets::new(sizes(1, 1));
        for net in 0..100u8 {
            let key = PeerKey::tcp(std::net::IpAddr::from([10, 9, net, 1]));
            b.check(Class::Lines, key, t0, 0);
            b.check(Class::Lines, key, t0, 0);
        }
        b.check(Class::Lines, PeerKey::unix(7), t0, 0);
        b.check(Class::Lines, PeerKey::unix(7), t0, 0);
        let out = b.take_expired(secs(t0, 60));
        let named = out.iter().filter(|(_, k, _)| k.is_some()).count();
        assert_eq!(named, TCP_REPORTS + 1, "{out:?}");
        assert!(out.contains(&(Class::Lines, Some(PeerKey::unix(7)), 1)));
        assert!(out.contains(&(Class::Lines, None, 100 - TCP_REPORTS as u64)));
        let total: u64 = out.iter().map(|(_, _, n)| n).sum();
        assert_eq!(total, 101);
    }

    #[test]
    fn expired_keys_report_what_they_suppressed_and_are_forgotten() {
        let t0 = Instant::now();
        let mut l: Limiter<u32> = Limiter::new(1, 2);
        assert_eq!(l.check(&1, t0), ALLOW);
        assert_eq!(l.check(&1, t0), Verdict::Suppress);
        assert_eq!(l.check(&2, secs(t0, 30)), ALLOW);
        assert_eq!(l.check(&3, secs(t0, 30)), ALLOW); // overflow
        assert_eq!(l.check(&4, secs(t0, 30)), Verdict::Suppress); // overflow
        assert_eq!(l.take_expired(secs(t0, 59)), vec![]);
        assert_eq!(l.take_expired(secs(t0, 60)), vec![(Some(1), 1)]);
        assert_eq!(l.len(), 1);
        // Key 2's minute is over but it suppressed nothing: just forgotten.
        assert_eq!(l.take_expired(secs(t0, 90)), vec![(None, 1)]);
        assert_eq!(l.len(), 0);
        assert_eq!(l.take_expired(secs(t0, 200)), vec![]);
        // A new minute starts afresh.
        assert_eq!(l.check(&1, secs(t0, 200)), ALLOW);
    }

    #[test]
    fn budget_of_zero_is_one() {
        let t0 = Instant::now();
        let mut b = Budget::new(0);
        assert_eq!(b.check(t0), ALLOW);
        assert_eq!(b.check(t0), Verdict::Suppress);
    }

    #[test]
    fn keys_have_their_own_budgets() {
        let t0 = Instant::now();
        let mut l: Limiter<String> = Limiter::new(1, 16);
        assert_eq!(l.check("10.0.0.1", t0), ALLOW);
        assert_eq!(l.check("10.0.0.1", t0), Verdict::Suppress);
        assert_eq!(l.check("10.0.0.1", secs(t0, 30)), Verdict::Suppress);
        assert_eq!(l.check("10.0.0.2", secs(t0, 30)), ALLOW);
        assert_eq!(
            l.check("10.0.0.1", secs(t0, 60)),
            Verdict::Allow { suppressed: 2 }
        );
        assert_eq!(l.check("10.0.0.2", secs(t0, 60)), Verdict::Suppress);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_flood_of_keys_shares_the_overflow_budget_and_cannot_grow_memory() {
        let t0 = Instant::now();
        let mut l: Limiter<u32> = Limiter::new(3, 4);
        let mut allowed = 0;
        for key in 0..10_000u32 {
            if let Verdict::Allow { .. } = l.check(&key, t0) {
                allowed += 1;
            }
        }
        assert_eq!(l.len(), 4);
        // 4 tracked keys × 1 line each, then the overflow budget's 3.
        assert_eq!(allowed, 4 + 3);
        // The tracked keys keep their budgets: the flood did not reset them.
        assert_eq!(l.check(&0, secs(t0, 1)), ALLOW);
        assert_eq!(l.check(&0, secs(t0, 1)), ALLOW);
        assert_eq!(l.check(&0, secs(t0, 1)), Verdict::Suppress);
    }

    #[test]
    fn keys_are_forgotten_after_their_minute_and_their_counts_carried() {
        let t0 = Instant::now();
        let mut l: Limiter<u32> = Limiter::new(1, 2);
        assert_eq!(l.check(&1, t0), ALLOW);
        assert_eq!(l.check(&1, t0), Verdict::Suppress);
        assert_eq!(l.check(&1, t0), Verdict::Suppress);
        assert_eq!(l.check(&2, secs(t0, 30)), ALLOW);
        // Full, and both minutes are running: key 3 goes to the overflow.
        assert_eq!(l.check(&3, secs(t0, 31)), ALLOW);
        assert_eq!(l.check(&4, secs(t0, 31)), Verdict::Suppress);
        // At t0 + 60 s key 1's minute is over: it is forgotten, key 5 takes
        // its place, and its 2 suppressed lines go to the overflow count.
        assert_eq!(l.check(&5, secs(t0, 60)), ALLOW);
        assert_eq!(l.len(), 2);
        // Nothing else is over at t0 + 61 s: key 6 goes to the overflow,
        // whose minute (from t0 + 31 s) still runs.
        assert_eq!(l.check(&6, secs(t0, 61)), Verdict::Suppress);
        // At t0 + 91 s key 2 is forgotten and key 7 takes its place; key 8
        // finds the table full, and the overflow's new minute reports the
        // 1 + 2 + 1 lines suppressed (key 4, key 1's two, key 6).
        assert_eq!(l.check(&7, secs(t0, 91)), ALLOW);
        assert_eq!(l.check(&8, secs(t0, 91)), Verdict::Allow { suppressed: 4 });
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_full_table_is_swept_at_most_once_per_interval() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut l: Limiter<u32> = Limiter::new(1, 1);
        assert_eq!(l.check(&1, t0), ALLOW);
        // Full: a sweep at 59.5 s frees nothing; the next one waits until 60.5 s.
        assert_eq!(l.check(&2, ms(59_500)), ALLOW); // the overflow budget
                                                    // Key 1's minute is over at 60 s, but no sweep before 60.5 s.
        assert_eq!(l.check(&3, ms(60_200)), Verdict::Suppress); // overflow
        assert_eq!(l.check(&4, ms(60_500)), ALLOW); // key 1 forgotten
        assert_eq!(l.check(&4, ms(60_600)), Verdict::Suppress);
        assert_eq!(l.len(), 1);
    }
}
