//! Signed plans in the application layer: signing the file `plan -o` wrote, and deciding whether
//! apply requires a signature, and whose, from sources the plan file cannot change.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::Error;
use crate::signing::{self, Key, Passphrase};

/// Names an allowed_signers file when `--allowed-signers` does not.
pub const ALLOWED_SIGNERS_ENV: &str = "NEXUS_ALLOWED_SIGNERS";
/// The passphrase of an encrypted `--sign` key.
pub const PASSPHRASE_ENV: &str = "NEXUS_SIGN_PASSPHRASE";

/// `--sign KEY` and how to ask for its passphrase.
#[derive(Clone)]
pub struct SignRequest {
    pub key: String,
    pub prompt: Option<crate::secrets::Prompt<'static>>,
}

impl std::fmt::Debug for SignRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignRequest")
            .field("key", &self.key)
            .finish()
    }
}

/// Loads the signing key (asking the agent or for a passphrase) before anything is planned.
pub async fn load_key(req: &SignRequest) -> Result<Key, Error> {
    let passphrase = Passphrase {
        env: std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new),
        prompt: req.prompt,
    };
    Key::load(&req.key, &passphrase).await.map_err(Error::Sign)
}

/// Signs the plan file at `out` as written, into `out.sig`. On failure the plan file is removed
/// too: an unsigned plan where a signed one was asked for would be refused later, far from here.
pub async fn sign_file(key: &mut Key, out: &Path) -> Result<PathBuf, Error> {
    let sig_path = signing::sig_path(out);
    let result = async {
        let bytes = std::fs::read(out).map_err(|e| {
            Error::Sign(signing::SignError::Sign(format!(
                "cannot read back {}: {e}",
                out.display()
            )))
        })?;
        let sig = key.sign(&bytes).await.map_err(Error::Sign)?;
        signing::write_sig(&sig_path, &sig).map_err(Error::Sign)
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(sig_path)
}

/// An unsigned `plan -o FILE` replaces FILE: a signature left from an earlier plan there would
/// only make apply report a mismatch instead of a missing signature.
pub fn remove_stale_sig(out: &Path) -> Result<(), Error> {
    let sig = signing::sig_path(out);
    match std::fs::remove_file(&sig) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            action: "remove the old signature",
            path: sig,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Where apply learns whether plans must be signed. The first that names an allowed_signers
/// file decides: the flag, the environment, the configuration apply itself is given (`-c`,
/// default nexus.kdl), then the configuration the plan names. The plan's own choice comes last
/// because the plan file is what a signature must protect: it can add a requirement where
/// nothing else set one, never replace one.
pub struct Trust<'a> {
    pub flag: Option<&'a Path>,
    pub own_config: &'a Path,
    pub plan_config: &'a Path,
}

impl Trust<'_> {
    /// The allowed_signers file in force, if any.
    pub fn allowed_signers(&self) -> Result<Option<PathBuf>, Error> {
        if let Some(f) = self.flag {
            return Ok(Some(f.to_path_buf()));
        }
        if let Some(f) = env_signers() {
            return Ok(Some(f));
        }
        for config in [self.own_config, self.plan_config] {
            // A configuration that is not there sets no trust; apply needs none to run.
            if !config.is_file() {
                continue;
            }
            let loaded = crate::config::load(config).map_err(Error::Config)?;
            if let Some(t) = loaded.config.trust {
                return Ok(Some(t.allowed_signers));
            }
        }
        Ok(None)
    }
}

/// Whether plans must be signed for `config` (its `trust` node, or NEXUS_ALLOWED_SIGNERS), and
/// which says so: `run`, which signs nothing, is refused then.
pub fn required_by(config: &crate::config::Config) -> Option<String> {
    if let Some(f) = env_signers() {
        return Some(format!("{ALLOWED_SIGNERS_ENV}={}", f.display()));
    }
    config
        .trust
        .as_ref()
        .map(|t| format!("trust allowed-signers={}", t.allowed_signers.display()))
}

/// The allowed_signers file NEXUS_ALLOWED_SIGNERS names, if set and not empty.
fn env_signers() -> Option<PathBuf> {
    std::env::var_os(ALLOWED_SIGNERS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Checks the signature of the plan file `file`, whose bytes are `bytes`, when trust is
/// configured: returns the signer's principals, or `None` when no signature is required.
pub fn verify(file: &Path, bytes: &[u8], trust: &Trust<'_>) -> Result<Option<String>, Error> {
    let Some(signers_file) = trust.allowed_signers()? else {
        return Ok(None);
    };
    let shown = signers_file.display().to_string();
    let text = std::fs::read_to_string(&signers_file).map_err(|e| Error::AllowedSigners {
        reason: format!("cannot read the allowed signers {shown}: {e}"),
    })?;
    let signers =
        signing::allowed_signers::parse(&text, &shown).map_err(|e| Error::AllowedSigners {
            reason: e.to_string(),
        })?;
    let refused = |refusal| Error::Unverified {
        file: file.display().to_string(),
        refusal,
    };
    let sig = signing::sig_path(file);
    let sig_text = read_sig(&sig).map_err(refused)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    signing::verify(bytes, &sig_text, &sig, &signers, now)
        .map(|entry| Some(entry.principals.clone()))
        .map_err(refused)
}

fn read_sig(sig: &Path) -> Result<String, signing::Refusal> {
    std::fs::read_to_string(sig).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => signing::Refusal::Unsigned {
            sig: sig.display().to_string(),
        },
        _ => signing::Refusal::Unreadable {
            sig: sig.display().to_string(),
            reason: e.to_string(),
        },
    })
}

/// What `show` says about a plan file's signature.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// No FILE.sig.
    Unsigned,
    /// Signed, but no allowed_signers file is configured to say by whom.
    Unchecked { key: String },
    /// Signed by a key the allowed_signers file allows.
    Verified { signer: String },
    /// Apply would refuse it.
    Refused { reason: String },
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Unsigned => write!(f, "not signed"),
            Status::Unchecked { key } => write!(
                f,
                "signed by the key {key}, not checked: no allowed_signers is configured"
            ),
            Status::Verified { signer } => write!(f, "signed by {signer}"),
            Status::Refused { reason } => write!(f, "apply would refuse it: {reason}"),
        }
    }
}

/// The signature status of the plan file `file` (bytes `bytes`), checked as apply would.
pub fn status(file: &Path, bytes: &[u8], trust: &Trust<'_>) -> Result<Status, Error> {
    match verify(file, bytes, trust) {
        Ok(Some(signer)) => Ok(Status::Verified { signer }),
        Ok(None) => {
            let sig = signing::sig_path(file);
            Ok(
                match read_sig(&sig).and_then(|t| signing::key_of(&t, &sig)) {
                    Ok(key) => Status::Unchecked { key },
                    Err(signing::Refusal::Unsigned { .. }) => Status::Unsigned,
                    Err(e) => Status::Refused {
                        reason: e.to_string(),
                    },
                },
            )
        }
        Err(Error::Unverified {
            refusal: signing::Refusal::Unsigned { .. },
            ..
        }) => Ok(Status::Refused {
            reason: "it is not signed".into(),
        }),
        Err(Error::Unverified { refusal, .. }) => Ok(Status::Refused {
            reason: refusal.to_string(),
        }),
        Err(Error::AllowedSigners { reason }) => Ok(Status::Refused { reason }),
        Err(e) => Err(e),
    }
}
