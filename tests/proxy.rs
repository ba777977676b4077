//! PROXY protocol v2 (`listen.tcp-proxy`, `listen.proxy-from`): the client
//! behind a load balancer is who policy, shares and logs see; nobody but
//! the balancer may say so; and the real HAProxy 2.6 (`send-proxy-v2`, the
//! shipped `packaging/haproxy/clamsentry.cfg`) is understood.
//!
//! The "balancer" of the first tests is this test, connecting from
//! 127.0.0.2 and writing headers with clamsentry's own encoder (checked
//! against HAProxy's bytes in the last test); clients behind it are
//! addresses in 198.51.100.0/24 and 203.0.113.0/24 that never connect
//! themselves.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clamsentry::proto::proxy::{self, Addresses, Command as ProxyCommand, Decoded, Transport};
use common::client::{connect_from, instream, show};
use common::daemons::{free_port, Daemon};
use common::{eicar, TestDb};

const BALANCER: &str = "127.0.0.2";
const T: Duration = Duration::from_secs(10);

/// A node with a PROXY port trusting 127.0.0.2, whose clients may be in
/// 192.0.2.0/24 and 198.51.100.0/24 (and loopback, for the plain port the harness pings).
fn node(db: &Path, extra: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    let port = free_port();
    let proxied: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tcp_proxy = format!("tcp-proxy = [\"{proxied}\"]");
    let mut settings = vec![
        ("listen", tcp_proxy.as_str()),
        ("listen", "proxy-from = [\"127.0.0.2/32\"]"),
        (
            "listen",
            "tcp-allow = [\"127.0.0.0/8\", \"192.0.2.0/24\", \"198.51.100.0/24\"]",
        ),
        ("listen", "proxy-timeout = 1"),
    ];
    settings.extend_from_slice(extra);
    (Daemon::clamsentry(db, &settings), proxied)
}

fn header_for(client: &str, to: SocketAddr) -> Vec<u8> {
    let a = Addresses::Inet {
        transport: Transport::Stream,
        source: client.parse().unwrap(),
        destination: to,
    };
    proxy::encode(ProxyCommand::Proxy, &a, &[]).unwrap()
}

/// A connection from the balancer carrying `client`'s header.
fn via_balancer(to: SocketAddr, client: &str) -> TcpStream {
    let mut s = connect_from(BALANCER.parse().unwrap(), to).unwrap();
    s.write_all(&header_for(client, to)).unwrap();
    s
}

/// Everything until the daemon closes, or `<TIMEOUT>`.
fn read_all(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                out.extend_from_slice(b"<TIMEOUT>");
                return out;
            }
            Err(_) => return out,
        }
    }
}

