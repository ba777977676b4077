//! Forking a worker so that it becomes the supervisor's child.
//!
//! The engine holder forks twice with the C library's `fork` (which keeps
//! the library's own state right in the child, unlike a raw `clone`): the
//! first child forks the worker and exits at once, the holder reaps it, and
//! the worker, orphaned, is re-parented to the supervisor, which is a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`). From then on the kernel tells the
//! supervisor, and only it, when the worker exits and how.
//!
//! The first child takes the worker's name (`clamsentry-work`) before it
//! forks the worker, so the worker is born with it: no child of the
//! supervisor ever bears the engine holder's name but an engine holder.
//!
//! Forking is sound here because the engine holder has exactly one thread
//! (it never starts a runtime or a thread; [`fork_worker`] checks the
//! thread count on a `/proc/self/task` descriptor opened before the sandbox
//! closed `/proc`).
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::process::{waitpid, Pid, WaitOptions};

/// The name (`comm`) of every worker process.
pub const WORKER_NAME: &std::ffi::CStr = c"clamsentry-work";

/// Which side of a successful [`fork_worker`] this is.
pub enum Side {
    /// The engine holder, which goes on.
    Holder,
    /// The new worker, now a child of the supervisor.
    Worker,
}

/// Counts this process's threads through a descriptor of `/proc/self/task`
/// opened before demotion.
pub struct Threads {
    dir: rustix::fs::Dir,
}

impl Threads {
    pub fn open() -> std::io::Result<Threads> {
        let fd: OwnedFd = rustix::fs::open(
            "/proc/self/task",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(Threads {
            dir: rustix::fs::Dir::new(fd)?,
        })
    }

    pub fn count(&mut self) -> usize {
        self.dir.rewind();
        let mut n = 0;
        while let Some(Ok(e)) = self.dir.read() {
            if e.file_name().to_bytes() != b"." && e.file_name().to_bytes() != b".." {
                n += 1;
            }
        }
        n
    }
}

/// Forks a worker that ends up as a child of `supervisor`. In the worker
/// this returns `Side::Worker` once the re-parenting is done.
pub fn fork_worker(threads: &mut Threads, supervisor: Pid) -> Result<Side, String> {
    let n = threads.count();
    if n != 1 {
        return Err(format!(
            "the engine holder has {n} threads; forking is only safe with one"
        ));
    }
    // SAFETY: this process has exactly one thread (checked above), so the
    // child is a consistent copy: no lock is held by a thread that does not
    // exist in it.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        Some(child) => match waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, s))) if s.exit_status() == Some(0) => Ok(Side::Holder),
            Ok(Some((_, s))) => Err(match (s.exit_status(), s.terminating_signal()) {
                (Some(code), _) => format!("the intermediate process ended with exit code {code}"),
                (_, Some(sig)) => format!("the intermediate process ended with signal {sig}"),
                _ => format!(
                    "the intermediate process ended with status {:#x}",
                    s.as_raw()
                ),
            }),
            Ok(None) => Err("waitpid: no status".to_string()),
            Err(e) => Err(format!("waitpid: {e}")),
        },
        None => {
            // The name is the worker's from its first instant (only the
            // holder waits for this process, which exits below).
            let _ = rustix::thread::set_name(WORKER_NAME);
            // SAFETY: as above; this intermediate process has one thread too.
            match unsafe { fork() } {
                Ok(Some(_)) => exit_now(0),
                Err(_) => exit_now(1),
                Ok(None) => {
                    wait_for_parent(supervisor);
                    Ok(Side::Worker)
                }
            }
        }
    }
}

/// Waits until the intermediate parent has exited and this process belongs
/// to the supervisor; exits if that does not happen (the supervisor is not
/// a subreaper, or went away).
fn wait_for_parent(supervisor: Pid) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while rustix::process::getppid() != Some(supervisor) {
        if Instant::now() > deadline {
            exit_now(3);
        }
        std::thread::yield_now();
    }
}

/// Makes `stderr` (the worker's own pipe to the supervisor) this process's
/// stderr, in place of the engine holder's.
pub fn take_stderr(stderr: OwnedFd) {
    use std::os::fd::AsRawFd;
    if stderr.as_raw_fd() != libc::STDERR_FILENO {
        // Nothing to report to if it fails: the worker then writes to the
        // holder's pipe, which the supervisor reads too.
        let _ = rustix::stdio::dup2_stderr(&stderr);
    }
}

/// The C library's `fork`: `None` in the child, the child's pid in the
/// parent. libc: rustix has no fork (its raw `kernel_fork` skips the C
/// library's own fork handling, which this module relies on).
///
/// # Safety
///
/// The process must have exactly one thread.
unsafe fn fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: the caller guarantees a single thread, so the child is a
    // consistent copy.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// Ends the process without running exit handlers or flushing buffers: an
/// intermediate fork must not touch state it shares with the holder.
fn exit_now(code: i32) -> ! {
    // libc: rustix offers `_exit` only in its unstable runtime API.
    // SAFETY: _exit takes an integer and does not return; it runs no code
    // of this process (no atexit handlers, no destructors).
    unsafe { libc::_exit(code) }
}
