//! `run TASK...`: plan and apply in one step, under the apply lock, with every secret read once
//! at the start.

use super::Error;
use super::apply::Applied;
use super::plan::{Live, Reads, Request};
use super::record::Locked;
use crate::app::live::PlanEvent;
use crate::exec::{Event, Options};
use crate::notify::EventKind;
use crate::plan::lockfile;
use crate::state::RunKind;

/// Plans, then executes the plan at once. `planned` sees the plan before it runs (`-v` prints it).
pub fn run(
    req: &Request,
    continue_on_error: bool,
    planned: &dyn Fn(&crate::plan::Plan),
    observer: &(dyn Fn(&Event) + Sync),
) -> Result<Applied, Error> {
    let live = Live::prepare(req, Reads::All)?;
    // Where plans must be signed, only a signed plan file may execute: the trust of `apply`,
    // from the environment or this configuration, also binds `run`.
    if let Some(by) = super::signature::required_by(&live.loaded.config) {
        return Err(Error::SignedPlansRequired { by });
    }
    let location = super::plan::live_state(req, &live.loaded.config)?;
    let state = Locked::take(
        &location,
        &format!("nexus run {}", req.selection.tasks.join(" ")),
        &live.loaded.config.base_dir,
    )?;
    let secrets = live.secrets.clone();
    let (plan, run, report, deliveries) = live.runtime().block_on(async {
        let inv = live.inventory(&req.overrides)?;
        let no_events = |_: PlanEvent| {};
        // A signal while planning stops the run before anything was executed or recorded.
        let mut signals = super::record::Signals::new();
        let planned_or_failed = tokio::select! {
            r = live.plan(req, &inv, super::live::AfterPlanning::Keep, &no_events) => r,
            exit = signals.next() => {
                inv.close().await;
                return Err(Error::Interrupted(exit));
            }
        };
        let plan = match planned_or_failed {
            Ok(p) => p,
            Err(errors) => {
                inv.close().await;
                return Err(Error::PlanFailed {
                    errors,
                    asked_for_file: false,
                });
            }
        };
        planned(&plan);
        let hash = lockfile::hash(&plan);
        let run = state.begin(&plan, &hash, RunKind::Run, None)?;
        let opts = Options {
            parallel: req.parallel,
            continue_on_error,
            base_dir: crate::plan::base_dir(&req.config.display().to_string()),
            secrets: secrets.clone(),
            stop: Default::default(),
            // `run` probes while planning, not again before executing: no pre-images yet.
            generation: false,
        };
        let execution = super::record::Execution {
            plan: &plan,
            hash: &hash,
            kind: EventKind::Run,
            secrets: &secrets,
        };
        let (report, deliveries) = execution
            .run(inv, &opts, &state, run, &mut signals, observer)
            .await?;
        Ok((plan, run, report, deliveries))
    })?;
    // `run` records no pre-images, so a stopped rollout that asks for a rollback only says why not.
    let unrollable = super::apply::stopped_rollback_task(&plan, &report);
    let mut applied = state.conclude(plan, run, report, deliveries, None)?;
    applied.rollback = unrollable.map(|task| {
        Err(Error::NothingToRollBack {
            reason: format!(
                "task {task} stopped and asks for a rollback, but `nexus run` records no \
                 pre-images; use `nexus plan -o FILE` and `nexus apply FILE` to have it rolled back"
            ),
        })
    });
    applied.pins_written = live.pins_written.clone();
    Ok(applied)
}
