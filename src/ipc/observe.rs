//! What the daemon says about itself, between its processes: the closed,
//! bounded messages behind the metrics, the status page, the self-test and
//! the HAProxy agent.
//!
//! | channel | sender → receiver | messages |
//! |---|---|---|
//! | worker control | worker → supervisor | [`WorkerCounters`] (in `FromWorker::Counters`) |
//! | zygote control | zygote → supervisor | [`ProcUsage`] (in `FromZygote::Usage`) |
//! | observer control | supervisor → observer | [`ToObserver`]: `Start` (with the listening sockets), `Snapshot`, `Selftest` (with one end of a socket pair) |
//! | observer control | observer → supervisor | [`FromObserver`]: `Usage`, `SelftestResult` |
//!
//! Every count that has labels is a fixed array indexed by a closed enum
//! ([`ScanCommand`], [`ScanResult`], [`Category`], [`Limit`], …), so a
//! message cannot invent a label value; the few strings (listener names,
//! signature names of the opt-in top list, a self-test's detail) are
//! bounded in length and number. Encoding as in `messages`: integers little
//! endian, strings as `u32` length + bytes, booleans 0 or 1, so every value
//! has one encoding (the `observe` fuzz target checks the round trip).
//! Cumulative counts are cumulative since the sending process started; the
//! supervisor keeps the totals of processes that are gone, so a counter the
//! observer shows never goes down.
#![forbid(unsafe_code)]

use super::messages::DecodeError;
use crate::proto::CommandKind;

// ---------------------------------------------------------------- bounds

/// Listener names one worker or one snapshot reports (systemd's
/// `FileDescriptorName=` values, "unix", "tcp", "selftest"); beyond, counts
/// go to the last one, named [`OTHER_LISTENER`].
pub const MAX_LISTENERS: usize = 16;
/// Longest listener name (systemd allows 255; longer ones are cut).
pub const MAX_LISTENER_NAME: usize = 64;
/// Name of the entry that collects listeners beyond [`MAX_LISTENERS`].
pub const OTHER_LISTENER: &str = "other";
/// The listener name of the self-test's connection: it is no client's, so
/// it runs no VirusEvent command, keeps no idle daemon alive, and its
/// detections are logged at debug level.
pub const SELFTEST_LISTENER: &str = "selftest";
/// Entries of the opt-in list of detections by full signature name.
pub const MAX_TOP: usize = 100;
/// Longest signature name in that list (longer ones are cut).
pub const MAX_TOP_NAME: usize = 128;
/// Reloads the snapshot remembers for the status page.
pub const MAX_RECENT_RELOADS: usize = 10;
/// Longest self-test detail text.
pub const MAX_DETAIL: usize = 256;
/// Longest version text.
pub const MAX_VERSION: usize = 64;
/// Longest configuration handed to the observer (what fits in a datagram
/// with the rest of its first message).
pub const MAX_CONFIG: usize = super::messages::MAX_MESSAGE - 16;

// ---------------------------------------------------------------- closed label sets

/// Defines a closed set of label values: a fieldless enum, its count, its
/// index and its label text.
macro_rules! label_set {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub const COUNT: usize = [$($s),+].len();
            pub fn index(self) -> usize {
                self as usize
            }
            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
    };
}

label_set!(
    /// Commands that scan something.
    ScanCommand {
        Instream = "INSTREAM",
        Fildes = "FILDES",
        Scan = "SCAN",
        ContScan = "CONTSCAN",
        MultiScan = "MULTISCAN",
        AllMatchScan = "ALLMATCHSCAN",
    }
);

label_set!(
    /// A scan's outcome.
    ScanResult {
        Clean = "clean",
        Found = "found",
        Error = "error",
    }
);

label_set!(
    /// What the listener's policy said about a command.
    CommandOutcome {
        Allowed = "allowed",
        /// Not in the listener's command profile.
        Refused = "refused",
        /// Administrative command from a peer that is not an administrator.
        NotAdmin = "not_admin",
    }
);

label_set!(
    /// What the supervisor did with a new connection.
    ConnOutcome {
        Accepted = "accepted",
        /// Closed unread: outside `listen.tcp-allow`.
        Refused = "refused",
        /// An idle connection closed to make room for a new one.
        Evicted = "evicted",
        /// Refused: a connection cap was reached and nothing could be evicted.
        OverCap = "over_cap",
    }
);

label_set!(
    /// Platform (file format) prefixes of signature names, from ClamAV's
    /// official naming guidelines (`{platform}.{category}.{name}-{id}-{rev}`):
    /// the documented list (Andr … Midi), then the prefixes of the official
    /// databases the documented list stops before (Multios … Xml); anything
    /// else is `other`. Matched case-insensitively on the text before the
    /// first `.` (or `-`: `Eicar-Signature`).
    Category {
        Andr = "Andr",
        Archive = "Archive",
        Asp = "Asp",
        Cert = "Cert",
        Clamav = "Clamav",
        Clean = "Clean",
        Css = "Css",
        Doc = "Doc",
        Dos = "Dos",
        Eicar = "Eicar",
        Email = "Email",
        Embedded = "Embedded",
        Emf = "Emf",
        Gif = "Gif",
        Heuristics = "Heuristics",
        Html = "Html",
        Hunting = "Hunting",
        Hwp = "Hwp",
        Img = "Img",
        Ios = "Ios",
        Java = "Java",
        Js = "Js",
        Legacy = "Legacy",
        Lnk = "Lnk",
        Midi = "Midi",
        Multios = "Multios",
        Ole2 = "Ole2",
        Onenote = "Onenote",
        Osx = "Osx",
        Pdf = "Pdf",
        Php = "Php",
        Pua = "Pua",
        Rtf = "Rtf",
        Swf = "Swf",
        Txt = "Txt",
        Unix = "Unix",
        Vbs = "Vbs",
        Win = "Win",
        Xls = "Xls",
        Xml = "Xml",
        Other = "other",
    }
);

