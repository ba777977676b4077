//! clamsentry against clamd 1.4.6, side by side, on the same machine, the
//! same synthetic database and the same load generator; plus the engine-only
//! limit (libclamav in this process, no sockets) as the ceiling both are
//! measured against. See `docs/benchmark.md`.
//!
//! [`run`] does everything and returns a [`Report`]; `main` prints it and
//! writes it as JSON. The smoke test calls [`run`] in quick mode.

pub mod cancel;
pub mod crash;
pub mod daemons;
pub mod db;
pub mod dirscan;
pub mod engine_only;
pub mod latency;
pub mod load;
pub mod memory;
pub mod report;
pub mod scrape;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemons::{Daemon, Kind, Settings};
use engine_only::EngineResult;
use load::{LoadResult, Scenario};
pub use report::Report;

/// Everything a run can be told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    pub quick: bool,
    pub hdb: u64,
    pub ndb: u64,
    /// Seconds of measured load per scenario.
    pub duration_s: f64,
    /// Seconds of load before measuring starts.
    pub warmup_s: f64,
    /// INSTREAM chunk size the clients send.
    pub chunk: usize,
    /// MaxThreads / limits.max-threads for both daemons.
    pub threads: u32,
    /// Idle connections opened for the idle-memory measurement.
    pub idle_connections: usize,
    /// Send identical payloads in every scenario (cache hits everywhere).
    pub identical: bool,
    pub clamd: PathBuf,
    pub clamsentry: PathBuf,
    /// Where the database and daemon files go (a temporary directory if None).
    pub workdir: Option<PathBuf>,
    /// Daemons to run, in order.
    pub daemons: Vec<String>,
    /// Temporary directory of both daemons and the engine-only run (None: a
    /// fresh directory on tmpfs under /dev/shm, else under the work directory).
    pub tmpdir: Option<PathBuf>,
    /// Run only the scenarios with these names (all when empty).
    pub only: Vec<String>,
    /// Run only these parts ([`PARTS`]; all when empty).
    pub parts: Vec<String>,
    /// Throughput rounds: each scenario runs this many times per daemon,
    /// the daemons alternating (ABBA...).
    pub repeat: usize,
    pub crash: crash::CrashOptions,
    pub memory: memory::MemoryOptions,
    pub dir: dirscan::DirOptions,
    pub cancel: cancel::CancelOptions,
    /// Alternating rounds of the latency part [default: 5].
    pub latency_rounds: usize,
    pub scrape: scrape::ScrapeOptions,
    /// clamsentry's log level.
    pub clamsentry_log: String,
}

/// The parts of a run, in the order they run: the throughput scenarios
/// with the per-daemon measurements (start, idle connections, one reload),
/// crash recovery, memory with N workers, memory across reloads under load,
/// directory walks, tail latency at 16 and 256 clients, abandoned scans,
/// the cost of being scraped once a second.
pub const PARTS: &[&str] = &[
    "throughput",
    "crash",
    "workers",
    "reloads",
    "dirscan",
    "latency",
    "cancel",
    "scrape",
];

impl Options {
    /// The full run (about 5 minutes on 2 cores).
    pub fn full() -> Options {
        let nproc = nproc();
        Options {
            quick: false,
            hdb: 2_000_000,
            ndb: 50_000,
            duration_s: 8.0,
            warmup_s: 1.0,
            chunk: 65536,
            threads: nproc as u32,
            idle_connections: 1000,
            identical: false,
            clamd: PathBuf::from("/usr/sbin/clamd"),
            clamsentry: default_clamsentry(),
            workdir: None,
            daemons: vec!["clamd".into(), "clamsentry".into()],
            tmpdir: None,
            only: Vec::new(),
            parts: Vec::new(),
            repeat: 1,
            crash: crash::CrashOptions {
                clients: 16,
                size: 10 << 10,
                kills: 20,
                clamd_kills: 2,
                warmup_ms: 1000,
                gap_ms: 300,
                restart_delay_ms: 100,
                recovery_limit_s: 60,
            },
            memory: memory::MemoryOptions {
                worker_counts: vec![1, 2, 8],
                load_ms: 3000,
                settle_ms: 1000,
                reloads: 10,
                reload_clients: 8,
            },
            dir: dirscan::DirOptions {
                entries: 100_000,
                files: 20_000,
                file_size: 512,
                one_byte: 100_000,
                system: dirscan::DirOptions::system_tree(),
                runs: 3,
            },
            cancel: cancel::CancelOptions {
                dirs: 20,
                files_per_dir: 5_000,
                after_opens: 2_000,
                archive_members: 1_500,
                member_size: 20 << 10,
                runs: 3,
            },
            latency_rounds: 5,
            scrape: scrape::ScrapeOptions {
                rounds: 3,
                clients: 16,
                size: 10 << 10,
                every_s: 1.0,
            },
            clamsentry_log: "info".into(),
        }
    }

