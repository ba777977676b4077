//! `cargo run --release -p clamsentry-bench --bin haproxy-ratio -- [--rounds N]`
//!
//! One clamsentry node reached directly over TCP, and the same node behind
//! HAProxy 2.6 configured from `packaging/haproxy/clamsentry.cfg`
//! (`send-proxy-v2`, leastconn, the PING health check), on loopback: the
//! throughput of 10 KiB unique streams through the balancer as a share of
//! the direct throughput (issue 20's goal: at least 0.9). The two runs
//! alternate (direct, balanced, direct, …) so that a machine whose load
//! changes affects both; the report is the median ratio and its range.
//!
//! The daemon has a plain TCP port and a PROXY port (`listen.tcp-proxy`,
//! `proxy-from = 127.0.0.2`); HAProxy connects to the PROXY port from
//! 127.0.0.2 and is itself reached on a third port. A second HAProxy, the
//! same configuration without `send-proxy-v2`, forwards to the plain port:
//! the difference between the two is what reading PROXY headers costs,
//! the rest is HAProxy itself (on a 2-core machine it competes with the
//! scanning threads). Clients are the same closed loop in every run:
//! connect, `zINSTREAM` of a unique payload, `stream: OK`, again.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clamsentry_bench::{build_clamsentry, db, default_clamsentry, load::Request};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    name = "haproxy-ratio",
    about = "clamsentry behind HAProxy vs the same node reached directly"
)]
struct Cli {
    /// Pairs of runs (direct, then through HAProxy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Payload bytes per stream.
    #[arg(long, default_value_t = 10 << 10)]
    size: usize,
    /// MD5 signatures in the generated database.
    #[arg(long, default_value_t = 200_000)]
    hdb: u64,
    /// Body signatures in the generated database.
    #[arg(long, default_value_t = 5_000)]
    ndb: u64,
    /// limits.max-threads [default: nproc].
    #[arg(long)]
    threads: Option<u32>,
    /// The clamsentry binary [default: target/release/clamsentry, built first].
    #[arg(long)]
    clamsentry: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long, default_value = "bench-haproxy.json")]
    json: PathBuf,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The shipped configuration with this run's addresses; no agent (none
