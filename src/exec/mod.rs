//! Executing a saved plan: tasks over their dependency DAG (independent tasks run concurrently),
//! each task's hosts in batches by strategy, each host's resources in order, handlers once after
//! the task where notified, health checks after batches, max-fail and stop rules. The executor
//! emits [`Event`]s; rendering and state recording consume them.

pub mod batch;
pub mod preimage;
pub mod retry;
pub mod stale;
pub mod step;
pub mod strategy;
pub mod transfer;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::inventory::Inventory;
use crate::plan::Action;
use crate::plan::Strategy;
use crate::plan::{Plan, PlannedResource, Role, TaskPlan};
use step::Escalation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Succeeded,
    Failed,
    /// Nothing to do (no-op), or a guard found the work already done.
    Skipped,
    /// Not attempted: an earlier failure or a stopped rollout.
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceResult {
    pub host: String,
    pub key: String,
    pub task: String,
    pub role: Role,
    pub id: String,
    pub kind: crate::plan::ResourceType,
    pub label: String,
    pub action: Action,
    pub status: Status,
    /// Whether the resource changed the host. Checks (`wait-for`, health checks) never do.
    pub changed: bool,
    /// Whether its host started the task at all; resources of hosts a stopped rollout never
    /// reached are reported once per host, not one by one.
    pub host_started: bool,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub attempts: u32,
    pub output_tail: String,
    pub error: Option<String>,
    /// The content this resource leaves on the host holds vault values.
    pub holds_secrets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Succeeded,
    Failed,
    /// Its rollout was stopped (max-fail exceeded) or the run stopped before it started.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskOutcome {
    pub name: String,
    pub status: TaskStatus,
    pub hosts_ok: Vec<String>,
    pub hosts_failed: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone)]
pub enum Event {
    TaskStarted {
        task: String,
        hosts: usize,
    },
    BatchStarted {
        task: String,
        batch: usize,
        of: usize,
        hosts: Vec<String>,
    },
    Resource(ResourceResult),
    RolloutStopped {
        task: String,
        reason: String,
    },
    /// Bytes of a resource's content moved so far by a transfer (SFTP), as they move.
    Transfer {
        host: String,
        label: String,
        done: u64,
        /// Unknown for a download until it ends.
        total: Option<u64>,
    },
    /// A change notified a handler on a host: it is pending there until it succeeds.
    HandlerNotified {
        host: String,
        handler: String,
        /// The label of the change.
        by: String,
    },
    /// A handler ran on a host; `ok` when all of its resources succeeded.
    HandlerFinished {
        host: String,
        handler: String,
        ok: bool,
    },
    /// The run was asked to stop (Ctrl-C, SIGTERM, a lost state lock): nothing new starts, and
    /// what runs finishes, or with `kill` (a second signal) is killed on its host.
    StopRequested {
        reason: String,
        /// The commands in flight are being killed.
        kill: bool,
        /// A signal asked: another one escalates (kill, then exit at once).
        by_signal: bool,
    },
    /// Hosts of a task that never started it (a stopped rollout or run), with the reason.
    HostsNotRun {
        task: String,
        hosts: Vec<String>,
        reason: String,
    },
    TaskFinished(TaskOutcome),
    /// A task's rollout stopped and it rolls back (`on-failure="rollback"`): what the run changed
    /// in it on these hosts is being restored (emitted by the application layer, which decides).
    RollbackStarted {
        task: String,
        hosts: Vec<String>,
    },
}

/// A request to stop the run (Ctrl-C, SIGTERM), shared with whoever receives the signal.
/// Nothing new starts once it is set; commands in flight finish and are reported, unless the
/// run is also told to [`kill`](StopRequest::kill) them.
#[derive(Debug, Clone, Default)]
pub struct StopRequest(std::sync::Arc<Stop>);

#[derive(Debug, Default)]
struct Stop {
    reason: std::sync::OnceLock<String>,
    kill: std::sync::OnceLock<String>,
    killing: tokio::sync::Notify,
}

