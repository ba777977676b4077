//! SCAN, CONTSCAN, MULTISCAN and ALLMATCHSCAN: walking a path the way clamd's
//! `cli_ftw` + `scan_callback` do, so that the reply lines are the same.
//!
//! The rules that shape the replies (from clamd 1.4.6):
//! * every visited entry counts toward a total; stat failures reply
//!   `File path check failure: <errno>. ERROR` and count as errors;
//! * symlinks inside directories are skipped silently unless followed; a
//!   top-level symlink counts as visited and clean;
//! * a top-level special file replies `Not supported file type ERROR`;
//! * empty files are skipped (except in MULTISCAN, which does not stat);
//! * files sort before directories, then by inode number;
//! * SCAN and ALLMATCHSCAN stop at the first detection or error; CONTSCAN and
//!   MULTISCAN go on;
//! * `<path>: OK` ends the reply only if nothing was found and not every
//!   entry failed;
//! * a path of PATH_MAX bytes or more fails as `File name too long`.
//!
//! Files come only through the supervisor's broker ([`ConnFiles`]), which
//! opens what the client itself could open, inside the scan roots. A
//! top-level path it refuses — missing, in a directory the client cannot
//! search, unreadable, outside the roots — gets exactly the reply of a
//! missing file. Inside a directory the client may list, a file it cannot
//! read answers `Access denied. ERROR` and a directory it cannot list
//! `File path check failure: Permission denied. ERROR`, without a scan.
//!
//! The walk runs on a scanning thread and sends finished reply lines through
//! a bounded channel; when the client goes away the channel closes and the
//! walk stops at the next entry.
#![forbid(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::Sender;

use std::collections::VecDeque;

use super::super::files::{
    ConnFiles, DirHandle, FirstFiles, ListingDir, Opened, OpenedFile, OpeningFiles,
};
use super::super::pool::{Tag, TaskSlot, Ticket};
use super::super::Shared;
use super::{record, Ctx, QUEUE_FULL};
use crate::engine::{Engine, Verdict};
use crate::ipc::messages::{Entry, FileKind, Meta, MAX_BATCH, MAX_FIRST_FILES, MAX_PATH};
use crate::log::LogBytes;
use crate::proto::reply::{self, ReplyTo};
use crate::proto::CommandKind;

