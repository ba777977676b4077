//! Logging: bounded, honest log lines about hostile clients and hostile
//! workers.
//!
//! * [`escape`](mod@escape): client-supplied bytes (paths, virus names) are logged as
//!   reversible escaped text, `tracing::warn!(path = %LogBytes(p), ...)`,
//!   so they can neither forge log lines nor lose bytes that are not UTF-8;
//! * [`record`]: an event as data (every value as its exact bytes), the one
//!   form every output is made from;
//! * [`stderr`]: the human-readable line, in which a value that is not a
//!   plain token is quoted, so no byte sequence adds a field or a line;
//! * [`journald`]: journald's native protocol, with the exact bytes;
//! * [`relay`]: child processes send their records to the supervisor,
//!   which writes them marked as theirs; only the supervisor writes to
//!   stderr or journald;
//! * [`limiter`]: at most N lines per client identity (or connection) and
//!   minute, with a count of what was suppressed;
//! * [`init`]: the supervisor's logging; children use
//!   [`relay::init_child`].
#![forbid(unsafe_code)]

pub mod escape;
pub mod journald;
pub mod limiter;
pub mod record;
pub mod relay;
pub mod stderr;

pub use escape::{escape, unescape, LogBytes, LogStr};

use std::sync::{Arc, OnceLock};

use tracing::Level;
use tracing_subscriber::filter::Targets;

use self::record::{Capture, Record, Sink};
use crate::systemd::journal;

/// The supervisor's output, for the lines it relays from its children.
struct Output {
    sink: Arc<dyn Sink>,
    targets: Targets,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// What `level` (as `log.level`) lets through; RUST_LOG overrides it.
fn targets(level: &str) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            format!("clamsentry={level},warn")
                .parse()
                .unwrap_or_default()
        })
}

/// Installs `layer` as this process's only subscriber, filtered by
/// `level`.
///
/// Our spans are always enabled, whatever the level: they carry the
/// connection fields (PEER, LISTENER) that a FOUND warning must show even
/// when info lines are turned off.
pub(crate) fn install<L>(layer: L, level: &str)
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::prelude::*;
    let targets = targets(level);
    let filter = filter_fn(move |meta| {
        (meta.is_span() && meta.target().starts_with("clamsentry"))
            || targets.would_enable(meta.target(), meta.level())
    });
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Sets up the supervisor's logging at the configured level (RUST_LOG
/// overrides) to journald or stderr, as `log.target` says (`auto`:
/// journald when stderr is the journal, see [`journal::stderr_is_journal`]).
/// The lines relayed from child processes ([`emit`]) go to the same place.
pub fn init(level: &str, target: &str) {
    let want_journal = match target {
        "journald" => true,
        "stderr" => false,
        _ => journal::stderr_is_journal(),
    };
    let journald = if want_journal {
        match journald::Journald::new() {
            Ok(sink) => Some(sink),
            Err(e) => {
                eprintln!("clamsentry: cannot log to journald ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    let sink: Arc<dyn Sink> = match journald {
        Some(j) => Arc::new(j),
        None => Arc::new(stderr::stderr()),
    };
    let _ = OUTPUT.set(Output {
        sink: Arc::clone(&sink),
        targets: targets(level),
    });
    install(Capture::new(sink), level);
}

/// Would the supervisor write a line of `level` with `target`?
pub fn enabled(target: &str, level: Level) -> bool {
    OUTPUT
        .get()
        .is_some_and(|o| o.targets.would_enable(target, &level))
}

/// Writes a record the supervisor made itself (a relayed child's line,
/// see [`relay::relayed`]) to its output, if [`enabled`]. Nothing before
/// [`init`].
pub fn emit(record: &Record) {
    if let Some(o) = OUTPUT.get() {
        if o.targets.would_enable(&record.target, &record.level) {
            o.sink.write(record);
        }
    }
}
