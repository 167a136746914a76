//! The SQLite state backend: one database file (plus its `-wal` and `-shm` companions).
//!
//! Durability choices: WAL so that `nexus history` can read while an apply writes;
//! `synchronous=NORMAL` for the many per-action commits (each survives a killed process; an fsync
//! per action made a no-op apply of 4,000 resources spend seconds in fsync), and a `FULL` commit
//! for the rows that matter after a power cut: the start of a run (a lost "this plan was
//! applied" row would let a plan be replayed) and its end, which also makes every action written
//! before it durable, since a WAL sync covers the whole log; one transaction per recorded step;
//! a busy timeout so that concurrent writers wait for each other instead of failing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::de::DeserializeOwned;

use super::lock::{Identity, Liveness, liveness, new_token};
use super::{
    ActionCounts, ActionRecord, ActionStatus, Blob, DriftCheck, LastApplied, LockGuard, LockHolder,
    NewDriftCheck, NewGeneration, NewRun, OUTPUT_TAIL_MAX, PendingHandler, Preimage, Recovered,
    RunId, RunPlan, RunStatus, RunSummary, StateError, StateStore, cap_head, cap_tail,
    format_duration, now_ms, text_of,
};
use crate::plan::Action;

/// The schema version this nexus writes; migrations bring older databases up to it.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations in order; migration N (1-based) brings the schema from version N-1 to N.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_pending_handlers.sql"),
    include_str!("migrations/0003_held_secrets.sql"),
    include_str!("migrations/0004_signer_and_drift.sql"),
    include_str!("migrations/0005_generations.sql"),
];

/// How old a lock must be before it is taken over when its holder cannot be checked (it runs on
/// another host). Long, because applies with rolling batches and waits can take hours.
pub const DEFAULT_LOCK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How long a write waits for another process's write transaction (they are all short).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite [`StateStore`]. Cheap to share: one connection behind a mutex, since SQLite
/// serializes writers anyway and the state sees a few writes per executed resource.
pub struct SqliteStore {
    path: PathBuf,
    db: String,
    conn: Arc<Mutex<Connection>>,
    lock_max_age: Duration,
}

/// `synchronous=FULL` for the commits made while it lives, then back to `NORMAL`.
struct FullSync<'a>(&'a Connection);

impl<'a> FullSync<'a> {
    fn new(conn: &'a Connection) -> rusqlite::Result<FullSync<'a>> {
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(FullSync(conn))
    }
}

impl Drop for FullSync<'_> {
    fn drop(&mut self) {
        let _ = self.0.pragma_update(None, "synchronous", "NORMAL");
    }
}

