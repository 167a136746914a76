//! Cross-reference checks over the whole configuration: duplicate names, undefined references,
//! dependency and group cycles. Runs after every file is parsed, so it sees imports too.

use std::collections::HashMap;

use super::model::*;
use super::parse::Builder;
use crate::dag::Deps;
use crate::syntax::diagnostic::{Diag, Span, Spanned};
use crate::syntax::reader::Cx;
use crate::syntax::values;

/// Reports a second definition of a name already defined in the same namespace.
fn duplicates<'a>(
    cx: &mut Cx,
    kind: &str,
    names: impl IntoIterator<Item = (&'a Spanned<String>, &'a str)>,
) {
    let mut seen: HashMap<&str, (Span, &str)> = HashMap::new();
    for (name, what) in names {
        if let Some((first, first_what)) = seen.get(name.value.as_str()) {
            let msg = if *first_what == what {
                format!("{what} `{}` is defined more than once", name.value)
            } else {
                format!("`{}` is both a {first_what} and a {what}", name.value)
            };
            cx.push(
                Diag::new("config::duplicate-name", msg)
                    .at(name.span, "defined again here")
                    .also(*first, "first defined here")
                    .help(format!("{kind} names must be unique; rename one of them")),
            );
        } else {
            seen.insert(&name.value, (name.span, what));
        }
    }
}

/// Defined names listed in an undefined reference's help, at most.
const LISTED: usize = 10;

