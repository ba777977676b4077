//! Crash recovery under load.
//!
//! clamsentry: 16 clients stream 10 KiB INSTREAMs without pause; the oldest
//! `clamsentry-work` child of the supervisor is killed (SIGSEGV, then in a
//! second series on a fresh daemon SIGKILL); after each kill the benchmark
//! waits until the supervisor has a full fleet again before the next one.
//! Per kill: when a new scan succeeded, when a new worker process appeared
//! and when the supervisor logged it serving, how many requests failed, and
//! how many of them could not have been on the dead worker (failures beyond
//! the connections the supervisor says it closed with it).
//!
//! clamd: the same load; clamd itself is killed with the same signals and
//! started again 100 ms after it exited, as systemd's `Restart=on-failure`
//! with the default `RestartSec=100ms` would; it reloads the whole database.
//!
//! Each series starts a fresh daemon, because clamsentry's back-off for a
//! slot that crashes again and again grows with every crash until a worker
//! of that slot has served 1 s (`STABLE_AFTER`); the kills here come faster
//! than that, so later kills of a series wait; see docs/benchmark.md.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemons::{self, Daemon, Kind, LogTail, Settings, ENGINE_COMM, WORKER_COMM};
use crate::load::{Background, Event, Outcome};

/// What the crash part is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrashOptions {
    /// Clients streaming during the kills.
    pub clients: usize,
    /// Payload size each client sends.
    pub size: usize,
    /// Worker kills per signal (clamsentry).
    pub kills: usize,
    /// Daemon kills per signal (clamd).
    pub clamd_kills: usize,
    /// Load before the first kill.
    pub warmup_ms: u64,
    /// Steady load after a recovery before the next kill.
    pub gap_ms: u64,
    /// systemd's RestartSec for clamd.
    pub restart_delay_ms: u64,
    /// Longest wait for one recovery; a kill that is not recovered from by
    /// then ends its series.
    pub recovery_limit_s: u64,
}

/// One kill.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Kill {
    pub n: usize,
    /// The process killed.
    pub pid: i32,
    /// When, in ms after the load of this series started.
    pub at_ms: f64,
    /// The next successful reply (to any request) after the signal.
    pub next_ok_ms: Option<f64>,
    /// The first success of a request that started after the signal.
    pub new_scan_ok_ms: Option<f64>,
    /// clamsentry: a new `clamsentry-work` child of the supervisor exists.
    pub new_worker_ms: Option<f64>,
    /// clamsentry: the supervisor logged the replacement serving.
    pub serving_ms: Option<f64>,
    /// clamsentry, from its log: the dead worker's id, its slot, the slot's
    /// crashes in a row, the back-off scheduled before the replacement, how
    /// the worker ended, and the supervisor's own crash-to-serving time.
    pub worker: Option<u64>,
    pub slot: Option<u64>,
    pub slot_failures: Option<u64>,
    pub backoff_ms: Option<u64>,
    pub how: Option<String>,
    pub replaced_in_us: Option<u64>,
    /// clamsentry: connections the supervisor closed because their worker
    /// was gone ("closed the connections of a worker that is gone").
    pub revoked: Option<u64>,
    /// clamd: the process was reaped / started again.
    pub exited_ms: Option<f64>,
    pub respawned_ms: Option<f64>,
    /// Requests that failed between this kill and the next.
    pub failed: u64,
    /// ... of which closed without a reply, and answered with an error.
    pub closed: u64,
    pub error_replies: u64,
    /// clamsentry: failed - revoked, when positive (requests that cannot
    /// have been on the dead worker).
    pub failed_other_workers: Option<u64>,
    pub recovered: bool,
}

/// min / median / p90 / max (nearest rank) of some values.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Dist {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Dist> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Dist {
            n: v.len(),
            min: v[0],
            median: rank(0.5),
            p90: rank(0.9),
            max: v[v.len() - 1],
        })
    }
}

