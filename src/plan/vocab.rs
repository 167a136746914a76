//! The closed sets of values a plan file holds and the configuration language shares: task
//! strategies and rollout sizes, resource types, host-key policies, notifier templates and
//! events, and values that name an environment variable or a secret. Defined here, with the
//! plan; `config` parses them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string whose value may come from the environment or the secrets vault, resolved at plan or
/// apply time, never at load time, so that validation needs neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Value {
    Literal(String),
    /// `(env)"NAME"`: read from the environment of the nexus process when planning.
    Env(String),
    /// `(secret)"NAME"`: read from the vault; only a reference and a keyed fingerprint reach the plan.
    Secret(String),
}

impl Value {
    pub fn literal(&self) -> Option<&str> {
        match self {
            Value::Literal(s) => Some(s),
            _ => None,
        }
    }
}

/// `host-key-checking` of `defaults`: what to do with a host key that no known_hosts file
/// mentions. The plan file and the SSH client take the same values (the transport calls it
/// `HostKeyPolicy`). A key that differs from the recorded one is refused under every policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// Refuse unknown hosts, with the key's fingerprint and how to accept it.
    #[default]
    Strict,
    /// Record unknown keys in the user's known_hosts file and connect.
    AcceptNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyTemplate {
    Slack,
    Discord,
    Teams,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    Success,
    Failure,
    Always,
    Drift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Parallel,
    Serial,
    Rolling,
    Canary,
}

/// What a rolling or canary task does when its rollout stops (a failed health check, max-fail
/// exceeded): stop there, or also undo what the run changed in the task (docs/rollback.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Stop,
    Rollback,
}

impl OnFailure {
    pub fn is_stop(&self) -> bool {
        *self == OnFailure::Stop
    }
}

/// The resource types, as the configuration, plan files and the state name them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    Package,
    Service,
    File,
    Directory,
    User,
    Group,
    Command,
    Upload,
    Download,
    WaitFor,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Package => "package",
            ResourceType::Service => "service",
            ResourceType::File => "file",
            ResourceType::Directory => "directory",
            ResourceType::User => "user",
            ResourceType::Group => "group",
            ResourceType::Command => "command",
            ResourceType::Upload => "upload",
            ResourceType::Download => "download",
            ResourceType::WaitFor => "wait-for",
        }
    }

    /// A resource's identity on a host, `file:/etc/motd`: two resources with one id conflict.
    pub fn id(self, subject: &str) -> String {
        format!("{}:{subject}", self.as_str())
    }

    /// What [`ResourceType::id`] was given: the path, account or unit a resource of this type
    /// names (`/etc/motd` of `file:/etc/motd`); `None` for an id of another type.
    pub fn subject_of(self, id: &str) -> Option<&str> {
        id.strip_prefix(self.as_str())?.strip_prefix(':')
    }

    /// Whether the type manages system state that only root can change (packages, services,
    /// accounts): a task using it needs sudo even on a host that does not escalate by default.
    pub fn needs_root(self) -> bool {
        matches!(
            self,
            ResourceType::Package
                | ResourceType::Service
                | ResourceType::User
                | ResourceType::Group
        )
    }

    /// The `getent` database holding the password of an account of the type (`shadow` for a
    /// user, `gshadow` for a group), which a pre-image of a deleted account keeps: the capture
    /// reads it, the rollback puts it back (docs/rollback.md).
    pub fn shadow_database(self) -> Option<&'static str> {
        match self {
            ResourceType::User => Some("shadow"),
            ResourceType::Group => Some("gshadow"),
            _ => None,
        }
    }

    /// Whether a resource of the type verifies a host rather than changing it (`wait-for`):
    /// it never counts as a change, and nothing of it is kept for a rollback.
    pub fn is_check(self) -> bool {
        self == ResourceType::WaitFor
    }

    /// Whether two resources of the type with one id on a host would fight over one path or
    /// account, so that a plan holding both is refused. Packages, services and commands may be
    /// named twice (tasks that each ensure a package, a handler restarting a service).
    pub fn exclusive(self) -> bool {
        matches!(
            self,
            ResourceType::File | ResourceType::Directory | ResourceType::User | ResourceType::Group
        )
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A percentage from 0 to 100, written `"20%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percent(pub u8);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// One rolling batch: a number of hosts, or a share of the task's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchSize {
    Hosts(u32),
    Percent(Percent),
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Hosts(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}"),
        }
    }
}
