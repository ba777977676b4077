//! clamsentry: a clamd-compatible daemon on the real ClamAV engine.
//!
//! Module map (each has one job):
//! * [`proto`]: the clamd wire protocol as pure functions over bytes;
//! * [`engine`]: libclamav (the only module with FFI);
//! * [`server`]: listeners, connections, sessions, commands, the scan pool;
//! * [`config`]: the TOML configuration, defaults and validation;
//! * [`privsep`]: descriptor passing across the process boundary;
//! * [`daemon`]: start-up, logging, signals — what `main` calls;
//! * [`malloc`]: allocator tuning so freed stream buffers leave RSS.
//!
//! `unsafe` is denied crate-wide and allowed only in `engine`, `privsep` and
//! `malloc` (one `mallopt` call), where each block carries a `// SAFETY:`
//! comment.
#![deny(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod engine;
pub mod malloc;
pub mod privsep;
pub mod proto;
pub mod server;
