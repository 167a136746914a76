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

/// A rollout that stops reports the hosts it never started as "not run" (not "ok"), once, not
/// each of their resources; their no-op resources count as unchanged, their changes as not run.
#[test]
fn a_stopped_rollout_reports_the_hosts_it_never_started() {
    let hosts = fleet("sr", &[1]);
    for h in &hosts {
        std::fs::write(h.srv().join("same"), "x").unwrap();
    }
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let body = "group \"fleet\" \"sr1\" \"sr2\" \"sr3\" \"sr4\"\n\
         task \"deploy\" on=\"fleet\" strategy=\"rolling\" batch=1 {\n\
             file \"/srv/same\" content=\"x\"\n\
             command \"test -e /srv/healthy && touch /srv/deployed\"\n\
         }\n";
    let p = Project::over(&refs, " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("Hosts: sr1 (failed), sr2 (not run), sr3 (not run), sr4 (not run)"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("Resources: 0 changed, 1 failed, 4 unchanged, 3 not run"),
        "{r:?}"
    );
    assert!(r.stdout.contains("not run: sr2, sr3, sr4"), "{r:?}");
    for h in ["sr2", "sr3", "sr4"] {
        assert!(!r.stdout.contains(&format!("{h}: ")), "{h} listed: {r:?}");
    }
}

/// `wait-for` is a check: when it passes it changed nothing, and the summary says so.
#[test]
fn wait_for_counts_as_a_check_not_a_change() {
    let h = SshHost::start("wf");
    let body = format!(
        "task \"t\" on=\"wf\" {{\n\
             wait-for tcp=\"{}:{}\" timeout=\"10s\" interval=\"100ms\"\n\
             command \"true\"\n\
         }}\n",
        h.ip, h.port
    );
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", &body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("Resources: 1 changed, 0 failed, 0 unchanged, 0 not run, 1 check passed"),
        "{r:?}"
    );
    let r = p.nexus(&["run", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["summary"]["changed"], 1, "{v}");
    assert_eq!(v["summary"]["checks"], 1, "{v}");
    let wait = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "wait-for")
        .unwrap();
    assert_eq!(wait["changed"], false, "{wait}");
}

/// `upload` compares content hashes: an unchanged file is not sent again, and a hand edit of the
/// uploaded file is drift, as for `file`.
#[test]
fn upload_is_idempotent_and_a_hand_edit_is_drift() {
    let h = SshHost::builder("up").private_srv().start();
    let body = "task \"t\" on=\"up\" {\n    upload \"files/app.bin\" \"/srv/app.bin\"\n}\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    p.write("files/app.bin", "\u{1}binary\u{0}payload\n");
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Resources: 1 changed"), "{r:?}");
    assert_eq!(
        std::fs::read(h.srv().join("app.bin")).unwrap(),
        b"\x01binary\x00payload\n"
    );
    let r = p.nexus(&["run"]);
    assert!(
        r.stdout.contains("Resources: 0 changed"),
        "sent again: {r:?}"
    );
    assert_eq!(p.nexus(&["plan", "--detailed-exitcode"]).code, 0);
    std::fs::write(h.srv().join("app.bin"), "edited by hand").unwrap();
    let r = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "a hand edit is drift: {r:?}");
    assert!(r.stdout.contains("upload files/app.bin"), "{r:?}");
}

/// A task's `timeout` bounds the whole task on a host: two commands of 1.5 s each do not fit in
/// `timeout="2s"`, though each alone would.
#[test]
fn a_task_timeout_bounds_the_whole_task_on_a_host() {
    let h = SshHost::builder("tt").private_srv().start();
    let body = "task \"t\" on=\"tt\" timeout=\"2s\" {\n\
                    command \"sleep 1.5; touch /srv/a\"\n\
                    command \"sleep 1.5; touch /srv/b\"\n\
                    command \"touch /srv/c\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run", "--format", "json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let res = v["resources"].as_array().unwrap();
    let status = |i: usize| res[i]["status"].as_str().unwrap().to_string();
    assert_eq!(
        [status(0), status(1), status(2)],
        ["succeeded", "failed", "not-run"],
        "{r:?}"
    );
    let err = res[1]["error"].as_str().unwrap();
    assert!(err.contains("task t timed out after 2s"), "{err}");
    assert!(h.srv().join("a").exists());
    assert!(!h.srv().join("c").exists());
}

