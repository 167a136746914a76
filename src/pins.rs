//! `nexus.lock`: the pinned results of external inputs (Tailscale discovery, `source-url`
//! content hashes), next to the configuration file. Deterministic JSON (sorted maps, fixed field
//! order), written atomically and only when it changes. `nexus lock` re-resolves everything;
//! `nexus plan` refreshes discovery and pins new URLs; `nexus plan --locked` refuses any change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::discovery::{self, Discovered, DiscoveredHost};

pub const FILE_NAME: &str = "nexus.lock";

/// Why nexus.lock could not be read, refreshed or written.
#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tailscale group{} {} not in {FILE_NAME}: run `nexus lock` (or `nexus plan`) to discover {}",
        if groups.len() == 1 { "" } else { "s" },
        groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
        if groups.len() == 1 { "its hosts" } else { "their hosts" }
    )]
    NotDiscovered { groups: Vec<String> },
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    /// `reason` is the whole chain of causes.
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    #[error("blake3 mismatch for {url}: the configuration expects {want}, the content has {got}")]
    Mismatch {
        url: String,
        want: String,
        got: String,
    },
    #[error(
        "content of {url} changed since {} pinned it (pinned blake3 {pinned}, now {got}); run `nexus lock` to accept the new content",
        path.display()
    )]
    ContentChanged {
        url: String,
        path: PathBuf,
        pinned: String,
        got: String,
    },
    #[error("{} is missing and --locked forbids creating it; run `nexus lock` first", .0.display())]
    LockedMissing(PathBuf),
    #[error(
        "{} is out of date and --locked forbids changing it:\n  {}\nrun `nexus lock` to update it",
        path.display(),
        differences.join("\n  ")
    )]
    LockedChanged {
        path: PathBuf,
        differences: Vec<String>,
    },
}
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub version: u32,
    /// Hosts found per tailscale group.
    #[serde(default)]
    pub discovery: Discovered,
    /// `source-url` → blake3 of its content.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
}

impl Default for Pins {
    fn default() -> Self {
        Pins {
            version: VERSION,
            discovery: Discovered::new(),
            urls: BTreeMap::new(),
        }
    }
}

/// How far resolving may change the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `nexus lock`: re-discover and re-pin everything.
    Update,
    /// `nexus plan`/`run`: refresh discovery, pin URLs not pinned yet; a pinned URL whose content
    /// changed is an error.
    Refresh,
    /// `--locked`: any change (or a missing nexus.lock) is an error.
    Locked,
}

/// The outcome of resolving: the pins, the fetched content of every URL, and whether the lock
/// file was (re)written.
#[derive(Debug, Default)]
pub struct Resolved {
    pub pins: Pins,
    pub content: BTreeMap<String, Vec<u8>>,
    pub written: bool,
}

/// `nexus.lock` next to the configuration file.
pub fn path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .map(|p| p.join(FILE_NAME))
        .unwrap_or_else(|| PathBuf::from(FILE_NAME))
}

pub fn read(path: &Path) -> Result<Option<Pins>, PinsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| PinsError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PinsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The hosts nexus.lock pins for tailscale groups, for commands that connect without planning
/// (`facts`, `preflight`): they read the lock and never refresh it. A missing lock pins nothing.
pub fn pinned_discovery(config: &Path) -> Result<Discovered, PinsError> {
    Ok(read(&path_for(config))?
        .map(|p| p.discovery)
        .unwrap_or_default())
}

/// Resolves tailscale group names against pinned discovery: the hosts of every pinned group, or
/// an error naming the groups nexus.lock does not know.
pub fn expand_pinned(groups: &[String], pinned: &Discovered) -> Result<Vec<String>, PinsError> {
    let missing: Vec<String> = groups
        .iter()
        .filter(|g| !pinned.contains_key(*g))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(PinsError::NotDiscovered { groups: missing });
    }
    Ok(groups
        .iter()
        .flat_map(|g| pinned[g].iter().map(|h| h.name.clone()))
        .collect())
}

pub fn to_text(pins: &Pins) -> String {
    format!("{}\n", serde_json::to_string_pretty(pins).expect("json"))
}

