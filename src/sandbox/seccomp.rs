//! The system-call filters of the engine holder and its workers
//! (seccomp-BPF), for what Landlock cannot say.
//!
//! Landlock below ABI 9 does not cover path-named Unix sockets, and at any
//! ABI it covers only TCP: a worker taken over by a hostile file could
//! `connect()` to the daemon's own socket (whose supervisor then hands the
//! connection to a worker and opens files for it), to D-Bus, to a database
//! or to the MTA, and could use UDP, netlink and raw sockets. A worker needs
//! none of that: it only reads and writes the descriptors it is given
//! (client connections, its two channels, the journald socket opened at
//! start), polls them, maps memory, waits on futexes, reads the clock and
//! works in its temporary directory. So the filters deny, with `EPERM`,
//! making or connecting sockets, a list of kernel interfaces that such a
//! process never uses and that exploits like, System V IPC, and changing
//! the limits or scheduling of any process but itself (the tables give
//! each reason). Everything else is allowed: a deny list, because an allow list
//! would have to be proved complete for every code path of libclamav (its
//! unpackers, bytecode interpreter, temp-file handling), tokio and std, and
//! a call it missed would turn a rare file into a failed scan.
//!
//! # Two layers
//!
//! * [`Layer::EngineHolder`], installed by the engine holder when it
//!   demotes itself, before any worker exists, and inherited by every
//!   worker through `fork`: [`DENIED`] and [`CONDITIONAL`].
//! * [`Layer::Worker`], added by each worker once its runtime exists and
//!   before its scan threads start (so while it has one thread): `socketpair`
//!   and making processes ([`WORKER_DENIED`]). The engine holder needs to
//!   `fork`, and each worker's tokio runtime makes one socket pair for its
//!   signal driver when it starts; a pair made in the engine holder instead
//!   would be shared by every worker, a channel between workers that serve
//!   different clients.
//!
//! # Shape of the program
//!
//! 1. The architecture must be the one this binary was built for, else the
//!    process is killed (a 64-bit process can still make 32-bit system
//!    calls with `int 0x80`, whose numbers mean other calls).
//! 2. x86-64 only: a number with the x32 bit (`0x4000_0000`) gets `EPERM`.
//!    x32 calls are checked against the same architecture value as native
//!    ones, under other numbers, so without this a denied call would pass
//!    as its x32 twin. No honest code here makes x32 calls.
//! 3. `clone3` gets `ENOSYS`: its flags are in memory, which a filter cannot
//!    read, so it could create namespaces; glibc (2.34 and later) then falls
//!    back to `clone`, whose flags the filter checks (step 4). Threads and
//!    the engine holder's `fork` keep working.
//! 4. The layer's table, compiled by `seccompiler`. Engine holder: every
//!    [`DENIED`] call, `clone` with a namespace flag, `personality` other
//!    than a query or `PER_LINUX`, and the two `ioctl`s that push input into
//!    a terminal, get `EPERM`; so do the [`SELF_ONLY`] calls (`prlimit64`,
//!    `setpriority`, `sched_set*`, `ioprio_set`) when they name a process
//!    other than the caller (0), or a process group or user. Worker: `socketpair`, `fork`, `vfork` and
//!    `clone` without `CLONE_THREAD` get `EPERM`. Everything else is
//!    allowed.
//!
//! Steps 1–3 are written out here because `seccompiler` cannot say them
//! (one action per filter, no range of numbers); they come first, with
//! their own architecture check, so that step 4 only ever sees native
//! numbers.
//!
//! # Why `EPERM` and not killing the process
//!
//! The attacker gets nothing from either answer. A kill would end every
//! connection the worker holds for honest clients of the same identity
//! whenever libclamav, glibc or tokio tried a denied call on some rare
//! path (glibc's NSS code, for instance, tries sockets), and `sandbox-check`
//! and the tests could no longer see the denial as an error. Only a
//! foreign architecture is a kill: no code of ours runs there.
//!
//! # Cost
//!
//! Since Linux 5.11 the kernel runs the program once per system call
//! number when a filter is installed and caches the numbers whose answer
//! is always "allow"; only `clone`, `personality`, `ioctl` and the
//! [`SELF_ONLY`] calls (those that look at arguments) and the denied calls
//! run the filters afterwards.
//! On x86-64 the engine holder's program is 492 instructions, the
//! worker's 36.
#![allow(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{SandboxError, SeccompState};

