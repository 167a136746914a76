//! The machine-readable rendering (`--format json`): a documented, versioned schema that is not
//! the plan file's body. Consumers read `format_version`, reject another major version and ignore
//! fields they do not know; minor versions only add fields.
//!
//! The document is the typed [`PlanDocument`]; its JSON Schema ([`schema`], checked in as
//! docs/plan.schema.json) is generated from these types, so the contract and the output cannot
//! disagree. Secret values cannot appear: plans hold only secret references and keyed
//! fingerprints.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{is_skipped, notifiers, strategy_phrase};
use crate::app::signature::Status;
use crate::config::ResourceType;
use crate::plan::{HostPlan, Plan, PlannedResource, Role, TransportKind, lockfile};
use crate::resources::{Action, EnvValue, Step};

/// Version of this JSON schema (independent of the plan file's format version).
pub const JSON_FORMAT_VERSION: &str = "1.0";

/// A plan as `nexus plan --format json` and `nexus show --format json` print it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "nexus plan, --format json")]
pub struct PlanDocument {
    /// Schema version of this document, "1.0".
    pub format_version: String,
    /// nexus version that made the plan.
    pub nexus_version: String,
    /// BLAKE3 of the plan file's body: the plan's identity.
    pub plan_hash: String,
    /// Root configuration file as named.
    pub config: String,
    /// What the user asked to plan, as in the plan.
    pub selection: Selection,
    /// Counts over all hosts (handlers excluded).
    pub summary: Summary,
    /// create + update + delete > 0.
    pub has_changes: bool,
    /// Tasks in execution order.
    pub tasks: Vec<Task>,
    pub hosts: Vec<Host>,
    /// One entry per resource per host, in host order then plan order.
    pub resource_changes: Vec<ResourceChange>,
    pub inputs: Inputs,
    /// Only from `nexus show`: the plan file's signature, checked as apply would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Status>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Selection {
    pub tasks: Vec<String>,
    pub targets: Vec<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub run: usize,
    pub no_op: usize,
    /// Number of hosts.
    pub hosts: usize,
    /// The one-line summary.
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub name: String,
    /// Dependencies within the plan.
    pub deps: Vec<String>,
    pub hosts: Vec<String>,
    /// `parallel`, `serial`, `rolling` or `canary`.
    pub strategy: String,
    /// The strategy in words.
    pub strategy_text: String,
    /// Batch sizes as written: "2", "25%".
    pub batches: Vec<String>,
    /// Canary batch size.
    pub canary: Option<String>,
    /// Failures tolerated before the rollout stops: "10%".
    pub max_fail: Option<String>,
    pub parallel: Option<u32>,
    pub continue_on_error: bool,
    /// `stop` or `rollback`: what a stopped rollout does.
    pub on_failure: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    pub name: String,
    pub transport: TransportKind,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub become_user: String,
    /// Digest of the facts planned from.
    pub facts_digest: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ResourceChange {
    pub host: String,
    /// Task, or handler name for `role: handler`.
    pub task: String,
    pub role: Role,
    /// Resource key (`setup#2`), unique per host.
    pub key: String,
    /// Identity (`file:/etc/motd`); empty when skipped.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ResourceType,
    pub label: String,
    pub action: Action,
    /// The same as a Terraform-style list: ["create"], ["no-op"].
    pub actions: Vec<Action>,
    /// Skipped by a `when` condition (then `action` is `no-op`).
    pub skipped: bool,
    pub reason: String,
    pub fields: Vec<FieldChange>,
    /// Unified diff of a text file's content.
    pub diff: Option<String>,
    /// Handlers this resource notifies when it acts.
    pub notify: Vec<String>,
    /// For `role: handler`: labels of the changes on this host that notify the handler; empty
    /// means it will not run there. Always empty for other roles.
    pub notified_by: Vec<String>,
    pub steps: Vec<StepView>,
    pub retry: Retry,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A command a resource runs on the host.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct StepView {
    pub script: String,
    pub sudo: bool,
    pub user: Option<String>,
    pub cwd: Option<String>,
    /// The content sent on stdin, by reference: the content itself is not included.
    pub stdin: Option<Stdin>,
    pub env: BTreeMap<String, EnvView>,
    pub skip_if: Option<String>,
    pub download_to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Stdin {
    pub blake3: String,
    pub size: Option<usize>,
    /// For a content the plan pins but does not carry: the local file apply reads it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An environment value: a literal, or a vault secret by name and keyed fingerprint.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EnvView {
    Literal { value: String },
    Secret { name: String, fingerprint: String },
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Retry {
    pub timeout_secs: Option<f64>,
    pub retries: u32,
    pub retry_delay_secs: Option<f64>,
}

/// Input digests, as in the plan.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Inputs {
    /// Config files, path -> BLAKE3.
    pub config: BTreeMap<String, String>,
    /// Local files read by resources, path -> BLAKE3.
    pub files: BTreeMap<String, String>,
    /// Environment values read (`null` when unset).
    pub env: BTreeMap<String, Option<String>>,
}

/// The JSON Schema of [`PlanDocument`] (checked in as docs/plan.schema.json).
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(PlanDocument)).expect("a schema is JSON")
}

/// The plan as the JSON document of [`PlanDocument`], with `signature` when `show` checked one.
/// Keys come out sorted (a `Value`'s maps are ordered), which keeps the output diffable.
pub fn plan(plan: &Plan, signature: Option<Status>) -> Value {
    serde_json::to_value(document(plan, signature)).expect("a plan document is JSON")
}

/// The typed document for `plan`.
pub fn document(plan: &Plan, signature: Option<Status>) -> PlanDocument {
    let s = plan.summary;
    PlanDocument {
        format_version: JSON_FORMAT_VERSION.to_string(),
        nexus_version: plan.nexus_version.clone(),
        plan_hash: lockfile::hash(plan),
        config: plan.config.clone(),
        selection: Selection {
            tasks: plan.selection.tasks.clone(),
            targets: plan.selection.targets.clone(),
            tags: plan.selection.tags.clone(),
            skip_tags: plan.selection.skip_tags.clone(),
        },
        summary: Summary {
            create: s.create,
            update: s.update,
            delete: s.delete,
            run: s.run,
            no_op: s.no_op,
            hosts: plan.hosts.len(),
            text: super::summary_line(plan),
        },
        has_changes: plan.has_changes(),
        tasks: plan
            .tasks
            .iter()
            .map(|t| Task {
                name: t.name.clone(),
                deps: t.deps.clone(),
                hosts: t.hosts.clone(),
                strategy: crate::config::strategy_name(t.strategy).to_string(),
                strategy_text: strategy_phrase(t),
                batches: t.batches.iter().map(|b| b.to_string()).collect(),
                canary: t.canary.map(|c| c.to_string()),
                max_fail: t.max_fail.map(|m| m.to_string()),
                parallel: t.parallel,
                continue_on_error: t.continue_on_error,
                on_failure: match t.on_failure {
                    crate::config::OnFailure::Stop => "stop",
                    crate::config::OnFailure::Rollback => "rollback",
                }
                .to_string(),
            })
            .collect(),
        hosts: plan
            .hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                transport: h.connection.transport,
                address: h.connection.address.clone(),
                port: h.connection.port,
                user: h.connection.user.clone(),
                become_user: h.connection.become_user.clone(),
                facts_digest: h.facts_digest.clone(),
            })
            .collect(),
        resource_changes: plan
            .hosts
            .iter()
            .flat_map(|h| h.resources.iter().map(move |r| change(plan, h, r)))
            .collect(),
        inputs: Inputs {
            config: plan.inputs.config.clone(),
            files: plan.inputs.files.clone(),
            env: plan.inputs.env.clone(),
        },
        signature,
    }
}

