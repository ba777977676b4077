//! The results: one JSON document and the table printed from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cancel::CancelResult;
use crate::crash::{CrashResult, Dist, Series};
use crate::daemons::Settings;
use crate::db::DbInfo;
use crate::dirscan::DirscanResult;
use crate::engine_only::EngineResult;
use crate::latency::LatencyResult;
use crate::load::Scenario;
use crate::memory::{ReloadsResult, WorkersResult};
use crate::{DaemonResult, Options};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub libclamav: String,
    /// /proc/loadavg when the report was built (other work on the machine).
    pub loadavg_end: String,
}

/// One line of the comparison table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub clamd: Option<f64>,
    pub clamsentry: Option<f64>,
    /// clamsentry / clamd.
    pub ratio: Option<f64>,
    pub engine_only: Option<f64>,
    /// Percent of the engine-only limit.
    pub clamd_pct_of_engine: Option<f64>,
    pub clamsentry_pct_of_engine: Option<f64>,
}

/// A goal and whether this run met it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub target: String,
    /// The value judged: with `--repeat N`, the median over the rounds.
    pub value: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
    /// With `--repeat N`: the lowest and highest value over the rounds.
    pub range: Option<(f64, f64)>,
    pub runs: Option<usize>,
}

impl Target {
    fn new(target: String, value: Option<f64>, goal: String, met: Option<bool>) -> Target {
        Target {
            target,
            value,
            goal,
            met,
            range: None,
            runs: None,
        }
    }
}

