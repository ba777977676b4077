//! Logging to journald with structured fields, over journald's native
//! protocol (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>).
//!
//! Why our own sink rather than `tracing-journald`: journald must receive
//! the exact bytes of client-supplied values (a SCAN path with a newline,
//! an ESC or a byte that is not UTF-8), so that `journalctl -o json` shows
//! what the client really sent. Such values reach tracing as the escaped
//! text of [`LogBytes`](super::LogBytes), and tracing-journald sees only
//! that `&str`: it would store the escapes. Our [`Record`]s hold every
//! value decoded back to its bytes (see `log::record`).
//!
//! Only the supervisor writes to journald: the other processes send their
//! records to it (`log::relay`), and it writes them here with marks saying
//! whose they are (`SOURCE`, `WORKER`, `PID`).
//!
//! What it writes, as tracing-journald 0.3 did with
//! `with_field_prefix(None)` and `with_syslog_identifier("clamsentry")`
//! (which this replaced), so that `journalctl -u clamsentry
//! SCAN_RESULT=found` works as before:
//! * one datagram per event, sent with `send_to` on an unconnected datagram
//!   socket to `/run/systemd/journal/socket`;
//! * the record's fields in order: for the supervisor's own events the
//!   fields of the enclosing spans, outermost first, then the event's; for
//!   a relayed line the marks first, then the child's fields (the `conn`
//!   span's `id`, `peer`, `listener` become `ID`, `PEER`, `LISTENER` on
//!   every event inside it);
//! * `PRIORITY` — error 3, warning 4, info 6, debug and trace 7 (syslog's
//!   meaning of the levels; tracing-journald put info at 5, notice, and debug
//!   at 6) — `SYSLOG_IDENTIFIER=clamsentry`, `TARGET`, `CODE_FILE`,
//!   `CODE_LINE`;
//! * every event field under its name uppercased: `message` → `MESSAGE`,
//!   `scan_result` → `SCAN_RESULT` (see [`field_name`] for the mangling).
//!
//! A value is written `NAME=value\n`, or in the binary form
//! `NAME\n<u64 LE length><bytes>\n` when it holds a newline or is not
//! UTF-8 ([`journal_field`]). An entry too large for a datagram (EMSGSIZE)
//! goes into a sealed memfd whose descriptor is passed with SCM_RIGHTS, as
//! journald accepts; if that fails too, a short entry is sent instead with
//! the start of the MESSAGE and `TRUNCATED=<size of the entry>`.
//!
//! Safe code only: nix's `memfd_create`, `fcntl` and `sendmsg` wrappers
//! are all it needs.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::Level;

use super::record::{Record, Sink};

/// journald's socket for the native protocol.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// `SYSLOG_IDENTIFIER` of every entry (`journalctl -t clamsentry`).
pub const IDENTIFIER: &str = "clamsentry";

/// How much of the MESSAGE the short entry keeps when an entry can be sent
/// neither as a datagram nor through a memfd.
pub const TRUNCATED_MESSAGE: usize = 4096;

