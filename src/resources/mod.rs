//! Resource types. Each file implements [`Resource`] for one type: a probe (a POSIX sh snippet whose
//! `key=value` output is parsed into [`Observed`]), the comparison of desired and observed state,
//! and the [`Step`]s that converge it, built as data with every word shell-quoted. Everything here
//! is pure; the probe runner and the executor live elsewhere.

pub mod command;
pub mod directory;
pub mod download;
pub mod file;
pub mod group;
pub mod kind;
pub mod package;
pub mod preimage;
pub mod service;
pub mod shadow;
pub mod upload;
pub mod user;
pub mod wait_for;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
pub use crate::plan::observed::{Observed, UnexpectedLine};
pub use crate::plan::step::{
    Action, EnvValue, FieldChange, ProbeBatch, ProbeExists, Retry, Step, opt_secs,
};
pub use crate::plan::vocab::{ResourceType, Value};
use crate::syntax::diagnostic::{Diag, Span};
use crate::syntax::fields::{FileCtx, account_name, local_file, remote_arg, remote_option};
use crate::syntax::reader::{Cx, NodeR};
use crate::syntax::values::{self, Address, Mode};
pub use kind::{InputNeeds, Presence, ResourceKind};
use kind::{owner_name, ownership, presence};

/// Resource snippets quote with the crate's one shell quoter, under a short name.
pub use crate::shell::quote as q;

/// [`Observed::get`] for keys every probe of the type prints; a missing key is a probe bug.
pub trait Require {
    fn require(&self, key: &str) -> Result<&str, ResourceError>;
}

impl Require for Observed {
    fn require(&self, key: &str) -> Result<&str, ResourceError> {
        self.get(key)
            .ok_or_else(|| ResourceError::Probe(format!("probe output lacks {key:?}")))
    }
}

