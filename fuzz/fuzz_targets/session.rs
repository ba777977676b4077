//! The connection's framing loop (single command and IDSESSION) as the
//! server runs it: a bounded buffer of `limits.max-command-length`, bytes
//! arriving in reads of arbitrary sizes, and `proto::framer::next_step`
//! deciding after every read what happens next.
//!
//! Input byte 0 picks the mode:
//! * even: raw. Byte 1 picks the buffer size (64..=319 bytes, small so the
//!   full-buffer rule is reached), then the input is a list of reads, each
//!   `[len byte][bytes]`.
//! * odd: structured. The rest describes a list of commands; the harness
//!   encodes them (`Command::encode` + `frame::encode`, `z` or `n`, the first
//!   may be legacy), appends the FILDES payload byte where one is due, splits
//!   the bytes into reads of sizes taken from the input, and checks that the
//!   loop decodes exactly the commands that went in (decode → encode →
//!   decode round trip over a whole session).
//!
//! Properties in both modes: the buffer never holds more than its capacity;
//! every frame consumes at least one byte and no more than the buffer holds;
//! legacy frames only as the first frame after a read; `NeedMore` only with
//! room left, `TooLong` only when full; FILDES frames consume their payload
//! byte, and one waiting for it is restored (as clamd does) so that it
//! decodes as the same FILDES frame; the result equals decoding a copy with
//! `frame::decode` and `command::parse`; the loop ends within (bytes + reads) steps.
#![no_main]

use clamsentry::proto::command::{self, Command, CommandKind};
use clamsentry::proto::frame::{self, FildesPayload, Framing};
use clamsentry::proto::framer::{next_step, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        structured(rest);
    }
});

/// How a session run ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// No more input.
    Eof,
    TooLong,
    /// The server stops reading: a command that ends the connection.
    Closed,
}

fn raw(data: &[u8]) {
    let Some((&size, mut rest)) = data.split_first() else {
        return;
    };
    let cap = 64 + usize::from(size);
    let mut reads = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len()).max(1).min(tail.len());
        if n == 0 {
            break;
        }
        reads.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    run(cap, &reads);
}

/// Runs the server's loop over `reads`; returns the frames and how it ended.
fn run(cap: usize, reads: &[Vec<u8>]) -> (Vec<(Framing, Command)>, End) {
    let mut buf = vec![0u8; cap];
    let mut len = 0usize;
    let mut fresh = false;
    let mut frames = Vec::new();
    let mut pending = reads.iter().map(|r| r.as_slice());
    // Bytes of a read that did not fit (the socket keeps them for later).
    let mut carry: &[u8] = &[];
    let budget = reads.iter().map(Vec::len).sum::<usize>() + reads.len() + 2;
    let mut in_session = false;
    for _ in 0..=budget {
        assert!(len <= cap);
        // What the framing layer should decide, computed independently.
        let mut copy = buf[..len].to_vec();
        let expect = frame::decode(&mut copy, fresh);
        let before = buf[..len].to_vec();
        match next_step(&mut buf, len, fresh) {
            Step::Frame {
                framing,
                cmd,
                consumed,
            } => {
                let d = expect.expect("next_step found a frame that decode does not");
                assert_eq!(framing, d.framing);
                assert!(
                    fresh || !framing.is_legacy(),
                    "legacy frame without a fresh read"
                );
                let parsed = command::parse(&copy[d.text.clone()], framing.is_legacy());
                assert_eq!(cmd, parsed);
                let want = if cmd.kind == CommandKind::Fildes {
                    match frame::fildes_payload(len, &d) {
                        FildesPayload::Consume(n) => n,
                        FildesPayload::Wait => panic!("FILDES frame returned while waiting"),
                    }
                } else {
                    d.consumed
                };
                assert_eq!(consumed, want);
                assert!(consumed >= 1 && consumed <= len);
                buf.copy_within(consumed..len, 0);
                len -= consumed;
                fresh = false;
                let kind = cmd.kind;
                frames.push((framing, cmd));
                // What the server does next (server::conn::run / session).
                if !in_session {
                    if kind == CommandKind::IdSession {
                        in_session = true;
                        continue;
                    }
                    return (frames, End::Closed);
                }
                if framing.is_legacy() || !kind.allowed_in_session() || kind == CommandKind::End {
                    return (frames, End::Closed);
                }
                if kind == CommandKind::Instream {
                    // The stream's bytes follow; the instream target covers them.
                    return (frames, End::Closed);
                }
            }
            Step::TooLong => {
                assert_eq!(len, cap, "TooLong with room left");
                if let Some(d) = expect {
                    // Only a FILDES frame still waiting for its payload byte.
                    let cmd = command::parse(&copy[d.text.clone()], d.framing.is_legacy());
                    assert_eq!(cmd.kind, CommandKind::Fildes);
                }
                return (frames, End::TooLong);
            }
            Step::NeedMore {
                awaiting_descriptor,
            } => {
                assert!(len < cap, "NeedMore with a full buffer");
                assert_eq!(awaiting_descriptor, expect.is_some(), "awaiting_descriptor iff a FILDES waits");
                if let Some(d) = expect {
                    let cmd = command::parse(&copy[d.text.clone()], d.framing.is_legacy());
                    assert_eq!(cmd.kind, CommandKind::Fildes);
                    assert_eq!(frame::fildes_payload(len, &d), FildesPayload::Wait);
                    // Restored as clamd does it: the bytes as received, except
                    // that the terminator stands where the text ends.
                    let mut want = before.clone();
                    if let Some(b) = want.get_mut(d.text.end) {
                        *b = d.framing.terminator();
                    }
                    assert_eq!(buf[..len], want[..], "a waiting FILDES frame is restored");
                    let mut again = buf[..len].to_vec();
                    let d2 = frame::decode(&mut again, fresh).expect("restored frame decodes");
                    assert_eq!(d2.framing, d.framing);
                    let cmd2 = command::parse(&again[d2.text.clone()], d2.framing.is_legacy());
                    assert_eq!(cmd2.kind, CommandKind::Fildes);
                }
                if carry.is_empty() {
                    match pending.next() {
                        Some(r) => carry = r,
                        None => return (frames, End::Eof),
                    }
                }
                let n = carry.len().min(cap - len);
                buf[len..len + n].copy_from_slice(&carry[..n]);
                len += n;
                carry = &carry[n..];
                fresh = true;
            }
        }
    }
    panic!("the framing loop made no progress within {budget} steps");
}

