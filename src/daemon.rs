//! Start-up and lifecycle of the main process (the supervisor).
//!
//! Order: configuration → logging → systemd's sockets (taken before any
//! thread exists, as they come through environment variables) → the service
//! user → bind configured sockets when not activated → the workers' temp
//! directory → drop capabilities → supervise workers; READY=1 goes to
//! systemd only once the first worker has loaded its engine.
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{clamd_conf, Config, ConfigError, ConfigSource};
use crate::daemonize::Readiness;
use crate::engine::{self, EngineError};
use crate::privsep::broker::FilePolicy;
use crate::privsep::supervisor::{self, Lifecycle, Setup, SupervisorError};
use crate::sandbox::{self, SandboxError};
use crate::server::{self, Listeners, Named, Origin};
use crate::systemd::activation::{self, ActivationError, Socket};
use crate::systemd::journal;
use crate::systemd::notify::Notifier;
use crate::systemd::status::ServiceStatus;

/// Why the daemon could not start; main prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nothing to listen on: set listen.unix or listen.tcp in the configuration")]
    NoListeners,
    #[error(transparent)]
    Activation(#[from] ActivationError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
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

/// Sets up logging at the configured level (RUST_LOG overrides) to
/// journald or stderr, as `log.target` says.
///
/// Our spans are always enabled, whatever the level: they carry the
/// connection fields (PEER, LISTENER) that a FOUND warning must show even
/// when info lines are turned off.
pub fn init_logging(level: &str, target: &str) {
    use tracing_subscriber::filter::{filter_fn, Targets};
    use tracing_subscriber::prelude::*;
    let targets: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            format!("clamsentry={level},warn")
                .parse()
                .unwrap_or_default()
        });
    let filter = filter_fn(move |meta| {
        (meta.is_span() && meta.target().starts_with("clamsentry"))
            || targets.would_enable(meta.target(), meta.level())
    });
    let want_journal = match target {
        "journald" => true,
        "stderr" => false,
        _ => journal::stderr_is_journal(),
    };
    let journald = if want_journal {
        match journal::layer() {
            Ok(layer) => Some(layer),
            Err(e) => {
                eprintln!("clamsentry: cannot log to journald ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    let registry = tracing_subscriber::registry();
    let _ = match journald {
        Some(layer) => registry.with(layer.with_filter(filter)).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT, SHUTDOWN or
/// `service.exit-when-idle`: the supervisor holds the sockets, scanning
/// happens in sandboxed workers (see `privsep`). A start-up failure is also
/// shown in systemd's status line (`systemctl status clamsentry`).
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

fn serve(source: ConfigSource, readiness: &Readiness) -> Result<(), StartError> {
    let prepared = prepare(source)?;
    // clamd's PidFile: this process's pid (after any fork), removed at exit.
    let _pid_file = prepared
        .config
        .service
        .pid_file()
        .map(crate::pidfile::PidFile::create)
        .transpose()?;
    let activated = activation::take(&prepared.config)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let Prepared {
            config,
            text,
            worker_ids,
        } = prepared;
        let listeners = if activated.is_empty() {
            server::bind_from_config(&config).await?
        } else {
            if config.unix_path().is_some() || !config.listen.tcp.is_empty() {
                tracing::info!("sockets come from systemd: [listen] unix and tcp are not bound");
            }
            from_systemd(activated)?
        };
        if listeners.is_empty() {
            return Err(StartError::NoListeners);
        }
        log_listeners(&listeners);
        let activated = listeners.unix.iter().any(|l| l.origin == Origin::Systemd)
            || listeners.tcp.iter().any(|l| l.origin == Origin::Systemd);
        if config.service.exit_when_idle > 0 && !activated {
            tracing::warn!(
                "service.exit-when-idle is set but the sockets are not from systemd: nothing will start clamsentry again after it exits"
            );
        }
        let bound_unix = listeners.unix.iter().any(|l| l.origin == Origin::Config);
        let setup = supervisor_setup(&config, text, worker_ids, into_fds(listeners)?)?;
        let temp_dir = setup.temp_dir.clone();
        let notifier = Notifier::from_env();
        notifier.loading_started(&config.database.directory.display().to_string());
        let mut status = ServiceStatus::new(notifier);
        let result = supervisor::run(setup, |event| {
            if matches!(event, Lifecycle::Ready { .. }) {
                // READINESS: the first worker serves; a parent waiting in
                // the foreground (clamd's command line) exits 0 now.
                readiness.ready();
            }
            status.observe(event)
        })
        .await;
        if bound_unix {
            if let Some(p) = config.unix_path() {
                let _ = std::fs::remove_file(p);
            }
        }
        let _ = std::fs::remove_dir_all(&temp_dir);
        result?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `clamsentry sandbox-check`: a worker started as in production tries
/// forbidden things and prints what happened. Returns its exit code.
pub fn sandbox_check(source: ConfigSource) -> Result<i32, StartError> {
    let prepared = prepare(source)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let Prepared {
            config,
            text,
            worker_ids,
        } = prepared;
        let setup = supervisor_setup(&config, text, worker_ids, Vec::new())?;
        let temp_dir = setup.temp_dir.clone();
        let status = supervisor::probe(setup).await?;
        let _ = std::fs::remove_dir_all(&temp_dir);
        Ok(status.code().unwrap_or(1))
    })
}

/// What the supervisor needs, once the sockets are known: the workers'
/// temporary directory is made (then the capabilities that allowed it to be
/// given away are reduced to what the supervisor keeps).
fn supervisor_setup(
    config: &Config,
    text: String,
    worker_ids: Option<(u32, u32)>,
    listeners: Vec<supervisor::Inherited>,
) -> Result<Setup, StartError> {
    let temp_dir = worker_temp_dir(config, worker_ids)?;
    keep_supervisor_capabilities()?;
    Ok(Setup {
        config_text: text,
        listeners,
        temp_dir,
        temp_owner: worker_ids,
        policy: Arc::new(FilePolicy::new(&config.policy.scan_roots)),
    })
}

struct Prepared {
    config: Config,
    text: String,
    /// The worker's uid/gid when we run as root and switch to the service user.
    worker_ids: Option<(u32, u32)>,
}

fn prepare(source: ConfigSource) -> Result<Prepared, StartError> {
    let loaded = source.load()?;
    init_logging(&loaded.config.log.level, &loaded.config.log.target);
    match &loaded.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no configuration file, using built-in defaults"),
    }
    if let Some(p) = &loaded.source {
        clamd_conf::log_notes(&p.display().to_string(), &loaded.notes);
    }
    raise_fd_limit();
    let worker_ids = if nix::unistd::geteuid().is_root() {
        Some(sandbox::lookup_user(&loaded.config.sandbox.user)?)
    } else {
        None
    };
    tracing::info!(libclamav = %engine::version(), "starting");
    Ok(Prepared {
        config: loaded.config,
        text: loaded.text,
        worker_ids,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("clamsentry-supervisor")
        .build()?)
}

/// systemd's sockets as listeners, with their names.
fn from_systemd(activated: Vec<activation::Activated>) -> std::io::Result<Listeners> {
    let mut listeners = Listeners::default();
    for a in activated {
        match a.socket {
            Socket::Unix(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(l)?;
                listeners.unix.push(Named::new(l, &a.name, Origin::Systemd));
            }
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                listeners.tcp.push(Named::new(l, &a.name, Origin::Systemd));
            }
        }
    }
    Ok(listeners)
}

fn log_listeners(listeners: &Listeners) {
    for l in &listeners.unix {
        let address = l
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_default();
        tracing::info!(
            listener = %l.name,
            origin = %l.origin,
            "listening on Unix socket {address} from {} (listener {}, Unix listener settings)",
            l.origin,
            l.name
        );
    }
    for l in &listeners.tcp {
        let address = l
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            listener = %l.name,
            origin = %l.origin,
            "listening on TCP {address} from {} (listener {}, TCP listener settings)",
            l.origin,
            l.name
        );
    }
}

/// The listening sockets as descriptors for the workers: (kind, name, fd).
fn into_fds(listeners: Listeners) -> Result<Vec<supervisor::Inherited>, StartError> {
    let mut fds = Vec::new();
    for l in listeners.unix {
        fds.push(supervisor::Inherited {
            kind: "unix",
            name: l.name.to_string(),
            fd: OwnedFd::from(l.listener.into_std()?),
        });
    }
    for l in listeners.tcp {
        fds.push(supervisor::Inherited {
            kind: "tcp",
            name: l.name.to_string(),
            fd: OwnedFd::from(l.listener.into_std()?),
        });
    }
    Ok(fds)
}

/// The workers' private temporary directory, owned by the worker's user.
fn worker_temp_dir(config: &Config, ids: Option<(u32, u32)>) -> Result<PathBuf, StartError> {
    let dir = config
        .scan
        .temporary_directory
        .join(format!("clamsentry.{}", std::process::id()));
    if dir.is_dir() {
        std::fs::remove_dir_all(&dir)?;
    }
    supervisor::ensure_temp_dir(&dir, ids)?;
    Ok(dir)
}

/// The supervisor keeps only what starting workers (SETUID, SETGID,
/// SETPCAP; CHOWN to give each new worker its temporary directory) and
/// brokering files (DAC_READ_SEARCH) and signalling workers (KILL) need;
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
