//! A reversible escaping of arbitrary bytes for log text.
//!
//! The escaped text of bytes `b`:
//! * a valid UTF-8 character stays as it is, unless it is listed below;
//! * `\` becomes `\\`;
//! * these characters become `\xNN` for each of their UTF-8 bytes (so
//!   U+202E becomes `\xe2\x80\xae`):
//!   - control characters: C0 (U+0000–U+001F), DEL (U+007F), C1
//!     (U+0080–U+009F);
//!   - characters that change how a line reads without being seen
//!     ([`INVISIBLE`]): bidirectional controls and isolates (U+061C,
//!     U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), the line and paragraph
//!     separators (U+2028, U+2029), zero-width and other format characters
//!     (U+00AD, U+200B–U+200D, U+2060–U+206F, U+FEFF, U+FFF9–U+FFFB) and the
//!     tag characters (U+E0000–U+E007F);
//! * every byte that is not part of valid UTF-8 becomes `\xNN`.
//!
//! `NN` is two lowercase hexadecimal digits; there are no other escapes
//! (no `\n` short form). The escaped text never contains a control
//! character or an [`INVISIBLE`] one, so a client-supplied path cannot
//! start a new log line, move the cursor of the terminal that shows the
//! log, or reorder what a reader sees.
//!
//! It is a bijection between byte strings and the texts [`escape`]
//! produces: [`unescape`] inverts it and returns `None` for any text that
//! `escape` cannot produce (a lone `\`, `\x41` for `A`, uppercase hex, a raw
//! control character). That strictness is what lets the journald layer
//! decode every field value: a value that did not come from `escape` is
//! almost never valid escaped text unless it is plain text, which decodes
//! to itself.
#![forbid(unsafe_code)]

use std::fmt::{self, Write};

/// Characters escaped as their UTF-8 bytes although they are not control
/// characters: they are invisible or change the order or the lines in which
/// text is shown. Inclusive ranges.
pub const INVISIBLE: &[(char, char)] = &[
    ('\u{00ad}', '\u{00ad}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{e0000}', '\u{e007f}'),
];

/// True for a character that log text shows only as its escaped bytes:
/// control characters (C0, DEL, C1) and [`INVISIBLE`] ones.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || INVISIBLE.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// The escaped text of `bytes` (see the module documentation).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    // Writing to a String cannot fail.
    let _ = escape_into(bytes, &mut out);
    out
}

/// The length of [`escape`]`(bytes)`, without making it: what a client's
/// bytes weigh in a log line (`log::limiter` charges it).
pub fn escaped_len(bytes: &[u8]) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = escape_into(bytes, &mut count);
    count.0
}

/// Writes the escaped text of `bytes` to `out`.
pub fn escape_into(bytes: &[u8], out: &mut impl Write) -> fmt::Result {
    escape_with(bytes, false, out)
}

/// `bytes` as a quoted value of a log line: `"`, the escaped text with
/// every `"` written as `\"`, `"`. Nothing inside can end the quotes, add
/// a field or a line; [`unquote`] inverts it.
pub fn quote_into(bytes: &[u8], out: &mut impl Write) -> fmt::Result {
    out.write_char('"')?;
    escape_with(bytes, true, out)?;
    out.write_char('"')
}

/// The bytes of a quoted value written by [`quote_into`] (with its
/// quotes), or `None` when `quote_into` cannot produce `text`.
pub fn unquote(text: &str) -> Option<Vec<u8>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut rest = inner.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match (b, tail) {
            (b'"', _) => return None,
            (b'\\', [b'"', tail @ ..]) => {
                out.push(b'"');
                rest = tail;
            }
            (b'\\', [b'\\', tail @ ..]) => {
                out.push(b'\\');
                rest = tail;
            }
            (b'\\', [b'x', hi, lo, tail @ ..]) => {
                out.push((hex(*hi)? << 4) | hex(*lo)?);
                rest = tail;
            }
            (b'\\', _) => return None,
            (b, tail) => {
                out.push(b);
                rest = tail;
            }
        }
    }
    let mut again = String::new();
    let _ = quote_into(&out, &mut again);
    (again == text).then_some(out)
}

