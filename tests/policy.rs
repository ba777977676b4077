//! Listener policy: the 2016 clamd socket attacks fail with the default
//! configuration, and legitimate clients keep working.

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::client::{connect_from, instream, show, talk, talk_streaming, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};

const NOBODY: u32 = 65534;

fn still_serving(d: &Daemon) {
    let t = Duration::from_secs(5);
    assert_eq!(talk(&d.unix_addr(), &[b"zPING\0"], t).unwrap(), b"PONG\0");
    assert_eq!(talk(&d.tcp_addr(), &[b"zPING\0"], t).unwrap(), b"PONG\0");
}

#[test]
fn tcp_refuses_file_admin_and_stats_commands() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let t = Duration::from_secs(5);
    for (req, want) in [
        (
            &b"zSHUTDOWN\0"[..],
            "SHUTDOWN command not allowed on this listener. ERROR\\0",
        ),
        (
            b"QUIT",
            "QUIT command not allowed on this listener. ERROR\\n",
        ),
        (
            b"nRELOAD\n",
            "RELOAD command not allowed on this listener. ERROR\\n",
        ),
        (
            b"zSTATS\0",
            "STATS command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zSCAN /etc/passwd\0",
            "/etc/passwd: SCAN command not allowed on this listener. ERROR\\0",
        ),
        (
            b"SCAN /etc/shadow",
            "/etc/shadow: SCAN command not allowed on this listener. ERROR\\n",
        ),
        (
            b"zCONTSCAN /etc\0",
            "/etc: CONTSCAN command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zMULTISCAN /etc\0",
            "/etc: MULTISCAN command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zALLMATCHSCAN /etc\0",
            "/etc: ALLMATCHSCAN command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zFILDES\0\0",
            "FILDES command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zDETSTATS\0",
            "DETSTATS command not allowed on this listener. ERROR\\0",
        ),
        (
            b"zIDSESSION\0zSCAN /etc\0zPING\0zEND\0",
            "1: /etc: SCAN command not allowed on this listener. ERROR\\02: PONG\\0",
        ),
        // Inside a session a refused STATS is a block that ends in END,
        // as STATS clients (clamdtop) read it.
        (
            b"zIDSESSION\0zSTATS\0zPING\0zEND\0",
            "1: STATS command not allowed on this listener. ERROR\\n\tREFUSED 0.000000 STATS is not allowed on this listener (policy.tcp.commands)\\n\\nEND\\02: PONG\\0",
        ),
    ] {
        let reply = talk(&d.tcp_addr(), &[req], t).unwrap();
        assert_eq!(show(&reply), want, "{}", show(req));
        still_serving(&d);
    }
    // What TCP still does.
    assert_eq!(
        show(
            &talk(
                &d.tcp_addr(),
                &[&instream(b"zINSTREAM\0", &eicar(), 100)],
                t
            )
            .unwrap()
        ),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    let vc = show(&talk(&d.tcp_addr(), &[b"zVERSIONCOMMANDS\0"], t).unwrap());
    assert!(
        vc.ends_with("| COMMANDS: PING VERSIONCOMMANDS VERSION END IDSESSION INSTREAM\\0"),
        "{vc}"
    );
    let vc = show(&talk(&d.unix_addr(), &[b"zVERSIONCOMMANDS\0"], t).unwrap());
    assert!(
        vc.contains("| COMMANDS: SCAN QUIT RELOAD PING CONTSCAN"),
        "{vc}"
    );
    // The refusals were logged with their fields.
    let log = d.log_when("the refusals", |log| {
        log.contains("command refused") && log.contains("command=SHUTDOWN")
    });
    assert!(log.contains("listener=tcp"), "{log}");
    assert!(log.contains("command=SHUTDOWN"), "{log}");
}

