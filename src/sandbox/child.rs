//! Starting a helper process that never runs as root (the VirusEvent
//! launcher, `crate::launcher`): [`spawn_helper`] demotes it between `fork`
//! and `exec`, so that none of its own code runs with root's identity.
//!
//! Also here, as the other `fork` outside the engine holder:
//! [`fork_single_threaded`], the fork into the background when clamsentry
//! starts as clamd without `--foreground` (`crate::daemonize`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::process::{Gid, Pid, Uid};

/// Which side of a fork this is.
pub enum ForkResult {
    Parent { child: Pid },
    Child,
}

/// Forks, if this process has exactly one thread (read from
/// `/proc/self/status`; threads do not survive a fork, so a child of a
/// threaded process could find a lock held forever).
pub fn fork_single_threaded() -> io::Result<ForkResult> {
    match super::identity::check_single_threaded() {
        Ok(()) => {}
        Err(super::SandboxError::NotSingleThreaded { threads }) => {
            return Err(io::Error::other(format!(
                "cannot fork into the background with {threads} threads running"
            )))
        }
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    // libc: rustix has no fork (its raw `kernel_fork` skips the C library's
    // own fork handling).
    // SAFETY: the process has a single thread (checked above), so the child
    // is a complete copy in which any function may be called.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        child => Ok(ForkResult::Parent {
            child: Pid::from_raw(child).ok_or_else(|| io::Error::other("fork returned pid 0"))?,
        }),
    }
}

/// Who a helper process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
}

/// The descriptor number a helper finds its channel at.
pub const HELPER_CHANNEL_FD: RawFd = 3;

/// Starts the program `exe` (an open file: executed through
/// `/proc/self/fd`, so that the user it becomes needs no access to the
/// directories above it) with `args`, an empty environment, stdin, stdout
/// and stderr on `/dev/null` and `channel` at descriptor 3, as `ids` when
/// given (else as the caller, which must then not be root). In the child,
/// between `fork` and `exec`, in this order:
///
/// 1. `channel` is placed at descriptor 3;
/// 2. with `ids`: the capability bounding set emptied (while root still
///    holds `CAP_SETPCAP`), then `setgroups(ids.groups)` →
///    `setresgid(gid)` → `setresuid(uid)`; verified: real, effective and
///    saved uid are the target, and none is 0 (a helper never runs as root);
/// 3. `PR_SET_NO_NEW_PRIVS`, so nothing it executes can gain privileges
///    (setuid binaries, file capabilities);
/// 4. every descriptor above 3 becomes close-on-exec, so the helper gets
///    none of the supervisor's sockets (systemd hands listening sockets over
///    without `FD_CLOEXEC`).
///
/// A failure of any step fails the spawn (std reports it as the spawn's
/// error); the program never runs half-demoted. The change of uid empties
/// the capability sets and makes the process non-dumpable until `exec`;
/// the helper makes itself non-dumpable again as its first instruction.
pub fn spawn_helper(
    exe: &std::fs::File,
    args: &[&str],
    channel: BorrowedFd<'_>,
    ids: Option<&Ids>,
) -> io::Result<std::process::Child> {
    // Above the descriptors placed in the child, so that placing the
    // channel at 3 cannot replace it; close-on-exec, so that only `exec`
    // itself uses it.
    let exe = rustix::io::fcntl_dupfd_cloexec(exe, 10)?;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("clamsentry")
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let source = channel.as_raw_fd();
    let ids: Option<(Uid, Gid, Vec<Gid>)> = ids.map(|i| {
        (
            Uid::from_raw(i.uid),
            Gid::from_raw(i.gid),
            i.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        )
    });
    let closure = move || -> io::Result<()> {
        place_at(source, HELPER_CHANNEL_FD)?;
        if let Some((uid, gid, groups)) = &ids {
            empty_bounding_set()?;
            // Per thread is the whole process here: the forked child has
            // one thread.
            rustix::thread::set_thread_groups(groups)?;
            rustix::thread::set_thread_res_gid(*gid, *gid, *gid)?;
            rustix::thread::set_thread_res_uid(*uid, *uid, *uid)?;
        }
        let r = crate::sys::getresuid()?;
        if r.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if let Some((uid, _, _)) = &ids {
            if r.iter().any(|id| *id != uid.as_raw()) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        rustix::thread::set_no_new_privs(true)?;
        cloexec_from(HELPER_CHANNEL_FD as u32 + 1)
    };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls (fcntl, dup2, prctl, setgroups, setresgid, setresuid,
    // getresuid, close_range or fcntl, getrlimit) on values prepared before the
    // fork (the group list is not reallocated): no allocation, no locks. Its
    // errors are raw OS error codes, which do not allocate (a refusal to run
    // as root, or an identity that did not take, is EPERM).
    unsafe {
        cmd.pre_exec(closure);
    }
    let child = cmd.spawn();
    drop(exe);
    child
}

/// Drops every capability from the bounding set (up to the first number
/// the kernel does not know).
fn empty_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        // libc: rustix's bounding-set call takes only the capabilities it names.
        // SAFETY: prctl with plain integers; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Puts `source` at descriptor `target`, without close-on-exec.
fn place_at(source: RawFd, target: RawFd) -> io::Result<()> {
    // libc: raw numbers in the forked child, where rustix wants borrowed
    // descriptors.
    // SAFETY: fcntl and dup2 on plain integers; async-signal-safe.
    let rc = unsafe {
        if source == target {
            let f = libc::fcntl(source, libc::F_GETFD);
            if f < 0 {
                -1
            } else {
                libc::fcntl(source, libc::F_SETFD, f & !libc::FD_CLOEXEC)
            }
        } else {
            libc::dup2(source, target)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec.
fn cloexec_from(first: u32) -> io::Result<()> {
    // libc: rustix has no close_range.
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
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let last = soft.min(1 << 20) as i32;
    for fd in first as i32..last {
        // libc: raw numbers, not descriptors rustix could borrow.
        // SAFETY: F_SETFD on any integer is harmless; EBADF for the ones not open.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}
