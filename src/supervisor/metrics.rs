//! The daemon's numbers, gathered in the supervisor: a pure aggregator.
//!
//! Events come in from the event loop (connections accepted, refused or
//! evicted, reload starts and ends, engine loads, worker replacements, each
//! worker's counters, each process's own resource use, self-test results);
//! [`Metrics::snapshot`] turns them, with what the event loop knows now
//! (workers by state, open connections, flags), into the bounded
//! [`Snapshot`] the observer renders. No I/O, no clock of its own: times are
//! passed in, so the tests below drive it with made-up ones.
//!
//! Counters never go down: a worker's counters are cumulative since it
//! started, and when it is gone its last report is added to the totals of
//! retired workers; the same for the CPU time of every process. A worker
//! that crashed loses what it counted after its last report (at most about
//! a second).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::lifecycle::Note;
use crate::ipc::messages::EngineReady;
use crate::ipc::observe::{
    printable, ConnOutcome, DbInfo, DurationHistogram, Flags, ListenerCounts, ListenerStats,
    PoolNow, ProcUsage, QueueWaitHistogram, ReloadHistogram, ReloadRecord, ReloadTrigger,
    RestartReason, Role, RoleUsage, SelftestOutcome, SelftestState, SizeHistogram, Snapshot,
    WorkerCounters, WorkerStates, MAX_DETAIL, MAX_LISTENERS, MAX_RECENT_RELOADS, MAX_TOP,
    OTHER_LISTENER, RELOAD_BOUNDS_US,
};

/// Distinct signature names kept for the opt-in list (beyond, the counts of
/// gone workers keep only the names already known).
pub const MAX_NAMES: usize = 1024;

/// One of the daemon's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proc {
    Supervisor,
    EngineHolder(u64),
    Worker(u64),
    Observer,
}

impl Proc {
    fn role(self) -> Role {
        match self {
            Proc::Supervisor => Role::Supervisor,
            Proc::EngineHolder(_) => Role::EngineHolder,
            Proc::Worker(_) => Role::Worker,
            Proc::Observer => Role::Observer,
        }
    }
}

/// What the event loop knows at the moment of a snapshot.
pub struct Now<'a> {
    /// Wall clock, ms since the epoch.
    pub unix_ms: u64,
    pub engine: Option<&'a EngineReady>,
    pub generation: u64,
    pub workers: WorkerStates,
    /// Open connections per listener name.
    pub open: &'a [(String, u32)],
    pub flags: Flags,
}

/// Counts of workers that are gone.
#[derive(Default)]
struct Retired {
    listeners: Vec<ListenerCounts>,
    duration: DurationHistogram,
    size: SizeHistogram,
    queue_wait: QueueWaitHistogram,
    detections: Vec<u64>,
    names: HashMap<String, u64>,
    limits: Vec<u64>,
    errors: Vec<u64>,
    abandoned: u64,
}

/// The aggregator. See the module documentation.
pub struct Metrics {
    started: u64,
    version: String,
    top: usize,
    seq: u64,
    /// The listeners the supervisor serves, in order, with their
    /// connection outcomes.
    listeners: Vec<(String, [u64; ConnOutcome::COUNT])>,
    reloads: Vec<u64>,
    reload_duration: ReloadHistogram,
    recent: VecDeque<ReloadRecord>,
    reload_started: Option<(Instant, ReloadTrigger)>,
    engine_load: Duration,
    live: BTreeMap<u64, WorkerCounters>,
    retired: Retired,
    restarts: Vec<u64>,
    procs: BTreeMap<Proc, ProcUsage>,
    retired_cpu: [u64; Role::COUNT],
    selftest: SelftestState,
}

