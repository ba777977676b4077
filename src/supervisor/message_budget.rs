//! How much one worker, and all the workers of one client identity
//! together, may make the supervisor do per second: control messages read
//! (by the task that reads each worker's channel) and broker CPU time (by
//! each worker's broker thread). Pure counters; the readers wait.
//!
//! Every message costs root a read, a decode and a turn of the event loop,
//! even one that changes nothing (an `Active` for a connection already
//! active). A compromised worker that sent such messages without pause
//! kept root at 27% of a core and tripled PING latency for everyone (third
//! outside review). Past [`PER_SECOND`] messages in a second, the reader
//! stops reading that worker's channel until the second is over: the
//! kernel's socket buffer fills and the worker's own sends wait, so the
//! cost stays with the worker. An honest worker sends a handful of
//! messages per connection (its command, each detection, its close) and
//! its counters once a second; 20,000 a second is several times what the
//! benchmark's fastest run makes.
//!
//! Half that budget holds for all the workers of one client identity
//! together ([`Identities`]): with `sandbox.isolation = "connection"` one
//! client holds several workers, and three of them flooding together kept
//! root at 78% of a core and made honest PINGs 7 times slower (fifth
//! outside review). And the broker's work for one identity is bounded in
//! CPU time, not in requests: a request for a path 1,900 directories deep
//! costs root 3 ms, so 304 of them a second kept a core busy, and three
//! workers of one client 1.7 cores. Each identity's broker requests may
//! use [`BROKER_CPU_PER_SECOND`] of root's CPU a second (one core: as much
//! as one broker thread running flat out, which an honest walk of 100,000
//! files needs two thirds of); past it, its broker threads wait until the
//! second is over, and its requests wait in the kernel.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gate::WorkerId;
use crate::policy::PeerKey;

/// Messages one worker may have read per second.
pub const PER_SECOND: u32 = 20_000;

/// Messages all the workers of one identity together may have read per
/// second: half of one worker's, so that one client costs root at most a
/// third of a core however many workers it holds (the fifth review's retry
/// measured 48-74% of a core at 20,000 a second).
pub const IDENTITY_PER_SECOND: u32 = 10_000;

/// Broker CPU time (microseconds) all the workers of one identity may use
/// per second: one core.
pub const BROKER_CPU_PER_SECOND: u32 = 1_000_000;

// Far above an honest worker's rate: a CONTSCAN of 3,000 infected files
// sends 3,000 detections, read within a third of one second's budget.
const _: () = assert!(IDENTITY_PER_SECOND > 3 * 3_000 && IDENTITY_PER_SECOND <= PER_SECOND);

/// The counter of one channel.
#[derive(Debug)]
pub struct MessageBudget {
    per_second: u32,
    window: Instant,
    used: u32,
}

impl MessageBudget {
    pub fn new(per_second: u32, now: Instant) -> MessageBudget {
        MessageBudget {
            per_second: per_second.max(1),
            window: now,
            used: 0,
        }
    }

    /// One message read at `now`: how long to wait before reading the
    /// next, if the second's budget is spent.
    pub fn charge(&mut self, now: Instant) -> Option<Duration> {
        self.spend(now, 1)
    }

    /// `amount` units spent at `now`: how long to wait, if the second's
    /// budget is spent.
    pub fn spend(&mut self, now: Instant, amount: u32) -> Option<Duration> {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        self.used = self.used.saturating_add(amount);
        (self.used >= self.per_second)
            .then(|| (self.window + Duration::from_secs(1)).saturating_duration_since(now))
    }
}

/// Whose budget a worker spends: the client identity it was bound to
/// (`None`: the remote TCP clients' shared worker).
pub type Key = Option<PeerKey>;

/// The budgets each client identity's workers share.
#[derive(Default)]
pub struct Identities {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    of: HashMap<WorkerId, Key>,
    messages: HashMap<Key, MessageBudget>,
    broker_cpu: HashMap<Key, MessageBudget>,
}

impl Identities {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker `w` serves identity `key` from now on.
    pub fn bind(&self, w: WorkerId, key: Key) {
        self.lock().of.insert(w, key);
    }

    /// Worker `w` is gone; an identity with no worker left loses its
    /// budgets (a new worker of it starts a new second).
    pub fn forget(&self, w: WorkerId) {
        let mut i = self.lock();
        if let Some(key) = i.of.remove(&w) {
            if !i.of.values().any(|k| *k == key) {
                i.messages.remove(&key);
                i.broker_cpu.remove(&key);
            }
        }
    }

    /// A control message of worker `w` read at `now`: how long to wait, if
    /// its identity's second is spent. A worker bound to no identity has
    /// only its own budget.
    pub fn message(&self, w: WorkerId, now: Instant) -> Option<Duration> {
        let mut i = self.lock();
        let key = *i.of.get(&w)?;
        i.messages
            .entry(key)
            .or_insert_with(|| MessageBudget::new(IDENTITY_PER_SECOND, now))
            .charge(now)
    }

    /// Broker CPU time `spent` for worker `w` at `now`: how long its
    /// broker thread waits, if its identity's second is spent.
    pub fn broker_cpu(&self, w: WorkerId, now: Instant, spent: Duration) -> Option<Duration> {
        let mut i = self.lock();
        let key = *i.of.get(&w)?;
        let micros = u32::try_from(spent.as_micros()).unwrap_or(u32::MAX);
        i.broker_cpu
            .entry(key)
            .or_insert_with(|| MessageBudget::new(BROKER_CPU_PER_SECOND, now))
            .spend(now, micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holds_its_budget_then_the_reader_waits_for_the_next() {
        let t0 = Instant::now();
        let mut b = MessageBudget::new(3, t0);
        assert_eq!(b.charge(t0), None);
        assert_eq!(b.charge(t0 + Duration::from_millis(100)), None);
        // The third spends the second: wait for the rest of it.
        assert_eq!(
            b.charge(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        // A new second, a new budget.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.charge(t1), None);
        assert_eq!(b.charge(t1), None);
        assert_eq!(b.charge(t1), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_workers_of_one_identity_share_its_budgets() {
        let t0 = Instant::now();
        let ids = Identities::default();
        let alice = Some(PeerKey::Uid(1007));
        let bob = Some(PeerKey::Uid(1008));
        ids.bind(1, alice);
        ids.bind(2, alice);
        ids.bind(3, bob);
        // Unbound: no identity budget.
        assert_eq!(ids.message(9, t0), None);
        // Alice's two workers spend one second's budget together.
        for n in 0..IDENTITY_PER_SECOND - 1 {
            assert_eq!(ids.message(1 + (n % 2) as u64, t0), None);
        }
        assert!(ids.message(2, t0).is_some());
        // Bob's is his own.
        assert_eq!(ids.message(3, t0), None);
        // Broker CPU: half a second each, from two workers, is the core.
        let half = Duration::from_millis(500);
        assert_eq!(ids.broker_cpu(1, t0, half), None);
        assert_eq!(
            ids.broker_cpu(2, t0 + Duration::from_millis(200), half),
            Some(Duration::from_millis(800))
        );
        assert_eq!(ids.broker_cpu(3, t0, half), None);
        // Gone with its last worker.
        ids.forget(1);
        assert!(ids
            .broker_cpu(2, t0 + Duration::from_millis(300), half)
            .is_some());
        ids.forget(2);
        assert_eq!(ids.broker_cpu(1, t0, half), None, "forgotten");
    }
}
