//! The supervisor's end of the log relay (`log::relay`): for each child
//! process, a log channel and a stderr pipe, and the readers that write
//! what comes through them as the supervisor's own lines, marked as that
//! child's (`source=worker worker=7 pid=1234`) and within the budgets.
//!
//! * Records on the log channel are decoded strictly
//!   ([`LogRecord::decode`]); a datagram that does not decode, or carries a
//!   descriptor, is a protocol violation: reading stops and the caller
//!   ends the child, as for its other channels. The pid in the marks is
//!   the kernel's (SCM_CREDENTIALS on every datagram), not the child's
//!   word.
//! * Bytes on the stderr pipe (libclamav writing to stderr, a panic
//!   message) are cut into lines of at most [`MAX_STDERR_LINE`] bytes and
//!   written as warnings with `via=stderr`. The child never holds the
//!   daemon's stderr.
//! * Budgets ([`log::relay::classify`](crate::log::relay::classify)): a
//!   line that names a live connection of that worker (its `id` field) is
//!   charged to that client's identity ([`PeerKey`]), in the budgets the
//!   broker's refusals and the eviction lines share ([`PeerBudgets`]); any
//!   other line to the child's own budgets of the same sizes. Lines beyond
//!   a budget are counted and reported with the next line that is written:
//!   one supervisor line with `suppressed=N` (and `dropped=N` for records
//!   the child could not send because its channel was full).
#![forbid(unsafe_code)]

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncReadExt;

use super::authority::Authority;
use crate::ipc::logrec::LogRecord;
use crate::ipc::typed::{AsyncTyped, Nothing, RecvError, Typed};
use crate::log::limiter::{record_cost, Budget, Class, PeerBudgets, PeerSizes, Verdict};
use crate::log::relay::{self, Marks, Source};
use crate::policy::{PeerKey, Prefixes};

/// Longest line relayed from a child's stderr; longer ones are cut into
/// several.
pub const MAX_STDERR_LINE: usize = 4096;

/// What every reader shares.
pub struct Relay {
    /// The live connections of each worker (the gate's grants).
    pub authority: Arc<Authority>,
    /// How TCP addresses group into clients.
    pub prefixes: Prefixes,
    pub budgets: Arc<PeerBudgets>,
    /// The sizes of each child's own budgets (those of one client).
    pub sizes: PeerSizes,
}

/// The child's ends: the log channel (an exec'd child finds it at
/// `log::relay::LOG_FD`) and the write end of its stderr pipe. Drop them
/// once the child has them.
pub struct ChildEnds {
    pub channel: OwnedFd,
    pub stderr: OwnedFd,
}

/// Reads a child's log channel until it ends; `Some(why)` when the child
/// broke its rules (end the child).
pub type Reader = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// One child's budgets and counts.
struct ChildLog {
    marks: Marks,
    lines: Budget,
    volume: Budget,
    /// Records the child reported dropped, not yet written.
    dropped: u64,
}

impl Relay {
    /// A log channel and a stderr pipe for a new child from `source`
    /// (`pid` when already known, as for an exec'd child). The stderr
    /// reader runs at once; the returned [`Reader`] must be spawned by the
    /// caller, which hears of violations from it. Needs the runtime.
    pub fn open(
        self: &Arc<Self>,
        source: Source,
        pid: Option<i32>,
    ) -> std::io::Result<(ChildEnds, Reader)> {
        let (ours, theirs) = Typed::<Nothing, LogRecord>::pair()?;
        ours.pass_credentials()?;
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let state = Arc::new(Mutex::new(ChildLog {
            marks: Marks {
                source,
                pid,
                via_stderr: false,
            },
            lines: Budget::sized(self.sizes.lines),
            volume: Budget::sized(self.sizes.volume),
            dropped: 0,
        }));
        let channel = AsyncTyped::new(ours)?;
        tokio::spawn(read_stderr(read, Arc::clone(self), Arc::clone(&state)));
        let relay = Arc::clone(self);
        let reader = Box::pin(async move {
            let broken = read_channel(&channel, &relay, &state).await;
            relay.flush(&state);
            broken
        });
        Ok((
            ChildEnds {
                channel: theirs.into(),
                stderr: write,
            },
            reader,
        ))
    }

    /// Writes one record of a child, if the level and the budget allow.
    fn relay(&self, state: &Mutex<ChildLog>, rec: LogRecord, pid: Option<i32>, via_stderr: bool) {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if pid.is_some() {
            s.marks.pid = pid;
        }
        s.dropped = s.dropped.saturating_add(u64::from(rec.dropped));
        if !crate::log::enabled(&rec.target, rec.level.to_tracing()) {
            return;
        }
        let class = relay::class_of(&rec);
        let key = self.peer_of(s.marks.source, &rec);
        let now = Instant::now();
        let bytes = record_cost(&rec);
        let verdict = match key {
            Some(k) => self.budgets.check(class, k, now, bytes),
            None => match class {
                Class::Lines => s.lines.charge(now, bytes),
                Class::Volume => s.volume.charge(now, bytes),
            },
        };
        let Verdict::Allow { suppressed } = verdict else {
            return;
        };
        let dropped = std::mem::take(&mut s.dropped);
        if suppressed > 0 || dropped > 0 {
            summary(s.marks.source, key, suppressed, dropped);
        }
        let marks = Marks {
            via_stderr,
            ..s.marks
        };
        drop(s);
        crate::log::emit(&relay::relayed(rec, &marks));
    }

