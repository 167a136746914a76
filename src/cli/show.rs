//! `nexus show FILE`: render a saved plan, stale or not, without contacting any host.

use std::path::PathBuf;

use clap::Args;

use super::{CmdResult, Ctx, Format};
use crate::exit::Exit;
use crate::plan::lockfile;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The plan file written by `nexus plan -o FILE`
    pub file: PathBuf,
}

pub fn run(ctx: &Ctx, args: ShowArgs) -> CmdResult {
    let format = ctx.format(
        Format::Text,
        &[Format::Text, Format::Json, Format::Markdown],
    )?;
    let file = lockfile::read(&args.file).map_err(crate::app::Error::ReadPlan)?;
    // A plan apply would refuse can still be reviewed; say so where it does not mix with the
    // rendering (stdout may be JSON for a program).
    if let Some(reason) = file.refusal() {
        super::note(&format!(
            "note: this nexus cannot apply this plan, only show it: {reason}"
        ));
    }
    super::plan::print(ctx, &file.plan, format, Some(&args.file));
    Ok(Exit::Ok)
}