/// Which filter to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// [`DENIED`] and [`CONDITIONAL`]; installed by [`super::demote`].
    EngineHolder,
    /// The same but `accept`/`accept4`: a helper that serves listening
    /// sockets it was given (the observer), and still cannot make or
    /// connect one.
    Listener,
    /// [`WORKER_DENIED`], on top of the inherited engine holder's layer.
    Worker,
}

/// A group of denied system calls and the reason for all of them.
pub struct Group {
    pub why: &'static str,
    pub calls: &'static [(&'static str, libc::c_long)],
}

/// Every system call the filter answers with `EPERM` whatever its
/// arguments, with the reason. (`clone`, `personality` and `ioctl` are
/// denied only for some arguments, see [`CONDITIONAL`], and so are the
/// [`SELF_ONLY`] calls; `clone3` gets
/// `ENOSYS`; x32 numbers get `EPERM`.)
pub const DENIED: &[Group] = &[
    Group {
        why: "new sockets and connections: Landlock below ABI 9 does not cover path-named Unix \
              sockets and covers only TCP; a worker uses only the sockets it is given",
        calls: &[
            ("socket", libc::SYS_socket),
            ("connect", libc::SYS_connect),
            ("bind", libc::SYS_bind),
            ("listen", libc::SYS_listen),
            ("accept", libc::SYS_accept),
            ("accept4", libc::SYS_accept4),
        ],
    },
    Group {
        why: "io_uring: its requests (connect, openat, …) run in kernel workers, out of sight of \
              a filter on the calling thread",
        calls: &[
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("io_uring_enter", libc::SYS_io_uring_enter),
            ("io_uring_register", libc::SYS_io_uring_register),
        ],
    },
    Group {
        why: "other processes' memory and descriptors (the engine holder and sibling workers \
              run as the same user)",
        calls: &[
            ("ptrace", libc::SYS_ptrace),
            ("process_vm_readv", libc::SYS_process_vm_readv),
            ("process_vm_writev", libc::SYS_process_vm_writev),
            ("pidfd_getfd", libc::SYS_pidfd_getfd),
            ("kcmp", libc::SYS_kcmp),
        ],
    },
    Group {
        why: "kernel interfaces a scanner never uses and exploits often do (eBPF, perf events, \
              userfaultfd to win races, the key store)",
        calls: &[
            ("bpf", libc::SYS_bpf),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("add_key", libc::SYS_add_key),
            ("request_key", libc::SYS_request_key),
            ("keyctl", libc::SYS_keyctl),
        ],
    },
    Group {
        why: "namespaces: an unprivileged user namespace gives every capability inside it and \
              opens kernel code (netfilter, mounts) to the process",
        calls: &[("unshare", libc::SYS_unshare), ("setns", libc::SYS_setns)],
    },
    Group {
        why: "mounts and root changes (need capabilities the process no longer has; denied \
              here too in case a namespace gives them back)",
        calls: &[
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("pivot_root", libc::SYS_pivot_root),
            ("chroot", libc::SYS_chroot),
            ("open_tree", libc::SYS_open_tree),
            ("move_mount", libc::SYS_move_mount),
            ("fsopen", libc::SYS_fsopen),
            ("fsconfig", libc::SYS_fsconfig),
            ("fsmount", libc::SYS_fsmount),
            ("fspick", libc::SYS_fspick),
            ("mount_setattr", libc::SYS_mount_setattr),
        ],
    },
    Group {
        why: "running programs: Landlock already denies execution; this holds where Landlock \
              is missing (sandbox.landlock = \"best-effort\")",
        calls: &[
            ("execve", libc::SYS_execve),
            ("execveat", libc::SYS_execveat),
        ],
    },
    Group {
        why: "system administration, file handles and the kernel log: all need capabilities \
              the process has dropped; a second lock costs nothing",
        calls: &[
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("delete_module", libc::SYS_delete_module),
            ("kexec_load", libc::SYS_kexec_load),
            ("kexec_file_load", libc::SYS_kexec_file_load),
            ("reboot", libc::SYS_reboot),
            ("swapon", libc::SYS_swapon),
            ("swapoff", libc::SYS_swapoff),
            ("acct", libc::SYS_acct),
            ("settimeofday", libc::SYS_settimeofday),
            ("clock_settime", libc::SYS_clock_settime),
            ("clock_adjtime", libc::SYS_clock_adjtime),
            ("adjtimex", libc::SYS_adjtimex),
            ("sethostname", libc::SYS_sethostname),
            ("setdomainname", libc::SYS_setdomainname),
            ("syslog", libc::SYS_syslog),
            ("quotactl", libc::SYS_quotactl),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("name_to_handle_at", libc::SYS_name_to_handle_at),
            ("fanotify_init", libc::SYS_fanotify_init),
            ("vhangup", libc::SYS_vhangup),
        ],
    },
    Group {
        why: "System V IPC: its objects outlive the process and belong to the service user, so \
              every worker could reach them (a channel between workers that serve different \
              clients), and their memory is bounded by no rlimit of the worker (the multiplexer \
              `ipc` exists on none of the architectures this filter is built for)",
        calls: &[
            ("shmget", libc::SYS_shmget),
            ("shmat", libc::SYS_shmat),
            ("shmdt", libc::SYS_shmdt),
            ("shmctl", libc::SYS_shmctl),
            ("msgget", libc::SYS_msgget),
            ("msgsnd", libc::SYS_msgsnd),
            ("msgrcv", libc::SYS_msgrcv),
            ("msgctl", libc::SYS_msgctl),
            ("semget", libc::SYS_semget),
            ("semop", libc::SYS_semop),
            ("semtimedop", libc::SYS_semtimedop),
            ("semctl", libc::SYS_semctl),
        ],
    },
    #[cfg(target_arch = "x86_64")]
    Group {
        why: "x86 I/O ports and segment tables (modify_ldt is an old exploit aid)",
        calls: &[
            ("iopl", libc::SYS_iopl),
            ("ioperm", libc::SYS_ioperm),
            ("modify_ldt", libc::SYS_modify_ldt),
        ],
    },
];

