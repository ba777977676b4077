//! The messages between the daemon's processes: small closed sets, each one
//! bounded in size, encoded by hand so that decoding is easy to read, test
//! and fuzz. Anything that does not decode is a protocol violation: the
//! supervisor ends the process that sent it.
//!
//! Who talks to whom (see `supervisor::lifecycle` for which message is
//! allowed in which state):
//!
//! | channel | supervisor sends | it receives |
//! |---|---|---|
//! | zygote control | [`ToZygote`] | [`FromZygote`] |
//! | worker control | [`ToWorker`] (a client socket with `Conn`) | [`FromWorker`] |
//! | worker broker | [`BrokerReply`] (a file with `File`, one per opened file with `Files`) | [`BrokerRequest`] |
//!
//! Encoding: one message per SEQPACKET datagram: a tag byte, then fields in
//! order; integers little endian; byte strings as `u32` length + bytes;
//! booleans as 0 or 1 only, so every value has exactly one encoding (the
//! `messages` fuzz target checks the round trip).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::observe::{ProcUsage, WorkerCounters};
use crate::policy::{ListenerKind, PeerKey, Prefixes};

/// Largest datagram either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest path in a broker request: Linux's PATH_MAX. A worker answers a
/// longer path itself, as clamd does (`File name too long`).
pub const MAX_PATH: usize = 4096;
/// Largest name of a directory entry (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Largest virus name a worker reports.
pub const MAX_VIRUS_NAME: usize = 1024;

const TEXT: usize = 4096;

// ---------------------------------------------------------------- zygote

/// Supervisor → zygote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToZygote {
    /// Always the first message: the validated configuration (TOML text),
    /// the root-owned directory under which each worker gets its own
    /// temporary directory, and the zygote's own one.
    Config {
        toml: String,
        temp_parent: Vec<u8>,
        temp_dir: Vec<u8>,
    },
    /// Fork worker `worker`; its control and broker channels travel with
    /// this message (two descriptors).
    Fork { worker: u64 },
    /// Retired: exit now. Workers forked earlier are the supervisor's
    /// children and live on.
    Exit,
    /// Report your own memory, CPU time and descriptors (`Usage`).
    Measure,
}

/// Zygote → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromZygote {
    /// Signature loading progress.
    Progress {
        compiling: bool,
        done: u64,
        total: u64,
    },
    /// The engine is loaded and compiled; the zygote forks on request.
    Ready(EngineReady),
    /// The engine could not be loaded (or the sandbox applied); the zygote
    /// exits after sending this.
    LoadFailed { error: String },
    /// A fork request failed (the zygote goes on).
    ForkFailed { worker: u64, error: String },
    /// Answer to `Measure`.
    Usage(ProcUsage),
}

/// What a ready zygote reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReady {
    pub engine_version: String,
    pub signatures: u32,
    pub db_version: u32,
    pub db_time: u64,
    /// The sandbox, as `sandbox::Status` displays it.
    pub sandbox: String,
    /// The engine holder's peak resident size while it loaded, KiB
    /// (`VmHWM`; 0: unknown): what a reload's second engine will need
    /// (`supervisor::headroom`).
    pub load_peak_kib: u64,
}

// ---------------------------------------------------------------- worker

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Always the first message (queued before the fork): who the worker
    /// is, its private temporary directory and its share of the scan pool.
    Start {
        worker: u64,
        temp_dir: Vec<u8>,
        threads: u32,
        queue: u32,
        /// The device of /proc (path scans skip it, as clamd does; the
        /// worker cannot look at /proc itself).
        proc_dev: u64,
    },
    /// A client connection, accepted and admitted by the supervisor; the
    /// socket travels with this message.
    Conn(ConnInfo),
    /// Health check, with what only the supervisor can see (the sandbox
    /// hides /proc from the worker): memory and the state of the fleet.
    Ping { seq: u64, fleet: Fleet },
    /// Stop taking connections, finish in-flight requests, exit 0.
    Drain,
    /// The administrative command of connection `conn` was accepted: the
    /// worker may now give the client its reply (RELOADING), so a client
    /// that waits for the reply knows the reload was ordered.
    /// `maintenance`: whether the node is in maintenance now (the reply to
    /// MAINT).
    AdminAccepted { conn: u64, maintenance: bool },
    /// How many of the worker's normal scan threads may run jobs at once
    /// (its share of the daemon's `max-threads` now; at least 1, at most
    /// its threads). Sent whenever the share changes; the worker starts
    /// with all its threads permitted.
    Threads { limit: u32 },
    /// The stream memory the worker may hold now, in bytes (absolute; may
    /// grow or shrink). Shrinking revokes nothing already held: it stops
    /// further growth until holdings fall below it. Answers
    /// [`FromWorker::StreamWant`]; may also come unasked (memory taken
    /// back for another worker). The worker starts with
    /// `limits.stream-memory` until the first one arrives.
    StreamGrant { bytes: u64 },
    /// What are your scan threads doing? Answer with
    /// [`FromWorker::TaskList`] with the same `seq`.
    TaskQuery { seq: u64 },
    /// The answer to [`FromWorker::StatsTasks`]: every task of the whole
    /// daemon, for an administrator's STATS on connection `conn`.
    StatsTasks {
        conn: u64,
        tasks: Vec<TaskInfo>,
        /// Tasks left out to keep the message under [`MAX_MESSAGE`].
        omitted: u32,
        /// Every worker's scan pool, summed (the THREADS and QUEUE lines).
        pool: PoolCounts,
    },
}

/// A scan pool's threads and queue, as STATS counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Threads, reserve threads included.
    pub threads: u32,
    /// Threads running a job.
    pub busy: u32,
    /// Jobs waiting for a thread.
    pub queued: u32,
}

impl PoolCounts {
    /// The sum of two pools (saturating).
    pub fn plus(self, o: PoolCounts) -> PoolCounts {
        PoolCounts {
            threads: self.threads.saturating_add(o.threads),
            busy: self.busy.saturating_add(o.busy),
            queued: self.queued.saturating_add(o.queued),
        }
    }
}

/// One running scan task, as STATS shows it (`\t<command> <seconds> <file>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// The clamd command word (`SCAN`, `INSTREAM`, …), at most
    /// [`MAX_TASK_COMMAND`] bytes.
    pub command: String,
    /// Microseconds since the task began.
    pub elapsed_us: u64,
    /// The file being scanned, at most [`MAX_TASK_NAME`] bytes (cut at a
    /// character boundary).
    pub filename: String,
}

