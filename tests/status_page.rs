//! The status page in a real browser: Debian's chromium, headless, driven
//! through chromedriver by Debian's python3-selenium. The page renders, its
//! numbers match `/metrics`, it loads nothing but itself and
//! `status.json`, and it updates itself (no reload) after more scans.
//!
//! The Python side is a small line protocol (a JSON command in, a JSON
//! answer out) so that the test does its scans between two looks at the
//! same page.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{instream, talk};
use common::daemons::{die_with_parent, free_port, Daemon};
use common::scrape::{self, sum};
use common::{eicar, TestDb};

const T: Duration = Duration::from_secs(20);

const DRIVER: &str = r##"
import json, sys, tempfile
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--user-data-dir=" + tempfile.mkdtemp(prefix="cs-chromium-")]:
    opts.add_argument(a)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    d.get(sys.argv[1])
    print(json.dumps({"ok": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "read":
            out = {i: d.find_element("id", i).text for i in cmd["ids"]}
            out["seq"] = d.find_element("tag name", "body").get_attribute("data-seq")
            out["bars"] = len(d.find_elements("css selector", "#chart rect"))
        elif cmd["op"] == "resources":
            out = {"names": d.execute_script(
                "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")}
        elif cmd["op"] == "screenshot":
            out = {"saved": d.save_screenshot(cmd["path"])}
        else:
            break
        print(json.dumps(out), flush=True)
finally:
    d.quit()
"##;

struct Browser {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Browser {
    fn open(url: &str, dir: &Path) -> Browser {
        let script = dir.join("driver.py");
        std::fs::write(&script, DRIVER).unwrap();
        let mut child = die_with_parent(&mut Command::new("/usr/bin/python3"))
            .arg(&script)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with selenium (apt-get install python3-selenium)");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut b = Browser {
            child,
            input,
            output,
        };
        assert_eq!(b.answer()["ok"], true, "the browser opened the page");
        b
    }

    fn answer(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"))
    }

    fn ask(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.input, "{cmd}").unwrap();
        self.answer()
    }

    fn read(&mut self) -> serde_json::Value {
        self.ask(serde_json::json!({"op": "read", "ids": [
            "health", "scans-total", "found-total", "errors-total", "scans-hour",
            "found-hour", "db-version", "db-signatures", "workers", "threads", "p50", "updated"
        ]}))
    }

    /// Reads the page until `pred` holds (it refreshes itself).
    fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.read();
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {v}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "{{\"op\": \"quit\"}}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(v: &serde_json::Value, id: &str) -> String {
    v[id].as_str().unwrap_or_default().to_string()
}

fn number(v: &serde_json::Value, id: &str) -> f64 {
    text(v, id).parse().unwrap_or(f64::NAN)
}

#[test]
fn the_status_page_renders_matches_the_metrics_and_updates_itself() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(tool).exists() {
            eprintln!("SKIPPED: {tool} missing (apt-get install chromium chromium-driver; scripts/install-deps.sh does)");
            return;
        }
    }
    if Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIPPED: python3-selenium missing (scripts/install-deps.sh installs it)");
        return;
    }
    let db = TestDb::new();
    let m: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!("listen = \"{m}\"");
    let d = Daemon::clamsentry(
        db.path(),
        &[("metrics", &listen), ("selftest", "interval = 0")],
    );
    let clean = b"plain words, nothing more\n".repeat(50);
    let scan =
        |data: &[u8]| talk(&d.tcp_addr(), &[&instream(b"zINSTREAM\0", data, 4096)], T).unwrap();
    for _ in 0..3 {
        assert_eq!(scan(&clean), b"stream: OK\0");
    }
    assert_eq!(
        scan(&eicar()),
        b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
    );
    let settled = scrape::settled(m);
    let scans = sum(&settled, "clamsentry_scans_total", &[]);
    let found = sum(&settled, "clamsentry_scans_total", &[("result", "found")]);
    assert_eq!((scans, found), (4.0, 1.0));

    let dir = tempfile::tempdir().unwrap();
    let mut b = Browser::open(&format!("http://{m}/"), dir.path());
    let page = b.until("the settled numbers", |v| {
        text(v, "health") == "ready" && number(v, "scans-total") == scans
    });
    // The page's numbers are the metrics'.
    assert_eq!(number(&page, "found-total"), found);
    assert_eq!(number(&page, "errors-total"), 0.0);
    assert_eq!(
        number(&page, "scans-hour"),
        scans,
        "every scan was in this hour"
    );
    assert_eq!(number(&page, "found-hour"), found);
    assert_eq!(
        number(&page, "db-signatures"),
        sum(&settled, "clamsentry_database_signatures", &[])
    );
    assert_eq!(
        number(&page, "db-version"),
        sum(&settled, "clamsentry_database_version", &[])
    );
    let serving = sum(&settled, "clamsentry_workers", &[("state", "serving")]);
    let configured = sum(&settled, "clamsentry_workers", &[("state", "configured")]);
    assert_eq!(text(&page, "workers"), format!("{serving} / {configured}"));
    let threads = sum(&settled, "clamsentry_scan_threads", &[]);
    assert_eq!(text(&page, "threads"), format!("0 / {threads}"));
    assert!(text(&page, "p50").ends_with(" ms"), "{page}");
    assert!(page["bars"].as_u64().unwrap() > 0, "the chart is drawn");
    // Nothing but the page and status.json was loaded.
    let loaded = b.ask(serde_json::json!({"op": "resources"}));
    for name in loaded["names"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            name.starts_with(&format!("http://{m}/status.json")),
            "{name}"
        );
    }
    let shot = dir.path().join("status.png");
    b.ask(serde_json::json!({"op": "screenshot", "path": shot.display().to_string()}));

    // More scans: the open page follows by itself.
    let first_seq = page["seq"].as_str().unwrap().parse::<u64>().unwrap();
    for _ in 0..4 {
        assert_eq!(scan(&clean), b"stream: OK\0");
    }
    for _ in 0..2 {
        assert_eq!(
            scan(&eicar()),
            b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
        );
    }
    let later = b.until("the new scans", |v| number(v, "scans-total") == scans + 6.0);
    assert_eq!(number(&later, "found-total"), found + 2.0);
    assert!(later["seq"].as_str().unwrap().parse::<u64>().unwrap() > first_seq);
    let settled = scrape::settled(m);
    assert_eq!(sum(&settled, "clamsentry_scans_total", &[]), scans + 6.0);
}
