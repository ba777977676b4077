//! VirusEvent with real processes: the launcher (started as its own user,
//! non-dumpable, with only its channel), the command's environment and
//! identity, quoting of `%v` against injection, the timeout, the budget per
//! client, the launcher started again after it is killed, a TCP flood that
//! must leave a local user's command alone, and the last test runs both
//! daemons, clamsentry and clamd 1.4.6, with the same VirusEvent command
//! and compares what the commands saw. As root (as CI runs) the commands
//! run as `clamsentry-event` (created for the tests when missing, see
//! `common::users`); the tests that need root skip otherwise.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;

use clamsentry::config::{Config, VirusEventConfig};
use clamsentry::policy::PeerKey;
use clamsentry::supervisor::virus_event::budget::Refusal;
use clamsentry::supervisor::virus_event::{Options, Triggered, VirusEvents};
use common::users::EventUser;

/// Every log line of this test process (a global subscriber: outcomes are
/// logged from the service's own thread).
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

/// A directory anyone may write to (the command runs as clamsentry-event).
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("cs-virusevent")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// The options the daemon passes, with the real binary and nobody as the
/// workers' user.
fn options() -> Options {
    Options {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_clamsentry")),
        sandbox_user: "nobody".into(),
        both_kinds: true,
        peer_lines_per_minute: 30,
        peer_bytes_per_minute: 32 << 10,
        tcp_bytes_per_minute: 256 << 10,
    }
}

fn events(command: String, tune: impl FnOnce(&mut VirusEventConfig)) -> VirusEvents {
    events_with(command, tune, options())
}

fn events_with(
    command: String,
    tune: impl FnOnce(&mut VirusEventConfig),
    options: Options,
) -> VirusEvents {
    log();
    let mut c = VirusEventConfig {
        command,
        ..VirusEventConfig::default()
    };
    tune(&mut c);
    VirusEvents::start(&c, options).unwrap()
}

/// A local client (Unix socket) of uid `uid`.
fn local(uid: u32) -> PeerKey {
    PeerKey::unix(uid)
}

fn tcp(addr: &str) -> PeerKey {
    PeerKey::tcp(addr.parse::<std::net::SocketAddr>().unwrap().ip())
}

fn sent(t: Triggered) -> bool {
    matches!(t, Triggered::Sent(_))
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

fn status_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The launcher runs as `user` (every id), with no capability (its bounding
/// set empty too), with
/// no-new-privs, non-dumpable (its /proc files then belong to root)
/// and with no descriptor but 0-2 and its channel.
fn assert_confined(pid: i32, user: &EventUser) {
    let (u, g) = (user.uid, user.gid);
    assert_eq!(status_field(pid, "Uid"), format!("{u} {u} {u} {u}"));
    assert_eq!(status_field(pid, "Gid"), format!("{g} {g} {g} {g}"));
    assert_eq!(status_field(pid, "Groups"), g.to_string());
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    assert_eq!(owner, 0, "the launcher is dumpable");
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    fds.sort_unstable();
    assert_eq!(fds, [0, 1, 2, 3]);
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "descriptor {fd}");
    }
}

