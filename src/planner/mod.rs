//! The planner: a pure function of configuration, inputs, facts and probe output. It runs in two
//! halves around the one I/O step: [`prepare_host`] resolves desired state and yields the probe
//! script; [`PreparedHost::finish`] compares with what the probe found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;

pub mod connection;
pub mod secret_guard;

use crate::config::{
    Config, LOCAL_HOST, Loaded, Resource as ConfigResource, ResourceType, Task, Value,
};
use crate::dag::Deps;
use crate::facts::Facts;
use crate::inputs::Inputs;
use crate::plan::probe;
use crate::plan::*;
use crate::resources::{self, AnyResource, Observed, ResolveCtx, Retry};

/// A planning failure, naming the host and resource (with its config location) where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub host: Option<String>,
    /// `file /etc/app.conf (nexus.kdl:12:5)`.
    pub resource: Option<String>,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, &self.resource) {
            (Some(h), Some(r)) => write!(f, "{h}: {r}: {}", self.message),
            (Some(h), None) => write!(f, "{h}: {}", self.message),
            (None, Some(r)) => write!(f, "{r}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PlanError {}

fn general(message: impl Into<String>) -> PlanError {
    PlanError {
        host: None,
        resource: None,
        message: message.into(),
    }
}

/// The tasks to plan, in execution order, and the hosts each runs on.
#[derive(Debug, Clone)]
pub struct Selected {
    pub tasks: Vec<TaskPlan>,
    /// Indices into `config.tasks`, parallel to `tasks`.
    pub indices: Vec<usize>,
}

impl Selected {
    /// Every host of the selection, in first-seen order.
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tasks {
            for h in &t.hosts {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
        }
        out
    }
}

/// Applies the selection: named tasks with their dependencies (all tasks when none are named),
/// then tag filters, then target filters. A dependency removed by a filter is simply not part of
/// the plan: the remaining tasks keep their relative order.
///
/// Tailscale groups expand to the hosts `discovered` holds for them (pinned in nexus.lock); a
/// task targeting a group that was not discovered is an error.
pub fn select(
    cfg: &Config,
    sel: &Selection,
    discovered: &crate::discovery::Discovered,
) -> Result<Selected, PlanError> {
    let discovered_names = |group: &str| -> Vec<String> {
        discovered
            .get(group)
            .map(|hs| hs.iter().map(|h| h.name.clone()).collect())
            .unwrap_or_default()
    };
    let is_discovered_host = |name: &str| discovered.values().flatten().any(|h| h.name == name);
    let index = |name: &str| cfg.task_index(name);
    let edges = cfg.task_edges();
    let deps = Deps::new(cfg.tasks.len(), edges.iter().copied());
    let mut chosen: BTreeSet<usize> = if sel.tasks.is_empty() {
        (0..cfg.tasks.len()).collect()
    } else {
        let mut roots = Vec::new();
        for name in &sel.tasks {
            roots.push(index(name).ok_or_else(|| general(format!("unknown task `{name}`")))?);
        }
        deps.closure(&roots).into_iter().collect()
    };
    let tagged = |t: &Task, tags: &[String]| t.tags.iter().any(|x| tags.contains(x));
    if !sel.tags.is_empty() {
        chosen.retain(|i| tagged(&cfg.tasks[*i], &sel.tags));
    }
    if !sel.skip_tags.is_empty() {
        chosen.retain(|i| !tagged(&cfg.tasks[*i], &sel.skip_tags));
    }
    let target_hosts: Option<Vec<String>> = if sel.targets.is_empty() {
        None
    } else {
        for t in &sel.targets {
            let known = t == LOCAL_HOST
                || cfg.host(t).is_some()
                || cfg.group(t).is_some()
                || cfg.tailscale_group(t).is_some()
                || is_discovered_host(t);
            if !known {
                return Err(general(format!("unknown target `{t}`")));
            }
        }
        let expanded = cfg.expand_targets(sel.targets.iter().map(String::as_str));
        let mut hosts = expanded.hosts;
        for g in &expanded.discovered {
            hosts.extend(discovered_names(g));
        }
        hosts.extend(
            sel.targets
                .iter()
                .filter(|t| is_discovered_host(t))
                .cloned(),
        );
        Some(hosts)
    };
    let mut tasks = Vec::new();
    let mut indices = Vec::new();
    for phase in deps.phases() {
        for i in phase.into_iter().filter(|i| chosen.contains(i)) {
            let t = &cfg.tasks[i];
            let mut targets = cfg.task_targets(t);
            for d in &targets.discovered {
                if !discovered.contains_key(d) {
                    return Err(general(format!(
                        "task `{}` targets tailscale group `{d}`, which was not discovered (see nexus.lock)",
                        t.name.value
                    )));
                }
                for h in discovered_names(d) {
                    if !targets.hosts.contains(&h) {
                        targets.hosts.push(h);
                    }
                }
            }
            let hosts: Vec<String> = match &target_hosts {
                Some(only) => targets
                    .hosts
                    .into_iter()
                    .filter(|h| only.contains(h))
                    .collect(),
                None => targets.hosts,
            };
            if hosts.is_empty() {
                continue;
            }
            tasks.push(TaskPlan {
                name: t.name.value.clone(),
                deps: t
                    .deps
                    .iter()
                    .filter(|d| index(&d.value).is_some_and(|j| chosen.contains(&j)))
                    .map(|d| d.value.clone())
                    .collect(),
                hosts,
                strategy: t.strategy,
                batches: t.batches.clone(),
                canary: t.canary,
                max_fail: t.max_fail,
                parallel: t.parallel,
                continue_on_error: t.continue_on_error,
                on_failure: t.on_failure,
                timeout: t.timeout,
            });
            indices.push(i);
        }
    }
    // Deps pointing at tasks dropped because they had no hosts left are not waited for either.
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    for t in &mut tasks {
        t.deps.retain(|d| names.contains(d));
    }
    Ok(Selected { tasks, indices })
}

fn uses_vault_for_notify(cfg: &Config) -> bool {
    cfg.notifiers.iter().any(|n| {
        matches!(n.url, Value::Secret(_))
            || n.headers.values().any(|v| matches!(v, Value::Secret(_)))
    })
}

/// A vault exists even if the configuration uses none of its values: apply then reads it too,
/// to recognise its values on hosts (docs/secrets.md).
fn vault_exists(cfg: &Config) -> bool {
    let r = vault_ref(cfg);
    cfg.base_dir.join(&r.path).exists()
}

/// Where the vault is, as the plan records it.
fn vault_ref(cfg: &Config) -> VaultRef {
    let default = cfg.base_dir.join(".nexus/secrets.vault");
    let v = cfg.vault.as_ref();
    VaultRef {
        path: connection::relative_to(&cfg.base_dir, v.map_or(&default, |v| &v.path)),
        key_file: v
            .and_then(|v| v.key_file.as_ref())
            .map(|p| connection::relative_to(&cfg.base_dir, p)),
        key_env: v.and_then(|v| v.key_env.clone()),
    }
}

/// A host's finished plan and the contents its steps upload.
pub type HostOutcome = Result<(HostPlan, Contents), Vec<PlanError>>;

/// The contents a host's steps upload, by blake3: carried in the plan, or pinned and streamed
/// from local files when applying.
#[derive(Debug, Default)]
pub struct Contents {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub streamed: BTreeMap<String, crate::plan::StreamedContent>,
}

/// A host's resources with desired state resolved, waiting for the probe.
pub struct PreparedHost {
    pub name: String,
    pub connection: Connection,
    pub facts_digest: String,
    pub probe_sudo: bool,
    pending_handlers: Vec<PendingHandler>,
    entries: Vec<Entry>,
    /// Seals the probed hashes of contents that hold secrets, and recognises vault values.
    secrets: std::sync::Arc<crate::secrets::Resolved>,
    /// Resources whose content held secrets when nexus last wrote it (from the state).
    held_secrets: std::collections::BTreeSet<String>,
}

struct Entry {
    key: String,
    task: String,
    role: Role,
    kind: crate::config::ResourceType,
    /// Steps run with sudo (the resource's `sudo`, else the host's `become`).
    sudo: bool,
    /// The resource's `label` option, shown instead of the generated label.
    label: Option<String>,
    /// A label from the configuration alone, for resources skipped before resolution.
    config_label: String,
    location: String,
    notify: Vec<String>,
    retry: Retry,
    resource: Included,
    /// The resource's probe, built once: the script, the split and the plan all need it.
    probe: Option<probe::Owned>,
}

/// Whether a resource takes part on a host.
enum Included {
    Resource(AnyResource),
    /// Skipped by a `when` condition (the reason says which), so not probed.
    Skipped(String),
}

impl Included {
    fn resource(&self) -> Option<&AnyResource> {
        match self {
            Included::Resource(r) => Some(r),
            Included::Skipped(_) => None,
        }
    }
}

/// An `(env)` value the inputs do not hold.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} is not set")]
struct EnvUnset(String);

/// Whether `host` escalates by default (`become=#true` on it, else on `defaults`).
pub fn host_becomes(cfg: &Config, host: &str) -> bool {
    cfg.host(host)
        .and_then(|h| h.become_)
        .or(cfg.defaults.become_)
        .unwrap_or(false)
}

/// Resolves every resource `host` runs (tasks in order, then handlers it may notify).
pub fn prepare_host(
    loaded: &Loaded,
    inputs: &Inputs,
    selected: &Selected,
    host: &str,
    facts: &Facts,
) -> Result<PreparedHost, Vec<PlanError>> {
    let cfg = &loaded.config;
    let mut errors = Vec::new();
    let err = |resource: Option<String>, message: String| PlanError {
        host: Some(host.to_string()),
        resource,
        message,
    };
    // Template variables: global, then the host's own, with env values pinned by the inputs.
    let mut vars = BTreeMap::new();
    let host_cfg = cfg.host(host);
    let host_vars = host_cfg.map(|h| &h.vars);
    for (k, v) in cfg.vars.iter().chain(host_vars.into_iter().flatten()) {
        match resolve_value(inputs, v) {
            Ok(s) => {
                vars.insert(k.clone(), s);
            }
            Err(m) => errors.push(err(None, format!("variable `{k}`: {m}"))),
        }
    }
    let tags: Vec<String> = host_cfg.map(|h| h.tags.clone()).unwrap_or_default();
    let becomes = host_becomes(cfg, host);
    let base = ResolveCtx {
        host,
        facts,
        sudo: becomes,
        inputs,
        vars: &vars,
        host_tags: &tags,
    };
    let when = |expr: &str| -> Result<bool, minijinja::Error> {
        let env = crate::syntax::expr::environment();
        let e = env.compile_expression(expr)?;
        e.eval(base.template_context()).map(|v| v.is_true())
    };
    let d = &cfg.defaults;
    let mut entries = Vec::new();
    // Handlers still pending from earlier runs are planned as if notified again.
    let pending: Vec<PendingHandler> = inputs
        .pending_handlers(host)
        .iter()
        .filter(|p| cfg.handlers.iter().any(|h| h.name.value == p.handler))
        .cloned()
        .collect();
    let mut notified: Vec<String> = pending.iter().map(|p| p.handler.clone()).collect();
    let add = |entries: &mut Vec<Entry>,
               errors: &mut Vec<PlanError>,
               r: &ConfigResource,
               key: String,
               task: &str,
               role: Role,
               task_cfg: Option<&Task>,
               skip: Option<String>| {
        let location = loaded.sources.location(r.span);
        let own_deadline = resources::own_deadline(&r.kind);
        let retry = Retry {
            // The task's own timeout bounds the whole task on a host (the executor); a
            // resource's bounds its own action, and the earlier deadline wins.
            timeout: own_deadline.or(r.common.timeout).or(d.command_timeout),
            retries: r
                .common
                .retries
                .or(task_cfg.and_then(|t| t.retries))
                .or(d.retries)
                .unwrap_or(0),
            retry_delay: r
                .common
                .retry_delay
                .or(task_cfg.and_then(|t| t.retry_delay))
                .or(d.retry_delay),
        };
        let skip = skip.or_else(|| {
            r.common.when.as_ref().and_then(|w| match when(&w.value) {
                Ok(true) => None,
                Ok(false) => Some(format!("skipped: when \"{}\" is false", w.value)),
                Err(e) => {
                    errors.push(err(
                        Some(format!("{} ({location})", r.kind.type_name())),
                        format!("cannot evaluate when: {e}"),
                    ));
                    Some("skipped: when could not be evaluated".into())
                }
            })
        });
        let sudo = r.common.sudo.unwrap_or(becomes);
        let resource = match skip {
            Some(reason) => Included::Skipped(reason),
            None => {
                let ctx = ResolveCtx { sudo, ..base };
                match resources::resolve(&r.kind, &ctx) {
                    Ok(res) => Included::Resource(res),
                    Err(e) => {
                        errors.push(err(
                            Some(format!("{} ({location})", r.kind.type_name())),
                            e.to_string(),
                        ));
                        return;
                    }
                }
            }
        };
        entries.push(Entry {
            key,
            task: task.to_string(),
            role,
            kind: r.kind.resource_type(),
            sudo,
            label: r.common.label.clone(),
            config_label: match resource {
                Included::Skipped(_) => resources::label(&r.kind, base.inputs),
                _ => String::new(),
            },
            location,
            notify: r.common.notify.iter().map(|n| n.value.clone()).collect(),
            retry,
            probe: resource.resource().map(|r| r.probe_owned()),
            resource,
        });
    };
    for (tp, &ti) in selected.tasks.iter().zip(&selected.indices) {
        if !tp.hosts.iter().any(|h| h == host) {
            continue;
        }
        let t = &cfg.tasks[ti];
        let task_skip = match &t.when {
            None => None,
            Some(w) => match when(&w.value) {
                Ok(true) => None,
                Ok(false) => Some(format!("skipped: task when \"{}\" is false", w.value)),
                Err(e) => {
                    errors.push(err(
                        None,
                        format!("task `{}`: cannot evaluate when: {e}", t.name.value),
                    ));
                    Some("skipped".into())
                }
            },
        };
        for (n, r) in t.resources.iter().enumerate() {
            add(
                &mut entries,
                &mut errors,
                r,
                format!("{}#{}", t.name.value, n + 1),
                &t.name.value,
                Role::Task,
                Some(t),
                task_skip.clone(),
            );
            if task_skip.is_none() {
                for h in &r.common.notify {
                    if !notified.contains(&h.value) {
                        notified.push(h.value.clone());
                    }
                }
            }
        }
        for (n, r) in t.health_check.iter().enumerate() {
            add(
                &mut entries,
                &mut errors,
                r,
                format!("{}#check{}", t.name.value, n + 1),
                &t.name.value,
                Role::HealthCheck,
                Some(t),
                task_skip.clone(),
            );
        }
    }
    // Handlers in definition order, once per host, if anything on this host may notify them.
    for h in cfg
        .handlers
        .iter()
        .filter(|h| notified.contains(&h.name.value))
    {
        for (n, r) in h.resources.iter().enumerate() {
            add(
                &mut entries,
                &mut errors,
                r,
                format!("handler:{}#{}", h.name.value, n + 1),
                &h.name.value,
                Role::Handler,
                None,
                None,
            );
        }
    }
    // Two resources managing the same thing on one host would fight; refuse the plan.
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for e in &entries {
        if let Some(r) = e.resource.resource() {
            if e.role == Role::Handler || !e.kind.exclusive() {
                continue;
            }
            let id = r.id();
            if let Some(first) = seen.get(&id) {
                errors.push(err(
                    Some(format!("{} ({})", e.kind, e.location)),
                    format!(
                        "manages {} which {} already manages; one resource per path or account",
                        id, first
                    ),
                ));
            } else {
                seen.insert(id, &e.location);
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Probes read what the steps will change; where steps need root, so may the probe.
    let probe_sudo = facts.uid != 0
        && entries
            .iter()
            .any(|e| e.resource.resource().is_some() && e.sudo);
    Ok(PreparedHost {
        name: host.to_string(),
        connection: match inputs.discovered_host(host) {
            Some(d) => connection::of_discovered(cfg, d),
            None => connection::of_host(cfg, host),
        },
        facts_digest: digest_facts(facts),
        probe_sudo,
        pending_handlers: pending,
        held_secrets: entries
            .iter()
            .filter_map(|e| match &e.resource {
                Included::Resource(r) => Some(r.id()),
                Included::Skipped(_) => None,
            })
            .filter(|id| inputs.held_secrets(host, id))
            .collect(),
        entries,
        secrets: inputs.shared_secret_values(),
    })
}

fn resolve_value(inputs: &Inputs, v: &Value) -> Result<String, EnvUnset> {
    match v {
        Value::Literal(s) => Ok(s.clone()),
        Value::Env(n) => inputs
            .env_value(n)
            .map(str::to_string)
            .ok_or_else(|| EnvUnset(n.clone())),
        // Templates see a placeholder; the file resource renders the real content only to hash
        // it, and the executor substitutes the value at apply (docs/secrets.md).
        Value::Secret(n) => Ok(crate::secrets::placeholder::placeholder(n)),
    }
}

pub fn digest_facts(f: &Facts) -> String {
    let json = serde_json::to_vec(f).expect("facts serialize");
    blake3::hash(&json).to_hex()[..32].to_string()
}

impl PreparedHost {
    fn specs(&self) -> Vec<probe::Spec<'_>> {
        self.entries
            .iter()
            .filter_map(|e| e.probe.as_ref().map(probe::Owned::spec))
            .collect()
    }

    /// The single probe script for this host.
    pub fn probe_script(&self) -> String {
        probe::script(&self.specs())
    }

    /// Keys of the resources the probe script covers, in section order.
    pub fn probe_keys(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.resource.resource().is_some())
            .map(|e| e.key.clone())
            .collect()
    }

    /// Compares desired with observed state; returns the host's plan and the blobs it uploads.
    pub fn finish(self, probe_output: &str) -> HostOutcome {
        let sections =
            probe::split(&self.specs(), probe_output, self.secrets.seal_key()).map_err(|m| {
                vec![PlanError {
                    host: Some(self.name.clone()),
                    resource: None,
                    message: format!("probe failed: {m}"),
                }]
            })?;
        self.finish_sections(sections)
    }

    /// [`PreparedHost::finish`] from already split sections, one per [`PreparedHost::probe_keys`].
    pub fn finish_sections(self, sections: Vec<probe::Section>) -> HostOutcome {
        let host = self.name.clone();
        if sections.len() != self.probe_keys().len() {
            return Err(vec![PlanError {
                host: Some(host),
                resource: None,
                message: format!(
                    "probe returned {} sections for {} resources",
                    sections.len(),
                    self.probe_keys().len()
                ),
            }]);
        }
        let mut sections = sections.into_iter();
        let mut errors = Vec::new();
        // Sized once: a plan holds every host's resources at once, and growing by doubling left
        // a third of each host's list unused (28 MiB at 10,000 hosts of 10 resources).
        let mut resources = Vec::with_capacity(self.entries.len());
        let mut contents = Contents::default();
        // By resource (as `resources`): the host path each makes or writes, and whether its
        // change puts a directory in place of a link there.
        let mut paths: Vec<Option<(String, bool)>> = Vec::with_capacity(self.entries.len());
        for e in self.entries {
            let (id, label, change, probe, fingerprint, path) = match e.resource {
                Included::Skipped(reason) => {
                    let label = e.label.clone().unwrap_or_else(|| e.config_label.clone());
                    (
                        String::new(),
                        label,
                        resources::Change::no_op(reason),
                        None,
                        String::new(),
                        None,
                    )
                }
                Included::Resource(r) => {
                    let mut probe = e.probe;
                    let section = sections.next().expect("one section per probed resource");
                    let name = format!("{} ({})", r.label(), e.location);
                    if section.status != 0 {
                        errors.push(PlanError {
                            host: Some(host.clone()),
                            resource: Some(name),
                            message: format!(
                                "probe exited with status {}: {}",
                                section.status,
                                section.output.trim()
                            ),
                        });
                        continue;
                    }
                    let mut observed = match Observed::parse(&section.output) {
                        Ok(o) => o,
                        Err(m) => {
                            errors.push(PlanError {
                                host: Some(host.clone()),
                                resource: Some(name),
                                message: m.to_string(),
                            });
                            continue;
                        }
                    };
                    secret_guard::guard(
                        &mut observed,
                        probe.as_mut().and_then(|p| p.batch.as_mut()),
                        &self.secrets,
                        self.held_secrets.contains(&r.id()),
                    );
                    // What does not exist yet may be made by a change earlier in this plan (a
                    // package installing a service's unit); the resource knows which could.
                    let planned = match r.plan(&observed) {
                        Err(resources::ResourceError::Invalid(m)) => {
                            let changed: Vec<ResourceType> = resources
                                .iter()
                                .filter_map(|p: &PlannedResource| {
                                    (p.action != resources::Action::NoOp).then_some(p.kind)
                                })
                                .collect();
                            r.plan_if_created_earlier(&changed)
                                .ok_or(resources::ResourceError::Invalid(m))
                        }
                        other => other,
                    };
                    let label = self
                        .secrets
                        .redact(&e.label.clone().unwrap_or_else(|| r.label()));
                    match planned {
                        Ok(mut c) => {
                            secret_guard::redact_change(&mut c, &self.secrets);
                            let path = r.path().map(str::to_string);
                            (r.id(), label, c, probe, observed.fingerprint(), path)
                        }
                        Err(m) => {
                            errors.push(PlanError {
                                host: Some(host.clone()),
                                resource: Some(self.secrets.redact(&name)),
                                message: self.secrets.redact(&m.to_string()),
                            });
                            continue;
                        }
                    }
                }
            };
            for b in &change.blobs {
                contents
                    .blobs
                    .insert(blake3::hash(b).to_hex().to_string(), b.clone());
            }
            contents.streamed.extend(change.streamed.iter().cloned());
            let (probe, probe_batch, probe_exists, probe_inline) = match probe {
                Some(p) => (p.snippet, p.batch, p.exists, p.inline),
                None => (String::new(), None, Vec::new(), false),
            };
            let replaced = change.replaces_link;
            resources.push(PlannedResource {
                key: e.key,
                task: e.task,
                role: e.role,
                id,
                kind: e.kind,
                label,
                action: change.action,
                reason: change.reason,
                fields: change.fields,
                diff: change.diff,
                steps: change.steps,
                probe,
                probe_batch,
                probe_inline,
                probe_exists,
                fingerprint,
                notify: e.notify,
                undo: change.undo,
                retry: e.retry,
            });
            paths.push(path.map(|p| (p, replaced)));
        }
        errors.extend(under_replaced_links(&host, &resources, &paths));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok((
            HostPlan {
                name: self.name,
                connection: self.connection,
                facts_digest: self.facts_digest,
                probe_sudo: self.probe_sudo,
                pending_handlers: self.pending_handlers,
                resources,
            },
            contents,
        ))
    }
}

/// Resources under a directory that replaces a symbolic link: their probe looked through the
/// link at what it points to, which is not where apply will write, so their plan would be of
/// another place.
fn under_replaced_links(
    host: &str,
    resources: &[PlannedResource],
    paths: &[Option<(String, bool)>],
) -> Vec<PlanError> {
    let replaced: Vec<&str> = paths
        .iter()
        .flatten()
        .filter(|(_, replaces_link)| *replaces_link)
        .map(|(p, _)| p.as_str())
        .collect();
    resources
        .iter()
        .zip(paths)
        .filter_map(|(r, path)| {
            let (path, _) = path.as_ref()?;
            let dir = replaced
                .iter()
                .find(|d| path.starts_with(&format!("{}/", d.trim_end_matches('/'))))?;
            Some(PlanError {
                host: Some(host.to_string()),
                resource: Some(r.label.clone()),
                message: format!(
                    "it is under {dir}, a symbolic link this plan replaces with a directory: what \
                     was probed is what the link points to. Apply the directory first (a plan of \
                     its own), then plan the rest"
                ),
            })
        })
        .collect()
}

/// Puts the plan together: hosts in selection order, blobs, summary.
pub fn assemble(
    cfg: &Config,
    config_name: &str,
    selection: Selection,
    inputs: &Inputs,
    selected: &Selected,
    hosts: Vec<(HostPlan, Contents)>,
) -> Plan {
    let mut summary = Summary::default();
    let mut blobs = BTreeMap::new();
    let mut streamed = BTreeMap::new();
    let mut host_plans = Vec::new();
    for (h, b) in hosts {
        for r in &h.resources {
            if r.role != Role::Handler {
                summary.add(r.action);
            }
        }
        for (k, v) in b.blobs {
            blobs.insert(k, base64::engine::general_purpose::STANDARD.encode(v));
        }
        streamed.extend(b.streamed);
        host_plans.push(h);
    }
    Plan {
        format_version: FORMAT_VERSION.into(),
        nexus_version: env!("CARGO_PKG_VERSION").into(),
        config: config_name.to_string(),
        selection,
        inputs: inputs.manifest(),
        ssh: connection::ssh_settings(cfg),
        vault: (!inputs.manifest().secrets.is_empty()
            || uses_vault_for_notify(cfg)
            || vault_exists(cfg))
        .then(|| vault_ref(cfg)),
        state: cfg.state_ref(),
        rollback: None,
        notify: cfg
            .notifiers
            .iter()
            .map(crate::config::Notifier::to_plan)
            .collect(),
        tasks: selected.tasks.clone(),
        hosts: host_plans,
        blobs,
        streamed,
        summary,
    }
}

/// Plans offline from recorded facts and observed states, as the golden tests do: the same
/// functions `nexus plan` uses, with the two I/O steps replaced by recordings. `observed` gives
/// the probe output of the resource with the given key on the given host.
pub fn plan_offline(
    loaded: &Loaded,
    config_name: &str,
    selection: Selection,
    inputs: &Inputs,
    facts: &BTreeMap<String, Facts>,
    observed: &dyn Fn(&str, &str) -> String,
) -> Result<Plan, Vec<PlanError>> {
    let selected = select(&loaded.config, &selection, inputs.discovered()).map_err(|e| vec![e])?;
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for host in selected.hosts() {
        let Some(f) = facts.get(&host) else {
            errors.push(PlanError {
                host: Some(host.clone()),
                resource: None,
                message: "no facts recorded".into(),
            });
            continue;
        };
        match prepare_host(loaded, inputs, &selected, &host, f) {
            Err(e) => errors.extend(e),
            Ok(p) => {
                let sections = p
                    .probe_keys()
                    .iter()
                    .map(|k| probe::Section {
                        output: observed(&host, k),
                        status: 0,
                    })
                    .collect();
                match p.finish_sections(sections) {
                    Ok(h) => hosts.push(h),
                    Err(e) => errors.extend(e),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(assemble(
        &loaded.config,
        config_name,
        selection,
        inputs,
        &selected,
        hosts,
    ))
}
