//! Hostile clients cannot deny service. Each test runs one attack against
//! the real daemon while honest clients work alongside — clamdscan over the
//! Unix socket, and python `clamd` INSTREAM over TCP from another address
//! and from the attacker's own address — and checks that every
//! honest request is answered correctly, that no worker was restarted, and
//! that the log stays bounded. No timing thresholds: only outcomes.
//!
//! The attacks (from the issue that asked for these limits):
//! 1. one long path or a deep tree (a reply, never a process fault);
//! 2. slow streams that would hold the stream memory budget;
//! 3. a loopback TCP flood, and one byte every little while;
//! 4. a flood of refused commands in one IDSESSION;
//! 5. clients that stop reading their replies, or leave mid-walk;
//! 6. idle connections from the honest client's own address.
//!
//! On loopback a client is the local user owning its socket, and the test
//! runs its attacker and its clients as one user, so an honest TCP client
//! of another client than the attacker's needs another network: the test
//! that needs one runs in a namespace of its own (`common::netns`).

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::client::{connect_from, talk, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};

const FOUND: &str = "Win.Test.EICAR_HDB-1.UNOFFICIAL";

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "\\0")
}

/// A world-readable scratch directory with an EICAR file for the honest
/// clients.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new().prefix("cs-dos").tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = d.path().join("eicar.com");
    std::fs::write(&f, eicar()).unwrap();
    (d, f)
}

/// python `clamd`'s network client, bound to a source address.
const PY_CLIENT: &str = r#"
import clamd, io, socket, sys, time
host, port, src, seconds, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
class Bound(clamd.ClamdNetworkSocket):
    def _init_socket(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        self.clamd_socket = s
data = open(path, 'rb').read()
ok = failed = 0
end = time.time() + seconds
while time.time() < end:
    try:
        r = Bound(host, port, timeout=60).instream(io.BytesIO(data))
        if r == {'stream': ('FOUND', 'Win.Test.EICAR_HDB-1.UNOFFICIAL')}:
            ok += 1
        else:
            failed += 1
            print('unexpected', r, file=sys.stderr)
    except Exception as e:
        failed += 1
        print('error', repr(e), file=sys.stderr)
    time.sleep(0.05)
print(ok, failed)
"#;

/// One honest client's outcome: answered correctly, not, and why not.
type Outcome = (u64, u64, String);

/// The honest clients, running for `seconds`.
struct Honest {
    handles: Vec<(String, JoinHandle<Outcome>)>,
}

/// On the host's loopback, the other TCP client is the attacker's own
/// client too (the same local user, whatever its address): what it checks
/// there is that the attack leaves that client's share usable.
const LOOPBACK_OTHER: &str = "127.0.1.99";

/// The honest clients, over the Unix socket and over TCP from `other` and
/// from `attacker`.
fn honest(d: &Daemon, eicar_file: &Path, other: IpAddr, attacker: IpAddr, seconds: f64) -> Honest {
    let mut handles = Vec::new();
    // clamdscan over the Unix socket.
    let conf = d.dir.path().join("clamdscan.conf");
    std::fs::write(&conf, format!("LocalSocket {}\n", d.unix.display())).unwrap();
    let file = eicar_file.to_path_buf();
    handles.push((
        "clamdscan (unix)".to_string(),
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut why) = (0, 0, String::new());
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < end {
                let out = Command::new("clamdscan")
                    .arg(format!("--config-file={}", conf.display()))
                    .args(["--no-summary", "--stream"])
                    .arg(&file)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                if out.status.code() == Some(1)
                    && text.trim_end().ends_with(&format!("{FOUND} FOUND"))
                {
                    ok += 1;
                } else {
                    failed += 1;
                    why = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed, why)
        }),
    ));
    for src in [other, attacker] {
        let args = [
            d.tcp.ip().to_string(),
            d.tcp.port().to_string(),
            src.to_string(),
            seconds.to_string(),
            eicar_file.display().to_string(),
        ];
        handles.push((
            format!("python clamd (tcp from {src})"),
            std::thread::spawn(move || {
                let out = common::netns::command("python3", src)
                    .arg("-c")
                    .arg(PY_CLIENT)
                    .args(args)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let mut n = text
                    .split_whitespace()
                    .map(|v| v.parse::<u64>().unwrap_or(0));
                let (ok, failed) = (n.next().unwrap_or(0), n.next().unwrap_or(1));
                (
                    ok,
                    failed,
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }),
        ));
    }
    Honest { handles }
}

