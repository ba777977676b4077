//! Demotion of the scanning worker, and capability trimming of the supervisor.
//!
//! The worker parses hostile bytes (client commands, and every file format
//! libclamav unpacks). [`demote`] takes away what a compromised worker could
//! use, in a fixed order, verifying each step by reading the state back; any
//! failure is an error and the caller aborts the worker.
//!
//! # Order, and why
//!
//! Capabilities, the no-new-privs bit and the Landlock domain are properties
//! of a *thread*; a thread created later inherits them from its creator, but
//! threads that already exist keep theirs. So demotion runs while the process
//! has exactly one thread (checked through `/proc/self/status`, an error
//! otherwise), before tokio or the scan pool exist. (Credentials are per
//! thread in the kernel too; rlimits are per process.)
//!
//! 0. Check single-threaded; count the tasks the target user already runs
//!    (for `RLIMIT_NPROC`, below) while `/proc` is still readable.
//! 1. Bounding set: dropped first, because dropping it needs `CAP_SETPCAP`,
//!    which the identity switch below takes away. Skipped (not an error) when
//!    the process does not hold `CAP_SETPCAP` (started unprivileged, or by a
//!    supervisor that did not keep it): the bounding set only limits what an
//!    `execve` can grant, and after step 4 and 6 no `execve` can grant
//!    anything and none is allowed. [`Status::bounding_set_cleared`] says
//!    which case happened.
//! 2. Identity, when [`Plan::user`] is set and we are root:
//!    `setgroups([gid])` → `setresgid(gid, gid, gid)` → `setresuid(uid, uid,
//!    uid)`. Verified: real/effective/saved ids all equal the target,
//!    `getgroups() == [gid]`, and `setuid(0)` fails. Without root, naming a
//!    user other than ourselves is an error.
//! 3. Capabilities: effective, permitted, inheritable and ambient sets
//!    cleared (the uid change already emptied them for a root start; this
//!    also covers a start with file or ambient capabilities). Verified from
//!    `/proc/self/status`, which also shows capabilities the `caps` crate
//!    does not know.
//! 4. `PR_SET_NO_NEW_PRIVS`: no `execve` can ever gain privileges again
//!    (setuid binaries, file capabilities). Also a precondition for an
//!    unprivileged Landlock. Verified with `PR_GET_NO_NEW_PRIVS`.
//! 5. Rlimits: `RLIMIT_CORE = 0` (no core dump full of scanned data),
//!    `RLIMIT_NOFILE = plan.max_open_files`, and `RLIMIT_NPROC`. Linux counts
//!    *threads* against `RLIMIT_NPROC` (every `clone`, not only `fork`), per
//!    real uid, system-wide: `RLIMIT_NPROC = 0` would make tokio unable to
//!    start. So the limit is the number of tasks the user already runs plus
//!    [`Plan::max_threads`]; with `max_threads = 0` the process can create
//!    neither processes nor threads. The kernel does not apply
//!    `RLIMIT_NPROC` to uid 0 (nor to holders of `CAP_SYS_RESOURCE` or
//!    `CAP_SYS_ADMIN`, which step 3 removed), so a worker left as root
//!    (`user: None` while running as root) is not bounded by it; Landlock
//!    still denies every `execve`. Verified with `getrlimit`.
//! 6. Landlock with the newest ABI the `landlock` crate knows, best effort
//!    (the kernel's ABI decides what is enforced): every filesystem access
//!    right is handled; `read_only` directories get read-file and read-dir;
//!    `read_write` directories additionally write-file, truncate, make and
//!    remove regular files and directories; [`EXTRA_READ_ONLY`] files get
//!    read-file; nothing else anywhere (no execute, no other read, no write,
//!    no device ioctl, no special files, no symlinks, no cross-directory
//!    rename). TCP bind and connect are handled with no rule, so both are
//!    denied (ABI ≥ 4). Abstract Unix sockets and signals are scoped to the
//!    sandbox (ABI ≥ 6). On ABI ≥ 9, connecting to any path Unix socket is
//!    denied (journald's too: children log through the supervisor).
//! 7. When [`Plan::seccomp`] is set, the engine holder's system-call filter
//!    of [`mod@seccomp`]: no new sockets (any family), no `connect`, `bind`,
//!    `listen`, `accept`, no io_uring, ptrace, eBPF, namespaces, mounts,
//!    `execve`, and the rest of [`seccomp::DENIED`], each answered `EPERM`.
//!    It says what Landlock cannot (path Unix sockets below ABI 9, UDP,
//!    netlink, raw sockets) and is inherited by every thread and process
//!    created afterwards. Verified by a `socket()` that must fail with
//!    `EPERM`. A kernel or container that refuses to install it gives
//!    [`SeccompState::Failed`]; the caller decides (`sandbox.seccomp`).
//!
//! # What a compromised worker can and cannot do afterwards
//!
//! It cannot: read any file outside the signature directory and its temp
//! directory (not `/etc/passwd`, not `/etc/shadow`, not the scanned files
//! of other clients: it only sees descriptors the supervisor passes it);
//! write anywhere but its temp directory; execute anything; gain privileges
//! (setuid binaries, `setuid(0)`, capabilities); create a socket of any
//! family or connect one (the daemon's own socket, D-Bus, a database: path
//! Unix sockets are outside Landlock below ABI 9, hence the filter), listen
//! or accept; signal or connect (abstract sockets) to processes outside its
//! sandbox; create namespaces, use io_uring, ptrace, eBPF, perf events;
//! create more tasks than [`Plan::max_threads`]; once a worker called
//! [`seal_worker`], make a socket pair or any process.
//!
//! It can still: use every descriptor it holds (the control socket, its
//! log channel, client connections, passed files), so it can answer clients
//! falsely and send the supervisor any control message or log record (the
//! supervisor must treat those as hostile: it marks and budgets the
//! records); read and write its temp directory and read the signatures;
//! `fork` itself (same sandbox) within the task budget; exercise the system
//! calls the filter allows; consume CPU and memory up to the unit's limits.
//!
//! # What libclamav needs
//!
//! Found by loading an engine and scanning archives after demotion, under
//! strace (see `tests/sandbox.rs`):
//! * the signature directory (read) and the directory configured as
//!   `CL_ENGINE_TMPDIR` (read-write: libclamav unpacks archives into
//!   `*-scantemp.*` subdirectories there and removes them). The engine must
//!   be given a temp dir inside [`Plan::read_write`]; its default, `$TMPDIR`
//!   or `/tmp`, is denied.
//! * `/etc/localtime` for its local-time stamps: allowed, see
//!   [`EXTRA_READ_ONLY`].
//! * `cl_init` (run by the first `Engine::load`) also reads
//!   `/usr/lib/ssl/openssl.cnf` and tries to `dlopen` `libclamunrar_iface.so`
//!   (RAR support, Debian's non-free `libclamunrar`). Both are denied when
//!   `cl_init` runs after demotion: OpenSSL then keeps its built-in defaults
//!   (fine), but RAR support would be silently missing where that package
//!   is installed. So `cl_init` should run *before* [`demote`]; everything
//!   else (loading, compiling, scanning) works after it.
//!
//! # Other things the sandbox takes away
//!
//! `/proc` (including `/proc/self`), `/dev/null` (so `Stdio::null()` fails)
//! and every other path not listed above. Descriptors opened before
//! demotion keep working: open what the worker needs (its log channel,
//! `/dev/null` if needed) before calling [`demote`]. One exception,
//! [`Plan::read_files`]: the engine holder may read (not list) files under
//! `/proc`, so that each worker it forks opens its own
//! `/proc/self/smaps_rollup` before [`narrow_to`] closes `/proc` to it.

