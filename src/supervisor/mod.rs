//! The supervisor: the daemon's main process. It runs as root with a few
//! capabilities, holds the listening sockets, accepts every connection,
//! records who the peer is, and hands the connection to a worker; it serves
//! the workers' file requests as the client ([`broker`]); it starts the
//! engine holders and decides everything about the daemon's life
//! ([`lifecycle`]). It never parses a byte from a client or a scanned file.
//!
//! Start-up order: configuration → logging → systemd's sockets (taken
//! before any thread exists, as they come through environment variables) →
//! every other inherited descriptor made close-on-exec → child subreaper →
//! bind configured sockets when not activated → the private temporary
//! directory → drop capabilities → the first engine holder. The accept
//! loops start, and READY=1 goes to systemd, once the first worker serves:
//! until then connections wait in the listen backlog, so a client that gets
//! an answer always finds `systemctl is-active` saying active.

pub mod admission;
pub mod broker;
pub mod conns;
mod dbwatch;
pub mod lifecycle;
mod listeners;
pub mod procs;
mod status;
mod tempdir;
pub mod virus_event;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use self::admission::Caps;
use self::broker::resolve::Rules;
use self::broker::Broker;
use self::conns::{ConnTable, NewConn};
use self::lifecycle::{Action, GenId, Machine, Note, Who, WorkerId, WorkerMsg, ZygoteMsg};
use self::listeners::{Accepted, Listener};
use self::procs::{Child, Strays};
use self::tempdir::TempRoot;
use self::virus_event::VirusEvents;
use crate::config::{clamd_conf, Config, ConfigError, ConfigSource};
use crate::daemonize::Readiness;
use crate::engine::{LoadPhase, LoadProgress};
use crate::ipc::channel::{AsyncChannel, Channel};
use crate::ipc::messages::{
    AdminCommand, ConnInfo, FromWorker, FromZygote, PeerInfo, ToWorker, ToZygote,
};
use crate::log::limiter::{Limiter, Verdict};
use crate::policy::network::{AllowList, RateLimit};
use crate::policy::{Admins, Identity, ListenerKind, Profile};
use crate::proto::CommandKind;
use crate::sandbox::{self, SandboxError};
use crate::systemd::activation::{self, ActivationError};
use crate::systemd::notify::Notifier;

/// Peers whose eviction lines are counted separately (beyond, they share
/// one budget; see `log::limiter`).
const EVICTION_LOG_KEYS: usize = 4096;

/// Why the daemon could not start; main prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nothing to listen on: set listen.unix or listen.tcp in the configuration")]
    NoListeners,
    #[error(transparent)]
    Activation(#[from] ActivationError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    VirusEvent(#[from] virus_event::VirusEventError),
    #[error("{0}")]
    Failed(String),
}

/// `clamsentry check-config`: validates and prints a one-line summary,
/// then, for a clamd.conf, one line per note on its translation.
pub fn check_config(source: ConfigSource) -> Result<String, ConfigError> {
    let loaded = source.load()?;
    let source = loaded.source.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    let mut summary = format!("{source}: configuration OK");
    for note in &loaded.notes {
        summary.push_str(&format!("\n  {note}"));
    }
    Ok(summary)
}

/// Runs the daemon until SIGTERM/SIGINT, SHUTDOWN or
/// `service.exit-when-idle`. A start-up failure is also shown in systemd's
/// status line (`systemctl status clamsentry`).
///
/// `readiness` hears when the daemon serves or failed to start: a daemon
/// forked into the background by clamd's command line (`clamsentry clamd`)
/// tells the waiting parent, which then exits (see `crate::daemonize`); in
/// the foreground it is `Readiness::foreground()`.
pub fn run(source: ConfigSource, readiness: &Readiness) -> Result<(), StartError> {
    let result = serve(source, readiness);
    if let Err(e) = &result {
        Notifier::from_env().status(&format!("Failed to start: {e}"));
        readiness.failed(&e.to_string());
    }
    result
}

struct Prepared {
    config: Config,
    text: String,
    /// The service user's uid/gid when we run as root and switch to it.
    owner: Option<(u32, u32)>,
}

fn prepare(source: ConfigSource) -> Result<Prepared, StartError> {
    let loaded = source.load()?;
    crate::log::init(&loaded.config.log.level, &loaded.config.log.target);
    match &loaded.source {
        Some(p) => {
            tracing::info!(config = %p.display(), "configuration loaded");
            clamd_conf::log_notes(&p.display().to_string(), &loaded.notes);
        }
        None => tracing::info!("no configuration file, using built-in defaults"),
    }
    raise_fd_limit();
    let owner = if nix::unistd::geteuid().is_root() {
        Some(sandbox::lookup_user(&loaded.config.sandbox.user)?)
    } else {
        None
    };
    tracing::info!(libclamav = %crate::engine::version(), "starting");
    Ok(Prepared {
        config: loaded.config,
        text: loaded.text,
        owner,
    })
}

/// One thread runs every task of the supervisor (accepting, the workers'
/// messages, the event loop): each connection passes through several of
/// them, and with a multi-threaded runtime each hop between threads was a
/// futex wake and a context switch. Nothing on it blocks; what may (file
/// system scans, reading /proc) goes to `spawn_blocking`, and the brokers
/// have threads of their own.
fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("clamsentry-supervisor")
        .build()?)
}