pub async fn respond(ctx: &Ctx, kind: CommandKind, path: Vec<u8>, to: ReplyTo) {
    let shared = Arc::clone(&ctx.shared);
    // clamd handles the path as a C string: it ends at the first NUL.
    let path = match path.iter().position(|b| *b == 0) {
        Some(n) => path[..n].to_vec(),
        None => path,
    };
    if kind == CommandKind::AllMatchScan && !shared.config.scan.allow_all_match_scan {
        tracing::info!(
            command = "ALLMATCHSCAN",
            "refused: scan.allow-all-match-scan is false"
        );
        let text = reply::error(
            &path,
            b"ALLMATCHSCAN command disabled by clamd configuration.",
        );
        let _ = ctx.writer.send(&to.to_vec(&text)).await;
        return;
    }
    let mode = match kind {
        CommandKind::ContScan => Mode::Cont,
        CommandKind::MultiScan => Mode::Multi,
        CommandKind::AllMatchScan => Mode::AllMatch,
        _ => Mode::Scan,
    };
    let files = shared.files(&ctx.guard);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let job_shared = Arc::clone(&shared);
    let top = path.clone();
    let listener = Arc::clone(&ctx.peer.listener_name);
    // The walk runs on a scan-pool thread: carry the connection's span
    // (PEER, LISTENER, ID) there, so that its results are logged with them.
    let span = tracing::Span::current();

    let mut ticket = Ticket::new(Some(ctx.peer.key()));
    let tag = ticket.tag();
    let walk_tag = tag.clone();
    let submitted = shared.pool.submit(
        &tag,
        Box::new(move |slot: &TaskSlot| {
            let _span = span.enter();
            slot.begin(mode.word(), &top);
            Walker::new(&job_shared, mode, to, tx, slot, files, walk_tag, listener).run(&top);
        }),
    );
    if let Err(busy) = submitted {
        shared.metrics.queue_full();
        if let Some(suppressed) = ctx.may_log() {
            tracing::warn!(command = kind.word(), reason = ?busy, suppressed, "scan refused: queue full");
        }
        let _ = ctx
            .writer
            .send(&to.to_vec(&reply::error(&path, QUEUE_FULL)))
            .await;
        return;
    }
    loop {
        tokio::select! {
            biased;
            line = rx.recv() => match line {
                Some(line) => {
                    if ctx.writer.send(&line).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            // A scan of this walk ran past its time limit and was written
            // off (the worker logged it and retires): the client gets that
            // file's answer, and the command ends here; the stuck scan's
            // thread finds its client gone if it ever returns.
            file = ticket.overrun() => {
                let verdict = Verdict::time_limit(shared.config.scan.alert_exceeds_max);
                let _ = ctx.writer.send(&to.to_vec(&super::verdict_text(&file, &verdict))).await;
                break;
            }
        }
    }
}

struct MultiscanGuard(Arc<Shared>);

impl Drop for MultiscanGuard {
    fn drop(&mut self) {
        self.0.multiscans.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Scan,
    Cont,
    Multi,
    AllMatch,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Scan => "SCAN",
            Mode::Cont => "CONTSCAN",
            Mode::Multi => "MULTISCAN",
            Mode::AllMatch => "ALLMATCHSCAN",
        }
    }

    /// SCAN-type walks stop at the first detection or error.
    fn stops_early(self) -> bool {
        matches!(self, Mode::Scan | Mode::AllMatch)
    }
}

enum Flow {
    Go,
    Stop,
}

/// What a directory entry is, as `cli_ftw`'s `get_filetype` decides.
enum Kind {
    Dir(Option<Meta>),
    File(Option<Meta>),
    SkippedLink,
    SkippedSpecial,
    Failed(std::io::Error),
}

/// The outcome of scanning one file: found names, error, or clean.
enum FileResult {
    Clean,
    Found(usize),
    Error,
}

struct Walker<'a> {
    shared: &'a Arc<Shared>,
    engine: Arc<Engine>,
    mode: Mode,
    to: ReplyTo,
    tx: Sender<Vec<u8>>,
    slot: &'a TaskSlot,
    total: u64,
    errors: u64,
    infected: u64,
    top_dev: Option<u64>,
    /// MULTISCAN: results of dispatched file jobs.
    jobs: Option<(mpsc::Sender<FileResult>, mpsc::Receiver<FileResult>, u64)>,
    files: ConnFiles,
    /// The walk's pool tag (its client's share; MULTISCAN's file jobs).
    tag: Tag,
    _multiscan: Option<MultiscanGuard>,
    /// The supervisor answered that the client left (its connection's
    /// authority ended): the walk stops, as when the replies cannot go out.
    revoked: bool,
    /// MULTISCAN: files gathered for the next job, and their bytes.
    chunk: Vec<FileJob>,
    chunk_bytes: u64,
    /// MULTISCAN: chunks handed to the pool and not finished.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection's listener (the metrics' label).
    listener: Arc<str>,
    /// Subdirectories asked for ahead (one per level of the walk at most)
    /// whose files come with them: their descriptors are held until the
    /// walk gets there, so at most [`LISTINGS_AHEAD_WITH_FILES`] do.
    listings_ahead: usize,
}

/// At most this many subdirectories asked for ahead of their visit come
/// with their first files (descriptors held by the worker meanwhile: 8
/// each); deeper ones come with their listing alone.
const LISTINGS_AHEAD_WITH_FILES: usize = 4;

fn errno(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code)
}

