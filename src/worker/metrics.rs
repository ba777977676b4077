//! What a worker counts for the metrics: scans by command, listener and
//! result, their duration and size, detections by category (and, opt-in,
//! by full name), limits hit, errors by reason, commands by policy outcome.
//!
//! The scan code calls [`Collector`] with one line where it already logs a
//! result; the control loop turns it into a [`WorkerCounters`] message (at
//! most about once a second when something changed, and once more before a
//! draining worker exits). Everything is cumulative since the worker
//! started; label values come from closed enums, except listener names
//! (from the supervisor, at most [`MAX_LISTENERS`]) and the opt-in list of
//! signature names (at most [`MAX_NAMES`] tracked, the most frequent sent).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::pool::PoolSnapshot;
use crate::engine::{ScanErrorKind, Verdict};
use crate::ipc::observe::command_index;
use crate::ipc::observe::{
    printable, top_names, Category, CommandOutcome, ErrorReason, Limit, ListenerCounts, PoolNow,
    ProcUsage, ScanCommand, ScanResult, WorkerCounters, COMMANDS, DURATION_BOUNDS_US,
    MAX_LISTENERS, MAX_TOP, MAX_TOP_NAME, OTHER_LISTENER, SIZE_BOUNDS,
};
use crate::policy::Decision;
use crate::proto::CommandKind;

/// Distinct signature names a worker counts by name (with
/// `metrics.top-detections` > 0); names beyond count only by category.
pub const MAX_NAMES: usize = 1024;

/// The worker's counts. Shared by the I/O thread and the scan threads.
pub struct Collector {
    inner: Mutex<Counts>,
    /// Entries of the by-name list sent (0: names are not counted).
    top: usize,
    changed: AtomicBool,
}

struct Counts {
    c: WorkerCounters,
    names: HashMap<String, u64>,
}

impl Collector {
    /// `top`: `metrics.top-detections`.
    pub fn new(top: usize) -> Collector {
        Collector {
            inner: Mutex::new(Counts {
                c: WorkerCounters::empty(),
                names: HashMap::new(),
            }),
            top: top.min(MAX_TOP),
            changed: AtomicBool::new(false),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Counts)) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// One object scanned (a stream, a descriptor, one file of a walk):
    /// `duration` from its submission to the scan pool to its verdict.
    pub fn scan(
        &self,
        listener: &str,
        command: &str,
        verdict: &Verdict,
        bytes: u64,
        duration: Duration,
    ) {
        let command = scan_command(command);
        let result = match verdict {
            Verdict::Clean => ScanResult::Clean,
            Verdict::Found(_) => ScanResult::Found,
            Verdict::Error { .. } => ScanResult::Error,
            // Its client left: no result (STATS counts it as abandoned).
            Verdict::Abandoned => return,
        };
        let top = self.top;
        self.with(|k| {
            let l = listener_entry(&mut k.c.listeners, listener);
            let i = command.index() * ScanResult::COUNT + result.index();
            l.scans[i] = l.scans[i].saturating_add(1);
            let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            k.c.duration.observe(&DURATION_BOUNDS_US, us);
            k.c.size.observe(&SIZE_BOUNDS, bytes);
            match verdict {
                Verdict::Found(names) => {
                    for name in names {
                        bump(&mut k.c.detections, Category::of(name).index());
                        if let Some(limit) = heuristic_limit(name) {
                            bump(&mut k.c.limits, limit.index());
                        }
                        if top > 0 {
                            count_name(&mut k.names, name);
                        }
                    }
                }
                Verdict::Error { .. } => {
                    let (reason, limit) = error_of(verdict);
                    bump(&mut k.c.errors, reason.index());
                    if let Some(limit) = limit {
                        bump(&mut k.c.limits, limit.index());
                    }
                }
                Verdict::Clean | Verdict::Abandoned => {}
            }
        });
    }

    /// A command and what the listener's policy decided about it.
    pub fn command(&self, listener: &str, kind: CommandKind, decision: Decision) {
        let outcome = match decision {
            Decision::Allow => CommandOutcome::Allowed,
            Decision::NotOnListener => CommandOutcome::Refused,
            Decision::NotAdmin => CommandOutcome::NotAdmin,
        };
        self.with(|k| {
            let l = listener_entry(&mut k.c.listeners, listener);
            let i = command_index(kind) * CommandOutcome::COUNT + outcome.index();
            if i < COMMANDS * CommandOutcome::COUNT {
                l.commands[i] = l.commands[i].saturating_add(1);
            }
        });
    }

    /// A request ran into a limit.
    pub fn limit(&self, limit: Limit) {
        self.with(|k| bump(&mut k.c.limits, limit.index()));
    }

    /// A scan refused or failed outside libclamav.
    pub fn error(&self, reason: ErrorReason) {
        self.with(|k| bump(&mut k.c.errors, reason.index()));
    }

