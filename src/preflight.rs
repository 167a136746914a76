//! Pre-flight checks: for every host a run would touch, is it reachable, is its host key known,
//! does authentication work, can facts be gathered, and does sudo work where tasks need it.
//! Results are data; the CLI renders them.

use futures::StreamExt;
use serde::Serialize;

use crate::config::{Config, Task};
use crate::facts::gather_facts;
use crate::inventory::Inventory;
use crate::transport::{CommandSpec, TransportError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `None` for checks that concern the whole run (the configuration).
    pub host: Option<String>,
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn new(host: &str, check: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            host: Some(host.to_string()),
            check,
            status,
            detail: detail.into(),
        }
    }
}

/// A host to check and whether any selected task escalates privileges on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNeeds {
    pub host: String,
    pub sudo: bool,
}

/// Whether a task needs root on `host`: the host escalates by default, a resource asks for sudo,
/// or a resource manages system state (packages, services, accounts) that only root can change.
pub fn task_needs_sudo(task: &Task, host_becomes: bool) -> bool {
    host_becomes
        || task
            .resources
            .iter()
            .chain(&task.health_check)
            .any(|r| r.common.sudo == Some(true) || r.kind.resource_type().needs_root())
}

/// The hosts of `tasks` (indices into `cfg.tasks`) in first-seen order, with their sudo needs;
/// tailscale groups expand to the hosts `pinned` (nexus.lock) holds for them. The second list
/// names the groups it does not know.
pub fn needs(
    cfg: &Config,
    tasks: &[usize],
    pinned: &crate::discovery::Discovered,
) -> (Vec<HostNeeds>, Vec<String>) {
    let mut out: Vec<HostNeeds> = Vec::new();
    let mut missing = Vec::new();
    for &i in tasks {
        let task = &cfg.tasks[i];
        let targets = cfg.task_targets(task);
        let mut hosts = targets.hosts;
        for d in targets.discovered {
            match pinned.get(&d) {
                Some(found) => hosts.extend(found.iter().map(|h| h.name.clone())),
                None if !missing.contains(&d) => missing.push(d),
                None => {}
            }
        }
        for host in hosts {
            let sudo = task_needs_sudo(task, crate::planner::host_becomes(cfg, &host));
            match out.iter_mut().find(|n| n.host == host) {
                Some(n) => n.sudo |= sudo,
                None => out.push(HostNeeds { host, sudo }),
            }
        }
    }
    (out, missing)
}

/// Runs every check on every host, `parallel` hosts at a time; checks keep the order of `hosts`.
pub async fn run(
    inv: &Inventory,
    hosts: &[HostNeeds],
    parallel: usize,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Vec<Check> {
    let per_host: Vec<Vec<Check>> = futures::stream::iter(hosts.iter())
        .map(|n| check_host(inv, n, env))
        .buffered(parallel.max(1))
        .collect()
        .await;
    per_host.into_iter().flatten().collect()
}

async fn check_host(
    inv: &Inventory,
    need: &HostNeeds,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Vec<Check> {
    use Status::*;
    let host = need.host.as_str();
    let mut out = Vec::new();
    let transport = match inv.transport(host) {
        Result::Ok(t) => t,
        Err(e) => {
            out.push(Check::new(host, "reachable", Fail, e.to_string()));
            return out;
        }
    };
    if host == crate::config::LOCAL_HOST {
        out.push(Check::new(host, "reachable", Ok, "local machine, no SSH"));
    } else {
        match inv.connect(host).await {
            Result::Ok(()) => {
                out.push(Check::new(host, "reachable", Ok, transport.label()));
                out.push(Check::new(host, "host-key", Ok, "matches known_hosts"));
                out.push(Check::new(host, "auth", Ok, "authenticated"));
            }
            Err(e) => {
                let stage = failed_stage(&e);
                let skipped = |what: &str| format!("not checked: {what} failed");
                out.push(match stage {
                    Stage::Reach => Check::new(host, "reachable", Fail, e.to_string()),
                    _ => Check::new(host, "reachable", Ok, transport.label()),
                });
                out.push(match stage {
                    Stage::Reach => Check::new(host, "host-key", Skip, skipped("connection")),
                    Stage::HostKey => Check::new(host, "host-key", Fail, e.to_string()),
                    Stage::Auth => Check::new(host, "host-key", Ok, "matches known_hosts"),
                });
                out.push(match stage {
                    Stage::Auth => Check::new(host, "auth", Fail, e.to_string()),
                    Stage::HostKey => {
                        Check::new(host, "auth", Skip, skipped("host key verification"))
                    }
                    Stage::Reach => Check::new(host, "auth", Skip, skipped("connection")),
                });
                out.push(Check::new(host, "facts", Skip, skipped("connection")));
                if need.sudo {
                    out.push(Check::new(host, "sudo", Skip, skipped("connection")));
                }
                return out;
            }
        }
    }
    let facts = match gather_facts(&*transport).await {
        Result::Ok(f) => {
            let pm = f
                .package_manager
                .map_or("no package manager".to_string(), |p| {
                    serde_json::to_value(p)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                });
            let init = serde_json::to_value(f.init_system)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let detail = format!(
                "{} {}, {}, {pm}, {init}, user {}",
                f.distribution.id, f.distribution.version, f.architecture, f.user
            );
            out.push(Check::new(host, "facts", Ok, detail));
            Some(f)
        }
        Err(e) => {
            out.push(Check::new(host, "facts", Fail, e.to_string()));
            None
        }
    };
    if need.sudo {
        out.push(match facts {
            Some(f) if f.uid == 0 => {
                Check::new(host, "sudo", Ok, "logged in as root; no sudo needed")
            }
            None => Check::new(host, "sudo", Skip, "not checked: facts failed"),
            Some(_) => match inv.become_for(host, env) {
                Err(e) => Check::new(host, "sudo", Fail, e.to_string()),
                Result::Ok(b) => {
                    let user = b.user.clone();
                    match transport.run(&CommandSpec::new("true").sudo(b)).await {
                        Result::Ok(o) if o.success() => {
                            Check::new(host, "sudo", Ok, format!("can run commands as {user}"))
                        }
                        Result::Ok(o) => Check::new(host, "sudo", Fail, o.failure_summary()),
                        Err(e) => Check::new(host, "sudo", Fail, e.to_string()),
                    }
                }
            },
        });
    }
    out
}

enum Stage {
    Reach,
    HostKey,
    Auth,
}

fn failed_stage(e: &TransportError) -> Stage {
    use TransportError::*;
    match e {
        UnknownHostKey { .. }
        | ChangedHostKey { .. }
        | RevokedHostKey { .. }
        | HostCertificate { .. }
        | KnownHosts { .. } => Stage::HostKey,
        AuthFailed { .. } | EncryptedKeyNoPassphrase { .. } | KeyLoad { .. } => Stage::Auth,
        _ => Stage::Reach,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_that_change_system_state_need_sudo() {
        let text = "task \"app\" {\n    command \"make\"\n}\n\
                    task \"sys\" {\n    command \"make\"\n    service \"nginx\" state=\"running\"\n}\n\
                    task \"asks\" {\n    command \"make\" sudo=#true\n}\n";
        let loaded = crate::config::load_str(text, "nexus.kdl", std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let needs: Vec<bool> = loaded
            .config
            .tasks
            .iter()
            .map(|t| task_needs_sudo(t, false))
            .collect();
        assert_eq!(needs, [false, true, true]);
        assert!(task_needs_sudo(&loaded.config.tasks[0], true));
    }
}