#[test]
fn clamdscan_stream_over_tcp_still_works() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.txt"), eicar()).unwrap();
    std::fs::write(dir.path().join("c.txt"), b"clean").unwrap();
    let conf = dir.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!("TCPSocket {}\nTCPAddr 127.0.0.1\n", d.tcp.port()),
    )
    .unwrap();
    let out = Command::new("clamdscan")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--no-summary", "--stream"])
        .arg(dir.path().join("e.txt"))
        .arg(dir.path().join("c.txt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("e.txt: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND"),
        "{text}"
    );
    assert!(text.contains("c.txt: OK"), "{text}");
    // A plain path scan over TCP is refused, and clamdscan reports an error.
    let out = Command::new("clamdscan")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--no-summary")
        .arg(dir.path().join("e.txt"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Sends `req` to a Unix socket as the user `nobody` and returns the reply.
fn as_nobody(socket: &Path, req: &[u8]) -> Vec<u8> {
    as_user(socket, req, NOBODY, NOBODY).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `req` to a Unix socket as `uid` with primary group `gid` (and no
/// other groups); the reply, or the client's error (e.g. permission denied).
fn as_user(socket: &Path, req: &[u8], uid: u32, gid: u32) -> Result<Vec<u8>, String> {
    use std::os::unix::process::CommandExt;
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
s.settimeout(5)
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
"#;
    let hex: String = req.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(socket)
        .arg(hex)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

#[test]
fn unix_peers_get_no_file_oracle_and_no_admin_commands() {
    require_root!("a client runs as nobody");
    let db = TestDb::new();
    // The worker runs as "daemon" here, so that nobody is just a local user.
    let d = Daemon::clamsentry(db.path(), &[("sandbox", "user = \"daemon\"")]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = tempfile::Builder::new()
        .prefix("cs-oracle")
        .tempdir()
        .unwrap();
    let open = files.path().join("open");
    let closed = files.path().join("closed");
    std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = open.join("secret.txt");
    std::fs::write(&secret, eicar()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(closed.join("hidden.txt"), eicar()).unwrap();
    let mine = open.join("mine.txt");
    std::fs::write(&mine, eicar()).unwrap();
    chown(&mine, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Administrative commands are refused for nobody.
    for (req, word) in [
        (&b"zSHUTDOWN\0"[..], "SHUTDOWN"),
        (b"zRELOAD\0", "RELOAD"),
        (b"QUIT", "QUIT"),
    ] {
        let reply = String::from_utf8_lossy(&as_nobody(&d.unix, req)).into_owned();
        assert!(
            reply.starts_with(&format!("{word} command requires an administrator"))
                && reply.ends_with("ERROR\0")
                || reply.ends_with("ERROR\n"),
            "{reply:?}"
        );
        still_serving(&d);
    }
    // No oracle: unreadable file, missing file in a closed directory, existing
    // file in a closed directory, missing file in an open one — one answer.
    let answer = |p: &Path| {
        let req = format!("zSCAN {}\0", p.display());
        String::from_utf8_lossy(&as_nobody(&d.unix, req.as_bytes()))
            .replace(&p.display().to_string(), "PATH")
    };
    let want = "PATH: File path check failure: No such file or directory. ERROR\0";
    assert_eq!(answer(&secret), want);
    assert_eq!(answer(&closed.join("nothing.txt")), want);
    assert_eq!(answer(&closed.join("hidden.txt")), want);
    assert_eq!(answer(&open.join("nothing.txt")), want);
    assert_eq!(answer(&closed), want);
    // The user's own file is scanned.
    assert_eq!(
        answer(&mine),
        "PATH: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
    );
    // Walking a directory: files the user cannot read are not scanned.
    let req = format!("zCONTSCAN {}\0", open.display());
    let reply = String::from_utf8_lossy(&as_nobody(&d.unix, req.as_bytes())).into_owned();
    assert!(
        reply.contains(&format!("{}: Access denied. ERROR", secret.display())),
        "{reply}"
    );
    assert!(
        reply.contains(&format!(
            "{}: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND",
            mine.display()
        )),
        "{reply}"
    );
    // Root (the daemon's admin) still sees everything.
    let root = talk(
        &d.unix_addr(),
        &[format!("zSCAN {}\0", secret.display()).as_bytes()],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        show(&root),
        format!(
            "{}: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0",
            secret.display()
        )
    );
    d.log_with("administrative command from a non-administrator");
}

#[test]
fn idle_tcp_connections_do_not_block_new_clients() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let _ = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(
        |(_, hard)| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        },
    );
    let idle: Vec<_> = (0..500)
        .filter_map(|_| std::net::TcpStream::connect(d.tcp).ok())
        .collect();
    assert!(idle.len() >= 400, "opened {} idle connections", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(
        talk(&d.unix_addr(), &[b"zPING\0"], Duration::from_secs(30)).unwrap(),
        b"PONG\0"
    );
    let unix_ms = started.elapsed().as_millis();
    let started = Instant::now();
    // All of loopback is one client: this newcomer, too, closes one of
    // that client's idle connections rather than being refused.
    let mut other = connect_from("127.0.1.2".parse().unwrap(), d.tcp).unwrap();
    other.write_all(b"zPING\0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = Vec::new();
    other.read_to_end(&mut reply).unwrap();
    let tcp_ms = started.elapsed().as_millis();
    assert_eq!(reply, b"PONG\0");
    // From the flooding address itself: the newcomer displaces the oldest
    // idle connection instead of being refused.
    assert_eq!(
        talk(&d.tcp_addr(), &[b"zPING\0"], Duration::from_secs(30)).unwrap(),
        b"PONG\0"
    );
    println!(
        "with {} idle TCP connections: Unix PING {unix_ms} ms, TCP PING from 127.0.1.2 {tcp_ms} ms",
        idle.len()
    );
    assert!(d
        .log()
        .contains("closed an idle connection to make room for a new one"));
    // The per-client cap (64) held: all but the newest idle ones were closed.
    let mut open = 0;
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    assert!(open <= 64, "{open} idle connections still open");
}

#[test]
fn addresses_outside_the_allow_list_are_closed_unread() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("listen", "tcp-allow = [\"127.0.0.1/32\"]")]);
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    for _ in 0..50 {
        let mut s = connect_from(ip, d.tcp).unwrap();
        let _ = s.write_all(b"zPING\0");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert_eq!(reply, b"", "no reply to a refused address");
    }
    still_serving(&d);
    let log = d.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("address not in listen.tcp-allow"))
        .count();
    assert!(
        (1..=20).contains(&lines),
        "refusals are logged, at most 20 a minute: {lines}"
    );
}

#[test]
fn stream_memory_budget_holds_under_parallel_streams() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "stream-max-length = \"4M\""),
            ("limits", "stream-memory = \"16M\""),
        ],
    );
    let payload = vec![b'z'; 4 << 20];
    // Warm up: the first scans touch engine pages and start each scanning
    // thread's allocator arena, once; that is not stream memory. Two rounds
    // of streams that fit the budget on each worker, then the baseline.
    for _ in 0..2 {
        let warm: Vec<_> = (0..4)
            .map(|i| {
                let addr = if i % 2 == 0 {
                    d.unix_addr()
                } else {
                    d.tcp_addr()
                };
                let req = instream(b"zINSTREAM\0", &payload, 64 * 1024);
                std::thread::spawn(move || talk_streaming(&addr, req, Duration::from_secs(60)))
            })
            .collect();
        for w in warm {
            w.join().unwrap();
        }
    }
    let baseline = common::daemons::tree_rss_kib(d.pid());
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let pid = d.pid();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let kib = common::daemons::tree_rss_kib(pid);
                peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let addr = if i % 2 == 0 {
                d.unix_addr()
            } else {
                d.tcp_addr()
            };
            let req = instream(b"zINSTREAM\0", &payload, 64 * 1024);
            std::thread::spawn(move || show(&talk_streaming(&addr, req, Duration::from_secs(60))))
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for c in clients {
        let reply = c.join().unwrap();
        match reply.as_str() {
            "stream: OK\\0" => ok += 1,
            "stream: Stream memory in use by other clients (limits.stream-memory), retry later. ERROR\\0" => refused += 1,
            other => panic!("unexpected reply {other}"),
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(std::sync::atomic::Ordering::Relaxed) - baseline;
    println!(
        "50 streams of 4 MiB, 16 MiB budget: {ok} OK, {refused} refused, RSS grew {grown} KiB"
    );
    assert!(ok >= 1);
    assert!(
        grown < (16 + 24) * 1024,
        "RSS grew {grown} KiB with a 16 MiB budget"
    );
    still_serving(&d);
}

#[test]
fn refused_streams_still_get_their_reply() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("limits", "stream-max-length = 1000")]);
    let req = instream(b"zINSTREAM\0", &vec![b'a'; 8 << 20], 65536);
    let reply = talk_streaming(&d.unix_addr(), req, Duration::from_secs(10));
    assert_eq!(show(&reply), "INSTREAM size limit exceeded. ERROR\\0");
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(b"zPING\0").unwrap();
    assert_eq!(c.read_all(Duration::from_secs(5)), b"PONG\0");
}

