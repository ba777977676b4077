//! clamd.conf as a configuration: read exactly as clamd 1.4 reads it
//! (`common/optparser.c`), then translated to a [`Config`] with a note for
//! everything an operator should know about the translation.
//!
//! # Reading (as clamd)
//!
//! One `Option value` per line; leading blanks skipped; lines of two
//! characters or less and lines starting with `#` ignored (a `#` later in a
//! line is part of the value); option names are case-sensitive, and clamd
//! also takes an option's long command-line name (`datadir /x`); a value in
//! `"…"` loses the quotes (up to the last `"`); trailing blanks are cut
//! (a `\r` is not: a CRLF file fails as it does in clamd). Booleans are
//! `yes/no/true/false/1/0` in any case; numbers are digits; sizes are digits
//! with `K`, `M` or `G` (any case, read as by `strtoll` with base 0, so a
//! leading `0` means octal), `0` meaning no limit. A single-valued option
//! given twice keeps its first value; `TCPAddr`, `ExcludePath`,
//! `ExcludePUA`, `IncludePUA` and the `OnAccess…` lists keep all. A line
//! starting with `Example` refuses the file; so does an unknown option or a
//! malformed value, with clamd's message. Deprecated options are ignored
//! with a note, as clamd ignores them with a warning. The command line of
//! `clamd` is read into the same options first, and wins, as in clamd.
//!
//! One difference: a line longer than 1023 bytes is refused (clamd would
//! read it in 1023-byte pieces, each taken as a line of its own).
//!
//! # Translating
//!
//! Every option in [`table::OPTIONS`] is mapped, refused (when it asks for
//! something clamsentry does not do) or only noted; see the table and
//! README's "Coming from clamd". Options clamd.conf does not set keep
//! clamsentry's defaults, which equal clamd's compiled-in defaults except
//! where README says otherwise — the differences that matter for a
//! clamd.conf are noted: the Unix socket's mode when `LocalSocketMode` is
//! absent (0660, not 0666), the command profiles (TCP: no path or
//! administrative commands; Unix: RELOAD/SHUTDOWN/QUIT for administrators),
//! and the service user when `User` is absent.
//!
//! A TCP listener that clamd would open to the network (`TCPSocket`
//! without `TCPAddr`, or with an address that is not loopback) is refused:
//! clamd.conf cannot say which clients may connect, and clamsentry will not
//! guess. Bind it to loopback (`TCPAddr 127.0.0.1`), or convert the file
//! (`clamsentry convert-clamd-conf`) and list the client networks in
//! `listen.tcp-allow`.
#![forbid(unsafe_code)]

pub mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{
    ByteSize, BytecodeMode, BytecodeSecurity, Config, ConfigError, Loaded, LogLevel, LogTarget,
    Mode,
};
pub use table::{ClamdOption, Disposition, Kind, OPTIONS};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// clamd's command line (read before the file).
    CommandLine,
    /// A line of the file, from 1.
    Line(usize),
    /// No line: a consequence of a line's absence (e.g. no `LocalSocket`).
    Absent,
}

/// One value as clamd's parser keeps it: text for strings, a number for
/// booleans (0/1), numbers and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: Option<String>,
    pub num: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    origin: Origin,
    /// How it was written (`MaxThreads 20`, `--datadir=/x`), for notes.
    written: String,
    value: Value,
}

/// Something that stops the file from being used: one of clamd's own parse
/// errors, an option clamsentry refuses, or a translated value clamsentry's
/// validation refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub origin: Origin,
    /// The option as written (empty for errors about a line as a whole).
    pub option: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Line(n) => write!(f, "{}:{n}: ", self.path)?,
            Origin::CommandLine => f.write_str("command line: ")?,
            Origin::Absent => write!(f, "{}: ", self.path)?,
        }
        if !self.option.is_empty() {
            write!(f, "{}: ", self.option)?;
        }
        f.write_str(&self.message)
    }
}

/// The problems, one per line (how [`ConfigError::ClamdConf`] shows them).
pub fn show_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    /// How a line was taken, or an option without effect.
    Info,
    /// The line weakens clamsentry's defaults (e.g. a world-writable socket).
    Warn,
}

/// One thing to know about how an option was translated; logged once at
/// start-up, shown by `check-config`, written as a comment by
/// `convert-clamd-conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub origin: Origin,
    pub option: String,
    pub level: NoteLevel,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Line(n) => write!(f, "line {n}: ")?,
            Origin::CommandLine => f.write_str("command line: ")?,
            Origin::Absent => f.write_str("(not set): ")?,
        }
        write!(f, "{}: {}", self.option, self.message)
    }
}

/// Logs each note once, as one line (at warn for those that weaken a
/// default).
pub fn log_notes(path: &str, notes: &[Note]) {
    for n in notes {
        match n.level {
            NoteLevel::Info => {
                tracing::info!(clamd_conf = %path, clamd_option = %n.option, "clamd.conf {n}")
            }
            NoteLevel::Warn => {
                tracing::warn!(clamd_conf = %path, clamd_option = %n.option, "clamd.conf {n}")
            }
        }
    }
}

/// The options clamd would use: the command line's, then the file's.
#[derive(Debug, Clone)]
pub struct ClamdConf {
    path: String,
    /// Per option (index into [`OPTIONS`]): its values, first one first.
    values: BTreeMap<usize, Vec<Entry>>,
    /// Notes made while reading (deprecated options, repeats, clamped sizes).
    reading_notes: Vec<Note>,
    /// Text of each line of the file, for `convert-clamd-conf`.
    lines: BTreeMap<usize, String>,
}

/// The longest line clamd's parser reads whole (its buffer is 1024 bytes).
const MAX_LINE: usize = 1022;

impl ClamdConf {
    /// No options set; `path` names the file in messages.
    pub fn new(path: &str) -> ClamdConf {
        ClamdConf {
            path: path.to_string(),
            values: BTreeMap::new(),
            reading_notes: Vec::new(),
            lines: BTreeMap::new(),
        }
    }

    /// The file named in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads the file at `path` on top of the options already set (from the
    /// command line). Stops at the first error, as clamd does.
    pub fn read_file(mut self, path: &Path) -> Result<ClamdConf, Problem> {
        self.path = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Problem {
            path: self.path.clone(),
            origin: Origin::Absent,
            option: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        self.read_text(&bytes)?;
        Ok(self)
    }

    /// Reads clamd.conf text on top of the options already set.
    pub fn read_text(&mut self, bytes: &[u8]) -> Result<(), Problem> {
        let mut rest = bytes;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            self.read_line(number, line)?;
        }
        Ok(())
    }