impl Honest {
    /// Every honest request was answered correctly.
    fn all_served(self, d: &Daemon) {
        for (who, h) in self.handles {
            let (ok, failed, why) = h.join().unwrap();
            println!("{who}: {ok} answered correctly, {failed} not");
            assert!(ok > 0, "{who} got nothing done: {why}\n{}", d.log());
            assert_eq!(failed, 0, "{who}: {why}\n{}", d.log());
        }
    }
}

/// No worker died or was replaced, and the supervisor is the same process.
fn no_restart(d: &Daemon) {
    let log = d.log();
    for bad in [
        "worker died",
        "broke the protocol",
        "crashed worker replaced",
        "panicked",
    ] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), None).is_ok());
}

// ------------------------------------------------------------ 1. long paths

/// Creates `depth` nested directories with 255-byte names under `base`
/// (deeper than PATH_MAX in total, which no single system call could
/// take), with an EICAR file at the bottom.
fn deep_tree(base: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut dir =
        rustix::fs::open(base, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    let name = "d".repeat(255);
    for _ in 0..depth {
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    let f = rustix::fs::openat(
        &dir,
        "deep-eicar.com",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&f, &eicar()).unwrap();
}

#[test]
fn long_paths_get_replies_not_process_faults() {
    let db = TestDb::new();
    let (dir, file) = scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    deep_tree(&tree, 18);
    std::fs::create_dir(tree.join("z")).unwrap();
    std::fs::write(tree.join("z/eicar.com"), eicar()).unwrap();
    let d = Daemon::clamsentry(db.path(), &[("scan", "max-directory-recursion = 30")]);
    let h = honest(
        &d,
        &file,
        LOOPBACK_OTHER.parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        5.0,
    );
    // A missing path of 4,097 bytes: the most a command frame can carry.
    let mut path = b"/tmp".to_vec();
    while path.len() + 3 <= 4097 {
        path.extend_from_slice(b"/aa");
    }
    path.resize(4097, b'b');
    let mut long = b"zSCAN ".to_vec();
    long.extend_from_slice(&path);
    long.push(0);
    let name = format!("zSCAN /tmp/{}\0", "n".repeat(300));
    for i in 0..200 {
        let req: &[u8] = if i % 2 == 0 { &long } else { name.as_bytes() };
        let reply = talk(&d.unix_addr(), &[req], Duration::from_secs(30)).unwrap();
        assert!(
            show(&reply).ends_with(": File path check failure: File name too long. ERROR\\0"),
            "{}",
            show(&reply)
        );
    }
    // A walk deeper than PATH_MAX answers for the entry that is too long
    // and goes on with the next one.
    let walk = format!("zCONTSCAN {}\0", tree.display());
    let reply = show(&talk(&d.unix_addr(), &[walk.as_bytes()], Duration::from_secs(60)).unwrap());
    println!("deep walk: {}", &reply[..reply.len().min(300)]);
    assert!(
        reply.contains("File path check failure: File name too long. ERROR"),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("/z/eicar.com: {FOUND} FOUND")),
        "{reply}"
    );
    h.all_served(&d);
    no_restart(&d);
}

// ------------------------------------------------------------ 2. slow streams

#[test]
fn slow_streams_cannot_hold_the_stream_memory() {
    let db = TestDb::new();
    let (_dir, file) = scratch();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "stream-memory = \"8M\""),
            ("limits", "stream-max-length = \"4M\""),
            ("limits", "stream-min-rate = \"1K\""),
            ("limits", "stream-rate-window = 2"),
        ],
    );
    let before = d.rss_kib();
    let attacker: IpAddr = "127.0.0.1".parse().unwrap();
    // 11 streams announce 4 MB each and send 7 bytes, then one a second.
    let attackers: Vec<JoinHandle<Vec<u8>>> = (0..11)
        .map(|_| {
            let to = d.tcp;
            std::thread::spawn(move || {
                let mut s = connect_from(attacker, to).unwrap();
                let mut req = b"zINSTREAM\0".to_vec();
                req.extend_from_slice(&4_000_000u32.to_be_bytes());
                req.extend_from_slice(b"1234567");
                s.write_all(&req).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(1000)))
                    .unwrap();
                let mut reply = Vec::new();
                for _ in 0..30 {
                    let mut b = [0u8; 256];
                    match s.read(&mut b) {
                        Ok(0) => break,
                        Ok(n) => reply.extend_from_slice(&b[..n]),
                        Err(_) => {
                            if s.write_all(b"x").is_err() {
                                break;
                            }
                        }
                    }
                }
                reply
            })
        })
        .collect();
    let h = honest(&d, &file, LOOPBACK_OTHER.parse().unwrap(), attacker, 6.0);
    for a in attackers {
        let reply = show(&a.join().unwrap());
        assert_eq!(
            reply, "stream: Stream slower than limits.stream-min-rate, closed. ERROR\\0",
            "a trickling stream is ended"
        );
    }
    h.all_served(&d);
    let after = d.rss_kib();
    println!("memory: {before} KiB before, {after} KiB after");
    assert!(after < before + 64 * 1024, "{before} -> {after} KiB");
    no_restart(&d);
}

