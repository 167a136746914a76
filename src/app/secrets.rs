//! The one secret resolver. Every command says which secrets it needs (resource values, sudo
//! passwords, webhook credentials), and this reads each of them once, from the one vault the
//! configuration or the saved plan names. Consumers (resources, sudo, notifiers, preflight) then
//! look values up in the same [`Resolved`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, Value};
use crate::exit::Exit;
use crate::plan::{Connection, PlanNotifier, VaultRef};
use crate::secrets::{Resolved, SecretError, Settings, Unlock, Vault};

/// Where the vault is.
pub enum Source<'a> {
    /// The configuration's `vault` node (plan, run, preflight).
    Config(&'a Config),
    /// The vault a saved plan names, relative to its configuration's directory (apply).
    Plan {
        vault: Option<&'a VaultRef>,
        base: &'a Path,
    },
}

/// The secrets one command needs, each named once.
#[derive(Debug, Default)]
pub struct Needs {
    /// Values the command cannot do without, with the fingerprint a plan pinned, if any.
    required: BTreeMap<String, Option<String>>,
    /// Webhook credentials: a missing one is reported where it is used, never fatal.
    optional: BTreeSet<String>,
    /// Read every value of the vault, if there is one, to recognise them on hosts and in output.
    recognise: bool,
}

impl Needs {
    /// What applying `plan` reads: the secrets it pinned (each still with the value it was made
    /// with), its hosts' sudo passwords and its notifiers' credentials; every secret known to the
    /// vault is recognised, so a pre-image that holds one is kept encrypted.
    pub fn of_plan(plan: &crate::plan::Plan) -> Needs {
        let mut needs = Needs::default();
        for (name, fingerprint) in &plan.inputs.secrets {
            needs.require(name, Some(fingerprint));
        }
        needs.sudo(plan.hosts.iter().map(|h| &h.connection));
        needs.notifiers(&plan.notify);
        needs.recognise_all();
        needs
    }

    /// Needs `name`; with `fingerprint`, its value must still be the one the plan was made with.
    pub fn require(&mut self, name: &str, fingerprint: Option<&str>) {
        let slot = self.required.entry(name.to_string()).or_default();
        if fingerprint.is_some() {
            *slot = fingerprint.map(str::to_string);
        }
    }

    /// The sudo passwords that come from the vault, for these hosts.
    pub fn sudo<'a>(&mut self, connections: impl IntoIterator<Item = &'a Connection>) {
        for c in connections {
            if let Some(Value::Secret(n)) = &c.sudo_password {
                self.require(n, None);
            }
        }
    }

    /// The webhook URLs and headers that come from the vault.
    pub fn notifiers(&mut self, notifiers: &[PlanNotifier]) {
        for n in notifiers {
            for v in std::iter::once(&n.url).chain(n.headers.values()) {
                if let Value::Secret(name) = v {
                    self.optional.insert(name.clone());
                }
            }
        }
    }

    /// Asks for every value of the vault, when a vault exists: host content and output that
    /// hold one are then hidden, whether or not the configuration uses it (docs/secrets.md).
    pub fn recognise_all(&mut self) {
        self.recognise = true;
    }

    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.optional.is_empty() && !self.recognise
    }
}

/// Why the secrets a command needs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the command needs secrets, but {0}")]
    Vault(SecretError),
    #[error("secret {0:?} is not in the vault; add it with `nexus secret set {0}`")]
    Missing(String),
    #[error("the plan uses secrets but names no vault")]
    NoVault,
    /// A pinned secret changed (or disappeared) since planning: the plan is stale.
    #[error("the plan is stale:\n  {}\nNothing was executed. Plan again.", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Changed(Vec<crate::secrets::Drift>),
}

impl SecretsError {
    pub fn exit(&self) -> Exit {
        match self {
            SecretsError::Vault(_) | SecretsError::Missing(_) => Exit::Failed,
            SecretsError::NoVault => Exit::PlanRefused,
            SecretsError::Changed(_) => Exit::PlanStale,
        }
    }
}

/// The vault of `source`, opened with the key or passphrase from the environment.
pub fn open(
    source: &Source<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vault, SecretsError> {
    Vault::open_at(&settings(source)?, &Unlock::env(env)).map_err(SecretsError::Vault)
}

/// Where the vault of `source` is and how it is unlocked.
fn settings(source: &Source<'_>) -> Result<Settings, SecretsError> {
    Ok(match source {
        Source::Config(cfg) => Settings::from_config(cfg.vault.as_ref(), &cfg.base_dir),
        Source::Plan { vault, base } => {
            let v = vault.ok_or(SecretsError::NoVault)?;
            Settings {
                path: base.join(&v.path),
                key_file: v.key_file.as_ref().map(|k| base.join(k)),
                key_env: v.key_env.clone(),
            }
        }
    })
}

/// Reads every secret in `needs` once. A required secret that is missing or changed since the
/// plan pinned it is an error; an optional one is left out, and its user reports it.
pub fn resolve(
    source: &Source<'_>,
    needs: &Needs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<Resolved>, SecretsError> {
    if needs.is_empty() {
        return Ok(Default::default());
    }
    let exists = settings(source).is_ok_and(|s| s.path.exists());
    if needs.required.is_empty() && needs.optional.is_empty() && !exists {
        return Ok(Default::default());
    }
    let vault = match open(source, env) {
        Ok(v) => v,
        // Webhooks and recognition alone never stop a command: deliveries say why they were not
        // sent, and a vault that cannot be read leaves nothing to recognise (docs/secrets.md).
        Err(SecretsError::Vault(_) | SecretsError::NoVault) if needs.required.is_empty() => {
            let mut blind = Resolved::default();
            if exists {
                blind.set_blind();
            }
            return Ok(Arc::new(blind));
        }
        Err(e) => return Err(e),
    };
    resolve_in(&vault, needs).map(Arc::new)
}

/// [`resolve`] from a vault already open.
pub fn resolve_in(vault: &Vault, needs: &Needs) -> Result<Resolved, SecretsError> {
    let optional = needs
        .optional
        .iter()
        .filter(|n| !needs.required.contains_key(*n) && vault.get(n).is_some())
        .map(|n| (n.as_str(), None));
    let required = needs
        .required
        .iter()
        .map(|(n, fp)| (n.as_str(), fp.as_deref()));
    let mut resolved =
        Resolved::from_vault(vault, required.chain(optional)).map_err(SecretsError::Changed)?;
    if needs.recognise {
        resolved.learn_all(vault);
    }
    Ok(resolved)
}

/// At plan time: the fingerprint of every secret the configuration uses (what the plan records,
/// never the values). A secret missing from the vault is an error here, before any host is
/// contacted.
pub fn fingerprints(
    vault: &Vault,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, SecretsError> {
    names
        .iter()
        .map(|n| {
            vault
                .fingerprint_of(n)
                .map(|fp| (n.clone(), fp))
                .ok_or_else(|| SecretsError::Missing(n.clone()))
        })
        .collect()
}
