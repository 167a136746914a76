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
    /// Fail instead of creating or changing nexus.lock (discovery results, source-url hashes)
    #[arg(long)]
    pub locked: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Resolves external inputs (Tailscale discovery, `source-url` content) against nexus.lock next
/// to the config, writing it when it changed (or failing with `--locked`), and hands the results
/// to `inputs`.
pub(crate) fn resolve_pins(
    ctx: &Ctx,
    cfg: &crate::config::Config,
    inputs: &mut Inputs,
    locked: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<(), Failure> {
    let path = crate::pins::path_for(&ctx.global.config);
    let mode = if locked {
        crate::pins::Mode::Locked
    } else {
        crate::pins::Mode::Refresh
    };
    let resolved = rt
        .block_on(crate::pins::resolve(cfg, &path, mode))
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    if resolved.written && !ctx.global.quiet {
        eprintln!("Updated {}", path.display());
    }
    inputs.set_pinned(resolved.pins.discovery, resolved.content);
    Ok(())
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
    let mut inputs = Inputs::collect(&loaded, &env)
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    // Secrets: the plan gets fingerprints; values are read only where this command needs them.
    let secrets = super::execute::plan_secrets(cfg, &mut inputs, false)?;
    let rt = runtime()?;
    resolve_pins(ctx, cfg, &mut inputs, args.locked, &rt)?;
    let selection = Selection {
        tasks: args.tasks.clone(),
        targets: args.targets.clone(),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
    };
    for t in &args.targets {
        let known = t == crate::config::LOCAL_HOST
            || cfg.host(t).is_some()
            || cfg.group(t).is_some()
            || cfg.tailscale_group(t).is_some()
            || inputs.discovered_host(t).is_some();
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
    let result = rt.block_on(async {
        let mut inv = Inventory::new(cfg, &args.connect.overrides())
            .map_err(|e| Failure::new(Exit::Unreachable, format!("error: {e}")))?;
        inv.set_secrets(secrets.clone());
        inv.add_discovered(cfg, inputs.discovered());
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
    // A scheduled drift check (--detailed-exitcode) tells the webhooks that asked for drift.
    if args.detailed_exitcode
        && let Some(event) = crate::notify::RunEvent::drift(&plan, Some(&lockfile::hash(&plan)))
        && plan
            .notify
            .iter()
            .any(|n| crate::notify::wants(&n.on, event.outcome))
    {
        let deliveries = match super::execute::notifier_secrets(cfg, &plan.notify) {
            Ok(secrets) => rt.block_on(super::execute::notify(&plan.notify, &event, &secrets)),
            Err(e) => plan
                .notify
                .iter()
                .filter(|n| crate::notify::wants(&n.on, event.outcome))
                .map(|n| crate::notify::Delivery::not_sent(&n.name, n.template, None, e.clone()))
                .collect(),
        };
        super::execute::print_deliveries(ctx, &deliveries);
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
