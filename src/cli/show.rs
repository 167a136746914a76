//! `nexus show FILE`: render a saved plan, stale or not, without contacting any host.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{CmdResult, Ctx, Format};
use crate::app::signature;
use crate::exit::Exit;
use crate::plan::lockfile;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The plan file written by `nexus plan -o FILE`
    pub file: PathBuf,
    /// Check the plan's signature (FILE.sig) against this OpenSSH allowed_signers file (default:
    /// NEXUS_ALLOWED_SIGNERS, else the configuration's `trust`), as apply would
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: ShowArgs) -> CmdResult {
    let format = ctx.format(
        Format::Text,
        &[Format::Text, Format::Json, Format::Markdown],
    )?;
    let name = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).map_err(|e| {
        crate::app::Error::ReadPlan(lockfile::LockfileError::Read {
            file: name.clone(),
            reason: e.to_string(),
        })
    })?;
    let file = lockfile::decode_named(&bytes, &name).map_err(crate::app::Error::ReadPlan)?;
    let trust = signature::Trust {
        flag: args.allowed_signers.as_deref(),
        own_config: &ctx.global.config,
        plan_config: Path::new(&file.plan.config),
    };
    // Showing never fails on the trust setting: what apply would say is reported instead.
    let signed = signature::status(&args.file, &bytes, &trust).unwrap_or_else(|e| {
        signature::Status::Refused {
            reason: e.to_string(),
        }
    });
    // Unsigned plans with no trust configured read as before signatures existed.
    let line = (signed != signature::Status::Unsigned).then(|| signed.to_string());
    // A plan apply would refuse can still be reviewed; say so where it does not mix with the
    // rendering (stdout may be JSON for a program).
    if let Some(reason) = file.refusal() {
        super::note(&format!(
            "note: this nexus cannot apply this plan, only show it: {reason}"
        ));
    }
    match format {
        Format::Json => {
            super::emit_json(&crate::render::json::plan(&file.plan, Some(signed)));
        }
        Format::Markdown => {
            super::plan::print(ctx, &file.plan, format, Some(&args.file));
            if let Some(line) = line {
                super::emitln(&format!("\n**Signature:** {line}."));
            }
        }
        _ => {
            super::plan::print(ctx, &file.plan, format, Some(&args.file));
            if let Some(line) = line {
                super::emitln(&format!("\nSignature: {line}."));
            }
        }
    }
    Ok(Exit::Ok)
}
