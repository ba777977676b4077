//! One log event as data: level, target, message and fields, with the
//! exact bytes of every value. Every output (the stderr line, the journald
//! entry, the record a child sends to the supervisor) is made from a
//! [`Record`], so they all show the same fields.
//!
//! [`Capture`] is the tracing layer that turns events into records and
//! hands them to a [`Sink`]. Field values reach tracing as text; a value
//! that is the escaped text of [`LogBytes`](super::LogBytes) is decoded back
//! to its bytes ([`unescape`]); any other value is kept as it is. The fields
//! of the enclosing spans (the `conn` span's `id`, `peer`, `listener`) come
//! first, outermost span first, then the event's own.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::escape::unescape;

/// A field name: a tracing field's `&'static str`, or a name built at run
/// time (a relayed child's field, a mark).
pub type Name = Cow<'static, str>;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub level: Level,
    pub target: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The message, as bytes (it may quote a client).
    pub message: Vec<u8>,
    /// Span fields (outermost first), then the event's fields; never
    /// `message`.
    pub fields: Vec<(Name, Vec<u8>)>,
}

impl Record {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Where records go.
pub trait Sink: Send + Sync + 'static {
    fn write(&self, record: &Record);
}

impl<S: Sink + ?Sized> Sink for std::sync::Arc<S> {
    fn write(&self, record: &Record) {
        (**self).write(record)
    }
}

/// The tracing layer that turns every event into a [`Record`] for `sink`.
pub struct Capture<S> {
    sink: S,
}

impl<S: Sink> Capture<S> {
    pub fn new(sink: S) -> Capture<S> {
        Capture { sink }
    }
}

/// A span's fields, kept in its extensions.
struct SpanFields(Vec<(Name, Vec<u8>)>);

/// Collects visited fields as bytes.
struct Collect<'a> {
    fields: &'a mut Vec<(Name, Vec<u8>)>,
    message: Option<&'a mut Vec<u8>>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, bytes: Vec<u8>) {
        if field.name() == "message" {
            if let Some(m) = self.message.as_deref_mut() {
                *m = bytes;
                return;
            }
        }
        self.fields.push((Cow::Borrowed(field.name()), bytes));
    }

    fn put_text(&mut self, field: &Field, text: &str) {
        let bytes = unescape(text).unwrap_or_else(|| text.as_bytes().to_vec());
        self.put(field, bytes);
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_text(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field, value.to_vec());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string().into_bytes());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string().into_bytes());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string().into_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_text(field, &format!("{value:?}"));
    }
}

/// The record of `event`, with the fields of the spans it is in.
pub fn capture<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Record
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut fields = Vec::new();
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                fields.extend(f.iter().cloned());
            }
        }
    }
    let mut message = Vec::new();
    event.record(&mut Collect {
        fields: &mut fields,
        message: Some(&mut message),
    });
    let meta = event.metadata();
    Record {
        level: *meta.level(),
        target: meta.target().to_string(),
        file: meta.file().map(str::to_string),
        line: meta.line(),
        message,
        fields,
    }
}

impl<S, Sub> tracing_subscriber::Layer<Sub> for Capture<S>
where
    S: Sink,
    Sub: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Sub>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Vec::new();
        attrs.record(&mut Collect {
            fields: &mut fields,
            message: None,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, Sub>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collect {
                fields,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, Sub>) {
        self.sink.write(&capture(event, &ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Default)]
    pub(crate) struct Keep(pub(crate) Mutex<Vec<Record>>);

    impl Sink for Keep {
        fn write(&self, record: &Record) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    #[test]
    fn events_become_records_with_span_fields_and_exact_bytes() {
        let keep = Arc::new(Keep::default());
        let subscriber = tracing_subscriber::registry().with(Capture::new(Arc::clone(&keep)));
        let path: &[u8] = b"/tmp/a\nb\xff";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", id = 7u64, peer = "unix uid=0");
            let _enter = span.enter();
            tracing::warn!(
                path = %super::super::LogBytes(path),
                plain = "C:\\temp",
                n = 68u64,
                ok = true,
                "found in {}",
                super::super::LogBytes(path)
            );
        });
        let records = keep.0.lock().unwrap();
        let r = &records[0];
        assert_eq!(r.level, Level::WARN);
        assert_eq!(r.message, [b"found in ".as_slice(), path].concat());
        let names: Vec<&str> = r.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["id", "peer", "path", "plain", "n", "ok"]);
        assert_eq!(r.get("id"), Some(b"7".as_slice()));
        assert_eq!(r.get("peer"), Some(b"unix uid=0".as_slice()));
        assert_eq!(r.get("path"), Some(path));
        assert_eq!(r.get("plain"), Some(b"C:\\temp".as_slice()));
        assert_eq!(r.get("n"), Some(b"68".as_slice()));
        assert_eq!(r.get("ok"), Some(b"true".as_slice()));
        assert_eq!(r.file.as_deref(), Some("src/log/record.rs"));
    }
}
