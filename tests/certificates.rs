//! OpenSSH certificates end to end: the real `nexus facts` against real sshd hosts configured
//! with `TrustedUserCAKeys` (user certificates) and `HostCertificate` (host certificates), with
//! CAs and certificates made by `ssh-keygen -s`.

mod harness;

use std::path::{Path, PathBuf};

use harness::ca::Ca;
use harness::project::{Project, Run, login};
use harness::{Agent, HostBuilder, KeyPair, SshHost};

/// Valid from five minutes ago for an hour: the usual short-lived certificate.
const VALID: &str = "-5m:+1h";
/// Valid from two hours ago until one hour ago.
const EXPIRED: &str = "-2h:-1h";

/// A project for `host` with `known_hosts` as its only known_hosts file, `ssh_config` as its ssh
/// config, the host logging in with `identity` (if any), and a HOME of its own, so that neither
/// the machine's keys nor its agent take part.
fn setup(host: &SshHost, identity: Option<&Path>, known_hosts: &str, ssh_config: &str) -> Project {
    let p = Project::new();
    p.write("known_hosts", known_hosts);
    p.write("ssh_config", ssh_config);
    let identity = identity
        .map(|i| format!(" identity=\"{}\"", i.display()))
        .unwrap_or_default();
    p.config(&format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\" connect-timeout=\"5s\"\n\
         host \"{}\" \"{}\"{identity}\n",
        host.name,
        login(host)
    ));
    let home = p.path("home");
    std::fs::create_dir_all(&home).unwrap();
    p.env("HOME", &home.display().to_string())
}

/// The run was refused as unreachable (exit 4) with `expected` in its error.
fn assert_refused(out: &Run, expected: &str) {
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains(expected),
        "expected {expected:?} in {out:?}"
    );
}

/// A host that lets in only users with a certificate from its user CA, and an identity of the
/// test's that no authorized_keys names.
struct UserCase {
    keys: tempfile::TempDir,
    ca: Ca,
    host: SshHost,
    key: KeyPair,
}

impl UserCase {
    fn new(name: &str) -> UserCase {
        let keys = tempfile::tempdir().unwrap();
        let ca = Ca::new(keys.path(), "user_ca");
        let host = SshHost::builder(name)
            .trusted_user_ca(&ca)
            .without_authorized_keys()
            .start();
        let key = KeyPair::generate(&keys.path().join("id_user"), "");
        UserCase {
            keys,
            ca,
            host,
            key,
        }
    }

    /// Signs the identity's key; the certificate lands beside it.
    fn sign(&self, principals: &[&str], validity: &str) -> PathBuf {
        self.ca
            .sign_user(&public_file(&self.key), principals, validity)
    }

    /// A project logging in with the identity (or, without, with nothing configured).
    fn project(&self, with_identity: bool, ssh_config: &str) -> Project {
        let identity = with_identity.then_some(self.key.private.as_path());
        setup(
            &self.host,
            identity,
            &self.host.known_hosts_line(),
            ssh_config,
        )
    }
}

/// A host presenting a certificate from its host CA (configured by `certify`).
struct HostCase {
    keys: tempfile::TempDir,
    ca: Ca,
    host: SshHost,
}

impl HostCase {
    fn new(name: &str, certify: impl FnOnce(HostBuilder, &Ca) -> HostBuilder) -> HostCase {
        let keys = tempfile::tempdir().unwrap();
        let ca = Ca::new(keys.path(), "host_ca");
        let host = certify(SshHost::builder(name), &ca).start();
        HostCase { keys, ca, host }
    }

    /// A project whose known_hosts is `known_hosts`.
    fn project(&self, known_hosts: &str) -> Project {
        setup(
            &self.host,
            Some(&self.host.user_key.private),
            known_hosts,
            "",
        )
    }

    /// `@cert-authority [ip]:port CA` for `ca`.
    fn authority(&self, ca: &Ca) -> String {
        format!(
            "@cert-authority [{}]:{} {}\n",
            self.host.ip, self.host.port, ca.key.public
        )
    }

    /// What a refusal of its certificate starts with.
    fn refusal(&self) -> String {
        format!(
            "host certificate for [{}]:{} refused: ",
            self.host.ip, self.host.port
        )
    }
}

fn public_file(key: &KeyPair) -> PathBuf {
    key.private.with_extension("pub")
}

// ---- user certificates ----

