//! A stand-in for a systemd socket unit: it holds listening sockets across
//! restarts of the daemon and hands them over as systemd does
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, descriptors from 3 on).
//! While no daemon runs, the kernel keeps completing connections into the
//! socket's queue, where they wait for the next start: what "under socket
//! activation, new connections wait instead of being refused" means.
//!
//! systemd itself cannot be used for this here: it is not PID 1 on the
//! test machine (tests/e2e_deb.rs boots it in a container for the package
//! test), and `systemd-socket-activate` execs the daemon in its own place,
//! so its sockets die with the first daemon.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Listening sockets and their `FileDescriptorName=`.
pub struct Holder {
    sockets: Vec<(OwnedFd, String)>,
}

impl Holder {
    pub fn new() -> Holder {
        Holder {
            sockets: Vec::new(),
        }
    }

    /// Binds and listens on a TCP address (in the caller's network
    /// namespace).
    pub fn tcp(mut self, addr: SocketAddr, name: &str) -> Holder {
        let l = std::net::TcpListener::bind(addr).expect("bind the held TCP socket");
        self.sockets.push((OwnedFd::from(l), name.to_string()));
        self
    }

    /// Binds and listens on a Unix socket path (mode 0666, as the test
    /// daemons' sockets).
    pub fn unix(mut self, path: &Path, name: &str) -> Holder {
        use std::os::unix::fs::PermissionsExt;
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind the held Unix socket");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        self.sockets.push((OwnedFd::from(l), name.to_string()));
        self
    }

    /// A listening socket made elsewhere (another network namespace).
    pub fn adopt(mut self, fd: OwnedFd, name: &str) -> Holder {
        self.sockets.push((fd, name.to_string()));
        self
    }

    /// `program args…` started as systemd starts a socket-activated
    /// service: the sockets at descriptors 3, 4, …, and `LISTEN_PID` the
    /// program's own pid (set by a shell that then execs it).
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        self.command_in("", &[], program, args)
    }

    /// The same, with `prelude` shell commands run first (e.g. joining a
    /// cgroup: `echo $$ > …/cgroup.procs &&`), then started through
    /// `wrapper` (e.g. `nsenter --net=… --`, which execs in place).
    pub fn command_in(
        &self,
        prelude: &str,
        wrapper: &[&str],
        program: &Path,
        args: &[&str],
    ) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!("{prelude} exec \"$@\""))
            .arg("sh")
            .args(wrapper)
            .arg("/bin/sh")
            .arg("-c")
            .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .env("LISTEN_FDS", self.sockets.len().to_string())
            .env(
                "LISTEN_FDNAMES",
                self.sockets
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
            .env_remove("LISTEN_PID");
        let fds: Vec<RawFd> = self.sockets.iter().map(|(f, _)| f.as_raw_fd()).collect();
        // SAFETY: between fork and exec this only calls fcntl and dup2
        // (async-signal-safe) on descriptors the parent keeps open.
        unsafe {
            c.pre_exec(move || {
                // Out of the way first, so that moving one to 3 + i cannot
                // overwrite another not moved yet.
                let mut high = Vec::with_capacity(fds.len());
                for fd in &fds {
                    let r = libc_dup_above(*fd, 100)?;
                    high.push(r);
                }
                for (i, fd) in high.iter().enumerate() {
                    let target = 3 + i as RawFd;
                    if nix::unistd::dup2(*fd, target).is_err() {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        c
    }
}

impl Default for Holder {
    fn default() -> Self {
        Holder::new()
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`.
fn libc_dup_above(fd: RawFd, min: RawFd) -> std::io::Result<RawFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min)).map_err(std::io::Error::from)
}
