//! The VirusEvent launcher: the process that runs `virus-event.command` on
//! detections, so that the root supervisor never quotes a name a worker
//! sent nor starts a shell. Started by the supervisor as
//! `clamsentry __virus-event` (only when a command is configured), with its
//! channel at descriptor 3 and nothing else, *already* as
//! `virus-event.user`: root empties the capability bounding set and sets
//! the groups, gid and uid and no-new-privs before `exec`
//! (`sandbox::child`), so no code of ours ever runs as root here. Imports neither `supervisor` nor `worker`.
//!
//! # Start
//!
//! 1. Non-dumpable (`PR_SET_DUMPABLE` 0), as its first instruction: the
//!    commands it starts run as the same user and must not ptrace it or
//!    read its memory (the names and file names of every client's
//!    detections pass through it); named `clamsentry-evt`.
//! 2. Checked, or the launcher reports [`FromLauncher::Fatal`] and exits:
//!    no id is 0; non-dumpable; no descriptor but 0–2 (`/dev/null`) and its
//!    channel.
//! 3. [`ToLauncher::Setup`] (the command, the timeout, its own bound on
//!    running commands, `PATH`), then `sandbox::confine_helper`: every
//!    capability set cleared and verified, no-new-privs set and verified,
//!    `RLIMIT_CORE` 0, `RLIMIT_NOFILE` [`MAX_OPEN_FILES`], `RLIMIT_NPROC`
//!    the tasks its user runs now plus [`TASKS_PER_COMMAND`] per command it
//!    may run. Then [`FromLauncher::Ready`].
//!
//! # Each event, as clamd 1.4's `virusaction` (`clamd/clamd_others.c`)
//!
//! * A name must be printable ASCII (1–1024 bytes, bounded by the message)
//!   and the file name without NUL; otherwise no command runs.
//! * `%v` is replaced by the virus name, quoted where needed, `%f` by
//!   clamd's fixed sentence ([`quote`]); a name that needs quoting where the
//!   context is unclear runs no command.
//! * `/bin/sh -c COMMAND` (argv[0] `sh`), directory `/`, stdin
//!   `/dev/null`, environment exactly `PATH` (the daemon's),
//!   `CLAM_VIRUSEVENT_FILENAME` and `CLAM_VIRUSEVENT_VIRUSNAME`; in its own
//!   process group, killed whole (SIGKILL) after the timeout; its first 4
//!   KiB of stdout and stderr kept ([`run`]). clamd waits for it without
//!   limit, holding a scanning thread.
//! * The outcome (exit status or signal, timeout, duration, the output
//!   excerpts, or why nothing ran) goes back to the supervisor, which logs
//!   it: the launcher has no log of its own and shares no stderr with root.
//!
//! Which detection may run a command at all (the per-client budget) is the
//! supervisor's decision, made before the event is sent; the launcher's own
//! bound (`Setup::max_concurrent`) only backs it up.
//!
//! # End
//!
//! When the supervisor's end closes, the launcher kills the process groups
//! of the commands still running and exits. Commands' background children
//! that left the group are reparented to the supervisor (a child subreaper),
//! which kills children it does not know after 15 s.
//!
//! # What a compromised launcher or a hostile command can do
//!
//! They run as `virus-event.user` (default `clamsentry-event`, a user of
//! its own), with no capabilities and no-new-privs: whatever that user may
//! do on the system, no more (no Landlock: the command is the operator's
//! program). They cannot ptrace or read the launcher (non-dumpable) and hold
//! none of the daemon's descriptors; the launcher holds only its channel.
//! Through it they can send the supervisor outcomes: an outcome must name an
//! event in flight with its exact peer and names, or the supervisor kills
//! and restarts the launcher (counted); lines in the log are bounded by the
//! per-client budget. They can stop commands from running (VirusEvent is
//! then off until the next restart), and see the virus names and file
//! names of the detections sent to the launcher.
#![forbid(unsafe_code)]

mod quote;
mod run;

pub use quote::{substitute, Unquotable, FILENAME_DISABLED_MESSAGE};

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ipc::launch::{
    bounded, Event, Excerpt, FromLauncher, Outcome, Refusal, Setup, Status, ToLauncher, MAX_ERROR,
};
use crate::ipc::typed::{RecvError, Typed};

/// Where the supervisor puts the channel.
pub const CONTROL_FD: RawFd = 3;

/// The launcher's end of its channel: outcomes go, events come.
type Channel = Typed<FromLauncher, ToLauncher>;
/// The launcher's process name (`/proc/PID/comm`).
pub const PROCESS_NAME: &str = "clamsentry-evt";
/// `RLIMIT_NOFILE` of the launcher and its commands.
pub const MAX_OPEN_FILES: u64 = 1024;
/// Tasks (processes and threads) each running command may use, the
/// launcher's watching thread included: `RLIMIT_NPROC` bounds a command
/// that forks without end.
pub const TASKS_PER_COMMAND: u64 = 64;

/// The launcher's `main`; returns the exit code.
pub fn main() -> i32 {
    // First of all (see the module documentation).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let _ = rustix::thread::set_name(c"clamsentry-evt");
    let control = match Channel::inherit(CONTROL_FD) {
        Ok(c) => Arc::new(c),
        // Nobody to tell: started by hand, not by the supervisor.
        Err(_) => return 2,
    };
    match serve(&control) {
        Ok(()) => 0,
        Err(error) => {
            send(
                &control,
                &FromLauncher::Fatal {
                    error: bounded(&error, MAX_ERROR),
                },
            );
            1
        }
    }
}

