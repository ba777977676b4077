//! A fleet behind HAProxy, proven in network namespaces (issue 20, "How it
//! is proven"): namespaces `lb`, `n1`, `n2`, `n3` and a client namespace,
//! joined by a bridge in a sixth namespace of their own (nothing is added
//! to the machine's own network); one clamsentry per node, all reading one
//! root-owned read-only signature directory; Debian 12's HAProxy 2.6 in
//! `lb`, configured from `packaging/haproxy/clamsentry.cfg`; real clients
//! (python `clamd`, `clamdscan --stream`, pooled IDSESSION sessions) in the
//! client namespace. Every reply is checked; every loop is bounded in count
//! and time; assertions are about orderings and counts, never durations.
//! The namespaces, processes and cgroups are removed when the test ends,
//! also when it fails ([`Fleet`]'s `Drop`).
//!
//! Each node runs as systemd runs it: its listening sockets are held by a
//! stand-in for the socket unit (`common::holder`), so a node that stops or
//! restarts leaves new connections waiting in its queue, not refused.
//!
//! HAProxy's agent-check talks to each node's own agent (the observer
//! process, `[agent] listen`): `maint` after MAINT ON, `drain` while the
//! node stops or waits for memory headroom. One answer is a stand-in, said
//! where it is used: a database older than `database.max-age` needs a
//! signed `daily.cvd` (libclamav refuses a hand-made container header, so a
//! test cannot make one), so for that scenario HAProxy is pointed at
//! `tests/fleet/agent.py`, which answers the observer's words for it.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cgroup::Cgroup;
use common::daemons::{children, die_with_parent, write_config};
use common::holder::Holder;

const BIN: &str = env!("CARGO_BIN_EXE_clamsentry");
const FLEET_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fleet");
const NET: &str = "10.77.0";
const LB: &str = "10.77.0.10";
const PORT: u16 = 3310;
const AGENT_PORT: u16 = 9907;
/// Where the stand-in agent answers (`tests/fleet/agent.py`).
const STAND_IN_AGENT_PORT: u16 = 9917;
/// Load clients' addresses (one per thread: a client each for the
/// per-client shares), in listen.tcp-allow (10.77.0.96/27).
const LOAD_SOURCES: &str =
    "10.77.0.100,10.77.0.101,10.77.0.102,10.77.0.103,10.77.0.104,10.77.0.105";
/// A client that opens too many sessions.
const GREEDY: &str = "10.77.0.120";
/// A client outside listen.tcp-allow.
const OUTSIDER: &str = "10.77.0.200";
/// Sessions one client may hold on one node.
const CAP: usize = 4;
/// The client's own timeout in the hung-node scenario, seconds.
const CLIENT_TIMEOUT: u64 = 10;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits for `pred`, at most `within`; panics with `what` (and `more()`).
fn eventually(
    what: &str,
    within: Duration,
    more: impl Fn() -> String,
    mut pred: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !pred() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {what}\n{}",
            more()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A listening TCP socket made inside network namespace `ns` (a thread
/// joins it, binds, and ends; the socket stays in that namespace).
fn bind_in_netns(ns: &str, addr: SocketAddr) -> OwnedFd {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a descriptor it owns; the
        // thread ends right after, so no other code runs in that namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        OwnedFd::from(std::net::TcpListener::bind(addr).unwrap())
    })
    .join()
    .unwrap()
}

