//! Secrets end to end: known values go through plan, apply, run, history and failing commands
//! against a real sshd host; afterwards no artifact (plan file, state database, stdout, stderr)
//! contains them, while the host did receive them. A changed secret changes the plan and makes an
//! older plan stale.

mod harness;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use harness::{SUDO_PW, SUDO_PW_USER, SshHost, TEST_USER};

const KEY: &str = "6a1f3c0e9b7d2a4c8e5f1b3d7a9c2e4f6b8d0a1c3e5f7b9d1a3c5e7f9b1d3a5c";
const API_KEY: &str = "sk-live-51HxQwErTy-uniq-8842";
const API_KEY_2: &str = "sk-live-rotated-value-7731";

fn nexus(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
    c.current_dir(dir)
        .args(["-c", "nexus.kdl"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env("NEXUS_VAULT_KEY", KEY)
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs nexus in one project directory and keeps every output for the leak search.
struct Recorder<'a> {
    dir: &'a Path,
    outputs: Vec<Output>,
}

impl Recorder<'_> {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Output {
        let o = nexus(self.dir, args, stdin);
        self.outputs.push(o.clone());
        o
    }

    /// No file in the project but the vault holds any of `in_files`, and no output any of
    /// `in_output`.
    fn assert_nothing_holds(&self, in_files: &[&str], in_output: &[&str]) {
        let mut files = Vec::new();
        all_files_under(self.dir, &mut files);
        for f in files.iter().filter(|f| !f.ends_with("secrets.vault")) {
            let bytes = std::fs::read(f).unwrap();
            for needle in in_files {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} contains {needle:?}",
                    f.display()
                );
            }
        }
        for o in &self.outputs {
            for stream in [&o.stdout, &o.stderr] {
                let s = text(stream);
                for needle in in_output {
                    assert!(!s.contains(needle), "output leaks a secret: {s}");
                }
            }
        }
    }

    /// `secret init`, then `secret set` for each pair.
    fn vault(&mut self, secrets: &[(&str, &str)]) {
        assert!(self.run(&["secret", "init"], None).status.success());
        for (name, value) in secrets {
            let o = self.run(&["secret", "set", name], Some(value));
            assert!(o.status.success(), "{}", text(&o.stderr));
        }
    }
}

fn all_files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn secret_values_never_leave_the_vault_except_to_the_host() {
    let h = SshHost::builder("sec1").private_srv().start();
    let dir = tempfile::tempdir().unwrap();
    harness::write_known_hosts(&dir.path().join("known_hosts"), &[&h]);
    std::fs::write(dir.path().join("ssh_config"), "").unwrap();
    let config = format!(
        r#"defaults known-hosts="known_hosts" ssh-config="ssh_config"
host "sec1" "{SUDO_PW_USER}@{ip}:{port}" identity="{key}" become-user="{TEST_USER}" sudo-password=(secret)"SUDO_PW"
task "deploy" on="sec1" {{
    command "echo token=$API_KEY > /tmp/nexus-leak-$(id -u).out; echo printed:$API_KEY" sudo=#true {{
        env API_KEY=(secret)"API_KEY"
    }}
    command "echo failing with $API_KEY >&2; exit 3" {{
        env API_KEY=(secret)"API_KEY"
    }}
}}
"#,
        ip = h.ip,
        port = h.port,
        key = h.user_key.private.display()
    );
    std::fs::write(dir.path().join("nexus.kdl"), config).unwrap();
    let d = dir.path();
    let mut rec = Recorder {
        dir: d,
        outputs: Vec::new(),
    };
    rec.vault(&[("API_KEY", API_KEY), ("SUDO_PW", SUDO_PW)]);
    let mut run = |args: &[&str], stdin: Option<&str>| rec.run(args, stdin);

    let plan = run(&["plan", "-o", "plan.lock"], None);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let plan_json = run(&["show", "plan.lock", "--format", "json"], None);
    assert!(plan_json.status.success());
    // The failing command fails the apply; its output is reported, redacted.
    let apply = run(&["apply", "plan.lock", "--format", "json"], None);
    assert_eq!(
        apply.status.code(),
        Some(1),
        "{}{}",
        text(&apply.stdout),
        text(&apply.stderr)
    );
    let report = text(&apply.stdout);
    assert!(report.contains("[redacted:API_KEY]"), "{report}");
    let apply_text = run(&["run", "-v"], None);
    assert_eq!(apply_text.status.code(), Some(1));
    for args in [
        &["history", "--format", "json"][..],
        &["history", "1", "--format", "json"],
        &["history", "1", "-v"],
        &["state"],
    ] {
        let o = run(args, None);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    }

    // The host received the value, through sudo with the vault's password.
    let delivered = std::fs::read_to_string(format!(
        "/tmp/nexus-leak-{}.out",
        harness::uid_of(TEST_USER).unwrap()
    ))
    .unwrap();
    assert_eq!(delivered.trim(), format!("token={API_KEY}"));

    // No artifact holds either secret.
    rec.assert_nothing_holds(&[API_KEY, SUDO_PW], &[API_KEY, SUDO_PW]);

    // A rotated secret changes the plan (its fingerprint), and makes an older plan stale.
    let before = std::fs::read(d.join("plan.lock")).unwrap();
    assert!(nexus(d, &["plan", "-o", "old.lock"], None).status.success());
    assert!(
        nexus(d, &["secret", "set", "API_KEY"], Some(API_KEY_2))
            .status
            .success()
    );
    assert!(nexus(d, &["plan", "-o", "new.lock"], None).status.success());
    let header = |b: &[u8]| text(b).lines().next().unwrap().to_string();
    assert_ne!(
        header(&std::fs::read(d.join("new.lock")).unwrap()),
        header(&before)
    );
    let stale = nexus(d, &["apply", "old.lock"], None);
    assert_eq!(stale.status.code(), Some(6), "{}", text(&stale.stderr));
    assert!(text(&stale.stderr).contains("API_KEY"));
    let _ = std::fs::remove_file(format!(
        "/tmp/nexus-leak-{}.out",
        harness::uid_of(TEST_USER).unwrap()
    ));
}

