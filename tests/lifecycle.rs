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
