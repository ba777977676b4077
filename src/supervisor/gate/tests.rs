//! The gate's rules, one test each, driven with invented events and times.

use super::*;

const WAIT: Duration = Duration::from_secs(30);
const LIFETIME: Duration = Duration::from_secs(3600);
const IDLE_WORKER: Duration = Duration::from_secs(600);
const CLOSE_GRACE: Duration = Duration::from_secs(150);
const SERVICE_UID: u32 = 999;

fn settings() -> Settings {
    let all = crate::policy::commands::all_words();
    let tcp: Vec<String> = crate::policy::commands::TCP_DEFAULT
        .iter()
        .map(|s| s.to_string())
        .collect();
    Settings {
        caps: Caps {
            max_connections: 20,
            unix_reserve: 4,
            admin_reserve: 2,
            per_client: 5,
            per_aggregate: 64,
        },
        prefixes: Prefixes::default(),
        isolation: Isolation::Identity,
        // Three for clients, one kept for administrators.
        max_workers: 4,
        max_threads: 10,
        leases: shares::LeaseSettings {
            budget: 64 << 20,
            tenant_cap: 32 << 20,
            base: 1 << 20,
            workers: 4,
        },
        wait_for_worker: WAIT,
        lifetime: LIFETIME,
        idle_worker: IDLE_WORKER,
        close_grace: CLOSE_GRACE,
        active_linger: Duration::from_secs(10),
        service_uid: Some(SERVICE_UID),
        admins: Admins::new([], []),
        unix: Profile::new(ListenerKind::Unix, &all),
        tcp: Profile::new(ListenerKind::Tcp, &tcp),
    }
}

struct G {
    gate: Gate,
    t: Instant,
    next: ConnId,
}

fn user(uid: u32) -> Arc<Identity> {
    Arc::new(Identity::Unix {
        uid,
        gid: uid,
        groups: vec![uid],
        pid: Some(4000 + uid as i32),
    })
}

fn tcp(addr: &str) -> Arc<Identity> {
    Arc::new(Identity::tcp(format!("{addr}:40000").parse().unwrap()))
}

fn hands(a: &[Action]) -> Vec<(ConnId, WorkerId)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Hand { id, worker, .. } => Some((*id, *worker)),
            _ => None,
        })
        .collect()
}

