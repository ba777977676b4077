//! One node of a fleet: an administrator's maintenance request for the
//! load balancer's agent (`MAINT`, `clamsentry maint`), a reload that waits
//! for memory headroom in a cgroup too small for two engines while scans go
//! on, and SIGTERM under socket activation (in-flight scans finish, new
//! connections wait in the held socket for the next start).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cgroup::{memory_cgroup, Cgroup};
use common::client::{instream, show, talk, Addr, Conn};
use common::daemons::{die_with_parent, free_port, write_config, Daemon};
use common::holder::Holder;
use common::{eicar, TestDb};

const T: Duration = Duration::from_secs(10);
const FOUND: &[u8] = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0";
const BIN: &str = env!("CARGO_BIN_EXE_clamsentry");

fn scan(addr: &Addr) -> Vec<u8> {
    talk(addr, &[&instream(b"zINSTREAM\0", &eicar(), 1024)], T).unwrap()
}

/// The observer's HAProxy agent at `addr`: its one line.
fn agent_line(addr: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(T));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn eventually(what: &str, within: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !pred() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `clamsentry maint ARGS` as `uid` (None: as the test, root): exit code,
/// stdout, stderr.
fn maint(args: &[&str], uid: Option<u32>) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.arg("maint").args(args);
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn maintenance_is_an_administrators_request_on_the_unix_socket() {
    require_root!("a client runs as nobody, and root is the administrator");
    let db = TestDb::new();
    let agent = format!("127.0.0.1:{}", free_port());
    let agent_listen = format!("listen = {agent:?}");
    let d = Daemon::clamsentry(db.path(), &[("agent", &agent_listen)]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.unix.display().to_string();
    eventually("the agent says ready", Duration::from_secs(60), || {
        agent_line(&agent).starts_with("up ready")
    });
    assert_eq!(
        maint(&["status", "--socket", &sock], None),
        (0, "maintenance off\n".into(), String::new())
    );
    assert_eq!(
        maint(&["on", "--socket", &sock], None).1,
        "maintenance on\n"
    );
    assert_eq!(
        maint(&["status", "--socket", &sock], None).1,
        "maintenance on\n"
    );
    // Without --socket: listen.unix of the configuration.
    let config = d.dir.path().join("clamsentry.toml");
    let (code, out, err) = maint(&["status", "--config", &config.display().to_string()], None);
    assert_eq!((code, out.as_str()), (0, "maintenance on\n"), "{err}");
    let log = d.log();
    assert!(
        log.contains("maintenance on: the load balancer's agent now answers maint"),
        "{log}"
    );
    // The observer's agent (what HAProxy's agent-check reads) says maint,
    // and `probe ready` (Kubernetes' readiness) says not ready.
    eventually("the agent says maint", Duration::from_secs(60), || {
        agent_line(&agent).starts_with("up maint #")
    });
    let out = Command::new(BIN)
        .args(["probe", "ready", "--agent", &agent])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A local user who is not an administrator: refused, state unchanged.
    let (code, _, err) = maint(&["off", "--socket", &sock], Some(65534));
    assert_eq!(code, 1);
    assert!(
        err.contains("MAINT command requires an administrator"),
        "{err}"
    );
    assert_eq!(
        maint(&["status", "--socket", &sock], None).1,
        "maintenance on\n"
    );
    // Never over TCP; a bad argument is an error reply; not in
    // VERSIONCOMMANDS (clients compare that list with clamd's).
    assert_eq!(
        show(&talk(&d.tcp_addr(), &[b"zMAINT OFF\0"], T).unwrap()),
        "MAINT command not allowed on this listener. ERROR\\0"
    );
    assert_eq!(
        show(&talk(&d.unix_addr(), &[b"zMAINT MAYBE\0"], T).unwrap()),
        "MAINT takes ON, OFF or nothing. ERROR\\0"
    );
    assert_eq!(
        show(&talk(&d.unix_addr(), &[b"nMAINT\n"], T).unwrap()),
        "MAINT ON\\n"
    );
    let commands = talk(&d.unix_addr(), &[b"zVERSIONCOMMANDS\0"], T).unwrap();
    assert!(!show(&commands).contains("MAINT"), "{}", show(&commands));
    // Scans go on in maintenance: only the agent's answer changes.
    assert_eq!(scan(&d.unix_addr()), FOUND);
    assert_eq!(
        maint(&["off", "--socket", &sock], None).1,
        "maintenance off\n"
    );
    assert!(d.log().contains("maintenance off"));
    eventually(
        "the agent says ready again",
        Duration::from_secs(60),
        || agent_line(&agent).starts_with("up ready"),
    );
    let out = Command::new(BIN)
        .args(["probe", "ready", "--agent", &agent])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A missing socket says what to do.
    let (code, _, err) = maint(&["status", "--socket", "/nonexistent.sock"], None);
    assert_eq!(code, 1);
    assert!(err.contains("--socket"), "{err}");
}

/// A signature database whose engine is big enough to measure: the test
/// signatures plus 300,000 MD5 signatures of nothing (about 70 MiB at the
/// engine holder's peak).
fn big_db() -> TestDb {
    let db = TestDb::new();
    let mut text = String::with_capacity(300_000 * 64);
    for i in 0..300_000u32 {
        let digest = md5_hex(format!("fleet-{i}").as_bytes());
        text.push_str(&format!("{digest}:{}:Fleet.Test.Sig-{i}\n", 1000 + i));
    }
    std::fs::write(db.path().join("big.hdb"), text).unwrap();
    db
}

/// Distinct 32-hex-digit strings (MD5-shaped; whether they are real MD5s
/// does not matter: no file has them).
fn md5_hex(data: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (data, 1u8).hash(&mut b);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

/// The number after `key=` on the last log line containing `what`.
fn logged(d: &Daemon, what: &str, key: &str) -> Option<u64> {
    d.log()
        .lines()
        .rev()
        .filter(|l| l.contains(what))
        .find_map(|l| {
            l.split(&format!("{key}="))
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

#[test]
fn a_reload_without_memory_headroom_waits_while_scans_go_on() {
    require_root!("the daemon runs in a memory cgroup of its own");
    let (parent, limit, usage) = require!(common::require::need(
        "a memory cgroup",
        memory_cgroup(),
        "the test limits the daemon's memory",
        "a kernel with the memory controller (cgroup v2 memory.max or v1 memory.limit_in_bytes)"
    ));
    let cg = Cgroup {
        dir: parent.join(format!("clamsentry-headroom-{}", std::process::id())),
        limit,
        usage,
    };
    std::fs::create_dir(&cg.dir).unwrap();
    let db = big_db();
    let procs = cg.dir.join("cgroup.procs");
    let agent = format!("127.0.0.1:{}", free_port());
    let agent_listen = format!("listen = {agent:?}");
    let d = Daemon::launch(
        db.path(),
        &[
            ("limits", "reload-retry = 1"),
            ("limits", "reload-headroom = \"16M\""),
            ("database", "self-check = 0"),
            ("agent", &agent_listen),
        ],
        |l| {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("echo $$ > \"$0\" && exec \"$1\" --config \"$2\"")
                .arg(&procs)
                .arg(&l.bin)
                .arg(&l.config);
            c
        },
    );
    let peak_kib = logged(&d, "engine holder ready", "load_peak_kib").expect("the peak is logged");
    assert!(peak_kib > 40_000, "a measurable engine: {peak_kib} KiB");
    // Room for one engine and a little: half of another does not fit.
    let now = cg.usage();
    cg.set_limit(Some(now + peak_kib * 1024 / 2));
    let reply = talk(&d.unix_addr(), &[b"zRELOAD\0"], T).unwrap();
    assert_eq!(reply, b"RELOADING\0");
    eventually("the reload is deferred", Duration::from_secs(60), || {
        d.log()
            .contains("reload deferred: not enough memory for a second engine")
    });
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("reload deferred"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("limited_by={}", cg.dir.join(limit).display())),
        "{line}"
    );
    eprintln!("{line}");
    // The old signatures keep serving, and it keeps one engine holder
    // while it waits (retries every 1, 2, 4 … s).
    for _ in 0..20 {
        assert_eq!(scan(&d.unix_addr()), FOUND);
        assert_eq!(scan(&d.tcp_addr()), FOUND);
    }
    eventually(
        "a retry that is deferred again",
        Duration::from_secs(60),
        || d.log().matches("reload deferred").count() >= 2,
    );
    assert_eq!(d.zygotes().len(), 1, "no second engine while it waits");
    // The observer's agent drains the node meanwhile (new work goes to
    // nodes that have room), and says why.
    eventually("the agent says drain", Duration::from_secs(60), || {
        let line = agent_line(&agent);
        line.starts_with("up drain #") && line.contains("memory headroom")
    });
    assert!(!d.log().contains("reload complete"));
    // Room again: the next retry reloads.
    cg.set_limit(None);
    eventually("the reload completes", Duration::from_secs(120), || {
        d.log().contains("reload complete")
    });
    assert!(d.log().contains("memory headroom suffices now"));
    eventually(
        "the agent says ready again",
        Duration::from_secs(60),
        || agent_line(&agent).starts_with("up ready"),
    );
    assert_eq!(scan(&d.unix_addr()), FOUND);
    drop(d);
}

/// A daemon started under the holder, its log in `dir`.
struct Held {
    child: std::process::Child,
    log: PathBuf,
}

impl Held {
    fn start(holder: &Holder, config: &Path, log: &Path) -> Held {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = die_with_parent(
            &mut holder.command(Path::new(BIN), &["--config", &config.display().to_string()]),
        )
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
        Held {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_under_socket_activation_finishes_in_flight_scans_and_new_ones_wait() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("held.sock");
    let tcp: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), db.path(), &unix, tcp, &[]);
    let holder = Holder::new().unix(&unix, "unix").tcp(tcp, "tcp");
    let log = dir.path().join("daemon.log");
    let mut first = Held::start(&holder, &config, &log);
    let (u, t) = (Addr::Unix(unix.clone()), Addr::Tcp(tcp));
    eventually("the first daemon serves", Duration::from_secs(60), || {
        talk(&u, &[b"zPING\0"], T).ok().as_deref() == Some(b"PONG\0")
    });
    assert_eq!(scan(&t), FOUND);
    assert!(
        first.log().contains("from systemd (listener tcp"),
        "{}",
        first.log()
    );
    // A scan in flight: half its stream sent, and its worker has it.
    let started = |log: String| {
        log.lines()
            .filter(|l| l.contains("INSTREAM") && l.contains("command"))
            .count()
    };
    let before = started(first.log());
    let whole = instream(b"zINSTREAM\0", &eicar(), 8);
    let mut in_flight = Conn::open(&t).unwrap();
    in_flight.send(&whole[..whole.len() / 2]).unwrap();
    eventually("the scan is under way", Duration::from_secs(30), || {
        started(first.log()) > before
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually("the stop began", Duration::from_secs(30), || {
        first.log().contains("stopping: draining workers")
    });
    // The scan in flight finishes with its answer.
    in_flight.send(&whole[whole.len() / 2..]).unwrap();
    assert_eq!(in_flight.read_until(b"\0", T), FOUND);
    let status = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = first.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "no exit: {}", first.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(status.code(), Some(0), "{}", first.log());
    // No daemon now: new clients still connect (the socket is held) and
    // their requests wait; nothing can answer them yet.
    let mut waiting_tcp = Conn::open(&t).unwrap();
    waiting_tcp
        .send(&instream(b"zINSTREAM\0", &eicar(), 1024))
        .unwrap();
    let mut waiting_unix = Conn::open(&u).unwrap();
    waiting_unix.send(b"zPING\0").unwrap();
    // The next start answers them.
    let _second = Held::start(&holder, &config, &log);
    assert_eq!(
        waiting_tcp.read_until(b"\0", Duration::from_secs(60)),
        FOUND
    );
    assert_eq!(
        waiting_unix.read_until(b"\0", Duration::from_secs(60)),
        b"PONG\0"
    );
    drop(first);
}

/// `clamsentry probe`: `ping` is clamd's PING (what a liveness probe
/// should ask: a dead engine fails it, not only a closed port); `ready`
/// reads the HAProxy agent's line. The agent is the observer process's,
/// not on this branch: a listener of the test's answers its lines here.
#[test]
fn probes_for_an_orchestrator() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let probe = |args: &[&str]| {
        let out = Command::new(BIN).arg("probe").args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let sock = d.unix.display().to_string();
    assert_eq!(probe(&["ping", "--socket", &sock]).0, 0);
    assert_eq!(probe(&["ping", "--tcp", &d.tcp.to_string()]).0, 0);
    let config = d.dir.path().join("clamsentry.toml").display().to_string();
    assert_eq!(probe(&["ping", "--config", &config]).0, 0);
    let (code, _, err) = probe(&["ping", "--socket", "/nonexistent.sock"]);
    assert!(code == 1 && err.contains("cannot connect"), "{err}");
    for (line, code) in [
        ("up ready 75%\n", 0),
        ("up drain #stopping: finishing the scans in flight\n", 1),
        ("up maint #maintenance requested by an administrator\n", 1),
        ("down #no status from the daemon for 9 s\n", 1),
    ] {
        let agent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = agent.local_addr().unwrap().to_string();
        let answer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut c, _) = agent.accept().unwrap();
            c.write_all(line.as_bytes()).unwrap();
        });
        let (got, out, err) = probe(&["ready", "--agent", &addr]);
        answer.join().unwrap();
        assert_eq!(got, code, "{line}: {out} {err}");
    }
    assert_eq!(probe(&["ready"]).0, 2, "--agent is needed");
}
