//! Acting on the file system where someone else may write, without ever
//! following a name that someone could swap.
//!
//! The supervisor runs as root and makes a few things in directories other
//! users may write: the Unix socket (Debian's `/run/clamav` belongs to
//! clamav), the PID file, the private temporary tree under `/tmp`. A name
//! in such a directory can be replaced at any moment
//! (`renameat2(RENAME_EXCHANGE)` swaps a fresh file for a symlink between
//! two system calls), so root never does anything to such a name after it
//! made it: every object is created with its final mode and owner, or
//! changed through a descriptor that was checked to be the object root just
//! made, and the directory itself is reached by [`open_dir`], one component
//! at a time, so that the directory root acts in is the configured one.
//!
//! The one rule (a pure function, [`exposure`]): an entry of a directory
//! can be replaced by whoever may write the directory, except that the
//! sticky bit leaves an entry to its owner and the directory's owner. So
//! an entry is safe when the directory belongs to a trusted user (root, and
//! whoever the caller names: the socket's owner, the service user) and
//! neither its group nor others may write it, or when it is sticky, owned
//! by a trusted user, and the entry belongs to a trusted user too (`/tmp`
//! and root's entries in it). Group write counts as someone else: the
//! kernel cannot say who is in a group.
//!
//! Each object gets an identity ([`FileId`]: device and inode) when it is
//! made; whatever is removed later is removed only if that identity is
//! still at its name ([`Made::remove`]).
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// Symbolic links followed in one walk at most (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Which object a name stood for when it was made: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(st: &Stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// The parts of a `stat` the rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits and file type (`st_mode`).
    pub mode: u32,
}

impl Meta {
    pub fn of(st: &Stat) -> Meta {
        Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
        }
    }
}

/// Who besides the trusted users could replace an entry of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The directory belongs to this user, who may do anything in it.
    Owner(u32),
    /// The directory's group (this gid) or everyone may write it, and no
    /// sticky bit keeps the entry to its owner.
    Writable { mode: u32, gid: u32 },
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::Owner(uid) => write!(f, "it belongs to uid {uid}"),
            Exposure::Writable { mode, .. } if mode & 0o002 != 0 => {
                write!(f, "everyone may write it (mode {:04o})", mode & 0o7777)
            }
            Exposure::Writable { mode, gid } => {
                write!(f, "group {gid} may write it (mode {:04o})", mode & 0o7777)
            }
        }
    }
}

/// The rule: could a user outside `trusted` (root is always trusted)
/// replace an entry owned by `entry_uid` in the directory `dir`? `None`
/// when only trusted users could.
pub fn exposure(dir: Meta, entry_uid: u32, trusted: &[u32]) -> Option<Exposure> {
    let is_trusted = |uid: u32| uid == 0 || trusted.contains(&uid);
    if !is_trusted(dir.uid) {
        return Some(Exposure::Owner(dir.uid));
    }
    if dir.mode & 0o022 == 0 {
        return None;
    }
    // Sticky: only the entry's owner, the directory's owner (trusted, see
    // above) and CAP_FOWNER may rename or remove the entry.
    if dir.mode & 0o1000 != 0 && is_trusted(entry_uid) {
        return None;
    }
    Some(Exposure::Writable {
        mode: dir.mode,
        gid: dir.gid,
    })
}

