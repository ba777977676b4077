//! The executor: the supervisor's event loop. It decides nothing. It turns
//! what happens (a connection accepted, a child's message, a hang-up, a
//! signal, the clock) into events for the two machines — the connection
//! [`gate`] and the process [`lifecycle`] — and performs the actions they
//! return: sending, spawning, killing, closing, logging, notifying.
//!
//! The two machines talk through it: the gate asks for a worker for a
//! client (`NeedWorker`) and the lifecycle answers when one is bound
//! (`Bound`); a worker that drains or goes is told to the gate.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::authority::{Authority, Grant};
use super::broker::Broker;
use super::children::Children;
use super::gate::{self, ConnId, Gate};
use super::hangup::Watch;
use super::lifecycle::{self, Machine, Note, Who, WorkerId, WorkerMsg, ZygoteMsg};
use super::listeners::{self, Accepted, Listener};
use super::status::ServiceStatus;
use super::virus_event::VirusEvents;
use super::Input;
use crate::config::Config;
use crate::daemonize::Readiness;
use crate::engine::{LoadPhase, LoadProgress};
use crate::ipc::messages::{AdminCommand, FromWorker, FromZygote, ToWorker};
use crate::log::limiter::{cost, Class, PeerBudgets, PeerSizes};
use crate::policy::network::AllowList;
use crate::policy::{Identity, PeerKey};
use crate::systemd::notify::Notifier;

/// How long a connection may wait for room in its worker's queue.
const HAND_WITHIN: Duration = Duration::from_secs(5);

/// A connection to hand to a worker, as the gate decided.
struct Hand {
    id: ConnId,
    worker: WorkerId,
    info: crate::ipc::messages::ConnInfo,
    identity: Arc<Identity>,
    paths: bool,
}

/// One step for a machine.
/// The supervisor's copy of a client's socket (never read, except for a
/// PROXY header before the connection got here).
struct Client {
    socket: OwnedFd,
    /// Bytes root read from it (its PROXY header): not the client's command.
    preamble: u64,
}

enum Step {
    Gate(gate::Event),
    Life(lifecycle::Event),
}

pub struct Executor {
    config: Arc<Config>,
    text: String,
    gate: Gate,
    life: Machine,
    children: Children,
    authority: Arc<Authority>,
    broker: Arc<Broker>,
    hangups: Watch,
    /// The supervisor's copy of every admitted connection's socket.
    sockets: HashMap<ConnId, Client>,
    next_conn: ConnId,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    status: ServiceStatus,
    listeners: Option<Vec<Listener>>,
    accepting: Vec<tokio::task::JoinHandle<()>>,
    /// Passes accepted connections to the event loop; ends (saying
    /// `AcceptStopped`) once the accept loops are gone and every
    /// connection they accepted has been passed.
    forwarding: bool,
    virus_events: Option<VirusEvents>,
    /// The per-identity log budgets (`log.peer-lines-per-minute`,
    /// `log.result-lines-per-minute` and their bytes): admission refusals, evictions, the
    /// broker's refusals and the workers' relayed lines share them.
    budgets: Arc<PeerBudgets>,
    last_report: Instant,
    /// The metrics, the observer process and the self-test.
    observing: super::observer::Observing,
    relay: Arc<super::logrelay::Relay>,
    /// Maintenance, as administrators asked (`MAINT`).
    node: super::node::Node,
}