/// Creates the database file, empty and 0600 (a umask can only narrow that), unless it exists. It holds the
/// output of every command nexus ran; SQLite would create it 0644, and gives its `-wal`, `-shm` and
/// journal files the database file's mode, so they follow. An existing file keeps its mode: its
/// owner may share it on purpose.
fn create_private(path: &Path) -> std::io::Result<()> {
    match crate::nexus_dir::new_private_file().open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `PRAGMA journal_mode = WAL`, returning the mode in effect. Connections switching a new database
/// at the same moment can each hold the lock the other needs; SQLite then fails one of them with
/// SQLITE_BUSY at once, without its busy handler (waiting could not help), so that one retries
/// until the other is done, within [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<String> {
    let start = std::time::Instant::now();
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

fn lock_conn(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the connection cannot leave a transaction open (dropping a rusqlite
    // Transaction rolls it back), so a poisoned mutex is still a usable connection.
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

impl SqliteStore {
    /// See [`super::open`].
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let db = path.display().to_string();
        if let Some(dir) = path.parent() {
            crate::nexus_dir::create(dir).map_err(|source| StateError::CreateDir {
                dir: dir.display().to_string(),
                source,
            })?;
        }
        create_private(path).map_err(|e| StateError::Open {
            db: db.clone(),
            source: Box::new(e),
        })?;
        let open_err = |e: rusqlite::Error| StateError::Open {
            db: db.clone(),
            source: Box::new(e),
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Only takes effect on a new database (before the first table): lets prune return space.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(open_err)?;
        let mode = switch_to_wal(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Open {
                db,
                source: format!(
                    "cannot use write-ahead logging (journal mode stays `{mode}`); \
                     is the file on a network filesystem?"
                )
                .into(),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        migrate(&mut conn, &db)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            db,
            conn: Arc::new(Mutex::new(conn)),
            lock_max_age: DEFAULT_LOCK_MAX_AGE,
        })
    }

    /// Sets how old a lock whose holder cannot be checked must be to count as stale.
    pub fn with_lock_max_age(mut self, age: Duration) -> SqliteStore {
        self.lock_max_age = age;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock_conn(&self.conn)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |e| backend(&self.db, e)
    }

    fn summary(
        &self,
        where_sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RunSummary>, StateError> {
        let conn = self.conn();
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs {where_sql}");
        let mut stmt = conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params, run_from_row).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

fn backend(db: &str, e: rusqlite::Error) -> StateError {
    StateError::Backend {
        db: db.to_string(),
        source: Box::new(e),
    }
}

/// Brings the schema up to [`SCHEMA_VERSION`], one migration per transaction. Each transaction
/// re-reads the version under the write lock, so two processes opening a database at once apply
/// every migration exactly once.
fn migrate(conn: &mut Connection, db: &str) -> Result<(), StateError> {
    let err = |e| backend(db, e);
    // The common case, an up-to-date database, needs no write lock: opening for `nexus history`
    // neither waits for a busy apply nor needs write access to the file. Any error here (no
    // table yet, not a database) is met again, and reported, under the write lock below.
    let current: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap_or(None);
    if current == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let has_versions: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !has_versions {
            let tables: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            // Someone else's database: creating our tables in it would be a surprise for both.
            if tables > 0 {
                return Err(StateError::NotNexus { db: db.to_string() });
            }
            tx.execute_batch(
                "CREATE TABLE schema_version (
                    version       INTEGER PRIMARY KEY,
                    applied_at    INTEGER NOT NULL,
                    nexus_version TEXT    NOT NULL
                )",
            )
            .map_err(err)?;
        }
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if current > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                db: db.to_string(),
                found: current,
                known: SCHEMA_VERSION,
            });
        }
        if current == SCHEMA_VERSION {
            return tx.commit().map_err(err);
        }
        let next = current + 1;
        let sql = MIGRATIONS[usize::try_from(current).expect("version is not negative")];
        tx.execute_batch(sql).map_err(|e| StateError::Open {
            db: db.to_string(),
            source: format!("schema migration {next} failed: {e}").into(),
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at, nexus_version) VALUES (?1, ?2, ?3)",
            params![next, now_ms(), env!("CARGO_PKG_VERSION")],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
    }
}

const RUN_COLUMNS: &str = "id, kind, status, plan_hash, config, tasks, hosts, started_at, \
    finished_at, summary, nexus_version, pid, hostname, boot_id, process_start, succeeded, \
    changed, failed, skipped, not_run, pruned, signer";

/// Reads an enum stored as its serde name (`not-run`), or a JSON column, failing as a conversion
/// error of column `idx` so that the message says what was wrong.
fn decode<T: DeserializeOwned>(idx: usize, value: serde_json::Value) -> rusqlite::Result<T> {
    serde_json::from_value(value).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn name<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    decode(idx, serde_json::Value::String(row.get(idx)?))
}

fn json_list(row: &Row, idx: usize) -> rusqlite::Result<Vec<String>> {
    json_column(row, idx)
}

/// A column holding JSON text.
fn json_column<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    let value = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })?;
    decode(idx, value)
}

fn count(row: &Row, idx: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(idx)?.max(0) as u64)
}

