//! `apply FILE`: verify the plan file, refuse it if it ran already, if a secret it pinned changed
//! or if the hosts changed since planning; otherwise execute exactly it, record what happened and
//! notify the webhooks.

use std::path::{Path, PathBuf};

use super::Error;
use super::record::{Locked, RunSummary};
use super::secrets::{self, Needs, Source};
use crate::config::OnFailure;
use crate::exec::{Event, Options, Report, TaskStatus, stale};
use crate::inventory::{Inventory, Overrides};
use crate::notify::{Delivery, EventKind};
use crate::plan::{Plan, lockfile};
use crate::state::{RunId, RunKind, format_time};

#[derive(Debug, Clone)]
pub struct Request {
    pub file: PathBuf,
    /// `--state`: a SQLite file or a `postgresql://` URL; default: the plan's `state`, else
    /// .nexus/state.db next to the plan's configuration (app/state.rs).
    pub state: Option<String>,
    pub overrides: Overrides,
    pub parallel: usize,
    pub continue_on_error: bool,
    /// `-c`: the configuration apply is given, consulted for `trust` (app/signature.rs).
    pub config: PathBuf,
    /// `--allowed-signers`: require plans signed by a key of this file.
    pub allowed_signers: Option<PathBuf>,
}

pub use super::record::{Applied, AutoRollback};

/// Applies the plan file of `req`. `planned` sees the plan once it is verified and fresh;
/// `observer` sees every executor event (progress rendering).
pub fn apply(
    req: &Request,
    planned: &dyn Fn(&Plan),
    observer: &(dyn Fn(&Event) + Sync),
) -> Result<Applied, Error> {
    let file = req.file.display().to_string();
    // Replay protection keys on the plan file: its hash plus the id `nexus plan -o` gave it,
    // both covered by the header's hash.
    // Read once: the bytes whose signature is checked are the bytes that are applied.
    let bytes = std::fs::read(&req.file).map_err(|e| Error::PlanFile {
        source: lockfile::LockfileError::Read {
            file: file.clone(),
            reason: e.to_string(),
        },
    })?;
    let (plan, hash) = lockfile::decode_named(&bytes, &file)
        .and_then(lockfile::PlanFile::applicable)
        .map_err(|source| Error::PlanFile { source })?;
    let trust = super::signature::Trust {
        flag: req.allowed_signers.as_deref(),
        own_config: &req.config,
        plan_config: Path::new(&plan.config),
    };
    let signer = super::signature::verify(&req.file, &bytes, &trust)?;
    let base = crate::plan::base_dir(&plan.config);
    let location = super::state::location(
        req.state.as_deref(),
        plan.state.as_ref(),
        Path::new(&plan.config),
        Some(&Source::Plan {
            vault: plan.vault.as_ref(),
            base: &base,
        }),
    )?;
    let state = Locked::take(&location, &format!("nexus apply {file}"), &base)?;
    if let Some(prev) = state.store.applied(&hash)? {
        return Err(Error::AlreadyApplied {
            file,
            run: prev.id.0,
            started: format_time(prev.started_at),
            status: format!("{:?}", prev.status),
        });
    }
    let problems =
        crate::exec::transfer::check_pinned(&crate::plan::source_dir(&plan.config), &plan.streamed);
    if !problems.is_empty() {
        return Err(Error::PinnedChanged { file, problems });
    }
    let run = state.begin(&plan, &hash, RunKind::Apply, signer)?;
    let rt = super::plan::runtime()?;
    // One for both executions: tokio keeps a signal handler once a stream was made, so a signal
    // between two of them would be lost.
    let mut signals = {
        let _runtime = rt.enter();
        super::record::Signals::new()
    };
    let verified = Verified {
        plan: &plan,
        hash: &hash,
        file: &file,
        base: &base,
    };
    let (report, deliveries) =
        verified.execute(&rt, &state, run, req, &mut signals, planned, observer)?;
    let rollback = stopped_rollback_task(&plan, &report).map(|task| {
        auto_rollback(
            &rt,
            &state,
            &plan,
            run,
            &task,
            &base,
            req,
            &mut signals,
            observer,
        )
    });
    let rolled_back_by = match &rollback {
        Some(Ok(r)) => Some(r.run),
        _ => None,
    };
    let mut applied = state.conclude(plan, run, report, deliveries, rolled_back_by)?;
    applied.rollback = rollback;
    Ok(applied)
}

/// A plan file that passed verification (hash, signature, replay), about to be executed.
struct Verified<'a> {
    plan: &'a Plan,
    /// The hash the run records.
    hash: &'a str,
    /// Where the plan came from, for messages.
    file: &'a str,
    base: &'a Path,
}

