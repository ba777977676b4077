//! The Debian package end to end: `packaging/test/e2e.sh` builds it with
//! `cargo deb`, runs lintian, and boots a cached Debian 12 root with
//! systemd as PID 1 (systemd-nspawn) in which it installs the package with
//! apt and checks it as an administrator would (docs/packaging.md).
//!
//! It needs root, cargo-deb, debootstrap, systemd-container and lintian
//! (`scripts/install-deps.sh`). Without them it is skipped with a message,
//! except under CI, where that is a failure (`tests/common/require.rs`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The script's own exit code for "cannot run here".
const SKIP: i32 = 77;

#[test]
fn deb_installs_and_works_under_systemd() {
    require_root!("it boots a container with systemd-nspawn");
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("lintian", "lintian"),
    ] {
        require!(common::require::program(program, package));
    }
    let mut child = Command::new("bash")
        .arg(repo().join("packaging/test/e2e.sh"))
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run packaging/test/e2e.sh");
    // Forward each line as it comes, past the test harness's capture: the
    // check lines are the useful part of a CI log, pass or fail.
    let mut counts = None;
    let mut missing = None;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read e2e output");
        let _ = writeln!(std::io::stderr(), "e2e: {line}");
        if let Some((p, f)) = parse_counts(&line) {
            counts = Some((p, f));
        }
        if let Some(what) = line.strip_prefix("e2e: missing:") {
            missing = Some(what.trim().to_string());
        }
    }
    let status = child.wait().expect("wait for e2e.sh");
    // What the script checks beyond the above (cargo-deb).
    require!(common::require::need(
        "the package test's tools",
        (status.code() != Some(SKIP)).then_some(()),
        &format!(
            "e2e.sh says it lacks: {}",
            missing.as_deref().unwrap_or("(it did not say)")
        ),
        "run scripts/install-deps.sh as root, then the tests as root",
    ));
    let (passed, failed) = counts.expect("e2e.sh printed no `N passed, M failed` line");
    assert_eq!(failed, 0, "{failed} e2e checks failed ({passed} passed)");
    assert!(passed >= 30, "only {passed} e2e checks ran");
    assert!(status.success(), "e2e.sh exited with {status}");
}

fn parse_counts(line: &str) -> Option<(u32, u32)> {
    let (p, rest) = line.split_once(" passed, ")?;
    let f = rest.strip_suffix(" failed")?;
    Some((p.parse().ok()?, f.parse().ok()?))
}

/// The man pages in the package are generated from `clamsentry --help` and
/// etc/clamsentry.toml; a change to either must come with regenerated pages.
#[test]
fn man_pages_match_the_code() {
    let out = Command::new("bash")
        .arg(repo().join("packaging/man/generate.sh"))
        .arg("--check")
        .arg(env!("CARGO_BIN_EXE_clamsentry"))
        .output()
        .expect("run packaging/man/generate.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn maintainer_scripts_are_valid_sh() {
    for script in ["postinst", "prerm", "postrm"] {
        let path = repo().join("packaging/debian").join(script);
        let out = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("run sh -n");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).expect("read script");
        assert!(text.starts_with("#!/bin/sh\n"), "{script}: not #!/bin/sh");
        assert!(text.contains("\nset -e\n"), "{script}: no set -e");
    }
}

#[test]
fn counts_line_is_parsed() {
    assert_eq!(parse_counts("35 passed, 0 failed"), Some((35, 0)));
    assert_eq!(parse_counts("ok   something passed, 2 failed"), None);
}
