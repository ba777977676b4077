//! Memory of the daemon's processes (PSS, KiB) for STATS, measured off the
//! event loop: reading `smaps_rollup` of a process holding an engine takes
//! milliseconds.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::lifecycle::PING_EVERY;
use super::{procs, Input};

#[derive(Default)]
struct Cache {
    at: Option<Instant>,
    measuring: bool,
    total: u64,
    by_pid: HashMap<i32, u64>,
}

/// The last measurement; a new one starts when it is older than a ping
/// period, and `Input::Measured` says when it is in.
#[derive(Default, Clone)]
pub struct Pss {
    cache: Arc<Mutex<Cache>>,
}

impl Pss {
    /// (the whole daemon, worker `pid`) as last measured; starts a new
    /// measurement of `pids` if due.
    pub fn figures(
        &self,
        pid: Option<i32>,
        pids: Vec<i32>,
        tx: &mpsc::Sender<Input>,
    ) -> (u64, u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let figures = (
            cache.total,
            pid.and_then(|p| cache.by_pid.get(&p).copied()).unwrap_or(0),
        );
        if !cache.measuring && !cache.at.is_some_and(|t| t.elapsed() < PING_EVERY) {
            cache.measuring = true;
            let me = self.clone();
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || {
                let by_pid: HashMap<i32, u64> =
                    pids.into_iter().map(|p| (p, procs::pss_kib(p))).collect();
                let mut cache = me.cache.lock().unwrap_or_else(|e| e.into_inner());
                cache.total = by_pid.values().sum();
                cache.by_pid = by_pid;
                cache.at = Some(Instant::now());
                cache.measuring = false;
                drop(cache);
                let _ = tx.try_send(Input::Measured);
            });
        }
        figures
    }
}
