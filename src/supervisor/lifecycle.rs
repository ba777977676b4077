//! The supervisor's decisions about its processes, as a state machine:
//! events in, actions out, no processes, sockets or clocks of its own — the
//! driver (`supervisor::run`) turns actions into system calls, and the unit
//! tests below drive it with invented events and times.
//!
//! Processes:
//! * **generations**: each engine load is a generation with its own engine
//!   holder (zygote). `current` is the ready generation new workers fork
//!   from; at most one more is `loading` (a reload, or a zygote replacing
//!   one that died).
//! * **slots**: `limits.workers` places for workers. Each slot should hold
//!   one worker of the current generation; a crash in a slot is replaced by
//!   a new fork (milliseconds, no signature load), with a per-slot back-off
//!   when the same slot crashes again and again — but never so long that no
//!   worker serves: while no other worker serves, a replacement waits at
//!   most [`EMPTY_FLEET_RETRY`].
//! * **reload** (blue/green): a new zygote loads while the old workers
//!   serve; once it is ready, new workers fork from it, and each old worker
//!   drains as soon as its slot's new worker serves. A generation that fails
//!   to load changes nothing.
//!
//! Which message may arrive in which state ([`worker_message_allowed`],
//! [`zygote_message_allowed`]); anything else ends the process that sent it:
//!
//! | worker state | Hello | Pong, Counters | Active, Closed, Found | Admin | Retire |
//! |---|---|---|---|---|---|
//! | forking (no Hello yet) | yes | — | — | — | — |
//! | serving | — | yes | yes | yes | yes |
//! | draining | — | yes | yes | yes | — |
//!
//! | zygote state | Progress | Ready | LoadFailed | ForkFailed, Usage |
//! |---|---|---|---|---|
//! | loading | yes | yes | yes | — |
//! | ready | — | — | — | yes |
//! | retiring | — | — | — | yes |
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::procs::Ended;
use crate::engine::LoadProgress;
use crate::ipc::messages::{EngineReady, Fleet};
use crate::ipc::observe::{ReloadTrigger, RestartReason, WorkerStates};

pub type GenId = u64;
pub type WorkerId = u64;

/// Time between pings of one worker.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// A serving worker that has not answered for this long is killed.
pub const WEDGED_AFTER: Duration = Duration::from_secs(30);
/// A worker that served this long without crashing resets its slot's
/// back-off: crashes further apart than this are replaced at once (a fork
/// costs the engine holder 30–100 ms with a full database, so one a second
/// per slot is bearable), and only a slot whose workers die faster — a
/// crash loop, typically a worker that cannot start — waits longer each
/// time.
pub const STABLE_AFTER: Duration = Duration::from_secs(1);
/// A fork that has not said hello after this long has failed.
pub const FORK_TIMEOUT: Duration = Duration::from_secs(15);
/// A retired zygote that has not exited after this long is killed.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a replacement while no worker serves at all.
pub const EMPTY_FLEET_RETRY: Duration = Duration::from_millis(250);
/// Longest back-off of a crash-looping slot.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    /// The worker asks to be replaced (its temporary directory failed).
    WorkerRetire(WorkerId),
    /// The process broke a rule; `why` goes to the log.
    Violation(Who, String),
    Reload(&'static str),
    Stop(&'static str),
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
        slot: usize,
    },
    /// Ask the zygote to exit (its workers live on).
    RetireZygote(GenId),
    KillZygote(GenId),
    Drain(WorkerId),
    /// SIGKILL and revoke its channels and connections at once.
    Kill(WorkerId),
    /// The worker is gone: revoke its channels, connections and directory.
    Forget(WorkerId),
    Ping(WorkerId, u64),
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
    slot: usize,
    state: WState,
    since: Instant,
    last_pong: Instant,
    last_ping: Instant,
    counters: (u64, u64, u64),
    healthy: bool,
    /// Why the machine ended it, when it did (its exit is not a crash).
    ended_by: Option<RestartReason>,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Crashes in a row (reset by a worker that served STABLE_AFTER).
    failures: u32,
    retry_at: Option<Instant>,
    /// When the slot's last worker crashed, until its replacement serves.
    crashed_at: Option<Instant>,
}