struct Node {
    name: String,
    ns: String,
    unix: PathBuf,
    config: PathBuf,
    log: PathBuf,
    holder: Holder,
    cgroup: Cgroup,
    daemon: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let prelude = format!("echo $$ > {}/cgroup.procs &&", self.cgroup.dir.display());
        // nsenter joins the node's network namespace only (`ip netns exec`
        // would also remount /sys, hiding the cgroup files the memory
        // check reads).
        let net = format!("--net=/run/netns/{}", self.ns);
        let mut cmd = self.holder.command_in(
            &prelude,
            &["nsenter", &net, "--"],
            Path::new(BIN),
            &["--config", &self.config.display().to_string()],
        );
        let child = die_with_parent(&mut cmd)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.daemon.as_ref().expect("running").id() as i32
    }

    /// The supervisor and every process below it.
    fn tree(&self) -> Vec<i32> {
        let mut out = vec![self.pid()];
        let mut i = 0;
        while i < out.len() {
            out.extend(children(out[i]));
            i += 1;
        }
        out
    }

    fn signal_all(&self, sig: nix::sys::signal::Signal) {
        for p in self.tree() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
        }
    }

    /// PING on its Unix socket answers.
    fn answers(&self) -> bool {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.unix) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"zPING\0").is_err() {
            return false;
        }
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).is_ok() && &buf == b"PONG\0"
    }

    /// Sends `req` on the Unix socket (as root, an administrator).
    fn ask(&self, req: &[u8]) -> Vec<u8> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.unix).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.daemon.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.daemon = None;
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, what: &str) -> usize {
        self.log().matches(what).count()
    }
}

/// One HAProxy server as its stats socket shows it.
#[derive(Debug, Clone, Default)]
struct Server {
    status: String,
    weight: u32,
    current: u64,
    total: u64,
    /// The last agent check (`L7OK` when the agent answered).
    agent: String,
}

/// A load run in the client namespace (`tests/fleet/load.py`).
struct Load {
    child: Child,
    out: PathBuf,
    stop: PathBuf,
}

#[derive(Debug, Clone)]
struct Scan {
    t0: f64,
    t1: f64,
    ok: bool,
    reply: String,
    client: String,
    reconnects: u64,
}

impl Load {
    /// Asks it to stop and waits for it.
    fn finish(self) -> Vec<Scan> {
        std::fs::write(&self.stop, "").unwrap();
        self.complete()
    }

