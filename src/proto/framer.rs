//! One step of the connection's read loop, as a pure function: given the
//! bounded input buffer, how many bytes it holds and whether they arrived
//! with a fresh read, say what the connection does next.
//!
//! This is the decision logic of `server::conn` (decode, parse, the FILDES
//! payload byte, the full-buffer rule) without any I/O, so that the fuzz
//! target `session` can drive it with arbitrary reads and check that the
//! buffer stays bounded and every step makes progress.

use super::command::{self, Command, CommandKind};
use super::frame::{decode, fildes_payload, FildesPayload, Framing};

/// What to do after looking at the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command is complete: handle it after consuming `consumed` bytes
    /// from the front of the buffer (always at least 1, at most `len`).
    Frame {
        framing: Framing,
        cmd: Command,
        consumed: usize,
    },
    /// Read more bytes (the buffer has room for them). `awaiting_descriptor`:
    /// a complete FILDES waits for the byte that carries its descriptor
    /// (a descriptor that arrives then is expected, not stray).
    NeedMore { awaiting_descriptor: bool },
    /// The buffer is full and holds no complete command: the client sent a
    /// command longer than `limits.max-command-length`.
    TooLong,
}

/// Decides the next step for `buf[..len]`; `buf.len()` is the buffer's
/// capacity (`limits.max-command-length`). `fresh` is true when no command
/// has been decoded since the last read (legacy framing needs it).
///
/// Like [`decode`], this overwrites terminators in the buffer; when the
/// answer is [`Step::NeedMore`] for a FILDES still waiting for its payload
/// byte, the frame is restored so that it decodes again after the next read.
pub fn next_step(buf: &mut [u8], len: usize, fresh: bool) -> Step {
    let cap = buf.len();
    let len = len.min(cap);
    if len > 0 {
        if let Some(d) = decode(&mut buf[..len], fresh) {
            let cmd = command::parse(&buf[d.text.clone()], d.framing.is_legacy());
            let mut consumed = d.consumed;
            if cmd.kind == CommandKind::Fildes {
                match fildes_payload(len, &d) {
                    FildesPayload::Consume(n) => consumed = n,
                    FildesPayload::Wait => {
                        // The descriptor comes with one more byte: wait for it.
                        d.restore(&mut buf[..len]);
                        return if len == cap {
                            Step::TooLong
                        } else {
                            Step::NeedMore {
                                awaiting_descriptor: true,
                            }
                        };
                    }
                }
            }
            return Step::Frame {
                framing: d.framing,
                cmd,
                consumed: consumed.clamp(1, len),
            };
        }
    }
    if len == cap {
        Step::TooLong
    } else {
        Step::NeedMore {
            awaiting_descriptor: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(bytes: &[u8], cap: usize, fresh: bool) -> Step {
        let mut buf = vec![0u8; cap];
        buf[..bytes.len()].copy_from_slice(bytes);
        next_step(&mut buf, bytes.len(), fresh)
    }

    #[test]
    fn empty_buffer_needs_more() {
        assert_eq!(
            step(b"", 16, true),
            Step::NeedMore {
                awaiting_descriptor: false
            }
        );
    }

    #[test]
    fn complete_frames() {
        let Step::Frame {
            framing,
            cmd,
            consumed,
        } = step(b"zPING\0zVERSION\0", 64, false)
        else {
            panic!("expected a frame")
        };
        assert_eq!(framing, Framing::Z);
        assert_eq!(cmd.kind, CommandKind::Ping);
        assert_eq!(consumed, 6);
    }

    #[test]
    fn legacy_only_after_a_fresh_read() {
        assert!(matches!(step(b"PING", 16, true), Step::Frame { .. }));
        assert_eq!(
            step(b"PING", 16, false),
            Step::NeedMore {
                awaiting_descriptor: false
            }
        );
    }

    #[test]
    fn full_buffer_without_terminator_is_too_long() {
        assert_eq!(step(b"zPINGPINGPINGPIN", 16, false), Step::TooLong);
        assert_eq!(
            step(b"zPINGPINGPINGPI", 16, false),
            Step::NeedMore {
                awaiting_descriptor: false
            }
        );
    }

    #[test]
    fn fildes_waits_for_payload_and_restores_the_frame() {
        let mut buf = vec![0u8; 16];
        buf[..8].copy_from_slice(b"nFILDES\n");
        assert_eq!(
            next_step(&mut buf, 8, true),
            Step::NeedMore {
                awaiting_descriptor: true
            }
        );
        assert_eq!(
            &buf[..8],
            b"nFILDES\n",
            "frame restored for the next decode"
        );
        buf[8] = b'X';
        assert_eq!(
            next_step(&mut buf, 9, true),
            Step::Frame {
                framing: Framing::N,
                cmd: Command {
                    kind: CommandKind::Fildes,
                    arg: None
                },
                consumed: 9
            }
        );
    }

    #[test]
    fn fildes_waiting_in_a_full_buffer_is_too_long() {
        let mut buf = b"zFILDES\0".to_vec();
        assert_eq!(next_step(&mut buf, 8, false), Step::TooLong);
    }
}