// ------------------------------------------------------------ 3. TCP floods

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[test]
fn a_loopback_flood_never_locks_out_the_unix_socket() {
    raise_fd_limit();
    let db = TestDb::new();
    let (_dir, file) = scratch();
    let d = Daemon::clamsentry(db.path(), &[("limits", "command-read-timeout = 2")]);
    // 1,020 idle connections from 127.0.0.1 to 127.0.0.17 (60 each).
    let mut flood = Vec::new();
    for last in 1..=17u8 {
        let ip: IpAddr = format!("127.0.0.{last}").parse().unwrap();
        for _ in 0..60 {
            if let Ok(s) = connect_from(ip, d.tcp) {
                flood.push(s);
            }
        }
    }
    assert!(flood.len() > 900, "opened {}", flood.len());
    // Trickling clients: one byte of a command every 300 ms.
    let tricklers: Vec<JoinHandle<Vec<u8>>> = (0..3)
        .map(|_| {
            let to = d.tcp;
            std::thread::spawn(move || {
                let mut s = connect_from("127.0.0.3".parse().unwrap(), to).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut reply = Vec::new();
                for b in b"zPINGPINGPINGPINGPINGPINGPINGPINGPINGPINGPINGPING"
                    .iter()
                    .cycle()
                    .take(100)
                {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    let mut buf = [0u8; 64];
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => reply.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                reply
            })
        })
        .collect();
    let h = honest(
        &d,
        &file,
        LOOPBACK_OTHER.parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        6.0,
    );
    for t in tricklers {
        assert_eq!(
            show(&t.join().unwrap()),
            "COMMAND READ TIMED OUT\n",
            "a deadline, not a per-read timeout"
        );
    }
    h.all_served(&d);
    drop(flood);
    no_restart(&d);
}

/// An attacker that reconnects as fast as the daemon evicts it: every
/// connect beyond the per-address cap closes one of its own idle
/// connections. Each eviction is the daemon's decision, logged at most
/// `log.peer-lines-per-minute` times per minute for that peer, while
/// honest clients elsewhere are served. (A client at the attacker's own
/// address loses the race against a connect flood at full speed: to the
/// daemon it is the same peer, and its connection is idle until its
/// command arrives. The idle flood of attack 6 is what it survives.)
#[test]
fn a_reconnecting_flood_logs_a_bounded_number_of_evictions() {
    require_root!("it makes a network namespace (all of loopback is one client)");
    require!(common::require::program("ip", "iproute2"));
    raise_fd_limit();
    // The attacker and the honest TCP client in two networks.
    let _lab = common::netns::Lab::enter("cs-dos-reconnect");
    let db = TestDb::new();
    let (_dir, file) = scratch();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "max-connections-per-client = 8"),
            common::netns::ALLOW,
        ],
    );
    let attacker = common::netns::Lab::addr(1, 5);
    let h = honest(&d, &file, common::netns::Lab::addr(2, 6), attacker, 3.0);
    let mut held = std::collections::VecDeque::new();
    let mut opened = 0;
    for _ in 0..2_000 {
        if let Ok(s) = connect_from(attacker, d.tcp) {
            opened += 1;
            held.push_back(s);
            if held.len() > 64 {
                held.pop_front();
            }
        }
    }
    h.all_served(&d);
    drop(held);
    let log = d.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("closed an idle connection to make room"))
        .count();
    println!("{opened} connections opened, {lines} eviction lines");
    assert!(opened > 1_000, "opened {opened}");
    // 30 a minute for the attacker's address; two windows if the test
    // straddles a minute.
    assert!((1..=60).contains(&lines), "{lines} eviction lines");
    no_restart(&d);
}

