//! Protocol torture: thousands of random and mutated requests against the
//! real binary, over the Unix socket and TCP, from many connections at once,
//! with clients that stall, half-close, reset (SO_LINGER 0) and send one
//! byte at a time, interleaved with correctness probes.
//!
//! Expected: every probe gets the right answer (an EICAR stream is always
//! `stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND`, a clean one always
//! `stream: OK`), the daemon closes every connection by itself (timeouts of
//! a few seconds in its configuration), and afterwards it answers PING and a
//! correct INSTREAM on both sockets, with its descriptor count and resident
//! memory back near where they started. Bounded: a fixed number of requests
//! from a seeded PRNG (`TORTURE_SEED` to replay another), and a deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{instream, show, Addr, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};

const FOUND: &str = "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND";
const WORKERS: usize = 24;
const REQUESTS_PER_WORKER: usize = 150;
/// The random phase stops early when this much time has passed (bounds the
/// test's run time on a loaded machine; the count above is the normal bound).
const PHASE_LIMIT: Duration = Duration::from_secs(40);
/// A connection the daemon has not closed by then is a hang (its own
/// timeouts are 2 s).
const HANG: Duration = Duration::from_secs(20);

/// splitmix64: small, seedable, good enough to pick requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid requests the mutator starts from. No SCAN-family command (a mutated
/// path could name `/`), no SHUTDOWN/QUIT/RELOAD (they would end the test).
fn templates() -> Vec<Vec<u8>> {
    let clean = b"clean data for the torture test\n".repeat(8);
    vec![
        b"zPING\0".to_vec(),
        b"nPING\n".to_vec(),
        b"PING".to_vec(),
        b"nVERSION\n".to_vec(),
        b"zVERSIONCOMMANDS\0".to_vec(),
        b"nSTATS\n".to_vec(),
        b"zFILDES\0\0".to_vec(),
        b"DETSTATS".to_vec(),
        instream(b"zINSTREAM\0", &clean, 64),
        instream(b"nINSTREAM\n", &clean, 7),
        b"zIDSESSION\0zPING\0zVERSION\0nSTATS\nzEND\0".to_vec(),
        [
            &b"zIDSESSION\0"[..],
            &instream(b"zINSTREAM\0", &clean, 100),
            b"zPING\0zEND\0",
        ]
        .concat(),
        b"nIDSESSION\nPING\n".to_vec(),
        b"zINSTREAM\0\xff\xff\xff\xff".to_vec(),
        b"zINSTREAM\0\x00\x10\x00\x01".to_vec(),
    ]
}

fn forbidden(req: &[u8]) -> bool {
    [&b"SCAN"[..], b"SHUTDOWN", b"QUIT", b"RELOAD"]
        .iter()
        .any(|w| req.windows(w.len()).any(|x| x == *w))
}

fn mutate(rng: &mut Rng, mut req: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        let at = rng.below(req.len() + 1);
        match rng.below(6) {
            0 if !req.is_empty() => {
                let i = at.min(req.len() - 1);
                req[i] ^= 1 << rng.below(8);
            }
            1 => {
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                req.splice(at..at, extra);
            }
            2 if at < req.len() => {
                let end = (at + 1 + rng.below(8)).min(req.len());
                req.drain(at..end);
            }
            3 => req.truncate(at),
            4 => {
                let b = [0u8, b'\n', b'\r', b'z', b'n'][rng.below(5)];
                req.insert(at, b);
            }
            _ => {
                let copy = req.clone();
                req.extend_from_slice(&copy);
            }
        }
    }
    req
}

#[derive(Clone, Copy, Debug)]
enum Style {
    /// Everything at once, then read.
    Whole,
    /// Everything, then shutdown(SHUT_WR), then read.
    HalfClose,
    /// One byte per write, with a pause so they arrive as separate reads.
    ByteAtATime,
    /// Part of the request, then a reset (SO_LINGER 0 on TCP) or abrupt close.
    Reset,
    /// Part of the request, then nothing: the daemon must time out and close.
    Stall,
}

