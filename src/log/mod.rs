//! Logging: bounded, honest log lines about hostile clients.
//!
//! * [`escape`]: client-supplied bytes (paths, virus names) are logged as
//!   reversible escaped text, `tracing::warn!(path = %LogBytes(p), ...)`,
//!   so they can neither forge log lines nor lose bytes that are not UTF-8;
//! * [`limiter`]: at most N lines per peer or connection and minute, with a
//!   count of what was suppressed.
#![forbid(unsafe_code)]

pub mod escape;
pub mod limiter;

pub use escape::{escape, unescape, LogBytes, LogStr};