/// Waits until the daemon's log has a line containing every one of `words`.
fn wait_log(d: &Daemon, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = d.log();
        if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_balancer_names_the_client_and_policy_follows_it() {
    let db = TestDb::new();
    let (d, proxied) = node(db.path(), &[("limits", "max-connections-per-client = 2")]);
    // A scan for a client behind the balancer.
    let mut s = via_balancer(proxied, "192.0.2.7:40000");
    s.write_all(&instream(b"zINSTREAM\0", &eicar(), 64))
        .unwrap();
    assert_eq!(
        show(&read_all(&mut s, T)),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    wait_log(&d, &["PROXY header read", "client=192.0.2.7:40000"]);

    // Its per-client cap counts its own address prefix, not the balancer's:
    // two sessions from 198.51.100.0/24 fill its share, a third is refused,
    // while another client behind the same balancer is served.
    let mut held = Vec::new();
    for port in [40001, 40002] {
        let mut s = via_balancer(proxied, &format!("198.51.100.8:{port}"));
        s.write_all(b"zIDSESSION\0zPING\0").unwrap();
        let mut pong = [0u8; 8];
        s.set_read_timeout(Some(T)).unwrap();
        s.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"1: PONG\0");
        held.push(s);
    }
    let mut third = via_balancer(proxied, "198.51.100.9:40003");
    let _ = third.write_all(b"zPING\0");
    // Refused, or (if the supervisor has not yet heard that one of the two
    // sent its command) one of the same client's sessions is closed to
    // make room: either way the cap is the client's, not the balancer's.
    let line = if show(&read_all(&mut third, T)).is_empty() {
        wait_log(&d, &["connection refused", "peer=198.51.100.9:40003"])
    } else {
        wait_log(&d, &["to make room", "peer=198.51.100.8:"])
    };
    assert!(
        line.contains("client=198.51.100.0/24")
            && (line.contains("limits.max-connections-per-client")
                || line.contains("to make room")),
        "{line}"
    );
    // Another client behind the same balancer still gets in.
    let mut other = via_balancer(proxied, "127.0.0.77:1");
    other.write_all(b"zPING\0").unwrap();
    assert_eq!(show(&read_all(&mut other, T)), "PONG\\0");
    drop(held);

    // A client outside listen.tcp-allow is refused by its own address.
    let mut out = via_balancer(proxied, "203.0.113.5:40000");
    let _ = out.write_all(b"zPING\0");
    assert_eq!(show(&read_all(&mut out, T)), "");
    let line = wait_log(
        &d,
        &[
            "connection refused",
            "203.0.113.5:40000, is not in listen.tcp-allow",
        ],
    );
    assert!(line.contains("client=203.0.113.0/24"), "{line}");

    // LOCAL: the balancer's own health check, served as the balancer.
    let mut check = connect_from(BALANCER.parse().unwrap(), proxied).unwrap();
    let local = proxy::encode(ProxyCommand::Local, &Addresses::Unspec, &[]).unwrap();
    check.write_all(&local).unwrap();
    check.write_all(b"zPING\0").unwrap();
    assert_eq!(show(&read_all(&mut check, T)), "PONG\\0");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn a_proxy_port_serves_only_its_balancers_with_whole_headers() {
    let db = TestDb::new();
    let (d, proxied) = node(db.path(), &[]);
    // A direct connection claiming to be someone else: closed unread.
    let mut fake = connect_from("127.0.0.3".parse().unwrap(), proxied).unwrap();
    let _ = fake.write_all(&header_for("198.51.100.7:1", proxied));
    let _ = fake.write_all(b"zPING\0");
    assert_eq!(show(&read_all(&mut fake, T)), "");
    let line = wait_log(&d, &["connection refused", "peer=127.0.0.3"]);
    assert!(line.contains("not in listen.proxy-from"), "{line}");

    // The balancer without a header, with version 1, with a broken TLV,
    // and one that stalls: each closed with its reason.
    let cases: [(&[u8], &str); 3] = [
        (b"zPING\0", "no PROXY protocol v2 signature"),
        (
            b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\nzPING\0",
            "PROXY protocol v1",
        ),
        (
            &[
                b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0f".as_slice(),
                &[198, 51, 100, 7, 127, 0, 0, 1, 0, 1, 0, 2, 5, 0, 9],
            ]
            .concat(),
            "TLV at byte 28",
        ),
    ];
    for (bytes, why) in cases {
        let mut s = connect_from(BALANCER.parse().unwrap(), proxied).unwrap();
        s.write_all(bytes).unwrap();
        assert_eq!(show(&read_all(&mut s, T)), "", "{why}");
        wait_log(&d, &["connection refused", why]);
    }
    let mut stalled = connect_from(BALANCER.parse().unwrap(), proxied).unwrap();
    stalled.write_all(&proxy::SIGNATURE[..7]).unwrap();
    // Closed once listen.proxy-timeout (1 s) has passed, without a reply.
    assert_eq!(show(&read_all(&mut stalled, Duration::from_secs(60))), "");
    wait_log(&d, &["connection refused", "within listen.proxy-timeout"]);
    // The balancer is still served afterwards.
    let mut s = via_balancer(proxied, "198.51.100.7:2");
    s.write_all(b"zPING\0").unwrap();
    assert_eq!(show(&read_all(&mut s, T)), "PONG\\0");
}

#[test]
fn a_plain_port_takes_a_proxy_header_as_client_bytes() {
    let db = TestDb::new();
    let (d, _) = node(db.path(), &[]);
    // From the balancer's own address too: a plain port never reads PROXY.
    let mut s = connect_from(BALANCER.parse().unwrap(), d.tcp).unwrap();
    let mut bytes = header_for("198.51.100.7:1", d.tcp);
    bytes.extend_from_slice(b"zPING\0");
    s.write_all(&bytes).unwrap();
    let reply = show(&read_all(&mut s, T));
    assert!(reply.starts_with("UNKNOWN COMMAND"), "{reply}");
}

/// HAProxy 2.6 configured from the shipped file: its server lines point at
/// the node's PROXY port (HAProxy's connections leave from 127.0.0.2),
/// its frontend listens on `front`.
fn haproxy_config(
    front: SocketAddr,
    servers: &[SocketAddr],
    agent: Option<u16>,
    stats: &Path,
) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/haproxy/clamsentry.cfg"
    ))
    .unwrap();
    let mut out = String::new();
    for line in shipped.lines() {
        let t = line.trim_start();
        if t.starts_with("log /dev/log") || t.starts_with("user ") || t.starts_with("group ") {
            continue;
        }
        if t.starts_with("stats socket ") {
            out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                stats.display()
            ));
        } else if t.starts_with("bind :3310") {
            out.push_str(&format!("    bind {front}\n"));
        } else if t.starts_with("server n1 ") {
            for (i, s) in servers.iter().enumerate() {
                out.push_str(&format!("    server n{} {s} source {BALANCER}\n", i + 1));
            }
        } else if t.starts_with("server ") {
            continue;
        } else if t.starts_with("default-server ") && agent.is_none() {
            // No agent in this test: the PING check decides alone.
            let kept: Vec<&str> = t.split_whitespace().collect();
            let mut words = Vec::new();
            let mut skip = 0;
            for w in kept {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                match w {
                    "agent-check" => {}
                    "agent-port" | "agent-inter" => skip = 1,
                    w => words.push(w),
                }
            }
            out.push_str(&format!("    {}\n", words.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

struct HaProxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_haproxy(config: &str, dir: tempfile::TempDir) -> HaProxy {
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{config}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
    let child =
        common::daemons::die_with_parent(Command::new("haproxy").arg("-db").arg("-f").arg(&path))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
    HaProxy { child, _dir: dir }
}

#[test]
fn the_shipped_haproxy_configuration_is_valid() {
    let haproxy = require!(common::require::program("haproxy", "haproxy"));
    let out = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/haproxy/clamsentry.cfg"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real HAProxy in front of a node: its health check (LOCAL header,
/// then clamd's PING) passes, and a client's scan through it reaches the
/// node as the client: the log and VirusEvent's file name carry the
/// client's address, not the balancer's. HAProxy's header bytes, captured
/// by a listener of the test's, decode to what the encoder writes.
#[test]
fn haproxy_send_proxy_v2_reaches_the_node_as_the_client() {
    require!(common::require::program("haproxy", "haproxy"));
    require_root!("the VirusEvent command runs as its own user");
    // The default virus-event.user, created for the test if missing.
    let _event_user = common::users::EventUser::ensure();
    let db = TestDb::new();
    let events = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(events.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let command = format!(
        "command = \"printf '%s\\\\n' \\\"$CLAM_VIRUSEVENT_FILENAME\\\" >> {}/events\"",
        events.path().display()
    );
    let (d, proxied) = node(db.path(), &[("virus-event", &command)]);
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.sock");
    let _h = start_haproxy(&haproxy_config(front, &[proxied], None, &stats), dir);
    // The health check passes: HAProxy says the server is UP.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = haproxy_states(&stats);
        if state.get("n1").map(String::as_str) == Some("UP") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never UP: {state:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let client: IpAddr = "127.0.0.9".parse().unwrap();
    let mut s = connect_from(client, front).unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(&instream(b"zINSTREAM\0", &eicar(), 1024))
        .unwrap();
    assert_eq!(
        show(&read_all(&mut s, T)),
        "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\\0"
    );
    wait_log(
        &d,
        &["PROXY header read", &format!("client=127.0.0.9:{port}")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("instream(127.0.0.9@{port})");
    loop {
        let got = std::fs::read_to_string(events.path().join("events")).unwrap_or_default();
        if got.lines().any(|l| l == want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VirusEvent got {got:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // HAProxy's own bytes, to a listener of the test's.
    let capture = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = capture.local_addr().unwrap();
    let front2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats2 = dir.path().join("stats.sock");
    let _h2 = start_haproxy(&haproxy_config(front2, &[target], None, &stats2), dir);
    capture.set_nonblocking(false).unwrap();
    let mut local_seen = false;
    let mut proxy_seen = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let client_thread = std::thread::spawn(move || {
        // Once HAProxy sees the capture listener UP (it answers PONG).
        for _ in 0..600 {
            if let Ok(mut c) = connect_from("127.0.0.9".parse().unwrap(), front2) {
                let _ = c.write_all(b"zPING\0");
                let mut buf = [0u8; 5];
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                if c.read_exact(&mut buf).is_ok() && &buf == b"PONG\0" {
                    return c.local_addr().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no PONG through HAProxy");
    });
    let mut seen_client = None;
    while !(local_seen && proxy_seen) {
        assert!(
            Instant::now() < deadline,
            "local {local_seen} proxy {proxy_seen}"
        );
        let (mut c, from) = capture.accept().unwrap();
        assert_eq!(from.ip().to_string(), BALANCER);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"zPING\0") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let Decoded::Done { header, consumed } = proxy::decode(&got) else {
            panic!("HAProxy sent {got:?}")
        };
        assert_eq!(&got[consumed..], b"zPING\0");
        match header.command {
            ProxyCommand::Local => local_seen = true,
            ProxyCommand::Proxy => {
                proxy_seen = true;
                seen_client = header.tcp_source();
                // Byte for byte what the encoder writes for this header.
                assert_eq!(
                    proxy::encode(ProxyCommand::Proxy, &header.addresses, &[]).unwrap(),
                    got[..consumed]
                );
            }
        }
        let _ = c.write_all(b"PONG\0");
    }
    let client = client_thread.join().unwrap();
    assert_eq!(seen_client, Some(client));
}

/// Server name → operational state word (`UP`, `DOWN`, …) from HAProxy's
/// stats socket (`show stat`).
fn haproxy_states(stats: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(stats) else {
        return out;
    };
    let _ = s.write_all(b"show stat\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() > 17 && f[1] != "FRONTEND" && f[1] != "BACKEND" && !line.starts_with('#') {
            out.insert(f[1].to_string(), f[17].to_string());
        }
    }
    out
}
