//! Webhooks from the CLI: `nexus run` notifies on success and failure, a scheduled
//! `nexus plan --detailed-exitcode` notifies on drift, and a webhook that fails never changes
//! nexus's own exit code. A real HTTP server on loopback records what arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Accepts requests forever, answering `status` and recording each JSON body.
fn server(status: u16) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/secret-path",
        listener.local_addr().unwrap()
    );
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                seen.lock().unwrap().push(v);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, bodies)
}

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
    let (url, bodies) = server(200);
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "one");
    let out = nexus(dir.path(), &url, &["run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = bodies.lock().unwrap().clone();
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
    assert_eq!(bodies.lock().unwrap().len(), 1);
    std::fs::write(dir.path().join("target-file"), "changed by hand").unwrap();
    let out = nexus(dir.path(), &url, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["event"], "drift");
}

#[test]
fn a_failing_webhook_does_not_change_the_result() {
    let (url, bodies) = server(500);
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
    assert_eq!(bodies.lock().unwrap().len(), 1);
}
