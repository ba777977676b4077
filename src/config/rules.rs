//! Rules of single keys, checked while the file is read: a value out of
//! range, an unknown choice or an unreadable address is a deserialization
//! error, which carries the place of the value in the file (see
//! [`super::Config::parse`]).
//!
//! Numbers keep their plain types in [`super::Config`]; each field names its
//! rule (`#[serde(deserialize_with = "rules::seconds::<1, 86_400, _, _>")]`),
//! so the struct is the reference of every bound.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::ByteSize;

/// What a bounded number counts, for its error message.
#[derive(Clone, Copy)]
enum Unit {
    Count,
    Seconds,
    Milliseconds,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Count => "",
            Unit::Seconds => " seconds",
            Unit::Milliseconds => " milliseconds",
        }
    }
}

/// The rule a bounded number states in its error.
fn range_rule(min: u64, max: u64, unit: Unit, max_of_type: u64) -> String {
    let u = unit.suffix();
    match (min, max) {
        (_, m) if m == max_of_type => format!("must be at least {min}{u}"),
        (0, _) if !matches!(unit, Unit::Count) => {
            format!("must be between 0 (off) and {max}{u}")
        }
        _ => format!("must be between {min} and {max}{u}"),
    }
}

/// Reads a whole number and checks it is within `min..=max`.
fn bounded<'de, D, T>(d: D, min: u64, max: u64, unit: Unit) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    struct V<T> {
        rule: String,
        min: u64,
        max: u64,
        ty: PhantomData<T>,
    }
    impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number ({})", self.rule)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("{}, not {v}", self.rule))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            if !(self.min..=self.max).contains(&v) {
                return Err(E::custom(format!("{}, not {v}", self.rule)));
            }
            T::try_from(v).map_err(|_| E::custom(format!("{}, not {v}", self.rule)))
        }
    }
    let max = max.min(T::MAX);
    d.deserialize_any(V {
        rule: range_rule(min, max, unit, T::MAX),
        min,
        max,
        ty: PhantomData,
    })
}

/// The integer types of configuration values.
pub trait Bounded {
    const MAX: u64;
}
impl Bounded for u8 {
    const MAX: u64 = u8::MAX as u64;
}
impl Bounded for u32 {
    const MAX: u64 = u32::MAX as u64;
}
impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

/// A count within `MIN..=MAX` (`MAX` = the type's largest: at least `MIN`).
pub fn count<'de, const MIN: u64, const MAX: u64, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    bounded(d, MIN, MAX, Unit::Count)
}

/// A count of at least `MIN`.
pub fn at_least<'de, const MIN: u64, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    bounded(d, MIN, u64::MAX, Unit::Count)
}

/// Seconds within `MIN..=MAX`; with `MIN` 0 the message says 0 is off.
pub fn seconds<'de, const MIN: u64, const MAX: u64, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    bounded(d, MIN, MAX, Unit::Seconds)
}

/// Milliseconds within `MIN..=MAX`.
pub fn millis<'de, const MIN: u64, const MAX: u64, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    bounded(d, MIN, MAX, Unit::Milliseconds)
}

/// A size (bytes or "25M") within `MIN..=MAX` bytes.
pub fn size<'de, const MIN: u64, const MAX: u64, D>(d: D) -> Result<ByteSize, D::Error>
where
    D: Deserializer<'de>,
{
    let v = ByteSize::deserialize(d)?;
    if (MIN..=MAX).contains(&v.0) {
        return Ok(v);
    }
    let rule = if MAX == u64::MAX {
        format!("must be at least {}", ByteSize(MIN))
    } else {
        format!(
            "must be between {} and {} bytes",
            ByteSize(MIN),
            ByteSize(MAX)
        )
    };
    Err(de::Error::custom(format!("{rule}, not {v}")))
}

/// A string that must be one of a few words: an enum with
/// `#[serde(rename_all)]` whose error lists them.
macro_rules! choice {
    (
        $(#[$doc:meta])*
        pub enum $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $word:literal ),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $( $(#[$vdoc])* $variant ),+ }

        impl $name {
            /// The word the configuration file uses.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $word ),+ }
            }

            /// Every word, in order.
            pub const WORDS: &'static [&'static str] = &[ $( $word ),+ ];
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $word => Ok($name::$variant), )+
                    _ => Err($crate::config::rules::not_a_choice(s, $name::WORDS)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use choice;

/// The error of a word that is none of `words`.
pub fn not_a_choice(s: &str, words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    let list = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    format!("{s:?} is not a choice: use {list}")
}

/// Parses one network of an allow-list: "192.0.2.0/24", or an address (a
/// network of one).
pub fn parse_net(n: &str) -> Result<ipnet::IpNet, String> {
    n.parse::<ipnet::IpNet>()
        .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{n:?} is not a network like \"127.0.0.0/8\" or an address"))
}

/// Parses one listen address.
pub fn parse_addr(a: &str) -> Result<SocketAddr, String> {
    a.parse::<SocketAddr>()
        .map_err(|_| format!("{a:?} is not an address like \"127.0.0.1:3310\" or \"[::1]:3310\""))
}

/// A list of strings, each parsed by `parse`.
fn list<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T>(fn(&str) -> Result<T, String>);
    impl<'de, T> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push((self.0)(&s).map_err(de::Error::custom)?);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(parse))
}

/// An allow-list of networks (`listen.tcp-allow` and its kin).
pub fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    list(d, parse_net)
}

/// A list of listen addresses (`listen.tcp`, `listen.tcp-proxy`).
pub fn addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    list(d, parse_addr)
}

/// Writes a list as strings, which [`nets`] and [`addrs`] read back.
pub fn as_strings<S: Serializer, T: fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    let strings: Vec<String> = v.iter().map(ToString::to_string).collect();
    strings.serialize(s)
}

/// Permission bits of a socket file, written as an octal string ("0660").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, String> {
        let m = text.trim_start_matches("0o");
        u32::from_str_radix(m, 8)
            .ok()
            .filter(|v| *v <= 0o777)
            .map(Mode)
            .ok_or_else(|| format!("{text:?} is not an octal mode like \"0660\""))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mode::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_sentences() {
        assert_eq!(
            range_rule(1, 1024, Unit::Count, u32::MAX.into()),
            "must be between 1 and 1024"
        );
        assert_eq!(
            range_rule(1, u32::MAX.into(), Unit::Count, u32::MAX.into()),
            "must be at least 1"
        );
        assert_eq!(
            range_rule(0, 86_400, Unit::Seconds, u64::MAX),
            "must be between 0 (off) and 86400 seconds"
        );
        assert_eq!(
            not_a_choice("x", &["a", "b", "c"]),
            "\"x\" is not a choice: use \"a\", \"b\" or \"c\""
        );
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("0660"), Ok(Mode(0o660)));
        assert_eq!(Mode::parse("0o777"), Ok(Mode(0o777)));
        assert!(Mode::parse("rw").is_err());
        assert!(Mode::parse("1000").is_err());
        assert_eq!(Mode(0o660).to_string(), "0660");
    }
}
