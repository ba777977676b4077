//! The lifecycle's rules, driven with invented events and times.

use super::*;

const DRAIN: Duration = Duration::from_secs(30);

fn settings(standby: usize) -> Settings {
    Settings {
        standby,
        drain_timeout: DRAIN,
        max_workers: 16,
        memory: None,
    }
}

fn ready() -> EngineReady {
    EngineReady {
        engine_version: "1.4.6".into(),
        signatures: 10,
        db_version: 1,
        db_time: 0,
        sandbox: "landlock=full".into(),
        load_peak_kib: 0,
    }
}

fn forks(actions: &[Action]) -> Vec<(GenId, WorkerId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fork { gen, worker } => Some((*gen, *worker)),
            _ => None,
        })
        .collect()
}

fn bound(actions: &[Action]) -> Vec<(WorkerId, Tenant)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Bound { worker, tenant } => Some((*worker, *tenant)),
            _ => None,
        })
        .collect()
}

fn drains(actions: &[Action]) -> Vec<WorkerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Drain(w) => Some(*w),
            _ => None,
        })
        .collect()
}

/// A machine serving generation 1 with `standby` standby workers; returns
/// their ids.
fn serving(standby: usize, t: Instant) -> (Machine, Vec<WorkerId>) {
    let mut m = Machine::new(settings(standby));
    assert_eq!(m.handle(Event::Start, t), vec![Action::SpawnZygote(1)]);
    let a = m.handle(Event::ZygoteReady(1, ready()), t);
    let f = forks(&a);
    assert_eq!(f.len(), standby);
    let mut ids = Vec::new();
    for (i, (_, w)) in f.into_iter().enumerate() {
        let a = m.handle(Event::WorkerHello(w), t);
        if i == 0 {
            assert!(a
                .iter()
                .any(|x| matches!(x, Action::Notify(Note::Ready { .. }))));
        }
        ids.push(w);
    }
    (m, ids)
}

const A: Tenant = Tenant::Uid(1000);
const B: Tenant = Tenant::Uid(1001);

#[test]
fn ready_once_a_standby_worker_serves() {
    let t = Instant::now();
    let (m, ids) = serving(1, t);
    assert_eq!(ids.len(), 1);
    assert!(m.ever_ready());
    assert_eq!(m.fleet().generation, 1);
}

#[test]
fn without_standby_workers_the_engine_is_readiness() {
    let t = Instant::now();
    let mut m = Machine::new(settings(0));
    m.handle(Event::Start, t);
    let a = m.handle(Event::ZygoteReady(1, ready()), t);
    assert!(forks(&a).is_empty());
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Notify(Note::Ready { .. }))));
}

#[test]
fn a_failed_first_load_stops_the_daemon() {
    let t = Instant::now();
    let mut m = Machine::new(settings(1));
    m.handle(Event::Start, t);
    let a = m.handle(Event::ZygoteFailed(1, "bad.ndb".into()), t);
    assert_eq!(a, vec![Action::Exit(Err("bad.ndb".into()))]);
}

#[test]
fn a_standby_worker_is_bound_at_once_and_replaced_by_a_fork() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    let a = m.handle(Event::Want(A), t);
    assert_eq!(bound(&a), vec![(ids[0], A)]);
    assert_eq!(forks(&a).len(), 1, "a new standby: {a:?}");
    // Asking again changes nothing.
    let a = m.handle(Event::Want(A), t);
    assert!(bound(&a).is_empty() && forks(&a).is_empty(), "{a:?}");
}

#[test]
fn a_tenant_without_a_standby_gets_a_fork_bound_when_it_serves() {
    let t = Instant::now();
    let (mut m, _) = serving(1, t);
    m.handle(Event::Want(A), t); // takes the standby, forks a new one
    let a = m.handle(Event::Want(B), t); // the new standby is still forking
    assert!(bound(&a).is_empty());
    let standby = m
        .workers
        .iter()
        .find(|(_, w)| w.tenant == Some(B))
        .map(|(id, _)| *id)
        .expect("the forking standby was given to B");
    let a = m.handle(Event::WorkerHello(standby), t);
    assert_eq!(bound(&a), vec![(standby, B)]);
}

#[test]
fn a_worker_is_never_bound_twice() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    m.handle(Event::Release(ids[0]), t);
    // Released, it drains; B never gets it.
    let a = m.handle(Event::Want(B), t);
    assert!(!bound(&a).iter().any(|(w, _)| *w == ids[0]));
}

