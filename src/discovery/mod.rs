//! External host discovery (Tailscale). Discovery runs before planning; its results are pinned in
//! `nexus.lock` (see [`crate::pins`]) and handed to the planner through [`crate::inputs::Inputs`],
//! so planning itself stays a pure function of its inputs.

pub mod tailscale;

use std::path::Path;

use crate::config::Config;

pub use crate::discovered::{Discovered, DiscoveredHost, digest};

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
