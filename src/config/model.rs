//! The validated configuration model. No KDL type appears here: later stages depend only on this.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use crate::plan::vocab::{
    HostKeyChecking, NotifyEvent, NotifyTemplate, OnFailure, ResourceType, Strategy, Value,
};
pub use crate::resources::kind::ResourceKind;
use crate::syntax::diagnostic::{Span, Spanned};
use crate::syntax::values::{BatchSize, Percent};

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
