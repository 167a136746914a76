//! Renderings of a [`Plan`] for people and programs: terminal text ([`text`]), a versioned JSON
//! document ([`json`]) and a pull-request comment ([`markdown`]). All are pure functions of the
//! plan, so `nexus plan` and `nexus show plan.lock` print exactly the same thing.
//!
//! What makes a plan of a hundred hosts reviewable is [`view`]: a change that is identical on
//! several hosts (same resource, action, reason, fields, diff and steps) is shown once, with the
//! list of hosts it applies to.

pub mod json;
pub mod markdown;
pub mod terminal;
pub mod text;

pub use text::TextOptions;

use crate::plan::Action;
use crate::plan::{HostPlan, Plan, PlannedResource, Role, TaskPlan};

/// The one-line summary the CLI prints last (and every rendering starts with).
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary;
    if plan.hosts.is_empty() {
        return "No changes. The selection runs no task on any host.".into();
    }
    let pending: usize = plan.hosts.iter().map(|h| h.pending_handlers.len()).sum();
    if s.changes() == 0 && s.run == 0 && pending == 0 {
        return "No changes. Hosts match the configuration.".into();
    }
    let pending = if pending > 0 {
        format!(
            "; {} from an earlier run",
            count(pending, "pending handler", "pending handlers")
        )
    } else {
        String::new()
    };
    format!(
        "Plan: {} to create, {} to update, {} to delete, {} to run; {} unchanged on {}{pending}.",
        s.create,
        s.update,
        s.delete,
        s.run,
        s.no_op,
        count(plan.hosts.len(), "host", "hosts")
    )
}

/// `1 host`, `3 hosts`.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One change as a reviewer sees it: a planned resource and every host where it is identical.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The resource as planned on the first of `hosts` (identical on the others).
    pub resource: &'a PlannedResource,
    /// Hosts in plan order.
    pub hosts: Vec<&'a str>,
}

impl Entry<'_> {
    /// Whether a `when` condition removed the resource from these hosts' plans. The planner gives
    /// skipped resources no identity (they are never resolved, so they have none).
    pub fn skipped(&self) -> bool {
        is_skipped(self.resource)
    }
}

/// See [`Entry::skipped`].
pub fn is_skipped(r: &PlannedResource) -> bool {
    r.action == Action::NoOp && r.id.is_empty()
}

/// A task's entries in resource order (health checks last, as the planner orders them).
#[derive(Debug, Clone)]
pub struct TaskView<'a> {
    pub task: &'a TaskPlan,
    pub entries: Vec<Entry<'a>>,
}

/// A handler: where it will run and why, and its resources on those hosts.
#[derive(Debug, Clone)]
pub struct HandlerView<'a> {
    pub name: &'a str,
    /// Hosts where planned changes notify the handler, grouped by the labels of those changes.
    pub notified: Vec<(Vec<String>, Vec<&'a str>)>,
    /// Hosts whose plan includes the handler but where no planned change notifies it: it will
    /// not run there.
    pub idle: Vec<&'a str>,
    /// The handler's resources on the notified hosts (empty when it runs nowhere).
    pub entries: Vec<Entry<'a>>,
}

/// The plan, with identical changes across hosts merged.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub tasks: Vec<TaskView<'a>>,
    pub handlers: Vec<HandlerView<'a>>,
}

/// Whether two planned resources would be shown the same way: everything a reviewer reads.
/// Probes and fingerprints are left out on purpose: they describe the observation, not the change.
fn same(a: &PlannedResource, b: &PlannedResource) -> bool {
    a.key == b.key
        && a.id == b.id
        && a.kind == b.kind
        && a.label == b.label
        && a.role == b.role
        && a.action == b.action
        && a.reason == b.reason
        && a.fields == b.fields
        && a.diff == b.diff
        && a.steps == b.steps
        && a.notify == b.notify
}

