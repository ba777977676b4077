//! Talking to systemd: socket activation, readiness and status (sd-notify),
//! and whether stderr is the journal (logging to journald is in
//! `crate::log::journald`).
//!
//! Decisions a newcomer would otherwise rediscover:
//! * Activated sockets are matched to listener settings by their
//!   `FileDescriptorName=` ("unix", "tcp", or names mapped in
//!   `[service] sockets`), never by position or by guessing from the address:
//!   a TCP socket must never get the Unix settings by accident. An unknown
//!   name is a start-up error that names it.
//! * Without `LISTEN_FDNAMES` (launchers other than systemd) a socket's
//!   family decides: Unix → "unix", TCP → "tcp".
//! * Notifications are best effort: without `NOTIFY_SOCKET` nothing is sent
//!   and a send error is logged at debug, never fatal.
//! * `WATCHDOG=1` is sent only while a worker reports a scan pool that
//!   moves (see `worker::watchdog` and `supervisor::status`).
//! * systemd 252 (Debian 12) has no `Type=notify-reload`: the unit uses
//!   `Type=notify` with `ExecReload=kill -HUP`; `RELOADING=1` carries
//!   `MONOTONIC_USEC` anyway so newer systemd versions accept it.
//!
//! No `unsafe` here: `listenfd` turns the inherited descriptors into
//! listeners after checking their type.
#![forbid(unsafe_code)]

pub mod activation;
pub mod journal;
pub mod notify;
