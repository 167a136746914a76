//! The machine-readable rendering (`--format json`): a documented, versioned schema that is not
//! the plan file's body. Consumers read `format_version`, reject another major version and ignore
//! fields they do not know; minor versions only add fields. The schema is in docs/plan-format.md.
//!
//! Secret values cannot appear: plans hold only secret references and keyed fingerprints.

use serde_json::{Value, json};

use super::{is_skipped, notifiers, strategy_phrase};
use crate::plan::{HostPlan, Plan, PlannedResource, Role, lockfile};
use crate::resources::{Action, EnvValue, Step};

/// Version of this JSON schema (independent of the plan file's format version).
pub const JSON_FORMAT_VERSION: &str = "1.0";

/// Renders the plan as the JSON document described in docs/plan-format.md.
pub fn plan(plan: &Plan) -> Value {
    let s = plan.summary;
    json!({
        "format_version": JSON_FORMAT_VERSION,
        "nexus_version": plan.nexus_version,
        "plan_hash": lockfile::hash(plan),
        "config": plan.config,
        "selection": {
            "tasks": plan.selection.tasks,
            "targets": plan.selection.targets,
            "tags": plan.selection.tags,
            "skip_tags": plan.selection.skip_tags,
        },
        "summary": {
            "create": s.create,
            "update": s.update,
            "delete": s.delete,
            "run": s.run,
            "no_op": s.no_op,
            "hosts": plan.hosts.len(),
            "text": super::summary_line(plan),
        },
        "has_changes": plan.has_changes(),
        "tasks": plan.tasks.iter().map(|t| json!({
            "name": t.name,
            "deps": t.deps,
            "hosts": t.hosts,
            "strategy": crate::config::strategy_name(t.strategy),
            "strategy_text": strategy_phrase(t),
            "batches": t.batches.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
            "canary": t.canary.map(|c| c.to_string()),
            "max_fail": t.max_fail.map(|m| m.to_string()),
            "parallel": t.parallel,
            "continue_on_error": t.continue_on_error,
        })).collect::<Vec<_>>(),
        "hosts": plan.hosts.iter().map(|h| json!({
            "name": h.name,
            "transport": h.connection.transport,
            "address": h.connection.address,
            "port": h.connection.port,
            "user": h.connection.user,
            "become_user": h.connection.become_user,
            "facts_digest": h.facts_digest,
        })).collect::<Vec<_>>(),
        "resource_changes": plan.hosts.iter().flat_map(|h| {
            h.resources.iter().map(move |r| change(plan, h, r))
        }).collect::<Vec<_>>(),
        "inputs": {
            "config": plan.inputs.config,
            "files": plan.inputs.files,
            "env": plan.inputs.env,
        },
    })
}

/// Terraform-style action list: one action per change (`["create"]`, `["no-op"]`).
fn actions(a: Action) -> Vec<&'static str> {
    vec![a.name()]
}

fn change(plan: &Plan, host: &HostPlan, r: &PlannedResource) -> Value {
    // Handlers run only where a change notifies them; say which changes do.
    let notified_by = if r.role == Role::Handler {
        notifiers(host, &r.task)
    } else {
        Vec::new()
    };
    json!({
        "host": host.name,
        "task": r.task,
        "role": r.role,
        "key": r.key,
        "id": r.id,
        "type": r.kind,
        "label": r.label,
        "action": r.action.name(),
        "actions": actions(r.action),
        "skipped": is_skipped(r),
        "reason": r.reason,
        "fields": r.fields.iter().map(|f| json!({"field": f.field, "from": f.from, "to": f.to})).collect::<Vec<_>>(),
        "diff": r.diff,
        "notify": r.notify,
        "notified_by": notified_by,
        "steps": r.steps.iter().map(|s| step(plan, s)).collect::<Vec<_>>(),
        "retry": {
            "timeout_secs": r.retry.timeout.map(|d| d.as_secs_f64()),
            "retries": r.retry.retries,
            "retry_delay_secs": r.retry.retry_delay.map(|d| d.as_secs_f64()),
        },
    })
}

fn step(plan: &Plan, s: &Step) -> Value {
    json!({
        "script": s.script,
        "sudo": s.sudo,
        "user": s.user,
        "cwd": s.cwd,
        "stdin": s.stdin.as_ref().map(|b| json!({
            "blake3": b,
            "size": lockfile::blob(plan, b).map(|c| c.len()),
        })),
        "env": s.env.iter().map(|(k, v)| (k.clone(), match v {
            EnvValue::Literal(x) => json!({"kind": "literal", "value": x}),
            EnvValue::Secret { name, fingerprint } => json!({"kind": "secret", "name": name, "fingerprint": fingerprint}),
        })).collect::<serde_json::Map<_, _>>(),
        "skip_if": s.skip_if,
        "download_to": s.download_to,
    })
}
