//! The pull-request comment rendering: a heading and the summary, a table of action counts per
//! host, then one collapsible `<details>` block per task with its changes (diffs in ```` ```diff ````
//! fences). GitHub refuses comments over 65,536 characters, so the output is kept under
//! [`LIMIT`]: when it would be longer, changes are dropped from the end and a note says how many
//! are missing and how to see the whole plan.

use std::fmt::Write as _;

use super::{
    Counts, Entry, count, entry_hosts_phrase, field_values, hosts_phrase, task_notes, view,
};
use crate::plan::Action;
use crate::plan::{Plan, Role, lockfile};

/// Characters (not bytes: GitHub counts characters) a rendering stays within, leaving room
/// below GitHub's limit for a wrapper a CI job may add.
pub const LIMIT: usize = 65_000;

/// One diff shows at most this many characters, so that a single large file cannot push every
/// other change out of the comment.
const DIFF_LIMIT: usize = 20_000;

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownOptions {
    /// The plan file named in the truncation note (`nexus show FILE`).
    pub plan_file: String,
    /// Maximum length in characters.
    pub limit: usize,
}

impl Default for MarkdownOptions {
    fn default() -> MarkdownOptions {
        MarkdownOptions {
            plan_file: "plan.lock".into(),
            limit: LIMIT,
        }
    }
}

/// Renders the plan as a pull-request comment of at most [`LIMIT`] characters.
pub fn plan(plan: &Plan) -> String {
    plan_with(plan, &MarkdownOptions::default())
}

/// Escapes text for Markdown outside code: characters that would format, link or open HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for an HTML context (the `<summary>` line, where Markdown is not processed).
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An inline code span holding `text` verbatim, whatever backticks it contains.
pub fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let longest = longest_run(&text, '`');
    let ticks = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') || text.is_empty() {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in text.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A fenced diff, cut at a line boundary when longer than [`DIFF_LIMIT`].
fn diff_block(diff: &str) -> String {
    let fence = "`".repeat(longest_run(diff, '`').max(2) + 1);
    let mut body = String::new();
    let mut shown = 0usize;
    let lines: Vec<&str> = diff.lines().collect();
    for l in &lines {
        if chars(&body) + chars(l) + 1 > DIFF_LIMIT {
            break;
        }
        body.push_str(l);
        body.push('\n');
        shown += 1;
    }
    let mut out = format!("{fence}diff\n{body}{fence}\n");
    if shown < lines.len() {
        let _ = writeln!(
            out,
            "\n_diff cut: {} more lines not shown_",
            lines.len() - shown
        );
    }
    out
}

fn symbol(a: Action) -> &'static str {
    if a == Action::NoOp { "=" } else { a.symbol() }
}

/// One change: a bold line with the action, the resource and its hosts, then fields and diff.
/// `task_hosts`: the hosts of the entry's task, if it has one.
fn entry(e: &Entry<'_>, task_hosts: Option<&[String]>) -> String {
    let r = e.resource;
    let mut s = String::new();
    let check = if r.role == Role::HealthCheck {
        " (health check)"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "**{}** {}{check} {} — {}\n",
        code(&format!("{} {}", symbol(r.action), r.action.name())),
        code(&r.label),
        escape(&entry_hosts_phrase(&e.hosts, task_hosts)),
        escape(&r.reason)
    );
    let mut bullets = Vec::new();
    for f in &r.fields {
        let (from, to) = field_values(f);
        bullets.push(format!(
            "- {}: {} → {}",
            escape(&f.field),
            code(&from),
            code(&to)
        ));
    }
    if r.role != Role::Handler && !r.notify.is_empty() {
        let n: Vec<String> = r.notify.iter().map(|h| code(h)).collect();
        bullets.push(format!("- notifies {}", n.join(", ")));
    }
    if !bullets.is_empty() {
        s.push_str(&bullets.join("\n"));
        s.push_str("\n\n");
    }
    if let Some(d) = &r.diff {
        s.push_str(&diff_block(d));
        s.push('\n');
    }
    s
}

/// A `<details>` block: its opening, one item per change, its closing.
struct Block {
    open: String,
    items: Vec<String>,
    close: String,
}

impl Block {
    fn len(&self) -> usize {
        chars(&self.open) + self.items.iter().map(|i| chars(i)).sum::<usize>() + chars(&self.close)
    }
}