/// A ratio clamsentry / clamd over the rounds of `--repeat N` (round r of
/// one daemon paired with round r of the other).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spread {
    pub scenario: String,
    pub metric: String,
    pub clamd: Vec<f64>,
    pub clamsentry: Vec<f64>,
    pub ratios: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub options: Options,
    pub settings: Settings,
    pub database: DbInfo,
    pub engine_load_s: f64,
    pub engine_only: BTreeMap<String, EngineResult>,
    pub daemons: BTreeMap<String, DaemonResult>,
    pub table: Vec<Row>,
    /// With `--repeat N`: the run-to-run spread of the ratios.
    pub spread: Vec<Spread>,
    pub crash: Option<CrashResult>,
    pub workers: Option<WorkersResult>,
    pub reloads: Option<ReloadsResult>,
    pub dirscan: Option<DirscanResult>,
    pub latency: Option<LatencyResult>,
    pub cancel: Option<CancelResult>,
    pub scrape: Option<crate::scrape::ScrapeResult>,
    pub targets: Vec<Target>,
    pub total_s: f64,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Machine {
        nproc: crate::nproc(),
        cpu_model,
        mem_total_kib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        libclamav: clamsentry::engine::version(),
        loadavg_end: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    opts: &Options,
    settings: &Settings,
    database: DbInfo,
    engine_load_s: f64,
    engine_only: BTreeMap<String, EngineResult>,
    daemons: BTreeMap<String, DaemonResult>,
    scenarios: &[Scenario],
    total_s: f64,
) -> Report {
    let mut table = Vec::new();
    let cd = daemons.get("clamd");
    let cs = daemons.get("clamsentry");
    let row = |scenario: &str, metric: &str, a: Option<f64>, b: Option<f64>, e: Option<f64>| {
        let throughput = matches!(metric, "scans/s" | "MB/s" | "scans per CPU-s");
        let pct = |v: Option<f64>| match (v, e) {
            (Some(v), Some(e)) if throughput && e > 0.0 => Some(v / e * 100.0),
            _ => None,
        };
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            clamd: a,
            clamsentry: b,
            ratio: match (a, b) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            },
            engine_only: e,
            clamd_pct_of_engine: pct(a),
            clamsentry_pct_of_engine: pct(b),
        }
    };
    for sc in scenarios {
        let key = super::engine_key(sc);
        let eng = if sc.clients == 1 {
            engine_only.get("10KiB 1 thread")
        } else {
            engine_only.get(&key)
        };
        let get = |d: Option<&DaemonResult>, f: &dyn Fn(&crate::load::LoadResult) -> f64| {
            d.and_then(|d| d.scenarios.get(&sc.name)).map(f)
        };
        table.push(row(
            &sc.name,
            "scans/s",
            get(cd, &|r| r.scans_per_s),
            get(cs, &|r| r.scans_per_s),
            eng.map(|e| e.scans_per_s),
        ));
        table.push(row(
            &sc.name,
            "MB/s",
            get(cd, &|r| r.mb_per_s),
            get(cs, &|r| r.mb_per_s),
            eng.map(|e| e.mb_per_s),
        ));
        // Throughput per CPU-second of the daemon (or of the engine-only
        // threads): what each spends per scan, whatever else the machine ran.
        let per_cpu = |r: &crate::load::LoadResult| {
            if r.daemon_cpu_pct > 0.0 {
                r.scans_per_s / (r.daemon_cpu_pct / 100.0)
            } else {
                0.0
            }
        };
        table.push(row(
            &sc.name,
            "scans per CPU-s",
            get(cd, &per_cpu),
            get(cs, &per_cpu),
            eng.filter(|e| e.cpu_pct > 0.0)
                .map(|e| e.scans_per_s / (e.cpu_pct / 100.0)),
        ));
        table.push(row(
            &sc.name,
            "p50 ms",
            get(cd, &|r| r.p50_ms),
            get(cs, &|r| r.p50_ms),
            None,
        ));
        table.push(row(
            &sc.name,
            "p99 ms",
            get(cd, &|r| r.p99_ms),
            get(cs, &|r| r.p99_ms),
            None,
        ));
        table.push(row(
            &sc.name,
            "peak memory (PSS) MiB",
            get(cd, &|r| r.peak_rss_kib as f64 / 1024.0),
            get(cs, &|r| r.peak_rss_kib as f64 / 1024.0),
            None,
        ));
        table.push(row(
            &sc.name,
            "daemon CPU %",
            get(cd, &|r| r.daemon_cpu_pct),
            get(cs, &|r| r.daemon_cpu_pct),
            None,
        ));
        table.push(row(
            &sc.name,
            "client CPU %",
            get(cd, &|r| r.client_cpu_pct),
            get(cs, &|r| r.client_cpu_pct),
            None,
        ));
        table.push(row(
            &sc.name,
            "other CPU %",
            get(cd, &|r| r.other_cpu_pct),
            get(cs, &|r| r.other_cpu_pct),
            eng.map(|e| e.other_cpu_pct),
        ));
    }
    let one = |f: &dyn Fn(&DaemonResult) -> f64| (cd.map(f), cs.map(f));
    let mut single = |metric: &str, f: &dyn Fn(&DaemonResult) -> f64| {
        let (a, b) = one(f);
        // No rows for a run without the throughput part.
        if a.is_some() || b.is_some() {
            table.push(row("daemon", metric, a, b, None));
        }
    };
    single("start to first PONG s", &|d| d.start_to_pong_s);
    single("memory (PSS) idle after start MiB", &|d| {
        d.rss_idle_kib as f64 / 1024.0
    });
    single("memory (PSS) after load MiB", &|d| {
        d.rss_after_load_kib as f64 / 1024.0
    });
    single("idle connections opened", &|d| d.idle.opened as f64);
    single("memory (PSS) +idle connections MiB", &|d| {
        d.idle.delta_kib as f64 / 1024.0
    });
    single("PING with idle conns ms", &|d| {
        d.idle.ping_ms.unwrap_or(f64::NAN)
    });
    single("reload s", &|d| d.reload.reload_s);
    single("peak memory (PSS) during reload MiB", &|d| {
        d.reload.peak_rss_kib as f64 / 1024.0
    });
    single("memory (PSS) after reload MiB", &|d| {
        d.reload.rss_after_kib as f64 / 1024.0
    });

    let spread = spread(&daemons, scenarios);
    Report {
        machine: machine(),
        options: opts.clone(),
        settings: settings.clone(),
        database,
        engine_load_s,
        engine_only,
        daemons,
        table,
        spread,
        crash: None,
        workers: None,
        reloads: None,
        dirscan: None,
        latency: None,
        cancel: None,
        scrape: None,
        targets: Vec::new(),
        total_s,
    }
}

