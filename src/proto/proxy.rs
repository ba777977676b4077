//! The PROXY protocol, version 2, as a pure decoder (and the encoder its
//! tests and fuzz target check it against): no I/O, no allocation beyond
//! the returned header, safe Rust only (forbidden below).
//!
//! A load balancer (HAProxy's `send-proxy-v2`) writes this binary header at
//! the start of each connection it opens to a backend, before any byte of
//! the client's own: who the client really is (its address and port) and
//! which address it connected to. clamsentry's supervisor reads it, with
//! this decoder, only on listeners that expect it and only from addresses in
//! `listen.proxy-from` (see `supervisor::proxied`): it is the one piece of
//! client-side data the root process decodes, so the decoder is small,
//! bounded ([`MAX_HEADER`] bytes) and fuzzed (`fuzz/fuzz_targets/proxy.rs`).
//!
//! Layout (haproxy's `doc/proxy-protocol.txt`, section 2.2):
//!
//! ```text
//! 12 bytes  signature  \r\n\r\n\0\r\nQUIT\n
//!  1 byte   version (high nibble, 2) and command (low: 0 LOCAL, 1 PROXY)
//!  1 byte   address family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
//!           transport (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//!  2 bytes  length of what follows, big-endian
//!  addresses: INET 4+4+2+2, INET6 16+16+2+2, UNIX 108+108 bytes
//!  TLVs: type (1 byte), length (2 bytes, big-endian), value; skipped
//! ```
//!
//! Outcomes, as [`super::framer`]'s: [`Decoded::NeedMore`] (with the total
//! the header needs so far, so a reader never reads past it: the client's
//! own bytes that follow stay in the socket for the worker),
//! [`Decoded::Invalid`] (as soon as a byte rules the header out: a plain
//! clamd command is refused at its first byte), [`Decoded::Done`].
//!
//! A LOCAL header is the balancer speaking for itself (HAProxy's health
//! checks with `check-send-proxy`): its address block is ignored, as the
//! specification says. Version 1 (the text form) is not accepted.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// The twelve bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family, length.
pub const FIXED: usize = 16;

/// Longest header accepted, in bytes: the fixed part and 1,024 bytes of
/// addresses and TLVs (IPv6 addresses take 36; HAProxy's optional TLVs,
/// such as a unique id or TLS details, fit many times over). The
/// specification allows 65,551; the supervisor reads no more than this.
pub const MAX_HEADER: usize = FIXED + 1024;

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The balancer itself (a health check): use the connection's own
    /// addresses.
    Local,
    /// On behalf of a client, whose addresses follow.
    Proxy,
}

/// Transport of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unspec,
    Stream,
    Dgram,
}

/// The address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// Family UNSPEC: no addresses (or a LOCAL header, whose block is
    /// ignored whatever its family).
    Unspec,
    /// IPv4 or IPv6: the client (`source`) and what it connected to.
    Inet {
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// Family UNIX (paths are not kept: nothing here uses them).
    Unix { transport: Transport },
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub command: Command,
    pub addresses: Addresses,
    /// Where the TLVs are in the input (skipped; checked to be well formed
    /// for a PROXY command).
    pub tlvs: Range<usize>,
}

impl Header {
    /// The client's address when this header carries one over TCP.
    pub fn tcp_source(&self) -> Option<SocketAddr> {
        match (self.command, self.addresses) {
            (
                Command::Proxy,
                Addresses::Inet {
                    transport: Transport::Stream,
                    source,
                    ..
                },
            ) => Some(source),
            _ => None,
        }
    }
}

/// Why the bytes are not an acceptable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No version 2 signature: a client that does not speak PROXY, or a
    /// balancer not set to `send-proxy-v2`.
    NotProxy,
    /// A version 1 (text) header.
    Version1,
    /// Signature right, version nibble not 2.
    Version(u8),
    /// Command nibble neither LOCAL nor PROXY.
    Command(u8),
    /// Family or transport nibble out of range.
    Family(u8),
    /// More than [`MAX_HEADER`] bytes.
    TooLong(usize),
    /// The length is too short for the family's addresses.
    ShortAddresses { family: u8, length: usize },
    /// A TLV runs past the end of the header.
    BadTlv { at: usize },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::NotProxy => f.write_str(
                "no PROXY protocol v2 signature (a client that does not speak PROXY, or a balancer without send-proxy-v2)",
            ),
            Invalid::Version1 => f.write_str(
                "a PROXY protocol v1 (text) header: only v2 is accepted (HAProxy: send-proxy-v2)",
            ),
            Invalid::Version(v) => write!(f, "PROXY protocol version {v}, not 2"),
            Invalid::Command(c) => write!(f, "PROXY command {c:#x} is neither LOCAL nor PROXY"),
            Invalid::Family(b) => write!(f, "PROXY address family and transport {b:#04x} unknown"),
            Invalid::TooLong(n) => write!(
                f,
                "PROXY header of {n} bytes, longer than the {MAX_HEADER} accepted"
            ),
            Invalid::ShortAddresses { family, length } => write!(
                f,
                "PROXY header length {length} too short for address family {family:#04x}"
            ),
            Invalid::BadTlv { at } => write!(f, "PROXY header TLV at byte {at} runs past its end"),
        }
    }
}

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The header is not complete: it needs at least this many bytes in
    /// all (more than it has, at most [`MAX_HEADER`]). Reading exactly up
    /// to it never consumes a byte past the header.
    NeedMore(usize),
    Invalid(Invalid),
    /// A whole header of `consumed` bytes; what follows is the client's.
    Done {
        header: Header,
        consumed: usize,
    },
}

