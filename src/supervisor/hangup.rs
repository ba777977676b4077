//! Hearing that a client hung up, from the supervisor's own copy of its
//! socket, so that the connection's authority ends at once — not when its
//! worker (which a hostile file may have taken over) says so.
//!
//! One thread waits on an epoll set of every handed-off client socket,
//! registered for no event at all: epoll then reports only `EPOLLHUP` and
//! `EPOLLERR`, which it always reports. The supervisor never reads these
//! sockets, so data arriving for the worker wakes nothing here.
//!
//! * On a Unix stream socket, `EPOLLHUP` means the peer closed its end
//!   completely (the kernel marks both directions shut when the peer's
//!   socket is released). A client that only shut down its sending side
//!   (`shutdown(SHUT_WR)`, still waiting for its reply) raises `EPOLLRDHUP`,
//!   which is not asked for: its authority stays.
//! * On TCP, `EPOLLHUP` comes with a reset, or once both directions are
//!   shut. A TCP client has no file authority beyond "others" and is never
//!   an administrator, so a TCP connection's authority is not worth more
//!   than that; a reset still revokes it.
//!
//! Each registration reports once (`EPOLLONESHOT`), and is removed before
//! the supervisor closes its copy of the socket (an epoll registration lives as long as the open file, which the
//! worker's copy keeps open).
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::event::epoll;

use super::gate::ConnId;

/// The epoll set. Cloning shares it.
#[derive(Clone)]
pub struct Watch {
    epoll: Arc<OwnedFd>,
}

impl Watch {
    /// Starts the waiting thread; `hung_up` is called on it for each
    /// connection whose client left (once: the registration is removed).
    pub fn start(hung_up: impl Fn(ConnId) -> bool + Send + 'static) -> std::io::Result<Watch> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let watch = Watch {
            epoll: Arc::new(fd),
        };
        let epoll = Arc::clone(&watch.epoll);
        std::thread::Builder::new()
            .name("hangup".into())
            .spawn(move || wait(&epoll, hung_up))?;
        Ok(watch)
    }

    /// Watches `socket` for the hang-up of connection `id`.
    pub fn add(&self, id: ConnId, socket: impl AsFd) -> std::io::Result<()> {
        epoll::add(
            self.epoll.as_fd(),
            socket,
            epoll::EventData::new_u64(id),
            // No interest: only HUP and ERR, once.
            epoll::EventFlags::ONESHOT,
        )?;
        Ok(())
    }

    /// Stops watching `socket` (before the supervisor closes its copy).
    pub fn remove(&self, socket: impl AsFd) {
        let _ = epoll::delete(self.epoll.as_fd(), socket);
    }
}

fn wait(epoll: &OwnedFd, hung_up: impl Fn(ConnId) -> bool) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    loop {
        events.clear();
        match epoll::wait(
            epoll.as_fd(),
            rustix::buffer::spare_capacity(&mut events),
            None,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "hang-up watch failed; connections lose their authority only when their worker closes them");
                return;
            }
        }
        for e in &events {
            let flags = e.flags;
            if flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
                let id = e.data.u64();
                if !hung_up(id) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_closed_peer_is_heard_a_half_closed_one_is_not() {
        let (tx, rx) = mpsc::channel();
        let watch = Watch::start(move |id| tx.send(id).is_ok()).unwrap();
        let (ours1, theirs1) = UnixStream::pair().unwrap();
        let (ours2, theirs2) = UnixStream::pair().unwrap();
        watch.add(1, &ours1).unwrap();
        watch.add(2, &ours2).unwrap();
        // Data for the worker wakes nothing.
        use std::io::Write;
        (&theirs2).write_all(b"zPING\0").unwrap();
        // A client that only stops sending keeps its authority.
        theirs2.shutdown(std::net::Shutdown::Write).unwrap();
        drop(theirs1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 1);
        drop(theirs2);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
        watch.remove(&ours1);
        watch.remove(&ours2);
    }
}