/// One number of a scenario's result.
type Metric = fn(&crate::load::LoadResult) -> f64;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// scans/s and p99 of every scenario over the rounds, when there is more
/// than one.
fn spread(daemons: &BTreeMap<String, DaemonResult>, scenarios: &[Scenario]) -> Vec<Spread> {
    let (Some(cd), Some(cs)) = (daemons.get("clamd"), daemons.get("clamsentry")) else {
        return Vec::new();
    };
    if cd.repeats.is_empty() || cs.repeats.is_empty() {
        return Vec::new();
    }
    let rounds = |d: &DaemonResult, name: &str, f: Metric| {
        std::iter::once(&d.scenarios)
            .chain(&d.repeats)
            .filter_map(|r| r.get(name).map(f))
            .collect::<Vec<f64>>()
    };
    let mut out = Vec::new();
    for sc in scenarios {
        let metrics: [(&str, Metric); 2] =
            [("scans/s", |r| r.scans_per_s), ("p99 ms", |r| r.p99_ms)];
        for (metric, f) in metrics {
            let (a, b) = (rounds(cd, &sc.name, f), rounds(cs, &sc.name, f));
            let ratios: Vec<f64> = a
                .iter()
                .zip(&b)
                .filter(|(a, _)| **a > 0.0)
                .map(|(a, b)| b / a)
                .collect();
            if ratios.is_empty() {
                continue;
            }
            out.push(Spread {
                scenario: sc.name.clone(),
                metric: metric.into(),
                median: median(&ratios),
                min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                clamd: a,
                clamsentry: b,
                ratios,
            });
        }
    }
    out
}