//! # Calling it (worker)
//!
//! 1. One thread only: read the inherited descriptors and the config, set up
//!    logging (`log::relay::init_child` on the inherited log channel), run `cl_init`
//!    (see above), create the private temp directory and give it to the
//!    service user, open anything else the worker will need.
//! 2. [`demote`] with the signature directory in `read_only`, the temp
//!    directory in `read_write` (and in the engine's `temp_dir`), and
//!    `max_threads` ≥ every thread the worker will ever have alive at once
//!    (tokio workers + blocking pool + scan pool + slack): a thread spawn
//!    beyond it fails with `EAGAIN`; `seccomp: true` for the engine
//!    holder's filter. Log the returned [`Status`].
//! 3. Load the engine, report Ready; in each forked worker, [`narrow_to`]
//!    its temp directory, build the tokio runtime, [`seal_worker`] (still
//!    one thread), start the scan threads, [`forbid_new_tasks`].
//!
//! The supervisor calls [`restrict_supervisor`] once, early; keeping
//! `CAP_SETPCAP` lets its re-executed workers empty their bounding sets.
//! `sandbox-check`: [`demote`] with `max_threads: 0`, then in the forked
//! worker [`narrow_to`], [`forbid_new_tasks`], [`seal_worker`] and
//! [`probe_worker`] (its [`Targets`] made before [`demote`]).

