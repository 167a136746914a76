//! Secrets end to end: known values go through plan, apply, run, history and failing commands
//! against a real sshd host; afterwards no artifact (plan file, state database, stdout, stderr)
//! contains them, while the host did receive them. A changed secret changes the plan and makes an
//! older plan stale.

mod harness;

use harness::project::{Project, Run};
use harness::{SUDO_PW, SUDO_PW_USER, SshHost, TEST_USER};

const KEY: &str = "6a1f3c0e9b7d2a4c8e5f1b3d7a9c2e4f6b8d0a1c3e5f7b9d1a3c5e7f9b1d3a5c";
const API_KEY: &str = "sk-live-51HxQwErTy-uniq-8842";
const API_KEY_2: &str = "sk-live-rotated-value-7731";

/// A project whose runs get the vault key [`KEY`].
fn project() -> Project {
    Project::new().env("NEXUS_VAULT_KEY", KEY)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs nexus in one project directory and keeps every output for the leak search.
struct Recorder<'a> {
    project: &'a Project,
    outputs: Vec<Run>,
}

impl Recorder<'_> {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Run {
        let o = self
            .project
            .nexus_with_stdin(args, stdin.unwrap_or_default());
        self.outputs.push(o.clone());
        o
    }

    /// No file in the project but the vault holds any of `in_files`, and no output any of
    /// `in_output`.
    fn assert_nothing_holds(&self, in_files: &[&str], in_output: &[&str]) {
        harness::assert_no_file_holds(self.project.dir(), in_files);
        for o in &self.outputs {
            for s in [&o.stdout, &o.stderr] {
                for needle in in_output {
                    assert!(!s.contains(needle), "output leaks a secret: {s}");
                }
            }
        }
    }

    /// `secret init`, then `secret set` for each pair.
    fn vault(&mut self, secrets: &[(&str, &str)]) {
        assert!(self.run(&["secret", "init"], None).success());
        for (name, value) in secrets {
            let o = self.run(&["secret", "set", name], Some(value));
            assert!(o.success(), "{}", o.stderr);
        }
    }
}

