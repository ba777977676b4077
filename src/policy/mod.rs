//! Who may do what: per-listener command profiles, the peer's right to the
//! files a path command names, and which networks may connect over TCP.
//!
//! The rules (documented for operators in the README, "Listener policy"):
//! * Every listener has a command profile. Defaults: TCP allows PING,
//!   VERSION, VERSIONCOMMANDS, INSTREAM and IDSESSION/END; Unix allows
//!   everything, but RELOAD and SHUTDOWN/QUIT only for root, the user the
//!   daemon runs as, and the configured admin users and groups.
//! * A path command answers only about files the asking peer could read
//!   itself ([`access`]); anything else looks exactly like a missing file.
//! * TCP connections from outside `listen.tcp-allow` are closed unread.
#![forbid(unsafe_code)]

pub mod access;
pub mod commands;
pub mod network;

pub use access::PeerCreds;
pub use commands::{Decision, Profile};

/// The two kinds of listener; each has its own profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Unix,
    Tcp,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Unix => "unix",
            ListenerKind::Tcp => "tcp",
        }
    }
}
