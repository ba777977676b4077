//! Log text for hostile bytes (`log::escape`, `log::stderr`) and the
//! journald field encoding (`log::journald`).
//!
//! Input: arbitrary bytes: the value; its first byte also picks a field name
//! from the bytes after it (so names with odd characters are tried too).
//! Checks:
//! * `escape` never writes a control character (C0, DEL, C1) or an
//!   invisible one, and `unescape(escape(b)) == b`;
//! * `unescape` is strict: any text it accepts is exactly what `escape`
//!   writes for the bytes it returns;
//! * the stderr line of any formatted event holds exactly one newline, at
//!   its end, and no other control byte;
//! * `journal_field(name, b)` between two other fields decodes, with
//!   `decode_journal_fields`, to exactly those three fields, the middle one
//!   with the mangled name and the bytes `b` (or is absent when nothing of
//!   the name is left).
#![no_main]

use clamsentry::log::escape::{escape, needs_escape, unescape};
use clamsentry::log::journald::{decode_journal_fields, field_name, journal_field};
use clamsentry::log::stderr::one_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let escaped = escape(data);
    assert!(
        !escaped.chars().any(needs_escape),
        "escaped text holds a control character: {escaped:?}"
    );
    assert_eq!(unescape(&escaped).as_deref(), Some(data), "{escaped:?}");

    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = unescape(text) {
            assert_eq!(
                escape(&bytes),
                text,
                "unescape accepted a non-canonical text"
            );
        }
    }

    let line = one_line(data);
    assert_eq!(line.last(), Some(&b'\n'));
    assert!(
        !line[..line.len() - 1]
            .iter()
            .any(|&b| b < 0x20 || b == 0x7f),
        "{line:?}"
    );
    assert!(!String::from_utf8_lossy(&line[..line.len() - 1])
        .chars()
        .any(needs_escape));

    let name_len = data.first().map_or(0, |&n| usize::from(n % 24));
    let name = String::from_utf8_lossy(data.get(1..1 + name_len).unwrap_or(&[]));
    let mut entry = Vec::new();
    journal_field("before", b"x", &mut entry);
    journal_field(&name, data, &mut entry);
    journal_field("after", b"y\nz", &mut entry);
    let fields = decode_journal_fields(&entry).expect("our own entry decodes");
    let mut mangled = Vec::new();
    field_name(&name, &mut mangled);
    let mut want = vec![("BEFORE".to_string(), b"x".to_vec())];
    if !mangled.is_empty() {
        let mangled = String::from_utf8(mangled).expect("names are ASCII");
        assert!(!mangled.starts_with('_') && !mangled.starts_with(|c: char| c.is_ascii_digit()));
        want.push((mangled, data.to_vec()));
    }
    want.push(("AFTER".to_string(), b"y\nz".to_vec()));
    assert_eq!(fields, want);
});
