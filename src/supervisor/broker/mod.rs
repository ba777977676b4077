//! The file broker: the only way path commands reach files.
//!
//! One thread per worker serves that worker's broker channel. A request
//! names a connection id; it is answered only if the supervisor handed that
//! connection to this same worker and it is still open, and only if the
//! connection's listener allows path commands. The identity used is the one
//! the supervisor recorded at accept ([`super::authority`]) — no descriptor
//! or word from the worker counts as evidence of who the client is. A
//! connection whose client has left is answered `ECONNABORTED`: its
//! authority ended with the hang-up.
//!
//! For each request the thread takes the client's file-system identity
//! ([`creds`]) and lets the kernel decide: the path is resolved component by
//! component with descriptors, and what is opened is what is scanned
//! ([`resolve`]). Directories stay in this thread as handles with their own
//! read position, so listing a directory of n entries costs O(n) however
//! many pages it takes ([`dirs`]). A `ListDir` opens a subdirectory, lists
//! its first page and opens its first few files in one request
//! ([`first_files`]): a walk that asks for each subdirectory ahead of its
//! visit never waits for a round trip when it enters one. Descriptors sent
//! and not yet read by the worker are bounded ([`in_flight`]); nothing on
//! /proc is ever opened (there, `/proc/self` is this root process).
//!
//! Answers to `OpenPath` refusals are always `ENOENT`, what a missing file
//! answers, so a client learns nothing it could not find out itself; the
//! real reason goes to the operator's log. Anything malformed, or a
//! connection id this worker was never given, is a protocol violation: the
//! thread returns it and the supervisor ends the worker.

pub mod creds;
mod dirs;
mod in_flight;
pub mod resolve;

use std::os::fd::AsFd;
use std::sync::Arc;

use self::creds::{FsIdentity, Own};
use self::dirs::Dirs;
use self::resolve::{Found, Rules};
use super::authority::Authority;
use super::gate::WorkerId;
use crate::ipc::messages::{
    BrokerOp, BrokerReply, BrokerRequest, Entry, FileKind, FileMeta, MAX_BATCH, MAX_FIRST_FILES,
    MAX_NAME,
};
use crate::ipc::typed::{RecvError, Typed};
use crate::log::limiter::{cost, Class, PeerBudgets};
use crate::log::LogBytes;
use crate::policy::{Identity, PeerKey};

/// What every broker thread shares.
pub struct Broker {
    pub rules: Rules,
    pub authority: Arc<Authority>,
    /// Directory handles one connection may hold at once (the walk's depth).
    pub handles_per_conn: usize,
    /// The per-identity log budgets: a client that asks for paths it may
    /// not open in a loop gets `log.peer-lines-per-minute` lines, shared
    /// with everything else logged about it.
    pub budgets: Arc<PeerBudgets>,
    /// How TCP addresses group into clients, for those budgets.
    pub prefixes: crate::policy::Prefixes,
    /// Each identity's budget of broker CPU time (and of control messages,
    /// read by the executor), shared by its workers.
    pub identities: Arc<crate::supervisor::message_budget::Identities>,
    /// A worker's scanning threads (`limits.max-threads`): the descriptors
    /// it may leave unread scale with them ([`in_flight`]).
    pub max_threads: u32,
}

/// Directory handles one connection may hold at once. A walk holds at
/// most two per level (the directory it is in and the next one asked for
/// ahead) plus the top; a session may run one walk per scanning thread at
/// once (pipelined SCANs). `scan.max-directory-recursion` 0 (no limit) and
/// depths past 62 count as 62. An honest walk never meets it (one that did
/// would answer `Too many open files` for a directory, and could end `OK`
/// with a detection below it unseen); [`dirs::MAX_HANDLES`] bounds a
/// worker's handles whatever its connections hold.
pub fn handles_per_conn(max_directory_recursion: u32, max_threads: u32) -> usize {
    let depth = match max_directory_recursion {
        0 => 62,
        n => (n as usize).min(62),
    };
    (2 * depth + 2) * (max_threads as usize).max(1)
}

/// How long an idle broker channel waits before its thread lets go of the
/// directories of connections that have ended (a worker that stops asking
/// would otherwise keep them open in root until its next request).
const IDLE_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

fn fs_identity(who: &Identity) -> FsIdentity {
    match who {
        Identity::Unix {
            uid, gid, groups, ..
        } => FsIdentity {
            uid: *uid,
            gid: *gid,
            groups: groups.clone(),
        },
        Identity::Tcp { .. } => FsIdentity::anonymous(),
    }
}

/// A worker broke the broker protocol; the supervisor ends it.
#[derive(Debug)]
pub struct Violation(pub String);