impl Category {
    /// The category of a signature name.
    pub fn of(name: &str) -> Category {
        let prefix = match name.find('.') {
            Some(n) => &name[..n],
            None => name.split('-').next().unwrap_or(name),
        };
        Category::ALL
            .iter()
            .copied()
            .find(|c| *c != Category::Other && c.label().eq_ignore_ascii_case(prefix))
            .unwrap_or(Category::Other)
    }
}

label_set!(
    /// A limit a request ran into, by the configuration key that sets it.
    Limit {
        StreamMaxLength = "limits.stream-max-length",
        StreamMemory = "limits.stream-memory",
        StreamMinRate = "limits.stream-min-rate",
        ReadTimeout = "limits.read-timeout",
        CommandReadTimeout = "limits.command-read-timeout",
        CommandTimeout = "limits.command-timeout",
        IdleTimeout = "limits.idle-timeout",
        MaxCommandLength = "limits.max-command-length",
        MaxSessionCommands = "limits.max-session-commands",
        MaxQueue = "limits.max-queue",
        MaxScanSize = "scan.max-scan-size",
        MaxFileSize = "scan.max-file-size",
        MaxRecursion = "scan.max-recursion",
        MaxFiles = "scan.max-files",
        MaxScanTime = "scan.max-scan-time",
    }
);

label_set!(
    /// Why a scan ended in an error.
    ErrorReason {
        /// libclamav could not read or map what it scanned.
        Io = "io",
        Access = "access",
        TemporaryDirectory = "temporary_directory",
        Memory = "memory",
        /// A malformed file libclamav gave up on.
        Format = "format",
        /// A libclamav limit (also in `limits_exceeded_total`).
        Limit = "limit",
        Bytecode = "bytecode",
        /// FILDES with something that is not a regular file.
        NotRegularFile = "not_regular_file",
        /// The scan queue was full (`limits.max-queue`).
        QueueFull = "queue_full",
        Other = "other",
    }
);

label_set!(
    /// Why a worker was replaced.
    RestartReason {
        /// It died of a signal or exited unasked.
        Crashed = "crashed",
        /// It stopped answering the supervisor's pings.
        Wedged = "wedged",
        /// Its scan pool showed no progress.
        Stalled = "stalled",
        /// It broke the protocol.
        Violation = "violation",
        /// It asked to be replaced (its temporary directory failed a scan).
        Retired = "retired",
        /// The fork failed, or it never said hello.
        NotStarted = "not_started",
        /// It did not finish draining within `limits.drain-timeout`.
        DrainTimeout = "drain_timeout",
    }
);

label_set!(
    /// What started a reload.
    ReloadTrigger {
        /// RELOAD on a socket (freshclam's NotifyClamd).
        Command = "command",
        /// SIGHUP or SIGUSR2 (`systemctl reload`).
        Signal = "signal",
        /// A change in the signature directory (`database.self-check`).
        SelfCheck = "self_check",
        /// The engine holder died and the signatures were loaded again.
        EngineRestart = "engine_restart",
    }
);

impl ReloadTrigger {
    /// The trigger of the lifecycle's reload events ("RELOAD command",
    /// "SIGHUP", …).
    pub fn of(trigger: &str) -> ReloadTrigger {
        match trigger {
            "RELOAD command" => ReloadTrigger::Command,
            "database.self-check" => ReloadTrigger::SelfCheck,
            t if t.starts_with("SIG") => ReloadTrigger::Signal,
            _ => ReloadTrigger::EngineRestart,
        }
    }
}

label_set!(
    /// The daemon's processes, by role.
    Role {
        Supervisor = "supervisor",
        EngineHolder = "engine_holder",
        Worker = "worker",
        Observer = "observer",
    }
);

label_set!(
    /// How a self-test ended.
    SelftestOutcome {
        /// The EICAR stream was answered FOUND.
        Passed = "passed",
        /// Answered otherwise (OK, an error), or no answer in time.
        Failed = "failed",
        /// Not run: no serving worker, or the scan queue was full.
        Skipped = "skipped",
    }
);

/// Index of a clamd command word for per-command counts (clamd's table
/// order, `UNKNOWN` last).
pub fn command_index(kind: CommandKind) -> usize {
    CommandKind::all()
        .position(|k| k == kind)
        .unwrap_or(COMMANDS - 1)
}

/// The command of an index from [`command_index`].
pub fn command_of(index: usize) -> CommandKind {
    CommandKind::all()
        .nth(index)
        .unwrap_or(CommandKind::Unknown)
}

/// clamd's 17 command words and UNKNOWN.
pub const COMMANDS: usize = 18;

// ---------------------------------------------------------------- histograms

/// Upper bounds (µs) of the scan duration buckets.
pub const DURATION_BOUNDS_US: [u64; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
];
/// Upper bounds (bytes) of the scan size buckets.
pub const SIZE_BOUNDS: [u64; 10] = [
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
    256 << 20,
];
/// Upper bounds (µs) of the queue wait buckets.
pub const QUEUE_WAIT_BOUNDS_US: [u64; 12] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
    30_000_000,
];
/// Upper bounds (µs) of the reload duration buckets.
pub const RELOAD_BOUNDS_US: [u64; 11] = [
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
    600_000_000,
];