/// Longest command word in a [`TaskInfo`].
pub const MAX_TASK_COMMAND: usize = 32;
/// Longest file name in a [`TaskInfo`]; longer names are cut.
pub const MAX_TASK_NAME: usize = 512;

/// Bytes one task takes in a task list (exactly, as encoded).
pub fn task_size(t: &TaskInfo) -> usize {
    4 + t.command.len() + 8 + 4 + t.filename.len()
}

/// Cuts each name to [`MAX_TASK_NAME`] and keeps as many tasks, in order,
/// as fit in `room` bytes of encoded list; returns them and how many were
/// left out. A task list message with `room` = [`TASK_LIST_ROOM`] always
/// fits in [`MAX_MESSAGE`].
pub fn fit_tasks(tasks: Vec<TaskInfo>, room: usize) -> (Vec<TaskInfo>, u32) {
    let total = tasks.len();
    let mut used = 0;
    let mut out = Vec::new();
    for mut t in tasks {
        cut(&mut t.command, MAX_TASK_COMMAND);
        cut(&mut t.filename, MAX_TASK_NAME);
        let size = task_size(&t);
        if used + size > room {
            break;
        }
        used += size;
        out.push(t);
    }
    let omitted = u32::try_from(total - out.len()).unwrap_or(u32::MAX);
    (out, omitted)
}

/// Room for the tasks in a task list message (the rest is its header).
pub const TASK_LIST_ROOM: usize = MAX_MESSAGE - 64;

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A handed-over connection: its id (which broker requests name), where it
/// came from, and what the supervisor recorded about the peer at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: u64,
    pub listener: ListenerKind,
    /// systemd's FileDescriptorName=, or "unix"/"tcp".
    pub listener_name: String,
    pub peer: PeerInfo,
    /// The peer may RELOAD/SHUTDOWN (root, admin-users, admin-groups).
    pub admin: bool,
    /// The client the supervisor counts it as (a local user, also over
    /// loopback TCP, or a network): the worker shares its queue, threads,
    /// stream memory and log by it.
    pub key: PeerKey,
}

/// The peer of a connection, as the kernel told the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerInfo {
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    Tcp(SocketAddr),
}

/// What STATS and the status line show about the daemon as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Workers serving now, and how many there should be.
    pub serving: u32,
    pub workers: u32,
    /// Engine generation (1 at start, +1 per reload).
    pub generation: u64,
    /// Workers that died (signal or unexpected exit) since start.
    pub crashes: u64,
    /// Microseconds from the last crash until its replacement served.
    pub last_replacement_us: u64,
    /// Proportional set size of this worker and of the whole daemon, KiB.
    pub worker_pss_kib: u64,
    pub daemon_pss_kib: u64,
}

/// Worker → supervisor, on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// The first message: the worker serves. Its pid is not part of the
    /// message; the supervisor takes it from the kernel (SCM_CREDENTIALS).
    Hello { worker: u64 },
    /// Answer to [`ToWorker::Ping`]; counters since the worker started;
    /// `healthy` is false when the scan pool shows no progress.
    Pong {
        seq: u64,
        scans: u64,
        found: u64,
        errors: u64,
        healthy: bool,
    },
    /// The connection sent its first complete command (it is no longer a
    /// candidate for eviction as an idle connection).
    Active { conn: u64 },
    /// The connection and all work for it are finished.
    Closed { conn: u64 },
    /// The connection's client sent RELOAD or SHUTDOWN/QUIT. The supervisor
    /// decides from the identity it recorded at accept.
    Admin { conn: u64, command: AdminCommand },
    /// A scan on this connection found `virus` in `target` (VirusEvent).
    Found {
        conn: u64,
        virus: String,
        target: Vec<u8>,
    },
    /// This worker should be replaced; it drains itself (finishes its
    /// requests, takes no new command) and exits. No new connection should
    /// come; its identity's next connections go to a fresh worker. Sent at
    /// most once, and only while serving (not after `Drain`).
    Retire { reason: RetireReason },
    /// The stream memory this worker would like to hold, in bytes
    /// (absolute): what it holds plus what waiting streams need, rounded up
    /// to [`STREAM_STEP`], plus 4 steps of headroom. Sent when the need
    /// rises above the grant (once per rise), and when the need falls 8
    /// steps below both the grant and the last want (so memory flows
    /// back). Answered by [`ToWorker::StreamGrant`]; a waiting stream is
    /// refused after 2 s without one.
    StreamWant { bytes: u64 },
    /// An administrator on connection `conn` asked for STATS: send the
    /// whole daemon's tasks ([`ToWorker::StatsTasks`]) within a short
    /// deadline; the worker shows its own tasks if none come.
    StatsTasks { conn: u64 },
    /// The answer to [`ToWorker::TaskQuery`].
    TaskList {
        seq: u64,
        tasks: Vec<TaskInfo>,
        omitted: u32,
        pool: PoolCounts,
    },
    /// What the worker counted since it started, its scan pool now and its
    /// own resource use (see `observe`).
    Counters(Box<WorkerCounters>),
}

/// Stream memory moves between the supervisor and a worker in steps of
/// this many bytes.
pub const STREAM_STEP: u64 = 1 << 20;

/// Why a worker asks to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireReason {
    /// Its temporary directory failed a scan: libclamav may have cached as
    /// clean what it could not scan.
    TempFailure,
    /// A scan ran past `scan.max-scan-time` (libclamav did not stop it):
    /// its thread is lost; the worker answered that client and finishes
    /// the others.
    ScanOverrun,
}

impl RetireReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetireReason::TempFailure => "its temporary directory failed a scan",
            RetireReason::ScanOverrun => "a scan ran past scan.max-scan-time",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    Reload,
    Shutdown,
    /// `MAINT ON` (true), `MAINT OFF` (false), `MAINT` (None: the state).
    Maintenance(Option<bool>),
}

// ---------------------------------------------------------------- broker

