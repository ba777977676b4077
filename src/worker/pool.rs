//! The scanning threads: a fixed pool behind a fair, bounded queue.
//!
//! libclamav scans are blocking and CPU-bound, so they run on plain OS
//! threads, never on the async runtime. Every thread exists from the start
//! (the worker forbids new tasks once its threads are up), so the pool has:
//!
//! * `threads` **normal** threads; at most `limit` of them run jobs at once
//!   ([`ScanPool::set_limit`], the supervisor's share of the daemon's
//!   threads for this worker; the rest wait);
//! * `reserve` **reserve** threads (`limits.reserve-threads`), which only
//!   run a job of a peer that has fewer running jobs than its fair share
//!   (`limit` / peers with work) while every permitted normal thread is
//!   busy. One client's slow inputs holding every normal thread cannot
//!   starve the others: another peer's job starts at once on a reserve
//!   thread.
//!
//! Jobs are tagged with their client's [`PeerKey`] (`None` for the
//! worker's own health probe). Each peer has its own queue; a free thread
//! takes the job of the peer with the fewest running jobs, round-robin
//! among equals ([`Sched`], a pure machine tested below). The pool is
//! work-conserving: a lone peer uses every permitted normal thread. At most
//! `max-queue` jobs wait in all and at most [`peer_queue_cap`] of one peer;
//! [`ScanPool::submit`] fails at once beyond either, so the caller answers
//! the client instead of hanging.
//!
//! Each thread publishes what it is doing in a [`TaskSlot`] (STATS, the
//! health check). A libclamav call runs inside [`TaskSlot::scanning`], so
//! that [`ScanPool::overruns`] can find a scan that runs past its time
//! limit (libclamav does not check its limit on every path) and write it
//! off: the job's [`Ticket`] fires, its client is answered, and the thread
//! is left to finish or to die with the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ipc::observe::{QueueWaitHistogram, QUEUE_WAIT_BOUNDS_US};
use crate::policy::PeerKey;

/// A unit of work; it receives the slot of the thread that runs it.
pub type Job = Box<dyn FnOnce(&TaskSlot) + Send + 'static>;

