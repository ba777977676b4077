//! A memory cgroup of a test's own (cgroup v2 or v1), removed when dropped
//! (after its processes are gone). Needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The test's own memory cgroup directory and the files of its version:
/// (directory, limit file, usage file).
pub fn memory_cgroup() -> Option<(PathBuf, &'static str, &'static str)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let controllers = std::fs::read_to_string(format!("{root}/cgroup.controllers"));
        if controllers.is_ok_and(|c| c.split_whitespace().any(|w| w == "memory")) {
            let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
            let dir = Path::new(root).join(path.trim_start_matches('/'));
            if dir.join("memory.max").exists() || path == "/" {
                return Some((dir, "memory.max", "memory.current"));
            }
        }
    }
    let path = own.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, c, path) = (p.next()?, p.next()?, p.next()?);
        c.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("memory.limit_in_bytes").exists().then_some((
        dir,
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
    ))
}

/// A child cgroup of the test's own.
pub struct Cgroup {
    pub dir: PathBuf,
    pub limit: &'static str,
    pub usage: &'static str,
}

impl Cgroup {
    /// `name` below the test's own memory cgroup; `None` without one.
    pub fn create(name: &str) -> Option<Cgroup> {
        let (parent, limit, usage) = memory_cgroup()?;
        let dir = parent.join(name);
        std::fs::create_dir(&dir).ok()?;
        Some(Cgroup { dir, limit, usage })
    }

    /// Sets the memory limit (`None`: no limit).
    pub fn set_limit(&self, bytes: Option<u64>) {
        let v = match bytes {
            Some(b) => b.to_string(),
            None if self.limit == "memory.max" => "max".into(),
            None => "-1".into(),
        };
        std::fs::write(self.dir.join(self.limit), v).unwrap();
    }

    /// Memory in use now, bytes.
    pub fn usage(&self) -> u64 {
        std::fs::read_to_string(self.dir.join(self.usage))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
