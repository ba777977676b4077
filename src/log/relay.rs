//! The log relay: every child process sends its log records to the
//! supervisor, which writes them marked as that child's, within the
//! per-identity budgets. No child writes to the daemon's stderr or to
//! journald, so no child can write a line that looks like the
//! supervisor's, and none needs a socket to journald.
//!
//! Child side (engine holder, workers, other helpers the supervisor
//! starts), one call: [`init_child`] with the log channel (for an exec'd
//! child, [`Typed::inherit`] of [`LOG_FD`]). Events become [`LogRecord`]s
//! ([`to_wire`]: the fields of the enclosing spans included, values as
//! bytes, cut to the record's bounds) and are sent without waiting: when
//! the channel is full the record is dropped and counted, and the next
//! record that goes through carries the count. A forked child that gets a
//! channel of its own calls [`switch`] (a worker forked by the engine
//! holder: the holder's channel is closed in it).
//!
//! Supervisor side (the pure part; the readers are in
//! `supervisor::logrelay`): [`relayed`] turns a decoded record into the
//! supervisor's own [`Record`] with the marks first (`source=worker
//! worker=7 pid=1234`, `via=stderr` for raw stderr lines) and the child's
//! fields after them, a child field with a name the supervisor uses
//! ([`is_reserved`]) renamed `child_<name>`; [`classify`] says which budget
//! a line is charged to.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLock;

use tracing::Level;

use super::limiter::Class;
use super::record::{Capture, Name, Record, Sink};
use crate::ipc::logrec::{LogLevel, LogRecord, MAX_FIELD_NAME};
use crate::ipc::typed::{Nothing, Typed};

/// A child's end of its log channel: records go, nothing comes back.
pub type LogChannel = Typed<LogRecord, Nothing>;

/// Where an exec'd child finds its log channel (its control channel is at
/// 3).
pub const LOG_FD: RawFd = 4;

// ---------------------------------------------------------------- child

/// This process's log channel (`None` before [`init_child`]).
static CHANNEL: RwLock<Option<LogChannel>> = RwLock::new(None);
/// Records dropped since the last one sent.
static DROPPED: AtomicU32 = AtomicU32::new(0);

/// Sends records on [`CHANNEL`].
struct Relay;

impl Sink for Relay {
    fn write(&self, record: &Record) {
        let guard = CHANNEL.read().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = guard.as_ref() {
            send_counted(channel, &DROPPED, record);
        }
    }
}

/// Sends `record` on a non-blocking `channel` with the count of records
/// dropped before it; when the channel is full (or gone), drops it and
/// counts it in `dropped` instead.
fn send_counted(channel: &LogChannel, dropped: &AtomicU32, record: &Record) {
    let before = dropped.swap(0, Ordering::Relaxed);
    if channel.send(&to_wire(record, before), &[]).is_err() {
        dropped.fetch_add(before.saturating_add(1), Ordering::Relaxed);
    }
}

/// Sets up this child's logging at `level` (as `log.level`; RUST_LOG
/// overrides): its events go to the supervisor on `channel`. Without a
/// channel (`clamsentry sandbox-check`'s own processes), they go to stderr.
pub fn init_child(level: &str, channel: Option<LogChannel>) {
    match channel {
        Some(c) => {
            let _ = c.set_nonblocking(true);
            *CHANNEL.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
            super::install(Capture::new(Relay), level);
        }
        None => super::install(Capture::new(super::stderr::stderr()), level),
    }
}

/// Replaces the log channel (and forgets the drop count) in a forked child
/// that got one of its own; the inherited one is closed.
pub fn switch(channel: LogChannel) {
    let _ = channel.set_nonblocking(true);
    let old = CHANNEL
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .replace(channel);
    drop(old);
    DROPPED.store(0, Ordering::Relaxed);
}

