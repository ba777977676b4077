//! The metrics as text: OpenMetrics 1.0.0 (`application/openmetrics-text`)
//! or the Prometheus text format 0.0.4, from one snapshot.
//!
//! A small encoder rather than a metrics library: the numbers arrive ready
//! made (counters summed by the supervisor), the label values come from
//! closed sets, and both formats are needed (`prometheus-client` writes
//! only OpenMetrics). The two formats differ in three places: a counter's
//! family name has no `_total` in OpenMetrics' `# TYPE` line, `build_info`
//! is an `info` family there, and OpenMetrics ends with `# EOF`.
//! Checked by `promtool check metrics` and a real Prometheus scrape
//! (`tests/observe.rs`, `tests/prometheus.rs`).
#![forbid(unsafe_code)]

use std::fmt::Write;

use super::agent::Answer;
use crate::ipc::observe::{
    command_of, Category, CommandOutcome, ConnOutcome, ErrorReason, Histogram, Limit,
    ReloadTrigger, RestartReason, Role, ScanCommand, ScanResult, SelftestOutcome, Snapshot,
    COMMANDS, DURATION_BOUNDS_US, QUEUE_WAIT_BOUNDS_US, RELOAD_BOUNDS_US, SIZE_BOUNDS,
};

/// Which text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// From a request's `Accept` header: OpenMetrics when it is asked for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// What else the text depends on.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// `metrics.compat-names`.
    pub compat: bool,
    /// `limits.idle-timeout` (clamav_exporter's `idle_timeout_threads`).
    pub idle_timeout: u64,
    /// `limits.max-threads`: the daemon's scanning threads, shared out
    /// among its workers (clamav_exporter's `max_threads`; the live ones
    /// are the workers' sum, reserve threads included).
    pub max_threads: u32,
    /// The agent's answer now (`ready`).
    pub answer: &'a Answer,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

struct Text {
    out: String,
    format: Format,
}

