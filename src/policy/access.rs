//! "Could the asking peer read this itself?" — the rule that closes clamd's
//! file oracle.
//!
//! clamd answers path commands with its own rights, so any client can learn
//! whether a file exists or is readable (`No such file or directory` vs
//! `Permission denied`) and, for files it cannot read, whether they contain a
//! detection. clamsentry first checks the path with the *peer's* identity
//! (SO_PEERCRED uid/gid, its supplementary groups from /proc), the way the
//! kernel would: search permission on every directory on the way (for the
//! path as written and for its resolved form), read permission on the target
//! (read and search for directories), POSIX ACLs when a file has them. A path
//! that fails the check gets exactly the reply of a missing file.
//!
//! TCP peers have no identity: they count as "others" (world-readable only).
//! Root peers are not checked (they could read everything anyway).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The identity of a peer, as far as the kernel tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCreds {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
    pub pid: Option<i32>,
}

impl PeerCreds {
    /// A peer without an identity (TCP).
    pub fn remote() -> PeerCreds {
        PeerCreds {
            uid: None,
            gid: None,
            gids: Vec::new(),
            pid: None,
        }
    }

    /// A Unix-socket peer from SO_PEERCRED and its supplementary groups.
    /// `kernel_groups`: SO_PEERGROUPS when the caller could read it (it works
    /// inside the sandbox); otherwise /proc/PID/status or the group database.
    pub fn unix(
        uid: u32,
        gid: u32,
        pid: Option<i32>,
        kernel_groups: Option<Vec<u32>>,
    ) -> PeerCreds {
        let mut gids = kernel_groups
            .or_else(|| pid.and_then(proc_groups))
            .unwrap_or_else(|| db_groups(uid, gid));
        if !gids.contains(&gid) {
            gids.push(gid);
        }
        PeerCreds {
            uid: Some(uid),
            gid: Some(gid),
            gids,
            pid,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == Some(0)
    }
}

fn proc_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Groups:"))?;
    Some(
        line["Groups:".len()..]
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

fn db_groups(uid: u32, gid: u32) -> Vec<u32> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let Some(user) = user else { return vec![gid] };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}

const R: u32 = 4;
const X: u32 = 1;

/// What the peer wants to do with the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Open a file for reading.
    Read,
    /// List and enter a directory.
    List,
}

/// `path` made absolute against the daemon's directory (clamd resolves
/// relative paths the same way).
fn absolute(path: &Path) -> Option<PathBuf> {
    if path.is_absolute() {
        Some(path.to_path_buf())
    } else {
        std::env::current_dir().ok().map(|cwd| cwd.join(path))
    }
}

/// May `peer` reach `path` and do `want` with it? `path` is taken as the
/// client wrote it (relative paths are relative to the daemon's directory,
/// as in clamd). Anything that does not exist is a "no".
pub fn allowed(peer: &PeerCreds, path: &Path, want: Want) -> bool {
    if peer.is_root() {
        return true;
    }
    let Some(absolute) = absolute(path) else {
        return false;
    };
    let Ok(resolved) = std::fs::canonicalize(&absolute) else {
        return false;
    };
    traversable(peer, &absolute) && traversable(peer, &resolved) && target_ok(peer, &resolved, want)
}

/// May `peer` reach `path` at all (search permission on every directory
/// above it, as written and as resolved)? Says nothing about the target.
pub fn reachable(peer: &PeerCreds, path: &Path) -> bool {
    if peer.is_root() {
        return true;
    }
    let Some(absolute) = absolute(path) else {
        return false;
    };
    if !traversable(peer, &absolute) {
        return false;
    }
    // The resolved parent must be reachable too (symlinks on the way).
    match absolute.parent().map(std::fs::canonicalize) {
        Some(Ok(parent)) => traversable(peer, &parent.join("x")),
        Some(Err(_)) => false,
        None => true,
    }
}

/// Search permission on every existing directory above `path`, as written.
fn traversable(peer: &PeerCreds, path: &Path) -> bool {
    let mut dir = PathBuf::new();
    let parts: Vec<Component<'_>> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {
                if !permits(peer, &dir, &m, X) {
                    return false;
                }
            }
            Ok(_) => return false,
            Err(_) => return false,
        }
    }
    true
}

fn target_ok(peer: &PeerCreds, path: &Path, want: Want) -> bool {
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    match want {
        Want::Read => permits(peer, path, &m, R),
        Want::List => permits(peer, path, &m, R) && permits(peer, path, &m, X),
    }
}

/// The kernel's permission check for one object: ACL if present, else mode bits.
fn permits(peer: &PeerCreds, path: &Path, m: &Metadata, bit: u32) -> bool {
    if let Some(acl) = read_acl(path) {
        return acl.permits(peer, m, bit);
    }
    let mode = m.mode();
    let shift = if peer.uid == Some(m.uid()) {
        6
    } else if peer.gids.contains(&m.gid()) {
        3
    } else {
        0
    };
    (mode >> shift) & bit != 0
}

/// A POSIX access ACL (`system.posix_acl_access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<(u16, u16, u32)>,
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

