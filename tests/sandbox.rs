//! `clamsentry::sandbox` for real: every scenario demotes a *child process*
//! (demotion is irreversible), which is this test binary re-executed with
//! `CS_SANDBOX_CHILD=<scenario>`. The file has its own small harness
//! (`harness = false` in Cargo.toml) so that the child is exactly one thread
//! when it demotes, as the worker will be; libtest would run it on a second
//! thread. `cargo test --test sandbox [FILTER]` runs it; `-- --list` lists.
//!
//! The parent reads the child's `/proc/PID/status` while the child waits
//! after demotion: the child itself can no longer read `/proc`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clamsentry::sandbox::{self, Plan};

const CHILD_ENV: &str = "CS_SANDBOX_CHILD";
const NOBODY: u32 = 65534;

type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "root_demotes_to_nobody_with_everything_dropped",
        root_demotes_to_nobody_with_everything_dropped,
    ),
    (
        "root_every_probe_denied_but_the_control",
        root_every_probe_denied_but_the_control,
    ),
    (
        "root_landlock_alone_denies_files_and_tcp_but_not_unix_sockets",
        root_landlock_alone_denies_files_and_tcp_but_not_unix_sockets,
    ),
    (
        "root_libclamav_loads_and_scans_after_demotion",
        root_libclamav_loads_and_scans_after_demotion,
    ),
    (
        "unprivileged_keeps_identity_and_still_gets_nnp_and_landlock",
        unprivileged_keeps_identity_and_still_gets_nnp_and_landlock,
    ),
    (
        "unprivileged_without_thread_budget_cannot_fork_or_spawn_threads",
        unprivileged_without_thread_budget_cannot_fork_or_spawn_threads,
    ),
    (
        "unprivileged_cannot_switch_to_another_user",
        unprivileged_cannot_switch_to_another_user,
    ),
    (
        "missing_user_error_says_how_to_create_it",
        missing_user_error_says_how_to_create_it,
    ),
    (
        "demote_refuses_a_multithreaded_process",
        demote_refuses_a_multithreaded_process,
    ),
    (
        "supervisor_keeps_only_the_listed_capabilities",
        supervisor_keeps_only_the_listed_capabilities,
    ),
    (
        "supervisor_started_worker_demotes_with_the_kept_capabilities",
        supervisor_started_worker_demotes_with_the_kept_capabilities,
    ),
    ("status_display_is_one_line", status_display_is_one_line),
];

