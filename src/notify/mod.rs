//! Webhook notifications sent when an apply or run ends, or when a plan finds drift.
//!
//! Three layers, so each can be tested on its own:
//! - the event model ([`RunEvent`], built from an exec [`Report`] or a [`Plan`]) and the choice of
//!   which notifiers want it ([`wants`]), all pure;
//! - one payload builder per service ([`payload`]: [`slack`], [`discord`], [`teams`], [`generic`]),
//!   pure functions from an event to the JSON the service documents;
//! - delivery ([`deliver`], [`deliver_all`], [`notify`]): POST with a timeout per attempt and
//!   retries with backoff, returning a [`Delivery`] record and never an error, because a failed
//!   notification must be reported without changing the result of the run it describes.
//!
//! See docs/notifications.md for the user-facing contract.

pub mod delivery;
pub mod discord;
pub mod generic;
pub mod slack;
pub mod teams;

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::config::{NotifyEvent, NotifyTemplate};
pub use delivery::{
    Delivery, LookupError, NotifyError, ResolvedNotifier, RetryPolicy, deliver, deliver_all,
    deliver_all_with, deliver_with, notify, redact_url,
};

use crate::exec::{Report, Status, TaskStatus, human_ms};
use crate::plan::Action;
use crate::plan::Plan;

/// What happened: the single fact a notifier's `on` list is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// An apply or run finished and every task succeeded.
    Success,
    /// An apply or run finished with a failed or stopped task.
    Failure,
    /// A plan found changes to make (`nexus plan --detailed-exitcode` exiting 2).
    Drift,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Drift => "drift",
        }
    }
}

/// The command whose end is being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// `nexus apply FILE`.
    Apply,
    /// `nexus run`: plan and apply in one go.
    Run,
    /// `nexus plan`: only ever reports drift.
    Plan,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Apply => "apply",
            EventKind::Run => "run",
            EventKind::Plan => "plan",
        }
    }
}

/// A task's state as shown in a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Succeeded,
    Failed,
    /// Its rollout was stopped, or the run stopped before it started.
    Stopped,
    /// (plan) The task has changes to make.
    Drift,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Stopped => "stopped",
            TaskState::Drift => "drift",
        }
    }
}

impl From<TaskStatus> for TaskState {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Succeeded => TaskState::Succeeded,
            TaskStatus::Failed => TaskState::Failed,
            TaskStatus::Stopped => TaskState::Stopped,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskLine {
    pub name: String,
    pub status: TaskState,
}

/// Resource actions by kind: carried out (apply, run) or pending (plan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    /// Commands that run every time; counted, but never drift on their own.
    pub run: usize,
}

impl Changes {
    fn add(&mut self, a: Action) {
        match a {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Delete => self.delete += 1,
            Action::Run => self.run += 1,
            Action::NoOp => {}
        }
    }

    /// `1 create, 2 update, 0 delete, 1 run`: every kind, so readers never wonder what is missing.
    pub fn describe(&self) -> String {
        format!(
            "{} create, {} update, {} delete, {} run",
            self.create, self.update, self.delete, self.run
        )
    }
}

/// Everything a notification says about one finished command. Built by [`RunEvent::from_report`]
/// or [`RunEvent::drift`]; the payload builders only format it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunEvent {
    pub kind: EventKind,
    pub outcome: Outcome,
    /// The root config file, as named on the command line (the plan's `config`).
    pub config: String,
    /// `nexus apply succeeded`, `nexus plan found drift`.
    pub title: String,
    /// One line: counts, failed hosts, why the run stopped.
    pub summary: String,
    pub duration_ms: Option<u64>,
    /// Apply/run: every task in execution order. Plan: the tasks with changes.
    pub tasks: Vec<TaskLine>,
    pub hosts_failed: Vec<String>,
    pub changes: Changes,
    /// The state database's run id (apply, run).
    pub run_id: Option<i64>,
    /// The plan's hash, as recorded in the state database.
    pub plan_hash: Option<String>,
}

