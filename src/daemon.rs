//! Start-up and lifecycle: configuration, logging, engine, sockets, signals.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::engine::{self, Engine, EngineError, EngineSettings};
use crate::server::{self, Shared};

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
        .with_target(false)
        .try_init();
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or SHUTDOWN.
pub fn run(config_path: Option<&Path>) -> Result<(), StartError> {
    crate::malloc::tune();
    let loaded = Config::load(config_path)?;
    init_logging(&loaded.config.log.level);
    let config = Arc::new(loaded.config);
    match &loaded.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no configuration file, using built-in defaults"),
    }
    let started = Instant::now();
    tracing::info!(directory = %config.database.directory.display(), libclamav = %engine::version(), "loading signatures");
    let engine = Engine::load(
        &config.database.directory,
        &EngineSettings::from_config(&config),
    )?;
    let info = engine.info().clone();
    tracing::info!(
        signatures = info.signatures,
        db_version = info.db_version,
        duration_ms = started.elapsed().as_millis() as u64,
        "engine ready"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clamsentry-io")
        .build()?;
    runtime.block_on(async move {
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
        let shared = Shared::new(Arc::clone(&config), engine)?;
        tokio::spawn(handle_signals(Arc::clone(&shared)));
        server::run(listeners, shared).await?;
        if let Some(p) = config.unix_path() {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!("stopped");
        Ok(())
    })
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