/// The state machine. See the module documentation.
pub struct Machine {
    want: usize,
    gens: BTreeMap<GenId, Gen>,
    current: Option<GenId>,
    loading: Option<GenId>,
    /// The generation whose workers are replacing an older one's.
    reloading: Option<GenId>,
    workers: BTreeMap<WorkerId, Worker>,
    slots: Vec<Slot>,
    next_gen: GenId,
    next_worker: WorkerId,
    ping_seq: u64,
    stopping: bool,
    ever_ready: bool,
    zygote_failures: u32,
    zygote_retry_at: Option<Instant>,
    crashes: u64,
    last_replacement: Option<Duration>,
    /// Counters of workers that are gone (scans, found, errors).
    retired: (u64, u64, u64),
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
            | (WState::Serving, WorkerMsg::Retire)
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
    pub fn new(workers: usize) -> Machine {
        Machine {
            want: workers.max(1),
            gens: BTreeMap::new(),
            current: None,
            loading: None,
            reloading: None,
            workers: BTreeMap::new(),
            slots: vec![Slot::default(); workers.max(1)],
            next_gen: 1,
            next_worker: 1,
            ping_seq: 0,
            stopping: false,
            ever_ready: false,
            zygote_failures: 0,
            zygote_retry_at: None,
            crashes: 0,
            last_replacement: None,
            retired: (0, 0, 0),
        }
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

    /// Workers that receive new connections.
    pub fn serving(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers
            .iter()
            .filter(|(_, w)| w.state == WState::Serving)
            .map(|(id, _)| *id)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    pub fn ever_ready(&self) -> bool {
        self.ever_ready
    }

    /// The fleet as STATS and the status line show it.
    pub fn fleet(&self) -> Fleet {
        Fleet {
            serving: self.serving().count() as u32,
            workers: self.want as u32,
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
            configured: self.want as u32,
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
                if let Some(worker) = self.workers.remove(&w) {
                    self.slot_failed(worker.slot, now);
                    out.push(Action::Forget(w));
                    out.push(Action::Notify(Note::WorkerReplaced(
                        RestartReason::NotStarted,
                    )));
                }
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
            Event::WorkerRetire(w) => {
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.state = WState::Draining;
                    let slot = worker.slot;
                    tracing::warn!(worker = w, slot, "worker retires (its temporary directory failed a scan); a fresh one replaces it");
                    out.push(Action::Drain(w));
                    out.push(Action::Notify(Note::WorkerReplaced(RestartReason::Retired)));
                    self.slot_failed(slot, now);
                }
            }
            Event::Violation(who, why) => self.violation(who, &why, now, &mut out),
            Event::Reload(trigger) => self.reload(trigger, now, &mut out),
            Event::Stop(trigger) => self.stop(trigger, now, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        self.respawn_zygote(now, &mut out);
        self.fill_slots(now, &mut out);
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
            "engine holder ready"
        );
        out.push(Action::Notify(Note::EngineLoaded(
            now.duration_since(gen.since),
        )));
        if let Some(old) = self.current.replace(g) {
            if let Some(o) = self.gens.get_mut(&old) {
                if o.state == GenState::Ready {
                    o.state = GenState::Retiring;
                    o.since = now;
                    out.push(Action::RetireZygote(old));
                }
            }
        }
        if self.ever_ready {
            self.reloading = Some(g);
        }
        if self.stopping {
            if let Some(o) = self.gens.get_mut(&g) {
                o.state = GenState::Retiring;
                o.since = now;
            }
            out.push(Action::RetireZygote(g));
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
                if self.stopping {
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

    fn hello(&mut self, w: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.get_mut(&w) else {
            return;
        };
        worker.state = WState::Serving;
        worker.since = now;
        worker.last_pong = now;
        worker.last_ping = now;
        let (slot, gen) = (worker.slot, worker.gen);
        let s = &mut self.slots[slot];
        s.retry_at = None;
        if let Some(at) = s.crashed_at.take() {
            let took = now.duration_since(at);
            self.last_replacement = Some(took);
            tracing::info!(
                worker = w,
                slot,
                replaced_in_us = took.as_micros() as u64,
                "crashed worker replaced"
            );
        } else {
            tracing::debug!(worker = w, slot, generation = gen, "worker serving");
        }
        // Blue/green: the slot's older workers drain once this one serves.
        let old: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, o)| **id != w && o.slot == slot && o.state == WState::Serving)
            .map(|(id, _)| *id)
            .collect();
        for o in old {
            if let Some(ow) = self.workers.get_mut(&o) {
                ow.state = WState::Draining;
                out.push(Action::Drain(o));
            }
        }
        out.push(Action::Notify(Note::Fleet(self.fleet())));
        out.push(Action::Ping(w, 0));
        if !self.ever_ready {
            self.ever_ready = true;
            if let Some(e) = self.engine().cloned() {
                out.push(Action::Notify(Note::Ready {
                    signatures: e.signatures,
                    db_version: e.db_version,
                    sandbox: e.sandbox,
                }));
            }
        } else if let Some(g) = self.reloading {
            let done = (0..self.want).all(|slot| {
                self.workers
                    .values()
                    .any(|x| x.slot == slot && x.gen == g && x.state == WState::Serving)
            });
            if done {
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
        }
        if self.stopping {
            if let Some(x) = self.workers.get_mut(&w) {
                x.state = WState::Draining;
            }
            out.push(Action::Drain(w));
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
            out.push(Action::Kill(w));
            return;
        }
        let (mut scans, mut found, _) = self.retired;
        for x in self.workers.values() {
            scans += x.counters.0;
            found += x.counters.1;
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

    fn worker_exited(&mut self, w: WorkerId, how: Ended, now: Instant, out: &mut Vec<Action>) {
        let Some(worker) = self.workers.remove(&w) else {
            return;
        };
        out.push(Action::Forget(w));
        self.retired.0 += worker.counters.0;
        self.retired.1 += worker.counters.1;
        self.retired.2 += worker.counters.2;
        match worker.state {
            WState::Draining => {
                tracing::info!(worker = w, how = %how, "worker finished draining");
                return;
            }
            _ if self.stopping => {
                tracing::info!(worker = w, how = %how, "worker stopped");
                return;
            }
            _ => {}
        }
        self.crashes += 1;
        out.push(Action::Notify(Note::WorkerReplaced(
            worker.ended_by.unwrap_or(RestartReason::Crashed),
        )));
        let slot = worker.slot;
        if worker.state == WState::Serving && now.duration_since(worker.since) >= STABLE_AFTER {
            self.slots[slot].failures = 0;
        }
        self.slot_failed(slot, now);
        let s = &self.slots[slot];
        tracing::error!(
            worker = w,
            slot,
            how = %how,
            crashes = self.crashes,
            slot_failures = s.failures,
            replace_in_ms = s.retry_at.map_or(0, |t| t.saturating_duration_since(now).as_millis() as u64),
            "worker died; only its own requests failed"
        );
        out.push(Action::Notify(Note::Fleet(self.fleet())));
    }

    fn slot_failed(&mut self, slot: usize, now: Instant) {
        let others_serving = self.workers.values().any(|w| w.state == WState::Serving);
        let s = &mut self.slots[slot];
        s.failures += 1;
        let mut delay = backoff(s.failures);
        if !others_serving {
            delay = delay.min(EMPTY_FLEET_RETRY);
        }
        s.retry_at = Some(now + delay);
        s.crashed_at.get_or_insert(now);
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
        if self.stopping {
            return;
        }
        if self.loading.is_some() {
            tracing::info!(trigger, "reload already in progress; merged");
            return;
        }
        tracing::info!(
            trigger,
            "reloading: a new engine holder loads the signatures"
        );
        out.push(Action::Notify(Note::Reloading(ReloadTrigger::of(trigger))));
        self.spawn_gen(now, out);
    }

    fn stop(&mut self, trigger: &'static str, now: Instant, out: &mut Vec<Action>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        tracing::info!(trigger, "stopping: draining workers");
        out.push(Action::Notify(Note::Stopping));
        let forking: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WState::Forking)
            .map(|(id, _)| *id)
            .collect();
        for w in forking {
            self.end_worker(w, now, out);
        }
        for (id, w) in self.workers.iter_mut() {
            if w.state == WState::Serving {
                w.state = WState::Draining;
                out.push(Action::Drain(*id));
            }
        }
        for (g, gen) in self.gens.iter_mut() {
            if gen.state != GenState::Retiring {
                gen.state = GenState::Retiring;
                out.push(Action::RetireZygote(*g));
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.state == WState::Forking && now.duration_since(w.since) > FORK_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect();
        for w in silent {
            tracing::error!(worker = w, "a new worker never said hello; giving up on it");
            self.end_worker(w, now, out);
        }
        for (id, w) in self.workers.iter_mut() {
            match w.state {
                WState::Serving if now.duration_since(w.last_pong) > WEDGED_AFTER => {
                    tracing::error!(worker = *id, "worker stopped answering; killing it");
                    w.ended_by.get_or_insert(RestartReason::Wedged);
                    out.push(Action::Kill(*id));
                    w.last_pong = now;
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
            && !self.stopping
        {
            self.zygote_retry_at = None;
            out.push(Action::Notify(Note::Reloading(
                ReloadTrigger::EngineRestart,
            )));
            self.spawn_gen(now, out);
        }
    }

    /// Forks a worker for every slot that has none of the current generation.
    fn fill_slots(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopping {
            return;
        }
        let Some(g) = self.current else { return };
        if self.gens.get(&g).map(|x| x.state) != Some(GenState::Ready) {
            return;
        }
        for slot in 0..self.want {
            let covered = self.workers.values().any(|w| {
                w.slot == slot && w.gen == g && matches!(w.state, WState::Forking | WState::Serving)
            });
            if covered || self.slots[slot].retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let w = self.next_worker;
            self.next_worker += 1;
            self.workers.insert(
                w,
                Worker {
                    gen: g,
                    slot,
                    state: WState::Forking,
                    since: now,
                    last_pong: now,
                    last_ping: now,
                    counters: (0, 0, 0),
                    healthy: true,
                    ended_by: None,
                },
            );
            out.push(Action::Fork {
                gen: g,
                worker: w,
                slot,
            });
        }
    }

    fn maybe_exit(&mut self, out: &mut Vec<Action>) {
        if self.stopping
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
        let Some(worker) = self.workers.get(&w) else {
            return;
        };
        out.push(Action::Kill(w));
        if worker.state == WState::Forking {
            let slot = worker.slot;
            self.workers.remove(&w);
            out.push(Action::Forget(w));
            if !self.stopping {
                self.slot_failed(slot, now);
                out.push(Action::Notify(Note::WorkerReplaced(
                    RestartReason::NotStarted,
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> EngineReady {
        EngineReady {
            engine_version: "1.4.6".into(),
            signatures: 10,
            db_version: 1,
            db_time: 0,
            sandbox: "landlock=full".into(),
        }
    }

    fn forks(actions: &[Action]) -> Vec<(GenId, WorkerId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fork { gen, worker, .. } => Some((*gen, *worker)),
                _ => None,
            })
            .collect()
    }

    /// A machine with `n` workers serving generation 1.
    fn serving(n: usize, t: Instant) -> (Machine, Vec<WorkerId>) {
        let mut m = Machine::new(n);
        assert_eq!(m.handle(Event::Start, t), vec![Action::SpawnZygote(1)]);
        let a = m.handle(Event::ZygoteReady(1, ready()), t);
        let f = forks(&a);
        assert_eq!(f.len(), n);
        let mut ids = Vec::new();
        for (i, (_, w)) in f.into_iter().enumerate() {
            let a = m.handle(Event::WorkerHello(w), t);
            if i == 0 {
                assert!(a
                    .iter()
                    .any(|x| matches!(x, Action::Notify(Note::Ready { .. }))));
            }
            ids.push(w);
        }
        (m, ids)
    }

    #[test]
    fn start_loads_forks_and_is_ready_at_the_first_hello() {
        let t = Instant::now();
        let (m, ids) = serving(2, t);
        assert_eq!(ids.len(), 2);
        assert_eq!(m.serving().count(), 2);
        assert_eq!(m.fleet().generation, 1);
    }

    #[test]
    fn a_failed_first_load_stops_the_daemon() {
        let t = Instant::now();
        let mut m = Machine::new(2);
        m.handle(Event::Start, t);
        let a = m.handle(Event::ZygoteFailed(1, "bad.ndb".into()), t);
        assert_eq!(a, vec![Action::Exit(Err("bad.ndb".into()))]);
    }

    #[test]
    fn a_crash_is_replaced_at_once_and_only_that_worker_goes() {
        let t = Instant::now();
        let (mut m, ids) = serving(2, t);
        let a = m.handle(Event::WorkerExited(ids[0], Ended::Signaled(11)), t);
        assert!(a.contains(&Action::Forget(ids[0])));
        let f = forks(&a);
        assert_eq!(f.len(), 1, "one replacement, from the loaded engine: {a:?}");
        assert!(
            !a.iter().any(|x| matches!(x, Action::SpawnZygote(_))),
            "no reload"
        );
        assert_eq!(m.serving().collect::<Vec<_>>(), vec![ids[1]]);
        let later = t + Duration::from_millis(5);
        m.handle(Event::WorkerHello(f[0].1), later);
        assert_eq!(m.fleet().crashes, 1);
        assert_eq!(m.fleet().last_replacement_us, 5000);
    }

    #[test]
    fn a_crash_loop_backs_off_but_never_leaves_no_worker() {
        let t = Instant::now();
        let (mut m, ids) = serving(2, t);
        // Slot of ids[0] crashes again and again; ids[1] keeps serving.
        let mut victim = ids[0];
        let mut now = t;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let a = m.handle(Event::WorkerExited(victim, Ended::Signaled(9)), now);
            let mut f = forks(&a);
            let mut waited = Duration::ZERO;
            while f.is_empty() {
                waited += Duration::from_millis(10);
                f = forks(&m.handle(Event::Tick, now + waited));
                assert!(waited < MAX_BACKOFF + Duration::from_secs(1));
            }
            delays.push(waited);
            now += waited;
            victim = f[0].1;
            m.handle(Event::WorkerHello(victim), now);
        }
        assert_eq!(delays[0], Duration::ZERO);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert!(delays[5] >= Duration::from_millis(400), "{delays:?}");
        // Now the other worker dies too: with nobody serving, the wait is short.
        let mut f = forks(&m.handle(Event::WorkerExited(ids[1], Ended::Signaled(9)), now));
        f.extend(forks(
            &m.handle(Event::WorkerExited(victim, Ended::Signaled(9)), now),
        ));
        let mut waited = Duration::ZERO;
        while f.len() < 2 {
            f.extend(forks(&m.handle(Event::Tick, now + waited)));
            waited += Duration::from_millis(10);
        }
        assert!(
            waited <= EMPTY_FLEET_RETRY + Duration::from_millis(20),
            "{waited:?}"
        );
    }

    #[test]
    fn crashes_further_apart_than_stable_after_are_replaced_at_once() {
        let t = Instant::now();
        let (mut m, ids) = serving(2, t);
        // Killed again and again, but each worker served a while first:
        // not a loop, so every replacement forks in the same step.
        let mut victim = ids[0];
        let mut now = t;
        for kill in 0..20 {
            now += STABLE_AFTER;
            let f = forks(&m.handle(Event::WorkerExited(victim, Ended::Signaled(9)), now));
            assert_eq!(f.len(), 1, "kill {kill} waited");
            victim = f[0].1;
            m.handle(Event::WorkerHello(victim), now);
        }
    }

    #[test]
    fn reload_is_blue_green() {
        let t = Instant::now();
        let (mut m, old) = serving(2, t);
        let a = m.handle(Event::Reload("RELOAD command"), t);
        assert!(a.contains(&Action::SpawnZygote(2)));
        assert!(a.contains(&Action::Notify(Note::Reloading(ReloadTrigger::Command))));
        // A second request while loading is merged.
        assert!(!m
            .handle(Event::Reload("SIGHUP"), t)
            .iter()
            .any(|x| matches!(x, Action::SpawnZygote(_))));
        assert_eq!(m.serving().count(), 2, "old workers serve while loading");
        let a = m.handle(Event::ZygoteReady(2, ready()), t);
        assert!(a.contains(&Action::RetireZygote(1)));
        let new = forks(&a);
        assert_eq!(new.len(), 2);
        assert!(new.iter().all(|(g, _)| *g == 2));
        let a = m.handle(Event::WorkerHello(new[0].1), t);
        assert_eq!(
            a.iter().filter(|x| matches!(x, Action::Drain(_))).count(),
            1
        );
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::Notify(Note::Reloaded { .. }))));
        let a = m.handle(Event::WorkerHello(new[1].1), t);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Notify(Note::Reloaded { ok: true, .. }))));
        for o in old {
            m.handle(Event::WorkerExited(o, Ended::Exited(0)), t);
        }
        assert_eq!(m.fleet().crashes, 0);
        assert_eq!(m.serving().count(), 2);
    }

    #[test]
    fn a_failed_reload_changes_nothing() {
        let t = Instant::now();
        let (mut m, _) = serving(2, t);
        m.handle(Event::Reload("RELOAD command"), t);
        let a = m.handle(Event::ZygoteFailed(2, "truncated.ndb".into()), t);
        assert!(a.contains(&Action::Notify(Note::Reloaded {
            ok: false,
            signatures: 0,
            db_version: 0
        })));
        assert_eq!(m.serving().count(), 2);
        assert_eq!(m.fleet().generation, 1);
    }

    #[test]
    fn a_dead_zygote_is_reloaded_while_workers_serve() {
        let t = Instant::now();
        let (mut m, _) = serving(2, t);
        let a = m.handle(Event::ZygoteExited(1, Ended::Signaled(9)), t);
        assert!(a.contains(&Action::SpawnZygote(2)), "{a:?}");
        assert_eq!(m.serving().count(), 2);
    }

    #[test]
    fn stop_drains_everything_then_exits() {
        let t = Instant::now();
        let (mut m, ids) = serving(2, t);
        let a = m.handle(Event::Stop("SIGTERM"), t);
        assert_eq!(
            a.iter().filter(|x| matches!(x, Action::Drain(_))).count(),
            2
        );
        assert!(a.contains(&Action::RetireZygote(1)));
        m.handle(Event::ZygoteExited(1, Ended::Exited(0)), t);
        m.handle(Event::WorkerExited(ids[0], Ended::Exited(0)), t);
        let a = m.handle(Event::WorkerExited(ids[1], Ended::Exited(0)), t);
        assert!(a.contains(&Action::Exit(Ok(()))));
    }

    #[test]
    fn messages_out_of_state_are_violations() {
        let t = Instant::now();
        let mut m = Machine::new(1);
        m.handle(Event::Start, t);
        assert!(m.check_zygote(1, ZygoteMsg::Progress).is_ok());
        assert!(m.check_zygote(1, ZygoteMsg::ForkFailed).is_err());
        let a = m.handle(Event::ZygoteReady(1, ready()), t);
        let w = forks(&a)[0].1;
        assert!(m.check_zygote(1, ZygoteMsg::Ready).is_err());
        assert!(m.check_worker(w, WorkerMsg::Pong).is_err(), "before hello");
        assert!(m.check_worker(w, WorkerMsg::Admin).is_err(), "before hello");
        assert!(m.check_worker(w, WorkerMsg::Hello).is_ok());
        m.handle(Event::WorkerHello(w), t);
        assert!(m.check_worker(w, WorkerMsg::Hello).is_err(), "twice");
        assert!(m.check_worker(w, WorkerMsg::Conn).is_ok());
        assert!(
            m.check_worker(99, WorkerMsg::Pong).is_err(),
            "unknown worker"
        );
        let a = m.handle(Event::Violation(Who::Worker(w), "x".into()), t);
        assert_eq!(a.first(), Some(&Action::Kill(w)));
    }

    #[test]
    fn wedged_and_stalled_workers_are_replaced() {
        let t = Instant::now();
        let (mut m, ids) = serving(2, t);
        let a = m.handle(Event::Tick, t + WEDGED_AFTER + Duration::from_secs(1));
        assert!(a.contains(&Action::Kill(ids[0])) && a.contains(&Action::Kill(ids[1])));
        let (mut m, ids) = serving(2, t);
        let a = m.handle(
            Event::WorkerPong {
                worker: ids[0],
                scans: 1,
                found: 0,
                errors: 0,
                healthy: false,
            },
            t,
        );
        assert_eq!(a.first(), Some(&Action::Kill(ids[0])));
    }

    fn replaced(actions: &[Action]) -> Vec<RestartReason> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(Note::WorkerReplaced(r)) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// The metrics hear why each worker went: the machine's own decision
    /// (wedged, stalled, broke the protocol) when it ended the worker, a
    /// crash otherwise; a draining worker's exit is no replacement.
    #[test]
    fn replacements_say_why() {
        let t = Instant::now();
        let (mut m, ids) = serving(3, t);
        let late = t + WEDGED_AFTER + Duration::from_secs(1);
        // ids[1] and ids[2] answer; ids[0] does not.
        for w in &ids[1..] {
            m.handle(
                Event::WorkerPong {
                    worker: *w,
                    scans: 0,
                    found: 0,
                    errors: 0,
                    healthy: true,
                },
                late - Duration::from_secs(2),
            );
        }
        m.handle(Event::Tick, late);
        let a = m.handle(Event::WorkerExited(ids[0], Ended::Signaled(9)), late);
        assert_eq!(replaced(&a), vec![RestartReason::Wedged]);
        m.handle(Event::Violation(Who::Worker(ids[1]), "test".into()), late);
        let a = m.handle(Event::WorkerExited(ids[1], Ended::Signaled(9)), late);
        assert_eq!(replaced(&a), vec![RestartReason::Violation]);
        let a = m.handle(Event::WorkerExited(ids[2], Ended::Signaled(11)), late);
        assert_eq!(replaced(&a), vec![RestartReason::Crashed]);
        let a = m.handle(Event::WorkerRetire(99), late);
        assert!(replaced(&a).is_empty(), "an unknown worker");
        let w = *m.workers.keys().next().unwrap();
        m.handle(Event::WorkerHello(w), late);
        let a = m.handle(Event::WorkerRetire(w), late);
        assert_eq!(replaced(&a), vec![RestartReason::Retired]);
        let a = m.handle(Event::WorkerExited(w, Ended::Exited(0)), late);
        assert!(
            replaced(&a).is_empty(),
            "a drained worker is no replacement"
        );
    }

    #[test]
    fn reloads_name_their_trigger_and_loads_their_time() {
        let t = Instant::now();
        let (mut m, _) = serving(1, t);
        let a = m.handle(Event::Reload("database.self-check"), t);
        assert!(a.contains(&Action::Notify(Note::Reloading(ReloadTrigger::SelfCheck))));
        let a = m.handle(
            Event::ZygoteReady(2, ready()),
            t + Duration::from_millis(1500),
        );
        assert!(
            a.contains(&Action::Notify(Note::EngineLoaded(Duration::from_millis(
                1500
            ))))
        );
        assert!(m.is_reloading());
        assert_eq!(m.worker_states().configured, 1);
        assert_eq!(m.worker_states().serving, 1);
        assert_eq!(m.worker_states().forking, 1);
    }
}
