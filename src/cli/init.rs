//! `nexus init`: write a starter configuration that validates as written.

use clap::Args;

use super::{CmdResult, Ctx, emitln};
use crate::app::Error;
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
        return Err(Error::ConfigExists(path.clone()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Write to a temporary file and rename so an interrupted init never leaves half a config.
    let tmp = path.with_extension("kdl.tmp");
    std::fs::write(&tmp, STARTER)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                action: "write",
                path: path.clone(),
                source,
            }
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
