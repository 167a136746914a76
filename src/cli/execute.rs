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
                format!("error: {e}\nIf that process is gone for good, run `nexus state unlock`."),
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
    let text = format == Format::Text && !ctx.global.quiet;
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
            if let Err(err) = store.record_action(run, &rec) {
                record_error
                    .lock()
                    .expect("poisoned")
                    .get_or_insert(err.to_string());
            }
        }
        if text && let Some(line) = progress_line(&e, ctx.global.verbose) {
            emitln(&line);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let report = exec::execute(plan, inv, opts, &env, &events).await;
    if let Some(e) = record_error.into_inner().expect("poisoned") {
        return Err(Failure::new(
            Exit::Failed,
            format!("error: recording to the state database failed: {e}"),
        ));
    }
    Ok(report)
}

/// One line per event worth a line: tasks, batches, and every resource that did something.
fn progress_line(e: &Event, verbose: u8) -> Option<String> {
    match e {
        Event::TaskStarted { task, hosts } => Some(format!(
            "Task {task} ({hosts} host{})",
            if *hosts == 1 { "" } else { "s" }
        )),
        Event::BatchStarted {
            batch, of, hosts, ..
        } if *of > 1 => Some(format!("  batch {batch}/{of}: {}", hosts.join(", "))),
        Event::Resource(r) => {
            let tag = match r.status {
                Status::Succeeded => "[ok]  ",
                Status::Failed => "[fail]",
                Status::Skipped if verbose == 0 => return None,
                Status::Skipped => "[skip]",
                Status::NotRun => "[--]  ",
            };
            let mut line = format!("  {tag} {}: {} ({}", r.host, r.label, r.action.name());
            if r.status != Status::NotRun && r.status != Status::Skipped {
                line.push_str(&format!(", {}", exec::human_ms(r.duration_ms)));
            }
            if r.attempts > 1 {
                line.push_str(&format!(", {} attempts", r.attempts));
            }
            line.push(')');
            if let Some(err) = &r.error {
                line.push_str(&format!("\n         {err}"));
                let tail = r.output_tail.trim();
                if r.status == Status::Failed && !tail.is_empty() && !err.contains(tail) {
                    for l in tail
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        line.push_str(&format!("\n         | {l}"));
                    }
                }
            }
            Some(line)
        }
        Event::RolloutStopped { reason, .. } => Some(format!("  stopped: {reason}")),
        _ => None,
    }
}

/// Records the end of the run and prints the summary (or the JSON report). Returns the exit code.
pub fn finish(
    ctx: &Ctx,
    store: &SqliteStore,
    run: RunId,
    report: &Report,
    format: Format,
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
    Ok(if report.ok { Exit::Ok } else { Exit::Failed })
}