/// One daemon, one signal.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Series {
    pub daemon: String,
    pub signal: String,
    /// clamsentry's worker count in this series.
    pub workers: Option<usize>,
    pub kills: Vec<Kill>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub failed_before_first_kill: u64,
    /// The first few distinct failure texts.
    pub failure_kinds: Vec<String>,
    /// clamsentry: the supervisor and engine holder before and after all kills.
    pub supervisor_pid_before: i32,
    pub supervisor_alive_after: bool,
    pub engine_pids_before: Vec<i32>,
    pub engine_pids_after: Vec<i32>,
    pub pids_unchanged: Option<bool>,
    pub next_ok_ms: Option<Dist>,
    pub new_scan_ok_ms: Option<Dist>,
    pub new_worker_ms: Option<Dist>,
    pub serving_ms: Option<Dist>,
    /// The supervisor's crash-to-serving time minus the back-off it chose.
    pub replacement_minus_backoff_ms: Option<Dist>,
    pub backoff_ms: Option<Dist>,
    pub failed_per_kill: Option<Dist>,
    pub revoked_total: Option<u64>,
    pub failed_other_workers_total: Option<u64>,
    /// Only with `--clamsentry-log debug`: the connections as the workers
    /// logged them (see [`ConnAccount`]).
    pub conns: Option<ConnAccount>,
    pub seconds: f64,
}

/// What the debug log of a clamsentry series says about its connections.
/// Every connection a worker takes logs `conn{id=N worker=W ...}:
/// connected`, and a scan logs `scan ...`; the supervisor numbers
/// connections in the order it accepts them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnAccount {
    /// Connections some worker logged.
    pub seen: u64,
    /// Connection ids between the first and the last seen that no worker
    /// ever logged: accepted by the supervisor, never served by a worker.
    pub never_reached_a_worker: u64,
    /// Connections of a worker that was killed that were not scanned.
    pub unscanned_on_killed_workers: u64,
    /// Connections of a worker that was not killed that were not scanned:
    /// requests that failed on other workers.
    pub unscanned_on_other_workers: u64,
    /// A few of the ids that never reached a worker.
    pub never_reached_examples: Vec<u64>,
}

impl ConnAccount {
    /// Reads a clamsentry log written at debug level; None if it has no
    /// connection lines.
    pub fn from_log(path: &Path, killed: &[u64]) -> Option<ConnAccount> {
        use std::collections::BTreeMap;
        let text = std::fs::read_to_string(path).ok()?;
        // id -> (worker, scanned)
        let mut conns: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        for line in text.lines() {
            let Some(at) = line.find("conn{id=") else {
                continue;
            };
            let rest = &line[at + "conn{id=".len()..];
            let id = rest.split(' ').next().and_then(|v| v.parse::<u64>().ok());
            let worker = daemons::log_num(rest, "worker");
            let (Some(id), Some(worker)) = (id, worker) else {
                continue;
            };
            let event = rest.split("}: ").nth(1).unwrap_or("");
            let e = conns.entry(id).or_insert((worker, false));
            if event.starts_with("scan ") {
                e.1 = true;
            }
        }
        let (&first, &last) = (conns.keys().next()?, conns.keys().next_back()?);
        let missing: Vec<u64> = (first..=last).filter(|i| !conns.contains_key(i)).collect();
        let mut out = ConnAccount {
            seen: conns.len() as u64,
            never_reached_a_worker: missing.len() as u64,
            never_reached_examples: missing.into_iter().take(20).collect(),
            ..ConnAccount::default()
        };
        for (worker, scanned) in conns.values() {
            if !scanned {
                if killed.contains(worker) {
                    out.unscanned_on_killed_workers += 1;
                } else {
                    out.unscanned_on_other_workers += 1;
                }
            }
        }
        Some(out)
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CrashResult {
    pub options: Option<CrashOptions>,
    pub series: Vec<Series>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGKILL => "SIGKILL".into(),
        n => format!("signal {n}"),
    }
}

fn send_signal(pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: kill(2) takes two integers; the pid is a process this
    // benchmark started (clamd) or a worker of the daemon it started.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {}): {}",
            signal_name(sig),
            std::io::Error::last_os_error()
        ))
    }
}

/// Everything one daemon's series needs.
#[derive(Clone)]
pub struct Setup<'a> {
    pub program: &'a Path,
    pub dir: &'a Path,
    pub dbdir: &'a Path,
    pub settings: &'a Settings,
    pub payload: &'a Arc<Vec<u8>>,
    pub counter: &'a Arc<AtomicU64>,
    pub chunk: usize,
    pub opts: &'a CrashOptions,
}

