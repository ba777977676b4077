//! Shared test support: signature databases built at test time, the EICAR
//! string generated in code, the real clamsentry binary and the real clamd.
#![allow(dead_code)]

pub mod cgroup;
pub mod client;
pub mod daemons;
pub mod holder;
pub mod netns;
pub mod require;
pub mod scrape;
pub mod seccomp;
pub mod users;

use std::path::{Path, PathBuf};

/// Settings for comparing with clamd: the TCP listener accepts every command,
/// as clamd's does (the default TCP policy refuses path and admin commands;
/// `tests/policy.rs` tests that).
pub const COMPAT_SETTINGS: [(&str, &str); 2] = [
    ("limits", "max-threads = 4"),
    (
        "policy.tcp",
        "commands = [\"SCAN\", \"QUIT\", \"RELOAD\", \"PING\", \"CONTSCAN\", \"VERSIONCOMMANDS\", \"VERSION\", \"END\", \"SHUTDOWN\", \"MULTISCAN\", \"FILDES\", \"STATS\", \"IDSESSION\", \"INSTREAM\", \"DETSTATSCLEAR\", \"DETSTATS\", \"ALLMATCHSCAN\"]",
    ),
];

/// The user test daemons run their workers as: a dedicated system user, as
/// in production (`sandbox.user`, the package's `clamsentry`), so that
/// clients running as nobody are other users, never the service user. It
/// is created on first use (the tests run as root; `scripts/install-deps.sh`
/// creates it too).
pub const SERVICE_USER: &str = "clamsentry-test";

/// The service user's uid and gid, creating the user if needed.
pub fn service_user() -> (u32, u32) {
    use std::sync::OnceLock;
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        let lookup = || {
            nix::unistd::User::from_name(SERVICE_USER)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
        };
        if let Some(ids) = lookup() {
            return ids;
        }
        // Several test binaries may get here at once: useradd takes the
        // user database's lock; a second one fails with "already exists".
        let _ = std::process::Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ])
            .status();
        lookup().unwrap_or_else(|| {
            panic!("cannot create the test service user {SERVICE_USER} (run the tests as root)")
        })
    })
}

/// Debian's clamav-testfiles.
pub const TESTFILES: &str = "/usr/share/clamav-testfiles";

/// The EICAR test string, assembled so no source or data file contains it whole.
pub fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-");
    v.extend_from_slice(b"TEST-FILE!$H+H*");
    v
}

/// A signature directory made for the tests: MD5 (.hdb) of EICAR and of
/// clam.exe, a body signature (.ndb) and a logical signature (.ldb) that match
/// clam.exe and everything in clamav-testfiles that contains it.
pub struct TestDb {
    dir: tempfile::TempDir,
}

pub const HDB: &str = "44d88612fea8a8f36de82e1278abb02f:68:Win.Test.EICAR_HDB-1\n\
aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File\n";
pub const NDB: &str = "Clamsentry.Test.Body-1:0:*:434c414d65737361676542\n";
pub const LDB: &str =
    "Clamsentry.Test.Logical-1;Engine:51-255,Target:0;0&1;434c414d4156;4b45524e454c33322e444c4c\n";

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("cs-db")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("test.hdb"), HDB).unwrap();
        std::fs::write(dir.path().join("test.ndb"), NDB).unwrap();
        std::fs::write(dir.path().join("test.ldb"), LDB).unwrap();
        // Readable by the sandboxed worker, which runs as nobody under root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDb { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_buf(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}