fn change(plan: &Plan, host: &HostPlan, r: &PlannedResource) -> ResourceChange {
    // Handlers run only where a change notifies them; say which changes do.
    let notified_by = if r.role == Role::Handler {
        notifiers(host, &r.task)
    } else {
        Vec::new()
    };
    ResourceChange {
        host: host.name.clone(),
        task: r.task.clone(),
        role: r.role,
        key: r.key.clone(),
        id: r.id.clone(),
        kind: r.kind,
        label: r.label.clone(),
        action: r.action,
        actions: vec![r.action],
        skipped: is_skipped(r),
        reason: r.reason.clone(),
        fields: r
            .fields
            .iter()
            .map(|f| FieldChange {
                field: f.field.clone(),
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        diff: r.diff.clone(),
        notify: r.notify.clone(),
        notified_by,
        steps: r.steps.iter().map(|s| step(plan, s)).collect(),
        retry: Retry {
            timeout_secs: r.retry.timeout.map(|d| d.as_secs_f64()),
            retries: r.retry.retries,
            retry_delay_secs: r.retry.retry_delay.map(|d| d.as_secs_f64()),
        },
    }
}

fn step(plan: &Plan, s: &Step) -> StepView {
    StepView {
        script: s.script.clone(),
        sudo: s.sudo,
        user: s.user.clone(),
        cwd: s.cwd.clone(),
        stdin: s.stdin.as_ref().map(|b| match plan.streamed.get(b) {
            Some(pinned) => Stdin {
                blake3: b.clone(),
                size: Some(pinned.size as usize),
                source: Some(pinned.source.clone()),
            },
            None => Stdin {
                blake3: b.clone(),
                size: lockfile::blob(plan, b).map(|c| c.len()),
                source: None,
            },
        }),
        env: s
            .env
            .iter()
            .map(|(k, v)| {
                let view = match v {
                    EnvValue::Literal(x) => EnvView::Literal { value: x.clone() },
                    EnvValue::Secret { name, fingerprint } => EnvView::Secret {
                        name: name.clone(),
                        fingerprint: fingerprint.clone(),
                    },
                };
                (k.clone(), view)
            })
            .collect(),
        skip_if: s.skip_if.clone(),
        download_to: s.download_to.clone(),
    }
}