#[test]
fn command_gets_clamds_environment_as_its_own_user_from_a_confined_launcher() {
    require_root!("needs root to run the command as another user");
    let user = EventUser::ensure();
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    // A descriptor without close-on-exec, as systemd hands sockets over: the
    // launcher and the command must not get it.
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
             if [ -e /proc/self/fd/3 ]; then echo channel > {d}/fd3; fi; \
             echo $PPID > {d}/ppid; \
             if cat /proc/$PPID/environ > /dev/null 2>&1; then echo read > {d}/launcher; fi; \
             pwd > {d}/pwd; echo out-line; echo err-line >&2"
        ),
        |_| {},
    );
    let launcher = e.pid().expect("the launcher runs");
    assert_confined(launcher, &user);
    let file = b"/srv/mail/new message; rm -rf x \xff.eml";
    assert!(sent(e.trigger(local(1000), "Win.Test.EICAR_HDB-1", file)));
    wait_idle(&e, Duration::from_secs(20));
    assert_eq!(read(dir.path().join("uid")).trim(), user.uid.to_string());
    assert_eq!(read(dir.path().join("groups")).trim(), user.gid.to_string());
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
    assert!(
        !dir.path().join("fd3").exists(),
        "the command got the launcher's channel"
    );
    // The command's parent is the launcher, which it cannot read (nor ptrace).
    assert_eq!(read(dir.path().join("ppid")).trim(), launcher.to_string());
    assert!(
        !dir.path().join("launcher").exists(),
        "the command read its launcher's environment"
    );
    let lines = log_lines_with("command for Win.Test.EICAR_HDB-1 exited with status 0");
    assert_eq!(lines.len(), 1, "{lines:?}");
    for field in [
        "virus_event_stdout=out-line",
        "virus_event_stderr=err-line",
        "virus_event_user=clamsentry-event",
        "peer=uid=1000",
        "duration_ms=",
    ] {
        assert!(lines[0].contains(field), "{field}: {}", lines[0]);
    }
    assert_eq!(e.stats().outcomes, 1);
    drop(e);
    nix::unistd::close(leaky).unwrap();
}

#[test]
fn hostile_virus_names_stay_data() {
    require_root!("needs root to run the command as another user");
    let _user = EventUser::ensure();
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    let pwned = dir.path().join("pwned");
    let e = events(
        format!("printf '%s' %v > {d}/q1; printf '%s' \"%v\" > {d}/q2; printf '%s' '%v' > {d}/q3"),
        |_| {},
    );
    let worker = local(0);
    for name in [
        format!("x'; touch {}; '", pwned.display()),
        format!("x\"; touch {}; \"", pwned.display()),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        format!("; touch {} #", pwned.display()),
    ] {
        assert!(sent(e.trigger(worker, &name, b"stream")));
        wait_idle(&e, Duration::from_secs(20));
        for q in ["q1", "q2", "q3"] {
            assert_eq!(read(dir.path().join(q)), name, "{q}");
        }
        assert!(!pwned.exists(), "{name} ran a command");
    }
    // Outside printable ASCII: no command at all (the launcher says why).
    assert!(sent(e.trigger(worker, "Win.Test\nrm -rf /", b"stream")));
    wait_idle(&e, Duration::from_secs(20));
    let lines = log_lines_with("the virus name is empty, too long or not printable ASCII");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("virus_event_status=\"refused\""),
        "{}",
        lines[0]
    );
    // Where %v's quoting context is unclear, a name that needs quoting
    // runs nothing; a plain one still does.
    let e = events(format!("echo \"$(date) %v\" > {d}/unclear"), |_| {});
    assert!(sent(e.trigger(worker, "a;b", b"stream")));
    wait_idle(&e, Duration::from_secs(20));
    assert!(!dir.path().join("unclear").exists());
    let lines = log_lines_with("%v stands where its quoting context is unclear");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(sent(e.trigger(worker, "Win.Test-1", b"stream")));
    wait_idle(&e, Duration::from_secs(20));
    assert!(read(dir.path().join("unclear")).ends_with(" Win.Test-1\n"));
}