/// Rows of the summary table: hosts with identical counts share a row, so a fleet of a thousand
/// identical hosts stays one line.
fn host_table(plan: &Plan) -> String {
    let mut rows: Vec<([usize; 5], Vec<&str>)> = Vec::new();
    for h in &plan.hosts {
        let mut c = [0usize; 5];
        for r in h.resources.iter().filter(|r| r.role != Role::Handler) {
            let i = match r.action {
                Action::Create => 0,
                Action::Update => 1,
                Action::Delete => 2,
                Action::Run => 3,
                Action::NoOp => 4,
            };
            c[i] += 1;
        }
        match rows.iter_mut().find(|(k, _)| *k == c) {
            Some((_, hosts)) => hosts.push(&h.name),
            None => rows.push((c, vec![&h.name])),
        }
    }
    let mut s = String::from(
        "| Hosts | Create | Update | Delete | Run | Unchanged |\n|:--|--:|--:|--:|--:|--:|\n",
    );
    for (c, hosts) in &rows {
        const SHOWN: usize = 8;
        let mut names: Vec<String> = hosts.iter().take(SHOWN).map(|h| escape(h)).collect();
        if hosts.len() > SHOWN {
            names.push(format!("and {} more", hosts.len() - SHOWN));
        }
        let who = if hosts.len() > 1 {
            format!(
                "{} ({})",
                names.join(", "),
                count(hosts.len(), "host", "hosts")
            )
        } else {
            names.join(", ")
        };
        let _ = writeln!(
            s,
            "| {who} | {} | {} | {} | {} | {} |",
            c[0], c[1], c[2], c[3], c[4]
        );
    }
    if rows.len() > 1 {
        let t = plan.summary;
        let _ = writeln!(
            s,
            "| **Total** ({}) | {} | {} | {} | {} | {} |",
            count(plan.hosts.len(), "host", "hosts"),
            t.create,
            t.update,
            t.delete,
            t.run,
            t.no_op
        );
    }
    s
}

/// `on a, b, c`, or `on 12 hosts` without the list (for lines that must stay short).
fn short_hosts(hosts: &[&str]) -> String {
    if hosts.len() > 3 {
        format!("on {} hosts", hosts.len())
    } else {
        hosts_phrase(hosts)
    }
}

