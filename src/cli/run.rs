//! `nexus run TASK...`: plan and apply in one step (the seed's workflow); `--dry-run` only plans.

use std::sync::OnceLock;

use clap::Args;

use super::plan::PlanArgs;
use super::progress::Progress;
use super::{CmdResult, Ctx, Format};
use crate::app;

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
    let req = super::plan::request(ctx, &args.plan);
    let progress: OnceLock<Progress> = OnceLock::new();
    let planned = |plan: &crate::plan::Plan| {
        if format == Format::Text && ctx.global.verbose > 0 {
            super::plan::print(ctx, plan, Format::Text, None);
        }
        let _ = progress.set(super::report::progress(ctx, plan, format));
    };
    let observer = |e: &crate::exec::Event| {
        if let Some(p) = progress.get() {
            p.event(e);
        }
    };
    let result = app::run::run(&req, args.continue_on_error, &planned, &observer);
    if let Some(p) = progress.get() {
        p.finish();
    }
    Ok(super::report::finished(ctx, &result?, format))
}
