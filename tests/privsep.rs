//! Privilege separation, checked on the running daemon: who the worker is,
//! what its sandbox denies, and that crashes and reloads cost nothing but the
//! requests in flight.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{instream, show, talk};
use common::daemons::{tree_rss_kib, Daemon};
use common::{eicar, TestDb};
use nix::sys::signal::Signal;

fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .map(|l| l[field.len() + 1..].trim().to_string())
        .unwrap_or_default()
}

#[test]
fn worker_runs_as_the_service_user_with_nothing_and_supervisor_keeps_little() {
    require_root!("the worker becomes nobody, the supervisor keeps capabilities");
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let w = d.worker();
    let (uid, gid) = common::service_user();
    assert_eq!(
        status_field(w, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(w, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(w, cap), "0000000000000000", "worker {cap}");
    }
    assert_eq!(status_field(w, "NoNewPrivs"), "1");
    // The supervisor: CAP_CHOWN, CAP_DAC_READ_SEARCH, CAP_KILL, CAP_SETGID,
    // CAP_SETUID, CAP_SETPCAP.
    let kept = format!(
        "{:016x}",
        1u64 | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
    );
    for cap in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_field(d.pid(), cap), kept, "supervisor {cap}");
    }
    assert_eq!(status_field(d.pid(), "CapInh"), "0000000000000000");
    assert_eq!(status_field(d.pid(), "CapAmb"), "0000000000000000");
    d.log_with("landlock=full");
}

/// A listening Unix socket at `path` with `mode`, accepting nothing yet.
fn listening(path: &Path, mode: u32) -> std::os::unix::net::UnixListener {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

#[test]
fn sandbox_check_reports_every_forbidden_attempt_denied() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    // Both sockets are reachable by the service user: the daemon's own at
    // Debian's mode 0666, another one at 0777, in a world-readable directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let own = dir.path().join("clamd.sock");
    let other = dir.path().join("other.sock");
    let own_listener = listening(&own, 0o666);
    let other_listener = listening(&other, 0o777);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\ndirectory = {:?}\n[listen]\nunix = {:?}\n[sandbox]\nuser = \"nobody\"\n",
            db.path().display().to_string(),
            own.display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["sandbox-check", "--config"])
        .arg(&cfg)
        .arg("--connect")
        .arg(&other)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in [
        "/etc/shadow",
        "/etc/passwd",
        "create /tmp",
        "execute /bin/sh",
        "TCP connect",
        "TCP bind",
        "setuid(0)",
        "socket(AF_UNIX SOCK_STREAM)",
        "socket(AF_UNIX SOCK_DGRAM)",
        "socket(AF_UNIX SOCK_SEQPACKET)",
        "socket(AF_INET SOCK_STREAM)",
        "socket(AF_INET SOCK_DGRAM)",
        "socket(AF_INET6 SOCK_STREAM)",
        "socket(AF_INET6 SOCK_DGRAM)",
        "socket(AF_NETLINK NETLINK_ROUTE)",
        "socketpair(AF_UNIX SOCK_STREAM)",
        &format!("connect to {} with a new socket", own.display()),
        &format!("connect to {} with a socket made before", own.display()),
        &format!("connect to {} with a new socket", other.display()),
        &format!("connect to {} with a socket made before", other.display()),
        "io_uring_setup",
        "unshare(CLONE_NEWUSER)",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line for {what}: {text}"));
        assert!(line.starts_with("ok") && line.contains("denied"), "{line}");
    }
    assert!(!text.contains("UNEXPECTED"), "{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with("engine holder: ") && l.contains(" seccomp=on ")),
        "{text}"
    );
    // Nothing reached either socket.
    assert!(own_listener.accept().is_err());
    assert!(other_listener.accept().is_err());
}

