//! Scan threads, time limits and STATS are shared fairly between clients
//! (the worker's half of the per-identity shares). Each test plays the
//! attacker against the real daemon with honest clients beside it and
//! checks their exact replies. No timing thresholds: the order of events
//! and counts only.
//!
//! The slow input: a mail of uuencode `begin` lines, bzip2'd (the outside
//! review's attack 13/14). libclamav spends seconds on it (most of it
//! creating a temporary file per `begin` line) and does not check
//! `scan.max-scan-time` on that path, so the same few KiB hold a scanning
//! thread for tens of seconds, in clamd 1.4.6 as in clamsentry.

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{connect_from, instream, Addr, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};

const FOUND: &[u8] = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0";

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "\\0")
}

/// A mail of `lines` uuencode `begin` lines.
fn slow_mail(lines: usize) -> Vec<u8> {
    let mut mail = b"From: a@example.org\nTo: b@example.org\nSubject: x\n\n".to_vec();
    for _ in 0..lines {
        mail.extend_from_slice(b"begin 644 f\n");
    }
    mail
}

/// The same mail bzip2'd with Debian's bzip2: 12 KiB to send. Made once
/// per size (compressing it costs seconds). libclamav checks its time
/// limit while it decompresses, so on a busy machine a tight
/// `max-scan-time` can stop this one early: the tests of the limit use the
/// plain mail.
fn slow_input(lines: usize) -> Vec<u8> {
    static MADE: std::sync::Mutex<Vec<(usize, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bz)) = made.iter().find(|(n, _)| *n == lines) {
        return bz.clone();
    }
    let mail = slow_mail(lines);
    let mut bz = Command::new("bzip2")
        .arg("-1c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bzip2 (apt-get install bzip2)");
    let mut stdin = bz.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&mail));
    let out = bz.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    made.push((lines, out.stdout.clone()));
    out.stdout
}

/// Lines enough to keep libclamav busy well past every wait below (tens of
/// seconds on an idle machine; longer on a busy one).
const SLOW_LINES: usize = 1_500_000;

/// Reads until `end` or the peer closes (`<TIMEOUT>` after `within`).
fn read_reply(c: &mut Conn, end: &[u8], within: Duration) -> Vec<u8> {
    c.read_until(end, within)
}

/// The STATS block, as the test process (root, an administrator) sees it.
fn stats(addr: &Addr) -> String {
    let mut c = Conn::open(addr).unwrap();
    c.send(b"zSTATS\0").unwrap();
    show(&c.read_until(b"END\0", Duration::from_secs(30)))
}

