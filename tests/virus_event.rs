//! VirusEvent with real processes: the command's environment and identity,
//! quoting of `%v` against injection, the timeout, and the limits. As root
//! (as CI runs) the command runs as `nobody`; the tests that need root skip
//! otherwise. The last test runs both daemons, clamsentry and clamd 1.4.6,
//! with the same VirusEvent command and compares what the commands saw.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;

use clamsentry::config::{Config, VirusEventConfig};
use clamsentry::virus_event::{DropReason, Triggered, VirusEvents};

/// Every log line of this test process (a global subscriber: the commands
/// are watched and logged from their own threads).
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(needle: &str) -> Vec<String> {
    let buf = log();
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A directory anyone may write to (the command runs as nobody).
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("cs-virusevent")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn events(command: String, tune: impl FnOnce(&mut VirusEventConfig)) -> VirusEvents {
    log();
    let mut c = VirusEventConfig {
        command,
        user: "nobody".into(),
        ..VirusEventConfig::default()
    };
    tune(&mut c);
    VirusEvents::new(&c, "nobody").unwrap()
}

fn wait_idle(e: &VirusEvents, within: Duration) {
    let deadline = Instant::now() + within;
    while e.running() > 0 {
        assert!(Instant::now() < deadline, "the command still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn command_gets_clamds_environment_as_an_unprivileged_user() {
    require_root!("the command runs as nobody");
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    // A descriptor without close-on-exec, as systemd hands sockets over: the
    // command must not get it.
    let leaky = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let e = events(
        format!(
            "id -u > {d}/uid; id -G > {d}/groups; \
             printf '%s' \"$CLAM_VIRUSEVENT_FILENAME\" > {d}/file; \
             printf '%s' \"$CLAM_VIRUSEVENT_VIRUSNAME\" > {d}/name; \
             printf '%s' %v > {d}/v; env > {d}/env; \
             grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status > {d}/status; \
             if [ -e /proc/self/fd/{leaky} ]; then echo leaked > {d}/fd; fi; \
             pwd > {d}/pwd; echo out-line; echo err-line >&2"
        ),
        |_| {},
    );
    let file = b"/srv/mail/new message; rm -rf x \xff.eml";
    assert_eq!(e.trigger("Win.Test.EICAR_HDB-1", file), Triggered::Started);
    wait_idle(&e, Duration::from_secs(10));
    assert_eq!(read(dir.path().join("uid")).trim(), "65534");
    assert_eq!(read(dir.path().join("groups")).trim(), "65534");
    assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), file);
    assert_eq!(read(dir.path().join("name")), "Win.Test.EICAR_HDB-1");
    assert_eq!(read(dir.path().join("v")), "Win.Test.EICAR_HDB-1");
    assert_eq!(read(dir.path().join("pwd")).trim(), "/");
    let env = String::from_utf8_lossy(&std::fs::read(dir.path().join("env")).unwrap()).into_owned();
    for line in env.lines() {
        let key = line.split('=').next().unwrap();
        assert!(
            matches!(
                key,
                "PATH" | "CLAM_VIRUSEVENT_FILENAME" | "CLAM_VIRUSEVENT_VIRUSNAME" | "PWD"
            ),
            "unexpected variable in the command's environment: {line}"
        );
    }
    let status = read(dir.path().join("status"));
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(
        !dir.path().join("fd").exists(),
        "the command got a descriptor"
    );
    let lines = log_lines_with("command for Win.Test.EICAR_HDB-1 exited with status 0");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("virus_event_stdout=out-line"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("virus_event_stderr=err-line"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("duration_ms="), "{}", lines[0]);
    nix::unistd::close(leaky).unwrap();
}

#[test]
fn hostile_virus_names_stay_data() {
    require_root!("the command runs as nobody");
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    let pwned = dir.path().join("pwned");
    let e = events(
        format!("printf '%s' %v > {d}/q1; printf '%s' \"%v\" > {d}/q2; printf '%s' '%v' > {d}/q3"),
        |_| {},
    );
    for name in [
        format!("x'; touch {}; '", pwned.display()),
        format!("x\"; touch {}; \"", pwned.display()),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        format!("; touch {} #", pwned.display()),
    ] {
        assert_eq!(e.trigger(&name, b"stream"), Triggered::Started);
        wait_idle(&e, Duration::from_secs(10));
        for q in ["q1", "q2", "q3"] {
            assert_eq!(read(dir.path().join(q)), name, "{q}");
        }
        assert!(!pwned.exists(), "{name} ran a command");
    }
    // Outside printable ASCII: no command at all.
    assert_eq!(
        e.trigger("Win.Test\nrm -rf /", b"stream"),
        Triggered::Dropped(DropReason::BadVirusName)
    );
    // Where %v's quoting context is unclear, a name that needs quoting
    // runs nothing; a plain one still does.
    let e = events(format!("echo \"$(date) %v\" > {d}/unclear"), |_| {});
    assert_eq!(
        e.trigger("a;b", b"stream"),
        Triggered::Dropped(DropReason::Unquotable)
    );
    assert_eq!(e.trigger("Win.Test-1", b"stream"), Triggered::Started);
    wait_idle(&e, Duration::from_secs(10));
    assert!(read(dir.path().join("unclear")).ends_with(" Win.Test-1\n"));
}

#[test]
fn a_hanging_command_is_killed_with_its_process_group() {
    require_root!("the command runs as nobody");
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    let e = events(
        format!("echo $$ > {d}/pid; sleep 300 & echo $! > {d}/child; wait; echo done > {d}/after"),
        |c| c.timeout = 1,
    );
    let started = Instant::now();
    assert_eq!(e.trigger("Hang.Test", b"stream"), Triggered::Started);
    wait_idle(&e, Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!dir.path().join("after").exists());
    for f in ["pid", "child"] {
        let pid: i32 = read(dir.path().join(f)).trim().parse().unwrap();
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !is_zombie(pid);
        assert!(!alive, "{f} {pid} still runs");
    }
    let lines = log_lines_with("command for Hang.Test killed after the 1 s timeout");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("virus_event_status=\"timeout\""),
        "{}",
        lines[0]
    );
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn beyond_max_concurrent_and_max_per_minute_nothing_runs_and_it_is_logged() {
    require_root!("the command runs as nobody");
    let e = events("sleep 2".into(), |c| {
        c.max_concurrent = 2;
        c.max_per_minute = 3;
    });
    let results: Vec<Triggered> = (0..5).map(|_| e.trigger("Busy.Test", b"stream")).collect();
    assert_eq!(
        results,
        vec![
            Triggered::Started,
            Triggered::Started,
            Triggered::Dropped(DropReason::Busy),
            Triggered::Dropped(DropReason::Busy),
            Triggered::Dropped(DropReason::Busy),
        ]
    );
    assert_eq!(e.running(), 2);
    assert_eq!(e.dropped(), 3);
    let lines = log_lines_with("max-concurrent commands are running");
    assert_eq!(lines.len(), 1, "one line for a burst of drops: {lines:?}");
    assert!(lines[0].contains("virus_name=Busy.Test"), "{}", lines[0]);
    wait_idle(&e, Duration::from_secs(10));
    // Three commands per minute: one more starts, then none.
    assert_eq!(e.trigger("Busy.Test", b"stream"), Triggered::Started);
    assert_eq!(
        e.trigger("Busy.Test", b"stream"),
        Triggered::Dropped(DropReason::RateLimited)
    );
    wait_idle(&e, Duration::from_secs(10));
}

#[test]
fn root_is_refused_for_the_command() {
    let c = VirusEventConfig {
        command: "true".into(),
        user: "root".into(),
        ..VirusEventConfig::default()
    };
    let err = VirusEvents::new(&c, "nobody").err().unwrap().to_string();
    assert!(err.contains("never runs as root"), "{err}");
    // The default user (sandbox.user) is checked too, by number as well.
    let c = VirusEventConfig {
        command: "true".into(),
        ..VirusEventConfig::default()
    };
    assert!(VirusEvents::new(&c, "root").is_err());
    assert!(VirusEvents::new(&c, "0").is_err());
    let err = Config::parse("[virus-event]\ncommand = \"true\"\nuser = \"root\"\n", "t")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "t:3: virus-event.user: the command never runs as root: name an unprivileged user"
    );
    assert!(VirusEvents::from_config(&Config::default())
        .unwrap()
        .is_none());
}

/// Lines the command appended to `file`, sorted, waiting until `count` are there.
fn event_lines(file: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= count || Instant::now() > deadline {
            lines.sort();
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// INSTREAM, SCAN of a path and FILDES of a detected file, against clamd and
/// clamsentry configured with the same VirusEvent: each command sees the
/// same virus name and file name (`stream`, the path, the descriptor's
/// path), `%v` included; clamsentry's runs as the sandbox user, and a clean
/// scan runs none.
#[test]
fn daemons_run_the_command_as_clamd_does() {
    use common::client::{instream, talk, Conn};
    use common::daemons::Daemon;
    require_root!("the command runs as nobody");
    let db = common::TestDb::new();
    let dir = shared_dir();
    let sample = dir.path().join("sample.com");
    std::fs::write(&sample, common::eicar()).unwrap();
    let clean = dir.path().join("clean.txt");
    std::fs::write(&clean, b"nothing to see").unwrap();
    let command = |out: &std::path::Path| {
        format!(
            "echo \"$CLAM_VIRUSEVENT_VIRUSNAME|$CLAM_VIRUSEVENT_FILENAME|%v|$(id -u)\" >> {}",
            out.display()
        )
    };
    let clamd_out = dir.path().join("clamd.out");
    let ours_out = dir.path().join("clamsentry.out");
    let clamd = Daemon::clamd(db.path(), &[&format!("VirusEvent {}", command(&clamd_out))]);
    let ours_command = command(&ours_out);
    let ours = Daemon::clamsentry(
        db.path(),
        &[("virus-event", &format!("command = {:?}", ours_command))],
    );
    let run = |d: &Daemon| {
        let t = Duration::from_secs(20);
        let addr = d.unix_addr();
        let stream = talk(&addr, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], t).unwrap();
        assert!(String::from_utf8_lossy(&stream).contains("FOUND"));
        let scan = format!("SCAN {}\n", sample.display());
        let found = talk(&addr, &[scan.as_bytes()], t).unwrap();
        assert!(String::from_utf8_lossy(&found).contains("FOUND"));
        let scan = format!("SCAN {}\n", clean.display());
        let ok = talk(&addr, &[scan.as_bytes()], t).unwrap();
        assert!(String::from_utf8_lossy(&ok).ends_with("OK\n"));
        let file = std::fs::File::open(&sample).unwrap();
        let mut c = Conn::open(&addr).unwrap();
        c.send(b"zFILDES\0").unwrap();
        c.send_fd(std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap();
        let fd = c.read_until(b"\0", t);
        assert!(String::from_utf8_lossy(&fd).contains("FOUND"));
        let tcp = d.tcp_addr();
        let stream = talk(&tcp, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], t).unwrap();
        assert!(String::from_utf8_lossy(&stream).contains("FOUND"));
    };
    run(&clamd);
    run(&ours);
    let theirs = event_lines(&clamd_out, 4);
    let mine = event_lines(&ours_out, 4);
    // The uid goes, and the client's TCP port (it differs between the runs).
    let strip_uid = |lines: &[String]| -> Vec<String> {
        let port = regex::Regex::new(r"@[0-9]+\)").unwrap();
        lines
            .iter()
            .map(|l| {
                port.replace(l.rsplit_once('|').unwrap().0, "@PORT)")
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(theirs.len(), 4, "clamd ran {theirs:?}");
    assert_eq!(
        strip_uid(&mine),
        strip_uid(&theirs),
        "clamsentry {mine:?}, clamd {theirs:?}"
    );
    let sample = sample.display().to_string();
    let expected = [
        format!("Win.Test.EICAR_HDB-1.UNOFFICIAL|{sample}|Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        format!("Win.Test.EICAR_HDB-1.UNOFFICIAL|{sample}|Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        "Win.Test.EICAR_HDB-1.UNOFFICIAL|instream(127.0.0.1@PORT)|Win.Test.EICAR_HDB-1.UNOFFICIAL"
            .to_string(),
        "Win.Test.EICAR_HDB-1.UNOFFICIAL|instream(local)|Win.Test.EICAR_HDB-1.UNOFFICIAL"
            .to_string(),
    ];
    assert_eq!(strip_uid(&mine), expected);
    // As the daemon's service user (virus-event.user's default).
    let uid = common::service_user().0;
    assert!(
        mine.iter().all(|l| l.ends_with(&format!("|{uid}"))),
        "{mine:?}"
    );
    // No fifth line arrives late (the clean file ran nothing).
    std::thread::sleep(Duration::from_millis(500));
    let late = std::fs::read_to_string(&ours_out).unwrap();
    assert_eq!(late.lines().count(), 4, "{late}");
    assert!(
        ours.log().contains("exited with status 0"),
        "{}",
        ours.log()
    );
}
