//! A minimal HTTP client for the metrics listener, and readers of the
//! Prometheus text format, for the observability tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An HTTP response as the tests look at it.
#[derive(Debug, Clone)]
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Http {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` as is and reads the whole answer (the server closes).
pub fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Http> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Http {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// `GET path` with an optional Accept header, connection closed after.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<Http> {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// `/metrics` in the Prometheus text format, once the observer has a
/// snapshot (it answers 503 before).
pub fn metrics(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = get(addr, "/metrics", None) {
            if r.status == 200 {
                return r.body;
            }
        }
        assert!(Instant::now() < deadline, "no metrics from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sample's labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of a text in the Prometheus (or OpenMetrics) format.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut parsed = Vec::new();
        let mut rest = labels;
        while let Some((k, after)) = rest.split_once("=\"") {
            // Values are escaped (\" \\ \n): find the closing quote.
            let mut v = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            v.push(if e == 'n' { '\n' } else { e });
                        }
                    }
                    '"' => {
                        end = i;
                        break;
                    }
                    c => v.push(c),
                }
            }
            parsed.push((k.trim_start_matches(',').to_string(), v));
            rest = &after[(end + 1).min(after.len())..];
        }
        out.push(Sample {
            name: name.to_string(),
            labels: parsed,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

/// The sum of the samples named `name` whose labels include `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether a sample named `name` is there at all.
pub fn has(text: &str, name: &str) -> bool {
    samples(text).iter().any(|s| s.name == name)
}

/// Waits until `pred` holds for a fresh scrape (a deadline for hangs, not
/// a performance threshold); returns that scrape.
pub fn until(addr: SocketAddr, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = metrics(addr);
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never showed {what}; last scrape:\n{}",
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sequence number of the observer's last snapshot (status.json).
pub fn seq(addr: SocketAddr) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = get(addr, "/status.json", None) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                if let Some(s) = v["seq"].as_u64() {
                    return s;
                }
            }
        }
        assert!(Instant::now() < deadline, "no status from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scrape once the request counters stopped moving: the same in two
/// scrapes of snapshots at least two apart (what was in flight is
/// counted). A baseline for exact deltas.
pub fn settled(addr: SocketAddr) -> String {
    let counters = |t: &str| -> String {
        t.lines()
            .filter(|l| {
                [
                    "clamsentry_scans_total",
                    "clamsentry_connections_total",
                    "clamsentry_commands_total",
                    "clamsentry_limits_exceeded_total",
                    "clamsentry_detections_total",
                    "clamsentry_selftests_total",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last: Option<String> = None;
    loop {
        let start = seq(addr);
        while seq(addr) < start + 2 {
            assert!(Instant::now() < deadline, "snapshots stopped at {start}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = metrics(addr);
        let now = counters(&text);
        if last.as_deref() == Some(now.as_str()) {
            return text;
        }
        assert!(Instant::now() < deadline, "the counters never settled");
        last = Some(now);
    }
}
