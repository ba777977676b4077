//! Is this worker's scan pool alive? The answer goes to the supervisor with
//! every pong: a wedged worker is replaced, and systemd's `WATCHDOG=1` is
//! sent while some worker is healthy.
//!
//! A tiny probe job goes through the scan pool; the pool is healthy while
//! something moves: the probe completes, or what the scanning threads are
//! doing changes (a walk moving to the next file, a scan finishing). A busy
//! pool whose threads are all on long scans still moves at least once per
//! `scan.max-scan-time`, so the stall limit is that plus a margin. A pool
//! that shows no movement for longer is wedged.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::pool::{ScanPool, Task};

/// Added to `scan.max-scan-time` before a pool without movement counts as
/// wedged.
pub const STALL_MARGIN: Duration = Duration::from_secs(30);

/// Stall limit when `scan.max-scan-time` is 0 (no limit): a single scan may
/// then legitimately run long, so only a pool still for this long is wedged.
pub const UNLIMITED_SCAN_STALL: Duration = Duration::from_secs(600);

/// Added to `scan.max-scan-time` before a libclamav call that has not
/// returned is written off (libclamav checks its limit often, but not on
/// every path: a scan a little past it is normal, one this far past has
/// found a path without checks).
pub const OVERRUN_GRACE: Duration = Duration::from_secs(5);

/// How long one libclamav call may run before it is written off; `None`
/// when `scan.max-scan-time` is 0 (no limit).
pub fn overrun_limit(max_scan_time_ms: u32) -> Option<Duration> {
    (max_scan_time_ms != 0)
        .then(|| Duration::from_millis(u64::from(max_scan_time_ms)) + OVERRUN_GRACE)
}

/// How long a worker that retires after an overrun still finishes its
/// other requests before it exits: every scan in flight has by then ended
/// or been written off itself.
pub fn overrun_exit_after(max_scan_time_ms: u32) -> Duration {
    overrun_limit(max_scan_time_ms).unwrap_or(UNLIMITED_SCAN_STALL) + STALL_MARGIN
}

/// How long the pool may show no movement before it counts as wedged.
pub fn stall_limit(max_scan_time_ms: u32) -> Duration {
    if max_scan_time_ms == 0 {
        UNLIMITED_SCAN_STALL
    } else {
        Duration::from_millis(u64::from(max_scan_time_ms)) + STALL_MARGIN
    }
}

/// Tracks the pool's movement between checks.
pub struct PoolHealth {
    stall_limit: Duration,
    last_progress: Instant,
    last_view: Vec<(&'static str, Instant, String)>,
    probe: Option<oneshot::Receiver<()>>,
}

impl PoolHealth {
    pub fn new(stall_limit: Duration, now: Instant) -> PoolHealth {
        PoolHealth {
            stall_limit,
            last_progress: now,
            last_view: Vec::new(),
            probe: None,
        }
    }

    /// Looks at the pool at time `now`; true while it is not wedged.
    pub fn check(&mut self, pool: &ScanPool, now: Instant) -> bool {
        if let Some(probe) = self.probe.as_mut() {
            match probe.try_recv() {
                Ok(()) => {
                    self.last_progress = now;
                    self.probe = None;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                // The job was dropped unrun (pool closing): send another.
                Err(oneshot::error::TryRecvError::Closed) => self.probe = None,
            }
        }
        // A scan written off for its time limit is its client's loss, not
        // a wedge: the worker answered it and retires; what counts is that
        // the rest of the pool moves while it finishes the others.
        let view: Vec<_> = pool
            .snapshot()
            .tasks
            .into_iter()
            .filter(|t| !t.written_off)
            .map(key)
            .collect();
        if view != self.last_view {
            self.last_progress = now;
            self.last_view = view;
        }
        if self.probe.is_none() {
            let (tx, rx) = oneshot::channel();
            // A full queue refuses the probe; movement of the running
            // tasks still counts, and the next check tries again.
            if pool
                .submit_own(Box::new(move |_| {
                    let _ = tx.send(());
                }))
                .is_ok()
            {
                self.probe = Some(rx);
            }
        }
        now.saturating_duration_since(self.last_progress) <= self.stall_limit
    }
}

fn key(t: Task) -> (&'static str, Instant, String) {
    (t.command, t.started, t.filename)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn stall_limit_follows_max_scan_time() {
        assert_eq!(stall_limit(120_000), Duration::from_secs(150));
        assert_eq!(stall_limit(0), UNLIMITED_SCAN_STALL);
        assert_eq!(overrun_limit(3000), Some(Duration::from_secs(8)));
        assert_eq!(overrun_limit(0), None);
        assert!(
            overrun_limit(120_000).unwrap() < stall_limit(120_000),
            "a stuck scan is written off before the pool counts as wedged"
        );
    }

    #[test]
    fn idle_pool_is_healthy_and_wedged_pool_is_not() {
        let pool = ScanPool::new(1, 0, 4).unwrap();
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        let mut health = PoolHealth::new(limit, t0);
        assert!(health.check(&pool, t0));
        // The probe answers: wait for it (no timing assumption).
        let mut t = t0;
        while health.last_progress == t0 {
            std::thread::sleep(Duration::from_millis(5));
            t += Duration::from_millis(1);
            assert!(health.check(&pool, t));
        }
        assert_eq!(health.last_progress, t, "the answered probe is progress");

        // Wedge the only thread.
        let (started_tx, started_rx) = mpsc::channel();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        pool.submit_own(Box::new(move |slot| {
            slot.begin("INSTREAM", b"");
            started_tx.send(()).unwrap();
            let _ = gate_rx.recv();
        }))
        .unwrap();
        started_rx.recv().unwrap();
        let t1 = t + Duration::from_secs(1);
        assert!(health.check(&pool, t1), "a new task is movement");
        assert!(health.check(&pool, t1 + limit), "within the stall limit");
        assert!(
            !health.check(&pool, t1 + limit + Duration::from_secs(1)),
            "no movement beyond the limit: wedged"
        );
        gate_tx.send(()).unwrap();
    }
}
