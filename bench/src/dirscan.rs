//! Directory walks over the Unix socket, timed from connect to the end of
//! the reply, with the CPU the whole daemon used meanwhile (every process,
//! from /proc: clamsentry's supervisor answers every listing and open for
//! its worker). The workloads:
//!
//! * **empty files**: CONTSCAN of a directory of empty files (both daemons
//!   skip them: the walk alone);
//! * **small files**: CONTSCAN of 512-byte files with new contents before
//!   every scan (libclamav scans each);
//! * **one-byte files**: CONTSCAN and MULTISCAN of one-byte files: the cost
//!   per entry of the walk, the open and the scan (256 contents, so after
//!   the first files libclamav's cache of clean files answers, in both);
//! * **system tree, first scan**: CONTSCAN of real directories
//!   (/usr/share/doc, /usr/lib/python3, /usr/share/perl5) by freshly started
//!   daemons, whose caches of clean files are empty;
//! * **system tree, second scan**: the same again right after, answered
//!   mostly by the cache (clamsentry: the cache of the worker of this
//!   client, which holds all of its connections).
//!
//! clamd runs as root and opens every file itself; clamsentry's worker (as
//! nobody) asks the supervisor's broker, which opens as the client (root
//! here). Runs alternate between the daemons (ABBA...); each daemon's time
//! and CPU are reported as the median and range of its runs, the ratios as
//! the median and range of run r of clamsentry over run r of clamd.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::daemons::{Daemon, Kind};

/// What the directory part is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirOptions {
    /// Empty files (0: skip this workload).
    pub entries: usize,
    /// Small files (0: skip).
    pub files: usize,
    /// Bytes per small file.
    pub file_size: usize,
    /// One-byte files (0: skip).
    pub one_byte: usize,
    /// The real tree (those of these directories that exist; none: skip).
    pub system: Vec<PathBuf>,
    /// Runs of each workload per daemon.
    pub runs: usize,
}

impl DirOptions {
    /// The system tree of the issue: documentation, Python and Perl
    /// libraries (mostly small text files, some compressed).
    pub fn system_tree() -> Vec<PathBuf> {
        ["/usr/share/doc", "/usr/lib/python3", "/usr/share/perl5"]
            .iter()
            .map(PathBuf::from)
            .collect()
    }
}

/// A generated directory, or the system tree.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirTree {
    pub variant: String,
    pub paths: Vec<PathBuf>,
    /// Files (regular files under the paths).
    pub entries: usize,
    pub bytes_per_file: usize,
    pub build_s: f64,
}

/// One scan of a workload by one daemon.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirRun {
    pub daemon: String,
    pub run: usize,
    pub seconds: f64,
    /// CPU of the whole daemon during the scan (every process).
    pub daemon_cpu_s: f64,
    /// ... of which its main process (clamd; clamsentry's supervisor,
    /// which answers every listing and open for the worker).
    pub main_cpu_s: f64,
    pub reply_lines: usize,
    pub last_line: String,
}

/// One workload, every run of both daemons.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirVariant {
    pub tree: DirTree,
    pub command: String,
    pub runs: Vec<DirRun>,
    /// Median time and CPU of each daemon's runs.
    pub clamd_s: Option<f64>,
    pub clamsentry_s: Option<f64>,
    pub clamd_cpu_s: Option<f64>,
    pub clamsentry_cpu_s: Option<f64>,
    /// clamsentry / clamd time: median of the per-run ratios, and range.
    pub ratio: Option<f64>,
    pub ratio_range: Option<(f64, f64)>,
    /// clamsentry / clamd CPU of the whole daemon, the same way.
    pub cpu_ratio: Option<f64>,
    pub cpu_ratio_range: Option<(f64, f64)>,
    /// Both daemons replied the same lines (in any order), first run.
    pub replies_equal: Option<bool>,
    /// The time and CPU ratio this workload should stay at or below.
    pub goal: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirscanResult {
    pub options: Option<DirOptions>,
    pub variants: Vec<DirVariant>,
}

/// Starts a fresh daemon of a kind (for the first scan of the system tree).
pub trait Starter {
    fn start(&self, kind: Kind) -> impl std::future::Future<Output = Result<Daemon, String>>;
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
        paths: vec![dir.to_path_buf()],
        entries: n,
        bytes_per_file: size,
        build_s: t.elapsed().as_secs_f64(),
    })
}

/// Creates `dir` with `n` files of one byte each (byte `i % 256`).
pub fn build_one_byte(dir: &Path, n: usize) -> std::io::Result<DirTree> {
    use std::os::unix::fs::PermissionsExt;
    let t = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:07}")), [(i % 256) as u8])?;
    }
    Ok(DirTree {
        variant: "one-byte files".into(),
        paths: vec![dir.to_path_buf()],
        entries: n,
        bytes_per_file: 1,
        build_s: t.elapsed().as_secs_f64(),
    })
}