    /// Whether `part` (one of [`PARTS`]) runs.
    pub fn wants(&self, part: &str) -> bool {
        self.parts.is_empty() || self.parts.iter().any(|p| p == part)
    }

    /// Small database, short windows: well under a minute.
    pub fn quick() -> Options {
        Options {
            quick: true,
            hdb: 20_000,
            ndb: 1_000,
            duration_s: 1.0,
            warmup_s: 0.3,
            crash: crash::CrashOptions {
                kills: 2,
                clamd_kills: 1,
                warmup_ms: 300,
                gap_ms: 150,
                ..Options::full().crash
            },
            memory: memory::MemoryOptions {
                load_ms: 500,
                settle_ms: 300,
                reloads: 2,
                ..Options::full().memory
            },
            dir: dirscan::DirOptions {
                entries: 10_000,
                files: 2_000,
                one_byte: 10_000,
                system: vec![PathBuf::from("/usr/share/perl5")],
                runs: 1,
                ..Options::full().dir
            },
            cancel: cancel::CancelOptions {
                dirs: 4,
                files_per_dir: 2_500,
                after_opens: 500,
                archive_members: 600,
                runs: 1,
                ..Options::full().cancel
            },
            latency_rounds: 1,
            scrape: scrape::ScrapeOptions {
                rounds: 2,
                ..Options::full().scrape
            },
            ..Options::full()
        }
    }

    fn settings(&self, temp_dir: PathBuf) -> Settings {
        Settings {
            temp_dir,
            threads: self.threads,
            // Above the largest client count: both queue instead of refusing.
            max_queue: 512,
            stream_max_length: 32 << 20,
            max_file_size: 32 << 20,
            max_scan_size: 100 << 20,
            max_connections: 2048,
            workers: None,
            log_level: self.clamsentry_log.clone(),
            metrics_listen: None,
        }
    }
}

/// The release binary next to this crate's workspace.
pub fn default_clamsentry() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("release").join("clamsentry")
}

/// Builds the clamsentry release binary (a no-op when it is up to date).
pub fn build_clamsentry() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building clamsentry (cargo build --release -p clamsentry) ...");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "clamsentry",
            "--bin",
            "clamsentry",
        ])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build --release -p clamsentry failed: {status}"
        ))
    }
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The scenarios, in the order they run.
pub fn scenarios(identical_all: bool) -> Vec<Scenario> {
    let s = |name: &str, size: usize, clients: usize, identical: bool| Scenario {
        name: name.into(),
        size,
        clients,
        identical: identical || identical_all,
    };
    vec![
        s("10KiB x16", 10 << 10, 16, false),
        s("10KiB identical x16", 10 << 10, 16, true),
        s("1MiB x4", 1 << 20, 4, false),
        s("16MiB x2", 16 << 20, 2, false),
        s("10KiB x256", 10 << 10, 256, false),
        s("10KiB x1 (latency)", 10 << 10, 1, false),
    ]
}

