//! What a configuration reads besides itself: the secrets and URLs its resources and hosts name,
//! found through each type's
//! [`ResourceKind::input_needs`](crate::resources::ResourceKind::input_needs).

use std::collections::BTreeSet;

use super::{Config, Resource, Value};

impl Config {
    /// Every resource: of tasks, their health checks, and handlers.
    pub fn all_resources(&self) -> impl Iterator<Item = &Resource> {
        self.tasks
            .iter()
            .flat_map(|t| t.resources.iter().chain(&t.health_check))
            .chain(self.handlers.iter().flat_map(|h| h.resources.iter()))
    }

    /// Every vault secret the configuration refers to where nexus can use it: command env values,
    /// sudo passwords, file contents and template vars.
    pub fn secret_names(&self) -> BTreeSet<String> {
        let mut out = self.content_secret_names();
        let mut add = |v: &Value| {
            if let Value::Secret(n) = v {
                out.insert(n.clone());
            }
        };
        for r in self.all_resources() {
            r.kind.input_needs().values.into_iter().for_each(&mut add);
        }
        for h in &self.hosts {
            if let Some(v) = &h.sudo_password {
                add(v);
            }
        }
        if let Some(v) = &self.defaults.sudo_password {
            add(v);
        }
        out
    }

    /// The secrets that file contents may hold: inline `content=(secret)"..."`, file `vars` and
    /// the global and host `vars` templates see. The planner reads these values to compare
    /// contents.
    pub fn content_secret_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut add = |v: &Value| {
            if let Value::Secret(n) = v {
                out.insert(n.clone());
            }
        };
        for r in self.all_resources() {
            r.kind
                .input_needs()
                .content_values
                .into_iter()
                .for_each(&mut add);
        }
        self.vars.values().for_each(&mut add);
        self.hosts
            .iter()
            .flat_map(|h| h.vars.values())
            .for_each(&mut add);
        out
    }

    /// Every `source-url` the configuration's resources use, with the configured blake3, in order.
    pub fn source_urls(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for r in self.all_resources() {
            for (url, blake3) in r.kind.input_needs().urls {
                if !out.iter().any(|(u, _)| u == url) {
                    out.push((url.to_string(), blake3.map(str::to_string)));
                }
            }
        }
        out
    }
}
