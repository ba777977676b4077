//! The messages between the supervisor and the VirusEvent launcher
//! (`crate::launcher`): two small closed sets, bounded, encoded by hand
//! with [`super::messages`]'s encoder (tag byte, fields in order, integers
//! little endian, byte strings as `u32` length + bytes, booleans 0 or 1
//! only), so that every value has exactly one encoding (the `launch` fuzz
//! target checks the round trip).
//!
//! | direction | messages |
//! |---|---|
//! | supervisor → launcher | [`ToLauncher::Setup`] first, then [`ToLauncher::Event`]s |
//! | launcher → supervisor | [`FromLauncher::Ready`] once, then an [`Outcome`] per event; [`FromLauncher::Fatal`] before it gives up |
//!
//! The launcher runs as `virus-event.user` and may be compromised by a
//! command running as the same user, so the supervisor treats what it
//! decodes here as hostile: an outcome must name an event it sent and
//! repeat that event's peer, virus name and file name, or the launcher is
//! ended (`supervisor::virus_event`).
#![forbid(unsafe_code)]

use super::messages::{get_peer, put_peer, start, DecodeError, In, Out, MAX_PATH, MAX_VIRUS_NAME};

use crate::policy::PeerKey;

/// Longest command text (`virus-event.command` is validated to this).
pub const MAX_COMMAND: usize = 4096;
/// Longest file name passed to the command (`CLAM_VIRUSEVENT_FILENAME`):
/// what a worker may report.
pub const MAX_FILE_NAME: usize = MAX_PATH;
/// Longest `PATH` passed on to the command.
pub const MAX_PATH_VARIABLE: usize = 16 * 1024;
/// Bytes of the command's stdout and of its stderr kept for the log.
pub const CAPTURE: usize = 4096;
/// Longest error text.
pub const MAX_ERROR: usize = 1024;

/// Supervisor → launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToLauncher {
    /// Always the first message: what to run and its limits.
    Setup(Setup),
    /// Run the command for one detection.
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// `virus-event.command`, `%v` and `%f` not yet substituted.
    pub command: String,
    /// Seconds before the command's process group is killed.
    pub timeout_s: u32,
    /// Commands the launcher runs at once at most (the supervisor's budget
    /// never asks for more; this is the launcher's own bound).
    pub max_concurrent: u32,
    /// The daemon's `PATH`, passed on to the command (empty: none).
    pub path: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Chosen by the supervisor; the outcome names it.
    pub id: u64,
    /// The client whose scan found it (the budget it was charged to).
    pub peer: PeerKey,
    /// As the worker reported it: checked by the launcher, not here.
    pub virus: String,
    pub target: Vec<u8>,
}

/// Launcher → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromLauncher {
    /// Set up (identity, sandbox and limits checked): events may come.
    Ready,
    /// How one event ended.
    Outcome(Outcome),
    /// The launcher cannot go on (sent before it exits): why.
    Fatal { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: u64,
    pub peer: PeerKey,
    pub virus: String,
    pub target: Vec<u8>,
    pub status: Status,
    /// From the start of the command (0 when it did not run).
    pub duration_ms: u64,
    pub stdout: Excerpt,
    pub stderr: Excerpt,
}

/// How the command ended, or why none ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    /// Killed with its process group after the timeout.
    TimedOut,
    /// No command ran for this event.
    Refused(Refusal),
    /// The command could not be started (the system's error).
    Failed(String),
}

/// Why the launcher ran no command for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The virus name is empty, too long or not printable ASCII.
    BadVirusName,
    /// The file name has a NUL byte.
    BadFileName,
    /// The name needs quoting where `%v` stands, and the quoting context
    /// there cannot be told for certain.
    Unquotable,
    /// `max_concurrent` commands were running.
    Busy,
    /// No thread could be started to watch the command.
    NoThread,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadVirusName => "the virus name is empty, too long or not printable ASCII",
            Refusal::BadFileName => "the file name has a NUL byte",
            Refusal::Unquotable => {
                "the virus name needs quoting and %v stands where its quoting context is unclear"
            }
            Refusal::Busy => "the launcher was running virus-event.max-concurrent commands",
            Refusal::NoThread => "the launcher could not start a thread",
        }
    }
}

