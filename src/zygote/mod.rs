//! The engine holder (zygote): loads and compiles the signatures once, then
//! forks scanning workers on the supervisor's request. Workers inherit the
//! compiled engine copy-on-write, so a crashed worker is replaced in
//! milliseconds, with no signature load, and N workers cost about one
//! engine's memory.
//!
//! Started by the supervisor as `clamsentry __zygote` with its control
//! channel at fd 3, its log channel at fd 4 (`log::relay`) and its stderr a
//! pipe the supervisor reads, nothing else. It stays single-threaded for its whole
//! life (a fork is only sound then), never touches a client connection, and
//! reads nothing but its control messages and the signature files:
//!
//! 1. read the configuration; set up logging; `cl_init` (before the
//!    sandbox: it reads OpenSSL's configuration and may load the unrar
//!    module);
//! 2. open the signature directory (still with the identity it was started
//!    with, see `SignatureDir`), then
//!    demote (`sandbox::demote`): the service user, no capabilities,
//!    no-new-privs, rlimits (enough tasks for the workers it will fork),
//!    Landlock (signatures read-only, the temporary tree read-write), and
//!    the system-call filter (no sockets, no connect, …; see
//!    `sandbox::seccomp`), which every worker inherits through `fork`
//!    before it exists (each adds a layer of its own). With `sandbox.landlock = "required"` a missing
//!    Landlock ends it here, with the reason, and with
//!    `sandbox.seccomp = "required"` a filter that could not be installed;
//! 3. load and compile, reporting progress; Ready;
//! 4. on `Fork`, fork a worker (see [`fork`]) that takes the two channels,
//!    the log channel and the stderr pipe that came with the request; on
//!    `Exit`, exit. A reload is a new zygote.

pub(crate) mod fork;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::config::Config;
use crate::engine::{self, Engine, EngineSettings, LoadPhase, LoadProgress};
use crate::ipc::messages::{EngineReady, FromZygote, ToZygote};
use crate::ipc::typed::{RecvError, Typed};
use crate::sandbox::{self, LandlockState};

/// Where the supervisor puts the control channel.
pub const CONTROL_FD: RawFd = 3;

/// The engine holder's end of its control channel.
type Control = Typed<FromZygote, ToZygote>;

/// What `sandbox-check` asks for instead of serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// Probe the sandbox; `connect`: Unix sockets to try besides the
    /// daemon's own (`sandbox-check --connect`).
    Probe {
        connect: Vec<PathBuf>,
    },
}

/// The zygote's `main`; returns the exit code.
pub fn main(mode: Mode) -> i32 {
    match run(mode) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clamsentry engine holder: {e}");
            1
        }
    }
}

/// Threads of a worker besides its scan threads: the I/O thread (its main
/// thread) and slack.
pub const WORKER_EXTRA_THREADS: u64 = 2;

fn recv(control: &Control) -> Result<(ToZygote, Vec<OwnedFd>), String> {
    match control.recv() {
        Ok(Some(m)) => Ok((m.msg, m.fds)),
        Err(RecvError::Decode(e)) => Err(format!("control message: {e}")),
        Ok(None) => Err("the supervisor went away".into()),
        Err(e) => Err(format!("control channel: {e}")),
    }
}