fn add_all(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// Adds `l` into the list under its name, within [`MAX_LISTENERS`]
/// (beyond: into [`OTHER_LISTENER`]).
fn merge_listener(list: &mut Vec<ListenerCounts>, l: &ListenerCounts) {
    if let Some(e) = list.iter_mut().find(|e| e.name == l.name) {
        e.add(l);
    } else if list.len() < MAX_LISTENERS - 1 || l.name == OTHER_LISTENER {
        list.push(l.clone());
    } else {
        let mut moved = l.clone();
        moved.name = OTHER_LISTENER.into();
        merge_listener(list, &moved);
    }
}

fn add_names(names: &mut HashMap<String, u64>, top: &[(String, u64)]) {
    for (name, n) in top {
        if let Some(x) = names.get_mut(name) {
            *x = x.saturating_add(*n);
        } else if names.len() < MAX_NAMES {
            names.insert(name.clone(), *n);
        }
    }
}

impl Metrics {
    /// `started`: the daemon's start, seconds since the epoch; `listeners`:
    /// the names of the listeners it serves; `top`: `metrics.top-detections`;
    /// `selftest`: whether `selftest.interval` is not 0.
    pub fn new(started: u64, listeners: &[String], top: usize, selftest: bool) -> Metrics {
        Metrics {
            started,
            version: env!("CARGO_PKG_VERSION").to_string(),
            top: top.min(MAX_TOP),
            seq: 0,
            listeners: listeners
                .iter()
                .take(MAX_LISTENERS - 2)
                .map(|n| (printable(n, 64), [0; ConnOutcome::COUNT]))
                .collect(),
            reloads: vec![0; ReloadTrigger::COUNT * 2],
            reload_duration: ReloadHistogram::default(),
            recent: VecDeque::new(),
            reload_started: None,
            engine_load: Duration::ZERO,
            live: BTreeMap::new(),
            retired: Retired::default(),
            restarts: vec![0; RestartReason::COUNT],
            procs: BTreeMap::new(),
            retired_cpu: [0; Role::COUNT],
            selftest: SelftestState {
                enabled: selftest,
                ..SelftestState::default()
            },
        }
    }

    /// A connection on listener `name` and what became of it.
    pub fn connection(&mut self, name: &str, outcome: ConnOutcome) {
        self.connections(name, outcome, 1);
    }

    /// `n` connections on listener `name` with the same outcome.
    pub fn connections(&mut self, name: &str, outcome: ConnOutcome, n: u64) {
        let at = match self.listeners.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None if self.listeners.len() < MAX_LISTENERS - 2 => {
                self.listeners
                    .push((printable(name, 64), [0; ConnOutcome::COUNT]));
                self.listeners.len() - 1
            }
            None => return,
        };
        let c = &mut self.listeners[at].1[outcome.index()];
        *c = c.saturating_add(n);
    }

    /// What the lifecycle told the status line: reloads, engine loads,
    /// worker replacements. `now` and `unix` (seconds) are the same moment.
    pub fn note(&mut self, note: &Note, now: Instant, unix: u64) {
        match note {
            Note::Reloading(trigger) => {
                self.reload_started = Some((now, *trigger));
            }
            Note::Reloaded { ok, db_version, .. } => {
                let (since, trigger) = self
                    .reload_started
                    .take()
                    .unwrap_or((now, ReloadTrigger::EngineRestart));
                let took = now.saturating_duration_since(since);
                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                let i = trigger.index() * 2 + usize::from(*ok);
                self.reloads[i] = self.reloads[i].saturating_add(1);
                self.reload_duration.observe(&RELOAD_BOUNDS_US, us);
                if self.recent.len() == MAX_RECENT_RELOADS {
                    self.recent.pop_front();
                }
                self.recent.push_back(ReloadRecord {
                    at: unix,
                    trigger,
                    ok: *ok,
                    duration_us: us,
                    db_version: *db_version,
                });
            }
            Note::EngineLoaded(took) => self.engine_load = *took,
            Note::WorkerReplaced(reason) => {
                let c = &mut self.restarts[reason.index()];
                *c = c.saturating_add(1);
            }
            _ => {}
        }
    }

    /// A worker's report: its counters replace its previous ones.
    pub fn worker_counters(&mut self, worker: u64, mut counters: WorkerCounters) {
        counters.normalise();
        self.procs.insert(Proc::Worker(worker), counters.usage);
        self.live.insert(worker, counters);
    }

    /// A process's own resource use.
    pub fn usage(&mut self, proc: Proc, usage: ProcUsage) {
        self.procs.insert(proc, usage);
    }

    /// A process is gone: its last counts become totals of the retired.
    pub fn gone(&mut self, proc: Proc) {
        if let Some(u) = self.procs.remove(&proc) {
            let r = &mut self.retired_cpu[proc.role().index()];
            *r = r.saturating_add(u.cpu_us);
        }
        let Proc::Worker(w) = proc else { return };
        let Some(c) = self.live.remove(&w) else {
            return;
        };
        let r = &mut self.retired;
        for l in &c.listeners {
            merge_listener(&mut r.listeners, l);
        }
        r.duration.add(&c.duration);
        r.size.add(&c.size);
        r.queue_wait.add(&c.queue_wait);
        add_all(&mut r.detections, &c.detections);
        add_names(&mut r.names, &c.top);
        add_all(&mut r.limits, &c.limits);
        add_all(&mut r.errors, &c.errors);
        r.abandoned = r.abandoned.saturating_add(c.abandoned);
    }

    /// A self-test ended (`unix`: seconds since the epoch).
    pub fn selftest(&mut self, outcome: SelftestOutcome, detail: &str, unix: u64) {
        let s = &mut self.selftest;
        let c = &mut s.runs[outcome.index()];
        *c = c.saturating_add(1);
        match outcome {
            SelftestOutcome::Passed => {
                s.last_success = unix;
                s.failing = false;
            }
            SelftestOutcome::Failed => {
                s.last_failure = unix;
                s.failing = true;
            }
            SelftestOutcome::Skipped => return,
        }
        s.detail = printable(detail, MAX_DETAIL);
    }

    /// Whether the last self-test that ran failed.
    pub fn selftest_failing(&self) -> bool {
        self.selftest.failing
    }

    /// Proportional set size (KiB) of `worker` and of the whole daemon,
    /// from the processes' own reports: what STATS shows.
    pub fn memory(&self, worker: u64) -> (u64, u64) {
        let mine = self
            .procs
            .get(&Proc::Worker(worker))
            .map_or(0, |u| u.pss_kib);
        // Each process's own report: a lie saturates, never overflows.
        let total = self
            .procs
            .values()
            .fold(0u64, |t, u| t.saturating_add(u.pss_kib));
        (mine, total)
    }

    pub fn snapshot(&mut self, now: Now<'_>) -> Snapshot {
        self.seq += 1;
        let mut s = Snapshot {
            seq: self.seq,
            time_ms: now.unix_ms,
            started: self.started,
            version: self.version.clone(),
            libclamav: now
                .engine
                .map(|e| e.engine_version.clone())
                .unwrap_or_else(crate::engine::version),
            db: now.engine.map_or(DbInfo::default(), |e| DbInfo {
                version: e.db_version,
                signatures: e.signatures,
                build_time: e.db_time,
            }),
            generation: now.generation,
            engine_load_us: u64::try_from(self.engine_load.as_micros()).unwrap_or(u64::MAX),
            reloads: self.reloads.clone(),
            reload_duration: self.reload_duration,
            recent_reloads: self.recent.iter().rev().copied().collect(),
            workers: now.workers,
            restarts: self.restarts.clone(),
            selftest: self.selftest.clone(),
            flags: now.flags,
            ..Snapshot::default()
        };
        // Listeners: the supervisor's, then what only workers name
        // ("selftest", more from a wide systemd setup).
        let mut counts: Vec<ListenerCounts> = self
            .listeners
            .iter()
            .map(|(n, _)| ListenerCounts::new(n))
            .collect();
        let r = &self.retired;
        for l in &r.listeners {
            merge_listener(&mut counts, l);
        }
        let mut duration = r.duration;
        let mut size = r.size;
        let mut queue_wait = r.queue_wait;
        let mut detections = r.detections.clone();
        let mut names = r.names.clone();
        let mut limits = r.limits.clone();
        let mut errors = r.errors.clone();
        let mut abandoned = r.abandoned;
        let mut pool = PoolNow::default();
        for c in self.live.values() {
            for l in &c.listeners {
                merge_listener(&mut counts, l);
            }
            duration.add(&c.duration);
            size.add(&c.size);
            queue_wait.add(&c.queue_wait);
            add_all(&mut detections, &c.detections);
            add_names(&mut names, &c.top);
            add_all(&mut limits, &c.limits);
            add_all(&mut errors, &c.errors);
            abandoned = abandoned.saturating_add(c.abandoned);
            let p = &c.pool;
            if p.queued > 0 {
                pool.wait_min_us = if pool.queued == 0 {
                    p.wait_min_us
                } else {
                    pool.wait_min_us.min(p.wait_min_us)
                };
                pool.wait_max_us = pool.wait_max_us.max(p.wait_max_us);
                pool.wait_sum_us = pool.wait_sum_us.saturating_add(p.wait_sum_us);
            }
            pool.threads = pool.threads.saturating_add(p.threads);
            pool.busy = pool.busy.saturating_add(p.busy);
            pool.queued = pool.queued.saturating_add(p.queued);
        }
        s.listeners = counts
            .into_iter()
            .map(|counts| {
                let open = now
                    .open
                    .iter()
                    .find(|(n, _)| *n == counts.name)
                    .map_or(0, |(_, o)| *o);
                let connections = self
                    .listeners
                    .iter()
                    .find(|(n, _)| *n == counts.name)
                    .map_or([0; ConnOutcome::COUNT], |(_, c)| *c);
                ListenerStats {
                    counts,
                    open,
                    connections,
                }
            })
            .collect();
        s.duration = duration;
        s.size = size;
        s.queue_wait = queue_wait;
        s.detections = detections;
        s.limits = limits;
        s.errors = errors;
        s.abandoned = abandoned;
        s.pool = pool;
        if self.top > 0 {
            s.top = crate::ipc::observe::top_names(&names, self.top);
        }
        s.roles = Role::ALL
            .iter()
            .map(|role| {
                let mut u = RoleUsage {
                    cpu_us: self.retired_cpu[role.index()],
                    ..RoleUsage::default()
                };
                for (_, p) in self.procs.iter().filter(|(k, _)| k.role() == *role) {
                    u.processes += 1;
                    u.pss_kib = u.pss_kib.saturating_add(p.pss_kib);
                    u.rss_kib = u.rss_kib.saturating_add(p.rss_kib);
                    u.cpu_us = u.cpu_us.saturating_add(p.cpu_us);
                    u.fds = u.fds.saturating_add(u64::from(p.fds));
                }
                u
            })
            .collect();
        s.normalise();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::observe::{
        Category, CommandOutcome, ErrorReason, Limit, ScanCommand, ScanResult,
    };
    use crate::proto::CommandKind;

    fn engine() -> EngineReady {
        EngineReady {
            engine_version: "1.4.6".into(),
            signatures: 3,
            db_version: 27999,
            db_time: 1_700_000_000,
            sandbox: String::new(),
            load_peak_kib: 0,
        }
    }

    fn now<'a>(e: &'a EngineReady, open: &'a [(String, u32)]) -> Now<'a> {
        Now {
            unix_ms: 1_700_000_500_000,
            engine: Some(e),
            generation: 1,
            workers: WorkerStates {
                configured: 2,
                forking: 0,
                serving: 2,
                draining: 0,
            },
            open,
            flags: Flags {
                engine: true,
                ..Flags::default()
            },
        }
    }

    fn worker_report(scans: u64, found: u64, cpu: u64) -> WorkerCounters {
        let mut c = WorkerCounters::empty();
        let mut l = ListenerCounts::new("tcp");
        l.scans[ScanCommand::Instream.index() * 3 + ScanResult::Clean.index()] = scans - found;
        l.scans[ScanCommand::Instream.index() * 3 + ScanResult::Found.index()] = found;
        l.commands[crate::ipc::observe::command_index(CommandKind::Instream) * 3
            + CommandOutcome::Allowed.index()] = scans;
        c.listeners.push(l);
        for _ in 0..scans {
            c.duration
                .observe(&crate::ipc::observe::DURATION_BOUNDS_US, 2_000);
        }
        c.detections[Category::Win.index()] = found;
        c.top = vec![("Win.Test.EICAR_HDB-1".into(), found)];
        c.limits[Limit::MaxQueue.index()] = 1;
        c.errors[ErrorReason::QueueFull.index()] = 1;
        c.pool = PoolNow {
            threads: 2,
            busy: 1,
            queued: 1,
            wait_min_us: 10,
            wait_max_us: 10,
            wait_sum_us: 10,
        };
        c.usage = ProcUsage {
            pss_kib: 1000,
            rss_kib: 2000,
            cpu_us: cpu,
            fds: 10,
        };
        c
    }

    fn tcp(s: &Snapshot) -> &ListenerStats {
        s.listeners.iter().find(|l| l.counts.name == "tcp").unwrap()
    }

    /// The second outside review's round 2: one worker reporting
    /// u64::MAX made root panic on an addition and the daemon stop.
    #[test]
    fn a_workers_lies_saturate_and_never_fault() {
        let e = engine();
        let mut m = Metrics::new(1_700_000_000, &["tcp".into()], 5, true);
        let mut lie = worker_report(0, 0, 0);
        for x in lie.listeners[0].scans.iter_mut() {
            *x = u64::MAX;
        }
        lie.usage = ProcUsage {
            pss_kib: u64::MAX,
            rss_kib: u64::MAX,
            cpu_us: u64::MAX,
            fds: u32::MAX,
        };
        lie.pool.threads = u32::MAX;
        lie.pool.busy = u32::MAX;
        lie.pool.queued = u32::MAX;
        m.worker_counters(1, lie.clone());
        m.worker_counters(2, lie);
        m.worker_counters(3, worker_report(1, 0, 5));
        assert_eq!(m.memory(3).1, u64::MAX);
        let s = m.snapshot(now(&e, &[]));
        let w = &s.roles[Role::Worker.index()];
        assert_eq!(
            (w.pss_kib, w.rss_kib, w.cpu_us),
            (u64::MAX, u64::MAX, u64::MAX)
        );
        assert_eq!(s.pool.threads, u32::MAX);
        assert_eq!(s.scans_by_result(ScanResult::Found), u64::MAX);
    }

    #[test]
    fn worker_counts_add_up_and_never_go_down() {
        let e = engine();
        let mut m = Metrics::new(1_700_000_000, &["unix".into(), "tcp".into()], 5, true);
        m.worker_counters(1, worker_report(10, 2, 100));
        m.worker_counters(2, worker_report(5, 1, 50));
        let open = [("tcp".to_string(), 3u32)];
        let s = m.snapshot(now(&e, &open));
        assert_eq!(s.scans_by_result(ScanResult::Found), 3);
        assert_eq!(s.scans_by_result(ScanResult::Clean), 12);
        assert_eq!(tcp(&s).open, 3);
        assert_eq!(
            tcp(&s)
                .counts
                .commands(CommandKind::Instream, CommandOutcome::Allowed),
            15
        );
        assert_eq!(s.detections[Category::Win.index()], 3);
        assert_eq!(s.top, vec![("Win.Test.EICAR_HDB-1".to_string(), 3)]);
        assert_eq!(s.duration.count(), 15);
        assert_eq!(s.pool.threads, 4);
        assert_eq!(s.pool.queued, 2);
        assert_eq!(s.db.build_time, 1_700_000_000);
        let w = &s.roles[Role::Worker.index()];
        assert_eq!((w.processes, w.pss_kib, w.cpu_us), (2, 2000, 150));

        // Worker 1 is gone: what it reported stays in the totals.
        m.gone(Proc::Worker(1));
        let s2 = m.snapshot(now(&e, &open));
        assert_eq!(s2.scans_by_result(ScanResult::Found), 3);
        assert_eq!(s2.duration.count(), 15);
        assert_eq!(s2.limits[Limit::MaxQueue.index()], 2);
        let w = &s2.roles[Role::Worker.index()];
        assert_eq!(
            (w.processes, w.cpu_us),
            (1, 150),
            "CPU of the gone one kept"
        );
        assert_eq!(s2.seq, s.seq + 1);
        // Its replacement starts counting from zero.
        m.worker_counters(3, worker_report(1, 0, 5));
        let s3 = m.snapshot(now(&e, &open));
        assert_eq!(s3.scans_by_result(ScanResult::Clean), 13);
    }

    #[test]
    fn connections_reloads_restarts_and_selftests() {
        let e = engine();
        let t = Instant::now();
        let mut m = Metrics::new(1, &["unix".into(), "tcp".into()], 0, true);
        m.connection("tcp", ConnOutcome::Accepted);
        m.connection("tcp", ConnOutcome::Refused);
        m.connection("unix", ConnOutcome::Evicted);
        m.note(&Note::Reloading(ReloadTrigger::Signal), t, 100);
        m.note(
            &Note::Reloaded {
                ok: true,
                signatures: 3,
                db_version: 28000,
            },
            t + Duration::from_secs(3),
            103,
        );
        m.note(&Note::Reloading(ReloadTrigger::Command), t, 200);
        m.note(
            &Note::Reloaded {
                ok: false,
                signatures: 0,
                db_version: 0,
            },
            t + Duration::from_millis(400),
            201,
        );
        m.note(&Note::EngineLoaded(Duration::from_millis(1500)), t, 0);
        m.note(&Note::WorkerReplaced(RestartReason::Wedged), t, 0);
        m.note(&Note::WorkerReplaced(RestartReason::Crashed), t, 0);
        m.note(&Note::WorkerReplaced(RestartReason::Crashed), t, 0);
        m.selftest(SelftestOutcome::Passed, "stream: Eicar FOUND", 300);
        assert!(!m.selftest_failing());
        m.selftest(SelftestOutcome::Failed, "stream: OK\n", 360);
        m.selftest(SelftestOutcome::Skipped, "no worker", 420);
        assert!(m.selftest_failing());
        m.usage(
            Proc::Supervisor,
            ProcUsage {
                pss_kib: 5,
                rss_kib: 6,
                cpu_us: 7,
                fds: 8,
            },
        );
        m.usage(
            Proc::EngineHolder(1),
            ProcUsage {
                pss_kib: 50,
                ..ProcUsage::default()
            },
        );
        m.worker_counters(4, worker_report(1, 0, 1));
        assert_eq!(m.memory(4), (1000, 1055));
        let s = m.snapshot(now(&e, &[]));
        assert_eq!(tcp(&s).connections, [1, 1, 0, 0]);
        assert_eq!(s.listeners[0].counts.name, "unix");
        assert_eq!(s.listeners[0].connections[ConnOutcome::Evicted.index()], 1);
        assert_eq!(s.reloads[ReloadTrigger::Signal.index() * 2 + 1], 1);
        assert_eq!(s.reloads[ReloadTrigger::Command.index() * 2], 1);
        assert_eq!(s.reload_duration.count(), 2);
        assert_eq!(s.reload_duration.sum, 3_400_000);
        assert_eq!(s.recent_reloads.len(), 2);
        assert_eq!(s.recent_reloads[0].at, 201, "newest first");
        assert!(!s.recent_reloads[0].ok);
        assert_eq!(s.engine_load_us, 1_500_000);
        assert_eq!(s.restarts[RestartReason::Crashed.index()], 2);
        assert_eq!(s.restarts[RestartReason::Wedged.index()], 1);
        assert_eq!(s.selftest.runs, [1, 1, 1]);
        assert_eq!(s.selftest.last_success, 300);
        assert_eq!(s.selftest.last_failure, 360);
        assert!(s.selftest.failing);
        assert_eq!(
            s.selftest.detail, "stream: OK ",
            "control characters are not passed on"
        );
        assert_eq!(s.roles[Role::Supervisor.index()].fds, 8);
        assert_eq!(s.roles[Role::EngineHolder.index()].pss_kib, 50);
        m.gone(Proc::EngineHolder(1));
        assert_eq!(m.memory(4), (1000, 1005));
        // The snapshot always fits the observer's decoder.
        let bytes = crate::ipc::observe::ToObserver::Snapshot(Box::new(s.clone())).encode();
        assert_eq!(
            crate::ipc::observe::ToObserver::decode(&bytes).unwrap(),
            crate::ipc::observe::ToObserver::Snapshot(Box::new(s))
        );
    }

    #[test]
    fn listeners_beyond_the_bound_share_one_entry() {
        let e = engine();
        let mut m = Metrics::new(1, &[], 0, false);
        for i in 0..40 {
            let mut c = WorkerCounters::empty();
            let mut l = ListenerCounts::new(&format!("l{i}"));
            l.scans[0] = 1;
            c.listeners.push(l);
            m.worker_counters(i, c);
            m.connection(&format!("c{i}"), ConnOutcome::Accepted);
        }
        let s = m.snapshot(now(&e, &[]));
        assert!(s.listeners.len() <= MAX_LISTENERS);
        let total: u64 = s.listeners.iter().map(|l| l.counts.scans[0]).sum();
        assert_eq!(total, 40, "nothing is lost, only grouped");
    }
}
