//! The writer behind the human-readable log on stderr: every formatted
//! event becomes exactly one line.
//!
//! Client-supplied values are escaped where they are logged
//! ([`LogBytes`](super::LogBytes)). This writer is the defence in depth
//! behind that: a field someone forgot to wrap still cannot start a new log
//! line, because every control byte of the formatted event (and every
//! invisible character, and every byte that is not UTF-8) is written as
//! `\xNN`, except the one final newline. Unlike [`escape`](fn@super::escape)
//! it leaves `\` alone, so text that is already escaped is not escaped twice
//! (which makes this direction not reversible; the journald layer gets the
//! exact bytes instead).
//!
//! tracing-subscriber 0.3.23's fmt layer formats an event into one buffer
//! and hands it to `write_all` of a writer made for that event
//! (`fmt_layer.rs`, `on_event`). The writer does not rely on that: it
//! collects whatever is written and emits it, sanitised, with one
//! `write_all` when it is dropped, i.e. once per event. On stderr (unbuffered)
//! that is one `write(2)`, so lines of the supervisor and the workers, which
//! share the descriptor, do not interleave.
#![forbid(unsafe_code)]

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use super::escape::{needs_escape, Utf8Pieces};

/// Wraps a writer maker (`std::io::stderr`) so that each event is written as
/// one sanitised line.
pub struct OneLine<M> {
    inner: M,
}

impl<M> OneLine<M> {
    pub fn new(inner: M) -> OneLine<M> {
        OneLine { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Line<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            buf: Vec::new(),
            inner: self.inner.make_writer(),
        }
    }
}

/// The bytes of one event, written to the inner writer when dropped.
pub struct Line<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for Line<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Nothing to do: the line goes out whole, when the event is done.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Line<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Nowhere to report a failed write to stderr.
        let _ = self.inner.write_all(&one_line(&self.buf));
        let _ = self.inner.flush();
    }
}

/// `formatted` as one line: every control byte, invisible character and
/// non-UTF-8 byte as `\xNN`, then one `\n` (the final newline of
/// `formatted`, if any, is that one).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn only_the_final_newline_survives() {
        assert_eq!(one_line(b"a\nb\n"), b"a\\x0ab\n");
        assert_eq!(one_line(b"a\n\n"), b"a\\x0a\n");
        assert_eq!(one_line(b"no newline"), b"no newline\n");
        assert_eq!(one_line(b"\x1b[31mred\r\n"), b"\\x1b[31mred\\x0d\n");
        assert_eq!(one_line(b"\xff\0"), b"\\xff\\x00\n");
        assert_eq!(
            one_line("é \u{85} \u{202e}".as_bytes()),
            "é \\xc2\\x85 \\xe2\\x80\\xae\n".as_bytes()
        );
    }

    #[test]
    fn backslashes_and_escaped_text_are_left_alone() {
        assert_eq!(one_line(b"path=/tmp/a\\x0ab\n"), b"path=/tmp/a\\x0ab\n");
    }

    /// Records every write call it gets.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_fmt_layer_writes_one_sanitised_line_per_event() {
        use tracing_subscriber::prelude::*;
        let capture = Capture::default();
        let writes = capture.0.clone();
        let make = move || capture.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(OneLine::new(make))
                .with_ansi(false)
                .without_time(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let forgot_to_wrap = "/tmp/x\nFAKE: stream: Eicar FOUND";
            tracing::warn!(path = forgot_to_wrap, "one");
            tracing::warn!(path = %forgot_to_wrap, "two\nstopped");
        });
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        for w in writes.iter() {
            assert_eq!(w.iter().filter(|&&b| b == b'\n').count(), 1, "{w:?}");
            assert!(w.ends_with(b"\n"));
            assert!(!w.iter().any(|&b| b < 0x20 && b != b'\n'), "{w:?}");
        }
        let second = String::from_utf8(writes[1].clone()).unwrap();
        assert!(second.contains("two\\x0astopped"), "{second}");
        assert!(second.contains("/tmp/x\\x0aFAKE"), "{second}");
    }
}
