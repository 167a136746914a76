//! The state store for one command: the apply lock, the run record, and every action the
//! executor reports, written by a consumer of its events on a blocking thread of its own, so that
//! a slow database never stalls the hosts' work.

use std::sync::{Arc, mpsc};

use serde::Serialize;

use super::Error;
use super::journal::Record;
use crate::exec::{self, Event, Options, Report, Status, TaskStatus};
use crate::exit::Exit;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::state::{
    ActionRecord, ActionStatus, LockGuard, LockHolder, NewRun, Recovered, RunId, RunKind,
    RunStatus, StateStore, now_ms,
};

/// The state database, locked for this command.
pub struct Locked {
    pub store: Arc<dyn StateStore>,
    pub guard: LockGuard,
    /// Where results that cannot be recorded are kept (app/journal.rs).
    journal_dir: std::path::PathBuf,
}

impl Locked {
    /// Opens the state at `location` and takes the apply lock for `command`. Refuses while
    /// results of an earlier run wait in the journal beside the configuration in `config_dir`.
    pub fn take(
        location: &crate::state::Location,
        command: &str,
        config_dir: &std::path::Path,
    ) -> Result<Locked, Error> {
        let journal_dir = super::journal::dir(config_dir);
        super::journal::refuse_if_pending(&journal_dir)?;
        let store = location.open()?;
        let guard = store.lock(&LockHolder::current(command))?;
        Ok(Locked {
            store,
            guard,
            journal_dir,
        })
    }

    /// A stale lock of a dead process that this command took over, if it did.
    pub fn recovered(&self) -> Option<&Recovered> {
        self.guard.recovered()
    }

    /// Records the start of a run of `plan`, signed by `signer` when apply checked a signature.
    pub fn begin(
        &self,
        plan: &Plan,
        hash: &str,
        kind: RunKind,
        signer: Option<String>,
    ) -> Result<RunId, Error> {
        Ok(self.store.begin_run(&NewRun {
            plan_hash: hash.to_string(),
            config: plan.config.clone(),
            kind,
            tasks: plan.tasks.iter().map(|t| t.name.clone()).collect(),
            hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
            started_at: now_ms(),
            signer,
        })?)
    }

    /// Records that a signal stopped a run before anything was executed.
    pub fn interrupt(&self, run: RunId, exit: Exit) {
        let summary = serde_json::json!({
            "status": "interrupted",
            "reason": format!("interrupted by {} before anything was executed", signal_name(exit)),
        });
        // The interruption is what the user must see; a failure to record it is secondary.
        let _ = self
            .store
            .finish_run(run, RunStatus::Interrupted, &summary.to_string());
    }

    /// Records that a run was refused before anything was executed.
    pub fn refuse(&self, run: RunId, summary: &serde_json::Value) {
        // The refusal is what the user must see; a failure to record it is secondary.
        let _ = self
            .store
            .finish_run(run, RunStatus::Refused, &summary.to_string());
    }

