//! Start-up and lifecycle: configuration, logging, engine, sockets, signals.
//!
//! Order: configuration → logging → take systemd's sockets (before any
//! thread exists, as they come through environment variables) → load the
//! engine (reporting progress to systemd) → bind configured sockets when
//! not activated → serve; READY=1 goes out only then.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::engine::{self, Engine, EngineError, EngineSettings};
use crate::server::{self, Listeners, Named, Origin, Shared};
use crate::service;
use crate::systemd::activation::{self, ActivationError, Socket};
use crate::systemd::notify::{LoadReporter, Notifier};
use crate::systemd::{journal, status};

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
/// `service.exit-when-idle`. A start-up failure is also shown in systemd's
/// status line (`systemctl status clamsentry`).
pub fn run(config_path: Option<&Path>) -> Result<(), StartError> {
    let result = serve(config_path);
    if let Err(e) = &result {
        Notifier::from_env().status(&format!("Failed to start: {e}"));
    }
    result
}

fn serve(config_path: Option<&Path>) -> Result<(), StartError> {
    let loaded = Config::load(config_path)?;
    init_logging(&loaded.config.log.level, &loaded.config.log.target);
    let config = Arc::new(loaded.config);
    match &loaded.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no configuration file, using built-in defaults"),
    }
    let notifier = Notifier::from_env();
    let activated = activation::take(&config)?;
    let started = Instant::now();
    let dir = config.database.directory.display().to_string();
    tracing::info!(directory = %dir, libclamav = %engine::version(), "loading signatures");
    notifier.loading_started(&dir);
    let fingerprint = service::dbwatch::Fingerprint::of(&config.database.directory);
    let mut reporter = LoadReporter::new(notifier, true);
    let engine = Engine::load_with_progress(
        &config.database.directory,
        &EngineSettings::from_config(&config),
        &mut |p| reporter.report(p),
    )?;
    let info = engine.info().clone();
    tracing::info!(
        signatures = info.signatures,
        db_version = info.db_version,
        duration_ms = started.elapsed().as_millis() as u64,
        "engine ready: {} signatures from {dir}",
        info.signatures
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clamsentry-io")
        .build()?;
    runtime.block_on(async move {
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
        let shared = Shared::new(Arc::clone(&config), engine)?;
        tokio::spawn(handle_signals(Arc::clone(&shared)));
        tokio::spawn(service::dbwatch::run(Arc::clone(&shared), fingerprint));
        tokio::spawn(service::idle::run(Arc::clone(&shared)));
        let served = tokio::spawn(server::run(listeners, Arc::clone(&shared)));
        let notifying = tokio::spawn(status::run(Arc::clone(&shared), notifier));
        served.await.map_err(std::io::Error::other)??;
        let _ = notifying.await;
        if bound_unix {
            if let Some(p) = config.unix_path() {
                let _ = std::fs::remove_file(p);
            }
        }
        tracing::info!(
            scans = shared.counters.scans.load(std::sync::atomic::Ordering::Relaxed),
            found = shared.counters.found.load(std::sync::atomic::Ordering::Relaxed),
            uptime_s = shared.started.elapsed().as_secs(),
            "stopped"
        );
        Ok(())
    })
}

/// systemd's sockets as listeners (they must be non-blocking for tokio).
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

async fn handle_signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
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
        tokio::select! {
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); shared.request_shutdown(); }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "stopping"); shared.request_shutdown(); }
            _ = hup.recv() => { tracing::info!(signal = "SIGHUP", "reload requested"); shared.request_reload(); }
            _ = usr2.recv() => { tracing::info!(signal = "SIGUSR2", "reload requested"); shared.request_reload(); }
        }
    }
}
