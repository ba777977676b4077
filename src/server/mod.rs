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
pub mod files;
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
use crate::policy::network::{AllowList, PerAddress, RateLimit};
use crate::policy::{ListenerKind, PeerCreds, Profile};
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
    /// Inherited from the supervisor (in a worker).
    Supervisor,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Config => "configuration",
            Origin::Systemd => "systemd",
            Origin::Supervisor => "the supervisor",
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

    /// Bumped when a connection closes (for `service.exit-when-idle`).
    pub(crate) closed_conns: AtomicU64,
    unix_profile: Profile,
    tcp_profile: Profile,
    tcp_allow: AllowList,
    per_address: Arc<PerAddress>,
    refusals: RateLimit,
    /// Bytes of stream data all connections may hold at once (limits.stream-memory).
    pub(crate) stream_budget: Arc<Semaphore>,
    file_access: FileAccess,
    /// When the last "temporary directory failed" reload was asked for.
    temp_failure_reload: std::sync::Mutex<Option<Instant>>,
    /// Set in a sandboxed worker: RELOAD and SHUTDOWN go to the supervisor.
    upstream: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Upstream>>,
}

/// Requests a worker passes to its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Reload,
    Shutdown,
}

/// How path commands reach files.
pub enum FileAccess {
    /// Apply the broker's policy in this process.
    Local(Arc<crate::privsep::broker::FilePolicy>),
    /// Ask the supervisor's broker (sandboxed worker).
    Broker(Arc<files::BrokerClient>),
}

