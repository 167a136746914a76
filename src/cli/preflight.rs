//! `nexus preflight [TASK...]`: check everything a run needs before it touches a host.

use clap::Args;
use serde_json::json;

use super::connect::{ConnectArgs, runtime};
use super::{CmdResult, Ctx, Failure, Format, emitln, resolve_tasks};
use crate::exit::Exit;
use crate::inventory::Inventory;
use crate::preflight::{self, Check, Status};

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
    let cfg = &loaded.config;
    let selected = if args.tasks.is_empty() {
        (0..cfg.tasks.len()).collect()
    } else {
        let roots = resolve_tasks(cfg, &args.tasks)?;
        let edges = cfg.tasks.iter().enumerate().flat_map(|(i, t)| {
            t.deps.iter().filter_map(move |d| {
                cfg.tasks
                    .iter()
                    .position(|x| x.name.value == d.value)
                    .map(|j| (i, j))
            })
        });
        crate::dag::Deps::new(cfg.tasks.len(), edges).closure(&roots)
    };
    let mut checks = vec![Check {
        host: None,
        check: "config",
        status: Status::Ok,
        detail: format!(
            "configuration is valid ({}: {} task(s), {} host(s))",
            ctx.global.config.display(),
            cfg.tasks.len(),
            cfg.hosts.len()
        ),
    }];
    if !json {
        emitln(&line(&checks[0]));
    }
    let pinned = super::facts::pinned(ctx)?;
    let rt = runtime()?;
    let env = |k: &str| std::env::var(k).ok();
    let host_checks = rt.block_on(async {
        let mut inv = Inventory::new(cfg, &args.connect.overrides())
            .map_err(|e| Failure::new(Exit::Unreachable, format!("error: {e}")))?;
        inv.add_discovered(cfg, &pinned);
        let (needs, missing) = preflight::needs(cfg, &inv, &selected, &pinned);
        let mut out = preflight::run(&inv, &needs, args.connect.parallel, &env).await;
        for d in missing {
            out.push(Check {
                host: Some(d),
                check: "discovery",
                status: Status::Fail,
                detail: format!(
                    "a tailscale group with no hosts in {}: run `nexus lock` (or `nexus plan`) to discover them",
                    crate::pins::FILE_NAME
                ),
            });
        }
        inv.close().await;
        Ok::<_, Failure>(out)
    })?;
    checks.extend(host_checks);
    let failed_hosts: Vec<&str> = {
        let mut v: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .filter_map(|c| c.host.as_deref())
            .collect();
        v.dedup();
        v
    };
    let hosts: Vec<&str> = {
        let mut v: Vec<&str> = checks.iter().filter_map(|c| c.host.as_deref()).collect();
        v.dedup();
        v
    };
    if json {
        let v = json!({ "ok": failed_hosts.is_empty(), "checks": checks });
        emitln(&serde_json::to_string_pretty(&v).expect("json"));
    } else {
        for c in &checks[1..] {
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
