//! The supervisor: the main process. It holds the listening sockets and the
//! configuration, starts workers, answers their broker requests, and never
//! reads a byte from a client or a scanned file.
//!
//! Workers are `clamsentry __worker` processes (the same binary, re-executed
//! through /proc/self/exe) that inherit the listening sockets, a control
//! channel and a broker channel. The supervisor:
//! * restarts a worker that dies, with back-off (0.25 s doubling to 30 s,
//!   reset once a worker has served for a minute), logging exit code or signal;
//! * reloads blue/green: a new worker loads the signatures while the old one
//!   serves; when the new one is Ready the old one drains (stops accepting,
//!   finishes its requests, exits). A new worker that fails leaves the old
//!   one serving. Connections that arrive meanwhile wait in the listen backlog;
//! * kills a worker that breaks the protocol (undecodable message, broker
//!   abuse) or stops answering pings for 30 s;
//! * on SHUTDOWN/SIGTERM drains every worker and exits 0.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{channel, Sender};

use super::broker::{self, FilePolicy};
use super::channel::{AsyncChannel, Channel};
use super::messages::{ToSupervisor, ToWorker};
use super::worker::{BROKER_FD, CONTROL_FD, FIRST_LISTENER_FD, LISTENERS_ENV, TEMP_DIR_ENV};
use crate::engine::{LoadPhase, LoadProgress};

/// A listening socket the workers inherit.
pub struct Inherited {
    /// `unix` or `tcp`.
    pub kind: &'static str,
    /// The listener's name (systemd's FileDescriptorName=, or the kind).
    pub name: String,
    pub fd: OwnedFd,
}

/// What the supervisor needs to start workers.
pub struct Setup {
    /// The configuration text, passed to each worker as is.
    pub config_text: String,
    /// Listening sockets, with their kinds and names.
    pub listeners: Vec<Inherited>,
    /// The workers' private temporary directory (re-created before each
    /// worker starts if it went missing).
    pub temp_dir: PathBuf,
    /// Its owner: the worker's user and group when we run as root.
    pub temp_owner: Option<(u32, u32)>,
    pub policy: Arc<FilePolicy>,
}

/// What the worker-facing side tells the daemon's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// A starting worker reports signature loading progress.
    Progress(LoadProgress),
    /// The first worker is serving.
    Ready {
        signatures: u32,
        db_version: u32,
        sandbox: String,
    },
    /// A reload started / finished (ok or not).
    Reloading,
    Reloaded {
        ok: bool,
        signatures: u32,
        db_version: u32,
    },
    Stopping,
    /// Health: the serving worker answered a ping (`healthy`: its scan
    /// pool moves).
    Alive {
        scans: u64,
        found: u64,
        healthy: bool,
    },
}

/// Why the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    StartFailed(String),
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
}

