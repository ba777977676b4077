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
use crate::engine::{Engine, EngineSettings};
use pool::ScanPool;

/// Bound listeners handed to [`run`].
#[derive(Default)]
pub struct Listeners {
    pub unix: Vec<UnixListener>,
    pub tcp: Vec<TcpListener>,
}

/// Counters since start, for STATUS lines and logs.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub scans: AtomicU64,
    pub found: AtomicU64,
    pub errors: AtomicU64,
    pub reloads: AtomicU64,
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

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
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
        accepts.spawn(accept_unix(l, Arc::clone(&shared)));
    }
    for l in listeners.tcp {
        accepts.spawn(accept_tcp(l, Arc::clone(&shared)));
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

/// A run of accept errors (EMFILE while descriptors are exhausted repeats
/// every 50 ms until one is freed): the first and every 100th are logged,
/// not all of them, so an exhausted daemon does not flood the journal.
#[derive(Default)]
struct AcceptErrors {
    run: u64,
}

impl AcceptErrors {
    async fn failed(&mut self, e: &std::io::Error, socket: &str) {
        self.run += 1;
        if self.run == 1 || self.run % 100 == 0 {
            tracing::warn!(error = %e, failures = self.run, "accept failed on {socket}; retrying every 50 ms");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn accepted(&mut self, socket: &str) {
        if self.run > 0 {
            tracing::info!(failures = self.run, "accepting again on {socket}");
            self.run = 0;
        }
    }
}

async fn accept_unix(listener: UnixListener, shared: Arc<Shared>) {
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                errors.failed(&e, "the Unix socket").await;
                continue;
            }
        };
        errors.accepted("the Unix socket");
        let cred = stream.peer_cred().ok();
        let peer = Peer::Unix {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        };
        admit(&shared, conn::Stream::Unix(stream), peer);
    }
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                errors.failed(&e, "a TCP socket").await;
                continue;
            }
        };
        errors.accepted("a TCP socket");
        let _ = stream.set_nodelay(true);
        admit(&shared, conn::Stream::Tcp(stream), Peer::Tcp(addr));
    }
}

fn admit(shared: &Arc<Shared>, stream: conn::Stream, peer: Peer) {
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
    tokio::spawn(async move {
        conn::serve(shared, stream, peer, id).await;
        drop(permit);
    });
}

async fn reload_loop(shared: Arc<Shared>) {
    loop {
        shared.reload.notified().await;
        let started = Instant::now();
        let config = Arc::clone(&shared.config);
        tracing::info!(directory = %config.database.directory.display(), "reloading signatures");
        let loaded = tokio::task::spawn_blocking(move || {
            Engine::load(
                &config.database.directory,
                &EngineSettings::from_config(&config),
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
                tracing::error!(error = %e, "reload failed; still serving with the previous signatures");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload crashed; still serving with the previous signatures");
            }
        }
    }
}

/// Binds the listeners the configuration names (development and tests;
/// under systemd the sockets come from socket activation instead).
pub async fn bind_from_config(config: &Config) -> std::io::Result<Listeners> {
    let mut listeners = Listeners::default();
    if let Some(path) = config.unix_path() {
        listeners
            .unix
            .push(bind_unix(path, config.unix_mode().unwrap_or(0o660))?);
    }
    for addr in config.tcp_addrs().unwrap_or_default() {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {addr}: {e} (listen.tcp)"),
            )
        })?;
        listeners.tcp.push(l);
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