    /// Records the end of a run with its summary.
    pub fn finish(&self, run: RunId, summary: &RunSummary) -> Result<(), Error> {
        let status = if summary.ok {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let json = serde_json::to_value(summary).expect("summary serializes");
        Ok(self.store.finish_run(run, status, &json.to_string())?)
    }

    /// Records the end of `run` (undone by the run `rolled_back_by`, when an automatic rollback
    /// followed it) and releases the apply lock: the last step of apply and run.
    pub fn conclude(
        self,
        plan: Plan,
        run: RunId,
        report: Report,
        deliveries: Vec<crate::notify::Delivery>,
        rolled_back_by: Option<RunId>,
    ) -> Result<Applied, Error> {
        let mut summary = RunSummary::of(&report, &deliveries);
        summary.rolled_back_by = rolled_back_by.map(|r| r.0);
        let interrupted = report.interrupted;
        match interrupted {
            None => self.finish(run, &summary)?,
            Some(_) => {
                let json = serde_json::to_value(&summary).expect("summary serializes");
                self.store
                    .finish_run(run, RunStatus::Interrupted, &json.to_string())?;
            }
        }
        let recovered = self.recovered().cloned();
        self.guard.release()?;
        Ok(Applied {
            plan,
            run,
            report,
            summary,
            deliveries,
            recovered,
            pins_written: None,
            interrupted,
            rollback: None,
        })
    }
}

/// A finished run: what the executor reported and what the state recorded.
pub struct Applied {
    pub plan: Plan,
    pub run: RunId,
    pub report: Report,
    pub summary: RunSummary,
    pub deliveries: Vec<crate::notify::Delivery>,
    /// The apply lock of a dead process that this run took over.
    pub recovered: Option<crate::state::Recovered>,
    /// nexus.lock, when this command (`run`) wrote it.
    pub pins_written: Option<std::path::PathBuf>,
    /// The signal that stopped the run early, as the exit it means (130 or 143).
    pub interrupted: Option<crate::exit::Exit>,
    /// The automatic rollback of a task whose rollout stopped (`on-failure="rollback"`), or why
    /// it could not be made.
    pub rollback: Option<Result<AutoRollback, Error>>,
}

/// An automatic rollback: its own run, recorded as a rollback of the one that failed.
pub struct AutoRollback {
    /// The task whose rollout stopped.
    pub task: String,
    pub run: RunId,
    pub plan: Plan,
    /// What it could not undo, and why.
    pub irreversible: Vec<crate::plan::Irreversible>,
    pub report: Report,
    pub summary: RunSummary,
    pub deliveries: Vec<crate::notify::Delivery>,
}

/// What a run did, as the state records it and the CLI prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    #[serde(skip)]
    pub ok: bool,
    pub status: &'static str,
    pub duration_ms: u64,
    pub tasks: TaskCount,
    pub changed: usize,
    /// Checks (`wait-for`, health checks) that passed; they are not changes.
    pub checks: usize,
    /// Resources that succeeded or had nothing to do, without changing anything.
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_run: usize,
    pub failed_hosts: Vec<String>,
    pub stopped: Option<String>,
    pub notifications: Vec<crate::notify::Delivery>,
    /// The run of the automatic rollback that undid what this run changed in a stopped task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskCount {
    pub succeeded: usize,
    pub total: usize,
}

impl RunSummary {
    pub fn of(report: &Report, deliveries: &[crate::notify::Delivery]) -> RunSummary {
        let count = |s: Status| report.results.iter().filter(|r| r.status == s).count();
        RunSummary {
            ok: report.ok,
            status: if report.ok { "success" } else { "failed" },
            duration_ms: report.duration_ms,
            tasks: TaskCount {
                succeeded: report
                    .tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Succeeded)
                    .count(),
                total: report.tasks.len(),
            },
            changed: report.results.iter().filter(|r| r.changed).count(),
            checks: report
                .results
                .iter()
                .filter(|r| r.is_check() && r.status == Status::Succeeded)
                .count(),
            unchanged: report
                .results
                .iter()
                .filter(|r| {
                    r.status == Status::Skipped
                        || (r.status == Status::Succeeded && !r.changed && !r.is_check())
                })
                .count(),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            not_run: count(Status::NotRun),
            failed_hosts: report.failed_hosts.clone(),
            stopped: report.stopped.clone(),
            notifications: deliveries.to_vec(),
            rolled_back_by: None,
        }
    }
}

fn action_status(s: Status) -> ActionStatus {
    match s {
        Status::Succeeded => ActionStatus::Succeeded,
        Status::Failed => ActionStatus::Failed,
        Status::Skipped => ActionStatus::Skipped,
        Status::NotRun => ActionStatus::NotRun,
    }
}

fn record_of(r: &exec::ResourceResult) -> ActionRecord {
    ActionRecord {
        host: r.host.clone(),
        key: r.key.clone(),
        task: r.task.clone(),
        resource_id: r.id.clone(),
        kind: r.kind.to_string(),
        label: r.label.clone(),
        action: r.action,
        status: action_status(r.status),
        exit_code: r.exit_code,
        duration_ms: r.duration_ms,
        attempts: r.attempts,
        output_tail: r.output_tail.clone(),
        error: r.error.clone(),
        fingerprint_after: None,
        finished_at: now_ms(),
        holds_secrets: r.holds_secrets,
    }
}

