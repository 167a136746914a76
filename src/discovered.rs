//! Hosts found by discovery (Tailscale), as pinned in `nexus.lock` and handed to the planner in
//! [`crate::inputs::Inputs`]. Finding them is `crate::discovery`'s work; this is only the result,
//! so that inputs need not depend on how hosts are found.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// A digest of one group's discovery result (blake3 of its canonical JSON).
pub fn digest(hosts: &[DiscoveredHost]) -> String {
    let json = serde_json::to_vec(hosts).expect("json");
    blake3::hash(&json).to_hex().to_string()
}