#[test]
fn user_certificate_beside_the_identity_logs_in() {
    let c = UserCase::new("ucert");
    let p = c.project(true, "");
    // The key alone is authorized nowhere: refused.
    assert_refused(&p.nexus(&["facts"]), "authentication failed");

    let cert = c.sign(&["nexus-test"], VALID);
    assert_eq!(cert, c.keys.path().join("id_user-cert.pub"));
    let out = p.nexus(&["facts"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nexus-test"), "{out:?}");
}

#[test]
fn certificate_file_from_ssh_config_logs_in() {
    let c = UserCase::new("ucfile");
    // Signed elsewhere: no `-cert.pub` beside the identity.
    let elsewhere = c.keys.path().join("certs");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(public_file(&c.key), elsewhere.join("user.pub")).unwrap();
    let cert =
        c.ca.sign_user(&elsewhere.join("user.pub"), &["nexus-test"], VALID);
    assert!(!c.keys.path().join("id_user-cert.pub").exists());

    let p = c.project(
        true,
        &format!("Host *\n    CertificateFile {}\n", cert.display()),
    );
    let out = p.nexus(&["facts"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn certificate_held_in_ssh_agent_logs_in() {
    let c = UserCase::new("ucagent");
    c.sign(&["nexus-test"], VALID);
    let agent = Agent::start();
    // ssh-add loads the certificate beside the key as well.
    agent.add(&c.key.private);

    let p = c
        .project(false, "")
        .env("SSH_AUTH_SOCK", &agent.socket.display().to_string());
    let out = p.nexus(&["facts"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn expired_user_certificate_is_refused_with_its_expiry() {
    let c = UserCase::new("ucexp");
    let cert = c.sign(&["nexus-test"], EXPIRED);
    let out = c.project(true, "").nexus(&["facts"]);
    assert_refused(&out, "authentication failed");
    assert_refused(
        &out,
        &format!("certificate {} (refused: it expired at ", cert.display()),
    );
}

#[test]
fn user_certificate_for_another_principal_is_refused_naming_both() {
    let c = UserCase::new("ucprinc");
    let cert = c.sign(&["alice", "bob"], VALID);
    assert_refused(
        &c.project(true, "").nexus(&["facts"]),
        &format!(
            "certificate {} (refused: its principals \"alice\", \"bob\" do not include the login user \"nexus-test\")",
            cert.display()
        ),
    );
}

#[test]
fn certificate_of_another_key_is_not_offered() {
    let c = UserCase::new("ucother");
    let other = KeyPair::generate(&c.keys.path().join("id_other"), "");
    let other_cert = c.ca.sign_user(&public_file(&other), &["nexus-test"], VALID);
    let beside = c.keys.path().join("id_user-cert.pub");
    std::fs::copy(&other_cert, &beside).unwrap();

    assert_refused(
        &c.project(true, "").nexus(&["facts"]),
        &format!(
            "certificate {} (not offered: it certifies the key {}, not the identity's key {})",
            beside.display(),
            other.fingerprint(),
            c.key.fingerprint()
        ),
    );
}

// ---- host certificates ----

#[test]
fn host_certificate_from_a_trusted_ca_is_accepted() {
    let c = HostCase::new("hcert", |b, ca| b.host_certificate(ca, VALID));
    // Without the CA, the host is unknown: strict checking stays the default.
    let p = c.project("");
    assert_refused(&p.nexus(&["facts"]), "unknown host key");

    p.write("known_hosts", &c.authority(&c.ca));
    let out = p.nexus(&["facts"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Trust came from the CA: nothing was recorded.
    let kh = std::fs::read_to_string(p.path("known_hosts")).unwrap();
    assert_eq!(kh, c.authority(&c.ca));
}

#[test]
fn host_with_a_certificate_is_still_trusted_by_its_plain_key() {
    let c = HostCase::new("hplain", |b, ca| b.host_certificate(ca, VALID));
    let out = c.project(&c.host.known_hosts_line()).nexus(&["facts"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn expired_host_certificate_is_refused_with_its_expiry() {
    let c = HostCase::new("hexp", |b, ca| b.host_certificate(ca, EXPIRED));
    let p = c.project(&c.authority(&c.ca));
    // Not even accept-new papers over a failed certificate.
    let out = p.nexus(&["facts", "--accept-new-host-keys"]);
    assert_refused(&out, "hexp");
    assert_refused(&out, &format!("{}it expired at ", c.refusal()));
    let kh = std::fs::read_to_string(p.path("known_hosts")).unwrap();
    assert_eq!(kh, c.authority(&c.ca), "nothing recorded");
}

#[test]
fn host_certificate_for_another_name_is_refused_naming_both() {
    let c = HostCase::new("hprinc", |b, ca| {
        b.host_certificate_for(ca, &["db1.example.com"], VALID)
    });
    assert_refused(
        &c.project(&c.authority(&c.ca)).nexus(&["facts"]),
        &format!(
            "{}its principals \"db1.example.com\" do not name the host \"{}\"",
            c.refusal(),
            c.host.ip
        ),
    );
}

#[test]
fn host_certificate_from_an_untrusted_ca_is_refused() {
    let c = HostCase::new("huntrusted", |b, ca| b.host_certificate(ca, VALID));
    let other = Ca::new(c.keys.path(), "other_ca");
    assert_refused(
        &c.project(&c.authority(&other)).nexus(&["facts"]),
        &format!(
            "{}it is signed by the CA {}, which no @cert-authority line trusts for this host",
            c.refusal(),
            c.ca.key.fingerprint()
        ),
    );
}

#[test]
fn revoked_ca_and_revoked_certificate_key_are_refused() {
    let c = HostCase::new("hrevoked", |b, ca| b.host_certificate(ca, VALID));
    for (what, key) in [("CA key", &c.ca.key), ("certificate key", &c.host.host_key)] {
        let (line, revoked) = (&key.public, key.fingerprint());
        let p = c.project(&format!("{}@revoked * {line}\n", c.authority(&c.ca)));
        let location = format!("{}:2", p.path("known_hosts").display());
        assert_refused(
            &p.nexus(&["facts"]),
            &format!(
                "{}its {what} {revoked} is marked @revoked in {location}",
                c.refusal()
            ),
        );
    }
}
