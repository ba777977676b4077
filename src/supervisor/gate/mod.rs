//! Every decision about connections, as a pure machine: events in, actions
//! out, no sockets, threads or clocks of its own (the executor in
//! `supervisor::run` performs the actions; the unit tests below drive the
//! machine with invented events and times, in milliseconds).
//!
//! The gate owns the table of connections. For each one it decides:
//!
//! * **admission** ([`admission`]): per-client shares (a Unix uid, or a
//!   TCP address prefix), the TCP share, the administrators' reserve, the
//!   total; which connection makes room when a scope is full; refusal of
//!   the daemon's own processes and of the service user;
//! * **which worker** holds it. Workers are partitioned by client
//!   identity, the [`Tenant`]: a worker that holds one local user's
//!   connections (over the Unix socket, or over TCP from a socket of this
//!   host) never holds another's, and remote TCP clients never share a
//!   worker with local ones (with `sandbox.isolation = "connection"`, each
//!   connection has a worker of its own). A compromised worker therefore
//!   reaches what the client that compromised it could reach, and nothing
//!   more. A connection goes to a serving worker of its tenant; when there
//!   is none, the gate asks for one ([`Action::NeedWorker`]: the
//!   lifecycle binds a standby worker, a fork away from the engine holder)
//!   and the connection waits. At most `limits.max-workers` tenants have a
//!   worker, one of them kept for administrators ([`admins_slot`]); when
//!   every slot is taken, a worker is released to make room: one with no
//!   connection (idle the longest) first, else one whose connections all
//!   still wait for their first command (the tenant that connected last
//!   the longest ago; those idle connections are closed). A worker with a
//!   connection that sent a command is never released for another tenant;
//! * **authority**: a worker's requests for a connection (broker, RELOAD,
//!   SHUTDOWN, VirusEvent, STATS of everyone) count only while the
//!   connection is open and held by that worker. A client that hangs up
//!   revokes its connection at once ([`Event::HungUp`], from the
//!   supervisor's own copy of the socket). A request that names a
//!   connection the worker was never given is a violation: the worker is
//!   ended; one that names a connection whose client already left is
//!   refused quietly (an honest worker can race with the hang-up). A
//!   revoked connection that its worker has not closed within
//!   `Settings::close_grace` (`limits.max-scan-time` + [`CLOSE_MARGIN`])
//!   is a violation too: an honest worker stops what runs for a client that
//!   left within one scan's time, so a worker that keeps one longer is
//!   holding it to keep reporting for it or to keep its tenant's share;
//! * **administrative commands**: RELOAD, SHUTDOWN and MAINT are run only
//!   for a connection whose recorded identity may, by the listener's
//!   profile;
//! * **deadlines**: a connection waiting for a worker, and every connection
//!   older than its lifetime bound, is closed whatever its worker does;
//! * **shares**: the daemon's scan threads (`limits.max-threads`) are
//!   split between the tenants that have connections (`Threads`), and the
//!   stream memory (`limits.stream-memory`, one bound for the whole
//!   daemon) is leased to workers on request, at most a per-tenant cap
//!   ([`shares`]).
//!
//! The executor allocates connection ids (increasing, never reused) and
//! passes them in; the gate never sees a socket.
#![forbid(unsafe_code)]

pub mod admission;
pub mod shares;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::admission::{Caps, Newcomer, Open, Verdict};
use self::shares::Leases;
use crate::ipc::messages::{
    fit_tasks, AdminCommand, ConnInfo, PeerInfo, PoolCounts, TaskInfo, TASK_LIST_ROOM,
};
use crate::policy::{Admins, Decision, Identity, ListenerKind, PeerKey, Prefixes, Profile};
use crate::proto::CommandKind;

pub type ConnId = u64;
pub type WorkerId = u64;

/// Whose connections one worker may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tenant {
    /// One local user (its Unix-socket clients, and its TCP clients whose
    /// socket is on this host).
    Uid(u32),
    /// Remote TCP clients: their file access is "others" alone, whoever
    /// they are.
    Network,
    /// One connection (`sandbox.isolation = "connection"`).
    Connection(ConnId),
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tenant::Uid(uid) => write!(f, "uid={uid}"),
            Tenant::Network => f.write_str("network"),
            Tenant::Connection(id) => write!(f, "connection={id}"),
        }
    }
}

/// How workers are shared (`sandbox.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// One worker per client identity (a uid; TCP clients together).
    Identity,
    /// One worker per connection.
    Connection,
}

/// What the gate is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub caps: Caps,
    pub prefixes: Prefixes,
    pub isolation: Isolation,
    /// Tenants that may have a worker at once (`limits.max-workers`).
    pub max_workers: usize,
    /// Scan threads of the whole daemon (`limits.max-threads`).
    pub max_threads: u32,
    pub leases: shares::LeaseSettings,
    /// How long a connection may wait for a worker of its tenant
    /// (`limits.command-read-timeout`: it could not have sent its command
    /// anyway).
    pub wait_for_worker: Duration,
    /// No connection lives longer than this, whatever its worker does.
    pub lifetime: Duration,
    /// A tenant's worker with no connection for this long is released.
    pub idle_worker: Duration,
    /// How long a worker may keep a revoked connection (its client left,
    /// or the gate closed it) before saying `Closed`; longer is a
    /// violation. `limits.max-scan-time` + [`CLOSE_MARGIN`].
    pub close_grace: Duration,
    /// How long an identity counts as active for thread shares after its
    /// last connection closed (so that a client connecting once a second
    /// does not reshuffle the shares each time).
    pub active_linger: Duration,
    /// Refuse Unix clients with this uid: the service user the workers run
    /// as (a compromised worker's identity).
    pub service_uid: Option<u32>,
    pub admins: Admins,
    pub unix: Profile,
    pub tcp: Profile,
}

