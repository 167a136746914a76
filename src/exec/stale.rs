//! Staleness: before executing anything, re-probe every host (one round trip each) and compare
//! each resource's observed-state fingerprint with the one in the plan. The same round trip
//! captures what pre-images need of the resources the plan changes (exec/preimage.rs); what that
//! state means for each type is `resources::preimage`'s to say.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::Serialize;

use super::preimage;
use crate::inventory::Inventory;
use crate::plan::Observed;
use crate::plan::{HostPlan, Plan, PlannedResource, lockfile, probe};

use crate::transport::CommandSpec;

/// A resource whose state differs from when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub host: String,
    pub key: String,
    pub label: String,
    pub planned: String,
    pub now: String,
    /// What differs, when it is more than "its state changed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The keys of the resource's other entries in the plan, refused with it (a rollback
    /// restores a resource at the place of each change it undoes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl Drift {
    /// The plan's keys of the resource: `task#N`, or several comma-separated.
    pub fn keys(&self) -> String {
        std::iter::once(&self.key)
            .chain(&self.also)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Adds the drift `d` of the resource `id` to `drift`, once per resource: an entry of a resource
/// reported already is named with it.
pub fn report<K: Ord>(drift: &mut Vec<Drift>, reported: &mut BTreeMap<K, usize>, id: K, d: Drift) {
    match reported.get(&id) {
        Some(&at) => drift[at].also.push(d.key),
        None => {
            reported.insert(id, drift.len());
            drift.push(d);
        }
    }
}

/// What a resource's drift is reported under: only a rollback restores one resource at several
/// places (its id); elsewhere two resources that share an id (two commands alike) are each
/// their own (their keys).
fn reported_as<'r>(plan: &Plan, r: &'r PlannedResource) -> &'r str {
    match plan.rollback {
        Some(_) => r.id.as_str(),
        None => r.key.as_str(),
    }
}

/// What the re-probe found.
#[derive(Debug, Default, Serialize)]
pub struct Check {
    pub drift: Vec<Drift>,
    /// Hosts that could not be probed, with the reason.
    pub unreachable: Vec<(String, String)>,
    /// What the re-probe saw of the resources the plan changes, for their pre-images.
    #[serde(skip)]
    pub captured: Vec<Captured>,
}

/// The state a resource the plan changes was in at the re-probe, just before apply: what a
/// pre-image records (what that state means for the resource's type is not the executor's to
/// say; `resources::preimage` reads it).
#[derive(Debug)]
pub struct Captured {
    pub host: String,
    /// The resource's index among the host's re-probed resources.
    pub seq: usize,
    /// Its key in the plan.
    pub key: String,
    /// What its probe printed; `None` when its snippet failed.
    pub observed: Option<Observed>,
    /// A file's content, when it was a regular, readable file within [`preimage::CONTENT_LIMIT`].
    pub content: Option<Vec<u8>>,
}

impl Check {
    pub fn is_fresh(&self) -> bool {
        self.drift.is_empty() && self.unreachable.is_empty()
    }
}

/// One host's probe of `resources`: each one's observed state (`Err` with the section's status
/// when its snippet failed) and the contents the pre-image section sent back.
type Probed = (Vec<Result<Observed, i32>>, BTreeMap<usize, Vec<u8>>);

/// Why a host could not be re-probed.
#[derive(Debug, thiserror::Error)]
pub enum ReprobeError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Become(#[from] crate::inventory::BecomeError),
    #[error("probe failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Output(#[from] probe::ProbeError),
}

