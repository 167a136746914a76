//! Webhooks from the CLI: `nexus run` notifies on success and failure, a scheduled
//! `nexus plan --detailed-exitcode` notifies on drift, and a webhook that fails never changes
//! nexus's own exit code. A real HTTP server on loopback records what arrives.

mod harness;

use std::process::Command;

use harness::webhook::Webhook;

fn nexus(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .current_dir(dir)
        .args(["-c", "nexus.kdl"])
        .args(args)
        .env("HOOK_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn config(dir: &std::path::Path, body: &str) {
    let path = dir.join("target-file");
    let text = format!(
        r#"notify "events" url=(env)"HOOK_URL" template="generic" on="always" retries=0
notify "drift" url=(env)"HOOK_URL" template="generic" on="drift" retries=0
task "t" {{
    file "{}" content="{body}"
}}
"#,
        path.display()
    );
    std::fs::write(dir.join("nexus.kdl"), text).unwrap();
}

#[test]
fn run_and_drift_notify_the_webhooks_that_asked() {
    let hook = Webhook::start(200);
    let url = hook.url.clone();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "one");
    let out = nexus(dir.path(), &url, &["run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = hook.bodies();
    assert_eq!(got.len(), 1, "only `always` fires on a run: {got:?}");
    assert_eq!(got[0]["event"], "success");
    assert_eq!(got[0]["kind"], "run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notify events"), "{stderr}");
    assert!(
        !stderr.contains("secret-path"),
        "webhook paths are secrets: {stderr}"
    );

    // No drift: nothing is sent. Drift: only the `drift` webhook hears about it.
    let out = nexus(dir.path(), &url, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(hook.bodies().len(), 1);
    std::fs::write(dir.path().join("target-file"), "changed by hand").unwrap();
    let out = nexus(dir.path(), &url, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let got = hook.bodies();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["event"], "drift");
}

#[test]
fn a_failing_webhook_does_not_change_the_result() {
    let hook = Webhook::start(500);
    let url = hook.url.clone();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "two");
    let out = nexus(dir.path(), &url, &["run", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = &report["notifications"][0];
    assert_eq!(n["ok"], false, "{report}");
    assert_eq!(n["status"], 500);
    assert!(!report.to_string().contains("secret-path"));
    assert_eq!(hook.bodies().len(), 1);
}
