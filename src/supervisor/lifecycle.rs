//! The supervisor's decisions about its processes, as a state machine:
//! events in, actions out, no processes, sockets or clocks of its own — the
//! executor (`supervisor::run`) turns actions into system calls, and the
//! unit tests below drive it with invented events and times.
//!
//! Processes:
//! * **generations**: each engine load is a generation with its own engine
//!   holder (zygote). `current` is the ready generation new workers fork
//!   from; at most one more is `loading` (a reload, or a zygote replacing
//!   one that died). At most two generations have workers: when a third
//!   becomes ready, the workers of the oldest are ended, so a client that
//!   keeps an old worker busy cannot pin old engines in memory.
//! * **workers**: each worker is bound to one client identity, its
//!   [`Tenant`] (the connection gate decides which tenant needs one,
//!   [`Event::Want`]). `limits.standby-workers` workers are forked ahead of
//!   need, unbound, and the next tenant that needs one gets a standby
//!   worker at once ([`Action::Bound`]); a fork replaces it in the standby
//!   pool. A worker is never bound twice: once it held one client's
//!   connections, it may have been compromised by that client.
//! * **crashes**: a crashed worker is not replaced by itself (its tenant's
//!   next connection asks for a worker, and a standby one is ready); forks
//!   that fail or die young back off, so a worker that cannot start does
//!   not become a fork loop.
//! * **reload** (blue/green): a new zygote loads while the old workers
//!   serve; once it is ready, every bound worker of the old generation gets
//!   a replacement for the same tenant, and drains as soon as it serves.
//!   A generation that fails to load changes nothing. Before a reload
//!   loads a second engine, the machine asks for a memory reading
//!   ([`Action::MeasureMemory`]) and decides with
//!   [`super::headroom::decide`]: without headroom the reload waits (the
//!   old engine serves, [`Note::ReloadDeferred`]) and is tried again after
//!   `limits.reload-retry`, doubling up to 16 times that.
//! * **deadlines in every state**: a fork that never says hello, a serving
//!   or draining worker that stops answering pings ([`WEDGED_AFTER`]), a
//!   draining worker that has not finished within `limits.drain-timeout`,
//!   a retired zygote that does not exit, and on stop the whole daemon
//!   after `limits.drain-timeout`: each is ended, whatever it does.
//! * **stop** in two steps: first the accept loops close (the executor
//!   stops accepting; under socket activation systemd keeps the listening
//!   socket, so new connections wait for the next start), while the
//!   workers keep serving what was already accepted, PROXY headers still
//!   being read included; once the executor says nothing accepted is left
//!   in flight ([`Event::AcceptStopped`], at most [`ACCEPT_FLUSH`] later),
//!   every worker drains. So a connection the kernel completed before the
//!   stop is served, not closed unanswered.
//!
//! Which message may arrive in which state ([`worker_message_allowed`],
//! [`zygote_message_allowed`]); anything else ends the process that sent it:
//!
//! | worker state | Hello | Pong, Counters | Active, Closed, Found | Admin | Retire | StreamWant, StatsTasks, TaskList |
//! |---|---|---|---|---|---|---|
//! | forking (no Hello yet) | yes | — | — | — | — | — |
//! | serving | — | yes | yes | yes | yes | yes |
//! | draining | — | yes | yes | yes | yes (nothing to do) | yes |
//!
//! | zygote state | Progress | Ready | LoadFailed | ForkFailed, Usage |
//! |---|---|---|---|---|
//! | loading | yes | yes | yes | — |
//! | ready | — | — | — | yes |
//! | retiring | — | — | — | yes |
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::gate::Tenant;
use super::headroom::{self, Shortfall};
use super::procs::Ended;
use crate::engine::LoadProgress;
use crate::ipc::messages::{EngineReady, Fleet, RetireReason};
use crate::ipc::observe::{ReloadTrigger, RestartReason, WorkerStates};

pub type GenId = u64;
pub type WorkerId = u64;

/// Time between pings of one worker.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Draining workers one client may have at once because they said they
/// retire; a further one that says so is ended at once.
pub const MAX_DRAINING_PER_TENANT: usize = 2;

/// A serving or draining worker that has not answered for this long is
/// killed.
pub const WEDGED_AFTER: Duration = Duration::from_secs(30);
/// A worker that served this long before it died was not a failed start:
/// forks after it go on at once. Only workers that die younger (a worker
/// that cannot start, typically) make the next fork wait longer each time.
pub const STABLE_AFTER: Duration = Duration::from_secs(1);
/// A fork that has not said hello after this long has failed.
pub const FORK_TIMEOUT: Duration = Duration::from_secs(15);
/// A retired zygote that has not exited after this long is killed.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a fork while no worker serves at all.
pub const EMPTY_FLEET_RETRY: Duration = Duration::from_millis(250);
/// Longest back-off between failing forks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// On stop, the longest wait for the connections accepted before it to
/// reach the gate (PROXY headers being read: `listen.proxy-timeout`)
/// before the workers drain anyway.
pub const ACCEPT_FLUSH: Duration = Duration::from_secs(10);

/// What the machine is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Unbound workers kept ready (`limits.standby-workers`).
    pub standby: usize,
    /// How long a draining worker may take (`limits.drain-timeout`).
    pub drain_timeout: Duration,
    /// Workers there may be, for the status line and STATS.
    pub max_workers: usize,
    /// The memory check before a reload (`limits.reload-memory-check`);
    /// None: reloads start at once.
    pub memory: Option<MemoryCheck>,
}

