//! What systemd hears from the supervisor: READY, STATUS, RELOADING,
//! STOPPING and WATCHDOG, driven by the workers' lifecycle
//! ([`Lifecycle`]): loading progress from the worker that loads, Ready from
//! the first worker, blue/green reloads, and pongs from the serving worker,
//! which say whether its scan pool still moves (see [`super::watchdog`]).
//! A worker that stops answering, or whose pool is wedged, gets no
//! `WATCHDOG=1`, so systemd restarts the service.

use std::time::Instant;

use super::notify::{uptime, LoadReporter, Notifier};
use crate::privsep::supervisor::Lifecycle;

/// The supervisor's view of the service, turned into notifications.
pub struct ServiceStatus {
    notifier: Notifier,
    started: Instant,
    signatures: u32,
    db_version: u32,
    scans: u64,
    found: u64,
    reloads: u64,
    failed_reloads: u64,
    sandbox: String,
    ready: bool,
    reloading: bool,
    wedged: bool,
    loading: Option<LoadReporter>,
}

impl ServiceStatus {
    pub fn new(notifier: Notifier) -> ServiceStatus {
        ServiceStatus {
            notifier,
            started: Instant::now(),
            signatures: 0,
            db_version: 0,
            scans: 0,
            found: 0,
            reloads: 0,
            failed_reloads: 0,
            sandbox: String::new(),
            ready: false,
            reloading: false,
            wedged: false,
            loading: None,
        }
    }

    /// The status line while serving: what an operator wants at a glance.
    pub fn line(&self) -> String {
        let mut line = format!(
            "Serving: {} signatures, database version {}, up {}, {} scans, {} found, {} reloads",
            self.signatures,
            self.db_version,
            uptime(self.started.elapsed()),
            self.scans,
            self.found,
            self.reloads,
        );
        if self.failed_reloads > 0 {
            line.push_str(&format!(
                ", {} failed reloads (see the log; the previous signatures stay in use)",
                self.failed_reloads
            ));
        }
        if !self.sandbox.is_empty() {
            line.push_str("; worker ");
            line.push_str(&self.sandbox);
        }
        line
    }

    pub fn observe(&mut self, event: Lifecycle) {
        match event {
            Lifecycle::Progress(p) => {
                // At start-up each report also extends systemd's timeout.
                let extend = !self.ready;
                let notifier = self.notifier;
                self.loading
                    .get_or_insert_with(|| LoadReporter::new(notifier, extend))
                    .report(p);
            }
            Lifecycle::Ready {
                signatures,
                db_version,
                sandbox,
            } => {
                self.signatures = signatures;
                self.db_version = db_version;
                self.sandbox = sandbox.clone();
                self.ready = true;
                self.loading = None;
                let line = self.line();
                self.notifier.ready(&line);
                tracing::info!(signatures, db_version, sandbox = %sandbox, "ready: {line}");
            }
            Lifecycle::Reloading => {
                self.reloading = true;
                self.loading = None;
                self.notifier.reloading();
            }
            Lifecycle::Reloaded {
                ok,
                signatures,
                db_version,
            } => {
                if ok {
                    self.reloads += 1;
                    self.signatures = signatures;
                    self.db_version = db_version;
                } else {
                    self.failed_reloads += 1;
                }
                self.reloading = false;
                self.loading = None;
                self.notifier.ready(&self.line());
            }
            Lifecycle::Stopping => self.notifier.stopping(),
            Lifecycle::Alive {
                scans,
                found,
                healthy,
            } => {
                self.scans = scans;
                self.found = found;
                if healthy {
                    if self.wedged {
                        tracing::warn!("scan pool moves again; watchdog pings resume");
                        self.wedged = false;
                    }
                    if self.reloading {
                        // Keep the reload's progress line.
                        self.notifier.send(&[sd_notify::NotifyState::Watchdog]);
                    } else {
                        self.notifier.watchdog(&self.line());
                    }
                } else if !self.wedged {
                    self.wedged = true;
                    self.notifier.status(
                        "Stalled: the scanning threads show no progress; watchdog pings stopped",
                    );
                    tracing::error!("scan pool shows no progress: watchdog pings stop, systemd will restart the service");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_counts_reloads_and_failures() {
        let mut s = ServiceStatus::new(Notifier::from_env());
        s.observe(Lifecycle::Ready {
            signatures: 10,
            db_version: 27999,
            sandbox: String::new(),
        });
        s.observe(Lifecycle::Reloaded {
            ok: false,
            signatures: 0,
            db_version: 0,
        });
        s.observe(Lifecycle::Alive {
            scans: 5,
            found: 2,
            healthy: true,
        });
        let line = s.line();
        assert!(
            line.starts_with("Serving: 10 signatures, database version 27999, up "),
            "{line}"
        );
        assert!(
            line.contains("5 scans, 2 found, 0 reloads, 1 failed reloads"),
            "{line}"
        );
    }
}
