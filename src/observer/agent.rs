//! HAProxy's `agent-check`: what one line says about this node, decided by
//! a pure function of the last snapshot ([`decide`]) and written in
//! HAProxy 2.6's syntax ([`Answer::line`]).
//!
//! HAProxy reads one line, words separated by spaces: a weight (`75%`), an
//! administrative state (`ready`, `drain`, `maint`), an operational state
//! (`up`, `down`), and after `#` a description it shows when the line has an
//! operational state. Only the agent can undo what the agent set, so every
//! answer names both states: a node that said `drain` must later say
//! `ready`, one that said `down` must say `up`.
//!
//! | the daemon | answer |
//! |---|---|
//! | serving, self-test passing, database fresh | `up ready N%` (N: free scan capacity, 1–100) |
//! | an administrator asked for maintenance | `up maint #…` |
//! | stopping, no engine yet or no serving worker, self-test failing, a reload waiting for memory headroom, database older than `database.max-age` | `up drain #reason` |
//! | no snapshot from the supervisor (yet, or for [`STALE_AFTER`]) | `down #reason` |
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::ipc::observe::Snapshot;

/// A snapshot older than this means the supervisor is not updating it (a
/// hung daemon): the node answers `down`.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// Longest description after `#`.
const MAX_REASON: usize = 120;

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Serving; `weight` is the free scan capacity in percent (1–100).
    Ready {
        weight: u8,
    },
    Drain(String),
    Maint(String),
    Down(String),
}

impl Answer {
    /// The line HAProxy reads.
    pub fn line(&self) -> String {
        match self {
            Answer::Ready { weight } => format!("up ready {weight}%\n"),
            Answer::Drain(why) => format!("up drain #{}\n", reason(why)),
            Answer::Maint(why) => format!("up maint #{}\n", reason(why)),
            Answer::Down(why) => format!("down #{}\n", reason(why)),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, Answer::Ready { .. })
    }

    /// The state word and the reason, for the status page.
    pub fn state(&self) -> (&'static str, &str) {
        match self {
            Answer::Ready { .. } => ("ready", ""),
            Answer::Drain(w) => ("drain", w),
            Answer::Maint(w) => ("maint", w),
            Answer::Down(w) => ("down", w),
        }
    }
}

/// A description HAProxy can show: printable ASCII, no line end.
fn reason(why: &str) -> String {
    why.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_REASON)
        .collect()
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub snapshot: Option<&'a Snapshot>,
    /// Since the snapshot arrived.
    pub age: Duration,
    /// The observer's wall clock, seconds since the epoch.
    pub now: u64,
    /// `database.max-age` in seconds; 0: no limit.
    pub max_age: u64,
    /// Share of the scanning threads' time spent on requests (queue wait
    /// included) over the last seconds, when known.
    pub utilization: Option<f64>,
}

/// The answer for this moment.
pub fn decide(i: Input<'_>) -> Answer {
    let Some(s) = i.snapshot else {
        return Answer::Down("no status from the daemon yet".into());
    };
    if i.age > STALE_AFTER {
        return Answer::Down(format!(
            "no status from the daemon for {} s",
            i.age.as_secs()
        ));
    }
    let f = &s.flags;
    if f.maintenance {
        return Answer::Maint("maintenance requested by an administrator".into());
    }
    if f.stopping {
        return Answer::Drain("stopping: finishing the scans in flight".into());
    }
    if !f.engine {
        let why = if s.generation == 0 {
            "no engine yet: loading signatures"
        } else {
            "no serving worker: replacing them"
        };
        return Answer::Drain(why.into());
    }
    if s.selftest.failing {
        return Answer::Drain(format!("self-test failing: {}", s.selftest.detail));
    }
    if f.no_headroom {
        return Answer::Drain("reload waiting for memory headroom".into());
    }
    let built = s.db.build_time;
    if i.max_age > 0 && built > 0 && i.now.saturating_sub(built) > i.max_age {
        return Answer::Drain(format!(
            "database {} built {} h ago, older than database.max-age",
            s.db.version,
            i.now.saturating_sub(built) / 3600
        ));
    }
    Answer::Ready {
        weight: weight(s, i.utilization),
    }
}

