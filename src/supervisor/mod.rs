//! The supervisor: the daemon's main process. It runs as root with a few
//! capabilities, holds the listening sockets, accepts every connection,
//! records who the peer is, and hands the connection to a worker; it serves
//! the workers' file requests as the client ([`broker`]); it starts the
//! engine holders and decides everything about the daemon's life
//! ([`lifecycle`]). It never reads a client's command stream or a scanned
//! file. What it does take from the unprivileged side is bounded and
//! checked: the paths a client named (walked as the client, one component
//! at a time, by [`broker`]), the workers' closed messages
//! (`crate::ipc::messages`, decoded with a length and a type), the log
//! records it relays ([`logrelay`]), and the PROXY v2 header a trusted load
//! balancer puts before a client's bytes ([`proxied`]: bounded, from
//! `listen.proxy-from` only).
//!
//! Start-up order: configuration → logging → systemd's sockets (taken
//! before any thread exists, as they come through environment variables) →
//! every other inherited descriptor made close-on-exec → child subreaper →
//! bind configured sockets when not activated → the private temporary
//! directory → drop capabilities → the first engine holder. The accept
//! loops start, and READY=1 goes to systemd, once the first worker serves:
//! until then connections wait in the listen backlog, so a client that gets
//! an answer always finds `systemctl is-active` saying active.