fn targets(table: &[Row], spread: &[Spread], cs: Option<&DaemonResult>) -> Vec<Target> {
    let find = |scenario: &str, metric: &str| {
        table
            .iter()
            .find(|r| r.scenario == scenario && r.metric == metric)
    };
    let mut out = Vec::new();
    // The single run's ratio, or the median over the rounds with its range.
    let judged = |scenario: &str, metric: &str| match spread
        .iter()
        .find(|x| x.scenario == scenario && x.metric == metric)
    {
        Some(x) => (Some(x.median), Some((x.min, x.max)), Some(x.ratios.len())),
        None => (find(scenario, metric).and_then(|r| r.ratio), None, None),
    };
    let mut ratio_at_least = |scenario: &str, metric: &str, goal: f64| {
        let (v, range, runs) = judged(scenario, metric);
        out.push(Target {
            range,
            runs,
            ..Target::new(
                format!("{scenario} {metric} vs clamd"),
                v,
                format!(">= {goal:.2}x"),
                v.map(|v| v >= goal),
            )
        });
    };
    ratio_at_least("10KiB x16", "scans/s", 1.35);
    ratio_at_least("10KiB identical x16", "scans/s", 2.0);
    ratio_at_least("1MiB x4", "scans/s", 1.05);
    ratio_at_least("16MiB x2", "scans/s", 1.05);
    let v = find("10KiB x16", "scans/s").and_then(|r| r.clamsentry_pct_of_engine);
    out.push(Target::new(
        "10KiB x16 scans/s vs engine-only".into(),
        v,
        ">= 90 %".into(),
        v.map(|v| v >= 90.0),
    ));
    let mut ratio_at_most = |scenario: &str, metric: &str, goal: f64| {
        let (v, range, runs) = judged(scenario, metric);
        out.push(Target {
            range,
            runs,
            ..Target::new(
                format!("{scenario} {metric} vs clamd"),
                v,
                format!("<= {goal:.2}x"),
                v.map(|v| v <= goal),
            )
        });
    };
    ratio_at_most("10KiB x16", "p99 ms", 1.0);
    ratio_at_most("10KiB x256", "p99 ms", 1.0);
    ratio_at_most("daemon", "memory (PSS) after load MiB", 1.05);
    ratio_at_most("daemon", "start to first PONG s", 1.0);
    let v = cs.map(|d| d.idle.delta_kib as f64 / 1024.0);
    out.push(Target::new(
        "clamsentry memory cost of idle connections MiB".into(),
        v,
        "<= 32".into(),
        v.map(|v| v <= 32.0),
    ));
    // Only the rows this run measured.
    out.retain(|t| t.value.is_some());
    out
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "n/a".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl Report {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), String> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| format!("cannot encode the results: {e}"))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The comparison table as Markdown (also fine on a terminal).
    pub fn table_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| scenario | metric | clamd | clamsentry | ratio | engine-only | clamd % of engine | clamsentry % of engine |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.table {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} %"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.metric,
                num(r.clamd),
                num(r.clamsentry),
                r.ratio.map_or("-".into(), |v| format!("{v:.2}x")),
                num(r.engine_only),
                pct(r.clamd_pct_of_engine),
                pct(r.clamsentry_pct_of_engine),
            );
        }
        s
    }

    pub fn targets_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| target | value | goal | met |");
        let _ = writeln!(s, "|---|---:|---|---|");
        for t in &self.targets {
            // Three decimals below 10, so that a value just under its goal
            // does not print as the goal itself (1.046 against >= 1.05).
            let fine = |v: Option<f64>| match v {
                Some(v) if v.is_finite() && v.abs() < 10.0 => format!("{v:.3}"),
                v => num(v),
            };
            let value = match (t.range, t.runs) {
                (Some((lo, hi)), Some(n)) => format!(
                    "{} (median of {n}; {}-{})",
                    fine(t.value),
                    fine(Some(lo)),
                    fine(Some(hi))
                ),
                _ => fine(t.value),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.target,
                value,
                t.goal,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
            );
        }
        s
    }

    pub fn summary(&self) -> String {
        let m = &self.machine;
        format!(
            "machine: {} x {}, {} MiB RAM, Linux {}, libclamav {}\n\
             database: {} .hdb + {} .ndb ({} with wildcards); engine load {:.1} s\n\
             threads {} (both daemons), temporary directory {}, chunk {} B, >= {} s measured per scenario after {} s warm-up, {} round(s); total {:.0} s\n\
             parts: {}\n",
            m.nproc,
            m.cpu_model,
            m.mem_total_kib / 1024,
            m.kernel,
            m.libclamav,
            self.database.hdb_signatures,
            self.database.ndb_signatures,
            self.database.ndb_with_wildcards,
            self.engine_load_s,
            self.settings.threads,
            self.settings.temp_dir.display(),
            self.options.chunk,
            self.options.duration_s,
            self.options.warmup_s,
            self.options.repeat,
            self.total_s,
            crate::PARTS
                .iter()
                .filter(|p| self.options.wants(p))
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Targets of the crash, memory and directory parts.
fn part_targets(r: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(c) = &r.crash {
        let cs: Vec<&Series> = c
            .series
            .iter()
            .filter(|s| s.daemon == "clamsentry")
            .collect();
        if !cs.is_empty() {
            let other: u64 = cs.iter().filter_map(|s| s.failed_other_workers_total).sum();
            out.push(Target::new(
                "crash: failed requests beyond the dead workers' closed connections".into(),
                Some(other as f64),
                "= 0".into(),
                Some(other == 0),
            ));
            let exact: Option<u64> = cs
                .iter()
                .map(|s| s.conns.as_ref().map(|a| a.unscanned_on_other_workers))
                .sum();
            if let Some(exact) = exact {
                out.push(Target::new(
                    "crash: requests failed on other workers (debug log)".into(),
                    Some(exact as f64),
                    "= 0".into(),
                    Some(exact == 0),
                ));
            }
            let unchanged = cs.iter().all(|s| s.pids_unchanged == Some(true));
            out.push(Target::new(
                "crash: supervisor and engine holder PIDs unchanged".into(),
                Some(if unchanged { 1.0 } else { 0.0 }),
                "= 1 (yes)".into(),
                Some(unchanged),
            ));
            let recovered = cs.iter().flat_map(|s| &s.kills).all(|k| k.recovered);
            out.push(Target::new(
                "crash: every worker kill recovered from".into(),
                Some(if recovered { 1.0 } else { 0.0 }),
                "= 1 (yes)".into(),
                Some(recovered),
            ));
        }
    }
    if let Some(w) = &r.workers {
        for run in w.runs.iter().filter(|x| x.workers.is_some_and(|n| n > 1)) {
            let v = run.ratio_vs_one_worker;
            out.push(Target::new(
                format!(
                    "memory (PSS) with {} workers vs 1 worker",
                    run.workers.unwrap_or(0)
                ),
                v,
                "<= 1.15x".into(),
                v.map(|v| v <= 1.15),
            ));
        }
    }
    if let Some(rl) = &r.reloads {
        for run in rl.runs.iter().filter(|x| x.daemon == "clamsentry") {
            out.push(Target::new(
                format!(
                    "memory (PSS) after {} reloads under load vs before",
                    run.reloads.len()
                ),
                Some(run.ratio),
                "0.95x-1.05x".into(),
                Some((run.ratio - 1.0).abs() <= 0.05),
            ));
            out.push(Target::new(
                "requests failed during the reloads".into(),
                Some(run.requests_failed as f64),
                "= 0".into(),
                Some(run.requests_failed == 0),
            ));
        }
    }
    if let Some(d) = &r.dirscan {
        for v in &d.variants {
            let name = format!(
                "{} {} ({} files)",
                v.command, v.tree.variant, v.tree.entries
            );
            let mut t = Target::new(
                format!("{name}: time vs clamd"),
                v.ratio,
                format!("<= {:.2}x", v.goal),
                v.ratio.map(|x| x <= v.goal),
            );
            t.range = v.ratio_range;
            t.runs = Some(v.runs.len() / 2);
            out.push(t);
            let mut t = Target::new(
                format!("{name}: CPU of the whole daemon vs clamd"),
                v.cpu_ratio,
                "<= 1.00x".into(),
                v.cpu_ratio.map(|x| x <= 1.0),
            );
            t.range = v.cpu_ratio_range;
            t.runs = Some(v.runs.len() / 2);
            out.push(t);
        }
    }
    if let Some(l) = &r.latency {
        for x in &l.summaries {
            let mut judged =
                |what: &str, ratio: &crate::latency::Ratio, goal: &str, ok: fn(f64) -> bool| {
                    let mut t = Target::new(
                        format!("latency {}: {what} vs clamd", x.scenario),
                        ratio.median,
                        goal.into(),
                        ratio.median.map(ok),
                    );
                    t.range = ratio.min.zip(ratio.max);
                    t.runs = Some(ratio.ratios.len());
                    out.push(t);
                };
            judged("p99", &x.p99, "<= 0.80x", |v| v <= 0.8);
            judged("scans/s", &x.throughput, ">= 1.35x", |v| v >= 1.35);
            judged("CPU per scan", &x.cpu_per_scan, "<= 1.00x", |v| v <= 1.0);
        }
    }
    if let Some(c) = &r.cancel {
        for w in c.walks.iter().filter(|w| w.daemon == "clamsentry") {
            let bound = (2 * crate::cancel::BATCH) as f64;
            out.push(Target::new(
                format!(
                    "cancel: {} files opened after the disconnect (run {})",
                    w.command,
                    w.run + 1
                ),
                Some(w.opened_after as f64),
                format!("<= {bound:.0} (two broker batches)"),
                Some(w.opened_after as f64 <= bound),
            ));
        }
        for x in c.streams.iter().filter(|x| x.daemon == "clamsentry") {
            let v = x.thread_free_ms;
            out.push(Target::new(
                format!(
                    "cancel: INSTREAM thread free after the disconnect, ms (run {})",
                    x.run + 1
                ),
                v,
                "<= 100".into(),
                v.map(|v| v <= 100.0),
            ));
        }
    }
    out
}

fn median_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| median(&v))
}

