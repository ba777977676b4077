//! Splitting the byte stream into commands, exactly as clamd's `get_cmd`.

/// How a command was framed; decides the reply terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `zCMD\0`: replies end in `\0`.
    Z,
    /// `nCMD\n`: replies end in `\n`.
    N,
    /// `CMD` or `CMD\n` with no prefix: one read is one command, replies end in `\n`.
    Legacy,
}

impl Framing {
    pub fn terminator(self) -> u8 {
        match self {
            Framing::Z => 0,
            Framing::N | Framing::Legacy => b'\n',
        }
    }

    pub fn is_legacy(self) -> bool {
        self == Framing::Legacy
    }
}

/// One decoded command frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub framing: Framing,
    /// Where the command text starts and ends inside the buffer.
    pub text: std::ops::Range<usize>,
    /// How many buffer bytes the frame uses up.
    pub consumed: usize,
    /// Where the terminator was (it is overwritten with NUL while decoding).
    pub terminator_at: Option<usize>,
}

impl Decoded {
    /// Undoes the terminator overwrite, for a frame that is left in the
    /// buffer to be decoded again later (FILDES waiting for its descriptor).
    ///
    /// Like clamd (`cmd[cmdlen] = term`), the terminator also goes where the
    /// text ends, so a chomped `\r` becomes the terminator: legacy
    /// `FILDES\r` waits as `FILDES\n`, and decodes as the same FILDES frame
    /// once its payload byte arrives.
    pub fn restore(&self, buf: &mut [u8]) {
        let term = self.framing.terminator();
        if let Some(at) = self.terminator_at {
            buf[at] = term;
        }
        if let Some(b) = buf.get_mut(self.text.end) {
            *b = term;
        }
    }
}

/// Decodes the next command at the start of `buf`, or `None` if more bytes
/// are needed.
///
/// `fresh_read` is true for the first command decoded after a read from the
/// socket: legacy (unprefixed) commands are only recognised then.
///
/// The buffer is mutated like clamd mutates its own: the terminator and any
/// chomped `\r` become NUL. This matters only for clamd's quirk with
/// `nCMD\r\n`, whose `\r` makes clamd consume one byte less than the line and
/// leave a NUL behind (which then ends a session or counts as garbage).
pub fn decode(buf: &mut [u8], fresh_read: bool) -> Option<Decoded> {
    let first = *buf.first()?;
    match first {
        b'z' => {
            let nul = buf.iter().position(|&b| b == 0)?;
            Some(Decoded {
                framing: Framing::Z,
                text: 1..nul,
                consumed: nul + 1,
                terminator_at: Some(nul),
            })
        }
        b'n' => {
            let nl = buf.iter().position(|&b| b == b'\n')?;
            buf[nl] = 0;
            let len = chomp(buf);
            Some(Decoded {
                framing: Framing::N,
                text: 1..len,
                consumed: len + 1,
                terminator_at: Some(nl),
            })
        }
        _ if !fresh_read => None,
        _ => {
            let newline = buf.iter().position(|&b| b == b'\n');
            let len = match newline {
                Some(nl) => {
                    buf[nl] = 0;
                    nl
                }
                None => buf.len(),
            };
            let text_len = chomp(&mut buf[..len]);
            Some(Decoded {
                framing: Framing::Legacy,
                text: 0..text_len,
                consumed: (len + 1).min(buf.len()),
                terminator_at: newline,
            })
        }
    }
}