/// Regular files under `paths` (not following symlinks).
fn count_files(paths: &[PathBuf]) -> usize {
    let mut n = 0;
    let mut todo: Vec<PathBuf> = paths.to_vec();
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
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

/// `command` of each of `paths` on `d`, one connection after the other:
/// seconds, CPU of the whole daemon and of its main process, reply lines.
pub async fn scan(
    d: &Daemon,
    command: &str,
    paths: &[PathBuf],
) -> Result<(f64, f64, f64, Vec<String>), String> {
    use std::os::unix::ffi::OsStrExt;
    let (cpu0, main0) = (d.cpu_s(), crate::daemons::cpu_s(d.pid()));
    let t = Instant::now();
    let mut lines = Vec::new();
    for path in paths {
        let mut cmd = format!("z{command} ").into_bytes();
        cmd.extend_from_slice(path.as_os_str().as_bytes());
        cmd.push(0);
        let reply = tokio::time::timeout(
            Duration::from_secs(1800),
            crate::load::request_to_eof(&d.socket, &cmd, t + Duration::from_secs(60), 256 << 20),
        )
        .await
        .map_err(|_| format!("{}: {command} took more than 30 min", d.kind.name()))?
        .map_err(|e| format!("{}: {command}: {e}", d.kind.name()))?;
        lines.extend(
            reply
                .split(|b| *b == 0)
                .filter(|l| !l.is_empty())
                .map(|l| String::from_utf8_lossy(l).into_owned()),
        );
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = d.cpu_s() - cpu0;
    let main = crate::daemons::cpu_s(d.pid()) - main0;
    Ok((secs, cpu, main, lines))
}

/// Back-compatible name: CONTSCAN of one directory.
pub async fn contscan(d: &Daemon, dir: &Path) -> Result<(f64, f64, f64, Vec<String>), String> {
    scan(d, "CONTSCAN", &[dir.to_path_buf()]).await
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    Some((
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ))
}

impl DirVariant {
    fn new(tree: DirTree, command: &str, goal: f64) -> DirVariant {
        DirVariant {
            tree,
            command: command.into(),
            goal,
            ..DirVariant::default()
        }
    }

    fn record(&mut self, d: &Daemon, run: usize, r: (f64, f64, f64, Vec<String>)) {
        let (seconds, cpu, main, lines) = r;
        eprintln!(
            "dirscan: {} {} {} ({} files): {seconds:.2} s, CPU {cpu:.2} s, {} reply lines, last {:?}",
            d.kind.name(),
            self.command,
            self.tree.variant,
            self.tree.entries,
            lines.len(),
            lines.last().map_or("", String::as_str)
        );
        self.runs.push(DirRun {
            daemon: d.kind.name().into(),
            run,
            seconds,
            daemon_cpu_s: cpu,
            main_cpu_s: main,
            reply_lines: lines.len(),
            last_line: lines.last().cloned().unwrap_or_default(),
        });
    }

    /// Medians and ratios, once every run is in.
    fn summarise(&mut self, first_replies: &[(String, Vec<String>)]) {
        let of = |name: &str, f: fn(&DirRun) -> f64| -> Vec<(usize, f64)> {
            self.runs
                .iter()
                .filter(|r| r.daemon == name)
                .map(|r| (r.run, f(r)))
                .collect()
        };
        let values = |v: &[(usize, f64)]| v.iter().map(|x| x.1).collect::<Vec<f64>>();
        let ratios = |f: fn(&DirRun) -> f64| -> Vec<f64> {
            let (a, b) = (of("clamd", f), of("clamsentry", f));
            a.iter()
                .filter_map(|(run, x)| {
                    b.iter()
                        .find(|(r, _)| r == run)
                        .filter(|_| *x > 0.0)
                        .map(|(_, y)| y / x)
                })
                .collect()
        };
        self.clamd_s = median(&values(&of("clamd", |r| r.seconds)));
        self.clamsentry_s = median(&values(&of("clamsentry", |r| r.seconds)));
        self.clamd_cpu_s = median(&values(&of("clamd", |r| r.daemon_cpu_s)));
        self.clamsentry_cpu_s = median(&values(&of("clamsentry", |r| r.daemon_cpu_s)));
        let t = ratios(|r| r.seconds);
        self.ratio = median(&t);
        self.ratio_range = min_max(&t);
        let c = ratios(|r| r.daemon_cpu_s);
        self.cpu_ratio = median(&c);
        self.cpu_ratio_range = min_max(&c);
        if first_replies.len() == 2 {
            self.replies_equal = Some(first_replies[0].1 == first_replies[1].1);
        }
    }
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Every workload, `runs` scans each per daemon, the daemon going first
/// alternating from run to run. `daemons` are running and idle; the first
/// scans of the system tree use daemons started fresh by `starter`.
pub async fn run(
    daemons: &[&Daemon],
    starter: &impl Starter,
    work: &Path,
    opts: &DirOptions,
) -> Result<DirscanResult, String> {
    let mut out = DirscanResult {
        options: Some(opts.clone()),
        variants: Vec::new(),
    };
    let runs = opts.runs.max(1);
    let order = |run: usize| -> Vec<&Daemon> {
        let mut o: Vec<&Daemon> = daemons.to_vec();
        if run % 2 == 1 {
            o.reverse();
        }
        o
    };
    if opts.entries > 0 {
        eprintln!("dirscan: creating {} empty files ...", opts.entries);
        let tree = build(&work.join("dir-empty"), "empty files", opts.entries, 0)
            .map_err(|e| format!("cannot build the directory: {e}"))?;
        let mut v = DirVariant::new(tree, "CONTSCAN", 1.0);
        let mut first = Vec::new();
        for run in 0..runs {
            for d in order(run) {
                let r = scan(d, "CONTSCAN", &v.tree.paths).await?;
                if run == 0 {
                    first.push((d.kind.name().to_string(), sorted(r.3.clone())));
                }
                v.record(d, run, r);
            }
        }
        v.summarise(&first);
        let _ = std::fs::remove_dir_all(work.join("dir-empty"));
        out.variants.push(v);
    }
    if opts.files > 0 {
        eprintln!(
            "dirscan: creating {} files of {} bytes ...",
            opts.files, opts.file_size
        );
        let dir = work.join("dir-small");
        let size = opts.file_size.max(1);
        let tree = build(&dir, "small files", opts.files, size)
            .map_err(|e| format!("cannot build the directory: {e}"))?;
        let mut v = DirVariant::new(tree, "CONTSCAN", 1.0);
        let mut first = Vec::new();
        let mut generation = 0u64;
        for run in 0..runs {
            for d in order(run) {
                // New contents for every scan, so that no run is answered by
                // libclamav's cache of clean files.
                if !v.runs.is_empty() {
                    generation += 1;
                    fill(&dir, opts.files, size, generation)
                        .map_err(|e| format!("cannot rewrite the directory: {e}"))?;
                }
                let r = scan(d, "CONTSCAN", &v.tree.paths).await?;
                if run == 0 {
                    first.push((d.kind.name().to_string(), sorted(r.3.clone())));
                }
                v.record(d, run, r);
            }
        }
        v.summarise(&first);
        let _ = std::fs::remove_dir_all(&dir);
        out.variants.push(v);
    }
    if opts.one_byte > 0 {
        eprintln!("dirscan: creating {} one-byte files ...", opts.one_byte);
        let dir = work.join("dir-one-byte");
        let tree = build_one_byte(&dir, opts.one_byte)
            .map_err(|e| format!("cannot build the directory: {e}"))?;
        for command in ["CONTSCAN", "MULTISCAN"] {
            let mut v = DirVariant::new(tree.clone(), command, 1.0);
            let mut first = Vec::new();
            for run in 0..runs {
                for d in order(run) {
                    let r = scan(d, command, &v.tree.paths).await?;
                    if run == 0 {
                        first.push((d.kind.name().to_string(), sorted(r.3.clone())));
                    }
                    v.record(d, run, r);
                }
            }
            v.summarise(&first);
            out.variants.push(v);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let system: Vec<PathBuf> = opts.system.iter().filter(|p| p.is_dir()).cloned().collect();
    if !system.is_empty() {
        let tree = DirTree {
            variant: "system tree".into(),
            entries: count_files(&system),
            paths: system.clone(),
            ..DirTree::default()
        };
        let mut cold = DirVariant::new(
            DirTree {
                variant: "system tree, first scan".into(),
                ..tree.clone()
            },
            "CONTSCAN",
            1.0,
        );
        let mut warm = DirVariant::new(
            DirTree {
                variant: "system tree, second scan".into(),
                ..tree
            },
            "CONTSCAN",
            1.1,
        );
        let (mut first_cold, mut first_warm) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let kinds: Vec<Kind> = order(run).iter().map(|d| d.kind).collect();
            for kind in kinds {
                // A daemon just started: its cache of clean files is empty.
                let fresh = starter.start(kind).await?;
                let r = scan(&fresh, "CONTSCAN", &system).await?;
                if run == 0 {
                    first_cold.push((kind.name().to_string(), sorted(r.3.clone())));
                }
                cold.record(&fresh, run, r);
                let r = scan(&fresh, "CONTSCAN", &system).await?;
                if run == 0 {
                    first_warm.push((kind.name().to_string(), sorted(r.3.clone())));
                }
                warm.record(&fresh, run, r);
            }
        }
        cold.summarise(&first_cold);
        warm.summarise(&first_warm);
        out.variants.push(cold);
        out.variants.push(warm);
    }
    Ok(out)
}
