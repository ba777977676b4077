//! The work behind each command, once the connection has read it.
//!
//! [`respond`] runs a prepared [`Work`] and writes its replies. It owns no
//! socket reading, so the same code serves single commands and IDSESSION
//! (where it runs as a task per command).

mod pathscan;
mod stats;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::files::ConnGuard;
use super::pool::RunError;
use super::stream::Writer;
use super::{Peer, Shared};
use crate::engine::{self, Verdict};
use crate::log::{LogBytes, LogStr};
use crate::proto::reply::{self, ReplyTo};
use crate::proto::CommandKind;

impl Ctx {
    /// See [`Shared::may_log`].
    pub fn may_log(&self) -> Option<u64> {
        self.shared.may_log(&self.guard)
    }
}

/// What a task needs to answer on a connection.
#[derive(Clone)]
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub writer: Writer,
    pub peer: Arc<Peer>,
    /// Held by everything that works for this connection.
    pub guard: Arc<ConnGuard>,
}

/// A command ready to run.
pub enum Work {
    Ping,
    Version,
    VersionCommands,
    Stats,
    /// Stream data and the share of `limits.stream-memory` it holds.
    Stream(Vec<u8>, Option<super::streams::StreamHold>),
    Fd(OwnedFd),
    /// A path command (files come through the supervisor's broker).
    Path {
        kind: CommandKind,
        path: Vec<u8>,
    },
}

impl Work {
    /// Answered at once, without a scanning thread.
    pub fn is_immediate(&self) -> bool {
        matches!(self, Work::Ping | Work::Version | Work::VersionCommands)
    }
}

/// Reply text for a full queue (the client retries; nothing hangs).
pub(crate) const QUEUE_FULL: &[u8] = b"Scan queue full (limits.max-queue), retry later.";

/// Reply text for a stream slower than `limits.stream-min-rate`.
pub(crate) const STREAM_TOO_SLOW: &[u8] = b"Stream slower than limits.stream-min-rate, closed.";

/// Reply text when all stream memory is in use.
pub(crate) const STREAM_BUDGET: &[u8] =
    b"Stream memory in use by other clients (limits.stream-memory), retry later.";

pub async fn respond(ctx: &Ctx, work: Work, to: ReplyTo) {
    let shared = &ctx.shared;
    let text: Vec<u8> = match work {
        Work::Ping => reply::PONG.to_vec(),
        Work::Version => version_text(shared),
        Work::VersionCommands => {
            // Only what this listener accepts.
            let profile = shared.profile(ctx.peer.listener);
            reply::version_commands(&version_text(shared), profile.words())
        }
        Work::Stats => {
            // STATS is its own multi-line block; only END carries the terminator.
            let mut out = Vec::new();
            if let Some(id) = to.id {
                out.extend_from_slice(format!("{id}: ").as_bytes());
            }
            let tasks = if ctx.peer.admin {
                stats::Tasks::All(shared.daemon_tasks(ctx.guard.id).await)
            } else {
                stats::Tasks::Own
            };
            stats::render(shared, &ctx.peer, tasks, &mut out);
            out.push(to.term);
            let _ = ctx.writer.send(&out).await;
            return;
        }
        Work::Stream(data, budget) => {
            let text = scan_stream(ctx, data).await;
            drop(budget);
            return reply_to_scan(ctx, &to.to_vec(&text)).await;
        }
        Work::Fd(fd) => return reply_to_scan(ctx, &to.to_vec(&scan_fd(ctx, fd).await)).await,
        Work::Path { kind, path } => return pathscan::respond(ctx, kind, path, to).await,
    };
    let _ = ctx.writer.send(&to.to_vec(&text)).await;
}

/// A scan's reply; counted as abandoned when the client is gone.
async fn reply_to_scan(ctx: &Ctx, reply: &[u8]) {
    if ctx.writer.send(reply).await.is_err() {
        ctx.shared.metrics.abandoned();
    }
}

fn version_text(shared: &Shared) -> Vec<u8> {
    let engine = shared.engine();
    let info = engine.info();
    let time;
    let db = if info.db_version != 0 {
        time = ctime(info.db_time);
        Some((info.db_version, time.as_str()))
    } else {
        None
    };
    reply::version(&engine::version(), db)
}

