//! Private temporary directories, where libclamav unpacks archives.
//!
//! The supervisor (root) makes one fresh directory per run under
//! `scan.temporary-directory` — owned by root, group of the service user,
//! mode 0710: only root can create anything in it, the service user can
//! only enter it. Inside it, each worker (and each engine holder) gets its
//! own directory, given to the service user, mode 0700.
//!
//! Nothing is done by path. The base directory is reached with
//! [`safe_fs::open_dir`] and must keep root's entries to root (only root
//! or the service user may write it, or it is sticky, like `/tmp`): a
//! local user who could rename the run's directory could otherwise put one
//! of theirs under its name, and the service user's processes, which get
//! paths, would use it. Each directory is made with `mkdirat` under an
//! unpredictable name in its parent's descriptor (never an existing one:
//! a directory a local user made first is never adopted), opened with
//! `O_NOFOLLOW`, checked to be the directory root just made, and given its
//! mode and owner through that descriptor (`fchmod`, `fchown`).
//!
//! A worker's directory is emptied, once the worker has exited, through
//! descriptors and as the service user ([`safe_fs::empty_tree`]): the tree
//! is the worker's (a compromised worker may have filled it with links
//! and deep trees), so the supervisor never does more in it than the
//! service user could. Root then removes the empty directory from the
//! run's directory, which only root writes.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Stat};
use rustix::io::Errno;

use super::broker::creds::{self, FsIdentity};
use crate::safe_fs::{self, Dir, FileId};