/// Entries by resource key, keys in first-seen order.
type Slots<'a> = Vec<(&'a str, Vec<Entry<'a>>)>;

/// Adds `r` on `host` to `slots` (one slot per resource key, in first-seen order).
fn place<'a>(slots: &mut Slots<'a>, host: &'a str, r: &'a PlannedResource) {
    let slot = match slots.iter().position(|(k, _)| *k == r.key) {
        Some(i) => &mut slots[i].1,
        None => {
            slots.push((&r.key, Vec::new()));
            &mut slots.last_mut().expect("just pushed").1
        }
    };
    match slot.iter_mut().find(|e| same(e.resource, r)) {
        Some(e) => e.hosts.push(host),
        None => slot.push(Entry {
            resource: r,
            hosts: vec![host],
        }),
    }
}

/// Labels of the changes on `host` that notify handler `name`. Anything that acts (including a
/// command that runs) counts as a change for notification.
pub fn notifiers(host: &HostPlan, name: &str) -> Vec<String> {
    // A handler still pending from an earlier run runs whatever this plan changes.
    let mut out: Vec<String> = host
        .pending_handlers
        .iter()
        .filter(|p| p.handler == name)
        .map(|p| format!("{} (pending since run {})", p.notified_by, p.since_run))
        .collect();
    for r in &host.resources {
        if r.role != Role::Handler
            && r.action != Action::NoOp
            && r.notify.iter().any(|n| n == name)
            && !out.contains(&r.label)
        {
            out.push(r.label.clone());
        }
    }
    out
}

/// Builds the merged view of `plan`.
pub fn view(plan: &Plan) -> View<'_> {
    let mut tasks = Vec::new();
    for t in &plan.tasks {
        let mut slots: Slots = Vec::new();
        for h in &plan.hosts {
            for r in h
                .resources
                .iter()
                .filter(|r| r.role != Role::Handler && r.task == t.name)
            {
                place(&mut slots, &h.name, r);
            }
        }
        tasks.push(TaskView {
            task: t,
            entries: slots.into_iter().flat_map(|(_, e)| e).collect(),
        });
    }
    // Handlers in the order hosts list them (definition order), each with the hosts that
    // include it split into notified and idle.
    let mut handlers: Vec<(HandlerView, Slots)> = Vec::new();
    for h in &plan.hosts {
        for r in h.resources.iter().filter(|r| r.role == Role::Handler) {
            let i = match handlers.iter().position(|(v, _)| v.name == r.task) {
                Some(i) => i,
                None => {
                    let v = HandlerView {
                        name: &r.task,
                        notified: Vec::new(),
                        idle: Vec::new(),
                        entries: Vec::new(),
                    };
                    handlers.push((v, Vec::new()));
                    handlers.len() - 1
                }
            };
            let (v, slots) = &mut handlers[i];
            let by = notifiers(h, &r.task);
            let host: &str = &h.name;
            if by.is_empty() {
                if !v.idle.contains(&host) {
                    v.idle.push(host);
                }
                continue;
            }
            if !v.notified.iter().any(|(_, hosts)| hosts.contains(&host)) {
                match v.notified.iter_mut().find(|(labels, _)| *labels == by) {
                    Some((_, hosts)) => hosts.push(host),
                    None => v.notified.push((by, vec![host])),
                }
            }
            place(slots, host, r);
        }
    }
    View {
        tasks,
        handlers: handlers
            .into_iter()
            .map(|(mut v, slots)| {
                v.entries = slots.into_iter().flat_map(|(_, e)| e).collect();
                v
            })
            .collect(),
    }
}