/// Why a newcomer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limit (its configuration key) is reached.
    Limit(&'static str),
    /// The peer is one of the daemon's own processes.
    OwnProcess,
    /// The peer runs as the service user.
    ServiceUser,
    /// The daemon is stopping.
    Stopping,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Limit(key) => write!(f, "limit reached: {key}"),
            Refusal::OwnProcess => f.write_str("the peer is one of the daemon's own processes"),
            Refusal::ServiceUser => f.write_str(
                "the peer runs as the service user (sandbox.user), which only the daemon's workers do",
            ),
            Refusal::Stopping => f.write_str("the daemon is stopping"),
        }
    }
}

/// Why the gate closed a connection it had admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// An idle connection, to make room for a newcomer (see [`admission`]),
    /// or for another tenant's worker (its worker was released).
    Room,
    /// A busy connection of the client holding the most, to make room for
    /// a client holding few.
    Surplus,
    /// No worker for its client came in time.
    NoWorker,
    /// Older than its lifetime bound.
    Lifetime,
    /// Its worker is gone.
    WorkerGone,
    /// It could not be handed to its worker.
    Undeliverable,
}

impl Eviction {
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Room => "closed an idle connection to make room for a new one",
            Eviction::Surplus => {
                "closed a connection of the client holding the most to make room for a client holding few"
            }
            Eviction::NoWorker => "closed a connection that found no worker in time",
            Eviction::Lifetime => "closed a connection older than its lifetime bound",
            Eviction::WorkerGone => "closed a connection whose worker is gone",
            Eviction::Undeliverable => "closed a connection its worker could not take",
        }
    }
}

/// What a worker reports about its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The connection sent its first complete command.
    Active(ConnId),
    /// The worker is done with the connection.
    Closed(ConnId),
    /// A scan found `virus` (VirusEvent).
    Found {
        conn: ConnId,
        virus: String,
        target: Vec<u8>,
    },
    /// The client asked for RELOAD or SHUTDOWN/QUIT.
    Admin { conn: ConnId, command: AdminCommand },
    /// The worker would like to hold this many bytes of stream memory.
    StreamWant(u64),
    /// The client of `conn` asked for STATS: the whole daemon's tasks.
    StatsTasks { conn: ConnId },
    /// The worker's tasks and pool, answering query `seq`.
    TaskList {
        seq: u64,
        tasks: Vec<TaskInfo>,
        omitted: u32,
        pool: PoolCounts,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection was accepted; `own_process`: its peer is one of the
    /// daemon's own processes (the executor knows their pids).
    Accepted {
        id: ConnId,
        listener: ListenerKind,
        name: Arc<str>,
        identity: Arc<Identity>,
        own_process: bool,
    },
    /// A worker serves, bound to this tenant.
    WorkerUp {
        worker: WorkerId,
        tenant: Tenant,
    },
    /// The worker takes no new connection (reload, stop, retire).
    WorkerDraining(WorkerId),
    /// The worker is gone; its connections with it.
    WorkerGone(WorkerId),
    Report(WorkerId, Report),
    /// The client closed its end.
    HungUp(ConnId),
    /// The connection could not be handed to its worker: the worker's
    /// channel refused it (the worker died) or stayed full. Nobody read a
    /// byte of it, so it waits for another worker.
    Undeliverable(ConnId),
    /// The supervisor itself could not hand the connection over (no
    /// descriptor left for the copy it hands): it is closed, and its
    /// worker, not at fault, keeps serving.
    CannotHand(ConnId),
    /// The daemon is stopping: no newcomer is admitted any more.
    Stopping,
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close a newcomer unread.
    Refuse {
        id: ConnId,
        identity: Arc<Identity>,
        listener: ListenerKind,
        /// The listener's name (metrics, logs).
        name: Arc<str>,
        why: Refusal,
    },
    /// Give the connection to the worker: its authority starts now, as
    /// `identity` (recorded at accept), with path commands if `paths`.
    Hand {
        id: ConnId,
        worker: WorkerId,
        info: ConnInfo,
        identity: Arc<Identity>,
        paths: bool,
    },
    /// A client's connection passed admission (counted by listener; the
    /// self-test's is no client's and is not).
    Admitted { name: Arc<str> },
    /// Close the connection from the supervisor's side (the worker sees
    /// the end of the stream) and end its authority. The record stays until
    /// the worker says `Closed` (or is gone).
    Evict {
        id: ConnId,
        key: PeerKey,
        identity: Arc<Identity>,
        name: Arc<str>,
        why: Eviction,
    },
    /// The client left: the connection's authority ends; the worker still
    /// closes it.
    Revoke(ConnId),
    /// The connection is over: drop the supervisor's copy of its socket.
    Forget(ConnId),
    /// The hand-off failed: the connection's authority ends and its
    /// hang-up is no longer watched, until it is handed again.
    Retract(ConnId),
    /// A worker for this tenant is needed.
    NeedWorker(Tenant),
    /// This worker is not needed any more: drain it.
    ReleaseWorker(WorkerId),
    /// How many of its scan threads the worker may run at once.
    Threads { worker: WorkerId, limit: u32 },
    /// How many bytes of stream memory the worker may hold.
    StreamGrant { worker: WorkerId, bytes: u64 },
    /// Run an administrative command for this connection's client (and
    /// tell its worker, which then replies).
    Admin {
        id: ConnId,
        worker: WorkerId,
        command: AdminCommand,
        identity: Arc<Identity>,
    },
    /// Run the VirusEvent command (budgeted per client by the executor).
    VirusEvent {
        id: ConnId,
        key: PeerKey,
        virus: String,
        target: Vec<u8>,
    },
    /// Ask these workers what their scan threads do (answered with
    /// `Report::TaskList`).
    QueryTasks { seq: u64, workers: Vec<WorkerId> },
    /// The whole daemon's tasks, for an administrator's STATS on `conn`.
    StatsTasks {
        worker: WorkerId,
        conn: ConnId,
        tasks: Vec<TaskInfo>,
        omitted: u32,
        pool: PoolCounts,
    },
    /// The worker broke a rule: end it.
    Violation { worker: WorkerId, why: String },
    /// Nothing has been open for `service.exit-when-idle`.
    IdleExit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Waiting for a worker of its tenant, since accept.
    Waiting,
    Worker(WorkerId),
}