    fn problem(&self, origin: Origin, option: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: self.path.clone(),
            origin,
            option: option.to_string(),
            message: message.into(),
        }
    }

    fn read_line(&mut self, number: usize, raw: &[u8]) -> Result<(), Problem> {
        let origin = Origin::Line(number);
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        if body.len() > MAX_LINE {
            return Err(self.problem(
                origin,
                "",
                format!(
                    "line longer than {MAX_LINE} bytes (clamd would read it in pieces): shorten it"
                ),
            ));
        }
        // C strings: a NUL byte ends the line.
        let line = match raw.iter().position(|&b| b == 0) {
            Some(i) => &raw[..i],
            None => raw,
        };
        // Leading blanks, keeping at least one character.
        let mut start = 0;
        while start + 1 < line.len() && matches!(line[start], b' ' | b'\t') {
            start += 1;
        }
        let buff = &line[start..];
        if buff.len() <= 2 || buff[0] == b'#' {
            return Ok(());
        }
        if buff.starts_with(b"Example") {
            return Err(self.problem(
                origin,
                "Example",
                "the file still has the Example line that clamd refuses (\"Please edit the example config file\"): remove it",
            ));
        }
        let Some(gap) = buff.iter().position(|&b| b == b' ' || b == b'\t') else {
            return Err(self.problem(origin, "", "Missing argument for option"));
        };
        let name = String::from_utf8_lossy(&buff[..gap]).into_owned();
        let mut arg = &buff[gap + 1..];
        let mut lead = 0;
        while lead + 1 < arg.len() && matches!(arg[lead], b' ' | b'\t') {
            lead += 1;
        }
        arg = &arg[lead..];
        let mut end = arg.len();
        while end >= 1 && matches!(arg[end - 1], b' ' | b'\t' | b'\n') {
            end -= 1;
        }
        if end == 0 {
            return Err(self.problem(origin, &name, "Missing argument for option"));
        }
        arg = &arg[..end];
        if arg[0] == b'"' {
            arg = &arg[1..];
            let Some(close) = arg.iter().rposition(|&b| b == b'"') else {
                return Err(self.problem(origin, &name, "Missing closing parenthesis in option"));
            };
            arg = &arg[..close];
            if arg.is_empty() {
                return Err(self.problem(origin, &name, "Empty argument for option"));
            }
        }
        let Ok(arg) = std::str::from_utf8(arg) else {
            return Err(self.problem(
                origin,
                &name,
                "the value is not UTF-8, which clamsentry's configuration cannot hold",
            ));
        };
        let written = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line))
            .trim()
            .to_string();
        self.lines.insert(number, written.clone());
        let Some((index, option)) = table::lookup(&name) else {
            return Err(self.problem(
                origin,
                &name,
                "Unknown option (clamd 1.4 refuses the file too)",
            ));
        };
        self.add(origin, &name, index, option, Some(arg), written, true)
    }

    /// Adds one value, converted and checked as clamd's parser does.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        origin: Origin,
        name: &str,
        index: usize,
        option: &ClamdOption,
        arg: Option<&str>,
        written: String,
        from_file: bool,
    ) -> Result<(), Problem> {
        if option.deprecated() {
            self.reading_notes.push(Note {
                origin,
                option: name.to_string(),
                level: NoteLevel::Info,
                message: "deprecated: clamd 1.4 ignores it, and so does clamsentry".into(),
            });
            return Ok(());
        }
        let value = convert(option, arg, from_file)
            .map_err(|m| self.problem(origin, name, m))?
            .map_clamped(|limit| {
                self.reading_notes.push(Note {
                    origin,
                    option: name.to_string(),
                    level: NoteLevel::Info,
                    message: format!("value too high, taken as {limit} (as clamd does)"),
                })
            });
        let entries = self.values.entry(index).or_default();
        if !entries.is_empty() && !option.multiple() {
            let first = entries[0].origin;
            self.reading_notes.push(Note {
                origin,
                option: name.to_string(),
                level: NoteLevel::Info,
                message: format!(
                    "given again: clamd uses the first value ({}), and so does clamsentry",
                    match first {
                        Origin::Line(n) => format!("line {n}"),
                        _ => "the command line".into(),
                    }
                ),
            });
            return Ok(());
        }
        entries.push(Entry {
            origin,
            written,
            value,
        });
        Ok(())
    }

    /// Reads clamd's command line (without the program name) into the
    /// options, as clamd's `getopt_long` does: `-c FILE`, `-cFILE`,
    /// `--config-file=FILE`, `--config-file FILE`, `-F`, `-V`, `-h`,
    /// `--debug`, and every option's long name (`--datadir=DIR`,
    /// `--max-scansize=10M`, `--foreground[=no]`). Returns the operands.
    pub fn read_args(&mut self, args: &[String]) -> Result<Vec<String>, Problem> {
        let mut operands = Vec::new();
        let mut i = 0;
        let bad = |message: String| Problem {
            path: String::new(),
            origin: Origin::CommandLine,
            option: String::new(),
            message,
        };
        while i < args.len() {
            let a = &args[i];
            i += 1;
            if a == "--" {
                operands.extend(args[i..].iter().cloned());
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let Some((index, option)) = OPTIONS
                    .iter()
                    .enumerate()
                    .find(|(_, o)| o.long() == Some(name))
                else {
                    return Err(bad(format!("unrecognized option '--{name}'")));
                };
                // getopt: an optional argument only as --name=value.
                let optional = !option.required()
                    && (option.kind == Kind::Bool || option.default_str().is_some());
                let arg = match inline {
                    Some(v) => Some(v.to_string()),
                    None if optional => None,
                    None => match args.get(i) {
                        Some(v) => {
                            i += 1;
                            Some(v.clone())
                        }
                        None => return Err(bad(format!("option '--{name}' requires an argument"))),
                    },
                };
                self.add(
                    Origin::CommandLine,
                    &format!("--{name}"),
                    index,
                    option,
                    arg.as_deref(),
                    a.clone(),
                    false,
                )?;
                continue;
            }
            if a.len() > 1 && a.starts_with('-') {
                let chars: Vec<char> = a[1..].chars().collect();
                let mut k = 0;
                while k < chars.len() {
                    let c = chars[k];
                    k += 1;
                    let Some((index, option)) = OPTIONS
                        .iter()
                        .enumerate()
                        .find(|(_, o)| o.short() == Some(c))
                    else {
                        return Err(bad(format!("invalid option -- '{c}'")));
                    };
                    let arg = if option.kind == Kind::Bool {
                        None
                    } else if k < chars.len() {
                        let v: String = chars[k..].iter().collect();
                        k = chars.len();
                        Some(v)
                    } else {
                        match args.get(i) {
                            Some(v) => {
                                i += 1;
                                Some(v.clone())
                            }
                            None => {
                                return Err(bad(format!("option requires an argument -- '{c}'")))
                            }
                        }
                    };
                    self.add(
                        Origin::CommandLine,
                        &format!("-{c}"),
                        index,
                        option,
                        arg.as_deref(),
                        a.clone(),
                        false,
                    )?;
                }
                continue;
            }
            operands.push(a.clone());
        }
        Ok(operands)
    }

    fn entries(&self, name: &str) -> &[Entry] {
        let index = table::lookup(name)
            .unwrap_or_else(|| panic!("{name} is not in the option table"))
            .0;
        self.values.get(&index).map_or(&[], Vec::as_slice)
    }

    /// The value in effect (set, else clamd's default), as `optget`.
    pub fn get(&self, name: &str) -> Value {
        match self.entries(name).first() {
            Some(e) => e.value.clone(),
            None => {
                let o = table::lookup(name).expect("in the table").1;
                Value {
                    text: o.default_str().map(str::to_string),
                    num: o.default_num,
                }
            }
        }
    }

    /// clamd's `->enabled`: a text, or a number other than 0 and -1.
    pub fn enabled(&self, name: &str) -> bool {
        let v = self.get(name);
        v.text.is_some() || (v.num != 0 && v.num != -1)
    }

    /// Whether the option was given (clamd's `->active`).
    pub fn is_set(&self, name: &str) -> bool {
        !self.entries(name).is_empty()
    }

    /// `DatabaseDirectory` as clamd uses it (for `clamd -V`).
    pub fn database_directory(&self) -> PathBuf {
        PathBuf::from(
            self.get("DatabaseDirectory")
                .text
                .unwrap_or_else(|| table::DATADIR.into()),
        )
    }

    /// The `config-file` clamd would read (`-c`, or Debian's default).
    pub fn config_file(&self) -> PathBuf {
        PathBuf::from(
            self.get("config-file")
                .text
                .unwrap_or_else(|| table::CONFIG_FILE.into()),
        )
    }
}