fn needs(a: &[Action]) -> Vec<Tenant> {
    a.iter()
        .filter_map(|x| match x {
            Action::NeedWorker(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn violations(a: &[Action]) -> usize {
    a.iter()
        .filter(|x| matches!(x, Action::Violation { .. }))
        .count()
}

impl G {
    fn new() -> G {
        G::with(settings())
    }

    fn with(s: Settings) -> G {
        G {
            gate: Gate::new(s, None),
            t: Instant::now(),
            next: 1,
        }
    }

    fn at(&mut self, secs: u64) -> Instant {
        self.t + Duration::from_secs(secs)
    }

    fn on(&mut self, e: Event) -> Vec<Action> {
        let now = self.t;
        self.gate.handle(e, now)
    }

    fn later(&mut self, secs: u64, e: Event) -> Vec<Action> {
        let now = self.at(secs);
        self.gate.handle(e, now)
    }

    fn accept_as(&mut self, identity: Arc<Identity>, own: bool) -> (ConnId, Vec<Action>) {
        let id = self.next;
        self.next += 1;
        let listener = match *identity {
            Identity::Unix { .. } => ListenerKind::Unix,
            Identity::Tcp { .. } => ListenerKind::Tcp,
        };
        let a = self.on(Event::Accepted {
            id,
            listener,
            name: Arc::from(listener.as_str()),
            identity,
            own_process: own,
        });
        (id, a)
    }

    fn accept(&mut self, identity: Arc<Identity>) -> (ConnId, Vec<Action>) {
        self.accept_as(identity, false)
    }

    fn up(&mut self, worker: WorkerId, tenant: Tenant) -> Vec<Action> {
        self.on(Event::WorkerUp { worker, tenant })
    }

    fn report(&mut self, w: WorkerId, r: Report) -> Vec<Action> {
        self.on(Event::Report(w, r))
    }
}

#[test]
fn connections_wait_for_a_worker_of_their_own_client() {
    let mut g = G::new();
    let (a, acts) = g.accept(user(1000));
    assert_eq!(needs(&acts), vec![Tenant::Uid(1000)]);
    assert!(hands(&acts).is_empty());
    // A second connection of the same user asks for nothing more.
    let (b, acts) = g.accept(user(1000));
    assert!(needs(&acts).is_empty());
    // The worker comes: both go to it, nowhere else.
    let acts = g.up(7, Tenant::Uid(1000));
    assert_eq!(hands(&acts), vec![(a, 7), (b, 7)]);
    assert!(acts.contains(&Action::StreamGrant {
        worker: 7,
        bytes: 1 << 20
    }));
    // The next one goes straight to it.
    let (c, acts) = g.accept(user(1000));
    assert_eq!(hands(&acts), vec![(c, 7)]);
}

#[test]
fn a_worker_never_holds_two_clients() {
    let mut g = G::new();
    g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    // Another local user, root, and a TCP client each need their own.
    let (_, a) = g.accept(user(1001));
    assert_eq!(needs(&a), vec![Tenant::Uid(1001)]);
    assert!(hands(&a).is_empty());
    let (_, a) = g.accept(user(0));
    assert_eq!(needs(&a), vec![Tenant::Uid(0)]);
    let (_, a) = g.accept(user(1002));
    assert_eq!(needs(&a), vec![Tenant::Uid(1002)]);
    let (_, a) = g.accept(tcp("127.0.0.1"));
    // max-workers is 4 and worker 1 is busy: the TCP client queues.
    assert!(needs(&a).is_empty() && hands(&a).is_empty());
    // Every TCP client shares the network worker, never a local one.
    let a = g.up(2, Tenant::Uid(0));
    assert!(hands(&a).iter().all(|(_, w)| *w == 2));
}

#[test]
fn each_connection_has_its_own_worker_when_isolated() {
    let mut s = settings();
    s.isolation = Isolation::Connection;
    let mut g = G::with(s);
    let (a, acts) = g.accept(tcp("127.0.0.1"));
    assert_eq!(needs(&acts), vec![Tenant::Connection(a)]);
    let (b, acts) = g.accept(tcp("192.0.2.1"));
    assert_eq!(needs(&acts), vec![Tenant::Connection(b)]);
    assert_eq!(hands(&g.up(1, Tenant::Connection(a))), vec![(a, 1)]);
    assert_eq!(hands(&g.up(2, Tenant::Connection(b))), vec![(b, 2)]);
    // Its worker goes with it.
    let acts = g.report(1, Report::Closed(a));
    assert!(acts.contains(&Action::Forget(a)));
    assert!(acts.contains(&Action::ReleaseWorker(1)));
}

#[test]
fn the_daemons_own_processes_and_its_service_user_are_refused() {
    let mut g = G::new();
    let (_, a) = g.accept_as(user(1000), true);
    assert!(matches!(
        a.as_slice(),
        [Action::Refuse {
            why: Refusal::OwnProcess,
            ..
        }]
    ));
    let (_, a) = g.accept(user(SERVICE_UID));
    assert!(matches!(
        a.as_slice(),
        [Action::Refuse {
            why: Refusal::ServiceUser,
            ..
        }]
    ));
    assert!(g.gate.is_empty());
}

#[test]
fn a_hang_up_revokes_at_once() {
    let mut g = G::new();
    let (id, _) = g.accept(user(0));
    g.up(1, Tenant::Uid(0));
    g.report(1, Report::Active(id));
    let a = g.on(Event::HungUp(id));
    assert_eq!(a, vec![Action::Revoke(id)]);
    // RELOAD "for" the departed root client: nothing runs, no violation
    // (an honest worker may race with the hang-up).
    let a = g.report(
        1,
        Report::Admin {
            conn: id,
            command: AdminCommand::Reload,
        },
    );
    assert!(a.is_empty(), "{a:?}");
    // It no longer counts against root's share.
    assert_eq!(g.gate.counts().open, 0);
    // The worker closes it: forgotten.
    assert!(g
        .report(1, Report::Closed(id))
        .contains(&Action::Forget(id)));
}

#[test]
fn a_waiting_connection_whose_client_left_is_dropped() {
    let mut g = G::new();
    let (id, _) = g.accept(user(1000));
    let a = g.on(Event::HungUp(id));
    assert_eq!(a, vec![Action::Revoke(id), Action::Forget(id)]);
    // The worker comes later and gets nothing.
    assert!(hands(&g.up(1, Tenant::Uid(1000))).is_empty());
}

#[test]
fn workers_may_only_name_their_own_connections() {
    let mut g = G::new();
    let (mine, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    let (theirs, _) = g.accept(user(1001));
    g.up(2, Tenant::Uid(1001));
    for r in [
        Report::Active(theirs),
        Report::Closed(theirs),
        Report::Found {
            conn: theirs,
            virus: "x".into(),
            target: b"/x".to_vec(),
        },
        Report::Admin {
            conn: theirs,
            command: AdminCommand::Shutdown,
        },
        Report::Active(999),
        Report::Closed(0),
    ] {
        assert_eq!(violations(&g.report(1, r.clone())), 1, "{r:?}");
    }
    assert_eq!(violations(&g.report(1, Report::Active(mine))), 0);
    // A finished one is a violation too: an honest worker never names it.
    g.report(1, Report::Closed(mine));
    assert_eq!(violations(&g.report(1, Report::Closed(mine))), 1);
}

#[test]
fn administrative_commands_follow_the_recorded_identity() {
    let mut s = settings();
    s.admins = Admins::new([1234], []);
    let mut g = G::with(s);
    let (root, _) = g.accept(user(0));
    g.up(1, Tenant::Uid(0));
    let (admin, _) = g.accept(user(1234));
    g.up(2, Tenant::Uid(1234));
    let (plain, _) = g.accept(user(1000));
    g.up(3, Tenant::Uid(1000));
    let (net, _) = g.accept(tcp("127.0.0.1"));
    let shutdown = |conn| Report::Admin {
        conn,
        command: AdminCommand::Shutdown,
    };
    assert!(matches!(
        g.report(1, shutdown(root)).as_slice(),
        [Action::Admin {
            command: AdminCommand::Shutdown,
            ..
        }]
    ));
    assert!(matches!(
        g.report(2, shutdown(admin)).as_slice(),
        [Action::Admin { .. }]
    ));
    assert_eq!(violations(&g.report(3, shutdown(plain))), 1);
    // TCP never: the default profile has no SHUTDOWN (the connection waits
    // for a worker here; give it one by releasing an idle one first).
    let _ = net;
}

#[test]
fn maintenance_is_for_administrators_on_unix() {
    let mut s = settings();
    s.admins = Admins::new([1234], []);
    let mut g = G::with(s);
    let (admin, _) = g.accept(user(1234));
    g.up(1, Tenant::Uid(1234));
    let (plain, _) = g.accept(user(1000));
    g.up(2, Tenant::Uid(1000));
    let (net, _) = g.accept(tcp("127.0.0.1"));
    g.up(3, Tenant::Network);
    let maint = |conn, on| Report::Admin {
        conn,
        command: AdminCommand::Maintenance(on),
    };
    for on in [Some(true), Some(false), None] {
        assert!(
            matches!(
                g.report(1, maint(admin, on)).as_slice(),
                [Action::Admin { command: AdminCommand::Maintenance(x), .. }] if *x == on
            ),
            "{on:?}"
        );
    }
    assert_eq!(violations(&g.report(2, maint(plain, Some(true)))), 1);
    assert_eq!(violations(&g.report(3, maint(net, Some(true)))), 1);
}

#[test]
fn waiting_and_old_connections_are_closed_whatever_the_worker_does() {
    let mut g = G::new();
    let (waiting, _) = g.accept(user(1000));
    let a = g.later(WAIT.as_secs(), Event::Tick);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Evict {
            id,
            why: Eviction::NoWorker,
            ..
        } if *id == waiting
    )));
    assert!(a.contains(&Action::Forget(waiting)));
    let (old, _) = g.accept(user(1001));
    g.up(1, Tenant::Uid(1001));
    g.report(1, Report::Active(old));
    let a = g.later(LIFETIME.as_secs() + 1, Event::Tick);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Evict {
            id,
            why: Eviction::Lifetime,
            ..
        } if *id == old
    )));
    // Evicted, not forgotten: the worker still says Closed.
    assert!(!a.contains(&Action::Forget(old)));
}

