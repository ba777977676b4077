//! The PID file (`service.pid-file`, clamd's `PidFile`): the daemon's
//! process id and a newline, written at start, removed at exit.
//!
//! As clamd: mode 0644, owned by the daemon's user (root when it runs as
//! root). Unlike clamd, nothing that stands at the name is ever opened,
//! truncated or given away: the PID file's directory (Debian's
//! `/run/clamav`) may belong to another user, who could put a FIFO there
//! (an `open` would wait forever), a symlink, or a hard link to a file of
//! root's. So:
//!
//! 1. the directory is reached with [`safe_fs::open_dir`] (no entry on the
//!    way that someone other than root could replace);
//! 2. what stands at the name is looked at without following or opening it
//!    (`fstatat(AT_SYMLINK_NOFOLLOW)`) and judged by [`judge`]: nothing, or
//!    a regular file of the daemon's own user (a previous run's), may be
//!    replaced; anything else (a FIFO, a device, a socket, a directory, a
//!    symlink, a file of another user) stops the start with an error that
//!    says so, and nothing is changed;
//! 3. the new file is made under an unpredictable name with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW` in the directory's descriptor, written,
//!    and renamed over the name: whatever stood there is replaced as a
//!    directory entry, never written through.
//!
//! At exit it is removed only if the name still stands for the file made
//! ([`safe_fs::Made`]).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::safe_fs::{self, FileId, Made, Meta};

/// What to do with what stands at the PID file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing there: write it.
    Write,
    /// A regular file of the daemon's own user, left by an earlier run:
    /// replace it.
    Replace,
    /// Anything else: refuse, saying what it is.
    Refuse(String),
}

/// Judges what stands at the name (`None`: nothing) for a daemon running
/// as `me`.
pub fn judge(found: Option<(Meta, &'static str)>, me: u32) -> Verdict {
    match found {
        None => Verdict::Write,
        Some((m, _)) if is_regular(m) && m.uid == me => Verdict::Replace,
        Some((m, what)) if is_regular(m) => Verdict::Refuse(format!(
            "{what} of uid {}, not a PID file this daemon (uid {me}) left",
            m.uid
        )),
        Some((m, what)) => Verdict::Refuse(format!("{what} (owner uid {})", m.uid)),
    }
}

fn is_regular(m: Meta) -> bool {
    FileType::from_raw_mode(m.mode) == FileType::RegularFile
}

/// A written PID file; removed on drop if the name still stands for it.
#[derive(Debug)]
pub struct PidFile {
    made: Made,
}

fn fail(path: &Path, message: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!(
        "cannot write the PID file {} (service.pid-file, clamd's PidFile): {message}",
        path.display()
    ))
}

impl PidFile {
    /// Writes this process's pid to `path`. Errors name the key.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let me = rustix::process::geteuid().as_raw();
        let (dir, name) = safe_fs::split(path)?;
        let dir = safe_fs::open_dir(&dir, &[me], None).map_err(|e| fail(path, e))?;
        // Whoever may write the directory could replace the PID file, and
        // whatever reads it would signal their process.
        if let Some(exposure @ safe_fs::Exposure::Writable { .. }) =
            safe_fs::exposure(dir.meta()?, me, &[me])
        {
            return Err(fail(
                path,
                format!(
                    "{} {exposure}, so another user could replace the file; nothing was changed: use a directory only root may write, such as /run",
                    dir.path().display()
                ),
            ));
        }
        let found = dir.stat(&name).map_err(|e| fail(path, e))?;
        match judge(found.as_ref().map(|st| (Meta::of(st), safe_fs::kind(st))), me) {
            Verdict::Write | Verdict::Replace => {}
            Verdict::Refuse(what) => {
                return Err(fail(
                    path,
                    format!(
                        "it is {what}; nothing was changed. Remove it if nothing needs it (and find out who put it there), or choose another service.pid-file"
                    ),
                ))
            }
        }
        let content = format!("{}\n", std::process::id());
        let (temp, file) = create_new(&dir, &name).map_err(|e| fail(path, e))?;
        let written = (|| -> io::Result<FileId> {
            let mut file = std::fs::File::from(file);
            rustix::fs::fchmod(&file, Mode::from_raw_mode(0o644))?;
            file.write_all(content.as_bytes())?;
            let id = FileId::of(&rustix::fs::fstat(&file)?);
            rustix::fs::renameat(dir.fd(), &*temp, dir.fd(), &*name)?;
            Ok(id)
        })();
        let id = match written {
            Ok(id) => id,
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir.fd(), &*temp, AtFlags::empty());
                return Err(fail(path, e));
            }
        };
        let made = Made::new(dir, name, id);
        if !made.is_there() {
            return Err(fail(
                path,
                "it was replaced while it was written: someone else writes its directory",
            ));
        }
        Ok(PidFile { made })
    }

    /// The file as made: its directory, name and identity (for removal as
    /// the directory's owner at exit).
    pub fn made(&self) -> &Made {
        &self.made
    }

    /// Whether the name still stands for the file written (not removed,
    /// not replaced by another daemon).
    #[cfg(test)]
    pub fn is_ours(&self) -> bool {
        self.made.is_there()
    }
}