/// Writes what it receives: one transaction per action that did something; no-ops are written
/// together before the next such action (or at the end). At the first failure it asks the run to
/// stop (nothing may start that could not be recorded) and keeps everything it could not write;
/// returns that failure with what is unrecorded.
fn record(
    store: &dyn StateStore,
    run: RunId,
    events: mpsc::Receiver<Record>,
    stop: &exec::StopRequest,
) -> Result<(), (crate::state::StateError, Vec<Record>)> {
    let mut first_error: Option<crate::state::StateError> = None;
    let mut unrecorded: Vec<Record> = Vec::new();
    let mut pending: Vec<ActionRecord> = Vec::new();
    // Writes `recs` (the pending no-ops as one batch, or one record) unless the store already
    // failed; on a failure, asks the run to stop and keeps them.
    let mut write = |recs: Vec<Record>, first_error: &mut Option<crate::state::StateError>| {
        if first_error.is_none() {
            let result = match recs.as_slice() {
                [one] if !matches!(one, Record::Action(a) if is_batched(a)) => {
                    one.write(store, run)
                }
                _ => {
                    let actions: Vec<ActionRecord> = recs
                        .iter()
                        .filter_map(|r| match r {
                            Record::Action(a) => Some(a.clone()),
                            _ => None,
                        })
                        .collect();
                    store.record_actions(run, &actions)
                }
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    stop.request(format!("the state store is unreachable: {e}"));
                    *first_error = Some(e);
                }
            }
        }
        // The store is gone: keep the rest rather than retry against it record by record.
        unrecorded.extend(recs);
    };
    for rec in events {
        if let Record::Action(a) = &rec
            && is_batched(a)
        {
            pending.push(a.clone());
            continue;
        }
        if !pending.is_empty() {
            write(
                pending.drain(..).map(Record::Action).collect(),
                &mut first_error,
            );
        }
        write(vec![rec], &mut first_error);
    }
    if !pending.is_empty() {
        write(
            pending.drain(..).map(Record::Action).collect(),
            &mut first_error,
        );
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err((e, unrecorded)),
    }
}

/// Skipped no-ops did nothing on any host: they are written together, not one transaction each.
fn is_batched(a: &ActionRecord) -> bool {
    a.action == crate::plan::Action::NoOp && a.status == ActionStatus::Skipped
}

/// A plan about to execute under a recorded run, and what its notifications need.
pub struct Execution<'a> {
    pub plan: &'a Plan,
    /// The plan's hash as the run records it.
    pub hash: &'a str,
    pub kind: crate::notify::EventKind,
    pub secrets: &'a crate::secrets::Resolved,
}

impl Execution<'_> {
    /// Executes (see [`execute`]), closes the hosts' connections, then notifies the webhooks.
    pub async fn run(
        &self,
        inv: Inventory,
        opts: &Options,
        state: &Locked,
        run: RunId,
        signals: &mut Signals,
        observer: &(dyn Fn(&Event) + Sync),
    ) -> Result<(Report, Vec<crate::notify::Delivery>), Error> {
        let report = execute(self.plan, &inv, opts, state, run, signals, observer).await;
        if let (Ok(report), true) = (&report, opts.generation) {
            self.record_after(report, &inv, opts, state, run).await?;
        }
        inv.close().await;
        let report = report?;
        let event = crate::notify::RunEvent::from_report(
            self.kind,
            &self.plan.config,
            &report,
            Some(run.0),
            Some(self.hash),
        );
        let deliveries = super::notify::send(&self.plan.notify, &event, self.secrets).await;
        Ok((report, deliveries))
    }
}

impl Execution<'_> {
    /// Records the fingerprint each changed resource shows now, in one round trip per host: a
    /// rollback of this run is stale-checked against it.
    async fn record_after(
        &self,
        report: &Report,
        inv: &Inventory,
        opts: &Options,
        state: &Locked,
        run: RunId,
    ) -> Result<(), Error> {
        // The executor probed each host it finished; what is left are hosts a stop cut short.
        let mut keys: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for r in &report.results {
            if r.changed_on_host() && !report.probed_after.contains(&r.host) {
                keys.entry(r.host.clone())
                    .or_default()
                    .insert(r.key.clone());
            }
        }
        let mut after = report.fingerprints_after.clone();
        if !keys.is_empty() {
            let env = |k: &str| std::env::var(k).ok();
            after.extend(
                exec::stale::fingerprints(self.plan, &keys, inv, opts.parallel, &env, self.secrets)
                    .await,
            );
        }
        if after.is_empty() {
            return Ok(());
        }
        Ok(state.store.record_fingerprints_after(run, &after)?)
    }
}

