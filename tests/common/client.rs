//! A minimal clamd client for tests: raw bytes in, raw bytes out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub fn open(addr: &Addr) -> std::io::Result<Conn> {
        Ok(match addr {
            Addr::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
            Addr::Tcp(a) => Conn::Tcp(TcpStream::connect_timeout(a, Duration::from_secs(5))?),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.write_all(bytes),
            Conn::Tcp(s) => s.write_all(bytes),
        }
    }

    /// Sends one byte with a descriptor attached (how FILDES passes files).
    pub fn send_fd(&mut self, fd: RawFd) -> std::io::Result<()> {
        let Conn::Unix(s) = self else {
            panic!("descriptors pass only over Unix sockets")
        };
        let fds = [fd];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"\0")];
        nix::sys::socket::sendmsg::<()>(
            s.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Reads until the peer closes or `timeout` passes without data.
    /// A timeout appends `<TIMEOUT>` so tests can tell it from a close.
    pub fn read_all(&mut self, timeout: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let _ = match self {
            Conn::Unix(s) => s.set_read_timeout(Some(timeout)),
            Conn::Tcp(s) => s.set_read_timeout(Some(timeout)),
        };
        loop {
            let r = match self {
                Conn::Unix(s) => s.read(&mut buf),
                Conn::Tcp(s) => s.read(&mut buf),
            };
            match r {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    out.extend_from_slice(b"<TIMEOUT>");
                    break;
                }
                Err(_) => break,
            }
        }
        out
    }

    /// Reads until `needle` has arrived (or the peer closes / timeout).
    pub fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let _ = match self {
                Conn::Unix(s) => s.set_read_timeout(Some(left)),
                Conn::Tcp(s) => s.set_read_timeout(Some(left)),
            };
            let r = match self {
                Conn::Unix(s) => s.read(&mut buf),
                Conn::Tcp(s) => s.read(&mut buf),
            };
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(needle.len()).any(|w| w == needle) {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Sends `parts` (with a short pause between them, so that each arrives as
/// its own read) and returns everything the daemon answers.
pub fn talk(addr: &Addr, parts: &[&[u8]], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut c = Conn::open(addr)?;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        c.send(p)?;
    }
    Ok(c.read_all(timeout))
}

/// An INSTREAM request: prefix, chunks of `chunk` bytes, zero terminator.
pub fn instream(prefix: &[u8], data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = prefix.to_vec();
    for c in data.chunks(chunk.max(1)) {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Shows bytes readably in assertion messages.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('\0', "\\0")
        .replace('\n', "\\n")
}

/// Sends `bytes` from a separate thread (ignoring send errors, as a client
/// that keeps streaming after the daemon refused would) while reading every
/// reply; for requests the daemon may refuse part-way.
pub fn talk_streaming(addr: &Addr, bytes: Vec<u8>, timeout: Duration) -> Vec<u8> {
    let mut c = match Conn::open(addr) {
        Ok(c) => c,
        Err(_) => return b"<CONNECT FAILED>".to_vec(),
    };
    let mut w = match &c {
        Conn::Unix(s) => Conn::Unix(s.try_clone().unwrap()),
        Conn::Tcp(s) => Conn::Tcp(s.try_clone().unwrap()),
    };
    let writer = std::thread::spawn(move || {
        for part in bytes.chunks(64 * 1024) {
            if w.send(part).is_err() {
                break;
            }
        }
    });
    let out = c.read_all(timeout);
    let _ = writer.join();
    out
}

/// Connects from a chosen local address (e.g. 127.0.0.2) to a TCP daemon;
/// in a network lab (`netns`), from the clients' namespace when `local` is
/// one of its networks.
pub fn connect_from(local: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = super::netns::made_for(local, || {
        socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
    })?;
    s.bind(&SocketAddr::new(local, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}
