//! How runs that go wrong end: each test reproduces a failure path a team meets in its first
//! weeks, against real sshd hosts.

mod harness;

use harness::SshHost;
use harness::project::{Project, Run};

/// Four hosts with private /srv; those in `failing` lack /srv/healthy, so the task's command
/// fails there.
fn fleet(prefix: &str, failing: &[usize]) -> Vec<SshHost> {
    let hosts: Vec<SshHost> = (1..=4)
        .map(|i| {
            SshHost::builder(&format!("{prefix}{i}"))
                .private_srv()
                .start()
        })
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        if !failing.contains(&(i + 1)) {
            std::fs::write(h.srv().join("healthy"), "").unwrap();
        }
    }
    hosts
}

fn rollout(hosts: &[SshHost], batch: u32, max_fail: &str) -> Run {
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let body = format!(
        "group \"fleet\" \"{}\"\n\
         task \"deploy\" on=\"fleet\" strategy=\"rolling\" batch={batch} max-fail=\"{max_fail}\" {{\n\
             command \"test -e /srv/healthy && touch /srv/deployed\"\n\
         }}\n",
        names.join("\" \"")
    );
    let p = Project::over(&refs, " connect-timeout=\"10s\"", &body);
    p.nexus(&["run", "--format", "json"])
}

/// Which hosts ran the command (successfully or not), from the JSON report.
/// Each host's status, by host name (hosts of one batch finish in any order).
fn statuses(r: &Run) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let mut out: Vec<String> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}={}",
                x["host"].as_str().unwrap(),
                x["status"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

/// `max-fail` is a share of the task's hosts, not of one batch: with `batch 1`, one failed host
/// of four is 25%, within `max-fail="50%"`, so the rollout goes on.
#[test]
fn max_fail_counts_the_tasks_hosts_with_batches_of_one() {
    let hosts = fleet("mfa", &[1]);
    let r = rollout(&hosts, 1, "50%");
    assert_eq!(r.code, 1, "a host failed: {r:?}");
    assert_eq!(
        statuses(&r),
        [
            "mfa1=failed",
            "mfa2=succeeded",
            "mfa3=succeeded",
            "mfa4=succeeded"
        ],
        "{r:?}"
    );
    for h in &hosts[1..] {
        assert!(h.srv().join("deployed").exists(), "{} ran", h.name);
    }
}

/// With `batch 2`, one failure in the first batch is 25% of the task's hosts: not more than
/// `max-fail="25%"`, so the second batch runs.
#[test]
fn max_fail_counts_the_tasks_hosts_with_batches_of_two() {
    let hosts = fleet("mfb", &[2]);
    let r = rollout(&hosts, 2, "25%");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        statuses(&r),
        [
            "mfb1=succeeded",
            "mfb2=failed",
            "mfb3=succeeded",
            "mfb4=succeeded"
        ],
        "{r:?}"
    );
}

/// Failures add up across batches: the second failed host (50% of four) exceeds
/// `max-fail="25%"`, and no later batch starts.
#[test]
fn max_fail_stops_once_the_failures_add_up() {
    let hosts = fleet("mfc", &[1, 2]);
    let r = rollout(&hosts, 1, "25%");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        statuses(&r),
        ["mfc1=failed", "mfc2=failed", "mfc3=not-run", "mfc4=not-run"],
        "{r:?}"
    );
    assert!(!hosts[2].srv().join("deployed").exists());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let stopped = v["summary"]["stopped"].as_str().unwrap();
    assert!(
        stopped.contains("batch 2/4") && stopped.contains("2 of 4 host(s) failed"),
        "{stopped}"
    );
}
