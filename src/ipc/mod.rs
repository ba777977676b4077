//! What travels between the daemon's processes, and how.
//!
//! * [`messages`]: the closed sets of messages between the supervisor, the
//!   engine holder (zygote) and the scanning workers, each bounded in size
//!   and encoded canonically (one encoding per value), so that decoding what
//!   a possibly compromised process sent is easy to read, test and fuzz.
//! * [`launch`]: the messages between the supervisor and the VirusEvent
//!   launcher (events in, outcomes back), closed and bounded the same way.
//! * [`channel`]: SEQPACKET socket pairs (one datagram = one message),
//!   descriptors as SCM_RIGHTS, and the sender's pid as the kernel attaches
//!   it (SCM_CREDENTIALS), which the supervisor uses to identify a new
//!   worker without believing its word.
//! * [`typed`]: the ends of a channel with their message types
//!   (`Typed<ToWorker, FromWorker>` for the supervisor's end of a worker's
//!   control channel, the mirror for the worker's): the only place messages
//!   are encoded for and decoded from a channel, so a process can only send
//!   what the other end expects.
//! * [`logrec`]: the log records every child sends the supervisor on its
//!   log channel (closed, bounded, fuzzed like the messages).
//! * [`fdpass`]: receiving client bytes together with the descriptors a
//!   FILDES client passes.
//! * [`observe`]: what the daemon says about itself (counters, process
//!   usage, the observer's snapshot and self-test), closed and bounded too.
//! * [`peer`]: who is on the other end of a Unix socket (SO_PEERCRED,
//!   SO_PEERGROUPS), read once by the supervisor when it accepts.
//!
//! Converting descriptors the kernel installed into owned ones, and one
//! `getsockopt` the `nix` crate does not wrap, are the only `unsafe` here.

pub mod channel;
pub mod fdpass;
pub mod launch;
pub mod logrec;
pub mod messages;
pub mod observe;
pub mod peer;
pub mod typed;
