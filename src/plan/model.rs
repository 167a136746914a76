//! The plan: what will run where, with what reason, diff and commands. This is what `plan.lock`
//! stores (see docs/plan-format.md). Field order is the serialization order, so encoding is
//! deterministic; maps are BTreeMaps for the same reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::step::{Action, FieldChange, ProbeBatch, ProbeExists, Retry, Step};
use super::vocab::{BatchSize, HostKeyChecking, OnFailure, Percent, Strategy, Value};

/// Plan format version. A reader refuses another major version; apply also refuses another
/// minor version (docs/plan-format.md, "Versioning").
pub const FORMAT_VERSION: &str = "1.2";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub nexus_version: String,
    /// The root config file, as named on the command line (never absolute unless given so).
    pub config: String,
    pub selection: Selection,
    pub inputs: Manifest,
    /// SSH settings from the config's `defaults`, so apply needs no working tree.
    #[serde(default)]
    pub ssh: SshSettings,
    /// Where apply finds the vault for the secrets the plan refers to (paths relative to the
    /// config's directory, as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultRef>,
    /// Where apply keeps its state when not in the default SQLite file: references to env and
    /// vault values, never the URL's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRef>,
    /// Webhooks to notify after apply: references to env and vault values, never the URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<PlanNotifier>,
    /// Set on a plan made by `nexus rollback`: what it restores (docs/rollback.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Tasks in execution order: each after all of its dependencies.
    pub tasks: Vec<TaskPlan>,
    pub hosts: Vec<HostPlan>,
    /// Contents uploaded by steps, by blake3 hex, base64-encoded.
    pub blobs: BTreeMap<String, String>,
    /// Contents too large to carry, by blake3 hex: apply reads them from the local file named
    /// (docs/plan-format.md, "Streamed contents").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streamed: BTreeMap<String, StreamedContent>,
    pub summary: Summary,
}

/// A content the plan pins but does not carry: a local file over [`STREAM_OVER`] bytes, copied
/// byte for byte (`upload`, `file source=`). Its blake3 is its key in [`Plan::streamed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamedContent {
    /// The local file, as the plan names it: relative to the root config's directory when
    /// beneath it, as downloads' destinations are.
    pub source: String,
    pub size: u64,
    /// Lower-case hex sha256, which the host checks before the rename.
    pub sha256: String,
}

/// Local files copied byte for byte and larger than this are pinned by the plan, not carried
/// in it; apply streams them (SFTP, or stdin on a host without it).
pub const STREAM_OVER: u64 = 1 << 20;

/// What a rollback plan restores: every host as it was after run `to`, undoing `runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub to: i64,
    pub runs: Vec<i64>,
    /// Changes that cannot be undone, by host: `label: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub irreversible: Vec<Irreversible>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Irreversible {
    pub host: String,
    pub run: i64,
    pub resource: String,
    pub reason: String,
}

/// What the user asked to plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub tasks: Vec<String>,
    pub targets: Vec<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPlan {
    pub name: String,
    /// Dependencies that are part of this plan (ones removed by a tag filter are not waited for).
    pub deps: Vec<String>,
    pub hosts: Vec<String>,
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<BatchSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fail: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    #[serde(default)]
    pub continue_on_error: bool,
    /// `on-failure="rollback"`: a stopped rollout undoes what the run changed in the task
    /// (format 1.2, optional).
    #[serde(default, skip_serializing_if = "OnFailure::is_stop")]
    pub on_failure: OnFailure,
    /// The task's `timeout`: a limit on the whole task on each host (format 1.1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::step::opt_secs"
    )]
    pub timeout: Option<std::time::Duration>,
}

