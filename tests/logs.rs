//! Hostile bytes in the log: SCAN paths with newlines, ESC, bytes that are
//! not UTF-8 and bidi controls, against the real daemon logging to stderr.
//! Every line that mentions such a path shows it escaped, and no line
//! starts with text the client wrote (the journald side, with the exact
//! bytes, is in tests/systemd.rs).
//!
//! Attacks on the log itself: one local user flooding the supervisor with
//! refusals, and a compromised worker writing lines that look like the
//! supervisor's, flooding lines and claiming detections.

mod common;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use clamsentry::log::stderr::{parse_line, Parsed};
use common::client::{show, talk};
use common::daemons::Daemon;

const T: Duration = Duration::from_secs(20);

/// The path's last component: a forged FOUND line, then a forged line that
/// clears the terminal line, flips the text (U+202E) and ends with 0xff.
const EVIL: &[u8] =
    b"evil\nFAKE: stream: Win.Test.EICAR_HDB-1 FOUND\n\x1b[2K\xe2\x80\xaestopped\xff";
/// The same, escaped as the log must show it (written out by hand rather
/// than computed with `clamsentry::log::escape`).
const EVIL_ESCAPED: &str =
    "evil\\x0aFAKE: stream: Win.Test.EICAR_HDB-1 FOUND\\x0a\\x1b[2K\\xe2\\x80\\xaestopped\\xff";

/// The daemon's stderr as raw bytes (`Daemon::log` reads it as UTF-8).
fn raw_log(d: &Daemon) -> Vec<u8> {
    std::fs::read(d.dir.path().join("daemon.log")).unwrap_or_default()
}

fn eventually(what: &str, d: &Daemon, mut pred: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pred(&String::from_utf8_lossy(&raw_log(d))) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {what}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_bytes_in_scan_paths_cannot_forge_log_lines() {
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("log", "target = \"stderr\"")]);

    let dir = tempfile::Builder::new()
        .prefix("cs-logs")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let infected = dir.path().join(std::ffi::OsStr::from_bytes(EVIL));
    std::fs::write(&infected, common::eicar()).unwrap();
    std::fs::set_permissions(&infected, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir_text = dir.path().to_str().unwrap().to_string();

    // zSCAN: the path is every byte up to the NUL, newlines included.
    let path = [dir_text.as_bytes(), b"/", EVIL].concat();
    let got = talk(
        &d.unix_addr(),
        &[&[b"zSCAN ", &path[..], b"\0"].concat()],
        T,
    )
    .unwrap();
    let want = [&path[..], b": Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"].concat();
    assert_eq!(got, want, "{}", show(&got));

    // A missing file with the same name elsewhere: "file path check failure".
    let missing = [dir_text.as_bytes(), b"/missing/", EVIL].concat();
    let got = talk(
        &d.unix_addr(),
        &[&[b"zSCAN ", &missing[..], b"\0"].concat()],
        T,
    )
    .unwrap();
    assert!(got.ends_with(b"ERROR\0"), "{}", show(&got));

    // nSCAN: the newline ends the command, but ESC, BEL and 0xff go through.
    let got = talk(
        &d.unix_addr(),
        &[b"nSCAN /nonexistent/\x1b]0;pwned\x07\xff\n"],
        T,
    )
    .unwrap();
    assert!(got.ends_with(b"ERROR\n"), "{}", show(&got));

    let infected_escaped = format!("{dir_text}/{EVIL_ESCAPED}");
    let missing_escaped = format!("{dir_text}/missing/{EVIL_ESCAPED}");
    eventually("the three scans in the log", &d, |log| {
        log.contains("virus found")
            && log.contains(&missing_escaped)
            && log.contains("/nonexistent/\\x1b]0;pwned\\x07\\xff")
    });

    let raw = raw_log(&d);
    let log = String::from_utf8(raw.clone()).expect("the log is UTF-8");
    assert!(
        !raw.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "the log holds a raw control byte:\n{log}"
    );
    assert!(
        !log.contains('\u{202e}'),
        "the log holds a raw U+202E:\n{log}"
    );
    let mut mentions = 0;
    for line in log.lines() {
        // Every line is one of ours: it starts with the timestamp.
        assert!(
            line.len() > 20 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit),
            "a line that is not the daemon's: {line:?}"
        );
        assert!(
            !line.starts_with("FAKE") && !line.contains("\u{1b}") && !line.starts_with("stopped"),
            "{line:?}"
        );
        if line.contains("FAKE: stream") {
            mentions += 1;
            assert!(
                line.contains(&infected_escaped) || line.contains(&missing_escaped),
                "a line mentions the path without showing it escaped: {line:?}"
            );
        }
    }
    let found = log
        .lines()
        .find(|l| l.contains("virus found"))
        .expect("a FOUND line");
    assert!(
        found.contains(&format!("scan_target=\"{infected_escaped}\"")),
        "{found}"
    );
    assert!(
        found.contains("virus_name=Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        "{found}"
    );
    let failure = log
        .lines()
        .find(|l| l.contains("file path check failure") && l.contains("FAKE"))
        .expect("a path check failure line");
    assert!(
        failure.contains(&format!("path=\"{missing_escaped}\"")),
        "{failure}"
    );
    assert!(mentions >= 2, "{log}");
}