/// `limits.reload-headroom` and `limits.reload-retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCheck {
    /// Bytes beyond the current engine's load peak.
    pub headroom: u64,
    /// First wait before a deferred reload is tried again.
    pub retry: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Zygote(GenId),
    Worker(WorkerId),
}

/// Worker messages, by kind (see the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMsg {
    Hello,
    Pong,
    /// What the worker counted (`FromWorker::Counters`).
    Counters,
    Conn,
    Admin,
    Retire,
    /// Stream memory and task lists (`StreamWant`, `StatsTasks`, `TaskList`).
    Share,
}

/// Zygote messages, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZygoteMsg {
    Progress,
    Ready,
    LoadFailed,
    ForkFailed,
    /// Its memory, CPU time and descriptors (`FromZygote::Usage`).
    Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The supervisor starts: load the first generation.
    Start,
    ZygoteProgress(GenId, LoadProgress),
    ZygoteReady(GenId, EngineReady),
    ZygoteFailed(GenId, String),
    ForkFailed(GenId, WorkerId, String),
    ZygoteExited(GenId, Ended),
    /// The worker's first message arrived, from a verified child.
    WorkerHello(WorkerId),
    WorkerPong {
        worker: WorkerId,
        scans: u64,
        found: u64,
        errors: u64,
        healthy: bool,
    },
    WorkerExited(WorkerId, Ended),
    /// The worker's control channel closed. Before its hello this is the
    /// only word of a worker that died starting (its pid is not known
    /// yet); after, its exit says more and this is ignored.
    WorkerChannelClosed(WorkerId),
    /// The worker asks to be replaced (its temporary directory failed, or
    /// a scan ran past its time limit); it drains itself.
    WorkerRetire(WorkerId, RetireReason),
    /// A worker for this tenant is needed (from the gate).
    Want(Tenant),
    /// The gate does not need this worker any more.
    Release(WorkerId),
    /// The process broke a rule; `why` goes to the log.
    Violation(Who, String),
    /// The memory figures [`Action::MeasureMemory`] asked for.
    Memory(headroom::Reading),
    Reload(&'static str),
    Stop(&'static str),
    /// After a stop: the accept loops are closed and every connection they
    /// accepted has reached the gate.
    AcceptStopped,
    Tick,
}

/// What systemd's status line and the log hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Progress(LoadProgress),
    Ready {
        signatures: u32,
        db_version: u32,
        sandbox: String,
    },
    /// A reload starts (what asked for it).
    Reloading(ReloadTrigger),
    /// An engine holder finished loading (how long it took).
    EngineLoaded(Duration),
    /// A worker is replaced, and why.
    WorkerReplaced(RestartReason),
    Reloaded {
        ok: bool,
        signatures: u32,
        db_version: u32,
    },
    Stopping,
    /// A reload waits for memory headroom; tried again after the duration.
    ReloadDeferred(Shortfall, Duration),
    Alive {
        scans: u64,
        found: u64,
        healthy: bool,
    },
    Fleet(Fleet),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SpawnZygote(GenId),
    Fork {
        gen: GenId,
        worker: WorkerId,
    },
    /// Ask the zygote to exit (its workers live on).
    RetireZygote(GenId),
    KillZygote(GenId),
    /// The worker serves this tenant from now on.
    Bound {
        worker: WorkerId,
        tenant: Tenant,
    },
    /// Tell the worker to take no new connection and finish.
    Drain(WorkerId),
    /// SIGKILL and revoke its channels and connections at once.
    Kill(WorkerId),
    /// The worker is gone: revoke its channels, connections and directory.
    Forget(WorkerId),
    Ping(WorkerId, u64),
    /// Read the memory figures (`headroom::read`) and feed
    /// [`Event::Memory`].
    MeasureMemory,
    Notify(Note),
    Exit(Result<(), String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenState {
    Loading,
    Ready,
    Retiring,
    Failed,
}

#[derive(Debug, Clone)]
struct Gen {
    state: GenState,
    since: Instant,
    ready: Option<EngineReady>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    Forking,
    Serving,
    Draining,
}

#[derive(Debug, Clone)]
struct Worker {
    gen: GenId,
    /// None: a standby worker, bound to nobody yet.
    tenant: Option<Tenant>,
    state: WState,
    since: Instant,
    last_pong: Instant,
    last_ping: Instant,
    counters: (u64, u64, u64),
    healthy: bool,
    /// When it was sent SIGKILL (again every [`PING_EVERY`] until it exits).
    killed: Option<Instant>,
    /// Why the machine ended it, when it did (its exit is not a crash).
    ended_by: Option<RestartReason>,
}

/// The state machine. See the module documentation.
pub struct Machine {
    s: Settings,
    gens: BTreeMap<GenId, Gen>,
    current: Option<GenId>,
    loading: Option<GenId>,
    /// The generation whose workers are replacing an older one's.
    reloading: Option<GenId>,
    workers: BTreeMap<WorkerId, Worker>,
    /// Tenants waiting for a fork (after a back-off).
    wants: BTreeSet<Tenant>,
    next_gen: GenId,
    next_worker: WorkerId,
    ping_seq: u64,
    stopping: Option<Instant>,
    /// Stopping, and the workers are not draining yet: connections
    /// accepted before the stop are still on their way.
    closing: bool,
    ever_ready: bool,
    zygote_failures: u32,
    zygote_retry_at: Option<Instant>,
    /// Forks in a row that failed or died young, and when the next may go.
    fork_failures: u32,
    fork_retry_at: Option<Instant>,
    crashes: u64,
    /// When each tenant's worker last crashed, until it has a new one.
    crashed: BTreeMap<Tenant, Instant>,
    last_replacement: Option<Duration>,
    /// Counters of workers that are gone (scans, found, errors).
    retired: (u64, u64, u64),
    /// A reload waiting for the memory reading it asked for (its trigger).
    measuring: Option<&'static str>,
    /// A reload deferred for lack of memory headroom.
    deferred: Option<Deferred>,
}

/// A reload that waits for memory headroom.
#[derive(Debug, Clone)]
struct Deferred {
    trigger: &'static str,
    since: Instant,
    retry_at: Instant,
    /// Readings that found too little, after the first.
    attempts: u32,
    shortfall: Shortfall,
}

fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(50u64 << (n - 2).min(10)).min(MAX_BACKOFF),
    }
}

