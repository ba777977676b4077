//! clamsentry: a clamd-compatible daemon on the real ClamAV engine.
//!
//! Module map (each has one job):
//! * [`proto`]: the clamd wire protocol as pure functions over bytes;
//! * [`engine`]: libclamav (the only module with FFI);
//! * [`server`]: listeners, connections, sessions, commands, the scan pool;
//! * [`config`]: the TOML configuration, defaults and validation;
//! * [`policy`]: command profiles, the client's file access check, TCP admission;
//! * [`privsep`]: supervisor, worker, their channels and the file broker;
//! * [`sandbox`]: demotion of the worker (identity, capabilities, rlimits, Landlock);
//! * [`systemd`]: socket activation, sd-notify and watchdog;
//! * [`log`]: escaped log text, the stderr writer, the journald layer, rate limits;
//! * [`service`]: signature directory watching, exit when idle;
//! * [`daemon`]: start-up, logging, signals — what `main` calls.
//!
//! `unsafe_code` is denied crate-wide and allowed only at the library and OS
//! boundaries — `engine` (libclamav), `privsep` (descriptors, process start,
//! signal dispositions, allocator tuning) and `sandbox` — where each block
//! carries a `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod engine;
pub mod log;
pub mod policy;
pub mod privsep;
pub mod proto;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod systemd;
