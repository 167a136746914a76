//! The terminal rendering: the summary first, then each task's changes with identical changes
//! across hosts shown once, then the handlers that run where notified.
//!
//! ```text
//! Plan: 1 to create, 1 to update, 0 to delete, 0 to run; 2 unchanged on 2 hosts.
//!
//! Task setup  on web1, web2
//!   + directory /srv/app  on web1, web2
//!       does not exist
//!       mode: (none) → 0755
//!   ~ file /etc/motd  on web1
//!       content differs
//!         --- /etc/motd
//!         +++ /etc/motd
//!         ...
//!   2 unchanged
//! ```

use super::terminal::escape;
use super::{
    Counts, Entry, count, entry_hosts_phrase, field_values, hosts_phrase, task_notes, view,
};
use crate::plan::{Plan, Role, lockfile};
use crate::resources::{Action, EnvValue, Step};

/// How to render. `verbose` 1 also lists unchanged resources and the commands each change runs;
/// 2 adds each host's connection and each resource's observed-state fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextOptions {
    /// ANSI colors (the caller decides: a terminal, and no `NO_COLOR`).
    pub color: bool,
    /// Wrap host lists at this many columns (at least 40 are used).
    pub width: usize,
    pub verbose: u8,
}

impl Default for TextOptions {
    fn default() -> TextOptions {
        TextOptions {
            color: false,
            width: 100,
            verbose: 0,
        }
    }
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

struct Out<'o> {
    s: String,
    o: &'o TextOptions,
}

/// Everything taken from the plan goes through [`escape`] on its way in: [`Out::paint`],
/// [`Out::plain`] and [`Out::wrapped`] escape their text; [`Out::line`] takes text that is
/// already escaped or painted, since the colours are this renderer's own escape sequences.
impl Out<'_> {
    fn paint(&self, color: &str, text: &str) -> String {
        let text = escape(text);
        if self.o.color && !text.is_empty() {
            format!("{color}{text}{RESET}")
        } else {
            text.into_owned()
        }
    }

    fn line(&mut self, text: &str) {
        self.s.push_str(text);
        self.s.push('\n');
    }

    /// A line with no colour, escaped.
    fn plain(&mut self, text: &str) {
        self.line(&escape(text));
    }

    /// Writes `words` (escaped) after `lead` (already indented and escaped), wrapping at the
    /// width with continuation lines indented by `hang` spaces.
    fn wrapped(&mut self, lead: &str, words: &str, hang: usize) {
        let words = escape(words);
        let width = self.o.width.max(40);
        let mut line = lead.to_string();
        let mut len = lead.chars().count();
        let mut first = true;
        for w in words.split(' ') {
            let wl = w.chars().count();
            if !first && len + 1 + wl > width {
                self.line(line.trim_end());
                line = " ".repeat(hang);
                len = hang;
            } else if !first {
                line.push(' ');
                len += 1;
            }
            line.push_str(w);
            len += wl;
            first = false;
        }
        self.line(line.trim_end());
    }
}

fn action_color(a: Action) -> &'static str {
    match a {
        Action::Create => GREEN,
        Action::Update => YELLOW,
        Action::Delete => RED,
        Action::Run => CYAN,
        Action::NoOp => DIM,
    }
}

/// Renders the plan for a terminal.
pub fn plan(plan: &Plan, o: &TextOptions) -> String {
    let mut out = Out {
        s: String::new(),
        o,
    };
    let summary = super::summary_line(plan);
    let painted = out.paint(BOLD, &summary);
    out.line(&painted);
    if let Some(rb) = &plan.rollback {
        let runs: Vec<String> = rb.runs.iter().map(i64::to_string).collect();
        let noun = if runs.len() == 1 { "run" } else { "runs" };
        out.line(&format!(
            "Rollback to the state after run {} (undoes {noun} {})",
            rb.to,
            runs.join(", ")
        ));
        for i in &rb.irreversible {
            out.line(&format!(
                "  irreversible: {} on {} (run {}): {}",
                i.resource, i.host, i.run, i.reason
            ));
        }
    }
    let v = view(plan);
    for tv in &v.tasks {
        out.line("");
        let title = out.paint(BOLD, &format!("Task {}", tv.task.name));
        let hosts: Vec<&str> = tv.task.hosts.iter().map(String::as_str).collect();
        let lead = format!("{title}  ");
        out.wrapped(&lead, &hosts_phrase(&hosts), 2);
        let notes = task_notes(tv.task);
        if !notes.is_empty() {
            out.wrapped("  ", &notes.join("; "), 4);
        }
        if tv.entries.is_empty() {
            out.line("  (no resources)");
            continue;
        }
        for e in &tv.entries {
            if e.resource.action != Action::NoOp || o.verbose >= 1 {
                entry(&mut out, plan, e, 2, Some(&tv.task.hosts));
            }
        }
        let c = Counts::of(&tv.entries);
        if o.verbose == 0 && c.unchanged + c.skipped > 0 {
            let mut parts = Vec::new();
            if c.unchanged > 0 {
                parts.push(format!("{} unchanged", c.unchanged));
            }
            if c.skipped > 0 {
                parts.push(format!("{} skipped", c.skipped));
            }
            let text = out.paint(DIM, &parts.join(", "));
            out.line(&format!("  {text}"));
        }
    }
    if !v.handlers.is_empty() {
        out.line("");
        let title = out.paint(BOLD, "Handlers");
        out.line(&format!(
            "{title} (run once after their task, only where notified)"
        ));
        for hv in &v.handlers {
            let title = out.paint(BOLD, &format!("handler {}", hv.name));
            out.line(&format!("  {title}"));
            for (labels, hosts) in &hv.notified {
                let text = format!(
                    "runs {}, notified by {}",
                    hosts_phrase(hosts),
                    labels.join(", ")
                );
                out.wrapped("    ", &text, 6);
            }
            if !hv.idle.is_empty() {
                let hosts: Vec<&str> = hv.idle.to_vec();
                let text = if hv.notified.is_empty() {
                    "not notified by any planned change: does not run".to_string()
                } else {
                    format!(
                        "does not run {}: nothing notifies it there",
                        hosts_phrase(&hosts)
                    )
                };
                out.wrapped("    ", &text, 6);
            }
            for e in &hv.entries {
                entry(&mut out, plan, e, 4, None);
            }
        }
    }
    if o.verbose >= 2 && !plan.hosts.is_empty() {
        out.line("");
        let title = out.paint(BOLD, "Hosts");
        out.line(&title);
        for h in &plan.hosts {
            let c = &h.connection;
            let mut at = c.transport.as_str().to_string();
            if let Some(a) = &c.address {
                at.push(' ');
                if let Some(u) = &c.user {
                    at.push_str(&format!("{u}@"));
                }
                at.push_str(a);
                if let Some(p) = c.port {
                    at.push_str(&format!(":{p}"));
                }
            }
            let sudo = if h.probe_sudo {
                ", probes with sudo"
            } else {
                ""
            };
            out.plain(&format!(
                "  {}: {at}, becomes {}{sudo}, facts {}",
                h.name, c.become_user, h.facts_digest
            ));
        }
    }
    out.s
}

