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

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn worker_runs_as_the_service_user_with_nothing_and_supervisor_keeps_little() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let w = d.worker();
    assert_eq!(status_field(w, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(w, "Gid"), "65534\t65534\t65534\t65534");
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
    assert!(d.log().contains("landlock=full"), "{}", d.log());
}

#[test]
fn sandbox_check_reports_every_forbidden_attempt_denied() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\ndirectory = {:?}\n[sandbox]\nuser = \"nobody\"\n",
            db.path().display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["sandbox-check", "--config"])
        .arg(&cfg)
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
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line for {what}: {text}"));
        assert!(line.starts_with("ok") && line.contains("denied"), "{line}");
    }
    assert!(!text.contains("UNEXPECTED"), "{text}");
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

/// Kills one worker with `signal` while 16 clients stream; checks that only
/// the requests that worker held fail (the supervisor closes exactly the
/// connections it had handed to it, and logs how many), that the
/// supervisor and the engine holder live on, that the crash is logged, and
/// that a new worker is forked from the loaded engine (no reload).
fn crash_recovery(signal: Signal) {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "workers = 2")]);
    let supervisor = d.pid();
    let zygotes = d.zygotes();
    assert_eq!(zygotes.len(), 1);
    let w = d.worker();
    let l = load(&d, 16);
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w), signal).unwrap();
    let killed = Instant::now();
    // A new worker takes the dead one's place.
    while d.workers().contains(&w) || d.workers().len() < 2 {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "not replaced:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let replaced = killed.elapsed();
    std::thread::sleep(Duration::from_millis(500));
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
        "worker {}: replaced after {replaced:?}; {ok} streams OK, {failed} failed, {revoked} connections were the dead worker's",
        signal.as_str()
    );
    assert_eq!(d.pid(), supervisor);
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), None).is_ok());
    assert_eq!(d.zygotes(), zygotes, "the engine holder is unchanged");
    assert!(
        log.contains(&format!("signal {}", signal.as_str())),
        "the crash is logged:\n{log}"
    );
    assert!(log.contains("crashed worker replaced"), "{log}");
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
    let workers = d.workers().len();
    for i in 0..10 {
        let old = d.workers();
        assert_eq!(
            talk(&d.unix_addr(), &[b"zRELOAD\0"], Duration::from_secs(5)).unwrap(),
            b"RELOADING\0"
        );
        // Wait for the blue/green switch: every old worker leaves, as many
        // new ones serve, and the old engine holder is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.workers().iter().any(|w| old.contains(w))
            || d.workers().len() != workers
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
    let d = Daemon::clamsentry(dir.path(), &[("limits", "workers = 2")]);
    std::thread::sleep(Duration::from_millis(300));
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
    let workers = d.workers();
    assert_eq!(workers.len(), 2);
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
/// engine holder holds nothing but its control channel: no client
/// connection, no listening socket.
#[test]
fn workers_cannot_fork_and_the_engine_holder_holds_only_its_channel() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "workers = 2")]);
    let _idle = common::client::Conn::open(&d.unix_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for w in d.workers() {
        assert_eq!(max_processes(w), "0", "worker {w}");
    }
    let z = d.zygotes()[0];
    let zlimit: u64 = max_processes(z).parse().unwrap();
    assert!(zlimit > 0, "the engine holder can fork");
    // Its descriptors: stdin, stdout, stderr, one socket (its control
    // channel), its own /proc/PID/task (to count its threads before each
    // fork; opened before the sandbox closed /proc), its own
    // /proc/PID/smaps_rollup (its memory figure, same), and the signature
    // directory (opened before it demoted itself).
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
    assert_eq!(sockets, 1, "only the control channel");
    // Workers: stdio, their two channels, their clients' sockets, their own
    // smaps_rollup (opened before they narrowed their sandbox).
    for w in d.workers() {
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
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
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
    if !is_root() {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
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
    let log = d.log();
    assert!(log.contains("running without Landlock"), "{log}");
    assert!(log.contains("seccomp filter hides"), "{log}");
}
