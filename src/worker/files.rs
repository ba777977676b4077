//! How path commands reach files: every file system operation is a request
//! to the supervisor's broker, naming the connection it is for. The worker
//! itself can open nothing (its sandbox allows only its temporary
//! directory); it gets descriptors for what the client itself could open.
//!
//! Directories are handles the broker holds ([`DirHandle`]); dropping one
//! closes it in the broker. Everything that works for a connection holds its
//! [`ConnGuard`], so the worker reports the connection finished only after
//! the last broker request for it (the broker refuses a request for a
//! finished connection, `ECONNABORTED`, and ignores a late `CloseDir`).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};

use crate::ipc::messages::{
    BrokerOp, BrokerReply, BrokerRequest, Entry, FileMeta, FromWorker, MAX_BATCH,
};
use crate::ipc::typed::{RecvError, Typed};

/// The worker's end of the broker channel.
pub type BrokerChannel = Typed<BrokerRequest, BrokerReply>;

/// The worker's end of the broker channel, shared by all scanning threads.
///
/// Requests may be pipelined: [`BrokerClient::begin`] sends one and
/// returns at once, [`Pending::wait`] takes its reply. The broker thread
/// answers a worker's requests one at a time, in order, so replies come in
/// the order the requests went; whichever thread reads the channel keeps
/// the replies that are not its own for their owners. A walk asks for the
/// next batch of files while it scans the current one, so the broker opens
/// while the worker scans.
pub struct BrokerClient {
    channel: BrokerChannel,
    /// Requests sent that expect a reply (sending and numbering are one
    /// step under this lock).
    sent: Mutex<u64>,
    /// `CloseDir`s not sent yet: each goes just before the next request
    /// (or at [`flush`](Self::flush)), so that the broker thread wakes
    /// once for both. A close that comes after its connection ended is
    /// ignored by the broker, and the handle was closed with the
    /// connection.
    closing: Mutex<Vec<BrokerRequest>>,
    replies: Mutex<Replies>,
    arrived: Condvar,
}

/// A broker reply, or why there is none.
type Answer = io::Result<(BrokerReply, Vec<OwnedFd>)>;

#[derive(Default)]
struct Replies {
    /// The number of the next reply to come off the channel.
    next: u64,
    /// A thread is reading the channel now.
    reading: bool,
    /// Replies read for a request whose owner has not taken them yet.
    kept: BTreeMap<u64, Answer>,
    /// Requests whose owner gave up waiting: their replies are dropped
    /// (with their descriptors) when they come.
    abandoned: BTreeSet<u64>,
    /// The channel failed: every reply still to come fails.
    broken: Option<(io::ErrorKind, String)>,
}

/// A request sent, whose reply has not been taken.
pub struct Pending {
    client: Arc<BrokerClient>,
    seq: u64,
    taken: bool,
}

impl BrokerClient {
    pub fn new(mut channel: BrokerChannel) -> BrokerClient {
        // An `OpenFiles` reply carries a descriptor per opened file.
        channel.allow_fds(MAX_BATCH);
        BrokerClient {
            channel,
            sent: Mutex::new(0),
            closing: Mutex::default(),
            replies: Mutex::default(),
            arrived: Condvar::new(),
        }
    }

    /// Sends a request; its reply is taken with [`Pending::wait`].
    pub fn begin(self: &Arc<Self>, conn: u64, op: BrokerOp) -> io::Result<Pending> {
        let req = BrokerRequest { conn, op };
        let mut sent = lock(&self.sent);
        self.send_closes();
        self.channel.send(&req, &[])?;
        let seq = *sent;
        *sent += 1;
        Ok(Pending {
            client: Arc::clone(self),
            seq,
            taken: false,
        })
    }

    fn call(self: &Arc<Self>, conn: u64, op: BrokerOp) -> Answer {
        self.begin(conn, op)?.wait()
    }

    /// A request that has no reply (`CloseDir`): sent with the next
    /// request, or at [`flush`](Self::flush).
    fn tell(&self, conn: u64, op: BrokerOp) {
        lock(&self.closing).push(BrokerRequest { conn, op });
    }

