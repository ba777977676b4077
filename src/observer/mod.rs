//! The observer: the unprivileged, sandboxed process that reads every
//! request to the metrics listener (HTTP: `/metrics`, `/status.json`, the
//! status page `/`) and to the HAProxy agent listener, and runs the
//! self-test's client side. It renders what the supervisor last sent it (a
//! [`Snapshot`], about once a second) and says back only closed messages
//! (its resource use, self-test results). The supervisor, root, never
//! parses an HTTP or agent request.
//!
//! Started as `clamsentry __observer` with its control channel at fd 3 and
//! nothing else; the listening sockets come with the first message. Before
//! it reads a byte from anyone but the supervisor it demotes itself
//! (`sandbox::demote`): the service user, no capabilities, no-new-privs,
//! not dumpable, `RLIMIT_NPROC` 0 (no thread, no process: a
//! single-threaded runtime), `RLIMIT_NOFILE` just above its connection
//! caps, Landlock with no file access at all (TCP bind and connect denied);
//! `/proc/self/smaps_rollup` is opened before, for its memory figure.
//!
//! What a compromised observer could do: answer HTTP and agent requests
//! with anything (lie in the metrics, tell HAProxy to drain or to send
//! traffic), report self-test results the supervisor then believes (make
//! the daemon report not ready, or hide a failing engine), scan what it
//! sends on the self-test connection as an anonymous TCP client would. It
//! holds no file, no client connection, no capability.

pub(crate) mod agent;
pub(crate) mod history;
pub mod http;
pub(crate) mod page;
pub(crate) mod render;
pub(crate) mod selftest;
pub(crate) mod slots;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use self::agent::Answer;
use self::history::History;
use self::http::{Request, Response, Route, Status, Trouble};
use self::render::Format;
use crate::config::Config;
use crate::ipc::observe::{FromObserver, Snapshot, ToObserver};
use crate::ipc::typed::{AsyncTyped, RecvError, Typed};
use crate::log::limiter::{Limiter, Verdict};
use crate::policy::network::AllowList;
use crate::sandbox::{self, LandlockState};

/// Where the supervisor puts the control channel.
pub const CONTROL_FD: RawFd = 3;
/// Time between reports of the observer's own resource use.
const USAGE_EVERY: Duration = Duration::from_secs(5);
/// Peers whose log lines are budgeted separately.
const LOG_KEYS: usize = 1024;
/// How long an agent connection is read (and dropped) after the answer, so
/// that what HAProxy sent (`agent-send`) does not turn the close into a
/// reset.
const AGENT_LINGER: Duration = Duration::from_secs(1);

/// The observer's `main`; returns the exit code.
pub fn main() -> i32 {
    match run() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "observer failed");
            eprintln!("clamsentry observer: {e}");
            1
        }
    }
}

struct Start {
    config: Config,
    metrics: Option<OwnedFd>,
    agent: Option<OwnedFd>,
}

/// The observer's end of its control channel.
type Control = Typed<FromObserver, ToObserver>;

fn read_start(control: &Control) -> Result<Start, String> {
    let (msg, fds) = match control.recv() {
        Ok(Some(m)) => (m.msg, m.fds),
        Ok(None) => return Err("the supervisor went away".into()),
        Err(RecvError::Decode(e)) => return Err(format!("control message: {e}")),
        Err(e) => return Err(format!("control channel: {e}")),
    };
    let ToObserver::Start {
        toml,
        metrics,
        agent,
    } = msg
    else {
        return Err("expected the configuration first".into());
    };
    let mut fds = fds.into_iter();
    let mut take = |wanted: bool| -> Result<Option<OwnedFd>, String> {
        if !wanted {
            return Ok(None);
        }
        fds.next()
            .map(Some)
            .ok_or_else(|| "a listener announced but not passed".to_string())
    };
    let metrics = take(metrics)?;
    let agent = take(agent)?;
    if fds.next().is_some() {
        return Err("more descriptors than listeners".into());
    }
    let config =
        Config::parse(&toml, "configuration from the supervisor").map_err(|e| e.to_string())?;
    Ok(Start {
        config,
        metrics,
        agent,
    })
}

