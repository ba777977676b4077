//! Byte sizes written as a number of bytes or a string with a K/M/G suffix
//! (powers of 1024, like clamd.conf: `25M`, `"100M"`, `4096`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let (digits, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let mult = match c.to_ascii_uppercase() {
                    'K' => 1u64 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    _ => {
                        return Err(format!(
                            "unknown size suffix {c:?} in {text:?}: use K, M or G"
                        ))
                    }
                };
                (&t[..i], mult)
            }
            _ => (t, 1),
        };
        let n: u64 = digits.trim().parse().map_err(|_| {
            format!(
                "{text:?} is not a size: write bytes (4096) or a number with K, M or G (\"25M\")"
            )
        })?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v != 0 && v % (1 << 30) == 0 {
            write!(f, "{}G", v >> 30)
        } else if v != 0 && v % (1 << 20) == 0 {
            write!(f, "{}M", v >> 20)
        } else if v != 0 && v % (1 << 10) == 0 {
            write!(f, "{}K", v >> 10)
        } else {
            write!(f, "{v}")
        }
    }
}

/// Written back as the string [`Display`](fmt::Display) gives (`"25M"`),
/// which [`ByteSize::parse`] reads back to the same value.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string like \"25M\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(ByteSize::parse("25M").unwrap().0, 25 << 20);
        assert_eq!(ByteSize::parse("4k").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("1G").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("123").unwrap().0, 123);
        assert!(ByteSize::parse("12X").is_err());
        assert!(ByteSize::parse("M").is_err());
        assert!(ByteSize::parse("99999999999999999G").is_err());
        assert_eq!(ByteSize(25 << 20).to_string(), "25M");
    }
}
