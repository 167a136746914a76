//! Everything a plan reads besides hosts: config files, local files (sources, templates,
//! uploads) and environment values. Read once, before planning, so planning stays pure and the
//! plan's manifest pins exactly these inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::{Manifest, PendingHandler};
use crate::syntax::files::Copied;

#[derive(Debug, Clone, Default)]
pub struct Inputs {
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Files copied byte for byte that are too large to hold: only what pins them.
    large: BTreeMap<PathBuf, crate::syntax::files::Digest>,
    env: BTreeMap<String, Option<String>>,
    /// Config files by display name, with their blake3.
    config_files: BTreeMap<String, String>,
    /// Keyed fingerprints of the vault secrets the configuration uses (never their values).
    secrets: BTreeMap<String, String>,
    base_dir: PathBuf,
    /// Hosts of tailscale groups, as pinned in nexus.lock.
    discovered: crate::discovered::Discovered,
    /// Content of `source-url`s, fetched and checked against nexus.lock.
    urls: BTreeMap<String, Vec<u8>>,
    /// Values of the secrets file contents use, read at plan time to compare rendered contents
    /// with the hosts' (never recorded: the plan gets placeholders and sealed hashes).
    secret_values: std::sync::Arc<crate::secrets::Resolved>,
    /// Per host, the resources whose content held secrets when nexus last wrote it (state).
    held_secrets: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Handlers still pending per host, from the state (recorded in the plan's hosts).
    pending_handlers: BTreeMap<String, Vec<PendingHandler>>,
    /// What planning derived from each distinct content so far (see [`Inputs::content_digest`]).
    digests: ContentDigests,
}

/// What planning derives from a file content's bytes alone, the same on every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// Lower-case hex sha256, as `sha256sum` prints it.
    pub sha256: String,
    /// Whether the bytes hold secret placeholders.
    pub placeholders: bool,
}

/// Digests by content, shared by every host planned from these inputs (hosts are planned
/// concurrently). Looking up compares bytes, which stops at the first difference: cheaper
/// than hashing them again.
#[derive(Debug, Clone, Default)]
struct ContentDigests(std::sync::Arc<std::sync::Mutex<BTreeMap<Vec<u8>, ContentDigest>>>);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

impl Inputs {
    /// Records a config file the plan was made from, with its blake3.
    pub fn add_config_file(&mut self, display: String, blake3: String) {
        self.config_files.insert(display, blake3);
    }

    /// Records a local file's bytes (or, for a large file copied byte for byte, its digest),
    /// read by `read` only the first time its path is added: each is read once however many
    /// resources name it.
    pub fn add_file(
        &mut self,
        path: &Path,
        read: impl FnOnce() -> Result<Copied, InputError>,
    ) -> Result<(), InputError> {
        if !self.files.contains_key(path) && !self.large.contains_key(path) {
            match read()? {
                Copied::Whole(bytes) => self.files.insert(path.to_path_buf(), bytes),
                Copied::Large(digest) => {
                    self.large.insert(path.to_path_buf(), digest);
                    None
                }
            };
        }
        Ok(())
    }

    /// What pins a local file too large to hold (see [`crate::plan::STREAM_OVER`]).
    pub fn large_file(&self, path: &Path) -> Option<&crate::syntax::files::Digest> {
        self.large.get(path)
    }

