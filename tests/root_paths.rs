//! Root never acts by path where someone else can write (issue 17,
//! property 1). A local user who may write a directory where the root
//! supervisor makes something plays the attacker for real, as nobody:
//!
//! - swaps the fresh Unix socket for a symlink to a root-owned 0600 file
//!   with `renameat2(RENAME_EXCHANGE)` in a tight loop, while the binding
//!   code runs 2,000 times (the library function) and while the daemon
//!   starts 20 times (the same racer against the old way, bind then chmod
//!   by path, is a measurement run by hand: `--ignored`);
//! - puts a FIFO, a file of theirs, a symlink, a directory or a device at
//!   the PID file's path: the start fails at once, with the error, and the
//!   object is unchanged; a PID file of the daemon's own is replaced;
//! - owns or may write the temporary directory's base (refused), or races
//!   every entry of a sticky base (nothing moves); a worker's directory
//!   full of links to root's files and a deep tree is removed without
//!   touching what the links name.
//!
//! Honest behaviour beside it: the socket, whenever it is made, has exactly
//! the configured mode, owner and group, and the daemon serves.
//!
//! Needs root (the racer is another user, and the socket is given away);
//! without it each test says SKIPPED.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{instream, show, talk, Addr};
use common::daemons::{die_with_parent, free_port, write_config};
use common::TestDb;

use clamsentry::socket_setup::SocketSpec;
use clamsentry::supervisor::runtime_files;

const NOBODY: u32 = 65534;
const BIN: &str = env!("CARGO_BIN_EXE_clamsentry");

fn clamav_gid() -> u32 {
    nix::unistd::Group::from_name("clamav")
        .unwrap()
        .expect("group clamav (package clamav-base)")
        .gid
        .as_raw()
}

/// A root-owned scratch directory others may traverse.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("cs-rootpaths")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory owned by nobody (the attacker) with `mode`.
fn nobodys_dir(path: &Path, mode: u32) {
    std::fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root-owned 0600 file (the test's own, never /etc/shadow) whose mode,
/// owner, content and link count must never change.
struct Victim {
    path: PathBuf,
    before: (u32, u32, u32, u64, u64, Vec<u8>),
}

impl Victim {
    fn new(path: PathBuf) -> Victim {
        std::fs::write(&path, b"root's secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = Victim::state(&path);
        Victim { path, before }
    }

    fn state(path: &Path) -> (u32, u32, u32, u64, u64, Vec<u8>) {
        let m = std::fs::symlink_metadata(path).unwrap();
        (
            m.mode(),
            m.uid(),
            m.gid(),
            m.ino(),
            m.nlink(),
            std::fs::read(path).unwrap(),
        )
    }

    fn assert_unchanged(&self, when: &str) {
        let now = Victim::state(&self.path);
        assert_eq!(
            now, self.before,
            "{when}: root's file was changed (mode, uid, gid, inode, links, content)"
        );
    }
}

/// Python run as nobody, stdout piped.
fn python_as_nobody(script: &str, args: &[&str]) -> Child {
    python_as(NOBODY, NOBODY, script, args)
}

/// Python run as `uid`/`gid`, stdout piped.
fn python_as(uid: u32, gid: u32, script: &str, args: &[&str]) -> Child {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    c.uid(uid).gid(gid);
    die_with_parent(&mut c)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// A local attacker, as nobody, until stopped: it prints `ready` once set
/// up, a word when its attack first lands on something of the daemon's,
/// and, when told to stop (SIGTERM), what it counted. Its lines are read by
/// a thread, so that the test can ask without waiting.
struct Attacker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    heard: Vec<String>,
}

impl Attacker {
    fn start(script: &str, args: &[&str]) -> Attacker {
        let mut child = python_as_nobody(script, args);
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60));
        assert_eq!(first.as_deref(), Ok("ready"), "the attacker did not start");
        Attacker {
            child,
            lines,
            heard: Vec::new(),
        }
    }

    /// Whether it has said `word` so far.
    fn said(&mut self, word: &str) -> bool {
        self.heard.extend(self.lines.try_iter());
        self.heard.iter().any(|l| l == word)
    }

    /// Stops it and returns its last line.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.heard.push(line);
        }
        let _ = self.child.wait();
        self.heard.last().cloned().unwrap_or_default()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exchanges `dir/a` and `dir/b` (renameat2 RENAME_EXCHANGE: atomic) in a
/// tight loop; `dir/b` is a symlink to the victim it makes first. Counts
/// the exchanges that happened.
const SWAPPER: &str = r#"
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
d, a, b, target = sys.argv[1:5]
os.symlink(target, os.path.join(d, b))
a, b = os.path.join(d, a).encode(), os.path.join(d, b).encode()
n = 0
def stop(*_):
    sys.stdout.write('%d\n' % n); sys.stdout.flush(); os._exit(0)
signal.signal(signal.SIGTERM, stop)
print('ready', flush=True)
for _ in range(200000000):
    if libc.renameat2(-100, a, -100, b, 2) == 0:
        n += 1
        if n == 1:
            print('swapped', flush=True)
stop()
"#;

/// Every socket file in `dir` has exactly `mode`, `uid` and `gid`.
fn assert_sockets_are(dir: &Path, mode: u32, uid: u32, gid: u32) -> usize {
    let mut seen = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.file_type().is_socket() {
            seen += 1;
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (mode, uid, gid),
                "{} has the wrong mode or owner",
                e.path().display()
            );
        }
    }
    seen
}