/// A converted value, and the limit a too-high size was cut to.
struct Converted(Value, Option<i64>);

impl Converted {
    fn map_clamped(self, f: impl FnOnce(i64)) -> Value {
        if let Some(limit) = self.1 {
            f(limit);
        }
        self.0
    }
}

/// One argument as clamd's parser converts it (optparse's checks, `atoi`,
/// `strtoll` with base 0 and a K/M/G suffix, yes/no).
fn convert(option: &ClamdOption, arg: Option<&str>, from_file: bool) -> Result<Converted, String> {
    let name_check = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err("Incorrect argument format for option (clamd refuses it too)".to_string())
        }
    };
    if !from_file && arg.is_none() && option.kind == Kind::Bool {
        return Ok(Converted(Value { text: None, num: 1 }, None));
    }
    let arg_or_default = arg.or(option.default_str());
    match option.kind {
        Kind::Bool => {
            let a = arg.unwrap_or("");
            let l = a.to_ascii_lowercase();
            name_check(matches!(
                l.as_str(),
                "yes" | "true" | "1" | "no" | "false" | "0"
            ))?;
            let on = l == "yes" || l == "true" || l == "1";
            Ok(Converted(
                Value {
                    text: None,
                    num: i64::from(on),
                },
                None,
            ))
        }
        Kind::Number => {
            let a = arg.unwrap_or("");
            name_check(!a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))?;
            Ok(Converted(
                Value {
                    text: None,
                    num: atoi(a),
                },
                None,
            ))
        }
        Kind::Size | Kind::Size64 => {
            let a = arg.unwrap_or("");
            let digits = a.trim_end_matches(|c: char| "KMGkmg".contains(c));
            name_check(
                !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && a.len() - digits.len() <= 1,
            )?;
            let (num, clamped) = size(a)?;
            Ok(Converted(Value { text: None, num }, clamped))
        }
        Kind::Str => Ok(Converted(
            Value {
                text: arg_or_default.map(str::to_string),
                num: -1,
            },
            None,
        )),
        Kind::Choice(words) => {
            let a = arg_or_default.unwrap_or("");
            name_check(words.iter().any(|w| w.eq_ignore_ascii_case(a)))?;
            Ok(Converted(
                Value {
                    text: Some(a.to_string()),
                    num: -1,
                },
                None,
            ))
        }
    }
}

/// glibc's `atoi`: `(int) strtol(s, NULL, 10)` of a string of digits.
fn atoi(digits: &str) -> i64 {
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = (v * 10 + i128::from(b - b'0')).min(i128::from(i64::MAX));
    }
    i64::from(v as i64 as i32)
}

/// A size as optparse reads it: `strtoll(s, &end, 0)`, then `K`/`M`/`G`;
/// a result of 0 means no limit (`LLONG_MAX`). Returns the value and, when
/// it had to be cut to the limit, the limit.
fn size(text: &str) -> Result<(i64, Option<i64>), String> {
    const LIMIT: i64 = i64::MAX;
    let bytes = text.as_bytes();
    let (radix, start) = if bytes.len() > 1 && bytes[0] == b'0' {
        (8, 1)
    } else {
        (10, 0)
    };
    let mut i = start;
    let mut v: i128 = 0;
    let mut overflow = false;
    while i < bytes.len() && bytes[i].is_ascii_digit() && u32::from(bytes[i] - b'0') < radix {
        v = v * i128::from(radix) + i128::from(bytes[i] - b'0');
        if v > i128::from(LIMIT) {
            overflow = true;
            v = i128::from(LIMIT);
        }
        i += 1;
    }
    let mut n = v as i64;
    let mut clamped = overflow;
    if !overflow {
        let mult: i64 = match bytes.get(i) {
            None => 1,
            Some(b'G' | b'g') => 1 << 30,
            Some(b'M' | b'm') => 1 << 20,
            Some(b'K' | b'k') => 1 << 10,
            Some(_) => {
                return Err(
                    "Can't parse numerical argument for option (clamd refuses it too)".into(),
                )
            }
        };
        match n.checked_mul(mult) {
            Some(m) => n = m,
            None => {
                n = LIMIT;
                clamped = true;
            }
        }
    }
    let n = if clamped { LIMIT } else { n };
    Ok((if n == 0 { LIMIT } else { n }, clamped.then_some(LIMIT)))
}

/// What the translation needs from the system; [`Env::system`] in
/// production, fakes in tests.
pub struct Env {
    /// Relative paths in clamd.conf are relative to clamd's working
    /// directory at start.
    pub cwd: PathBuf,
    /// `getaddrinfo(host, AI_PASSIVE | AI_ADDRCONFIG)`: `None` for every
    /// address.
    pub resolve: fn(Option<&str>) -> Result<Vec<IpAddr>, String>,
    /// A user's uid, if the user exists.
    pub uid_of: fn(&str) -> Option<u32>,
}

impl Env {
    pub fn system() -> Env {
        Env {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            resolve: resolve_system,
            uid_of: |name| {
                if let Ok(n) = name.parse::<u32>() {
                    return Some(n);
                }
                crate::sys::user_by_name(name).ok().flatten().map(|u| u.uid)
            },
        }
    }
}

/// What `getaddrinfo` with `AI_PASSIVE | AI_ADDRCONFIG` gives clamd: IPv6
/// results only when some interface other than loopback has an IPv6
/// address.
fn resolve_system(host: Option<&str>) -> Result<Vec<IpAddr>, String> {
    use std::net::ToSocketAddrs;
    let ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| t.lines().any(|l| !l.trim_end().ends_with(" lo")))
        .unwrap_or(false);
    let found: Vec<IpAddr> = match host {
        None => vec![
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ],
        Some(h) => (h, 0)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {h:?}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    let mut out = Vec::new();
    for ip in found {
        if (ip.is_ipv4() || ipv6) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err(format!("{host:?} has no address this machine can bind"));
    }
    Ok(out)
}

