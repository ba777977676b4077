//! The messages between supervisor and worker: a small closed set, each one
//! bounded in size, encoded by hand so that decoding is easy to read, test
//! and fuzz. Anything that does not decode is a protocol violation: the
//! supervisor kills a worker that sends it.
//!
//! Encoding: one message per SEQPACKET datagram: a tag byte, then fields in
//! order; integers little endian; byte strings as `u32` length + bytes.
#![forbid(unsafe_code)]

/// Largest datagram either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest path in a broker request (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Worker → supervisor, on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToSupervisor {
    /// The engine is loaded and the worker accepts connections.
    Ready {
        engine_version: String,
        signatures: u32,
        db_version: u32,
        db_time: u64,
        sandbox: String,
    },
    /// The engine could not be loaded; the worker exits after sending this.
    LoadFailed { error: String },
    /// A client sent RELOAD.
    ReloadRequest,
    /// A client sent SHUTDOWN or QUIT.
    ShutdownRequest,
    /// Signature loading progress (while starting).
    Progress {
        compiling: bool,
        done: u64,
        total: u64,
    },
    /// Answer to [`ToWorker::Ping`], with counters since the worker started;
    /// `healthy` is false when the scan pool shows no progress (watchdog).
    Pong {
        seq: u64,
        scans: u64,
        found: u64,
        errors: u64,
        healthy: bool,
    },
}

/// Supervisor → worker, on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// The validated configuration (TOML text); always the first message.
    Config { toml: String },
    /// Stop accepting, finish in-flight requests, exit 0.
    Drain,
    /// Health check; the worker answers with [`ToSupervisor::Pong`].
    Ping { seq: u64 },
}

/// What the broker is asked to do with a path, on behalf of the client whose
/// socket travels with the request (the supervisor reads its SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerOp {
    /// `stat` (follow symlinks) — needs search permission on the way.
    Stat,
    /// `lstat`.
    Lstat,
    /// Resolve symlinks and `..`.
    Canonicalize,
    /// Open a regular file for reading; the descriptor comes back.
    OpenFile,
    /// List a directory (from entry `offset` on).
    ListDir { offset: u32 },
    /// Could the client read this file (`list: false`) or list this directory?
    MayAccess { list: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRequest {
    pub op: BrokerOp,
    pub path: Vec<u8>,
}

/// File kinds as the walker needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: FileKind,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    /// `None` when the directory entry did not say (DT_UNKNOWN).
    pub kind: Option<FileKind>,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerReply {
    /// The call failed with this errno (policy refusals look like ENOENT/EACCES).
    Errno(i32),
    Meta(Meta),
    Path(Vec<u8>),
    /// The file is opened; its descriptor travels with this message.
    Opened {
        size: u64,
    },
    /// Entries from the requested offset; `more` if the listing continues.
    Entries {
        entries: Vec<DirEntry>,
        more: bool,
    },
    Allowed(bool),
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is empty")]
    Empty,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("message ends early")]
    Truncated,
    #[error("field longer than allowed ({0} bytes)")]
    TooLong(usize),
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
    #[error("text field is not UTF-8")]
    NotUtf8,
    #[error("invalid field value")]
    BadValue,
}

struct Out(Vec<u8>);

