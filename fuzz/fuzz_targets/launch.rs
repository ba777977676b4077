//! The messages between the supervisor and the VirusEvent launcher
//! (`ipc::launch`): what root decodes from a launcher that a command running
//! as the same user may have compromised, and what the launcher decodes.
//!
//! Input: one byte picking the decoder, then the datagram. Checks:
//! * decoding never panics and nothing decoded exceeds its bound (virus
//!   name, file name, output excerpts, error text, command, PATH);
//! * a decoded peer key is canonical (a uid, or a network with its host
//!   bits zero and no IPv4-mapped form);
//! * round trip: whatever decodes, encoded again, is byte-identical to the
//!   input (the encoding is canonical) and decodes to the same value.
#![no_main]

use clamsentry::ipc::launch::{
    FromLauncher, ToLauncher, CAPTURE, MAX_COMMAND, MAX_ERROR, MAX_FILE_NAME, MAX_PATH_VARIABLE,
};
use clamsentry::ipc::messages::{MAX_MESSAGE, MAX_VIRUS_NAME};
use clamsentry::policy::PeerKey;
use libfuzzer_sys::fuzz_target;

/// A network key has its host bits zero, a prefix within its family, and
/// no IPv4-mapped IPv6 form.
fn canonical(p: &PeerKey) {
    match *p {
        PeerKey::Uid(_) => {}
        PeerKey::V4(a, len) => {
            assert!(len <= 32, "{p:?}");
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            assert_eq!(u32::from(a) & host, 0, "{p:?}");
        }
        PeerKey::V6(a, len) => {
            assert!(len <= 128, "{p:?}");
            assert!(a.to_ipv4_mapped().is_none(), "{p:?}");
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            assert_eq!(u128::from(a) & host, 0, "{p:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    if msg.len() > MAX_MESSAGE {
        return;
    }
    if which % 2 == 0 {
        if let Ok(m) = ToLauncher::decode(msg) {
            match &m {
                ToLauncher::Setup(s) => {
                    assert!(s.command.len() <= MAX_COMMAND && s.path.len() <= MAX_PATH_VARIABLE)
                }
                ToLauncher::Event(e) => {
                    assert!(e.virus.len() <= MAX_VIRUS_NAME && e.target.len() <= MAX_FILE_NAME);
                    canonical(&e.peer);
                }
            }
            let again = m.encode();
            assert_eq!(again, msg, "canonical encoding");
            assert_eq!(ToLauncher::decode(&again).unwrap(), m);
        }
    } else if let Ok(m) = FromLauncher::decode(msg) {
        match &m {
            FromLauncher::Outcome(o) => {
                assert!(o.virus.len() <= MAX_VIRUS_NAME && o.target.len() <= MAX_FILE_NAME);
                assert!(o.stdout.bytes.len() <= CAPTURE && o.stderr.bytes.len() <= CAPTURE);
                canonical(&o.peer);
            }
            FromLauncher::Fatal { error } => assert!(error.len() <= MAX_ERROR),
            FromLauncher::Ready => {}
        }
        let again = m.encode();
        assert_eq!(again, msg, "canonical encoding");
        assert_eq!(FromLauncher::decode(&again).unwrap(), m);
    }
});
