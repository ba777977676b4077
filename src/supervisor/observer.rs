//! The observer, seen from the supervisor: its listening sockets, its
//! process (started, fed a [`Snapshot`] about once a second, watched,
//! restarted with a back-off), the self-test schedule, and the metrics
//! aggregator ([`Metrics`]) whose snapshots it renders.
//!
//! The observer (`clamsentry __observer`, `crate::observer`) reads every
//! HTTP and agent request; the supervisor only holds the listening sockets
//! (bound here from `[metrics]`/`[agent]`, or systemd's sockets named
//! `metrics` and `agent`) and passes them on. What the observer may say back
//! is closed ([`FromObserver`]): its own resource use, and the result of a
//! self-test the supervisor asked for. Anything else, or more than
//! [`MAX_MESSAGES_PER_SECOND`], ends it.
//!
//! The self-test: [`synthetic_connection`] makes a socket pair; one end is
//! handed to a worker exactly like an accepted TCP connection (listener
//! `selftest`, an anonymous peer `[::]:0`, no administrator, the TCP command
//! profile, so no path command and no file access), the other goes to the
//! observer, which sends the EICAR string with INSTREAM and reports what came
//! back. The supervisor never reads the reply itself.
#![forbid(unsafe_code)]

use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lifecycle::Machine;
use super::listeners::Accepted;
use super::metrics::{Metrics, Now, Proc};
use super::procs::{self, Child, Ended};
use super::Input;
use crate::config::{Config, ObserverListen};
use crate::ipc::observe::{
    Flags, FromObserver, ProcUsage, SelftestOutcome, ToObserver, MAX_DETAIL,
};
use crate::ipc::typed::{AsyncTyped, RecvError, Typed};
use crate::policy::{Identity, ListenerKind};
use crate::systemd::activation::{Activated, Socket, AGENT, METRICS};

/// Messages per second the observer may send; beyond, it is ended.
pub const MAX_MESSAGES_PER_SECOND: u32 = 20;
/// Time between snapshots.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// Time between measurements of every process's memory.
pub const MEASURE_EVERY: Duration = Duration::from_secs(5);
/// The first self-test, after the first worker serves.
pub const FIRST_SELFTEST_AFTER: Duration = Duration::from_secs(2);
pub use crate::ipc::observe::SELFTEST_LISTENER;

/// Longest wait before a dead observer is started again.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// What the event loop hears about the observer.
#[derive(Debug)]
pub enum ObserverEvent {
    Message(FromObserver),
    /// It broke a rule of its channel (the reason goes to the log).
    Broken(String),
    Exited(Ended),
}

/// A listening socket for the observer, and where it came from (the log).
struct Listening {
    fd: OwnedFd,
    shown: String,
    /// A Unix socket file the daemon made: removed at exit.
    made: Option<crate::safe_fs::Made>,
}

/// The observer's listening sockets, held by the supervisor for the whole
/// run (a restarted observer gets them again).
#[derive(Default)]
pub struct Sockets {
    metrics: Option<Listening>,
    agent: Option<Listening>,
}

impl Sockets {
    /// Takes systemd's `metrics` and `agent` sockets out of `activated`;
    /// binds `metrics.listen` and `agent.listen` for those systemd did not
    /// pass. A Unix socket is created with mode 0666 (no chmod after the
    /// bind): its directory decides who reaches it.
    pub fn take(config: &Config, activated: &mut Vec<Activated>) -> std::io::Result<Sockets> {
        let mut out = Sockets::default();
        let mut rest = Vec::new();
        for a in activated.drain(..) {
            if a.name != METRICS && a.name != AGENT {
                rest.push(a);
                continue;
            }
            let shown = format!("{} from systemd", a.socket.address());
            let fd = match a.socket {
                Socket::Unix(l) => OwnedFd::from(l),
                Socket::Tcp(l) => OwnedFd::from(l),
            };
            let l = Some(Listening {
                fd,
                shown,
                made: None,
            });
            if a.name == METRICS {
                out.metrics = l;
            } else {
                out.agent = l;
            }
        }
        *activated = rest;
        let backlog = config.listen.backlog;
        if out.metrics.is_none() {
            match config.metrics_listen() {
                Some(ObserverListen::Tcp(addr)) => {
                    out.metrics = Some(bind_tcp(*addr, backlog, "metrics.listen")?)
                }
                Some(ObserverListen::Unix(path)) => out.metrics = Some(bind_unix(path, backlog)?),
                None => {}
            }
        }
        if out.agent.is_none() {
            if let Some(addr) = config.agent_listen() {
                out.agent = Some(bind_tcp(addr, backlog, "agent.listen")?);
            }
        }
        for (what, l) in [("metrics", &out.metrics), ("HAProxy agent", &out.agent)] {
            if let Some(l) = l {
                tracing::info!("{what} listener on {}, served by the observer", l.shown);
            }
        }
        Ok(out)
    }
}

