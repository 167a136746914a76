//! `nexus facts` and `nexus preflight` as a user runs them: the real binary against real sshd
//! hosts from tests/harness, with the configuration's own known_hosts and an empty ssh config.

mod harness;

use std::path::Path;

use harness::project::Project;
use harness::{SUDO_PW, SUDO_PW_USER, SshHost, TEST_USER};

/// A config with `hosts` (as `user`), `extra` nodes, and a known_hosts file trusting `trusted`;
/// nexus runs from this test's working directory with the config's absolute path, so paths in it
/// must resolve against the config file.
fn setup(hosts: &[(&SshHost, &str)], trusted: &[&SshHost], extra: &str) -> Project {
    let p = Project::over_logins(hosts, trusted, " connect-timeout=\"5s\"", extra);
    let config = p.path("nexus.kdl");
    p.config_arg(config)
        .run_in(std::env::current_dir().expect("working directory"))
}

/// Adds properties to the `defaults` node.
fn edit_defaults(p: &Project, props: &str) {
    let cfg = std::fs::read_to_string(p.path("nexus.kdl")).unwrap();
    p.config(&cfg.replacen("defaults ", &format!("defaults {props} "), 1));
}

fn known_hosts_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn facts_from_two_hosts_in_one_round_trip_each() {
    let a = SshHost::start("fa");
    let b = SshHost::start("fb");
    let s = setup(&[(&a, TEST_USER), (&b, TEST_USER)], &[&a, &b], "");
    let out = s.nexus(&["facts", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for (h, name) in hosts.iter().zip(["fa", "fb"]) {
        assert_eq!(h["host"], name);
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["round_trips"], 1);
        assert_eq!(h["facts"]["user"], TEST_USER);
        assert_eq!(h["facts"]["os"], "linux");
    }
    let out = s.nexus(&["facts", "fb"]);
    assert_eq!(out.code, 0);
    let stdout = &out.stdout;
    assert!(stdout.starts_with("fb\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("user          {TEST_USER}")),
        "{stdout}"
    );
}

#[test]
fn unknown_host_key_is_refused_until_accepted() {
    let a = SshHost::start("uk");
    let s = setup(&[(&a, TEST_USER)], &[], "");
    let out = s.nexus(&["facts"]);
    assert_eq!(out.code, 4);
    let err = &out.stderr;
    assert!(err.contains("uk"), "{err}");
    assert!(
        err.contains(&a.host_key.fingerprint()),
        "the fingerprint is shown: {err}"
    );
    assert!(err.contains("--accept-new-host-keys"), "{err}");
    assert_eq!(
        known_hosts_lines(&s.path("known_hosts")),
        0,
        "nothing recorded without consent"
    );

    let out = s.nexus(&["facts", "--accept-new-host-keys"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        known_hosts_lines(&s.path("known_hosts")),
        1,
        "the accepted key is recorded"
    );
    // Now known: plain strict mode works.
    assert_eq!(s.nexus(&["facts"]).code, 0);
}

#[test]
fn preflight_reports_each_check_and_carries_on_past_a_dead_host() {
    let a = SshHost::start("pa");
    let mut b = SshHost::start("pb");
    let s = setup(
        &[(&a, TEST_USER), (&b, TEST_USER)],
        &[&a, &b],
        "group \"web\" \"pa\" \"pb\"\ntask \"setup\" on=\"web\" { package \"curl\" }\n",
    );
    let out = s.nexus(&["preflight"]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 0, "{stdout}{}", out.stderr);
    for line in [
        "[ok]   config: configuration is valid",
        "[ok]   pa: reachable",
        "[ok]   pa: host-key",
        "[ok]   pa: auth",
        "[ok]   pa: facts",
        "[ok]   pa: sudo: can run commands as root",
        "[ok]   pb: sudo",
        "Preflight passed: 2 host(s) ready",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }

    b.kill();
    let out = s.nexus(&["preflight", "--format", "json"]);
    assert_eq!(out.code, 4);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let checks = v["checks"].as_array().unwrap();
    let find = |host: &str, check: &str| {
        checks
            .iter()
            .find(|c| c["host"] == host && c["check"] == check)
            .unwrap_or_else(|| panic!("no {host}/{check} in {v}"))
    };
    assert_eq!(find("pa", "facts")["status"], "ok");
    assert_eq!(find("pa", "sudo")["status"], "ok");
    let reach = find("pb", "reachable");
    assert_eq!(reach["status"], "fail");
    assert!(reach["detail"].as_str().unwrap().contains("pb"), "{reach}");
    assert_eq!(find("pb", "auth")["status"], "skip");
}

#[test]
fn preflight_checks_sudo_passwords() {
    let a = SshHost::start("sp");
    let task = "task \"t\" on=\"sp\" { command \"id\" sudo=#true }\n";
    // nexus-test-pw may become nexus-test, and only with its password.
    let s = setup(&[(&a, SUDO_PW_USER)], &[&a], task);
    edit_defaults(&s, &format!("become-user=\"{TEST_USER}\""));
    let out = s.nexus(&["preflight"]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 4, "{stdout}");
    assert!(stdout.contains("[fail] sp: sudo:"), "{stdout}");
    assert!(stdout.contains("password"), "{stdout}");

    // The password comes from the environment, never from argv.
    edit_defaults(&s, "sudo-password=(env)\"NEXUS_TEST_SUDO\"");
    let out = s.nexus_with(&["preflight"], "", &[("NEXUS_TEST_SUDO", SUDO_PW)]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 0, "{stdout}{}", out.stderr);
    assert!(
        stdout.contains(&format!("[ok]   sp: sudo: can run commands as {TEST_USER}")),
        "{stdout}"
    );
}

#[test]
fn unknown_target_is_a_usage_error() {
    let s = setup(&[], &[], "task \"t\" { command \"true\" }\n");
    let out = s.nexus(&["facts", "nosuch"]);
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("unknown host or group `nosuch`"));
    // With no hosts configured, facts reads the local machine.
    let out = s.nexus(&["facts", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["hosts"][0]["host"], "local");
    assert_eq!(v["hosts"][0]["round_trips"], 1);
}

/// `facts` and `preflight` reach a tailscale group's hosts through nexus.lock (never running
/// discovery themselves); a group the lock does not know is a clear error naming `nexus lock`.
#[test]
fn facts_and_preflight_use_the_hosts_nexus_lock_pins() {
    let h = SshHost::start("tsl");
    let s = setup(
        &[],
        &[&h],
        "tailscale \"web\" tag=\"web\" binary=\"./no-tailscale-here\"\n\
         tailscale \"db\" tag=\"db\" binary=\"./no-tailscale-here\"\n\
         task \"uptime\" on=\"web\" {\n    command \"uptime\"\n}\n\
         task \"dump\" on=\"db\" {\n    command \"true\"\n}\n",
    );
    edit_defaults(
        &s,
        &format!(
            "port={} user=\"{TEST_USER}\" identity=\"{}\"",
            h.port,
            h.user_key.private.display()
        ),
    );
    // Before any lock: nothing to connect to, and the error says how to get one.
    let out = s.nexus(&["facts", "web"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("tailscale group `web` not in nexus.lock: run `nexus lock`"),
        "{}",
        out.stderr
    );
    std::fs::write(
        s.path("nexus.lock"),
        format!(
            "{{\"version\": 1, \"discovery\": {{\"web\": [{{\"name\": \"web-1\", \"address\": \"{}\"}}]}}, \"urls\": {{}}}}\n",
            h.ip
        ),
    )
    .unwrap();
    let out = s.nexus(&["facts", "web", "--format", "json"]);
    assert!(out.success(), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["hosts"][0]["host"], "web-1");
    assert_eq!(v["hosts"][0]["ok"], true, "{v}");
    assert_eq!(v["hosts"][0]["facts"]["user"], TEST_USER);
    let out = s.nexus(&["preflight", "uptime"]);
    let stdout = &out.stdout;
    assert!(out.success(), "{stdout}{}", out.stderr);
    assert!(stdout.contains("[ok]   web-1"), "{stdout}");
    // `db` is still unknown to the lock: preflight fails on it and names the fix.
    let out = s.nexus(&["preflight"]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 4, "{stdout}{}", out.stderr);
    assert!(
        stdout.contains("db") && stdout.contains("run `nexus lock`"),
        "{stdout}"
    );
    // The lock was only read.
    assert!(
        std::fs::read_to_string(s.path("nexus.lock"))
            .unwrap()
            .contains("web-1")
    );
}
