//! Resolving a client's path with descriptors, as the client.
//!
//! The walk goes component by component: each step is
//! `openat(directory, name, O_PATH|O_NOFOLLOW)` on the descriptor of the
//! step before, made while the broker thread acts as the client
//! ([`super::creds`]), so the kernel checks search permission on every
//! directory the walk passes through. A symlink is never followed by the
//! kernel: the walk reads it and continues with its target, so it knows the
//! canonical path of everything it holds. Then:
//!
//! * **scan roots**: the canonical path must lie inside `policy.scan-roots`,
//!   and the opened descriptor must still be at that path
//!   (`/proc/self/fd/N`); otherwise the answer is "missing".
//! * **open**: regular files and directories are opened for reading on the
//!   descriptor of their own parent directory (`O_NOFOLLOW`), still as the
//!   client, and must be the object the walk found (device and inode):
//!   there is no window between the decision and the open because the open
//!   is the decision. Devices, FIFOs and sockets are never opened.
//! * **symlinks**: intermediate components are followed as any program's
//!   path would be (as the client: `/var/run/x` works); a final symlink only
//!   where the configuration says so (`scan.follow-file-symlinks`,
//!   `scan.follow-directory-symlinks`), and then by the same walk, inside the
//!   roots, as the client. At most 40 symlinks per path, as the kernel.
//!
//! Everything here is safe code over `rustix`'s descriptor-based calls.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::ipc::messages::{FileKind, Meta};

/// The reason of a refusal the kernel made with the client's identity.
pub const CLIENT_ACCESS: &str = "the client's own access";

/// Symlinks one resolution may pass through (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// What the configuration lets the walk do.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Canonical scan roots.
    pub roots: Vec<Vec<u8>>,
    pub follow_dirs: bool,
    pub follow_files: bool,
    /// Where relative paths start (the daemon's working directory, as
    /// clamd resolves them), canonical.
    pub cwd: Vec<u8>,
    /// The device of `/proc`, whose files and directories are never
    /// opened: resolved in the root supervisor, `/proc/self` is root's own
    /// process, and the kernel lets a process read its own entries
    /// (`maps`, `fd/`, …) whatever its file identity. clamd skips /proc's
    /// files in walks; the broker refuses them, and directories too.
    pub proc_dev: Option<u64>,
}

impl Rules {
    pub fn new(roots: &[PathBuf], follow_dirs: bool, follow_files: bool) -> Rules {
        let roots = roots
            .iter()
            .filter_map(|r| match std::fs::canonicalize(r) {
                Ok(c) => Some(c.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    tracing::warn!(root = %r.display(), error = %e, "policy.scan-roots: cannot resolve, ignored");
                    None
                }
            })
            .collect();
        let cwd = std::env::current_dir()
            .map(|d| d.as_os_str().as_bytes().to_vec())
            .unwrap_or_else(|_| b"/".to_vec());
        let proc_dev = rustix::fs::stat("/proc").ok().map(|st| st.st_dev);
        Rules {
            roots,
            follow_dirs,
            follow_files,
            cwd,
            proc_dev,
        }
    }

    /// Is `canonical` one of the roots or below one?
    pub fn inside(&self, canonical: &[u8]) -> bool {
        self.roots.iter().any(|root| {
            root.as_slice() == b"/"
                || canonical == root.as_slice()
                || (canonical.starts_with(root) && canonical.get(root.len()) == Some(&b'/'))
        })
    }

    fn follows_any(&self) -> bool {
        self.follow_dirs || self.follow_files
    }
}

/// What a path or an entry turned out to be, opened for the client.
#[derive(Debug)]
pub enum Found {
    /// A regular file, open for reading.
    File { fd: OwnedFd, size: u64, dev: u64 },
    /// A directory, open for listing; `path` is canonical.
    Dir {
        fd: OwnedFd,
        dev: u64,
        path: Vec<u8>,
    },
    /// A final symlink the configuration does not follow.
    Link,
    /// A device, FIFO or socket: not opened.
    Special,
}

