//! The files the root supervisor makes outside its private temporary tree:
//! the Unix socket it binds itself (`listen.unix`), and, at exit, the
//! removal of that socket and of the PID file (`crate::pidfile` writes it).
//! Their directories may belong to another user (Debian's `/run/clamav`
//! belongs to clamav), so nothing here acts on a name after making it.
//!
//! The socket file is created by `bind()` with its final mode, owner and
//! group, and nothing is done to its path afterwards (an earlier version
//! bound as root and then chmod'ed the path, which a user who may write the
//! directory could swap for a symlink to `/etc/shadow`). On a thread of its
//! own ([`bind_unix`]):
//!
//! 1. the directory is reached with [`safe_fs::open_dir`], trusting root
//!    and the socket's owner; missing directories are made (mode 0755, the
//!    last one the socket owner's);
//! 2. the thread gets a file-system context of its own (`unshare(CLONE_FS)`:
//!    working directory and umask are then per thread), moves into the
//!    directory by descriptor (`fchdir`) and sets its umask to 0;
//! 3. it takes the socket owner's file-system identity (`setfsuid`,
//!    `setfsgid`, the owner's groups: [`creds`]) — so the kernel checks the
//!    directory as that user, as clamd binds as `User`, and root's
//!    capabilities are gone from the thread while it acts;
//! 4. a stale socket at the name is removed only if it is a socket of the
//!    owner's that no daemon answers on; the check connects through
//!    `/proc/thread-self/fd/N` of an `O_PATH|O_NOFOLLOW` descriptor of that
//!    very file, so a swapped name cannot make it connect anywhere else;
//! 5. `fchmod` on the socket descriptor before `bind` sets the mode the
//!    file is created with (Linux creates it with the socket inode's mode
//!    masked by the umask, here 0), `bind` creates it as the owner and group
//!    (fsuid, fsgid), and the name is then only looked at, to record which
//!    file it is.
//!
//! At exit ([`remove_at_exit`]) a file is removed through its directory's
//! descriptor, as the directory's owner, and only if its name still stands
//! for the very file made ([`safe_fs::Made`]).
#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode};
use rustix::io::Errno;
use rustix::net::{self as socket, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::broker::creds::{self, FsIdentity};
use crate::safe_fs::{self, Dir, FileId, Made};
use crate::socket_setup::SocketSpec;

/// The longest name `bind` takes relative to the directory (`sun_path`
/// holds 108 bytes with its terminating zero).
const MAX_NAME: usize = 107;

/// A bound and listening Unix socket, and the file it made.
#[derive(Debug)]
pub struct BoundUnix {
    pub listener: std::os::unix::net::UnixListener,
    pub made: Made,
}

fn error(path: &Path, kind: io::ErrorKind, message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        kind,
        format!(
            "cannot listen on {}: {message} (listen.unix)",
            path.display()
        ),
    )
}

