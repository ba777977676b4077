//! The compromised worker played from inside, as the outside review did:
//! system calls injected into a live worker with ptrace run with its real
//! uid, Landlock domain, no-new-privs, rlimits and system-call filter,
//! which is what a libclamav parser bug gives an attacker.
//!
//! The test attaches to the worker's main thread (`PTRACE_SEIZE` and
//! `PTRACE_INTERRUPT`), saves its registers, points the instruction pointer
//! at a `syscall` instruction found in the worker's own code, sets the
//! number and arguments, single-steps that one instruction, reads the
//! result, and puts everything back (registers and the scratch memory below
//! the stack pointer that held the arguments). The worker then goes on
//! serving, which the tests check too.
//!
//! Controls, so that a broken injection cannot pass for a denial:
//! `getpid` must return the worker's pid, `getuid` the service user,
//! `getsockopt(SO_TYPE)` on one of the worker's sockets must succeed and
//! write its type through a pointer (memory arguments work), and the same
//! injection into a worker running without the filter
//! (`sandbox.seccomp = "best-effort"` under a filter that refuses to
//! install ours) must create a socket and connect to the daemon's own
//! socket: the attack of the review.
//!
//! x86-64 only (registers and the `syscall` instruction); needs root
//! (CAP_SYS_PTRACE for a process of another uid). Elsewhere it says why it
//! skips.

mod common;

use std::time::Duration;

use common::client::{instream, show, talk};
use common::daemons::Daemon;
use common::{eicar, TestDb};

/// What the attack needs: an x86-64 machine (the injection is written for
/// its registers) and root (to ptrace a worker of another uid).
macro_rules! can_attack {
    () => {
        require!(common::require::need(
            "x86-64",
            cfg!(target_arch = "x86_64").then_some(()),
            "the system-call injection is written for x86-64 registers",
            "run the tests on an x86-64 machine",
        ));
        require_root!("it ptraces a worker of another uid");
    };
}

/// The daemon's Unix socket has mode 0666 (as Debian's); this lets the
/// service user traverse its directory, so that only the sandbox stands
/// between a worker and the socket.
fn open_to_everyone(d: &Daemon) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn still_serves(d: &Daemon, worker: i32) {
    let reply = talk(
        &d.unix_addr(),
        &[&instream(b"zINSTREAM\0", &eicar(), 4096)],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        show(&reply),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    // Root's worker, the one attacked, is alive and served the request.
    assert_eq!(d.worker_of("uid=0"), worker, "the same worker serves on");
    assert!(d.workers().contains(&worker));
}

/// A descriptor of the worker that is a socket (its control channel, a
/// client connection, …).
fn a_socket_of(pid: i32) -> i32 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .expect("the worker holds no socket")
}

