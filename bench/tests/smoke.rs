//! The quick benchmark end to end against the real clamd and the real
//! clamsentry binary. It checks that both daemons answered correctly and
//! that the JSON report has every field; it never checks a timing.

use clamsentry_bench::{build_clamsentry, default_clamsentry, run, Options};

/// Every path the JSON report must have, per daemon where `{d}` appears.
const FIELDS: &[&str] = &[
    "machine/nproc",
    "machine/cpu_model",
    "machine/mem_total_kib",
    "machine/libclamav",
    "options/hdb",
    "settings/threads",
    "database/hdb_signatures",
    "database/ndb_signatures",
    "database/ndb_with_wildcards",
    "engine_load_s",
    "engine_only/10KiB/scans_per_s",
    "engine_only/10KiB identical/scans_per_s",
    "engine_only/1MiB/mb_per_s",
    "engine_only/16MiB/mb_per_s",
    "engine_only/10KiB 1 thread/p99_ms",
    "daemons/{d}/version",
    "daemons/{d}/start_to_pong_s",
    "daemons/{d}/clean_reply",
    "daemons/{d}/found_reply",
    "daemons/{d}/rss_idle_kib",
    "daemons/{d}/rss_after_load_kib",
    "daemons/{d}/idle/opened",
    "daemons/{d}/idle/delta_kib",
    "daemons/{d}/idle/ping_ms",
    "daemons/{d}/reload/reply",
    "daemons/{d}/reload/reload_s",
    "daemons/{d}/reload/peak_rss_kib",
    "table",
    "targets",
    "total_s",
];

const SCENARIO_FIELDS: &[&str] = &[
    "scans",
    "errors",
    "scans_per_s",
    "mb_per_s",
    "p50_ms",
    "p99_ms",
    "peak_rss_kib",
    "daemon_cpu_pct",
    "client_cpu_pct",
    "other_cpu_pct",
];

fn at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('/').try_fold(v, |v, k| v.get(k))
}

#[test]
fn quick_benchmark_runs_against_both_daemons() {
    if !default_clamsentry().exists() {
        build_clamsentry().expect("build the clamsentry release binary");
    }
    clamsentry_bench::raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let mut opts = Options::quick();
    opts.workdir = Some(work.path().join("run"));
    let report = run(&opts).expect("the quick benchmark runs");
    let path = work.path().join("results.json");
    report.write_json(&path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    for d in ["clamd", "clamsentry"] {
        for f in FIELDS {
            let p = f.replace("{d}", d);
            assert!(at(&json, &p).is_some(), "JSON lacks {p}");
        }
        let dr = &report.daemons[d];
        assert_eq!(dr.clean_reply, "stream: OK", "{d}");
        assert_eq!(
            dr.found_reply, "stream: Bench.Positive.Control.UNOFFICIAL FOUND",
            "{d}"
        );
        assert_eq!(dr.reload.reply, "RELOADING", "{d}");
        assert!(dr.reload.reload_s > 0.0, "{d} reload measured");
        assert_eq!(dr.idle.opened, opts.idle_connections, "{d}");
        for sc in clamsentry_bench::scenarios(false) {
            let r = &dr.scenarios[&sc.name];
            assert_eq!(
                r.errors, 0,
                "{d} {}: every reply is stream: OK ({:?})",
                sc.name, r.first_error
            );
            assert!(r.scans > 0, "{d} {}: some scans completed", sc.name);
            for f in SCENARIO_FIELDS {
                let p = format!("daemons/{d}/scenarios/{}/{f}", sc.name);
                assert!(at(&json, &p).is_some(), "JSON lacks {p}");
            }
        }
    }
    let rows = json["table"].as_array().unwrap();
    for metric in [
        "scans/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "peak memory (PSS) MiB",
    ] {
        assert!(
            rows.iter().any(|r| r["metric"] == metric),
            "table has {metric}"
        );
    }
    for metric in [
        "start to first PONG s",
        "reload s",
        "peak memory (PSS) during reload MiB",
        "memory (PSS) +idle connections MiB",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["metric"] == metric && !r["ratio"].is_null()),
            "table has {metric} for both daemons"
        );
    }
}