/// What kind of object a `stat` describes, for messages ("is a FIFO").
pub fn kind(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

/// Why [`open_dir`] would not hand out the directory.
#[derive(Debug)]
pub enum WalkError {
    /// Someone outside the trusted users could replace `entry`, so the
    /// walk cannot know which directory it reaches.
    Exposed {
        entry: PathBuf,
        exposure: Exposure,
    },
    NotADirectory(PathBuf, &'static str),
    TooManyLinks(PathBuf),
    Io(PathBuf, io::Error),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Exposed { entry, exposure } => {
                let dir = entry.parent().unwrap_or(Path::new("/"));
                write!(
                    f,
                    "another user could replace {} with a link to anywhere: {} {exposure}",
                    entry.display(),
                    dir.display()
                )
            }
            WalkError::NotADirectory(p, what) => {
                write!(f, "{} is {what}, not a directory", p.display())
            }
            WalkError::TooManyLinks(p) => {
                write!(f, "{}: too many levels of symbolic links", p.display())
            }
            WalkError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl WalkError {
    /// The error as an `io::Error` whose message names the setting.
    pub fn with_key(self, key: &str) -> io::Error {
        let kind = match &self {
            WalkError::Io(_, e) => e.kind(),
            WalkError::Exposed { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::InvalidInput,
        };
        let advice = match &self {
            WalkError::Exposed { .. } => {
                ": use a directory that only root (or the user named for it) may change, or make that directory sticky"
            }
            _ => "",
        };
        io::Error::new(kind, format!("{self}{advice} ({key})"))
    }
}

/// Directories [`open_dir`] may make when they are missing.
#[derive(Debug, Clone, Copy)]
pub struct Create {
    /// Mode of every directory made (exactly: set on the descriptor).
    pub mode: u32,
    /// Owner and group of the last directory (the one asked for), when it
    /// is made; the ones above it stay root's.
    pub owner: Option<(u32, u32)>,
}

/// A directory reached by [`open_dir`]: an `O_PATH` descriptor, usable as
/// the directory of every `*at` call, and the path it was asked for (for
/// messages and for children that need a path).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `O_PATH` descriptor, for a caller that keeps only it.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn meta(&self) -> io::Result<Meta> {
        Ok(Meta::of(&rustix::fs::fstat(&self.fd)?))
    }

    /// What stands at `name` in this directory, never following a link.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn path_fd(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a directory that is ours to change (not `O_PATH`): for `fchmod`
/// and `fchown` on something just made.
pub fn open_own_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `path` by walking it from `/` one component at a
/// time with `O_PATH|O_NOFOLLOW`, checking at each step with [`exposure`]
/// that only root and `trusted` could have replaced the entry just
/// crossed. Symbolic links are followed (Debian's `/var/run` is one) only
/// under the same rule, at most 40 of them. A relative path starts at the
/// current directory. With `create`, missing directories are made (by the
/// caller's identity, mode `create.mode` exactly; the last one given
/// `create.owner`), each through a descriptor checked to be the directory
/// just made.
pub fn open_dir(path: &Path, trusted: &[u32], create: Option<&Create>) -> Result<Dir, WalkError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| WalkError::Io(path.to_path_buf(), e))?
            .join(path)
    };
    let io_err = |p: &Path, e: Errno| WalkError::Io(p.to_path_buf(), e.into());
    let root = || -> Result<OwnedFd, WalkError> {
        rustix::fs::openat(
            CWD,
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(Path::new("/"), e))
    };
    let mut todo: std::collections::VecDeque<OsString> = components(&absolute).collect();
    let mut cur = root()?;
    // The path of `cur` as walked (symlinks replaced by their targets).
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            cur = rustix::fs::openat(
                &cur,
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&at, e))?;
            at.pop();
            continue;
        }
        let entry = at.join(&name);
        let last = todo.is_empty();
        let mut made = false;
        let dir_meta = Meta::of(&rustix::fs::fstat(&cur).map_err(|e| io_err(&at, e))?);
        let fd = match path_fd(cur.as_fd(), &name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create.is_some() => {
                // Only where our own new entry would be safe.
                let me = rustix::process::geteuid().as_raw();
                if let Some(exposure) = exposure(dir_meta, me, trusted) {
                    return Err(WalkError::Exposed { entry, exposure });
                }
                let mode = create.map_or(0o755, |c| c.mode);
                match rustix::fs::mkdirat(&cur, &*name, Mode::from_raw_mode(mode)) {
                    Ok(()) => made = true,
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err(&entry, e)),
                }
                path_fd(cur.as_fd(), &name).map_err(|e| io_err(&entry, e))?
            }
            Err(e) => return Err(io_err(&entry, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&entry, e))?;
        if let Some(exposure) = exposure(dir_meta, st.st_uid, trusted) {
            return Err(WalkError::Exposed { entry, exposure });
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                if made {
                    let owner = create.and_then(|c| c.owner).filter(|_| last);
                    finish_made_dir(
                        cur.as_fd(),
                        &name,
                        &st,
                        create.map_or(0o755, |c| c.mode),
                        owner,
                    )
                    .map_err(|e| WalkError::Io(entry.clone(), e))?;
                }
                cur = fd;
                at = entry;
            }
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(WalkError::TooManyLinks(path.to_path_buf()));
                }
                let target =
                    rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| io_err(&entry, e))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(c);
                }
                if target.is_absolute() {
                    cur = root()?;
                    at = PathBuf::from("/");
                }
            }
            _ => return Err(WalkError::NotADirectory(entry, kind(&st))),
        }
    }
    Ok(Dir {
        fd: cur,
        path: absolute,
    })
}

