//! `nexus completions SHELL`: shell completion scripts generated from the clap definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CmdResult};
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate completions for
    pub shell: Shell,
}

pub fn run(args: CompletionArgs) -> CmdResult {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nexus", &mut script);
    super::emit(&String::from_utf8_lossy(&script));
    Ok(Exit::Ok)
}