/// Is a message of kind `m` allowed from a worker in state `s`?
fn worker_message_allowed(s: WState, m: WorkerMsg) -> bool {
    matches!(
        (s, m),
        (WState::Forking, WorkerMsg::Hello)
            | (WState::Serving | WState::Draining, WorkerMsg::Pong)
            | (WState::Serving | WState::Draining, WorkerMsg::Counters)
            | (WState::Serving | WState::Draining, WorkerMsg::Conn)
            | (WState::Serving | WState::Draining, WorkerMsg::Admin)
            // A worker may ask to retire at the moment it is told to drain.
            | (WState::Serving | WState::Draining, WorkerMsg::Retire)
            | (WState::Serving | WState::Draining, WorkerMsg::Share)
    )
}

/// Is a message of kind `m` allowed from a zygote in state `s`?
fn zygote_message_allowed(s: GenState, m: ZygoteMsg) -> bool {
    matches!(
        (s, m),
        (GenState::Loading, ZygoteMsg::Progress)
            | (GenState::Loading, ZygoteMsg::Ready)
            | (GenState::Loading, ZygoteMsg::LoadFailed)
            | (GenState::Ready | GenState::Retiring, ZygoteMsg::ForkFailed)
            | (GenState::Ready | GenState::Retiring, ZygoteMsg::Usage)
    )
}

impl Machine {
    pub fn new(s: Settings) -> Machine {
        Machine {
            s,
            gens: BTreeMap::new(),
            current: None,
            loading: None,
            reloading: None,
            workers: BTreeMap::new(),
            wants: BTreeSet::new(),
            next_gen: 1,
            next_worker: 1,
            ping_seq: 0,
            stopping: None,
            closing: false,
            ever_ready: false,
            zygote_failures: 0,
            zygote_retry_at: None,
            fork_failures: 0,
            fork_retry_at: None,
            crashes: 0,
            crashed: BTreeMap::new(),
            last_replacement: None,
            retired: (0, 0, 0),
            measuring: None,
            deferred: None,
        }
    }

    /// Why a reload waits for memory headroom, while one does (the
    /// agent's `drain`, the status line).
    pub fn reload_deferred(&self) -> Option<&Shortfall> {
        self.deferred.as_ref().map(|d| &d.shortfall)
    }

    /// May this worker send a message of this kind now? `Err` explains a
    /// violation (the caller then feeds [`Event::Violation`]).
    pub fn check_worker(&self, w: WorkerId, m: WorkerMsg) -> Result<(), String> {
        match self.workers.get(&w) {
            Some(worker) if worker_message_allowed(worker.state, m) => Ok(()),
            Some(worker) => Err(format!("{m:?} message while {:?}", worker.state)),
            None => Err(format!("{m:?} message from a worker that is gone")),
        }
    }

    pub fn check_zygote(&self, g: GenId, m: ZygoteMsg) -> Result<(), String> {
        match self.gens.get(&g) {
            Some(gen) if zygote_message_allowed(gen.state, m) => Ok(()),
            Some(gen) => Err(format!("{m:?} message while {:?}", gen.state)),
            None => Err(format!("{m:?} message from a zygote that is gone")),
        }
    }

    /// Workers serving now (bound or standby).
    pub fn serving(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers
            .iter()
            .filter(|(_, w)| w.state == WState::Serving)
            .map(|(id, _)| *id)
    }

