//! Demotion of a short-lived program the supervisor starts (the VirusEvent
//! command, `crate::virus_event`), between `fork` and `exec`:
//!
//! 1. `setgroups([gid])` → `setresgid(gid)` → `setresuid(uid)` when an
//!    identity is given, then verified: real, effective and saved ids are the
//!    target and uid 0 is refused outright (the supervisor runs as root; its
//!    children must not);
//! 2. `PR_SET_NO_NEW_PRIVS`, so nothing the program executes can gain
//!    privileges (setuid binaries, file capabilities);
//! 3. every descriptor above stderr becomes close-on-exec, so the program
//!    gets none of the supervisor's sockets (systemd hands listening sockets
//!    over without `FD_CLOEXEC`).
//!
//! A failure of any step fails the spawn (std reports it as the spawn's
//! error); the program never runs half-demoted.
//!
//! Also here, as the other `fork` outside the engine holder:
//! [`fork_single_threaded`], the fork into the background when clamsentry
//! starts as clamd without `--foreground` (`crate::daemonize`).
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{self, Gid, Uid};

/// Forks, if this process has exactly one thread (read from
/// `/proc/self/status`; threads do not survive a fork, so a child of a
/// threaded process could find a lock held forever).
pub fn fork_single_threaded() -> io::Result<unistd::ForkResult> {
    match super::identity::check_single_threaded() {
        Ok(()) => {}
        Err(super::SandboxError::NotSingleThreaded { threads }) => {
            return Err(io::Error::other(format!(
                "cannot fork into the background with {threads} threads running"
            )))
        }
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    // SAFETY: the process has a single thread (checked above), so the child
    // is a complete copy in which any function may be called.
    Ok(unsafe { unistd::fork() }?)
}

/// Registers the demotion to run in the child before `exec`. `ids` is the
/// (uid, gid) to become, or `None` to keep the current identity (which must
/// then not be root).
pub fn demote_before_exec(cmd: &mut Command, ids: Option<(u32, u32)>) {
    let closure = move || -> io::Result<()> {
        if let Some((uid, gid)) = ids {
            let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
            unistd::setgroups(&[gid])?;
            unistd::setresgid(gid, gid, gid)?;
            unistd::setresuid(uid, uid, uid)?;
        }
        let r = unistd::getresuid()?;
        if r.real.is_root() || r.effective.is_root() || r.saved.is_root() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if let Some((uid, _)) = ids {
            if r.real.as_raw() != uid || r.effective.as_raw() != uid || r.saved.as_raw() != uid {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        nix::sys::prctl::set_no_new_privs()?;
        cloexec_from(3)
    };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls (setgroups, setresgid, setresuid, getresuid, prctl,
    // close_range or fcntl, getrlimit): no allocation, no locks. Its errors
    // are raw OS error codes, which do not allocate (a refusal to run as
    // root, or an identity that did not take, is EPERM).
    unsafe {
        cmd.pre_exec(closure);
    }
}

/// Marks every descriptor from `first` on close-on-exec.
fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor
    // flags; it takes plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fcntl per possible descriptor.
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    let last = soft.min(1 << 20) as i32;
    for fd in first as i32..last {
        // SAFETY: F_SETFD on any integer is harmless; EBADF for the ones not open.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}
