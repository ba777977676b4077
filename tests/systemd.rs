//! systemd and journald integration, with the real tools: socket activation
//! under `systemd-socket-activate`, the sd-notify messages on a datagram
//! socket of our own, a real journald in a private mount namespace, the
//! signature directory self-check, exit-when-idle, and the shipped units
//! under `systemd-analyze`.
//!
//! Tests that need a tool or root skip when it is missing and fail under CI
//! (`tests/common/require.rs`); CI (Debian 12, root, systemd installed)
//! runs them all.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::client::{instream, show, talk, Addr};
use common::daemons::{free_port, Daemon};

const T: Duration = Duration::from_secs(20);

/// One of systemd's programs.
fn tool(name: &str) -> Result<PathBuf, common::require::Missing> {
    common::require::program(name, "systemd")
}

fn scan_eicar(addr: &Addr) -> Vec<u8> {
    talk(addr, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], T).unwrap()
}

const EICAR_FOUND: &[u8] = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0";

/// Runs until `pred` holds, checking every 50 ms, failing after a generous
/// deadline (a deadline for hangs, not a performance threshold).
fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pred() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn socket_activation_serves_named_unix_and_tcp_sockets() {
    let activate = require!(tool("systemd-socket-activate"));
    let db = common::TestDb::new();
    // The configuration names other sockets: systemd's must win.
    let own = tempfile::tempdir().unwrap();
    let config_sock = own.path().join("from-config.sock");
    let config_tcp = format!("127.0.0.1:{}", free_port());
    let unix_line = format!("unix = {:?}", config_sock.display().to_string());
    let tcp_line = format!("tcp = [{config_tcp:?}]");
    let d = Daemon::launch(
        db.path(),
        &[("listen", &unix_line), ("listen", &tcp_line)],
        |l| {
            let mut c = Command::new(&activate);
            c.arg("-l")
                .arg(&l.unix)
                .arg("-l")
                .arg(l.tcp.to_string())
                .arg("--fdname=unix:tcp")
                .arg(&l.bin)
                .arg("--config")
                .arg(&l.config);
            c
        },
    );
    for addr in [d.unix_addr(), d.tcp_addr()] {
        assert_eq!(talk(&addr, &[b"zPING\0"], T).unwrap(), b"PONG\0");
        let got = scan_eicar(&addr);
        assert_eq!(got, EICAR_FOUND, "{addr:?}: {}", show(&got));
    }
    let log = d.log();
    assert!(
        log.contains(&format!(
            "listening on Unix socket {} from systemd (listener unix, Unix listener settings)",
            d.unix.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "listening on TCP {} from systemd (listener tcp, TCP listener settings)",
            d.tcp
        )),
        "{log}"
    );
    assert!(log.contains("sockets come from systemd"), "{log}");
    assert!(
        log.contains("listener=tcp"),
        "TCP connections are tagged: {log}"
    );
    assert!(
        !config_sock.exists(),
        "the configured socket must not be bound"
    );
    assert!(std::net::TcpStream::connect(&config_tcp).is_err());
}

#[test]
fn an_unexpected_activated_socket_is_an_error_that_names_it() {
    let activate = require!(tool("systemd-socket-activate"));
    let db = common::TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let config = common::daemons::write_config(
        dir.path(),
        db.path(),
        &dir.path().join("cfg.sock"),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        &[],
    );
    let child = Command::new(&activate)
        .arg("-l")
        .arg(&sock)
        .arg("--fdname=scanners")
        .arg(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the program on the first connection.
    eventually("the socket", || sock.exists());
    let _ = std::os::unix::net::UnixStream::connect(&sock);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("FileDescriptorName=scanners"), "{err}");
    assert!(err.contains("[service] sockets"), "says what to do: {err}");
}

