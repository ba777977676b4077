//! `sandbox-check`: try forbidden things after demotion and report each.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{self, Uid};

use super::Plan;

/// One attempt and its outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What was tried, e.g. "read /etc/shadow".
    pub what: String,
    /// The attempt failed.
    pub denied: bool,
    /// How it failed or succeeded (the error, or what was done).
    pub detail: String,
    /// What a working sandbox does: `true` for every forbidden attempt,
    /// `false` for the positive control (reading inside `read_only`).
    pub expect_denied: bool,
}

impl Attempt {
    /// The outcome is what a working sandbox gives.
    pub fn as_expected(&self) -> bool {
        self.denied == self.expect_denied
    }
}

fn attempt(what: impl Into<String>, result: Result<String, String>) -> Attempt {
    let (denied, detail) = match result {
        Ok(d) => (false, d),
        Err(d) => (true, d),
    };
    Attempt {
        what: what.into(),
        denied,
        detail,
        expect_denied: true,
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(format!("read {n} bytes"))
}

/// A regular file directly inside the first read-only directory.
fn file_inside(plan: &Plan) -> Option<PathBuf> {
    let dir = plan.read_only.first()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
}

/// Runs every attempt. Call it after [`super::demote`]; it changes nothing
/// that outlives it (a file it managed to create is removed again).
pub fn probe(plan: &Plan) -> Vec<Attempt> {
    let mut out = Vec::new();

    out.push(attempt(
        "read /etc/shadow",
        read_file(Path::new("/etc/shadow")),
    ));
    out.push(attempt(
        "read /etc/passwd (world-readable, outside the read-only directories)",
        read_file(Path::new("/etc/passwd")),
    ));

    let tmp = PathBuf::from(format!(
        "/tmp/clamsentry-sandbox-probe-{}",
        std::process::id()
    ));
    let create = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map(|_| {
            let _ = std::fs::remove_file(&tmp);
            "created (and removed again)".to_string()
        })
        .map_err(|e| e.to_string());
    out.push(attempt(format!("create {}", tmp.display()), create));

    let exec = match std::process::Command::new("/bin/sh")
        .args(["-c", "exit 0"])
        // Not Stdio::null(): /dev/null is outside the sandbox, and opening it
        // would fail before any fork or exec is tried.
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
    {
        Ok(st) => Ok(format!("ran, {st}")),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            Err(format!("denied at fork (RLIMIT_NPROC): {e}"))
        }
        Err(e) => Err(format!("denied at exec: {e}")),
    };
    out.push(attempt("execute /bin/sh", exec));

    let port = 3310;
    let connect = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(2),
    );
    let connect = match connect {
        Ok(_) => Ok("connected".to_string()),
        // Refused or timed out means the packet left: not denied by us.
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut) => {
            Ok(format!("reached the network ({e})"))
        }
        Err(e) => Err(e.to_string()),
    };
    out.push(attempt(format!("TCP connect to 127.0.0.1:{port}"), connect));

    let bind = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map(|l| match l.local_addr() {
            Ok(a) => format!("bound {a}"),
            Err(_) => "bound".to_string(),
        })
        .map_err(|e| e.to_string());
    out.push(attempt("TCP bind to 127.0.0.1 (any port)", bind));

    let setuid = unistd::setuid(Uid::from_raw(0))
        .map(|()| format!("succeeded (uid now {})", unistd::getuid()))
        .map_err(|e| e.to_string());
    out.push(attempt("setuid(0)", setuid));

    let control = match (file_inside(plan), plan.read_write.first()) {
        (Some(p), _) => attempt(
            format!("read {} (control: must work)", p.display()),
            read_file(&p),
        ),
        (None, Some(dir)) if plan.read_only.is_empty() => {
            let f = dir.join("sandbox-probe");
            let made = std::fs::write(&f, b"x")
                .map(|()| {
                    let _ = std::fs::remove_file(&f);
                    "created (and removed again)".to_string()
                })
                .map_err(|e| e.to_string());
            attempt(
                format!("create a file in {} (control: must work)", dir.display()),
                made,
            )
        }
        _ => attempt(
            "read a file in the read-only directory (control: must work)",
            Err("no regular file found there".to_string()),
        ),
    };
    out.push(Attempt {
        expect_denied: false,
        ..control
    });
    out
}

/// The extra attempts of a worker forked from the engine holder: it may not
/// read the signature files (its engine is already loaded), nor fork.
pub fn probe_worker(plan: &Plan, signatures: &Path) -> Vec<Attempt> {
    let mut out = probe(plan);
    let sig = std::fs::read_dir(signatures)
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.is_file()));
    out.push(match sig {
        Some(p) => attempt(
            format!(
                "read the signature file {} (the engine is loaded already)",
                p.display()
            ),
            read_file(&p),
        ),
        None => attempt(
            format!("list the signature directory {}", signatures.display()),
            std::fs::read_dir(signatures)
                .map(|_| "listed".to_string())
                .map_err(|e| e.to_string()),
        ),
    });
    // A thread rather than fork(): it counts against RLIMIT_NPROC exactly as
    // a process does, and needs no unsafe code.
    let spawn = std::thread::Builder::new()
        .spawn(|| ())
        .map(|h| {
            let _ = h.join();
            "started a thread".to_string()
        })
        .map_err(|e| format!("denied (RLIMIT_NPROC): {e}"));
    out.push(attempt("start a thread or process", spawn));
    out
}
