//! The clamd wire protocol as pure functions over bytes: no I/O, and `unsafe_code` is forbidden.
//!
//! Everything here mirrors clamd 1.4.6 (`clamd/server-th.c` `get_cmd`,
//! `clamd/session.c` `parse_command`), including its quirks, because
//! clients depend on them:
//!
//! * Framing ([`frame`]): `z` commands end at the first NUL, `n` commands at
//!   the first `\n`; anything else is a *legacy* command, which is "one read =
//!   one command" and is only recognised at the start of a fresh read.
//! * Commands ([`command`]): prefix matched in clamd's table order; commands
//!   without arguments reject trailing bytes, commands with an argument skip
//!   exactly one separator byte.
//! * INSTREAM ([`instream`]): big-endian `u32` length, then data; a zero length
//!   ends the stream; every length is checked against what remains of the
//!   limit *before* any data is read.
//! * The read loop ([`framer`]): one step of a connection's framing loop
//!   over its bounded buffer, as a pure function (what `server::conn` does
//!   between reads).
//! * Replies ([`reply`]): byte-exact encoders, including the `N: ` prefix
//!   inside IDSESSION and the terminator of the request's framing.
//! * PROXY protocol v2 ([`proxy`]): the header a load balancer puts before
//!   a client's bytes; the supervisor decodes it (it is not clamd's).
#![forbid(unsafe_code)]

pub mod command;
pub mod frame;
pub mod framer;
pub mod instream;
pub mod proxy;
pub mod reply;

pub use command::{Command, CommandKind};
pub use frame::{decode, fildes_payload, Decoded, FildesPayload, Framing};
pub use instream::{ChunkDecoder, ChunkHeader};
