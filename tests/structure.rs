//! The module structure issue 12 asks for: no import cycles, neither between the crate's
//! top-level modules nor between its files. A file depends on another when its code (comments
//! and its `#[cfg(test)] mod tests` aside) names it by a `crate::` or `super::` path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every source file under src/ by module path (`app/apply`, `plan` for plan/mod.rs).
fn sources() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                if stem != "mod" {
                    p.push(stem.to_string());
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Code only: unit tests may reach anywhere, and comments link freely.
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
                let code: String = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(p, code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The module paths `code` names after `marker` (`crate::` or `super::`).
fn paths_after<'a>(code: &'a str, marker: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(marker) {
        let before = rest[..at].chars().last();
        rest = &rest[at + marker.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(rest[..end].split("::").filter(|s| !s.is_empty()).collect());
    }
    out
}

/// The longest known module that `path` (absolute) starts with.
fn module_of(path: &[&str], known: &BTreeMap<Vec<String>, String>) -> Option<Vec<String>> {
    (1..=path.len()).rev().find_map(|k| {
        let m: Vec<String> = path[..k].iter().map(|s| s.to_string()).collect();
        known.contains_key(&m).then_some(m)
    })
}

/// File-level edges: which files each file names.
fn edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code) in &files {
        let mut named = Vec::new();
        for p in paths_after(code, "crate::") {
            named.extend(module_of(&p, &files));
        }
        // `super::` from a file is its parent module (a mod.rs file's module is the directory).
        let parent = &module[..module.len().saturating_sub(1)];
        for p in paths_after(code, "super::") {
            let mut abs: Vec<&str> = parent.iter().map(String::as_str).collect();
            abs.extend(p);
            named.extend(module_of(&abs, &files));
        }
        let set = edges.entry(module.clone()).or_default();
        for n in named {
            // A module naming its own parent or itself is not a dependency between files.
            if &n != module && !module.starts_with(&n) {
                set.insert(n);
            }
        }
    }
    edges
}

/// A cycle through `edges`, as a list of nodes, if there is one.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.clone());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn show(cycle: &[Vec<String>]) -> String {
    cycle
        .iter()
        .map(|m| m.join("/"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[test]
fn no_two_files_name_each_other_in_a_circle() {
    let edges = edges();
    assert!(edges.len() > 50, "src/ was not read");
    if let Some(c) = find_cycle(&edges) {
        panic!("an import cycle between files: {}", show(&c));
    }
}

/// Which top-level modules each top-level module names.
fn top_level_edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut top: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, to) in edges() {
        let a = from[..1.min(from.len())].to_vec();
        let set = top.entry(a.clone()).or_default();
        for t in to {
            let b = t[..1].to_vec();
            if b != a && !a.is_empty() {
                set.insert(b);
            }
        }
    }
    top
}

/// The top-level modules that module `m` names.
fn named_by(top: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, m: &str) -> BTreeSet<String> {
    top.get(&vec![m.to_string()])
        .unwrap_or_else(|| panic!("no module {m}"))
        .iter()
        .map(|p| p.join("/"))
        .collect()
}

#[test]
fn no_two_top_level_modules_name_each_other_in_a_circle() {
    let top = top_level_edges();
    if let Some(c) = find_cycle(&top) {
        panic!("an import cycle between modules: {}", show(&c));
    }
}

/// The plan file is what the executor consumes: `plan` names only what running a plan needs
/// (shell quoting, the sealing of a content's hash), and `exec` reads plans, not the
/// configuration, the planner or resource types (issue 12).
#[test]
fn the_plan_and_the_executor_stay_below_configuration_planner_and_types() {
    let top = top_level_edges();
    let named = |m: &str| named_by(&top, m);
    let plan = named("plan");
    let allowed: BTreeSet<String> = ["shell", "secrets"].map(String::from).into();
    assert!(
        plan.is_subset(&allowed),
        "plan names {:?}",
        plan.difference(&allowed).collect::<Vec<_>>()
    );
    let exec = named("exec");
    for m in ["config", "planner", "resources", "inputs", "app", "cli"] {
        assert!(!exec.contains(m), "exec names {m}: {exec:?}");
    }
}

/// Each resource type is one module of `resources`: its config struct and how its node is read
/// live there, so `resources` never names `config`, and `config` reaches the types only through
/// `resources::kind` (issue 12). The language both read with, `syntax`, names neither.
#[test]
fn resource_types_read_their_own_nodes_below_the_configuration() {
    let top = top_level_edges();
    let named = |m: &str| named_by(&top, m);
    assert!(
        !named("resources").contains("config"),
        "resources names config: {:?}",
        named("resources")
    );
    let syntax = named("syntax");
    for m in ["config", "resources", "planner", "app", "cli"] {
        assert!(!syntax.contains(m), "syntax names {m}: {syntax:?}");
    }
    let sources = sources();
    for (path, code) in &sources {
        if path.first().map(String::as_str) != Some("config") {
            continue;
        }
        for (at, _) in code.match_indices("resources::") {
            let next: String = code[at + "resources::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                ["kind", "ResourceKind"].contains(&next.as_str()),
                "src/{} names resources::{next:?} (types are reached through resources::kind)",
                path.join("/"),
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_one() {
    let m = |s: &str| vec![s.to_string()];
    let mut e = BTreeMap::new();
    e.insert(m("a"), BTreeSet::from([m("b")]));
    e.insert(m("b"), BTreeSet::from([m("c")]));
    e.insert(m("c"), BTreeSet::from([m("a")]));
    assert_eq!(show(&find_cycle(&e).unwrap()), "a -> b -> c -> a");
    e.insert(m("c"), BTreeSet::new());
    assert!(find_cycle(&e).is_none());
}
