//! One client connection: framing, the single-command flow, IDSESSION.
//!
//! Reading happens here and only here; the work of a command (scanning,
//! formatting replies) is in [`super::commands`]. Inside IDSESSION each
//! command's work runs as its own task, so replies may complete out of order
//! as in clamd, each prefixed with its id.
//!
//! Deadlines (see [`super::pace`]): the first command must be complete
//! `command-read-timeout` after accept, a session command `command-timeout`
//! after its first byte, a session waits `idle-timeout` for that byte; a
//! stream must not be silent for `read-timeout` nor slower than
//! `stream-min-rate`. A command deadline answers `COMMAND READ TIMED OUT\n`
//! and closes, like clamd; a slow stream gets an ERROR. Replies are written
//! within `send-timeout`, or the client counts as gone.
//!
//! Refusals and client errors are logged through the connection's and the
//! peer's log budgets ([`Ctx::may_log`]): a hostile client cannot flood the
//! log, and the next line it gets says how many were suppressed.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::commands::{self, Ctx, Work};
use super::pace::{Check, CommandClock, Pace};
pub use super::stream::Stream;
use super::stream::{Reader, Writer};
use super::streams::{StreamHold, StreamMemory, GRANT_WAIT};
use super::{Peer, Shared};
use crate::ipc::messages::{AdminCommand, ConnInfo, FromWorker};
use crate::ipc::observe::Limit;
use crate::policy::Decision;
use crate::proto::framer::Step;
use crate::proto::instream::{ChunkDecoder, ChunkHeader};
use crate::proto::reply::{self, ReplyTo};
use crate::proto::{self, Command, CommandKind, Framing};

pub async fn serve(shared: Arc<Shared>, stream: Stream, info: ConnInfo) {
    let limits = &shared.config.limits;
    let (reader, w) = stream.split();
    let writer = Writer::new(w, Duration::from_millis(limits.send_timeout));
    let peer = Peer::of(&info);
    let id = info.id;
    // The supervisor marks every line of this worker with `worker` and
    // `pid` itself (`log::relay`).
    let span = tracing::info_span!(
        "conn",
        id,
        peer = %peer,
        listener = info.listener_name.as_str()
    );
    let guard = shared.conn_guard(id, &peer);
    let mut conn = Conn {
        accepted: Instant::now(),
        frame_started: None,
        buf: vec![0; limits.max_command_length.0 as usize],
        len: 0,
        fresh: false,
        fds: Vec::new(),
        reader,
        ctx: Ctx {
            shared,
            writer,
            peer: Arc::new(peer),
            guard,
        },
        told_active: false,
        linger_at_close: true,
    };
    async {
        tracing::debug!("connected");
        conn.run().await;
        conn.close().await;
        let unsaid = conn
            .ctx
            .guard
            .log
            .lock()
            .map_or(0, |mut b| b.take_pending());
        if unsaid > 0 {
            if let Some(suppressed) = conn.ctx.shared.may_log_peer(&conn.ctx.guard) {
                tracing::info!(
                    suppressed = unsaid + suppressed,
                    "log lines of this connection suppressed"
                );
            }
        }
        tracing::debug!("closed");
    }
    .instrument(span)
    .await;
}

struct Conn {
    /// When the supervisor handed the connection over (the first command's
    /// deadline counts from here).
    accepted: Instant,
    /// When the first byte of the command being read arrived.
    frame_started: Option<Instant>,
    reader: Reader,
    buf: Vec<u8>,
    len: usize,
    /// True until a command is decoded after the last read (legacy framing).
    fresh: bool,
    fds: Vec<OwnedFd>,
    ctx: Ctx,
    /// The supervisor knows this connection sent a complete command.
    told_active: bool,
    /// The conversation ends by the daemon's decision (an error reply, a
    /// limit) while the client may still be sending: read its bytes for a
    /// moment before closing, so that unread input does not turn the close
    /// into a reset that destroys the replies still on their way.
    linger_at_close: bool,
}

struct Frame {
    framing: Framing,
    cmd: Command,
}

