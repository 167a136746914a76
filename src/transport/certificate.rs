//! OpenSSH certificates: where a user's certificate is found, and why a certificate cannot be
//! used (its type, its validity window, its principals), in words for error messages.
//!
//! Whether a host certificate is trusted is decided in known_hosts.rs (which CA, what is
//! revoked); these are the checks of the certificate itself that it relies on.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, HashAlg};

/// The certificate OpenSSH uses with an identity file: `NAME-cert.pub` beside it.
pub fn beside(identity: &Path) -> PathBuf {
    let mut name = identity.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

/// Why a certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not an OpenSSH certificate: {0}")]
    Format(#[from] russh::keys::ssh_key::Error),
}

/// Reads a certificate file as ssh-keygen writes it (`TYPE-cert-v01@openssh.com BASE64 [comment]`).
pub fn read(path: &Path) -> Result<Certificate, ReadError> {
    let text = std::fs::read_to_string(path)?;
    Ok(Certificate::from_openssh(text.trim())?)
}

/// Seconds since the Unix epoch, the clock certificates are checked against.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `SHA256:...` of a key inside a certificate (the certified key or the CA's).
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Why the server will refuse `cert` for logging in as `user`, as far as the client can tell;
/// `None` when the certificate itself looks right (the server may still not trust its CA).
pub fn user_problem(cert: &Certificate, user: &str, now: u64) -> Option<String> {
    if cert.cert_type() != CertType::User {
        return Some("it is a host certificate, not a user certificate".into());
    }
    if let Some(why) = validity_problem(cert, now) {
        return Some(why);
    }
    let principals = cert.valid_principals();
    if principals.is_empty() {
        return Some("it names no principals".into());
    }
    // sshd compares principals with the login name exactly (without AuthorizedPrincipalsFile).
    if !principals.iter().any(|p| p == user) {
        return Some(format!(
            "its principals {} do not include the login user {user:?}",
            quoted(principals)
        ));
    }
    None
}

/// Why `cert` does not certify the host reached as `host_name`: its type, its validity window,
/// and a principal naming the host (OpenSSH's wildcards allowed). A certificate naming no
/// principals is refused, where OpenSSH would accept it for any host.
pub fn host_problem(cert: &Certificate, host_name: &str, now: u64) -> Option<String> {
    if cert.cert_type() != CertType::Host {
        return Some("it is a user certificate, not a host certificate".into());
    }
    if let Some(why) = validity_problem(cert, now) {
        return Some(why);
    }
    let principals = cert.valid_principals();
    if principals.is_empty() {
        return Some("it names no principals, so no host in particular".into());
    }
    let host = host_name.to_ascii_lowercase();
    if !principals
        .iter()
        .any(|p| crate::pattern::matches(p.to_ascii_lowercase().as_bytes(), host.as_bytes()))
    {
        return Some(format!(
            "its principals {} do not name the host {host_name:?}",
            quoted(principals)
        ));
    }
    None
}

/// Why `cert` is not valid at `now`, if it is not.
fn validity_problem(cert: &Certificate, now: u64) -> Option<String> {
    if now < cert.valid_after() {
        return Some(format!(
            "it is not valid until {} (now {})",
            utc(cert.valid_after()),
            utc(now)
        ));
    }
    if now >= cert.valid_before() {
        return Some(format!(
            "it expired at {} (now {})",
            utc(cert.valid_before()),
            utc(now)
        ));
    }
    None
}

fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "the end of time".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn quoted(principals: &[String]) -> String {
    principals
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    // Fixed seeds: these keys need no secrecy, and the tests no randomness.
    pub(crate) fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn cert(kind: CertType, principals: &[&str], after: u64, before: u64) -> Certificate {
        signed(kind, principals, after, before, &key(1), &key(2))
    }

    /// A certificate of `subject`'s key signed by `ca`.
    pub(crate) fn signed(
        kind: CertType,
        principals: &[&str],
        after: u64,
        before: u64,
        subject: &PrivateKey,
        ca: &PrivateKey,
    ) -> Certificate {
        let mut b = Builder::new(
            [0u8; 32],
            subject.public_key().key_data().clone(),
            after,
            before,
        )
        .unwrap();
        b.cert_type(kind).unwrap();
        if principals.is_empty() {
            b.all_principals_valid().unwrap();
        }
        for p in principals {
            b.valid_principal(*p).unwrap();
        }
        b.sign(ca).unwrap()
    }

    #[test]
    fn beside_appends_to_the_whole_name() {
        assert_eq!(
            beside(Path::new("/k/id_ed25519")),
            PathBuf::from("/k/id_ed25519-cert.pub")
        );
        assert_eq!(
            beside(Path::new("/k/deploy.key")),
            PathBuf::from("/k/deploy.key-cert.pub")
        );
    }

    #[test]
    fn user_certificates() {
        let c = cert(CertType::User, &["alice"], 1000, 2000);
        assert_eq!(user_problem(&c, "alice", 1500), None);
        assert_eq!(
            user_problem(&c, "bob", 1500).unwrap(),
            "its principals \"alice\" do not include the login user \"bob\""
        );
        assert_eq!(
            user_problem(&c, "alice", 2000).unwrap(),
            "it expired at 1970-01-01 00:33:20 UTC (now 1970-01-01 00:33:20 UTC)"
        );
        assert!(
            user_problem(&c, "alice", 999)
                .unwrap()
                .starts_with("it is not valid until 1970-01-01 00:16:40 UTC")
        );
        let h = cert(CertType::Host, &["alice"], 1000, 2000);
        assert!(
            user_problem(&h, "alice", 1500)
                .unwrap()
                .contains("host certificate")
        );
        let none = cert(CertType::User, &[], 1000, 2000);
        assert_eq!(
            user_problem(&none, "alice", 1500).unwrap(),
            "it names no principals"
        );
    }

    #[test]
    fn host_certificates() {
        let c = cert(
            CertType::Host,
            &["*.example.com", "10.0.0.5"],
            1000,
            u64::MAX,
        );
        assert_eq!(host_problem(&c, "web1.Example.com", 1500), None);
        assert_eq!(host_problem(&c, "10.0.0.5", u64::MAX - 1), None);
        assert_eq!(
            host_problem(&c, "10.0.0.6", 1500).unwrap(),
            "its principals \"*.example.com\", \"10.0.0.5\" do not name the host \"10.0.0.6\""
        );
        let u = cert(CertType::User, &["10.0.0.5"], 1000, 2000);
        assert!(
            host_problem(&u, "10.0.0.5", 1500)
                .unwrap()
                .contains("user certificate")
        );
        let any = cert(CertType::Host, &[], 1000, 2000);
        assert!(
            host_problem(&any, "10.0.0.5", 1500)
                .unwrap()
                .contains("no principals")
        );
    }
}
