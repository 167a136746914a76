//! `rollback [--to RUN] [--host H...]`: an ordinary plan that restores, on each host, the
//! pre-images of the resources that the runs after RUN changed (docs/rollback.md). It is hashed,
//! rendered by `show`, stale-checked by apply against the fingerprints the hosts showed right
//! after those runs (a host that drifted since is refused), and recorded as a rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::Error;
use super::secrets::{self, Needs, Source};
use crate::exec::stale;
use crate::inventory::{Inventory, Overrides};
use crate::plan::{Action, Step};
use crate::plan::{
    FORMAT_VERSION, HostPlan, Irreversible, Plan, PlannedResource, Role, Rollback, Selection,
    Summary, TaskPlan,
};
use crate::resources::preimage::{
    Restore, oldest_undo_suffices, redone_by_its_steps, restore, undo,
};
use crate::state::{Preimage, RunId, RunStatus, StateStore};

pub use crate::state::KEEP_GENERATIONS;

/// `nexus state gc`: under the apply lock (an apply may be recording pre-images), deletes the
/// pre-images of each host's generations but the newest `keep`. Returns how many it deleted.
pub fn gc(
    location: &crate::state::Location,
    config: &std::path::Path,
    keep: usize,
) -> Result<u64, Error> {
    if !location.exists() {
        return Ok(0);
    }
    let dir = config.parent().unwrap_or(std::path::Path::new(""));
    let state = super::record::Locked::take(location, "nexus state gc", dir)?;
    let deleted = state.store.gc_generations(keep)?;
    state.guard.release()?;
    Ok(deleted)
}

/// The task every rollback plan runs its restorations in.
pub const TASK: &str = "rollback";

#[derive(Debug, Clone)]
pub struct Request {
    /// `-c`: where the state is by default.
    pub config: PathBuf,
    /// `--state`.
    pub state: Option<String>,
    /// Restore what the hosts were right after this run; default: undo the last run.
    pub to: Option<i64>,
    /// Only these hosts; default: every host a run after `to` changed.
    pub hosts: Vec<String>,
    /// Take the hosts' current state as the plan's expected state, drifted or not.
    pub force: bool,
    pub overrides: Overrides,
    pub parallel: usize,
}

/// A rollback plan and what it could not undo.
pub struct RolledBack {
    pub plan: Plan,
    /// With `--force`: the resources whose current state differed from what the run left.
    pub forced: Vec<stale::Drift>,
}

/// One generation of a host: a run that succeeded there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    pub run: RunId,
    pub plan_hash: String,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The run was `nexus run` (no pre-images: it cannot be rolled back).
    pub kind: crate::state::RunKind,
    /// It was a rollback, to the state after this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<RunId>,
    /// Pre-images were recorded: a rollback can undo it.
    pub reversible: bool,
}

/// The generations of `host`, newest first: the runs that succeeded on it.
pub fn generations(store: &dyn StateStore, host: &str) -> Result<Vec<Generation>, Error> {
    let mut out = Vec::new();
    for run in store.history(usize::MAX)? {
        if run.status != RunStatus::Succeeded || !run.hosts.iter().any(|h| h == host) {
            continue;
        }
        let recorded = store.run_plan(run.id)?;
        out.push(Generation {
            run: run.id,
            plan_hash: run.plan_hash,
            started_at: run.started_at,
            signer: run.signer,
            kind: run.kind,
            rollback_to: recorded.as_ref().and_then(|p| p.rollback_of),
            reversible: recorded.is_some(),
        });
    }
    Ok(out)
}