fn bind_tcp(addr: SocketAddr, backlog: u32, key: &str) -> std::io::Result<Listening> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on TCP {addr}: {e} ({key})"),
        )
    })?;
    crate::socket_setup::set_backlog(&l, backlog)?;
    Ok(Listening {
        fd: OwnedFd::from(l),
        shown: format!("{addr} from the configuration"),
        made: None,
    })
}

fn bind_unix(path: &std::path::Path, backlog: u32) -> std::io::Result<Listening> {
    // Created with its final mode and owner by the root-safe binding of the
    // main socket (`runtime_files`): nothing is done to the path after.
    let spec = crate::socket_setup::SocketSpec {
        mode: 0o666,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        groups: Vec::new(),
        backlog,
    };
    let bound = super::runtime_files::bind_unix(path, &spec)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{e} (metrics.listen)")))?;
    Ok(Listening {
        fd: OwnedFd::from(bound.listener),
        shown: format!("{} from the configuration", path.display()),
        made: Some(bound.made),
    })
}

/// The self-test's connection: `(what the event loop hands to a worker as
/// an accepted connection, the end the observer gets)`.
pub fn synthetic_connection() -> std::io::Result<(Accepted, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    Ok((
        Accepted {
            listener: ListenerKind::Tcp,
            name: Arc::from(SELFTEST_LISTENER),
            socket: OwnedFd::from(ours),
            identity: Identity::tcp(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)),
            preamble: 0,
        },
        OwnedFd::from(theirs),
    ))
}

struct Process {
    control: Arc<AsyncTyped<ToObserver, FromObserver>>,
    child: Arc<Child>,
    started: Instant,
}

/// When a dead observer starts again: 1 s, doubling to
/// [`MAX_RESTART_DELAY`]; an observer that ran a minute resets it.
#[derive(Debug, Default)]
pub struct Restarts {
    failures: u32,
    at: Option<Instant>,
}

impl Restarts {
    /// The observer ended after running `ran`.
    pub fn ended(&mut self, ran: Duration, now: Instant) -> Duration {
        if ran >= MAX_RESTART_DELAY {
            self.failures = 0;
        }
        let delay = Duration::from_secs(1 << self.failures.min(6)).min(MAX_RESTART_DELAY);
        self.failures += 1;
        self.at = Some(now + delay);
        delay
    }

    /// Is a restart due now?
    pub fn due(&mut self, now: Instant) -> bool {
        if self.at.is_some_and(|t| t <= now) {
            self.at = None;
            return true;
        }
        false
    }
}

/// The self-test schedule (pure).
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    timeout: Duration,
    next: Option<Instant>,
    outstanding: Option<(u64, Instant)>,
    next_id: u64,
}

impl Schedule {
    pub fn new(interval: Duration, timeout: Duration) -> Schedule {
        Schedule {
            interval,
            timeout,
            next: None,
            outstanding: None,
            next_id: 1,
        }
    }

    /// Whether a self-test starts now (its id), given that a worker serves
    /// and the observer runs. The first comes [`FIRST_SELFTEST_AFTER`] the
    /// first time both hold.
    pub fn due(&mut self, now: Instant, ready: bool) -> Option<u64> {
        if self.interval.is_zero() || !ready || self.outstanding.is_some() {
            return None;
        }
        match self.next {
            None => {
                self.next = Some(now + FIRST_SELFTEST_AFTER);
                None
            }
            Some(t) if t <= now => {
                let id = self.next_id;
                self.next_id += 1;
                self.outstanding = Some((id, now));
                self.next = Some(now + self.interval);
                Some(id)
            }
            Some(_) => None,
        }
    }