/// Who a job is for: a client's peer key, or `None` for the worker's own
/// work (the health probe).
pub type Owner = Option<PeerKey>;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max-queue` jobs wait already.
    QueueFull,
    /// This peer has [`peer_queue_cap`] jobs waiting already.
    PeerQueueFull,
    /// The pool is closing (or the job was dropped unrun).
    Closed,
}

/// Why [`ScanPool::run`] returned no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    Busy(Busy),
    /// The scan ran past its time limit and was written off.
    Overrun,
}

/// Which kind of thread asks for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Reserve,
}

/// How many jobs one peer may have waiting: half of `max-queue`, at least 1.
pub fn peer_queue_cap(max_queue: usize) -> usize {
    (max_queue / 2).max(1)
}

// ------------------------------------------------------------- the machine

struct PeerState<J> {
    jobs: VecDeque<(Instant, J)>,
    running: usize,
}

/// The fair queue's decisions, without threads or clocks of its own: which
/// job a thread of a given kind takes next. `J` is the job (a closure in
/// the pool, a number in the tests).
pub struct Sched<J> {
    peers: HashMap<Owner, PeerState<J>>,
    /// Peers with queued jobs, in round-robin order.
    ring: VecDeque<Owner>,
    queued: usize,
    max_queue: usize,
    peer_queue: usize,
    normal: usize,
    limit: usize,
    running_normal: usize,
    /// Normal threads whose job was written off (past its time limit):
    /// they still hold their thread, but not a place under `limit`, so the
    /// worker can finish its other requests before it exits.
    lost: usize,
    closed: bool,
}

impl<J> Sched<J> {
    pub fn new(normal: usize, max_queue: usize) -> Sched<J> {
        let normal = normal.max(1);
        Sched {
            peers: HashMap::new(),
            ring: VecDeque::new(),
            queued: 0,
            max_queue: max_queue.max(1),
            peer_queue: peer_queue_cap(max_queue.max(1)),
            normal,
            limit: normal,
            running_normal: 0,
            lost: 0,
            closed: false,
        }
    }

    /// Queues a job of `owner`, or says why not.
    pub fn push(&mut self, owner: Owner, job: J, now: Instant) -> Result<(), (Busy, J)> {
        if self.closed {
            return Err((Busy::Closed, job));
        }
        if self.queued >= self.max_queue {
            return Err((Busy::QueueFull, job));
        }
        let peer = self.peers.entry(owner).or_insert_with(|| PeerState {
            jobs: VecDeque::new(),
            running: 0,
        });
        if peer.jobs.len() >= self.peer_queue {
            return Err((Busy::PeerQueueFull, job));
        }
        if peer.jobs.is_empty() {
            self.ring.push_back(owner);
        }
        peer.jobs.push_back((now, job));
        self.queued += 1;
        Ok(())
    }

    /// The job a free thread of `kind` takes now, if any; it counts as
    /// running for its owner until [`done`](Self::done).
    pub fn take(&mut self, kind: Kind) -> Option<(Owner, J)> {
        if self.queued == 0 {
            return None;
        }
        let (peers, limit) = (self.peers.len(), self.limit);
        let eligible = |p: &PeerState<J>| match kind {
            Kind::Normal => true,
            // Fewer running jobs than its fair share, limit / peers.
            Kind::Reserve => p.running * peers < limit,
        };
        match kind {
            Kind::Normal if !self.normal_free() => return None,
            // A normal thread is free and will take it.
            Kind::Reserve if self.normal_free() => return None,
            _ => {}
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, owner) in self.ring.iter().enumerate() {
            let p = &self.peers[owner];
            if eligible(p) && best.map_or(true, |(_, r)| p.running < r) {
                best = Some((i, p.running));
            }
        }
        let (i, _) = best?;
        let owner = self.ring.remove(i)?;
        let peer = self.peers.get_mut(&owner)?;
        let (_, job) = peer.jobs.pop_front()?;
        peer.running += 1;
        if !peer.jobs.is_empty() {
            self.ring.push_back(owner);
        }
        self.queued -= 1;
        if kind == Kind::Normal {
            self.running_normal += 1;
        }
        Some((owner, job))
    }

    /// A job of a thread of `kind` was written off: its place under the
    /// limit goes to the next job.
    pub fn lost(&mut self, kind: Kind) {
        if kind == Kind::Normal {
            self.lost += 1;
        }
    }

    /// A job taken by a thread of `kind` for `owner` is finished (`lost`:
    /// it had been written off).
    pub fn done(&mut self, kind: Kind, owner: Owner, lost: bool) {
        if kind == Kind::Normal {
            self.running_normal = self.running_normal.saturating_sub(1);
            if lost {
                self.lost = self.lost.saturating_sub(1);
            }
        }
        if let Some(p) = self.peers.get_mut(&owner) {
            p.running = p.running.saturating_sub(1);
            if p.running == 0 && p.jobs.is_empty() {
                self.peers.remove(&owner);
            }
        }
    }

    /// How many normal threads may run jobs at once (1 ..= normal threads).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, self.normal);
    }

    #[cfg(test)]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// May a normal thread take a job now?
    pub fn normal_free(&self) -> bool {
        self.running_normal.saturating_sub(self.lost) < self.limit
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Drops every queued job (their callers see the job dropped unrun).
    pub fn clear_queue(&mut self) -> Vec<J> {
        let mut out = Vec::new();
        for p in self.peers.values_mut() {
            out.extend(p.jobs.drain(..).map(|(_, j)| j));
        }
        self.peers.retain(|_, p| p.running > 0);
        self.ring.clear();
        self.queued = 0;
        out
    }

    fn waits(&self, now: Instant) -> Vec<Duration> {
        self.peers
            .values()
            .flat_map(|p| {
                p.jobs
                    .iter()
                    .map(move |(t, _)| now.saturating_duration_since(*t))
            })
            .collect()
    }
}

// ------------------------------------------------------------- tickets

/// The connection side of a job: its owner, and the signal that fires when
/// the job was written off for running past its time limit (carrying the
/// name of the file it was scanning, as the client sees it).
pub struct Ticket {
    owner: Owner,
    signal: Arc<watch::Sender<Option<Vec<u8>>>>,
    rx: watch::Receiver<Option<Vec<u8>>>,
}

/// What the pool keeps of a ticket while its job waits or runs.
#[derive(Clone)]
pub struct Tag {
    owner: Owner,
    signal: Arc<watch::Sender<Option<Vec<u8>>>>,
}

impl Ticket {
    pub fn new(owner: Owner) -> Ticket {
        let (tx, rx) = watch::channel(None);
        Ticket {
            owner,
            signal: Arc::new(tx),
            rx,
        }
    }

    /// The tag jobs of this ticket are submitted with (MULTISCAN's file
    /// jobs share their walk's).
    pub fn tag(&self) -> Tag {
        Tag {
            owner: self.owner,
            signal: Arc::clone(&self.signal),
        }
    }

    /// Resolves once a job of this ticket was written off, with the name
    /// of the file it was scanning.
    pub async fn overrun(&mut self) -> Vec<u8> {
        let name = self
            .rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        match name {
            Some(name) => name,
            // The sender lives in this ticket: never closed while we wait.
            None => std::future::pending().await,
        }
    }
}

// ------------------------------------------------------------- slots

/// What one thread is doing, for STATS and the health check.
pub struct TaskSlot {
    state: Mutex<SlotState>,
    kind: Kind,
}

struct SlotState {
    owner: Owner,
    tag: Option<Tag>,
    task: Option<TaskState>,
    idle_since: Instant,
}

struct TaskState {
    command: &'static str,
    started: Instant,
    filename: Vec<u8>,
    /// When the libclamav call in progress began.
    engine_since: Option<Instant>,
    written_off: bool,
}

/// A running task, as STATS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub command: &'static str,
    pub started: Instant,
    pub filename: String,
    pub owner: Owner,
    /// Written off for running past its time limit; its client was answered.
    pub written_off: bool,
}

impl Task {
    /// The task as STATS lists it, for the daemon-wide task list.
    pub fn info(&self) -> crate::ipc::messages::TaskInfo {
        crate::ipc::messages::TaskInfo {
            command: self.command.to_string(),
            elapsed_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            filename: self.filename.clone(),
        }
    }
}

impl TaskSlot {
    fn new(kind: Kind) -> TaskSlot {
        TaskSlot {
            state: Mutex::new(SlotState {
                owner: None,
                tag: None,
                task: None,
                idle_since: Instant::now(),
            }),
            kind,
        }
    }

    pub fn begin(&self, command: &'static str, filename: &[u8]) {
        lock(&self.state).task = Some(TaskState {
            command,
            started: Instant::now(),
            filename: filename.to_vec(),
            engine_since: None,
            written_off: false,
        });
    }

    /// Updates the file name while a walk moves from file to file.
    pub fn set_file(&self, filename: &[u8]) {
        if let Some(t) = lock(&self.state).task.as_mut() {
            t.filename.clear();
            t.filename.extend_from_slice(filename);
        }
    }

    /// Runs one libclamav call, marked so that [`ScanPool::overruns`] can
    /// find it if it runs past its time limit.
    pub fn scanning<T>(&self, scan: impl FnOnce() -> T) -> T {
        if let Some(t) = lock(&self.state).task.as_mut() {
            t.engine_since = Some(Instant::now());
        }
        let out = scan();
        if let Some(t) = lock(&self.state).task.as_mut() {
            t.engine_since = None;
        }
        out
    }

    /// Has the job on this thread been written off? (Its client was
    /// answered; the rest of its work is wasted.)
    pub fn written_off(&self) -> bool {
        lock(&self.state)
            .task
            .as_ref()
            .is_some_and(|t| t.written_off)
    }

    fn start(&self, owner: Owner, tag: Option<Tag>) {
        let mut s = lock(&self.state);
        s.owner = owner;
        s.tag = tag;
    }

    /// Ends the slot's job; says whether it had been written off.
    fn clear(&self) -> bool {
        let mut s = lock(&self.state);
        let lost = s.task.as_ref().is_some_and(|t| t.written_off);
        s.task = None;
        s.tag = None;
        s.owner = None;
        s.idle_since = Instant::now();
        lost
    }

    fn snapshot(&self) -> Result<Task, Instant> {
        let s = lock(&self.state);
        match &s.task {
            Some(t) => Ok(Task {
                command: t.command,
                started: t.started,
                filename: crate::log::escape(&t.filename),
                owner: s.owner,
                written_off: t.written_off,
            }),
            None => Err(s.idle_since),
        }
    }
}

/// A scan written off by [`ScanPool::overruns`], for the log.
#[derive(Debug, Clone)]
pub struct Overrun {
    pub command: &'static str,
    pub filename: Vec<u8>,
    pub owner: Owner,
    /// How long the libclamav call had run.
    pub scanning_for: Duration,
}

// ------------------------------------------------------------- the pool

struct Queued {
    tag: Option<Tag>,
    job: Job,
    /// When it was queued (a client's job's wait goes to the metrics; the
    /// worker's own health probe's does not).
    at: Instant,
}

struct Shared {
    sched: Mutex<Sched<Queued>>,
    /// Idle threads wait here, one condition variable per kind of thread,
    /// so that a job wakes one thread that may take it instead of every
    /// idle thread ([`Shared::wake`]).
    ready: [Condvar; 2],
    slots: Vec<TaskSlot>,
    normal: usize,
    /// How long clients' jobs waited in the queue (the metrics' queue wait).
    waited: Mutex<QueueWaitHistogram>,
}

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct ScanPool {
    shared: Arc<Shared>,
}

/// A moment's view of the pool, for STATS.
pub struct PoolSnapshot {
    /// Normal and reserve threads.
    pub threads: usize,
    pub busy: usize,
    pub queued: usize,
    /// min, max and average wait of queued jobs.
    pub waits: Option<(Duration, Duration, Duration)>,
    pub tasks: Vec<Task>,
    /// How long each idle thread has been idle.
    pub idle: Vec<Duration>,
    /// How long every job so far waited before a thread took it.
    pub wait_histogram: QueueWaitHistogram,
}

impl ScanPool {
    /// Starts `threads` normal and `reserve` reserve threads (all the
    /// threads the pool will ever have) behind a queue of `max_queue` jobs.
    pub fn new(threads: usize, reserve: usize, max_queue: usize) -> std::io::Result<ScanPool> {
        let threads = threads.max(1);
        let slots = (0..threads + reserve)
            .map(|i| {
                TaskSlot::new(if i < threads {
                    Kind::Normal
                } else {
                    Kind::Reserve
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            sched: Mutex::new(Sched::new(threads, max_queue)),
            ready: [Condvar::new(), Condvar::new()],
            slots,
            normal: threads,
            waited: Mutex::new(QueueWaitHistogram::default()),
        });
        for i in 0..threads + reserve {
            let shared = Arc::clone(&shared);
            let name = if i < threads {
                format!("scan-{i}")
            } else {
                format!("reserve-{}", i - threads)
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || thread_main(&shared, i))?;
        }
        Ok(ScanPool { shared })
    }

    /// Queues a job, or fails at once if the queue, or this peer's part of
    /// it, is full.
    pub fn submit(&self, tag: &Tag, job: Job) -> Result<(), Busy> {
        self.submit_or_return(tag, job).map_err(|(b, _)| b)
    }

    /// Like [`submit`](Self::submit), but hands a refused job back.
    pub fn submit_or_return(&self, tag: &Tag, job: Job) -> Result<(), (Busy, Job)> {
        self.push(tag.owner, Some(tag.clone()), job)
    }

    /// Queues the worker's own job (the health probe: not a client's).
    pub fn submit_own(&self, job: Job) -> Result<(), Busy> {
        self.push(None, None, job).map_err(|(b, _)| b)
    }

    fn push(&self, owner: Owner, tag: Option<Tag>, job: Job) -> Result<(), (Busy, Job)> {
        let mut s = lock(&self.shared.sched);
        let now = Instant::now();
        s.push(owner, Queued { tag, job, at: now }, now)
            .map_err(|(b, q)| (b, q.job))?;
        let normal_free = s.normal_free();
        drop(s);
        self.shared.wake(normal_free);
        Ok(())
    }

    /// Runs `f` on the pool for `owner` and waits for its result without
    /// blocking the runtime; a written-off scan returns
    /// [`RunError::Overrun`] at once.
    pub async fn run<T, F>(&self, owner: Owner, f: F) -> Result<T, RunError>
    where
        T: Send + 'static,
        F: FnOnce(&TaskSlot) -> T + Send + 'static,
    {
        let mut ticket = Ticket::new(owner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            &ticket.tag(),
            Box::new(move |slot| {
                let _ = tx.send(f(slot));
            }),
        )
        .map_err(RunError::Busy)?;
        tokio::select! {
            biased;
            // The sender is dropped without a value only if the job
            // panicked or was dropped unrun.
            r = rx => r.map_err(|_| RunError::Busy(Busy::Closed)),
            _ = ticket.overrun() => Err(RunError::Overrun),
        }
    }

    /// Normal threads (the share of `max-threads` this worker was given).
    pub fn threads(&self) -> usize {
        self.shared.normal
    }

    /// How many normal threads may run jobs at once (the supervisor's
    /// `Threads` message); clamped to 1 ..= [`threads`](Self::threads).
    pub fn set_limit(&self, limit: usize) {
        lock(&self.shared.sched).set_limit(limit);
        self.shared.wake_all();
    }

    /// Stops the threads once the queue is empty.
    pub fn close(&self) {
        lock(&self.shared.sched).close();
        self.shared.wake_all();
    }

    /// Drops every queued job (when no thread is left to run them).
    pub fn clear_queue(&self) -> usize {
        let dropped = lock(&self.shared.sched).clear_queue();
        dropped.len()
    }

    /// Threads not lost to a written-off scan.
    pub fn live_threads(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|s| !s.written_off())
            .count()
    }

    /// Writes off every scan whose libclamav call has run longer than
    /// `limit` at `now`: its ticket fires (the waiting connection answers
    /// its client) and it is reported once, here.
    pub fn overruns(&self, now: Instant, limit: Duration) -> Vec<Overrun> {
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for slot in &self.shared.slots {
            let mut s = lock(&slot.state);
            let tag = s.tag.clone();
            let owner = s.owner;
            let Some(t) = s.task.as_mut() else { continue };
            let Some(since) = t.engine_since else {
                continue;
            };
            let scanning_for = now.saturating_duration_since(since);
            if t.written_off || scanning_for <= limit {
                continue;
            }
            t.written_off = true;
            lost.push(slot.kind);
            if let Some(tag) = tag {
                tag.signal.send_replace(Some(t.filename.clone()));
            }
            out.push(Overrun {
                command: t.command,
                filename: t.filename.clone(),
                owner,
                scanning_for,
            });
        }
        if !lost.is_empty() {
            // Their places go to queued jobs (a normal thread may take one
            // now), outside the slots' locks.
            let mut s = lock(&self.shared.sched);
            for kind in lost {
                s.lost(kind);
            }
            let wake = s.queued() > 0 && s.normal_free();
            drop(s);
            if wake {
                self.shared.wake(true);
            }
        }
        out
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let now = Instant::now();
        let (queued, waits) = {
            let s = lock(&self.shared.sched);
            (s.queued(), s.waits(now))
        };
        let waits = if waits.is_empty() {
            None
        } else {
            let min = waits.iter().min().copied().unwrap_or_default();
            let max = waits.iter().max().copied().unwrap_or_default();
            let avg = waits.iter().sum::<Duration>() / waits.len() as u32;
            Some((min, max, avg))
        };
        let mut tasks = Vec::new();
        let mut idle = Vec::new();
        for slot in &self.shared.slots {
            match slot.snapshot() {
                Ok(t) => tasks.push(t),
                Err(since) => idle.push(now.saturating_duration_since(since)),
            }
        }
        PoolSnapshot {
            threads: self.shared.slots.len(),
            busy: tasks.len(),
            queued,
            waits,
            tasks,
            idle,
            wait_histogram: *lock(&self.shared.waited),
        }
    }
}

fn thread_main(shared: &Shared, index: usize) {
    let slot = &shared.slots[index];
    loop {
        let (owner, queued) = {
            let mut s = lock(&shared.sched);
            loop {
                if let Some(next) = s.take(slot.kind) {
                    break next;
                }
                if s.closed && s.queued() == 0 {
                    return;
                }
                s = shared.ready[slot.kind as usize]
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        if queued.tag.is_some() {
            let waited = u64::try_from(queued.at.elapsed().as_micros()).unwrap_or(u64::MAX);
            lock(&shared.waited).observe(&QUEUE_WAIT_BOUNDS_US, waited);
        }
        slot.start(owner, queued.tag);
        // A panicking job must not take the thread (and its slot) with it.
        let job = queued.job;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(slot)));
        let lost = slot.clear();
        let mut s = lock(&shared.sched);
        s.done(slot.kind, owner, lost);
        // This thread looks for its next job itself (the loop above); a
        // reserve thread's finished job may free a normal thread's place
        // for a job a reserve thread may not take.
        let normal = slot.kind == Kind::Reserve && s.queued() > 0 && s.normal_free();
        drop(s);
        if normal {
            shared.wake(true);
        }
    }
}

impl Shared {
    /// Wakes one thread for a job that may be taken now: a normal thread
    /// when one may run (every normal thread is as good as another), else
    /// a reserve thread (idem). Waking every idle thread for each job, as
    /// before, cost each of them a wake-up and a context switch per scan
    /// for nothing (measured: the two reserve threads woke 1.5 and 1.9
    /// times per 10 KiB stream, 10-33 us of CPU each).
    fn wake(&self, normal_free: bool) {
        if normal_free {
            self.ready[Kind::Normal as usize].notify_one();
        } else {
            self.ready[Kind::Reserve as usize].notify_one();
        }
    }

    fn wake_all(&self) {
        for c in &self.ready {
            c.notify_all();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn peer(n: u32) -> Owner {
        Some(PeerKey::unix(n))
    }

    // ---------------------------------------------------- the machine

    #[test]
    fn a_lone_peer_uses_every_permitted_normal_thread() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(3, 10);
        for j in 0..5 {
            s.push(peer(1), j, t).unwrap();
        }
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 0)));
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 1)));
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 2)));
        assert_eq!(s.take(Kind::Normal), None, "three normal threads run");
        assert_eq!(
            s.take(Kind::Reserve),
            None,
            "a lone peer has its whole share already: no reserve thread"
        );
        s.done(Kind::Normal, peer(1), false);
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 3)));
    }

    /// A scan past its time limit is written off but keeps its thread: its
    /// place under the limit goes to the next job, so a retiring worker
    /// finishes its other requests (one thread share of one: the other
    /// client's stream waited until the drain timeout ended it).
    #[test]
    fn a_written_off_job_gives_its_place_to_the_next() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(2, 10);
        s.set_limit(1);
        s.push(peer(1), 0, t).unwrap();
        s.push(peer(1), 1, t).unwrap();
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 0)));
        assert_eq!(s.take(Kind::Normal), None, "the limit is one");
        s.lost(Kind::Normal);
        assert!(s.normal_free());
        assert_eq!(s.take(Kind::Normal), Some((peer(1), 1)));
        assert!(!s.normal_free(), "one running that counts, one lost");
        // The lost one ends after all: the count comes back right.
        s.done(Kind::Normal, peer(1), true);
        assert!(!s.normal_free());
        s.done(Kind::Normal, peer(1), false);
        assert!(s.normal_free());
    }

    #[test]
    fn the_peer_with_fewest_running_jobs_goes_first_round_robin_among_equals() {
        let t = Instant::now();
        let mut s: Sched<&str> = Sched::new(4, 20);
        for j in ["a1", "a2", "a3"] {
            s.push(peer(1), j, t).unwrap();
        }
        for j in ["b1", "b2"] {
            s.push(peer(2), j, t).unwrap();
        }
        s.push(peer(3), "c1", t).unwrap();
        let order: Vec<_> = (0..4).map(|_| s.take(Kind::Normal).unwrap().1).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2"]);
        // a has 2 running, b 1, c 1 (c has nothing queued): b goes next.
        s.done(Kind::Normal, peer(3), false);
        assert_eq!(s.take(Kind::Normal).unwrap().1, "b2");
        s.done(Kind::Normal, peer(1), false);
        assert_eq!(s.take(Kind::Normal).unwrap().1, "a3");
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn reserve_threads_serve_only_peers_below_their_fair_share() {
        let t = Instant::now();
        let mut s: Sched<&str> = Sched::new(2, 20);
        for j in ["h1", "h2", "h3", "h4"] {
            s.push(peer(66), j, t).unwrap();
        }
        assert_eq!(s.take(Kind::Normal).unwrap().1, "h1");
        assert_eq!(s.take(Kind::Reserve), None, "a normal thread is still free");
        assert_eq!(s.take(Kind::Normal).unwrap().1, "h2");
        assert_eq!(s.take(Kind::Reserve), None, "the hog is over its share");
        s.push(peer(1), "honest", t).unwrap();
        assert_eq!(
            s.take(Kind::Reserve),
            Some((peer(1), "honest")),
            "share 2/2 = 1, the honest peer runs 0"
        );
        s.push(peer(1), "honest2", t).unwrap();
        assert_eq!(
            s.take(Kind::Reserve),
            None,
            "the honest peer now runs its share"
        );
        s.push(peer(2), "other", t).unwrap();
        assert_eq!(s.take(Kind::Reserve).unwrap().1, "other");
    }

    #[test]
    fn queue_caps_are_global_and_per_peer() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(1, 6);
        assert_eq!(peer_queue_cap(6), 3);
        for j in 0..3 {
            s.push(peer(1), j, t).unwrap();
        }
        assert_eq!(s.push(peer(1), 3, t), Err((Busy::PeerQueueFull, 3)));
        for j in 0..3 {
            s.push(peer(2), j, t).unwrap();
        }
        assert_eq!(s.push(peer(3), 0, t), Err((Busy::QueueFull, 0)));
        assert_eq!(peer_queue_cap(1), 1);
        assert_eq!(peer_queue_cap(0), 1);
    }

    #[test]
    fn the_limit_caps_normal_threads_and_the_fair_share() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(4, 20);
        s.set_limit(1);
        for j in 0..3 {
            s.push(peer(1), j, t).unwrap();
        }
        assert!(s.take(Kind::Normal).is_some());
        assert_eq!(s.take(Kind::Normal), None, "limit 1");
        s.set_limit(0);
        assert_eq!(s.limit(), 1, "at least one thread");
        s.set_limit(99);
        assert_eq!(s.limit(), 4, "at most the normal threads");
        assert!(s.take(Kind::Normal).is_some());
    }

    #[test]
    fn closed_and_cleared_queues() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(1, 4);
        s.push(peer(1), 1, t).unwrap();
        s.push(None, 2, t).unwrap();
        assert_eq!(s.clear_queue().len(), 2);
        assert_eq!(s.queued(), 0);
        assert_eq!(s.take(Kind::Normal), None);
        s.close();
        assert_eq!(s.push(peer(1), 3, t), Err((Busy::Closed, 3)));
    }

    // ---------------------------------------------------- with threads

    /// A job that says it started, then waits for its gate.
    fn held(started: &mpsc::Sender<&'static str>, name: &'static str) -> (Job, mpsc::Sender<()>) {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let started = started.clone();
        let job: Job = Box::new(move |slot| {
            slot.begin("INSTREAM", name.as_bytes());
            started.send(name).unwrap();
            let _ = gate_rx.recv();
        });
        (job, gate_tx)
    }

    fn tag(owner: Owner) -> Tag {
        Ticket::new(owner).tag()
    }

    #[test]
    fn full_queue_is_refused_at_once() {
        let pool = ScanPool::new(1, 0, 4).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (job, gate) = held(&started_tx, "first");
        pool.submit(&tag(peer(1)), job).unwrap();
        started_rx.recv().unwrap();
        pool.submit(&tag(peer(1)), Box::new(|_| {})).unwrap();
        pool.submit(&tag(peer(1)), Box::new(|_| {})).unwrap();
        assert_eq!(
            pool.submit(&tag(peer(1)), Box::new(|_| {})),
            Err(Busy::PeerQueueFull),
            "one peer holds half of max-queue at most"
        );
        pool.submit(&tag(peer(2)), Box::new(|_| {})).unwrap();
        pool.submit(&tag(peer(3)), Box::new(|_| {})).unwrap();
        assert_eq!(
            pool.submit(&tag(peer(4)), Box::new(|_| {})),
            Err(Busy::QueueFull)
        );
        assert_eq!(pool.snapshot().queued, 4);
        gate.send(()).unwrap();
    }

    #[test]
    fn slots_show_running_tasks_with_their_owner() {
        let pool = ScanPool::new(2, 0, 4).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (job, gate) = held(&started_tx, "/x");
        pool.submit(&tag(peer(7)), job).unwrap();
        started_rx.recv().unwrap();
        let snap = pool.snapshot();
        assert_eq!(snap.busy, 1);
        assert_eq!(snap.tasks[0].filename, "/x");
        assert_eq!(snap.tasks[0].owner, peer(7));
        gate.send(()).unwrap();
    }

    #[test]
    fn a_lone_peer_runs_on_every_normal_thread_at_once() {
        let pool = ScanPool::new(3, 2, 10).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let mut gates = Vec::new();
        for name in ["a", "b", "c"] {
            let (job, gate) = held(&started_tx, name);
            pool.submit(&tag(peer(1)), job).unwrap();
            gates.push(gate);
        }
        // All three run at once: each waits for its gate, none was opened.
        let mut started: Vec<_> = (0..3).map(|_| started_rx.recv().unwrap()).collect();
        started.sort_unstable();
        assert_eq!(started, ["a", "b", "c"]);
        drop(gates);
    }

    #[test]
    fn a_hog_holding_every_normal_thread_does_not_delay_another_peer() {
        let pool = ScanPool::new(2, 1, 20).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let mut gates = Vec::new();
        for name in ["hog1", "hog2", "hog3", "hog4"] {
            let (job, gate) = held(&started_tx, name);
            pool.submit(&tag(peer(66)), job).unwrap();
            gates.push(gate);
        }
        // The first two, each on a normal thread (which one says so first
        // is up to the scheduler).
        let mut first: Vec<_> = (0..2).map(|_| started_rx.recv().unwrap()).collect();
        first.sort_unstable();
        assert_eq!(first, ["hog1", "hog2"]);
        // Every normal thread is held (their gates stay shut); the honest
        // job starts anyway, on the reserve thread, before any hog is done.
        let (job, honest_gate) = held(&started_tx, "honest");
        pool.submit(&tag(peer(1)), job).unwrap();
        assert_eq!(started_rx.recv().unwrap(), "honest");
        let snap = pool.snapshot();
        assert_eq!(snap.busy, 3);
        assert_eq!(snap.queued, 2, "hog3 and hog4 still wait");
        drop(honest_gate);
        drop(gates);
    }

    #[test]
    fn the_limit_message_takes_effect() {
        let pool = ScanPool::new(2, 0, 10).unwrap();
        pool.set_limit(1);
        let (started_tx, started_rx) = mpsc::channel();
        let (job_a, gate_a) = held(&started_tx, "a");
        let (job_b, gate_b) = held(&started_tx, "b");
        pool.submit(&tag(peer(1)), job_a).unwrap();
        pool.submit(&tag(peer(1)), job_b).unwrap();
        assert_eq!(started_rx.recv().unwrap(), "a");
        assert_eq!(pool.snapshot().queued, 1, "b waits: one thread permitted");
        pool.set_limit(2);
        assert_eq!(
            started_rx.recv().unwrap(),
            "b",
            "the raised limit lets b run"
        );
        drop((gate_a, gate_b));
    }

    #[test]
    fn an_overrun_fires_the_ticket_once_and_is_reported_once() {
        let pool = ScanPool::new(1, 0, 4).unwrap();
        let mut ticket = Ticket::new(peer(1));
        let (in_tx, in_rx) = mpsc::channel::<()>();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        pool.submit(
            &ticket.tag(),
            Box::new(move |slot| {
                slot.begin("SCAN", b"/slow");
                slot.scanning(|| {
                    in_tx.send(()).unwrap();
                    let _ = gate_rx.recv();
                });
            }),
        )
        .unwrap();
        in_rx.recv().unwrap();
        let now = Instant::now();
        assert!(pool.overruns(now, Duration::from_secs(5)).is_empty());
        let later = now + Duration::from_secs(6);
        let written = pool.overruns(later, Duration::from_secs(5));
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].filename, b"/slow");
        assert!(pool.overruns(later, Duration::from_secs(5)).is_empty());
        assert_eq!(pool.live_threads(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(ticket.overrun()), b"/slow");
        gate_tx.send(()).unwrap();
    }
}
