//! `nexus run TASK...`: plan and apply in one step (the seed's workflow); `--dry-run` only plans.

use clap::Args;

use super::connect::runtime;
use super::plan::PlanArgs;
use super::{CmdResult, Ctx, Failure, Format, emit};
use crate::exec::Options;
use crate::exit::Exit;
use crate::inputs::Inputs;
use crate::inventory::Inventory;
use crate::plan::live::{self, LiveRequest};
use crate::plan::{Selection, lockfile};
use crate::state::{RunKind, StateStore, default_path};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Only plan: show what would run, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep going on a host after one of its resources failed (the run still fails)
    #[arg(long)]
    pub continue_on_error: bool,
}

pub fn run(ctx: &Ctx, args: RunArgs) -> CmdResult {
    if args.dry_run {
        return super::plan::run(ctx, args.plan);
    }
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    super::resolve_tasks(cfg, &args.plan.tasks)?;
    let env = |k: &str| std::env::var(k).ok();
    let mut inputs = Inputs::collect(&loaded, &env)
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    // Secrets: the plan gets fingerprints; values are read only where this command needs them.
    let secrets = super::execute::plan_secrets(cfg, &mut inputs, true)?;
    let rt = runtime()?;
    super::plan::resolve_pins(ctx, cfg, &mut inputs, args.plan.locked, &rt)?;
    let config_name = ctx.global.config.display().to_string();
    let db = ctx
        .global
        .state
        .clone()
        .unwrap_or_else(|| default_path(&ctx.global.config));
    let (store, guard) = super::execute::lock_state(
        ctx,
        &db,
        &format!("nexus run {}", args.plan.tasks.join(" ")),
    )?;
    let connect = &args.plan.connect;
    let exit = rt.block_on(async {
        let mut inv = Inventory::new(cfg, &connect.overrides())
            .map_err(|e| Failure::new(Exit::Unreachable, format!("error: {e}")))?;
        inv.set_secrets(secrets.clone());
        inv.add_discovered(cfg, inputs.discovered());
        let req = LiveRequest {
            loaded: &loaded,
            config_name: &config_name,
            selection: Selection {
                tasks: args.plan.tasks.clone(),
                targets: args.plan.targets.clone(),
                tags: args.plan.tags.clone(),
                skip_tags: args.plan.skip_tags.clone(),
            },
            inputs: &inputs,
            parallel: connect.parallel,
        };
        let plan = match live::plan(req, &inv, &env, &|_| {}).await {
            Ok(p) => p,
            Err(errors) => {
                inv.close().await;
                let msg: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
                return Err(Failure::new(
                    Exit::Failed,
                    format!("{}\nplan failed; nothing was executed", msg.join("\n")),
                ));
            }
        };
        if format == Format::Text && ctx.global.verbose > 0 {
            emit(&super::plan::render(ctx, &plan, Format::Text, None));
        }
        let hash = lockfile::hash(&plan);
        let run_id = store
            .begin_run(&super::execute::new_run(&plan, &hash, RunKind::Run))
            .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
        let opts = Options {
            parallel: connect.parallel,
            continue_on_error: args.continue_on_error,
            base_dir: super::apply::plan_base_dir(&config_name),
            secrets: secrets.clone(),
        };
        let report = super::execute::execute(ctx, &plan, &inv, &opts, &store, run_id, format).await;
        inv.close().await;
        let report = report?;
        let mut all = crate::secrets::Resolved::default();
        let notify_secrets = super::execute::notifier_secrets(cfg, &plan.notify);
        let deliveries = match notify_secrets {
            Ok(ns) => {
                all = ns;
                let event = crate::notify::RunEvent::from_report(
                    crate::notify::EventKind::Run,
                    &plan.config,
                    &report,
                    Some(run_id.0),
                    Some(&hash),
                );
                super::execute::notify(&plan.notify, &event, &all).await
            }
            Err(e) => plan
                .notify
                .iter()
                .map(|n| crate::notify::Delivery::not_sent(&n.name, n.template, None, e.clone()))
                .collect(),
        };
        drop(all);
        super::execute::finish(ctx, &store, run_id, &report, format, &deliveries)
    })?;
    guard
        .release()
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    Ok(exit)
}