fn send(control: &Control, msg: &FromZygote) {
    let _ = control.send(msg, &[]);
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

fn run(mode: Mode) -> Result<i32, String> {
    let _ = rustix::thread::set_name(c"clamsentry-eng");
    crate::worker::process::fatal_signals_kill()?;
    crate::worker::process::fix_mmap_threshold();
    let control = Control::inherit(CONTROL_FD).map_err(|e| {
        format!("descriptor {CONTROL_FD}: {e}: the engine holder is started only by the supervisor")
    })?;
    // Its log channel; without it (never from the supervisor) it logs to
    // its stderr, which the supervisor reads too.
    let log = Typed::inherit(crate::log::relay::LOG_FD).ok();
    let (toml, temp_parent, temp_dir) = match recv(&control)? {
        (
            ToZygote::Config {
                toml,
                temp_parent,
                temp_dir,
            },
            fds,
        ) if fds.is_empty() => (toml, path_of(&temp_parent), path_of(&temp_dir)),
        (other, _) => return Err(format!("expected the configuration first, got {other:?}")),
    };
    let mut config =
        Config::parse(&toml, "configuration from the supervisor").map_err(|e| e.to_string())?;
    config.scan.temporary_directory = temp_dir.clone();
    crate::log::relay::init_child(config.log.level.as_str(), log);

    // Before the sandbox: what needs /proc, /sys, /etc or OpenSSL's files.
    engine::init().map_err(|e| e.to_string())?;
    let mut threads = fork::Threads::open().map_err(|e| format!("/proc/self/task: {e}"))?;
    let supervisor = rustix::process::getppid()
        .ok_or("the supervisor is not in this process's pid namespace")?;
    // The signature directory, opened with the identity we were started
    // with (root, as clamd without `User`), so that the service user reaches
    // it even below directories only root may enter; see [`SignatureDir`].
    let signatures = SignatureDir::open(&config.database.directory, &config.sandbox.user);
    // Opened now, read once the engine is loaded, closed before Ready: the
    // peak of the load is what a reload's second engine will need.
    let status_file = std::fs::File::open("/proc/self/status").ok();
    // Its own memory, read through this descriptor after demotion.
    let mut meter = crate::usage::Meter::open();

    let plan = plan(&config, signatures.path(), &temp_parent, &mode);
    // sandbox-check: its spare sockets are made before the sandbox.
    let targets = match &mode {
        Mode::Probe { connect } => Some(sandbox::Targets::new(
            config
                .unix_path()
                .map(std::path::Path::to_path_buf)
                .into_iter()
                .chain(connect.iter().cloned())
                .collect(),
        )),
        Mode::Serve => None,
    };
    let status = match sandbox::demote(&plan) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                &control,
                signatures.show(&format!("cannot sandbox the engine holder: {e}")),
            )
        }
    };
    if let LandlockState::NotEnforced { reason } = &status.landlock {
        if config.sandbox.landlock_required() {
            return fail(
                &control,
                format!(
                    "Landlock cannot be applied: {reason}. \
                     Set sandbox.landlock = \"best-effort\" to run without it"
                ),
            );
        }
        tracing::warn!(reason = %reason, "running without Landlock (sandbox.landlock = \"best-effort\")");
    }
    if let sandbox::SeccompState::Failed { reason } = &status.seccomp {
        if config.sandbox.seccomp_required() {
            return fail(
                &control,
                format!(
                    "the system-call filter cannot be installed: {reason}. \
                     Set sandbox.seccomp = \"best-effort\" to run without it \
                     (workers could then open sockets and connect to path Unix sockets)"
                ),
            );
        }
        tracing::warn!(reason = %reason, "running without the system-call filter (sandbox.seccomp = \"best-effort\")");
    }
    tracing::info!(sandbox = %status, "engine holder sandboxed");

    if let Some(targets) = targets {
        return probe(&mut threads, supervisor, &config, &status, &targets);
    }

    let mut progress = ProgressSender::default();
    let loaded = Engine::load_with_progress(
        signatures.path(),
        &EngineSettings::from_config(&config),
        &mut |p| progress.send(&control, p),
    );
    let mut engine = match loaded {
        Ok(e) => e,
        Err(e) => return fail(&control, signatures.show(&e.to_string())),
    };
    // This process and every worker forked from it exit with the engine.
    engine.keep_until_exit();
    let load_peak_kib = status_file.map_or(0, |f| load_peak_kib(&f));
    let info = engine.info().clone();
    send(
        &control,
        &FromZygote::Ready(EngineReady {
            engine_version: engine::version(),
            signatures: info.signatures,
            db_version: info.db_version,
            db_time: info.db_time,
            sandbox: status.to_string(),
            load_peak_kib,
        }),
    );
    let mut engine = Some(engine);
    loop {
        let (msg, fds) = recv(&control)?;
        match msg {
            ToZygote::Fork { worker } => {
                let [worker_control, broker, log, stderr]: [OwnedFd; 4] = match fds.try_into() {
                    Ok(fds) => fds,
                    Err(_) => {
                        return Err(
                            "a fork request without its two channels, log channel and stderr"
                                .into(),
                        )
                    }
                };
                match fork::fork_worker(&mut threads, supervisor) {
                    Ok(fork::Side::Holder) => {}
                    Ok(fork::Side::Worker) => {
                        // Its own log channel and stderr (a pipe the
                        // supervisor reads), so that its lines are marked
                        // as this worker's, never the holder's.
                        crate::log::relay::switch(Typed::from_fd(log));
                        fork::take_stderr(stderr);
                        // The holder's descriptors are not the worker's.
                        drop(control);
                        drop(threads);
                        drop(signatures);
                        drop(meter);
                        let engine = engine.take().ok_or("no engine")?;
                        let code = crate::worker::serve_forked(
                            config,
                            engine,
                            Typed::from_fd(worker_control),
                            Typed::from_fd(broker),
                        );
                        std::process::exit(code);
                    }
                    Err(error) => send(&control, &FromZygote::ForkFailed { worker, error }),
                }
            }
            ToZygote::Exit => return Ok(0),
            ToZygote::Measure => send(&control, &FromZygote::Usage(meter.read())),
            ToZygote::Config { .. } => return Err("a second configuration".into()),
        }
    }
}

