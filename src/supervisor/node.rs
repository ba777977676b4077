//! What this node tells a load balancer about itself beyond what the two
//! machines hold: an administrator's maintenance request (`MAINT ON`,
//! `clamsentry maint on`), and a reload waiting for memory headroom (the
//! lifecycle's, see [`super::headroom`]).
//!
//! The executor keeps one [`Node`]; [`Node::agent_view`] is the small
//! struct it hands to whatever answers HAProxy's `agent-check` (the
//! observer's snapshot: `maintenance` makes the agent say `maint`,
//! `reload_deferred` makes it say `drain`), and the status line shows both.
//! Maintenance is not kept across restarts: a daemon starts ready.
#![forbid(unsafe_code)]

use super::headroom::Shortfall;
use crate::policy::Identity;

/// The node's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    maintenance: bool,
}

/// What the agent needs: one struct, copied into each snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentView {
    /// An administrator asked for maintenance: the agent answers `maint`
    /// (HAProxy sends no new connection, and health checks stop) until
    /// `MAINT OFF`. The daemon itself keeps serving whoever connects.
    pub maintenance: bool,
    /// A reload waits for memory headroom; the old signatures serve. The
    /// agent answers `drain` while it is set.
    pub reload_deferred: Option<Shortfall>,
}

impl Node {
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// An administrator's `MAINT ON` (`Some(true)`), `MAINT OFF`
    /// (`Some(false)`) or `MAINT` (`None`: only asks). Returns the state
    /// after it; a change is logged with who asked.
    pub fn request(&mut self, on: Option<bool>, who: &Identity) -> bool {
        if let Some(on) = on {
            if on != self.maintenance {
                self.maintenance = on;
                if on {
                    tracing::warn!(peer = %who, "maintenance on: the load balancer's agent now answers maint (MAINT OFF to end it)");
                } else {
                    tracing::info!(peer = %who, "maintenance off: the agent answers ready again");
                }
            }
        }
        self.maintenance
    }

    /// The struct the agent's snapshot takes.
    pub fn agent_view(&self, deferred: Option<&Shortfall>) -> AgentView {
        AgentView {
            maintenance: self.maintenance,
            reload_deferred: deferred.cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_follows_requests_and_queries_change_nothing() {
        let root = Identity::Unix {
            uid: 0,
            gid: 0,
            groups: vec![0],
            pid: None,
        };
        let mut n = Node::default();
        assert!(!n.request(None, &root));
        assert!(n.request(Some(true), &root));
        assert!(n.request(Some(true), &root), "twice is once");
        assert!(n.request(None, &root));
        assert_eq!(
            n.agent_view(None),
            AgentView {
                maintenance: true,
                reload_deferred: None
            }
        );
        assert!(!n.request(Some(false), &root));
        assert!(!n.maintenance());
    }
}
