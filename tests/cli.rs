//! The command line: check-config's exit codes and messages.

use std::process::Command;

fn check(config: &str) -> (i32, String) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&f.path().display().to_string(), "FILE"),
    )
}

#[test]
fn valid_configuration_passes() {
    let (code, text) = check("[limits]\nmax-threads = 2\n");
    assert_eq!(code, 0, "{text}");
    assert_eq!(text, "FILE: configuration OK\n");
}

#[test]
fn shipped_configurations_pass() {
    for f in ["etc/clamsentry.toml", "demo/clamsentry.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
            .args(["check-config", "--config", f])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn errors_name_file_line_and_key() {
    let (code, text) = check("[limits]\nmax-threads = 2\nstream-max-lenght = 10\n");
    assert_eq!(code, 2);
    assert!(
        text.starts_with("clamsentry: FILE: TOML parse error at line 3"),
        "{text}"
    );
    assert!(text.contains("unknown field `stream-max-lenght`"), "{text}");
    let (code, text) = check("[limits]\nmax-queue = 0\n");
    assert_eq!(code, 2);
    assert_eq!(
        text,
        "clamsentry: FILE:2: limits.max-queue: must be at least 1\n"
    );
    let (code, text) = check("[listen]\nunix-mode = \"rw\"\n");
    assert_eq!(code, 2);
    assert!(text.contains("FILE:2: listen.unix-mode"), "{text}");
}

#[test]
fn missing_file_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .args(["check-config", "--config", "/nonexistent/clamsentry.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/clamsentry.toml")
    );
}

#[test]
fn daemon_start_failure_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\ndirectory = {:?}\n[listen]\nunix = {:?}\n[sandbox]\nuser = \"nobody\"\n",
            dir.path().display().to_string(),
            dir.path().join("s").display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No supported database files found"), "{err}");
    assert!(err.contains("(freshclam fills it)"), "{err}");
}

#[test]
fn missing_service_user_says_how_to_create_it() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the service user is only used when started as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[sandbox]\nuser = \"no-such-user-here\"\n[listen]\nunix = \"\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clamsentry"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service user \"no-such-user-here\" does not exist"),
        "{err}"
    );
}
