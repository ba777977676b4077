//! Logging set-up: journald with structured fields under systemd, stderr
//! lines elsewhere.
#![forbid(unsafe_code)]

use crate::systemd::journal;

/// Sets up logging at the configured level (RUST_LOG overrides) to
/// journald or stderr, as `log.target` says.
///
/// Our spans are always enabled, whatever the level: they carry the
/// connection fields (PEER, LISTENER) that a FOUND warning must show even
/// when info lines are turned off.
pub fn init(level: &str, target: &str) {
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
