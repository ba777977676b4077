//! The quick benchmark end to end against the real clamd and the real
//! clamsentry binary, every part. It checks that both daemons answered
//! correctly, that each part did what it says (kills happened and were
//! recovered from, the worker counts were the ones asked for, reloads
//! completed, both daemons walked the directories) and that the JSON report
//! has every field; it never checks a timing.

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
    "crash/options/kills",
    "crash/series",
    "workers/runs",
    "reloads/runs",
    "dirscan/variants",
    "latency/summaries",
    "cancel/walks",
    "cancel/streams",
];

/// Fields of every crash series, of every kill, of every memory run.
const SERIES_FIELDS: &[&str] = &[
    "daemon",
    "signal",
    "kills",
    "requests_ok",
    "requests_failed",
    "new_scan_ok_ms/median",
    "next_ok_ms/p90",
    "failed_per_kill/max",
    "seconds",
];
const KILL_FIELDS: &[&str] = &[
    "pid",
    "at_ms",
    "new_scan_ok_ms",
    "failed",
    "closed",
    "error_replies",
    "recovered",
];
const CLAMSENTRY_KILL_FIELDS: &[&str] = &[
    "new_worker_ms",
    "serving_ms",
    "worker",
    "slot",
    "slot_failures",
    "backoff_ms",
    "replaced_in_us",
    "revoked",
    "failed_other_workers",
];
const WORKERS_FIELDS: &[&str] = &["pss_kib", "pss_idle_kib", "rss_sum_kib", "processes"];
const RELOADS_FIELDS: &[&str] = &[
    "pss_before_kib",
    "pss_after_kib",
    "ratio",
    "peak_pss_kib",
    "reloads",
    "requests_failed",
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

/// The value at `a/b/0/c` (numbers index arrays).
fn at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('/')
        .try_fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i),
            _ => v.get(k),
        })
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
    check_parts(&opts, &report, &json);

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