fn main() {
    if let Ok(scenario) = std::env::var(CHILD_ENV) {
        child::run(&scenario);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        // On a thread named after the test, as libtest does (the
        // requirement helper reports skips by that name); the scenarios
        // themselves run in re-executed, single-threaded children.
        let ok = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(test)
            .expect("start the test's thread")
            .join()
            .is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// Not a requirement: the unprivileged scenarios run as root too, by
/// becoming nobody first.
fn started_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A listening Unix socket anyone may connect to (mode 0777 in a
/// world-readable directory), as D-Bus's or a database's are: the probes
/// try to connect to it.
struct WorldSocket {
    dir: tempfile::TempDir,
    listener: std::os::unix::net::UnixListener,
}

impl WorldSocket {
    fn new() -> WorldSocket {
        let dir = tempfile::Builder::new()
            .prefix("cs-world")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        listener.set_nonblocking(true).unwrap();
        WorldSocket { dir, listener }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// Connections that reached the socket so far.
    fn accepted(&self) -> usize {
        std::iter::from_fn(|| self.listener.accept().ok()).count()
    }
}

/// A signature directory and a temp directory the service user can use,
/// and a socket it could connect to without the system-call filter.
struct Dirs {
    db: common::TestDb,
    tmp: tempfile::TempDir,
    sock: WorldSocket,
}

impl Dirs {
    fn new(owner: Option<u32>) -> Dirs {
        let db = common::TestDb::new();
        std::fs::set_permissions(db.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("cs-sbtmp")
            .tempdir()
            .unwrap();
        if let Some(uid) = owner {
            let id = Some(nix::unistd::Uid::from_raw(uid));
            nix::unistd::chown(tmp.path(), id, Some(nix::unistd::Gid::from_raw(uid))).unwrap();
        }
        Dirs {
            db,
            tmp,
            sock: WorldSocket::new(),
        }
    }
}

/// What a child printed, and its `/proc/PID/status` right after demotion.
struct Outcome {
    lines: Vec<String>,
    proc_status: String,
    success: bool,
}

impl Outcome {
    fn get(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }
    fn must(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("child printed no {key}=; output: {:#?}", self.lines))
    }
    fn proc_field(&self, key: &str) -> String {
        self.proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc status"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn attempts(&self) -> Vec<(String, bool, bool, String)> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("attempt="))
            .map(|l| {
                let p: Vec<&str> = l.splitn(4, '|').collect();
                (
                    p[0].to_string(),
                    p[1] == "true",
                    p[2] == "true",
                    p[3].to_string(),
                )
            })
            .collect()
    }
}

/// Runs `scenario` in a re-executed child with `env`; when the child prints
/// `demoted`, snapshots its /proc status and lets it go on.
fn run_child(scenario: &str, env: &[(&str, String)]) -> Outcome {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD_ENV, scenario)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("re-exec the test binary");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut proc_status = String::new();
    // The process that demotes: the child, or a worker it started.
    let mut pid = child.id();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("pid=") {
            pid = p.parse().unwrap();
        }
        if line == "demoted" {
            proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            stdin.write_all(b"go\n").unwrap();
        }
        lines.push(line);
    }
    drop(stdin);
    let success = child.wait().unwrap().success();
    Outcome {
        lines,
        proc_status,
        success,
    }
}

fn demote_env(
    dirs: &Dirs,
    user: Option<&str>,
    max_threads: u64,
    pre_switch: bool,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CS_RO", dirs.db.path().display().to_string()),
        ("CS_RW", dirs.tmp.path().display().to_string()),
        ("CS_MAX_THREADS", max_threads.to_string()),
        ("CS_ZIP", format!("{}/clam.zip", common::TESTFILES)),
        ("CS_SOCKET", dirs.sock.path().display().to_string()),
    ];
    if let Some(u) = user {
        env.push(("CS_USER", u.to_string()));
    }
    if pre_switch {
        env.push(("CS_PRE_SWITCH", NOBODY.to_string()));
    }
    env
}

/// Root demotes the child to nobody (callers require root).
fn root_nobody() -> Outcome {
    let dirs = Dirs::new(Some(NOBODY));
    let out = run_child("demote", &demote_env(&dirs, Some("nobody"), 2, false));
    assert!(out.success, "child failed: {:#?}", out.lines);
    assert_eq!(dirs.sock.accepted(), 0, "a connection reached the socket");
    out
}

fn root_demotes_to_nobody_with_everything_dropped() {
    require_root!("the child demotes itself from root to nobody");
    let out = root_nobody();
    assert_eq!(out.proc_field("Uid"), "65534 65534 65534 65534");
    assert_eq!(out.proc_field("Gid"), "65534 65534 65534 65534");
    assert_eq!(out.proc_field("Groups"), "65534");
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(out.proc_field(key), "0000000000000000", "{key}");
    }
    assert_eq!(out.proc_field("NoNewPrivs"), "1");
    let status = out.must("status");
    assert!(
        status.starts_with("uid=65534 gid=65534 landlock=full(abi ")
            && status.ends_with(") seccomp=on no_new_privs caps=none net=denied"),
        "{status}"
    );
    assert_eq!(out.proc_field("Seccomp"), "2");
    // The engine holder's layer and the worker's.
    assert_eq!(out.proc_field("Seccomp_filters"), "2");
    assert_eq!(out.must("sealed"), "On");
    // /proc does not show Landlock; the probe tests prove it is there.
    assert_eq!(out.must("rlimit_core"), "0 0");
    assert_eq!(out.must("rlimit_nofile"), "64 64");
}