/// A field name as a record carries it: lowercase ASCII letters, digits
/// and `_`, `.` as `_`, no leading `_` or digit, at most
/// [`MAX_FIELD_NAME`] bytes; `None` when nothing is left.
pub fn wire_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .map(|c| {
            if c == '.' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .skip_while(|c| *c == '_' || c.is_ascii_digit())
        .take(MAX_FIELD_NAME)
        .collect();
    (!n.is_empty()).then_some(n)
}

/// The record a child sends for `record`, cut to the bounds.
pub fn to_wire(record: &Record, dropped: u32) -> LogRecord {
    let mut truncated = false;
    let fields = record
        .fields
        .iter()
        .filter_map(|(n, v)| match wire_name(n) {
            Some(n) => Some((n, v.clone())),
            None => {
                truncated = true;
                None
            }
        })
        .collect();
    LogRecord {
        level: LogLevel::from_tracing(record.level),
        truncated,
        dropped,
        target: record.target.clone(),
        file: record.file.clone(),
        line: record.line,
        message: record.message.clone(),
        fields,
    }
    .fit()
}

// ----------------------------------------------------------- supervisor

/// Which of the daemon's processes a relayed line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Scanning worker `n`.
    Worker(u64),
    /// The engine holder of generation `g`.
    EngineHolder(u64),
    /// Another helper the supervisor starts (`"observer"`,
    /// `"virus-event"`).
    Helper(&'static str),
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Worker(_) => "worker",
            Source::EngineHolder(_) => "engine-holder",
            Source::Helper(name) => name,
        }
    }
}

/// Field names the supervisor's marks and outputs use: a child's field with
/// one of these names is renamed `child_<name>`. Names starting with `_`
/// (journald's trusted fields) never get this far: a record cannot carry
/// them.
pub const RESERVED: &[&str] = &[
    // The marks.
    "source",
    "worker",
    "generation",
    "pid",
    "via",
    "truncated",
    // What the journald sink writes itself, and journald's well-known
    // fields.
    "message",
    "message_id",
    "priority",
    "target",
    "code_file",
    "code_line",
    "code_func",
    "errno",
    "invocation_id",
    "user_invocation_id",
    "documentation",
    "tid",
    "unit",
    "user_unit",
];

/// Prefixes reserved the same way (`syslog_identifier`, `object_pid`, …).
pub const RESERVED_PREFIXES: &[&str] = &["syslog_", "object_", "coredump_", "code_"];

pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What the supervisor knows about a relayed line's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub source: Source,
    /// The sender's pid as the kernel told it (SCM_CREDENTIALS), when known.
    pub pid: Option<i32>,
    /// Raw bytes the child wrote to its stderr, not a record.
    pub via_stderr: bool,
}

/// A child's record as the supervisor writes it: the marks
/// (`source`, `worker` or `generation`, `pid`, `via`, `truncated`), then
/// the child's fields, reserved names renamed `child_<name>`.
pub fn relayed(rec: LogRecord, marks: &Marks) -> Record {
    let mut fields: Vec<(Name, Vec<u8>)> = Vec::with_capacity(rec.fields.len() + 5);
    fields.push((Cow::Borrowed("source"), marks.source.name().into()));
    match marks.source {
        Source::Worker(w) => fields.push((Cow::Borrowed("worker"), w.to_string().into())),
        Source::EngineHolder(g) => fields.push((Cow::Borrowed("generation"), g.to_string().into())),
        Source::Helper(_) => {}
    }
    if let Some(pid) = marks.pid {
        fields.push((Cow::Borrowed("pid"), pid.to_string().into()));
    }
    if marks.via_stderr {
        fields.push((Cow::Borrowed("via"), b"stderr".to_vec()));
    }
    if rec.truncated {
        fields.push((Cow::Borrowed("truncated"), b"true".to_vec()));
    }
    for (name, value) in rec.fields {
        let name = if is_reserved(&name) {
            format!("child_{name}")
        } else {
            name
        };
        fields.push((Cow::Owned(name), value));
    }
    Record {
        level: rec.level.to_tracing(),
        target: rec.target,
        file: rec.file,
        line: rec.line,
        message: rec.message,
        fields,
    }
}

/// The record of one line a child wrote to its stderr (libclamav, a panic
/// message): a warning with the line as its message.
pub fn stderr_line(line: &[u8]) -> LogRecord {
    LogRecord {
        level: LogLevel::Warn,
        truncated: false,
        dropped: 0,
        target: "clamsentry::stderr".into(),
        file: None,
        line: None,
        message: line.to_vec(),
        fields: Vec::new(),
    }
}

/// The connection a relayed record is about: its `id` field (the `conn`
/// span's), when it is a number.
pub fn conn_id(rec: &LogRecord) -> Option<u64> {
    let (_, v) = rec.fields.iter().find(|(n, _)| n == "id")?;
    let text = std::str::from_utf8(v).ok()?;
    if text.starts_with('+') {
        return None;
    }
    text.parse().ok()
}