/// A histogram with fixed buckets: `counts[i]` observations at most
/// `bounds[i]` and above the bound before (not cumulative); the last count
/// is above every bound. `sum` in the unit of the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram<const N: usize> {
    pub counts: [u64; N],
    pub sum: u64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: [0; N],
            sum: 0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Counts `value` in the bucket `bounds` (N - 1 bounds) puts it in.
    pub fn observe(&mut self, bounds: &[u64], value: u64) {
        let i = bounds.iter().position(|b| value <= *b).unwrap_or(N - 1);
        let i = i.min(N - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.sum = self.sum.saturating_add(value);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    pub fn add(&mut self, other: &Histogram<N>) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// `self - earlier`, for counts that only grow (0 where they did not).
    pub fn since(&self, earlier: &Histogram<N>) -> Histogram<N> {
        let mut out = *self;
        for (a, b) in out.counts.iter_mut().zip(earlier.counts.iter()) {
            *a = a.saturating_sub(*b);
        }
        out.sum = out.sum.saturating_sub(earlier.sum);
        out
    }

    /// The `q` quantile (0..=1) estimated by linear interpolation inside
    /// its bucket, in the unit of `bounds`; `None` without observations.
    /// Above the last bound the last bound is returned.
    pub fn quantile(&self, bounds: &[u64], q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            let before = seen;
            seen += c;
            if (seen as f64) >= rank && *c > 0 {
                let Some(&upper) = bounds.get(i) else {
                    return bounds.last().map(|b| *b as f64);
                };
                let lower = if i == 0 { 0 } else { bounds[i - 1] };
                let within = (rank - before as f64) / *c as f64;
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
        }
        bounds.last().map(|b| *b as f64)
    }
}

pub type DurationHistogram = Histogram<17>;
pub type SizeHistogram = Histogram<11>;
pub type QueueWaitHistogram = Histogram<13>;
pub type ReloadHistogram = Histogram<12>;

// ---------------------------------------------------------------- messages

/// A process's own resource use, measured by itself (the supervisor cannot
/// read its sandboxed children's `/proc/PID/smaps_rollup`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcUsage {
    /// Proportional set size and resident set size, KiB.
    pub pss_kib: u64,
    pub rss_kib: u64,
    /// User plus system CPU time since the process started, µs.
    pub cpu_us: u64,
    /// Open descriptors.
    pub fds: u32,
}

/// Per-listener counts of one worker or of the whole daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerCounts {
    pub name: String,
    /// `scans[command * ScanResult::COUNT + result]`.
    pub scans: [u64; ScanCommand::COUNT * ScanResult::COUNT],
    /// `commands[command_index * CommandOutcome::COUNT + outcome]`.
    pub commands: [u64; COMMANDS * CommandOutcome::COUNT],
}

impl ListenerCounts {
    pub fn new(name: &str) -> ListenerCounts {
        ListenerCounts {
            name: printable(name, MAX_LISTENER_NAME),
            scans: [0; ScanCommand::COUNT * ScanResult::COUNT],
            commands: [0; COMMANDS * CommandOutcome::COUNT],
        }
    }

    pub fn scans(&self, c: ScanCommand, r: ScanResult) -> u64 {
        self.scans[c.index() * ScanResult::COUNT + r.index()]
    }

    pub fn commands(&self, kind: CommandKind, o: CommandOutcome) -> u64 {
        self.commands[command_index(kind) * CommandOutcome::COUNT + o.index()]
    }

    pub fn add(&mut self, other: &ListenerCounts) {
        add_all(&mut self.scans, &other.scans);
        add_all(&mut self.commands, &other.commands);
    }
}

/// The pool of scanning threads, as one worker sees it now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolNow {
    pub threads: u32,
    pub busy: u32,
    pub queued: u32,
    /// Wait so far of the jobs queued now: shortest, longest, sum (µs).
    pub wait_min_us: u64,
    pub wait_max_us: u64,
    pub wait_sum_us: u64,
}

/// What a worker counted since it started, and its state now: sent to the
/// supervisor at most about once a second when something changed, and once
/// more before a draining worker exits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerCounters {
    pub listeners: Vec<ListenerCounts>,
    pub duration: DurationHistogram,
    pub size: SizeHistogram,
    pub queue_wait: QueueWaitHistogram,
    pub detections: Vec<u64>,
    /// The most frequent full signature names (only with
    /// `metrics.top-detections` > 0), most frequent first.
    pub top: Vec<(String, u64)>,
    pub limits: Vec<u64>,
    pub errors: Vec<u64>,
    /// Scans and walks whose client left before the reply.
    pub abandoned: u64,
    pub pool: PoolNow,
    pub usage: ProcUsage,
}

impl WorkerCounters {
    /// All counts zero, every label array at its size.
    pub fn empty() -> WorkerCounters {
        WorkerCounters {
            detections: vec![0; Category::COUNT],
            limits: vec![0; Limit::COUNT],
            errors: vec![0; ErrorReason::COUNT],
            ..WorkerCounters::default()
        }
    }
}

/// The database of the engine in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbInfo {
    pub version: u32,
    pub signatures: u32,
    /// Build time from the header of the newest signature container
    /// (`daily.cvd`/`.cld`), seconds since the epoch; 0 when unknown.
    pub build_time: u64,
}

/// One reload, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Seconds since the epoch at its end.
    pub at: u64,
    pub trigger: ReloadTrigger,
    pub ok: bool,
    pub duration_us: u64,
    pub db_version: u32,
}

