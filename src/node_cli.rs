//! What an operator or an orchestrator asks a node of a fleet:
//!
//! * `clamsentry maint on|off|status [--socket PATH]`: an administrator
//!   puts the node in maintenance (the load balancer's agent answers
//!   `maint`), takes it out, or asks. It sends clamsentry's own `MAINT ON`,
//!   `MAINT OFF` or `MAINT` on the daemon's Unix socket, where only
//!   administrators (root, `policy.unix.admin-users`, `admin-groups`) may;
//!   the daemon decides from the identity the kernel gives it, as for
//!   RELOAD.
//! * `clamsentry probe ping [--socket PATH | --tcp ADDR]`: clamd's PING,
//!   exit 0 on PONG (a liveness probe that a dead engine fails, not only a
//!   closed port).
//! * `clamsentry probe ready --agent ADDR`: the HAProxy agent's answer,
//!   exit 0 when it says the node takes new work (a readiness probe that
//!   drains with the balancer: stopping, no memory for a reload, no engine,
//!   a failing self-test, an old database, maintenance).
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

/// Does this agent line (HAProxy's agent-check syntax) say the node takes
/// new connections? Words before `#`: any of `down`, `drain`, `maint`,
/// `stopped`, `fail`, or a weight of `0%`, says no; `up`, `ready` or a
/// weight says yes; an empty line says no.
pub fn agent_says_ready(line: &str) -> bool {
    let words: Vec<&str> = line
        .split('#')
        .next()
        .unwrap_or_default()
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return false;
    }
    !words.iter().any(|w| {
        matches!(
            w.to_ascii_lowercase().as_str(),
            "down" | "drain" | "maint" | "stopped" | "fail" | "0%"
        )
    })
}

/// `probe ready`: reads the agent's line at `agent`; `Ok(line)` when it
/// says ready, `Err(why)` otherwise.
pub fn probe_ready(agent: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let addr = agent
        .to_socket_addrs()
        .map_err(|e| format!("{agent}: {e}"))?
        .next()
        .ok_or_else(|| format!("{agent}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, ANSWER_WITHIN)
        .map_err(|e| format!("cannot connect to the agent at {agent}: {e} (agent.listen)"))?;
    s.set_read_timeout(Some(ANSWER_WITHIN))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < 1024 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer from the agent at {agent}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&line).trim().to_string();
    if agent_says_ready(&line) {
        Ok(line)
    } else {
        Err(format!("not ready: the agent says {line:?}"))
    }
}

/// Where `probe ping` asks.
pub enum Target<'a> {
    Unix(&'a Path),
    Tcp(&'a str),
}

/// `probe ping`: clamd's PING; `Ok(())` on PONG.
pub fn probe_ping(target: Target<'_>) -> Result<(), String> {
    let (reply, shown) = match target {
        Target::Unix(p) => {
            let shown = p.display().to_string();
            let mut s =
                UnixStream::connect(p).map_err(|e| format!("cannot connect to {shown}: {e}"))?;
            (exchange(&mut s, b"zPING\0"), shown)
        }
        Target::Tcp(a) => {
            use std::net::ToSocketAddrs;
            let addr = a
                .to_socket_addrs()
                .map_err(|e| format!("{a}: {e}"))?
                .next()
                .ok_or_else(|| format!("{a}: no address"))?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, ANSWER_WITHIN)
                .map_err(|e| format!("cannot connect to {a}: {e}"))?;
            let _ = s.set_read_timeout(Some(ANSWER_WITHIN));
            (exchange(&mut s, b"zPING\0"), a.to_string())
        }
    };
    match reply {
        Ok(r) if r == b"PONG\0" => Ok(()),
        Ok(r) => Err(format!(
            "{shown} answered {:?}, not PONG",
            String::from_utf8_lossy(&r)
        )),
        Err(e) => Err(format!("no answer from {shown}: {e}")),
    }
}

fn exchange(s: &mut (impl Read + Write), req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while !reply.contains(&0) && reply.len() < 256 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines_as_readiness() {
        for ready in [
            "up ready 75%",
            "up 100%",
            "ready",
            "75%",
            "up ready 1%\n",
            "up ready 75% #fine",
        ] {
            assert!(agent_says_ready(ready), "{ready}");
        }
        for not in [
            "up drain #stopping",
            "up maint #maintenance requested",
            "down #no status from the daemon",
            "stopped",
            "fail",
            "up 0%",
            "",
            "# only a comment",
        ] {
            assert!(!agent_says_ready(not), "{not}");
        }
    }

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