/// What each worker denies on top of the engine holder's layer, whatever
/// the arguments (and `clone` without `CLONE_THREAD`).
pub const WORKER_DENIED: Group = Group {
    why: "a worker makes no socket pair (its runtime made the one it needs) and no process \
          (it has its threads; RLIMIT_NPROC 0 stops a fork too, but not for a worker left \
          running as root); the engine holder needs both",
    calls: &[
        ("socketpair", libc::SYS_socketpair),
        #[cfg(target_arch = "x86_64")]
        ("fork", libc::SYS_fork),
        #[cfg(target_arch = "x86_64")]
        ("vfork", libc::SYS_vfork),
    ],
};

/// The namespace flags of `clone` (`CLONE_NEWTIME` exists only for
/// `clone3` and `unshare`, both refused whole).
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// `personality(0xffffffff)` only reads the current value.
pub const PERSONALITY_QUERY: u64 = 0xffff_ffff;

/// `PER_LINUX` of <linux/personality.h>, the personality every process
/// here has.
pub const PER_LINUX: u64 = 0;

/// The calls denied for some arguments only, and why.
pub const CONDITIONAL: &[(&str, &str)] = &[
    (
        "clone",
        "with any CLONE_NEW* flag: a new namespace (see unshare); plain clone is how threads \
         and the engine holder's fork are made",
    ),
    (
        "personality",
        "anything but a query or PER_LINUX: READ_IMPLIES_EXEC makes every readable mapping \
         executable, ADDR_NO_RANDOMIZE turns off address randomisation for a later exec",
    ),
    (
        "ioctl",
        "TIOCSTI and TIOCLINUX: push keystrokes into the terminal an inherited descriptor \
         (stderr in the foreground) belongs to, to be run by the administrator's shell; \
         Landlock's device-ioctl right does not cover descriptors opened before the sandbox",
    ),
];