/// Serves one worker's requests until its channel closes (the worker
/// exited, or the supervisor revoked the channel).
pub fn serve(
    channel: &Typed<BrokerReply, BrokerRequest>,
    worker: WorkerId,
    broker: &Broker,
) -> Result<(), Violation> {
    let own = Own::capture().map_err(|e| Violation(format!("broker thread: {e}")))?;
    let mut dirs = Dirs::default();
    let mut in_flight = in_flight::InFlight::new(broker.max_threads);
    let _ = rustix::net::sockopt::set_socket_timeout(
        channel,
        rustix::net::sockopt::Timeout::Recv,
        Some(IDLE_SWEEP),
    );
    loop {
        let req = match channel.recv() {
            Ok(Some(m)) => m.msg,
            Ok(None) => return Ok(()),
            Err(RecvError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                dirs.forget_all_finished(&broker.authority, worker);
                continue;
            }
            // A revoked channel reads as closed or as an error: both end.
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Violation(format!("broker channel: {e}")))
            }
            Err(RecvError::Io(_)) => return Ok(()),
            Err(RecvError::Descriptors(_)) => {
                return Err(Violation("descriptors sent on the broker channel".into()))
            }
            Err(RecvError::Decode(e)) => return Err(Violation(format!("broker request: {e}"))),
        };
        // Every request is charged to the worker's identity, also one for a
        // connection that is over (answered without acting as anyone).
        let started = thread_cpu();
        let charge = |since: std::time::Duration| {
            let spent = thread_cpu().saturating_sub(since);
            if let Some(wait) =
                broker
                    .identities
                    .broker_cpu(worker, std::time::Instant::now(), spent)
            {
                std::thread::sleep(wait);
            }
        };
        dirs.forget_finished(&broker.authority, worker);
        let holder = match broker.authority.lookup(req.conn, worker) {
            Ok(h) => h,
            Err(why) if why.is_violation() => {
                return Err(Violation(format!(
                    "broker request for {why} (id {})",
                    req.conn
                )))
            }
            Err(_) => {
                // The client left: nothing more is done for it.
                if matches!(req.op, BrokerOp::CloseDir { .. }) {
                    charge(started);
                    continue;
                }
                let reply = BrokerReply::Errno(libc::ECONNABORTED);
                if channel.send(&reply, &[]).is_err() {
                    return Ok(());
                }
                charge(started);
                continue;
            }
        };
        if !holder.paths_allowed {
            return Err(Violation(format!(
                "broker request for connection {} whose listener allows no path commands",
                req.conn
            )));
        }
        if let BrokerOp::CloseDir { handle } = req.op {
            // No file is touched, so no identity is taken; no reply.
            if !dirs.close(req.conn, handle) {
                return Err(Violation(format!("CloseDir of unknown handle {handle}")));
            }
            charge(started);
            continue;
        }
        let who = fs_identity(&holder.identity);
        let (reply, fds) = match creds::act_as(&own, &who) {
            Ok(_as_client) => handle(broker, &mut dirs, req.conn, &holder.identity, req.op)?,
            Err(e) => {
                // A daemon started without the capabilities to act as
                // another user: the client is told the file is missing
                // (never answered with the daemon's own rights).
                let key = crate::policy::PeerKey::of(&holder.identity, broker.prefixes);
                if let Some(suppressed) = broker.budgets.allow(Class::Lines, key, cost(&[])) {
                    tracing::warn!(id = req.conn, peer = %holder.identity, error = %e, suppressed, "path refused: the daemon cannot act as this client");
                }
                (BrokerReply::Errno(libc::ENOENT), Vec::new())
            }
        };
        if !fds.is_empty() {
            // While it waits, ended connections' directories are still let
            // go (sixth review's retry: a worker that never read kept them).
            in_flight.room(channel, fds.len(), || {
                dirs.forget_all_finished(&broker.authority, worker)
            });
        }
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if channel.send(&reply, &fds).is_err() {
            return Ok(());
        }
        // Past its identity's second of broker CPU, this thread waits: the
        // worker's next requests wait in the kernel.
        charge(started);
    }
}

/// The CPU time this thread has used.
fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A reply and the descriptors that travel with it.
type Answer = (BrokerReply, Vec<std::os::fd::OwnedFd>);

/// One entry of a directory: not empty, not `.` or `..`, no `/`.
fn is_entry_name(name: &[u8]) -> bool {
    !(name.is_empty()
        || name.len() > MAX_NAME
        || name.contains(&b'/')
        || name == b"."
        || name == b"..")
}