#[test]
fn a_hanging_command_is_killed_with_its_process_group() {
    require_root!("needs root to run the command as another user");
    let _user = EventUser::ensure();
    let dir = shared_dir();
    let d = dir.path().display().to_string();
    let e = events(
        format!("echo $$ > {d}/pid; sleep 300 & echo $! > {d}/child; wait; echo done > {d}/after"),
        |c| c.timeout = 1,
    );
    let started = Instant::now();
    assert!(sent(e.trigger(local(0), "Hang.Test", b"stream")));
    wait_idle(&e, Duration::from_secs(60));
    // Never before its timeout.
    assert!(started.elapsed() >= Duration::from_millis(900));
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

/// One client's detections cannot use another's share, at once or per
/// minute; a /24 is one client; refusals are logged within each client's
/// own log budget (here one line a minute).
#[test]
fn each_client_has_its_own_budget_and_refusals_are_logged_per_client() {
    require_root!("needs root to run the command as another user");
    let _user = EventUser::ensure();
    let e = events_with(
        "sleep 2".into(),
        |c| {
            c.max_concurrent = 2;
            c.max_per_minute = 4;
            c.max_per_minute_per_peer = 2;
        },
        Options {
            both_kinds: false,
            peer_lines_per_minute: 1,
            peer_bytes_per_minute: 32 << 10,
            tcp_bytes_per_minute: 256 << 10,
            ..options()
        },
    );
    let (a, b, b2) = (
        local(1000),
        tcp("127.0.0.1:5000"),
        tcp("[::ffff:127.0.0.77]:6000"),
    );
    let results = [
        e.trigger(a, "Busy.Test", b"stream"),
        e.trigger(a, "Busy.Test", b"stream"),
        e.trigger(a, "Busy.Test", b"stream"),
        e.trigger(b, "Busy.Test", b"stream"),
        e.trigger(b2, "Busy.Test", b"stream"),
        e.trigger(local(1001), "Busy.Test", b"stream"),
    ];
    assert!(sent(results[0]) && sent(results[3]), "{results:?}");
    assert_eq!(
        [results[1], results[2], results[4], results[5]],
        [
            Triggered::Refused(Refusal::PeerBusy),
            Triggered::Refused(Refusal::PeerBusy),
            Triggered::Refused(Refusal::PeerBusy),
            Triggered::Refused(Refusal::Busy),
        ]
    );
    assert_eq!(e.running(), 2);
    assert_eq!(e.stats().refused, 4);
    let lines = log_lines_with("this client runs its share of virus-event.max-concurrent");
    assert_eq!(lines.len(), 2, "one line per client: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("peer=uid=1000")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("peer=127.0.0.0/8")),
        "{lines:?}"
    );
    wait_idle(&e, Duration::from_secs(30));
    // Two starts a minute for each client, four in all.
    assert!(sent(e.trigger(a, "Busy.Test", b"stream")));
    assert!(sent(e.trigger(b2, "Busy.Test", b"stream")));
    wait_idle(&e, Duration::from_secs(30));
    assert_eq!(
        e.trigger(a, "Busy.Test", b"stream"),
        Triggered::Refused(Refusal::PeerRate)
    );
    assert_eq!(
        e.trigger(local(1001), "Busy.Test", b"stream"),
        Triggered::Refused(Refusal::Rate)
    );
    assert_eq!(e.stats().sent, 4);
}

#[test]
fn the_command_never_runs_as_root_nor_as_the_workers() {
    let err = Config::parse("[virus-event]\ncommand = \"true\"\nuser = \"root\"\n", "t")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "t:3:8: virus-event.user: the command never runs as root: name an unprivileged user"
    );
    assert!(Config::parse("[virus-event]\ncommand = \"true\"\nuser = \"0\"\n", "t").is_err());
    let err = Config::parse(
        "[sandbox]\nuser = \"clamsentry-event\"\n[virus-event]\ncommand = \"true\"\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("virus-event.user: \"clamsentry-event\" is sandbox.user"),
        "{err}"
    );
    assert_eq!(VirusEventConfig::default().user, "clamsentry-event");
    assert!(VirusEvents::from_config(&Config::default(), true)
        .unwrap()
        .is_none());
    require_root!("the rest looks users up as the daemon does");
    let start = |user: &str| {
        let c = VirusEventConfig {
            command: "true".into(),
            user: user.into(),
            ..VirusEventConfig::default()
        };
        VirusEvents::start(&c, options()).err().unwrap().to_string()
    };
    assert!(start("root").contains("never runs as root"));
    // sandbox.user is nobody in `options()`.
    let err = start("nobody");
    assert!(
        err.contains("has the uid of sandbox.user \"nobody\""),
        "{err}"
    );
    assert_eq!(
        start("cs-no-such-event-user"),
        "virus-event.user: no user \"cs-no-such-event-user\" on this system: create it with \
         `adduser --system --group --no-create-home --home /nonexistent cs-no-such-event-user` \
         (the Debian package creates clamsentry-event), or name another unprivileged user in \
         virus-event.user"
    );
}