/// The parts of a path to walk: names and `..` (`.` and the root dropped).
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Gives a directory just made by `mkdirat` its exact mode and, if asked,
/// its owner, on a descriptor checked to be that directory (the object the
/// walk saw, owned by us).
fn finish_made_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    seen: &Stat,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let fd = open_own_dir(parent, name)?;
    let st = rustix::fs::fstat(&fd)?;
    if FileId::of(&st) != FileId::of(seen) || st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::other(
            "the directory just made was replaced: someone else writes its parent",
        ));
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    Ok(())
}

/// Opens `path` for reading only if its last component is a regular file,
/// never a link, a FIFO or a device: an `O_PATH|O_NOFOLLOW` descriptor is
/// checked first, then reopened through `/proc/self/fd/N`, so the object
/// read is the one checked, and the open can neither block nor wake a
/// driver. For a file root reads in a directory another user may write
/// (`clamd -V` reads `daily.cvd` in clamav's `/var/lib/clamav`).
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let pinned = rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&pinned)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {}, not a regular file", path.display(), kind(&st)),
        ));
    }
    let fd = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pinned)),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    if FileId::of(&rustix::fs::fstat(&fd)?) != FileId::of(&st) {
        return Err(io::Error::other(format!(
            "{} changed while it was opened",
            path.display()
        )));
    }
    Ok(std::fs::File::from(fd))
}

/// Splits a file's path into its directory and its name; the name must be
/// a plain name (not `..`, not empty).
pub fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not end in a file name", path.display()),
            ))
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// `n` characters from `[A-Za-z0-9]` no other user can predict (SipHash
/// keyed by the standard library from the kernel's random numbers, over a
/// counter, the pid and the time).
pub fn random_chars(n: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let keys = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(n);
    let mut word = 0u64;
    let mut left = 0;
    for _ in 0..n {
        if left == 0 {
            let mut h = keys.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            h.write_u32(std::process::id());
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(t.as_nanos());
            }
            word = h.finish();
            left = 10;
        }
        out.push(ALPHABET[(word % 62) as usize] as char);
        word /= 62;
        left -= 1;
    }
    out
}

/// An object the daemon made at `name` in `dir`, known by its identity:
/// removed later only if the name still stands for it.
#[derive(Debug)]
pub struct Made {
    dir: Dir,
    name: OsString,
    id: FileId,
    path: PathBuf,
}