struct Tally {
    requests: AtomicUsize,
    probes: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

fn open(addr: &Addr) -> Option<Conn> {
    // A refused connection (too many at once) is retried by the caller's
    // next request; it is not a wrong answer.
    Conn::open(addr).ok()
}

fn reset(conn: Conn) {
    if let Conn::Tcp(s) = &conn {
        let _ = nix::sys::socket::setsockopt(
            s,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
    }
    drop(conn);
}

fn send_styled(conn: &mut Conn, req: &[u8], style: Style, rng: &mut Rng) -> bool {
    match style {
        Style::ByteAtATime => {
            for b in req.iter().take(256) {
                if conn.send(std::slice::from_ref(b)).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            conn.send(req.get(256..).unwrap_or_default()).is_ok()
        }
        Style::Reset | Style::Stall => {
            let cut = rng.below(req.len() + 1);
            conn.send(&req[..cut]).is_ok()
        }
        Style::Whole | Style::HalfClose => conn.send(req).is_ok(),
    }
}

/// One garbage request: random bytes or a mutated template.
fn garbage(rng: &mut Rng, addr: &Addr, templates: &[Vec<u8>], tally: &Tally) {
    let req = loop {
        let r = if rng.chance(25) {
            let n = rng.below(600);
            rng.bytes(n)
        } else {
            let t = rng.below(templates.len());
            mutate(rng, templates[t].clone())
        };
        if !forbidden(&r) {
            break r;
        }
    };
    let style = match rng.below(100) {
        0..=54 => Style::HalfClose,
        55..=74 => Style::Whole,
        75..=84 => Style::Reset,
        85..=94 => Style::ByteAtATime,
        _ => Style::Stall,
    };
    let Some(mut conn) = open(addr) else { return };
    tally.requests.fetch_add(1, Ordering::Relaxed);
    let sent = send_styled(&mut conn, &req, style, rng);
    match style {
        Style::Reset => reset(conn),
        _ if !sent => {}
        Style::HalfClose | Style::Whole | Style::ByteAtATime | Style::Stall => {
            if matches!(style, Style::HalfClose) {
                conn.shutdown_write();
            }
            let reply = conn.read_all(HANG);
            if reply.ends_with(b"<TIMEOUT>") {
                tally.failures.lock().unwrap().push(format!(
                    "daemon kept a {style:?} connection open past {HANG:?} after {:?}",
                    show(&req[..req.len().min(80)])
                ));
            }
        }
    }
}

/// A correct request whose answer is known; any other answer is a failure.
fn probe(rng: &mut Rng, addr: &Addr, tally: &Tally) {
    let infected = rng.chance(50);
    let data = if infected {
        eicar()
    } else {
        b"a perfectly clean line of text\n".repeat(1 + rng.below(50))
    };
    let (prefix, term, session) = match rng.below(4) {
        0 => (&b"zINSTREAM\0"[..], b'\0', false),
        1 => (&b"nINSTREAM\n"[..], b'\n', false),
        2 => (&b"zIDSESSION\0zINSTREAM\0"[..], b'\0', true),
        _ => (&b"nIDSESSION\nnINSTREAM\n"[..], b'\n', true),
    };
    let mut req = instream(prefix, &data, 1 + rng.below(70));
    if session {
        req.extend_from_slice(if term == 0 { b"zEND\0" } else { b"nEND\n" });
    }
    let style = if rng.chance(20) {
        Style::ByteAtATime
    } else {
        Style::HalfClose
    };
    let Some(mut conn) = open(addr) else { return };
    tally.probes.fetch_add(1, Ordering::Relaxed);
    if !send_styled(&mut conn, &req, style, rng) {
        tally
            .failures
            .lock()
            .unwrap()
            .push(format!("probe could not be sent ({style:?})"));
        return;
    }
    if !session {
        // Outside a session the reply comes after the stream; EOF is fine.
        conn.shutdown_write();
    }
    let reply = conn.read_all(HANG);
    let mut want = Vec::new();
    if session {
        want.extend_from_slice(b"1: ");
    }
    want.extend_from_slice(if infected { FOUND } else { "stream: OK" }.as_bytes());
    want.push(term);
    if reply != want {
        tally.failures.lock().unwrap().push(format!(
            "probe ({} {:?} {style:?}) got {:?}, want {:?}",
            if infected { "EICAR" } else { "clean" },
            show(prefix),
            show(&reply),
            show(&want)
        ));
    }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn assert_healthy(d: &Daemon) {
    for addr in [d.unix_addr(), d.tcp_addr()] {
        let mut c = Conn::open(&addr).expect("daemon accepts connections");
        c.send(b"zPING\0").unwrap();
        assert_eq!(show(&c.read_all(Duration::from_secs(10))), "PONG\\0");
        let mut c = Conn::open(&addr).unwrap();
        c.send(&instream(b"zINSTREAM\0", &eicar(), 10)).unwrap();
        assert_eq!(
            show(&c.read_all(Duration::from_secs(10))),
            format!("{FOUND}\\0")
        );
        let mut c = Conn::open(&addr).unwrap();
        c.send(&instream(b"nINSTREAM\n", b"clean", 10)).unwrap();
        assert_eq!(show(&c.read_all(Duration::from_secs(10))), "stream: OK\\n");
    }
}

#[test]
fn torture() {
    let seed: u64 = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c1a5);
    eprintln!("torture seed {seed} (TORTURE_SEED to replay another)");
    let db = TestDb::new();
    let mut d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "command-read-timeout = 2"),
            ("limits", "command-timeout = 2"),
            ("limits", "read-timeout = 2"),
            ("limits", "idle-timeout = 2"),
            ("limits", "stream-max-length = \"256K\""),
            ("limits", "max-threads = 2"),
            ("limits", "max-queue = 1000"),
            ("log", "level = \"info\""),
        ],
    );
    assert_healthy(&d);
    // Let the connections of the warm-up close before measuring.
    std::thread::sleep(Duration::from_millis(300));
    // The worker holds the connections (the supervisor only its sockets).
    let worker = d.worker();
    let fds_before = fd_count(worker);
    let rss_before = d.rss_kib();

