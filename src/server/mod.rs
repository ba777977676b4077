//! The protocol server: listeners, connections, sessions, commands.
//!
//! [`run`] takes listeners that are already bound, so tests can bind temporary
//! sockets and drive the real server in-process, and socket activation can
//! hand over systemd's sockets. Shutdown is a broadcast ([`Shared::shutdown`]):
//! accept loops stop, idle connections close, in-flight commands finish, and
//! `run` returns once every connection is gone.
#![forbid(unsafe_code)]

mod commands;
mod conn;
pub mod pool;
mod stream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::Config;
use crate::engine::{Engine, EngineSettings, LoadProgress};
use pool::ScanPool;

/// Bound listeners handed to [`run`]. A Unix listener gets the Unix
/// listener settings, a TCP one the TCP settings.
#[derive(Default)]
pub struct Listeners {
    pub unix: Vec<Named<UnixListener>>,
    pub tcp: Vec<Named<TcpListener>>,
}

impl Listeners {
    pub fn is_empty(&self) -> bool {
        self.unix.is_empty() && self.tcp.is_empty()
    }
}

/// Where a listening socket came from (logged at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Bound by clamsentry from `[listen]`.
    Config,
    /// Handed over by systemd (socket activation).
    Systemd,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Config => "configuration",
            Origin::Systemd => "systemd",
        })
    }
}

/// A listener with its name (systemd's `FileDescriptorName=`, or "unix" /
/// "tcp" when bound from the configuration; logs show it as LISTENER).
pub struct Named<L> {
    pub listener: L,
    pub name: Arc<str>,
    pub origin: Origin,
}

impl<L> Named<L> {
    pub fn new(listener: L, name: &str, origin: Origin) -> Named<L> {
        Named {
            listener,
            name: Arc::from(name),
            origin,
        }
    }
}

/// Counters since start, for STATUS lines and logs.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub scans: AtomicU64,
    pub found: AtomicU64,
    pub errors: AtomicU64,
    pub reloads: AtomicU64,
    /// Reloads that failed (the previous signatures stayed in use).
    pub reload_failures: AtomicU64,
}

/// What the daemon is doing, published for systemd's status and readiness
/// ([`Shared::phase`]); shutdown has its own signal.
///
/// A watch channel keeps only the latest value, so a quick reload (one that
/// fails at once) can go from `Reloading` back to `Serving` before anyone
/// looks: [`Lifecycle::reloads_started`] lets the observer see that a
/// reload happened all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// A reload is loading new signatures (progress once libclamav reports it).
    Reloading(Option<LoadProgress>),
}

/// The current [`Phase`] and how many reloads have started so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    pub reloads_started: u64,
    pub phase: Phase,
}

/// State shared by every connection.
pub struct Shared {
    pub config: Arc<Config>,
    engine: RwLock<Arc<Engine>>,
    pub pool: ScanPool,
    pub counters: Counters,
    reload: Notify,
    shutdown: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    pub(crate) multiscans: AtomicUsize,
    pub(crate) excludes: Vec<regex::bytes::Regex>,
    pub started: Instant,
    next_conn: AtomicU64,
    phase: watch::Sender<Lifecycle>,
    /// Bumped when a connection closes (for `service.exit-when-idle`).
    pub(crate) closed_conns: AtomicU64,
}

impl Shared {
    /// Builds the shared state around an engine that is already loaded.
    pub fn new(config: Arc<Config>, engine: Engine) -> std::io::Result<Arc<Shared>> {
        let limits = &config.limits;
        let pool = ScanPool::new(limits.max_threads as usize, limits.max_queue as usize)?;
        let excludes = config
            .scan
            .exclude_path
            .iter()
            .filter_map(|p| regex::bytes::Regex::new(p).ok())
            .collect();
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Shared {
            connections: Arc::new(Semaphore::new(limits.max_connections as usize)),
            config,
            engine: RwLock::new(Arc::new(engine)),
            pool,
            counters: Counters::default(),
            reload: Notify::new(),
            shutdown,
            multiscans: AtomicUsize::new(0),
            excludes,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            closed_conns: AtomicU64::new(0),
            phase: watch::channel(Lifecycle {
                reloads_started: 0,
                phase: Phase::Serving,
            })
            .0,
        }))
    }

    /// The engine new scans should use.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(
            &self
                .engine
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Asks for a signature reload; requests made while one runs are merged.
    pub fn request_reload(&self) {
        self.reload.notify_one();
    }

    /// Starts a graceful shutdown.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Follows the daemon's [`Lifecycle`] (serving, reloading).
    pub fn phase(&self) -> watch::Receiver<Lifecycle> {
        self.phase.subscribe()
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.send_modify(|l| {
            if phase == Phase::Reloading(None) {
                l.reloads_started += 1;
            }
            l.phase = phase;
        });
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Connections open right now.
    pub fn active_connections(&self) -> u64 {
        let opened = self.next_conn.load(Ordering::Relaxed) - 1;
        opened.saturating_sub(self.closed_conns.load(Ordering::Relaxed))
    }

    /// Connections opened or closed so far: changes whenever anything happens.
    pub fn connection_events(&self) -> u64 {
        self.next_conn.load(Ordering::Relaxed) + self.closed_conns.load(Ordering::Relaxed)
    }

    fn swap_engine(&self, engine: Engine) {
        *self
            .engine
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(engine);
    }
}

