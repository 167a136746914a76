//! Webhooks from the CLI: `nexus run` notifies on success and failure, a scheduled
//! `nexus plan --detailed-exitcode` notifies on drift, and a webhook that fails never changes
//! nexus's own exit code. A real HTTP server on loopback records what arrives.

mod harness;

use harness::project::Project;
use harness::webhook::Webhook;

/// A project whose task writes `target-file` with `body`, notifying the webhook at `url`
/// (through HOOK_URL) always and on drift.
fn project(url: &str, body: &str) -> Project {
    let p = Project::new().env("HOOK_URL", url);
    let path = p.path("target-file");
    p.config(&format!(
        r#"notify "events" url=(env)"HOOK_URL" template="generic" on="always" retries=0
notify "drift" url=(env)"HOOK_URL" template="generic" on="drift" retries=0
task "t" {{
    file "{}" content="{body}"
}}
"#,
        path.display()
    ));
    p
}

#[test]
fn run_and_drift_notify_the_webhooks_that_asked() {
    let hook = Webhook::start(200);
    let p = project(&hook.url, "one");
    let out = p.nexus(&["run"]);
    assert_eq!(out.code, 0, "{out:?}");
    let got = hook.bodies();
    assert_eq!(got.len(), 1, "only `always` fires on a run: {got:?}");
    assert_eq!(got[0]["event"], "success");
    assert_eq!(got[0]["kind"], "run");
    let stderr = &out.stderr;
    assert!(stderr.contains("notify events"), "{stderr}");
    assert!(
        !stderr.contains("secret-path"),
        "webhook paths are secrets: {stderr}"
    );

    // No drift: nothing is sent. Drift: only the `drift` webhook hears about it.
    let out = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(hook.bodies().len(), 1);
    p.write("target-file", "changed by hand");
    let out = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, 2, "{out:?}");
    let got = hook.bodies();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["event"], "drift");
}

#[test]
fn a_failing_webhook_does_not_change_the_result() {
    let hook = Webhook::start(500);
    let p = project(&hook.url, "two");
    let out = p.nexus(&["run", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let n = &report["notifications"][0];
    assert_eq!(n["ok"], false, "{report}");
    assert_eq!(n["status"], 500);
    assert!(!report.to_string().contains("secret-path"));
    assert_eq!(hook.bodies().len(), 1);
}
