//! State: what nexus did, kept in a database next to the config (`.nexus/state.db`).
//!
//! Runs (one per `nexus apply` / `nexus run`), the actions they executed with their results, the
//! last applied state of every host+resource, and the apply lock that keeps two applies off the
//! same state at once. See docs/state.md for the schema and the lock's semantics.
//!
//! Callers use the [`StateStore`] trait; [`Location::open`] gives the SQLite store (a file, the
//! default) or the PostgreSQL one (a URL, shared by a team). Every write is its own transaction,
//! so a process killed at any point leaves a database that opens and tells the truth about what
//! was recorded up to then.

mod lock;
mod postgres;
mod preimage;
mod sqlite;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::plan::Action;

pub use lock::{LockGuard, LockHolder, Recovered};
pub use postgres::{Imported, PG_SCHEMA_VERSION, PgSettings, PostgresStore, redact_url};
pub use preimage::{Blob, Image, NewGeneration, OwnGroup, Preimage, RunPlan};
pub use sqlite::{DEFAULT_LOCK_MAX_AGE, SCHEMA_VERSION, SqliteStore};

/// The text form of an enum, as both backends store it.
pub(crate) fn text_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("unit enums serialize as strings, not {other:?}"),
    }
}

/// Whether `s` names a PostgreSQL server (libpq's URL form) rather than a SQLite file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

/// Where a project's state is: decided once per command (app/state.rs), opened here.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file (default: `.nexus/state.db` beside the configuration).
    Sqlite(PathBuf),
    Postgres(PgSettings),
}

impl Location {
    /// Opens the store, creating or migrating its schema.
    pub fn open(&self) -> Result<std::sync::Arc<dyn StateStore>, StateError> {
        Ok(match self {
            Location::Sqlite(p) => std::sync::Arc::new(SqliteStore::open(p)?),
            Location::Postgres(s) => std::sync::Arc::new(PostgresStore::open(s.clone())?),
        })
    }

    /// Whether there is anything to read: a SQLite file that does not exist holds no state (and
    /// reading must not create it); a database server always counts.
    pub fn exists(&self) -> bool {
        match self {
            Location::Sqlite(p) => p.exists(),
            Location::Postgres(_) => true,
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(s) => format!("{} (project {:?})", redact_url(&s.url), s.project),
        }
    }
}

/// The most output a recorded action keeps (the end of it: errors are usually last).
pub const OUTPUT_TAIL_MAX: usize = 4096;

/// Generations per host whose pre-images `nexus state gc` keeps by default; hosts keep as many
/// old package files per package (`resources::package`), so a rollback that far finds them.
pub const KEEP_GENERATIONS: usize = 10;

/// Opens (creating if needed) the SQLite state database at `path`: creates the parent directory,
/// switches to WAL, and runs pending migrations. A database written by a newer nexus is refused.
pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
    SqliteStore::open(path)
}

/// The default database: `.nexus/state.db` in the config file's directory, so that state follows
/// the project rather than the current directory.
pub fn default_path(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new(""))
        .join(crate::nexus_dir::NAME)
        .join("state.db")
}

/// Where nexus keeps what it did. One implementation per backend; all methods are safe to call
/// from several threads (the executor records actions of hosts that run concurrently).
pub trait StateStore: Send + Sync {
    /// The database, for messages (a path, or later a URL without credentials).
    fn location(&self) -> String;

    /// Takes the apply lock for `holder`, or fails with [`StateError::Locked`] naming the current
    /// holder. A lock whose holder is provably gone (same host, process dead, pid reused, or the
    /// host rebooted) is taken over; so is one that cannot be checked (another host) once it is
    /// older than the store's max age. The guard reports such a recovery and releases on drop.
    fn lock(&self, holder: &LockHolder) -> Result<LockGuard, StateError>;

    /// Who holds the apply lock, if anyone (whether or not that holder is still alive).
    fn lock_holder(&self) -> Result<Option<LockHolder>, StateError>;