#[test]
fn crashes_cost_no_reload_and_young_deaths_back_off() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let later = t + STABLE_AFTER;
    let a = m.handle(Event::WorkerExited(ids[0], Ended::Signaled(11)), later);
    assert!(a.contains(&Action::Forget(ids[0])));
    assert!(!a.iter().any(|x| matches!(x, Action::SpawnZygote(_))));
    assert_eq!(m.fleet().crashes, 1);
    // A worker that cannot start: every fork dies at once; forks wait
    // longer each time, but never more than MAX_BACKOFF.
    let mut now = later;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let standby = m
            .workers
            .iter()
            .find(|(_, w)| w.tenant.is_none() && w.state == WState::Forking)
            .map(|(id, _)| *id);
        let Some(w) = standby else {
            let mut waited = Duration::ZERO;
            loop {
                waited += Duration::from_millis(10);
                if !forks(&m.handle(Event::Tick, now + waited)).is_empty() {
                    break;
                }
                assert!(waited < MAX_BACKOFF + Duration::from_secs(1));
            }
            waits.push(waited);
            now += waited;
            continue;
        };
        m.handle(Event::WorkerExited(w, Ended::Exited(1)), now);
    }
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
}

#[test]
fn the_next_connection_of_a_crashed_workers_client_finds_a_standby() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let spare = forks(&m.handle(Event::Tick, t));
    let spare = spare.first().map(|(_, w)| *w).unwrap_or_else(|| {
        *m.workers
            .iter()
            .find(|(_, w)| w.tenant.is_none())
            .unwrap()
            .0
    });
    m.handle(Event::WorkerHello(spare), t);
    let crash = t + STABLE_AFTER;
    m.handle(Event::WorkerExited(ids[0], Ended::Signaled(9)), crash);
    let again = crash + Duration::from_millis(3);
    let a = m.handle(Event::Want(A), again);
    assert_eq!(bound(&a), vec![(spare, A)]);
    assert_eq!(m.fleet().last_replacement_us, 3000);
}

#[test]
fn a_killed_workers_client_gets_another_before_the_kill_is_reaped() {
    let t = Instant::now();
    let (mut m, _) = serving(2, t);
    let a = m.handle(Event::Want(A), t);
    let (first, _) = bound(&a)[0];
    for (_, w) in forks(&m.handle(Event::Tick, t)) {
        m.handle(Event::WorkerHello(w), t);
    }
    // A violation: killed now, reaped later.
    let a = m.handle(Event::Violation(Who::Worker(first), "x".into()), t);
    assert_eq!(a.first(), Some(&Action::Kill(first)));
    // The client's next connection, before the exit is seen.
    let a = m.handle(Event::Want(A), t);
    let b = bound(&a);
    assert_eq!(b.len(), 1, "{a:?}");
    assert_ne!(b[0].0, first);
}

#[test]
fn a_workers_lying_counters_saturate_and_never_fault() {
    let t = Instant::now();
    let (mut m, ids) = serving(2, t);
    for &w in &ids {
        m.handle(
            Event::WorkerPong {
                worker: w,
                scans: u64::MAX,
                found: u64::MAX,
                errors: u64::MAX,
                healthy: true,
            },
            t,
        );
    }
    // Both gone: their counts move to the retired totals.
    m.handle(Event::WorkerExited(ids[0], Ended::Signaled(9)), t);
    m.handle(Event::WorkerExited(ids[1], Ended::Signaled(9)), t);
    assert_eq!(m.retired, (u64::MAX, u64::MAX, u64::MAX));
}

#[test]
fn a_worker_that_dies_before_hello_is_replaced_for_its_client() {
    let t = Instant::now();
    let (mut m, _) = serving(1, t);
    let a = m.handle(Event::Want(A), t);
    let (bound_w, _) = bound(&a)[0];
    // The replacement standby is forking; the client's worker retires and
    // the forking standby is promised to the client.
    let mut f = forks(&a);
    f.extend(forks(&m.handle(Event::Tick, t)));
    let spare = f[0].1;
    m.handle(Event::WorkerRetire(bound_w, RetireReason::TempFailure), t);
    m.handle(Event::Want(A), t);
    // It dies starting (its temporary directory was gone): only its
    // control channel says so.
    let a = m.handle(Event::WorkerChannelClosed(spare), t);
    assert!(a.contains(&Action::Forget(spare)), "{a:?}");
    // A fresh fork follows for the client (at once: a first failure has
    // no back-off), and serves it once it says hello.
    let for_a: Vec<WorkerId> = forks(&a)
        .into_iter()
        .map(|(_, w)| w)
        .filter(|w| m.workers.get(w).is_some_and(|x| x.tenant == Some(A)))
        .collect();
    assert_eq!(for_a.len(), 1, "{a:?}");
    let w = for_a[0];
    let later = t + Duration::from_secs(1);
    let a = m.handle(Event::WorkerHello(w), later);
    assert!(bound(&a).contains(&(w, A)), "{a:?}");
    // A serving worker's closed channel changes nothing (its exit says more).
    let a = m.handle(Event::WorkerChannelClosed(w), later);
    assert!(a.is_empty(), "{a:?}");
}