/// Streams continuously from `clients` threads until `stop`; counts outcomes.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn load(d: &Daemon, clients: usize) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..clients)
        .map(|i| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            let addr = if i % 2 == 0 {
                d.unix_addr()
            } else {
                d.tcp_addr()
            };
            std::thread::spawn(move || {
                let req = instream(b"zINSTREAM\0", &eicar(), 16);
                while !stop.load(Ordering::Relaxed) {
                    match talk(&addr, &[&req], Duration::from_secs(30)) {
                        Ok(r) if r == b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0" => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    Load {
        ok,
        failed,
        stop,
        threads,
    }
}

impl Load {
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_crashed_worker_is_replaced_and_only_requests_in_flight_fail() {
    crash_recovery(Signal::SIGSEGV);
}

#[test]
fn a_killed_worker_is_replaced_too() {
    crash_recovery(Signal::SIGKILL);
}

/// Kills the worker serving 16 streaming clients with `signal`; checks that
/// only the requests that worker held fail (the supervisor closes exactly
/// the connections it had handed to it, and logs how many), that the
/// supervisor and the engine holder live on, that the crash is logged, and
/// that the clients' next connections get a standby worker forked from the
/// loaded engine (no reload).
fn crash_recovery(signal: Signal) {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "standby-workers = 2")]);
    let supervisor = d.pid();
    d.wait_workers(2);
    let zygotes = d.zygotes();
    assert_eq!(zygotes.len(), 1, "{}", d.log());
    let l = load(&d, 16);
    // Requests in flight when it dies: wait until some were answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while l.ok.load(Ordering::Relaxed) < 16 {
        assert!(Instant::now() < deadline, "no stream answered");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Half the clients are root on the Unix socket: their worker goes.
    let w = d.worker_of("uid=0");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w), signal).unwrap();
    let killed = Instant::now();
    // Its clients' next connections get another worker; meanwhile the only
    // child of the supervisor that bears the engine holder's name is the
    // engine holder (a worker is born with its own name).
    while d.workers().contains(&w) {
        assert_eq!(d.zygotes(), zygotes, "{}", d.log());
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not gone:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = l.ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while l.ok.load(Ordering::Relaxed) < answered + 16 {
        assert!(
            Instant::now() < deadline,
            "no stream answered after the crash:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let replaced = killed.elapsed();
    let (ok, failed) = l.finish();
    let log = d.log();
    // "closed the connections of a worker that is gone worker=W connections=K"
    let revoked: u64 = log
        .lines()
        .filter(|l| l.contains("closed the connections of a worker that is gone"))
        .filter_map(|l| l.split("connections=").nth(1))
        .filter_map(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    println!(
        "worker {}: its clients served again after {replaced:?}; {ok} streams OK, {failed} failed, {revoked} connections were the dead worker's",
        signal.as_str()
    );
    assert_eq!(d.pid(), supervisor);
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), None).is_ok());
    assert_eq!(d.zygotes(), zygotes, "the engine holder is unchanged");
    assert!(
        log.contains(&format!("signal {}", signal.as_str())),
        "the crash is logged:\n{log}"
    );
    // Said when the new worker is bound, or, when a hand-off the dead
    // worker refused had its client given a new one already, when its end
    // is seen (which may come after the clients are served again).
    let log = d.log_with("a crashed worker's client has a new one");
    assert_eq!(
        log.matches("engine holder started").count(),
        1,
        "no reload:\n{log}"
    );
    assert!(
        failed <= revoked,
        "only the dead worker's requests fail: {failed} failed, it held {revoked}"
    );
    assert!(ok > 0);
}

