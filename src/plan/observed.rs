//! What a probe found on a host: the `key=value` lines a resource's snippet prints, parsed. The
//! planner compares them with desired state; apply re-probes and compares their fingerprint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the probe found, as sorted key/value pairs. Probe snippets print `key=value` lines;
/// values are single-line (binary or multi-line data is base64-encoded by the snippet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed(pub BTreeMap<String, String>);

/// A probe printed a line that is not `key=value`: the snippet misbehaved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected probe output line {0:?}")]
pub struct UnexpectedLine(pub String);

impl Observed {
    /// Parses probe output. Lines without `=` are an error: they mean the snippet misbehaved.
    pub fn parse(text: &str) -> Result<Observed, UnexpectedLine> {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(UnexpectedLine(line.to_string()));
            };
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Observed(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A digest of the observed state, recorded in the plan and compared at apply to detect drift.
    /// Keys starting with `_` are diagnostic (e.g. old file content for diffs) and excluded.
    pub fn fingerprint(&self) -> String {
        // One call over the gathered lines (the same hash): per call, blake3 costs more than
        // these few short keys and values, and every resource of every host is fingerprinted.
        let mut h = Vec::with_capacity(256);
        for (k, v) in &self.0 {
            if k.starts_with('_') {
                continue;
            }
            h.extend_from_slice(k.as_bytes());
            h.push(b'=');
            h.extend_from_slice(v.as_bytes());
            h.push(b'\n');
        }
        blake3::hash(&h).to_hex()[..32].to_string()
    }
}