impl Executor {
    pub fn new(
        config: Arc<Config>,
        text: String,
        temp: super::tempdir::TempRoot,
        virus_events: Option<VirusEvents>,
        listeners: Vec<Listener>,
        observed: super::observer::Sockets,
    ) -> std::io::Result<Executor> {
        let (tx, rx) = mpsc::channel(1024);
        let authority = Arc::new(Authority::default());
        let budgets = Arc::new(PeerBudgets::new(PeerSizes::from_config(&config.log)));
        let prefixes = config.limits.prefixes();
        let scan = &config.scan;
        let broker = Arc::new(Broker {
            rules: super::broker::resolve::Rules::new(
                &config.policy.scan_roots,
                scan.follow_directory_symlinks,
                scan.follow_file_symlinks,
            ),
            authority: Arc::clone(&authority),
            handles_per_conn: super::broker::handles_per_conn(
                scan.max_directory_recursion,
                config.limits.max_threads,
            ),
            budgets: Arc::clone(&budgets),
            prefixes,
            identities: Arc::default(),
            max_threads: config.limits.max_threads,
        });
        let relay = Arc::new(super::logrelay::Relay {
            authority: Arc::clone(&authority),
            prefixes,
            budgets: Arc::clone(&budgets),
            sizes: PeerSizes::from_config(&config.log),
        });
        let hangups = Watch::start(tx.clone(), |id| Input::Gate(gate::Event::HungUp(id)))?;
        Ok(Executor {
            gate: Gate::new(
                super::gate_settings(&config),
                (config.service.exit_when_idle > 0)
                    .then(|| Duration::from_secs(config.service.exit_when_idle)),
            ),
            life: Machine::new(super::lifecycle_settings(&config)),
            children: Children::new(temp, tx.clone(), Arc::clone(&relay)),
            observing: super::observer::Observing::new(
                &config,
                text.clone(),
                observed,
                &listeners
                    .iter()
                    .map(|l| l.name.to_string())
                    .collect::<Vec<_>>(),
            ),
            relay,
            authority,
            broker,
            hangups,
            sockets: HashMap::new(),
            next_conn: 1,
            status: ServiceStatus::new(Notifier::from_env()),
            listeners: Some(listeners),
            accepting: Vec::new(),
            forwarding: false,
            virus_events,
            budgets,
            last_report: Instant::now(),
            node: super::node::Node::default(),
            tx,
            rx,
            config,
            text,
        })
    }

