//! Typed ends of a channel: each end sends one message type and receives
//! another, and the encoding happens here, not at every send and receive.
//!
//! [`Typed<S, R>`] (blocking) and [`AsyncTyped<S, R>`] (tokio) wrap a byte
//! [`Channel`]: `send` takes an `&S` and encodes it, `recv` decodes an `R`
//! (with the descriptors that came with it and the sender's pid, when the
//! channel passes credentials). [`Typed::pair`] makes the two ends of one
//! socket pair with mirrored types, `Typed<S, R>` and `Typed<R, S>`: the
//! supervisor's end of a worker's control channel is
//! `Typed<ToWorker, FromWorker>`, the worker's `Typed<FromWorker, ToWorker>`.
//!
//! How the types make a wrong send impossible: `send` of a
//! `Typed<ToWorker, FromWorker>` takes `&ToWorker` only, so passing a
//! `FromWorker` (or an engine holder's, observer's or launcher's message,
//! or bytes) is a type error, caught by the compiler; and since both ends
//! come from one `pair` call, what one end sends is the type the other end
//! decodes. An end made from a descriptor a child inherited or was passed
//! ([`Typed::inherit`], [`Typed::from_fd`]) gets its types from one alias in
//! the module of the process that holds it (`Control` in `worker`,
//! `zygote` and `observer`, `Channel` in `launcher`, `LogChannel` in
//! `log::relay`, `BrokerChannel` in `worker::files`), the mirror of the
//! supervisor's end; this module's tests send each pair both ways.
//!
//! What stays as it was, for a peer that may be compromised:
//!
//! * the bytes on the wire: every message type's own `encode`/`decode`
//!   (canonical, bounded, fuzzed in `fuzz/`) does the work, and the byte
//!   channel underneath is unchanged (tests that play a compromised worker
//!   still send raw bytes on it);
//! * a message that does not decode is [`RecvError::Decode`], never a
//!   message: each reader reports it as a protocol violation as before
//!   (the executor ends the peer);
//! * descriptors on a message type that carries none
//!   ([`Wire::CARRIES_FDS`] false: everything a worker, engine holder,
//!   observer or launcher sends root, and log records) are
//!   [`RecvError::Descriptors`] before any decoding, and are closed;
//! * the channel's own errors (a cut datagram, too many descriptors, a
//!   reset) are [`RecvError::Io`] with the byte channel's error kinds;
//! * the kernel's word for the sender's pid ([`Incoming::pid`]) is passed
//!   through unchanged.
#![forbid(unsafe_code)]

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::channel::{AsyncChannel, Channel, Received};
use super::messages::DecodeError;

/// A message type that travels on a channel.
pub trait Wire: Sized {
    /// Whether a message of this type may come with descriptors. A typed
    /// end refuses descriptors on a type that carries none, and sends none
    /// with it.
    const CARRIES_FDS: bool;
    /// The message's one encoding.
    fn encode(&self) -> Vec<u8>;
    /// The message `buf` holds, all of it; anything else is an error.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError>;
}

/// Implements [`Wire`] with the type's own `encode` and `decode`.
macro_rules! wire {
    ($($ty:ty => $fds:expr),* $(,)?) => {$(
        impl Wire for $ty {
            const CARRIES_FDS: bool = $fds;
            fn encode(&self) -> Vec<u8> {
                <$ty>::encode(self)
            }
            fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
                <$ty>::decode(buf)
            }
        }
    )*};
}

wire! {
    // A fork request carries the worker's channels, log channel and stderr.
    super::messages::ToZygote => true,
    super::messages::FromZygote => false,
    // A connection carries its client socket.
    super::messages::ToWorker => true,
    super::messages::FromWorker => false,
    super::messages::BrokerRequest => false,
    // Open replies carry the opened files.
    super::messages::BrokerReply => true,
    // The start carries the listening sockets, a self-test its connection.
    super::observe::ToObserver => true,
    super::observe::FromObserver => false,
    super::launch::ToLauncher => false,
    super::launch::FromLauncher => false,
    super::logrec::LogRecord => false,
}

/// No message: the type of a direction nothing travels in (the log
/// channel's back direction). Nothing decodes as it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nothing {}