#[test]
fn idle_workers_make_room_for_new_clients() {
    let mut g = G::new();
    for (w, uid) in [(1, 1000), (2, 1001), (3, 1002)] {
        let (id, _) = g.accept(user(uid));
        g.up(w, Tenant::Uid(uid));
        g.report(w, Report::Closed(id));
    }
    // Three tenants have workers (the cap); uid 1000's is idle the longest.
    let (_, a) = g.accept(user(1003));
    assert!(a.contains(&Action::ReleaseWorker(1)), "{a:?}");
    assert_eq!(needs(&a), vec![Tenant::Uid(1003)]);
}

#[test]
fn without_an_idle_worker_a_new_client_queues_until_one_is() {
    let mut g = G::new();
    let mut held = Vec::new();
    for (w, uid) in [(1, 1000), (2, 1001), (3, 1002)] {
        let (id, _) = g.accept(user(uid));
        g.up(w, Tenant::Uid(uid));
        // A connection that sent a command keeps its worker.
        g.report(w, Report::Active(id));
        held.push((w, id));
    }
    let (_, a) = g.accept(user(1003));
    assert!(needs(&a).is_empty());
    let (w, id) = held[1];
    let a = g.report(w, Report::Closed(id));
    assert!(a.contains(&Action::ReleaseWorker(w)), "{a:?}");
    assert_eq!(needs(&a), vec![Tenant::Uid(1003)]);
}

