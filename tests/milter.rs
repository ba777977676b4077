//! clamav-milter 1.4.6 (Debian's package, unchanged) in front of
//! clamsentry, as on a mail server: clamsentry's Unix socket is mode 0660
//! with `listen.unix-group = "clamav"` (clamd's `LocalSocketGroup`), and the
//! milter runs as user `clamav`. The MTA side is `miltertest` (Debian's
//! package of the same name, from OpenDKIM): a Lua script (written below)
//! speaks the milter protocol to clamav-milter as Postfix or sendmail would
//! (option negotiation, connect, MAIL, RCPT, headers, body, end of message)
//! and prints the milter's replies, which the test checks:
//!
//! * a clean mail is accepted (SMFIR_ACCEPT) with `X-Virus-Status: Clean`;
//! * a mail with an EICAR attachment (built in code, base64 in a MIME part)
//!   is rejected with `550 5.7.1 Virus found: <name>` (SMFIR_REPLYCODE):
//!   the virus name comes from clamsentry's FILDES reply;
//! * the control: the same milter against a clamsentry whose socket keeps
//!   root's group (no `unix-group`, mode 0660) cannot connect (the milter
//!   logs `connect failed: Permission denied`) and defers the mail
//!   (SMFIR_TEMPFAIL, `OnFail Defer`) instead of rejecting it. This is what
//!   `listen.unix-group` fixes. clamav-milter's start-up probe succeeds
//!   even then: it runs before the milter gives up root.
//!
//! Needs root (the milter drops to `clamav`, and the socket is given to
//! group clamav) and the packages clamav-milter and miltertest
//! (scripts/install-deps.sh installs both); skipped without them, a failure
//! under CI (`tests/common/require.rs`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemons::{die_with_parent, Daemon};
use common::{eicar, TestDb};

const MILTER: &str = "/usr/sbin/clamav-milter";

