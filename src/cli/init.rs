//! `nexus init`: write a starter configuration that validates as written.

use clap::Args;

use super::{CmdResult, Ctx, Failure, emitln};
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

/// The starter file: one task on the local machine, and commented examples of everything else.
pub const STARTER: &str = include_str!("starter.kdl");

pub fn run(ctx: &Ctx, args: InitArgs) -> CmdResult {
    let path = &ctx.global.config;
    if path.exists() && !args.force {
        return Err(Failure::new(
            Exit::Failed,
            format!(
                "error: {} already exists; pass --force to overwrite it",
                path.display()
            ),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("error: cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    // Write to a temporary file and rename so an interrupted init never leaves half a config.
    let tmp = path.with_extension("kdl.tmp");
    std::fs::write(&tmp, STARTER)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::new(
                Exit::Failed,
                format!("error: cannot write {}: {e}", path.display()),
            )
        })?;
    if !ctx.global.quiet {
        emitln(&format!("Created {}", path.display()));
        emitln(&format!(
            "Next: nexus validate -c {0} && nexus list -c {0}",
            path.display()
        ));
    }
    Ok(Exit::Ok)
}
