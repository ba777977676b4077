//! Memory of the whole daemon: clamsentry with 1, 2 and 8 workers after
//! the same load (clamd after that load as a reference), and both daemons
//! before and after a series of reloads made under load.
//!
//! Memory is the PSS of the process tree (supervisor, engine holders,
//! workers), so pages the workers share with the engine holder they were
//! forked from count once, as they do in RAM.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemons::{self, Daemon, Kind, LogTail, ProcMem, Settings, ENGINE_COMM, WORKER_COMM};
use crate::load::{Background, Event, Outcome};

/// What the memory parts are told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryOptions {
    /// clamsentry's `limits.workers` values to compare.
    pub worker_counts: Vec<u32>,
    /// Length of each load phase before a measurement (10 KiB x16, then
    /// 1 MiB x4).
    pub load_ms: u64,
    /// Wait after the load before memory is read.
    pub settle_ms: u64,
    /// RELOADs in a row, each once the previous one completed.
    pub reloads: usize,
    /// Clients streaming 10 KiB during the reloads.
    pub reload_clients: usize,
}

/// One daemon configuration after the load.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkersRun {
    pub daemon: String,
    /// `limits.workers` (None for clamd).
    pub workers: Option<u32>,
    pub worker_processes: usize,
    pub engine_processes: usize,
    pub start_to_pong_s: f64,
    /// PSS of the tree after start, before any load.
    pub pss_idle_kib: u64,
    /// PSS of the tree after the load.
    pub pss_kib: u64,
    /// RSS summed over the tree (shared pages counted once per process).
    pub rss_sum_kib: u64,
    pub processes: Vec<ProcMem>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// PSS / PSS with one worker.
    pub ratio_vs_one_worker: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkersResult {
    pub options: Option<MemoryOptions>,
    pub runs: Vec<WorkersRun>,
}

/// One RELOAD of a series.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OneReload {
    pub n: usize,
    pub reply: String,
    /// From RELOAD until the signature it added is found.
    pub found_s: f64,
    /// clamsentry: from RELOAD until the supervisor logged "reload complete"
    /// (every slot serves a worker of the new generation).
    pub complete_s: Option<f64>,
}

/// One daemon's reload series.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadsRun {
    pub daemon: String,
    pub workers: Option<usize>,
    pub pss_before_kib: u64,
    pub pss_after_kib: u64,
    /// after / before.
    pub ratio: f64,
    pub peak_pss_kib: u64,
    /// clamsentry: the most engine holders and workers alive at once
    /// during the reloads (sampled with the peak, every 250 ms).
    pub max_engine_processes: usize,
    pub max_worker_processes: usize,
    pub reloads: Vec<OneReload>,
    /// clamsentry: from the end of the load until only one engine holder
    /// and the configured workers were left.
    pub drained_s: Option<f64>,
    pub processes_before: Vec<ProcMem>,
    pub processes_after: Vec<ProcMem>,
    /// Requests of the reload phase (from the first RELOAD's load to the
    /// end of the load), and its length.
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub failure_kinds: Vec<String>,
    pub reload_phase_s: f64,
    /// Requests of the same load before the reloads, and its length.
    pub before_requests_ok: u64,
    pub before_s: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadsResult {
    pub options: Option<MemoryOptions>,
    pub runs: Vec<ReloadsRun>,
}

/// Everything a daemon run of these parts needs.
pub struct Setup<'a> {
    pub kind: Kind,
    pub program: &'a Path,
    pub dir: &'a Path,
    pub dbdir: &'a Path,
    pub settings: &'a Settings,
    /// 10 KiB and 1 MiB payloads.
    pub small: &'a Arc<Vec<u8>>,
    pub large: &'a Arc<Vec<u8>>,
    pub counter: &'a Arc<AtomicU64>,
    pub chunk: usize,
}

fn count(events: &[Event]) -> (u64, u64) {
    let ok = events.iter().filter(|e| e.outcome == Outcome::Ok).count() as u64;
    (ok, events.len() as u64 - ok)
}