/// How long a draining worker still waits for a command from an idle client.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Why a connection stops reading.
enum End {
    Eof,
    TimedOut,
    TooLong,
    /// A stream slower than `stream-min-rate`.
    TooSlow,
    Shutdown,
    /// Every buffered command is handled and a passed descriptor is left
    /// over; `awaiting`: a FILDES waits for its payload byte (the
    /// descriptor came with the command itself, not with that byte).
    StrayFd {
        awaiting: bool,
    },
    Io(io::Error),
}

/// Why a stream could not be read to its end.
enum StreamError {
    TooLarge(u32),
    /// The global stream memory budget could not cover the next chunk
    /// (carries the bytes this stream already held).
    Budget(usize),
    End(End),
}

impl Conn {
    fn shared(&self) -> &Shared {
        &self.ctx.shared
    }

    async fn run(&mut self) {
        let first =
            self.accepted + Duration::from_secs(self.shared().config.limits.command_read_timeout);
        let frame = match self.next_frame(Wait::Until(first), true).await {
            Ok(f) => f,
            Err(end) => {
                self.count_limit(&end, Limit::CommandReadTimeout);
                return self.end(end, b'\n').await;
            }
        };
        let to = ReplyTo::new(None, frame.framing.terminator());
        let kind = frame.cmd.kind;
        if !matches!(kind, CommandKind::Fildes | CommandKind::IdSession) && !self.fds.is_empty() {
            // One command per connection: a descriptor it did not ask for is dropped.
            if let Some(suppressed) = self.ctx.may_log() {
                tracing::warn!(
                    command = kind.word(),
                    suppressed,
                    "descriptor sent without FILDES, closed"
                );
            }
            self.fds.clear();
        }
        if self.refused(&frame.cmd, to).await {
            return;
        }
        if kind == CommandKind::IdSession {
            return self.session(to.term).await;
        }
        // clamd accepts one command per connection outside IDSESSION. For
        // commands it hands to a scanning thread, bytes already received
        // after the command are answered with an error first (as clamd's
        // receive thread does); the others just close.
        let dispatched = matches!(
            kind,
            CommandKind::Scan
                | CommandKind::ContScan
                | CommandKind::MultiScan
                | CommandKind::AllMatchScan
                | CommandKind::Fildes
                | CommandKind::Stats
        );
        if dispatched && self.len > 0 {
            if let Some(suppressed) = self.ctx.may_log() {
                tracing::warn!(
                    bytes = self.len,
                    suppressed,
                    "client sent bytes after its command"
                );
            }
            let _ = self
                .ctx
                .writer
                .send(&to.to_vec(reply::ERROR_PROCESSING))
                .await;
        }
        let Some(work) = self.prepare(frame, to).await else {
            return;
        };
        self.respond_watched(work, to).await;
    }