#[test]
fn inside_a_worker_socket_and_connect_are_denied() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let d = Daemon::clamsentry(db.path(), &[("limits", "standby-workers = 1")]);
        open_to_everyone(&d);
        let worker = d.worker_of("uid=0");
        let held = a_socket_of(worker);
        let mut w = inject::Injector::attach(worker);
        let e = |errno: i32| -i64::from(errno);

        // Controls: the injected calls run in the worker, as its user.
        assert_eq!(w.syscall(libc::SYS_getpid, &[]), i64::from(worker));
        assert_eq!(
            w.syscall(libc::SYS_getuid, &[]),
            i64::from(common::service_user().0)
        );
        let (ty, len) = (w.scratch(0), w.scratch(8));
        w.poke(len, &4u32.to_ne_bytes());
        assert_eq!(
            w.syscall(
                libc::SYS_getsockopt,
                &[
                    held as u64,
                    libc::SOL_SOCKET as u64,
                    libc::SO_TYPE as u64,
                    ty,
                    len
                ]
            ),
            0,
            "getsockopt on the worker's own socket {held}"
        );
        let got = i32::from_ne_bytes(w.peek(ty, 4).try_into().unwrap());
        assert!(
            [libc::SOCK_STREAM, libc::SOCK_SEQPACKET, libc::SOCK_DGRAM].contains(&got),
            "{got}"
        );
        // Landlock: the review's first attempt.
        let passwd = w.scratch(64);
        w.poke(passwd, b"/etc/passwd\0");
        assert_eq!(
            w.syscall(
                libc::SYS_openat,
                &[libc::AT_FDCWD as u64, passwd, libc::O_RDONLY as u64]
            ),
            e(libc::EACCES)
        );

        // The filters: no socket of any family, no pair, no io_uring, no
        // user namespace, no process.
        for (family, ty) in [
            (libc::AF_UNIX, libc::SOCK_STREAM),
            (libc::AF_UNIX, libc::SOCK_DGRAM),
            (libc::AF_INET, libc::SOCK_STREAM),
            (libc::AF_INET, libc::SOCK_DGRAM),
            (libc::AF_INET6, libc::SOCK_STREAM),
            (libc::AF_NETLINK, libc::SOCK_RAW),
        ] {
            assert_eq!(
                w.syscall(libc::SYS_socket, &[family as u64, ty as u64, 0]),
                e(libc::EPERM),
                "socket({family}, {ty})"
            );
        }
        let pair = w.scratch(128);
        assert_eq!(
            w.syscall(
                libc::SYS_socketpair,
                &[libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, pair]
            ),
            e(libc::EPERM)
        );
        let params = w.scratch(256);
        w.poke(params, &[0u8; 120]);
        assert_eq!(
            w.syscall(libc::SYS_io_uring_setup, &[1, params]),
            e(libc::EPERM)
        );
        assert_eq!(
            w.syscall(libc::SYS_unshare, &[libc::CLONE_NEWUSER as u64]),
            e(libc::EPERM)
        );
        // No process: the worker's own layer answers before RLIMIT_NPROC
        // (EAGAIN) is looked at.
        assert_eq!(w.syscall(libc::SYS_fork, &[]), e(libc::EPERM));
        assert_eq!(
            w.syscall(libc::SYS_clone, &[libc::SIGCHLD as u64, 0, 0, 0, 0]),
            e(libc::EPERM)
        );
        // connect() to the daemon's own socket, on a socket the worker
        // holds: without the filter the kernel would answer EISCONN (or
        // connect); the filter answers before it looks at the descriptor.
        let (addr, addr_len) = w.sockaddr_un(w.scratch(512), &d.unix);
        assert_eq!(
            w.syscall(libc::SYS_connect, &[held as u64, addr, addr_len]),
            e(libc::EPERM)
        );
        assert_eq!(
            w.syscall(libc::SYS_connect, &[u64::MAX, addr, addr_len]),
            e(libc::EPERM),
            "denied before the descriptor is looked at (not EBADF)"
        );
        w.detach();
        still_serves(&d, worker);
    }
}

#[test]
fn without_the_filter_the_same_injection_reaches_the_daemon() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let d = Daemon::launch(
            db.path(),
            &[
                ("limits", "standby-workers = 1"),
                ("sandbox", "seccomp = \"best-effort\""),
            ],
            common::seccomp::hidden_seccomp(true),
        );
        assert!(
            d.log().contains("running without the system-call filter"),
            "{}",
            d.log()
        );
        open_to_everyone(&d);
        let worker = d.worker_of("uid=0");
        let mut w = inject::Injector::attach(worker);
        assert_eq!(w.syscall(libc::SYS_getpid, &[]), i64::from(worker));
        let fd = w.syscall(
            libc::SYS_socket,
            &[libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0],
        );
        assert!(fd >= 0, "socket() without the filter: {fd}");
        let (addr, addr_len) = w.sockaddr_un(w.scratch(512), &d.unix);
        assert_eq!(
            w.syscall(libc::SYS_connect, &[fd as u64, addr, addr_len]),
            0,
            "Landlock ABI < 9 lets a worker connect to the daemon's own socket"
        );
        assert_eq!(w.syscall(libc::SYS_close, &[fd as u64]), 0);
        // The kernel alone lets a worker make System V objects and read
        // (or set) the limits of the engine holder, a process of its uid.
        let id = w.syscall(
            libc::SYS_shmget,
            &[
                libc::IPC_PRIVATE as u64,
                4096,
                (libc::IPC_CREAT | 0o600) as u64,
            ],
        );
        assert!(id >= 0, "shmget() without the filter: {id}");
        assert_eq!(
            w.syscall(libc::SYS_shmctl, &[id as u64, libc::IPC_RMID as u64, 0]),
            0
        );
        let holder = d.zygotes()[0];
        let old = w.scratch(16);
        assert_eq!(
            w.syscall(
                libc::SYS_prlimit64,
                &[holder as u64, libc::RLIMIT_CPU as u64, 0, old]
            ),
            0,
            "prlimit64 on the engine holder without the filter"
        );
        w.detach();
        still_serves(&d, worker);
    }
}