/// Free scan capacity in percent, 1–100: 1 while requests wait in the
/// queue, otherwise what the recent utilization leaves (the threads busy now
/// when no utilization is known). Never 0, which HAProxy takes as `drain`.
pub fn weight(s: &Snapshot, utilization: Option<f64>) -> u8 {
    let p = &s.pool;
    if p.queued > 0 || p.threads == 0 {
        return 1;
    }
    let used = utilization.unwrap_or(f64::from(p.busy) / f64::from(p.threads));
    let free = (1.0 - used.clamp(0.0, 1.0)) * 100.0;
    free.round().clamp(1.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::observe::{DbInfo, Flags, PoolNow, SelftestState};

    fn serving() -> Snapshot {
        let mut s = Snapshot {
            db: DbInfo {
                version: 27999,
                signatures: 10,
                build_time: 1_000_000,
            },
            flags: Flags {
                engine: true,
                ..Flags::default()
            },
            pool: PoolNow {
                threads: 4,
                ..PoolNow::default()
            },
            ..Snapshot::default()
        };
        s.normalise();
        s
    }

    fn input(s: &Snapshot) -> Input<'_> {
        Input {
            snapshot: Some(s),
            age: Duration::from_millis(500),
            now: 1_000_000 + 3600,
            max_age: 7 * 86_400,
            utilization: None,
        }
    }

    #[test]
    fn a_serving_node_is_ready_with_its_free_capacity() {
        let mut s = serving();
        assert_eq!(decide(input(&s)), Answer::Ready { weight: 100 });
        assert_eq!(decide(input(&s)).line(), "up ready 100%\n");
        s.pool.busy = 3;
        assert_eq!(decide(input(&s)), Answer::Ready { weight: 25 });
        let mut i = input(&s);
        i.utilization = Some(0.5);
        assert_eq!(decide(i), Answer::Ready { weight: 50 }, "the window wins");
        i.utilization = Some(1.7);
        assert_eq!(decide(i), Answer::Ready { weight: 1 }, "never 0 (= drain)");
        s.pool.queued = 2;
        assert_eq!(decide(input(&s)), Answer::Ready { weight: 1 });
    }

    #[test]
    fn each_reason_to_drain() {
        type Change = Box<dyn Fn(&mut Snapshot)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.flags.stopping = true), "stopping"),
            (Box::new(|s| s.flags.engine = false), "no engine"),
            (
                Box::new(|s| {
                    s.selftest = SelftestState {
                        enabled: true,
                        failing: true,
                        detail: "stream: OK".into(),
                        ..SelftestState::default()
                    }
                }),
                "self-test failing: stream: OK",
            ),
            (Box::new(|s| s.flags.no_headroom = true), "memory headroom"),
            (
                Box::new(|s| s.db.build_time = 1),
                "older than database.max-age",
            ),
        ];
        for (change, why) in cases {
            let mut s = serving();
            change(&mut s);
            let a = decide(input(&s));
            let line = a.line();
            assert!(line.starts_with("up drain #"), "{line}");
            assert!(line.contains(why), "{line}");
            assert!(!a.is_ready());
        }
    }

    #[test]
    fn maintenance_stale_and_missing_snapshots() {
        let mut s = serving();
        s.flags.maintenance = true;
        s.flags.stopping = true;
        assert!(decide(input(&s)).line().starts_with("up maint #"));
        let s = serving();
        let mut i = input(&s);
        i.age = Duration::from_secs(9);
        assert_eq!(
            decide(i).line(),
            "down #no status from the daemon for 9 s\n"
        );
        i.snapshot = None;
        assert_eq!(decide(i).line(), "down #no status from the daemon yet\n");
    }

    #[test]
    fn an_unknown_build_time_or_no_limit_never_drains() {
        let mut s = serving();
        s.db.build_time = 0;
        assert!(decide(input(&s)).is_ready());
        let s = serving();
        let mut i = input(&s);
        i.now = u64::MAX;
        i.max_age = 0;
        assert!(decide(i).is_ready());
    }

    #[test]
    fn reasons_cannot_break_the_line() {
        let mut s = serving();
        s.selftest.failing = true;
        s.selftest.detail = "a\nb\rc#d é".into();
        let line = decide(input(&s)).line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n') && !line.contains('\r'));
        assert!(line.contains("a?b?c#d ?"), "{line}");
    }
}
