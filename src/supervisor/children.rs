//! The supervisor's child processes as the executor holds them: engine
//! holders and workers with their channels, pidfds and temporary
//! directories, and the tasks that read their channels into the event
//! loop. Nothing here decides anything: the lifecycle machine says when to
//! start, fork, drain and kill; this module does it and reports back.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::broker::{self, Broker};
use super::lifecycle::{self, GenId, Who, WorkerId};
use super::logrelay::{self, Relay};
use super::message_budget::{self, MessageBudget};
use super::procs::{self, Child, Strays};
use super::tempdir::TempRoot;
use super::Input;
use crate::config::Config;
use crate::ipc::messages::{
    BrokerReply, BrokerRequest, FromWorker, FromZygote, ToWorker, ToZygote,
};
use crate::ipc::typed::{AsyncTyped, RecvError, Typed};
use crate::log::relay::Source;

struct ZygoteProc {
    control: Arc<AsyncTyped<ToZygote, FromZygote>>,
    child: Arc<Child>,
    temp_dir: PathBuf,
}

struct WorkerProc {
    control: Arc<AsyncTyped<ToWorker, FromWorker>>,
    broker: Arc<Typed<BrokerReply, BrokerRequest>>,
    child: Option<Arc<Child>>,
    temp_dir: PathBuf,
}

/// Every child of the supervisor.
pub struct Children {
    zygotes: HashMap<GenId, ZygoteProc>,
    workers: HashMap<WorkerId, WorkerProc>,
    temp: TempRoot,
    strays: Strays,
    last_sweep: Instant,
    proc_dev: u64,
    tx: mpsc::Sender<Input>,
    /// Reads every child's log records and stderr (see [`logrelay`]).
    relay: Arc<Relay>,
}

impl Children {
    pub fn new(temp: TempRoot, tx: mpsc::Sender<Input>, relay: Arc<Relay>) -> Children {
        Children {
            relay,
            zygotes: HashMap::new(),
            workers: HashMap::new(),
            temp,
            strays: Strays::default(),
            last_sweep: Instant::now(),
            proc_dev: std::fs::metadata("/proc")
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .unwrap_or(0),
            tx,
        }
    }