/// `ctime(3)` without its newline, in local time: `Fri Nov 27 12:27:41 2026`.
fn ctime(secs: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(secs as i64, 0).single() {
        Some(t) => t.format("%a %b %e %H:%M:%S %Y").to_string(),
        None => secs.to_string(),
    }
}

async fn scan_stream(ctx: &Ctx, data: Vec<u8>) -> Vec<u8> {
    let engine = ctx.shared.engine();
    let bytes = data.len();
    let started = Instant::now();
    let gone = Arc::clone(ctx.guard.gone_flag());
    let result = ctx
        .shared
        .pool
        .run(Some(ctx.peer.key()), move |slot| {
            slot.begin("INSTREAM", b"");
            slot.scanning(|| engine.scan_bytes_unless(&data, false, Some(&gone)))
        })
        .await;
    let target = instream_name(&ctx.peer.info);
    finish(
        ctx,
        "stream",
        target.as_bytes(),
        "INSTREAM",
        result,
        bytes as u64,
        started,
    )
}

/// The file name clamd 1.4 gives a VirusEvent command for INSTREAM data:
/// the client's IPv4 address and port, or `local` for any other peer.
fn instream_name(peer: &crate::ipc::messages::PeerInfo) -> String {
    match peer {
        crate::ipc::messages::PeerInfo::Tcp(std::net::SocketAddr::V4(a)) => {
            format!("instream({}@{})", a.ip(), a.port())
        }
        _ => "instream(local)".to_string(),
    }
}

/// Why a passed descriptor cannot be scanned, if it cannot: libclamav
/// answers `OK` for a descriptor it cannot read (opened with `O_PATH` or
/// write-only), so those are refused before a scan, as is anything that is
/// not a regular file (clamd's reply).
fn unscannable(fd: &OwnedFd) -> Option<(&'static str, &'static [u8])> {
    use rustix::fs::{fcntl_getfl, OFlags as OFlag};
    let flags = match fcntl_getfl(fd) {
        Ok(f) => f,
        Err(_) => return Some(("the descriptor's flags cannot be read", CANT_READ)),
    };
    let regular = matches!(
        rustix::fs::fstat(fd),
        Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    );
    if !regular {
        return Some(("descriptor is not a regular file", b"Not a regular file"));
    }
    if flags.contains(OFlag::PATH) {
        return Some((
            "descriptor opened with O_PATH: it cannot be read (open the file for reading)",
            CANT_READ,
        ));
    }
    if flags & OFlag::ACCMODE == OFlag::WRONLY {
        return Some((
            "descriptor opened write-only: it cannot be read (open the file for reading)",
            CANT_READ,
        ));
    }
    None
}

/// libclamav's text for a file it cannot read (`CL_EREAD`).
const CANT_READ: &[u8] = b"Can't read file";

async fn scan_fd(ctx: &Ctx, fd: OwnedFd) -> Vec<u8> {
    let name = format!("fd[{}]", fd.as_raw_fd());
    if let Some((why, text)) = unscannable(&fd) {
        let reason = if text == CANT_READ {
            crate::ipc::observe::ErrorReason::Io
        } else {
            crate::ipc::observe::ErrorReason::NotRegularFile
        };
        ctx.shared.metrics.error(reason);
        tracing::info!(
            command = "FILDES",
            scan_result = "error",
            reason = why,
            "descriptor not scanned"
        );
        return reply::error(name.as_bytes(), text);
    }
    let engine = ctx.shared.engine();
    let started = Instant::now();
    let shown = name.clone();
    let gone = Arc::clone(ctx.guard.gone_flag());
    let result = ctx
        .shared
        .pool
        .run(Some(ctx.peer.key()), move |slot| {
            let size = rustix::fs::fstat(&fd).map_or(0, |st| st.st_size as u64);
            let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap_or_else(|_| PathBuf::from(&shown));
            slot.begin("FILDES", shown.as_bytes());
            let verdict =
                slot.scanning(|| engine.scan_fd_unless(fd.as_fd(), &target, false, Some(&gone)));
            (verdict, size, target)
        })
        .await;
    match result {
        Ok((v, size, target)) => {
            let target = target.as_os_str().as_bytes();
            finish(ctx, &name, target, "FILDES", Ok(v), size, started)
        }
        Err(e) => finish(ctx, &name, b"", "FILDES", Err(e), 0, started),
    }
}