    /// Runs until the daemon stops; `Err` says why it could not start.
    pub async fn run(mut self, readiness: &Readiness) -> Result<(), String> {
        Notifier::from_env().loading_started(&self.config.database.directory.display().to_string());
        super::spawn_signal_task(self.tx.clone());
        if self.observing.wanted(&self.config) {
            self.observing.start(&self.tx, &self.relay);
        }
        let dbtx = self.tx.clone();
        tokio::spawn(super::dbwatch::run(
            self.config.database.directory.clone(),
            Duration::from_secs(self.config.database.self_check),
            move || {
                let _ = dbtx.try_send(Input::Life(lifecycle::Event::Reload("database.self-check")));
            },
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(result) = self.feed(Step::Life(lifecycle::Event::Start)) {
            return result;
        }
        let mut told_ready = false;
        loop {
            if !told_ready && self.life.ever_ready() {
                // A parent waiting in the foreground (clamd's command line)
                // exits 0 now.
                readiness.ready();
                told_ready = true;
            }
            let input = tokio::select! {
                i = self.rx.recv() => match i { Some(i) => i, None => return Ok(()) },
                _ = tick.tick() => Input::Tick,
            };
            let done = match input {
                Input::Tick => {
                    let now = Instant::now();
                    let observer = self.observing.pid();
                    self.children.sweep(
                        now,
                        observer
                            .into_iter()
                            .chain(self.virus_events.as_ref().and_then(VirusEvents::pid))
                            .collect(),
                    );
                    self.observe(now);
                    if now.duration_since(self.last_report) >= Duration::from_secs(2) {
                        self.last_report = now;
                        super::logrelay::report_expired(&self.budgets, now);
                    }
                    self.feed(Step::Gate(gate::Event::Tick))
                        .or_else(|| self.feed(Step::Life(lifecycle::Event::Tick)))
                }
                Input::Life(lifecycle::Event::AcceptStopped) => {
                    // Everything accepted before the stop is in the gate:
                    // no newcomer after this, then the workers drain.
                    self.feed(Step::Gate(gate::Event::Stopping))
                        .or_else(|| self.feed(Step::Life(lifecycle::Event::AcceptStopped)))
                }
                Input::Life(e) => {
                    let exited = match &e {
                        lifecycle::Event::ZygoteExited(g, _) => Some(*g),
                        _ => None,
                    };
                    let done = self.feed(Step::Life(e));
                    if let Some(g) = exited {
                        self.children.zygote_gone(g);
                        self.observing
                            .metrics
                            .gone(super::metrics::Proc::EngineHolder(g));
                    }
                    done
                }
                Input::Gate(e) => self.feed(Step::Gate(e)),
                Input::Accepted(a) => self.accepted(a),
                Input::Worker(w, msg, pid) => self.on_worker(w, msg, pid),
                Input::Zygote(g, msg) => self.on_zygote(g, msg),
                Input::Broken(who, why) => {
                    self.feed(Step::Life(lifecycle::Event::Violation(who, why)))
                }
                Input::Measured => {
                    let alive: Vec<WorkerId> = self.life.alive().collect();
                    for w in alive {
                        self.ping(w, 0);
                    }
                    None
                }
                Input::Observer(e) => {
                    self.observing.event(e, Instant::now(), &mut self.status);
                    None
                }
            };
            if let Some(result) = done {
                self.close_all();
                return result;
            }
        }
    }

    /// Feeds the machines until neither has anything left to say. `Some`
    /// when the daemon must stop.
    fn feed(&mut self, first: Step) -> Option<Result<(), String>> {
        let mut queue = VecDeque::from([first]);
        while let Some(step) = queue.pop_front() {
            let now = Instant::now();
            match step {
                Step::Gate(e) => {
                    let sockets = &self.sockets;
                    let heard = |id: ConnId| {
                        sockets
                            .get(&id)
                            .is_some_and(|c| super::spoke::spoke(&c.socket, c.preamble))
                    };
                    for action in self.gate.handle_hearing(e, now, &heard) {
                        self.gate_action(action, &mut queue);
                    }
                }
                Step::Life(e) => {
                    for action in self.life.handle(e, now) {
                        if let Some(result) = self.life_action(action, &mut queue) {
                            return Some(result);
                        }
                    }
                }
            }
        }
        None
    }

    // ------------------------------------------------------------ connections

    fn accepted(&mut self, a: Accepted) -> Option<Result<(), String>> {
        let id = self.next_conn;
        self.next_conn += 1;
        self.authority.issued(id);
        let own_process = match &a.identity {
            Identity::Unix { pid: Some(pid), .. } => {
                self.children.pids().contains(pid) || self.observing.pid() == Some(*pid)
            }
            _ => false,
        };
        self.sockets.insert(
            id,
            Client {
                socket: a.socket,
                preamble: a.preamble,
            },
        );
        self.feed(Step::Gate(gate::Event::Accepted {
            id,
            listener: a.listener,
            name: a.name,
            identity: Arc::new(a.identity),
            own_process,
        }))
    }

    fn gate_action(&mut self, action: gate::Action, queue: &mut VecDeque<Step>) {
        use gate::Action as A;
        match action {
            A::Refuse {
                id,
                identity,
                listener,
                name,
                why,
            } => {
                self.sockets.remove(&id);
                if let gate::Refusal::Limit(_) = why {
                    self.observing
                        .metrics
                        .connection(&name, crate::ipc::observe::ConnOutcome::OverCap);
                }
                let key = PeerKey::of(&identity, self.config.limits.prefixes());
                if let Some(suppressed) = self.budgets.allow(Class::Lines, key, cost(&[])) {
                    let what = match why {
                        gate::Refusal::Limit(_) => {
                            "connection refused: limit reached and no idle connection to close"
                        }
                        _ => "connection refused",
                    };
                    tracing::warn!(
                        listener = listener.as_str(),
                        peer = %identity,
                        client = %key,
                        reason = %why,
                        suppressed,
                        "{what}"
                    );
                }
            }
            A::Hand {
                id,
                worker,
                info,
                identity,
                paths,
            } => self.hand(
                Hand {
                    id,
                    worker,
                    info,
                    identity,
                    paths,
                },
                queue,
            ),
            A::Admitted { name } => {
                let accepted = crate::ipc::observe::ConnOutcome::Accepted;
                self.observing.metrics.connection(&name, accepted);
            }
            A::Evict {
                id,
                key,
                identity,
                name,
                why,
            } => {
                if matches!(why, gate::Eviction::Room | gate::Eviction::Surplus) {
                    self.observing
                        .metrics
                        .connection(&name, crate::ipc::observe::ConnOutcome::Evicted);
                }
                self.authority.revoke(id);
                if let Some(c) = self.sockets.get(&id) {
                    let _ = rustix::net::shutdown(&c.socket, rustix::net::Shutdown::Both);
                }
                if why != gate::Eviction::WorkerGone {
                    if let Some(suppressed) = self.budgets.allow(Class::Lines, key, cost(&[])) {
                        tracing::info!(id, peer = %identity, client = %key, suppressed, "{}", why.as_str());
                    }
                }
            }
            A::Revoke(id) => {
                tracing::debug!(id, "client left; its connection's authority ends");
                self.authority.revoke(id);
            }
            A::Retract(id) => {
                self.authority.revoke(id);
                if let Some(c) = self.sockets.get(&id) {
                    self.hangups.remove(&c.socket);
                }
            }
            A::Forget(id) => {
                self.authority.revoke(id);
                if let Some(c) = self.sockets.remove(&id) {
                    self.hangups.remove(&c.socket);
                }
            }
            A::NeedWorker(t) => queue.push_back(Step::Life(lifecycle::Event::Want(t))),
            A::ReleaseWorker(w) => queue.push_back(Step::Life(lifecycle::Event::Release(w))),
            A::Threads { worker, limit } => {
                tracing::debug!(worker, limit, "scan thread share");
                self.children.send(worker, &ToWorker::Threads { limit });
            }
            A::StreamGrant { worker, bytes } => {
                tracing::debug!(worker, bytes, "stream memory lease");
                self.children.send(worker, &ToWorker::StreamGrant { bytes });
            }
            A::QueryTasks { seq, workers } => {
                tracing::debug!(
                    query = seq,
                    workers = workers.len(),
                    "asking every worker for its tasks (an administrator's STATS)"
                );
                for w in workers {
                    self.children.try_send(w, &ToWorker::TaskQuery { seq });
                }
            }
            A::StatsTasks {
                worker,
                conn,
                tasks,
                omitted,
                pool,
            } => {
                tracing::debug!(
                    worker,
                    id = conn,
                    tasks = tasks.len(),
                    omitted,
                    "the daemon's tasks, for an administrator's STATS"
                );
                self.children.send(
                    worker,
                    &ToWorker::StatsTasks {
                        conn,
                        tasks,
                        omitted,
                        pool,
                    },
                );
            }
            A::Admin {
                id,
                worker,
                command,
                identity,
            } => {
                let (word, event) = match command {
                    AdminCommand::Reload => {
                        ("RELOAD", Some(lifecycle::Event::Reload("RELOAD command")))
                    }
                    AdminCommand::Shutdown => {
                        ("SHUTDOWN", Some(lifecycle::Event::Stop("SHUTDOWN command")))
                    }
                    AdminCommand::Maintenance(on) => {
                        self.node.request(on, &identity);
                        self.status.maintenance(self.node.maintenance());
                        ("MAINT", None)
                    }
                };
                if command == AdminCommand::Maintenance(None) {
                    // A question (an agent may ask every second): not news.
                    tracing::debug!(id, peer = %identity, command = word, "administrative command accepted");
                } else {
                    tracing::info!(id, peer = %identity, command = word, "administrative command accepted");
                }
                let maintenance = self.node.maintenance();
                self.children.try_send(
                    worker,
                    &ToWorker::AdminAccepted {
                        conn: id,
                        maintenance,
                    },
                );
                if let Some(event) = event {
                    queue.push_back(Step::Life(event));
                }
            }
            A::VirusEvent {
                id: _,
                key,
                virus,
                target,
            } => {
                // Charged to the client the gate recorded; the names are
                // data (the launcher quotes or refuses them).
                if let Some(events) = &self.virus_events {
                    events.trigger(key, &virus, &target);
                }
            }
            A::Violation { worker, why } => queue.push_back(Step::Life(
                lifecycle::Event::Violation(Who::Worker(worker), why),
            )),
            A::IdleExit => {
                tracing::info!(
                    idle_seconds = self.config.service.exit_when_idle,
                    "no connection for service.exit-when-idle seconds: exiting"
                );
                queue.push_back(Step::Life(lifecycle::Event::Stop("service.exit-when-idle")));
            }
        }
    }

    /// Grants the connection's authority, watches for its hang-up, and
    /// passes the socket to the worker.
    fn hand(&mut self, hand: Hand, queue: &mut VecDeque<Step>) {
        let Hand {
            id,
            worker,
            info,
            identity,
            paths,
        } = hand;
        let Some(socket) = self.sockets.get(&id).map(|c| &c.socket) else {
            return;
        };
        self.authority.grant(
            id,
            Grant {
                worker,
                identity,
                paths_allowed: paths,
            },
        );
        if let Err(e) = self.hangups.add(id, socket) {
            tracing::warn!(id, error = %e, "cannot watch a connection for its hang-up");
        }
        let msg = ToWorker::Conn(info);
        match self.children.hand(worker, &msg, socket.as_fd()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let Ok(copy) = socket.try_clone() else {
                    // Out of descriptors here: not the worker's doing.
                    queue.push_back(Step::Gate(gate::Event::CannotHand(id)));
                    return;
                };
                let tx = self.tx.clone();
                self.children
                    .hand_later(worker, &msg, copy, HAND_WITHIN, move || {
                        let _ = tx.try_send(Input::Gate(gate::Event::Undeliverable(id)));
                    });
            }
            // The worker's channel refused it (the worker is gone), or the
            // kernel had no memory for the message (not the worker's
            // doing).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => {
                queue.push_back(Step::Gate(gate::Event::CannotHand(id)))
            }
            Err(_) => queue.push_back(Step::Gate(gate::Event::Undeliverable(id))),
        }
    }

