//! VirusEvent, the supervisor's side: what root keeps of clamd's
//! `VirusEvent` once the launcher (`crate::launcher`) runs the commands.
//! Four things, nothing else:
//!
//! 1. starting the launcher as `virus-event.user` (`sandbox::child`), and
//!    starting it again when it dies, after a back-off (1 s doubling to
//!    60 s), counted and logged;
//! 2. the per-client budget ([`budget`]): a detection is charged to the
//!    client whose scan found it, and only one within that client's share
//!    becomes an event;
//! 3. forwarding the event (id, client, virus name and file name as the
//!    worker reported them: data, never read here) to the launcher as a
//!    closed message (`ipc::launch`);
//! 4. logging each outcome ([`log_outcome`]) and each refusal (per client,
//!    `log.peer-lines-per-minute`).
//!
//! The launcher is less trusted than root: an outcome must name an event
//! in flight with its exact client, virus name and file name, and come
//! within `virus-event.timeout` + 10 s; anything else, or a message that
//! does not decode, ends the launcher, which is started again.
//!
//! All of it runs on one thread of its own (`virus-event`), so that the
//! event loop never waits for the launcher: [`VirusEvents::trigger`] only
//! decides and queues a datagram without blocking.
#![forbid(unsafe_code)]

pub mod budget;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use self::budget::{Budget, Limits, Refusal};
use super::procs::{self, Child};
use crate::config::{Config, VirusEventConfig, DEFAULT_VIRUS_EVENT_USER};
use crate::ipc::launch::{
    Event, Excerpt, FromLauncher, Outcome, Setup, Status, ToLauncher, MAX_FILE_NAME,
    MAX_PATH_VARIABLE,
};
use crate::ipc::messages::MAX_VIRUS_NAME;
use crate::ipc::typed::{RecvError, Typed};

/// Root's end of the launcher's channel.
type Channel = Typed<ToLauncher, FromLauncher>;
use crate::log::limiter::{cost, Budget as LogBudget, Limiter, Size, Verdict};
use crate::policy::{ListenerKind, PeerKey};
use crate::sandbox::child::Ids;

/// Clients whose refusal lines are counted separately (beyond, they share
/// one budget; see `log::limiter`).
const REFUSAL_LOG_KEYS: usize = 1024;
/// How long a new launcher may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// A launcher that ran this long before it died starts again after 1 s.
const STABLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum VirusEventError {
    #[error("virus-event.user: no user {0:?} on this system: create it with `adduser --system --group --no-create-home --home /nonexistent {0}` (the Debian package creates {default}), or name another unprivileged user in virus-event.user", default = DEFAULT_VIRUS_EVENT_USER)]
    NoSuchUser(String),
    #[error("virus-event.user: cannot look up {user:?}: {reason}")]
    Lookup { user: String, reason: String },
    #[error("virus-event.user: {0:?} is root; the command never runs as root: name an unprivileged user")]
    Root(String),
    #[error("virus-event.user: {user:?} has the uid of sandbox.user {sandbox:?}: the command would run as the scanning workers, outside their sandbox; name a user of its own (default {default})", default = DEFAULT_VIRUS_EVENT_USER)]
    SandboxUser { user: String, sandbox: String },
    #[error("virus-event.command is empty")]
    NoCommand,
    #[error("virus-event: the daemon's PATH is longer than {MAX_PATH_VARIABLE} bytes; the command gets it: shorten it")]
    PathTooLong,
    #[error("virus-event: cannot open {path} to start the launcher from: {reason}")]
    Program { path: String, reason: String },
    #[error("virus-event: cannot start the launcher: {0}")]
    Launcher(String),
}

/// What starting the launcher needs besides the `[virus-event]` table.
#[derive(Debug, Clone)]
pub struct Options {
    /// The clamsentry program the launcher runs (`/proc/self/exe` in the
    /// daemon).
    pub exe: PathBuf,
    /// `sandbox.user`: the command must not run with its uid.
    pub sandbox_user: String,
    /// The daemon listens on both Unix and TCP (each kind keeps a reserve).
    pub both_kinds: bool,
    /// Refusal lines per client and minute (`log.peer-lines-per-minute`).
    pub peer_lines_per_minute: u32,
    /// Their bytes per client and minute (`log.peer-bytes-per-minute`).
    pub peer_bytes_per_minute: u64,
    /// Their bytes for all TCP clients together
    /// (`log.tcp-peer-bytes-per-minute`).
    pub tcp_bytes_per_minute: u64,
}

