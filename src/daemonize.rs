//! Forking into the background as clamd does when it is not told to stay in
//! the foreground (`Foreground yes`, `-F`): the command returns once the
//! daemon serves, with status 0, or with the daemon's error and status when
//! start-up fails. Init scripts and tools that start clamd rely on that.
//!
//! [`daemonize`] forks while the process still has a single thread (checked;
//! threads do not survive `fork`). The parent waits on a pipe; the child
//! starts a new session (`setsid`) and gets a [`Readiness`] to report on:
//!
//! * [`Readiness::ready`] once it serves (clamsentry: when the first worker
//!   has loaded its engine and the sockets are served, where systemd gets
//!   `READY=1`): the parent exits 0; the child's working directory becomes
//!   `/` (unless it was started with `--debug`), as clamd's;
//! * [`Readiness::failed`] with the reason when start-up fails: the parent
//!   prints it on its stderr and exits with the child's exit status;
//! * neither (the child died): the parent exits with the child's status
//!   (1 if it was killed by a signal).
//!
//! The child's stdin, stdout and stderr become `/dev/null` at once, not at
//! `ready` as in clamd: the workers it starts inherit them, and a worker
//! holding the caller's stdout or stderr would keep `$(clamd)` or `ssh host
//! clamd` waiting after the parent exited. So its log goes to journald
//! (`log.target`; chosen when the journal is there) or nowhere, and a
//! start-up error reaches the user through the parent.
//!
//! The PID file is written by the daemon itself (`service.pid-file`), so it
//! holds the daemon's pid, not the parent's.
//!
//! The fork itself is `sandbox::child::fork_single_threaded`, at the OS
//! boundary with the other process code; this module is safe code.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Mutex;

use rustix::process::{waitpid, Pid, WaitOptions};

use crate::sandbox::child::ForkResult;

/// What the started daemon reports to the process waiting for it.
pub struct Readiness {
    /// The pipe to the waiting parent; `None` in the foreground or once
    /// reported.
    pipe: Mutex<Option<File>>,
    daemonized: bool,
    keep_cwd: bool,
}

impl Readiness {
    /// For a daemon in the foreground: reports go nowhere.
    pub fn foreground() -> Readiness {
        Readiness {
            pipe: Mutex::new(None),
            daemonized: false,
            keep_cwd: true,
        }
    }

    /// Whether this process is the background child of [`daemonize`] (its
    /// errors reach the user through [`failed`](Self::failed), not stderr).
    pub fn is_daemonized(&self) -> bool {
        self.daemonized
    }

    /// The daemon serves: the waiting parent exits 0. Then, as clamd, the
    /// working directory becomes `/`. Later calls do nothing.
    pub fn ready(&self) {
        let Some(mut pipe) = self.take() else {
            return;
        };
        let _ = pipe.write_all(b"R");
        drop(pipe);
        if !self.keep_cwd {
            let _ = std::env::set_current_dir("/");
        }
    }

    /// Start-up failed: the waiting parent prints `message` and exits with
    /// this process's exit status. Does nothing after [`ready`](Self::ready).
    pub fn failed(&self, message: &str) {
        if let Some(mut pipe) = self.take() {
            let _ = pipe.write_all(format!("E{message}").as_bytes());
        }
    }

    fn take(&self) -> Option<File> {
        self.pipe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Where [`daemonize`] returns.
pub enum Forked {
    /// In the original process, after the daemon reported (or died): exit
    /// with this status.
    Parent(u8),
    /// In the daemon: go on starting, and report on this.
    Child(Readiness),
}

/// Forks into the background (see the module docs). `keep_cwd`: do not
/// change to `/` when ready (clamd's `--debug`).
pub fn daemonize(keep_cwd: bool) -> io::Result<Forked> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    match crate::sandbox::child::fork_single_threaded()? {
        ForkResult::Child => {
            drop(read);
            rustix::process::setsid()?;
            detach_stdio();
            Ok(Forked::Child(Readiness {
                pipe: Mutex::new(Some(File::from(write))),
                daemonized: true,
                keep_cwd,
            }))
        }
        ForkResult::Parent { child } => {
            drop(write);
            Ok(Forked::Parent(wait_for(File::from(read), child)))
        }
    }
}

/// The parent: the daemon's report, else its exit status.
fn wait_for(mut pipe: File, child: Pid) -> u8 {
    let mut report = Vec::new();
    let _ = pipe.read_to_end(&mut report);
    if report.first() == Some(&b'R') {
        return 0;
    }
    if report.first() == Some(&b'E') {
        eprintln!("clamsentry: {}", String::from_utf8_lossy(&report[1..]));
    }
    loop {
        let status = waitpid(Some(child), WaitOptions::empty()).map(|s| s.map(|(_, s)| s));
        match status {
            Ok(Some(s)) if s.exit_status() == Some(0) && report.first() == Some(&b'E') => return 1,
            Ok(Some(s)) if s.exit_status().is_some() => {
                return s.exit_status().unwrap_or(1).clamp(0, 255) as u8
            }
            Ok(Some(s)) if s.terminating_signal().is_some() => {
                let sig = s.terminating_signal().unwrap_or(0);
                let name =
                    crate::sys::signal_name(sig).map_or_else(|| sig.to_string(), str::to_string);
                eprintln!("clamsentry: the daemon was killed by {name} before it was ready");
                return 1;
            }
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                eprintln!("clamsentry: cannot wait for the daemon: {e}");
                return 1;
            }
        }
    }
}

/// stdin, stdout and stderr to `/dev/null`.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = rustix::stdio::dup2_stdin(&null);
    let _ = rustix::stdio::dup2_stdout(&null);
    let _ = rustix::stdio::dup2_stderr(&null);
}