/// A handler whose run failed stays pending: once its problem is fixed, the next plan shows it
/// (and `--detailed-exitcode` says so), the next apply runs it, and only its success clears it.
#[test]
fn a_failed_handlers_notification_is_kept_until_it_succeeds() {
    let h = SshHost::builder("ph").private_srv().start();
    let body = "task \"site\" on=\"ph\" {\n\
                    file \"/srv/site.conf\" content=\"v1\" notify=\"reload\"\n\
                }\n\
                handler \"reload\" {\n\
                    command \"test -e /srv/reload-works && touch /srv/reloaded\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 1, "the handler fails: {r:?}");
    assert!(h.srv().join("site.conf").exists());

    // The handler's problem is fixed by hand; the config did not change.
    std::fs::write(h.srv().join("reload-works"), "").unwrap();
    let r = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "a pending handler is a change to make: {r:?}");
    assert!(r.stdout.contains("pending since run 1"), "{r:?}");
    assert!(
        r.stdout.contains("notified by file /srv/site.conf"),
        "{r:?}"
    );
    let r = p.nexus(&["state"]);
    assert!(r.stdout.contains("reload"), "nexus state lists it: {r:?}");

    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(h.srv().join("reloaded").exists(), "the pending handler ran");
    let r = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "cleared once it succeeded: {r:?}");
}

/// Processes anywhere on this machine (all test hosts share it) running `sleep SECONDS`.
fn sleeping(seconds: &str) -> usize {
    let want = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .count()
}

/// A command that times out on an SSH host is killed there, with everything it started (here a
/// subshell, which outlives its parent shell): nothing it would have done later happens, and no
/// process of it is left, counted on the host.
#[test]
fn a_timed_out_command_is_killed_on_the_host() {
    let h = SshHost::builder("to").private_srv().start();
    let body = "task \"t\" on=\"to\" {\n\
                    command \"(sleep 3.21; echo late > /srv/late); true\" timeout=\"1s\" sudo=#true\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("timed out after 1s"), "{r:?}");
    // The kill has a grace period; give it that long, no more.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sleeping("3.21"), 0, "a process of the command is left");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        !h.srv().join("late").exists(),
        "the timed-out command went on running"
    );
}

