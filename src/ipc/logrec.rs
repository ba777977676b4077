//! Log records: what a child process (engine holder, worker, or another
//! helper the supervisor starts) sends on its log channel, one record per
//! SEQPACKET datagram. The supervisor decodes them, marks them as that
//! child's, applies the per-identity budgets and writes them itself
//! (`log::relay`, `supervisor::logrelay`): children never write to the
//! daemon's stderr or to journald.
//!
//! A record is closed and bounded, like every other message between the
//! processes:
//!
//! | field | encoding | bound |
//! |---|---|---|
//! | tag | `1` | |
//! | level | u8: 1 error, 2 warn, 3 info, 4 debug, 5 trace | |
//! | flags | u8: bit 0 = the sender cut something to fit | other bits 0 |
//! | dropped | u32: records the sender dropped before this one (its channel was full) | |
//! | target | u32 length + bytes | ≤ [`MAX_TARGET`], `[A-Za-z0-9_:]`, not empty |
//! | file | u32 length + bytes (0: none) | ≤ [`MAX_FILE`], printable ASCII |
//! | line | u32 (0: none) | |
//! | message | u32 length + bytes | ≤ [`MAX_TEXT`], any bytes |
//! | fields | u8 count, then per field: u8 length + name, u32 length + value | ≤ [`MAX_FIELDS`]; names `[a-z][a-z0-9_]*` ≤ [`MAX_FIELD_NAME`]; values ≤ [`MAX_VALUE`], any bytes |
//!
//! The whole record is at most [`MAX_RECORD`] bytes. Every value has one
//! encoding (the `logrec` fuzz target checks the round trip); anything
//! else does not decode, and the supervisor ends the process that sent it.
#![forbid(unsafe_code)]

use super::messages::DecodeError;

/// Largest record.
pub const MAX_RECORD: usize = 16 * 1024;
/// Largest target (a Rust module path).
pub const MAX_TARGET: usize = 128;
/// Largest source file name.
pub const MAX_FILE: usize = 256;
/// Largest message.
pub const MAX_TEXT: usize = 4096;
/// Most fields in a record.
pub const MAX_FIELDS: usize = 32;
/// Longest field name.
pub const MAX_FIELD_NAME: usize = 32;
/// Largest field value (a path of PATH_MAX bytes fits).
pub const MAX_VALUE: usize = 4096;

const TAG: u8 = 1;
const FLAG_TRUNCATED: u8 = 1;

/// The levels, as tracing has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl LogLevel {
    pub fn from_tracing(l: tracing::Level) -> LogLevel {
        match l {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }

    pub fn to_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }

    fn from_byte(b: u8) -> Result<LogLevel, DecodeError> {
        Ok(match b {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            4 => LogLevel::Debug,
            5 => LogLevel::Trace,
            _ => return Err(DecodeError::BadValue),
        })
    }
}

/// One log record of a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    /// The sender cut a value, the message or fields to fit the bounds.
    pub truncated: bool,
    /// Records the sender dropped since the last one it sent.
    pub dropped: u32,
    pub target: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: Vec<u8>,
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Is `name` a field name a record may carry?
pub fn valid_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            name.len() <= MAX_FIELD_NAME
                && first.is_ascii_lowercase()
                && rest
                    .iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        }
        None => false,
    }
}