// ------------------------------------------------------------ attacks on the log

const NOBODY: u32 = 65534;

/// Runs a Python program as nobody, with `fds` placed at 3, 4, ….
fn python_as_nobody(script: &str, args: &[String], fds: &[RawFd]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    c.uid(NOBODY).gid(NOBODY);
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only dup2, which is async-signal-safe;
    // nothing is allocated.
    unsafe {
        c.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c
}

/// The daemon's log lines from byte `from` on, parsed (every line must
/// parse: a line that does not is a forged or broken one).
fn parsed_lines(d: &Daemon, from: usize) -> Vec<Parsed> {
    let raw = raw_log(d);
    let text = String::from_utf8(raw[from.min(raw.len())..].to_vec()).expect("the log is UTF-8");
    text.lines()
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("a log line that does not parse: {l:?}")))
        .collect()
}

/// The same lines with their length in bytes (with the newline).
fn sized_lines(d: &Daemon, from: usize) -> Vec<(usize, Parsed)> {
    let raw = raw_log(d);
    let text = String::from_utf8(raw[from.min(raw.len())..].to_vec()).expect("the log is UTF-8");
    text.lines()
        .map(|l| (l.len() + 1, parse_line(l).unwrap()))
        .collect()
}

fn field<'a>(p: &'a Parsed, name: &str) -> Option<&'a str> {
    p.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Does this line concern client uid `uid` (its peer, or its budget key)?
fn about_uid(p: &Parsed, uid: u32) -> bool {
    field(p, "peer").is_some_and(|v| v.starts_with(&format!("unix uid={uid} ")))
        || field(p, "peer_key") == Some(&format!("uid={uid}"))
}

/// How many budget windows (minutes) a run of `elapsed` can touch.
fn windows(elapsed: Duration) -> u64 {
    elapsed.as_secs() / 60 + 2
}

/// SCANs of paths it cannot read, as one local user (nobody), in
/// IDSESSIONs of 5,000 commands, eight at a time (more would fill the scan
/// queue: "Scan queue full" is the answer clamd gives too); prints how many
/// answers were "missing".
const FLOODER: &str = r#"
import socket, sys
path, total = sys.argv[1].encode(), int(sys.argv[2])
missing = 0
others = []
sent = 0
while sent < total:
    n = min(5000, total - sent)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[3])
    s.sendall(b'zIDSESSION\0')
    buf = b''
    done = 0
    while done < n:
        k = min(8, n - done)
        s.sendall((b'zSCAN ' + path + b'\0') * k)
        while buf.count(b'\0') < k:
            data = s.recv(1 << 16)
            if not data:
                raise SystemExit('closed after %d' % (sent + done))
            buf += data
        replies = buf.split(b'\0')
        buf = b'\0'.join(replies[k:])
        for r in replies[:k]:
            if r.endswith(b'File path check failure: No such file or directory. ERROR'):
                missing += 1
            else:
                others.append(r)
        done += k
    s.sendall(b'zEND\0')
    s.close()
    sent += n
if others:
    sys.stderr.write('%d other replies, first: %r\n' % (len(others), others[:3]))
print(missing)
"#;

