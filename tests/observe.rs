//! Observability with the real parts: the real daemon, its observer
//! process, real sockets, Debian's `promtool`.
//!
//! * the counters are exact after a scripted mix of requests, and the
//!   scrape passes `promtool check metrics`;
//! * every HTTP error is a clear answer, and hostile scrapers (slow heads,
//!   huge heads, 1,000 idle connections, bad methods and paths) never touch
//!   scanning: honest INSTREAM scans keep their exact replies meanwhile, and
//!   the observer's memory stays bounded;
//! * the self-test fails with a database that does not detect EICAR: the
//!   failure is counted, shown in the status line, and the node is not
//!   ready (HAProxy agent: drain, `clamsentry_ready` 0) until a reload
//!   brings the signature back;
//! * the observer runs as the service user, without capabilities, not
//!   dumpable, one thread;
//! * systemd's `metrics` and `agent` sockets are used as passed.
//!
//! Waits are for conditions with generous deadlines (counters converge
//! within a couple of seconds: workers report once a second, the
//! supervisor snapshots once a second), never timing thresholds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{instream, show, talk, Addr};
use common::daemons::{free_port, Daemon};
use common::scrape::{self, get, raw, sum, until};
use common::{eicar, TestDb};

const T: Duration = Duration::from_secs(20);
const FOUND: &[u8] = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0";
const OK: &[u8] = b"stream: OK\0";

fn clean() -> Vec<u8> {
    b"an ordinary text file, nothing to find here\n".repeat(230)
}

/// A daemon with its metrics listener on a free loopback port.
fn with_metrics(db: &Path, settings: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!("listen = \"{addr}\"");
    let mut all: Vec<(&str, &str)> = vec![("metrics", &listen)];
    all.extend_from_slice(settings);
    (Daemon::clamsentry(db, &all), addr)
}

fn scan(addr: &Addr, data: &[u8]) -> Vec<u8> {
    talk(addr, &[&instream(b"zINSTREAM\0", data, 4096)], T).unwrap()
}

