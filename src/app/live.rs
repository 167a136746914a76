//! Planning against real hosts: per host, facts, then the batched probe built from them, in one
//! session (one command), around the pure planner. Hosts are planned concurrently; progress is reported
//! through events for the CLI to render.

use futures::StreamExt;

use crate::config::Loaded;
use crate::inputs::Inputs;
use crate::inventory::Inventory;
use crate::plan::{Plan, Selection};
use crate::planner::{self, PlanError, Selected};
use crate::transport::CommandSpec;

/// Progress of a live plan, in the order it happens for each host.
#[derive(Debug, Clone)]
pub enum PlanEvent {
    Facts { host: String },
    Probed { host: String, resources: usize },
    Failed { host: String },
}

pub struct LiveRequest<'a> {
    pub loaded: &'a Loaded,
    pub config_name: &'a str,
    pub selection: Selection,
    pub inputs: &'a Inputs,
    pub parallel: usize,
    /// Whether each host's connection is closed once the host is planned.
    pub after: AfterPlanning,
}

/// What becomes of a host's connection once it is planned: `plan` closes it, so that at most
/// `-j` connections are open at once whatever the fleet's size; `run` keeps it to apply with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPlanning {
    Keep,
    Close,
}

type HostResult = planner::HostOutcome;

/// Plans the selection on real hosts. All hosts are planned even when one fails, so the errors
/// of every host are reported together; any error means no plan.
pub async fn plan(
    req: LiveRequest<'_>,
    inv: &Inventory,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    events: &(dyn Fn(PlanEvent) + Sync),
) -> Result<Plan, Vec<PlanError>> {
    let selected = planner::select(&req.loaded.config, &req.selection, req.inputs.discovered())
        .map_err(|e| vec![e])?;
    let hosts = selected.hosts();
    let results: Vec<HostResult> = futures::stream::iter(hosts.iter())
        .map(|h| async {
            let r = plan_host(&req, &selected, inv, h, env, events).await;
            if req.after == AfterPlanning::Close {
                inv.release(h).await;
            }
            r
        })
        .buffered(req.parallel.max(1))
        .collect()
        .await;
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(h) => ok.push(h),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(planner::assemble(
        &req.loaded.config,
        req.config_name,
        req.selection,
        req.inputs,
        &selected,
        ok,
    ))
}

async fn plan_host(
    req: &LiveRequest<'_>,
    selected: &Selected,
    inv: &Inventory,
    host: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    events: &(dyn Fn(PlanEvent) + Sync),
) -> HostResult {
    let fail = |message: String| {
        events(PlanEvent::Failed {
            host: host.to_string(),
        });
        vec![PlanError {
            host: Some(host.to_string()),
            resource: None,
            message,
        }]
    };
    // Transport errors already name the host; keep only the message part after it.
    let transport = inv
        .transport(host)
        .map_err(|e| fail(strip_host(host, &e.to_string())))?;
    // Facts, then the probe they shape, in one session: the probe is built from the facts as
    // soon as they arrive.
    let label = transport.label().to_string();
    let mut facts_error = None;
    let mut prepared = None;
    let mut become_error = None;
    let then: crate::transport::Then<'_> = Box::new(|out| {
        let facts = crate::facts::from_output(&label, out)
            .map_err(|e| facts_error = Some(e))
            .ok()?;
        events(PlanEvent::Facts {
            host: host.to_string(),
        });
        let p = match planner::prepare_host(req.loaded, req.inputs, selected, host, &facts) {
            Ok(p) => p,
            Err(e) => {
                prepared = Some(Err(e));
                return None;
            }
        };
        let mut cmd = CommandSpec::new(p.probe_script());
        if p.probe_sudo {
            match inv.become_for(host, env) {
                Ok(b) => cmd = cmd.sudo(b),
                Err(e) => {
                    become_error = Some(e.to_string());
                    return None;
                }
            }
        }
        prepared = Some(Ok(p));
        Some(cmd)
    });
    let chained = transport
        .run_chained(&crate::facts::facts_command(), then)
        .await
        .map_err(|e| fail(strip_host(host, &e.to_string())))?;
    if let Some(e) = facts_error {
        return Err(fail(strip_host(host, &e.to_string())));
    }
    let prepared = match prepared {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            events(PlanEvent::Failed {
                host: host.to_string(),
            });
            return Err(e);
        }
        None => {
            let why = become_error.unwrap_or_else(|| "no probe ran".to_string());
            return Err(fail(strip_host(host, &why)));
        }
    };
    let resources = prepared.probe_keys().len();
    let Some(out) = chained.1 else {
        return Err(fail("no probe ran".to_string()));
    };
    if !out.success() {
        return Err(fail(format!("probe failed: {}", out.failure_summary())));
    }
    events(PlanEvent::Probed {
        host: host.to_string(),
        resources,
    });
    prepared.finish(&out.stdout_str()).inspect_err(|_| {
        events(PlanEvent::Failed {
            host: host.to_string(),
        });
    })
}

fn strip_host(host: &str, msg: &str) -> String {
    // Messages look like "web1 (deploy@10.0.0.1:22): connection refused"; the plan error adds
    // the host name itself, so keep the address part but not the name twice.
    msg.strip_prefix(host)
        .map(|m| m.trim_start_matches(':').trim_start().to_string())
        .unwrap_or_else(|| msg.to_string())
}
