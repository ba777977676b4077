//! What every connection of a worker shares: the configuration, the engine,
//! the scan pool, counters, the listener profiles, the stream memory budget,
//! the broker client and the line to the supervisor.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::files::{BrokerClient, ConnFiles, ConnGuard};
use super::pool::ScanPool;
use super::streams::StreamMemory;
use crate::config::Config;
use crate::engine::{Engine, Verdict};
use crate::ipc::messages::{
    fit_tasks, ConnInfo, Fleet, FromWorker, PeerInfo, PoolCounts, RetireReason, TaskInfo,
    TASK_LIST_ROOM,
};
use crate::policy::{ListenerKind, PeerKey, Profile};

/// Counters since the worker started, for pongs and STATS.
#[derive(Default)]
pub struct Counters {
    pub scans: AtomicU64,
    pub found: AtomicU64,
    pub errors: AtomicU64,
    /// Path walks stopped because their client went away.
    pub abandoned: AtomicU64,
}

/// State shared by every connection of this worker.
pub struct Shared {
    pub config: Arc<Config>,
    engine: Arc<Engine>,
    pub pool: ScanPool,
    pub counters: Counters,
    pub worker: u64,
    pub(crate) multiscans: AtomicUsize,
    pub(crate) excludes: Vec<regex::bytes::Regex>,
    /// The device of /proc, which path scans skip.
    pub(crate) proc_dev: u64,
    unix_profile: Profile,
    tcp_profile: Profile,
    /// Stream data this worker's connections hold, within the
    /// supervisor's grant (`limits.stream-memory` for the whole daemon).
    pub(crate) streams: Arc<StreamMemory>,
    broker: Arc<BrokerClient>,
    upstream: mpsc::UnboundedSender<FromWorker>,
    shutdown: watch::Sender<bool>,
    /// Open connections (drain ends when it reaches 0).
    pub(crate) open: AtomicUsize,
    /// What the supervisor last told about the daemon (STATS).
    fleet: Mutex<Fleet>,
    /// Set once the worker asked to be replaced.
    retiring: std::sync::atomic::AtomicBool,
    /// Log budgets per peer (address or uid).
    peer_logs: Mutex<crate::log::limiter::Limiter<crate::policy::PeerKey>>,
    /// Administrative commands waiting for the supervisor's acceptance.
    /// Administrative commands waiting for the supervisor's answer (with
    /// the node's maintenance state), by connection.
    admin_answers: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<bool>>>,
    /// Clients that hang up while their work runs ([`super::hangup`]).
    pub hangups: Arc<super::hangup::Hangups>,
    /// Set when a scan overran its time limit: the worker retires and
    /// exits by then, whatever is left.
    exit_by: Mutex<Option<Instant>>,
    /// Administrators' STATS waiting for the daemon's task list, by
    /// connection.
    stats_waiters: Mutex<HashMap<u64, oneshot::Sender<DaemonTasks>>>,
    /// What the metrics count (see [`super::metrics`]).
    pub metrics: super::metrics::Collector,
}

/// How long an administrative command waits for the supervisor's answer.
/// A refused one is never answered (the client already left, or the
/// worker is ended for asking).
const ADMIN_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// Scan tasks and pools, as an administrator's STATS shows them: the
/// whole daemon's (from the supervisor) or one worker's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonTasks {
    pub tasks: Vec<TaskInfo>,
    /// Tasks left out to keep a message under its size.
    pub omitted: u32,
    pub pool: PoolCounts,
}

/// How long an administrator's STATS waits for the daemon-wide task list
/// before it shows this worker's tasks alone.
pub const STATS_TASKS_WAIT: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How this worker was set up by the supervisor and the zygote.
pub struct Setup {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub worker: u64,
    pub threads: usize,
    pub queue: usize,
    pub proc_dev: u64,
    pub broker: BrokerClient,
    pub upstream: mpsc::UnboundedSender<FromWorker>,
}