/// Collects sd-notify datagrams on a socket the test owns.
struct NotifySocket {
    path: PathBuf,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        NotifySocket {
            path,
            rx,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a message with line `line`; returns its index in `seen`.
    fn wait_for(&mut self, line: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {line} in {:#?}", self.seen));
            self.seen.push(msg);
            if self.seen.last().unwrap().lines().any(|l| l == line) {
                return self.seen.len() - 1;
            }
        }
    }
}

#[test]
fn notify_messages_come_in_order() {
    let db = common::TestDb::new();
    let mut notify = NotifySocket::new();
    let socket = notify.path.clone();
    let mut d = Daemon::launch(db.path(), &[("database", "self-check = 0")], |l| {
        // WATCHDOG_PID must be the daemon's own pid: exec keeps the shell's.
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(&l.bin)
            .arg("--config")
            .arg(&l.config)
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "200000");
        c
    });
    let ready = notify.wait_for("READY=1");
    let watchdog = notify.wait_for("WATCHDOG=1");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1");
    let ready_again = notify.wait_for("READY=1");
    // A reload that fails still ends in READY=1, and the status says so.
    std::fs::write(db.path().join("broken.ndb"), "not a signature\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGUSR2);
    let failed_reload = notify.wait_for("RELOADING=1");
    let ready_after_failure = notify.wait_for("READY=1");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let stopping = notify.wait_for("STOPPING=1");
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0), "{}", d.log());

    let seen = &notify.seen;
    assert!(ready < watchdog && watchdog < reloading, "{seen:#?}");
    assert!(
        reloading < ready_again && ready_again < failed_reload,
        "{seen:#?}"
    );
    assert!(failed_reload < ready_after_failure && ready_after_failure < stopping);
    assert!(
        seen[ready_after_failure].contains("1 failed reloads"),
        "{seen:#?}"
    );
    let loading = seen
        .iter()
        .position(|m| m.contains("STATUS=Loading signatures"))
        .expect("a loading status");
    assert!(loading < ready, "{seen:#?}");
    assert!(
        seen[..ready]
            .iter()
            .any(|m| m.contains("EXTEND_TIMEOUT_USEC=")),
        "the start-up timeout is extended while loading: {seen:#?}"
    );
    assert!(
        seen[ready].contains("STATUS=Serving: 4 signatures"),
        "{seen:#?}"
    );
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:#?}");
    assert!(
        seen[ready_again].contains("1 reloads"),
        "status after the reload: {seen:#?}"
    );
    // WATCHDOG=1 only while serving: none between STOPPING and the end.
    assert!(
        !seen[stopping..].iter().any(|m| m.contains("WATCHDOG=1")),
        "{seen:#?}"
    );
}

/// One journal entry from `journalctl -o json`.
#[derive(Debug)]
struct Entry(serde_json::Map<String, serde_json::Value>);

impl Entry {
    /// The value of a field (the first one when journald holds several).
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Array(a) => a.first()?.as_str(),
            _ => None,
        }
    }

    /// The bytes of a field: journalctl shows a value that is not printable
    /// UTF-8 as an array of numbers (and several values as an array of
    /// those); the first value.
    fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        fn value(v: &serde_json::Value) -> Option<Vec<u8>> {
            match v {
                serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                serde_json::Value::Array(a) if a.iter().all(|n| n.is_u64()) => a
                    .iter()
                    .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect(),
                serde_json::Value::Array(a) => value(a.first()?),
                _ => None,
            }
        }
        value(self.0.get(key)?)
    }
}

/// The JSON journal entries of clamsentry, from a journal directory.
fn journal_entries(journalctl: &Path, dir: &Path) -> Vec<Entry> {
    let out = Command::new(journalctl)
        .arg("--directory")
        .arg(dir)
        .arg("-o")
        .arg("json")
        .arg("SYSLOG_IDENTIFIER=clamsentry")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok().map(Entry))
        .collect()
}