/// Appends the journal field `name`=`value`: `name` mangled by
/// [`field_name`] (nothing is written when nothing is left of it), then
/// `=value\n`, or `\n`, the length as u64 little-endian, the bytes and `\n`
/// when `value` holds a newline or is not UTF-8.
pub fn journal_field(name: &str, value: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    field_name(name, out);
    if out.len() == start {
        return;
    }
    if value.contains(&b'\n') || std::str::from_utf8(value).is_err() {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends the journal name of a tracing field: `.` → `_`, every other
/// character but ASCII letters, digits and `_` dropped, leading `_` and
/// digits dropped (journald refuses names that start with them; a leading
/// `_` would be a trusted field), uppercased. tracing-journald did the same
/// except for leading digits.
pub fn field_name(name: &str, out: &mut Vec<u8>) {
    out.extend(
        name.bytes()
            .map(|c| if c == b'.' { b'_' } else { c })
            .filter(|c| *c == b'_' || c.is_ascii_alphanumeric())
            .skip_while(|c| *c == b'_' || c.is_ascii_digit())
            .map(|c| c.to_ascii_uppercase()),
    );
}

/// Decodes the fields of one entry in the native protocol; `None` when it
/// is malformed (a line without `=` and no length after it, a length
/// beyond the data, no `\n` after a binary value).
pub fn decode_journal_fields(mut entry: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut fields = Vec::new();
    while !entry.is_empty() {
        let nl = entry.iter().position(|&b| b == b'\n')?;
        let line = &entry[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8(line[..eq].to_vec()).ok()?;
            fields.push((name, line[eq + 1..].to_vec()));
            entry = &entry[nl + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).ok()?;
            let rest = &entry[nl + 1..];
            let len: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
            let value = rest.get(8..)?.get(..len)?;
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.push((name, value.to_vec()));
            entry = &rest[8 + len + 1..];
        }
    }
    Some(fields)
}

/// journald's priority for a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The journald layer.
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journald {
    /// The layer, or an error when journald's socket is not there (checked
    /// with an empty datagram, which journald ignores).
    pub fn new() -> io::Result<Journald> {
        Journald::at(Path::new(JOURNALD_SOCKET))
    }

    /// The layer sending to the socket at `path` (tests use a socket of
    /// their own).
    pub fn at(path: &Path) -> io::Result<Journald> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to(&[], path)?;
        Ok(Journald {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Sends one entry: a datagram, or a sealed memfd when it is too large.
    fn send(&self, entry: &[u8]) -> io::Result<()> {
        match self.socket.send_to(entry, &self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => self.send_memfd(entry),
            Err(e) => Err(e),
        }
    }

    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
        use rustix::net::{
            sendmsg_addr, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        };
        let fd = memfd_create(
            c"clamsentry-journal",
            MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC,
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(entry)?;
        // journald maps the memfd only when it is sealed against changes.
        fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
        )?;
        let fd = OwnedFd::from(file);
        let fds = [fd.as_fd()];
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        cmsg.push(SendAncillaryMessage::ScmRights(&fds));
        let addr = SocketAddrUnix::new(&self.path)?;
        sendmsg_addr(&self.socket, &addr, &[], &mut cmsg, SendFlags::NOSIGNAL)?;
        Ok(())
    }
}

/// The journal entry of a record: its fields in order (span fields first,
/// then the event's; for a relayed line the marks first), then PRIORITY,
/// SYSLOG_IDENTIFIER, TARGET, CODE_FILE, CODE_LINE and MESSAGE. Returns
/// the entry and where its head (PRIORITY … CODE_LINE) is, for
/// [`short_entry`].
pub fn entry(record: &Record) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut entry = Vec::with_capacity(512);
    for (name, value) in &record.fields {
        journal_field(name, value, &mut entry);
    }
    let head_start = entry.len();
    journal_field(
        "PRIORITY",
        priority(&record.level).to_string().as_bytes(),
        &mut entry,
    );
    journal_field("SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes(), &mut entry);
    journal_field("TARGET", record.target.as_bytes(), &mut entry);
    if let Some(file) = &record.file {
        journal_field("CODE_FILE", file.as_bytes(), &mut entry);
    }
    if let Some(line) = record.line {
        journal_field("CODE_LINE", line.to_string().as_bytes(), &mut entry);
    }
    let head_end = entry.len();
    journal_field("MESSAGE", &record.message, &mut entry);
    (entry, head_start..head_end)
}

impl Sink for Journald {
    fn write(&self, record: &Record) {
        let (entry, head) = entry(record);
        if self.send(&entry).is_err() {
            // Neither a datagram nor a memfd: a short entry that says so.
            // Nowhere left to report a failure.
            let _ = self.send(&short_entry(&entry[head], &record.message, entry.len()));
        }
    }
}

/// The entry sent when the whole one (`size` bytes) could not be: its
/// PRIORITY, SYSLOG_IDENTIFIER, TARGET and CODE_* fields (`head`, encoded),
/// the first [`TRUNCATED_MESSAGE`] bytes of its MESSAGE, and
/// `TRUNCATED=<size>`.
fn short_entry(head: &[u8], message: &[u8], size: usize) -> Vec<u8> {
    let mut short = head.to_vec();
    let kept = &message[..message.len().min(TRUNCATED_MESSAGE)];
    journal_field("MESSAGE", kept, &mut short);
    journal_field("TRUNCATED", size.to_string().as_bytes(), &mut short);
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::Capture;
    use tracing_subscriber::prelude::*;

    fn one(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        journal_field(name, value, &mut out);
        out
    }

    #[test]
    fn simple_and_binary_forms() {
        assert_eq!(one("scan_result", b"found"), b"SCAN_RESULT=found\n");
        assert_eq!(one("message", b""), b"MESSAGE=\n");
        assert_eq!(
            one("path", b"a\nb"),
            b"PATH\n\x03\0\0\0\0\0\0\0a\nb\n".to_vec()
        );
        assert_eq!(
            one("path", b"\xff"),
            b"PATH\n\x01\0\0\0\0\0\0\0\xff\n".to_vec()
        );
        // Other control bytes are fine in the simple form.
        assert_eq!(one("path", b"\x1b\0"), b"PATH=\x1b\0\n");
    }

    #[test]
    fn names_are_mangled_as_tracing_journald_did() {
        let name = |n: &str| {
            let mut out = Vec::new();
            field_name(n, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(name("scan_result"), "SCAN_RESULT");
        assert_eq!(name("log.target"), "LOG_TARGET");
        assert_eq!(name("_private"), "PRIVATE");
        assert_eq!(name("r#type"), "RTYPE");
        assert_eq!(name("9lives"), "LIVES");
        assert_eq!(name("-_x"), "X");
        assert_eq!(name("é"), "");
        assert_eq!(one("é", b"dropped"), b"");
    }

    #[test]
    fn fields_decode_back() {
        let mut entry = Vec::new();
        journal_field("a", b"1", &mut entry);
        journal_field("b", b"x\ny\xff", &mut entry);
        journal_field("c", b"", &mut entry);
        assert_eq!(
            decode_journal_fields(&entry).unwrap(),
            vec![
                ("A".to_string(), b"1".to_vec()),
                ("B".to_string(), b"x\ny\xff".to_vec()),
                ("C".to_string(), b"".to_vec()),
            ]
        );
        assert_eq!(decode_journal_fields(b"A\n\x05\0\0\0\0\0\0\0ab\n"), None);
        assert_eq!(decode_journal_fields(b"A=1"), None);
        assert_eq!(decode_journal_fields(b"A\n\x01\0\0\0\0\0\0\0ab"), None);
    }

    #[test]
    fn priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn the_short_entry_keeps_the_head_and_the_start_of_the_message() {
        let mut head = Vec::new();
        journal_field("PRIORITY", b"4", &mut head);
        let message = vec![b'm'; TRUNCATED_MESSAGE + 10];
        let short = short_entry(&head, &message, 5_000_000);
        let fields = decode_journal_fields(&short).unwrap();
        assert_eq!(
            fields,
            vec![
                ("PRIORITY".to_string(), b"4".to_vec()),
                ("MESSAGE".to_string(), message[..TRUNCATED_MESSAGE].to_vec()),
                ("TRUNCATED".to_string(), b"5000000".to_vec()),
            ]
        );
    }

    /// A datagram socket standing in for journald's (the real journald is
    /// tested in tests/systemd.rs).
    struct FakeJournald {
        _dir: tempfile::TempDir,
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl FakeJournald {
        fn new() -> FakeJournald {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("socket");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            FakeJournald {
                _dir: dir,
                socket,
                path,
            }
        }

        /// The next non-empty entry, from a datagram or a passed memfd.
        fn entry(&self) -> Vec<(String, Vec<u8>)> {
            use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            loop {
                let mut buf = vec![0u8; 1 << 16];
                let mut space =
                    [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut cmsg = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [io::IoSliceMut::new(&mut buf)];
                let msg = recvmsg(&self.socket, &mut iov, &mut cmsg, RecvFlags::empty()).unwrap();
                let mut fds: Vec<OwnedFd> = Vec::new();
                for c in cmsg.drain() {
                    if let RecvAncillaryMessage::ScmRights(f) = c {
                        fds.extend(f);
                    }
                }
                let n = msg.bytes;
                let bytes = if let Some(fd) = fds.first() {
                    use rustix::fs::{fcntl_get_seals, SealFlags};
                    let seals = fcntl_get_seals(fd).unwrap();
                    assert!(seals.contains(SealFlags::WRITE | SealFlags::SEAL));
                    let data = std::fs::read(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(fd)
                    ))
                    .unwrap();
                    drop(fds);
                    data
                } else {
                    buf[..n].to_vec()
                };
                if !bytes.is_empty() {
                    return decode_journal_fields(&bytes).unwrap();
                }
            }
        }
    }

    fn get<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    #[test]
    fn events_carry_span_fields_and_the_exact_bytes() {
        let journald = FakeJournald::new();
        let layer = Journald::at(&journald.path).unwrap();
        let subscriber = tracing_subscriber::registry().with(Capture::new(layer));
        let path: &[u8] = b"/tmp/x\nFAKE: stream: Eicar FOUND\n\x1b[2J\xff";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", id = 7u64, peer = "unix", listener = "tcp");
            let _enter = span.enter();
            tracing::warn!(
                command = "SCAN",
                scan_target = %super::super::LogBytes(path),
                not_escaped = "C:\\temp",
                bytes = 68u64,
                "virus found in {}",
                super::super::LogBytes(path)
            );
        });
        let e = journald.entry();
        assert_eq!(get(&e, "PRIORITY"), [b"4"]);
        assert_eq!(get(&e, "SYSLOG_IDENTIFIER"), [b"clamsentry"]);
        assert_eq!(get(&e, "ID"), [b"7"]);
        assert_eq!(get(&e, "PEER"), [b"unix"]);
        assert_eq!(get(&e, "LISTENER"), [b"tcp"]);
        assert_eq!(get(&e, "COMMAND"), [b"SCAN"]);
        assert_eq!(get(&e, "SCAN_TARGET"), [path]);
        assert_eq!(get(&e, "NOT_ESCAPED"), [b"C:\\temp"]);
        assert_eq!(get(&e, "BYTES"), [b"68"]);
        assert_eq!(get(&e, "MESSAGE"), [[b"virus found in ", path].concat()]);
        assert_eq!(get(&e, "TARGET"), [b"clamsentry::log::journald::tests"]);
        assert_eq!(get(&e, "CODE_FILE"), [b"src/log/journald.rs"]);
        assert_eq!(get(&e, "CODE_LINE").len(), 1);
    }

    #[test]
    fn an_entry_too_large_for_a_datagram_goes_through_a_sealed_memfd() {
        let journald = FakeJournald::new();
        let layer = Journald::at(&journald.path).unwrap();
        let subscriber = tracing_subscriber::registry().with(Capture::new(layer));
        // Larger than any datagram an AF_UNIX socket sends by default
        // (net.core.wmem_default, 208 KiB).
        let big = vec![b'a'; 4 << 20];
        let big_text = std::str::from_utf8(&big).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(big = big_text, "large");
        });
        let e = journald.entry();
        assert_eq!(get(&e, "MESSAGE"), [b"large"]);
        assert_eq!(get(&e, "BIG"), [big.as_slice()]);
        assert_eq!(get(&e, "PRIORITY"), [b"6"]);
    }
}