    /// Waits until it has done its --count (bounded: it stops by itself
    /// after its --max-seconds).
    fn complete(mut self) -> Vec<Scan> {
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "load.py failed ({status}): {}",
            std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
        );
        self.results()
    }

    fn results(&self) -> Vec<Scan> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| Scan {
                t0: v["t0"].as_f64().unwrap(),
                t1: v["t1"].as_f64().unwrap(),
                ok: v["ok"].as_bool().unwrap(),
                reply: v["reply"].as_str().unwrap_or_default().to_string(),
                client: v["client"].as_str().unwrap_or_default().to_string(),
                reconnects: v["reconnects"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    fn done(&self) -> usize {
        self.results().len()
    }
}

impl Drop for Load {
    /// A load left running by a failed assertion ends with the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn failures(scans: &[Scan]) -> Vec<&Scan> {
    scans.iter().filter(|s| !s.ok).collect()
}

/// The failed scans, for an assertion message (at most 10).
fn failed(scans: &[Scan]) -> String {
    let f = failures(scans);
    let mut out = format!("{} failed of {}:", f.len(), scans.len());
    for s in f.iter().take(10) {
        out.push_str(&format!(
            "\n  {} at {:.3} for {:.3} s: {}",
            s.client,
            s.t0,
            s.t1 - s.t0,
            s.reply
        ));
    }
    out
}

struct Fleet {
    prefix: String,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    haproxy: Option<Child>,
    agents: Vec<Child>,
    stats: PathBuf,
    loads: usize,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.daemon.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for c in self.agents.iter_mut().chain(self.haproxy.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Workers and engine holders end with their supervisor; the
        // namespaces go once nothing runs in them.
        for ns in &self.namespaces {
            for _ in 0..50 {
                if Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Fleet {
    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Servers n1..n3 from HAProxy's stats socket (`show stat`).
    fn servers(&self) -> BTreeMap<String, Server> {
        let mut out = BTreeMap::new();
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.stats) else {
            return out;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"show stat\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let mut lines = text.lines();
        // "# pxname,svname,…": the columns by name.
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(status), Some(weight), Some(scur), Some(stot), Some(agent)) = (
            col("status"),
            col("weight"),
            col("scur"),
            col("stot"),
            col("agent_status"),
        ) else {
            return out;
        };
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() > agent && f[0] == "clamsentry" && f[1].starts_with('n') {
                out.insert(
                    f[1].to_string(),
                    Server {
                        status: f[status].to_string(),
                        weight: f[weight].parse().unwrap_or(0),
                        current: f[scur].parse().unwrap_or(0),
                        total: f[stot].parse().unwrap_or(0),
                        agent: f[agent].to_string(),
                    },
                );
            }
        }
        out
    }

    /// Waits until HAProxy sends `name` nothing new: drained, down or in
    /// maintenance.
    fn wait_out_of_rotation(&self, name: &str, within: Duration) {
        eventually(
            &format!("{name} out of rotation"),
            within,
            || format!("{:?}", self.servers()),
            || {
                let s = self.server(name);
                !s.status.starts_with("UP") || s.weight == 0
            },
        );
    }

    /// One command on HAProxy's stats socket (its runtime API).
    fn haproxy_command(&self, cmd: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.stats).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn server(&self, name: &str) -> Server {
        self.servers().get(name).cloned().unwrap_or_default()
    }

    /// Waits until HAProxy shows `name` with a status starting with `word`.
    fn wait_status(&self, name: &str, word: &str, within: Duration) {
        eventually(
            &format!("{name} {word}"),
            within,
            || format!("{:?}", self.servers()),
            || {
                let s = self.server(name);
                // UP counts once its agent has answered too (a new
                // daemon's agent says down until its first snapshot).
                s.status.starts_with(word)
                    && (word != "UP" || (s.weight > 0 && s.agent.starts_with("L7OK")))
            },
        );
    }

    fn client(&self, script: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns("cl"), "python3"])
            .arg(format!("{FLEET_DIR}/{script}"));
        c
    }

    fn probe(&self, args: &[&str]) -> String {
        run(self.client("probe.py").args(args)).trim().to_string()
    }

    /// Starts a load: `client` kind, `threads`, at most `count` scans (0:
    /// until stopped).
    fn load(&mut self, client: &str, threads: usize, count: usize, timeout: u64) -> Load {
        self.loads += 1;
        let out = self.dir.path().join(format!("load{}.jsonl", self.loads));
        let stop = self.dir.path().join(format!("load{}.stop", self.loads));
        let conf = self.dir.path().join("clamdscan.conf");
        let mut c = self.client("load.py");
        c.arg("--front")
            .arg(format!("{LB}:{PORT}"))
            .arg("--sources")
            .arg(LOAD_SOURCES)
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--out")
            .arg(&out)
            .arg("--stop")
            .arg(&stop)
            .arg("--client")
            .arg(client)
            .arg("--count")
            .arg(count.to_string())
            .arg("--timeout")
            .arg(timeout.to_string())
            .arg("--max-seconds")
            .arg("150")
            .arg("--conf")
            .arg(&conf);
        let child = die_with_parent(&mut c)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("load{}.err", self.loads)))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Load { child, out, stop }
    }

    /// Waits until `load` has done `n` more scans than it had.
    fn scans_go_on(&self, load: &Load, n: usize) {
        let from = load.done();
        eventually(
            "scans go on",
            Duration::from_secs(120),
            || format!("{:?}", self.servers()),
            || load.done() >= from + n,
        );
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn haproxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== {}\n{}", n.name, n.log()))
            .collect()
    }
}

/// An INSTREAM of the EICAR test string.
fn instream_eicar() -> Vec<u8> {
    let data = common::eicar();
    let mut out = b"zINSTREAM\0".to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// The nodes' shared signature directory: the test signatures and 100,000
/// MD5 signatures of nothing (an engine big enough to measure), owned by
/// root and read-only for everyone.
fn shared_db(dir: &Path) -> PathBuf {
    let db = dir.join("signatures");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("test.hdb"), common::HDB).unwrap();
    std::fs::write(db.join("test.ndb"), common::NDB).unwrap();
    let mut big = String::new();
    for i in 0..100_000u32 {
        big.push_str(&format!("{i:032x}:{}:Fleet.Test.Sig-{i}\n", 1000 + i));
    }
    std::fs::write(db.join("fleet.hdb"), big).unwrap();
    for f in std::fs::read_dir(&db).unwrap() {
        std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o444))
            .unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o555)).unwrap();
    db
}

