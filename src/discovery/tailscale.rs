//! Tailscale discovery: `tailscale status --json`, peers filtered by ACL tag and (by default)
//! online state, mapped to SSH hosts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::{DiscoveredHost, DiscoveryError};
use crate::config::Tailscale;

/// The parts of `tailscale status --json` nexus reads (Tailscale's field names).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(rename = "Self", default)]
    pub self_: Option<Node>,
    /// Peers keyed by node key.
    #[serde(default)]
    pub peer: Option<BTreeMap<String, Node>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub host_name: String,
    #[serde(rename = "DNSName", default)]
    pub dns_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    pub tailscale_ips: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub online: bool,
    #[serde(rename = "OS", default)]
    pub os: String,
}

/// Parses `tailscale status --json` output.
pub fn parse_status(json: &str) -> Result<Status, serde_json::Error> {
    serde_json::from_str(json)
}

/// A name usable in nexus: lowercase letters, digits, `-`, `_`; other characters become `-`.
fn clean_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

fn host_of(node: &Node, user: Option<&str>) -> Option<DiscoveredHost> {
    let dns = node.dns_name.trim_end_matches('.').to_string();
    let label = dns.split('.').next().unwrap_or("");
    let name = if label.is_empty() {
        clean_name(&node.host_name)
    } else {
        clean_name(label)
    };
    let ips = node.tailscale_ips.as_deref().unwrap_or(&[]);
    // Only what parses as an IP address is used: the status comes from another program, and an
    // address reaches the SSH connection and the plan (IPv4 preferred, as tailscale's own ssh does).
    let parsed: Vec<std::net::IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    let address = parsed
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(parsed.first())?
        .to_string();
    if name.is_empty() {
        return None;
    }
    Some(DiscoveredHost {
        name,
        address,
        user: user.map(str::to_string),
        dns_name: dns,
        os: node.os.clone(),
    })
}

/// The peers a tailscale group selects: any of its tags (every peer when it names none), online
/// ones only unless `online-only=#false`; sorted by name. This machine (`Self`) is not a peer.
pub fn select(status: &Status, ts: &Tailscale) -> Vec<DiscoveredHost> {
    let mut out: Vec<DiscoveredHost> = status
        .peer
        .iter()
        .flat_map(|p| p.values())
        .filter(|n| !ts.online_only || n.online)
        .filter(|n| {
            ts.tags.is_empty()
                || n.tags.as_deref().unwrap_or(&[]).iter().any(|t| {
                    let t = t.strip_prefix("tag:").unwrap_or(t);
                    ts.tags.iter().any(|want| want == t)
                })
        })
        .filter_map(|n| host_of(n, ts.user.as_deref()))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The command to run: a `binary` with a `/` is a path (relative to the config directory);
/// otherwise it is looked up on PATH.
pub fn binary_path(binary: &str, base_dir: &Path) -> PathBuf {
    let p = PathBuf::from(binary);
    if binary.contains('/') && p.is_relative() {
        base_dir.join(p)
    } else {
        p
    }
}

/// Runs `BINARY status --json` and selects the group's hosts.
pub fn discover(ts: &Tailscale, base_dir: &Path) -> Result<Vec<DiscoveredHost>, DiscoveryError> {
    let group = ts.name.value.clone();
    let out = Command::new(binary_path(&ts.binary, base_dir))
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiscoveryError::Run {
            group: group.clone(),
            binary: ts.binary.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DiscoveryError::Failed {
            group,
            binary: ts.binary.clone(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let status = parse_status(&text).map_err(|reason| DiscoveryError::Parse {
        group: group.clone(),
        reason,
    })?;
    Ok(select(&status, ts))
}
