//! A scanning worker: the only kind of process that reads client bytes and
//! file contents. It is forked by the engine holder (`zygote`) with the
//! compiled engine already in memory and two channels to the supervisor:
//!
//! * control: the supervisor's [`ToWorker`] messages — first `Start`, then a
//!   `Conn` (with the client socket) for every connection it admitted,
//!   `Ping`s and finally `Drain` — and the worker's [`FromWorker`] messages;
//! * broker: file access for path commands ([`files`]).
//!
//! Start-up, still single-threaded: close the engine holder's descriptors,
//! point the engine at the worker's own temporary directory, narrow the
//! sandbox to that directory (a second Landlock layer: no signature files,
//! no other worker's files), build the I/O runtime (tokio makes its signal
//! driver's socket pair now), add the worker's layer of the system-call
//! filter (no `socketpair`, no process; the engine holder's layer, no
//! sockets and no connect, is inherited), start the scan pool, then forbid
//! new tasks (`RLIMIT_NPROC` = 0: no fork, no thread), say hello.
//!
//! A worker never decides anything for the daemon: RELOAD and SHUTDOWN are
//! passed to the supervisor with the connection id, and the supervisor
//! decides from the identity it recorded.

pub(crate) mod commands;
mod conn;
pub(crate) mod files;
pub(crate) mod hangup;
pub(crate) mod metrics;
pub(crate) mod pace;
pub(crate) mod pool;
pub(crate) mod process;
mod shared;
mod stream;
pub(crate) mod streams;
pub(crate) mod watchdog;

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Engine;
use crate::ipc::messages::{ConnInfo, FromWorker, ToWorker};
use crate::ipc::typed::{AsyncTyped, RecvError, Typed};
use crate::policy::ListenerKind;
use crate::sandbox;
pub use shared::{Peer, Shared};

/// The worker's end of its control channel.
pub type Control = Typed<FromWorker, ToWorker>;
type AsyncControl = AsyncTyped<FromWorker, ToWorker>;

/// The worker's life after the fork; returns its exit code.
pub fn serve_forked(
    config: Config,
    engine: Engine,
    control: Control,
    broker: files::BrokerChannel,
) -> i32 {
    match serve(config, engine, control, broker) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("clamsentry worker: {e}");
            1
        }
    }
}

struct Start {
    worker: u64,
    temp_dir: PathBuf,
    threads: usize,
    queue: usize,
    proc_dev: u64,
}

fn read_start(control: &Control) -> Result<Start, String> {
    match control.recv() {
        Ok(Some(m)) if m.fds.is_empty() => match m.msg {
            ToWorker::Start {
                worker,
                temp_dir,
                threads,
                queue,
                proc_dev,
            } => Ok(Start {
                worker,
                temp_dir: PathBuf::from(std::ffi::OsStr::from_bytes(&temp_dir)),
                threads: threads.max(1) as usize,
                queue: queue.max(1) as usize,
                proc_dev,
            }),
            other => Err(format!("expected Start first, got {other:?}")),
        },
        Ok(Some(_)) => Err("descriptors with the Start message".into()),
        Err(RecvError::Decode(e)) => Err(format!("control message: {e}")),
        Ok(None) => Err("the supervisor went away".into()),
        Err(e) => Err(format!("control channel: {e}")),
    }
}

fn serve(
    mut config: Config,
    mut engine: Engine,
    control: Control,
    broker: files::BrokerChannel,
) -> Result<(), String> {
    let start = read_start(&control)?;
    engine
        .set_temp_dir(&start.temp_dir)
        .map_err(|e| e.to_string())?;
    config.scan.temporary_directory = start.temp_dir.clone();
    // Its own memory figures: /proc is closed once the sandbox narrows.
    let meter = crate::usage::Meter::open();
    let landlock = sandbox::narrow_to(&start.temp_dir).map_err(|e| e.to_string())?;
    tracing::debug!(landlock = ?landlock, "worker narrowed its sandbox to its temporary directory");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The runtime made its socket pair; still one thread.
    seal(&config)?;
    let config = Arc::new(config);
    runtime.block_on(async move {
        let control = Arc::new(AsyncTyped::new(control).map_err(|e| e.to_string())?);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Shared::new(shared::Setup {
            config,
            engine,
            worker: start.worker,
            threads: start.threads,
            queue: start.queue,
            proc_dev: start.proc_dev,
            broker: files::BrokerClient::new(broker),
            upstream: tx,
        })
        .map_err(|e| format!("cannot start the scan threads: {e}"))?;
        // Every thread this worker will ever have exists now.
        sandbox::forbid_new_tasks().map_err(|e| e.to_string())?;
        control
            .send(&FromWorker::Hello {
                worker: start.worker,
            })
            .await
            .map_err(|e| format!("control channel: {e}"))?;
        tokio::spawn(forward(Arc::clone(&control), rx));
        tokio::spawn(Arc::clone(&shared.hangups).run());
        tokio::spawn(watch_overruns(Arc::clone(&shared)));
        control_loop(control, shared, meter).await;
        Ok(())
    })
}

