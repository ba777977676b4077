//! The engine-only limit: the same payloads scanned in this process through
//! `clamsentry::engine::Engine::scan_bytes` on every core, no sockets. A
//! daemon cannot scan faster than this on the same machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clamsentry::engine::{Engine, Verdict};

use crate::{daemons, db};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineResult {
    pub threads: usize,
    pub scans: u64,
    pub scans_per_s: f64,
    pub mb_per_s: f64,
    /// Latency of one scan call.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// CPU used by other processes meanwhile, % of one core.
    pub other_cpu_pct: f64,
    /// CPU used by the scanning threads (this process), % of one core.
    pub cpu_pct: f64,
}

/// Scans `base` (stamped unique per scan unless `identical`) on `threads`
/// threads for `warmup + duration`, counting scans finished in `duration`.
pub fn measure(
    engine: &Engine,
    base: &Arc<Vec<u8>>,
    identical: bool,
    threads: usize,
    counter: &Arc<AtomicU64>,
    warmup: Duration,
    duration: Duration,
) -> EngineResult {
    let start = Instant::now();
    let from = start + warmup;
    let cpu = std::sync::Mutex::new((0.0f64, 0.0f64, 0.0f64, 0.0f64));
    let end = from + duration;
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let base = Arc::clone(base);
                let counter = Arc::clone(counter);
                s.spawn(move || {
                    let mut data = base.as_ref().clone();
                    if identical {
                        db::stamp(&mut data, u64::MAX);
                    }
                    let mut lat = Vec::with_capacity(4096);
                    let mut errors = 0u64;
                    loop {
                        if Instant::now() >= end {
                            break;
                        }
                        if !identical {
                            db::stamp(&mut data, counter.fetch_add(1, Ordering::Relaxed));
                        }
                        let t = Instant::now();
                        let v = engine.scan_bytes(&data, false);
                        let done = Instant::now();
                        if done >= from && done <= end {
                            if v == Verdict::Clean {
                                lat.push((done - t).as_micros().min(u32::MAX as u128) as u32);
                            } else {
                                errors += 1;
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let a = (daemons::self_cpu_s(), daemons::machine_busy_s());
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let b = (daemons::self_cpu_s(), daemons::machine_busy_s());
        if let Ok(mut c) = cpu.lock() {
            *c = (a.0, a.1, b.0, b.1);
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut lat: Vec<u32> = Vec::new();
    let mut errors = 0;
    for (l, e) in results {
        lat.extend(l);
        errors += e;
    }
    let (p50, p99, _) = crate::load::percentiles(&mut lat);
    let scans_per_s = lat.len() as f64 / duration.as_secs_f64();
    let (c0, m0, c1, m1) = cpu.into_inner().unwrap_or_default();
    let other_cpu_pct = ((m1 - m0) - (c1 - c0)).max(0.0) / duration.as_secs_f64() * 100.0;
    EngineResult {
        threads,
        scans: lat.len() as u64,
        scans_per_s,
        mb_per_s: scans_per_s * base.len() as f64 / 1e6,
        p50_ms: p50,
        p99_ms: p99,
        errors,
        other_cpu_pct,
        cpu_pct: (c1 - c0) / duration.as_secs_f64() * 100.0,
    }
}