impl StopRequest {
    /// Asks the run to stop, with the reason its unstarted work is reported with.
    pub fn request(&self, reason: impl Into<String>) {
        let _ = self.0.reason.set(reason.into());
    }

    pub fn reason(&self) -> Option<&str> {
        self.0.reason.get().map(String::as_str)
    }

    /// Stops the run now: the commands in flight are abandoned, which kills them on their hosts
    /// (see `transport::wrap::wrap_watched`), and reported failed with `reason`.
    pub fn kill(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.request(reason.clone());
        let _ = self.0.kill.set(reason);
        self.0.killing.notify_waiters();
    }

    /// Resolves, with its reason, once [`StopRequest::kill`] was called.
    pub async fn killed(&self) -> String {
        loop {
            let notified = self.0.killing.notified();
            tokio::pin!(notified);
            // Registered before the check, so a kill between the two is not missed.
            notified.as_mut().enable();
            if let Some(reason) = self.0.kill.get() {
                return reason.clone();
            }
            notified.await;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub parallel: usize,
    /// Keep going on a host after one of its resources failed (the run still fails).
    pub continue_on_error: bool,
    /// Relative download destinations resolve here: the plan's config directory.
    pub base_dir: std::path::PathBuf,
    /// Secret values the plan refers to, read from the vault for this run; also what is
    /// redacted from every output and error the run reports.
    pub secrets: std::sync::Arc<crate::secrets::Resolved>,
    /// Set by the caller to stop the run early.
    pub stop: StopRequest,
    /// Pre-images were recorded for this run: probe what each host's changes left
    /// ([`Report::fingerprints_after`], what a rollback is stale-checked against).
    pub generation: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub tasks: Vec<TaskOutcome>,
    pub results: Vec<ResourceResult>,
    pub failed_hosts: Vec<String>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// Set by the caller when a signal stopped the run: the exit it means (130, 143).
    #[serde(skip)]
    pub interrupted: Option<crate::exit::Exit>,
    pub duration_ms: u64,
    /// (host, key, fingerprint) of what each host's changes left, probed when the host had no
    /// task left, before its connection was released (a resource whose probe failed is left
    /// out).
    #[serde(skip)]
    pub fingerprints_after: Vec<(String, String, String)>,
    /// The hosts probed for [`Report::fingerprints_after`]: not those the run did not finish, nor
    /// those finished while it was being stopped.
    #[serde(skip)]
    pub probed_after: BTreeSet<String>,
}

/// Shared run state: which hosts failed and whether the run must stop.
struct Shared {
    failed_hosts: BTreeSet<String>,
    stop: Option<String>,
    results: Vec<ResourceResult>,
    escalation: HashMap<String, Escalation>,
    /// Hosts whose pending handlers (from earlier runs) were handed to a task already.
    pending_taken: BTreeSet<String>,
    /// How many of its tasks each host has not finished yet.
    tasks_left: HashMap<String, usize>,
    /// See [`Report::fingerprints_after`].
    fingerprints_after: Vec<(String, String, String)>,
    probed_after: BTreeSet<String>,
    /// The keys of each host's resources that changed it so far, for its after-probe.
    changed: HashMap<String, BTreeSet<String>>,
}

struct Ctx<'a> {
    plan: &'a Plan,
    inv: &'a Inventory,
    opts: &'a Options,
    events: &'a (dyn Fn(Event) + Sync),
    shared: Mutex<Shared>,
    /// `-j`: hosts at work at once over the whole run, whichever tasks they belong to.
    hosts_in_flight: tokio::sync::Semaphore,
    env: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

impl Ctx<'_> {
    /// Counts a task done on `host`. After its last one nothing more runs there in this apply:
    /// what its changes left is probed for the record, and its connection released, so that a
    /// fleet's apply holds about `-j` connections rather than one per host.
    async fn task_finished_on(&self, host: &str) {
        let keys: BTreeSet<String> = {
            let mut shared = self.shared.lock().expect("poisoned");
            match shared.tasks_left.get_mut(host) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return;
                }
                _ => {}
            }
            shared.tasks_left.remove(host);
            shared.changed.remove(host).unwrap_or_default()
        };
        // A host finished while the run is being stopped may have had a command killed under it:
        // what it shows is left to the caller's probe after the run.
        let stopping = self.opts.stop.reason().is_some();
        if let (true, false, false, Some(h)) = (
            self.opts.generation,
            keys.is_empty(),
            stopping,
            self.plan.host(host),
        ) {
            let after =
                stale::fingerprints_of_host(h, &keys, self.inv, self.env, &self.opts.secrets).await;
            let mut shared = self.shared.lock().expect("poisoned");
            shared.fingerprints_after.extend(after);
            shared.probed_after.insert(host.to_string());
        }
        self.inv.release(host).await;
    }

    fn emit_result(&self, mut r: ResourceResult) {
        // Everything downstream (terminal, JSON, state database, notifications) sees redacted text.
        r.output_tail = self.opts.secrets.redact(&r.output_tail);
        r.error = r.error.map(|e| self.opts.secrets.redact(&e));
        (self.events)(Event::Resource(r.clone()));
        let mut shared = self.shared.lock().expect("poisoned");
        if r.changed_on_host() {
            shared
                .changed
                .entry(r.host.clone())
                .or_default()
                .insert(r.key.clone());
        }
        shared.results.push(r);
    }

    /// Why the run must start nothing more: a stopped rollout, or a stop request.
    fn stop_reason(&self) -> Option<String> {
        self.shared
            .lock()
            .expect("poisoned")
            .stop
            .clone()
            .or_else(|| self.opts.stop.reason().map(str::to_string))
    }

    fn host_resources<'p>(
        &'p self,
        host: &str,
        pred: impl Fn(&PlannedResource) -> bool,
    ) -> Vec<&'p PlannedResource> {
        self.plan
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.resources.iter().filter(|r| pred(r)).collect())
            .unwrap_or_default()
    }

    fn not_run(&self, host: &str, r: &PlannedResource, why: &str) {
        self.emit_result(result(
            host,
            r,
            Status::NotRun,
            false,
            None,
            Some(why.to_string()),
        ));
    }

    /// Reports hosts that never start `task`: one event naming them, then each resource,
    /// marked as of a host that never started. What had nothing to do is unchanged (skipped),
    /// not "not run".
    fn hosts_not_run(&self, task: &TaskPlan, hosts: &[String], why: &str) {
        if hosts.is_empty() {
            return;
        }
        (self.events)(Event::HostsNotRun {
            task: task.name.clone(),
            hosts: hosts.to_vec(),
            reason: why.to_string(),
        });
        for h in hosts {
            for r in self.host_resources(h, |r| r.task == task.name && r.role != Role::Handler) {
                let status = if r.action == Action::NoOp {
                    Status::Skipped
                } else {
                    Status::NotRun
                };
                let mut res = result(h, r, status, false, None, Some(format!("not run: {why}")));
                res.host_started = false;
                self.emit_result(res);
            }
        }
    }
}