/// Who is on the other end of a connection, for logs and replies.
#[derive(Debug, Clone)]
pub enum Peer {
    Unix { uid: Option<u32>, pid: Option<i32> },
    Tcp(SocketAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid, pid } => {
                write!(f, "unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid={uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Peer::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Serves until shutdown is requested and every connection has finished.
pub async fn run(listeners: Listeners, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut accepts = tokio::task::JoinSet::new();
    for l in listeners.unix {
        accepts.spawn(accept_unix(l.listener, l.name, Arc::clone(&shared)));
    }
    for l in listeners.tcp {
        accepts.spawn(accept_tcp(l.listener, l.name, Arc::clone(&shared)));
    }
    let reloader = tokio::spawn(reload_loop(Arc::clone(&shared)));
    let mut stop = shared.shutdown_signal();
    let _ = stop.wait_for(|s| *s).await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    accepts.shutdown().await;
    // Every connection holds a permit: taking them all means all are gone.
    let all = shared.config.limits.max_connections;
    let _ = shared.connections.acquire_many(all).await;
    reloader.abort();
    shared.pool.close();
    Ok(())
}

async fn accept_unix(listener: UnixListener, name: Arc<str>, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the Unix socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cred = stream.peer_cred().ok();
        let peer = Peer::Unix {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        };
        admit(&shared, conn::Stream::Unix(stream), peer, &name);
    }
}

async fn accept_tcp(listener: TcpListener, name: Arc<str>, shared: Arc<Shared>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on a TCP socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        admit(&shared, conn::Stream::Tcp(stream), Peer::Tcp(addr), &name);
    }
}

fn admit(shared: &Arc<Shared>, stream: conn::Stream, peer: Peer, listener: &Arc<str>) {
    let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
        tracing::warn!(
            peer = %peer,
            limit = shared.config.limits.max_connections,
            "connection refused: limits.max-connections reached"
        );
        return;
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    let listener = Arc::clone(listener);
    tokio::spawn(async move {
        conn::serve(Arc::clone(&shared), stream, peer, id, &listener).await;
        shared.closed_conns.fetch_add(1, Ordering::Relaxed);
        drop(permit);
    });
}

async fn reload_loop(shared: Arc<Shared>) {
    loop {
        shared.reload.notified().await;
        let started = Instant::now();
        let config = Arc::clone(&shared.config);
        tracing::info!(directory = %config.database.directory.display(), "reloading signatures");
        shared.set_phase(Phase::Reloading(None));
        let progress_to = Arc::clone(&shared);
        let loaded = tokio::task::spawn_blocking(move || {
            Engine::load_with_progress(
                &config.database.directory,
                &EngineSettings::from_config(&config),
                &mut |p| {
                    progress_to.set_phase(Phase::Reloading(Some(p)));
                },
            )
        })
        .await;
        match loaded {
            Ok(Ok(engine)) => {
                let info = engine.info().clone();
                shared.swap_engine(engine);
                shared.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    signatures = info.signatures,
                    db_version = info.db_version,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "reload complete"
                );
            }
            Ok(Err(e)) => {
                shared
                    .counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload failed; still serving with the previous signatures");
            }
            Err(e) => {
                shared
                    .counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload crashed; still serving with the previous signatures");
            }
        }
        shared.set_phase(Phase::Serving);
    }
}

/// Binds the listeners the configuration names (development and tests;
/// under systemd the sockets come from socket activation instead).
pub async fn bind_from_config(config: &Config) -> std::io::Result<Listeners> {
    let mut listeners = Listeners::default();
    if let Some(path) = config.unix_path() {
        let l = bind_unix(path, config.unix_mode().unwrap_or(0o660))?;
        listeners.unix.push(Named::new(l, "unix", Origin::Config));
    }
    for addr in config.tcp_addrs().unwrap_or_default() {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {addr}: {e} (listen.tcp)"),
            )
        })?;
        listeners.tcp.push(Named::new(l, "tcp", Origin::Config));
    }
    Ok(listeners)
}

fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    // Remove a stale socket left by a previous run, but never another kind of file.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{shown} exists and is not a socket: remove it or choose another listen.unix"
                ),
            ));
        }
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {shown}: {e} (listen.unix)"),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}