/// Resource instances (resource × host) of some entries by action, no-ops split into unchanged
/// and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub run: usize,
    pub unchanged: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn of(entries: &[Entry<'_>]) -> Counts {
        let mut c = Counts::default();
        for e in entries {
            let n = e.hosts.len();
            match e.resource.action {
                Action::Create => c.create += n,
                Action::Update => c.update += n,
                Action::Delete => c.delete += n,
                Action::Run => c.run += n,
                Action::NoOp if e.skipped() => c.skipped += n,
                Action::NoOp => c.unchanged += n,
            }
        }
        c
    }

    pub fn acting(&self) -> usize {
        self.create + self.update + self.delete + self.run
    }

    /// `2 to create, 1 to run` (only the non-zero ones), or `no changes`.
    pub fn phrase(&self) -> String {
        let parts: Vec<String> = [
            (self.create, "to create"),
            (self.update, "to update"),
            (self.delete, "to delete"),
            (self.run, "to run"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect();
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join(", ")
        }
    }
}

/// `on web1, web2` for up to three hosts, `on 5 hosts: a, b, c, d, e` beyond.
pub fn hosts_phrase(hosts: &[&str]) -> String {
    if hosts.len() <= 3 {
        format!("on {}", hosts.join(", "))
    } else {
        format!("on {} hosts: {}", hosts.len(), hosts.join(", "))
    }
}

/// [`hosts_phrase`] for an entry of a task: `on all 12 hosts` when the entry covers every host of
/// a task with more than three (the task's header lists them), so large fleets stay readable.
pub fn entry_hosts_phrase(hosts: &[&str], task_hosts: Option<&[String]>) -> String {
    match task_hosts {
        Some(all)
            if hosts.len() > 3
                && hosts.len() == all.len()
                && hosts.iter().zip(all).all(|(a, b)| *a == b) =>
        {
            format!("on all {} hosts", hosts.len())
        }
        _ => hosts_phrase(hosts),
    }
}

/// How a task proceeds across its hosts, in words: `rolling in batches of 1, 50%`.
pub fn strategy_phrase(t: &TaskPlan) -> String {
    use crate::config::Strategy;
    let batches = |b: &[crate::syntax::values::BatchSize]| {
        b.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = match t.strategy {
        Strategy::Parallel => "parallel".to_string(),
        Strategy::Serial => "serial, one host at a time".to_string(),
        Strategy::Rolling => format!(
            "rolling in batches of {} (the last size repeats)",
            batches(&t.batches)
        ),
        Strategy::Canary => {
            let first = t
                .canary
                .map(|c| c.to_string())
                .unwrap_or_else(|| "1".into());
            if t.batches.is_empty() {
                format!("canary: {first} first, then the rest")
            } else {
                format!(
                    "canary: {first} first, then batches of {}",
                    batches(&t.batches)
                )
            }
        }
    };
    if let Some(p) = t.parallel {
        s.push_str(&format!(", at most {p} at once"));
    }
    s
}

/// Extra facts about a task worth a reviewer's attention; empty for a plain parallel task.
pub fn task_notes(t: &TaskPlan) -> Vec<String> {
    let mut notes = Vec::new();
    if t.strategy != crate::config::Strategy::Parallel || t.parallel.is_some() {
        notes.push(strategy_phrase(t));
    }
    if let Some(m) = t.max_fail {
        notes.push(format!("max-fail {m}"));
    }
    if !t.deps.is_empty() {
        notes.push(format!("after {}", t.deps.join(", ")));
    }
    if t.continue_on_error {
        notes.push("continues on error".into());
    }
    if t.on_failure == crate::config::OnFailure::Rollback {
        notes.push("rolls back on failure".into());
    }
    notes
}

/// `from → to` of a field change, with `(none)` for a missing side.
pub fn field_values(f: &crate::plan::FieldChange) -> (String, String) {
    let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(none)".into());
    (v(&f.from), v(&f.to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_phrases() {
        assert_eq!(hosts_phrase(&["a"]), "on a");
        assert_eq!(hosts_phrase(&["a", "b", "c"]), "on a, b, c");
        assert_eq!(
            hosts_phrase(&["a", "b", "c", "d"]),
            "on 4 hosts: a, b, c, d"
        );
    }
}
