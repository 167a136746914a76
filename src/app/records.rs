//! What the state store holds, for the commands that only look (`nexus history`, `nexus state`)
//! or tidy it (`--prune`, `--force-unlock`). A store that does not exist yet reads as empty:
//! looking must never create it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::Error;
use crate::state::{
    ActionRecord, DriftCheck, LastApplied, Location, LockHolder, PendingHandler, RunId, RunSummary,
    StateStore,
};

/// The state store of one configuration, opened only if it exists.
pub struct Records {
    location: Location,
    store: Option<Arc<dyn StateStore>>,
}

/// One run with its actions, each with why the plan changed it when the plan is recorded.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunSummary,
    pub actions: Vec<PlannedAction>,
}

#[derive(Debug, Serialize)]
pub struct PlannedAction {
    #[serde(flatten)]
    pub action: ActionRecord,
    /// Why the plan the run executed changed this resource ("replace symlink -> /x"); absent
    /// when the run's plan is not recorded (`nexus run`, or removed by `state gc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `nexus state` shows: the last applied state, pending handlers, and the apply lock.
pub struct Applied {
    pub resources: Vec<LastApplied>,
    pub pending: Vec<PendingHandler>,
    pub lock: Option<LockHolder>,
    /// With a host that has nothing recorded: the hosts that have (to suggest one).
    pub hosts_with_state: Vec<String>,
}

impl Records {
    /// The store this invocation uses: `--state`, the configuration's `state`, or
    /// `.nexus/state.db` next to the configuration.
    pub fn open(flag: Option<&str>, config: &Path) -> Result<Records, Error> {
        let location = super::state::of_config_file(flag, config)?;
        let store = if location.exists() {
            Some(location.open()?)
        } else {
            None
        };
        Ok(Records { location, store })
    }

    /// How messages name the store (a path, or a URL without its password).
    pub fn database(&self) -> String {
        self.location.describe()
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn exists(&self) -> bool {
        self.store.is_some()
    }

    /// The newest `limit` runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, Error> {
        Ok(match &self.store {
            Some(s) => s.history(limit)?,
            None => Vec::new(),
        })
    }

    /// Deletes the recorded actions of all but the newest `keep` runs; how many were deleted.
    pub fn prune(&self, keep: usize) -> Result<u64, Error> {
        Ok(match &self.store {
            Some(s) => s.prune(keep)?,
            None => 0,
        })
    }

    pub fn drift_checks(&self, limit: usize) -> Result<Vec<DriftCheck>, Error> {
        Ok(match &self.store {
            Some(s) => s.drift_checks(limit)?,
            None => Vec::new(),
        })
    }

    /// `host`'s newest `limit` generations, newest first.
    pub fn generations(
        &self,
        host: &str,
        limit: usize,
    ) -> Result<Vec<super::rollback::Generation>, Error> {
        let mut all = match &self.store {
            Some(s) => super::rollback::generations(s.as_ref(), host)?,
            None => Vec::new(),
        };
        all.truncate(limit);
        Ok(all)
    }

    /// Run `id` with its actions; [`Error::NoSuchRun`] names the newest run when it is not there.
    pub fn run(&self, id: RunId) -> Result<RunDetail, Error> {
        let found = match &self.store {
            Some(s) => s.run(id)?,
            None => None,
        };
        let (Some(store), Some(run)) = (&self.store, found) else {
            let hint = match self.runs(1)?.first() {
                Some(n) => format!("; the newest is {} (`nexus history` lists them)", n.id),
                None => "; no runs are recorded there yet".to_string(),
            };
            return Err(Error::NoSuchRun {
                id: id.0,
                database: self.database(),
                hint,
            });
        };
        let mut reasons = planned_reasons(store.as_ref(), id)?;
        let actions = store
            .run_actions(id)?
            .into_iter()
            .map(|a| PlannedAction {
                reason: reasons.remove(&(a.host.clone(), a.key.clone())),
                action: a,
            })
            .collect();
        Ok(RunDetail { run, actions })
    }

    /// The last applied state (of `host`, or of every host), pending handlers and the lock.
    pub fn applied(&self, host: Option<&str>) -> Result<Applied, Error> {
        let Some(store) = &self.store else {
            return Ok(Applied {
                resources: Vec::new(),
                pending: Vec::new(),
                lock: None,
                hosts_with_state: Vec::new(),
            });
        };
        let resources = store.last_applied(host)?;
        let mut pending = store.pending_handlers()?;
        if let Some(h) = host {
            pending.retain(|p| p.host == h);
        }
        let hosts_with_state = if host.is_some() && resources.is_empty() {
            let mut hosts: Vec<String> = store
                .last_applied(None)?
                .into_iter()
                .map(|r| r.host)
                .collect();
            hosts.dedup();
            hosts
        } else {
            Vec::new()
        };
        Ok(Applied {
            resources,
            pending,
            lock: store.lock_holder()?,
            hosts_with_state,
        })
    }

    /// Removes the apply lock whoever holds it; who held it, if anyone.
    pub fn force_unlock(&self) -> Result<Option<LockHolder>, Error> {
        Ok(match &self.store {
            Some(s) => s.force_unlock()?,
            None => None,
        })
    }
}

/// Why the plan run `id` executed changed each resource, by host and key; empty when the run's
/// plan is not recorded.
fn planned_reasons(
    store: &dyn StateStore,
    id: RunId,
) -> Result<BTreeMap<(String, String), String>, Error> {
    let Some(recorded) = store.run_plan(id)? else {
        return Ok(BTreeMap::new());
    };
    let Ok(plan) = serde_json::from_str::<crate::plan::Plan>(&recorded.plan) else {
        return Ok(BTreeMap::new());
    };
    Ok(plan
        .hosts
        .iter()
        .flat_map(|h| {
            h.resources
                .iter()
                .map(|r| ((h.name.clone(), r.key.clone()), r.reason.clone()))
        })
        .collect())
}