/// The planned outcome for one resource on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    /// Why, in a few words: "not installed", "content differs", "creates /x exists".
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Unified diff of file contents (`--- path` / `+++ path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Contents the steps read from stdin, by blake3; the plan stores them once.
    #[serde(skip)]
    pub blobs: Vec<Vec<u8>>,
    /// Contents the steps stream from local files, by blake3: the plan pins them.
    #[serde(skip)]
    pub streamed: Vec<(String, crate::plan::StreamedContent)>,
    /// Steps that undo the change, for a resource nexus keeps no pre-image of (`command`'s
    /// `undo`): what `nexus rollback` runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<Step>,
    /// The change puts a directory where a symbolic link is: what the host's probe saw under
    /// the path was what the link points to (the planner refuses resources under it).
    #[serde(skip)]
    pub replaces_link: bool,
}

impl Change {
    pub fn no_op(reason: impl Into<String>) -> Change {
        Change {
            action: Action::NoOp,
            reason: reason.into(),
            fields: Vec::new(),
            diff: None,
            steps: Vec::new(),
            blobs: Vec::new(),
            streamed: Vec::new(),
            undo: Vec::new(),
            replaces_link: false,
        }
    }

    pub fn new(action: Action, reason: impl Into<String>, steps: Vec<Step>) -> Change {
        Change {
            action,
            reason: reason.into(),
            fields: Vec::new(),
            diff: None,
            steps,
            blobs: Vec::new(),
            streamed: Vec::new(),
            undo: Vec::new(),
            replaces_link: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The probe printed something the resource cannot interpret.
    #[error("unexpected probe result: {0}")]
    Probe(String),
    /// The host cannot support this resource (no package manager, no init system...).
    #[error("{0}")]
    Unsupported(String),
    /// Desired state cannot be computed (template error, missing input).
    #[error("{0}")]
    Invalid(String),
}

/// What every resource knows about the host it is planned for.
#[derive(Debug, Clone, Copy)]
pub struct HostCtx<'a> {
    pub host: &'a str,
    pub facts: &'a Facts,
    /// Whether steps run with sudo (the resource's `sudo`, else the host's `become`).
    pub sudo: bool,
}

/// A resource type: identity, probe, and plan. Implementations are pure.
pub trait Resource {
    /// Identity on a host, e.g. `file:/etc/motd`; two resources with one id on a host conflict.
    fn id(&self) -> String;
    /// Human label for plans: `file /etc/motd`, `package nginx, curl`.
    fn label(&self) -> String;
    /// A POSIX sh snippet printing `key=value` lines. It runs in a subshell inside the host's
    /// batched probe script, so it may `exit` and must not read stdin.
    fn probe(&self) -> String;
    /// Path facts (existence, type, owner, group, mode, content hash) the host's probe gathers for
    /// this resource together with all others, printed as [`stat_probe`] would print them before
    /// the snippet's own output. With a batch, [`Resource::probe`] holds only what remains.
    fn probe_batch(&self) -> Option<ProbeBatch> {
        None
    }
    /// Paths whose existence the host's probe tests for this resource together with all
    /// others' (one loop of `[ -e ]`), printed before the snippet's own output. With these,
    /// [`Resource::probe`] holds only what remains.
    fn probe_exists(&self) -> Vec<ProbeExists> {
        Vec::new()
    }
    /// Whether the snippet may run in the probe's own shell (builtins only, no `exit` or `cd`),
    /// saving the fork of a subshell.
    fn probe_inline(&self) -> bool {
        false
    }
    /// The probe as the host's batched probe script takes it.
    fn probe_owned(&self) -> crate::plan::probe::Owned {
        crate::plan::probe::Owned {
            snippet: self.probe(),
            batch: self.probe_batch(),
            exists: self.probe_exists(),
            inline: self.probe_inline(),
        }
    }
    /// Compares with the observed state and returns the change and its steps.
    fn plan(&self, observed: &Observed) -> Result<Change, ResourceError>;

    /// The path on the host this resource makes or writes, for what the planner checks across
    /// resources (one under a link another replaces).
    fn path(&self) -> Option<&str> {
        None
    }

    /// The plan when [`Resource::plan`] failed because the thing does not exist yet but one of
    /// the changes earlier in the same apply (`changed`, their types) may create it (a package
    /// that ships a service unit).
    fn plan_if_created_earlier(&self, changed: &[ResourceType]) -> Option<Change> {
        let _ = changed;
        None
    }
}

/// Shell text that prints `key=` followed by the value of a command, or nothing on failure.
pub fn print_kv(key: &str, cmd: &str) -> String {
    format!("printf '%s=%s\\n' {} \"$({cmd} 2>/dev/null)\"", q(key))
}

/// `owner`/`group`/`mode` handling shared by file, directory and upload: the fields that differ
/// from the observed `owner`, `group` and `mode` keys, and the commands that fix them.
pub fn ownership_changes(
    path: &str,
    observed: &Observed,
    owner: Option<&str>,
    group: Option<&str>,
    mode: Option<Mode>,
    sudo: bool,
) -> (Vec<FieldChange>, Vec<Step>) {
    let mut fields = Vec::new();
    let mut steps = Vec::new();
    // Owners may be given as names or numeric ids; the probe reports both.
    let matches = |key: &str, want: &str| {
        observed.get(key) == Some(want) || observed.get(&format!("{key}_id")) == Some(want)
    };
    let owner_diff = owner.filter(|o| !matches("owner", o));
    let group_diff = group.filter(|g| !matches("group", g));
    if let Some(o) = owner_diff {
        fields.push(FieldChange::new("owner", observed.get("owner"), Some(o)));
    }
    if let Some(g) = group_diff {
        fields.push(FieldChange::new("group", observed.get("group"), Some(g)));
    }
    match (owner_diff, group_diff) {
        (Some(o), Some(g)) => steps.push(Step::new(
            format!("chown -- {} {}", q(&format!("{o}:{g}")), q(path)),
            sudo,
        )),
        (Some(o), None) => steps.push(Step::new(format!("chown -- {} {}", q(o), q(path)), sudo)),
        (None, Some(g)) => steps.push(Step::new(format!("chgrp -- {} {}", q(g), q(path)), sudo)),
        (None, None) => {}
    }
    if let Some(m) = mode {
        let want = m.to_string();
        let have = observed.get("mode");
        if have != Some(want.as_str()) {
            fields.push(FieldChange::new("mode", have, Some(&want)));
            steps.push(Step::new(
                format!("chmod -- {} {}", q(&want), q(path)),
                sudo,
            ));
        }
    }
    (fields, steps)
}

/// Probe text printing `exists`, `type`, `owner`, `owner_id`, `group`, `group_id` and `mode` (4 octal
/// digits) of `path`. Works with GNU and BusyBox `stat` (`-c` only; `%n` there is the file name,
/// so fields are separated by spaces, which account names never contain).
pub fn stat_probe(path: &str) -> String {
    let p = q(path);
    format!(
        "if [ -e {p} ] || [ -L {p} ]; then echo exists=true; \
         if [ -L {p} ]; then echo type=link; elif [ -d {p} ]; then echo type=directory; elif [ -f {p} ]; then echo type=file; else echo type=other; fi; \
         stat -c 'owner=%U owner_id=%u group=%G group_id=%g' {p} | tr ' ' '\\n'; \
         printf 'mode=%04d\\n' \"$(stat -c %a {p})\"; \
         else echo exists=false; fi"
    )
}

/// Prints `link_target` (hex) when `path` is a symbolic link, so a plan can say what it replaces
/// and a retargeted link is drift. Hex, because a target may hold any byte but NUL, a newline
/// included. Builtins only unless the path is a link.
pub fn link_probe(path: &str) -> String {
    let p = q(path);
    format!(
        "if [ -L {p} ]; then printf 'link_target=%s\\n' {}; fi",
        crate::plan::probe::link_target_hex(&p)
    )
}

/// The target of the symbolic link [`link_probe`] saw, as text for plans (not a path to act on:
/// bytes that are not UTF-8 are replaced).
pub fn link_target(o: &Observed) -> Option<String> {
    // Control characters escaped: a host's link must not forge lines of a plan or history.
    link_target_bytes(o).map(|b| {
        String::from_utf8_lossy(&b)
            .chars()
            .flat_map(|c| match c.is_control() {
                true => c.escape_default().collect::<Vec<_>>(),
                false => vec![c],
            })
            .collect()
    })
}

/// The exact target of the symbolic link [`link_probe`] saw.
pub fn link_target_bytes(o: &Observed) -> Option<Vec<u8>> {
    let hex = o.get("link_target")?;
    let mut bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    // readlink ends its output with a newline.
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Some(bytes)
}

/// How a plan names a symbolic link it replaces or removes: `symlink -> TARGET`.
pub fn link_label(o: &Observed) -> String {
    match link_target(o) {
        Some(t) => format!("symlink -> {t}"),
        None => "symlink".to_string(),
    }
}

/// What desired-state resolution may read: everything was loaded before planning, so resolving
/// stays pure and the plan's inputs manifest lists exactly what was used.
pub struct ResolveCtx<'a> {
    pub host: &'a str,
    pub facts: &'a Facts,
    /// Steps run with sudo: the resource's `sudo`, else the host's `become`.
    pub sudo: bool,
    pub inputs: &'a crate::inputs::Inputs,
    /// Template variables: global `vars`, overridden by the host's, with `(env)` values resolved.
    pub vars: &'a BTreeMap<String, String>,
    /// Host tags, visible to templates as `host.tags`.
    pub host_tags: &'a [String],
}

impl ResolveCtx<'_> {
    /// The value of a config string: literal, or the pinned environment value.
    pub fn value(&self, v: &Value) -> Result<String, ResourceError> {
        match v {
            Value::Literal(s) => Ok(s.clone()),
            Value::Env(name) => self
                .inputs
                .env_value(name)
                .map(str::to_string)
                .ok_or_else(|| {
                    ResourceError::Invalid(format!("environment variable {name} is not set"))
                }),
            // Secrets are references resolved at apply: command env, sudo passwords and
            // contents (see `content_value`) have their own paths to the host.
            Value::Secret(name) => Err(ResourceError::Unsupported(format!(
                "secret {name:?} cannot be used here: secrets are supported in command env, sudo-password, file content and vars"
            ))),
        }
    }

    /// [`ResolveCtx::value`] for file contents and template vars: a secret becomes its
    /// placeholder, which the executor replaces with the value at apply.
    pub fn content_value(&self, v: &Value) -> Result<String, ResourceError> {
        match v {
            Value::Secret(name) => Ok(crate::secrets::placeholder::placeholder(name)),
            other => self.value(other),
        }
    }

    /// Context for minijinja templates and `when` expressions.
    pub fn template_context(&self) -> minijinja::Value {
        minijinja::context! {
            facts => minijinja::Value::from_serialize(self.facts),
            vars => minijinja::Value::from_serialize(self.vars),
            host => minijinja::context! { name => self.host, tags => self.host_tags },
        }
    }
}

/// `list` with each value kept where it first appears: a name listed twice is still one thing
/// to manage, and plans show the order written.
fn once_each(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// A resolved resource of any type.
pub type AnyResource = Box<dyn Resource + Send + Sync>;

/// Resolves a configured resource for one host: contents loaded, templates rendered, facts applied.
pub fn resolve(kind: &ResourceKind, ctx: &ResolveCtx<'_>) -> Result<AnyResource, ResourceError> {
    use ResourceKind as K;
    Ok(match kind {
        K::Package(p) => Box::new(package::resolve(p, ctx)?),
        K::Service(s) => Box::new(service::resolve(s, ctx)?),
        K::File(f) => Box::new(file::resolve(f, ctx)?),
        K::Directory(d) => Box::new(directory::resolve(d, ctx)?),
        K::User(u) => Box::new(user::resolve(u, ctx)?),
        K::Group(g) => Box::new(group::resolve(g, ctx)?),
        K::Command(c) => Box::new(command::resolve(c, ctx)?),
        K::Upload(u) => Box::new(upload::resolve(u, ctx)?),
        K::Download(d) => Box::new(download::resolve(d, ctx)?),
        K::WaitFor(w) => Box::new(wait_for::resolve(w, ctx)?),
    })
}

/// The time a resource's command takes at most by its own configuration, which then bounds it
/// instead of the configured command timeout (`wait-for`).
pub fn own_deadline(kind: &ResourceKind) -> Option<std::time::Duration> {
    match kind {
        ResourceKind::WaitFor(w) => Some(wait_for::deadline(w)),
        _ => None,
    }
}

/// `file /etc/motd`, `package nginx, curl`: what a resource is called from its configuration
/// alone, for a resource skipped before it was resolved. Each type's module decides its label,
/// so a skipped resource is named as it would be when planned.
pub fn label(kind: &ResourceKind, inputs: &crate::inputs::Inputs) -> String {
    use ResourceKind as K;
    match kind {
        K::Package(p) => package::label(p),
        K::Service(s) => service::label(s),
        K::Command(c) => command::label(c),
        K::File(f) => file::label(&f.path),
        K::Directory(d) => directory::label(d),
        K::User(u) => user::label(u),
        K::Group(g) => group::label(g),
        K::Upload(u) => upload::label(&inputs.relative(&u.source), &u.dest),
        K::Download(d) => download::label(d),
        K::WaitFor(w) => wait_for::label(w),
    }
}

#[cfg(test)]
pub fn run_probe_locally(r: &dyn Resource) -> Observed {
    use crate::plan::probe;
    let owned = r.probe_owned();
    let specs = [owned.spec()];
    let sections = probe::split(&specs, &probe::run_sh(&probe::script(&specs)), None).unwrap();
    assert_eq!(sections[0].status, 0, "{}", sections[0].output);
    Observed::parse(&sections[0].output).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_parse_and_fingerprint() {
        let o = Observed::parse("exists=true\nmode=0644\n_old=abc\n").unwrap();
        assert_eq!(o.get("mode"), Some("0644"));
        let p = Observed::parse("mode=0644\nexists=true\n_old=zzz\n").unwrap();
        // Order and diagnostic keys do not matter.
        assert_eq!(o.fingerprint(), p.fingerprint());
        let r = Observed::parse("mode=0600\nexists=true\n").unwrap();
        assert_ne!(o.fingerprint(), r.fingerprint());
        assert!(Observed::parse("garbage").is_err());
    }

    #[test]
    fn stat_probe_reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's a file");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(stat_probe(path.to_str().unwrap()))
            .output()
            .unwrap();
        let o = Observed::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(o.get("exists"), Some("true"));
        assert_eq!(o.get("type"), Some("file"));
        assert_eq!(o.get("mode"), Some("0640"));
        assert!(o.get("owner").is_some_and(|v| !v.is_empty()));
        assert!(o.get("group_id").is_some_and(|v| v.parse::<u32>().is_ok()));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(stat_probe("/nonexistent/x"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "exists=false\n");
    }

    #[test]
    fn ownership() {
        let o =
            Observed::parse("owner=root\nowner_id=0\ngroup=root\ngroup_id=0\nmode=0644\n").unwrap();
        let (f, s) = ownership_changes("/x y", &o, Some("0"), Some("adm"), Some(Mode(0o600)), true);
        assert_eq!(f.len(), 2);
        assert_eq!(s[0].script, "chgrp -- adm '/x y'");
        assert_eq!(s[1].script, "chmod -- 0600 '/x y'");
        let (f, s) = ownership_changes("/x", &o, Some("root"), None, Some(Mode(0o644)), false);
        assert!(f.is_empty() && s.is_empty());
    }
}