fn result(
    host: &str,
    r: &PlannedResource,
    status: Status,
    changed: bool,
    o: Option<&step::StepsOutcome>,
    error: Option<String>,
) -> ResourceResult {
    ResourceResult {
        host: host.to_string(),
        key: r.key.clone(),
        task: r.task.clone(),
        role: r.role,
        id: r.id.clone(),
        kind: r.kind,
        label: r.label.clone(),
        action: r.action,
        status,
        // A check that passed verified the host; it changed nothing.
        changed: changed && !is_check(r),
        host_started: true,
        exit_code: o.and_then(|o| o.exit_code),
        duration_ms: o.map_or(0, |o| o.duration.as_millis() as u64),
        attempts: o.map_or(0, |o| o.attempts),
        output_tail: o.map(|o| o.output_tail.clone()).unwrap_or_default(),
        error: error.or_else(|| o.and_then(|o| o.error.clone())),
        holds_secrets: holds_secrets(r),
    }
}

/// Whether the content `r` leaves on the host holds vault values: it writes one, or its desired
/// content holds secrets (its hash is sealed and no old content is asked for; a batch sealed by
/// the planner only because the old content held one still asks for it).
fn holds_secrets(r: &PlannedResource) -> bool {
    r.steps
        .iter()
        .any(|s| !s.stdin_secrets.is_empty() || s.stdin_sealed)
        || (r.action != Action::Delete
            && r.probe_batch
                .as_ref()
                .is_some_and(|b| b.sealed && b.old_unless.is_none()))
}

