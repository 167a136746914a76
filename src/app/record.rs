//! The state store for one command: the apply lock, the run record, and every action the
//! executor reports, written by a consumer of its events on a blocking thread of its own, so that
//! a slow database never stalls the hosts' work.

use std::path::Path;
use std::sync::{Arc, mpsc};

use serde::Serialize;

use super::Error;
use crate::exec::{self, Event, Options, Report, Status, TaskStatus};
use crate::exit::Exit;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::state::{
    ActionRecord, ActionStatus, LockGuard, LockHolder, NewRun, Recovered, RunId, RunKind,
    RunStatus, SqliteStore, StateStore, now_ms,
};

/// The state database, locked for this command.
pub struct Locked {
    pub store: Arc<SqliteStore>,
    pub guard: LockGuard,
}

impl Locked {
    /// Opens the database at `path` and takes the apply lock for `command`.
    pub fn take(path: &Path, command: &str) -> Result<Locked, Error> {
        let store = crate::state::open(path)?;
        let guard = store.lock(&LockHolder::current(command))?;
        Ok(Locked {
            store: Arc::new(store),
            guard,
        })
    }

    /// A stale lock of a dead process that this command took over, if it did.
    pub fn recovered(&self) -> Option<&Recovered> {
        self.guard.recovered()
    }

    /// Records the start of a run of `plan`.
    pub fn begin(&self, plan: &Plan, hash: &str, kind: RunKind) -> Result<RunId, Error> {
        Ok(self.store.begin_run(&NewRun {
            plan_hash: hash.to_string(),
            config: plan.config.clone(),
            kind,
            tasks: plan.tasks.iter().map(|t| t.name.clone()).collect(),
            hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
            started_at: now_ms(),
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

    /// Records the end of `run` and releases the apply lock: the last step of apply and run.
    pub fn conclude(
        self,
        plan: Plan,
        run: RunId,
        report: Report,
        deliveries: Vec<crate::notify::Delivery>,
    ) -> Result<super::apply::Applied, Error> {
        let summary = RunSummary::of(&report, &deliveries);
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
        Ok(super::apply::Applied {
            plan,
            run,
            report,
            summary,
            deliveries,
            recovered,
            pins_written: None,
            interrupted,
        })
    }
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

/// What the recorder writes.
enum Record {
    Action(ActionRecord),
    /// A change notified a handler on a host: pending until it succeeds there.
    Notified {
        host: String,
        handler: String,
        by: String,
    },
    /// A handler succeeded on a host.
    HandlerSucceeded {
        host: String,
        handler: String,
    },
}

/// Writes what it receives: one transaction per action that did something; no-ops are written
/// together before the next such action (or at the end). Returns the first failure.
fn record(
    store: &SqliteStore,
    run: RunId,
    events: mpsc::Receiver<Record>,
) -> Result<(), crate::state::StateError> {
    let mut first_error = None;
    let mut pending: Vec<ActionRecord> = Vec::new();
    for rec in events {
        let rec = match rec {
            Record::Action(a)
                if a.action == crate::resources::Action::NoOp
                    && a.status == ActionStatus::Skipped =>
            {
                pending.push(a);
                continue;
            }
            other => other,
        };
        if !pending.is_empty() {
            if let Err(e) = store.record_actions(run, &pending) {
                first_error.get_or_insert(e);
            }
            pending.clear();
        }
        let result = match rec {
            Record::Action(a) => store.record_action(run, &a),
            Record::Notified { host, handler, by } => {
                store.notify_handler(run, &host, &handler, &by)
            }
            Record::HandlerSucceeded { host, handler } => store.handler_succeeded(&host, &handler),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = store.record_actions(run, &pending) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
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
    let recorder = tokio::task::spawn_blocking(move || record(&store, run, rx));
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
    let mut killing = false;
    let mut report = {
        let work = exec::execute(plan, inv, opts, &env, &events);
        tokio::pin!(work);
        loop {
            tokio::select! {
                report = &mut work => break report,
                exit = signals.next() => match first {
                    // A second signal: the commands in flight are killed on their hosts and
                    // recorded failed; the run ends as interrupted.
                    Some(_) if !killing => {
                        killing = true;
                        opts.stop.kill(format!(
                            "interrupted by a second {}: killed on the host",
                            signal_name(exit)
                        ));
                    }
                    // A third: stop now. The run stays 'running' in the state until the next
                    // command finds its process gone and records it interrupted; the commands
                    // die with their SSH sessions.
                    Some(first) => std::process::exit(first.code()),
                    None => {
                        first = Some(exit);
                        let reason = format!("interrupted by {}", signal_name(exit));
                        opts.stop.request(reason.clone());
                        observer(&Event::StopRequested { reason });
                    }
                },
            }
        }
    };
    report.interrupted = first;
    drop(tx);
    match recorder.await {
        Ok(Ok(())) => Ok(report),
        Ok(Err(e)) => Err(Error::Record(e)),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