/// The System V objects whose owner is `uid` (`/proc/sysvipc/*`), as
/// "kind key id" lines.
fn sysv_objects_of(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["shm", "msg", "sem"] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap();
        // Header: key, id, perms, …, uid gid cuid cgid (the uid column's
        // place differs between the three files).
        let names: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
        let at = names.iter().position(|n| *n == "uid").unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(at) == Some(&uid.to_string().as_str()) {
                out.push(format!("{kind} {} {}", f[0], f[1]));
            }
        }
    }
    out
}

/// System V IPC from inside each filtered child (a worker, the engine
/// holder, the observer): every call is refused, no object appears for
/// the service user, and the worker serves on.
#[test]
fn inside_a_worker_system_v_ipc_is_denied() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let metrics = format!("listen = \"127.0.0.1:{}\"", common::daemons::free_port());
        let d = Daemon::clamsentry(
            db.path(),
            &[("limits", "standby-workers = 1"), ("metrics", &metrics)],
        );
        let worker = d.worker_of("uid=0");
        let holder = d.zygotes()[0];
        let observer = d.observer();
        let uid = common::service_user().0;
        // (Compared, not required empty: a run without the filter leaves
        // objects behind, which is the point.)
        let before = sysv_objects_of(uid);
        let e = -i64::from(libc::EPERM);
        let create = (libc::IPC_CREAT | 0o666) as u64;
        for (who, pid) in [
            ("worker", worker),
            ("engine holder", holder),
            ("observer", observer),
        ] {
            let mut w = inject::Injector::attach(pid);
            assert_eq!(w.syscall(libc::SYS_getpid, &[]), i64::from(pid), "{who}");
            assert_eq!(w.syscall(libc::SYS_getuid, &[]), i64::from(uid), "{who}");
            let private = libc::IPC_PRIVATE as u64;
            for (name, nr, args) in [
                ("shmget", libc::SYS_shmget, vec![private, 1 << 20, create]),
                (
                    "shmget key",
                    libc::SYS_shmget,
                    vec![0x636c_616d, 1 << 20, create],
                ),
                ("msgget", libc::SYS_msgget, vec![private, create]),
                ("semget", libc::SYS_semget, vec![private, 1, create]),
                // On objects that exist or not: refused before the id is
                // looked at (not EINVAL).
                ("shmat", libc::SYS_shmat, vec![0, 0, 0]),
                (
                    "shmctl",
                    libc::SYS_shmctl,
                    vec![0, libc::IPC_STAT as u64, w.scratch(0)],
                ),
                ("msgsnd", libc::SYS_msgsnd, vec![0, w.scratch(0), 8, 0]),
                ("semop", libc::SYS_semop, vec![0, w.scratch(0), 1]),
            ] {
                assert_eq!(w.syscall(nr, &args), e, "{name} in the {who}");
            }
            w.detach();
        }
        assert_eq!(sysv_objects_of(uid), before);
        still_serves(&d, worker);
    }
}

