//! `apply FILE`: verify the plan file, refuse it if it ran already, if a secret it pinned changed
//! or if the hosts changed since planning; otherwise execute exactly it, record what happened and
//! notify the webhooks.

use std::path::{Path, PathBuf};

use super::Error;
use super::record::{Locked, RunSummary};
use super::secrets::{self, Needs, Source};
use crate::exec::{Event, Options, Report, stale};
use crate::inventory::{Inventory, Overrides};
use crate::notify::{Delivery, EventKind};
use crate::plan::{Plan, lockfile};
use crate::state::{RunId, RunKind, format_time};

#[derive(Debug, Clone)]
pub struct Request {
    pub file: PathBuf,
    /// `--state`: a SQLite file or a `postgresql://` URL; default: the plan's `state`, else
    /// .nexus/state.db next to the plan's configuration (app/state.rs).
    pub state: Option<String>,
    pub overrides: Overrides,
    pub parallel: usize,
    pub continue_on_error: bool,
    /// `-c`: the configuration apply is given, consulted for `trust` (app/signature.rs).
    pub config: PathBuf,
    /// `--allowed-signers`: require plans signed by a key of this file.
    pub allowed_signers: Option<PathBuf>,
}

/// A finished run: what the executor reported and what the state recorded.
pub struct Applied {
    pub plan: Plan,
    pub run: RunId,
    pub report: Report,
    pub summary: RunSummary,
    pub deliveries: Vec<Delivery>,
    /// The apply lock of a dead process that this run took over.
    pub recovered: Option<crate::state::Recovered>,
    /// nexus.lock, when this command (`run`) wrote it.
    pub pins_written: Option<PathBuf>,
    /// The signal that stopped the run early, as the exit it means (130 or 143).
    pub interrupted: Option<crate::exit::Exit>,
}

/// The directory the plan's relative paths (known_hosts, identities, the vault) are relative to.
pub fn plan_base_dir(config: &str) -> PathBuf {
    Path::new(config)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Applies the plan file of `req`. `planned` sees the plan once it is verified and fresh;
/// `observer` sees every executor event (progress rendering).
pub fn apply(
    req: &Request,
    planned: &dyn Fn(&Plan),
    observer: &(dyn Fn(&Event) + Sync),
) -> Result<Applied, Error> {
    let file = req.file.display().to_string();
    // Replay protection keys on the plan file: its hash plus the id `nexus plan -o` gave it,
    // both covered by the header's hash.
    // Read once: the bytes whose signature is checked are the bytes that are applied.
    let bytes = std::fs::read(&req.file).map_err(|e| Error::PlanFile {
        source: lockfile::LockfileError::Read {
            file: file.clone(),
            reason: e.to_string(),
        },
    })?;
    let (plan, hash) = lockfile::decode_named(&bytes, &file)
        .and_then(lockfile::PlanFile::applicable)
        .map_err(|source| Error::PlanFile { source })?;
    let trust = super::signature::Trust {
        flag: req.allowed_signers.as_deref(),
        own_config: &req.config,
        plan_config: Path::new(&plan.config),
    };
    let signer = super::signature::verify(&req.file, &bytes, &trust)?;
    let base = plan_base_dir(&plan.config);
    let location = super::state::location(
        req.state.as_deref(),
        plan.state.as_ref(),
        Path::new(&plan.config),
        Some(&Source::Plan {
            vault: plan.vault.as_ref(),
            base: &base,
        }),
    )?;
    let state = Locked::take(&location, &format!("nexus apply {file}"), &base)?;
    if let Some(prev) = state.store.applied(&hash)? {
        return Err(Error::AlreadyApplied {
            file,
            run: prev.id.0,
            started: format_time(prev.started_at),
            status: format!("{:?}", prev.status),
        });
    }
    let run = state.begin(&plan, &hash, RunKind::Apply, signer)?;
    let mut needs = Needs::default();
    for (name, fingerprint) in &plan.inputs.secrets {
        needs.require(name, Some(fingerprint));
    }
    needs.sudo(plan.hosts.iter().map(|h| &h.connection));
    needs.notifiers(&plan.notify);
    needs.recognise_all();
    let env = |k: &str| std::env::var(k).ok();
    let source = Source::Plan {
        vault: plan.vault.as_ref(),
        base: &base,
    };
    let secrets = match secrets::resolve(&source, &needs, &env) {
        Ok(s) => s,
        Err(e) => {
            state.refuse(
                run,
                &serde_json::json!({ "status": "refused", "reason": format!("error: {e}") }),
            );
            return Err(e.into());
        }
    };
    let rt = super::plan::runtime()?;
    let (report, deliveries) = rt.block_on(async {
        // A signal while re-probing stops the apply before anything was executed.
        let mut signals = super::record::Signals::new();
        let mut inv = Inventory::for_plan(&plan, &base, &req.overrides)?;
        inv.set_secrets(secrets.clone());
        let check = tokio::select! {
            check = stale::check(&plan, &inv, req.parallel, &env, &secrets, run) => check,
            exit = signals.next() => {
                inv.close().await;
                state.interrupt(run, exit);
                return Err(Error::Interrupted(exit));
            }
        };
        if !check.is_fresh() {
            inv.close().await;
            let summary = serde_json::json!({
                "status": "refused",
                "drift": check.drift,
                "unreachable": check.unreachable,
            });
            state.refuse(run, &summary);
            return Err(Error::Stale {
                file: file.clone(),
                check,
            });
        }
        // A rollback needs the plan's probes, connections and handlers, not its contents: the
        // pre-images keep the contents that matter.
        let recorded = crate::plan::Plan {
            blobs: Default::default(),
            ..plan.clone()
        };
        let generation = crate::state::NewGeneration {
            plan: serde_json::to_string(&recorded).expect("plans serialize"),
            rollback_of: plan.rollback.as_ref().map(|r| RunId(r.to)),
            preimages: check.preimages,
            blobs: check.blobs,
        };
        if let Err(e) = state.store.record_generation(run, &generation) {
            // Nothing was executed: a change without its pre-image could not be undone.
            inv.close().await;
            state.refuse(
                run,
                &serde_json::json!({ "status": "refused", "reason": format!("error: {e}") }),
            );
            return Err(e.into());
        }
        planned(&plan);
        let opts = Options {
            parallel: req.parallel,
            continue_on_error: req.continue_on_error,
            base_dir: base.clone(),
            secrets: secrets.clone(),
            stop: Default::default(),
        };
        let execution = super::record::Execution {
            plan: &plan,
            hash: &hash,
            kind: EventKind::Apply,
            secrets: &secrets,
            generation: true,
        };
        execution
            .run(inv, &opts, &state, run, &mut signals, observer)
            .await
    })?;
    state.conclude(plan, run, report, deliveries)
}