    /// Removes the apply lock whoever holds it, returning the holder it removed. Runs that holder
    /// left running are marked interrupted.
    fn force_unlock(&self) -> Result<Option<LockHolder>, StateError>;

    /// Records the start of a run; its owner is the calling process.
    fn begin_run(&self, run: &NewRun) -> Result<RunId, StateError>;

    /// Records one executed (or skipped) resource in one transaction, together with the run's
    /// counters and, when it succeeded, the host+resource's last applied state.
    fn record_action(&self, run: RunId, action: &ActionRecord) -> Result<(), StateError> {
        self.record_actions(run, std::slice::from_ref(action))
    }
    /// Records several actions in one transaction: all of them or none. The executor uses it for
    /// runs of no-op resources, which did nothing on any host, so a transaction each would only
    /// cost time (900 no-ops: ~0.1 s).
    fn record_actions(&self, run: RunId, actions: &[ActionRecord]) -> Result<(), StateError>;

    /// Records how a run ended. `summary_json` is stored as given (shown by `nexus history`).
    fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        summary_json: &str,
    ) -> Result<(), StateError>;

    /// The latest run of this plan that started executing (anything but refused): a saved plan
    /// must not be applied twice.
    fn applied(&self, plan_hash: &str) -> Result<Option<RunSummary>, StateError>;

    /// Notes that a change of `run` notified `handler` on `host`. A handler already pending
    /// there keeps its first run and notifier.
    fn notify_handler(
        &self,
        run: RunId,
        host: &str,
        handler: &str,
        notified_by: &str,
    ) -> Result<(), StateError>;

    /// The handler succeeded on the host: it is no longer pending.
    fn handler_succeeded(&self, host: &str, handler: &str) -> Result<(), StateError>;

    /// Every pending handler, by host then handler.
    fn pending_handlers(&self) -> Result<Vec<PendingHandler>, StateError>;

    /// Runs, newest first, at most `limit`.
    fn history(&self, limit: usize) -> Result<Vec<RunSummary>, StateError>;

    /// One run.
    fn run(&self, run: RunId) -> Result<Option<RunSummary>, StateError>;

    /// A run's actions in the order they were recorded (empty once pruned).
    fn run_actions(&self, run: RunId) -> Result<Vec<ActionRecord>, StateError>;

    /// The last applied state of every resource, or of one host's, ordered by host and resource.
    fn last_applied(&self, host: Option<&str>) -> Result<Vec<LastApplied>, StateError>;

    /// (host, resource id) of every resource whose last applied content holds vault values,
    /// ordered by host and resource: what every plan reads, so it does not load the whole
    /// [`StateStore::last_applied`] (a row per resource of the fleet) for the few it needs.
    /// It reads no other column, so a row whose other fields no longer parse still counts.
    fn secret_holders(&self) -> Result<Vec<(String, String)>, StateError>;

    /// Retention: deletes the action rows (and their output tails) of all finished runs but the
    /// newest `keep_runs`. Run rows stay, so history, replay protection and the last applied state
    /// are unaffected. Returns how many action rows were deleted.
    fn prune(&self, keep_runs: usize) -> Result<u64, StateError>;

    /// Records a drift check (`nexus plan --record`); returns its id.
    fn record_drift(&self, check: &NewDriftCheck) -> Result<i64, StateError>;

    /// Drift checks, newest first, at most `limit`.
    fn drift_checks(&self, limit: usize) -> Result<Vec<DriftCheck>, StateError>;

    /// Records, in one transaction, the plan `run` executes and the pre-images of the resources
    /// it is about to change, with their contents (docs/rollback.md).
    fn record_generation(&self, run: RunId, generation: &NewGeneration) -> Result<(), StateError>;

    /// Marks the resources of `run` that it changed, with the fingerprint each host showed after:
    /// `(host, key, fingerprint)`.
    fn record_fingerprints_after(
        &self,
        run: RunId,
        after: &[(String, String, String)],
    ) -> Result<(), StateError>;

    /// The pre-images of `host` that runs after `after` changed, oldest run first, then in plan
    /// order.
    fn preimages(&self, host: &str, after: RunId) -> Result<Vec<Preimage>, StateError>;

    /// The plan a run executed, when it was recorded.
    fn run_plan(&self, run: RunId) -> Result<Option<RunPlan>, StateError>;

    /// A stored content.
    fn blob(&self, hash: &str) -> Result<Option<Blob>, StateError>;

    /// Retention: deletes the pre-images, recorded plans and unreferenced blobs of each host but
    /// those of its newest `keep` generations. Returns how many pre-images were deleted.
    fn gc_generations(&self, keep: usize) -> Result<u64, StateError>;
}

