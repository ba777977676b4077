//! Running one command and watching it: `/bin/sh -c`, clamd's environment,
//! its own process group killed whole after the timeout, and the first
//! [`CAPTURE`] bytes of its stdout and stderr (the rest is read and
//! discarded).
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ipc::launch::{bounded, Excerpt, Status, CAPTURE, MAX_ERROR};

/// How long output is still read after the command exited (background
/// children may hold the pipes open; they are not waited for).
const GRACE: Duration = Duration::from_millis(200);

/// How one command ended.
pub struct Ended {
    pub status: Status,
    pub duration_ms: u64,
    pub stdout: Excerpt,
    pub stderr: Excerpt,
}

/// Starts `/bin/sh -c command` as clamd 1.4 does (`clamd/clamd_others.c`):
/// argv[0] `sh`, working directory `/`, stdin `/dev/null`, the environment
/// exactly `PATH` (the daemon's; none if `path` is empty),
/// `CLAM_VIRUSEVENT_FILENAME` and `CLAM_VIRUSEVENT_VIRUSNAME`; in a process
/// group of its own. It inherits the launcher's identity, no-new-privs and
/// rlimits, and no descriptor but its three standard ones (the launcher's
/// channel is close-on-exec).
pub fn spawn(command: &str, virus: &str, target: &[u8], path: &[u8]) -> std::io::Result<Child> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg0("sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("CLAM_VIRUSEVENT_FILENAME", OsStr::from_bytes(target))
        .env("CLAM_VIRUSEVENT_VIRUSNAME", virus)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !path.is_empty() {
        cmd.env("PATH", OsStr::from_bytes(path));
    }
    cmd.spawn()
}

/// The outcome of a command that could not start.
pub fn failed(e: &std::io::Error) -> Ended {
    Ended {
        status: Status::Failed(bounded(&e.to_string(), MAX_ERROR)),
        duration_ms: 0,
        stdout: Excerpt::default(),
        stderr: Excerpt::default(),
    }
}

/// Waits for the command, reading its output, until it exited (plus
/// [`GRACE`] for output still in the pipes) or `timeout` passed (then its
/// process group is killed).
pub fn watch(mut child: Child, timeout: Duration, started: Instant) -> Ended {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = started + timeout;
    let group = rustix::process::Pid::from_child(&child);
    let mut stdout = Capture::new(child.stdout.take());
    let mut stderr = Capture::new(child.stderr.take());
    let mut status = None;
    let mut timed_out = false;
    let mut exited_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if status.is_none() {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                exited_at = Some(now);
            } else if now >= deadline {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                timed_out = true;
                status = child.wait().ok();
                exited_at = Some(Instant::now());
            }
        }
        if let Some(t) = exited_at {
            if (stdout.done() && stderr.done()) || now >= t + GRACE {
                break;
            }
        }
        {
            let mut fds = Vec::new();
            if let Some(p) = &stdout.pipe {
                fds.push(PollFd::from_borrowed_fd(p.as_fd(), PollFlags::IN));
            }
            if let Some(p) = &stderr.pipe {
                fds.push(PollFd::from_borrowed_fd(p.as_fd(), PollFlags::IN));
            }
            if fds.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            } else {
                let wait = Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                let _ = poll(&mut fds, Some(&wait));
            }
        }
        stdout.read_available();
        stderr.read_available();
    }
    let status = match (timed_out, status) {
        (true, _) => Status::TimedOut,
        (false, Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => Status::Exited(c),
            (None, Some(sig)) => Status::Signaled(sig),
            (None, None) => Status::Failed("the command's status is unknown".into()),
        },
        (false, None) => Status::Failed("the command's status is unknown".into()),
    };
    Ended {
        status,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout: stdout.excerpt(),
        stderr: stderr.excerpt(),
    }
}

/// The first [`CAPTURE`] bytes of one output pipe.
struct Capture<R> {
    pipe: Option<R>,
    kept: Vec<u8>,
    truncated: bool,
}

impl<R: Read + AsFd> Capture<R> {
    fn new(pipe: Option<R>) -> Capture<R> {
        if let Some(p) = &pipe {
            set_nonblocking(p);
        }
        Capture {
            pipe,
            kept: Vec::new(),
            truncated: false,
        }
    }

    fn done(&self) -> bool {
        self.pipe.is_none()
    }

    /// Reads what is there without blocking; closes the pipe at EOF.
    fn read_available(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = CAPTURE - self.kept.len();
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    self.truncated |= n > room;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    fn excerpt(self) -> Excerpt {
        Excerpt {
            bytes: self.kept,
            truncated: self.truncated,
        }
    }
}

fn set_nonblocking(fd: &impl AsFd) {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    if let Ok(flags) = fcntl_getfl(fd) {
        let _ = fcntl_setfl(fd, flags | OFlags::NONBLOCK);
    }
}
