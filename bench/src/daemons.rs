//! Starting the two daemons with equivalent settings, and reading their
//! memory and CPU time from /proc (summed over the daemon's process tree, so
//! a supervisor + worker split is counted whole).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Clamd,
    Clamsentry,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clamd => "clamd",
            Kind::Clamsentry => "clamsentry",
        }
    }
}

/// Settings both daemons get, each in its own words.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub threads: u32,
    pub max_queue: u32,
    pub stream_max_length: u64,
    pub max_file_size: u64,
    pub max_scan_size: u64,
    pub max_connections: u32,
    /// clamsentry's `limits.workers` (None: its default, the number of CPUs,
    /// at least 2). clamd has one process whatever this says.
    pub workers: Option<u32>,
    /// clamsentry's `log.level` ("info"; "debug" logs every connection
    /// with its worker, for looking into failures).
    pub log_level: String,
    /// TemporaryDirectory / scan.temporary-directory (libclamav makes a
    /// directory here for every scan; clamd also writes every stream here).
    pub temp_dir: PathBuf,
    /// clamsentry's `metrics.listen` (None: off).
    pub metrics_listen: Option<String>,
}

/// clamd.conf for the benchmark.
pub fn clamd_conf(dir: &Path, db: &Path, socket: &Path, s: &Settings) -> String {
    format!(
        "Foreground yes\n\
         LocalSocket {socket}\n\
         LocalSocketMode 600\n\
         DatabaseDirectory {db}\n\
         TemporaryDirectory {tmp}\n\
         PidFile {dir}/clamd.pid\n\
         LogFile {dir}/clamd.log\n\
         LogTime yes\n\
         MaxThreads {threads}\n\
         MaxQueue {queue}\n\
         MaxConnectionQueueLength {backlog}\n\
         StreamMaxLength {sml}\n\
         MaxFileSize {mfs}\n\
         MaxScanSize {mss}\n\
         MaxRecursion 16\n\
         CommandReadTimeout 30\n\
         ReadTimeout 120\n\
         IdleTimeout 120\n\
         ConcurrentDatabaseReload yes\n\
         SelfCheck 0\n",
        socket = socket.display(),
        db = db.display(),
        tmp = s.temp_dir.display(),
        dir = dir.display(),
        threads = s.threads,
        queue = s.max_queue,
        backlog = s.max_connections,
        sml = s.stream_max_length,
        mfs = s.max_file_size,
        mss = s.max_scan_size,
    )
}

/// clamsentry's TOML for the benchmark (also parsed in-process for the
/// engine-only measurement, so the engine gets identical settings).
pub fn clamsentry_toml(db: &Path, socket: &Path, s: &Settings) -> String {
    // clamd gets SelfCheck 0: neither daemon reloads on its own while the
    // benchmark changes reload.ndb. All load comes from one local user
    // (root), and clamd has no per-client cap: clamsentry's is raised to the
    // whole table, or the 256-client scenarios would measure its evictions.
    format!(
        "[database]\ndirectory = {db:?}\nself-check = 0\n\n\
         [listen]\nunix = {socket:?}\nunix-mode = \"0600\"\ntcp = []\n\n\
         [limits]\nstream-max-length = {sml}\nmax-threads = {threads}\nmax-queue = {queue}\n\
         max-connections = {conns}\nmax-connections-per-client = {conns}\ncommand-read-timeout = 30\nread-timeout = 120\nidle-timeout = 120\n{workers}\n\
         [scan]\ntemporary-directory = {tmp:?}\nmax-file-size = {mfs}\nmax-scan-size = {mss}\nmax-recursion = 16\n\n\
                  [sandbox]\nuser = \"nobody\"\n\n\
         [log]\nlevel = {level:?}\n",
        db = db.display().to_string(),
        socket = socket.display().to_string(),
        tmp = s.temp_dir.display().to_string(),
        sml = s.stream_max_length,
        threads = s.threads,
        queue = s.max_queue,
        conns = s.max_connections,
        mfs = s.max_file_size,
        mss = s.max_scan_size,
        level = s.log_level,
        workers = s
            .workers
            .map_or(String::new(), |n| format!("workers = {n}\n")),
    ) + &s
        .metrics_listen
        .as_ref()
        .map_or(String::new(), |m| format!("\n[metrics]\nlisten = {m:?}\n"))
}

