//! The STATS block, in clamd's `thrmgr_printstats` layout so clamdtop can
//! read it: `POOLS: 1` and one `STATE` block, the scan pool of the worker
//! that answers.
//!
//! Differences that come from being a different daemon: the scanning pool
//! is fixed (live = max), STATS itself runs on the connection task but is
//! shown as one busy thread as clamd shows it, `idle-timeout` is clamsentry's
//! session idle timeout; the MEMSTATS pool figures are the proportional set
//! size of this worker (`pools_used`) and of the whole daemon
//! (`pools_total`), measured by the supervisor (the worker's sandbox hides
//! /proc), because libclamav's memory-pool statistics are not public API;
//! and one more line, `WORKERS:`, shows the fleet (serving and configured
//! workers, engine generation, crashes, and how long the last replacement
//! took). clamdtop ignores lines it does not know.
//!
//! Who sees which tasks (the task lines keep clamd's format, which
//! clamdtop and exporters parse): an administrator (root,
//! `policy.unix.admin-users`/`admin-groups`) sees every task of the whole
//! daemon, as in clamd — the worker asks the supervisor, which asks every
//! worker, and shows its own tasks if no answer comes within a short wait;
//! anyone else sees only the tasks of its own identity (its uid, or its
//! address prefix over TCP), and the others only as counts in the THREADS
//! and QUEUE lines: file names being scanned for another user are that
//! user's business.

use std::fmt::Write;

use super::super::{Peer, Shared};
use crate::ipc::messages::TaskInfo;

/// Which task lines a STATS reply shows.
pub enum Tasks {
    /// This worker's tasks of one identity only (a non-administrator).
    Own,
    /// Every task: the whole daemon's when the supervisor answered, else
    /// this worker's.
    All(Option<(Vec<TaskInfo>, u32)>),
}

pub fn render(shared: &Shared, peer: &Peer, tasks: Tasks, out: &mut Vec<u8>) {
    let snap = shared.pool.snapshot();
    let mut s = String::with_capacity(512);
    let idle_timeout = shared.config.limits.idle_timeout;
    let _ = write!(s, "POOLS: 1\n\nSTATE: VALID PRIMARY\n");
    let _ = writeln!(
        s,
        "THREADS: live {}  idle {} max {} idle-timeout {}",
        snap.threads,
        snap.idle.len().saturating_sub(1),
        snap.threads,
        idle_timeout
    );
    let _ = write!(s, "QUEUE: {} items", snap.queued);
    if let Some((min, max, avg)) = snap.waits {
        let _ = write!(
            s,
            " min_wait: {:.6} max_wait: {:.6} avg_wait: {:.6}",
            min.as_secs_f64(),
            max.as_secs_f64(),
            avg.as_secs_f64()
        );
    }
    s.push('\n');
    // clamd lists the STATS request itself as a running task.
    s.push_str("\tSTATS 0.000000 \n");
    let key = peer.key();
    let lines: Vec<TaskInfo> = match tasks {
        Tasks::All(Some((daemon, _omitted))) => daemon,
        Tasks::All(None) => snap.tasks.iter().map(|t| t.info()).collect(),
        Tasks::Own => snap
            .tasks
            .iter()
            .filter(|t| t.owner == Some(key))
            .map(|t| t.info())
            .collect(),
    };
    for t in &lines {
        let _ = writeln!(
            s,
            "\t{} {:.6} {}",
            t.command,
            t.elapsed_us as f64 / 1e6,
            t.filename
        );
    }
    for idle in snap.idle.iter().skip(1) {
        let _ = writeln!(s, "\tIDLE {:.6} ", idle.as_secs_f64());
    }
    s.push('\n');
    let fleet = shared.fleet();
    let _ = writeln!(
        s,
        "WORKERS: live {} max {} worker {} generation {} crashes {} last-replacement-ms {:.3}",
        fleet.serving,
        fleet.workers,
        shared.worker,
        fleet.generation,
        fleet.crashes,
        fleet.last_replacement_us as f64 / 1000.0
    );
    let used = fleet.worker_pss_kib as f64 / 1024.0;
    let total = fleet.daemon_pss_kib as f64 / 1024.0;
    let _ = write!(
        s,
        "MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A pools 1 pools_used {used:.3}M pools_total {total:.3}M\nEND"
    );
    out.extend_from_slice(s.as_bytes());
}