/// The supervisor keeps only what starting processes (SETUID, SETGID,
/// SETPCAP), giving each worker its directory (CHOWN), acting as a client
/// in the broker (SETUID and SETGID again, for the file identity; and
/// DAC_READ_SEARCH for root clients; the same file identity removes the
/// socket and PID file at exit, see [`remove_at_exit`]) and signalling
/// children (KILL) need;
/// everything else goes, bounding set included.
fn keep_supervisor_capabilities() -> Result<(), StartError> {
    use caps::Capability::*;
    sandbox::restrict_supervisor(&[
        CAP_SETUID,
        CAP_SETGID,
        CAP_SETPCAP,
        CAP_CHOWN,
        CAP_DAC_READ_SEARCH,
        CAP_KILL,
    ])?;
    Ok(())
}

/// Connections need descriptors: raise the soft RLIMIT_NOFILE to the hard
/// limit (what systemd's LimitNOFILE= or the shell allows).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            tracing::debug!(from = soft, to = hard, "raised the open file limit");
        }
    }
}

fn serve(source: ConfigSource, readiness: &Readiness) -> Result<(), StartError> {
    let prepared = prepare(source)?;
    // clamd's PidFile: this process's pid (after any fork), removed at exit.
    let pid_file = prepared
        .config
        .service
        .pid_file()
        .map(crate::pidfile::PidFile::create)
        .transpose()?;
    let activated = activation::take(&prepared.config)?;
    procs::close_on_exec_all();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| StartError::Failed(format!("cannot become a child subreaper: {e}")))?;
    let runtime = runtime()?;
    let result = runtime.block_on(async move {
        let Prepared {
            config,
            text,
            owner,
        } = prepared;
        let listeners = if activated.is_empty() {
            listeners::bind_from_config(&config).await?
        } else {
            if config.unix_path().is_some() || !config.listen.tcp.is_empty() {
                tracing::info!("sockets come from systemd: [listen] unix and tcp are not bound");
            }
            listeners::from_systemd(activated)?
        };
        if listeners.is_empty() {
            return Err(StartError::NoListeners);
        }
        listeners::log(&listeners);
        let from_systemd = listeners
            .iter()
            .any(|l| l.origin == listeners::Origin::Systemd);
        if config.service.exit_when_idle > 0 && !from_systemd {
            tracing::warn!(
                "service.exit-when-idle is set but the sockets are not from systemd: nothing will start clamsentry again after it exits"
            );
        }
        let bound_unix = config
            .unix_path()
            .filter(|_| listeners.iter().any(|l| l.origin == listeners::Origin::Config && l.kind() == ListenerKind::Unix))
            .map(Path::to_path_buf);
        let temp = TempRoot::create(&config.scan.temporary_directory, owner)?;
        tracing::info!(directory = %temp.path().display(), "private temporary directory created");
        keep_supervisor_capabilities()?;
        let both_kinds = [ListenerKind::Unix, ListenerKind::Tcp]
            .iter()
            .all(|k| listeners.iter().any(|l| l.kind() == *k));
        let virus_events = VirusEvents::from_config(&config, both_kinds)?;
        let result = Driver::new(Arc::new(config), text, temp, virus_events, listeners)
            .run(readiness)
            .await;
        if let Some(p) = bound_unix {
            remove_at_exit(&p, "Unix socket");
        }
        result.map_err(StartError::Failed)?;
        tracing::info!("stopped");
        Ok(())
    });
    if let Some(p) = pid_file.as_ref().filter(|p| p.is_ours()) {
        remove_at_exit(p.path(), "PID file");
    }
    result
}

/// Removes a file the daemon made at start (its Unix socket, its PID file)
/// when it stops. By then the supervisor has given up CAP_DAC_OVERRIDE, so
/// it cannot unlink in a directory it may not write, such as Debian's
/// `/run/clamav` (owned by clamav, mode 0755; clamd, running as clamav,
/// removes its socket there). Then it tries again as the directory's
/// owner, on this thread only ([`broker::creds`]): never more than that
/// user could do. A failure is logged, not fatal.
fn remove_at_exit(path: &Path, what: &str) {
    use std::io::ErrorKind;
    let mut result = std::fs::remove_file(path);
    if matches!(&result, Err(e) if e.kind() == ErrorKind::PermissionDenied) {
        result = as_directory_owner(path, || std::fs::remove_file(path));
    }
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the {what} {}: {e}", path.display()),
    }
}

/// Runs `f` with the file-system identity of the owner and group of the
/// directory holding `path`.
fn as_directory_owner<T>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir)?;
    let own = broker::creds::Own::capture()?;
    let owner = broker::creds::FsIdentity {
        uid: meta.uid(),
        gid: meta.gid(),
        groups: vec![meta.gid()],
    };
    let _acting = broker::creds::act_as(&own, &owner)?;
    f()
}

