//! The supervisor's record of every connection it accepted: which worker
//! holds it, and who the peer is — read from the kernel once, at accept.
//!
//! Broker threads look connections up here; a broker request is answered
//! only for a live connection handed to the worker whose channel the request
//! came on, with the identity recorded here. The supervisor keeps its own
//! copy of each client socket, so that it can close a connection itself
//! (eviction of idle connections, revocation when the worker dies) without
//! asking the worker; it never reads from it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::policy::{Identity, ListenerKind};

pub type WorkerId = u64;

/// One accepted connection.
pub struct Conn {
    pub worker: WorkerId,
    pub identity: Arc<Identity>,
    pub listener: ListenerKind,
    /// The listener's name (the metrics' label).
    pub listener_name: Arc<str>,
    /// The listener's profile allows commands that name local files.
    pub paths_allowed: bool,
    pub admin: bool,
    pub accepted: Instant,
    /// The client sent a complete command (no longer an idle connection).
    pub active: bool,
    /// Closed by the supervisor (evicted); the worker has not yet reported
    /// it finished. Evicted connections no longer count against limits.
    pub evicted: bool,
    socket: Option<OwnedFd>,
}

impl Conn {
    pub fn addr(&self) -> Option<IpAddr> {
        match &*self.identity {
            Identity::Tcp(a) => Some(a.ip()),
            Identity::Unix { .. } => None,
        }
    }
}

/// Why a broker request's connection id is not acceptable. Each one means
/// the worker broke the protocol: an honest worker only names connections
/// it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// No connection ever had this id.
    NeverIssued,
    /// The connection belongs to another worker.
    OtherWorker,
    /// The connection is finished (or its worker was replaced).
    Finished,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unknown::NeverIssued => "a connection id that was never issued",
            Unknown::OtherWorker => "another worker's connection",
            Unknown::Finished => "a finished connection",
        })
    }
}

/// What a broker thread needs about a connection.
#[derive(Debug, Clone)]
pub struct Holder {
    pub identity: Arc<Identity>,
    pub paths_allowed: bool,
}

#[derive(Default)]
struct Table {
    conns: HashMap<u64, Conn>,
    next_id: u64,
}

/// Shared by the supervisor's event loop (which registers, evicts and
/// removes) and the broker threads (which look up).
#[derive(Default)]
pub struct ConnTable {
    inner: Mutex<Table>,
}

/// New-connection facts, for [`ConnTable::register`].
pub struct NewConn {
    pub worker: WorkerId,
    pub identity: Arc<Identity>,
    pub listener: ListenerKind,
    pub listener_name: Arc<str>,
    pub paths_allowed: bool,
    pub admin: bool,
    /// The supervisor's copy of the client socket.
    pub socket: OwnedFd,
}