    /// Records an environment value that shapes desired state (None: unset).
    pub fn set_env(&mut self, name: String, value: Option<String>) {
        self.env.insert(name, value);
    }

    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The digest of `content`, made by `digest` only the first time these bytes are asked
    /// about: a fleet usually has the same contents on every host, and resources repeat them.
    pub fn content_digest(
        &self,
        content: &[u8],
        digest: impl FnOnce(&[u8]) -> ContentDigest,
    ) -> ContentDigest {
        let lock = || self.digests.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = lock().get(content) {
            return d.clone();
        }
        // Made outside the lock: other hosts' lookups need not wait for it.
        let d = digest(content);
        lock().insert(content.to_vec(), d.clone());
        d
    }

    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.get(name).and_then(|v| v.as_deref())
    }

    /// A path as the plan shows it: relative to the root config's directory when beneath it.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.base_dir)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    pub fn manifest(&self) -> Manifest {
        Manifest {
            config: self.config_files.clone(),
            files: self
                .files
                .iter()
                .map(|(p, b)| (self.relative(p), blake3::hash(b).to_hex().to_string()))
                .chain(
                    self.large
                        .iter()
                        .map(|(p, d)| (self.relative(p), d.blake3.clone())),
                )
                .collect(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            discovery: self
                .discovered
                .iter()
                .map(|(g, h)| (g.clone(), crate::discovered::digest(h)))
                .collect(),
            urls: self
                .urls
                .iter()
                .map(|(u, b)| (u.clone(), blake3::hash(b).to_hex().to_string()))
                .collect(),
        }
    }

    /// Takes discovery results and fetched URL content resolved against nexus.lock.
    pub fn set_pinned(
        &mut self,
        discovered: crate::discovered::Discovered,
        urls: BTreeMap<String, Vec<u8>>,
    ) {
        self.discovered = discovered;
        self.urls = urls;
    }

    /// Discovered hosts by tailscale group.
    pub fn discovered(&self) -> &crate::discovered::Discovered {
        &self.discovered
    }

    /// A discovered host by name.
    pub fn discovered_host(&self, name: &str) -> Option<&crate::discovered::DiscoveredHost> {
        self.discovered.values().flatten().find(|h| h.name == name)
    }

    /// The fetched content of a `source-url`.
    pub fn url(&self, url: &str) -> Option<&[u8]> {
        self.urls.get(url).map(Vec::as_slice)
    }

    /// Records the fingerprints of the secrets in use (from the vault, at plan time).
    pub fn set_secret_fingerprints(&mut self, fingerprints: BTreeMap<String, String>) {
        self.secrets = fingerprints;
    }

    pub fn secret_fingerprint(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }

    /// Inputs for tests and offline planning: given files and environment.
    pub fn from_parts(
        base_dir: PathBuf,
        files: BTreeMap<PathBuf, Vec<u8>>,
        env: BTreeMap<String, Option<String>>,
    ) -> Inputs {
        Inputs {
            files,
            large: BTreeMap::new(),
            env,
            config_files: BTreeMap::new(),
            secrets: BTreeMap::new(),
            base_dir,
            discovered: Default::default(),
            urls: BTreeMap::new(),
            secret_values: Default::default(),
            held_secrets: BTreeMap::new(),
            pending_handlers: BTreeMap::new(),
            digests: ContentDigests::default(),
        }
    }

    /// Hands the planner the handlers still pending on each host (from the state).
    pub fn set_pending_handlers(&mut self, pending: BTreeMap<String, Vec<PendingHandler>>) {
        self.pending_handlers = pending;
    }

    /// The handlers still pending on `host`.
    pub fn pending_handlers(&self, host: &str) -> &[PendingHandler] {
        self.pending_handlers.get(host).map_or(&[], Vec::as_slice)
    }

    /// Hands the planner the secret values (and seal key) for contents that hold secrets.
    pub fn set_secret_values(&mut self, values: std::sync::Arc<crate::secrets::Resolved>) {
        self.secret_values = values;
    }

    pub fn secret_values(&self) -> &crate::secrets::Resolved {
        &self.secret_values
    }

    /// The same values, shared with the planner of each host.
    pub fn shared_secret_values(&self) -> std::sync::Arc<crate::secrets::Resolved> {
        self.secret_values.clone()
    }

    /// Hands the planner, per host, the resources whose content held secrets when last written.
    pub fn set_held_secrets(&mut self, held: BTreeMap<String, std::collections::BTreeSet<String>>) {
        self.held_secrets = held;
    }

    /// Whether resource `id` on `host` held secrets when nexus last wrote it.
    pub fn held_secrets(&self, host: &str, id: &str) -> bool {
        self.held_secrets.get(host).is_some_and(|s| s.contains(id))
    }
}
