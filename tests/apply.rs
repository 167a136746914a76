//! `nexus plan -o` + `nexus apply` and `nexus run` end to end: the real binary against real sshd
//! hosts (each with its own /srv), a real state database. Convergence, refusals (tampered, stale,
//! replayed), faults (a host dying mid-apply, nexus killed mid-apply) and rollout control.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::SshHost;
use harness::project::Project;

struct Env {
    project: Project,
}

impl Env {
    /// Config with `hosts` (private /srv each), trusted known_hosts, an empty ssh config, `body`.
    fn new(hosts: &[&SshHost], body: &str) -> Env {
        Env {
            project: Project::over(hosts, " connect-timeout=\"5s\"", body),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.project.path(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.project.command(args)
    }

    fn nexus(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn history_json(&self) -> serde_json::Value {
        let out = self.nexus(&["history", "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn host(name: &str) -> SshHost {
    SshHost::builder(name).private_srv().start()
}

fn wait_for_file(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

const APP: &str = r#"
group "web" "a1" "a2"
task "setup" on="web" {
    directory "/srv/app" mode="0750"
    file "/srv/app/app.conf" content="port = 8080\n" mode="0640" notify="reload"
    command "echo built > /srv/app/built" creates="/srv/app/built"
}
handler "reload" {
    command "date +%s%N >> /srv/app/reloads"
}
"#;

#[test]
fn plan_apply_converges_and_records_exactly_the_plan() {
    let a1 = host("a1");
    let a2 = host("a2");
    let env = Env::new(&[&a1, &a2], APP);
    let out = env.nexus(&["plan", "-o", "plan.lock", "--detailed-exitcode"]);
    assert_eq!(
        code(&out),
        Some(2),
        "changes expected: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&env.nexus(&["show", "plan.lock", "--format", "json"]).stdout)
            .unwrap();
    let planned: usize = plan["resource_changes"].as_array().unwrap().len();

    let out = env.nexus(&["apply", "plan.lock", "--format", "json"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["status"], "success");
    for h in [&a1, &a2] {
        assert_eq!(
            std::fs::read_to_string(h.srv().join("app/app.conf")).unwrap(),
            "port = 8080\n"
        );
        assert_eq!(
            std::fs::read_to_string(h.srv().join("app/built")).unwrap(),
            "built\n"
        );
        // The handler ran once, after the change that notified it.
        assert_eq!(
            std::fs::read_to_string(h.srv().join("app/reloads"))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }
    // The state database lists exactly the planned resources of the run.
    let hist = env.history_json();
    let run = hist["runs"][0]["id"]
        .as_i64()
        .or_else(|| hist[0]["id"].as_i64())
        .expect("a run id");
    let detail = env.nexus(&["history", &run.to_string(), "--format", "json"]);
    let detail: serde_json::Value = serde_json::from_slice(&detail.stdout).unwrap();
    let actions = detail["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), planned, "{detail}");

    // Converged: planning again finds nothing to change.
    let out = env.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stdout));
    // And `run` on a converged system changes nothing and does not notify the handler.
    let out = env.nexus(&["run", "-q"]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(a1.srv().join("app/reloads"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    // What a guarded command's guard watches went away: the next apply runs it, so a drift
    // check reports it (a command that runs on every apply would not be drift).
    std::fs::remove_file(a1.srv().join("app/built")).unwrap();
    let out = env.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&out), Some(2), "{}", text(&out.stdout));
}

#[test]
fn tampered_stale_and_replayed_plans_execute_nothing() {
    let a1 = host("b1");
    let env = Env::new(
        &[&a1],
        "task \"t\" on=\"b1\" { file \"/srv/f\" content=\"one\\n\"; command \"touch /srv/ran\" }\n",
    );
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan.lock"])), Some(0));
    let original = std::fs::read(env.path("plan.lock")).unwrap();

    // Tampered: one byte of the body changed.
    let mut bad = original.clone();
    let pos = bad.iter().rposition(|b| *b == b'o').unwrap();
    bad[pos] = b'0';
    std::fs::write(env.path("tampered.lock"), &bad).unwrap();
    let out = env.nexus(&["apply", "tampered.lock"]);
    assert_eq!(code(&out), Some(5), "{}", text(&out.stderr));
    // Truncated.
    std::fs::write(env.path("truncated.lock"), &original[..original.len() / 2]).unwrap();
    assert_eq!(code(&env.nexus(&["apply", "truncated.lock"])), Some(5));
    assert!(
        !a1.srv().join("f").exists() && !a1.srv().join("ran").exists(),
        "nothing may run"
    );

    // Stale: the host changed after planning.
    std::fs::write(a1.srv().join("f"), "changed by hand\n").unwrap();
    let out = env.nexus(&["apply", "plan.lock"]);
    assert_eq!(code(&out), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("stale") && err.contains("/srv/f"), "{err}");
    assert_eq!(
        std::fs::read_to_string(a1.srv().join("f")).unwrap(),
        "changed by hand\n"
    );
    assert!(!a1.srv().join("ran").exists());

    // Fresh plan applies once; the same file again is refused.
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan.lock"])), Some(0));
    assert_eq!(code(&env.nexus(&["apply", "plan.lock"])), Some(0));
    std::fs::remove_file(a1.srv().join("ran")).unwrap();
    let out = env.nexus(&["apply", "plan.lock"]);
    assert_eq!(code(&out), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already applied"));
    assert!(
        !a1.srv().join("ran").exists(),
        "a replayed plan must not run its commands"
    );
}

#[test]
fn a_host_dying_mid_apply_fails_alone_and_a_new_plan_converges() {
    let c1 = host("c1");
    let mut c2 = host("c2");
    let c3 = host("c3");
    let body = r#"
group "all" "c1" "c2" "c3"
task "slow" on="all" {
    command "touch /srv/started; sleep 2; touch /srv/done" creates="/srv/done"
    file "/srv/after" content="ok\n"
}
"#;
    let env = Env::new(&[&c1, &c2, &c3], body);
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan.lock"])), Some(0));
    let child = env
        .cmd(&["apply", "plan.lock", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&c2.srv().join("started"));
    c2.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = report["summary"]["failed_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(failed, ["c2"]);
    for h in [&c1, &c3] {
        assert_eq!(
            std::fs::read_to_string(h.srv().join("after")).unwrap(),
            "ok\n"
        );
    }
    let c2_after = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "c2" && r["key"] == "slow#2")
        .unwrap();
    assert_eq!(c2_after["status"], "not-run");
    // The database is consistent: the run is recorded as failed with every resource.
    let hist = env.history_json();
    assert!(hist.to_string().contains("failed"), "{hist}");

    // The host comes back (same address, port and keys): a new plan and apply converge.
    let c2 = c2.restart();
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan2.lock"])), Some(0));
    let out = env.nexus(&["apply", "plan2.lock"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(c2.srv().join("after")).unwrap(),
        "ok\n"
    );
    assert_eq!(code(&env.nexus(&["plan", "--detailed-exitcode"])), Some(0));
}

#[test]
fn nexus_killed_mid_apply_leaves_a_recoverable_state() {
    let d1 = host("d1");
    let body = r#"
task "t" on="d1" {
    command "if [ ! -e /srv/started ]; then touch /srv/started; sleep 30; fi; touch /srv/done" creates="/srv/done"
    file "/srv/after" content="ok\n"
}
"#;
    let env = Env::new(&[&d1], body);
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan.lock"])), Some(0));
    let mut child = env
        .cmd(&["apply", "plan.lock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&d1.srv().join("started"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The database opens and shows the run as interrupted once its process is known to be gone.
    let hist = env.history_json();
    assert!(hist.to_string().contains("interrupted"), "{hist}");
    // A new plan and apply take over the stale lock and converge.
    assert_eq!(code(&env.nexus(&["plan", "-o", "plan2.lock"])), Some(0));
    let out = env.nexus(&["apply", "plan2.lock"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(d1.srv().join("after")).unwrap(),
        "ok\n"
    );
    assert_eq!(code(&env.nexus(&["plan", "--detailed-exitcode"])), Some(0));
}

#[test]
fn rolling_max_fail_stops_the_rollout() {
    let hosts: Vec<SshHost> = (1..=4).map(|i| host(&format!("e{i}"))).collect();
    // e1 and e2 (the first batch) lack /srv/healthy, so their check fails.
    for h in &hosts[2..] {
        std::fs::write(h.srv().join("healthy"), "").unwrap();
    }
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let body = r#"
group "fleet" "e1" "e2" "e3" "e4"
task "deploy" on="fleet" strategy="rolling" batch=2 max-fail="25%" {
    command "test -e /srv/healthy && touch /srv/deployed"
}
"#;
    let env = Env::new(&refs, body);
    let out = env.nexus(&["run", "--format", "json"]);
    assert_eq!(code(&out), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |h: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == h)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("e1"), "failed");
    assert_eq!(status("e2"), "failed");
    assert_eq!(status("e3"), "not-run");
    assert_eq!(status("e4"), "not-run");
    assert!(
        report["summary"]["stopped"]
            .as_str()
            .unwrap()
            .contains("batch 1/2"),
        "{report}"
    );
    assert!(!hosts[2].srv().join("deployed").exists());
}

/// Consecutive resources of a host run as one command (src/exec/batch.rs), yet each is reported
/// as if it had run alone: its status, exit code, output and guard verdict, no-ops in between,
/// a failure in the middle (then, with --continue-on-error, the rest in a command of their
/// own), and a handler notified from inside the batch.
#[test]
fn resources_sharing_a_command_report_alone() {
    let b1 = host("b1");
    std::fs::create_dir_all(b1.srv().join("m")).unwrap();
    std::fs::write(b1.srv().join("m/same.conf"), "same\n").unwrap();
    // Owned by the test user, as if an earlier run had made them.
    let uid = harness::uid_of(harness::TEST_USER).unwrap();
    for p in ["m", "m/same.conf"] {
        std::os::unix::fs::chown(b1.srv().join(p), Some(uid), None).unwrap();
    }
    let body = r#"
group "all" "b1"
task "mixed" on="all" {
    directory "/srv/m"
    file "/srv/m/a.conf" content="a\n" notify="h"
    file "/srv/m/same.conf" content="same\n"
    command "echo out; echo 'it failed' >&2; exit 3"
    command "echo guarded > /srv/m/guarded" creates="/srv/m/a.conf"
    file "/srv/m/b.conf" content="b\n"
}
handler "h" {
    command "touch /srv/m/handled"
}
"#;
    let env = Env::new(&[&b1], body);
    let sessions = || b1.log().matches("Starting session: command").count();
    let before = sessions();
    let out = env.nexus(&["run", "--continue-on-error", "--format", "json"]);
    assert_eq!(code(&out), Some(1), "{}", text(&out.stderr));
    // Facts and probe (one session), then #2-#4 (#1 and #3 are no-ops) up to the failure,
    // #5-#6 after it, and the handler: 4 commands where one each would have taken 7.
    assert_eq!(sessions() - before, 4, "{}", b1.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resources = report["resources"].as_array().unwrap();
    let get = |key: &str| {
        resources
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    let status = |key: &str| get(key)["status"].as_str().unwrap().to_string();
    assert_eq!(status("mixed#1"), "skipped", "the directory existed");
    assert_eq!(status("mixed#2"), "succeeded");
    assert_eq!(status("mixed#3"), "skipped");
    assert_eq!(status("mixed#4"), "failed");
    assert_eq!(get("mixed#4")["exit_code"], 3);
    assert_eq!(get("mixed#4")["error"], "exit code 3: it failed");
    assert_eq!(get("mixed#4")["output_tail"], "out\nit failed\n");
    // Planned to run, but a.conf exists by then: the guard, re-checked in the batch, skips it.
    assert_eq!(status("mixed#5"), "skipped");
    assert!(!b1.srv().join("m/guarded").exists());
    assert_eq!(status("mixed#6"), "succeeded");
    assert_eq!(
        std::fs::read_to_string(b1.srv().join("m/b.conf")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(b1.srv().join("m/a.conf")).unwrap(),
        "a\n"
    );
    assert!(b1.srv().join("m/handled").exists(), "the handler ran");
    // Without --continue-on-error the resources after the failure are not run.
    std::fs::remove_file(b1.srv().join("m/b.conf")).unwrap();
    let out = env.nexus(&["run", "--format", "json"]);
    assert_eq!(code(&out), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "mixed#6")
        .unwrap()
        .clone();
    assert_eq!(b["status"], "not-run", "{report}");
    assert!(!b1.srv().join("m/b.conf").exists());
}
