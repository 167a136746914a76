//! Slack incoming-webhook payload: `{"text": ..., "blocks": [...]}` (Block Kit).
//!
//! `text` is the fallback Slack shows in push notifications and where blocks cannot render;
//! the blocks are a header, the summary, a section of fields, the task list and a context line.
//! Block Kit limits respected: header text 150 characters, section text 3,000, at most 10
//! fields of 2,000 each, at most 10 context elements.

use serde_json::{Value, json};

use super::{RunEvent, name_list, truncate};
use crate::exec::human_ms;

const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
/// Failed hosts named in the field before `+N more`.
const HOSTS_SHOWN: usize = 20;

pub fn payload(ev: &RunEvent) -> Value {
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": { "type": "plain_text", "text": truncate(&ev.title, HEADER_MAX) }
        }),
        json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&escape(&ev.summary), SECTION_MAX) }
        }),
    ];

    let mut fields = vec![field("Config", &ev.config)];
    if let Some(ms) = ev.duration_ms {
        fields.push(field("Duration", &human_ms(ms)));
    }
    fields.push(field("Changes", &ev.changes.describe()));
    if !ev.hosts_failed.is_empty() {
        fields.push(field(
            "Failed hosts",
            &name_list(&ev.hosts_failed, HOSTS_SHOWN),
        ));
    }
    blocks.push(json!({ "type": "section", "fields": fields }));

    if !ev.tasks.is_empty() {
        let lines: Vec<String> = ev
            .tasks
            .iter()
            .map(|t| format!("• {}: {}", escape(&t.name), t.status.name()))
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": bounded_lines("*Tasks*", &lines, SECTION_MAX) }
        }));
    }

    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": escape(&footer(ev)) }]
    }));

    json!({
        "text": truncate(&escape(&ev.headline()), SECTION_MAX),
        "blocks": blocks,
    })
}

/// `nexus 0.1.0 · run 42 · plan 1a2b3c4d5e6f`: what `nexus history` needs to find the run.
pub(crate) fn footer(ev: &RunEvent) -> String {
    let mut parts = vec![format!("nexus {}", env!("CARGO_PKG_VERSION"))];
    if let Some(id) = ev.run_id {
        parts.push(format!("run {id}"));
    }
    if let Some(h) = &ev.plan_hash {
        parts.push(format!("plan {}", short_hash(h)));
    }
    parts.join(" · ")
}

/// The first 12 characters of a plan hash: enough to recognise it, short enough for a footer.
pub(crate) fn short_hash(h: &str) -> String {
    h.chars().take(12).collect()
}

fn field(name: &str, value: &str) -> Value {
    json!({
        "type": "mrkdwn",
        "text": truncate(&format!("*{name}*\n{}", escape(value)), FIELD_MAX)
    })
}

/// A heading and as many lines as fit in `max` characters, then `… and N more`.
fn bounded_lines(heading: &str, lines: &[String], max: usize) -> String {
    let mut out = heading.to_string();
    // Room kept for the `… and N more` line.
    let budget = max.saturating_sub(40);
    for (i, l) in lines.iter().enumerate() {
        if out.chars().count() + 1 + l.chars().count() > budget {
            out.push_str(&format!("\n… and {} more", lines.len() - i));
            return out;
        }
        out.push('\n');
        out.push_str(l);
    }
    out
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters (links, mentions such as
/// `<!channel>`); escaping them keeps task names and messages literal.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_support::{failure_event, success_event};

    #[test]
    fn exact_payload_for_a_failed_apply() {
        let got = payload(&failure_event());
        let want = json!({
            "text": "nexus apply failed: deploy/nexus.kdl: 1 of 2 tasks succeeded; 1 create, 1 update, 0 delete, 0 run; 12.3s; failed hosts: web2",
            "blocks": [
                { "type": "header", "text": { "type": "plain_text", "text": "nexus apply failed" } },
                { "type": "section", "text": { "type": "mrkdwn", "text": "1 of 2 tasks succeeded; 1 create, 1 update, 0 delete, 0 run; 12.3s; failed hosts: web2" } },
                { "type": "section", "fields": [
                    { "type": "mrkdwn", "text": "*Config*\ndeploy/nexus.kdl" },
                    { "type": "mrkdwn", "text": "*Duration*\n12.3s" },
                    { "type": "mrkdwn", "text": "*Changes*\n1 create, 1 update, 0 delete, 0 run" },
                    { "type": "mrkdwn", "text": "*Failed hosts*\nweb2" }
                ] },
                { "type": "section", "text": { "type": "mrkdwn", "text": "*Tasks*\n• build: succeeded\n• deploy: failed" } },
                { "type": "context", "elements": [
                    { "type": "mrkdwn", "text": format!("nexus {} · run 42 · plan 0123456789ab", env!("CARGO_PKG_VERSION")) }
                ] }
            ]
        });
        assert_eq!(got, want);
    }

    #[test]
    fn success_has_no_failed_hosts_field() {
        let got = payload(&success_event());
        let fields = got["blocks"][2]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 3);
        assert!(!got.to_string().contains("Failed hosts"));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut ev = success_event();
        ev.summary = "<!channel> & <http://x|y>".into();
        let got = payload(&ev);
        assert_eq!(
            got["blocks"][1]["text"]["text"],
            "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"
        );
    }

    #[test]
    fn long_task_lists_stay_within_a_section() {
        let mut ev = success_event();
        ev.tasks = (0..500)
            .map(|i| crate::notify::TaskLine {
                name: format!("task-number-{i}"),
                status: crate::notify::TaskState::Succeeded,
            })
            .collect();
        let got = payload(&ev);
        let text = got["blocks"][3]["text"]["text"].as_str().unwrap();
        assert!(text.chars().count() <= SECTION_MAX, "{}", text.len());
        assert!(text.ends_with(" more"), "{text}");
    }
}