#[test]
fn reload_is_blue_green_per_tenant() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let bound_a = ids[0];
    let a = m.handle(Event::Reload("RELOAD command"), t);
    assert!(a.contains(&Action::SpawnZygote(2)));
    assert!(a.contains(&Action::Notify(Note::Reloading(
        crate::ipc::observe::ReloadTrigger::Command
    ))));
    // A second request while loading is merged.
    assert!(!m
        .handle(Event::Reload("SIGHUP"), t)
        .iter()
        .any(|x| matches!(x, Action::SpawnZygote(_))));
    let a = m.handle(Event::ZygoteReady(2, ready()), t);
    assert!(a.contains(&Action::RetireZygote(1)));
    let new = forks(&a);
    assert!(new.iter().all(|(g, _)| *g == 2));
    // A's old worker serves until its replacement does.
    assert!(!drains(&a).contains(&bound_a));
    let replacement = m
        .workers
        .iter()
        .find(|(_, w)| w.gen == 2 && w.tenant == Some(A))
        .map(|(id, _)| *id)
        .unwrap();
    let a = m.handle(Event::WorkerHello(replacement), t);
    assert_eq!(bound(&a), vec![(replacement, A)]);
    assert!(drains(&a).contains(&bound_a));
    for (_, w) in new.iter().filter(|(_, w)| *w != replacement) {
        m.handle(Event::WorkerHello(*w), t);
    }
    let a = m.handle(Event::WorkerExited(bound_a, Ended::Exited(0)), t);
    assert!(a.contains(&Action::Forget(bound_a)));
    assert_eq!(m.fleet().crashes, 0);
    assert_eq!(m.fleet().generation, 2);
}

#[test]
fn at_most_two_generations_have_workers() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let pinned = ids[0];
    // Reload twice; the first generation's worker never finishes draining
    // (a client trickles a stream into it).
    for (g, at) in [(2, 1), (3, 2)] {
        let now = t + Duration::from_secs(at);
        m.handle(Event::Reload("SIGHUP"), now);
        let a = m.handle(Event::ZygoteReady(g, ready()), now);
        for (_, w) in forks(&a) {
            m.handle(Event::WorkerHello(w), now);
        }
        if g == 3 {
            assert!(a.contains(&Action::Kill(pinned)), "{a:?}");
        }
    }
}

#[test]
fn a_draining_worker_has_a_deadline() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    m.handle(Event::Release(ids[0]), t);
    // It keeps answering pings, but never finishes.
    let mut now = t;
    while now + PING_EVERY < t + DRAIN {
        now += PING_EVERY;
        m.handle(
            Event::WorkerPong {
                worker: ids[0],
                scans: 0,
                found: 0,
                errors: 0,
                healthy: true,
            },
            now,
        );
        let a = m.handle(Event::Tick, now);
        assert!(!a.contains(&Action::Kill(ids[0])), "killed early");
    }
    let a = m.handle(Event::Tick, t + DRAIN);
    assert!(a.contains(&Action::Kill(ids[0])));
}

#[test]
fn a_silent_draining_worker_is_ended_too() {
    let t = Instant::now();
    let mut m = Machine::new(Settings {
        drain_timeout: Duration::from_secs(3600),
        ..settings(1)
    });
    m.handle(Event::Start, t);
    let a = m.handle(Event::ZygoteReady(1, ready()), t);
    let w = forks(&a)[0].1;
    m.handle(Event::WorkerHello(w), t);
    m.handle(Event::Release(w), t);
    let a = m.handle(Event::Tick, t + WEDGED_AFTER + Duration::from_secs(1));
    assert!(a.contains(&Action::Kill(w)));
}

