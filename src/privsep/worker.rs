//! The scanning worker: the only process that reads client bytes and file
//! contents. Started by the supervisor as `clamsentry __worker` with:
//!
//! * fd 3: the control channel, fd 4: the broker channel,
//! * fd 5…: the listening sockets, their kinds in `CLAMSENTRY_LISTENERS`
//!   (`unix,tcp,…`).
//!
//! Start-up is single-threaded until the sandbox is in place: read the
//! configuration from the supervisor, demote (identity, capabilities,
//! no-new-privs, rlimits, Landlock — all per-thread, so before any thread
//! exists), load the engine, report Ready, and only then start tokio and
//! serve. RELOAD and SHUTDOWN from clients go to the supervisor; Drain from
//! the supervisor stops this worker gracefully.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use super::channel::{AsyncChannel, Channel};
use super::messages::{ToSupervisor, ToWorker};
use crate::config::Config;
use crate::engine::{self, Engine, EngineSettings, LoadPhase, LoadProgress};
use crate::sandbox;
use crate::server::files::BrokerClient;
use crate::server::{self, AdminIds, Listeners, Named, Origin, Shared, Upstream};
use crate::service;
use crate::systemd::watchdog;

pub const CONTROL_FD: RawFd = 3;
pub const BROKER_FD: RawFd = 4;
pub const FIRST_LISTENER_FD: RawFd = 5;
pub const LISTENERS_ENV: &str = "CLAMSENTRY_LISTENERS";
pub const TEMP_DIR_ENV: &str = "CLAMSENTRY_WORKER_TMP";

/// Takes an inherited descriptor, checking it is open.
fn inherited(fd: RawFd) -> Result<OwnedFd, String> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).map_err(|_| {
        format!("descriptor {fd} was not passed: run the worker only through the supervisor")
    })?;
    // SAFETY: the supervisor placed this descriptor here for us (checked open
    // above) and nothing else in this fresh process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("descriptor {fd}: {e}"))?;
    Ok(owned)
}

/// What the worker was asked to do after demotion.
pub enum Mode {
    Serve,
    /// `sandbox-check`: try forbidden things, print the results, exit.
    Probe,
}

/// The worker's `main`. Returns the process exit code.
pub fn main(mode: Mode) -> i32 {
    match run(mode) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("clamsentry worker: {e}");
            1
        }
    }
}

/// Rust's runtime catches SIGSEGV and SIGBUS to report stack overflows, and
/// survives one sent with kill(2). A worker must die on any of them, at once,
/// so that the supervisor replaces it: restore the default disposition.
fn fatal_signals_kill() -> Result<(), String> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGSEGV, Signal::SIGBUS] {
        // SAFETY: installing SIG_DFL runs no handler code; nothing else in
        // this single-threaded process relies on the previous disposition.
        unsafe { sigaction(sig, &default) }.map_err(|e| format!("sigaction({sig}): {e}"))?;
    }
    Ok(())
}

