//! The daemons under test: the real clamsentry binary and the real clamd 1.4.6.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::{talk, Addr};

pub const CLAMD: &str = "/usr/sbin/clamd";

/// Makes a daemon die with the test process, even if the test panics or is killed.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        })
    }
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub unix: PathBuf,
    pub tcp: SocketAddr,
    pub dir: tempfile::TempDir,
    pub name: &'static str,
}

/// A free TCP port on loopback (bound then released), never one this
/// process handed out before: the kernel may give a released port again
/// at once, and a daemon given the same port for two listeners fails to
/// start ("Address already in use").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// What a launch command needs: the binary, its generated configuration,
/// and the addresses the test will talk to.
pub struct Launch {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub unix: PathBuf,
    pub tcp: SocketAddr,
    /// The daemon's scratch directory (removed with the [`Daemon`]).
    pub dir: PathBuf,
}

/// Writes clamsentry's configuration for a test into `dir`: the database,
/// `unix` (mode 0666) and `tcp` listeners, debug logging, then `settings`
/// (`(table, "key = value")`, replacing a generated key of the same name).
pub fn write_config(
    dir: &Path,
    db: &Path,
    unix: &Path,
    tcp: SocketAddr,
    settings: &[(&str, &str)],
) -> PathBuf {
    let mut tables: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    tables
        .entry("database")
        .or_default()
        .push(format!("directory = {:?}", db.display().to_string()));
    tables
        .entry("listen")
        .or_default()
        .push(format!("unix = {:?}", unix.display().to_string()));
    tables
        .entry("listen")
        .or_default()
        .push("unix-mode = \"0666\"".into());
    tables
        .entry("listen")
        .or_default()
        .push(format!("tcp = [\"{tcp}\"]"));
    tables
        .entry("log")
        .or_default()
        .push("level = \"debug\"".into());
    // Tests run as root in CI: the workers run as a dedicated user, as
    // in production, never as the clients' nobody.
    if nix::unistd::geteuid().is_root() {
        super::service_user();
    }
    tables
        .entry("sandbox")
        .or_default()
        .push(format!("user = \"{}\"", super::SERVICE_USER));
    for (table, line) in settings {
        let lines = tables.entry(table).or_default();
        let key = line.split('=').next().unwrap().trim();
        lines.retain(|l| l.split('=').next().unwrap().trim() != key);
        lines.push(line.to_string());
    }
    let mut text = String::new();
    for (table, lines) in &tables {
        text.push_str(&format!("[{table}]\n{}\n", lines.join("\n")));
    }
    let config = dir.join("clamsentry.toml");
    std::fs::write(&config, text).unwrap();
    config
}

impl Daemon {
    /// Starts the clamsentry binary. `settings` are `(table, "key = value")`
    /// lines added to the generated configuration.
    pub fn clamsentry(db: &Path, settings: &[(&str, &str)]) -> Daemon {
        Daemon::launch(db, settings, |l| {
            let mut c = Command::new(&l.bin);
            c.arg("--config").arg(&l.config);
            c
        })
    }

    /// Starts clamsentry with a command built by `command` (for example
    /// under `systemd-socket-activate`), then waits until the Unix socket
    /// and the TCP address in [`Launch`] answer PING. stdout is discarded,
    /// stderr goes to the daemon log.
    pub fn launch(
        db: &Path,
        settings: &[(&str, &str)],
        command: impl FnOnce(&Launch) -> Command,
    ) -> Daemon {
        Daemon::launch_with(db, settings, command, true)
    }

    /// Starts clamsentry under `wrapper` (for example `ip netns exec NS`),
    /// and waits until its Unix socket answers PING (its TCP listeners,
    /// from `settings`, may be in another network namespace).
    pub fn launch_in(db: &Path, settings: &[(&str, &str)], wrapper: &[&str]) -> Daemon {
        Daemon::launch_with(
            db,
            settings,
            |l| {
                let mut c = Command::new(wrapper[0]);
                c.args(&wrapper[1..])
                    .arg(&l.bin)
                    .arg("--config")
                    .arg(&l.config);
                c
            },
            false,
        )
    }

    fn launch_with(
        db: &Path,
        settings: &[(&str, &str)],
        command: impl FnOnce(&Launch) -> Command,
        wait_tcp: bool,
    ) -> Daemon {
        let dir = tempfile::Builder::new().prefix("cs-run").tempdir().unwrap();
        let unix = dir.path().join("clamsentry.sock");
        // In a network lab, where its remote clients can reach it.
        let host = if super::netns::in_lab() {
            std::net::IpAddr::from(super::netns::DAEMON)
        } else {
            std::net::IpAddr::from([127, 0, 0, 1])
        };
        let tcp = SocketAddr::new(host, free_port());
        let config = write_config(dir.path(), db, &unix, tcp, settings);
        let launch = Launch {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_clamsentry")),
            config,
            unix: unix.clone(),
            tcp,
            dir: dir.path().to_path_buf(),
        };
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = die_with_parent(&mut command(&launch))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start clamsentry");
        let mut d = Daemon {
            child,
            unix,
            tcp,
            dir,
            name: "clamsentry",
        };
        if wait_tcp {
            d.wait_ready();
        } else {
            d.wait_answers(&[d.unix_addr()]);
        }
        d
    }

