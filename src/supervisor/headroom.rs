//! Memory headroom for a reload: is there room for a second engine?
//!
//! A reload is blue/green: the new engine holder loads the signatures while
//! the old engine keeps serving, so for a while the node holds two engines.
//! With the official databases an engine takes 1 to 1.5 GiB at its peak
//! while loading; a node sized for one (a container with a memory limit, a
//! small VM) meets the OOM killer at the daily reload (ClamAV issues #330
//! and #571). So before a reload, the lifecycle asks [`decide`] with what
//! the executor read ([`read`]):
//!
//! * `MemAvailable` from `/proc/meminfo`: what the kernel can give without
//!   swapping;
//! * each level of the daemon's own cgroup up to the root of its hierarchy,
//!   cgroup v2 (`memory.max`, `memory.current`, `inactive_file` of
//!   `memory.stat`) or v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`,
//!   `total_inactive_file`): the room under a limit is the limit minus the
//!   usage that is not reclaimable page cache;
//! * what the current engine took: its engine holder's peak resident size
//!   while it loaded (`VmHWM`, which the engine holder reports itself in
//!   its Ready message: the supervisor cannot read another user's
//!   `/proc/PID/smaps_rollup` without `CAP_SYS_PTRACE`, which it does not
//!   keep).
//!
//! The reload goes ahead when every one of those rooms is at least the
//! engine's peak plus `limits.reload-headroom`. Otherwise it waits: the old
//! signatures keep serving, the log and the status line say how much was
//! needed and available and which limit was short, the load balancer's
//! agent says `drain`, and the lifecycle tries again after
//! `limits.reload-retry` seconds, doubling up to 16 times that. A figure
//! that cannot be read counts as no limit (a machine without cgroups, a
//! kernel without `MemAvailable`), and an engine whose size is unknown
//! never defers: the check never stops a reload it cannot judge.
//!
//! The engine's size comes from the unprivileged engine holder: it decides
//! only when a reload starts. An engine holder that lies can make reloads
//! wait (it could as well fail to load) or skip the check (as with it
//! turned off); it cannot widen anything else.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Limits at or above this are "no limit" (cgroup v1 writes
/// 9223372036854771712 for none).
const NO_LIMIT: u64 = 1 << 62;

/// One level of the daemon's cgroup, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The cgroup's path, and the file its limit came from (for the log).
    pub name: String,
    pub limit: u64,
    pub usage: u64,
    /// Page cache the kernel reclaims before it would kill (inactive file
    /// pages).
    pub reclaimable: u64,
}

impl Level {
    /// The room under this level's limit.
    pub fn room(&self) -> u64 {
        self.limit
            .saturating_sub(self.usage.saturating_sub(self.reclaimable))
    }
}

/// What the executor read, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub mem_available: Option<u64>,
    /// Levels with a limit, from the daemon's cgroup up.
    pub cgroups: Vec<Level>,
}

/// Why a reload waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Bytes a second engine needs: the current one's load peak plus
    /// `limits.reload-headroom`.
    pub need: u64,
    /// Bytes the tightest limit leaves.
    pub available: u64,
    /// Which limit: `MemAvailable` or a cgroup file.
    pub limited_by: String,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a second engine needs {} MiB, {} leaves {} MiB",
            mib(self.need),
            self.limited_by,
            mib(self.available)
        )
    }
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Load now.
    Go,
    /// Wait; the old engine serves.
    Defer(Shortfall),
}

/// May a reload load a second engine now? `engine`: the current engine's
/// peak while loading (0: unknown); `headroom`: `limits.reload-headroom`.
pub fn decide(reading: &Reading, engine: u64, headroom: u64) -> Verdict {
    if engine == 0 {
        return Verdict::Go;
    }
    let need = engine.saturating_add(headroom);
    let mut tightest: Option<(u64, String)> = reading
        .mem_available
        .map(|a| (a, "MemAvailable".to_string()));
    for level in &reading.cgroups {
        let room = level.room();
        if tightest.as_ref().map_or(true, |(a, _)| room < *a) {
            tightest = Some((room, level.name.clone()));
        }
    }
    match tightest {
        Some((available, limited_by)) if available < need => Verdict::Defer(Shortfall {
            need,
            available,
            limited_by,
        }),
        _ => Verdict::Go,
    }
}