/// A call that changes a process's limits or scheduling and names the
/// process in an argument: allowed only on the caller itself.
pub struct SelfOnly {
    pub name: &'static str,
    pub nr: libc::c_long,
    /// The argument naming the process (a pid, a thread id or a group or
    /// user id, see `kind`): only 0, the caller, is allowed.
    pub target: u8,
    /// The argument saying what `target` names, and the only value allowed
    /// (a process, not a process group or a user), for the calls that
    /// have one.
    pub kind: Option<(u8, u64)>,
}

/// Why [`SELF_ONLY`] calls may not name another process.
pub const SELF_ONLY_WHY: &str = "the engine holder, the observer and every worker run as the \
     same user, so the kernel lets each of them lower another's rlimits, renice it, set it to \
     SCHED_IDLE or pin it to one CPU: one client slowing or breaking another's scans; none of \
     our code, std, tokio or libclamav calls these for a process other than itself, and \
     glibc's setrlimit and nice pass 0";

/// `IOPRIO_WHO_PROCESS` of <linux/ioprio.h> (not in the libc crate).
pub const IOPRIO_WHO_PROCESS: u64 = 1;

/// `PRIO_PROCESS` of <sys/resource.h>.
pub const PRIO_PROCESS: u64 = 0;

/// The calls allowed only with 0 as the process (and, where the call can
/// name a process group or a user instead, only as a process).
pub const SELF_ONLY: &[SelfOnly] = &[
    SelfOnly {
        name: "prlimit64",
        nr: libc::SYS_prlimit64,
        target: 0,
        kind: None,
    },
    SelfOnly {
        name: "setpriority",
        nr: libc::SYS_setpriority,
        target: 1,
        kind: Some((0, PRIO_PROCESS)),
    },
    SelfOnly {
        name: "sched_setscheduler",
        nr: libc::SYS_sched_setscheduler,
        target: 0,
        kind: None,
    },
    SelfOnly {
        name: "sched_setparam",
        nr: libc::SYS_sched_setparam,
        target: 0,
        kind: None,
    },
    SelfOnly {
        name: "sched_setattr",
        nr: libc::SYS_sched_setattr,
        target: 0,
        kind: None,
    },
    SelfOnly {
        name: "sched_setaffinity",
        nr: libc::SYS_sched_setaffinity,
        target: 0,
        kind: None,
    },
    SelfOnly {
        name: "ioprio_set",
        nr: libc::SYS_ioprio_set,
        target: 1,
        kind: Some((0, IOPRIO_WHO_PROCESS)),
    },
];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// ioctl request numbers: `Ioctl` is u64 with glibc, i32 elsewhere.
#[allow(clippy::unnecessary_cast)]
const TIOCSTI: u64 = libc::TIOCSTI as u64;
#[allow(clippy::unnecessary_cast)]
const TIOCLINUX: u64 = libc::TIOCLINUX as u64;

// cBPF opcodes, as in <linux/filter.h>: BPF_LD|BPF_W|BPF_ABS,
// BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// The audit architecture value of the running binary's system calls.
fn audit_arch() -> Option<(u32, TargetArch)> {
    // AUDIT_ARCH_* of <linux/audit.h>: the ELF machine, 64-bit, little endian.
    if cfg!(target_arch = "x86_64") {
        Some((62 | 0x8000_0000 | 0x4000_0000, TargetArch::x86_64))
    } else if cfg!(target_arch = "aarch64") {
        Some((183 | 0x8000_0000 | 0x4000_0000, TargetArch::aarch64))
    } else if cfg!(target_arch = "riscv64") {
        Some((243 | 0x8000_0000 | 0x4000_0000, TargetArch::riscv64))
    } else {
        None
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

/// The engine holder's table: [`DENIED`] and [`CONDITIONAL`].
fn engine_holder_rules(accepts: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for group in DENIED {
        for (_, nr) in group.calls {
            if accepts && (*nr == libc::SYS_accept || *nr == libc::SYS_accept4) {
                continue;
            }
            rules.insert(*nr, Vec::new());
        }
    }
    // clone(flags, …): flags is the first argument on every architecture
    // here; the namespace flags are in its low 32 bits.
    let clone = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|&flag| rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone);
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![
            cond(0, SeccompCmpOp::Ne, PERSONALITY_QUERY)?,
            cond(0, SeccompCmpOp::Ne, PER_LINUX)?,
        ])?],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, SeccompCmpOp::Eq, TIOCSTI)?])?,
            rule(vec![cond(1, SeccompCmpOp::Eq, TIOCLINUX)?])?,
        ],
    );
    for call in SELF_ONLY {
        rules.insert(call.nr, self_only_rules(call)?);
    }
    Ok(rules)
}

