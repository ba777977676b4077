//! The command decoder with all three framings: the input is one buffer of
//! a connection (a whole session-like byte stream), decoded frame by frame
//! with `proto::decode` and `command::parse`.
//!
//! Properties, for every frame:
//! * progress and bounds: `1 <= consumed <= remaining`, the text lies inside
//!   the consumed bytes, and the text holds no NUL (commands are C strings);
//! * legacy (unprefixed) frames only at the start of a fresh read, `z`/`n`
//!   frames only where the buffer starts with `z`/`n`;
//! * `parse` agrees with a plain reference matcher (exact word for commands
//!   without argument; word + one separator byte for path commands; the
//!   legacy table);
//! * round trip: command → `Command::encode` → `frame::encode` → `decode`
//!   → `parse` gives the same command and consumes every byte, in each
//!   framing that can carry it; and the frame text itself re-encodes and
//!   decodes to the same text.
#![no_main]

use clamsentry::proto::command::{self, Command, CommandKind};
use clamsentry::proto::frame::{self, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut at = 0;
    let mut fresh = true;
    let mut frames = 0usize;
    while at < buf.len() {
        let first = buf[at];
        let Some(d) = frame::decode(&mut buf[at..], fresh) else {
            assert!(
                !fresh || matches!(first, b'z' | b'n'),
                "a fresh read always decodes unless it starts a z/n frame"
            );
            break;
        };
        let rest = buf.len() - at;
        assert!(d.consumed >= 1 && d.consumed <= rest, "{d:?} of {rest}");
        assert!(d.text.start <= d.text.end && d.text.end <= d.consumed);
        match d.framing {
            Framing::Z => assert_eq!(first, b'z'),
            Framing::N => assert_eq!(first, b'n'),
            Framing::Legacy => {
                assert!(fresh, "legacy frame without a fresh read");
                assert!(!matches!(first, b'z' | b'n'));
            }
        }
        let text = buf[at + d.text.start..at + d.text.end].to_vec();
        assert!(!text.contains(&0), "frame text holds a NUL");
        if d.framing != Framing::Z {
            assert!(!text.contains(&b'\n'));
        }
        let legacy = d.framing.is_legacy();
        let cmd = command::parse(&text, legacy);
        assert_eq!(cmd, reference_parse(&text, legacy), "text {text:?}");
        round_trip(&cmd, &text, d.framing);
        at += d.consumed;
        fresh = false;
        frames += 1;
    }
    assert!(frames <= data.len());
});

fn round_trip(cmd: &Command, text: &[u8], framing: Framing) {
    // The text of this frame, framed again, decodes to the same text.
    if let Some(mut bytes) = frame::encode(framing, text) {
        let len = bytes.len();
        let d = frame::decode(&mut bytes, true).expect("an encoded frame decodes");
        assert_eq!(d.framing, framing);
        assert_eq!(&bytes[d.text.clone()], text);
        assert_eq!(d.consumed, len);
    }
    // The command, written out and framed, parses back to itself.
    let Some(encoded) = cmd.encode() else {
        assert_eq!(cmd.kind, CommandKind::Unknown);
        return;
    };
    for f in [Framing::Z, Framing::N, Framing::Legacy] {
        let Some(mut bytes) = frame::encode(f, &encoded) else {
            continue;
        };
        let len = bytes.len();
        let d = frame::decode(&mut bytes, true).expect("an encoded frame decodes");
        assert_eq!(d.consumed, len);
        let again = command::parse(&bytes[d.text.clone()], f.is_legacy());
        if f.is_legacy() && !legacy_ok(cmd.kind) {
            assert_eq!(again.kind, CommandKind::Unknown);
        } else {
            assert_eq!(&again, cmd, "{f:?} {encoded:?}");
        }
    }
}

/// The command table written out flat: (word, kind, takes a path).
const WORDS: &[(&[u8], CommandKind, bool)] = &[
    (b"SCAN", CommandKind::Scan, true),
    (b"QUIT", CommandKind::Quit, false),
    (b"RELOAD", CommandKind::Reload, false),
    (b"PING", CommandKind::Ping, false),
    (b"CONTSCAN", CommandKind::ContScan, true),
    (b"VERSIONCOMMANDS", CommandKind::VersionCommands, false),
    (b"VERSION", CommandKind::Version, false),
    (b"END", CommandKind::End, false),
    (b"SHUTDOWN", CommandKind::Shutdown, false),
    (b"MULTISCAN", CommandKind::MultiScan, true),
    (b"FILDES", CommandKind::Fildes, false),
    (b"STATS", CommandKind::Stats, false),
    (b"IDSESSION", CommandKind::IdSession, false),
    (b"INSTREAM", CommandKind::Instream, false),
    (b"DETSTATSCLEAR", CommandKind::DetStatsClear, false),
    (b"DETSTATS", CommandKind::DetStats, false),
    (b"ALLMATCHSCAN", CommandKind::AllMatchScan, true),
];

fn legacy_ok(kind: CommandKind) -> bool {
    !matches!(
        kind,
        CommandKind::VersionCommands
            | CommandKind::End
            | CommandKind::Stats
            | CommandKind::IdSession
            | CommandKind::Instream
            | CommandKind::AllMatchScan
    )
}

/// What clamd's `parse_command` means, written as plainly as possible.
fn reference_parse(text: &[u8], legacy: bool) -> Command {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    // clamsentry's own MAINT, outside clamd's table.
    if text == b"MAINT" {
        return Command {
            kind: CommandKind::Maint,
            arg: None,
        };
    }
    if text.len() > 5 && text.starts_with(b"MAINT ") {
        return Command {
            kind: CommandKind::Maint,
            arg: Some(text[6..].to_vec()),
        };
    }
    let found = WORDS.iter().find_map(|&(word, kind, path)| {
        if path {
            (text.len() > word.len() && text.starts_with(word)).then(|| Command {
                kind,
                arg: Some(text[word.len() + 1..].to_vec()),
            })
        } else {
            (text == word).then_some(Command { kind, arg: None })
        }
    });
    match found {
        Some(c) if !legacy || legacy_ok(c.kind) => c,
        _ => Command::unknown(),
    }
}
