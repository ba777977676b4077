//! Where in a configuration file a key or value is, from the spans the TOML
//! parser keeps: errors name `file:line:column` and the dotted key.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: usize,
    pub column: usize,
}

impl Place {
    /// The place of byte `offset` of `text` (clamped to the text).
    pub fn of(text: &str, offset: usize) -> Place {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Place {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A parser's message on one line ("expected `.`, `]`" and the like are
/// joined with "; ").
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The dotted key whose key or value holds byte `offset` (the innermost
/// one: `service.sockets.x` inside an inline table); `None` when the text
/// is not TOML or the offset is in no key.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    in_table(doc.as_table(), offset, &mut path).then(|| path.join("."))
}

/// Where the value of dotted `key` is set in `text`; `None` when the file
/// does not set it (the default applies).
pub fn value_of(text: &str, key: &str) -> Option<Place> {
    let doc = ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    for part in key.split('.') {
        item = item.get(part)?;
    }
    let span = match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        _ => None,
    }?;
    Some(Place::of(text, span.start))
}

fn holds(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

/// Pushes onto `path` the keys down to the one that holds `offset`.
fn in_table(table: &Table, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        path.push(key.to_string());
        let found = match item {
            Item::Value(v) => holds(k.span(), offset) || in_value(v, offset, path),
            Item::Table(t) => in_table(t, offset, path) || holds(t.span(), offset),
            Item::ArrayOfTables(a) => a.iter().any(|t| in_table(t, offset, path)),
            Item::None => false,
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn in_value(value: &Value, offset: usize, path: &mut Vec<String>) -> bool {
    if let Value::InlineTable(t) = value {
        for (key, v) in t.iter() {
            path.push(key.to_string());
            let k_span = t.key(key).and_then(|k| k.span());
            if holds(k_span, offset) || in_value(v, offset, path) {
                return true;
            }
            path.pop();
        }
    }
    holds(value.span(), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_count_characters_from_one() {
        let text = "a = 1\n[é]\nb = 2\n";
        assert_eq!(Place::of(text, 0), Place { line: 1, column: 1 });
        assert_eq!(Place::of(text, 4).to_string(), "1:5");
        assert_eq!(Place::of(text, text.find("b").unwrap()).to_string(), "3:1");
        assert_eq!(Place::of(text, 9).to_string(), "2:3");
        assert_eq!(Place::of(text, 1000).to_string(), "4:1");
    }

    #[test]
    fn keys_and_values_are_found() {
        let text = "[limits]\nmax-threads = 0\n[policy.unix]\ncommands = [\"PING\", \"x\"]\n[service]\nsockets = { a = \"udp\" }\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(key_at(text, at("0")).as_deref(), Some("limits.max-threads"));
        assert_eq!(
            key_at(text, at("max-")).as_deref(),
            Some("limits.max-threads")
        );
        assert_eq!(
            key_at(text, at("\"x\"")).as_deref(),
            Some("policy.unix.commands")
        );
        assert_eq!(
            key_at(text, at("\"udp\"")).as_deref(),
            Some("service.sockets.a")
        );
        assert_eq!(key_at("a = [", 0), None);
        assert_eq!(
            value_of(text, "policy.unix.commands").map(|p| p.to_string()),
            Some("4:12".into())
        );
        assert_eq!(value_of(text, "limits.max-queue"), None);
    }
}