impl Made {
    pub fn new(dir: Dir, name: OsString, id: FileId) -> Made {
        let path = dir.path().join(&name);
        Made {
            dir,
            name,
            id,
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    pub fn id(&self) -> FileId {
        self.id
    }

    /// Whether the name still stands for the object made.
    pub fn is_there(&self) -> bool {
        matches!(self.dir.stat(&self.name), Ok(Some(st)) if FileId::of(&st) == self.id)
    }

    /// Removes the name if it still stands for the object made; `Ok(false)`
    /// when it does not (removed or replaced by someone else: left alone).
    /// Between the check and the `unlinkat` only someone who may write the
    /// directory can change the name, and then this removes a name that
    /// user could have removed.
    pub fn remove(&self) -> io::Result<bool> {
        if !self.is_there() {
            return Ok(false);
        }
        match rustix::fs::unlinkat(self.dir.fd(), &*self.name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Entries removed by [`empty_tree`] at most; a tree larger than this is
/// left for the next try (it can only come from a process that may write
/// the tree, and removing it must not hold the caller forever).
pub const EMPTY_BUDGET: u64 = 1_000_000;

/// Depth [`empty_tree`] descends to; deeper directories are first moved up
/// to the top, so that descriptors and stack stay bounded however deep the
/// tree.
const EMPTY_DEPTH: usize = 16;

/// Removes everything inside the directory `top` (an open directory, not
/// `O_PATH`), through descriptors only: each entry is unlinked by name in
/// its parent's descriptor, each subdirectory opened with `O_NOFOLLOW`, so
/// nothing outside the tree is reached whatever is renamed meanwhile. The
/// caller chooses the identity (the supervisor takes the tree owner's, so
/// it never does more than that user could). A directory its owner made
/// unwritable is given mode 0700 first. Returns the entries removed.
pub fn empty_tree(top: BorrowedFd<'_>) -> io::Result<u64> {
    let mut budget = EMPTY_BUDGET;
    empty_level(top, top, 0, &mut budget)?;
    Ok(EMPTY_BUDGET - budget)
}

/// Up to `most` names in the directory `dir` (an open directory), without
/// `.` and `..`.
pub fn list(dir: BorrowedFd<'_>, most: usize) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(OsStr::from_bytes(name).to_os_string());
        if out.len() >= most {
            break;
        }
    }
    Ok(out)
}

fn empty_level(
    top: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    depth: usize,
    budget: &mut u64,
) -> io::Result<()> {
    let mut fixed_mode = false;
    loop {
        let batch = list(dir, 256)?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut progress = false;
        for name in batch {
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| io::Error::other(format!("more than {EMPTY_BUDGET} entries")))?;
            match rustix::fs::unlinkat(dir, &*name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {
                    progress = true;
                    continue;
                }
                // Linux answers EISDIR for a directory.
                Err(Errno::ISDIR) => {}
                Err(Errno::ACCESS) | Err(Errno::PERM) if !fixed_mode => {
                    // The directory's owner took its own write permission:
                    // give it back (we act as that owner) and read again.
                    rustix::fs::fchmod(dir, Mode::from_raw_mode(0o700))?;
                    fixed_mode = true;
                    progress = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            if depth + 1 >= EMPTY_DEPTH {
                // Too deep: move it to the top under a new name; the top's
                // loop empties it later.
                let new = OsString::from(format!(".deep.{}", random_chars(12)));
                rustix::fs::renameat(dir, &*name, top, &*new)?;
                progress = true;
                continue;
            }
            let child = match open_own_dir(dir, &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    // Its owner made it unreadable: only a directory gets
                    // its mode back (checked without following a link).
                    let st = rustix::fs::statat(dir, &*name, AtFlags::SYMLINK_NOFOLLOW)?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        return Err(e);
                    }
                    rustix::fs::chmodat(dir, &*name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
                    open_own_dir(dir, &name)?
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    progress = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            empty_level(top, child.as_fd(), depth + 1, budget)?;
            match rustix::fs::unlinkat(dir, &*name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => progress = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !progress {
            return Err(io::Error::other("entries that cannot be removed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DIR: u32 = 0o040000;

    fn meta(uid: u32, mode: u32) -> Meta {
        Meta {
            uid,
            gid: 100,
            mode: DIR | mode,
        }
    }

    #[test]
    fn the_rule() {
        // Root's own directories.
        assert_eq!(exposure(meta(0, 0o755), 1000, &[]), None);
        // A directory of the trusted user (Debian's /run/clamav for clamav).
        assert_eq!(exposure(meta(109, 0o755), 109, &[109]), None);
        // ... is someone else's for everyone else.
        assert_eq!(
            exposure(meta(109, 0o755), 0, &[]),
            Some(Exposure::Owner(109))
        );
        // Group write is someone else.
        assert_eq!(
            exposure(meta(0, 0o775), 0, &[]),
            Some(Exposure::Writable {
                mode: DIR | 0o775,
                gid: 100
            })
        );
        // /tmp: root's entries are safe, other users' are not.
        assert_eq!(exposure(meta(0, 0o1777), 0, &[]), None);
        assert_eq!(exposure(meta(0, 0o1777), 42, &[42]), None);
        assert!(exposure(meta(0, 0o1777), 1000, &[]).is_some());
        // Everyone may write, not sticky: nothing is safe.
        assert!(exposure(meta(0, 0o777), 0, &[]).is_some());
        // Sticky but owned by someone else: the owner may do anything.
        assert_eq!(
            exposure(meta(1000, 0o1777), 0, &[]),
            Some(Exposure::Owner(1000))
        );
    }

    #[test]
    fn messages_say_who() {
        let e = WalkError::Exposed {
            entry: PathBuf::from("/srv/x/sock"),
            exposure: Exposure::Writable {
                mode: DIR | 0o777,
                gid: 0,
            },
        };
        assert_eq!(
            e.to_string(),
            "another user could replace /srv/x/sock with a link to anywhere: /srv/x everyone may write it (mode 0777)"
        );
        let io = WalkError::Exposed {
            entry: PathBuf::from("/srv/x"),
            exposure: Exposure::Owner(65534),
        }
        .with_key("listen.unix");
        assert!(io.to_string().ends_with("(listen.unix)"), "{io}");
        assert!(io.to_string().contains("it belongs to uid 65534"), "{io}");
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    #[test]
    fn walks_links_and_makes_missing_directories() {
        let t = tree();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
        let d = open_dir(
            &t.path().join("link/a/b"),
            &[],
            Some(&Create {
                mode: 0o750,
                owner: None,
            }),
        )
        .unwrap();
        let st = rustix::fs::fstat(d.fd()).unwrap();
        let made = std::fs::metadata(real.join("a/b")).unwrap();
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&made));
        assert_eq!(made.permissions().mode() & 0o7777, 0o750);
        assert_eq!(d.path(), t.path().join("link/a/b"));
        // Without `create`, a missing directory is an error.
        let e = open_dir(&t.path().join("missing"), &[], None).unwrap_err();
        assert!(
            matches!(e, WalkError::Io(_, ref io) if io.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
        // `..` after a link goes up from where the link led.
        std::fs::create_dir(real.join("c")).unwrap();
        let d = open_dir(&t.path().join("link/a/../c"), &[], None).unwrap();
        let st = rustix::fs::fstat(d.fd()).unwrap();
        assert_eq!(
            st.st_ino,
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(real.join("c")).unwrap())
        );
        // A file on the way.
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let e = open_dir(&t.path().join("f/x"), &[], None).unwrap_err();
        assert!(
            matches!(e, WalkError::NotADirectory(_, "a regular file")),
            "{e}"
        );
        // A loop.
        std::os::unix::fs::symlink("loop", t.path().join("loop")).unwrap();
        let e = open_dir(&t.path().join("loop"), &[], None).unwrap_err();
        assert!(matches!(e, WalkError::TooManyLinks(_)), "{e}");
    }

    #[test]
    fn an_entry_others_could_replace_is_refused() {
        let t = tree();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(open.join("d")).unwrap();
        // The open directory itself may be used (its entry is safe)...
        open_dir(&open, &[], None).unwrap();
        // ...but not what is reached through it.
        let e = open_dir(&open.join("d"), &[], None).unwrap_err();
        assert!(matches!(e, WalkError::Exposed { .. }), "{e}");
        // Nothing is made there either.
        let create = Create {
            mode: 0o755,
            owner: None,
        };
        let e = open_dir(&open.join("new"), &[], Some(&create)).unwrap_err();
        assert!(matches!(e, WalkError::Exposed { .. }), "{e}");
        assert!(!open.join("new").exists());
        // Sticky: root's own entry is safe.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        if rustix::process::geteuid().is_root() {
            open_dir(&open.join("d"), &[], None).unwrap();
        }
    }

    #[test]
    fn made_objects_are_removed_only_while_they_are_there() {
        let t = tree();
        let dir = open_dir(t.path(), &[], None).unwrap();
        std::fs::write(t.path().join("p"), b"1").unwrap();
        let st = dir.stat(OsStr::new("p")).unwrap().unwrap();
        let made = Made::new(dir, OsString::from("p"), FileId::of(&st));
        assert!(made.is_there());
        // Replaced: left alone.
        std::fs::rename(t.path().join("p"), t.path().join("q")).unwrap();
        std::fs::write(t.path().join("p"), b"2").unwrap();
        assert!(!made.is_there());
        assert!(!made.remove().unwrap());
        assert!(t.path().join("p").exists());
        // Back: removed.
        std::fs::rename(t.path().join("q"), t.path().join("p")).unwrap();
        assert!(made.remove().unwrap());
        assert!(!t.path().join("p").exists());
        assert!(!made.remove().unwrap());
    }

    #[test]
    fn trees_of_any_depth_are_emptied_with_bounded_descriptors() {
        let t = tree();
        let top = t.path().join("top");
        std::fs::create_dir(&top).unwrap();
        // 200 levels, a file, a symlink out of the tree, a locked directory.
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let mut p = top.clone();
        for i in 0..200 {
            p.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("d0/out")).unwrap();
        std::os::unix::fs::symlink(t.path(), top.join("d0/outdir")).unwrap();
        let locked = top.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("f"), b"x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let fd = open_own_dir(CWD, top.as_os_str()).unwrap();
        let removed = empty_tree(fd.as_fd()).unwrap();
        assert!(removed >= 204, "{removed}");
        assert_eq!(std::fs::read_dir(&top).unwrap().count(), 0);
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn only_regular_files_are_opened() {
        let t = tree();
        let f = t.path().join("f");
        std::fs::write(&f, b"data").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_regular(&f).unwrap(), &mut text).unwrap();
        assert_eq!(text, "data");
        let fifo = t.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let e = open_regular(&fifo).unwrap_err();
        assert!(
            e.to_string().ends_with("is a FIFO, not a regular file"),
            "{e}"
        );
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open_regular(&link).is_err());
        assert!(open_regular(Path::new("/dev/null")).is_err());
    }

    #[test]
    fn random_names_differ() {
        let a = random_chars(12);
        let b = random_chars(12);
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