/// The daemon refuses to start with a command whose user is missing, and
/// says how to create it.
#[test]
fn a_missing_user_stops_the_start_with_what_to_do() {
    require_root!("needs root to look users up as the daemon does");
    let db = common::TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("s.sock");
    let tcp = format!("127.0.0.1:{}", common::daemons::free_port())
        .parse()
        .unwrap();
    let config = common::daemons::write_config(
        dir.path(),
        db.path(),
        &unix,
        tcp,
        &[
            ("virus-event", "command = \"true\""),
            ("virus-event", "user = \"cs-no-such-event-user\""),
        ],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clamsentry: virus-event.user: no user \"cs-no-such-event-user\" on this system: create it with `adduser --system --group --no-create-home --home /nonexistent cs-no-such-event-user`"),
        "{err}"
    );
}

/// The launcher's pid, once the daemon has one named as such and has
/// logged it ready (waits).
fn launcher_of(d: &common::daemons::Daemon, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = d.children().into_iter().find(|p| {
            Some(*p) != not
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim_end() == "clamsentry-evt")
        });
        if let Some(p) = found.filter(|p| {
            d.log()
                .contains(&format!("virus-event: launcher started pid={p} "))
        }) {
            return p;
        }
        assert!(Instant::now() < deadline, "no launcher; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn instream_found(addr: &common::client::Addr) {
    use common::client::{instream, talk};
    let t = Duration::from_secs(30);
    let reply = talk(addr, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], t).unwrap();
    assert!(
        String::from_utf8_lossy(&reply).contains("FOUND"),
        "{}",
        common::client::show(&reply)
    );
}

/// SIGKILL to the launcher: the supervisor starts a new one, confined the
/// same way, counts it, and the next detection runs the command; the new
/// launcher is a child the supervisor knows (not swept as a stray).
#[test]
fn a_killed_launcher_is_started_again_and_counted() {
    require_root!("needs root to run the launcher as its own user");
    let user = EventUser::ensure();
    let db = common::TestDb::new();
    let dir = shared_dir();
    let out = dir.path().join("events");
    let command = format!("echo \"$CLAM_VIRUSEVENT_FILENAME\" >> {}", out.display());
    let d = common::daemons::Daemon::clamsentry(
        db.path(),
        &[("virus-event", &format!("command = {command:?}"))],
    );
    let first = launcher_of(&d, None);
    assert_confined(first, &user);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = launcher_of(&d, Some(first));
    assert_confined(second, &user);
    instream_found(&d.unix_addr());
    assert_eq!(event_lines(&out, 1), ["instream(local)"]);
    let log = d.log();
    assert!(
        log.contains("virus-event: the launcher ended") && log.contains("restarts=1"),
        "{log}"
    );
    // Longer than the stray sweep's grace (15 s): the launcher lives on.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(launcher_of(&d, None), second);
    instream_found(&d.unix_addr());
    assert_eq!(event_lines(&out, 2).len(), 2);
    assert!(!d.log().contains("restarts=2"), "{}", d.log());
}