    let tally = Arc::new(Tally {
        requests: AtomicUsize::new(0),
        probes: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let templates = Arc::new(templates());
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tally = Arc::clone(&tally);
            let templates = Arc::clone(&templates);
            let addrs = [d.unix_addr(), d.tcp_addr()];
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w as u64).wrapping_mul(0x1000_0000_01b3));
                for _ in 0..REQUESTS_PER_WORKER {
                    if started.elapsed() > PHASE_LIMIT {
                        break;
                    }
                    let addr = &addrs[rng.below(2)];
                    if rng.chance(15) {
                        probe(&mut rng, addr, &tally);
                    } else {
                        garbage(&mut rng, addr, &templates, &tally);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let requests = tally.requests.load(Ordering::Relaxed);
    let probes = tally.probes.load(Ordering::Relaxed);
    eprintln!(
        "torture: {requests} garbage requests, {probes} probes in {:?}",
        started.elapsed()
    );
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}\nlog tail:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n"),
        tail(&d.log())
    );
    assert!(requests >= 1000, "only {requests} requests were made");
    assert!(probes >= 100, "only {probes} probes were made");
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "daemon exited during the torture; log:\n{}",
        tail(&d.log())
    );

    assert_healthy(&d);
    // The daemon closes what is left by itself (2 s timeouts); wait for it.
    let deadline = Instant::now() + HANG;
    let mut fds_after = fd_count(worker);
    while fds_after > fds_before + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = fd_count(worker);
    }
    assert!(
        fds_after <= fds_before + 4,
        "descriptors: {fds_before} before, {fds_after} after"
    );
    let rss_after = d.rss_kib();
    assert!(
        rss_after <= rss_before * 2 + 128 * 1024,
        "resident memory: {rss_before} KiB before, {rss_after} KiB after"
    );
    eprintln!("descriptors {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB");
    let log = d.log();
    assert!(!log.contains("panicked"), "{}", tail(&log));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