/// One request, already acting as the client.
fn handle(
    broker: &Broker,
    dirs: &mut Dirs,
    conn: u64,
    who: &Identity,
    op: BrokerOp,
) -> Result<Answer, Violation> {
    Ok(match op {
        BrokerOp::OpenPath { path } => match resolve::open_path(&broker.rules, &path) {
            Ok(found) => answer(dirs, conn, found, broker.handles_per_conn),
            // A name or path too long depends on the text alone, not on the
            // file system: clamd's answer, and no oracle.
            Err(refused) if refused.errno == rustix::io::Errno::NAMETOOLONG => {
                (BrokerReply::Errno(libc::ENAMETOOLONG), Vec::new())
            }
            // Missing for the client too: nothing hidden, nothing to explain.
            Err(refused)
                if refused.errno == rustix::io::Errno::NOENT
                    && refused.why == resolve::CLIENT_ACCESS =>
            {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    if let Some(suppressed) = broker.budgets.allow(
                        Class::Volume,
                        PeerKey::of(who, broker.prefixes),
                        cost(&[&path]),
                    ) {
                        tracing::debug!(id = conn, path = %LogBytes(&path), suppressed, "no such path");
                    }
                }
                (BrokerReply::Errno(libc::ENOENT), Vec::new())
            }
            Err(refused) => {
                // Budgeted per identity: one local user asking for paths
                // it cannot read in a loop made this line 40-70 MB/s.
                if tracing::enabled!(tracing::Level::INFO) {
                    if let Some(suppressed) = broker.budgets.allow(
                        Class::Lines,
                        PeerKey::of(who, broker.prefixes),
                        cost(&[&path, refused.why.as_bytes()]),
                    ) {
                        tracing::info!(
                            id = conn,
                            peer = %who,
                            path = %LogBytes(&path),
                            error = %refused.errno,
                            reason = refused.why,
                            suppressed,
                            "path refused; the client is told it does not exist"
                        );
                    }
                }
                (BrokerReply::Errno(libc::ENOENT), Vec::new())
            }
        },
        BrokerOp::ReadDir { handle } => {
            let dir = dirs
                .get(conn, handle)
                .ok_or_else(|| Violation(format!("ReadDir of unknown handle {handle}")))?;
            (dir.page(&broker.rules), Vec::new())
        }
        BrokerOp::OpenEntry { handle, name, dir } => {
            if !is_entry_name(&name) {
                return Err(Violation(
                    "OpenEntry with a name that is not one directory entry".into(),
                ));
            }
            let parent = dirs
                .get(conn, handle)
                .ok_or_else(|| Violation(format!("OpenEntry in unknown handle {handle}")))?;
            let opened = parent
                .fd()
                .and_then(|fd| resolve::open_entry(&broker.rules, fd, parent.path(), &name, dir));
            match opened {
                Ok(found) => answer(dirs, conn, found, broker.handles_per_conn),
                Err(e) => (BrokerReply::Errno(e.raw_os_error()), Vec::new()),
            }
        }
        BrokerOp::OpenFiles { handle, names } => {
            if names.is_empty()
                || names.len() > MAX_BATCH
                || !names.iter().all(|n| is_entry_name(n))
            {
                return Err(Violation(
                    "OpenFiles with a name that is not one directory entry".into(),
                ));
            }
            let parent = dirs
                .get(conn, handle)
                .ok_or_else(|| Violation(format!("OpenFiles in unknown handle {handle}")))?;
            let (files, fds) = open_files(&broker.rules, parent, &names);
            (BrokerReply::Files(files), fds)
        }
        BrokerOp::ListDir {
            handle,
            name,
            first_files,
        } => {
            if !is_entry_name(&name) {
                return Err(Violation(
                    "ListDir with a name that is not one directory entry".into(),
                ));
            }
            let parent = dirs
                .get(conn, handle)
                .ok_or_else(|| Violation(format!("ListDir in unknown handle {handle}")))?;
            let opened = parent
                .fd()
                .and_then(|fd| resolve::open_entry(&broker.rules, fd, parent.path(), &name, true));
            match opened {
                Ok(Found::Dir { fd, dev, path }) => {
                    match dirs.open(conn, fd, path, broker.handles_per_conn) {
                        Some(h) => listing(dirs, conn, h, dev, &broker.rules, first_files),
                        None => (BrokerReply::Errno(libc::EMFILE), Vec::new()),
                    }
                }
                Ok(_) => (BrokerReply::Errno(libc::ENOTDIR), Vec::new()),
                Err(e) => (BrokerReply::Errno(e.raw_os_error()), Vec::new()),
            }
        }
        // `serve` closes handles without taking an identity and without a
        // reply; reaching here would be a bug, never a panic in root.
        BrokerOp::CloseDir { handle } => {
            return Err(Violation(format!(
                "CloseDir of handle {handle} reached the identity switch"
            )))
        }
    })
}