    /// Starts the engine holder of generation `g`, gives it the
    /// configuration and reads its messages into the event loop.
    pub fn spawn_zygote(&mut self, g: GenId, text: &str) -> std::io::Result<()> {
        let temp_dir = self.temp.private(&format!("z{g}"))?;
        let (ours, theirs) = Typed::<ToZygote, FromZygote>::pair()?;
        let (log, log_reader) = self.relay.open(Source::EngineHolder(g), None)?;
        let child = Arc::new(procs::spawn_zygote(
            &["__zygote"],
            &OwnedFd::from(theirs),
            &log.channel,
            procs::Output::Relayed(log.stderr),
        )?);
        drop(log.channel);
        self.watch_log(Who::Zygote(g), log_reader);
        tracing::info!(generation = g, pid = child.pid, "engine holder started");
        let config = ToZygote::Config {
            toml: text.to_string(),
            temp_parent: self.temp.path_bytes(),
            temp_dir: temp_dir.as_os_str().as_bytes().to_vec(),
        };
        ours.send(&config, &[])?;
        let control = Arc::new(AsyncTyped::new(ours)?);
        // Its messages, then its end. The two come from different sources
        // (the channel, a thread waiting on the pidfd), and what it said
        // before it died (LoadFailed with the reason) must reach the machine
        // before its exit: so the exit goes through this task, which first
        // takes every message still queued.
        let (ctl, tx) = (Arc::clone(&control), self.tx.clone());
        let (exited_tx, mut exited) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let how = loop {
                tokio::select! {
                    biased;
                    r = ctl.recv() => {
                        let go_on = match r {
                            Ok(Some(m)) => forward_zygote(&tx, g, Ok(m.msg)).await,
                            // The engine holder exited with our messages
                            // unread: the kernel reports that once, before
                            // the ones it sent last (a load failure's
                            // reason), which are still there to read.
                            Err(RecvError::Io(e))
                                if e.kind() == std::io::ErrorKind::ConnectionReset =>
                            {
                                true
                            }
                            Ok(None) | Err(RecvError::Io(_)) => false,
                            Err(violation) => forward_zygote(&tx, g, Err(violation)).await,
                        };
                        if !go_on {
                            break (&mut exited).await;
                        }
                    }
                    ended = &mut exited => {
                        let mut reset_seen = false;
                        loop {
                            match ctl.try_recv() {
                                Ok(Some(m)) => {
                                    if !forward_zygote(&tx, g, Ok(m.msg)).await {
                                        break;
                                    }
                                }
                                Err(RecvError::Io(e))
                                    if e.kind() == std::io::ErrorKind::ConnectionReset
                                        && !reset_seen =>
                                {
                                    reset_seen = true;
                                }
                                Ok(None) | Err(RecvError::Io(_)) => break,
                                Err(violation) => {
                                    forward_zygote(&tx, g, Err(violation)).await;
                                    break;
                                }
                            }
                        }
                        break ended;
                    }
                }
            };
            if let Ok(how) = how {
                let _ = tx
                    .send(Input::Life(lifecycle::Event::ZygoteExited(g, how)))
                    .await;
            }
        });
        let waiter = Arc::clone(&child);
        std::thread::Builder::new()
            .name(format!("wait-z{g}"))
            .spawn(move || {
                let _ = exited_tx.send(waiter.wait());
            })?;
        self.zygotes.insert(
            g,
            ZygoteProc {
                control,
                child,
                temp_dir,
            },
        );
        Ok(())
    }

    /// Reads a child's log channel; a record that breaks the rules ends
    /// the child, like a bad message on its other channels.
    fn watch_log(&self, who: Who, reader: logrelay::Reader) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(why) = reader.await {
                let _ = tx.send(Input::Broken(who, why)).await;
            }
        });
    }

    /// The engine holder of `g` has exited: its directory goes.
    pub fn zygote_gone(&mut self, g: GenId) {
        if let Some(z) = self.zygotes.remove(&g) {
            self.temp.remove(&z.temp_dir);
        }
    }

    pub fn retire_zygote(&self, g: GenId) {
        if let Some(z) = self.zygotes.get(&g) {
            let _ = z.control.try_send(&ToZygote::Exit, &[]);
        }
    }

    /// Asks every engine holder for its memory, CPU and descriptors.
    pub fn measure_engine_holders(&self) {
        for z in self.zygotes.values() {
            let _ = z.control.try_send(&ToZygote::Measure, &[]);
        }
    }

    pub fn kill_zygote(&self, g: GenId) {
        if let Some(z) = self.zygotes.get(&g) {
            z.child.kill();
        }
    }

    /// Asks the engine holder of `gen` to fork worker `w`, with its two
    /// channels; reads its control messages and serves its broker channel.
    pub fn fork(
        &mut self,
        gen: GenId,
        w: WorkerId,
        config: &Config,
        broker: &Arc<Broker>,
    ) -> std::io::Result<()> {
        let zygote = self
            .zygotes
            .get(&gen)
            .ok_or_else(|| std::io::Error::other("no engine holder"))?;
        let temp_dir = self.temp.private(&format!("w{w}"))?;
        let (control, control_child) = Typed::<ToWorker, FromWorker>::pair()?;
        let (broker_ch, broker_child) = Typed::<BrokerReply, BrokerRequest>::pair()?;
        control.pass_credentials()?;
        let limits = &config.limits;
        let start = ToWorker::Start {
            worker: w,
            temp_dir: temp_dir.as_os_str().as_bytes().to_vec(),
            threads: crate::zygote::worker_threads(config),
            queue: limits.max_queue.max(1),
            proc_dev: self.proc_dev,
        };
        control.send(&start, &[])?;
        let (log, log_reader) = self.relay.open(Source::Worker(w), None)?;
        zygote.control.try_send(
            &ToZygote::Fork { worker: w },
            &[
                control_child.as_fd(),
                broker_child.as_fd(),
                log.channel.as_fd(),
                log.stderr.as_fd(),
            ],
        )?;
        drop((control_child, broker_child, log));
        self.watch_log(Who::Worker(w), log_reader);
        let control = Arc::new(AsyncTyped::new(control)?);
        let broker_ch = Arc::new(broker_ch);
        // Control messages: the first carries the kernel's word for the pid.
        let (ctl, tx) = (Arc::clone(&control), self.tx.clone());
        let identities = Arc::clone(&broker.identities);
        tokio::spawn(async move {
            let mut budget = MessageBudget::new(message_budget::PER_SECOND, Instant::now());
            loop {
                // Its own second, and its identity's (with its other
                // workers).
                let now = Instant::now();
                let own = budget.charge(now);
                let shared = identities.message(w, now);
                if let Some(wait) = own.max(shared) {
                    tokio::time::sleep(wait).await;
                }
                let input = match ctl.recv().await {
                    Ok(Some(m)) => Input::Worker(w, m.msg, m.pid),
                    // Reported once when the worker exited with messages
                    // unread; the ones it sent last are still to be read.
                    Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        continue
                    }
                    // Closed: a worker that never said hello died starting
                    // (its pid is not known yet, so no exit reaches the
                    // lifecycle otherwise).
                    Ok(None) | Err(RecvError::Io(_)) => {
                        let closed = lifecycle::Event::WorkerChannelClosed(w);
                        let _ = tx.send(Input::Life(closed)).await;
                        return;
                    }
                    Err(violation) => Input::Broken(Who::Worker(w), control_violation(&violation)),
                };
                let stop = matches!(input, Input::Broken(..));
                if tx.send(input).await.is_err() || stop {
                    return;
                }
            }
        });
        // Broker requests: a thread per worker; a broken request ends it.
        let (bch, btx, b) = (Arc::clone(&broker_ch), self.tx.clone(), Arc::clone(broker));
        std::thread::Builder::new()
            .name(format!("broker-{w}"))
            .spawn(move || {
                if let Err(v) = broker::serve(&bch, w, &b) {
                    let _ = btx.blocking_send(Input::Broken(Who::Worker(w), v.0));
                }
            })?;
        tracing::debug!(generation = gen, worker = w, "worker forking");
        self.workers.insert(
            w,
            WorkerProc {
                control,
                broker: broker_ch,
                child: None,
                temp_dir,
            },
        );
        Ok(())
    }

    /// A worker's first message: its pid comes from the kernel, and it must
    /// be a child of ours that we do not know yet. Then its exit is watched.
    pub fn hello(&mut self, w: WorkerId, said: u64, pid: Option<i32>) -> Result<(), String> {
        if said != w {
            return Err(format!("hello as worker {said} on worker {w}'s channel"));
        }
        let pid = pid.ok_or("hello without the sender's credentials")?;
        if self.pids().contains(&pid) {
            return Err(format!("hello from process {pid}, which is already known"));
        }
        let child = Arc::new(procs::adopt(pid).map_err(|e| e.to_string())?);
        let (waiter, tx) = (Arc::clone(&child), self.tx.clone());
        std::thread::Builder::new()
            .name(format!("wait-w{w}"))
            .spawn(move || {
                let how = waiter.wait();
                let _ = tx.blocking_send(Input::Life(lifecycle::Event::WorkerExited(w, how)));
            })
            .map_err(|e| e.to_string())?;
        if let Some(p) = self.workers.get_mut(&w) {
            p.child = Some(child);
        }
        tracing::debug!(worker = w, pid, "worker said hello");
        Ok(())
    }

    /// Sends a control message without waiting (a full queue drops it:
    /// pings and limits are sent again).
    pub fn try_send(&self, w: WorkerId, msg: &ToWorker) {
        if let Some(p) = self.workers.get(&w) {
            let _ = p.control.try_send(msg, &[]);
        }
    }

    /// Sends a control message, in order with the others when the
    /// worker's queue has room, else waiting for room (never blocks the
    /// loop).
    pub fn send(&self, w: WorkerId, msg: &ToWorker) {
        if let Some(p) = self.workers.get(&w) {
            match p.control.try_send(msg, &[]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let (control, msg) = (Arc::clone(&p.control), msg.clone());
                    tokio::spawn(async move {
                        let _ = control.send(&msg).await;
                    });
                }
                _ => {}
            }
        }
    }

    /// Hands a client socket to worker `w`. `Err` when its queue is full or
    /// it is gone; then [`Children::hand_later`] may wait for room.
    pub fn hand(&self, w: WorkerId, msg: &ToWorker, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let p = self
            .workers
            .get(&w)
            .ok_or_else(|| std::io::Error::other("worker gone"))?;
        p.control.try_send(msg, &[socket])
    }

    /// Hands a client socket once the worker's queue has room, within
    /// `within`; `Err(())` is reported as `Undeliverable` by the caller.
    pub fn hand_later(
        &self,
        w: WorkerId,
        msg: &ToWorker,
        socket: OwnedFd,
        within: Duration,
        undeliverable: impl FnOnce() + Send + 'static,
    ) {
        let Some(p) = self.workers.get(&w) else {
            undeliverable();
            return;
        };
        let control = Arc::clone(&p.control);
        let msg = msg.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(within, control.send_with(&msg, &[socket.as_fd()]))
                .await
                .is_ok_and(|r| r.is_ok());
            if !sent {
                undeliverable();
            }
        });
    }

    pub fn kill_worker(&self, w: WorkerId) {
        if let Some(c) = self.workers.get(&w).and_then(|p| p.child.as_ref()) {
            c.kill();
        }
    }

    /// Ends a worker's channels at once: its broker thread exits, nothing
    /// it sends is read any more.
    pub fn revoke_worker(&self, w: WorkerId) {
        if let Some(p) = self.workers.get(&w) {
            p.control.shutdown();
            p.broker.shutdown();
        }
    }

    /// The worker is gone: channels, directory.
    pub fn forget_worker(&mut self, w: WorkerId) {
        self.revoke_worker(w);
        if let Some(p) = self.workers.remove(&w) {
            self.temp.remove(&p.temp_dir);
        }
    }

    /// The pids of every engine holder and worker.
    pub fn pids(&self) -> Vec<i32> {
        self.workers
            .values()
            .filter_map(|p| p.child.as_ref().map(|c| c.pid))
            .chain(self.zygotes.values().map(|z| z.child.pid))
            .collect()
    }

    /// Reaps or kills children nobody accounts for (every 2 s at most);
    /// `others`: the helpers' pids (observer, VirusEvent launcher).
    pub fn sweep(&mut self, now: Instant, others: Vec<i32>) {
        if now.duration_since(self.last_sweep) < Duration::from_secs(2) {
            return;
        }
        self.last_sweep = now;
        let mut known = self.pids();
        known.extend(others);
        for (pid, what) in self.strays.sweep(&known, now) {
            tracing::warn!(pid, what, "a child process nobody accounts for");
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for z in self.zygotes.values() {
            self.temp.remove(&z.temp_dir);
        }
    }
}

/// Passes one message of engine holder `g`, or the rule it broke, to the
/// event loop; false when the channel should not be read any further (a
/// violation, or the loop is gone).
async fn forward_zygote(
    tx: &mpsc::Sender<Input>,
    g: GenId,
    msg: Result<FromZygote, RecvError>,
) -> bool {
    let input = match msg {
        Ok(m) => Input::Zygote(g, m),
        Err(violation) => Input::Broken(Who::Zygote(g), control_violation(&violation)),
    };
    let stop = matches!(input, Input::Broken(..));
    tx.send(input).await.is_ok() && !stop
}

/// What a child did wrong on its control channel, for the log line that
/// reports why it was ended.
fn control_violation(e: &RecvError) -> String {
    match e {
        RecvError::Descriptors(_) => "descriptors on the control channel".into(),
        RecvError::Decode(e) => format!("control message: {e}"),
        RecvError::Io(e) => format!("control channel: {e}"),
    }
}