/// A measurement, not a check (run by hand with `--ignored`): the same
/// racer against the old way (bind as root, then chmod by path), 10 rounds
/// of up to 20,000 binds; prints in how many rounds, and after how many
/// binds, it made root's file 0666. Whether the racer's exchange lands in
/// that window depends on scheduling, so CI does not count on it; the
/// checks above count the racer's exchanges instead.
#[test]
#[ignore = "timing-dependent measurement of the old way; run by hand"]
fn the_old_way_loses_to_the_racer() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let mut won_after = Vec::new();
    for _ in 0..10 {
        let base = scratch();
        let race = base.path().join("race");
        nobodys_dir(&race, 0o755);
        let victim = Victim::new(base.path().join("victim"));
        let sock = race.join("clamd.sock");
        let racer = Attacker::start(
            SWAPPER,
            &[
                race.to_str().unwrap(),
                "clamd.sock",
                "link",
                victim.path.to_str().unwrap(),
            ],
        );
        let mut tries = 0;
        let mut won = false;
        while tries < 20_000 && !won {
            tries += 1;
            // The old start: remove a stale socket at the name (lstat: only
            // a socket), bind, chmod by path.
            if std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&sock);
            }
            if let Ok(l) = std::os::unix::net::UnixListener::bind(&sock) {
                let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666));
                drop(l);
            }
            won = std::fs::metadata(&victim.path).unwrap().mode() & 0o777 == 0o666;
        }
        racer.stop();
        if won {
            won_after.push(tries);
        }
    }
    eprintln!(
        "old way: the racer made root's file 0666 in {} of 10 rounds, after {won_after:?} binds",
        won_after.len()
    );
}

