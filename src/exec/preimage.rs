//! Capturing pre-images during apply's re-probe: the resources a plan is about to change get
//! their current state recorded (docs/rollback.md). The contents of files to be replaced travel
//! back in the same script as the re-probe, in a section of their own after it, so capturing
//! costs no round trip. Packages and commands carry their undo steps in the plan instead.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::plan::Action;
use crate::plan::PlannedResource;
use crate::plan::ResourceType;
use crate::shell::quote as q;

/// The largest content kept; a larger file's change is recorded as irreversible.
pub const CONTENT_LIMIT: u64 = 64 * 1024 * 1024;

/// Whether applying `r` changes something a pre-image should be recorded for.
/// Handlers and checks are not undone: a rollback notifies handlers as any change does.
pub fn wanted(r: &PlannedResource) -> bool {
    !r.id.is_empty()
        && r.role == crate::plan::Role::Task
        && r.action != Action::NoOp
        && !r.kind.is_check()
}

/// The path of a file whose content the capture sends back.
fn content_path(r: &PlannedResource) -> Option<&str> {
    (wanted(r))
        .then(|| ResourceType::File.subject_of(&r.id))
        .flatten()
}

/// The section appended to a host's probe script: `INDEX=BASE64` of each wanted file that is a
/// regular, readable file no larger than [`CONTENT_LIMIT`], INDEX counting the host's resources.
pub fn script(resources: &[&PlannedResource], token: &str) -> String {
    let mut s = format!("printf '\\n@@{token} pre begin\\n'\n");
    for (i, r) in resources.iter().enumerate() {
        let Some(path) = content_path(r) else {
            continue;
        };
        let p = q(path);
        s.push_str(&format!(
            "if [ -f {p} ] && [ ! -L {p} ] && [ -r {p} ] && [ \"$(wc -c < {p})\" -le {CONTENT_LIMIT} ]; \
             then printf '%s=' {i}; base64 < {p} | tr -d '\\n'; echo; fi\n"
        ));
    }
    s.push_str(&format!("printf '\\n@@{token} pre end\\n'\n"));
    s
}

/// A marker no probe output can contain by accident: it depends on this process and moment.
pub fn token(script: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(script.as_bytes());
    h.update(&crate::state::now_ms().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    format!("NEXUSPRE{}", &h.finalize().to_hex()[..16])
}

/// Splits the probe's own output from the contents section (the last thing the script prints;
/// its lines are base64, so nothing inside it can look like its end).
pub fn split_off<'a>(output: &'a str, token: &str) -> (&'a str, BTreeMap<usize, Vec<u8>>) {
    let begin = format!("\n@@{token} pre begin\n");
    let Some(at) = output.rfind(&begin) else {
        return (output, BTreeMap::new());
    };
    let (probe, rest) = output.split_at(at);
    let mut contents = BTreeMap::new();
    for line in rest[begin.len()..].lines() {
        if line.starts_with("@@") {
            break;
        }
        if let Some((i, b64)) = line.split_once('=')
            && let Ok(i) = i.parse::<usize>()
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            contents.insert(i, bytes);
        }
    }
    (probe, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_come_back_from_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's here");
        std::fs::write(&path, b"v1\n\0binary").unwrap();
        let r = PlannedResource {
            key: "t#1".into(),
            task: "t".into(),
            role: crate::plan::Role::Task,
            id: format!("file:{}", path.display()),
            kind: ResourceType::File,
            label: "file".into(),
            action: Action::Update,
            reason: String::new(),
            fields: vec![],
            diff: None,
            steps: vec![],
            probe: String::new(),
            probe_batch: None,
            probe_inline: false,
            probe_exists: Vec::new(),
            fingerprint: String::new(),
            notify: vec![],
            undo: vec![],
            retry: Default::default(),
        };
        let mut missing = r.clone();
        missing.id = "file:/nonexistent/x".into();
        let resources = [&missing, &r];
        let token = token("x");
        let script = format!("echo '@@{token} pre begin'; {}", script(&resources, &token));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (before, contents) = split_off(&text, &token);
        assert!(before.contains("pre begin"));
        assert_eq!(contents.len(), 1);
        assert_eq!(contents[&1], b"v1\n\0binary");
    }
}