impl Shared {
    pub fn new(s: Setup) -> std::io::Result<Arc<Shared>> {
        let config = s.config;
        let limits = &config.limits;
        let pool = ScanPool::new(s.threads, limits.reserve_threads as usize, s.queue)?;
        let excludes = config
            .scan
            .exclude_path
            .iter()
            .filter_map(|p| regex::bytes::Regex::new(p).ok())
            .collect();
        let (shutdown, _) = watch::channel(false);
        let policy = &config.policy;
        let unix_profile = Profile::new(ListenerKind::Unix, &policy.unix.commands);
        let tcp_profile = Profile::new(ListenerKind::Tcp, &policy.tcp.commands);
        // Until the supervisor's first grant: the whole daemon's bound.
        // No stream memory until the supervisor grants some (it does when
        // it binds the worker to a client, before the first connection).
        let streams = StreamMemory::new(0, s.upstream.clone());
        Ok(Arc::new(Shared {
            unix_profile,
            tcp_profile,
            streams,
            engine: Arc::new(s.engine),
            pool,
            counters: Counters::default(),
            worker: s.worker,
            multiscans: AtomicUsize::new(0),
            excludes,
            proc_dev: s.proc_dev,
            broker: Arc::new(s.broker),
            upstream: s.upstream,
            shutdown,
            open: AtomicUsize::new(0),
            fleet: Mutex::new(Fleet::default()),
            retiring: std::sync::atomic::AtomicBool::new(false),
            peer_logs: Mutex::new(crate::log::limiter::Limiter::new(
                config.log.peer_lines_per_minute,
                PEER_LOG_KEYS,
            )),
            admin_answers: Mutex::default(),
            hangups: Arc::new(super::hangup::Hangups::new()?),
            exit_by: Mutex::new(None),
            stats_waiters: Mutex::new(HashMap::new()),
            metrics: super::metrics::Collector::new(config.metrics.top_detections as usize),
            config,
        }))
    }

    /// The engine every scan uses (one per worker: a reload is a new worker).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The command profile of a listener kind.
    pub fn profile(&self, kind: ListenerKind) -> &Profile {
        match kind {
            ListenerKind::Unix => &self.unix_profile,
            ListenerKind::Tcp => &self.tcp_profile,
        }
    }

    /// Tells the supervisor something about one of this worker's connections.
    pub fn tell(&self, msg: FromWorker) {
        let _ = self.upstream.send(msg);
    }

