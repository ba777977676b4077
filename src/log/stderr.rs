//! The human-readable log on stderr: one line per event, in which no byte
//! sequence of a value or of the message can add a field or a line.
//!
//! ```text
//! 2026-01-02T03:04:05.123456Z  WARN virus found id=7 peer="unix uid=1000 pid=42" listener=unix command=SCAN scan_target="/home/a b/x" scan_result=found
//! ```
//!
//! The line is: the time (UTC, RFC 3339, microseconds), the level
//! right-aligned in five columns, the message, then `name=value` for each
//! field (the enclosing spans' fields first, outermost span first; for a
//! line relayed from a child process the marks `source=… worker=… pid=…`
//! come right after the message, see `log::relay`). Values are written:
//!
//! * as they are when they are a plain token ([`is_token`]): one or more
//!   printable ASCII characters other than space, `"`, `=` and `\`;
//! * otherwise quoted ([`quote_into`](super::escape::quote_into)): `"`, the
//!   escaped text of the bytes (`\` as `\\`, `"` as `\"`, control,
//!   invisible and non-UTF-8 bytes as `\xNN`), `"`.
//!
//! The message is written as it is when it is printable ASCII without
//! `"`, `=` and `\` ([`is_bare_message`]), otherwise quoted the same way.
//! So a path with spaces cannot add `uid=0 command="SHUTDOWN"` to a line:
//! it is one quoted value. [`parse_line`] reads a line back into its
//! message and fields; the tests and the `logrec` fuzz target check that
//! it returns exactly what was written, whatever the bytes.
//!
//! Each line is written with one `write_all` on unbuffered stderr (one
//! `write(2)`), and [`one_line`] checks the finished line once more: a
//! control byte that got in anyway is written as `\xNN`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{self, Write};

use super::escape::{needs_escape, quote_into, Utf8Pieces};
use super::record::{Record, Sink};

/// True when `bytes` can be written as a value without quotes: not empty,
/// and only printable ASCII other than space, `"`, `=` and `\`.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'))
}

/// True when a message can be written without quotes: not empty, not
/// starting with a space, and only printable ASCII (spaces included) other
/// than `"`, `=` and `\`. Without `=` it cannot look like a field.
pub fn is_bare_message(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes[0] != b' '
        && bytes
            .iter()
            .all(|&b| (b == b' ' || b.is_ascii_graphic()) && !matches!(b, b'"' | b'=' | b'\\'))
}

/// Appends a value: as it is when it is a token, else quoted.
pub fn write_value(bytes: &[u8], out: &mut String) {
    if is_token(bytes) {
        // ASCII, checked above.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
    } else {
        let _ = quote_into(bytes, out);
    }
}

/// The name of a field as the line shows it: ASCII letters, digits, `_`
/// and `.` only (tracing field names and relayed names already are).
fn write_name(name: &str, out: &mut String) {
    out.extend(
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.'),
    );
}

/// The line of a record at time `time` (already formatted), ending in `\n`.
pub fn format_line(time: &str, record: &Record) -> String {
    let mut out = String::with_capacity(128 + record.message.len());
    out.push_str(time);
    let _ = write!(out, " {:>5} ", record.level.as_str());
    if is_bare_message(&record.message) {
        out.push_str(std::str::from_utf8(&record.message).unwrap_or_default());
    } else {
        let _ = quote_into(&record.message, &mut out);
    }
    for (name, value) in &record.fields {
        let start = out.len();
        out.push(' ');
        write_name(name, &mut out);
        if out.len() == start + 1 {
            out.truncate(start);
            continue;
        }
        out.push('=');
        write_value(value, &mut out);
    }
    out.push('\n');
    out
}

