//! VirusEvent: a command run on each detection, with clamd 1.4's semantics
//! and the limits a root process needs when it starts programs on behalf of
//! data it did not produce.
//!
//! # What the command sees (as clamd 1.4, `clamd/clamd_others.c`)
//!
//! * It runs as `/bin/sh -c COMMAND` (argv[0] `sh`), working directory `/`,
//!   stdin `/dev/null`.
//! * Its environment is exactly `PATH` (the daemon's), and
//!   `CLAM_VIRUSEVENT_FILENAME` (the scanned file: its path; for INSTREAM
//!   `instream(ADDRESS@PORT)` from an IPv4 client, else `instream(local)`;
//!   the descriptor's path for FILDES) and
//!   `CLAM_VIRUSEVENT_VIRUSNAME`.
//! * `%v` in the command is replaced by the virus name. `%f` is replaced by
//!   clamd's fixed sentence saying the file name format character is
//!   disabled (CVE-2024-20328: clamd 0.104–1.2 put the file name into the
//!   shell command); the file name is only ever in the environment.
//!
//! # What differs from clamd, and why
//!
//! clamd inserts the virus name into the command text unquoted. Here the
//! name is data from the scanning worker (a compromised worker can send any
//! name), so:
//!
//! * a name must be printable ASCII and at most [`MAX_VIRUS_NAME`] bytes,
//!   and a file name at most [`MAX_FILE_NAME`] bytes without NUL; otherwise
//!   no command runs (logged);
//! * a name made only of letters, digits and `._-+:/,@%` (every ClamAV
//!   signature name) is inserted as is, exactly as clamd does: these
//!   characters mean nothing to the shell in any context;
//! * any other name is quoted for where `%v` stands in the command: outside
//!   quotes as `'name'` (single-quote shell quoting, `'` as `'\''`), inside
//!   `'…'` with `'` as `'\''`, inside `"…"` with `$ \` " \\` backslashed.
//!   Where the context cannot be told for certain (after `$(`, `${`, a
//!   backquote, a here-document, or right after `\` or `$`), such a name runs
//!   no command (logged), rather than risk running part of it;
//! * the command runs as `virus-event.user` (default `sandbox.user`; never
//!   root, checked when the configuration is read, when [`VirusEvents`] is
//!   made, and in the child before `exec`), with no-new-privs and none of the
//!   daemon's descriptors (`crate::sandbox::child`);
//! * it runs in its own process group and is killed (the whole group,
//!   SIGKILL) after `virus-event.timeout` seconds; clamd waits for it
//!   without limit, holding a scanning thread;
//! * at most `virus-event.max-concurrent` commands run at once and at most
//!   `virus-event.max-per-minute` start per minute; a detection beyond either
//!   runs no command and is counted and logged (never queued);
//! * its stdout and stderr are captured (the first [`CAPTURE`] bytes of
//!   each; the rest is read and discarded) and logged with its exit status
//!   or signal and its duration in one structured line (journald fields
//!   `VIRUS_EVENT_STATUS`, `VIRUS_EVENT_EXIT_CODE`, `VIRUS_EVENT_SIGNAL`,
//!   `VIRUS_EVENT_STDOUT`, `VIRUS_EVENT_STDERR`, `VIRUS_NAME`,
//!   `SCAN_TARGET`, `DURATION_MS`).
//!
//! # How the supervisor uses it
//!
//! Make one [`VirusEvents`] at start-up with [`VirusEvents::from_config`]
//! (`None`: no command configured) and call [`VirusEvents::trigger`] with the
//! virus name and the file name whenever a worker reports FOUND (once per
//! name, as clamd calls `virusaction` once per reported name). `trigger`
//! never blocks: it checks the limits, then starts a thread (a plain OS
//! thread, not a tokio task, so that it works the same from async and
//! blocking code and never occupies the runtime's workers) that spawns the
//! command and watches it. The supervisor must keep `CAP_SETUID` and
//! `CAP_SETGID` for the identity switch.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, VirusEventConfig};