    /// Asks the supervisor to run an administrative command for connection
    /// `conn`; `Some(maintenance)` once it was accepted (within
    /// `ADMIN_ANSWER`), with whether the node is in maintenance then. The
    /// supervisor decides from the identity it recorded, while the client is
    /// still connected: the reply comes only after, so a client that waits
    /// for it knows the command runs.
    pub async fn ask_admin(
        &self,
        conn: u64,
        command: crate::ipc::messages::AdminCommand,
    ) -> Option<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.admin_answers).insert(conn, tx);
        self.tell(FromWorker::Admin { conn, command });
        let answer = tokio::time::timeout(ADMIN_ANSWER, rx).await;
        lock(&self.admin_answers).remove(&conn);
        answer.ok().and_then(Result::ok)
    }

    /// The supervisor accepted connection `conn`'s administrative command.
    pub fn admin_accepted(&self, conn: u64, maintenance: bool) {
        if let Some(tx) = lock(&self.admin_answers).remove(&conn) {
            let _ = tx.send(maintenance);
        }
    }

    /// Tells the supervisor of each name a scan found, when a VirusEvent
    /// command is configured (the supervisor runs it, as clamd does once per
    /// reported name).
    pub fn report_found(&self, conn: u64, target: &[u8], verdict: &Verdict) {
        let Verdict::Found(names) = verdict else {
            return;
        };

        if self.config.virus_event.command.is_empty() {
            return;
        }
        for virus in names {
            self.tell(FromWorker::Found {
                conn,
                virus: virus.clone(),
                target: target.to_vec(),
            });
        }
    }

    /// The guard that reports connection `id` finished when dropped.
    pub fn conn_guard(&self, id: u64, peer: &Peer) -> Arc<ConnGuard> {
        Arc::new(ConnGuard::new(
            id,
            peer.key(),
            self.config.log.peer_lines_per_minute,
            self.upstream.clone(),
        ))
    }

    /// May a summary line for this connection's peer be logged now (the
    /// peer's budget alone)?
    pub fn may_log_peer(&self, conn: &ConnGuard) -> Option<u64> {
        use crate::log::limiter::Verdict;
        match lock(&self.peer_logs).check(&conn.peer, Instant::now()) {
            Verdict::Allow { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }

    /// May a refusal or client error of this connection be logged now?
    /// `Some(n)`: yes, and `n` lines were suppressed before it (log it as
    /// `suppressed`); `None`: no (counted). Both the connection's budget and
    /// its peer's (`log.peer-lines-per-minute`) must allow it.
    pub fn may_log(&self, conn: &ConnGuard) -> Option<u64> {
        use crate::log::limiter::Verdict;
        let now = Instant::now();
        let mine = match lock(&conn.log).check(now) {
            Verdict::Allow { suppressed } => suppressed,
            Verdict::Suppress => return None,
        };
        match lock(&self.peer_logs).check(&conn.peer, now) {
            Verdict::Allow { suppressed } => Some(mine + suppressed),
            Verdict::Suppress => None,
        }
    }

    /// File access for one connection, through the broker.
    pub fn files(&self, guard: &Arc<ConnGuard>) -> ConnFiles {
        ConnFiles::new(Arc::clone(&self.broker), Arc::clone(guard))
    }

    /// Stop taking connections; finish in-flight requests.
    pub fn drain(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn set_fleet(&self, fleet: Fleet) {
        *self
            .fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fleet;
    }

    pub fn fleet(&self) -> Fleet {
        *self
            .fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A scan failed because the temporary directory was unusable: libclamav
    /// may have cached what it could not scan as clean. This worker asks to
    /// be replaced by a fresh fork (clean cache, a new directory); it
    /// finishes its requests (the failed one gets its ERROR) and drains.
    pub fn temp_failure(&self) {
        if self.retiring.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            "temporary directory failed a scan: this worker asks to be replaced by a fresh one"
        );
        self.tell(FromWorker::Retire {
            reason: RetireReason::TempFailure,
        });
    }

    /// A scan ran past `scan.max-scan-time` and was written off (its
    /// client is answered by its connection): this worker asks to be
    /// replaced, stops taking commands, lets its other requests finish and
    /// exits, at the latest [`super::watchdog::overrun_exit_after`] from
    /// now. The lost thread dies with the process.
    pub fn scan_overrun(&self) {
        if self.retiring.swap(true, Ordering::SeqCst) {
            return;
        }
        let after = super::watchdog::overrun_exit_after(self.config.scan.max_scan_time);
        *lock(&self.exit_by) = Some(Instant::now() + after);
        tracing::error!(
            exit_within_s = after.as_secs(),
            "a scan ran past scan.max-scan-time: this worker finishes its other requests, then exits; a fresh one replaces it"
        );
        self.tell(FromWorker::Retire {
            reason: RetireReason::ScanOverrun,
        });
        self.drain();
    }

    /// When this worker must exit whatever it still holds (after an overrun).
    pub fn exit_by(&self) -> Option<Instant> {
        *lock(&self.exit_by)
    }

    /// Every task of the whole daemon, for an administrator's STATS on
    /// connection `conn`: asked of the supervisor, which asks every worker;
    /// `None` if no answer comes within [`STATS_TASKS_WAIT`].
    pub async fn daemon_tasks(&self, conn: u64) -> Option<DaemonTasks> {
        let (tx, rx) = oneshot::channel();
        lock(&self.stats_waiters).insert(conn, tx);
        self.tell(FromWorker::StatsTasks { conn });
        let got = tokio::time::timeout(STATS_TASKS_WAIT, rx).await;
        lock(&self.stats_waiters).remove(&conn);
        got.ok().and_then(Result::ok)
    }

    /// The supervisor's answer to [`daemon_tasks`](Self::daemon_tasks)
    /// (ignored when nobody waits any more).
    pub fn deliver_tasks(&self, conn: u64, daemon: DaemonTasks) {
        if let Some(tx) = lock(&self.stats_waiters).remove(&conn) {
            let _ = tx.send(daemon);
        }
    }

    /// This worker's running tasks and its pool, for the supervisor's
    /// `TaskQuery`.
    pub fn task_list(&self) -> DaemonTasks {
        let snap = self.pool.snapshot();
        let tasks = snap.tasks.iter().map(super::pool::Task::info).collect();
        let (tasks, omitted) = fit_tasks(tasks, TASK_LIST_ROOM);
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        DaemonTasks {
            tasks,
            omitted,
            pool: PoolCounts {
                threads: n(snap.threads),
                busy: n(snap.busy),
                queued: n(snap.queued),
            },
        }
    }

    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Peers whose log budgets a worker tracks at once (beyond: one shared
/// overflow budget; see `log::limiter`).
const PEER_LOG_KEYS: usize = 4096;

/// Who is on the other end of a connection, and through which listener, as
/// the supervisor recorded it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub listener: ListenerKind,
    /// The listener's name (systemd's FileDescriptorName=, "unix", "tcp",
    /// "selftest"), the metrics' `listener` label.
    pub listener_name: Arc<str>,
    pub info: PeerInfo,
    pub admin: bool,
    /// The client the supervisor counts it as.
    key: PeerKey,
}

impl Peer {
    pub fn of(c: &ConnInfo) -> Peer {
        Peer {
            listener: c.listener,
            listener_name: Arc::from(c.listener_name.as_str()),
            info: c.peer,
            admin: c.admin,
            key: c.key,
        }
    }

    /// The client identity its scans are shared out by: the supervisor's
    /// (a local user, also over loopback TCP; a network's address prefix).
    pub fn key(&self) -> PeerKey {
        self.key
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.info {
            PeerInfo::Tcp(addr) => write!(f, "{addr}"),
            PeerInfo::Unix { uid, pid, .. } => {
                write!(f, "unix uid={uid}")?;
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
        }
    }
}
