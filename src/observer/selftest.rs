//! The self-test's client side: the EICAR test string sent with INSTREAM on
//! the connection the supervisor handed to a worker, and what came back,
//! judged by a pure function ([`judge`]).
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ipc::observe::SelftestOutcome;

/// Longest reply read.
const MAX_REPLY: usize = 4096;

/// The EICAR test string, kept XOR-masked so that neither this source nor
/// the binary holds it in the clear (a scanner would flag either).
const MASKED: [u8; 68] = [
    0x02, 0x6f, 0x15, 0x7b, 0x0a, 0x7f, 0x1a, 0x1b, 0x0a, 0x01, 0x6e, 0x06, 0x0a, 0x00, 0x02, 0x6f,
    0x6e, 0x72, 0x0a, 0x04, 0x73, 0x6d, 0x19, 0x19, 0x73, 0x6d, 0x27, 0x7e, 0x1f, 0x13, 0x19, 0x1b,
    0x08, 0x77, 0x09, 0x0e, 0x1b, 0x14, 0x1e, 0x1b, 0x08, 0x1e, 0x77, 0x1b, 0x14, 0x0e, 0x13, 0x0c,
    0x13, 0x08, 0x0f, 0x09, 0x77, 0x0e, 0x1f, 0x09, 0x0e, 0x77, 0x1c, 0x13, 0x16, 0x1f, 0x7b, 0x7e,
    0x12, 0x71, 0x12, 0x70,
];
const MASK: u8 = 0x5a;

/// The EICAR test string.
pub fn eicar() -> Vec<u8> {
    MASKED.iter().map(|b| b ^ MASK).collect()
}

/// What a reply means.
pub fn judge(reply: &[u8]) -> (SelftestOutcome, String) {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).to_string();
    if text.is_empty() {
        return (
            SelftestOutcome::Failed,
            "the connection closed without a reply".into(),
        );
    }
    if text.starts_with("stream: ") && text.ends_with(" FOUND") {
        return (SelftestOutcome::Passed, text);
    }
    if text == "stream: OK" {
        return (
            SelftestOutcome::Failed,
            "stream: OK (the EICAR test string was not detected: do the signatures include it?)"
                .into(),
        );
    }
    if text.contains("Scan queue full") {
        return (SelftestOutcome::Skipped, text);
    }
    (SelftestOutcome::Failed, text)
}

/// Runs one self-test on `socket` (a Unix stream socket whose other end a
/// worker serves), waiting at most `timeout` for the reply.
pub async fn run(socket: OwnedFd, timeout: Duration) -> (SelftestOutcome, String) {
    let std = std::os::unix::net::UnixStream::from(socket);
    let stream = match std
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(std))
    {
        Ok(s) => s,
        Err(e) => {
            return (
                SelftestOutcome::Skipped,
                format!("unusable connection: {e}"),
            )
        }
    };
    match tokio::time::timeout(timeout, exchange(stream)).await {
        Ok(Ok(reply)) => judge(&reply),
        Ok(Err(e)) => (SelftestOutcome::Failed, format!("connection failed: {e}")),
        Err(_) => (
            SelftestOutcome::Failed,
            format!("no reply within selftest.timeout ({} s)", timeout.as_secs()),
        ),
    }
}

async fn exchange(mut s: tokio::net::UnixStream) -> std::io::Result<Vec<u8>> {
    let data = eicar();
    let mut request = b"zINSTREAM\0".to_vec();
    request.extend_from_slice(&(data.len() as u32).to_be_bytes());
    request.extend_from_slice(&data);
    request.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&request).await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.len() < MAX_REPLY && !reply.contains(&0) {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    reply.truncate(MAX_REPLY);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_string_is_eicar() {
        let e = eicar();
        assert_eq!(e.len(), 68);
        assert!(e.starts_with(b"X5O!P%@AP[4\\PZX54"));
        assert!(e.ends_with(b"!$H+H*"));
        // Its MD5 is the one of EICAR's 68-byte file (tests/common HDB).
        assert!(String::from_utf8(e)
            .unwrap()
            .contains("-STANDARD-ANTIVIRUS-TEST-FILE!"));
    }

    #[test]
    fn replies_are_judged() {
        assert_eq!(
            judge(b"stream: Win.Test.EICAR_HDB-1 FOUND\0").0,
            SelftestOutcome::Passed
        );
        let (o, d) = judge(b"stream: OK\0");
        assert_eq!(o, SelftestOutcome::Failed);
        assert!(d.contains("not detected"), "{d}");
        assert_eq!(
            judge(b"stream: Scan queue full (limits.max-queue), retry later. ERROR\0").0,
            SelftestOutcome::Skipped
        );
        assert_eq!(judge(b"").0, SelftestOutcome::Failed);
        assert_eq!(
            judge(b"INSTREAM command not allowed on this listener. ERROR\0").0,
            SelftestOutcome::Failed
        );
    }
}