/// Attempts of `sandbox::probe` with one socket path: 8 of files, exec,
/// TCP and setuid (one of them the control), 8 socket families,
/// socketpair, 2 connects, io_uring.
const ATTEMPTS: usize = 20;

fn check_attempts(out: &Outcome) {
    let attempts = out.attempts();
    assert_eq!(attempts.len(), ATTEMPTS, "{attempts:#?}");
    for (what, denied, expect, detail) in &attempts {
        assert_eq!(denied, expect, "{what}: {detail}");
    }
    let controls: Vec<_> = attempts.iter().filter(|a| !a.2).collect();
    assert_eq!(controls.len(), 1, "exactly one positive control");
}

fn root_every_probe_denied_but_the_control() {
    require_root!("the child demotes itself from root to nobody");
    let out = root_nobody();
    check_attempts(&out);
    let attempts = out.attempts();
    let detail = |w: &str| &attempts.iter().find(|a| a.0.contains(w)).unwrap().3;
    // Landlock, not file permissions, stops the world-readable file.
    assert!(
        detail("/etc/passwd").contains("Permission denied"),
        "{}",
        detail("/etc/passwd")
    );
    // The system-call filter (EPERM) stops every socket before Landlock
    // (EACCES) would look at a TCP port, and connect() itself.
    for what in [
        "TCP connect",
        "TCP bind",
        "socket(AF_UNIX SOCK_STREAM)",
        "socket(AF_INET SOCK_DGRAM)",
        "socket(AF_NETLINK",
        "socketpair",
        "io_uring_setup",
        "with a socket made before the sandbox",
    ] {
        assert!(
            detail(what).contains("Operation not permitted"),
            "{what}: {}",
            detail(what)
        );
    }
    // With a thread budget a fork may succeed; the exec is what fails.
    assert!(
        detail("/bin/sh").starts_with("denied at"),
        "{}",
        detail("/bin/sh")
    );
}

/// Without the system-call filter (`Plan::seccomp` false) Landlock still
/// denies the files, TCP connect and bind; what it cannot say (ABI < 9:
/// path Unix sockets; any ABI: UDP, netlink, socketpair) goes through,
/// which is why the filter exists. The world-connectable socket is reached.
fn root_landlock_alone_denies_files_and_tcp_but_not_unix_sockets() {
    require_root!("the child demotes itself from root to nobody");
    let dirs = Dirs::new(Some(NOBODY));
    let mut env = demote_env(&dirs, Some("nobody"), 2, false);
    env.push(("CS_NO_SECCOMP", "1".into()));
    let out = run_child("demote", &env);
    assert!(out.success, "child failed: {:#?}", out.lines);
    let status = out.must("status");
    assert!(status.contains(") seccomp=off no_new_privs"), "{status}");
    assert_eq!(out.proc_field("Seccomp"), "0");
    let attempts = out.attempts();
    let find = |w: &str| attempts.iter().find(|a| a.0.contains(w)).unwrap();
    for what in ["/etc/passwd", "/etc/shadow", "TCP connect", "TCP bind"] {
        let a = find(what);
        assert!(a.1 && a.3.contains("Permission denied"), "{a:?}");
    }
    for what in [
        "socket(AF_UNIX SOCK_STREAM)",
        "socket(AF_INET SOCK_DGRAM)",
        "socketpair",
        "with a new socket",
        "with a socket made before the sandbox",
    ] {
        assert!(!find(what).1, "{:?}", find(what));
    }
    let abi: u32 = status
        .split("landlock=full(abi ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if abi < 9 {
        assert_eq!(
            dirs.sock.accepted(),
            2,
            "Landlock ABI {abi} lets both connects through"
        );
    }
}