/// `(soft RLIMIT_CPU as /proc shows it, nice, scheduling policy)` of `pid`.
fn limits_and_scheduling(pid: i32) -> (String, i64, i64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let cpu = limits
        .lines()
        .find(|l| l.starts_with("Max cpu time"))
        .unwrap()
        .to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After "PID (COMM)": field 3 is the state; nice is field 19, the
    // policy field 41.
    let tail: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (
        cpu,
        tail[19 - 3].parse().unwrap(),
        tail[41 - 3].parse().unwrap(),
    )
}

/// From inside worker A, the rlimits, priority, scheduler and I/O priority
/// of another worker and of the engine holder (the same uid, so the kernel
/// alone would allow it) cannot be changed; A's own can.
#[test]
fn inside_a_worker_other_processes_limits_and_priority_are_denied() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let d = Daemon::clamsentry(db.path(), &[("limits", "standby-workers = 1")]);
        let a = d.worker_of("uid=0");
        // The standby forked to replace the one root's connection took.
        let b = *d
            .wait_workers(2)
            .iter()
            .find(|&&p| p != a)
            .expect("a second worker");
        let holder = d.zygotes()[0];
        let mut w = inject::Injector::attach(a);
        assert_eq!(w.syscall(libc::SYS_getpid, &[]), i64::from(a));
        let e = -i64::from(libc::EPERM);
        let (new, old) = (w.scratch(0), w.scratch(16));
        // RLIMIT_CPU 1 s: the target would die at its next second of CPU.
        w.poke(new, &[1u64.to_ne_bytes(), 1u64.to_ne_bytes()].concat());
        let param = w.scratch(64);
        w.poke(param, &0u32.to_ne_bytes());
        const IOPRIO_WHO_PROCESS: u64 = 1;
        // IOPRIO_CLASS_IDLE << 13.
        const IOPRIO_IDLE: u64 = 3 << 13;
        for (who, pid) in [("worker B", b), ("the engine holder", holder)] {
            let before = limits_and_scheduling(pid);
            let t = pid as u64;
            let cpu = libc::RLIMIT_CPU as u64;
            for (name, nr, args) in [
                ("prlimit64 set", libc::SYS_prlimit64, vec![t, cpu, new, 0]),
                ("prlimit64 read", libc::SYS_prlimit64, vec![t, cpu, 0, old]),
                (
                    "setpriority",
                    libc::SYS_setpriority,
                    vec![libc::PRIO_PROCESS as u64, t, 19],
                ),
                (
                    "sched_setscheduler",
                    libc::SYS_sched_setscheduler,
                    vec![t, libc::SCHED_IDLE as u64, param],
                ),
                ("sched_setparam", libc::SYS_sched_setparam, vec![t, param]),
                (
                    "sched_setaffinity",
                    libc::SYS_sched_setaffinity,
                    vec![t, 8, param],
                ),
                (
                    "ioprio_set",
                    libc::SYS_ioprio_set,
                    vec![IOPRIO_WHO_PROCESS, t, IOPRIO_IDLE],
                ),
            ] {
                assert_eq!(w.syscall(nr, &args), e, "{name} on {who} ({pid})");
            }
            assert_eq!(limits_and_scheduling(pid), before, "{who} unchanged");
            assert_eq!(before.1, 0, "{who} not reniced");
        }
        // Every process of the group or the user (0: the caller's own,
        // which hold B and the engine holder too).
        let before = [limits_and_scheduling(b), limits_and_scheduling(holder)];
        assert_eq!(
            w.syscall(libc::SYS_setpriority, &[libc::PRIO_PGRP as u64, 0, 19]),
            e
        );
        assert_eq!(
            w.syscall(libc::SYS_setpriority, &[libc::PRIO_USER as u64, 0, 19]),
            e
        );
        assert_eq!(
            w.syscall(libc::SYS_ioprio_set, &[3, 0, IOPRIO_IDLE]),
            e,
            "IOPRIO_WHO_USER"
        );
        assert_eq!(
            [limits_and_scheduling(b), limits_and_scheduling(holder)],
            before
        );
        // Its own, as glibc's getrlimit/setrlimit make them: read, then set
        // to what it was (the worker keeps its limits).
        assert_eq!(
            w.syscall(libc::SYS_prlimit64, &[0, libc::RLIMIT_CPU as u64, 0, old]),
            0
        );
        assert_eq!(
            w.syscall(libc::SYS_prlimit64, &[0, libc::RLIMIT_CPU as u64, old, 0]),
            0
        );
        assert_eq!(
            w.syscall(libc::SYS_setpriority, &[libc::PRIO_PROCESS as u64, 0, 0]),
            0
        );
        w.detach();
        still_serves(&d, a);
        assert!(d.workers().contains(&b), "worker B lives");
    }
}

