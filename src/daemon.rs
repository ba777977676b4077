//! Start-up and lifecycle: configuration, logging, engine, sockets, signals.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::engine::{self, EngineError};
use crate::privsep::broker::FilePolicy;
use crate::privsep::supervisor::{self, Lifecycle, Setup, SupervisorError};
use crate::sandbox::{self, SandboxError};
use crate::server;

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
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// `clamsentry check-config`: validates and prints a one-line summary.
pub fn check_config(path: Option<&Path>) -> Result<String, ConfigError> {
    let loaded = Config::load(path)?;
    let source = loaded.source.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    Ok(format!("{source}: configuration OK"))
}

/// Sets up logging to stderr at the configured level (RUST_LOG overrides).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("clamsentry={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or SHUTDOWN: the
/// supervisor binds the sockets, then scanning happens in sandboxed workers
/// (see `privsep`).
pub fn run(config_path: Option<&Path>) -> Result<(), StartError> {
    let prepared = prepare(config_path)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let Prepared {
            config,
            text,
            worker_ids,
        } = prepared;
        let listeners = server::bind_from_config(&config).await?;
        if listeners.unix.is_empty() && listeners.tcp.is_empty() {
            return Err(StartError::NoListeners);
        }
        if let Some(p) = config.unix_path() {
            tracing::info!(path = %p.display(), "listening on Unix socket");
        }
        for a in &config.listen.tcp {
            tracing::info!(address = %a, "listening on TCP");
        }
        let fds = into_fds(listeners)?;
        let temp_dir = worker_temp_dir(&config, worker_ids)?;
        keep_supervisor_capabilities()?;
        let setup = Setup {
            config_text: text,
            listeners: fds,
            temp_dir: temp_dir.clone(),
            policy: Arc::new(FilePolicy::new(&config.policy.scan_roots)),
        };
        let result = supervisor::run(setup, log_lifecycle).await;
        if let Some(p) = config.unix_path() {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir_all(&temp_dir);
        result?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `clamsentry sandbox-check`: a worker started as in production tries
/// forbidden things and prints what happened. Returns its exit code.
pub fn sandbox_check(config_path: Option<&Path>) -> Result<i32, StartError> {
    let prepared = prepare(config_path)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let Prepared {
            config,
            text,
            worker_ids,
        } = prepared;
        let temp_dir = worker_temp_dir(&config, worker_ids)?;
        keep_supervisor_capabilities()?;
        let setup = Setup {
            config_text: text,
            listeners: Vec::new(),
            temp_dir: temp_dir.clone(),
            policy: Arc::new(FilePolicy::new(&[])),
        };
        let status = supervisor::probe(setup).await?;
        let _ = std::fs::remove_dir_all(&temp_dir);
        Ok(status.code().unwrap_or(1))
    })
}

struct Prepared {
    config: Config,
    text: String,
    /// The worker's uid/gid when we run as root and switch to the service user.
    worker_ids: Option<(u32, u32)>,
}

fn prepare(config_path: Option<&Path>) -> Result<Prepared, StartError> {
    let loaded = Config::load(config_path)?;
    init_logging(&loaded.config.log.level);
    match &loaded.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no configuration file, using built-in defaults"),
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

fn into_fds(listeners: server::Listeners) -> Result<Vec<(&'static str, OwnedFd)>, StartError> {
    let mut fds = Vec::new();
    for l in listeners.unix {
        fds.push(("unix", OwnedFd::from(l.into_std()?)));
    }
    for l in listeners.tcp {
        fds.push(("tcp", OwnedFd::from(l.into_std()?)));
    }
    Ok(fds)
}

/// The workers' private temporary directory, owned by the worker's user.
fn worker_temp_dir(config: &Config, ids: Option<(u32, u32)>) -> Result<PathBuf, StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = config
        .scan
        .temporary_directory
        .join(format!("clamsentry.{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create {}: {e} (scan.temporary-directory)",
                    dir.display()
                ),
            )
        })?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The supervisor keeps only what starting workers and brokering files
/// needs; everything else goes, bounding set included.
fn keep_supervisor_capabilities() -> Result<(), StartError> {
    use caps::Capability::*;
    sandbox::restrict_supervisor(&[
        CAP_SETUID,
        CAP_SETGID,
        CAP_SETPCAP,
        CAP_DAC_READ_SEARCH,
        CAP_KILL,
    ])?;
    Ok(())
}

fn log_lifecycle(event: Lifecycle) {
    match event {
        Lifecycle::Ready {
            signatures,
            db_version,
            sandbox,
        } => tracing::info!(signatures, db_version, sandbox = %sandbox, "ready"),
        Lifecycle::Reloading => tracing::info!("reloading"),
        Lifecycle::Reloaded { ok, .. } => tracing::debug!(ok, "reload finished"),
        Lifecycle::Stopping => tracing::info!("stopping"),
        Lifecycle::Alive { .. } => {}
    }
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