    /// The identity of the client a worker's record is about: its `id`
    /// field, when that names a live connection of this worker.
    fn peer_of(&self, source: Source, rec: &LogRecord) -> Option<PeerKey> {
        let Source::Worker(w) = source else {
            return None;
        };
        let id = relay::conn_id(rec)?;
        let grant = self.authority.lookup(id, w).ok()?;
        Some(PeerKey::of(&grant.identity, self.prefixes))
    }

    /// The child is gone: what its own budgets still hold, and its drops.
    fn flush(&self, state: &Mutex<ChildLog>) {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let suppressed = s.lines.take_pending() + s.volume.take_pending();
        let dropped = std::mem::take(&mut s.dropped);
        if suppressed > 0 || dropped > 0 {
            summary(s.marks.source, None, suppressed, dropped);
        }
    }
}

/// Writes what a child sends on `channel`, marked, from a thread of its
/// own, without budgets: for `clamsentry sandbox-check`, which has no
/// runtime and whose engine holder reads no client byte. Ends at the first
/// record that does not decode (or comes with descriptors).
pub fn relay_blocking(channel: Typed<Nothing, LogRecord>, source: Source) -> std::io::Result<()> {
    channel.pass_credentials()?;
    std::thread::Builder::new()
        .name("log-relay".into())
        .spawn(move || {
            while let Ok(Some(m)) = channel.recv() {
                let rec = m.msg;
                let marks = Marks {
                    source,
                    pid: m.pid,
                    via_stderr: false,
                };
                crate::log::emit(&relay::relayed(rec, &marks));
            }
        })?;
    Ok(())
}

/// Writes one line per client identity whose budget window ended with
/// lines suppressed (a client that stopped is reported without waiting
/// for its next line). Called from the supervisor's housekeeping.
pub fn report_expired(budgets: &PeerBudgets, now: Instant) {
    for (class, key, suppressed) in budgets.take_expired(now) {
        let budget = class.keys();
        match key {
            Some(key) => tracing::info!(
                peer_key = %key,
                suppressed,
                budget,
                "log lines about this client not written in its last minute"
            ),
            None => tracing::info!(
                suppressed,
                budget,
                "log lines about clients beyond the tracked ones (or TCP clients beyond the first 16 reported) not written in their last minute"
            ),
        }
    }
}

/// The supervisor's line about a child's lines it did not write.
fn summary(source: Source, key: Option<PeerKey>, suppressed: u64, dropped: u64) {
    let child = match source {
        Source::Worker(w) => format!("worker {w}"),
        Source::EngineHolder(g) => format!("engine holder {g}"),
        Source::Helper(name) => name.to_string(),
    };
    match key {
        Some(key) => tracing::info!(
            child,
            peer_key = %key,
            suppressed,
            dropped,
            "log lines about this client not written: over its budget (log.peer-lines-per-minute, log.result-lines-per-minute, their bytes, and for TCP clients log.tcp-peer-bytes-per-minute, log.tcp-result-bytes-per-minute)"
        ),
        None => tracing::info!(
            child,
            suppressed,
            dropped,
            "log lines of this process not written: over its budget, or its log channel was full"
        ),
    }
}

async fn read_channel(
    channel: &AsyncTyped<Nothing, LogRecord>,
    relay: &Relay,
    state: &Mutex<ChildLog>,
) -> Option<String> {
    loop {
        let m = match channel.recv().await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Some(format!("log channel: {e}"))
            }
            Err(RecvError::Io(_)) => return None,
            Err(RecvError::Descriptors(_)) => return Some("descriptors on the log channel".into()),
            Err(RecvError::Decode(e)) => return Some(format!("log record: {e}")),
        };
        relay.relay(state, m.msg, m.pid, false);
    }
}

async fn read_stderr(fd: OwnedFd, relay: Arc<Relay>, state: Arc<Mutex<ChildLog>>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut pending = Vec::with_capacity(MAX_STDERR_LINE);
    let mut chunk = vec![0u8; MAX_STDERR_LINE];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        for line in split_lines(&mut pending, MAX_STDERR_LINE) {
            relay.relay(&state, relay::stderr_line(&line), None, true);
        }
    }
    if !pending.is_empty() {
        relay.relay(&state, relay::stderr_line(&pending), None, true);
    }
}

/// Takes the complete lines out of `pending` (without their `\n` or
/// `\r\n`; empty ones skipped), and cuts a line of `max` bytes or more
/// without an end into pieces of `max`.
pub fn split_lines(pending: &mut Vec<u8>, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rest = &pending[start..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) if nl <= max => {
                let line = &rest[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() {
                    out.push(line.to_vec());
                }
                start += nl + 1;
            }
            _ if rest.len() >= max => {
                out.push(rest[..max].to_vec());
                start += max;
            }
            _ => break,
        }
    }
    pending.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_bytes_become_bounded_lines() {
        let mut p = b"one\r\ntwo\n\npart".to_vec();
        assert_eq!(
            split_lines(&mut p, 8),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(p, b"part");
        p.extend_from_slice(b"ial and long\n");
        assert_eq!(
            split_lines(&mut p, 8),
            vec![b"partial ".to_vec(), b"and long".to_vec()]
        );
        assert!(p.is_empty());
        let mut p = vec![b'x'; 20];
        assert_eq!(split_lines(&mut p, 8).len(), 2);
        assert_eq!(p.len(), 4);
    }
}