#[test]
fn secret_values_never_leave_the_vault_except_to_the_host() {
    let h = SshHost::builder("sec1").private_srv().start();
    let p = project();
    harness::write_known_hosts(&p.path("known_hosts"), &[&h]);
    p.write("ssh_config", "");
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
    p.config(&config);
    let d = p.dir();
    let mut rec = Recorder {
        project: &p,
        outputs: Vec::new(),
    };
    rec.vault(&[("API_KEY", API_KEY), ("SUDO_PW", SUDO_PW)]);
    let mut run = |args: &[&str], stdin: Option<&str>| rec.run(args, stdin);

    let plan = run(&["plan", "-o", "plan.lock"], None);
    assert!(plan.success(), "{}", plan.stderr);
    let plan_json = run(&["show", "plan.lock", "--format", "json"], None);
    assert!(plan_json.success());
    // The failing command fails the apply; its output is reported, redacted.
    let apply = run(&["apply", "plan.lock", "--format", "json"], None);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    let report = &apply.stdout;
    assert!(report.contains("[redacted:API_KEY]"), "{report}");
    let apply_text = run(&["run", "-v"], None);
    assert_eq!(apply_text.code, 1);
    for args in [
        &["history", "--format", "json"][..],
        &["history", "1", "--format", "json"],
        &["history", "1", "-v"],
        &["state"],
    ] {
        let o = run(args, None);
        assert!(o.success(), "{args:?}: {}", o.stderr);
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
    assert!(p.nexus(&["plan", "-o", "old.lock"]).success());
    assert!(
        p.nexus_with_stdin(&["secret", "set", "API_KEY"], API_KEY_2)
            .success()
    );
    assert!(p.nexus(&["plan", "-o", "new.lock"]).success());
    let header = |b: &[u8]| text(b).lines().next().unwrap().to_string();
    assert_ne!(
        header(&std::fs::read(d.join("new.lock")).unwrap()),
        header(&before)
    );
    let stale = p.nexus(&["apply", "old.lock"]);
    assert_eq!(stale.code, 6, "{}", stale.stderr);
    assert!(
        stale
            .stderr
            .contains("secret \"API_KEY\" changed since the plan was made"),
        "{}",
        stale.stderr
    );
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
    let p = project();
    let d = p.dir();
    harness::write_known_hosts(&p.path("known_hosts"), &[&h]);
    p.write("ssh_config", "");
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
    p.config(&config);
    let mut rec = Recorder {
        project: &p,
        outputs: Vec::new(),
    };
    rec.vault(&[("API_KEY", API_KEY), ("DB_PW", DB_PW)]);
    let mut run = |args: &[&str], stdin: Option<&str>| rec.run(args, stdin);

    let plan = run(&["plan", "-o", "plan.lock"], None);
    assert!(plan.success(), "{}", plan.stderr);
    let shown = &plan.stdout;
    assert!(shown.contains("(holds secrets)"), "{shown}");
    for format in ["json", "markdown", "text"] {
        assert!(run(&["show", "plan.lock", "--format", format], None).success());
    }
    let apply = run(&["apply", "plan.lock"], None);
    assert!(apply.success(), "{}{}", apply.stdout, apply.stderr);
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
    assert_eq!(again.code, 0, "{}", again.stdout);

    // Someone edits the file on the host: an update, without a diff.
    std::fs::write(h.srv().join("app/db.conf"), "user=app\npassword=guess\n").unwrap();
    let drift = run(&["plan", "--detailed-exitcode"], None);
    assert_eq!(drift.code, 2, "{}", drift.stdout);
    let drift_text = &drift.stdout;
    assert!(
        drift_text.contains("it holds secrets: no diff"),
        "{drift_text}"
    );
    assert!(
        !drift_text.contains("guess"),
        "no diff of secret content: {drift_text}"
    );
    assert!(run(&["run"], None).success());
    assert_eq!(
        std::fs::read_to_string(h.srv().join("app/db.conf")).unwrap(),
        db_conf
    );

    // A saved plan whose host file changes before apply is stale, by its sealed hash.
    assert!(run(&["plan", "-o", "before-edit.lock"], None).success());
    std::fs::write(h.srv().join("app/token"), "tampered").unwrap();
    let stale = run(&["apply", "before-edit.lock"], None);
    assert_eq!(stale.code, 6, "{}", stale.stderr);
    assert!(run(&["run"], None).success());

    // Rotating a secret plans an update of the file that holds it.
    assert!(run(&["secret", "set", "DB_PW"], Some("rotated-db-pw-991")).success());
    let rotated = run(&["plan", "--detailed-exitcode"], None);
    assert_eq!(rotated.code, 2, "{}", rotated.stdout);
    assert!(rotated.stdout.contains("/srv/app/db.conf"));
    assert!(!rotated.stdout.contains("/srv/app/token"));
    assert!(run(&["run"], None).success());
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

const S2: &str = "second-secret-value-X93kq";
const S1_OLD: &str = "first-secret-before-rotation-Q7";

/// A file goes through every transition a secret content can take (secret to plain, plain to
/// secret, one secret to another, a rotated secret, secret to absent), and a host file holds a
/// vault value that no configuration mentions. After plan, show (all formats), apply, run,
/// history and state (text and JSON), no artifact holds any value, in clear, base64 or hex: not
/// the project's files (plan files, state.db and its WAL), not any output, not a webhook body,
/// not a process command line.
#[test]
fn no_transition_of_a_secret_content_leaks_it() {
    let h = SshHost::builder("sec3").private_srv().start();
    let hook = harness::webhook::Webhook::start(200);
    let p = project().env("HOOK_URL", &hook.url);
    harness::write_known_hosts(&p.path("known_hosts"), &[&h]);
    p.write("ssh_config", "");
    let sampler = harness::CmdlineSampler::start();
    std::fs::create_dir_all(h.srv().join("app")).unwrap();
    // A host file that holds a vault value for a reason nexus does not know about.
    std::fs::write(h.srv().join("app/stray"), format!("token = {S2}\n")).unwrap();
    for (f, mode) in [("app", 0o777), ("app/stray", 0o666)] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(h.srv().join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let config = |conf: &str| {
        format!(
            r#"defaults known-hosts="known_hosts" ssh-config="ssh_config"
notify "events" url=(env)"HOOK_URL" template="generic" on="always" retries=0
notify "drift" url=(env)"HOOK_URL" template="generic" on="drift" retries=0
host "sec3" "{TEST_USER}@{ip}:{port}" identity="{key}"
task "files" on="sec3" {{
    file "/srv/app/conf" {conf}
    file "/srv/app/stray" content="public stray\n"
}}
"#,
            ip = h.ip,
            port = h.port,
            key = h.user_key.private.display()
        )
    };
    let mut rec = Recorder {
        project: &p,
        outputs: Vec::new(),
    };
    p.config(&config(r#"content="x""#));
    rec.vault(&[("S1", S1_OLD), ("S2", S2)]);
    let mut n = 0;
    let mut step = |rec: &mut Recorder<'_>, conf: &str, expect: Option<&str>| {
        n += 1;
        p.config(&config(conf));
        let lock = format!("p{n}.lock");
        let plan = rec.run(&["plan", "-o", &lock], None);
        assert!(plan.success(), "{conf}: {}{}", plan.stdout, plan.stderr);
        for format in ["json", "markdown", "text"] {
            let o = rec.run(&["plan", "--format", format], None);
            assert!(o.success(), "{}", o.stderr);
            assert!(
                rec.run(&["show", &lock, "--format", format], None)
                    .success()
            );
        }
        // Drift notifications carry the plan to the webhook.
        rec.run(&["plan", "--detailed-exitcode"], None);
        let apply = rec.run(&["apply", &lock, "--format", "json"], None);
        assert!(
            apply.success(),
            "{conf}: {} {}{}",
            apply.code,
            apply.stdout,
            apply.stderr
        );
        let again = rec.run(&["run", "-v"], None);
        assert!(again.success(), "{}{}", again.stdout, again.stderr);
        let on_host = std::fs::read_to_string(h.srv().join("app/conf")).ok();
        assert_eq!(on_host.as_deref(), expect, "{conf}");
    };
    step(&mut rec, r#"content=(secret)"S1""#, Some(S1_OLD));
    step(&mut rec, r#"content="public\n""#, Some("public\n"));
    step(&mut rec, r#"content=(secret)"S2""#, Some(S2));
    step(&mut rec, r#"content=(secret)"S1""#, Some(S1_OLD));
    // Rotated: the host still holds the old value, which the vault no longer has.
    assert!(rec.run(&["secret", "set", "S1"], Some(API_KEY)).success());
    step(
        &mut rec,
        r#"content="public again\n""#,
        Some("public again\n"),
    );
    step(&mut rec, r#"content=(secret)"S1""#, Some(API_KEY));
    step(&mut rec, r#"state="absent" backup=#true"#, None);
    for args in [
        &["history", "--format", "json"][..],
        &["history", "2", "--format", "json"],
        &["history", "2", "-v"],
        &["state"],
        &["state", "--format", "json"],
    ] {
        let o = rec.run(args, None);
        assert!(o.success(), "{args:?}: {}", o.stderr);
    }

    let needles = harness::leak_needles(&[S1_OLD, S2, API_KEY]);
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    rec.assert_nothing_holds(&needles, &needles);
    let bodies = serde_json::to_string(&hook.bodies()).unwrap();
    assert!(!hook.bodies().is_empty(), "the webhook was called");
    for needle in &needles {
        assert!(
            !bodies.contains(needle),
            "a webhook body holds {needle:?}: {bodies}"
        );
        for line in sampler.lines() {
            assert!(
                !line.contains(needle),
                "a command line holds {needle:?}: {line}"
            );
        }
    }
    // Plain hashes of contents that held a value are as good as the value for a short secret.
    for content in [S1_OLD, S2, API_KEY, &format!("token = {S2}\n")] {
        let sha = sha256_hex(content.as_bytes());
        rec.assert_nothing_holds(&[&sha, &sha[..12]], &[&sha[..12]]);
    }
}
