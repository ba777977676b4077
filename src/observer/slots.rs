//! Connection slots of one observer listener (metrics or agent): at most
//! `metrics.max-connections` open, at most a quarter of them (at least one)
//! per client, and a newcomer is never refused: it takes the slot of a
//! connection of its own client when that client holds its share, else,
//! when the listener is full, of the client holding the most. The one that
//! goes is the oldest that never sent a whole request (a half-sent head, or
//! nothing), else the oldest. An honest scraper sends its request at once
//! and is answered in milliseconds, so one client holding half-sent
//! requests cannot
//! lock Prometheus, the status page or HAProxy's agent out, even from the
//! same address (the second outside review's round 2: 66 idle connections
//! from one local user failed every scrape). A client is a `PeerKey`
//! (loopback is one client); all clients of a Unix socket are one.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
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

/// The decision, pure: see the module documentation. Connections are
/// numbered in the order they came.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_client: usize,
    next: u64,
    /// Client and whether it sent a whole request, by number.
    open: BTreeMap<u64, (String, bool)>,
    by_client: HashMap<String, usize>,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_client: (max / 4).max(1),
            next: 0,
            open: BTreeMap::new(),
            by_client: HashMap::new(),
        }
    }

    /// A slot for a new connection of `client`: its number, and the
    /// connection that must give its slot up for it, if any.
    pub fn take(&mut self, client: &str) -> (u64, Option<(u64, Evicted)>) {
        let held = self.by_client.get(client).copied().unwrap_or(0);
        let evict = if held >= self.per_client {
            self.oldest_of(client).map(|id| (id, Evicted::OwnShare))
        } else if self.open.len() >= self.max {
            let most = self
                .by_client
                .iter()
                .max_by_key(|(c, n)| (**n, std::cmp::Reverse(self.oldest_of(c))))
                .map(|(c, _)| c.clone());
            most.and_then(|c| self.oldest_of(&c))
                .map(|id| (id, Evicted::Full))
        } else {
            None
        };
        if let Some((id, _)) = evict {
            self.give_back(id);
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(id, (client.to_string(), false));
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

    /// Connection `id` sent a whole request: it goes after those that
    /// never did.
    pub fn served(&mut self, id: u64) {
        if let Some(e) = self.open.get_mut(&id) {
            e.1 = true;
        }
    }

    /// The connection of `client` to give up first: the oldest that never
    /// sent a whole request, else the oldest.
    fn oldest_of(&self, client: &str) -> Option<u64> {
        let mine = || self.open.iter().filter(|(_, (c, _))| c.as_str() == client);
        mine()
            .find(|(_, (_, served))| !served)
            .or_else(|| mine().next())
            .map(|(id, _)| *id)
    }

    #[cfg(test)]
    fn held(&self, client: &str) -> usize {
        self.by_client.get(client).copied().unwrap_or(0)
    }
}

/// Who to tell when a connection is evicted, by number.
type Tells = HashMap<u64, oneshot::Sender<Evicted>>;

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

    /// A slot for `client`; the connection that made room (if any) is told.
    pub fn take(&self, client: &str) -> (Held, Option<Evicted>) {
        let (tx, rx) = oneshot::channel();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (id, evict) = g.0.take(client);
        if let Some((old, why)) = evict {
            if let Some(tell) = g.1.remove(&old) {
                let _ = tell.send(why);
            }
        }
        g.1.insert(id, tx);
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
            assert_eq!(s.take("127.0.0.0/8"), (i, None));
        }
        // The honest scraper from the same address still gets in: the
        // client's oldest (idle) connection makes room.
        assert_eq!(s.take("127.0.0.0/8"), (16, Some((0, Evicted::OwnShare))));
        assert_eq!(s.held("127.0.0.0/8"), 16);
        // Another client is not touched.
        assert_eq!(s.take("10.0.0.0/24"), (17, None));
    }

    #[test]
    fn connections_that_sent_a_request_go_last() {
        let mut s = Slots::new(8);
        let (scraper, _) = s.take("127.0.0.0/8");
        s.served(scraper);
        let (idle, _) = s.take("127.0.0.0/8");
        // At its share (2): the idle one goes though the scraper is older.
        assert_eq!(s.take("127.0.0.0/8").1, Some((idle, Evicted::OwnShare)));
        let (_, e) = s.take("127.0.0.0/8");
        assert_ne!(e, Some((scraper, Evicted::OwnShare)));
        assert!(e.is_some());
    }

    #[test]
    fn a_full_listener_takes_from_the_client_holding_the_most() {
        let mut s = Slots::new(8);
        for c in ["a", "a", "b", "b", "c", "c", "d"] {
            s.take(c);
        }
        s.take("a"); // a: 3 of 8 (its share is 2: evicts its own oldest)
        assert_eq!(s.held("a"), 2);
        s.take("d");
        // Full: 8 open, a/b/c/d hold 2 each; the oldest of those holding
        // the most goes (a's second, id 1).
        let (_, e) = s.take("e");
        assert_eq!(e, Some((1, Evicted::Full)));
        assert_eq!(s.held("e"), 1);
        // Freed slots come back once.
        s.give_back(1);
        s.give_back(2);
        s.give_back(2);
        assert_eq!(s.take("f").1, None);
    }

    #[test]
    fn an_evicted_connection_is_told() {
        let shared = Shared::new(4);
        let (mut first, none) = shared.take("a");
        assert_eq!(none, None);
        let (_second, why) = shared.take("a");
        assert_eq!(why, Some(Evicted::OwnShare));
        assert_eq!(first.evicted.try_recv(), Ok(Evicted::OwnShare));
        drop(first);
        let (_third, why) = shared.take("b");
        assert_eq!(why, None);
    }
}