/// Probes `resources` of `h` in one round trip; with `capture`, also sends back the contents
/// of the files among them that are about to change.
async fn probe_host(
    h: &HostPlan,
    resources: &[&PlannedResource],
    inv: &Inventory,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    secrets: &crate::secrets::Resolved,
    capture: bool,
) -> Result<Probed, ReprobeError> {
    let specs: Vec<_> = resources.iter().map(|r| r.probe_spec()).collect();
    let t = inv.transport(&h.name)?;
    let mut script = probe::script(&specs);
    let token = preimage::token(&script);
    if capture {
        script.push_str(&preimage::script(resources, &token));
    }
    let mut cmd = CommandSpec::new(script);
    if h.probe_sudo {
        cmd = cmd.sudo(inv.become_for(&h.name, env)?);
    }
    let out = t.run(&cmd).await?;
    if !out.success() {
        return Err(ReprobeError::Failed(out.failure_summary()));
    }
    let stdout = out.stdout_str();
    let (own, contents) = preimage::split_off(&stdout, &token);
    let sections = probe::split(&specs, own, secrets.seal_key())?;
    let observed = sections
        .into_iter()
        .map(|s| match Observed::parse(&s.output) {
            Ok(o) if s.status == 0 => Ok(o),
            _ => Err(s.status),
        })
        .collect();
    Ok((observed, contents))
}

/// Resources skipped by `when` at plan time were never probed and have no identity.
fn probed(h: &HostPlan) -> Vec<&PlannedResource> {
    h.resources.iter().filter(|r| !r.id.is_empty()).collect()
}

fn fingerprint_of(o: &Result<Observed, i32>) -> String {
    match o {
        Ok(o) => o.fingerprint(),
        Err(status) => format!("probe failed (status {status})"),
    }
}

/// Whether apply keeps every host's connection from its re-probe until the host's work is done:
/// it saves a second handshake per host, but costs a connection's memory for every host of the
/// plan at once. Beyond a few times `-j` hosts, connections are released after the re-probe
/// and made again when the executor reaches the host, so a fleet's apply holds about `-j`.
pub fn keeps_connections(hosts: usize, parallel: usize) -> bool {
    hosts <= 4 * parallel.max(1)
}

/// Re-probes all hosts of the plan concurrently, capturing what pre-images need; see
/// [`keeps_connections`] for what happens to their connections.
pub async fn check(
    plan: &Plan,
    inv: &Inventory,
    parallel: usize,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    secrets: &crate::secrets::Resolved,
) -> Check {
    let keep = keeps_connections(plan.hosts.len(), parallel);
    type HostCheck = (Vec<Drift>, Vec<Captured>);
    let per_host: Vec<Result<HostCheck, (String, String)>> =
        futures::stream::iter(plan.hosts.iter())
            .map(|h| async move {
                let probed = probed(h);
                if probed.is_empty() {
                    return Ok(Default::default());
                }
                let capture = probed.iter().any(|r| preimage::wanted(r));
                let probe = probe_host(h, &probed, inv, env, secrets, capture).await;
                if !keep {
                    inv.release(&h.name).await;
                }
                let (observed, mut contents) =
                    probe.map_err(|e| (h.name.clone(), e.to_string()))?;
                let (mut drift, mut captured) = (Vec::new(), Vec::new());
                let mut reported = BTreeMap::new();
                for (i, (r, o)) in probed.iter().zip(&observed).enumerate() {
                    let now = fingerprint_of(o);
                    let drifted = |why: Option<String>| Drift {
                        host: h.name.clone(),
                        key: r.key.clone(),
                        label: r.label.clone(),
                        planned: r.fingerprint.clone(),
                        now: now.clone(),
                        why,
                        also: Vec::new(),
                    };
                    if now != r.fingerprint {
                        report(
                            &mut drift,
                            &mut reported,
                            reported_as(plan, r),
                            drifted(None),
                        );
                        continue;
                    }
                    // The fingerprint covers the host's content; the diff the plan shows must be
                    // of that same content (a re-hashed plan could show another old side).
                    // A link has no content of its own: a plan replacing it shows it as empty.
                    let held = o.as_ref().ok().and_then(|o| match o.get("type") {
                        Some("link") => Some(crate::plan::file_write::sha256_hex(b"")),
                        _ => o.get("sha256").map(str::to_string),
                    });
                    if let Some(shown) = lockfile::shown_old_sha256(plan, r)
                        && held.as_deref() != Some(shown.as_str())
                    {
                        let why =
                            "the plan's diff shows an old content the host's file does not have";
                        report(
                            &mut drift,
                            &mut reported,
                            reported_as(plan, r),
                            drifted(Some(why.into())),
                        );
                        continue;
                    }
                    if preimage::wanted(r) {
                        captured.push(Captured {
                            host: h.name.clone(),
                            seq: i,
                            key: r.key.clone(),
                            observed: o.as_ref().ok().cloned(),
                            content: preimage::content_of(i, &mut contents, o.as_ref().ok()),
                        });
                    }
                }
                Ok((drift, captured))
            })
            .buffered(parallel.max(1))
            .collect()
            .await;
    let mut check = Check::default();
    for r in per_host {
        match r {
            Ok((d, c)) => {
                check.drift.extend(d);
                check.captured.extend(c);
            }
            Err(u) => check.unreachable.push(u),
        }
    }
    check
}

