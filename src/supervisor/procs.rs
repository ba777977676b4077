//! The supervisor's child processes, by pidfd: starting the engine holder,
//! telling a new worker from an impostor, signalling and reaping — never by
//! a raw pid that could have been reused.
//!
//! Engine holders (zygotes) are `clamsentry __zygote` processes started
//! here. Workers are forked by a zygote through an intermediate child that
//! exits at once (`src/zygote/fork.rs`), so they are re-parented to the
//! supervisor, a child subreaper: the kernel, not the zygote, tells the
//! supervisor when one exits and how. A worker's pid comes from the kernel
//! as well (SCM_CREDENTIALS on its first message); [`adopt`] opens a pidfd
//! for it and checks that it is a child of this process, which a process
//! cannot fake. Children that nobody accounts for (a worker that died before
//! it said hello, anything a compromised zygote might fork) are reaped, or
//! killed after a grace period, by [`Strays`].
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, WaitIdOptions, WaitIdStatus};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    Unknown,
}

impl Ended {
    fn of(status: Option<WaitIdStatus>) -> Ended {
        match status {
            Some(s) => match (s.exit_status(), s.terminating_signal()) {
                (Some(code), _) => Ended::Exited(code),
                (None, Some(sig)) => Ended::Signaled(sig),
                _ => Ended::Unknown,
            },
            None => Ended::Unknown,
        }
    }

    /// A crash, as opposed to an orderly exit (0).
    pub fn is_crash(self) -> bool {
        !matches!(self, Ended::Exited(0))
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exit code {code}"),
            Ended::Signaled(sig) => {
                let name =
                    crate::sys::signal_name(*sig).map_or_else(|| sig.to_string(), str::to_string);
                write!(f, "signal {name}")
            }
            Ended::Unknown => f.write_str("unknown"),
        }
    }
}

/// A child process held by its pidfd.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pidfd: OwnedFd,
}

impl Child {
    /// SIGKILL, through the pidfd (a reused pid cannot be hit).
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Waits (blocking) until the process exits, reaps it and says how it
    /// ended. Run on a thread of its own.
    pub fn wait(&self) -> Ended {
        loop {
            match rustix::process::waitid(
                rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
                WaitIdOptions::EXITED,
            ) {
                Ok(status) => return Ended::of(status),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return Ended::Unknown,
            }
        }
    }

    /// Has the process exited (without reaping it)?
    pub fn exited(&self) -> bool {
        matches!(
            rustix::process::waitid(
                rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
            ),
            Ok(Some(_))
        )
    }
}

/// Takes `pid` as a child of this process: opens its pidfd and proves it is
/// our child (`waitid` on a pidfd only works for one's own children). Since
/// only we can reap our children, the pid cannot have been reused meanwhile.
pub fn adopt(pid: i32) -> std::io::Result<Child> {
    let p = Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("pid 0"))?;
    let pidfd = rustix::process::pidfd_open(p, PidfdFlags::empty())?;
    rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )
    .map_err(|e| {
        std::io::Error::other(format!(
            "process {pid} is not a child of the supervisor ({e})"
        ))
    })?;
    Ok(Child { pid, pidfd })
}

/// The fd numbers the zygote finds its control channel at.
pub const ZYGOTE_CONTROL_FD: RawFd = 3;

/// Where an exec'd child's stdout and stderr go.
pub enum Output {
    /// Every child of the daemon: stdout `/dev/null`, stderr the pipe the
    /// supervisor reads (`logrelay`: lines marked as the child's and within
    /// its budgets). Under systemd the daemon's own stdout and stderr are
    /// the journal stream: a child holding them would write lines as the
    /// daemon, past the budgets and the marks.
    Relayed(OwnedFd),
    /// `clamsentry sandbox-check` only: the probe prints its findings to
    /// the operator's terminal (the command's own stdout and stderr); it
    /// reads no client byte.
    Terminal,
}

/// Starts `clamsentry <args>` (the same binary) with `control` at fd 3,
/// `log` (its log channel) at fd 4 (`log::relay::LOG_FD`) and nothing else
/// but stdin (/dev/null), stdout and stderr as `output` says. systemd's
/// variables are not passed on.
pub fn spawn_zygote(
    args: &[&str],
    control: &OwnedFd,
    log: &OwnedFd,
    output: Output,
) -> std::io::Result<Child> {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    if let Output::Relayed(fd) = output {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(fd));
    }
    let sources = [control.as_raw_fd(), log.as_raw_fd()];
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl and dup2, which are async-signal-safe; it allocates
    // nothing. Each source is first copied above 9 (close-on-exec), so
    // that placing one cannot overwrite the other; dup2 then clears
    // close-on-exec on the copies at fds 3 and 4. Every other descriptor
    // of the supervisor is close-on-exec (see `close_on_exec_all`).
    unsafe {
        cmd.pre_exec(move || {
            // libc: on raw numbers between fork and exec, where rustix would
            // need borrowed descriptors it cannot have.
            let mut high = [-1; 2];
            for (i, fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, ZYGOTE_CONTROL_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Not reaped by anyone but us, so the pid is still this process.
    adopt(child.id() as i32)
}

/// Marks every descriptor above stderr close-on-exec (systemd's sockets
/// included: only the supervisor uses them), so that nothing the
/// supervisor inherited or opened reaches a child by accident; a child gets
/// exactly what [`spawn_zygote`] places.
pub fn close_on_exec_all() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    for fd in fds {
        if fd > 2 {
            // SAFETY: the descriptor is only borrowed for this one call; if
            // it was closed since the listing, the call fails with EBADF.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
        }
    }
}

/// Children of this process that no one accounts for.
#[derive(Default)]
pub struct Strays {
    seen: HashMap<i32, Instant>,
}

/// How long an unknown child may live: a new worker is unknown from its
/// fork until its first message.
pub const STRAY_GRACE: Duration = Duration::from_secs(15);

impl Strays {
    /// Reaps exited unknown children at once; kills unknown children older
    /// than [`STRAY_GRACE`]. `known`: the pids the supervisor holds pidfds
    /// for. Returns what it did, for the log.
    pub fn sweep(&mut self, known: &[i32], now: Instant) -> Vec<(i32, &'static str)> {
        let mut done = Vec::new();
        let children = children_of_self();
        self.seen.retain(|pid, _| children.contains(pid));
        for pid in children {
            if known.contains(&pid) {
                self.seen.remove(&pid);
                continue;
            }
            let first = *self.seen.entry(pid).or_insert(now);
            let Ok(child) = adopt(pid) else { continue };
            if child.exited() {
                child.wait();
                self.seen.remove(&pid);
                done.push((pid, "reaped"));
            } else if now.duration_since(first) > STRAY_GRACE {
                child.kill();
                child.wait();
                self.seen.remove(&pid);
                done.push((pid, "killed"));
            }
        }
        done
    }
}

fn children_of_self() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_children_are_adopted() {
        // Our parent (the test runner's parent) is not our child.
        let parent = rustix::process::Pid::as_raw(rustix::process::getppid());
        assert!(adopt(parent).is_err());
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let child = adopt(c.id() as i32).unwrap();
        assert!(!child.exited());
        child.kill();
        assert_eq!(child.wait(), Ended::Signaled(libc::SIGKILL));
        // Reaped by us: std's handle must not wait again.
        let _ = c.try_wait();
    }
}