/// The library function, 2,000 times, with the racer running: root's file
/// never changes, and every socket made has exactly the configured mode,
/// owner and group — as root (no `listen.unix-owner`) with group clamav,
/// and as another owner (daemon) in a directory it may write.
#[test]
fn a_racing_user_never_redirects_the_socket_file() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let clamav = clamav_gid();
    for (owner, dir_mode, runs) in [(0u32, 0o755, 2_000), (1, 0o777, 500)] {
        let base = scratch();
        let race = base.path().join("race");
        nobodys_dir(&race, dir_mode);
        let victim = Victim::new(base.path().join("victim"));
        let sock = race.join("clamd.sock");
        let spec = SocketSpec {
            mode: 0o666,
            uid: owner,
            gid: clamav,
            groups: vec![clamav],
            backlog: 16,
        };
        let mut racer = Attacker::start(
            SWAPPER,
            &[
                race.to_str().unwrap(),
                "clamd.sock",
                "link",
                victim.path.to_str().unwrap(),
            ],
        );
        let (mut made, mut refused, mut sockets) = (0, 0, 0);
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        // At least `runs` binds, and on until the racer has exchanged one of
        // our sockets at least once (a busy machine may not run it at first).
        let mut binds = 0;
        while binds < runs || !racer.said("swapped") {
            binds += 1;
            assert!(binds <= 200 * runs, "the racer never exchanged a socket");
            match runtime_files::bind_unix(&sock, &spec) {
                Ok(bound) => {
                    made += 1;
                    sockets += assert_sockets_are(&race, 0o666, owner, clamav);
                    drop(bound.listener);
                    runtime_files::remove_at_exit(&bound.made, "Unix socket");
                }
                Err(e) => {
                    refused += 1;
                    let text = e.to_string();
                    let reason = text
                        .split(": ")
                        .nth(1)
                        .unwrap_or(&text)
                        .split(" (")
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    *reasons.entry(reason).or_default() += 1;
                    assert!(text.contains("(listen.unix)"), "{text}");
                }
            }
            victim.assert_unchanged("during the race");
            assert_sockets_are(&race, 0o666, owner, clamav);
        }
        let swaps: u64 = racer.stop().parse().unwrap();
        victim.assert_unchanged("after the race");
        eprintln!(
            "owner uid {owner}: {made} of {binds} binds made the socket, {refused} stopped ({reasons:?}); {sockets} socket files checked; {swaps} exchanges by the racer"
        );
        assert!(made > 0, "no bind succeeded: {reasons:?}");
        assert!(swaps > 0, "the racer never exchanged anything");
    }
}

/// Waits until the daemon answers PING over TCP (true) or exits (false).
fn served_or_exited(child: &mut Child, tcp: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if talk(&Addr::Tcp(tcp), &[b"zPING\0"], Duration::from_secs(2))
            .ok()
            .as_deref()
            == Some(b"PONG\0")
        {
            return true;
        }
        assert!(Instant::now() < deadline, "neither served nor exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) -> Option<i32> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    die_with_parent(Command::new(BIN).arg("--config").arg(config))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The real daemon, started 20 times while the racer runs: root's file
/// never changes; each start either serves with a socket of exactly the
/// configured mode and group, or stops with an error.
#[test]
fn daemon_starts_under_the_racer_never_redirect_the_socket_file() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let clamav = clamav_gid();
    let db = TestDb::new();
    let base = scratch();
    let race = base.path().join("race");
    nobodys_dir(&race, 0o755);
    let victim = Victim::new(base.path().join("victim"));
    let sock = race.join("clamd.sock");
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(
        base.path(),
        db.path(),
        &sock,
        tcp,
        &[
            ("listen", "unix-group = \"clamav\""),
            ("log", "level = \"info\""),
        ],
    );
    let racer = Attacker::start(
        SWAPPER,
        &[
            race.to_str().unwrap(),
            "clamd.sock",
            "link",
            victim.path.to_str().unwrap(),
        ],
    );
    let (mut served, mut failed) = (0, 0);
    let log = base.path().join("daemon.log");
    for _ in 0..20 {
        let mut child = start_daemon(&config, &log);
        if served_or_exited(&mut child, tcp) {
            served += 1;
            assert_sockets_are(&race, 0o666, 0, clamav);
            assert_eq!(
                stop(&mut child),
                Some(0),
                "{}",
                std::fs::read_to_string(&log).unwrap()
            );
        } else {
            failed += 1;
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains("(listen.unix)"), "{text}");
        }
        victim.assert_unchanged("after a start");
        assert_sockets_are(&race, 0o666, 0, clamav);
    }
    let swaps = racer.stop();
    victim.assert_unchanged("after the race");
    eprintln!("20 starts under the racer: {served} served, {failed} stopped with an error; {swaps} exchanges");
    assert!(served > 0, "no start served");
}