/// Where a descriptor of `pid` points.
fn fd_target(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// No child holds the daemon's stdout or stderr (under systemd, the
/// journal stream): stdin and stdout are /dev/null; stderr is a pipe of
/// the child's own, which the supervisor relays as marked, budgeted
/// lines. Bytes written to descriptors 1 and 2 from inside a worker, the
/// engine holder and the observer reach the daemon's stdout never, and its
/// stderr only as lines marked `via=stderr` with the child's source.
#[test]
fn inside_a_worker_stdout_is_dev_null_and_stderr_is_relayed() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let metrics = format!("listen = \"127.0.0.1:{}\"", common::daemons::free_port());
        let out = tempfile::NamedTempFile::new().unwrap();
        let out_path = out.path().to_path_buf();
        let d = Daemon::launch(
            db.path(),
            &[("limits", "standby-workers = 1"), ("metrics", &metrics)],
            |l| {
                // The daemon's stdout is a file the test reads.
                let mut c = std::process::Command::new("sh");
                c.args(["-c", "exec \"$0\" --config \"$1\" >\"$2\""])
                    .arg(&l.bin)
                    .arg(&l.config)
                    .arg(&out_path);
                c
            },
        );
        let children = [
            ("worker", d.worker_of("uid=0")),
            ("engine holder", d.zygotes()[0]),
            ("observer", d.observer()),
        ];
        let daemon_out = fd_target(d.pid(), 1);
        let daemon_err = fd_target(d.pid(), 2);
        assert_eq!(daemon_out, out_path.to_string_lossy());
        for (who, pid) in children {
            assert_eq!(fd_target(pid, 0), "/dev/null", "{who}'s stdin");
            assert_eq!(fd_target(pid, 1), "/dev/null", "{who}'s stdout");
            let err = fd_target(pid, 2);
            assert!(err.starts_with("pipe:"), "{who}'s stderr is {err}");
            assert_ne!(err, daemon_err, "{who}");
        }
        for (who, pid) in children {
            let mut w = inject::Injector::attach(pid);
            let buf = w.scratch(0);
            let mark = |fd: i32| format!("forged-{fd}-{pid} level=ERROR source=supervisor\n");
            for fd in [1, 2] {
                let line = mark(fd);
                w.poke(buf, line.as_bytes());
                assert_eq!(
                    w.syscall(libc::SYS_write, &[fd as u64, buf, line.len() as u64]),
                    line.len() as i64,
                    "write({fd}) in the {who}"
                );
            }
            w.detach();
        }
        // The relay writes each stderr line once it has read it.
        let mut log = String::new();
        for (_, pid) in children {
            log = d.log_with(&format!("forged-2-{pid}"));
        }
        let stdout = std::fs::read_to_string(&out_path).unwrap();
        for (who, pid) in children {
            let (one, two) = (format!("forged-1-{pid}"), format!("forged-2-{pid}"));
            assert!(!stdout.contains(&one) && !stdout.contains(&two), "{stdout}");
            assert!(
                !log.contains(&one),
                "the {who}'s stdout reached the log:\n{log}"
            );
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&two)).collect();
            assert_eq!(lines.len(), 1, "{who}: {lines:?}");
            assert!(
                lines[0].contains("via=stderr") && !lines[0].starts_with("forged"),
                "the {who}'s stderr line is relayed, marked: {}",
                lines[0]
            );
        }
        still_serves(&d, children[0].1);
    }
}

