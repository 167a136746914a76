//! `nexus plan [TASK...]`: gather facts, probe, diff, and optionally write the plan file.

use std::path::PathBuf;

use clap::Args;

use super::connect::{ConnectArgs, runtime};
use super::{CmdResult, Ctx, Failure, Format, emit, emitln};
use crate::exit::Exit;
use crate::inputs::Inputs;
use crate::inventory::Inventory;
use crate::plan::live::{self, LiveRequest, PlanEvent};
use crate::plan::{Plan, Selection, lockfile};

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
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Renders a plan in the requested format; `plan_file` is named in Markdown's truncation note.
pub fn render(
    ctx: &Ctx,
    plan: &Plan,
    format: Format,
    plan_file: Option<&std::path::Path>,
) -> String {
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&crate::render::json::plan(plan)).expect("json")
        ),
        Format::Markdown => crate::render::markdown::plan_with(
            plan,
            &crate::render::markdown::MarkdownOptions {
                plan_file: plan_file
                    .map_or_else(|| "plan.lock".to_string(), |p| p.display().to_string()),
                limit: crate::render::markdown::LIMIT,
            },
        ),
        _ => crate::render::text::plan(
            plan,
            &crate::render::text::TextOptions {
                color: ctx.color_stdout(),
                width: 100,
                verbose: ctx.global.verbose,
            },
        ),
    }
}

pub fn run(ctx: &Ctx, args: PlanArgs) -> CmdResult {
    let format = ctx.format(
        Format::Text,
        &[Format::Text, Format::Json, Format::Markdown],
    )?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    super::resolve_tasks(cfg, &args.tasks)?;
    let env = |k: &str| std::env::var(k).ok();
    let inputs = Inputs::collect(&loaded, &env)
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    let selection = Selection {
        tasks: args.tasks.clone(),
        targets: args.targets.clone(),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
    };
    for t in &args.targets {
        let known =
            t == crate::config::LOCAL_HOST || cfg.host(t).is_some() || cfg.group(t).is_some();
        if !known {
            return Err(Failure::new(
                Exit::Usage,
                format!("error: unknown target `{t}` (--target takes a host or group)"),
            ));
        }
    }
    let config_name = ctx.global.config.display().to_string();
    let verbose = ctx.global.verbose > 0 && !ctx.global.quiet;
    let events = |e: PlanEvent| {
        if verbose {
            match e {
                PlanEvent::Facts { host } => eprintln!("{host}: facts gathered"),
                PlanEvent::Probed { host, resources } => {
                    eprintln!("{host}: probed {resources} resource(s)")
                }
                PlanEvent::Failed { host } => eprintln!("{host}: failed"),
            }
        }
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let inv = Inventory::new(cfg, &args.connect.overrides())
            .map_err(|e| Failure::new(Exit::Unreachable, format!("error: {e}")))?;
        let req = LiveRequest {
            loaded: &loaded,
            config_name: &config_name,
            selection,
            inputs: &inputs,
            parallel: args.connect.parallel,
        };
        let r = live::plan(req, &inv, &env, &events).await;
        inv.close().await;
        Ok::<_, Failure>(r)
    })?;
    let plan = match result {
        Ok(p) => p,
        Err(errors) => {
            let mut msg = String::new();
            for e in &errors {
                msg.push_str(&format!("error: {e}\n"));
            }
            msg.push_str(&format!(
                "plan failed: {} error(s){}",
                errors.len(),
                if args.out.is_some() {
                    "; no plan file was written"
                } else {
                    ""
                }
            ));
            return Err(Failure::new(Exit::Failed, msg));
        }
    };
    if let Some(out) = &args.out {
        lockfile::write(out, &plan)
            .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    }
    if !ctx.global.quiet || format != Format::Text {
        emit(&render(ctx, &plan, format, args.out.as_deref()));
    }
    if let Some(out) = &args.out
        && format == Format::Text
        && !ctx.global.quiet
    {
        emitln(&format!(
            "\nSaved the plan to {} ({}). Apply exactly this plan with: nexus apply {}",
            out.display(),
            lockfile::hash(&plan),
            out.display()
        ));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
