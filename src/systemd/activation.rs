//! Socket activation: the listening sockets systemd hands over
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), matched to listener
//! settings by name. Two names are the observer's, not clamd listeners:
//! [`METRICS`] (the metrics and status page) and [`AGENT`] (HAProxy's
//! agent-check); a Unix or TCP socket of either name is passed on as it is.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use crate::config::{Config, SocketKind};

/// Why the activated sockets cannot be used; start-up fails with it.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket {index} from systemd (FileDescriptorName={name}) is not one clamsentry expects: name it \"unix\", \"tcp\" or \"tcp-proxy\" in clamsentry.socket (\"metrics\" or \"agent\" for the observer's listeners), or map the name in [service] sockets of the configuration")]
    UnknownName { index: usize, name: String },
    #[error("socket {index} from systemd (FileDescriptorName={name}) is a {actual} socket but its name selects the {wanted} listener settings: fix FileDescriptorName= in clamsentry.socket or [service] sockets")]
    WrongKind {
        index: usize,
        name: String,
        actual: &'static str,
        wanted: String,
    },
    #[error("socket {index} from systemd (FileDescriptorName={name}) is neither a listening Unix stream socket nor a TCP socket: use ListenStream= in clamsentry.socket")]
    Unsupported { index: usize, name: String },
}

/// `FileDescriptorName=` of the metrics listener's socket.
pub const METRICS: &str = "metrics";
/// `FileDescriptorName=` of the HAProxy agent listener's socket.
pub const AGENT: &str = "agent";

/// One socket handed over by systemd.
pub enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Socket {
    fn kind(&self) -> &'static str {
        match self {
            Socket::Unix(_) => "unix",
            Socket::Tcp(_) => "tcp",
        }
    }

    /// The address, for the log.
    pub fn address(&self) -> String {
        match self {
            Socket::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "(unnamed)".into()),
            Socket::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "(unknown)".into()),
        }
    }
}

/// An activated socket with its name.
pub struct Activated {
    pub name: String,
    pub socket: Socket,
    /// Named (or mapped to) "tcp-proxy": a TCP socket whose connections
    /// carry PROXY v2 headers from `listen.proxy-from`.
    pub proxy: bool,
}

/// Takes the sockets systemd passed to this process, if any. Empty when the
/// process was not socket-activated. Clears the `LISTEN_*` variables so
/// that children do not inherit them.
pub fn take(config: &Config) -> Result<Vec<Activated>, ActivationError> {
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut fds = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let name = names.get(index).cloned();
        let shown = name.clone().unwrap_or_else(|| "(none)".into());
        let socket = if let Ok(Some(l)) = fds.take_unix_listener(index) {
            Socket::Unix(l)
        } else if let Ok(Some(l)) = fds.take_tcp_listener(index) {
            Socket::Tcp(l)
        } else {
            return Err(ActivationError::Unsupported { index, name: shown });
        };
        let name = name.unwrap_or_else(|| socket.kind().to_string());
        if name == METRICS || name == AGENT {
            out.push(Activated {
                name,
                socket,
                proxy: false,
            });
            continue;
        }
        let wanted = settings_for(&name, &config.service.sockets)
            .ok_or_else(|| ActivationError::UnknownName {
                index,
                name: name.clone(),
            })?
            .to_string();
        let proxy = wanted == "tcp-proxy";
        let base = if proxy { "tcp" } else { wanted.as_str() };
        if base != socket.kind() {
            return Err(ActivationError::WrongKind {
                index,
                name,
                actual: socket.kind(),
                wanted,
            });
        }
        out.push(Activated {
            name,
            socket,
            proxy,
        });
    }
    Ok(out)
}

/// Which listener settings ("unix", "tcp" or "tcp-proxy") a socket name
/// selects.
fn settings_for<'a>(name: &'a str, map: &BTreeMap<String, SocketKind>) -> Option<&'a str> {
    match map.get(name) {
        Some(kind) => Some(kind.as_str()),
        None if matches!(name, "unix" | "tcp" | "tcp-proxy") => Some(name),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_and_mapped_names() {
        let mut map = BTreeMap::new();
        map.insert("scanners".to_string(), SocketKind::Tcp);
        map.insert("tcp".to_string(), SocketKind::Unix);
        assert_eq!(settings_for("unix", &map), Some("unix"));
        assert_eq!(settings_for("scanners", &map), Some("tcp"));
        assert_eq!(settings_for("tcp", &map), Some("unix"), "the map wins");
        assert_eq!(settings_for("clamsentry.socket", &map), None);
        assert_eq!(settings_for("tcp-proxy", &map), Some("tcp-proxy"));
    }
}
