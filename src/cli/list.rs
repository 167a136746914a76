//! `nexus list`: tasks with their targets and dependencies, hosts and groups.

use serde_json::json;

use super::{CmdResult, Ctx, Format, emit, emit_json};
use crate::config::{Config, Host, Task, strategy_name};
use crate::exit::Exit;

fn address(h: &Host, cfg: &Config) -> String {
    let user = h.user.as_ref().or(cfg.defaults.user.as_ref());
    let port = h.port.or(cfg.defaults.port);
    let host = if h.address.contains(':') {
        format!("[{}]", h.address)
    } else {
        h.address.clone()
    };
    format!(
        "{}{}{}",
        user.map(|u| format!("{u}@")).unwrap_or_default(),
        host,
        port.map(|p| format!(":{p}")).unwrap_or_default()
    )
}

fn target_text(cfg: &Config, t: &Task) -> String {
    let targets = cfg.task_targets(t);
    let named: Vec<&str> = t.on.iter().map(|s| s.value.as_str()).collect();
    let mut hosts = targets.hosts.join(", ");
    for d in &targets.discovered {
        if !hosts.is_empty() {
            hosts.push_str(", ");
        }
        hosts.push_str(&format!("{d}: discovered at plan time"));
    }
    if named.is_empty()
        || named
            .iter()
            .copied()
            .eq(targets.hosts.iter().map(|s| s.as_str()))
    {
        hosts
    } else {
        format!("{} ({hosts})", named.join(", "))
    }
}

pub fn run(ctx: &Ctx) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    if format == Format::Json {
        let tasks: Vec<_> = cfg
            .tasks
            .iter()
            .map(|t| {
                let targets = cfg.task_targets(t);
                json!({
                    "name": t.name.value,
                    "description": t.description,
                    "on": t.on.iter().map(|s| &s.value).collect::<Vec<_>>(),
                    "hosts": targets.hosts,
                    "discovered": targets.discovered,
                    "deps": t.deps.iter().map(|s| &s.value).collect::<Vec<_>>(),
                    "strategy": strategy_name(t.strategy),
                    "tags": t.tags,
                    "resources": t.resources.len() + t.health_check.len(),
                })
            })
            .collect();
        let hosts: Vec<_> = cfg
            .hosts
            .iter()
            .map(|h| {
                json!({
                    "name": h.name.value,
                    "address": h.address,
                    "user": h.user.as_ref().or(cfg.defaults.user.as_ref()),
                    "port": h.port.or(cfg.defaults.port).unwrap_or(22),
                    "jump": h.jump.as_ref().map(|j| &j.value),
                    "tags": h.tags,
                })
            })
            .collect();
        let mut groups: Vec<_> = cfg
            .groups
            .iter()
            .map(|g| {
                let t = cfg.expand_targets([g.name.value.as_str()]);
                json!({
                    "name": g.name.value,
                    "members": g.members.iter().map(|m| &m.value).collect::<Vec<_>>(),
                    "hosts": t.hosts,
                    "discovered": t.discovered,
                })
            })
            .collect();
        groups.extend(cfg.tailscale.iter().map(|t| {
            json!({ "name": t.name.value, "tailscale": { "tags": t.tags, "user": t.user, "online_only": t.online_only } })
        }));
        let v = json!({ "tasks": tasks, "hosts": hosts, "groups": groups });
        emit_json(&v);
        return Ok(Exit::Ok);
    }

    let mut out = String::new();
    let width = cfg
        .tasks
        .iter()
        .map(|t| t.name.value.len())
        .max()
        .unwrap_or(0);
    out.push_str(&format!("Tasks ({}):\n", cfg.tasks.len()));
    for t in &cfg.tasks {
        out.push_str(&format!(
            "  {:width$}  on {}",
            t.name.value,
            target_text(cfg, t)
        ));
        if !t.deps.is_empty() {
            let deps: Vec<&str> = t.deps.iter().map(|d| d.value.as_str()).collect();
            out.push_str(&format!("  deps: {}", deps.join(", ")));
        }
        if t.strategy != crate::config::Strategy::Parallel {
            out.push_str(&format!("  strategy: {}", strategy_name(t.strategy)));
        }
        if !t.tags.is_empty() {
            out.push_str(&format!("  tags: {}", t.tags.join(", ")));
        }
        out.push('\n');
        if let Some(d) = &t.description {
            out.push_str(&format!("  {:width$}  {d}\n", ""));
        }
    }
    let width = cfg
        .hosts
        .iter()
        .map(|h| h.name.value.len())
        .max()
        .unwrap_or(0);
    out.push_str(&format!("\nHosts ({}):\n", cfg.hosts.len()));
    for h in &cfg.hosts {
        out.push_str(&format!("  {:width$}  {}", h.name.value, address(h, cfg)));
        if let Some(j) = &h.jump {
            out.push_str(&format!("  via {}", j.value));
        }
        out.push('\n');
    }
    let groups = cfg.groups.len() + cfg.tailscale.len();
    let width = cfg
        .groups
        .iter()
        .map(|g| g.name.value.len())
        .chain(cfg.tailscale.iter().map(|t| t.name.value.len()))
        .max()
        .unwrap_or(0);
    out.push_str(&format!("\nGroups ({groups}):\n"));
    for g in &cfg.groups {
        let members: Vec<&str> = g.members.iter().map(|m| m.value.as_str()).collect();
        out.push_str(&format!(
            "  {:width$}  {}\n",
            g.name.value,
            members.join(", ")
        ));
    }
    for t in &cfg.tailscale {
        let tags = if t.tags.is_empty() {
            "any tag".to_string()
        } else {
            t.tags
                .iter()
                .map(|t| format!("tag:{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  {:width$}  tailscale {tags} (discovered at plan time)\n",
            t.name.value
        ));
    }
    emit(&out);
    Ok(Exit::Ok)
}