/// Is `target` a target a record may carry?
pub fn valid_target(target: &[u8]) -> bool {
    !target.is_empty()
        && target.len() <= MAX_TARGET
        && target
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Is `file` a source file name a record may carry?
pub fn valid_file(file: &[u8]) -> bool {
    !file.is_empty() && file.len() <= MAX_FILE && file.iter().all(|&c| (0x20..0x7f).contains(&c))
}

impl LogRecord {
    /// The encoded record. The caller keeps within the bounds (see
    /// [`LogRecord::fit`]); a record out of bounds encodes, but does not
    /// decode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.message.len());
        out.push(TAG);
        out.push(self.level as u8);
        out.push(if self.truncated { FLAG_TRUNCATED } else { 0 });
        out.extend_from_slice(&self.dropped.to_le_bytes());
        bytes(&mut out, self.target.as_bytes());
        bytes(&mut out, self.file.as_deref().unwrap_or("").as_bytes());
        out.extend_from_slice(&self.line.unwrap_or(0).to_le_bytes());
        bytes(&mut out, &self.message);
        out.push(self.fields.len().min(255) as u8);
        for (name, value) in &self.fields {
            out.push(name.len().min(255) as u8);
            out.extend_from_slice(name.as_bytes());
            bytes(&mut out, value);
        }
        out
    }

    /// Cuts a record to the bounds: an invalid target becomes `unknown`, an
    /// invalid file or a line 0 is left out, the message and values are cut,
    /// fields with invalid names are left out, and fields beyond
    /// [`MAX_FIELDS`] or [`MAX_RECORD`]; `truncated` says when something was
    /// cut or left out.
    pub fn fit(mut self) -> LogRecord {
        if !valid_target(self.target.as_bytes()) {
            self.target = "unknown".into();
        }
        if self
            .file
            .as_ref()
            .is_some_and(|f| !valid_file(f.as_bytes()))
        {
            self.file = None;
        }
        if self.line == Some(0) {
            self.line = None;
        }
        if self.message.len() > MAX_TEXT {
            self.message.truncate(MAX_TEXT);
            self.truncated = true;
        }
        // Tag, level, flags, dropped, target, file, line, message, count.
        let mut size = 1
            + 1
            + 1
            + 4
            + 4
            + self.target.len()
            + 4
            + self.file.as_ref().map_or(0, String::len)
            + 4
            + 4
            + self.message.len()
            + 1;
        let mut kept = Vec::with_capacity(self.fields.len().min(MAX_FIELDS));
        for (name, mut value) in std::mem::take(&mut self.fields) {
            if !valid_name(name.as_bytes()) || kept.len() == MAX_FIELDS {
                self.truncated = true;
                continue;
            }
            if value.len() > MAX_VALUE {
                value.truncate(MAX_VALUE);
                self.truncated = true;
            }
            let cost = 1 + name.len() + 4 + value.len();
            if size + cost > MAX_RECORD {
                self.truncated = true;
                continue;
            }
            size += cost;
            kept.push((name, value));
        }
        self.fields = kept;
        self
    }

    pub fn decode(buf: &[u8]) -> Result<LogRecord, DecodeError> {
        if buf.len() > MAX_RECORD {
            return Err(DecodeError::TooLong(buf.len()));
        }
        let mut r = In(buf);
        match r.u8()? {
            TAG => {}
            t => return Err(DecodeError::UnknownTag(t)),
        }
        let level = LogLevel::from_byte(r.u8()?)?;
        let truncated = match r.u8()? {
            0 => false,
            FLAG_TRUNCATED => true,
            _ => return Err(DecodeError::BadValue),
        };
        let dropped = r.u32()?;
        let target = r.bytes(MAX_TARGET)?;
        if !valid_target(target) {
            return Err(DecodeError::BadValue);
        }
        let file = r.bytes(MAX_FILE)?;
        let file = match file {
            [] => None,
            f if valid_file(f) => Some(ascii(f)),
            _ => return Err(DecodeError::BadValue),
        };
        let line = match r.u32()? {
            0 => None,
            n => Some(n),
        };
        let message = r.bytes(MAX_TEXT)?.to_vec();
        let count = usize::from(r.u8()?);
        if count > MAX_FIELDS {
            return Err(DecodeError::TooLong(count));
        }
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let n = usize::from(r.u8()?);
            let name = r.take(n)?;
            if !valid_name(name) {
                return Err(DecodeError::BadValue);
            }
            let value = r.bytes(MAX_VALUE)?.to_vec();
            fields.push((ascii(name), value));
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(LogRecord {
            level,
            truncated,
            dropped,
            target: ascii(target),
            file,
            line,
            message,
            fields,
        })
    }
}