/// How many failed hosts the one-line summary names before `+N more`.
const SUMMARY_HOSTS: usize = 5;

impl RunEvent {
    /// The event for a finished apply or run: `Success` when the report is ok, else `Failure`.
    /// `changes` counts the resource actions that succeeded (handlers included).
    pub fn from_report(
        kind: EventKind,
        config: &str,
        report: &Report,
        run_id: Option<i64>,
        plan_hash: Option<&str>,
    ) -> RunEvent {
        let outcome = if report.ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let mut changes = Changes::default();
        for r in &report.results {
            if r.status == Status::Succeeded {
                changes.add(r.action);
            }
        }
        let tasks: Vec<TaskLine> = report
            .tasks
            .iter()
            .map(|t| TaskLine {
                name: t.name.clone(),
                status: t.status.into(),
            })
            .collect();
        let ok = tasks
            .iter()
            .filter(|t| t.status == TaskState::Succeeded)
            .count();
        let mut summary = if ok == tasks.len() {
            format!("{} succeeded", plural(tasks.len(), "task"))
        } else {
            format!("{ok} of {} succeeded", plural(tasks.len(), "task"))
        };
        summary.push_str(&format!(
            "; {}; {}",
            changes.describe(),
            human_ms(report.duration_ms)
        ));
        if !report.failed_hosts.is_empty() {
            summary.push_str(&format!(
                "; failed hosts: {}",
                name_list(&report.failed_hosts, SUMMARY_HOSTS)
            ));
        }
        if let Some(s) = &report.stopped {
            summary.push_str(&format!("; stopped: {s}"));
        }
        RunEvent {
            kind,
            outcome,
            config: config.to_string(),
            title: format!(
                "nexus {} {}",
                kind.name(),
                if report.ok { "succeeded" } else { "failed" }
            ),
            summary: one_line(&summary),
            duration_ms: Some(report.duration_ms),
            tasks,
            hosts_failed: report.failed_hosts.clone(),
            changes,
            run_id,
            plan_hash: plan_hash.map(str::to_string),
        }
    }

    /// The drift event for a plan, or `None` when it has no changes (`Plan::has_changes`): a plan
    /// that would only re-run commands is not drift, as for `--detailed-exitcode`.
    pub fn drift(plan: &Plan, plan_hash: Option<&str>) -> Option<RunEvent> {
        if !plan.has_changes() {
            return None;
        }
        let changes = Changes {
            create: plan.summary.create,
            update: plan.summary.update,
            delete: plan.summary.delete,
            run: plan.summary.run,
        };
        // Tasks (in plan order) and hosts with a create/update/delete of a task resource; handler
        // and health-check resources only follow from those.
        let mut by_task: BTreeMap<&str, usize> = BTreeMap::new();
        let mut hosts = Vec::new();
        for h in &plan.hosts {
            let mut host_changes = false;
            for r in &h.resources {
                if r.is_drift() {
                    *by_task.entry(r.task.as_str()).or_default() += 1;
                    host_changes = true;
                }
            }
            if host_changes {
                hosts.push(h.name.clone());
            }
        }
        let tasks: Vec<TaskLine> = plan
            .tasks
            .iter()
            .filter(|t| by_task.contains_key(t.name.as_str()))
            .map(|t| TaskLine {
                name: t.name.clone(),
                status: TaskState::Drift,
            })
            .collect();
        let n = plan.drift_count();
        let mut summary = format!("{} pending ({})", plural(n, "change"), changes.describe());
        if !hosts.is_empty() {
            summary.push_str(&format!(" on {}", name_list(&hosts, SUMMARY_HOSTS)));
        }
        Some(RunEvent {
            kind: EventKind::Plan,
            outcome: Outcome::Drift,
            config: plan.config.clone(),
            title: "nexus plan found drift".to_string(),
            summary: one_line(&summary),
            duration_ms: None,
            tasks,
            hosts_failed: Vec::new(),
            changes,
            run_id: None,
            plan_hash: plan_hash.map(str::to_string),
        })
    }