/// Per-listener numbers of the supervisor and the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStats {
    pub counts: ListenerCounts,
    /// Connections open now.
    pub open: u32,
    /// `connections[ConnOutcome]`.
    pub connections: [u64; ConnOutcome::COUNT],
}

/// The processes of one role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleUsage {
    pub processes: u32,
    pub pss_kib: u64,
    pub rss_kib: u64,
    /// CPU time of the role's processes, those gone included, µs.
    pub cpu_us: u64,
    pub fds: u64,
}

/// Workers by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStates {
    pub configured: u32,
    pub forking: u32,
    pub serving: u32,
    pub draining: u32,
}

/// The self-test's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelftestState {
    /// `selftest.interval` is not 0.
    pub enabled: bool,
    /// Runs by [`SelftestOutcome`].
    pub runs: [u64; SelftestOutcome::COUNT],
    /// Seconds since the epoch; 0: never.
    pub last_success: u64,
    pub last_failure: u64,
    /// The last run that was not skipped failed.
    pub failing: bool,
    /// What the last run that was not skipped saw.
    pub detail: String,
}

/// What the daemon is doing, as the agent and `ready` need it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// A worker has an engine and serves.
    pub engine: bool,
    /// Stopping: draining for SIGTERM, SHUTDOWN or exit-when-idle.
    pub stopping: bool,
    /// An administrator put the daemon in maintenance.
    pub maintenance: bool,
    /// A reload waits for memory headroom (the old signatures serve).
    pub no_headroom: bool,
    /// A reload is in progress.
    pub reloading: bool,
}

/// Everything the observer shows, sent by the supervisor about once a
/// second. The observer renders the last one it received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub seq: u64,
    /// The supervisor's clock (seconds since the epoch, with ms).
    pub time_ms: u64,
    pub started: u64,
    pub version: String,
    pub libclamav: String,
    pub db: DbInfo,
    pub generation: u64,
    pub engine_load_us: u64,
    /// `reloads[trigger * 2 + ok]`.
    pub reloads: Vec<u64>,
    pub reload_duration: ReloadHistogram,
    pub recent_reloads: Vec<ReloadRecord>,
    pub listeners: Vec<ListenerStats>,
    pub duration: DurationHistogram,
    pub size: SizeHistogram,
    pub queue_wait: QueueWaitHistogram,
    pub detections: Vec<u64>,
    pub top: Vec<(String, u64)>,
    pub limits: Vec<u64>,
    pub errors: Vec<u64>,
    pub abandoned: u64,
    pub pool: PoolNow,
    pub workers: WorkerStates,
    pub restarts: Vec<u64>,
    pub roles: Vec<RoleUsage>,
    pub selftest: SelftestState,
    pub flags: Flags,
}

impl Snapshot {
    /// Scans of every listener, by result.
    pub fn scans_by_result(&self, r: ScanResult) -> u64 {
        self.listeners
            .iter()
            .flat_map(|l| ScanCommand::ALL.iter().map(move |c| l.counts.scans(*c, r)))
            .fold(0, u64::saturating_add)
    }
}

/// A sum of counts that came from other processes: it saturates, so a
/// process that lies cannot make the one adding up fault.
pub fn saturating_sum(counts: impl IntoIterator<Item = u64>) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// Supervisor → observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToObserver {
    /// The first message: the configuration (TOML, as the engine holder
    /// gets it) and which listening sockets travel with it, in order.
    Start {
        toml: String,
        metrics: bool,
        agent: bool,
    },
    Snapshot(Box<Snapshot>),
    /// Run self-test `id` on the socket that travels with this message: the
    /// supervisor handed its other end to a worker as a connection.
    Selftest {
        id: u64,
    },
}

/// Observer → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromObserver {
    Usage(ProcUsage),
    SelftestResult {
        id: u64,
        outcome: SelftestOutcome,
        detail: String,
    },
}

// ---------------------------------------------------------------- encoding

/// Encoder (see the module documentation for the format).
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn new(tag: u8) -> Out {
        Out(vec![tag])
    }
    pub fn u8(&mut self, v: u8) -> &mut Out {
        self.0.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Out {
        self.u8(u8::from(v))
    }
    pub fn u32(&mut self, v: u32) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn text(&mut self, v: &str) -> &mut Out {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    /// A fixed-size array: no length (the decoder knows it).
    pub fn fixed(&mut self, v: &[u64]) -> &mut Out {
        for x in v {
            self.u64(*x);
        }
        self
    }
    pub fn histogram<const N: usize>(&mut self, h: &Histogram<N>) -> &mut Out {
        self.fixed(&h.counts).u64(h.sum)
    }
    pub fn usage(&mut self, u: &ProcUsage) -> &mut Out {
        self.u64(u.pss_kib).u64(u.rss_kib).u64(u.cpu_us).u32(u.fds)
    }
    fn listener(&mut self, l: &ListenerCounts) -> &mut Out {
        self.text(&l.name).fixed(&l.scans).fixed(&l.commands)
    }
    fn top(&mut self, top: &[(String, u64)]) -> &mut Out {
        self.u32(top.len() as u32);
        for (name, n) in top {
            self.text(name).u64(*n);
        }
        self
    }
    fn pool(&mut self, p: &PoolNow) -> &mut Out {
        self.u32(p.threads)
            .u32(p.busy)
            .u32(p.queued)
            .u64(p.wait_min_us)
            .u64(p.wait_max_us)
            .u64(p.wait_sum_us)
    }
}

/// Decoder.
pub struct In<'a> {
    buf: &'a [u8],
}