/// A running daemon; killed (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub kind: Kind,
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub started: Instant,
}

impl Daemon {
    /// Spawns the daemon; does not wait for it to answer.
    pub fn spawn(
        kind: Kind,
        program: &Path,
        dir: &Path,
        db: &Path,
        s: &Settings,
    ) -> std::io::Result<Daemon> {
        let socket = dir.join(format!("{}.sock", kind.name()));
        let _ = std::fs::remove_file(&socket);
        let (conf, text) = match kind {
            Kind::Clamd => (dir.join("clamd.conf"), clamd_conf(dir, db, &socket, s)),
            Kind::Clamsentry => (dir.join("clamsentry.toml"), clamsentry_toml(db, &socket, s)),
        };
        std::fs::write(&conf, text)?;
        let log = dir.join(format!("{}.stderr", kind.name()));
        let mut cmd = Command::new(program);
        match kind {
            Kind::Clamd => cmd.arg("-c").arg(&conf),
            Kind::Clamsentry => cmd.arg("--config").arg(&conf),
        };
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
            })?;
        Ok(Daemon {
            kind,
            child,
            socket,
            log,
            started,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Resident memory of the daemon and all its descendants, KiB.
    pub fn rss_kib(&self) -> u64 {
        tree(self.pid()).iter().map(|&p| rss_kib(p)).sum()
    }

    /// CPU time (user + system) of the whole daemon, seconds: every
    /// process descending from it, alive now, plus those that have exited
    /// and been reaped by it (its children's times, which the kernel adds
    /// to the reaper). clamsentry's supervisor reaps its workers.
    pub fn cpu_s(&self) -> f64 {
        daemon_cpu_s(self.pid())
    }

    /// The tail of the daemon's own log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if self.kind == Kind::Clamd {
            let clamd_log = self.log.with_file_name("clamd.log");
            text.push_str(&std::fs::read_to_string(clamd_log).unwrap_or_default());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// `pid` and every descendant, from /proc/<pid>/task/*/children.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// Memory of one process in KiB: its proportional set size (PSS), so that
/// pages shared by several processes of one daemon (clamsentry's supervisor
/// and worker both map libclamav and libc) count once in a sum, as they do
/// in RAM; VmRSS where smaps_rollup is unavailable.
pub fn rss_kib(pid: i32) -> u64 {
    let field = |file: &str, name: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    field("smaps_rollup", "Pss:")
        .or_else(|| field("status", "VmRSS:"))
        .unwrap_or(0)
}

/// Every process whose parent chain leads to `pid` (and `pid`), from the
/// parent field of /proc/PID/stat: unlike task/*/children, it cannot miss a
/// child while other processes fork or exit.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            if let Some(pp) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i32>().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// CPU (user + system) of the whole daemon under `pid`, seconds: every live
/// descendant, plus the children `pid` has reaped (cutime + cstime).
pub fn daemon_cpu_s(pid: i32) -> f64 {
    let live: f64 = descendants(pid).iter().map(|&p| cpu_s(p)).sum();
    live + stat_ticks(pid, &[13, 14]) / clock_ticks()
}

/// The sum of fields of /proc/PID/stat, counted from the field after the
/// command name (0 is the state).
fn stat_ticks(pid: i32, fields: &[usize]) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum::<u64>() as f64
}

/// CPU time (user + system) of one process, seconds.
pub fn cpu_s(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); index 11 and 12 here.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time of this process (the load generator), seconds.
pub fn self_cpu_s() -> f64 {
    cpu_s(std::process::id() as i32)
}

/// CPU time all processes on the machine have used since boot (user, nice,
/// system, irq, softirq, steal), seconds, from /proc/stat.
pub fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum();
    busy as f64 / clock_ticks()
}

