//! How path commands reach files: every file system operation is a request
//! to the supervisor's broker, naming the connection it is for. The worker
//! itself can open nothing (its sandbox allows only its temporary
//! directory); it gets descriptors for what the client itself could open.
//!
//! Directories are handles the broker holds ([`DirHandle`]); dropping one
//! closes it in the broker. Everything that works for a connection holds its
//! [`ConnGuard`], so the worker reports the connection finished only after
//! the last broker request for it (the supervisor treats a request for a
//! finished connection as a protocol violation).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use crate::ipc::messages::{
    BrokerOp, BrokerReply, BrokerRequest, Entry, FileMeta, FromWorker, MAX_BATCH,
};
use crate::ipc::typed::{RecvError, Typed};

/// The worker's end of the broker channel.
pub type BrokerChannel = Typed<BrokerRequest, BrokerReply>;

/// The worker's end of the broker channel, shared by all scanning threads
/// (one request at a time).
pub struct BrokerClient {
    channel: Mutex<BrokerChannel>,
}

impl BrokerClient {
    pub fn new(mut channel: BrokerChannel) -> BrokerClient {
        // An `OpenFiles` reply carries a descriptor per opened file.
        channel.allow_fds(MAX_BATCH);
        BrokerClient {
            channel: Mutex::new(channel),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerChannel> {
        self.channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn call(&self, conn: u64, op: BrokerOp) -> io::Result<(BrokerReply, Vec<OwnedFd>)> {
        let req = BrokerRequest { conn, op };
        let ch = self.lock();
        ch.send(&req, &[])?;
        let received = ch.recv();
        drop(ch);
        let (reply, fds) = match received {
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

    /// A request that has no reply (`CloseDir`).
    fn tell(&self, conn: u64, op: BrokerOp) {
        let req = BrokerRequest { conn, op };
        let _ = self.lock().send(&req, &[]);
    }
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
        let (reply, fds) = self.client.call(
            self.guard.id,
            BrokerOp::OpenFiles {
                handle: dir.handle,
                names: names.iter().map(|n| n.to_vec()).collect(),
            },
        )?;
        let files = match reply {
            BrokerReply::Files(files) if files.len() == names.len() => files,
            other => return Err(unexpected(other)),
        };
        let mut fds = fds.into_iter();
        Ok(files
            .into_iter()
            .map(|r| match r {
                Ok(FileMeta { size, dev: _ }) => fds
                    .next()
                    .map(|fd| OpenedFile {
                        file: File::from(fd),
                        size,
                    })
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF)),
                Err(e) => Err(io::Error::from_raw_os_error(e)),
            })
            .collect())
    }

    /// Opens the subdirectory `name` of `dir` and reads every entry of it.
    pub fn list_dir(&self, dir: &DirHandle, name: &[u8]) -> io::Result<(DirHandle, Vec<Entry>)> {
        let (reply, _) = self.client.call(
            self.guard.id,
            BrokerOp::ListDir {
                handle: dir.handle,
                name: name.to_vec(),
            },
        )?;
        let (handle, dev, entries, more) = match reply {
            BrokerReply::Listing {
                handle,
                dev,
                entries,
                more,
            } => (handle, dev, entries, more),
            other => return Err(unexpected(other)),
        };
        let sub = DirHandle {
            files: self.clone(),
            handle,
            dev,
        };
        let mut all = entries;
        if more && !all.is_empty() {
            self.read_more(&sub, &mut all)?;
        }
        Ok((sub, all))
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
