//! Who the worker becomes: user lookup, the identity switch and its checks.

use rustix::process::{Gid, Uid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid, set_thread_uid};

use super::SandboxError;

/// The identity demotion ends with.
pub(super) struct Target {
    /// `Some` when a switch is needed (we are root and a user was named).
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a user by name: (uid, primary gid).
pub fn lookup_user(name: &str) -> Result<(u32, u32), SandboxError> {
    match crate::sys::user_by_name(name) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        Ok(None) => Err(SandboxError::NoSuchUser(name.to_string())),
        Err(e) => Err(SandboxError::UserLookup {
            user: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Fails unless the process has exactly one thread.
pub(super) fn check_single_threaded() -> Result<(), SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::step("reading /proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| SandboxError::step("reading /proc/self/status", "no Threads: line"))?;
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded { threads });
    }
    Ok(())
}

/// Like [`check_single_threaded`], for a process whose `/proc` may already
/// be hidden by Landlock: then the check is skipped (the engine holder
/// checked before it demoted itself, and forks only while single-threaded).
pub(super) fn check_single_threaded_or_unknown() -> Result<(), SandboxError> {
    match check_single_threaded() {
        Err(SandboxError::Step { .. }) => Ok(()),
        other => other,
    }
}

/// Decides the final identity before anything changes.
pub(super) fn resolve_target(user: Option<&str>) -> Result<Target, SandboxError> {
    let me = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let Some(name) = user else {
        return Ok(Target {
            name: None,
            uid: me.0,
            gid: me.1,
        });
    };
    let (uid, gid) = lookup_user(name)?;
    if rustix::process::geteuid().is_root() {
        return Ok(Target {
            name: Some(name.to_string()),
            uid,
            gid,
        });
    }
    if uid != me.0 {
        return Err(SandboxError::NotRoot {
            user: name.to_string(),
            uid,
        });
    }
    // Already that user: nothing to switch, keep our own groups' primary gid.
    Ok(Target {
        name: None,
        uid: me.0,
        gid: me.1,
    })
}

/// setgroups → setresgid → setresuid, then verifies.
pub(super) fn switch(target: &Target) -> Result<(), SandboxError> {
    if target.name.is_none() {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(target.uid), Gid::from_raw(target.gid));
    // Per thread is the whole process: the caller checked it has one thread.
    set_thread_groups(&[gid]).map_err(|e| SandboxError::step("setgroups", e))?;
    set_thread_res_gid(gid, gid, gid).map_err(|e| SandboxError::step("setresgid", e))?;
    set_thread_res_uid(uid, uid, uid).map_err(|e| SandboxError::step("setresuid", e))?;
    verify(target)
}

fn verify(target: &Target) -> Result<(), SandboxError> {
    const STEP: &str = "the identity switch";
    let ids = crate::sys::getresuid().map_err(|e| SandboxError::step("getresuid", e))?;
    if ids != [target.uid; 3] {
        return Err(SandboxError::verify(
            STEP,
            format!("uids are {ids:?}, expected {}", target.uid),
        ));
    }
    let ids = crate::sys::getresgid().map_err(|e| SandboxError::step("getresgid", e))?;
    if ids != [target.gid; 3] {
        return Err(SandboxError::verify(
            STEP,
            format!("gids are {ids:?}, expected {}", target.gid),
        ));
    }
    let groups: Vec<u32> = rustix::process::getgroups()
        .map_err(|e| SandboxError::step("getgroups", e))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    if groups != [target.gid] {
        return Err(SandboxError::verify(
            STEP,
            format!(
                "supplementary groups are {groups:?}, expected [{}]",
                target.gid
            ),
        ));
    }
    if target.uid != 0 && set_thread_uid(Uid::from_raw(0)).is_ok() {
        return Err(SandboxError::verify(STEP, "setuid(0) still succeeds"));
    }
    Ok(())
}
