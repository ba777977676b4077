//! Reload, shutdown and concurrency against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::client::{instream, show, talk, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};
use nix::sys::signal::Signal;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Polls until a stream with `marker` is detected as `name`, or panics.
fn wait_detected(d: &Daemon, marker: &str, name: &str) {
    let want = format!("stream: {name}.UNOFFICIAL FOUND\\0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = talk(
            &d.unix_addr(),
            &[&instream(b"zINSTREAM\0", marker.as_bytes(), 64)],
            Duration::from_secs(5),
        )
        .unwrap();
        if show(&reply) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never detected; last reply {}; log:\n{}",
            show(&reply),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stream_reply(d: &Daemon, data: &[u8]) -> String {
    show(
        &talk(
            &d.unix_addr(),
            &[&instream(b"zINSTREAM\0", data, 4096)],
            Duration::from_secs(5),
        )
        .unwrap(),
    )
}

#[test]
fn reload_by_command_and_signals_picks_up_new_signatures() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    type Trigger<'a> = Box<dyn Fn() + 'a>;
    let triggers: [(&str, Trigger); 3] = [
        (
            "RELOAD",
            Box::new(|| {
                let r = talk(&d.unix_addr(), &[b"RELOAD"], Duration::from_secs(5)).unwrap();
                assert_eq!(r, b"RELOADING\n");
            }),
        ),
        ("SIGUSR2", Box::new(|| d.signal(Signal::SIGUSR2))),
        ("SIGHUP", Box::new(|| d.signal(Signal::SIGHUP))),
    ];
    for (i, (how, trigger)) in triggers.iter().enumerate() {
        let marker = format!("clamsentry reload marker number {i}");
        let name = format!("Reload.Marker-{i}");
        assert_eq!(
            stream_reply(&d, marker.as_bytes()),
            "stream: OK\\0",
            "{how}: not yet loaded"
        );
        std::fs::write(
            db.path().join(format!("marker{i}.ndb")),
            format!("{name}:0:*:{}\n", hex(&marker)),
        )
        .unwrap();
        trigger();
        wait_detected(&d, &marker, &name);
    }
    assert!(d.log().contains("reload complete"));
}

#[test]
fn failed_reload_keeps_the_old_signatures() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    std::fs::write(db.path().join("broken.ndb"), "this is not a signature\n").unwrap();
    assert_eq!(
        talk(&d.unix_addr(), &[b"zRELOAD\0"], Duration::from_secs(5)).unwrap(),
        b"RELOADING\0"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload failure logged:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.log().contains("broken.ndb"),
        "the log names the bad file:\n{}",
        d.log()
    );
    assert_eq!(
        stream_reply(&d, &eicar()),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
}

#[test]
fn shutdown_command_finishes_in_flight_work_and_exits_zero() {
    let db = TestDb::new();
    let mut d = Daemon::clamsentry(db.path(), &[]);
    let mut slow = Conn::open(&d.unix_addr()).unwrap();
    let req = instream(b"zINSTREAM\0", &eicar(), 10);
    slow.send(&req[..20]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        talk(&d.unix_addr(), &[b"zSHUTDOWN\0"], Duration::from_secs(5)).unwrap(),
        b""
    );
    std::thread::sleep(Duration::from_millis(200));
    slow.send(&req[20..]).unwrap();
    assert_eq!(
        show(&slow.read_all(Duration::from_secs(5))),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)),
        Some(0),
        "log:\n{}",
        d.log()
    );
    assert!(!d.unix.exists(), "the socket file is removed on exit");
}