/// SIGINT and SIGTERM, from the moment an apply or run starts contacting hosts: the first asks
/// it to stop, a second ends nexus. One per command: tokio keeps its handler installed once a
/// stream was made, so a signal between two streams would be lost.
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        // Without handlers (which only fails outside a runtime) signals act as they always do.
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal, as the exit code it means.
    pub async fn next(&mut self) -> Exit {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => Exit::Interrupted,
            () = recv(&mut self.term) => Exit::Terminated,
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

fn signal_name(exit: Exit) -> &'static str {
    match exit {
        Exit::Terminated => "SIGTERM",
        _ => "SIGINT",
    }
}

/// Executes `plan` under the recorded run `run`: the executor's events go to the recorder (over a
/// channel, to its own thread) and to `observer` (progress rendering).
pub async fn execute(
    plan: &Plan,
    inv: &Inventory,
    opts: &Options,
    state: &Locked,
    run: RunId,
    signals: &mut Signals,
    observer: &(dyn Fn(&Event) + Sync),
) -> Result<Report, Error> {
    let (tx, rx) = mpsc::channel::<Record>();
    let store = state.store.clone();
    let stop = opts.stop.clone();
    let recorder = tokio::task::spawn_blocking(move || record(&*store, run, rx, &stop));
    let events = |e: Event| {
        let rec = match &e {
            Event::Resource(r) => Some(Record::Action(record_of(r))),
            Event::HandlerNotified { host, handler, by } => Some(Record::Notified {
                host: host.clone(),
                handler: handler.clone(),
                by: by.clone(),
            }),
            Event::HandlerFinished {
                host,
                handler,
                ok: true,
            } => Some(Record::HandlerSucceeded {
                host: host.clone(),
                handler: handler.clone(),
            }),
            _ => None,
        };
        if let Some(rec) = rec {
            // The recorder only stops after this sender is dropped, so sending cannot fail.
            let _ = tx.send(rec);
        }
        observer(&e);
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut first: Option<Exit> = None;
    // A lock held by a connection (PostgreSQL) is lost with it: stop starting work at once,
    // since nothing could be recorded and another apply may now take the lock.
    let mut lost = state.guard.loss_probe();
    let mut watch = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut killing = false;
    let mut report = {
        let work = exec::execute(plan, inv, opts, &env, &events);
        tokio::pin!(work);
        loop {
            tokio::select! {
                report = &mut work => break report,
                _ = watch.tick(), if lost.is_some() => {
                    if let Some(reason) = lost.as_ref().and_then(|probe| probe()) {
                        lost = None;
                        opts.stop.request(reason.clone());
                        observer(&Event::StopRequested { reason, kill: false, by_signal: false });
                    }
                },
                exit = signals.next() => match first {
                    // A second signal: the commands in flight are killed on their hosts and
                    // recorded failed; the run ends as interrupted.
                    Some(_) if !killing => {
                        killing = true;
                        opts.stop.kill(format!(
                            "interrupted by a second {}: killed on the host",
                            signal_name(exit)
                        ));
                        observer(&Event::StopRequested {
                            reason: format!("interrupted by a second {}", signal_name(exit)),
                            kill: true,
                            by_signal: true,
                        });
                    }
                    // A third: stop now. The run stays 'running' in the state until the next
                    // command finds its process gone and records it interrupted; the commands
                    // die with their SSH sessions.
                    Some(first) => std::process::exit(first.code()),
                    None => {
                        first = Some(exit);
                        let reason = format!("interrupted by {}", signal_name(exit));
                        opts.stop.request(reason.clone());
                        observer(&Event::StopRequested { reason, kill: false, by_signal: true });
                    }
                },
            }
        }
    };
    report.interrupted = first;
    drop(tx);
    match recorder.await {
        Ok(Ok(())) => Ok(report),
        Ok(Err((error, records))) => {
            let journal = super::journal::Journal {
                location: state.store.location(),
                run,
                error: error.to_string(),
                records,
            };
            let count = journal.records.len();
            match super::journal::write(&state.journal_dir, &journal) {
                Ok(path) => Err(Error::Unrecorded {
                    run,
                    error,
                    count,
                    journal: path,
                }),
                // Nowhere to keep them either: say what was lost.
                Err(_) => Err(Error::Record(error)),
            }
        }
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
