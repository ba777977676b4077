//! The STATS block, in clamd's `thrmgr_printstats` layout so clamdtop can
//! read it. clamsentry has one pool, so `POOLS: 1` and one `STATE` block.
//!
//! Differences that come from being a different process: the scanning pool
//! is fixed (live = max), STATS itself runs on the connection task but is
//! shown as one busy thread as clamd shows it, `idle-timeout` is clamsentry's
//! session idle timeout, and the MEMSTATS pool figures report this process's
//! resident memory, because libclamav's memory-pool statistics are not part
//! of its public API.

use std::fmt::Write;

use super::super::Shared;

pub fn render(shared: &Shared, out: &mut Vec<u8>) {
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
    for t in &snap.tasks {
        let _ = writeln!(
            s,
            "\t{} {:.6} {}",
            t.command,
            t.started.elapsed().as_secs_f64(),
            t.filename
        );
    }
    for idle in snap.idle.iter().skip(1) {
        let _ = writeln!(s, "\tIDLE {:.6} ", idle.as_secs_f64());
    }
    s.push('\n');
    let rss = resident_mib();
    let _ = write!(
        s,
        "MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A pools 1 pools_used {rss:.3}M pools_total {rss:.3}M\nEND"
    );
    out.extend_from_slice(s.as_bytes());
}

/// Resident memory of this process in MiB, from /proc/self/statm.
fn resident_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    (pages * page) as f64 / (1024.0 * 1024.0)
}