/// `clamsentry sandbox-check`: an engine holder and a worker forked from it
/// exactly as in production try forbidden things and print what happened.
/// Returns the exit code (0 when every attempt was denied).
pub fn sandbox_check(source: ConfigSource) -> Result<i32, StartError> {
    let prepared = prepare(source)?;
    procs::close_on_exec_all();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| StartError::Failed(format!("cannot become a child subreaper: {e}")))?;
    let temp = TempRoot::create(&prepared.config.scan.temporary_directory, prepared.owner)?;
    keep_supervisor_capabilities()?;
    let zdir = temp.private("probe")?;
    let (ours, theirs) = Channel::pair()?;
    let child = procs::spawn_zygote(&["__zygote", "--probe"], &OwnedFd::from(theirs))?;
    let config = ToZygote::Config {
        toml: prepared.text,
        temp_parent: temp.path_bytes(),
        temp_dir: zdir.as_os_str().as_bytes().to_vec(),
    };
    ours.send(&config.encode(), &[])?;
    let mut worst = match child.wait() {
        procs::Ended::Exited(code) => code,
        _ => 1,
    };
    // The probing worker was forked by the holder and is now our child.
    while let Ok(Some(status)) = rustix::process::waitid(
        rustix::process::WaitId::All,
        rustix::process::WaitIdOptions::EXITED,
    ) {
        if status.exit_status() != Some(0) {
            worst = worst.max(status.exit_status().unwrap_or(1)).max(1);
        }
    }
    Ok(worst)
}

/// What the event loop hears.
enum Event {
    Machine(lifecycle::Event),
    Accepted(Accepted),
    Worker(WorkerId, FromWorker, Option<i32>),
    Zygote(GenId, FromZygote),
    /// A process broke a rule its channel enforces (see `lifecycle`).
    Broken(Who, String),
    /// New memory figures: the workers hear them at once (STATS).
    Measured,
}

struct ZygoteProc {
    control: Arc<AsyncChannel>,
    child: Arc<Child>,
    temp_dir: PathBuf,
}

struct WorkerProc {
    control: Arc<AsyncChannel>,
    broker: Arc<Channel>,
    child: Option<Arc<Child>>,
    temp_dir: PathBuf,
}

/// The supervisor's event loop: turns events into the state machine's
/// events, and its actions into system calls.
struct Driver {
    config: Arc<Config>,
    text: String,
    machine: Machine,
    conns: Arc<ConnTable>,
    broker: Arc<Broker>,
    temp: TempRoot,
    /// The VirusEvent runner (`None`: no command configured).
    virus_events: Option<VirusEvents>,
    zygotes: HashMap<GenId, ZygoteProc>,
    workers: HashMap<WorkerId, WorkerProc>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    status: status::ServiceStatus,
    admins: Admins,
    caps: Caps,
    unix_profile: Profile,
    tcp_profile: Profile,
    listeners: Option<Vec<Listener>>,
    /// Connections admitted while no worker serves (bounded).
    pending: VecDeque<Accepted>,
    refusals: RateLimit,
    /// Eviction lines, per evicted peer (`log.peer-lines-per-minute`).
    evictions: Limiter<String>,
    strays: Strays,
    last_sweep: Instant,
    /// Last time a connection opened or closed (exit-when-idle).
    last_activity: Instant,
    proc_dev: u64,
    /// Memory of the daemon's processes (PSS, KiB), measured off the event
    /// loop: reading smaps_rollup of a process holding an engine takes
    /// milliseconds.
    pss: Arc<std::sync::Mutex<PssCache>>,
    next_pick: usize,
}

impl Driver {
    fn new(
        config: Arc<Config>,
        text: String,
        temp: TempRoot,
        virus_events: Option<VirusEvents>,
        listeners: Vec<Listener>,
    ) -> Driver {
        let (tx, rx) = mpsc::channel(1024);
        let conns = Arc::new(ConnTable::default());
        let scan = &config.scan;
        let broker = Arc::new(Broker {
            rules: Rules::new(
                &config.policy.scan_roots,
                scan.follow_directory_symlinks,
                scan.follow_file_symlinks,
            ),
            conns: Arc::clone(&conns),
            handles_per_conn: (scan.max_directory_recursion as usize).clamp(1, 62) + 2,
        });
        let policy = &config.policy;
        let now = Instant::now();
        Driver {
            machine: Machine::new(config.limits.worker_count()),
            admins: {
                let admins = Admins::resolve(&policy.unix);
                let me = nix::unistd::geteuid();
                if me.is_root() {
                    admins
                } else {
                    admins.with_own_user(me.as_raw())
                }
            },
            caps: Caps::from_config(&config.limits),
            unix_profile: Profile::new(ListenerKind::Unix, &policy.unix.commands),
            tcp_profile: Profile::new(ListenerKind::Tcp, &policy.tcp.commands),
            status: status::ServiceStatus::new(Notifier::from_env()),
            conns,
            broker,
            temp,
            virus_events,
            zygotes: HashMap::new(),
            workers: HashMap::new(),
            tx,
            rx,
            listeners: Some(listeners),
            pending: VecDeque::new(),
            refusals: RateLimit::new(20, Duration::from_secs(60)),
            evictions: Limiter::new(config.log.peer_lines_per_minute, EVICTION_LOG_KEYS),
            strays: Strays::default(),
            last_sweep: now,
            last_activity: now,
            proc_dev: std::fs::metadata("/proc")
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .unwrap_or(0),
            pss: Arc::default(),
            next_pick: 0,
            config,
            text,
        }
    }

    fn profile(&self, kind: ListenerKind) -> &Profile {
        match kind {
            ListenerKind::Unix => &self.unix_profile,
            ListenerKind::Tcp => &self.tcp_profile,
        }
    }

