//! `plan`: load the configuration and its inputs, read the secrets planning needs, connect to the
//! hosts, gather facts, probe and diff; optionally write the plan file and tell the webhooks that
//! asked for drift. `run` starts the same way ([`Live`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Error;
use super::secrets::{self, Needs, Source};
use crate::app::live::{self, LiveRequest, PlanEvent};
use crate::config::Loaded;
use crate::inputs::Inputs;
use crate::inventory::{Inventory, Overrides};
use crate::notify::{Delivery, RunEvent};
use crate::plan::{Plan, PlanNotifier, Selection, lockfile};
use crate::secrets::Resolved;

/// What to plan, and how to reach the hosts.
#[derive(Debug, Clone)]
pub struct Request {
    /// The root configuration file, as named on the command line.
    pub config: PathBuf,
    pub selection: Selection,
    /// Fail rather than change nexus.lock.
    pub locked: bool,
    pub overrides: Overrides,
    /// `-j`: hosts at work at once.
    pub parallel: usize,
    /// `--state`: a SQLite file or a `postgresql://` URL (app/state.rs).
    pub state: Option<String>,
    /// `plan --record`: leave a drift-check row in the state (`nexus history --drift`).
    pub record: bool,
}

/// A loaded configuration with its inputs resolved and the secrets this command reads.
pub struct Live {
    pub loaded: Loaded,
    pub inputs: Inputs,
    pub secrets: Arc<Resolved>,
    pub notifiers: Vec<PlanNotifier>,
    /// nexus.lock, when this command wrote it.
    pub pins_written: Option<PathBuf>,
    runtime: tokio::runtime::Runtime,
}

/// Which secret values a command reads at plan time, beyond the fingerprints every plan records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Only what probing needs: sudo passwords and the secrets file contents hold.
    Probing,
    /// Probing's, and the webhooks' for a drift notification.
    ProbingAndDrift,
    /// Every value: `run` executes at once.
    All,
}

/// A runtime for one command. Host work is I/O bound, so two worker threads suffice.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Loads and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    crate::config::load(path).map_err(Error::Config)
}

/// Checks task names given on the command line, suggesting a near name for a typo.
pub fn check_tasks(cfg: &crate::config::Config, names: &[String]) -> Result<Vec<usize>, Error> {
    names
        .iter()
        .map(|n| {
            cfg.tasks
                .iter()
                .position(|t| t.name.value == *n)
                .ok_or_else(|| {
                    let all: Vec<&str> = cfg.tasks.iter().map(|t| t.name.value.as_str()).collect();
                    let hint = match crate::config::suggest_name(n, all.iter().copied()) {
                        Some(s) => format!("; did you mean `{s}`?"),
                        None => format!("; tasks: {}", all.join(", ")),
                    };
                    Error::UnknownTask {
                        name: n.clone(),
                        hint,
                    }
                })
        })
        .collect()
}