/// `wait-for` and health checks verify a host; they are never changes.
fn is_check(r: &PlannedResource) -> bool {
    check_kind(r.role, r.kind)
}

fn check_kind(role: Role, kind: crate::plan::ResourceType) -> bool {
    role == Role::HealthCheck || kind.is_check()
}

impl ResourceResult {
    /// A task's resource that changed its host: what a rollback of the run restores, and
    /// whose state after the run is recorded.
    pub fn changed_on_host(&self) -> bool {
        self.changed && self.status == Status::Succeeded && self.role == Role::Task
    }

    /// Whether this is a check (`wait-for`, a health check) rather than a change.
    pub fn is_check(&self) -> bool {
        check_kind(self.role, self.kind)
    }
}

/// Executes the plan. Never panics on host failures: every planned resource ends in the report
/// with a status.
pub async fn execute(
    plan: &Plan,
    inv: &Inventory,
    opts: &Options,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    events: &(dyn Fn(Event) + Sync),
) -> Report {
    let start = Instant::now();
    let mut escalation = HashMap::new();
    for h in &plan.hosts {
        let e = match inv.become_for(&h.name, env) {
            Ok(b) => Escalation {
                become_: Some(b),
                error: None,
            },
            Err(e) => Escalation {
                become_: None,
                error: Some(e.to_string()),
            },
        };
        escalation.insert(h.name.clone(), e);
    }
    let ctx = Ctx {
        plan,
        inv,
        opts,
        events,
        shared: Mutex::new(Shared {
            failed_hosts: BTreeSet::new(),
            stop: None,
            results: Vec::new(),
            escalation,
            pending_taken: BTreeSet::new(),
            tasks_left: tasks_per_host(plan),
            fingerprints_after: Vec::new(),
            probed_after: BTreeSet::new(),
            changed: HashMap::new(),
        }),
        hosts_in_flight: tokio::sync::Semaphore::new(opts.parallel.max(1)),
        env,
    };
    let mut outcomes: Vec<Option<TaskOutcome>> = vec![None; plan.tasks.len()];
    let mut started = vec![false; plan.tasks.len()];
    let mut running = FuturesUnordered::new();
    loop {
        for (i, t) in plan.tasks.iter().enumerate() {
            let deps_done = t.deps.iter().all(|d| {
                plan.tasks
                    .iter()
                    .position(|x| &x.name == d)
                    .is_none_or(|j| outcomes[j].is_some())
            });
            if !started[i] && deps_done {
                started[i] = true;
                let ctx = &ctx;
                running.push(async move { (i, run_task(ctx, t).await) });
            }
        }
        match running.next().await {
            Some((i, outcome)) => {
                (ctx.events)(Event::TaskFinished(outcome.clone()));
                outcomes[i] = Some(outcome);
            }
            None => break,
        }
    }
    drop(running);
    let shared = ctx.shared.into_inner().expect("poisoned");
    let tasks: Vec<TaskOutcome> = outcomes.into_iter().flatten().collect();
    let failed_results = shared
        .results
        .iter()
        .any(|r| r.status == Status::Failed && !task_continues(plan, &r.task));
    let ok = shared.stop.is_none()
        && opts.stop.reason().is_none()
        && !failed_results
        && shared.failed_hosts.is_empty();
    Report {
        ok,
        tasks,
        results: shared.results,
        failed_hosts: shared.failed_hosts.into_iter().collect(),
        stopped: shared
            .stop
            .or_else(|| opts.stop.reason().map(str::to_string)),
        interrupted: None,
        duration_ms: start.elapsed().as_millis() as u64,
        fingerprints_after: shared.fingerprints_after,
        probed_after: shared.probed_after,
    }
}