impl Shared {
    /// Builds the shared state around an engine that is already loaded.
    /// `admins` must be resolved before the worker is sandboxed.
    pub fn new(
        config: Arc<Config>,
        engine: Engine,
        admins: AdminIds,
    ) -> std::io::Result<Arc<Shared>> {
        let limits = &config.limits;
        let pool = ScanPool::new(limits.max_threads as usize, limits.max_queue as usize)?;
        let excludes = config
            .scan
            .exclude_path
            .iter()
            .filter_map(|p| regex::bytes::Regex::new(p).ok())
            .collect();
        let (shutdown, _) = watch::channel(false);
        let policy = &config.policy;
        let unix_profile = Profile::new(
            ListenerKind::Unix,
            &policy.unix.commands,
            &admins.uids,
            &admins.gids,
        );
        let tcp_profile = Profile::new(ListenerKind::Tcp, &policy.tcp.commands, &[], &[]);
        let tcp_allow = AllowList::new(config.tcp_allow().unwrap_or_default());
        let budget = usize::try_from(limits.stream_memory.0)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Ok(Arc::new(Shared {
            unix_profile,
            tcp_profile,
            tcp_allow,
            per_address: Arc::new(PerAddress::default()),
            refusals: RateLimit::new(20, Duration::from_secs(60)),
            stream_budget: Arc::new(Semaphore::new(budget)),
            upstream: std::sync::OnceLock::new(),
            temp_failure_reload: std::sync::Mutex::new(None),
            file_access: FileAccess::Local(Arc::new(crate::privsep::broker::FilePolicy::new(
                &config.policy.scan_roots,
            ))),
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
    /// In a worker, the supervisor does it (a new worker, blue/green).
    pub fn request_reload(&self) {
        match self.upstream.get() {
            Some(up) => {
                let _ = up.send(Upstream::Reload);
            }
            None => self.reload.notify_one(),
        }
    }

    /// A scan failed because the temporary directory was unusable. libclamav
    /// may have cached what it could not scan as clean, and in a sandboxed
    /// worker Landlock keeps the directory as it was when the worker started:
    /// ask for a fresh engine (a new worker, whose temporary directory the
    /// supervisor re-creates), at most every 10 seconds.
    pub fn temp_failure(&self) {
        let mut last = self
            .temp_failure_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            "temporary directory failed a scan: reloading for a fresh engine and directory"
        );
        self.request_reload();
    }

    /// What SHUTDOWN asks for: the whole daemon stops. In a worker, the
    /// supervisor decides and drains every worker.
    pub fn request_shutdown(&self) {
        match self.upstream.get() {
            Some(up) => {
                let _ = up.send(Upstream::Shutdown);
            }
            None => self.drain(),
        }
    }

    /// Stop accepting, finish in-flight requests, let [`run`] return.
    pub fn drain(&self) {
        self.shutdown.send_replace(true);
    }

    /// Routes RELOAD and SHUTDOWN to a supervisor (sandboxed worker).
    pub fn set_upstream(&self, tx: tokio::sync::mpsc::UnboundedSender<Upstream>) {
        let _ = self.upstream.set(tx);
    }

    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Sends path commands through the supervisor's broker (set once, by
    /// the worker, before serving).
    pub fn use_broker(self: &mut Arc<Self>, client: files::BrokerClient) {
        if let Some(s) = Arc::get_mut(self) {
            s.file_access = FileAccess::Broker(Arc::new(client));
        }
    }

    /// The file access of one path command for `peer`; `client` is a copy of
    /// the client's socket, which the broker needs to read the client's identity.
    pub fn files(
        &self,
        peer: &Peer,
        client: Option<std::os::fd::OwnedFd>,
    ) -> Box<dyn files::Files> {
        match (&self.file_access, client) {
            (FileAccess::Broker(b), Some(socket)) => Box::new(files::RemoteFiles {
                client: Arc::clone(b),
                socket,
            }),
            (FileAccess::Local(policy), _) => Box::new(files::LocalFiles {
                policy: Arc::clone(policy),
                peer: peer.creds.clone(),
            }),
            (FileAccess::Broker(_), None) => Box::new(files::LocalFiles {
                policy: Arc::new(crate::privsep::broker::FilePolicy::new(&[])),
                peer: peer.creds.clone(),
            }),
        }
    }

    /// The command profile of a listener kind.
    pub fn profile(&self, kind: ListenerKind) -> &Profile {
        match kind {
            ListenerKind::Unix => &self.unix_profile,
            ListenerKind::Tcp => &self.tcp_profile,
        }
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

/// Who is on the other end of a connection, and through which listener.
#[derive(Debug, Clone)]
pub struct Peer {
    pub listener: ListenerKind,
    pub creds: PeerCreds,
    pub addr: Option<SocketAddr>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(addr) = self.addr {
            return write!(f, "{addr}");
        }
        write!(f, "unix")?;
        if let Some(uid) = self.creds.uid {
            write!(f, " uid={uid}")?;
        }
        if let Some(pid) = self.creds.pid {
            write!(f, " pid={pid}")?;
        }
        Ok(())
    }
}

/// The uids and gids of `policy.unix.admin-users` and `admin-groups`.
///
/// Resolved from the user database, so in the worker before the sandbox:
/// Landlock hides /etc/passwd and /etc/group afterwards, and every name
/// would be "no such user" (freshclam's RELOAD, as clamav, refused).
#[derive(Debug, Clone, Default)]
pub struct AdminIds {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl AdminIds {
    pub fn resolve(policy: &crate::config::UnixPolicy) -> AdminIds {
        AdminIds {
            uids: policy
                .admin_users
                .iter()
                .filter_map(|u| resolve_user(u))
                .collect(),
            gids: policy
                .admin_groups
                .iter()
                .filter_map(|g| resolve_group(g))
                .collect(),
        }
    }
}

fn resolve_user(name: &str) -> Option<u32> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Some(u.uid.as_raw()),
        _ => {
            tracing::debug!(
                user = name,
                "policy.unix.admin-users: no such user, ignored"
            );
            None
        }
    }
}

fn resolve_group(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            tracing::warn!(
                group = name,
                "policy.unix.admin-groups: no such group, ignored"
            );
            None
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

async fn accept_unix(listener: UnixListener, name: Arc<str>, shared: Arc<Shared>) {
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
        let groups = crate::privsep::peergroups::peer_groups(std::os::fd::AsFd::as_fd(&stream));
        let creds = match stream.peer_cred() {
            Ok(c) => PeerCreds::unix(c.uid(), c.gid(), c.pid(), groups),
            Err(_) => PeerCreds::remote(),
        };
        let peer = Peer {
            listener: ListenerKind::Unix,
            creds,
            addr: None,
        };
        admit(&shared, conn::Stream::Unix(stream), peer, None, &name);
    }
}

async fn accept_tcp(listener: TcpListener, name: Arc<str>, shared: Arc<Shared>) {
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
        // Refused connections are closed before a byte is read.
        if !shared.tcp_allow.admits(addr.ip()) {
            refuse(&shared, addr, "address not in listen.tcp-allow");
            continue;
        }
        let max = shared.config.limits.max_connections_per_address;
        let Some(slot) = shared.per_address.try_take(addr.ip(), max) else {
            refuse(&shared, addr, "limits.max-connections-per-address reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            listener: ListenerKind::Tcp,
            creds: PeerCreds::remote(),
            addr: Some(addr),
        };
        admit(&shared, conn::Stream::Tcp(stream), peer, Some(slot), &name);
    }
}

/// Logs a refused TCP connection, at most 20 lines a minute.
fn refuse(shared: &Shared, addr: SocketAddr, reason: &'static str) {
    if let Some(suppressed) = shared.refusals.allow() {
        tracing::warn!(listener = "tcp", peer = %addr, reason, suppressed, "connection refused");
    }
}

fn admit(
    shared: &Arc<Shared>,
    stream: conn::Stream,
    peer: Peer,
    slot: Option<crate::policy::network::AddressSlot>,
    listener: &Arc<str>,
) {
    let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
        if shared.refusals.allow().is_some() {
            tracing::warn!(
                listener = peer.listener.as_str(),
                peer = %peer,
                limit = shared.config.limits.max_connections,
                "connection refused: limits.max-connections reached"
            );
        }
        return;
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    let listener = Arc::clone(listener);
    tokio::spawn(async move {
        conn::serve(Arc::clone(&shared), stream, peer, id, &listener).await;
        shared.closed_conns.fetch_add(1, Ordering::Relaxed);
        drop(slot);
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
    }
}

/// Binds the listeners the configuration names (development and tests;
/// under systemd the sockets come from socket activation instead).
pub async fn bind_from_config(config: &Config) -> std::io::Result<Listeners> {
    let mut listeners = Listeners::default();
    if let Some(path) = config.unix_path() {
        let l = bind_unix(path, config.unix_mode().unwrap_or(0o660))?;
        crate::socket_setup::apply_unix_owner(path, &config.listen)?;
        crate::socket_setup::set_backlog(&l, config.listen.backlog)?;
        listeners.unix.push(Named::new(l, "unix", Origin::Config));
    }
    for addr in config.tcp_addrs().unwrap_or_default() {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {addr}: {e} (listen.tcp)"),
            )
        })?;
        crate::socket_setup::set_backlog(&l, config.listen.backlog)?;
        listeners.tcp.push(Named::new(l, "tcp", Origin::Config));
    }
    Ok(listeners)
}

fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    crate::socket_setup::remove_stale_socket(path)?;
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