impl Out {
    fn new(tag: u8) -> Out {
        Out(vec![tag])
    }
    fn u8(mut self, v: u8) -> Out {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Out {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
}

struct In<'a> {
    buf: &'a [u8],
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn text(&mut self, max: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(max)?).map_err(|_| DecodeError::NotUtf8)
    }
    fn end<T>(self, v: T) -> Result<T, DecodeError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

fn start(buf: &[u8]) -> Result<(u8, In<'_>), DecodeError> {
    let (&tag, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    Ok((tag, In { buf: rest }))
}

const TEXT: usize = 4096;

impl ToSupervisor {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToSupervisor::Ready {
                engine_version,
                signatures,
                db_version,
                db_time,
                sandbox,
            } => Out::new(1)
                .bytes(engine_version.as_bytes())
                .u32(*signatures)
                .u32(*db_version)
                .u64(*db_time)
                .bytes(sandbox.as_bytes()),
            ToSupervisor::LoadFailed { error } => Out::new(2).bytes(error.as_bytes()),
            ToSupervisor::ReloadRequest => Out::new(3),
            ToSupervisor::ShutdownRequest => Out::new(4),
            ToSupervisor::Pong {
                seq,
                scans,
                found,
                errors,
                healthy,
            } => Out::new(5)
                .u64(*seq)
                .u64(*scans)
                .u64(*found)
                .u64(*errors)
                .u8(u8::from(*healthy)),
            ToSupervisor::Progress {
                compiling,
                done,
                total,
            } => Out::new(6).u8(u8::from(*compiling)).u64(*done).u64(*total),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => ToSupervisor::Ready {
                engine_version: r.text(64)?,
                signatures: r.u32()?,
                db_version: r.u32()?,
                db_time: r.u64()?,
                sandbox: r.text(TEXT)?,
            },
            2 => ToSupervisor::LoadFailed {
                error: r.text(TEXT)?,
            },
            3 => ToSupervisor::ReloadRequest,
            4 => ToSupervisor::ShutdownRequest,
            5 => ToSupervisor::Pong {
                seq: r.u64()?,
                scans: r.u64()?,
                found: r.u64()?,
                errors: r.u64()?,
                healthy: r.bool()?,
            },
            6 => ToSupervisor::Progress {
                compiling: r.bool()?,
                done: r.u64()?,
                total: r.u64()?,
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

impl ToWorker {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToWorker::Config { toml } => Out::new(1).bytes(toml.as_bytes()),
            ToWorker::Drain => Out::new(2),
            ToWorker::Ping { seq } => Out::new(3).u64(*seq),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => ToWorker::Config {
                toml: r.text(MAX_MESSAGE - 8)?,
            },
            2 => ToWorker::Drain,
            3 => ToWorker::Ping { seq: r.u64()? },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

fn kind_byte(k: Option<FileKind>) -> u8 {
    match k {
        None => 0,
        Some(FileKind::File) => 1,
        Some(FileKind::Dir) => 2,
        Some(FileKind::Symlink) => 3,
        Some(FileKind::Other) => 4,
    }
}

fn byte_kind(b: u8) -> Result<Option<FileKind>, DecodeError> {
    Ok(match b {
        0 => None,
        1 => Some(FileKind::File),
        2 => Some(FileKind::Dir),
        3 => Some(FileKind::Symlink),
        4 => Some(FileKind::Other),
        _ => return Err(DecodeError::BadValue),
    })
}

impl BrokerRequest {
    pub fn encode(&self) -> Vec<u8> {
        let out = match self.op {
            BrokerOp::Stat => Out::new(1),
            BrokerOp::Lstat => Out::new(2),
            BrokerOp::Canonicalize => Out::new(3),
            BrokerOp::OpenFile => Out::new(4),
            BrokerOp::ListDir { offset } => Out::new(5).u32(offset),
            BrokerOp::MayAccess { list } => Out::new(6).u8(u8::from(list)),
        };
        out.bytes(&self.path).0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let op = match tag {
            1 => BrokerOp::Stat,
            2 => BrokerOp::Lstat,
            3 => BrokerOp::Canonicalize,
            4 => BrokerOp::OpenFile,
            5 => BrokerOp::ListDir { offset: r.u32()? },
            6 => BrokerOp::MayAccess {
                list: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue),
                },
            },
            t => return Err(DecodeError::UnknownTag(t)),
        };
        let path = r.bytes(MAX_PATH)?;
        if path.contains(&0) {
            return Err(DecodeError::BadValue);
        }
        r.end(BrokerRequest { op, path })
    }
}

impl BrokerReply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BrokerReply::Errno(e) => Out::new(1).u32(*e as u32),
            BrokerReply::Meta(m) => Out::new(2)
                .u8(kind_byte(Some(m.kind)))
                .u64(m.size)
                .u64(m.dev)
                .u64(m.ino),
            BrokerReply::Path(p) => Out::new(3).bytes(p),
            BrokerReply::Opened { size } => Out::new(4).u64(*size),
            BrokerReply::Entries { entries, more } => {
                let mut out = Out::new(5).u8(u8::from(*more)).u32(entries.len() as u32);
                for e in entries {
                    out = out.bytes(&e.name).u8(kind_byte(e.kind)).u64(e.ino);
                }
                out
            }
            BrokerReply::Allowed(b) => Out::new(6).u8(u8::from(*b)),
        }
        .0
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = start(buf)?;
        let m = match tag {
            1 => BrokerReply::Errno(r.u32()? as i32),
            2 => BrokerReply::Meta(Meta {
                kind: byte_kind(r.u8()?)?.ok_or(DecodeError::BadValue)?,
                size: r.u64()?,
                dev: r.u64()?,
                ino: r.u64()?,
            }),
            3 => BrokerReply::Path(r.bytes(MAX_PATH)?),
            4 => BrokerReply::Opened { size: r.u64()? },
            5 => {
                let more = r.bool()?;
                let n = r.u32()? as usize;
                if n > MAX_MESSAGE / 13 {
                    return Err(DecodeError::TooLong(n));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(DirEntry {
                        name: r.bytes(255)?,
                        kind: byte_kind(r.u8()?)?,
                        ino: r.u64()?,
                    });
                }
                BrokerReply::Entries { entries, more }
            }
            6 => BrokerReply::Allowed(r.bool()?),
            t => return Err(DecodeError::UnknownTag(t)),
        };
        r.end(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let sup = [
            ToSupervisor::Ready {
                engine_version: "1.4.6".into(),
                signatures: 7,
                db_version: 27999,
                db_time: 1_700_000_000,
                sandbox: "landlock=full".into(),
            },
            ToSupervisor::LoadFailed {
                error: "bad.ndb".into(),
            },
            ToSupervisor::ReloadRequest,
            ToSupervisor::ShutdownRequest,
            ToSupervisor::Pong {
                seq: 9,
                scans: 1,
                found: 2,
                errors: 3,
                healthy: true,
            },
            ToSupervisor::Progress {
                compiling: false,
                done: 5,
                total: 10,
            },
        ];
        for m in sup {
            assert_eq!(ToSupervisor::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            ToWorker::Config {
                toml: "[log]\n".into(),
            },
            ToWorker::Drain,
            ToWorker::Ping { seq: 4 },
        ] {
            assert_eq!(ToWorker::decode(&m.encode()).unwrap(), m);
        }
        for op in [
            BrokerOp::Stat,
            BrokerOp::Lstat,
            BrokerOp::Canonicalize,
            BrokerOp::OpenFile,
            BrokerOp::ListDir { offset: 5 },
            BrokerOp::MayAccess { list: true },
        ] {
            let m = BrokerRequest {
                op,
                path: b"/tmp/x".to_vec(),
            };
            assert_eq!(BrokerRequest::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            BrokerReply::Errno(2),
            BrokerReply::Meta(Meta {
                kind: FileKind::Dir,
                size: 1,
                dev: 2,
                ino: 3,
            }),
            BrokerReply::Path(b"/a".to_vec()),
            BrokerReply::Opened { size: 10 },
            BrokerReply::Entries {
                entries: vec![DirEntry {
                    name: b"f".to_vec(),
                    kind: None,
                    ino: 4,
                }],
                more: true,
            },
            BrokerReply::Allowed(false),
        ] {
            assert_eq!(BrokerReply::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(ToSupervisor::decode(b""), Err(DecodeError::Empty));
        assert_eq!(
            ToSupervisor::decode(&[99]),
            Err(DecodeError::UnknownTag(99))
        );
        assert_eq!(
            ToSupervisor::decode(&[5, 1, 2]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(ToSupervisor::decode(&[3, 0]), Err(DecodeError::Trailing(1)));
        let mut long = vec![1u8];
        long.extend_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(
            ToSupervisor::decode(&long),
            Err(DecodeError::TooLong(100_000))
        );
        let nul = BrokerRequest {
            op: BrokerOp::Stat,
            path: b"/a\0b".to_vec(),
        };
        assert_eq!(
            BrokerRequest::decode(&nul.encode()),
            Err(DecodeError::BadValue)
        );
        // Found by the fuzzer: booleans are 0 or 1, so every message has one
        // encoding (a worker cannot smuggle variants past the round trip).
        assert_eq!(BrokerReply::decode(&[6, 0xe6]), Err(DecodeError::BadValue));
        let mut huge = vec![5u8, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(BrokerReply::decode(&huge).is_err());
    }
}