    /// Workers alive now (to ping, to ask for their tasks).
    pub fn alive(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers
            .iter()
            .filter(|(_, w)| w.state != WState::Forking)
            .map(|(id, _)| *id)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    pub fn ever_ready(&self) -> bool {
        self.ever_ready
    }

    /// The fleet as STATS and the status line show it.
    pub fn fleet(&self) -> Fleet {
        Fleet {
            serving: self.serving().count() as u32,
            workers: (self.s.max_workers + self.s.standby) as u32,
            generation: self.current.unwrap_or(0),
            crashes: self.crashes,
            last_replacement_us: self.last_replacement.map_or(0, |d| d.as_micros() as u64),
            worker_pss_kib: 0,
            daemon_pss_kib: 0,
        }
    }

    /// Workers by state, for the metrics.
    pub fn worker_states(&self) -> WorkerStates {
        let count = |s: WState| self.workers.values().filter(|w| w.state == s).count() as u32;
        WorkerStates {
            configured: (self.s.max_workers + self.s.standby) as u32,
            forking: count(WState::Forking),
            serving: count(WState::Serving),
            draining: count(WState::Draining),
        }
    }

    /// A reload is in progress (a new engine loads, or its workers start).
    pub fn is_reloading(&self) -> bool {
        self.ever_ready && (self.loading.is_some() || self.reloading.is_some())
    }

    /// The engine of the current generation.
    pub fn engine(&self) -> Option<&EngineReady> {
        self.current
            .and_then(|g| self.gens.get(&g))
            .and_then(|g| g.ready.as_ref())
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.spawn_gen(now, &mut out),
            Event::ZygoteProgress(g, p) => {
                if self.loading == Some(g) {
                    out.push(Action::Notify(Note::Progress(p)));
                }
            }
            Event::ZygoteReady(g, ready) => self.gen_ready(g, ready, now, &mut out),
            Event::ZygoteFailed(g, error) => self.gen_failed(g, error, &mut out),
            Event::ForkFailed(g, w, error) => {
                tracing::error!(generation = g, worker = w, error = %error, "fork of a worker failed");
                self.not_started(w, now, &mut out);
            }
            Event::ZygoteExited(g, how) => self.gen_exited(g, how, now, &mut out),
            Event::WorkerHello(w) => self.hello(w, now, &mut out),
            Event::WorkerPong {
                worker,
                scans,
                found,
                errors,
                healthy,
            } => self.pong(worker, (scans, found, errors), healthy, now, &mut out),
            Event::WorkerExited(w, how) => self.worker_exited(w, how, now, &mut out),
            Event::WorkerChannelClosed(w) => {
                if self.workers.get(&w).map(|x| x.state) == Some(WState::Forking) {
                    tracing::warn!(
                        worker = w,
                        "a new worker ended before it said hello; another takes its place"
                    );
                    self.not_started(w, now, &mut out);
                }
            }
            Event::WorkerRetire(w, reason) => {
                // Already draining: nothing more to do.
                if let Some(worker) = self.workers.get(&w).filter(|x| x.state == WState::Serving) {
                    let tenant = worker.tenant;
                    // A worker's word alone: a taken-over worker that says
                    // it retires, again and again through its client's next
                    // connections, would have each drain for
                    // limits.drain-timeout (sixth outside review: 78 of one
                    // user's workers in 8 s). Past MAX_DRAINING_PER_TENANT
                    // a retiring worker is ended at once, with its
                    // connections (its own client's).
                    let draining = self
                        .workers
                        .values()
                        .filter(|x| {
                            x.state == WState::Draining && tenant.is_some() && x.tenant == tenant
                        })
                        .count();
                    if draining >= MAX_DRAINING_PER_TENANT {
                        tracing::warn!(
                            worker = w,
                            tenant = ?tenant,
                            reason = reason.as_str(),
                            draining,
                            "worker retires while its client's earlier workers still drain; ended at once"
                        );
                        if let Some(x) = self.workers.get_mut(&w) {
                            x.ended_by.get_or_insert(RestartReason::Retired);
                        }
                        self.end_worker(w, now, &mut out);
                    } else {
                        tracing::warn!(
                            worker = w,
                            tenant = ?tenant,
                            reason = reason.as_str(),
                            "worker retires; its client gets a fresh one"
                        );
                        self.drain(w, now, &mut out);
                    }
                    out.push(Action::Notify(Note::WorkerReplaced(RestartReason::Retired)));
                }
            }
            Event::Want(t) => self.want(t, now, &mut out),
            Event::Release(w) => {
                if self
                    .workers
                    .get(&w)
                    .is_some_and(|x| x.state == WState::Serving)
                {
                    tracing::debug!(worker = w, "worker released");
                    self.drain(w, now, &mut out);
                }
            }
            Event::Violation(who, why) => self.violation(who, &why, now, &mut out),
            Event::Memory(reading) => self.memory(&reading, now, &mut out),
            Event::Reload(trigger) => self.reload(trigger, now, &mut out),
            Event::Stop(trigger) => self.stop(trigger, now, &mut out),
            Event::AcceptStopped => self.drain_all(now, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        self.respawn_zygote(now, &mut out);
        self.fork_wanted(now, &mut out);
        self.fill_standby(now, &mut out);
        self.maybe_exit(&mut out);
        out
    }

    fn spawn_gen(&mut self, now: Instant, out: &mut Vec<Action>) {
        let g = self.next_gen;
        self.next_gen += 1;
        self.gens.insert(
            g,
            Gen {
                state: GenState::Loading,
                since: now,
                ready: None,
            },
        );
        self.loading = Some(g);
        out.push(Action::SpawnZygote(g));
    }

    fn gen_ready(&mut self, g: GenId, ready: EngineReady, now: Instant, out: &mut Vec<Action>) {
        let Some(gen) = self.gens.get_mut(&g) else {
            return;
        };
        gen.state = GenState::Ready;
        gen.ready = Some(ready.clone());
        self.loading = None;
        self.zygote_failures = 0;
        tracing::info!(
            generation = g,
            signatures = ready.signatures,
            db_version = ready.db_version,
            sandbox = %ready.sandbox,
            loaded_in_ms = now.duration_since(gen.since).as_millis() as u64,
            load_peak_kib = ready.load_peak_kib,
            "engine holder ready"
        );
        out.push(Action::Notify(Note::EngineLoaded(
            now.duration_since(gen.since),
        )));
        let previous = self.current.replace(g);
        if let Some(old) = previous {
            if let Some(o) = self.gens.get_mut(&old) {
                if o.state == GenState::Ready {
                    o.state = GenState::Retiring;
                    o.since = now;
                    out.push(Action::RetireZygote(old));
                }
            }
            // At most two generations have workers: older ones go now.
            let ancient: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.gen < old)
                .map(|(id, _)| *id)
                .collect();
            for w in ancient {
                tracing::warn!(
                    worker = w,
                    "ending a worker two reloads old (at most two generations of signatures stay in memory)"
                );
                self.end_worker(w, now, out);
            }
        }
        if self.stopping.is_some() {
            if let Some(o) = self.gens.get_mut(&g) {
                o.state = GenState::Retiring;
                o.since = now;
            }
            out.push(Action::RetireZygote(g));
            return;
        }
        if self.ever_ready {
            self.reloading = Some(g);
            // Every bound worker of an older generation gets a replacement
            // for its tenant; unbound ones are replaced by new standbys.
            let old: Vec<(WorkerId, Option<Tenant>)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.gen != g && w.state == WState::Serving)
                .map(|(id, w)| (*id, w.tenant))
                .collect();
            for (w, tenant) in old {
                match tenant {
                    Some(t) => self.fork(Some(t), now, out),
                    None => self.drain(w, now, out),
                }
            }
            self.reload_done(now, out);
        } else if self.s.standby == 0 {
            // Nothing to fork ahead: the engine is what readiness means.
            self.became_ready(out);
        }
    }