fn run() -> Result<(), String> {
    let _ = rustix::thread::set_name(c"clamsentry-obs");
    let control = Control::inherit(CONTROL_FD).map_err(|e| {
        format!("descriptor {CONTROL_FD}: {e}: the observer is started only by the supervisor")
    })?;
    // Its log channel (records, marked as the observer's by the
    // supervisor); without it, stderr, which the supervisor reads too.
    let log = Typed::inherit(crate::log::relay::LOG_FD).ok();
    let start = read_start(&control)?;
    let config = start.config;
    crate::log::relay::init_child(config.log.level.as_str(), log);
    let meter = crate::usage::Meter::open();
    let conns = u64::from(config.metrics.max_connections);
    let plan = sandbox::Plan {
        user: rustix::process::geteuid()
            .is_root()
            .then(|| config.sandbox.user.clone()),
        read_only: Vec::new(),
        read_write: Vec::new(),
        read_files: Vec::new(),
        // Both listeners' connections, each with the duplicate its slot
        // asks about waiting bytes (`slots`), the channel, the log, slack.
        max_open_files: 4 * conns + 32,
        max_threads: 0,
        // No socket made or connected; it only accepts on its listeners.
        seccomp: true,
        accepts: true,
    };
    let status = sandbox::demote(&plan).map_err(|e| format!("cannot sandbox the observer: {e}"))?;
    if let LandlockState::NotEnforced { reason } = &status.landlock {
        if config.sandbox.landlock_required() {
            return Err(format!(
                "Landlock cannot be applied: {reason}. Set sandbox.landlock = \"best-effort\" to run without it"
            ));
        }
    }
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    tracing::info!(sandbox = %status, "observer sandboxed");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(control, start.metrics, start.agent, config, meter))
}

/// What every task of the observer shares.
struct Shared {
    config: Config,
    state: Mutex<State>,
    logs: Mutex<Limiter<String>>,
    metrics_allow: AllowList,
    agent_allow: AllowList,
}

#[derive(Default)]
struct State {
    snapshot: Option<(Arc<Snapshot>, Instant)>,
    history: History,
    /// Rendered metrics by (snapshot, format, ready).
    cache: Vec<(CacheKey, Arc<Vec<u8>>)>,
}

/// A snapshot's sequence number, the format, and `clamsentry_ready`.
type CacheKey = (u64, Format, bool);

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a line about `peer` be logged now (`log.peer-lines-per-minute`)?
    fn may_log(&self, peer: &str) -> Option<u64> {
        let mut l = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match l.check(peer, Instant::now()) {
            Verdict::Allow { suppressed } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }

    fn answer_now(&self, st: &State) -> Answer {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        agent::decide(agent::Input {
            snapshot: st.snapshot.as_ref().map(|(s, _)| &**s),
            age: st
                .snapshot
                .as_ref()
                .map_or(Duration::ZERO, |(_, at)| at.elapsed()),
            now,
            max_age: self.config.database.max_age.0,
            utilization: st.history.utilization(),
        })
    }

    /// The response to a routed request.
    fn respond(&self, route: Route, req: &Request) -> Response {
        if route == Route::Page {
            let mut r = Response::text(Status::Ok, "");
            r.content_type = "text/html; charset=utf-8";
            r.body = page::html().into_bytes();
            r.extra.push(page::CSP.into());
            return r;
        }
        let mut st = self.state();
        let Some((snap, _)) = st.snapshot.clone() else {
            let mut r = Response::text(
                Status::Unavailable,
                "no numbers from the daemon yet; retry in a second\n",
            );
            r.extra.push("Retry-After: 1".into());
            return r;
        };
        let answer = self.answer_now(&st);
        match route {
            Route::Metrics => {
                let format = Format::negotiate(req.accept.as_deref());
                let key = (snap.seq, format, answer.is_ready());
                let body = match st.cache.iter().find(|(k, _)| *k == key) {
                    Some((_, b)) => Arc::clone(b),
                    None => {
                        let text = render::metrics(
                            &snap,
                            format,
                            &render::Options {
                                compat: self.config.metrics.compat_names,
                                idle_timeout: self.config.limits.idle_timeout,
                                max_threads: self.config.limits.max_threads,
                                answer: &answer,
                            },
                        );
                        let b = Arc::new(text.into_bytes());
                        st.cache.retain(|(k, _)| k.0 == snap.seq);
                        st.cache.push((key, Arc::clone(&b)));
                        b
                    }
                };
                let mut r = Response::text(Status::Ok, "");
                r.content_type = format.content_type();
                r.body = (*body).clone();
                r
            }
            Route::Json | Route::Page => {
                let status = page::status(&snap, &st.history, &answer);
                let mut r = Response::text(Status::Ok, "");
                r.content_type = "application/json";
                r.body = serde_json::to_vec(&status).unwrap_or_default();
                r
            }
        }
    }
}