/// Creates the Unix socket `path` with the mode, owner and group of `spec`
/// and listens on it (see the module's text for how).
pub fn bind_unix(path: &Path, spec: &SocketSpec) -> io::Result<BoundUnix> {
    let (dir, name) = safe_fs::split(path)?;
    if name.len() > MAX_NAME {
        return Err(error(
            path,
            io::ErrorKind::InvalidInput,
            format!("the file name is longer than {MAX_NAME} bytes"),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    let create = safe_fs::Create {
        mode: 0o755,
        owner: Some((spec.uid, spec.gid)),
    };
    let dir = safe_fs::open_dir(&dir, &[me, spec.uid], Some(&create))
        .map_err(|e| e.with_key("listen.unix"))?;
    let dm = dir.meta()?;
    // Whoever may write the directory could rename the socket away and
    // bind one of theirs at its name: clients would talk to it (fifth
    // outside review, with a directory of mode 0777). A directory of
    // another single user (Debian's /run/clamav, clamav's) is what
    // `open_dir` judged: root acts in it through descriptors only.
    if let Some(exposure @ safe_fs::Exposure::Writable { .. }) =
        safe_fs::exposure(dm, spec.uid, &[me, spec.uid])
    {
        return Err(error(
            path,
            io::ErrorKind::PermissionDenied,
            format!(
                "{} {exposure}, so another user could put a socket of their own at this name and answer the clients (listen.unix): use a directory only root or the socket's owner may write, such as /run/clamsentry",
                dir.path().display()
            ),
        ));
    }
    // Files made in a set-group-ID directory get the directory's group,
    // whatever the creator's.
    if dm.mode & 0o2000 != 0 && dm.gid != spec.gid {
        return Err(error(
            path,
            io::ErrorKind::InvalidInput,
            format!(
                "{} is set-group-ID with group {}, so the socket would get that group, not {} (listen.unix-group): set listen.unix-group to {}, or remove the bit (chmod g-s)",
                dir.path().display(),
                dm.gid,
                spec.gid,
                dm.gid
            ),
        ));
    }
    std::thread::scope(|s| {
        s.spawn(|| bind_as_owner(path, dir, name, spec))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the binding thread panicked")))
    })
}

/// Steps 2 to 5, on a thread that ends afterwards.
fn bind_as_owner(
    path: &Path,
    dir: Dir,
    name: OsString,
    spec: &SocketSpec,
) -> io::Result<BoundUnix> {
    // SAFETY: CLONE_FS only gives this thread its own copy of the working
    // directory, root and umask; the descriptor table and memory stay
    // shared, so no descriptor or pointer of another thread is affected.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
    rustix::process::fchdir(dir.fd())?;
    rustix::process::umask(Mode::empty());
    let own = creds::Own::capture()?;
    let owner = FsIdentity {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
    };
    let _acting = creds::act_as(&own, &owner).map_err(|e| {
        error(
            path,
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot create the socket as uid {} gid {} (listen.unix-owner, listen.unix-group): {e}; a daemon not started as root can only give it its own user and group",
                spec.uid, spec.gid
            ),
        )
    })?;
    remove_stale(path, &dir, &name, spec)?;
    let sock = socket::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::fs::fchmod(&sock, Mode::from_raw_mode(spec.mode))?;
    let addr = SocketAddrUnix::new(Path::new(&name))?;
    socket::bind(&sock, &addr).map_err(|e| {
        let e = io::Error::from(e);
        let advice = match e.kind() {
            io::ErrorKind::PermissionDenied => format!(
                ": the socket is created by its owner, uid {} (listen.unix-owner; clamd creates it as User), who must be allowed to create files in {}",
                spec.uid,
                dir.path().display()
            ),
            io::ErrorKind::AddrInUse => " (something was put there meanwhile)".to_string(),
            _ => String::new(),
        };
        error(path, e.kind(), format!("{e}{advice}"))
    })?;
    let backlog = i32::try_from(spec.backlog).unwrap_or(i32::MAX);
    socket::listen(&sock, backlog)?;
    // Which file the name stands for now: the socket just made, unless
    // someone who may write the directory replaced it already.
    let st = dir.stat(&name)?.ok_or_else(|| {
        error(
            path,
            io::ErrorKind::NotFound,
            "it was removed right after it was made",
        )
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket
        || st.st_uid != spec.uid
        || st.st_gid != spec.gid
    {
        return Err(error(
            path,
            io::ErrorKind::AlreadyExists,
            "it was replaced right after it was made: another user writes its directory",
        ));
    }
    let made = Made::new(dir, name, FileId::of(&st));
    Ok(BoundUnix {
        listener: std::os::unix::net::UnixListener::from(sock),
        made,
    })
}

/// Removes a socket left at the name by an earlier run, acting as the
/// socket's owner (see the module's text). Anything else stops the start.
fn remove_stale(path: &Path, dir: &Dir, name: &OsStr, spec: &SocketSpec) -> io::Result<()> {
    let Some(st) = dir.stat(name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(error(
            path,
            io::ErrorKind::AlreadyExists,
            format!(
                "it exists and is {}, not a socket: remove it or choose another listen.unix",
                safe_fs::kind(&st)
            ),
        ));
    }
    if st.st_uid != spec.uid {
        return Err(error(
            path,
            io::ErrorKind::AlreadyExists,
            format!(
                "a socket of uid {} is there, not one of the socket's owner (uid {}, listen.unix-owner) left by an earlier run: remove it if no daemon uses it, or choose another listen.unix",
                st.st_uid, spec.uid
            ),
        ));
    }
    // Pin that file, then connect to it and nothing else.
    let pinned: OwnedFd = rustix::fs::openat(
        dir.fd(),
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let pst = rustix::fs::fstat(&pinned)?;
    if FileId::of(&pst) != FileId::of(&st) {
        return Err(error(
            path,
            io::ErrorKind::AlreadyExists,
            "it changed while it was checked: another user writes its directory",
        ));
    }
    let probe = socket::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let via = format!("/proc/thread-self/fd/{}", pinned.as_raw_fd());
    match socket::connect(&probe, &SocketAddrUnix::new(via.as_str())?) {
        Ok(()) => {
            return Err(error(
                path,
                io::ErrorKind::AddrInUse,
                "it is in use by another process (is clamd still running?): stop it or choose another listen.unix",
            ))
        }
        Err(Errno::CONNREFUSED) => {}
        Err(e) => {
            return Err(error(
                path,
                io::Error::from(e).kind(),
                format!("cannot tell whether a daemon still answers on the socket there ({e}; through {via}, which needs /proc): remove it if none does"),
            ))
        }
    }
    drop(probe);
    let again = dir.stat(name)?;
    if again.is_some_and(|a| FileId::of(&a) == FileId::of(&st)) {
        match rustix::fs::unlinkat(dir.fd(), name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(error(
                    path,
                    io::Error::from(e).kind(),
                    format!("cannot remove the stale socket there: {e}"),
                ))
            }
        }
    }
    Ok(())
}

/// Removes a file the daemon made at start (its Unix socket, its PID file)
/// when it stops, if its name still stands for that file. By then the
/// supervisor has given up CAP_DAC_OVERRIDE, so it cannot unlink in a
/// directory it may not write, such as Debian's `/run/clamav` (owned by
/// clamav, mode 0755; clamd, running as clamav, removes its socket there):
/// it acts as the directory's owner, on this thread only ([`creds`]),
/// never doing more than that user could. A failure is logged, not fatal.
pub fn remove_at_exit(made: &Made, what: &str) {
    let result = made.dir().meta().and_then(|owner| {
        let own = creds::Own::capture()?;
        let who = FsIdentity {
            uid: owner.uid,
            gid: owner.gid,
            groups: vec![owner.gid],
        };
        let _acting = creds::act_as(&own, &who)?;
        made.remove()
    });
    match result {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the {what} {}: {e}", made.path().display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn spec(mode: u32) -> SocketSpec {
        let gid = rustix::process::getegid().as_raw();
        SocketSpec {
            mode,
            uid: rustix::process::geteuid().as_raw(),
            gid,
            groups: vec![gid],
            backlog: 16,
        }
    }

    fn dir() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    #[test]
    fn made_with_its_mode_whatever_the_umask() {
        let t = dir();
        for mode in [0o600, 0o660, 0o666, 0o777] {
            let p = t.path().join(format!("s{mode:o}"));
            let b = bind_unix(&p, &spec(mode)).unwrap();
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(m.file_type().is_socket());
            assert_eq!(m.mode() & 0o7777, mode);
            assert!(b.made.is_there());
            std::os::unix::net::UnixStream::connect(&p).unwrap();
            remove_at_exit(&b.made, "Unix socket");
            assert!(!p.exists());
        }
    }

    #[test]
    fn stale_sockets_go_live_ones_and_other_files_stay() {
        let t = dir();
        let p = t.path().join("s");
        let live = bind_unix(&p, &spec(0o660)).unwrap();
        let err = bind_unix(&p, &spec(0o660)).unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
        assert!(err.contains("(listen.unix)"), "{err}");
        assert!(p.exists());
        drop(live.listener);
        // Stale now: replaced.
        let again = bind_unix(&p, &spec(0o660)).unwrap();
        assert!(again.made.is_there());
        drop(again);
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "not a socket").unwrap();
        let err = bind_unix(&p, &spec(0o660)).unwrap_err().to_string();
        assert!(err.contains("is a regular file, not a socket"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"not a socket");
        // A symlink at the name is not followed to what it names.
        std::fs::remove_file(&p).unwrap();
        let target = t.path().join("target");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = bind_unix(&p, &spec(0o660)).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn missing_directories_are_made() {
        let t = dir();
        let p = t.path().join("a/b/s");
        let b = bind_unix(&p, &spec(0o660)).unwrap();
        assert_eq!(
            std::fs::metadata(t.path().join("a/b")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(b.made.path(), p);
    }

    #[test]
    fn a_setgid_directory_with_another_group_is_refused() {
        let t = dir();
        let d = t.path().join("g");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o2755)).unwrap();
        let mut s = spec(0o660);
        s.gid = s.gid.wrapping_add(1);
        let err = bind_unix(&d.join("s"), &s).unwrap_err().to_string();
        assert!(err.contains("set-group-ID"), "{err}");
        assert!(!d.join("s").exists());
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        // Fifth outside review: another user renamed the socket away and
        // bound one of theirs; clients got its answers.
        let t = dir();
        for (name, mode) in [("w", 0o777), ("g", 0o775)] {
            let d = t.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = bind_unix(&d.join("s"), &spec(0o666))
                .unwrap_err()
                .to_string();
            assert!(err.contains("may write it"), "{err}");
            assert!(err.contains("listen.unix"), "{err}");
            assert!(!d.join("s").exists());
        }
    }
}
