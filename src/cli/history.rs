//! `nexus history [RUN_ID]`: past applies and runs from the state database, or one run's actions;
//! `--prune KEEP` applies retention.

use clap::Args;
use serde_json::json;

use super::{CmdResult, Ctx, Format, emit, emit_json, emitln};
use crate::app::records::{PlannedAction, Records};
use crate::exit::Exit;
use crate::state::{ActionStatus, RunId, RunStatus, RunSummary, format_duration, format_time};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Show this run's actions instead of the list of runs
    #[arg(value_name = "RUN_ID")]
    pub run: Option<i64>,
    /// How many runs to list, newest first (0: all)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Delete the recorded actions (with their output) of all but the newest KEEP runs; the runs
    /// stay listed with their counts
    #[arg(long, value_name = "KEEP", conflicts_with = "run")]
    pub prune: Option<usize>,
    /// List the drift checks that `nexus plan --record` left instead of runs
    #[arg(long, conflicts_with_all = ["run", "prune"])]
    pub drift: bool,
    /// List this host's generations (the runs that succeeded on it) instead of all runs
    #[arg(long, value_name = "HOST", conflicts_with_all = ["run", "prune", "drift"])]
    pub host: Option<String>,
}

/// The state store this invocation reads.
pub(super) fn records(ctx: &Ctx) -> Result<Records, crate::app::Error> {
    Records::open(ctx.global.state.as_deref(), &ctx.global.config)
}

/// Left-aligned columns separated by two spaces; no trailing spaces.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(&format!("{cell:w$}", w = widths[i]));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn status_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn hosts_text(hosts: &[String]) -> String {
    match hosts.len() {
        0 => "-".to_string(),
        1..=3 => hosts.join(", "),
        n => format!("{}, +{} more", hosts[..2].join(", "), n - 2),
    }
}

fn duration_text(run: &RunSummary) -> String {
    match (run.status, run.duration_ms) {
        (_, Some(ms)) => format_duration(ms),
        (RunStatus::Running, None) => "running".to_string(),
        _ => "-".to_string(),
    }
}

pub fn run(ctx: &Ctx, args: HistoryArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let records = records(ctx)?;
    let db = records.database();

    if let Some(keep) = args.prune {
        let deleted = records.prune(keep)?;
        if format == Format::Json {
            emit_json(&json!({ "database": db, "pruned_actions": deleted }));
        } else {
            emitln(&format!(
                "Deleted {deleted} recorded action{} of runs older than the newest {keep} ({db}).",
                if deleted == 1 { "" } else { "s" }
            ));
        }
        return Ok(Exit::Ok);
    }

    if let Some(id) = args.run {
        return show_run(ctx, format, &db, &records, RunId(id));
    }

    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    if args.drift {
        return show_drift(format, &db, &records, limit);
    }
    if let Some(host) = &args.host {
        return show_generations(format, &db, &records, host, limit);
    }
    let runs = records.runs(limit)?;
    if format == Format::Json {
        emit_json(&json!({ "database": db, "runs": runs }));
        return Ok(Exit::Ok);
    }
    if runs.is_empty() {
        let why = if !records.exists() {
            " (it does not exist yet)"
        } else {
            ""
        };
        emitln(&format!(
            "No runs recorded yet in {db}{why}. `nexus apply` and `nexus run` record theirs there."
        ));
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                format_time(r.started_at),
                duration_text(r),
                status_name(&r.kind),
                status_name(&r.status),
                short_hash(&r.plan_hash).to_string(),
                r.counts.succeeded.to_string(),
                r.counts.changed.to_string(),
                r.counts.failed.to_string(),
                hosts_text(&r.hosts),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID", "STARTED", "DURATION", "KIND", "STATUS", "PLAN", "OK", "CHANGED", "FAILED",
            "HOSTS",
        ],
        &rows,
    );
    out.push_str(&format!(
        "\n{} run{} from {db}; `nexus history ID` shows one run's actions.\n",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    ));
    emit(&out);
    Ok(Exit::Ok)
}