fn escape_with(bytes: &[u8], quoted: bool, out: &mut impl Write) -> fmt::Result {
    for piece in Utf8Pieces(bytes) {
        match piece {
            Ok(text) => {
                for c in text.chars() {
                    if c == '\\' {
                        out.write_str("\\\\")?;
                    } else if c == '"' && quoted {
                        out.write_str("\\\"")?;
                    } else if needs_escape(c) {
                        let mut buf = [0u8; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            write_hex(b, out)?;
                        }
                    } else {
                        out.write_char(c)?;
                    }
                }
            }
            Err(invalid) => {
                for &b in invalid {
                    write_hex(b, out)?;
                }
            }
        }
    }
    Ok(())
}

fn write_hex(b: u8, out: &mut impl Write) -> fmt::Result {
    write!(out, "\\x{b:02x}")
}

/// The bytes whose escaped text is `text`, or `None` when [`escape`] cannot
/// produce `text`. `unescape(&escape(b)) == Some(b)` for every `b`.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    if !text.contains('\\') {
        // Plain text is its own escape unless it holds a character that
        // escape would have escaped.
        return if text.chars().any(needs_escape) {
            None
        } else {
            Some(text.as_bytes().to_vec())
        };
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', hi, lo, tail @ ..] => {
                out.push((hex(*hi)? << 4) | hex(*lo)?);
                rest = tail;
            }
            _ => return None,
        }
    }
    // Canonical only: `\x41`, or a raw control character, decodes to bytes
    // that escape writes differently.
    (escape(&out) == text).then_some(out)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Splits bytes into valid UTF-8 runs (`Ok`) and invalid sequences (`Err`,
/// one maximal invalid prefix at a time, as `from_utf8_lossy` would replace
/// it). `<[u8]>::utf8_chunks` does this from Rust 1.79; our MSRV is 1.75.
pub(super) struct Utf8Pieces<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Utf8Pieces<'a> {
    type Item = Result<&'a str, &'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        match std::str::from_utf8(self.0) {
            Ok(text) => {
                self.0 = &[];
                Some(Ok(text))
            }
            Err(e) if e.valid_up_to() > 0 => {
                let (valid, rest) = self.0.split_at(e.valid_up_to());
                self.0 = rest;
                // Valid by construction.
                std::str::from_utf8(valid).ok().map(Ok)
            }
            Err(e) => {
                let n = e.error_len().unwrap_or(self.0.len());
                let (invalid, rest) = self.0.split_at(n);
                self.0 = rest;
                Some(Err(invalid))
            }
        }
    }
}

/// Bytes shown in a log line as their escaped text:
/// `tracing::warn!(path = %LogBytes(p), "...")`. The journald layer turns
/// the text back into the bytes.
#[derive(Clone, Copy)]
pub struct LogBytes<'a>(pub &'a [u8]);

impl fmt::Display for LogBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self.0, f)
    }
}

impl fmt::Debug for LogBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self.0, f)
    }
}

/// A string from outside (a virus name from a signature file, a message
/// quoting a client) shown escaped, like [`LogBytes`].
#[derive(Clone, Copy)]
pub struct LogStr<'a>(pub &'a str);

impl fmt::Display for LogStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self.0.as_bytes(), f)
    }
}