const V1_PREFIX: &[u8] = b"PROXY ";

fn address_length(family: u8) -> usize {
    match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    }
}

fn transport(t: u8) -> Transport {
    match t {
        1 => Transport::Stream,
        2 => Transport::Dgram,
        _ => Transport::Unspec,
    }
}

/// Decodes the start of a connection. Deterministic and prefix-monotonic:
/// more bytes never turn `Invalid` into anything else, nor `Done` into
/// another header.
pub fn decode(buf: &[u8]) -> Decoded {
    let sig = buf.len().min(SIGNATURE.len());
    if buf[..sig] != SIGNATURE[..sig] {
        let v1 = buf.len().min(V1_PREFIX.len());
        return Decoded::Invalid(if sig > 0 && buf[..v1] == V1_PREFIX[..v1] {
            Invalid::Version1
        } else {
            Invalid::NotProxy
        });
    }
    if buf.len() < 13 {
        return Decoded::NeedMore(FIXED);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Decoded::Invalid(Invalid::Version(ver_cmd >> 4));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        c => return Decoded::Invalid(Invalid::Command(c)),
    };
    if buf.len() < 14 {
        return Decoded::NeedMore(FIXED);
    }
    let fam = buf[13];
    if fam >> 4 > 3 || fam & 0x0f > 2 {
        return Decoded::Invalid(Invalid::Family(fam));
    }
    if buf.len() < FIXED {
        return Decoded::NeedMore(FIXED);
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = FIXED + length;
    if total > MAX_HEADER {
        return Decoded::Invalid(Invalid::TooLong(total));
    }
    let (family, proto) = (fam >> 4, fam & 0x0f);
    if command == Command::Proxy && length < address_length(family) {
        return Decoded::Invalid(Invalid::ShortAddresses {
            family: fam,
            length,
        });
    }
    if buf.len() < total {
        return Decoded::NeedMore(total);
    }
    let block = &buf[FIXED..total];
    if command == Command::Local {
        // The block is discarded, family included (section 2.2).
        return Decoded::Done {
            header: Header {
                command,
                addresses: Addresses::Unspec,
                tlvs: total..total,
            },
            consumed: total,
        };
    }
    let addresses = match family {
        1 => {
            let src = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let dst = Ipv4Addr::new(block[4], block[5], block[6], block[7]);
            Addresses::Inet {
                transport: transport(proto),
                source: SocketAddr::new(IpAddr::V4(src), port(&block[8..10])),
                destination: SocketAddr::new(IpAddr::V4(dst), port(&block[10..12])),
            }
        }
        2 => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&block[0..16]);
            dst.copy_from_slice(&block[16..32]);
            Addresses::Inet {
                transport: transport(proto),
                source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(src)), port(&block[32..34])),
                destination: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(dst)), port(&block[34..36])),
            }
        }
        3 => Addresses::Unix {
            transport: transport(proto),
        },
        _ => Addresses::Unspec,
    };
    let tlvs = FIXED + address_length(family)..total;
    let mut at = tlvs.start;
    while at < total {
        if total - at < 3 {
            return Decoded::Invalid(Invalid::BadTlv { at });
        }
        let len = usize::from(u16::from_be_bytes([buf[at + 1], buf[at + 2]]));
        if total - at - 3 < len {
            return Decoded::Invalid(Invalid::BadTlv { at });
        }
        at += 3 + len;
    }
    Decoded::Done {
        header: Header {
            command,
            addresses,
            tlvs,
        },
        consumed: total,
    }
}

