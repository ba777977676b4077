//! Hearing, in the worker, that a client hung up while its work runs, so
//! that the work stops: a walk at its next entry, libclamav at its next
//! callback ([`crate::engine`]), queued files without being scanned.
//!
//! Once a command is read, nothing reads the client's socket until the
//! reply is written, so a client that leaves during a long scan is not
//! otherwise noticed. As the supervisor does (`supervisor::hangup`), the
//! worker keeps an epoll set in which sockets are registered with no
//! interest at all: epoll then reports only `EPOLLHUP` and `EPOLLERR`. On a
//! Unix socket `EPOLLHUP` means the client closed its end completely; a
//! client that only shut down its sending side and waits for its reply
//! (`shutdown(SHUT_WR)`, as `socat` does) raises `EPOLLRDHUP`, which is not
//! asked for, so its scan goes on. On TCP, `EPOLLHUP` comes with a reset or
//! once both directions are shut.
//!
//! The epoll set is itself a descriptor that becomes readable when a
//! registered socket hung up, so the worker's runtime waits for it like any
//! socket: no thread of its own (workers cannot start threads). A
//! connection is registered only while long work runs for it (a path walk,
//! an IDSESSION, a scan still running after [`WATCH_AFTER`]), through a
//! duplicate of its socket that the registration owns, so that removing it
//! never names a descriptor that was closed and reused.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;

/// A scan still running after this long gets its connection watched (a
/// short scan never pays for the registration).
pub const WATCH_AFTER: Duration = Duration::from_millis(20);

/// The epoll set and what each registration is for.
pub struct Hangups {
    epoll: AsyncFd<OwnedFd>,
    watched: Mutex<HashMap<u64, Watched>>,
}

struct Watched {
    /// Registrations of this connection alive now (an IDSESSION's commands
    /// may overlap); the socket leaves the set with the last one.
    count: usize,
    socket: OwnedFd,
    gone: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hangups {
    /// Must run inside the worker's runtime.
    pub fn new() -> std::io::Result<Hangups> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the `OwnedFd` owns the epoll descriptor for as long as the
        // `AsyncFd` lives, and `as_raw_fd` always returns that descriptor.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        Ok(Hangups {
            epoll,
            watched: Mutex::default(),
        })
    }

    /// Watches `socket` for the hang-up of connection `conn` until the
    /// returned registration is dropped; `gone` is set when it comes. If
    /// the socket cannot be watched, nothing is (the work then stops only
    /// when its replies cannot be sent, as before).
    pub fn watch(
        self: &Arc<Self>,
        conn: u64,
        socket: BorrowedFd<'_>,
        gone: &Arc<AtomicBool>,
    ) -> Watching {
        let mut watched = lock(&self.watched);
        if let Some(w) = watched.get_mut(&conn) {
            w.count += 1;
        } else {
            let Ok(socket) = socket.try_clone_to_owned() else {
                return Watching {
                    hangups: None,
                    conn,
                };
            };
            let added = epoll::add(
                self.epoll.get_ref().as_fd(),
                &socket,
                epoll::EventData::new_u64(conn),
                // No interest: only HUP and ERR, once.
                epoll::EventFlags::ONESHOT,
            );
            if added.is_err() {
                return Watching {
                    hangups: None,
                    conn,
                };
            }
            watched.insert(
                conn,
                Watched {
                    count: 1,
                    socket,
                    gone: Arc::clone(gone),
                },
            );
        }
        Watching {
            hangups: Some(Arc::clone(self)),
            conn,
        }
    }

    fn unwatch(&self, conn: u64) {
        let mut watched = lock(&self.watched);
        let last = watched.get_mut(&conn).is_some_and(|w| {
            w.count -= 1;
            w.count == 0
        });
        if last {
            if let Some(w) = watched.remove(&conn) {
                // Before the duplicate closes: the registration would
                // otherwise live as long as the supervisor's copy.
                let _ = epoll::delete(self.epoll.get_ref().as_fd(), &w.socket);
            }
        }
    }

    /// Connections watched now (for the unit tests).
    #[cfg(test)]
    pub fn watching(&self) -> usize {
        lock(&self.watched).len()
    }

    /// Marks every connection whose client hung up as gone; runs for the
    /// worker's life.
    pub async fn run(self: Arc<Self>) {
        loop {
            let Ok(mut ready) = self.epoll.readable().await else {
                tracing::warn!("hang-up watch failed; abandoned scans run to their end");
                return;
            };
            match self.take_events() {
                Ok(0) => ready.clear_ready(),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "hang-up watch failed; abandoned scans run to their end");
                    return;
                }
            }
        }
    }

    /// Reads the events waiting (without blocking) and marks their
    /// connections as gone; returns how many there were.
    fn take_events(&self) -> rustix::io::Result<usize> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        epoll::wait(
            self.epoll.get_ref().as_fd(),
            rustix::buffer::spare_capacity(&mut events),
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )?;
        let watched = lock(&self.watched);
        for e in &events {
            let (flags, data) = (e.flags, e.data);
            if flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
                if let Some(w) = watched.get(&data.u64()) {
                    w.gone.store(true, Ordering::Relaxed);
                }
            }
        }
        Ok(events.len())
    }
}

/// A connection watched for its client's hang-up; unwatched when dropped.
pub struct Watching {
    hangups: Option<Arc<Hangups>>,
    conn: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(h) = self.hangups.take() {
            h.unwatch(self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    async fn wait_for(flag: &AtomicBool) {
        let limit = tokio::time::Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::Relaxed) {
            assert!(tokio::time::Instant::now() < limit, "not heard");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_closed_client_is_heard_a_half_closed_one_is_not() {
        let hangups = Arc::new(Hangups::new().unwrap());
        tokio::spawn(Arc::clone(&hangups).run());
        let (ours1, theirs1) = UnixStream::pair().unwrap();
        let (ours2, theirs2) = UnixStream::pair().unwrap();
        let (gone1, gone2) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let w1 = hangups.watch(1, ours1.as_fd(), &gone1);
        let w2 = hangups.watch(2, ours2.as_fd(), &gone2);
        // A second registration of the same connection shares the first.
        let w2b = hangups.watch(2, ours2.as_fd(), &gone2);
        assert_eq!(hangups.watching(), 2);
        // Data and a half-close wake nothing...
        use std::io::Write;
        (&theirs2).write_all(b"zPING\0").unwrap();
        theirs2.shutdown(std::net::Shutdown::Write).unwrap();
        // ...a full close does; the other connection is told nothing.
        drop(theirs1);
        wait_for(&gone1).await;
        assert!(!gone2.load(Ordering::Relaxed));
        drop(theirs2);
        wait_for(&gone2).await;
        drop((w1, w2));
        assert_eq!(hangups.watching(), 1);
        drop(w2b);
        assert_eq!(hangups.watching(), 0);
    }
}