/// `promtool check metrics` on a scrape: its exit code and what it said.
fn check_metrics(promtool: &str, text: &str) -> (i32, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The counters of the metrics move by exactly what was sent: a scripted
/// mix over both listeners (clean and infected streams, descriptors,
/// refused commands, a stream over its limit), compared with a scrape
/// taken before it. The self-test is off, so nothing else scans.
#[test]
fn counters_are_exact_and_the_scrape_passes_promtool() {
    let db = TestDb::new();
    let (d, m) = with_metrics(
        db.path(),
        &[
            ("selftest", "interval = 0"),
            ("limits", "stream-max-length = \"64K\""),
            ("metrics", "top-detections = 3"),
        ],
    );
    let before = scrape::settled(m);
    let (tcp, unix) = (d.tcp_addr(), d.unix_addr());
    let data = clean();
    for _ in 0..7 {
        assert_eq!(scan(&tcp, &data), OK);
    }
    for _ in 0..3 {
        assert_eq!(scan(&tcp, &eicar()), FOUND);
    }
    for _ in 0..4 {
        assert_eq!(scan(&unix, &data), OK);
    }
    for _ in 0..2 {
        assert_eq!(scan(&unix, &eicar()), FOUND);
    }
    for _ in 0..5 {
        let got = talk(&tcp, &[b"zSCAN /etc/passwd\0"], T).unwrap();
        assert!(
            got.ends_with(b"not allowed on this listener. ERROR\0"),
            "{}",
            show(&got)
        );
    }
    let files = tempfile::tempdir().unwrap();
    for (i, body) in [data.clone(), eicar()].iter().enumerate() {
        let p = files.path().join(format!("f{i}"));
        std::fs::write(&p, body).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut c = common::client::Conn::open(&unix).unwrap();
        c.send(b"zFILDES\0").unwrap();
        c.send_fd(std::os::fd::AsRawFd::as_raw_fd(&f)).unwrap();
        let got = c.read_until(b"\0", T);
        assert!(
            got.ends_with(if i == 0 { b"OK\0" as &[u8] } else { b"FOUND\0" }),
            "{}",
            show(&got)
        );
    }
    let big = vec![b'a'; 100 * 1024];
    let got = common::client::talk_streaming(&tcp, instream(b"zINSTREAM\0", &big, 8192), T);
    assert!(
        got.starts_with(b"INSTREAM size limit exceeded"),
        "{}",
        show(&got)
    );

    let delta = |t: &str, name: &str, labels: &[(&str, &str)]| {
        sum(t, name, labels) - sum(&before, name, labels)
    };
    let scans = "clamsentry_scans_total";
    let text = until(m, "18 more scans", |t| {
        delta(t, scans, &[]) == 18.0 && delta(t, "clamsentry_limits_exceeded_total", &[]) == 1.0
    });
    let d_ = |name: &str, labels: &[(&str, &str)]| delta(&text, name, labels);
    let is = |labels: &[(&str, &str)]| d_(scans, labels);
    assert_eq!(
        is(&[
            ("listener", "tcp"),
            ("command", "INSTREAM"),
            ("result", "clean")
        ]),
        7.0
    );
    assert_eq!(
        is(&[
            ("listener", "tcp"),
            ("command", "INSTREAM"),
            ("result", "found")
        ]),
        3.0
    );
    assert_eq!(
        is(&[
            ("listener", "unix"),
            ("command", "INSTREAM"),
            ("result", "clean")
        ]),
        4.0
    );
    assert_eq!(
        is(&[
            ("listener", "unix"),
            ("command", "INSTREAM"),
            ("result", "found")
        ]),
        2.0
    );
    assert_eq!(
        is(&[
            ("listener", "unix"),
            ("command", "FILDES"),
            ("result", "clean")
        ]),
        1.0
    );
    assert_eq!(
        is(&[
            ("listener", "unix"),
            ("command", "FILDES"),
            ("result", "found")
        ]),
        1.0
    );
    assert_eq!(is(&[("result", "error")]), 0.0);
    assert_eq!(
        d_("clamsentry_detections_total", &[("category", "Win")]),
        6.0
    );
    assert_eq!(d_("clamsentry_detections_total", &[]), 6.0);
    assert_eq!(
        scrape::sum(
            &text,
            "clamsentry_detections_by_name_total",
            &[("name", "Win.Test.EICAR_HDB-1.UNOFFICIAL")]
        ),
        6.0
    );
    assert_eq!(
        d_(
            "clamsentry_limits_exceeded_total",
            &[("limit", "limits.stream-max-length")]
        ),
        1.0
    );
    let cmd = |l: &str, c: &str, o: &str| {
        d_(
            "clamsentry_commands_total",
            &[("listener", l), ("command", c), ("outcome", o)],
        )
    };
    assert_eq!(cmd("tcp", "SCAN", "refused"), 5.0);
    assert_eq!(cmd("tcp", "INSTREAM", "allowed"), 11.0);
    assert_eq!(cmd("unix", "INSTREAM", "allowed"), 6.0);
    assert_eq!(cmd("unix", "FILDES", "allowed"), 2.0);
    let accepted = |l: &str| {
        d_(
            "clamsentry_connections_total",
            &[("listener", l), ("outcome", "accepted")],
        )
    };
    assert_eq!(accepted("tcp"), 7.0 + 3.0 + 5.0 + 1.0);
    assert_eq!(accepted("unix"), 4.0 + 2.0 + 2.0);
    assert_eq!(d_("clamsentry_scan_duration_seconds_count", &[]), 18.0);
    assert_eq!(d_("clamsentry_scan_size_bytes_count", &[]), 18.0);
    let sizes = 11.0 * data.len() as f64 + 5.0 * 68.0 + data.len() as f64 + 68.0;
    assert_eq!(d_("clamsentry_scan_size_bytes_sum", &[]), sizes);
    assert_eq!(d_("clamsentry_queue_wait_seconds_count", &[]), 18.0);
    // One worker per client identity (root, over Unix and over loopback
    // TCP: one local user) and the standby worker (limits.standby-workers
    // = 1) forked ahead of the next identity, which may still be starting
    // (the self-test is off).
    until(m, "two serving workers", |t| {
        sum(t, "clamsentry_workers", &[("state", "serving")]) == 2.0
    });
    assert_eq!(sum(&text, "clamsentry_ready", &[]), 1.0);
    assert!(sum(&text, "clamsentry_process_pss_bytes", &[("role", "worker")]) > 0.0);
    assert!(
        sum(
            &text,
            "clamsentry_process_pss_bytes",
            &[("role", "observer")]
        ) > 0.0
    );
    assert!(
        sum(
            &text,
            "clamsentry_process_cpu_seconds_total",
            &[("role", "supervisor")]
        ) > 0.0
    );
    assert_eq!(
        sum(&text, "clamsentry_processes", &[("role", "engine_holder")]),
        1.0
    );

    {
        let promtool = require!(common::require::program("promtool", "prometheus"));
        let promtool = promtool.to_str().unwrap();
        let (code, said) = check_metrics(promtool, &text);
        assert_eq!((code, said.as_str()), (0, ""), "promtool check metrics");
    }
}

/// With `metrics.compat-names`, sergeymakinen/clamav_exporter's names are
/// there too; promtool's only remarks are about that exporter's own
/// `_sec` names.
#[test]
fn compat_names_and_openmetrics() {
    let db = TestDb::new();
    let (_d, m) = with_metrics(db.path(), &[("metrics", "compat-names = true")]);
    let text = until(m, "the engine", |t| sum(t, "clamsentry_ready", &[]) == 1.0);
    assert_eq!(sum(&text, "clamav_up", &[]), 1.0);
    assert_eq!(sum(&text, "clamav_version", &[("version", "1.4.6")]), 1.0);
    assert_eq!(
        sum(
            &text,
            "clamav_pool_max_threads",
            &[("index", "0"), ("primary", "1")]
        ),
        10.0,
        "limits.max-threads"
    );
    assert!(sum(&text, "clamav_memory_pools_total_bytes", &[]) > 0.0);
    {
        let promtool = require!(common::require::program("promtool", "prometheus"));
        let promtool = promtool.to_str().unwrap();
        let (_, said) = check_metrics(promtool, &text);
        for line in said.lines() {
            assert!(
                line.starts_with("clamav_pool_queue_")
                    && line.ends_with("metric names should not contain abbreviated units"),
                "{said}"
            );
        }
    }
    let om = get(
        m,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .unwrap();
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om.body.contains("# TYPE clamsentry_scans counter\n"));
    let plain = get(m, "/metrics", None).unwrap();
    assert_eq!(
        plain.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}

/// Every request that is not a plain GET of a known path gets a clear
/// HTTP error, and a log line budgeted per client.
#[test]
fn bad_requests_get_clear_errors() {
    let db = TestDb::new();
    let (d, m) = with_metrics(db.path(), &[("metrics", "header-timeout = 2")]);
    scrape::metrics(m);
    let r = raw(m, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    let r = raw(m, b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/metrics"), "{}", r.body);
    let r = raw(m, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let r = raw(
        m,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .unwrap();
    assert_eq!(r.status, 405, "a method check comes first");
    let r = raw(
        m,
        b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat(b'a').take(20_000));
    huge.extend_from_slice(b"\r\n\r\n");
    let r = raw(m, &huge).unwrap();
    assert_eq!(r.status, 431);
    let r = raw(m, b"GET /metr").unwrap();
    assert_eq!(
        r.status, 408,
        "a head not complete within metrics.header-timeout"
    );
    let r = raw(m, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("content-length").unwrap().parse::<u64>().unwrap() > 1000);
    // Keep-alive: two requests on one connection.
    let r = raw(
        m,
        b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("HTTP/1.1 200 OK"),
        "the second answer follows"
    );
    assert!(r.body.contains("<!DOCTYPE html>"));
    assert!(r
        .body
        .contains("Content-Security-Policy: default-src 'none'"));
    let log = d.log();
    assert!(
        log.contains("HTTP request answered 405 Method Not Allowed"),
        "{log}"
    );
    assert!(log.contains("HTTP request answered 404 Not Found"), "{log}");
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's open-file limit (1,000 idle connections).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard);
}

/// Hostile scrapers against the metrics listener while honest clients
/// scan: slow heads, huge heads, 1,000 idle connections, bad methods and
/// bad paths. Every honest INSTREAM (Unix and TCP) gets its exact reply;
/// the observer never holds more than `metrics.max-connections` client
/// connections, its resident memory stays under 48 MiB, and afterwards
/// it answers scrapes again.
#[test]
fn hostile_scrapers_never_touch_scanning() {
    require_root!("reading the observer's /proc entries needs root (CI runs as root)");
    raise_nofile();
    let db = TestDb::new();
    let (d, m) = with_metrics(db.path(), &[("metrics", "header-timeout = 3")]);
    scrape::metrics(m);
    let observer = d.observer();
    let rss_before = rss_kib(observer);
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let max_fds = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    // 1,000 idle connections, reopened when closed.
    {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut made = 0u32;
            while !stop.load(Ordering::Relaxed) {
                held.retain(|s: &TcpStream| {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).ok();
                    !matches!((&*s).read(&mut b), Ok(0))
                });
                while held.len() < 1000 && !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect_timeout(&m, Duration::from_secs(2)) {
                        Ok(s) => {
                            held.push(s);
                            made += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            made
        }));
    }
    // Slow heads: one byte a second.
    for _ in 0..8 {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect_timeout(&m, Duration::from_secs(2)) {
                    for b in b"GET /metrics HTTP/1.1\r\n" {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    n += 1;
                }
            }
            n
        }));
    }
    // Huge heads, bad methods, bad paths, garbage, as fast as they go.
    for kind in 0..4u8 {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let req: Vec<u8> = match kind {
                    0 => {
                        let mut r = b"GET /metrics HTTP/1.1\r\n".to_vec();
                        r.extend(
                            std::iter::repeat(b"X-Flood: yyyyyyyyyyyyyyyy\r\n")
                                .take(2000)
                                .flatten(),
                        );
                        r
                    }
                    1 => b"PUT /metrics HTTP/1.1\r\n\r\n".to_vec(),
                    2 => b"GET /../../etc/shadow HTTP/1.1\r\n\r\n".to_vec(),
                    _ => (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect(),
                };
                if let Ok(mut s) = TcpStream::connect_timeout(&m, Duration::from_secs(2)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(&req);
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    n += 1;
                }
            }
            n
        }));
    }
    // The observer's memory and descriptors, sampled all along.
    let sampler = {
        let (stop, max_rss, max_fds) = (
            Arc::clone(&stop),
            Arc::clone(&max_rss),
            Arc::clone(&max_fds),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_rss.fetch_max(rss_kib(observer), Ordering::Relaxed);
                max_fds.fetch_max(open_fds(observer) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Honest clients: 120 scans over each listener, every reply exact.
    let data = clean();
    let mut honest = 0;
    for i in 0..120 {
        for addr in [d.unix_addr(), d.tcp_addr()] {
            let (body, want) = if i % 3 == 0 {
                (eicar(), FOUND)
            } else {
                (data.clone(), OK)
            };
            let got = scan(&addr, &body);
            assert_eq!(got, want, "honest scan {i} on {addr:?}: {}", show(&got));
            honest += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u32> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    sampler.join().unwrap();
    eprintln!(
        "honest scans {honest}, attacker connections {counts:?}, observer RSS {rss_before} KiB before, at most {} KiB during, at most {} descriptors",
        max_rss.load(Ordering::Relaxed),
        max_fds.load(Ordering::Relaxed)
    );
    assert!(
        counts[0] >= 64,
        "the idle flood got connections: {counts:?}"
    );
    assert!(
        max_rss.load(Ordering::Relaxed) < 48 * 1024,
        "observer RSS stayed bounded"
    );
    // Its caps: 64 clients per listener, each with the duplicate its slot
    // asks about waiting bytes, plus the channel, stdio, smaps and the
    // listening socket; a newcomer is accepted before the connection it
    // replaces has closed (its task ends a moment later), so up to as many
    // again in passing.
    assert!(
        max_fds.load(Ordering::Relaxed) <= 2 * 2 * 64 + 16,
        "the observer held at most metrics.max-connections clients"
    );
    // Afterwards it answers again, and it counted nothing it should not.
    let text = until(m, "the scrapes again", |t| {
        sum(t, "clamsentry_scans_total", &[("listener", "tcp")]) >= 120.0
    });
    assert_eq!(
        sum(&text, "clamsentry_scans_total", &[("result", "error")]),
        0.0
    );
    d.log_with("closed the oldest connection to make room");
}

/// The self-test with a database that does not detect EICAR: failed,
/// counted, in the status line, and the node is not ready (the agent
/// drains, `clamsentry_ready` is 0); once a reload brings the signature
/// back, it passes and the node is ready again.
#[test]
fn a_failing_selftest_makes_the_node_not_ready_until_it_passes() {
    let db = TestDb::new();
    let hdb = db.path().join("test.hdb");
    let with_eicar = std::fs::read_to_string(&hdb).unwrap();
    let without: String = with_eicar
        .lines()
        .filter(|l| !l.contains("EICAR"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hdb, &without).unwrap();
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (m, a) = (free_port(), free_port());
    let (metrics, agent) = (
        format!("listen = \"127.0.0.1:{m}\""),
        format!("listen = \"127.0.0.1:{a}\""),
    );
    let d = Daemon::launch(
        db.path(),
        &[
            ("metrics", &metrics),
            ("agent", &agent),
            ("selftest", "interval = 2"),
            ("database", "self-check = 0"),
        ],
        |l| {
            let mut c = Command::new(&l.bin);
            c.arg("--config")
                .arg(&l.config)
                .env("NOTIFY_SOCKET", &notify_path);
            c
        },
    );
    let m: SocketAddr = format!("127.0.0.1:{m}").parse().unwrap();
    let a: SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    let agent_says = || {
        let mut s = TcpStream::connect(a).unwrap();
        let mut line = String::new();
        s.read_to_string(&mut line).unwrap();
        line
    };
    // Each failed self-test is a clean INSTREAM scan through a worker
    // (its counters and the result reach the supervisor on their own).
    let text = until(m, "a failed self-test, scanned by a worker", |t| {
        let failed = sum(t, "clamsentry_selftests_total", &[("result", "failed")]);
        let scanned = sum(
            t,
            "clamsentry_scans_total",
            &[
                ("listener", "selftest"),
                ("command", "INSTREAM"),
                ("result", "clean"),
            ],
        );
        failed >= 1.0 && failed == scanned
    });
    assert!(sum(&text, "clamsentry_selftest_failures_total", &[]) >= 1.0);
    assert_eq!(sum(&text, "clamsentry_selftest_failing", &[]), 1.0);
    assert_eq!(sum(&text, "clamsentry_ready", &[]), 0.0);
    let line = agent_says();
    assert!(
        line.starts_with("up drain #self-test failing: stream: OK") && line.ends_with('\n'),
        "{line:?}"
    );
    let deadline = Instant::now() + T;
    let mut seen = String::new();
    while !seen.contains("SELF-TEST FAILING") {
        let mut buf = [0u8; 4096];
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(Instant::now() < deadline, "status line: {seen}");
    }
    d.log_with("self-test failed");
    let status: serde_json::Value =
        serde_json::from_str(&get(m, "/status.json", None).unwrap().body).unwrap();
    assert_eq!(status["health"]["state"], "drain");
    assert_eq!(status["selftest"]["failing"], true);

    // The signature comes back with a reload.
    std::fs::write(&hdb, &with_eicar).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let text = until(m, "the self-test passing again", |t| {
        sum(t, "clamsentry_selftest_failing", &[]) == 0.0 && sum(t, "clamsentry_ready", &[]) == 1.0
    });
    assert!(
        sum(
            &text,
            "clamsentry_selftest_last_success_timestamp_seconds",
            &[]
        ) > 0.0
    );
    assert_eq!(
        sum(
            &text,
            "clamsentry_reloads_total",
            &[("trigger", "signal"), ("result", "ok")]
        ),
        1.0
    );
    let line = agent_says();
    assert!(
        line.starts_with("up ready ") && line.ends_with("%\n"),
        "{line:?}"
    );
    d.log_with("self-test passes again");
}

/// The observer demoted itself before reading a byte: the service user,
/// no capabilities, no-new-privs, one thread, not dumpable (its /proc
/// files belong to root), and the limits on its descriptors and tasks.
#[test]
fn the_observer_is_sandboxed() {
    require_root!("needs root (CI runs as root)");
    let db = TestDb::new();
    let (d, m) = with_metrics(db.path(), &[]);
    scrape::metrics(m);
    let o = d.observer();
    let status = std::fs::read_to_string(format!("/proc/{o}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    // The service user (sandbox.user), as the workers.
    let user = common::service_user().0;
    assert_eq!(field("Uid:"), format!("{user} {user} {user} {user}"));
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Threads:"), "1");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{o}/status"))
        .unwrap()
        .uid();
    assert_eq!(owner, 0, "not dumpable: its /proc files belong to root");
    let limits = std::fs::read_to_string(format!("/proc/{o}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    assert_eq!(limit("Max processes"), "0");
    // Each of the two listeners' connections, with the duplicate its slot
    // asks about waiting bytes.
    assert_eq!(limit("Max open files"), (4 * 64 + 32).to_string());
    // Its descriptors: stdio, its channel, the metrics socket, its own
    // smaps_rollup, the runtime's epoll and eventfd; no file of anyone's.
    for e in std::fs::read_dir(format!("/proc/{o}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(e.path()).unwrap().display().to_string();
        assert!(
            target.starts_with("socket:")
                || target.starts_with("anon_inode:")
                || target == format!("/proc/{o}/smaps_rollup")
                || target == "/dev/null"
                || target.starts_with("pipe:")
                || target.contains("daemon.log"),
            "observer fd -> {target}"
        );
    }
}

/// A Unix socket for the metrics: created by the supervisor with its final
/// mode (0666, no chmod afterwards), served by the observer.
#[test]
fn a_unix_metrics_socket() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.sock");
    let listen = format!("listen = {:?}", path.display().to_string());
    let _d = Daemon::clamsentry(db.path(), &[("metrics", &listen)]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let deadline = Instant::now() + T;
    loop {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        if out.starts_with("HTTP/1.1 200 OK") {
            assert!(out.contains("clamsentry_build_info{"));
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Under socket activation the sockets named `metrics` and `agent` go to
/// the observer, whatever `[metrics]` and `[agent]` say.
#[test]
fn systemd_metrics_and_agent_sockets() {
    let Some(activate) = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        eprintln!("SKIPPED: systemd-socket-activate missing (apt-get install systemd)");
        return;
    };
    let db = TestDb::new();
    let (m, a) = (free_port(), free_port());
    // The configuration names another port: systemd's must win.
    let other = format!("listen = \"127.0.0.1:{}\"", free_port());
    let d = Daemon::launch(db.path(), &[("metrics", &other)], |l| {
        let mut c = Command::new(activate);
        c.arg("-l")
            .arg(&l.unix)
            .arg("-l")
            .arg(l.tcp.to_string())
            .arg("-l")
            .arg(format!("127.0.0.1:{m}"))
            .arg("-l")
            .arg(format!("127.0.0.1:{a}"))
            .arg("--fdname=unix:tcp:metrics:agent")
            .arg(&l.bin)
            .arg("--config")
            .arg(&l.config);
        c
    });
    let m: SocketAddr = format!("127.0.0.1:{m}").parse().unwrap();
    let text = until(m, "the engine", |t| sum(t, "clamsentry_ready", &[]) == 1.0);
    assert!(text.contains("clamsentry_scans_total{"));
    let mut s = TcpStream::connect(format!("127.0.0.1:{a}")).unwrap();
    let mut line = String::new();
    s.read_to_string(&mut line).unwrap();
    assert!(line.starts_with("up ready "), "{line:?}");
    let log = d.log();
    assert!(
        log.contains(&format!("metrics listener on {m} from systemd")),
        "{log}"
    );
    assert!(log.contains("HAProxy agent listener on"), "{log}");
    assert_eq!(
        talk(&d.unix_addr(), &[b"zPING\0"], T).unwrap(),
        b"PONG\0",
        "the clamd sockets still serve"
    );
}

/// The self-test's connection is no client's: its EICAR runs no
/// VirusEvent command, is not counted in STATS or the status line, and
/// self-tests do not keep an idle daemon from exiting.
#[test]
fn selftests_are_not_client_activity() {
    require_root!("needs root (the VirusEvent user is created if missing)");
    let _user = common::users::EventUser::ensure();
    let db = TestDb::new();
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = out.path().join("events");
    let command = format!("command = \"echo %v >> {}\"", marker.display());
    let (d, m) = with_metrics(
        db.path(),
        &[("selftest", "interval = 1"), ("virus-event", &command)],
    );
    until(m, "two passed self-tests", |t| {
        sum(t, "clamsentry_selftests_total", &[("result", "passed")]) >= 2.0
    });
    let stats = talk(&d.unix_addr(), &[b"zSTATS\0"], T).unwrap();
    assert!(!marker.exists(), "a self-test ran the VirusEvent command");
    assert!(!d.log().contains("virus found"), "{}", d.log());
    assert!(show(&stats).contains("POOLS: 1"));
    // A client's EICAR does run it (the command works).
    assert_eq!(scan(&d.tcp_addr(), &eicar()), FOUND);
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&marker).is_ok_and(|s| s.contains("Win.Test.EICAR_HDB-1")) {
        assert!(
            Instant::now() < deadline,
            "no VirusEvent for the client's scan"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);

    let mut idle = Daemon::clamsentry(
        db.path(),
        &[
            ("selftest", "interval = 1"),
            ("service", "exit-when-idle = 3"),
        ],
    );
    assert_eq!(
        idle.wait_exit(Duration::from_secs(60)),
        Some(0),
        "self-tests kept an idle daemon alive: {}",
        idle.log()
    );
    let log = idle.log();
    assert!(
        log.contains("self-test passed"),
        "self-tests ran meanwhile: {log}"
    );
    assert!(log.contains("service.exit-when-idle"), "{log}");
}

/// The second outside review's round 2: a local user holding 66 idle
/// connections with half-sent requests (reopened as soon as closed) failed
/// every scrape. From the same address (loopback is one client), the
/// scraper now gets in: a newcomer takes the slot of its client's oldest
/// connection that never sent a whole request.
#[test]
fn a_local_user_holding_idle_connections_cannot_lock_out_scrapes() {
    require_root!("the attacker runs as nobody");
    require!(common::require::program("setpriv", "util-linux"));
    let db = TestDb::new();
    let (_d, m) = with_metrics(db.path(), &[("metrics", "header-timeout = 30")]);
    scrape::metrics(m);
    const ATTACKER: &str = r#"
import socket, sys, time
addr = (sys.argv[1], int(sys.argv[2]))
held, made, closed = [], 0, 0
end = time.time() + 60
while time.time() < end:
    for s in list(held):
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                held.remove(s); closed += 1; s.close()
        except BlockingIOError:
            pass
        except OSError:
            held.remove(s); closed += 1
    while len(held) < 100:
        try:
            s = socket.create_connection(addr)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")
        except OSError:
            closed += 1
            break
        held.append(s); made += 1
    print(made, closed, flush=True)
    time.sleep(0.05)
"#;
    let mut attacker = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(ATTACKER)
        .arg(m.ip().to_string())
        .arg(m.port().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(attacker.stdout.take().unwrap());
    let mut line = String::new();
    // The attacker holds its connections before the first scrape.
    use std::io::BufRead;
    lines.read_line(&mut line).unwrap();
    let mut ok = 0;
    for _ in 0..20 {
        match scrape::get(m, "/metrics", None) {
            Ok(got) if got.status == 200 && got.body.contains("clamsentry_ready") => ok += 1,
            other => eprintln!("a scrape failed: {:?}", other.map(|h| h.status)),
        }
    }
    line.clear();
    lines.read_line(&mut line).unwrap();
    let _ = attacker.kill();
    let _ = attacker.wait();
    let counts: Vec<u64> = line
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    eprintln!("attacker connections made, closed by the observer: {counts:?}");
    assert_eq!(
        ok, 20,
        "every scrape answered while the attacker held its connections"
    );
    assert!(
        counts.len() == 2 && counts[0] >= 100,
        "the attacker held connections: {line}"
    );
    assert!(
        counts[1] > 0,
        "the observer closed attacker connections to make room: {line}"
    );
}