fn port(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The bytes of a header: `addresses` for `command`, then `tlvs` as given
/// (already encoded TLVs). What HAProxy's `send-proxy-v2` writes; the tests
/// and the fuzz target check [`decode`] against it. A LOCAL header is
/// written with family UNSPEC and no addresses, as HAProxy writes it; a
/// UNIX block with empty paths. `None` when the result would be longer
/// than [`MAX_HEADER`], or an `Inet` pair mixes IPv4 and IPv6.
pub fn encode(command: Command, addresses: &Addresses, tlvs: &[u8]) -> Option<Vec<u8>> {
    let mut out = SIGNATURE.to_vec();
    out.push(match command {
        Command::Local => 0x20,
        Command::Proxy => 0x21,
    });
    let t = |t: &Transport| match t {
        Transport::Unspec => 0u8,
        Transport::Stream => 1,
        Transport::Dgram => 2,
    };
    let mut block = Vec::new();
    let fam = match (command, addresses) {
        (Command::Local, _) | (_, Addresses::Unspec) => 0x00,
        (
            Command::Proxy,
            Addresses::Inet {
                transport,
                source,
                destination,
            },
        ) => match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                block.extend_from_slice(&source.port().to_be_bytes());
                block.extend_from_slice(&destination.port().to_be_bytes());
                0x10 | t(transport)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                block.extend_from_slice(&s.octets());
                block.extend_from_slice(&d.octets());
                block.extend_from_slice(&source.port().to_be_bytes());
                block.extend_from_slice(&destination.port().to_be_bytes());
                0x20 | t(transport)
            }
            _ => return None,
        },
        (Command::Proxy, Addresses::Unix { transport }) => {
            block.resize(216, 0);
            0x30 | t(transport)
        }
    };
    out.push(fam);
    let length = if command == Command::Local {
        0
    } else {
        block.len() + tlvs.len()
    };
    if FIXED + length > MAX_HEADER {
        return None;
    }
    out.extend_from_slice(&(length as u16).to_be_bytes());
    if command == Command::Proxy {
        out.extend_from_slice(&block);
        out.extend_from_slice(tlvs);
    }
    Some(out)
}