/// `\`, `"` and line ends escaped, as both formats want in label values.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Text {
    /// `# HELP` and `# TYPE` of a family. `name` is the sample name
    /// (counters with `_total`, info with `_info`).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let family = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            (Format::OpenMetrics, Kind::Info) => name.strip_suffix("_info").unwrap_or(name),
            _ => name,
        };
        let kind = match (kind, self.format) {
            (Kind::Counter, _) => "counter",
            (Kind::Gauge, _) => "gauge",
            (Kind::Histogram, _) => "histogram",
            (Kind::Info, Format::OpenMetrics) => "info",
            (Kind::Info, Format::Prometheus) => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One family with one sample.
    fn one(&mut self, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram's samples; bounds and sum are divided by `scale` (µs →
    /// seconds: 1e6; bytes: 1).
    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &Histogram<N>,
        bounds: &[u64],
        scale: f64,
    ) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, c) in h.counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(*c);
            let le = match bounds.get(i) {
                Some(b) => seconds(*b as f64 / scale),
                None => "+Inf".to_string(),
            };
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        self.sample(
            &format!("{name}_sum"),
            labels,
            seconds(h.sum as f64 / scale),
        );
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// A float as both formats read it (`0.0025`, `1`, `120`).
fn seconds(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn kib(v: u64) -> u64 {
    v.saturating_mul(1024)
}

/// The whole text for one snapshot.
pub fn metrics(s: &Snapshot, format: Format, o: &Options<'_>) -> String {
    let mut t = Text {
        out: String::with_capacity(32 * 1024),
        format,
    };
    build_and_engine(&mut t, s);
    scanning(&mut t, s);
    connections(&mut t, s);
    processes(&mut t, s);
    health(&mut t, s, o);
    if o.compat {
        compat(&mut t, s, o);
    }
    if format == Format::OpenMetrics {
        t.out.push_str("# EOF\n");
    }
    t.out
}

fn build_and_engine(t: &mut Text, s: &Snapshot) {
    t.family(
        "clamsentry_build_info",
        Kind::Info,
        "clamsentry's version and the libclamav it scans with.",
    );
    t.sample(
        "clamsentry_build_info",
        &[("version", &s.version), ("libclamav", &s.libclamav)],
        1,
    );
    t.one(
        "clamsentry_start_time_seconds",
        Kind::Gauge,
        "When the daemon started, seconds since the epoch.",
        s.started,
    );
    t.one(
        "clamsentry_database_version",
        Kind::Gauge,
        "Version of the signature database in use (daily.cvd), 0 if unknown.",
        s.db.version,
    );
    t.one(
        "clamsentry_database_signatures",
        Kind::Gauge,
        "Signatures loaded in the engine in use.",
        s.db.signatures,
    );
    if s.db.build_time > 0 {
        t.one(
            "clamsentry_database_build_timestamp_seconds",
            Kind::Gauge,
            "Build time of the newest signature container (daily.cvd/.cld header), seconds since the epoch.",
            s.db.build_time,
        );
    }
    t.one(
        "clamsentry_engine_generation",
        Kind::Gauge,
        "Engine generation: 1 at start, one more per reload.",
        s.generation,
    );
    t.one(
        "clamsentry_engine_load_seconds",
        Kind::Gauge,
        "How long the engine in use took to load and compile.",
        seconds(s.engine_load_us as f64 / 1e6),
    );
    t.family(
        "clamsentry_reloads_total",
        Kind::Counter,
        "Signature reloads by what asked for them and how they ended.",
    );
    for trigger in ReloadTrigger::ALL {
        for (ok, result) in [(true, "ok"), (false, "failed")] {
            let v = s.reloads[trigger.index() * 2 + usize::from(ok)];
            t.sample(
                "clamsentry_reloads_total",
                &[("trigger", trigger.label()), ("result", result)],
                v,
            );
        }
    }
    t.family(
        "clamsentry_reload_duration_seconds",
        Kind::Histogram,
        "Time from a reload's start until its workers serve (or it failed).",
    );
    t.histogram(
        "clamsentry_reload_duration_seconds",
        &[],
        &s.reload_duration,
        &RELOAD_BOUNDS_US,
        1e6,
    );
}

fn scanning(t: &mut Text, s: &Snapshot) {
    t.family(
        "clamsentry_scans_total",
        Kind::Counter,
        "Objects scanned (a stream, a descriptor, each file of a path command) by command, listener and result.",
    );
    for l in &s.listeners {
        for c in ScanCommand::ALL {
            for r in ScanResult::ALL {
                t.sample(
                    "clamsentry_scans_total",
                    &[
                        ("command", c.label()),
                        ("listener", &l.counts.name),
                        ("result", r.label()),
                    ],
                    l.counts.scans(*c, *r),
                );
            }
        }
    }
    t.family(
        "clamsentry_scan_duration_seconds",
        Kind::Histogram,
        "Time from a scan's submission to the scanning threads until its verdict (queue wait included).",
    );
    t.histogram(
        "clamsentry_scan_duration_seconds",
        &[],
        &s.duration,
        &DURATION_BOUNDS_US,
        1e6,
    );
    t.family(
        "clamsentry_scan_size_bytes",
        Kind::Histogram,
        "Size of what was scanned.",
    );
    t.histogram(
        "clamsentry_scan_size_bytes",
        &[],
        &s.size,
        &SIZE_BOUNDS,
        1.0,
    );
    t.family(
        "clamsentry_detections_total",
        Kind::Counter,
        "Signatures reported, by the platform prefix of their name (ClamAV's naming guidelines; other: any other name).",
    );
    for c in Category::ALL {
        t.sample(
            "clamsentry_detections_total",
            &[("category", c.label())],
            s.detections[c.index()],
        );
    }
    if !s.top.is_empty() {
        t.family(
            "clamsentry_detections_by_name_total",
            Kind::Counter,
            "The most frequent signature names (metrics.top-detections), counted by the running workers and those gone.",
        );
        for (name, n) in &s.top {
            t.sample("clamsentry_detections_by_name_total", &[("name", name)], n);
        }
    }
    t.family(
        "clamsentry_limits_exceeded_total",
        Kind::Counter,
        "Requests that ran into a limit, by the configuration key that sets it.",
    );
    for l in Limit::ALL {
        t.sample(
            "clamsentry_limits_exceeded_total",
            &[("limit", l.label())],
            s.limits[l.index()],
        );
    }
    t.family(
        "clamsentry_scan_errors_total",
        Kind::Counter,
        "Scans that ended in an error or were refused, by reason.",
    );
    for r in ErrorReason::ALL {
        t.sample(
            "clamsentry_scan_errors_total",
            &[("reason", r.label())],
            s.errors[r.index()],
        );
    }
    t.one(
        "clamsentry_scans_abandoned_total",
        Kind::Counter,
        "Scans and path walks whose client left before its reply.",
        s.abandoned,
    );
}

fn connections(t: &mut Text, s: &Snapshot) {
    t.family(
        "clamsentry_connections_open",
        Kind::Gauge,
        "Client connections open now, by listener.",
    );
    for l in &s.listeners {
        t.sample(
            "clamsentry_connections_open",
            &[("listener", &l.counts.name)],
            l.open,
        );
    }
    t.family(
        "clamsentry_connections_total",
        Kind::Counter,
        "Client connections by listener and what became of them (accepted; refused: outside listen.tcp-allow; evicted: an idle one closed to make room; over_cap: refused at a connection cap).",
    );
    for l in &s.listeners {
        for o in ConnOutcome::ALL {
            t.sample(
                "clamsentry_connections_total",
                &[("listener", &l.counts.name), ("outcome", o.label())],
                l.connections[o.index()],
            );
        }
    }
    t.family(
        "clamsentry_commands_total",
        Kind::Counter,
        "Commands by listener, command and what the listener's policy decided (series appear once counted).",
    );
    for l in &s.listeners {
        for i in 0..COMMANDS {
            for o in CommandOutcome::ALL {
                let v = l.counts.commands[i * CommandOutcome::COUNT + o.index()];
                if v > 0 {
                    t.sample(
                        "clamsentry_commands_total",
                        &[
                            ("listener", &l.counts.name),
                            ("command", command_of(i).word()),
                            ("outcome", o.label()),
                        ],
                        v,
                    );
                }
            }
        }
    }
    t.one(
        "clamsentry_queue_depth",
        Kind::Gauge,
        "Scans waiting for a scanning thread, all workers.",
        s.pool.queued,
    );
    t.family(
        "clamsentry_queue_wait_seconds",
        Kind::Histogram,
        "How long scans waited for a scanning thread.",
    );
    t.histogram(
        "clamsentry_queue_wait_seconds",
        &[],
        &s.queue_wait,
        &QUEUE_WAIT_BOUNDS_US,
        1e6,
    );
    t.family(
        "clamsentry_scan_threads",
        Kind::Gauge,
        "Scanning threads of the serving and draining workers, by state.",
    );
    t.sample("clamsentry_scan_threads", &[("state", "busy")], s.pool.busy);
    t.sample(
        "clamsentry_scan_threads",
        &[("state", "idle")],
        s.pool.threads.saturating_sub(s.pool.busy),
    );
    t.family(
        "clamsentry_workers",
        Kind::Gauge,
        "Worker processes by state (configured: the most there can be, limits.max-workers bound to clients plus limits.standby-workers).",
    );
    let w = &s.workers;
    for (state, n) in [
        ("configured", w.configured),
        ("forking", w.forking),
        ("serving", w.serving),
        ("draining", w.draining),
    ] {
        t.sample("clamsentry_workers", &[("state", state)], n);
    }
    t.family(
        "clamsentry_worker_restarts_total",
        Kind::Counter,
        "Workers replaced, by reason.",
    );
    for r in RestartReason::ALL {
        t.sample(
            "clamsentry_worker_restarts_total",
            &[("reason", r.label())],
            s.restarts[r.index()],
        );
    }
}

fn processes(t: &mut Text, s: &Snapshot) {
    let roles = |t: &mut Text, name: &str, f: &dyn Fn(usize) -> String| {
        for r in Role::ALL {
            t.sample(name, &[("role", r.label())], f(r.index()));
        }
    };
    t.family(
        "clamsentry_processes",
        Kind::Gauge,
        "The daemon's processes by role.",
    );
    roles(t, "clamsentry_processes", &|i| {
        s.roles[i].processes.to_string()
    });
    t.family(
        "clamsentry_process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the role's processes (shared pages counted in each).",
    );
    roles(t, "clamsentry_process_resident_memory_bytes", &|i| {
        kib(s.roles[i].rss_kib).to_string()
    });
    t.family(
        "clamsentry_process_pss_bytes",
        Kind::Gauge,
        "Proportional set size of the role's processes (shared pages divided among their sharers; the roles add up to the daemon's memory).",
    );
    roles(t, "clamsentry_process_pss_bytes", &|i| {
        kib(s.roles[i].pss_kib).to_string()
    });
    t.family(
        "clamsentry_process_cpu_seconds_total",
        Kind::Counter,
        "CPU time (user and system) of the role's processes, those gone included.",
    );
    roles(t, "clamsentry_process_cpu_seconds_total", &|i| {
        seconds(s.roles[i].cpu_us as f64 / 1e6)
    });
    t.family(
        "clamsentry_process_open_fds",
        Kind::Gauge,
        "Open file descriptors of the role's processes.",
    );
    roles(t, "clamsentry_process_open_fds", &|i| {
        s.roles[i].fds.to_string()
    });
}

fn health(t: &mut Text, s: &Snapshot, o: &Options<'_>) {
    let st = &s.selftest;
    if st.last_success > 0 {
        t.one(
            "clamsentry_selftest_last_success_timestamp_seconds",
            Kind::Gauge,
            "When the EICAR self-test last passed, seconds since the epoch.",
            st.last_success,
        );
    }
    t.one(
        "clamsentry_selftest_failures_total",
        Kind::Counter,
        "Self-tests whose EICAR stream was not reported FOUND (or got no answer in time).",
        st.runs[SelftestOutcome::Failed.index()],
    );
    t.family(
        "clamsentry_selftests_total",
        Kind::Counter,
        "Self-tests by result (skipped: no serving worker, or a full queue).",
    );
    for r in SelftestOutcome::ALL {
        t.sample(
            "clamsentry_selftests_total",
            &[("result", r.label())],
            st.runs[r.index()],
        );
    }
    t.one(
        "clamsentry_selftest_failing",
        Kind::Gauge,
        "1 while the last self-test that ran failed.",
        u8::from(st.failing),
    );
    t.one(
        "clamsentry_ready",
        Kind::Gauge,
        "1 when the HAProxy agent would answer ready: an engine serves, not stopping or in maintenance, self-test passing, database within database.max-age.",
        u8::from(o.answer.is_ready()),
    );
    t.one(
        "clamsentry_draining",
        Kind::Gauge,
        "1 while the daemon stops: no new connections, finishing the scans in flight.",
        u8::from(s.flags.stopping),
    );
    t.one(
        "clamsentry_maintenance",
        Kind::Gauge,
        "1 while an administrator holds the daemon in maintenance.",
        u8::from(s.flags.maintenance),
    );
    t.one(
        "clamsentry_reloading",
        Kind::Gauge,
        "1 while a signature reload is in progress.",
        u8::from(s.flags.reloading),
    );
}

/// sergeymakinen/clamav_exporter's names and labels (its README and
/// exporter/exporter.go): one pool, index 0, primary, as clamd's STATS
/// shows one; the memory figures clamd reports as N/A are left out, as that
/// exporter leaves them out; `pools_used`/`pools_total` are the PSS of the
/// processes holding the engine (engine holders, workers) and of the whole
/// daemon, as STATS shows them.
fn compat(t: &mut Text, s: &Snapshot, o: &Options<'_>) {
    let pool = [("index", "0"), ("primary", "1")];
    t.one(
        "clamav_up",
        Kind::Gauge,
        "Was the last scrape successful.",
        1,
    );
    t.family("clamav_version", Kind::Gauge, "The version of this ClamAV.");
    t.sample("clamav_version", &[("version", &s.libclamav)], 1);
    if s.db.version > 0 {
        t.one(
            "clamav_db_version",
            Kind::Gauge,
            "Currently installed ClamAV Virus Database version.",
            s.db.version,
        );
    }
    if s.db.build_time > 0 {
        t.one(
            "clamav_db_timestamp_seconds",
            Kind::Gauge,
            "Unix timestamp of the ClamAV Virus Database build time.",
            s.db.build_time,
        );
    }
    let p = &s.pool;
    let gauges: [(&str, &str, String); 9] = [
        ("clamav_pool_state", "State of the thread pool.", "1".into()),
        (
            "clamav_pool_live_threads",
            "Number of live threads in the pool.",
            p.threads.to_string(),
        ),
        (
            "clamav_pool_idle_threads",
            "Number of idle threads in the pool.",
            p.threads.saturating_sub(p.busy).to_string(),
        ),
        (
            "clamav_pool_max_threads",
            "Maximum number of threads in the pool.",
            o.max_threads.to_string(),
        ),
        (
            "clamav_pool_idle_timeout_threads",
            "Number of idle timeout threads in the pool.",
            o.idle_timeout.to_string(),
        ),
        (
            "clamav_pool_queue_length",
            "Number of items in the pool queue.",
            p.queued.to_string(),
        ),
        (
            "clamav_pool_queue_min_wait_sec",
            "Minimum wait time in the pool queue.",
            seconds(p.wait_min_us as f64 / 1e6),
        ),
        (
            "clamav_pool_queue_max_wait_sec",
            "Maximum wait time in the pool queue.",
            seconds(p.wait_max_us as f64 / 1e6),
        ),
        (
            "clamav_pool_queue_avg_wait_sec",
            "Average wait time in the pool queue.",
            seconds(if p.queued == 0 {
                0.0
            } else {
                p.wait_sum_us as f64 / 1e6 / f64::from(p.queued)
            }),
        ),
    ];
    for (name, help, v) in gauges {
        t.family(name, Kind::Gauge, help);
        t.sample(name, &pool, v);
    }
    let engine: u64 = [Role::EngineHolder, Role::Worker]
        .iter()
        .map(|r| s.roles[r.index()].pss_kib)
        .fold(0, u64::saturating_add);
    let total: u64 = crate::ipc::observe::saturating_sum(s.roles.iter().map(|r| r.pss_kib));
    t.one(
        "clamav_memory_pools_used_bytes",
        Kind::Gauge,
        "Number of bytes currently used by all pools.",
        kib(engine),
    );
    t.one(
        "clamav_memory_pools_total_bytes",
        Kind::Gauge,
        "Number of bytes available to all pools.",
        kib(total),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = crate::ipc::observe::Snapshot {
            version: "0.1.0".into(),
            libclamav: "1.4.6".into(),
            ..Snapshot::default()
        };
        s.normalise();
        s.listeners.push(crate::ipc::observe::ListenerStats {
            counts: crate::ipc::observe::ListenerCounts::new("tc\"p\\"),
            open: 2,
            connections: [1, 2, 3, 4],
        });
        s.top = vec![("Win.Test.EICAR_HDB-1".into(), 3)];
        s.detections[Category::Win.index()] = 3;
        s
    }

    #[test]
    fn counters_are_named_per_format_and_openmetrics_ends_with_eof() {
        let a = Answer::Ready { weight: 100 };
        let o = Options {
            compat: true,
            idle_timeout: 120,
            max_threads: 10,
            answer: &a,
        };
        let s = snapshot();
        let om = metrics(&s, Format::OpenMetrics, &o);
        let prom = metrics(&s, Format::Prometheus, &o);
        assert!(om.ends_with("# EOF\n"));
        assert!(!prom.contains("# EOF"));
        assert!(om.contains("# TYPE clamsentry_scans counter\n"));
        assert!(prom.contains("# TYPE clamsentry_scans_total counter\n"));
        assert!(om.contains("# TYPE clamsentry_build info\n"));
        assert!(prom.contains("# TYPE clamsentry_build_info gauge\n"));
        assert!(prom.contains("clamsentry_detections_total{category=\"Win\"} 3\n"));
        assert!(
            prom.contains("clamsentry_detections_by_name_total{name=\"Win.Test.EICAR_HDB-1\"} 3\n")
        );
        assert!(
            prom.contains("listener=\"tc\\\"p\\\\\""),
            "label values are escaped"
        );
        assert!(prom.contains("clamsentry_ready 1\n"));
        assert!(prom.contains("clamav_pool_live_threads{index=\"0\",primary=\"1\"} 0\n"));
        assert!(prom.contains("clamav_version{version=\"1.4.6\"} 1\n"));
        assert!(prom.contains("clamsentry_scan_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(prom.contains("clamsentry_scan_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(prom.contains("clamsentry_scan_size_bytes_bucket{le=\"1024\"} 0\n"));
        // Every sample line belongs to the family declared before it.
        let mut family = String::new();
        for line in prom.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(name == family || base == family, "{line} after {family}");
            }
        }
    }

    #[test]
    fn accept_header_chooses_the_format() {
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(seconds(0.0025), "0.0025");
        assert_eq!(seconds(120.0), "120");
    }
}