/// Opens the regular files `names` of `parent`, each as the client (this
/// thread acts as the client): one result per name, and the descriptors of
/// the opened ones in the same order.
fn open_files(
    rules: &Rules,
    parent: &dirs::DirState,
    names: &[Vec<u8>],
) -> (Vec<Result<FileMeta, i32>>, Vec<std::os::fd::OwnedFd>) {
    let mut files = Vec::with_capacity(names.len());
    let mut fds = Vec::with_capacity(names.len());
    for name in names {
        let opened = parent
            .fd()
            .and_then(|fd| resolve::open_entry(rules, fd, parent.path(), name, false));
        files.push(file_result(opened, &mut fds));
    }
    (files, fds)
}

/// One file of a batch: its size and device, its descriptor kept in `fds`.
fn file_result(
    opened: Result<Found, rustix::io::Errno>,
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> Result<FileMeta, i32> {
    match opened {
        Ok(Found::File { fd, size, dev }) => {
            fds.push(fd);
            Ok(FileMeta { size, dev })
        }
        // A symlink followed to something else: not a file.
        Ok(_) => Err(libc::EINVAL),
        Err(e) => Err(e.raw_os_error()),
    }
}

/// Which entries of a first page `ListDir` opens along with it: up to
/// `max` of its non-empty regular files (as the client saw them, not
/// following symlinks), lowest inode first, as the walk visits them. An
/// index into `entries` each.
pub fn first_files(entries: &[Entry], max: usize) -> Vec<u32> {
    let mut files: Vec<(u64, u32)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.lstat, Ok(m) if m.kind == FileKind::File && m.size > 0))
        .map(|(i, e)| (e.ino, i as u32))
        .collect();
    files.sort_unstable();
    files.truncate(max);
    files.into_iter().map(|(_, i)| i).collect()
}

/// The first page of a directory just opened as `handle`, and the first
/// `first` of its files opened (see [`first_files`]); a directory that
/// cannot be read is closed again and answered with its errno.
fn listing(
    dirs: &mut Dirs,
    conn: u64,
    handle: u32,
    dev: u64,
    rules: &resolve::Rules,
    first: u8,
) -> Answer {
    let Some(dir) = dirs.get(conn, handle) else {
        return (BrokerReply::Errno(libc::EBADF), Vec::new());
    };
    match dir.page(rules) {
        BrokerReply::Entries { entries, more } => {
            let chosen = first_files(&entries, usize::from(first).min(MAX_FIRST_FILES));
            // Opened as `open_files` does, each looked at again just before
            // its open (the page's look is older: a FIFO swapped in since
            // would be opened; sixth review's retry).
            let names: Vec<Vec<u8>> = chosen
                .iter()
                .map(|&i| entries[i as usize].name.clone())
                .collect();
            let (opened, fds) = open_files(rules, dir, &names);
            let files = chosen.into_iter().zip(opened).collect();
            let reply = BrokerReply::Listing {
                handle,
                dev,
                entries,
                more,
                files,
            };
            (reply, fds)
        }
        other => {
            dirs.close(conn, handle);
            (other, Vec::new())
        }
    }
}

fn answer(dirs: &mut Dirs, conn: u64, found: Found, per_conn: usize) -> Answer {
    match found {
        Found::File { fd, size, dev } => (BrokerReply::File { size, dev }, vec![fd]),
        Found::Dir { fd, dev, path } => match dirs.open(conn, fd, path, per_conn) {
            Some(handle) => (BrokerReply::Dir { handle, dev }, Vec::new()),
            None => (BrokerReply::Errno(libc::EMFILE), Vec::new()),
        },
        Found::Link => (BrokerReply::Link, Vec::new()),
        Found::Special => (BrokerReply::Special, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::messages::Meta;

    fn entry(name: &str, ino: u64, kind: FileKind, size: u64) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            ino,
            hint: Some(kind),
            lstat: Ok(Meta { kind, size, dev: 1 }),
            target: None,
        }
    }

    #[test]
    fn a_listing_opens_its_first_non_empty_regular_files_by_inode() {
        let mut entries = vec![
            entry("c", 30, FileKind::File, 5),
            entry("sub", 1, FileKind::Dir, 4096),
            entry("empty", 2, FileKind::File, 0),
            entry("link", 3, FileKind::Symlink, 7),
            entry("fifo", 4, FileKind::Other, 0),
            entry("a", 10, FileKind::File, 1),
            entry("b", 20, FileKind::File, 9),
        ];
        entries.push(Entry {
            lstat: Err(libc::EACCES),
            ..entry("unseen", 5, FileKind::File, 1)
        });
        // Files only (never a directory, symlink, device or an empty or
        // unreadable entry), lowest inode first, at most `max`.
        assert_eq!(first_files(&entries, 8), [5, 6, 0]);
        assert_eq!(first_files(&entries, 2), [5, 6]);
        assert!(first_files(&entries, 0).is_empty());
        assert!(first_files(&[], 8).is_empty());
    }
}
