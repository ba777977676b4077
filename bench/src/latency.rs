//! Tail latency and throughput of small unique streams (10 KiB) at 16 and
//! at 256 clients, in rounds that alternate which daemon goes first, each
//! daemon started fresh for its round. Reported per scenario: throughput,
//! p50/p99 and the daemon's CPU per scan (every process, from /proc), and
//! the ratios clamsentry / clamd as the median and range over the rounds
//! (round r of one daemon against round r of the other).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::daemons::Kind;
use crate::load::{self, LoadResult, Scenario};
use crate::{Options, Spawner};

/// The scenarios of this part.
pub fn scenarios() -> Vec<Scenario> {
    [16, 256]
        .into_iter()
        .map(|clients| Scenario {
            name: format!("10KiB x{clients}"),
            size: 10 << 10,
            clients,
            identical: false,
        })
        .collect()
}

/// One scenario of one round on one daemon.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencyRun {
    pub round: usize,
    pub daemon: String,
    pub scenario: String,
    pub result: LoadResult,
    /// CPU of the whole daemon per completed scan, ms.
    pub cpu_ms_per_scan: f64,
}

/// A ratio clamsentry / clamd over the rounds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Ratio {
    pub ratios: Vec<f64>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Ratio {
    fn of(pairs: &[(f64, f64)]) -> Ratio {
        let ratios: Vec<f64> = pairs
            .iter()
            .filter(|(a, _)| *a > 0.0)
            .map(|(a, b)| b / a)
            .collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => None,
            n if n % 2 == 1 => Some(sorted[n / 2]),
            n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        };
        Ratio {
            median,
            min: sorted.first().copied(),
            max: sorted.last().copied(),
            ratios,
        }
    }
}

/// One scenario over every round.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencySummary {
    pub scenario: String,
    pub clients: usize,
    pub throughput: Ratio,
    pub p99: Ratio,
    pub cpu_per_scan: Ratio,
    /// Medians of each daemon over the rounds.
    pub clamd_scans_per_s: Option<f64>,
    pub clamsentry_scans_per_s: Option<f64>,
    pub clamd_p99_ms: Option<f64>,
    pub clamsentry_p99_ms: Option<f64>,
    pub clamd_cpu_ms_per_scan: Option<f64>,
    pub clamsentry_cpu_ms_per_scan: Option<f64>,
    /// The machine's load average at the start of each round.
    pub loadavg: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencyResult {
    pub rounds: usize,
    pub runs: Vec<LatencyRun>,
    pub summaries: Vec<LatencySummary>,
}

fn median(v: &[f64]) -> Option<f64> {
    Ratio::of(&v.iter().map(|x| (1.0, *x)).collect::<Vec<_>>()).median
}

/// Every round: each daemon started fresh, both scenarios, stopped.
pub async fn run(
    starter: &Spawner<'_>,
    daemons: &[(Kind, std::path::PathBuf)],
    payload: &Arc<Vec<u8>>,
    counter: &Arc<AtomicU64>,
    opts: &Options,
) -> Result<LatencyResult, String> {
    let rounds = opts.latency_rounds.max(1);
    let mut out = LatencyResult {
        rounds,
        ..LatencyResult::default()
    };
    let warmup = Duration::from_secs_f64(opts.warmup_s);
    let duration = Duration::from_secs_f64(opts.duration_s);
    let mut loads = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<Kind> = daemons.iter().map(|(k, _)| *k).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        loads.push(
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
        );
        for kind in order {
            let mut d = starter.start_in(kind, "latency").await?;
            for sc in scenarios() {
                eprintln!(
                    "latency: round {} of {rounds}, {}: {} ...",
                    round + 1,
                    kind.name(),
                    sc.name
                );
                let r = load::run(&d, &sc, payload, counter, opts.chunk, warmup, duration).await;
                let cpu_ms_per_scan = if r.scans > 0 {
                    r.daemon_cpu_pct / 100.0 * r.seconds / r.scans as f64 * 1000.0
                } else {
                    0.0
                };
                eprintln!(
                    "latency: {}: {}: {:.0} scans/s, p50 {:.2} ms, p99 {:.2} ms, {:.3} ms CPU per scan, {} errors",
                    kind.name(),
                    sc.name,
                    r.scans_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    cpu_ms_per_scan,
                    r.errors
                );
                out.runs.push(LatencyRun {
                    round,
                    daemon: kind.name().into(),
                    scenario: sc.name.clone(),
                    result: r,
                    cpu_ms_per_scan,
                });
            }
            d.stop(Duration::from_secs(10));
        }
    }
    for sc in scenarios() {
        let of = |daemon: &str, round: usize| {
            out.runs
                .iter()
                .find(|r| r.daemon == daemon && r.scenario == sc.name && r.round == round)
        };
        let pairs = |f: fn(&LatencyRun) -> f64| -> Vec<(f64, f64)> {
            (0..rounds)
                .filter_map(|r| Some((f(of("clamd", r)?), f(of("clamsentry", r)?))))
                .collect()
        };
        let each = |daemon: &str, f: fn(&LatencyRun) -> f64| {
            median(
                &out.runs
                    .iter()
                    .filter(|r| r.daemon == daemon && r.scenario == sc.name)
                    .map(f)
                    .collect::<Vec<f64>>(),
            )
        };
        out.summaries.push(LatencySummary {
            scenario: sc.name.clone(),
            clients: sc.clients,
            throughput: Ratio::of(&pairs(|r| r.result.scans_per_s)),
            p99: Ratio::of(&pairs(|r| r.result.p99_ms)),
            cpu_per_scan: Ratio::of(&pairs(|r| r.cpu_ms_per_scan)),
            clamd_scans_per_s: each("clamd", |r| r.result.scans_per_s),
            clamsentry_scans_per_s: each("clamsentry", |r| r.result.scans_per_s),
            clamd_p99_ms: each("clamd", |r| r.result.p99_ms),
            clamsentry_p99_ms: each("clamsentry", |r| r.result.p99_ms),
            clamd_cpu_ms_per_scan: each("clamd", |r| r.cpu_ms_per_scan),
            clamsentry_cpu_ms_per_scan: each("clamsentry", |r| r.cpu_ms_per_scan),
            loadavg: loads.clone(),
        });
    }
    Ok(out)
}