/// One TLV, encoded (for tests and the fuzz target).
pub fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: &str, dst: &str) -> Addresses {
        Addresses::Inet {
            transport: Transport::Stream,
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    /// What HAProxy 2.6 writes for a client at 192.0.2.7:40000 connecting
    /// to 198.51.100.1:3310 (send-proxy-v2, no TLV options), byte for byte.
    const HAPROXY_V4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
        0x0c, 192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x0c, 0xee,
    ];

    #[test]
    fn a_haproxy_ipv4_header_gives_the_client() {
        let d = decode(&HAPROXY_V4);
        let Decoded::Done { header, consumed } = d else {
            panic!("{d:?}")
        };
        assert_eq!(consumed, 28);
        assert_eq!(header.addresses, v4("192.0.2.7:40000", "198.51.100.1:3310"));
        assert_eq!(
            header.tcp_source(),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        assert_eq!(
            encode(Command::Proxy, &header.addresses, &[]).unwrap(),
            HAPROXY_V4
        );
    }

    #[test]
    fn the_client_bytes_after_the_header_are_not_consumed() {
        let mut bytes = HAPROXY_V4.to_vec();
        bytes.extend_from_slice(b"zPING\0");
        assert!(matches!(decode(&bytes), Decoded::Done { consumed: 28, .. }));
    }

    #[test]
    fn every_prefix_asks_for_no_more_than_the_header() {
        for k in 0..HAPROXY_V4.len() {
            match decode(&HAPROXY_V4[..k]) {
                Decoded::NeedMore(n) => assert!(n > k && n <= 28, "{k}: {n}"),
                other => panic!("{k}: {other:?}"),
            }
        }
    }

    #[test]
    fn ipv6_unix_and_unspec_blocks() {
        let a = Addresses::Inet {
            transport: Transport::Stream,
            source: "[2001:db8::7]:1".parse().unwrap(),
            destination: "[2001:db8::1]:3310".parse().unwrap(),
        };
        let bytes = encode(Command::Proxy, &a, &[]).unwrap();
        assert_eq!(bytes.len(), 16 + 36);
        let Decoded::Done { header, .. } = decode(&bytes) else {
            panic!()
        };
        assert_eq!(header.addresses, a);
        for a in [
            Addresses::Unix {
                transport: Transport::Stream,
            },
            Addresses::Unspec,
            Addresses::Inet {
                transport: Transport::Dgram,
                source: "192.0.2.7:53".parse().unwrap(),
                destination: "192.0.2.1:53".parse().unwrap(),
            },
        ] {
            let bytes = encode(Command::Proxy, &a, &[]).unwrap();
            let Decoded::Done { header, .. } = decode(&bytes) else {
                panic!("{a:?}")
            };
            assert_eq!(header.addresses, a);
            assert_eq!(header.tcp_source(), None, "not a TCP client: {a:?}");
        }
    }

    #[test]
    fn local_ignores_its_block() {
        let bytes = encode(Command::Local, &Addresses::Unspec, &[]).unwrap();
        assert_eq!(bytes[12..16], [0x20, 0x00, 0x00, 0x00]);
        let Decoded::Done { header, consumed } = decode(&bytes) else {
            panic!()
        };
        assert_eq!(
            (header.command, header.addresses, consumed),
            (Command::Local, Addresses::Unspec, 16)
        );
        assert_eq!(header.tcp_source(), None);
        // A LOCAL header that carries addresses anyway: skipped whole.
        let mut with = HAPROXY_V4.to_vec();
        with[12] = 0x20;
        let Decoded::Done { header, consumed } = decode(&with) else {
            panic!()
        };
        assert_eq!((header.addresses, consumed), (Addresses::Unspec, 28));
    }

    #[test]
    fn tlvs_are_skipped_but_must_be_whole() {
        let mut tlvs = tlv(0x05, b"unique-id");
        tlvs.extend_from_slice(&tlv(0x04, b""));
        let a = v4("192.0.2.7:1", "192.0.2.1:2");
        let bytes = encode(Command::Proxy, &a, &tlvs).unwrap();
        let Decoded::Done { header, consumed } = decode(&bytes) else {
            panic!()
        };
        assert_eq!(consumed, bytes.len());
        assert_eq!(&bytes[header.tlvs.clone()], &tlvs[..]);
        // A TLV that claims more than the header holds.
        let mut bad = tlv(0x05, b"abc");
        bad[2] = 9;
        let bytes = encode(Command::Proxy, &a, &bad).unwrap();
        assert_eq!(decode(&bytes), Decoded::Invalid(Invalid::BadTlv { at: 28 }));
        // Two stray bytes: not even a TLV header.
        let bytes = encode(Command::Proxy, &a, &[0, 0]).unwrap();
        assert_eq!(decode(&bytes), Decoded::Invalid(Invalid::BadTlv { at: 28 }));
    }

    #[test]
    fn what_is_refused_and_why() {
        assert_eq!(decode(b"zPING\0"), Decoded::Invalid(Invalid::NotProxy));
        assert_eq!(decode(b"z"), Decoded::Invalid(Invalid::NotProxy));
        assert_eq!(decode(b"PROX"), Decoded::Invalid(Invalid::Version1));
        assert_eq!(
            decode(b"PROXY TCP4 192.0.2.7 192.0.2.1 1 2\r\n"),
            Decoded::Invalid(Invalid::Version1)
        );
        assert_eq!(decode(b""), Decoded::NeedMore(16));
        let mut b = HAPROXY_V4;
        b[12] = 0x11;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::Version(1)));
        b[12] = 0x22;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::Command(2)));
        let mut b = HAPROXY_V4;
        b[13] = 0x41;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::Family(0x41)));
        b[13] = 0x13;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::Family(0x13)));
        let mut b = HAPROXY_V4;
        b[15] = 11;
        assert_eq!(
            decode(&b),
            Decoded::Invalid(Invalid::ShortAddresses {
                family: 0x11,
                length: 11
            })
        );
        let mut b = HAPROXY_V4.to_vec();
        b[14] = 0x04;
        b[15] = 0x01;
        assert_eq!(decode(&b), Decoded::Invalid(Invalid::TooLong(16 + 1025)));
        // Refused from the fixed part alone: nothing more is read.
        assert_eq!(
            decode(&b[..16]),
            Decoded::Invalid(Invalid::TooLong(16 + 1025))
        );
        for i in [
            Invalid::NotProxy,
            Invalid::Version1,
            Invalid::TooLong(2000),
            Invalid::BadTlv { at: 28 },
        ] {
            assert!(!i.to_string().is_empty());
        }
    }

    #[test]
    fn the_longest_header_is_accepted_and_one_more_byte_is_not() {
        let a = v4("192.0.2.7:1", "192.0.2.1:2");
        let fill = MAX_HEADER - 28 - 3;
        let bytes = encode(Command::Proxy, &a, &tlv(0xEE, &vec![7; fill])).unwrap();
        assert_eq!(bytes.len(), MAX_HEADER);
        assert!(matches!(decode(&bytes), Decoded::Done { consumed, .. } if consumed == MAX_HEADER));
        assert_eq!(
            encode(Command::Proxy, &a, &tlv(0xEE, &vec![7; fill + 1])),
            None
        );
    }
}
