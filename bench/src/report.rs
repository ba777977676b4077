//! The results: one JSON document and the table printed from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::daemons::Settings;
use crate::db::DbInfo;
use crate::engine_only::EngineResult;
use crate::load::Scenario;
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

/// A goal from issue 7 and whether this run met it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub target: String,
    pub value: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
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
        table.push(row("daemon", metric, a, b, None));
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

    let targets = targets(&table, cs);
    Report {
        machine: machine(),
        options: opts.clone(),
        settings: settings.clone(),
        database,
        engine_load_s,
        engine_only,
        daemons,
        table,
        targets,
        total_s,
    }
}

fn targets(table: &[Row], cs: Option<&DaemonResult>) -> Vec<Target> {
    let find = |scenario: &str, metric: &str| {
        table
            .iter()
            .find(|r| r.scenario == scenario && r.metric == metric)
    };
    let mut out = Vec::new();
    let mut ratio_at_least = |scenario: &str, metric: &str, goal: f64| {
        let v = find(scenario, metric).and_then(|r| r.ratio);
        out.push(Target {
            target: format!("{scenario} {metric} vs clamd"),
            value: v,
            goal: format!(">= {goal:.2}x"),
            met: v.map(|v| v >= goal),
        });
    };
    ratio_at_least("10KiB x16", "scans/s", 1.35);
    ratio_at_least("10KiB identical x16", "scans/s", 2.0);
    ratio_at_least("1MiB x4", "scans/s", 1.05);
    ratio_at_least("16MiB x2", "scans/s", 1.05);
    let v = find("10KiB x16", "scans/s").and_then(|r| r.clamsentry_pct_of_engine);
    out.push(Target {
        target: "10KiB x16 scans/s vs engine-only".into(),
        value: v,
        goal: ">= 90 %".into(),
        met: v.map(|v| v >= 90.0),
    });
    let mut ratio_at_most = |scenario: &str, metric: &str, goal: f64| {
        let v = find(scenario, metric).and_then(|r| r.ratio);
        out.push(Target {
            target: format!("{scenario} {metric} vs clamd"),
            value: v,
            goal: format!("<= {goal:.2}x"),
            met: v.map(|v| v <= goal),
        });
    };
    ratio_at_most("10KiB x16", "p99 ms", 1.0);
    ratio_at_most("10KiB x256", "p99 ms", 1.0);
    ratio_at_most("daemon", "memory (PSS) after load MiB", 1.05);
    ratio_at_most("daemon", "start to first PONG s", 1.0);
    let v = cs.map(|d| d.idle.delta_kib as f64 / 1024.0);
    out.push(Target {
        target: "clamsentry memory cost of idle connections MiB".into(),
        value: v,
        goal: "<= 32".into(),
        met: v.map(|v| v <= 32.0),
    });
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
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.target,
                num(t.value),
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
             threads {} (both daemons), temporary directory {}, chunk {} B, >= {} s measured per scenario after {} s warm-up; total {:.0} s\n",
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
            self.total_s,
        )
    }
}