impl<'a> Walker<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: &'a Arc<Shared>,
        mode: Mode,
        to: ReplyTo,
        tx: Sender<Vec<u8>>,
        slot: &'a TaskSlot,
        files: ConnFiles,
        tag: Tag,
        listener: Arc<str>,
    ) -> Self {
        Walker {
            engine: shared.engine(),
            shared,
            mode,
            to,
            tx,
            slot,
            total: 0,
            errors: 0,
            infected: 0,
            top_dev: None,
            jobs: None,
            files,
            tag,
            _multiscan: None,
            revoked: false,
            chunk: Vec::new(),
            chunk_bytes: 0,
            pending: Arc::default(),
            listener,
            listings_ahead: 0,
        }
    }

    /// Is the client gone (it hung up, its replies cannot go out, or the
    /// supervisor revoked its connection)?
    fn gone(&self) -> bool {
        self.revoked || self.files.conn().is_gone() || self.tx.is_closed()
    }

    fn send(&self, text: &[u8]) -> bool {
        self.tx.blocking_send(self.to.to_vec(text)).is_ok()
    }

    fn follow_dirs(&self) -> bool {
        self.shared.config.scan.follow_directory_symlinks
    }

    fn follow_files(&self) -> bool {
        self.shared.config.scan.follow_file_symlinks
    }

    fn run(mut self, requested: &[u8]) {
        let started = Instant::now();
        // `printed` is what clamd's buffer holds after cli_ftw trimmed it in
        // place (trailing slashes gone): the final `OK` names it; `path` is
        // what the walk (and every other reply) uses.
        let (path, printed) = ftw_trim(requested);
        let top_is_original = path.len() == printed.len();
        if !self.excluded(&path, None) {
            let max_depth = match self.shared.config.scan.max_directory_recursion {
                0 => i64::MAX,
                n => i64::from(n),
            };
            let opened = if path.is_empty() {
                Err(errno(libc::ENOENT))
            } else if path.len() >= MAX_PATH {
                Err(errno(libc::ENAMETOOLONG))
            } else {
                self.files.open_path(&path)
            };
            if self.mode == Mode::Multi && !self.start_multiscan(&opened, requested) {
                return;
            }
            let _ = self.visit_top(&path, opened, top_is_original, max_depth);
            // The walk's last directories are closed in the broker now.
            self.files.flush();
        }
        self.flush_jobs();
        let (ok_count, errors, total) = match self.jobs.take() {
            Some((sender, results, dispatched)) => {
                drop(sender);
                let (mut ok, mut err, mut got) = (0u64, 0u64, 0u64);
                while got < dispatched {
                    // A file job written off for its time limit may never
                    // answer: stop waiting once the client is gone (its
                    // connection ends its command on the overrun).
                    match results.recv_timeout(std::time::Duration::from_millis(500)) {
                        Ok(FileResult::Clean) => ok += 1,
                        Ok(FileResult::Error) => err += 1,
                        Ok(FileResult::Found(_)) => {}
                        Err(mpsc::RecvTimeoutError::Timeout) if !self.tx.is_closed() => continue,
                        Err(_) => break,
                    }
                    got += 1;
                }
                (ok, err, dispatched)
            }
            None => (
                self.total
                    .wrapping_sub(self.errors)
                    .wrapping_sub(self.infected),
                self.errors,
                self.total,
            ),
        };
        if self.gone() {
            // The client is gone (it left, or stopped reading its replies
            // for limits.send-timeout): the walk stopped at the next entry.
            self.shared
                .counters
                .abandoned
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.shared.may_log(self.files.conn()) {
                tracing::info!(
                    command = self.mode.word(),
                    files = total,
                    suppressed,
                    "walk abandoned: the client is gone"
                );
            }
        } else if ok_count.wrapping_add(errors) == total && errors != total {
            self.send(&reply::ok(&printed));
        }
        tracing::debug!(
            command = self.mode.word(),
            duration_ms = started.elapsed().as_millis() as u64,
            files = total,
            "path scan finished"
        );
    }

    /// MULTISCAN works in parallel only on a directory (clamd does the same);
    /// anything else is a CONTSCAN. False: the reply is already sent.
    fn start_multiscan(&mut self, opened: &std::io::Result<Opened>, requested: &[u8]) -> bool {
        if matches!(
            opened,
            Ok(Opened::File { .. } | Opened::Link | Opened::Special)
        ) {
            self.mode = Mode::Cont;
            return true;
        }
        let max = self.shared.pool.threads();
        let running = self.shared.multiscans.fetch_add(1, Ordering::SeqCst);
        let guard = MultiscanGuard(Arc::clone(self.shared));
        if running + 1 >= max {
            tracing::warn!(max_threads = max, "MULTISCAN refused: not enough threads");
            self.send(&reply::error(
                requested,
                b"Not enough threads for multiscan. Increase MaxThreads.",
            ));
            return false;
        }
        self._multiscan = Some(guard);
        let (s, r) = mpsc::channel();
        self.jobs = Some((s, r, 0));
        true
    }

    fn visit_top(
        &mut self,
        path: &[u8],
        opened: std::io::Result<Opened>,
        top_is_original: bool,
        max_depth: i64,
    ) -> Flow {
        match opened {
            Err(e) => self.stat_failed(path, &e),
            Ok(Opened::Link) => self.count(),
            Ok(Opened::Special) => {
                let flow = self.count();
                if top_is_original && !self.send(&reply::error(path, b"Not supported file type")) {
                    return Flow::Stop;
                }
                flow
            }
            Ok(Opened::Dir(handle)) => {
                if !self.shared.config.scan.cross_filesystems {
                    self.top_dev = Some(handle.dev);
                }
                if let Flow::Stop = self.count() {
                    return Flow::Stop;
                }
                self.walk_dir(&handle, path, max_depth)
            }
            Ok(Opened::File { file, size, dev }) => {
                let meta = Meta {
                    kind: FileKind::File,
                    size,
                    dev,
                };
                self.visit_file(path, Some(meta), Source::Opened(file, size))
            }
        }
    }

    /// Counts an entry (every callback in clamd does), unless the client is gone.
    fn count(&mut self) -> Flow {
        if self.gone() {
            return Flow::Stop;
        }
        self.total += 1;
        Flow::Go
    }

    fn stat_failed(&mut self, path: &[u8], e: &std::io::Error) -> Flow {
        if e.raw_os_error() == Some(libc::ECONNABORTED) {
            self.revoked = true;
        }
        if let Flow::Stop = self.count() {
            return Flow::Stop;
        }
        self.errors += 1;
        if let Some(suppressed) = self.shared.may_log(self.files.conn()) {
            tracing::info!(command = self.mode.word(), path = %LogBytes(path), error = %e, suppressed, "file path check failure");
        }
        if self.send(&reply::path_check_failure(path, &errno_text(e))) {
            Flow::Go
        } else {
            Flow::Stop
        }
    }

    /// `ExcludePath` and, with `scan.cross-filesystems = false`, entries on
    /// another file system than the top.
    fn excluded(&self, path: &[u8], meta: Option<&Meta>) -> bool {
        if self.shared.excludes.iter().any(|re| re.is_match(path)) {
            if self.mode != Mode::Multi {
                self.send(&reply::status(path, b"Excluded"));
            }
            return true;
        }
        if let (Some(dev), Some(m)) = (self.top_dev, meta) {
            if m.dev != dev {
                if self.mode != Mode::Multi {
                    self.send(&reply::status(path, b"Excluded (another filesystem)"));
                }
                return true;
            }
        }
        false
    }

    /// `get_filetype`, from what the broker saw as the client.
    fn kind(&self, e: &Entry) -> Kind {
        let need_stat = self.mode != Mode::Multi;
        let follow_any = self.follow_dirs() || self.follow_files();
        let (meta, is_link) = match e.hint {
            Some(t @ (FileKind::Dir | FileKind::File)) => {
                let meta = if need_stat {
                    match e.lstat {
                        Ok(m) => Some(m),
                        Err(code) => return Kind::Failed(errno(code)),
                    }
                } else {
                    None
                };
                return if t == FileKind::Dir {
                    Kind::Dir(meta)
                } else {
                    Kind::File(meta)
                };
            }
            Some(FileKind::Other) => return Kind::SkippedSpecial,
            _ => {
                let lmeta = match e.lstat {
                    Ok(m) => m,
                    Err(code) => return Kind::Failed(errno(code)),
                };
                if lmeta.kind != FileKind::Symlink {
                    (lmeta, false)
                } else if !follow_any {
                    return Kind::SkippedLink;
                } else {
                    match e.target {
                        Some(Ok(m)) => (m, true),
                        Some(Err(code)) => return Kind::Failed(errno(code)),
                        None => return Kind::SkippedLink,
                    }
                }
            }
        };
        match meta.kind {
            FileKind::Dir if !is_link || self.follow_dirs() => Kind::Dir(Some(meta)),
            FileKind::File if !is_link || self.follow_files() => Kind::File(Some(meta)),
            FileKind::Symlink => Kind::SkippedLink,
            _ => Kind::SkippedSpecial,
        }
    }

    fn walk_dir(&mut self, dir: &DirHandle, path: &[u8], depth: i64) -> Flow {
        if depth < 0 {
            tracing::warn!(path = %LogBytes(path), "scan.max-directory-recursion reached, skipping");
            return self.count();
        }
        let entries = match self.files.read_dir(dir) {
            Ok(e) => e,
            Err(e) => return self.stat_failed(path, &e),
        };
        self.walk_entries(dir, entries, FirstFiles::new(), path, depth)
    }

    /// How many of a subdirectory's files its listing opens along with
    /// it: none where `scan.exclude-path` may leave some out, or on /proc
    /// (what the walk would never open is not opened ahead).
    fn first_files(&self, meta: Option<&Meta>) -> u8 {
        let on_proc = !meta.is_some_and(|m| m.dev != self.shared.proc_dev);
        if self.shared.excludes.is_empty() && !on_proc {
            MAX_FIRST_FILES as u8
        } else {
            0
        }
    }

    /// Asks the broker for the subdirectory `found[at]` ahead of its visit.
    /// Its files come along only while fewer than
    /// [`LISTINGS_AHEAD_WITH_FILES`] listings asked ahead hold some
    /// (`AskedDir::with_files` says whether this one does).
    fn ask_listing(
        &mut self,
        dir: &DirHandle,
        found: &[Visit],
        at: Option<usize>,
    ) -> Option<AskedDir> {
        let at = at?;
        if self.gone() {
            return None;
        }
        let v = &found[at];
        let first = if self.listings_ahead < LISTINGS_AHEAD_WITH_FILES {
            self.first_files(v.meta.as_ref())
        } else {
            0
        };
        let listing = self.files.begin_list_dir(dir, &v.entry, first).ok()?;
        let with_files = first > 0;
        if with_files {
            self.listings_ahead += 1;
        }
        Some(AskedDir {
            at,
            listing,
            with_files,
        })
    }

    /// A listing asked ahead is taken (or given up): its files are no
    /// longer ahead of the walk.
    fn taken(&mut self, asked: AskedDir) -> ListingDir {
        if asked.with_files {
            self.listings_ahead -= 1;
        }
        asked.listing
    }

    /// A subdirectory: opened and listed in one broker request (`asked`
    /// ahead of the visit, or now), which also opens its first files.
    fn walk_subdir(
        &mut self,
        parent: &DirHandle,
        entry: &[u8],
        name: &[u8],
        meta: Option<&Meta>,
        asked: Option<ListingDir>,
        depth: i64,
    ) -> Flow {
        if depth < 0 {
            // As before: opened (a refusal is reported), then skipped.
            return match self.files.open_entry(parent, entry, true) {
                Ok(Opened::Dir(sub)) => self.walk_dir(&sub, name, depth),
                Ok(_) => self.stat_failed(name, &errno(libc::ENOTDIR)),
                Err(e) => self.stat_failed(name, &e),
            };
        }
        let listed = match asked.map(ListingDir::wait) {
            Some(Ok(listing)) => Ok(listing),
            // Not asked ahead, or refused then (the connection's directory
            // handles were all in use): asked now.
            _ => self.files.list_dir(parent, entry, self.first_files(meta)),
        };
        match listed {
            Ok(l) => self.walk_entries(&l.dir, l.entries, l.opened, name, depth),
            Err(e) => self.stat_failed(name, &e),
        }
    }

    /// Does a file with this metadata get opened (clamd skips empty files
    /// and anything on /proc; MULTISCAN does not stat, so opens all)?
    fn wants_open(&self, meta: Option<&Meta>) -> bool {
        !meta.is_some_and(|m| m.size == 0 || m.dev == self.shared.proc_dev)
    }

    fn walk_entries(
        &mut self,
        dir: &DirHandle,
        entries: Vec<Entry>,
        mut first: FirstFiles,
        path: &[u8],
        depth: i64,
    ) -> Flow {
        let follow_any = self.follow_dirs() || self.follow_files();
        let mut found: Vec<Visit> = Vec::new();
        for entry in entries {
            if entry.hint == Some(FileKind::Symlink) && !follow_any {
                continue;
            }
            let mut name = if path == b"/" {
                Vec::new()
            } else {
                path.to_vec()
            };
            name.push(b'/');
            name.extend_from_slice(&entry.name);
            let meta = entry.target.and_then(Result::ok).or(entry.lstat.ok());
            if self.excluded(&name, meta.as_ref()) {
                continue;
            }
            let kind = if name.len() >= MAX_PATH {
                Kind::Failed(errno(libc::ENAMETOOLONG))
            } else {
                self.kind(&entry)
            };
            match kind {
                Kind::Failed(e) => {
                    if let Flow::Stop = self.stat_failed(&name, &e) {
                        return Flow::Stop;
                    }
                }
                Kind::SkippedLink | Kind::SkippedSpecial => {
                    if let Flow::Stop = self.count() {
                        return Flow::Stop;
                    }
                }
                // /proc is never opened by the broker (README, deliberate
                // differences): not a directory to list here either.
                Kind::Dir(Some(m)) if m.dev == self.shared.proc_dev => {}
                Kind::Dir(meta) => found.push(Visit {
                    is_dir: true,
                    ino: entry.ino,
                    name,
                    entry: entry.name,
                    meta,
                }),
                Kind::File(meta) => found.push(Visit {
                    is_dir: false,
                    ino: entry.ino,
                    name,
                    entry: entry.name,
                    meta,
                }),
            }
        }
        // clamd: files before directories, then lower inodes first.
        found.sort_by_key(|v| (v.is_dir, v.ino));
        // The files to open, in order, are opened in batches ahead of their
        // visit: one broker round trip per batch instead of one per file,
        // and the next batch is asked for as soon as one arrives, so that
        // the broker opens while this thread scans (at most two batches
        // are open or on their way). Files the listing came with
        // (`first`) are taken from there and left out of the batches.
        let mut ahead = Ahead::default();
        // Each subdirectory is asked for ahead of its visit: the first one
        // before this directory's files are scanned, the next one before
        // the walk goes down into the one before it (so at most two
        // directory handles per level of depth).
        let ask_ahead = depth > 0;
        let mut asked = if ask_ahead {
            self.ask_listing(dir, &found, next_dir(&found, 0))
        } else {
            None
        };
        let mut result = Flow::Go;
        for i in 0..found.len() {
            let flow = if found[i].is_dir {
                self.flush_jobs();
                let mine = match asked.take() {
                    Some(a) if a.at == i => Some(self.taken(a)),
                    other => {
                        asked = other;
                        None
                    }
                };
                if ask_ahead && asked.is_none() {
                    asked = self.ask_listing(dir, &found, next_dir(&found, i + 1));
                }
                let (entry, name, meta) = (&found[i].entry, &found[i].name, found[i].meta.as_ref());
                self.walk_subdir(dir, entry, name, meta, mine, depth - 1)
            } else {
                let meta = found[i].meta;
                let source = if !self.wants_open(meta.as_ref()) {
                    Source::Skipped
                } else if let Some(slot) = first.get_mut(&found[i].entry) {
                    match slot.take() {
                        Some(opened) => Source::Batch(Some(opened)),
                        // The same name twice in one listing (renamed
                        // while it was read): opened on its own.
                        None => Source::Batch(Some(
                            self.files
                                .open_files(dir, &[&found[i].entry])
                                .and_then(|mut r| r.pop().ok_or_else(|| errno(libc::EIO)))
                                .and_then(|r| r),
                        )),
                    }
                } else {
                    if ahead.opened.is_empty() {
                        if let Some(coming) = ahead.coming.take() {
                            let n = coming.len();
                            match coming.wait() {
                                Ok(results) => ahead.opened.extend(results),
                                Err(e) => ahead.opened.extend((0..n).map(|_| Err(copy_error(&e)))),
                            }
                        } else if !self.gone() {
                            ahead.asked_to = ahead.asked_to.max(i);
                            let batch = self.next_batch(&found, &first, &mut ahead);
                            match self.files.open_files(dir, &batch) {
                                Ok(results) => ahead.opened.extend(results),
                                // Not answered (the client left, the
                                // channel failed): every file of the batch
                                // gets it.
                                Err(e) => ahead
                                    .opened
                                    .extend(batch.iter().map(|_| Err(copy_error(&e)))),
                            }
                        }
                    }
                    if ahead.coming.is_none() && !ahead.opened.is_empty() && !self.gone() {
                        let from = ahead.asked_to;
                        let batch = self.next_batch(&found, &first, &mut ahead);
                        if !batch.is_empty() {
                            ahead.coming = self.files.begin_open_files(dir, &batch).ok();
                            if ahead.coming.is_none() {
                                // Not sent: asked for again when due.
                                ahead.asked_to = from;
                            }
                        }
                    }
                    Source::Batch(ahead.opened.pop_front())
                };
                let name = std::mem::take(&mut found[i].name);
                self.visit_file(&name, meta, source)
            };
            if let Flow::Stop = flow {
                result = Flow::Stop;
                break;
            }
        }
        if let Some(a) = asked {
            // The walk stopped before it: the reply is taken as it drops,
            // and the directory closed.
            drop(self.taken(a));
        }
        result
    }

    /// The names of the next files of `found` to open, from
    /// `ahead.asked_to` on (directories, files not to open and files the
    /// listing came with are left out); moves `ahead.asked_to` past them.
    fn next_batch<'v>(
        &self,
        found: &'v [Visit],
        first: &FirstFiles,
        ahead: &mut Ahead,
    ) -> Vec<&'v [u8]> {
        let want = ahead.batch_size();
        let mut batch = Vec::with_capacity(want);
        let mut at = ahead.asked_to;
        while at < found.len() && batch.len() < want {
            let v = &found[at];
            if !v.is_dir && self.wants_open(v.meta.as_ref()) && !first.contains_key(&v.entry) {
                batch.push(v.entry.as_slice());
            }
            at += 1;
        }
        ahead.asked_to = at;
        batch
    }

    fn file_job(&self, name: &[u8], file: File, size: u64) -> FileJob {
        FileJob {
            command: self.mode.word(),
            listener: Arc::clone(&self.listener),
            conn: self.files.conn().id,
            gone: Arc::clone(self.files.conn().gone_flag()),
            shared: Arc::clone(self.shared),
            engine: Arc::clone(&self.engine),
            to: self.to,
            tx: self.tx.clone(),
            name: name.to_vec(),
            file,
            size,
        }
    }

    /// Reports a file the broker would not open for the client.
    fn open_failed(&mut self, name: &[u8], e: &std::io::Error) -> FileResult {
        if e.raw_os_error() == Some(libc::ECONNABORTED) {
            // The client left: the walk stops at the next entry.
            self.revoked = true;
            return FileResult::Error;
        }
        if e.raw_os_error() == Some(libc::EACCES) {
            if let Some(suppressed) = self.shared.may_log(self.files.conn()) {
                tracing::info!(path = %LogBytes(name), suppressed, "access denied");
            }
            self.send(&reply::error(name, b"Access denied."));
        } else {
            let message = crate::engine::strerror(8);
            self.send(&reply::error(name, message.as_bytes()));
        }
        FileResult::Error
    }

    fn visit_file(&mut self, name: &[u8], meta: Option<Meta>, source: Source) -> Flow {
        if let Flow::Stop = self.count() {
            return Flow::Stop;
        }
        let opened = match source {
            Source::Skipped => return Flow::Go,
            Source::Opened(file, size) => Ok((file, size)),
            Source::Batch(Some(Ok(f))) => Ok((f.file, f.size)),
            Source::Batch(Some(Err(e))) => Err(e),
            // The walk was cut short before the batch was asked for.
            Source::Batch(None) => Err(errno(libc::ECONNABORTED)),
        };
        if let Some(m) = &meta {
            // clamd skips empty files and anything on /proc.
            if m.size == 0 || m.dev == self.shared.proc_dev {
                return Flow::Go;
            }
        }
        if self.jobs.is_some() {
            let job = match opened {
                Ok((file, size)) => self.file_job(name, file, size),
                Err(e) => {
                    let r = self.open_failed(name, &e);
                    if let Some((sender, _, dispatched)) = &mut self.jobs {
                        *dispatched += 1;
                        let _ = sender.send(r);
                    }
                    return Flow::Go;
                }
            };
            if let Some((_, _, dispatched)) = &mut self.jobs {
                *dispatched += 1;
            }
            self.chunk_bytes += job.size;
            self.chunk.push(job);
            if self.chunk.len() >= CHUNK_FILES || self.chunk_bytes >= CHUNK_BYTES {
                self.flush_jobs();
            }
            return Flow::Go;
        }
        let result = match opened {
            Ok((file, size)) => {
                self.slot.set_file(name);
                self.file_job(name, file, size)
                    .run(self.slot, self.mode == Mode::AllMatch)
            }
            Err(e) => self.open_failed(name, &e),
        };
        match result {
            FileResult::Clean => Flow::Go,
            FileResult::Found(n) => {
                self.infected += n as u64;
                if self.mode.stops_early() {
                    Flow::Stop
                } else {
                    Flow::Go
                }
            }
            FileResult::Error => {
                self.errors += 1;
                if self.mode.stops_early() {
                    Flow::Stop
                } else {
                    Flow::Go
                }
            }
        }
    }

    /// MULTISCAN: hands the files gathered so far to the pool as one job
    /// (one hand-off per few files rather than per file), or scans them on
    /// this thread when the queue is full.
    fn flush_jobs(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let Some((sender, _, _)) = &self.jobs else {
            return;
        };
        let chunk = std::mem::take(&mut self.chunk);
        self.chunk_bytes = 0;
        let results = sender.clone();
        let span = tracing::Span::current();
        let pending = Arc::clone(&self.pending);
        let run: super::super::pool::Job = Box::new(move |slot: &TaskSlot| {
            let _span = span.enter();
            for job in chunk {
                let _ = results.send(job.run(slot, false));
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        });
        // At most one chunk per scanning thread waits or runs; beyond
        // that this thread scans the chunk itself. The walk then opens
        // files only as fast as they are scanned (never the whole queue
        // ahead, whose descriptors would be held, whose scans would wait
        // in front of other clients', and which a client that leaves
        // would have had opened for nothing).
        if self.pending.fetch_add(1, Ordering::SeqCst) >= self.shared.pool.threads() {
            run(self.slot);
        } else if let Err((_, run)) = self.shared.pool.submit_or_return(&self.tag, run) {
            // Queue full: scan them on this thread instead of failing them.
            run(self.slot);
        }
    }
}