impl<'a> In<'a> {
    pub fn new(buf: &'a [u8]) -> In<'a> {
        In { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue),
        }
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn text(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
    /// A name shown in a label or a page: printable, no control characters.
    fn name(&mut self, max: usize) -> Result<String, DecodeError> {
        let s = self.text(max)?;
        if s.chars().any(char::is_control) {
            return Err(DecodeError::BadValue);
        }
        Ok(s)
    }
    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        Ok(n)
    }
    fn array<const N: usize>(&mut self) -> Result<[u64; N], DecodeError> {
        let mut a = [0u64; N];
        for x in a.iter_mut() {
            *x = self.u64()?;
        }
        Ok(a)
    }
    fn vec(&mut self, n: usize) -> Result<Vec<u64>, DecodeError> {
        (0..n).map(|_| self.u64()).collect()
    }
    fn histogram<const N: usize>(&mut self) -> Result<Histogram<N>, DecodeError> {
        Ok(Histogram {
            counts: self.array()?,
            sum: self.u64()?,
        })
    }
    pub fn usage(&mut self) -> Result<ProcUsage, DecodeError> {
        Ok(ProcUsage {
            pss_kib: self.u64()?,
            rss_kib: self.u64()?,
            cpu_us: self.u64()?,
            fds: self.u32()?,
        })
    }
    fn listener(&mut self) -> Result<ListenerCounts, DecodeError> {
        Ok(ListenerCounts {
            name: self.name(MAX_LISTENER_NAME)?,
            scans: self.array()?,
            commands: self.array()?,
        })
    }
    fn listeners(&mut self) -> Result<Vec<ListenerCounts>, DecodeError> {
        let n = self.count(MAX_LISTENERS)?;
        (0..n).map(|_| self.listener()).collect()
    }
    fn top(&mut self) -> Result<Vec<(String, u64)>, DecodeError> {
        let n = self.count(MAX_TOP)?;
        (0..n)
            .map(|_| Ok((self.name(MAX_TOP_NAME)?, self.u64()?)))
            .collect()
    }
    fn pool(&mut self) -> Result<PoolNow, DecodeError> {
        Ok(PoolNow {
            threads: self.u32()?,
            busy: self.u32()?,
            queued: self.u32()?,
            wait_min_us: self.u64()?,
            wait_max_us: self.u64()?,
            wait_sum_us: self.u64()?,
        })
    }
    pub fn end<T>(self, v: T) -> Result<T, DecodeError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

/// The `n` most frequent names, most frequent first (ties by name), at
/// most [`MAX_TOP`].
pub fn top_names(names: &std::collections::HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = names.iter().map(|(k, v)| (k.clone(), *v)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n.min(MAX_TOP));
    all
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn add_all(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b.iter()) {
        *x = x.saturating_add(*y);
    }
}

impl WorkerCounters {
    /// The message body (after `FromWorker`'s tag).
    pub fn encode_into(&self, out: &mut Out) {
        out.u32(self.listeners.len() as u32);
        for l in &self.listeners {
            out.listener(l);
        }
        out.histogram(&self.duration)
            .histogram(&self.size)
            .histogram(&self.queue_wait)
            .fixed(&self.detections)
            .top(&self.top)
            .fixed(&self.limits)
            .fixed(&self.errors)
            .u64(self.abandoned)
            .pool(&self.pool)
            .usage(&self.usage);
    }

    /// Decodes a body; every label array has its exact size.
    pub fn decode_from(r: &mut In<'_>) -> Result<WorkerCounters, DecodeError> {
        Ok(WorkerCounters {
            listeners: r.listeners()?,
            duration: r.histogram()?,
            size: r.histogram()?,
            queue_wait: r.histogram()?,
            detections: r.vec(Category::COUNT)?,
            top: r.top()?,
            limits: r.vec(Limit::COUNT)?,
            errors: r.vec(ErrorReason::COUNT)?,
            abandoned: r.u64()?,
            pool: r.pool()?,
            usage: r.usage()?,
        })
    }

    /// Arrays of the wrong size (a value not built by [`Self::empty`]) are
    /// fixed before sending, so that the message decodes.
    pub fn normalise(&mut self) {
        self.detections.resize(Category::COUNT, 0);
        self.limits.resize(Limit::COUNT, 0);
        self.errors.resize(ErrorReason::COUNT, 0);
        self.listeners.truncate(MAX_LISTENERS);
        self.top.truncate(MAX_TOP);
    }
}

impl Snapshot {
    fn encode_into(&self, out: &mut Out) {
        out.u64(self.seq)
            .u64(self.time_ms)
            .u64(self.started)
            .text(&self.version)
            .text(&self.libclamav)
            .u32(self.db.version)
            .u32(self.db.signatures)
            .u64(self.db.build_time)
            .u64(self.generation)
            .u64(self.engine_load_us)
            .fixed(&self.reloads)
            .histogram(&self.reload_duration)
            .u32(self.recent_reloads.len() as u32);
        for r in &self.recent_reloads {
            out.u64(r.at)
                .u8(r.trigger as u8)
                .bool(r.ok)
                .u64(r.duration_us)
                .u32(r.db_version);
        }
        out.u32(self.listeners.len() as u32);
        for l in &self.listeners {
            out.listener(&l.counts).u32(l.open).fixed(&l.connections);
        }
        out.histogram(&self.duration)
            .histogram(&self.size)
            .histogram(&self.queue_wait)
            .fixed(&self.detections)
            .top(&self.top)
            .fixed(&self.limits)
            .fixed(&self.errors)
            .u64(self.abandoned)
            .pool(&self.pool)
            .u32(self.workers.configured)
            .u32(self.workers.forking)
            .u32(self.workers.serving)
            .u32(self.workers.draining)
            .fixed(&self.restarts);
        for r in &self.roles {
            out.u32(r.processes)
                .u64(r.pss_kib)
                .u64(r.rss_kib)
                .u64(r.cpu_us)
                .u64(r.fds);
        }
        let s = &self.selftest;
        out.bool(s.enabled)
            .fixed(&s.runs)
            .u64(s.last_success)
            .u64(s.last_failure)
            .bool(s.failing)
            .text(&s.detail);
        let f = &self.flags;
        out.bool(f.engine)
            .bool(f.stopping)
            .bool(f.maintenance)
            .bool(f.no_headroom)
            .bool(f.reloading);
    }

    fn decode_from(r: &mut In<'_>) -> Result<Snapshot, DecodeError> {
        let seq = r.u64()?;
        let time_ms = r.u64()?;
        let started = r.u64()?;
        let version = r.name(MAX_VERSION)?;
        let libclamav = r.name(MAX_VERSION)?;
        let db = DbInfo {
            version: r.u32()?,
            signatures: r.u32()?,
            build_time: r.u64()?,
        };
        let generation = r.u64()?;
        let engine_load_us = r.u64()?;
        let reloads = r.vec(ReloadTrigger::COUNT * 2)?;
        let reload_duration = r.histogram()?;
        let n = r.count(MAX_RECENT_RELOADS)?;
        let mut recent_reloads = Vec::with_capacity(n);
        for _ in 0..n {
            recent_reloads.push(ReloadRecord {
                at: r.u64()?,
                trigger: *ReloadTrigger::ALL
                    .get(r.u8()? as usize)
                    .ok_or(DecodeError::BadValue)?,
                ok: r.bool()?,
                duration_us: r.u64()?,
                db_version: r.u32()?,
            });
        }
        let n = r.count(MAX_LISTENERS)?;
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            listeners.push(ListenerStats {
                counts: r.listener()?,
                open: r.u32()?,
                connections: r.array()?,
            });
        }
        let duration = r.histogram()?;
        let size = r.histogram()?;
        let queue_wait = r.histogram()?;
        let detections = r.vec(Category::COUNT)?;
        let top = r.top()?;
        let limits = r.vec(Limit::COUNT)?;
        let errors = r.vec(ErrorReason::COUNT)?;
        let abandoned = r.u64()?;
        let pool = r.pool()?;
        let workers = WorkerStates {
            configured: r.u32()?,
            forking: r.u32()?,
            serving: r.u32()?,
            draining: r.u32()?,
        };
        let restarts = r.vec(RestartReason::COUNT)?;
        let mut roles = Vec::with_capacity(Role::COUNT);
        for _ in 0..Role::COUNT {
            roles.push(RoleUsage {
                processes: r.u32()?,
                pss_kib: r.u64()?,
                rss_kib: r.u64()?,
                cpu_us: r.u64()?,
                fds: r.u64()?,
            });
        }
        let selftest = SelftestState {
            enabled: r.bool()?,
            runs: r.array()?,
            last_success: r.u64()?,
            last_failure: r.u64()?,
            failing: r.bool()?,
            detail: r.name(MAX_DETAIL)?,
        };
        let flags = Flags {
            engine: r.bool()?,
            stopping: r.bool()?,
            maintenance: r.bool()?,
            no_headroom: r.bool()?,
            reloading: r.bool()?,
        };
        Ok(Snapshot {
            seq,
            time_ms,
            started,
            version,
            libclamav,
            db,
            generation,
            engine_load_us,
            reloads,
            reload_duration,
            recent_reloads,
            listeners,
            duration,
            size,
            queue_wait,
            detections,
            top,
            limits,
            errors,
            abandoned,
            pool,
            workers,
            restarts,
            roles,
            selftest,
            flags,
        })
    }

    /// Fixes array sizes and bounds so that the snapshot encodes to
    /// something [`ToObserver::decode`] accepts (strings cut, lists cut).
    pub fn normalise(&mut self) {
        self.version = cut(&self.version, MAX_VERSION);
        self.libclamav = cut(&self.libclamav, MAX_VERSION);
        self.reloads.resize(ReloadTrigger::COUNT * 2, 0);
        self.recent_reloads.truncate(MAX_RECENT_RELOADS);
        self.listeners.truncate(MAX_LISTENERS);
        self.detections.resize(Category::COUNT, 0);
        self.top.truncate(MAX_TOP);
        self.limits.resize(Limit::COUNT, 0);
        self.errors.resize(ErrorReason::COUNT, 0);
        self.restarts.resize(RestartReason::COUNT, 0);
        self.roles.resize(Role::COUNT, RoleUsage::default());
        self.selftest.detail = printable(&self.selftest.detail, MAX_DETAIL);
    }
}

/// `s` without control characters, cut to `max` bytes.
pub fn printable(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&clean, max)
}

