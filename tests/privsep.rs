//! Privilege separation, checked on the running daemon: who the worker is,
//! what its sandbox denies, and that crashes and reloads cost nothing but the
//! requests in flight.

mod common;

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

/// Kills the worker with `signal` while 20 clients stream; checks the
/// supervisor survives, logs how the worker died, and a new one answers.
fn crash_recovery(signal: Signal) {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let supervisor = d.pid();
    let w = d.worker();
    let started = Instant::now();
    let _ = talk(&d.unix_addr(), &[b"zPING\0"], Duration::from_secs(5));
    let load_time = started.elapsed();
    let l = load(&d, 20);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w), signal).unwrap();
    let killed = Instant::now();
    // The next PING is answered by a new worker.
    let mut answered = None;
    while killed.elapsed() < Duration::from_secs(30) {
        if talk(&d.unix_addr(), &[b"zPING\0"], Duration::from_secs(5))
            .ok()
            .as_deref()
            == Some(b"PONG\0")
            && d.worker() != w
        {
            answered = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = l.finish();
    let answered = answered.unwrap_or_else(|| {
        panic!(
            "the daemon answers again after the crash; log:\n{}",
            d.log()
        )
    });
    println!("worker {}: PING answered again after {answered:?}; {ok} streams OK, {failed} failed (in flight at the crash)", signal.as_str());
    assert_eq!(d.pid(), supervisor);
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), None).is_ok());
    assert!(
        d.log().contains(&format!("signal {}", signal.as_str())),
        "the crash is logged:\n{}",
        d.log()
    );
    assert!(failed <= 20, "only the requests in flight fail: {failed}");
    assert!(ok > 0);
    // Back-off starts at 250 ms; the new engine loads in about `load_time`.
    assert!(
        answered < Duration::from_millis(250) + load_time * 4 + Duration::from_secs(1),
        "{answered:?}"
    );
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
