//! Stream memory as a lease from the supervisor.
//!
//! `limits.stream-memory` bounds the INSTREAM bytes held by the whole
//! daemon, every worker and engine generation together. The supervisor
//! holds that budget and grants each worker a part of it
//! ([`ToWorker::StreamGrant`], an absolute number of bytes); the worker
//! holds at most its grant and asks for more when a stream needs it
//! ([`FromWorker::StreamWant`], the absolute number it would like: what it
//! holds plus what waiting streams need, with some headroom, in steps of
//! [`STREAM_STEP`]). When its holdings fall well below what it asked for,
//! it says so, and memory flows back to the daemon. A smaller grant takes
//! nothing back that streams hold: it only stops growth.
//!
//! Inside the worker, a stream that cannot grow waits (its reads paused)
//! up to [`GRANT_WAIT`] for a larger grant or for another stream to finish,
//! then gets the usual `Stream memory in use by other clients` error. While
//! several peers stream, each may hold at most its fair part of the grant
//! (grant / streaming peers), so one client cannot take all of it.
//!
//! Until the supervisor's half answers, the grant starts at
//! `limits.stream-memory`, which is the old per-worker behaviour.
//!
//! [`ToWorker::StreamGrant`]: crate::ipc::messages::ToWorker::StreamGrant
//! [`FromWorker::StreamWant`]: crate::ipc::messages::FromWorker::StreamWant
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::ipc::messages::{FromWorker, STREAM_STEP};
use crate::policy::PeerKey;

/// How long a stream waits for memory before it is refused.
pub const GRANT_WAIT: Duration = Duration::from_secs(2);

/// Headroom asked for beyond the need, in steps (so that a growing stream
/// does not ask at every step), and the slack before memory is given back.
const HEADROOM_STEPS: u64 = 4;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PeerHold {
    held: u64,
    waiting: u64,
}

/// The worker's stream memory account, as a pure machine.
#[derive(Debug, Clone)]
pub struct Book {
    grant: u64,
    held: u64,
    waiting: u64,
    /// The last want told to the supervisor (the starting grant at first).
    told: u64,
    step: u64,
    peers: HashMap<PeerKey, PeerHold>,
}

fn round_up(v: u64, step: u64) -> u64 {
    v.div_ceil(step).saturating_mul(step)
}

impl Book {
    pub fn new(grant: u64, step: u64) -> Book {
        Book {
            grant,
            held: 0,
            waiting: 0,
            // Nothing asked yet: the first need above the grant asks.
            told: 0,
            step: step.max(1),
            peers: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The most `peer` may hold now: all of the grant while it streams
    /// alone, else its fair part.
    pub fn peer_cap(&self, peer: PeerKey) -> u64 {
        let others = self
            .peers
            .iter()
            .filter(|(k, h)| **k != peer && (h.held > 0 || h.waiting > 0))
            .count() as u64;
        self.grant / (others + 1)
    }

    /// Takes `bytes` for `peer` if the grant and its fair part allow.
    pub fn try_take(&mut self, peer: PeerKey, bytes: u64) -> bool {
        let mine = self.peers.get(&peer).map_or(0, |h| h.held);
        if self.held.saturating_add(bytes) > self.grant
            || mine.saturating_add(bytes) > self.peer_cap(peer)
        {
            return false;
        }
        self.held += bytes;
        self.peers.entry(peer).or_default().held += bytes;
        true
    }

    /// `peer` gives back `bytes`.
    pub fn release(&mut self, peer: PeerKey, bytes: u64) {
        self.held = self.held.saturating_sub(bytes);
        if let Some(h) = self.peers.get_mut(&peer) {
            h.held = h.held.saturating_sub(bytes);
        }
        self.forget_idle(peer);
    }

    /// A stream of `peer` waits for `bytes` (or stops waiting: `false`).
    pub fn waiting(&mut self, peer: PeerKey, bytes: u64, on: bool) {
        let h = self.peers.entry(peer).or_default();
        if on {
            h.waiting += bytes;
            self.waiting += bytes;
        } else {
            h.waiting = h.waiting.saturating_sub(bytes);
            self.waiting = self.waiting.saturating_sub(bytes);
        }
        self.forget_idle(peer);
    }

    fn forget_idle(&mut self, peer: PeerKey) {
        if self
            .peers
            .get(&peer)
            .is_some_and(|h| h.held == 0 && h.waiting == 0)
        {
            self.peers.remove(&peer);
        }
    }

    /// The supervisor's new grant.
    pub fn set_grant(&mut self, bytes: u64) {
        self.grant = bytes;
    }

    /// The `StreamWant` to send now, if any: more when the need rises above
    /// the grant (once per rise), less when holdings fall well below what
    /// was asked for or granted.
    pub fn want(&mut self) -> Option<u64> {
        let need = round_up(self.held + self.waiting, self.step);
        let head = HEADROOM_STEPS * self.step;
        let more = need > self.grant && self.told < need;
        let less = need + 2 * head <= self.grant.min(self.told);
        let target = (more || less).then_some(need + head);
        if let Some(t) = target {
            self.told = t;
        }
        target
    }
}

/// The worker's stream memory: the [`Book`] behind a lock, with waiting.
pub struct StreamMemory {
    book: Mutex<Book>,
    changed: Notify,
    upstream: mpsc::UnboundedSender<FromWorker>,
}

/// Bytes a stream holds; given back when dropped.
pub struct StreamHold {
    memory: Arc<StreamMemory>,
    peer: PeerKey,
    bytes: u64,
}

impl StreamHold {
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds another hold of the same peer to this one.
    pub fn merge(&mut self, mut other: StreamHold) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.update(|b| b.release(self.peer, self.bytes));
        }
    }
}