#[test]
fn ten_reloads_under_load_lose_nothing_and_return_memory() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    // One worker for root (the readiness check asked over Unix and over
    // loopback TCP: one local user) and one standby. The self-test's
    // worker comes and goes, and is not waited for.
    d.wait_workers(2);
    let workers = 2;
    // Warm up, then measure.
    for _ in 0..20 {
        let _ = talk(
            &d.unix_addr(),
            &[&instream(b"zINSTREAM\0", &eicar(), 16)],
            Duration::from_secs(5),
        );
    }
    let before = tree_rss_kib(d.pid());
    let l = load(&d, 8);
    for i in 0..10 {
        let old = d.workers();
        assert_eq!(
            talk(&d.unix_addr(), &[b"zRELOAD\0"], Duration::from_secs(5)).unwrap(),
            b"RELOADING\0"
        );
        // Wait for the blue/green switch: every old worker leaves, as many
        // new ones serve (each client identity's, and a standby), and the
        // old engine holder is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.workers().iter().any(|w| old.contains(w))
            || d.workers().len() < workers
            || d.zygotes().len() != 1
        {
            assert!(
                Instant::now() < deadline,
                "reload {i} did not complete:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (ok, failed) = l.finish();
    std::thread::sleep(Duration::from_millis(300));
    let after = tree_rss_kib(d.pid());
    println!("10 reloads under load: {ok} streams OK, {failed} failed; RSS {before} KiB before, {after} KiB after");
    assert_eq!(failed, 0);
    assert!(ok > 0);
    assert!(
        after * 10 <= before * 11,
        "RSS after reloads {after} KiB vs {before} KiB before"
    );
    assert_eq!(d.log().matches("reload complete").count(), 10);
}

#[test]
fn paths_outside_the_roots_escaping_symlinks_and_unreadable_files_look_missing() {
    let db = TestDb::new();
    let root = tempfile::Builder::new()
        .prefix("cs-root")
        .tempdir()
        .unwrap();
    let outside = tempfile::Builder::new()
        .prefix("cs-outside")
        .tempdir()
        .unwrap();
    std::fs::write(outside.path().join("eicar.txt"), eicar()).unwrap();
    std::fs::write(root.path().join("eicar.txt"), eicar()).unwrap();
    std::os::unix::fs::symlink(outside.path().join("eicar.txt"), root.path().join("escape"))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape-dir")).unwrap();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            (
                "policy",
                &format!("scan-roots = [{:?}]", root.path().display().to_string()),
            ),
            ("scan", "follow-file-symlinks = true"),
            ("scan", "follow-directory-symlinks = true"),
        ],
    );
    let ask = |p: &Path| {
        let reply = talk(
            &d.unix_addr(),
            &[format!("zSCAN {}\0", p.display()).as_bytes()],
            Duration::from_secs(5),
        )
        .unwrap();
        show(&reply).replace(&p.display().to_string(), "PATH")
    };
    let missing = "PATH: File path check failure: No such file or directory. ERROR\\0";
    assert_eq!(
        ask(&root.path().join("eicar.txt")),
        "PATH: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    assert_eq!(ask(&root.path().join("nothing")), missing);
    assert_eq!(ask(&outside.path().join("eicar.txt")), missing);
    assert_eq!(ask(&outside.path().join("nothing")), missing);
    assert_eq!(ask(&root.path().join("escape")), missing);
    assert_eq!(ask(&root.path().join("escape-dir/eicar.txt")), missing);
    assert_eq!(ask(Path::new("/etc/shadow")), missing);
    // Walking the root does not follow the escaping links out of it.
    let walk = talk(
        &d.unix_addr(),
        &[format!("zCONTSCAN {}\0", root.path().display()).as_bytes()],
        Duration::from_secs(5),
    )
    .unwrap();
    let walk = show(&walk);
    assert!(
        !walk.contains(&outside.path().display().to_string()),
        "{walk}"
    );
    assert!(
        walk.contains("eicar.txt: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND"),
        "{walk}"
    );
}

/// The engine holder shares the compiled engine with its workers: most of
/// its resident memory is shared pages (copy-on-write after the fork), and
/// the whole tree's proportional size is far less than one engine per
/// process. The database is made big enough (200,000 MD5 signatures) for
/// the engine to dominate.
#[test]
fn workers_share_the_engine_holders_pages() {
    let dir = tempfile::Builder::new()
        .prefix("cs-bigdb")
        .tempdir()
        .unwrap();
    use std::fmt::Write as _;
    let mut hdb = String::with_capacity(200_000 * 50);
    for i in 0..200_000u64 {
        let _ = writeln!(
            hdb,
            "{:032x}:{}:Clamsentry.Test.Big-{i}",
            i * 2_654_435_761,
            1000 + i % 5000
        );
    }
    std::fs::write(dir.path().join("big.hdb"), hdb).unwrap();
    std::fs::write(dir.path().join("test.hdb"), common::HDB).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::clamsentry(dir.path(), &[("limits", "standby-workers = 2")]);
    // Two standby workers, and one for each client identity that asked
    // (the readiness check's PINGs: root on the Unix socket, TCP).
    let workers = d.wait_workers(2);
    let kib = |pid: i32, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let z = d.zygotes()[0];
    let shared = kib(z, "Shared_Clean:") + kib(z, "Shared_Dirty:");
    let rss = kib(z, "Rss:");
    println!(
        "engine holder: Rss {rss} KiB, shared {shared} KiB; workers' Pss: {:?} KiB, Rss: {:?} KiB",
        workers.iter().map(|w| kib(*w, "Pss:")).collect::<Vec<_>>(),
        workers.iter().map(|w| kib(*w, "Rss:")).collect::<Vec<_>>()
    );
    assert!(
        shared * 2 > rss,
        "most of the holder's memory is shared with its workers"
    );
    let tree_pss: u64 = std::iter::once(z)
        .chain(workers.iter().copied())
        .map(|p| kib(p, "Pss:"))
        .sum();
    let one_engine = rss;
    assert!(
        tree_pss < one_engine * 3 / 2,
        "three processes cost {tree_pss} KiB of PSS, one engine is {one_engine} KiB"
    );
}

