//! Two TCP clients of different networks on one machine: a network
//! namespace of the test's own, whose loopback device carries 10.1.0.0/16
//! and 10.2.0.0/16 (there, ordinary addresses, every one of them local).
//! On the host's loopback they cannot be told apart: a loopback client is
//! the local user owning its socket (`policy::peer`), whatever address it
//! binds, and a test's clients all run as the same user.
//!
//! [`Lab::enter`] moves the calling thread (a test's own) into the
//! namespace; a daemon it starts, the clients it connects and the programs
//! it runs are there too. Unix sockets are not affected. The namespace is
//! deleted at drop.

use std::net::IpAddr;
use std::process::Command;

/// A network namespace the calling thread joined.
pub struct Lab {
    pub name: String,
}

/// The settings that let both networks in over TCP, besides loopback.
pub const ALLOW: (&str, &str) = (
    "listen",
    "tcp-allow = [\"127.0.0.0/8\", \"::1/128\", \"10.1.0.0/16\", \"10.2.0.0/16\"]",
);

impl Lab {
    /// Makes namespace `name` (removing a stale one), and moves the
    /// calling thread into it.
    pub fn enter(name: &str) -> Lab {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let ip = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("run ip");
            assert!(s.success(), "ip {args:?}");
        };
        ip(&["netns", "add", name]);
        let lab = Lab {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        // On the loopback device every address of each /16 is local.
        ip(&["-n", name, "addr", "add", "10.1.0.1/16", "dev", "lo"]);
        ip(&["-n", name, "addr", "add", "10.2.0.1/16", "dev", "lo"]);
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("join the network namespace");
        lab
    }

    /// An address of network `net` (1 or 2), host `host`.
    pub fn addr(net: u8, host: u8) -> IpAddr {
        IpAddr::from([10, net, 0, host])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