/// Why a path was not opened: the errno (what the client would get) and,
/// for the operator's log, the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub errno: Errno,
    pub why: &'static str,
}

impl Refused {
    fn os(errno: Errno) -> Refused {
        Refused {
            errno,
            why: CLIENT_ACCESS,
        }
    }
    fn outside() -> Refused {
        Refused {
            errno: Errno::NOENT,
            why: "outside policy.scan-roots",
        }
    }
    fn raced() -> Refused {
        Refused {
            errno: Errno::NOENT,
            why: "the file changed while it was opened",
        }
    }
    fn on_proc() -> Refused {
        Refused {
            errno: Errno::NOENT,
            why: "on /proc (the root supervisor's own entries are there)",
        }
    }
}

impl Rules {
    /// Is this device /proc's (never opened)?
    fn is_proc(&self, dev: u64) -> bool {
        self.proc_dev == Some(dev)
    }
}

fn kind_of(t: FileType) -> FileKind {
    match t {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn meta_of(st: &rustix::fs::Stat) -> Meta {
    Meta {
        kind: kind_of(FileType::from_raw_mode(st.st_mode)),
        size: st.st_size.max(0) as u64,
        dev: st.st_dev,
    }
}

/// The walk's position: the directories from `/` down, with their names.
struct Walk {
    dirs: Vec<(OwnedFd, Vec<u8>)>,
}

impl Walk {
    fn from_root() -> Result<Walk, Refused> {
        let root = rustix::fs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Refused::os)?;
        Ok(Walk {
            dirs: vec![(root, Vec::new())],
        })
    }

    fn current(&self) -> BorrowedFd<'_> {
        self.dirs[self.dirs.len() - 1].0.as_fd()
    }

    fn canonical(&self, last: Option<&[u8]>) -> Vec<u8> {
        let mut p = Vec::new();
        for (_, name) in self.dirs.iter().skip(1) {
            p.push(b'/');
            p.extend_from_slice(name);
        }
        if let Some(name) = last {
            p.push(b'/');
            p.extend_from_slice(name);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        p
    }

    fn back_to_root(&mut self) {
        self.dirs.truncate(1);
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// The object a walk ended on, not yet opened.
struct End {
    walk: Walk,
    /// `None` when the path names a directory the walk holds (the last one).
    name: Option<Vec<u8>>,
    /// O_PATH descriptor of the object and its stat.
    fd: OwnedFd,
    stat: rustix::fs::Stat,
}

/// Resolves `path` as the calling thread's current (client) identity.
/// `follow_last`: follow a final symlink.
fn walk(rules: &Rules, path: &[u8], follow_last: bool) -> Result<End, Refused> {
    if path.is_empty() {
        // As stat(""): there is no such file.
        return Err(Refused::os(Errno::NOENT));
    }
    let mut walk = Walk::from_root()?;
    let mut todo: VecDeque<Vec<u8>> = VecDeque::new();
    if !path.starts_with(b"/") {
        todo.extend(components(&rules.cwd));
    }
    todo.extend(components(path));
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == b".." {
            // The kernel checks search permission on the directory we leave.
            rustix::fs::openat(
                walk.current(),
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(Refused::os)?;
            if walk.dirs.len() > 1 {
                walk.dirs.pop();
            }
            continue;
        }
        let last = todo.is_empty();
        let fd = rustix::fs::openat(
            walk.current(),
            name.as_slice(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Refused::os)?;
        let stat = rustix::fs::fstat(&fd).map_err(Refused::os)?;
        // Nothing on /proc, not even a symlink's existence (sixth review's
        // retry: /proc/self/fd/N answered whether root had descriptor N).
        if rules.is_proc(stat.st_dev) {
            return Err(Refused::on_proc());
        }
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink if last && !follow_last => {
                return Ok(End {
                    walk,
                    name: Some(name),
                    fd,
                    stat,
                })
            }
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Refused::os(Errno::LOOP));
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(Refused::os)?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    walk.back_to_root();
                }
                for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(c);
                }
            }
            FileType::Directory => walk.dirs.push((fd, name)),
            _ if !last => return Err(Refused::os(Errno::NOTDIR)),
            _ => {
                return Ok(End {
                    walk,
                    name: Some(name),
                    fd,
                    stat,
                })
            }
        }
    }
    // The path names a directory: the last one the walk holds.
    let (fd, name) = walk.dirs.pop().ok_or(Refused::os(Errno::NOENT))?;
    let stat = rustix::fs::fstat(&fd).map_err(Refused::os)?;
    // Put the directory back as the walk's position, keep a copy to open.
    let end_fd = fd
        .try_clone()
        .map_err(|e| Refused::os(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    walk.dirs.push((fd, name));
    Ok(End {
        walk,
        name: None,
        fd: end_fd,
        stat,
    })
}

/// Opens what `end` names for reading, as the client: `O_NOFOLLOW` on its
/// parent's descriptor, then checks it is the object the walk found.
fn open_end(rules: &Rules, end: End) -> Result<Found, Refused> {
    if rules.is_proc(end.stat.st_dev) {
        return Err(Refused::on_proc());
    }
    let kind = FileType::from_raw_mode(end.stat.st_mode);
    let canonical = end.walk.canonical(end.name.as_deref());
    let found = match kind {
        FileType::Symlink => return Ok(Found::Link),
        FileType::RegularFile | FileType::Directory => {
            let dir = kind == FileType::Directory;
            let flags = OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::NOCTTY
                | OFlags::CLOEXEC
                | if dir {
                    OFlags::DIRECTORY
                } else {
                    OFlags::empty()
                };
            let fd = match &end.name {
                // Reopening "." of the directory itself checks search
                // permission on it, then read permission: what listing and
                // entering it take.
                None => rustix::fs::openat(&end.fd, ".", flags, Mode::empty()),
                Some(name) => {
                    rustix::fs::openat(end.walk.current(), name.as_slice(), flags, Mode::empty())
                }
            }
            .map_err(Refused::os)?;
            let st = rustix::fs::fstat(&fd).map_err(Refused::os)?;
            if (st.st_dev, st.st_ino) != (end.stat.st_dev, end.stat.st_ino) {
                return Err(Refused::raced());
            }
            if dir {
                Found::Dir {
                    fd,
                    dev: st.st_dev,
                    path: canonical.clone(),
                }
            } else {
                Found::File {
                    fd,
                    size: st.st_size.max(0) as u64,
                    dev: st.st_dev,
                }
            }
        }
        _ => Found::Special,
    };
    Ok(found)
}

/// The path a descriptor stands at now, as the kernel says.
fn fd_path(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.as_os_str().as_bytes().to_vec())
}

