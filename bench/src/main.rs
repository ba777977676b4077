//! `cargo run --release -p clamsentry-bench -- [--quick] [--json results.json]`
//!
//! Benchmarks clamd 1.4.6 and clamsentry side by side; see docs/benchmark.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clamsentry_bench::{build_clamsentry, run, Options};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "clamsentry-bench",
    about = "clamsentry vs clamd 1.4.6, same engine, same database, same load"
)]
struct Cli {
    /// Small database and 1 s windows (finishes in well under a minute).
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// MD5 (.hdb) signatures to generate [default: 2000000; quick: 20000].
    #[arg(long)]
    hdb: Option<u64>,
    /// Body (.ndb) signatures to generate [default: 50000; quick: 1000].
    #[arg(long)]
    ndb: Option<u64>,
    /// Seconds measured per scenario [default: 8; quick: 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of load before measuring [default: 1; quick: 0.3].
    #[arg(long)]
    warmup: Option<f64>,
    /// Scanning threads of both daemons (MaxThreads / limits.max-threads) [default: nproc].
    #[arg(long)]
    threads: Option<u32>,
    /// INSTREAM chunk size sent by the clients, bytes.
    #[arg(long, default_value_t = 65536)]
    chunk: usize,
    /// Idle connections to open for the idle-memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Send identical payloads in every scenario (measures the engine cache).
    #[arg(long)]
    identical: bool,
    /// The clamd binary.
    #[arg(long, default_value = "/usr/sbin/clamd")]
    clamd: PathBuf,
    /// The clamsentry binary [default: target/release/clamsentry, built first].
    #[arg(long)]
    clamsentry: Option<PathBuf>,
    /// Temporary directory for both daemons and the engine-only run
    /// [default: a new directory on tmpfs under /dev/shm].
    #[arg(long)]
    tmpdir: Option<PathBuf>,
    /// Run only this scenario (repeatable), e.g. --scenario "10KiB x16".
    #[arg(long = "scenario")]
    only: Vec<String>,
    /// Keep the database and daemon files here instead of a temporary directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Scheduling priority (nice value, e.g. -10 as root) for the benchmark,
    /// the daemons it starts and the engine-only threads; on a machine shared
    /// with other work this keeps the measurement from being starved.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Daemons to run, in this order (clamd, clamsentry; "none": engine only).
    #[arg(long, value_delimiter = ',', default_value = "clamd,clamsentry")]
    daemons: Vec<String>,
    /// Run only these parts (repeatable or comma-separated): throughput,
    /// crash, workers, reloads, dirscan, latency, cancel, scrape [default: all; only
    /// throughput when --scenario is given].
    #[arg(long = "part", value_delimiter = ',')]
    parts: Vec<String>,
    /// Run each throughput scenario N times per daemon, the daemons
    /// alternating, and report the median and range of the ratios.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// crash: worker kills per signal (SIGSEGV, SIGKILL) [default: 20; quick: 2].
    #[arg(long)]
    kills: Option<usize>,
    /// crash: clamd kills (and restarts) per signal [default: 2; quick: 1].
    #[arg(long)]
    clamd_kills: Option<usize>,
    /// workers: limits.workers values to compare [default: 1,2,8].
    #[arg(long, value_delimiter = ',')]
    workers: Vec<u32>,
    /// reloads: RELOADs in a row under load [default: 10; quick: 2].
    #[arg(long)]
    reloads: Option<usize>,
    /// dirscan: empty files in the first directory [default: 100000; quick: 10000].
    #[arg(long)]
    dir_entries: Option<usize>,
    /// dirscan: small files in the second directory (0: skip) [default: 20000; quick: 2000].
    #[arg(long)]
    dir_files: Option<usize>,
    /// dirscan: one-byte files for CONTSCAN and MULTISCAN (0: skip) [default: 100000; quick: 10000].
    #[arg(long)]
    dir_one_byte: Option<usize>,
    /// dirscan: the real tree scanned first by fresh daemons, then again
    /// (comma-separated; "none": skip) [default: /usr/share/doc,/usr/lib/python3,/usr/share/perl5; quick: /usr/share/perl5].
    #[arg(long, value_delimiter = ',')]
    dir_system: Vec<PathBuf>,
    /// dirscan: runs of each workload per daemon [default: 3; quick: 1].
    #[arg(long)]
    dir_runs: Option<usize>,
    /// latency: alternating rounds, each daemon started fresh [default: 5; quick: 1].
    #[arg(long)]
    latency_rounds: Option<usize>,
    /// cancel: disconnects of each kind per daemon [default: 3; quick: 1].
    #[arg(long)]
    cancel_runs: Option<usize>,
    /// clamsentry's log.level (debug logs each connection with its worker).
    #[arg(long, default_value = "info")]
    clamsentry_log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut opts = if cli.quick {
        Options::quick()
    } else {
        Options::full()
    };
    if let Some(v) = cli.hdb {
        opts.hdb = v;
    }
    if let Some(v) = cli.ndb {
        opts.ndb = v;
    }
    if let Some(v) = cli.duration {
        opts.duration_s = v;
    }
    if let Some(v) = cli.warmup {
        opts.warmup_s = v;
    }
    if let Some(v) = cli.threads {
        opts.threads = v.max(1);
    }
    opts.chunk = cli.chunk.max(8);
    opts.idle_connections = cli.idle_connections;
    opts.identical = cli.identical;
    opts.clamd = cli.clamd;
    opts.workdir = cli.workdir;
    opts.tmpdir = cli.tmpdir;
    opts.parts = cli.parts.into_iter().filter(|p| !p.is_empty()).collect();
    if let Some(p) = opts
        .parts
        .iter()
        .find(|p| !clamsentry_bench::PARTS.contains(&p.as_str()))
    {
        eprintln!(
            "clamsentry-bench: unknown part {p:?}: use {}",
            clamsentry_bench::PARTS.join(", ")
        );
        return ExitCode::from(2);
    }
    if opts.parts.is_empty() && !cli.only.is_empty() {
        opts.parts = vec!["throughput".into()];
    }
    opts.only = cli.only;
    opts.repeat = cli.repeat.max(1);
    opts.clamsentry_log = cli.clamsentry_log;
    if let Some(v) = cli.kills {
        opts.crash.kills = v;
    }
    if let Some(v) = cli.clamd_kills {
        opts.crash.clamd_kills = v;
    }
    if !cli.workers.is_empty() {
        opts.memory.worker_counts = cli.workers;
    }
    if let Some(v) = cli.reloads {
        opts.memory.reloads = v;
    }
    if let Some(v) = cli.dir_entries {
        opts.dir.entries = v;
    }
    if let Some(v) = cli.dir_files {
        opts.dir.files = v;
    }
    if let Some(v) = cli.dir_runs {
        opts.dir.runs = v.max(1);
    }
    if let Some(v) = cli.dir_one_byte {
        opts.dir.one_byte = v;
    }
    if !cli.dir_system.is_empty() {
        opts.dir.system = cli
            .dir_system
            .into_iter()
            .filter(|p| p.as_os_str() != "none" && !p.as_os_str().is_empty())
            .collect();
    }
    if let Some(v) = cli.latency_rounds {
        opts.latency_rounds = v.max(1);
    }
    if let Some(v) = cli.cancel_runs {
        opts.cancel.runs = v.max(1);
    }
    opts.daemons = cli
        .daemons
        .into_iter()
        .filter(|d| !d.is_empty() && d != "none")
        .collect();
    if let Some(n) = cli.nice {
        set_nice(n);
    }
    match cli.clamsentry {
        Some(p) => opts.clamsentry = p,
        None if opts.daemons.iter().any(|d| d == "clamsentry") => {
            if let Err(e) = build_clamsentry() {
                eprintln!("clamsentry-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
        None => {}
    }
    clamsentry_bench::raise_fd_limit();
    let report = match run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clamsentry-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.summary());
    if !report.table.is_empty() {
        println!("{}", report.table_markdown());
    }
    if !report.spread.is_empty() {
        println!("{}", report.spread_markdown());
    }
    print!("{}", report.parts_markdown());
    println!("{}", report.targets_markdown());
    if let Err(e) = report.write_json(&cli.json) {
        eprintln!("clamsentry-bench: {e}");
        return ExitCode::FAILURE;
    }
    println!("results written to {}", cli.json.display());
    ExitCode::SUCCESS
}

/// Sets this process's nice value before any thread or child exists, so
/// that every thread and both daemons inherit it. With autogroup scheduling
/// (Linux' default for desktop and VM kernels) a nice value only counts
/// inside its session's group, so the benchmark first starts its own session
/// and gives that group the same nice value.
fn set_nice(n: i32) {
    // SAFETY: setsid and setpriority take no pointers; setsid fails harmlessly
    // when this process already leads a process group.
    let rc = unsafe {
        libc::setsid();
        libc::setpriority(libc::PRIO_PROCESS, 0, n)
    };
    if rc != 0 {
        eprintln!(
            "clamsentry-bench: cannot set nice {n}: {}",
            std::io::Error::last_os_error()
        );
    }
    if std::path::Path::new("/proc/self/autogroup").exists() {
        if let Err(e) = std::fs::write("/proc/self/autogroup", n.to_string()) {
            eprintln!("clamsentry-bench: cannot set the autogroup nice to {n}: {e}");
        }
    }
}
