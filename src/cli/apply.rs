//! `nexus apply FILE`: verify the plan file, refuse it if the hosts changed since planning or if it
//! was applied already, then execute exactly it and record what happened.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;

use super::connect::ConnectArgs;
use super::progress::Progress;
use super::{CmdResult, Ctx, Format, emit_json};
use crate::app::{self, Error};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file written by `nexus plan -o FILE`
    pub file: PathBuf,
    /// Keep going on a host after one of its resources failed (the apply still fails)
    #[arg(long)]
    pub continue_on_error: bool,
    /// Require the plan to be signed (FILE.sig) by a key of this OpenSSH allowed_signers file
    /// (default: NEXUS_ALLOWED_SIGNERS, else the configuration's `trust`)
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let req = app::apply::Request {
        file: args.file,
        state: ctx.global.state.clone(),
        overrides: args.connect.overrides(),
        parallel: args.connect.parallel,
        continue_on_error: args.continue_on_error,
        config: ctx.global.config.clone(),
        allowed_signers: args.allowed_signers,
    };
    let progress: OnceLock<Progress> = OnceLock::new();
    let planned = |plan: &crate::plan::Plan| {
        let _ = progress.set(super::report::progress(ctx, plan, format));
    };
    let observer = |e: &crate::exec::Event| {
        if let Some(p) = progress.get() {
            p.event(e);
        }
    };
    let applied = app::apply::apply(&req, &planned, &observer);
    if let Some(p) = progress.get() {
        p.finish();
    }
    match applied {
        Ok(a) => Ok(super::report::finished(ctx, &a, format)),
        Err(Error::Stale { file, check }) => {
            if format == Format::Json {
                let summary = serde_json::json!({ "status": "refused", "drift": check.drift, "unreachable": check.unreachable });
                emit_json(&summary);
            }
            Err(Error::Stale { file, check })
        }
        Err(e) => Err(e),
    }
}