    /// Sends the `CloseDir`s held back (a walk calls it as it ends).
    pub fn flush(&self) {
        let _sent = lock(&self.sent);
        self.send_closes();
    }

    /// Sends the held-back closes; the caller holds `sent`.
    fn send_closes(&self) {
        for req in std::mem::take(&mut *lock(&self.closing)) {
            let _ = self.channel.send(&req, &[]);
        }
    }

    /// Reads one reply off the channel (outside the replies' lock).
    fn read_one(&self) -> Answer {
        let (reply, fds) = match self.channel.recv() {
            Ok(Some(m)) => (m.msg, m.fds),
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the supervisor closed the broker channel",
                ))
            }
            Err(RecvError::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
        if fds.len() != reply.fds() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "broker reply with {} descriptors, {} expected",
                    fds.len(),
                    reply.fds()
                ),
            ));
        }
        Ok((reply, fds))
    }

    /// The reply to request `seq`, reading the channel (and keeping other
    /// threads' replies for them) until it comes.
    fn take(&self, seq: u64) -> Answer {
        let mut r = lock(&self.replies);
        loop {
            if let Some(answer) = r.kept.remove(&seq) {
                return answer;
            }
            if let Some((kind, text)) = &r.broken {
                return Err(io::Error::new(*kind, text.clone()));
            }
            if r.reading {
                r = self
                    .arrived
                    .wait(r)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            r.reading = true;
            drop(r);
            let answer = self.read_one();
            r = lock(&self.replies);
            r.reading = false;
            let n = r.next;
            r.next += 1;
            match answer {
                // A reply out of step would answer the wrong request: the
                // channel is done.
                Err(e) => r.broken = Some((e.kind(), e.to_string())),
                Ok(a) if !r.abandoned.remove(&n) => {
                    r.kept.insert(n, Ok(a));
                }
                Ok(_) => {}
            }
            self.arrived.notify_all();
        }
    }

    /// The owner of request `seq` no longer wants its reply.
    fn abandon(&self, seq: u64) {
        let mut r = lock(&self.replies);
        if r.kept.remove(&seq).is_none() && seq >= r.next {
            r.abandoned.insert(seq);
        }
    }
}

impl Pending {
    /// Waits for the reply.
    pub fn wait(mut self) -> Answer {
        self.taken = true;
        self.client.take(self.seq)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.taken {
            self.client.abandon(self.seq);
        }
    }
}

/// Files asked of the broker ([`ConnFiles::begin_open_files`]).
pub struct OpeningFiles {
    pending: Pending,
    count: usize,
}

impl OpeningFiles {
    /// How many files were asked for.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The opened files (or why each could not be), in the order asked.
    pub fn wait(self) -> io::Result<Vec<io::Result<OpenedFile>>> {
        let (reply, fds) = self.pending.wait()?;
        let files = match reply {
            BrokerReply::Files(files) if files.len() == self.count => files,
            other => return Err(unexpected(other)),
        };
        let mut fds = fds.into_iter();
        Ok(files
            .into_iter()
            .map(|r| opened_file(r, &mut fds))
            .collect())
    }
}