/// The per-run directory; removed (with everything below) when dropped.
#[derive(Debug)]
pub struct TempRoot {
    base: Dir,
    name: OsString,
    /// The run's directory, open (not `O_PATH`).
    fd: OwnedFd,
    id: FileId,
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

/// Checks a directory's owner and mode on its descriptor.
fn verify(path: &Path, st: &Stat, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(error(path, "is not a directory"));
    }
    if st.st_uid != uid || st.st_gid != gid || st.st_mode & 0o7777 != mode {
        return Err(error(
            path,
            format!(
                "has owner {}:{} mode {:o}, expected {uid}:{gid} mode {mode:o}",
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A new directory `<prefix>.XXXXXX` in `parent`, made by us and opened:
/// its name, its descriptor, and what it is.
fn make(
    parent: BorrowedFd<'_>,
    shown: &Path,
    prefix: &str,
) -> std::io::Result<(OsString, OwnedFd, Stat)> {
    for _ in 0..100 {
        let name = OsString::from(format!("{prefix}.{}", safe_fs::random_chars(6)));
        match rustix::fs::mkdirat(parent, &*name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(error(&shown.join(&name), e)),
        }
        let fd = safe_fs::open_own_dir(parent, &name).map_err(|e| error(&shown.join(&name), e))?;
        let st = rustix::fs::fstat(&fd)?;
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(error(
                &shown.join(&name),
                "was replaced right after it was made: another user writes its parent",
            ));
        }
        return Ok((name, fd, st));
    }
    Err(error(shown, "100 unpredictable names were all taken"))
}

impl TempRoot {
    /// Creates `<base>/clamsentry.XXXXXX`.
    pub fn create(base: &Path, owner: Option<(u32, u32)>) -> std::io::Result<TempRoot> {
        let me = rustix::process::geteuid().as_raw();
        let trusted: Vec<u32> = std::iter::once(me).chain(owner.map(|o| o.0)).collect();
        let base_dir = safe_fs::open_dir(base, &trusted, None)
            .map_err(|e| e.with_key("scan.temporary-directory"))?;
        if let Some(exposure) = safe_fs::exposure(base_dir.meta()?, me, &trusted) {
            return Err(error(
                base,
                format!(
                    "{exposure}, so another user could rename the daemon's private directory there and put one of theirs in its place: use a directory only root (or the service user) may write, or a sticky one such as /tmp"
                ),
            ));
        }
        let (name, fd, st) = make(base_dir.fd(), base, "clamsentry")?;
        let path = base_dir.path().join(&name);
        let root = TempRoot {
            base: base_dir,
            name,
            fd,
            id: FileId::of(&st),
            path,
            owner,
        };
        let (uid, gid, mode) = match owner {
            Some((_, gid)) => (0, gid, 0o710),
            None => (me, rustix::process::getegid().as_raw(), 0o700),
        };
        rustix::fs::fchmod(&root.fd, Mode::from_raw_mode(mode))?;
        if owner.is_some() {
            rustix::fs::fchown(
                &root.fd,
                Some(rustix::fs::Uid::from_raw(0)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        verify(&root.path, &rustix::fs::fstat(&root.fd)?, uid, gid, mode)?;
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
        let (name, fd, _) = make(self.fd.as_fd(), &self.path, prefix)?;
        let dir = self.path.join(&name);
        // Mode first: once the directory belongs to the service user,
        // changing it would need CAP_FOWNER, which the supervisor lacks.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
        let (uid, gid) = match self.owner {
            Some((uid, gid)) => {
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )?;
                (uid, gid)
            }
            None => (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        };
        verify(&dir, &rustix::fs::fstat(&fd)?, uid, gid, 0o700)?;
        Ok(dir)
    }

    /// Removes a process's directory after it exited: emptied as the
    /// service user through descriptors, then removed by root from the
    /// run's directory. Anything but one of our entries is ignored.
    pub fn remove(&self, dir: &Path) {
        let Ok(rest) = dir.strip_prefix(&self.path) else {
            return;
        };
        let mut parts = rest.components();
        if let (Some(Component::Normal(name)), None) = (parts.next(), parts.next()) {
            self.remove_entry(name);
        }
    }

    fn remove_entry(&self, name: &OsStr) {
        match safe_fs::open_own_dir(self.fd.as_fd(), name) {
            Ok(fd) => {
                if let Err(e) = self.as_owner(|| safe_fs::empty_tree(fd.as_fd())) {
                    tracing::warn!(directory = %self.path.join(name).display(), "cannot empty a private temporary directory: {e}");
                }
                drop(fd);
                let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR);
            }
            // A file or a link where a directory was: only the name goes.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
            }
            Err(_) => {}
        }
    }

    /// Runs `f` with the service user's file identity on this thread (as
    /// ourselves when not root).
    fn as_owner<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let Some((uid, gid)) = self.owner else {
            return f();
        };
        let own = creds::Own::capture()?;
        let _acting = creds::act_as(
            &own,
            &FsIdentity {
                uid,
                gid,
                groups: vec![gid],
            },
        )?;
        f()
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        // Bounded: every round removes what it read, or stops.
        for _ in 0..1000 {
            let Ok(names) = safe_fs::list(self.fd.as_fd(), 256) else {
                break;
            };
            if names.is_empty() {
                break;
            }
            for name in &names {
                self.remove_entry(name);
            }
            if safe_fs::list(self.fd.as_fd(), 256).is_ok_and(|again| again == names) {
                break;
            }
        }
        let ours = matches!(self.base.stat(&self.name), Ok(Some(st)) if FileId::of(&st) == self.id);
        if !ours {
            return;
        }
        let unlink = || -> std::io::Result<()> {
            Ok(rustix::fs::unlinkat(
                self.base.fd(),
                &*self.name,
                AtFlags::REMOVEDIR,
            )?)
        };
        if let Err(e) = unlink() {
            // A base that belongs to the service user: its owner may.
            let retried =
                e.kind() == std::io::ErrorKind::PermissionDenied && self.as_owner(unlink).is_ok();
            if !retried {
                tracing::debug!(directory = %self.path.display(), "cannot remove the private temporary directory: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn base() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    #[test]
    fn fresh_private_directories_every_time() {
        let base = base();
        let root = TempRoot::create(base.path(), None).unwrap();
        let a = root.private("w1").unwrap();
        let b = root.private("w1").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(root.path()));
        let mode = std::fs::metadata(&a).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::create_dir_all(a.join("x/y")).unwrap();
        std::fs::write(a.join("x/y/f"), b"data").unwrap();
        root.remove(&a);
        assert!(!a.exists());
        // Only entries of the run's directory.
        root.remove(base.path());
        assert!(base.path().exists());
        let p = root.path().to_path_buf();
        drop(root);
        assert!(!p.exists());
        assert!(!b.exists());
    }

    #[test]
    fn an_existing_directory_is_never_adopted() {
        // Whatever stands at the path a previous run used, a new run gets a
        // new name.
        let base = base();
        let first = TempRoot::create(base.path(), None).unwrap();
        let second = TempRoot::create(base.path(), None).unwrap();
        assert_ne!(first.path(), second.path());
    }

    #[test]
    fn a_base_others_may_write_is_refused() {
        let base = base();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = TempRoot::create(base.path(), None).unwrap_err().to_string();
        assert!(err.contains("everyone may write it"), "{err}");
        assert!(err.contains("(scan.temporary-directory)"), "{err}");
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
        // Sticky, as /tmp: root's entries stay root's.
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        TempRoot::create(base.path(), None).unwrap();
    }
}
