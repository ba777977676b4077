//! Connection slots of one observer listener (metrics or agent): at most
//! `metrics.max-connections` open, at most a quarter of them (at least one)
//! per client, and a newcomer is never refused: it takes the slot of a
//! connection of its own client when that client holds its share, else,
//! when the listener is full, of the client holding the most. The one that
//! goes, of that client:
//!
//! 1. the oldest that has sent nothing a request could be read from (no
//!    whole request yet, and no byte waiting: `FIONREAD` on a duplicate of
//!    its socket), a connection held open on purpose;
//! 2. else the one answered the longest ago (its response written, kept
//!    alive and waiting);
//! 3. else the oldest with a request on its way;
//! 4. else the oldest being answered.
//!
//! An honest scraper sends its request at once and is answered in
//! milliseconds, so one client holding half-sent requests, idle sessions or
//! a flood of whole requests cannot lock Prometheus, the status page or
//! HAProxy's agent out, even from the same address (the second outside
//! review's round 2: 66 idle connections from one local user failed every
//! scrape; its round 3: a flood of whole requests from loopback failed 2 of
//! 42 scrapes, whose request had arrived but not yet been read). A client
//! is a `PeerKey` by address (the observer cannot ask the kernel for a
//! loopback client's user: it may not open sockets, so loopback is one
//! client here); all clients of a Unix socket are one.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a connection gave up its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Its client opened another while holding its share.
    OwnShare,
    /// The listener was full and its client held the most.
    Full,
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No whole request yet.
    Fresh,
    /// A request read, its response not written yet.
    Answering,
    /// Its last response written (the `n`th of the listener).
    Answered(u64),
}

/// The decision, pure: see the module documentation. Connections are
/// numbered in the order they came.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_client: usize,
    next: u64,
    /// Client and state, by number.
    open: BTreeMap<u64, (String, State)>,
    by_client: HashMap<String, usize>,
    /// Counts answers, to order them.
    answers: u64,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_client: (max / 4).max(1),
            next: 0,
            open: BTreeMap::new(),
            by_client: HashMap::new(),
            answers: 0,
        }
    }

    /// A slot for a new connection of `client`: its number, and the
    /// connection that must give its slot up for it, if any. `waiting(id)`:
    /// bytes from connection `id`'s client wait to be read.
    pub fn take(
        &mut self,
        client: &str,
        waiting: &dyn Fn(u64) -> bool,
    ) -> (u64, Option<(u64, Evicted)>) {
        let held = self.by_client.get(client).copied().unwrap_or(0);
        let evict = if held >= self.per_client {
            self.victim_of(client, waiting)
                .map(|id| (id, Evicted::OwnShare))
        } else if self.open.len() >= self.max {
            let most = self
                .by_client
                .iter()
                .max_by_key(|(c, n)| (**n, std::cmp::Reverse(self.first_of(c))))
                .map(|(c, _)| c.clone());
            most.and_then(|c| self.victim_of(&c, waiting))
                .map(|id| (id, Evicted::Full))
        } else {
            None
        };
        if let Some((id, _)) = evict {
            self.give_back(id);
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(id, (client.to_string(), State::Fresh));
        *self.by_client.entry(client.to_string()).or_default() += 1;
        (id, evict)
    }

    /// Frees connection `id`'s slot (nothing if it was already freed).
    pub fn give_back(&mut self, id: u64) {
        if let Some((client, _)) = self.open.remove(&id) {
            if let Some(n) = self.by_client.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    self.by_client.remove(&client);
                }
            }
        }
    }

    /// Connection `id` sent a whole request and is being answered: it
    /// goes last.
    pub fn served(&mut self, id: u64) {
        if let Some(e) = self.open.get_mut(&id) {
            e.1 = State::Answering;
        }
    }

    /// Connection `id`'s response is written: it waits for another
    /// request, and goes after those that sent nothing.
    pub fn written(&mut self, id: u64) {
        if let Some(e) = self.open.get_mut(&id) {
            self.answers += 1;
            e.1 = State::Answered(self.answers);
        }
    }

    /// The connection of `client` to give up first (see the module
    /// documentation).
    fn victim_of(&self, client: &str, waiting: &dyn Fn(u64) -> bool) -> Option<u64> {
        let mine = || self.open.iter().filter(|(_, (c, _))| c.as_str() == client);
        let fresh = || mine().filter(|(_, (_, s))| *s == State::Fresh);
        let silent = fresh().find(|(id, _)| !waiting(**id)).map(|(id, _)| *id);
        let answered_first = mine()
            .filter_map(|(id, (_, s))| match s {
                State::Answered(n) => Some((*n, *id)),
                _ => None,
            })
            .min()
            .map(|(_, id)| id);
        silent
            .or(answered_first)
            .or_else(|| fresh().next().map(|(id, _)| *id))
            .or_else(|| mine().next().map(|(id, _)| *id))
    }

    /// The oldest connection of `client` (to break ties between clients).
    fn first_of(&self, client: &str) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, (c, _))| c.as_str() == client)
            .map(|(id, _)| *id)
    }

    #[cfg(test)]
    fn held(&self, client: &str) -> usize {
        self.by_client.get(client).copied().unwrap_or(0)
    }
}