/// A new file under an unpredictable name next to `name`, made with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing object.
fn create_new(
    dir: &safe_fs::Dir,
    name: &std::ffi::OsStr,
) -> io::Result<(OsString, std::os::fd::OwnedFd)> {
    for _ in 0..100 {
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(".{}", safe_fs::random_chars(10)));
        match rustix::fs::openat(
            dir.fd(),
            &*temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((temp, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "100 unpredictable names were all taken",
    ))
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = self.made.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn meta(uid: u32, kind: FileType) -> Meta {
        Meta {
            uid,
            gid: 0,
            mode: kind.as_raw_mode() | 0o644,
        }
    }

    #[test]
    fn what_may_be_replaced() {
        assert_eq!(judge(None, 0), Verdict::Write);
        assert_eq!(
            judge(Some((meta(0, FileType::RegularFile), "a regular file")), 0),
            Verdict::Replace
        );
        assert_eq!(
            judge(
                Some((meta(1000, FileType::RegularFile), "a regular file")),
                0
            ),
            Verdict::Refuse(
                "a regular file of uid 1000, not a PID file this daemon (uid 0) left".into()
            )
        );
        for (kind, what) in [
            (FileType::Fifo, "a FIFO"),
            (FileType::Symlink, "a symbolic link"),
            (FileType::Directory, "a directory"),
            (FileType::Socket, "a socket"),
            (FileType::CharacterDevice, "a character device"),
        ] {
            assert_eq!(
                judge(Some((meta(0, kind), what)), 0),
                Verdict::Refuse(format!("{what} (owner uid 0)"))
            );
        }
    }

    #[test]
    fn written_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().join("clamd.pid");
        // A previous run's file is replaced, not written through.
        std::fs::write(&p, "1\n").unwrap();
        let old = std::fs::metadata(&p).unwrap().ino();
        let f = PidFile::create(&p).unwrap();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert_ne!(meta.ino(), old);
        assert_eq!(meta.mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert!(f.is_ours());
        // Only the PID file is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(f);
        assert!(!p.exists());
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        // Fifth outside review: a PID file in a directory of mode 0777
        // (or group-writable) was accepted.
        for mode in [0o777, 0o775] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let p = dir.path().join("clamd.pid");
            let err = PidFile::create(&p).unwrap_err().to_string();
            assert!(err.contains("may write it"), "{err}");
            assert!(err.contains("service.pid-file"), "{err}");
            assert!(!p.exists());
        }
        // Sticky, as /tmp: root's entry stays root's.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(PidFile::create(&dir.path().join("clamd.pid")).is_ok());
    }

    #[test]
    fn anything_else_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().join("clamd.pid");
        // A symlink, to a file that must not be written.
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("service.pid-file"), "{err}");
        assert!(err.contains("a symbolic link"), "{err}");
        assert!(!target.exists());
        std::fs::remove_file(&p).unwrap();
        // A FIFO: refused at once, still a FIFO.
        rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
        std::fs::remove_file(&p).unwrap();
        // A directory.
        std::fs::create_dir(&p).unwrap();
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        // Nothing else was made.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
