//! Shares of the daemon's scan threads and stream memory between client
//! identities (tenants), as pure arithmetic.
//!
//! **Threads.** `limits.max-threads` is the number of scans the whole
//! daemon runs at once, as clamd's MaxThreads. The tenants that have
//! connections split it evenly (the remainder going to the first ones, in
//! a fixed order), each getting at least one: with one busy client, its
//! worker runs every thread; with a second, each runs half. A worker only
//! runs as many scans as it is told, so one client's slow inputs hold at
//! most its share (inside a worker the scan pool is fair between peers
//! too, and keeps a few reserve threads for peers below their share).
//!
//! **Stream memory.** `limits.stream-memory` bounds the stream bytes of
//! every worker together, old generations included: each worker holds a
//! lease and asks for more before its streams grow ([`Leases`]). A tenant
//! (one client identity) may hold at most `tenant_cap` of it — half of the
//! budget by default, at least one largest stream — so at least the rest
//! stays for the others, however long one client's streams trickle.
//!
//! Every worker that can exist (`limits.max-workers`) has its base lease
//! reserved by construction: what workers hold beyond their base (their
//! *extra*) comes from a pool of `budget - base x max-workers`, so
//! whatever identities hold, a worker that starts later for a new one
//! finds its base free. An identity with `n` workers therefore holds at
//! most `budget - base x (max-workers - n)`. Without it, one local user
//! acting as two identities (its uid and a TCP connection from loopback)
//! could hold every byte, and a newcomer's first stream was refused though
//! it never used any. The guarantee is for up to `max-workers` workers
//! with a lease: an old generation or a released worker still draining
//! holds its lease until it is gone, and a worker that starts meanwhile
//! gets its base when it is.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use super::{Tenant, WorkerId};

/// Splits `total` threads between the `active` tenants: even shares, the
/// remainder to the first ones, at least one each.
pub fn split_threads(total: u32, active: &BTreeSet<Tenant>) -> BTreeMap<Tenant, u32> {
    let n = active.len() as u32;
    if n == 0 {
        return BTreeMap::new();
    }
    let base = total / n;
    let extra = total % n;
    active
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let share = base + u32::from((i as u32) < extra);
            (*t, share.max(1))
        })
        .collect()
}

/// The limit of a worker whose tenant has no connection now: what it
/// would get as one more active tenant (it is told again when one comes).
pub fn idle_threads(total: u32, active: usize) -> u32 {
    (total / (active as u32 + 1)).max(1)
}

/// How the stream memory is leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// `limits.stream-memory`.
    pub budget: u64,
    /// The most one tenant may hold.
    pub tenant_cap: u64,
    /// What a worker gets when it starts serving, without asking (small
    /// streams never wait for a lease).
    pub base: u64,
    /// Workers whose base is reserved (`limits.max-workers`).
    pub workers: u64,
}

impl LeaseSettings {
    /// From the configuration: a tenant may hold half the budget, but at
    /// least one stream of the largest size; every worker starts with a
    /// small lease.
    pub fn new(budget: u64, stream_max_length: u64, max_workers: usize) -> LeaseSettings {
        let tenant_cap = (budget / 2).max(stream_max_length).min(budget);
        let base = (1 << 20)
            .min(budget / (2 * max_workers.max(1) as u64))
            .min(tenant_cap);
        LeaseSettings {
            budget,
            tenant_cap,
            base,
            workers: max_workers.max(1) as u64,
        }
    }

    /// What all workers together may hold beyond their base leases.
    fn extra_pool(&self) -> u64 {
        self.budget
            .saturating_sub(self.base.saturating_mul(self.workers))
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    tenant: Tenant,
    granted: u64,
    want: u64,
}

/// The leases of stream memory, per worker.
#[derive(Debug, Clone)]
pub struct Leases {
    s: LeaseSettings,
    by_worker: BTreeMap<WorkerId, Lease>,
}

impl Leases {
    pub fn new(s: LeaseSettings) -> Leases {
        Leases {
            s,
            by_worker: BTreeMap::new(),
        }
    }

    fn held(&self) -> u64 {
        self.by_worker.values().map(|l| l.granted).sum()
    }

    fn held_by(&self, tenant: Tenant, except: WorkerId) -> u64 {
        self.by_worker
            .iter()
            .filter(|(w, l)| **w != except && l.tenant == tenant)
            .map(|(_, l)| l.granted)
            .sum()
    }