fn check_engine(out: &Outcome) {
    assert!(
        out.must("engine").starts_with("ok"),
        "{}",
        out.must("engine")
    );
    assert_eq!(
        out.must("eicar"),
        "Found([\"Win.Test.EICAR_HDB-1.UNOFFICIAL\"])"
    );
    assert!(
        out.must("zip").contains("ClamAV-Test-File.UNOFFICIAL"),
        "{}",
        out.must("zip")
    );
    assert!(
        out.must("eicar_zip")
            .contains("Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        "{}",
        out.must("eicar_zip")
    );
    assert_eq!(
        out.must("temp_files_left"),
        "0",
        "libclamav cleans up its temp dir"
    );
    if Path::new("/etc/localtime").exists() {
        assert_eq!(out.must("localtime"), "Ok(())");
    }
}

fn root_libclamav_loads_and_scans_after_demotion() {
    require_root!("the child demotes itself from root to nobody");
    let out = root_nobody();
    check_engine(&out);
    // A thread created after demotion (within the budget) scans too, and is
    // as confined as its creator.
    assert_eq!(
        out.must("thread_scan"),
        "Found([\"Win.Test.EICAR_HDB-1.UNOFFICIAL\"])"
    );
    assert!(out.must("thread_read_passwd").contains("Permission denied"));
}

/// Started as a normal user: as root we first become nobody by hand, as a
/// normal user we already are one.
fn unprivileged(max_threads: u64) -> Outcome {
    let root = started_as_root();
    let dirs = Dirs::new(root.then_some(NOBODY));
    let out = run_child("demote", &demote_env(&dirs, None, max_threads, root));
    assert!(out.success, "child failed: {:#?}", out.lines);
    out
}

fn unprivileged_keeps_identity_and_still_gets_nnp_and_landlock() {
    let out = unprivileged(2);
    let me = if started_as_root() {
        NOBODY
    } else {
        nix::unistd::getuid().as_raw()
    };
    assert!(out.proc_field("Uid").starts_with(&me.to_string()));
    assert_eq!(out.proc_field("NoNewPrivs"), "1");
    for key in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(out.proc_field(key), "0000000000000000", "{key}");
    }
    let status = out.must("status");
    assert!(status.contains("landlock=full(abi "), "{status}");
    assert!(status.contains(" no_new_privs caps=none"), "{status}");
    assert!(status.ends_with("net=denied"), "{status}");
    check_attempts(&out);
    check_engine(&out);
}

fn unprivileged_without_thread_budget_cannot_fork_or_spawn_threads() {
    let out = unprivileged(0);
    assert_eq!(out.must("rlimit_nproc"), "0 0");
    check_attempts(&out);
    let attempts = out.attempts();
    let exec = attempts.iter().find(|a| a.0.contains("/bin/sh")).unwrap();
    assert!(exec.3.starts_with("denied at fork"), "{}", exec.3);
    assert!(
        out.must("thread_spawn").starts_with("denied"),
        "{}",
        out.must("thread_spawn")
    );
    check_engine(&out);
}

fn unprivileged_cannot_switch_to_another_user() {
    let dirs = Dirs::new(None);
    let mut env = demote_env(&dirs, Some("root"), 0, false);
    if started_as_root() {
        env.push(("CS_PRE_SWITCH", NOBODY.to_string()));
    }
    let out = run_child("demote", &env);
    assert!(!out.success);
    let err = out.must("error");
    assert!(
        err.contains("cannot switch to user \"root\" (uid 0) without root"),
        "{err}"
    );
}

fn missing_user_error_says_how_to_create_it() {
    let err = sandbox::lookup_user("cs-no-such-user")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "service user \"cs-no-such-user\" does not exist: create it with `adduser --system --group --no-create-home cs-no-such-user` or set sandbox.user"
    );
    assert_eq!(sandbox::lookup_user("nobody").unwrap(), (NOBODY, NOBODY));
    // And demote stops there, before changing anything.
    let dirs = Dirs::new(None);
    let out = run_child(
        "demote",
        &demote_env(&dirs, Some("cs-no-such-user"), 0, false),
    );
    assert!(!out.success);
    assert_eq!(out.must("error"), err);
}