#[derive(Debug)]
enum Event {
    Message(u64, ToSupervisor),
    Violation(u64, String),
    Exited(u64, std::process::ExitStatus),
    Reload(&'static str),
    Stop(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    /// Reported LoadFailed and is exiting: it no longer blocks a reload.
    Failed,
    Serving,
    Draining,
}

struct Worker {
    pid: i32,
    control: Arc<AsyncChannel>,
    state: State,
    since: Instant,
    last_pong: Instant,
}

const PING_EVERY: Duration = Duration::from_secs(5);
const WEDGED_AFTER: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs workers until shutdown. `notify` hears lifecycle changes (logging,
/// systemd). Must run inside a tokio runtime.
pub async fn run(setup: Setup, mut notify: impl FnMut(Lifecycle)) -> Result<(), SupervisorError> {
    let setup = Arc::new(setup);
    // Bounded: a worker that floods its control channel waits, it does not
    // grow the supervisor's memory.
    let (tx, mut rx) = channel::<Event>(256);
    let mut pending: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    spawn_signal_task(tx.clone());
    let mut workers: HashMap<u64, Worker> = HashMap::new();
    let mut next_gen = 1u64;
    let mut ever_ready = false;
    let mut stopping = false;
    let mut crashes = 0u32;
    let mut restart_at: Option<Instant> = None;
    let mut ping_seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    start(&setup, &tx, &mut workers, &mut next_gen).map_err(SupervisorError::Spawn)?;
    loop {
        let event = match pending.pop_front() {
            Some(e) => e,
            None => tokio::select! {
                e = rx.recv() => match e { Some(e) => e, None => break },
            _ = tick.tick() => {
                if let Some(at) = restart_at {
                                        if Instant::now() >= at && !stopping {
                        restart_at = None;
                        if let Err(e) = start(&setup, &tx, &mut workers, &mut next_gen) {
                            crashes += 1;
                            let delay = Duration::from_millis(250u64 << crashes.min(7)).min(Duration::from_secs(30));
                            tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot start a worker");
                            restart_at = Some(Instant::now() + delay);
                        }
                    }
                }
                for (gen, w) in &mut workers {
                    if w.state != State::Serving {
                        continue;
                    }
                    if w.last_pong.elapsed() > WEDGED_AFTER {
                        tracing::error!(worker = *gen, pid = w.pid, "worker stopped answering; killing it");
                        kill(w.pid);
                        w.last_pong = Instant::now();
                    } else if w.since.elapsed() >= PING_EVERY && ping_seq % 20 == 0 {
                        let _ = w.control.send(&ToWorker::Ping { seq: ping_seq }.encode()).await;
                    }
                }
                ping_seq += 1;
                continue;
            }
            },
        };
        match event {
            Event::Message(gen, msg) => match msg {
                ToSupervisor::Ready {
                    engine_version,
                    signatures,
                    db_version,
                    sandbox,
                    ..
                } => {
                    let Some(w) = workers.get_mut(&gen) else {
                        continue;
                    };
                    w.state = State::Serving;
                    w.since = Instant::now();
                    w.last_pong = Instant::now();
                    tracing::info!(worker = gen, pid = w.pid, signatures, db_version, libclamav = %engine_version, sandbox = %sandbox, "worker ready");
                    let old: Vec<u64> = workers
                        .iter()
                        .filter(|(g, w)| **g != gen && w.state == State::Serving)
                        .map(|(g, _)| *g)
                        .collect();
                    for g in &old {
                        if let Some(o) = workers.get_mut(g) {
                            o.state = State::Draining;
                            let _ = o.control.send(&ToWorker::Drain.encode()).await;
                        }
                    }
                    if !ever_ready {
                        ever_ready = true;
                        notify(Lifecycle::Ready {
                            signatures,
                            db_version,
                            sandbox,
                        });
                    } else {
                        tracing::info!(worker = gen, signatures, db_version, "reload complete");
                        notify(Lifecycle::Reloaded {
                            ok: true,
                            signatures,
                            db_version,
                        });
                    }
                    if stopping {
                        let _ = workers[&gen].control.send(&ToWorker::Drain.encode()).await;
                    }
                }
                ToSupervisor::LoadFailed { error } => {
                    if !ever_ready {
                        drain_all(&mut workers).await;
                        return Err(SupervisorError::StartFailed(error));
                    }
                    tracing::error!(worker = gen, error = %error, "reload failed; still serving with the previous signatures");
                    if let Some(w) = workers.get_mut(&gen) {
                        w.state = State::Failed;
                    }
                    notify(Lifecycle::Reloaded {
                        ok: false,
                        signatures: 0,
                        db_version: 0,
                    });
                }
                ToSupervisor::ReloadRequest => {
                    pending.push_back(Event::Reload("RELOAD command"));
                }
                ToSupervisor::ShutdownRequest => {
                    pending.push_back(Event::Stop("SHUTDOWN command"));
                }
                ToSupervisor::Pong {
                    scans,
                    found,
                    healthy,
                    ..
                } => {
                    if let Some(w) = workers.get_mut(&gen) {
                        w.last_pong = Instant::now();
                        if w.state == State::Serving {
                            notify(Lifecycle::Alive {
                                scans,
                                found,
                                healthy,
                            });
                        }
                    }
                }
                ToSupervisor::Progress {
                    compiling,
                    done,
                    total,
                } => {
                    if workers
                        .get(&gen)
                        .is_some_and(|w| w.state == State::Starting)
                    {
                        let phase = if compiling {
                            LoadPhase::Compiling
                        } else {
                            LoadPhase::Loading
                        };
                        notify(Lifecycle::Progress(LoadProgress { phase, done, total }));
                    }
                }
            },
            Event::Violation(gen, why) => {
                if let Some(w) = workers.get(&gen) {
                    tracing::error!(worker = gen, pid = w.pid, reason = %why, "worker broke the supervisor protocol; killing it");
                    kill(w.pid);
                }
            }
            Event::Reload(why) => {
                if stopping {
                    continue;
                }
                if workers.values().any(|w| w.state == State::Starting) {
                    tracing::info!(trigger = why, "reload already in progress; merged");
                    continue;
                }
                tracing::info!(trigger = why, "reloading: starting a new worker");
                notify(Lifecycle::Reloading);
                if let Err(e) = start(&setup, &tx, &mut workers, &mut next_gen) {
                    tracing::error!(error = %e, "reload failed; still serving with the previous signatures (cannot start a worker)");
                    notify(Lifecycle::Reloaded {
                        ok: false,
                        signatures: 0,
                        db_version: 0,
                    });
                }
            }
            Event::Stop(why) => {
                if !stopping {
                    tracing::info!(trigger = why, "stopping: draining workers");
                    notify(Lifecycle::Stopping);
                    stopping = true;
                    drain_all(&mut workers).await;
                    // No worker left to wait for (one had just died and
                    // was waiting for its restart): done.
                    if workers.is_empty() {
                        break;
                    }
                }
            }
            Event::Exited(gen, status) => {
                let Some(w) = workers.remove(&gen) else {
                    continue;
                };
                let how = match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exit code {code}"),
                    (None, Some(sig)) => format!("signal {}", signal_name(sig)),
                    _ => "unknown".to_string(),
                };
                match w.state {
                    State::Draining => {
                        tracing::info!(worker = gen, pid = w.pid, how = %how, "worker finished draining")
                    }
                    State::Failed => {
                        tracing::info!(worker = gen, pid = w.pid, how = %how, "worker that failed to load exited")
                    }
                    _ if stopping => {
                        tracing::info!(worker = gen, pid = w.pid, how = %how, "worker stopped")
                    }
                    State::Starting if !ever_ready => {
                        return Err(SupervisorError::StartFailed(format!(
                            "the worker exited during start-up ({how})"
                        )));
                    }
                    State::Starting => {
                        tracing::error!(worker = gen, pid = w.pid, how = %how, "reload failed; still serving with the previous signatures (the new worker exited before it was ready)");
                        notify(Lifecycle::Reloaded {
                            ok: false,
                            signatures: 0,
                            db_version: 0,
                        });
                    }
                    State::Serving => {
                        if w.since.elapsed() >= STABLE_AFTER {
                            crashes = 0;
                        }
                        let delay = Duration::from_millis(250u64 << crashes.min(7))
                            .min(Duration::from_secs(30));
                        crashes += 1;
                        tracing::error!(worker = gen, pid = w.pid, how = %how, crashes, restart_in_ms = delay.as_millis() as u64, "worker died; restarting");
                        if !workers
                            .values()
                            .any(|w| matches!(w.state, State::Serving | State::Starting))
                        {
                            restart_at = Some(Instant::now() + delay);
                        }
                    }
                }
                if stopping && workers.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(())
}

async fn drain_all(workers: &mut HashMap<u64, Worker>) {
    for w in workers.values_mut() {
        w.state = State::Draining;
        if w.control.send(&ToWorker::Drain.encode()).await.is_err() {
            kill(w.pid);
        }
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| sig.to_string(), |s| s.as_str().to_string())
}

fn spawn_signal_task(tx: Sender<Event>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            let e = tokio::select! {
                _ = term.recv() => Event::Stop("SIGTERM"),
                _ = int.recv() => Event::Stop("SIGINT"),
                _ = hup.recv() => Event::Reload("SIGHUP"),
                _ = usr2.recv() => Event::Reload("SIGUSR2"),
            };
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
}

/// Starts one worker generation.
fn start(
    setup: &Arc<Setup>,
    tx: &Sender<Event>,
    workers: &mut HashMap<u64, Worker>,
    next_gen: &mut u64,
) -> std::io::Result<()> {
    let gen = *next_gen;
    *next_gen += 1;
    let (mut child, control, brokers) = spawn(setup, &["__worker"], &setup.listeners)?;
    let pid = child.id().map_or(0, |p| p as i32);
    let control = Arc::new(AsyncChannel::new(control)?);
    tracing::info!(worker = gen, pid, "worker started");

    // Broker requests: a plain thread per worker; a broken request kills it.
    let policy = Arc::clone(&setup.policy);
    let btx = tx.clone();
    std::thread::Builder::new()
        .name(format!("broker-{gen}"))
        .spawn(move || {
            if let Err(why) = broker::serve(&brokers, &policy) {
                let _ = btx.blocking_send(Event::Violation(gen, why));
            }
        })?;
    // Control messages.
    let ctl = Arc::clone(&control);
    let ctx = tx.clone();
    tokio::spawn(async move {
        loop {
            match ctl.recv().await {
                Ok(Some((msg, fds))) => {
                    let event = match (ToSupervisor::decode(&msg), fds.is_empty()) {
                        (Ok(m), true) => Event::Message(gen, m),
                        (Ok(_), false) => {
                            Event::Violation(gen, "descriptors on the control channel".into())
                        }
                        (Err(e), _) => Event::Violation(gen, format!("control message: {e}")),
                    };
                    let violation = matches!(event, Event::Violation(..));
                    if ctx.send(event).await.is_err() || violation {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = ctx
                        .send(Event::Violation(gen, format!("control channel: {e}")))
                        .await;
                    return;
                }
            }
        }
    });
    // Exit.
    let etx = tx.clone();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = etx.send(Event::Exited(gen, status)).await;
        }
    });
    workers.insert(
        gen,
        Worker {
            pid,
            control,
            state: State::Starting,
            since: Instant::now(),
            last_pong: Instant::now(),
        },
    );
    Ok(())
}

/// Creates the workers' temporary directory (mode 0700, owned by the worker's
/// user), replacing whatever stands at that path if it is not a directory.
pub fn ensure_temp_dir(dir: &std::path::Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dir)?,
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create {}: {e} (scan.temporary-directory)",
                    dir.display()
                ),
            )
        })?;
    // Mode first: once the directory belongs to the worker's user, changing
    // it would need CAP_FOWNER, which the supervisor does not keep.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Arranges for `sources` to appear in the child at fds 3, 4, 5…