/// A clamd.conf turned into a clamsentry configuration.
#[derive(Debug, Clone)]
pub struct Translation {
    pub config: Config,
    pub notes: Vec<Note>,
    /// Empty when the configuration may be used.
    pub problems: Vec<Problem>,
    /// `Foreground` (or `-F`): stay in the foreground; else clamd forks into
    /// the background once it serves.
    pub foreground: bool,
    /// For each clamsentry key set from the file: the lines it came from.
    pub sources: BTreeMap<&'static str, Vec<Origin>>,
    /// The text of each line, and what happened to the options of the
    /// command line (for `convert-clamd-conf`).
    lines: BTreeMap<Origin, String>,
}

struct Translator<'a> {
    conf: &'a ClamdConf,
    env: &'a Env,
    config: Config,
    notes: Vec<Note>,
    problems: Vec<Problem>,
    sources: BTreeMap<&'static str, Vec<Origin>>,
}

impl ClamdConf {
    /// Translates to a clamsentry configuration (validated: any problem,
    /// including a value clamsentry's checks refuse, is in `problems` with
    /// the clamd option that caused it).
    pub fn translate(&self, env: &Env) -> Translation {
        let mut t = Translator {
            conf: self,
            env,
            config: Config::default(),
            notes: self.reading_notes.clone(),
            problems: Vec::new(),
            sources: BTreeMap::new(),
        };
        t.run();
        if t.problems.is_empty() {
            if let Err(super::Fault { key, message }) = t.config.check() {
                let origin = key
                    .as_deref()
                    .and_then(|k| t.sources.get(k))
                    .and_then(|o| o.first().copied())
                    .unwrap_or(Origin::Absent);
                let option = self.option_at(origin).unwrap_or_default();
                let message = match key {
                    Some(key) => format!("{message} (as clamsentry's {key})"),
                    None => message,
                };
                t.problems.push(Problem {
                    path: self.path.clone(),
                    origin,
                    option,
                    message,
                });
            }
        }
        let mut lines: BTreeMap<Origin, String> = self
            .lines
            .iter()
            .map(|(n, l)| (Origin::Line(*n), l.clone()))
            .collect();
        for entries in self.values.values() {
            for e in entries {
                if e.origin == Origin::CommandLine {
                    lines.insert(Origin::CommandLine, e.written.clone());
                }
            }
        }
        let foreground = self.enabled("Foreground");
        t.notes.sort_by_key(|n| n.origin);
        Translation {
            config: t.config,
            notes: t.notes,
            problems: t.problems,
            foreground,
            sources: t.sources,
            lines,
        }
    }

    /// The option (as written) whose value came from `origin`.
    fn option_at(&self, origin: Origin) -> Option<String> {
        self.values.iter().find_map(|(i, entries)| {
            entries
                .iter()
                .any(|e| e.origin == origin)
                .then(|| OPTIONS[*i].shown())
        })
    }
}