/// HAProxy's configuration: the shipped file with this fleet's addresses,
/// a stats socket in the test's directory, no syslog and no user switch.
fn haproxy_config(stats: &Path) -> String {
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
        let line = if t.starts_with("stats socket ") {
            format!("    stats socket {} mode 600 level admin", stats.display())
        } else if t.starts_with("bind :3310") {
            format!("    bind {LB}:{PORT}")
        } else if let Some(rest) = t.strip_prefix("server n") {
            let n = &rest[..1];
            format!("    server n{n} {NET}.1{n}:{PORT}")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(
        out.contains("send-proxy-v2")
            && out.contains("agent-port 9907")
            && out.contains("balance leastconn")
    );
    out
}

fn setup() -> Fleet {
    let prefix = format!("csf{}", std::process::id() % 100_000);
    let dir = tempfile::Builder::new()
        .prefix("cs-fleet")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stats = dir.path().join("haproxy.sock");
    let mut fleet = Fleet {
        prefix: prefix.clone(),
        namespaces: Vec::new(),
        dir,
        nodes: Vec::new(),
        haproxy: None,
        agents: Vec::new(),
        stats,
        loads: 0,
    };
    // The switch: a bridge in a namespace of its own.
    let sw = fleet.ns("sw");
    ip(&["netns", "add", &sw]);
    fleet.namespaces.push(sw.clone());
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &sw, "link", "set", "br0", "up"]);
    let hosts: [(&str, Vec<String>); 5] = [
        ("lb", vec![format!("{LB}/24")]),
        ("n1", vec![format!("{NET}.11/24")]),
        ("n2", vec![format!("{NET}.12/24")]),
        ("n3", vec![format!("{NET}.13/24")]),
        (
            "cl",
            LOAD_SOURCES
                .split(',')
                .chain([GREEDY, OUTSIDER])
                .map(|a| format!("{a}/24"))
                .collect(),
        ),
    ];
    for (short, addrs) in &hosts {
        let ns = fleet.ns(short);
        ip(&["netns", "add", &ns]);
        fleet.namespaces.push(ns.clone());
        let port = format!("v{short}");
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        for a in addrs {
            ip(&["-n", &ns, "addr", "add", a, "dev", "eth0"]);
        }
    }
    let db = shared_db(fleet.dir.path());
    for i in 1..=3 {
        let name = format!("n{i}");
        let ns = fleet.ns(&name);
        let node_ip = format!("{NET}.1{i}");
        let home = fleet.dir.path().join(&name);
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        let unix = home.join("clamd.sock");
        let addr: SocketAddr = format!("{node_ip}:{PORT}").parse().unwrap();
        let proxy = format!("tcp-proxy = [\"{addr}\"]");
        let proxy_from = format!("proxy-from = [\"{LB}/32\"]");
        let cap = format!("max-connections-per-client = {CAP}");
        let agent_listen = format!("listen = \"{node_ip}:{AGENT_PORT}\"");
        let agent_allow = format!("tcp-allow = [\"{LB}/32\"]");
        let config = write_config(
            &home,
            &db,
            &unix,
            addr,
            &[
                ("listen", "tcp = []"),
                ("listen", &proxy),
                ("listen", &proxy_from),
                ("listen", "tcp-allow = [\"10.77.0.96/27\"]"),
                ("limits", "ipv4-prefix = 32"),
                ("limits", &cap),
                ("limits", "max-session-seconds = 5"),
                ("limits", "drain-timeout = 20"),
                ("limits", "reload-retry = 2"),
                ("limits", "reload-headroom = \"16M\""),
                ("database", "self-check = 0"),
                ("log", "level = \"info\""),
                ("agent", &agent_listen),
                ("agent", &agent_allow),
            ],
        );
        let listener = bind_in_netns(&ns, addr);
        let held_unix = {
            let l = std::os::unix::net::UnixListener::bind(&unix).unwrap();
            std::fs::set_permissions(&unix, std::fs::Permissions::from_mode(0o666)).unwrap();
            OwnedFd::from(l)
        };
        let holder = Holder::new()
            .adopt(held_unix, "unix")
            .adopt(listener, "tcp-proxy");
        let cgroup = Cgroup::create(&format!("{prefix}-{name}")).expect("a memory cgroup");
        let mut node = Node {
            name: name.clone(),
            ns: ns.clone(),
            unix: unix.clone(),
            config,
            log: home.join("daemon.log"),
            holder,
            cgroup,
            daemon: None,
        };
        node.start();
        fleet.nodes.push(node);
    }
    // The stand-in agent for the database-age scenario, in n3's namespace.
    let agent = die_with_parent(
        Command::new("ip")
            .args(["netns", "exec", &fleet.ns("n3"), "python3"])
            .arg(format!("{FLEET_DIR}/agent.py"))
            .arg(format!("{NET}.13"))
            .arg(STAND_IN_AGENT_PORT.to_string())
            .arg(fleet.dir.path().join("n3/agent.answer")),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    fleet.agents.push(agent);
    for n in &fleet.nodes {
        eventually(
            &format!("{} serves", n.name),
            Duration::from_secs(120),
            || n.log(),
            || n.answers(),
        );
    }
    std::fs::write(
        fleet.dir.path().join("clamdscan.conf"),
        format!("TCPSocket {PORT}\nTCPAddr {LB}\n"),
    )
    .unwrap();
    let cfg = fleet.dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(&fleet.stats)).unwrap();
    run(Command::new("haproxy").arg("-c").arg("-f").arg(&cfg));
    let hlog = std::fs::File::create(fleet.dir.path().join("haproxy.log")).unwrap();
    fleet.haproxy = Some(
        die_with_parent(
            Command::new("ip")
                .args(["netns", "exec", &fleet.ns("lb"), "haproxy", "-db", "-f"])
                .arg(&cfg),
        )
        .stdout(Stdio::null())
        .stderr(hlog)
        .spawn()
        .unwrap(),
    );
    for n in ["n1", "n2", "n3"] {
        fleet.wait_status(n, "UP", Duration::from_secs(60));
    }
    fleet
}