impl Wire for Nothing {
    const CARRIES_FDS: bool = false;
    fn encode(&self) -> Vec<u8> {
        match *self {}
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Err(match buf.first() {
            None => DecodeError::Empty,
            Some(&tag) => DecodeError::UnknownTag(tag),
        })
    }
}

/// One message received, decoded.
#[derive(Debug)]
pub struct Incoming<R> {
    pub msg: R,
    /// The descriptors that came with it (none for a type that carries
    /// none).
    pub fds: Vec<OwnedFd>,
    /// The sending process, as the kernel saw it (with SO_PASSCRED).
    pub pid: Option<i32>,
}

/// Why no message was received.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The channel failed (the byte channel's error, kind unchanged).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent this many descriptors with a message of a type that
    /// carries none (the message was not decoded).
    #[error("{0} descriptors with a message that carries none")]
    Descriptors(usize),
    /// The peer sent bytes that are not a message of the expected type.
    #[error("{0}")]
    Decode(DecodeError),
}

/// The message in `m`, if it is one of type `R` and obeys its rules.
fn decode<R: Wire>(m: Received) -> Result<Incoming<R>, RecvError> {
    if !R::CARRIES_FDS && !m.fds.is_empty() {
        return Err(RecvError::Descriptors(m.fds.len()));
    }
    let msg = R::decode(&m.bytes).map_err(RecvError::Decode)?;
    Ok(Incoming {
        msg,
        fds: m.fds,
        pid: m.pid,
    })
}

/// `Err` when descriptors would go with a message type that carries none.
fn check_send<S: Wire>(fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    if !S::CARRIES_FDS && !fds.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "descriptors with a message that carries none",
        ));
    }
    Ok(())
}

/// One end of a channel that sends `S` and receives `R` (blocking, or
/// non-blocking after [`Typed::set_nonblocking`]).
pub struct Typed<S, R> {
    channel: Channel,
    // `fn(S) -> R`: the end holds no `S` or `R`, so it is `Send` and `Sync`
    // whatever they are.
    types: PhantomData<fn(S) -> R>,
}

impl<S, R> std::fmt::Debug for Typed<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("channel", &self.channel)
            .field("sends", &std::any::type_name::<S>())
            .field("receives", &std::any::type_name::<R>())
            .finish()
    }
}

impl<S: Wire, R: Wire> Typed<S, R> {
    /// A connected pair of mirrored ends (close-on-exec, as
    /// [`Channel::pair`]).
    pub fn pair() -> std::io::Result<(Typed<S, R>, Typed<R, S>)> {
        let (a, b) = Channel::pair()?;
        Ok((Typed::new(a), Typed::new(b)))
    }

    /// Gives a byte channel its types: where this process learns what the
    /// other end sends.
    pub fn new(channel: Channel) -> Typed<S, R> {
        Typed {
            channel,
            types: PhantomData,
        }
    }

    /// An end from a descriptor that came in a message (see
    /// [`Channel::from_fd`]).
    pub fn from_fd(fd: OwnedFd) -> Typed<S, R> {
        Typed::new(Channel::from_fd(fd))
    }

    /// The channel a parent placed at `fd` (see [`Channel::inherit`]).
    pub fn inherit(fd: RawFd) -> std::io::Result<Typed<S, R>> {
        Channel::inherit(fd).map(Typed::new)
    }

    /// Sends `msg` with `fds` (none unless `S` carries descriptors).
    pub fn send(&self, msg: &S, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        check_send::<S>(fds)?;
        self.channel.send(&msg.encode(), fds)
    }

    /// Receives one message; `Ok(None)` when the other end has closed.
    pub fn recv(&self) -> Result<Option<Incoming<R>>, RecvError> {
        self.channel.recv_from()?.map(decode).transpose()
    }

    /// See [`Channel::allow_fds`].
    pub fn allow_fds(&mut self, n: usize) {
        self.channel.allow_fds(n);
    }

    /// See [`Channel::pass_credentials`].
    pub fn pass_credentials(&self) -> std::io::Result<()> {
        self.channel.pass_credentials()
    }