/// Warm-up and measured window of a scenario. A 16 MiB scan takes seconds
/// with the default database, so that scenario gets three times the window
/// (quick mode: at least 2 s) to complete more than a handful of scans.
fn window(opts: &Options, sc: &Scenario) -> (Duration, Duration) {
    let (mut w, mut d) = (opts.warmup_s, opts.duration_s);
    if sc.size >= 16 << 20 {
        if opts.quick {
            w = w.max(0.5);
            d = d.max(2.0);
        } else {
            d *= 3.0;
        }
    }
    (Duration::from_secs_f64(w), Duration::from_secs_f64(d))
}

/// Engine-only results by payload kind ("10KiB", "10KiB identical", ...).
fn engine_key(sc: &Scenario) -> String {
    let size = match sc.size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s => format!("{}KiB", s >> 10),
    };
    if sc.identical {
        format!("{size} identical")
    } else {
        size
    }
}

/// One daemon's results.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DaemonResult {
    pub version: String,
    pub start_to_pong_s: f64,
    /// Replies to a clean and to a detected payload (correctness check).
    pub clean_reply: String,
    pub found_reply: String,
    pub rss_idle_kib: u64,
    pub rss_after_load_kib: u64,
    pub scenarios: BTreeMap<String, LoadResult>,
    pub idle: IdleResult,
    pub reload: ReloadResult,
    /// With `--repeat N`: the scenarios of rounds 2..N (round 1 is
    /// `scenarios`).
    pub repeats: Vec<BTreeMap<String, LoadResult>>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IdleResult {
    pub requested: usize,
    pub opened: usize,
    pub rss_before_kib: u64,
    pub rss_with_idle_kib: u64,
    pub delta_kib: i64,
    /// PING round trip while the idle connections are open (None: no answer
    /// within 5 s, 1.5 s in quick mode).
    pub ping_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadResult {
    pub reply: String,
    /// From sending RELOAD until a scan is answered by the new engine.
    pub reload_s: f64,
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
    pub rss_after_kib: u64,
}

/// Runs the whole benchmark.
pub fn run(opts: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let tmp;
    let work: PathBuf = match &opts.workdir {
        Some(p) => {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
            p.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("clamsentry-bench")
                .tempdir()
                .map_err(|e| e.to_string())?;
            tmp.path().to_path_buf()
        }
    };
    let dbdir = work.join("db");
    let _ = std::fs::remove_dir_all(&dbdir);
    std::fs::create_dir_all(&dbdir).map_err(|e| e.to_string())?;
    let throughput = opts.wants("throughput");
    let scenarios: Vec<Scenario> = scenarios(opts.identical)
        .into_iter()
        .filter(|s| throughput && (opts.only.is_empty() || opts.only.contains(&s.name)))
        .collect();
    // The other parts send 10 KiB and 1 MiB payloads.
    let mut sizes: Vec<usize> = scenarios.iter().map(|s| s.size).collect();
    for size in [10 << 10, 1 << 20] {
        if !sizes.contains(&size) {
            sizes.push(size);
        }
    }
    sizes.dedup();
    eprintln!(
        "generating {} .hdb + {} .ndb signatures in {} ...",
        opts.hdb,
        opts.ndb,
        dbdir.display()
    );
    let db = db::generate(&dbdir, opts.hdb, opts.ndb, &sizes).map_err(|e| e.to_string())?;
    let tmp_holder;
    let temp_dir = match &opts.tmpdir {
        Some(p) => p.clone(),
        None => {
            let shm = Path::new("/dev/shm");
            tmp_holder = if shm.is_dir() {
                tempfile::Builder::new()
                    .prefix("clamsentry-bench-tmp")
                    .tempdir_in(shm)
            } else {
                tempfile::Builder::new()
                    .prefix("clamsentry-bench-tmp")
                    .tempdir_in(&work)
            }
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            tmp_holder.path().to_path_buf()
        }
    };
    // Started as root, clamsentry's scanning worker runs as nobody: it must
    // be able to reach the signatures and its temporary directory.
    for dir in [&work, &dbdir, &temp_dir] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    let settings = opts.settings(temp_dir);
    let counter = Arc::new(AtomicU64::new(1));
    let mut payloads: BTreeMap<usize, Arc<Vec<u8>>> = BTreeMap::new();
    // 10 KiB is also the correctness check and the single-thread engine figure.
    let sizes = scenarios.iter().map(|s| s.size).chain([10 << 10, 1 << 20]);
    for size in sizes {
        payloads
            .entry(size)
            .or_insert_with(|| Arc::new(db::payload(size, 0xDA7A ^ size as u64)));
    }

    let (engine_load_s, engine_results) = if scenarios.is_empty() {
        (0.0, BTreeMap::new())
    } else {
        engine_limit(
            opts, &dbdir, &work, &settings, &scenarios, &payloads, &counter,
        )?
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let daemon_list: Vec<(Kind, PathBuf)> = opts
        .daemons
        .iter()
        .map(|name| match name.as_str() {
            "clamd" => Ok((Kind::Clamd, opts.clamd.clone())),
            "clamsentry" => Ok((Kind::Clamsentry, opts.clamsentry.clone())),
            other => Err(format!("unknown daemon {other:?}: use clamd or clamsentry")),
        })
        .collect::<Result<_, _>>()?;
    let program = |k: Kind| {
        daemon_list
            .iter()
            .find(|(x, _)| *x == k)
            .map(|(_, p)| p.as_path())
    };
    let fresh_dir = |name: &str| -> Result<PathBuf, String> {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(dir)
    };
    let mut results: BTreeMap<String, DaemonResult> = BTreeMap::new();
    // Round 1 measures everything; later rounds only the scenarios. The
    // order of the daemons alternates: clamd, clamsentry, clamsentry, clamd, ...
    let rounds = if scenarios.is_empty() {
        0
    } else {
        opts.repeat.max(1)
    };
    for round in 0..rounds {
        let mut order = daemon_list.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for (kind, program) in &order {
            let dir = fresh_dir(kind.name())?;
            let _ = std::fs::remove_file(dbdir.join("reload.ndb"));
            if rounds > 1 {
                eprintln!("round {} of {rounds}", round + 1);
            }
            let r = rt.block_on(bench_daemon(
                *kind,
                program,
                &dir,
                &dbdir,
                &settings,
                &scenarios,
                &payloads,
                &counter,
                opts,
                round == 0,
            ))?;
            match results.get_mut(kind.name()) {
                Some(first) => first.repeats.push(r.scenarios),
                None => {
                    results.insert(kind.name().into(), r);
                }
            }
        }
    }
    let _ = std::fs::remove_file(dbdir.join("reload.ndb"));
    let mut report = report::build(
        opts,
        &settings,
        db,
        engine_load_s,
        engine_results,
        results,
        &scenarios,
        0.0,
    );
    let small = &payloads[&(10 << 10)];
    let large = &payloads[&(1 << 20)];

    if opts.wants("crash") {
        let crash_payload = Arc::new(db::payload(opts.crash.size, 0xC2A5));
        let (dcd, dcs) = (fresh_dir("crash-clamd")?, fresh_dir("crash-clamsentry")?);
        let common = crash::Setup {
            program: &opts.clamd,
            dir: &dcd,
            dbdir: &dbdir,
            settings: &settings,
            payload: &crash_payload,
            counter: &counter,
            chunk: opts.chunk,
            opts: &opts.crash,
        };
        let cd = program(Kind::Clamd).map(|program| crash::Setup {
            program,
            ..common.clone()
        });
        let cs = program(Kind::Clamsentry).map(|program| crash::Setup {
            program,
            dir: &dcs,
            ..common.clone()
        });
        let t = Instant::now();
        let mut r = rt.block_on(crash::run(cd.as_ref(), cs.as_ref(), &opts.crash))?;
        eprintln!("crash: {:.0} s", t.elapsed().as_secs_f64());
        r.options = Some(opts.crash.clone());
        report.crash = Some(r);
    }

    if opts.wants("workers") {
        let t = Instant::now();
        let mut out = memory::WorkersResult {
            options: Some(opts.memory.clone()),
            runs: Vec::new(),
        };
        let mut configs: Vec<(Kind, Option<u32>)> = Vec::new();
        if program(Kind::Clamsentry).is_some() {
            configs.extend(
                opts.memory
                    .worker_counts
                    .iter()
                    .map(|&n| (Kind::Clamsentry, Some(n))),
            );
        }
        if program(Kind::Clamd).is_some() {
            configs.push((Kind::Clamd, None));
        }
        for (kind, workers) in configs {
            let Some(prog) = program(kind) else { continue };
            let dir = fresh_dir(&format!("workers-{}", kind.name()))?;
            let settings = Settings {
                workers,
                ..settings.clone()
            };
            let setup = memory::Setup {
                kind,
                program: prog,
                dir: &dir,
                dbdir: &dbdir,
                settings: &settings,
                small,
                large,
                counter: &counter,
                chunk: opts.chunk,
            };
            eprintln!(
                "workers: {}{} ...",
                kind.name(),
                workers.map_or(String::new(), |n| format!(" with {n} workers"))
            );
            let r = rt.block_on(memory::workers_run(&setup, &opts.memory))?;
            eprintln!(
                "workers: {}: {} MiB (PSS) with {} worker processes",
                kind.name(),
                r.pss_kib >> 10,
                r.worker_processes
            );
            out.runs.push(r);
        }
        let one = out
            .runs
            .iter()
            .find(|r| r.workers == Some(1))
            .map(|r| r.pss_kib);
        for r in &mut out.runs {
            r.ratio_vs_one_worker = one
                .filter(|&o| o > 0 && r.daemon == "clamsentry")
                .map(|o| r.pss_kib as f64 / o as f64);
        }
        eprintln!("workers: {:.0} s", t.elapsed().as_secs_f64());
        report.workers = Some(out);
    }

    if opts.wants("reloads") {
        let t = Instant::now();
        let mut out = memory::ReloadsResult {
            options: Some(opts.memory.clone()),
            runs: Vec::new(),
        };
        for (kind, prog) in &daemon_list {
            let dir = fresh_dir(&format!("reloads-{}", kind.name()))?;
            let setup = memory::Setup {
                kind: *kind,
                program: prog,
                dir: &dir,
                dbdir: &dbdir,
                settings: &settings,
                small,
                large,
                counter: &counter,
                chunk: opts.chunk,
            };
            eprintln!(
                "reloads: {}, {} reloads under load ...",
                kind.name(),
                opts.memory.reloads
            );
            let r = rt.block_on(memory::reloads_run(&setup, &opts.memory))?;
            eprintln!(
                "reloads: {}: {} -> {} MiB (PSS), x{:.3}, {} failed requests",
                kind.name(),
                r.pss_before_kib >> 10,
                r.pss_after_kib >> 10,
                r.ratio,
                r.requests_failed
            );
            out.runs.push(r);
        }
        eprintln!("reloads: {:.0} s", t.elapsed().as_secs_f64());
        report.reloads = Some(out);
    }

    let starter = Spawner {
        daemons: &daemon_list,
        work: &work,
        dbdir: &dbdir,
        settings: &settings,
    };
    if opts.wants("dirscan") {
        let t = Instant::now();
        let mut running = Vec::new();
        for (kind, _) in &daemon_list {
            running.push(rt.block_on(starter.start_in(*kind, "dirscan"))?);
        }
        let refs: Vec<&Daemon> = running.iter().collect();
        let r = rt.block_on(dirscan::run(&refs, &starter, &work, &opts.dir))?;
        drop(running);
        eprintln!("dirscan: {:.0} s", t.elapsed().as_secs_f64());
        report.dirscan = Some(r);
    }

    if opts.wants("latency") {
        let t = Instant::now();
        let r = rt.block_on(latency::run(
            &starter,
            &daemon_list,
            &payloads[&(10 << 10)],
            &counter,
            opts,
        ))?;
        eprintln!("latency: {:.0} s", t.elapsed().as_secs_f64());
        report.latency = Some(r);
    }

    if opts.wants("cancel") {
        let t = Instant::now();
        let r = rt.block_on(cancel::run(&starter, &daemon_list, &work, &opts.cancel))?;
        eprintln!("cancel: {:.0} s", t.elapsed().as_secs_f64());
        report.cancel = Some(r);
    }

    if opts.wants("scrape") {
        if let Some(prog) = program(Kind::Clamsentry) {
            let t = Instant::now();
            let dir = fresh_dir("scrape-clamsentry")?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?;
            let settings = Settings {
                metrics_listen: Some(port.to_string()),
                ..settings.clone()
            };
            let mut d = Daemon::spawn(Kind::Clamsentry, prog, &dir, &dbdir, &settings)
                .map_err(|e| e.to_string())?;
            rt.block_on(wait_pong(&mut d))?;
            let payload = Arc::new(db::payload(opts.scrape.size, 0x5C2A));
            let r = rt.block_on(scrape::run(
                &d,
                port,
                &payload,
                &counter,
                opts.chunk,
                Duration::from_secs_f64(opts.warmup_s),
                Duration::from_secs_f64(opts.duration_s),
                &opts.scrape,
            ))?;
            drop(d);
            eprintln!(
                "scrape: with / without {:.3} (range {:.3}-{:.3}), {:.0} s",
                r.median,
                r.min,
                r.max,
                t.elapsed().as_secs_f64()
            );
            report.scrape = Some(r);
        }
    }

    report.finish(started.elapsed().as_secs_f64());
    Ok(report)
}

/// Starts daemons with the benchmark's settings, each in a fresh directory.
pub struct Spawner<'a> {
    pub daemons: &'a [(Kind, PathBuf)],
    pub work: &'a Path,
    pub dbdir: &'a Path,
    pub settings: &'a Settings,
}

impl Spawner<'_> {
    /// A daemon of `kind` in `<work>/<name>-<kind>`, answering PING.
    pub async fn start_in(&self, kind: Kind, name: &str) -> Result<Daemon, String> {
        let program = self
            .daemons
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| format!("{} is not among the daemons to run", kind.name()))?;
        let dir = self.work.join(format!("{name}-{}", kind.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut d = Daemon::spawn(kind, &program, &dir, self.dbdir, self.settings)
            .map_err(|e| e.to_string())?;
        wait_pong(&mut d).await?;
        Ok(d)
    }
}

impl dirscan::Starter for Spawner<'_> {
    async fn start(&self, kind: Kind) -> Result<Daemon, String> {
        self.start_in(kind, "fresh").await
    }
}