    async fn run(mut self, readiness: &Readiness) -> Result<(), String> {
        Notifier::from_env().loading_started(&self.config.database.directory.display().to_string());
        spawn_signal_task(self.tx.clone());
        let dbtx = self.tx.clone();
        tokio::spawn(dbwatch::run(
            self.config.database.directory.clone(),
            Duration::from_secs(self.config.database.self_check),
            move || {
                let _ = dbtx.try_send(Event::Machine(lifecycle::Event::Reload(
                    "database.self-check",
                )));
            },
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(result) = self.apply(lifecycle::Event::Start) {
            return result;
        }
        let mut told_ready = false;
        loop {
            if !told_ready && self.machine.ever_ready() {
                // A parent waiting in the foreground (clamd's command line)
                // exits 0 now.
                readiness.ready();
                told_ready = true;
            }
            let event = tokio::select! {
                e = self.rx.recv() => match e { Some(e) => e, None => return Ok(()) },
                _ = tick.tick() => Event::Machine(lifecycle::Event::Tick),
            };
            let done = match event {
                Event::Machine(e) => {
                    if e == lifecycle::Event::Tick {
                        self.housekeeping();
                    }
                    let exited = match &e {
                        lifecycle::Event::ZygoteExited(g, _) => Some(*g),
                        _ => None,
                    };
                    let done = self.apply(e);
                    if let Some(z) = exited.and_then(|g| self.zygotes.remove(&g)) {
                        self.temp.remove(&z.temp_dir);
                    }
                    done
                }
                Event::Accepted(a) => {
                    self.admit(a);
                    None
                }
                Event::Worker(w, msg, pid) => self.on_worker(w, msg, pid),
                Event::Zygote(g, msg) => self.on_zygote(g, msg),
                Event::Broken(who, why) => self.apply(lifecycle::Event::Violation(who, why)),
                Event::Measured => {
                    let serving: Vec<WorkerId> = self.machine.serving().collect();
                    for w in serving {
                        self.ping(w, 0);
                    }
                    None
                }
            };
            if let Some(result) = done {
                return result;
            }
        }
    }

    /// Feeds the state machine and carries out its actions. `Some` when the
    /// daemon must stop.
    fn apply(&mut self, event: lifecycle::Event) -> Option<Result<(), String>> {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            let actions = self.machine.handle(e, Instant::now());
            for action in actions {
                if let Some(result) = self.act(action, &mut queue) {
                    return Some(result);
                }
            }
        }
        None
    }

    fn act(
        &mut self,
        action: Action,
        queue: &mut VecDeque<lifecycle::Event>,
    ) -> Option<Result<(), String>> {
        match action {
            Action::SpawnZygote(g) => {
                if let Err(e) = self.spawn_zygote(g) {
                    queue.push_back(lifecycle::Event::ZygoteFailed(
                        g,
                        format!("cannot start the engine holder: {e}"),
                    ));
                }
            }
            Action::Fork { gen, worker, slot } => {
                if let Err(e) = self.fork(gen, worker, slot) {
                    queue.push_back(lifecycle::Event::ForkFailed(gen, worker, e.to_string()));
                }
            }
            Action::RetireZygote(g) => {
                if let Some(z) = self.zygotes.get(&g) {
                    let _ = z.control.try_send(&ToZygote::Exit.encode(), &[]);
                }
            }
            Action::KillZygote(g) => {
                if let Some(z) = self.zygotes.get(&g) {
                    z.child.kill();
                }
            }
            Action::Drain(w) => {
                if let Some(p) = self.workers.get(&w) {
                    let control = Arc::clone(&p.control);
                    tokio::spawn(async move {
                        let _ = control.send(&ToWorker::Drain.encode()).await;
                    });
                }
            }
            Action::Kill(w) => {
                if let Some(p) = self.workers.get(&w) {
                    if let Some(c) = &p.child {
                        c.kill();
                    }
                }
                self.revoke(w);
            }
            Action::Forget(w) => {
                self.revoke(w);
                if let Some(p) = self.workers.remove(&w) {
                    self.temp.remove(&p.temp_dir);
                }
            }
            Action::Ping(w, seq) => self.ping(w, seq),
            Action::Notify(note) => {
                if matches!(note, Note::Ready { .. }) {
                    self.start_accepting();
                }
                self.status.observe(note);
            }
            Action::Exit(result) => return Some(result),
        }
        None
    }

    /// Revokes a worker at once: its channels end (its broker thread exits,
    /// nothing it sends is read any more) and its connections are closed.
    fn revoke(&mut self, w: WorkerId) {
        if let Some(p) = self.workers.get(&w) {
            p.control.shutdown();
            p.broker.shutdown();
        }
        let n = self.conns.revoke_worker(w);
        if n > 0 {
            tracing::info!(
                worker = w,
                connections = n,
                "closed the connections of a worker that is gone"
            );
            self.last_activity = Instant::now();
        }
    }

    fn spawn_zygote(&mut self, g: GenId) -> std::io::Result<()> {
        let temp_dir = self.temp.private(&format!("z{g}"))?;
        let (ours, theirs) = Channel::pair()?;
        let child = Arc::new(procs::spawn_zygote(&["__zygote"], &OwnedFd::from(theirs))?);
        tracing::info!(generation = g, pid = child.pid, "engine holder started");
        let config = ToZygote::Config {
            toml: self.text.clone(),
            temp_parent: self.temp.path_bytes(),
            temp_dir: temp_dir.as_os_str().as_bytes().to_vec(),
        };
        ours.send(&config.encode(), &[])?;
        let control = Arc::new(AsyncChannel::new(ours)?);
        // Its messages, then its end. The two come from different sources
        // (the channel, a thread waiting on the pidfd), and what it said
        // before it died (LoadFailed with the reason) must reach the machine
        // before its exit: so the exit goes through this task, which first
        // takes every message still queued.
        let (ctl, tx) = (Arc::clone(&control), self.tx.clone());
        let (exited_tx, mut exited) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let how = loop {
                tokio::select! {
                    biased;
                    r = ctl.recv() => {
                        let go_on = match r {
                            Ok(Some(m)) => forward_zygote(&tx, g, m).await,
                            Ok(None) | Err(_) => false,
                        };
                        if !go_on {
                            // The channel ended or broke a rule: only the exit is left.
                            break (&mut exited).await;
                        }
                    }
                    ended = &mut exited => {
                        // Gone: all it sent is queued; take it without waiting.
                        while let Ok(Some(m)) = ctl.try_recv() {
                            if !forward_zygote(&tx, g, m).await {
                                break;
                            }
                        }
                        break ended;
                    }
                }
            };
            if let Ok(how) = how {
                let _ = tx
                    .send(Event::Machine(lifecycle::Event::ZygoteExited(g, how)))
                    .await;
            }
        });
        let waiter = Arc::clone(&child);
        std::thread::Builder::new()
            .name(format!("wait-z{g}"))
            .spawn(move || {
                let _ = exited_tx.send(waiter.wait());
            })?;
        self.zygotes.insert(
            g,
            ZygoteProc {
                control,
                child,
                temp_dir,
            },
        );
        Ok(())
    }

    fn fork(&mut self, gen: GenId, w: WorkerId, slot: usize) -> std::io::Result<()> {
        let zygote = self
            .zygotes
            .get(&gen)
            .ok_or_else(|| std::io::Error::other("no engine holder"))?;
        let temp_dir = self.temp.private(&format!("w{w}"))?;
        let (control, control_child) = Channel::pair()?;
        let (broker, broker_child) = Channel::pair()?;
        control.pass_credentials()?;
        let limits = &self.config.limits;
        let workers = limits.worker_count() as u32;
        let start = ToWorker::Start {
            worker: w,
            temp_dir: temp_dir.as_os_str().as_bytes().to_vec(),
            threads: limits.max_threads.div_ceil(workers).max(1),
            queue: limits.max_queue.div_ceil(workers).max(1),
            proc_dev: self.proc_dev,
        };
        control.send(&start.encode(), &[])?;
        zygote.control.try_send(
            &ToZygote::Fork { worker: w }.encode(),
            &[control_child.as_fd(), broker_child.as_fd()],
        )?;
        drop((control_child, broker_child));
        let control = Arc::new(AsyncChannel::new(control)?);
        let broker = Arc::new(broker);
        // Control messages: the first carries the kernel's word for the pid.
        let (ctl, tx) = (Arc::clone(&control), self.tx.clone());
        tokio::spawn(async move {
            loop {
                let event = match ctl.recv_from().await {
                    Ok(Some(m)) if !m.fds.is_empty() => {
                        Event::Broken(Who::Worker(w), "descriptors on the control channel".into())
                    }
                    Ok(Some(m)) => match FromWorker::decode(&m.bytes) {
                        Ok(msg) => Event::Worker(w, msg, m.pid),
                        Err(e) => Event::Broken(Who::Worker(w), format!("control message: {e}")),
                    },
                    Ok(None) | Err(_) => return,
                };
                let stop = matches!(event, Event::Broken(..));
                if tx.send(event).await.is_err() || stop {
                    return;
                }
            }
        });
        // Broker requests: a thread per worker; a broken request ends it.
        let (bch, btx, b) = (
            Arc::clone(&broker),
            self.tx.clone(),
            Arc::clone(&self.broker),
        );
        std::thread::Builder::new()
            .name(format!("broker-{w}"))
            .spawn(move || {
                if let Err(v) = broker::serve(&bch, w, &b) {
                    let _ = btx.blocking_send(Event::Broken(Who::Worker(w), v.0));
                }
            })?;
        tracing::debug!(generation = gen, worker = w, slot, "worker forking");
        self.workers.insert(
            w,
            WorkerProc {
                control,
                broker,
                child: None,
                temp_dir,
            },
        );
        Ok(())
    }

    fn on_zygote(&mut self, g: GenId, msg: FromZygote) -> Option<Result<(), String>> {
        let kind = match &msg {
            FromZygote::Progress { .. } => ZygoteMsg::Progress,
            FromZygote::Ready(_) => ZygoteMsg::Ready,
            FromZygote::LoadFailed { .. } => ZygoteMsg::LoadFailed,
            FromZygote::ForkFailed { .. } => ZygoteMsg::ForkFailed,
        };
        if let Err(why) = self.machine.check_zygote(g, kind) {
            return self.apply(lifecycle::Event::Violation(Who::Zygote(g), why));
        }
        let event = match msg {
            FromZygote::Progress {
                compiling,
                done,
                total,
            } => lifecycle::Event::ZygoteProgress(
                g,
                LoadProgress {
                    phase: if compiling {
                        LoadPhase::Compiling
                    } else {
                        LoadPhase::Loading
                    },
                    done,
                    total,
                },
            ),
            FromZygote::Ready(r) => lifecycle::Event::ZygoteReady(g, r),
            FromZygote::LoadFailed { error } => lifecycle::Event::ZygoteFailed(g, error),
            FromZygote::ForkFailed { worker, error } => {
                lifecycle::Event::ForkFailed(g, worker, error)
            }
        };
        self.apply(event)
    }

    fn on_worker(
        &mut self,
        w: WorkerId,
        msg: FromWorker,
        pid: Option<i32>,
    ) -> Option<Result<(), String>> {
        let kind = match &msg {
            FromWorker::Hello { .. } => WorkerMsg::Hello,
            FromWorker::Pong { .. } => WorkerMsg::Pong,
            FromWorker::Active { .. } | FromWorker::Closed { .. } | FromWorker::Found { .. } => {
                WorkerMsg::Conn
            }
            FromWorker::Admin { .. } => WorkerMsg::Admin,
            FromWorker::Retire => WorkerMsg::Retire,
        };
        if let Err(why) = self.machine.check_worker(w, kind) {
            return self.apply(lifecycle::Event::Violation(Who::Worker(w), why));
        }
        let violation = |why: String| Some(lifecycle::Event::Violation(Who::Worker(w), why));
        let event = match msg {
            FromWorker::Hello { worker } => match self.hello(w, worker, pid) {
                Ok(()) => Some(lifecycle::Event::WorkerHello(w)),
                Err(why) => violation(why),
            },
            FromWorker::Pong {
                scans,
                found,
                errors,
                healthy,
                ..
            } => Some(lifecycle::Event::WorkerPong {
                worker: w,
                scans,
                found,
                errors,
                healthy,
            }),
            FromWorker::Active { conn } => match self.conns.mark_active(conn, w) {
                Ok(()) => None,
                Err(why) => violation(format!("Active for {why}")),
            },
            FromWorker::Closed { conn } => match self.conns.finish(conn, w) {
                Ok(()) => {
                    self.last_activity = Instant::now();
                    None
                }
                Err(why) => violation(format!("Closed for {why}")),
            },
            FromWorker::Found {
                conn,
                virus,
                target,
            } => match self.conns.lookup(conn, w) {
                Ok(holder) => {
                    // Only for a connection this worker holds, charged to its
                    // client; the names are data (see `virus_event`).
                    if let Some(events) = &self.virus_events {
                        events.trigger(&holder.identity, &virus, &target);
                    }
                    None
                }
                Err(why) => violation(format!("Found for {why}")),
            },
            FromWorker::Retire => Some(lifecycle::Event::WorkerRetire(w)),
            FromWorker::Admin { conn, command } => match self.admin(w, conn, command) {
                Ok(event) => Some(event),
                Err(why) => violation(why),
            },
        };
        match event {
            Some(e) => self.apply(e),
            None => None,
        }
    }

    /// A worker's first message: its pid comes from the kernel, and it must
    /// be a child of ours that we do not know yet.
    fn hello(&mut self, w: WorkerId, said: u64, pid: Option<i32>) -> Result<(), String> {
        if said != w {
            return Err(format!("hello as worker {said} on worker {w}'s channel"));
        }
        let pid = pid.ok_or("hello without the sender's credentials")?;
        let known = self
            .workers
            .values()
            .filter_map(|p| p.child.as_ref())
            .chain(self.zygotes.values().map(|z| &z.child))
            .any(|c| c.pid == pid);
        if known {
            return Err(format!("hello from process {pid}, which is already known"));
        }
        let child = Arc::new(procs::adopt(pid).map_err(|e| e.to_string())?);
        let (waiter, tx) = (Arc::clone(&child), self.tx.clone());
        std::thread::Builder::new()
            .name(format!("wait-w{w}"))
            .spawn(move || {
                let how = waiter.wait();
                let _ = tx.blocking_send(Event::Machine(lifecycle::Event::WorkerExited(w, how)));
            })
            .map_err(|e| e.to_string())?;
        if let Some(p) = self.workers.get_mut(&w) {
            p.child = Some(child);
        }
        tracing::debug!(worker = w, pid, "worker said hello");
        // Connections that waited for a serving worker.
        let waiting: Vec<Accepted> = self.pending.drain(..).collect();
        for a in waiting {
            self.hand(a, Some(w));
        }
        Ok(())
    }

    /// RELOAD or SHUTDOWN/QUIT from a client: decided here, from the
    /// identity recorded at accept. An honest worker refuses these itself
    /// when they are not allowed, so a request that is not is a violation.
    fn admin(
        &self,
        w: WorkerId,
        conn: u64,
        command: AdminCommand,
    ) -> Result<lifecycle::Event, String> {
        let (admin, who, listener) = self
            .conns
            .admin_of(conn, w)
            .map_err(|why| format!("{command:?} for {why}"))?;
        let word = match command {
            AdminCommand::Reload => CommandKind::Reload,
            AdminCommand::Shutdown => CommandKind::Shutdown,
        };
        let decision = self.profile(listener).decide(word, admin);
        let quit_allowed = command == AdminCommand::Shutdown
            && self.profile(listener).decide(CommandKind::Quit, admin)
                == crate::policy::Decision::Allow;
        if decision != crate::policy::Decision::Allow && !quit_allowed {
            return Err(format!(
                "{command:?} for connection {conn} ({who}), which may not: {decision:?}"
            ));
        }
        tracing::info!(id = conn, peer = %who, command = word.word(), "administrative command accepted");
        Ok(match command {
            AdminCommand::Reload => lifecycle::Event::Reload("RELOAD command"),
            AdminCommand::Shutdown => lifecycle::Event::Stop("SHUTDOWN command"),
        })
    }

    fn start_accepting(&mut self) {
        let Some(listeners) = self.listeners.take() else {
            return;
        };
        let allow = AllowList::new(self.config.tcp_allow().unwrap_or_default());
        let (atx, mut arx) = mpsc::channel::<Accepted>(256);
        listeners::start(listeners, allow, atx);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(a) = arx.recv().await {
                if tx.send(Event::Accepted(a)).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Admission for a new connection, then the hand-over.
    fn admit(&mut self, a: Accepted) {
        if self.machine.is_stopping() {
            return;
        }
        let addr = match &a.identity {
            Identity::Tcp(s) => Some(s.ip()),
            Identity::Unix { .. } => None,
        };
        match admission::decide(self.caps, &self.conns.open_now(), a.listener, addr) {
            admission::Verdict::Refuse(limit) => {
                if let Some(suppressed) = self.refusals.allow() {
                    tracing::warn!(
                        listener = a.listener.as_str(),
                        peer = %a.identity,
                        limit,
                        suppressed,
                        "connection refused: limit reached and no idle connection to close"
                    );
                }
            }
            admission::Verdict::Admit { evict } => {
                for id in evict {
                    let Some(who) = self.conns.evict(id) else {
                        continue;
                    };
                    // Per evicted peer: a reconnecting flood evicts
                    // thousands of its own connections a minute.
                    let verdict = self.evictions.check(&who.log_key(), Instant::now());
                    if let Verdict::Allow { suppressed } = verdict {
                        tracing::info!(
                            id,
                            peer = %who,
                            suppressed,
                            "closed an idle connection to make room for a new one"
                        );
                    }
                }
                self.hand(a, None);
            }
        }
    }

    /// Is the peer one of the daemon's engine holders or workers?
    fn is_own_process(&self, who: &Identity) -> bool {
        let Identity::Unix { pid: Some(pid), .. } = who else {
            return false;
        };
        self.zygotes.values().any(|z| z.child.pid == *pid)
            || self
                .workers
                .values()
                .any(|w| w.child.as_ref().is_some_and(|c| c.pid == *pid))
    }

    /// Registers the connection and hands it to `to`, or to the least busy
    /// serving worker.
    fn hand(&mut self, a: Accepted, to: Option<WorkerId>) {
        let candidates = match to {
            Some(w) => vec![w],
            None => self.by_load(),
        };
        if candidates.is_empty() {
            if self.pending.len() < self.caps.max_connections {
                self.pending.push_back(a);
            }
            return;
        }
        // The daemon's own processes are never administrators, whatever
        // their uid (a worker started by an unprivileged daemon has its uid).
        let admin = self.admins.admits(&a.identity) && !self.is_own_process(&a.identity);
        let peer = match &a.identity {
            Identity::Unix { uid, gid, pid, .. } => PeerInfo::Unix {
                uid: *uid,
                gid: *gid,
                pid: *pid,
            },
            Identity::Tcp(addr) => PeerInfo::Tcp(*addr),
        };
        let identity = Arc::new(a.identity);
        let paths_allowed = self.profile(a.listener).allows_paths();
        let mut socket = a.socket;
        // A worker whose queue is full is passed over: it may be dead and not
        // yet reaped (nobody reads its queue), and what waits there is lost
        // with it. Only when every queue is full does the connection wait
        // for the first of them.
        let mut tries: VecDeque<(WorkerId, bool)> =
            candidates.iter().map(|w| (*w, false)).collect();
        let mut waiting = false;
        while let Some((w, wait)) = tries.pop_front() {
            let Some(control) = self.workers.get(&w).map(|p| Arc::clone(&p.control)) else {
                continue;
            };
            // The table keeps the socket; the worker gets its own descriptor
            // for it through SCM_RIGHTS.
            let id = self.conns.register(
                NewConn {
                    worker: w,
                    identity: Arc::clone(&identity),
                    listener: a.listener,
                    paths_allowed,
                    admin,
                    socket,
                },
                Instant::now(),
            );
            self.last_activity = Instant::now();
            let msg = ToWorker::Conn(ConnInfo {
                id,
                listener: a.listener,
                listener_name: a.name.to_string(),
                peer,
                admin,
            })
            .encode();
            if wait {
                self.send_later(w, id, control, msg);
                return;
            }
            match self
                .conns
                .with_socket(id, |fd| control.try_send(&msg, &[fd]))
            {
                Some(Ok(())) => return,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock && !waiting => {
                    waiting = true;
                    tries.push_back((w, true));
                }
                // That worker is gone (its exit not yet seen): the
                // connection goes to the next one, never to nobody.
                _ => {}
            }
            match self.conns.unregister(id, w) {
                Some(s) => socket = s,
                None => return,
            }
        }
        tracing::warn!("no worker could take a connection; it is closed");
    }

    /// Serving workers, least busy first; ties go round.
    fn by_load(&mut self) -> Vec<WorkerId> {
        let serving: Vec<WorkerId> = self.machine.serving().collect();
        if serving.is_empty() {
            return serving;
        }
        self.next_pick = (self.next_pick + 1) % serving.len();
        let mut order: Vec<(usize, usize, WorkerId)> = (0..serving.len())
            .map(|i| {
                let w = serving[(self.next_pick + i) % serving.len()];
                (self.conns.load_of(w), i, w)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, _, w)| w).collect()
    }

    /// Hands a connection over once the worker's queue has room (at most
    /// 5 s); otherwise the connection is closed.
    fn send_later(&self, w: WorkerId, id: u64, control: Arc<AsyncChannel>, msg: Vec<u8>) {
        let copy = self.conns.with_socket(id, |fd| fd.try_clone_to_owned());
        let conns = Arc::clone(&self.conns);
        tokio::spawn(async move {
            let sent = match copy {
                Some(Ok(fd)) => tokio::time::timeout(
                    Duration::from_secs(5),
                    control.send_with(&msg, &[fd.as_fd()]),
                )
                .await
                .is_ok_and(|r| r.is_ok()),
                _ => false,
            };
            if !sent {
                conns.evict(id);
                let _ = conns.finish(id, w);
            }
        });
    }

    fn ping(&mut self, w: WorkerId, seq: u64) {
        let Some(p) = self.workers.get(&w) else {
            return;
        };
        let mut fleet = self.machine.fleet();
        let pid = p.child.as_ref().map(|c| c.pid);
        {
            let mut cache = self.pss.lock().unwrap_or_else(|e| e.into_inner());
            fleet.daemon_pss_kib = cache.total;
            fleet.worker_pss_kib = pid.and_then(|p| cache.by_pid.get(&p).copied()).unwrap_or(0);
            if !cache.measuring
                && !cache
                    .at
                    .is_some_and(|t| t.elapsed() < lifecycle::PING_EVERY)
            {
                cache.measuring = true;
                let mut pids = vec![std::process::id() as i32];
                pids.extend(self.zygotes.values().map(|z| z.child.pid));
                pids.extend(
                    self.workers
                        .values()
                        .filter_map(|x| x.child.as_ref().map(|c| c.pid)),
                );
                let pss = Arc::clone(&self.pss);
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    let by_pid: HashMap<i32, u64> =
                        pids.into_iter().map(|p| (p, procs::pss_kib(p))).collect();
                    let mut cache = pss.lock().unwrap_or_else(|e| e.into_inner());
                    cache.total = by_pid.values().sum();
                    cache.by_pid = by_pid;
                    cache.at = Some(Instant::now());
                    cache.measuring = false;
                    drop(cache);
                    let _ = tx.try_send(Event::Measured);
                });
            }
        }
        let msg = ToWorker::Ping { seq, fleet }.encode();
        let _ = p.control.try_send(&msg, &[]);
    }

    /// Once per tick: stray children, exit-when-idle.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= Duration::from_secs(2) {
            self.last_sweep = now;
            let known: Vec<i32> = self
                .workers
                .values()
                .filter_map(|p| p.child.as_ref().map(|c| c.pid))
                .chain(self.zygotes.values().map(|z| z.child.pid))
                .chain(self.virus_events.as_ref().and_then(VirusEvents::pid))
                .collect();
            for (pid, what) in self.strays.sweep(&known, now) {
                tracing::warn!(pid, what, "a child process nobody accounts for");
            }
        }
        let idle = self.config.service.exit_when_idle;
        if idle > 0
            && self.machine.ever_ready()
            && !self.machine.is_stopping()
            && self.conns.is_empty()
            && now.duration_since(self.last_activity) >= Duration::from_secs(idle)
        {
            tracing::info!(
                idle_seconds = idle,
                "no connection for service.exit-when-idle seconds: exiting"
            );
            let _ = self.tx.try_send(Event::Machine(lifecycle::Event::Stop(
                "service.exit-when-idle",
            )));
            self.last_activity = now;
        }
    }
}

