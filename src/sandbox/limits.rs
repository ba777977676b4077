//! no-new-privs and resource limits.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::{Plan, SandboxError};

pub(super) fn set_no_new_privs() -> Result<(), SandboxError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| SandboxError::step("PR_SET_NO_NEW_PRIVS", e))?;
    if !no_new_privs()? {
        return Err(SandboxError::verify(
            "PR_SET_NO_NEW_PRIVS",
            "PR_GET_NO_NEW_PRIVS returns 0",
        ));
    }
    Ok(())
}

pub(super) fn no_new_privs() -> Result<bool, SandboxError> {
    rustix::thread::no_new_privs().map_err(|e| SandboxError::step("PR_GET_NO_NEW_PRIVS", e))
}

/// Tasks (threads) whose real uid is `uid`, system-wide, as `RLIMIT_NPROC`
/// counts them. Processes we cannot read (they exit, or hidepid) are not
/// counted; the worst case is a budget smaller than asked.
pub(super) fn count_tasks_of(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id().to_string();
    let mut total = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // We are counted as the target user only after the switch; our own
        // single thread is added by the caller's budget anyway.
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut real_uid = None;
        let mut threads = None;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Uid:") {
                real_uid = v
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<u32>().ok());
            } else if let Some(v) = line.strip_prefix("Threads:") {
                threads = v.trim().parse::<u64>().ok();
            }
        }
        if real_uid == Some(uid) {
            total += threads.unwrap_or(1);
        }
    }
    total
}

fn set(resource: Resource, name: &'static str, value: u64) -> Result<(), SandboxError> {
    // `None` is RLIM_INFINITY (u64::MAX).
    let limit = |v: u64| (v != u64::MAX).then_some(v);
    let wanted = Rlimit {
        current: limit(value),
        maximum: limit(value),
    };
    setrlimit(resource, wanted)
        .map_err(|e| SandboxError::step(name, format!("setting it to {value}: {e}")))?;
    let got = getrlimit(resource);
    let got = (
        got.current.unwrap_or(u64::MAX),
        got.maximum.unwrap_or(u64::MAX),
    );
    if got != (value, value) {
        return Err(SandboxError::verify(
            name,
            format!("it is {got:?}, expected ({value}, {value})"),
        ));
    }
    Ok(())
}

/// `RLIMIT_NPROC` = 0: no `clone` of any kind succeeds any more.
pub(super) fn forbid_new_tasks() -> Result<(), SandboxError> {
    set(Resource::Nproc, "RLIMIT_NPROC", 0)
}

/// `RLIMIT_NPROC` counts every task of the real uid, threads included. With
/// `plan.max_threads == 0` it is 0: no `clone` at all. Otherwise it is what
/// the user already runs, plus us, plus `plan.max_threads`.
pub(super) fn set_rlimits(plan: &Plan, tasks_of_user: u64) -> Result<(), SandboxError> {
    set(Resource::Core, "RLIMIT_CORE", 0)?;
    set(Resource::Nofile, "RLIMIT_NOFILE", plan.max_open_files)?;
    let nproc = if plan.max_threads == 0 {
        0
    } else {
        tasks_of_user + 1 + plan.max_threads
    };
    set(Resource::Nproc, "RLIMIT_NPROC", nproc)
}
