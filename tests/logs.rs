//! Hostile bytes in the log: SCAN paths with newlines, ESC, bytes that are
//! not UTF-8 and bidi controls, against the real daemon logging to stderr.
//! Every line that mentions such a path shows it escaped, and no line
//! starts with text the client wrote (the journald side, with the exact
//! bytes, is in tests/systemd.rs).

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::client::{show, talk};
use common::daemons::Daemon;

const T: Duration = Duration::from_secs(20);

/// The path's last component: a forged FOUND line, then a forged line that
/// clears the terminal line, flips the text (U+202E) and ends with 0xff.
const EVIL: &[u8] =
    b"evil\nFAKE: stream: Win.Test.EICAR_HDB-1 FOUND\n\x1b[2K\xe2\x80\xaestopped\xff";
/// The same, escaped as the log must show it (written out by hand rather
/// than computed with `clamsentry::log::escape`).
const EVIL_ESCAPED: &str =
    "evil\\x0aFAKE: stream: Win.Test.EICAR_HDB-1 FOUND\\x0a\\x1b[2K\\xe2\\x80\\xaestopped\\xff";

/// The daemon's stderr as raw bytes (`Daemon::log` reads it as UTF-8).
fn raw_log(d: &Daemon) -> Vec<u8> {
    std::fs::read(d.dir.path().join("daemon.log")).unwrap_or_default()
}

fn eventually(what: &str, d: &Daemon, mut pred: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pred(&String::from_utf8_lossy(&raw_log(d))) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {what}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_bytes_in_scan_paths_cannot_forge_log_lines() {
    let db = common::TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("log", "target = \"stderr\"")]);

    let dir = tempfile::Builder::new()
        .prefix("cs-logs")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let infected = dir.path().join(std::ffi::OsStr::from_bytes(EVIL));
    std::fs::write(&infected, common::eicar()).unwrap();
    std::fs::set_permissions(&infected, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir_text = dir.path().to_str().unwrap().to_string();

    // zSCAN: the path is every byte up to the NUL, newlines included.
    let path = [dir_text.as_bytes(), b"/", EVIL].concat();
    let got = talk(
        &d.unix_addr(),
        &[&[b"zSCAN ", &path[..], b"\0"].concat()],
        T,
    )
    .unwrap();
    let want = [&path[..], b": Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"].concat();
    assert_eq!(got, want, "{}", show(&got));

    // A missing file with the same name elsewhere: "file path check failure".
    let missing = [dir_text.as_bytes(), b"/missing/", EVIL].concat();
    let got = talk(
        &d.unix_addr(),
        &[&[b"zSCAN ", &missing[..], b"\0"].concat()],
        T,
    )
    .unwrap();
    assert!(got.ends_with(b"ERROR\0"), "{}", show(&got));

    // nSCAN: the newline ends the command, but ESC, BEL and 0xff go through.
    let got = talk(
        &d.unix_addr(),
        &[b"nSCAN /nonexistent/\x1b]0;pwned\x07\xff\n"],
        T,
    )
    .unwrap();
    assert!(got.ends_with(b"ERROR\n"), "{}", show(&got));

    let infected_escaped = format!("{dir_text}/{EVIL_ESCAPED}");
    let missing_escaped = format!("{dir_text}/missing/{EVIL_ESCAPED}");
    eventually("the three scans in the log", &d, |log| {
        log.contains("virus found")
            && log.contains(&missing_escaped)
            && log.contains("/nonexistent/\\x1b]0;pwned\\x07\\xff")
    });

    let raw = raw_log(&d);
    let log = String::from_utf8(raw.clone()).expect("the log is UTF-8");
    assert!(
        !raw.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "the log holds a raw control byte:\n{log}"
    );
    assert!(
        !log.contains('\u{202e}'),
        "the log holds a raw U+202E:\n{log}"
    );
    let mut mentions = 0;
    for line in log.lines() {
        // Every line is one of ours: it starts with the timestamp.
        assert!(
            line.len() > 20 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit),
            "a line that is not the daemon's: {line:?}"
        );
        assert!(
            !line.starts_with("FAKE") && !line.contains("\u{1b}") && !line.starts_with("stopped"),
            "{line:?}"
        );
        if line.contains("FAKE: stream") {
            mentions += 1;
            assert!(
                line.contains(&infected_escaped) || line.contains(&missing_escaped),
                "a line mentions the path without showing it escaped: {line:?}"
            );
        }
    }
    let found = log
        .lines()
        .find(|l| l.contains("virus found"))
        .expect("a FOUND line");
    assert!(
        found.contains(&format!("scan_target=\"{infected_escaped}\"")),
        "{found}"
    );
    assert!(
        found.contains("virus_name=Win.Test.EICAR_HDB-1.UNOFFICIAL"),
        "{found}"
    );
    let failure = log
        .lines()
        .find(|l| l.contains("file path check failure") && l.contains("FAKE"))
        .expect("a path check failure line");
    assert!(
        failure.contains(&format!("path=\"{missing_escaped}\"")),
        "{failure}"
    );
    assert!(mentions >= 2, "{log}");
}
