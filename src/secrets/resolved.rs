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
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Resolved {
    /// Reads `names` from the vault, checking each against the fingerprint the plan recorded: a
    /// secret changed since planning makes the plan stale. Returns the names that changed.
    pub fn from_vault<'a>(
        vault: &Vault,
        expected: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Resolved, Vec<String>> {
        let mut values = BTreeMap::new();
        let mut changed = Vec::new();
        for (name, fingerprint) in expected {
            match (vault.get(name), vault.fingerprint_of(name)) {
                (Some(v), Some(fp)) if fingerprint.is_none_or(|want| want == fp) => {
                    values.insert(name.to_string(), Zeroizing::new(v.to_string()));
                }
                (None, _) | (_, None) => {
                    changed.push(format!("secret {name:?} is no longer in the vault"))
                }
                _ => changed.push(format!("secret {name:?} changed since the plan was made")),
            }
        }
        if changed.is_empty() {
            Ok(Resolved {
                values,
                seal_key: Some(vault.seal_key()),
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
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.as_str())
    }

    pub fn seal_key(&self) -> Option<&super::SealKey> {
        self.seal_key.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every value replaced by `[redacted:NAME]`.
    pub fn redact(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        let pairs: Vec<(&str, &str)> = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        super::redact(text, &pairs)
    }
}
