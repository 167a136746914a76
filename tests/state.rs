//! The SQLite state database (src/state/sqlite.rs): real files in temporary directories. Migrations, the
//! apply lock (contention between threads and processes, stale lock recovery), recording and
//! reading runs, replay protection, retention, a writer killed with SIGKILL, and the `nexus
//! history` / `nexus state` commands.
//!
//! Some tests need other processes that hold the lock or write the database; they run this test
//! binary again with `NEXUS_STATE_TEST_ROLE` set, which turns `child_process_helper` into that
//! process (it does nothing in a normal test run).

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nexus::resources::Action;
use nexus::state::{
    self, ActionRecord, ActionStatus, LockHolder, RunStatus, SCHEMA_VERSION, StateError, StateStore,
};
use tempfile::TempDir;

use harness::project::{Project, Run};
use harness::records::{action, new_run};

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join(".nexus").join("state.db")
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open with rusqlite")
}

/// A pid that belonged to a process which has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait for true");
    pid
}

/// This test binary, running only `child_process_helper` as `role`.
fn helper(role: &str, db: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "child_process_helper",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("NEXUS_STATE_TEST_ROLE", role)
    .env("NEXUS_STATE_TEST_DB", db);
    cmd
}

/// What the killed writer records as action `i`: deterministic, so that the parent can check every
/// surviving row field by field.
fn writer_action(i: usize) -> ActionRecord {
    let host = format!("host{}", i % 7);
    ActionRecord {
        host: host.clone(),
        key: format!("deploy#{i}"),
        task: "deploy".to_string(),
        resource_id: format!("file:/srv/{}", i % 50),
        kind: "file".to_string(),
        label: format!("/srv/{}", i % 50),
        action: Action::Update,
        status: ActionStatus::Succeeded,
        exit_code: Some(0),
        duration_ms: i as u64,
        attempts: 1,
        // Big rows make a kill in the middle of writing one likely.
        output_tail: format!("{i:08}").repeat(512),
        error: None,
        fingerprint_after: Some(format!("fp-{i}")),
        finished_at: 1_700_000_000_000 + i as i64,
        holds_secrets: false,
    }
}

