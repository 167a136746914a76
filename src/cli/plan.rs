//! `nexus plan [TASK...]`: gather facts, probe, diff, and optionally write the plan file.

use std::path::PathBuf;

use clap::Args;

use super::connect::ConnectArgs;
use super::{CmdResult, Ctx, Format, emit, emit_exact, emit_json, emitln, note};
use crate::app;
use crate::app::live::PlanEvent;
use crate::exit::Exit;
use crate::plan::{Plan, Selection};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Tasks to plan, with the tasks they depend on (default: all)
    pub tasks: Vec<String>,
    /// Write the plan file here (e.g. plan.lock) for `nexus apply`
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 2 when the plan has changes, 0 when it has none (1 on errors)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Only these hosts or groups (repeatable)
    #[arg(long = "target", value_name = "HOST|GROUP")]
    pub targets: Vec<String>,
    /// Only tasks with one of these tags (repeatable, or comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Leave out tasks with one of these tags (repeatable, or comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "TAG")]
    pub skip_tags: Vec<String>,
    /// Fail instead of creating or changing nexus.lock (discovery results, source-url hashes)
    #[arg(long)]
    pub locked: bool,
    /// Record this check in the state's drift trail (`nexus history --drift`): when, which
    /// hosts had changes, and the plan's hash. For scheduled drift jobs
    #[arg(long)]
    pub record: bool,
    /// Sign the plan file with an SSH key into FILE.sig (SSHSIG, namespace nexus-plan): a private
    /// key file, a public key file whose private half ssh-agent holds, or agent:[SHA256:...]
    #[arg(long, value_name = "KEY", requires = "out")]
    pub sign: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The use case's request from the command line.
pub fn request(ctx: &Ctx, args: &PlanArgs) -> app::plan::Request {
    app::plan::Request {
        config: ctx.global.config.clone(),
        selection: Selection {
            tasks: args.tasks.clone(),
            targets: args.targets.clone(),
            tags: args.tags.clone(),
            skip_tags: args.skip_tags.clone(),
        },
        locked: args.locked,
        overrides: args.connect.overrides(),
        parallel: args.connect.parallel,
        state: ctx.global.state.clone(),
        record: args.record,
    }
}

/// Prints a plan in the requested format; `plan_file` is named in Markdown's truncation note.
pub fn print(ctx: &Ctx, plan: &Plan, format: Format, plan_file: Option<&std::path::Path>) {
    match format {
        Format::Json => emit_json(&crate::render::json::plan(plan, None)),
        Format::Markdown => emit(&crate::render::markdown::plan_with(
            plan,
            &crate::render::markdown::MarkdownOptions {
                plan_file: plan_file
                    .map_or_else(|| "plan.lock".to_string(), |p| p.display().to_string()),
                limit: crate::render::markdown::LIMIT,
            },
        )),
        // The text rendering escapes what it shows itself, since it adds colours.
        _ => emit_exact(&crate::render::text::plan(
            plan,
            &crate::render::text::TextOptions {
                color: ctx.color_stdout(),
                width: 100,
                verbose: ctx.global.verbose,
            },
        )),
    }
}

pub fn run(ctx: &Ctx, args: PlanArgs) -> CmdResult {
    let format = ctx.format(
        Format::Text,
        &[Format::Text, Format::Json, Format::Markdown],
    )?;
    let verbose = ctx.global.verbose > 0 && !ctx.global.quiet;
    let events = |e: PlanEvent| {
        if verbose {
            match e {
                PlanEvent::Facts { host } => note(&format!("{host}: facts gathered")),
                PlanEvent::Probed { host, resources } => {
                    note(&format!("{host}: probed {resources} resource(s)"))
                }
                PlanEvent::Failed { host } => note(&format!("{host}: failed")),
            }
        }
    };
    let sign = args.sign.clone().map(|key| app::signature::SignRequest {
        key,
        prompt: super::secret::passphrase_prompt(),
    });
    let out = args.out.as_deref().map(|file| app::plan::Output {
        file,
        sign: sign.as_ref(),
    });
    let planned = app::plan::plan(&request(ctx, &args), out, args.detailed_exitcode, &events)?;
    let plan = &planned.plan;
    if let Some(p) = &planned.pins_written
        && !ctx.global.quiet
    {
        note(&format!("Updated {}", p.display()));
    }
    if !ctx.global.quiet || format != Format::Text {
        print(ctx, plan, format, args.out.as_deref());
    }
    if let Some(out) = &args.out
        && format == Format::Text
        && !ctx.global.quiet
    {
        emitln(&format!(
            "\nSaved the plan to {} ({}). Apply exactly this plan with: nexus apply {}",
            out.display(),
            planned.hash(),
            out.display()
        ));
        if let Some(sig) = &planned.signature {
            emitln(&format!("Signed it into {}.", sig.display()));
        }
    }
    super::report::deliveries(ctx, &planned.deliveries);
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