/// `0.85x (0.80-0.91)`.
fn ratio_range(v: Option<f64>, range: Option<(f64, f64)>) -> String {
    match (v, range) {
        (Some(v), Some((lo, hi))) if lo != hi => format!("{v:.2}x ({lo:.2}-{hi:.2})"),
        (Some(v), _) => format!("{v:.2}x"),
        _ => "-".into(),
    }
}

/// Three decimals below 10.
fn fine(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() < 10.0 => format!("{v:.3}"),
        v => num(v),
    }
}

fn mib(kib: u64) -> String {
    num(Some(kib as f64 / 1024.0))
}

fn dist(d: &Option<Dist>) -> String {
    match d {
        None => "-".into(),
        Some(d) => format!(
            "{} / {} / {} / {}",
            num(Some(d.min)),
            num(Some(d.median)),
            num(Some(d.p90)),
            num(Some(d.max))
        ),
    }
}

fn range(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} ({}-{})",
        num(Some(median(v))),
        num(Some(lo)),
        num(Some(hi))
    )
}

impl Report {
    /// Computes the targets once every part has run.
    pub fn finish(&mut self, total_s: f64) {
        self.total_s = total_s;
        self.machine = machine();
        let cs = self.daemons.get("clamsentry");
        let mut t = targets(&self.table, &self.spread, cs);
        t.extend(part_targets(self));
        self.targets = t;
    }