/// Connection settings shared by all hosts. Paths are as written in the config, relative to the
/// root config file's directory (`Plan::config`'s directory at apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_checking: Option<HostKeyChecking>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::step::opt_secs"
    )]
    pub connect_timeout: Option<std::time::Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::step::opt_secs"
    )]
    pub keepalive: Option<std::time::Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNotifier {
    pub name: String,
    pub url: Value,
    pub template: super::vocab::NotifyTemplate,
    pub on: Vec<super::vocab::NotifyEvent>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    #[serde(with = "super::step::opt_secs", default)]
    pub timeout: Option<std::time::Duration>,
    pub retries: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRef {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

/// The configuration's `state` setting, with its project resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    pub url: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Value>,
    pub project: String,
}

/// A project's default key: the name of its configuration's directory (a repository's name in
/// a CI checkout), or `default`.
pub fn default_project(base_dir: &std::path::Path) -> String {
    std::fs::canonicalize(base_dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// How a host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Commands run on this machine (the `local` host).
    Local,
    Ssh,
}

impl TransportKind {
    /// The name the plan file and renderings use.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Local => "local",
            TransportKind::Ssh => "ssh",
        }
    }
}

/// How apply (and `run`, and planning itself) reaches a host: everything needed without the
/// working tree. Derived from the configuration in one place, `planner::connection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub transport: TransportKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Identity as written in the config (may start with `~/`); `-i` overrides at apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<Box<Connection>>,
    /// The host's own `connect-timeout` (format 1.1); the defaults' is in [`SshSettings`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::step::opt_secs"
    )]
    pub connect_timeout: Option<std::time::Duration>,
    #[serde(default)]
    pub become_user: String,
    /// Where the sudo password comes from (never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_password: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: String,
    pub connection: Connection,
    /// blake3 of the facts the plan was computed from.
    pub facts_digest: String,
    /// Whether the probe runs with sudo.
    pub probe_sudo: bool,
    /// Handlers notified on this host by an earlier run that have not succeeded since (format
    /// 1.1): apply runs them after the host's first task even when nothing new notifies them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_handlers: Vec<PendingHandler>,
    pub resources: Vec<PlannedResource>,
}

/// Handlers pending from earlier runs are an input of planning; the plan records them per host.
/// A handler still pending on a host, as the state recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHandler {
    pub handler: String,
    /// The run whose change first notified it.
    pub since_run: i64,
    /// The label of that change.
    pub notified_by: String,
}

/// What the plan records about its inputs: enough to tell that any of them changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Config files (root and imports), relative to the root config's directory, with blake3.
    pub config: BTreeMap<String, String>,
    /// Local files read by resources, relative to the root config's directory, with blake3.
    pub files: BTreeMap<String, String>,
    /// Environment values read (`null` when unset).
    pub env: BTreeMap<String, Option<String>>,
    /// Vault secrets used, with keyed fingerprints: a changed secret changes the plan without
    /// revealing anything about its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Tailscale groups used, with the digest of the hosts discovered (pinned in nexus.lock).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub discovery: BTreeMap<String, String>,
    /// `source-url`s used, with the blake3 of their content (pinned in nexus.lock).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub urls: BTreeMap<String, String>,
}

/// Why a resource is in a host's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A resource of a task: runs in order.
    Task,
    /// A handler's resource: runs once after its task when a notifying resource changed.
    Handler,
    /// Runs after the canary batch (or each rolling batch); a failure stops the rollout.
    HealthCheck,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedResource {
    /// Unique within the host: `TASK#N` (N counts from 1 in the task), `handler:NAME#N`.
    pub key: String,
    /// The task, or for a handler resource, the handler's name.
    pub task: String,
    pub role: Role,
    /// Resource identity (`file:/etc/motd`).
    pub id: String,
    /// Resource type (`file`).
    pub kind: super::vocab::ResourceType,
    pub label: String,
    pub action: Action,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// The probe snippet, re-run at apply to detect drift.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub probe: String,
    /// Path facts the probe gathers for all resources of the host at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_batch: Option<ProbeBatch>,
    /// The snippet runs in the probe's shell rather than a subshell.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe_inline: bool,
    /// Paths whose existence the probe tests for all resources of the host at once (a
    /// command's `creates` and `removes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_exists: Vec<ProbeExists>,
    /// Fingerprint of the observed state; apply refuses the plan if a re-probe differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// Handlers this resource notifies when it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// What `nexus rollback` runs to undo this resource's change (`command`'s `undo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<Step>,
    #[serde(default)]
    pub retry: Retry,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub run: usize,
    pub no_op: usize,
}

impl Summary {
    pub fn add(&mut self, a: Action) {
        match a {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Delete => self.delete += 1,
            Action::Run => self.run += 1,
            Action::NoOp => self.no_op += 1,
        }
    }

