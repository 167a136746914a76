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

/// An account only NSS knows, as an LDAP or SSSD user is: a systemd-userdb drop-in in /run/userdb
/// (read by nss-systemd, `passwd: files systemd` in Debian's nsswitch.conf), removed on drop.
struct NssOnlyUser {
    uid: u32,
    name: String,
    home: tempfile::TempDir,
    files: Vec<std::path::PathBuf>,
}

impl NssOnlyUser {
    fn create(name: &str) -> NssOnlyUser {
        // A uid nobody has, so /etc/passwd cannot be what answers.
        let uid = (4200..4300)
            .find(|u| {
                !std::process::Command::new("getent")
                    .args(["passwd", &u.to_string()])
                    .status()
                    .expect("getent")
                    .success()
            })
            .expect("a free uid");
        let home = tempfile::Builder::new()
            .prefix("nexus-nss-home-")
            .tempdir()
            .expect("home");
        let dir = Path::new("/run/userdb");
        std::fs::create_dir_all(dir).expect("/run/userdb");
        let record = dir.join(format!("{name}.user"));
        std::fs::write(
            &record,
            format!(
                r#"{{"userName":"{name}","uid":{uid},"gid":{uid},"homeDirectory":"{}","shell":"/bin/sh","disposition":"regular"}}"#,
                home.path().display()
            ),
        )
        .expect("userdb record");
        let by_uid = dir.join(format!("{uid}.user"));
        let _ = std::fs::remove_file(&by_uid);
        std::os::unix::fs::symlink(format!("{name}.user"), &by_uid).expect("userdb uid link");
        let user = NssOnlyUser {
            uid,
            name: name.to_string(),
            home,
            files: vec![record, by_uid],
        };
        // A copy of the binary the user can execute: the checkout may sit under a directory
        // only root can enter (a clone in /root, or mktemp -d), which is not what this tests.
        let bin = std::fs::read(env!("CARGO_BIN_EXE_nexus")).expect("read the nexus binary");
        user.write("bin/nexus", &bin, 0o755);
        let out = std::process::Command::new("getent")
            .args(["passwd", &uid.to_string()])
            .output()
            .expect("getent");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("{name}:")),
            "nss-systemd does not resolve the userdb drop-in (libnss-systemd, `passwd: files systemd`)"
        );
        assert!(
            !std::fs::read_to_string("/etc/passwd")
                .unwrap()
                .contains(&format!(":{uid}:")),
            "uid {uid} must not be in /etc/passwd"
        );
        user
    }

    /// Writes a file in the home directory, owned by the user.
    fn write(&self, rel: &str, content: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.home.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Runs nexus as this user with an environment that has neither HOME nor USER.
    fn nexus(&self, args: &[&str]) -> std::process::Output {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.uid))
            .arg(self.home.path())
            .status()
            .unwrap();
        assert!(status.success());
        std::process::Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--clear-groups")
            .arg("env")
            .arg("-i")
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg(self.home.path().join("bin/nexus"))
            .args(args)
            .current_dir(self.home.path())
            .output()
            .expect("run nexus as the NSS user")
    }
}

impl Drop for NssOnlyUser {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn a_user_known_only_through_nss_gets_its_home_keys_and_login_name() {
    let h = SshHost::start("nss");
    let user = NssOnlyUser::create("nexus-nss");
    // Only the defaults: ~/.ssh/id_ed25519 and ~/.ssh/known_hosts, which nexus finds only by
    // asking the user database for the home directory.
    user.write(
        ".ssh/id_ed25519",
        &std::fs::read(&h.user_key.private).unwrap(),
        0o600,
    );
    user.write(
        ".ssh/known_hosts",
        format!("{}\n", h.known_hosts_line()).as_bytes(),
        0o644,
    );
    user.write(
        "nexus.kdl",
        format!(
            "host \"nss\" \"{TEST_USER}@{}:{}\"\nhost \"anon\" \"{}:{}\" connect-timeout=\"5s\"\n",
            h.ip, h.port, h.ip, h.port
        )
        .as_bytes(),
        0o644,
    );
    let out = user.nexus(&["facts", "nss", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hosts"][0]["ok"], true, "{v}");
    assert_eq!(v["hosts"][0]["facts"]["user"], TEST_USER);

    // Without a user in the config, the login name is the NSS user's, as with ssh.
    let out = user.nexus(&["facts", "anon"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains(&format!("{}@", user.name)),
        "the error should name the NSS login: {stderr}"
    );
}

/// nexus holds a connection per host for the whole run: with a soft open-file limit below what
/// it needs it raises the soft limit to the hard one (its commands inherit it), and with a hard
/// limit below that it refuses before running anything, saying what to do.
#[test]
fn the_open_file_limit_is_raised_when_needed_and_a_too_low_one_is_refused() {
    let p = harness::project::Project::new();
    let out = p.path("limits");
    p.config(&format!(
        "task \"t\" {{\n    command \"grep 'Max open files' /proc/self/limits > {}\"\n}}\n",
        out.display()
    ));
    let nexus = |nofile: &str| {
        std::process::Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg(env!("CARGO_BIN_EXE_nexus"))
            .args(["-c", p.path("nexus.kdl").to_str().unwrap(), "run"])
            .current_dir(p.dir())
            .output()
            .expect("run nexus under prlimit")
    };
    let r = nexus("20:4096");
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let limits = std::fs::read_to_string(&out).unwrap();
    assert!(
        limits
            .split_whitespace()
            .skip(3)
            .take(2)
            .eq(["4096", "4096"]),
        "{limits}"
    );

    std::fs::remove_file(&out).unwrap();
    let r = nexus("20:20");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("needs about 32 open files") && stderr.contains("ulimit -Hn"),
        "{stderr}"
    );
    assert!(!out.exists(), "a command ran");
}
