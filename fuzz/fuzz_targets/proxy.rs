//! The PROXY protocol v2 decoder (`proto::proxy`), the one decoder the root
//! supervisor runs on bytes from the network.
//!
//! Input byte 0 picks a mode:
//! * *raw* (even): the rest is the start of a connection, decoded as is;
//! * *structured* (odd): the rest describes a header (command, family,
//!   addresses, TLVs, trailing client bytes), which the encoder writes and
//!   the decoder must read back exactly.
//!
//! Properties, on every input:
//! * bounds: `Done` consumes at least 16 and at most `MAX_HEADER` bytes and
//!   no more than it was given; `NeedMore(n)` asks for more than it has and
//!   at most `MAX_HEADER`; the TLV range lies inside the header;
//! * prefix monotonicity: every shorter prefix of a `Done` header answers
//!   `NeedMore(m)` with `m` no further than the header's end (a reader that
//!   reads exactly up to `m` never consumes a client byte), and the header
//!   alone decodes the same; an `Invalid` prefix stays `Invalid` with more
//!   bytes;
//! * round trip: a decoded PROXY header re-encoded with its own TLV bytes
//!   decodes to the same header and length; a LOCAL one re-encodes to 16
//!   bytes that decode as LOCAL;
//! * structured: `decode(encode(h) ++ tail)` is `Done` with `h` and
//!   consumes exactly the encoded length.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clamsentry::proto::proxy::{
    decode, encode, tlv, Addresses, Command, Decoded, Transport, FIXED, MAX_HEADER,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(rest);
    } else if let Some(bytes) = structured(rest) {
        check(&bytes);
    }
});

fn check(input: &[u8]) {
    let d = decode(input);
    match &d {
        Decoded::NeedMore(n) => {
            assert!(*n > input.len() && *n <= MAX_HEADER, "{n} for {}", input.len());
        }
        Decoded::Invalid(_) => {
            let mut more = input.to_vec();
            more.extend_from_slice(b"\0\r\nQUIT\n!");
            assert!(matches!(decode(&more), Decoded::Invalid(_)), "invalid, then not");
        }
        Decoded::Done { header, consumed } => {
            let n = *consumed;
            assert!((FIXED..=MAX_HEADER).contains(&n) && n <= input.len());
            assert!(header.tlvs.start <= header.tlvs.end && header.tlvs.end <= n);
            assert_eq!(decode(&input[..n]), d, "the header alone");
            for k in 0..n {
                match decode(&input[..k]) {
                    Decoded::NeedMore(m) => assert!(m > k && m <= n, "prefix {k}: {m} > {n}"),
                    other => panic!("prefix {k} of a header: {other:?}"),
                }
            }
            let again = encode(header.command, &header.addresses, &input[header.tlvs.clone()])
                .expect("a decoded header encodes");
            match decode(&again) {
                Decoded::Done {
                    header: h2,
                    consumed: c2,
                } => {
                    assert_eq!(h2.command, header.command);
                    assert_eq!(h2.addresses, header.addresses);
                    assert_eq!(c2, again.len());
                    if header.command == Command::Proxy {
                        assert_eq!(c2, n, "same length");
                        assert_eq!(&again[h2.tlvs.clone()], &input[header.tlvs.clone()]);
                    } else {
                        assert_eq!(c2, FIXED);
                    }
                }
                other => panic!("re-encoded header: {other:?}"),
            }
        }
    }
}

/// A header described by the input, encoded, then the rest as client bytes.
fn structured(b: &[u8]) -> Option<Vec<u8>> {
    let (&sel, b) = b.split_first()?;
    let command = if sel & 1 == 0 {
        Command::Proxy
    } else {
        Command::Local
    };
    let transport = match (sel >> 1) & 3 {
        0 => Transport::Unspec,
        1 => Transport::Stream,
        _ => Transport::Dgram,
    };
    let (addresses, b) = match (sel >> 3) & 3 {
        0 => (Addresses::Unspec, b),
        1 => {
            let a = b.get(..12)?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Addresses::Inet {
                    transport,
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                },
                &b[12..],
            )
        }
        2 => {
            let a = b.get(..36)?;
            let ip = |o: usize| {
                let mut x = [0u8; 16];
                x.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(x))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Addresses::Inet {
                    transport,
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                },
                &b[36..],
            )
        }
        _ => (Addresses::Unix { transport }, b),
    };
    // TLVs: [count], then per TLV [type][len] and len bytes of value.
    let (&count, mut b) = b.split_first()?;
    let mut tlvs = Vec::new();
    for _ in 0..count % 8 {
        let (&[kind, len], rest) = b.split_first_chunk::<2>()?;
        let value = rest.get(..usize::from(len))?;
        tlvs.extend_from_slice(&tlv(kind, value));
        b = &rest[usize::from(len)..];
    }
    let header = encode(command, &addresses, &tlvs)?;
    let Decoded::Done {
        header: h,
        consumed,
    } = decode(&[header.as_slice(), b].concat())
    else {
        panic!("an encoded header does not decode: {header:?}");
    };
    assert_eq!(consumed, header.len());
    assert_eq!(h.command, command);
    if command == Command::Proxy {
        assert_eq!(h.addresses, addresses);
        assert_eq!(&header[h.tlvs.clone()], &tlvs[..]);
    } else {
        assert_eq!(h.addresses, Addresses::Unspec);
    }
    Some([header.as_slice(), b].concat())
}