    /// Changes exclude `run`: commands that run every time are not drift.
    pub fn changes(&self) -> usize {
        self.create + self.update + self.delete
    }
}

#[cfg(test)]
impl PlannedResource {
    /// For tests: the first resource of task `t`, an update of what `kind` names `subject`,
    /// with no steps, probe or undo (set what a test needs with `..`).
    pub(crate) fn example(kind: super::ResourceType, subject: &str) -> PlannedResource {
        PlannedResource {
            key: "t#1".into(),
            task: "t".into(),
            role: Role::Task,
            id: kind.id(subject),
            kind,
            label: format!("{} {subject}", kind.as_str()),
            action: super::Action::Update,
            reason: String::new(),
            fields: Vec::new(),
            diff: None,
            steps: Vec::new(),
            probe: String::new(),
            probe_batch: None,
            probe_inline: false,
            probe_exists: Vec::new(),
            fingerprint: String::new(),
            notify: Vec::new(),
            undo: Vec::new(),
            retry: Default::default(),
        }
    }
}

impl PlannedResource {
    /// Whether applying this resource would change the host, so that a plan holding it shows
    /// drift (`--detailed-exitcode`, drift notifications, the drift trail): a create, update
    /// or delete, or a command that runs because its guard found the host not yet as declared
    /// (guards are what a command's probe checks, in its snippet or its existence tests; one
    /// without guards has neither). A command that
    /// runs on every apply is not drift, and a handler's resources follow from the changes that
    /// notify them.
    pub fn is_drift(&self) -> bool {
        self.role != Role::Handler
            && match self.action {
                Action::Create | Action::Update | Action::Delete => true,
                Action::Run => {
                    self.kind == super::vocab::ResourceType::Command
                        && !(self.probe.is_empty() && self.probe_exists.is_empty())
                }
                Action::NoOp => false,
            }
    }

    /// This resource's part of a probe script.
    pub fn probe_spec(&self) -> super::probe::Spec<'_> {
        super::probe::Spec {
            snippet: &self.probe,
            batch: self.probe_batch.as_ref(),
            exists: &self.probe_exists,
            inline: self.probe_inline,
        }
    }
}

impl Plan {
    /// The plan of the host `name`.
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Whether applying would change anything on any host (drift, for `--detailed-exitcode`):
    /// a resource that [`PlannedResource::is_drift`], or a handler still pending.
    pub fn has_changes(&self) -> bool {
        self.hosts.iter().any(|h| {
            !h.pending_handlers.is_empty() || h.resources.iter().any(PlannedResource::is_drift)
        })
    }

    /// How many resources [`PlannedResource::is_drift`] over all hosts.
    pub fn drift_count(&self) -> usize {
        self.hosts
            .iter()
            .flat_map(|h| &h.resources)
            .filter(|r| r.is_drift())
            .count()
    }
}

/// The directory the plan's relative paths (known_hosts, identities, the vault) are relative to.
/// The directory a plan's streamed local files are relative to: the root configuration's own
/// directory, resolved as loading it resolved it (through a symbolic link to the file); where
/// the configuration is not at hand, the directory it is named in.
pub fn source_dir(config: &str) -> std::path::PathBuf {
    std::fs::canonicalize(config)
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| base_dir(config))
}

pub fn base_dir(config: &str) -> std::path::PathBuf {
    std::path::Path::new(config)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        )
}

#[cfg(test)]
mod tests {
    /// nexus.kdl a link to envs/prod.kdl: the configuration's local paths are relative to
    /// envs/, and so are the plan's streamed files; without the file, the directory named.
    #[test]
    fn streamed_files_are_found_where_the_configuration_resolved_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("envs")).unwrap();
        std::fs::write(dir.path().join("envs/prod.kdl"), "").unwrap();
        std::os::unix::fs::symlink("envs/prod.kdl", dir.path().join("nexus.kdl")).unwrap();
        let link = dir.path().join("nexus.kdl");
        assert_eq!(
            super::source_dir(link.to_str().unwrap()),
            std::fs::canonicalize(dir.path().join("envs")).unwrap()
        );
        assert_eq!(
            super::source_dir("elsewhere/missing.kdl"),
            std::path::PathBuf::from("elsewhere")
        );
    }
}