#[derive(Debug, Clone)]
struct Conn {
    key: PeerKey,
    tenant: Tenant,
    listener: ListenerKind,
    name: Arc<str>,
    identity: Arc<Identity>,
    admin: bool,
    paths: bool,
    holder: Holder,
    accepted: Instant,
    /// Its worker reported a command.
    active: bool,
    /// Before its worker's report, the kernel said its client sent bytes:
    /// busy for admission, never closed as idle.
    spoke: bool,
    /// Closed by the gate, or its client left: no authority, and it no
    /// longer counts against any limit.
    revoked: bool,
    /// Since when (its worker must say `Closed` within `close_grace`).
    revoked_at: Option<Instant>,
    /// Its worker kept it past `close_grace`: it was told to end, and
    /// nothing it reports for the connection counts any more.
    overdue: bool,
    /// The daemon's own self-test (not a client: it keeps nothing awake
    /// and runs no VirusEvent command).
    selftest: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    Serving,
    Draining,
}

#[derive(Debug, Clone)]
struct Worker {
    tenant: Tenant,
    state: WState,
    /// Connections it holds (revoked ones included until they close).
    conns: usize,
    /// Live connections that sent a command.
    active: usize,
    /// Last time it held no connection (None while it holds some).
    idle_since: Option<Instant>,
    /// Last thread limit sent.
    threads: Option<u32>,
    /// Bound for an administrator's connection (it holds the slot kept
    /// for administrators).
    admin: bool,
    /// When it was last handed a connection.
    last_hand: Instant,
}

/// An administrator's STATS waiting for every worker's tasks.
#[derive(Debug, Clone)]
struct Query {
    worker: WorkerId,
    conn: ConnId,
    waiting: BTreeSet<WorkerId>,
    tasks: Vec<TaskInfo>,
    omitted: u32,
    pool: PoolCounts,
    asked: Instant,
}

/// How long an administrator's STATS waits for the workers' task lists
/// (the worker itself gives up at 200 ms and shows its own).
pub const TASKS_WITHIN: Duration = Duration::from_millis(150);

/// Beyond `limits.max-scan-time`, how long a worker may take to close a
/// revoked connection: an honest worker abandons a walk at its next entry
/// and a scan at libclamav's next callback, at worst when the scan's time
/// is up; a stream waits at most `streams::GRANT_WAIT` (2 s) for memory.
pub const CLOSE_MARGIN: Duration = Duration::from_secs(30);

/// How long a worker's connections must all have been idle (no command
/// yet) before the worker may be released for another tenant.
pub const IDLE_TO_RELEASE: Duration = Duration::from_secs(2);

/// How many of the `max-workers` slots are kept for administrators: one,
/// unless there is only one slot (then it is everyone's).
pub fn admins_slot(max_workers: usize) -> usize {
    usize::from(max_workers >= 2)
}

/// With `sandbox.isolation = "connection"`, the worker slots one client (a
/// [`PeerKey`]) may hold at once: half of those not kept for
/// administrators, at least one. Its further connections wait for one of
/// its own workers, so one client cannot take every slot.
pub fn client_worker_cap(max_workers: usize) -> usize {
    (max_workers.saturating_sub(admins_slot(max_workers)) / 2).max(1)
}

/// The machine. See the module documentation.
pub struct Gate {
    s: Settings,
    conns: BTreeMap<ConnId, Conn>,
    /// Ids below this were issued.
    next_id: ConnId,
    workers: BTreeMap<WorkerId, Worker>,
    /// Tenants a worker was asked for (and whether for an administrator).
    wanted: BTreeMap<Tenant, bool>,
    /// Tenants whose connections wait for a worker while every worker is
    /// taken (`max-workers`), in order of arrival.
    queued: VecDeque<Tenant>,
    /// Tenants with a client's connection now, or until when they count as
    /// active (the self-test's connections never make a tenant active).
    last_seen: BTreeMap<Tenant, Instant>,
    /// The self-test's open connections per tenant (at most one or two):
    /// in `per_tenant`, but not a client's, so not a reason for a share of
    /// the scan threads.
    selftests: BTreeMap<Tenant, usize>,
    /// Connections in the table per tenant (so that no event has to look
    /// at every connection: with 256 clients that was a visible share of
    /// the supervisor's time per connection).
    per_tenant: BTreeMap<Tenant, usize>,
    leases: Leases,
    stopping: bool,
    /// Administrators' STATS being answered, by query number.
    queries: BTreeMap<u64, Query>,
    next_query: u64,
    /// When the last connection closed (None while any is open, or before
    /// the first worker served).
    idle_since: Option<Instant>,
    exit_when_idle: Option<Duration>,
}

impl Gate {
    pub fn new(s: Settings, exit_when_idle: Option<Duration>) -> Gate {
        let leases = Leases::new(s.leases);
        Gate {
            s,
            conns: BTreeMap::new(),
            next_id: 1,
            workers: BTreeMap::new(),
            wanted: BTreeMap::new(),
            queued: VecDeque::new(),
            last_seen: BTreeMap::new(),
            selftests: BTreeMap::new(),
            per_tenant: BTreeMap::new(),
            leases,
            stopping: false,
            queries: BTreeMap::new(),
            next_query: 1,
            idle_since: None,
            exit_when_idle,
        }
    }

    /// No connection in the table (revoked ones count until they close).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections worker `w` holds.
    pub fn held_by(&self, w: WorkerId) -> usize {
        self.workers.get(&w).map_or(0, |x| x.conns)
    }