    /// `nexus apply failed: nexus.kdl: <summary>`, the line chat services show in a push
    /// notification.
    pub fn headline(&self) -> String {
        format!("{}: {}: {}", self.title, self.config, self.summary)
    }
}

/// Whether a notifier with these `on` events wants an event with this outcome.
///
/// `always` means every apply/run outcome (success and failure) but not drift: a scheduled drift
/// check runs often, and a notifier that asked for "always" on deploys should not be paged by it.
/// `drift` must be listed explicitly.
pub fn wants(on: &[NotifyEvent], outcome: Outcome) -> bool {
    on.iter().any(|e| {
        matches!(
            (e, outcome),
            (NotifyEvent::Always, Outcome::Success | Outcome::Failure)
                | (NotifyEvent::Success, Outcome::Success)
                | (NotifyEvent::Failure, Outcome::Failure)
                | (NotifyEvent::Drift, Outcome::Drift)
        )
    })
}

/// The JSON body for `template`, in that service's documented webhook format.
pub fn payload(template: NotifyTemplate, ev: &RunEvent) -> serde_json::Value {
    match template {
        NotifyTemplate::Slack => slack::payload(ev),
        NotifyTemplate::Discord => discord::payload(ev),
        NotifyTemplate::Teams => teams::payload(ev),
        NotifyTemplate::Generic => generic::payload(ev),
    }
}

/// `1 task`, `3 tasks`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `a, b, c +2 more`: a list that stays short however many items there are.
fn name_list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" +{} more", items.len() - max));
    }
    s
}

/// Newlines (from a stop reason, say) would break the one-line summary that chat previews show.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, ending in `…` when cut. Services count characters, not bytes, and a
/// byte cut could split a UTF-8 sequence.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The colour of an outcome, as 0xRRGGBB: green, red, amber.
pub(crate) fn colour(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Success => 0x2EB67D,
        Outcome::Failure => 0xE01E5A,
        Outcome::Drift => 0xECB22E,
    }
}

