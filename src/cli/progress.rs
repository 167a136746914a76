//! Live progress of an apply: a bar per host on a terminal, plain lines otherwise (CI logs, pipes).
//! Renders executor events; it never decides anything.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::emitln;
use crate::exec::{self, Event, Status};
use crate::plan::{Plan, Role};
use crate::render::terminal::escape;

pub enum Progress {
    /// Nothing while running (quiet, or a machine format on stdout).
    Silent,
    /// One line per task, batch and resource that did something.
    Lines { verbose: u8 },
    /// A bar per host; failures and stopped rollouts still print as lines above the bars.
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        verbose: u8,
    },
}

impl Progress {
    pub fn new(plan: &Plan, text: bool, terminal: bool, verbose: u8) -> Progress {
        if !text {
            return Progress::Silent;
        }
        if !terminal {
            return Progress::Lines { verbose };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> ");
        let mut bars = HashMap::new();
        let width = plan
            .hosts
            .iter()
            .map(|h| h.name.len())
            .max()
            .unwrap_or(4)
            .min(24);
        for h in &plan.hosts {
            // Handlers run only when notified, so they are not part of the expected total.
            let total = h
                .resources
                .iter()
                .filter(|r| r.role != Role::Handler)
                .count() as u64;
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(style.clone());
            bar.set_prefix(escape(&format!("{:>width$}", h.name)).into_owned());
            bars.insert(h.name.clone(), bar);
        }
        Progress::Bars {
            multi,
            bars,
            verbose,
        }
    }

    pub fn event(&self, e: &Event) {
        match self {
            Progress::Silent => {}
            Progress::Lines { verbose } => {
                if let Some(line) = line(e, *verbose) {
                    emitln(&line);
                }
            }
            Progress::Bars {
                multi,
                bars,
                verbose,
            } => {
                if let Event::Transfer {
                    host,
                    label,
                    done,
                    total,
                } = e
                    && let Some(bar) = bars.get(host)
                {
                    let moved = match total {
                        Some(t) => format!("{} / {}", mib(*done), mib(*t)),
                        None => mib(*done),
                    };
                    bar.set_message(escape(&format!("{label}: {moved}")).into_owned());
                }
                if let Event::Resource(r) = e
                    && let Some(bar) = bars.get(&r.host)
                {
                    if r.role != Role::Handler {
                        bar.inc(1);
                    }
                    bar.set_message(escape(&format!("{}: {}", r.task, r.label)).into_owned());
                }
                // Problems must stay visible after the bars are gone.
                let important = matches!(
                    e,
                    Event::RolloutStopped { .. }
                        | Event::StopRequested { .. }
                        | Event::RollbackStarted { .. }
                ) || matches!(e, Event::Resource(r) if r.status == Status::Failed);
                if (important || *verbose > 0)
                    && let Some(l) = line(e, *verbose)
                {
                    let _ = multi.println(escape(&l));
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bars { bars, .. } = self {
            for bar in bars.values() {
                bar.finish_with_message("done");
            }
        }
    }
}

/// One line per event worth a line: tasks, batches, and every resource that did something.
pub fn line(e: &Event, verbose: u8) -> Option<String> {
    match e {
        Event::TaskStarted { task, hosts } => Some(format!(
            "Task {task} ({hosts} host{})",
            if *hosts == 1 { "" } else { "s" }
        )),
        Event::BatchStarted {
            batch, of, hosts, ..
        } if *of > 1 => Some(format!("  batch {batch}/{of}: {}", hosts.join(", "))),
        // Hosts that never started are named once, by HostsNotRun.
        Event::Resource(r) if !r.host_started => None,
        Event::HostsNotRun { hosts, reason, .. } => {
            Some(format!("  not run: {} ({reason})", hosts.join(", ")))
        }
        Event::Resource(r) => {
            let tag = match r.status {
                Status::Succeeded => "[ok]  ",
                Status::Failed => "[fail]",
                Status::Skipped if verbose == 0 => return None,
                Status::Skipped => "[skip]",
                Status::NotRun => "[--]  ",
            };
            let mut line = format!("  {tag} {}: {} ({}", r.host, r.label, r.action.name());
            if r.status != Status::NotRun && r.status != Status::Skipped {
                line.push_str(&format!(", {}", exec::human_ms(r.duration_ms)));
            }
            if r.attempts > 1 {
                line.push_str(&format!(", {} attempts", r.attempts));
            }
            line.push(')');
            if let Some(err) = &r.error {
                line.push_str(&format!("\n         {err}"));
                let tail = r.output_tail.trim();
                if r.status == Status::Failed && !tail.is_empty() && !err.contains(tail) {
                    for l in tail
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        line.push_str(&format!("\n         | {l}"));
                    }
                }
            }
            Some(line)
        }
        Event::RolloutStopped { reason, .. } => Some(format!("  stopped: {reason}")),
        Event::RollbackStarted { task, hosts } => Some(format!(
            "rolling back task {task} on {} (on-failure=\"rollback\")",
            hosts.join(", ")
        )),
        Event::StopRequested {
            reason,
            kill,
            by_signal,
        } => Some(match (kill, by_signal) {
            (true, _) => format!(
                "{reason}: killing the commands running on their hosts (once more: exit at once)"
            ),
            (false, true) => format!(
                "{reason}: finishing what is running, starting nothing new (again: kill what is \
                 running and stop)"
            ),
            (false, false) => format!("{reason}: finishing what is running, starting nothing new"),
        }),
        _ => None,
    }
}

/// Bytes as MiB with one decimal, for a transfer's progress.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