/// listens here), no syslog, no user switch.
fn haproxy_config(
    front: SocketAddr,
    server: SocketAddr,
    stats: &Path,
    proxy_protocol: bool,
) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/haproxy/clamsentry.cfg");
    let shipped = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::new();
    for line in shipped.lines() {
        let t = line.trim_start();
        if t.starts_with("log /dev/log") || t.starts_with("user ") || t.starts_with("group ") {
            continue;
        }
        if t.starts_with("stats socket ") {
            out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                stats.display()
            ));
        } else if t.starts_with("bind :3310") {
            out.push_str(&format!("    bind {front}\n"));
        } else if t.starts_with("server n1 ") {
            out.push_str(&format!("    server n1 {server} source 127.0.0.2\n"));
        } else if t.starts_with("server ") {
            continue;
        } else if t.starts_with("default-server ") {
            let mut words = Vec::new();
            let mut skip = 0;
            for w in t.split_whitespace() {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                match w {
                    "agent-check" => {}
                    "send-proxy-v2" | "check-send-proxy" if !proxy_protocol => {}
                    "agent-port" | "agent-inter" => skip = 1,
                    w => words.push(w),
                }
            }
            out.push_str(&format!("    {}\n", words.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// HAProxy's view of server n1 (`UP`, `DOWN`, …).
fn server_status(stats: &Path) -> String {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(stats) else {
        return String::new();
    };
    let _ = s.write_all(b"show stat\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[1] == "n1")
        .map(|f| f[17].to_string())
        .unwrap_or_default()
}

async fn one(addr: SocketAddr, req: &[u8]) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(req).await?;
    let mut reply = Vec::with_capacity(32);
    let mut buf = [0u8; 64];
    while !reply.contains(&0) {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply == b"stream: OK\0")
}

/// Scans per second of the closed loop against `addr`, and errors.
async fn measure(addr: SocketAddr, cli: &Cli, counter: &Arc<AtomicU64>) -> (f64, u64) {
    let base = Arc::new(db::payload(cli.size, 0xBA1A));
    let start = Instant::now() + Duration::from_secs_f64(cli.warmup);
    let end = start + Duration::from_secs_f64(cli.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cli.clients {
        let (base, counter, stop) = (Arc::clone(&base), Arc::clone(counter), Arc::clone(&stop));
        tasks.spawn(async move {
            let mut req = Request::new(&base, 65536);
            let (mut ok, mut err) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                req.stamp(counter.fetch_add(1, Ordering::Relaxed));
                let good = matches!(one(addr, &req.bytes).await, Ok(true));
                let now = Instant::now();
                if now >= start && now <= end {
                    if good {
                        ok += 1;
                    } else {
                        err += 1;
                    }
                }
            }
            (ok, err)
        });
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut err) = (0, 0);
    while let Some(Ok((o, e))) = tasks.join_next().await {
        ok += o;
        err += e;
    }
    (ok as f64 / cli.duration, err)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn main() -> Result<(), String> {
    let cli = Cli::parse();
    if Command::new("haproxy").arg("-v").output().is_err() {
        return Err("haproxy is not installed (apt-get install haproxy)".into());
    }
    let bin = match &cli.clamsentry {
        Some(p) => p.clone(),
        None => {
            build_clamsentry()?;
            default_clamsentry()
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("cs-bench-haproxy")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dbdir = dir.path().join("db");
    std::fs::create_dir(&dbdir).map_err(|e| e.to_string())?;
    db::generate(&dbdir, cli.hdb, cli.ndb, &[cli.size]).map_err(|e| e.to_string())?;
    let direct: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxied: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let threads = cli.threads.unwrap_or(clamsentry_bench::nproc() as u32);
    let config = dir.path().join("clamsentry.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\ndirectory = {db:?}\nself-check = 0\n\n\
             [listen]\nunix = \"\"\ntcp = [\"{direct}\"]\ntcp-proxy = [\"{proxied}\"]\n\
             proxy-from = [\"127.0.0.2/32\"]\ntcp-allow = [\"127.0.0.0/8\"]\n\n\
             [limits]\nmax-threads = {threads}\nmax-connections-per-client = 1024\n\n\
             [sandbox]\nuser = \"nobody\"\n\n[log]\nlevel = \"warn\"\n",
            db = dbdir.display().to_string(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(dir.path().join("clamsentry.log")).map_err(|e| e.to_string())?;
    let _daemon = Proc(
        Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?,
    );
    let plain_front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut balancers = Vec::new();
    for (name, front, server, proxy_protocol) in [
        ("proxy", front, proxied, true),
        ("plain", plain_front, direct, false),
    ] {
        let stats = dir.path().join(format!("haproxy-{name}.sock"));
        let hcfg = dir.path().join(format!("haproxy-{name}.cfg"));
        std::fs::write(
            &hcfg,
            haproxy_config(front, server, &stats, proxy_protocol)?,
        )
        .map_err(|e| e.to_string())?;
        balancers.push(Proc(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&hcfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        ));
        let deadline = Instant::now() + Duration::from_secs(300);
        while !server_status(&stats).starts_with("UP") {
            if Instant::now() > deadline {
                return Err(format!(
                    "HAProxy never saw the node UP; clamsentry's log: {}",
                    std::fs::read_to_string(dir.path().join("clamsentry.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let counter = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::new();
    let (mut ratios, mut plain_ratios) = (Vec::new(), Vec::new());
    for round in 0..cli.rounds {
        // direct, PROXY, plain; then the other way round, so that a load
        // change on the machine does not always hit the same run.
        let order: [(SocketAddr, usize); 3] = if round % 2 == 0 {
            [(direct, 0), (front, 1), (plain_front, 2)]
        } else {
            [(plain_front, 2), (front, 1), (direct, 0)]
        };
        let mut rate = [0.0f64; 3];
        for (addr, i) in order {
            let (r, errors) = rt.block_on(measure(addr, &cli, &counter));
            if errors > 0 {
                return Err(format!("{errors} requests failed in round {}", round + 1));
            }
            rate[i] = r;
        }
        let (d, h, p) = (rate[0], rate[1], rate[2]);
        let ratio = h / d.max(1e-9);
        let plain = p / d.max(1e-9);
        eprintln!(
            "round {}: direct {d:.0}/s, HAProxy with PROXY v2 {h:.0}/s ({ratio:.3}), HAProxy plain {p:.0}/s ({plain:.3})",
            round + 1
        );
        ratios.push(ratio);
        plain_ratios.push(plain);
        rows.push(serde_json::json!({
            "direct_per_s": d, "haproxy_proxy_v2_per_s": h, "haproxy_plain_per_s": p,
            "ratio": ratio, "plain_ratio": plain,
        }));
    }
    let range = |v: &[f64]| {
        v.iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)))
    };
    let (lo, hi) = range(&ratios);
    let (plo, phi) = range(&plain_ratios);
    let (med, pmed) = (median(&ratios), median(&plain_ratios));
    println!(
        "| 10 KiB unique x{} through HAProxy (send-proxy-v2) / direct | {med:.2}x ({lo:.2}-{hi:.2}) | ≥ 0.9x, {} |",
        cli.clients,
        if med >= 0.9 { "met" } else { "not met" }
    );
    println!(
        "| the same through HAProxy without PROXY headers / direct | {pmed:.2}x ({plo:.2}-{phi:.2}) | (what HAProxy alone costs) |"
    );
    let json = serde_json::json!({
        "clients": cli.clients, "size": cli.size, "duration_s": cli.duration,
        "rounds": rows, "median_ratio": med, "min_ratio": lo, "max_ratio": hi,
        "median_plain_ratio": pmed, "min_plain_ratio": plo, "max_plain_ratio": phi,
        "hdb": cli.hdb, "ndb": cli.ndb, "threads": threads,
    });
    std::fs::write(&cli.json, serde_json::to_string_pretty(&json).unwrap())
        .map_err(|e| e.to_string())?;
    Ok(())
}
