//! The cost of being observed: clamsentry's throughput of 10 KiB INSTREAM
//! scans with its metrics scraped once a second, against the same daemon
//! with nobody scraping, in alternating runs (off, on, on, off, …), each
//! round giving one ratio; the report shows their median and range.
//!
//! One daemon serves every run, with its metrics listener on a free
//! loopback port (the observer always runs: the self-test is on by
//! default), so the two arms differ only in the scrapes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemons::Daemon;
use crate::load::{self, Scenario};

/// What the part is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScrapeOptions {
    /// Pairs of runs (one with scraping, one without).
    pub rounds: usize,
    pub clients: usize,
    pub size: usize,
    /// Seconds between scrapes in the scraping arm.
    pub every_s: f64,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScrapeRun {
    pub round: usize,
    pub scraping: bool,
    pub scans_per_s: f64,
    pub errors: u64,
    pub scrapes: u64,
    pub scrape_failures: u64,
    /// Other processes' CPU during the run (% of one core): how busy the
    /// machine was.
    pub other_cpu_pct: f64,
}

/// The part's result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrapeResult {
    pub options: Option<ScrapeOptions>,
    pub runs: Vec<ScrapeRun>,
    /// Per round: throughput with scraping / without.
    pub ratios: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Bytes of one Prometheus-format scrape.
    pub scrape_bytes: u64,
}

/// `GET /metrics`, the whole answer; its size, or an error.
async fn scrape_once(addr: SocketAddr) -> std::io::Result<usize> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    if !out.starts_with(b"HTTP/1.1 200 ") {
        return Err(std::io::Error::other("not 200"));
    }
    Ok(out.len())
}

/// Runs the rounds against `d`, whose metrics listener is `metrics`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    d: &Daemon,
    metrics: SocketAddr,
    payload: &Arc<Vec<u8>>,
    counter: &Arc<AtomicU64>,
    chunk: usize,
    warmup: Duration,
    duration: Duration,
    opts: &ScrapeOptions,
) -> Result<ScrapeResult, String> {
    let scenario = Scenario {
        name: format!("{} KiB x{}", opts.size >> 10, opts.clients),
        size: opts.size,
        clients: opts.clients,
        identical: false,
    };
    // The observer has its first snapshot.
    let mut scrape_bytes = 0;
    for _ in 0..100 {
        if let Ok(n) = scrape_once(metrics).await {
            scrape_bytes = n as u64;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if scrape_bytes == 0 {
        return Err(format!("no metrics from {metrics}"));
    }
    let mut out = ScrapeResult {
        options: Some(opts.clone()),
        scrape_bytes,
        ..ScrapeResult::default()
    };
    for round in 0..opts.rounds {
        let arms = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut pair = [0.0f64; 2];
        for scraping in arms {
            let stop = Arc::new(AtomicBool::new(false));
            let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let scraper = scraping.then(|| {
                let (stop, done, failed) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failed));
                let every = Duration::from_secs_f64(opts.every_s);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        match scrape_once(metrics).await {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            });
            eprintln!(
                "scrape: round {} of {}, scraping {} ...",
                round + 1,
                opts.rounds,
                if scraping { "on" } else { "off" }
            );
            let r = load::run(d, &scenario, payload, counter, chunk, warmup, duration).await;
            stop.store(true, Ordering::Relaxed);
            if let Some(s) = scraper {
                let _ = s.await;
            }
            pair[usize::from(scraping)] = r.scans_per_s;
            out.runs.push(ScrapeRun {
                round,
                scraping,
                scans_per_s: r.scans_per_s,
                errors: r.errors,
                scrapes: done.load(Ordering::Relaxed),
                scrape_failures: failed.load(Ordering::Relaxed),
                other_cpu_pct: r.other_cpu_pct,
            });
        }
        if pair[0] > 0.0 {
            out.ratios.push(pair[1] / pair[0]);
        }
    }
    let mut sorted = out.ratios.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if let (Some(min), Some(max)) = (sorted.first(), sorted.last()) {
        out.min = *min;
        out.max = *max;
        let n = sorted.len();
        out.median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
    }
    Ok(out)
}

impl ScrapeResult {
    /// The part's table.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = self.options.as_ref();
        let _ = writeln!(
            s,
            "Cost of scraping (clamsentry, {} KiB INSTREAM x {} clients; /metrics every {} s, {} bytes, vs no scraping; alternating runs)\n",
            o.map_or(0, |o| o.size >> 10),
            o.map_or(0, |o| o.clients),
            o.map_or(0.0, |o| o.every_s),
            self.scrape_bytes
        );
        let _ = writeln!(
            s,
            "| round | scraping | scans/s | scrapes (failed) | errors | other CPU % |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|");
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} ({}) | {} | {:.0} |",
                r.round + 1,
                if r.scraping { "on" } else { "off" },
                r.scans_per_s,
                r.scrapes,
                r.scrape_failures,
                r.errors,
                r.other_cpu_pct
            );
        }
        let _ = writeln!(
            s,
            "\nthroughput with / without scraping: median {:.3} (range {:.3}-{:.3} over {} rounds)\n",
            self.median,
            self.min,
            self.max,
            self.ratios.len()
        );
        s
    }
}