/// clamd's LocalSocketGroup: with `listen.unix-group` and mode 0660 the
/// socket clamsentry creates belongs to that group, and a member of the
/// group may connect while other local users may not.
#[test]
fn unix_socket_group_lets_its_members_in() {
    use std::os::unix::fs::MetadataExt;
    require_root!("the socket is given to group clamav and clients run as other users");
    let clamav = nix::unistd::Group::from_name("clamav")
        .unwrap()
        .expect("group clamav (package clamav-base)")
        .gid
        .as_raw();
    let db = TestDb::new();
    // The socket is created by its owner (as clamd creates it as User), so
    // its directory is daemon's.
    let d = Daemon::launch(
        db.path(),
        &[
            ("listen", "unix-mode = \"0660\""),
            ("listen", "unix-group = \"clamav\""),
            ("listen", "unix-owner = \"daemon\""),
            ("listen", "backlog = 50"),
        ],
        |l| {
            nix::unistd::chown(&l.dir, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
            std::fs::set_permissions(&l.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut c = std::process::Command::new(&l.bin);
            c.arg("--config").arg(&l.config);
            c
        },
    );
    let meta = std::fs::symlink_metadata(&d.unix).unwrap();
    assert_eq!(meta.gid(), clamav);
    assert_eq!(meta.uid(), 1, "owner daemon");
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(
        as_user(&d.unix, b"zPING\0", NOBODY, clamav).unwrap(),
        b"PONG\0"
    );
    let err = as_user(&d.unix, b"zPING\0", NOBODY, NOBODY).unwrap_err();
    assert!(err.contains("PermissionError"), "{err}");
    still_serving(&d);
}