impl fmt::Debug for LogStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self.0.as_bytes(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(b: &[u8]) -> String {
        let e = escape(b);
        assert_eq!(unescape(&e).as_deref(), Some(b), "{e}");
        assert!(
            !e.chars().any(needs_escape),
            "escaped text holds a control character: {e:?}"
        );
        e
    }

    #[test]
    fn control_bytes_are_hex() {
        assert_eq!(round_trip(b"a\nb"), "a\\x0ab");
        assert_eq!(round_trip(b"\x1b[2J"), "\\x1b[2J");
        assert_eq!(round_trip(b"\0"), "\\x00");
        assert_eq!(round_trip(b"\t\r\x7f"), "\\x09\\x0d\\x7f");
    }

    #[test]
    fn invalid_utf8_is_hex() {
        assert_eq!(round_trip(b"\xff"), "\\xff");
        assert_eq!(round_trip(b"a\xffb\xc3"), "a\\xffb\\xc3");
        // An overlong encoding of '/' is not valid UTF-8.
        assert_eq!(round_trip(b"\xc0\xaf"), "\\xc0\\xaf");
    }

    #[test]
    fn valid_utf8_stays() {
        assert_eq!(round_trip("/tmp/é 日本 ✓".as_bytes()), "/tmp/é 日本 ✓");
        assert_eq!(
            round_trip(b"plain ASCII ~!@#$%^&*()"),
            "plain ASCII ~!@#$%^&*()"
        );
    }

    #[test]
    fn backslash_doubles() {
        assert_eq!(round_trip(b"C:\\x41"), "C:\\\\x41");
        assert_eq!(round_trip(b"\\"), "\\\\");
    }

    #[test]
    fn c1_and_invisible_characters_are_their_utf8_bytes() {
        // U+0085 NEXT LINE, a C1 control.
        assert_eq!(round_trip("a\u{85}b".as_bytes()), "a\\xc2\\x85b");
        // U+202E RIGHT-TO-LEFT OVERRIDE.
        assert_eq!(round_trip("x\u{202e}y".as_bytes()), "x\\xe2\\x80\\xaey");
        // U+2028 LINE SEPARATOR.
        assert_eq!(round_trip("\u{2028}".as_bytes()), "\\xe2\\x80\\xa8");
        assert_eq!(round_trip("\u{feff}".as_bytes()), "\\xef\\xbb\\xbf");
    }

    #[test]
    fn unescape_refuses_what_escape_never_writes() {
        assert_eq!(unescape("plain"), Some(b"plain".to_vec()));
        assert_eq!(unescape(""), Some(Vec::new()));
        for bad in [
            "\\", "a\\", "\\x4", "\\x41", "\\xFF", "\\n", "\\t", "a\nb", "\u{202e}", "\\xzz",
        ] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_short_byte_string_round_trips() {
        for a in 0..=255u8 {
            round_trip(&[a]);
            for b in [0u8, 0x5c, 0x78, 0x80, 0xbf, 0xc2, 0xe2, 0xff] {
                round_trip(&[a, b]);
                round_trip(&[b, a]);
            }
        }
    }

    fn quote(b: &[u8]) -> String {
        let mut s = String::new();
        quote_into(b, &mut s).unwrap();
        assert_eq!(unquote(&s).as_deref(), Some(b), "{s}");
        s
    }

    #[test]
    fn quoted_values_escape_quotes_and_round_trip() {
        assert_eq!(quote(b"a b"), "\"a b\"");
        assert_eq!(quote(b"say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote(b"C:\\x"), "\"C:\\\\x\"");
        assert_eq!(quote(b"a\n\xff\x1b"), "\"a\\x0a\\xff\\x1b\"");
        assert_eq!(quote(b""), "\"\"");
        for bad in ["a", "\"a", "\"a\"b\"", "\"\\\"", "\"\\x41\"", "\"\\n\""] {
            assert_eq!(unquote(bad), None, "{bad:?}");
        }
        for a in 0..=255u8 {
            for b in [0u8, b'"', b'\\', b'x', 0xc2, 0xff] {
                quote(&[a, b]);
            }
        }
    }

    #[test]
    fn display_wrappers_write_the_escaped_text() {
        assert_eq!(LogBytes(b"a\n\xff").to_string(), "a\\x0a\\xff");
        assert_eq!(format!("{:?}", LogBytes(b"\\")), "\\\\");
        assert_eq!(LogStr("Eicar\u{1b}").to_string(), "Eicar\\x1b");
    }

    #[test]
    fn escaped_len_is_the_length_of_the_escaped_text() {
        for b in [
            &b""[..],
            b"plain",
            b"\xff\n\x1b[2K",
            "\u{202e}x".as_bytes(),
            &[0xff; 100],
        ] {
            assert_eq!(escaped_len(b), escape(b).len(), "{b:?}");
        }
        assert_eq!(escaped_len(&[0xff; 100]), 400);
    }
}
