//! Descriptors on their way to a worker: what the broker sent that the
//! worker has not read yet.
//!
//! A descriptor in a message not yet received is "in flight", and the
//! kernel counts every one a user has in flight against that user's
//! `RLIMIT_NOFILE`: past it, every `SCM_RIGHTS` send of that user fails
//! (`ETOOMANYREFS`). The supervisor is root, so a worker that asks for
//! files and never reads the replies would make root's own hand-offs of
//! new connections to workers fail for every client (sixth outside
//! review: four such workers, about 20,000 descriptors, and no new
//! connection reached any worker). So each broker thread sends at most
//! its bound of descriptors beyond what it knows the worker has read; past
//! that it waits until the worker has read every reply (the kernel's count
//! of unread bytes on the channel is zero). Only that worker's requests
//! wait; a worker that never reads holds its bound and no more, and when it
//! ends its unread messages, descriptors and all, are gone.
//!
//! An honest worker reads its replies as its threads wait for theirs; what
//! it may leave unread for a while is a few batches per walk (the batch
//! asked for ahead, listings asked ahead: about 100 descriptors), so the
//! bound is [`PER_THREAD`] per scanning thread.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// While a broker thread waits for its worker to read, it still does its
/// housekeeping this often (closing ended connections' directories).
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Descriptors a worker may leave unread per scanning thread it has.
pub const PER_THREAD: usize = 128;

/// One broker thread's count.
#[derive(Debug)]
pub struct InFlight {
    bound: usize,
    sent: usize,
}

impl InFlight {
    /// A worker with `threads` scanning threads.
    pub fn new(threads: u32) -> InFlight {
        InFlight {
            bound: PER_THREAD * (threads as usize).max(8),
            sent: 0,
        }
    }

    /// Waits, if need be, until `n` more descriptors may go on `channel`,
    /// calling `meanwhile` every [`SWEEP_EVERY`] while it waits.
    pub fn room(&mut self, channel: impl AsFd, n: usize, mut meanwhile: impl FnMut()) {
        if self.sent + n <= self.bound {
            self.sent += n;
            return;
        }
        // Everything sent so far must be read first (or the worker gone:
        // its queue is dropped with it). Then count afresh.
        let mut swept = std::time::Instant::now();
        while matches!(unread_bytes(&channel), Ok(b) if b > 0) {
            std::thread::sleep(Duration::from_millis(2));
            if swept.elapsed() >= SWEEP_EVERY {
                meanwhile();
                swept = std::time::Instant::now();
            }
        }
        self.sent = n;
    }
}

/// Bytes sent on this Unix socket that its peer has not read yet
/// (`SIOCOUTQ`).
fn unread_bytes(socket: &impl AsFd) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) on a socket writes one c_int through the
    // pointer, which points to `n`, alive for the call; the descriptor is
    // borrowed for the call.
    let rc = unsafe {
        libc::ioctl(
            socket.as_fd().as_raw_fd(),
            libc::TIOCOUTQ,
            &mut n as *mut libc::c_int,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn past_the_bound_it_waits_until_the_worker_has_read_everything() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut f = InFlight::new(1);
        let bound = PER_THREAD * 8;
        // Within the bound: no waiting, whatever is unread.
        a.send(b"reply").unwrap();
        f.room(&a, bound, || {});
        // Past it: waits until the reply is read (on another thread, a
        // moment later), then counts afresh.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 16];
            b.recv(&mut buf).unwrap();
            b
        });
        let started = std::time::Instant::now();
        f.room(&a, 3, || {});
        assert!(reader.is_finished(), "did not wait for the reader");
        assert!(started.elapsed() >= Duration::from_millis(40));
        let _b = reader.join().unwrap();
        assert_eq!(f.sent, 3);
    }
}
