//! Executing a plan from the CLI, shared by `apply` and `run`: the apply lock, state recording
//! (one transaction per resource), progress lines, the closing summary and the JSON report.

use std::sync::Mutex;

use serde_json::json;

use super::{Ctx, Failure, Format, emit, emitln};
use crate::exec::{self, Event, Options, Report, Status, TaskStatus};
use crate::exit::Exit;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::state::{
    ActionRecord, ActionStatus, LockGuard, LockHolder, NewRun, RunId, RunKind, RunStatus,
    SqliteStore, StateError, StateStore, now_ms,
};

/// Opens the state database and takes the apply lock (exit 7 naming the holder when taken).
pub fn lock_state(
    ctx: &Ctx,
    path: &std::path::Path,
    command: &str,
) -> Result<(SqliteStore, LockGuard), Failure> {
    let store =
        crate::state::open(path).map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    let guard = match store.lock(&LockHolder::current(command)) {
        Ok(g) => g,
        Err(e @ StateError::Locked { .. }) => {
            return Err(Failure::new(
                Exit::Locked,
                format!(
                    "error: {e}\nIf that process is gone for good, run `nexus state --force-unlock`."
                ),
            ));
        }
        Err(e) => return Err(Failure::new(Exit::Failed, format!("error: {e}"))),
    };
    if let Some(r) = guard.recovered()
        && !ctx.global.quiet
    {
        eprintln!(
            "note: took over a stale apply lock of pid {} on {} ({})",
            r.holder.pid, r.holder.hostname, r.reason
        );
    }
    Ok((store, guard))
}

fn action_status(s: Status) -> ActionStatus {
    match s {
        Status::Succeeded => ActionStatus::Succeeded,
        Status::Failed => ActionStatus::Failed,
        Status::Skipped => ActionStatus::Skipped,
        Status::NotRun => ActionStatus::NotRun,
    }
}

pub fn new_run(plan: &Plan, hash: &str, kind: RunKind) -> NewRun {
    NewRun {
        plan_hash: hash.to_string(),
        config: plan.config.clone(),
        kind,
        tasks: plan.tasks.iter().map(|t| t.name.clone()).collect(),
        hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
        started_at: now_ms(),
    }
}

/// Executes `plan` under an already recorded run, recording every resource as it finishes.
pub async fn execute(
    ctx: &Ctx,
    plan: &Plan,
    inv: &Inventory,
    opts: &Options,
    store: &SqliteStore,
    run: RunId,
    format: Format,
) -> Result<Report, Failure> {
    let record_error: Mutex<Option<String>> = Mutex::new(None);
    let pending_noops: Mutex<Vec<ActionRecord>> = Mutex::new(Vec::new());
    let text = format == Format::Text && !ctx.global.quiet;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let progress = super::progress::Progress::new(plan, text, terminal, ctx.global.verbose);
    let events = |e: Event| {
        if let Event::Resource(r) = &e {
            let rec = ActionRecord {
                host: r.host.clone(),
                key: r.key.clone(),
                task: r.task.clone(),
                resource_id: r.id.clone(),
                kind: r.kind.clone(),
                label: r.label.clone(),
                action: r.action,
                status: action_status(r.status),
                exit_code: r.exit_code,
                duration_ms: r.duration_ms,
                attempts: r.attempts,
                output_tail: r.output_tail.clone(),
                error: r.error.clone(),
                fingerprint_after: None,
                finished_at: now_ms(),
            };
            // No-op resources did nothing anywhere: they are written together, in one
            // transaction, before the next action that did something (or at the end).
            let mut pending = pending_noops.lock().expect("poisoned");
            let result = if rec.action == crate::resources::Action::NoOp
                && rec.status == ActionStatus::Skipped
            {
                pending.push(rec);
                Ok(())
            } else {
                store
                    .record_actions(run, &pending)
                    .and_then(|()| store.record_action(run, &rec))
                    .map(|()| pending.clear())
            };
            if let Err(err) = result {
                record_error
                    .lock()
                    .expect("poisoned")
                    .get_or_insert(err.to_string());
            }
        }
        progress.event(&e);
    };
    let env = |k: &str| std::env::var(k).ok();
    let report = exec::execute(plan, inv, opts, &env, &events).await;
    let pending = pending_noops.into_inner().expect("poisoned");
    if let Err(err) = store.record_actions(run, &pending) {
        record_error
            .lock()
            .expect("poisoned")
            .get_or_insert(err.to_string());
    }
    progress.finish();
    if let Some(e) = record_error.into_inner().expect("poisoned") {
        return Err(Failure::new(
            Exit::Failed,
            format!("error: recording to the state database failed: {e}"),
        ));
    }
    Ok(report)
}

