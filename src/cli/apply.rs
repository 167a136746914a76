//! `nexus apply FILE`: verify the plan file, refuse it if the hosts changed since planning or if it
//! was applied already, then execute exactly it and record what happened.

use std::path::{Path, PathBuf};

use clap::Args;

use super::connect::{ConnectArgs, runtime};
use super::{CmdResult, Ctx, Failure, Format, emitln};
use crate::exec::{Options, stale};
use crate::exit::Exit;
use crate::inventory::Inventory;
use crate::plan::lockfile;
use crate::state::{RunKind, RunStatus, StateStore, default_path, format_time};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file written by `nexus plan -o FILE`
    pub file: PathBuf,
    /// Keep going on a host after one of its resources failed (the apply still fails)
    #[arg(long)]
    pub continue_on_error: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The directory the plan's relative paths (known_hosts, identities) are relative to.
pub fn plan_base_dir(config: &str) -> PathBuf {
    Path::new(config)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let (plan, file_id) = lockfile::read_with_id(&args.file).map_err(|e| {
        Failure::new(
            super::show::lockfile_exit(&e),
            format!("error: {e}\nNothing was executed."),
        )
    })?;
    // Replay protection keys on the plan file: its hash plus the id `nexus plan -o` gave it.
    let hash = match &file_id {
        Some(id) => format!("{}#{id}", lockfile::hash(&plan)),
        None => lockfile::hash(&plan),
    };
    let base = plan_base_dir(&plan.config);
    let db = ctx
        .global
        .state
        .clone()
        .unwrap_or_else(|| default_path(Path::new(&plan.config)));
    let (store, guard) =
        super::execute::lock_state(ctx, &db, &format!("nexus apply {}", args.file.display()))?;
    if let Some(prev) = store
        .applied(&hash)
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?
    {
        return Err(Failure::new(
            Exit::PlanStale,
            format!(
                "error: {} was already applied (run {}, {}, {:?}); a saved plan runs once.\n\
                 Nothing was executed. Make a new plan: nexus plan -o {}",
                args.file.display(),
                prev.id,
                format_time(prev.started_at),
                prev.status,
                args.file.display()
            ),
        ));
    }
    let run_id = store
        .begin_run(&super::execute::new_run(&plan, &hash, RunKind::Apply))
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    let secrets = match super::execute::apply_secrets(&plan, &base) {
        Ok(s) => s,
        Err(f) => {
            let summary = serde_json::json!({ "status": "refused", "reason": f.message });
            let _ = store.finish_run(run_id, RunStatus::Refused, &summary.to_string());
            return Err(f);
        }
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let mut inv = Inventory::for_plan(&plan, &base, &args.connect.overrides())
            .map_err(|e| Failure::new(Exit::Unreachable, format!("error: {e}")))?;
        inv.set_secrets(secrets.clone());
        let env = |k: &str| std::env::var(k).ok();
        let check = stale::check(&plan, &inv, args.connect.parallel, &env, &secrets).await;
        if !check.is_fresh() {
            inv.close().await;
            return Ok(Err(check));
        }
        let opts = Options {
            parallel: args.connect.parallel,
            continue_on_error: args.continue_on_error,
            base_dir: base.clone(),
            secrets: secrets.clone(),
        };
        let report = super::execute::execute(ctx, &plan, &inv, &opts, &store, run_id, format).await;
        inv.close().await;
        let report = report?;
        let event = crate::notify::RunEvent::from_report(
            crate::notify::EventKind::Apply,
            &plan.config,
            &report,
            Some(run_id.0),
            Some(&hash),
        );
        let deliveries = super::execute::notify(&plan.notify, &event, &secrets).await;
        Ok::<_, Failure>(Ok((report, deliveries)))
    })?;
    let report = match outcome {
        Err(check) => {
            let mut msg = format!(
                "error: {} is stale: the hosts changed since it was planned.\n",
                args.file.display()
            );
            for d in &check.drift {
                msg.push_str(&format!("  changed: {}: {} ({})\n", d.host, d.label, d.key));
            }
            for (h, e) in &check.unreachable {
                msg.push_str(&format!("  cannot check {h}: {e}\n"));
            }
            msg.push_str(&format!(
                "Nothing was executed. Plan again: nexus plan -o {}",
                args.file.display()
            ));
            let summary = serde_json::json!({ "status": "refused", "drift": check.drift, "unreachable": check.unreachable });
            store
                .finish_run(run_id, RunStatus::Refused, &summary.to_string())
                .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
            if format == Format::Json {
                emitln(&serde_json::to_string_pretty(&summary).expect("json"));
            }
            // Unreachable hosts are a connection problem, not drift; report them as such.
            let exit = if check.drift.is_empty() {
                Exit::Unreachable
            } else {
                Exit::PlanStale
            };
            return Err(Failure::new(exit, msg));
        }
        Ok(r) => r,
    };
    let (report, deliveries) = report;
    let exit = super::execute::finish(ctx, &store, run_id, &report, format, &deliveries)?;
    guard
        .release()
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    Ok(exit)
}
