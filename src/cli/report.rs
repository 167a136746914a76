//! Rendering a finished run (apply or run): the closing summary, or the JSON report, and the
//! webhook deliveries.

use serde_json::json;

use super::{Ctx, Format, emit, emit_json, note};
use crate::app::apply::Applied;
use crate::exec::{self, Status};
use crate::exit::Exit;

/// Prints the run's summary (or its JSON report) and returns the exit code it means.
pub fn finished(ctx: &Ctx, a: &Applied, format: Format) -> Exit {
    let report = &a.report;
    let run = a.run;
    let summary = serde_json::to_value(&a.summary).expect("summary serializes");
    if let Some(p) = &a.pins_written
        && !ctx.global.quiet
    {
        note(&format!("Updated {}", p.display()));
    }
    if let Some(r) = &a.recovered
        && !ctx.global.quiet
    {
        note(&format!(
            "note: took over a stale apply lock of pid {} on {} ({})",
            r.holder.pid, r.holder.hostname, r.reason
        ));
    }
    if format == Format::Json {
        let mut v = json!({
            "format_version": "1.0",
            "run": run.0,
            "summary": summary,
            "tasks": report.tasks,
            "resources": report.results,
            "notifications": a.deliveries,
        });
        if let Some(rb) = &a.rollback {
            v["rollback"] = match rb {
                Ok(rb) => json!({
                    "task": rb.task,
                    "run": rb.run.0,
                    "summary": rb.summary,
                    "irreversible": rb.irreversible,
                    "resources": rb.report.results,
                    "notifications": rb.deliveries,
                }),
                Err(e) => json!({ "error": e.to_string() }),
            };
        }
        emit_json(&v);
    } else if !ctx.global.quiet || !report.ok {
        let s = &a.summary;
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
            "Tasks: {}/{} succeeded\n",
            s.tasks.succeeded, s.tasks.total
        ));
        let mut resources = format!(
            "Resources: {} changed, {} failed, {} unchanged, {} not run",
            s.changed, s.failed, s.unchanged, s.not_run
        );
        if s.checks > 0 {
            resources.push_str(&format!(
                ", {} check{} passed",
                s.checks,
                if s.checks == 1 { "" } else { "s" }
            ));
        }
        out.push_str(&format!("{resources}\n"));
        let mut parts = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for r in &report.results {
            let h = r.host.as_str();
            if seen.contains(&h) {
                continue;
            }
            seen.push(h);
            let mine = || report.results.iter().filter(|r| r.host == h);
            let state = if report.failed_hosts.iter().any(|f| f == h)
                || mine().any(|r| r.status == Status::Failed)
            {
                "failed"
            } else if !mine().any(|r| r.host_started) {
                "not run"
            } else {
                "ok"
            };
            parts.push(format!("{h} ({state})"));
        }
        out.push_str(&format!("Hosts: {}\n", parts.join(", ")));
        if let Some(s) = &report.stopped {
            out.push_str(&format!("Stopped: {s}\n"));
        }
        out.push_str(&format!("Run: {run} (nexus history {run})\n"));
        if let Some(rb) = &a.rollback {
            out.push_str(&rollback_text(rb));
        }
        emit(&out);
    }
    if format != Format::Json {
        deliveries(ctx, &a.deliveries);
        if let Some(Ok(rb)) = &a.rollback {
            deliveries(ctx, &rb.deliveries);
        }
    }
    // A webhook that could not be reached is reported above; it never changes the result.
    match a.interrupted {
        Some(exit) => exit,
        None if report.ok => Exit::Ok,
        None => Exit::Failed,
    }
}

/// The closing lines of an automatic rollback: what it restored, what it could not, and whether
/// the health checks pass again.
fn rollback_text(rb: &Result<crate::app::apply::AutoRollback, crate::app::Error>) -> String {
    let rb = match rb {
        Ok(rb) => rb,
        Err(e) => return format!("Rollback: NOT DONE: {e}\n"),
    };
    let s = &rb.summary;
    let mut out = format!(
        "Rollback of task {}: {} (run {}, nexus history {})\n",
        rb.task,
        if rb.report.ok { "SUCCESS" } else { "FAILED" },
        rb.run,
        rb.run
    );
    out.push_str(&format!(
        "  restored {} resource{} on {}\n",
        s.changed,
        if s.changed == 1 { "" } else { "s" },
        rb.plan
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for r in rb
        .report
        .results
        .iter()
        .filter(|r| r.status == Status::Failed)
    {
        let why = r.error.as_deref().unwrap_or("failed");
        let what = if r.is_check() {
            "health check"
        } else {
            "restore"
        };
        out.push_str(&format!(
            "  {what} failed on {}: {}: {why}\n",
            r.host, r.label
        ));
    }
    let checks: Vec<_> = rb.report.results.iter().filter(|r| r.is_check()).collect();
    if !checks.is_empty() {
        let passed = checks
            .iter()
            .filter(|r| r.status == Status::Succeeded)
            .count();
        out.push_str(&format!(
            "  health check after the rollback: {passed} of {} passed\n",
            checks.len()
        ));
    }
    for i in &rb.irreversible {
        out.push_str(&format!(
            "  not undone on {}: {}: {}\n",
            i.host, i.resource, i.reason
        ));
    }
    out
}

/// Prints delivery results: every line normally, failures even with --quiet.
pub fn deliveries(ctx: &Ctx, deliveries: &[crate::notify::Delivery]) {
    for d in deliveries {
        if !ctx.global.quiet || !d.ok {
            note(&d.line());
        }
    }
}

/// Live progress for a plan about to execute: bars on a terminal, lines otherwise, nothing with
/// `--quiet` or a machine format.
pub fn progress(ctx: &Ctx, plan: &crate::plan::Plan, format: Format) -> super::progress::Progress {
    let text = format == Format::Text && !ctx.global.quiet;
    super::progress::Progress::new(plan, text, ctx.color_stdout(), ctx.global.verbose)
}