mod caps_set;
pub mod child;
mod identity;
mod landlock_rules;
mod limits;
mod probe;
pub mod seccomp;

use std::fmt;
use std::path::PathBuf;

pub use caps::Capability;
pub use caps_set::restrict_supervisor;
pub use identity::lookup_user;
pub use landlock_rules::EXTRA_READ_ONLY;
pub use probe::{probe, probe_worker, Attempt, Targets};

/// What the worker is allowed after demotion.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Service user to become (with its primary group, no supplementary groups).
    /// `None`: keep the current identity (used when not started as root).
    pub user: Option<String>,
    /// Directories readable (recursively) — the signature directory.
    pub read_only: Vec<PathBuf>,
    /// Directories readable and writable — the worker's private temp dir.
    pub read_write: Vec<PathBuf>,
    /// Directories below which files may be read, but not listed: the
    /// engine holder's `/proc`, so that each worker it forks can open its
    /// own `/proc/self/smaps_rollup` (`crate::usage`) before it narrows its
    /// sandbox to its temporary directory, after which it can open nothing
    /// under `/proc` again.
    pub read_files: Vec<PathBuf>,
    /// RLIMIT_NOFILE to set (soft = hard = this). Set after the capabilities
    /// are gone, so it must not exceed the current hard limit (systemd's
    /// default hard limit is 524288); lowering is always possible.
    pub max_open_files: u64,
    /// Threads the process may still create after demotion (tokio workers,
    /// blocking pool, scan pool). `RLIMIT_NPROC` becomes the number of tasks
    /// the target user already runs plus this. 0: the process stays
    /// single-threaded and cannot fork (what `sandbox-check` uses).
    pub max_threads: u64,
    /// Install the system-call filter of [`mod@seccomp`] (the engine holder
    /// and its workers). Off for a process that must open sockets.
    pub seccomp: bool,
    /// The process accepts connections on listening sockets it was given
    /// (the observer): the filter lets `accept`/`accept4` through, and still
    /// denies making or connecting any socket.
    pub accepts: bool,
}

/// How much of the Landlock ruleset the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandlockState {
    /// Filesystem (including truncate and device ioctl) and TCP rules all
    /// enforced: Landlock ABI ≥ 5.
    Full { abi: i32 },
    /// Enforced, but the kernel's ABI lacks some of them (ABI 1–4: no
    /// network rules below 4, no truncate control below 3, …).
    Partial { abi: i32 },
    /// Not enforced at all, and why.
    NotEnforced { reason: String },
}

/// Whether the system-call filter of [`mod@seccomp`] is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompState {
    /// Installed, and `socket()` fails with `EPERM`.
    On,
    /// [`Plan::seccomp`] was not set.
    NotRequested,
    /// Requested, but the kernel or a filter around the process refused
    /// it, and why.
    Failed { reason: String },
}