#[test]
fn sigterm_and_quit_stop_cleanly() {
    let db = TestDb::new();
    let mut d = Daemon::clamsentry(db.path(), &[]);
    let idle = Conn::open(&d.unix_addr()).unwrap();
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)),
        Some(0),
        "idle clients do not hold up shutdown"
    );
    drop(idle);
    let mut d = Daemon::clamsentry(db.path(), &[]);
    assert_eq!(
        talk(&d.unix_addr(), &[b"QUIT"], Duration::from_secs(5)).unwrap(),
        b""
    );
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn hundred_concurrent_instream_clients_all_get_correct_answers() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[]);
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let addr = if i % 2 == 0 {
                d.unix_addr()
            } else {
                d.tcp_addr()
            };
            std::thread::spawn(move || {
                let infected = i % 3 == 0;
                let mut data = format!("client {i} payload ").repeat(500).into_bytes();
                if infected {
                    data = eicar();
                }
                let reply = talk(
                    &addr,
                    &[&instream(b"zINSTREAM\0", &data, 1000)],
                    Duration::from_secs(60),
                )
                .unwrap();
                let want = if infected {
                    "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
                } else {
                    "stream: OK\\0"
                };
                assert_eq!(show(&reply), want, "client {i}");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn full_queue_answers_at_once_instead_of_hanging() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[("limits", "max-threads = 1"), ("limits", "max-queue = 1")],
    );
    let big: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = d.unix_addr();
            let req = instream(b"zINSTREAM\0", &big, 1 << 16);
            std::thread::spawn(move || {
                show(&talk(&addr, &[&req], Duration::from_secs(120)).unwrap())
            })
        })
        .collect();
    for h in handles {
        let reply = h.join().unwrap();
        assert!(
            reply == "stream: OK\\0"
                || reply == "stream: Scan queue full (limits.max-queue), retry later. ERROR\\0",
            "{reply}"
        );
    }
}

fn process_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// A worker that never finishes draining (here: stopped, as a wedged or
/// hostile worker would be) is ended at `limits.drain-timeout`, on reload
/// and on SIGTERM alike: the daemon stops within the drain timeout
/// whatever a worker does.
#[test]
fn a_draining_worker_that_never_finishes_is_ended() {
    let db = TestDb::new();
    let mut d = Daemon::clamsentry(db.path(), &[("limits", "drain-timeout = 3")]);
    let wedged = d.worker_of("uid=0");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(wedged), Signal::SIGSTOP).unwrap();
    // A reload replaces root's worker; the stopped one drains forever.
    d.signal(Signal::SIGHUP);
    assert!(
        process_gone(wedged, Duration::from_secs(120)),
        "the draining worker lives on:\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("worker did not finish draining within limits.drain-timeout"),
        "{}",
        d.log()
    );
    // Root is served by its new worker.
    assert_eq!(stream_reply(&d, b"clean"), "stream: OK\\0");
    // Stop with a wedged worker: the daemon still exits, 0.
    let wedged = d.worker_of("uid=0");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(wedged), Signal::SIGSTOP).unwrap();
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(120)),
        Some(0),
        "log:\n{}",
        d.log()
    );
    assert!(process_gone(wedged, Duration::from_secs(10)));
}

/// Clients that keep a stream trickling into each worker cannot pin old
/// engines in memory across reloads (the review's storm: 41 reloads, 31
/// workers, 4.5 GiB): at most two generations of workers live.
#[test]
fn trickling_streams_cannot_pin_old_engines() {
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("limits", "drain-timeout = 3600"),
            ("limits", "stream-min-rate = 0"),
            ("limits", "read-timeout = 3600"),
        ],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = |addr: common::client::Addr| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Reopened whenever the daemon ends it: a new stream lands on
            // the newest worker of its identity.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut c) = Conn::open(&addr) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if c.send(b"zINSTREAM\0").is_err() {
                    continue;
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && c.send(&[0, 0, 0, 1, b'x']).is_ok()
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
    };
    let threads = [trickle(d.unix_addr()), trickle(d.tcp_addr())];
    let mut most = 0;
    for round in 1..=5 {
        let before = count(&d.log(), "reload complete");
        d.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&d.log(), "reload complete") <= before {
            assert!(Instant::now() < deadline, "reload {round}:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the trickles move to the new workers.
        std::thread::sleep(Duration::from_millis(500));
        // Root's worker (Unix and loopback TCP: one local user), the
        // self-test's while it runs, and a standby, per generation; two
        // generations at most.
        let workers = d.workers().len();
        most = most.max(workers);
        assert!(
            workers <= 6,
            "round {round}: {workers} workers:\n{}",
            d.log()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let log = d.log();
    println!("at most {most} workers over 5 reloads with trickling streams");
    assert!(
        log.contains("ending a worker two reloads old"),
        "old workers were ended:\n{log}"
    );
    assert_eq!(d.zygotes().len(), 1);
}