/// Builds the rollback plan of `req`.
pub fn rollback(req: &Request) -> Result<RolledBack, Error> {
    let location = super::state::of_config_file(req.state.as_deref(), &req.config)?;
    if !location.exists() {
        return Err(nothing(format!(
            "no state at {}: nothing was applied yet",
            location.describe()
        )));
    }
    let store = location.open()?;
    if let Some(to) = req.to
        && to != 0
        && store.run(RunId(to))?.is_none()
    {
        return Err(Error::NoSuchRun {
            id: to,
            database: location.describe(),
            hint: String::new(),
        });
    }
    let hosts: Vec<String> = match req.hosts.is_empty() {
        false => req.hosts.clone(),
        true => {
            let mut all = BTreeSet::new();
            for run in store.history(usize::MAX)? {
                all.extend(run.hosts);
            }
            all.into_iter().collect()
        }
    };
    let mut images: BTreeMap<String, Vec<Preimage>> = BTreeMap::new();
    for h in &hosts {
        images.insert(h.clone(), store.preimages(h, RunId(req.to.unwrap_or(0)))?);
    }
    // Without --to: undo the newest run that changed any of the hosts.
    let to = match req.to {
        Some(to) => to,
        None => {
            let last = images.values().flatten().map(|p| p.run.0).max();
            let last = last.ok_or_else(|| {
                nothing("no run recorded pre-images of a change on these hosts".into())
            })?;
            last - 1
        }
    };
    for list in images.values_mut() {
        list.retain(|p| p.run.0 > to);
    }
    // A change in the range whose pre-images are missing would be silently left in place.
    for run in store.history(usize::MAX)? {
        let touched = run.hosts.iter().any(|h| hosts.contains(h));
        if run.id.0 <= to || !touched || run.counts.changed == 0 {
            continue;
        }
        if store.run_plan(run.id)?.is_none() {
            return Err(nothing(match run.kind {
                crate::state::RunKind::Run => format!(
                    "run {} (`nexus run`) changed these hosts and records no pre-images; \
                     roll back to run {} or later",
                    run.id, run.id
                ),
                crate::state::RunKind::Apply => format!(
                    "the pre-images of run {} are no longer recorded (pruned by `nexus state \
                     gc`, or made before nexus kept them); roll back to run {} or later",
                    run.id, run.id
                ),
            }));
        }
    }
    let runs: BTreeSet<i64> = images.values().flatten().map(|p| p.run.0).collect();
    if runs.is_empty() {
        return Err(nothing(format!(
            "no run after run {to} changed {}",
            hosts.join(", ")
        )));
    }
    let mut plans: BTreeMap<i64, Plan> = BTreeMap::new();
    for run in &runs {
        let recorded = store.run_plan(RunId(*run))?.ok_or_else(|| {
            nothing(format!(
                "the plan of run {run} is no longer recorded (pruned by `nexus state gc`)"
            ))
        })?;
        let plan: Plan = serde_json::from_str(&recorded.plan).map_err(|e| {
            nothing(format!(
                "the recorded plan of run {run} cannot be read: {e}"
            ))
        })?;
        plans.insert(*run, plan);
    }
    let mut plan = build(&*store, to, &images, &plans)?;
    let forced = match req.force {
        true => force(&mut plan, req)?,
        false => Vec::new(),
    };
    Ok(RolledBack { plan, forced })
}

/// The plan undoing what run `run` (of `plan`) changed in the task `task` whose rollout stopped
/// (`on-failure="rollback"`), on each host where it changed something; the task's health checks
/// follow the restorations on those hosts, so their result after the rollback is reported.
pub fn of_stopped_task(
    store: &dyn StateStore,
    plan: &Plan,
    run: RunId,
    task: &str,
) -> Result<Plan, Error> {
    let before = run.0 - 1;
    let mut images: BTreeMap<String, Vec<Preimage>> = BTreeMap::new();
    for h in &plan.hosts {
        let in_task: BTreeSet<&str> = h
            .resources
            .iter()
            .filter(|r| r.task == task && r.role == Role::Task)
            .map(|r| r.key.as_str())
            .collect();
        if in_task.is_empty() {
            continue;
        }
        let list: Vec<Preimage> = store
            .preimages(&h.name, RunId(before))?
            .into_iter()
            .filter(|p| p.run == run && in_task.contains(p.key.as_str()))
            .collect();
        if !list.is_empty() {
            images.insert(h.name.clone(), list);
        }
    }
    if images.is_empty() {
        return Err(nothing(format!(
            "run {run} changed nothing in task {task} before its rollout stopped"
        )));
    }
    let plans = BTreeMap::from([(run.0, plan.clone())]);
    let mut rolled = build(store, before, &images, &plans)?;
    for host in &mut rolled.hosts {
        let checks = plan
            .hosts
            .iter()
            .filter(|h| h.name == host.name)
            .flat_map(|h| &h.resources)
            .filter(|r| r.task == task && r.role == Role::HealthCheck);
        let checks: Vec<PlannedResource> = checks
            .enumerate()
            .map(|(i, r)| PlannedResource {
                key: format!("{TASK}#check{}", i + 1),
                task: TASK.into(),
                ..r.clone()
            })
            .collect();
        host.resources.extend(checks);
    }
    Ok(rolled)
}