/// A launcher taken over (here: its channel copied with `pidfd_getfd` and
/// the launcher stopped, as `tests/trust.rs` does with a worker) can only
/// send root outcomes; one that does not repeat an event in flight, a
/// second Ready, or bytes that do not decode end it, and a new launcher
/// serves the next detection.
#[test]
fn a_launcher_that_lies_is_ended_and_started_again() {
    use clamsentry::ipc::channel::Channel;
    use clamsentry::ipc::launch::{Excerpt, FromLauncher, Outcome, Status, ToLauncher};
    require_root!("needs root to copy the launcher's channel");
    let user = EventUser::ensure();
    let db = common::TestDb::new();
    let dir = shared_dir();
    let out = dir.path().join("events");
    let command = format!("echo \"$CLAM_VIRUSEVENT_FILENAME\" >> {}", out.display());
    let d = common::daemons::Daemon::clamsentry(
        db.path(),
        &[("virus-event", &format!("command = {command:?}"))],
    );
    // The launcher's end of its channel, and the launcher stopped.
    let take_over = |pid: i32| {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let fd = rustix::process::pidfd_getfd(&pidfd, 3, rustix::process::PidfdGetfdFlags::empty())
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        Channel::from_fd(fd)
    };
    let first = launcher_of(&d, None);
    let channel = take_over(first);
    // A detection: its event comes to the copied channel.
    instream_found(&d.unix_addr());
    let (msg, _) = channel.recv().unwrap().unwrap();
    let ToLauncher::Event(event) = ToLauncher::decode(&msg).unwrap() else {
        panic!("not an event");
    };
    assert_eq!(event.target, b"instream(local)");
    let lie = FromLauncher::Outcome(Outcome {
        id: event.id,
        peer: event.peer,
        virus: "Not.What.Was.Found".into(),
        target: event.target,
        status: Status::Exited(0),
        duration_ms: 1,
        stdout: Excerpt::default(),
        stderr: Excerpt::default(),
    });
    channel.send(&lie.encode(), &[]).unwrap();
    let second = launcher_of(&d, Some(first));
    let reason = format!("an outcome for event {} that it was not sent", event.id);
    assert!(d.log().contains(&reason), "{}", d.log());
    let channel = take_over(second);
    channel.send(&FromLauncher::Ready.encode(), &[]).unwrap();
    let third = launcher_of(&d, Some(second));
    assert!(
        d.log().contains("it sent Ready while running"),
        "{}",
        d.log()
    );
    let channel = take_over(third);
    channel.send(&[0xff], &[]).unwrap();
    let fourth = launcher_of(&d, Some(third));
    let log = d.log();
    assert!(log.contains("a message that does not decode"), "{log}");
    assert!(log.contains("restarts=3"), "{log}");
    // The new launcher runs the next command; nothing of the lies ran one.
    let sample = dir.path().join("sample.com");
    std::fs::write(&sample, common::eicar()).unwrap();
    let scan = format!("zSCAN {}\0", sample.display());
    let reply =
        common::client::talk(&d.unix_addr(), &[scan.as_bytes()], Duration::from_secs(30)).unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("FOUND"));
    assert_eq!(event_lines(&out, 1), [sample.display().to_string()]);
    assert_confined(fourth, &user);
}