/// Which budget a line is charged to:
/// * scan results (`scan_result=found` or `clean`) and debug and trace
///   lines: [`Class::Volume`] (`log.result-lines-per-minute`): the
///   operator's scan log, as clamd writes it, which honest clients reach
///   only by scanning; bounded because a compromised worker can claim
///   anything is a result;
/// * everything else (refusals, client errors, warnings, other info
///   lines): [`Class::Lines`] (`log.peer-lines-per-minute`).
///
/// `scan_result=error` is a refusal or an error: [`Class::Lines`].
pub fn classify(level: Level, scan_result: Option<&[u8]>) -> Class {
    if level == Level::DEBUG || level == Level::TRACE {
        return Class::Volume;
    }
    match scan_result {
        Some(b"found") | Some(b"clean") => Class::Volume,
        _ => Class::Lines,
    }
}

/// [`classify`] for a record.
pub fn class_of(rec: &LogRecord) -> Class {
    let result = rec
        .fields
        .iter()
        .find(|(n, _)| n == "scan_result")
        .map(|(_, v)| v.as_slice());
    classify(rec.level.to_tracing(), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(level: LogLevel, fields: &[(&str, &[u8])]) -> LogRecord {
        LogRecord {
            level,
            truncated: false,
            dropped: 0,
            target: "clamsentry::worker::conn".into(),
            file: None,
            line: None,
            message: b"m".to_vec(),
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn results_and_debug_go_to_the_volume_budget_the_rest_to_the_lines_budget() {
        use LogLevel::*;
        let class = |level, fields: &[(&str, &[u8])]| class_of(&rec(level, fields));
        assert_eq!(class(Warn, &[("scan_result", b"found")]), Class::Volume);
        assert_eq!(class(Info, &[("scan_result", b"clean")]), Class::Volume);
        assert_eq!(class(Debug, &[("scan_result", b"clean")]), Class::Volume);
        assert_eq!(class(Debug, &[]), Class::Volume);
        assert_eq!(class(Trace, &[]), Class::Volume);
        assert_eq!(class(Warn, &[("scan_result", b"error")]), Class::Lines);
        assert_eq!(class(Info, &[("path", b"/x")]), Class::Lines);
        assert_eq!(class(Warn, &[]), Class::Lines);
        assert_eq!(class(Error, &[("scan_result", b"FOUND")]), Class::Lines);
    }

    #[test]
    fn the_connection_is_the_id_field() {
        assert_eq!(conn_id(&rec(LogLevel::Info, &[("id", b"17")])), Some(17));
        assert_eq!(conn_id(&rec(LogLevel::Info, &[("id", b"+17")])), None);
        assert_eq!(conn_id(&rec(LogLevel::Info, &[("id", b"x")])), None);
        assert_eq!(conn_id(&rec(LogLevel::Info, &[("peer", b"1")])), None);
    }

    #[test]
    fn marks_come_first_and_reserved_child_fields_are_renamed() {
        let r = rec(
            LogLevel::Info,
            &[
                ("source", b"supervisor"),
                ("worker", b"1"),
                ("pid", b"1"),
                ("syslog_identifier", b"sshd"),
                ("priority", b"0"),
                ("id", b"7"),
            ],
        );
        let marks = Marks {
            source: Source::Worker(7),
            pid: Some(1234),
            via_stderr: false,
        };
        let out = relayed(r, &marks);
        let names: Vec<&str> = out.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(
            names,
            [
                "source",
                "worker",
                "pid",
                "child_source",
                "child_worker",
                "child_pid",
                "child_syslog_identifier",
                "child_priority",
                "id"
            ]
        );
        assert_eq!(out.get("source"), Some(b"worker".as_slice()));
        assert_eq!(out.get("worker"), Some(b"7".as_slice()));
        assert_eq!(out.get("pid"), Some(b"1234".as_slice()));
        let mut stderr = stderr_line(b"panicked at x");
        stderr.truncated = true;
        let out = relayed(
            stderr,
            &Marks {
                source: Source::EngineHolder(2),
                pid: None,
                via_stderr: true,
            },
        );
        let names: Vec<&str> = out.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["source", "generation", "via", "truncated"]);
        assert_eq!(out.level, Level::WARN);
    }

    #[test]
    fn relayed_lines_keep_their_marks_on_every_output() {
        let evil: &[u8] = b"x source=supervisor\n2026-01-01T00:00:00.000000Z  INFO path refused";
        let r = rec(LogLevel::Error, &[("path", evil), ("source", evil)]);
        let mut r = r;
        r.message = evil.to_vec();
        let out = relayed(
            r,
            &Marks {
                source: Source::Worker(3),
                pid: Some(99),
                via_stderr: false,
            },
        );
        let line = super::super::stderr::format_line("T", &out);
        assert_eq!(line.matches('\n').count(), 1);
        let p = super::super::stderr::parse_line(&line).unwrap();
        assert_eq!(p.message, evil);
        assert_eq!(p.fields[0], ("source".to_string(), b"worker".to_vec()));
        assert_eq!(p.fields[1], ("worker".to_string(), b"3".to_vec()));
        assert_eq!(p.fields[2], ("pid".to_string(), b"99".to_vec()));
        assert_eq!(p.fields.iter().filter(|(n, _)| n == "source").count(), 1);
        let (entry, _) = super::super::journald::entry(&out);
        let fields = super::super::journald::decode_journal_fields(&entry).unwrap();
        let get = |n: &str| -> Vec<&[u8]> {
            fields
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_slice())
                .collect()
        };
        assert_eq!(get("SOURCE"), [b"worker".as_slice()]);
        assert_eq!(get("WORKER"), [b"3".as_slice()]);
        assert_eq!(get("CHILD_SOURCE"), [evil]);
        assert_eq!(get("PATH"), [evil]);
        assert_eq!(get("SYSLOG_IDENTIFIER"), [b"clamsentry".as_slice()]);
        assert!(fields.iter().all(|(k, _)| !k.starts_with('_')));
    }

    #[test]
    fn a_full_channel_drops_records_and_the_next_one_carries_the_count() {
        let (child, supervisor) = LogChannel::pair().unwrap();
        child.set_nonblocking(true).unwrap();
        let dropped = AtomicU32::new(0);
        let record = Record {
            level: Level::INFO,
            target: "clamsentry::worker".into(),
            file: None,
            line: None,
            message: vec![b'm'; 1000],
            fields: Vec::new(),
        };
        // Nobody reads: the channel fills up and then drops.
        let mut sent = 0;
        while dropped.load(Ordering::Relaxed) == 0 {
            send_counted(&child, &dropped, &record);
            sent += 1;
            assert!(sent < 100_000, "the channel never filled");
        }
        send_counted(&child, &dropped, &record);
        send_counted(&child, &dropped, &record);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        // Read everything queued: none reports a drop yet.
        supervisor.set_nonblocking(true).unwrap();
        let mut got = 0;
        while let Ok(Some(m)) = supervisor.recv() {
            assert_eq!(m.msg.dropped, 0);
            got += 1;
        }
        assert_eq!(got, sent - 1);
        // Room again: the next record says 3 were dropped.
        send_counted(&child, &dropped, &record);
        assert_eq!(supervisor.recv().unwrap().unwrap().msg.dropped, 3);
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn wire_names_are_what_a_record_may_carry() {
        assert_eq!(wire_name("scan_result").as_deref(), Some("scan_result"));
        assert_eq!(wire_name("log.target").as_deref(), Some("log_target"));
        assert_eq!(wire_name("r#type").as_deref(), Some("rtype"));
        assert_eq!(wire_name("_SECRET").as_deref(), Some("secret"));
        assert_eq!(wire_name("9x").as_deref(), Some("x"));
        assert_eq!(wire_name("é"), None);
        assert_eq!(wire_name(&"a".repeat(40)).unwrap().len(), MAX_FIELD_NAME);
    }

    #[test]
    fn to_wire_keeps_bytes_and_cuts_to_the_bounds() {
        let record = Record {
            level: Level::WARN,
            target: "clamsentry::worker::conn".into(),
            file: Some("src/worker/conn.rs".into()),
            line: Some(3),
            message: b"virus found".to_vec(),
            fields: vec![
                (Cow::Borrowed("id"), b"7".to_vec()),
                (Cow::Borrowed("scan_target"), b"/a\n\xff".to_vec()),
                (Cow::Borrowed("é"), b"dropped".to_vec()),
            ],
        };
        let w = to_wire(&record, 5);
        assert_eq!(w.dropped, 5);
        assert!(w.truncated);
        assert_eq!(w.fields.len(), 2);
        assert_eq!(LogRecord::decode(&w.encode()).unwrap(), w);
    }
}
