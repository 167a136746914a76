//! The inputs of a plan, read once before planning: every local file the configuration's
//! resources name and every environment value that shapes desired state.

use crate::config::{Loaded, Value};
use crate::inputs::{InputError, Inputs};
use crate::syntax::files::{Copied, read_copied, read_regular};

fn env_names<'a>(values: impl Iterator<Item = &'a Value>, out: &mut Vec<String>) {
    for v in values {
        if let Value::Env(n) = v {
            out.push(n.clone());
        }
    }
}

/// Reads every local file the configuration's resources name and every environment value
/// that shapes desired state. Sudo passwords and webhook URLs are deliberately not pinned:
/// they are credentials, read when used.
pub fn collect(
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Inputs, InputError> {
    let cfg = &loaded.config;
    let mut inputs =
        Inputs::from_parts(cfg.base_dir.clone(), Default::default(), Default::default());
    for f in loaded.sources.files() {
        let rel = inputs.relative(&f.path);
        inputs.add_config_file(rel, blake3::hash(f.text.as_bytes()).to_hex().to_string());
    }
    let mut names: Vec<String> = Vec::new();
    env_names(cfg.vars.values(), &mut names);
    for h in &cfg.hosts {
        env_names(h.vars.values(), &mut names);
    }
    for r in cfg.all_resources() {
        let needs = r.kind.input_needs();
        env_names(needs.values.into_iter(), &mut names);
        for (p, limit) in needs.files {
            let path = inputs.relative(p);
            inputs.add_file(p, || {
                let read = match limit {
                    Some(limit) => read_regular(p, Some(limit)).map(Copied::Whole),
                    None => read_copied(p, crate::plan::STREAM_OVER),
                };
                read.map_err(|e| InputError::Read {
                    path,
                    reason: e.to_string(),
                })
            })?;
        }
    }
    for (k, v) in &cfg.env_used {
        inputs.set_env(k.clone(), v.clone());
    }
    for n in names {
        let v = env(&n);
        inputs.set_env(n, v);
    }
    Ok(inputs)
}