/// A run's id, increasing with every run recorded in one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `nexus apply FILE`: a saved plan.
    Apply,
    /// `nexus run`: plan and apply in one go.
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Executing, as far as the database knows.
    Running,
    Succeeded,
    Failed,
    /// Nothing was executed: the plan was stale or already applied.
    Refused,
    /// The process stopped (killed, crashed, host rebooted) without recording an end.
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    Succeeded,
    Failed,
    /// Deliberately not executed (a handler nobody notified, a guard that held).
    Skipped,
    /// Not reached: an earlier failure stopped the host, task or rollout.
    NotRun,
}

/// What [`StateStore::begin_run`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// `lockfile::hash` of the plan: what replay protection compares.
    pub plan_hash: String,
    /// The root config file, as the plan names it.
    pub config: String,
    pub kind: RunKind,
    pub tasks: Vec<String>,
    pub hosts: Vec<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    /// The principal whose signature on the plan apply verified (docs/ci.md).
    pub signer: Option<String>,
}

/// What `nexus plan --record` writes: one scheduled drift check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDriftCheck {
    pub plan_hash: String,
    pub config: String,
    /// Every host planned.
    pub hosts: Vec<String>,
    /// The hosts whose plan had changes.
    pub drifted: Vec<String>,
    /// How many resources would change.
    pub changes: u64,
    /// Unix milliseconds.
    pub checked_at: i64,
}

/// A recorded drift check, as `nexus history --drift` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftCheck {
    pub id: i64,
    pub checked_at: i64,
    pub plan_hash: String,
    pub config: String,
    pub hosts: Vec<String>,
    pub drifted: Vec<String>,
    pub changes: u64,
    pub nexus_version: String,
    /// The machine that ran the check.
    pub hostname: String,
}

/// One executed (or skipped) resource of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub host: String,
    /// The plan's `PlannedResource::key` (`TASK#N`).
    pub key: String,
    pub task: String,
    /// Resource identity (`file:/etc/motd`).
    pub resource_id: String,
    /// Resource type (`file`).
    pub kind: String,
    pub label: String,
    /// What the plan said to do.
    pub action: Action,
    pub status: ActionStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub attempts: u32,
    /// The end of the output, already redacted by the caller; stored capped at
    /// [`OUTPUT_TAIL_MAX`] bytes.
    pub output_tail: String,
    pub error: Option<String>,
    /// The resource's fingerprint after applying, when the executor re-probed it.
    pub fingerprint_after: Option<String>,
    /// Unix milliseconds.
    pub finished_at: i64,
    /// The content the action left on the host holds vault values.
    #[serde(default)]
    pub holds_secrets: bool,
}

/// Counters of a run's recorded actions. Kept on the run row, so they survive pruning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCounts {
    pub succeeded: u64,
    /// Succeeded with an action other than no-op.
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub not_run: u64,
}

/// A run as `nexus history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub kind: RunKind,
    /// A run recorded as running whose process is provably gone reads as interrupted.
    pub status: RunStatus,
    pub plan_hash: String,
    pub config: String,
    pub tasks: Vec<String>,
    pub hosts: Vec<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub counts: ActionCounts,
    /// What the executor passed to `finish_run` (null until then).
    pub summary: serde_json::Value,
    pub nexus_version: String,
    /// Who ran it.
    pub pid: u32,
    pub hostname: String,
    /// The principal that signed the plan, when apply verified a signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The action rows were deleted by retention; counts remain.
    pub pruned: bool,
}

