//! Directories a worker is walking, held by the broker thread: each is an
//! open descriptor with its own read position, so a listing continues where
//! the last page ended (O(n) for n entries, however many pages), and the
//! worker only ever names it by a handle.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::FileType;

use super::resolve::{self, Rules};
use crate::ipc::messages::{entry_size, BrokerReply, Entry, FileKind, MAX_MESSAGE};
use crate::supervisor::authority::Authority;
use crate::supervisor::gate::WorkerId;

/// Most handles one worker's thread keeps at once, whatever its
/// connections ask for.
pub const MAX_HANDLES: usize = 4096;

/// Room kept free in a page for the reply's own fields (a `Listing` carries
/// its handle and up to [`crate::ipc::messages::MAX_FIRST_FILES`] opened
/// files, 21 bytes each, beside the entries).
const PAGE_MARGIN: usize = 256;

pub struct DirState {
    conn: u64,
    dir: rustix::fs::Dir,
    /// Canonical path of the directory (for following symlink entries).
    path: Vec<u8>,
    /// An entry read that did not fit the last page.
    pending: Option<Entry>,
    done: bool,
}

impl DirState {
    pub fn fd(&self) -> Result<BorrowedFd<'_>, rustix::io::Errno> {
        self.dir.fd()
    }

    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The next page of entries, each looked at as the client (this thread
    /// acts as the client while it runs).
    pub fn page(&mut self, rules: &Rules) -> BrokerReply {
        let mut entries = Vec::new();
        let mut size = PAGE_MARGIN;
        let mut more = false;
        loop {
            let entry = match self.pending.take() {
                Some(e) => e,
                None => {
                    if self.done {
                        break;
                    }
                    match self.dir.read() {
                        None => {
                            self.done = true;
                            break;
                        }
                        Some(Err(e)) => {
                            if entries.is_empty() {
                                self.done = true;
                                return BrokerReply::Errno(e.raw_os_error());
                            }
                            self.done = true;
                            break;
                        }
                        Some(Ok(d)) => {
                            let name = d.file_name().to_bytes();
                            if name == b"." || name == b".." {
                                continue;
                            }
                            self.entry(rules, name.to_vec(), d.ino(), d.file_type())
                        }
                    }
                }
            };
            let need = entry_size(entry.name.len());
            if size + need > MAX_MESSAGE && !entries.is_empty() {
                self.pending = Some(entry);
                more = true;
                break;
            }
            size += need;
            entries.push(entry);
        }
        BrokerReply::Entries { entries, more }
    }

    fn entry(&self, rules: &Rules, name: Vec<u8>, ino: u64, t: FileType) -> Entry {
        let hint = match t {
            FileType::RegularFile => Some(FileKind::File),
            FileType::Directory => Some(FileKind::Dir),
            FileType::Symlink => Some(FileKind::Symlink),
            FileType::Unknown => None,
            _ => Some(FileKind::Other),
        };
        let lstat = self
            .fd()
            .and_then(|fd| resolve::lstat_entry(fd, &name))
            .map_err(|e| e.raw_os_error());
        let is_link = matches!(lstat, Ok(m) if m.kind == FileKind::Symlink);
        let target = (is_link && (rules.follow_dirs || rules.follow_files))
            .then(|| resolve::follow_entry(rules, &self.path, &name).map_err(|e| e.raw_os_error()));
        Entry {
            name,
            ino,
            hint,
            lstat,
            target,
        }
    }
}

/// The handles of one worker.
#[derive(Default)]
pub struct Dirs {
    open: HashMap<u32, DirState>,
    per_conn: HashMap<u64, usize>,
    next: u32,
}

impl Dirs {
    /// Registers an open directory for `conn`; `None` when the connection
    /// (or the worker) holds too many already.
    pub fn open(&mut self, conn: u64, fd: OwnedFd, path: Vec<u8>, per_conn: usize) -> Option<u32> {
        let held = self.per_conn.get(&conn).copied().unwrap_or(0);
        if held >= per_conn || self.open.len() >= MAX_HANDLES {
            return None;
        }
        let dir = rustix::fs::Dir::new(fd).ok()?;
        self.next = self.next.wrapping_add(1).max(1);
        while self.open.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1).max(1);
        }
        let handle = self.next;
        self.open.insert(
            handle,
            DirState {
                conn,
                dir,
                path,
                pending: None,
                done: false,
            },
        );
        *self.per_conn.entry(conn).or_insert(0) += 1;
        Some(handle)
    }

    /// The handle, if `conn` holds it.
    pub fn get(&mut self, conn: u64, handle: u32) -> Option<&mut DirState> {
        self.open.get_mut(&handle).filter(|d| d.conn == conn)
    }

    pub fn close(&mut self, conn: u64, handle: u32) -> bool {
        if self.get(conn, handle).is_none() {
            return false;
        }
        self.open.remove(&handle);
        if let Some(n) = self.per_conn.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&conn);
            }
        }
        true
    }

    /// Drops the handles of connections that are finished (a walk cut short
    /// by a vanished client may not have closed them).
    pub fn forget_finished(&mut self, authority: &Authority, worker: WorkerId) {
        if self.open.len() < 64 {
            return;
        }
        self.forget_all_finished(authority, worker);
    }

    /// Closes the handles of every connection that has ended, however few
    /// are open (the thread's idle sweep).
    pub fn forget_all_finished(&mut self, authority: &Authority, worker: WorkerId) {
        let dead: Vec<u64> = self
            .per_conn
            .keys()
            .copied()
            .filter(|c| authority.lookup(*c, worker).is_err())
            .collect();
        for conn in dead {
            self.open.retain(|_, d| d.conn != conn);
            self.per_conn.remove(&conn);
        }
    }
}
