//! Readiness and status for systemd (`sd_notify` protocol, `Type=notify`).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::engine::{LoadPhase, LoadProgress};

/// How long each loading report extends systemd's start-up timeout: the
/// load must report progress again within this time (EXTEND_TIMEOUT_USEC).
pub const LOAD_EXTEND: Duration = Duration::from_secs(90);

/// Least time between two loading reports (libclamav reports very often).
const LOAD_REPORT_EVERY: Duration = Duration::from_millis(500);

/// Sends notifications when systemd asked for them (`NOTIFY_SOCKET`).
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Sends `states` in one datagram; failures are logged, never fatal.
    pub fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }

    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// Start-up: loading has begun.
    pub fn loading_started(&self, dir: &str) {
        let text = format!("Loading signatures from {dir}");
        self.send(&[
            NotifyState::Status(&text),
            NotifyState::ExtendTimeoutUsec(LOAD_EXTEND.as_micros() as u32),
        ]);
    }

    /// The engine is loaded and the sockets are served.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts (MONOTONIC_USEC is what systemd ≥ 253 requires).
    pub fn reloading(&self) {
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("Reloading signatures"),
        ];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("Stopping: finishing in-flight requests"),
        ]);
    }

    /// The scanning side answers: WATCHDOG=1 with a fresh status line.
    pub fn watchdog(&self, status: &str) {
        self.send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
    }
}

/// Turns libclamav's frequent progress reports into a few status lines
/// (and, at start-up, timeout extensions).
pub struct LoadReporter {
    notifier: Notifier,
    extend: bool,
    last: Option<(Instant, LoadProgress)>,
}

impl LoadReporter {
    /// `extend`: also send EXTEND_TIMEOUT_USEC (start-up; a reload has no
    /// timeout to extend).
    pub fn new(notifier: Notifier, extend: bool) -> LoadReporter {
        LoadReporter {
            notifier,
            extend,
            last: None,
        }
    }

    pub fn report(&mut self, p: LoadProgress) {
        let now = Instant::now();
        if let Some((at, last)) = self.last {
            if last.phase == p.phase && now.duration_since(at) < LOAD_REPORT_EVERY {
                return;
            }
        }
        self.last = Some((now, p));
        let text = progress_text(p, !self.extend);
        let extend = NotifyState::ExtendTimeoutUsec(LOAD_EXTEND.as_micros() as u32);
        if self.extend {
            self.notifier.send(&[NotifyState::Status(&text), extend]);
        } else {
            self.notifier.status(&text);
        }
    }
}

/// `Loading signatures: 42% (1234/2938)` or `Compiling signatures: 80%`.
pub fn progress_text(p: LoadProgress, reload: bool) -> String {
    let what = if reload { "Reloading" } else { "Loading" };
    match p.phase {
        LoadPhase::Loading => format!(
            "{what} signatures: {}% ({}/{})",
            p.percent(),
            p.done,
            p.total
        ),
        LoadPhase::Compiling => format!("{what}: compiling signatures: {}%", p.percent()),
    }
}

/// `3d 4h`, `2h 5m`, `7m 12s`, `40s`.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_short() {
        assert_eq!(uptime(Duration::from_secs(40)), "40s");
        assert_eq!(uptime(Duration::from_secs(432)), "7m 12s");
        assert_eq!(uptime(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(uptime(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }

    #[test]
    fn progress_lines() {
        let p = LoadProgress {
            phase: LoadPhase::Loading,
            done: 50,
            total: 200,
        };
        assert_eq!(progress_text(p, false), "Loading signatures: 25% (50/200)");
        let p = LoadProgress {
            phase: LoadPhase::Compiling,
            done: 0,
            total: 0,
        };
        assert_eq!(
            progress_text(p, true),
            "Reloading: compiling signatures: 0%"
        );
    }
}
