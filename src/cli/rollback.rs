//! `nexus rollback [--to RUN] [--host H...] [-o FILE] [--force]`: a plan restoring the hosts as
//! they were (docs/rollback.md), rendered like any plan and written with `-o` for `nexus apply`.

use std::path::PathBuf;

use clap::Args;

use super::connect::ConnectArgs;
use super::{CmdResult, Ctx, Format, note};
use crate::app::{self, Error};
use crate::exit::Exit;
use crate::plan::lockfile;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Restore the hosts as they were right after this run (default: undo the last run)
    #[arg(long, value_name = "RUN")]
    pub to: Option<i64>,
    /// Only this host (repeatable; default: every host the undone runs changed)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Write the rollback plan to this file, for `nexus apply`
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// DANGEROUS: restore resources even where the host changed since the run (contacts the
    /// hosts now and overwrites whatever changed them since)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: RollbackArgs) -> CmdResult {
    let format = ctx.format(
        Format::Text,
        &[Format::Text, Format::Json, Format::Markdown],
    )?;
    let req = app::rollback::Request {
        config: ctx.global.config.clone(),
        state: ctx.global.state.clone(),
        to: args.to,
        hosts: args.hosts,
        force: args.force,
        overrides: args.connect.overrides(),
        parallel: args.connect.parallel,
    };
    let rolled = app::rollback::rollback(&req)?;
    for d in &rolled.forced {
        note(&format!(
            "warning: --force: {} on {} changed since the run; the rollback overwrites it",
            d.label, d.host
        ));
    }
    if let Some(rb) = &rolled.plan.rollback {
        for i in &rb.irreversible {
            note(&format!(
                "irreversible: {} on {} (run {}): {}",
                i.resource, i.host, i.run, i.reason
            ));
        }
    }
    if let Some(out) = &args.out {
        lockfile::write(out, &rolled.plan).map_err(Error::WritePlan)?;
    }
    super::plan::print(ctx, &rolled.plan, format, args.out.as_deref());
    Ok(Exit::Ok)
}
