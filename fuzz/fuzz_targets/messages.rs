//! The messages between the daemon's processes (`ipc::messages`): what the
//! supervisor decodes from a possibly compromised worker or engine holder,
//! its most exposed surface.
//!
//! Input: one byte picking the decoder, then the datagram. Checks:
//! * decoding never panics and never accepts more than MAX_MESSAGE bytes of
//!   meaning (paths at most MAX_PATH, names at most MAX_NAME, no NUL in
//!   anything the file system will see);
//! * round trip: whatever decodes, encoded again, is byte-identical to the
//!   input (the encoding is canonical) and decodes to the same value.
#![no_main]

use clamsentry::ipc::messages::{
    BrokerOp, BrokerReply, BrokerRequest, FromWorker, FromZygote, ToWorker, ToZygote, MAX_BATCH,
    MAX_MESSAGE, MAX_NAME, MAX_PATH,
};
use libfuzzer_sys::fuzz_target;

macro_rules! round_trip {
    ($ty:ty, $msg:expr) => {
        if let Ok(m) = <$ty>::decode($msg) {
            let again = m.encode();
            assert_eq!(again, $msg, "canonical encoding");
            assert_eq!(<$ty>::decode(&again).unwrap(), m);
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    if msg.len() > MAX_MESSAGE {
        return;
    }
    match which % 6 {
        0 => round_trip!(FromWorker, msg),
        1 => round_trip!(ToWorker, msg),
        2 => round_trip!(FromZygote, msg),
        3 => round_trip!(ToZygote, msg),
        4 => {
            if let Ok(m) = BrokerRequest::decode(msg) {
                match &m.op {
                    BrokerOp::OpenPath { path } => {
                        assert!(path.len() <= MAX_PATH && !path.contains(&0))
                    }
                    BrokerOp::OpenEntry { name, .. } | BrokerOp::ListDir { name, .. } => {
                        assert!(name.len() <= MAX_NAME && !name.contains(&0))
                    }
                    BrokerOp::OpenFiles { names, .. } => {
                        assert!(names.len() <= MAX_BATCH);
                        for name in names {
                            assert!(name.len() <= MAX_NAME && !name.contains(&0));
                        }
                    }
                    BrokerOp::ReadDir { .. } | BrokerOp::CloseDir { .. } => {}
                }
            }
            round_trip!(BrokerRequest, msg);
        }
        _ => {
            if let Ok(BrokerReply::Files(files)) = BrokerReply::decode(msg) {
                assert!(files.len() <= MAX_BATCH);
            }
            round_trip!(BrokerReply, msg)
        }
    }
});
