//! Deadlines for reading from a client: what stops a slow or silent client
//! from holding a connection, a session or stream memory for long.
//!
//! * A command: the first one must be complete `command-read-timeout`
//!   seconds after the connection was accepted, a later one (IDSESSION)
//!   `command-timeout` seconds after its first byte, and a session may wait
//!   `idle-timeout` seconds for that first byte. These are deadlines, not
//!   per-read timeouts: one byte every few seconds does not keep a
//!   connection. On expiry: clamd's `COMMAND READ TIMED OUT`.
//! * A stream ([`Pace`]): silence between two reads may last
//!   `read-timeout` seconds (clamd's ReadTimeout), and each window of
//!   `stream-rate-window` seconds must bring at least `stream-min-rate`
//!   bytes per second on average; a slower stream is ended with an ERROR
//!   and gives its memory back.
//!
//! Pure: the clock is passed in, so the rules are tested with made-up
//! instants.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// What a stream's pace check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Keep reading until [`Pace::deadline`].
    Go,
    /// Nothing arrived for `read-timeout`.
    Silent,
    /// A whole window brought less than `stream-min-rate`.
    TooSlow,
}

/// The pace of one INSTREAM.
#[derive(Debug, Clone)]
pub struct Pace {
    silence: Duration,
    window: Duration,
    /// Least bytes per window; 0: no minimum.
    min_bytes: u64,
    last_byte: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl Pace {
    pub fn new(limits: &LimitsConfig, now: Instant) -> Pace {
        let window = Duration::from_secs(limits.stream_rate_window.max(1));
        Pace {
            silence: Duration::from_secs(limits.read_timeout),
            window,
            min_bytes: limits.stream_min_rate.0.saturating_mul(window.as_secs()),
            last_byte: now,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// When the next read must have returned by (then call [`check`]).
    ///
    /// [`check`]: Pace::check
    pub fn deadline(&self) -> Instant {
        let silent = self.last_byte + self.silence;
        if self.min_bytes == 0 {
            silent
        } else {
            silent.min(self.window_start + self.window)
        }
    }

    /// `n` bytes arrived at `now`.
    pub fn got(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.last_byte = now;
            self.window_bytes = self.window_bytes.saturating_add(n as u64);
        }
    }

    /// Judges the stream at `now` (after a read, or when a deadline passed).
    pub fn check(&mut self, now: Instant) -> Check {
        if self.min_bytes > 0 && now >= self.window_start + self.window {
            if self.window_bytes < self.min_bytes {
                return Check::TooSlow;
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        if now >= self.last_byte + self.silence {
            return Check::Silent;
        }
        Check::Go
    }
}

/// When the next command must be complete.
#[derive(Debug, Clone, Copy)]
pub struct CommandClock {
    command_timeout: Duration,
    idle_timeout: Duration,
}

impl CommandClock {
    pub fn new(limits: &LimitsConfig) -> CommandClock {
        CommandClock {
            command_timeout: Duration::from_secs(limits.command_timeout),
            idle_timeout: Duration::from_secs(limits.idle_timeout),
        }
    }

    /// The deadline of a wait inside a session that began at `waiting_since`,
    /// when the command under way (if any) began at `started`.
    pub fn session_deadline(&self, waiting_since: Instant, started: Option<Instant>) -> Instant {
        match started {
            Some(t) => t + self.command_timeout,
            None => waiting_since + self.idle_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            read_timeout: 120,
            stream_min_rate: ByteSize(1000),
            stream_rate_window: 10,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_trickling_stream_is_too_slow_after_one_window() {
        let t0 = Instant::now();
        let mut p = Pace::new(&limits(), t0);
        assert_eq!(p.deadline(), t0 + Duration::from_secs(10));
        // 7 bytes now and then: silent never, too slow at the window's end.
        for s in 1..10 {
            p.got(1, t0 + Duration::from_secs(s));
            assert_eq!(p.check(t0 + Duration::from_secs(s)), Check::Go);
        }
        assert_eq!(p.check(t0 + Duration::from_secs(10)), Check::TooSlow);
    }

    #[test]
    fn a_fast_stream_rolls_its_window() {
        let t0 = Instant::now();
        let mut p = Pace::new(&limits(), t0);
        p.got(20_000, t0 + Duration::from_secs(1));
        assert_eq!(p.check(t0 + Duration::from_secs(10)), Check::Go);
        assert_eq!(p.deadline(), t0 + Duration::from_secs(20));
        p.got(10_000, t0 + Duration::from_secs(15));
        assert_eq!(p.check(t0 + Duration::from_secs(20)), Check::Go);
    }

    #[test]
    fn silence_ends_a_stream_without_a_minimum_rate() {
        let t0 = Instant::now();
        let mut l = limits();
        l.stream_min_rate = ByteSize(0);
        l.read_timeout = 5;
        let mut p = Pace::new(&l, t0);
        assert_eq!(p.deadline(), t0 + Duration::from_secs(5));
        p.got(1, t0 + Duration::from_secs(4));
        assert_eq!(p.check(t0 + Duration::from_secs(8)), Check::Go);
        assert_eq!(p.check(t0 + Duration::from_secs(9)), Check::Silent);
    }

    #[test]
    fn session_waits_are_idle_then_command_deadlines() {
        let t0 = Instant::now();
        let c = CommandClock::new(&LimitsConfig {
            command_timeout: 30,
            idle_timeout: 120,
            ..LimitsConfig::default()
        });
        assert_eq!(c.session_deadline(t0, None), t0 + Duration::from_secs(120));
        let first_byte = t0 + Duration::from_secs(50);
        assert_eq!(
            c.session_deadline(t0, Some(first_byte)),
            first_byte + Duration::from_secs(30)
        );
    }
}