#[test]
fn child_process_helper() {
    let Ok(role) = std::env::var("NEXUS_STATE_TEST_ROLE") else {
        return;
    };
    let db = PathBuf::from(std::env::var("NEXUS_STATE_TEST_DB").expect("db path"));
    let store = state::open(&db).expect("open");
    match role.as_str() {
        // Takes the lock and records actions until killed.
        "writer" => {
            let guard = store
                .lock(&LockHolder::current("nexus apply plan.lock"))
                .expect("lock");
            let run = store.begin_run(&new_run("killed-plan")).expect("begin");
            for i in 0.. {
                store.record_action(run, &writer_action(i)).expect("record");
            }
            drop(guard);
        }
        // Waits for a common start time, tries the lock, and holds it for a while if it won. Results
        // go on lines of their own: libtest has already written "test child_process_helper ... ".
        "locker" => {
            let start: u128 = std::env::var("NEXUS_STATE_TEST_START_AT")
                .unwrap()
                .parse()
                .unwrap();
            while std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                < start
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            match store.lock(&LockHolder::current("nexus apply locker")) {
                Ok(guard) => {
                    println!("\nWON {}", std::process::id());
                    std::thread::sleep(Duration::from_secs(3));
                    guard.release().expect("release");
                    std::process::exit(0);
                }
                Err(StateError::Locked { holder, .. }) => {
                    println!("\nLOCKED-BY {}", holder.pid);
                    std::process::exit(3);
                }
                Err(e) => {
                    println!("\nERROR {e}");
                    std::process::exit(4);
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn fresh_database_is_migrated_once_and_reopens() {
    let dir = TempDir::new().unwrap();
    let path = db_in(&dir);
    let store = state::open(&path).expect("open creates the directory and the database");
    assert_eq!(store.path(), path);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".nexus/.gitignore")).unwrap(),
        "*\n"
    );
    drop(store);
    let store = state::open(&path).expect("reopen");
    drop(store);

    let conn = raw(&path);
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        versions,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration recorded once"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for table in ["runs", "actions", "last_applied", "apply_lock"] {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "table {table}");
    }
}

#[test]
fn a_database_from_a_newer_nexus_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = db_in(&dir);
    drop(state::open(&path).unwrap());
    raw(&path)
        .execute(
            "INSERT INTO schema_version (version, applied_at, nexus_version) VALUES (?1, 0, '9.0.0')",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    let err = state::open(&path).err().expect("refused");
    assert!(
        matches!(err, StateError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("newer nexus"),
        "{msg}"
    );
}

#[test]
fn other_files_are_not_taken_for_a_state_database() {
    let dir = TempDir::new().unwrap();
    let foreign = dir.path().join("other.db");
    raw(&foreign)
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let err = state::open(&foreign).err().expect("refused");
    assert!(matches!(err, StateError::NotNexus { .. }), "{err:?}");
    let tables: i64 = raw(&foreign)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "nothing was created in someone else's database");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        "this is not a database, just text long enough to have a header",
    )
    .unwrap();
    let err = state::open(&garbage).err().expect("refused");
    assert!(
        err.to_string().contains(&garbage.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_lock_whose_holder_died_is_recovered() {
    let dir = TempDir::new().unwrap();
    let store = state::open(&db_in(&dir)).unwrap();
    let dead = dead_pid();
    let stale = store
        .lock(&LockHolder {
            pid: dead,
            ..LockHolder::current("nexus apply old.lock")
        })
        .unwrap();
    // The holder "dies" without releasing.
    std::mem::forget(stale);

    let guard = store
        .lock(&LockHolder::current("nexus apply new.lock"))
        .expect("stale lock is taken over");
    let recovered = guard.recovered().expect("reported as recovered");
    assert_eq!(recovered.holder.pid, dead);
    assert_eq!(recovered.holder.command, "nexus apply old.lock");
    assert!(
        recovered.reason.contains("no longer exists"),
        "{}",
        recovered.reason
    );
    assert_eq!(
        store.lock_holder().unwrap().unwrap().command,
        "nexus apply new.lock"
    );
}

#[test]
fn a_recycled_pid_does_not_keep_a_lock() {
    let dir = TempDir::new().unwrap();
    let store = state::open(&db_in(&dir)).unwrap();
    // Our pid, but another process start time: the pid was reused after the holder exited.
    let holder = LockHolder {
        process_start: Some(1),
        ..LockHolder::current("nexus apply old.lock")
    };
    std::mem::forget(store.lock(&holder).unwrap());
    let guard = store
        .lock(&LockHolder::current("nexus apply"))
        .expect("taken over");
    let reason = &guard.recovered().unwrap().reason;
    assert!(reason.contains("another process"), "{reason}");
}

#[test]
fn a_lock_from_another_host_is_recovered_only_when_old() {
    let dir = TempDir::new().unwrap();
    let hour = 3_600_000;
    let store = state::open(&db_in(&dir))
        .unwrap()
        .with_lock_max_age(Duration::from_secs(3600));
    let elsewhere = |age_ms: i64| LockHolder {
        pid: 4242,
        hostname: "elsewhere.invalid".to_string(),
        command: "nexus apply remote.lock".to_string(),
        since: state::now_ms() - age_ms,
        boot_id: None,
        process_start: None,
    };
    std::mem::forget(store.lock(&elsewhere(hour / 2)).unwrap());
    let err = store
        .lock(&LockHolder::current("nexus apply"))
        .expect_err("cannot be checked, young");
    assert!(err.to_string().contains("elsewhere.invalid"), "{err}");

    store.force_unlock().unwrap();
    std::mem::forget(store.lock(&elsewhere(2 * hour)).unwrap());
    let guard = store
        .lock(&LockHolder::current("nexus apply"))
        .expect("old enough to be stale");
    let recovered = guard.recovered().unwrap();
    assert_eq!(recovered.holder.hostname, "elsewhere.invalid");
    assert!(recovered.reason.contains("old"), "{}", recovered.reason);
}

/// Runs `f(i)` on `n` threads released at the same moment, returning their results in order.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f) = (Arc::clone(&barrier), Arc::clone(&f));
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Processes started together on a new project (a CI matrix, `nexus history` beside an apply)
/// all open the database: none may fail because another is switching it to WAL at that moment.
#[test]
fn threads_opening_a_fresh_database_at_once_all_succeed() {
    for round in 0..40 {
        let dir = TempDir::new().unwrap();
        let path = db_in(&dir);
        for r in at_once(8, move |_| state::open(&path).map(|_| ())) {
            if let Err(e) = r {
                panic!("round {round}: {e:?}");
            }
        }
    }
}

#[test]
fn processes_racing_for_the_lock_one_wins() {
    let dir = TempDir::new().unwrap();
    let path = db_in(&dir);
    drop(state::open(&path).unwrap());
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 2000;
    let children: Vec<_> = (0..4)
        .map(|_| {
            helper("locker", &path)
                .env("NEXUS_STATE_TEST_START_AT", start.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn locker")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let lines: Vec<String> = outputs
        .iter()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| {
                    l.starts_with("WON") || l.starts_with("LOCKED-BY") || l.starts_with("ERROR")
                })
                .unwrap_or("no result")
                .to_string()
        })
        .collect();
    let won: Vec<&String> = lines.iter().filter(|l| l.starts_with("WON")).collect();
    assert_eq!(won.len(), 1, "{lines:?}");
    let winner = won[0].trim_start_matches("WON ");
    for l in &lines {
        if !l.starts_with("WON") {
            assert_eq!(l, &format!("LOCKED-BY {winner}"), "{lines:?}");
        }
    }
    assert!(
        state::open(&path).unwrap().lock_holder().unwrap().is_none(),
        "the winner released"
    );
}

#[test]
fn a_writer_killed_mid_apply_leaves_a_consistent_database_and_a_recoverable_lock() {
    let dir = TempDir::new().unwrap();
    let path = db_in(&dir);
    drop(state::open(&path).unwrap());
    let mut child = helper("writer", &path)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn writer");

    // Kill it while it writes: once some actions are in, without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    let reader = state::open(&path).unwrap();
    loop {
        let written = reader
            .history(1)
            .unwrap()
            .first()
            .map_or(0, |r| r.counts.succeeded);
        if written >= 300 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the writer exited on its own: {status}");
        }
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    drop(reader);

    let conn = raw(&path);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    drop(conn);

    let store = state::open(&path).expect("the database opens");
    let run = store.history(1).unwrap().remove(0);
    assert_eq!(
        run.status,
        RunStatus::Interrupted,
        "a killed run reads as interrupted"
    );
    assert!(run.finished_at.is_none());
    let actions = store.run_actions(run.id).unwrap();
    // Every row is whole, rows are contiguous, and the counters and the last applied state were
    // written in the same transactions as the rows.
    for (i, a) in actions.iter().enumerate() {
        assert_eq!(a, &writer_action(i), "action row {i}");
    }
    assert!(actions.len() >= 300);
    assert_eq!(run.counts.succeeded, actions.len() as u64);
    let last = store.last_applied(None).unwrap();
    for l in &last {
        let latest = actions
            .iter()
            .rev()
            .find(|a| a.host == l.host && a.resource_id == l.resource_id)
            .expect("every last applied row has its action");
        assert_eq!(l.fingerprint, latest.fingerprint_after, "{}", l.resource_id);
        assert_eq!(l.applied_at, latest.finished_at);
    }
    let distinct: std::collections::BTreeSet<_> =
        actions.iter().map(|a| (&a.host, &a.resource_id)).collect();
    assert_eq!(last.len(), distinct.len());

    // The killed writer's lock is recovered, and its run marked interrupted for good.
    let holder = store
        .lock_holder()
        .unwrap()
        .expect("the killed writer still holds the lock");
    assert_eq!(holder.pid, child.id());
    assert!(holder.gone().is_some());
    let guard = store
        .lock(&LockHolder::current("nexus apply plan.lock"))
        .expect("recovered");
    assert_eq!(guard.recovered().unwrap().holder.pid, child.id());
    assert_eq!(guard.interrupted_runs(), [run.id]);
    let stored: String = raw(&path)
        .query_row("SELECT status FROM runs WHERE id = ?1", [run.id.0], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, "interrupted");
}

// --- The commands -------------------------------------------------------------------------

/// A project directory where nexus runs without `-c` (none is written unless a test does).
fn project() -> Project {
    Project::new().no_config_arg()
}

fn json(out: &Run) -> serde_json::Value {
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// A database with two runs: a failed one and a succeeded one.
fn populated(path: &Path) -> state::SqliteStore {
    let store = state::open(path).unwrap();
    let first = store.begin_run(&new_run("aaaabbbbccccdddd")).unwrap();
    store
        .record_action(first, &action("web1", 1, ActionStatus::Succeeded))
        .unwrap();
    let mut failed = action("web1", 2, ActionStatus::Failed);
    failed.output_tail = "apt-get: unable to locate package\n".into();
    store.record_action(first, &failed).unwrap();
    store.finish_run(first, RunStatus::Failed, "{}").unwrap();
    let second = store.begin_run(&new_run("eeeeffff00001111")).unwrap();
    store
        .record_action(second, &action("web2", 1, ActionStatus::Succeeded))
        .unwrap();
    store
        .finish_run(second, RunStatus::Succeeded, "{}")
        .unwrap();
    store
}

#[test]
fn cli_on_a_missing_or_empty_database_is_friendly() {
    let p = project();
    let out = p.nexus(&["history"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("No runs recorded yet"),
        "{}",
        out.stdout
    );
    assert!(
        !p.path(".nexus").exists(),
        "reading does not create the database"
    );
    assert_eq!(
        json(&p.nexus(&["history", "--format", "json"]))["runs"],
        serde_json::json!([])
    );
    let out = p.nexus(&["state"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("No state recorded yet"),
        "{}",
        out.stdout
    );
    let v = json(&p.nexus(&["state", "--format", "json"]));
    assert_eq!(
        (v["resources"].clone(), v["lock"].clone()),
        (serde_json::json!([]), serde_json::Value::Null)
    );

    drop(state::open(&p.path(".nexus/state.db")).unwrap());
    let out = p.nexus(&["history"]);
    assert!(
        out.stdout
            .contains("No runs recorded yet in .nexus/state.db."),
        "{}",
        out.stdout
    );
    let out = p.nexus(&["history", "3"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no run 3"), "{}", out.stderr);
}

#[test]
fn cli_history_lists_runs_and_shows_one() {
    let p = project();
    let path = p.path("custom.db");
    populated(&path);
    let db = path.to_str().unwrap();

    let out = p.nexus(&["history", "--state", db]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with("2 ")
            && lines[1].contains("succeeded")
            && lines[1].contains("eeeeffff0000")
    );
    assert!(
        lines[2].starts_with("1 ")
            && lines[2].contains("failed")
            && lines[2].contains("web1, web2")
    );

    let v = json(&p.nexus(&["--state", db, "history", "--format", "json"]));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0]["id"].as_i64(), runs[0]["status"].as_str()),
        (Some(2), Some("succeeded"))
    );
    assert_eq!(runs[1]["counts"]["failed"], 1);
    let v = json(&p.nexus(&["--state", db, "history", "--limit", "1", "--format", "json"]));
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);

    let out = p.nexus(&["--state", db, "history", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("Run 1: apply failed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("file:/etc/app/2.conf"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("error: step 2 failed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("| apt-get: unable to locate package"),
        "failed output is shown"
    );
    assert!(
        !out.stdout.contains("| output of 1"),
        "succeeded output only with -v"
    );
    assert!(
        p.nexus(&["--state", db, "-v", "history", "1"])
            .stdout
            .contains("| output of 1")
    );

    let v = json(&p.nexus(&["--state", db, "history", "1", "--format", "json"]));
    assert_eq!(v["run"]["id"], 1);
    assert_eq!(v["actions"].as_array().unwrap().len(), 2);
    assert_eq!(v["actions"][1]["status"], "failed");
    assert_eq!(v["actions"][1]["exit_code"], 2);

    let out = p.nexus(&["--state", db, "history", "9"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no run 9") && out.stderr.contains("the newest is 2"),
        "{}",
        out.stderr
    );

    let v = json(&p.nexus(&["--state", db, "history", "--prune", "1", "--format", "json"]));
    assert_eq!(v["pruned_actions"], 2);
    let out = p.nexus(&["--state", db, "history", "1"]);
    assert!(
        out.stdout.contains("deleted by retention"),
        "{}",
        out.stdout
    );
}

#[test]
fn cli_state_shows_last_applied_and_the_lock() {
    let p = project();
    std::fs::create_dir(p.path("infra")).unwrap();
    // The default database is next to the config file, wherever nexus runs from.
    let path = p.path("infra/.nexus/state.db");
    let store = populated(&path);

    let out = p.nexus(&["-c", "infra/nexus.kdl", "state"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("web1 (1 resource)"), "{}", out.stdout);
    assert!(out.stdout.contains("web2 (1 resource)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("file:/etc/app/1.conf"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Apply lock: free"), "{}", out.stdout);

    let v = json(&p.nexus(&["-c", "infra/nexus.kdl", "state", "web1", "--format", "json"]));
    let resources = v["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0]["host"], "web1");
    assert_eq!(resources[0]["fingerprint"], "fp-web1-1");
    assert_eq!(resources[0]["action"], "create");

    let out = p.nexus(&["-c", "infra/nexus.kdl", "state", "web3"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .contains("No applied state recorded for host `web3`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("web1"),
        "suggests a known host: {}",
        out.stdout
    );

    let guard = store
        .lock(&LockHolder::current("nexus apply plan.lock"))
        .unwrap();
    let out = p.nexus(&["-c", "infra/nexus.kdl", "state"]);
    assert!(
        out.stdout
            .contains(&format!("Apply lock: held by pid {}", std::process::id())),
        "{}",
        out.stdout
    );
    let v = json(&p.nexus(&["-c", "infra/nexus.kdl", "state", "--format", "json"]));
    assert_eq!(v["lock"]["command"], "nexus apply plan.lock");
    assert_eq!(v["lock"]["stale"], serde_json::Value::Null);

    let out = p.nexus(&["-c", "infra/nexus.kdl", "state", "--force-unlock"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Removed the apply lock of pid"),
        "{}",
        out.stdout
    );
    assert!(store.lock_holder().unwrap().is_none());
    drop(guard);
}

/// Pre-images: only resources a run changed (with a fingerprint after) are offered for a
/// rollback, oldest run first in plan order; gc keeps each host's newest generations and the
/// contents they refer to.
#[test]
fn preimages_are_offered_in_order_and_gc_keeps_each_hosts_newest_generations() {
    use nexus::state::{Blob, Image, NewGeneration, Preimage, RunId};
    let dir = TempDir::new().unwrap();
    let store = state::open(&db_in(&dir)).unwrap();
    let image = |run: RunId, host: &str, seq: i64, blob: Option<&Blob>| Preimage {
        run,
        host: host.into(),
        key: format!("t#{seq}"),
        seq,
        resource_id: format!("file:/srv/{seq}"),
        image: Image::Absent,
        blob: blob.map(|b| b.hash.clone()),
        fingerprint_after: None,
    };
    let mut runs = Vec::new();
    for i in 0..3 {
        let run = store.begin_run(&new_run(&format!("{i:016}"))).unwrap();
        let blob = Blob::new(format!("content {i}").into_bytes(), false);
        store
            .record_generation(
                run,
                &NewGeneration {
                    plan: "{}".into(),
                    rollback_of: None,
                    preimages: vec![
                        image(run, "web1", 2, Some(&blob)),
                        image(run, "web1", 1, None),
                        image(run, "web2", 1, None),
                    ],
                    blobs: vec![blob],
                },
            )
            .unwrap();
        // web1's seq 2 and web2 changed; web1's seq 1 was planned but not changed.
        let after = vec![
            ("web1".to_string(), "t#2".to_string(), format!("fp{i}")),
            ("web2".to_string(), "t#1".to_string(), format!("fp{i}")),
        ];
        store.record_fingerprints_after(run, &after).unwrap();
        store.finish_run(run, RunStatus::Succeeded, "{}").unwrap();
        runs.push(run);
    }
    let web1 = store.preimages("web1", RunId(0)).unwrap();
    let order: Vec<(i64, &str)> = web1.iter().map(|p| (p.run.0, p.key.as_str())).collect();
    assert_eq!(
        order,
        [(runs[0].0, "t#2"), (runs[1].0, "t#2"), (runs[2].0, "t#2")]
    );
    assert_eq!(store.preimages("web1", runs[1]).unwrap().len(), 1);
    let first_blob = web1[0].blob.clone().unwrap();
    assert_eq!(store.blob(&first_blob).unwrap().unwrap().data, b"content 0");

    // Keep 2 generations per host: run 0's rows, plan and content go.
    let deleted = store.gc_generations(2).unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(store.preimages("web1", RunId(0)).unwrap().len(), 2);
    assert!(store.run_plan(runs[0]).unwrap().is_none());
    assert!(store.run_plan(runs[1]).unwrap().is_some());
    assert!(store.blob(&first_blob).unwrap().is_none());
}
