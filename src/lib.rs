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
//! * [`systemd`]: socket activation, sd-notify and watchdog, journald;
//! * [`service`]: signature directory watching, exit when idle;
//! * [`socket_setup`]: owner, group and backlog of the sockets clamsentry binds itself;
//! * [`virus_event`]: clamd's VirusEvent, run by the supervisor on detections;
//! * [`daemon`]: start-up, logging, signals — what `main` calls;
//! * [`clamd_cli`]: clamd's command line (`clamd -c clamd.conf`, `-V`, `-F`);
//! * [`daemonize`]: forking into the background as clamd, with readiness;
//! * [`pidfile`]: the PID file (`service.pid-file`, clamd's PidFile).
//!
//! `unsafe_code` is denied crate-wide and allowed only at the library and OS
//! boundaries — `engine` (libclamav), `privsep` (descriptors, process start,
//! signal dispositions, allocator tuning), `sandbox` (demotion of children
//! before exec) and `daemonize` (one `fork`) — where each block carries a
//! `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod clamd_cli;
pub mod config;
pub mod daemon;
pub mod daemonize;
pub mod engine;
pub mod pidfile;
pub mod policy;
pub mod privsep;
pub mod proto;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod socket_setup;
pub mod systemd;
pub mod virus_event;