/// Fixed events for the payload builders' exact-JSON tests, built through the real constructors.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::exec::{ResourceResult, TaskOutcome};
    use crate::plan::Role;

    fn result(host: &str, task: &str, n: usize, action: Action, status: Status) -> ResourceResult {
        ResourceResult {
            host: host.into(),
            key: format!("{task}#{n}"),
            task: task.into(),
            role: Role::Task,
            id: format!("file:/etc/{task}{n}"),
            kind: crate::config::ResourceType::File,
            label: format!("file /etc/{task}{n}"),
            action,
            status,
            changed: status == Status::Succeeded && action != Action::NoOp,
            host_started: true,
            exit_code: None,
            duration_ms: 5,
            attempts: 1,
            output_tail: String::new(),
            error: None,
            holds_secrets: false,
        }
    }

    fn task(name: &str, status: TaskStatus, failed: &[&str]) -> TaskOutcome {
        TaskOutcome {
            name: name.into(),
            status,
            hosts_ok: vec!["web1".into()],
            hosts_failed: failed.iter().map(|h| h.to_string()).collect(),
            duration_ms: 6000,
        }
    }

    pub(crate) const HASH: &str = "0123456789abcdef0123456789abcdef";

    /// An apply of `deploy/nexus.kdl` where `deploy` failed on web2.
    pub(crate) fn failure_event() -> RunEvent {
        let report = Report {
            ok: false,
            tasks: vec![
                task("build", TaskStatus::Succeeded, &[]),
                task("deploy", TaskStatus::Failed, &["web2"]),
            ],
            results: vec![
                result("local", "build", 1, Action::Create, Status::Succeeded),
                result("web1", "deploy", 1, Action::Update, Status::Succeeded),
                result("web2", "deploy", 1, Action::Update, Status::Failed),
                result("web2", "deploy", 2, Action::Create, Status::NotRun),
                result("web1", "deploy", 2, Action::NoOp, Status::Skipped),
            ],
            failed_hosts: vec!["web2".into()],
            stopped: None,
            interrupted: None,
            duration_ms: 12_300,
            fingerprints_after: Vec::new(),
            probed_after: Default::default(),
        };
        RunEvent::from_report(
            EventKind::Apply,
            "deploy/nexus.kdl",
            &report,
            Some(42),
            Some(HASH),
        )
    }

    /// A `nexus run` of one task on one host that created one file.
    pub(crate) fn success_event() -> RunEvent {
        let report = Report {
            ok: true,
            tasks: vec![task("setup", TaskStatus::Succeeded, &[])],
            results: vec![result(
                "web1",
                "setup",
                1,
                Action::Create,
                Status::Succeeded,
            )],
            failed_hosts: vec![],
            stopped: None,
            interrupted: None,
            duration_ms: 850,
            fingerprints_after: Vec::new(),
            probed_after: Default::default(),
        };
        RunEvent::from_report(EventKind::Run, "nexus.kdl", &report, Some(7), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Role;

    #[test]
    fn wants_matches_listed_events() {
        use NotifyEvent::*;
        assert!(wants(&[Success], Outcome::Success));
        assert!(!wants(&[Success], Outcome::Failure));
        assert!(!wants(&[Success], Outcome::Drift));
        assert!(wants(&[Failure], Outcome::Failure));
        assert!(!wants(&[Failure], Outcome::Success));
        assert!(wants(&[Drift], Outcome::Drift));
        assert!(!wants(&[Drift], Outcome::Failure));
        assert!(!wants(&[], Outcome::Failure));
    }

    #[test]
    fn always_covers_apply_outcomes_but_not_drift() {
        use NotifyEvent::*;
        assert!(wants(&[Always], Outcome::Success));
        assert!(wants(&[Always], Outcome::Failure));
        assert!(!wants(&[Always], Outcome::Drift));
        assert!(wants(&[Always, Drift], Outcome::Drift));
        assert!(wants(&[Failure, Drift], Outcome::Drift));
    }

    #[test]
    fn success_event_from_report() {
        let ev = test_support::success_event();
        assert_eq!(ev.outcome, Outcome::Success);
        assert_eq!(ev.title, "nexus run succeeded");
        assert_eq!(
            ev.summary,
            "1 task succeeded; 1 create, 0 update, 0 delete, 0 run; 850ms"
        );
        assert_eq!(
            ev.headline(),
            "nexus run succeeded: nexus.kdl: 1 task succeeded; 1 create, 0 update, 0 delete, 0 run; 850ms"
        );
    }

    #[test]
    fn failure_event_counts_only_succeeded_actions() {
        let ev = test_support::failure_event();
        assert_eq!(ev.outcome, Outcome::Failure);
        // The failed update, the not-run create and the skipped no-op are not changes.
        assert_eq!(
            ev.changes,
            Changes {
                create: 1,
                update: 1,
                delete: 0,
                run: 0
            }
        );
        assert_eq!(ev.hosts_failed, vec!["web2"]);
        assert_eq!(ev.tasks[1].status, TaskState::Failed);
    }

    #[test]
    fn stop_reason_joins_the_summary_on_one_line() {
        let report = Report {
            ok: false,
            tasks: vec![],
            results: vec![],
            failed_hosts: (1..=7).map(|i| format!("web{i}")).collect(),
            stopped: Some("max-fail exceeded\nin deploy".into()),
            interrupted: None,
            duration_ms: 61_000,
            fingerprints_after: Vec::new(),
            probed_after: Default::default(),
        };
        let ev = RunEvent::from_report(EventKind::Apply, "n.kdl", &report, None, None);
        assert_eq!(
            ev.summary,
            "0 tasks succeeded; 0 create, 0 update, 0 delete, 0 run; 1m01s; failed hosts: \
             web1, web2, web3, web4, web5 +2 more; stopped: max-fail exceeded in deploy"
        );
    }

    /// A plan with these (host, task, role, action) resources and tasks base, app, cron. Built
    /// through the plan file's JSON so that fields added to the plan later (with defaults, as
    /// the format requires) do not break this test.
    fn plan(resources: &[(&str, &str, Role, Action)]) -> Plan {
        let mut summary = crate::plan::Summary::default();
        let mut hosts: Vec<serde_json::Value> = Vec::new();
        for (i, (host, task, role, action)) in resources.iter().enumerate() {
            summary.add(*action);
            let r = serde_json::json!({
                "key": format!("{task}#{i}"), "task": task, "role": role,
                "id": format!("file:/f{i}"), "kind": "file", "label": format!("file /f{i}"),
                "action": action, "reason": "",
            });
            match hosts.iter_mut().find(|h| h["name"] == *host) {
                Some(h) => h["resources"].as_array_mut().unwrap().push(r),
                None => hosts.push(serde_json::json!({
                    "name": host, "connection": { "transport": "local" },
                    "facts_digest": "", "probe_sudo": false, "resources": [r],
                })),
            }
        }
        let task = |name: &str| serde_json::json!({ "name": name, "deps": [], "hosts": [], "strategy": "parallel" });
        serde_json::from_value(serde_json::json!({
            "format_version": crate::plan::FORMAT_VERSION,
            "nexus_version": "0",
            "config": "nexus.kdl",
            "selection": { "tasks": [], "targets": [], "tags": [], "skip_tags": [] },
            "inputs": { "config": {}, "files": {}, "env": {} },
            "tasks": [task("base"), task("app"), task("cron")],
            "hosts": hosts,
            "blobs": {},
            "summary": summary,
        }))
        .expect("a valid plan")
    }

    #[test]
    fn drift_event_from_a_plan_with_changes() {
        let p = plan(&[
            ("web1", "app", Role::Task, Action::Update),
            ("web1", "base", Role::Task, Action::Create),
            ("web2", "base", Role::Task, Action::NoOp),
            ("web2", "cron", Role::Task, Action::Run),
            ("web2", "restart", Role::Handler, Action::Run),
        ]);
        let ev = RunEvent::drift(&p, Some("abc")).unwrap();
        assert_eq!(ev.kind, EventKind::Plan);
        assert_eq!(ev.outcome, Outcome::Drift);
        assert_eq!(ev.title, "nexus plan found drift");
        assert_eq!(
            ev.summary,
            "2 changes pending (1 create, 1 update, 0 delete, 2 run) on web1"
        );
        // Plan order, only tasks with changes; `cron` only re-runs a command.
        let names: Vec<&str> = ev.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["base", "app"]);
        assert!(ev.tasks.iter().all(|t| t.status == TaskState::Drift));
        assert_eq!(ev.duration_ms, None);
        assert_eq!(ev.plan_hash.as_deref(), Some("abc"));
    }

    #[test]
    fn no_drift_event_without_changes() {
        let p = plan(&[
            ("web1", "base", Role::Task, Action::NoOp),
            ("web1", "cron", Role::Task, Action::Run),
        ]);
        assert_eq!(RunEvent::drift(&p, None), None);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate("abc", 1), "…");
    }

    #[test]
    fn name_list_caps_length() {
        let hosts: Vec<String> = (1..=7).map(|i| format!("web{i}")).collect();
        assert_eq!(name_list(&hosts, 5), "web1, web2, web3, web4, web5 +2 more");
        assert_eq!(name_list(&hosts[..2], 5), "web1, web2");
    }

    #[test]
    fn one_line_flattens_whitespace() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