#[cfg(target_arch = "x86_64")]
mod inject {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use nix::libc::user_regs_struct;
    use nix::sys::ptrace;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;

    /// A thread of another process, stopped, whose registers and scratch
    /// memory are put back by [`Injector::detach`] (or on drop).
    pub struct Injector {
        tid: Pid,
        saved: user_regs_struct,
        /// The address of a `syscall` instruction (0f 05) in its code.
        gadget: u64,
        /// Scratch memory: below the stack pointer and its red zone.
        scratch: u64,
        saved_scratch: Vec<u8>,
        mem: File,
        attached: bool,
    }

    const SCRATCH: usize = 4096;

    fn wait_stopped(tid: Pid) {
        match waitpid(tid, Some(WaitPidFlag::__WALL)).unwrap() {
            WaitStatus::Stopped(..) | WaitStatus::PtraceEvent(..) => {}
            other => panic!("the worker did not stop: {other:?}"),
        }
    }

    /// The first `syscall` instruction in an executable mapping of `pid`.
    /// Execution starts at the address found, so any two bytes 0f 05
    /// decode as `syscall` there.
    fn find_gadget(pid: i32, mem: &File) -> u64 {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next().unwrap(), f.next().unwrap());
            if !perms.contains('x') || line.contains("[vsyscall]") {
                continue;
            }
            let (lo, hi) = range.split_once('-').unwrap();
            let lo = u64::from_str_radix(lo, 16).unwrap();
            let hi = u64::from_str_radix(hi, 16).unwrap();
            let mut buf = vec![0u8; (hi - lo) as usize];
            if mem.read_exact_at(&mut buf, lo).is_err() {
                continue;
            }
            if let Some(i) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
                return lo + i as u64;
            }
        }
        panic!("no syscall instruction in the worker's code");
    }

    impl Injector {
        pub fn attach(pid: i32) -> Injector {
            let tid = Pid::from_raw(pid);
            ptrace::seize(tid, ptrace::Options::empty()).expect("PTRACE_SEIZE the worker");
            ptrace::interrupt(tid).unwrap();
            wait_stopped(tid);
            let saved = ptrace::getregs(tid).unwrap();
            let mem = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/{pid}/mem"))
                .unwrap();
            let gadget = find_gadget(pid, &mem);
            let scratch = (saved.rsp - 1024 - SCRATCH as u64) & !0xf;
            let mut saved_scratch = vec![0u8; SCRATCH];
            mem.read_exact_at(&mut saved_scratch, scratch).unwrap();
            Injector {
                tid,
                saved,
                gadget,
                scratch,
                saved_scratch,
                mem,
                attached: true,
            }
        }

        /// An address `offset` bytes into the scratch memory.
        pub fn scratch(&self, offset: u64) -> u64 {
            assert!(offset < SCRATCH as u64);
            self.scratch + offset
        }

        pub fn poke(&self, addr: u64, bytes: &[u8]) {
            self.mem.write_all_at(bytes, addr).unwrap();
        }

        pub fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0u8; len];
            self.mem.read_exact_at(&mut b, addr).unwrap();
            b
        }

        /// Writes a `sockaddr_un` for `path` at `at`; returns its address
        /// and length.
        pub fn sockaddr_un(&self, at: u64, path: &Path) -> (u64, u64) {
            use std::os::unix::ffi::OsStrExt;
            let mut sa = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
            sa.extend_from_slice(path.as_os_str().as_bytes());
            sa.push(0);
            assert!(sa.len() <= std::mem::size_of::<libc::sockaddr_un>());
            self.poke(at, &sa);
            (at, sa.len() as u64)
        }

        /// Runs system call `nr` with `args` in the stopped thread and
        /// returns what the kernel put in rax (a negative errno on failure).
        pub fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> i64 {
            let mut r = self.saved;
            r.rip = self.gadget;
            r.rax = nr as u64;
            // -1: the kernel must not treat this as the restart of the
            // call the thread was stopped in.
            r.orig_rax = u64::MAX;
            let a = |i: usize| args.get(i).copied().unwrap_or(0);
            (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a(0), a(1), a(2), a(3), a(4), a(5));
            ptrace::setregs(self.tid, r).unwrap();
            ptrace::step(self.tid, None).unwrap();
            wait_stopped(self.tid);
            let after = ptrace::getregs(self.tid).unwrap();
            assert_eq!(
                after.rip,
                self.gadget + 2,
                "the step ran exactly the syscall instruction"
            );
            after.rax as i64
        }

        /// Puts the registers and the scratch memory back and lets the
        /// thread go on (a call it was stopped in is restarted).
        pub fn detach(mut self) {
            self.restore();
        }

        fn restore(&mut self) {
            if !self.attached {
                return;
            }
            self.attached = false;
            let _ = self.mem.write_all_at(&self.saved_scratch, self.scratch);
            let _ = ptrace::setregs(self.tid, self.saved);
            let _ = ptrace::detach(self.tid, None);
        }
    }

    impl Drop for Injector {
        fn drop(&mut self) {
            self.restore();
        }
    }
}