/// What [`demote`] achieved, verified.
#[derive(Debug, Clone)]
pub struct Status {
    pub uid: u32,
    pub gid: u32,
    pub landlock: LandlockState,
    pub seccomp: SeccompState,
    pub no_new_privs: bool,
    /// Effective, permitted, inheritable and ambient sets are empty.
    pub capabilities_cleared: bool,
    /// The bounding set is empty too (false when we lacked `CAP_SETPCAP`).
    pub bounding_set_cleared: bool,
    /// TCP bind and connect are denied by Landlock.
    pub network_restricted: bool,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid={} gid={} landlock=", self.uid, self.gid)?;
        match &self.landlock {
            LandlockState::Full { abi } => write!(f, "full(abi {abi})")?,
            LandlockState::Partial { abi } => write!(f, "partial(abi {abi})")?,
            LandlockState::NotEnforced { reason } => write!(f, "off({reason})")?,
        }
        match &self.seccomp {
            SeccompState::On => f.write_str(" seccomp=on")?,
            SeccompState::NotRequested => f.write_str(" seccomp=off")?,
            SeccompState::Failed { reason } => write!(f, " seccomp=off({reason})")?,
        }
        if self.no_new_privs {
            f.write_str(" no_new_privs")?;
        }
        f.write_str(
            match (self.capabilities_cleared, self.bounding_set_cleared) {
                (true, true) => " caps=none",
                (true, false) => " caps=none(bounding kept)",
                (false, _) => " caps=SOME",
            },
        )?;
        f.write_str(if self.network_restricted {
            " net=denied"
        } else {
            " net=allowed"
        })
    }
}