// ------------------------------------------------------------ PID file

/// Runs the daemon with `service.pid-file = pid`; returns its exit code
/// and stderr, or fails if it runs longer than a minute (a FIFO at the
/// path used to block the start forever).
fn start_with_pid_file(base: &Path, db: &Path, pid: &Path) -> (Option<i32>, String) {
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(
        base,
        db,
        &base.join("s.sock"),
        tcp,
        &[(
            "service",
            &format!("pid-file = {:?}", pid.display().to_string()),
        )],
    );
    let log = base.join("daemon.log");
    let mut child = start_daemon(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the start did not end within a minute: it blocks on the PID file's path");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}

/// What stands at a path: type, mode, owner, inode, and content or target.
fn object(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    let what = if m.file_type().is_symlink() {
        format!("link->{}", std::fs::read_link(path).unwrap().display())
    } else if m.file_type().is_file() {
        format!("file:{}", show(&std::fs::read(path).unwrap()))
    } else if m.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        format!("dir:{names:?}")
    } else {
        format!("{:?}", m.file_type())
    };
    format!(
        "{what} mode {:o} owner {}:{} inode {}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.ino()
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Puts something at a path.
type Plant<'a> = dyn Fn(&Path) + 'a;

/// Whatever another user put at the PID file's path stops the start at
/// once with an error naming service.pid-file and what is there, and is
/// left exactly as it was; nothing else is made.
#[test]
fn a_pid_file_path_holding_someone_elses_object_stops_the_start_unchanged() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let db = TestDb::new();
    let base = scratch();
    let run = base.path().join("run");
    nobodys_dir(&run, 0o755);
    let victim = Victim::new(base.path().join("victim"));
    let pid = run.join("clamd.pid");
    let plant: [(&str, &Plant<'_>); 6] = [
        ("a FIFO", &|p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        }),
        ("a regular file of uid 65534", &|p| {
            std::fs::write(p, b"4242\n").unwrap();
        }),
        ("a symbolic link", &|p| {
            std::os::unix::fs::symlink(&victim.path, p).unwrap();
        }),
        ("a directory", &|p| {
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("x"), b"x").unwrap();
        }),
        ("a character device", &|p| {
            nix::sys::stat::mknod(
                p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
        }),
        ("a socket", &|p| {
            drop(std::os::unix::net::UnixListener::bind(p).unwrap());
        }),
    ];
    for (what, make) in plant {
        make(&pid);
        // The other user's, as they would have made it.
        std::os::unix::fs::lchown(&pid, Some(NOBODY), Some(NOBODY)).unwrap();
        let before = object(&pid);
        let around = entries(&run);
        let (code, err) = start_with_pid_file(base.path(), db.path(), &pid);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.contains("service.pid-file"), "{what}: {err}");
        assert!(err.contains(&format!("it is {what}")), "{what}: {err}");
        assert!(err.contains("nothing was changed"), "{what}: {err}");
        assert_eq!(object(&pid), before, "{what} was changed");
        assert_eq!(entries(&run), around, "{what}: something was made");
        assert!(
            !base.path().join("s.sock").exists(),
            "{what}: the start went on"
        );
        victim.assert_unchanged(what);
        if std::fs::symlink_metadata(&pid).unwrap().is_dir() {
            std::fs::remove_dir_all(&pid).unwrap();
        } else {
            std::fs::remove_file(&pid).unwrap();
        }
    }
}

/// A root-owned regular file there (a previous run's) is replaced, not
/// written through; the PID file is removed at exit. The directory
/// belongs to another user, as Debian's /run/clamav to clamav.
#[test]
fn a_stale_pid_file_of_our_own_is_replaced() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let db = TestDb::new();
    let base = scratch();
    let run = base.path().join("run");
    nobodys_dir(&run, 0o755);
    let pid = run.join("clamd.pid");
    std::fs::write(&pid, b"99999\n").unwrap();
    // A second name for the old file: it must keep its content.
    std::fs::hard_link(&pid, base.path().join("old")).unwrap();
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(
        base.path(),
        db.path(),
        &base.path().join("s.sock"),
        tcp,
        &[(
            "service",
            &format!("pid-file = {:?}", pid.display().to_string()),
        )],
    );
    let log = base.path().join("daemon.log");
    let mut child = start_daemon(&config, &log);
    assert!(
        served_or_exited(&mut child, tcp),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let m = std::fs::symlink_metadata(&pid).unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        format!("{}\n", child.id())
    );
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.nlink()),
        (0, 0, 0o644, 1)
    );
    assert_eq!(std::fs::read(base.path().join("old")).unwrap(), b"99999\n");
    assert_eq!(entries(&run), vec!["clamd.pid".to_string()]);
    assert_eq!(stop(&mut child), Some(0));
    assert!(!pid.exists(), "removed at exit");
}