    /// Drops every connection the supervisor still holds (at exit).
    fn close_all(&mut self) {
        for (_, c) in self.sockets.drain() {
            self.hangups.remove(&c.socket);
        }
    }

    // ------------------------------------------------------------ processes

    fn life_action(
        &mut self,
        action: lifecycle::Action,
        queue: &mut VecDeque<Step>,
    ) -> Option<Result<(), String>> {
        use lifecycle::Action as A;
        match action {
            A::SpawnZygote(g) => {
                if let Err(e) = self.children.spawn_zygote(g, &self.text) {
                    queue.push_back(Step::Life(lifecycle::Event::ZygoteFailed(
                        g,
                        format!("cannot start the engine holder: {e}"),
                    )));
                }
            }
            A::Fork { gen, worker } => {
                if let Err(e) = self.children.fork(gen, worker, &self.config, &self.broker) {
                    queue.push_back(Step::Life(lifecycle::Event::ForkFailed(
                        gen,
                        worker,
                        e.to_string(),
                    )));
                }
            }
            A::RetireZygote(g) => self.children.retire_zygote(g),
            A::KillZygote(g) => self.children.kill_zygote(g),
            A::Bound { worker, tenant } => {
                tracing::debug!(worker, tenant = %tenant, "worker bound to its client");
                // Its budgets are its client identity's, with that
                // identity's other workers.
                let key = match tenant {
                    gate::Tenant::Uid(uid) => Some(crate::policy::PeerKey::Uid(uid)),
                    gate::Tenant::Network => None,
                    gate::Tenant::Connection(id) => self.gate.key_of(id),
                };
                self.broker.identities.bind(worker, key);
                queue.push_back(Step::Gate(gate::Event::WorkerUp { worker, tenant }));
            }
            A::Drain(w) => {
                self.children.send(w, &ToWorker::Drain);
                queue.push_back(Step::Gate(gate::Event::WorkerDraining(w)));
            }
            A::Kill(w) => {
                self.children.kill_worker(w);
                self.children.revoke_worker(w);
                self.worker_gone(w, queue);
            }
            A::Forget(w) => {
                self.children.forget_worker(w);
                self.broker.identities.forget(w);
                self.observing.metrics.gone(super::metrics::Proc::Worker(w));
                self.worker_gone(w, queue);
            }
            A::Ping(w, seq) => self.ping(w, seq),
            A::MeasureMemory => {
                let reading = super::headroom::read();
                queue.push_back(Step::Life(lifecycle::Event::Memory(reading)));
            }
            A::Notify(note) => {
                self.observing.metrics.note(
                    &note,
                    Instant::now(),
                    super::observer::unix_ms() / 1000,
                );
                match &note {
                    Note::Ready { .. } => self.start_accepting(),
                    Note::Stopping if !self.stop_accepting() => {
                        // Nothing was accepted: the workers may drain now.
                        queue.push_back(Step::Gate(gate::Event::Stopping));
                        queue.push_back(Step::Life(lifecycle::Event::AcceptStopped));
                    }
                    _ => {}
                }
                self.status.observe(note);
            }
            A::Exit(result) => {
                self.observing.stop();
                return Some(result);
            }
        }
        None
    }