#[test]
fn journald_gets_structured_fields_of_a_found_scan() {
    require_root!("a private journald in a mount namespace");
    let journald = require!(tool("systemd-journald"));
    let journalctl = require!(tool("journalctl"));
    let unshare = require!(common::require::program("unshare", "util-linux"));
    let db = common::TestDb::new();
    let journal = tempfile::tempdir().unwrap();
    let script = journal.path().join("run.sh");
    std::fs::write(
        &script,
        r#"set -e
journal="$1"; journald="$2"; shift 2
mount -t tmpfs tmpfs /run
mkdir -p /var/log/journal
mount --bind "$journal/store" /var/log/journal
timeout 300 "$journald" &
while [ ! -S /run/systemd/journal/socket ]; do sleep 0.05; done
journalctl --flush
timeout 300 "$@" &
echo $! > "$journal/daemon.pid"
wait $! || true
kill %1 || true
wait || true
"#,
    )
    .unwrap();
    let store = journal.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // log.target is "auto" (the default): as under systemd, JOURNAL_STREAM
    // names the stream on stderr (here the daemon's log file), so clamsentry
    // picks journald.
    let mut d = Daemon::launch(db.path(), &[], |l| {
        use std::os::unix::fs::MetadataExt;
        let stderr = std::fs::metadata(l.dir.join("daemon.log")).unwrap();
        let mut c = Command::new(&unshare);
        c.args(["--mount", "--propagation", "private", "bash"])
            .arg(&script)
            .arg(journal.path())
            .arg(&journald)
            .arg(&l.bin)
            .arg("--config")
            .arg(&l.config)
            .env(
                "JOURNAL_STREAM",
                format!("{}:{}", stderr.dev(), stderr.ino()),
            );
        c
    });
    let got = scan_eicar(&d.tcp_addr());
    assert_eq!(got, EICAR_FOUND, "{}", show(&got));
    assert!(
        !d.log().contains("virus found"),
        "events go to journald, not stderr: {}",
        d.log()
    );

    let mut found = None;
    eventually("the FOUND entry in the journal", || {
        found = journal_entries(&journalctl, &store)
            .into_iter()
            .find(|e| e.get("SCAN_RESULT") == Some("found"));
        found.is_some()
    });
    let e = found.unwrap();
    assert_eq!(e.get("COMMAND"), Some("INSTREAM"), "{e:?}");
    assert_eq!(e.get("LISTENER"), Some("tcp"), "{e:?}");
    assert!(
        e.get("PEER").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{e:?}"
    );
    assert_eq!(
        e.get("VIRUS_NAME"),
        Some("Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        "{e:?}"
    );
    assert_eq!(e.get("BYTES"), Some("68"), "{e:?}");
    assert!(
        e.get("DURATION_MS")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{e:?}"
    );
    assert_eq!(e.get("PRIORITY"), Some("4"), "FOUND is a warning: {e:?}");
    assert_eq!(e.get("MESSAGE"), Some("virus found"), "{e:?}");
    // A worker's line, written by the supervisor and marked as the
    // worker's: SOURCE, WORKER and the worker's PID (the entry's own _PID is
    // the supervisor's); no field of the worker's was renamed.
    assert_eq!(e.get("SOURCE"), Some("worker"), "{e:?}");
    assert!(
        e.get("WORKER").is_some_and(|v| v.parse::<u64>().is_ok()),
        "{e:?}"
    );
    let worker_pid = e.get("PID").expect("PID");
    assert_ne!(e.get("_PID"), Some(worker_pid), "{e:?}");
    assert!(e.0.keys().all(|k| !k.starts_with("CHILD_")), "{e:?}");

    // Client-supplied bytes reach the journal exactly: a SCAN path with a
    // newline and a byte that is not UTF-8 (the stderr log shows them
    // escaped, tests/logs.rs), for a file that exists and one that does not.
    let dir = tempfile::Builder::new()
        .prefix("cs-journal")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name: &[u8] = b"evil\nFAKE: stream: Eicar FOUND\n\xff";
    std::fs::write(
        dir.path().join(std::ffi::OsStr::from_bytes(name)),
        common::eicar(),
    )
    .unwrap();
    let dir_bytes = dir.path().as_os_str().as_bytes();
    let infected = [dir_bytes, b"/", name].concat();
    let missing = [dir_bytes, b"/missing/", name].concat();
    for path in [&infected, &missing] {
        let got = talk(
            &d.unix_addr(),
            &[&[b"zSCAN ", &path[..], b"\0"].concat()],
            T,
        )
        .unwrap();
        assert!(got.starts_with(path), "{}", show(&got));
    }
    let (mut scanned, mut failed) = (None, None);
    eventually("the SCAN entries in the journal", || {
        let entries = journal_entries(&journalctl, &store);
        scanned = entries
            .iter()
            .find(|e| e.get("COMMAND") == Some("SCAN") && e.get("SCAN_RESULT") == Some("found"))
            .and_then(|e| e.bytes("SCAN_TARGET"));
        failed = entries
            .iter()
            .find(|e| e.get("MESSAGE") == Some("file path check failure"))
            .and_then(|e| e.bytes("PATH"));
        scanned.is_some() && failed.is_some()
    });
    assert_eq!(
        scanned.as_deref(),
        Some(&infected[..]),
        "{}",
        show(&infected)
    );
    assert_eq!(failed.as_deref(), Some(&missing[..]), "{}", show(&missing));

    // One local user (nobody) asks for a path only root may reach, 3,000
    // times: the journal gets at most log.peer-lines-per-minute refusal and
    // error lines about it a minute, and the count of the rest.
    let private = tempfile::Builder::new()
        .prefix("cs-journal-private")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = private.path().join("secret");
    std::fs::write(&secret, b"nothing").unwrap();
    let flood_began = Instant::now();
    let out = {
        use std::os::unix::process::CommandExt;
        Command::new("python3")
            .arg("-c")
            .arg(FLOODER)
            .arg(secret.as_os_str())
            .arg("3000")
            .arg(d.unix.as_os_str())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000");
    let flood_minutes = flood_began.elapsed().as_secs() / 60 + 2;

    // Stop the daemon inside the namespace; the script then stops journald.
    let pid: i32 = std::fs::read_to_string(journal.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait_exit(Duration::from_secs(60)).is_some());
    let entries = journal_entries(&journalctl, &store);
    assert!(
        entries.iter().any(|e| e
            .get("MESSAGE")
            .is_some_and(|m| m.starts_with("engine holder ready"))
            && e.get("SIGNATURES") == Some("4")),
        "lifecycle events carry their numbers"
    );
    let about_nobody: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.get("PEER")
                .is_some_and(|p| p.starts_with("unix uid=65534 "))
                || e.get("PEER_KEY") == Some("uid=65534")
        })
        .filter(|e| e.get("PRIORITY").is_some_and(|p| p <= "6"))
        .collect();
    let refused = about_nobody
        .iter()
        .filter(|e| e.get("MESSAGE") == Some("path refused; the client is told it does not exist"))
        .count();
    println!(
        "journald: 3,000 refused SCANs by one user: {} entries about it at info or above, {refused} \"path refused\"",
        about_nobody.len()
    );
    assert!(refused >= 1);
    assert!(
        about_nobody.len() as u64 <= 2 * 30 * flood_minutes,
        "{} entries",
        about_nobody.len()
    );
}