/// MULTISCAN hands files to the pool in chunks of at most this many files...
const CHUNK_FILES: usize = 8;
/// ...or of this many bytes, whichever comes first.
const CHUNK_BYTES: u64 = 1 << 20;

/// Files of one directory opened ahead of their visit, in visiting order.
#[derive(Default)]
struct Ahead {
    opened: VecDeque<std::io::Result<OpenedFile>>,
    batches: u32,
    /// The next batch, asked for while this one is scanned (dropped unread
    /// if the walk stops: its descriptors close when its reply comes).
    coming: Option<OpeningFiles>,
    /// The index in the directory's sorted entries past the last file
    /// asked for.
    asked_to: usize,
}

impl Ahead {
    /// Batches grow from 8 files to [`MAX_BATCH`]: a directory of a few
    /// files, or a SCAN that stops at its first detection, opens little
    /// ahead; a large directory costs one round trip per 64 files.
    fn batch_size(&mut self) -> usize {
        let n = 8usize << self.batches.min(3);
        self.batches += 1;
        n.min(MAX_BATCH)
    }
}

fn copy_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => errno(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// A subdirectory asked for ahead of its visit.
struct AskedDir {
    /// Its index in the directory's sorted entries.
    at: usize,
    listing: ListingDir,
    /// Its first files come with it (counted in `Walker::listings_ahead`).
    with_files: bool,
}

/// The first subdirectory of `found` from `from` on.
fn next_dir(found: &[Visit], from: usize) -> Option<usize> {
    (from..found.len()).find(|&k| found[k].is_dir)
}

/// An entry of a directory to visit after the listing: what clamd sorts.
struct Visit {
    is_dir: bool,
    ino: u64,
    /// The path the client sees.
    name: Vec<u8>,
    /// The entry's own name in its directory.
    entry: Vec<u8>,
    meta: Option<Meta>,
}

/// Where the file a walk visits comes from.
enum Source {
    /// Opened already (the top-level path).
    Opened(File, u64),
    /// An entry of a directory, from the batch opened ahead of it.
    Batch(Option<std::io::Result<OpenedFile>>),
    /// Not opened: empty, or on /proc.
    Skipped,
}

/// Scanning one opened file and answering for it; inline or as a MULTISCAN job.
struct FileJob {
    /// The walk's command and listener (the metrics' labels).
    command: &'static str,
    listener: Arc<str>,
    conn: u64,
    /// The client hung up: the scan is abandoned.
    gone: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    to: ReplyTo,
    tx: Sender<Vec<u8>>,
    /// What the client sees (and libclamav is told).
    name: Vec<u8>,
    file: File,
    size: u64,
}

impl FileJob {
    fn run(self, slot: &TaskSlot, allmatch: bool) -> FileResult {
        let started = Instant::now();
        slot.set_file(&self.name);
        let send = |text: Vec<u8>| {
            let _ = self.tx.blocking_send(self.to.to_vec(&text));
        };
        let named = Path::new(std::ffi::OsStr::from_bytes(&self.name));
        let verdict = slot.scanning(|| {
            self.engine.scan_fd_unless(
                std::os::fd::AsFd::as_fd(&self.file),
                named,
                allmatch,
                Some(&self.gone),
            )
        });
        record(
            &self.shared,
            &self.listener,
            &self.name,
            self.command,
            &verdict,
            self.size,
            started.elapsed(),
        );
        self.shared.report_found(self.conn, &self.name, &verdict);
        match verdict {
            Verdict::Clean => FileResult::Clean,
            Verdict::Found(names) => {
                for n in &names {
                    send(reply::found(&self.name, n.as_bytes()));
                }
                FileResult::Found(names.len())
            }
            Verdict::Error { message, .. } => {
                send(reply::error(&self.name, message.as_bytes()));
                FileResult::Error
            }
            // The walk stops at its next entry; nothing is said.
            Verdict::Abandoned => FileResult::Error,
        }
    }
}

use std::os::unix::ffi::OsStrExt;

/// `cli_ftw`'s path clean-up, for a path of two bytes or more: its local
/// copy skips repeated leading slashes, and trailing slashes are cut in
/// place, in the buffer clamd later prints in the final `OK` line. Returns
/// (the path walked, the buffer as printed).
fn ftw_trim(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if path.len() < 2 {
        return (path.to_vec(), path.to_vec());
    }
    let mut start = 0;
    while path.len() - start >= 2 && path[start] == b'/' && path[start + 1] == b'/' {
        start += 1;
    }
    let mut end = path.len();
    while end > start && path[end - 1] == b'/' {
        end -= 1;
    }
    (path[start..end].to_vec(), path[..end].to_vec())
}

/// The C library's text for an I/O error, as clamd prints it.
fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => crate::sys::errno_text(code),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::ftw_trim;

    #[test]
    fn slashes_trimmed_like_cli_ftw() {
        let t = |p: &[u8]| {
            let (a, b) = ftw_trim(p);
            (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap())
        };
        assert_eq!(t(b"//tmp//"), ("/tmp".into(), "//tmp".into()));
        assert_eq!(t(b"/tmp//x//"), ("/tmp//x".into(), "/tmp//x".into()));
        assert_eq!(t(b"/"), ("/".into(), "/".into()));
        assert_eq!(t(b"//"), ("".into(), "/".into()));
        assert_eq!(t(b"a/"), ("a".into(), "a".into()));
    }
}
