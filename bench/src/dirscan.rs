//! A large directory: `CONTSCAN <dir>` over the Unix socket, timed from
//! connect to the end of the reply, on a directory of empty files (libclamav
//! is never called: both daemons skip empty files, so this is the walk) and
//! on a directory of small non-empty clean files (walk + open + scan).
//!
//! clamd runs as root here and opens every file itself; clamsentry's worker
//! (as nobody) asks the supervisor's broker for every listing and file.
//! Both daemons run during this part; the runs alternate between them.
//! Before every scan of the small files they are rewritten with new
//! contents, so that each daemon scans every file (libclamav keeps a cache
//! of the hashes of clean files it scanned).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::daemons::Daemon;

/// What the directory part is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirOptions {
    /// Empty files in the first directory.
    pub entries: usize,
    /// Small files in the second directory (0: skip it).
    pub files: usize,
    /// Bytes per small file.
    pub file_size: usize,
    /// CONTSCANs of each directory per daemon.
    pub runs: usize,
}

/// A generated directory.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirTree {
    pub variant: String,
    pub path: PathBuf,
    pub entries: usize,
    pub bytes_per_file: usize,
    pub build_s: f64,
}

/// One CONTSCAN.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirRun {
    pub daemon: String,
    pub run: usize,
    pub seconds: f64,
    /// CPU of the daemon's process tree during the scan.
    pub daemon_cpu_s: f64,
    /// ... of which its main process (clamd; clamsentry's supervisor,
    /// which answers every listing and open for the worker).
    pub main_cpu_s: f64,
    pub reply_lines: usize,
    pub last_line: String,
}

/// One directory, every run of both daemons.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirVariant {
    pub tree: DirTree,
    pub runs: Vec<DirRun>,
    /// Fastest run of each daemon.
    pub clamd_s: Option<f64>,
    pub clamsentry_s: Option<f64>,
    /// clamsentry / clamd (fastest runs).
    pub ratio: Option<f64>,
    /// Both daemons replied the same lines (in any order).
    pub replies_equal: Option<bool>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirscanResult {
    pub options: Option<DirOptions>,
    pub variants: Vec<DirVariant>,
}

/// Creates `dir` with `n` files of `size` bytes (distinct contents, so
/// libclamav's cache of clean files does not answer for a second file).
pub fn build(dir: &Path, variant: &str, n: usize, size: usize) -> std::io::Result<DirTree> {
    use std::os::unix::fs::PermissionsExt;
    let t = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    fill(dir, n, size, 0)?;
    Ok(DirTree {
        variant: variant.into(),
        path: dir.to_path_buf(),
        entries: n,
        bytes_per_file: size,
        build_s: t.elapsed().as_secs_f64(),
    })
}

/// Writes the `n` files of `dir` (created if missing) with contents unique
/// to `generation`: a daemon that scanned an earlier generation finds none
/// of these in its cache of clean files.
fn fill(dir: &Path, n: usize, size: usize, generation: u64) -> std::io::Result<()> {
    let mut buf = crate::db::payload(size, 0xD1_5C_A9 ^ size as u64);
    for i in 0..n {
        let mut f = std::fs::File::create(dir.join(format!("f{i:07}")))?;
        if size > 0 {
            crate::db::stamp(&mut buf, (generation << 32) + i as u64 + 1);
            f.write_all(&buf)?;
        }
    }
    Ok(())
}

/// CONTSCAN of `dir` on `d`: seconds, CPU of the tree and of the main
/// process, and the reply lines.
pub async fn contscan(d: &Daemon, dir: &Path) -> Result<(f64, f64, f64, Vec<String>), String> {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = b"zCONTSCAN ".to_vec();
    cmd.extend_from_slice(dir.as_os_str().as_bytes());
    cmd.push(0);
    let (cpu0, main0) = (d.cpu_s(), crate::daemons::cpu_s(d.pid()));
    let t = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(1800),
        crate::load::request_to_eof(&d.socket, &cmd, t + Duration::from_secs(60), 256 << 20),
    )
    .await
    .map_err(|_| format!("{}: CONTSCAN took more than 30 min", d.kind.name()))?
    .map_err(|e| format!("{}: CONTSCAN: {e}", d.kind.name()))?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = d.cpu_s() - cpu0;
    let main = crate::daemons::cpu_s(d.pid()) - main0;
    let lines = reply
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    Ok((secs, cpu, main, lines))
}

/// Both directories, `runs` CONTSCANs each per daemon, alternating which
/// daemon goes first.
pub async fn run(
    daemons: &[&Daemon],
    work: &Path,
    opts: &DirOptions,
) -> Result<DirscanResult, String> {
    let mut out = DirscanResult {
        options: Some(opts.clone()),
        variants: Vec::new(),
    };
    let mut trees = Vec::new();
    if opts.entries > 0 {
        eprintln!("dirscan: creating {} empty files ...", opts.entries);
        trees.push(
            build(&work.join("dir-empty"), "empty files", opts.entries, 0)
                .map_err(|e| format!("cannot build the directory: {e}"))?,
        );
    }
    if opts.files > 0 {
        eprintln!(
            "dirscan: creating {} files of {} bytes ...",
            opts.files, opts.file_size
        );
        trees.push(
            build(
                &work.join("dir-small"),
                "small files",
                opts.files,
                opts.file_size.max(1),
            )
            .map_err(|e| format!("cannot build the directory: {e}"))?,
        );
    }
    let mut generation = 0u64;
    for tree in trees {
        let mut v = DirVariant {
            tree,
            ..DirVariant::default()
        };
        let mut replies: Vec<(String, Vec<String>)> = Vec::new();
        for run in 0..opts.runs.max(1) {
            let mut order: Vec<&&Daemon> = daemons.iter().collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for d in order {
                // New contents for every scan of non-empty files, so that no
                // run is answered by libclamav's cache of clean files.
                if v.tree.bytes_per_file > 0 && !v.runs.is_empty() {
                    generation += 1;
                    fill(
                        &v.tree.path,
                        v.tree.entries,
                        v.tree.bytes_per_file,
                        generation,
                    )
                    .map_err(|e| format!("cannot rewrite the directory: {e}"))?;
                }
                let (seconds, cpu, main, lines) = contscan(d, &v.tree.path).await?;
                eprintln!(
                    "dirscan: {} {} ({}): {seconds:.2} s, {} reply lines, last {:?}",
                    d.kind.name(),
                    v.tree.variant,
                    v.tree.entries,
                    lines.len(),
                    lines.last().map_or("", String::as_str)
                );
                v.runs.push(DirRun {
                    daemon: d.kind.name().into(),
                    run,
                    seconds,
                    daemon_cpu_s: cpu,
                    main_cpu_s: main,
                    reply_lines: lines.len(),
                    last_line: lines.last().cloned().unwrap_or_default(),
                });
                if run == 0 {
                    let mut sorted = lines;
                    sorted.sort();
                    replies.push((d.kind.name().into(), sorted));
                }
            }
        }
        let best = |name: &str| {
            v.runs
                .iter()
                .filter(|r| r.daemon == name)
                .map(|r| r.seconds)
                .reduce(f64::min)
        };
        v.clamd_s = best("clamd");
        v.clamsentry_s = best("clamsentry");
        v.ratio = match (v.clamd_s, v.clamsentry_s) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        };
        if replies.len() == 2 {
            v.replies_equal = Some(replies[0].1 == replies[1].1);
        }
        out.variants.push(v);
    }
    Ok(out)
}
