//! A planned resource's steps as data: the commands that converge it, what they read on stdin,
//! their environment and retry settings, and the path facts its probe gathers in the host's one
//! batch. The executor consumes these; resource types produce them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{file_write, make_dir};

/// What applying a resource will do. Ordered by how much it changes, for summaries.
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
pub enum Action {
    NoOp,
    Create,
    Update,
    Delete,
    /// Runs every time it is applied (commands without satisfied guards, wait-for, restarts).
    Run,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Run => "!",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Run => "run",
        }
    }
}

/// One attribute that changes, e.g. `mode: 0644 -> 0600`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl FieldChange {
    pub fn new(field: &str, from: Option<&str>, to: Option<&str>) -> FieldChange {
        FieldChange {
            field: field.to_string(),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
        }
    }
}

/// An environment value for a step: literal, or a reference resolved only at apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum EnvValue {
    Literal(String),
    /// A vault secret: the plan holds the name and a keyed fingerprint, never the value.
    Secret {
        name: String,
        fingerprint: String,
    },
}

/// One command that converges a resource, as data. Secrets and contents never appear in
/// `script`: contents go on stdin, secrets in `env` (sent over stdin by the transport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// POSIX sh; every interpolated value is quoted with `shell::quote`.
    pub script: String,
    /// Run with the host's privilege escalation (sudo).
    pub sudo: bool,
    /// Run as this user instead (sudo -u USER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// blake3 of a blob in the plan, fed to the command's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Secrets whose placeholders the executor replaces with their values in the stdin blob; it
    /// then passes the sha256 of what it sends as `NEXUS_CONTENT_SHA256` (docs/secrets.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stdin_secrets: Vec<String>,
    /// The stdin blob is AES-256-GCM ciphertext under the vault's content key (a rollback
    /// restoring a content that held secrets): the executor decrypts it at the last moment and
    /// passes the sha256 of the plaintext as `NEXUS_CONTENT_SHA256`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_sealed: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Skip the step when this condition (POSIX sh) succeeds at apply time: guards are re-checked
    /// because the world may have moved since the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_if: Option<String>,
    /// Write the step's stdout to this local path (download); `{host}` is already substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_to: Option<String>,
    /// The remote file a download reads, and `script` is [`Step::download_script`] of it: the
    /// executor may fetch it by SFTP instead of running the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_from: Option<String>,
    /// Run in this remote directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The step replaces a file with its stdin, and `script` is [`file_write::FileWrite::script`]
    /// of this: the executor may write several files in one command with fewer programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<file_write::FileWrite>,
    /// The step creates a directory, and `script` is [`make_dir::MakeDir::script`] of this: the
    /// executor may create several in one command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkdir: Option<make_dir::MakeDir>,
}

impl Step {
    pub fn new(script: impl Into<String>, sudo: bool) -> Step {
        Step {
            script: script.into(),
            sudo,
            user: None,
            stdin: None,
            stdin_secrets: Vec::new(),
            stdin_sealed: false,
            env: BTreeMap::new(),
            skip_if: None,
            download_to: None,
            download_from: None,
            cwd: None,
            write: None,
            mkdir: None,
        }
    }

    /// `script` (this step's, or what runs in its place) run in the step's `cwd`, if it has one.
    pub fn in_cwd(&self, script: String) -> String {
        match &self.cwd {
            Some(dir) => format!("cd -- {} || exit 1\n{script}", crate::shell::quote(dir)),
            None => script,
        }
    }

    /// A step that copies the remote file `from` to the local path `to`.
    pub fn download(from: &str, to: &str, sudo: bool) -> Step {
        Step {
            download_to: Some(to.to_string()),
            download_from: Some(from.to_string()),
            ..Step::new(Step::download_script(from), sudo)
        }
    }

    /// What a download step runs when its file is not fetched by SFTP: the file on stdout.
    pub fn download_script(from: &str) -> String {
        format!("cat -- {}", crate::shell::quote(from))
    }
}

/// A path whose facts the probe gathers in one `stat` (and one `sha256sum`) for all resources of
/// a host; see [`crate::plan::probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeBatch {
    pub path: String,
    /// Also hash the content (size and sha256 of a regular, readable file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sha256: bool,
    /// The content holds secrets: the sha256 is sealed with the vault's key before anything
    /// records it, and the size is left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// Send the file's current content back (base64, as `_old_b64`, for the plan's diff) unless
    /// its sha256 is this one, when it is a small readable regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_unless: Option<String>,
    /// The owner and group the resource wants. The probe tests each path against these by id
    /// (`find -user`, which looks the name up once) and prints the wanted name on a match,
    /// instead of looking up the name of every path's owner: that lookup was the largest
    /// per-path cost of the probe. An id that matches is reported under the wanted name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Also the target of a symbolic link found there (`link_target`, as `resources::link_probe` prints
    /// it), tested for all of the host's such paths in one loop of `[ -L ]`: a file or
    /// directory then needs no section of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
}

impl ProbeBatch {
    /// `None` for a path that `stat -c %n` or `sha256sum` output would not carry verbatim (a
    /// newline or backslash in it) or that is not absolute (`find` would read a leading `-` or
    /// `(` as part of its expression): such a resource keeps its own stat snippet.
    pub fn for_path(path: &str, sha256: bool) -> Option<ProbeBatch> {
        (path.starts_with('/') && !path.contains(['\n', '\\'])).then(|| ProbeBatch {
            path: path.to_string(),
            sha256,
            sealed: false,
            old_unless: None,
            owner: None,
            group: None,
            link: false,
        })
    }

    /// Names the owner and group the resource wants (see [`ProbeBatch::owner`]).
    pub fn wanting(mut self, owner: Option<&str>, group: Option<&str>) -> ProbeBatch {
        self.owner = owner.map(str::to_string);
        self.group = group.map(str::to_string);
        self
    }
}

/// A path whose existence a resource's probe asks about, as `[ -e PATH ]` (which follows a
/// symbolic link, as the step's `skip_if` does). The host's probe answers every such path of the
/// host in one loop of shell builtins, and hands the resource `KEY=true` or `KEY=false` as its
/// own snippet would have printed, so a guarded command costs no section of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeExists {
    /// The key of the `key=value` line: a lower-case name (`creates_exists`).
    pub key: String,
    pub path: String,
}

impl ProbeExists {
    pub fn new(key: &str, path: &str) -> ProbeExists {
        ProbeExists {
            key: key.to_string(),
            path: path.to_string(),
        }
    }

    /// Whether `key` may name an existence line: `NAME_exists` in lower case, which no fact of
    /// the path batch (`exists`, `type`, `sha256`, `_old_b64`...) is, so that a plan cannot make
    /// an existence answer stand for one.
    pub fn valid_key(key: &str) -> bool {
        key.strip_suffix("_exists").is_some_and(|name| {
            !name.is_empty()
                && !name.starts_with('_')
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }
}

/// Timeout and retry settings carried with a planned resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Retry {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub retry_delay: Option<Duration>,
}

/// Durations as fractional seconds in plan files: stable, language-neutral.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        Ok(v.filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }
}