#[test]
fn idle_workers_are_released_after_a_while() {
    let mut g = G::new();
    let (id, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.report(1, Report::Closed(id));
    assert!(!g.later(60, Event::Tick).contains(&Action::ReleaseWorker(1)));
    assert!(g
        .later(IDLE_WORKER.as_secs(), Event::Tick)
        .contains(&Action::ReleaseWorker(1)));
}

#[test]
fn threads_are_shared_between_clients_with_connections() {
    let mut g = G::new();
    g.accept(tcp("127.0.0.1"));
    let a = g.up(1, Tenant::Network);
    assert!(a.contains(&Action::Threads {
        worker: 1,
        limit: 10
    }));
    let (_, mut a) = g.accept(user(1000));
    a.extend(g.up(2, Tenant::Uid(1000)));
    assert!(a.contains(&Action::Threads {
        worker: 1,
        limit: 5
    }));
    assert!(a.contains(&Action::Threads {
        worker: 2,
        limit: 5
    }));
}

#[test]
fn the_selftest_takes_no_share_of_a_busy_clients_threads() {
    let mut g = G::new();
    g.accept(user(1000));
    let a = g.up(1, Tenant::Uid(1000));
    assert!(a.contains(&Action::Threads {
        worker: 1,
        limit: 10
    }));
    // The self-test's connection, as the executor hands it over.
    let id = g.next;
    g.next += 1;
    let mut a = g.on(Event::Accepted {
        id,
        listener: ListenerKind::Tcp,
        name: Arc::from(crate::ipc::observe::SELFTEST_LISTENER),
        identity: Arc::new(Identity::tcp("[::]:0".parse().unwrap())),
        own_process: false,
    });
    let tenant = needs(&a)[0];
    a.extend(g.up(2, tenant));
    a.extend(g.report(2, Report::Closed(id)));
    a.extend(g.later(1, Event::Tick));
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Threads { worker: 1, .. })),
        "the client keeps every thread: {a:?}"
    );
    // A client's connection over TCP does take a share.
    let (_, a) = g.accept(tcp("192.0.2.1"));
    assert!(a.contains(&Action::Threads {
        worker: 1,
        limit: 5
    }));
}

#[test]
fn the_selftest_is_never_refused_nor_closed_to_make_room() {
    let mut s = settings();
    s.caps.max_connections = 4;
    s.caps.unix_reserve = 0;
    s.caps.admin_reserve = 0;
    s.caps.per_client = 4;
    let mut g = G::with(s);
    let selftest = |g: &mut G| {
        let id = g.next;
        g.next += 1;
        let a = g.on(Event::Accepted {
            id,
            listener: ListenerKind::Tcp,
            name: Arc::from(crate::ipc::observe::SELFTEST_LISTENER),
            identity: Arc::new(Identity::tcp("[::]:0".parse().unwrap())),
            own_process: false,
        });
        (id, a)
    };
    // The table full of one client's idle connections: the self-test is
    // admitted, and closes none of them.
    for _ in 0..4 {
        g.accept(tcp("192.0.2.1"));
    }
    let (st, a) = selftest(&mut g);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Refuse { .. } | Action::Evict { .. })),
        "{a:?}"
    );
    // A newcomer makes room by closing a client's idle connection, never
    // the self-test's.
    let (_, a) = g.accept(tcp("198.51.100.1"));
    assert!(
        !a.iter().any(|x| match x {
            Action::Evict { id, .. } => *id == st,
            _ => false,
        }),
        "{a:?}"
    );
}

#[test]
fn stream_memory_is_leased_per_client() {
    let mut g = G::new();
    g.accept(tcp("127.0.0.1"));
    g.up(1, Tenant::Network);
    let a = g.report(1, Report::StreamWant(60 << 20));
    assert_eq!(
        a,
        vec![Action::StreamGrant {
            worker: 1,
            bytes: 32 << 20
        }]
    );
}

