//! Webhook notifications of a command: each notifier's URL and headers resolved from the
//! environment or the secrets this command read, then sent. A webhook that cannot be resolved or
//! reached is reported as a delivery; it never changes the command's result.

use crate::config::Value;
use crate::notify::{Delivery, LookupError, ResolvedNotifier, RunEvent};
use crate::plan::PlanNotifier;
use crate::secrets::Resolved;

/// Sends `event` to every notifier that wants it.
pub async fn send(
    notifiers: &[PlanNotifier],
    event: &RunEvent,
    secrets: &Resolved,
) -> Vec<Delivery> {
    let mut resolved = Vec::new();
    let mut failed = Vec::new();
    for n in notifiers {
        let lookup = |v: &Value| match v {
            Value::Literal(s) => Ok(s.clone()),
            Value::Env(var) => std::env::var(var).map_err(|_| LookupError::EnvUnset(var.clone())),
            Value::Secret(name) => secrets
                .get(name)
                .map(str::to_string)
                .ok_or_else(|| LookupError::SecretUnavailable(name.clone())),
        };
        match ResolvedNotifier::resolve(&crate::config::Notifier::from_plan(n), lookup) {
            Ok(r) => resolved.push(r),
            Err(e) if crate::notify::wants(&n.on, event.outcome) => {
                failed.push(Delivery::not_sent(&n.name, n.template, None, e.to_string()));
            }
            Err(_) => {}
        }
    }
    let mut out = crate::notify::notify(&resolved, event).await;
    out.extend(failed);
    out
}

/// Whether any notifier wants `event`.
pub fn wanted(notifiers: &[PlanNotifier], event: &RunEvent) -> bool {
    notifiers
        .iter()
        .any(|n| crate::notify::wants(&n.on, event.outcome))
}
