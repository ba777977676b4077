//! Lengths of time written as seconds or a string with a unit (`"7d"`,
//! `"36h"`, `"90m"`, `"45s"`, `3600`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A length of time in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub u64);

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        let t = text.trim();
        let (digits, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let mult = match c.to_ascii_lowercase() {
                    's' => 1u64,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    _ => {
                        return Err(format!(
                            "unknown unit {c:?} in {text:?}: use s, m, h or d (\"7d\")"
                        ))
                    }
                };
                (&t[..i], mult)
            }
            _ => (t, 1),
        };
        let n: u64 = digits.trim().parse().map_err(|_| {
            format!(
                "{text:?} is not a length of time: write seconds (3600) or a number with s, m, h or d (\"7d\")"
            )
        })?;
        n.checked_mul(mult)
            .map(Span)
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v != 0 && v % 86_400 == 0 {
            write!(f, "{}d", v / 86_400)
        } else if v != 0 && v % 3600 == 0 {
            write!(f, "{}h", v / 3600)
        } else if v != 0 && v % 60 == 0 {
            write!(f, "{}m", v / 60)
        } else {
            write!(f, "{v}s")
        }
    }
}

/// Written back as the string [`Display`](fmt::Display) gives (`"7d"`),
/// which [`Span::parse`] reads back to the same value.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, or a string like \"7d\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                u64::try_from(v)
                    .map(Span)
                    .map_err(|_| E::custom("a length of time cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Ok(Span(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(Span::parse("7d").unwrap().0, 7 * 86_400);
        assert_eq!(Span::parse("36h").unwrap().0, 36 * 3600);
        assert_eq!(Span::parse("90M").unwrap().0, 5400);
        assert_eq!(Span::parse("45s").unwrap().0, 45);
        assert_eq!(Span::parse("0").unwrap().0, 0);
        assert!(Span::parse("7w").is_err());
        assert!(Span::parse("d").is_err());
        assert!(Span::parse("99999999999999999999d").is_err());
        assert_eq!(Span(7 * 86_400).to_string(), "7d");
        assert_eq!(Span(5400).to_string(), "90m");
        assert_eq!(Span(61).to_string(), "61s");
        assert_eq!(Span(0).to_string(), "0s");
    }
}