fn nothing(reason: String) -> Error {
    Error::NothingToRollBack { reason }
}

/// Splits changes of one resource (newest first) into segments, each undone by its oldest
/// change's restoration (`bool`: by its undo steps, else by its pre-image): consecutive pre-image
/// restores, each of which restores a whole state, and consecutive undos whose oldest one's undo
/// provably undoes them all (a package's, see [`oldest_undo_suffices`]).
fn segments<'i, 'p>(
    images: &[&'i Preimage],
    planned: &impl Fn(&Preimage) -> Option<&'p PlannedResource>,
) -> Vec<(Vec<&'i Preimage>, bool)> {
    let mut segments: Vec<(Vec<&Preimage>, bool)> = Vec::new();
    for &image in images {
        let by_undo = planned(image).is_some_and(|r| !r.undo.is_empty());
        let joins = |kept: &[&Preimage]| {
            let changes: Option<Vec<&PlannedResource>> = std::iter::once(image)
                .chain(kept.iter().rev().copied())
                .map(planned)
                .collect();
            !by_undo || changes.is_some_and(|c| oldest_undo_suffices(&c))
        };
        match segments.last_mut() {
            Some((kept, was_by_undo)) if *was_by_undo == by_undo && joins(kept) => kept.push(image),
            _ => segments.push((vec![image], by_undo)),
        }
    }
    segments
}

/// The changes of one host (`list`), grouped into the plan entries that undo them, in the order
/// they run: every change at its own place, the newest run's last change first (the reverse of
/// the order the runs made them, so a change is undone before what it depended on). Adjacent
/// changes of one resource are one entry. Changes of a resource that its oldest one's undo
/// provably undoes alone (a package's) are undone by it, at its place: theirs are left out.
fn entries<'i, 'p>(
    list: &'i [Preimage],
    planned: &impl Fn(&Preimage) -> Option<&'p PlannedResource>,
) -> Vec<Vec<&'i Preimage>> {
    let mut walk: Vec<&Preimage> = list.iter().collect();
    walk.sort_by_key(|p| std::cmp::Reverse((p.run, p.seq)));
    let mut by_id: BTreeMap<&str, Vec<&Preimage>> = BTreeMap::new();
    for &p in &walk {
        by_id.entry(p.resource_id.as_str()).or_default().push(p);
    }
    let change = |p: &Preimage| (p.run, p.key.clone());
    let mut covered = BTreeSet::new();
    let mut covering: BTreeMap<(RunId, String), Vec<&Preimage>> = BTreeMap::new();
    for changes in by_id.values() {
        for (segment, by_undo) in segments(changes, planned) {
            if let (true, [newer @ .., oldest]) = (by_undo, segment.as_slice())
                && !newer.is_empty()
            {
                covered.extend(newer.iter().map(|p| change(p)));
                covering.insert(change(oldest), segment.clone());
            }
        }
    }
    let mut entries: Vec<Vec<&Preimage>> = Vec::new();
    for p in walk {
        if covered.contains(&change(p)) {
            continue;
        }
        let unit = covering.remove(&change(p)).unwrap_or_else(|| vec![p]);
        match entries.last_mut() {
            Some(entry) if entry[0].resource_id == p.resource_id => entry.extend(unit),
            _ => entries.push(unit),
        }
    }
    entries
}

/// Whether a rollback that undoes `r` (by its undo steps when `by_undo`) carries `r`'s forward
/// steps as the undo of its own entry, so that rolling that rollback back redoes them.
fn redoes(r: &PlannedResource, by_undo: bool) -> bool {
    by_undo || redone_by_its_steps(r.kind)
}