    /// Runs a command's work and writes its replies. While a path walk
    /// runs, or a scan that has not finished after
    /// [`WATCH_AFTER`](super::hangup::WATCH_AFTER), the connection is
    /// watched for its client's hang-up, which abandons the work.
    async fn respond_watched(&self, work: Work, to: ReplyTo) {
        let delay = match &work {
            Work::Path { .. } => Duration::ZERO,
            Work::Stream(..) | Work::Fd(_) => super::hangup::WATCH_AFTER,
            _ => return commands::respond(&self.ctx, work, to).await,
        };
        let ctx = &self.ctx;
        let work = commands::respond(ctx, work, to);
        tokio::pin!(work);
        if !delay.is_zero() {
            tokio::select! {
                biased;
                () = &mut work => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
        let _watch =
            ctx.shared
                .hangups
                .watch(ctx.guard.id, self.reader.socket(), ctx.guard.gone_flag());
        work.await;
    }

    /// Applies the listener's command profile; answers and logs a refusal.
    async fn refused(&mut self, cmd: &Command, to: ReplyTo) -> bool {
        let peer = Arc::clone(&self.ctx.peer);
        let decision = self
            .shared()
            .profile(peer.listener)
            .decide(cmd.kind, peer.admin);
        let metrics = &self.ctx.shared.metrics;
        metrics.command(&peer.listener_name, cmd.kind, decision);
        let (text, reason) = match decision {
            Decision::Allow => return false,
            Decision::NotOnListener => (
                format!("{} command not allowed on this listener.", cmd.kind.word()),
                "not in this listener's command profile",
            ),
            Decision::NotAdmin => (
                format!(
                    "{} command requires an administrator (root, policy.unix.admin-users or admin-groups).",
                    cmd.kind.word()
                ),
                "administrative command from a non-administrator",
            ),
        };
        if let Some(suppressed) = self.ctx.may_log() {
            tracing::warn!(
                listener = peer.listener.as_str(),
                peer = %peer,
                command = cmd.kind.word(),
                reason,
                suppressed,
                "command refused"
            );
        }
        let reply = match (&cmd.arg, cmd.kind.is_path_scan()) {
            (Some(path), true) => reply::error(path, text.as_bytes()),
            // Inside IDSESSION a STATS client reads a block until its END
            // line (clamdtop does): the refusal comes as such a block, with
            // a line clamdtop shows in its task list, so nobody waits for an
            // END that would never come.
            _ if cmd.kind == CommandKind::Stats && to.id.is_some() => format!(
                "{text} ERROR\n\tREFUSED 0.000000 STATS is not allowed on this listener (policy.{}.commands)\n\nEND",
                peer.listener.as_str()
            )
            .into_bytes(),
            _ => format!("{text} ERROR").into_bytes(),
        };
        let _ = self.ctx.writer.send(&to.to_vec(&reply)).await;
        true
    }

    /// Turns a frame into work, answering directly the commands that need
    /// no work. `None` means the connection is done.
    async fn prepare(&mut self, frame: Frame, to: ReplyTo) -> Option<Work> {
        let Frame { cmd, .. } = frame;
        let shared = Arc::clone(&self.ctx.shared);
        tracing::debug!(command = cmd.kind.word(), "command");
        match cmd.kind {
            CommandKind::Ping => Some(Work::Ping),
            CommandKind::Version => Some(Work::Version),
            CommandKind::VersionCommands => Some(Work::VersionCommands),
            CommandKind::Stats => Some(Work::Stats),
            CommandKind::Scan
            | CommandKind::ContScan
            | CommandKind::MultiScan
            | CommandKind::AllMatchScan => Some(Work::Path {
                kind: cmd.kind,
                path: cmd.arg.unwrap_or_default(),
            }),
            CommandKind::Fildes => match (!self.fds.is_empty()).then(|| self.fds.remove(0)) {
                Some(fd) => Some(Work::Fd(fd)),
                None => {
                    if let Some(suppressed) = self.ctx.may_log() {
                        tracing::warn!(suppressed, "FILDES without a descriptor");
                    }
                    let _ = self
                        .ctx
                        .writer
                        .send(&to.to_vec(reply::NO_FD_RECEIVED))
                        .await;
                    None
                }
            },
            CommandKind::Instream => match self.read_stream().await {
                Ok((data, budget)) => Some(Work::Stream(data, budget)),
                Err(StreamError::Budget(held)) => {
                    shared.metrics.limit(Limit::StreamMemory);
                    if let Some(suppressed) = self.ctx.may_log() {
                        tracing::warn!(
                            held,
                            budget = shared.config.limits.stream_memory.0,
                            suppressed,
                            "INSTREAM refused: limits.stream-memory exhausted"
                        );
                    }
                    let text = reply::error(b"stream", super::commands::STREAM_BUDGET);
                    let _ = self.ctx.writer.send(&to.to_vec(&text)).await;
                    self.linger().await;
                    None
                }
                Err(StreamError::TooLarge(len)) => {
                    shared.metrics.limit(Limit::StreamMaxLength);
                    if let Some(suppressed) = self.ctx.may_log() {
                        tracing::warn!(
                            chunk = len,
                            limit = shared.config.limits.stream_max_length.0,
                            suppressed,
                            "INSTREAM refused: limits.stream-max-length exceeded"
                        );
                    }
                    let _ = self
                        .ctx
                        .writer
                        .send(&to.to_vec(reply::SIZE_LIMIT_EXCEEDED))
                        .await;
                    self.linger().await;
                    None
                }
                Err(StreamError::End(End::TooSlow)) => {
                    shared.metrics.limit(Limit::StreamMinRate);
                    if let Some(suppressed) = self.ctx.may_log() {
                        tracing::warn!(
                            min_rate = shared.config.limits.stream_min_rate.0,
                            window = shared.config.limits.stream_rate_window,
                            suppressed,
                            "INSTREAM ended: slower than limits.stream-min-rate"
                        );
                    }
                    let text = reply::error(b"stream", super::commands::STREAM_TOO_SLOW);
                    let _ = self.ctx.writer.send(&to.to_vec(&text)).await;
                    None
                }
                Err(StreamError::End(end)) => {
                    self.count_limit(&end, Limit::ReadTimeout);
                    self.end(end, to.term).await;
                    None
                }
            },
            CommandKind::Reload => {
                tracing::info!(command = "RELOAD", "reload requested by client");
                if shared
                    .ask_admin(self.ctx.guard.id, AdminCommand::Reload)
                    .await
                    .is_some()
                {
                    let _ = self.ctx.writer.send(&to.to_vec(reply::RELOADING)).await;
                }
                None
            }
            CommandKind::Shutdown | CommandKind::Quit => {
                tracing::info!(command = cmd.kind.word(), "shutdown requested by client");
                shared
                    .ask_admin(self.ctx.guard.id, AdminCommand::Shutdown)
                    .await;
                None
            }
            CommandKind::Maint => {
                let request = match cmd.arg.as_deref() {
                    None => None,
                    Some(b"ON") => Some(true),
                    Some(b"OFF") => Some(false),
                    Some(_) => {
                        let _ = self
                            .ctx
                            .writer
                            .send(&to.to_vec(b"MAINT takes ON, OFF or nothing. ERROR"))
                            .await;
                        return None;
                    }
                };
                let asked = AdminCommand::Maintenance(request);
                if let Some(on) = shared.ask_admin(self.ctx.guard.id, asked).await {
                    let reply: &[u8] = if on { b"MAINT ON" } else { b"MAINT OFF" };
                    let _ = self.ctx.writer.send(&to.to_vec(reply)).await;
                }
                None
            }
            CommandKind::DetStats | CommandKind::DetStatsClear => None,
            CommandKind::End | CommandKind::Unknown | CommandKind::IdSession => {
                tracing::debug!("unknown command");
                let _ = self
                    .ctx
                    .writer
                    .send(&to.to_vec(reply::UNKNOWN_COMMAND))
                    .await;
                None
            }
        }
    }

    async fn session(&mut self, mut term: u8) {
        let limits = self.shared().config.limits.clone();
        let clock = CommandClock::new(&limits);
        let in_flight_cap = (limits.max_queue as usize).max(1);
        let mut tasks: JoinSet<()> = JoinSet::new();
        // A session's commands run while it reads the next ones: watch it
        // for its client's hang-up for its whole life.
        let _watch = self.ctx.shared.hangups.watch(
            self.ctx.guard.id,
            self.reader.socket(),
            self.ctx.guard.gone_flag(),
        );
        let mut id: u32 = 1;
        // The session's lifetime (limits.max-session-seconds): once over, no
        // further command is read; the commands in progress are answered.
        let lifetime = (limits.max_session_seconds > 0)
            .then(|| self.accepted + Duration::from_secs(limits.max_session_seconds));
        let over = |t: Option<Instant>| t.is_some_and(|t| Instant::now() >= t);
        let mut lifetime_over = false;
        loop {
            // Backpressure: a session may not queue more than max-queue commands.
            while tasks.len() >= in_flight_cap {
                let _ = tasks.join_next().await;
            }
            if over(lifetime) {
                lifetime_over = true;
                break;
            }
            let frame = match self
                .next_frame(Wait::Session(clock, Instant::now(), lifetime), true)
                .await
            {
                Ok(f) => f,
                Err(End::TimedOut) if over(lifetime) => {
                    lifetime_over = true;
                    break;
                }
                Err(End::Eof) => {
                    self.linger_at_close = false;
                    // Its replies will not be written: stop their scans too.
                    self.ctx.guard.abandon();
                    tasks.abort_all();
                    break;
                }
                Err(End::StrayFd { awaiting }) => {
                    // As clamd: the buffered commands are used up and a
                    // descriptor is left that no FILDES claimed.
                    if let Some(suppressed) = self.ctx.may_log() {
                        tracing::warn!(suppressed, "descriptor sent without FILDES");
                    }
                    self.fds.clear();
                    let to = ReplyTo::new(Some(id), term);
                    let _ = self.ctx.writer.send(&stray_fd_reply(to, awaiting)).await;
                    break;
                }
                Err(end) => {
                    let timeout = if self.frame_started.is_some() {
                        Limit::CommandTimeout
                    } else {
                        Limit::IdleTimeout
                    };
                    self.count_limit(&end, timeout);
                    self.end(end, term).await;
                    self.ctx.guard.abandon();
                    tasks.abort_all();
                    break;
                }
            };
            if frame.framing.is_legacy() {
                // clamd answers with the id and terminator already in force.
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::warn!(suppressed, "unprefixed command inside IDSESSION");
                }
                let to = ReplyTo::new(Some(id), term);
                let _ = self
                    .ctx
                    .writer
                    .send(&to.to_vec(reply::ONLY_PREFIXED_IN_SESSION))
                    .await;
                // clamd then reports a stray descriptor, or else a generic error.
                let second = if self.fds.is_empty() {
                    reply::ERROR_PROCESSING
                } else {
                    self.fds.clear();
                    reply::FD_WITHOUT_FILDES
                };
                let _ = self.ctx.writer.send(&to.to_vec(second)).await;
                break;
            }
            let to = ReplyTo::new(Some(id), frame.framing.terminator());
            term = to.term;
            let kind = frame.cmd.kind;
            if !kind.allowed_in_session() {
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::warn!(
                        command = kind.word(),
                        suppressed,
                        "command not allowed inside IDSESSION"
                    );
                }
                let _ = self
                    .ctx
                    .writer
                    .send(&to.to_vec(reply::INVALID_IN_SESSION))
                    .await;
                break;
            }
            if kind == CommandKind::End {
                break;
            }
            // Refused commands count too: a session of refusals ends as
            // soon as one of allowed commands would.
            if id > limits.max_session_commands {
                self.ctx.shared.metrics.limit(Limit::MaxSessionCommands);
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::warn!(
                        limit = limits.max_session_commands,
                        suppressed,
                        "IDSESSION closed: limits.max-session-commands reached"
                    );
                }
                let _ = self
                    .ctx
                    .writer
                    .send(&to.to_vec(
                        b"Session command limit reached (limits.max-session-commands). ERROR",
                    ))
                    .await;
                break;
            }
            if self.refused(&frame.cmd, to).await {
                id += 1;
                continue;
            }
            let Some(work) = self.prepare(frame, to).await else {
                break;
            };
            if work.is_immediate() {
                // clamd answers these on its receive thread, in order.
                commands::respond(&self.ctx, work, to).await;
            } else {
                let ctx = self.ctx.clone();
                tasks.spawn(
                    async move { commands::respond(&ctx, work, to).await }.in_current_span(),
                );
            }
            id += 1;
        }
        while tasks.join_next().await.is_some() {}
        if lifetime_over {
            // Ended the way clamd ends a session it will not wait for any
            // longer (its idle timeout): a client reconnects.
            if let Some(suppressed) = self.ctx.may_log() {
                tracing::info!(
                    limit_s = limits.max_session_seconds,
                    commands = id - 1,
                    suppressed,
                    "IDSESSION ended: limits.max-session-seconds reached"
                );
            }
            let _ = self.ctx.writer.send(reply::COMMAND_READ_TIMED_OUT).await;
        }
    }

    async fn end(&mut self, end: End, term: u8) {
        if !matches!(end, End::TooLong | End::StrayFd { .. }) {
            // The client ended, went silent or is gone: nothing to wait for.
            self.linger_at_close = false;
        }
        match end {
            End::Eof | End::Shutdown => {}
            End::StrayFd { awaiting } => {
                // Before its first command clamd answers with a `\0`
                // terminator, whatever framing the client started.
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::warn!(suppressed, "descriptor sent without FILDES");
                }
                self.fds.clear();
                let to = ReplyTo::new(None, 0);
                let _ = self.ctx.writer.send(&stray_fd_reply(to, awaiting)).await;
            }
            End::TimedOut | End::TooSlow => {
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::info!(suppressed, "client timed out");
                }
                let _ = self.ctx.writer.send(reply::COMMAND_READ_TIMED_OUT).await;
            }
            End::TooLong => {
                let limit = self.buf.len();
                // Answer in the framing the unfinished command started with.
                let term = match self.buf.first() {
                    Some(b'z') => 0,
                    Some(b'n') => b'\n',
                    _ => term,
                };
                if let Some(suppressed) = self.ctx.may_log() {
                    tracing::warn!(
                        limit,
                        suppressed,
                        "command longer than limits.max-command-length"
                    );
                }
                let text = format!(
                    "Command too long (limit {limit} bytes, limits.max-command-length). ERROR"
                );
                let _ = self
                    .ctx
                    .writer
                    .send(&ReplyTo::new(None, term).to_vec(text.as_bytes()))
                    .await;
            }
            End::Io(e) => tracing::debug!(error = %e, "read failed"),
        }
    }

    /// The next complete command. `interruptible`: shutdown may end the wait.
    async fn next_frame(&mut self, wait: Wait, interruptible: bool) -> Result<Frame, End> {
        loop {
            match proto::framer::next_step(&mut self.buf, self.len, self.fresh) {
                Step::Frame {
                    framing,
                    cmd,
                    consumed,
                } => {
                    self.fresh = false;
                    self.consume(consumed);
                    // What is left over begins the next command now.
                    self.frame_started = (self.len > 0).then(Instant::now);
                    if !self.told_active {
                        // No longer an idle connection that admission may
                        // close to make room.
                        self.told_active = true;
                        self.ctx.shared.tell(FromWorker::Active {
                            conn: self.ctx.guard.id,
                        });
                    }
                    return Ok(Frame { framing, cmd });
                }
                Step::TooLong => return Err(End::TooLong),
                Step::NeedMore {
                    awaiting_descriptor,
                } => {
                    // As clamd: once the buffered commands are used up, a
                    // descriptor that no FILDES claimed is a protocol error
                    // — also one that came with a FILDES still waiting for
                    // its payload byte (the descriptor travels with that
                    // byte), answered at once as clamd does.
                    if !self.fds.is_empty() {
                        return Err(End::StrayFd {
                            awaiting: awaiting_descriptor,
                        });
                    }
                    let until = match wait {
                        Wait::Until(t) => t,
                        Wait::Session(clock, since, lifetime) => {
                            let t = clock.session_deadline(since, self.frame_started);
                            lifetime.map_or(t, |l| t.min(l))
                        }
                    };
                    self.read_more(until, interruptible).await?
                }
            }
        }
    }

    async fn read_more(&mut self, until: Instant, interruptible: bool) -> Result<(), End> {
        if self.len == self.buf.len() {
            return Err(End::TooLong);
        }
        let mut stop = self.ctx.shared.shutdown_signal();
        let read = self
            .reader
            .read_some(&mut self.buf[self.len..], &mut self.fds);
        let n = tokio::select! {
            r = tokio::time::timeout_at(tokio::time::Instant::from_std(until), read) => match r {
                Err(_) => return Err(End::TimedOut),
                Ok(Err(e)) => return Err(End::Io(e)),
                Ok(Ok(n)) => n,
            },
            _ = async { drop(stop.wait_for(|s| *s).await) }, if interruptible && self.len == 0 => {
                // Draining: a client that just connected (or is between
                // session commands) may already be sending; give it a moment
                // before closing, so a reload never costs a request.
                let read = self.reader.read_some(&mut self.buf[self.len..], &mut self.fds);
                let grace = (Instant::now() + DRAIN_GRACE).min(until);
                match tokio::time::timeout_at(tokio::time::Instant::from_std(grace), read).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return Err(End::Shutdown),
                }
            }
        };
        if n == 0 {
            return Err(End::Eof);
        }
        if self.len == 0 && self.frame_started.is_none() {
            self.frame_started = Some(Instant::now());
        }
        self.len += n;
        self.fresh = true;
        Ok(())
    }

    /// Counts the limit a read ended at: the command length, or the
    /// deadline that applied (`timeout`).
    fn count_limit(&self, end: &End, timeout: Limit) {
        let limit = match end {
            End::TooLong => Limit::MaxCommandLength,
            End::TimedOut => timeout,
            End::TooSlow => Limit::StreamMinRate,
            _ => return,
        };
        self.ctx.shared.metrics.limit(limit);
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Reads INSTREAM chunks into memory. Every chunk header is checked
    /// against the remaining limit before its data is read; data goes from
    /// the socket straight into the stream buffer.
    ///
    /// Memory: the buffer grows as data arrives (never ahead of what the
    /// client sent by more than one read or the buffer's doubling), and
    /// every growth is first paid for from the global budget
    /// (`limits.stream-memory`): a client that announces a large chunk and
    /// sends little holds little. The permit travels with the data and is
    /// returned when the scan is done. The stream's pace is checked
    /// throughout ([`Pace`]).
    async fn read_stream(&mut self) -> Result<(Vec<u8>, Option<StreamHold>), StreamError> {
        let limits = self.ctx.shared.config.limits.clone();
        let max = usize::try_from(limits.stream_max_length.0).unwrap_or(usize::MAX);
        let budget = Budget {
            memory: Arc::clone(&self.ctx.shared.streams),
            peer: self.ctx.peer.key(),
        };
        let mut chunks = ChunkDecoder::new(limits.stream_max_length.0);
        let mut pace = Pace::new(&limits, Instant::now());
        let mut data: Vec<u8> = Vec::new();
        let mut held: Option<StreamHold> = None;
        loop {
            let mut header = [0u8; 4];
            self.read_header(&mut header, &mut pace)
                .await
                .map_err(StreamError::End)?;
            let len = match chunks.header(header) {
                ChunkHeader::End => return Ok((data, held)),
                ChunkHeader::TooLarge(len) => return Err(StreamError::TooLarge(len)),
                ChunkHeader::Data(len) => len as usize,
            };
            let mut rest = len;
            // What the read buffer already holds.
            let from_buf = rest.min(self.len);
            if from_buf > 0 {
                grow(&mut data, from_buf, max, &budget, &mut held).await?;
                data.extend_from_slice(&self.buf[..from_buf]);
                self.consume(from_buf);
                rest -= from_buf;
            }
            while rest > 0 {
                let step = rest.min(STREAM_READ);
                grow(&mut data, step, max, &budget, &mut held).await?;
                let until = tokio::time::Instant::from_std(pace.deadline());
                let mut take = (&mut self.reader).take(step as u64);
                let n = match tokio::time::timeout_at(until, take.read_buf(&mut data)).await {
                    Err(_) => 0,
                    Ok(Err(e)) => return Err(StreamError::End(End::Io(e))),
                    Ok(Ok(0)) => return Err(StreamError::End(End::Eof)),
                    Ok(Ok(n)) => n,
                };
                let now = Instant::now();
                pace.got(n, now);
                match pace.check(now) {
                    Check::Go => {}
                    Check::Silent => return Err(StreamError::End(End::TimedOut)),
                    Check::TooSlow => return Err(StreamError::End(End::TooSlow)),
                }
                rest -= n;
            }
        }
    }

    /// The four bytes of a chunk header, at the stream's pace.
    async fn read_header(&mut self, out: &mut [u8; 4], pace: &mut Pace) -> Result<(), End> {
        while self.len < out.len() {
            let before = self.len;
            match self.read_more(pace.deadline(), false).await {
                Ok(()) | Err(End::TimedOut) => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            pace.got(self.len - before, now);
            match pace.check(now) {
                Check::Go => {}
                Check::Silent => return Err(End::TimedOut),
                Check::TooSlow => return Err(End::TooSlow),
            }
        }
        let n = out.len();
        out.copy_from_slice(&self.buf[..n]);
        self.consume(n);
        Ok(())
    }

    /// Ends the connection: the write side first (the replies, then the end
    /// of stream), then, unless the client already ended or went silent,
    /// [`Self::linger`] until it closes its side. A client may still be
    /// sending when the daemon ends the conversation: pyclamd sends a second
    /// zero-length chunk after a stream whose length is a multiple of 4096,
    /// and a close with those bytes unread is a reset (TCP) or EPIPE (Unix)
    /// that the client sees instead of its reply. Replies are not delayed:
    /// the end of stream goes out first.
    async fn close(&mut self) {
        if self.linger_at_close {
            self.linger().await;
        } else {
            self.ctx.writer.close().await;
        }
    }

    /// Stops writing, then reads and drops the client's bytes until it closes
    /// its side, so that it gets the replies instead of a connection reset;
    /// for at most `limits.close-linger` (the command buffer, no longer
    /// needed, is the scratch space).
    async fn linger(&mut self) {
        self.linger_at_close = false;
        self.ctx.writer.close().await;
        let linger = Duration::from_millis(self.ctx.shared.config.limits.close_linger);
        let deadline = tokio::time::Instant::now() + linger;
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.reader.read(&mut self.buf)).await
        {
            if n == 0 {
                break;
            }
        }
    }
}