/// Resolves and opens a path a client named (SCAN and friends). Must run
/// while acting as the client. A final symlink is followed only when the
/// configuration follows symlinks of the kind it leads to.
pub fn open_path(rules: &Rules, path: &[u8]) -> Result<Found, Refused> {
    let end = walk(rules, path, false)?;
    let end = if FileType::from_raw_mode(end.stat.st_mode) == FileType::Symlink {
        // The link itself is a file like any other: outside the roots it
        // is missing, not a symlink that is skipped (which would tell the
        // client it exists).
        if !rules.inside(&end.walk.canonical(end.name.as_deref())) {
            return Err(Refused::outside());
        }
        if !rules.follows_any() {
            return Ok(Found::Link);
        }
        let target = walk(rules, path, true)?;
        let kind = FileType::from_raw_mode(target.stat.st_mode);
        let followed = match kind {
            FileType::Directory => rules.follow_dirs,
            FileType::RegularFile => rules.follow_files,
            _ => true,
        };
        if !followed {
            return Ok(Found::Link);
        }
        target
    } else {
        end
    };
    let canonical = end.walk.canonical(end.name.as_deref());
    if !rules.inside(&canonical) {
        return Err(Refused::outside());
    }
    let found = open_end(rules, end)?;
    check_still_at(&found, &canonical)?;
    Ok(found)
}

