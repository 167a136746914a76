//! `upload`: copies a local file to the host with owner, group and mode. Like the issue asks, an
//! upload plans as a run on every apply (use `file source=...` for a compared, idempotent copy);
//! its content is pinned in the plan by blake3 and written atomically, as `file` writes.

use super::file::write_step;
use super::*;
use crate::config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The local path as plans show it (relative to the config's directory).
    pub source: String,
    pub dest: String,
    pub content: Vec<u8>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    pub sudo: bool,
}

pub fn resolve(u: &config::Upload, ctx: &ResolveCtx<'_>) -> Result<Upload, ResourceError> {
    let content = super::file::local_file(ctx, &u.source, "upload")?.to_vec();
    Ok(Upload {
        source: ctx.inputs.relative(&u.source),
        dest: u.dest.clone(),
        content,
        owner: u.owner.clone(),
        group: u.group.clone(),
        mode: u.mode,
        sudo: ctx.sudo,
    })
}

impl Resource for Upload {
    fn id(&self) -> String {
        format!("upload:{}", self.dest)
    }

    fn label(&self) -> String {
        format!("upload {} → {}", self.source, self.dest)
    }

    /// Nothing to compare: an upload always runs.
    fn probe(&self) -> String {
        String::new()
    }

    fn plan(&self, _observed: &Observed) -> Result<Change, ResourceError> {
        let step = write_step(
            &self.dest,
            super::file::WriteContent::Bytes(&self.content),
            self.owner.as_deref(),
            self.group.as_deref(),
            self.mode,
            None,
            self.sudo,
        );
        let mut c = Change::new(
            Action::Run,
            format!("uploads {} bytes", self.content.len()),
            vec![step],
        );
        c.blobs.push(self.content.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::inputs::Inputs;

    #[test]
    fn always_runs_with_an_atomic_write() {
        let facts = crate::facts::Facts::parse("format=1\nkernel_name=Linux\n").unwrap();
        let inputs = Inputs::from_parts(
            PathBuf::from("/cfg"),
            BTreeMap::from([(
                PathBuf::from("/cfg/dist/app.tar.gz"),
                b"\x1f\x8bdata".to_vec(),
            )]),
            BTreeMap::new(),
        );
        let vars = BTreeMap::new();
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: true,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let cfg = config::Upload {
            source: PathBuf::from("/cfg/dist/app.tar.gz"),
            dest: "/opt/app.tar.gz".into(),
            owner: Some("deploy".into()),
            group: None,
            mode: Some(Mode(0o600)),
        };
        let u = resolve(&cfg, &ctx).unwrap();
        assert_eq!(u.id(), "upload:/opt/app.tar.gz");
        assert_eq!(u.label(), "upload dist/app.tar.gz → /opt/app.tar.gz");
        assert_eq!(u.probe(), "");
        let c = u.plan(&Observed::default()).unwrap();
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.reason, "uploads 6 bytes");
        assert_eq!(c.blobs, vec![b"\x1f\x8bdata".to_vec()]);
        assert_eq!(c.steps.len(), 1);
        let s = &c.steps[0];
        assert!(s.sudo);
        assert_eq!(
            s.stdin.as_deref(),
            Some(blake3::hash(b"\x1f\x8bdata").to_hex().as_str())
        );
        assert_eq!(
            s.script,
            "set -e\n\
             [ -d /opt ] || { printf '%s\\n' 'nexus: directory /opt does not exist (add a directory resource for it)' >&2; exit 1; }\n\
             if [ -d /opt/app.tar.gz ]; then { printf '%s\\n' 'nexus: /opt/app.tar.gz is a directory' >&2; exit 1; }; fi\n\
             tmp=$(mktemp /opt/.nexus-XXXXXXXX)\n\
             trap 'rm -f \"$tmp\"' EXIT\n\
             cat > \"$tmp\"\n\
             sum=$(sha256sum < \"$tmp\") || sum=\n\
             [ \"${sum%% *}\" = d42c623275bd23a983f68ccc47e1ffa46155e3621998ac2f5f5edacabbb8f486 ] || { printf '%s\\n' 'nexus: the content written to /opt/app.tar.gz does not match the plan' >&2; exit 1; }\n\
             chmod 0600 \"$tmp\"\n\
             if [ -e /opt/app.tar.gz ]; then chown \"$(stat -c %u:%g /opt/app.tar.gz)\" \"$tmp\" 2>/dev/null || :; fi\n\
             chown -- deploy \"$tmp\"\n\
             mv -f -- \"$tmp\" /opt/app.tar.gz\n\
             trap - EXIT"
        );

        let missing = config::Upload {
            source: PathBuf::from("/cfg/nope"),
            ..cfg
        };
        let e = resolve(&missing, &ctx).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
