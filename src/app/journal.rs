//! What a run could not record because its state store became unreachable (a PostgreSQL server
//! that went away mid-apply, a full disk): kept in a local file, so nothing the hosts did is
//! forgotten, until `nexus state --recover` writes it into the store. While such a file exists,
//! apply and run refuse to start: pending handlers and last-applied records would be missing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::state::{ActionRecord, RunId, RunStatus, StateStore};

/// One thing the recorder writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Action(ActionRecord),
    /// A change notified a handler on a host: pending until it succeeds there.
    Notified {
        host: String,
        handler: String,
        by: String,
    },
    /// A handler succeeded on a host.
    HandlerSucceeded {
        host: String,
        handler: String,
    },
}

impl Record {
    pub fn write(
        &self,
        store: &dyn StateStore,
        run: RunId,
    ) -> Result<(), crate::state::StateError> {
        match self {
            Record::Action(a) => store.record_action(run, a),
            Record::Notified { host, handler, by } => store.notify_handler(run, host, handler, by),
            Record::HandlerSucceeded { host, handler } => store.handler_succeeded(host, handler),
        }
    }
}

/// The unrecorded part of one run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    /// The store it belongs to, as messages name it.
    pub location: String,
    pub run: RunId,
    /// Why recording stopped.
    pub error: String,
    pub records: Vec<Record>,
}

/// Where the journals of a project are: `.nexus/unrecorded/` beside its configuration.
pub fn dir(config_dir: &Path) -> PathBuf {
    config_dir.join(crate::nexus_dir::NAME).join("unrecorded")
}

/// Writes `journal` (0600) and returns its path.
pub fn write(dir: &Path, journal: &Journal) -> std::io::Result<PathBuf> {
    crate::nexus_dir::create(dir)?;
    let path = dir.join(format!("run-{}.json", journal.run));
    let tmp = dir.join(format!(".run-{}.json.{}", journal.run, std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write as _;
        let mut f = crate::nexus_dir::new_private_file().open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(journal).expect("records serialize"))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The journals waiting to be recovered, oldest run first.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with(".json"))
        })
        .collect();
    out.sort();
    out
}

/// Refuses to start while results of an earlier run are unrecorded.
pub fn refuse_if_pending(dir: &Path) -> Result<(), Error> {
    let journals = pending(dir);
    if journals.is_empty() {
        Ok(())
    } else {
        Err(Error::UnrecordedPending { journals })
    }
}

/// `nexus state --recover`: under the apply lock, writes the journals of the project whose
/// configuration is in `config_dir` into the store at `location`.
pub fn recover_at(
    location: &crate::state::Location,
    config_dir: &Path,
) -> Result<Vec<(RunId, usize)>, Error> {
    let dir = dir(config_dir);
    if pending(&dir).is_empty() {
        return Ok(Vec::new());
    }
    let store = location.open()?;
    let guard = store.lock(&crate::state::LockHolder::current("nexus state --recover"))?;
    let done = recover(&dir, &*store)?;
    guard.release()?;
    Ok(done)
}

/// Writes every journal in `dir` into `store`, ends its run as interrupted, and removes it.
/// Returns the runs recovered and how many records each had.
pub fn recover(dir: &Path, store: &dyn StateStore) -> Result<Vec<(RunId, usize)>, Error> {
    let mut done = Vec::new();
    for path in pending(dir) {
        let io = |source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        };
        let text = std::fs::read(&path).map_err(io)?;
        let journal: Journal = serde_json::from_slice(&text)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        for r in &journal.records {
            r.write(store, journal.run)?;
        }
        let summary = serde_json::json!({
            "status": "interrupted",
            "reason": format!("the state store became unreachable: {}", journal.error),
            "recovered_records": journal.records.len(),
        });
        store.finish_run(journal.run, RunStatus::Interrupted, &summary.to_string())?;
        std::fs::remove_file(&path).map_err(|source| Error::Io {
            action: "remove",
            path: path.clone(),
            source,
        })?;
        done.push((journal.run, journal.records.len()));
    }
    Ok(done)
}