/// The direct children of `pid` (all its threads' children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The process name (`/proc/PID/comm`), empty if the process is gone.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// When the process started, in clock ticks since boot (field 22 of stat).
pub fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// clamsentry's process name for its engine holders (zygotes).
pub const ENGINE_COMM: &str = "clamsentry-eng";
/// clamsentry's process name for its scanning workers.
pub const WORKER_COMM: &str = "clamsentry-work";

/// The children of `supervisor` named `name`, oldest first.
pub fn children_named(supervisor: i32, name: &str) -> Vec<i32> {
    let mut v: Vec<(u64, i32)> = children(supervisor)
        .into_iter()
        .filter(|&p| comm(p) == name)
        .map(|p| (start_ticks(p), p))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, p)| p).collect()
}

/// The number of workers clamsentry starts for `limits.workers = n`
/// (0 or unset: the number of CPUs, at least 2), as `LimitsConfig::worker_count`.
pub fn expected_workers(n: Option<u32>) -> usize {
    match n.unwrap_or(0) {
        0 => crate::nproc().max(2),
        n => n as usize,
    }
}

/// Memory of one process of a tree, for the per-process breakdown.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcMem {
    pub pid: i32,
    pub comm: String,
    pub pss_kib: u64,
    pub rss_kib: u64,
}

/// PSS and RSS of every process of the tree under `pid`.
pub fn tree_memory(pid: i32) -> Vec<ProcMem> {
    tree(pid)
        .into_iter()
        .map(|p| {
            let rss = std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            ProcMem {
                pid: p,
                comm: comm(p),
                pss_kib: rss_kib(p),
                rss_kib: rss,
            }
        })
        .collect()
}

/// Reads a daemon's log as it grows, one complete line at a time.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    /// Starts at the current end of the file (only new lines are returned).
    pub fn at_end(path: &Path) -> LogTail {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        LogTail {
            path: path.to_path_buf(),
            offset,
            partial: String::new(),
        }
    }

    /// The complete lines written since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

/// The value of `key=value` in a clamsentry log line (values end at a
/// space; `how=signal SIGSEGV` gives "signal").
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    let rest = &line[at..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// A numeric `key=value` of a clamsentry log line.
pub fn log_num(line: &str, key: &str) -> Option<u64> {
    log_field(line, key).and_then(|v| v.parse().ok())
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    /// Highest PSS of the tree, KiB.
    pub pss_kib: u64,
    /// Most clamsentry engine holders and workers alive at once.
    pub engines: usize,
    pub workers: usize,
    pub samples: u64,
}

/// Samples the PSS of a process tree at an interval on its own OS thread
/// and keeps the peak.
///
/// Reading `smaps_rollup` walks the page tables of the process: about
/// 10 ms for each process that maps the 2M-signature engine, so 24 ms for
/// clamsentry's supervisor, engine holder and two workers, against 10 ms
/// for clamd. Sampled every 50 ms on the load generator's single thread,
/// as the benchmark first did, that stalled the generator a third of the
/// time during clamsentry's windows (its CPU 36-44 % against 17-21 %
/// during clamd's). So: a thread of its own, and a coarse interval.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Peak>>,
}

impl Sampler {
    pub fn start(pid: i32, every: Duration) -> Sampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = Peak::default();
            loop {
                let pss: u64 = tree(pid).iter().map(|&p| rss_kib(p)).sum();
                peak.pss_kib = peak.pss_kib.max(pss);
                peak.engines = peak.engines.max(children_named(pid, ENGINE_COMM).len());
                peak.workers = peak.workers.max(children_named(pid, WORKER_COMM).len());
                peak.samples += 1;
                let next = Instant::now() + every;
                while Instant::now() < next {
                    if flag.load(Ordering::Relaxed) {
                        return peak;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread and returns the peak.
    pub fn finish(mut self) -> Peak {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