/// Ctrl-C (SIGINT) or SIGTERM during an apply: nexus starts nothing new, lets the command in
/// flight finish, records every outcome and the run as interrupted, releases the apply lock and
/// exits 130 (SIGINT) or 143 (SIGTERM).
#[test]
fn an_interrupted_run_stops_cleanly_and_says_so() {
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let h = SshHost::builder(&format!("ir{code}")).private_srv().start();
        let body = "task \"t\" on=\"HOST\" {\n\
                        command \"sleep 1.5 && touch /srv/first\" timeout=\"30s\"\n\
                        command \"touch /srv/second\"\n\
                    }\n"
        .replace("HOST", &h.name);
        let p = Project::over(&[&h], " connect-timeout=\"10s\"", &body);
        let child = p
            .command(&["run"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while h.running("sleep") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the command never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        harness::run(
            std::process::Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string()),
        );
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {stdout}{stderr}");
        assert!(
            h.srv().join("first").exists(),
            "the command in flight finished"
        );
        assert!(!h.srv().join("second").exists(), "nothing new started");
        let r = p.nexus(&["history", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["runs"][0]["status"], "interrupted", "{v}");
        // The lock is free: the next run goes ahead and finishes the work.
        let r = p.nexus(&["run"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(h.srv().join("second").exists());
    }
}

/// A file resource whose path became a symbolic link after planning (a package earlier in the
/// same apply made it one) is not silently replaced by a regular file: the write refuses, and
/// says why.
#[test]
fn a_path_that_became_a_symlink_is_not_replaced() {
    let h = SshHost::builder("sl").private_srv().start();
    std::fs::write(h.srv().join("target"), "the package's file\n").unwrap();
    let body = "task \"t\" on=\"sl\" {\n\
                    command \"ln -s /srv/target /srv/site\" creates=\"/srv/site\"\n\
                    file \"/srv/site\" content=\"ours\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("became a symbolic link"), "{r:?}");
    let meta = std::fs::symlink_metadata(h.srv().join("site")).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read_to_string(h.srv().join("target")).unwrap(),
        "the package's file\n"
    );
}

/// A file over a path that is a symbolic link when planning (nginx's sites-enabled/default) is
/// shown as "replace symlink -> TARGET"; the link is replaced by a regular file and what it
/// pointed to is left alone. A link retargeted between plan and apply is drift; so is a directory
/// resource's link. History records what was replaced.
#[test]
fn a_symlink_is_shown_in_the_plan_and_replaced_only_as_planned() {
    let h = SshHost::builder("sl-plan").private_srv().start();
    std::fs::write(h.srv().join("target"), "the package's file\n").unwrap();
    std::fs::write(h.srv().join("other"), "another file\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        h.srv().join("other"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::create_dir(h.srv().join("realdir")).unwrap();
    std::os::unix::fs::symlink("/srv/target", h.srv().join("site")).unwrap();
    std::os::unix::fs::symlink("/srv/realdir", h.srv().join("cache")).unwrap();
    let body = "task \"t\" on=\"sl-plan\" {\n\
                    file \"/srv/site\" content=\"ours\"\n\
                    directory \"/srv/cache\" mode=\"0750\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["plan", "-o", "one.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("replace symlink -> /srv/target"), "{r:?}");
    assert!(
        r.stdout.contains("replace symlink -> /srv/realdir"),
        "{r:?}"
    );

    // Retargeted after planning: the plan is stale, and nothing is written.
    std::fs::remove_file(h.srv().join("site")).unwrap();
    std::os::unix::fs::symlink("/srv/other", h.srv().join("site")).unwrap();
    let r = p.nexus(&["apply", "one.lock"]);
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        std::fs::symlink_metadata(h.srv().join("site"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let r = p.nexus(&["plan", "-o", "two.lock"]);
    assert!(r.stdout.contains("replace symlink -> /srv/other"), "{r:?}");
    let r = p.nexus(&["apply", "two.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let site = std::fs::symlink_metadata(h.srv().join("site")).unwrap();
    assert!(site.file_type().is_file(), "the link became a regular file");
    assert_eq!(
        site.permissions().mode() & 0o7777,
        0o644,
        "a new file's mode, not the link's 0777 nor its target's"
    );
    assert_eq!(
        std::fs::read_to_string(h.srv().join("site")).unwrap(),
        "ours"
    );
    let cache = std::fs::symlink_metadata(h.srv().join("cache")).unwrap();
    assert!(cache.file_type().is_dir(), "the link became a directory");
    for (f, want) in [
        ("target", "the package's file\n"),
        ("other", "another file\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(h.srv().join(f)).unwrap(),
            want,
            "what the link pointed to is untouched"
        );
    }
    assert!(h.srv().join("realdir").is_dir());
    let r = p.nexus(&["history", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let run = v["runs"][0]["id"].to_string();
    let r = p.nexus(&["history", &run]);
    assert!(
        r.stdout.contains("    why: replace symlink -> /srv/other"),
        "history says what was replaced: {r:?}"
    );
    let r = p.nexus(&["history", &run, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["actions"][0]["reason"], "replace symlink -> /srv/other",
        "{v}"
    );
    let r = p.nexus(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{r:?}");

    // A rollback puts the links back, pointing where they did.
    let r = p.nexus(&["rollback", "-o", "r.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("irreversible"), "{r:?}");
    let r = p.nexus(&["apply", "r.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    for (link, to) in [("site", "/srv/other"), ("cache", "/srv/realdir")] {
        assert_eq!(
            std::fs::read_link(h.srv().join(link)).unwrap(),
            std::path::Path::new(to),
            "{link} is a link again"
        );
    }
}

/// A file under a directory that replaces a symbolic link was probed through the link (at what
/// it points to), which is not where apply writes: the plan refuses it and says what to do.
#[test]
fn a_resource_under_a_replaced_link_is_refused_when_planning() {
    let h = SshHost::builder("sl-under").private_srv().start();
    std::fs::create_dir(h.srv().join("real")).unwrap();
    std::fs::write(h.srv().join("real/conf"), "old\n").unwrap();
    std::os::unix::fs::symlink("/srv/real", h.srv().join("app")).unwrap();
    let body = "task \"t\" on=\"sl-under\" {\n\
                    directory \"/srv/app\"\n\
                    file \"/srv/app/conf\" content=\"new\\n\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("a symbolic link this plan replaces with a directory"),
        "{r:?}"
    );
    assert!(
        !p.path("plan.lock").exists(),
        "no plan file after a refused plan"
    );
    assert_eq!(
        std::fs::read_to_string(h.srv().join("real/conf")).unwrap(),
        "old\n"
    );
}

/// Processes on this machine whose command line contains `needle` (all test hosts share it).
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(pid)
        })
        .filter(|&pid| pid != std::process::id())
        .collect()
}

/// Waits until `f` holds, for at most `secs` seconds; whether it did.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}

/// `kill -9` of nexus while a command runs on a host (as the login user, and through sudo): the
/// command must not outlive it. The host notices the SSH session is gone and kills what nexus
/// started there; no process of it is left and the file it writes stops growing.
#[test]
fn a_killed_nexus_leaves_no_command_running_on_the_host() {
    for sudo in [false, true] {
        let name = if sudo { "k9s" } else { "k9" };
        let h = SshHost::builder(name).private_srv().start();
        // A marker word only this command's processes carry.
        let marker = format!("nexus-k9-marker-{name}");
        let body = format!(
            "task \"t\" on=\"{name}\" {{\n\
                 command \"i=0; while [ $i -lt 300 ]; do echo {marker} >> /srv/ticks; i=$((i+1)); sleep 0.1; done\" sudo=#{sudo}\n\
             }}\n"
        );
        let p = Project::over(&[&h], " connect-timeout=\"10s\"", &body);
        kill_nexus_mid_command(&p, &marker, &h.srv().join("ticks"), &format!("sudo={sudo}"));
    }
}

/// Applies `p`'s plan, whose one command appends `marker` lines to `ticks`; once it writes,
/// kills nexus with SIGKILL and asserts that no process carrying `marker` is left and that
/// `ticks` stops growing.
fn kill_nexus_mid_command(p: &Project, marker: &str, ticks: &std::path::Path, case: &str) {
    let r = p.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut child = p
        .command(&["apply", "plan.lock"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let size = || std::fs::metadata(ticks).map_or(0, |m| m.len());
    assert!(
        eventually(30, || size() > 0),
        "{case}: the command never started"
    );
    assert!(!processes_with(marker).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(5, || processes_with(marker).is_empty()),
        "{case}: processes of the command outlived nexus: {:?}",
        processes_with(marker)
    );
    let stopped_at = size();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(size(), stopped_at, "{case}: written to after nexus died");
}

/// `kill -9` of nexus while a command runs on this machine (a task without `on`): the command
/// must not outlive it either. The local transport runs commands under the same watchdog, in a
/// session of their own, so the terminal's session is never what gets killed.
#[test]
fn a_killed_nexus_leaves_no_local_command_running() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = dir.path().join("ticks");
    let marker = "nexus-k9-marker-local";
    let p = Project::new();
    p.config(&format!(
        "task \"t\" {{\n\
             command \"i=0; while [ $i -lt 300 ]; do echo {marker} >> {}; i=$((i+1)); sleep 0.1; done\"\n\
         }}\n",
        ticks.display()
    ));
    kill_nexus_mid_command(&p, marker, &ticks, "local");
}

/// A task's `timeout` abandons the command in flight: that command is killed on its host then,
/// as one whose own `timeout` expired is, not when nexus exits (another task keeps it running).
#[test]
fn a_task_timeout_kills_the_command_in_flight_on_the_host() {
    let h = SshHost::builder("ttk").private_srv().start();
    let other = SshHost::start("ttk2");
    let body = "task \"t\" on=\"ttk\" timeout=\"1s\" {\n\
                    command \"sleep 2.73; touch /srv/late\"\n\
                }\n\
                task \"u\" on=\"ttk2\" {\n\
                    command \"sleep 4.5\"\n\
                }\n";
    let p = Project::over(&[&h, &other], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("task t timed out after 1s"), "{r:?}");
    assert_eq!(sleeping("2.73"), 0, "a process of the command is left");
    assert!(
        !h.srv().join("late").exists(),
        "the abandoned command went on running"
    );
}

/// A second Ctrl-C does not wait for the command in flight: it is killed on its host now, its
/// resource recorded failed ("killed"), what did not start recorded not run, the run recorded
/// interrupted, and nexus exits 130.
#[test]
fn a_second_interrupt_kills_the_command_in_flight_and_records_it() {
    let h = SshHost::builder("ir2").private_srv().start();
    let body = "task \"t\" on=\"ir2\" {\n\
                    command \"sleep 30.7 && touch /srv/first\"\n\
                    command \"touch /srv/second\"\n\
                }\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let out_path = p.path("run.out");
    let child = p
        .command(&["run"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(30, || sleeping("30.7") > 0),
        "the command never started"
    );
    let int = || {
        harness::run(
            std::process::Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string()),
        )
    };
    int();
    // Signals sent close together may arrive as one: the second goes once the first was seen.
    assert!(eventually(10, || std::fs::read_to_string(&out_path)
        .is_ok_and(|s| s.contains("interrupted by SIGINT"))));
    int();
    let out = child.wait_with_output().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    // Each signal says what the next one does.
    assert!(
        stdout.contains("interrupted by SIGINT: finishing what is running, starting nothing new (again: kill what is running and stop)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("interrupted by a second SIGINT: killing the commands running on their hosts (once more: exit at once)"),
        "{stdout}"
    );
    assert!(
        eventually(3, || sleeping("30.7") == 0),
        "the command in flight was not killed on the host"
    );
    assert!(!h.srv().join("second").exists(), "nothing new started");
    let r = p.nexus(&["history", "1", "--format", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(v["run"]["status"], "interrupted", "{v}");
    let actions = v["actions"].as_array().unwrap();
    let status: Vec<&str> = actions
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["failed", "not-run"], "{v}");
    let err = actions[0]["error"].as_str().unwrap();
    assert!(
        err.contains("second SIGINT") && err.contains("killed"),
        "{err}"
    );
}

/// A write killed outright leaves its temp file beside the target; the next write into that
/// directory removes such leftovers of writers that are gone, and keeps the temp file of a
/// writer that still runs (another apply writing there now).
#[test]
fn stale_temp_files_are_swept_and_live_ones_kept() {
    let h = SshHost::builder("sw").private_srv().start();
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let srv = h.srv();
    let dead = srv.join(".nexus-99999999-AbCdEfGh");
    let alive = srv.join(format!(".nexus-{}-AbCdEfGh", live.id()));
    let old = srv.join(".nexus-OldStal");
    let recent = srv.join(".nexus-NewFrsh");
    for f in [&dead, &alive, &old, &recent] {
        std::fs::write(f, "partial").unwrap();
    }
    harness::run(
        std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&old),
    );
    let body = "task \"t\" on=\"sw\" {\n    file \"/srv/app.conf\" content=\"x\"\n}\n";
    let p = Project::over(&[&h], " connect-timeout=\"10s\"", body);
    let r = p.nexus(&["run"]);
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(srv.join("app.conf")).unwrap(), "x");
    assert!(!dead.exists(), "the temp file of a dead writer was left");
    assert!(
        !old.exists(),
        "an hour-old temp file without a pid was left"
    );
    assert!(alive.exists(), "the temp file of a live writer was removed");
    assert!(
        recent.exists(),
        "a recent temp file without a pid was removed"
    );
    let mut left: Vec<String> = std::fs::read_dir(&srv)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nexus-"))
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "the write left its own temp file: {left:?}");
}
