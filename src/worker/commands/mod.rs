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
    Stream(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>),
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
            stats::render(shared, &mut out);
            out.push(to.term);
            let _ = ctx.writer.send(&out).await;
            return;
        }
        Work::Stream(data, budget) => {
            let text = scan_stream(ctx, data).await;
            drop(budget);
            text
        }
        Work::Fd(fd) => scan_fd(ctx, fd).await,
        Work::Path { kind, path } => return pathscan::respond(ctx, kind, path, to).await,
    };
    let _ = ctx.writer.send(&to.to_vec(&text)).await;
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
        .run(move |slot| {
            slot.begin("INSTREAM", "");
            engine.scan_bytes_unless(&data, false, Some(&gone))
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

async fn scan_fd(ctx: &Ctx, fd: OwnedFd) -> Vec<u8> {
    let name = format!("fd[{}]", fd.as_raw_fd());
    let engine = ctx.shared.engine();
    let started = Instant::now();
    let shown = name.clone();
    let gone = Arc::clone(ctx.guard.gone_flag());
    let result = ctx
        .shared
        .pool
        .run(move |slot| {
            let meta = nix::sys::stat::fstat(fd.as_raw_fd());
            let regular = matches!(meta, Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFREG);
            if !regular {
                return (None, 0, PathBuf::new());
            }
            let size = meta.map(|st| st.st_size as u64).unwrap_or(0);
            let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap_or_else(|_| PathBuf::from(&shown));
            slot.begin("FILDES", &shown);
            let verdict = engine.scan_fd_unless(fd.as_fd(), &target, false, Some(&gone));
            (Some(verdict), size, target)
        })
        .await;
    match result {
        Ok((None, _, _)) => {
            tracing::info!(
                command = "FILDES",
                scan_result = "error",
                "descriptor is not a regular file"
            );
            reply::error(name.as_bytes(), b"Not a regular file")
        }
        Ok((Some(v), size, target)) => {
            let target = target.as_os_str().as_bytes();
            finish(ctx, &name, target, "FILDES", Ok(v), size, started)
        }
        Err(busy) => finish(ctx, &name, b"", "FILDES", Err(busy), 0, started),
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
    result: Result<Verdict, super::pool::Busy>,
    bytes: u64,
    started: Instant,
) -> Vec<u8> {
    let verdict = match result {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(command, scan_result = "error", "scan refused: queue full");
            return reply::error(name.as_bytes(), QUEUE_FULL);
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    record(
        &ctx.shared,
        name.as_bytes(),
        command,
        &verdict,
        bytes,
        duration_ms,
    );
    ctx.shared.report_found(ctx.guard.id, target, &verdict);
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

/// Counters and the structured log line of one scan.
pub(crate) fn record(
    shared: &Shared,
    name: &[u8],
    command: &str,
    verdict: &Verdict,
    bytes: u64,
    duration_ms: u64,
) {
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
    c.scans.fetch_add(1, Ordering::Relaxed);
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
