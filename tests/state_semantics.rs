//! The state store's semantics, run against both backends: a SQLite file and a real PostgreSQL
//! server (tests/harness/postgres.rs). Locking, recording and reading runs, replay protection,
//! retention, and transactions. What only one backend has (SQLite's file handling and pid
//! liveness, PostgreSQL's projects and session locks) is tested in tests/state.rs and below.

mod harness;

use std::sync::{Arc, Barrier};

use nexus::resources::Action;
use nexus::state::{
    self, ActionRecord, ActionStatus, Location, LockHolder, PgSettings, RunId, RunKind, RunStatus,
    StateError, StateStore,
};
use tempfile::TempDir;

use harness::postgres::Postgres;
use harness::records::{action, new_run};

/// One store location, shared by the connections a test opens.
#[derive(Clone)]
enum Backend {
    Sqlite(Arc<TempDir>),
    Postgres(Arc<Postgres>, String),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(Arc::new(TempDir::new().unwrap()))
    }

    fn postgres() -> Backend {
        Backend::Postgres(Arc::new(Postgres::start()), "semantics".into())
    }

    fn location(&self) -> Location {
        match self {
            Backend::Sqlite(d) => Location::Sqlite(d.path().join(".nexus/state.db")),
            Backend::Postgres(pg, project) => Location::Postgres(PgSettings {
                url: pg.url("sslmode=disable"),
                password: None,
                project: project.clone(),
            }),
        }
    }

    /// A new connection, as another process would have.
    fn open(&self) -> Arc<dyn StateStore> {
        self.location().open().expect("open")
    }

    /// What error messages must name.
    fn location_part(&self) -> String {
        match self {
            Backend::Sqlite(d) => d.path().join(".nexus/state.db").display().to_string(),
            Backend::Postgres(pg, _) => format!("{}:{}", pg.ip, pg.port),
        }
    }

    fn schema_versions(&self) -> i64 {
        match self {
            Backend::Sqlite(d) => rusqlite::Connection::open(d.path().join(".nexus/state.db"))
                .unwrap()
                .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
                .unwrap(),
            Backend::Postgres(pg, _) => pg
                .psql("SELECT COUNT(*) FROM nexus.schema_version")
                .parse()
                .unwrap(),
        }
    }

    fn schema_version(&self) -> i64 {
        match self {
            Backend::Sqlite(_) => state::SCHEMA_VERSION,
            Backend::Postgres(..) => state::PG_SCHEMA_VERSION,
        }
    }

    /// Makes the database refuse to insert the action with `key`, inside the transaction.
    fn refuse_action_key(&self, key: &str) {
        match self {
            Backend::Sqlite(d) => rusqlite::Connection::open(d.path().join(".nexus/state.db"))
                .unwrap()
                .execute_batch(&format!(
                    "CREATE TRIGGER refuse AFTER INSERT ON actions WHEN NEW.key = '{key}' \
                     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
                ))
                .unwrap(),
            Backend::Postgres(pg, _) => {
                pg.psql(&format!(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.key = '{key}' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
                     RETURN NEW; END $$; \
                     CREATE TRIGGER refuse AFTER INSERT ON nexus.actions FOR EACH ROW \
                     EXECUTE FUNCTION refuse();"
                ));
            }
        }
    }
}

/// Each semantic test, once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Backend::sqlite());
            }
            #[test]
            fn postgres() {
                super::$name(&super::Backend::postgres());
            }
        })*
    };
}

on_both_backends!(
    a_held_lock_refuses_a_second_apply_naming_the_holder,
    force_unlock_removes_any_lock,
    threads_racing_for_the_lock_on_a_fresh_database_one_wins,
    runs_and_actions_are_recorded_and_read_back,
    misuse_is_reported_with_the_database_path,
    an_applied_plan_is_found_for_replay_protection,
    prune_keeps_runs_counts_and_last_applied,
    a_batch_of_actions_is_recorded_whole_or_not_at_all,
    pending_handlers_keep_their_first_notifier_until_they_succeed,
    a_new_holder_marks_the_runs_of_a_dead_one_interrupted,
    drift_checks_and_signers_are_recorded,
);

