//! Signed plans: an OpenSSH SSHSIG (PROTOCOL.sshsig) over the entire bytes of a plan file, kept
//! beside it as `<plan>.sig`, exactly as `ssh-keygen -Y sign -n nexus-plan` writes one. A hash
//! proves a plan file is whole; a signature proves who made it (docs/plan-format.md).

pub mod allowed_signers;

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, PrivateKey, PublicKey, SshSig};
use zeroize::Zeroizing;

pub use allowed_signers::{Entry, NotAllowed, ParseError};

/// The SSHSIG namespace of plan signatures: a signature made for git or for files never passes
/// as one for a plan.
pub const NAMESPACE: &str = "nexus-plan";

/// ssh-keygen's default; the agent is asked for RSA signatures with it too.
const HASH: HashAlg = HashAlg::Sha512;

/// `--sign agent:...`: a key held by ssh-agent, named by fingerprint (or the agent's only key).
pub const AGENT_PREFIX: &str = "agent:";

/// `plan.lock` → `plan.lock.sig`, ssh-keygen's name for a detached signature.
pub fn sig_path(plan: &Path) -> PathBuf {
    let mut name = plan.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read the signing key {file}: {reason}")]
    Read { file: String, reason: String },
    #[error(
        "the signing key {file} is encrypted: set NEXUS_SIGN_PASSPHRASE, or run nexus on a terminal to be asked for its passphrase"
    )]
    NeedsPassphrase { file: String },
    #[error("cannot decrypt the signing key {file}: wrong passphrase?")]
    Decrypt { file: String },
    #[error("cannot reach ssh-agent (SSH_AUTH_SOCK): {0}")]
    Agent(String),
    #[error("ssh-agent does not hold {what}; it holds: {held}")]
    NotInAgent { what: String, held: String },
    #[error("ssh-agent holds several keys ({held}); name one: --sign agent:SHA256:...")]
    AgentAmbiguous { held: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("cannot write the signature {file}: {reason}")]
    Write { file: String, reason: String },
}

/// A key ready to sign: in memory, or in ssh-agent.
pub enum Key {
    Private(Box<PrivateKey>),
    Agent {
        key: PublicKey,
        agent: Box<russh::keys::agent::client::AgentClient<tokio::net::UnixStream>>,
    },
}

/// Where a passphrase comes from for an encrypted key.
pub struct Passphrase<'a> {
    /// NEXUS_SIGN_PASSPHRASE.
    pub env: Option<Zeroizing<String>>,
    /// A no-echo terminal prompt, when a person can answer one.
    pub prompt: Option<crate::secrets::Prompt<'a>>,
}

impl Key {
    /// Loads `spec`: a private key file, a public key file whose private half ssh-agent holds,
    /// or `agent:[SHA256:...]`. Done before planning so a wrong key fails before any host is
    /// contacted.
    pub async fn load(spec: &str, passphrase: &Passphrase<'_>) -> Result<Key, SignError> {
        if let Some(fp) = spec.strip_prefix(AGENT_PREFIX) {
            return Key::from_agent(|k| fp.is_empty() || fingerprint(k) == fp, spec).await;
        }
        let read = |reason: String| SignError::Read {
            file: spec.to_string(),
            reason,
        };
        let text = std::fs::read_to_string(spec).map_err(|e| read(e.to_string()))?;
        if let Ok(public) = PublicKey::from_openssh(text.trim()) {
            let what = format!("the key {} ({spec})", fingerprint(&public));
            return Key::from_agent(|k| k.key_data() == public.key_data(), &what).await;
        }
        let key = PrivateKey::from_openssh(&text).map_err(|e| {
            read(format!(
                "not an OpenSSH private or public key ({e}); `ssh-keygen -p -f KEY` rewrites a \
                 PEM private key in OpenSSH's format"
            ))
        })?;
        if !key.is_encrypted() {
            return Ok(Key::Private(Box::new(key)));
        }
        let file = spec.to_string();
        let typed = match (&passphrase.env, passphrase.prompt) {
            (Some(p), _) => p.clone(),
            (None, Some(prompt)) => prompt(&format!("Passphrase for {spec}: "))
                .map_err(|e| read(format!("cannot read the passphrase: {e}")))?,
            (None, None) => return Err(SignError::NeedsPassphrase { file }),
        };
        key.decrypt(typed.as_bytes())
            .map(|k| Key::Private(Box::new(k)))
            .map_err(|_| SignError::Decrypt { file })
    }

