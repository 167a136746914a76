//! `preflight [TASK...]`: check everything a run of the tasks needs before it touches a host:
//! the configuration, then per host reachability, host key, authentication, facts and sudo, with
//! sudo passwords read by the same resolver as plan and apply.

use std::path::PathBuf;

use super::Error;
use super::secrets::{self, Needs, Source};
use crate::config::Loaded;
use crate::inventory::{Inventory, Overrides};
use crate::preflight::{Check, Status};

#[derive(Debug, Clone)]
pub struct Request {
    pub config: PathBuf,
    pub tasks: Vec<String>,
    pub overrides: Overrides,
    pub parallel: usize,
}

/// Every check, the configuration's first.
pub struct Preflight {
    pub checks: Vec<Check>,
}

impl Preflight {
    /// Hosts with a failed check, in order, each once.
    pub fn failed_hosts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for c in self.checks.iter().filter(|c| c.status == Status::Fail) {
            if let Some(h) = c.host.as_deref()
                && !v.contains(&h)
            {
                v.push(h);
            }
        }
        v
    }

    /// Hosts checked, in order, each once.
    pub fn hosts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for h in self.checks.iter().filter_map(|c| c.host.as_deref()) {
            if !v.contains(&h) {
                v.push(h);
            }
        }
        v
    }
}

/// Checks the tasks of `req` (all when none are named) with the configuration already loaded.
pub fn preflight(req: &Request, loaded: &Loaded) -> Result<Preflight, Error> {
    let cfg = &loaded.config;
    let selected = if req.tasks.is_empty() {
        (0..cfg.tasks.len()).collect()
    } else {
        let roots = super::plan::check_tasks(cfg, &req.tasks)?;
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
            req.config.display(),
            cfg.tasks.len(),
            cfg.hosts.len()
        ),
    }];
    let pinned = crate::pins::pinned_discovery(&req.config)?;
    let (needs, missing) = crate::preflight::needs(cfg, &selected, &pinned);
    let connections = crate::planner::connection::all(cfg, &pinned);
    let mut wanted = Needs::default();
    wanted.sudo(
        connections
            .iter()
            .filter(|(name, _)| needs.iter().any(|n| n.sudo && n.host == *name))
            .map(|(_, c)| c),
    );
    let env = |k: &str| std::env::var(k).ok();
    let secrets = match secrets::resolve(&Source::Config(cfg), &wanted, &env) {
        Ok(s) => s,
        Err(e) => {
            // Each host's sudo check then says which password it could not use.
            checks.push(Check {
                host: None,
                check: "secrets",
                status: Status::Fail,
                detail: e.to_string(),
            });
            Default::default()
        }
    };
    let rt = super::plan::runtime()?;
    let host_checks = rt.block_on(async {
        let mut inv = Inventory::for_config(cfg, &pinned, &req.overrides)?;
        inv.set_secrets(secrets);
        let mut out = crate::preflight::run(&inv, &needs, req.parallel, &env).await;
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
        Ok::<_, Error>(out)
    })?;
    checks.extend(host_checks);
    Ok(Preflight { checks })
}