/// Attack 5 of the second outside review: one unprivileged local user
/// made the root supervisor write 40–70 MB/s of "path refused" lines
/// (clamd 1.4.6 writes 68 lines for 37,000 such SCANs). Now every line
/// about that user, the broker's and its workers', shares one budget of
/// `log.peer-lines-per-minute` lines and `log.peer-bytes-per-minute`
/// bytes a minute; the rest are counted. The paths are as long as a
/// command may carry (about 3,850 bytes, half of them ESC, which the log shows
/// as `\x1b`: about 9.5 KB a line), so the bytes run out before the lines (an
/// attacker review: a budget of lines let long lines write more). An
/// honest client (root) scanning at the same time gets its answers and its
/// FOUND lines.
#[test]
fn one_local_user_flooding_unreadable_paths_gets_a_bounded_log() {
    require_root!("needs root (a client running as nobody, a directory only root may enter)");
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[("log", "target = \"stderr\""), ("log", "level = \"info\"")],
    );
    // A file nobody may not reach, and an infected one root scans.
    let private = tempfile::Builder::new()
        .prefix("cs-flood")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = private.path().join("secret");
    std::fs::write(&secret, b"nothing").unwrap();
    let infected = private.path().join("infected");
    std::fs::write(&infected, common::eicar()).unwrap();
    // Inside the directory nobody may not enter: it is refused there.
    let long = (0..19).fold(secret.clone(), |p, _| p.join("a\x1b".repeat(100)));
    assert!(long.as_os_str().len() < 4096, "a path SCAN can carry");

    let start = raw_log(&d).len();
    let began = Instant::now();
    const SCANS: usize = 37_000;
    let flooder = python_as_nobody(
        FLOODER,
        &[
            long.display().to_string(),
            SCANS.to_string(),
            d.unix.display().to_string(),
        ],
        &[],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // The honest client, meanwhile.
    let mut honest = 0;
    let want = format!(
        "{}: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0",
        infected.display()
    );
    for _ in 0..20 {
        let cmd = format!("zSCAN {}\0", infected.display());
        let got = talk(&d.unix_addr(), &[cmd.as_bytes()], T).unwrap();
        assert_eq!(show(&got), show(want.as_bytes()));
        honest += 1;
    }
    let out = flooder.wait_with_output().unwrap();
    let flood_time = began.elapsed();
    assert!(out.status.success());
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let missing: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(missing, SCANS, "every SCAN answered as a missing file");
    println!("the flood took {:.1} s", flood_time.as_secs_f64());

    // The honest client's detections are all there, each once.
    let found_of_root = |lines: &[Parsed]| {
        lines
            .iter()
            .filter(|p| field(p, "scan_result") == Some("found") && about_uid(p, 0))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while found_of_root(&parsed_lines(&d, start)) < honest {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // What was not written is reported once the user's minute is over,
    // although it sent nothing since: one line with the count.
    let reported = |lines: &[Parsed]| -> u64 {
        lines
            .iter()
            .filter(|p| field(p, "peer_key") == Some("uid=65534"))
            .filter_map(|p| field(p, "suppressed")?.parse::<u64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while reported(&parsed_lines(&d, start)) == 0 {
        assert!(
            Instant::now() < deadline,
            "no suppressed count:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = began.elapsed();
    let lines = parsed_lines(&d, start);
    let bytes = raw_log(&d).len() - start;
    let about_nobody = lines.iter().filter(|p| about_uid(p, NOBODY)).count();
    let refused = lines
        .iter()
        .filter(|p| p.message == b"path refused; the client is told it does not exist")
        .count();
    let suppressed = reported(&lines);
    println!(
        "{SCANS} SCANs of an unreadable path by one user: {} log lines in {:.0} s ({about_nobody} about that user, {refused} \"path refused\"), {bytes} bytes; {suppressed} lines reported suppressed; clamd 1.4.6: 68 lines",
        lines.len(),
        elapsed.as_secs_f64(),
    );
    // The bytes about that user, but for the summaries (one a minute),
    // stay within log.peer-bytes-per-minute (32 KiB) a minute.
    let budgeted_bytes: usize = sized_lines(&d, start)
        .iter()
        .filter(|(_, p)| about_uid(p, NOBODY))
        .filter(|(_, p)| !String::from_utf8_lossy(&p.message).contains("not written"))
        .map(|(n, _)| n)
        .sum();
    let byte_budget = (32 << 10) * windows(elapsed) as usize;
    println!(
        "{budgeted_bytes} bytes of lines about that user, budget {byte_budget} ({} windows)",
        windows(elapsed)
    );
    assert!(
        budgeted_bytes <= byte_budget,
        "{budgeted_bytes} bytes about one user; budget {byte_budget}:\n{}",
        d.log()
    );
    let budget = 30 * windows(elapsed) as usize;
    assert!(refused >= 1, "the refusals are logged, within the budget");
    // The budget's lines, plus as many summaries ("not written: N").
    assert!(
        about_nobody <= 2 * budget,
        "{about_nobody} lines about one user; budget {budget}:\n{}",
        d.log()
    );
    // At least the broker's refusal of each SCAN is written or counted
    // (the workers count their "file path check failure" lines beyond
    // their own budgets themselves, and send only the ones they write).
    assert!(
        suppressed as usize + about_nobody >= SCANS,
        "{suppressed} suppressed"
    );
    assert_eq!(found_of_root(&lines), honest, "{}", d.log());
}

/// Inodes of SEQPACKET Unix sockets (type 0005 in /proc/net/unix).
fn seqpacket_inodes() -> Vec<String> {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"0005")).then(|| f.get(6).unwrap_or(&"").to_string())
        })
        .collect()
}

/// Copies descriptor `fd` of process `pid` into this one (root may).
fn steal(pid: i32, fd: RawFd) -> OwnedFd {
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty()).unwrap()
}

/// A worker's log channel (its third SEQPACKET socket: control, broker and
/// log come in one message, in that order) and its stderr, copied.
fn worker_log_ends(worker: i32) -> (OwnedFd, OwnedFd) {
    let inodes = seqpacket_inodes();
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_string_lossy();
            let ino = t.strip_prefix("socket:[")?.strip_suffix(']')?;
            inodes.iter().any(|i| i == ino).then_some(n)
        })
        .collect();
    fds.sort_unstable();
    assert_eq!(fds.len(), 3, "control, broker and log channels: {fds:?}");
    let stderr = std::fs::read_link(format!("/proc/{worker}/fd/2")).unwrap();
    assert!(
        stderr.to_string_lossy().starts_with("pipe:"),
        "a worker's stderr is its own pipe to the supervisor, not {}",
        stderr.display()
    );
    (steal(worker, fds[2]), steal(worker, 2))
}