    /// Feeds one event; returns what to do, in order. No connection has
    /// been heard from but through its worker's reports.
    #[cfg(test)]
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.handle_hearing(event, now, &|_| false)
    }

    /// Feeds one event; returns what to do, in order. `heard(id)`: the
    /// kernel says the client of connection `id` has sent bytes (asked only
    /// of a connection about to be closed as idle; see
    /// `supervisor::spoke`).
    pub fn handle_hearing(
        &mut self,
        event: Event,
        now: Instant,
        heard: &dyn Fn(ConnId) -> bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Accepted {
                id,
                listener,
                name,
                identity,
                own_process,
            } => self.accepted(
                id,
                listener,
                name,
                identity,
                own_process,
                heard,
                now,
                &mut out,
            ),
            Event::WorkerUp { worker, tenant } => self.worker_up(worker, tenant, now, &mut out),
            Event::WorkerDraining(w) => {
                if let Some(x) = self.workers.get_mut(&w) {
                    x.state = WState::Draining;
                }
            }
            Event::WorkerGone(w) => self.worker_gone(w, now, &mut out),
            Event::Report(w, r) => self.report(w, r, now, &mut out),
            Event::HungUp(id) => self.hung_up(id, now, &mut out),
            Event::Undeliverable(id) => self.undeliverable(id, now, &mut out),
            Event::CannotHand(id) => {
                self.evict(id, Eviction::Undeliverable, now, &mut out);
                self.forget(id, now, &mut out);
            }
            Event::Stopping => {
                self.stopping = true;
                let waiting: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.holder == Holder::Waiting)
                    .map(|(id, _)| *id)
                    .collect();
                for id in waiting {
                    self.evict(id, Eviction::NoWorker, now, &mut out);
                    self.forget(id, now, &mut out);
                }
            }
            Event::Tick => self.tick(now, &mut out),
        }
        self.place_queued(now, &mut out);
        self.update_threads(now, &mut out);
        out
    }

    // ------------------------------------------------------------ arrivals

    #[allow(clippy::too_many_arguments)]
    fn accepted(
        &mut self,
        id: ConnId,
        listener: ListenerKind,
        name: Arc<str>,
        identity: Arc<Identity>,
        own_process: bool,
        heard: &dyn Fn(ConnId) -> bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.next_id = self.next_id.max(id + 1);
        let refuse = |why| Action::Refuse {
            id,
            identity: Arc::clone(&identity),
            listener,
            name: Arc::clone(&name),
            why,
        };
        let refusal = if self.stopping {
            Some(Refusal::Stopping)
        } else if own_process {
            Some(Refusal::OwnProcess)
        } else if matches!((&*identity, self.s.service_uid), (Identity::Unix { uid, .. }, Some(s)) if *uid == s)
        {
            Some(Refusal::ServiceUser)
        } else {
            None
        };
        if let Some(why) = refusal {
            out.push(refuse(why));
            return;
        }
        let key = PeerKey::of(&identity, self.s.prefixes);
        let admin = listener == ListenerKind::Unix && self.s.admins.admits(&identity);
        // The self-test (at most one every `selftest.interval`) is the
        // daemon's own: outside the clients' shares, never refused for them
        // nor closed to make room. Counted as a client, a flood that filled
        // the table closed it, failed the self-test and made the daemon
        // not ready: a load balancer would drain the node.
        let selftest = &*name == crate::ipc::observe::SELFTEST_LISTENER;
        let newcomer = Newcomer {
            key,
            listener,
            admin,
        };
        // A connection to be closed as idle is first asked about: if its
        // client has spoken, it is busy (its command is on its way to the
        // gate) and the decision is made again. Each round marks one more
        // connection as spoken or ends, so this ends.
        let evict = loop {
            if selftest {
                break Vec::new();
            }
            let open: Vec<Open> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.revoked && !c.selftest)
                .map(|(id, c)| Open {
                    id: *id,
                    key: c.key,
                    listener: c.listener,
                    admin: c.admin,
                    active: c.active || c.spoke,
                    accepted: c.accepted,
                })
                .collect();
            let evict = match admission::decide(self.s.caps, &open, newcomer) {
                Verdict::Refuse(limit) => {
                    out.push(refuse(Refusal::Limit(limit)));
                    return;
                }
                Verdict::Admit { evict } => evict,
            };
            let mut asked_again = false;
            for victim in &evict {
                if let Some(c) = self.conns.get_mut(victim) {
                    if !c.active && !c.spoke && heard(*victim) {
                        c.spoke = true;
                        asked_again = true;
                    }
                }
            }
            if !asked_again {
                break evict;
            }
        };
        for victim in evict {
            let busy = self.conns.get(&victim).is_some_and(|c| c.active || c.spoke);
            let why = if busy {
                Eviction::Surplus
            } else {
                Eviction::Room
            };
            self.evict(victim, why, now, out);
            if self
                .conns
                .get(&victim)
                .is_some_and(|c| c.holder == Holder::Waiting)
            {
                self.forget(victim, now, out);
            }
        }
        let tenant = match (self.s.isolation, &*identity) {
            // The self-test has a worker of its own, forked for it and
            // ended with it: on the remote clients' shared worker, a
            // compromised remote client's code could stall it and make the
            // whole node not ready (fifth review's third pass).
            _ if selftest => Tenant::Connection(id),
            (Isolation::Connection, _) => Tenant::Connection(id),
            (Isolation::Identity, Identity::Unix { uid, .. }) => Tenant::Uid(*uid),
            // A TCP client whose socket is on this host is its local user
            // (`local_peer`): that user's worker, never the one remote
            // clients share (the fifth outside review took that worker
            // through one local user's loopback stream and wrote into
            // another's loopback connection).
            (
                Isolation::Identity,
                Identity::Tcp {
                    local_uid: Some(uid),
                    ..
                },
            ) => Tenant::Uid(*uid),
            (Isolation::Identity, Identity::Tcp { .. }) => Tenant::Network,
        };
        let paths = self.profile(listener).allows_paths();
        if !selftest {
            out.push(Action::Admitted {
                name: Arc::clone(&name),
            });
        }
        self.conns.insert(
            id,
            Conn {
                key,
                tenant,
                listener,
                name,
                identity,
                admin,
                paths,
                holder: Holder::Waiting,
                accepted: now,
                active: false,
                spoke: false,
                revoked: false,
                revoked_at: None,
                overdue: false,
                selftest,
            },
        );
        *self.per_tenant.entry(tenant).or_insert(0) += 1;
        if selftest {
            *self.selftests.entry(tenant).or_insert(0) += 1;
        } else {
            self.idle_since = None;
            self.last_seen.insert(tenant, now);
        }
        self.place(id, now, out);
    }

    fn profile(&self, kind: ListenerKind) -> &Profile {
        match kind {
            ListenerKind::Unix => &self.s.unix,
            ListenerKind::Tcp => &self.s.tcp,
        }
    }

    /// Hands a waiting connection to a serving worker of its tenant, or
    /// asks for one.
    fn place(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get(&id) else { return };
        if c.holder != Holder::Waiting || c.revoked {
            return;
        }
        let (tenant, admin) = (c.tenant, c.admin);
        let best = self
            .workers
            .iter()
            .filter(|(_, w)| w.tenant == tenant && w.state == WState::Serving)
            .min_by_key(|(id, w)| (w.active, w.conns, **id))
            .map(|(id, _)| *id);
        match best {
            Some(w) => self.hand(id, w, now, out),
            None => self.want(tenant, admin, now, out),
        }
    }

    fn hand(&mut self, id: ConnId, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.holder = Holder::Worker(w);
        let peer = match &*c.identity {
            Identity::Unix { uid, gid, pid, .. } => PeerInfo::Unix {
                uid: *uid,
                gid: *gid,
                pid: *pid,
            },
            Identity::Tcp { addr, .. } => PeerInfo::Tcp(*addr),
        };
        let info = ConnInfo {
            id,
            listener: c.listener,
            listener_name: c.name.to_string(),
            peer,
            admin: c.admin,
            key: c.key,
        };
        let (identity, paths) = (Arc::clone(&c.identity), c.paths);
        if let Some(x) = self.workers.get_mut(&w) {
            x.conns += 1;
            x.idle_since = None;
            x.last_hand = now;
        }
        out.push(Action::Hand {
            id,
            worker: w,
            info,
            identity,
            paths,
        });
    }

    /// Asks for a worker for `tenant`, within `max-workers`: a worker is
    /// released to make room if one may be ([`Gate::releasable`]); if none
    /// may, the tenant queues until one is.
    fn want(&mut self, tenant: Tenant, admin: bool, now: Instant, out: &mut Vec<Action>) {
        if self.wanted.contains_key(&tenant) || self.queued.contains(&tenant) || self.stopping {
            return;
        }
        if self.over_client_workers(tenant) || !self.make_room(admin, now, out) {
            self.queued.push_back(tenant);
            return;
        }
        self.wanted.insert(tenant, admin);
        out.push(Action::NeedWorker(tenant));
    }

    /// With a worker per connection, does the tenant's client hold its
    /// share of worker slots already ([`client_worker_cap`]; its
    /// connection waits until one of its own ends)? Administrators have no
    /// such share: they have a slot kept for them.
    fn over_client_workers(&self, tenant: Tenant) -> bool {
        let Tenant::Connection(id) = tenant else {
            return false;
        };
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        if c.admin {
            return false;
        }
        let key = c.key;
        let of_client = |t: &Tenant| match t {
            Tenant::Connection(x) => self.conns.get(x).is_some_and(|o| o.key == key),
            _ => false,
        };
        let held = self
            .workers
            .values()
            .filter(|w| w.state == WState::Serving && of_client(&w.tenant))
            .count()
            + self.wanted.keys().filter(|t| of_client(t)).count();
        held >= client_worker_cap(self.s.max_workers)
    }

    /// Tenants that have a serving worker or asked for one.
    fn bound_tenants(&self) -> usize {
        let mut t: BTreeSet<Tenant> = self
            .workers
            .values()
            .filter(|w| w.state == WState::Serving)
            .map(|w| w.tenant)
            .collect();
        t.extend(self.wanted.keys().copied());
        t.len()
    }

    /// May a tenant (an administrator's, if `admin`) get a worker now? The
    /// slot kept for administrators is free for them only, unless an
    /// administrator's tenant holds a slot already.
    fn has_room(&self, admin: bool) -> bool {
        let kept = if admin
            || self.wanted.values().any(|a| *a)
            || self
                .workers
                .values()
                .any(|w| w.admin && w.state == WState::Serving)
        {
            0
        } else {
            admins_slot(self.s.max_workers)
        };
        self.bound_tenants() + kept < self.s.max_workers
    }

    /// Room for one more tenant, releasing a worker if one may be.
    fn make_room(&mut self, admin: bool, now: Instant, out: &mut Vec<Action>) -> bool {
        if self.has_room(admin) {
            return true;
        }
        match self.releasable(admin, now) {
            Some(w) => {
                self.release_for_room(w, now, out);
                self.has_room(admin)
            }
            None => false,
        }
    }

    /// The serving worker to release for another tenant: one with no
    /// connection, idle the longest; else one whose connections all wait
    /// for their first command (live ones; revoked ones are closing), the
    /// one handed a connection the longest ago, at least [`IDLE_TO_RELEASE`]
    /// ago (a client that just connected is still sending its command). An
    /// administrator's worker with connections is released only for
    /// another administrator; a worker with a connection that sent a
    /// command, never.
    fn releasable(&self, admin: bool, now: Instant) -> Option<WorkerId> {
        let serving = || {
            self.workers
                .iter()
                .filter(|(_, w)| w.state == WState::Serving)
        };
        if let Some((id, _)) = serving()
            .filter(|(_, w)| w.conns == 0)
            .min_by_key(|(id, w)| (w.idle_since, **id))
        {
            return Some(*id);
        }
        serving()
            .filter(|(_, w)| {
                w.active == 0
                    && (admin || !w.admin)
                    && now.saturating_duration_since(w.last_hand) >= IDLE_TO_RELEASE
            })
            .min_by_key(|(id, w)| (w.last_hand, **id))
            .map(|(id, _)| *id)
    }

    /// Releases a worker to make room, closing its idle connections (their
    /// clients find a worker again when they come back, as after clamd's
    /// idle timeout).
    fn release_for_room(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        self.release(w, out);
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.holder == Holder::Worker(w) && !c.revoked)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.evict(id, Eviction::Room, now, out);
        }
    }

    fn release(&mut self, w: WorkerId, out: &mut Vec<Action>) {
        if let Some(x) = self.workers.get_mut(&w) {
            if x.state == WState::Serving {
                x.state = WState::Draining;
                out.push(Action::ReleaseWorker(w));
            }
        }
    }

    /// Tenants that queued for a worker get one when there is room, in
    /// order of arrival; an administrator's never waits behind others'.
    fn place_queued(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.queued.is_empty() {
            return;
        }
        let mut others_blocked = false;
        let mut i = 0;
        while i < self.queued.len() {
            let t = self.queued[i];
            let (mut waiting, mut admin) = (false, false);
            for c in self.conns.values() {
                if c.tenant == t && c.holder == Holder::Waiting && !c.revoked {
                    waiting = true;
                    admin |= c.admin;
                }
            }
            if !waiting {
                self.queued.remove(i);
                continue;
            }
            // A client at its own share of workers waits for one of its
            // own, without holding up anybody else.
            if self.over_client_workers(t) {
                i += 1;
                continue;
            }
            if (others_blocked && !admin) || !self.make_room(admin, now, out) {
                others_blocked |= !admin;
                i += 1;
                continue;
            }
            self.queued.remove(i);
            self.wanted.insert(t, admin);
            out.push(Action::NeedWorker(t));
        }
    }

    // ------------------------------------------------------------ workers

    fn worker_up(&mut self, w: WorkerId, tenant: Tenant, now: Instant, out: &mut Vec<Action>) {
        let admin = self.wanted.remove(&tenant).unwrap_or_else(|| {
            self.conns
                .values()
                .any(|c| c.tenant == tenant && c.admin && !c.revoked)
        });
        self.workers.insert(
            w,
            Worker {
                tenant,
                state: WState::Serving,
                conns: 0,
                active: 0,
                idle_since: Some(now),
                threads: None,
                admin,
                last_hand: now,
            },
        );
        if let Some(bytes) = self.leases.join(w, tenant) {
            out.push(Action::StreamGrant { worker: w, bytes });
        }
        let waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.tenant == tenant && c.holder == Holder::Waiting && !c.revoked)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.hand(id, w, now, out);
        }
    }

    /// A hand-off failed. The connection waits for another worker; its
    /// worker, whose channel took nothing (it died, or it stopped reading
    /// its channel: wedged or hostile), is released at once (drained, then
    /// ended by the lifecycle's drain deadline), so its tenant gets a new
    /// one instead of waiting for the old one's end.
    fn undeliverable(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Holder::Worker(w) = c.holder else {
            return;
        };
        if c.revoked || self.stopping {
            self.evict(id, Eviction::Undeliverable, now, out);
            self.forget(id, now, out);
            return;
        }
        c.holder = Holder::Waiting;
        if let Some(x) = self.workers.get_mut(&w) {
            x.conns = x.conns.saturating_sub(1);
        }
        self.release(w, out);
        out.push(Action::Retract(id));
        self.place(id, now, out);
    }

    fn worker_gone(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.remove(&w) else {
            return;
        };
        for q in self.queries.values_mut() {
            q.waiting.remove(&w);
        }
        self.answer_queries(now, out);
        let held: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.holder == Holder::Worker(w))
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.evict(id, Eviction::WorkerGone, now, out);
            self.forget(id, now, out);
        }
        for (worker, bytes) in self.leases.leave(w) {
            out.push(Action::StreamGrant { worker, bytes });
        }
        // Connections of its tenant still waiting (it died before taking
        // them) need another worker.
        let waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.tenant == worker.tenant && c.holder == Holder::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.place(id, now, out);
        }
    }

    /// The connection if worker `w` holds it; a violation otherwise.
    fn owned(&self, w: WorkerId, id: ConnId, what: &str) -> Result<&Conn, String> {
        match self.conns.get(&id) {
            Some(c) if c.holder == Holder::Worker(w) => Ok(c),
            Some(_) => Err(format!("{what} for another worker's connection (id {id})")),
            None if id == 0 || id >= self.next_id => Err(format!(
                "{what} for a connection id that was never issued ({id})"
            )),
            None => Err(format!("{what} for a finished connection (id {id})")),
        }
    }

    fn report(&mut self, w: WorkerId, r: Report, now: Instant, out: &mut Vec<Action>) {
        if !self.workers.contains_key(&w) {
            return;
        }
        let violation = |why: String| Action::Violation { worker: w, why };
        match r {
            Report::Active(id) => match self.owned(w, id, "Active") {
                Ok(c) => {
                    if !c.active && !c.revoked {
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.active = true;
                        }
                        if let Some(x) = self.workers.get_mut(&w) {
                            x.active += 1;
                        }
                    }
                }
                Err(why) => out.push(violation(why)),
            },
            Report::Closed(id) => match self.owned(w, id, "Closed") {
                Ok(_) => self.forget(id, now, out),
                Err(why) => out.push(violation(why)),
            },
            Report::Found {
                conn,
                virus,
                target,
            } => match self.owned(w, conn, "Found") {
                // The daemon's own EICAR is no client's detection; a
                // connection kept past its close grace reports nothing.
                Ok(c) if c.selftest || c.overdue => {}
                // A detection stays one after the client left: its
                // command still runs.
                Ok(c) => out.push(Action::VirusEvent {
                    id: conn,
                    key: c.key,
                    virus,
                    target,
                }),
                Err(why) => out.push(violation(why)),
            },
            Report::Admin { conn, command } => {
                match self.owned(w, conn, "an administrative command") {
                    Ok(c) if c.revoked => {
                        // The client left before its worker asked: nothing runs.
                    }
                    Ok(c) => {
                        if admin_allowed(self.profile(c.listener), command, c.admin) {
                            out.push(Action::Admin {
                                id: conn,
                                worker: w,
                                command,
                                identity: Arc::clone(&c.identity),
                            });
                        } else {
                            out.push(violation(format!(
                                "{command:?} for connection {conn} ({}), which may not",
                                c.identity
                            )));
                        }
                    }
                    Err(why) => out.push(violation(why)),
                }
            }
            Report::StreamWant(bytes) => {
                for (worker, bytes) in self.leases.want(w, bytes) {
                    out.push(Action::StreamGrant { worker, bytes });
                }
            }
            Report::StatsTasks { conn } => match self.owned(w, conn, "StatsTasks") {
                // Every client's file names: only for an administrator
                // (an honest worker asks only then).
                Ok(c) if c.admin => {
                    if !c.revoked {
                        self.query_tasks(w, conn, now, out);
                    }
                }
                Ok(c) => out.push(violation(format!(
                    "StatsTasks for connection {conn} ({}), which is not an administrator's",
                    c.identity
                ))),
                Err(why) => out.push(violation(why)),
            },
            Report::TaskList {
                seq,
                tasks,
                omitted,
                pool,
            } => {
                if seq == 0 || seq >= self.next_query {
                    out.push(violation(format!("TaskList for query {seq}, never asked")));
                    return;
                }
                // A late answer (the query is over) is dropped.
                if let Some(q) = self.queries.get_mut(&seq) {
                    if q.waiting.remove(&w) {
                        q.tasks.extend(tasks);
                        q.omitted = q.omitted.saturating_add(omitted);
                        q.pool = q.pool.plus(pool);
                    }
                }
                self.answer_queries(now, out);
            }
        }
    }

    fn query_tasks(&mut self, w: WorkerId, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        let seq = self.next_query;
        self.next_query += 1;
        let workers: Vec<WorkerId> = self.workers.keys().copied().collect();
        self.queries.insert(
            seq,
            Query {
                worker: w,
                conn,
                waiting: workers.iter().copied().collect(),
                tasks: Vec::new(),
                omitted: 0,
                pool: PoolCounts::default(),
                asked: now,
            },
        );
        out.push(Action::QueryTasks { seq, workers });
    }

    /// Answers the queries every worker answered, or whose time is up.
    fn answer_queries(&mut self, now: Instant, out: &mut Vec<Action>) {
        let done: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, q)| {
                q.waiting.is_empty() || now.saturating_duration_since(q.asked) >= TASKS_WITHIN
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            let Some(q) = self.queries.remove(&seq) else {
                continue;
            };
            if !self.workers.contains_key(&q.worker) {
                continue;
            }
            let (tasks, cut) = fit_tasks(q.tasks, TASK_LIST_ROOM);
            out.push(Action::StatsTasks {
                worker: q.worker,
                conn: q.conn,
                tasks,
                omitted: q.omitted.saturating_add(cut),
                pool: q.pool,
            });
        }
    }

    // ------------------------------------------------------------ ends

    fn hung_up(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.revoked {
            return;
        }
        let waiting = c.holder == Holder::Waiting;
        self.revoke(id, now);
        out.push(Action::Revoke(id));
        if waiting {
            self.forget(id, now, out);
        }
    }

    /// Marks a connection revoked and takes it off its worker's active count.
    fn revoke(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.revoked {
            return;
        }
        c.revoked = true;
        c.revoked_at = Some(now);
        if let (Holder::Worker(w), true) = (c.holder, c.active) {
            if let Some(x) = self.workers.get_mut(&w) {
                x.active = x.active.saturating_sub(1);
            }
        }
    }

    fn evict(&mut self, id: ConnId, why: Eviction, now: Instant, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get(&id) else { return };
        if c.revoked && why != Eviction::WorkerGone {
            return;
        }
        let (key, identity, name) = (c.key, Arc::clone(&c.identity), Arc::clone(&c.name));
        self.revoke(id, now);
        out.push(Action::Evict {
            id,
            key,
            identity,
            name,
            why,
        });
    }

    fn forget(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) {
        self.revoke(id, now);
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        out.push(Action::Forget(id));
        if let Holder::Worker(w) = c.holder {
            if let Some(x) = self.workers.get_mut(&w) {
                x.conns = x.conns.saturating_sub(1);
                if x.conns == 0 {
                    x.idle_since = Some(now);
                }
            }
        }
        let last = match self.per_tenant.get_mut(&c.tenant) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        if last {
            self.per_tenant.remove(&c.tenant);
        }
        if c.selftest {
            if let Some(n) = self.selftests.get_mut(&c.tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.selftests.remove(&c.tenant);
                }
            }
        } else {
            self.last_seen.insert(c.tenant, now);
        }
        // The self-test's own connections neither start nor restart the
        // idle clock: only a client's last goodbye does.
        if !c.selftest && self.conns.values().all(|c| c.selftest) {
            self.idle_since = Some(now);
        }
        // One worker per connection: it goes with it.
        if let (Tenant::Connection(_), Holder::Worker(w)) = (c.tenant, c.holder) {
            self.release(w, out);
        }
    }

    // ------------------------------------------------------------ time

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.answer_queries(now, out);
        let mut late: Vec<(ConnId, Eviction)> = Vec::new();
        for (id, c) in &self.conns {
            let age = now.saturating_duration_since(c.accepted);
            if c.holder == Holder::Waiting && age >= self.s.wait_for_worker {
                late.push((*id, Eviction::NoWorker));
            } else if age >= self.s.lifetime && !c.revoked {
                late.push((*id, Eviction::Lifetime));
            }
        }
        for (id, why) in late {
            let waiting = self
                .conns
                .get(&id)
                .is_some_and(|c| c.holder == Holder::Waiting);
            self.evict(id, why, now, out);
            if waiting {
                self.forget(id, now, out);
            }
        }
        self.overdue_closes(now, out);
        let idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.state == WState::Serving
                    && w.idle_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= self.s.idle_worker)
            })
            .map(|(id, _)| *id)
            .collect();
        for w in idle {
            self.release(w, out);
        }
        let linger = self.s.active_linger;
        let clients = self.clients_per_tenant();
        self.last_seen
            .retain(|t, seen| clients.contains(t) || now.saturating_duration_since(*seen) < linger);
        if let (Some(after), Some(since)) = (self.exit_when_idle, self.idle_since) {
            if !self.stopping && now.saturating_duration_since(since) >= after {
                self.idle_since = Some(now);
                out.push(Action::IdleExit);
            }
        }
    }

    /// Workers that hold a revoked connection past `close_grace` without
    /// saying `Closed` broke a rule: they are ended (once each), and what
    /// they report for such a connection no longer counts.
    fn overdue_closes(&mut self, now: Instant, out: &mut Vec<Action>) {
        let grace = self.s.close_grace;
        let mut ended: BTreeSet<WorkerId> = BTreeSet::new();
        for (id, c) in self.conns.iter_mut() {
            let (Holder::Worker(w), Some(at), false) = (c.holder, c.revoked_at, c.overdue) else {
                continue;
            };
            if now.saturating_duration_since(at) < grace {
                continue;
            }
            c.overdue = true;
            if ended.insert(w) {
                out.push(Action::Violation {
                    worker: w,
                    why: format!(
                        "kept connection {id} ({}) for {} s after it was revoked without closing it \
                         (bound: limits.max-scan-time + {} s)",
                        c.identity,
                        grace.as_secs(),
                        CLOSE_MARGIN.as_secs()
                    ),
                });
            }
        }
    }

    /// Tenants with a client's connection open now.
    fn clients_per_tenant(&self) -> BTreeSet<Tenant> {
        self.per_tenant
            .iter()
            .filter(|(t, n)| **n > self.selftests.get(t).copied().unwrap_or(0))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Splits the scan threads between the tenants that have a client's
    /// connection (or had one within `active_linger`), and tells each
    /// serving worker whose limit changed. The self-test's connection is
    /// not a client's: it scans a few bytes every `selftest.interval`, and
    /// counted as a tenant it halved a busy client's threads for
    /// `active_linger` after each run (the latency benchmark at 16 clients
    /// ran on one of two threads).
    fn update_threads(&mut self, now: Instant, out: &mut Vec<Action>) {
        let _ = now;
        let mut active: BTreeSet<Tenant> = self.last_seen.keys().copied().collect();
        active.extend(self.clients_per_tenant());
        let limits = shares::split_threads(self.s.max_threads, &active);
        for (id, w) in self.workers.iter_mut() {
            if w.state != WState::Serving {
                continue;
            }
            let limit = limits
                .get(&w.tenant)
                .copied()
                .unwrap_or_else(|| shares::idle_threads(self.s.max_threads, active.len()));
            if w.threads != Some(limit) {
                w.threads = Some(limit);
                out.push(Action::Threads { worker: *id, limit });
            }
        }
    }

    /// The client identity of connection `id`, if it is open.
    pub fn key_of(&self, id: ConnId) -> Option<PeerKey> {
        self.conns.get(&id).map(|c| c.key)
    }

    /// Open connections per listener name (the metrics).
    pub fn open_by_listener(&self) -> Vec<(String, u32)> {
        let mut out: BTreeMap<&str, u32> = BTreeMap::new();
        for c in self.conns.values().filter(|c| !c.revoked) {
            *out.entry(&c.name).or_default() += 1;
        }
        out.into_iter().map(|(n, k)| (n.to_string(), k)).collect()
    }

    /// What the unit tests check the table by.
    #[cfg(test)]
    pub fn counts(&self) -> Counts {
        Counts {
            open: self.conns.values().filter(|c| !c.revoked).count(),
            waiting: self
                .conns
                .values()
                .filter(|c| c.holder == Holder::Waiting)
                .count(),
            tenants: self
                .workers
                .values()
                .filter(|w| w.state == WState::Serving)
                .count(),
        }
    }
}

/// Numbers about the table (for the unit tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub open: usize,
    pub waiting: usize,
    pub tenants: usize,
}

/// May this client run this administrative command on this listener? An
/// honest worker refuses what is not allowed itself, so a request that is
/// not allowed is a violation. SHUTDOWN stands for QUIT too; MAINT is for
/// administrators on a Unix socket (`Profile::decide`).
fn admin_allowed(profile: &Profile, command: AdminCommand, admin: bool) -> bool {
    let word = match command {
        AdminCommand::Reload => CommandKind::Reload,
        AdminCommand::Shutdown => CommandKind::Shutdown,
        AdminCommand::Maintenance(_) => CommandKind::Maint,
    };
    profile.decide(word, admin) == Decision::Allow
        || (command == AdminCommand::Shutdown
            && profile.decide(CommandKind::Quit, admin) == Decision::Allow)
}

#[cfg(test)]
mod tests;