    /// The scan queue was full: the request got `Scan queue full`.
    pub fn queue_full(&self) {
        self.with(|k| {
            bump(&mut k.c.errors, ErrorReason::QueueFull.index());
            bump(&mut k.c.limits, Limit::MaxQueue.index());
        });
    }

    /// A stream or descriptor scan whose client left before its reply.
    pub fn abandoned(&self) {
        self.with(|k| k.c.abandoned = k.c.abandoned.saturating_add(1));
    }

    /// Something was counted since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// The message: counts so far, `walks_abandoned` (counted by the path
    /// walks themselves), the pool now and the process's usage.
    pub fn counters(
        &self,
        walks_abandoned: u64,
        pool: &PoolSnapshot,
        usage: ProcUsage,
    ) -> WorkerCounters {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut c = g.c.clone();
        c.abandoned = c.abandoned.saturating_add(walks_abandoned);
        c.queue_wait = pool.wait_histogram;
        c.pool = pool_now(pool);
        c.usage = usage;
        if self.top > 0 {
            c.top = top_names(&g.names, self.top);
        }
        c.normalise();
        c
    }
}

/// The pool's state in the message's terms.
pub fn pool_now(p: &PoolSnapshot) -> PoolNow {
    let (min, max, avg) = p.waits.unwrap_or_default();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    PoolNow {
        threads: p.threads as u32,
        busy: p.busy as u32,
        queued: p.queued as u32,
        wait_min_us: us(min),
        wait_max_us: us(max),
        wait_sum_us: us(avg).saturating_mul(p.queued as u64),
    }
}

fn bump(v: &mut [u64], i: usize) {
    if let Some(x) = v.get_mut(i) {
        *x = x.saturating_add(1);
    }
}

fn scan_command(word: &str) -> ScanCommand {
    ScanCommand::ALL
        .iter()
        .copied()
        .find(|c| c.label() == word)
        .unwrap_or(ScanCommand::Scan)
}

/// The entry of `name`, created if there is room; beyond
/// [`MAX_LISTENERS`] - 1 names, the shared [`OTHER_LISTENER`] entry.
fn listener_entry<'a>(list: &'a mut Vec<ListenerCounts>, name: &str) -> &'a mut ListenerCounts {
    let name = printable(name, crate::ipc::observe::MAX_LISTENER_NAME);
    let at = match list.iter().position(|l| l.name == name) {
        Some(i) => i,
        None if list.len() < MAX_LISTENERS - 1 => {
            list.push(ListenerCounts::new(&name));
            list.len() - 1
        }
        None => match list.iter().position(|l| l.name == OTHER_LISTENER) {
            Some(i) => i,
            None => {
                list.push(ListenerCounts::new(OTHER_LISTENER));
                list.len() - 1
            }
        },
    };
    &mut list[at]
}

fn count_name(names: &mut HashMap<String, u64>, name: &str) {
    let name = printable(name, MAX_TOP_NAME);
    if let Some(n) = names.get_mut(&name) {
        *n = n.saturating_add(1);
    } else if names.len() < MAX_NAMES {
        names.insert(name, 1);
    }
}

/// libclamav's `Heuristics.Limits.Exceeded.*` detections (with
/// `scan.alert-exceeds-max`), by the limit they name.
fn heuristic_limit(name: &str) -> Option<Limit> {
    let rest = name.strip_prefix("Heuristics.Limits.Exceeded.")?;
    let what = rest.split(['.', ' ']).next().unwrap_or(rest);
    Some(match what {
        "MaxFileSize" => Limit::MaxFileSize,
        "MaxScanSize" => Limit::MaxScanSize,
        "MaxFiles" => Limit::MaxFiles,
        "MaxRecursion" => Limit::MaxRecursion,
        "MaxScanTime" => Limit::MaxScanTime,
        _ => return None,
    })
}

