//! Generic JSON payload: the whole [`RunEvent`] for receivers of one's own (scripts, alerting,
//! chat bridges), with `event` naming the outcome and versions to check against.
//!
//! `format_version` follows the rule of nexus's other JSON: a minor version only adds fields, a
//! receiver should refuse an unknown major version. Nothing is truncated here: a program reads it.

use serde_json::{Value, json};

use super::RunEvent;

/// Version of this payload's shape (see docs/notifications.md).
pub const FORMAT_VERSION: &str = "1.0";

pub fn payload(ev: &RunEvent) -> Value {
    json!({
        "event": ev.outcome,
        "format_version": FORMAT_VERSION,
        "nexus_version": env!("CARGO_PKG_VERSION"),
        "kind": ev.kind,
        "config": ev.config,
        "title": ev.title,
        "summary": ev.summary,
        "duration_ms": ev.duration_ms,
        "tasks": ev.tasks,
        "hosts_failed": ev.hosts_failed,
        "changes": ev.changes,
        "run_id": ev.run_id,
        "plan_hash": ev.plan_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_support::{HASH, failure_event, success_event};

    #[test]
    fn exact_payload_for_a_failed_apply() {
        let got = payload(&failure_event());
        let want = json!({
            "event": "failure",
            "format_version": "1.0",
            "nexus_version": env!("CARGO_PKG_VERSION"),
            "kind": "apply",
            "config": "deploy/nexus.kdl",
            "title": "nexus apply failed",
            "summary": "1 of 2 tasks succeeded; 1 create, 1 update, 0 delete, 0 run; 12.3s; failed hosts: web2",
            "duration_ms": 12300,
            "tasks": [
                { "name": "build", "status": "succeeded" },
                { "name": "deploy", "status": "failed" }
            ],
            "hosts_failed": ["web2"],
            "changes": { "create": 1, "update": 1, "delete": 0, "run": 0 },
            "run_id": 42,
            "plan_hash": HASH,
        });
        assert_eq!(got, want);
    }

    #[test]
    fn absent_values_are_null() {
        let got = payload(&success_event());
        assert_eq!(got["event"], "success");
        assert_eq!(got["kind"], "run");
        assert_eq!(got["plan_hash"], Value::Null);
        assert_eq!(got["hosts_failed"], json!([]));
    }
}
