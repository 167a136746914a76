//! The secret values one run uses, read from the vault when the run executes; and the redaction
//! of those values from everything the run prints or records.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::Vault;

/// Secret values by name. Only ever built at apply (or `run`) time.
#[derive(Default)]
pub struct Resolved {
    values: BTreeMap<String, Zeroizing<String>>,
    /// Present when read from a vault: seals hashes of contents that hold secrets.
    seal_key: Option<super::SealKey>,
    /// Present when read from a vault: encrypts pre-images that hold secrets.
    content_key: Option<std::sync::Arc<super::ContentKey>>,
    /// Every value of the vault, whether the command uses it or not, so that host content and
    /// output that hold one are recognised and hidden (never used for anything else).
    known: BTreeMap<String, Zeroizing<String>>,
    /// A vault exists but could not be opened: nothing on a host can be checked for its values.
    blind: bool,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How a secret a plan pinned differs from the vault at apply time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Drift {
    #[error("secret {0:?} is no longer in the vault")]
    Gone(String),
    #[error("secret {0:?} changed since the plan was made")]
    Changed(String),
}

impl Resolved {
    /// Reads `names` from the vault, checking each against the fingerprint the plan recorded: a
    /// secret changed since planning makes the plan stale. Returns how each such secret drifted.
    pub fn from_vault<'a>(
        vault: &Vault,
        expected: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Resolved, Vec<Drift>> {
        let mut values = BTreeMap::new();
        let mut changed = Vec::new();
        for (name, fingerprint) in expected {
            match (vault.get(name), vault.fingerprint_of(name)) {
                (Some(v), Some(fp)) if fingerprint.is_none_or(|want| want == fp) => {
                    values.insert(name.to_string(), Zeroizing::new(v.to_string()));
                }
                (None, _) | (_, None) => changed.push(Drift::Gone(name.to_string())),
                _ => changed.push(Drift::Changed(name.to_string())),
            }
        }
        if changed.is_empty() {
            Ok(Resolved {
                values,
                seal_key: Some(vault.seal_key()),
                content_key: Some(std::sync::Arc::new(vault.content_key())),
                known: BTreeMap::new(),
                blind: false,
            })
        } else {
            Err(changed)
        }
    }

    /// Values given directly, with a seal key derived from `key`: for tests and offline planning,
    /// where no vault file exists.
    pub fn from_pairs(pairs: &[(&str, &str)], key: [u8; 32]) -> Resolved {
        Resolved {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_string())))
                .collect(),
            seal_key: Some(super::SealKey::derive(&key)),
            content_key: Some(std::sync::Arc::new(super::ContentKey::new(
                blake3::derive_key("nexus test content key", &key),
            ))),
            known: BTreeMap::new(),
            blind: false,
        }
    }

    /// Learns every value of `vault`, to recognise them (see [`Resolved::recognises`]).
    pub fn learn_all(&mut self, vault: &Vault) {
        for name in vault.names() {
            if let Some(v) = vault.get(name) {
                self.known
                    .insert(name.to_string(), Zeroizing::new(v.to_string()));
            }
        }
        self.seal_key.get_or_insert_with(|| vault.seal_key());
        self.content_key
            .get_or_insert_with(|| std::sync::Arc::new(vault.content_key()));
    }

    /// Marks that a vault exists whose values could not be read.
    pub fn set_blind(&mut self) {
        self.blind = true;
    }

    /// A vault exists that could not be opened: host content cannot be checked for its values.
    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// Whether any secret value is known at all.
    pub fn knows_any(&self) -> bool {
        !self.values.is_empty() || !self.known.is_empty()
    }

    /// Whether `bytes` hold any known secret value (trimmed, as [`super::redact`] matches it).
    pub fn recognises(&self, bytes: &[u8]) -> bool {
        self.pairs().iter().any(|(_, v)| {
            let v = v.trim().as_bytes();
            v.len() >= super::REDACT_MIN_LEN && bytes.windows(v.len()).any(|w| w == v)
        })
    }

    /// Every known `(name, value)`: the values the command uses and the rest of the vault.
    fn pairs(&self) -> Vec<(&str, &str)> {
        self.values
            .iter()
            .chain(self.known.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.as_str())
    }

    pub fn seal_key(&self) -> Option<&super::SealKey> {
        self.seal_key.as_ref()
    }

    pub fn content_key(&self) -> Option<&super::ContentKey> {
        self.content_key.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known value replaced by `[redacted:NAME]`.
    pub fn redact(&self, text: &str) -> String {
        if !self.knows_any() {
            return text.to_string();
        }
        super::redact(text, &self.pairs())
    }
}