impl Verified<'_> {
    /// Under the recorded run `run`: reads the secrets the plan pinned, re-probes the hosts
    /// (refusing a stale plan) while capturing pre-images, records them, then executes.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        rt: &tokio::runtime::Runtime,
        state: &Locked,
        run: RunId,
        req: &Request,
        signals: &mut super::record::Signals,
        planned: &dyn Fn(&Plan),
        observer: &(dyn Fn(&Event) + Sync),
    ) -> Result<(Report, Vec<Delivery>), Error> {
        let (plan, base) = (self.plan, self.base);
        let needs = Needs::of_plan(plan);
        let env = |k: &str| std::env::var(k).ok();
        let source = Source::Plan {
            vault: plan.vault.as_ref(),
            base,
        };
        let secrets = match secrets::resolve(&source, &needs, &env) {
            Ok(s) => s,
            Err(e) => {
                state.refuse(
                    run,
                    &serde_json::json!({ "status": "refused", "reason": format!("error: {e}") }),
                );
                return Err(e.into());
            }
        };
        rt.block_on(async {
            // A signal while re-probing stops the apply before anything was executed.
            let mut inv = Inventory::for_plan(plan, base, &req.overrides)?;
            inv.set_secrets(secrets.clone());
            let check = tokio::select! {
                check = stale::check(plan, &inv, req.parallel, &env, &secrets) => check,
                exit = signals.next() => {
                    inv.close().await;
                    state.interrupt(run, exit);
                    return Err(Error::Interrupted(exit));
                }
            };
            if !check.is_fresh() {
                inv.close().await;
                let summary = serde_json::json!({
                    "status": "refused",
                    "drift": check.drift,
                    "unreachable": check.unreachable,
                });
                state.refuse(run, &summary);
                return Err(Error::Stale {
                    file: self.file.to_string(),
                    check,
                });
            }
            // A rollback needs the plan's probes, connections and handlers, not its contents:
            // the pre-images keep the contents that matter. Kept with it are only the contents
            // of steps that a rollback of the run takes from it (a re-created account's
            // password, sealed).
            let kept = super::rollback::contents_its_rollback_reads(plan);
            let mut recorded = plan.clone();
            recorded
                .blobs
                .retain(|hash, _| kept.contains(hash.as_str()));
            let (preimages, blobs) = preimages(plan, run, check.captured, &secrets);
            let generation = crate::state::NewGeneration {
                plan: serde_json::to_string(&recorded).expect("plans serialize"),
                rollback_of: plan.rollback.as_ref().map(|r| RunId(r.to)),
                preimages,
                blobs,
            };
            if let Err(e) = state.store.record_generation(run, &generation) {
                // Nothing was executed: a change without its pre-image could not be undone.
                inv.close().await;
                state.refuse(
                    run,
                    &serde_json::json!({ "status": "refused", "reason": format!("error: {e}") }),
                );
                return Err(e.into());
            }
            planned(plan);
            let opts = Options {
                parallel: req.parallel,
                continue_on_error: req.continue_on_error,
                base_dir: base.to_path_buf(),
                secrets: secrets.clone(),
                stop: Default::default(),
                generation: true,
            };
            let execution = super::record::Execution {
                plan,
                hash: self.hash,
                kind: EventKind::Apply,
                secrets: &secrets,
            };
            execution
                .run(inv, &opts, state, run, signals, observer)
                .await
        })
    }
}

/// The task whose stopped rollout asks for an automatic rollback (`on-failure="rollback"`), if
/// one did. A run stopped by a signal is not rolled back: whoever stopped it decides.
pub(super) fn stopped_rollback_task(plan: &Plan, report: &Report) -> Option<String> {
    if report.interrupted.is_some() {
        return None;
    }
    report
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Stopped && !t.hosts_failed.is_empty())
        .find(|t| {
            plan.tasks
                .iter()
                .any(|p| p.name == t.name && p.on_failure == OnFailure::Rollback)
        })
        .map(|t| t.name.clone())
}

/// The automatic rollback of a stopped task: a second run, under the same lock, of the plan that
/// restores what `run` changed in `task` (app/rollback.rs), verified against what the run left
/// like any rollback plan, followed by the task's health checks.
#[allow(clippy::too_many_arguments)]
fn auto_rollback(
    rt: &tokio::runtime::Runtime,
    state: &Locked,
    plan: &Plan,
    run: RunId,
    task: &str,
    base: &Path,
    req: &Request,
    signals: &mut super::record::Signals,
    observer: &(dyn Fn(&Event) + Sync),
) -> Result<AutoRollback, Error> {
    let rolled = super::rollback::of_stopped_task(&*state.store, plan, run, task)?;
    observer(&Event::RollbackStarted {
        task: task.to_string(),
        hosts: rolled.hosts.iter().map(|h| h.name.clone()).collect(),
    });
    let hash = lockfile::hash(&rolled);
    let rollback_run = state.begin(&rolled, &hash, RunKind::Apply, None)?;
    let file = format!("the automatic rollback of run {run}");
    let verified = Verified {
        plan: &rolled,
        hash: &hash,
        file: &file,
        base,
    };
    let req = Request {
        continue_on_error: false,
        ..req.clone()
    };
    let (report, deliveries) =
        verified.execute(rt, state, rollback_run, &req, signals, &|_| {}, observer)?;
    let summary = RunSummary::of(&report, &deliveries);
    state.finish(rollback_run, &summary)?;
    Ok(AutoRollback {
        task: task.to_string(),
        run: rollback_run,
        irreversible: rolled
            .rollback
            .as_ref()
            .map(|r| r.irreversible.clone())
            .unwrap_or_default(),
        plan: rolled,
        report,
        summary,
        deliveries,
    })
}

/// The pre-images of what the re-probe captured, each read by its resource's type.
fn preimages(
    plan: &crate::plan::Plan,
    run: RunId,
    captured: Vec<stale::Captured>,
    secrets: &crate::secrets::Resolved,
) -> (Vec<crate::state::Preimage>, Vec<crate::state::Blob>) {
    let planned: std::collections::HashMap<(&str, &str), &crate::plan::PlannedResource> = plan
        .hosts
        .iter()
        .flat_map(|h| {
            h.resources
                .iter()
                .map(|r| ((h.name.as_str(), r.key.as_str()), r))
        })
        .collect();
    let (mut images, mut blobs) = (Vec::new(), Vec::new());
    for c in captured {
        // The executor captured resources of this plan only.
        let Some(r) = planned.get(&(c.host.as_str(), c.key.as_str())) else {
            continue;
        };
        let (image, blob) = crate::resources::preimage::image(
            run,
            &c.host,
            c.seq,
            r,
            c.observed.as_ref(),
            c.content,
            secrets,
        );
        images.push(image);
        blobs.extend(blob);
    }
    (images, blobs)
}
