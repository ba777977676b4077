//! The command line: check-config's exit codes and messages.

use std::process::Command;

fn check(config: &str) -> (i32, String) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&f.path().display().to_string(), "FILE"),
    )
}

#[test]
fn valid_configuration_passes() {
    let (code, text) = check("[limits]\nmax-threads = 2\n");
    assert_eq!(code, 0, "{text}");
    assert_eq!(text, "FILE: configuration OK\n");
}

#[test]
fn shipped_configurations_pass() {
    for f in ["etc/clamsentry.toml", "demo/clamsentry.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
            .args(["check-config", "--config", f])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn errors_name_file_line_and_key() {
    let (code, text) = check("[limits]\nmax-threads = 2\nstream-max-lenght = 10\n");
    assert_eq!(code, 2);
    assert!(
        text.starts_with(
            "clamsentry: FILE:3:1: limits.stream-max-lenght: unknown field `stream-max-lenght`"
        ),
        "{text}"
    );
    assert!(text.contains("unknown field `stream-max-lenght`"), "{text}");
    let (code, text) = check("[limits]\nmax-queue = 0\n");
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "clamsentry: FILE:2:13: limits.max-queue: must be at least 1, not 0\n"
    );
    let (code, text) = check("[listen]\nunix-mode = \"rw\"\n");
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "clamsentry: FILE:2:13: listen.unix-mode: \"rw\" is not an octal mode like \"0660\"\n"
    );
}

#[test]
fn missing_file_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["check-config", "--config", "/nonexistent/clamsentry.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/clamsentry.toml")
    );
}

#[test]
fn daemon_start_failure_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\ndirectory = {:?}\n[listen]\nunix = {:?}\n[sandbox]\nuser = \"nobody\"\n",
            dir.path().display().to_string(),
            dir.path().join("s").display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No supported database files found"), "{err}");
    assert!(err.contains("(freshclam fills it)"), "{err}");
}

#[test]
fn missing_service_user_says_how_to_create_it() {
    require_root!("the service user is only used when started as root");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[sandbox]\nuser = \"no-such-user-here\"\n[listen]\nunix = \"\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service user \"no-such-user-here\" does not exist"),
        "{err}"
    );
}

// ---- clamd's command line and clamd.conf ----

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_clamsentry");

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory the sandboxed worker (nobody) can read.
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("cs-clamd")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// `clamsentry` under the name `clamd` (as a symlink installs it).
fn clamd_symlink(dir: &Path) -> PathBuf {
    let link = dir.join("clamd");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    link
}

