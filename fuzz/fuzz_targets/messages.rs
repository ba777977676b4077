//! The supervisor↔worker messages (`privsep::messages`): what the supervisor
//! decodes from a possibly compromised worker, its most exposed surface.
//!
//! Input: one byte picking the decoder, then the datagram. Checks:
//! * decoding never panics and never accepts more than MAX_MESSAGE bytes of
//!   meaning (paths at most MAX_PATH, no NUL in a broker path);
//! * round trip: whatever decodes, encoded again, is byte-identical to the
//!   input (the encoding is canonical) and decodes to the same value.
#![no_main]

use clamsentry::privsep::messages::{
    BrokerReply, BrokerRequest, ToSupervisor, ToWorker, MAX_MESSAGE, MAX_PATH,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    if msg.len() > MAX_MESSAGE {
        return;
    }
    match which % 4 {
        0 => {
            if let Ok(m) = ToSupervisor::decode(msg) {
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(ToSupervisor::decode(&again).unwrap(), m);
            }
        }
        1 => {
            if let Ok(m) = ToWorker::decode(msg) {
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(ToWorker::decode(&again).unwrap(), m);
            }
        }
        2 => {
            if let Ok(m) = BrokerRequest::decode(msg) {
                assert!(m.path.len() <= MAX_PATH);
                assert!(!m.path.contains(&0));
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(BrokerRequest::decode(&again).unwrap(), m);
            }
        }
        _ => {
            if let Ok(m) = BrokerReply::decode(msg) {
                let again = m.encode();
                assert_eq!(again, msg, "canonical encoding");
                assert_eq!(BrokerReply::decode(&again).unwrap(), m);
            }
        }
    }
});
