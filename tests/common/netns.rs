//! Two remote TCP client networks on one machine: the daemon in a network
//! namespace of the test's own, its clients in another, joined by a veth
//! pair. The daemon's namespace has `10.255.0.1` and routes 10.1.0.0/16
//! and 10.2.0.0/16 to the clients' namespace, whose loopback device
//! carries both networks (there every address of each /16 is local, so a
//! client may bind any of them as its source).
//!
//! Why two namespaces: the daemon asks the kernel who owns a TCP client's
//! socket, and a socket of its own host is its owner's (`local_peer`),
//! whatever address it came from. Clients in the daemon's namespace would
//! all be the test's user; in a namespace of their own their sockets are
//! not in the daemon's tables, as a remote host's are not.
//!
//! [`Lab::enter`] moves the calling thread (a test's own) into the
//! daemon's namespace; a daemon it starts listens on TCP at
//! [`DAEMON`] (see `daemons.rs`), and the threads and programs it starts
//! are there too. [`crate::common::client::connect_from`] and [`command`]
//! put a client whose source is one of the two networks in the clients'
//! namespace. Unix sockets are not affected. Both namespaces are deleted
//! at drop.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Mutex;

/// The daemon's address in the lab (a daemon started there listens on it).
pub const DAEMON: [u8; 4] = [10, 255, 0, 1];
const CLIENTS_SIDE: &str = "10.255.0.2";
/// The daemon's IPv6 address in the lab.
pub const DAEMON6: [u16; 8] = [0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1];
const CLIENTS_SIDE6: &str = "2001:db8:ff::2";

/// A network namespace pair; the calling thread joined the daemon's.
pub struct Lab {
    pub name: String,
    clients: String,
    daemon_ns: u64,
}

/// The settings that let both networks in over TCP, besides loopback and
/// the daemon's own address (the test's own connections from the daemon's
/// namespace).
pub const ALLOW: (&str, &str) = (
    "listen",
    "tcp-allow = [\"127.0.0.0/8\", \"::1/128\", \"10.255.0.0/30\", \"10.1.0.0/16\", \"10.2.0.0/16\"]",
);

/// The labs in use: the daemon namespace's inode, and the clients'
/// namespace's name.
static LABS: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("run ip");
    assert!(s.success(), "ip {args:?}");
}

/// The inode of the calling thread's network namespace.
fn current_ns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("read /proc/thread-self/ns/net")
        .ino()
}

fn join(name: &str) {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("join a network namespace");
}

impl Lab {
    /// Makes the lab of [`Lab::build`] with networks 10.1.0.0/16 and
    /// 10.2.0.0/16, and moves the calling thread into the daemon's
    /// namespace.
    pub fn enter(name: &str) -> Lab {
        let mut lab = Lab::build(name, &["10.1.0.1/16", "10.2.0.1/16"]);
        join(&lab.name);
        lab.daemon_ns = current_ns();
        LABS.lock()
            .unwrap()
            .push((lab.daemon_ns, lab.clients.clone()));
        lab
    }

    /// Makes namespaces `name` (the daemon's) and `name-c` (the clients'),
    /// removing stale ones, joined by a veth pair: the daemon at
    /// [`DAEMON`] (and [`DAEMON6`]), and `networks` (such as
    /// `10.1.0.1/16` or `2001:db8:77::1/64`) on the clients' loopback
    /// device, routed to from the daemon's namespace. The calling thread
    /// stays where it is: the daemon and the clients are started in the
    /// namespaces (`ip netns exec`).
    pub fn build(name: &str, networks: &[&str]) -> Lab {
        let clients = format!("{name}-c");
        for ns in [name, clients.as_str()] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
            ip(&["netns", "add", ns]);
        }
        let lab = Lab {
            name: name.to_string(),
            clients: clients.clone(),
            daemon_ns: 0,
        };
        let (d, c) = (name, clients.as_str());
        ip(&[
            "-n", d, "link", "add", "d0", "type", "veth", "peer", "name", "c0", "netns", c,
        ]);
        let daemon = IpAddr::from(DAEMON).to_string();
        let daemon6 = std::net::Ipv6Addr::from(DAEMON6).to_string();
        for ns in [d, c] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", d, "addr", "add", &format!("{daemon}/30"), "dev", "d0"]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENTS_SIDE}/30"),
            "dev",
            "c0",
        ]);
        ip(&[
            "-n",
            d,
            "addr",
            "add",
            &format!("{daemon6}/64"),
            "dev",
            "d0",
            "nodad",
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENTS_SIDE6}/64"),
            "dev",
            "c0",
            "nodad",
        ]);
        ip(&["-n", d, "link", "set", "d0", "up"]);
        ip(&["-n", c, "link", "set", "c0", "up"]);
        for net in networks {
            // On the loopback device every address of the prefix is local.
            if net.contains(':') {
                ip(&["-n", c, "addr", "add", net, "dev", "lo", "nodad"]);
            } else {
                ip(&["-n", c, "addr", "add", net, "dev", "lo"]);
            }
            let prefix = network_of(net);
            let via = if net.contains(':') {
                CLIENTS_SIDE6
            } else {
                CLIENTS_SIDE
            };
            ip(&["-n", d, "route", "add", &prefix, "via", via]);
        }
        lab
    }

    /// The daemon's namespace.
    pub fn daemon(&self) -> &str {
        &self.name
    }

    /// The clients' namespace.
    pub fn clients(&self) -> &str {
        &self.clients
    }

    /// An address of network `net` (1 or 2), host `host`.
    pub fn addr(net: u8, host: u8) -> IpAddr {
        IpAddr::from([10, net, 0, host])
    }
}

/// The network of an address with its prefix length (`10.1.0.1/16` is
/// `10.1.0.0/16`).
fn network_of(cidr: &str) -> String {
    let (addr, len) = cidr.split_once('/').expect("address/length");
    let len: u32 = len.parse().unwrap();
    match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// The clients' namespace of the lab the calling thread is in, if any.
pub fn clients_here() -> Option<String> {
    let here = current_ns();
    LABS.lock()
        .unwrap()
        .iter()
        .find(|(ns, _)| *ns == here)
        .map(|(_, c)| c.clone())
}

/// Is a daemon started by the calling thread in a lab? (It listens on
/// [`DAEMON`] then.)
pub fn in_lab() -> bool {
    clients_here().is_some()
}

/// Runs `f` (which makes a socket) in the lab's clients' namespace if the
/// calling thread is in a lab and `source` is not loopback; the socket
/// stays in the namespace it was made in.
pub fn made_for<T>(source: IpAddr, f: impl FnOnce() -> T) -> T {
    let clients = match clients_here() {
        Some(c) if !source.is_loopback() => c,
        _ => return f(),
    };
    let back = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    join(&clients);
    let out = f();
    rustix::thread::move_into_link_name_space(
        back.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("return to the daemon's network namespace");
    out
}

/// `program`, to run as a client from `source`: in the lab's clients'
/// namespace if the calling thread is in a lab and `source` is not
/// loopback.
pub fn command(program: &str, source: IpAddr) -> Command {
    match clients_here() {
        Some(c) if !source.is_loopback() => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &c, program]);
            cmd
        }
        _ => Command::new(program),
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        LABS.lock()
            .unwrap()
            .retain(|(ns, _)| *ns != self.daemon_ns || self.daemon_ns == 0);
        for ns in [&self.name, &self.clients] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