/// Inodes of datagram Unix sockets (type 0002 in /proc/net/unix).
fn datagram_inodes() -> Vec<String> {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"0002")).then(|| f.get(6).unwrap_or(&"").to_string())
        })
        .collect()
}

/// "Max processes" of a process, from /proc/PID/limits (soft limit).
fn max_processes(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string()
}

/// Workers can create no process and no thread (RLIMIT_NPROC 0 once their
/// threads run); the engine holder can still fork (it forked them). The
/// engine holder holds nothing but its control and log channels: no client
/// connection, no listening socket. No child holds a datagram socket (the
/// journald socket is the supervisor's alone), nor the daemon's stderr.
#[test]
fn workers_cannot_fork_and_the_engine_holder_holds_only_its_channel() {
    require_root!("the engine holder and the workers run as nobody");
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "standby-workers = 2")]);
    let _idle = common::client::Conn::open(&d.unix_addr()).unwrap();
    // Every worker lowers its limit once its threads run.
    let workers = d.wait_workers(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(w) = workers.iter().find(|w| max_processes(**w) != "0") {
        assert!(
            Instant::now() < deadline,
            "worker {w} may still fork: Max processes {}",
            max_processes(*w)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let z = d.zygotes()[0];
    let zlimit: u64 = max_processes(z).parse().unwrap();
    assert!(zlimit > 0, "the engine holder can fork");
    // Its descriptors: stdin, stdout, stderr (a pipe to the supervisor),
    // two sockets (its control and log channels), its own /proc/PID/task
    // (to count its threads before each fork; opened before the sandbox
    // closed /proc), its own /proc/PID/smaps_rollup (its memory figure,
    // same) and the signature directory (opened before it demoted itself).
    let signatures = std::fs::canonicalize(db.path())
        .unwrap()
        .display()
        .to_string();
    let mut sockets = 0;
    for e in std::fs::read_dir(format!("/proc/{z}/fd"))
        .unwrap()
        .flatten()
    {
        let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
        let target = std::fs::read_link(e.path()).unwrap().display().to_string();
        if n <= 2
            || target == format!("/proc/{z}/task")
            || target == format!("/proc/{z}/smaps_rollup")
            || target == signatures
        {
            continue;
        }
        assert!(
            target.starts_with("socket:"),
            "engine holder fd {n} -> {target}"
        );
        sockets += 1;
    }
    assert_eq!(sockets, 2, "only the control and log channels");
    let datagram = datagram_inodes();
    let daemon_stderr = std::fs::read_link(format!("/proc/{}/fd/2", d.pid())).unwrap();
    for child in d.children() {
        for e in std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .flatten()
        {
            let target = std::fs::read_link(e.path()).unwrap();
            let t = target.display().to_string();
            let ino = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']'));
            assert!(
                !ino.is_some_and(|i| datagram.iter().any(|d| d == i)),
                "process {child} holds a datagram socket (fd {:?})",
                e.file_name()
            );
            assert_ne!(
                target,
                daemon_stderr,
                "process {child} holds the daemon's stderr (fd {:?})",
                e.file_name()
            );
        }
    }
    // Workers: stdio, their channels, their clients' sockets, their own
    // smaps_rollup (opened before they narrowed their sandbox).
    for w in workers {
        for e in std::fs::read_dir(format!("/proc/{w}/fd"))
            .unwrap()
            .flatten()
        {
            let target = std::fs::read_link(e.path()).unwrap().display().to_string();
            assert_ne!(
                target, signatures,
                "worker {w} holds the signature directory"
            );
            assert!(
                target.starts_with("socket:")
                    || target.starts_with("anon_inode:")
                    || target.starts_with("pipe:")
                    || target == "/dev/null"
                    || target == format!("/proc/{w}/smaps_rollup")
                    || target.starts_with("/tmp")
                    || target.contains("daemon.log"),
                "worker fd -> {target}"
            );
        }
    }
}