/// A worker logs through the supervisor over its own channel: it holds no
/// datagram socket (journald's, `/dev/log`) from which it could send to any
/// path-named socket its user may write to, even with journald running, and
/// it cannot make one. Every descriptor it holds is asked for its type from
/// inside the worker.
#[test]
fn a_worker_holds_no_socket_that_reaches_anywhere() {
    can_attack!();
    #[cfg(target_arch = "x86_64")]
    {
        let db = TestDb::new();
        let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
python3 -c '
import ctypes, signal, socket, os
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: ends with the daemon
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/systemd/journal/tmp")
os.chmod("/run/systemd/journal/tmp", 0o666)
os.rename("/run/systemd/journal/tmp", "/run/systemd/journal/socket")
while True: s.recv(1 << 20)
' &
while [ ! -S /run/systemd/journal/socket ]; do sleep 0.05; done
exec "$@"
"#;
        let d = Daemon::launch(
            db.path(),
            &[
                ("limits", "standby-workers = 1"),
                ("log", "target = \"journald\""),
            ],
            |l| {
                let mut c = std::process::Command::new("unshare");
                c.args([
                    "--mount",
                    "--propagation",
                    "private",
                    "bash",
                    "-c",
                    script,
                    "sh",
                ])
                .arg(&l.bin)
                .arg("--config")
                .arg(&l.config);
                c
            },
        );
        let worker = d.worker();
        let mut w = inject::Injector::attach(worker);
        let (ty, len) = (w.scratch(0), w.scratch(8));
        let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        let mut kinds = Vec::new();
        for fd in fds {
            w.poke(len, &4u32.to_ne_bytes());
            let r = w.syscall(
                libc::SYS_getsockopt,
                &[
                    fd as u64,
                    libc::SOL_SOCKET as u64,
                    libc::SO_TYPE as u64,
                    ty,
                    len,
                ],
            );
            if r == 0 {
                kinds.push((fd, i32::from_ne_bytes(w.peek(ty, 4).try_into().unwrap())));
            }
        }
        // And it cannot make one.
        let made = w.syscall(
            libc::SYS_socket,
            &[libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0],
        );
        w.detach();
        assert!(!kinds.is_empty(), "the worker holds its channels");
        assert!(
            kinds.iter().all(|(_, t)| *t != libc::SOCK_DGRAM),
            "a datagram socket in the worker: {kinds:?}"
        );
        assert_eq!(made, -i64::from(libc::EPERM));
    }
}
