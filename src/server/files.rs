//! How path commands reach the file system: every call goes through the
//! broker's policy ([`crate::privsep::broker::handle`]) — in process when the
//! daemon runs as one process, or over the broker channel to the supervisor
//! when the scanning worker is sandboxed and cannot open files itself.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::policy::PeerCreds;
use crate::privsep::broker::{self, FilePolicy};
use crate::privsep::channel::Channel;
use crate::privsep::messages::{BrokerOp, BrokerReply, BrokerRequest, DirEntry, Meta};

/// One path command's view of the file system.
pub trait Files: Send + Sync {
    fn call(&self, op: BrokerOp, path: &[u8]) -> io::Result<(BrokerReply, Option<OwnedFd>)>;

    fn stat(&self, path: &[u8]) -> io::Result<Meta> {
        expect_meta(self.call(BrokerOp::Stat, path)?.0)
    }

    fn lstat(&self, path: &[u8]) -> io::Result<Meta> {
        expect_meta(self.call(BrokerOp::Lstat, path)?.0)
    }

    fn canonicalize(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        match self.call(BrokerOp::Canonicalize, path)?.0 {
            BrokerReply::Path(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    fn open(&self, path: &[u8]) -> io::Result<(File, u64)> {
        match self.call(BrokerOp::OpenFile, path)? {
            (BrokerReply::Opened { size }, Some(fd)) => Ok((File::from(fd), size)),
            (other, _) => Err(unexpected(other)),
        }
    }

    fn list(&self, path: &[u8]) -> io::Result<Vec<DirEntry>> {
        let mut all = Vec::new();
        loop {
            let offset = u32::try_from(all.len()).unwrap_or(u32::MAX);
            match self.call(BrokerOp::ListDir { offset }, path)?.0 {
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

    /// Could the client read this file (or list this directory) itself?
    fn may(&self, path: &[u8], list: bool) -> bool {
        matches!(
            self.call(BrokerOp::MayAccess { list }, path),
            Ok((BrokerReply::Allowed(true), _))
        )
    }
}

fn expect_meta(r: BrokerReply) -> io::Result<Meta> {
    match r {
        BrokerReply::Meta(m) => Ok(m),
        other => Err(unexpected(other)),
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

/// The broker's policy, applied in this process.
pub struct LocalFiles {
    pub policy: Arc<FilePolicy>,
    pub peer: PeerCreds,
}

impl Files for LocalFiles {
    fn call(&self, op: BrokerOp, path: &[u8]) -> io::Result<(BrokerReply, Option<OwnedFd>)> {
        let req = BrokerRequest {
            op,
            path: path.to_vec(),
        };
        Ok(broker::handle(&self.policy, &self.peer, &req))
    }
}

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
}

/// Requests on behalf of one client, whose socket travels with each request
/// so the supervisor can read its identity itself.
pub struct RemoteFiles {
    pub client: Arc<BrokerClient>,
    pub socket: OwnedFd,
}

impl Files for RemoteFiles {
    fn call(&self, op: BrokerOp, path: &[u8]) -> io::Result<(BrokerReply, Option<OwnedFd>)> {
        let req = BrokerRequest {
            op,
            path: path.to_vec(),
        };
        let ch = self
            .client
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ch.send(&req.encode(), &[self.socket.as_fd()])?;
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