/// The fingerprints the hosts show now of the resources `keys` names per host: after a run
/// (what a rollback is stale-checked against), or for `rollback --force`. Hosts that cannot be
/// probed are left out; so are resources whose probe failed.
pub async fn fingerprints(
    plan: &Plan,
    keys: &BTreeMap<String, BTreeSet<String>>,
    inv: &Inventory,
    parallel: usize,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    secrets: &crate::secrets::Resolved,
) -> Vec<(String, String, String)> {
    let per_host: Vec<Vec<(String, String, String)>> = futures::stream::iter(plan.hosts.iter())
        .map(|h| async move {
            match keys.get(&h.name) {
                Some(wanted) => fingerprints_of_host(h, wanted, inv, env, secrets).await,
                None => Vec::new(),
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    per_host.into_iter().flatten().collect()
}

/// [`fingerprints`] of one host's resources `wanted`.
pub async fn fingerprints_of_host(
    h: &HostPlan,
    wanted: &BTreeSet<String>,
    inv: &Inventory,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    secrets: &crate::secrets::Resolved,
) -> Vec<(String, String, String)> {
    let resources: Vec<_> = probed(h)
        .into_iter()
        .filter(|r| wanted.contains(&r.key))
        .collect();
    if resources.is_empty() {
        return Vec::new();
    }
    let Ok((observed, _)) = probe_host(h, &resources, inv, env, secrets, false).await else {
        return Vec::new();
    };
    resources
        .iter()
        .zip(&observed)
        .filter(|(_, o)| o.is_ok())
        .map(|(r, o)| (h.name.clone(), r.key.clone(), fingerprint_of(o)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource in several entries of a plan (a rollback's) that drifted is reported once,
    /// with the keys of all its entries.
    #[test]
    fn a_resource_in_several_entries_drifts_once() {
        let drift = |key: &str, label: &str| Drift {
            host: "web1".into(),
            key: key.into(),
            label: label.into(),
            planned: "after".into(),
            now: "edited".into(),
            why: None,
            also: Vec::new(),
        };
        let (mut all, mut reported) = (Vec::new(), BTreeMap::new());
        for (key, id, label) in [
            ("rollback#1", "user:deploy", "user deploy"),
            ("rollback#2", "group:ops", "group ops"),
            ("rollback#3", "user:deploy", "user deploy"),
        ] {
            report(&mut all, &mut reported, id, drift(key, label));
        }
        let keys: Vec<(&str, String)> = all.iter().map(|d| (d.label.as_str(), d.keys())).collect();
        assert_eq!(
            keys,
            [
                ("user deploy", "rollback#1, rollback#3".to_string()),
                ("group ops", "rollback#2".to_string())
            ]
        );
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json[0]["also"], serde_json::json!(["rollback#3"]));
        assert!(json[1].get("also").is_none());
    }
}
