//! Signed plans end to end: `nexus plan -o plan.lock --sign KEY` writes an SSHSIG beside the plan,
//! `nexus apply` verifies it against an OpenSSH allowed_signers file before anything connects.
//! Real parts: the nexus binary, real sshd hosts, real `ssh-keygen` (both interop directions) and a
//! real `ssh-agent`.

mod harness;

use std::path::Path;
use std::process::Command;

use harness::project::{Project, Run};
use harness::{Agent, SshHost, run};

const PRINCIPAL: &str = "deploy@ci";

const BODY: &str = r#"
task "setup" on="s1" {
    command "echo ran > /srv/ran" creates="/srv/ran"
}
"#;

/// A project over one host, with a signing key `deploy` (ed25519, no passphrase) whose public
/// half is in `allowed_signers` as [`PRINCIPAL`].
struct Env {
    host: SshHost,
    p: Project,
}

impl Env {
    /// Puts `trust allowed-signers=...` at the top of the configuration; returns it as it was.
    fn require_signed_plans(&self) -> String {
        let config = std::fs::read_to_string(self.p.path("nexus.kdl")).unwrap();
        self.p.config(&format!(
            "trust allowed-signers=\"allowed_signers\"\n{config}"
        ));
        config
    }

    fn new() -> Env {
        Env::with_body(BODY)
    }

    fn with_body(body: &str) -> Env {
        let host = SshHost::builder("s1").private_srv().start();
        let p = Project::over(&[&host], " connect-timeout=\"5s\"", body);
        let env = Env { host, p };
        let public = env.keygen("deploy", "ed25519", "");
        env.allow(&format!("{PRINCIPAL} {public}"));
        env
    }