    /// Starts the real clamd with the same database; `extra` are clamd.conf lines.
    pub fn clamd(db: &Path, extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("clamd-run")
            .tempdir()
            .unwrap();
        let unix = dir.path().join("clamd.sock");
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut conf = format!(
            "Foreground yes\nLocalSocket {}\nLocalSocketMode 666\nTCPSocket {}\nTCPAddr 127.0.0.1\n\
             DatabaseDirectory {}\nTemporaryDirectory {}\nPidFile {}/clamd.pid\nLogFile {}/clamd.log\n\
             MaxThreads 4\nSelfCheck 0\n",
            unix.display(),
            tcp.port(),
            db.display(),
            std::env::temp_dir().display(),
            dir.path().display(),
            dir.path().display(),
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let config = dir.path().join("clamd.conf");
        std::fs::write(&config, conf).unwrap();
        let child = die_with_parent(&mut Command::new(CLAMD))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clamd (apt-get install clamav-daemon)");
        let mut d = Daemon {
            child,
            unix,
            tcp,
            dir,
            name: "clamd",
        };
        d.wait_ready();
        d
    }

    pub fn unix_addr(&self) -> Addr {
        Addr::Unix(self.unix.clone())
    }

    pub fn tcp_addr(&self) -> Addr {
        Addr::Tcp(self.tcp)
    }

    /// Waits until both sockets answer PING.
    pub fn wait_ready(&mut self) {
        self.wait_answers(&[self.unix_addr(), self.tcp_addr()]);
    }

    /// Waits until each of `addrs` answers PING.
    pub fn wait_answers(&mut self, addrs: &[Addr]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for addr in addrs {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "{} exited ({status}) before it answered; log:\n{}",
                        self.name,
                        self.log()
                    );
                }
                if talk(addr, &[b"zPING\0"], Duration::from_secs(2))
                    .ok()
                    .as_deref()
                    == Some(b"PONG\0")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer PING; log:\n{}",
                    self.name,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// clamsentry's stderr (or clamd's log file).
    pub fn log(&self) -> String {
        let name = if self.name == "clamd" {
            "clamd.log"
        } else {
            "daemon.log"
        };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The log once `pred` holds for it; panics (showing the log) after
    /// 60 s. The lines of the engine holder and of the workers reach the log
    /// through the supervisor (`log::relay`), a moment after what they
    /// did: a reply can reach the client first.
    pub fn log_when(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log once it contains `needle` (see [`Daemon::log_when`]).
    pub fn log_with(&self, needle: &str) -> String {
        self.log_when(needle, |l| l.contains(needle))
    }

    /// Resident memory in KiB of the daemon and its workers, from /proc.
    pub fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.pid())
    }

    /// A worker's pid (the lowest), waiting for one.
    pub fn worker(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(&w) = self.workers().first() {
                return w;
            }
            assert!(Instant::now() < deadline, "no worker process");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` workers run (all forked: a worker is born
    /// with its name, see `src/zygote/fork.rs`); returns their pids.
    pub fn wait_workers(&self, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let w = self.workers();
            if w.len() >= n {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "{} workers, not at least {n}:\n{}",
                w.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of the workers: live children of the supervisor named
    /// clamsentry-work.
    pub fn workers(&self) -> Vec<i32> {
        self.children_named("clamsentry-work")
    }

    /// The pid of the worker bound to client identity `tenant` (as the
    /// log says it: `uid=0`, `network`), waiting until one is. Workers are
    /// bound to one client identity each; the debug log names the binding
    /// and each worker's pid.
    pub fn worker_of(&self, tenant: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            let bound = log
                .lines()
                .rev()
                .filter(|l| {
                    l.contains("worker bound to its client")
                        && (l.trim_end().ends_with(&format!("tenant={tenant}"))
                            || l.trim_end().ends_with(&format!("tenant=\"{tenant}\"")))
                })
                .find_map(|l| field(l, "worker"));
            let pid = bound.and_then(|w| {
                log.lines()
                    .filter(|l| l.contains("worker said hello"))
                    .find(|l| field(l, "worker") == Some(w))
                    .and_then(|l| field(l, "pid"))
            });
            if let Some(pid) = pid {
                return pid as i32;
            }
            assert!(
                Instant::now() < deadline,
                "no worker bound to {tenant}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the observer (metrics, agent, self-test), once it runs.
    pub fn observer(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(&o) = self.children_named("clamsentry-obs").first() {
                return o;
            }
            assert!(Instant::now() < deadline, "no observer process");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of the engine holders (zygotes): live children of the
    /// supervisor named clamsentry-eng.
    pub fn zygotes(&self) -> Vec<i32> {
        self.children_named("clamsentry-eng")
    }

    fn children_named(&self, comm: &str) -> Vec<i32> {
        children(self.pid())
            .into_iter()
            .filter(|p| Stat::of(*p).is_some_and(|s| s.comm == comm && s.state != 'Z'))
            .collect()
    }

    /// The pids of all children of the supervisor.
    pub fn children(&self) -> Vec<i32> {
        children(self.pid())
    }
}

/// A process's name, state and parent, from /proc/PID/stat.
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
}

impl Stat {
    pub fn of(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
        let (head, tail) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let mut rest = tail.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some(Stat { comm, state, ppid })
    }
}

/// Children of a process (zombies included), sorted: every process in
/// /proc whose parent it is. (Not /proc/PID/task/*/children, which may
/// miss a child while others are forked or exit.)
pub fn children(pid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| Stat::of(*p).is_some_and(|s| s.ppid == pid))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// Proportional set size in KiB of one process (its smaps_rollup; root
/// reads any process's), 0 when unreadable.
pub fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// PSS in KiB of a process and all its descendants.
pub fn tree_pss_kib(pid: i32) -> u64 {
    pss_kib(pid) + children(pid).into_iter().map(tree_pss_kib).sum::<u64>()
}

/// VmRSS in KiB of a process and all its descendants.
pub fn tree_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    own + children(pid).into_iter().map(tree_rss_kib).sum::<u64>()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after ` key=` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split(&format!(" {key}="))
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}
