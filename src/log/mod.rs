//! Logging: bounded, honest log lines about hostile clients.
//!
//! * [`escape`](mod@escape): client-supplied bytes (paths, virus names) are logged as
//!   reversible escaped text, `tracing::warn!(path = %LogBytes(p), ...)`,
//!   so they can neither forge log lines nor lose bytes that are not UTF-8;
//! * [`stderr`]: the writer of the human-readable log, one line per event
//!   whatever a field holds;
//! * [`journald`]: our journald layer, which decodes the escaped text so
//!   the journal holds the exact bytes the client sent;
//! * [`limiter`]: at most N lines per peer or connection and minute, with a
//!   count of what was suppressed;
//! * [`init`]: the subscriber of the supervisor and of every worker.
#![forbid(unsafe_code)]

pub mod escape;
pub mod journald;
pub mod limiter;
pub mod stderr;

pub use escape::{escape, unescape, LogBytes, LogStr};

use crate::systemd::journal;

/// Sets up logging at the configured level (RUST_LOG overrides) to
/// journald or stderr, as `log.target` says (`auto`: journald when stderr
/// is the journal, see [`journal::stderr_is_journal`]).
///
/// Our spans are always enabled, whatever the level: they carry the
/// connection fields (PEER, LISTENER) that a FOUND warning must show even
/// when info lines are turned off.
///
/// The stderr log has no colours: [`stderr::OneLine`] escapes every control
/// byte, ESC included.
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
        match journald::Journald::new() {
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
                    .with_writer(stderr::OneLine::new(std::io::stderr))
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
}
