//! Debian's shipped `/etc/clamav/clamd.conf` (package clamav-daemon),
//! unchanged, starts clamsentry as clamd: `clamd -c /etc/clamav/clamd.conf
//! --foreground=true --pid=/run/clamav/clamd.pid` through a symlink named
//! `clamd` (`--foreground=true` as Debian's clamav-daemon.service passes it,
//! `--pid` as its init script does).
//!
//! The file names system paths: `LocalSocket /var/run/clamav/clamd.ctl`,
//! `DatabaseDirectory /var/lib/clamav` (no signatures on a build machine),
//! `LogFile /var/log/clamav/clamav.log`, `User clamav`. So that the file is
//! read as it is while the test changes nothing on the system, the daemon
//! runs in a private mount namespace (`unshare --mount --propagation
//! private`) where temporary directories are bind-mounted over
//! `/var/lib/clamav` (a database built by the test), `/run` (so
//! `/run/clamav` exists even where no clamd ever ran; it belongs to clamav,
//! mode 0755, as Debian's init script makes it) and `/var/log/clamav`;
//! `TMPDIR` points at a temporary directory too (the file leaves
//! `TemporaryDirectory` unset so that TMPDIR applies). The test talks to the
//! socket through its directory outside the namespace, and runs `clamdscan
//! -c /etc/clamav/clamd.conf` inside it (`nsenter --mount`), so the client
//! finds the socket by the path the file names.
//!
//! Checked: PING, VERSION, INSTREAM of a clean and an EICAR stream, SCAN of
//! files by clamdscan; the socket belongs to clamav:clamav with mode 0666
//! (User, LocalSocketGroup, LocalSocketMode); the engine holder and the
//! workers run as clamav; nothing is written to the log directory
//! (clamsentry writes no log file: `LogFile` is noted); SIGTERM ends it with
//! status 0 and removes the socket, the PID file and its temporary
//! directory. Needs root (mount namespaces, `User clamav`) and Debian's
//! file; without them it is skipped, or fails under CI
//! (`tests/common/require.rs`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{instream, show, talk, talk_streaming, Addr};
use common::daemons::die_with_parent;
use common::{eicar, TestDb};

const CONF: &str = "/etc/clamav/clamd.conf";

/// The lines of Debian's file that the namespace is built for.
const DEBIAN_LINES: [&str; 6] = [
    "LocalSocket /var/run/clamav/clamd.ctl",
    "LocalSocketGroup clamav",
    "LocalSocketMode 666",
    "User clamav",
    "DatabaseDirectory /var/lib/clamav",
    "LogFile /var/log/clamav/clamav.log",
];

/// Root (a mount namespace, and the workers become clamav) and Debian's
/// unchanged `CONF`, whose text `conf` is.
fn requirements(conf: &str) -> Result<(), common::require::Missing> {
    common::require::root("a mount namespace, and the workers become clamav")?;
    common::require::file(CONF, "clamav-daemon")?;
    let lines: Vec<&str> = conf.lines().map(str::trim).collect();
    let foreign = DEBIAN_LINES.iter().find(|l| !lines.contains(l));
    common::require::need(
        "Debian's clamd.conf",
        foreign.is_none().then_some(()),
        &match foreign {
            Some(l) => format!("{CONF} has no line {l:?}"),
            None => format!("the test starts {CONF} as it is"),
        },
        "the file clamav-daemon's installation writes, unchanged (apt-get purge clamav-daemon, then install it)",
    )
}

/// A directory owned by `uid`:`gid` with `mode`.
fn dir_for(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
}