    /// See [`Channel::set_nonblocking`].
    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        self.channel.set_nonblocking(on)
    }

    /// See [`Channel::shutdown`].
    pub fn shutdown(&self) {
        self.channel.shutdown();
    }

    /// The byte channel underneath.
    pub fn into_inner(self) -> Channel {
        self.channel
    }
}

impl<S, R> AsFd for Typed<S, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

impl<S, R> AsRawFd for Typed<S, R> {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }
}

impl<S, R> From<Typed<S, R>> for OwnedFd {
    fn from(t: Typed<S, R>) -> OwnedFd {
        t.channel.into()
    }
}

/// The async face of a [`Typed`] end (tokio), for the control loops.
pub struct AsyncTyped<S, R> {
    channel: AsyncChannel,
    types: PhantomData<fn(S) -> R>,
}

impl<S: Wire, R: Wire> AsyncTyped<S, R> {
    pub fn new(end: Typed<S, R>) -> std::io::Result<AsyncTyped<S, R>> {
        Ok(AsyncTyped {
            channel: AsyncChannel::new(end.channel)?,
            types: PhantomData,
        })
    }

    /// Receives one message; `Ok(None)` when the other end has closed.
    pub async fn recv(&self) -> Result<Option<Incoming<R>>, RecvError> {
        self.channel.recv_from().await?.map(decode).transpose()
    }

    /// Receives without waiting: `Io` of kind `WouldBlock` when nothing is
    /// queued.
    pub fn try_recv(&self) -> Result<Option<Incoming<R>>, RecvError> {
        self.channel.try_recv_from()?.map(decode).transpose()
    }

    pub async fn send(&self, msg: &S) -> std::io::Result<()> {
        self.channel.send(&msg.encode()).await
    }

    /// Sends `msg` with `fds` (none unless `S` carries descriptors).
    pub async fn send_with(&self, msg: &S, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        check_send::<S>(fds)?;
        self.channel.send_with(&msg.encode(), fds).await
    }

    /// Sends without waiting: `WouldBlock` when the peer's queue is full.
    pub fn try_send(&self, msg: &S, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        check_send::<S>(fds)?;
        self.channel.try_send(&msg.encode(), fds)
    }