/// What a wait for a command ends at.
#[derive(Clone, Copy)]
enum Wait {
    /// A fixed deadline (the first command).
    Until(Instant),
    /// Inside a session: idle until a first byte, then the command's own
    /// deadline; the wait began at the instant given; never beyond the
    /// session's lifetime (the last instant), if it has one.
    Session(CommandClock, Instant, Option<Instant>),
}

/// clamd's answer to a descriptor no FILDES claimed; when a FILDES was
/// waiting for it, the command fails too.
fn stray_fd_reply(to: ReplyTo, awaiting: bool) -> Vec<u8> {
    let mut out = to.to_vec(reply::FD_WITHOUT_FILDES);
    if awaiting {
        to.line(&mut out, reply::ERROR_PROCESSING);
    }
    out
}

/// Largest piece of a chunk read at once (and so the most a stream's
/// buffer runs ahead of the data it holds, besides its doubling).
const STREAM_READ: usize = 64 * 1024;

/// Where a stream's memory comes from: the worker's lease, as its peer.
struct Budget {
    memory: Arc<StreamMemory>,
    peer: crate::policy::PeerKey,
}

/// Makes room for `more` bytes in the stream buffer, paying every growth
/// from the stream memory lease first; the client's reads wait meanwhile
/// (up to [`GRANT_WAIT`]).
async fn grow(
    data: &mut Vec<u8>,
    more: usize,
    max: usize,
    budget: &Budget,
    held: &mut Option<StreamHold>,
) -> Result<(), StreamError> {
    let need = data.len() + more;
    if need <= data.capacity() {
        return Ok(());
    }
    let new_cap = need
        .max(data.capacity().saturating_mul(2))
        .min(max.max(need));
    let extra = (new_cap - data.capacity()) as u64;
    match budget.memory.take(budget.peer, extra, GRANT_WAIT).await {
        Some(p) => match held.as_mut() {
            Some(h) => h.merge(p),
            None => *held = Some(p),
        },
        None => return Err(StreamError::Budget(data.capacity())),
    }
    data.reserve_exact(new_cap - data.len());
    Ok(())
}
