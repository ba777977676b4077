//! The closed-loop load generator: `clients` tasks, each connecting, sending
//! one zINSTREAM request, reading the reply and starting over, as fast as
//! the daemon answers. Runs on a single-threaded tokio runtime so that the
//! generator takes at most one core from the daemon under test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::daemons::{self, Daemon};
use crate::db;

/// How often the peak memory of a daemon is sampled during a scenario.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One load scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scenario {
    pub name: String,
    pub size: usize,
    pub clients: usize,
    /// Every request sends the same bytes (libclamav's cache answers).
    pub identical: bool,
}

/// What one scenario measured against one daemon.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadResult {
    pub scans: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub scans_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_kib: u64,
    /// CPU used by the daemon's process tree, % of one core.
    pub daemon_cpu_pct: f64,
    /// CPU used by the benchmark process (the load generator), % of one core.
    pub client_cpu_pct: f64,
    /// CPU used by everything else on the machine meanwhile, % of one core
    /// (high values mean the measurement was disturbed).
    pub other_cpu_pct: f64,
}

/// A full INSTREAM request and where its first payload byte sits.
pub struct Request {
    pub bytes: Vec<u8>,
    pub stamp_at: usize,
}

impl Request {
    pub fn new(payload: &[u8], chunk: usize) -> Request {
        let mut bytes = Vec::with_capacity(payload.len() + payload.len() / chunk.max(1) * 4 + 32);
        bytes.extend_from_slice(b"zINSTREAM\0");
        for c in payload.chunks(chunk.max(1)) {
            bytes.extend_from_slice(&(c.len() as u32).to_be_bytes());
            bytes.extend_from_slice(c);
        }
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        Request {
            bytes,
            stamp_at: 14,
        }
    }

    /// Makes this request's payload unique (see [`db::stamp`]); the first
    /// chunk always holds at least 8 bytes of payload here.
    pub fn stamp(&mut self, n: u64) {
        let end = (self.stamp_at + 8).min(self.bytes.len() - 4);
        db::stamp(&mut self.bytes[self.stamp_at..end], n);
    }
}