fn read_acl(path: &Path) -> Option<Acl> {
    let raw = xattr::get(path, "system.posix_acl_access").ok().flatten()?;
    Acl::parse(&raw)
}

impl Acl {
    /// Parses the kernel's xattr form: a version word (2), then
    /// `(tag u16, perm u16, id u32)` entries, little endian.
    pub fn parse(raw: &[u8]) -> Option<Acl> {
        if raw.len() < 4 || u32::from_le_bytes(raw[..4].try_into().ok()?) != 2 {
            return None;
        }
        let body = &raw[4..];
        if body.len() % 8 != 0 {
            return None;
        }
        let entries = body
            .chunks_exact(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect();
        Some(Acl { entries })
    }

    /// POSIX.1e access check.
    pub fn permits(&self, peer: &PeerCreds, m: &Metadata, bit: u32) -> bool {
        self.check(peer, m.uid(), m.gid(), bit)
    }

    fn check(&self, peer: &PeerCreds, owner: u32, group: u32, bit: u32) -> bool {
        let has = |perm: u16| u32::from(perm) & bit != 0;
        let mask = self
            .entries
            .iter()
            .find(|e| e.0 == ACL_MASK)
            .map(|e| e.1)
            .unwrap_or(0x7);
        let entry = |tag: u16| {
            self.entries
                .iter()
                .find(|e| e.0 == tag)
                .map(|e| e.1)
                .unwrap_or(0)
        };
        if peer.uid == Some(owner) {
            return has(entry(ACL_USER_OBJ));
        }
        if let Some(uid) = peer.uid {
            if let Some(e) = self.entries.iter().find(|e| e.0 == ACL_USER && e.2 == uid) {
                return has(e.1 & mask);
            }
        }
        let mut group_matched = false;
        for e in &self.entries {
            let matches = (e.0 == ACL_GROUP_OBJ && peer.gids.contains(&group))
                || (e.0 == ACL_GROUP && peer.gids.contains(&e.2));
            if matches {
                group_matched = true;
                if has(e.1 & mask) {
                    return true;
                }
            }
        }
        if group_matched {
            return false;
        }
        has(entry(ACL_OTHER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        let mut raw = 2u32.to_le_bytes().to_vec();
        for (t, p, id) in entries {
            raw.extend_from_slice(&t.to_le_bytes());
            raw.extend_from_slice(&p.to_le_bytes());
            raw.extend_from_slice(&id.to_le_bytes());
        }
        Acl::parse(&raw).unwrap()
    }

    fn peer(uid: u32, gids: &[u32]) -> PeerCreds {
        PeerCreds {
            uid: Some(uid),
            gid: gids.first().copied(),
            gids: gids.to_vec(),
            pid: None,
        }
    }

    #[test]
    fn acl_named_user_and_mask() {
        // owner rw-, user:1000 r--, group ---, mask r--, other ---
        let a = acl(&[
            (ACL_USER_OBJ, 6, u32::MAX),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 0, u32::MAX),
            (ACL_MASK, 4, u32::MAX),
            (ACL_OTHER, 0, u32::MAX),
        ]);
        assert!(a.check(&peer(1000, &[1000]), 0, 0, R));
        assert!(!a.check(&peer(1001, &[1001]), 0, 0, R));
        assert!(a.check(&peer(0, &[0]), 0, 0, R), "owner");
        // The mask limits named entries.
        let masked = acl(&[
            (ACL_USER_OBJ, 6, u32::MAX),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 0, u32::MAX),
            (ACL_MASK, 0, u32::MAX),
            (ACL_OTHER, 0, u32::MAX),
        ]);
        assert!(!masked.check(&peer(1000, &[1000]), 0, 0, R));
    }

    #[test]
    fn acl_group_entries() {
        let a = acl(&[
            (ACL_USER_OBJ, 6, u32::MAX),
            (ACL_GROUP_OBJ, 0, u32::MAX),
            (ACL_GROUP, 4, 50),
            (ACL_MASK, 4, u32::MAX),
            (ACL_OTHER, 4, u32::MAX),
        ]);
        assert!(a.check(&peer(7, &[50]), 0, 0, R));
        // Matching a group entry that denies means "no", even if other allows.
        assert!(!a.check(&peer(7, &[0]), 0, 0, R));
        assert!(a.check(&peer(7, &[9]), 0, 0, R), "other");
    }

    #[test]
    fn malformed_acl_is_ignored() {
        assert!(Acl::parse(b"").is_none());
        assert!(Acl::parse(&[1, 0, 0, 0]).is_none());
        assert!(Acl::parse(&[2, 0, 0, 0, 1]).is_none());
    }

    #[test]
    fn root_reads_everything_and_missing_is_no() {
        let root = peer(0, &[0]);
        assert!(allowed(&root, Path::new("/etc/shadow"), Want::Read));
        let nobody = peer(65534, &[65534]);
        assert!(!allowed(
            &nobody,
            Path::new("/nonexistent/file"),
            Want::Read
        ));
        assert!(
            allowed(&nobody, Path::new("/etc/hostname"), Want::Read)
                || !Path::new("/etc/hostname").exists()
        );
    }
}