/// The last PSS measurement of the daemon's processes.
#[derive(Default)]
struct PssCache {
    at: Option<Instant>,
    measuring: bool,
    total: u64,
    by_pid: HashMap<i32, u64>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        for z in self.zygotes.values() {
            self.temp.remove(&z.temp_dir);
        }
    }
}

fn spawn_signal_task(tx: mpsc::Sender<Event>) {
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
                _ = term.recv() => lifecycle::Event::Stop("SIGTERM"),
                _ = int.recv() => lifecycle::Event::Stop("SIGINT"),
                _ = hup.recv() => lifecycle::Event::Reload("SIGHUP"),
                _ = usr2.recv() => lifecycle::Event::Reload("SIGUSR2"),
            };
            if tx.send(Event::Machine(e)).await.is_err() {
                return;
            }
        }
    });
}

/// Passes one message of engine holder `g` to the event loop; false when
/// the channel should not be read any further (a violation, or the loop is
/// gone).
async fn forward_zygote(
    tx: &mpsc::Sender<Event>,
    g: GenId,
    (msg, fds): (Vec<u8>, Vec<OwnedFd>),
) -> bool {
    let event = if !fds.is_empty() {
        Event::Broken(Who::Zygote(g), "descriptors on the control channel".into())
    } else {
        match FromZygote::decode(&msg) {
            Ok(m) => Event::Zygote(g, m),
            Err(e) => Event::Broken(Who::Zygote(g), format!("control message: {e}")),
        }
    };
    let stop = matches!(event, Event::Broken(..));
    tx.send(event).await.is_ok() && !stop
}