/// The daemon in its namespace; SIGKILLed when dropped (a failed test).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uid_of(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn debians_clamd_conf_starts_clamsentry_as_is() {
    let conf_before = std::fs::read_to_string(CONF).unwrap_or_default();
    require!(requirements(&conf_before));
    let started = Instant::now();
    let clamav = nix::unistd::User::from_name("clamav")
        .unwrap()
        .expect("user clamav (package clamav-base)");
    let (uid, gid) = (clamav.uid.as_raw(), clamav.gid.as_raw());

    let root = tempfile::Builder::new()
        .prefix("cs-debian")
        .tempdir()
        .unwrap();
    let t = root.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = TestDb::new();
    dir_for(db.path(), uid, gid, 0o755);
    let run = t.join("run");
    dir_for(&run, 0, 0, 0o755);
    dir_for(&run.join("clamav"), uid, gid, 0o755);
    let log_dir = t.join("log");
    dir_for(&log_dir, uid, gid, 0o755);
    let tmp = t.join("tmp");
    dir_for(&tmp, 0, 0, 0o755);
    let files = t.join("files");
    dir_for(&files, 0, 0, 0o755);
    std::fs::write(files.join("clean.txt"), b"nothing to see\n").unwrap();
    std::fs::write(files.join("eicar.txt"), eicar()).unwrap();
    let clamd = t.join("clamd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_clamsentry"), &clamd).unwrap();

    let out = std::fs::File::create(t.join("daemon.log")).unwrap();
    let child = die_with_parent(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg(
                "mount --bind \"$1\" /var/lib/clamav; mount --bind \"$2\" /run; \
                 mount --bind \"$3\" /var/log/clamav; shift 3; exec \"$@\"",
            )
            .arg("sh")
            .args([db.path(), &run, &log_dir])
            .arg(&clamd)
            .args([
                "-c",
                CONF,
                "--foreground=true",
                "--pid=/run/clamav/clamd.pid",
            ])
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    )
    .spawn()
    .expect("unshare (package util-linux)");
    // unshare and sh exec: this pid is the daemon's.
    let mut daemon = Guard(child);
    let pid = daemon.0.id() as i32;
    let log = || std::fs::read_to_string(t.join("daemon.log")).unwrap_or_default();

    let socket = run.join("clamav/clamd.ctl");
    let addr = Addr::Unix(socket.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while talk(&addr, &[b"zPING\0"], Duration::from_secs(2))
        .ok()
        .as_deref()
        != Some(b"PONG\0")
    {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("clamsentry exited ({status}) with {CONF}:\n{}", log());
        }
        assert!(Instant::now() < deadline, "no PONG:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = started.elapsed();
    // Named as clamd is (start-stop-daemon --name clamd finds it).
    assert_eq!(comm(pid), "clamd", "{}", log());

    // The socket as clamd makes it from this file.
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (uid, gid, 0o666)
    );
    assert_eq!(
        std::fs::read_to_string(run.join("clamav/clamd.pid")).unwrap(),
        format!("{pid}\n")
    );

    // The protocol.
    let version = show(&talk(&addr, &[b"zVERSION\0"], Duration::from_secs(5)).unwrap());
    assert!(version.starts_with("ClamAV 1.4.6"), "{version}");
    let clean = talk_streaming(
        &addr,
        instream(b"zINSTREAM\0", b"clean data\n", 4),
        Duration::from_secs(10),
    );
    assert_eq!(show(&clean), "stream: OK\\0");
    let found = talk_streaming(
        &addr,
        instream(b"zINSTREAM\0", &eicar(), 16),
        Duration::from_secs(10),
    );
    assert_eq!(
        show(&found),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );

    // clamdscan with the same file, in the daemon's namespace: SCAN by path.
    let scan = Command::new("nsenter")
        .args(["--mount", "--target", &pid.to_string(), "--"])
        .args(["clamdscan", "-c", CONF, "--no-summary"])
        .arg(files.join("clean.txt"))
        .arg(files.join("eicar.txt"))
        .output()
        .expect("nsenter (util-linux) and clamdscan");
    let text =
        String::from_utf8_lossy(&scan.stdout).into_owned() + &String::from_utf8_lossy(&scan.stderr);
    assert_eq!(scan.status.code(), Some(1), "{text}");
    assert_eq!(
        text,
        format!(
            "{0}/clean.txt: OK\n{0}/eicar.txt: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\n",
            files.display()
        )
    );

    // User clamav: the engine holder and every worker.
    let children = common::daemons::children(pid);
    let workers: Vec<i32> = children
        .iter()
        .copied()
        .filter(|c| comm(*c) == "clamsentry-work")
        .collect();
    assert!(!workers.is_empty(), "no worker among {children:?}");
    for c in &children {
        if comm(*c).starts_with("clamsentry-") {
            assert_eq!(uid_of(*c), Some(uid), "{} ({c}) runs as clamav", comm(*c));
        }
    }
    assert_eq!(uid_of(pid), Some(0), "the supervisor stays root");
    // The private temporary directory is under TMPDIR.
    let private = entries(&tmp);
    assert_eq!(private.len(), 1, "{private:?}");
    assert!(private[0].starts_with("clamsentry."), "{private:?}");
    // No log file: LogFile is read and noted.
    assert!(entries(&log_dir).is_empty(), "{:?}", entries(&log_dir));
    assert!(log().contains("LogFile"), "{}", log());

    // SIGTERM: exit 0, and nothing left behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", log());
    assert_eq!(
        entries(&run.join("clamav")),
        Vec::<String>::new(),
        "the socket and the PID file are removed:\n{}",
        log()
    );
    assert!(entries(&tmp).is_empty(), "{:?}", entries(&tmp));
    assert!(entries(&log_dir).is_empty(), "{:?}", entries(&log_dir));
    // The bind mounts stayed in the daemon's namespace, gone with it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&t.display().to_string()),
        "a mount of {} is left:\n{mounts}",
        t.display()
    );
    assert_eq!(std::fs::read_to_string(CONF).unwrap(), conf_before);
    println!(
        "Debian's clamd.conf: serving in {ready:?}, stopped cleanly, {:?} in all",
        started.elapsed()
    );
}