impl StreamMemory {
    pub fn new(grant: u64, upstream: mpsc::UnboundedSender<FromWorker>) -> Arc<StreamMemory> {
        Arc::new(StreamMemory {
            book: Mutex::new(Book::new(grant, STREAM_STEP)),
            changed: Notify::new(),
            upstream,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the book, tells the supervisor what it should know, wakes
    /// waiting streams.
    fn update<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let (out, want) = {
            let mut b = self.lock();
            let out = f(&mut b);
            (out, b.want())
        };
        if let Some(bytes) = want {
            let _ = self.upstream.send(FromWorker::StreamWant { bytes });
        }
        self.changed.notify_waiters();
        out
    }

    pub fn set_grant(&self, bytes: u64) {
        self.update(|b| b.set_grant(bytes));
    }

    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.lock().held()
    }

    /// `bytes` more for a stream of `peer`: at once if the grant allows,
    /// else after asking the supervisor and waiting up to `wait`; `None`
    /// when it did not come.
    pub async fn take(
        self: &Arc<Self>,
        peer: PeerKey,
        bytes: u64,
        wait: Duration,
    ) -> Option<StreamHold> {
        let hold = |memory: &Arc<Self>| StreamHold {
            memory: Arc::clone(memory),
            peer,
            bytes,
        };
        if self.lock().try_take(peer, bytes) {
            return Some(hold(self));
        }
        let deadline = tokio::time::Instant::now() + wait;
        self.update(|b| b.waiting(peer, bytes, true));
        let got = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = {
                let mut b = self.lock();
                b.waiting(peer, bytes, false);
                let ok = b.try_take(peer, bytes);
                if !ok {
                    b.waiting(peer, bytes, true);
                }
                ok
            };
            if taken {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break false;
            }
        };
        if got {
            // The need it announced is met (the book says so already).
            self.update(|_| ());
            Some(hold(self))
        } else {
            self.update(|b| b.waiting(peer, bytes, false));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    fn p(n: u32) -> PeerKey {
        PeerKey::unix(n)
    }

    #[test]
    fn holdings_stay_within_the_grant() {
        let mut b = Book::new(10 * M, M);
        assert!(b.try_take(p(1), 6 * M));
        assert!(!b.try_take(p(1), 5 * M), "6 + 5 > 10");
        assert!(b.try_take(p(1), 4 * M));
        b.release(p(1), 6 * M);
        assert_eq!(b.held(), 4 * M);
        b.set_grant(2 * M);
        assert_eq!(b.held(), 4 * M, "a smaller grant revokes nothing");
        assert!(!b.try_take(p(1), 1), "but stops growth");
        b.release(p(1), 4 * M);
        assert!(b.try_take(p(1), 2 * M));
    }

    #[test]
    fn a_peer_holds_its_fair_part_while_others_stream() {
        let mut b = Book::new(12 * M, M);
        assert!(b.try_take(p(1), 10 * M), "alone: all of the grant");
        assert_eq!(b.peer_cap(p(2)), 6 * M);
        assert!(b.try_take(p(2), 2 * M), "what is free, within its part");
        assert!(!b.try_take(p(1), M), "over its part now that p2 streams");
        b.release(p(1), 10 * M);
        assert_eq!(
            b.peer_cap(p(2)),
            12 * M,
            "p1 holds nothing: p2 streams alone"
        );
        assert!(b.try_take(p(2), 5 * M));
    }

    #[test]
    fn wants_go_up_once_per_rise_and_down_when_well_below() {
        // A worker starts with nothing and asks for nothing until it needs.
        let mut b = Book::new(0, M);
        assert_eq!(b.want(), None, "nothing needed");
        // The supervisor's base grant, unasked.
        b.set_grant(4 * M);
        assert!(b.try_take(p(1), 3 * M));
        assert_eq!(b.want(), None, "within the grant");
        b.waiting(p(1), 3 * M, true);
        assert_eq!(b.want(), Some(10 * M), "3 held + 3 waiting + 4 headroom");
        assert_eq!(b.want(), None, "asked already");
        b.set_grant(10 * M);
        b.waiting(p(1), 3 * M, false);
        assert!(b.try_take(p(1), 3 * M));
        assert_eq!(b.want(), None);
        b.release(p(1), 6 * M);
        assert_eq!(b.want(), Some(4 * M), "holdings fell: memory flows back");
    }

    #[test]
    fn needs_are_rounded_to_steps() {
        let mut b = Book::new(0, M);
        b.waiting(p(1), 1, true);
        assert_eq!(b.want(), Some(M + 4 * M));
    }

    #[tokio::test]
    async fn a_waiting_stream_gets_its_bytes_when_the_grant_grows() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mem = StreamMemory::new(2 * M, tx);
        let first = mem.take(p(1), 2 * M, GRANT_WAIT).await.unwrap();
        let waiter = {
            let mem = Arc::clone(&mem);
            tokio::spawn(async move { mem.take(p(2), M, Duration::from_secs(600)).await })
        };
        // The waiting stream asks the supervisor for more.
        let want = loop {
            match rx.recv().await.unwrap() {
                FromWorker::StreamWant { bytes } if bytes > 2 * M => break bytes,
                _ => {}
            }
        };
        assert_eq!(want, 7 * M);
        mem.set_grant(want);
        let second = waiter.await.unwrap().expect("granted");
        assert_eq!(mem.held(), 3 * M);
        drop((first, second));
        assert_eq!(mem.held(), 0);
    }

    #[tokio::test]
    async fn a_stream_waits_a_bounded_time_then_is_refused() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mem = StreamMemory::new(M, tx);
        let _all = mem.take(p(1), M, GRANT_WAIT).await.unwrap();
        let refused = mem.take(p(2), M, Duration::from_millis(50)).await;
        assert!(refused.is_none());
        assert_eq!(mem.held(), M);
    }

    #[tokio::test]
    async fn memory_freed_by_another_stream_wakes_a_waiter() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mem = StreamMemory::new(2 * M, tx);
        let a = mem.take(p(1), 2 * M, GRANT_WAIT).await.unwrap();
        let waiter = {
            let mem = Arc::clone(&mem);
            tokio::spawn(async move { mem.take(p(1), 2 * M, Duration::from_secs(600)).await })
        };
        tokio::task::yield_now().await;
        drop(a);
        let b = waiter.await.unwrap().expect("the freed memory");
        assert_eq!(b.bytes(), 2 * M);
    }
}
