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
    clap_complete::generate(args.shell, &mut cmd, "nexus", &mut std::io::stdout());
    Ok(Exit::Ok)
}