/// clamd started as root without `User` loads its signatures as root, so a
/// database directory below a directory only root may enter works there;
/// ClamAV's own clamd tests (unit_tests/clamd_test.py) keep theirs in such a
/// directory (a 0700 `mkdtemp`). The engine holder opens the directory
/// before it demotes itself, so clamsentry loads it too and answers as
/// clamd does; the service user still needs read permission on the
/// directory and its files, so a directory only root may read still fails,
/// with its configured name in the error.
#[test]
fn signatures_below_a_root_only_directory_load_as_with_clamd() {
    require_root!("a directory only root may enter, and the service user nobody");
    let private = tempfile::Builder::new()
        .prefix("cs-root-only")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = private.path().join("database");
    std::fs::create_dir(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in [
        ("test.hdb", common::HDB),
        ("test.ndb", common::NDB),
        ("test.ldb", common::LDB),
    ] {
        std::fs::write(db.join(name), text).unwrap();
        std::fs::set_permissions(db.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The service user (nobody in the tests) cannot reach it by its path.
    let reach = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!reach.status.success(), "nobody can list {}", db.display());

    let sentry = Daemon::clamsentry(&db, &common::COMPAT_SETTINGS);
    let clamd = Daemon::clamd(&db, &[]);
    let stream = instream(b"zINSTREAM\0", &eicar(), 4096);
    let clean = instream(b"zINSTREAM\0", b"nothing to see here", 4096);
    for request in [&b"zVERSION\0"[..], &stream, &clean] {
        let ours = talk(&sentry.unix_addr(), &[request], Duration::from_secs(10)).unwrap();
        let theirs = talk(&clamd.unix_addr(), &[request], Duration::from_secs(10)).unwrap();
        assert_eq!(show(&ours), show(&theirs));
    }
    assert_eq!(
        show(&talk(&sentry.unix_addr(), &[&stream], Duration::from_secs(10)).unwrap()),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    drop(sentry);

    // A directory the service user may not read: the error names it.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\ndirectory = {:?}\n[listen]\nunix = {:?}\n[sandbox]\nuser = \"nobody\"\n",
            db.display().to_string(),
            dir.path().join("s").display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot load signatures from {}", db.display())),
        "{err}"
    );
    assert!(!err.contains("/proc/self/fd"), "{err}");
}

/// Installs a seccomp filter that answers ENOSYS to the three Landlock
/// system calls (444-446 on every Linux architecture), as a container's
/// filter does (systemd-nspawn without `--system-call-filter`), then runs
/// the command given.
const HIDE_LANDLOCK: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
prog = [(0x20, 0, 0, 0),                  # A = syscall number
        (0x35, 0, 2, 444),                # A >= landlock_create_ruleset?
        (0x25, 1, 0, 446),                # A > landlock_restrict_self?
        (0x06, 0, 0, 0x00050000 | 38),    # return ENOSYS
        (0x06, 0, 0, 0x7fff0000)]         # allow
code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *f) for f in prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog), ctypes.cast(code, ctypes.c_void_p))
ul = ctypes.c_ulong
assert libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) == 0, "no_new_privs"
assert libc.prctl(22, ul(2), ctypes.byref(fprog), ul(0), ul(0)) == 0, "seccomp"
os.execv(sys.argv[1], sys.argv[1:])
"#;

fn hidden_landlock(l: &common::daemons::Launch) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(HIDE_LANDLOCK)
        .arg(&l.bin)
        .arg("--config")
        .arg(&l.config);
    c
}

/// `sandbox.landlock = "required"` (the default) refuses to start when a
/// seccomp filter hides Landlock, and says so and what to do; with
/// "best-effort" the daemon serves and the log says it runs without.
#[test]
fn landlock_hidden_by_seccomp_refuses_to_start_unless_best_effort() {
    require_root!("the daemon demotes its workers to nobody");
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let tcp = format!("127.0.0.1:{}", common::daemons::free_port())
        .parse()
        .unwrap();
    let config =
        common::daemons::write_config(dir.path(), db.path(), &dir.path().join("s"), tcp, &[]);
    let launch = common::daemons::Launch {
        bin: env!("CARGO_BIN_EXE_clamsentry").into(),
        config,
        unix: dir.path().join("s"),
        tcp,
        dir: dir.path().to_path_buf(),
    };
    let mut child = common::daemons::die_with_parent(&mut hidden_landlock(&launch))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("started with Landlock hidden and sandbox.landlock = \"required\"");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("a seccomp filter hides the Landlock system calls")
            && err.contains("--system-call-filter")
            && err.contains("best-effort")
            && !err.contains("this kernel has no Landlock"),
        "{err}"
    );

    let d = Daemon::launch(
        db.path(),
        &[("sandbox", "landlock = \"best-effort\"")],
        hidden_landlock,
    );
    let reply = talk(
        &d.unix_addr(),
        &[&instream(b"zINSTREAM\0", &eicar(), 4096)],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        show(&reply),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    let log = d.log_when("the engine holder's warning", |log| {
        log.contains("running without Landlock") && log.contains("seccomp filter hides")
    });
    assert!(log.contains("source=engine-holder"), "{log}");
}