    /// A worker is gone (or killed): its grants end now, and the gate
    /// closes its connections.
    fn worker_gone(&mut self, w: WorkerId, queue: &mut VecDeque<Step>) {
        self.authority.revoke_worker(w);
        let held = self.gate.held_by(w);
        if held > 0 {
            tracing::info!(
                worker = w,
                connections = held,
                "closed the connections of a worker that is gone"
            );
        }
        queue.push_back(Step::Gate(gate::Event::WorkerGone(w)));
    }

    fn start_accepting(&mut self) {
        let Some(listeners) = self.listeners.take() else {
            return;
        };
        // The socket that names loopback clients' owners, made while
        // descriptors are plenty.
        super::local_peer::prepare();
        let allow = AllowList::new(self.config.tcp_allow().to_vec());
        let proxy = Arc::new(super::proxied::Settings::from_config(
            &self.config,
            Arc::clone(&self.budgets),
        ));
        let (atx, mut arx) = mpsc::channel::<Accepted>(256);
        self.accepting = listeners::start(listeners, allow, proxy, atx, self.observing.refusals());
        let tx = self.tx.clone();
        self.forwarding = true;
        tokio::spawn(async move {
            while let Some(a) = arx.recv().await {
                if tx.send(Input::Accepted(a)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Life(lifecycle::Event::AcceptStopped)).await;
        });
    }

    /// On stop: no new connection is accepted. Sockets from systemd stay
    /// open in systemd, which queues new connections for the next start.
    /// What was accepted already still reaches the gate (PROXY headers
    /// being read finish first); true when that is on its way, and
    /// `AcceptStopped` will say when it has arrived.
    fn stop_accepting(&mut self) -> bool {
        for task in self.accepting.drain(..) {
            task.abort();
        }
        self.listeners = None;
        std::mem::take(&mut self.forwarding)
    }

    fn on_zygote(&mut self, g: lifecycle::GenId, msg: FromZygote) -> Option<Result<(), String>> {
        let kind = match &msg {
            FromZygote::Progress { .. } => ZygoteMsg::Progress,
            FromZygote::Ready(_) => ZygoteMsg::Ready,
            FromZygote::LoadFailed { .. } => ZygoteMsg::LoadFailed,
            FromZygote::ForkFailed { .. } => ZygoteMsg::ForkFailed,
            FromZygote::Usage(_) => ZygoteMsg::Usage,
        };
        if let Err(why) = self.life.check_zygote(g, kind) {
            return self.feed(Step::Life(lifecycle::Event::Violation(Who::Zygote(g), why)));
        }
        let event = match msg {
            FromZygote::Progress {
                compiling,
                done,
                total,
            } => lifecycle::Event::ZygoteProgress(
                g,
                LoadProgress {
                    phase: if compiling {
                        LoadPhase::Compiling
                    } else {
                        LoadPhase::Loading
                    },
                    done,
                    total,
                },
            ),
            FromZygote::Ready(r) => lifecycle::Event::ZygoteReady(g, r),
            FromZygote::LoadFailed { error } => lifecycle::Event::ZygoteFailed(g, error),
            FromZygote::ForkFailed { worker, error } => {
                lifecycle::Event::ForkFailed(g, worker, error)
            }
            FromZygote::Usage(u) => {
                self.observing
                    .metrics
                    .usage(super::metrics::Proc::EngineHolder(g), u);
                let _ = self.tx.try_send(Input::Measured);
                return None;
            }
        };
        self.feed(Step::Life(event))
    }

    fn on_worker(
        &mut self,
        w: WorkerId,
        msg: FromWorker,
        pid: Option<i32>,
    ) -> Option<Result<(), String>> {
        let kind = match &msg {
            FromWorker::Hello { .. } => WorkerMsg::Hello,
            FromWorker::Pong { .. } => WorkerMsg::Pong,
            FromWorker::Active { .. } | FromWorker::Closed { .. } | FromWorker::Found { .. } => {
                WorkerMsg::Conn
            }
            FromWorker::Admin { .. } => WorkerMsg::Admin,
            FromWorker::Retire { .. } => WorkerMsg::Retire,
            FromWorker::StreamWant { .. }
            | FromWorker::StatsTasks { .. }
            | FromWorker::TaskList { .. } => WorkerMsg::Share,
            FromWorker::Counters(_) => WorkerMsg::Counters,
        };
        if let Err(why) = self.life.check_worker(w, kind) {
            return self.feed(Step::Life(lifecycle::Event::Violation(Who::Worker(w), why)));
        }
        let report = |r| Step::Gate(gate::Event::Report(w, r));
        let step = match msg {
            FromWorker::Hello { worker } => match self.children.hello(w, worker, pid) {
                Ok(()) => Step::Life(lifecycle::Event::WorkerHello(w)),
                Err(why) => Step::Life(lifecycle::Event::Violation(Who::Worker(w), why)),
            },
            FromWorker::Pong {
                scans,
                found,
                errors,
                healthy,
                ..
            } => Step::Life(lifecycle::Event::WorkerPong {
                worker: w,
                scans,
                found,
                errors,
                healthy,
            }),
            FromWorker::Active { conn } => {
                // Heard after the worker read the connection's first
                // command, maybe after its first reply: until then the gate
                // counts it idle, and may close it to make room.
                tracing::debug!(
                    id = conn,
                    "connection active: no longer closed to make room"
                );
                report(gate::Report::Active(conn))
            }
            FromWorker::Closed { conn } => report(gate::Report::Closed(conn)),
            FromWorker::Found {
                conn,
                virus,
                target,
            } => report(gate::Report::Found {
                conn,
                virus,
                target,
            }),
            FromWorker::Admin { conn, command } => report(gate::Report::Admin { conn, command }),
            FromWorker::Retire { reason } => Step::Life(lifecycle::Event::WorkerRetire(w, reason)),
            FromWorker::StreamWant { bytes } => report(gate::Report::StreamWant(bytes)),
            FromWorker::Counters(c) => {
                self.observing.metrics.worker_counters(w, *c);
                return None;
            }
            FromWorker::StatsTasks { conn } => report(gate::Report::StatsTasks { conn }),
            FromWorker::TaskList {
                seq,
                tasks,
                omitted,
                pool,
            } => report(gate::Report::TaskList {
                seq,
                tasks,
                omitted,
                pool,
            }),
        };
        self.feed(step)
    }

    /// What the load balancer's agent shows about this node beyond the
    /// machines' own state (maintenance, a reload waiting for memory),
    /// copied into the observer's snapshot with each update.
    fn agent_view(&self) -> super::node::AgentView {
        self.node.agent_view(self.life.reload_deferred())
    }

    fn ping(&mut self, w: WorkerId, seq: u64) {
        let mut fleet = self.life.fleet();
        (fleet.worker_pss_kib, fleet.daemon_pss_kib) = self.observing.metrics.memory(w);
        self.children.try_send(w, &ToWorker::Ping { seq, fleet });
    }

    /// Once a tick: memory measurements, the observer's snapshot, and the
    /// self-test (a connection the daemon makes to itself, handed to a
    /// worker like a client's; the observer speaks on the other end).
    fn observe(&mut self, now: Instant) {
        if self.observing.measure_due(now) {
            self.children.measure_engine_holders();
        }
        // The agent's maint and drain words (MAINT; a reload waiting for
        // memory headroom).
        let view = self.agent_view();
        self.observing.maintenance = view.maintenance;
        self.observing.no_headroom = view.reload_deferred.is_some();
        let open = || self.gate.open_by_listener();
        self.observing.tick(
            now,
            &self.life,
            open,
            &self.tx,
            &self.relay,
            &mut self.status,
        );
        if let Some(id) = self.observing.selftest_due(now, &self.life) {
            match super::observer::synthetic_connection() {
                Ok((accepted, theirs)) => {
                    let _ = self.accepted(accepted);
                    self.observing.selftest_sent(id, theirs, &mut self.status);
                }
                Err(e) => self.observing.selftest_not_sent(id, &e, &mut self.status),
            }
        }
    }
}