    /// Generates a key `name` of `kind` in the project; returns `<type> <base64>` of its public key.
    fn keygen(&self, name: &str, kind: &str, passphrase: &str) -> String {
        let path = self.p.path(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-C", name, "-N", passphrase, "-f"])
            .arg(&path));
        let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn allow(&self, lines: &str) {
        self.p.write("allowed_signers", &format!("{lines}\n"));
    }

    fn plan(&self, extra: &[&str]) -> Run {
        let mut args = vec!["plan", "-o", "plan.lock"];
        args.extend_from_slice(extra);
        let r = self.p.nexus(&args);
        assert_eq!(r.code, 0, "{r:?}");
        r
    }

    fn apply(&self) -> Run {
        self.p
            .nexus(&["apply", "plan.lock", "--allowed-signers", "allowed_signers"])
    }

    /// sshd connections so far: a refused apply must not add any.
    fn connections(&self) -> usize {
        self.host.log().matches("Connection from").count()
    }

    fn ran(&self) -> bool {
        self.host.srv().join("ran").exists()
    }

    /// `apply` is refused with exit 5, a message holding `needle`, no host contacted, nothing run.
    fn assert_refused(&self, r: &Run, before: usize, needle: &str) {
        assert_eq!(r.code, 5, "{r:?}");
        assert!(r.stderr.contains(needle), "wanted {needle:?} in {r:?}");
        assert!(r.stderr.contains("Nothing was executed"), "{r:?}");
        assert_eq!(self.connections(), before, "{}", self.host.log());
        assert!(!self.ran(), "the plan ran");
        assert!(self.runs().is_empty(), "a run was recorded");
    }

    /// The runs in the state's history, newest first.
    fn runs(&self) -> Vec<serde_json::Value> {
        let r = self.p.nexus(&["history", "--format", "json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("history JSON");
        v["runs"].as_array().cloned().unwrap_or_default()
    }

    fn show(&self, format: &str) -> Run {
        let r = self.p.nexus(&[
            "show",
            "plan.lock",
            "--allowed-signers",
            "allowed_signers",
            "--format",
            format,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        r
    }

    /// `ssh-keygen -Y sign` over plan.lock with key `name` and `namespace`.
    fn keygen_sign(&self, name: &str, namespace: &str) {
        let _ = std::fs::remove_file(self.p.path("plan.lock.sig"));
        run(Command::new("ssh-keygen").current_dir(self.p.dir()).args([
            "-q",
            "-Y",
            "sign",
            "-f",
            name,
            "-n",
            namespace,
            "plan.lock",
        ]));
    }

    /// Whether `ssh-keygen -Y verify` accepts plan.lock.sig for `principal`.
    fn keygen_verifies(&self, principal: &str) -> bool {
        let plan = std::fs::File::open(self.p.path("plan.lock")).expect("plan.lock");
        Command::new("ssh-keygen")
            .current_dir(self.p.dir())
            .args(["-Y", "verify", "-f", "allowed_signers", "-I", principal])
            .args(["-n", "nexus-plan", "-s", "plan.lock.sig"])
            .stdin(plan)
            .output()
            .expect("ssh-keygen")
            .status
            .success()
    }
}

fn sig_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("plan.lock.sig")).expect("plan.lock.sig")
}

#[test]
fn a_plan_signed_by_an_allowed_key_applies_and_ssh_keygen_verifies_it() {
    let env = Env::new();
    env.plan(&["--sign", "deploy"]);
    assert!(
        sig_text(env.p.dir()).starts_with("-----BEGIN SSH SIGNATURE-----"),
        "{}",
        sig_text(env.p.dir())
    );
    assert!(env.keygen_verifies(PRINCIPAL), "ssh-keygen refused it");
    assert!(!env.keygen_verifies("someone@else"));
    assert!(
        env.show("text")
            .stdout
            .contains("Signature: signed by deploy@ci.")
    );
    assert!(
        env.show("markdown")
            .stdout
            .contains("**Signature:** signed by deploy@ci.")
    );
    let json: serde_json::Value = serde_json::from_str(&env.show("json").stdout).unwrap();
    assert_eq!(json["signature"]["status"], "verified", "{json}");
    assert_eq!(json["signature"]["signer"], PRINCIPAL, "{json}");
    let r = env.apply();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(env.ran());
    let runs = env.runs();
    assert_eq!(runs[0]["signer"], PRINCIPAL, "{runs:?}");
    let id = runs[0]["id"].to_string();
    let r = env.p.nexus(&["history", &id]);
    assert!(r.stdout.contains("signed by deploy@ci"), "{r:?}");
}

#[test]
fn show_says_why_apply_would_refuse_a_signature() {
    let env = Env::new();
    env.keygen("stranger", "ed25519", "");
    env.plan(&["--sign", "stranger"]);
    let r = env.show("text");
    assert!(
        r.stdout
            .contains("Signature: apply would refuse it: the signing key SHA256:"),
        "{r:?}"
    );
    // Without trust, show names the key and says it did not check it.
    let r = env.p.nexus(&["show", "plan.lock"]);
    assert!(r.stdout.contains("not checked"), "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&env.show("json").stdout).unwrap();
    assert_eq!(json["signature"]["status"], "refused", "{json}");
}

#[test]
fn an_unsigned_plan_over_an_old_signature_loses_it() {
    let env = Env::new();
    env.plan(&["--sign", "deploy"]);
    env.plan(&[]);
    assert!(!env.p.path("plan.lock.sig").exists());
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "is not signed");
}

#[test]
fn an_unsigned_plan_is_refused_when_trust_comes_from_the_environment() {
    let env = Env::new();
    env.plan(&[]);
    let before = env.connections();
    let path = env.p.path("allowed_signers");
    let r = env.p.nexus_with(
        &["apply", "plan.lock"],
        "",
        &[("NEXUS_ALLOWED_SIGNERS", path.to_str().unwrap())],
    );
    env.assert_refused(&r, before, "is not signed");
}

#[test]
fn an_unsigned_plan_is_refused_when_the_configuration_names_the_allowed_signers() {
    let env = Env::new();
    let config = env.require_signed_plans();
    env.plan(&[]);
    let before = env.connections();
    let r = env.p.nexus(&["apply", "plan.lock"]);
    env.assert_refused(&r, before, "is not signed");
    // Without trust anywhere, an unsigned plan applies as before.
    env.p.config(&config);
    env.plan(&[]);
    let r = env.p.nexus(&["apply", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// `run` executes a plan no one signed: where plans must be signed (the configuration's `trust`,
/// or NEXUS_ALLOWED_SIGNERS) it is refused before any host is contacted; `--dry-run` still plans.
#[test]
fn run_is_refused_where_plans_must_be_signed() {
    let env = Env::new();
    let config = env.require_signed_plans();
    // Planning still works (and settles the host's log of connections).
    env.plan(&[]);
    let before = env.connections();
    let r = env.p.nexus(&["run"]);
    env.assert_refused(&r, before, "plans for this project must be signed");
    assert!(r.stderr.contains("trust allowed-signers="), "{r:?}");

    env.p.config(&config);
    let path = env.p.path("allowed_signers");
    let r = env.p.nexus_with(
        &["run"],
        "",
        &[("NEXUS_ALLOWED_SIGNERS", path.to_str().unwrap())],
    );
    env.assert_refused(&r, before, "NEXUS_ALLOWED_SIGNERS=");

    let r = env.p.nexus_with(
        &["run", "--dry-run"],
        "",
        &[("NEXUS_ALLOWED_SIGNERS", path.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!env.ran(), "a dry run ran the plan");
}

#[test]
fn a_plan_changed_after_signing_is_refused() {
    let env = Env::new();
    env.plan(&["--sign", "deploy"]);
    let sig = sig_text(env.p.dir());
    // A consistent plan file (its own hash matches) that the key never signed, beside the
    // signature of the earlier one: what someone with write access to the artifact could do.
    let config = std::fs::read_to_string(env.p.path("nexus.kdl")).unwrap();
    env.p
        .config(&config.replace("echo ran", "echo ran; echo evil"));
    env.plan(&[]);
    env.p.write("plan.lock.sig", &sig);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "signature does not match");
}

#[test]
fn a_signature_in_another_namespace_is_refused() {
    let env = Env::new();
    env.plan(&[]);
    env.keygen_sign("deploy", "git");
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "namespace `git`");
}

#[test]
fn a_key_missing_from_allowed_signers_is_refused() {
    let env = Env::new();
    env.keygen("stranger", "ed25519", "");
    env.plan(&["--sign", "stranger"]);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "not in allowed_signers");
}

#[test]
fn an_expired_signer_is_refused() {
    let env = Env::new();
    let public = std::fs::read_to_string(env.p.path("deploy.pub")).unwrap();
    env.allow(&format!("{PRINCIPAL} valid-before=\"20200101\" {public}"));
    env.plan(&["--sign", "deploy"]);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "expired");
    assert!(!env.keygen_verifies(PRINCIPAL), "ssh-keygen accepts it");
}

#[test]
fn a_signer_not_yet_valid_is_refused() {
    let env = Env::new();
    let public = std::fs::read_to_string(env.p.path("deploy.pub")).unwrap();
    env.allow(&format!("{PRINCIPAL} valid-after=\"29990101\" {public}"));
    env.plan(&["--sign", "deploy"]);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "not valid until");
    assert!(!env.keygen_verifies(PRINCIPAL), "ssh-keygen accepts it");
}

#[test]
fn a_signer_limited_to_other_namespaces_is_refused() {
    let env = Env::new();
    let public = std::fs::read_to_string(env.p.path("deploy.pub")).unwrap();
    env.allow(&format!("{PRINCIPAL} namespaces=\"git,file\" {public}"));
    env.plan(&["--sign", "deploy"]);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "namespaces");
    assert!(!env.keygen_verifies(PRINCIPAL), "ssh-keygen accepts it");
}

#[test]
fn a_cert_authority_line_is_refused_as_unsupported() {
    let env = Env::new();
    let public = std::fs::read_to_string(env.p.path("deploy.pub")).unwrap();
    env.allow(&format!("*@ci cert-authority {public}"));
    env.plan(&["--sign", "deploy"]);
    let before = env.connections();
    let r = env.apply();
    env.assert_refused(&r, before, "cert-authority");
    assert!(r.stderr.contains("allowed_signers:1"), "{r:?}");
}

#[test]
fn a_plan_signed_by_ssh_keygen_applies() {
    let env = Env::new();
    let rsa = env.keygen("ops", "rsa", "");
    let ecdsa = env.keygen("ci", "ecdsa", "");
    let deploy = std::fs::read_to_string(env.p.path("deploy.pub")).unwrap();
    env.allow(&format!(
        "# the team\n{PRINCIPAL} {deploy}\nops@example.org,ops@ci {rsa}\n\"ci bot\" {ecdsa}"
    ));
    env.plan(&[]);
    env.keygen_sign("ops", "nexus-plan");
    let r = env.apply();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(env.ran());
}

#[test]
fn nexus_signs_with_rsa_and_ecdsa_keys_that_ssh_keygen_verifies() {
    let env = Env::new();
    let rsa = env.keygen("ops", "rsa", "");
    let ecdsa = env.keygen("ci", "ecdsa", "");
    env.allow(&format!("ops@ci {rsa}\nci@ci {ecdsa}"));
    env.plan(&["--sign", "ops"]);
    assert!(env.keygen_verifies("ops@ci"));
    env.plan(&["--sign", "ci"]);
    assert!(env.keygen_verifies("ci@ci"));
    assert!(!env.keygen_verifies("ops@ci"));
}

#[test]
fn an_encrypted_key_reads_its_passphrase_from_the_environment() {
    let env = Env::new();
    let public = env.keygen("locked", "ed25519", "correct horse");
    env.allow(&format!("{PRINCIPAL} {public}"));
    // No passphrase and no terminal to ask on (stdin and stderr are pipes here).
    let r = env
        .p
        .nexus(&["plan", "-o", "plan.lock", "--sign", "locked"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NEXUS_SIGN_PASSPHRASE"), "{r:?}");
    assert!(!env.p.path("plan.lock").exists(), "a plan was written");
    let r = env.p.nexus_with(
        &["plan", "-o", "plan.lock", "--sign", "locked"],
        "",
        &[("NEXUS_SIGN_PASSPHRASE", "wrong")],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("passphrase"), "{r:?}");
    assert!(!env.p.path("plan.lock").exists(), "a plan was written");
    let r = env.p.nexus_with(
        &["plan", "-o", "plan.lock", "--sign", "locked"],
        "",
        &[("NEXUS_SIGN_PASSPHRASE", "correct horse")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(env.keygen_verifies(PRINCIPAL));
}

#[test]
fn a_key_held_by_ssh_agent_signs() {
    let env = Env::new();
    let agent = Agent::start();
    agent.add(&env.p.path("deploy"));
    // Only the public half is named: the agent holds the private one.
    std::fs::remove_file(env.p.path("deploy")).unwrap();
    let sock = agent.socket.to_str().unwrap();
    let r = env.p.nexus_with(
        &["plan", "-o", "plan.lock", "--sign", "deploy.pub"],
        "",
        &[("SSH_AUTH_SOCK", sock)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(env.keygen_verifies(PRINCIPAL));
    // The agent's only key, and a key named by its fingerprint.
    let fingerprint = harness::run(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(env.p.path("deploy.pub")),
    );
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    for spec in ["agent:".to_string(), format!("agent:{fingerprint}")] {
        std::fs::remove_file(env.p.path("plan.lock.sig")).unwrap();
        let r = env.p.nexus_with(
            &["plan", "-o", "plan.lock", "--sign", &spec],
            "",
            &[("SSH_AUTH_SOCK", sock)],
        );
        assert_eq!(r.code, 0, "{spec}: {r:?}");
        assert!(env.keygen_verifies(PRINCIPAL), "{spec}");
    }
    let r = env.apply();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(env.ran());
}

#[test]
fn sign_without_a_plan_file_is_a_usage_error() {
    let env = Env::new();
    let r = env.p.nexus(&["plan", "--sign", "deploy"]);
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("--out"), "{r:?}");
}

#[test]
fn a_key_the_agent_does_not_hold_fails_clearly() {
    let env = Env::new();
    let agent = Agent::start();
    let sock = agent.socket.to_str().unwrap();
    let r = env.p.nexus_with(
        &["plan", "-o", "plan.lock", "--sign", "deploy.pub"],
        "",
        &[("SSH_AUTH_SOCK", sock)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("ssh-agent does not hold"), "{r:?}");
    assert!(!env.p.path("plan.lock").exists(), "a plan was written");
}

#[test]
fn a_plan_naming_a_configuration_without_trust_is_still_held_to_the_one_apply_is_given() {
    // The plan file names its configuration, and whoever can edit the plan can point that at a
    // file without `trust` (even one shipped beside the plan): the configuration apply itself
    // is given (`-c`, here the default nexus.kdl) must still decide.
    let env = Env::new();
    let config = std::fs::read_to_string(env.p.path("nexus.kdl")).unwrap();
    env.p.write("untrusting.kdl", &config);
    env.p.config(&format!(
        "trust allowed-signers=\"allowed_signers\"\n{config}"
    ));
    let planner = Project::at(env.p.dir()).config_arg("untrusting.kdl");
    let r = planner.nexus(&["plan", "-o", "plan.lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = env.connections();
    let r = env.p.nexus(&["apply", "plan.lock"]);
    env.assert_refused(&r, before, "is not signed");
}
