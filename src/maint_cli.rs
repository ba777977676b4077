//! `clamsentry maint on|off|status [--socket PATH]`: an administrator puts
//! the node in maintenance (the load balancer's agent answers `maint`),
//! takes it out, or asks. It sends clamsentry's own `MAINT ON`, `MAINT OFF`
//! or `MAINT` on the daemon's Unix socket, where only administrators (root,
//! `policy.unix.admin-users`, `admin-groups`) may; the daemon decides from
//! the identity the kernel gives it, as for RELOAD.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    On,
    Off,
    Status,
}

impl Request {
    pub fn parse(word: &str) -> Option<Request> {
        match word {
            "on" => Some(Request::On),
            "off" => Some(Request::Off),
            "status" => Some(Request::Status),
            _ => None,
        }
    }

    /// The command on the wire (`z` framing: NUL-terminated).
    pub fn command(self) -> &'static [u8] {
        match self {
            Request::On => b"zMAINT ON\0",
            Request::Off => b"zMAINT OFF\0",
            Request::Status => b"zMAINT\0",
        }
    }
}

/// How long the daemon may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Sends the request; `Ok(true)` when the node is in maintenance after it.
/// `Err` says what went wrong and what to do.
pub fn run(request: Request, socket: &Path) -> Result<bool, String> {
    let shown = socket.display();
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!("cannot connect to {shown}: {e} (give the daemon's socket with --socket, or its configuration with --config)")
    })?;
    s.set_read_timeout(Some(ANSWER_WITHIN))
        .and_then(|()| s.set_write_timeout(Some(ANSWER_WITHIN)))
        .map_err(|e| e.to_string())?;
    s.write_all(request.command())
        .map_err(|e| format!("cannot send to {shown}: {e}"))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&byte[..n]);
                if reply.contains(&0) || reply.len() > 4096 {
                    break;
                }
            }
            Err(e) => return Err(format!("no answer from {shown}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&reply);
    let text = text.trim_end_matches('\0').trim_end();
    match text {
        "MAINT ON" => Ok(true),
        "MAINT OFF" => Ok(false),
        "" => Err(format!(
            "{shown} closed without an answer: the daemon refused the request (is this an administrator: root, policy.unix.admin-users or admin-groups?) or is not clamsentry"
        )),
        other => Err(format!("{shown} answered: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_their_words() {
        assert_eq!(Request::parse("on"), Some(Request::On));
        assert_eq!(Request::parse("status"), Some(Request::Status));
        assert_eq!(Request::parse("ON"), None);
        assert_eq!(Request::Off.command(), b"zMAINT OFF\0");
    }

    #[test]
    fn a_missing_socket_says_what_to_do() {
        let err = run(Request::Status, Path::new("/nonexistent/clamd.sock")).unwrap_err();
        assert!(err.contains("--socket"), "{err}");
    }
}