    /// What `w` may hold now if it wants `want`: within the budget, its
    /// tenant's cap, and its base plus what the other workers leave of the
    /// extra pool (the bases of workers yet to come stay free).
    fn grant_for(&self, w: WorkerId, tenant: Tenant, want: u64) -> u64 {
        let others = self.held() - self.by_worker.get(&w).map_or(0, |l| l.granted);
        let free = self.s.budget.saturating_sub(others);
        let tenant_room = self.s.tenant_cap.saturating_sub(self.held_by(tenant, w));
        let others_extra: u64 = self
            .by_worker
            .iter()
            .filter(|(x, _)| **x != w)
            .map(|(_, l)| l.granted.saturating_sub(self.s.base))
            .sum();
        let reserve_room = self
            .s
            .base
            .saturating_add(self.s.extra_pool().saturating_sub(others_extra));
        want.min(free).min(tenant_room).min(reserve_room)
    }

    /// A worker starts serving: its base lease, if there is room.
    pub fn join(&mut self, w: WorkerId, tenant: Tenant) -> Option<u64> {
        let want = self.s.base;
        let granted = self.grant_for(w, tenant, want);
        self.by_worker.insert(
            w,
            Lease {
                tenant,
                granted,
                want,
            },
        );
        Some(granted)
    }

    /// The worker wants to hold `want` bytes: its new grant, and any other
    /// grants that changed (memory it gave back goes to workers waiting).
    pub fn want(&mut self, w: WorkerId, want: u64) -> Vec<(WorkerId, u64)> {
        let Some(lease) = self.by_worker.get(&w).copied() else {
            return Vec::new();
        };
        let granted = self.grant_for(w, lease.tenant, want);
        let mut out = Vec::new();
        if let Some(l) = self.by_worker.get_mut(&w) {
            l.want = want;
            if l.granted != granted {
                l.granted = granted;
                out.push((w, granted));
            }
        }
        if granted < lease.granted {
            out.extend(self.serve_waiting());
        }
        out
    }

    /// The worker is gone: its lease returns to the others.
    pub fn leave(&mut self, w: WorkerId) -> Vec<(WorkerId, u64)> {
        if self.by_worker.remove(&w).is_none() {
            return Vec::new();
        }
        self.serve_waiting()
    }

    /// Workers that want more than they hold get what now fits, in order.
    fn serve_waiting(&mut self) -> Vec<(WorkerId, u64)> {
        let waiting: Vec<WorkerId> = self
            .by_worker
            .iter()
            .filter(|(_, l)| l.want > l.granted)
            .map(|(w, _)| *w)
            .collect();
        let mut out = Vec::new();
        for w in waiting {
            let Some(l) = self.by_worker.get(&w).copied() else {
                continue;
            };
            let granted = self.grant_for(w, l.tenant, l.want);
            if granted != l.granted {
                if let Some(x) = self.by_worker.get_mut(&w) {
                    x.granted = granted;
                }
                out.push((w, granted));
            }
        }
        out
    }

    /// Bytes leased in all.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_split_evenly_and_everyone_gets_one() {
        let mut active = BTreeSet::new();
        assert!(split_threads(10, &active).is_empty());
        active.insert(Tenant::Network);
        assert_eq!(split_threads(10, &active)[&Tenant::Network], 10);
        active.insert(Tenant::Uid(0));
        active.insert(Tenant::Uid(1000));
        let s = split_threads(10, &active);
        assert_eq!(s.values().sum::<u32>(), 10);
        assert!(s.values().all(|&n| n == 3 || n == 4));
        let many: BTreeSet<Tenant> = (0..20).map(Tenant::Uid).collect();
        assert!(split_threads(10, &many).values().all(|&n| n == 1));
        assert_eq!(idle_threads(10, 1), 5);
        assert_eq!(idle_threads(1, 5), 1);
    }

    const MIB: u64 = 1 << 20;

    fn leases() -> Leases {
        Leases::new(LeaseSettings {
            budget: 64 * MIB,
            tenant_cap: 32 * MIB,
            base: MIB,
            workers: 3,
        })
    }

    #[test]
    fn workers_start_with_a_small_lease_and_grow_on_request() {
        let mut l = leases();
        assert_eq!(l.join(1, Tenant::Network), Some(MIB));
        assert_eq!(l.want(1, 10 * MIB), vec![(1, 10 * MIB)]);
        assert_eq!(l.total(), 10 * MIB);
        // Giving back.
        assert_eq!(l.want(1, 2 * MIB), vec![(1, 2 * MIB)]);
    }