/// Checked ASCII as a String.
fn ascii(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong(n));
        }
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogRecord {
        LogRecord {
            level: LogLevel::Warn,
            truncated: false,
            dropped: 3,
            target: "clamsentry::worker::conn".into(),
            file: Some("src/worker/conn.rs".into()),
            line: Some(42),
            message: b"virus found in /tmp/a\nb\xff".to_vec(),
            fields: vec![
                ("id".into(), b"7".to_vec()),
                ("scan_target".into(), b"/tmp/a\nb\xff".to_vec()),
                ("scan_result".into(), b"found".to_vec()),
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(LogRecord::decode(&bytes).unwrap(), r);
        let mut bare = sample();
        bare.file = None;
        bare.line = None;
        bare.fields.clear();
        bare.truncated = true;
        assert_eq!(LogRecord::decode(&bare.encode()).unwrap(), bare);
        assert_eq!(bare.clone().fit(), bare);
    }

    #[test]
    fn anything_out_of_bounds_does_not_decode() {
        let enc = |f: &dyn Fn(&mut LogRecord)| {
            let mut r = sample();
            f(&mut r);
            LogRecord::decode(&r.encode())
        };
        assert!(enc(&|r| r.target = String::new()).is_err());
        assert!(enc(&|r| r.target = "a b".into()).is_err());
        assert!(enc(&|r| r.target = "t".repeat(MAX_TARGET + 1)).is_err());
        assert!(enc(&|r| r.file = Some("a\nb".into())).is_err());
        assert!(enc(&|r| r.message = vec![b'm'; MAX_TEXT + 1]).is_err());
        for bad in ["", "_x", "X", "9a", "a-b", "a.b", "é"] {
            assert!(
                enc(&|r| r.fields[0].0 = bad.into()).is_err(),
                "{bad:?} is not a field name"
            );
        }
        assert!(enc(&|r| r.fields[0].0 = "a".repeat(MAX_FIELD_NAME + 1)).is_err());
        assert!(enc(&|r| r.fields[0].1 = vec![0; MAX_VALUE + 1]).is_err());
        assert!(enc(&|r| r.fields = vec![("a".into(), vec![]); MAX_FIELDS + 1]).is_err());
        let mut bytes = sample().encode();
        bytes[1] = 6; // level
        assert_eq!(LogRecord::decode(&bytes), Err(DecodeError::BadValue));
        let mut bytes = sample().encode();
        bytes[2] = 2; // flags
        assert_eq!(LogRecord::decode(&bytes), Err(DecodeError::BadValue));
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(LogRecord::decode(&bytes), Err(DecodeError::Trailing(1)));
        let bytes = sample().encode();
        assert_eq!(
            LogRecord::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(LogRecord::decode(&[2]), Err(DecodeError::UnknownTag(2)));
        assert!(LogRecord::decode(&vec![1; MAX_RECORD + 1]).is_err());
        // A file of 0 bytes is "none": a line of 0 too.
        let mut bytes = sample().encode();
        let line_at = 1 + 1 + 1 + 4 + 4 + 24 + 4 + 18;
        bytes[line_at..line_at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(LogRecord::decode(&bytes).unwrap().line, None);
    }

    #[test]
    fn fit_cuts_to_the_bounds_and_says_so() {
        let mut r = sample();
        r.target = "not a target".into();
        r.file = Some("bad\nfile".into());
        r.message = vec![b'm'; MAX_TEXT + 10];
        r.fields = (0..40)
            .map(|i| (format!("f{i}"), vec![b'v'; MAX_VALUE + 1]))
            .collect();
        r.fields.insert(0, ("Bad Name".into(), b"x".to_vec()));
        let f = r.fit();
        assert!(f.truncated);
        assert_eq!(f.target, "unknown");
        assert_eq!(f.file, None);
        assert_eq!(f.message.len(), MAX_TEXT);
        assert!(f
            .fields
            .iter()
            .all(|(n, v)| n != "Bad Name" && v.len() == MAX_VALUE));
        // 16 KiB hold the message and two values of 4 KiB after it.
        assert_eq!(f.fields.len(), 2);
        let bytes = f.encode();
        assert!(bytes.len() <= MAX_RECORD);
        assert_eq!(LogRecord::decode(&bytes).unwrap(), f);
    }
}
