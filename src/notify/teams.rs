//! Microsoft Teams payload: an Adaptive Card message for a Teams **Workflows** webhook (the
//! "Send webhook alerts to a channel" / "When a Teams webhook request is received" flows).
//!
//! `{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
//! "contentUrl": null, "content": {AdaptiveCard 1.4}}]}`. The legacy Office 365 connector
//! MessageCard format is not used: Microsoft retired those connectors, and Workflows expects
//! this attachment form. The card: a coloured title, the summary, a FactSet of run facts, and a
//! FactSet of tasks (capped, so the message stays far below Teams' 28 KB limit).

use serde_json::{Value, json};

use super::slack::footer;
use super::{Outcome, RunEvent, name_list, truncate};
use crate::exec::human_ms;

/// Tasks listed before `… N more`.
const TASKS_SHOWN: usize = 50;
/// Failed hosts named before `+N more`.
const HOSTS_SHOWN: usize = 20;
/// Longest text value; Teams has no per-field limit, but the 28 KB message limit applies.
const TEXT_MAX: usize = 2000;

pub fn payload(ev: &RunEvent) -> Value {
    let mut facts = vec![fact("Config", &ev.config)];
    if let Some(ms) = ev.duration_ms {
        facts.push(fact("Duration", &human_ms(ms)));
    }
    facts.push(fact("Changes", &ev.changes.describe()));
    if !ev.hosts_failed.is_empty() {
        facts.push(fact(
            "Failed hosts",
            &name_list(&ev.hosts_failed, HOSTS_SHOWN),
        ));
    }

    let mut body = vec![
        json!({
            "type": "TextBlock",
            "text": truncate(&ev.title, TEXT_MAX),
            "size": "Large",
            "weight": "Bolder",
            "color": colour(ev.outcome),
            "wrap": true,
        }),
        json!({ "type": "TextBlock", "text": truncate(&ev.summary, TEXT_MAX), "wrap": true }),
        json!({ "type": "FactSet", "facts": facts }),
    ];
    if !ev.tasks.is_empty() {
        let mut tasks: Vec<Value> = ev
            .tasks
            .iter()
            .take(TASKS_SHOWN)
            .map(|t| fact(&t.name, t.status.name()))
            .collect();
        if ev.tasks.len() > TASKS_SHOWN {
            tasks.push(fact(
                "…",
                &format!("{} more tasks", ev.tasks.len() - TASKS_SHOWN),
            ));
        }
        body.push(json!({
            "type": "TextBlock",
            "text": "Tasks",
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true,
        }));
        body.push(json!({ "type": "FactSet", "facts": tasks }));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": footer(ev),
        "size": "Small",
        "isSubtle": true,
        "wrap": true,
    }));

    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": { "width": "Full" },
                "body": body,
            },
        }],
    })
}

fn fact(title: &str, value: &str) -> Value {
    json!({ "title": truncate(title, TEXT_MAX), "value": truncate(value, TEXT_MAX) })
}

/// Adaptive Cards name colours by meaning rather than by value.
fn colour(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "Good",
        Outcome::Failure => "Attention",
        Outcome::Drift => "Warning",
    }
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
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": { "width": "Full" },
                    "body": [
                        { "type": "TextBlock", "text": "nexus apply failed", "size": "Large", "weight": "Bolder", "color": "Attention", "wrap": true },
                        { "type": "TextBlock", "text": "1 of 2 tasks succeeded; 1 create, 1 update, 0 delete, 0 run; 12.3s; failed hosts: web2", "wrap": true },
                        { "type": "FactSet", "facts": [
                            { "title": "Config", "value": "deploy/nexus.kdl" },
                            { "title": "Duration", "value": "12.3s" },
                            { "title": "Changes", "value": "1 create, 1 update, 0 delete, 0 run" },
                            { "title": "Failed hosts", "value": "web2" }
                        ] },
                        { "type": "TextBlock", "text": "Tasks", "weight": "Bolder", "spacing": "Medium", "wrap": true },
                        { "type": "FactSet", "facts": [
                            { "title": "build", "value": "succeeded" },
                            { "title": "deploy", "value": "failed" }
                        ] },
                        { "type": "TextBlock", "text": format!("nexus {} · run 42 · plan 0123456789ab", env!("CARGO_PKG_VERSION")), "size": "Small", "isSubtle": true, "wrap": true }
                    ]
                }
            }]
        });
        assert_eq!(got, want);
    }

    #[test]
    fn task_list_is_capped() {
        let mut ev = failure_event();
        ev.tasks = (0..80)
            .map(|i| TaskLine {
                name: format!("t{i}"),
                status: TaskState::Succeeded,
            })
            .collect();
        let got = payload(&ev);
        let facts = got["attachments"][0]["content"]["body"][4]["facts"]
            .as_array()
            .unwrap();
        assert_eq!(facts.len(), TASKS_SHOWN + 1);
        assert_eq!(facts[TASKS_SHOWN]["value"], "30 more tasks");
        assert!(got.to_string().len() < 28 * 1024);
    }
}