/// Renders with explicit options.
pub fn plan_with(plan: &Plan, o: &MarkdownOptions) -> String {
    let mut head = String::from("### nexus plan\n\n");
    let _ = writeln!(head, "**{}**\n", escape(&super::summary_line(plan)));
    let hash = lockfile::hash(plan);
    let _ = writeln!(
        head,
        "Config {} · plan {} · nexus {}\n",
        code(&plan.config),
        code(&hash[..12]),
        escape(&plan.nexus_version)
    );
    if !plan.hosts.is_empty() {
        head.push_str(&host_table(plan));
        head.push('\n');
    }

    let v = view(plan);
    let mut blocks = Vec::new();
    let mut quiet: Vec<String> = Vec::new();
    for tv in &v.tasks {
        let c = Counts::of(&tv.entries);
        let mut rest = Vec::new();
        if c.unchanged > 0 {
            rest.push(format!("{} unchanged", c.unchanged));
        }
        if c.skipped > 0 {
            rest.push(format!("{} skipped", c.skipped));
        }
        let hosts: Vec<&str> = tv.task.hosts.iter().map(String::as_str).collect();
        if c.acting() == 0 {
            let rest = if rest.is_empty() {
                "no resources".to_string()
            } else {
                rest.join(", ")
            };
            quiet.push(format!(
                "- {} {} — {rest}",
                code(&tv.task.name),
                escape(&short_hosts(&hosts))
            ));
            continue;
        }
        // The summary line stays short; a long host list goes inside the block.
        let on = short_hosts(&hosts);
        let mut open = format!(
            "<details><summary><b>{}</b> {} — {}</summary>\n\n",
            html(&tv.task.name),
            html(&on),
            html(&c.phrase())
        );
        if hosts.len() > 3 {
            let _ = writeln!(open, "Hosts: {}\n", escape(&hosts.join(", ")));
        }
        let notes = task_notes(tv.task);
        if !notes.is_empty() {
            let _ = writeln!(open, "_{}_\n", escape(&notes.join("; ")));
        }
        let items: Vec<String> = tv
            .entries
            .iter()
            .filter(|e| e.resource.action != Action::NoOp)
            .map(|e| entry(e, Some(&tv.task.hosts)))
            .collect();
        let close = if rest.is_empty() {
            "</details>\n\n".to_string()
        } else {
            format!("_{}_\n\n</details>\n\n", rest.join(", "))
        };
        blocks.push(Block { open, items, close });
    }
    // Handlers that run somewhere get a block; the others are listed with the quiet tasks.
    let mut idle_handlers = Vec::new();
    for hv in &v.handlers {
        if hv.notified.is_empty() {
            idle_handlers.push(format!(
                "- handler {}: not notified by any planned change; does not run",
                code(hv.name)
            ));
            continue;
        }
        let mut open = format!(
            "<details><summary>handler <b>{}</b> — runs once after its task, only where notified</summary>\n\n",
            html(hv.name)
        );
        for (labels, hosts) in &hv.notified {
            let by: Vec<String> = labels.iter().map(|l| code(l)).collect();
            let _ = writeln!(
                open,
                "- runs {}, notified by {}",
                escape(&hosts_phrase(hosts)),
                by.join(", ")
            );
        }
        if !hv.idle.is_empty() {
            let _ = writeln!(
                open,
                "- does not run {}: nothing notifies it there",
                escape(&hosts_phrase(&hv.idle))
            );
        }
        open.push('\n');
        let items = hv.entries.iter().map(|e| entry(e, None)).collect();
        blocks.push(Block {
            open,
            items,
            close: "</details>\n\n".into(),
        });
    }
    let mut tail = String::new();
    if !quiet.is_empty() || !idle_handlers.is_empty() {
        tail.push_str("Without changes:\n\n");
        for line in quiet.iter().chain(&idle_handlers) {
            tail.push_str(line);
            tail.push('\n');
        }
    }

    let note = |n: usize| {
        format!(
            "\n> **Note:** … {} not shown; run `nexus show {}` to see the whole plan.\n",
            if n == 1 {
                "1 more change".to_string()
            } else {
                format!("{n} more changes")
            },
            o.plan_file.replace('`', "")
        )
    };
    let fixed = chars(&head) + chars(&tail);
    let mut total = fixed + blocks.iter().map(Block::len).sum::<usize>();
    let mut dropped = 0usize;
    // Drop changes from the end until the rest and the note fit.
    while total > o.limit || (dropped > 0 && total + chars(&note(dropped)) > o.limit) {
        let Some(last) = blocks.last_mut() else { break };
        match last.items.pop() {
            Some(item) => {
                total -= chars(&item);
                dropped += 1;
                if last.items.is_empty() {
                    total -= chars(&last.open) + chars(&last.close);
                    blocks.pop();
                }
            }
            None => {
                total -= last.len();
                blocks.pop();
            }
        }
    }
    let mut out = head;
    for b in &blocks {
        out.push_str(&b.open);
        for i in &b.items {
            out.push_str(i);
        }
        out.push_str(&b.close);
    }
    out.push_str(&tail);
    if dropped > 0 {
        out.push_str(&note(dropped));
    }
    // Only a plan whose header alone is too long (thousands of distinct hosts) gets here.
    if chars(&out) > o.limit {
        let keep = o.limit.saturating_sub(200);
        out = out.chars().take(keep).collect();
        let _ = write!(
            out,
            "\n\n> **Note:** the plan is too large for a comment; run `nexus show {}`.\n",
            o.plan_file.replace('`', "")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_hold_any_text() {
        assert_eq!(code("file /etc/motd"), "`file /etc/motd`");
        assert_eq!(code("a `b` c"), "``a `b` c``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(code(""), "`  `");
    }

    #[test]
    fn escaping_neutralizes_markup() {
        assert_eq!(
            escape("<script>*x*_y_|[a](b)"),
            "&lt;script&gt;\\*x\\*\\_y\\_\\|\\[a\\](b)"
        );
        assert_eq!(escape("two\nlines"), "two lines");
        assert_eq!(html("a <b> & c"), "a &lt;b&gt; &amp; c");
    }

    #[test]
    fn fences_outgrow_backticks_in_diffs_and_long_diffs_are_cut() {
        let d = "--- a\n+++ a\n@@ -1 +1 @@\n-```\n+````\n";
        let block = diff_block(d);
        assert!(
            block.starts_with("`````diff\n") && block.ends_with("`````\n"),
            "{block}"
        );
        let long: String = (0..5000).map(|i| format!("+line {i}\n")).collect();
        let block = diff_block(&long);
        assert!(chars(&block) < DIFF_LIMIT + 200);
        assert!(
            block.contains("more lines not shown"),
            "{}",
            &block[block.len() - 100..]
        );
    }
}