fn undefined(cx: &mut Cx, what: &str, name: &Spanned<String>, candidates: &[&str], help_all: &str) {
    let mut d = Diag::new(
        "config::undefined-reference",
        format!("{what} `{}` is not defined", name.value),
    )
    .at(name.span, format!("unknown {what}"));
    d = match cx.suggest_defined(&name.value, candidates.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`? {help_all}")),
        None if candidates.is_empty() => d.help(help_all.to_string()),
        None if candidates.len() <= LISTED => {
            d.help(format!("{help_all}; defined: {}", candidates.join(", ")))
        }
        // Listing every name in every such error made the output quadratic.
        None => d.help(format!(
            "{help_all}; defined: {}, … ({} in all)",
            candidates[..LISTED].join(", "),
            candidates.len()
        )),
    };
    cx.push(d);
}

pub(super) fn check(cx: &mut Cx, b: &Builder) {
    duplicates(
        cx,
        "host and group",
        b.hosts
            .iter()
            .map(|h| (&h.name, "host"))
            .chain(b.groups.iter().map(|g| (&g.name, "group")))
            .chain(b.tailscale.iter().map(|t| (&t.name, "group"))),
    );
    duplicates(cx, "task", b.tasks.iter().map(|t| (&t.name, "task")));
    duplicates(
        cx,
        "handler",
        b.handlers.iter().map(|h| (&h.name, "handler")),
    );
    duplicates(
        cx,
        "notify",
        b.notifiers.iter().map(|n| (&n.name, "notifier")),
    );

    let targets: Vec<&str> = std::iter::once(LOCAL_HOST)
        .chain(b.hosts.iter().map(|h| h.name.value.as_str()))
        .chain(b.groups.iter().map(|g| g.name.value.as_str()))
        .chain(b.tailscale.iter().map(|t| t.name.value.as_str()))
        .collect();
    let target_help = "targets are hosts, groups, tailscale groups or `local`";

    // Group members and group cycles.
    let group_index: HashMap<&str, usize> = b
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.value.as_str(), i))
        .collect();
    let mut group_edges = Vec::new();
    let mut member_span: HashMap<(usize, usize), Span> = HashMap::new();
    for (i, g) in b.groups.iter().enumerate() {
        for m in &g.members {
            if !targets.contains(&m.value.as_str()) {
                let mut d = Diag::new(
                    "config::unknown-member",
                    format!(
                        "group `{}` has an unknown member `{}`",
                        g.name.value, m.value
                    ),
                )
                .at(m.span, "not a host or group");
                // A group cannot usefully contain itself, so never suggest its own name.
                let others = targets.iter().copied().filter(|t| *t != g.name.value);
                d = match cx.suggest_defined(&m.value, others) {
                    Some(s) => d.help(format!("did you mean `{s}`? members are hosts or groups")),
                    None => d.help("members are hosts or groups defined in this configuration"),
                };
                cx.push(d);
            }
            if let Some(j) = group_index.get(m.value.as_str()) {
                group_edges.push((i, *j));
                member_span.entry((i, *j)).or_insert(m.span);
            }
        }
    }
    for cycle in Deps::new(b.groups.len(), group_edges).cycles() {
        let names: Vec<&str> = cycle
            .iter()
            .map(|i| b.groups[*i].name.value.as_str())
            .collect();
        let mut d = Diag::new(
            "config::group-cycle",
            format!("group cycle: {}", names.join(" → ")),
        )
        .at(
            member_span[&(cycle[0], cycle[1])],
            format!("`{}` contains `{}`", names[0], names[1]),
        )
        .help("a group may contain other groups, but not itself through any chain");
        for w in cycle.windows(2).skip(1) {
            d = d.also(
                member_span[&(w[0], w[1])],
                format!(
                    "`{}` contains `{}`",
                    b.groups[w[0]].name.value, b.groups[w[1]].name.value
                ),
            );
        }
        cx.push(d);
    }

    // Task targets, dependencies and cycles.
    let task_names: Vec<&str> = b.tasks.iter().map(|t| t.name.value.as_str()).collect();
    let handler_names: Vec<&str> = b.handlers.iter().map(|h| h.name.value.as_str()).collect();
    let task_index: HashMap<&str, usize> = task_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let mut edges = Vec::new();
    let mut edge_span: HashMap<(usize, usize), Span> = HashMap::new();
    for (i, t) in b.tasks.iter().enumerate() {
        for on in &t.on {
            if !targets.contains(&on.value.as_str()) {
                undefined(cx, "target", on, &targets, target_help);
            }
        }
        for dep in &t.deps {
            match task_index.get(dep.value.as_str()) {
                Some(j) => {
                    edges.push((i, *j));
                    edge_span.entry((i, *j)).or_insert(dep.span);
                }
                None => undefined(cx, "task", dep, &task_names, "deps name other tasks"),
            }
        }
        for r in t.resources.iter().chain(&t.health_check) {
            for n in &r.common.notify {
                if !handler_names.contains(&n.value.as_str()) {
                    undefined(
                        cx,
                        "handler",
                        n,
                        &handler_names,
                        "define it with handler \"NAME\" { ... }",
                    );
                }
            }
        }
    }
    for cycle in Deps::new(b.tasks.len(), edges).cycles() {
        let names: Vec<&str> = cycle.iter().map(|i| task_names[*i]).collect();
        let mut d = Diag::new("config::dependency-cycle", format!("dependency cycle: {}", names.join(" → ")))
            .help("tasks cannot depend on themselves, directly or through other tasks; remove one of these deps");
        let first = edge_span[&(cycle[0], cycle[1])];
        d = d.at(first, format!("`{}` depends on `{}`", names[0], names[1]));
        for w in cycle.windows(2).skip(1) {
            // Edges in other files are listed as notes under the snippet.
            let s = edge_span[&(w[0], w[1])];
            d = d.also(
                s,
                format!("`{}` depends on `{}`", task_names[w[0]], task_names[w[1]]),
            );
        }
        cx.push(d);
    }

    // Jump hosts: another host's name or an address; chains of named jumps must end.
    let host_index: HashMap<&str, usize> = b
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.value.as_str(), i))
        .collect();
    let mut jump_edges = Vec::new();
    for (i, h) in b.hosts.iter().enumerate() {
        let Some(j) = &h.jump else { continue };
        if let Some(k) = host_index.get(j.value.as_str()) {
            jump_edges.push((i, *k));
        } else if let Err(e) = values::parse_address(j) {
            cx.push(
                Diag::new(
                    "config::invalid-jump",
                    format!("jump host {:?} is neither a host nor an address", j.value),
                )
                .at(j.span, "unknown jump host")
                .help(format!(
                    "{}; or name a host defined in this configuration",
                    e.help
                )),
            );
        }
    }
    for cycle in Deps::new(b.hosts.len(), jump_edges).cycles() {
        let names: Vec<&str> = cycle
            .iter()
            .map(|i| b.hosts[*i].name.value.as_str())
            .collect();
        // Every host in the cycle has a jump (the edges come from them): label each hop.
        let hop = |i: usize, j: usize| {
            let h = &b.hosts[i];
            (
                h.jump.as_ref().map_or(h.name.span, |j| j.span),
                format!(
                    "`{}` jumps through `{}`",
                    h.name.value, b.hosts[j].name.value
                ),
            )
        };
        let (span, label) = hop(cycle[0], cycle[1]);
        let mut d = Diag::new(
            "config::jump-cycle",
            format!("jump host cycle: {}", names.join(" → ")),
        )
        .at(span, label)
        .help("a chain of jump hosts must end at a host reached directly");
        for w in cycle.windows(2).skip(1) {
            let (span, label) = hop(w[0], w[1]);
            d = d.also(span, label);
        }
        cx.push(d);
    }
}
