//! The INSTREAM chunk decoder over a whole stream: `[u32 BE len][data]...`
//! with a zero length at the end, against a stream limit.
//!
//! Input: 3 bytes of limit (1 B .. 16 MiB), then the raw stream bytes.
//! The harness assembles the stream exactly as `server::conn` does (header,
//! quota check, then data) and checks:
//! * the assembled stream never exceeds the limit, and
//!   `remaining() + assembled == limit` after every chunk;
//! * `TooLarge` exactly when a chunk is longer than what is left, `End`
//!   exactly for a zero header, and a refused header charges nothing;
//! * the outcome equals a reference written with plain u64 arithmetic;
//! * round trip: the accepted chunks re-encoded with `encode_header`
//!   decode to the same data and the same outcome.
#![no_main]

use clamsentry::proto::instream::{encode_header, ChunkDecoder, ChunkHeader};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Complete stream.
    Done(Vec<u8>),
    /// A header asked for more than the limit allows.
    TooLarge(u32),
    /// The client stopped sending (EOF mid-header or mid-chunk).
    Truncated,
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = (u64::from(data[0]) << 16 | u64::from(data[1]) << 8 | u64::from(data[2])).max(1);
    let wire = &data[3..];
    let (outcome, chunks) = assemble(wire, limit);
    assert_eq!(outcome, reference(wire, limit));
    if let Outcome::Done(stream) = &outcome {
        assert!(stream.len() as u64 <= limit);
        // Round trip: the accepted chunks, encoded again, give the same stream.
        let mut again = Vec::new();
        for c in &chunks {
            again.extend_from_slice(&encode_header(c.len() as u32));
            again.extend_from_slice(c);
        }
        again.extend_from_slice(&encode_header(0));
        assert_eq!(assemble(&again, limit).0, outcome);
        // One chunk with everything also fits, and one byte more does not.
        let mut whole = encode_header(stream.len() as u32).to_vec();
        whole.extend_from_slice(stream);
        whole.extend_from_slice(&encode_header(0));
        let single = if stream.is_empty() {
            encode_header(0).to_vec()
        } else {
            whole
        };
        assert_eq!(assemble(&single, limit).0, outcome);
        if (stream.len() as u64) < u64::from(u32::MAX) {
            let over = encode_header((limit.min(u64::from(u32::MAX - 1)) + 1) as u32);
            let mut d = ChunkDecoder::new(limit);
            assert!(matches!(d.header(over), ChunkHeader::TooLarge(_)));
            assert_eq!(d.remaining(), limit);
        }
    }
});

/// The stream as the server builds it, and the chunks it accepted.
fn assemble(wire: &[u8], limit: u64) -> (Outcome, Vec<Vec<u8>>) {
    let mut d = ChunkDecoder::new(limit);
    let mut stream = Vec::new();
    let mut chunks = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(h) = wire.get(at..at + 4) else {
            return (Outcome::Truncated, chunks);
        };
        at += 4;
        let before = d.remaining();
        let len = match d.header([h[0], h[1], h[2], h[3]]) {
            ChunkHeader::End => {
                assert_eq!(u32::from_be_bytes([h[0], h[1], h[2], h[3]]), 0);
                assert_eq!(d.remaining(), before);
                return (Outcome::Done(stream), chunks);
            }
            ChunkHeader::TooLarge(len) => {
                assert!(u64::from(len) > before);
                assert_eq!(d.remaining(), before, "a refused chunk charges nothing");
                return (Outcome::TooLarge(len), chunks);
            }
            ChunkHeader::Data(len) => {
                assert!(len > 0 && u64::from(len) <= before);
                assert_eq!(d.remaining(), before - u64::from(len));
                len as usize
            }
        };
        let Some(chunk) = wire.get(at..at + len) else {
            return (Outcome::Truncated, chunks);
        };
        at += len;
        stream.extend_from_slice(chunk);
        chunks.push(chunk.to_vec());
        assert!(stream.len() as u64 <= limit, "stream longer than the limit");
        assert_eq!(d.remaining() + stream.len() as u64, limit);
    }
}

/// The same stream decoded with nothing but u64 sums.
fn reference(wire: &[u8], limit: u64) -> Outcome {
    let mut total: u64 = 0;
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        if wire.len() < at + 4 {
            return Outcome::Truncated;
        }
        let len = u32::from_be_bytes(wire[at..at + 4].try_into().unwrap());
        at += 4;
        if len == 0 {
            return Outcome::Done(out);
        }
        if total + u64::from(len) > limit {
            return Outcome::TooLarge(len);
        }
        total += u64::from(len);
        if wire.len() < at + len as usize {
            return Outcome::Truncated;
        }
        out.extend_from_slice(&wire[at..at + len as usize]);
        at += len as usize;
    }
}