impl ToObserver {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToObserver::Start {
                toml,
                metrics,
                agent,
            } => {
                let mut o = Out::new(1);
                o.text(toml).bool(*metrics).bool(*agent);
                o.0
            }
            ToObserver::Snapshot(s) => {
                let mut o = Out::new(2);
                s.encode_into(&mut o);
                o.0
            }
            ToObserver::Selftest { id } => {
                let mut o = Out::new(3);
                o.u64(*id);
                o.0
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<ToObserver, DecodeError> {
        let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
        let mut r = In::new(rest);
        let m = match tag {
            1 => ToObserver::Start {
                toml: r.text(MAX_CONFIG)?,
                metrics: r.bool()?,
                agent: r.bool()?,
            },
            2 => ToObserver::Snapshot(Box::new(Snapshot::decode_from(&mut r)?)),
            3 => ToObserver::Selftest { id: r.u64()? },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl FromObserver {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            FromObserver::Usage(u) => {
                let mut o = Out::new(1);
                o.usage(u);
                o.0
            }
            FromObserver::SelftestResult {
                id,
                outcome,
                detail,
            } => {
                let mut o = Out::new(2);
                o.u64(*id).u8(*outcome as u8).text(detail);
                o.0
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<FromObserver, DecodeError> {
        let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
        let mut r = In::new(rest);
        let m = match tag {
            1 => FromObserver::Usage(r.usage()?),
            2 => FromObserver::SelftestResult {
                id: r.u64()?,
                outcome: *SelftestOutcome::ALL
                    .get(r.u8()? as usize)
                    .ok_or(DecodeError::BadValue)?,
                detail: r.name(MAX_DETAIL)?,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> WorkerCounters {
        let mut c = WorkerCounters::empty();
        let mut l = ListenerCounts::new("tcp");
        l.scans[3] = 7;
        l.commands[command_index(CommandKind::Instream) * 3] = 9;
        c.listeners.push(l);
        c.listeners.push(ListenerCounts::new("selftest"));
        c.duration.observe(&DURATION_BOUNDS_US, 1_500);
        c.size.observe(&SIZE_BOUNDS, 10_240);
        c.queue_wait.observe(&QUEUE_WAIT_BOUNDS_US, 50);
        c.detections[Category::Win.index()] = 2;
        c.top.push(("Win.Test.EICAR_HDB-1".into(), 2));
        c.limits[Limit::MaxQueue.index()] = 1;
        c.errors[ErrorReason::QueueFull.index()] = 1;
        c.abandoned = 3;
        c.pool = PoolNow {
            threads: 4,
            busy: 1,
            queued: 2,
            wait_min_us: 5,
            wait_max_us: 9,
            wait_sum_us: 14,
        };
        c.usage = ProcUsage {
            pss_kib: 1,
            rss_kib: 2,
            cpu_us: 3,
            fds: 4,
        };
        c
    }

    pub(crate) fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            seq: 4,
            time_ms: 1_700_000_000_123,
            started: 1_700_000_000,
            version: "0.1.0".into(),
            libclamav: "1.4.6".into(),
            db: DbInfo {
                version: 27999,
                signatures: 8_700_000,
                build_time: 1_700_000_100,
            },
            generation: 2,
            engine_load_us: 4_000_000,
            recent_reloads: vec![ReloadRecord {
                at: 1_700_000_050,
                trigger: ReloadTrigger::Signal,
                ok: true,
                duration_us: 3_000_000,
                db_version: 27999,
            }],
            listeners: vec![ListenerStats {
                counts: counters().listeners[0].clone(),
                open: 3,
                connections: [5, 1, 0, 2],
            }],
            selftest: SelftestState {
                enabled: true,
                runs: [3, 1, 0],
                last_success: 1_700_000_090,
                last_failure: 1_700_000_010,
                failing: false,
                detail: "stream: Eicar FOUND".into(),
            },
            flags: Flags {
                engine: true,
                ..Flags::default()
            },
            ..Snapshot::default()
        };
        s.normalise();
        s.reloads[ReloadTrigger::Signal.index() * 2 + 1] = 1;
        s.reload_duration.observe(&RELOAD_BOUNDS_US, 3_000_000);
        s.top = vec![("Win.Test.EICAR_HDB-1".into(), 2)];
        s
    }

    #[test]
    fn messages_round_trip() {
        let c = counters();
        let mut o = Out::new(8);
        c.encode_into(&mut o);
        let mut r = In::new(&o.0[1..]);
        let back = WorkerCounters::decode_from(&mut r).unwrap();
        r.end(()).unwrap();
        assert_eq!(back, c);

        for m in [
            ToObserver::Start {
                toml: "[metrics]\n".into(),
                metrics: true,
                agent: false,
            },
            ToObserver::Snapshot(Box::new(snapshot())),
            ToObserver::Snapshot(Box::new({
                let mut s = Snapshot::default();
                s.normalise();
                s
            })),
            ToObserver::Selftest { id: 9 },
        ] {
            assert_eq!(ToObserver::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            FromObserver::Usage(ProcUsage {
                pss_kib: 1,
                rss_kib: 2,
                cpu_us: 3,
                fds: 4,
            }),
            FromObserver::SelftestResult {
                id: 3,
                outcome: SelftestOutcome::Failed,
                detail: "stream: OK".into(),
            },
        ] {
            assert_eq!(FromObserver::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn the_largest_snapshot_fits_in_a_datagram() {
        let mut s = snapshot();
        s.listeners = (0..MAX_LISTENERS)
            .map(|i| ListenerStats {
                counts: ListenerCounts::new(&format!("{i:x<width$}", width = MAX_LISTENER_NAME)),
                open: 1,
                connections: [1; 4],
            })
            .collect();
        s.top = (0..MAX_TOP)
            .map(|i| (format!("{i:y<width$}", width = MAX_TOP_NAME), 1))
            .collect();
        s.recent_reloads = vec![s.recent_reloads[0]; MAX_RECENT_RELOADS];
        s.selftest.detail = "d".repeat(MAX_DETAIL);
        let bytes = ToObserver::Snapshot(Box::new(s)).encode();
        assert!(
            bytes.len() <= super::super::messages::MAX_MESSAGE,
            "{} bytes",
            bytes.len()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        // A label text with a newline could forge a metrics line.
        let bad = FromObserver::SelftestResult {
            id: 1,
            outcome: SelftestOutcome::Passed,
            detail: "ok\nclamsentry_ready 1".into(),
        };
        assert_eq!(
            FromObserver::decode(&bad.encode()),
            Err(DecodeError::BadValue)
        );
        let mut bytes = FromObserver::SelftestResult {
            id: 1,
            outcome: SelftestOutcome::Passed,
            detail: String::new(),
        }
        .encode();
        bytes[9] = 7;
        assert_eq!(FromObserver::decode(&bytes), Err(DecodeError::BadValue));
        let mut c = counters();
        c.top.push(("x".repeat(MAX_TOP_NAME + 1), 1));
        let mut o = Out::new(8);
        c.encode_into(&mut o);
        assert!(WorkerCounters::decode_from(&mut In::new(&o.0[1..])).is_err());
        assert_eq!(ToObserver::decode(&[2, 1]), Err(DecodeError::Truncated));
        assert_eq!(ToObserver::decode(&[9]), Err(DecodeError::UnknownTag(9)));
    }

    /// Writes the `observe` fuzz target's seeds (`fuzz/seeds/observe/`):
    /// `cargo test --lib write_observe_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_observe_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/observe");
        std::fs::create_dir_all(&dir).unwrap();
        let mut seeds: Vec<(&str, Vec<u8>)> = vec![
            (
                "usage",
                FromObserver::Usage(ProcUsage {
                    pss_kib: 5000,
                    rss_kib: 9000,
                    cpu_us: 120_000,
                    fds: 12,
                })
                .encode(),
            ),
            (
                "selftest-passed",
                FromObserver::SelftestResult {
                    id: 1,
                    outcome: SelftestOutcome::Passed,
                    detail: "stream: Win.Test.EICAR_HDB-1 FOUND".into(),
                }
                .encode(),
            ),
            (
                "start",
                ToObserver::Start {
                    toml: "[metrics]\nlisten = \"127.0.0.1:9906\"\n".into(),
                    metrics: true,
                    agent: false,
                }
                .encode(),
            ),
            (
                "snapshot",
                ToObserver::Snapshot(Box::new(snapshot())).encode(),
            ),
            ("selftest", ToObserver::Selftest { id: 7 }.encode()),
        ];
        for (name, req) in [
            ("http-get", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n"),
            ("http-head", "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            ("http-post", "POST /status.json?x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        ] {
            seeds.push((name, req.as_bytes().to_vec()));
        }
        for (name, bytes) in seeds {
            let which = if name.starts_with("http") {
                2
            } else if matches!(name, "usage" | "selftest-passed") {
                0
            } else {
                1
            };
            let mut data = vec![which];
            data.extend_from_slice(&bytes);
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    #[test]
    fn categories_come_from_the_platform_prefix() {
        assert_eq!(Category::of("Win.Test.EICAR_HDB-1"), Category::Win);
        assert_eq!(Category::of("Eicar-Signature"), Category::Eicar);
        assert_eq!(Category::of("Eicar-Test-Signature"), Category::Eicar);
        assert_eq!(Category::of("PUA.Win.Packer.Upx-1"), Category::Pua);
        assert_eq!(
            Category::of("Heuristics.Limits.Exceeded.MaxFileSize"),
            Category::Heuristics
        );
        assert_eq!(Category::of("ClamAV-Test-File"), Category::Clamav);
        assert_eq!(Category::of("Sanesecurity.Jurlbl.1"), Category::Other);
        assert_eq!(Category::of(""), Category::Other);
        assert_eq!(Category::of("."), Category::Other);
        assert_eq!(Category::COUNT, Category::ALL.len());
    }

    #[test]
    fn histograms_bucket_and_estimate_quantiles() {
        let mut h = DurationHistogram::default();
        for v in [500, 900, 2_000, 200_000_000] {
            h.observe(&DURATION_BOUNDS_US, v);
        }
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[16], 1, "above every bound");
        assert_eq!(h.count(), 4);
        let p50 = h.quantile(&DURATION_BOUNDS_US, 0.5).unwrap();
        assert!((0.0..=1_000.0).contains(&p50), "{p50}");
        assert_eq!(h.quantile(&DURATION_BOUNDS_US, 1.0), Some(120_000_000.0));
        assert_eq!(
            DurationHistogram::default().quantile(&DURATION_BOUNDS_US, 0.5),
            None
        );
        let later = {
            let mut l = h;
            l.observe(&DURATION_BOUNDS_US, 700);
            l
        };
        assert_eq!(later.since(&h).count(), 1);
    }

    #[test]
    fn reload_triggers_of_lifecycle_events() {
        assert_eq!(ReloadTrigger::of("RELOAD command"), ReloadTrigger::Command);
        assert_eq!(ReloadTrigger::of("SIGHUP"), ReloadTrigger::Signal);
        assert_eq!(ReloadTrigger::of("SIGUSR2"), ReloadTrigger::Signal);
        assert_eq!(
            ReloadTrigger::of("database.self-check"),
            ReloadTrigger::SelfCheck
        );
        assert_eq!(
            ReloadTrigger::of("engine holder"),
            ReloadTrigger::EngineRestart
        );
        assert_eq!(
            command_of(command_index(CommandKind::Stats)),
            CommandKind::Stats
        );
        assert_eq!(command_index(CommandKind::Unknown), COMMANDS - 1);
    }
}
