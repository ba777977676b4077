//! The log records children send the supervisor (`ipc::logrec`), and what
//! the supervisor makes of them (`log::relay`, `log::stderr`,
//! `log::journald`): its decoder faces a possibly compromised worker.
//!
//! Input: one byte picking the marks, then the datagram. Checks:
//! * decoding never panics and never accepts more than the bounds allow;
//! * round trip: whatever decodes, encoded again, is byte-identical to the
//!   input and decodes to the same value;
//! * the relayed record (marks first, reserved names renamed) as a stderr
//!   line is exactly one line, and reads back to exactly its message and
//!   fields: no byte sequence adds a field; `source` is the first field and
//!   the only one;
//! * as a journal entry it decodes to fields none of which starts with `_`,
//!   with exactly one `SOURCE`;
//! * the relayed record, sent on as a child would (`to_wire`), fits the
//!   bounds and decodes.
#![no_main]

use clamsentry::ipc::logrec::{LogRecord, MAX_RECORD};
use clamsentry::log::journald::{decode_journal_fields, entry};
use clamsentry::log::relay::{relayed, to_wire, Marks, Source};
use clamsentry::log::stderr::{format_line, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    let Ok(rec) = LogRecord::decode(msg) else {
        return;
    };
    assert!(msg.len() <= MAX_RECORD);
    let again = rec.encode();
    assert_eq!(again, msg, "canonical encoding");
    assert_eq!(LogRecord::decode(&again).as_ref(), Ok(&rec));

    let marks = Marks {
        source: match which % 3 {
            0 => Source::Worker(u64::from(which)),
            1 => Source::EngineHolder(7),
            _ => Source::Helper("observer"),
        },
        pid: (which & 4 != 0).then_some(1234),
        via_stderr: which & 8 != 0,
    };
    let out = relayed(rec, &marks);
    assert_eq!(out.fields[0].0, "source");

    let line = format_line("2026-01-01T00:00:00.000000Z", &out);
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    assert!(line.ends_with('\n'));
    assert!(!line.bytes().any(|b| b < 0x20 && b != b'\n'), "{line:?}");
    let p = parse_line(&line).unwrap_or_else(|| panic!("does not parse: {line:?}"));
    assert_eq!(p.message, out.message, "{line:?}");
    let want: Vec<(String, Vec<u8>)> = out
        .fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    assert_eq!(p.fields, want, "{line:?}");
    assert_eq!(p.fields.iter().filter(|(n, _)| n == "source").count(), 1);

    let (e, _) = entry(&out);
    let fields = decode_journal_fields(&e).expect("our own entry decodes");
    assert!(fields.iter().all(|(n, _)| !n.starts_with('_')), "{fields:?}");
    assert_eq!(fields.iter().filter(|(n, _)| n == "SOURCE").count(), 1);

    let wire = to_wire(&out, 0).encode();
    assert!(wire.len() <= MAX_RECORD);
    assert!(LogRecord::decode(&wire).is_ok());
});
