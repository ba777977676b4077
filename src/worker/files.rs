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

use crate::ipc::channel::Channel;
use crate::ipc::messages::{BrokerOp, BrokerReply, BrokerRequest, Entry, FromWorker};

/// The worker's end of the broker channel, shared by all scanning threads
/// (one request at a time).
pub struct BrokerClient {
    channel: Mutex<Channel>,
}

impl BrokerClient {
    pub fn new(channel: Channel) -> BrokerClient {
        BrokerClient {
            channel: Mutex::new(channel),
        }
    }

    fn call(&self, conn: u64, op: BrokerOp) -> io::Result<(BrokerReply, Option<OwnedFd>)> {
        let req = BrokerRequest { conn, op };
        let ch = self
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ch.send(&req.encode(), &[])?;
        let (msg, fds) = ch.recv()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the supervisor closed the broker channel",
            )
        })?;
        drop(ch);
        let reply = BrokerReply::decode(&msg)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok((reply, fds.into_iter().next()))
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
            upstream,
        }
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
        let _ = self.files.client.call(
            self.files.guard.id,
            BrokerOp::CloseDir {
                handle: self.handle,
            },
        );
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

    /// The connection these files are for.
    pub fn conn(&self) -> &ConnGuard {
        &self.guard
    }

    fn opened(&self, answer: (BrokerReply, Option<OwnedFd>)) -> io::Result<Opened> {
        match answer {
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

    /// Every entry of `dir` (page by page; the broker keeps the position).
    pub fn read_dir(&self, dir: &DirHandle) -> io::Result<Vec<Entry>> {
        let mut all = Vec::new();
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
                        return Ok(all);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}