const DB_PW: &str = "correct horse 42 staple";

/// Secrets in file contents: an inline `(secret)` content and a template with a secret var. The
/// host gets the real contents; the plan holds placeholders and sealed hashes only; a re-plan is a
/// no-op; editing the file on the host or rotating a secret plans an update; no artifact or
/// output holds a value.
#[test]
fn secret_file_contents_reach_the_host_and_nothing_else() {
    let h = SshHost::builder("sec2").private_srv().start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    harness::write_known_hosts(&d.join("known_hosts"), &[&h]);
    std::fs::write(d.join("ssh_config"), "").unwrap();
    std::fs::write(
        d.join("db.conf.j2"),
        "user=app\npassword={{ vars.pw }}\napi={{ vars.api }}\nhost={{ host.name }}\n",
    )
    .unwrap();
    let config = format!(
        r#"defaults known-hosts="known_hosts" ssh-config="ssh_config"
vars api=(secret)"API_KEY"
host "sec2" "{TEST_USER}@{ip}:{port}" identity="{key}"
task "files" on="sec2" {{
    directory "/srv/app"
    file "/srv/app/token" content=(secret)"API_KEY" mode="0600"
    file "/srv/app/db.conf" template="db.conf.j2" {{
        vars pw=(secret)"DB_PW"
    }}
}}
"#,
        ip = h.ip,
        port = h.port,
        key = h.user_key.private.display()
    );
    std::fs::write(d.join("nexus.kdl"), config).unwrap();
    let mut rec = Recorder {
        dir: d,
        outputs: Vec::new(),
    };
    rec.vault(&[("API_KEY", API_KEY), ("DB_PW", DB_PW)]);
    let mut run = |args: &[&str], stdin: Option<&str>| rec.run(args, stdin);

    let plan = run(&["plan", "-o", "plan.lock"], None);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let shown = text(&plan.stdout);
    assert!(shown.contains("(holds secrets)"), "{shown}");
    for format in ["json", "markdown", "text"] {
        assert!(
            run(&["show", "plan.lock", "--format", format], None)
                .status
                .success()
        );
    }
    let apply = run(&["apply", "plan.lock"], None);
    assert!(
        apply.status.success(),
        "{}{}",
        text(&apply.stdout),
        text(&apply.stderr)
    );
    let db_conf = format!("user=app\npassword={DB_PW}\napi={API_KEY}\nhost=sec2\n");
    assert_eq!(
        std::fs::read_to_string(h.srv().join("app/token")).unwrap(),
        API_KEY
    );
    assert_eq!(
        std::fs::read_to_string(h.srv().join("app/db.conf")).unwrap(),
        db_conf
    );

    // Converged: a new plan is a no-op (compared by sealed hashes), detailed exit code 0.
    let again = run(&["plan", "--detailed-exitcode"], None);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));

    // Someone edits the file on the host: an update, without a diff.
    std::fs::write(h.srv().join("app/db.conf"), "user=app\npassword=guess\n").unwrap();
    let drift = run(&["plan", "--detailed-exitcode"], None);
    assert_eq!(drift.status.code(), Some(2), "{}", text(&drift.stdout));
    let drift_text = text(&drift.stdout);
    assert!(
        drift_text.contains("it holds secrets: no diff"),
        "{drift_text}"
    );
    assert!(
        !drift_text.contains("guess"),
        "no diff of secret content: {drift_text}"
    );
    assert!(run(&["run"], None).status.success());
    assert_eq!(
        std::fs::read_to_string(h.srv().join("app/db.conf")).unwrap(),
        db_conf
    );

    // A saved plan whose host file changes before apply is stale, by its sealed hash.
    assert!(
        run(&["plan", "-o", "before-edit.lock"], None)
            .status
            .success()
    );
    std::fs::write(h.srv().join("app/token"), "tampered").unwrap();
    let stale = run(&["apply", "before-edit.lock"], None);
    assert_eq!(stale.status.code(), Some(6), "{}", text(&stale.stderr));
    assert!(run(&["run"], None).status.success());

    // Rotating a secret plans an update of the file that holds it.
    assert!(
        run(&["secret", "set", "DB_PW"], Some("rotated-db-pw-991"))
            .status
            .success()
    );
    let rotated = run(&["plan", "--detailed-exitcode"], None);
    assert_eq!(rotated.status.code(), Some(2), "{}", text(&rotated.stdout));
    assert!(text(&rotated.stdout).contains("/srv/app/db.conf"));
    assert!(!text(&rotated.stdout).contains("/srv/app/token"));
    assert!(run(&["run"], None).status.success());
    assert!(
        std::fs::read_to_string(h.srv().join("app/db.conf"))
            .unwrap()
            .contains("password=rotated-db-pw-991\n")
    );

    // Nothing but the host and the vault holds a value, nor a plain hash of a content holding one.
    let plain_hashes = [
        sha256_hex(API_KEY.as_bytes()),
        sha256_hex(db_conf.as_bytes()),
    ];
    rec.assert_nothing_holds(
        &[
            API_KEY,
            DB_PW,
            "rotated-db-pw-991",
            &plain_hashes[0],
            &plain_hashes[1],
        ],
        &[API_KEY, DB_PW, "rotated-db-pw-991"],
    );
}

fn sha256_hex(b: &[u8]) -> String {
    nexus::resources::file::sha256_hex(b)
}
