//! How many control messages one worker may make the supervisor read per
//! second: a pure counter, used by the task that reads the worker's
//! channel.
//!
//! Every message costs root a read, a decode and a turn of the event loop,
//! even one that changes nothing (an `Active` for a connection already
//! active). A compromised worker that sent such messages without pause
//! kept root at 27% of a core and tripled PING latency for everyone (third
//! outside review). Past [`PER_SECOND`] messages in a second, the reader
//! stops reading that worker's channel until the second is over: the
//! kernel's socket buffer fills and the worker's own sends wait, so the
//! cost stays with the worker. An honest worker sends a handful of
//! messages per connection (its command, each detection, its close) and
//! its counters once a second; 20,000 a second is several times what the
//! benchmark's fastest run makes.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Messages one worker may have read per second.
pub const PER_SECOND: u32 = 20_000;

// Far above an honest worker's rate: a CONTSCAN of 3,000 infected files
// sends 3,000 detections, read within a third of one second's budget.
const _: () = assert!(PER_SECOND > 3 * 3_000);

/// The counter of one channel.
#[derive(Debug)]
pub struct MessageBudget {
    per_second: u32,
    window: Instant,
    used: u32,
}

impl MessageBudget {
    pub fn new(per_second: u32, now: Instant) -> MessageBudget {
        MessageBudget {
            per_second: per_second.max(1),
            window: now,
            used: 0,
        }
    }

    /// One message read at `now`: how long to wait before reading the
    /// next, if the second's budget is spent.
    pub fn charge(&mut self, now: Instant) -> Option<Duration> {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        self.used += 1;
        (self.used >= self.per_second)
            .then(|| (self.window + Duration::from_secs(1)).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holds_its_budget_then_the_reader_waits_for_the_next() {
        let t0 = Instant::now();
        let mut b = MessageBudget::new(3, t0);
        assert_eq!(b.charge(t0), None);
        assert_eq!(b.charge(t0 + Duration::from_millis(100)), None);
        // The third spends the second: wait for the rest of it.
        assert_eq!(
            b.charge(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        // A new second, a new budget.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.charge(t1), None);
        assert_eq!(b.charge(t1), None);
        assert_eq!(b.charge(t1), Some(Duration::from_secs(1)));
    }
}
