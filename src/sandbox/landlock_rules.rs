//! The Landlock ruleset of the worker.

use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, LandlockStatus, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::{LandlockState, Plan, SandboxError};

/// The newest Landlock ABI the `landlock` crate knows; best effort lowers it
/// to what the running kernel offers.
const NEWEST: ABI = ABI::V9;

/// Files the worker may read besides the signature and temp directories.
///
/// * `/etc/localtime`: libclamav names its temp directories and stamps its
///   messages in local time, and the VERSION reply shows the database date
///   in local time (`chrono::Local`), as clamd does. Without it they silently
///   fall back to UTC. It holds nothing secret. (A symlink: the rule applies
///   to its target, resolved at demotion.)
///
/// Seen denied and deliberately left out (see the module documentation):
/// OpenSSL's `/usr/lib/ssl/openssl.cnf` and libclamav's optional
/// `libclamunrar_iface.so`, both read by `cl_init`.
pub const EXTRA_READ_ONLY: &[&str] = &["/etc/localtime"];

fn read_only() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn read_write() -> BitFlags<AccessFs> {
    read_only()
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
}

fn abi_number(abi: ABI) -> i32 {
    match abi {
        ABI::Unsupported => 0,
        ABI::V1 => 1,
        ABI::V2 => 2,
        ABI::V3 => 3,
        ABI::V4 => 4,
        ABI::V5 => 5,
        ABI::V6 => 6,
        ABI::V7 => 7,
        ABI::V8 => 8,
        _ => 9,
    }
}

fn open(path: &Path) -> Result<PathFd, SandboxError> {
    PathFd::new(path).map_err(|e| {
        SandboxError::Landlock(format!(
            "cannot open {} for a rule: {e}; check that it exists and that the service user can reach it",
            path.display()
        ))
    })
}

fn err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(e.to_string())
}

/// Builds and enforces the ruleset on the calling thread (and its future
/// threads and children).
pub(super) fn restrict(plan: &Plan) -> Result<LandlockState, SandboxError> {
    restrict_to(&plan.read_only, &plan.read_write, &plan.read_files)
}

/// The ruleset for these directories only (plus [`EXTRA_READ_ONLY`]);
/// below `read_file_dirs` files may be read, not listed. No path Unix
/// socket may be connected to on kernels that can deny it (Landlock ABI ≥
/// 9): the engine holder and the workers log through their log channel to
/// the supervisor (`log::relay`), not to journald. Applied on top of an
/// existing domain it narrows it:
/// Landlock layers only ever take rights away.
pub(super) fn restrict_to(
    read_only_dirs: &[std::path::PathBuf],
    read_write_dirs: &[std::path::PathBuf],
    read_file_dirs: &[std::path::PathBuf],
) -> Result<LandlockState, SandboxError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(NEWEST))
        .map_err(err)?
        .handle_access(AccessNet::from_all(NEWEST))
        .map_err(err)?
        .scope(Scope::from_all(NEWEST))
        .map_err(err)?
        .create()
        .map_err(err)?;
    for dir in read_only_dirs {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, read_only()))
            .map_err(err)?;
    }
    for dir in read_write_dirs {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, read_write()))
            .map_err(err)?;
    }
    for dir in read_file_dirs {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, AccessFs::ReadFile))
            .map_err(err)?;
    }
    for file in EXTRA_READ_ONLY {
        // Optional: a system without the file just has no rule for it.
        if let Ok(fd) = PathFd::new(file) {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, AccessFs::ReadFile))
                .map_err(err)?;
        }
    }
    let status = ruleset.restrict_self().map_err(err)?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => abi_number(effective_abi),
        // In words an operator can act on (kernel, boot parameter, or a
        // container's seccomp filter that hides the system calls).
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => {
            return Ok(LandlockState::NotEnforced {
                reason: super::landlock_diagnosis(),
            })
        }
    };
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => LandlockState::NotEnforced {
            reason: format!("the kernel enforced none of the rules (ABI {abi})"),
        },
        _ if abi >= 5 => LandlockState::Full { abi },
        _ => LandlockState::Partial { abi },
    })
}