// ------------------------------------------------------------ 4. log floods

#[test]
fn refused_commands_are_counted_and_their_log_is_bounded() {
    let db = TestDb::new();
    let (_dir, file) = scratch();
    let d = Daemon::clamsentry(db.path(), &[]);
    let h = honest(
        &d,
        &file,
        LOOPBACK_OTHER.parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        4.0,
    );
    // 20,000 SCANs (refused over TCP) in one session.
    let mut req = b"zIDSESSION\0".to_vec();
    for _ in 0..20_000 {
        req.extend_from_slice(b"zSCAN /etc/hostname\0");
    }
    let mut c = Conn::open(&d.tcp_addr()).unwrap();
    let Conn::Tcp(s) = &c else { unreachable!() };
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&req);
    });
    let reply = c.read_all(Duration::from_secs(60));
    sender.join().unwrap();
    let text = show(&reply);
    let refusals = text
        .matches("/etc/hostname: SCAN command not allowed on this listener. ERROR")
        .count();
    println!("{refusals} refusals before the session was closed");
    assert!(
        text.ends_with("Session command limit reached (limits.max-session-commands). ERROR\\0"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    // Every refusal is answered (none lost to a reset when the daemon
    // closes on a client still sending), and refusals count against the
    // session's commands: exactly max-session-commands of them.
    assert_eq!(
        refusals, 10_000,
        "refusals count against the session's commands"
    );
    h.all_served(&d);
    let log = d.log_with("suppressed");
    let lines = log.matches("command refused").count();
    println!("{lines} refusal lines logged");
    assert!(lines <= 31, "the log is bounded per peer: {lines} lines");
    assert!(
        log.contains("suppressed"),
        "the log says what it did not show"
    );
    no_restart(&d);
}

// ------------------------------------------------------------ 5. non-readers

#[test]
fn clients_that_stop_reading_or_leave_free_their_scan_thread() {
    let db = TestDb::new();
    let (dir, file) = scratch();
    // 3,000 infected files: a CONTSCAN answer far bigger than socket buffers.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..3000 {
        std::fs::write(many.join(format!("e{i:05}.com")), eicar()).unwrap();
    }
    let d = Daemon::clamsentry(db.path(), &[("limits", "max-threads = 1")]);
    // Never reads.
    let mut stuck = Conn::open(&d.unix_addr()).unwrap();
    stuck
        .send(format!("zCONTSCAN {}\0", many.display()).as_bytes())
        .unwrap();
    // Leaves at once.
    let mut gone = Conn::open(&d.unix_addr()).unwrap();
    gone.send(format!("zCONTSCAN {}\0", many.display()).as_bytes())
        .unwrap();
    drop(gone);
    // With one scanning thread, honest clients are served only if both
    // walks let go of it.
    let h = honest(
        &d,
        &file,
        LOOPBACK_OTHER.parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        5.0,
    );
    h.all_served(&d);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d
        .log()
        .matches("walk abandoned: the client is gone")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stuck);
    no_restart(&d);
}