/// Longest virus name passed to the command (what a worker may report:
/// the supervisor↔worker messages allow as much).
pub const MAX_VIRUS_NAME: usize = 1024;
/// Longest file name passed in `CLAM_VIRUSEVENT_FILENAME` (PATH_MAX).
pub const MAX_FILE_NAME: usize = 4096;
/// Bytes of stdout and of stderr kept for the log line.
pub const CAPTURE: usize = 4096;
/// What clamd 1.4 puts in place of `%f`.
pub const FILENAME_DISABLED_MESSAGE: &str = "The filename format character has been disabled due to security concerns, use the 'CLAM_VIRUSEVENT_FILENAME' environment variable instead.";

/// How long output is still read after the command exited (background
/// children may hold the pipes open; they are not waited for).
const GRACE: Duration = Duration::from_millis(200);
/// Drops are logged at most this often (with the count since the last line).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum VirusEventError {
    #[error("virus-event.user: no user {0:?} on this system")]
    NoSuchUser(String),
    #[error("virus-event.user: cannot look up {user:?}: {reason}")]
    Lookup { user: String, reason: String },
    #[error("virus-event.user: {0:?} is root; the command never runs as root: name an unprivileged user")]
    Root(String),
    #[error("virus-event.command is empty")]
    NoCommand,
}

/// What [`VirusEvents::trigger`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggered {
    /// The command is starting in its own thread.
    Started,
    /// No command runs for this detection (counted and logged).
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `max-concurrent` commands are running.
    Busy,
    /// `max-per-minute` commands started in the current minute.
    RateLimited,
    /// The virus name is empty, too long or not printable ASCII.
    BadVirusName,
    /// The file name is too long or has a NUL byte.
    BadFileName,
    /// The name needs quoting where `%v` stands, and the quoting context
    /// there cannot be told for certain.
    Unquotable,
    /// The thread could not be started.
    NoThread,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::Busy => "max-concurrent commands are running",
            DropReason::RateLimited => "max-per-minute commands started this minute",
            DropReason::BadVirusName => "the virus name is empty, too long or not printable ASCII",
            DropReason::BadFileName => "the file name is too long or has a NUL byte",
            DropReason::Unquotable => {
                "the virus name needs quoting and %v stands where its quoting context is unclear"
            }
            DropReason::NoThread => "no thread could be started",
        }
    }
}

/// Runs the configured command on detections; cheap to clone.
#[derive(Clone)]
pub struct VirusEvents {
    inner: Arc<Inner>,
}

struct Inner {
    command: String,
    /// (uid, gid) to switch to; `None` when not running as root (the
    /// command then runs as the daemon's own, unprivileged, user).
    identity: Option<(u32, u32)>,
    user: String,
    timeout: Duration,
    max_concurrent: usize,
    max_per_minute: u32,
    path: Option<OsString>,
    running: AtomicUsize,
    dropped: AtomicU64,
    state: Mutex<RateState>,
}

struct RateState {
    window_start: Instant,
    started_in_window: u32,
    last_drop_log: Option<Instant>,
    drops_since_log: u64,
}

impl VirusEvents {
    /// The runner for `config.virus_event`, or `None` when no command is
    /// configured. The user defaults to `sandbox.user`.
    pub fn from_config(config: &Config) -> Result<Option<VirusEvents>, VirusEventError> {
        if config.virus_event.command.is_empty() {
            return Ok(None);
        }
        VirusEvents::new(&config.virus_event, &config.sandbox.user).map(Some)
    }

