//! INSTREAM chunk headers: `[u32 big-endian length][data]`, a zero length ends
//! the stream. Every header is checked against what is left of the limit
//! before any of its data is accepted, so a stream can never exceed the limit.

/// What a chunk header means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkHeader {
    /// The zero-length chunk: the stream is complete.
    End,
    /// This many data bytes follow; they fit the limit.
    Data(u32),
    /// The chunk would take the stream over the limit (clamd replies
    /// `INSTREAM size limit exceeded. ERROR` and closes).
    TooLarge(u32),
}

/// Tracks the remaining quota of one stream.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    remaining: u64,
}

impl ChunkDecoder {
    pub fn new(limit: u64) -> Self {
        ChunkDecoder { remaining: limit }
    }

    /// Bytes the stream may still carry.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Decodes a header and charges its length to the quota.
    pub fn header(&mut self, bytes: [u8; 4]) -> ChunkHeader {
        let len = u32::from_be_bytes(bytes);
        if len == 0 {
            ChunkHeader::End
        } else if u64::from(len) > self.remaining {
            ChunkHeader::TooLarge(len)
        } else {
            self.remaining -= u64::from(len);
            ChunkHeader::Data(len)
        }
    }
}

/// Encodes one chunk header (for clients, tests and the benchmark).
pub fn encode_header(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_exact() {
        let mut d = ChunkDecoder::new(10);
        assert_eq!(d.header(encode_header(4)), ChunkHeader::Data(4));
        assert_eq!(d.header(encode_header(6)), ChunkHeader::Data(6));
        assert_eq!(d.header(encode_header(1)), ChunkHeader::TooLarge(1));
        assert_eq!(d.header(encode_header(0)), ChunkHeader::End);
    }

    #[test]
    fn all_ones_is_rejected_at_once() {
        let mut d = ChunkDecoder::new(25 << 20);
        assert_eq!(d.header([0xff; 4]), ChunkHeader::TooLarge(u32::MAX));
        assert_eq!(d.remaining(), 25 << 20);
    }
}