/// clamd's command line (Debian's init script passes --pid) with a FIFO at
/// the PID file's path: the command returns with the error at once.
#[test]
fn clamd_in_the_background_with_a_fifo_at_its_pid_file_fails_at_once() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let db = TestDb::new();
    let base = scratch();
    let run = base.path().join("run");
    nobodys_dir(&run, 0o755);
    let pid = run.join("clamd.pid");
    nix::unistd::mkfifo(&pid, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::lchown(&pid, Some(NOBODY), Some(NOBODY)).unwrap();
    let conf = base.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "LocalSocket {}/clamd.sock\nDatabaseDirectory {}\nUser nobody\n",
            run.display(),
            db.path().display()
        ),
    )
    .unwrap();
    let before = object(&pid);
    let mut child = die_with_parent(
        Command::new(BIN)
            .args(["clamd", "-c"])
            .arg(&conf)
            .arg(format!("--pid={}", pid.display())),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "clamd -c … --pid=FIFO blocks");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("it is a FIFO"), "{err}");
    assert_eq!(object(&pid), before);
    assert_eq!(entries(&run), vec!["clamd.pid".to_string()]);
}

// ------------------------------------------------------------ temporary directories

/// A base that another user owns or may write (without the sticky bit)
/// is refused: they could rename the daemon's private directory and put
/// theirs in its place. Nothing is made in it.
#[test]
fn a_temporary_base_another_user_controls_is_refused() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let db = TestDb::new();
    let base = scratch();
    for (name, owner, mode, says) in [
        // Not nobody: in these tests nobody is the service user, whom the
        // daemon trusts with its own temporary files.
        ("theirs", 1, 0o755, "it belongs to uid 1"),
        ("open", 0, 0o777, "everyone may write it"),
    ] {
        let tmp = base.path().join(name);
        std::fs::create_dir(&tmp).unwrap();
        std::os::unix::fs::chown(&tmp, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = write_config(
            base.path(),
            db.path(),
            &base.path().join("s.sock"),
            tcp,
            &[(
                "scan",
                &format!("temporary-directory = {:?}", tmp.display().to_string()),
            )],
        );
        let log = base.path().join("daemon.log");
        let mut child = start_daemon(&config, &log);
        assert!(!served_or_exited(&mut child, tcp));
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(1), "{err}");
        assert!(err.contains("(scan.temporary-directory)"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(entries(&tmp).is_empty(), "{:?}", entries(&tmp));
    }
}

/// Tries to exchange every `clamsentry.*` entry of a directory with its own
/// symlink to the victim, in a loop; counts tries and successes.
const ENTRY_SWAPPER: &str = r#"
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
d, target = sys.argv[1:3]
trap = os.path.join(d, 'trap').encode()
os.symlink(target, trap)
tries = won = 0
def stop(*_):
    sys.stdout.write('%d %d\n' % (tries, won)); sys.stdout.flush(); os._exit(0)
signal.signal(signal.SIGTERM, stop)
print('ready', flush=True)
for _ in range(20000000):
    for name in os.listdir(d):
        if name.startswith('clamsentry.'):
            tries += 1
            if tries == 1:
                print('seen', flush=True)
            if libc.renameat2(-100, os.path.join(d, name).encode(), -100, trap, 2) == 0:
                won += 1
stop()
"#;

/// Makes, as nobody, a chain of `depth` directories in `dir`, and in it
/// a symlink to `target`.
const DEEP: &str = r#"
import os, sys
d, depth, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(d, os.O_RDONLY)
for i in range(depth):
    os.mkdir('d', dir_fd=fd)
    fd = os.open('d', os.O_RDONLY, dir_fd=fd)
os.symlink(target, 'out', dir_fd=fd)
print('ready', flush=True)
"#;

fn run_dirs(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("clamsentry."))
        .map(|e| e.path())
        .collect()
}