    /// A runner for `config`; `default_user` is used when
    /// `config.user` is empty. Fails when the user does not exist or is root.
    pub fn new(
        config: &VirusEventConfig,
        default_user: &str,
    ) -> Result<VirusEvents, VirusEventError> {
        if config.command.is_empty() {
            return Err(VirusEventError::NoCommand);
        }
        let user = if config.user.is_empty() {
            default_user
        } else {
            config.user.as_str()
        };
        let (uid, gid) = match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            Ok(None) => match user.parse::<u32>() {
                Ok(n) => (n, n),
                Err(_) => return Err(VirusEventError::NoSuchUser(user.to_string())),
            },
            Err(e) => {
                return Err(VirusEventError::Lookup {
                    user: user.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        if uid == 0 {
            return Err(VirusEventError::Root(user.to_string()));
        }
        let identity = if nix::unistd::geteuid().is_root() {
            Some((uid, gid))
        } else {
            tracing::info!(
                "virus-event: not started as root, so the command runs as the daemon's own user, not {user:?}"
            );
            None
        };
        Ok(VirusEvents {
            inner: Arc::new(Inner {
                command: config.command.clone(),
                identity,
                user: user.to_string(),
                timeout: Duration::from_secs(config.timeout),
                max_concurrent: config.max_concurrent as usize,
                max_per_minute: config.max_per_minute,
                path: std::env::var_os("PATH"),
                running: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                state: Mutex::new(RateState {
                    window_start: Instant::now(),
                    started_in_window: 0,
                    last_drop_log: None,
                    drops_since_log: 0,
                }),
            }),
        })
    }

    /// Runs the command for one detection, without waiting for it: checks
    /// the names and the limits, then starts a thread that runs and watches
    /// the command and logs how it ended. `virus` and `filename` are data
    /// (from the worker) and are never interpreted as shell text.
    pub fn trigger(&self, virus: &str, filename: &[u8]) -> Triggered {
        let inner = &self.inner;
        if virus.is_empty()
            || virus.len() > MAX_VIRUS_NAME
            || !virus.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return self.drop_event(DropReason::BadVirusName, virus, filename);
        }
        if filename.len() > MAX_FILE_NAME || filename.contains(&0) {
            return self.drop_event(DropReason::BadFileName, virus, filename);
        }
        let Ok(command) = substitute(&inner.command, virus) else {
            return self.drop_event(DropReason::Unquotable, virus, filename);
        };
        // A slot first, so that a detection dropped as busy does not use up
        // the minute's allowance.
        if inner
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max_concurrent).then_some(n + 1)
            })
            .is_err()
        {
            return self.drop_event(DropReason::Busy, virus, filename);
        }
        let slot = Slot(Arc::clone(inner));
        {
            let mut st = inner.lock();
            let now = Instant::now();
            if now.duration_since(st.window_start) >= Duration::from_secs(60) {
                st.window_start = now;
                st.started_in_window = 0;
            }
            if st.started_in_window >= inner.max_per_minute {
                drop(st);
                drop(slot);
                return self.drop_event(DropReason::RateLimited, virus, filename);
            }
            st.started_in_window += 1;
        }
        let run = Run {
            command,
            virus: virus.to_string(),
            filename: filename.to_vec(),
        };
        let spawned = std::thread::Builder::new()
            .name("virus-event".into())
            .spawn(move || {
                let _slot = slot;
                run.execute(&_slot.0);
            });
        match spawned {
            Ok(_) => Triggered::Started,
            Err(_) => self.drop_event(DropReason::NoThread, virus, filename),
        }
    }

    /// Commands running now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Detections that ran no command, since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn drop_event(&self, reason: DropReason, virus: &str, filename: &[u8]) -> Triggered {
        let inner = &self.inner;
        let total = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut st = inner.lock();
        st.drops_since_log += 1;
        let now = Instant::now();
        if st
            .last_drop_log
            .is_some_and(|t| now.duration_since(t) < DROP_LOG_EVERY)
        {
            return Triggered::Dropped(reason);
        }
        let since = std::mem::take(&mut st.drops_since_log);
        st.last_drop_log = Some(now);
        drop(st);
        tracing::warn!(
            virus_event_status = "dropped",
            virus_event_dropped = total,
            virus_name = %virus.escape_debug(),
            scan_target = %String::from_utf8_lossy(filename).escape_debug(),
            "virus-event: no command run for this detection: {} ({since} dropped since the last such line, {total} in all)",
            reason.as_str()
        );
        Triggered::Dropped(reason)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running command's place in `max-concurrent`, given back on drop.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Run {
    command: String,
    virus: String,
    filename: Vec<u8>,
}

