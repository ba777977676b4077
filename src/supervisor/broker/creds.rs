//! Acting as the client, in one thread, so that the kernel makes every
//! access decision of a broker request: search permission on each directory
//! of a walk, read permission on the file or directory opened, ACLs, LSMs.
//!
//! Linux credentials are per thread. The broker thread changes only its own
//! file-system identity: supplementary groups with the raw `setgroups`
//! system call (the C library's `setgroups` would change every thread of the
//! supervisor), then `setfsgid` and `setfsuid`. When the fsuid leaves 0 the
//! kernel drops the file-system capabilities (CAP_DAC_READ_SEARCH,
//! CAP_DAC_OVERRIDE, CAP_CHOWN, …) from this thread's effective set, so the
//! thread is then exactly as strong as the client for file access; going
//! back to 0 restores them from the permitted set. The unit test below reads
//! `/proc/thread-self/status` while acting as a client to check this, and
//! that the other threads kept their identity.
//!
//! [`ActingAs`] restores the broker's own identity when dropped and checks
//! that it did; if restoring fails the process aborts: a thread that might
//! keep a client's identity must not serve the next client.
#![allow(unsafe_code)]

use std::io;

use rustix::process::Gid;

/// The identity file access is checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The uid and gid TCP peers act with: no file's owner or group, so only
/// the "others" permission bits apply (if an operator allows path commands
/// over TCP at all). `(uid_t)-2`; `-1` cannot be used (it means "unchanged").
pub const ANONYMOUS: u32 = u32::MAX - 1;

impl FsIdentity {
    pub fn anonymous() -> FsIdentity {
        FsIdentity {
            uid: ANONYMOUS,
            gid: ANONYMOUS,
            groups: Vec::new(),
        }
    }
}

fn setfsuid(uid: u32) -> u32 {
    // libc: rustix has no setfsuid/setfsgid (per thread, raw syscall).
    // SAFETY: setfsuid takes a plain integer and changes only the calling
    // thread's fsuid (it cannot fail in a way that corrupts memory); it
    // returns the previous fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid as libc::c_long) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: as for setfsuid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid as libc::c_long) as u32 }
}

/// The current fsuid: `setfsuid(-1)` is refused and returns the current value.
fn current_fsuid() -> u32 {
    setfsuid(u32::MAX)
}

fn current_fsgid() -> u32 {
    setfsgid(u32::MAX)
}

fn set_groups(groups: &[u32]) -> io::Result<()> {
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    rustix::thread::set_thread_groups(&gids)?;
    Ok(())
}

/// The broker thread's own file-system identity, captured once when the
/// thread starts.
#[derive(Debug, Clone)]
pub struct Own {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Own {
    pub fn capture() -> io::Result<Own> {
        Ok(Own {
            uid: current_fsuid(),
            gid: current_fsgid(),
            groups: rustix::process::getgroups()?
                .into_iter()
                .map(|g| g.as_raw())
                .collect(),
        })
    }

    /// Whether acting as `who` changes anything (a root client is served
    /// with the broker's own identity).
    fn is(&self, who: &FsIdentity) -> bool {
        who.uid == self.uid && who.gid == self.gid
    }
}

/// While alive, this thread's file access is the client's.
pub struct ActingAs<'a> {
    own: &'a Own,
    changed: bool,
}

/// Takes `who`'s file-system identity on this thread until the returned
/// guard is dropped. Fails (and leaves the thread as it was) when the
/// kernel refuses, e.g. without CAP_SETUID/CAP_SETGID.
pub fn act_as<'a>(own: &'a Own, who: &FsIdentity) -> io::Result<ActingAs<'a>> {
    if own.is(who) {
        return Ok(ActingAs {
            own,
            changed: false,
        });
    }
    // Groups and gid first: changing them needs CAP_SETGID, which the
    // thread keeps; the fsuid change below drops only file capabilities.
    // If the groups cannot be set (a daemon started without CAP_SETGID),
    // nothing was changed and there is nothing to restore.
    set_groups(&who.groups)?;
    let guard = ActingAs { own, changed: true };
    setfsgid(who.gid);
    setfsuid(who.uid);
    if current_fsgid() != who.gid || current_fsuid() != who.uid {
        // The guard restores on drop.
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot take the client's file identity (uid {}, gid {}): the supervisor needs CAP_SETUID and CAP_SETGID",
                who.uid, who.gid
            ),
        ));
    }
    Ok(guard)
}

impl Drop for ActingAs<'_> {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        setfsuid(self.own.uid);
        setfsgid(self.own.gid);
        let groups = set_groups(&self.own.groups);
        if groups.is_err() || current_fsuid() != self.own.uid || current_fsgid() != self.own.gid {
            eprintln!("clamsentry: the broker thread could not restore its own identity; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acting_as_root_changes_nothing() {
        let own = Own::capture().unwrap();
        let me = FsIdentity {
            uid: own.uid,
            gid: own.gid,
            groups: vec![],
        };
        let g = act_as(&own, &me).unwrap();
        assert!(!g.changed);
    }

    fn cap_eff(status: &str) -> u64 {
        let text = std::fs::read_to_string(status).unwrap();
        let line = text.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    #[test]
    fn a_client_identity_is_taken_and_given_back() {
        crate::require_root!("it takes the identity of user nobody");
        // A thread of its own: this test changes its credentials.
        std::thread::spawn(|| {
            let own = Own::capture().unwrap();
            let who = FsIdentity {
                uid: 65534,
                gid: 65534,
                groups: vec![65534, 4242],
            };
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                wait.recv().unwrap();
                (current_fsuid(), std::fs::File::open("/etc/shadow").is_ok())
            });
            {
                let _g = act_as(&own, &who).unwrap();
                assert_eq!(current_fsuid(), 65534);
                assert_eq!(current_fsgid(), 65534);
                let mut groups: Vec<u32> = rustix::process::getgroups()
                    .unwrap()
                    .into_iter()
                    .map(|g| g.as_raw())
                    .collect();
                groups.sort_unstable();
                assert_eq!(groups, vec![4242, 65534]);
                // As nobody, root's files are closed.
                assert!(std::fs::File::open("/etc/shadow").is_err());
                // The kernel took the file-system capabilities from this
                // thread's effective set (CAP_DAC_OVERRIDE 1,
                // CAP_DAC_READ_SEARCH 2)...
                let eff = cap_eff("/proc/thread-self/status");
                assert_eq!(eff & 0b110, 0, "CapEff {eff:x}");
                // ...and from no other thread (one that existed before: a
                // thread started now would inherit this one's identity).
                go.send(()).unwrap();
                assert_eq!(other.join().unwrap(), (0, true));
            }
            assert_ne!(cap_eff("/proc/thread-self/status") & 0b110, 0);
            assert_eq!(current_fsuid(), own.uid);
            assert!(std::fs::File::open("/etc/shadow").is_ok());
        })
        .join()
        .unwrap();
    }
}
