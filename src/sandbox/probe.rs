//! `sandbox-check`: try forbidden things after demotion and report each.
//!
//! Two attempts need the raw system call (no safe wrapper in our
//! dependencies): `io_uring_setup` and `unshare`.
#![allow(unsafe_code)]

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    connect, socket_with, socketpair, AddressFamily, Protocol, SocketAddrUnix, SocketFlags,
    SocketType,
};
use rustix::process::Uid;

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

/// The path-named Unix sockets the probe tries to connect to (the daemon's
/// own socket, and any the operator names), each with an unconnected
/// stream socket made before the sandbox: `connect()` itself is tried on
/// it, not only `socket()` (an attacker may find a socket it did not have
/// to create).
pub struct Targets {
    unix: Vec<(PathBuf, Option<OwnedFd>)>,
}

impl Targets {
    /// Call before demotion (the spare sockets are made now).
    pub fn new(paths: Vec<PathBuf>) -> Targets {
        Targets {
            unix: paths
                .into_iter()
                .map(|p| {
                    let spare = socket_with(
                        AddressFamily::UNIX,
                        SocketType::STREAM,
                        SocketFlags::CLOEXEC,
                        None,
                    )
                    .ok();
                    (p, spare)
                })
                .collect(),
        }
    }

    /// No socket paths.
    pub fn none() -> Targets {
        Targets { unix: Vec::new() }
    }
}

/// A connect attempt's outcome: only the sandbox's answers (`EPERM` from
/// the system-call filter, `EACCES` from Landlock) count as denied. A
/// refused or missing socket means the call went through the sandbox.
fn connected(r: rustix::io::Result<()>) -> Result<String, String> {
    match r {
        Ok(()) => Ok("connected".into()),
        Err(e @ (Errno::PERM | Errno::ACCESS)) => Err(desc(e)),
        Err(e) => Ok(format!(
            "not stopped by the sandbox, the kernel answered: {}",
            desc(e)
        )),
    }
}

/// The C library's text for an error ("Permission denied").
fn desc(e: Errno) -> String {
    crate::sys::errno_text(e.raw_os_error())
}

/// The socket address of `path`; a path that cannot be one (too long) is
/// reported as not tried, which does not count as denied.
fn address(path: &Path) -> Result<SocketAddrUnix, String> {
    SocketAddrUnix::new(path).map_err(|e| format!("not tried, not a Unix socket address: {e}"))
}

fn connect_fresh(path: &Path) -> Result<String, String> {
    let addr = match address(path) {
        Ok(a) => a,
        Err(not_tried) => return Ok(not_tried),
    };
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("denied at socket(): {}", desc(e)))?;
    connected(connect(fd, &addr))
}

fn connect_spare(path: &Path, spare: Option<&OwnedFd>) -> Result<String, String> {
    let addr = match address(path) {
        Ok(a) => a,
        Err(not_tried) => return Ok(not_tried),
    };
    let Some(fd) = spare else {
        return Ok("no socket could be made before the sandbox to try it with".into());
    };
    connected(connect(fd, &addr))
}

/// The socket families a worker must not open, as (label, family, type,
/// protocol).
const FAMILIES: &[(&str, AddressFamily, SocketType, Option<Protocol>)] = &[
    (
        "AF_UNIX SOCK_STREAM",
        AddressFamily::UNIX,
        SocketType::STREAM,
        None,
    ),
    (
        "AF_UNIX SOCK_DGRAM",
        AddressFamily::UNIX,
        SocketType::DGRAM,
        None,
    ),
    (
        "AF_UNIX SOCK_SEQPACKET",
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        None,
    ),
    (
        "AF_INET SOCK_STREAM",
        AddressFamily::INET,
        SocketType::STREAM,
        None,
    ),
    (
        "AF_INET SOCK_DGRAM",
        AddressFamily::INET,
        SocketType::DGRAM,
        None,
    ),
    (
        "AF_INET6 SOCK_STREAM",
        AddressFamily::INET6,
        SocketType::STREAM,
        None,
    ),
    (
        "AF_INET6 SOCK_DGRAM",
        AddressFamily::INET6,
        SocketType::DGRAM,
        None,
    ),
    (
        "AF_NETLINK NETLINK_ROUTE",
        AddressFamily::NETLINK,
        SocketType::RAW,
        // NETLINK_ROUTE is protocol 0.
        None,
    ),
];

fn io_uring_setup() -> Result<String, String> {
    // libc: the raw call; rustix's io_uring API is not built in.
    // struct io_uring_params: 120 bytes, zeroed = no flags.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(entries, params) reads and writes the 120-byte
    // struct io_uring_params, which `params` is; a returned descriptor is
    // owned here and closed at once.
    let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc as i32) });
    Ok("created an io_uring instance".into())
}

fn unshare_user_namespace() -> Result<String, String> {
    // libc: rustix's `unshare_unsafe` is as unsafe and needs a flag type.
    // SAFETY: unshare takes flags only. On success this process is in a new
    // user namespace; it is the last attempt, and the probe exits after it.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok("this process is now in a new user namespace".into())
}

/// Runs every attempt. Call it after [`super::demote`]; it changes nothing
/// that outlives the process (a file it managed to create is removed again;
/// the last attempt, a new user namespace, changes this process).
pub fn probe(plan: &Plan, targets: &Targets) -> Vec<Attempt> {
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
        Err(e) => Err(format!("denied at fork or exec: {e}")),
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

    let setuid = rustix::thread::set_thread_uid(Uid::from_raw(0))
        .map(|()| format!("succeeded (uid now {})", rustix::process::getuid().as_raw()))
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

    for (label, family, ty, protocol) in FAMILIES {
        let made = socket_with(*family, *ty, SocketFlags::CLOEXEC, *protocol)
            .map(|_| "created a socket".to_string())
            .map_err(desc);
        out.push(attempt(format!("socket({label})"), made));
    }
    let pair = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map(|_| "created a connected pair".to_string())
    .map_err(desc);
    out.push(attempt("socketpair(AF_UNIX SOCK_STREAM)", pair));
    for (path, spare) in &targets.unix {
        out.push(attempt(
            format!("connect to {} with a new socket", path.display()),
            connect_fresh(path),
        ));
        out.push(attempt(
            format!(
                "connect to {} with a socket made before the sandbox",
                path.display()
            ),
            connect_spare(path, spare.as_ref()),
        ));
    }
    out.push(attempt("io_uring_setup", io_uring_setup()));
    out
}

/// The last attempt of all: it changes the process (see [`probe`]).
fn last_attempts(out: &mut Vec<Attempt>) {
    out.push(attempt(
        "unshare(CLONE_NEWUSER) (a user namespace)",
        unshare_user_namespace(),
    ));
}

/// The extra attempts of a worker forked from the engine holder: it may not
/// read the signature files (its engine is already loaded), nor fork.
pub fn probe_worker(plan: &Plan, signatures: &Path, targets: &Targets) -> Vec<Attempt> {
    let mut out = probe(plan, targets);
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
    last_attempts(&mut out);
    out
}
