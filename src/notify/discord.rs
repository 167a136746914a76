//! Discord execute-webhook payload: `{"content": ..., "allowed_mentions": ..., "embeds": [...]}`.
//!
//! One embed with the title, the summary as description, the outcome's colour, fields (config,
//! duration, changes, failed hosts, then one inline field per task) and a footer naming the run.
//! Discord rejects a message that breaks a limit, so every limit is enforced here: content 2,000
//! characters, embed title 256, description 4,096, at most 25 fields with names of 256 and
//! values of 1,024, footer 2,048, and 6,000 characters over the whole embed.
//! `allowed_mentions` is empty so a task name or message containing `@everyone` pings nobody.

use serde_json::{Value, json};

use super::slack::footer;
use super::{RunEvent, colour, name_list, truncate};
use crate::exec::human_ms;

pub const CONTENT_MAX: usize = 2000;
pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4096;
pub const FIELDS_MAX: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;
pub const EMBED_TOTAL_MAX: usize = 6000;
/// Room kept for the "More tasks" field: its name and a value such as `12345 more not shown ...`.
const MORE_RESERVE: usize = 64;

struct Field {
    name: String,
    value: String,
    inline: bool,
}

fn field(name: &str, value: &str, inline: bool) -> Field {
    // Discord rejects empty names and values.
    let nonempty = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    Field {
        name: truncate(&nonempty(name), FIELD_NAME_MAX),
        value: truncate(&nonempty(value), FIELD_VALUE_MAX),
        inline,
    }
}

pub fn payload(ev: &RunEvent) -> Value {
    let title = truncate(&ev.title, TITLE_MAX);
    let footer_text = truncate(&footer(ev), FOOTER_MAX);

    let mut fields = vec![field("Config", &ev.config, true)];
    if let Some(ms) = ev.duration_ms {
        fields.push(field("Duration", &human_ms(ms), true));
    }
    fields.push(field("Changes", &ev.changes.describe(), false));
    if !ev.hosts_failed.is_empty() {
        fields.push(field(
            "Failed hosts",
            &name_list(&ev.hosts_failed, usize::MAX),
            false,
        ));
    }
    let fixed_len = title.chars().count() + footer_text.chars().count() + chars(&fields);

    // The 6,000-character total. The summary is the message, so it comes first (less the room
    // for a "more tasks" field); task fields then fill what is left of the characters and of the
    // 25 slots, and a last field counts the tasks left out (they are all in the run's history).
    let reserve = if ev.tasks.is_empty() { 0 } else { MORE_RESERVE };
    let description = truncate(
        &ev.summary,
        DESCRIPTION_MAX.min(EMBED_TOTAL_MAX.saturating_sub(fixed_len + reserve)),
    );
    let mut room = EMBED_TOTAL_MAX.saturating_sub(fixed_len + description.chars().count());
    let slots = FIELDS_MAX - fields.len();
    let mut shown = 0;
    for (i, t) in ev.tasks.iter().enumerate() {
        let f = field(&t.name, t.status.name(), true);
        let cost = chars(std::slice::from_ref(&f));
        let later = ev.tasks.len() - i - 1;
        let keep = if later > 0 { MORE_RESERVE } else { 0 };
        if (later > 0 && shown + 1 >= slots) || cost + keep > room {
            break;
        }
        room -= cost;
        fields.push(f);
        shown += 1;
    }
    if shown < ev.tasks.len() {
        fields.push(field(
            "More tasks",
            &format!(
                "{} more not shown (see nexus history)",
                ev.tasks.len() - shown
            ),
            false,
        ));
    }

    let fields: Vec<Value> = fields
        .into_iter()
        .map(|f| json!({ "name": f.name, "value": f.value, "inline": f.inline }))
        .collect();
    json!({
        "content": truncate(&format!("{}: {}", ev.title, ev.config), CONTENT_MAX),
        "allowed_mentions": { "parse": [] },
        "embeds": [{
            "title": title,
            "description": description,
            "color": colour(ev.outcome),
            "fields": fields,
            "footer": { "text": footer_text },
        }],
    })
}