impl Run {
    fn execute(self, inner: &Inner) {
        let started = Instant::now();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg0("sh")
            .arg("-c")
            .arg(&self.command)
            .env_clear()
            .env(
                "CLAM_VIRUSEVENT_FILENAME",
                OsStr::from_bytes(&self.filename),
            )
            .env("CLAM_VIRUSEVENT_VIRUSNAME", &self.virus)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(path) = &inner.path {
            cmd.env("PATH", path);
        }
        crate::sandbox::child::demote_before_exec(&mut cmd, inner.identity);
        let scan_target = String::from_utf8_lossy(&self.filename).into_owned();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    virus_event_status = "failed",
                    virus_name = %self.virus,
                    scan_target = %scan_target,
                    virus_event_user = %inner.user,
                    "virus-event: cannot start the command as {}: {e}",
                    inner.user
                );
                return;
            }
        };
        let outcome = watch(child, inner.timeout);
        let duration_ms = started.elapsed().as_millis() as u64;
        let stdout = outcome.stdout.text();
        let stderr = outcome.stderr.text();
        let (status, code, signal) = match (outcome.timed_out, outcome.status) {
            (true, _) => ("timeout", None, Some(9)),
            (false, Some(s)) => match (s.code(), s.signal()) {
                (Some(c), _) => ("exited", Some(c), None),
                (None, sig) => ("killed", None, sig),
            },
            (false, None) => ("unknown", None, None),
        };
        let how = match (status, code, signal) {
            ("timeout", ..) => format!(
                "killed after the {} s timeout (virus-event.timeout)",
                inner.timeout.as_secs()
            ),
            (_, Some(c), _) => format!("exited with status {c}"),
            (_, _, Some(s)) => format!("killed by signal {s}"),
            _ => "ended (status unknown)".to_string(),
        };
        let message = format!("virus-event: command for {} {how}", self.virus);
        if code == Some(0) {
            tracing::info!(
                virus_event_status = status,
                virus_event_exit_code = code,
                virus_event_signal = signal,
                virus_event_stdout = %stdout,
                virus_event_stderr = %stderr,
                virus_event_user = %inner.user,
                virus_name = %self.virus,
                scan_target = %scan_target,
                duration_ms,
                "{message}"
            );
        } else {
            tracing::warn!(
                virus_event_status = status,
                virus_event_exit_code = code,
                virus_event_signal = signal,
                virus_event_stdout = %stdout,
                virus_event_stderr = %stderr,
                virus_event_user = %inner.user,
                virus_name = %self.virus,
                scan_target = %scan_target,
                duration_ms,
                "{message}"
            );
        }
    }
}

/// The first [`CAPTURE`] bytes of one output pipe.
struct Capture<R> {
    pipe: Option<R>,
    kept: Vec<u8>,
    truncated: bool,
}

impl<R: Read + AsFd> Capture<R> {
    fn new(pipe: Option<R>) -> Capture<R> {
        if let Some(p) = &pipe {
            set_nonblocking(p);
        }
        Capture {
            pipe,
            kept: Vec::new(),
            truncated: false,
        }
    }

    fn done(&self) -> bool {
        self.pipe.is_none()
    }