fn drift_checks_and_signers_are_recorded(b: &Backend) {
    let store = b.open();
    assert!(store.drift_checks(10).unwrap().is_empty());
    for (n, drifted) in [(0, vec![]), (3, vec!["web2".to_string()])] {
        store
            .record_drift(&state::NewDriftCheck {
                plan_hash: format!("hash-{n}"),
                config: "nexus.kdl".into(),
                hosts: vec!["web1".into(), "web2".into()],
                drifted,
                changes: n,
                checked_at: state::now_ms(),
            })
            .unwrap();
    }
    let checks = b.open().drift_checks(10).unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (checks[0].changes, checks[0].drifted.as_slice()),
        (3, &["web2".to_string()][..])
    );
    assert_eq!(checks[1].plan_hash, "hash-0");
    assert_eq!(store.drift_checks(1).unwrap().len(), 1);

    let signed = store
        .begin_run(&state::NewRun {
            signer: Some("ci@example.com".into()),
            ..new_run("signed")
        })
        .unwrap();
    assert_eq!(
        b.open().run(signed).unwrap().unwrap().signer.as_deref(),
        Some("ci@example.com")
    );
}

fn pending_handlers_keep_their_first_notifier_until_they_succeed(b: &Backend) {
    let store = b.open();
    let first = store.begin_run(&new_run("p1")).unwrap();
    store
        .notify_handler(first, "web1", "reload", "file /etc/a")
        .unwrap();
    let second = store.begin_run(&new_run("p2")).unwrap();
    store
        .notify_handler(second, "web1", "reload", "file /etc/b")
        .unwrap();
    store
        .notify_handler(second, "web2", "reload", "file /etc/b")
        .unwrap();
    let pending = b.open().pending_handlers().unwrap();
    let seen: Vec<_> = pending
        .iter()
        .map(|p| (p.host.as_str(), p.since_run, p.notified_by.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("web1", first.0, "file /etc/a"),
            ("web2", second.0, "file /etc/b")
        ]
    );
    store.handler_succeeded("web1", "reload").unwrap();
    assert_eq!(store.pending_handlers().unwrap().len(), 1);
}