/// The user and group clamav (packages clamav-base/clamav-daemon).
fn clamav() -> (u32, u32) {
    let u = nix::unistd::User::from_name("clamav")
        .unwrap()
        .expect("user clamav (package clamav-base)");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// What both tests need: root (clamav-milter drops to user clamav and the
/// socket is given to group clamav), clamav-milter and miltertest.
fn requirements() -> Result<(), common::require::Missing> {
    common::require::root(
        "clamav-milter drops to user clamav and the socket is given to group clamav",
    )?;
    common::require::file(MILTER, "clamav-milter")?;
    common::require::program("miltertest", "miltertest")?;
    Ok(())
}

/// Standard base64 with padding, as MIME attachments are encoded.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The miltertest script: sends each message given on the command line
/// (`-D NAMES=clean,infected`, `-D <name>=<body file>`) and prints, for
/// each, `<name>: <step> <reply>` for the first reply that is not
/// SMFIR_CONTINUE (the step is `eom` when the milter decided at the end of
/// the message), then the X-Virus-Status header the milter set and whether
/// its SMTP reply was `550 5.7.1 REJECT_TEXT`. clamav-milter negotiates
/// away HELO and EOH, so those steps are sent only if it wants them.
const SCRIPT: &str = r#"
local function ok(conn, name, step, err)
  if err ~= nil then error(name .. " " .. step .. ": " .. err) end
  local r = mt.getreply(conn)
  if r ~= SMFIR_CONTINUE then
    mt.echo(name .. ": " .. step .. " " .. string.char(r))
    return false
  end
  return true
end

local function send(name, body)
  local conn = mt.connect(SOCKET, 40, 0.25)
  if conn == nil then error("cannot connect to " .. SOCKET) end
  local function run()
    if not ok(conn, name, "connect", mt.conninfo(conn, "mx.example.org", "192.0.2.1")) then return end
    if not mt.test_option(conn, SMFIP_NOHELO) then
      if not ok(conn, name, "helo", mt.helo(conn, "mx.example.org")) then return end
    end
    mt.macro(conn, SMFIC_MAIL, "i", name)
    if not ok(conn, name, "mail", mt.mailfrom(conn, "<sender@example.org>")) then return end
    if not ok(conn, name, "rcpt", mt.rcptto(conn, "<rcpt@example.net>")) then return end
    local headers = {
      {"From", "sender@example.org"}, {"To", "rcpt@example.net"}, {"Subject", name},
      {"MIME-Version", "1.0"}, {"Content-Type", "multipart/mixed; boundary=\"BOUNDARY\""},
    }
    for _, h in ipairs(headers) do
      if not ok(conn, name, "header", mt.header(conn, h[1], h[2])) then return end
    end
    if not mt.test_option(conn, SMFIP_NOEOH) then
      if not ok(conn, name, "eoh", mt.eoh(conn)) then return end
    end
    if not ok(conn, name, "body", mt.bodyfile(conn, body)) then return end
    local err = mt.eom(conn)
    if err ~= nil then error(name .. " eom: " .. err) end
    mt.echo(name .. ": eom " .. string.char(mt.getreply(conn)))
    mt.echo(name .. ": X-Virus-Status " .. tostring(mt.getheader(conn, "X-Virus-Status", 0)))
    mt.echo(name .. ": 550 " .. tostring(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1", REJECT_TEXT)))
  end
  run()
  mt.disconnect(conn)
end

for name in string.gmatch(NAMES, "[^,]+") do
  send(name, _G[name])
end
"#;

/// A mail body: a text part and an attachment.
fn mime_body(attachment: &[u8]) -> String {
    format!(
        "--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
         --BOUNDARY\r\nContent-Type: application/octet-stream; name=\"file.com\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"file.com\"\r\n\r\n{}\r\n--BOUNDARY--\r\n",
        base64(attachment)
    )
}

/// A running clamav-milter, killed when dropped (its parent-death signal
/// does not outlive its change to user clamav).
struct Milter {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Milter {
    /// Starts clamav-milter as root with `User clamav` (it gives up root
    /// itself, as Debian's service does), in the foreground, talking to
    /// clamd at `clamd_socket`.
    fn start(clamd_socket: &Path) -> Milter {
        let (uid, gid) = clamav();
        let dir = tempfile::Builder::new()
            .prefix("cs-milter")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(
            dir.path(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        let socket = dir.path().join("milter.sock");
        let conf = dir.path().join("clamav-milter.conf");
        std::fs::write(
            &conf,
            format!(
                "MilterSocket unix:{socket}\n\
                 ClamdSocket unix:{clamd}\n\
                 User clamav\n\
                 Foreground yes\n\
                 OnClean Accept\n\
                 OnInfected Reject\n\
                 OnFail Defer\n\
                 RejectMsg Virus found: %v\n\
                 AddHeader Replace\n\
                 LogFile {log}\n\
                 LogVerbose yes\n\
                 LogInfected Basic\n\
                 ReadTimeout 20\n",
                socket = socket.display(),
                clamd = clamd_socket.display(),
                log = dir.path().join("milter.log").display(),
            ),
        )
        .unwrap();
        let out = std::fs::File::create(dir.path().join("milter.out")).unwrap();
        let child = die_with_parent(&mut Command::new(MILTER))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start clamav-milter");
        let mut m = Milter { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.socket.exists() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("clamav-milter exited ({status}):\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "clamav-milter made no socket:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Its log file and its stdout and stderr.
    fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        read("milter.log") + &read("milter.out")
    }

    /// The real uid of the milter process, from /proc.
    fn uid(&self) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Waits until the milter has dropped to `uid`: it creates its socket
    /// as root and changes user after that.
    fn wait_uid(&self, uid: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.uid() != uid {
            assert!(
                Instant::now() < deadline,
                "clamav-milter still runs as uid {}, not {uid}:\n{}",
                self.uid(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Acts as the MTA: sends `mails` (name, body) with miltertest and
    /// returns its output lines.
    fn deliver(&self, mails: &[(&str, String)], reject_text: &str) -> Vec<String> {
        let script = self.dir.path().join("mta.lua");
        std::fs::write(&script, SCRIPT).unwrap();
        let mut cmd = Command::new("timeout");
        cmd.args(["30", "miltertest", "-s"]).arg(&script);
        cmd.arg("-D")
            .arg(format!("SOCKET=unix:{}", self.socket.display()));
        cmd.arg("-D").arg(format!("REJECT_TEXT={reject_text}"));
        let names: Vec<&str> = mails.iter().map(|(n, _)| *n).collect();
        cmd.arg("-D").arg(format!("NAMES={}", names.join(",")));
        for (name, body) in mails {
            let file = self.dir.path().join(format!("{name}.body"));
            std::fs::write(&file, body).unwrap();
            cmd.arg("-D").arg(format!("{name}={}", file.display()));
        }
        let out = cmd
            .output()
            .expect("miltertest (apt-get install miltertest)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "miltertest failed ({}):\n{stdout}\n{}\nmilter log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout.lines().map(str::to_string).collect()
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets user clamav reach the socket in a daemon's scratch directory
/// (tempfile makes it 0700).
fn open_to_clamav(d: &Daemon) {
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
}

#[test]
fn milter_accepts_clean_mail_and_rejects_eicar_through_clamsentry() {
    require!(requirements());
    let started = Instant::now();
    let (uid, gid) = clamav();
    let db = TestDb::new();
    let d = Daemon::clamsentry(
        db.path(),
        &[
            ("listen", "unix-mode = \"0660\""),
            ("listen", "unix-group = \"clamav\""),
        ],
    );
    open_to_clamav(&d);
    let meta = std::fs::symlink_metadata(&d.unix).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, gid, 0o660)
    );
    let milter = Milter::start(&d.unix);
    milter.wait_uid(uid);
    let name = "Win.Test.EICAR_HDB-1.UNOFFICIAL";
    let lines = milter.deliver(
        &[
            ("clean", mime_body(b"Nothing to see here.\r\n")),
            ("infected", mime_body(&eicar())),
        ],
        &format!("Virus found: {name}"),
    );
    let log = milter.log();
    assert_eq!(
        lines,
        [
            "clean: eom a".to_string(),
            "clean: X-Virus-Status Clean".into(),
            "clean: 550 false".into(),
            "infected: eom y".into(),
            format!("infected: X-Virus-Status Infected ({name})"),
            "infected: 550 true".into(),
        ],
        "milter log:\n{log}"
    );
    assert!(!log.contains("Permission denied"), "{log}");
    // Both scans reached clamsentry from the milter's user, as FILDES.
    let peer = format!("peer=\"unix uid={uid} ");
    let scans_in = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(&peer) && l.contains("command=FILDES"))
            .filter(|l| l.contains("scan clean") || l.contains("virus found"))
            .map(str::to_string)
            .collect()
    };
    let ours = d.log_when("both scans", |log| scans_in(log).len() >= 2);
    let scans = scans_in(&ours);
    assert_eq!(scans.len(), 2, "{ours}");
    assert!(scans[1].contains(&format!("virus_name={name}")), "{ours}");
    println!("milter: {lines:?} in {:?}", started.elapsed());
}

/// The control: the socket keeps root's group, mode 0660, so user clamav
/// may not connect. The milter's start-up probe (still root) succeeds, but
/// every scan fails with EACCES and the mail is deferred, not rejected.
#[test]
fn without_the_socket_group_the_milter_cannot_connect() {
    require!(requirements());
    let started = Instant::now();
    let db = TestDb::new();
    let d = Daemon::clamsentry(db.path(), &[("listen", "unix-mode = \"0660\"")]);
    open_to_clamav(&d);
    let meta = std::fs::symlink_metadata(&d.unix).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o660));
    let milter = Milter::start(&d.unix);
    milter.wait_uid(clamav().0);
    let lines = milter.deliver(
        &[("infected", mime_body(&eicar()))],
        "Virus found: Win.Test.EICAR_HDB-1.UNOFFICIAL",
    );
    let log = milter.log();
    assert_eq!(lines.len(), 1, "{lines:?}\n{log}");
    assert!(
        lines[0].starts_with("infected: ") && lines[0].ends_with(" t"),
        "not deferred (SMFIR_TEMPFAIL): {lines:?}\n{log}"
    );
    assert!(
        log.contains("connect failed: Permission denied"),
        "milter log:\n{log}"
    );
    assert!(!d.log().contains("FILDES"), "{}", d.log());
    println!("milter control: {lines:?} in {:?}", started.elapsed());
}
