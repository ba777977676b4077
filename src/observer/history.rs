//! The last hour, from the snapshots: scans, detections and errors per
//! minute (deltas of the cumulative counters), the scan duration histogram
//! as it was an hour ago (so that the status page's percentiles cover the
//! last hour), and the last seconds of thread use (the agent's weight).
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use crate::ipc::observe::{DurationHistogram, ScanResult, Snapshot};

/// Minutes kept.
pub const MINUTES: usize = 60;
/// Seconds of thread use the agent's weight looks at.
pub const WINDOW_SECONDS: u64 = 10;

/// One minute's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Minute {
    /// Start of the minute, seconds since the epoch.
    pub t: u64,
    pub scans: u64,
    pub found: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    scans: u64,
    found: u64,
    errors: u64,
}

impl Totals {
    fn of(s: &Snapshot) -> Totals {
        let found = s.scans_by_result(ScanResult::Found);
        let errors = s.scans_by_result(ScanResult::Error);
        Totals {
            scans: crate::ipc::observe::saturating_sum([
                s.scans_by_result(ScanResult::Clean),
                found,
                errors,
            ]),
            found,
            errors,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct History {
    /// Closed minutes, oldest first, and the cumulative duration histogram
    /// at each one's start.
    minutes: VecDeque<(Minute, DurationHistogram)>,
    /// The minute in progress: its start and the totals then.
    current: Option<(u64, Totals, DurationHistogram)>,
    latest: Totals,
    latest_duration: DurationHistogram,
    /// (time in ms, busy thread-µs so far, threads) of recent snapshots.
    use_window: VecDeque<(u64, u64, u32)>,
}

impl History {
    /// Takes a snapshot in (its own clock says when).
    pub fn add(&mut self, s: &Snapshot) {
        let totals = Totals::of(s);
        let minute = (s.time_ms / 1000) / 60 * 60;
        match self.current {
            Some((start, base, hist)) if start != minute => {
                // A minute closed; a gap (no snapshot for a while) leaves
                // its minutes out rather than inventing them.
                let m = Minute {
                    t: start,
                    scans: totals.scans.saturating_sub(base.scans),
                    found: totals.found.saturating_sub(base.found),
                    errors: totals.errors.saturating_sub(base.errors),
                };
                self.minutes.push_back((m, hist));
                while self.minutes.len() > MINUTES - 1 {
                    self.minutes.pop_front();
                }
                self.current = Some((minute, totals, s.duration));
            }
            Some(_) => {}
            None => self.current = Some((minute, totals, s.duration)),
        }
        self.latest = totals;
        self.latest_duration = s.duration;
        self.use_window
            .push_back((s.time_ms, s.duration.sum, s.pool.threads));
        while self
            .use_window
            .front()
            .is_some_and(|(t, _, _)| s.time_ms.saturating_sub(*t) > WINDOW_SECONDS * 1000)
        {
            self.use_window.pop_front();
        }
    }

    /// The last hour by minute, oldest first, the current minute last.
    pub fn minutes(&self) -> Vec<Minute> {
        let mut out: Vec<Minute> = self.minutes.iter().map(|(m, _)| *m).collect();
        if let Some((start, base, _)) = self.current {
            out.push(Minute {
                t: start,
                scans: self.latest.scans.saturating_sub(base.scans),
                found: self.latest.found.saturating_sub(base.found),
                errors: self.latest.errors.saturating_sub(base.errors),
            });
        }
        out
    }

    /// Scan durations of the last hour (or since the observer started).
    pub fn last_hour(&self) -> DurationHistogram {
        let oldest = self
            .minutes
            .front()
            .map(|(_, h)| *h)
            .or(self.current.map(|(_, _, h)| h))
            .unwrap_or_default();
        self.latest_duration.since(&oldest)
    }

    /// Share of the scanning threads' time spent on requests over the
    /// window (from the duration histogram's sum, queue wait included);
    /// `None` before two snapshots a second apart.
    pub fn utilization(&self) -> Option<f64> {
        let (t0, b0, _) = *self.use_window.front()?;
        let (t1, b1, threads) = *self.use_window.back()?;
        let span_us = t1.saturating_sub(t0).saturating_mul(1000);
        if span_us < 1_000_000 || threads == 0 {
            return None;
        }
        Some(b1.saturating_sub(b0) as f64 / (span_us as f64 * f64::from(threads)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::observe::{ListenerCounts, ListenerStats, ScanCommand, DURATION_BOUNDS_US};

    fn snap(t_s: u64, clean: u64, found: u64, busy_us: u64) -> Snapshot {
        let mut l = ListenerCounts::new("tcp");
        l.scans[ScanCommand::Instream.index() * 3] = clean;
        l.scans[ScanCommand::Instream.index() * 3 + 1] = found;
        let mut s = Snapshot {
            time_ms: t_s * 1000,
            listeners: vec![ListenerStats {
                counts: l,
                open: 0,
                connections: [0; 4],
            }],
            ..Snapshot::default()
        };
        for _ in 0..(clean + found) {
            s.duration.observe(&DURATION_BOUNDS_US, 2_000);
        }
        s.duration.sum = busy_us;
        s.pool.threads = 2;
        s.normalise();
        s
    }

    #[test]
    fn minutes_are_deltas_of_the_counters() {
        let mut h = History::default();
        let base = 1_700_000_040; // 1_699_999_980 + 60: a minute boundary
        let m0 = base / 60 * 60;
        h.add(&snap(m0 + 5, 10, 1, 0));
        h.add(&snap(m0 + 30, 15, 2, 0));
        assert_eq!(
            h.minutes(),
            vec![Minute {
                t: m0,
                scans: 6,
                found: 1,
                errors: 0
            }]
        );
        h.add(&snap(m0 + 61, 20, 2, 0));
        h.add(&snap(m0 + 125, 21, 5, 0));
        let ms = h.minutes();
        assert_eq!(ms.len(), 3);
        assert_eq!((ms[0].t, ms[0].scans, ms[0].found), (m0, 11, 1));
        assert_eq!((ms[1].t, ms[1].scans, ms[1].found), (m0 + 60, 4, 3));
        assert_eq!((ms[2].t, ms[2].scans), (m0 + 120, 0), "just started");
        // The hour's histogram: everything since the oldest kept minute.
        assert_eq!(h.last_hour().count(), 26 - 11);
    }

    #[test]
    fn at_most_an_hour_is_kept() {
        let mut h = History::default();
        for i in 0..200u64 {
            h.add(&snap(1_700_000_000 + i * 60, i, 0, 0));
        }
        assert_eq!(h.minutes().len(), MINUTES);
    }

    #[test]
    fn utilization_over_the_window() {
        let mut h = History::default();
        h.add(&snap(100, 0, 0, 0));
        assert_eq!(h.utilization(), None);
        h.add(&snap(102, 0, 0, 2_000_000));
        // 2 s of busy thread time over 2 s of 2 threads.
        assert_eq!(h.utilization(), Some(0.5));
        h.add(&snap(120, 0, 0, 2_000_000));
        assert_eq!(h.utilization(), None, "older snapshots left the window");
    }
}