/// Removes namespaces a killed earlier run of this test left behind (its
/// prefix, and no process of its own alive any more).
fn remove_stale_namespaces() {
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("csf") else {
            continue;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let mine = format!("{}", std::process::id() % 100_000);
        let alive = digits
            .parse::<i32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if digits != mine && !alive {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

#[test]
fn a_fleet_behind_haproxy_drains_heals_and_keeps_per_client_policy() {
    require_root!("network namespaces, cgroups and a daemon per node");
    require!(common::require::program("haproxy", "haproxy"));
    require!(common::require::program("ip", "iproute2"));
    require!(common::require::program("clamdscan", "clamdscan"));
    remove_stale_namespaces();
    let started = Instant::now();
    let mut f = setup();
    eprintln!("fleet up in {:?}", started.elapsed());

    // ---------------------------------------------------------------- spread
    // 10,000 scans from 6 clients; with leastconn each node's share is
    // within ±15 % of a third. (Were HAProxy to choose nodes at random, a
    // share's standard deviation would be sqrt(2/9/10000) = 0.47 points:
    // ±5 points is more than 10 of them.)
    let before = f.servers();
    let load = f.load("python", 6, 10_000, 30);
    let scans = load.complete();
    assert_eq!(scans.len(), 10_000);
    assert!(
        failures(&scans).is_empty(),
        "{}\nHAProxy: {}\n{}",
        failed(&scans),
        f.haproxy_log(),
        f.logs()
    );
    let after = f.servers();
    let served: Vec<u64> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| after[*n].total - before[*n].total)
        .collect();
    let total: u64 = served.iter().sum();
    assert!(total >= 10_000, "{served:?}");
    for s in &served {
        let share = *s as f64 / total as f64;
        assert!((share - 1.0 / 3.0).abs() <= 0.15 / 3.0, "shares {served:?}");
    }
    eprintln!("spread {served:?} ({:?})", started.elapsed());

    // ---------------------------------------------------------------- PROXY v2
    // A direct connection claiming to be someone else: refused unread.
    let direct = f.probe(&["direct-proxy", "10.77.0.100", &format!("{NET}.11"), "3310"]);
    assert_eq!(direct, "closed");
    eventually(
        "n1 logs the refusal",
        Duration::from_secs(30),
        || f.node("n1").log(),
        || {
            f.node("n1").log().lines().any(|l| {
                l.contains("connection refused")
                    && l.contains("peer=10.77.0.100")
                    && l.contains("not in listen.proxy-from")
            })
        },
    );
    // A client outside tcp-allow, through the balancer: refused by its own
    // address.
    assert_eq!(f.probe(&["ping", OUTSIDER, LB, "3310"]), "closed");
    eventually(
        "a node logs the outsider",
        Duration::from_secs(30),
        || f.logs(),
        || {
            f.logs().lines().any(|l| {
                l.contains("connection refused")
                    && l.contains(&format!("the client behind the balancer, {OUTSIDER}:"))
                    && l.contains("not in listen.tcp-allow")
            })
        },
    );
    // A client inside it is served.
    assert_eq!(f.probe(&["ping", "10.77.0.100", LB, "3310"]), "PONG\\0");
    // A client over its cap: each node holds CAP of its sessions, and
    // refuses it by its own address; the other clients are unaffected.
    let load = f.load("python", 3, 0, 30);
    f.scans_go_on(&load, 30);
    let held = f.probe(&["hold", GREEDY, LB, "3310", &(3 * CAP + 3).to_string()]);
    let counts: Vec<usize> = held
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // At most CAP on each of the three nodes: at least 3 of 15 refused.
    assert!(
        counts.len() == 2
            && counts[0] <= 3 * CAP
            && counts[1] >= 3
            && counts[0] + counts[1] == 3 * CAP + 3,
        "{held}"
    );
    assert!(f.logs().lines().any(|l| {
        (l.contains("connection refused") && l.contains("limits.max-connections-per-client")
            || l.contains("to make room"))
            && l.contains(&format!("peer={GREEDY}:"))
    }));
    f.scans_go_on(&load, 30);
    let scans = load.finish();
    assert!(failures(&scans).is_empty(), "{}", failed(&scans));
    eprintln!("PROXY v2 done ({:?})", started.elapsed());

    // ---------------------------------------------------------------- rolling restart
    // SIGTERM to each node in turn under load (python clamd and clamdscan
    // --stream), systemd-style restart: no scan fails.
    let load = f.load("python", 4, 0, 60);
    let cds = f.load("clamdscan", 2, 0, 60);
    for name in ["n1", "n2", "n3"] {
        f.scans_go_on(&load, 30);
        let node = f.node_mut(name);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(node.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let code = node.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{name} exit: {}", node.log());
        // Out of rotation first (the agent said drain while it stopped, or
        // the PING check fails against the held socket): only then is an
        // UP afterwards the new daemon's, and the next node may stop.
        // Meanwhile new connections wait in the held socket's queue.
        f.wait_out_of_rotation(name, Duration::from_secs(60));
        let node = f.node_mut(name);
        node.start();
        let n = f.node(name);
        eventually(
            &format!("{name} serves again"),
            Duration::from_secs(120),
            || n.log(),
            || n.answers(),
        );
        f.wait_status(name, "UP", Duration::from_secs(60));
    }
    f.scans_go_on(&load, 30);
    let (scans, cscans) = (load.finish(), cds.finish());
    assert!(
        failures(&scans).is_empty(),
        "{}\nHAProxy: {}\n{}",
        failed(&scans),
        f.haproxy_log(),
        f.logs()
    );
    assert!(failures(&cscans).is_empty(), "{}", failed(&cscans));
    assert!(cscans.iter().any(|s| s.client == "clamdscan"));
    eprintln!(
        "rolling restart: {} + {} scans, 0 failed ({:?})",
        scans.len(),
        cscans.len(),
        started.elapsed()
    );

    // ---------------------------------------------------------------- reloads
    // Every node reloads under load: no scan fails.
    let load = f.load("python", 4, 0, 60);
    for name in ["n1", "n2", "n3"] {
        let n = f.node(name);
        let before = n.count("reload complete");
        assert_eq!(n.ask(b"zRELOAD\0"), b"RELOADING\0");
        eventually(
            &format!("{name} reloads"),
            Duration::from_secs(120),
            || n.log(),
            || n.count("reload complete") > before,
        );
    }
    f.scans_go_on(&load, 30);
    let scans = load.finish();
    assert!(failures(&scans).is_empty(), "{}", failed(&scans));
    // n2 without memory for a second engine: it waits and keeps serving,
    // the others reload; no scan fails.
    let n2 = f.node("n2");
    let peak_kib = n2
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("engine holder ready"))
        .and_then(|l| l.split("load_peak_kib=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the engine's peak is logged");
    n2.cgroup
        .set_limit(Some(n2.cgroup.usage() + peak_kib * 1024 / 2));
    let deferred_before = n2.count("reload deferred");
    let load = f.load("python", 4, 0, 60);
    let completes: Vec<usize> = f.nodes.iter().map(|n| n.count("reload complete")).collect();
    for n in &f.nodes {
        assert_eq!(n.ask(b"zRELOAD\0"), b"RELOADING\0");
    }
    for (i, n) in f.nodes.iter().enumerate() {
        if n.name == "n2" {
            eventually(
                "n2 defers its reload",
                Duration::from_secs(60),
                || n.log(),
                || n.count("reload deferred") > deferred_before,
            );
        } else {
            eventually(
                &format!("{} reloads", n.name),
                Duration::from_secs(120),
                || n.log(),
                || n.count("reload complete") > completes[i],
            );
        }
    }
    // Its agent drains it (new work goes to the nodes that reloaded); it
    // keeps serving with the old signatures, as its own clients see.
    f.wait_status("n2", "DRAIN", Duration::from_secs(60));
    f.scans_go_on(&load, 60);
    let n2 = f.node("n2");
    assert!(n2.answers());
    let found = n2.ask(&instream_eicar());
    assert_eq!(found, b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0");
    assert_eq!(
        f.node("n2").count("reload complete"),
        completes[1],
        "n2 waited"
    );
    let scans = load.finish();
    assert!(failures(&scans).is_empty(), "{}", failed(&scans));
    f.node("n2").cgroup.set_limit(None);
    let n2 = f.node("n2");
    eventually(
        "n2 reloads once there is room",
        Duration::from_secs(120),
        || n2.log(),
        || n2.count("reload complete") > completes[1],
    );
    f.wait_status("n2", "UP", Duration::from_secs(60));
    eprintln!("reloads done ({:?})", started.elapsed());

    // ---------------------------------------------------------------- SIGKILL
    // Only the scans in flight on the killed node fail; it leaves the
    // rotation, and comes back when it serves again.
    let load = f.load("python", 6, 0, 30);
    f.scans_go_on(&load, 60);
    f.node("n1").signal_all(nix::sys::signal::Signal::SIGKILL);
    // After every signal was sent: a scan that started later cannot have
    // been in flight on n1.
    let killed_at = now();
    f.wait_status("n1", "DOWN", Duration::from_secs(60));
    let down_at = now();
    {
        let n1 = f.node_mut("n1");
        n1.wait_exit(Duration::from_secs(30))
            .map(|_| ())
            .unwrap_or(());
        n1.daemon = None;
        n1.start();
    }
    let n1 = f.node("n1");
    eventually(
        "n1 serves again",
        Duration::from_secs(120),
        || n1.log(),
        || n1.answers(),
    );
    f.wait_status("n1", "UP", Duration::from_secs(60));
    f.scans_go_on(&load, 30);
    let scans = load.finish();
    let lost = failures(&scans);
    assert!(
        lost.len() <= 6,
        "at most one scan in flight per client: {}",
        failed(&scans)
    );
    for s in &lost {
        assert!(
            s.t0 < killed_at,
            "a scan that started after the kill failed: {s:?}"
        );
    }
    assert!(scans.iter().any(|s| s.t0 > down_at && s.ok));
    eprintln!(
        "SIGKILL: {} failed of {}, DOWN after {:.1} s ({:?})",
        lost.len(),
        scans.len(),
        down_at - killed_at,
        started.elapsed()
    );

    // ---------------------------------------------------------------- SIGSTOP
    // A hung node leaves the rotation; no client waits longer than its
    // own timeout; scans that start once HAProxy says DOWN succeed.
    let load = f.load("python", 6, 0, CLIENT_TIMEOUT);
    f.scans_go_on(&load, 60);
    f.node("n2").signal_all(nix::sys::signal::Signal::SIGSTOP);
    let stopped_at = now();
    f.wait_status("n2", "DOWN", Duration::from_secs(60));
    let down_at = now();
    f.scans_go_on(&load, 60);
    f.node("n2").signal_all(nix::sys::signal::Signal::SIGCONT);
    f.wait_status("n2", "UP", Duration::from_secs(120));
    let scans = load.finish();
    let longest = scans.iter().map(|s| s.t1 - s.t0).fold(0.0, f64::max);
    assert!(
        longest < 2.0 * CLIENT_TIMEOUT as f64,
        "a client waited {longest:.1} s, beyond its own {CLIENT_TIMEOUT} s timeout"
    );
    for s in failures(&scans) {
        assert!(s.t0 < down_at, "failed after DOWN: {s:?}");
    }
    eprintln!(
        "SIGSTOP: {} failed (timeouts) of {}, DOWN after {:.1} s, longest wait {longest:.1} s ({:?})",
        failures(&scans).len(),
        scans.len(),
        down_at - stopped_at,
        started.elapsed()
    );

    // ---------------------------------------------------------------- database too old
    // The agent drains a node whose database is older than
    // database.max-age; the others serve everything. (Stand-in: HAProxy
    // asks tests/fleet/agent.py for n3, which answers what the observer
    // says for an old database; see the module documentation.)
    std::fs::write(
        f.dir.path().join("n3/agent.answer"),
        "up drain #database 27000 built 720 h ago, older than database.max-age (stand-in agent)",
    )
    .unwrap();
    f.haproxy_command(&format!(
        "set server clamsentry/n3 agent-port {STAND_IN_AGENT_PORT}"
    ));
    f.wait_status("n3", "DRAIN", Duration::from_secs(60));
    let n3_before = f.server("n3").total;
    let scans = f.load("python", 4, 300, 30).complete();
    assert_eq!(scans.len(), 300);
    assert!(failures(&scans).is_empty(), "{}", failed(&scans));
    assert_eq!(
        f.server("n3").total,
        n3_before,
        "a drained node gets nothing"
    );
    f.haproxy_command(&format!("set server clamsentry/n3 agent-port {AGENT_PORT}"));
    f.wait_status("n3", "UP", Duration::from_secs(60));

    // ---------------------------------------------------------------- pooled sessions
    // With n3 in maintenance (MAINT ON), pooled sessions all land on n1
    // and n2; after MAINT OFF they reach n3 as their bound
    // (limits.max-session-seconds = 5) ends them and the clients reconnect.
    assert_eq!(f.node("n3").ask(b"zMAINT ON\0"), b"MAINT ON\0");
    f.wait_status("n3", "MAINT", Duration::from_secs(60));
    let load = f.load("pool", 6, 0, 30);
    f.scans_go_on(&load, 60);
    assert_eq!(f.server("n3").current, 0, "{:?}", f.servers());
    let n3_before = f.server("n3").total;
    assert_eq!(f.node("n3").ask(b"zMAINT OFF\0"), b"MAINT OFF\0");
    let off_at = now();
    f.wait_status("n3", "UP", Duration::from_secs(60));
    eventually(
        "pooled sessions reach n3",
        Duration::from_secs(120),
        || format!("{:?}", f.servers()),
        || f.server("n3").total > n3_before,
    );
    let reached = now() - off_at;
    f.scans_go_on(&load, 30);
    let scans = load.finish();
    assert!(failures(&scans).is_empty(), "{}", failed(&scans));
    let reconnects: u64 = scans.iter().map(|s| s.reconnects).sum();
    assert!(reconnects > 0, "sessions ended at their bound");
    eprintln!(
        "pooled: n3 had a session {reached:.1} s after MAINT OFF; {} scans, {reconnects} reconnects at the session bound; whole test {:?}",
        scans.len(),
        started.elapsed()
    );
    drop(f);
}