/// `MemAvailable` in bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

/// The daemon's cgroup paths from `/proc/self/cgroup`: the v2 one
/// (`0::/path`) and the v1 memory controller's.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// A limit file's value: `max` or a huge number is no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v < NO_LIMIT)
}

/// One counter of a `memory.stat` file.
pub fn parse_stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The file names of one cgroup version.
struct Files {
    limit: &'static str,
    usage: &'static str,
    inactive: &'static str,
}

const V2: Files = Files {
    limit: "memory.max",
    usage: "memory.current",
    inactive: "inactive_file",
};

const V1: Files = Files {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    inactive: "total_inactive_file",
};

/// Levels with a limit from `dir` up to `root`.
fn levels(root: &Path, cgroup: &str, files: &Files) -> Vec<Level> {
    let mut out = Vec::new();
    let mut rel = PathBuf::from(cgroup.trim_start_matches('/'));
    loop {
        let dir = root.join(&rel);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let Some(limit) = read(files.limit).as_deref().and_then(parse_limit) {
            let usage = read(files.usage)
                .and_then(|u| u.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let reclaimable = read("memory.stat")
                .and_then(|s| parse_stat(&s, files.inactive))
                .unwrap_or(0);
            out.push(Level {
                name: dir.join(files.limit).display().to_string(),
                limit,
                usage,
                reclaimable,
            });
        }
        if !rel.pop() {
            return out;
        }
    }
}

/// Reads the figures [`decide`] needs: `/proc/meminfo`, `/proc/self/cgroup`
/// and the cgroup files under `/sys/fs/cgroup` (v2 there, or at
/// `/sys/fs/cgroup/unified` on a hybrid system; v1's memory controller at
/// `/sys/fs/cgroup/memory`). These are small files the kernel fills in
/// memory: reading them does not wait on a disk.
pub fn read() -> Reading {
    let mem_available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(parse_meminfo);
    let (v2, v1) = std::fs::read_to_string("/proc/self/cgroup")
        .map(|t| parse_proc_cgroup(&t))
        .unwrap_or_default();
    let mut cgroups = Vec::new();
    if let Some(path) = v2 {
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if Path::new(root).join("cgroup.controllers").exists() {
                cgroups.extend(levels(Path::new(root), &path, &V2));
                break;
            }
        }
    }
    if let Some(path) = v1 {
        cgroups.extend(levels(Path::new("/sys/fs/cgroup/memory"), &path, &V1));
    }
    Reading {
        mem_available,
        cgroups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn level(limit: u64, usage: u64, reclaimable: u64) -> Level {
        Level {
            name: "/sys/fs/cgroup/system.slice/clamsentry.service/memory.max".into(),
            limit: limit * MIB,
            usage: usage * MIB,
            reclaimable: reclaimable * MIB,
        }
    }

    #[test]
    fn a_reload_goes_when_every_limit_has_room() {
        let r = Reading {
            mem_available: Some(4096 * MIB),
            cgroups: vec![level(3000, 1500, 100)],
        };
        // 1,200 MiB engine + 64 MiB headroom; the cgroup leaves 1,600.
        assert_eq!(decide(&r, 1200 * MIB, 64 * MIB), Verdict::Go);
    }

    #[test]
    fn the_tightest_limit_defers_it_and_is_named() {
        let r = Reading {
            mem_available: Some(4096 * MIB),
            cgroups: vec![level(2600, 1500, 0), level(8000, 1600, 0)],
        };
        let Verdict::Defer(s) = decide(&r, 1200 * MIB, 64 * MIB) else {
            panic!()
        };
        assert_eq!((s.need, s.available), (1264 * MIB, 1100 * MIB));
        assert!(s.limited_by.ends_with("memory.max"));
        assert_eq!(
            s.to_string(),
            "a second engine needs 1264 MiB, /sys/fs/cgroup/system.slice/clamsentry.service/memory.max leaves 1100 MiB"
        );
        let r = Reading {
            mem_available: Some(900 * MIB),
            cgroups: vec![],
        };
        let Verdict::Defer(s) = decide(&r, 1200 * MIB, 0) else {
            panic!()
        };
        assert_eq!(s.limited_by, "MemAvailable");
    }

    #[test]
    fn reclaimable_page_cache_counts_as_room() {
        let tight = Reading {
            mem_available: None,
            cgroups: vec![level(2000, 1900, 0)],
        };
        assert!(matches!(decide(&tight, 500 * MIB, 0), Verdict::Defer(_)));
        let cache = Reading {
            mem_available: None,
            cgroups: vec![level(2000, 1900, 800)],
        };
        assert_eq!(decide(&cache, 500 * MIB, 0), Verdict::Go);
        // Usage above the limit leaves nothing, without wrapping.
        assert_eq!(level(100, 300, 0).room(), 0);
    }

    #[test]
    fn what_cannot_be_judged_never_defers() {
        assert_eq!(
            decide(&Reading::default(), 1200 * MIB, 64 * MIB),
            Verdict::Go
        );
        let r = Reading {
            mem_available: Some(MIB),
            cgroups: vec![],
        };
        assert_eq!(decide(&r, 0, 64 * MIB), Verdict::Go, "unknown engine size");
    }

    #[test]
    fn the_kernel_files_parse() {
        let meminfo = "MemTotal:       24683772 kB\nMemFree:          562068 kB\nMemAvailable:   21449932 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(21_449_932 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/6f0c\n3:cpuset:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            (Some("/".into()), Some("/process_api/6f0c".into()))
        );
        let unified = "0::/system.slice/clamsentry.service\n";
        assert_eq!(
            parse_proc_cgroup(unified),
            (Some("/system.slice/clamsentry.service".into()), None)
        );
        assert_eq!(
            parse_proc_cgroup("5:cpu,memory:/a\n"),
            (None, Some("/a".into()))
        );
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("104857600\n"), Some(104_857_600));
        assert_eq!(parse_limit("garbage"), None);
        let stat = "anon 1000\nfile 5000\ninactive_file 4096\nactive_file 904\n";
        assert_eq!(parse_stat(stat, "inactive_file"), Some(4096));
        assert_eq!(parse_stat(stat, "total_inactive_file"), None);
    }

    #[test]
    fn levels_are_read_up_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("system.slice/clamsentry.service");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("memory.max"), "1073741824\n").unwrap();
        std::fs::write(leaf.join("memory.current"), "536870912\n").unwrap();
        std::fs::write(leaf.join("memory.stat"), "inactive_file 1048576\n").unwrap();
        std::fs::write(root.path().join("system.slice/memory.max"), "max\n").unwrap();
        std::fs::write(root.path().join("memory.max"), "2147483648\n").unwrap();
        let l = levels(root.path(), "/system.slice/clamsentry.service", &V2);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[0].room(), (1 << 30) - (512 << 20) + (1 << 20));
        assert_eq!(l[1].limit, 2 << 30);
        assert_eq!(l[1].usage, 0, "no memory.current at the root: 0");
    }

    /// What this machine says (a smoke test: the figures exist and parse
    /// where the kernel has them).
    #[test]
    fn this_machine_is_read() {
        let r = read();
        if Path::new("/proc/meminfo").exists() {
            assert!(r.mem_available.is_some_and(|a| a > 0), "{r:?}");
        }
        for l in &r.cgroups {
            assert!(l.limit > 0 && l.limit < NO_LIMIT, "{l:?}");
        }
    }
}
