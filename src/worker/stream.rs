//! The two socket kinds behind one reader and one shared writer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use crate::ipc::fdpass;

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn split(self) -> (Reader, Box<dyn AsyncWrite + Send + Unpin>) {
        match self {
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Reader::Unix(r), Box::new(w))
            }
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Reader::Tcp(r), Box::new(w))
            }
        }
    }
}

pub enum Reader {
    Unix(unix::OwnedReadHalf),
    Tcp(tcp::OwnedReadHalf),
}

impl Reader {
    /// The connection's socket.
    pub fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Reader::Unix(r) => AsRef::<UnixStream>::as_ref(r).as_fd(),
            Reader::Tcp(r) => AsRef::<TcpStream>::as_ref(r).as_fd(),
        }
    }

    /// Reads what is available; on a Unix socket, also collects passed descriptors.
    pub async fn read_some(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        match self {
            Reader::Tcp(r) => tokio::io::AsyncReadExt::read(r, buf).await,
            Reader::Unix(r) => {
                let s: &UnixStream = r.as_ref();
                loop {
                    s.readable().await?;
                    match s.try_io(Interest::READABLE, || {
                        fdpass::recv_with_fds(s.as_fd(), buf, fds)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            }
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Unix(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write half, shared by every task that answers on this connection so
/// that each reply line is written whole.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>,
    timeout: Duration,
}

impl Writer {
    pub fn new(w: Box<dyn AsyncWrite + Send + Unpin>, timeout: Duration) -> Writer {
        Writer {
            inner: Arc::new(tokio::sync::Mutex::new(w)),
            timeout,
        }
    }

    /// Writes one whole reply; a client that does not read within the
    /// timeout is treated as gone.
    pub async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.inner.lock().await;
        match tokio::time::timeout(self.timeout, w.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading replies",
            )),
        }
    }

    pub async fn close(&self) {
        let mut w = self.inner.lock().await;
        let _ = tokio::time::timeout(self.timeout, w.shutdown()).await;
    }
}
