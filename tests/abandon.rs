//! A client that goes away takes its work with it: the walk stops, queued
//! files are not scanned, and libclamav's scan in progress is abandoned at
//! its next callback, without anything from it being cached as clean.
//!
//! Proved by counting and by ordering, never by timing:
//!
//! * walks: every directory of a tree is watched with inotify (`IN_OPEN`);
//!   the client disconnects once some files were opened, and the files
//!   opened after that are counted until the daemon says the walk was
//!   abandoned: at most a few broker batches, out of thousands left;
//! * a slow stream: the worker has one scan thread; the client leaves while
//!   its archive (thousands of members) is being scanned, and a small stream
//!   sent next on the same worker is answered while the same archive, sent
//!   just before by another client to another worker, is still being
//!   scanned there;
//! * the cache: the abandoned archive holds the EICAR string in its last
//!   member; scanned again in full, it is found (an abandoned scan that
//!   libclamav had cached as clean would answer `OK`).
//!
//! The daemon runs as root here (its workers as the test service user);
//! the clients are root.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{instream, Addr, Conn};
use common::daemons::Daemon;
use common::{eicar, TestDb};

/// Generous: the machine may be busy.
const T: Duration = Duration::from_secs(120);

/// Files the broker opens ahead per request at most (`MAX_BATCH`).
const BATCH: u64 = clamsentry::ipc::messages::MAX_BATCH as u64;
/// Files a directory's listing opens with it.
const FIRST_FILES: u64 = clamsentry::ipc::messages::MAX_FIRST_FILES as u64;

fn tree(root: &Path, dirs: usize, files: usize) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut all = vec![root.to_path_buf()];
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:05}")), [(f % 256) as u8]).unwrap();
        }
        all.push(dir);
    }
    all
}

/// Counts `IN_OPEN` events on every directory given.
struct Opens(nix::sys::inotify::Inotify);

impl Opens {
    fn watch(dirs: &[PathBuf]) -> Opens {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let i = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        for d in dirs {
            i.add_watch(d, AddWatchFlags::IN_OPEN).unwrap();
        }
        Opens(i)
    }

    /// Opens since the last call (none lost: the queue holds 16,384 events
    /// by default, and each call empties it).
    fn take(&self) -> u64 {
        let mut n = 0;
        while let Ok(events) = self.0.read_events() {
            n += events.len() as u64;
        }
        n
    }
}

/// Starts `command` on the tree, disconnects once `after` files were
/// opened, and returns (opened before, opened after the disconnect until
/// the daemon logged the walk abandoned).
fn abandon_walk(d: &Daemon, command: &str, dirs: &[PathBuf], after: u64) -> (u64, u64) {
    let opens = Opens::watch(dirs);
    let logged = d
        .log()
        .matches("walk abandoned: the client is gone")
        .count();
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(format!("z{command} {}\0", dirs[0].display()).as_bytes())
        .unwrap();
    let deadline = Instant::now() + T;
    let mut before = 0;
    while before < after {
        assert!(
            Instant::now() < deadline,
            "{command}: the walk opened nothing"
        );
        before += opens.take();
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(c);
    let mut later = opens.take();
    let deadline = Instant::now() + T;
    while d
        .log()
        .matches("walk abandoned: the client is gone")
        .count()
        == logged
    {
        assert!(
            Instant::now() < deadline,
            "{command}: no abandoned walk logged:\n{}",
            d.log()
        );
        later += opens.take();
        std::thread::sleep(Duration::from_millis(5));
    }
    later += opens.take();
    (before, later)
}

#[test]
fn a_walk_stops_when_its_client_disconnects() {
    let db = TestDb::new();
    let scratch = tempfile::tempdir().unwrap();
    let (dirs, files) = (10, 2_000);
    let all = tree(scratch.path(), dirs, files);
    let d = Daemon::clamsentry(db.path(), &[("limits", "max-threads = 2")]);
    for command in ["CONTSCAN", "MULTISCAN", "ALLMATCHSCAN"] {
        let (before, after) = abandon_walk(&d, command, &all, 200);
        println!("{command}: {before} files opened before the disconnect, {after} after");
        // The walk goes on at most for the batches in flight when the
        // client left (one per walk; a second if the hang-up is heard
        // just after the next was asked for), and the first files of the
        // next directory if it was being asked for ahead just then, out of
        // thousands left.
        assert!(
            after <= 2 * BATCH + FIRST_FILES,
            "{command}: {after} files opened after the disconnect"
        );
        assert!(before + after < (dirs * files) as u64 / 2, "{command}");
    }
    // The worker still serves, and walks to the end for a client that stays.
    let mut c = Conn::open(&d.unix_addr()).unwrap();
    c.send(format!("zCONTSCAN {}\0", scratch.path().display()).as_bytes())
        .unwrap();
    let reply = c.read_all(T);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        format!("{}: OK\0", scratch.path().display())
    );
}