#[test]
fn stop_drains_everything_then_exits_within_the_drain_timeout() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let a = m.handle(Event::Stop("SIGTERM"), t);
    // First the accept loops close; what they accepted is still served.
    assert_eq!(a, vec![Action::Notify(Note::Stopping)]);
    assert!(drains(&m.handle(Event::Tick, t)).is_empty());
    let a = m.handle(Event::AcceptStopped, t);
    assert!(drains(&a).contains(&ids[0]));
    assert!(a.contains(&Action::RetireZygote(1)));
    // Wants while stopping are ignored.
    assert!(forks(&m.handle(Event::Want(B), t)).is_empty());
    m.handle(Event::ZygoteExited(1, Ended::Exited(0)), t);
    // The worker never finishes: ended at the deadline, then the exit.
    let a = m.handle(Event::Tick, t + DRAIN);
    let killed: Vec<WorkerId> = a
        .iter()
        .filter_map(|x| match x {
            Action::Kill(w) => Some(*w),
            _ => None,
        })
        .collect();
    assert!(!killed.is_empty());
    let mut last = Vec::new();
    for w in m.workers.keys().copied().collect::<Vec<_>>() {
        last = m.handle(Event::WorkerExited(w, Ended::Signaled(9)), t + DRAIN);
    }
    assert!(last.contains(&Action::Exit(Ok(()))), "{last:?}");
}

#[test]
fn a_stop_drains_anyway_if_accepted_connections_never_arrive_and_keeps_its_deadline() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Stop("SIGTERM"), t);
    let a = m.handle(Event::Tick, t + ACCEPT_FLUSH);
    assert!(drains(&a).contains(&ids[0]), "{a:?}");
    assert!(a.contains(&Action::RetireZygote(1)));
    // The late word changes nothing.
    assert!(m.handle(Event::AcceptStopped, t + ACCEPT_FLUSH).is_empty());
    // The drain deadline counts from the stop, not from the drain.
    let a = m.handle(Event::Tick, t + DRAIN);
    assert!(a.contains(&Action::Kill(ids[0])), "{a:?}");
}

#[test]
fn a_failed_reload_changes_nothing() {
    let t = Instant::now();
    let (mut m, _) = serving(1, t);
    m.handle(Event::Reload("RELOAD command"), t);
    let a = m.handle(Event::ZygoteFailed(2, "truncated.ndb".into()), t);
    assert!(a.contains(&Action::Notify(Note::Reloaded {
        ok: false,
        signatures: 0,
        db_version: 0
    })));
    assert_eq!(m.serving().count(), 1);
    assert_eq!(m.fleet().generation, 1);
}

#[test]
fn a_dead_zygote_is_reloaded_while_workers_serve() {
    let t = Instant::now();
    let (mut m, _) = serving(1, t);
    let a = m.handle(Event::ZygoteExited(1, Ended::Signaled(9)), t);
    assert!(a.contains(&Action::SpawnZygote(2)), "{a:?}");
    assert_eq!(m.serving().count(), 1);
    // A tenant wanting a worker meanwhile gets the standby.
    assert_eq!(bound(&m.handle(Event::Want(A), t)).len(), 1);
    // Another one waits for the new engine.
    assert!(forks(&m.handle(Event::Want(B), t)).is_empty());
    let a = m.handle(Event::ZygoteReady(2, ready()), t);
    assert!(forks(&a).len() >= 2, "B's worker and a replacement: {a:?}");
}

#[test]
fn messages_out_of_state_are_violations() {
    let t = Instant::now();
    let mut m = Machine::new(settings(1));
    m.handle(Event::Start, t);
    assert!(m.check_zygote(1, ZygoteMsg::Progress).is_ok());
    assert!(m.check_zygote(1, ZygoteMsg::ForkFailed).is_err());
    let a = m.handle(Event::ZygoteReady(1, ready()), t);
    let w = forks(&a)[0].1;
    assert!(m.check_zygote(1, ZygoteMsg::Ready).is_err());
    assert!(m.check_worker(w, WorkerMsg::Pong).is_err(), "before hello");
    assert!(m.check_worker(w, WorkerMsg::Admin).is_err(), "before hello");
    assert!(m.check_worker(w, WorkerMsg::Hello).is_ok());
    m.handle(Event::WorkerHello(w), t);
    assert!(m.check_worker(w, WorkerMsg::Hello).is_err(), "twice");
    assert!(m.check_worker(w, WorkerMsg::Conn).is_ok());
    assert!(
        m.check_worker(99, WorkerMsg::Pong).is_err(),
        "unknown worker"
    );
    let a = m.handle(Event::Violation(Who::Worker(w), "x".into()), t);
    assert_eq!(a.first(), Some(&Action::Kill(w)));
}

