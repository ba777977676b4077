//! What systemd hears from the supervisor: READY, STATUS, RELOADING,
//! STOPPING and WATCHDOG, driven by the lifecycle's notes
//! ([`Note`]): loading progress from the engine holder that loads, Ready
//! from the first worker, blue/green reloads, the fleet (workers, crashes,
//! replacement times), and pongs, which say whether a worker's scan pool
//! still moves. `WATCHDOG=1` is sent while some worker is healthy (a wedged
//! worker is replaced by the supervisor); if none is, systemd restarts the
//! service.

use std::time::Instant;

use super::lifecycle::Note;
use crate::ipc::messages::Fleet;
use crate::systemd::notify::{uptime, LoadReporter, Notifier};

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
    fleet: Fleet,
    ready: bool,
    reloading: bool,
    wedged: bool,
    loading: Option<LoadReporter>,
    /// What the failing self-test saw (`None` while it passes).
    selftest_failure: Option<String>,
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
            fleet: Fleet::default(),
            ready: false,
            reloading: false,
            wedged: false,
            loading: None,
            selftest_failure: None,
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
        let f = &self.fleet;
        line.push_str(&format!(
            "; workers {} serving (at most {})",
            f.serving, f.workers
        ));
        if f.crashes > 0 {
            line.push_str(&format!(
                ", {} crashes (last replaced in {:.1} ms)",
                f.crashes,
                f.last_replacement_us as f64 / 1000.0
            ));
        }
        if let Some(why) = &self.selftest_failure {
            line.push_str("; SELF-TEST FAILING (not ready): ");
            line.push_str(why);
        }
        if !self.sandbox.is_empty() {
            line.push_str("; sandbox ");
            line.push_str(&self.sandbox);
        }
        line
    }

    /// The self-test failed (with what it saw) or passes again (`None`);
    /// the status line says so at once.
    pub fn selftest(&mut self, failure: Option<String>) {
        if self.selftest_failure == failure {
            return;
        }
        self.selftest_failure = failure;
        if self.ready && !self.reloading {
            self.notifier.status(&self.line());
        }
    }

    pub fn observe(&mut self, note: Note) {
        match note {
            Note::Fleet(f) => self.fleet = f,
            Note::Progress(p) => {
                // At start-up each report also extends systemd's timeout.
                let extend = !self.ready;
                let notifier = self.notifier;
                self.loading
                    .get_or_insert_with(|| LoadReporter::new(notifier, extend))
                    .report(p);
            }
            Note::Ready {
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
            Note::Reloading(_) => {
                self.reloading = true;
                self.loading = None;
                self.notifier.reloading();
            }
            Note::Reloaded {
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
            Note::Stopping => self.notifier.stopping(),
            Note::EngineLoaded(_) | Note::WorkerReplaced(_) => {}
            Note::Alive {
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
                        "Stalled: no worker's scanning threads show progress; watchdog pings stopped",
                    );
                    tracing::error!("no worker's scan pool shows progress: watchdog pings stop, systemd will restart the service");
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
        s.observe(Note::Ready {
            signatures: 10,
            db_version: 27999,
            sandbox: String::new(),
        });
        s.observe(Note::Reloaded {
            ok: false,
            signatures: 0,
            db_version: 0,
        });
        s.observe(Note::Alive {
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