/// Records the end of the run and prints the summary (or the JSON report). Returns the exit code.
pub fn finish(
    ctx: &Ctx,
    store: &SqliteStore,
    run: RunId,
    report: &Report,
    format: Format,
    deliveries: &[crate::notify::Delivery],
) -> Result<Exit, Failure> {
    let status = if report.ok {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    let count = |s: Status| report.results.iter().filter(|r| r.status == s).count();
    let changed = report.results.iter().filter(|r| r.changed).count();
    let tasks_ok = report
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .count();
    let summary = json!({
        "status": if report.ok { "success" } else { "failed" },
        "duration_ms": report.duration_ms,
        "tasks": { "succeeded": tasks_ok, "total": report.tasks.len() },
        "changed": changed,
        "failed": count(Status::Failed),
        "skipped": count(Status::Skipped),
        "not_run": count(Status::NotRun),
        "failed_hosts": report.failed_hosts,
        "stopped": report.stopped,
        "notifications": deliveries,
    });
    store
        .finish_run(run, status, &summary.to_string())
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}")))?;
    if format == Format::Json {
        let v = json!({
            "format_version": "1.0",
            "run": run.0,
            "summary": summary,
            "tasks": report.tasks,
            "resources": report.results,
            "notifications": deliveries,
        });
        emitln(&serde_json::to_string_pretty(&v).expect("json"));
    } else if !ctx.global.quiet || !report.ok {
        let mut out = String::from("\n========================================\n");
        out.push_str(&format!(
            "Status: {}\n",
            if report.ok { "SUCCESS" } else { "FAILED" }
        ));
        out.push_str(&format!(
            "Duration: {}\n",
            exec::human_ms(report.duration_ms)
        ));
        out.push_str(&format!(
            "Tasks: {tasks_ok}/{} succeeded\n",
            report.tasks.len()
        ));
        out.push_str(&format!(
            "Resources: {changed} changed, {} failed, {} unchanged, {} not run\n",
            count(Status::Failed),
            count(Status::Skipped)
                + report
                    .results
                    .iter()
                    .filter(|r| r.status == Status::Succeeded && !r.changed)
                    .count(),
            count(Status::NotRun)
        ));
        let mut hosts: Vec<&str> = report.results.iter().map(|r| r.host.as_str()).collect();
        hosts.dedup();
        let mut seen = Vec::new();
        let mut parts = Vec::new();
        for h in hosts {
            if seen.contains(&h) {
                continue;
            }
            seen.push(h);
            let failed = report.failed_hosts.iter().any(|f| f == h)
                || report
                    .results
                    .iter()
                    .any(|r| r.host == h && r.status == Status::Failed);
            parts.push(format!("{h} ({})", if failed { "failed" } else { "ok" }));
        }
        out.push_str(&format!("Hosts: {}\n", parts.join(", ")));
        if let Some(s) = &report.stopped {
            out.push_str(&format!("Stopped: {s}\n"));
        }
        out.push_str(&format!("Run: {run} (nexus history {run})\n"));
        emit(&out);
    }
    if format != Format::Json {
        print_deliveries(ctx, deliveries);
    }
    // A webhook that could not be reached is reported above; it never changes the result.
    Ok(if report.ok { Exit::Ok } else { Exit::Failed })
}

/// At plan time: reads the fingerprints of every secret the configuration uses into `inputs` (so
/// the plan records them, never the values) and returns the values a run needs now: the sudo
/// passwords probes may need, the secrets file contents hold (handed to `inputs` too, for
/// comparing contents), and with `all` every value (for `nexus run`, which executes at once).
pub fn plan_secrets(
    cfg: &crate::config::Config,
    inputs: &mut crate::inputs::Inputs,
    all: bool,
) -> Result<std::sync::Arc<crate::secrets::Resolved>, Failure> {
    let sudo_names: Vec<String> = cfg
        .hosts
        .iter()
        .filter_map(|h| h.sudo_password.as_ref())
        .chain(cfg.defaults.sudo_password.as_ref())
        .filter_map(|v| match v {
            crate::config::Value::Secret(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let names = crate::inputs::secret_names(cfg);
    if names.is_empty() {
        return Ok(Default::default());
    }
    let env = |k: &str| std::env::var(k).ok();
    let vault =
        crate::secrets::Vault::open(cfg.vault.as_ref(), &cfg.base_dir, &env).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!("error: the configuration uses secrets, but {e}"),
            )
        })?;
    let mut fingerprints = std::collections::BTreeMap::new();
    for n in &names {
        let fp = vault.fingerprint_of(n).ok_or_else(|| {
            Failure::new(
                Exit::Failed,
                format!(
                    "error: secret {n:?} is not in the vault; add it with `nexus secret set {n}`"
                ),
            )
        })?;
        fingerprints.insert(n.clone(), fp);
    }
    inputs.set_secret_fingerprints(fingerprints);
    // File contents that hold secrets are compared by the hash of the real content, so planning
    // reads those values too (in memory only; docs/secrets.md).
    let content_names = crate::inputs::content_secret_names(cfg);
    let wanted: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| all || sudo_names.iter().any(|s| s == n) || content_names.contains(*n))
        .collect();
    let resolved =
        crate::secrets::Resolved::from_vault(&vault, wanted.into_iter().map(|n| (n, None)))
            .map_err(|e| Failure::new(Exit::Failed, format!("error: {}", e.join("; "))))?;
    let resolved = std::sync::Arc::new(resolved);
    inputs.set_secret_values(resolved.clone());
    Ok(resolved)
}

