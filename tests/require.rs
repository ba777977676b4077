//! The requirement helper of the tests (`tests/common/require.rs`): its
//! decision, and both of its paths through a real test binary (this one,
//! re-executed with a requirement pretended missing).

mod common;

use std::ffi::OsString;
use std::process::Command;

use common::require::{decide, pretended, strict, Decision};

#[test]
fn a_missing_requirement_skips_outside_ci_and_fails_in_it() {
    assert_eq!(decide(false, false), Decision::Run);
    assert_eq!(decide(false, true), Decision::Run);
    assert_eq!(decide(true, false), Decision::Skip);
    assert_eq!(decide(true, true), Decision::Fail);
}

/// An environment of `pairs`.
fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn ci_or_require_all_forbid_skips_unless_they_say_no() {
    assert!(!strict(env(&[])));
    assert!(strict(env(&[("CI", "1")])));
    assert!(strict(env(&[("CI", "true")])));
    assert!(strict(env(&[("CLAMSENTRY_REQUIRE_ALL", "1")])));
    assert!(strict(env(&[
        ("CI", "0"),
        ("CLAMSENTRY_REQUIRE_ALL", "yes")
    ])));
    for no in ["", "0", "false", "FALSE", "no"] {
        assert!(!strict(env(&[("CI", no)])), "CI={no:?}");
    }
    assert!(!strict(env(&[("OTHER", "1")])));
}

#[test]
fn pretend_missing_lists_names_or_all() {
    assert!(pretended("root", "root"));
    assert!(pretended("tmux, root", "root"));
    assert!(pretended("all", "systemd-analyze"));
    assert!(!pretended("", "root"));
    assert!(!pretended("rootless", "root"));
}

/// What [`both_paths_through_a_real_test_binary`] runs: a test that needs
/// root and tmux (this machine has both under CI).
#[test]
#[ignore = "run by both_paths_through_a_real_test_binary"]
fn needs_root_and_tmux() {
    require_root!("the demonstration asks for it");
    require!(common::require::program("tmux", "tmux"));
    println!("RAN");
}

/// Runs [`needs_root_and_tmux`] in this binary with root pretended missing:
/// without CI it passes, says SKIPPED and writes one line to the skip file;
/// with CI=1 or CLAMSENTRY_REQUIRE_ALL=1 it fails, saying what is missing
/// and how to get it.
#[test]
fn both_paths_through_a_real_test_binary() {
    let dir = tempfile::tempdir().unwrap();
    let skips = dir.path().join("skips.txt");
    let run = |strict: &[(&str, &str)]| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--ignored", "--exact", "needs_root_and_tmux", "--nocapture"])
            .env("CLAMSENTRY_PRETEND_MISSING", "root")
            .env("CLAMSENTRY_SKIP_FILE", &skips);
        for v in common::require::STRICT_VARS {
            c.env_remove(v);
        }
        for (k, v) in strict {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    let (ok, text) = run(&[]);
    assert!(ok, "{text}");
    assert!(!text.contains("RAN"), "{text}");
    let line = "SKIPPED: require::needs_root_and_tmux: needs root (the demonstration asks for it); run the tests as root, as CI does";
    assert!(text.contains(line), "{text}");
    assert_eq!(
        std::fs::read_to_string(&skips).unwrap(),
        format!("{line}\n")
    );

    for strict in [[("CI", "1")], [("CLAMSENTRY_REQUIRE_ALL", "1")]] {
        let (ok, text) = run(&strict);
        assert!(!ok, "{text}");
        assert!(
            text.contains("require::needs_root_and_tmux cannot run: it needs root (the demonstration asks for it); run the tests as root, as CI does. It is not skipped because CI or CLAMSENTRY_REQUIRE_ALL is set."),
            "{text}"
        );
        assert!(!text.contains("RAN"), "{text}");
    }
    // Failures are not skips.
    assert_eq!(std::fs::read_to_string(&skips).unwrap().lines().count(), 1);
}