fn check_parts(opts: &Options, report: &clamsentry_bench::Report, json: &serde_json::Value) {
    // Crash: both signals against both daemons, every kill recovered from,
    // the supervisor and the engine holder outlived the kills.
    let crash = report.crash.as_ref().expect("the crash part ran");
    let names: Vec<String> = crash
        .series
        .iter()
        .map(|s| format!("{} {}", s.daemon, s.signal))
        .collect();
    assert_eq!(
        names,
        [
            "clamd SIGSEGV",
            "clamsentry SIGSEGV",
            "clamd SIGKILL",
            "clamsentry SIGKILL"
        ]
    );
    for (i, s) in crash.series.iter().enumerate() {
        let want = match s.daemon.as_str() {
            "clamd" => opts.crash.clamd_kills,
            _ => opts.crash.kills,
        };
        assert_eq!(s.kills.len(), want, "{} {}", s.daemon, s.signal);
        assert!(
            s.kills.iter().all(|k| k.recovered),
            "{} {} recovered from every kill",
            s.daemon,
            s.signal
        );
        assert!(s.requests_ok > 0, "{} {} scanned", s.daemon, s.signal);
        for f in SERIES_FIELDS {
            let p = format!("crash/series/{i}/{f}");
            assert!(at(json, &p).is_some(), "JSON lacks {p}");
        }
        for k in 0..s.kills.len() {
            let mut fields = KILL_FIELDS.to_vec();
            if s.daemon == "clamsentry" {
                fields.extend(CLAMSENTRY_KILL_FIELDS);
            }
            for f in fields {
                let p = format!("crash/series/{i}/kills/{k}/{f}");
                assert!(at(json, &p).is_some_and(|v| !v.is_null()), "JSON has {p}");
            }
        }
        if s.daemon == "clamsentry" {
            assert_eq!(s.pids_unchanged, Some(true), "{}", s.signal);
            for k in &s.kills {
                assert_eq!(
                    k.how.as_deref(),
                    Some("signal ".to_string() + &s.signal).as_deref(),
                    "the supervisor saw the worker die of the signal sent"
                );
            }
        }
    }

    // Workers: each asked-for count ran with that many worker processes.
    let workers = report.workers.as_ref().expect("the workers part ran");
    for &n in &opts.memory.worker_counts {
        let r = workers
            .runs
            .iter()
            .find(|r| r.workers == Some(n))
            .unwrap_or_else(|| panic!("a run with {n} workers"));
        assert_eq!(r.worker_processes, n as usize, "{n} worker processes");
        assert_eq!(r.engine_processes, 1, "one engine holder");
        assert!(r.requests_ok > 0 && r.pss_kib > 0);
    }
    assert!(workers.runs.iter().any(|r| r.daemon == "clamd"));
    for i in 0..workers.runs.len() {
        for f in WORKERS_FIELDS {
            let p = format!("workers/runs/{i}/{f}");
            assert!(at(json, &p).is_some(), "JSON lacks {p}");
        }
    }

    // Reloads: every RELOAD answered and completed, on both daemons.
    let reloads = report.reloads.as_ref().expect("the reloads part ran");
    assert_eq!(reloads.runs.len(), 2);
    for (i, r) in reloads.runs.iter().enumerate() {
        assert_eq!(r.reloads.len(), opts.memory.reloads, "{}", r.daemon);
        for x in &r.reloads {
            assert_eq!(x.reply, "RELOADING", "{}", r.daemon);
            assert!(
                x.found_s.is_finite(),
                "{}: the new signature was found",
                r.daemon
            );
        }
        for f in RELOADS_FIELDS {
            let p = format!("reloads/runs/{i}/{f}");
            assert!(at(json, &p).is_some(), "JSON lacks {p}");
        }
    }

    // Directory: both daemons walked every workload and said the same.
    let dir = report.dirscan.as_ref().expect("the dirscan part ran");
    let workloads: Vec<String> = dir
        .variants
        .iter()
        .map(|v| format!("{} {}", v.command, v.tree.variant))
        .collect();
    for want in [
        "CONTSCAN empty files",
        "CONTSCAN small files",
        "CONTSCAN one-byte files",
        "MULTISCAN one-byte files",
    ] {
        assert!(workloads.iter().any(|w| w == want), "{want}: {workloads:?}");
    }
    for v in &dir.variants {
        assert_eq!(v.replies_equal, Some(true), "{}", v.tree.variant);
        for r in &v.runs {
            assert!(
                r.last_line.ends_with(": OK"),
                "{} {}: {:?}",
                r.daemon,
                v.tree.variant,
                r.last_line
            );
        }
        assert!(v.ratio.is_some() && v.cpu_ratio.is_some());
    }

    // Latency: both scenarios, both daemons, every round.
    let lat = report.latency.as_ref().expect("the latency part ran");
    assert_eq!(lat.summaries.len(), 2);
    assert_eq!(lat.runs.len(), 2 * 2 * lat.rounds);
    for r in &lat.runs {
        assert!(r.result.scans > 0, "{} {} scanned", r.daemon, r.scenario);
        assert_eq!(r.result.errors, 0, "{} {}", r.daemon, r.scenario);
    }

    // Cancel: each walk was cut short by the disconnect, and the thread
    // became free; the stream scans ran. (No bound on counts here: the
    // daemon's own tests prove that.)
    let cancel = report.cancel.as_ref().expect("the cancel part ran");
    assert_eq!(cancel.walks.len(), 2 * 3 * opts.cancel.runs);
    for w in &cancel.walks {
        assert!(
            w.opened_before > 0,
            "{} {} opened files",
            w.daemon,
            w.command
        );
        assert!(
            w.opened_before + w.opened_after < w.files as u64,
            "{} {} stopped before the end",
            w.daemon,
            w.command
        );
        assert!(w.thread_free_ms.is_some(), "{} {}", w.daemon, w.command);
    }
    assert_eq!(cancel.streams.len(), 2 * opts.cancel.runs);
    for s in &cancel.streams {
        assert!(
            s.full_scan_ms > 0.0 && s.thread_free_ms.is_some(),
            "{}",
            s.daemon
        );
    }
}