async fn serve(
    control: Control,
    metrics: Option<OwnedFd>,
    agent: Option<OwnedFd>,
    config: Config,
    mut meter: crate::usage::Meter,
) -> Result<(), String> {
    let control = Arc::new(AsyncTyped::new(control).map_err(|e| e.to_string())?);
    let shared = Arc::new(Shared {
        metrics_allow: AllowList::new(config.metrics_allow()),
        agent_allow: AllowList::new(config.agent_allow()),
        logs: Mutex::new(Limiter::new(config.log.peer_lines_per_minute, LOG_KEYS)),
        state: Mutex::new(State::default()),
        config,
    });
    for (fd, kind) in [(metrics, Kind::Metrics), (agent, Kind::Agent)] {
        if let Some(fd) = fd {
            let l = Listen::adopt(fd).map_err(|e| format!("listening socket: {e}"))?;
            tokio::spawn(accept_loop(l, kind, Arc::clone(&shared)));
        }
    }
    let reporter = Arc::clone(&control);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_EVERY);
        loop {
            tick.tick().await;
            let usage = FromObserver::Usage(meter.read());
            if reporter.send(&usage).await.is_err() {
                return;
            }
        }
    });
    let timeout = Duration::from_secs(shared.config.selftest.timeout);
    loop {
        let (msg, mut fds) = match control.recv().await {
            Ok(Some(m)) => (Ok(m.msg), m.fds),
            Err(RecvError::Decode(e)) => (Err(e), Vec::new()),
            // The supervisor is gone: so is the observer.
            _ => return Ok(()),
        };
        match msg {
            Ok(ToObserver::Snapshot(s)) if fds.is_empty() => {
                let mut st = shared.state();
                st.history.add(&s);
                st.snapshot = Some((Arc::new(*s), Instant::now()));
            }
            Ok(ToObserver::Selftest { id }) if fds.len() == 1 => {
                let socket = fds.remove(0);
                let ctl = Arc::clone(&control);
                tokio::spawn(async move {
                    let (outcome, detail) = selftest::run(socket, timeout).await;
                    let m = FromObserver::SelftestResult {
                        id,
                        outcome,
                        detail: crate::ipc::observe::printable(
                            &detail,
                            crate::ipc::observe::MAX_DETAIL,
                        ),
                    };
                    let _ = ctl.send(&m).await;
                });
            }
            other => return Err(format!("unexpected control message: {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Metrics,
    Agent,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Agent => "agent",
        }
    }
}

enum Listen {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Listen {
    fn adopt(fd: OwnedFd) -> std::io::Result<Listen> {
        let family = rustix::net::getsockname(&fd)?.address_family();
        Ok(if family == rustix::net::AddressFamily::UNIX {
            let l = std::os::unix::net::UnixListener::from(fd);
            l.set_nonblocking(true)?;
            Listen::Unix(tokio::net::UnixListener::from_std(l)?)
        } else {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            Listen::Tcp(tokio::net::TcpListener::from_std(l)?)
        })
    }
}

async fn accept_loop(l: Listen, kind: Kind, shared: Arc<Shared>) {
    let max = shared.config.metrics.max_connections as usize;
    let slots = slots::Shared::new(max);
    loop {
        let (conn, peer, probe): (Box<dyn ConnBox>, Option<IpAddr>, _) = match &l {
            Listen::Unix(u) => match u.accept().await {
                Ok((s, _)) => {
                    let probe = s.as_fd().try_clone_to_owned().ok();
                    (Box::new(s), None, probe)
                }
                Err(e) => {
                    accept_failed(&shared, kind, &e).await;
                    continue;
                }
            },
            Listen::Tcp(t) => match t.accept().await {
                Ok((s, a)) => {
                    let _ = s.set_nodelay(true);
                    let probe = s.as_fd().try_clone_to_owned().ok();
                    (Box::new(s), Some(a.ip()), probe)
                }
                Err(e) => {
                    accept_failed(&shared, kind, &e).await;
                    continue;
                }
            },
        };
        let key = peer.map_or_else(
            || "unix".to_string(),
            |ip| crate::policy::PeerKey::tcp(ip).to_string(),
        );
        if let Some(ip) = peer {
            let allow = match kind {
                Kind::Metrics => &shared.metrics_allow,
                Kind::Agent => &shared.agent_allow,
            };
            if !allow.admits(ip) {
                if let Some(suppressed) = shared.may_log(&key) {
                    tracing::warn!(
                        listener = kind.name(),
                        peer = %ip,
                        suppressed,
                        "connection refused: address not in {}.tcp-allow",
                        kind.name()
                    );
                }
                continue;
            }
        }
        let (slot, evicted) = slots.take(&key, probe);
        if let Some(why) = evicted {
            if let Some(suppressed) = shared.may_log(&key) {
                let why = match why {
                    slots::Evicted::OwnShare => {
                        "its client holds a quarter of metrics.max-connections"
                    }
                    slots::Evicted::Full => "metrics.max-connections reached",
                };
                tracing::warn!(
                    listener = kind.name(),
                    peer = %key,
                    limit = max,
                    suppressed,
                    "closed the oldest connection to make room: {why}"
                );
            }
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut slot = slot;
            let marker = slot.marker();
            let serve = async {
                match kind {
                    Kind::Metrics => {
                        let timeout = Duration::from_secs(shared.config.metrics.header_timeout);
                        let s2 = Arc::clone(&shared);
                        let trouble = http::serve(
                            conn,
                            timeout,
                            |route, req| {
                                marker.served();
                                s2.respond(route, req)
                            },
                            || marker.written(),
                        )
                        .await;
                        if let Some(t) = trouble {
                            log_trouble(&shared, &key, t);
                        }
                    }
                    Kind::Agent => agent_reply(conn, &shared).await,
                }
            };
            // A newcomer took this slot: the connection ends (dropped).
            tokio::select! {
                () = serve => {}
                _ = &mut slot.evicted => {}
            }
        });
    }
}

/// A boxed connection (both socket kinds through one task type).
trait ConnBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ConnBox for T {}

async fn accept_failed(shared: &Shared, kind: Kind, e: &std::io::Error) {
    if let Some(suppressed) = shared.may_log("accept") {
        tracing::warn!(listener = kind.name(), error = %e, suppressed, "accept failed; retrying in 50 ms");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn log_trouble(shared: &Shared, key: &str, t: Trouble) {
    let Some(suppressed) = shared.may_log(key) else {
        return;
    };
    match t {
        Trouble::Answered(status, what) => {
            let (code, reason) = status.code();
            tracing::info!(
                listener = "metrics",
                peer = %key,
                status = code,
                request = %crate::log::LogStr(&what),
                suppressed,
                "HTTP request answered {code} {reason}"
            );
        }
        Trouble::WriteTimeout => tracing::info!(
            listener = "metrics",
            peer = %key,
            suppressed,
            "client did not take its response within 5 s; closed"
        ),
    }
}

/// HAProxy's agent-check: one line, then the end.
async fn agent_reply(mut conn: Box<dyn ConnBox>, shared: &Shared) {
    let line = {
        let st = shared.state();
        shared.answer_now(&st).line()
    };
    let wrote = tokio::time::timeout(http::WRITE_TIMEOUT, conn.write_all(line.as_bytes())).await;
    if !matches!(wrote, Ok(Ok(()))) {
        return;
    }
    let _ = conn.shutdown().await;
    let mut sink = [0u8; 512];
    let until = tokio::time::Instant::now() + AGENT_LINGER;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, conn.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let config = Config::default();
        Shared {
            metrics_allow: AllowList::new(config.metrics_allow()),
            agent_allow: AllowList::new(config.agent_allow()),
            logs: Mutex::new(Limiter::new(30, 16)),
            state: Mutex::new(State::default()),
            config,
        }
    }

    fn get(path: &str, accept: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            accept: accept.map(str::to_string),
            keep_alive: true,
            has_body: false,
        }
    }

    #[test]
    fn before_the_first_snapshot_only_the_page_answers() {
        let s = shared();
        let r = s.respond(Route::Metrics, &get("/metrics", None));
        assert_eq!(r.status, Status::Unavailable);
        assert!(r.extra.contains(&"Retry-After: 1".to_string()));
        assert_eq!(
            s.respond(Route::Json, &get("/status.json", None)).status,
            Status::Unavailable
        );
        let page = s.respond(Route::Page, &get("/", None));
        assert_eq!(page.status, Status::Ok);
        assert!(page
            .extra
            .iter()
            .any(|h| h.starts_with("Content-Security-Policy:")));
        assert_eq!(
            s.answer_now(&s.state()).line(),
            "down #no status from the daemon yet\n"
        );
    }

    #[test]
    fn a_snapshot_is_rendered_once_per_format() {
        let s = shared();
        let mut snap = Snapshot::default();
        snap.normalise();
        snap.seq = 7;
        snap.flags.engine = true;
        snap.pool.threads = 2;
        {
            let mut st = s.state();
            st.history.add(&snap);
            st.snapshot = Some((Arc::new(snap), Instant::now()));
        }
        let om = s.respond(
            Route::Metrics,
            &get("/metrics", Some("application/openmetrics-text")),
        );
        assert!(om.content_type.starts_with("application/openmetrics-text"));
        assert!(String::from_utf8(om.body).unwrap().ends_with("# EOF\n"));
        let plain = s.respond(Route::Metrics, &get("/metrics", None));
        assert!(plain.content_type.starts_with("text/plain; version=0.0.4"));
        assert!(String::from_utf8(plain.body.clone())
            .unwrap()
            .contains("clamsentry_ready 1\n"));
        assert_eq!(s.state().cache.len(), 2);
        let again = s.respond(Route::Metrics, &get("/metrics", None));
        assert_eq!(again.body, plain.body);
        assert_eq!(s.state().cache.len(), 2, "served from the cache");
        let json = s.respond(Route::Json, &get("/status.json", None));
        let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["health"]["state"], "ready");
    }
}