/// One file of a batch or listing reply: its descriptor is the next of
/// `fds` (they come in the order of the opened files).
fn opened_file(
    result: Result<FileMeta, i32>,
    fds: &mut impl Iterator<Item = OwnedFd>,
) -> io::Result<OpenedFile> {
    match result {
        Ok(FileMeta { size, dev: _ }) => fds
            .next()
            .map(|fd| OpenedFile {
                file: File::from(fd),
                size,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF)),
        Err(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What all the work for one connection shares: its id, its log budget,
/// and the report that it is finished, sent when the last holder lets go.
pub struct ConnGuard {
    pub id: u64,
    /// The peer's key for the per-peer log budget (a uid or an address
    /// prefix).
    pub peer: crate::policy::PeerKey,
    /// This connection's own log budget.
    pub log: Mutex<crate::log::limiter::Budget>,
    /// Set when the client hung up (`worker::hangup`): its work stops.
    gone: Arc<std::sync::atomic::AtomicBool>,
    upstream: tokio::sync::mpsc::UnboundedSender<FromWorker>,
}

impl ConnGuard {
    pub fn new(
        id: u64,
        peer: crate::policy::PeerKey,
        lines_per_minute: u32,
        upstream: tokio::sync::mpsc::UnboundedSender<FromWorker>,
    ) -> ConnGuard {
        ConnGuard {
            id,
            peer,
            log: Mutex::new(crate::log::limiter::Budget::new(lines_per_minute)),
            gone: Arc::default(),
            upstream,
        }
    }

    /// Has the client gone (its work is to be abandoned)?
    pub fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The flag that says so, for a scan to check as it runs.
    pub fn gone_flag(&self) -> &Arc<std::sync::atomic::AtomicBool> {
        &self.gone
    }

    /// The client is gone: abandon what runs for it.
    pub fn abandon(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let _ = self.upstream.send(FromWorker::Closed { conn: self.id });
    }
}

/// One connection's view of the file system.
#[derive(Clone)]
pub struct ConnFiles {
    client: Arc<BrokerClient>,
    guard: Arc<ConnGuard>,
}

/// What a path or an entry is, opened for the client.
pub enum Opened {
    File {
        file: File,
        size: u64,
        dev: u64,
    },
    Dir(DirHandle),
    /// A symlink the configuration does not follow.
    Link,
    /// A device, FIFO or socket.
    Special,
}

/// A directory the broker holds open for this connection.
pub struct DirHandle {
    files: ConnFiles,
    handle: u32,
    pub dev: u64,
}

impl Drop for DirHandle {
    fn drop(&mut self) {
        self.files.client.tell(
            self.files.guard.id,
            BrokerOp::CloseDir {
                handle: self.handle,
            },
        );
    }
}

/// A file of an `OpenFiles` batch, opened for the client.
pub struct OpenedFile {
    pub file: File,
    pub size: u64,
}

/// A subdirectory opened and listed by [`ConnFiles::list_dir`].
pub struct Listing {
    pub dir: DirHandle,
    pub entries: Vec<Entry>,
    /// Files the broker opened with the listing, by entry name (`None` once
    /// taken: the name stays, so that the walk never asks for it again).
    pub opened: FirstFiles,
}

/// Files opened ahead of their visit, by their name in the directory.
pub type FirstFiles = BTreeMap<Vec<u8>, Option<io::Result<OpenedFile>>>;

/// A subdirectory asked for ([`ConnFiles::begin_list_dir`]). Dropped
/// without [`wait`](Self::wait), it still takes its reply, so that the
/// broker's handle for the directory is closed (never left open for the
/// rest of the connection).
pub struct ListingDir {
    files: ConnFiles,
    pending: Option<Pending>,
    first_files: u8,
}

impl ListingDir {
    /// The listing: every entry (the pages after the first are read now)
    /// and the files opened with it.
    pub fn wait(mut self) -> io::Result<Listing> {
        let Some(pending) = self.pending.take() else {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        };
        let (reply, fds) = pending.wait()?;
        let (handle, dev, entries, more, files) = match reply {
            BrokerReply::Listing {
                handle,
                dev,
                entries,
                more,
                files,
            } if files.len() <= usize::from(self.first_files) => {
                (handle, dev, entries, more, files)
            }
            other => return Err(unexpected(other)),
        };
        let sub = DirHandle {
            files: self.files.clone(),
            handle,
            dev,
        };
        let mut fds = fds.into_iter();
        let mut opened = BTreeMap::new();
        for (index, result) in files {
            let name = entries[index as usize].name.clone();
            opened.insert(name, Some(opened_file(result, &mut fds)));
        }
        let mut all = entries;
        if more && !all.is_empty() {
            self.files.read_more(&sub, &mut all)?;
        }
        Ok(Listing {
            dir: sub,
            entries: all,
            opened,
        })
    }
}

impl Drop for ListingDir {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            // The reply comes at once (the broker answers in order, and a
            // connection whose client left is answered ECONNABORTED); its
            // handle, if any, is closed as the DirHandle drops.
            if let Ok((BrokerReply::Listing { handle, dev, .. }, _fds)) = pending.wait() {
                drop(DirHandle {
                    files: self.files.clone(),
                    handle,
                    dev,
                });
            }
        }
    }
}

fn unexpected(r: BrokerReply) -> io::Error {
    match r {
        BrokerReply::Errno(e) => io::Error::from_raw_os_error(e),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected broker reply {other:?}"),
        ),
    }
}