    #[test]
    fn one_tenant_never_holds_more_than_its_cap() {
        let mut l = leases();
        l.join(1, Tenant::Network);
        l.join(2, Tenant::Network); // a second worker of the same tenant
        assert_eq!(l.want(1, 30 * MIB), vec![(1, 30 * MIB)]);
        assert_eq!(l.want(2, 30 * MIB), vec![(2, 2 * MIB)]);
        // Another tenant still gets its own share.
        l.join(3, Tenant::Uid(1000));
        assert_eq!(l.want(3, 30 * MIB), vec![(3, 30 * MIB)]);
        assert!(l.total() <= 64 * MIB);
    }

    #[test]
    fn the_budget_holds_for_everyone_together_and_freed_memory_flows_on() {
        let mut l = leases();
        for (w, uid) in [(1, 1), (2, 2), (3, 3)] {
            l.join(w, Tenant::Uid(uid));
        }
        assert_eq!(l.want(1, 32 * MIB), vec![(1, 32 * MIB)]);
        // Worker 2 gets what is left beside the others' leases.
        assert_eq!(l.want(2, 32 * MIB), vec![(2, 31 * MIB)]);
        assert_eq!(l.total(), 64 * MIB);
        // Worker 3 keeps its base lease and waits for more.
        assert_eq!(l.want(3, 8 * MIB), vec![]);
        // Worker 1 gives back: those who waited get what now fits.
        let changed = l.want(1, 4 * MIB);
        assert_eq!(changed, vec![(1, 4 * MIB), (2, 32 * MIB), (3, 8 * MIB)]);
        // A worker that goes returns everything.
        assert!(l.leave(2).is_empty());
        assert_eq!(l.total(), 12 * MIB);
    }

    #[test]
    fn settings_from_the_configuration() {
        let s = LeaseSettings::new(256 * MIB, 100 * MIB, 16);
        assert_eq!(s.tenant_cap, 128 * MIB);
        assert_eq!(s.base, MIB);
        let small = LeaseSettings::new(64 * MIB, 100 * MIB, 16);
        assert_eq!(small.tenant_cap, 64 * MIB);
        assert_eq!(small.base, MIB);
        assert_eq!(small.workers, 16);
    }

    #[test]
    fn a_new_identity_always_finds_its_base_lease() {
        // One local user as two identities (its uid, and TCP from
        // loopback) takes all it can; the cap alone would let the two take
        // every byte (each may hold one largest stream, the whole budget).
        let s = LeaseSettings::new(64 * MIB, 64 * MIB, 16);
        assert_eq!((s.tenant_cap, s.base), (64 * MIB, MIB));
        let mut l = Leases::new(s);
        assert_eq!(l.join(1, Tenant::Uid(1000)), Some(MIB));
        assert_eq!(l.join(2, Tenant::Network), Some(MIB));
        // Each holds its base plus what the extra pool (64 - 16 MiB) gives.
        assert_eq!(l.want(1, 64 * MIB), vec![(1, 49 * MIB)]);
        assert_eq!(l.want(2, 64 * MIB), vec![]);
        assert_eq!(l.total(), 50 * MIB);
        // A worker forked later for a new identity gets its base, and its
        // first stream (within the base) needs nothing more.
        assert_eq!(l.join(3, Tenant::Uid(1001)), Some(MIB));
        assert_eq!(l.want(3, MIB), vec![]);
        // So does every further one, up to max-workers.
        for w in 4..=16 {
            assert_eq!(l.join(w, Tenant::Uid(1000 + w as u32)), Some(MIB), "{w}");
        }
        assert!(l.total() <= 64 * MIB);
        // The bound per identity: budget - base x (max-workers - its own).
        assert_eq!(49 * MIB, 64 * MIB - MIB * (16 - 1));
        // When the first gives back, the extra flows to those who waited.
        let changed = l.want(1, 8 * MIB);
        assert_eq!(changed, vec![(1, 8 * MIB), (2, 42 * MIB)]);
    }

    #[test]
    fn an_honest_single_client_keeps_its_whole_share() {
        // The default configuration: 256 MiB, streams up to 100 MiB.
        let mut l = Leases::new(LeaseSettings::new(256 * MIB, 100 * MIB, 16));
        l.join(1, Tenant::Uid(1000));
        assert_eq!(l.want(1, 200 * MIB), vec![(1, 128 * MIB)]);
        l.join(2, Tenant::Network);
        assert_eq!(l.want(2, 200 * MIB), vec![(2, 114 * MIB)]);
        assert_eq!(l.join(3, Tenant::Uid(1001)), Some(MIB));
    }
}