fn a_new_holder_marks_the_runs_of_a_dead_one_interrupted(b: &Backend) {
    // A holder that never ended its run: its lock is released (here by dropping the guard, as
    // a dead process's lock is), and the next holder finds the run still marked running.
    let store = b.open();
    let guard = store
        .lock(&LockHolder::current("nexus apply a.lock"))
        .unwrap();
    let run = store.begin_run(&new_run("a")).unwrap();
    if let Backend::Sqlite(d) = b {
        // SQLite judges liveness by process: make the run look like a dead process's.
        rusqlite::Connection::open(d.path().join(".nexus/state.db"))
            .unwrap()
            .execute("UPDATE runs SET pid = 999999999, process_start = 1", [])
            .unwrap();
    }
    drop(guard);
    let next = b
        .open()
        .lock(&LockHolder::current("nexus apply b.lock"))
        .unwrap();
    assert_eq!(next.interrupted_runs(), [run]);
    assert_eq!(
        store.run(run).unwrap().unwrap().status,
        RunStatus::Interrupted
    );
}
fn a_held_lock_refuses_a_second_apply_naming_the_holder(b: &Backend) {
    let store = b.open();
    let first = store
        .lock(&LockHolder::current("nexus apply first.lock"))
        .expect("free lock");
    assert!(first.recovered().is_none());

    let err = store
        .lock(&LockHolder::current("nexus apply second.lock"))
        .expect_err("held");
    let StateError::Locked { holder, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(holder.pid, std::process::id());
    assert_eq!(holder.command, "nexus apply first.lock");
    let msg = err.to_string();
    for part in [
        &format!("pid {}", std::process::id()),
        &holder.hostname,
        "nexus apply first.lock",
        "--force-unlock",
    ] {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
    assert_eq!(
        store.lock_holder().unwrap().unwrap().command,
        "nexus apply first.lock"
    );

    // Another connection (another process would use one) sees the same lock.
    let other = b.open();
    assert!(matches!(
        other.lock(&LockHolder::current("x")),
        Err(StateError::Locked { .. })
    ));

    first.release().expect("release");
    assert!(store.lock_holder().unwrap().is_none());
    let again = other
        .lock(&LockHolder::current("nexus apply second.lock"))
        .expect("free again");
    drop(again);
    assert!(store.lock_holder().unwrap().is_none(), "drop releases");
}

fn force_unlock_removes_any_lock(b: &Backend) {
    let store = b.open();
    assert_eq!(store.force_unlock().unwrap(), None);
    let guard = store
        .lock(&LockHolder::current("nexus apply hung.lock"))
        .unwrap();
    let removed = store.force_unlock().unwrap().expect("was locked");
    assert_eq!(removed.command, "nexus apply hung.lock");
    let next = store
        .lock(&LockHolder::current("nexus apply next.lock"))
        .expect("free");
    // The old guard must not remove the lock taken after the force-unlock.
    drop(guard);
    assert_eq!(
        store.lock_holder().unwrap().unwrap().command,
        "nexus apply next.lock"
    );
    drop(next);
}

fn threads_racing_for_the_lock_on_a_fresh_database_one_wins(b: &Backend) {
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (b, barrier) = (b.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                // Opening concurrently also races the migrations.
                let store = b.open();
                store
                    .lock(&LockHolder::current(format!("thread {i}")))
                    .map(|g| (store, g))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one winner");
    let winner = winners[0].1.holder().command.clone();
    for r in &results {
        if let Err(e) = r {
            let StateError::Locked { holder, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(holder.command, winner);
        }
    }
    assert_eq!(b.schema_versions(), b.schema_version());
}

fn runs_and_actions_are_recorded_and_read_back(b: &Backend) {
    let store = b.open();
    assert!(store.history(10).unwrap().is_empty());
    assert!(store.last_applied(None).unwrap().is_empty());

    let first = store.begin_run(&new_run("hash-one")).unwrap();
    let mut recorded = vec![
        action("web1", 1, ActionStatus::Succeeded),
        action("web1", 2, ActionStatus::Failed),
        action("web1", 3, ActionStatus::NotRun),
        ActionRecord {
            action: Action::NoOp,
            ..action("web2", 1, ActionStatus::Succeeded)
        },
        action("web2", 2, ActionStatus::Skipped),
    ];
    // Long output is capped to its end; long errors to their start.
    recorded[1].output_tail = format!("{}\nthe last line\n", "noise ".repeat(2000));
    recorded[1].error = Some(format!("the first line\n{}", "detail ".repeat(2000)));
    for a in &recorded {
        store.record_action(first, a).unwrap();
    }
    store
        .finish_run(first, RunStatus::Failed, r#"{"changed": 1}"#)
        .unwrap();

    let back = store.run_actions(first).unwrap();
    assert_eq!(back.len(), recorded.len());
    assert!(back[1].output_tail.len() <= state::OUTPUT_TAIL_MAX);
    assert!(back[1].output_tail.ends_with("the last line\n"));
    assert!(
        back[1]
            .error
            .as_ref()
            .unwrap()
            .starts_with("the first line")
    );
    assert!(back[1].error.as_ref().unwrap().len() <= state::OUTPUT_TAIL_MAX);
    for (i, (b, a)) in back.iter().zip(&recorded).enumerate() {
        if i != 1 {
            assert_eq!(b, a, "action {i} round trips");
        }
    }

    let runs = store.history(10).unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(
        (r.id, r.kind, r.status),
        (first, RunKind::Apply, RunStatus::Failed)
    );
    assert_eq!(
        (r.counts.succeeded, r.counts.changed, r.counts.failed),
        (2, 1, 1)
    );
    assert_eq!((r.counts.skipped, r.counts.not_run), (1, 1));
    assert_eq!(r.summary, serde_json::json!({"changed": 1}));
    assert_eq!(r.hosts, ["web1", "web2"]);
    assert!(r.duration_ms.is_some_and(|d| d >= 0));
    assert_eq!(r.pid, std::process::id());

    let web1 = store.last_applied(Some("web1")).unwrap();
    assert_eq!(
        web1.len(),
        1,
        "only succeeded actions update the last applied state"
    );
    assert_eq!(web1[0].resource_id, "file:/etc/app/1.conf");
    assert_eq!(web1[0].fingerprint.as_deref(), Some("fp-web1-1"));
    assert_eq!(web1[0].run, first);

    // A later run overwrites the resources it applies and leaves the others.
    let second = store.begin_run(&new_run("hash-two")).unwrap();
    let mut again = action("web1", 1, ActionStatus::Succeeded);
    again.action = Action::Update;
    again.fingerprint_after = Some("fp-new".into());
    store.record_action(second, &again).unwrap();
    store
        .record_action(second, &action("web1", 2, ActionStatus::Succeeded))
        .unwrap();
    store
        .finish_run(second, RunStatus::Succeeded, "{}")
        .unwrap();
    let all = store.last_applied(None).unwrap();
    let ids: Vec<(&str, &str)> = all
        .iter()
        .map(|l| (l.host.as_str(), l.resource_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("web1", "file:/etc/app/1.conf"),
            ("web1", "file:/etc/app/2.conf"),
            ("web2", "file:/etc/app/1.conf")
        ]
    );
    assert_eq!(
        (all[0].action, all[0].fingerprint.as_deref(), all[0].run),
        (Action::Update, Some("fp-new"), second)
    );
    assert_eq!(all[2].run, first);

    let runs = store.history(10).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, first],
        "newest first"
    );
    assert_eq!(store.history(1).unwrap().len(), 1);
    assert_eq!(store.run(first).unwrap().unwrap().id, first);
    assert!(store.run(RunId(99)).unwrap().is_none());

    // What planning reads for every resource whose content holds vault values: the rows the
    // last applied state marks, as the newest apply of each left them.
    let holders = |store: &dyn state::StateStore| -> Vec<(String, String)> {
        let filtered: Vec<(String, String)> = store
            .last_applied(None)
            .unwrap()
            .into_iter()
            .filter(|l| l.holds_secrets)
            .map(|l| (l.host, l.resource_id))
            .collect();
        assert_eq!(store.secret_holders().unwrap(), filtered);
        filtered
    };
    let pair = |h: &str, n: usize| (h.to_string(), format!("file:/etc/app/{n}.conf"));
    assert_eq!(holders(&*store), [pair("web1", 2)]);
    let third = store.begin_run(&new_run("hash-three")).unwrap();
    for (host, n, holds) in [("web2", 1, true), ("web1", 2, false), ("web1", 1, true)] {
        let a = ActionRecord {
            holds_secrets: holds,
            ..action(host, n, ActionStatus::Succeeded)
        };
        store.record_action(third, &a).unwrap();
    }
    store.finish_run(third, RunStatus::Succeeded, "{}").unwrap();
    assert_eq!(holders(&*store), [pair("web1", 1), pair("web2", 1)]);
}

fn misuse_is_reported_with_the_database_path(b: &Backend) {
    let store = b.open();
    let err = store
        .record_action(RunId(7), &action("web1", 1, ActionStatus::Succeeded))
        .unwrap_err();
    assert!(matches!(err, StateError::NoSuchRun { run: RunId(7), .. }));
    assert!(err.to_string().contains(&b.location_part()), "{err}");
    assert!(matches!(
        store.finish_run(RunId(7), RunStatus::Succeeded, "{}"),
        Err(StateError::NoSuchRun { .. })
    ));
    let run = store.begin_run(&new_run("h")).unwrap();
    assert!(matches!(
        store.finish_run(run, RunStatus::Running, "{}"),
        Err(StateError::Invalid { .. })
    ));
}

fn an_applied_plan_is_found_for_replay_protection(b: &Backend) {
    let store = b.open();
    assert!(store.applied("plan-a").unwrap().is_none());

    // Refused runs executed nothing: the plan may still be applied.
    let refused = store.begin_run(&new_run("plan-a")).unwrap();
    store
        .finish_run(refused, RunStatus::Refused, r#"{"reason": "stale"}"#)
        .unwrap();
    assert!(store.applied("plan-a").unwrap().is_none());

    // A run that started counts from its start, before it finishes.
    let run = store.begin_run(&new_run("plan-a")).unwrap();
    let found = store.applied("plan-a").unwrap().expect("started");
    assert_eq!((found.id, found.status), (run, RunStatus::Running));
    store.finish_run(run, RunStatus::Failed, "{}").unwrap();
    assert_eq!(
        store.applied("plan-a").unwrap().unwrap().status,
        RunStatus::Failed
    );
    assert!(store.applied("plan-b").unwrap().is_none());

    // Persisted: another connection agrees.
    let other = b.open();
    assert_eq!(other.applied("plan-a").unwrap().unwrap().id, run);
}

fn prune_keeps_runs_counts_and_last_applied(b: &Backend) {
    let store = b.open();
    let mut ids = Vec::new();
    for n in 0..3 {
        let run = store.begin_run(&new_run(&format!("plan-{n}"))).unwrap();
        store
            .record_action(run, &action("web1", n, ActionStatus::Succeeded))
            .unwrap();
        store.finish_run(run, RunStatus::Succeeded, "{}").unwrap();
        ids.push(run);
    }
    let running = store.begin_run(&new_run("plan-running")).unwrap();
    store
        .record_action(running, &action("web1", 9, ActionStatus::Succeeded))
        .unwrap();

    assert_eq!(
        store.prune(1).unwrap(),
        3,
        "all finished runs but the newest lose their actions"
    );
    assert!(store.run_actions(ids[0]).unwrap().is_empty());
    assert!(
        store.run_actions(ids[2]).unwrap().is_empty(),
        "the newest is the running one"
    );
    assert_eq!(
        store.run_actions(running).unwrap().len(),
        1,
        "a running run is never pruned"
    );
    let old = store.run(ids[0]).unwrap().unwrap();
    assert!(old.pruned);
    assert_eq!(old.counts.succeeded, 1);
    assert!(store.applied("plan-0").unwrap().is_some());
    assert_eq!(store.last_applied(Some("web1")).unwrap().len(), 4);
    assert_eq!(store.prune(1).unwrap(), 0);
}

fn a_batch_of_actions_is_recorded_whole_or_not_at_all(b: &Backend) {
    let store = b.open();
    let run = store.begin_run(&new_run("batch")).unwrap();
    let noops = |range: std::ops::RangeInclusive<usize>| -> Vec<ActionRecord> {
        range
            .map(|n| ActionRecord {
                action: Action::NoOp,
                ..action("web1", n, ActionStatus::Skipped)
            })
            .collect()
    };
    store.record_actions(run, &noops(1..=3)).unwrap();
    store.record_actions(run, &[]).unwrap();
    assert_eq!(store.run_actions(run).unwrap().len(), 3);
    assert_eq!(store.run(run).unwrap().unwrap().counts.skipped, 3);
    // The fifth insert fails inside the transaction: the fourth must not stay behind.
    b.refuse_action_key("setup#5");
    let err = store.record_actions(run, &noops(4..=6)).unwrap_err();
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert_eq!(store.run_actions(run).unwrap().len(), 3);
    assert_eq!(store.run(run).unwrap().unwrap().counts.skipped, 3);
}