impl ConnTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a connection handed to `worker`; returns its id (never reused).
    pub fn register(&self, c: NewConn, now: Instant) -> u64 {
        let mut t = self.lock();
        t.next_id += 1;
        let id = t.next_id;
        t.conns.insert(
            id,
            Conn {
                worker: c.worker,
                identity: c.identity,
                listener: c.listener,
                listener_name: c.listener_name,
                paths_allowed: c.paths_allowed,
                admin: c.admin,
                accepted: now,
                active: false,
                evicted: false,
                socket: Some(c.socket),
            },
        );
        id
    }

    /// The connection `id` if `worker` holds it.
    pub fn lookup(&self, id: u64, worker: WorkerId) -> Result<Holder, Unknown> {
        let t = self.lock();
        match t.conns.get(&id) {
            Some(c) if c.worker == worker => Ok(Holder {
                identity: Arc::clone(&c.identity),
                paths_allowed: c.paths_allowed,
            }),
            Some(_) => Err(Unknown::OtherWorker),
            None if id == 0 || id > t.next_id => Err(Unknown::NeverIssued),
            None => Err(Unknown::Finished),
        }
    }

    /// Is `id` live and held by `worker`, and is its peer an administrator?
    pub fn admin_of(
        &self,
        id: u64,
        worker: WorkerId,
    ) -> Result<(bool, Arc<Identity>, ListenerKind), Unknown> {
        let t = self.lock();
        match t.conns.get(&id) {
            Some(c) if c.worker == worker => Ok((c.admin, Arc::clone(&c.identity), c.listener)),
            Some(_) => Err(Unknown::OtherWorker),
            None if id == 0 || id > t.next_id => Err(Unknown::NeverIssued),
            None => Err(Unknown::Finished),
        }
    }

    /// The worker sent the connection's first complete command.
    pub fn mark_active(&self, id: u64, worker: WorkerId) -> Result<(), Unknown> {
        let mut t = self.lock();
        let next = t.next_id;
        match t.conns.get_mut(&id) {
            Some(c) if c.worker == worker => {
                c.active = true;
                Ok(())
            }
            Some(_) => Err(Unknown::OtherWorker),
            None if id == 0 || id > next => Err(Unknown::NeverIssued),
            None => Err(Unknown::Finished),
        }
    }

    /// The worker is done with the connection.
    pub fn finish(&self, id: u64, worker: WorkerId) -> Result<(), Unknown> {
        let mut t = self.lock();
        match t.conns.get(&id) {
            Some(c) if c.worker == worker => {
                t.conns.remove(&id);
                Ok(())
            }
            Some(_) => Err(Unknown::OtherWorker),
            None if id == 0 || id > t.next_id => Err(Unknown::NeverIssued),
            None => Err(Unknown::Finished),
        }
    }

    /// Runs `f` with the connection's socket (to hand it over without a
    /// second descriptor); `None` if it is gone or evicted.
    pub fn with_socket<R>(
        &self,
        id: u64,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R,
    ) -> Option<R> {
        use std::os::fd::AsFd;
        let t = self.lock();
        t.conns
            .get(&id)
            .and_then(|c| c.socket.as_ref())
            .map(|s| f(s.as_fd()))
    }

    /// Takes back a connection that could not be handed to `worker` (it is
    /// gone): its record is removed and its socket returned, to go to
    /// another worker under a new id.
    pub fn unregister(&self, id: u64, worker: WorkerId) -> Option<OwnedFd> {
        let mut t = self.lock();
        match t.conns.get(&id) {
            Some(c) if c.worker == worker => t.conns.remove(&id).and_then(|c| c.socket),
            _ => None,
        }
    }

    /// Closes a connection from the supervisor's side (both directions, for
    /// every holder of the socket): the worker sees the end of the stream.
    pub fn evict(&self, id: u64) -> Option<Arc<Identity>> {
        let mut t = self.lock();
        let c = t.conns.get_mut(&id)?;
        c.evicted = true;
        if let Some(s) = c.socket.take() {
            shutdown(&s);
        }
        Some(Arc::clone(&c.identity))
    }

    /// A worker is gone or replaced: every connection it held is closed and
    /// forgotten; their ids are dead from now on. Returns how many.
    pub fn revoke_worker(&self, worker: WorkerId) -> usize {
        let mut t = self.lock();
        let ids: Vec<u64> = t
            .conns
            .iter()
            .filter(|(_, c)| c.worker == worker)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(c) = t.conns.remove(id) {
                if let Some(s) = &c.socket {
                    shutdown(s);
                }
            }
        }
        ids.len()
    }

    /// Open (not evicted) connections per worker, for picking the least busy.
    pub fn load_of(&self, worker: WorkerId) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|c| c.worker == worker && !c.evicted)
            .count()
    }

    /// The live (not evicted) connections, for admission.
    pub fn open_now(&self) -> Vec<super::admission::Open> {
        self.lock()
            .conns
            .iter()
            .filter(|(_, c)| !c.evicted)
            .map(|(id, c)| super::admission::Open::of(*id, c))
            .collect()
    }

    /// The listener a connection came from.
    pub fn listener_of(&self, id: u64) -> Option<Arc<str>> {
        self.lock()
            .conns
            .get(&id)
            .map(|c| Arc::clone(&c.listener_name))
    }

    /// Open (not evicted) connections per listener name, for the metrics.
    pub fn open_by_listener(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = Vec::new();
        for c in self.lock().conns.values().filter(|c| !c.evicted) {
            match out.iter_mut().find(|(n, _)| **n == *c.listener_name) {
                Some((_, k)) => *k += 1,
                None => out.push((c.listener_name.to_string(), 1)),
            }
        }
        out
    }

    /// Connections open now (evicted ones included until their worker
    /// reports them finished).
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shutdown(socket: &OwnedFd) {
    let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(table: &ConnTable, worker: WorkerId) -> (u64, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let id = table.register(
            NewConn {
                worker,
                identity: Arc::new(Identity::Unix {
                    uid: 1,
                    gid: 1,
                    groups: vec![],
                    pid: None,
                }),
                listener: ListenerKind::Unix,
                listener_name: Arc::from("unix"),
                paths_allowed: true,
                admin: false,
                socket: OwnedFd::from(a),
            },
            Instant::now(),
        );
        (id, b)
    }

    #[test]
    fn only_the_holder_may_name_a_connection() {
        let t = ConnTable::default();
        let (id, _peer) = conn(&t, 1);
        assert!(t.lookup(id, 1).is_ok());
        assert_eq!(t.lookup(id, 2).unwrap_err(), Unknown::OtherWorker);
        assert_eq!(t.lookup(id + 1, 1).unwrap_err(), Unknown::NeverIssued);
        assert_eq!(t.lookup(0, 1).unwrap_err(), Unknown::NeverIssued);
        t.finish(id, 1).unwrap();
        assert_eq!(t.lookup(id, 1).unwrap_err(), Unknown::Finished);
    }

    #[test]
    fn revoking_a_worker_closes_its_connections() {
        use std::io::Read;
        let t = ConnTable::default();
        let (id, mut peer) = conn(&t, 7);
        let (other, _p2) = conn(&t, 8);
        assert_eq!(t.revoke_worker(7), 1);
        assert_eq!(t.lookup(id, 7).unwrap_err(), Unknown::Finished);
        assert!(t.lookup(other, 8).is_ok());
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "the client sees the end");
    }

    #[test]
    fn eviction_closes_but_keeps_the_record_until_finished() {
        use std::io::Read;
        let t = ConnTable::default();
        let (id, mut peer) = conn(&t, 1);
        t.evict(id);
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
        assert!(t.lookup(id, 1).is_ok());
        assert_eq!(t.load_of(1), 0);
        t.finish(id, 1).unwrap();
        assert!(t.is_empty());
    }
}
