//! On-demand mode (`service.exit-when-idle`): exit cleanly after a time
//! without connections, so that the memory of the loaded signatures returns
//! to the system; with socket activation systemd keeps the listening socket
//! and starts the daemon again on the next connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::Shared;

/// How often the connection counters are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Requests shutdown once no connection has been open, opened or closed for
/// `service.exit-when-idle` seconds. Returns at once when that is 0.
pub async fn run(shared: Arc<Shared>) {
    let limit = Duration::from_secs(shared.config.service.exit_when_idle);
    if limit.is_zero() {
        return;
    }
    let mut seen = shared.connection_events();
    let mut since = Instant::now();
    let mut stop = shared.shutdown_signal();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let events = shared.connection_events();
        if events != seen || shared.active_connections() > 0 {
            seen = events;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= limit {
            tracing::info!(
                idle_seconds = limit.as_secs(),
                "no connection for service.exit-when-idle seconds: exiting"
            );
            shared.request_shutdown();
            return;
        }
    }
}