/// Who to tell when a connection is evicted, and a duplicate of its socket
/// to ask whether bytes wait, by number.
type Tells = HashMap<u64, (oneshot::Sender<Evicted>, Option<OwnedFd>)>;

/// The slots of a listener, shared by its connection tasks, with a way to
/// tell a connection it was evicted.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Mutex<(Slots, Tells)>>,
}

/// A slot held until dropped; `evicted` fires when a newcomer took it.
pub struct Held {
    shared: Shared,
    id: u64,
    pub evicted: oneshot::Receiver<Evicted>,
}

impl Shared {
    pub fn new(max: usize) -> Shared {
        Shared {
            inner: Arc::new(Mutex::new((Slots::new(max), HashMap::new()))),
        }
    }

    /// A slot for `client`, whose connection's socket `probe` duplicates;
    /// the connection that made room (if any) is told.
    pub fn take(&self, client: &str, probe: Option<OwnedFd>) -> (Held, Option<Evicted>) {
        let (tx, rx) = oneshot::channel();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, tells) = &mut *g;
        let waiting = |id: u64| {
            tells
                .get(&id)
                .and_then(|(_, fd)| fd.as_ref())
                .is_some_and(|fd| rustix::io::ioctl_fionread(fd).is_ok_and(|n| n > 0))
        };
        let (id, evict) = slots.take(client, &waiting);
        if let Some((old, why)) = evict {
            if let Some((tell, _)) = g.1.remove(&old) {
                let _ = tell.send(why);
            }
        }
        g.1.insert(id, (tx, probe));
        drop(g);
        (
            Held {
                shared: self.clone(),
                id,
                evicted: rx,
            },
            evict.map(|(_, why)| why),
        )
    }
}

impl Held {
    /// What marks this connection as one that sent a whole request.
    pub fn marker(&self) -> Marker {
        Marker {
            shared: self.shared.clone(),
            id: self.id,
        }
    }
}

/// Marks a connection as one that sent a whole request.
pub struct Marker {
    shared: Shared,
    id: u64,
}

impl Marker {
    pub fn served(&self) {
        let mut g = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.served(self.id);
    }

