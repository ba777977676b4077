//! The PID file (`service.pid-file`, clamd's `PidFile`): the daemon's
//! process id and a newline, written at start, removed at exit.
//!
//! As clamd: mode 0644 (umask 022), owned by root when the daemon runs as
//! root. Unlike clamd, a symlink in place of the file is refused instead of
//! followed (root would otherwise overwrite the link's target).
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A written PID file; removed on drop if it still holds our pid.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    content: String,
}

impl PidFile {
    /// Writes this process's pid to `path`. Errors name the key.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let shown = path.display();
        let fail = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot write the PID file {shown} (service.pid-file, clamd's PidFile): {e}"
                ),
            )
        };
        let content = format!("{}\n", std::process::id());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(fail)?;
        f.write_all(content.as_bytes()).map_err(fail)?;
        if nix::unistd::geteuid().is_root() {
            // A file left by another user keeps its owner when rewritten.
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .map_err(|e| fail(e.into()))?;
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            content,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file still holds our pid (not removed, not rewritten by
    /// another daemon).
    pub fn is_ours(&self) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.content)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clamd.pid");
        let f = PidFile::create(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(f);
        assert!(!p.exists());
        // A symlink is not followed.
        std::os::unix::fs::symlink(dir.path().join("target"), &p).unwrap();
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("service.pid-file"), "{err}");
        assert!(!dir.path().join("target").exists());
    }
}