/// Issue 17, attack 8: EICAR streams over TCP, 40 from 127.0.0.1 one
/// after the other, then 40 at once from eight more addresses of its /24,
/// then a local user's real detection (clamdscan as nobody): the flood runs
/// at most its client's share of commands (15 a minute by default), and the
/// local user's command runs. `max-concurrent` is 8 here (a client's share
/// 4), so that the sequential streams meet the per-minute bound, not the
/// bound at once; the budget per minute is the default.
#[test]
fn a_tcp_flood_leaves_a_local_user_their_command() {
    use common::client::connect_from;
    require_root!("needs root to run a client as nobody");
    let _user = EventUser::ensure();
    let db = common::TestDb::new();
    let dir = shared_dir();
    let out = dir.path().join("events");
    let command = format!("echo \"$CLAM_VIRUSEVENT_FILENAME\" >> {}", out.display());
    // The workers run as "daemon", so that nobody is just a local user.
    let d = common::daemons::Daemon::clamsentry(
        db.path(),
        &[
            ("virus-event", &format!("command = {command:?}")),
            ("virus-event", "max-concurrent = 8"),
            ("sandbox", "user = \"daemon\""),
        ],
    );
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tcp = d.tcp;
    let stream_from = move |host: u8| -> bool {
        let ip = format!("127.0.0.{host}").parse().unwrap();
        let mut s = connect_from(ip, tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&common::client::instream(
            b"zINSTREAM\0",
            &common::eicar(),
            4096,
        ))
        .unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).contains("FOUND")
    };
    // Each detection's fate (a command's outcome or a refusal) is in the log
    // before the next stream.
    let fates = |d: &common::daemons::Daemon| {
        d.log()
            .lines()
            .filter(|l| {
                l.contains("virus-event: command for")
                    || l.contains("virus-event: no command run for this detection")
            })
            .count()
    };
    for i in 0..40 {
        assert!(stream_from(1), "stream {i} answered FOUND");
        let deadline = Instant::now() + Duration::from_secs(30);
        while fates(&d) < i + 1 {
            assert!(Instant::now() < deadline, "no outcome for detection {i}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let flood: Vec<std::thread::JoinHandle<usize>> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..10u8)
                    .filter(|i| stream_from(2 + (t * 10 + i) % 8))
                    .count()
            })
        })
        .collect();
    let found: usize = flood.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(found, 40, "every stream is answered FOUND");
    // The local user's file, scanned by the real client as that user.
    let sample = dir.path().join("mine.com");
    std::fs::write(&sample, common::eicar()).unwrap();
    std::fs::set_permissions(&sample, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = dir.path().join("clamd.conf");
    std::fs::write(&conf, format!("LocalSocket {}\n", d.unix.display())).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let scan = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "clamdscan",
        ])
        .arg(format!("--config-file={}", conf.display()))
        .arg("--no-summary")
        .arg(&sample)
        .output()
        .expect("setpriv and clamdscan (apt-get install util-linux clamdscan)");
    let said = String::from_utf8_lossy(&scan.stdout);
    assert!(
        said.contains("FOUND"),
        "{said} {}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let sample_line = sample.display().to_string();
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().any(|l| l == sample_line) || Instant::now() > deadline {
            break text.lines().map(str::to_string).collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        lines.contains(&sample_line),
        "the local user's command did not run: {lines:?}\n{}",
        d.log()
    );
    let from_tcp = lines
        .iter()
        .filter(|l| l.starts_with("instream(127.0.0."))
        .count();
    assert!(
        (1..=15).contains(&from_tcp),
        "{from_tcp} commands for one /24 (its share: 15 a minute)"
    );
    let log = d.log();
    assert!(
        log.contains(
            "this client started virus-event.max-per-minute-per-peer commands this minute"
        ) && log.contains("peer=\"uid=0\""),
        "{log}"
    );
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
/// path), `%v` included; clamsentry's runs as its own user (the default
/// `virus-event.user`, `clamsentry-event`), and a clean scan runs none.
#[test]
fn daemons_run_the_command_as_clamd_does() {
    use common::client::{instream, talk, Conn};
    use common::daemons::Daemon;
    require_root!("needs root to run the command as another user");
    let user = EventUser::ensure();
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
    // Each detection's command has run before the next detection: the four
    // are one local user's (its TCP loopback connection included), and one
    // client runs at most max-concurrent - 1 commands at once.
    let run = |d: &Daemon, out: &std::path::Path| {
        let t = Duration::from_secs(20);
        let addr = d.unix_addr();
        let stream = talk(&addr, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], t).unwrap();
        assert!(String::from_utf8_lossy(&stream).contains("FOUND"));
        event_lines(out, 1);
        let scan = format!("SCAN {}\n", sample.display());
        let found = talk(&addr, &[scan.as_bytes()], t).unwrap();
        assert!(String::from_utf8_lossy(&found).contains("FOUND"));
        event_lines(out, 2);
        let scan = format!("SCAN {}\n", clean.display());
        let ok = talk(&addr, &[scan.as_bytes()], t).unwrap();
        assert!(String::from_utf8_lossy(&ok).ends_with("OK\n"));
        let file = std::fs::File::open(&sample).unwrap();
        let mut c = Conn::open(&addr).unwrap();
        c.send(b"zFILDES\0").unwrap();
        c.send_fd(std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap();
        let fd = c.read_until(b"\0", t);
        assert!(String::from_utf8_lossy(&fd).contains("FOUND"));
        event_lines(out, 3);
        let tcp = d.tcp_addr();
        let stream = talk(&tcp, &[&instream(b"zINSTREAM\0", &common::eicar(), 16)], t).unwrap();
        assert!(String::from_utf8_lossy(&stream).contains("FOUND"));
    };
    run(&clamd, &clamd_out);
    run(&ours, &ours_out);
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
    let uid = format!("|{}", user.uid);
    assert!(mine.iter().all(|l| l.ends_with(&uid)), "{mine:?}");
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
