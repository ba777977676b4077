//! Private temporary directories, where libclamav unpacks archives.
//!
//! The supervisor (root) makes one fresh directory per run with `mkdtemp`
//! under `scan.temporary-directory` — owned by root, group of the service
//! user, mode 0710: only root can create anything in it, the service user
//! can only enter it. Inside it, each worker (and each engine holder) gets
//! its own `mkdtemp` directory, given to the service user, mode 0700. Both
//! are checked after creation (a directory, not a symlink, the expected
//! owner and mode) and never adopted: a directory that already exists is
//! never reused, so a local user who creates `/tmp/clamsentry.*` first gains
//! nothing.
#![forbid(unsafe_code)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The per-run directory; removed (with everything below) when dropped.
#[derive(Debug)]
pub struct TempRoot {
    path: PathBuf,
    /// The service user's uid and gid when running as root.
    owner: Option<(u32, u32)>,
}

fn error(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!(
        "{}: {e} (scan.temporary-directory)",
        path.display()
    ))
}

/// Checks what `mkdtemp` made: a real directory with this owner and mode.
fn verify(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_dir() {
        return Err(error(path, "is not a directory"));
    }
    if m.uid() != uid || m.gid() != gid || m.mode() & 0o7777 != mode {
        return Err(error(
            path,
            format!(
                "has owner {}:{} mode {:o}, expected {uid}:{gid} mode {mode:o}",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn make(template: PathBuf) -> std::io::Result<PathBuf> {
    nix::unistd::mkdtemp(&template).map_err(|e| error(&template, e))
}

impl TempRoot {
    /// Creates `<base>/clamsentry.XXXXXX`.
    pub fn create(base: &Path, owner: Option<(u32, u32)>) -> std::io::Result<TempRoot> {
        let path = make(base.join("clamsentry.XXXXXX"))?;
        let root = TempRoot { path, owner };
        let (uid, gid, mode) = match owner {
            Some((_, gid)) => (0, gid, 0o710),
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
                0o700,
            ),
        };
        std::fs::set_permissions(&root.path, std::fs::Permissions::from_mode(mode))?;
        if owner.is_some() {
            std::os::unix::fs::chown(&root.path, Some(0), Some(gid))?;
        }
        verify(&root.path, uid, gid, mode)?;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_bytes(&self) -> Vec<u8> {
        self.path.as_os_str().as_bytes().to_vec()
    }

    /// A fresh private directory for one process (`prefix`: `w7`, `z2`),
    /// owned by the service user, mode 0700.
    pub fn private(&self, prefix: &str) -> std::io::Result<PathBuf> {
        let dir = make(self.path.join(format!("{prefix}.XXXXXX")))?;
        // Mode first: once the directory belongs to the service user,
        // changing it would need CAP_FOWNER, which the supervisor lacks.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let (uid, gid) = match self.owner {
            Some((uid, gid)) => {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
                (uid, gid)
            }
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        verify(&dir, uid, gid, 0o700)?;
        Ok(dir)
    }

    /// Removes a process's directory after it exited (symlinks inside are
    /// removed, never followed).
    pub fn remove(&self, dir: &Path) {
        if dir.starts_with(&self.path) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_private_directories_every_time() {
        let base = tempfile::tempdir().unwrap();
        let root = TempRoot::create(base.path(), None).unwrap();
        let a = root.private("w1").unwrap();
        let b = root.private("w1").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(root.path()));
        let mode = std::fs::metadata(&a).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        root.remove(&a);
        assert!(!a.exists());
        let p = root.path().to_path_buf();
        drop(root);
        assert!(!p.exists());
    }

    #[test]
    fn an_existing_directory_is_never_adopted() {
        // Whatever stands at the path a previous run used, a new run gets a
        // new name from mkdtemp.
        let base = tempfile::tempdir().unwrap();
        let first = TempRoot::create(base.path(), None).unwrap();
        let second = TempRoot::create(base.path(), None).unwrap();
        assert_ne!(first.path(), second.path());
    }
}