#[test]
fn a_worker_that_goes_takes_its_connections_with_it() {
    let mut g = G::new();
    let (a1, _) = g.accept(user(1000));
    let (a2, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    let acts = g.on(Event::WorkerGone(1));
    for id in [a1, a2] {
        assert!(acts.contains(&Action::Forget(id)));
    }
    assert!(g.gate.is_empty());
    // Its client's next connection asks for a new worker.
    let (_, acts) = g.accept(user(1000));
    assert_eq!(needs(&acts), vec![Tenant::Uid(1000)]);
}

#[test]
fn a_draining_worker_gets_no_new_connection() {
    let mut g = G::new();
    g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.on(Event::WorkerDraining(1));
    let (id, a) = g.accept(user(1000));
    assert!(hands(&a).is_empty());
    assert_eq!(needs(&a), vec![Tenant::Uid(1000)]);
    assert_eq!(hands(&g.up(2, Tenant::Uid(1000))), vec![(id, 2)]);
}

#[test]
fn stopping_refuses_newcomers_and_drops_the_waiting() {
    let mut g = G::new();
    let (waiting, _) = g.accept(user(1000));
    let a = g.on(Event::Stopping);
    assert!(a.contains(&Action::Forget(waiting)));
    let (_, a) = g.accept(user(1000));
    assert!(matches!(
        a.as_slice(),
        [Action::Refuse {
            why: Refusal::Stopping,
            ..
        }]
    ));
}

#[test]
fn exit_when_idle_counts_from_the_last_connection() {
    let mut g = G {
        gate: Gate::new(settings(), Some(Duration::from_secs(5))),
        t: Instant::now(),
        next: 1,
    };
    let (id, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    assert!(!g.later(10, Event::Tick).contains(&Action::IdleExit));
    let t = g.at(10);
    g.gate.handle(Event::Report(1, Report::Closed(id)), t);
    assert!(!g.later(14, Event::Tick).contains(&Action::IdleExit));
    assert!(g.later(15, Event::Tick).contains(&Action::IdleExit));
}

#[test]
fn self_tests_do_not_keep_an_idle_daemon_alive() {
    let mut g = G {
        gate: Gate::new(settings(), Some(Duration::from_secs(5))),
        t: Instant::now(),
        next: 1,
    };
    let (id, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    let t = g.at(1);
    g.gate.handle(Event::Report(1, Report::Closed(id)), t);
    // A self-test every second, each closed before the next.
    for s in 2..6 {
        let st = g.next;
        g.next += 1;
        let t = g.at(s);
        let a = g.gate.handle(
            Event::Accepted {
                id: st,
                listener: ListenerKind::Tcp,
                name: Arc::from(crate::ipc::observe::SELFTEST_LISTENER),
                identity: Arc::new(Identity::tcp("[::]:0".parse().unwrap())),
                own_process: false,
            },
            t,
        );
        assert!(!a.contains(&Action::IdleExit));
        // The self-test's worker (the network's) starts with the first.
        if let Some(&tenant) = needs(&a).first() {
            g.up(2, tenant);
        }
        let a = g.later(s, Event::Report(2, Report::Closed(st)));
        assert!(!a.contains(&Action::IdleExit));
    }
    assert!(g.later(6, Event::Tick).contains(&Action::IdleExit));
}

#[test]
fn a_flood_from_one_network_cannot_lock_others_out() {
    let mut g = G::new();
    g.accept(tcp("10.0.0.1"));
    g.up(1, Tenant::Network);
    // One /24 holds its share (5) of busy sessions...
    let mut flood = Vec::new();
    for i in 0..4 {
        let (id, _) = g.accept(tcp(&format!("10.0.0.{}", i + 2)));
        flood.push(id);
    }
    for id in 1..=5 {
        g.report(1, Report::Active(id));
    }
    let (_, a) = g.accept(tcp("10.0.0.99"));
    assert!(matches!(
        a.as_slice(),
        [Action::Refuse {
            why: Refusal::Limit(admission::PER_CLIENT_KEY),
            ..
        }]
    ));
    // ...and another network still gets in.
    let (other, a) = g.accept(tcp("10.0.1.1"));
    assert_eq!(hands(&a), vec![(other, 1)]);
}

#[test]
fn only_an_administrator_sees_every_workers_tasks() {
    let mut g = G::new();
    let (root, _) = g.accept(user(0));
    g.up(1, Tenant::Uid(0));
    let (plain, _) = g.accept(user(1000));
    g.up(2, Tenant::Uid(1000));
    // A plain user's worker asking for everyone's file names is a
    // violation: an honest worker asks only for an administrator.
    assert_eq!(
        violations(&g.report(2, Report::StatsTasks { conn: plain })),
        1
    );
    let a = g.report(1, Report::StatsTasks { conn: root });
    let Some(Action::QueryTasks { seq, workers }) = a.first().cloned() else {
        panic!("{a:?}")
    };
    assert_eq!(workers, vec![1, 2]);
    let task = |f: &str| TaskInfo {
        command: "SCAN".into(),
        elapsed_us: 1,
        filename: f.into(),
    };
    assert!(g
        .report(
            2,
            Report::TaskList {
                seq,
                tasks: vec![task("/home/u/a")],
                omitted: 0,
                pool: PoolCounts {
                    threads: 2,
                    busy: 1,
                    queued: 3
                },
            }
        )
        .is_empty());
    let a = g.report(
        1,
        Report::TaskList {
            seq,
            tasks: vec![task("/root/b")],
            omitted: 1,
            pool: PoolCounts {
                threads: 2,
                busy: 1,
                queued: 3,
            },
        },
    );
    assert_eq!(
        a,
        vec![Action::StatsTasks {
            worker: 1,
            conn: root,
            tasks: vec![task("/home/u/a"), task("/root/b")],
            omitted: 1,
            pool: PoolCounts {
                threads: 4,
                busy: 2,
                queued: 6
            },
        }]
    );
    // An answer to a query never asked is a violation; a late one is not.
    assert_eq!(
        violations(&g.report(
            2,
            Report::TaskList {
                seq: 99,
                tasks: vec![],
                omitted: 0,
                pool: PoolCounts {
                    threads: 2,
                    busy: 1,
                    queued: 3
                },
            }
        )),
        1
    );
    assert!(g
        .report(
            2,
            Report::TaskList {
                seq,
                tasks: vec![],
                omitted: 0,
                pool: PoolCounts {
                    threads: 2,
                    busy: 1,
                    queued: 3
                },
            }
        )
        .is_empty());
}

#[test]
fn a_worker_that_does_not_answer_does_not_hold_up_stats() {
    let mut g = G::new();
    let (root, _) = g.accept(user(0));
    g.up(1, Tenant::Uid(0));
    g.accept(user(1000));
    g.up(2, Tenant::Uid(1000));
    let a = g.report(1, Report::StatsTasks { conn: root });
    let Some(Action::QueryTasks { seq, .. }) = a.first().cloned() else {
        panic!("{a:?}")
    };
    g.report(
        1,
        Report::TaskList {
            seq,
            tasks: vec![],
            omitted: 0,
            pool: PoolCounts {
                threads: 2,
                busy: 1,
                queued: 3,
            },
        },
    );
    let later = g.t + TASKS_WITHIN;
    let a = g.gate.handle(Event::Tick, later);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::StatsTasks { worker: 1, .. })));
}