/// One entry at `indent` spaces: its head line with the hosts, then its details four spaces
/// deeper and its diff six. `task_hosts`: the hosts of the entry's task, if it has one.
fn entry(
    out: &mut Out<'_>,
    plan: &Plan,
    e: &Entry<'_>,
    indent: usize,
    task_hosts: Option<&[String]>,
) {
    let r = e.resource;
    let pad = " ".repeat(indent);
    let detail = " ".repeat(indent + 4);
    let color = action_color(r.action);
    let symbol = if r.action == Action::NoOp {
        "="
    } else {
        r.action.symbol()
    };
    let check = if r.role == Role::HealthCheck {
        " (health check)"
    } else {
        ""
    };
    let head = format!(
        "{pad}{} {}{check}",
        out.paint(color, symbol),
        out.paint(color, &r.label)
    );
    let phrase = escape(&entry_hosts_phrase(&e.hosts, task_hosts)).into_owned();
    let visible = format!("{pad}{symbol} {}{check}", escape(&r.label))
        .chars()
        .count();
    if visible + 2 + phrase.chars().count() <= out.o.width.max(40) {
        out.line(&format!("{head}  {phrase}"));
    } else {
        out.line(&head);
        out.wrapped(&detail, &phrase, indent + 6);
    }
    out.wrapped(&detail, &r.reason, indent + 4);
    for f in &r.fields {
        let (from, to) = field_values(f);
        out.plain(&format!("{detail}{}: {from} → {to}", f.field));
    }
    if r.role != Role::Handler && !r.notify.is_empty() && r.action != Action::NoOp {
        out.plain(&format!("{detail}notifies {}", r.notify.join(", ")));
    }
    if let Some(d) = &r.diff {
        for l in d.lines() {
            let painted = if l.starts_with("+++") || l.starts_with("---") {
                out.paint(BOLD, l)
            } else if l.starts_with('+') {
                out.paint(GREEN, l)
            } else if l.starts_with('-') {
                out.paint(RED, l)
            } else if l.starts_with("@@") {
                out.paint(CYAN, l)
            } else {
                escape(l).into_owned()
            };
            out.line(format!("{detail}  {painted}").trim_end());
        }
    }
    if out.o.verbose >= 1 {
        for s in &r.steps {
            step(out, plan, s, &detail);
        }
    }
    if out.o.verbose >= 2 && !r.fingerprint.is_empty() {
        out.plain(&format!("{detail}observed fingerprint {}", r.fingerprint));
    }
}

/// A step as a shell line (`$ ...`, continuation lines aligned) and a bracketed note of how it
/// runs.
fn step(out: &mut Out<'_>, plan: &Plan, s: &Step, detail: &str) {
    for (i, l) in s.script.lines().enumerate() {
        let lead = if i == 0 { "$ " } else { "  " };
        out.plain(format!("{detail}{lead}{l}").trim_end());
    }
    let mut notes = Vec::new();
    if s.sudo {
        notes.push("sudo".to_string());
    }
    if let Some(u) = &s.user {
        notes.push(format!("as {u}"));
    }
    if let Some(d) = &s.cwd {
        notes.push(format!("in {d}"));
    }
    if let Some(b) = &s.stdin {
        let short = &b[..b.len().min(12)];
        match plan.streamed.get(b) {
            Some(pinned) => notes.push(format!(
                "stdin from {} {short} ({})",
                pinned.source,
                count(pinned.size as usize, "byte", "bytes")
            )),
            None => {
                let size = lockfile::blob(plan, b)
                    .map(|c| format!(" ({})", count(c.len(), "byte", "bytes")))
                    .unwrap_or_default();
                notes.push(format!("stdin blob {short}{size}"));
            }
        }
    }
    if !s.env.is_empty() {
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Literal(x) => format!("{k}={x}"),
                EnvValue::Secret { name, .. } => format!("{k}=(secret {name})"),
            })
            .collect();
        notes.push(format!("env {}", env.join(" ")));
    }
    if let Some(c) = &s.skip_if {
        notes.push(format!("skipped if `{c}` succeeds"));
    }
    if let Some(d) = &s.download_to {
        notes.push(format!("output saved to {d}"));
    }
    if !notes.is_empty() {
        let text = out.paint(DIM, &format!("[{}]", notes.join("; ")));
        out.line(&format!("{detail}  {text}"));
    }
}