/// Connects, retrying while the listen backlog is full (EAGAIN) or the
/// socket is not there yet, until `deadline`.
pub async fn connect(path: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::NotFound
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends one request and returns the reply up to its terminator.
pub async fn request(path: &Path, req: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut s = connect(path, deadline).await?;
    let (mut r, mut w) = s.split();
    let mut reply = Vec::with_capacity(64);
    // Write and read at once: a daemon may answer (and close) before it has
    // read everything, e.g. on a size limit.
    let write = async {
        let res = w.write_all(req).await;
        res
    };
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.contains(&0) || reply.contains(&b'\n') {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let (wr, rr) = tokio::join!(write, read);
    rr?;
    if reply.is_empty() {
        wr?;
    }
    Ok(reply)
}

/// Sends one request and reads until the daemon closes the connection (a
/// STATS block, the reply lines of a path scan), at most `limit` bytes.
pub async fn request_to_eof(
    path: &Path,
    req: &[u8],
    deadline: Instant,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    let mut s = connect(path, deadline).await?;
    s.write_all(req).await?;
    let mut reply = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 || reply.len() >= limit {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

/// Runs one scenario against the daemon listening on `socket`.
///
/// The window opens after `warmup` and closes once `duration` has passed and
/// as many requests as there are clients have completed in it (so a slow
/// 16 MiB scenario still measures something), or at `3 * duration`. Throughput is
/// completions inside the window divided by its length.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    daemon: &Daemon,
    scenario: &Scenario,
    base: &Arc<Vec<u8>>,
    counter: &Arc<AtomicU64>,
    chunk: usize,
    warmup: Duration,
    duration: Duration,
) -> LoadResult {
    let socket: PathBuf = daemon.socket.clone();
    let measure_from = Instant::now() + warmup;
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..scenario.clients {
        let socket = socket.clone();
        let base = Arc::clone(base);
        let counter = Arc::clone(counter);
        let stop = Arc::clone(&stop);
        let completed = Arc::clone(&completed);
        let identical = scenario.identical;
        tasks.spawn(async move {
            let mut req = Request::new(&base, chunk);
            if identical {
                req.stamp(u64::MAX);
            }
            // (completion time, latency in µs, reply or error when not OK)
            let mut done_at: Vec<(Instant, u32, Option<String>)> = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                if !identical {
                    req.stamp(counter.fetch_add(1, Ordering::Relaxed));
                }
                let t = Instant::now();
                let res = request(&socket, &req.bytes, t + Duration::from_secs(120)).await;
                let done = Instant::now();
                if done < measure_from {
                    continue;
                }
                completed.fetch_add(1, Ordering::Relaxed);
                let us = (done - t).as_micros().min(u32::MAX as u128) as u32;
                let err = match &res {
                    Ok(r) if r.as_slice() == b"stream: OK\0" => None,
                    Ok(r) => Some(String::from_utf8_lossy(r).into_owned()),
                    Err(e) => Some(e.to_string()),
                };
                done_at.push((done, us, err));
            }
            done_at
        });
    }
    // Sample memory while the load runs, on a thread of its own and once a
    // second (see `daemons::Sampler`); CPU is read at the window's edges.
    let sampler = daemons::Sampler::start(daemon.pid(), SAMPLE_EVERY);
    tokio::time::sleep_until(measure_from.into()).await;
    let (d0, c0, m0) = (
        daemon.cpu_s(),
        daemons::self_cpu_s(),
        daemons::machine_busy_s(),
    );
    let min_done = scenario.clients as u64;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let open = measure_from.elapsed();
        if (open >= duration && completed.load(Ordering::Relaxed) >= min_done)
            || open >= 3 * duration
        {
            break;
        }
    }
    let (d1, c1, m1, end) = (
        daemon.cpu_s(),
        daemons::self_cpu_s(),
        daemons::machine_busy_s(),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut out = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let Ok(done_at) = r else { continue };
        for (done, us, err) in done_at {
            if done > end {
                continue;
            }
            match err {
                None => lat.push(us),
                Some(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
    }
    out.peak_rss_kib = sampler.finish().pss_kib;
    let secs = (end - measure_from).as_secs_f64().max(1e-9);
    out.seconds = secs;
    out.scans = lat.len() as u64;
    out.scans_per_s = lat.len() as f64 / secs;
    out.mb_per_s = out.scans_per_s * scenario.size as f64 / 1e6;
    let (p50, p99, max) = percentiles(&mut lat);
    out.p50_ms = p50;
    out.p99_ms = p99;
    out.max_ms = max;
    out.daemon_cpu_pct = (d1 - d0) / secs * 100.0;
    out.client_cpu_pct = (c1 - c0) / secs * 100.0;
    out.other_cpu_pct = ((m1 - m0) - (d1 - d0) - (c1 - c0)).max(0.0) / secs * 100.0;
    out
}

/// p50, p99 and max of latencies in microseconds, as milliseconds.
pub fn percentiles(us: &mut [u32]) -> (f64, f64, f64) {
    if us.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    us.sort_unstable();
    let at = |q: usize| us[(us.len() * q / 100).min(us.len() - 1)] as f64 / 1000.0;
    (at(50), at(99), us[us.len() - 1] as f64 / 1000.0)
}

/// How one request of a [`Background`] load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// `stream: OK`.
    Ok,
    /// A reply other than `stream: OK` (an `ERROR`, or anything unexpected).
    Error,
    /// The connection ended without a reply (closed, reset, or broken).
    Closed,
}

/// One request of a [`Background`] load.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the client started connecting.
    pub started: Instant,
    /// When the reply (or the end of the connection) arrived.
    pub done: Instant,
    pub outcome: Outcome,
    /// The reply or the error, when not OK.
    pub detail: Option<String>,
}

/// A continuous closed-loop INSTREAM load that runs until stopped and
/// records every request; the crash and reload measurements watch it.
/// Each client retries its connection while the socket is missing or
/// refuses (a restarting clamd), so those seconds are waiting, not failures.
pub struct Background {
    stop: Arc<AtomicBool>,
    events: Arc<std::sync::Mutex<Vec<Event>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Background {
    /// Starts `clients` tasks on the current runtime.
    pub fn start(
        socket: &Path,
        clients: usize,
        base: &Arc<Vec<u8>>,
        counter: &Arc<AtomicU64>,
        chunk: usize,
    ) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(std::sync::Mutex::new(Vec::with_capacity(1 << 16)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let socket = socket.to_path_buf();
            let (base, counter) = (Arc::clone(base), Arc::clone(counter));
            let (stop, events) = (Arc::clone(&stop), Arc::clone(&events));
            tasks.spawn(async move {
                let mut req = Request::new(&base, chunk);
                while !stop.load(Ordering::Relaxed) {
                    req.stamp(counter.fetch_add(1, Ordering::Relaxed));
                    let started = Instant::now();
                    let res =
                        request(&socket, &req.bytes, started + Duration::from_secs(120)).await;
                    let (outcome, detail) = match res {
                        Ok(r) if r.as_slice() == b"stream: OK\0" => (Outcome::Ok, None),
                        Ok(r) if r.is_empty() => (Outcome::Closed, Some("no reply".to_string())),
                        Ok(r) => (
                            Outcome::Error,
                            Some(
                                String::from_utf8_lossy(&r)
                                    .trim_end_matches('\0')
                                    .to_string(),
                            ),
                        ),
                        Err(e) => (Outcome::Closed, Some(e.to_string())),
                    };
                    let ev = Event {
                        started,
                        done: Instant::now(),
                        outcome,
                        detail,
                    };
                    if let Ok(mut v) = events.lock() {
                        v.push(ev);
                    }
                }
            });
        }
        Background {
            stop,
            events,
            tasks,
        }
    }

    /// When the first successful reply that arrived after `t` arrived, and
    /// when the first request that started after `t` succeeded.
    pub fn first_ok_after(&self, t: Instant) -> (Option<Instant>, Option<Instant>) {
        let Ok(v) = self.events.lock() else {
            return (None, None);
        };
        // Events are pushed as they complete, by tasks of one single-threaded
        // runtime, so they are in completion order: skip the older ones.
        let from = v.partition_point(|e| e.done <= t);
        let ok = v[from..].iter().filter(|e| e.outcome == Outcome::Ok);
        let any = ok.clone().map(|e| e.done).min();
        let new = ok.filter(|e| e.started > t).map(|e| e.done).min();
        (any, new)
    }

    /// Requests completed so far.
    pub fn count(&self) -> usize {
        self.events.lock().map_or(0, |v| v.len())
    }

    /// Stops the clients (each finishes its request in flight, at most
    /// `grace` is waited for) and returns every request they made.
    pub async fn stop(mut self, grace: Duration) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        let mut v = self
            .events
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        v.sort_by_key(|e| e.done);
        v
    }
}