#[test]
fn the_selftests_detection_runs_no_virus_event() {
    let mut g = G::new();
    let id = g.next;
    g.next += 1;
    let name: Arc<str> = Arc::from(crate::ipc::observe::SELFTEST_LISTENER);
    // As the executor hands it over: a TCP connection from [::]:0.
    let a = g.on(Event::Accepted {
        id,
        listener: ListenerKind::Tcp,
        name,
        identity: Arc::new(Identity::tcp("[::]:0".parse().unwrap())),
        own_process: false,
    });
    assert!(!a.iter().any(|x| matches!(x, Action::Admitted { .. })));
    let tenant = needs(&a)[0];
    // A worker of its own, never the remote clients' shared one.
    assert_eq!(tenant, Tenant::Connection(id));
    assert_eq!(hands(&g.up(1, tenant)), vec![(id, 1)]);
    let found = |id| Report::Found {
        conn: id,
        virus: "Eicar-Signature".into(),
        target: b"stream".to_vec(),
    };
    let a = g.report(1, found(id));
    assert!(!a.iter().any(|x| matches!(x, Action::VirusEvent { .. })));
    assert_eq!(violations(&a), 0);
    // A client's detection does run it.
    let (c, a) = g.accept(tcp("192.0.2.1"));
    assert!(a.contains(&Action::Admitted {
        name: Arc::from("tcp")
    }));
    g.up(2, Tenant::Network);
    let a = g.report(2, found(c));
    assert!(a.iter().any(|x| matches!(x, Action::VirusEvent { .. })));
}

fn releases(a: &[Action]) -> Vec<WorkerId> {
    a.iter()
        .filter_map(|x| match x {
            Action::ReleaseWorker(w) => Some(*w),
            _ => None,
        })
        .collect()
}

fn evicted(a: &[Action]) -> Vec<(ConnId, Eviction)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Evict { id, why, .. } => Some((*id, *why)),
            _ => None,
        })
        .collect()
}

#[test]
fn administrators_always_find_a_worker() {
    // As many identities as there are worker slots, each holding one idle
    // connection: the last of them waits, since one slot is kept.
    let mut g = G::new();
    for (w, uid) in [(1, 1000), (2, 1001), (3, 1002)] {
        let (_, a) = g.accept(user(uid));
        assert_eq!(needs(&a), vec![Tenant::Uid(uid)]);
        g.up(w, Tenant::Uid(uid));
    }
    let (_, a) = g.accept(user(1003));
    assert!(needs(&a).is_empty(), "{a:?}");
    assert!(releases(&a).is_empty(), "{a:?}");
    // Root gets the slot kept for administrators at once, and its RELOAD
    // runs.
    let (root, a) = g.accept(user(0));
    assert_eq!(needs(&a), vec![Tenant::Uid(0)]);
    let a = g.up(4, Tenant::Uid(0));
    assert_eq!(hands(&a), vec![(root, 4)]);
    g.report(4, Report::Active(root));
    let a = g.report(
        4,
        Report::Admin {
            conn: root,
            command: AdminCommand::Reload,
        },
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Admin { id, .. } if *id == root)),
        "{a:?}"
    );
    // Not a fifth worker for clients: uid 1003 still waits for an idle one.
    assert!(needs(&g.on(Event::Tick)).is_empty());
}

#[test]
fn the_slot_kept_for_administrators_is_everyones_with_one_worker() {
    let mut g = G::with(Settings {
        max_workers: 1,
        ..settings()
    });
    let (_, a) = g.accept(user(1000));
    assert_eq!(needs(&a), vec![Tenant::Uid(1000)]);
}