/// Under a filter that refuses the `seccomp()` system call but not `prctl`,
/// the engine holder installs its filter with `prctl(PR_SET_SECCOMP)`, and
/// its workers have it and their own: three filters, the outer one, the
/// engine holder's and the worker's.
#[test]
fn the_filter_is_installed_with_prctl_where_seccomp_is_refused() {
    require_root!("the supervisor starts its workers as another user");
    let db = TestDb::new();
    let d = Daemon::launch(db.path(), &[], common::seccomp::hidden_seccomp(false));
    let reply = talk(
        &d.unix_addr(),
        &[&instream(b"zINSTREAM\0", &eicar(), 4096)],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        show(&reply),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    assert!(d.log().contains(" seccomp=on "), "{}", d.log());
    assert_eq!(status_field(d.worker(), "Seccomp"), "2");
    assert_eq!(status_field(d.worker(), "Seccomp_filters"), "3");
    assert_eq!(status_field(d.zygotes()[0], "Seccomp_filters"), "2");
}

/// `sandbox.seccomp = "required"` (the default) refuses to start when the
/// filter cannot be installed at all, and says so and what to do; with
/// "best-effort" the daemon serves and the log says it runs without.
#[test]
fn a_filter_that_cannot_be_installed_refuses_to_start_unless_best_effort() {
    require_root!("the supervisor starts its workers as another user");
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let tcp = format!("127.0.0.1:{}", common::daemons::free_port())
        .parse()
        .unwrap();
    let config =
        common::daemons::write_config(dir.path(), db.path(), &dir.path().join("s"), tcp, &[]);
    let launch = common::daemons::Launch {
        bin: env!("CARGO_BIN_EXE_clamsentry").into(),
        config,
        unix: dir.path().join("s"),
        tcp,
        dir: dir.path().to_path_buf(),
    };
    let out = common::daemons::die_with_parent(&mut common::seccomp::hidden_seccomp(true)(&launch))
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the system-call filter cannot be installed")
            && err.contains("prctl(PR_SET_SECCOMP)")
            && err.contains("sandbox.seccomp = \"best-effort\""),
        "{err}"
    );

    let d = Daemon::launch(
        db.path(),
        &[("sandbox", "seccomp = \"best-effort\"")],
        common::seccomp::hidden_seccomp(true),
    );
    let reply = talk(
        &d.unix_addr(),
        &[&instream(b"zINSTREAM\0", &eicar(), 4096)],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        show(&reply),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    let log = d.log();
    assert!(
        log.contains("running without the system-call filter"),
        "{log}"
    );
    assert!(log.contains(" seccomp=off(both seccomp()"), "{log}");
}

/// The socket inodes a process holds.
fn socket_inodes(pid: i32) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.starts_with("socket:"))
        .collect()
}

/// Workers serve different clients, so no socket may join two of them, nor
/// a worker and the engine holder: each worker's runtime makes its own
/// socket pair (tokio's signal driver) before its filter denies
/// `socketpair()`, rather than sharing one made in the engine holder.
#[test]
fn no_socket_is_shared_between_workers_or_with_the_engine_holder() {
    require_root!("the supervisor starts its workers as another user");
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "standby-workers = 3")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.workers().len() < 3 {
        assert!(Instant::now() < deadline, "three workers never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut procs: Vec<i32> = d.workers();
    procs.extend(d.zygotes());
    let sets: Vec<_> = procs.iter().map(|&p| (p, socket_inodes(p))).collect();
    for (i, (a, sa)) in sets.iter().enumerate() {
        assert!(!sa.is_empty(), "{a} holds no socket");
        for (b, sb) in &sets[i + 1..] {
            let shared: Vec<_> = sa.intersection(sb).collect();
            assert!(shared.is_empty(), "{a} and {b} share {shared:?}");
        }
    }
}