/// The opened object must still be where the walk found it (a rename of a
/// directory on the way, after the walk, could have moved it outside the
/// roots).
fn check_still_at(found: &Found, canonical: &[u8]) -> Result<(), Refused> {
    let fd = match found {
        Found::File { fd, .. } | Found::Dir { fd, .. } => fd,
        Found::Link | Found::Special => return Ok(()),
    };
    match fd_path(fd.as_fd()) {
        Some(p) if p == canonical => Ok(()),
        _ => Err(Refused::raced()),
    }
}

/// One entry of a directory held open, as the client, without following it.
pub fn lstat_entry(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Meta, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| meta_of(&st))
}

/// What a symlink entry leads to, when the configuration follows symlinks:
/// resolved by the same walk, inside the roots, as the client.
pub fn follow_entry(rules: &Rules, dir_path: &[u8], name: &[u8]) -> Result<Meta, Errno> {
    let path = join(dir_path, name);
    let end = walk(rules, &path, true).map_err(|r| r.errno)?;
    let canonical = end.walk.canonical(end.name.as_deref());
    if !rules.inside(&canonical) {
        return Err(Errno::NOENT);
    }
    Ok(meta_of(&end.stat))
}

/// Opens entry `name` of the directory `dir` (canonical path `dir_path`) as
/// the client: a subdirectory to list (`want_dir`) or a file to scan. A
/// symlink entry is followed only as the configuration says.
pub fn open_entry(
    rules: &Rules,
    dir: BorrowedFd<'_>,
    dir_path: &[u8],
    name: &[u8],
    want_dir: bool,
) -> Result<Found, Errno> {
    let lstat = lstat_entry(dir, name)?;
    open_looked_at(rules, dir, dir_path, name, want_dir, lstat)
}

/// [`open_entry`] after its look at the entry (`lstat`, as the client, just
/// before): a device, FIFO or socket is not opened (only one swapped in
/// between the look and the open could be, with `O_NONBLOCK`, as the
/// client); what is opened is checked to be a regular file or a directory,
/// with `O_NOFOLLOW`.
fn open_looked_at(
    rules: &Rules,
    dir: BorrowedFd<'_>,
    dir_path: &[u8],
    name: &[u8],
    want_dir: bool,
    lstat: Meta,
) -> Result<Found, Errno> {
    if lstat.kind == FileKind::Symlink {
        let follows = if want_dir {
            rules.follow_dirs
        } else {
            rules.follow_files
        };
        if !follows {
            return Err(Errno::LOOP);
        }
        let path = join(dir_path, name);
        let found = open_path_following(rules, &path)?;
        return Ok(found);
    }
    let flags = OFlags::RDONLY
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY
        | OFlags::CLOEXEC
        | if want_dir {
            OFlags::DIRECTORY
        } else {
            OFlags::empty()
        };
    match lstat.kind {
        FileKind::Dir if want_dir => {}
        FileKind::File if !want_dir => {}
        _ => return Err(Errno::INVAL),
    }
    if rules.is_proc(lstat.dev) {
        return Err(Errno::NOENT);
    }
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    let found = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory if want_dir => Found::Dir {
            fd,
            dev: st.st_dev,
            path: join(dir_path, name),
        },
        FileType::RegularFile if !want_dir => Found::File {
            fd,
            size: st.st_size.max(0) as u64,
            dev: st.st_dev,
        },
        _ => return Err(Errno::INVAL),
    };
    Ok(found)
}

