//! The listening sockets, which only the supervisor holds, and the accept
//! loops: every connection is accepted here, its peer read from the kernel
//! once (SO_PEERCRED and SO_PEERGROUPS for Unix sockets, the address for
//! TCP), TCP peers outside `listen.tcp-allow` closed unread, and the rest
//! handed to the supervisor's event loop for admission. On a PROXY listener
//! (`listen.tcp-proxy`) the client's address comes from the balancer's
//! PROXY v2 header, read in a task of its own ([`super::proxied`]).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc::Sender;

use crate::config::Config;
use crate::ipc::peer;
use crate::policy::network::{AllowList, RateLimit};
use crate::policy::{Identity, ListenerKind};
use crate::systemd::activation::{Activated, Socket};

/// Where a listening socket came from (logged at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Bound by clamsentry from `[listen]`.
    Config,
    /// Handed over by systemd (socket activation).
    Systemd,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Config => "configuration",
            Origin::Systemd => "systemd",
        })
    }
}

pub enum Sock {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A listener with its name (systemd's `FileDescriptorName=`, or "unix" /
/// "tcp" when bound from the configuration; logs show it as LISTENER).
pub struct Listener {
    pub name: Arc<str>,
    pub origin: Origin,
    pub sock: Sock,
    /// Every connection comes from a balancer in `listen.proxy-from` and
    /// starts with a PROXY v2 header (`listen.tcp-proxy`).
    pub proxy: bool,
    /// The socket file clamsentry made (bound from the configuration), to
    /// remove at exit.
    pub made: Option<crate::safe_fs::Made>,
}

impl Listener {
    pub fn kind(&self) -> ListenerKind {
        match self.sock {
            Sock::Unix(_) => ListenerKind::Unix,
            Sock::Tcp(_) => ListenerKind::Tcp,
        }
    }

    fn address(&self) -> String {
        if let Some(m) = &self.made {
            return m.path().display().to_string();
        }
        match &self.sock {
            Sock::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
            Sock::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        }
    }
}

/// A connection accepted and not yet admitted.
pub struct Accepted {
    pub listener: ListenerKind,
    pub name: Arc<str>,
    pub socket: OwnedFd,
    pub identity: Identity,
    /// Bytes root read before the hand-off (a PROXY header), 0 otherwise.
    pub preamble: u64,
}

/// systemd's sockets as listeners, with their names.
pub fn from_systemd(activated: Vec<Activated>) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for a in activated {
        let sock = match a.socket {
            Socket::Unix(l) => {
                l.set_nonblocking(true)?;
                Sock::Unix(UnixListener::from_std(l)?)
            }
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                Sock::Tcp(TcpListener::from_std(l)?)
            }
        };
        out.push(Listener {
            name: Arc::from(a.name.as_str()),
            origin: Origin::Systemd,
            sock,
            proxy: a.proxy,
            made: None,
        });
    }
    Ok(out)
}

/// Binds the listeners the configuration names (when not socket-activated).
pub async fn bind_from_config(config: &Config) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    if let Some(path) = config.unix_path() {
        let spec = crate::socket_setup::unix_socket_spec(&config.listen, config.unix_mode())?;
        let bound = super::runtime_files::bind_unix(path, &spec)?;
        bound.listener.set_nonblocking(true)?;
        out.push(Listener {
            name: Arc::from("unix"),
            origin: Origin::Config,
            sock: Sock::Unix(UnixListener::from_std(bound.listener)?),
            made: Some(bound.made),
            proxy: false,
        });
    }
    let plain = config.tcp_addrs().to_vec();
    let proxied = config.tcp_proxy_addrs().to_vec();
    let tcp = plain.into_iter().map(|a| (a, false));
    for (addr, proxy) in tcp.chain(proxied.into_iter().map(|a| (a, true))) {
        let key = if proxy {
            "listen.tcp-proxy"
        } else {
            "listen.tcp"
        };
        let l = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {addr}: {e} ({key})"),
            )
        })?;
        crate::socket_setup::set_backlog(&l, config.listen.backlog)?;
        out.push(Listener {
            name: Arc::from(if proxy { "tcp-proxy" } else { "tcp" }),
            origin: Origin::Config,
            sock: Sock::Tcp(l),
            proxy,
            made: None,
        });
    }
    Ok(out)
}

pub fn log(listeners: &[Listener]) {
    for l in listeners {
        let (what, settings) = match (l.kind(), l.proxy) {
            (ListenerKind::Unix, _) => ("Unix socket", "Unix"),
            (ListenerKind::Tcp, false) => ("TCP", "TCP"),
            (ListenerKind::Tcp, true) => ("TCP (PROXY v2 from listen.proxy-from)", "TCP"),
        };
        tracing::info!(
            listener = %l.name,
            origin = %l.origin,
            "listening on {what} {} from {} (listener {}, {settings} listener settings)",
            l.address(),
            l.origin,
            l.name
        );
    }
}