fn kinds(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in events.iter().filter_map(|e| e.detail.as_ref()) {
        if out.len() < 5 && !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

async fn start(s: &Setup<'_>) -> Result<(Daemon, f64), String> {
    let mut d =
        Daemon::spawn(s.kind, s.program, s.dir, s.dbdir, s.settings).map_err(|e| e.to_string())?;
    let t = crate::wait_pong(&mut d).await?;
    if s.kind == Kind::Clamsentry {
        let want = daemons::expected_workers(s.settings.workers);
        crate::crash::wait_fleet(&d, want, Duration::from_secs(120)).await?;
    }
    Ok((d, t))
}

/// The load every memory figure is taken after: 10 KiB x16, then 1 MiB x4.
async fn load(d: &Daemon, s: &Setup<'_>, each: Duration) -> (u64, u64) {
    let mut ok = 0;
    let mut failed = 0;
    for (payload, clients) in [(s.small, 16), (s.large, 4)] {
        let bg = Background::start(&d.socket, clients, payload, s.counter, s.chunk);
        tokio::time::sleep(each).await;
        let (o, f) = count(&bg.stop(Duration::from_secs(60)).await);
        ok += o;
        failed += f;
    }
    (ok, failed)
}

/// One daemon configuration: start, wait for the fleet, load, settle, read
/// the memory of every process.
pub async fn workers_run(s: &Setup<'_>, opts: &MemoryOptions) -> Result<WorkersRun, String> {
    let (mut d, pong) = start(s).await?;
    tokio::time::sleep(Duration::from_millis(opts.settle_ms)).await;
    let idle = d.rss_kib();
    let (ok, failed) = load(&d, s, Duration::from_millis(opts.load_ms)).await;
    tokio::time::sleep(Duration::from_millis(opts.settle_ms)).await;
    let processes = daemons::tree_memory(d.pid());
    let out = WorkersRun {
        daemon: s.kind.name().into(),
        workers: match s.kind {
            Kind::Clamsentry => s.settings.workers,
            Kind::Clamd => None,
        },
        worker_processes: daemons::children_named(d.pid(), WORKER_COMM).len(),
        engine_processes: daemons::children_named(d.pid(), ENGINE_COMM).len(),
        start_to_pong_s: pong,
        pss_idle_kib: idle,
        pss_kib: processes.iter().map(|p| p.pss_kib).sum(),
        rss_sum_kib: processes.iter().map(|p| p.rss_kib).sum(),
        processes,
        requests_ok: ok,
        requests_failed: failed,
        ratio_vs_one_worker: None,
    };
    d.stop(Duration::from_secs(10));
    Ok(out)
}

/// RELOAD `opts.reloads` times under load, each as soon as the previous
/// one completed; memory before (after the same load) and after.
pub async fn reloads_run(s: &Setup<'_>, opts: &MemoryOptions) -> Result<ReloadsRun, String> {
    let _ = std::fs::remove_file(s.dbdir.join("reload.ndb"));
    let (mut d, _) = start(s).await?;
    let t_all = Instant::now();
    let want = daemons::expected_workers(s.settings.workers);
    let settle = Duration::from_millis(opts.settle_ms);
    let each = Duration::from_millis(opts.load_ms);
    let mut out = ReloadsRun {
        daemon: s.kind.name().into(),
        workers: (s.kind == Kind::Clamsentry).then_some(want),
        ..ReloadsRun::default()
    };
    // Before: the same streaming load, stopped, settled.
    let t = Instant::now();
    let bg = Background::start(&d.socket, opts.reload_clients, s.small, s.counter, s.chunk);
    tokio::time::sleep(each).await;
    let before = bg.stop(Duration::from_secs(60)).await;
    out.before_s = t.elapsed().as_secs_f64();
    out.before_requests_ok = count(&before).0;
    tokio::time::sleep(settle).await;
    out.processes_before = daemons::tree_memory(d.pid());
    out.pss_before_kib = out.processes_before.iter().map(|p| p.pss_kib).sum();
    out.peak_pss_kib = out.pss_before_kib;

    let mut tail = LogTail::at_end(&d.log);
    let mut complete_lines = 0usize;
    let t_phase = Instant::now();
    let sampler = daemons::Sampler::start(d.pid(), crate::RELOAD_SAMPLE_EVERY);
    let bg = Background::start(&d.socket, opts.reload_clients, s.small, s.counter, s.chunk);
    tokio::time::sleep(each / 2).await;
    for n in 1..=opts.reloads {
        let (name, marker) = crate::db::reload_marker(n as u64);
        std::fs::write(
            s.dbdir.join("reload.ndb"),
            crate::db::ndb_line(&name, &marker),
        )
        .map_err(|e| e.to_string())?;
        let req = crate::load::Request::new(&marker, s.chunk);
        let found = format!("stream: {name}.UNOFFICIAL FOUND");
        let t = Instant::now();
        let limit = t + Duration::from_secs(600);
        let reply = crate::text(
            &crate::command(&d.socket, b"zRELOAD\0", limit)
                .await
                .unwrap_or_default(),
        );
        let mut r = OneReload {
            n,
            reply,
            ..OneReload::default()
        };
        let mut found_s = None;
        loop {
            if found_s.is_none() {
                let scan = crate::load::request(&d.socket, &req.bytes, limit);
                if let Ok(Ok(rep)) = tokio::time::timeout(Duration::from_secs(60), scan).await {
                    if crate::text(&rep) == found {
                        found_s = Some(t.elapsed().as_secs_f64());
                    }
                }
            }
            if s.kind == Kind::Clamsentry && r.complete_s.is_none() {
                complete_lines += tail
                    .new_lines()
                    .iter()
                    .filter(|l| l.contains("reload complete"))
                    .count();
                if complete_lines >= n {
                    r.complete_s = Some(t.elapsed().as_secs_f64());
                }
            }
            let done = found_s.is_some() && (s.kind == Kind::Clamd || r.complete_s.is_some());
            if done {
                break;
            }
            if Instant::now() > limit || d.child.try_wait().ok().flatten().is_some() {
                return Err(format!(
                    "{}: reload {n} did not complete:\n{}",
                    s.kind.name(),
                    d.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        r.found_s = found_s.unwrap_or(f64::NAN);
        out.reloads.push(r);
    }
    tokio::time::sleep(each / 2).await;
    let events = bg.stop(Duration::from_secs(60)).await;
    out.reload_phase_s = t_phase.elapsed().as_secs_f64();
    let peak = sampler.finish();
    out.peak_pss_kib = out.peak_pss_kib.max(peak.pss_kib);
    if s.kind == Kind::Clamsentry {
        out.max_engine_processes = peak.engines;
        out.max_worker_processes = peak.workers;
    }
    // Old engine holders and draining workers leave on their own.
    let t = Instant::now();
    if s.kind == Kind::Clamsentry {
        loop {
            let engines = daemons::children_named(d.pid(), ENGINE_COMM).len();
            let workers = daemons::children_named(d.pid(), WORKER_COMM).len();
            if engines == 1 && workers == want {
                out.drained_s = Some(t.elapsed().as_secs_f64());
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(settle).await;
    out.processes_after = daemons::tree_memory(d.pid());
    out.pss_after_kib = out.processes_after.iter().map(|p| p.pss_kib).sum();
    out.ratio = out.pss_after_kib as f64 / out.pss_before_kib.max(1) as f64;
    let (ok, failed) = count(&events);
    out.requests_ok = ok;
    out.requests_failed = failed;
    out.failure_kinds = kinds(&events);
    out.seconds = t_all.elapsed().as_secs_f64();
    d.stop(Duration::from_secs(10));
    let _ = std::fs::remove_file(s.dbdir.join("reload.ndb"));
    Ok(out)
}
