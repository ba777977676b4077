//! clamsentry: a clamd-compatible daemon on the real ClamAV engine.
//!
//! The daemon is five kinds of process; the folders say which code runs
//! where, and imports point one way (process modules use the shared ones,
//! never each other, except that the engine holder becomes a worker when it
//! forks):
//! * [`supervisor`] (root, a few capabilities): sockets, admission, the
//!   identity of every connection, the file broker, the lifecycle;
//! * [`zygote`] (service user, sandboxed, one thread): holds the compiled
//!   engine and forks workers;
//! * [`worker`] (service user, sandboxed, no new tasks): the protocol,
//!   streams, scans;
//! * [`observer`] (service user, sandboxed, one thread, no file access):
//!   the metrics and status page listener, HAProxy's agent, the self-test's
//!   client side;
//! * [`launcher`] (`virus-event.user`, no capabilities, non-dumpable): runs
//!   clamd's VirusEvent command for the detections the supervisor forwards.
//!
//! Shared, process-neutral modules:
//! * [`ipc`]: the messages between the processes and how they travel;
//! * [`proto`]: the clamd wire protocol as pure functions over bytes;
//! * [`engine`]: libclamav (the only module with its FFI);
//! * [`policy`]: command profiles, the administrator rule, TCP allow-list;
//! * [`sandbox`]: demotion (identity, capabilities, rlimits, Landlock);
//! * [`config`]: the TOML configuration, defaults and validation;
//! * [`systemd`]: socket activation, sd-notify, journald detection;
//! * [`log`]: escaped log text, the stderr writer, the journald layer, rate limits;
//! * [`clamd_cli`], [`daemonize`], [`pidfile`]: clamd's command line, forking
//!   into the background with readiness, the PID file;
//! * [`socket_setup`]: owner, group and backlog of the sockets clamsentry binds;
//! * [`usage`]: a process's own memory, CPU time and descriptors.
//!
//! `unsafe_code` is denied crate-wide and allowed only in the few files at
//! the library and OS boundaries (libclamav, descriptor passing, fork,
//! per-thread credentials, pidfds, signal dispositions, allocator tuning,
//! the C library's user and group lookups in [`sys`]),
//! where each block carries a `// SAFETY:` comment; every other file
//! forbids it.
#![deny(unsafe_code)]

pub mod clamd_cli;
pub mod config;
pub mod daemonize;
pub mod engine;
pub mod ipc;
pub mod launcher;
pub mod log;
pub mod node_cli;
pub mod observer;
pub(crate) mod pidfile;
pub mod policy;
pub mod proto;
pub(crate) mod safe_fs;
pub mod sandbox;
pub mod socket_setup;
pub mod supervisor;
pub(crate) mod sys;
pub(crate) mod systemd;
pub(crate) mod usage;
pub(crate) mod worker;
pub mod zygote;

/// The tests' requirement helper (`require_root!`, `require!`), shared
/// with the integration tests, where it is `common::require`.
#[cfg(test)]
#[path = "../tests/common/require.rs"]
pub(crate) mod test_require;
#[cfg(test)]
mod common {
    pub(crate) use super::test_require as require;
}