/// The contents of `plan` (blob hashes) that a rollback of its run takes steps reading from it:
/// its resources' undo steps, and the forward steps [`redoes`] keeps (a rollback's re-creation
/// of an account, with its password sealed). The state keeps these with the run's plan.
pub fn contents_its_rollback_reads(plan: &Plan) -> BTreeSet<&str> {
    let resources = plan.hosts.iter().flat_map(|h| &h.resources);
    resources
        .flat_map(|r| {
            let redone = redoes(r, !r.undo.is_empty());
            r.undo.iter().chain(r.steps.iter().filter(move |_| redone))
        })
        .filter_map(|s| s.stdin.as_deref())
        .collect()
}

/// The plan restoring `images` (per host), from the plans of those runs.
fn build(
    store: &dyn StateStore,
    to: i64,
    images: &BTreeMap<String, Vec<Preimage>>,
    plans: &BTreeMap<i64, Plan>,
) -> Result<Plan, Error> {
    let newest = plans.values().next_back().expect("at least one run");
    let mut blobs = BTreeMap::new();
    let mut host_plans = Vec::new();
    let mut irreversible = Vec::new();
    let mut summary = Summary::default();
    for (host, list) in images {
        let Some(host_plan) = plans
            .values()
            .rev()
            .find_map(|p| p.hosts.iter().find(|h| h.name == *host))
        else {
            continue;
        };
        let planned = |image: &Preimage| {
            plans
                .get(&image.run.0)
                .and_then(|p| p.hosts.iter().find(|h| h.name == *host))
                .and_then(|h| h.resources.iter().find(|r| r.key == image.key))
        };
        // Per resource, its newest change: what the host shows now, and how to probe it. Every
        // entry of the resource expects that state, since apply checks them all before it runs
        // any (exec/stale.rs reports a resource that drifted once).
        let mut latest: BTreeMap<&str, &Preimage> = BTreeMap::new();
        for p in list {
            let newest = latest.entry(p.resource_id.as_str()).or_insert(p);
            if (p.run, p.seq) > (newest.run, newest.seq) {
                *newest = p;
            }
        }
        let mut resources = Vec::new();
        let mut handlers: BTreeSet<String> = BTreeSet::new();
        // Resources with a change that cannot be undone, and its run: their older changes are
        // not undone either, since they would be undone on top of the change that stays.
        let mut kept: BTreeMap<&str, i64> = BTreeMap::new();
        // What is restored only once every account this rollback re-creates exists (a group's
        // administrators), as the host's last entries, in the order of the entries they are of.
        let mut last_entries = Vec::new();
        for images in entries(list, &planned) {
            // Newest first.
            let (last, first) = (images[0], *images.last().expect("one image at least"));
            let Some(changed) = planned(last) else {
                continue;
            };
            if let Some(&stays) = kept.get(last.resource_id.as_str()) {
                irreversible.push(Irreversible {
                    host: host.clone(),
                    run: last.run.0,
                    resource: changed.label.clone(),
                    reason: format!("run {stays}'s later change of it cannot be undone"),
                });
                continue;
            }
            let shown = latest[last.resource_id.as_str()];
            let base = planned(shown).unwrap_or(changed);
            // Each segment is undone by its own undo steps (they know only the state its run
            // found), or by restoring the pre-image its oldest run captured; newest first.
            let segments = segments(&images, &planned);
            let mut restored: Option<Restore> = None;
            let mut failed = None;
            for (segment, by_undo) in &segments {
                let image = *segment.last().expect("one image at least");
                let this = planned(image).unwrap_or(changed);
                let part = match by_undo {
                    true => undo(store, image, this, &mut blobs)?,
                    false => restore(store, image, this, &mut blobs)?,
                };
                match part {
                    Ok(part) => {
                        restored = Some(match restored {
                            None => part,
                            Some(mut r) => {
                                r.action = r.action.max(part.action);
                                r.fields.extend(part.fields);
                                r.steps.extend(part.steps);
                                r.last.extend(part.last);
                                r
                            }
                        });
                    }
                    Err(reason) => {
                        failed = Some((image.run.0, reason));
                        break;
                    }
                }
            }
            let restore = match (restored, failed) {
                (Some(r), None) => r,
                (_, failed) => {
                    let (run, reason) = failed.expect("a segment at least");
                    kept.insert(last.resource_id.as_str(), run);
                    irreversible.push(Irreversible {
                        host: host.clone(),
                        run,
                        resource: changed.label.clone(),
                        reason: reason.to_string(),
                    });
                    continue;
                }
            };
            // Undoing the undo is re-applying: each run's forward steps, oldest first, when every
            // run was undone by its undo steps, or its steps redo what its pre-image undid;
            // otherwise a rollback of this rollback restores the pre-images it captures.
            let by_steps = segments.iter().all(|(_, by_undo)| *by_undo);
            let redo: Vec<Step> = match redoes(changed, by_steps) {
                true => images
                    .iter()
                    .rev()
                    .filter_map(|i| planned(i))
                    .flat_map(|r| r.steps.clone())
                    .collect(),
                false => Vec::new(),
            };
            // Steps taken from a recorded plan (undo steps, forward steps to redo) may read a
            // content that plan carried (a rollback's sealed password): this plan carries it too,
            // or it could not be applied, nor rolled back in turn.
            for hash in restore
                .steps
                .iter()
                .chain(&redo)
                .filter_map(|s| s.stdin.as_ref())
            {
                if let Some(b64) = plans.values().find_map(|p| p.blobs.get(hash)) {
                    blobs.entry(hash.clone()).or_insert_with(|| b64.clone());
                }
            }
            let key = format!("{TASK}#{}", resources.len() + 1);
            handlers.extend(base.notify.iter().cloned());
            summary.add(restore.action);
            let entry = PlannedResource {
                key,
                task: TASK.into(),
                role: Role::Task,
                action: restore.action,
                reason: format!("restores its state before run {}", first.run),
                fields: restore.fields,
                diff: None,
                steps: restore.steps,
                fingerprint: shown.fingerprint_after.clone().unwrap_or_default(),
                undo: redo,
                retry: Default::default(),
                ..base.clone()
            };
            last_entries.extend(restore.last.into_iter().map(|l| (entry.clone(), l)));
            resources.push(entry);
        }
        // Each is an entry of its resource, checked against the same state as its other entries.
        // Its undo clears what it set, before a rollback of this rollback undoes the re-creation.
        for (entry, l) in last_entries {
            summary.add(Action::Update);
            resources.push(PlannedResource {
                key: format!("{TASK}#{}", resources.len() + 1),
                action: Action::Update,
                reason: format!(
                    "{}, last: once every account this rollback re-creates exists",
                    entry.reason
                ),
                fields: l.fields,
                steps: l.steps,
                undo: l.undo,
                ..entry
            });
        }
        // Handlers are notified as for any change: the newest plan's handler resources.
        resources.extend(
            host_plan
                .resources
                .iter()
                .filter(|r| r.role == Role::Handler && handlers.contains(&r.task))
                .cloned(),
        );
        host_plans.push(HostPlan {
            name: host.clone(),
            pending_handlers: Vec::new(),
            resources,
            ..host_plan.clone()
        });
    }
    host_plans.retain(|h| !h.resources.is_empty());
    let runs: Vec<i64> = plans.keys().copied().collect();
    if host_plans.is_empty() {
        let why = irreversible
            .iter()
            .map(|i| format!("{} on {}: {}", i.resource, i.host, i.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(nothing(format!(
            "nothing that runs {runs:?} changed can be restored ({why})"
        )));
    }
    let task = TaskPlan {
        name: TASK.into(),
        deps: Vec::new(),
        hosts: host_plans.iter().map(|h| h.name.clone()).collect(),
        strategy: crate::config::Strategy::Parallel,
        batches: Vec::new(),
        canary: None,
        max_fail: None,
        parallel: None,
        continue_on_error: false,
        on_failure: crate::config::OnFailure::Stop,
        timeout: None,
    };
    Ok(Plan {
        format_version: FORMAT_VERSION.into(),
        nexus_version: env!("CARGO_PKG_VERSION").into(),
        config: newest.config.clone(),
        selection: Selection {
            tasks: vec![TASK.into()],
            targets: images.keys().cloned().collect(),
            tags: Vec::new(),
            skip_tags: Vec::new(),
        },
        inputs: Default::default(),
        ssh: newest.ssh.clone(),
        vault: newest.vault.clone(),
        state: newest.state.clone(),
        notify: newest.notify.clone(),
        rollback: Some(Rollback {
            to,
            runs,
            irreversible,
        }),
        tasks: vec![task],
        hosts: host_plans,
        blobs,
        streamed: Default::default(),
        summary,
    })
}

/// `--force`: probes the hosts now and expects what they show, drifted or not. Returns what
/// differed from what the runs left.
fn force(plan: &mut Plan, req: &Request) -> Result<Vec<stale::Drift>, Error> {
    let base = crate::plan::base_dir(&plan.config);
    let mut needs = Needs::default();
    needs.sudo(plan.hosts.iter().map(|h| &h.connection));
    needs.recognise_all();
    let env = |k: &str| std::env::var(k).ok();
    let source = Source::Plan {
        vault: plan.vault.as_ref(),
        base: &base,
    };
    let secrets = secrets::resolve(&source, &needs, &env)?;
    let keys: BTreeMap<String, BTreeSet<String>> = plan
        .hosts
        .iter()
        .map(|h| {
            let keys = h
                .resources
                .iter()
                .filter(|r| r.role == Role::Task)
                .map(|r| r.key.clone());
            (h.name.clone(), keys.collect())
        })
        .collect();
    let rt = super::plan::runtime()?;
    let now = rt.block_on(async {
        let mut inv = Inventory::for_plan(plan, &base, &req.overrides)?;
        inv.set_secrets(secrets.clone());
        let now = stale::fingerprints(plan, &keys, &inv, req.parallel, &env, &secrets).await;
        inv.close().await;
        Ok::<_, Error>(now)
    })?;
    let now: BTreeMap<(&str, &str), &str> = now
        .iter()
        .map(|(h, k, f)| ((h.as_str(), k.as_str()), f.as_str()))
        .collect();
    let mut forced = Vec::new();
    for h in &mut plan.hosts {
        // A resource restored at several places drifted once.
        let mut reported = BTreeMap::new();
        for r in &mut h.resources {
            let Some(fp) = now.get(&(h.name.as_str(), r.key.as_str())) else {
                continue;
            };
            if *fp != r.fingerprint {
                let drift = stale::Drift {
                    host: h.name.clone(),
                    key: r.key.clone(),
                    label: r.label.clone(),
                    planned: r.fingerprint.clone(),
                    now: fp.to_string(),
                    why: None,
                    also: Vec::new(),
                };
                stale::report(&mut forced, &mut reported, r.id.clone(), drift);
                r.fingerprint = fp.to_string();
            }
        }
    }
    Ok(forced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ResourceType;

    /// The change of run `run` to `kind` `name`, the `seq`th resource its plan probed: undone by
    /// the step `undo`, or by its pre-image when that is empty.
    fn change(run: i64, seq: i64, kind: ResourceType, name: &str, undo: &str) -> PlannedResource {
        PlannedResource {
            key: format!("t#{}", seq + 1),
            label: format!("{} {name}@{run}", kind.as_str()),
            steps: vec![Step::new(format!("change {name} in run {run}"), false)],
            undo: match undo {
                "" => Vec::new(),
                undo => vec![Step::new(undo, false)],
            },
            ..PlannedResource::example(kind, name)
        }
    }

    /// What the state holds of these changes on host `h`: each existed before its run.
    fn preimages(changes: &[(i64, i64, PlannedResource)]) -> Vec<Preimage> {
        changes
            .iter()
            .map(|(run, seq, r)| Preimage {
                run: RunId(*run),
                host: "h".into(),
                key: r.key.clone(),
                seq: *seq,
                resource_id: r.id.clone(),
                image: crate::state::Image::Existed,
                blob: None,
                fingerprint_after: Some(format!("after {run}")),
            })
            .collect()
    }

    /// The labels of the changes each plan entry undoes (newest first), in the order they run.
    fn order(changes: &[(i64, i64, PlannedResource)]) -> Vec<Vec<String>> {
        let list = preimages(changes);
        let planned = |p: &Preimage| {
            changes
                .iter()
                .find(|(run, _, r)| RunId(*run) == p.run && r.key == p.key)
                .map(|(_, _, r)| r)
        };
        entries(&list, &planned)
            .into_iter()
            .map(|e| {
                e.iter()
                    .map(|p| planned(p).unwrap().label.clone())
                    .collect()
            })
            .collect()
    }

    fn at(
        run: i64,
        seq: i64,
        kind: ResourceType,
        name: &str,
        undo: &str,
    ) -> (i64, i64, PlannedResource) {
        (run, seq, change(run, seq, kind, name, undo))
    }

    /// Every change is undone at its own place, newest first, whichever run last changed its
    /// resource; adjacent changes of one resource are one entry.
    #[test]
    fn each_change_is_undone_at_its_own_place() {
        use ResourceType::{Group, User};
        let cases = [
            // Run 1 moves u off g, then deletes g; run 2 changes u again. u's run-1 groups can
            // only come back after g (undoing u's runs at its newest change would fail).
            (
                [
                    (1, 0, User, "u", "usermod -G g -- u"),
                    (1, 1, Group, "g", "groupadd g"),
                    (2, 0, User, "u", "usermod -s /bin/sh -- u"),
                ],
                vec![vec!["user u@2"], vec!["group g@1"], vec!["user u@1"]],
            ),
            // Run 1 changes u; run 2 creates g2 and makes it u's primary group: g2 can only go
            // after u left it (undoing u's runs at its oldest change would fail).
            (
                [
                    (1, 0, User, "u", "usermod -c Old -- u"),
                    (2, 0, Group, "g2", ""),
                    (2, 1, User, "u", "usermod -g u -- u"),
                ],
                vec![vec!["user u@2"], vec!["group g2@2"], vec!["user u@1"]],
            ),
            // Nothing in between: one entry, newest first.
            (
                [
                    (1, 0, Group, "g", ""),
                    (1, 1, User, "u", "usermod -c Old -- u"),
                    (2, 0, User, "u", "usermod -s /bin/sh -- u"),
                ],
                vec![vec!["user u@2", "user u@1"], vec!["group g@1"]],
            ),
        ];
        for (runs, want) in cases {
            let runs = runs.map(|(run, seq, kind, name, undo)| at(run, seq, kind, name, undo));
            assert_eq!(order(&runs), want, "{runs:?}");
        }
    }

    /// The rollback plan of `runs` (on host `h`) from their pre-images `list`.
    fn rolled_back(runs: &[(i64, i64, PlannedResource)], list: Vec<Preimage>) -> Plan {
        let plan_of = |run: i64| -> Plan {
            let resources: Vec<&PlannedResource> = runs
                .iter()
                .filter(|(r, _, _)| *r == run)
                .map(|(_, _, r)| r)
                .collect();
            serde_json::from_value(serde_json::json!({
                "format_version": FORMAT_VERSION, "nexus_version": "0", "config": "nexus.kdl",
                "selection": {"tasks": [], "targets": [], "tags": [], "skip_tags": []},
                "inputs": {"config": {}, "files": {}, "env": {}},
                "tasks": [{"name": "t", "hosts": ["h"], "deps": [], "strategy": "parallel"}],
                "hosts": [{"name": "h", "connection": {"transport": "local"}, "facts_digest": "",
                           "probe_sudo": false, "resources": resources}],
                "blobs": {}, "summary": {"create": 0, "update": 0, "delete": 0, "run": 0, "no_op": 0},
            }))
            .unwrap()
        };
        let plans: BTreeMap<i64, Plan> = runs
            .iter()
            .map(|(run, _, _)| (*run, plan_of(*run)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::open(&dir.path().join("state.db")).unwrap();
        let images: BTreeMap<String, Vec<Preimage>> = [("h".to_string(), list)].into();
        build(&store, 0, &images, &plans).unwrap()
    }

    /// A deleted group's administrators are made administrators again last, once every account
    /// the rollback re-creates exists: here its administrator, deleted before it by the run, is
    /// re-created after it. That last entry is checked against the group's state like its other
    /// entry, and its undo clears them again before a rollback of this rollback deletes the group.
    #[test]
    fn a_deleted_groups_administrators_come_back_last() {
        use crate::state::Image;
        let runs = [
            at(1, 0, ResourceType::User, "alice", "useradd alice"),
            at(1, 1, ResourceType::Group, "ops", "groupadd ops"),
        ];
        let mut list = preimages(&runs);
        let deleted = |admins: &[&str], why: &str| Image::Account {
            shadow: admins.iter().map(|a| a.to_string()).collect(),
            password_not_kept: Some(why.into()),
            own_group: None,
        };
        list[0].image = deleted(&[], "unread");
        list[1].image = deleted(&["alice,bob"], "no vault");
        let plan = rolled_back(&runs, list);
        let restored: Vec<(&str, Action, Vec<&str>)> = plan.hosts[0]
            .resources
            .iter()
            .map(|r| {
                let steps = r.steps.iter().map(|s| s.script.as_str()).collect();
                (r.label.as_str(), r.action, steps)
            })
            .collect();
        let admins = "a=; for x in alice bob; do if getent passwd \"$x\" >/dev/null 2>&1; then \
                      a=\"$a${a:+,}$x\"; fi; done; \
                      if getent group ops >/dev/null 2>&1; then gpasswd -A \"$a\" ops; fi";
        assert_eq!(
            restored,
            [
                ("group ops@1", Action::Run, vec!["groupadd ops"]),
                ("user alice@1", Action::Run, vec!["useradd alice"]),
                ("group ops@1", Action::Update, vec![admins]),
            ]
        );
        let (group, last) = (&plan.hosts[0].resources[0], &plan.hosts[0].resources[2]);
        assert_eq!(
            (&group.id, &group.fingerprint),
            (&last.id, &last.fingerprint)
        );
        assert_eq!(last.key, "rollback#3");
        assert_eq!(last.fields[0].to.as_deref(), Some("alice,bob"));
        assert_eq!(
            last.undo[0].script,
            "if getent group ops >/dev/null 2>&1; then gpasswd -A '' ops; fi"
        );
        assert_eq!(plan.summary.update, 1);
    }

    /// A change that cannot be undone stays, and so do the older changes of its resource: they
    /// would be undone on top of it. Other resources are still restored.
    #[test]
    fn a_change_that_cannot_be_undone_keeps_the_older_ones_of_its_resource() {
        use ResourceType::{Command, User};
        let runs = [
            at(1, 0, Command, "migrate", "migrate down"),
            at(1, 1, User, "u", "usermod -c Old -- u"),
            at(2, 0, Command, "migrate", ""),
        ];
        let plan = rolled_back(&runs, preimages(&runs));
        let restored: Vec<&str> = plan.hosts[0]
            .resources
            .iter()
            .map(|r| r.label.as_str())
            .collect();
        assert_eq!(restored, ["user u@1"]);
        let kept: Vec<(i64, &str)> = plan
            .rollback
            .as_ref()
            .unwrap()
            .irreversible
            .iter()
            .map(|i| (i.run, i.reason.as_str()))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].0, 2);
        assert_eq!(kept[1], (1, "run 2's later change of it cannot be undone"));
    }

    /// A package's changes that the oldest one's undo undoes alone are undone by it, at its
    /// place, even with other changes in between: the later runs' undos are left out.
    #[test]
    fn a_package_goes_back_at_its_oldest_change_only() {
        use crate::resources::Resource;
        use crate::resources::package::{Manager, Package, PackageManager, PackageState, Spec};
        let upgrade = |run: i64, from: &str, to: &str| {
            let p = Package {
                spec: Spec {
                    names: vec!["a".into()],
                    state: PackageState::Present,
                    version: Some(to.into()),
                    manager: PackageManager::Auto,
                    update_cache: false,
                },
                host: "h".into(),
                manager: Manager::Apt,
                sudo: true,
            };
            let c = p
                .plan(
                    &crate::plan::Observed::parse(&format!("tool=true\ninstalled.a={from}"))
                        .unwrap(),
                )
                .unwrap();
            PlannedResource {
                id: p.id(),
                kind: ResourceType::Package,
                probe: p.probe(),
                fields: c.fields,
                steps: c.steps,
                undo: c.undo,
                ..change(run, 0, ResourceType::Package, "a", "")
            }
        };
        let user = |run| at(run, 1, ResourceType::User, "u", "usermod -c Old -- u");
        let runs = [
            (1, 0, upgrade(1, "1.0", "2.0")),
            user(1),
            (2, 0, upgrade(2, "2.0", "3.0")),
            user(2),
        ];
        // Run 2's package change left out, the user's two changes are adjacent: one entry.
        assert_eq!(
            order(&runs),
            [
                vec!["user u@2", "user u@1"],
                vec!["package a@2", "package a@1"]
            ]
        );
    }
}