fn demote_refuses_a_multithreaded_process() {
    let out = run_child("threaded", &[]);
    assert!(out.success, "{:#?}", out.lines);
    let err = out.must("error");
    assert!(
        err.starts_with(
            "demotion must run while the process is single-threaded, but it has 2 threads"
        ),
        "{err}"
    );
    assert_eq!(out.must("nnp_after"), "false", "nothing was applied");
}

fn supervisor_keeps_only_the_listed_capabilities() {
    // As anyone it must say Ok (a normal user has nothing to drop).
    let out = run_child("supervisor", &[]);
    assert!(out.success, "{:#?}", out.lines);
    require_root!("only root has capabilities to drop");
    // CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7, CAP_DAC_READ_SEARCH 2.
    let want = format!("{:016x}", (1u64 << 5) | (1 << 6) | (1 << 7) | (1 << 2));
    assert_eq!(out.proc_field("CapBnd"), want);
    assert_eq!(out.proc_field("CapEff"), want);
    assert_eq!(out.proc_field("CapPrm"), want);
    assert_eq!(out.proc_field("CapInh"), "0000000000000000");
    assert_eq!(out.proc_field("CapAmb"), "0000000000000000");
    assert_eq!(
        out.proc_field("Uid"),
        "0 0 0 0",
        "the supervisor stays root"
    );
}

/// The production path: a supervisor trimmed by `restrict_supervisor`
/// re-executes itself as the worker (root keeps the supervisor's bounding set
/// as its capabilities across exec), and the worker demotes. Without
/// CAP_SETPCAP in the kept set the worker cannot empty its bounding set, and
/// says so; with it, everything is empty.
fn supervisor_started_worker_demotes_with_the_kept_capabilities() {
    require_root!("the supervisor keeps root's capabilities, the worker demotes to nobody");
    for (keep_setpcap, status_caps, bnd) in [
        (
            false,
            "caps=none(bounding kept)",
            format!("{:016x}", (1u64 << 5) | (1 << 6) | (1 << 7) | (1 << 2)),
        ),
        (true, "caps=none", "0000000000000000".to_string()),
    ] {
        let dirs = Dirs::new(Some(NOBODY));
        let mut env = demote_env(&dirs, Some("nobody"), 2, false);
        if keep_setpcap {
            env.push(("CS_KEEP_SETPCAP", "1".into()));
        }
        let out = run_child("supervisor_then_worker", &env);
        assert!(out.success, "{:#?}", out.lines);
        assert_eq!(out.must("worker_exit"), "0");
        assert_eq!(out.proc_field("Uid"), "65534 65534 65534 65534");
        for key in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(out.proc_field(key), "0000000000000000", "{key}");
        }
        assert_eq!(out.proc_field("CapBnd"), bnd);
        assert_eq!(out.proc_field("NoNewPrivs"), "1");
        let status = out.must("status");
        assert!(
            status.contains(&format!(" no_new_privs {status_caps} net=denied")),
            "{status}"
        );
        check_attempts(&out);
        check_engine(&out);
    }
}

fn status_display_is_one_line() {
    let s = sandbox::Status {
        uid: 105,
        gid: 110,
        landlock: sandbox::LandlockState::Full { abi: 5 },
        seccomp: sandbox::SeccompState::On,
        no_new_privs: true,
        capabilities_cleared: true,
        bounding_set_cleared: true,
        network_restricted: true,
    };
    assert_eq!(
        s.to_string(),
        "uid=105 gid=110 landlock=full(abi 5) seccomp=on no_new_privs caps=none net=denied"
    );
    let s = sandbox::Status {
        landlock: sandbox::LandlockState::NotEnforced {
            reason: "no Landlock".into(),
        },
        seccomp: sandbox::SeccompState::Failed {
            reason: "refused".into(),
        },
        no_new_privs: false,
        bounding_set_cleared: false,
        network_restricted: false,
        ..s
    };
    assert_eq!(
        s.to_string(),
        "uid=105 gid=110 landlock=off(no Landlock) seccomp=off(refused) caps=none(bounding kept) net=allowed"
    );
    let s = sandbox::Status {
        seccomp: sandbox::SeccompState::NotRequested,
        ..s
    };
    assert!(s.to_string().contains(") seccomp=off caps="), "{s}");
}