/// How many tasks each host is in.
fn tasks_per_host(plan: &Plan) -> HashMap<String, usize> {
    let mut left = HashMap::new();
    for t in &plan.tasks {
        for h in &t.hosts {
            *left.entry(h.clone()).or_default() += 1;
        }
    }
    left
}

/// Whether a task's failures are tolerated (`continue-on-error` on the task).
fn task_continues(plan: &Plan, task: &str) -> bool {
    plan.tasks
        .iter()
        .find(|t| t.name == task)
        .is_some_and(|t| t.continue_on_error)
}

async fn run_task(ctx: &Ctx<'_>, task: &TaskPlan) -> TaskOutcome {
    let start = Instant::now();
    let mut hosts_ok = Vec::new();
    let mut hosts_failed = Vec::new();
    (ctx.events)(Event::TaskStarted {
        task: task.name.clone(),
        hosts: task.hosts.len(),
    });
    if let Some(reason) = ctx.stop_reason() {
        ctx.hosts_not_run(task, &task.hosts, &reason);
        return TaskOutcome {
            name: task.name.clone(),
            status: TaskStatus::Stopped,
            hosts_ok,
            hosts_failed,
            duration_ms: 0,
        };
    }
    let batches = strategy::batches(&task.hosts, task.strategy, &task.batches, task.canary);
    let limit = task
        .parallel
        .map_or(ctx.opts.parallel, |p| (p as usize).min(ctx.opts.parallel))
        .max(1);
    let mut status = TaskStatus::Succeeded;
    let n = batches.len();
    // max-fail is a share of the task's hosts, counted over every batch so far.
    let mut failed_so_far = 0;
    for (bi, batch) in batches.iter().enumerate() {
        if let Some(reason) = ctx.opts.stop.reason() {
            let rest: Vec<String> = batches[bi..].iter().flatten().cloned().collect();
            ctx.hosts_not_run(task, &rest, reason);
            status = TaskStatus::Stopped;
            break;
        }
        (ctx.events)(Event::BatchStarted {
            task: task.name.clone(),
            batch: bi + 1,
            of: n,
            hosts: batch.clone(),
        });
        let results: Vec<(String, bool)> = futures::stream::iter(batch.iter())
            .map(|h| async move {
                // Never closed, so acquiring cannot fail; the permit is held for the whole host.
                let _permit = ctx.hosts_in_flight.acquire().await.ok();
                let ok = run_host(ctx, task, h).await;
                ctx.task_finished_on(h).await;
                (h.clone(), ok)
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        let mut failed_in_batch = 0;
        for (h, ok) in results {
            if ok {
                hosts_ok.push(h);
            } else {
                failed_in_batch += 1;
                hosts_failed.push(h);
            }
        }
        hosts_ok.sort_by_key(|h| task.hosts.iter().position(|x| x == h));
        hosts_failed.sort_by_key(|h| task.hosts.iter().position(|x| x == h));
        if failed_in_batch > 0 {
            status = TaskStatus::Failed;
        }
        failed_so_far += failed_in_batch;
        // A parallel task has no later batch to protect: its failed hosts just drop out. Batched
        // rollouts stop when failures exceed max-fail (any failure, without a limit).
        let batched = task.strategy != Strategy::Parallel || task.max_fail.is_some();
        if batched
            && strategy::exceeds_max_fail(failed_so_far, task.hosts.len(), task.max_fail)
            && !task.continue_on_error
        {
            let reason = format!(
                "task {} stopped after batch {}/{}: {} of {} host(s) failed{}",
                task.name,
                bi + 1,
                n,
                failed_so_far,
                task.hosts.len(),
                task.max_fail
                    .map(|m| format!(" (max-fail {m})"))
                    .unwrap_or_default()
            );
            (ctx.events)(Event::RolloutStopped {
                task: task.name.clone(),
                reason: reason.clone(),
            });
            let rest: Vec<String> = batches[bi + 1..].iter().flatten().cloned().collect();
            ctx.hosts_not_run(task, &rest, "rollout stopped");
            ctx.shared
                .lock()
                .expect("poisoned")
                .stop
                .get_or_insert(reason);
            status = TaskStatus::Stopped;
            break;
        }
    }
    TaskOutcome {
        name: task.name.clone(),
        status,
        hosts_ok,
        hosts_failed,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// Runs one task on one host: its resources, then notified handlers, then health checks.
/// Returns whether the host succeeded.
async fn run_host(ctx: &Ctx<'_>, task: &TaskPlan, host: &str) -> bool {
    let resources = ctx.host_resources(host, |r| r.task == task.name && r.role == Role::Task);
    let checks = ctx.host_resources(host, |r| r.task == task.name && r.role == Role::HealthCheck);
    let earlier_failure = ctx
        .shared
        .lock()
        .expect("poisoned")
        .failed_hosts
        .contains(host);
    if earlier_failure && !ctx.opts.continue_on_error {
        for r in resources.iter().chain(&checks) {
            ctx.not_run(host, r, "not run: the host failed earlier in this apply");
        }
        return false;
    }
    let transport = match ctx.inv.transport(host) {
        Ok(t) => t,
        Err(e) => {
            for r in resources.iter().chain(&checks) {
                ctx.not_run(host, r, &e.to_string());
            }
            mark_failed(ctx, task, host);
            return false;
        }
    };
    let esc = ctx
        .shared
        .lock()
        .expect("poisoned")
        .escalation
        .get(host)
        .cloned()
        .unwrap_or(Escalation {
            become_: None,
            error: None,
        });
    let mut run = HostRun {
        ctx,
        host,
        transport: &*transport,
        esc: &esc,
        seed: retry::seed(host),
        ok: true,
        lost: None,
        notified: pending_for(ctx, host),
        share_commands: task.timeout.is_none(),
    };
    let reported_before = ctx.shared.lock().expect("poisoned").results.len();
    let work = async {
        run.run_list(&resources).await;
        // Handlers in definition order, once for this task, only where a change notified them.
        let notified = run.notified.clone();
        let handlers = ctx.host_resources(host, |r| {
            r.role == Role::Handler && notified.contains(&r.task)
        });
        let before = ctx.shared.lock().expect("poisoned").results.len();
        run.run_list(&handlers).await;
        handlers_finished(ctx, host, &notified, before);
        run.run_list(&checks).await;
    };
    // The task's timeout bounds all of its work on this host, and a kill request ends it at
    // once: what is in flight then is abandoned (killed on the host) and reported failed, the
    // rest not run.
    let deadline = async {
        match task.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let cut = tokio::select! {
        () = work => None,
        () = deadline => task.timeout.map(|limit| format!(
            "task {} timed out after {}",
            task.name,
            humantime::format_duration(limit)
        )),
        why = ctx.opts.stop.killed() => Some(why),
    };
    if let Some(why) = cut {
        run.ok = false;
        let handlers = ctx.host_resources(host, |r| {
            r.role == Role::Handler && run.notified.contains(&r.task)
        });
        let reported: Vec<String> = ctx.shared.lock().expect("poisoned").results[reported_before..]
            .iter()
            .filter(|r| r.host == host)
            .map(|r| r.key.clone())
            .collect();
        let pending = resources
            .iter()
            .chain(&handlers)
            .chain(&checks)
            .filter(|r| !reported.contains(&r.key));
        for (i, r) in pending.enumerate() {
            if i == 0 {
                ctx.emit_result(result(
                    host,
                    r,
                    Status::Failed,
                    false,
                    None,
                    Some(why.clone()),
                ));
            } else {
                ctx.not_run(host, r, &format!("not run: {why}"));
            }
        }
    }
    let ok = run.ok;
    if !ok {
        mark_failed(ctx, task, host);
    }
    ok
}

/// One host's progress through a task.
struct HostRun<'a, 'c> {
    ctx: &'a Ctx<'c>,
    host: &'a str,
    transport: &'a dyn crate::transport::Transport,
    esc: &'a Escalation,
    seed: u64,
    ok: bool,
    /// Set when the connection is gone: later resources are reported not run, with this reason.
    lost: Option<String>,
    /// Handlers notified by resources that changed.
    notified: Vec<String>,
    /// Whether resources may share one command. Not under a task timeout: a command cut off
    /// by it would take the outcomes of every resource it carried with it.
    share_commands: bool,
}

impl HostRun<'_, '_> {
    async fn run_list(&mut self, list: &[&PlannedResource]) {
        let (ctx, host) = (self.ctx, self.host);
        let mut i = 0;
        while i < list.len() {
            let r = list[i];
            if let Some(why) = &self.lost {
                ctx.not_run(host, r, why);
                i += 1;
                continue;
            }
            if !self.ok && !ctx.opts.continue_on_error {
                ctx.not_run(host, r, "not run: an earlier resource on this host failed");
                i += 1;
                continue;
            }
            if let Some(why) = ctx.opts.stop.reason() {
                ctx.not_run(host, r, &format!("not run: {why}"));
                i += 1;
                continue;
            }
            if r.action == Action::NoOp {
                ctx.emit_result(result(host, r, Status::Skipped, false, None, None));
                i += 1;
                continue;
            }
            if let Some(next) = self.run_batch(&list[i..]).await {
                i += next;
                continue;
            }
            let progress = |done: u64, total: Option<u64>| {
                (ctx.events)(Event::Transfer {
                    host: host.to_string(),
                    label: r.label.clone(),
                    done,
                    total,
                })
            };
            let o = step::run(
                self.transport,
                step::Contents::of(ctx.plan),
                r,
                self.esc,
                self.seed,
                ctx.opts,
                &progress,
            )
            .await;
            self.finish(r, &o);
            i += 1;
        }
    }

    /// Runs the resources at the start of `list` that may share one command (and the no-ops
    /// among them), as one command, and reports them; returns how many of `list` it dealt with,
    /// or `None` when fewer than two would share it. The resources after a failure are left.
    async fn run_batch(&mut self, list: &[&PlannedResource]) -> Option<usize> {
        if !self.share_commands {
            return None;
        }
        let (ctx, host) = (self.ctx, self.host);
        let blobs = &ctx.plan.blobs;
        let mut units: Vec<(crate::plan::Step, bool)> = Vec::new();
        // Per resource of the range: the index of its unit, or None for a no-op.
        let mut slots: Vec<Option<usize>> = Vec::new();
        let (mut carried, mut script) = (0, 0);
        // Whether every content so far is a file write's, which the batch then embeds in its
        // script: with no other stdin, a script too long for the command line travels on
        // stdin (transport::wrap), so only a batch with other contents is bound by MAX_SCRIPT.
        let mut embeddable = true;
        for r in list {
            if r.action == Action::NoOp {
                slots.push(None);
                continue;
            }
            let Some((step, guarded)) = batch::unit(r) else {
                break;
            };
            if units
                .first()
                .is_some_and(|(first, _)| !step::same_context(first, &step))
            {
                break;
            }
            let Some(size) = batch::fits(blobs, &step, carried) else {
                break;
            };
            let still_embeddable = embeddable && (step.stdin.is_none() || step.write.is_some());
            if units.len() == batch::MAX_RESOURCES
                || (!units.is_empty()
                    && !still_embeddable
                    && script + step.script.len() > batch::MAX_SCRIPT)
            {
                break;
            }
            embeddable = still_embeddable;
            script += step.script.len();
            carried += size;
            slots.push(Some(units.len()));
            units.push((step, guarded));
        }
        if units.len() < 2 {
            return None;
        }
        // Trailing no-ops wait for the next round, so a failure is reported before them.
        while slots.last() == Some(&None) {
            slots.pop();
        }
        let outcomes = batch::run(
            self.transport,
            blobs,
            &units,
            self.esc,
            ctx.opts.secrets.as_ref(),
        )
        .await?;
        for (n, (r, slot)) in list.iter().zip(&slots).enumerate() {
            match slot {
                None if self.lost.is_some() => {
                    let why = self.lost.clone().unwrap_or_default();
                    ctx.not_run(host, r, &why);
                }
                None if self.ok || ctx.opts.continue_on_error => {
                    ctx.emit_result(result(host, r, Status::Skipped, false, None, None));
                }
                None => ctx.not_run(host, r, "not run: an earlier resource on this host failed"),
                Some(u) => match outcomes.get(*u) {
                    Some(o) => self.finish(r, o),
                    // The command ended before this one: it is the caller's again.
                    None => return Some(n),
                },
            }
        }
        Some(slots.len())
    }

    /// Reports a resource that ran (or whose guard skipped it) and notes its handlers.
    fn finish(&mut self, r: &PlannedResource, o: &step::StepsOutcome) {
        let (ctx, host) = (self.ctx, self.host);
        if o.ok {
            // A change notifies handlers; a step skipped by its guard changed nothing.
            let changed = o.ran;
            if changed {
                for n in &r.notify {
                    (ctx.events)(Event::HandlerNotified {
                        host: host.to_string(),
                        handler: n.clone(),
                        by: r.label.clone(),
                    });
                    if !self.notified.contains(n) {
                        self.notified.push(n.clone());
                    }
                }
            }
            let status = if o.ran {
                Status::Succeeded
            } else {
                Status::Skipped
            };
            ctx.emit_result(result(host, r, status, changed, Some(o), None));
        } else {
            self.ok = false;
            if o.connection_lost {
                self.lost = Some(format!(
                    "not run: connection lost ({})",
                    o.error.clone().unwrap_or_default()
                ));
            }
            ctx.emit_result(result(host, r, Status::Failed, false, Some(o), None));
        }
    }
}

/// The handlers still pending on `host` from earlier runs, handed to the first task that runs
/// there, so they run after it even when nothing new notifies them.
fn pending_for(ctx: &Ctx<'_>, host: &str) -> Vec<String> {
    if !ctx
        .shared
        .lock()
        .expect("poisoned")
        .pending_taken
        .insert(host.to_string())
    {
        return Vec::new();
    }
    ctx.plan
        .hosts
        .iter()
        .find(|h| h.name == host)
        .map(|h| {
            h.pending_handlers
                .iter()
                .map(|p| p.handler.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Reports how each handler in `names` that ran on `host` (results after index `from`) ended.
fn handlers_finished(ctx: &Ctx<'_>, host: &str, names: &[String], from: usize) {
    let outcomes: Vec<(String, bool)> = {
        let shared = ctx.shared.lock().expect("poisoned");
        names
            .iter()
            .filter_map(|n| {
                let mine: Vec<&ResourceResult> = shared.results[from..]
                    .iter()
                    .filter(|r| r.host == host && r.role == Role::Handler && r.task == *n)
                    .collect();
                (!mine.is_empty()).then(|| {
                    let ok = mine
                        .iter()
                        .all(|r| matches!(r.status, Status::Succeeded | Status::Skipped));
                    (n.clone(), ok)
                })
            })
            .collect()
    };
    for (handler, ok) in outcomes {
        (ctx.events)(Event::HandlerFinished {
            host: host.to_string(),
            handler,
            ok,
        });
    }
}

fn mark_failed(ctx: &Ctx<'_>, task: &TaskPlan, host: &str) {
    if !task.continue_on_error {
        ctx.shared
            .lock()
            .expect("poisoned")
            .failed_hosts
            .insert(host.to_string());
    }
}

/// For progress output: how long a value in ms reads.
pub fn human_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if d.as_secs() >= 60 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}
