//! What a test needs from the machine (root, a program, a file, a kernel
//! feature), and the one decision about a test whose need is not met.
//!
//! Outside CI such a test is skipped: it prints `SKIPPED: <test>: ...` to
//! stderr and appends the same line to the skip file
//! (`<target>/tmp/skipped-tests.txt`), because libtest hides what a passing
//! test prints; `scripts/test.sh` and `.ci/run` count those lines. With
//! `CI` or `CLAMSENTRY_REQUIRE_ALL` set (to anything but empty, `0`, `false`
//! or `no`) the test fails instead, saying what is missing and how to get
//! it: nothing may skip in CI.
//!
//! `CLAMSENTRY_PRETEND_MISSING=root,tmux` (requirement names, or `all`)
//! treats those requirements as missing, to see both paths on a machine
//! that has everything; `CLAMSENTRY_SKIP_FILE` names another skip file.
//!
//! ```ignore
//! require_root!("the worker becomes nobody");
//! let tmux = require!(common::require::program("tmux", "tmux"));
//! ```
//!
//! The unit tests under `src/` use this file too (`src/lib.rs`); its own
//! tests are `tests/require.rs`.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to do with a test, given whether its requirement is missing and
/// whether the environment forbids skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip,
    Fail,
}

pub fn decide(missing: bool, strict: bool) -> Decision {
    match (missing, strict) {
        (false, _) => Decision::Run,
        (true, false) => Decision::Skip,
        (true, true) => Decision::Fail,
    }
}

/// The variables that forbid skips.
pub const STRICT_VARS: [&str; 2] = ["CI", "CLAMSENTRY_REQUIRE_ALL"];

/// Whether `var` (an environment lookup) forbids skips: `CI` or
/// `CLAMSENTRY_REQUIRE_ALL` set to a value that does not mean "no".
pub fn strict(var: impl Fn(&str) -> Option<OsString>) -> bool {
    STRICT_VARS.iter().any(|name| {
        var(name).is_some_and(|v| {
            let v = v.to_string_lossy().trim().to_ascii_lowercase();
            !matches!(v.as_str(), "" | "0" | "false" | "no")
        })
    })
}

/// Whether `name` is in `list`, the value of `CLAMSENTRY_PRETEND_MISSING`
/// (names separated by commas; `all` names every requirement).
pub fn pretended(list: &str, name: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|n| n == "all" || n == name)
}

/// A requirement that is not met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// A short name: `root`, a program, a path, a feature.
    pub name: String,
    /// Why the test needs it.
    pub why: String,
    /// How to get it.
    pub how: String,
}

/// `found` if it is `Some` and `name` is not pretended missing.
pub fn need<T>(name: &str, found: Option<T>, why: &str, how: &str) -> Result<T, Missing> {
    let pretend = std::env::var("CLAMSENTRY_PRETEND_MISSING").unwrap_or_default();
    match found {
        Some(v) if !pretended(&pretend, name) => Ok(v),
        _ => Err(Missing {
            name: name.to_string(),
            why: why.to_string(),
            how: how.to_string(),
        }),
    }
}

/// Root (effective uid 0); `why` says what the test does with it.
pub fn root(why: &str) -> Result<(), Missing> {
    need(
        "root",
        nix::unistd::geteuid().is_root().then_some(()),
        why,
        "run the tests as root, as CI does",
    )
}

/// A program, looked up in `PATH` and the usual system directories (the
/// sbin ones and systemd's), from the Debian package `package`.
pub fn program(name: &str, package: &str) -> Result<PathBuf, Missing> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fixed = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/lib/systemd",
        "/lib/systemd",
    ];
    let found = std::env::split_paths(&path)
        .chain(fixed.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p));
    need(
        name,
        found,
        &format!("the test runs {name}"),
        &format!("apt-get install {package} (scripts/install-deps.sh installs it)"),
    )
}

/// A file installed by the Debian package `package`.
pub fn file(path: &str, package: &str) -> Result<PathBuf, Missing> {
    need(
        path,
        Path::new(path).exists().then(|| PathBuf::from(path)),
        "the test reads it",
        &format!("apt-get install {package} (scripts/install-deps.sh installs it)"),
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The running test's name: libtest names each test's thread after it (and
/// so does `tests/sandbox.rs`).
pub fn current_test() -> String {
    let name = std::thread::current().name().unwrap_or("?").to_string();
    format!("{}::{name}", env!("CARGO_CRATE_NAME"))
}

/// The file the skips are counted in.
pub fn skip_file() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAMSENTRY_SKIP_FILE") {
        return p.into();
    }
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        // Unit tests get no CARGO_TARGET_TMPDIR: theirs is cargo's
        // <target>/<profile>/deps/<binary>, so <target>/tmp is three up.
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.ancestors().nth(3).map(|t| t.join("tmp")))
            .unwrap_or_else(std::env::temp_dir),
    };
    dir.join("skipped-tests.txt")
}

/// Applies [`decide`] to `req` for the running test: `Some` to run it,
/// `None` after recording a skip; panics, saying what is missing and how to
/// get it, where skips are forbidden. [`require!`] wraps this.
pub fn check<T>(req: Result<T, Missing>) -> Option<T> {
    let test = current_test();
    let decision = decide(req.is_err(), strict(|k| std::env::var_os(k)));
    match (req, decision) {
        (Ok(v), _) => Some(v),
        (Err(m), Decision::Fail) => panic!(
            "{test} cannot run: it needs {} ({}); {}. It is not skipped because {} is set.",
            m.name,
            m.why,
            m.how,
            STRICT_VARS.join(" or ")
        ),
        (Err(m), _) => {
            let line = format!("SKIPPED: {test}: needs {} ({}); {}", m.name, m.why, m.how);
            eprintln!("{line}");
            record(&line);
            None
        }
    }
}

/// Appends `line` to the skip file, in one write (tests run in parallel).
fn record(line: &str) {
    let path = skip_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record the skip in {}: {e}", path.display());
    }
}

/// Runs the rest of the calling test only if the requirement `$req` (a
/// `Result<T, Missing>`) is met, and evaluates to its `T`; otherwise
/// returns from the test (skipped) or panics (CI), as [`check`] decides.
#[macro_export]
macro_rules! require {
    ($req:expr) => {
        match $crate::common::require::check($req) {
            Some(v) => v,
            None => return,
        }
    };
}

/// `require!` root; `$why` says what the test does with it.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        $crate::require!($crate::common::require::root($why))
    };
}