/// A deflated ZIP of `members` small text files unique to `seed`, the last
/// one `last` (Python's zipfile, as found on Debian).
fn archive(members: usize, seed: &str, last: &[u8]) -> Vec<u8> {
    let script = r#"
import io, sys, zipfile
n, seed = int(sys.argv[1]), sys.argv[2]
last = sys.stdin.buffer.read()
out = io.BytesIO()
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
    for i in range(n):
        z.writestr('m%06d.txt' % i, ('%s member %d ' % (seed, i)) * 400)
    z.writestr('last.txt', last)
sys.stdout.buffer.write(out.getvalue())
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &members.to_string(), seed])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(last).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The tasks STATS lists now for `command` on `addr`'s worker.
fn running(addr: &Addr, command: &str) -> usize {
    let mut c = Conn::open(addr).unwrap();
    c.send(b"zSTATS\0").unwrap();
    let text = String::from_utf8_lossy(&c.read_until(b"END", T)).into_owned();
    text.lines()
        .filter(|l| l.starts_with(&format!("\t{command} ")))
        .count()
}

/// Whether the connection has its reply (or was closed) without waiting.
fn answered(c: &Conn) -> bool {
    let fd = match c {
        Conn::Unix(s) => std::os::fd::AsFd::as_fd(s),
        Conn::Tcp(s) => std::os::fd::AsFd::as_fd(s),
    };
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() > 0
}

#[test]
fn an_abandoned_scan_frees_its_thread_and_is_not_cached() {
    require!(common::require::program("python3", "python3"));
    require_root!("the reference client is remote: a network namespace");
    require!(common::require::program("ip", "iproute2"));
    // The reference comes from a remote network, so that the remote
    // clients' worker scans it (the test user's TCP clients from this host
    // are its own worker's).
    let _lab = common::netns::Lab::enter("cs-abandon");
    let db = TestDb::new();
    // One scan thread per worker: what follows an abandoned scan on the
    // same worker waits for that thread.
    let d = Daemon::clamsentry(
        db.path(),
        &[("limits", "max-threads = 1"), common::netns::ALLOW],
    );
    let members = 9_000;
    let abandoned = archive(members, "abandoned", &eicar());
    let reference = archive(members, "reference", b"clean");
    let unix = d.unix_addr();

    // The reference: the same kind of archive, sent first, scanned by the
    // worker of the remote clients (another process, its own thread).
    let mut reference_client =
        Conn::Tcp(common::client::connect_from(common::netns::Lab::addr(1, 5), d.tcp).unwrap());
    reference_client
        .send(&instream(b"zINSTREAM\0", &reference, 65536))
        .unwrap();
    // Root's client sends the archive and leaves once its scan runs.
    let mut leaving = Conn::open(&unix).unwrap();
    leaving
        .send(&instream(b"zINSTREAM\0", &abandoned, 65536))
        .unwrap();
    let deadline = Instant::now() + T;
    while running(&unix, "INSTREAM") == 0 {
        assert!(Instant::now() < deadline, "the scan never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !answered(&reference_client),
        "the reference archive was scanned too fast to compare with"
    );
    drop(leaving);

    // The next stream on root's worker is served by its only thread...
    let mut next = Conn::open(&unix).unwrap();
    next.send(&instream(b"zINSTREAM\0", b"a small clean stream", 1024))
        .unwrap();
    let reply = next.read_until(b"\0", T);
    assert_eq!(String::from_utf8_lossy(&reply), "stream: OK\0");
    // ...while the reference, which started earlier, is still being
    // scanned: the abandoned scan gave the thread back long before its end.
    assert!(
        !answered(&reference_client),
        "the abandoned scan held its thread as long as a whole scan"
    );
    let reply = reference_client.read_until(b"\0", T);
    assert_eq!(String::from_utf8_lossy(&reply), "stream: OK\0");

    // Scanned in full, the abandoned archive is found: nothing of the
    // abandoned scan was cached as clean.
    let mut again = Conn::open(&unix).unwrap();
    again
        .send(&instream(b"zINSTREAM\0", &abandoned, 65536))
        .unwrap();
    let reply = again.read_until(b"\0", T);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
    );
    assert!(
        !d.log().contains("Detected.By.Callback"),
        "the abandonment's own detection reached the log"
    );
}