/// glibc's malloc raises its mmap threshold after each large free, so after
/// one 16 MiB INSTREAM later streams come from the heap and stay resident.
/// A fixed threshold keeps stream buffers on mmap: freeing a stream returns
/// its memory (measured in docs/benchmark.md: RSS after a 1 MiB + 16 MiB load
/// 86 MiB without, 50 MiB with; clamd 48 MiB).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it takes no
    // pointers, and this process is still single-threaded.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn run(mode: Mode) -> Result<(), String> {
    // Re-executed through /proc/self/exe, the process would be called "exe"
    // in ps and the journal (_COMM).
    let _ = nix::sys::prctl::set_name(c"clamsentry-work");
    fatal_signals_kill()?;
    fix_mmap_threshold();
    let control = Channel::from_fd(inherited(CONTROL_FD)?);
    let broker = Channel::from_fd(inherited(BROKER_FD)?);
    // "kind:name,kind:name" in descriptor order.
    let kinds = std::env::var(LISTENERS_ENV).unwrap_or_default();
    let mut listener_fds = Vec::new();
    for (i, entry) in kinds.split(',').filter(|k| !k.is_empty()).enumerate() {
        let (kind, name) = entry.split_once(':').unwrap_or((entry, entry));
        listener_fds.push((
            kind.to_string(),
            name.to_string(),
            inherited(FIRST_LISTENER_FD + i as RawFd)?,
        ));
    }
    let temp_dir = std::env::var_os(TEMP_DIR_ENV).map(PathBuf::from);

    let toml = match control.recv() {
        Ok(Some((msg, _))) => match ToWorker::decode(&msg) {
            Ok(ToWorker::Config { toml }) => toml,
            other => return Err(format!("expected the configuration first, got {other:?}")),
        },
        Ok(None) => return Err("the supervisor went away".into()),
        Err(e) => return Err(format!("control channel: {e}")),
    };
    let mut config =
        Config::parse(&toml, "configuration from the supervisor").map_err(|e| e.to_string())?;
    if let Some(t) = &temp_dir {
        config.scan.temporary_directory = t.clone();
    }
    crate::daemon::init_logging(&config.log.level, &config.log.target);

    // Everything that needs the file system happens before demotion:
    // libclamav's own initialisation (OpenSSL config, unrar module).
    engine::init().map_err(|e| e.to_string())?;
    // The administrators' ids come from /etc/passwd and /etc/group, which
    // the sandbox hides.
    let admins = AdminIds::resolve(&config.policy.unix);
    let plan = sandbox_plan(&config, &mode);
    let status = match sandbox::demote(&plan) {
        Ok(s) => s,
        Err(e) => {
            let error = format!("cannot sandbox the worker: {e}");
            let _ = control.send(
                &ToSupervisor::LoadFailed {
                    error: error.clone(),
                }
                .encode(),
                &[],
            );
            return Err(error);
        }
    };
    tracing::info!(sandbox = %status, "worker sandboxed");

    if let Mode::Probe = mode {
        println!("sandbox: {status}");
        let attempts = sandbox::probe(&plan);
        let mut bad = 0;
        for a in &attempts {
            let verdict = if a.denied { "denied" } else { "allowed" };
            let mark = if a.as_expected() { "ok" } else { "UNEXPECTED" };
            println!("{mark:<10} {verdict:<8} {} ({})", a.what, a.detail);
            if !a.as_expected() {
                bad += 1;
            }
        }
        return if bad == 0 {
            Ok(())
        } else {
            Err(format!("{bad} forbidden attempts succeeded"))
        };
    }

    let fingerprint = service::dbwatch::Fingerprint::of(&config.database.directory);
    let mut progress = ProgressSender::default();
    let loaded = Engine::load_with_progress(
        &config.database.directory,
        &EngineSettings::from_config(&config),
        &mut |p| progress.send(&control, p),
    );
    let engine = match loaded {
        Ok(e) => e,
        Err(e) => {
            let _ = control.send(
                &ToSupervisor::LoadFailed {
                    error: e.to_string(),
                }
                .encode(),
                &[],
            );
            return Err(e.to_string());
        }
    };
    let info = engine.info().clone();
    let ready = ToSupervisor::Ready {
        engine_version: engine::version(),
        signatures: info.signatures,
        db_version: info.db_version,
        db_time: info.db_time,
        sandbox: status.to_string(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(IO_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .thread_name("clamsentry-io")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listeners = adopt(listener_fds)?;
        let mut shared =
            Shared::new(Arc::new(config), engine, admins).map_err(|e| e.to_string())?;
        shared.use_broker(BrokerClient::new(broker));
        let control = Arc::new(AsyncChannel::new(control).map_err(|e| e.to_string())?);
        control
            .send(&ready.encode())
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        shared.set_upstream(tx);
        tokio::spawn(forward_upstream(Arc::clone(&control), rx));
        tokio::spawn(control_loop(Arc::clone(&control), Arc::clone(&shared)));
        // freshclam's updates and the on-demand mode: both end up as
        // requests to the supervisor (a blue/green reload, a shutdown).
        tokio::spawn(service::dbwatch::run(Arc::clone(&shared), fingerprint));
        tokio::spawn(service::idle::run(Arc::clone(&shared)));
        server::run(listeners, shared)
            .await
            .map_err(|e| e.to_string())
    })
}

/// Threads of the worker's async runtime (I/O only; scans have their own pool).
const IO_THREADS: usize = 2;
/// Upper bound of tokio's blocking pool in the worker.
const BLOCKING_THREADS: usize = 8;