/// SCANs of one path, eight at a time in IDSESSIONs of 1,000 (as
/// tests/logs.rs's flood); prints how many were answered as missing.
const FLOODER: &str = r#"
import socket, sys
path, total = sys.argv[1].encode(), int(sys.argv[2])
missing = 0
sent = 0
while sent < total:
    n = min(1000, total - sent)
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
                raise SystemExit('closed')
            buf += data
        replies = buf.split(b'\0')
        buf = b'\0'.join(replies[k:])
        missing += sum(1 for r in replies[:k] if r.endswith(b'No such file or directory. ERROR'))
        done += k
    s.sendall(b'zEND\0')
    s.close()
    sent += n
print(missing)
"#;

#[test]
fn new_signature_files_are_loaded_without_a_signal() {
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("database", "self-check = 1")]);
    let body = b"clamsentry database watch marker one";
    let hashed = b"clamsentry database watch marker two";
    let scan =
        |data: &[u8]| talk(&d.tcp_addr(), &[&instream(b"zINSTREAM\0", data, 64)], T).unwrap();
    assert_eq!(scan(body), b"stream: OK\0");
    assert_eq!(scan(hashed), b"stream: OK\0");
    // What freshclam does: new files appear, several at once.
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.path().join("watch.ndb"),
        format!("Clamsentry.Test.Watch-1:0:*:{hex}\n"),
    )
    .unwrap();
    let md5 = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(hashed)?;
            c.wait_with_output()
        })
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout);
    let md5 = md5.split_whitespace().next().unwrap().to_string();
    std::fs::write(
        db.path().join("watch.hdb"),
        format!("{md5}:{}:Clamsentry.Test.WatchHash-1\n", hashed.len()),
    )
    .unwrap();
    eventually("the new signatures", || {
        scan(body) == b"stream: Clamsentry.Test.Watch-1.UNOFFICIAL FOUND\0"
    });
    assert_eq!(
        scan(hashed),
        b"stream: Clamsentry.Test.WatchHash-1.UNOFFICIAL FOUND\0"
    );
    let log = d.log();
    assert_eq!(
        log.matches("signature files changed").count(),
        1,
        "one reload for the burst: {log}"
    );
    assert_eq!(log.matches("reload complete").count(), 1, "{log}");
}

