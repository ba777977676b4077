//! Rate limiting of log lines, per peer and per connection, so that a
//! hostile client cannot flood the log, and so that the log still says how
//! much it did not show.
//!
//! * [`Budget`]: at most N lines per minute for one thing (a connection);
//!   a plain struct, no map.
//! * [`Limiter`]: a [`Budget`] per key (a uid, an address prefix), at most
//!   `capacity` keys;
//! * [`PeerBudgets`]: the supervisor's two limiters per client identity
//!   ([`PeerKey`]), one per [`Class`] of line.
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

/// At most `per_minute` lines per [`WINDOW`] for one thing.
#[derive(Debug, Clone)]
pub struct Budget {
    per_minute: u32,
    /// Start of the current window; `None` before the first line.
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Budget {
    /// A budget of `per_minute` lines (0 is taken as 1: a budget that logs
    /// nothing could never report what it suppressed).
    pub fn new(per_minute: u32) -> Budget {
        Budget {
            per_minute: per_minute.max(1),
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Counts one line at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.window_over(now) {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_minute {
            self.used += 1;
            let suppressed = std::mem::take(&mut self.suppressed);
            Verdict::Allow { suppressed }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            Verdict::Suppress
        }
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
    per_minute: u32,
    capacity: usize,
    budgets: HashMap<K, Budget>,
    overflow: Budget,
    /// No sweep of a full table before this instant.
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq> Limiter<K> {
    /// `per_minute` lines per key and minute, at most `capacity` keys
    /// tracked (0 is taken as 1).
    pub fn new(per_minute: u32, capacity: usize) -> Limiter<K> {
        Limiter {
            per_minute,
            capacity: capacity.max(1),
            budgets: HashMap::new(),
            overflow: Budget::new(per_minute),
            next_sweep: None,
        }
    }

    /// Counts one line for `key` at `now`.
    pub fn check<Q>(&mut self, key: &Q, now: Instant) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(budget) = self.budgets.get_mut(key) {
            return budget.check(now);
        }
        if self.make_room(now) {
            let mut budget = Budget::new(self.per_minute);
            let verdict = budget.check(now);
            self.budgets.insert(key.to_owned(), budget);
            verdict
        } else {
            self.overflow.check(now)
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
    /// Refusals, client errors, warnings: `log.peer-lines-per-minute`.
    Lines,
    /// Scan results and debug lines: `log.result-lines-per-minute`.
    Volume,
}

/// Client identities whose budgets are tracked at once (beyond, they share
/// one overflow budget, see [`Limiter`]).
pub const PEER_KEYS: usize = 4096;

/// The supervisor's per-identity budgets, one [`Limiter`] per [`Class`],
/// shared by everything it writes about a client: broker refusals,
/// evictions, admission refusals and its workers' relayed lines.
#[derive(Debug)]
pub struct PeerBudgets {
    lines: Mutex<Limiter<PeerKey>>,
    volume: Mutex<Limiter<PeerKey>>,
}

impl PeerBudgets {
    pub fn new(lines_per_minute: u32, volume_per_minute: u32) -> PeerBudgets {
        PeerBudgets {
            lines: Mutex::new(Limiter::new(lines_per_minute, PEER_KEYS)),
            volume: Mutex::new(Limiter::new(volume_per_minute, PEER_KEYS)),
        }
    }

    /// Counts one line of `class` about `key` at `now`.
    pub fn check(&self, class: Class, key: PeerKey, now: Instant) -> Verdict {
        let limiter = match class {
            Class::Lines => &self.lines,
            Class::Volume => &self.volume,
        };
        limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&key, now)
    }

    /// Counts of lines suppressed for identities whose minute is over (see
    /// [`Limiter::take_expired`]); `None`: identities beyond the table.
    pub fn take_expired(&self, now: Instant) -> Vec<(Class, Option<PeerKey>, u64)> {
        let mut out = Vec::new();
        for (class, limiter) in [(Class::Lines, &self.lines), (Class::Volume, &self.volume)] {
            let mut l = limiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            out.extend(l.take_expired(now).into_iter().map(|(k, n)| (class, k, n)));
        }
        out
    }

    /// May a line of `class` about `key` be written now? `Some(n)`: yes,
    /// `n` lines about it were suppressed before (log `suppressed = n`).
    pub fn allow(&self, class: Class, key: PeerKey) -> Option<u64> {
        match self.check(class, key, Instant::now()) {
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

    #[test]
    fn peer_budgets_are_per_class_and_per_identity() {
        let t0 = Instant::now();
        let b = PeerBudgets::new(1, 2);
        let uid = PeerKey::unix(1000);
        let net = PeerKey::tcp("10.0.0.1".parse().unwrap());
        assert_eq!(b.check(Class::Lines, uid, t0), ALLOW);
        assert_eq!(b.check(Class::Lines, uid, t0), Verdict::Suppress);
        assert_eq!(b.check(Class::Lines, net, t0), ALLOW);
        // The same /24: the same budget.
        let same = PeerKey::tcp("10.0.0.200".parse().unwrap());
        assert_eq!(b.check(Class::Lines, same, t0), Verdict::Suppress);
        assert_eq!(b.check(Class::Volume, uid, t0), ALLOW);
        assert_eq!(b.check(Class::Volume, uid, t0), ALLOW);
        assert_eq!(b.check(Class::Volume, uid, t0), Verdict::Suppress);
        assert_eq!(
            b.check(Class::Lines, uid, secs(t0, 60)),
            Verdict::Allow { suppressed: 1 }
        );
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