impl Live {
    /// Everything before contacting a host: configuration, inputs, secrets, nexus.lock, targets.
    pub fn prepare(req: &Request, reads: Reads) -> Result<Live, Error> {
        let loaded = load(&req.config)?;
        let cfg = &loaded.config;
        check_tasks(cfg, &req.selection.tasks)?;
        let env = |k: &str| std::env::var(k).ok();
        let mut inputs = super::inputs::collect(&loaded, &env)?;
        let notifiers: Vec<PlanNotifier> = cfg
            .notifiers
            .iter()
            .map(crate::config::Notifier::to_plan)
            .collect();
        let secrets = plan_secrets(cfg, &mut inputs, &notifiers, reads)?;
        let location = live_state(req, cfg)?;
        let store = match location.exists() {
            true => Some(location.open()?),
            false => None,
        };
        inputs.set_pending_handlers(pending_handlers(store.as_deref())?);
        inputs.set_held_secrets(held_secrets(store.as_deref())?);
        let runtime = runtime()?;
        let path = crate::pins::path_for(&req.config);
        let mode = if req.locked {
            crate::pins::Mode::Locked
        } else {
            crate::pins::Mode::Refresh
        };
        let resolved = runtime.block_on(crate::pins::resolve(cfg, &path, mode))?;
        let pins_written = resolved.written.then_some(path);
        inputs.set_pinned(resolved.pins.discovery, resolved.content);
        for t in &req.selection.targets {
            let known = t == crate::config::LOCAL_HOST
                || cfg.host(t).is_some()
                || cfg.group(t).is_some()
                || cfg.tailscale_group(t).is_some()
                || inputs.discovered_host(t).is_some();
            if !known {
                return Err(Error::UnknownTarget(t.clone()));
            }
        }
        Ok(Live {
            loaded,
            inputs,
            secrets,
            notifiers,
            pins_written,
            runtime,
        })
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The transports of every host the configuration may reach, with the sudo secrets read.
    pub fn inventory(&self, overrides: &Overrides) -> Result<Inventory, Error> {
        let mut inv =
            Inventory::for_config(&self.loaded.config, self.inputs.discovered(), overrides)?;
        inv.set_secrets(self.secrets.clone());
        Ok(inv)
    }

    /// Plans on the hosts through `inv`.
    pub async fn plan(
        &self,
        req: &Request,
        inv: &Inventory,
        after: live::AfterPlanning,
        events: &(dyn Fn(PlanEvent) + Sync),
    ) -> Result<Plan, Vec<crate::planner::PlanError>> {
        let env = |k: &str| std::env::var(k).ok();
        let config_name = req.config.display().to_string();
        let live = LiveRequest {
            loaded: &self.loaded,
            config_name: &config_name,
            selection: req.selection.clone(),
            inputs: &self.inputs,
            parallel: req.parallel,
            after,
        };
        live::plan(live, inv, &env, events).await
    }
}

/// Where this command's state is: `--state`, the configuration's `state`, or the default file.
pub fn live_state(
    req: &Request,
    cfg: &crate::config::Config,
) -> Result<crate::state::Location, Error> {
    super::state::location(
        req.state.as_deref(),
        cfg.state_ref().as_ref(),
        &req.config,
        Some(&super::secrets::Source::Config(cfg)),
    )
}

/// Per host, the resources whose content held vault values when nexus last wrote it.
fn held_secrets(
    store: Option<&dyn crate::state::StateStore>,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>, Error> {
    let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> = Default::default();
    let Some(store) = store else {
        return Ok(out);
    };
    for (host, resource) in store.secret_holders()? {
        out.entry(host).or_default().insert(resource);
    }
    Ok(out)
}

/// The handlers still pending per host, from the state database when there is one (planning
/// never creates it).
fn pending_handlers(
    store: Option<&dyn crate::state::StateStore>,
) -> Result<std::collections::BTreeMap<String, Vec<crate::plan::PendingHandler>>, Error> {
    let mut out: std::collections::BTreeMap<String, Vec<crate::plan::PendingHandler>> =
        Default::default();
    let Some(store) = store else {
        return Ok(out);
    };
    for p in store.pending_handlers()? {
        out.entry(p.host)
            .or_default()
            .push(crate::plan::PendingHandler {
                handler: p.handler,
                since_run: p.since_run,
                notified_by: p.notified_by,
            });
    }
    Ok(out)
}

/// Records the fingerprint of every secret the configuration uses into `inputs` (so the plan
/// holds them, never the values) and reads the values `reads` asks for, each once.
fn plan_secrets(
    cfg: &crate::config::Config,
    inputs: &mut Inputs,
    notifiers: &[PlanNotifier],
    reads: Reads,
) -> Result<Arc<Resolved>, Error> {
    let names = cfg.secret_names();
    let mut needs = Needs::default();
    // Host content that holds any vault value is never shown, whether the configuration uses
    // the value or not (docs/secrets.md).
    needs.recognise_all();
    let connections = crate::planner::connection::all(cfg, &Default::default());
    needs.sudo(connections.iter().map(|(_, c)| c));
    // File contents that hold secrets are compared by the hash of the real content, so planning
    // reads those values too (in memory only; docs/secrets.md).
    for n in cfg.content_secret_names() {
        needs.require(&n, None);
    }
    if reads == Reads::All {
        for n in &names {
            needs.require(n, None);
        }
    }
    if reads != Reads::Probing {
        needs.notifiers(notifiers);
    }
    let env = |k: &str| std::env::var(k).ok();
    let source = Source::Config(cfg);
    if names.is_empty() {
        // Nothing to pin; webhook credentials alone never stop a command.
        let resolved = secrets::resolve(&source, &needs, &env)?;
        inputs.set_secret_values(resolved.clone());
        return Ok(resolved);
    }
    let vault = secrets::open(&source, &env)?;
    inputs.set_secret_fingerprints(secrets::fingerprints(&vault, &names)?);
    let resolved = Arc::new(secrets::resolve_in(&vault, &needs)?);
    inputs.set_secret_values(resolved.clone());
    Ok(resolved)
}

/// What `plan` produced.
pub struct Planned {
    pub plan: Plan,
    /// See [`Planned::hash`].
    hash: std::sync::OnceLock<String>,
    /// nexus.lock, when planning wrote it.
    pub pins_written: Option<PathBuf>,
    /// Drift notifications sent (with `--detailed-exitcode`).
    pub deliveries: Vec<Delivery>,
    /// The drift check recorded (`--record`), by id.
    pub drift_check: Option<i64>,
    /// The signature written beside the plan file (`--sign`).
    pub signature: Option<PathBuf>,
}

impl Planned {
    /// The plan's hash ([`lockfile::hash`]), computed on first use.
    pub fn hash(&self) -> &str {
        self.hash.get_or_init(|| lockfile::hash(&self.plan))
    }
}

/// Where `plan -o` writes, and whether it signs what it wrote.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub file: &'a Path,
    pub sign: Option<&'a super::signature::SignRequest>,
}

/// Plans; writes the plan file to `out` when given (signed, if asked); with `notify_drift`,
/// tells the webhooks that asked for drift when the plan has changes.
pub fn plan(
    req: &Request,
    out: Option<Output<'_>>,
    notify_drift: bool,
    events: &(dyn Fn(PlanEvent) + Sync),
) -> Result<Planned, Error> {
    let reads = if notify_drift {
        Reads::ProbingAndDrift
    } else {
        Reads::Probing
    };
    let live = Live::prepare(req, reads)?;
    // A wrong key or passphrase fails before any host is contacted.
    let mut key = match out.and_then(|o| o.sign) {
        Some(sign) => Some(live.runtime().block_on(super::signature::load_key(sign))?),
        None => None,
    };
    let plan = live.runtime().block_on(async {
        let inv = live.inventory(&req.overrides)?;
        let r = live
            .plan(req, &inv, live::AfterPlanning::Close, events)
            .await;
        inv.close().await;
        r.map_err(|errors| Error::PlanFailed {
            errors,
            asked_for_file: out.is_some(),
        })
    })?;
    let mut signature = None;
    if let Some(out) = out {
        lockfile::write(out.file, &plan).map_err(Error::WritePlan)?;
        signature = match &mut key {
            Some(key) => Some(
                live.runtime()
                    .block_on(super::signature::sign_file(key, out.file))?,
            ),
            None => {
                super::signature::remove_stale_sig(out.file)?;
                None
            }
        };
    }
    // Hashing serializes the whole plan: a no-op `nexus plan` that shows it, records nothing
    // and notifies no one never needs it.
    let hash = std::sync::OnceLock::new();
    let drift_check = match req.record {
        true => Some(record_drift(
            req,
            &live,
            &plan,
            hash.get_or_init(|| lockfile::hash(&plan)),
        )?),
        false => None,
    };
    let mut deliveries = Vec::new();
    if notify_drift
        && !plan.notify.is_empty()
        && let Some(event) =
            RunEvent::drift(&plan, Some(hash.get_or_init(|| lockfile::hash(&plan))))
        && super::notify::wanted(&plan.notify, &event)
    {
        deliveries =
            live.runtime()
                .block_on(super::notify::send(&plan.notify, &event, &live.secrets));
    }
    Ok(Planned {
        plan,
        hash,
        pins_written: live.pins_written,
        deliveries,
        drift_check,
        signature,
    })
}

/// Writes the drift trail's row for `plan`: which hosts have changes, and the plan's hash.
fn record_drift(req: &Request, live: &Live, plan: &Plan, hash: &str) -> Result<i64, Error> {
    let store = live_state(req, &live.loaded.config)?.open()?;
    let changed =
        |h: &crate::plan::HostPlan| h.resources.iter().filter(|r| r.is_drift()).count() as u64;
    Ok(store.record_drift(&crate::state::NewDriftCheck {
        plan_hash: hash.to_string(),
        config: plan.config.clone(),
        hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
        drifted: plan
            .hosts
            .iter()
            .filter(|h| changed(h) > 0)
            .map(|h| h.name.clone())
            .collect(),
        changes: plan.hosts.iter().map(changed).sum(),
        checked_at: crate::state::now_ms(),
    })?)
}