fn structured(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut cmds: Vec<(Framing, Command)> = Vec::new();
    let mut wire = Vec::new();
    // Always a session: IDSESSION, then allowed commands, then END.
    let first = if next().unwrap_or(0) % 2 == 0 {
        Framing::Z
    } else {
        Framing::N
    };
    cmds.push((first, plain(CommandKind::IdSession)));
    let session_kinds = [
        CommandKind::Ping,
        CommandKind::Version,
        CommandKind::VersionCommands,
        CommandKind::Stats,
        CommandKind::Scan,
        CommandKind::Fildes,
    ];
    while cmds.len() < 64 {
        let Some(b) = next() else { break };
        let kind = session_kinds[usize::from(b) % session_kinds.len()];
        let framing = if b & 0x80 == 0 {
            Framing::Z
        } else {
            Framing::N
        };
        let cmd = if kind.is_path_scan() {
            let n = usize::from(next().unwrap_or(0) % 64);
            let arg: Vec<u8> = (0..n).filter_map(|_| next()).collect();
            Command {
                kind,
                arg: Some(arg),
            }
        } else {
            plain(kind)
        };
        cmds.push((framing, cmd));
    }
    cmds.push((Framing::Z, plain(CommandKind::End)));
    // Encode; drop commands whose argument the framing cannot carry.
    let mut sent = Vec::new();
    for (framing, cmd) in cmds {
        let Some(text) = cmd.encode() else { continue };
        let Some(bytes) = frame::encode(framing, &text) else {
            continue;
        };
        wire.extend_from_slice(&bytes);
        if cmd.kind == CommandKind::Fildes {
            // clamdscan --fdpass: one byte travels with the descriptor.
            wire.push(0);
        }
        sent.push((framing, cmd));
    }
    // Split into reads of sizes from the input (1..=256).
    let mut reads = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let n = (usize::from(next().unwrap_or(255)) + 1).min(wire.len() - at);
        reads.push(wire[at..at + n].to_vec());
        at += n;
    }
    let (got, end) = run(4104, &reads);
    assert_eq!(end, End::Closed);
    assert_eq!(
        got, sent,
        "the session decoded other commands than were sent"
    );
}

fn plain(kind: CommandKind) -> Command {
    Command { kind, arg: None }
}