fn run_from_row(row: &Row) -> rusqlite::Result<RunSummary> {
    let mut status: RunStatus = name(row, 2)?;
    let pid: u32 = row.get(11)?;
    let hostname: String = row.get(12)?;
    let boot_id: Option<String> = row.get(13)?;
    let process_start: Option<i64> = row.get(14)?;
    // A process killed mid-run could not record its end: show the truth without waiting for the
    // next lock to mark it.
    if status == RunStatus::Running && owner_gone(pid, &hostname, boot_id.as_deref(), process_start)
    {
        status = RunStatus::Interrupted;
    }
    let started_at: i64 = row.get(7)?;
    let finished_at: Option<i64> = row.get(8)?;
    let summary: Option<String> = row.get(9)?;
    Ok(RunSummary {
        id: RunId(row.get(0)?),
        kind: name(row, 1)?,
        status,
        plan_hash: row.get(3)?,
        config: row.get(4)?,
        tasks: json_list(row, 5)?,
        hosts: json_list(row, 6)?,
        started_at,
        finished_at,
        duration_ms: finished_at.map(|f| f - started_at),
        counts: ActionCounts {
            succeeded: count(row, 15)?,
            changed: count(row, 16)?,
            failed: count(row, 17)?,
            skipped: count(row, 18)?,
            not_run: count(row, 19)?,
        },
        summary: match summary.as_deref() {
            None | Some("") => serde_json::Value::Null,
            Some(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
        },
        nexus_version: row.get(10)?,
        pid,
        hostname,
        pruned: row.get(20)?,
        signer: row.get(21)?,
    })
}

fn owner_gone(pid: u32, hostname: &str, boot_id: Option<&str>, process_start: Option<i64>) -> bool {
    let start = process_start.and_then(|s| u64::try_from(s).ok());
    matches!(liveness(pid, hostname, boot_id, start), Liveness::Dead(_))
}

fn holder_from_row(row: &Row) -> rusqlite::Result<LockHolder> {
    Ok(LockHolder {
        pid: row.get(0)?,
        hostname: row.get(1)?,
        command: row.get(2)?,
        since: row.get(3)?,
        boot_id: row.get(4)?,
        process_start: row
            .get::<_, Option<i64>>(5)?
            .and_then(|s| u64::try_from(s).ok()),
    })
}

const HOLDER_COLUMNS: &str = "pid, hostname, command, since, boot_id, process_start";

fn read_holder(tx: &Connection) -> rusqlite::Result<Option<LockHolder>> {
    tx.query_row(
        &format!("SELECT {HOLDER_COLUMNS} FROM apply_lock WHERE id = 1"),
        [],
        holder_from_row,
    )
    .optional()
}

/// Marks interrupted the runs still recorded as running whose process is gone, and those of
/// `gone` (a holder whose lock was taken over or removed even though it could not be checked).
fn mark_interrupted(tx: &Transaction, gone: Option<&LockHolder>) -> rusqlite::Result<Vec<RunId>> {
    let mut stmt = tx.prepare(
        "SELECT id, pid, hostname, boot_id, process_start FROM runs WHERE status = 'running'",
    )?;
    let running = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids = Vec::new();
    for (id, pid, hostname, boot_id, start) in running {
        let of_gone = gone.is_some_and(|g| {
            g.pid == pid
                && g.hostname == hostname
                && g.process_start.and_then(|s| i64::try_from(s).ok()) == start
        });
        if of_gone || owner_gone(pid, &hostname, boot_id.as_deref(), start) {
            tx.execute(
                "UPDATE runs SET status = 'interrupted' WHERE id = ?1 AND status = 'running'",
                [id],
            )?;
            ids.push(RunId(id));
        }
    }
    Ok(ids)
}

impl StateStore for SqliteStore {
    fn location(&self) -> String {
        self.db.clone()
    }

    fn lock(&self, holder: &LockHolder) -> Result<LockGuard, StateError> {
        let token = new_token();
        let mut conn = self.conn();
        // IMMEDIATE takes SQLite's write lock before reading the lock row, so two processes cannot
        // both see the lock free (or both judge it stale) and both take it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let mut recovered = None;
        if let Some(old) = read_holder(&tx).map_err(self.err())? {
            let reason = match liveness(
                old.pid,
                &old.hostname,
                old.boot_id.as_deref(),
                old.process_start,
            ) {
                // Even an old lock is honoured while its holder provably runs: taking it over
                // would put two applies on the same hosts. `nexus state --force-unlock` exists for
                // a holder that hangs.
                Liveness::Alive => None,
                Liveness::Dead(reason) => Some(reason),
                Liveness::Unknown => {
                    let age = now_ms().saturating_sub(old.since);
                    let max = i64::try_from(self.lock_max_age.as_millis()).unwrap_or(i64::MAX);
                    (age > max).then(|| {
                        format!(
                            "its holder cannot be checked from here and the lock is {} old \
                             (the limit is {})",
                            format_duration(age),
                            format_duration(max)
                        )
                    })
                }
            };
            match reason {
                None => {
                    return Err(StateError::Locked {
                        db: self.db.clone(),
                        holder: Box::new(old),
                    });
                }
                Some(reason) => {
                    recovered = Some(Recovered {
                        holder: old,
                        reason,
                    })
                }
            }
            tx.execute("DELETE FROM apply_lock", [])
                .map_err(self.err())?;
        }
        tx.execute(
            &format!("INSERT INTO apply_lock (id, token, {HOLDER_COLUMNS}) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                token,
                holder.pid,
                holder.hostname,
                holder.command,
                holder.since,
                holder.boot_id,
                holder.process_start.and_then(|s| i64::try_from(s).ok()),
            ],
        )
        .map_err(self.err())?;
        let interrupted =
            mark_interrupted(&tx, recovered.as_ref().map(|r| &r.holder)).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        drop(conn);

        let conn = Arc::clone(&self.conn);
        let db = self.db.clone();
        Ok(LockGuard::new(
            holder.clone(),
            recovered,
            interrupted,
            move || {
                lock_conn(&conn)
                    .execute("DELETE FROM apply_lock WHERE token = ?1", [token])
                    .map(drop)
                    .map_err(|e| backend(&db, e))
            },
        ))
    }

    fn lock_holder(&self) -> Result<Option<LockHolder>, StateError> {
        read_holder(&self.conn()).map_err(self.err())
    }

    fn force_unlock(&self) -> Result<Option<LockHolder>, StateError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let holder = read_holder(&tx).map_err(self.err())?;
        if let Some(h) = &holder {
            tx.execute("DELETE FROM apply_lock", [])
                .map_err(self.err())?;
            mark_interrupted(&tx, Some(h)).map_err(self.err())?;
        }
        tx.commit().map_err(self.err())?;
        Ok(holder)
    }

    fn begin_run(&self, run: &NewRun) -> Result<RunId, StateError> {
        let me = Identity::current();
        let conn = self.conn();
        let _full = FullSync::new(&conn).map_err(self.err())?;
        conn.execute(
            "INSERT INTO runs (kind, status, plan_hash, config, tasks, hosts, started_at, \
             nexus_version, pid, hostname, boot_id, process_start, signer) \
             VALUES (?1, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                text_of(&run.kind),
                run.plan_hash,
                run.config,
                serde_json::to_string(&run.tasks).expect("strings serialize"),
                serde_json::to_string(&run.hosts).expect("strings serialize"),
                run.started_at,
                env!("CARGO_PKG_VERSION"),
                me.pid,
                me.hostname,
                me.boot_id,
                me.process_start.and_then(|s| i64::try_from(s).ok()),
                run.signer,
            ],
        )
        .map_err(self.err())?;
        Ok(RunId(conn.last_insert_rowid()))
    }

    fn record_actions(&self, run: RunId, actions: &[ActionRecord]) -> Result<(), StateError> {
        if actions.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
                [run.0],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        if !exists {
            return Err(StateError::NoSuchRun {
                db: self.db.clone(),
                run,
            });
        }
        for a in actions {
            let action = text_of(&a.action);
            tx.execute(
                "INSERT INTO actions (run_id, host, key, task, resource_id, kind, label, action, status, \
                 exit_code, duration_ms, attempts, output_tail, error, fingerprint_after, finished_at, \
                 holds_secrets) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    run.0,
                    a.host,
                    a.key,
                    a.task,
                    a.resource_id,
                    a.kind,
                    a.label,
                    action,
                    text_of(&a.status),
                    a.exit_code,
                    i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                    a.attempts,
                    cap_tail(&a.output_tail, OUTPUT_TAIL_MAX),
                    a.error.as_deref().map(|e| cap_head(e, OUTPUT_TAIL_MAX)),
                    a.fingerprint_after,
                    a.finished_at,
                    a.holds_secrets,
                ],
            )
            .map_err(self.err())?;
            // Column names come from this fixed match, never from input.
            let counter = match a.status {
                ActionStatus::Succeeded if a.action != Action::NoOp => {
                    "succeeded = succeeded + 1, changed = changed + 1"
                }
                ActionStatus::Succeeded => "succeeded = succeeded + 1",
                ActionStatus::Failed => "failed = failed + 1",
                ActionStatus::Skipped => "skipped = skipped + 1",
                ActionStatus::NotRun => "not_run = not_run + 1",
            };
            tx.execute(&format!("UPDATE runs SET {counter} WHERE id = ?1"), [run.0])
                .map_err(self.err())?;
            if a.status == ActionStatus::Succeeded {
                tx.execute(
                    "INSERT INTO last_applied (host, resource_id, kind, label, task, key, action, \
                     fingerprint, run_id, applied_at, holds_secrets) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (host, resource_id) DO UPDATE SET kind = excluded.kind, \
                     label = excluded.label, task = excluded.task, key = excluded.key, \
                     action = excluded.action, fingerprint = excluded.fingerprint, \
                     run_id = excluded.run_id, applied_at = excluded.applied_at, \
                     holds_secrets = excluded.holds_secrets",
                    params![
                        a.host,
                        a.resource_id,
                        a.kind,
                        a.label,
                        a.task,
                        a.key,
                        action,
                        a.fingerprint_after,
                        run.0,
                        a.finished_at,
                        a.holds_secrets,
                    ],
                )
                .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())
    }

    fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        summary_json: &str,
    ) -> Result<(), StateError> {
        if status == RunStatus::Running {
            return Err(StateError::Invalid {
                db: self.db.clone(),
                message: format!("run {run} cannot finish as running"),
            });
        }
        let conn = self.conn();
        let _full = FullSync::new(&conn).map_err(self.err())?;
        let changed = conn
            .execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
                params![run.0, text_of(&status), now_ms(), summary_json],
            )
            .map_err(self.err())?;
        if changed == 0 {
            return Err(StateError::NoSuchRun {
                db: self.db.clone(),
                run,
            });
        }
        Ok(())
    }

    fn applied(&self, plan_hash: &str) -> Result<Option<RunSummary>, StateError> {
        Ok(self
            .summary(
                "WHERE plan_hash = ?1 AND status != 'refused' ORDER BY id DESC LIMIT 1",
                &[&plan_hash],
            )?
            .pop())
    }

    fn history(&self, limit: usize) -> Result<Vec<RunSummary>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.summary("ORDER BY id DESC LIMIT ?1", &[&limit])
    }

    fn run(&self, run: RunId) -> Result<Option<RunSummary>, StateError> {
        Ok(self.summary("WHERE id = ?1", &[&run.0])?.pop())
    }

    fn run_actions(&self, run: RunId) -> Result<Vec<ActionRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT host, key, task, resource_id, kind, label, action, status, exit_code, \
                 duration_ms, attempts, output_tail, error, fingerprint_after, finished_at, \
                 holds_secrets FROM actions WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([run.0], |r| {
                Ok(ActionRecord {
                    host: r.get(0)?,
                    key: r.get(1)?,
                    task: r.get(2)?,
                    resource_id: r.get(3)?,
                    kind: r.get(4)?,
                    label: r.get(5)?,
                    action: name(r, 6)?,
                    status: name(r, 7)?,
                    exit_code: r.get(8)?,
                    duration_ms: r.get::<_, i64>(9)?.max(0) as u64,
                    attempts: r.get(10)?,
                    output_tail: r.get(11)?,
                    error: r.get(12)?,
                    fingerprint_after: r.get(13)?,
                    finished_at: r.get(14)?,
                    holds_secrets: r.get(15)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn notify_handler(
        &self,
        run: RunId,
        host: &str,
        handler: &str,
        notified_by: &str,
    ) -> Result<(), StateError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO pending_handlers (host, handler, since_run, notified_by, notified_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (host, handler) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    host,
                    handler,
                    run.0,
                    notified_by,
                    now_ms()
                ])
            })
            .map(|_| ())
            .map_err(self.err())
    }

    fn handler_succeeded(&self, host: &str, handler: &str) -> Result<(), StateError> {
        self.conn()
            .prepare_cached("DELETE FROM pending_handlers WHERE host = ?1 AND handler = ?2")
            .and_then(|mut st| st.execute([host, handler]))
            .map(|_| ())
            .map_err(self.err())
    }

    fn pending_handlers(&self) -> Result<Vec<PendingHandler>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT host, handler, since_run, notified_by, notified_at FROM pending_handlers \
                 ORDER BY host, handler",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingHandler {
                    host: r.get(0)?,
                    handler: r.get(1)?,
                    since_run: r.get(2)?,
                    notified_by: r.get(3)?,
                    notified_at: r.get(4)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn last_applied(&self, host: Option<&str>) -> Result<Vec<LastApplied>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT host, resource_id, kind, label, task, key, action, fingerprint, run_id, \
                 applied_at, holds_secrets FROM last_applied WHERE ?1 IS NULL OR host = ?1 \
                 ORDER BY host, resource_id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([host], |r| {
                Ok(LastApplied {
                    host: r.get(0)?,
                    resource_id: r.get(1)?,
                    kind: r.get(2)?,
                    label: r.get(3)?,
                    task: r.get(4)?,
                    key: r.get(5)?,
                    action: name(r, 6)?,
                    fingerprint: r.get(7)?,
                    run: RunId(r.get(8)?),
                    applied_at: r.get(9)?,
                    holds_secrets: r.get(10)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn secret_holders(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT host, resource_id FROM last_applied WHERE holds_secrets \
                 ORDER BY host, resource_id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn prune(&self, keep_runs: usize) -> Result<u64, StateError> {
        let keep = i64::try_from(keep_runs).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        // Runs still recorded as running keep their rows: they may be executing right now.
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS prune_runs (id INTEGER PRIMARY KEY); DELETE FROM prune_runs;",
        )
        .map_err(self.err())?;
        tx.execute(
            "INSERT INTO prune_runs SELECT id FROM runs WHERE status != 'running' AND id NOT IN \
             (SELECT id FROM runs ORDER BY id DESC LIMIT ?1)",
            [keep],
        )
        .map_err(self.err())?;
        let deleted = tx
            .execute(
                "DELETE FROM actions WHERE run_id IN (SELECT id FROM prune_runs)",
                [],
            )
            .map_err(self.err())?;
        tx.execute(
            "UPDATE runs SET pruned = 1 WHERE id IN (SELECT id FROM prune_runs)",
            [],
        )
        .map_err(self.err())?;
        tx.execute("DELETE FROM prune_runs", [])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        // Returns the freed pages to the filesystem (the database was created with
        // auto_vacuum=incremental); outside the transaction, as SQLite requires.
        conn.execute_batch("PRAGMA incremental_vacuum")
            .map_err(self.err())?;
        Ok(deleted as u64)
    }

    fn record_drift(&self, c: &NewDriftCheck) -> Result<i64, StateError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO drift_checks (checked_at, plan_hash, config, hosts, drifted, changes, \
             nexus_version, hostname) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.checked_at,
                c.plan_hash,
                c.config,
                serde_json::to_string(&c.hosts).expect("strings serialize"),
                serde_json::to_string(&c.drifted).expect("strings serialize"),
                i64::try_from(c.changes).unwrap_or(i64::MAX),
                env!("CARGO_PKG_VERSION"),
                Identity::current().hostname,
            ],
        )
        .map_err(self.err())?;
        Ok(conn.last_insert_rowid())
    }

    fn drift_checks(&self, limit: usize) -> Result<Vec<DriftCheck>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, checked_at, plan_hash, config, hosts, drifted, changes, nexus_version, \
                 hostname FROM drift_checks ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(DriftCheck {
                    id: r.get(0)?,
                    checked_at: r.get(1)?,
                    plan_hash: r.get(2)?,
                    config: r.get(3)?,
                    hosts: json_list(r, 4)?,
                    drifted: json_list(r, 5)?,
                    changes: count(r, 6)?,
                    nexus_version: r.get(7)?,
                    hostname: r.get(8)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn record_generation(&self, run: RunId, g: &NewGeneration) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        tx.execute(
            "INSERT INTO run_plans (run_id, plan, rollback_of) VALUES (?1, ?2, ?3)",
            params![run.0, g.plan, g.rollback_of.map(|r| r.0)],
        )
        .map_err(self.err())?;
        for b in &g.blobs {
            tx.execute(
                "INSERT OR IGNORE INTO blobs (hash, sealed, data) VALUES (?1, ?2, ?3)",
                params![b.hash, b.sealed, b.data],
            )
            .map_err(self.err())?;
        }
        for p in &g.preimages {
            tx.execute(
                "INSERT INTO preimages (run_id, host, key, seq, resource_id, image, blob, \
                 fingerprint_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.0,
                    p.host,
                    p.key,
                    p.seq,
                    p.resource_id,
                    serde_json::to_string(&p.image).expect("images serialize"),
                    p.blob,
                    p.fingerprint_after,
                ],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    fn record_fingerprints_after(
        &self,
        run: RunId,
        after: &[(String, String, String)],
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err())?;
        for (host, key, fp) in after {
            tx.execute(
                "UPDATE preimages SET fingerprint_after = ?4 WHERE run_id = ?1 AND host = ?2 \
                 AND key = ?3",
                params![run.0, host, key, fp],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    fn preimages(&self, host: &str, after: RunId) -> Result<Vec<Preimage>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT run_id, host, key, seq, resource_id, image, blob, fingerprint_after \
                 FROM preimages WHERE host = ?1 AND run_id > ?2 AND fingerprint_after IS NOT NULL \
                 ORDER BY run_id, seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![host, after.0], |r| {
                Ok(Preimage {
                    run: RunId(r.get(0)?),
                    host: r.get(1)?,
                    key: r.get(2)?,
                    seq: r.get(3)?,
                    resource_id: r.get(4)?,
                    image: json_column(r, 5)?,
                    blob: r.get(6)?,
                    fingerprint_after: r.get(7)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn run_plan(&self, run: RunId) -> Result<Option<RunPlan>, StateError> {
        self.conn()
            .query_row(
                "SELECT plan, rollback_of FROM run_plans WHERE run_id = ?1",
                [run.0],
                |r| {
                    Ok(RunPlan {
                        run,
                        plan: r.get(0)?,
                        rollback_of: r.get::<_, Option<i64>>(1)?.map(RunId),
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    fn blob(&self, hash: &str) -> Result<Option<Blob>, StateError> {
        self.conn()
            .query_row(
                "SELECT hash, sealed, data FROM blobs WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(Blob {
                        hash: r.get(0)?,
                        sealed: r.get(1)?,
                        data: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    fn gc_generations(&self, keep: usize) -> Result<u64, StateError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        // A host's generations are the runs that changed something on it.
        let deleted = tx
            .execute(
                "DELETE FROM preimages WHERE (SELECT COUNT(DISTINCT n.run_id) FROM preimages n \
                 WHERE n.host = preimages.host AND n.fingerprint_after IS NOT NULL \
                 AND n.run_id > preimages.run_id) >= ?1",
                [keep],
            )
            .map_err(self.err())?;
        tx.execute(
            "DELETE FROM run_plans WHERE run_id NOT IN (SELECT run_id FROM preimages)",
            [],
        )
        .map_err(self.err())?;
        tx.execute(
            "DELETE FROM blobs WHERE hash NOT IN (SELECT blob FROM preimages WHERE blob IS NOT NULL)",
            [],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        conn.execute_batch("PRAGMA incremental_vacuum")
            .map_err(self.err())?;
        Ok(deleted as u64)
    }
}