/// `nexus history --host H`: the host's generations, newest first.
fn show_generations(
    format: Format,
    db: &str,
    records: &Records,
    host: &str,
    limit: usize,
) -> CmdResult {
    let generations = records.generations(host, limit)?;
    if format == Format::Json {
        emit_json(&json!({ "database": db, "host": host, "generations": generations }));
        return Ok(Exit::Ok);
    }
    if generations.is_empty() {
        emitln(&format!("No generations of {host} recorded in {db}."));
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = generations
        .iter()
        .map(|g| {
            vec![
                g.run.to_string(),
                format_time(g.started_at),
                match g.rollback_to {
                    Some(to) => format!("rollback to {to}"),
                    None => status_name(&g.kind),
                },
                short_hash(&g.plan_hash).to_string(),
                g.signer.clone().unwrap_or_else(|| "-".into()),
                if g.reversible { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["RUN", "STARTED", "KIND", "PLAN", "SIGNER", "UNDOABLE"],
        &rows,
    );
    out.push_str(&format!(
        "
{} generation{} of {host}; `nexus rollback --to RUN --host {host}` restores one.\n",
        generations.len(),
        if generations.len() == 1 { "" } else { "s" }
    ));
    emit(&out);
    Ok(Exit::Ok)
}

/// `nexus history --drift`: the trail of scheduled drift checks, newest first.
fn show_drift(format: Format, db: &str, records: &Records, limit: usize) -> CmdResult {
    let checks = records.drift_checks(limit)?;
    if format == Format::Json {
        emit_json(&json!({ "database": db, "drift_checks": checks }));
        return Ok(Exit::Ok);
    }
    if checks.is_empty() {
        emitln(&format!(
            "No drift checks recorded in {db}. `nexus plan --record` records one."
        ));
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                format_time(c.checked_at),
                short_hash(&c.plan_hash).to_string(),
                c.changes.to_string(),
                if c.drifted.is_empty() {
                    "none".to_string()
                } else {
                    hosts_text(&c.drifted)
                },
                c.hostname.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "CHECKED", "PLAN", "CHANGES", "DRIFTED HOSTS", "FROM"],
        &rows,
    );
    out.push_str(&format!(
        "\n{} drift check{} from {db}.\n",
        checks.len(),
        if checks.len() == 1 { "" } else { "s" }
    ));
    emit(&out);
    Ok(Exit::Ok)
}

fn show_run(ctx: &Ctx, format: Format, db: &str, records: &Records, id: RunId) -> CmdResult {
    let detail = records.run(id)?;
    if format == Format::Json {
        emit_json(&json!({ "database": db, "run": detail.run, "actions": detail.actions }));
        return Ok(Exit::Ok);
    }
    let (run, actions) = (detail.run, detail.actions);
    let c = run.counts;
    let mut out = format!(
        "Run {}: {} {}\n",
        run.id,
        status_name(&run.kind),
        status_name(&run.status)
    );
    let mut field = |name: &str, value: String| out.push_str(&format!("  {name:9} {value}\n"));
    field("plan", format!("{} ({})", run.plan_hash, run.config));
    if let Some(signer) = &run.signer {
        field("signed by", signer.clone());
    }
    field(
        "tasks",
        if run.tasks.is_empty() {
            "all".into()
        } else {
            run.tasks.join(", ")
        },
    );
    field(
        "hosts",
        if run.hosts.is_empty() {
            "-".into()
        } else {
            run.hosts.join(", ")
        },
    );
    field(
        "started",
        format!(
            "{} by pid {} on {} (nexus {})",
            format_time(run.started_at),
            run.pid,
            run.hostname,
            run.nexus_version
        ),
    );
    match run.finished_at {
        Some(at) => field(
            "finished",
            format!("{} after {}", format_time(at), duration_text(&run)),
        ),
        None if run.status == RunStatus::Interrupted => field(
            "finished",
            "never: the process stopped without recording an end".into(),
        ),
        None => field("finished", "not yet".into()),
    }
    field(
        "actions",
        format!(
            "{} succeeded ({} changed), {} failed, {} skipped, {} not run",
            c.succeeded, c.changed, c.failed, c.skipped, c.not_run
        ),
    );
    if run.pruned {
        out.push_str(
            "\nThe actions of this run were deleted by retention (`nexus history --prune`).\n",
        );
        emit(&out);
        return Ok(Exit::Ok);
    }
    if actions.is_empty() {
        out.push_str("\nNo actions were recorded.\n");
        emit(&out);
        return Ok(Exit::Ok);
    }
    out.push('\n');
    out.push_str(&actions_table(&actions, ctx.global.verbose > 0));
    emit(&out);
    Ok(Exit::Ok)
}

/// The actions of a run, each followed by its error and, for failures (or with -v, for all), the
/// end of its output.
fn actions_table(actions: &[PlannedAction], verbose: bool) -> String {
    const FAILED_OUTPUT_LINES: usize = 10;
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|PlannedAction { action: a, .. }| {
            vec![
                a.host.clone(),
                a.key.clone(),
                a.action.name().to_string(),
                status_name(&a.status),
                a.exit_code.map_or("-".to_string(), |c| c.to_string()),
                format_duration(i64::try_from(a.duration_ms).unwrap_or(i64::MAX)),
                a.attempts.to_string(),
                a.resource_id.clone(),
            ]
        })
        .collect();
    let table = table(
        &[
            "HOST", "KEY", "ACTION", "STATUS", "EXIT", "TIME", "TRIES", "RESOURCE",
        ],
        &rows,
    );
    let mut lines = table.lines();
    let mut out = format!("{}\n", lines.next().unwrap_or_default());
    for (a, line) in actions.iter().zip(lines) {
        out.push_str(line);
        out.push('\n');
        if let Some(why) = &a.reason {
            out.push_str(&format!("    why: {why}\n"));
        }
        let a = &a.action;
        if let Some(e) = &a.error {
            for l in e.lines() {
                out.push_str(&format!("    error: {l}\n"));
            }
        }
        let show = if verbose {
            usize::MAX
        } else if a.status == ActionStatus::Failed {
            FAILED_OUTPUT_LINES
        } else {
            0
        };
        let tail: Vec<&str> = a.output_tail.lines().collect();
        for l in &tail[tail.len().saturating_sub(show)..] {
            out.push_str(&format!("    | {l}\n"));
        }
    }
    out
}