/// What a compromised worker writes: records that look like the
/// supervisor's lines, raw bytes to its stderr, floods of lines and of
/// claimed detections, then a record that does not decode.
const FORGER: &str = r#"
import socket, struct, sys, os
log = socket.socket(fileno=3)
log.setblocking(True)
err = 4
phase, flood, claims = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def b(v):
    return struct.pack('<I', len(v)) + v

def record(message, fields, level=3):
    out = bytes([1, level, 0]) + struct.pack('<I', 0) + b(b'clamsentry::supervisor') + b(b'') + struct.pack('<I', 0) + b(message)
    out += bytes([len(fields)])
    for name, value in fields:
        out += bytes([len(name)]) + name + b(value)
    return out

fake_time = b'2026-01-01T00:00:00.000000Z  INFO '
if phase == 'forge':
  log.send(record(b'path refused; the client is told it does not exist',
    [(b'source', b'supervisor'), (b'pid', b'1'), (b'worker', b'0'),
     (b'peer', b'unix uid=0 pid=1'),
     (b'path', b'/etc/shadow\n' + fake_time + b'administrative command accepted id=1 command=SHUTDOWN')]))
  log.send(record(b'administrative command accepted', [(b'command', b'SHUTDOWN')], level=3))
  log.send(record(fake_time + b'administrative command accepted command=SHUTDOWN', []))
  os.write(err, fake_time + b'administrative command accepted id=1 peer="unix uid=0" command=SHUTDOWN\n\x1b[2J\xff\n')
else:
  for i in range(flood):
    log.send(record(b'forged flood line %d' % i, [(b'source', b'supervisor')], level=2))
  for i in range(claims):
    log.send(record(b'virus found', [(b'scan_result', b'found'), (b'virus_name', b'Claimed-%d' % i)], level=2))
  log.send(b'\x01\x09')
print(os.getpid())
"#;

