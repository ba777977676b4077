//! What a worker may do for a connection, as the broker threads see it: a
//! grant per live connection, made when the gate hands the connection to a
//! worker and removed the moment the gate revokes it (the client hung up,
//! the connection was closed or evicted, its worker is gone).
//!
//! The gate (`super::gate`) decides; this table only mirrors its decisions
//! for the broker threads, which run beside the event loop. A request for a
//! connection:
//!
//! * granted to this worker: answered, as the identity recorded at accept;
//! * never issued, or granted to another worker: a protocol violation (an
//!   honest worker names only connections it was given), the worker is
//!   ended;
//! * issued but no longer granted (the client left a moment ago): refused
//!   without a violation, since an honest worker can race with the
//!   hang-up.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::gate::{ConnId, WorkerId};
use crate::policy::Identity;

/// What a broker thread needs about a granted connection.
#[derive(Debug, Clone)]
pub struct Grant {
    pub worker: WorkerId,
    pub identity: Arc<Identity>,
    pub paths_allowed: bool,
}

/// Why a connection id is not granted to the asking worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No connection ever had this id: a violation.
    NeverIssued,
    /// Another worker holds it: a violation.
    OtherWorker,
    /// It is over (the client left, or it was closed): a plain refusal.
    Revoked,
}

impl Denied {
    /// Does asking for it break the protocol?
    pub fn is_violation(self) -> bool {
        !matches!(self, Denied::Revoked)
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Denied::NeverIssued => "a connection id that was never issued",
            Denied::OtherWorker => "another worker's connection",
            Denied::Revoked => "a connection that is over",
        })
    }
}

#[derive(Default)]
struct Table {
    grants: HashMap<ConnId, Grant>,
    /// Every id below this was issued.
    issued_below: ConnId,
}

/// Shared by the event loop (which grants and revokes) and the broker
/// threads (which look up).
#[derive(Default)]
pub struct Authority {
    inner: Mutex<Table>,
}

impl Authority {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `id` was issued (accepted), whether or not it is ever granted.
    pub fn issued(&self, id: ConnId) {
        let mut t = self.lock();
        t.issued_below = t.issued_below.max(id + 1);
    }

    pub fn grant(&self, id: ConnId, grant: Grant) {
        let mut t = self.lock();
        t.issued_below = t.issued_below.max(id + 1);
        t.grants.insert(id, grant);
    }

    pub fn revoke(&self, id: ConnId) {
        self.lock().grants.remove(&id);
    }

    /// Every connection of a worker that is gone.
    pub fn revoke_worker(&self, worker: WorkerId) {
        self.lock().grants.retain(|_, g| g.worker != worker);
    }

    /// The grant of `id` if `worker` holds it.
    pub fn lookup(&self, id: ConnId, worker: WorkerId) -> Result<Grant, Denied> {
        let t = self.lock();
        match t.grants.get(&id) {
            Some(g) if g.worker == worker => Ok(g.clone()),
            Some(_) => Err(Denied::OtherWorker),
            None if id == 0 || id >= t.issued_below => Err(Denied::NeverIssued),
            None => Err(Denied::Revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(worker: WorkerId) -> Grant {
        Grant {
            worker,
            identity: Arc::new(Identity::Unix {
                uid: 1,
                gid: 1,
                groups: vec![],
                pid: None,
            }),
            paths_allowed: true,
        }
    }

    #[test]
    fn only_the_holder_may_name_a_live_connection() {
        let a = Authority::default();
        a.grant(5, grant(1));
        assert!(a.lookup(5, 1).is_ok());
        assert_eq!(a.lookup(5, 2).unwrap_err(), Denied::OtherWorker);
        assert_eq!(a.lookup(6, 1).unwrap_err(), Denied::NeverIssued);
        assert_eq!(a.lookup(0, 1).unwrap_err(), Denied::NeverIssued);
        a.issued(9);
        assert_eq!(a.lookup(6, 1).unwrap_err(), Denied::Revoked);
        a.revoke(5);
        let e = a.lookup(5, 1).unwrap_err();
        assert_eq!(e, Denied::Revoked);
        assert!(!e.is_violation());
    }

    #[test]
    fn a_gone_worker_loses_every_grant() {
        let a = Authority::default();
        a.grant(1, grant(7));
        a.grant(2, grant(8));
        a.revoke_worker(7);
        assert_eq!(a.lookup(1, 7).unwrap_err(), Denied::Revoked);
        assert!(a.lookup(2, 8).is_ok());
    }
}