fn worker_dirs(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('w'))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// In a sticky base (/tmp's mode) a local user racing every entry moves
/// nothing of the daemon's; the run's and the workers' directories have
/// their owners and modes. A worker's directory full of links to root's
/// file and a 300-deep tree is removed when the worker is replaced,
/// without touching what the links name; at exit nothing is left.
#[test]
fn temporary_directories_cannot_be_redirected() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let db = TestDb::new();
    let base = scratch();
    let tmp = base.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = Victim::new(base.path().join("victim"));
    let mut racer = Attacker::start(
        ENTRY_SWAPPER,
        &[tmp.to_str().unwrap(), victim.path.to_str().unwrap()],
    );
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(
        base.path(),
        db.path(),
        &base.path().join("s.sock"),
        tcp,
        &[
            (
                "scan",
                &format!("temporary-directory = {:?}", tmp.display().to_string()),
            ),
            ("limits", "standby-workers = 2"),
        ],
    );
    let log = base.path().join("daemon.log");
    let mut child = start_daemon(&config, &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(served_or_exited(&mut child, tcp), "{}", logged());
    let zip = std::fs::read(format!("{}/clam.zip", common::TESTFILES)).unwrap();
    let scan = || {
        show(
            &talk(
                &Addr::Tcp(tcp),
                &[&instream(b"zINSTREAM\0", &zip, 4096)],
                Duration::from_secs(30),
            )
            .unwrap(),
        )
    };
    assert!(scan().ends_with(" FOUND\\0"));
    let runs = run_dirs(&tmp);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (service, service_group) = common::service_user();
    let m = std::fs::symlink_metadata(&runs[0]).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, service_group, 0o710)
    );
    // Two standby workers and the TCP clients' worker.
    let workers = worker_dirs(&runs[0]);
    assert!(workers.len() >= 2, "{workers:?}");
    for w in &workers {
        let m = std::fs::symlink_metadata(w).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (service, service_group, 0o700)
        );
        // What a compromised worker could leave: links to root's file and
        // a tree deeper than any stack.
        std::os::unix::fs::symlink(&victim.path, w.join("link")).unwrap();
        std::fs::hard_link(&victim.path, w.join("hard")).unwrap();
        let mut deep = python_as(
            service,
            service_group,
            DEEP,
            &[w.to_str().unwrap(), "300", victim.path.to_str().unwrap()],
        );
        assert!(deep.wait().unwrap().success());
    }
    // The workers die; the supervisor replaces them and removes their
    // directories.
    let supervisor = child.id() as i32;
    for p in common::daemons::children(supervisor) {
        if std::fs::read_to_string(format!("/proc/{p}/comm"))
            .is_ok_and(|c| c.trim_end() == "clamsentry-work")
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().any(|w| w.exists()) {
        assert!(
            Instant::now() < deadline,
            "old worker directories stay:\n{}",
            logged()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::metadata(&victim.path).unwrap().nlink(), 1);
    victim.assert_unchanged("after the workers' directories were removed");
    assert!(scan().ends_with(" FOUND\\0"));
    // The racer has been at the daemon's directory (a busy machine may run
    // it late).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !racer.said("seen") {
        assert!(
            Instant::now() < deadline,
            "the racer never saw the daemon's directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stop(&mut child), Some(0), "{}", logged());
    let counts = racer.stop();
    let (tries, won) = counts.split_once(' ').unwrap();
    eprintln!(
        "the entry racer tried {tries} exchanges on the daemon's directories, {won} happened"
    );
    assert!(
        tries.parse::<u64>().unwrap() > 0,
        "the racer never saw the daemon's directory"
    );
    assert_eq!(won, "0", "the racer moved a directory of the daemon's");
    assert!(
        run_dirs(&tmp).is_empty(),
        "left behind: {:?}",
        run_dirs(&tmp)
    );
    victim.assert_unchanged("at the end");
}

// ------------------------------------------------------------ signature directory

/// The engine holder opens the signature directory as root before it
/// demotes itself, so that a directory below one only root may enter still
/// loads. Through an entry another user could replace, it must not: that
/// user could point root's handle into any root-only directory. The same
/// root-only directory named directly still loads.
#[test]
fn a_signature_directory_behind_another_users_entry_gets_no_root_handle() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let base = scratch();
    let private = base.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = private.join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in [
        ("test.hdb", common::HDB),
        ("test.ndb", common::NDB),
        ("test.ldb", common::LDB),
    ] {
        std::fs::write(db.join(name), text).unwrap();
    }
    // daemon's directory (not nobody's: nobody is the service user here),
    // with its link into root's private one.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(1), Some(1)).unwrap();
    std::os::unix::fs::symlink(&db, theirs.join("db")).unwrap();
    std::os::unix::fs::lchown(theirs.join("db"), Some(1), Some(1)).unwrap();
    for (dir, serves) in [(theirs.join("db"), false), (db.clone(), true)] {
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = write_config(base.path(), &dir, &base.path().join("s.sock"), tcp, &[]);
        let log = base.path().join("daemon.log");
        let mut child = start_daemon(&config, &log);
        let served = served_or_exited(&mut child, tcp);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(served, serves, "{}: {text}", dir.display());
        if serves {
            assert_eq!(stop(&mut child), Some(0));
        } else {
            assert_eq!(child.wait().unwrap().code(), Some(1), "{text}");
            assert!(
                text.contains("database.directory: another user could replace"),
                "{text}"
            );
        }
    }
}

// ------------------------------------------------------------ clamd -V

/// `clamd -V` (run as root by init scripts and monitoring) reads the
/// header of `daily.cvd`/`daily.cld` in the signature directory, which
/// belongs to clamav. A FIFO there must not block it, and a symlink must
/// not make root read a file of its own: only regular files are read.
#[test]
fn clamd_version_reads_only_regular_files_of_the_signature_directory() {
    require_root!("the attacker runs as nobody and the socket is given away");
    let base = scratch();
    let db = base.path().join("db");
    nobodys_dir(&db, 0o755);
    // A root-only file that looks like a container header.
    let secret = base.path().join("secret");
    std::fs::write(
        &secret,
        "ClamAV-VDB:07 Dec 2026 12-00 +0000:27999:100:90:0123456789abcdef0123456789abcdef:X:root:1796385600\n",
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, db.join("daily.cvd")).unwrap();
    nix::unistd::mkfifo(
        &db.join("daily.cld"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    for name in ["daily.cvd", "daily.cld"] {
        std::os::unix::fs::lchown(db.join(name), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let conf = base.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!("LocalSocket {0}/s\nDatabaseDirectory {0}\n", db.display()),
    )
    .unwrap();
    let mut child = die_with_parent(Command::new(BIN).args(["clamd", "-c"]).arg(&conf).arg("-V"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "clamd -V blocks on a FIFO");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "ClamAV 1.4.6\n");
    // The same header in a regular file is read.
    std::fs::remove_file(db.join("daily.cvd")).unwrap();
    std::fs::copy(&secret, db.join("daily.cvd")).unwrap();
    let out = Command::new(BIN)
        .args(["clamd", "-c"])
        .arg(&conf)
        .arg("-V")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ClamAV 1.4.6/27999/"),
        "{out:?}"
    );
}
