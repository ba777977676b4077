//! The status page (`GET /`) for hosts without a monitoring stack: one
//! self-contained HTML document (inline CSS and script, no external asset,
//! a Content-Security-Policy that allows nothing else) that fetches
//! `status.json` every [`REFRESH_SECONDS`] and redraws itself: health,
//! database age, scans and detections per minute over the last hour,
//! latency percentiles, workers, recent reloads.
//!
//! Safe Rust only (forbidden below). The one place the word `unsafe`
//! appears is the Content-Security-Policy keyword `'unsafe-inline'`, a
//! browser directive, not Rust: it lets the page's own inline style and
//! script run, and nothing from anywhere else (`default-src 'none'`). Hashes
//! of the two inline blocks (`'sha256-…'`) would be narrower still; kept as
//! is for now.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::agent::Answer;
use super::history::{History, Minute};
use crate::ipc::observe::{
    saturating_sum, ReloadTrigger, RestartReason, Role, ScanResult, Snapshot, DURATION_BOUNDS_US,
};

/// Seconds between the page's fetches of `status.json`.
pub const REFRESH_SECONDS: u32 = 2;

/// The page's Content-Security-Policy: its own inline style and script,
/// and fetches to this listener; nothing else.
pub const CSP: &str = "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Serialize)]
pub struct Status {
    /// The snapshot's clock, seconds since the epoch.
    pub time: u64,
    pub seq: u64,
    pub version: String,
    pub libclamav: String,
    pub uptime_seconds: u64,
    pub health: Health,
    pub database: Database,
    pub scans_total: u64,
    pub found_total: u64,
    pub errors_total: u64,
    /// Oldest first; the current minute last.
    pub minutes: Vec<Minute>,
    pub scans_last_hour: u64,
    pub found_last_hour: u64,
    /// Scan duration percentiles over the last hour, ms (None: no scan).
    pub latency_ms: Latency,
    pub workers: Workers,
    pub connections_open: u64,
    pub reloads: Vec<Reload>,
    pub selftest: Selftest,
    /// PSS of the daemon's processes, bytes.
    pub memory_bytes: u64,
}

#[derive(Serialize)]
pub struct Health {
    /// ready, drain, maint or down (the HAProxy agent's word).
    pub state: &'static str,
    pub reason: String,
    /// The agent's line, without its newline.
    pub agent: String,
}

#[derive(Serialize)]
pub struct Database {
    pub version: u32,
    pub signatures: u32,
    /// Seconds since the epoch; 0 when unknown.
    pub build_time: u64,
    pub age_seconds: Option<u64>,
}

#[derive(Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub scans: u64,
}

#[derive(Serialize)]
pub struct Workers {
    pub configured: u32,
    pub serving: u32,
    pub forking: u32,
    pub draining: u32,
    pub threads: u32,
    pub busy: u32,
    pub queued: u32,
    pub restarts: u64,
    pub crashes: u64,
}

#[derive(Serialize)]
pub struct Reload {
    pub at: u64,
    pub trigger: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub db_version: u32,
}

#[derive(Serialize)]
pub struct Selftest {
    pub enabled: bool,
    pub failing: bool,
    pub last_success: u64,
    pub detail: String,
}

/// The JSON the page fetches.
pub fn status(s: &Snapshot, history: &History, answer: &Answer) -> Status {
    let (state, reason) = answer.state();
    let now = s.time_ms / 1000;
    let minutes = history.minutes();
    let hour = history.last_hour();
    let ms = |q: f64| {
        hour.quantile(&DURATION_BOUNDS_US, q)
            .map(|us| (us / 10.0).round() / 100.0)
    };
    let found = s.scans_by_result(ScanResult::Found);
    let errors = s.scans_by_result(ScanResult::Error);
    Status {
        time: now,
        seq: s.seq,
        version: s.version.clone(),
        libclamav: s.libclamav.clone(),
        uptime_seconds: now.saturating_sub(s.started),
        health: Health {
            state,
            reason: reason.to_string(),
            agent: answer.line().trim_end().to_string(),
        },
        database: Database {
            version: s.db.version,
            signatures: s.db.signatures,
            build_time: s.db.build_time,
            age_seconds: (s.db.build_time > 0).then(|| now.saturating_sub(s.db.build_time)),
        },
        scans_total: saturating_sum([s.scans_by_result(ScanResult::Clean), found, errors]),
        found_total: found,
        errors_total: errors,
        scans_last_hour: saturating_sum(minutes.iter().map(|m| m.scans)),
        found_last_hour: saturating_sum(minutes.iter().map(|m| m.found)),
        minutes,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            scans: hour.count(),
        },
        workers: Workers {
            configured: s.workers.configured,
            serving: s.workers.serving,
            forking: s.workers.forking,
            draining: s.workers.draining,
            threads: s.pool.threads,
            busy: s.pool.busy,
            queued: s.pool.queued,
            restarts: saturating_sum(s.restarts.iter().copied()),
            crashes: s.restarts[RestartReason::Crashed.index()],
        },
        connections_open: saturating_sum(s.listeners.iter().map(|l| u64::from(l.open))),
        reloads: s
            .recent_reloads
            .iter()
            .map(|r| Reload {
                at: r.at,
                trigger: trigger_text(r.trigger),
                ok: r.ok,
                seconds: (r.duration_us as f64 / 1e4).round() / 100.0,
                db_version: r.db_version,
            })
            .collect(),
        selftest: Selftest {
            enabled: s.selftest.enabled,
            failing: s.selftest.failing,
            last_success: s.selftest.last_success,
            detail: s.selftest.detail.clone(),
        },
        memory_bytes: s
            .roles
            .iter()
            .take(Role::COUNT)
            .map(|r| r.pss_kib.saturating_mul(1024))
            .fold(0, u64::saturating_add),
    }
}

