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
    // Each file once, in the order the configuration names them. A file some resource reads as
    // text (a template) is held whole within the text limit, even if another copies it.
    let mut files: Vec<(&std::path::Path, Option<u64>)> = Vec::new();
    let mut seen: std::collections::BTreeMap<&std::path::Path, usize> = Default::default();
    for r in cfg.all_resources() {
        let needs = r.kind.input_needs();
        env_names(needs.values.into_iter(), &mut names);
        for (p, limit) in needs.files {
            match seen.get(p) {
                Some(&i) => {
                    let kept = &mut files[i].1;
                    *kept = match (*kept, limit) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => {
                    seen.insert(p, files.len());
                    files.push((p, limit));
                }
            }
        }
    }
    for (p, limit) in files {
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
    for (k, v) in &cfg.env_used {
        inputs.set_env(k.clone(), v.clone());
    }
    for n in names {
        let v = env(&n);
        inputs.set_env(n, v);
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(config: &str, big: &std::path::Path) -> Inputs {
        let dir = big.parent().unwrap();
        std::fs::write(dir.join("nexus.kdl"), config).unwrap();
        let loaded = crate::config::load(&dir.join("nexus.kdl")).unwrap();
        collect(&loaded, &|_| None).unwrap()
    }

    #[test]
    fn a_large_copied_file_is_pinned_unless_something_reads_it_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.txt");
        std::fs::write(&big, "x".repeat(2 << 20)).unwrap();
        let copied = collected(
            "task \"t\" on=\"local\" {\n    upload \"big.txt\" \"/tmp/nexus-a\"\n}\n",
            &big,
        );
        assert!(copied.file(&big).is_none());
        assert_eq!(copied.large_file(&big).map(|d| d.size), Some(2 << 20));
        // Named as a template too, after the upload: held whole, for both.
        let both = collected(
            "task \"t\" on=\"local\" {\n    upload \"big.txt\" \"/tmp/nexus-a\"\n    \
             file \"/tmp/nexus-b\" template=\"big.txt\"\n}\n",
            &big,
        );
        assert_eq!(both.file(&big).map(<[u8]>::len), Some(2 << 20));
        assert!(both.large_file(&big).is_none());
    }
}