/// Commands running now: event id → process group (0 until started).
type Running = Arc<Mutex<HashMap<u64, i32>>>;

fn serve(control: &Arc<Channel>) -> Result<(), String> {
    check_process()?;
    let setup = match recv(control)? {
        Some(ToLauncher::Setup(s)) => Arc::new(s),
        Some(other) => return Err(format!("expected the setup first, got {other:?}")),
        None => return Ok(()),
    };
    if setup.max_concurrent == 0 || setup.timeout_s == 0 {
        return Err("setup: max-concurrent and timeout must be at least 1".into());
    }
    let tasks = 1 + u64::from(setup.max_concurrent) * TASKS_PER_COMMAND;
    crate::sandbox::confine_helper(MAX_OPEN_FILES, tasks).map_err(|e| e.to_string())?;
    send(control, &FromLauncher::Ready);
    let running: Running = Arc::default();
    let result = loop {
        match recv(control) {
            Ok(Some(ToLauncher::Event(e))) => start(control, &setup, &running, e),
            Ok(Some(ToLauncher::Setup(_))) => break Err("a second setup".to_string()),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // The supervisor is gone (or broke the protocol): end the commands.
    let groups: Vec<i32> = lock(&running).values().copied().collect();
    for pgid in groups
        .into_iter()
        .filter_map(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    result
}

/// Checks what the supervisor set up before `exec` (see the module docs).
fn check_process() -> Result<(), String> {
    let ids = crate::sys::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    if ids.contains(&0) {
        return Err("the launcher runs as root; it must be started as virus-event.user".into());
    }
    if rustix::process::dumpable_behavior().map_err(|e| format!("PR_GET_DUMPABLE: {e}"))?
        != rustix::process::DumpableBehavior::NotDumpable
    {
        return Err("the launcher is dumpable".into());
    }
    let stray = stray_descriptors();
    if !stray.is_empty() {
        return Err(format!(
            "descriptors {stray:?} are open besides 0-2 and the channel"
        ));
    }
    Ok(())
}

/// Open descriptors other than 0, 1, 2 and the channel.
fn stray_descriptors() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    // The listing's own descriptor is closed by now.
    listed
        .into_iter()
        .filter(|fd| *fd > CONTROL_FD)
        .filter(|fd| crate::sys::is_open(*fd))
        .collect()
}

fn recv(control: &Channel) -> Result<Option<ToLauncher>, String> {
    match control.recv() {
        Err(RecvError::Descriptors(_)) => Err("descriptors on the channel".into()),
        Ok(Some(m)) => Ok(Some(m.msg)),
        Err(RecvError::Decode(e)) => Err(format!("message from the supervisor: {e}")),
        Ok(None) => Ok(None),
        Err(RecvError::Io(e)) => Err(format!("channel: {e}")),
    }
}

fn send(control: &Channel, msg: &FromLauncher) {
    let _ = control.send(msg, &[]);
}

/// Runs the command for one event on a thread of its own, or reports at
/// once why none runs.
fn start(control: &Arc<Channel>, setup: &Arc<Setup>, running: &Running, e: Event) {
    let refuse = |why: Refusal, e: Event| {
        let ended = run::Ended {
            status: Status::Refused(why),
            duration_ms: 0,
            stdout: Excerpt::default(),
            stderr: Excerpt::default(),
        };
        send(control, &outcome(e, ended));
    };
    if e.virus.is_empty() || !e.virus.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return refuse(Refusal::BadVirusName, e);
    }
    if e.target.contains(&0) {
        return refuse(Refusal::BadFileName, e);
    }
    let Ok(command) = substitute(&setup.command, &e.virus) else {
        return refuse(Refusal::Unquotable, e);
    };
    {
        let mut r = lock(running);
        if r.len() >= setup.max_concurrent as usize || r.contains_key(&e.id) {
            drop(r);
            return refuse(Refusal::Busy, e);
        }
        r.insert(e.id, 0);
    }
    let (ctl, setup2, running2, id) = (
        Arc::clone(control),
        Arc::clone(setup),
        Arc::clone(running),
        e.id,
    );
    let event = e.clone();
    let spawned = std::thread::Builder::new()
        .name("command".into())
        .spawn(move || {
            let started = Instant::now();
            let ended = match run::spawn(&command, &event.virus, &event.target, &setup2.path) {
                Ok(child) => {
                    lock(&running2).insert(id, child.id() as i32);
                    let timeout = Duration::from_secs(u64::from(setup2.timeout_s));
                    run::watch(child, timeout, started)
                }
                Err(err) => run::failed(&err),
            };
            lock(&running2).remove(&id);
            send(&ctl, &outcome(event, ended));
        });
    if spawned.is_err() {
        lock(running).remove(&id);
        refuse(Refusal::NoThread, e);
    }
}

fn outcome(e: Event, ended: run::Ended) -> FromLauncher {
    FromLauncher::Outcome(Outcome {
        id: e.id,
        peer: e.peer,
        virus: e.virus,
        target: e.target,
        status: ended.status,
        duration_ms: ended.duration_ms,
        stdout: ended.stdout,
        stderr: ended.stderr,
    })
}

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<u64, i32>> {
    running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