/// The rules under which a [`SELF_ONLY`] call is denied: it names a
/// process other than 0, or something other than a process. The
/// comparison is of the low 32 bits, as the kernel reads a `pid_t` or an
/// `int`.
fn self_only_rules(call: &SelfOnly) -> Result<Vec<SeccompRule>, String> {
    let mut out = vec![rule(vec![cond(call.target, SeccompCmpOp::Ne, 0)?])?];
    if let Some((arg, value)) = call.kind {
        out.push(rule(vec![cond(arg, SeccompCmpOp::Ne, value)?])?);
    }
    Ok(out)
}

/// The worker's table: [`WORKER_DENIED`], and `clone` without
/// `CLONE_THREAD` (a process; threads keep working).
fn worker_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in WORKER_DENIED.calls {
        rules.insert(*nr, Vec::new());
    }
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(thread), 0)?])?],
    );
    Ok(rules)
}

/// The program of `layer` (see the module documentation), or why there is
/// none for this architecture.
pub fn program(layer: Layer) -> Result<Vec<sock_filter>, String> {
    let (arch, target) = audit_arch().ok_or_else(|| {
        format!(
            "no system-call filter is defined for {}",
            std::env::consts::ARCH
        )
    })?;
    let rules = match layer {
        Layer::EngineHolder => engine_holder_rules(false)?,
        Layer::Listener => engine_holder_rules(true)?,
        Layer::Worker => worker_rules()?,
    };
    let table: Vec<sock_filter> = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target,
    )
    .and_then(|f| f.try_into())
    .map_err(|e| e.to_string())?;

    let mut prog = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JEQ_K, arch, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        prog.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    }
    prog.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    prog.push(stmt(BPF_RET_K, errno(libc::ENOSYS)));
    prog.extend(table);
    if prog.len() > usize::from(u16::MAX) {
        return Err(format!(
            "the filter is too long ({} instructions)",
            prog.len()
        ));
    }
    Ok(prog)
}

/// Installs the program of `layer` on every thread of the process (the
/// calling thread and, through inheritance, every thread and child created
/// later). `no_new_privs` must be set (it is, by [`super::demote`]).
///
/// `seccomp(2)` with `SECCOMP_FILTER_FLAG_TSYNC` first; when that call is
/// itself refused (`EPERM` or `ENOSYS`: a service manager's or container's
/// filter that lists `prctl` but not `seccomp`, such as systemd's
/// `@system-service`), `prctl(PR_SET_SECCOMP)`, which applies to the
/// calling thread only and is therefore used only when the process has one
/// thread. A kernel or container that allows neither gives
/// [`SeccompState::Failed`] with the reason; the caller decides
/// (`sandbox.seccomp`). A filter that is installed but does not deny
/// `socket()` (engine holder) or `socketpair()` (worker) is an error.
pub fn install(layer: Layer) -> Result<SeccompState, SandboxError> {
    let prog = match program(layer) {
        Ok(p) => p,
        Err(reason) => return Ok(SeccompState::Failed { reason }),
    };
    let filters: Vec<libc::sock_filter> = prog
        .iter()
        .map(|f| libc::sock_filter {
            code: f.code,
            jt: f.jt,
            jf: f.jf,
            k: f.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        // program() keeps the length within u16.
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // libc: rustix has no seccomp(2) call.
    // SAFETY: `fprog` points to `filters`, which lives until the end of this
    // function; the kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc > 0 {
        return Err(SandboxError::step(
            "seccomp",
            format!("thread {rc} could not take the filter"),
        ));
    }
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        let refused = matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS));
        if !refused {
            return Ok(SeccompState::Failed {
                reason: format!("seccomp(SECCOMP_SET_MODE_FILTER): {e}"),
            });
        }
        // Both callers run with one thread (demote() checked before it
        // started; a worker seals itself before its scan threads start);
        // /proc may be hidden by Landlock by now.
        super::identity::check_single_threaded_or_unknown()?;
        // libc: rustix's set_secure_computing_mode cannot pass a filter.
        // SAFETY: as above; PR_SET_SECCOMP takes the mode and a pointer to
        // the program, which the kernel copies.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            let e2 = std::io::Error::last_os_error();
            return Ok(SeccompState::Failed {
                reason: format!(
                    "both seccomp() ({e}) and prctl(PR_SET_SECCOMP) ({e2}) were refused \
                     (under systemd: add seccomp or prctl to SystemCallFilter=)"
                ),
            });
        }
    }
    verify(layer)?;
    Ok(SeccompState::On)
}