/// Waits until STATS shows `n` tasks running `command` and `queued` jobs.
fn wait_for_stats(d: &Daemon, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = stats(&d.unix_addr());
        if what(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "STATS never showed it:\n{s}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The jobs waiting in the QUEUE line.
fn queued(stats: &str) -> usize {
    stats
        .lines()
        .find_map(|l| l.strip_prefix("QUEUE: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn count_tasks(stats: &str, command: &str) -> usize {
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("\t{command} ")))
        .count()
}

/// Starts `n` slow INSTREAMs from `src` over TCP; returns the count of
/// replies received so far (they arrive while the test goes on).
fn hog(
    d: &Daemon,
    src: IpAddr,
    n: usize,
    lines: usize,
) -> (Arc<AtomicUsize>, Vec<std::net::TcpStream>) {
    let input = slow_input(lines);
    let replies = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for i in 0..n {
        // Each input different (bytes after the bzip2 stream): libclamav
        // caches clean results by content, and an input it has seen
        // costs nothing.
        let mut distinct = input.clone();
        distinct.extend_from_slice(format!("\n{i}\n").as_bytes());
        let req = instream(b"zINSTREAM\0", &distinct, 4096);
        let mut s = connect_from(src, d.tcp).unwrap();
        s.write_all(&req).unwrap();
        let mut r = s.try_clone().unwrap();
        let count = Arc::clone(&replies);
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            if matches!(r.read(&mut buf), Ok(n) if n > 0) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        held.push(s);
    }
    (replies, held)
}

/// Attack 14 of the outside review: eight slow inputs from one TCP address
/// took every scanning thread, and honest clients got 0 of 40 answers
/// (clamd 1.4.6 the same: first come, first served). Now every TCP client
/// shares the network's worker, whose share of `limits.max-threads` the
/// attacker's jobs hold; every honest request — over TCP from another
/// network (a reserve thread of that worker), and over the Unix socket
/// (root's own worker) — starts at once and gets its exact reply while the
/// attacker's scans still run. With `reserve-threads = 0` the honest TCP
/// request waits until one of the attacker's scans ends (then it goes
/// first: the queue is fair). An administrator's STATS counts every
/// worker's threads and queue.
#[test]
fn one_clients_slow_inputs_leave_threads_for_the_others() {
    require_root!("it makes a network namespace (all of loopback is one client)");
    require!(common::require::program("ip", "iproute2"));
    // Two networks: on loopback, every address is the same client.
    let _lab = common::netns::Lab::enter("cs-fair-slow");
    let db = TestDb::new();
    let settings = [
        ("limits", "standby-workers = 1"),
        ("limits", "max-threads = 2"),
        ("scan", "max-scan-time = 0"),
        common::netns::ALLOW,
    ];
    let d = Daemon::clamsentry(db.path(), &settings);
    let attacker = common::netns::Lab::addr(1, 1);
    let honest = common::netns::Lab::addr(2, 1);
    let (hog_replies, _held) = hog(&d, attacker, 8, 2 * SLOW_LINES);
    // All eight in the network worker's pool: its share running, the rest
    // waiting.
    let s = wait_for_stats(&d, |s| {
        let running = count_tasks(s, "INSTREAM");
        running >= 1 && running + queued(s) == 8
    });
    println!("{s}");
    let eicar_req = instream(b"zINSTREAM\0", &eicar(), 4096);
    let clean_req = instream(b"zINSTREAM\0", b"nothing to see here", 4096);
    let mut answered = 0;
    for i in 0..20 {
        let (req, want): (&[u8], &[u8]) = if i % 2 == 0 {
            (&eicar_req, FOUND)
        } else {
            (&clean_req, b"stream: OK\0")
        };
        // Over TCP from another network.
        let mut c = Conn::Tcp(connect_from(honest, d.tcp).unwrap());
        c.send(req).unwrap();
        let got = read_reply(&mut c, b"\0", Duration::from_secs(120));
        assert_eq!(show(&got), show(want), "TCP request {i}");
        // Over the Unix socket.
        let mut c = Conn::open(&d.unix_addr()).unwrap();
        c.send(req).unwrap();
        let got = read_reply(&mut c, b"\0", Duration::from_secs(120));
        assert_eq!(show(&got), show(want), "Unix request {i}");
        answered += 2;
    }
    let hog_done = hog_replies.load(Ordering::SeqCst);
    println!("honest requests answered: {answered}/40; attacker's scans finished meanwhile: {hog_done}/8");
    assert_eq!(
        hog_done, 0,
        "every honest reply came while the attacker's scans held the network worker's threads"
    );
    assert!(count_tasks(&stats(&d.unix_addr()), "INSTREAM") >= 1);
    drop(d);

    // The same without reserve threads: the honest request waits for a
    // thread, and gets the first one that frees up.
    let d = Daemon::clamsentry(
        db.path(),
        &[
            settings[0],
            settings[1],
            settings[2],
            settings[3],
            ("limits", "reserve-threads = 0"),
        ],
    );
    // Shorter inputs: the honest request waits for the first to end.
    let (hog_replies, _held) = hog(&d, attacker, 8, SLOW_LINES / 4);
    wait_for_stats(&d, |s| {
        let running = count_tasks(s, "INSTREAM");
        running >= 1 && running + queued(s) == 8
    });
    let mut c = Conn::Tcp(connect_from(honest, d.tcp).unwrap());
    c.send(&eicar_req).unwrap();
    // It waits: no thread may take it while the attacker's scans run (the
    // nine jobs are all there, but for those of the attacker that ended).
    wait_for_stats(&d, |s| {
        count_tasks(s, "INSTREAM") + queued(s) + hog_replies.load(Ordering::SeqCst) == 9
    });
    let got = read_reply(&mut c, b"\0", Duration::from_secs(600));
    let hog_done = hog_replies.load(Ordering::SeqCst);
    assert_eq!(show(&got), show(FOUND));
    println!(
        "without reserve threads the honest reply came when {hog_done} attacker scan(s) had ended"
    );
    assert!(
        hog_done < 8,
        "it did not wait for all of them: the queue serves the peer with fewest running jobs first"
    );
}

/// Attack 13 of the outside review: a scan that libclamav does not stop at
/// `scan.max-scan-time` held its thread until the watchdog killed the
/// worker with every other client on it. Now only its own client loses:
/// it gets libclamav's answer for a time limit, the worker retires (the
/// supervisor replaces it), finishes the request it was in the middle of
/// for another client, and exits; a new request is served meanwhile.
#[test]
fn a_scan_past_max_scan_time_costs_only_its_own_client() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "standby-workers = 1"),
            ("limits", "max-threads = 2"),
            ("limits", "stream-min-rate = 0"),
            ("scan", "max-scan-time = 1000"),
        ],
    );
    // Another client of the same identity (root, over the Unix socket:
    // workers are bound to one identity each) is in the middle of a
    // stream on the same worker: the command and half of its data sent.
    let data = eicar();
    let (first, rest) = data.split_at(data.len() / 2);
    let mut other = Conn::open(&d.unix_addr()).unwrap();
    let mut head = b"zINSTREAM\0".to_vec();
    head.extend_from_slice(&(data.len() as u32).to_be_bytes());
    head.extend_from_slice(first);
    other.send(&head).unwrap();
    let old_worker = d.worker_of("uid=0");

    // The slow input, over the Unix socket.
    let mut stuck = Conn::open(&d.unix_addr()).unwrap();
    stuck
        .send(&instream(b"zINSTREAM\0", &slow_mail(SLOW_LINES), 65536))
        .unwrap();
    let got = stuck.read_until(b"\0", Duration::from_secs(300));
    assert_eq!(show(&got), "stream: Exceeded time limit ERROR\\0");

    // The other client finishes its stream on the retiring worker (which
    // gives what it holds `overrun_exit_after` to finish).
    let mut tail = rest.to_vec();
    tail.extend_from_slice(&[0, 0, 0, 0]);
    if let Err(e) = other.send(&tail) {
        panic!(
            "the other client's connection is gone ({e}); log:\n{}",
            d.log()
        );
    }
    assert_eq!(
        show(&other.read_all(Duration::from_secs(60))),
        show(FOUND),
        "a request in flight on the worker is finished, not lost; log:\n{}",
        d.log()
    );

    // A new request is served (by the fresh worker).
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(&instream(b"zINSTREAM\0", &eicar(), 4096)).unwrap();
    assert_eq!(show(&c.read_all(Duration::from_secs(60))), show(FOUND));

    // Then the retired worker exits (its stuck thread with it).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Path::new(&format!("/proc/{old_worker}")).exists() {
        assert!(Instant::now() < deadline, "the retired worker did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log();
    assert!(
        log.contains("reason=\"a scan ran past scan.max-scan-time\""),
        "{log}"
    );
    assert!(!log.contains("no progress"), "no watchdog kill: {log}");
    assert_ne!(
        d.worker_of("uid=0"),
        old_worker,
        "a fresh worker serves root"
    );
}