fn open_path_following(rules: &Rules, path: &[u8]) -> Result<Found, Errno> {
    let end = walk(rules, path, true).map_err(|r| r.errno)?;
    let canonical = end.walk.canonical(end.name.as_deref());
    if !rules.inside(&canonical) {
        return Err(Errno::NOENT);
    }
    let found = open_end(rules, end).map_err(|r| r.errno)?;
    check_still_at(&found, &canonical).map_err(|r| r.errno)?;
    Ok(found)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn rules(roots: &[&Path]) -> Rules {
        Rules::new(
            &roots.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>(),
            false,
            false,
        )
    }

    fn b(p: &Path) -> Vec<u8> {
        p.as_os_str().as_bytes().to_vec()
    }

    /// /proc resolved in the supervisor is the supervisor's own: never
    /// opened, file or directory, by path or through a symlink.
    #[test]
    fn nothing_on_proc_is_opened() {
        let r = rules(&[Path::new("/")]);
        for p in [
            "/proc/self/maps",
            "/proc/self/fd",
            "/proc",
            "/proc/self/status",
            "/proc/self/fd/0",
            "/proc/self/exe",
            "/dev/fd/0",
        ] {
            let refused = open_path(&r, p.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{p} opened"));
            assert_eq!(refused.errno, Errno::NOENT, "{p}");
        }
        let root =
            rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(
            open_entry(&r, root.as_fd(), b"/", b"proc", true).err(),
            Some(Errno::NOENT)
        );
        // Elsewhere, unchanged.
        assert!(open_path(&r, b"/etc").is_ok());
    }

    #[test]
    fn files_dirs_links_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::write(root.join("f"), b"data").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        symlink(root.join("f"), root.join("l")).unwrap();
        let r = rules(&[&root]);
        assert!(matches!(
            open_path(&r, &b(&root.join("f"))),
            Ok(Found::File { size: 4, .. })
        ));
        match open_path(&r, &b(&root.join("d"))) {
            Ok(Found::Dir { path, .. }) => assert_eq!(path, b(&root.join("d"))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            open_path(&r, &b(&root.join("l"))),
            Ok(Found::Link)
        ));
        assert_eq!(
            open_path(&r, &b(&root.join("missing"))).unwrap_err().errno,
            Errno::NOENT
        );
        // Through a directory symlink in the middle, and with `..`.
        symlink(root.join("d"), root.join("dl")).unwrap();
        std::fs::write(root.join("d/g"), b"x").unwrap();
        assert!(matches!(
            open_path(&r, &b(&root.join("dl/g"))),
            Ok(Found::File { .. })
        ));
        assert!(matches!(
            open_path(&r, &b(&root.join("d/../f"))),
            Ok(Found::File { .. })
        ));
    }

    #[test]
    fn roots_hold_through_symlinks_and_dotdot() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let inside = base.join("in");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        symlink(base.join("secret"), inside.join("abs")).unwrap();
        symlink("../secret", inside.join("rel")).unwrap();
        let mut r = rules(&[&inside]);
        r.follow_files = true;
        for p in ["abs", "rel"] {
            let e = open_path(&r, &b(&inside.join(p))).unwrap_err();
            assert_eq!(e.errno, Errno::NOENT, "{p}");
            assert_eq!(e.why, "outside policy.scan-roots");
        }
        let e = open_path(&r, &b(&inside.join("../secret"))).unwrap_err();
        assert_eq!(e.why, "outside policy.scan-roots");
        // A symlink outside the roots is as missing as a file there, followed
        // or not (a skipped link would answer OK and tell it exists).
        symlink(base.join("secret"), base.join("outside-link")).unwrap();
        for follow in [false, true] {
            r.follow_files = follow;
            let e = open_path(&r, &b(&base.join("outside-link"))).unwrap_err();
            assert_eq!(e.errno, Errno::NOENT, "follow_files={follow}");
            assert_eq!(e.why, "outside policy.scan-roots");
        }
        r.follow_files = true;
        assert!(r.inside(&b(&inside)));
        assert!(!r.inside(&b(&base.join("inside-not"))));
    }

    #[test]
    fn special_files_are_not_opened() {
        let r = rules(&[Path::new("/")]);
        assert!(matches!(open_path(&r, b"/dev/null"), Ok(Found::Special)));
    }

    #[test]
    fn symlink_loops_end() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let mut r = rules(&[&root]);
        r.follow_files = true;
        assert_eq!(
            open_path(&r, &b(&root.join("a"))).unwrap_err().errno,
            Errno::LOOP
        );
    }
}