/// The first bytes of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excerpt {
    /// At most [`CAPTURE`] bytes.
    pub bytes: Vec<u8>,
    /// The stream had more.
    pub truncated: bool,
}

// ---------------------------------------------------------------- encoding
// With the encoder and decoder of `messages`, plus the two field kinds only
// these messages have.

fn put_excerpt(out: Out, e: &Excerpt) -> Out {
    out.bytes(&e.bytes).bool(e.truncated)
}

fn get_excerpt(r: &mut In<'_>) -> Result<Excerpt, DecodeError> {
    Ok(Excerpt {
        bytes: r.bytes(CAPTURE)?,
        truncated: r.bool()?,
    })
}

impl ToLauncher {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToLauncher::Setup(s) => Out::new(1)
                .bytes(s.command.as_bytes())
                .u32(s.timeout_s)
                .u32(s.max_concurrent)
                .bytes(&s.path),
            ToLauncher::Event(e) => put_peer(Out::new(2).u64(e.id), &e.peer)
                .bytes(e.virus.as_bytes())
                .bytes(&e.target),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => ToLauncher::Setup(Setup {
                command: r.text(MAX_COMMAND)?,
                timeout_s: r.u32()?,
                max_concurrent: r.u32()?,
                path: r.bytes(MAX_PATH_VARIABLE)?,
            }),
            2 => ToLauncher::Event(Event {
                id: r.u64()?,
                peer: get_peer(&mut r)?,
                virus: r.text(MAX_VIRUS_NAME)?,
                target: r.bytes(MAX_FILE_NAME)?,
            }),
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl FromLauncher {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            FromLauncher::Ready => Out::new(1),
            FromLauncher::Outcome(o) => {
                let out = put_peer(Out::new(2).u64(o.id), &o.peer)
                    .bytes(o.virus.as_bytes())
                    .bytes(&o.target);
                let out = match &o.status {
                    Status::Exited(c) => out.u8(0).i32(*c),
                    Status::Signaled(s) => out.u8(1).i32(*s),
                    Status::TimedOut => out.u8(2),
                    Status::Refused(r) => out.u8(3).u8(refusal_byte(*r)),
                    Status::Failed(e) => out.u8(4).bytes(e.as_bytes()),
                };
                put_excerpt(put_excerpt(out.u64(o.duration_ms), &o.stdout), &o.stderr)
            }
            FromLauncher::Fatal { error } => Out::new(3).bytes(error.as_bytes()),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => FromLauncher::Ready,
            2 => {
                let id = r.u64()?;
                let peer = get_peer(&mut r)?;
                let virus = r.text(MAX_VIRUS_NAME)?;
                let target = r.bytes(MAX_FILE_NAME)?;
                let status = match r.u8()? {
                    0 => Status::Exited(r.i32()?),
                    1 => Status::Signaled(r.i32()?),
                    2 => Status::TimedOut,
                    3 => Status::Refused(byte_refusal(r.u8()?)?),
                    4 => Status::Failed(r.text(MAX_ERROR)?),
                    _ => return Err(DecodeError::BadValue),
                };
                FromLauncher::Outcome(Outcome {
                    id,
                    peer,
                    virus,
                    target,
                    status,
                    duration_ms: r.u64()?,
                    stdout: get_excerpt(&mut r)?,
                    stderr: get_excerpt(&mut r)?,
                })
            }
            3 => FromLauncher::Fatal {
                error: r.text(MAX_ERROR)?,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

fn refusal_byte(r: Refusal) -> u8 {
    match r {
        Refusal::BadVirusName => 0,
        Refusal::BadFileName => 1,
        Refusal::Unquotable => 2,
        Refusal::Busy => 3,
        Refusal::NoThread => 4,
    }
}

fn byte_refusal(b: u8) -> Result<Refusal, DecodeError> {
    Ok(match b {
        0 => Refusal::BadVirusName,
        1 => Refusal::BadFileName,
        2 => Refusal::Unquotable,
        3 => Refusal::Busy,
        4 => Refusal::NoThread,
        _ => return Err(DecodeError::BadValue),
    })
}

/// `s` cut to at most `max` bytes at a character boundary (for error texts).
pub fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<PeerKey> {
        vec![
            PeerKey::unix(1000),
            PeerKey::tcp("127.0.0.1".parse().unwrap()),
            PeerKey::tcp("2001:db8::1".parse().unwrap()),
        ]
    }

    #[test]
    fn round_trips() {
        let setup = ToLauncher::Setup(Setup {
            command: "echo %v".into(),
            timeout_s: 30,
            max_concurrent: 4,
            path: b"/usr/bin:/bin".to_vec(),
        });
        assert_eq!(ToLauncher::decode(&setup.encode()).unwrap(), setup);
        for peer in peers() {
            let e = ToLauncher::Event(Event {
                id: 7,
                peer,
                virus: "Win.Test.EICAR_HDB-1".into(),
                target: b"/srv/x \xff".to_vec(),
            });
            assert_eq!(ToLauncher::decode(&e.encode()).unwrap(), e);
            for status in [
                Status::Exited(3),
                Status::Signaled(9),
                Status::TimedOut,
                Status::Refused(Refusal::Unquotable),
                Status::Failed("ENOENT".into()),
            ] {
                let o = FromLauncher::Outcome(Outcome {
                    id: 7,
                    peer,
                    virus: "x".into(),
                    target: b"stream".to_vec(),
                    status,
                    duration_ms: 12,
                    stdout: Excerpt {
                        bytes: b"out".to_vec(),
                        truncated: true,
                    },
                    stderr: Excerpt::default(),
                });
                assert_eq!(FromLauncher::decode(&o.encode()).unwrap(), o);
            }
        }
        for m in [
            FromLauncher::Ready,
            FromLauncher::Fatal { error: "no".into() },
        ] {
            assert_eq!(FromLauncher::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(FromLauncher::decode(b""), Err(DecodeError::Empty));
        assert_eq!(FromLauncher::decode(&[9]), Err(DecodeError::UnknownTag(9)));
        assert_eq!(FromLauncher::decode(&[1, 0]), Err(DecodeError::Trailing(1)));
        // A network with host bits set is not a peer key.
        let event = |addr: [u8; 4], len: u8| {
            let mut e = Out::new(2).u64(1).u8(4);
            e.0.extend_from_slice(&addr);
            e.u8(len).bytes(b"x").bytes(b"y").0
        };
        assert!(ToLauncher::decode(&event([10, 0, 0, 0], 24)).is_ok());
        assert_eq!(
            ToLauncher::decode(&event([10, 0, 0, 1], 24)),
            Err(DecodeError::BadValue)
        );
        // Loopback is one client, 127.0.0.0/8: a /24 of it is no key.
        assert!(ToLauncher::decode(&event([127, 0, 0, 0], 8)).is_ok());
        assert_eq!(
            ToLauncher::decode(&event([127, 0, 0, 0], 24)),
            Err(DecodeError::BadValue)
        );
        // Nor a prefix longer than the address.
        assert_eq!(
            ToLauncher::decode(&event([10, 0, 0, 0], 33)),
            Err(DecodeError::BadValue)
        );
        // Output excerpts are bounded.
        let o = Outcome {
            id: 1,
            peer: PeerKey::unix(1),
            virus: "x".into(),
            target: vec![],
            status: Status::TimedOut,
            duration_ms: 0,
            stdout: Excerpt {
                bytes: vec![b'a'; CAPTURE + 1],
                truncated: false,
            },
            stderr: Excerpt::default(),
        };
        assert_eq!(
            FromLauncher::decode(&FromLauncher::Outcome(o).encode()),
            Err(DecodeError::TooLong(CAPTURE + 1))
        );
        assert_eq!(bounded("aé", 2), "a");
    }
}