#[test]
fn an_idle_tenant_makes_room_and_a_busy_one_never_does() {
    let mut g = G::new();
    // uid 1000 scans; 1001 and 1002 hold connections that never sent a
    // command, 1001's handed first.
    let (busy, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.report(1, Report::Active(busy));
    let (idle1, _) = g.accept(user(1001));
    g.up(2, Tenant::Uid(1001));
    g.accept(user(1002));
    g.later(
        1,
        Event::WorkerUp {
            worker: 3,
            tenant: Tenant::Uid(1002),
        },
    );
    // A newcomer: a connection handed a moment ago may still be sending
    // its command, so it waits...
    let t = g.t;
    g.t = t + Duration::from_secs(1);
    let (_, a) = g.accept(user(1003));
    assert!(releases(&a).is_empty() && needs(&a).is_empty(), "{a:?}");
    // ... and gets the worker of the tenant idle the longest once its
    // connections were idle long enough; their idle connections close.
    let a = g.later(3, Event::Tick);
    assert_eq!(releases(&a), vec![2], "{a:?}");
    assert_eq!(evicted(&a), vec![(idle1, Eviction::Room)]);
    assert_eq!(needs(&a), vec![Tenant::Uid(1003)]);
    // The next newcomer takes uid 1002's.
    let t = g.t;
    g.t = t + Duration::from_secs(3);
    let (_, a) = g.accept(user(1004));
    assert_eq!(releases(&a), vec![3], "{a:?}");
    assert_eq!(needs(&a), vec![Tenant::Uid(1004)]);
    // The scan in progress keeps its worker however long others wait.
    let (_, a) = g.accept(user(1005));
    assert!(releases(&a).is_empty());
    for secs in [10, 100, 1000] {
        let a = g.later(secs, Event::Tick);
        assert!(!releases(&a).contains(&1), "{a:?}");
    }
}

#[test]
fn a_worker_that_keeps_a_revoked_connection_is_ended() {
    let mut g = G::new();
    let (id, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.report(1, Report::Active(id));
    assert!(g.on(Event::HungUp(id)).contains(&Action::Revoke(id)));
    let found = || Report::Found {
        conn: id,
        virus: "Eicar-Test-Signature".into(),
        target: b"stream".to_vec(),
    };
    // Within one scan's time it may still finish, and a detection counts.
    let a = g.report(1, found());
    assert!(a.iter().any(|x| matches!(x, Action::VirusEvent { .. })));
    let a = g.later(CLOSE_GRACE.as_secs() - 1, Event::Tick);
    assert_eq!(violations(&a), 0);
    // Past the grace without Closed: the worker is ended, once.
    let a = g.later(CLOSE_GRACE.as_secs(), Event::Tick);
    assert_eq!(violations(&a), 1, "{a:?}");
    assert_eq!(
        violations(&g.later(CLOSE_GRACE.as_secs() + 1, Event::Tick)),
        0
    );
    // And what it says for that connection no longer counts.
    let a = g.report(1, found());
    assert!(
        !a.iter().any(|x| matches!(x, Action::VirusEvent { .. })),
        "{a:?}"
    );
}

#[test]
fn a_worker_that_closes_a_revoked_connection_in_time_is_fine() {
    let mut g = G::new();
    let (id, _) = g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.report(1, Report::Active(id));
    // Closed by the gate (lifetime): the grace counts from then.
    let a = g.later(LIFETIME.as_secs(), Event::Tick);
    assert_eq!(evicted(&a), vec![(id, Eviction::Lifetime)]);
    let a = g.later(LIFETIME.as_secs() + CLOSE_GRACE.as_secs() - 1, Event::Tick);
    assert_eq!(violations(&a), 0);
    g.t += LIFETIME + CLOSE_GRACE - Duration::from_secs(1);
    let a = g.report(1, Report::Closed(id));
    assert!(a.contains(&Action::Forget(id)));
    assert_eq!(violations(&g.later(1000, Event::Tick)), 0);
}

#[test]
fn a_new_identity_gets_its_base_lease_whatever_others_hold() {
    const MIB: u64 = 1 << 20;
    let mut g = G::with(Settings {
        leases: shares::LeaseSettings::new(64 * MIB, 64 * MIB, 4),
        ..settings()
    });
    // One local user as two identities takes all it can.
    g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    g.accept(tcp("127.0.0.1"));
    g.up(2, Tenant::Network);
    g.report(1, Report::StreamWant(64 * MIB));
    g.report(2, Report::StreamWant(64 * MIB));
    // A newcomer's worker still starts with its base.
    g.accept(user(1001));
    let a = g.up(3, Tenant::Uid(1001));
    assert!(
        a.contains(&Action::StreamGrant {
            worker: 3,
            bytes: MIB
        }),
        "{a:?}"
    );
}

#[test]
fn a_connection_whose_client_has_spoken_is_not_closed_as_idle() {
    // One address, five connections allowed: four silent ones, then an
    // honest request whose command the kernel has received but its worker
    // has not reported yet.
    let mut g = G::new();
    let addr = "198.51.100.9";
    let silent: Vec<ConnId> = (0..4).map(|_| g.accept(tcp(addr)).0).collect();
    let (honest, _) = g.accept(tcp(addr));
    let spoke = |id: ConnId| id == honest;
    let now = g.t;
    let flood = |g: &mut G| {
        let id = g.next;
        g.next += 1;
        let a = g.gate.handle_hearing(
            Event::Accepted {
                id,
                listener: ListenerKind::Tcp,
                name: Arc::from("tcp"),
                identity: tcp(addr),
                own_process: false,
            },
            now,
            &spoke,
        );
        (id, a)
    };
    // Each newcomer of the flood closes a silent connection, the oldest
    // first, and never the one that spoke, although it is the oldest
    // left after four.
    let mut closed = Vec::new();
    for _ in 0..8 {
        let (_, a) = flood(&mut g);
        for (id, why) in evicted(&a) {
            assert_eq!(why, Eviction::Room);
            closed.push(id);
        }
    }
    assert!(!closed.contains(&honest), "{closed:?}");
    assert_eq!(closed[..4], silent[..], "the silent ones, oldest first");
    assert_eq!(closed.len(), 8);
    // Without asking the kernel, the oldest connection goes, spoken or not.
    let mut g = G::new();
    let (first, _) = g.accept(tcp(addr));
    for _ in 0..4 {
        g.accept(tcp(addr));
    }
    let (_, a) = g.accept(tcp(addr));
    assert_eq!(evicted(&a), vec![(first, Eviction::Room)]);
}

#[test]
fn a_client_whose_connections_all_spoke_gets_its_newcomer_refused() {
    let mut g = G::new();
    let addr = "198.51.100.10";
    for _ in 0..5 {
        g.accept(tcp(addr));
    }
    let now = g.t;
    let a = g.gate.handle_hearing(
        Event::Accepted {
            id: 99,
            listener: ListenerKind::Tcp,
            name: Arc::from("tcp"),
            identity: tcp(addr),
            own_process: false,
        },
        now,
        &|_| true,
    );
    assert!(evicted(&a).is_empty(), "{a:?}");
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Refuse {
                id: 99,
                why: Refusal::Limit(admission::PER_CLIENT_KEY),
                ..
            }
        )),
        "{a:?}"
    );
}

