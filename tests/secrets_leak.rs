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
    let mut outputs: Vec<Output> = Vec::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let o = nexus(d, args, stdin);
        outputs.push(o.clone());
        o
    };
    assert!(run(&["secret", "init"], None).status.success());
    assert!(
        run(&["secret", "set", "API_KEY"], Some(API_KEY))
            .status
            .success()
    );
    assert!(
        run(&["secret", "set", "SUDO_PW"], Some(SUDO_PW))
            .status
            .success()
    );

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
    let mut files = Vec::new();
    all_files_under(d, &mut files);
    for f in files.iter().filter(|f| !f.ends_with("secrets.vault")) {
        let bytes = std::fs::read(f).unwrap();
        for secret in [API_KEY, SUDO_PW] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} contains a secret value",
                f.display()
            );
        }
    }
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            let s = text(stream);
            assert!(
                !s.contains(API_KEY) && !s.contains(SUDO_PW),
                "output leaks a secret: {s}"
            );
        }
    }

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
