//! What the observer process and the supervisor decode from each other
//! (`ipc::observe`), and the observer's HTTP request parser
//! (`observer::http`), which reads bytes from anyone who reaches the
//! metrics listener.
//!
//! Input: one byte picking the decoder, then the bytes. Checks:
//! * decoding never panics; whatever decodes, encoded again, is
//!   byte-identical (the encoding is canonical) and decodes to the same
//!   value: decode → encode → decode;
//! * names that end up in metrics labels or the status page hold no
//!   control character;
//! * the HTTP parser never claims more bytes than it was given, and the
//!   path it returns has no query.
#![no_main]

use clamsentry::ipc::messages::MAX_MESSAGE;
use clamsentry::ipc::observe::{FromObserver, ToObserver};
use clamsentry::observer::http::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    if msg.len() > MAX_MESSAGE {
        return;
    }
    match which % 3 {
        0 => {
            if let Ok(m) = FromObserver::decode(msg) {
                if let FromObserver::SelftestResult { detail, .. } = &m {
                    assert!(!detail.chars().any(char::is_control));
                }
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(FromObserver::decode(&again).unwrap(), m);
            }
        }
        1 => {
            if let Ok(m) = ToObserver::decode(msg) {
                if let ToObserver::Snapshot(s) = &m {
                    for l in &s.listeners {
                        assert!(!l.counts.name.chars().any(char::is_control));
                    }
                    for (name, _) in &s.top {
                        assert!(!name.chars().any(char::is_control));
                    }
                }
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(ToObserver::decode(&again).unwrap(), m);
            }
        }
        _ => {
            if let Parsed::Request(r, n) = parse(msg) {
                assert!(n <= msg.len());
                assert!(!r.path.contains('?'));
            }
        }
    }
});