/// Starts one accept loop per listener; accepted connections go to `tx`.
/// Aborting a returned task stops its loop and closes the supervisor's
/// copy of the listening socket.
///
/// `proxy` is what PROXY listeners check; their header tasks hold a clone
/// of `tx`, so the receiver ends only after every header read in progress
/// has handed its connection over (or was refused).
/// TCP connections refused by `listen.tcp-allow` are counted in `counted`.
pub fn start(
    listeners: Vec<Listener>,
    allow: AllowList,
    proxy: Arc<super::proxied::Settings>,
    tx: Sender<Accepted>,
    counted: Arc<super::observer::Refusals>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let allow = Arc::new(allow);
    let refusals = Arc::new(RateLimit::new(20, Duration::from_secs(60)));
    let mut tasks = Vec::new();
    for l in listeners {
        let name = Arc::clone(&l.name);
        tasks.push(match l.sock {
            Sock::Unix(u) => tokio::spawn(accept_unix(u, name, tx.clone())),
            Sock::Tcp(t) if l.proxy => tokio::spawn(accept_proxied(
                t,
                name,
                Arc::clone(&proxy),
                Arc::clone(&counted),
                tx.clone(),
            )),
            Sock::Tcp(t) => tokio::spawn(accept_tcp(
                t,
                name,
                Arc::clone(&allow),
                (Arc::clone(&refusals), Arc::clone(&counted)),
                tx.clone(),
            )),
        });
    }
    tasks
}

/// A run of accept errors (EMFILE while descriptors are exhausted repeats
/// every 50 ms until one is freed): the first and every 100th are logged,
/// not all of them, so an exhausted daemon does not flood the journal.
#[derive(Default)]
struct AcceptErrors {
    run: u64,
}

impl AcceptErrors {
    async fn failed(&mut self, e: &std::io::Error, socket: &str) {
        self.run += 1;
        if self.run == 1 || self.run % 100 == 0 {
            tracing::warn!(error = %e, failures = self.run, "accept failed on {socket}; retrying every 50 ms");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn accepted(&mut self, socket: &str) {
        if self.run > 0 {
            tracing::info!(failures = self.run, "accepting again on {socket}");
            self.run = 0;
        }
    }
}

async fn accept_unix(listener: UnixListener, name: Arc<str>, tx: Sender<Accepted>) {
    let mut errors = AcceptErrors::default();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                errors.failed(&e, "the Unix socket").await;
                continue;
            }
        };
        errors.accepted("the Unix socket");
        let Some(p) = peer::unix_peer(stream.as_fd()) else {
            continue;
        };
        let mut groups = p.groups;
        if !groups.contains(&p.gid) {
            groups.push(p.gid);
        }
        let identity = Identity::Unix {
            uid: p.uid,
            gid: p.gid,
            groups,
            pid: p.pid,
        };
        let Ok(socket) = stream.into_std().map(OwnedFd::from) else {
            continue;
        };
        let accepted = Accepted {
            listener: ListenerKind::Unix,
            name: Arc::clone(&name),
            socket,
            identity,
            preamble: 0,
        };
        if tx.send(accepted).await.is_err() {
            return;
        }
    }
}

async fn accept_tcp(
    listener: TcpListener,
    name: Arc<str>,
    allow: Arc<AllowList>,
    (refusals, counted): (Arc<RateLimit>, Arc<super::observer::Refusals>),
    tx: Sender<Accepted>,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                errors.failed(&e, "a TCP socket").await;
                continue;
            }
        };
        errors.accepted("a TCP socket");
        // Refused connections are closed before a byte is read.
        if !allow.admits(addr.ip()) {
            counted.count(&name);
            refuse(&refusals, addr, "address not in listen.tcp-allow");
            continue;
        }
        // A client whose socket is on this host is the local user who owns
        // it, whatever address it came from; one the kernel cannot name
        // (gone already) is refused, never given a shared key.
        let ours = stream.local_addr().unwrap_or(addr);
        let local_uid = match super::local_peer::client(addr, ours) {
            super::local_peer::Client::Local(uid) => Some(uid),
            super::local_peer::Client::Remote => None,
            super::local_peer::Client::Refused(why) => {
                counted.count(&name);
                refuse(&refusals, addr, why);
                continue;
            }
        };
        let Ok(socket) = stream.into_std().map(OwnedFd::from) else {
            continue;
        };
        let accepted = Accepted {
            listener: ListenerKind::Tcp,
            name: Arc::clone(&name),
            socket,
            identity: Identity::Tcp { addr, local_uid },
            preamble: 0,
        };
        if tx.send(accepted).await.is_err() {
            return;
        }
    }
}

/// A PROXY listener: each connection's header is read in a task of its
/// own, so a slow balancer never holds up the accept loop or the event
/// loop; aborting the loop leaves those tasks to finish (within
/// `listen.proxy-timeout`) and hand over what they read.
async fn accept_proxied(
    listener: TcpListener,
    name: Arc<str>,
    settings: Arc<super::proxied::Settings>,
    counted: Arc<super::observer::Refusals>,
    tx: Sender<Accepted>,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                errors.failed(&e, "a TCP socket").await;
                continue;
            }
        };
        errors.accepted("a TCP socket");
        let (name, settings, tx) = (Arc::clone(&name), Arc::clone(&settings), tx.clone());
        let counted = Arc::clone(&counted);
        tokio::spawn(async move {
            let Some((stream, client, preamble)) =
                super::proxied::admit(settings, &name, stream, addr).await
            else {
                // Counted with the listener's other refusals (metrics).
                counted.count(&name);
                return;
            };
            let Ok(socket) = stream.into_std().map(OwnedFd::from) else {
                return;
            };
            let accepted = Accepted {
                listener: ListenerKind::Tcp,
                name,
                socket,
                identity: Identity::tcp(client),
                preamble,
            };
            let _ = tx.send(accepted).await;
        });
    }
}

/// Logs a refused TCP connection, at most 20 lines a minute.
fn refuse(refusals: &RateLimit, addr: SocketAddr, reason: &'static str) {
    if let Some(suppressed) = refusals.allow() {
        tracing::warn!(listener = "tcp", peer = %addr, reason, suppressed, "connection refused");
    }
}