    fn gen_failed(&mut self, g: GenId, error: String, out: &mut Vec<Action>) {
        let Some(gen) = self.gens.get_mut(&g) else {
            return;
        };
        gen.state = GenState::Failed;
        if self.loading == Some(g) {
            self.loading = None;
        }
        if !self.ever_ready {
            out.push(Action::Exit(Err(error)));
            return;
        }
        tracing::error!(generation = g, error = %error, "reload failed; still serving with the previous signatures");
        out.push(Action::Notify(Note::Reloaded {
            ok: false,
            signatures: 0,
            db_version: 0,
        }));
    }

    fn gen_exited(&mut self, g: GenId, how: Ended, now: Instant, out: &mut Vec<Action>) {
        let Some(gen) = self.gens.remove(&g) else {
            return;
        };
        match gen.state {
            GenState::Retiring | GenState::Failed => {
                tracing::info!(generation = g, how = %how, "engine holder exited");
            }
            GenState::Loading => {
                self.loading = None;
                let error = format!("the engine holder exited while loading ({how})");
                if !self.ever_ready {
                    out.push(Action::Exit(Err(error)));
                    return;
                }
                tracing::error!(generation = g, how = %how, "reload failed; still serving with the previous signatures (the engine holder died while loading)");
                out.push(Action::Notify(Note::Reloaded {
                    ok: false,
                    signatures: 0,
                    db_version: 0,
                }));
            }
            GenState::Ready => {
                if self.current == Some(g) {
                    self.current = None;
                }
                if self.stopping.is_some() {
                    return;
                }
                self.zygote_failures += 1;
                let delay = backoff(self.zygote_failures);
                tracing::error!(
                    generation = g,
                    how = %how,
                    failures = self.zygote_failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "engine holder died; loading the signatures again (workers keep serving)"
                );
                if self.loading.is_none() {
                    self.zygote_retry_at = Some(now + delay);
                }
            }
        }
    }

    fn became_ready(&mut self, out: &mut Vec<Action>) {
        if self.ever_ready {
            return;
        }
        self.ever_ready = true;
        if let Some(e) = self.engine().cloned() {
            out.push(Action::Notify(Note::Ready {
                signatures: e.signatures,
                db_version: e.db_version,
                sandbox: e.sandbox,
            }));
        }
    }

    fn hello(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        worker.state = WState::Serving;
        worker.since = now;
        worker.last_pong = now;
        worker.last_ping = now;
        let (tenant, gen) = (worker.tenant, worker.gen);
        tracing::debug!(worker = w, generation = gen, tenant = ?tenant, "worker serving");
        out.push(Action::Ping(w, 0));
        if let Some(t) = tenant {
            self.bound(w, t, now, out);
        }
        out.push(Action::Notify(Note::Fleet(self.fleet())));
        self.became_ready(out);
        if self.stopping.is_some() {
            self.drain(w, now, out);
        }
        self.reload_done(now, out);
    }