/// The engine-only limit, with the settings clamsentry gets: the database
/// loaded in this process, every payload kind scanned on every core.
fn engine_limit(
    opts: &Options,
    dbdir: &Path,
    work: &Path,
    settings: &Settings,
    scenarios: &[Scenario],
    payloads: &BTreeMap<usize, Arc<Vec<u8>>>,
    counter: &Arc<AtomicU64>,
) -> Result<(f64, BTreeMap<String, EngineResult>), String> {
    let warmup = Duration::from_secs_f64(opts.warmup_s);
    let duration = Duration::from_secs_f64(opts.duration_s);
    let toml = daemons::clamsentry_toml(dbdir, &work.join("unused.sock"), settings);
    let config =
        clamsentry::config::Config::parse(&toml, "bench.toml").map_err(|e| e.to_string())?;
    eprintln!("engine-only: loading the database in-process ...");
    let t = Instant::now();
    let engine = clamsentry::engine::Engine::load(
        dbdir,
        &clamsentry::engine::EngineSettings::from_config(&config),
    )
    .map_err(|e| e.to_string())?;
    let engine_load_s = t.elapsed().as_secs_f64();
    let mut engine_results: BTreeMap<String, EngineResult> = BTreeMap::new();
    for sc in scenarios {
        let key = engine_key(sc);
        if engine_results.contains_key(&key) {
            continue;
        }
        eprintln!("engine-only: {key} on {} threads ...", nproc());
        let (w, d) = window(opts, sc);
        let r = engine_only::measure(
            &engine,
            &payloads[&sc.size],
            sc.identical,
            nproc(),
            counter,
            w,
            d,
        );
        engine_results.insert(key, r);
    }
    let single = engine_only::measure(
        &engine,
        &payloads[&(10 << 10)],
        opts.identical,
        1,
        counter,
        warmup,
        duration,
    );
    engine_results.insert("10KiB 1 thread".into(), single);
    Ok((engine_load_s, engine_results))
}