#[test]
fn wedged_and_stalled_workers_are_replaced() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    let a = m.handle(Event::Tick, t + WEDGED_AFTER + Duration::from_secs(1));
    assert!(a.contains(&Action::Kill(ids[0])));
    let (mut m, ids) = serving(1, t);
    let a = m.handle(
        Event::WorkerPong {
            worker: ids[0],
            scans: 1,
            found: 0,
            errors: 0,
            healthy: false,
        },
        t,
    );
    assert_eq!(a.first(), Some(&Action::Kill(ids[0])));
}

#[test]
fn a_retiring_worker_drains_and_its_tenant_gets_another() {
    let t = Instant::now();
    let (mut m, ids) = serving(1, t);
    m.handle(Event::Want(A), t);
    let retire = || Event::WorkerRetire(ids[0], RetireReason::ScanOverrun);
    let a = m.handle(retire(), t);
    assert_eq!(drains(&a), vec![ids[0]]);
    // It may say it again while it drains (it drains itself): nothing more.
    assert!(m.check_worker(ids[0], WorkerMsg::Retire).is_ok());
    assert!(drains(&m.handle(retire(), t)).is_empty());
    assert!(m.check_worker(ids[0], WorkerMsg::Conn).is_ok());
}

/// A machine serving an engine that took 1,000 MiB at its peak, with the
/// memory check on (64 MiB headroom, first retry after 30 s).
fn serving_with_memory_check(t: Instant) -> Machine {
    let mut s = settings(1);
    s.memory = Some(MemoryCheck {
        headroom: 64 << 20,
        retry: Duration::from_secs(30),
    });
    let mut m = Machine::new(s);
    m.handle(Event::Start, t);
    let mut big = ready();
    big.load_peak_kib = 1000 << 10;
    let a = m.handle(Event::ZygoteReady(1, big), t);
    for (_, w) in forks(&a) {
        m.handle(Event::WorkerHello(w), t);
    }
    m
}

fn available(mib: u64) -> super::headroom::Reading {
    super::headroom::Reading {
        mem_available: Some(mib << 20),
        cgroups: Vec::new(),
    }
}

fn deferred(a: &[Action]) -> Option<Duration> {
    a.iter().find_map(|x| match x {
        Action::Notify(Note::ReloadDeferred(_, retry)) => Some(*retry),
        _ => None,
    })
}

#[test]
fn a_reload_measures_memory_first_and_loads_when_there_is_room() {
    let t = Instant::now();
    let mut m = serving_with_memory_check(t);
    assert_eq!(
        m.handle(Event::Reload("RELOAD command"), t),
        vec![Action::MeasureMemory]
    );
    // A second trigger while the reading is on its way: merged.
    assert!(m.handle(Event::Reload("SIGHUP"), t).is_empty());
    let a = m.handle(Event::Memory(available(2000)), t);
    assert!(a.contains(&Action::SpawnZygote(2)), "{a:?}");
    assert!(a.contains(&Action::Notify(Note::Reloading(ReloadTrigger::Command))));
    assert!(m.reload_deferred().is_none());
}

#[test]
fn without_headroom_the_old_engine_serves_and_the_reload_is_retried_with_back_off() {
    let t = Instant::now();
    let mut m = serving_with_memory_check(t);
    m.handle(Event::Reload("database.self-check"), t);
    // 1,000 MiB engine + 64 MiB headroom; 900 MiB available.
    let a = m.handle(Event::Memory(available(900)), t);
    assert_eq!(deferred(&a), Some(Duration::from_secs(30)));
    assert!(
        !a.iter().any(|x| matches!(x, Action::SpawnZygote(_))),
        "{a:?}"
    );
    let why = m.reload_deferred().expect("deferred").clone();
    assert_eq!((why.need, why.available), (1064 << 20, 900 << 20));
    // Workers keep serving: nothing drains, nothing is killed.
    assert!(m.serving().count() >= 1);
    // Not before the retry time.
    assert!(!m
        .handle(Event::Tick, t + Duration::from_secs(29))
        .contains(&Action::MeasureMemory));
    let a = m.handle(Event::Tick, t + Duration::from_secs(30));
    assert!(a.contains(&Action::MeasureMemory), "{a:?}");
    // Still short: the wait doubles (30, 60, 120, 240, 480, then stays).
    let mut now = t + Duration::from_secs(30);
    for want in [60, 120, 240, 480, 480] {
        let a = m.handle(Event::Memory(available(900)), now);
        assert_eq!(deferred(&a), Some(Duration::from_secs(want)));
        now += Duration::from_secs(want);
        assert!(m.handle(Event::Tick, now).contains(&Action::MeasureMemory));
    }
    // Room at last: the reload runs, the deferral ends.
    let a = m.handle(Event::Memory(available(4000)), now);
    assert!(a.contains(&Action::SpawnZygote(2)), "{a:?}");
    assert!(m.reload_deferred().is_none());
}