fn error_of(verdict: &Verdict) -> (ErrorReason, Option<Limit>) {
    match verdict.error_kind() {
        Some(ScanErrorKind::Io) => (ErrorReason::Io, None),
        Some(ScanErrorKind::Access) => (ErrorReason::Access, None),
        Some(ScanErrorKind::TemporaryDirectory) => (ErrorReason::TemporaryDirectory, None),
        Some(ScanErrorKind::Memory) => (ErrorReason::Memory, None),
        Some(ScanErrorKind::Format) => (ErrorReason::Format, None),
        Some(ScanErrorKind::MaxScanTime) => (ErrorReason::Limit, Some(Limit::MaxScanTime)),
        Some(ScanErrorKind::MaxRecursion) => (ErrorReason::Limit, Some(Limit::MaxRecursion)),
        Some(ScanErrorKind::MaxScanSize) => (ErrorReason::Limit, Some(Limit::MaxScanSize)),
        Some(ScanErrorKind::MaxFiles) => (ErrorReason::Limit, Some(Limit::MaxFiles)),
        Some(ScanErrorKind::Bytecode) => (ErrorReason::Bytecode, None),
        Some(ScanErrorKind::Other) | None => (ErrorReason::Other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolSnapshot {
        PoolSnapshot {
            threads: 2,
            busy: 1,
            queued: 2,
            waits: Some((
                Duration::from_millis(1),
                Duration::from_millis(3),
                Duration::from_millis(2),
            )),
            tasks: Vec::new(),
            idle: Vec::new(),
            wait_histogram: Default::default(),
        }
    }

    #[test]
    fn scans_are_counted_by_listener_command_and_result() {
        let c = Collector::new(2);
        let found = Verdict::Found(vec!["Win.Test.EICAR_HDB-1".into()]);
        c.scan("tcp", "INSTREAM", &found, 68, Duration::from_millis(2));
        c.scan(
            "tcp",
            "INSTREAM",
            &Verdict::Clean,
            10_240,
            Duration::from_millis(1),
        );
        c.scan("unix", "CONTSCAN", &found, 68, Duration::from_micros(10));
        c.scan(
            "unix",
            "SCAN",
            &Verdict::Found(vec!["Heuristics.Limits.Exceeded.MaxFileSize".into()]),
            1,
            Duration::ZERO,
        );
        c.command("tcp", CommandKind::Scan, Decision::NotOnListener);
        c.command("tcp", CommandKind::Instream, Decision::Allow);
        c.queue_full();
        c.abandoned();
        assert!(c.take_changed());
        assert!(!c.take_changed());
        let w = c.counters(2, &pool(), ProcUsage::default());
        let tcp = w.listeners.iter().find(|l| l.name == "tcp").unwrap();
        assert_eq!(tcp.scans(ScanCommand::Instream, ScanResult::Found), 1);
        assert_eq!(tcp.scans(ScanCommand::Instream, ScanResult::Clean), 1);
        assert_eq!(tcp.commands(CommandKind::Scan, CommandOutcome::Refused), 1);
        assert_eq!(
            tcp.commands(CommandKind::Instream, CommandOutcome::Allowed),
            1
        );
        let unix = w.listeners.iter().find(|l| l.name == "unix").unwrap();
        assert_eq!(unix.scans(ScanCommand::ContScan, ScanResult::Found), 1);
        assert_eq!(w.detections[Category::Win.index()], 2);
        assert_eq!(w.detections[Category::Heuristics.index()], 1);
        assert_eq!(w.limits[Limit::MaxFileSize.index()], 1);
        assert_eq!(w.limits[Limit::MaxQueue.index()], 1);
        assert_eq!(w.errors[ErrorReason::QueueFull.index()], 1);
        assert_eq!(w.abandoned, 3);
        assert_eq!(w.duration.count(), 4);
        assert_eq!(w.size.sum, 68 + 10_240 + 68 + 1);
        assert_eq!(
            w.top,
            vec![
                ("Win.Test.EICAR_HDB-1".to_string(), 2),
                ("Heuristics.Limits.Exceeded.MaxFileSize".to_string(), 1)
            ]
        );
        assert_eq!(w.pool.queued, 2);
        assert_eq!(w.pool.wait_sum_us, 4_000);
    }

    #[test]
    fn names_are_counted_only_when_asked_and_listeners_are_bounded() {
        let c = Collector::new(0);
        for i in 0..40 {
            c.scan(
                &format!("l{i}"),
                "INSTREAM",
                &Verdict::Found(vec![format!("X.Y.Z-{i}")]),
                1,
                Duration::ZERO,
            );
        }
        let w = c.counters(0, &pool(), ProcUsage::default());
        assert!(w.top.is_empty());
        assert_eq!(w.listeners.len(), MAX_LISTENERS);
        let other = w
            .listeners
            .iter()
            .find(|l| l.name == OTHER_LISTENER)
            .unwrap();
        assert_eq!(
            other.scans(ScanCommand::Instream, ScanResult::Found),
            40 - (MAX_LISTENERS as u64 - 1)
        );
        assert_eq!(w.detections[Category::Other.index()], 40);
    }

    #[test]
    fn errors_are_sorted_by_reason() {
        let c = Collector::new(0);
        let timeout = Verdict::Error {
            code: 21,
            message: "CL_ETIMEOUT".into(),
        };
        c.scan("unix", "SCAN", &timeout, 1, Duration::ZERO);
        c.error(ErrorReason::NotRegularFile);
        let w = c.counters(0, &pool(), ProcUsage::default());
        assert_eq!(w.errors[ErrorReason::Limit.index()], 1);
        assert_eq!(w.limits[Limit::MaxScanTime.index()], 1);
        assert_eq!(w.errors[ErrorReason::NotRegularFile.index()], 1);
        assert_eq!(
            w.listeners[0].scans(ScanCommand::Scan, ScanResult::Error),
            1
        );
    }
}