/// Writes atomically: a temporary file in the same directory, then rename.
pub fn write(path: &Path, pins: &Pins) -> Result<(), PinsError> {
    let tmp = path.with_file_name(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let res = std::fs::write(&tmp, to_text(pins)).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(source) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(PinsError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Fetches a URL's content (any 2xx response; redirects followed).
pub async fn fetch(url: &str) -> Result<Vec<u8>, PinsError> {
    let failed = |reason: String| PinsError::Fetch {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| PinsError::Client(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| failed(chain(&e)))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

fn names(hosts: &[DiscoveredHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

/// What differs between the pinned and the current pins, one line each.
pub fn differences(old: &Pins, new: &Pins) -> Vec<String> {
    let mut out = Vec::new();
    let groups: std::collections::BTreeSet<&String> =
        old.discovery.keys().chain(new.discovery.keys()).collect();
    for g in groups {
        let (a, b) = (old.discovery.get(g), new.discovery.get(g));
        if a == b {
            continue;
        }
        let (a, b) = (
            a.map(|v| v.as_slice()).unwrap_or(&[]),
            b.map(|v| v.as_slice()).unwrap_or(&[]),
        );
        let added: Vec<&str> = names(b)
            .into_iter()
            .filter(|n| !names(a).contains(n))
            .collect();
        let removed: Vec<&str> = names(a)
            .into_iter()
            .filter(|n| !names(b).contains(n))
            .collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("new host(s) {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("host(s) {} gone", removed.join(", ")));
        }
        if parts.is_empty() {
            parts.push("host details changed".into());
        }
        out.push(format!(
            "tailscale group `{g}` discovery changed: {}",
            parts.join("; ")
        ));
    }
    let urls: std::collections::BTreeSet<&String> =
        old.urls.keys().chain(new.urls.keys()).collect();
    for u in urls {
        match (old.urls.get(u), new.urls.get(u)) {
            (Some(a), Some(b)) if a != b => out.push(format!(
                "content of {u} changed: pinned blake3 {a}, now {b}"
            )),
            (None, Some(_)) => out.push(format!("{u} is not pinned")),
            (Some(_), None) => out.push(format!("{u} is pinned but no longer used")),
            _ => {}
        }
    }
    if old.version != new.version {
        out.push(format!("format version {} → {}", old.version, new.version));
    }
    out
}

/// Resolves the configuration's external inputs against `nexus.lock` at `path`, writing it
/// (unless `Locked`) when it changed. Nothing is written for a configuration without external
/// inputs and no existing nexus.lock.
pub async fn resolve(cfg: &Config, path: &Path, mode: Mode) -> Result<Resolved, PinsError> {
    let existing = read(path)?;
    let groups = discovery::used_groups(cfg);
    let urls = cfg.source_urls();
    if groups.is_empty() && urls.is_empty() && (existing.is_none() || mode != Mode::Update) {
        return Ok(Resolved::default());
    }
    if mode == Mode::Locked && existing.is_none() {
        return Err(PinsError::LockedMissing(path.to_path_buf()));
    }
    let base_dir = cfg.base_dir.clone();
    let discovered = discovery::discover(cfg, &base_dir)?;
    let mut pins = Pins {
        version: VERSION,
        discovery: discovered,
        urls: BTreeMap::new(),
    };
    let mut content = BTreeMap::new();
    for (url, expected) in urls {
        let bytes = fetch(&url).await?;
        let got = blake3::hash(&bytes).to_hex().to_string();
        if let Some(want) = &expected
            && !want.eq_ignore_ascii_case(&got)
        {
            return Err(PinsError::Mismatch {
                url,
                want: want.clone(),
                got,
            });
        }
        if mode == Mode::Refresh
            && let Some(pinned) = existing.as_ref().and_then(|p| p.urls.get(&url))
            && *pinned != got
        {
            return Err(PinsError::ContentChanged {
                url,
                path: path.to_path_buf(),
                pinned: pinned.clone(),
                got,
            });
        }
        pins.urls.insert(url.clone(), got);
        content.insert(url, bytes);
    }
    let changed = existing.as_ref() != Some(&pins);
    if changed && mode == Mode::Locked {
        let old = existing.expect("checked above");
        return Err(PinsError::LockedChanged {
            path: path.to_path_buf(),
            differences: differences(&old, &pins),
        });
    }
    if changed {
        write(path, &pins)?;
    }
    Ok(Resolved {
        pins,
        content,
        written: changed,
    })
}
