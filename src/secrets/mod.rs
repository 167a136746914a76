//! The secrets vault: an AES-256-GCM encrypted file of named secrets (`nexus secret ...`), the
//! keyed fingerprints that stand for secret values in plan files, and redaction of secret values
//! from command output. The file format and the threat model are in docs/secrets.md.
//!
//! What the rest of nexus may rely on:
//! - [`Vault::open`] never prompts and never writes: the planner and executor call it.
//! - A vault that cannot be decrypted (wrong key, corrupted or tampered file) is an error, and the
//!   file is left exactly as it was: writes only happen through [`Vault::save`], which replaces the
//!   file atomically.
//! - [`Vault::fingerprint`] is the only form of a secret that may reach a plan file.

mod content_key;
mod format;
mod key;
pub mod placeholder;
mod resolved;
mod vault;

use std::path::PathBuf;

pub use content_key::{ContentKey, Undecryptable};
pub use key::{KEY_LEN, Key};
pub use placeholder::SealKey;
pub use resolved::{Drift, Resolved};
pub use vault::{
    DEFAULT_PATH, KEY_ENV, KeySource, NewKey, PASSPHRASE_ENV, Prompt, Settings, Unlock, Vault,
};

/// The shortest secret value that [`redact`] replaces. Shorter values ("on", "1", "yes") would
/// mangle ordinary output wherever those letters appear, and reveal little by being shown.
pub const REDACT_MIN_LEN: usize = 4;

/// The longest secret name accepted; names appear in plans and output, so keep them sane.
pub const NAME_MAX_LEN: usize = 128;

/// Everything that can go wrong with a vault. Messages are complete sentences for the CLI to print
/// after `error: `; none of them ever contains a key, a passphrase or a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no vault at {}; create one with `nexus secret init`", path.display())]
    NotFound { path: PathBuf },

    #[error(
        "a vault already exists at {}; refusing to overwrite it (move it away first to start over)",
        path.display()
    )]
    Exists { path: PathBuf },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A key file that other users can read protects nothing.
    #[error(
        "key file {} has mode {mode:04o}, so other users can read it; it must be readable only by its owner: chmod 600 {}",
        path.display(),
        path.display()
    )]
    KeyFileMode { path: PathBuf, mode: u32 },

    #[error("key file {} does not exist", path.display())]
    KeyFileMissing { path: PathBuf },

    /// `origin` says where the key came from ("key file X", "environment variable Y"), never what it held.
    #[error(
        "{origin} does not hold a vault key: expected 64 hex digits, base64 of 32 bytes, or 32 raw bytes"
    )]
    BadKey { origin: String },

    #[error(
        "the vault {} is encrypted with a key, and none was found: add key-file=\"FILE\" to the `vault` node of the configuration, or set {env}",
        path.display()
    )]
    NoKey { path: PathBuf, env: String },

    #[error(
        "the vault {} is protected by a passphrase: set {PASSPHRASE_ENV}, or run nexus in a terminal to be prompted for it",
        path.display()
    )]
    NeedPassphrase { path: PathBuf },

    #[error("the passphrase must be at least {min} characters long")]
    WeakPassphrase { min: usize },

    #[error("the passphrases do not match")]
    PassphraseMismatch,

    /// The key check value in the header does not match the key: almost always a wrong key.
    #[error(
        "cannot decrypt the vault {}: wrong key or passphrase (or the file is corrupted); used the {used}; the file was not changed",
        path.display()
    )]
    WrongKey { path: PathBuf, used: KeySource },

    /// The key is right but the file is not what it wrote, or the file is not well formed.
    #[error(
        "cannot decrypt the vault {}: the file is corrupted or was tampered with ({detail}); the file was not changed",
        path.display()
    )]
    Corrupted { path: PathBuf, detail: String },

    #[error("{} is not a nexus vault (its first line is not `nexus-vault VERSION`)", path.display())]
    NotAVault { path: PathBuf },

    #[error(
        "the vault {} has format version {found}; this nexus reads version {}; upgrade nexus",
        path.display(),
        format::VERSION
    )]
    UnsupportedVersion { path: PathBuf, found: u32 },

    #[error(
        "invalid secret name `{name}`: use 1 to {NAME_MAX_LEN} letters, digits, `_`, `-` and `.`"
    )]
    InvalidName { name: String },

    #[error("refusing to store an empty value for `{name}`")]
    EmptyValue { name: String },

    #[error("the value for `{name}` is not UTF-8 text")]
    NotUtf8 { name: String },

    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    #[error("cannot derive the key from the passphrase: {0}")]
    Kdf(String),

    #[error("cannot read the {what}: {source}")]
    Prompt {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Whether `name` is a valid secret name: `[A-Za-z0-9_.-]+`, at most [`NAME_MAX_LEN`] bytes (the
/// same rule the configuration applies to `(secret)"NAME"`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// [`valid_name`] as a `Result`, for callers that want the error message.
pub fn check_name(name: &str) -> Result<(), SecretError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(SecretError::InvalidName {
            name: name.chars().take(NAME_MAX_LEN + 1).collect(),
        })
    }
}

/// Replaces every occurrence of each secret value in `text` with `[redacted:NAME]`.
///
/// `secrets` holds `(name, value)` pairs. Values shorter than [`REDACT_MIN_LEN`] bytes are left
/// alone (see there). Values are matched without their surrounding whitespace, since a program
/// that prints a secret often trims it. Where values overlap, the longest wins, so a
/// secret that contains another is redacted whole. Only the literal text is matched: a secret
/// that a program prints transformed (base64, escaped, split across lines) is not found, so
/// redaction is a safety net, not a reason to print secrets.
pub fn redact(text: &str, secrets: &[(&str, &str)]) -> String {
    // Surrounding whitespace is not secret, and matching without it keeps line structure intact.
    let mut needles: Vec<(&str, &str)> = secrets
        .iter()
        .map(|&(name, value)| (name, value.trim()))
        .filter(|(_, v)| v.len() >= REDACT_MIN_LEN)
        .collect();
    if needles.is_empty() {
        return text.to_string();
    }
    // Longest first, so that at any position the longest matching value is the one replaced.
    needles.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for &(name, value) in &needles {
            if rest.starts_with(value) {
                out.push_str("[redacted:");
                out.push_str(name);
                out.push(']');
                rest = &rest[value.len()..];
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "API_KEY", "db.password", "x-1", "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(NAME_MAX_LEN + 1);
        for bad in ["", "a b", "a/b", "ä", "a=b", "$X", long.as_str()] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn redacts_every_occurrence_longest_first() {
        let text = "token=hunter22 again hunter22; short=ab; both=hunter22-extra";
        let out = redact(
            text,
            &[("T", "hunter22"), ("S", "ab"), ("X", "hunter22-extra")],
        );
        assert_eq!(
            out,
            "token=[redacted:T] again [redacted:T]; short=ab; both=[redacted:X]"
        );
    }

    #[test]
    fn redacts_trimmed_values_and_keeps_unicode() {
        let out = redact("päss: s3cret!\n", &[("P", "s3cret!\n")]);
        assert_eq!(out, "päss: [redacted:P]\n");
        assert_eq!(redact("nothing here", &[]), "nothing here");
    }
}
