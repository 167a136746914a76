//! `nexus preflight [TASK...]`: check everything a run needs before it touches a host.

use clap::Args;
use serde_json::json;

use super::connect::ConnectArgs;
use super::{CmdResult, Ctx, Format, emit_json, emitln};
use crate::app;
use crate::exit::Exit;
use crate::preflight::{Check, Status};

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Tasks to check (default: all), with the tasks they depend on
    pub tasks: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn line(c: &Check) -> String {
    let tag = match c.status {
        Status::Ok => "[ok]  ",
        Status::Fail => "[fail]",
        Status::Skip => "[skip]",
    };
    match &c.host {
        Some(h) => format!("{tag} {h}: {}: {}", c.check, c.detail),
        None => format!("{tag} {}: {}", c.check, c.detail),
    }
}

pub fn run(ctx: &Ctx, args: PreflightArgs) -> CmdResult {
    let format = ctx.format(Format::Text, &[Format::Text, Format::Json])?;
    let json = format == Format::Json;
    let loaded = match ctx.load() {
        Ok(l) => l,
        Err(f) => {
            if !json {
                emitln("[fail] config: configuration is invalid");
            }
            return Err(f);
        }
    };
    let req = app::preflight::Request {
        config: ctx.global.config.clone(),
        tasks: args.tasks,
        overrides: args.connect.overrides(),
        parallel: args.connect.parallel,
    };
    let report = app::preflight::preflight(&req, &loaded)?;
    let failed_hosts = report.failed_hosts();
    let hosts = report.hosts();
    if json {
        let v = json!({ "ok": failed_hosts.is_empty(), "checks": report.checks });
        emit_json(&v);
    } else {
        for c in &report.checks {
            emitln(&line(c));
        }
        if failed_hosts.is_empty() {
            emitln(&format!("Preflight passed: {} host(s) ready", hosts.len()));
        } else {
            emitln(&format!(
                "Preflight failed: {} of {} host(s) not ready ({})",
                failed_hosts.len(),
                hosts.len(),
                failed_hosts.join(", ")
            ));
        }
    }
    Ok(if failed_hosts.is_empty() {
        Exit::Ok
    } else {
        Exit::Unreachable
    })
}