    /// Reads what is there without blocking; closes the pipe at EOF.
    fn read_available(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = CAPTURE - self.kept.len();
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    self.truncated |= n > room;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    fn text(&self) -> String {
        let mut t = String::from_utf8_lossy(&self.kept).trim_end().to_string();
        if self.truncated {
            t.push_str(" …");
        }
        t
    }
}

fn set_nonblocking(fd: &impl AsFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let raw = fd.as_fd().as_raw_fd();
    if let Ok(flags) = fcntl(raw, FcntlArg::F_GETFL) {
        let _ = fcntl(
            raw,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

struct Outcome {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    stdout: Capture<std::process::ChildStdout>,
    stderr: Capture<std::process::ChildStderr>,
}

/// Waits for the command, reading its output, until it exited (plus
/// [`GRACE`] for output still in the pipes) or `timeout` passed (then its
/// process group is killed).
fn watch(mut child: Child, timeout: Duration) -> Outcome {
    use nix::poll::{poll, PollFd, PollFlags};
    let started = Instant::now();
    let deadline = started + timeout;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = Outcome {
        status: None,
        timed_out: false,
        stdout: Capture::new(child.stdout.take()),
        stderr: Capture::new(child.stderr.take()),
    };
    let mut exited_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if out.status.is_none() {
            if let Ok(Some(s)) = child.try_wait() {
                out.status = Some(s);
                exited_at = Some(now);
            } else if now >= deadline {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                out.timed_out = true;
                out.status = child.wait().ok();
                exited_at = Some(Instant::now());
            }
        }
        if let Some(t) = exited_at {
            if (out.stdout.done() && out.stderr.done()) || now >= t + GRACE {
                break;
            }
        }
        let wait = Duration::from_millis(50);
        {
            let mut fds = Vec::new();
            if let Some(p) = &out.stdout.pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if let Some(p) = &out.stderr.pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            if fds.is_empty() {
                std::thread::sleep(wait);
            } else {
                let _ = poll(&mut fds, 50u16);
            }
        }
        out.stdout.read_available();
        out.stderr.read_available();
    }
    out
}

/// The command text with `%v` replaced by `virus`, quoted for where it
/// stands, and `%f` by [`FILENAME_DISABLED_MESSAGE`] (see the module docs).
/// `Err` when `virus` needs quoting at a place whose quoting context is
/// unclear.
pub fn substitute(template: &str, virus: &str) -> Result<String, Unquotable> {
    let plain = virus.bytes().all(is_plain);
    let mut out = String::with_capacity(template.len() + virus.len());
    let mut lexer = Lexer::default();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('v') => {
                    chars.next();
                    let text = if plain {
                        virus.to_string()
                    } else {
                        lexer.quote(virus).ok_or(Unquotable)?
                    };
                    lexer.feed_str(&text);
                    out.push_str(&text);
                    continue;
                }
                Some('f') => {
                    chars.next();
                    lexer.feed_str(FILENAME_DISABLED_MESSAGE);
                    out.push_str(FILENAME_DISABLED_MESSAGE);
                    continue;
                }
                _ => {}
            }
        }
        lexer.feed(c);
        out.push(c);
    }
    Ok(out)
}

/// `%v` stands where the shell's quoting context is unclear and the virus
/// name needs quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unquotable;

/// Bytes that mean nothing to the shell anywhere in a word.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-+:/,@%".contains(&b)
}

/// Where a POSIX shell is, reading the command text so far: enough to quote
/// a word correctly at that point, and to say when it cannot be sure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Context {
    #[default]
    Unquoted,
    Comment,
    Single,
    Double,
    /// Inside `$(…)`, `${…}`, backquotes or a here-document: not tracked.
    Unclear,
}

#[derive(Debug, Clone, Copy)]
struct Lexer {
    context: Context,
    /// The previous character was an unquoted or double-quoted `\`.
    escaped: bool,
    /// The previous character was an unescaped `$`.
    dollar: bool,
    /// The previous character was `<` (outside quotes).
    less: bool,
    /// At the start of a word (for `#` comments).
    word_start: bool,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer {
            context: Context::Unquoted,
            escaped: false,
            dollar: false,
            less: false,
            word_start: true,
        }
    }
}

impl Lexer {
    fn feed_str(&mut self, s: &str) {
        for c in s.chars() {
            self.feed(c);
        }
    }

    fn feed(&mut self, c: char) {
        let escaped = std::mem::take(&mut self.escaped);
        let dollar = std::mem::take(&mut self.dollar);
        let less = std::mem::take(&mut self.less);
        match self.context {
            Context::Unclear => {}
            Context::Comment => {
                if c == '\n' {
                    self.context = Context::Unquoted;
                    self.word_start = true;
                }
            }
            Context::Single => {
                if c == '\'' {
                    self.context = Context::Unquoted;
                }
            }
            Context::Double => {
                if escaped {
                    return;
                }
                match c {
                    '\\' => self.escaped = true,
                    '"' => self.context = Context::Unquoted,
                    '`' => self.context = Context::Unclear,
                    '(' | '{' if dollar => self.context = Context::Unclear,
                    '$' => self.dollar = true,
                    _ => {}
                }
            }
            Context::Unquoted => {
                let word_start = std::mem::replace(
                    &mut self.word_start,
                    matches!(c, ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')'),
                );
                if escaped {
                    self.word_start = false;
                    return;
                }
                match c {
                    '\\' => self.escaped = true,
                    '\'' if dollar => self.context = Context::Unclear,
                    '"' if dollar => self.context = Context::Unclear,
                    '(' | '{' if dollar => self.context = Context::Unclear,
                    '\'' => self.context = Context::Single,
                    '"' => self.context = Context::Double,
                    '`' => self.context = Context::Unclear,
                    '<' if less => self.context = Context::Unclear,
                    '<' => self.less = true,
                    '$' => self.dollar = true,
                    '#' if word_start => self.context = Context::Comment,
                    _ => {}
                }
            }
        }
    }

