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
    let plan = lockfile::read(&args.file).map_err(crate::app::Error::ReadPlan)?;
    super::plan::print(ctx, &plan, format, Some(&args.file));
    Ok(Exit::Ok)
}