impl ConnFiles {
    pub fn new(client: Arc<BrokerClient>, guard: Arc<ConnGuard>) -> ConnFiles {
        ConnFiles { client, guard }
    }

    /// Sends the directory closes held back ([`BrokerClient::flush`]).
    pub fn flush(&self) {
        self.client.flush();
    }

    /// The connection these files are for.
    pub fn conn(&self) -> &ConnGuard {
        &self.guard
    }

    fn opened(&self, answer: (BrokerReply, Vec<OwnedFd>)) -> io::Result<Opened> {
        let (reply, fds) = answer;
        match (reply, fds.into_iter().next()) {
            (BrokerReply::File { size, dev }, Some(fd)) => Ok(Opened::File {
                file: File::from(fd),
                size,
                dev,
            }),
            (BrokerReply::Dir { handle, dev }, None) => Ok(Opened::Dir(DirHandle {
                files: self.clone(),
                handle,
                dev,
            })),
            (BrokerReply::Link, None) => Ok(Opened::Link),
            (BrokerReply::Special, None) => Ok(Opened::Special),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Resolves and opens the path a command named. Every refusal reads as
    /// `ENOENT`, as a missing file.
    pub fn open_path(&self, path: &[u8]) -> io::Result<Opened> {
        let answer = self.client.call(
            self.guard.id,
            BrokerOp::OpenPath {
                path: path.to_vec(),
            },
        )?;
        self.opened(answer)
    }

    /// Opens an entry of `dir`: a subdirectory (`want_dir`) or a file.
    pub fn open_entry(&self, dir: &DirHandle, name: &[u8], want_dir: bool) -> io::Result<Opened> {
        let answer = self.client.call(
            self.guard.id,
            BrokerOp::OpenEntry {
                handle: dir.handle,
                name: name.to_vec(),
                dir: want_dir,
            },
        )?;
        self.opened(answer)
    }

    /// Opens the regular files `names` of `dir` (at most [`MAX_BATCH`]),
    /// each as [`open_entry`](Self::open_entry) would, in one request.
    pub fn open_files(
        &self,
        dir: &DirHandle,
        names: &[&[u8]],
    ) -> io::Result<Vec<io::Result<OpenedFile>>> {
        self.begin_open_files(dir, names)?.wait()
    }

    /// [`open_files`](Self::open_files), its reply taken later: the broker
    /// opens while the caller scans.
    pub fn begin_open_files(&self, dir: &DirHandle, names: &[&[u8]]) -> io::Result<OpeningFiles> {
        let pending = self.client.begin(
            self.guard.id,
            BrokerOp::OpenFiles {
                handle: dir.handle,
                names: names.iter().map(|n| n.to_vec()).collect(),
            },
        )?;
        Ok(OpeningFiles {
            pending,
            count: names.len(),
        })
    }

    /// Opens the subdirectory `name` of `dir` and reads every entry of it;
    /// the broker opens up to `first_files` of its files along with the
    /// first page ([`Listing`]).
    pub fn list_dir(&self, dir: &DirHandle, name: &[u8], first_files: u8) -> io::Result<Listing> {
        self.begin_list_dir(dir, name, first_files)?.wait()
    }

    /// [`list_dir`](Self::list_dir), its reply taken later: a walk asks for
    /// its next subdirectory while it scans the files before it.
    pub fn begin_list_dir(
        &self,
        dir: &DirHandle,
        name: &[u8],
        first_files: u8,
    ) -> io::Result<ListingDir> {
        let pending = self.client.begin(
            self.guard.id,
            BrokerOp::ListDir {
                handle: dir.handle,
                name: name.to_vec(),
                first_files,
            },
        )?;
        Ok(ListingDir {
            files: self.clone(),
            pending: Some(pending),
            first_files,
        })
    }

    /// Every entry of `dir` (page by page; the broker keeps the position).
    pub fn read_dir(&self, dir: &DirHandle) -> io::Result<Vec<Entry>> {
        let mut all = Vec::new();
        self.read_more(dir, &mut all)?;
        Ok(all)
    }

    /// The remaining pages of `dir`.
    fn read_more(&self, dir: &DirHandle, all: &mut Vec<Entry>) -> io::Result<()> {
        loop {
            match self
                .client
                .call(self.guard.id, BrokerOp::ReadDir { handle: dir.handle })?
                .0
            {
                BrokerReply::Entries { entries, more } => {
                    let got = entries.len();
                    all.extend(entries);
                    if !more || got == 0 {
                        return Ok(());
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::typed::Typed;

    /// A broker that answers each request with its connection id as the
    /// error of a one-file `Files` reply, in order.
    fn broker(end: Typed<BrokerReply, BrokerRequest>, n: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for _ in 0..n {
                let Ok(Some(m)) = end.recv() else { return };
                let reply = BrokerReply::Files(vec![Err(m.msg.conn as i32)]);
                end.send(&reply, &[]).unwrap();
            }
        })
    }

    fn id_of(a: Answer) -> i32 {
        match a.unwrap().0 {
            BrokerReply::Files(f) => f[0].unwrap_err(),
            other => panic!("{other:?}"),
        }
    }

    fn op() -> BrokerOp {
        BrokerOp::CloseDir { handle: 0 }
    }

    #[test]
    fn pipelined_replies_reach_their_own_requests() {
        let (ours, theirs) = Typed::pair().unwrap();
        let client = Arc::new(BrokerClient::new(ours));
        let b = broker(theirs, 7);
        let first = client.begin(1, op()).unwrap();
        let second = client.begin(2, op()).unwrap();
        // Taken in the other order: the first reply is kept for its owner.
        assert_eq!(id_of(second.wait()), 2);
        assert_eq!(id_of(first.wait()), 1);
        // A request given up: its reply is dropped, the next one's is not
        // mistaken for it.
        let dropped = client.begin(3, op()).unwrap();
        drop(dropped);
        assert_eq!(id_of(client.call(4, op())), 4);
        // From several threads at once.
        let threads: Vec<_> = (5..8)
            .map(|id| {
                let c = Arc::clone(&client);
                std::thread::spawn(move || (id, id_of(c.call(id, op()))))
            })
            .collect();
        for t in threads {
            let (asked, got) = t.join().unwrap();
            assert_eq!(asked as i32, got);
        }
        b.join().unwrap();
        // The broker is gone: every later request fails, none hangs.
        let late = client.begin(8, op());
        if let Ok(p) = late {
            assert!(p.wait().is_err());
        }
    }

    /// A subdirectory asked for ahead and never visited (the walk stopped)
    /// still has its reply taken and its handle closed in the broker; the
    /// descriptors of the files opened with it close with the reply.
    #[test]
    fn a_listing_dropped_unread_closes_its_directory() {
        let (ours, theirs) = Typed::pair().unwrap();
        let client = Arc::new(BrokerClient::new(ours));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = Arc::new(ConnGuard::new(9, crate::policy::PeerKey::Uid(0), 10, tx));
        let files = ConnFiles::new(client, guard);
        let b = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(Some(m)) = theirs.recv() {
                match m.msg.op {
                    BrokerOp::ListDir { first_files, .. } => {
                        seen.push(format!("list({first_files})"));
                        let reply = BrokerReply::Listing {
                            handle: 5,
                            dev: 1,
                            entries: Vec::new(),
                            more: false,
                            files: Vec::new(),
                        };
                        theirs.send(&reply, &[]).unwrap();
                    }
                    BrokerOp::CloseDir { handle } => {
                        seen.push(format!("close({handle})"));
                        if handle == 1 {
                            return seen;
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
            seen
        });
        let parent = DirHandle {
            files: files.clone(),
            handle: 1,
            dev: 1,
        };
        let asked = files.begin_list_dir(&parent, b"sub", 8).unwrap();
        drop(asked);
        drop(parent);
        // Closes wait for the next request or a flush (the broker thread
        // wakes once for several).
        files.flush();
        assert_eq!(b.join().unwrap(), ["list(8)", "close(5)", "close(1)"]);
    }
}
