//! The file broker: the only way path commands reach files.
//!
//! [`handle`] is the policy and the file system call in one place: the path
//! must lie inside `policy.scan-roots` once resolved, and the client (its
//! identity read by the supervisor from the client's own socket with
//! SO_PEERCRED, never taken from the worker's word) must be able to reach
//! it; only then is the call made. Files are opened
//! `O_RDONLY|O_NOFOLLOW|O_CLOEXEC|O_NOCTTY|O_NONBLOCK` and must be regular.
//! Refusals are the errno of a missing file (or `EACCES` where the client
//! could see the entry exists), so a refusal tells nothing new.
//!
//! With privilege separation, the supervisor runs [`serve`] on a channel per
//! worker, and the worker's [`Files`](crate::server::files::Files) sends each
//! request there. Without it (tests, the library), the same [`handle`] runs
//! in process.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::channel::Channel;
use super::messages::{
    BrokerOp, BrokerReply, BrokerRequest, DirEntry, FileKind, Meta, MAX_MESSAGE,
};
use crate::policy::access::{self, Want};
use crate::policy::PeerCreds;

/// Where path commands may look.
#[derive(Debug, Clone)]
pub struct FilePolicy {
    /// Resolved directories; a path must resolve inside one of them.
    pub roots: Vec<PathBuf>,
}

impl FilePolicy {
    pub fn new(roots: &[PathBuf]) -> FilePolicy {
        FilePolicy {
            roots: roots
                .iter()
                .filter_map(|r| fs::canonicalize(r).ok())
                .collect(),
        }
    }

    fn inside(&self, resolved: &Path) -> bool {
        self.roots.iter().any(|r| resolved.starts_with(r))
    }
}

fn errno(e: &std::io::Error) -> BrokerReply {
    BrokerReply::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

fn kind_of(t: fs::FileType) -> FileKind {
    if t.is_file() {
        FileKind::File
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    }
}

fn meta(m: &fs::Metadata) -> Meta {
    Meta {
        kind: kind_of(m.file_type()),
        size: m.len(),
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Resolves `path` for the roots check: the whole path, or (for lstat) its
/// parent plus the last name.
fn resolve(path: &Path, follow: bool) -> std::io::Result<PathBuf> {
    if follow {
        return fs::canonicalize(path);
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok(fs::canonicalize(parent)?.join(name))
        }
        _ => fs::canonicalize(path),
    }
}

/// Serves one request for `peer`. Returns the reply and, for an opened file,
/// its descriptor.
pub fn handle(
    policy: &FilePolicy,
    peer: &PeerCreds,
    req: &BrokerRequest,
) -> (BrokerReply, Option<OwnedFd>) {
    let path = Path::new(OsStr::from_bytes(&req.path));
    let follow = !matches!(req.op, BrokerOp::Lstat);
    let resolved = match resolve(path, follow) {
        Ok(r) => r,
        Err(e) => {
            return match req.op {
                BrokerOp::MayAccess { .. } => (BrokerReply::Allowed(false), None),
                _ if access::reachable(peer, path) => (errno(&e), None),
                _ => (BrokerReply::Errno(libc::ENOENT), None),
            }
        }
    };
    let enoent = BrokerReply::Errno(libc::ENOENT);
    if !policy.inside(&resolved) || !access::reachable(peer, path) {
        return match req.op {
            BrokerOp::MayAccess { .. } => (BrokerReply::Allowed(false), None),
            _ => (enoent, None),
        };
    }
    match req.op {
        BrokerOp::Stat => (
            fs::metadata(path).map_or_else(|e| errno(&e), |m| BrokerReply::Meta(meta(&m))),
            None,
        ),
        BrokerOp::Lstat => (
            fs::symlink_metadata(path).map_or_else(|e| errno(&e), |m| BrokerReply::Meta(meta(&m))),
            None,
        ),
        BrokerOp::Canonicalize => (
            BrokerReply::Path(resolved.into_os_string().into_vec()),
            None,
        ),
        BrokerOp::MayAccess { list } => {
            let want = if list { Want::List } else { Want::Read };
            (
                BrokerReply::Allowed(access::allowed(peer, path, want)),
                None,
            )
        }
        BrokerOp::OpenFile => {
            if !access::allowed(peer, path, Want::Read) {
                return (BrokerReply::Errno(libc::EACCES), None);
            }
            open_regular(path)
        }
        BrokerOp::ListDir { offset } => {
            if !access::allowed(peer, path, Want::List) {
                return (BrokerReply::Errno(libc::EACCES), None);
            }
            (list(path, offset as usize), None)
        }
    }
}

fn open_regular(path: &Path) -> (BrokerReply, Option<OwnedFd>) {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path);
    match file {
        Ok(f) => match f.metadata() {
            Ok(m) if m.file_type().is_file() => {
                (BrokerReply::Opened { size: m.len() }, Some(f.into()))
            }
            Ok(m) if m.file_type().is_fifo() || m.file_type().is_socket() => {
                (BrokerReply::Errno(libc::EINVAL), None)
            }
            Ok(_) => (BrokerReply::Errno(libc::EINVAL), None),
            Err(e) => (errno(&e), None),
        },
        Err(e) => (errno(&e), None),
    }
}

/// Up to one message worth of entries, from `offset` on.
fn list(path: &Path, offset: usize) -> BrokerReply {
    let dir = match fs::read_dir(path) {
        Ok(d) => d,
        Err(e) => return errno(&e),
    };
    let mut entries = Vec::new();
    let mut size = 16;
    let mut more = false;
    for entry in dir.flatten().skip(offset) {
        let name = entry.file_name().into_vec();
        if size + name.len() + 13 > MAX_MESSAGE - 64 {
            more = true;
            break;
        }
        size += name.len() + 13;
        entries.push(DirEntry {
            kind: entry.file_type().ok().map(kind_of),
            ino: entry.ino(),
            name,
        });
    }
    BrokerReply::Entries { entries, more }
}

/// Supervisor side: answers one worker's requests until it goes away. Each
/// request must carry the client's socket; anything malformed ends the
/// worker's channel (the supervisor then stops that worker).
pub fn serve(channel: &Channel, policy: &FilePolicy) -> Result<(), String> {
    loop {
        let (msg, fds) = match channel.recv() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("broker channel: {e}")),
        };
        let req = BrokerRequest::decode(&msg).map_err(|e| format!("broker request: {e}"))?;
        let Some(client) = fds.into_iter().next() else {
            return Err("broker request without the client's socket".into());
        };
        let peer = peer_of(&client);
        let (reply, fd) = handle(policy, &peer, &req);
        let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
        channel
            .send(&reply.encode(), &fds)
            .map_err(|e| format!("broker reply: {e}"))?;
    }
}

/// The identity behind a client socket: SO_PEERCRED for Unix sockets; TCP
/// (or anything else) has none.
pub fn peer_of(socket: &OwnedFd) -> PeerCreds {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(&socket.as_fd(), PeerCredentials) {
        Ok(c) if is_unix(socket) => PeerCreds::unix(
            c.uid(),
            c.gid(),
            Some(c.pid()).filter(|p| *p > 0),
            super::peergroups::peer_groups(socket.as_fd()),
        ),
        _ => PeerCreds::remote(),
    }
}

fn is_unix(socket: &OwnedFd) -> bool {
    use nix::sys::socket::SockaddrLike;
    matches!(
        nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(socket.as_raw_fd())
            .ok()
            .and_then(|a| a.family()),
        Some(nix::sys::socket::AddressFamily::Unix)
    )
}