/// What [`VirusEvents::trigger`] did with a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggered {
    /// Sent to the launcher as event `id`; its outcome is logged.
    Sent(u64),
    /// The budget refused it (counted and logged).
    Refused(Refusal),
    /// Not sent (counted and logged).
    NotSent(NotSent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The launcher is being started again.
    NotRunning,
    /// The launcher's queue is full.
    Full,
    /// Longer names than a worker may report.
    TooLong,
}

impl NotSent {
    fn as_str(self) -> &'static str {
        match self {
            NotSent::NotRunning => "the launcher is not running (it is being started again)",
            NotSent::Full => "the launcher does not take events",
            NotSent::TooLong => "the virus name or file name is too long",
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events sent to the launcher.
    pub sent: u64,
    /// Detections that ran no command because of the budget or the launcher
    /// being away (the launcher's own refusals are outcomes).
    pub refused: u64,
    /// Outcomes received.
    pub outcomes: u64,
    /// Events whose outcome was lost with a launcher that died.
    pub lost: u64,
    /// Times the launcher ended and was started again.
    pub restarts: u64,
}

/// The supervisor's VirusEvent service; stops the launcher when dropped.
pub struct VirusEvents {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread from its back-off when stopping.
    wake: Condvar,
    setup: Setup,
    /// Who the launcher runs as; `None` when the daemon is not root (it
    /// then runs as the daemon's own user).
    ids: Option<Ids>,
    user: String,
    exe: File,
}

struct State {
    budget: Budget,
    launcher: Option<Running>,
    /// Events in flight, as sent (an outcome must repeat them).
    events: HashMap<u64, Event>,
    refusals: Limiter<PeerKey>,
    /// The refusal lines of all TCP clients together.
    tcp_refusals: LogBudget,
    stats: Stats,
    stop: bool,
}

#[derive(Clone)]
struct Running {
    channel: Arc<Channel>,
    pid: i32,
}

impl VirusEvents {
    /// The service for `config.virus_event`, with its launcher started, or
    /// `None` when no command is configured. Call once the supervisor has
    /// dropped its capabilities: the service's thread gets the caller's.
    pub fn from_config(
        config: &Config,
        both_kinds: bool,
    ) -> Result<Option<VirusEvents>, VirusEventError> {
        if config.virus_event.command.is_empty() {
            return Ok(None);
        }
        let options = Options {
            exe: PathBuf::from("/proc/self/exe"),
            sandbox_user: config.sandbox.user.clone(),
            both_kinds,
            peer_lines_per_minute: config.log.peer_lines_per_minute,
            peer_bytes_per_minute: config.log.peer_bytes_per_minute.0,
            tcp_bytes_per_minute: config.log.tcp_peer_bytes_per_minute.0,
        };
        VirusEvents::start(&config.virus_event, options).map(Some)
    }