/// Encodes one command text in `framing`, the inverse of [`decode`]:
/// `decode(encode(f, t))` yields framing `f` and text `t`, consuming every
/// byte. `None` when `t` cannot be sent in that framing: it contains a NUL
/// (commands are C strings), or, for `n` and legacy, a `\n` or a trailing
/// `\r` (clamd chomps it), or, for legacy, it starts with `z` or `n` (that
/// would read as a prefixed frame).
pub fn encode(framing: Framing, text: &[u8]) -> Option<Vec<u8>> {
    if text.contains(&0) {
        return None;
    }
    let line_safe = !text.contains(&b'\n') && text.last() != Some(&b'\r');
    let mut out = Vec::with_capacity(text.len() + 2);
    match framing {
        Framing::Z => {
            out.push(b'z');
            out.extend_from_slice(text);
            out.push(0);
        }
        Framing::N if line_safe => {
            out.push(b'n');
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        Framing::Legacy if line_safe && !matches!(text.first(), Some(b'z' | b'n')) => {
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        Framing::N | Framing::Legacy => return None,
    }
    Some(out)
}

/// `cli_chomp`: the C string at the start of `buf` (up to its first NUL),
/// with trailing `\r`/`\n` turned into NULs; returns its new length.
fn chomp(buf: &mut [u8]) -> usize {
    let mut len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    while len > 0 && matches!(buf[len - 1], b'\r' | b'\n') {
        buf[len - 1] = 0;
        len -= 1;
    }
    len
}

/// What to do after a FILDES frame, as clamd does it: the descriptor travels
/// with one extra payload byte after the terminator. If that byte is not in
/// the buffer yet, wait for it (the frame must not be consumed); otherwise
/// consume it together with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FildesPayload {
    Wait,
    /// Total bytes to consume for the frame and its payload byte.
    Consume(usize),
}

pub fn fildes_payload(buf_len: usize, frame: &Decoded) -> FildesPayload {
    // clamd: `if (buffer + off <= cmd + strlen("FILDES\n")) wait;`
    if buf_len <= frame.text.start + "FILDES\n".len() {
        FildesPayload::Wait
    } else {
        FildesPayload::Consume((frame.consumed + 1).min(buf_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], fresh: bool) -> Option<(Framing, Vec<u8>, usize)> {
        let mut buf = bytes.to_vec();
        let d = decode(&mut buf, fresh)?;
        Some((d.framing, buf[d.text.clone()].to_vec(), d.consumed))
    }

    #[test]
    fn z_and_n_frames() {
        assert_eq!(
            dec(b"zPING\0", false),
            Some((Framing::Z, b"PING".to_vec(), 6))
        );
        assert_eq!(
            dec(b"nPING\n", false),
            Some((Framing::N, b"PING".to_vec(), 6))
        );
        assert_eq!(dec(b"zPING", true), None);
        assert_eq!(dec(b"nPING", true), None);
        assert_eq!(dec(b"", true), None);
    }

    #[test]
    fn pipelined_frames_decode_one_at_a_time() {
        assert_eq!(
            dec(b"zIDSESSION\0zPING\0", true),
            Some((Framing::Z, b"IDSESSION".to_vec(), 11))
        );
    }

    #[test]
    fn legacy_is_one_read() {
        assert_eq!(
            dec(b"PING", true),
            Some((Framing::Legacy, b"PING".to_vec(), 4))
        );
        assert_eq!(
            dec(b"PING\n", true),
            Some((Framing::Legacy, b"PING".to_vec(), 5))
        );
        assert_eq!(
            dec(b"PING\r\n", true),
            Some((Framing::Legacy, b"PING".to_vec(), 6))
        );
        assert_eq!(
            dec(b"SCAN /x\nmore", true),
            Some((Framing::Legacy, b"SCAN /x".to_vec(), 8))
        );
        assert_eq!(dec(b"PING", false), None);
    }

    #[test]
    fn crlf_in_n_frame_leaves_a_nul_behind() {
        let mut buf = b"nPING\r\n".to_vec();
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(&buf[d.text.clone()], b"PING");
        assert_eq!(d.consumed, 6);
        assert_eq!(buf[6], 0);
    }

    #[test]
    fn fildes_waits_for_its_payload_byte() {
        let mut buf = b"zFILDES\0".to_vec();
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(fildes_payload(buf.len(), &d), FildesPayload::Wait);
        let mut buf = b"zFILDES\0\0".to_vec();
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(fildes_payload(buf.len(), &d), FildesPayload::Consume(9));
        let mut buf = b"nFILDES\nX".to_vec();
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(fildes_payload(buf.len(), &d), FildesPayload::Consume(9));
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        for (framing, text) in [
            (Framing::Z, &b"PING"[..]),
            (Framing::Z, b"SCAN /a\nb"),
            (Framing::N, b"SCAN /tmp/x y"),
            (Framing::Legacy, b"PING"),
            (Framing::Legacy, b""),
        ] {
            let mut bytes = encode(framing, text).unwrap();
            let len = bytes.len();
            let d = decode(&mut bytes, true).unwrap();
            assert_eq!(d.framing, framing);
            assert_eq!(&bytes[d.text.clone()], text);
            assert_eq!(d.consumed, len);
        }
    }

    #[test]
    fn encode_refuses_what_the_framing_cannot_carry() {
        assert_eq!(encode(Framing::Z, b"PI\0NG"), None);
        assert_eq!(encode(Framing::N, b"SCAN /a\nb"), None);
        assert_eq!(encode(Framing::N, b"PING\r"), None);
        assert_eq!(encode(Framing::Legacy, b"nPING"), None);
        assert_eq!(encode(Framing::Legacy, b"zPING"), None);
        assert_eq!(encode(Framing::N, b"PING").unwrap(), b"nPING\n");
    }

    /// Regression (fuzz target `session`): legacy `FILDES\r` in one read
    /// waits for its payload byte; the restored frame used to keep the
    /// chomped `\r` as a NUL, so it no longer matched clamd's buffer.
    #[test]
    fn restore_puts_the_terminator_where_clamd_does() {
        let mut buf = b"FILDES\r".to_vec();
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(fildes_payload(buf.len(), &d), FildesPayload::Wait);
        d.restore(&mut buf);
        assert_eq!(buf, b"FILDES\n");
        buf.push(b'X');
        let d = decode(&mut buf, true).unwrap();
        assert_eq!(&buf[d.text.clone()], b"FILDES");
        assert_eq!(fildes_payload(buf.len(), &d), FildesPayload::Consume(8));
        // Unterminated legacy FILDES: nothing to restore past the buffer.
        let mut buf = b"FILDES".to_vec();
        let d = decode(&mut buf, true).unwrap();
        d.restore(&mut buf);
        assert_eq!(buf, b"FILDES");
    }
}