    /// Worker `w`, serving, now serves tenant `t`; the tenant's workers of
    /// older generations drain (blue/green).
    fn bound(&mut self, w: WorkerId, t: Tenant, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Bound {
            worker: w,
            tenant: t,
        });
        if let Some(at) = self.crashed.remove(&t) {
            let took = now.saturating_duration_since(at);
            self.last_replacement = Some(took);
            tracing::info!(worker = w, tenant = %t, replaced_in_us = took.as_micros() as u64, "a crashed worker's client has a new one");
        }
        let gen = self.workers.get(&w).map_or(0, |x| x.gen);
        let old: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, o)| {
                **id != w && o.tenant == Some(t) && o.state == WState::Serving && o.gen < gen
            })
            .map(|(id, _)| *id)
            .collect();
        for o in old {
            self.drain(o, now, out);
        }
    }

    /// Once no bound worker of an older generation serves, the reload is
    /// complete.
    fn reload_done(&mut self, _now: Instant, out: &mut Vec<Action>) {
        let Some(g) = self.reloading else { return };
        let pending = self.workers.values().any(|x| {
            (x.gen != g && x.state == WState::Serving)
                || (x.gen == g && x.state == WState::Forking && x.tenant.is_some())
        });
        if pending {
            return;
        }
        self.reloading = None;
        if let Some(e) = self.gens.get(&g).and_then(|x| x.ready.clone()) {
            tracing::info!(
                generation = g,
                signatures = e.signatures,
                db_version = e.db_version,
                "reload complete"
            );
            out.push(Action::Notify(Note::Reloaded {
                ok: true,
                signatures: e.signatures,
                db_version: e.db_version,
            }));
        }
    }

    /// The gate needs a worker for `t`: a standby one if there is, else a
    /// fork (after the back-off, if forks have been failing).
    fn want(&mut self, t: Tenant, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_some() {
            return;
        }
        // Already bound and serving, or on its way, with the newest engine.
        // A worker that was killed is not (it is gone for the gate at once,
        // and its client's next connection must not wait for the reaping).
        let newest = self
            .current
            .or_else(|| self.workers.values().map(|w| w.gen).max());
        if self.workers.values().any(|w| {
            w.tenant == Some(t)
                && w.killed.is_none()
                && Some(w.gen) == newest
                && matches!(w.state, WState::Forking | WState::Serving)
        }) {
            return;
        }
        // A standby worker: serving ones first, of the newest engine (when
        // the engine holder died, the standby forked from it still serves).
        let standby = self
            .workers
            .iter()
            .filter(|(_, w)| w.tenant.is_none() && w.killed.is_none())
            .filter(|(_, w)| matches!(w.state, WState::Serving | WState::Forking))
            .min_by_key(|(id, w)| (w.state != WState::Serving, std::cmp::Reverse(w.gen), **id))
            .map(|(id, w)| (*id, w.state));
        match standby {
            Some((w, state)) => {
                if let Some(x) = self.workers.get_mut(&w) {
                    x.tenant = Some(t);
                }
                if state == WState::Serving {
                    self.bound(w, t, now, out);
                }
            }
            None => {
                self.wants.insert(t);
            }
        }
    }

    /// Forks for the tenants that wait, once the back-off allows.
    fn fork_wanted(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_some() || self.fork_retry_at.is_some_and(|t| t > now) {
            return;
        }
        if self.current.is_none() {
            return;
        }
        let wants = std::mem::take(&mut self.wants);
        for t in wants {
            self.fork(Some(t), now, out);
        }
    }

    /// Keeps `standby` unbound workers of the current generation.
    fn fill_standby(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_some() || self.fork_retry_at.is_some_and(|t| t > now) {
            return;
        }
        let Some(g) = self.current else { return };
        if self.gens.get(&g).map(|x| x.state) != Some(GenState::Ready) {
            return;
        }
        let have = self
            .workers
            .values()
            .filter(|w| w.gen == g && w.tenant.is_none())
            .filter(|w| matches!(w.state, WState::Forking | WState::Serving))
            .count();
        for _ in have..self.s.standby {
            self.fork(None, now, out);
        }
    }

    fn fork(&mut self, tenant: Option<Tenant>, now: Instant, out: &mut Vec<Action>) {
        let ready = self
            .current
            .filter(|g| self.gens.get(g).map(|x| x.state) == Some(GenState::Ready));
        let Some(g) = ready else {
            // No engine to fork from (it died and reloads): later.
            if let Some(t) = tenant {
                self.wants.insert(t);
            }
            return;
        };
        let w = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            w,
            Worker {
                gen: g,
                tenant,
                state: WState::Forking,
                since: now,
                last_pong: now,
                last_ping: now,
                counters: (0, 0, 0),
                healthy: true,
                killed: None,
                ended_by: None,
            },
        );
        out.push(Action::Fork { gen: g, worker: w });
    }

    fn fork_failed(&mut self, now: Instant) {
        self.fork_failures += 1;
        let mut delay = backoff(self.fork_failures);
        if self.serving().next().is_none() {
            delay = delay.min(EMPTY_FLEET_RETRY);
        }
        self.fork_retry_at = Some(now + delay);
    }

    fn drain(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        match worker.state {
            WState::Forking => self.end_worker(w, now, out),
            WState::Serving => {
                worker.state = WState::Draining;
                worker.since = now;
                out.push(Action::Drain(w));
            }
            WState::Draining => {}
        }
    }

    fn pong(
        &mut self,
        w: WorkerId,
        counters: (u64, u64, u64),
        healthy: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        worker.last_pong = now;
        worker.counters = counters;
        worker.healthy = healthy;
        if !healthy && worker.state == WState::Serving {
            tracing::error!(
                worker = w,
                "the worker's scan pool shows no progress; replacing the worker"
            );
            worker.ended_by.get_or_insert(RestartReason::Stalled);
            self.end_worker(w, now, out);
            return;
        }
        let (mut scans, mut found, _) = self.retired;
        // Workers' own numbers: whatever a compromised one says, a sum
        // saturates (root never faults on a worker's arithmetic).
        for x in self.workers.values() {
            scans = scans.saturating_add(x.counters.0);
            found = found.saturating_add(x.counters.1);
        }
        let healthy = self
            .workers
            .values()
            .any(|x| x.state == WState::Serving && x.healthy);
        out.push(Action::Notify(Note::Alive {
            scans,
            found,
            healthy,
        }));
    }

    /// Worker `w` never started (its fork failed, or it ended before its
    /// hello): forgotten, and its client, if it had one, wants another.
    fn not_started(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        if let Some(worker) = self.workers.remove(&w) {
            self.fork_failed(now);
            if let Some(t) = worker.tenant {
                self.wants.insert(t);
            }
            out.push(Action::Forget(w));
            out.push(Action::Notify(Note::WorkerReplaced(
                RestartReason::NotStarted,
            )));
        }
    }

    fn worker_exited(&mut self, w: WorkerId, how: Ended, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.remove(&w) else {
            return;
        };
        out.push(Action::Forget(w));
        self.retired.0 = self.retired.0.saturating_add(worker.counters.0);
        self.retired.1 = self.retired.1.saturating_add(worker.counters.1);
        self.retired.2 = self.retired.2.saturating_add(worker.counters.2);
        match worker.state {
            WState::Draining if !how.is_crash() => {
                tracing::info!(worker = w, how = %how, "worker finished draining");
                self.reload_done(now, out);
                return;
            }
            _ if self.stopping.is_some() => {
                tracing::info!(worker = w, how = %how, "worker stopped");
                return;
            }
            _ => {}
        }
        self.crashes += 1;
        let young =
            worker.state != WState::Serving || now.duration_since(worker.since) < STABLE_AFTER;
        if young {
            self.fork_failed(now);
        } else {
            self.fork_failures = 0;
        }
        if let Some(t) = worker.tenant {
            let replaced = self
                .workers
                .values()
                .any(|o| o.tenant == Some(t) && o.state == WState::Serving);
            if replaced {
                // A hand-off it refused released it before its end was
                // seen, and its client has a new worker already.
                self.last_replacement = Some(Duration::ZERO);
                tracing::info!(worker = w, tenant = %t, replaced_in_us = 0u64, "a crashed worker's client has a new one");
            } else {
                self.crashed.entry(t).or_insert(now);
            }
        }
        tracing::error!(
            worker = w,
            tenant = ?worker.tenant,
            how = %how,
            crashes = self.crashes,
            "worker died; only its own requests failed"
        );
        out.push(Action::Notify(Note::WorkerReplaced(
            worker.ended_by.unwrap_or(RestartReason::Crashed),
        )));
        self.reload_done(now, out);
        out.push(Action::Notify(Note::Fleet(self.fleet())));
    }

    fn violation(&mut self, who: Who, why: &str, now: Instant, out: &mut Vec<Action>) {
        match who {
            Who::Worker(w) => {
                if let Some(worker) = self.workers.get_mut(&w) {
                    tracing::error!(worker = w, reason = %why, "worker broke the protocol; ending it");
                    worker.ended_by.get_or_insert(RestartReason::Violation);
                } else {
                    return;
                }
                self.end_worker(w, now, out);
            }
            Who::Zygote(g) => {
                if self.gens.contains_key(&g) {
                    tracing::error!(generation = g, reason = %why, "engine holder broke the protocol; ending it");
                    out.push(Action::KillZygote(g));
                }
            }
        }
    }

    fn reload(&mut self, trigger: &'static str, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_some() {
            return;
        }
        if self.loading.is_some() || self.measuring.is_some() {
            tracing::info!(trigger, "reload already in progress; merged");
            return;
        }
        if self.s.memory.is_some() && self.engine_peak() > 0 {
            if self.deferred.is_some() {
                tracing::info!(
                    trigger,
                    "a reload already waits for memory headroom; checking again now"
                );
            }
            self.measuring = Some(trigger);
            out.push(Action::MeasureMemory);
            return;
        }
        self.start_reload(trigger, now, out);
    }

    fn start_reload(&mut self, trigger: &'static str, now: Instant, out: &mut Vec<Action>) {
        tracing::info!(
            trigger,
            "reloading: a new engine holder loads the signatures"
        );
        out.push(Action::Notify(Note::Reloading(ReloadTrigger::of(trigger))));
        self.spawn_gen(now, out);
    }

    /// The current engine's peak while it loaded, bytes (0: unknown).
    fn engine_peak(&self) -> u64 {
        self.engine()
            .map_or(0, |e| e.load_peak_kib.saturating_mul(1024))
    }

    /// The reading a reload asked for: load now, or wait.
    fn memory(&mut self, reading: &headroom::Reading, now: Instant, out: &mut Vec<Action>) {
        let (Some(trigger), Some(check)) = (self.measuring.take(), self.s.memory) else {
            return;
        };
        if self.stopping.is_some() || self.loading.is_some() {
            return;
        }
        match headroom::decide(reading, self.engine_peak(), check.headroom) {
            headroom::Verdict::Go => {
                if let Some(d) = self.deferred.take() {
                    tracing::info!(
                        trigger = d.trigger,
                        waited_s = now.saturating_duration_since(d.since).as_secs(),
                        "memory headroom suffices now"
                    );
                }
                self.start_reload(trigger, now, out);
            }
            headroom::Verdict::Defer(shortfall) => {
                let (first, since, attempts) = match &self.deferred {
                    Some(d) => (d.trigger, d.since, d.attempts + 1),
                    None => (trigger, now, 0),
                };
                let delay = check.retry.saturating_mul(1 << attempts.min(4));
                tracing::warn!(
                    trigger = first,
                    need_mib = shortfall.need >> 20,
                    available_mib = shortfall.available >> 20,
                    limited_by = %shortfall.limited_by,
                    retry_in_s = delay.as_secs(),
                    "reload deferred: not enough memory for a second engine; the current signatures keep serving (limits.reload-headroom)"
                );
                out.push(Action::Notify(Note::ReloadDeferred(
                    shortfall.clone(),
                    delay,
                )));
                self.deferred = Some(Deferred {
                    trigger: first,
                    since,
                    retry_at: now + delay,
                    attempts,
                    shortfall,
                });
            }
        }
    }

    fn stop(&mut self, trigger: &'static str, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now);
        self.wants.clear();
        self.deferred = None;
        self.measuring = None;
        tracing::info!(
            trigger,
            drain_timeout_s = self.s.drain_timeout.as_secs(),
            "stopping: draining workers"
        );
        out.push(Action::Notify(Note::Stopping));
        self.closing = true;
    }

    /// The second step of a stop: every worker drains, every engine holder
    /// retires.
    fn drain_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopping.is_none() || !self.closing {
            return;
        }
        self.closing = false;
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for w in ids {
            self.drain(w, now, out);
        }
        for (g, gen) in self.gens.iter_mut() {
            if gen.state != GenState::Retiring {
                gen.state = GenState::Retiring;
                gen.since = now;
                out.push(Action::RetireZygote(*g));
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(at) = self.stopping {
            if self.closing
                && now.saturating_duration_since(at) >= ACCEPT_FLUSH.min(self.s.drain_timeout)
            {
                tracing::warn!("connections accepted before the stop did not all arrive in time; draining the workers now");
                self.drain_all(now, out);
            }
        }
        if let Some(d) = &self.deferred {
            if now >= d.retry_at
                && self.measuring.is_none()
                && self.loading.is_none()
                && self.stopping.is_none()
            {
                self.measuring = Some(d.trigger);
                out.push(Action::MeasureMemory);
            }
        }
        let mut end: Vec<(WorkerId, &'static str, RestartReason)> = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            if let Some(at) = w.killed {
                if now.duration_since(at) >= PING_EVERY {
                    w.killed = Some(now);
                    out.push(Action::Kill(*id));
                }
                continue;
            }
            let quiet = now.duration_since(w.last_pong);
            match w.state {
                WState::Forking if now.duration_since(w.since) > FORK_TIMEOUT => {
                    end.push((
                        *id,
                        "a new worker never said hello; giving up on it",
                        RestartReason::NotStarted,
                    ));
                }
                WState::Serving | WState::Draining if quiet > WEDGED_AFTER => {
                    end.push((
                        *id,
                        "worker stopped answering pings; ending it",
                        RestartReason::Wedged,
                    ));
                }
                WState::Draining
                    if now.duration_since(w.since) >= self.s.drain_timeout
                        || self
                            .stopping
                            .is_some_and(|at| now.duration_since(at) >= self.s.drain_timeout) =>
                {
                    end.push((
                        *id,
                        "worker did not finish draining within limits.drain-timeout; ending it and its connections",
                        RestartReason::DrainTimeout,
                    ));
                }
                WState::Serving | WState::Draining
                    if now.duration_since(w.last_ping) >= PING_EVERY =>
                {
                    self.ping_seq += 1;
                    w.last_ping = now;
                    out.push(Action::Ping(*id, self.ping_seq));
                }
                _ => {}
            }
        }
        for (w, why, reason) in end {
            tracing::error!(worker = w, "{why}");
            if let Some(x) = self.workers.get_mut(&w) {
                x.ended_by.get_or_insert(reason);
            }
            let forking = self
                .workers
                .get(&w)
                .is_some_and(|x| x.state == WState::Forking);
            self.end_worker(w, now, out);
            if forking && self.stopping.is_none() {
                self.fork_failed(now);
            }
        }
        for (g, gen) in &self.gens {
            if gen.state == GenState::Retiring && now.duration_since(gen.since) > RETIRE_TIMEOUT {
                out.push(Action::KillZygote(*g));
            }
        }
    }

    /// Starts a new engine holder when the current one died and its
    /// back-off has passed.
    fn respawn_zygote(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.zygote_retry_at.is_some_and(|t| t <= now)
            && self.loading.is_none()
            && self.stopping.is_none()
        {
            self.zygote_retry_at = None;
            out.push(Action::Notify(Note::Reloading(
                ReloadTrigger::EngineRestart,
            )));
            self.spawn_gen(now, out);
        }
    }

    fn maybe_exit(&mut self, out: &mut Vec<Action>) {
        if self.stopping.is_some()
            && self.workers.is_empty()
            && self.gens.is_empty()
            && !out.iter().any(|a| matches!(a, Action::Exit(_)))
        {
            out.push(Action::Exit(Ok(())));
        }
    }

    /// Ends a worker. A fork that never said hello has no pidfd, so its
    /// exit will never be reported: it is forgotten now (the stray sweep
    /// reaps the process). Others are killed; their exit comes later.
    fn end_worker(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        if worker.killed.is_some() {
            return;
        }
        worker.killed = Some(now);
        out.push(Action::Kill(w));
        if worker.state == WState::Forking {
            let tenant = worker.tenant;
            self.workers.remove(&w);
            out.push(Action::Forget(w));
            if let (Some(t), None) = (tenant, self.stopping) {
                self.wants.insert(t);
            }
        }
    }
}

#[cfg(test)]
mod tests;