/// The last successful apply of one resource on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastApplied {
    pub host: String,
    pub resource_id: String,
    pub kind: String,
    pub label: String,
    pub task: String,
    pub key: String,
    pub action: Action,
    pub fingerprint: Option<String>,
    pub run: RunId,
    /// Unix milliseconds.
    pub applied_at: i64,
    /// The content last written holds vault values (planning never diffs it).
    #[serde(default)]
    pub holds_secrets: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the directory {dir} for the state database: {source}")]
    CreateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state database {db}: {source}")]
    Open {
        db: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state database {db}: {source}")]
    Backend {
        db: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the state database {db} was written by a newer nexus (schema version {found}; this nexus \
         knows up to {known}): upgrade nexus, or use another --state file"
    )]
    NewerSchema { db: String, found: i64, known: i64 },
    #[error(
        "{db} is not a nexus state database (it has tables but no schema_version): use another \
         --state file"
    )]
    NotNexus { db: String },
    #[error(
        "the state database {db} is locked by another apply: {holder}; wait for it to finish, or \
         if that process is gone for good run `nexus state --force-unlock`"
    )]
    Locked { db: String, holder: Box<LockHolder> },
    #[error("state database {db}: no run {run}")]
    NoSuchRun { db: String, run: RunId },
    #[error("state database {db}: {message}")]
    Invalid { db: String, message: String },
}

/// Now, in unix milliseconds (the unit of every time in the state).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A unix-ms time as RFC 3339 in UTC, to the second (`2026-05-01T12:00:03Z`).
pub fn format_time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => "?".to_string(),
    }
}

/// A duration in milliseconds, short and human: `850ms`, `12.3s`, `4m05s`, `2h07m`, `3d04h`.
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The last `max` bytes of `text` (on a character boundary), marked when something was cut.
pub fn cap_tail(text: &str, max: usize) -> Cow<'_, str> {
    const MARK: &str = "[earlier output cut]\n";
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut start = text.len() - max.saturating_sub(MARK.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut out = String::with_capacity(max);
    if max >= MARK.len() {
        out.push_str(MARK);
    }
    out.push_str(&text[start..]);
    Cow::Owned(out)
}

/// The first `max` bytes of `text` (on a character boundary), marked when something was cut:
/// for error messages, whose first line says what went wrong.
pub fn cap_head(text: &str, max: usize) -> Cow<'_, str> {
    const MARK: &str = " [cut]";
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_keep_boundaries_and_size() {
        let text = "é".repeat(5000);
        let tail = cap_tail(&text, OUTPUT_TAIL_MAX);
        assert!(tail.len() <= OUTPUT_TAIL_MAX);
        assert!(tail.starts_with("[earlier output cut]\n"));
        assert!(text.ends_with(tail.trim_start_matches("[earlier output cut]\n")));
        let head = cap_head(&text, 101);
        assert!(head.len() <= 101 && head.ends_with(" [cut]"));
        assert_eq!(cap_tail("short", 10), "short");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(850), "850ms");
        assert_eq!(format_duration(12_340), "12.3s");
        assert_eq!(format_duration(245_000), "4m05s");
        assert_eq!(format_duration(7_620_000), "2h07m");
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn default_path_is_next_to_the_config() {
        assert_eq!(
            default_path(Path::new("nexus.kdl")),
            Path::new(".nexus/state.db")
        );
        assert_eq!(
            default_path(Path::new("/srv/x/nexus.kdl")),
            Path::new("/srv/x/.nexus/state.db")
        );
    }
}

/// A handler notified by a change on a host that has not yet succeeded there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingHandler {
    pub host: String,
    pub handler: String,
    /// The run whose change first notified it.
    pub since_run: i64,
    /// The label of that change (`file /etc/nginx/sites-enabled/site`).
    pub notified_by: String,
    pub notified_at: i64,
}