fn place_fds(cmd: &mut tokio::process::Command, sources: Vec<RawFd>) {
    debug_assert_eq!(CONTROL_FD, 3);
    debug_assert_eq!(BROKER_FD, 4);
    debug_assert_eq!(FIRST_LISTENER_FD, 5);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl and dup2, which are async-signal-safe; it allocates nothing
    // (the vectors are built before fork and only read here).
    unsafe {
        let mut high = vec![0 as RawFd; sources.len()];
        let n = sources.len();
        cmd.pre_exec(move || {
            // First move every source above the target range, then place them,
            // so that no placement overwrites a source not yet placed.
            for (i, fd) in sources.iter().enumerate() {
                // Above the target range 3..3+n, whatever RLIMIT_NOFILE is.
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, (3 + n) as libc::c_int);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `clamsentry sandbox-check`: starts a worker exactly as for serving, but
/// in probe mode: it demotes itself, tries forbidden things, prints one line
/// per attempt and exits (0 if everything forbidden was denied).
pub async fn probe(setup: Setup) -> std::io::Result<std::process::ExitStatus> {
    let (mut child, _control, _brokers) = spawn(&setup, &["__worker", "--probe"], &[])?;
    child.wait().await
}

/// Starts `clamsentry <args>` with the control and broker channels at fds 3
/// and 4, `listeners` from fd 5 on, and sends it the configuration.
fn spawn(
    setup: &Setup,
    args: &[&str],
    listeners: &[Inherited],
) -> std::io::Result<(tokio::process::Child, Channel, Channel)> {
    ensure_temp_dir(&setup.temp_dir, setup.temp_owner)?;
    let (control, control_child) = Channel::pair()?;
    let (brokers, broker_child) = Channel::pair()?;
    let names: Vec<String> = listeners
        .iter()
        .map(|l| format!("{}:{}", l.kind, l.name))
        .collect();
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.args(args)
        .env(LISTENERS_ENV, names.join(","))
        .env(TEMP_DIR_ENV, &setup.temp_dir)
        .stdin(std::process::Stdio::null());
    let mut sources: Vec<RawFd> = vec![control_child.as_raw_fd(), broker_child.as_raw_fd()];
    sources.extend(listeners.iter().map(|l| l.fd.as_raw_fd()));
    place_fds(&mut cmd, sources);
    let child = cmd.spawn()?;
    drop(control_child);
    drop(broker_child);
    let config = ToWorker::Config {
        toml: setup.config_text.clone(),
    };
    control.send(&config.encode(), &[])?;
    Ok((child, control, brokers))
}
