//! `nexus state [HOST]`: the last applied state of every host+resource and the apply lock;
//! `--force-unlock` removes a lock whose holder is gone.

use clap::Args;
use serde_json::json;

use super::history::{records, table};
use super::{CmdResult, Ctx, Format, emit, emit_json, emitln};
use crate::exit::Exit;
use crate::state::{LastApplied, LockHolder, format_time};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StateArgs {
    #[command(subcommand)]
    pub action: Option<StateAction>,
    /// Only this host
    pub host: Option<String>,
    /// Remove the apply lock whoever holds it, for a holder that hangs or is gone on another
    /// machine (a holder gone on this machine is recovered automatically by the next apply)
    #[arg(long, conflicts_with = "host")]
    pub force_unlock: bool,
    /// Write the results a run could not record (its state store became unreachable), kept in
    /// .nexus/unrecorded/, into the state store; apply and run refuse to start until then
    #[arg(long, conflicts_with_all = ["host", "force_unlock"])]
    pub recover: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateAction {
    /// Copy this project's SQLite state (.nexus/state.db, or --state FILE) into a PostgreSQL
    /// database: runs with their actions, last applied state, pending handlers and the drift
    /// trail. Repeatable: runs copied before are skipped
    Migrate {
        /// The postgresql:// URL to copy into (the project comes from the configuration)
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Retention of rollback data: delete the pre-images, recorded plans and contents of each
    /// host's generations but the newest KEEP (docs/rollback.md)
    Gc {
        /// Generations kept per host
        #[arg(long, value_name = "KEEP", default_value_t = crate::app::rollback::KEEP_GENERATIONS)]
        keep: usize,
    },
}

pub fn run(ctx: &Ctx, args: StateArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    if let Some(StateAction::Migrate { to }) = &args.action {
        let done = crate::app::state::migrate(ctx.global.state.as_deref(), &ctx.global.config, to)?;
        let target = crate::state::redact_url(to);
        if format == Format::Json {
            emit_json(&json!({ "to": target, "imported": done }));
        } else {
            emitln(&format!(
                "Copied {} run(s) with {} action(s), {} last-applied record(s), {} pending \
                 handler(s) and {} drift check(s) into {target}; {} run(s) were already there.",
                done.runs,
                done.actions,
                done.last_applied,
                done.pending_handlers,
                done.drift_checks,
                done.runs_skipped
            ));
        }
        return Ok(Exit::Ok);
    }
    let records = records(ctx)?;
    let location = records.location();
    let db = records.database();
    if let Some(StateAction::Gc { keep }) = &args.action {
        let deleted = crate::app::rollback::gc(location, &ctx.global.config, *keep)?;
        if format == Format::Json {
            emit_json(&json!({ "database": db, "keep": keep, "deleted_preimages": deleted }));
        } else {
            emitln(&format!(
                "Deleted {deleted} pre-image(s) older than each host's newest {keep} \
                 generation(s) ({db})."
            ));
        }
        return Ok(Exit::Ok);
    }
    if args.recover {
        let config_dir = ctx
            .global
            .config
            .parent()
            .unwrap_or(std::path::Path::new(""));
        let done = crate::app::journal::recover_at(location, config_dir)?;
        if format == Format::Json {
            let runs: Vec<_> = done
                .iter()
                .map(|(run, n)| json!({ "run": run, "records": n }))
                .collect();
            emit_json(&json!({ "database": db, "recovered": runs }));
        } else if done.is_empty() {
            emitln("Nothing to recover: every result is recorded.");
        } else {
            for (run, n) in &done {
                emitln(&format!(
                    "Recorded {n} result(s) of run {run} into {db}; the run reads interrupted."
                ));
            }
        }
        return Ok(Exit::Ok);
    }
    if args.force_unlock {
        let removed = records.force_unlock()?;
        if format == Format::Json {
            emit_json(&json!({ "database": db, "removed": removed }));
        } else {
            match removed {
                Some(h) => emitln(&format!("Removed the apply lock of {h}.")),
                None => emitln(&format!("{db} was not locked.")),
            }
        }
        return Ok(Exit::Ok);
    }

    let applied = records.applied(args.host.as_deref())?;
    let (resources, holder, pending) = (applied.resources, applied.lock, applied.pending);
    if format == Format::Json {
        let lock = holder.as_ref().map(|h| {
            let mut v = serde_json::to_value(h).expect("json");
            v["stale"] = json!(h.gone());
            v
        });
        emit_json(
            &json!({ "database": db, "lock": lock, "resources": resources, "pending_handlers": pending }),
        );
        return Ok(Exit::Ok);
    }

    let mut out = String::new();
    if resources.is_empty() {
        out.push_str(&match (&args.host, records.exists()) {
            (_, false) => format!("No state recorded yet: {db} does not exist.\n"),
            (Some(host), true) => {
                let hosts = &applied.hosts_with_state;
                let hint = match crate::config::suggest_name(host, hosts.iter().map(String::as_str))
                {
                    Some(s) => format!(" Did you mean `{s}`?"),
                    None if hosts.is_empty() => String::new(),
                    None => format!(" Hosts with state: {}.", hosts.join(", ")),
                };
                format!("No applied state recorded for host `{host}` in {db}.{hint}\n")
            }
            (None, true) => format!("No applied state recorded yet in {db}.\n"),
        });
    } else {
        out.push_str(&hosts_text(&resources));
    }
    out.push_str(&pending_text(&pending));
    out.push_str(&lock_text(holder.as_ref()));
    emit(&out);
    Ok(Exit::Ok)
}

/// One block per host, resources in a table.
fn hosts_text(resources: &[LastApplied]) -> String {
    let mut out = String::new();
    for (i, chunk) in resources.chunk_by(|a, b| a.host == b.host).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{} ({} resource{})\n",
            chunk[0].host,
            chunk.len(),
            if chunk.len() == 1 { "" } else { "s" }
        ));
        let rows: Vec<Vec<String>> = chunk
            .iter()
            .map(|r| {
                vec![
                    r.resource_id.clone(),
                    r.action.name().to_string(),
                    r.key.clone(),
                    r.run.to_string(),
                    format_time(r.applied_at),
                ]
            })
            .collect();
        for line in table(&["RESOURCE", "LAST ACTION", "KEY", "RUN", "APPLIED"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// Handlers notified by a change that have not succeeded since: the next apply runs them.
fn pending_text(pending: &[crate::state::PendingHandler]) -> String {
    if pending.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            vec![
                p.host.clone(),
                p.handler.clone(),
                p.since_run.to_string(),
                p.notified_by.clone(),
            ]
        })
        .collect();
    let mut out = String::from("\nPending handlers (the next apply runs them)\n");
    for line in table(&["HOST", "HANDLER", "SINCE RUN", "NOTIFIED BY"], &rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn lock_text(holder: Option<&LockHolder>) -> String {
    match holder {
        None => "\nApply lock: free\n".to_string(),
        Some(h) => match h.gone() {
            Some(reason) => format!(
                "\nApply lock: held by {h}, but stale ({reason}); the next apply takes it over\n"
            ),
            None => format!("\nApply lock: held by {h}\n"),
        },
    }
}