/// Worker → supervisor, on the broker channel: a file system operation on
/// behalf of the client of connection `conn`. The supervisor answers only
/// for live connections it handed to this worker, acting as that client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRequest {
    pub conn: u64,
    pub op: BrokerOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerOp {
    /// Resolve and open the path a path command names.
    OpenPath { path: Vec<u8> },
    /// The next page of a directory opened earlier (the cursor is the
    /// directory descriptor's own position).
    ReadDir { handle: u32 },
    /// Open one entry of an open directory: a subdirectory (`dir`) or a file.
    OpenEntry {
        handle: u32,
        name: Vec<u8>,
        dir: bool,
    },
    /// Closes a directory handle. The only request without a reply: the
    /// next reply on the channel answers the next request.
    CloseDir { handle: u32 },
    /// Open up to [`MAX_BATCH`] regular files of an open directory, in
    /// order, as `OpenEntry` opens one (a walk's next files).
    OpenFiles { handle: u32, names: Vec<Vec<u8>> },
    /// Open a subdirectory of an open directory, as `OpenEntry` with `dir`
    /// does, and read its first page of entries in the same round trip;
    /// then open up to `first_files` (at most [`MAX_FIRST_FILES`]) of that
    /// page's non-empty regular files, lowest inode first, as `OpenFiles`
    /// does (a directory entered costs one round trip, not two).
    ListDir {
        handle: u32,
        name: Vec<u8>,
        first_files: u8,
    },
}

/// Most files a `ListDir` opens along with the listing (the walk's first
/// batch).
pub const MAX_FIRST_FILES: usize = 8;

/// Most files one `OpenFiles` request names, and so most descriptors one
/// `Files` reply carries (the kernel allows 253 per message, SCM_MAX_FD).
pub const MAX_BATCH: usize = 64;

/// A regular file opened for reading by `OpenFiles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub dev: u64,
}

/// File kinds as the walker needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: FileKind,
    pub size: u64,
    pub dev: u64,
}

/// One directory entry, looked at as the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// The directory entry's type, when the file system says (DT_*).
    pub hint: Option<FileKind>,
    /// The entry itself (not following a symlink), or the errno of fstatat.
    pub lstat: Result<Meta, i32>,
    /// For a symlink, when the configuration follows symlinks: what it
    /// leads to (inside the scan roots, as the client), or the errno.
    pub target: Option<Result<Meta, i32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerReply {
    /// The operation failed with this errno. For `OpenPath` every refusal
    /// is `ENOENT` (what a missing file answers); the supervisor logs the
    /// real reason.
    Errno(i32),
    /// A regular file, opened for reading; the descriptor travels along.
    File { size: u64, dev: u64 },
    /// A directory, opened for listing: name it by `handle` from now on.
    Dir { handle: u32, dev: u64 },
    /// `OpenPath` named a symlink that the configuration does not follow.
    Link,
    /// `OpenPath` named a device, FIFO or socket (not opened).
    Special,
    /// A page of entries; `more` if the listing continues.
    Entries { entries: Vec<Entry>, more: bool },
    /// `OpenFiles`: one result per name, in order; the descriptors of the
    /// opened ones travel along, in the same order.
    Files(Vec<Result<FileMeta, i32>>),
    /// `ListDir`: the subdirectory's handle and its first page, and the
    /// files opened with it: each names its entry by its index in
    /// `entries`; the descriptors of the opened ones travel along, in the
    /// same order.
    Listing {
        handle: u32,
        dev: u64,
        entries: Vec<Entry>,
        more: bool,
        files: Vec<(u32, Result<FileMeta, i32>)>,
    },
}

// ---------------------------------------------------------------- errors

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is empty")]
    Empty,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("message ends early")]
    Truncated,
    #[error("field longer than allowed ({0} bytes)")]
    TooLong(usize),
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
    #[error("text field is not UTF-8")]
    NotUtf8,
    #[error("invalid field value")]
    BadValue,
}

// ---------------------------------------------------------------- encoding

/// A client key ([`PeerKey`]).
pub(super) fn put_peer(out: Out, p: &PeerKey) -> Out {
    match *p {
        PeerKey::Uid(uid) => out.u8(0).u32(uid),
        PeerKey::V4(addr, len) => {
            let mut out = out.u8(4);
            out.0.extend_from_slice(&addr.octets());
            out.u8(len)
        }
        PeerKey::V6(addr, len) => {
            let mut out = out.u8(6);
            out.0.extend_from_slice(&addr.octets());
            out.u8(len)
        }
    }
}

/// A client key, canonical only: a network's host bits are clear, its
/// prefix length fits, and IPv4 is never written as IPv4-mapped IPv6.
pub(super) fn get_peer(r: &mut In<'_>) -> Result<PeerKey, DecodeError> {
    let key = match r.u8()? {
        0 => return Ok(PeerKey::Uid(r.u32()?)),
        4 => {
            let b = r.take(4)?;
            PeerKey::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]), r.u8()?)
        }
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(r.take(16)?);
            PeerKey::V6(Ipv6Addr::from(o), r.u8()?)
        }
        _ => return Err(DecodeError::BadValue),
    };
    let (ip, prefixes) = match key {
        PeerKey::V4(a, len) if len <= 32 => (IpAddr::V4(a), Prefixes { v4: len, v6: 128 }),
        PeerKey::V6(a, len) if len <= 128 => (IpAddr::V6(a), Prefixes { v4: 32, v6: len }),
        _ => return Err(DecodeError::BadValue),
    };
    if PeerKey::of_ip(ip, prefixes) == key {
        Ok(key)
    } else {
        Err(DecodeError::BadValue)
    }
}

/// The encoder, shared with [`super::launch`].
pub(super) struct Out(pub(super) Vec<u8>);

impl Out {
    pub(super) fn new(tag: u8) -> Out {
        Out(vec![tag])
    }
    pub(super) fn u8(mut self, v: u8) -> Out {
        self.0.push(v);
        self
    }
    pub(super) fn bool(self, v: bool) -> Out {
        self.u8(u8::from(v))
    }
    pub(super) fn u16(mut self, v: u16) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn u32(mut self, v: u32) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn i32(self, v: i32) -> Out {
        self.u32(v as u32)
    }
    pub(super) fn u64(mut self, v: u64) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn bytes(mut self, v: &[u8]) -> Out {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub(super) fn meta(self, m: &Meta) -> Out {
        self.u8(kind_byte(Some(m.kind))).u64(m.size).u64(m.dev)
    }
    fn tasks(self, tasks: &[TaskInfo], omitted: u32) -> Out {
        let mut out = self.u32(tasks.len() as u32);
        for t in tasks {
            out = out
                .bytes(t.command.as_bytes())
                .u64(t.elapsed_us)
                .bytes(t.filename.as_bytes());
        }
        out.u32(omitted)
    }
    fn pool(self, p: &PoolCounts) -> Out {
        self.u32(p.threads).u32(p.busy).u32(p.queued)
    }
    pub(super) fn stat(self, r: &Result<Meta, i32>) -> Out {
        match r {
            Ok(m) => self.u8(0).meta(m),
            Err(e) => self.u8(1).i32(*e),
        }
    }
    fn file_meta(self, f: &Result<FileMeta, i32>) -> Out {
        match f {
            Ok(m) => self.u8(0).u64(m.size).u64(m.dev),
            Err(e) => self.u8(1).i32(*e),
        }
    }
    fn entries(self, entries: &[Entry], more: bool) -> Out {
        let mut out = self.bool(more).u32(entries.len() as u32);
        for e in entries {
            out = out
                .bytes(&e.name)
                .u64(e.ino)
                .u8(kind_byte(e.hint))
                .stat(&e.lstat);
            out = match &e.target {
                None => out.u8(0),
                Some(t) => out.u8(1).stat(t),
            };
        }
        out
    }
}

/// The decoder, shared with [`super::launch`].
pub(super) struct In<'a> {
    buf: &'a [u8],
}

