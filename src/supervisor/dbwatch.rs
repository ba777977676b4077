//! Reloads when the signature directory changes (clamd's SelfCheck).
//!
//! Decision: a stat-based check every `database.self-check` seconds rather
//! than inotify. It needs no watch descriptors, works on every filesystem
//! (NFS, overlay), and costs one `readdir` plus a `stat` per file, a few
//! dozen files for a full ClamAV database. Only signature files count
//! (by extension, libclamav's list): freshclam's own state files
//! (`freshclam.dat`) and its temporary directories change on every run
//! without a new database.
//!
//! Debounce: a change is acted on once the directory looks the same on two
//! checks [`SETTLE`] apart, so a burst of writes (freshclam replacing
//! daily.cld, then main.cvd, then bytecode.cvd) causes one reload, and a
//! file is never loaded half-written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Time between the check that saw a change and the one that confirms the
/// directory has settled.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Extensions libclamav loads from a database directory (CLI_DBEXT).
const SIGNATURE_EXTENSIONS: &[&str] = &[
    "cvd", "cld", "cud", "hdb", "hdu", "hsb", "hsu", "mdb", "mdu", "msb", "msu", "ndb", "ndu",
    "ldb", "ldu", "sdb", "zmd", "rmd", "idb", "fp", "sfp", "gdb", "pdb", "wdb", "cbc", "ftm",
    "cfg", "cdb", "cat", "crb", "ign", "ign2", "imp", "yar", "yara", "pwdb", "info",
];

/// What a directory looks like: every signature file's name, size and
/// modification time, sorted. Unreadable directory: empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

impl Fingerprint {
    pub fn of(dir: &Path) -> Fingerprint {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Fingerprint::default();
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .filter(|e| is_signature_file(&e.file_name().to_string_lossy()))
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path()).ok()?;
                meta.is_file().then(|| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        meta.len(),
                        meta.modified().ok(),
                    )
                })
            })
            .collect();
        files.sort();
        Fingerprint(files)
    }
}

fn is_signature_file(name: &str) -> bool {
    !name.starts_with('.')
        && name.rsplit_once('.').is_some_and(|(_, ext)| {
            SIGNATURE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        })
}

/// Decides when a series of fingerprints calls for a reload.
#[derive(Debug)]
pub struct Debounce {
    loaded: Fingerprint,
    pending: Option<Fingerprint>,
}

impl Debounce {
    pub fn new(loaded: Fingerprint) -> Debounce {
        Debounce {
            loaded,
            pending: None,
        }
    }

    /// Feeds the latest fingerprint; true means "reload now".
    pub fn observe(&mut self, now: Fingerprint) -> bool {
        match self.pending.take() {
            Some(p) if p == now => {
                self.loaded = now;
                true
            }
            Some(_) => {
                self.pending = Some(now);
                false
            }
            None if now != self.loaded => {
                self.pending = Some(now);
                false
            }
            None => false,
        }
    }

    /// A change has been seen and waits to settle.
    pub fn settling(&self) -> bool {
        self.pending.is_some()
    }
}

/// Checks the directory every `every` and calls `reload` after a change
/// has settled; runs until the caller drops the task. The supervisor runs
/// it: a worker cannot ask for a reload on its own word.
pub async fn run(dir: PathBuf, every: Duration, mut reload: impl FnMut()) {
    if every.is_zero() {
        return;
    }
    let d = dir.clone();
    let initial = tokio::task::spawn_blocking(move || Fingerprint::of(&d))
        .await
        .unwrap_or_default();
    let mut debounce = Debounce::new(initial);
    loop {
        let wait = if debounce.settling() {
            SETTLE.min(every)
        } else {
            every
        };
        tokio::time::sleep(wait).await;
        let d = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || Fingerprint::of(&d)).await else {
            continue;
        };
        if debounce.observe(now) {
            tracing::info!(directory = %dir.display(), "signature files changed (database.self-check)");
            reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(names: &[&str]) -> Fingerprint {
        Fingerprint(names.iter().map(|n| (n.to_string(), 1, None)).collect())
    }

    #[test]
    fn a_burst_of_changes_is_one_reload() {
        let mut d = Debounce::new(fp(&["main.cvd"]));
        assert!(!d.observe(fp(&["main.cvd"])), "nothing changed");
        assert!(
            !d.observe(fp(&["main.cvd", "daily.cld"])),
            "first change waits"
        );
        assert!(
            !d.observe(fp(&["main.cvd", "daily.cld", "bytecode.cvd"])),
            "still moving"
        );
        assert!(
            d.observe(fp(&["main.cvd", "daily.cld", "bytecode.cvd"])),
            "settled: reload"
        );
        assert!(
            !d.observe(fp(&["main.cvd", "daily.cld", "bytecode.cvd"])),
            "only once"
        );
    }

    #[test]
    fn only_signature_files_count() {
        assert!(is_signature_file("daily.cld"));
        assert!(is_signature_file("local.NDB"));
        assert!(!is_signature_file("freshclam.dat"));
        assert!(!is_signature_file(".daily.cld.tmp"));
        assert!(!is_signature_file("README"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("freshclam.dat"), "x").unwrap();
        let before = Fingerprint::of(dir.path());
        std::fs::write(dir.path().join("freshclam.dat"), "xy").unwrap();
        assert_eq!(before, Fingerprint::of(dir.path()));
        std::fs::write(dir.path().join("new.hdb"), "x").unwrap();
        assert_ne!(before, Fingerprint::of(dir.path()));
    }
}