#[test]
fn a_new_trigger_checks_a_deferred_reload_again_at_once() {
    let t = Instant::now();
    let mut m = serving_with_memory_check(t);
    m.handle(Event::Reload("SIGHUP"), t);
    m.handle(Event::Memory(available(100)), t);
    assert!(m.reload_deferred().is_some());
    assert_eq!(
        m.handle(Event::Reload("RELOAD command"), t + Duration::from_secs(1)),
        vec![Action::MeasureMemory]
    );
    let a = m.handle(Event::Memory(available(100)), t + Duration::from_secs(1));
    assert_eq!(
        deferred(&a),
        Some(Duration::from_secs(60)),
        "one more attempt"
    );
    // Stopping forgets it.
    m.handle(Event::Stop("SIGTERM"), t + Duration::from_secs(2));
    assert!(m.reload_deferred().is_none());
    assert!(!m
        .handle(Event::Tick, t + Duration::from_secs(3600))
        .contains(&Action::MeasureMemory));
}

#[test]
fn an_engine_of_unknown_size_or_the_check_off_reloads_at_once() {
    let t = Instant::now();
    // Check off.
    let (mut m, _) = serving(1, t);
    assert!(m
        .handle(Event::Reload("SIGHUP"), t)
        .contains(&Action::SpawnZygote(2)));
    // Check on, but the engine holder reported no size.
    let mut s = settings(1);
    s.memory = Some(MemoryCheck {
        headroom: 0,
        retry: Duration::from_secs(30),
    });
    let mut m = Machine::new(s);
    m.handle(Event::Start, t);
    m.handle(Event::ZygoteReady(1, ready()), t);
    assert!(m
        .handle(Event::Reload("SIGHUP"), t)
        .contains(&Action::SpawnZygote(2)));
}

#[test]
fn a_client_whose_workers_keep_retiring_has_at_most_two_draining() {
    let t = Instant::now();
    let (mut m, _) = serving(1, t);
    let mut drained = Vec::new();
    let mut killed = Vec::new();
    // Workers forking (standbys and the client's): each says hello when
    // the test gets to it.
    let mut forking: Vec<WorkerId> = Vec::new();
    for round in 0..5 {
        let now = t + Duration::from_millis(round * 10);
        // The client's next connection gets a worker (a standby, or a fork
        // once it says hello); it says it retires.
        let for_a = |a: &[Action]| bound(a).into_iter().find(|(_, t)| *t == A).map(|(w, _)| w);
        let mut w = None;
        for _ in 0..5 {
            let a = m.handle(Event::Want(A), now);
            forking.extend(forks(&a).into_iter().map(|(_, w)| w));
            w = w.or(for_a(&a));
            for fork in std::mem::take(&mut forking) {
                let h = m.handle(Event::WorkerHello(fork), now);
                forking.extend(forks(&h).into_iter().map(|(_, w)| w));
                w = w.or(for_a(&h));
            }
            if w.is_some() {
                break;
            }
        }
        let w = w.expect("a worker for the client");
        let a = m.handle(Event::WorkerRetire(w, RetireReason::ScanOverrun), now);
        drained.extend(drains(&a));
        if a.contains(&Action::Kill(w)) {
            killed.push(w);
        }
        forking.extend(forks(&a).into_iter().map(|(_, w)| w));
    }
    // Two drain (each within limits.drain-timeout); the others are ended
    // at once.
    assert_eq!(drained.len(), MAX_DRAINING_PER_TENANT, "{drained:?}");
    assert_eq!(killed.len(), 3, "{killed:?}");
    let draining = m
        .workers
        .values()
        .filter(|x| x.state == WState::Draining && x.tenant == Some(A))
        .count();
    assert_eq!(draining, MAX_DRAINING_PER_TENANT);
}