fn sandbox_plan(config: &Config, mode: &Mode) -> sandbox::Plan {
    let root = nix::unistd::geteuid().is_root();
    let hard_nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    // Every thread counts against RLIMIT_NPROC: the runtime, the blocking
    // pool, the scan pool, and a little slack. Probing needs none at all.
    let threads = match mode {
        Mode::Probe => 0,
        Mode::Serve => {
            (IO_THREADS + BLOCKING_THREADS + config.limits.max_threads as usize + 8) as u64
        }
    };
    sandbox::Plan {
        user: root.then(|| config.sandbox.user.clone()),
        read_only: vec![config.database.directory.clone()],
        read_write: vec![config.scan.temporary_directory.clone()],
        max_open_files: (u64::from(config.limits.max_connections) * 3 + 256).min(hard_nofile),
        max_threads: threads,
    }
}

fn adopt(fds: Vec<(String, String, OwnedFd)>) -> Result<Listeners, String> {
    let mut l = Listeners::default();
    for (kind, name, fd) in fds {
        match kind.as_str() {
            "unix" => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                let listener =
                    tokio::net::UnixListener::from_std(std).map_err(|e| e.to_string())?;
                l.unix.push(Named::new(listener, &name, Origin::Supervisor));
            }
            "tcp" => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true).map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?;
                l.tcp.push(Named::new(listener, &name, Origin::Supervisor));
            }
            other => return Err(format!("unknown listener kind {other:?}")),
        }
    }
    Ok(l)
}

async fn forward_upstream(
    control: Arc<AsyncChannel>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Upstream>,
) {
    while let Some(up) = rx.recv().await {
        let msg = match up {
            Upstream::Reload => ToSupervisor::ReloadRequest,
            Upstream::Shutdown => ToSupervisor::ShutdownRequest,
        };
        if control.send(&msg.encode()).await.is_err() {
            return;
        }
    }
}

/// Loading progress for the supervisor (systemd's status line), at most
/// every half second or when the phase changes.
#[derive(Default)]
struct ProgressSender {
    last: Option<(std::time::Instant, LoadPhase)>,
}

impl ProgressSender {
    fn send(&mut self, control: &Channel, p: LoadProgress) {
        let now = std::time::Instant::now();
        if let Some((at, phase)) = self.last {
            if phase == p.phase && now.duration_since(at) < std::time::Duration::from_millis(500) {
                return;
            }
        }
        self.last = Some((now, p.phase));
        let msg = ToSupervisor::Progress {
            compiling: p.phase == LoadPhase::Compiling,
            done: p.done,
            total: p.total,
        };
        let _ = control.send(&msg.encode(), &[]);
    }
}

/// Messages from the supervisor. If the supervisor goes away, drain: a
/// worker never serves without its broker and its keeper.
async fn control_loop(control: Arc<AsyncChannel>, shared: Arc<Shared>) {
    use std::sync::atomic::Ordering::Relaxed;
    let stall = watchdog::stall_limit(shared.config.scan.max_scan_time);
    let mut health = watchdog::PoolHealth::new(stall, std::time::Instant::now());
    loop {
        let msg = match control.recv().await {
            Ok(Some((msg, _))) => msg,
            _ => {
                tracing::warn!("supervisor gone; draining");
                shared.drain();
                return;
            }
        };
        match ToWorker::decode(&msg) {
            Ok(ToWorker::Drain) => {
                tracing::info!("draining: no new connections, finishing in-flight requests");
                shared.drain();
            }
            Ok(ToWorker::Ping { seq }) => {
                let c = &shared.counters;
                let pong = ToSupervisor::Pong {
                    seq,
                    scans: c.scans.load(Relaxed),
                    found: c.found.load(Relaxed),
                    errors: c.errors.load(Relaxed),
                    healthy: health.check(&shared.pool, std::time::Instant::now()),
                };
                if control.send(&pong.encode()).await.is_err() {
                    shared.drain();
                    return;
                }
            }
            Ok(other) => tracing::warn!(message = ?other, "unexpected control message ignored"),
            Err(e) => tracing::warn!(error = %e, "undecodable control message ignored"),
        }
    }
}