fn trigger_text(t: ReloadTrigger) -> &'static str {
    match t {
        ReloadTrigger::Command => "RELOAD command",
        ReloadTrigger::Signal => "signal",
        ReloadTrigger::SelfCheck => "signature directory changed",
        ReloadTrigger::EngineRestart => "engine holder restarted",
    }
}

/// The page. Its numbers come from `status.json` (the same snapshot as
/// `/metrics`), fetched at once and every [`REFRESH_SECONDS`].
pub fn html() -> String {
    PAGE.replace("__REFRESH_MS__", &(REFRESH_SECONDS * 1000).to_string())
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clamsentry status</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.05em; margin: 1.4em 0 .4em; border-bottom: 1px solid #ddd; }
.muted { color: #777; font-size: .9em; }
#health { display: inline-block; padding: .2em .7em; border-radius: .3em; font-weight: bold; color: #fff; background: #888; }
#health.ready { background: #2a7d2a; } #health.drain, #health.maint { background: #b67c00; } #health.down { background: #b22; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(12em, 1fr)); gap: .6em; }
.card { background: #fff; border: 1px solid #e2e2e2; border-radius: .4em; padding: .6em .8em; }
.card b { display: block; font-size: 1.35em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
td, th { text-align: left; padding: .25em .5em; border-bottom: 1px solid #eee; font-size: .92em; }
svg { width: 100%; height: 120px; background: #fff; border: 1px solid #e2e2e2; border-radius: .4em; }
.bar { fill: #4a78c2; } .hit { fill: #c24a4a; }
</style>
</head>
<body>
<h1>clamsentry <span id="version" class="muted"></span></h1>
<p><span id="health">loading</span> <span id="reason" class="muted"></span></p>
<p class="muted">Agent answer: <code id="agent"></code> · updated <span id="updated">never</span> (every __REFRESH_MS__ ms) · up <span id="uptime"></span></p>
<h2>Signatures</h2>
<div class="grid">
 <div class="card">Database version<b id="db-version">–</b></div>
 <div class="card">Built<b id="db-age">–</b><span id="db-time" class="muted"></span></div>
 <div class="card">Signatures<b id="db-signatures">–</b></div>
 <div class="card">Self-test<b id="selftest">–</b><span id="selftest-detail" class="muted"></span></div>
</div>
<h2>Scans</h2>
<div class="grid">
 <div class="card">Scans, last hour<b id="scans-hour">–</b></div>
 <div class="card">Detections, last hour<b id="found-hour">–</b></div>
 <div class="card">Scans since start<b id="scans-total">–</b></div>
 <div class="card">Detections since start<b id="found-total">–</b></div>
 <div class="card">Errors since start<b id="errors-total">–</b></div>
</div>
<p class="muted">Per minute, last hour (blue: scans, red: detections)</p>
<svg id="chart" viewBox="0 0 600 120" preserveAspectRatio="none" role="img" aria-label="scans per minute"></svg>
<h2>Latency (last hour, submission to verdict)</h2>
<div class="grid">
 <div class="card">p50<b id="p50">–</b></div>
 <div class="card">p90<b id="p90">–</b></div>
 <div class="card">p99<b id="p99">–</b></div>
</div>
<h2>Workers</h2>
<div class="grid">
 <div class="card">Serving / configured<b id="workers">–</b></div>
 <div class="card">Scan threads busy<b id="threads">–</b></div>
 <div class="card">Queued<b id="queued">–</b></div>
 <div class="card">Restarts (crashes)<b id="restarts">–</b></div>
 <div class="card">Connections open<b id="connections">–</b></div>
 <div class="card">Memory (PSS)<b id="memory">–</b></div>
</div>
<h2>Recent reloads</h2>
<table><thead><tr><th>when</th><th>trigger</th><th>result</th><th>took</th><th>database</th></tr></thead><tbody id="reloads"></tbody></table>
<script>
"use strict";
function $(id) { return document.getElementById(id); }
function set(id, v) { $(id).textContent = v; }
function ago(s) {
  if (s == null) return "unknown";
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}
function ms(v) { return v == null ? "no scans" : v.toFixed(2) + " ms"; }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
function chart(minutes) {
  var svg = $("chart"), ns = "http://www.w3.org/2000/svg";
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  var max = 1;
  minutes.forEach(function (m) { if (m.scans > max) max = m.scans; });
  var w = 600 / 60;
  minutes.slice(-60).forEach(function (m, i) {
    [["bar", m.scans], ["hit", m.found]].forEach(function (p) {
      var h = Math.round(110 * p[1] / max);
      if (h === 0 && p[1] > 0) h = 1;
      var r = document.createElementNS(ns, "rect");
      r.setAttribute("class", p[0]);
      r.setAttribute("x", i * w + (p[0] === "hit" ? w / 2 : 1));
      r.setAttribute("width", w / 2 - 1);
      r.setAttribute("y", 115 - h);
      r.setAttribute("height", h);
      svg.appendChild(r);
    });
  });
}
function show(d) {
  var h = $("health");
  h.textContent = d.health.state;
  h.className = d.health.state;
  set("reason", d.health.reason);
  set("agent", d.health.agent);
  set("version", d.version + " · libclamav " + d.libclamav);
  set("uptime", ago(d.uptime_seconds).replace(" ago", ""));
  set("db-version", d.database.version);
  set("db-age", ago(d.database.age_seconds));
  set("db-time", when(d.database.build_time));
  set("db-signatures", d.database.signatures);
  set("selftest", !d.selftest.enabled ? "off" : d.selftest.failing ? "FAILING" : d.selftest.last_success ? "passing" : "not run yet");
  set("selftest-detail", d.selftest.detail);
  set("scans-hour", d.scans_last_hour);
  set("found-hour", d.found_last_hour);
  set("scans-total", d.scans_total);
  set("found-total", d.found_total);
  set("errors-total", d.errors_total);
  set("p50", ms(d.latency_ms.p50));
  set("p90", ms(d.latency_ms.p90));
  set("p99", ms(d.latency_ms.p99));
  set("workers", d.workers.serving + " / " + d.workers.configured);
  set("threads", d.workers.busy + " / " + d.workers.threads);
  set("queued", d.workers.queued);
  set("restarts", d.workers.restarts + " (" + d.workers.crashes + ")");
  set("connections", d.connections_open);
  set("memory", (d.memory_bytes / 1048576).toFixed(1) + " MiB");
  var body = $("reloads");
  while (body.firstChild) body.removeChild(body.firstChild);
  if (d.reloads.length === 0) {
    var none = document.createElement("tr"), cell = document.createElement("td");
    cell.colSpan = 5;
    cell.className = "muted";
    cell.textContent = "no reload since the daemon started";
    none.appendChild(cell);
    body.appendChild(none);
  }
  d.reloads.forEach(function (r) {
    var tr = document.createElement("tr");
    [when(r.at), r.trigger, r.ok ? "ok" : "FAILED", r.seconds + " s", r.db_version].forEach(function (v) {
      var td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  chart(d.minutes);
  set("updated", new Date(d.time * 1000).toLocaleTimeString() + " (#" + d.seq + ")");
  document.body.setAttribute("data-seq", d.seq);
}
function refresh() {
  fetch("status.json", { cache: "no-store" })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(show)
    .catch(function (e) { var h = $("health"); h.textContent = "no data"; h.className = "down"; set("reason", String(e)); });
}
refresh();
setInterval(refresh, __REFRESH_MS__);
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = html();
        assert!(page.contains("setInterval(refresh, 2000)"));
        for outside in ["http://", "https://", "src=", "href=", "@import", "url("] {
            let hits: Vec<&str> = page
                .lines()
                .filter(|l| l.contains(outside) && !l.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{outside}: {hits:?}");
        }
    }

    #[test]
    fn the_json_holds_what_the_page_shows() {
        let mut s = Snapshot::default();
        s.normalise();
        s.time_ms = 1_700_003_600_000;
        s.db.build_time = 1_700_000_000;
        s.db.version = 27999;
        let mut h = History::default();
        h.add(&s);
        let st = status(
            &s,
            &h,
            &Answer::Drain("self-test failing: stream: OK".into()),
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["health"]["state"], "drain");
        assert_eq!(json["database"]["age_seconds"], 3600);
        assert_eq!(json["latency_ms"]["p50"], serde_json::Value::Null);
        assert_eq!(json["minutes"].as_array().unwrap().len(), 1);
        assert_eq!(
            json["health"]["agent"],
            "up drain #self-test failing: stream: OK"
        );
    }
}