impl<'a> In<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue),
        }
    }
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(super) fn bytes(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        Ok(self.take(n)?.to_vec())
    }
    /// Bytes that the file system will see: no NUL.
    pub(super) fn path(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let p = self.bytes(max)?;
        if p.contains(&0) {
            return Err(DecodeError::BadValue);
        }
        Ok(p)
    }
    pub(super) fn text(&mut self, max: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(max)?).map_err(|_| DecodeError::NotUtf8)
    }
    pub(super) fn meta(&mut self) -> Result<Meta, DecodeError> {
        Ok(Meta {
            kind: byte_kind(self.u8()?)?.ok_or(DecodeError::BadValue)?,
            size: self.u64()?,
            dev: self.u64()?,
        })
    }
    pub(super) fn stat(&mut self) -> Result<Result<Meta, i32>, DecodeError> {
        match self.u8()? {
            0 => Ok(Ok(self.meta()?)),
            1 => Ok(Err(self.i32()?)),
            _ => Err(DecodeError::BadValue),
        }
    }
    fn file_meta(&mut self) -> Result<Result<FileMeta, i32>, DecodeError> {
        match self.u8()? {
            0 => Ok(Ok(FileMeta {
                size: self.u64()?,
                dev: self.u64()?,
            })),
            1 => Ok(Err(self.i32()?)),
            _ => Err(DecodeError::BadValue),
        }
    }
    fn entries(&mut self) -> Result<(Vec<Entry>, bool), DecodeError> {
        let more = self.bool()?;
        let n = self.u32()? as usize;
        if n > MAX_MESSAGE / entry_size(0) {
            return Err(DecodeError::TooLong(n));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.path(MAX_NAME)?;
            let ino = self.u64()?;
            let hint = byte_kind(self.u8()?)?;
            let lstat = self.stat()?;
            let target = match self.u8()? {
                0 => None,
                1 => Some(self.stat()?),
                _ => return Err(DecodeError::BadValue),
            };
            entries.push(Entry {
                name,
                ino,
                hint,
                lstat,
                target,
            });
        }
        Ok((entries, more))
    }
    fn tasks(&mut self) -> Result<(Vec<TaskInfo>, u32), DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_MESSAGE / 16 {
            return Err(DecodeError::TooLong(n));
        }
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let t = TaskInfo {
                command: self.text(MAX_TASK_COMMAND)?,
                elapsed_us: self.u64()?,
                filename: self.text(MAX_TASK_NAME)?,
            };
            // Lines of an administrator's STATS: a command word, and a
            // file name already escaped by its worker. A raw control
            // character could forge lines (another task, `END`).
            let word = !t.command.is_empty()
                && t.command
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !word || t.filename.chars().any(crate::log::escape::needs_escape) {
                return Err(DecodeError::BadValue);
            }
            tasks.push(t);
        }
        Ok((tasks, self.u32()?))
    }
    fn pool(&mut self) -> Result<PoolCounts, DecodeError> {
        Ok(PoolCounts {
            threads: self.u32()?,
            busy: self.u32()?,
            queued: self.u32()?,
        })
    }
    pub(super) fn end<T>(self, v: T) -> Result<T, DecodeError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

pub(super) fn start(buf: &[u8]) -> Result<(u8, In<'_>), DecodeError> {
    let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    Ok((tag, In { buf: rest }))
}

fn kind_byte(k: Option<FileKind>) -> u8 {
    match k {
        None => 0,
        Some(FileKind::File) => 1,
        Some(FileKind::Dir) => 2,
        Some(FileKind::Symlink) => 3,
        Some(FileKind::Other) => 4,
    }
}

fn byte_kind(b: u8) -> Result<Option<FileKind>, DecodeError> {
    Ok(match b {
        0 => None,
        1 => Some(FileKind::File),
        2 => Some(FileKind::Dir),
        3 => Some(FileKind::Symlink),
        4 => Some(FileKind::Other),
        _ => return Err(DecodeError::BadValue),
    })
}