#[test]
fn a_connection_its_worker_could_not_take_waits_for_the_next_worker() {
    let mut g = G::new();
    g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    let (a, acts) = g.accept(user(1000));
    assert_eq!(hands(&acts), vec![(a, 1)]);
    // Worker 1's channel refused the socket (it died, or stopped reading
    // its channel). Nobody read the connection, so it is not closed; its
    // authority is taken back, worker 1 is released and another asked for.
    let acts = g.on(Event::Undeliverable(a));
    assert!(evicted(&acts).is_empty(), "{acts:?}");
    assert!(acts.contains(&Action::Retract(a)), "{acts:?}");
    assert_eq!(releases(&acts), vec![1]);
    assert_eq!(needs(&acts), vec![Tenant::Uid(1000)]);
    assert!(hands(&acts).is_empty());
    // Newcomers do not go to worker 1 either.
    let (b, acts) = g.accept(user(1000));
    assert!(hands(&acts).is_empty(), "{acts:?}");
    assert_eq!(g.gate.held_by(1), 1, "only the first, which it took");
    // The next worker gets both waiting connections.
    let acts = g.up(2, Tenant::Uid(1000));
    assert_eq!(hands(&acts), vec![(a, 2), (b, 2)]);
    // Worker 1's end closes only the connection it held.
    let acts = g.on(Event::WorkerGone(1));
    assert_eq!(evicted(&acts).len(), 1, "{acts:?}");
    assert!(needs(&acts).is_empty());
}

#[test]
fn an_undeliverable_connection_whose_client_left_is_closed() {
    let mut g = G::new();
    g.accept(user(1000));
    g.up(1, Tenant::Uid(1000));
    let (a, _) = g.accept(user(1000));
    g.on(Event::HungUp(a));
    let acts = g.on(Event::Undeliverable(a));
    assert!(acts.contains(&Action::Forget(a)), "{acts:?}");
}

#[test]
fn with_a_worker_per_connection_one_client_holds_at_most_its_share_of_workers() {
    // Eight slots, one kept for administrators: a client may hold three.
    let mut s = settings();
    s.isolation = Isolation::Connection;
    s.max_workers = 8;
    assert_eq!(client_worker_cap(8), 3);
    assert_eq!(client_worker_cap(4), 1);
    assert_eq!(client_worker_cap(1), 1);
    let mut g = G::with(s);
    let mut mine = Vec::new();
    for _ in 0..5 {
        let (id, acts) = g.accept(tcp("203.0.113.5"));
        mine.push((id, needs(&acts)));
    }
    let asked: Vec<ConnId> = mine
        .iter()
        .filter(|(_, n)| !n.is_empty())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(asked, vec![mine[0].0, mine[1].0, mine[2].0]);
    for (w, id) in asked.iter().enumerate() {
        g.up(w as WorkerId + 1, Tenant::Connection(*id));
    }
    // Other clients still get workers, a local user and another network.
    let (_, acts) = g.accept(user(1000));
    assert_eq!(needs(&acts).len(), 1);
    let (other, acts) = g.accept(tcp("198.51.100.5"));
    assert_eq!(needs(&acts), vec![Tenant::Connection(other)]);
    // When one of the client's own connections ends, its next one gets
    // a worker.
    let acts = g.report(1, Report::Closed(mine[0].0));
    assert!(acts.contains(&Action::ReleaseWorker(1)), "{acts:?}");
    assert_eq!(needs(&acts), vec![Tenant::Connection(mine[3].0)]);
    // Root is an administrator: no share applies.
    let mut s = settings();
    s.isolation = Isolation::Connection;
    s.max_workers = 8;
    let mut g = G::with(s);
    let asked = (0..5)
        .filter(|_| !needs(&g.accept(user(0)).1).is_empty())
        .count();
    assert!(asked > 3, "{asked}");
}