    /// A result came for `id`: false if none was asked for (a violation).
    pub fn finished(&mut self, id: u64) -> bool {
        match self.outstanding {
            Some((o, _)) if o == id => {
                self.outstanding = None;
                true
            }
            _ => false,
        }
    }

    /// The outstanding self-test got no result in time (the observer's
    /// timeout plus 5 s): it counts as failed.
    pub fn timed_out(&mut self, now: Instant) -> bool {
        match self.outstanding {
            Some((_, since))
                if now.duration_since(since) > self.timeout + Duration::from_secs(5) =>
            {
                self.outstanding = None;
                true
            }
            _ => false,
        }
    }

    /// The observer is gone: the outstanding one is forgotten (skipped).
    pub fn abandon(&mut self) -> bool {
        self.outstanding.take().is_some()
    }
}

/// The supervisor's side of everything observable.
pub struct Observing {
    pub metrics: Metrics,
    sockets: Sockets,
    text: String,
    process: Option<Process>,
    restarts: Restarts,
    schedule: Schedule,
    last_snapshot: Option<Instant>,
    last_measure: Option<Instant>,
    meter: crate::usage::Meter,
    /// The agent's `maint` and `drain` inputs, copied from the executor's
    /// `node::AgentView` before each tick: an administrator's MAINT ON, and
    /// a reload waiting for memory headroom (`lifecycle`'s deferral).
    pub maintenance: bool,
    pub no_headroom: bool,
    started: bool,
    refusals: Arc<Refusals>,
}

/// Connections the accept loops closed unread, per listener name (shared
/// with them; read into the metrics at each snapshot).
#[derive(Default)]
pub struct Refusals {
    counts: std::sync::Mutex<Vec<(Arc<str>, u64)>>,
}