/// Attack 10 of the second outside review: a compromised worker wrote
/// lines that looked like the supervisor's, because workers shared the
/// daemon's stderr. Now a worker holds neither the daemon's stderr nor a
/// journald socket: its records and its raw stderr bytes reach the log
/// only through the supervisor, marked `source=worker worker=N pid=P` (the
/// pid the kernel reports for the sender), whatever fields or bytes they
/// hold; its lines are budgeted like a client's; a record that does not
/// decode ends it.
#[test]
fn a_compromised_worker_cannot_write_lines_that_look_like_the_supervisors() {
    require_root!("needs root (pidfd_getfd on the daemon's worker)");
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("log", "target = \"stderr\""),
            ("log", "level = \"info\""),
            ("log", "result-lines-per-minute = 200"),
            ("limits", "standby-workers = 2"),
        ],
    );
    let pid = d.worker();
    let start = raw_log(&d).len();
    let (log, stderr) = worker_log_ends(pid);
    // Only the attacker uses them now.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    const FLOOD: usize = 3000;
    const CLAIMS: usize = 1000;
    let run = |phase: &str| {
        let out = python_as_nobody(
            FORGER,
            &[phase.to_string(), FLOOD.to_string(), CLAIMS.to_string()],
            &[log.as_raw_fd(), stderr.as_raw_fd()],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Lines that look like the supervisor's, on both ends.
    let sender = run("forge");
    eventually("the stderr bytes relayed", &d, |log| {
        log.matches("via=stderr").count() == 2
    });
    // Floods, then a record that does not decode.
    let began = Instant::now();
    let flooder = run("flood");
    let elapsed = began.elapsed();
    drop((log, stderr));

    // The record that does not decode ends the worker; the daemon serves on.
    eventually("the worker ended for its log record", &d, |log| {
        log.contains("worker broke the protocol") && log.contains("log record")
    });
    let got = talk(&d.unix_addr(), &[&b"zPING\0"[..]], T).unwrap();
    assert_eq!(got, b"PONG\0", "{}", d.log());

    let lines = parsed_lines(&d, start);
    // The attacked worker: the one whose channel the sender used (other
    // workers, standby ones included, may log first).
    let worker_id = lines
        .iter()
        .find(|p| field(p, "source") == Some("worker") && field(p, "pid") == Some(sender.as_str()))
        .and_then(|p| field(p, "worker"))
        .expect("a line of the worker")
        .to_string();
    let mut forged = 0;
    for p in &lines {
        let text = String::from_utf8_lossy(&p.message);
        let looks_like_ours = text.contains("path refused")
            || text.contains("administrative command accepted")
            || text.contains("forged flood")
            || text == "virus found";
        if !looks_like_ours {
            continue;
        }
        forged += 1;
        // Marked: the first fields are the supervisor's marks.
        assert_eq!(p.fields[0].0, "source", "{p:?}");
        assert_eq!(field(p, "source"), Some("worker"), "{p:?}");
        assert_eq!(field(p, "worker"), Some(worker_id.as_str()), "{p:?}");
        if field(p, "via") != Some("stderr") {
            // The kernel's word for who sent it, not the record's.
            let pid = field(p, "pid");
            assert!(
                pid == Some(sender.as_str()) || pid == Some(flooder.as_str()),
                "{p:?}"
            );
        }
        assert_eq!(p.fields.iter().filter(|(n, _)| n == "source").count(), 1);
    }
    assert!(forged > 0);
    if std::env::var_os("SHOW_LOG").is_some() {
        println!("{}", d.log());
    }
    let fake = lines
        .iter()
        .find(|p| field(p, "child_source") == Some("supervisor") && p.get("path").is_some())
        .expect("the first forged record");
    assert!(fake.get("path").unwrap().starts_with(b"/etc/shadow\n2026-"));
    assert_eq!(field(fake, "child_pid"), Some("1"));
    let raw: Vec<&Parsed> = lines
        .iter()
        .filter(|p| field(p, "via") == Some("stderr"))
        .collect();
    assert!(
        raw.iter().any(|p| p
            .message
            .starts_with(b"2026-01-01T00:00:00.000000Z  INFO administrative")),
        "{raw:?}"
    );
    assert!(raw.iter().any(|p| p.message == b"\x1b[2J\xff"), "{raw:?}");
    // Nothing the worker wrote is a line of its own: every line parses,
    // and no line without the marks claims to accept a SHUTDOWN.
    assert!(!lines.iter().any(|p| field(p, "source").is_none()
        && String::from_utf8_lossy(&p.message).contains("administrative")));

    // Budgets: its lines that name no connection of a client get the
    // worker's own budget (log.peer-lines-per-minute: 30), claimed
    // detections log.result-lines-per-minute (200 here).
    let flood = lines
        .iter()
        .filter(|p| p.message.starts_with(b"forged flood"))
        .count();
    let claims = lines.iter().filter(|p| p.message == b"virus found").count();
    let w = windows(elapsed) as usize;
    println!(
        "a worker's {FLOOD} forged lines: {flood} written; {CLAIMS} claimed detections: {claims} written"
    );
    assert!(flood >= 1 && flood <= 30 * w, "{flood}");
    assert!(claims >= 1 && claims <= 200 * w, "{claims}");
    // What was not written is counted once the channel ends.
    eventually("the suppressed count", &d, |log| {
        log.lines().any(|l| {
            parse_line(l).is_some_and(|p| {
                p.message
                    .starts_with(b"log lines of this process not written")
                    && field(&p, "child") == Some(&format!("worker {worker_id}"))
                    && field(&p, "suppressed").and_then(|s| s.parse::<usize>().ok())
                        >= Some(FLOOD + CLAIMS - flood - claims - 5)
            })
        })
    });
}

/// Attack (an outside review, "detection line budget bypass via rotating
/// /24s"): each /24 has a budget of its own, so 256 /24s wrote 256
/// budgets' worth. Every TCP client's lines are also charged to one budget
/// for all TCP clients (`log.tcp-peer-bytes-per-minute`, 16 KiB here),
/// while a local user keeps its own: its refusals still appear. In a
/// network namespace of the test's own (all of loopback is one client).
#[test]
fn many_slash_24s_share_one_log_budget_and_local_users_keep_theirs() {
    require_root!("it makes a network namespace, and a client runs as nobody");
    require!(common::require::program("ip", "iproute2"));
    let _lab = common::netns::Lab::enter("cs-logs-tcp");
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("log", "target = \"stderr\""),
            ("log", "level = \"info\""),
            ("log", "tcp-peer-bytes-per-minute = \"16K\""),
            common::netns::ALLOW,
        ],
    );
    let start = raw_log(&d).len();
    let began = Instant::now();
    // 256 /24s of 10.1.0.0/16, five refused SCANs each (SCAN is not
    // allowed over TCP): 1,280 "command refused" lines, each within its
    // own /24's budget (30 lines, 32 KiB). The connections stay open until
    // the lines are counted, so every line is charged to its client.
    let mut held = Vec::new();
    for net in 0..=255u8 {
        let from = std::net::IpAddr::from([10, 1, net, 1]);
        let mut s = common::client::connect_from(from, d.tcp).unwrap();
        let mut req = b"zIDSESSION\0".to_vec();
        for _ in 0..5 {
            req.extend_from_slice(b"zSCAN /etc/hostname\0");
        }
        std::io::Write::write_all(&mut s, &req).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.iter().filter(|&&b| b == 0).count() < 5 {
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            assert!(n > 0, "closed after {}", show(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            show(&got)
                .matches("SCAN command not allowed on this listener. ERROR")
                .count(),
            5
        );
        held.push(s);
    }
    // The local user, after the flood: three refused RELOADs (it is not an
    // administrator).
    let script = "import socket, sys\n\
                  for _ in range(3):\n\
                  \x20   s = socket.socket(socket.AF_UNIX)\n\
                  \x20   s.connect(sys.argv[1])\n\
                  \x20   s.sendall(b'zRELOAD\\0')\n\
                  \x20   s.recv(1000)\n\
                  \x20   s.close()\n";
    let out = python_as_nobody(script, &[d.unix.display().to_string()], &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let of_nobody = |lines: &[(usize, Parsed)]| {
        lines
            .iter()
            .filter(|(_, p)| p.message == b"command refused" && about_uid(p, NOBODY))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while of_nobody(&sized_lines(&d, start)) < 3 {
        assert!(
            Instant::now() < deadline,
            "the local user's refusals are written:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = began.elapsed();
    let lines = sized_lines(&d, start);
    let tcp: Vec<&(usize, Parsed)> = lines
        .iter()
        .filter(|(_, p)| field(p, "peer").is_some_and(|v| v.starts_with("10.1.")))
        .collect();
    let refusals = tcp
        .iter()
        .filter(|(_, p)| p.message == b"command refused")
        .count();
    let bytes: usize = tcp
        .iter()
        .filter(|(_, p)| !String::from_utf8_lossy(&p.message).contains("not written"))
        .map(|(n, _)| n)
        .sum();
    let budget = (16 << 10) * windows(elapsed) as usize;
    println!(
        "256 /24s x 5 refusals: {refusals} of 1280 \"command refused\" lines written, {bytes} bytes (budget {budget}, {} windows); the local user's 3 refusals: {}",
        windows(elapsed),
        of_nobody(&lines)
    );
    assert!(
        refusals >= 1,
        "the network's refusals are logged, within the budget"
    );
    assert!(
        bytes <= budget,
        "{bytes} bytes about TCP clients; budget {budget}:\n{}",
        d.log()
    );
    drop(held);
}