impl ToZygote {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToZygote::Config {
                toml,
                temp_parent,
                temp_dir,
            } => Out::new(1)
                .bytes(toml.as_bytes())
                .bytes(temp_parent)
                .bytes(temp_dir),
            ToZygote::Fork { worker } => Out::new(2).u64(*worker),
            ToZygote::Exit => Out::new(3),
            ToZygote::Measure => Out::new(4),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => ToZygote::Config {
                toml: r.text(MAX_MESSAGE - 2 * MAX_PATH - 32)?,
                temp_parent: r.path(MAX_PATH)?,
                temp_dir: r.path(MAX_PATH)?,
            },
            2 => ToZygote::Fork { worker: r.u64()? },
            3 => ToZygote::Exit,
            4 => ToZygote::Measure,
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl FromZygote {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            FromZygote::Progress {
                compiling,
                done,
                total,
            } => Out::new(1).bool(*compiling).u64(*done).u64(*total),
            FromZygote::Ready(e) => Out::new(2)
                .bytes(e.engine_version.as_bytes())
                .u32(e.signatures)
                .u32(e.db_version)
                .u64(e.db_time)
                .bytes(e.sandbox.as_bytes())
                .u64(e.load_peak_kib),
            FromZygote::LoadFailed { error } => Out::new(3).bytes(error.as_bytes()),
            FromZygote::ForkFailed { worker, error } => {
                Out::new(4).u64(*worker).bytes(error.as_bytes())
            }
            FromZygote::Usage(u) => {
                let mut o = super::observe::Out::new(5);
                o.usage(u);
                return o.0;
            }
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => FromZygote::Progress {
                compiling: r.bool()?,
                done: r.u64()?,
                total: r.u64()?,
            },
            2 => FromZygote::Ready(EngineReady {
                engine_version: r.text(64)?,
                signatures: r.u32()?,
                db_version: r.u32()?,
                db_time: r.u64()?,
                sandbox: r.text(TEXT)?,
                load_peak_kib: r.u64()?,
            }),
            3 => FromZygote::LoadFailed {
                error: r.text(TEXT)?,
            },
            4 => FromZygote::ForkFailed {
                worker: r.u64()?,
                error: r.text(TEXT)?,
            },
            5 => {
                let mut o = super::observe::In::new(r.buf);
                let u = o.usage()?;
                return o.end(FromZygote::Usage(u));
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

fn listener_byte(k: ListenerKind) -> u8 {
    match k {
        ListenerKind::Unix => 0,
        ListenerKind::Tcp => 1,
    }
}

impl ToWorker {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToWorker::Start {
                worker,
                temp_dir,
                threads,
                queue,
                proc_dev,
            } => Out::new(1)
                .u64(*worker)
                .bytes(temp_dir)
                .u32(*threads)
                .u32(*queue)
                .u64(*proc_dev),
            ToWorker::Conn(c) => {
                let out = Out::new(2)
                    .u64(c.id)
                    .u8(listener_byte(c.listener))
                    .bytes(c.listener_name.as_bytes())
                    .bool(c.admin);
                let out = put_peer(out, &c.key);
                match c.peer {
                    PeerInfo::Unix { uid, gid, pid } => {
                        out.u8(0).u32(uid).u32(gid).i32(pid.unwrap_or(0))
                    }
                    PeerInfo::Tcp(addr) => {
                        let out = match addr.ip() {
                            IpAddr::V4(ip) => {
                                let mut o = out.u8(4);
                                o.0.extend_from_slice(&ip.octets());
                                o
                            }
                            IpAddr::V6(ip) => {
                                let mut o = out.u8(6);
                                o.0.extend_from_slice(&ip.octets());
                                o
                            }
                        };
                        out.u16(addr.port())
                    }
                }
            }
            ToWorker::Ping { seq, fleet } => Out::new(3)
                .u64(*seq)
                .u32(fleet.serving)
                .u32(fleet.workers)
                .u64(fleet.generation)
                .u64(fleet.crashes)
                .u64(fleet.last_replacement_us)
                .u64(fleet.worker_pss_kib)
                .u64(fleet.daemon_pss_kib),
            ToWorker::Drain => Out::new(4),
            ToWorker::AdminAccepted { conn, maintenance } => {
                Out::new(20).u64(*conn).bool(*maintenance)
            }
            ToWorker::Threads { limit } => Out::new(5).u32(*limit),
            ToWorker::StreamGrant { bytes } => Out::new(6).u64(*bytes),
            ToWorker::TaskQuery { seq } => Out::new(7).u64(*seq),
            ToWorker::StatsTasks {
                conn,
                tasks,
                omitted,
                pool,
            } => Out::new(8).u64(*conn).tasks(tasks, *omitted).pool(pool),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => ToWorker::Start {
                worker: r.u64()?,
                temp_dir: r.path(MAX_PATH)?,
                threads: r.u32()?,
                queue: r.u32()?,
                proc_dev: r.u64()?,
            },
            2 => {
                let id = r.u64()?;
                let listener = match r.u8()? {
                    0 => ListenerKind::Unix,
                    1 => ListenerKind::Tcp,
                    _ => return Err(DecodeError::BadValue),
                };
                let listener_name = r.text(MAX_NAME)?;
                let admin = r.bool()?;
                let key = get_peer(&mut r)?;
                let peer = match r.u8()? {
                    0 => {
                        let uid = r.u32()?;
                        let gid = r.u32()?;
                        let pid = r.i32()?;
                        PeerInfo::Unix {
                            uid,
                            gid,
                            pid: (pid != 0).then_some(pid),
                        }
                    }
                    4 => {
                        let b = r.take(4)?;
                        let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                        PeerInfo::Tcp(SocketAddr::new(IpAddr::V4(ip), r.u16()?))
                    }
                    6 => {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(r.take(16)?);
                        PeerInfo::Tcp(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), r.u16()?))
                    }
                    _ => return Err(DecodeError::BadValue),
                };
                ToWorker::Conn(ConnInfo {
                    key,
                    id,
                    listener,
                    listener_name,
                    peer,
                    admin,
                })
            }
            3 => ToWorker::Ping {
                seq: r.u64()?,
                fleet: Fleet {
                    serving: r.u32()?,
                    workers: r.u32()?,
                    generation: r.u64()?,
                    crashes: r.u64()?,
                    last_replacement_us: r.u64()?,
                    worker_pss_kib: r.u64()?,
                    daemon_pss_kib: r.u64()?,
                },
            },
            4 => ToWorker::Drain,
            20 => ToWorker::AdminAccepted {
                conn: r.u64()?,
                maintenance: r.bool()?,
            },
            5 => ToWorker::Threads { limit: r.u32()? },
            6 => ToWorker::StreamGrant { bytes: r.u64()? },
            7 => ToWorker::TaskQuery { seq: r.u64()? },
            8 => {
                let conn = r.u64()?;
                let (tasks, omitted) = r.tasks()?;
                ToWorker::StatsTasks {
                    conn,
                    tasks,
                    omitted,
                    pool: r.pool()?,
                }
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl FromWorker {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            FromWorker::Hello { worker } => Out::new(1).u64(*worker),
            FromWorker::Pong {
                seq,
                scans,
                found,
                errors,
                healthy,
            } => Out::new(2)
                .u64(*seq)
                .u64(*scans)
                .u64(*found)
                .u64(*errors)
                .bool(*healthy),
            FromWorker::Active { conn } => Out::new(3).u64(*conn),
            FromWorker::Closed { conn } => Out::new(4).u64(*conn),
            FromWorker::Admin { conn, command } => Out::new(5).u64(*conn).u8(match command {
                AdminCommand::Reload => 0,
                AdminCommand::Shutdown => 1,
                AdminCommand::Maintenance(None) => 2,
                AdminCommand::Maintenance(Some(true)) => 3,
                AdminCommand::Maintenance(Some(false)) => 4,
            }),
            FromWorker::Found {
                conn,
                virus,
                target,
            } => Out::new(6).u64(*conn).bytes(virus.as_bytes()).bytes(target),
            FromWorker::Retire { reason } => Out::new(7).u8(match reason {
                RetireReason::TempFailure => 0,
                RetireReason::ScanOverrun => 1,
            }),
            FromWorker::StreamWant { bytes } => Out::new(8).u64(*bytes),
            FromWorker::StatsTasks { conn } => Out::new(9).u64(*conn),
            FromWorker::TaskList {
                seq,
                tasks,
                omitted,
                pool,
            } => Out::new(10).u64(*seq).tasks(tasks, *omitted).pool(pool),
            FromWorker::Counters(c) => {
                let mut o = super::observe::Out::new(11);
                c.encode_into(&mut o);
                return o.0;
            }
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => FromWorker::Hello { worker: r.u64()? },
            2 => FromWorker::Pong {
                seq: r.u64()?,
                scans: r.u64()?,
                found: r.u64()?,
                errors: r.u64()?,
                healthy: r.bool()?,
            },
            3 => FromWorker::Active { conn: r.u64()? },
            4 => FromWorker::Closed { conn: r.u64()? },
            5 => FromWorker::Admin {
                conn: r.u64()?,
                command: match r.u8()? {
                    0 => AdminCommand::Reload,
                    1 => AdminCommand::Shutdown,
                    2 => AdminCommand::Maintenance(None),
                    3 => AdminCommand::Maintenance(Some(true)),
                    4 => AdminCommand::Maintenance(Some(false)),
                    _ => return Err(DecodeError::BadValue),
                },
            },
            6 => FromWorker::Found {
                conn: r.u64()?,
                virus: r.text(MAX_VIRUS_NAME)?,
                target: r.bytes(MAX_PATH)?,
            },
            7 => FromWorker::Retire {
                reason: match r.u8()? {
                    0 => RetireReason::TempFailure,
                    1 => RetireReason::ScanOverrun,
                    _ => return Err(DecodeError::BadValue),
                },
            },
            8 => FromWorker::StreamWant { bytes: r.u64()? },
            9 => FromWorker::StatsTasks { conn: r.u64()? },
            10 => {
                let seq = r.u64()?;
                let (tasks, omitted) = r.tasks()?;
                FromWorker::TaskList {
                    seq,
                    tasks,
                    omitted,
                    pool: r.pool()?,
                }
            }
            11 => {
                let mut o = super::observe::In::new(r.buf);
                let c = WorkerCounters::decode_from(&mut o)?;
                return o.end(FromWorker::Counters(Box::new(c)));
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl BrokerRequest {
    pub fn encode(&self) -> Vec<u8> {
        let out = match &self.op {
            BrokerOp::OpenPath { path } => Out::new(1).u64(self.conn).bytes(path),
            BrokerOp::ReadDir { handle } => Out::new(2).u64(self.conn).u32(*handle),
            BrokerOp::OpenEntry { handle, name, dir } => Out::new(3)
                .u64(self.conn)
                .u32(*handle)
                .bytes(name)
                .bool(*dir),
            BrokerOp::CloseDir { handle } => Out::new(4).u64(self.conn).u32(*handle),
            BrokerOp::OpenFiles { handle, names } => {
                let mut out = Out::new(5)
                    .u64(self.conn)
                    .u32(*handle)
                    .u32(names.len() as u32);
                for n in names {
                    out = out.bytes(n);
                }
                out
            }
            BrokerOp::ListDir {
                handle,
                name,
                first_files,
            } => Out::new(6)
                .u64(self.conn)
                .u32(*handle)
                .bytes(name)
                .u8(*first_files),
        };
        out.0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let conn = r.u64()?;
        let op = match tag {
            1 => BrokerOp::OpenPath {
                path: r.path(MAX_PATH)?,
            },
            2 => BrokerOp::ReadDir { handle: r.u32()? },
            3 => BrokerOp::OpenEntry {
                handle: r.u32()?,
                name: r.path(MAX_NAME)?,
                dir: r.bool()?,
            },
            4 => BrokerOp::CloseDir { handle: r.u32()? },
            5 => {
                let handle = r.u32()?;
                let n = r.u32()? as usize;
                if n > MAX_BATCH {
                    return Err(DecodeError::TooLong(n));
                }
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    names.push(r.path(MAX_NAME)?);
                }
                BrokerOp::OpenFiles { handle, names }
            }
            6 => {
                let handle = r.u32()?;
                let name = r.path(MAX_NAME)?;
                let first_files = r.u8()?;
                if usize::from(first_files) > MAX_FIRST_FILES {
                    return Err(DecodeError::TooLong(first_files.into()));
                }
                BrokerOp::ListDir {
                    handle,
                    name,
                    first_files,
                }
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(BrokerRequest { conn, op })
    }
}

/// Bytes one entry takes in an `Entries` reply (an upper bound), for
/// filling a page without going over [`MAX_MESSAGE`].
pub fn entry_size(name_len: usize) -> usize {
    4 + name_len + 8 + 1 + (1 + 17) + (1 + 1 + 17)
}

impl BrokerReply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BrokerReply::Errno(e) => Out::new(1).i32(*e),
            BrokerReply::File { size, dev } => Out::new(2).u64(*size).u64(*dev),
            BrokerReply::Dir { handle, dev } => Out::new(3).u32(*handle).u64(*dev),
            BrokerReply::Link => Out::new(4),
            BrokerReply::Special => Out::new(5),
            BrokerReply::Entries { entries, more } => Out::new(6).entries(entries, *more),
            BrokerReply::Files(files) => {
                let mut out = Out::new(8).u32(files.len() as u32);
                for f in files {
                    out = out.file_meta(f);
                }
                out
            }
            BrokerReply::Listing {
                handle,
                dev,
                entries,
                more,
                files,
            } => {
                let mut out = Out::new(9)
                    .u32(*handle)
                    .u64(*dev)
                    .entries(entries, *more)
                    .u32(files.len() as u32);
                for (index, f) in files {
                    out = out.u32(*index).file_meta(f);
                }
                out
            }
        }
        .0
    }

    /// How many descriptors travel with this reply.
    pub fn fds(&self) -> usize {
        match self {
            BrokerReply::File { .. } => 1,
            BrokerReply::Files(files) => files.iter().filter(|f| f.is_ok()).count(),
            BrokerReply::Listing { files, .. } => files.iter().filter(|(_, f)| f.is_ok()).count(),
            _ => 0,
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => BrokerReply::Errno(r.i32()?),
            2 => BrokerReply::File {
                size: r.u64()?,
                dev: r.u64()?,
            },
            3 => BrokerReply::Dir {
                handle: r.u32()?,
                dev: r.u64()?,
            },
            4 => BrokerReply::Link,
            5 => BrokerReply::Special,
            6 => {
                let (entries, more) = r.entries()?;
                BrokerReply::Entries { entries, more }
            }
            8 => {
                let n = r.u32()? as usize;
                if n > MAX_BATCH {
                    return Err(DecodeError::TooLong(n));
                }
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    files.push(r.file_meta()?);
                }
                BrokerReply::Files(files)
            }
            9 => {
                let handle = r.u32()?;
                let dev = r.u64()?;
                let (entries, more) = r.entries()?;
                let n = r.u32()? as usize;
                if n > MAX_FIRST_FILES {
                    return Err(DecodeError::TooLong(n));
                }
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    let index = r.u32()?;
                    if index as usize >= entries.len() {
                        return Err(DecodeError::BadValue);
                    }
                    files.push((index, r.file_meta()?));
                }
                BrokerReply::Listing {
                    handle,
                    dev,
                    entries,
                    more,
                    files,
                }
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            kind: FileKind::Dir,
            size: 1,
            dev: 2,
        }
    }

    #[test]
    fn round_trips() {
        for m in [
            ToZygote::Config {
                toml: "[log]\n".into(),
                temp_parent: b"/tmp/clamsentry.x".to_vec(),
                temp_dir: b"/tmp/clamsentry.x/z1.y".to_vec(),
            },
            ToZygote::Fork { worker: 3 },
            ToZygote::Exit,
            ToZygote::Measure,
        ] {
            assert_eq!(ToZygote::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            FromZygote::Progress {
                compiling: true,
                done: 5,
                total: 10,
            },
            FromZygote::Ready(EngineReady {
                engine_version: "1.4.6".into(),
                signatures: 7,
                db_version: 27999,
                db_time: 1_700_000_000,
                sandbox: "landlock=full".into(),
                load_peak_kib: 180_000,
            }),
            FromZygote::LoadFailed {
                error: "bad.ndb".into(),
            },
            FromZygote::ForkFailed {
                worker: 2,
                error: "EAGAIN".into(),
            },
            FromZygote::Usage(ProcUsage {
                pss_kib: 1,
                rss_kib: 2,
                cpu_us: 3,
                fds: 4,
            }),
        ] {
            assert_eq!(FromZygote::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            ToWorker::Start {
                worker: 1,
                temp_dir: b"/tmp/x/w1".to_vec(),
                threads: 2,
                queue: 50,
                proc_dev: 22,
            },
            ToWorker::Conn(ConnInfo {
                id: 9,
                listener: ListenerKind::Unix,
                listener_name: "unix".into(),
                peer: PeerInfo::Unix {
                    uid: 1000,
                    gid: 100,
                    pid: Some(42),
                },
                admin: false,
                key: PeerKey::unix(1000),
            }),
            ToWorker::Conn(ConnInfo {
                id: 10,
                listener: ListenerKind::Tcp,
                listener_name: "tcp".into(),
                peer: PeerInfo::Tcp("127.0.0.1:4000".parse().unwrap()),
                admin: false,
                // A loopback client is its local user.
                key: PeerKey::unix(1000),
            }),
            ToWorker::Conn(ConnInfo {
                id: 11,
                listener: ListenerKind::Tcp,
                listener_name: "scanners".into(),
                peer: PeerInfo::Tcp("[::1]:4000".parse().unwrap()),
                admin: true,
                key: PeerKey::tcp("192.0.2.9".parse().unwrap()),
            }),
            ToWorker::Ping {
                seq: 4,
                fleet: Fleet {
                    serving: 2,
                    workers: 2,
                    generation: 1,
                    crashes: 3,
                    last_replacement_us: 4000,
                    worker_pss_kib: 10,
                    daemon_pss_kib: 20,
                },
            },
            ToWorker::Drain,
            ToWorker::AdminAccepted {
                conn: 7,
                maintenance: true,
            },
            ToWorker::Threads { limit: 3 },
            ToWorker::StreamGrant { bytes: 5 << 20 },
            ToWorker::TaskQuery { seq: 8 },
            ToWorker::StatsTasks {
                conn: 4,
                tasks: vec![task("SCAN", "/home/a/x"), task("INSTREAM", "")],
                omitted: 2,
                pool: PoolCounts {
                    threads: 12,
                    busy: 3,
                    queued: 7,
                },
            },
        ] {
            assert_eq!(ToWorker::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            FromWorker::Hello { worker: 1 },
            FromWorker::Pong {
                seq: 9,
                scans: 1,
                found: 2,
                errors: 3,
                healthy: true,
            },
            FromWorker::Active { conn: 5 },
            FromWorker::Closed { conn: 5 },
            FromWorker::Admin {
                conn: 5,
                command: AdminCommand::Shutdown,
            },
            FromWorker::Admin {
                conn: 5,
                command: AdminCommand::Maintenance(Some(false)),
            },
            FromWorker::Admin {
                conn: 6,
                command: AdminCommand::Maintenance(None),
            },
            FromWorker::Found {
                conn: 5,
                virus: "Eicar".into(),
                target: b"/tmp/x".to_vec(),
            },
            FromWorker::Retire {
                reason: RetireReason::TempFailure,
            },
            FromWorker::Retire {
                reason: RetireReason::ScanOverrun,
            },
            FromWorker::StreamWant { bytes: 3 << 20 },
            FromWorker::StatsTasks { conn: 9 },
            FromWorker::TaskList {
                seq: 8,
                tasks: vec![task("CONTSCAN", "/srv/ü")],
                omitted: 0,
                pool: PoolCounts::default(),
            },
            FromWorker::Counters(Box::new(WorkerCounters::empty())),
        ] {
            assert_eq!(FromWorker::decode(&m.encode()).unwrap(), m);
        }
        for op in [
            BrokerOp::OpenPath {
                path: b"/tmp/x".to_vec(),
            },
            BrokerOp::ReadDir { handle: 3 },
            BrokerOp::OpenEntry {
                handle: 3,
                name: b"f".to_vec(),
                dir: false,
            },
            BrokerOp::CloseDir { handle: 3 },
            BrokerOp::OpenFiles {
                handle: 3,
                names: vec![b"a".to_vec(), b"bc".to_vec()],
            },
            BrokerOp::OpenFiles {
                handle: 3,
                names: Vec::new(),
            },
            BrokerOp::ListDir {
                handle: 3,
                name: b"sub".to_vec(),
                first_files: 8,
            },
        ] {
            let m = BrokerRequest { conn: 7, op };
            assert_eq!(BrokerRequest::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            BrokerReply::Errno(2),
            BrokerReply::File { size: 10, dev: 3 },
            BrokerReply::Dir { handle: 1, dev: 3 },
            BrokerReply::Link,
            BrokerReply::Special,
            BrokerReply::Entries {
                entries: vec![
                    Entry {
                        name: b"f".to_vec(),
                        ino: 4,
                        hint: None,
                        lstat: Ok(meta()),
                        target: None,
                    },
                    Entry {
                        name: b"l".to_vec(),
                        ino: 5,
                        hint: Some(FileKind::Symlink),
                        lstat: Err(13),
                        target: Some(Ok(meta())),
                    },
                ],
                more: true,
            },
            BrokerReply::Files(vec![Ok(FileMeta { size: 1, dev: 2 }), Err(13)]),
            BrokerReply::Listing {
                handle: 4,
                dev: 9,
                entries: vec![Entry {
                    name: b"f".to_vec(),
                    ino: 4,
                    hint: Some(FileKind::File),
                    lstat: Ok(meta()),
                    target: None,
                }],
                more: false,
                files: vec![(0, Ok(FileMeta { size: 1, dev: 2 })), (0, Err(13))],
            },
        ] {
            assert_eq!(BrokerReply::decode(&m.encode()).unwrap(), m);
        }
    }

    fn task(command: &str, file: &str) -> TaskInfo {
        TaskInfo {
            command: command.into(),
            elapsed_us: 1_500_000,
            filename: file.into(),
        }
    }

    #[test]
    fn task_lists_always_fit_in_a_message() {
        // 2,000 tasks with 4 KiB names: names are cut, the list is cut.
        let long = "é".repeat(2048);
        let tasks: Vec<_> = (0..2000).map(|_| task("SCAN", &long)).collect();
        let (kept, omitted) = fit_tasks(tasks, TASK_LIST_ROOM);
        assert!(kept.iter().all(|t| t.filename.len() <= MAX_TASK_NAME));
        assert!(
            kept[0].filename.chars().all(|c| c == 'é'),
            "cut at a character boundary"
        );
        assert_eq!(kept.len() + omitted as usize, 2000);
        let m = FromWorker::TaskList {
            seq: u64::MAX,
            tasks: kept,
            omitted,
            pool: PoolCounts::default(),
        };
        assert!(m.encode().len() <= MAX_MESSAGE);
        assert_eq!(FromWorker::decode(&m.encode()).unwrap(), m);
        let m = ToWorker::StatsTasks {
            conn: u64::MAX,
            tasks: fit_tasks(vec![task("SCAN", &long); 500], TASK_LIST_ROOM).0,
            omitted: 0,
            pool: PoolCounts::default(),
        };
        assert!(m.encode().len() <= MAX_MESSAGE);
        let (few, none) = fit_tasks(vec![task("SCAN", "/a")], TASK_LIST_ROOM);
        assert_eq!((few.len(), none), (1, 0));
    }

    #[test]
    fn task_lines_that_could_forge_stats_lines_do_not_decode() {
        for (command, filename) in [
            ("SCAN", "/a\nEND"),
            ("SCAN", "/a\r"),
            ("SCAN", "/a\u{2028}b"),
            ("SCAN\n", "/a"),
            ("scan", "/a"),
            ("", "/a"),
        ] {
            let m = FromWorker::TaskList {
                seq: 1,
                tasks: vec![task(command, filename)],
                omitted: 0,
                pool: PoolCounts::default(),
            };
            assert_eq!(
                FromWorker::decode(&m.encode()),
                Err(DecodeError::BadValue),
                "{command:?} {filename:?}"
            );
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(FromWorker::decode(b""), Err(DecodeError::Empty));
        assert_eq!(FromWorker::decode(&[99]), Err(DecodeError::UnknownTag(99)));
        assert_eq!(FromWorker::decode(&[2, 1, 2]), Err(DecodeError::Truncated));
        assert_eq!(
            FromWorker::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
            Err(DecodeError::Trailing(1))
        );
        let mut long = vec![3u8];
        long.extend_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(
            FromZygote::decode(&long),
            Err(DecodeError::TooLong(100_000))
        );
        let nul = BrokerRequest {
            conn: 1,
            op: BrokerOp::OpenPath {
                path: b"/a\0b".to_vec(),
            },
        };
        assert_eq!(
            BrokerRequest::decode(&nul.encode()),
            Err(DecodeError::BadValue)
        );
        let long_name = BrokerRequest {
            conn: 1,
            op: BrokerOp::OpenEntry {
                handle: 1,
                name: vec![b'a'; MAX_NAME + 1],
                dir: false,
            },
        };
        assert!(BrokerRequest::decode(&long_name.encode()).is_err());
        // Booleans are 0 or 1, so every message has one encoding.
        assert_eq!(
            FromWorker::decode(&[
                2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 2
            ]),
            Err(DecodeError::BadValue)
        );
        let mut huge = vec![6u8, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(BrokerReply::decode(&huge).is_err());
        // A batch is at most MAX_BATCH files, each a name without NUL.
        let too_many = BrokerRequest {
            conn: 1,
            op: BrokerOp::OpenFiles {
                handle: 1,
                names: vec![b"a".to_vec(); MAX_BATCH + 1],
            },
        };
        assert_eq!(
            BrokerRequest::decode(&too_many.encode()),
            Err(DecodeError::TooLong(MAX_BATCH + 1))
        );
        let nul_name = BrokerRequest {
            conn: 1,
            op: BrokerOp::OpenFiles {
                handle: 1,
                names: vec![b"a\0".to_vec()],
            },
        };
        assert_eq!(
            BrokerRequest::decode(&nul_name.encode()),
            Err(DecodeError::BadValue)
        );
        let many_files = BrokerReply::Files(vec![Err(2); MAX_BATCH + 1]);
        assert!(BrokerReply::decode(&many_files.encode()).is_err());
    }
}