    /// The run-to-run spread table (empty without `--repeat`).
    pub fn spread_markdown(&self) -> String {
        let mut s = String::new();
        if self.spread.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "| scenario | metric | clamsentry / clamd per round | median | min-max |"
        );
        let _ = writeln!(s, "|---|---|---|---:|---|");
        for x in &self.spread {
            let per: Vec<String> = x.ratios.iter().map(|r| format!("{r:.3}")).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3}x | {:.3}x-{:.3}x |",
                x.scenario,
                x.metric,
                per.join(", "),
                x.median,
                x.min,
                x.max
            );
        }
        s
    }

    /// One table per part that ran (crash, workers, reloads, dirscan).
    pub fn parts_markdown(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.crash {
            let _ = writeln!(
                s,
                "Crash recovery ({} clients x {} KiB; times in ms after the signal, min / median / p90 / max)\n",
                c.options.as_ref().map_or(0, |o| o.clients),
                c.options.as_ref().map_or(0, |o| o.size >> 10)
            );
            let head: Vec<String> = c
                .series
                .iter()
                .map(|x| format!("{} {}", x.daemon, x.signal))
                .collect();
            let _ = writeln!(s, "| | {} |", head.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(head.len()));
            let mut row = |name: &str, f: &dyn Fn(&Series) -> String| {
                let cells: Vec<String> = c.series.iter().map(f).collect();
                let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
            };
            row("what was killed", &|x| {
                if x.daemon == "clamd" {
                    "the daemon".into()
                } else {
                    format!("a worker (of {})", x.workers.unwrap_or(0))
                }
            });
            row("kills (recovered)", &|x| {
                format!(
                    "{} ({})",
                    x.kills.len(),
                    x.kills.iter().filter(|k| k.recovered).count()
                )
            });
            row("a new scan succeeds", &|x| dist(&x.new_scan_ok_ms));
            row("next successful reply (any client)", &|x| {
                dist(&x.next_ok_ms)
            });
            row("new worker process exists", &|x| dist(&x.new_worker_ms));
            row("replacement serving (supervisor log)", &|x| {
                dist(&x.serving_ms)
            });
            row("back-off the supervisor chose", &|x| dist(&x.backoff_ms));
            row("replacement minus back-off (supervisor)", &|x| {
                dist(&x.replacement_minus_backoff_ms)
            });
            row("failed requests per kill", &|x| dist(&x.failed_per_kill));
            row("failed requests, total", &|x| x.requests_failed.to_string());
            row("connections closed with the dead worker", &|x| {
                x.revoked_total.map_or("-".into(), |v| v.to_string())
            });
            row("failed beyond those (failed - closed)", &|x| {
                x.failed_other_workers_total
                    .map_or("-".into(), |v| v.to_string())
            });
            if c.series.iter().any(|x| x.conns.is_some()) {
                let acc = |x: &Series, f: fn(&crate::crash::ConnAccount) -> u64| {
                    x.conns.as_ref().map_or("-".into(), |a| f(a).to_string())
                };
                row("debug log: connections never reaching a worker", &|x| {
                    acc(x, |a| a.never_reached_a_worker)
                });
                row("debug log: unscanned on killed workers", &|x| {
                    acc(x, |a| a.unscanned_on_killed_workers)
                });
                row("debug log: unscanned on other workers", &|x| {
                    acc(x, |a| a.unscanned_on_other_workers)
                });
            }
            row("failed before the first kill", &|x| {
                x.failed_before_first_kill.to_string()
            });
            row("successful requests", &|x| x.requests_ok.to_string());
            row(
                "supervisor + engine holder PIDs unchanged",
                &|x| match x.pids_unchanged {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            );
            row("series length s", &|x| num(Some(x.seconds)));
            s.push('\n');
        }
        if let Some(w) = &self.workers {
            let _ = writeln!(
                s,
                "Memory (PSS of the process tree) after the same load (10 KiB x16, then 1 MiB x4)\n"
            );
            let _ = writeln!(
                s,
                "| daemon | limits.workers | worker processes | PSS idle MiB | PSS after load MiB | vs 1 worker | RSS summed MiB | PSS per process MiB |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
            for r in &w.runs {
                let per: Vec<String> = r
                    .processes
                    .iter()
                    .map(|p| {
                        let who = match p.comm.as_str() {
                            crate::daemons::ENGINE_COMM => "engine",
                            crate::daemons::WORKER_COMM => "worker",
                            "clamd" => "clamd",
                            _ => "supervisor",
                        };
                        format!("{who} {}", mib(p.pss_kib))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.daemon,
                    r.workers.map_or("-".into(), |n| n.to_string()),
                    r.worker_processes,
                    mib(r.pss_idle_kib),
                    mib(r.pss_kib),
                    r.ratio_vs_one_worker
                        .map_or("-".into(), |v| format!("{v:.3}x")),
                    mib(r.rss_sum_kib),
                    per.join(", ")
                );
            }
            s.push('\n');
        }
        if let Some(rl) = &self.reloads {
            let _ = writeln!(
                s,
                "Reloads under load ({} clients x 10 KiB; each RELOAD once the previous one completed)\n",
                rl.options.as_ref().map_or(0, |o| o.reload_clients)
            );
            let _ = writeln!(
                s,
                "| daemon | reloads | PSS before MiB | PSS after MiB | after / before | peak PSS MiB | most engine holders / workers at once | new signature found s, median (min-max) | reload complete s, median (min-max) | old processes gone s | failed requests | scans/s before / during reloads |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---|"
            );
            for r in &rl.runs {
                let found: Vec<f64> = r.reloads.iter().map(|x| x.found_s).collect();
                let complete: Vec<f64> = r.reloads.iter().filter_map(|x| x.complete_s).collect();
                let rate = |n: u64, secs: f64| num(Some(n as f64 / secs.max(1e-9)));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.3}x | {} | {} | {} | {} | {} | {} | {} / {} |",
                    r.daemon,
                    r.reloads.len(),
                    mib(r.pss_before_kib),
                    mib(r.pss_after_kib),
                    r.ratio,
                    mib(r.peak_pss_kib),
                    if r.daemon == "clamsentry" {
                        format!("{} / {}", r.max_engine_processes, r.max_worker_processes)
                    } else {
                        "-".into()
                    },
                    range(&found),
                    range(&complete),
                    num(r.drained_s),
                    r.requests_failed,
                    rate(r.before_requests_ok, r.before_s),
                    rate(r.requests_ok, r.reload_phase_s)
                );
            }
            s.push('\n');
        }
        if let Some(r) = &self.scrape {
            s.push_str(&r.markdown());
        }
        if let Some(d) = &self.dirscan {
            let _ = writeln!(
                s,
                "Directory walks over the Unix socket ({} runs per daemon, alternating; medians, ratios as median (min-max) of run-by-run ratios; CPU of every process of each daemon)\n",
                d.options.as_ref().map_or(1, |o| o.runs)
            );
            let _ = writeln!(
                s,
                "| workload | command | files | clamd s | clamsentry s | time ratio | clamd CPU s | clamsentry CPU s (supervisor) | CPU ratio | same replies |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
            for v in &d.variants {
                let sup = median_of(
                    v.runs
                        .iter()
                        .filter(|r| r.daemon == "clamsentry")
                        .map(|r| r.main_cpu_s),
                );
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                    v.tree.variant,
                    v.command,
                    v.tree.entries,
                    num(v.clamd_s),
                    num(v.clamsentry_s),
                    ratio_range(v.ratio, v.ratio_range),
                    num(v.clamd_cpu_s),
                    num(v.clamsentry_cpu_s),
                    num(sup),
                    ratio_range(v.cpu_ratio, v.cpu_ratio_range),
                    match v.replies_equal {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    },
                );
            }
            s.push('\n');
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "Small unique streams (10 KiB), {} alternating rounds, each daemon started fresh per round; medians over the rounds, ratios as median (min-max); load average at each round: {}\n",
                l.rounds,
                l.summaries.first().map_or(String::new(), |x| x.loadavg.join(" | "))
            );
            let _ = writeln!(
                s,
                "| scenario | clamd scans/s | clamsentry scans/s | ratio | clamd p99 ms | clamsentry p99 ms | ratio | clamd CPU ms/scan | clamsentry CPU ms/scan | ratio |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for x in &l.summaries {
                let r = |v: &crate::latency::Ratio| ratio_range(v.median, v.min.zip(v.max));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    x.scenario,
                    num(x.clamd_scans_per_s),
                    num(x.clamsentry_scans_per_s),
                    r(&x.throughput),
                    num(x.clamd_p99_ms),
                    num(x.clamsentry_p99_ms),
                    r(&x.p99),
                    fine(x.clamd_cpu_ms_per_scan),
                    fine(x.clamsentry_cpu_ms_per_scan),
                    r(&x.cpu_per_scan),
                );
            }
            s.push('\n');
        }
        if let Some(c) = &self.cancel {
            let _ = writeln!(
                s,
                "Abandoned walks: the client disconnects after {} files were opened; files opened after that (inotify IN_OPEN on every directory), time until STATS no longer lists the walk\n",
                c.options.as_ref().map_or(0, |o| o.after_opens)
            );
            let _ = writeln!(
                s,
                "| daemon | command | run | opened before | opened after | last open after, ms | thread free after, ms |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
            for w in &c.walks {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    w.daemon,
                    w.command,
                    w.run + 1,
                    w.opened_before,
                    w.opened_after,
                    num(w.last_open_ms),
                    num(w.thread_free_ms)
                );
            }
            let _ = writeln!(
                s,
                "\nAbandoned stream scans ({} members of {} bytes, stored ZIP): the client disconnects while the scan runs\n",
                c.options.as_ref().map_or(0, |o| o.archive_members),
                c.options.as_ref().map_or(0, |o| o.member_size)
            );
            let _ = writeln!(
                s,
                "| daemon | run | whole scan, ms | disconnected after, ms | thread free after the disconnect, ms |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            for x in &c.streams {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    x.daemon,
                    x.run + 1,
                    num(Some(x.full_scan_ms)),
                    num(Some(x.disconnected_after_ms)),
                    num(x.thread_free_ms)
                );
            }
            s.push('\n');
        }
        s
    }
}
