//! The metrics as a monitoring stack sees them: Debian's own Prometheus
//! server (started here on a free loopback port, with a temporary
//! configuration and storage, scraping every second, with the shipped
//! alert rules loaded) scrapes a running daemon, and its query API must
//! return the expected series after scans, detections, a reload, a worker
//! killed with SIGKILL and a failed self-test. The shipped rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`),
//! and every query of the shipped Grafana dashboard runs against that
//! server and names only metrics of a live scrape.
//!
//! Prometheus negotiates OpenMetrics, so its scrape also checks that
//! format. Waits are for conditions with generous deadlines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{instream, talk};
use common::daemons::{die_with_parent, free_port, Daemon};
use common::{eicar, scrape, TestDb};

const T: Duration = Duration::from_secs(20);

fn packaging(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(p)
}

/// The shipped alert rules: valid, and their unit tests pass.
#[test]
fn shipped_alert_rules_check_and_pass_their_tests() {
    let promtool = require!(common::require::program("promtool", "prometheus"));
    let promtool = promtool.to_str().unwrap();
    for args in [
        vec!["check", "rules", "clamsentry-rules.yml"],
        vec!["test", "rules", "clamsentry-rules.test.yml"],
    ] {
        let out = Command::new(promtool)
            .current_dir(packaging("prometheus"))
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Debian's prometheus scraping `target` every second.
    fn start(bin: &str, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: clamsentry\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                packaging("prometheus/clamsentry-rules.yml").display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = die_with_parent(&mut Command::new(bin))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !scrape::get(addr, "/-/ready", None).is_ok_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "prometheus never got ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The result of an instant query (the API's `data.result`).
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let r = scrape::get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(q)),
            None,
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{q}: {e}: {}", r.body));
        assert_eq!(v["status"], "success", "{q}: {}", r.body);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a query, if it has one.
    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        let v = r.first()?["value"][1].as_str()?;
        v.parse().ok()
    }

    /// Waits until the query's value satisfies `pred`.
    fn until(&self, q: &str, what: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(v) = self.value(q) {
                if pred(v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never saw {what}: {q} = {:?}",
                self.value(q)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn scan(d: &Daemon, data: &[u8]) -> Vec<u8> {
    talk(&d.tcp_addr(), &[&instream(b"zINSTREAM\0", data, 4096)], T).unwrap()
}

#[test]
fn a_real_prometheus_sees_scans_reloads_crashes_and_a_failed_selftest() {
    let bin = require!(common::require::program("prometheus", "prometheus"));
    require_root!("killing a worker needs root (CI runs as root)");
    let db = TestDb::new();
    let hdb = db.path().join("test.hdb");
    let with_eicar = std::fs::read_to_string(&hdb).unwrap();
    let m: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!("listen = \"{m}\"");
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("metrics", &listen),
            ("selftest", "interval = 2"),
            ("database", "self-check = 0"),
            ("limits", "standby-workers = 1"),
        ],
    );
    let prom = Prometheus::start(bin.to_str().unwrap(), m);
    prom.until("up{job=\"clamsentry\"}", "a successful scrape", |v| {
        v == 1.0
    });
    assert!(
        prom.value("scrape_samples_scraped{job=\"clamsentry\"}")
            .unwrap()
            > 200.0,
        "the OpenMetrics scrape holds every series"
    );

    // Scans and detections, exactly.
    let clean = b"nothing to see in this file\n".repeat(100);
    for _ in 0..5 {
        assert_eq!(scan(&d, &clean), b"stream: OK\0");
    }
    for _ in 0..3 {
        assert_eq!(
            scan(&d, &eicar()),
            b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
        );
    }
    prom.until(
        "sum(clamsentry_scans_total{listener=\"tcp\",result=\"clean\"})",
        "5 clean scans",
        |v| v == 5.0,
    );
    prom.until(
        "sum(clamsentry_scans_total{listener=\"tcp\",result=\"found\"})",
        "3 detections",
        |v| v == 3.0,
    );
    prom.until(
        "clamsentry_detections_total{category=\"Win\"}",
        "the detections by category (3, and the self-tests')",
        |v| v >= 3.0,
    );
    prom.until(
        "clamsentry_selftest_last_success_timestamp_seconds",
        "a self-test",
        |v| v > 0.0,
    );
    assert_eq!(prom.value("clamsentry_ready"), Some(1.0));

    // A reload.
    d.signal(nix::sys::signal::Signal::SIGHUP);
    prom.until(
        "clamsentry_reloads_total{trigger=\"signal\",result=\"ok\"}",
        "the reload",
        |v| v == 1.0,
    );
    prom.until("clamsentry_engine_generation", "generation 2", |v| v == 2.0);
    prom.until(
        "clamsentry_reload_duration_seconds_count",
        "the reload's duration",
        |v| v == 1.0,
    );

    // A worker killed: the one the test's scans run on (its local user's,
    // uid 0, over loopback TCP; of the new generation: one more scan makes
    // sure it is bound).
    assert_eq!(scan(&d, &clean), b"stream: OK\0");
    let victim = d.worker_of("uid=0");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    prom.until(
        "clamsentry_worker_restarts_total{reason=\"crashed\"}",
        "the crash",
        |v| v == 1.0,
    );
    // The next scan gets a new worker, and the gauge shows it.
    assert_eq!(scan(&d, &clean), b"stream: OK\0");
    assert_ne!(d.worker_of("uid=0"), victim);
    prom.until(
        "clamsentry_workers{state=\"serving\"}",
        "the test's worker and a standby serving",
        |v| v >= 2.0,
    );
    // Counters never went down across the reload and the crash.
    let resets = prom
        .value("sum(resets(clamsentry_scans_total[5m]))")
        .unwrap_or(0.0);
    assert_eq!(resets, 0.0, "no counter reset");

    // A failed self-test: the reload brings signatures without EICAR.
    let without: String = with_eicar
        .lines()
        .filter(|l| !l.contains("EICAR"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hdb, without).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    prom.until(
        "clamsentry_selftest_failures_total",
        "a failed self-test",
        |v| v >= 1.0,
    );
    prom.until("clamsentry_ready", "not ready", |v| v == 0.0);
    prom.until(
        "count(ALERTS{alertname=\"ClamsentrySelftestFailing\"})",
        "the shipped alert rule pending",
        |v| v == 1.0,
    );

    // The dashboard: valid JSON; every query runs on this server and
    // names only metrics of the live scrape.
    let text = scrape::metrics(m);
    let names: std::collections::HashSet<String> =
        scrape::samples(&text).into_iter().map(|s| s.name).collect();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/clamsentry-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is well-formed JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() > 20, "{}", exprs.len());
    let metric = regex::Regex::new(r"\b(clamsentry_[a-z0-9_]+)").unwrap();
    // Only with a signed .cvd/.cld database (the header's build time),
    // which a test cannot make: libclamav refuses an unsigned one.
    let conditional = ["clamsentry_database_build_timestamp_seconds"];
    for e in &exprs {
        for c in metric.captures_iter(e) {
            assert!(
                names.contains(&c[1]) || conditional.contains(&&c[1]),
                "the dashboard names {} ({e})",
                &c[1]
            );
        }
        let q = e.replace("$instance", ".*");
        prom.query(&q);
    }
    // The scrape carried OpenMetrics (Prometheus asks for it).
    let mut s = TcpStream::connect(m).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.ends_with("# EOF\n"));
}