// ------------------------------------------------------------ 6. idle floods

#[test]
fn idle_floods_from_one_address_do_not_lock_it_out() {
    raise_fd_limit();
    let db = TestDb::new();
    let (_dir, file) = scratch();
    let d = Daemon::clamsentry(db.path(), &[]);
    let attacker: IpAddr = "127.0.0.1".parse().unwrap();
    let idle: Vec<_> = (0..200)
        .filter_map(|_| connect_from(attacker, d.tcp).ok())
        .collect();
    let flooding = Arc::new(AtomicBool::new(true));
    // Keeps opening idle connections while the honest clients work.
    let f = Arc::clone(&flooding);
    let to = d.tcp;
    let opener = std::thread::spawn(move || {
        let mut held = Vec::new();
        while f.load(Ordering::Relaxed) {
            if let Ok(s) = connect_from(attacker, to) {
                held.push(s);
            }
            if held.len() > 300 {
                held.remove(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let h = honest(&d, &file, LOOPBACK_OTHER.parse().unwrap(), attacker, 5.0);
    h.all_served(&d);
    flooding.store(false, Ordering::Relaxed);
    opener.join().unwrap();
    drop(idle);
    assert!(d.log().contains("closed an idle connection to make room"));
    no_restart(&d);
}

/// Sessions have a lifetime (`limits.max-session-seconds`): a pooled
/// client cannot pin its connection (and, behind a balancer, itself) to
/// one worker forever. The session ends at a command boundary: the
/// command in progress when the lifetime runs out is answered first, then
/// clamd's `COMMAND READ TIMED OUT` (what clamd sends when it ends an idle
/// session), then the connection closes.
#[test]
fn a_session_ends_at_a_command_boundary_after_its_lifetime() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "max-session-seconds = 1"),
            ("limits", "stream-min-rate = 0"),
        ],
    );
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(b"zIDSESSION\0zPING\0").unwrap();
    assert_eq!(
        show(&c.read_until(b"\0", Duration::from_secs(30))),
        "1: PONG\\0"
    );
    // A stream is under way when the lifetime runs out (waiting twice the
    // lifetime makes sure it does): it is still answered.
    let data = eicar();
    let mut head = b"zINSTREAM\0".to_vec();
    head.extend_from_slice(&(data.len() as u32).to_be_bytes());
    head.extend_from_slice(&data[..10]);
    c.send(&head).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut tail = data[10..].to_vec();
    tail.extend_from_slice(&[0, 0, 0, 0]);
    c.send(&tail).unwrap();
    let got = c.read_all(Duration::from_secs(30));
    assert_eq!(
        show(&got),
        format!("2: stream: {FOUND} FOUND\\0COMMAND READ TIMED OUT\n")
    );
    // The worker logs it after the reply: wait for the line.
    d.log_with("IDSESSION ended: limits.max-session-seconds reached");
    // An idle session ends when its lifetime does, not at idle-timeout.
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(b"nIDSESSION\n").unwrap();
    let got = c.read_all(Duration::from_secs(60));
    assert_eq!(show(&got), "COMMAND READ TIMED OUT\n");
}