/// Adds the worker's layer of the system-call filter; a failure is fatal
/// unless `sandbox.seccomp = "best-effort"` (then the engine holder said so
/// already).
fn seal(config: &Config) -> Result<(), String> {
    match sandbox::seal_worker().map_err(|e| e.to_string())? {
        sandbox::SeccompState::Failed { reason } if config.sandbox.seccomp_required() => Err(
            format!("the worker's system-call filter cannot be installed: {reason}"),
        ),
        _ => Ok(()),
    }
}

/// Sends what connections report (active, closed, RELOAD/SHUTDOWN, found)
/// to the supervisor, in order.
async fn forward(
    control: Arc<AsyncControl>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<FromWorker>,
) {
    while let Some(msg) = rx.recv().await {
        if control.send(&msg).await.is_err() {
            return;
        }
    }
}

/// What the worker last told the supervisor for the metrics.
struct Reporter {
    meter: crate::usage::Meter,
    usage: crate::ipc::observe::ProcUsage,
    pool: (u32, u32),
}

impl Reporter {
    /// Sends the counters when something changed since the last time (or
    /// always, with `force`); `measure` reads the process's usage anew.
    async fn report(
        &mut self,
        control: &AsyncControl,
        shared: &Shared,
        force: bool,
        measure: bool,
    ) {
        if measure {
            self.usage = self.meter.read();
        }
        let snap = shared.pool.snapshot();
        let pool = (snap.busy as u32, snap.queued as u32);
        let changed = shared.metrics.take_changed() || pool != self.pool;
        if !(changed || force) {
            return;
        }
        self.pool = pool;
        let walks = shared.counters.abandoned.load(Ordering::Relaxed);
        let counters = shared.metrics.counters(walks, &snap, self.usage);
        let _ = control
            .send(&FromWorker::Counters(Box::new(counters)))
            .await;
    }
}

/// Messages from the supervisor, until drained. If the supervisor goes
/// away, drain: a worker never serves without its broker and its keeper.
/// Every second the counters go to the supervisor if they changed, with
/// every pong in any case, and once more at the end.
async fn control_loop(control: Arc<AsyncControl>, shared: Arc<Shared>, meter: crate::usage::Meter) {
    let stall = watchdog::stall_limit(shared.config.scan.max_scan_time);
    let mut health = watchdog::PoolHealth::new(stall, std::time::Instant::now());
    let mut reporter = Reporter {
        meter,
        usage: Default::default(),
        pool: (0, 0),
    };
    reporter.report(&control, &shared, true, true).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            r = control.recv() => r,
            _ = drained(&shared) => {
                reporter.report(&control, &shared, true, true).await;
                return;
            }
            _ = tick.tick() => {
                reporter.report(&control, &shared, false, false).await;
                continue;
            }
        };
        let (msg, mut fds) = match received {
            Ok(Some(m)) => (Ok(m.msg), m.fds),
            Err(RecvError::Decode(e)) => (Err(e), Vec::new()),
            _ => {
                tracing::warn!("supervisor gone; draining");
                shared.drain();
                drained(&shared).await;
                return;
            }
        };
        match msg {
            Ok(ToWorker::Conn(info)) if fds.len() == 1 => {
                let socket = fds.remove(0);
                accept(&shared, info, socket);
            }
            Ok(ToWorker::Ping { seq, fleet }) => {
                shared.set_fleet(fleet);
                reporter.report(&control, &shared, true, true).await;
                let c = &shared.counters;
                let pong = FromWorker::Pong {
                    seq,
                    scans: c.scans.load(Ordering::Relaxed),
                    found: c.found.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    healthy: health.check(&shared.pool, std::time::Instant::now()),
                };
                if control.send(&pong).await.is_err() {
                    shared.drain();
                }
            }
            Ok(ToWorker::AdminAccepted { conn, maintenance }) => {
                shared.admin_accepted(conn, maintenance)
            }
            Ok(ToWorker::Drain) => {
                tracing::info!("draining: finishing in-flight requests");
                shared.drain();
            }
            Ok(ToWorker::Threads { limit }) => {
                tracing::debug!(limit, "scan threads permitted at once");
                shared.pool.set_limit(limit as usize);
            }
            Ok(ToWorker::StreamGrant { bytes }) => shared.streams.set_grant(bytes),
            Ok(ToWorker::TaskQuery { seq }) => {
                let mine = shared.task_list();
                let list = FromWorker::TaskList {
                    seq,
                    tasks: mine.tasks,
                    omitted: mine.omitted,
                    pool: mine.pool,
                };
                if control.send(&list).await.is_err() {
                    shared.drain();
                }
            }
            Ok(ToWorker::StatsTasks {
                conn,
                tasks,
                omitted,
                pool,
            }) => shared.deliver_tasks(
                conn,
                shared::DaemonTasks {
                    tasks,
                    omitted,
                    pool,
                },
            ),
            other => tracing::warn!(message = ?other, "unexpected control message ignored"),
        }
    }
}