/// This process's peak resident size in KiB (`VmHWM` of an already open
/// `/proc/self/status`; the sandbox does not let it open one now), 0 if
/// unknown.
fn load_peak_kib(status: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 16 * 1024];
    let n = status.read_at(&mut buf, 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fail(control: &Control, error: String) -> Result<i32, String> {
    send(
        control,
        &FromZygote::LoadFailed {
            error: error.clone(),
        },
    );
    Err(error)
}

/// The signature directory as the engine holder reaches it after demotion.
///
/// clamd started as root without `User` loads its signatures as root, so a
/// `DatabaseDirectory` below a directory only root may enter (a 0700 home
/// or temporary directory, as in ClamAV's own clamd tests) works there. The
/// engine holder loads them as the service user instead, so it opens the
/// directory before it demotes itself (`O_PATH`: a handle, no read right)
/// and afterwards reaches it through `/proc/self/fd/N`, which does not walk
/// the directories above it again. Nothing else changes: the Landlock rule
/// covers the same directory (the rule's `O_PATH` open follows the link to
/// it), and the service user still needs search and read permission on the
/// directory and read permission on its files, so a signature file only
/// root may read still fails to load. The directory is reached with
/// [`crate::safe_fs::open_dir`]: if another user than root and the service
/// user could replace an entry on the way (and so point root's handle into
/// a directory only root may enter), or the open fails (no such
/// directory), the configured path is used as before, resolved by the
/// service user itself, and an error names it.
struct SignatureDir {
    configured: PathBuf,
    /// `/proc/self/fd/N` while `fd` is open, else `configured`.
    path: PathBuf,
    fd: Option<OwnedFd>,
}

impl SignatureDir {
    fn open(configured: &std::path::Path, service_user: &str) -> SignatureDir {
        let me = rustix::process::geteuid().as_raw();
        let theirs = crate::sys::user_by_name(service_user)
            .ok()
            .flatten()
            .map(|u| u.uid);
        let trusted: Vec<u32> = std::iter::once(me).chain(theirs).collect();
        match crate::safe_fs::open_dir(configured, &trusted, None) {
            Ok(dir) => {
                let fd = dir.into_fd();
                SignatureDir {
                    configured: configured.to_path_buf(),
                    path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                    fd: Some(fd),
                }
            }
            Err(e) => {
                if let crate::safe_fs::WalkError::Exposed { .. } = e {
                    tracing::warn!(
                        "database.directory: {e}; the service user reaches it by its path instead"
                    );
                }
                SignatureDir {
                    configured: configured.to_path_buf(),
                    path: configured.to_path_buf(),
                    fd: None,
                }
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A message with `/proc/self/fd/N` put back as the configured path.
    fn show(&self, message: &str) -> String {
        if self.fd.is_none() {
            return message.to_string();
        }
        message.replace(
            &*self.path.to_string_lossy(),
            &self.configured.to_string_lossy(),
        )
    }
}

fn plan(
    config: &Config,
    signatures: &std::path::Path,
    temp_parent: &std::path::Path,
    mode: &Mode,
) -> sandbox::Plan {
    let root = rustix::process::geteuid().is_root();
    let hard_nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let workers = u64::from(config.limits.max_workers + config.limits.standby_workers);
    let per_worker = worker_threads(config) as u64
        + u64::from(config.limits.reserve_threads)
        + WORKER_EXTRA_THREADS;
    // Two generations of workers overlap during a reload, each worker with
    // its threads, plus the forks in between. RLIMIT_NPROC counts every task
    // of the service user system-wide, including ones started after this
    // one (another instance, a test suite running several daemons as the
    // same user), so the budget has room; it still stops a fork bomb.
    let tasks = match mode {
        Mode::Probe { .. } => 64,
        Mode::Serve => 2 * workers * (per_worker + 1) + 512,
    };
    sandbox::Plan {
        user: root.then(|| config.sandbox.user.clone()),
        read_only: vec![signatures.to_path_buf()],
        read_write: vec![temp_parent.to_path_buf()],
        // Each worker opens its own smaps_rollup between the fork and its
        // narrowing (see `crate::usage`).
        read_files: vec![std::path::PathBuf::from("/proc")],
        max_open_files: (u64::from(config.limits.max_connections) * 3 + 256).min(hard_nofile),
        max_threads: tasks,
        seccomp: true,
        accepts: false,
    }
}

/// Scan threads of one worker: as many as the whole daemon may run (the
/// supervisor tells each worker how many of them it may use at once).
pub fn worker_threads(config: &Config) -> u32 {
    config.limits.max_threads.max(1)
}

/// `sandbox-check`: fork a worker exactly as for serving and let it try
/// forbidden things; print what the holder and the worker got.
fn probe(
    threads: &mut fork::Threads,
    supervisor: rustix::process::Pid,
    config: &Config,
    status: &sandbox::Status,
    targets: &sandbox::Targets,
) -> Result<i32, String> {
    println!("engine holder: {status}");
    match fork::fork_worker(threads, supervisor).map_err(|e| format!("fork: {e}"))? {
        fork::Side::Holder => Ok(0),
        fork::Side::Worker => std::process::exit(crate::worker::probe_forked(config, targets)),
    }
}

/// Loading progress for the supervisor (systemd's status line), at most
/// every half second or when the phase changes.
#[derive(Default)]
struct ProgressSender {
    last: Option<(std::time::Instant, LoadPhase)>,
}

impl ProgressSender {
    fn send(&mut self, control: &Control, p: LoadProgress) {
        let now = std::time::Instant::now();
        if let Some((at, phase)) = self.last {
            if phase == p.phase && now.duration_since(at) < std::time::Duration::from_millis(500) {
                return;
            }
        }
        self.last = Some((now, p.phase));
        send(
            control,
            &FromZygote::Progress {
                compiling: p.phase == LoadPhase::Compiling,
                done: p.done,
                total: p.total,
            },
        );
    }
}