/// Each series gets its own directory, so its daemon's log is kept.
fn series_dir(dir: &Path, sig: i32) -> Result<std::path::PathBuf, String> {
    let d = dir.join(signal_name(sig));
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Waits until the supervisor has `want` workers and STATS says they all
/// serve.
pub async fn wait_fleet(d: &Daemon, want: usize, limit: Duration) -> Result<(), String> {
    let until = Instant::now() + limit;
    loop {
        let procs = daemons::children_named(d.pid(), WORKER_COMM).len();
        if procs == want {
            let stats = crate::load::request_to_eof(
                &d.socket,
                b"zSTATS\0",
                Instant::now() + Duration::from_secs(5),
                1 << 20,
            )
            .await
            .unwrap_or_default();
            let stats = String::from_utf8_lossy(&stats);
            let line = stats.lines().find(|l| l.starts_with("WORKERS:"));
            // "WORKERS: live 2 max 2 worker 1 generation 1 ..."
            let num = |k: &str| {
                let mut words = line?.split_whitespace();
                words.find(|w| *w == k)?;
                words.next()?.parse::<u64>().ok()
            };
            if let (Some(live), Some(max)) = (num("live"), num("max")) {
                if live == max && max as usize == want {
                    return Ok(());
                }
            }
        }
        if Instant::now() > until {
            return Err(format!(
                "clamsentry did not get {want} serving workers within {} s ({procs} worker processes)",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Log lines of the supervisor about one dead worker.
#[derive(Default)]
struct LogNotes {
    died: Vec<String>,
    replaced: Vec<(Instant, String)>,
    /// (worker, connections)
    revoked: Vec<(u64, u64)>,
}

impl LogNotes {
    fn read(&mut self, tail: &mut LogTail) {
        for line in tail.new_lines() {
            if line.contains("worker died; only its own requests failed") {
                self.died.push(line);
            } else if line.contains("crashed worker replaced") {
                self.replaced.push((Instant::now(), line));
            } else if line.contains("closed the connections of a worker that is gone") {
                if let (Some(w), Some(k)) = (
                    daemons::log_num(&line, "worker"),
                    daemons::log_num(&line, "connections"),
                ) {
                    self.revoked.push((w, k));
                }
            }
        }
    }
}

/// A series against clamsentry: `kills` workers killed with `sig`.
pub async fn clamsentry_series(s: &Setup<'_>, sig: i32) -> Result<Series, String> {
    let opts = s.opts;
    let dir = series_dir(s.dir, sig)?;
    let mut d = Daemon::spawn(Kind::Clamsentry, s.program, &dir, s.dbdir, s.settings)
        .map_err(|e| e.to_string())?;
    crate::wait_pong(&mut d).await?;
    let want = daemons::expected_workers(s.settings.workers);
    wait_fleet(&d, want, Duration::from_secs(60)).await?;
    let sup = d.pid();
    let mut out = Series {
        daemon: "clamsentry".into(),
        signal: signal_name(sig),
        workers: Some(want),
        supervisor_pid_before: sup,
        engine_pids_before: daemons::children_named(sup, ENGINE_COMM),
        ..Series::default()
    };
    let mut tail = LogTail::at_end(&d.log);
    let mut notes = LogNotes::default();
    let started = Instant::now();
    let bg = Background::start(&d.socket, opts.clients, s.payload, s.counter, s.chunk);
    tokio::time::sleep(Duration::from_millis(opts.warmup_ms)).await;
    let mut times = Vec::new();
    for n in 0..opts.kills {
        let before = daemons::children_named(sup, WORKER_COMM);
        let Some(&victim) = before.first() else {
            return Err("clamsentry has no worker to kill".into());
        };
        notes.read(&mut tail);
        let (died0, replaced0) = (notes.died.len(), notes.replaced.len());
        let t0 = Instant::now();
        send_signal(victim, sig)?;
        times.push(t0);
        let mut k = Kill {
            n,
            pid: victim,
            at_ms: ms(t0 - started),
            ..Kill::default()
        };
        let limit = t0 + Duration::from_secs(opts.recovery_limit_s);
        loop {
            let now = Instant::now();
            let workers = daemons::children_named(sup, WORKER_COMM);
            if k.new_worker_ms.is_none() && workers.iter().any(|p| !before.contains(p)) {
                k.new_worker_ms = Some(ms(now - t0));
            }
            notes.read(&mut tail);
            if k.serving_ms.is_none() {
                if let Some((at, line)) = notes.replaced.get(replaced0) {
                    k.serving_ms = Some(ms(*at - t0));
                    k.replaced_in_us = daemons::log_num(line, "replaced_in_us");
                }
            }
            let new_ok = bg.first_ok_after(t0).1.is_some();
            if k.serving_ms.is_some()
                && k.new_worker_ms.is_some()
                && new_ok
                && workers.len() == want
            {
                k.recovered = true;
                break;
            }
            if now > limit || d.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(line) = notes.died.get(died0) {
            k.worker = daemons::log_num(line, "worker");
            k.slot = daemons::log_num(line, "slot");
            k.slot_failures = daemons::log_num(line, "slot_failures");
            k.backoff_ms = daemons::log_num(line, "replace_in_ms");
            k.how = line
                .split(" how=")
                .nth(1)
                .and_then(|r| r.split(" crashes=").next())
                .map(str::to_string);
        }
        let recovered = k.recovered;
        out.kills.push(k);
        if !recovered {
            eprintln!(
                "clamsentry: kill {n} ({}): no recovery within {} s; ending the series",
                signal_name(sig),
                opts.recovery_limit_s
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(opts.gap_ms)).await;
    }
    let events = bg.stop(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    notes.read(&mut tail);
    out.supervisor_alive_after = d.child.try_wait().ok().flatten().is_none();
    out.engine_pids_after = daemons::children_named(sup, ENGINE_COMM);
    out.pids_unchanged = Some(
        out.supervisor_alive_after
            && !out.engine_pids_before.is_empty()
            && out.engine_pids_before == out.engine_pids_after,
    );
    for k in &mut out.kills {
        k.revoked = Some(match k.worker {
            Some(w) => notes
                .revoked
                .iter()
                .filter(|(x, _)| *x == w)
                .map(|(_, c)| c)
                .sum(),
            None => 0,
        });
    }
    attribute(&mut out, &events, &times);
    for k in &mut out.kills {
        k.failed_other_workers = k.revoked.map(|r| k.failed.saturating_sub(r));
    }
    out.serving_ms = Dist::of(out.kills.iter().filter_map(|k| k.serving_ms));
    out.new_worker_ms = Dist::of(out.kills.iter().filter_map(|k| k.new_worker_ms));
    out.backoff_ms = Dist::of(
        out.kills
            .iter()
            .filter_map(|k| k.backoff_ms.map(|b| b as f64)),
    );
    out.replacement_minus_backoff_ms = Dist::of(
        out.kills
            .iter()
            .filter_map(|k| Some(k.replaced_in_us? as f64 / 1000.0 - k.backoff_ms? as f64)),
    );
    out.revoked_total = Some(out.kills.iter().filter_map(|k| k.revoked).sum());
    out.failed_other_workers_total = Some(
        out.kills
            .iter()
            .filter_map(|k| k.failed_other_workers)
            .sum(),
    );
    out.seconds = started.elapsed().as_secs_f64();
    d.stop(Duration::from_secs(10));
    if s.settings.log_level == "debug" {
        let killed: Vec<u64> = out.kills.iter().filter_map(|k| k.worker).collect();
        out.conns = ConnAccount::from_log(&d.log, &killed);
    }
    Ok(out)
}

/// A series against clamd: clamd itself killed `clamd_kills` times with
/// `sig` and started again `restart_delay` after it exited.
pub async fn clamd_series(s: &Setup<'_>, sig: i32) -> Result<Series, String> {
    let opts = s.opts;
    let dir = series_dir(s.dir, sig)?;
    let spawn = || {
        Daemon::spawn(Kind::Clamd, s.program, &dir, s.dbdir, s.settings).map_err(|e| e.to_string())
    };
    let mut d = spawn()?;
    crate::wait_pong(&mut d).await?;
    let mut out = Series {
        daemon: "clamd".into(),
        signal: signal_name(sig),
        supervisor_pid_before: d.pid(),
        ..Series::default()
    };
    let started = Instant::now();
    let bg = Background::start(&d.socket, opts.clients, s.payload, s.counter, s.chunk);
    tokio::time::sleep(Duration::from_millis(opts.warmup_ms)).await;
    let mut times = Vec::new();
    for n in 0..opts.clamd_kills {
        let t0 = Instant::now();
        let mut k = Kill {
            n,
            pid: d.pid(),
            at_ms: ms(t0 - started),
            ..Kill::default()
        };
        send_signal(d.pid(), sig)?;
        times.push(t0);
        let limit = t0 + Duration::from_secs(opts.recovery_limit_s);
        loop {
            if let Ok(Some(_)) = d.child.try_wait() {
                k.exited_ms = Some(ms(t0.elapsed()));
                break;
            }
            if Instant::now() > limit {
                return Err(format!("clamd did not exit after {}", signal_name(sig)));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // systemd: the unit enters "auto-restart" when the process is gone
        // and starts it again RestartSec later.
        tokio::time::sleep(Duration::from_millis(opts.restart_delay_ms)).await;
        d = spawn()?;
        k.respawned_ms = Some(ms(t0.elapsed()));
        loop {
            if bg.first_ok_after(t0).1.is_some() {
                k.recovered = true;
                break;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!(
                    "clamd exited after its restart ({status}):\n{}",
                    d.log_tail()
                ));
            }
            if Instant::now() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let recovered = k.recovered;
        out.kills.push(k);
        if !recovered {
            eprintln!("clamd: kill {n}: no scan succeeded within the limit; ending the series");
            break;
        }
        tokio::time::sleep(Duration::from_millis(opts.gap_ms.max(500))).await;
    }
    let events = bg.stop(Duration::from_secs(30)).await;
    attribute(&mut out, &events, &times);
    out.supervisor_alive_after = d.child.try_wait().ok().flatten().is_none();
    out.seconds = started.elapsed().as_secs_f64();
    d.stop(Duration::from_secs(10));
    Ok(out)
}

/// Per kill: the next successful reply, the first success of a request
/// started after the signal, and the failures up to the next kill.
fn attribute(out: &mut Series, events: &[Event], times: &[Instant]) {
    for e in events {
        if e.outcome == Outcome::Ok {
            out.requests_ok += 1;
            continue;
        }
        out.requests_failed += 1;
        if let Some(d) = &e.detail {
            let kind = if d.len() > 80 { &d[..80] } else { d.as_str() };
            if out.failure_kinds.len() < 5 && !out.failure_kinds.iter().any(|k| k == kind) {
                out.failure_kinds.push(kind.to_string());
            }
        }
        // The last kill at or before this failure.
        let i = times.partition_point(|t| *t <= e.done);
        if i == 0 {
            out.failed_before_first_kill += 1;
            continue;
        }
        if let Some(k) = out.kills.get_mut(i - 1) {
            k.failed += 1;
            match e.outcome {
                Outcome::Closed => k.closed += 1,
                _ => k.error_replies += 1,
            }
        }
    }
    for (i, k) in out.kills.iter_mut().enumerate() {
        let t0 = times[i];
        let after = events
            .iter()
            .filter(|e| e.outcome == Outcome::Ok && e.done > t0);
        k.next_ok_ms = after.clone().map(|e| ms(e.done - t0)).reduce(f64::min);
        k.new_scan_ok_ms = after
            .filter(|e| e.started > t0)
            .map(|e| ms(e.done - t0))
            .reduce(f64::min);
    }
    out.next_ok_ms = Dist::of(out.kills.iter().filter_map(|k| k.next_ok_ms));
    out.new_scan_ok_ms = Dist::of(out.kills.iter().filter_map(|k| k.new_scan_ok_ms));
    out.failed_per_kill = Dist::of(out.kills.iter().map(|k| k.failed as f64));
}

/// The whole crash part: clamd first (if asked), then clamsentry, each
/// signal on a fresh daemon.
pub async fn run(
    clamd: Option<&Setup<'_>>,
    clamsentry: Option<&Setup<'_>>,
    opts: &CrashOptions,
) -> Result<CrashResult, String> {
    let mut out = CrashResult {
        options: Some(opts.clone()),
        series: Vec::new(),
    };
    for sig in [libc::SIGSEGV, libc::SIGKILL] {
        if let Some(s) = clamd {
            if opts.clamd_kills > 0 {
                eprintln!(
                    "crash: clamd, {} x {} ...",
                    opts.clamd_kills,
                    signal_name(sig)
                );
                let r = clamd_series(s, sig).await?;
                eprintln!(
                    "crash: clamd {}: new scan ok after median {:.0} ms, {} failed requests",
                    r.signal,
                    r.new_scan_ok_ms.as_ref().map_or(f64::NAN, |d| d.median),
                    r.requests_failed
                );
                out.series.push(r);
            }
        }
        if let Some(s) = clamsentry {
            if opts.kills > 0 {
                eprintln!(
                    "crash: clamsentry, {} x {} on a worker ...",
                    opts.kills,
                    signal_name(sig)
                );
                let r = clamsentry_series(s, sig).await?;
                eprintln!(
                    "crash: clamsentry {}: new scan ok after median {:.1} ms, worker serving after median {:.1} ms (max {:.0}), {} failed, {} on other workers",
                    r.signal,
                    r.new_scan_ok_ms.as_ref().map_or(f64::NAN, |d| d.median),
                    r.serving_ms.as_ref().map_or(f64::NAN, |d| d.median),
                    r.serving_ms.as_ref().map_or(f64::NAN, |d| d.max),
                    r.requests_failed,
                    r.failed_other_workers_total.unwrap_or(0)
                );
                out.series.push(r);
            }
        }
    }
    Ok(out)
}