    pub fn written(&self) {
        let mut g = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.written(self.id);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut g = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.give_back(self.id);
        g.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_share_gives_up_its_own_oldest() {
        let mut s = Slots::new(64);
        for i in 0..16 {
            assert_eq!(s.take("127.0.0.0/8", &NOTHING), (i, None));
        }
        // The honest scraper from the same address still gets in: the
        // client's oldest (idle) connection makes room.
        assert_eq!(
            s.take("127.0.0.0/8", &NOTHING),
            (16, Some((0, Evicted::OwnShare)))
        );
        assert_eq!(s.held("127.0.0.0/8"), 16);
        // Another client is not touched.
        assert_eq!(s.take("10.0.0.0/24", &NOTHING), (17, None));
    }

    /// No connection has bytes waiting.
    const NOTHING: fn(u64) -> bool = |_| false;

    #[test]
    fn connections_that_sent_a_request_go_last() {
        let mut s = Slots::new(8);
        let (scraper, _) = s.take("127.0.0.0/8", &NOTHING);
        s.served(scraper);
        s.written(scraper);
        let (idle, _) = s.take("127.0.0.0/8", &NOTHING);
        // At its share (2): the idle one goes though the scraper is older.
        assert_eq!(
            s.take("127.0.0.0/8", &NOTHING).1,
            Some((idle, Evicted::OwnShare))
        );
        let (_, e) = s.take("127.0.0.0/8", &NOTHING);
        assert_ne!(e, Some((scraper, Evicted::OwnShare)));
        assert!(e.is_some());
    }

    /// Round 3 of the outside review: a flood of whole requests from the
    /// scraper's own address closed the scrape whose request had arrived
    /// but was not read yet, the oldest connection of that client.
    #[test]
    fn a_request_on_its_way_goes_after_silent_and_answered_ones() {
        let mut s = Slots::new(16); // a client's share: 4
        let (scrape, _) = s.take("lo", &NOTHING);
        let (flood1, _) = s.take("lo", &NOTHING);
        let (flood2, _) = s.take("lo", &NOTHING);
        let (silent, _) = s.take("lo", &NOTHING);
        // The scrape and the flood have requests waiting; one of the
        // flood's was answered already, the other's is waiting.
        s.served(flood1);
        s.written(flood1);
        // Newcomers of the flood (4 and on) send their requests at once.
        let waiting = |id: u64| id == scrape || id == flood2 || id >= 4;
        // First the connection that sent nothing, though younger.
        assert_eq!(s.take("lo", &waiting).1, Some((silent, Evicted::OwnShare)));
        // Then the one answered already.
        assert_eq!(s.take("lo", &waiting).1, Some((flood1, Evicted::OwnShare)));
        // The scrape is being answered meanwhile: now the oldest with a
        // request on its way goes, never the one being answered.
        s.served(scrape);
        let (_, e) = s.take("lo", &waiting);
        assert_eq!(e, Some((flood2, Evicted::OwnShare)));
        // Once written, the scrape waits like any kept-alive connection.
        s.written(scrape);
        let (_, e) = s.take("lo", &waiting);
        assert_eq!(e, Some((scrape, Evicted::OwnShare)));
    }

    #[test]
    fn a_full_listener_takes_from_the_client_holding_the_most() {
        let mut s = Slots::new(8);
        for c in ["a", "a", "b", "b", "c", "c", "d"] {
            s.take(c, &NOTHING);
        }
        s.take("a", &NOTHING); // a: 3 of 8 (its share is 2: evicts its own oldest)
        assert_eq!(s.held("a"), 2);
        s.take("d", &NOTHING);
        // Full: 8 open, a/b/c/d hold 2 each; the oldest of those holding
        // the most goes (a's second, id 1).
        let (_, e) = s.take("e", &NOTHING);
        assert_eq!(e, Some((1, Evicted::Full)));
        assert_eq!(s.held("e"), 1);
        // Freed slots come back once.
        s.give_back(1);
        s.give_back(2);
        s.give_back(2);
        assert_eq!(s.take("f", &NOTHING).1, None);
    }

    #[test]
    fn an_evicted_connection_is_told() {
        let shared = Shared::new(4);
        let (mut first, none) = shared.take("a", None);
        assert_eq!(none, None);
        let (_second, why) = shared.take("a", None);
        assert_eq!(why, Some(Evicted::OwnShare));
        assert_eq!(first.evicted.try_recv(), Ok(Evicted::OwnShare));
        drop(first);
        let (_third, why) = shared.take("b", None);
        assert_eq!(why, None);
    }
}