/// The current time as the log shows it.
pub fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A line read back by [`parse_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub time: String,
    pub level: String,
    pub message: Vec<u8>,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Parsed {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads a line that [`format_line`] wrote (with or without its final
/// newline); `None` when it is not one.
pub fn parse_line(line: &str) -> Option<Parsed> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (time, rest) = line.split_once(' ')?;
    let rest = rest.trim_start_matches(' ');
    let (level, rest) = rest.split_once(' ')?;
    let (message, mut rest) = if rest.starts_with('"') {
        let end = quoted_end(rest)?;
        (super::escape::unquote(&rest[..end])?, &rest[end..])
    } else {
        // A bare message holds no `=`: it ends at the last space before
        // the first `=`, or at the end of the line.
        let end = match rest.find('=') {
            Some(eq) => rest[..eq].rfind(' ')?,
            None => rest.len(),
        };
        (rest.as_bytes()[..end].to_vec(), &rest[end..])
    };
    let mut fields = Vec::new();
    while !rest.is_empty() {
        rest = rest.strip_prefix(' ')?;
        let (name, after) = rest.split_once('=')?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return None;
        }
        let (value, after) = if after.starts_with('"') {
            let end = quoted_end(after)?;
            (super::escape::unquote(&after[..end])?, &after[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let value = &after[..end];
            if !is_token(value.as_bytes()) {
                return None;
            }
            (value.as_bytes().to_vec(), &after[end..])
        };
        fields.push((name.to_string(), value));
        rest = after;
    }
    Some(Parsed {
        time: time.to_string(),
        level: level.to_string(),
        message,
        fields,
    })
}

/// The length of the quoted value at the start of `text` (quotes
/// included).
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// `formatted` as one line: every control byte, invisible character and
/// non-UTF-8 byte as `\xNN`, then one `\n` (the final newline of
/// `formatted`, if any, is that one). [`format_line`] never writes such a
/// byte; this is the last check before the line goes out.
pub fn one_line(formatted: &[u8]) -> Vec<u8> {
    let body = formatted.strip_suffix(b"\n").unwrap_or(formatted);
    let mut out = Vec::with_capacity(body.len() + 1);
    for piece in Utf8Pieces(body) {
        match piece {
            Ok(text) => {
                for c in text.chars() {
                    let mut buf = [0u8; 4];
                    let bytes = c.encode_utf8(&mut buf).as_bytes();
                    if needs_escape(c) {
                        bytes.iter().for_each(|&b| hex(b, &mut out));
                    } else {
                        out.extend_from_slice(bytes);
                    }
                }
            }
            Err(invalid) => invalid.iter().for_each(|&b| hex(b, &mut out)),
        }
    }
    out.push(b'\n');
    out
}

fn hex(b: u8, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        DIGITS[usize::from(b >> 4)],
        DIGITS[usize::from(b & 15)],
    ]);
}

/// Writes each record as one line to a writer made per line (stderr).
pub struct Stderr<M> {
    make: M,
}

impl<M> Stderr<M> {
    pub fn new(make: M) -> Stderr<M> {
        Stderr { make }
    }
}

impl<M, W> Sink for Stderr<M>
where
    M: Fn() -> W + Send + Sync + 'static,
    W: Write,
{
    fn write(&self, record: &Record) {
        let line = one_line(format_line(&now(), record).as_bytes());
        let mut w = (self.make)();
        // Nowhere to report a failed write to stderr.
        let _ = w.write_all(&line);
        let _ = w.flush();
    }
}

/// The stderr sink of the daemon.
pub fn stderr() -> Stderr<fn() -> io::Stderr> {
    Stderr::new(io::stderr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::Capture;
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    fn record(message: &[u8], fields: &[(&'static str, &[u8])]) -> Record {
        Record {
            level: Level::INFO,
            target: "t".into(),
            file: None,
            line: None,
            message: message.to_vec(),
            fields: fields
                .iter()
                .map(|(n, v)| (Cow::Borrowed(*n), v.to_vec()))
                .collect(),
        }
    }

    const T: &str = "2026-01-02T03:04:05.000000Z";

    /// The line, checked to parse back to exactly its record.
    fn line(r: &Record) -> String {
        let l = format_line(T, r);
        assert_eq!(l.matches('\n').count(), 1, "{l:?}");
        assert!(!l.bytes().any(|b| b < 0x20 && b != b'\n'), "{l:?}");
        assert_eq!(one_line(l.as_bytes()), l.as_bytes(), "already one line");
        let p = parse_line(&l).unwrap_or_else(|| panic!("does not parse: {l:?}"));
        assert_eq!(p.time, T);
        assert_eq!(p.level, r.level.as_str());
        assert_eq!(p.message, r.message, "{l:?}");
        let want: Vec<(String, Vec<u8>)> = r
            .fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        assert_eq!(p.fields, want, "{l:?}");
        l
    }

    #[test]
    fn tokens_stay_and_everything_else_is_quoted() {
        let l = line(&record(
            b"virus found",
            &[
                ("id", b"7"),
                ("peer", b"unix uid=1000 pid=42"),
                ("listener", b"unix"),
                ("scan_target", b"/tmp/a b"),
                ("empty", b""),
            ],
        ));
        assert_eq!(
            l,
            "2026-01-02T03:04:05.000000Z  INFO virus found id=7 peer=\"unix uid=1000 pid=42\" \
             listener=unix scan_target=\"/tmp/a b\" empty=\"\"\n"
        );
    }

    #[test]
    fn a_path_cannot_forge_fields() {
        let forged: &[u8] = b"/tmp/x uid=0 command=\"SHUTDOWN\"";
        let l = line(&record(
            b"path refused",
            &[("path", forged), ("uid", b"1000")],
        ));
        assert!(
            l.ends_with(" path=\"/tmp/x uid=0 command=\\\"SHUTDOWN\\\"\" uid=1000\n"),
            "{l}"
        );
        let p = parse_line(&l).unwrap();
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.get("uid"), Some(b"1000".as_slice()));
        assert_eq!(p.get("command"), None);
    }

    #[test]
    fn newlines_quotes_backslashes_escapes_and_bad_utf8_stay_in_their_value() {
        for evil in [
            b"a\nFAKE  WARN virus found scan_result=found".as_slice(),
            b"\"",
            b"\\",
            b"\\\"",
            b"a\" b=\"c",
            b"\x1b[2J\x1b]0;title\x07",
            b"\xff\xfe\xc0\xaf",
            "\u{202e}drow\u{2028}".as_bytes(),
            b" leading",
            b"x=",
            b"=",
            b"\0",
        ] {
            let l = line(&record(b"m", &[("v", evil), ("after", b"1")]));
            let p = parse_line(&l).unwrap();
            assert_eq!(p.fields.len(), 2, "{l}");
            // The message may hold them too.
            line(&record(evil, &[("after", b"1")]));
        }
        let l = line(&record(b"m", &[("v", b"a\nb\x1b\xff\"\\")]));
        assert!(l.contains(" v=\"a\\x0ab\\x1b\\xff\\\"\\\\\""), "{l}");
    }

    #[test]
    fn messages_with_equals_quotes_or_control_bytes_are_quoted() {
        assert!(line(&record(b"plain text, fine: 42%", &[])).contains(" plain text, fine: 42%\n"));
        assert!(line(&record(b"a uid=0", &[])).contains(" \"a uid=0\"\n"));
        assert!(line(&record(b"two\nlines", &[])).contains(" \"two\\x0alines\"\n"));
        assert!(line(&record(b"", &[("k", b"v")])).contains(" \"\" k=v\n"));
        assert!(line(&record("é".as_bytes(), &[])).contains(" \"é\"\n"));
    }

    #[test]
    fn odd_field_names_are_filtered() {
        let l = format_line(T, &record(b"m", &[("a b=c", b"1"), ("é", b"2")]));
        assert_eq!(l, format!("{T}  INFO m abc=1\n"));
    }

    #[test]
    fn only_the_final_newline_survives_the_last_check() {
        assert_eq!(one_line(b"a\nb\n"), b"a\\x0ab\n");
        assert_eq!(one_line(b"no newline"), b"no newline\n");
        assert_eq!(one_line(b"\x1b[31mred\r\n"), b"\\x1b[31mred\\x0d\n");
        assert_eq!(one_line(b"\xff\0"), b"\\xff\\x00\n");
        assert_eq!(
            one_line("é \u{85} \u{202e}".as_bytes()),
            "é \\xc2\\x85 \\xe2\\x80\\xae\n".as_bytes()
        );
    }

    /// Records every write call it gets.
    #[derive(Clone, Default)]
    struct Capture2(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Capture2 {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tracing_events_become_one_write_each_and_parse_back() {
        use tracing_subscriber::prelude::*;
        let capture = Capture2::default();
        let writes = capture.0.clone();
        let sink = Stderr::new(move || capture.clone());
        let subscriber = tracing_subscriber::registry().with(Capture::new(sink));
        let forgot_to_wrap = "/tmp/x\nFAKE: stream: Eicar FOUND uid=0";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", id = 3u64, peer = "unix uid=0 pid=1");
            let _e = span.enter();
            tracing::warn!(path = forgot_to_wrap, "one");
            tracing::warn!(path = %crate::log::LogBytes(b"/a b\n"), "two\nstopped");
        });
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        let lines: Vec<Parsed> = writes
            .iter()
            .map(|w| {
                assert_eq!(w.iter().filter(|&&b| b == b'\n').count(), 1, "{w:?}");
                parse_line(std::str::from_utf8(w).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(lines[0].message, b"one");
        assert_eq!(lines[0].get("path"), Some(forgot_to_wrap.as_bytes()));
        assert_eq!(lines[0].get("peer"), Some(b"unix uid=0 pid=1".as_slice()));
        assert_eq!(lines[0].get("uid"), None);
        assert_eq!(lines[1].message, b"two\nstopped");
        assert_eq!(lines[1].get("path"), Some(b"/a b\n".as_slice()));
        let names: Vec<&str> = lines[1].fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id", "peer", "path"]);
    }
}