/// Resolves once draining was asked for and no connection is left (or,
/// after a scan overran its time limit, at the latest by the exit
/// deadline: what is still open then ends with the process).
async fn drained(shared: &Shared) {
    let mut stop = shared.shutdown_signal();
    let _ = stop.wait_for(|s| *s).await;
    while shared.open.load(Ordering::SeqCst) > 0 {
        if shared
            .exit_by()
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            tracing::warn!(
                connections = shared.open.load(Ordering::SeqCst),
                "exit deadline after a scan overrun: closing what is left"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.pool.close();
}

/// How often the scan threads are checked for a libclamav call past its
/// time limit.
const OVERRUN_CHECK: Duration = Duration::from_secs(1);

/// Writes off scans that run past `scan.max-scan-time` plus a grace
/// (libclamav does not check its limit on every path): each one's client
/// gets an answer from its connection, and the worker retires so that the
/// lost thread costs nobody else ([`Shared::scan_overrun`]).
async fn watch_overruns(shared: Arc<Shared>) {
    let max_ms = shared.config.scan.max_scan_time;
    let Some(limit) = watchdog::overrun_limit(max_ms) else {
        return;
    };
    let mut tick = tokio::time::interval(OVERRUN_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let written = shared.pool.overruns(std::time::Instant::now(), limit);
        for o in &written {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                command = o.command,
                scan_target = %crate::log::LogBytes(&o.filename),
                owner = %o.owner.map_or_else(|| "worker".to_string(), |k| k.to_string()),
                scanning_ms = o.scanning_for.as_millis() as u64,
                max_scan_time_ms = max_ms,
                "scan still running past scan.max-scan-time (libclamav did not stop it): its client gets a time-limit reply; the thread is written off"
            );
        }
        if !written.is_empty() {
            shared.scan_overrun();
        }
        if shared.exit_by().is_some() && shared.pool.live_threads() == 0 {
            // Nothing can run what still waits: answer it now.
            let dropped = shared.pool.clear_queue();
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "every scan thread is written off: queued scans refused"
                );
            }
        }
    }
}

fn accept(shared: &Arc<Shared>, info: ConnInfo, socket: OwnedFd) {
    let stream = match adopt(info.listener, socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(id = info.id, error = %e, "cannot use a connection from the supervisor");
            shared.tell(FromWorker::Closed { conn: info.id });
            return;
        }
    };
    shared.opened();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        conn::serve(Arc::clone(&shared), stream, info).await;
        shared.closed();
    });
}

fn adopt(kind: ListenerKind, socket: OwnedFd) -> std::io::Result<stream::Stream> {
    Ok(match kind {
        ListenerKind::Unix => {
            let s = std::os::unix::net::UnixStream::from(socket);
            s.set_nonblocking(true)?;
            stream::Stream::Unix(tokio::net::UnixStream::from_std(s)?)
        }
        ListenerKind::Tcp => {
            let s = std::net::TcpStream::from(socket);
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            stream::Stream::Tcp(tokio::net::TcpStream::from_std(s)?)
        }
    })
}

/// `sandbox-check` in a worker forked as for serving: narrow the sandbox,
/// forbid new tasks, then try forbidden things. Returns the exit code (0
/// when everything forbidden was denied).
pub fn probe_forked(config: &Config, targets: &sandbox::Targets) -> i32 {
    let temp = config.scan.temporary_directory.clone();
    let landlock = match sandbox::narrow_to(&temp) {
        Ok(l) => l,
        Err(e) => {
            println!("worker: cannot narrow the sandbox: {e}");
            return 1;
        }
    };
    if let Err(e) = sandbox::forbid_new_tasks() {
        println!("worker: {e}");
        return 1;
    }
    let sealed = match sandbox::seal_worker() {
        Ok(s) => s,
        Err(e) => {
            println!("worker: {e}");
            return 1;
        }
    };
    println!(
        "worker: landlock narrowed to {} ({landlock:?}), no new tasks, worker filter {sealed:?}",
        temp.display()
    );
    let plan = sandbox::Plan {
        user: None,
        read_only: Vec::new(),
        read_write: vec![temp],
        read_files: Vec::new(),
        max_open_files: 0,
        max_threads: 0,
        seccomp: true,
        accepts: false,
    };
    let attempts = sandbox::probe_worker(&plan, &config.database.directory, targets);
    let mut bad = 0;
    for a in &attempts {
        let verdict = if a.denied { "denied" } else { "allowed" };
        let mark = if a.as_expected() { "ok" } else { "UNEXPECTED" };
        println!("{mark:<10} {verdict:<8} {} ({})", a.what, a.detail);
        if !a.as_expected() {
            bad += 1;
        }
    }
    i32::from(bad != 0)
}