/// The filter is in force: `socket()` (engine holder) or `socketpair()`
/// (worker) now fails with `EPERM`.
fn verify(layer: Layer) -> Result<(), SandboxError> {
    use rustix::net::{socket_with, socketpair, AddressFamily, SocketFlags, SocketType};
    let (call, result) = match layer {
        Layer::EngineHolder | Layer::Listener => (
            "socket()",
            socket_with(
                AddressFamily::UNIX,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .map(drop),
        ),
        Layer::Worker => (
            "socketpair()",
            socketpair(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .map(drop),
        ),
    };
    match result {
        Err(rustix::io::Errno::PERM) => Ok(()),
        Ok(()) => Err(SandboxError::verify(
            "seccomp",
            format!("{call} still works after the filter was installed"),
        )),
        Err(e) => Err(SandboxError::verify(
            "seccomp",
            format!("{call} failed with {e}, not with the filter's EPERM"),
        )),
    }
}

/// How many system calls the filter denies whatever their arguments.
pub fn denied_count() -> usize {
    DENIED.iter().map(|g| g.calls.len()).sum()
}

#[cfg(test)]
mod tests {
    //! The program run through a small classic-BPF interpreter: the kernel
    //! is not needed to check what it answers (the installed filter is
    //! checked for real by `tests/sandbox.rs`, `sandbox-check` and
    //! `tests/inside_worker.rs`).
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    /// `struct seccomp_data` and the BPF subset `seccompiler` and we emit.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let load = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                16..=63 if off % 4 == 0 => {
                    let i = ((off - 16) / 8) as usize;
                    if (off - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => panic!("load from offset {off}"),
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        for _ in 0..prog.len() + 1 {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => a = load(i.k),
                0x54 => a &= i.k,
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => a == i.k,
                        0x25 => a > i.k,
                        0x35 => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
        panic!("the program did not return");
    }

    fn native() -> u32 {
        audit_arch().unwrap().0
    }

    fn call(nr: libc::c_long, args: [u64; 6]) -> u32 {
        run(
            &program(Layer::EngineHolder).unwrap(),
            native(),
            nr as u32,
            args,
        )
    }

    fn worker_call(nr: libc::c_long, args: [u64; 6]) -> u32 {
        run(&program(Layer::Worker).unwrap(), native(), nr as u32, args)
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    #[allow(clippy::unnecessary_cast)]
    const FIONBIO: u64 = libc::FIONBIO as u64;
    #[allow(clippy::unnecessary_cast)]
    const TCGETS: u64 = libc::TCGETS as u64;

    #[test]
    fn every_listed_call_gets_eperm() {
        for g in DENIED {
            for (name, nr) in g.calls {
                assert_eq!(call(*nr, [0; 6]), EPERM, "{name}");
                assert_eq!(call(*nr, [u64::MAX; 6]), EPERM, "{name}");
            }
        }
        assert!(denied_count() >= 50);
    }

    #[test]
    fn what_a_worker_needs_is_allowed() {
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("pread64", libc::SYS_pread64),
            ("recvmsg", libc::SYS_recvmsg),
            ("sendmsg", libc::SYS_sendmsg),
            ("sendto", libc::SYS_sendto),
            ("mmap", libc::SYS_mmap),
            ("munmap", libc::SYS_munmap),
            ("mprotect", libc::SYS_mprotect),
            ("futex", libc::SYS_futex),
            ("epoll_ctl", libc::SYS_epoll_ctl),
            ("epoll_pwait", libc::SYS_epoll_pwait),
            ("openat", libc::SYS_openat),
            ("unlinkat", libc::SYS_unlinkat),
            ("mkdirat", libc::SYS_mkdirat),
            ("fcntl", libc::SYS_fcntl),
            ("memfd_create", libc::SYS_memfd_create),
            ("clock_gettime", libc::SYS_clock_gettime),
            ("getrandom", libc::SYS_getrandom),
            ("setsockopt", libc::SYS_setsockopt),
            ("socketpair", libc::SYS_socketpair),
            ("shutdown", libc::SYS_shutdown),
            ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
            ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
            ("prctl", libc::SYS_prctl),
            ("seccomp", libc::SYS_seccomp),
            ("exit_group", libc::SYS_exit_group),
        ] {
            assert_eq!(call(nr, [3, 0, 0, 0, 0, 0]), ALLOW, "{name}");
        }
    }

    #[test]
    fn clone_makes_threads_and_forks_but_no_namespaces() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(libc::SYS_clone, [fork, 0, 0, 0, 0, 0]), ALLOW);
        for flag in CLONE_NAMESPACE_FLAGS {
            assert_eq!(
                call(libc::SYS_clone, [fork | flag, 0, 0, 0, 0, 0]),
                EPERM,
                "{flag:#x}"
            );
        }
        // clone3's flags cannot be read: ENOSYS, so that glibc uses clone.
        assert_eq!(
            call(libc::SYS_clone3, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn a_worker_adds_no_socketpair_and_no_process() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let spawn = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
        assert_eq!(worker_call(libc::SYS_socketpair, [0; 6]), EPERM);
        assert_eq!(worker_call(libc::SYS_clone, [fork, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(worker_call(libc::SYS_clone, [spawn, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(worker_call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(worker_call(libc::SYS_fork, [0; 6]), EPERM);
            assert_eq!(worker_call(libc::SYS_vfork, [0; 6]), EPERM);
        }
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("sendmsg", libc::SYS_sendmsg),
            ("futex", libc::SYS_futex),
            ("memfd_create", libc::SYS_memfd_create),
        ] {
            assert_eq!(worker_call(nr, [3, 0, 0, 0, 0, 0]), ALLOW, "{name}");
        }
        // Self-contained, as the engine holder's layer.
        assert_eq!(
            worker_call(libc::SYS_clone3, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        let prog = program(Layer::Worker).unwrap();
        assert_eq!(
            run(&prog, 3 | 0x4000_0000, 1, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn no_system_v_ipc_in_any_layer() {
        let listener = program(Layer::Listener).unwrap();
        for (name, nr) in [
            ("shmget", libc::SYS_shmget),
            ("shmat", libc::SYS_shmat),
            ("shmdt", libc::SYS_shmdt),
            ("shmctl", libc::SYS_shmctl),
            ("msgget", libc::SYS_msgget),
            ("msgsnd", libc::SYS_msgsnd),
            ("msgrcv", libc::SYS_msgrcv),
            ("msgctl", libc::SYS_msgctl),
            ("semget", libc::SYS_semget),
            ("semop", libc::SYS_semop),
            ("semtimedop", libc::SYS_semtimedop),
            ("semctl", libc::SYS_semctl),
        ] {
            // IPC_PRIVATE, a key, IPC_CREAT|0666: whatever the arguments.
            for args in [[0; 6], [0x1234, 4096, 0o1666, 0, 0, 0]] {
                assert_eq!(call(nr, args), EPERM, "{name}");
                assert_eq!(run(&listener, native(), nr as u32, args), EPERM, "{name}");
            }
        }
    }

    #[test]
    fn limits_and_scheduling_only_of_oneself() {
        let listener = program(Layer::Listener).unwrap();
        let both = |nr: libc::c_long, args: [u64; 6]| {
            let answer = call(nr, args);
            assert_eq!(run(&listener, native(), nr as u32, args), answer);
            answer
        };
        const OTHER: u64 = 4242;
        for c in SELF_ONLY {
            let mut mine = [0u64, 0, 19, 0, 0, 0];
            if let Some((arg, value)) = c.kind {
                mine[usize::from(arg)] = value;
            }
            assert_eq!(both(c.nr, mine), ALLOW, "{} on itself", c.name);
            // The kernel reads an int: high bits do not make another pid.
            let mut high = mine;
            high[usize::from(c.target)] = 0xffff_ffff_0000_0000;
            assert_eq!(both(c.nr, high), ALLOW, "{} high bits", c.name);
            for pid in [OTHER, 1, u64::from(u32::MAX), 0x1_0000_0001] {
                let mut theirs = mine;
                theirs[usize::from(c.target)] = pid;
                assert_eq!(both(c.nr, theirs), EPERM, "{} on {pid:#x}", c.name);
            }
            if let Some((arg, value)) = c.kind {
                // A process group or a user (0: the caller's own, which
                // holds the other processes of the service user).
                for kind in [value + 1, value + 2] {
                    let mut group = mine;
                    group[usize::from(arg)] = kind;
                    assert_eq!(both(c.nr, group), EPERM, "{} kind {kind}", c.name);
                }
            }
        }
        // As glibc's setrlimit, nice and getrlimit make them.
        let rlimit_cpu = libc::RLIMIT_CPU as u64;
        assert_eq!(
            both(libc::SYS_prlimit64, [0, rlimit_cpu, 0x1000, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            both(libc::SYS_setpriority, [PRIO_PROCESS, 0, 10, 0, 0, 0]),
            ALLOW
        );
        // Reading another's priority is no change.
        assert_eq!(
            both(libc::SYS_getpriority, [PRIO_PROCESS, OTHER, 0, 0, 0, 0]),
            ALLOW
        );
        let names: Vec<&str> = SELF_ONLY.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "prlimit64",
                "setpriority",
                "sched_setscheduler",
                "sched_setparam",
                "sched_setattr",
                "sched_setaffinity",
                "ioprio_set"
            ]
        );
    }

    #[test]
    fn personality_may_only_be_read() {
        let p = libc::SYS_personality;
        assert_eq!(call(p, [PERSONALITY_QUERY, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(p, [0, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            call(p, [libc::READ_IMPLIES_EXEC as u64, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            call(p, [libc::ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0]),
            EPERM
        );
    }

    #[test]
    fn no_keystrokes_into_a_terminal() {
        let i = libc::SYS_ioctl;
        assert_eq!(call(i, [2, TIOCSTI, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(i, [2, TIOCLINUX, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(i, [2, FIONBIO, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(i, [2, TCGETS, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn foreign_architectures_are_killed() {
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        let prog = program(Layer::EngineHolder).unwrap();
        assert_eq!(
            run(&prog, AUDIT_ARCH_I386, 1, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_twins_of_allowed_and_denied_calls_get_eperm() {
        let prog = program(Layer::EngineHolder).unwrap();
        for nr in [
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_read,
            521,
            547,
        ] {
            assert_eq!(
                run(&prog, native(), X32_SYSCALL_BIT | nr as u32, [0; 6]),
                EPERM,
                "{nr}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_lengths_in_the_documentation_hold() {
        assert_eq!(program(Layer::EngineHolder).unwrap().len(), 492);
        assert_eq!(program(Layer::Worker).unwrap().len(), 36);
    }

    #[test]
    fn every_reason_is_written_down() {
        for g in DENIED.iter().chain([&WORKER_DENIED]) {
            assert!(g.why.len() > 20 && !g.calls.is_empty());
        }
        let names: Vec<&str> = CONDITIONAL.iter().map(|c| c.0).collect();
        assert_eq!(names, ["clone", "personality", "ioctl"]);
        assert!(SELF_ONLY_WHY.len() > 20);
    }
}
