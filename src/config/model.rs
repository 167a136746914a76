//! The validated configuration model. No KDL type appears here: later stages depend only on this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::diagnostic::{Span, Spanned};
use super::values::{BatchSize, Mode, Percent};
pub use crate::plan::vocab::{
    HostKeyChecking, NotifyEvent, NotifyTemplate, OnFailure, ResourceType, Strategy, Value,
};

/// The name of the implicit host that stands for the machine running nexus.
pub const LOCAL_HOST: &str = "local";

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Directory of the root config file; relative local paths resolve against it.
    pub base_dir: PathBuf,
    pub defaults: Defaults,
    pub vars: BTreeMap<String, Value>,
    pub hosts: Vec<Host>,
    pub groups: Vec<Group>,
    pub tailscale: Vec<Tailscale>,
    pub notifiers: Vec<Notifier>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Handler>,
    pub vault: Option<Vault>,
    /// Where the state is kept when not in the default SQLite file (`state url=...`).
    pub state: Option<StateSetting>,
    /// Who may sign the plans apply accepts (`trust allowed-signers=...`; docs/plan-format.md).
    pub trust: Option<Trust>,
    /// Imports that were skipped because their `when` was false, with the env values that decided it.
    pub env_used: BTreeMap<String, Option<String>>,
}

/// Settings every host and task inherits unless it sets its own.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Defaults {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub sudo_password: Option<Value>,
    pub connect_timeout: Option<Duration>,
    pub command_timeout: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub max_channels: Option<u32>,
    pub parallel: Option<u32>,
    pub strategy: Option<Strategy>,
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub known_hosts: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    pub host_key_checking: Option<HostKeyChecking>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: Spanned<String>,
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// Another host's name, or an address `user@host:port`, reached first (ProxyJump).
    pub jump: Option<Spanned<String>>,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub sudo_password: Option<Value>,
    pub connect_timeout: Option<Duration>,
    pub tags: Vec<String>,
    pub vars: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: Spanned<String>,
    /// Host or group names.
    pub members: Vec<Spanned<String>>,
}

/// Hosts discovered from `tailscale status --json` at plan time, gathered into a group.
#[derive(Debug, Clone, Serialize)]
pub struct Tailscale {
    /// The group the discovered hosts form.
    pub name: Spanned<String>,
    pub tags: Vec<String>,
    pub user: Option<String>,
    pub online_only: bool,
    pub binary: String,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct Notifier {
    pub name: Spanned<String>,
    pub url: Value,
    pub template: NotifyTemplate,
    pub on: Vec<NotifyEvent>,
    pub headers: BTreeMap<String, Value>,
    pub timeout: Duration,
    pub retries: u32,
}

impl Notifier {
    /// The notifier as a plan records it.
    pub fn to_plan(&self) -> crate::plan::PlanNotifier {
        crate::plan::PlanNotifier {
            name: self.name.value.clone(),
            url: self.url.clone(),
            template: self.template,
            on: self.on.clone(),
            headers: self.headers.clone(),
            timeout: Some(self.timeout),
            retries: self.retries,
        }
    }