/// What runs inside the re-executed child. It prints `key=value` lines.
mod child {
    use super::*;
    use clamsentry::config::Config;
    use clamsentry::engine::{Engine, EngineSettings};
    use std::os::fd::AsFd;

    fn env_path(key: &str) -> PathBuf {
        PathBuf::from(std::env::var(key).unwrap())
    }

    pub fn run(scenario: &str) {
        match scenario {
            "demote" => demote(),
            "threaded" => threaded(),
            "supervisor" => supervisor(),
            "supervisor_then_worker" => supervisor_then_worker(),
            other => panic!("unknown scenario {other}"),
        }
    }

    fn wait_for_parent() {
        println!("demoted");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    }

    fn limit(r: nix::sys::resource::Resource) -> String {
        let (s, h) = nix::sys::resource::getrlimit(r).unwrap();
        format!("{s} {h}")
    }

    fn demote() {
        if let Ok(uid) = std::env::var("CS_PRE_SWITCH") {
            let uid: u32 = uid.parse().unwrap();
            let (u, g) = (
                nix::unistd::Uid::from_raw(uid),
                nix::unistd::Gid::from_raw(uid),
            );
            nix::unistd::setgroups(&[g]).unwrap();
            nix::unistd::setresgid(g, g, g).unwrap();
            nix::unistd::setresuid(u, u, u).unwrap();
        }
        let plan = Plan {
            user: std::env::var("CS_USER").ok(),
            read_only: vec![env_path("CS_RO")],
            read_write: vec![env_path("CS_RW")],
            read_files: vec![],
            max_open_files: 64,
            max_threads: std::env::var("CS_MAX_THREADS").unwrap().parse().unwrap(),
            seccomp: std::env::var_os("CS_NO_SECCOMP").is_none(),
            accepts: false,
        };
        // Opened before demotion, as the broker would: the sandbox cannot open it.
        let zip = std::fs::File::open(env_path("CS_ZIP")).unwrap();
        // Its spare socket is made before demotion too.
        let targets = sandbox::Targets::new(vec![env_path("CS_SOCKET")]);
        let status = match sandbox::demote(&plan) {
            Ok(s) => s,
            Err(e) => {
                println!("error={e}");
                std::process::exit(3);
            }
        };
        // As a worker does once its runtime exists: its own filter layer.
        if plan.seccomp {
            println!("sealed={:?}", sandbox::seal_worker().unwrap());
        }
        println!("status={status}");
        println!("pid={}", std::process::id());
        println!(
            "rlimit_core={}",
            limit(nix::sys::resource::Resource::RLIMIT_CORE)
        );
        println!(
            "rlimit_nofile={}",
            limit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        );
        println!(
            "rlimit_nproc={}",
            limit(nix::sys::resource::Resource::RLIMIT_NPROC)
        );
        wait_for_parent();

        for a in sandbox::probe(&plan, &targets) {
            println!(
                "attempt={}|{}|{}|{}",
                a.what, a.denied, a.expect_denied, a.detail
            );
        }

        let mut settings = EngineSettings::from_config(&Config::default());
        settings.temp_dir = Some(plan.read_write[0].clone());
        let engine = match Engine::load(&plan.read_only[0], &settings) {
            Ok(e) => e,
            Err(e) => {
                println!("engine=error {e}");
                return;
            }
        };
        println!("engine=ok {} signatures", engine.info().signatures);
        println!("eicar={:?}", engine.scan_bytes(&common::eicar(), false));
        println!(
            "zip={:?}",
            engine.scan_fd(zip.as_fd(), Path::new("clam.zip"), true)
        );
        println!("eicar_zip={:?}", engine.scan_bytes(&eicar_zip(), false));

        let engine = std::sync::Arc::new(engine);
        let e2 = engine.clone();
        match std::thread::Builder::new().spawn(move || {
            let v = e2.scan_bytes(&common::eicar(), false);
            let r = std::fs::read("/etc/passwd")
                .map(|_| ())
                .map_err(|e| e.to_string());
            (v, r)
        }) {
            Ok(h) => {
                let (v, r) = h.join().unwrap();
                println!("thread_spawn=ok");
                println!("thread_scan={v:?}");
                println!("thread_read_passwd={r:?}");
            }
            Err(e) => println!("thread_spawn=denied: {e}"),
        }
        println!(
            "localtime={:?}",
            std::fs::read("/etc/localtime")
                .map(|_| ())
                .map_err(|e| e.to_string())
        );
        let left = std::fs::read_dir(&plan.read_write[0]).unwrap().count();
        println!("temp_files_left={left}");
    }

