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
    opts.only = cli.only;
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
    println!("{}", report.table_markdown());
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