    /// A plan's notifier, for delivery.
    pub fn from_plan(p: &crate::plan::PlanNotifier) -> Notifier {
        Notifier {
            name: Spanned::new(p.name.clone(), Span::new(0, 0, 0)),
            url: p.url.clone(),
            template: p.template,
            on: p.on.clone(),
            headers: p.headers.clone(),
            timeout: p.timeout.unwrap_or(Duration::from_secs(10)),
            retries: p.retries,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub name: Spanned<String>,
    pub description: Option<String>,
    /// Host and group names; empty means the local machine.
    pub on: Vec<Spanned<String>>,
    pub deps: Vec<Spanned<String>>,
    pub strategy: Strategy,
    /// Rolling batch sizes; the last one repeats for the remainder.
    pub batches: Vec<BatchSize>,
    /// Size of the canary batch (strategy canary).
    pub canary: Option<BatchSize>,
    /// Resources run after the canary batch; a failure stops the rollout.
    pub health_check: Vec<Resource>,
    pub max_fail: Option<Percent>,
    pub parallel: Option<u32>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub tags: Vec<String>,
    pub when: Option<Spanned<String>>,
    pub continue_on_error: bool,
    pub on_failure: OnFailure,
    pub resources: Vec<Resource>,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct Handler {
    pub name: Spanned<String>,
    pub resources: Vec<Resource>,
    pub span: Span,
}

/// Options every resource accepts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Common {
    /// A label shown in plans instead of the generated one.
    pub label: Option<String>,
    pub when: Option<Spanned<String>>,
    pub notify: Vec<Spanned<String>>,
    pub sudo: Option<bool>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub kind: ResourceKind,
    pub common: Common,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ResourceKind {
    Package(Package),
    Service(Service),
    File(File),
    Directory(Directory),
    User(User),
    Group(GroupRes),
    Command(Command),
    Upload(Upload),
    Download(Download),
    WaitFor(WaitFor),
}

/// What a resource reads besides its configuration, gathered once before planning by
/// `inputs::Inputs::collect` so that planning stays pure.
#[derive(Debug, Default)]
pub struct InputNeeds<'a> {
    /// Local files, each with the size above which it is refused (a template is held whole as
    /// text; a copied file's size is the user's business).
    pub files: Vec<(&'a Path, Option<u64>)>,
    /// Values resolved for the resource, any of which may name an environment variable.
    pub values: Vec<&'a Value>,
    /// The values among them a file's content may hold: a secret there is read at plan time, so
    /// that contents are compared.
    pub content_values: Vec<&'a Value>,
    /// Remote contents, with the blake3 the configuration pins.
    pub urls: Vec<(&'a str, Option<&'a str>)>,
}

impl ResourceKind {
    /// See [`InputNeeds`].
    pub fn input_needs(&self) -> InputNeeds<'_> {
        let mut needs = InputNeeds::default();
        match self {
            ResourceKind::File(f) => {
                needs.content_values.extend(f.vars.values());
                match &f.content {
                    Some(FileContent::Source { path }) => needs.files.push((path, None)),
                    Some(FileContent::Template { path }) => {
                        needs.files.push((path, Some(super::files::MAX_TEXT_BYTES)));
                    }
                    Some(FileContent::Inline { value }) => needs.content_values.push(value),
                    Some(FileContent::Url { url, blake3 }) => {
                        needs.urls.push((url, blake3.as_deref()));
                    }
                    None => {}
                }
                needs.values.extend(needs.content_values.iter().copied());
            }
            ResourceKind::Upload(u) => needs.files.push((&u.source, None)),
            ResourceKind::Command(c) => needs.values.extend(c.env.values()),
            ResourceKind::Package(_)
            | ResourceKind::Service(_)
            | ResourceKind::Directory(_)
            | ResourceKind::User(_)
            | ResourceKind::Group(_)
            | ResourceKind::Download(_)
            | ResourceKind::WaitFor(_) => {}
        }
        needs
    }

    pub fn type_name(&self) -> &'static str {
        self.resource_type().as_str()
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceKind::Package(_) => ResourceType::Package,
            ResourceKind::Service(_) => ResourceType::Service,
            ResourceKind::File(_) => ResourceType::File,
            ResourceKind::Directory(_) => ResourceType::Directory,
            ResourceKind::User(_) => ResourceType::User,
            ResourceKind::Group(_) => ResourceType::Group,
            ResourceKind::Command(_) => ResourceType::Command,
            ResourceKind::Upload(_) => ResourceType::Upload,
            ResourceKind::Download(_) => ResourceType::Download,
            ResourceKind::WaitFor(_) => ResourceType::WaitFor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Present,
    Absent,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Auto,
    Apt,
    Dnf,
    Yum,
    Apk,
    Pacman,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Package names, in the order written.
    pub names: Vec<String>,
    pub state: PackageState,
    /// Pinned version (only with one name and state present).
    pub version: Option<String>,
    pub manager: PackageManager,
    /// Refresh the package lists before installing.
    pub update_cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    Auto,
    Systemd,
    Openrc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub state: Option<ServiceState>,
    pub enabled: Option<bool>,
    pub manager: ServiceManager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum FileContent {
    Inline {
        value: Value,
    },
    /// A local file, relative to the config file that names it.
    Source {
        path: PathBuf,
    },
    /// A local minijinja template rendered with facts and vars.
    Template {
        path: PathBuf,
    },
    /// A remote URL pinned by blake3 in nexus.lock.
    Url {
        url: String,
        blake3: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    pub path: String,
    pub state: Presence,
    pub content: Option<FileContent>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    pub backup: bool,
    pub vars: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directory {
    pub path: String,
    pub state: Presence,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    /// Owner and group also apply to everything inside (mode applies to the directory only, so
    /// files do not become executable).
    pub recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub state: Presence,
    pub uid: Option<u32>,
    /// Primary group, by name or number.
    pub group: Option<String>,
    /// Supplementary groups; empty means they are not managed.
    pub groups: Vec<String>,
    /// Keep existing supplementary groups that are not listed (`append=#true`, `usermod -a`)
    /// instead of setting the exact set.
    pub append: bool,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    /// Create as a system account (only when creating).
    pub system: bool,
    /// Create the home directory (only when creating).
    pub create_home: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRes {
    pub name: String,
    pub state: Presence,
    pub gid: Option<u32>,
    /// Create as a system group (only when creating).
    pub system: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// Shell text, run by `sh -c` as written.
    pub command: String,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub unless: Option<String>,
    pub onlyif: Option<String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, Value>,
    /// What `nexus rollback` runs to undo the command (docs/rollback.md).
    pub undo: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    /// Local path, relative to the config file that names it.
    pub source: PathBuf,
    pub dest: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Download {
    pub source: String,
    /// Local destination; `{host}` is replaced by the host name so hosts do not overwrite each other.
    /// Relative paths are relative to the config's directory and resolved by the executor.
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "lowercase")]
pub enum WaitCheck {
    Tcp { address: String, port: u16 },
    Http { url: String, status: u16 },
    Command { command: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitFor {
    pub check: WaitCheck,
    pub timeout: Duration,
    pub interval: Duration,
}

/// `vault path=... key-file=... key-env=...`, paths resolved: the vault's own settings type.
pub use crate::secrets::Settings as Vault;

/// `state url=(env)"NEXUS_STATE_URL" password=(secret)"PG_PASSWORD" project="web"`: shared state
/// in PostgreSQL (docs/state.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateSetting {
    /// A `postgresql://` URL, or where to read it.
    pub url: Value,
    /// From the environment or the vault, never literal.
    pub password: Option<Value>,
    /// The project's key in a shared database; default: the config directory's name.
    pub project: Option<String>,
}

/// `trust`: plans must be signed by a key of this OpenSSH allowed_signers file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trust {
    pub allowed_signers: PathBuf,
}

impl Config {
    /// The `state` setting as a plan records it, with its project resolved.
    pub fn state_ref(&self) -> Option<crate::plan::StateRef> {
        self.state.as_ref().map(|s| crate::plan::StateRef {
            url: s.url.clone(),
            password: s.password.clone(),
            project: s
                .project
                .clone()
                .unwrap_or_else(|| crate::plan::default_project(&self.base_dir)),
        })
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| *h.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| *g.name == name)
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| *t.name == name)
    }

    /// The index of the task `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| *t.name == name)
    }

    /// Each task's `deps` as (task, task it depends on) pairs of task indices; an unknown
    /// dependency (the loader refuses those) is left out.
    pub fn task_edges(&self) -> Vec<(usize, usize)> {
        self.tasks
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.deps
                    .iter()
                    .filter_map(move |d| self.task_index(&d.value).map(|j| (i, j)))
            })
            .collect()
    }

    pub fn handler(&self, name: &str) -> Option<&Handler> {
        self.handlers.iter().find(|h| *h.name == name)
    }

    pub fn tailscale_group(&self, name: &str) -> Option<&Tailscale> {
        self.tailscale.iter().find(|t| *t.name == name)
    }

    /// Expands host and group names into the statically known host names, in first-seen order.
    /// Tailscale groups are resolved at plan time and are reported separately.
    pub fn expand_targets<'a>(&'a self, names: impl IntoIterator<Item = &'a str>) -> Targets {
        let mut out = Targets::default();
        for name in names {
            self.expand_into(name, &mut out, 0);
        }
        out
    }

    fn expand_into(&self, name: &str, out: &mut Targets, depth: usize) {
        // Validation rejects group cycles; the depth bound only guards unvalidated use.
        if depth > 64 {
            return;
        }
        if name == LOCAL_HOST || self.host(name).is_some() {
            if !out.hosts.iter().any(|h| h == name) {
                out.hosts.push(name.to_string());
            }
        } else if let Some(g) = self.group(name) {
            for m in &g.members {
                self.expand_into(m, out, depth + 1);
            }
        } else if self.tailscale_group(name).is_some() && !out.discovered.iter().any(|d| d == name)
        {
            out.discovered.push(name.to_string());
        }
    }

    /// Hosts a task runs on: `local` when it names none.
    pub fn task_targets(&self, task: &Task) -> Targets {
        if task.on.is_empty() {
            return Targets {
                hosts: vec![LOCAL_HOST.to_string()],
                discovered: vec![],
            };
        }
        self.expand_targets(task.on.iter().map(|s| s.value.as_str()))
    }
}

/// The result of expanding target names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Targets {
    pub hosts: Vec<String>,
    /// Tailscale groups whose members are only known after discovery.
    pub discovered: Vec<String>,
}