#[allow(clippy::too_many_arguments)]
async fn bench_daemon(
    kind: Kind,
    program: &Path,
    dir: &Path,
    dbdir: &Path,
    settings: &Settings,
    scenarios: &[Scenario],
    payloads: &BTreeMap<usize, Arc<Vec<u8>>>,
    counter: &Arc<AtomicU64>,
    opts: &Options,
    full: bool,
) -> Result<DaemonResult, String> {
    eprintln!("{}: starting ...", kind.name());
    let mut d = Daemon::spawn(kind, program, dir, dbdir, settings).map_err(|e| e.to_string())?;
    let mut out = DaemonResult {
        start_to_pong_s: wait_pong(&mut d).await?,
        ..DaemonResult::default()
    };
    eprintln!("{}: PONG after {:.2} s", kind.name(), out.start_to_pong_s);
    let far = || Instant::now() + Duration::from_secs(60);
    out.version = text(
        &command(&d.socket, b"zVERSION\0", far())
            .await
            .unwrap_or_default(),
    );
    // Correctness: a clean payload is OK, the control payload is FOUND.
    let clean = load::Request::new(&payloads[&(10 << 10)], opts.chunk);
    out.clean_reply = text(
        &load::request(&d.socket, &clean.bytes, far())
            .await
            .unwrap_or_default(),
    );
    let control = load::Request::new(&db::control_payload(), opts.chunk);
    out.found_reply = text(
        &load::request(&d.socket, &control.bytes, far())
            .await
            .unwrap_or_default(),
    );
    if out.clean_reply != "stream: OK"
        || out.found_reply != format!("stream: {}.UNOFFICIAL FOUND", db::CONTROL_NAME)
    {
        return Err(format!(
            "{} answered wrongly: clean {:?}, control {:?}",
            kind.name(),
            out.clean_reply,
            out.found_reply
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.rss_idle_kib = d.rss_kib();

    for sc in scenarios {
        eprintln!("{}: {} ...", kind.name(), sc.name);
        let (warmup, duration) = window(opts, sc);
        let r = load::run(
            &d,
            sc,
            &payloads[&sc.size],
            counter,
            opts.chunk,
            warmup,
            duration,
        )
        .await;
        eprintln!(
            "{}: {}: {:.0} scans/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            kind.name(),
            sc.name,
            r.scans_per_s,
            r.p50_ms,
            r.p99_ms,
            r.errors
        );
        out.scenarios.insert(sc.name.clone(), r);
    }
    if !full {
        d.stop(Duration::from_secs(10));
        return Ok(out);
    }
    tokio::time::sleep(settle(opts)).await;
    out.rss_after_load_kib = d.rss_kib();

    out.idle = idle_connections(&d, opts.idle_connections, settle(opts)).await;
    eprintln!(
        "{}: {} idle connections: {:+} KiB",
        kind.name(),
        out.idle.opened,
        out.idle.delta_kib
    );
    out.reload = reload(&d, dbdir, opts.chunk).await?;
    eprintln!(
        "{}: reload {:.2} s, peak memory (PSS) {} MiB",
        kind.name(),
        out.reload.reload_s,
        out.reload.peak_rss_kib >> 10
    );
    d.stop(Duration::from_secs(10));
    Ok(out)
}

/// Waits until a freshly spawned daemon answers PING (at most 600 s);
/// returns the seconds since it was spawned.
pub(crate) async fn wait_pong(d: &mut Daemon) -> Result<f64, String> {
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(Some(status)) = d.child.try_wait() {
            return Err(format!(
                "{} exited before answering PING ({status}):\n{}",
                d.kind.name(),
                d.log_tail()
            ));
        }
        if let Ok(r) = command(&d.socket, b"zPING\0", Instant::now()).await {
            if r == b"PONG\0" {
                return Ok(d.started.elapsed().as_secs_f64());
            }
        }
        if Instant::now() > limit {
            return Err(format!(
                "{} did not answer PING:\n{}",
                d.kind.name(),
                d.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .trim_end_matches(['\0', '\n'])
        .to_string()
}

pub(crate) async fn command(
    socket: &Path,
    cmd: &[u8],
    deadline: Instant,
) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(
        Duration::from_secs(60),
        load::request(socket, cmd, deadline),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// How long memory is left to settle before it is read.
fn settle(opts: &Options) -> Duration {
    Duration::from_millis(if opts.quick { 300 } else { 1000 })
}

async fn idle_connections(d: &Daemon, n: usize, settle: Duration) -> IdleResult {
    let mut out = IdleResult {
        requested: n,
        rss_before_kib: d.rss_kib(),
        ..IdleResult::default()
    };
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let c = tokio::time::timeout(
            Duration::from_secs(2),
            load::connect(&d.socket, Instant::now() + Duration::from_secs(2)),
        )
        .await;
        match c {
            Ok(Ok(c)) => conns.push(c),
            _ => break,
        }
    }
    out.opened = conns.len();
    tokio::time::sleep(2 * settle).await;
    out.rss_with_idle_kib = d.rss_kib();
    out.delta_kib = out.rss_with_idle_kib as i64 - out.rss_before_kib as i64;
    let t = Instant::now();
    // clamd stops accepting beyond MaxQueue: a PING then waits until the idle
    // connections time out. Give up after 5 x settle: 5 s (quick: 1.5 s).
    let wait = 5 * settle;
    out.ping_ms = match tokio::time::timeout(
        wait,
        load::request(&d.socket, b"zPING\0", Instant::now() + wait),
    )
    .await
    {
        Ok(Ok(r)) if r == b"PONG\0" => Some(t.elapsed().as_secs_f64() * 1000.0),
        _ => None,
    };
    drop(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    out
}

/// How often memory is sampled during reloads.
pub const RELOAD_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Adds a signature, sends RELOAD, and scans the payload it detects until
/// the daemon finds it: that answer comes from the new engine.
async fn reload(d: &Daemon, dbdir: &Path, chunk: usize) -> Result<ReloadResult, String> {
    let marker = db::reload_payload();
    std::fs::write(
        dbdir.join("reload.ndb"),
        db::ndb_line(db::RELOAD_NAME, &marker),
    )
    .map_err(|e| e.to_string())?;
    let req = load::Request::new(&marker, chunk);
    let want = format!("stream: {}.UNOFFICIAL FOUND", db::RELOAD_NAME);
    let mut out = ReloadResult {
        rss_before_kib: d.rss_kib(),
        ..ReloadResult::default()
    };
    // Every 250 ms on its own thread (see `daemons::Sampler`).
    let sampler = daemons::Sampler::start(d.pid(), RELOAD_SAMPLE_EVERY);
    let t = Instant::now();
    let limit = t + Duration::from_secs(600);
    out.reply = text(
        &command(&d.socket, b"zRELOAD\0", limit)
            .await
            .unwrap_or_default(),
    );
    loop {
        if let Ok(r) = load::request(&d.socket, &req.bytes, limit).await {
            if text(&r) == want {
                break;
            }
        }
        if Instant::now() > limit {
            return Err(format!("{} did not reload within 600 s", d.kind.name()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    out.reload_s = t.elapsed().as_secs_f64();
    // Until the old engine is gone (clamsentry: its processes exited).
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.peak_rss_kib = sampler.finish().pss_kib;
    out.rss_after_kib = d.rss_kib();
    Ok(out)
}

/// Raises the soft descriptor limit to the hard one: 1,000 idle connections
/// plus the load need more than the usual 1024, and the daemons inherit it.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