impl Refusals {
    pub fn count(&self, listener: &Arc<str>) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match c.iter_mut().find(|(n, _)| n == listener) {
            Some((_, k)) => *k += 1,
            None => c.push((Arc::clone(listener), 1)),
        }
    }

    /// The counts since the last call.
    fn take(&self) -> Vec<(Arc<str>, u64)> {
        std::mem::take(
            &mut *self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Seconds since the epoch, with ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Observing {
    /// `listeners`: the names of the clamd listeners served.
    pub fn new(config: &Config, text: String, sockets: Sockets, listeners: &[String]) -> Observing {
        Observing {
            metrics: Metrics::new(
                unix_ms() / 1000,
                listeners,
                config.metrics.top_detections as usize,
                config.selftest.interval > 0,
            ),
            sockets,
            text,
            process: None,
            restarts: Restarts::default(),
            schedule: Schedule::new(
                Duration::from_secs(config.selftest.interval),
                Duration::from_secs(config.selftest.timeout),
            ),
            last_snapshot: None,
            last_measure: None,
            meter: crate::usage::Meter::open(),
            maintenance: false,
            no_headroom: false,
            started: false,
            refusals: Arc::default(),
        }
    }

    /// Whether the observer is needed at all: a listener, or the self-test.
    pub fn wanted(&self, config: &Config) -> bool {
        self.sockets.metrics.is_some()
            || self.sockets.agent.is_some()
            || config.selftest.interval > 0
    }

    /// Counts of TCP connections the accept loops closed unread (outside
    /// `listen.tcp-allow`), per listener.
    pub fn refusals(&self) -> Arc<Refusals> {
        Arc::clone(&self.refusals)
    }

    /// The self-test's connection could not be made: skipped.
    pub fn selftest_not_sent(
        &mut self,
        id: u64,
        e: &std::io::Error,
        status: &mut super::status::ServiceStatus,
    ) {
        if self.schedule.finished(id) {
            let why = format!("cannot make its connection: {e}");
            self.selftest_result(SelftestOutcome::Skipped, &why, status);
        }
    }

    /// The observer's pid, if it runs (the supervisor never takes its
    /// connections as an administrator's).
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.child.pid)
    }

    /// Starts the observer (once the event loop runs).
    pub fn start(&mut self, tx: &mpsc::Sender<Input>, relay: &Arc<super::logrelay::Relay>) {
        self.started = true;
        if let Err(e) = self.spawn(tx, relay) {
            tracing::error!(error = %e, "cannot start the observer (metrics, agent, self-test); trying again later");
            self.restarts.ended(Duration::ZERO, Instant::now());
        }
    }

    fn spawn(
        &mut self,
        tx: &mpsc::Sender<Input>,
        relay: &Arc<super::logrelay::Relay>,
    ) -> std::io::Result<()> {
        let (ours, theirs) = Typed::<ToObserver, FromObserver>::pair()?;
        let (log, log_reader) = relay.open(crate::log::relay::Source::Helper("observer"), None)?;
        let child = Arc::new(procs::spawn_zygote(
            &["__observer"],
            &OwnedFd::from(theirs),
            &log.channel,
            procs::Output::Relayed(log.stderr),
        )?);
        drop(log.channel);
        let ltx = tx.clone();
        tokio::spawn(async move {
            if let Some(why) = log_reader.await {
                let _ = ltx
                    .send(Input::Observer(ObserverEvent::Broken(format!(
                        "log channel: {why}"
                    ))))
                    .await;
            }
        });
        let start = ToObserver::Start {
            toml: self.text.clone(),
            metrics: self.sockets.metrics.is_some(),
            agent: self.sockets.agent.is_some(),
        };
        let fds: Vec<BorrowedFd<'_>> = [&self.sockets.metrics, &self.sockets.agent]
            .into_iter()
            .flatten()
            .map(|l| l.fd.as_fd())
            .collect();
        ours.send(&start, &fds)?;
        let control = Arc::new(AsyncTyped::new(ours)?);
        tracing::info!(pid = child.pid, "observer started");
        let (ctl, etx) = (Arc::clone(&control), tx.clone());
        tokio::spawn(async move {
            let mut window = Instant::now();
            let mut count = 0u32;
            // Counts one more message; true when there were too many.
            let mut too_many = || {
                if window.elapsed() >= Duration::from_secs(1) {
                    window = Instant::now();
                    count = 0;
                }
                count += 1;
                count > MAX_MESSAGES_PER_SECOND
            };
            loop {
                let event = match ctl.recv().await {
                    Err(RecvError::Descriptors(_)) => {
                        ObserverEvent::Broken("descriptors on its channel".into())
                    }
                    Ok(Some(_)) | Err(RecvError::Decode(_)) if too_many() => ObserverEvent::Broken(
                        format!("more than {MAX_MESSAGES_PER_SECOND} messages a second"),
                    ),
                    Ok(Some(m)) => ObserverEvent::Message(m.msg),
                    Err(RecvError::Decode(e)) => ObserverEvent::Broken(format!("message: {e}")),
                    Ok(None) | Err(RecvError::Io(_)) => return,
                };
                let stop = matches!(event, ObserverEvent::Broken(_));
                if etx.send(Input::Observer(event)).await.is_err() || stop {
                    return;
                }
            }
        });
        let (waiter, wtx) = (Arc::clone(&child), tx.clone());
        std::thread::Builder::new()
            .name("wait-observer".into())
            .spawn(move || {
                let how = waiter.wait();
                let _ = wtx.blocking_send(Input::Observer(ObserverEvent::Exited(how)));
            })?;
        self.process = Some(Process {
            control,
            child,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Time to measure every process's memory (the supervisor's own now; the
    /// caller asks the engine holders)?
    pub fn measure_due(&mut self, now: Instant) -> bool {
        if self
            .last_measure
            .is_some_and(|t| now.duration_since(t) < MEASURE_EVERY)
        {
            return false;
        }
        self.last_measure = Some(now);
        let usage = self.meter.read();
        self.metrics.usage(Proc::Supervisor, usage);
        true
    }

    /// Once per tick of the event loop: restarts, snapshots, a self-test
    /// that timed out. `open`: connections open per listener, asked only
    /// when a snapshot is due.
    pub fn tick(
        &mut self,
        now: Instant,
        machine: &Machine,
        open: impl FnOnce() -> Vec<(String, u32)>,
        tx: &mpsc::Sender<Input>,
        relay: &Arc<super::logrelay::Relay>,
        status: &mut super::status::ServiceStatus,
    ) {
        if self.started && self.process.is_none() && self.restarts.due(now) {
            self.start(tx, relay);
        }
        if self.schedule.timed_out(now) {
            self.selftest_result(
                SelftestOutcome::Failed,
                "no result from the observer within selftest.timeout",
                status,
            );
        }
        let Some(p) = &self.process else { return };
        if self
            .last_snapshot
            .is_some_and(|t| now.duration_since(t) < SNAPSHOT_EVERY)
        {
            return;
        }
        self.last_snapshot = Some(now);
        for (name, n) in self.refusals.take() {
            let refused = crate::ipc::observe::ConnOutcome::Refused;
            self.metrics.connections(&name, refused, n);
        }
        let open = open();
        let fleet = machine.fleet();
        let flags = Flags {
            engine: machine.engine().is_some() && fleet.serving > 0,
            stopping: machine.is_stopping(),
            maintenance: self.maintenance,
            no_headroom: self.no_headroom,
            reloading: machine.is_reloading(),
        };
        let snapshot = self.metrics.snapshot(Now {
            unix_ms: unix_ms(),
            engine: machine.engine(),
            generation: fleet.generation,
            workers: machine.worker_states(),
            open: &open,
            flags,
        });
        // A busy observer misses a snapshot, never blocks the event loop.
        let _ = p
            .control
            .try_send(&ToObserver::Snapshot(Box::new(snapshot)), &[]);
    }

    /// A self-test to run now, if one is due (see [`Schedule::due`]).
    pub fn selftest_due(&mut self, now: Instant, machine: &Machine) -> Option<u64> {
        let ready =
            self.process.is_some() && machine.serving().next().is_some() && !machine.is_stopping();
        self.schedule.due(now, ready)
    }

    /// Gives the observer its end of self-test `id`'s connection.
    pub fn selftest_sent(
        &mut self,
        id: u64,
        theirs: OwnedFd,
        status: &mut super::status::ServiceStatus,
    ) {
        let sent = self.process.as_ref().is_some_and(|p| {
            p.control
                .try_send(&ToObserver::Selftest { id }, &[theirs.as_fd()])
                .is_ok()
        });
        if !sent && self.schedule.finished(id) {
            self.selftest_result(
                SelftestOutcome::Skipped,
                "the observer did not take it",
                status,
            );
        }
    }

    /// What the observer said, or that it broke a rule or exited.
    pub fn event(
        &mut self,
        e: ObserverEvent,
        now: Instant,
        status: &mut super::status::ServiceStatus,
    ) {
        match e {
            ObserverEvent::Message(FromObserver::Usage(u)) => self.usage(u),
            ObserverEvent::Message(FromObserver::SelftestResult {
                id,
                outcome,
                detail,
            }) => {
                if self.schedule.finished(id) {
                    self.selftest_result(outcome, &detail, status);
                } else {
                    self.broken(&format!(
                        "a result for self-test {id}, which was not asked for"
                    ));
                }
            }
            ObserverEvent::Broken(why) => self.broken(&why),
            ObserverEvent::Exited(how) => {
                let Some(p) = self.process.take() else { return };
                self.metrics.gone(Proc::Observer);
                if self.schedule.abandon() {
                    self.metrics
                        .selftest(SelftestOutcome::Skipped, "", unix_ms() / 1000);
                }
                let delay = self.restarts.ended(now.duration_since(p.started), now);
                tracing::warn!(
                    how = %how,
                    restart_in_ms = delay.as_millis() as u64,
                    "the observer exited (metrics, agent and self-test pause); starting it again"
                );
            }
        }
    }

    fn usage(&mut self, u: ProcUsage) {
        self.metrics.usage(Proc::Observer, u);
    }

    fn broken(&mut self, why: &str) {
        if let Some(p) = &self.process {
            tracing::error!(reason = %why, "the observer broke the protocol; ending it");
            p.control.shutdown();
            p.child.kill();
        }
    }

    fn selftest_result(
        &mut self,
        outcome: SelftestOutcome,
        detail: &str,
        status: &mut super::status::ServiceStatus,
    ) {
        let was_failing = self.metrics.selftest_failing();
        let detail = crate::ipc::observe::printable(detail, MAX_DETAIL);
        self.metrics.selftest(outcome, &detail, unix_ms() / 1000);
        match outcome {
            SelftestOutcome::Passed if was_failing => {
                tracing::info!(detail = %detail, "self-test passes again: the daemon is ready");
                status.selftest(None);
            }
            SelftestOutcome::Passed => tracing::debug!(detail = %detail, "self-test passed"),
            SelftestOutcome::Failed => {
                tracing::error!(
                    detail = %detail,
                    "self-test failed: the EICAR test string sent through a worker was not reported FOUND; the daemon reports not ready (HAProxy agent: drain, clamsentry_ready 0). Check that the signatures detect EICAR (the official main.cvd does)"
                );
                status.selftest(Some(detail));
            }
            SelftestOutcome::Skipped => {
                tracing::info!(detail = %detail, "self-test skipped")
            }
        }
    }

    /// Ends the observer at the daemon's exit, and removes a Unix socket
    /// file the daemon made for it.
    pub fn stop(&mut self) {
        if let Some(p) = &self.process {
            p.control.shutdown();
            p.child.kill();
        }
        if let Some(m) = self.sockets.metrics.as_mut().and_then(|l| l.made.take()) {
            super::runtime_files::remove_at_exit(&m, "metrics socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selftests_follow_the_schedule() {
        let t = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(s.due(t, false), None, "nothing serves yet");
        assert_eq!(s.due(t, true), None, "the first waits a moment");
        assert_eq!(s.due(t + FIRST_SELFTEST_AFTER, true), Some(1));
        assert_eq!(
            s.due(t + Duration::from_secs(100), true),
            None,
            "one at a time"
        );
        assert!(!s.finished(2), "a result nobody asked for");
        assert!(s.finished(1));
        let t1 = t + FIRST_SELFTEST_AFTER;
        assert_eq!(s.due(t1 + Duration::from_secs(59), true), None);
        assert_eq!(s.due(t1 + Duration::from_secs(60), true), Some(2));
        assert!(!s.timed_out(t1 + Duration::from_secs(60 + 35)));
        assert!(s.timed_out(t1 + Duration::from_secs(60 + 36)));
        assert!(!s.finished(2), "timed out: a late result is not accepted");
        let mut off = Schedule::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(off.due(t + Duration::from_secs(999), true), None);
    }

    #[test]
    fn restarts_back_off_and_reset() {
        let t = Instant::now();
        let mut r = Restarts::default();
        assert_eq!(r.ended(Duration::ZERO, t), Duration::from_secs(1));
        assert!(!r.due(t));
        assert!(r.due(t + Duration::from_secs(1)));
        assert!(!r.due(t + Duration::from_secs(1)), "once");
        assert_eq!(r.ended(Duration::ZERO, t), Duration::from_secs(2));
        for _ in 0..10 {
            r.ended(Duration::ZERO, t);
        }
        assert_eq!(r.ended(Duration::ZERO, t), MAX_RESTART_DELAY);
        assert_eq!(
            r.ended(MAX_RESTART_DELAY, t),
            Duration::from_secs(1),
            "it ran a while"
        );
    }

    #[test]
    fn the_selftest_connection_is_an_anonymous_tcp_peer() {
        let (a, _theirs) = synthetic_connection().unwrap();
        assert_eq!(a.listener, ListenerKind::Tcp);
        assert_eq!(&*a.name, SELFTEST_LISTENER);
        let Identity::Tcp { addr, .. } = a.identity else {
            panic!("not a TCP identity")
        };
        assert!(addr.ip().is_unspecified());
    }
}