/// Characters of names and values, as Discord counts them toward the embed total.
fn chars(fields: &[Field]) -> usize {
    fields
        .iter()
        .map(|f| f.name.chars().count() + f.value.chars().count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::test_support::failure_event;
    use crate::notify::{TaskLine, TaskState};

    #[test]
    fn exact_payload_for_a_failed_apply() {
        let got = payload(&failure_event());
        let want = json!({
            "content": "nexus apply failed: deploy/nexus.kdl",
            "allowed_mentions": { "parse": [] },
            "embeds": [{
                "title": "nexus apply failed",
                "description": "1 of 2 tasks succeeded; 1 create, 1 update, 0 delete, 0 run; 12.3s; failed hosts: web2",
                "color": 0xE01E5A,
                "fields": [
                    { "name": "Config", "value": "deploy/nexus.kdl", "inline": true },
                    { "name": "Duration", "value": "12.3s", "inline": true },
                    { "name": "Changes", "value": "1 create, 1 update, 0 delete, 0 run", "inline": false },
                    { "name": "Failed hosts", "value": "web2", "inline": false },
                    { "name": "build", "value": "succeeded", "inline": true },
                    { "name": "deploy", "value": "failed", "inline": true }
                ],
                "footer": { "text": format!("nexus {} · run 42 · plan 0123456789ab", env!("CARGO_PKG_VERSION")) }
            }]
        });
        assert_eq!(got, want);
    }

    fn chars(v: &Value) -> usize {
        v.as_str().unwrap().chars().count()
    }

    fn embed_total(e: &Value) -> usize {
        let fields: usize = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| chars(&f["name"]) + chars(&f["value"]))
            .sum();
        chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]) + fields
    }

    #[test]
    fn limits_are_enforced() {
        let mut ev = failure_event();
        ev.title = "t".repeat(300);
        ev.config = "c".repeat(3000);
        ev.summary = "s".repeat(5000);
        ev.hosts_failed = (0..400).map(|i| format!("host-{i}")).collect();
        ev.tasks = (0..40)
            .map(|i| TaskLine {
                name: format!("{i}-{}", "n".repeat(300)),
                status: TaskState::Failed,
            })
            .collect();
        let got = payload(&ev);
        assert!(chars(&got["content"]) <= CONTENT_MAX);
        let e = &got["embeds"][0];
        assert!(chars(&e["title"]) <= TITLE_MAX);
        assert!(chars(&e["description"]) <= DESCRIPTION_MAX);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= FIELDS_MAX, "{}", fields.len());
        for f in fields {
            assert!(chars(&f["name"]) <= FIELD_NAME_MAX);
            assert!(chars(&f["value"]) <= FIELD_VALUE_MAX);
            assert!(chars(&f["value"]) > 0);
        }
        assert!(embed_total(e) <= EMBED_TOTAL_MAX, "{}", embed_total(e));
        assert_eq!(fields.last().unwrap()["name"], "More tasks");
    }

    #[test]
    fn many_short_tasks_fill_25_fields() {
        let mut ev = failure_event();
        ev.tasks = (0..40)
            .map(|i| TaskLine {
                name: format!("task{i}"),
                status: TaskState::Succeeded,
            })
            .collect();
        let got = payload(&ev);
        let fields = got["embeds"][0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), FIELDS_MAX);
        // 4 fixed fields, 20 tasks, then the count of the 20 left out.
        assert_eq!(fields[4]["name"], "task0");
        assert_eq!(fields[23]["name"], "task19");
        assert_eq!(fields[24]["value"], "20 more not shown (see nexus history)");
        assert!(embed_total(&got["embeds"][0]) <= EMBED_TOTAL_MAX);
    }

    #[test]
    fn long_summary_is_cut_to_the_description_limit() {
        let mut ev = failure_event();
        ev.summary = "x".repeat(5000);
        let got = payload(&ev);
        let d = got["embeds"][0]["description"].as_str().unwrap();
        assert_eq!(d.chars().count(), DESCRIPTION_MAX);
        assert!(d.ends_with('…'));
    }
}