    /// A stored (uncompressed) zip holding EICAR, built here so no file in
    /// the repository contains it.
    fn eicar_zip() -> Vec<u8> {
        let data = common::eicar();
        let name = b"eicar.com";
        let crc = crc32(&data);
        let mut z = Vec::new();
        let local = |z: &mut Vec<u8>| {
            z.extend_from_slice(&[0x50, 0x4b, 3, 4, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            z.extend_from_slice(&crc.to_le_bytes());
            z.extend_from_slice(&(data.len() as u32).to_le_bytes());
            z.extend_from_slice(&(data.len() as u32).to_le_bytes());
            z.extend_from_slice(&(name.len() as u16).to_le_bytes());
            z.extend_from_slice(&0u16.to_le_bytes());
            z.extend_from_slice(name);
        };
        local(&mut z);
        z.extend_from_slice(&data);
        let cd_start = z.len() as u32;
        z.extend_from_slice(&[0x50, 0x4b, 1, 2, 20, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0; 12]); // extra, comment, disk, int attr, ext attr
        z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        z.extend_from_slice(name);
        let cd_len = z.len() as u32 - cd_start;
        z.extend_from_slice(&[0x50, 0x4b, 5, 6, 0, 0, 0, 0, 1, 0, 1, 0]);
        z.extend_from_slice(&cd_len.to_le_bytes());
        z.extend_from_slice(&cd_start.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn threaded() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let plan = Plan {
            user: None,
            read_only: vec![],
            read_write: vec![],
            read_files: vec![],
            max_open_files: 64,
            max_threads: 0,
            seccomp: true,
            accepts: false,
        };
        match sandbox::demote(&plan) {
            Ok(s) => println!("status={s}"),
            Err(e) => println!("error={e}"),
        }
        println!("nnp_after={}", nix::sys::prctl::get_no_new_privs().unwrap());
        drop(tx);
        t.join().unwrap();
    }

    fn supervisor_then_worker() {
        use clamsentry::sandbox::Capability::*;
        let mut keep = vec![CAP_SETUID, CAP_SETGID, CAP_DAC_READ_SEARCH, CAP_KILL];
        if std::env::var("CS_KEEP_SETPCAP").is_ok() {
            keep.push(CAP_SETPCAP);
        }
        sandbox::restrict_supervisor(&keep).unwrap();
        // The worker inherits stdin/stdout: the parent talks to it directly.
        let st = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, "demote")
            .status()
            .unwrap();
        println!("worker_exit={}", st.code().unwrap_or(-1));
    }

    fn supervisor() {
        use clamsentry::sandbox::Capability::*;
        match sandbox::restrict_supervisor(&[CAP_SETUID, CAP_SETGID, CAP_DAC_READ_SEARCH, CAP_KILL])
        {
            Ok(()) => println!("restricted=ok"),
            Err(e) => {
                println!("error={e}");
                std::process::exit(3);
            }
        }
        wait_for_parent();
    }
}
