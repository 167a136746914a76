//! Staleness: before executing anything, re-probe every host (one round trip each) and compare
//! each resource's observed-state fingerprint with the one in the plan.

use futures::StreamExt;
use serde::Serialize;

use crate::inventory::Inventory;
use crate::plan::{Plan, probe};
use crate::resources::Observed;
use crate::transport::CommandSpec;

/// A resource whose state differs from when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub host: String,
    pub key: String,
    pub label: String,
    pub planned: String,
    pub now: String,
}

/// What the re-probe found.
#[derive(Debug, Default, Serialize)]
pub struct Check {
    pub drift: Vec<Drift>,
    /// Hosts that could not be probed, with the reason.
    pub unreachable: Vec<(String, String)>,
}

impl Check {
    pub fn is_fresh(&self) -> bool {
        self.drift.is_empty() && self.unreachable.is_empty()
    }
}

/// Re-probes all hosts of the plan concurrently.
pub async fn check(
    plan: &Plan,
    inv: &Inventory,
    parallel: usize,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    secrets: &crate::secrets::Resolved,
) -> Check {
    let per_host: Vec<Result<Vec<Drift>, (String, String)>> =
        futures::stream::iter(plan.hosts.iter())
            .map(|h| async move {
                // Resources skipped by `when` at plan time were never probed and have no identity.
                let probed: Vec<_> = h.resources.iter().filter(|r| !r.id.is_empty()).collect();
                if probed.is_empty() {
                    return Ok(Vec::new());
                }
                let fail = |e: String| (h.name.clone(), e);
                let specs: Vec<_> = probed.iter().map(|r| r.probe_spec()).collect();
                let t = inv.transport(&h.name).map_err(|e| fail(e.to_string()))?;
                let mut cmd = CommandSpec::new(probe::script(&specs));
                if h.probe_sudo {
                    cmd = cmd.sudo(
                        inv.become_for(&h.name, env)
                            .map_err(|e| fail(e.to_string()))?,
                    );
                }
                let out = t.run(&cmd).await.map_err(|e| fail(e.to_string()))?;
                if !out.success() {
                    return Err(fail(format!("probe failed: {}", out.failure_summary())));
                }
                let sections = probe::split(&specs, &out.stdout_str(), secrets.seal_key())
                    .map_err(|e| fail(e.to_string()))?;
                let mut drift = Vec::new();
                for (r, s) in probed.iter().zip(sections) {
                    let now = match Observed::parse(&s.output) {
                        Ok(o) if s.status == 0 => o.fingerprint(),
                        _ => format!("probe failed (status {})", s.status),
                    };
                    if now != r.fingerprint {
                        drift.push(Drift {
                            host: h.name.clone(),
                            key: r.key.clone(),
                            label: r.label.clone(),
                            planned: r.fingerprint.clone(),
                            now,
                        });
                    }
                }
                Ok(drift)
            })
            .buffered(parallel.max(1))
            .collect()
            .await;
    let mut check = Check::default();
    for r in per_host {
        match r {
            Ok(d) => check.drift.extend(d),
            Err(u) => check.unreachable.push(u),
        }
    }
    check
}