#[test]
fn exits_cleanly_when_idle() {
    let db = common::TestDb::new();
    let mut d = Daemon::clamsentry(db.path(), &[("service", "exit-when-idle = 1")]);
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0), "{}", d.log());
    let log = d.log();
    assert!(log.contains("service.exit-when-idle"), "{log}");
    assert!(!d.unix.exists(), "the socket it bound is removed");
}

/// The shipped units, with ExecStart pointing at the binary under test
/// (systemd-analyze checks that the program exists).
fn units_for_analysis() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let service = std::fs::read_to_string(root.join("clamsentry.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/clamsentry\n"));
    let service = service.replace(
        "ExecStart=/usr/bin/clamsentry",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_clamsentry")),
    );
    std::fs::write(dir.path().join("clamsentry.service"), service).unwrap();
    for unit in ["clamsentry.socket", "clamsentry-metrics.socket"] {
        std::fs::copy(root.join(unit), dir.path().join(unit)).unwrap();
    }
    dir
}

#[test]
fn shipped_units_verify_cleanly() {
    let analyze = require!(tool("systemd-analyze"));
    let dir = units_for_analysis();
    let out = Command::new(&analyze)
        .current_dir(dir.path())
        .args([
            "verify",
            "--man=no",
            "clamsentry.socket",
            "clamsentry-metrics.socket",
            "clamsentry.service",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("clamsentry"),
        "systemd-analyze verify has remarks: {text}"
    );
}

#[test]
fn shipped_service_exposure_is_at_most_2() {
    let analyze = require!(tool("systemd-analyze"));
    let dir = units_for_analysis();
    let out = Command::new(&analyze)
        .current_dir(dir.path())
        .args([
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            "clamsentry.service",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(none)");
    eprintln!("{score}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// READY=1 is in systemd's queue before the first PONG leaves the daemon:
/// an operator who sees PONG sees `systemctl is-active` say active. The
/// notify socket is read only after [`Daemon::launch`] got its PONG, without
/// waiting: the datagram must already be there.
#[test]
fn ready_reaches_systemd_before_the_first_reply() {
    let db = common::TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let d = Daemon::launch(db.path(), &[], |l| {
        let mut c = Command::new(&l.bin);
        c.arg("--config").arg(&l.config).env("NOTIFY_SOCKET", &path);
        c
    });
    sock.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "PONG came before READY=1; queued: {seen:#?}"
    );
    drop(d);
}
