//! `nexus graph [TASK...]`: the task dependency DAG as DOT, or its execution phases as text/JSON.

use clap::Args;
use serde_json::json;

use super::{CmdResult, Ctx, Format, emit, emit_json, emitln, resolve_tasks};
use crate::dag::Deps;
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Only these tasks and what they depend on
    pub tasks: Vec<String>,
}

/// Quotes a DOT identifier. Task names are restricted to [A-Za-z0-9._-], so this is only a guard.
fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn run(ctx: &Ctx, args: GraphArgs) -> CmdResult {
    let format = ctx.format(Format::Dot, &[Format::Dot, Format::Text, Format::Json])?;
    let loaded = ctx.load()?;
    let cfg = &loaded.config;
    let edges = cfg.task_edges();
    let deps = Deps::new(cfg.tasks.len(), edges.iter().copied());
    let selected: Vec<usize> = if args.tasks.is_empty() {
        (0..cfg.tasks.len()).collect()
    } else {
        deps.closure(&resolve_tasks(cfg, &args.tasks)?)
    };
    let phases: Vec<Vec<usize>> = deps
        .phases()
        .into_iter()
        .map(|p| {
            p.into_iter()
                .filter(|i| selected.contains(i))
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    let name = |i: usize| cfg.tasks[i].name.value.as_str();
    match format {
        Format::Text => {
            for (n, phase) in phases.iter().enumerate() {
                let names: Vec<&str> = phase.iter().map(|i| name(*i)).collect();
                emitln(&format!("Phase {}: {}", n + 1, names.join(", ")));
            }
        }
        Format::Json => {
            let v = json!({
                "tasks": selected.iter().map(|i| json!({
                    "name": name(*i),
                    "deps": cfg.tasks[*i].deps.iter().map(|d| &d.value).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "phases": phases.iter().map(|p| p.iter().map(|i| name(*i)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            });
            emit_json(&v);
        }
        _ => {
            // Edges point from a dependency to the task that waits for it: the direction work flows.
            let mut out = String::from("digraph nexus {\n  rankdir=LR;\n  node [shape=box];\n");
            for (n, phase) in phases.iter().enumerate() {
                out.push_str(&format!("  // phase {}\n  {{ rank=same;", n + 1));
                for i in phase {
                    out.push_str(&format!(" {};", dot_id(name(*i))));
                }
                out.push_str(" }\n");
            }
            for (a, b) in &edges {
                if selected.contains(a) {
                    out.push_str(&format!(
                        "  {} -> {};\n",
                        dot_id(name(*b)),
                        dot_id(name(*a))
                    ));
                }
            }
            out.push_str("}\n");
            emit(&out);
        }
    }
    Ok(Exit::Ok)
}