/// At apply time: reads the secrets a saved plan refers to from the vault the plan names, and
/// refuses the plan (stale) if any changed since planning.
pub fn apply_secrets(
    plan: &Plan,
    base: &std::path::Path,
) -> Result<std::sync::Arc<crate::secrets::Resolved>, Failure> {
    let mut names: Vec<String> = plan.inputs.secrets.keys().cloned().collect();
    for h in &plan.hosts {
        if let Some(crate::config::Value::Secret(n)) = &h.connection.sudo_password {
            names.push(n.clone());
        }
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(Default::default());
    }
    let Some(v) = &plan.vault else {
        return Err(Failure::new(
            Exit::PlanRefused,
            "error: the plan uses secrets but names no vault".to_string(),
        ));
    };
    let settings = crate::secrets::Settings {
        path: base.join(&v.path),
        key_file: v.key_file.as_ref().map(|k| base.join(k)),
        key_env: v.key_env.clone(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let vault = crate::secrets::Vault::open_at(&settings, &crate::secrets::Unlock::env(&env))
        .map_err(|e| Failure::new(Exit::Failed, format!("error: {e}\nNothing was executed.")))?;
    let resolved = crate::secrets::Resolved::from_vault(
        &vault,
        names
            .iter()
            .map(|n| (n.as_str(), plan.inputs.secrets.get(n).map(String::as_str))),
    )
    .map_err(|changed| {
        Failure::new(
            Exit::PlanStale,
            format!(
                "error: the plan is stale:\n  {}\nNothing was executed. Plan again.",
                changed.join("\n  ")
            ),
        )
    })?;
    Ok(std::sync::Arc::new(resolved))
}

/// Vault secrets the webhooks use (URLs, headers): credentials read when sending, never pinned.
pub fn notifier_secret_names(notifiers: &[crate::plan::PlanNotifier]) -> Vec<String> {
    let mut out = Vec::new();
    for n in notifiers {
        for v in std::iter::once(&n.url).chain(n.headers.values()) {
            if let crate::config::Value::Secret(name) = v {
                out.push(name.clone());
            }
        }
    }
    out
}

/// Reads the webhook secrets of a configuration from its vault (for `plan` drift and `run`).
pub fn notifier_secrets(
    cfg: &crate::config::Config,
    notifiers: &[crate::plan::PlanNotifier],
) -> Result<crate::secrets::Resolved, String> {
    let names = notifier_secret_names(notifiers);
    if names.is_empty() {
        return Ok(Default::default());
    }
    let env = |k: &str| std::env::var(k).ok();
    let vault = crate::secrets::Vault::open(cfg.vault.as_ref(), &cfg.base_dir, &env)
        .map_err(|e| e.to_string())?;
    crate::secrets::Resolved::from_vault(&vault, names.iter().map(|n| (n.as_str(), None)))
        .map_err(|e| e.join("; "))
}

/// Sends `event` to every webhook that wants it. Failures are reported, never fatal.
pub async fn notify(
    notifiers: &[crate::plan::PlanNotifier],
    event: &crate::notify::RunEvent,
    secrets: &crate::secrets::Resolved,
) -> Vec<crate::notify::Delivery> {
    let mut resolved = Vec::new();
    let mut failed = Vec::new();
    for n in notifiers {
        let cfg = n.to_config();
        let lookup = |v: &crate::config::Value| -> Result<String, String> {
            match v {
                crate::config::Value::Literal(s) => Ok(s.clone()),
                crate::config::Value::Env(var) => {
                    std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
                }
                crate::config::Value::Secret(name) => secrets
                    .get(name)
                    .map(str::to_string)
                    .ok_or_else(|| format!("secret {name:?} could not be read from the vault")),
            }
        };
        match crate::notify::ResolvedNotifier::resolve(&cfg, lookup) {
            Ok(r) => resolved.push(r),
            Err(e) => {
                if crate::notify::wants(&n.on, event.outcome) {
                    failed.push(crate::notify::Delivery::not_sent(
                        &n.name, n.template, None, e,
                    ));
                }
            }
        }
    }
    let mut out = crate::notify::notify(&resolved, event).await;
    out.extend(failed);
    out
}

/// Prints delivery results: every line normally, failures even with --quiet.
pub fn print_deliveries(ctx: &Ctx, deliveries: &[crate::notify::Delivery]) {
    for d in deliveries {
        if !ctx.global.quiet || !d.ok {
            eprintln!("{}", d.line());
        }
    }
}
