//! Command words, matched exactly as clamd's `parse_command` does, plus
//! clamsentry's own `MAINT` (not clamd's: it is outside clamd's table, so
//! VERSIONCOMMANDS, which clients compare with clamd's, never lists it).

/// Every command clamd 1.4.6 knows, plus `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Scan,
    Quit,
    Reload,
    Ping,
    ContScan,
    VersionCommands,
    Version,
    End,
    Shutdown,
    MultiScan,
    Fildes,
    Stats,
    IdSession,
    Instream,
    DetStatsClear,
    DetStats,
    AllMatchScan,
    /// clamsentry's own: `MAINT ON`, `MAINT OFF`, `MAINT` (what the HAProxy
    /// agent says about the node; administrators on a Unix socket only).
    Maint,
    Unknown,
}

struct Entry {
    word: &'static [u8],
    kind: CommandKind,
    needs_arg: bool,
    legacy_ok: bool,
}

const fn e(word: &'static [u8], kind: CommandKind, needs_arg: bool, legacy_ok: bool) -> Entry {
    Entry {
        word,
        kind,
        needs_arg,
        legacy_ok,
    }
}

/// clamd's command table, in clamd's order: the order decides prefix matches
/// (VERSIONCOMMANDS before VERSION, DETSTATSCLEAR before DETSTATS) and is the
/// order VERSIONCOMMANDS prints.
const TABLE: &[Entry] = &[
    e(b"SCAN", CommandKind::Scan, true, true),
    e(b"QUIT", CommandKind::Quit, false, true),
    e(b"RELOAD", CommandKind::Reload, false, true),
    e(b"PING", CommandKind::Ping, false, true),
    e(b"CONTSCAN", CommandKind::ContScan, true, true),
    e(
        b"VERSIONCOMMANDS",
        CommandKind::VersionCommands,
        false,
        false,
    ),
    e(b"VERSION", CommandKind::Version, false, true),
    e(b"END", CommandKind::End, false, false),
    e(b"SHUTDOWN", CommandKind::Shutdown, false, true),
    e(b"MULTISCAN", CommandKind::MultiScan, true, true),
    e(b"FILDES", CommandKind::Fildes, false, true),
    e(b"STATS", CommandKind::Stats, false, false),
    e(b"IDSESSION", CommandKind::IdSession, false, false),
    e(b"INSTREAM", CommandKind::Instream, false, false),
    e(b"DETSTATSCLEAR", CommandKind::DetStatsClear, false, true),
    e(b"DETSTATS", CommandKind::DetStats, false, true),
    e(b"ALLMATCHSCAN", CommandKind::AllMatchScan, true, false),
];

impl CommandKind {
    /// The protocol word (QUIT and SHUTDOWN keep their own words for logs).
    pub fn word(self) -> &'static str {
        if self == CommandKind::Maint {
            return "MAINT";
        }
        TABLE
            .iter()
            .find(|entry| entry.kind == self)
            .map(|entry| std::str::from_utf8(entry.word).unwrap_or("UNKNOWN"))
            .unwrap_or("UNKNOWN")
    }

    /// All command words in clamd's order, as VERSIONCOMMANDS lists them.
    pub fn all() -> impl Iterator<Item = CommandKind> {
        TABLE.iter().map(|entry| entry.kind)
    }

    /// Commands that take a path argument.
    pub fn is_path_scan(self) -> bool {
        matches!(
            self,
            CommandKind::Scan
                | CommandKind::ContScan
                | CommandKind::MultiScan
                | CommandKind::AllMatchScan
        )
    }

    /// Commands clamd accepts inside IDSESSION (`execute_or_dispatch_command`).
    pub fn allowed_in_session(self) -> bool {
        matches!(
            self,
            CommandKind::Fildes
                | CommandKind::Scan
                | CommandKind::End
                | CommandKind::Instream
                | CommandKind::Version
                | CommandKind::Ping
                | CommandKind::Stats
                | CommandKind::VersionCommands
        )
    }
}

/// A parsed command: its kind and, for path commands, the raw path bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub kind: CommandKind,
    pub arg: Option<Vec<u8>>,
}

impl Command {
    pub fn unknown() -> Self {
        Command {
            kind: CommandKind::Unknown,
            arg: None,
        }
    }

    /// The command text that [`parse`] turns back into this command:
    /// the word, then for path commands one space and the argument.
    /// `None` for [`CommandKind::Unknown`], which has no text.
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.kind == CommandKind::Unknown {
            return None;
        }
        let mut out = self.kind.word().as_bytes().to_vec();
        if let Some(arg) = &self.arg {
            out.push(b' ');
            out.extend_from_slice(arg);
        }
        Some(out)
    }
}