impl Translator<'_> {
    /// The first entry of an option that was set.
    fn set(&self, name: &str) -> Option<&Entry> {
        self.conf.entries(name).first()
    }

    fn origin(&self, name: &str) -> Origin {
        self.set(name).map_or(Origin::Absent, |e| e.origin)
    }

    /// Records that `key` was set from `name`'s line(s).
    fn source(&mut self, key: &'static str, name: &str) {
        let origins: Vec<Origin> = self.conf.entries(name).iter().map(|e| e.origin).collect();
        let list = self.sources.entry(key).or_default();
        for o in origins {
            if !list.contains(&o) {
                list.push(o);
            }
        }
    }

    fn note(&mut self, name: &str, level: NoteLevel, message: impl Into<String>) {
        let origin = self.origin(name);
        self.notes.push(Note {
            origin,
            option: name.to_string(),
            level,
            message: message.into(),
        });
    }

    fn refuse(&mut self, name: &str, message: impl Into<String>) {
        let origin = self.origin(name);
        self.problems.push(Problem {
            path: self.conf.path.clone(),
            origin,
            option: name.to_string(),
            message: message.into(),
        });
    }

    /// A number option that was set, as a u32 (refused if negative: clamd's
    /// `atoi` wraps very long numbers).
    fn number(&mut self, name: &str) -> Option<u32> {
        let v = self.set(name)?.value.num;
        match u32::try_from(v) {
            Ok(n) => Some(n),
            Err(_) => {
                self.refuse(name, format!("{v} is out of range"));
                None
            }
        }
    }

    fn size(&self, name: &str) -> Option<ByteSize> {
        self.set(name).map(|e| ByteSize(e.value.num as u64))
    }

    fn text(&self, name: &str) -> Option<String> {
        self.set(name).and_then(|e| e.value.text.clone())
    }

    fn all_text(&self, name: &str) -> Vec<String> {
        self.conf
            .entries(name)
            .iter()
            .filter_map(|e| e.value.text.clone())
            .collect()
    }

    fn path(&self, text: String) -> PathBuf {
        let p = PathBuf::from(text);
        if p.is_absolute() {
            p
        } else {
            self.env.cwd.join(p)
        }
    }

    fn run(&mut self) {
        self.booleans();
        self.numbers();
        self.paths_and_texts();
        self.listeners();
        self.identity();
        self.logging();
        self.refused_and_logged();
    }

    fn booleans(&mut self) {
        type Set = fn(&mut crate::config::ScanConfig, bool);
        #[rustfmt::skip]
        let direct: &[(&str, &'static str, Set)] = &[
            ("OfficialDatabaseOnly", "scan.official-database-only", |s, v| s.official_database_only = v),
            ("DetectPUA", "scan.detect-pua", |s, v| s.detect_pua = v),
            ("Bytecode", "scan.bytecode", |s, v| s.bytecode = v),
            ("BytecodeUnsigned", "scan.bytecode-unsigned", |s, v| s.bytecode_unsigned = v),
            ("HeuristicScanPrecedence", "scan.heuristic-scan-precedence", |s, v| s.heuristic_scan_precedence = v),
            ("ScanArchive", "scan.scan-archive", |s, v| s.scan_archive = v),
            ("ScanPE", "scan.scan-pe", |s, v| s.scan_pe = v),
            ("ScanELF", "scan.scan-elf", |s, v| s.scan_elf = v),
            ("ScanOLE2", "scan.scan-ole2", |s, v| s.scan_ole2 = v),
            ("ScanPDF", "scan.scan-pdf", |s, v| s.scan_pdf = v),
            ("ScanSWF", "scan.scan-swf", |s, v| s.scan_swf = v),
            ("ScanHTML", "scan.scan-html", |s, v| s.scan_html = v),
            ("ScanXMLDOCS", "scan.scan-xmldocs", |s, v| s.scan_xmldocs = v),
            ("ScanHWP3", "scan.scan-hwp3", |s, v| s.scan_hwp3 = v),
            ("ScanOneNote", "scan.scan-onenote", |s, v| s.scan_onenote = v),
            ("ScanMail", "scan.scan-mail", |s, v| s.scan_mail = v),
            ("ScanPartialMessages", "scan.scan-partial-messages", |s, v| s.scan_partial_messages = v),
            ("ScanImage", "scan.scan-image", |s, v| s.scan_image = v),
            ("ScanImageFuzzyHash", "scan.scan-image-fuzzy-hash", |s, v| s.scan_image_fuzzy_hash = v),
            ("PhishingSignatures", "scan.phishing-signatures", |s, v| s.phishing_signatures = v),
            ("PhishingScanURLs", "scan.phishing-scan-urls", |s, v| s.phishing_scan_urls = v),
            ("AlertBrokenExecutables", "scan.alert-broken-executables", |s, v| s.alert_broken_executables = v),
            ("AlertBrokenMedia", "scan.alert-broken-media", |s, v| s.alert_broken_media = v),
            ("AlertEncryptedArchive", "scan.alert-encrypted-archive", |s, v| s.alert_encrypted_archive = v),
            ("AlertEncryptedDoc", "scan.alert-encrypted-doc", |s, v| s.alert_encrypted_doc = v),
            ("StructuredDataDetection", "scan.structured-data-detection", |s, v| s.structured_data_detection = v),
            ("StructuredCCOnly", "scan.structured-cc-only", |s, v| s.structured_cc_only = v),
            ("StructuredSSNFormatNormal", "scan.structured-ssn-format-normal", |s, v| s.structured_ssn_format_normal = v),
            ("StructuredSSNFormatStripped", "scan.structured-ssn-format-stripped", |s, v| s.structured_ssn_format_stripped = v),
            ("AllowAllMatchScan", "scan.allow-all-match-scan", |s, v| s.allow_all_match_scan = v),
            ("FollowDirectorySymlinks", "scan.follow-directory-symlinks", |s, v| s.follow_directory_symlinks = v),
            ("FollowFileSymlinks", "scan.follow-file-symlinks", |s, v| s.follow_file_symlinks = v),
            ("CrossFilesystems", "scan.cross-filesystems", |s, v| s.cross_filesystems = v),
            ("DisableCache", "scan.disable-cache", |s, v| s.disable_cache = v),
            ("DisableCertCheck", "scan.disable-cert-check", |s, v| s.disable_cert_check = v),
        ];
        for &(name, key, apply) in direct {
            if self.conf.is_set(name) {
                apply(&mut self.config.scan, self.conf.enabled(name));
                self.source(key, name);
            }
        }
        // clamd's current option and its older name: either one switches
        // the alert on.
        #[rustfmt::skip]
        let either: &[(&str, &str, &'static str, Set)] = &[
            ("AlertExceedsMax", "BlockMax", "scan.alert-exceeds-max", |s, v| s.alert_exceeds_max = v),
            ("AlertPhishingSSLMismatch", "PhishingAlwaysBlockSSLMismatch", "scan.alert-phishing-ssl-mismatch", |s, v| s.alert_phishing_ssl_mismatch = v),
            ("AlertPhishingCloak", "PhishingAlwaysBlockCloak", "scan.alert-phishing-cloak", |s, v| s.alert_phishing_cloak = v),
            ("AlertPartitionIntersection", "PartitionIntersection", "scan.alert-partition-intersection", |s, v| s.alert_partition_intersection = v),
            ("AlertOLE2Macros", "OLE2BlockMacros", "scan.alert-ole2-macros", |s, v| s.alert_ole2_macros = v),
            ("AlertEncrypted", "ArchiveBlockEncrypted", "scan.alert-encrypted", |s, v| s.alert_encrypted = v),
        ];
        for &(new, old, key, apply) in either {
            if self.conf.is_set(new) || self.conf.is_set(old) {
                let on = self.conf.enabled(new) || self.conf.enabled(old);
                apply(&mut self.config.scan, on);
                self.source(key, new);
                self.source(key, old);
            }
        }
        // Heuristic alerts need both (AlgorithmicDetection no turns them off).
        if self.conf.is_set("HeuristicAlerts") || self.conf.is_set("AlgorithmicDetection") {
            self.config.scan.heuristic_alerts =
                self.conf.enabled("HeuristicAlerts") && self.conf.enabled("AlgorithmicDetection");
            self.source("scan.heuristic-alerts", "HeuristicAlerts");
            self.source("scan.heuristic-alerts", "AlgorithmicDetection");
        }
    }

    fn numbers(&mut self) {
        type SetN = fn(&mut Config, u32);
        #[rustfmt::skip]
        let numbers: &[(&str, &'static str, SetN)] = &[
            ("MaxThreads", "limits.max-threads", |c, v| c.limits.max_threads = v),
            ("MaxQueue", "limits.max-queue", |c, v| c.limits.max_queue = v),
            ("CommandReadTimeout", "limits.command-read-timeout", |c, v| c.limits.command_read_timeout = v.into()),
            ("SendBufTimeout", "limits.send-timeout", |c, v| c.limits.send_timeout = v.into()),
            ("MaxConnectionQueueLength", "listen.backlog", |c, v| c.listen.backlog = v),
            ("SelfCheck", "database.self-check", |c, v| c.database.self_check = v.into()),
            ("MaxDirectoryRecursion", "scan.max-directory-recursion", |c, v| c.scan.max_directory_recursion = v),
            ("MaxScanTime", "scan.max-scan-time", |c, v| c.scan.max_scan_time = v),
            ("MaxRecursion", "scan.max-recursion", |c, v| c.scan.max_recursion = v),
            ("MaxFiles", "scan.max-files", |c, v| c.scan.max_files = v),
            ("MaxPartitions", "scan.max-partitions", |c, v| c.scan.max_partitions = v),
            ("MaxIconsPE", "scan.max-icons-pe", |c, v| c.scan.max_icons_pe = v),
            ("MaxRecHWP3", "scan.max-rec-hwp3", |c, v| c.scan.max_rec_hwp3 = v),
            ("PCREMatchLimit", "scan.pcre-match-limit", |c, v| c.scan.pcre_match_limit = v),
            ("PCRERecMatchLimit", "scan.pcre-recmatch-limit", |c, v| c.scan.pcre_recmatch_limit = v),
            ("BytecodeTimeout", "scan.bytecode-timeout", |c, v| c.scan.bytecode_timeout = v),
            ("StructuredMinCreditCardCount", "scan.structured-min-credit-card-count", |c, v| c.scan.structured_min_credit_card_count = v),
            ("StructuredMinSSNCount", "scan.structured-min-ssn-count", |c, v| c.scan.structured_min_ssn_count = v),
            ("CacheSize", "scan.cache-size", |c, v| c.scan.cache_size = v),
        ];
        for &(name, key, apply) in numbers {
            if let Some(v) = self.number(name) {
                apply(&mut self.config, v);
                self.source(key, name);
            }
        }
        // In clamd an idle IDSESSION ends after ReadTimeout too.
        if let Some(v) = self.number("ReadTimeout") {
            self.config.limits.read_timeout = v.into();
            self.config.limits.idle_timeout = v.into();
            self.source("limits.read-timeout", "ReadTimeout");
            self.source("limits.idle-timeout", "ReadTimeout");
        }
        type SetS = fn(&mut crate::config::ScanConfig, ByteSize);
        #[rustfmt::skip]
        let sizes: &[(&str, &'static str, SetS)] = &[
            ("MaxScanSize", "scan.max-scan-size", |s, v| s.max_scan_size = v),
            ("MaxFileSize", "scan.max-file-size", |s, v| s.max_file_size = v),
            ("MaxEmbeddedPE", "scan.max-embedded-pe", |s, v| s.max_embedded_pe = v),
            ("MaxHTMLNormalize", "scan.max-html-normalize", |s, v| s.max_html_normalize = v),
            ("MaxHTMLNoTags", "scan.max-html-no-tags", |s, v| s.max_html_no_tags = v),
            ("MaxScriptNormalize", "scan.max-script-normalize", |s, v| s.max_script_normalize = v),
            ("MaxZipTypeRcg", "scan.max-zip-type-rcg", |s, v| s.max_zip_type_rcg = v),
            ("PCREMaxFileSize", "scan.pcre-max-file-size", |s, v| s.pcre_max_file_size = v),
        ];
        for &(name, key, apply) in sizes {
            if let Some(v) = self.size(name) {
                apply(&mut self.config.scan, v);
                self.source(key, name);
            }
        }
        if let Some(v) = self.size("StreamMaxLength") {
            if v.0 > u64::from(u32::MAX) {
                self.refuse(
                    "StreamMaxLength",
                    "no limit (0) or more than 4G - 1: clamsentry holds a stream in memory and needs a limit below 4G (the protocol's chunk counter is 32 bits); set one",
                );
            } else {
                self.config.limits.stream_max_length = v;
                self.source("limits.stream-max-length", "StreamMaxLength");
                // Every other worker's base lease (at most 1 MiB each) is
                // kept for it (src/supervisor/gate/shares.rs): one stream of
                // the full length needs that much more.
                let reserve = u64::from(self.config.limits.max_workers.saturating_sub(1)) << 20;
                let needed = ByteSize(v.0.saturating_add(reserve));
                if self.config.limits.stream_memory < needed {
                    self.config.limits.stream_memory = needed;
                    self.source("limits.stream-memory", "StreamMaxLength");
                    self.note(
                        "StreamMaxLength",
                        NoteLevel::Info,
                        format!("limits.stream-memory (stream bytes held by all clients together) raised to {needed}, so that one stream can reach the limit while every other worker keeps its 1 MiB base"),
                    );
                }
            }
        }
        let (min, max) = (
            self.conf.get("StreamMinPort").num,
            self.conf.get("StreamMaxPort").num,
        );
        if min < 1024 || min > max || max > 65535 {
            let name = if self.conf.is_set("StreamMinPort") {
                "StreamMinPort"
            } else {
                "StreamMaxPort"
            };
            self.refuse(
                name,
                format!(
                    "Invalid StreamMinPort/StreamMaxPort: {min}, {max} (clamd refuses them too)"
                ),
            );
        }
    }

    fn paths_and_texts(&mut self) {
        if let Some(t) = self.text("DatabaseDirectory") {
            self.config.database.directory = self.path(t);
            self.source("database.directory", "DatabaseDirectory");
        }
        if let Some(t) = self.text("TemporaryDirectory") {
            self.config.scan.temporary_directory = self.path(t);
            self.source("scan.temporary-directory", "TemporaryDirectory");
        }
        if let Some(t) = self.text("PidFile") {
            self.config.service.pid_file = self.path(t);
            self.source("service.pid-file", "PidFile");
        }
        let excludes = self.all_text("ExcludePath");
        if !excludes.is_empty() {
            self.config.scan.exclude_path = excludes;
            self.source("scan.exclude-path", "ExcludePath");
        }
        if let Some(t) = self.text("VirusEvent") {
            self.config.virus_event.command = t;
            self.source("virus-event.command", "VirusEvent");
            let v = &self.config.virus_event;
            let message = format!(
                "runs as in clamd (/bin/sh -c, %v, CLAM_VIRUSEVENT_FILENAME, CLAM_VIRUSEVENT_VIRUSNAME), but never as root and not as User (the scanning workers' user): as virus-event.user ({}, which the Debian package creates), killed after {} s, at most {} at once and {} a minute ({} for one client); a virus name with shell characters is quoted for %v",
                v.effective_user(), v.timeout, v.max_concurrent, v.max_per_minute, v.per_peer_per_minute()
            );
            self.note("VirusEvent", NoteLevel::Info, message);
        }
        // PUA categories only count with DetectPUA, as in clamd.
        for (name, key) in [
            ("ExcludePUA", "scan.exclude-pua"),
            ("IncludePUA", "scan.include-pua"),
        ] {
            let cats = self.all_text(name);
            if cats.is_empty() {
                continue;
            }
            if !self.conf.enabled("DetectPUA") {
                self.note(
                    name,
                    NoteLevel::Info,
                    "no effect without DetectPUA yes (as in clamd)",
                );
                continue;
            }
            if name == "ExcludePUA" {
                self.config.scan.exclude_pua = cats;
            } else {
                self.config.scan.include_pua = cats;
            }
            self.source(key, name);
        }
        if self.conf.enabled("DetectPUA")
            && !self.config.scan.exclude_pua.is_empty()
            && !self.config.scan.include_pua.is_empty()
        {
            self.refuse(
                "IncludePUA",
                "ExcludePUA and IncludePUA cannot be used at the same time (clamd refuses them too)",
            );
        }
        if self.conf.enabled("Bytecode") {
            if let Some(t) = self.text("BytecodeSecurity") {
                if let Ok(security) = t.parse::<BytecodeSecurity>() {
                    self.config.scan.bytecode_security = security;
                    self.source("scan.bytecode-security", "BytecodeSecurity");
                } else {
                    self.refuse(
                        "BytecodeSecurity",
                        format!("Unable to parse bytecode security setting:{t} (clamd refuses it too: write TrustSigned or Paranoid)"),
                    );
                }
            }
            if let Some(t) = self.text("BytecodeMode") {
                // clamd compares exactly; anything else the pattern let
                // through ("auto", "forcejit") means Auto.
                let mode = t.parse::<BytecodeMode>().unwrap_or(BytecodeMode::Auto);
                self.config.scan.bytecode_mode = mode;
                self.source("scan.bytecode-mode", "BytecodeMode");
            }
        }
    }

    fn listeners(&mut self) {
        // Only what clamd.conf names is bound ("" is "no Unix socket", and
        // survives being written as TOML, which None would not).
        self.config.listen.unix = Some(PathBuf::new());
        if let Some(t) = self.text("LocalSocket") {
            let path = self.path(t);
            self.config.listen.unix = Some(path);
            self.source("listen.unix", "LocalSocket");
            self.note(
                "LocalSocket",
                NoteLevel::Info,
                "clamd lets anyone who can connect RELOAD, SHUTDOWN and QUIT it; clamsentry only root, its own user and policy.unix.admin-users (clamav): policy.unix.admin-users and admin-groups open them to more",
            );
            match self.text("LocalSocketMode") {
                Some(m) => match strtol_octal(&m) {
                    Some(mode) => {
                        let mode = mode & 0o666;
                        self.config.listen.unix_mode = Mode(mode);
                        self.source("listen.unix-mode", "LocalSocketMode");
                        if mode & 0o002 != 0 {
                            self.note(
                                "LocalSocketMode",
                                NoteLevel::Warn,
                                format!("{mode:04o} lets every local user connect (clamsentry's default is 0660): they can scan what they could read anyway and see STATS, but not RELOAD or SHUTDOWN"),
                            );
                        }
                    }
                    None => self.refuse(
                        "LocalSocketMode",
                        format!("Invalid LocalSocketMode {m} (clamd refuses it too: write octal digits, like 660)"),
                    ),
                },
                None => {
                    self.note(
                        "LocalSocket",
                        NoteLevel::Info,
                        "no LocalSocketMode: the socket gets mode 0660, not clamd's 0666 (write LocalSocketMode 666 to let every local user connect)",
                    );
                }
            }
            if let Some(g) = self.text("LocalSocketGroup") {
                self.config.listen.unix_group = g;
                self.source("listen.unix-group", "LocalSocketGroup");
            }
        } else {
            for name in ["LocalSocketMode", "LocalSocketGroup"] {
                if self.conf.is_set(name) {
                    self.note(
                        name,
                        NoteLevel::Info,
                        "no effect without LocalSocket (as in clamd)",
                    );
                }
            }
        }
        if !self.conf.is_set("TCPSocket") {
            if self.conf.is_set("TCPAddr") {
                self.note(
                    "TCPAddr",
                    NoteLevel::Info,
                    "no effect without TCPSocket (as in clamd)",
                );
            }
            return;
        }
        let Some(port) = self.number("TCPSocket") else {
            return;
        };
        let Ok(port) = u16::try_from(port) else {
            self.refuse("TCPSocket", format!("{port} is not a TCP port"));
            return;
        };
        let hosts: Vec<Option<String>> = if self.conf.is_set("TCPAddr") {
            self.all_text("TCPAddr")
                .into_iter()
                .map(|h| (h != "all").then_some(h))
                .collect()
        } else {
            vec![None]
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for host in &hosts {
            match (self.env.resolve)(host.as_deref()) {
                Ok(ips) => {
                    for ip in ips {
                        let a = SocketAddr::new(ip, port);
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                Err(e) => {
                    let name = if host.is_some() {
                        "TCPAddr"
                    } else {
                        "TCPSocket"
                    };
                    self.refuse(name, format!("TCP: getaddrinfo failed: {e}"));
                    return;
                }
            }
        }
        if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            let (name, what) = if self.conf.is_set("TCPAddr") {
                ("TCPAddr", format!("binds {open}"))
            } else {
                (
                    "TCPSocket",
                    format!("without TCPAddr binds every address ({open})"),
                )
            };
            self.refuse(
                name,
                format!(
                    "{what}, where clamd would serve every command (SCAN of local files, SHUTDOWN, RELOAD, STATS) to anyone who can reach it, and clamd.conf cannot say which clients may connect. \
                     Bind loopback only (TCPAddr 127.0.0.1), or convert the file (clamsentry convert-clamd-conf) and list the client networks in listen.tcp-allow"
                ),
            );
            return;
        }
        self.config.listen.tcp = addrs.clone();
        self.source("listen.tcp", "TCPSocket");
        self.source("listen.tcp", "TCPAddr");
        self.note(
            "TCPSocket",
            NoteLevel::Info,
            "clamd serves every command over TCP; clamsentry's TCP listener only PING, VERSION, VERSIONCOMMANDS, INSTREAM, IDSESSION and END (policy.tcp.commands opens more)",
        );
    }

    fn identity(&mut self) {
        match self.text("User") {
            Some(user) => {
                match (self.env.uid_of)(&user) {
                    None => {
                        self.refuse(
                            "User",
                            format!("no user {user:?} on this system (clamd fails too)"),
                        );
                        return;
                    }
                    Some(0) => {
                        self.refuse(
                            "User",
                            format!("{user:?} is root: clamsentry's scanning workers never run as root; name the user clamd should drop to, e.g. clamav"),
                        );
                        return;
                    }
                    Some(_) => {}
                }
                self.config.sandbox.user = user.clone();
                self.source("sandbox.user", "User");
                // clamd's User is usually shared with its clients
                // (clamav-milter and freshclam run as clamav): they must
                // still connect. Workers cannot connect anywhere anyway.
                self.config.policy.unix.refuse_service_user = false;
                self.source("policy.unix.refuse-service-user", "User");
                if self.config.unix_path().is_some() {
                    self.config.listen.unix_owner = user.clone();
                    self.source("listen.unix-owner", "User");
                }
                self.note(
                    "User",
                    NoteLevel::Info,
                    format!("the scanning workers run as {user} (sandbox.user) and the socket file belongs to {user}, as clamd's; path commands read files with the client's rights, not {user}'s"),
                );
            }
            None => {
                let user = self.config.sandbox.user.clone();
                self.notes.push(Note {
                    origin: Origin::Absent,
                    option: "User".into(),
                    level: NoteLevel::Info,
                    message: format!("clamd would run as root; clamsentry's scanning workers run as {user} (sandbox.user)"),
                });
            }
        }
    }

    fn logging(&mut self) {
        if self.conf.is_set("Foreground") {
            let message = if self.conf.enabled("Foreground") {
                "clamsentry stays in the foreground"
            } else {
                "`clamsentry clamd` (clamd's command line) forks into the background once it serves, as clamd; `clamsentry --clamd-conf` always stays in the foreground"
            };
            let name = match self.origin("Foreground") {
                Origin::CommandLine => "--foreground",
                _ => "Foreground",
            };
            let origin = self.origin("Foreground");
            self.notes.push(Note {
                origin,
                option: name.into(),
                level: NoteLevel::Info,
                message: message.into(),
            });
        }
        if self.conf.is_set("LogClean") {
            self.config.log.clean = self.conf.enabled("LogClean");
            self.source("log.clean", "LogClean");
        }
        if self.conf.enabled("LogSyslog") {
            self.config.log.target = LogTarget::Journald;
            self.source("log.target", "LogSyslog");
            self.note(
                "LogSyslog",
                NoteLevel::Info,
                "logs go to journald (log.target), with structured fields",
            );
        }
        for name in ["Debug", "debug"] {
            if self.conf.enabled(name) {
                self.config.log.level = LogLevel::Debug;
                self.source("log.level", name);
                self.note(
                    name,
                    NoteLevel::Info,
                    "clamsentry logs at debug level (log.level); libclamav's own debug messages are not shown",
                );
                // The command-line flag is shown as typed (the table's
                // name is the bare `debug`).
                if name == "debug" {
                    if let Some(n) = self.notes.last_mut() {
                        n.option = "--debug".into();
                    }
                }
            }
        }
    }

    fn refused_and_logged(&mut self) {
        for option in OPTIONS {
            let key = option.name().or(option.long()).unwrap_or_default();
            if !self.conf.is_set(key) {
                continue;
            }
            let shown = option.shown();
            let written = self.set(key).map(|e| e.written.clone()).unwrap_or_default();
            match option.disposition {
                Disposition::Logged(reason) => {
                    let value = written
                        .split_once([' ', '\t', '='])
                        .map(|(_, v)| v.trim().to_string())
                        .unwrap_or_default();
                    let origin = self.origin(key);
                    self.notes.push(Note {
                        origin,
                        option: shown,
                        level: NoteLevel::Info,
                        message: format!("{value}: read, no effect: {reason}"),
                    });
                }
                Disposition::Refused(message) => {
                    let asks = match option.kind {
                        Kind::Bool => self.conf.enabled(key),
                        _ => true,
                    };
                    if asks {
                        self.refuse(key, message);
                    }
                }
                Disposition::Mapped(_) | Disposition::Ignored => {}
            }
        }
    }
}

/// `strtol(s, &end, 8)` that must consume the whole text (clamd's check of
/// LocalSocketMode), as the unsigned mode clamd passes on.
fn strtol_octal(s: &str) -> Option<u32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        // strtol consumed nothing: end is the start of the text.
        return s.is_empty().then_some(0);
    }
    let mut v: u64 = 0;
    for b in digits.bytes() {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = (v * 8 + u64::from(b - b'0')).min(u64::from(u32::MAX));
    }
    let v = v as u32;
    Some(if neg { v.wrapping_neg() } else { v })
}

impl Translation {
    /// The lines of the file and of the command line, by origin.
    pub fn lines(&self) -> &BTreeMap<Origin, String> {
        &self.lines
    }

    /// The configuration as TOML that [`Config::parse`] reads back to the
    /// same value: only the keys the file changed, each under a comment
    /// with the clamd.conf lines it came from and their notes; then the lines
    /// without a clamsentry setting, as comments; refused lines as comments
    /// that say so (their keys are left out).
    pub fn to_commented_toml(&self, path: &str) -> Result<String, String> {
        let ours = toml::Value::try_from(&self.config).map_err(|e| e.to_string())?;
        let defaults = toml::Value::try_from(Config::default()).map_err(|e| e.to_string())?;
        let mut out = format!(
            "# clamsentry configuration converted from {path} by clamsentry convert-clamd-conf.\n\
             # Only the settings that differ from clamsentry's defaults are here; each says\n\
             # which clamd.conf line it came from. Every other key keeps the default shown\n\
             # in /etc/clamsentry/clamsentry.toml (man clamsentry.toml).\n"
        );
        let mut shown: Vec<Origin> = Vec::new();
        let notes_of = |origin: Origin| -> Vec<String> {
            let mut v: Vec<String> = self
                .notes
                .iter()
                .filter(|n| n.origin == origin)
                .map(|n| format!("{}: {}", n.option, n.message))
                .collect();
            v.extend(
                self.problems
                    .iter()
                    .filter(|p| p.origin == origin)
                    .map(|p| format!("REFUSED: {}: {}", p.option, p.message)),
            );
            v
        };
        let describe = |origin: Origin| -> String {
            let written = self.lines.get(&origin).cloned().unwrap_or_default();
            match origin {
                Origin::Line(n) => format!("line {n}: {written}"),
                Origin::CommandLine => format!("command line: {written}"),
                Origin::Absent => String::new(),
            }
        };
        for table in [
            "database",
            "listen",
            "limits",
            "scan",
            "policy",
            "policy.unix",
            "policy.tcp",
            "sandbox",
            "log",
            "service",
            "virus-event",
        ] {
            let (Some(mine), Some(default)) = (lookup(&ours, table), lookup(&defaults, table))
            else {
                continue;
            };
            let mut body = String::new();
            for (key, value) in mine {
                if value.is_table() || default.get(key) == Some(value) {
                    continue;
                }
                let dotted = format!("{table}.{key}");
                let origins = self
                    .sources
                    .iter()
                    .find(|(k, _)| **k == dotted)
                    .map(|(_, o)| o.clone())
                    .unwrap_or_default();
                if origins.is_empty() {
                    body.push_str(&implicit_comment(&dotted));
                }
                for o in origins {
                    if shown.contains(&o) {
                        if let Origin::Line(n) = o {
                            body.push_str(&format!("# (line {n}, above)\n"));
                        }
                        continue;
                    }
                    shown.push(o);
                    body.push_str(&format!("# {}\n", printable(&describe(o))));
                    for n in notes_of(o) {
                        body.push_str(&comment(&format!("  {n}")));
                    }
                }
                body.push_str(&format!("{key} = {value}\n"));
            }
            if !body.is_empty() {
                out.push_str(&format!("\n[{table}]\n{body}"));
            }
        }
        let mut rest = String::new();
        for origin in self.lines.keys() {
            if shown.contains(origin) {
                continue;
            }
            rest.push_str(&format!("# {}\n", printable(&describe(*origin))));
            let notes = notes_of(*origin);
            if notes.is_empty() {
                rest.push_str("#   (clamsentry's default is the same)\n");
            }
            for n in notes {
                rest.push_str(&comment(&format!("  {n}")));
            }
        }
        let absent: Vec<String> = notes_of(Origin::Absent);
        if !rest.is_empty() || !absent.is_empty() {
            out.push_str("\n# The other lines: no clamsentry setting of their own.\n");
            out.push_str(&rest);
            for n in absent {
                out.push_str(&comment(&n));
            }
        }
        Ok(out)
    }
}

/// Why a key differs from clamsentry's default without a line of its own.
fn implicit_comment(key: &str) -> String {
    match key {
        "listen.unix" => "# No LocalSocket line: no Unix socket, as in clamd.\n".into(),
        _ => format!("# ({key} follows from the lines above)\n"),
    }
}

/// `text` with control characters escaped (TOML comments may not hold them).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` as comment lines of at most about 78 characters.
fn comment(text: &str) -> String {
    let text = printable(text);
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split(' ') {
        if line.len() + 1 + word.len() > 78 && line.len() > 4 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#    ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn lookup<'v>(
    value: &'v toml::Value,
    dotted: &str,
) -> Option<&'v toml::map::Map<String, toml::Value>> {
    let mut v = value;
    for part in dotted.split('.') {
        v = v.get(part)?;
    }
    v.as_table()
}

/// Reads `path` as clamd would (on top of `command_line`, the options from
/// clamd's command line) and translates it; any problem is an error that
/// lists them all.
pub fn load(path: &Path, command_line: ClamdConf) -> Result<(Loaded, Translation), ConfigError> {
    let conf = command_line
        .read_file(path)
        .map_err(|p| ConfigError::ClamdConf(vec![p]))?;
    let translation = conf.translate(&Env::system());
    if !translation.problems.is_empty() {
        return Err(ConfigError::ClamdConf(translation.problems.clone()));
    }
    let text = translation
        .config
        .to_toml()
        .map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            place: None,
            key: None,
            message,
        })?;
    let loaded = Loaded {
        config: translation.config.clone(),
        source: Some(path.to_path_buf()),
        text,
        notes: translation.notes.clone(),
    };
    Ok((loaded, translation))
}

/// Whether `text` reads like a clamd.conf rather than TOML: its first
/// setting is `Name value` with a clamd option name (or the Example line).
pub fn looks_like_clamd_conf(text: &str) -> bool {
    let Some(first) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    let name = first.split([' ', '\t']).next().unwrap_or("");
    name == "Example" || (table::by_name(name).is_some() && !first.contains('='))
}

#[cfg(test)]
mod tests;