/// Why demotion (or supervisor trimming) failed. The caller must abort.
#[derive(thiserror::Error, Debug)]
pub enum SandboxError {
    #[error("service user \"{0}\" does not exist: create it with `adduser --system --group --no-create-home {0}` or set sandbox.user")]
    NoSuchUser(String),
    #[error("cannot look up service user \"{user}\": {reason}")]
    UserLookup { user: String, reason: String },
    #[error("cannot switch to user \"{user}\" (uid {uid}) without root: start as root, or leave sandbox.user unset to keep the current user")]
    NotRoot { user: String, uid: u32 },
    #[error("demotion must run while the process is single-threaded, but it has {threads} threads: call it before starting any runtime or thread")]
    NotSingleThreaded { threads: u64 },
    #[error("{step} failed: {reason}")]
    Step { step: &'static str, reason: String },
    #[error("{step} did not hold after it was applied: {detail}")]
    Verify { step: &'static str, detail: String },
    #[error("Landlock: {0}")]
    Landlock(String),
}

impl SandboxError {
    fn step(step: &'static str, reason: impl fmt::Display) -> Self {
        SandboxError::Step {
            step,
            reason: reason.to_string(),
        }
    }
    fn verify(step: &'static str, detail: impl Into<String>) -> Self {
        SandboxError::Verify {
            step,
            detail: detail.into(),
        }
    }
}

/// A further Landlock layer for a worker forked from the engine holder: it
/// keeps only `read_write` (the worker's own temporary directory), so a
/// worker can neither read the signature files (the engine is already in
/// memory) nor another worker's unpacked files. Call while the process has
/// one thread; no-new-privs is already set by [`demote`].
pub fn narrow_to(read_write: &std::path::Path) -> Result<LandlockState, SandboxError> {
    identity::check_single_threaded_or_unknown()?;
    landlock_rules::restrict_to(&[], &[read_write.to_path_buf()], &[])
}

/// The worker's own layer of the system-call filter, on top of the engine
/// holder's that it inherited: no `socketpair`, no process (`fork`,
/// `vfork`, `clone` without `CLONE_THREAD`). Call after the worker's
/// runtime exists (tokio makes a socket pair when it starts) and while the
/// process has one thread. [`SeccompState::Failed`] when it cannot be
/// installed; the caller decides (`sandbox.seccomp`).
pub fn seal_worker() -> Result<SeccompState, SandboxError> {
    seccomp::install(seccomp::Layer::Worker)
}

/// From now on this process can create neither processes nor threads
/// (`RLIMIT_NPROC` = 0; Linux counts threads against it). The engine holder
/// keeps its own limit, so it can still fork workers.
pub fn forbid_new_tasks() -> Result<(), SandboxError> {
    limits::forbid_new_tasks()
}

/// For a helper started already as its own unprivileged user (the
/// VirusEvent launcher, `crate::launcher`): clears every capability set
/// (empty already after a change of user from root; this also covers
/// ambient or file capabilities), sets no-new-privs, and sets
/// `RLIMIT_CORE` 0, `RLIMIT_NOFILE` to `max_open_files` (or the hard limit,
/// if lower) and `RLIMIT_NPROC` to the tasks its uid runs now plus
/// `extra_tasks`; each step verified. No Landlock: the helper runs the
/// operator's programs, which may need any file.
pub fn confine_helper(max_open_files: u64, extra_tasks: u64) -> Result<(), SandboxError> {
    caps_set::clear_all(false)?;
    limits::set_no_new_privs()?;
    let uid = rustix::process::getuid().as_raw();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let plan = Plan {
        user: None,
        read_only: Vec::new(),
        read_write: Vec::new(),
        read_files: Vec::new(),
        max_open_files: max_open_files.min(hard),
        max_threads: extra_tasks,
        // The operator's command may need any system call.
        seccomp: false,
        accepts: false,
    };
    limits::set_rlimits(&plan, limits::count_tasks_of(uid))
}

/// Why Landlock could not be applied, in words an operator can act on:
/// a kernel without it, a kernel that has it but not enabled, or a seccomp
/// filter that hides its system calls (containers). Reads
/// `/proc/self/status` and `/sys/kernel/security/lsm`, both world-readable,
/// so it works after the change of user; it is only needed when no Landlock
/// ruleset could be put in force.
pub fn landlock_diagnosis() -> String {
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .map(|v| v.trim() == "2")
        })
        .unwrap_or(false);
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").ok();
    let enabled = lsm
        .as_deref()
        .map(|l| l.split(',').any(|m| m.trim() == "landlock"));
    match (enabled, seccomp) {
        (Some(true), true) | (None, true) => "a seccomp filter hides the Landlock system calls \
             (in a container: allow them, e.g. systemd-nspawn \
             --system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self')"
            .into(),
        (Some(false), _) => "this kernel does not enable Landlock (add landlock to the lsm= boot parameter)".into(),
        _ => "this kernel has no Landlock (Linux >= 5.13 with CONFIG_SECURITY_LANDLOCK)".into(),
    }
}

/// Demotes the calling process; see the module documentation for the order.
/// Irreversible. Must be called while the process has one thread.
pub fn demote(plan: &Plan) -> Result<Status, SandboxError> {
    identity::check_single_threaded()?;
    let target = identity::resolve_target(plan.user.as_deref())?;
    let tasks_now = limits::count_tasks_of(target.uid);

    let bounding_set_cleared = caps_set::drop_bounding_set()?;
    identity::switch(&target)?;
    caps_set::clear_all(bounding_set_cleared)?;
    limits::set_no_new_privs()?;
    limits::set_rlimits(plan, tasks_now)?;
    let landlock = landlock_rules::restrict(plan)?;
    let seccomp = if plan.seccomp {
        let layer = if plan.accepts {
            seccomp::Layer::Listener
        } else {
            seccomp::Layer::EngineHolder
        };
        seccomp::install(layer)?
    } else {
        SeccompState::NotRequested
    };
    // Landlock needs no_new_privs, which it would set itself; read it back
    // once more after everything.
    let no_new_privs = limits::no_new_privs()?;
    let network_restricted = match landlock {
        LandlockState::Full { abi } | LandlockState::Partial { abi } => abi >= 4,
        LandlockState::NotEnforced { .. } => false,
    };
    Ok(Status {
        uid: target.uid,
        gid: target.gid,
        landlock,
        seccomp,
        no_new_privs,
        capabilities_cleared: true,
        bounding_set_cleared,
        network_restricted,
    })
}