    /// Resolves the user, starts the launcher (a failure is returned: the
    /// daemon does not start without the command it was told to run) and
    /// the thread that keeps it running.
    pub fn start(
        config: &VirusEventConfig,
        options: Options,
    ) -> Result<VirusEvents, VirusEventError> {
        if config.command.is_empty() {
            return Err(VirusEventError::NoCommand);
        }
        let mut user = config.effective_user().to_string();
        let ids = if rustix::process::geteuid().is_root() {
            let ids = lookup(&user)?;
            if ids.uid == 0 {
                return Err(VirusEventError::Root(user));
            }
            if lookup(&options.sandbox_user).is_ok_and(|s| s.uid == ids.uid) {
                return Err(VirusEventError::SandboxUser {
                    user,
                    sandbox: options.sandbox_user,
                });
            }
            Some(ids)
        } else {
            let me = rustix::process::getuid().as_raw();
            let own = crate::sys::user_by_uid(me)
                .ok()
                .flatten()
                .map_or_else(|| me.to_string(), |u| u.name);
            tracing::info!(
                "virus-event: not started as root, so the command runs as the daemon's own user {own:?}, not {user:?}"
            );
            user = own;
            None
        };
        let path = std::env::var_os("PATH").unwrap_or_default();
        if path.len() > MAX_PATH_VARIABLE {
            return Err(VirusEventError::PathTooLong);
        }
        let exe = File::open(&options.exe).map_err(|e| VirusEventError::Program {
            path: options.exe.display().to_string(),
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                budget: Budget::new(Limits::from_config(config, options.both_kinds)),
                launcher: None,
                events: HashMap::new(),
                refusals: Limiter::sized(
                    Size {
                        lines: options.peer_lines_per_minute,
                        bytes: options.peer_bytes_per_minute,
                    },
                    REFUSAL_LOG_KEYS,
                ),
                tcp_refusals: LogBudget::sized(Size {
                    lines: u32::MAX,
                    bytes: options.tcp_bytes_per_minute,
                }),
                stats: Stats::default(),
                stop: false,
            }),
            wake: Condvar::new(),
            setup: Setup {
                command: config.command.clone(),
                timeout_s: config.timeout.min(u64::from(u32::MAX)) as u32,
                max_concurrent: config.max_concurrent,
                path: path.as_bytes().to_vec(),
            },
            ids,
            user,
            exe,
        });
        let (child, channel) = launch(&shared).map_err(VirusEventError::Launcher)?;
        // Running from now on, before the thread is scheduled.
        shared.lock().launcher = Some(Running {
            channel: Arc::clone(&channel),
            pid: child.pid,
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("virus-event".into())
            .spawn(move || keep_running(&worker, child, channel))
            .map_err(|e| VirusEventError::Launcher(format!("no thread: {e}")))?;
        Ok(VirusEvents {
            shared,
            thread: Some(thread),
        })
    }

    /// A worker reported `virus` in `target` on a connection of client
    /// `peer` (the key the gate recorded for it): decides from the budget,
    /// and sends the event to the launcher without waiting. The names are
    /// data, passed on unread.
    pub fn trigger(&self, peer: PeerKey, virus: &str, target: &[u8]) -> Triggered {
        let mut st = self.shared.lock();
        let not_sent = |st: &mut State, why: NotSent| {
            st.stats.refused += 1;
            refused(st, peer, why.as_str(), virus, target);
            Triggered::NotSent(why)
        };
        if virus.len() > MAX_VIRUS_NAME || target.len() > MAX_FILE_NAME {
            return not_sent(&mut st, NotSent::TooLong);
        }
        let Some(launcher) = st.launcher.clone() else {
            return not_sent(&mut st, NotSent::NotRunning);
        };
        let id = match st.budget.decide(peer, Instant::now()) {
            Ok(id) => id,
            Err(r) => {
                st.stats.refused += 1;
                refused(&mut st, peer, r.as_str(), virus, target);
                return Triggered::Refused(r);
            }
        };
        let event = Event {
            id,
            peer,
            virus: virus.to_string(),
            target: target.to_vec(),
        };
        // Non-blocking: the channel is (see `launch`).
        if launcher
            .channel
            .send(&ToLauncher::Event(event.clone()), &[])
            .is_err()
        {
            st.budget.finish(id);
            return not_sent(&mut st, NotSent::Full);
        }
        st.events.insert(id, event);
        st.stats.sent += 1;
        Triggered::Sent(id)
    }

    /// The launcher's pid while it runs (a child the supervisor knows).
    pub fn pid(&self) -> Option<i32> {
        self.shared.lock().launcher.as_ref().map(|l| l.pid)
    }

    /// Commands running (events sent whose outcome has not come).
    pub fn running(&self) -> usize {
        self.shared.lock().budget.running()
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }
}

impl Drop for VirusEvents {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stop = true;
            if let Some(l) = &st.launcher {
                // Wakes the thread's poll; the launcher sees its end close.
                l.channel.shutdown();
            }
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The user's uid and primary group, its only group (as the workers').
fn lookup(user: &str) -> Result<Ids, VirusEventError> {
    use crate::sandbox::SandboxError;
    match crate::sandbox::lookup_user(user) {
        Ok((uid, gid)) => Ok(Ids {
            uid,
            gid,
            groups: vec![gid],
        }),
        Err(SandboxError::NoSuchUser(_)) => Err(VirusEventError::NoSuchUser(user.to_string())),
        Err(e) => Err(VirusEventError::Lookup {
            user: user.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Starts a launcher, gives it its setup and waits until it is ready.
/// Returns it with its channel, non-blocking.
fn launch(shared: &Shared) -> Result<(Child, Arc<Channel>), String> {
    let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    let spawned = crate::sandbox::child::spawn_helper(
        &shared.exe,
        &["__virus-event"],
        theirs.as_fd(),
        shared.ids.as_ref(),
    )
    .map_err(|e| format!("as {}: {e}", shared.user))?;
    drop(theirs);
    // Not reaped by anyone but us, so the pid is still this process.
    let child = procs::adopt(spawned.id() as i32).map_err(|e| e.to_string())?;
    let ready = (|| {
        ours.send(&ToLauncher::Setup(shared.setup.clone()), &[])
            .map_err(|e| format!("sending the setup: {e}"))?;
        ours.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("not ready within {} s", READY_WITHIN.as_secs()));
            }
            match receive(&ours, left) {
                Received::Message(FromLauncher::Ready) => return Ok(()),
                Received::Message(FromLauncher::Fatal { error }) => return Err(error),
                Received::Message(other) => return Err(format!("{other:?} before it was ready")),
                Received::Nothing => {}
                Received::End(why) => return Err(why),
            }
        }
    })();
    match ready {
        Ok(()) => Ok((child, Arc::new(ours))),
        Err(why) => {
            child.kill();
            let how = child.wait();
            Err(format!("{why} (it ended with {how})"))
        }
    }
}

enum Received {
    Message(FromLauncher),
    /// Nothing within the wait.
    Nothing,
    /// The channel ended or broke a rule: why.
    End(String),
}

/// Waits up to `wait` for one message on the non-blocking `channel`.
fn receive(channel: &Channel, wait: Duration) -> Received {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ms = wait.as_millis().min(1000) as i64;
    let timeout = Timespec {
        tv_sec: ms / 1000,
        tv_nsec: ms % 1000 * 1_000_000,
    };
    let mut fds = [PollFd::new(channel, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => return Received::Nothing,
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Received::Nothing,
        Err(e) => return Received::End(format!("poll: {e}")),
    }
    match channel.recv() {
        Err(RecvError::Descriptors(_)) => Received::End("descriptors on its channel".into()),
        Ok(Some(m)) => Received::Message(m.msg),
        Err(RecvError::Decode(e)) => Received::End(format!("a message that does not decode: {e}")),
        Ok(None) => Received::End("its channel closed".into()),
        Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Received::Nothing,
        Err(RecvError::Io(e)) => Received::End(format!("its channel: {e}")),
    }
}

/// The service thread: serves the launcher, and when it ends starts a new
/// one after the back-off, until the service is dropped.
fn keep_running(shared: &Shared, mut child: Child, mut channel: Arc<Channel>) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        {
            let mut st = shared.lock();
            if st.stop {
                channel.shutdown();
            }
            st.launcher = Some(Running {
                channel: Arc::clone(&channel),
                pid: child.pid,
            });
        }
        tracing::info!(pid = child.pid, user = %shared.user, "virus-event: launcher started");
        let why = serve(shared, &channel);
        let (lost, stop) = {
            let mut st = shared.lock();
            st.launcher = None;
            st.events.clear();
            let lost = st.budget.finish_all() as u64;
            st.stats.lost += lost;
            (lost, st.stop)
        };
        channel.shutdown();
        child.kill();
        let how = child.wait();
        if stop {
            return;
        }
        failures = if started.elapsed() >= STABLE_AFTER {
            1
        } else {
            failures + 1
        };
        let restarts = {
            let mut st = shared.lock();
            st.stats.restarts += 1;
            st.stats.restarts
        };
        tracing::warn!(
            pid = child.pid,
            ended = %how,
            lost,
            restarts,
            "virus-event: the launcher ended ({why}); {lost} outcomes lost; starting it again in {} s",
            budget::backoff(failures).as_secs()
        );
        // Until it runs again, and as long as it cannot be started.
        loop {
            if stopping(shared, budget::backoff(failures)) {
                return;
            }
            match launch(shared) {
                Ok((c, ch)) => {
                    (child, channel) = (c, ch);
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(
                        "virus-event: cannot start the launcher: {e}; trying again in {} s",
                        budget::backoff(failures).as_secs()
                    );
                }
            }
        }
    }
}

/// Waits `wait` unless the service stops first; true when it stops.
fn stopping(shared: &Shared, wait: Duration) -> bool {
    let st = shared.lock();
    let (st, _) = shared
        .wake
        .wait_timeout_while(st, wait, |st| !st.stop)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    st.stop
}

/// Reads outcomes until the launcher must end; returns why.
fn serve(shared: &Shared, channel: &Channel) -> String {
    loop {
        if shared.lock().stop {
            return "stopping".into();
        }
        if let Some(id) = shared.lock().budget.overdue(Instant::now()) {
            return format!("no outcome for event {id} within virus-event.timeout + 10 s");
        }
        let outcome = match receive(channel, Duration::from_secs(1)) {
            Received::Nothing => continue,
            Received::End(why) => return why,
            Received::Message(FromLauncher::Outcome(o)) => o,
            Received::Message(other) => return format!("it sent {other:?} while running"),
        };
        let expected = shared.lock().events.remove(&outcome.id);
        let matches = expected.is_some_and(|e| {
            e.peer == outcome.peer && e.virus == outcome.virus && e.target == outcome.target
        });
        if !matches {
            return format!("an outcome for event {} that it was not sent", outcome.id);
        }
        log_outcome(&outcome, &shared.user, shared.setup.timeout_s);
        let mut st = shared.lock();
        st.budget.finish(outcome.id);
        st.stats.outcomes += 1;
    }
}

/// One line per refused detection, within the client's log budget.
fn refused(st: &mut State, peer: PeerKey, reason: &str, virus: &str, target: &[u8]) {
    let bytes = cost(&[virus.as_bytes(), target]);
    let tcp = (!peer.is_unix()).then_some(&mut st.tcp_refusals);
    if let Verdict::Allow { suppressed } = st.refusals.charge(&peer, Instant::now(), bytes, tcp) {
        tracing::warn!(
            virus_event_status = "refused",
            virus_event_refused = st.stats.refused,
            peer = %peer,
            listener = match peer.kind() { ListenerKind::Unix => "unix", ListenerKind::Tcp => "tcp" },
            suppressed,
            virus_name = %virus.escape_debug(),
            scan_target = %String::from_utf8_lossy(target).escape_debug(),
            "virus-event: no command run for this detection: {reason}"
        );
    }
}

/// The supervisor's one log line for an outcome (journald fields
/// `VIRUS_EVENT_STATUS`, `VIRUS_EVENT_EXIT_CODE`, `VIRUS_EVENT_SIGNAL`,
/// `VIRUS_EVENT_STDOUT`, `VIRUS_EVENT_STDERR`, `VIRUS_EVENT_USER`, `PEER`,
/// `VIRUS_NAME`, `SCAN_TARGET`, `DURATION_MS`): info for exit status 0,
/// warning otherwise.
fn log_outcome(o: &Outcome, user: &str, timeout_s: u32) {
    let text = |e: &Excerpt| {
        let mut t = String::from_utf8_lossy(&e.bytes).trim_end().to_string();
        if e.truncated {
            t.push_str(" …");
        }
        t
    };
    let virus = o.virus.escape_debug().to_string();
    let (status, code, signal, message) = match &o.status {
        Status::Exited(c) => (
            "exited",
            Some(*c),
            None,
            format!("command for {virus} exited with status {c}"),
        ),
        Status::Signaled(s) => (
            "killed",
            None,
            Some(*s),
            format!("command for {virus} killed by signal {s}"),
        ),
        Status::TimedOut => (
            "timeout",
            None,
            Some(9),
            format!(
                "command for {virus} killed after the {timeout_s} s timeout (virus-event.timeout)"
            ),
        ),
        Status::Refused(r) => (
            "refused",
            None,
            None,
            format!("no command run for this detection: {}", r.as_str()),
        ),
        Status::Failed(e) => (
            "failed",
            None,
            None,
            format!("cannot start the command for {virus} as {user}: {e}"),
        ),
    };
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                virus_event_status = status,
                virus_event_exit_code = code,
                virus_event_signal = signal,
                virus_event_stdout = %text(&o.stdout),
                virus_event_stderr = %text(&o.stderr),
                virus_event_user = %user,
                peer = %o.peer,
                virus_name = %virus,
                scan_target = %String::from_utf8_lossy(&o.target),
                duration_ms = o.duration_ms,
                "virus-event: {message}"
            )
        };
    }
    if code == Some(0) {
        line!(info);
    } else {
        line!(warn);
    }
}