/// Parses the text of one command (framing already removed).
///
/// Like clamd, the text is treated as a C string: it ends at its first NUL.
/// `MAINT` is matched after clamd's table (no clamd word starts with it):
/// alone, or with one space and an argument the worker checks.
pub fn parse(text: &[u8], legacy: bool) -> Command {
    let text = match text.iter().position(|&b| b == 0) {
        Some(nul) => &text[..nul],
        None => text,
    };
    if text == b"MAINT" {
        return Command {
            kind: CommandKind::Maint,
            arg: None,
        };
    }
    if let Some(arg) = text.strip_prefix(b"MAINT ") {
        return Command {
            kind: CommandKind::Maint,
            arg: Some(arg.to_vec()),
        };
    }
    for entry in TABLE {
        if !text.starts_with(entry.word) {
            continue;
        }
        let rest = &text[entry.word.len()..];
        let arg = if entry.needs_arg {
            if rest.is_empty() {
                return Command::unknown();
            }
            // clamd skips exactly one separator byte, whatever it is.
            Some(rest[1..].to_vec())
        } else {
            if !rest.is_empty() {
                return Command::unknown();
            }
            None
        };
        if legacy && !entry.legacy_ok {
            return Command::unknown();
        }
        return Command {
            kind: entry.kind,
            arg,
        };
    }
    Command::unknown()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &[u8]) -> CommandKind {
        parse(text, false).kind
    }

    #[test]
    fn exact_words() {
        assert_eq!(kind(b"PING"), CommandKind::Ping);
        assert_eq!(kind(b"VERSION"), CommandKind::Version);
        assert_eq!(kind(b"VERSIONCOMMANDS"), CommandKind::VersionCommands);
        assert_eq!(kind(b"DETSTATSCLEAR"), CommandKind::DetStatsClear);
        assert_eq!(kind(b"DETSTATS"), CommandKind::DetStats);
        assert_eq!(kind(b"QUIT"), CommandKind::Quit);
    }

    #[test]
    fn trailing_garbage_is_unknown() {
        assert_eq!(kind(b"PINGx"), CommandKind::Unknown);
        assert_eq!(kind(b"PING "), CommandKind::Unknown);
        assert_eq!(kind(b"STATSX"), CommandKind::Unknown);
    }

    #[test]
    fn argument_skips_one_byte() {
        let c = parse(b"SCAN /tmp/x", false);
        assert_eq!(c.kind, CommandKind::Scan);
        assert_eq!(c.arg.as_deref(), Some(&b"/tmp/x"[..]));
        let c = parse(b"SCANX/tmp", false);
        assert_eq!(c.arg.as_deref(), Some(&b"/tmp"[..]));
        let c = parse(b"SCAN ", false);
        assert_eq!(c.arg.as_deref(), Some(&b""[..]));
        assert_eq!(kind(b"SCAN"), CommandKind::Unknown);
    }

    #[test]
    fn legacy_rules() {
        assert_eq!(parse(b"STATS", true).kind, CommandKind::Unknown);
        assert_eq!(parse(b"INSTREAM", true).kind, CommandKind::Unknown);
        assert_eq!(parse(b"ALLMATCHSCAN /x", true).kind, CommandKind::Unknown);
        assert_eq!(parse(b"PING", true).kind, CommandKind::Ping);
        assert_eq!(parse(b"FILDES", true).kind, CommandKind::Fildes);
    }

    #[test]
    fn embedded_nul_ends_the_text() {
        assert_eq!(kind(b"PING\0garbage"), CommandKind::Ping);
    }

    #[test]
    fn removed_commands_are_unknown() {
        for w in [&b"STREAM"[..], b"RAWSCAN /x", b"SESSION", b"", b"ping"] {
            assert_eq!(kind(w), CommandKind::Unknown, "{w:?}");
        }
    }

    #[test]
    fn words_round_trip() {
        for k in CommandKind::all() {
            assert_eq!(
                parse(k.word().as_bytes(), false).kind == k,
                !k.is_path_scan()
            );
        }
    }

    #[test]
    fn maint_is_ours_and_not_listed() {
        assert_eq!(parse(b"MAINT", false).kind, CommandKind::Maint);
        assert_eq!(parse(b"MAINT", true).kind, CommandKind::Maint);
        let on = parse(b"MAINT ON", false);
        assert_eq!(
            (on.kind, on.arg.as_deref()),
            (CommandKind::Maint, Some(&b"ON"[..]))
        );
        assert_eq!(parse(b"MAINT OFF", false).arg.as_deref(), Some(&b"OFF"[..]));
        assert_eq!(parse(b"MAINTX", false).kind, CommandKind::Unknown);
        assert_eq!(parse(b"MAINT\tON", false).kind, CommandKind::Unknown);
        assert!(!CommandKind::all().any(|k| k == CommandKind::Maint));
        assert_eq!(CommandKind::Maint.word(), "MAINT");
        assert!(!CommandKind::Maint.allowed_in_session());
        assert_eq!(parse(&on.encode().unwrap(), false), on);
    }

    #[test]
    fn encode_round_trips() {
        for k in CommandKind::all() {
            let cmd = Command {
                kind: k,
                arg: k.is_path_scan().then(|| b"/tmp/a b".to_vec()),
            };
            assert_eq!(parse(&cmd.encode().unwrap(), false), cmd);
        }
        assert_eq!(Command::unknown().encode(), None);
    }
}
