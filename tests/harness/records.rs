//! State records for the state tests: a run of one plan, and one resource's action.

use nexus::resources::Action;
use nexus::state::{self, ActionRecord, ActionStatus, NewRun, RunKind};

pub fn new_run(hash: &str) -> NewRun {
    NewRun {
        plan_hash: hash.to_string(),
        config: "nexus.kdl".to_string(),
        kind: RunKind::Apply,
        tasks: vec!["setup".to_string()],
        hosts: vec!["web1".to_string(), "web2".to_string()],
        started_at: state::now_ms(),
        signer: None,
    }
}

/// Resource `n` of task `setup` on `host`, with an output, an error when it failed, and a
/// fingerprint when it succeeded.
pub fn action(host: &str, n: usize, status: ActionStatus) -> ActionRecord {
    ActionRecord {
        host: host.to_string(),
        key: format!("setup#{n}"),
        task: "setup".to_string(),
        resource_id: format!("file:/etc/app/{n}.conf"),
        kind: "file".to_string(),
        label: format!("/etc/app/{n}.conf"),
        action: Action::Create,
        status,
        exit_code: Some(if status == ActionStatus::Failed { 2 } else { 0 }),
        duration_ms: 10 * n as u64,
        attempts: 1,
        output_tail: format!("output of {n}\n"),
        error: (status == ActionStatus::Failed).then(|| format!("step {n} failed")),
        fingerprint_after: (status == ActionStatus::Succeeded).then(|| format!("fp-{host}-{n}")),
        finished_at: state::now_ms(),
        holds_secrets: n.is_multiple_of(2),
    }
}