/// The same for a path command, with `scan.alert-exceeds-max`: the stuck
/// file is reported as libclamav reports a scan stopped at its limit.
#[test]
fn a_path_scan_past_max_scan_time_is_reported_as_the_limit() {
    let db = TestDb::new();
    let dir = tempfile::Builder::new()
        .prefix("cs-slow")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = dir.path().join("slow.eml");
    std::fs::write(&slow, slow_mail(SLOW_LINES)).unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "standby-workers = 1"),
            ("scan", "max-scan-time = 1000"),
            ("scan", "alert-exceeds-max = true"),
        ],
    );
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(format!("zCONTSCAN {}\0", dir.path().display()).as_bytes())
        .unwrap();
    let got = c.read_all(Duration::from_secs(300));
    assert_eq!(
        show(&got),
        format!(
            "{}: Heuristics.Limits.Exceeded.MaxScanTime FOUND\\0",
            slow.display()
        )
    );
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(b"zPING\0").unwrap();
    assert_eq!(show(&c.read_all(Duration::from_secs(60))), "PONG\\0");
}

/// Sends a raw clamd request as `uid` (python3, no supplementary groups);
/// the child prints what the daemon answered, up to `until`.
fn as_uid(uid: u32, socket: &Path, request: &[u8], until: &[u8]) -> std::process::Child {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
until = bytes.fromhex(sys.argv[3])
out = b""
while until not in out:
    r = s.recv(65536)
    if not r:
        break
    out += r
sys.stdout.buffer.write(out)
"#;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut c = Command::new("python3");
    c.args(["-c", script])
        .arg(socket)
        .arg(hex(request))
        .arg(hex(until))
        // As root, std clears the supplementary groups with a uid change.
        .uid(uid)
        .gid(uid)
        .stdout(Stdio::piped());
    c.spawn().unwrap()
}