/// A daily.cvd as freshclam leaves it, built here with sigtool.
fn versioned_daily(dir: &Path) {
    use std::io::Write;
    let build = tempfile::tempdir().unwrap();
    std::fs::write(build.path().join("daily.hdb"), common::HDB).unwrap();
    std::fs::write(build.path().join("COPYING"), "test database\n").unwrap();
    let mut sigtool = Command::new("sigtool")
        .args(["--build=daily.cud", "--unsigned", "--cvd-version=27999"])
        .arg(format!("--datadir={}", build.path().display()))
        .current_dir(build.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sigtool (package clamav)");
    sigtool
        .stdin
        .take()
        .unwrap()
        .write_all(b"clamsentry tests\n")
        .unwrap();
    assert!(sigtool.wait().unwrap().success());
    std::fs::copy(build.path().join("daily.cud"), dir.join("daily.cvd")).unwrap();
}

#[test]
fn version_line_is_clamds_with_and_without_a_database() {
    let dir = open_dir();
    let conf = dir.path().join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "LocalSocket {0}/s\nDatabaseDirectory {0}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let link = clamd_symlink(dir.path());
    let theirs = |args: &[&str]| run(Command::new(common::daemons::CLAMD).args(args));
    for args in [
        vec!["-c", conf.to_str().unwrap(), "-V"],
        vec!["--config-file", conf.to_str().unwrap(), "--version"],
    ] {
        let want = theirs(&args);
        assert_eq!(want.1, "ClamAV 1.4.6\n");
        assert_eq!(run(Command::new(&link).args(&args)), want);
        assert_eq!(run(Command::new(BIN).arg("clamd").args(&args)), want);
    }
    let eq = format!("--config-file={}", conf.display());
    assert_eq!(
        run(Command::new(&link).args([eq.as_str(), "-V"])),
        theirs(&[eq.as_str(), "-V"])
    );
    versioned_daily(dir.path());
    let args = ["-c", conf.to_str().unwrap(), "-V"];
    let want = theirs(&args);
    assert!(want.1.starts_with("ClamAV 1.4.6/27999/"), "{want:?}");
    assert_eq!(run(Command::new(&link).args(args)), want);
    // --datadir on the command line wins over the file, in both.
    let empty = open_dir();
    let datadir = format!("--datadir={}", empty.path().display());
    let args = ["-c", conf.to_str().unwrap(), datadir.as_str(), "-V"];
    assert_eq!(run(Command::new(&link).args(args)).1, "ClamAV 1.4.6\n");
    assert_eq!(theirs(&args).1, "ClamAV 1.4.6\n");
}

#[test]
fn clamd_command_line_errors_are_clamds() {
    let dir = open_dir();
    let link = clamd_symlink(dir.path());
    let (code, out, err) = run(Command::new(&link).args(["-c", "/nonexistent/clamd.conf", "-V"]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.ends_with("ERROR: Can't open/parse the config file /nonexistent/clamd.conf\n"),
        "{err}"
    );
    let conf = dir.path().join("example.conf");
    std::fs::write(&conf, "Example\nLocalSocket /x\n").unwrap();
    let (code, _, err) = run(Command::new(&link).arg("-c").arg(&conf).arg("-V"));
    assert_eq!(code, 1);
    assert!(err.contains("Example line"), "{err}");
    let (code, _, err) = run(Command::new(&link).arg("--bogus"));
    assert_eq!(code, 1);
    assert!(
        err.contains("ERROR: Can't parse command line options"),
        "{err}"
    );
    let (code, out, _) = run(Command::new(&link).arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("--config-file=FILE"), "{out}");
    // An option clamsentry refuses, and what to do instead.
    let conf = dir.path().join("tcp.conf");
    std::fs::write(&conf, "TCPSocket 3310\n").unwrap();
    let (code, _, err) = run(Command::new(&link).arg("-c").arg(&conf).arg("-F"));
    assert_eq!(code, 1);
    assert!(
        err.contains("TCPSocket: without TCPAddr binds every address"),
        "{err}"
    );
    assert!(err.contains("listen.tcp-allow"), "{err}");
}

#[test]
fn debians_clamd_conf_passes_check_config() {
    require!(common::require::file(
        "/etc/clamav/clamd.conf",
        "clamav-daemon"
    ));
    let (code, out, err) =
        run(Command::new(BIN).args(["check-config", "--clamd-conf", "/etc/clamav/clamd.conf"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("/etc/clamav/clamd.conf: configuration OK\n"),
        "{out}"
    );
    assert!(out.contains("LocalSocketMode"), "{out}");
    // Given as TOML, the error says how to read it.
    let (code, _, err) =
        run(Command::new(BIN).args(["check-config", "--config", "/etc/clamav/clamd.conf"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("this looks like a clamd.conf: read it with --clamd-conf"),
        "{err}"
    );
    // The converted TOML is a valid clamsentry configuration.
    let (code, toml, err) =
        run(Command::new(BIN).args(["convert-clamd-conf", "/etc/clamav/clamd.conf"]));
    assert_eq!(code, 0, "{err}");
    let (code, text) = check(&toml);
    assert_eq!(code, 0, "{text}\n{toml}");
}

#[test]
fn clamavs_test_configuration_is_read_unchanged() {
    let dir = open_dir();
    let conf = dir.path().join("clamd-test.conf");
    // As unit_tests/clamd_test.py writes it (indented), with the VirusEvent
    // line test_clamd_08 appends.
    std::fs::write(
        &conf,
        format!(
            "
            Foreground yes
            PidFile {0}/clamd-test.pid
            DatabaseDirectory {0}/database
            LogFileMaxSize 0
            LogTime yes
            #Debug yes
            LogClean yes
            LogVerbose yes
            ExitOnOOM yes
            DetectPUA yes
            ScanPDF yes
            CommandReadTimeout 1
            MaxQueue 800
            MaxConnectionQueueLength 1024
            
                LocalSocket clamd-test.socket
                TCPSocket 3319
                TCPAddr localhost
                VirusEvent {0}/virusaction-test.sh {0} \"Virus found: %v\"
",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(Command::new(BIN)
        .arg("check-config")
        .arg("--clamd-conf")
        .arg(&conf));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"), "{out}");
    let (code, toml, err) = run(Command::new(BIN)
        .arg("convert-clamd-conf")
        .arg(&conf)
        .current_dir(dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(
        toml.contains(&format!(
            "unix = \"{}/clamd-test.socket\"",
            dir.path().display()
        )),
        "{toml}"
    );
    assert!(toml.contains("tcp = [\"127.0.0.1:3319\"]"), "{toml}");
    assert!(toml.contains("command-read-timeout = 1"), "{toml}");
    assert!(toml.contains("[virus-event]"), "{toml}");
}

/// A clamd.conf for a daemon under test: its socket, the test database, a
/// PID file, and the worker as nobody. The socket's directory belongs to
/// nobody (clamd creates its socket as `User`, and so does clamsentry, as
/// Debian's `/run/clamav` belongs to clamav); the PID file's is root's.
fn daemon_conf(dir: &Path, db: &Path, extra: &str) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let conf = dir.join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "LocalSocket {}\nLocalSocketMode 666\nDatabaseDirectory {}\nPidFile {}/clamd.pid\nUser nobody\n{extra}",
            socket_in(dir).display(),
            db.display(),
            dir.display(),
        ),
    )
    .unwrap();
    conf
}

/// The socket [`daemon_conf`] names.
fn socket_in(dir: &Path) -> PathBuf {
    dir.join("run/clamd.sock")
}

fn ping(socket: &Path) -> Option<Vec<u8>> {
    common::client::talk(
        &common::client::Addr::Unix(socket.to_path_buf()),
        &[b"zPING\0"],
        Duration::from_secs(5),
    )
    .ok()
}

/// Kills the daemon named in a PID file when dropped (a forked daemon is
/// not our child).
struct PidGuard(PathBuf);

impl PidGuard {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn clamd_forks_into_the_background_once_it_serves() {
    require_root!("the clamd.conf names User nobody");
    let dir = open_dir();
    let db = common::TestDb::new();
    let conf = daemon_conf(dir.path(), db.path(), "");
    let link = clamd_symlink(dir.path());
    let guard = PidGuard(dir.path().join("clamd.pid"));
    let started = Instant::now();
    let (code, _, err) = run(Command::new(&link).arg("-c").arg(&conf));
    assert_eq!(code, 0, "{err}");
    // Returned once serving: no waiting, no retry.
    assert_eq!(
        ping(&socket_in(dir.path())).as_deref(),
        Some(&b"PONG\0"[..])
    );
    let pid = guard.pid().expect("PID file");
    assert_ne!(pid as u32, std::process::id());
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = status
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "the daemon leads its own session"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // SIGTERM: stops, removes its socket and PID file.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.path().join("clamd.pid").exists() || socket_in(dir.path()).exists() {
        assert!(Instant::now() < deadline, "the daemon did not clean up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failed_start_in_the_background_returns_the_error() {
    require_root!("the clamd.conf names User nobody");
    let dir = open_dir();
    let empty = open_dir();
    let conf = daemon_conf(dir.path(), empty.path(), "");
    let _guard = PidGuard(dir.path().join("clamd.pid"));
    let (code, _, err) = run(Command::new(BIN).arg("clamd").arg("-c").arg(&conf));
    assert_eq!(code, 1);
    assert!(err.contains("No supported database files found"), "{err}");
    assert!(!dir.path().join("clamd.pid").exists());
}

#[test]
fn foreground_stays_and_stops_on_sigterm() {
    require_root!("the clamd.conf names User nobody");
    let dir = open_dir();
    let db = common::TestDb::new();
    let conf = daemon_conf(dir.path(), db.path(), "Foreground no\n");
    let mut child = Command::new(BIN)
        .args(["clamd", "-F", "-c"])
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = socket_in(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while ping(&socket).as_deref() != Some(&b"PONG\0"[..]) {
        assert!(child.try_wait().unwrap().is_none(), "exited");
        assert!(Instant::now() < deadline, "no PONG");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("clamd.pid")).unwrap(),
        format!("{}\n", child.id())
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!dir.path().join("clamd.pid").exists());
}