mod authority;
pub(crate) mod broker;
mod children;
mod dbwatch;
pub(crate) mod gate;
mod hangup;
pub(crate) mod headroom;
pub(crate) mod lifecycle;
mod listeners;
mod local_peer;
pub(crate) mod logrelay;
mod message_budget;
pub(crate) mod metrics;
pub(crate) mod node;
mod observer;
pub(crate) mod procs;
mod proxied;
mod run;
pub mod runtime_files;
mod spoke;
mod status;
mod tempdir;
pub mod virus_event;

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use self::lifecycle::{GenId, Who, WorkerId};
use self::tempdir::TempRoot;
use self::virus_event::VirusEvents;
use crate::config::{clamd_conf, Config, ConfigError, ConfigSource};
use crate::daemonize::Readiness;
use crate::ipc::messages::{FromWorker, FromZygote, ToZygote};
use crate::ipc::typed::Typed;
use crate::policy::{Admins, ListenerKind, Profile};
use crate::sandbox::{self, SandboxError};
use crate::systemd::activation::{self, ActivationError};
use crate::systemd::notify::Notifier;

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
    crate::log::init(
        loaded.config.log.level.as_str(),
        loaded.config.log.target.as_str(),
    );
    match &loaded.source {
        Some(p) => {
            tracing::info!(config = %p.display(), "configuration loaded");
            clamd_conf::log_notes(&p.display().to_string(), &loaded.notes);
        }
        None => tracing::info!("no configuration file, using built-in defaults"),
    }
    raise_fd_limit();
    let owner = if rustix::process::geteuid().is_root() {
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
/// socket and PID file at exit, see [`runtime_files::remove_at_exit`]) and signalling
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
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let (soft, hard) = (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    );
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if soft < hard && setrlimit(Resource::Nofile, raised).is_ok() {
        tracing::debug!(from = soft, to = hard, "raised the open file limit");
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
    let mut activated = activation::take(&prepared.config)?;
    let observed = observer::Sockets::take(&prepared.config, &mut activated)?;
    procs::close_on_exec_all();
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| StartError::Failed(format!("cannot become a child subreaper: {e}")))?;
    let runtime = runtime()?;
    let result = runtime.block_on(async move {
        let Prepared {
            config,
            text,
            owner,
        } = prepared;
        let mut listeners = if activated.is_empty() {
            listeners::bind_from_config(&config).await?
        } else {
            if config.unix_path().is_some()
                || !config.listen.tcp.is_empty()
                || !config.listen.tcp_proxy.is_empty()
            {
                tracing::info!("sockets come from systemd: [listen] unix and tcp are not bound");
            }
            listeners::from_systemd(activated)?
        };
        if listeners.is_empty() {
            return Err(StartError::NoListeners);
        }
        if listeners.iter().any(|l| l.proxy) && config.listen.proxy_from.is_empty() {
            return Err(StartError::Failed(
                "a PROXY listener (tcp-proxy) without balancers to trust: list them in listen.proxy-from".into(),
            ));
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
        let bound_unix = listeners.iter_mut().find_map(|l| l.made.take());
        let temp = TempRoot::create(&config.scan.temporary_directory, owner)?;
        tracing::info!(directory = %temp.path().display(), "private temporary directory created");
        keep_supervisor_capabilities()?;
        let both_kinds = [ListenerKind::Unix, ListenerKind::Tcp]
            .iter()
            .all(|k| listeners.iter().any(|l| l.kind() == *k));
        let virus_events = VirusEvents::from_config(&config, both_kinds)?;
        let executor = run::Executor::new(
            Arc::new(config),
            text,
            temp,
            virus_events,
            listeners,
            observed,
        )?;
        let result = executor.run(readiness).await;
        if let Some(m) = bound_unix {
            runtime_files::remove_at_exit(&m, "Unix socket");
        }
        result.map_err(StartError::Failed)?;
        tracing::info!("stopped");
        Ok(())
    });
    if let Some(p) = &pid_file {
        runtime_files::remove_at_exit(p.made(), "PID file");
    }
    result
}

/// `clamsentry sandbox-check`: an engine holder and a worker forked from it
/// exactly as in production try forbidden things and print what happened;
/// `connect`: Unix sockets to try besides the daemon's own.
/// Returns the exit code (0 when every attempt was denied).
pub fn sandbox_check(source: ConfigSource, connect: &[PathBuf]) -> Result<i32, StartError> {
    let prepared = prepare(source)?;
    let mut args = vec!["__zygote".to_string(), "--probe".to_string()];
    for path in connect {
        let path = path.to_str().ok_or_else(|| {
            StartError::Failed(format!("--connect {}: not UTF-8", path.display()))
        })?;
        args.push(format!("--connect={path}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    procs::close_on_exec_all();
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| StartError::Failed(format!("cannot become a child subreaper: {e}")))?;
    let temp = TempRoot::create(&prepared.config.scan.temporary_directory, prepared.owner)?;
    keep_supervisor_capabilities()?;
    let zdir = temp.private("probe")?;
    let (ours, theirs) = Typed::<ToZygote, FromZygote>::pair()?;
    let (log, log_child) = Typed::pair()?;
    logrelay::relay_blocking(log, crate::log::relay::Source::EngineHolder(0))?;
    let child = procs::spawn_zygote(
        &args,
        &OwnedFd::from(theirs),
        &OwnedFd::from(log_child),
        procs::Output::Terminal,
    )?;
    let config = ToZygote::Config {
        toml: prepared.text,
        temp_parent: temp.path_bytes(),
        temp_dir: zdir.as_os_str().as_bytes().to_vec(),
    };
    ours.send(&config, &[])?;
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
pub(crate) enum Input {
    Tick,
    Life(lifecycle::Event),
    Gate(gate::Event),
    Accepted(listeners::Accepted),
    Worker(WorkerId, FromWorker, Option<i32>),
    Zygote(GenId, FromZygote),
    /// A process broke a rule its channel enforces (see `lifecycle`).
    Broken(Who, String),
    /// New memory figures: the workers hear them at once (STATS).
    Measured,
    /// From or about the observer (metrics, agent, self-test).
    Observer(observer::ObserverEvent),
}

/// The gate's settings, from the configuration.
fn gate_settings(config: &Config) -> gate::Settings {
    let l = &config.limits;
    let policy = &config.policy;
    let me = rustix::process::geteuid();
    let admins = Admins::resolve(&policy.unix);
    let admins = if me.is_root() {
        admins
    } else {
        admins.with_own_user(me.as_raw())
    };
    // Only a daemon started as root has a service user of its own; an
    // unprivileged daemon's workers run as the user who started it, whose
    // clients are its own.
    let service_uid = if me.is_root() && policy.unix.refuse_service_user {
        sandbox::lookup_user(&config.sandbox.user)
            .ok()
            .map(|(uid, _)| uid)
    } else {
        None
    };
    gate::Settings {
        caps: gate::admission::Caps::from_config(l),
        prefixes: l.prefixes(),
        isolation: match config.sandbox.isolation {
            crate::config::Isolation::Connection => gate::Isolation::Connection,
            crate::config::Isolation::Identity => gate::Isolation::Identity,
        },
        max_workers: l.max_workers as usize,
        max_threads: l.max_threads,
        leases: gate::shares::LeaseSettings::new(
            l.stream_memory.0,
            l.stream_max_length.0,
            l.max_workers as usize,
        ),
        wait_for_worker: Duration::from_secs(l.command_read_timeout),
        lifetime: connection_lifetime(config),
        idle_worker: IDLE_WORKER,
        close_grace: close_grace(config),
        active_linger: ACTIVE_LINGER,
        service_uid,
        admins,
        unix: Profile::new(ListenerKind::Unix, &policy.unix.commands),
        tcp: Profile::new(ListenerKind::Tcp, &policy.tcp.commands),
    }
}

/// A tenant's worker with no connection for this long is released (its
/// memory returns; the next connection binds a standby worker in
/// microseconds).
const IDLE_WORKER: Duration = Duration::from_secs(600);

/// How long a client identity keeps its share of the scan threads after
/// its last connection closed.
const ACTIVE_LINGER: Duration = Duration::from_secs(10);

/// No connection lives longer than this, whatever its worker does: the
/// longest a well-behaved connection can take — a session's
/// `limits.max-session-seconds`, then its last command (a scan, a stream
/// with its silences) — plus a margin. Without a session bound, the longest
/// a session of `max-session-commands` commands can idle and stream.
fn connection_lifetime(config: &Config) -> Duration {
    let l = &config.limits;
    let command = l
        .read_timeout
        .max(l.command_timeout)
        .saturating_add(u64::from(config.scan.max_scan_time) / 1000);
    let bound = if l.max_session_seconds > 0 {
        l.max_session_seconds.saturating_add(command)
    } else {
        let per_command = l.idle_timeout.saturating_add(l.command_timeout);
        per_command
            .saturating_mul(u64::from(l.max_session_commands.min(100_000)))
            .max(command)
            .min(24 * 3600)
    };
    Duration::from_secs(bound.saturating_add(60))
}

/// How long a worker may keep a connection after its client left or the
/// gate closed it: one scan's time (`scan.max-scan-time`) plus
/// [`gate::CLOSE_MARGIN`]; without a scan time limit, the connection
/// lifetime bound.
fn close_grace(config: &Config) -> Duration {
    match config.scan.max_scan_time {
        0 => connection_lifetime(config),
        ms => Duration::from_millis(u64::from(ms)).saturating_add(gate::CLOSE_MARGIN),
    }
}

fn lifecycle_settings(config: &Config) -> lifecycle::Settings {
    lifecycle::Settings {
        standby: config.limits.standby_workers as usize,
        drain_timeout: Duration::from_secs(config.limits.drain_timeout),
        max_workers: config.limits.max_workers as usize,
        memory: config
            .limits
            .reload_memory_check
            .then(|| lifecycle::MemoryCheck {
                headroom: config.limits.reload_headroom.0,
                retry: Duration::from_secs(config.limits.reload_retry),
            }),
    }
}

fn spawn_signal_task(tx: mpsc::Sender<Input>) {
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
            if tx.send(Input::Life(e)).await.is_err() {
                return;
            }
        }
    });
}