    async fn from_agent(wanted: impl Fn(&PublicKey) -> bool, what: &str) -> Result<Key, SignError> {
        use russh::keys::agent::AgentIdentity;
        let agent_err = |e: russh::keys::Error| SignError::Agent(e.to_string());
        let mut agent = russh::keys::agent::client::AgentClient::connect_env()
            .await
            .map_err(agent_err)?;
        let held: Vec<PublicKey> = agent
            .request_identities()
            .await
            .map_err(agent_err)?
            .into_iter()
            .filter_map(|id| match id {
                AgentIdentity::PublicKey { key, .. } => Some(key),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect();
        let listing = || {
            let fps: Vec<String> = held.iter().map(fingerprint).collect();
            if fps.is_empty() {
                "no keys".to_string()
            } else {
                fps.join(", ")
            }
        };
        let mut matching = held.iter().filter(|k| wanted(k));
        let key = match (matching.next(), matching.next()) {
            (Some(k), None) => k.clone(),
            (Some(_), Some(_)) => return Err(SignError::AgentAmbiguous { held: listing() }),
            (None, _) => {
                return Err(SignError::NotInAgent {
                    what: what.to_string(),
                    held: listing(),
                });
            }
        };
        Ok(Key::Agent {
            key,
            agent: Box::new(agent),
        })
    }

    /// Signs `bytes` (a whole plan file) in the [`NAMESPACE`].
    pub async fn sign(&mut self, bytes: &[u8]) -> Result<SshSig, SignError> {
        let failed = |e: &dyn std::fmt::Display| SignError::Sign(e.to_string());
        match self {
            Key::Private(key) => {
                SshSig::sign(key.as_ref(), NAMESPACE, HASH, bytes).map_err(|e| failed(&e))
            }
            Key::Agent { key, agent } => {
                let data = SshSig::signed_data(NAMESPACE, HASH, bytes).map_err(|e| failed(&e))?;
                let signature = agent
                    .sign_request_signature(key, Some(HASH), &data)
                    .await
                    .map_err(|e| failed(&e))?;
                SshSig::new(key.key_data().clone(), NAMESPACE, HASH, signature)
                    .map_err(|e| failed(&e))
            }
        }
    }
}

fn fingerprint(key: &PublicKey) -> String {
    allowed_signers::fingerprint(key.key_data())
}

/// Writes `sig` armored to `path` through a temporary file, so a reader never sees half of it.
pub fn write_sig(path: &Path, sig: &SshSig) -> Result<(), SignError> {
    let fail = |reason: String| SignError::Write {
        file: path.display().to_string(),
        reason,
    };
    let pem = sig
        .to_pem(ssh_key::LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, pem)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e.to_string())
        })
}

/// Why a plan's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("it is not signed (no {sig}); sign it with `nexus plan -o FILE --sign KEY`")]
    Unsigned { sig: String },
    #[error("cannot read its signature {sig}: {reason}")]
    Unreadable { sig: String, reason: String },
    #[error("the signature is in the namespace `{0}`, not `{NAMESPACE}`")]
    Namespace(String),
    #[error(
        "the signature does not match it: the plan file was changed after signing, or the signature belongs to another plan"
    )]
    Mismatch,
    #[error("{0}")]
    NotAllowed(#[from] NotAllowed),
}

/// Checks `sig_text`, the armored signature of `bytes`, against `signers` at `now` (seconds
/// since the epoch); returns the line that allowed it.
pub fn verify<'a>(
    bytes: &[u8],
    sig_text: &str,
    sig: &Path,
    signers: &'a [Entry],
    now: i64,
) -> Result<&'a Entry, Refusal> {
    let signature = parse_sig(sig_text, sig)?;
    if signature.namespace() != NAMESPACE {
        return Err(Refusal::Namespace(signature.namespace().to_string()));
    }
    PublicKey::from(signature.public_key().clone())
        .verify(NAMESPACE, bytes, &signature)
        .map_err(|_| Refusal::Mismatch)?;
    Ok(allowed_signers::find(
        signers,
        signature.public_key(),
        NAMESPACE,
        now,
    )?)
}

/// The fingerprint of the key that made the signature `sig_text`, unchecked.
pub fn key_of(sig_text: &str, sig: &Path) -> Result<String, Refusal> {
    parse_sig(sig_text, sig).map(|s| allowed_signers::fingerprint(s.public_key()))
}

fn parse_sig(sig_text: &str, sig: &Path) -> Result<SshSig, Refusal> {
    SshSig::from_pem(sig_text).map_err(|e| Refusal::Unreadable {
        sig: sig.display().to_string(),
        reason: e.to_string(),
    })
}
