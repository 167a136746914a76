//! `nexus validate`: load the configuration, report every error, or summarize it.

use super::{CmdResult, Ctx, Format, emit_json, emitln};
use crate::exit::Exit;

pub fn run(ctx: &Ctx) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    let resources: usize = cfg
        .tasks
        .iter()
        .map(|t| t.resources.len() + t.health_check.len())
        .chain(cfg.handlers.iter().map(|h| h.resources.len()))
        .sum();
    let groups = cfg.groups.len() + cfg.tailscale.len();
    let file = ctx.global.config.display().to_string();
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "valid": true,
                "file": file,
                "files": loaded.sources.files().iter().map(|f| f.display.clone()).collect::<Vec<_>>(),
                "tasks": cfg.tasks.len(),
                "hosts": cfg.hosts.len(),
                "groups": groups,
                "handlers": cfg.handlers.len(),
                "resources": resources,
            });
            emit_json(&v);
        }
        _ => {
            if !ctx.global.quiet {
                emitln(&format!("Configuration valid: {file}"));
                emitln(&format!(
                    "Summary: Tasks: {}, Hosts: {}, Groups: {}, Handlers: {}, Resources: {}",
                    cfg.tasks.len(),
                    cfg.hosts.len(),
                    groups,
                    cfg.handlers.len(),
                    resources
                ));
            }
        }
    }
    Ok(Exit::Ok)
}
