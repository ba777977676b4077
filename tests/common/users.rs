//! The VirusEvent user, `clamsentry-event` (the default `virus-event.user`,
//! which the Debian package creates): tests that run the command create it
//! when it is missing, with the same `adduser` line as the package's
//! postinst, and remove it when the last of them is done, if they created
//! it. Needs root.
//!
//! Several test processes may use it at once: each holds a shared `flock`
//! on a lock file while it uses the user, and the creator removes the user
//! only if it can take that lock exclusively (nobody else uses it).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

pub const EVENT_USER: &str = "clamsentry-event";
const LOCK: &str = "/run/lock/clamsentry-event-tests.lock";

struct Holders {
    count: usize,
    created: bool,
    lock: Option<File>,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders {
    count: 0,
    created: false,
    lock: None,
});

/// The user exists while one of these lives.
pub struct EventUser {
    pub uid: u32,
    pub gid: u32,
}

fn exists() -> bool {
    nix::unistd::User::from_name(EVENT_USER)
        .ok()
        .flatten()
        .is_some()
}

fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor this File owns.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

impl EventUser {
    pub fn ensure() -> EventUser {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if h.count == 0 {
            let _ = std::fs::create_dir_all("/run/lock");
            let lock = File::create(LOCK).expect("the tests' lock file");
            assert!(flock(&lock, libc::LOCK_SH), "flock {LOCK}");
            if !exists() {
                let status = Command::new("adduser")
                    .args([
                        "--system",
                        "--group",
                        "--no-create-home",
                        "--home",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        "--quiet",
                        EVENT_USER,
                    ])
                    .status()
                    .expect("adduser (apt-get install adduser)");
                assert!(status.success(), "adduser {EVENT_USER}: {status}");
                h.created = true;
            }
            h.lock = Some(lock);
        }
        h.count += 1;
        let u = nix::unistd::User::from_name(EVENT_USER)
            .unwrap()
            .expect("the VirusEvent user");
        EventUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

impl Drop for EventUser {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        h.count -= 1;
        if h.count > 0 {
            return;
        }
        let Some(lock) = h.lock.take() else { return };
        if std::mem::take(&mut h.created) && flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            for tool in ["deluser", "delgroup"] {
                let _ = Command::new(tool)
                    .args(["--system", "--quiet", EVENT_USER])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}
