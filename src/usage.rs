//! A process's own resource use: proportional and resident memory, CPU
//! time, open descriptors.
//!
//! Each of the daemon's processes measures itself and reports the numbers
//! (`ipc::observe::ProcUsage`): the supervisor keeps only six capabilities,
//! not `CAP_SYS_PTRACE`, so it may not read `/proc/PID/smaps_rollup` of its
//! children, which run as another user and are not dumpable; a process may
//! always read its own. A sandboxed process cannot open anything under
//! `/proc` once its Landlock domain is in force, so [`Meter::open`] opens
//! `/proc/self/smaps_rollup` before that, and [`Meter::read`] reads the
//! same descriptor again each time (the kernel regenerates the text at
//! offset 0). CPU time comes from `getrusage`, descriptors from
//! `/proc/self/fd` where it can be listed, otherwise by asking the kernel
//! about each descriptor number below the open-file limit.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::ipc::observe::ProcUsage;

/// Most descriptor numbers probed one by one when `/proc/self/fd` cannot
/// be listed.
const MAX_PROBED_FDS: u64 = 65_536;

/// Measures this process.
#[derive(Debug)]
pub struct Meter {
    smaps: Option<File>,
}

impl Meter {
    /// Opens what a later [`Meter::read`] needs; call it before the process
    /// sandboxes itself. Without `/proc` memory reads as 0.
    pub fn open() -> Meter {
        Meter {
            smaps: File::open("/proc/self/smaps_rollup").ok(),
        }
    }

    /// Whether memory figures are available.
    #[cfg(test)]
    pub fn has_memory(&self) -> bool {
        self.smaps.is_some()
    }

    /// The numbers now. Reading smaps_rollup walks the process's page
    /// tables: milliseconds for a process holding a large engine.
    pub fn read(&mut self) -> ProcUsage {
        let (pss_kib, rss_kib) = self.memory().unwrap_or((0, 0));
        ProcUsage {
            pss_kib,
            rss_kib,
            cpu_us: cpu_us(),
            fds: count_fds(),
        }
    }

    fn memory(&mut self) -> Option<(u64, u64)> {
        let f = self.smaps.as_mut()?;
        f.seek(SeekFrom::Start(0)).ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        Some(parse_smaps_rollup(&text))
    }
}

/// `Pss:` and `Rss:` of smaps_rollup text, KiB.
pub fn parse_smaps_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

/// User plus system CPU time of this process (all its threads), µs.
pub fn cpu_us() -> u64 {
    crate::sys::cpu_time_self().map_or(0, |(user, system)| user.saturating_add(system))
}

/// Open descriptors of this process.
pub fn count_fds() -> u32 {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The listing's own descriptor is one of them.
        return (dir.count() as u32).saturating_sub(1);
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(MAX_PROBED_FDS);
    (0..limit as i32)
        .filter(|fd| crate::sys::is_open(*fd))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_fields() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:               13732 kB\nPss:                9137 kB\nPss_Anon:           4000 kB\n";
        assert_eq!(parse_smaps_rollup(text), (9137, 13732));
        assert_eq!(parse_smaps_rollup(""), (0, 0));
    }

    #[test]
    fn this_process_measures_itself_through_one_descriptor() {
        let mut m = Meter::open();
        assert!(m.has_memory());
        let first = m.read();
        assert!(
            first.pss_kib > 0 && first.rss_kib >= first.pss_kib,
            "{first:?}"
        );
        assert!(first.fds >= 3, "{first:?}");
        // The same descriptor again: regenerated text, not EOF.
        let again = m.read();
        assert!(again.pss_kib > 0, "{again:?}");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(m.read().cpu_us >= first.cpu_us);
    }
}
