//! PLACEHOLDER until the sandbox branch lands: the interface the worker uses.
#![allow(dead_code)]

use std::path::PathBuf;

pub struct Plan {
    pub user: Option<String>,
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub max_open_files: u64,
}

pub enum LandlockState {
    Full { abi: i32 },
    Partial { abi: i32 },
    NotEnforced { reason: String },
}

pub struct Status {
    pub uid: u32,
    pub gid: u32,
    pub landlock: LandlockState,
    pub no_new_privs: bool,
    pub capabilities_cleared: bool,
    pub network_restricted: bool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid={} gid={} landlock=not enforced", self.uid, self.gid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Other(String),
}

pub fn lookup_user(name: &str) -> Result<(u32, u32), SandboxError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(SandboxError::Other(format!(
            "service user {name:?} does not exist"
        ))),
    }
}

pub fn demote(_plan: &Plan) -> Result<Status, SandboxError> {
    Ok(Status {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        landlock: LandlockState::NotEnforced {
            reason: "placeholder".into(),
        },
        no_new_privs: false,
        capabilities_cleared: false,
        network_restricted: false,
    })
}

pub fn restrict_supervisor(_keep: &[caps::Capability]) -> Result<(), SandboxError> {
    Ok(())
}

pub struct Attempt {
    pub what: String,
    pub denied: bool,
    pub detail: String,
}

pub fn probe(_plan: &Plan) -> Vec<Attempt> {
    Vec::new()
}