    /// See [`Channel::shutdown`].
    pub fn shutdown(&self) {
        self.channel.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::logrec::{LogLevel, LogRecord};
    use crate::ipc::messages::{FromWorker, ToWorker};

    fn start() -> ToWorker {
        ToWorker::Start {
            worker: 7,
            temp_dir: b"/run/clamsentry/w7".to_vec(),
            threads: 2,
            queue: 16,
            proc_dev: 5,
        }
    }

    #[test]
    fn both_directions_of_a_worker_channel_round_trip() {
        let (supervisor, worker) = Typed::<ToWorker, FromWorker>::pair().unwrap();
        supervisor.pass_credentials().unwrap();
        // Supervisor to worker, with a descriptor (ToWorker carries them).
        let file = std::fs::File::open("/proc/self/status").unwrap();
        supervisor.send(&start(), &[file.as_fd()]).unwrap();
        let got = worker.recv().unwrap().unwrap();
        assert_eq!((got.msg, got.fds.len()), (start(), 1));
        // Worker to supervisor, with the kernel's word for the sender.
        worker.send(&FromWorker::Hello { worker: 7 }, &[]).unwrap();
        let got = supervisor.recv().unwrap().unwrap();
        assert_eq!(got.msg, FromWorker::Hello { worker: 7 });
        assert_eq!(got.pid, Some(std::process::id() as i32));
        drop(worker);
        assert!(supervisor.recv().unwrap().is_none());
    }

    #[tokio::test]
    async fn the_async_ends_round_trip_too() {
        let (supervisor, worker) = Typed::<ToWorker, FromWorker>::pair().unwrap();
        let (supervisor, worker) = (
            AsyncTyped::new(supervisor).unwrap(),
            AsyncTyped::new(worker).unwrap(),
        );
        supervisor.send(&ToWorker::Drain).await.unwrap();
        assert_eq!(worker.recv().await.unwrap().unwrap().msg, ToWorker::Drain);
        worker
            .try_send(&FromWorker::Hello { worker: 3 }, &[])
            .unwrap();
        let got = supervisor.try_recv().unwrap().unwrap();
        assert_eq!(got.msg, FromWorker::Hello { worker: 3 });
        assert!(matches!(
            supervisor.try_recv(),
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock
        ));
    }

    /// Sends `to` one way and `back` the other on a fresh pair.
    fn round_trip<S, R>(to: S, back: R)
    where
        S: Wire + PartialEq + std::fmt::Debug,
        R: Wire + PartialEq + std::fmt::Debug,
    {
        let (a, b) = Typed::<S, R>::pair().unwrap();
        a.send(&to, &[]).unwrap();
        assert_eq!(b.recv().unwrap().unwrap().msg, to);
        b.send(&back, &[]).unwrap();
        assert_eq!(a.recv().unwrap().unwrap().msg, back);
    }

    #[test]
    fn every_kind_of_channel_round_trips_both_ways() {
        use crate::ipc::launch::{Event, FromLauncher, ToLauncher};
        use crate::ipc::messages::{BrokerOp, BrokerReply, BrokerRequest, FromZygote, ToZygote};
        use crate::ipc::observe::{FromObserver, ProcUsage, ToObserver};
        round_trip(
            ToZygote::Measure,
            FromZygote::ForkFailed {
                worker: 4,
                error: "no memory".into(),
            },
        );
        round_trip(
            BrokerReply::Errno(2),
            BrokerRequest {
                conn: 9,
                op: BrokerOp::CloseDir { handle: 1 },
            },
        );
        round_trip(
            ToObserver::Selftest { id: 3 },
            FromObserver::Usage(ProcUsage {
                rss_kib: 1024,
                ..ProcUsage::default()
            }),
        );
        round_trip(
            ToLauncher::Event(Event {
                id: 5,
                peer: crate::policy::PeerKey::Uid(1000),
                virus: "Eicar-Signature".into(),
                target: b"/home/a/x".to_vec(),
            }),
            FromLauncher::Ready,
        );
    }

    #[test]
    fn bytes_that_do_not_decode_are_an_error_not_a_message() {
        let (supervisor, worker) = Typed::<ToWorker, FromWorker>::pair().unwrap();
        // A compromised worker writes on the byte channel underneath.
        let raw = worker.into_inner();
        raw.send(&[99], &[]).unwrap();
        assert!(matches!(
            supervisor.recv(),
            Err(RecvError::Decode(DecodeError::UnknownTag(99)))
        ));
        // A message of the other direction's type is not one of this.
        raw.send(&start().encode(), &[]).unwrap();
        assert!(matches!(supervisor.recv(), Err(RecvError::Decode(_))));
        // The channel goes on: the reader decides what a violation ends.
        raw.send(&FromWorker::Hello { worker: 1 }.encode(), &[])
            .unwrap();
        assert!(supervisor.recv().unwrap().is_some());
    }

    #[test]
    fn descriptors_are_refused_where_the_type_carries_none() {
        let (supervisor, worker) = Typed::<ToWorker, FromWorker>::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // A typed end does not send them.
        let hello = FromWorker::Hello { worker: 1 };
        assert!(worker.send(&hello, &[file.as_fd()]).is_err());
        // And refuses them from a peer that bypasses it, before decoding.
        let raw = worker.into_inner();
        raw.send(&hello.encode(), &[file.as_fd()]).unwrap();
        assert!(matches!(supervisor.recv(), Err(RecvError::Descriptors(1))));
    }

    #[test]
    fn a_log_channel_carries_records_one_way() {
        let (child, supervisor) = Typed::<LogRecord, Nothing>::pair().unwrap();
        let record = LogRecord {
            level: LogLevel::Info,
            truncated: false,
            dropped: 2,
            target: "clamsentry::worker".into(),
            file: None,
            line: None,
            message: b"scanned".to_vec(),
            fields: vec![],
        };
        child.send(&record, &[]).unwrap();
        assert_eq!(supervisor.recv().unwrap().unwrap().msg, record);
        // Nothing decodes as the back direction's type.
        supervisor.into_inner().send(b"\x01", &[]).unwrap();
        assert!(matches!(
            child.recv(),
            Err(RecvError::Decode(DecodeError::UnknownTag(1)))
        ));
    }
}