    /// `name` as one literal word at this point, or `None` when unclear.
    fn quote(&self, name: &str) -> Option<String> {
        if self.escaped || self.dollar {
            return None;
        }
        match self.context {
            Context::Unquoted | Context::Comment => {
                Some(format!("'{}'", name.replace('\'', "'\\''")))
            }
            Context::Single => Some(name.replace('\'', "'\\''")),
            Context::Double => {
                let mut s = String::with_capacity(name.len() + 8);
                for c in name.chars() {
                    if matches!(c, '$' | '`' | '"' | '\\') {
                        s.push('\\');
                    }
                    s.push(c);
                }
                Some(s)
            }
            Context::Unclear => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh -c 'printf %s\\n WORDS'` prints for the substituted command.
    fn shell_words(template: &str, virus: &str) -> String {
        let cmd = substitute(template, virus).unwrap();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn plain_names_are_inserted_as_clamd_does() {
        assert_eq!(
            substitute(
                "/x.sh /tmp \"Virus found: %v\"",
                "ClamAV-Test-File.UNOFFICIAL"
            )
            .unwrap(),
            "/x.sh /tmp \"Virus found: ClamAV-Test-File.UNOFFICIAL\""
        );
        assert_eq!(
            substitute("a %v b %v %%v", "Win.Test.EICAR_HDB-1").unwrap(),
            "a Win.Test.EICAR_HDB-1 b Win.Test.EICAR_HDB-1 %Win.Test.EICAR_HDB-1"
        );
        // Even where the context is unclear.
        assert_eq!(
            substitute("echo \"$(date) %v\"", "Heuristics.Limits.Exceeded").unwrap(),
            "echo \"$(date) Heuristics.Limits.Exceeded\""
        );
    }

    #[test]
    fn percent_f_is_disabled_as_in_clamd() {
        assert_eq!(
            substitute("echo %f", "X").unwrap(),
            format!("echo {FILENAME_DISABLED_MESSAGE}")
        );
    }

    #[test]
    fn other_names_stay_one_literal_word_in_every_context() {
        let hostile = [
            "x'; touch /tmp/cs-pwned; '",
            "a\"; touch /tmp/cs-pwned; \"",
            "$(touch /tmp/cs-pwned)",
            "`touch /tmp/cs-pwned`",
            "a b\\c ${HOME} *",
            "'",
            "\\",
        ];
        for name in hostile {
            for (template, want) in [
                ("printf '%s\\n' %v", format!("{name}\n")),
                ("printf '%s\\n' \"%v\"", format!("{name}\n")),
                ("printf '%s\\n' '%v'", format!("{name}\n")),
                ("printf '%s\\n' \"name: %v.\"", format!("name: {name}.\n")),
                ("printf '%s\\n' 'name: %v.'", format!("name: {name}.\n")),
                ("printf '%s\\n' x%vy", format!("x{name}y\n")),
                ("printf '%s\\n' %v # %v", format!("{name}\n")),
            ] {
                assert_eq!(
                    shell_words(template, name),
                    want,
                    "{template} with {name:?}"
                );
            }
        }
        assert!(!std::path::Path::new("/tmp/cs-pwned").exists());
    }

    #[test]
    fn unclear_contexts_refuse_names_that_need_quoting() {
        for template in [
            "echo $(echo %v)",
            "echo \"$(date) %v\"",
            "echo `echo %v`",
            "echo ${X:-%v}",
            "echo \\%v",
            "echo $%v",
            "cat <<EOF\n%v\nEOF",
            "echo \"\\%v\"",
        ] {
            assert_eq!(substitute(template, "a;b"), Err(Unquotable), "{template}");
            assert!(substitute(template, "Win.Test-1").is_ok(), "{template}");
        }
    }
}
