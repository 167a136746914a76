//! External host discovery (Tailscale). Discovery runs before planning; its results are pinned in
//! `nexus.lock` (see [`crate::pins`]) and handed to the planner through [`crate::inputs::Inputs`],
//! so planning itself stays a pure function of its inputs.

pub mod tailscale;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// A host found by discovery, as pinned in `nexus.lock` and recorded in the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DiscoveredHost {
    /// The host's name in nexus: the first label of its MagicDNS name (else its host name).
    pub name: String,
    /// Where SSH connects: the node's first Tailscale IPv4 address (else its first address).
    pub address: String,
    /// SSH user: the tailscale group's `user`, else none (defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The node's MagicDNS name, without the trailing dot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
}

/// Discovered hosts by tailscale group name, each list sorted by host name.
pub type Discovered = BTreeMap<String, Vec<DiscoveredHost>>;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("tailscale group `{group}`: cannot run `{binary} status --json`: {reason}")]
    Run {
        group: String,
        binary: String,
        reason: String,
    },
    #[error("tailscale group `{group}`: `{binary} status --json` failed ({status}): {stderr}")]
    Failed {
        group: String,
        binary: String,
        status: String,
        stderr: String,
    },
    #[error("tailscale group `{group}`: cannot parse `tailscale status --json` output: {reason}")]
    Parse {
        group: String,
        reason: serde_json::Error,
    },
    #[error(
        "tailscale group `{group}`: discovered host `{host}` has the name of a configured host or group"
    )]
    Conflict { group: String, host: String },
}

/// The tailscale groups the configuration's tasks target (through groups too), in config order.
/// Groups nothing targets are not discovered.
pub fn used_groups(cfg: &Config) -> Vec<String> {
    let mut used: Vec<String> = Vec::new();
    for t in &cfg.tasks {
        for d in cfg.task_targets(t).discovered {
            if !used.contains(&d) {
                used.push(d);
            }
        }
    }
    cfg.tailscale
        .iter()
        .map(|t| t.name.value.clone())
        .filter(|n| used.contains(n))
        .collect()
}

/// Runs discovery for every tailscale group the tasks use. `base_dir` resolves relative
/// `binary=` paths (those containing a `/`).
pub fn discover(cfg: &Config, base_dir: &Path) -> Result<Discovered, DiscoveryError> {
    let mut out = Discovered::new();
    for name in used_groups(cfg) {
        let ts = cfg.tailscale_group(&name).expect("used group exists");
        let hosts = tailscale::discover(ts, base_dir)?;
        for h in &hosts {
            if cfg.host(&h.name).is_some()
                || cfg.group(&h.name).is_some()
                || cfg.tailscale_group(&h.name).is_some()
                || h.name == crate::config::LOCAL_HOST
            {
                return Err(DiscoveryError::Conflict {
                    group: name.clone(),
                    host: h.name.clone(),
                });
            }
        }
        out.insert(name, hosts);
    }
    Ok(out)
}

/// A digest of one group's discovery result (blake3 of its canonical JSON).
pub fn digest(hosts: &[DiscoveredHost]) -> String {
    let json = serde_json::to_vec(hosts).expect("json");
    blake3::hash(&json).to_hex().to_string()
}