fn stats_as(uid: u32, socket: &Path) -> String {
    let out = as_uid(uid, socket, b"zSTATS\0", b"END\0")
        .wait_with_output()
        .unwrap();
    show(&out.stdout)
}

/// Polls STATS until a file exists; prints how many polls showed a name
/// of the victim's (`private-`).
const POLL_STATS: &str = r#"
import os, socket, sys
polls = leaks = 0
while not os.path.exists(sys.argv[2]):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"zSTATS\0")
    out = b""
    while not out.endswith(b"END\0"):
        r = s.recv(65536)
        if not r:
            break
        out += r
    s.close()
    polls += 1
    leaks += b"private-" in out
print(f"polls={polls} leaks={leaks}")
"#;

/// Attack 9 of the outside review: STATS showed other users' file names
/// (1,502 names from a victim's 0700 home during her CONTSCAN). Now a
/// client that is not an administrator sees only its own identity's tasks:
/// while the victim's walk is on a file of hers, another user's STATS
/// shows that a thread is busy and nothing of what it does; the victim
/// sees her own task, and root (an administrator, as in clamd) sees it.
#[test]
fn stats_shows_a_non_administrator_only_its_own_tasks() {
    require_root!("it acts as two users");
    const VICTIM: u32 = 4243;
    const OTHER: u32 = 4242;
    let db = TestDb::new();
    let top = tempfile::Builder::new()
        .prefix("cs-home")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = top.path().join("victim-home");
    std::fs::create_dir(&home).unwrap();
    for i in 0..2000 {
        std::fs::write(home.join(format!("private-letter-{i}.txt")), b"dear diary").unwrap();
    }
    std::fs::write(home.join("private-mail.eml.bz2"), slow_input(SLOW_LINES)).unwrap();
    for e in std::fs::read_dir(&home).unwrap() {
        std::os::unix::fs::chown(e.unwrap().path(), Some(VICTIM), Some(VICTIM)).unwrap();
    }
    std::os::unix::fs::chown(&home, Some(VICTIM), Some(VICTIM)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();

    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "standby-workers = 1"),
            ("scan", "max-scan-time = 0"),
        ],
    );
    // Another user polls STATS, as fast as it can, from before the
    // victim's walk starts until the walk is on her slow mail.
    let stop = top.path().join("stop-polling");
    let mut poller = Command::new("python3");
    poller
        .args(["-c", POLL_STATS])
        .arg(&d.unix)
        .arg(&stop)
        .uid(OTHER)
        .gid(OTHER)
        .stdout(Stdio::piped());
    let poller = poller.spawn().unwrap();
    let scan = format!("zCONTSCAN {}\0", home.display());
    let mut victim = as_uid(VICTIM, &d.unix, scan.as_bytes(), b"\0\0");
    // The victim's own STATS shows her walk on her slow mail.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mine = loop {
        let s = stats_as(VICTIM, &d.unix);
        if s.contains("private-mail.eml.bz2") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the victim never saw her task:\n{s}"
        );
    };
    std::fs::write(&stop, b"").unwrap();
    let polled = poller.wait_with_output().unwrap();
    let polled = String::from_utf8_lossy(&polled.stdout).into_owned();
    println!("another user's STATS during her walk: {polled}");
    assert!(polled.contains(" leaks=0"), "{polled}");
    println!("the victim's STATS:\n{mine}");
    // Another user, meanwhile: nothing of hers. Each local user has a
    // worker of its own, so the other's STATS is answered by a worker that
    // never held her connection.
    let theirs = stats_as(OTHER, &d.unix);
    println!("another user's STATS:\n{theirs}");
    assert!(!theirs.contains("victim-home"), "{theirs}");
    assert!(!theirs.contains("private-"), "{theirs}");
    assert!(!theirs.contains("\tCONTSCAN"), "{theirs}");
    assert!(theirs.contains("\tSTATS 0.000000"), "{theirs}");
    // Still scanning her file? Then root sees it (an administrator).
    let root = stats(&d.unix_addr());
    assert!(
        root.contains("private-mail.eml.bz2"),
        "an administrator sees every task:\n{root}"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

const NOBODY: u32 = 65534;

/// A client process as `uid` on the Unix socket: sends `request` (hex),
/// then as many 64 KiB INSTREAM chunks of `x` as make the third argument's
/// bytes, prints `sent`, then for each line on stdin sends that line's hex and
/// prints the reply it gets (or `closed`). Holds the connection until
/// stdin closes.
const HOLD: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    chunk = struct.pack(">I", 65536) + b"x" * 65536
    for _ in range(int(sys.argv[3]) // 65536):
        s.sendall(chunk)
    print("sent", flush=True)
except OSError:
    print("closed", flush=True)
for line in sys.stdin:
    try:
        s.sendall(bytes.fromhex(line.strip()))
        s.settimeout(60)
        r = s.recv(65536)
        print(r.hex() if r else "closed", flush=True)
    except OSError:
        print("closed", flush=True)
"#;

struct Held {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Held {
    fn open(uid: u32, socket: &Path, request: &[u8]) -> Held {
        Held::streaming(uid, socket, request, 0)
    }

    /// Sends `request`, then `bytes` of INSTREAM chunks.
    fn streaming(uid: u32, socket: &Path, request: &[u8], bytes: usize) -> Held {
        let mut child = Command::new("python3")
            .args(["-c", HOLD])
            .arg(socket)
            .arg(hex(request))
            .arg(bytes.to_string())
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Held { child, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut l).unwrap();
        l.trim().to_string()
    }

    /// Sends `request` on the held connection; the reply.
    fn ask(&mut self, request: &[u8]) -> Vec<u8> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", hex(request)).unwrap();
        let l = self.line();
        (0..l.len() / 2)
            .filter_map(|i| u8::from_str_radix(l.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker last bound to `tenant` (`uid=N`, `network`), from the log.
fn bound(log: &str, tenant: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let line = clamsentry::log::stderr::parse_line(l)?;
        if line.message != b"worker bound to its client" || line.get("tenant")? != tenant.as_bytes()
        {
            return None;
        }
        std::str::from_utf8(line.get("worker")?).ok()?.parse().ok()
    })
}

/// The last stream memory lease of each worker, from the supervisor's log.
fn leases(log: &str) -> std::collections::BTreeMap<u64, u64> {
    let mut out = std::collections::BTreeMap::new();
    for l in log.lines() {
        let Some(line) = clamsentry::log::stderr::parse_line(l) else {
            continue;
        };
        if line.message != b"stream memory lease" {
            continue;
        }
        let field =
            |name: &str| -> Option<u64> { std::str::from_utf8(line.get(name)?).ok()?.parse().ok() };
        if let (Some(w), Some(b)) = (field("worker"), field("bytes")) {
            out.insert(w, b);
        }
    }
    out
}

/// The outside review's stream memory attack: one local user acting as two
/// identities (its uid on the Unix socket, and TCP from loopback) streams
/// as much as each may hold, and keeps the streams open. A local user who
/// never streamed before, whose worker is forked afterwards, must still
/// get its stream scanned: every worker's base lease is kept free
/// (`limits.stream-memory` - base x `max-workers` is all that workers may
/// hold beyond their bases). Before, the two held all 16 MiB and the
/// newcomer's worker started with nothing: "Stream memory in use by other
/// clients".
#[test]
fn one_user_as_two_identities_leaves_a_newcomer_its_stream_memory() {
    require_root!("the attacker and the newcomer are other local users");
    const MIB: usize = 1 << 20;
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            // One identity may hold one largest stream: all of it.
            ("limits", "stream-memory = \"16M\""),
            ("limits", "stream-max-length = \"16M\""),
            ("limits", "max-workers = 4"),
            // The attacker's streams stay open however slow.
            ("limits", "stream-min-rate = 0"),
            ("limits", "read-timeout = 600"),
        ],
    );
    let chunks = |n: usize| {
        let mut req = b"zINSTREAM\0".to_vec();
        for _ in 0..n / (64 << 10) {
            req.extend_from_slice(&(64u32 << 10).to_be_bytes());
            req.extend_from_slice(&[b'x'; 64 << 10]);
        }
        req
    };
    // nobody, on the Unix socket: 4.5 MiB, held. Its worker asks once
    // (at its first MiB) for what the stream needs and 4 MiB of headroom.
    let mut unix = Held::streaming(NOBODY, &d.unix, b"zINSTREAM\0", 9 * MIB / 2);
    assert_eq!(unix.line(), "sent");
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let log = d.log();
        let held = leases(&log);
        let unix_worker = bound(&log, "uid=65534");
        if unix_worker
            .and_then(|w| held.get(&w))
            .is_some_and(|b| *b >= 6 * MIB as u64)
        {
            break held;
        }
        assert!(Instant::now() < deadline, "no lease:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The test's own user over TCP from loopback (its worker is uid 0's,
    // bound by the readiness PINGs) takes all that is left (with its own
    // worker's base lease), less half a MiB.
    let log = d.log();
    let net_worker = bound(&log, "uid=0").expect("the test user's worker");
    let free = 16 * MIB as u64 - held.values().sum::<u64>() + held[&net_worker];
    println!("leases: {held:?}; the TCP stream takes {free} bytes less 512 KiB");
    let tcp = d.tcp;
    let net = std::thread::spawn(move || {
        let mut s = connect_from("127.0.0.1".parse().unwrap(), tcp).unwrap();
        let _ = s.write_all(&chunks(free as usize - MIB / 2));
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        reply
    });
    // Either it holds it (the whole budget is leased), or its stream was
    // refused for lack of memory.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let total: u64 = leases(&d.log()).values().sum();
        if net.is_finished() || total >= 16 * MIB as u64 {
            println!("leased: {total}");
            break;
        }
        assert!(Instant::now() < deadline, "no lease:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A newcomer: uid 1 (a new identity, a worker of its own) streams
    // EICAR, and the answer is exact.
    let out = as_uid(1, &d.unix, &instream(b"zINSTREAM\0", &eicar(), 4096), b"\0")
        .wait_with_output()
        .unwrap();
    assert_eq!(show(&out.stdout), show(FOUND), "{}", d.log());
    // The attacker's Unix stream is still held (it was never refused).
    assert_eq!(show(&unix.ask(&[0, 0, 0, 0])), show(b"stream: OK\0"));
    drop(unix);
    let reply = net.join().unwrap();
    println!("the TCP stream: {}", show(&reply));
    assert!(
        reply.is_empty() || reply.ends_with(b"ERROR\0"),
        "{}",
        show(&reply)
    );
}

/// The outside review's worker slot attack: as many identities as there
/// are worker slots (`limits.max-workers`) each hold a connection and send
/// nothing. Root's STATS must still be answered (one slot is kept for
/// administrators), a local user who comes next gets a worker (the worker
/// of an identity whose connections all wait for a command is released
/// for it, those connections closed), and a session that sent a command
/// keeps its worker and answers. Before, root waited until
/// `command-read-timeout` and was closed unanswered.
#[test]
fn idle_clients_holding_every_worker_slot_lock_out_neither_root_nor_newcomers() {
    require_root!("the clients are other local users, and root");
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "max-workers = 3"),
            // The idle connections stay until the test ends.
            ("limits", "command-read-timeout = 600"),
        ],
    );
    // nobody: an IDSESSION that answered a PING (it sent a command).
    let mut busy = Held::open(NOBODY, &d.unix, b"zIDSESSION\0");
    assert_eq!(busy.line(), "sent");
    assert_eq!(show(&busy.ask(b"zPING\0")), "1: PONG\\0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.log().contains("unix uid=65534 ") {
        assert!(Instant::now() < deadline, "no nobody:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // uid 1 and TCP from loopback: connections that never send a byte.
    let mut idle = Held::open(1, &d.unix, b"");
    assert_eq!(idle.line(), "sent");
    let _tcp = connect_from("127.0.0.1".parse().unwrap(), d.tcp).unwrap();
    // Root's STATS is answered.
    let mut root = Conn::open(&d.unix_addr()).unwrap();
    root.send(b"zSTATS\0").unwrap();
    let stats = root.read_until(b"END\0", Duration::from_secs(60));
    assert!(stats.ends_with(b"END\0"), "{}\n{}", show(&stats), d.log());
    drop(root);
    // A newcomer (uid 2) is answered.
    let mut newcomer = Held::open(2, &d.unix, b"");
    assert_eq!(newcomer.line(), "sent");
    assert_eq!(show(&newcomer.ask(b"zPING\0")), "PONG\\0", "{}", d.log());
    // The session that sent a command still answers.
    assert_eq!(show(&busy.ask(b"zPING\0")), "2: PONG\\0");
    // Whose idle connection was closed to make room is in the log.
    assert!(
        d.log().contains("closed an idle connection to make room"),
        "{}",
        d.log()
    );
    drop(idle);
}