/// Turns a verdict into the reply text, counts it and logs it. `target` is
/// the file name a VirusEvent command is given (clamd's: `instream(…)`, or
/// the descriptor's path).
fn finish(
    ctx: &Ctx,
    name: &str,
    target: &[u8],
    command: &'static str,
    result: Result<Verdict, RunError>,
    bytes: u64,
    started: Instant,
) -> Vec<u8> {
    let verdict = match result {
        Ok(v) => v,
        Err(RunError::Busy(busy)) => {
            ctx.shared.metrics.queue_full();
            if let Some(suppressed) = ctx.may_log() {
                tracing::warn!(command, scan_result = "error", reason = ?busy, suppressed, "scan refused: queue full");
            }
            return reply::error(name.as_bytes(), QUEUE_FULL);
        }
        // Written off: the worker logged it and retires; the client gets
        // what libclamav says of a scan stopped at its time limit.
        Err(RunError::Overrun) => Verdict::time_limit(ctx.shared.config.scan.alert_exceeds_max),
    };
    record(
        &ctx.shared,
        &ctx.peer.listener_name,
        name.as_bytes(),
        command,
        &verdict,
        bytes,
        started.elapsed(),
    );
    // The self-test's EICAR is no client's detection (the gate ignores it
    // too: the worker's word is not needed for that).
    if &*ctx.peer.listener_name != crate::ipc::observe::SELFTEST_LISTENER {
        ctx.shared.report_found(ctx.guard.id, target, &verdict);
    }
    verdict_text(name.as_bytes(), &verdict)
}

pub(crate) fn verdict_text(name: &[u8], verdict: &Verdict) -> Vec<u8> {
    match verdict {
        Verdict::Clean => reply::ok(name),
        Verdict::Found(names) => {
            reply::found(name, names.first().map(String::as_bytes).unwrap_or(b""))
        }
        Verdict::Error { message, .. } => reply::error(name, message.as_bytes()),
        // Nobody reads it: the client has gone.
        Verdict::Abandoned => reply::error(name, b"Scan abandoned: the client has gone."),
    }
}

/// Counters and the structured log line of one scan. `duration`: from
/// its submission to the scan pool to the verdict.
pub(crate) fn record(
    shared: &Shared,
    listener: &str,
    name: &[u8],
    command: &str,
    verdict: &Verdict,
    bytes: u64,
    duration: std::time::Duration,
) {
    shared
        .metrics
        .scan(listener, command, verdict, bytes, duration);
    let duration_ms = duration.as_millis() as u64;
    let c = &shared.counters;
    if *verdict == Verdict::Abandoned {
        c.abandoned.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            command,
            scan_target = %LogBytes(name),
            bytes,
            duration_ms,
            "scan abandoned: the client is gone"
        );
        return;
    }
    // The self-test's scans are in the metrics (listener "selftest"), not
    // in STATS and the status line, which count the clients'.
    if listener == crate::ipc::observe::SELFTEST_LISTENER {
        if let Verdict::Found(names) = verdict {
            tracing::debug!(command, virus_name = %LogStr(&names.join(",")), "self-test scan found");
            return;
        }
    } else {
        c.scans.fetch_add(1, Ordering::Relaxed);
    }
    match verdict {
        Verdict::Abandoned => {}
        Verdict::Clean => {
            if shared.config.log.clean {
                tracing::info!(
                    command,
                    scan_target = %LogBytes(name),
                    scan_result = "clean",
                    bytes,
                    duration_ms,
                    "scan clean"
                );
            } else {
                tracing::debug!(
                    command,
                    scan_target = %LogBytes(name),
                    scan_result = "clean",
                    bytes,
                    duration_ms,
                    "scan clean"
                );
            }
        }
        Verdict::Found(names) => {
            c.found.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                command,
                scan_target = %LogBytes(name),
                scan_result = "found",
                virus_name = %LogStr(&names.join(",")),
                bytes,
                duration_ms,
                "virus found"
            );
        }
        Verdict::Error { message, .. } => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            if verdict.is_temp_failure() {
                shared.temp_failure();
            }
            tracing::info!(
                command,
                scan_target = %LogBytes(name),
                scan_result = "error",
                error = message.as_str(),
                bytes,
                duration_ms,
                "scan error"
            );
        }
    }
}
