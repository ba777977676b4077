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
//!   entry failed.
//!
//! Every file system call goes through [`Files`] — the broker's policy
//! (scan roots, the client's own rights), in process or in the supervisor.
//! Path commands answer only about what the asking peer could read itself
//! (see `policy::access`): a top-level path it cannot reach gets exactly the
//! reply of a missing file; inside a directory it may list, a file it cannot
//! read answers `Access denied. ERROR` and a directory it cannot list
//! `File path check failure: Permission denied. ERROR`, without being scanned.
//!
//! The walk runs on a scanning thread and sends finished reply lines through
//! a bounded channel; when the client goes away the channel closes and the
//! walk stops.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::Sender;

use super::super::pool::TaskSlot;
use super::super::Shared;
use super::{record, Ctx, QUEUE_FULL};
use crate::engine::{Engine, Verdict};
use crate::log::LogBytes;
use crate::privsep::messages::{FileKind, Meta};
use crate::proto::reply::{self, ReplyTo};
use crate::proto::CommandKind;
use crate::server::files::Files;

pub async fn respond(
    ctx: &Ctx,
    kind: CommandKind,
    path: Vec<u8>,
    client: Option<OwnedFd>,
    to: ReplyTo,
) {
    let shared = Arc::clone(&ctx.shared);
    let files: Arc<dyn Files> = Arc::from(shared.files(&ctx.peer, client));
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
    let mut mode = match kind {
        CommandKind::ContScan => Mode::Cont,
        CommandKind::MultiScan => Mode::Multi,
        CommandKind::AllMatchScan => Mode::AllMatch,
        _ => Mode::Scan,
    };
    let mut multiscan_guard = None;
    if mode == Mode::Multi {
        // clamd uses MULTISCAN only for directories.
        let (f, p) = (Arc::clone(&files), path.clone());
        let is_dir =
            tokio::task::spawn_blocking(move || f.stat(&p).map(|m| m.kind == FileKind::Dir)).await;
        if matches!(is_dir, Ok(Ok(false))) {
            mode = Mode::Cont;
        } else {
            let max = shared.pool.threads();
            let running = shared.multiscans.fetch_add(1, Ordering::SeqCst);
            if running + 1 >= max {
                shared.multiscans.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(max_threads = max, "MULTISCAN refused: not enough threads");
                let text = reply::error(
                    &path,
                    b"Not enough threads for multiscan. Increase MaxThreads.",
                );
                let _ = ctx.writer.send(&to.to_vec(&text)).await;
                return;
            }
            multiscan_guard = Some(MultiscanGuard(Arc::clone(&shared)));
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let engine = shared.engine();
    let job_shared = Arc::clone(&shared);
    let top = path.clone();
    // The walk runs on a scan-pool thread: carry the connection's span
    // (PEER, LISTENER, ID) there, so that its results are logged with them.
    let span = tracing::Span::current();

    let submitted = shared.pool.submit(Box::new(move |slot: &TaskSlot| {
        let _span = span.enter();
        let _guard = multiscan_guard;
        slot.begin(mode.word(), &String::from_utf8_lossy(&top));
        Walker::new(&job_shared, engine, mode, to, tx, slot, files).run(&top);
    }));
    if submitted.is_err() {
        tracing::warn!(command = kind.word(), "scan refused: queue full");
        let _ = ctx
            .writer
            .send(&to.to_vec(&reply::error(&path, QUEUE_FULL)))
            .await;
        return;
    }
    while let Some(line) = rx.recv().await {
        if ctx.writer.send(&line).await.is_err() {
            break;
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
    files: Arc<dyn Files>,
    proc_dev: Option<u64>,
}

impl<'a> Walker<'a> {
    fn new(
        shared: &'a Arc<Shared>,
        engine: Arc<Engine>,
        mode: Mode,
        to: ReplyTo,
        tx: Sender<Vec<u8>>,
        slot: &'a TaskSlot,
        files: Arc<dyn Files>,
    ) -> Self {
        let jobs = (mode == Mode::Multi).then(|| {
            let (s, r) = mpsc::channel();
            (s, r, 0)
        });
        Walker {
            shared,
            engine,
            mode,
            to,
            tx,
            slot,
            total: 0,
            errors: 0,
            infected: 0,
            top_dev: None,
            jobs,
            proc_dev: files.stat(b"/proc").ok().map(|m| m.dev),
            files,
        }
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
        let path = trim_slashes(requested);
        let top_is_original = path.len() == requested.len() || !requested.starts_with(b"//");
        if !self.shared.config.scan.cross_filesystems {
            self.top_dev = self.files.stat(&path).ok().map(|m| m.dev);
        }
        if !self.excluded(&path) {
            let max_depth = match self.shared.config.scan.max_directory_recursion {
                0 => i64::MAX,
                n => i64::from(n),
            };
            let _ = self.visit_top(&path, top_is_original, max_depth);
        }
        let (ok_count, errors, total) = match self.jobs.take() {
            Some((sender, results, dispatched)) => {
                drop(sender);
                let (mut ok, mut err) = (0u64, 0u64);
                for r in results.iter().take(dispatched as usize) {
                    match r {
                        FileResult::Clean => ok += 1,
                        FileResult::Error => err += 1,
                        FileResult::Found(_) => {}
                    }
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
        if ok_count.wrapping_add(errors) == total && errors != total {
            self.send(&reply::ok(requested));
        }
        tracing::debug!(
            command = self.mode.word(),
            duration_ms = started.elapsed().as_millis() as u64,
            files = total,
            "path scan finished"
        );
    }

    /// May the peer read this file, or list this directory?
    fn peer_may(&self, path: &[u8], dir: bool) -> bool {
        self.files.may(path, dir)
    }

    fn visit_top(&mut self, path: &[u8], top_is_original: bool, max_depth: i64) -> Flow {
        let is_dir = self.files.stat(path).is_ok_and(|m| m.kind == FileKind::Dir);
        if !self.peer_may(path, is_dir) && self.files.lstat(path).is_ok() {
            // Exactly what a missing path answers: no oracle.
            tracing::info!(
                command = self.mode.word(),
                "path refused: outside the scan roots or unreadable for the client"
            );
            let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
            return self.stat_failed(path, &missing);
        }
        match self.kind(path, None) {
            Kind::Failed(e) => self.stat_failed(path, &e),
            Kind::SkippedLink => self.count(),
            Kind::SkippedSpecial => {
                let flow = self.count();
                if top_is_original && !self.send(&reply::error(path, b"Not supported file type")) {
                    return Flow::Stop;
                }
                flow
            }
            Kind::Dir(_) => {
                if let Flow::Stop = self.count() {
                    return Flow::Stop;
                }
                self.walk_dir(path, max_depth)
            }
            Kind::File(meta) => self.visit_file(path, meta),
        }
    }

    /// Counts an entry (every callback in clamd does), unless the client is gone.
    fn count(&mut self) -> Flow {
        if self.tx.is_closed() {
            return Flow::Stop;
        }
        self.total += 1;
        Flow::Go
    }

    fn stat_failed(&mut self, path: &[u8], e: &std::io::Error) -> Flow {
        if let Flow::Stop = self.count() {
            return Flow::Stop;
        }
        self.errors += 1;
        tracing::info!(command = self.mode.word(), path = %LogBytes(path), error = %e, "file path check failure");
        if self.send(&reply::path_check_failure(path, &errno_text(e))) {
            Flow::Go
        } else {
            Flow::Stop
        }
    }

    fn excluded(&self, path: &[u8]) -> bool {
        if self.shared.excludes.iter().any(|re| re.is_match(path)) {
            if self.mode != Mode::Multi {
                self.send(&reply::status(path, b"Excluded"));
            }
            return true;
        }
        if let Some(dev) = self.top_dev {
            if let Ok(m) = self.files.stat(path) {
                if m.dev != dev {
                    if self.mode != Mode::Multi {
                        self.send(&reply::status(path, b"Excluded (another filesystem)"));
                    }
                    return true;
                }
            }
        }
        false
    }

    /// `get_filetype`: `hint` is the directory entry's type, if known.
    fn kind(&self, path: &[u8], hint: Option<FileKind>) -> Kind {
        let need_stat = self.mode != Mode::Multi;
        let follow_any = self.follow_dirs() || self.follow_files();
        let (meta, is_link) = match hint {
            Some(t @ (FileKind::Dir | FileKind::File)) => {
                let meta = if need_stat {
                    match self.files.stat(path) {
                        Ok(m) => Some(m),
                        Err(e) => return Kind::Failed(e),
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
                let lmeta = match self.files.lstat(path) {
                    Ok(m) => m,
                    Err(e) => return Kind::Failed(e),
                };
                if lmeta.kind != FileKind::Symlink {
                    (lmeta, false)
                } else if !follow_any {
                    return Kind::SkippedLink;
                } else {
                    match self.files.stat(path) {
                        Ok(m) => (m, true),
                        Err(e) => return Kind::Failed(e),
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

    fn walk_dir(&mut self, dir: &[u8], depth: i64) -> Flow {
        if depth < 0 {
            tracing::warn!(path = %LogBytes(dir), "scan.max-directory-recursion reached, skipping");
            return self.count();
        }
        let entries = match self.files.list(dir) {
            Ok(e) => e,
            Err(e) => return self.stat_failed(dir, &e),
        };
        let follow_any = self.follow_dirs() || self.follow_files();
        let mut found: Vec<(bool, u64, Vec<u8>, Option<Meta>)> = Vec::new();
        for entry in entries {
            let hint = entry.kind;
            if hint == Some(FileKind::Symlink) && !follow_any {
                continue;
            }
            let mut name = if dir == b"/" {
                Vec::new()
            } else {
                dir.to_vec()
            };
            name.push(b'/');
            name.extend_from_slice(&entry.name);
            if self.excluded(&name) {
                continue;
            }
            match self.kind(&name, hint) {
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
                Kind::Dir(meta) => found.push((true, entry.ino, name, meta)),
                Kind::File(meta) => found.push((false, entry.ino, name, meta)),
            }
        }
        // clamd: files before directories, then lower inodes first.
        found.sort_by_key(|(is_dir, ino, _, _)| (*is_dir, *ino));
        for (is_dir, _, name, meta) in found {
            let flow = if !self.peer_may(&name, is_dir) {
                self.peer_denied(&name, is_dir)
            } else if is_dir {
                self.walk_dir(&name, depth - 1)
            } else {
                self.visit_file(&name, meta)
            };
            if let Flow::Stop = flow {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    fn file_job(&self, name: &[u8], real: Vec<u8>) -> FileJob {
        FileJob {
            shared: Arc::clone(self.shared),
            engine: Arc::clone(&self.engine),
            files: Arc::clone(&self.files),
            to: self.to,
            tx: self.tx.clone(),
            name: name.to_vec(),
            real,
        }
    }

    /// An entry of a directory the peer may list, that it may not open.
    fn peer_denied(&mut self, name: &[u8], is_dir: bool) -> Flow {
        if is_dir {
            let denied = std::io::Error::from_raw_os_error(libc::EACCES);
            return self.stat_failed(name, &denied);
        }
        if let Flow::Stop = self.count() {
            return Flow::Stop;
        }
        self.errors += 1;
        // As clamd after EACCES: reported, and the walk goes on.
        if self.send(&reply::error(name, b"Access denied.")) {
            Flow::Go
        } else {
            Flow::Stop
        }
    }

    fn visit_file(&mut self, name: &[u8], meta: Option<Meta>) -> Flow {
        if let Flow::Stop = self.count() {
            return Flow::Stop;
        }
        if let Some(m) = &meta {
            // clamd skips empty files and anything on /proc.
            if m.size == 0 || Some(m.dev) == self.proc_dev {
                return Flow::Go;
            }
        }
        let real = match self.files.canonicalize(name) {
            Ok(r) => r,
            Err(e) => {
                self.errors += 1;
                return if self.send(&reply::path_check_failure(name, &errno_text(&e))) {
                    Flow::Go
                } else {
                    Flow::Stop
                };
            }
        };
        if self.jobs.is_some() {
            let job = self.file_job(name, real);
            let Some((sender, _, dispatched)) = &mut self.jobs else {
                return Flow::Go;
            };
            let results = sender.clone();
            *dispatched += 1;
            let span = tracing::Span::current();
            let run: super::super::pool::Job = Box::new(move |slot: &TaskSlot| {
                let _span = span.enter();
                let _ = results.send(job.run(slot, false));
            });
            if let Err(run) = self.shared.pool.submit_or_return(run) {
                // Queue full: scan it on this thread instead of failing it.
                run(self.slot);
            }
            return Flow::Go;
        }
        let job = self.file_job(name, real);
        self.slot.set_file(&String::from_utf8_lossy(name));
        match job.run(self.slot, self.mode == Mode::AllMatch) {
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
}

/// Scanning one file and answering for it; used inline and as a MULTISCAN job.
struct FileJob {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    to: ReplyTo,
    files: Arc<dyn Files>,
    tx: Sender<Vec<u8>>,
    name: Vec<u8>,
    /// The resolved path (what is opened); `name` is what the client sees.
    real: Vec<u8>,
}

impl FileJob {
    fn run(self, slot: &TaskSlot, allmatch: bool) -> FileResult {
        let started = Instant::now();
        let shown = String::from_utf8_lossy(&self.name).into_owned();
        slot.set_file(&shown);
        let send = |text: Vec<u8>| {
            let _ = self.tx.blocking_send(self.to.to_vec(&text));
        };
        let (verdict, bytes) = match self.files.open(&self.real) {
            Ok((f, size)) => {
                let real = Path::new(OsStr::from_bytes(&self.real));
                (
                    self.engine
                        .scan_fd(std::os::fd::AsFd::as_fd(&f), real, allmatch),
                    size,
                )
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                tracing::info!(path = %LogBytes(&self.name), "access denied");
                send(reply::error(&self.name, b"Access denied."));
                return FileResult::Error;
            }
            Err(_) => (
                Verdict::Error {
                    code: 8,
                    message: crate::engine::strerror(8),
                },
                0,
            ),
        };
        record(
            &self.shared,
            &self.name,
            "SCAN",
            &verdict,
            bytes,
            started.elapsed().as_millis() as u64,
        );
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
        }
    }
}

/// `cli_ftw`'s path clean-up: drop repeated leading slashes and trailing ones.
fn trim_slashes(path: &[u8]) -> Vec<u8> {
    let mut p = path;
    if p.len() >= 2 {
        while p.len() >= 2 && p[0] == b'/' && p[1] == b'/' {
            p = &p[1..];
        }
        while p.len() > 1 && p[p.len() - 1] == b'/' {
            p = &p[..p.len() - 1];
        }
    }
    p.to_vec()
}

/// The C library's text for an I/O error, as clamd prints it.
fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::trim_slashes;

    #[test]
    fn slashes_trimmed_like_cli_ftw() {
        assert_eq!(trim_slashes(b"//tmp//"), b"/tmp");
        assert_eq!(trim_slashes(b"/"), b"/");
        assert_eq!(trim_slashes(b"a/"), b"a");
    }
}
