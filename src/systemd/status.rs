//! The service loop: follows the daemon's phase and tells systemd
//! (READY, RELOADING, STOPPING, STATUS) and pings the watchdog while the
//! scanning side moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::notify::{progress_text, serving_status, LoadReporter, Notifier};
use super::watchdog::{stall_limit, PoolHealth};
use crate::server::{Phase, Shared};

/// How often the status line is refreshed (more often when the watchdog
/// asks for it).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Runs until shutdown; sends READY=1 first (call it once the engine is
/// loaded and the listeners are bound).
pub async fn run(shared: Arc<Shared>, notifier: Notifier) {
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let period = if watchdog {
        // At least twice per WatchdogSec, as sd_watchdog_enabled(3) advises.
        (Duration::from_micros(watchdog_usec) / 2).clamp(Duration::from_millis(10), STATUS_EVERY)
    } else {
        STATUS_EVERY
    };
    let stall = stall_limit(shared.config.scan.max_scan_time);
    let mut health = PoolHealth::new(stall, Instant::now());
    let mut phase = shared.phase();
    let mut announced = phase.borrow_and_update().reloads_started;
    let mut stop = shared.shutdown_signal();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reporter: Option<LoadReporter> = None;
    let mut wedged = false;
    let line = serving_status(&shared);
    notifier.ready(&line);
    tracing::info!(watchdog_usec, "ready: {line}");
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                notifier.stopping();
                return;
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *phase.borrow_and_update();
                // Announce every reload, even one already over (see Lifecycle).
                if now.reloads_started > announced {
                    announced = now.reloads_started;
                    notifier.reloading();
                    reporter = Some(LoadReporter::new(notifier, false));
                }
                match now.phase {
                    Phase::Reloading(None) => {}
                    Phase::Reloading(Some(p)) => match reporter.as_mut() {
                        Some(r) => r.report(p),
                        None => notifier.status(&progress_text(p, true)),
                    },
                    Phase::Serving => {
                        if reporter.take().is_some() {
                            notifier.ready(&serving_status(&shared));
                        }
                    }
                }
            }
            _ = ticks.tick() => {
                let line = serving_status(&shared);
                let reloading = reporter.is_some();
                if watchdog {
                    if health.check(&shared.pool, Instant::now()) {
                        if wedged {
                            tracing::warn!("scan pool moves again; watchdog pings resume");
                            wedged = false;
                        }
                        // While reloading, keep the reload's progress line.
                        if reloading {
                            notifier.send(&[sd_notify::NotifyState::Watchdog]);
                        } else {
                            notifier.watchdog(&line);
                        }
                        continue;
                    } else if !wedged {
                        wedged = true;
                        notifier.status(&format!(
                            "Stalled: the scanning threads have shown no progress for {} s; watchdog pings stopped",
                            stall.as_secs()
                        ));
                        tracing::error!(
                            stall_limit_ms = stall.as_millis() as u64,
                            "scan pool shows no progress: watchdog pings stop, systemd will restart the service"
                        );
                    }
                }
                if !reloading && !wedged {
                    notifier.status(&line);
                }
            }
        }
    }
}
