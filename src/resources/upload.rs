//! `upload`: copies a local file to the host with owner, group and mode. It is a `file` whose
//! content comes from a local file: the host's copy is compared by sha256, nothing is sent when
//! it matches, and a hand edit is drift. Its content is pinned in the plan by blake3 and written
//! atomically, as `file` writes it.

use super::file::File;
use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// Local path, relative to the config file that names it.
    pub source: PathBuf,
    pub dest: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
}

pub fn parse(cx: &mut Cx, fc: &FileCtx<'_>, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(
        cx,
        2,
        2,
        "upload LOCAL_PATH REMOTE_PATH [owner=..] [group=..] [mode=\"0644\"]",
    );
    let source = r.arg_str(cx, 0);
    let dest = remote_arg(cx, r, 1);
    let (owner, group, mode) = ownership(cx, r);
    let source = source?;
    // Directories would need a recursive copy with its own semantics; uploads are single files.
    let path = local_file(cx, fc, &source, "upload source");
    Some(Spec {
        source: path,
        dest: dest?,
        owner,
        group,
        mode,
    })
}

impl Spec {
    /// The local file an upload sends: see [`InputNeeds`].
    pub fn input_needs<'a>(&'a self, needs: &mut InputNeeds<'a>) {
        needs.files.push((&self.source, None));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The local path as plans show it (relative to the config's directory).
    pub source: String,
    /// The destination as a `file` with the local content: probe, compare and write are its.
    pub file: File,
}

pub fn resolve(u: &Spec, ctx: &ResolveCtx<'_>) -> Result<Upload, ResourceError> {
    // Taken byte for byte, as `file source=` is: never a template of secrets.
    let as_file = super::file::Spec {
        path: u.dest.clone(),
        state: Presence::Present,
        content: Some(super::file::FileContent::Source {
            path: u.source.clone(),
        }),
        owner: u.owner.clone(),
        group: u.group.clone(),
        mode: u.mode,
        backup: false,
        vars: Default::default(),
    };
    Ok(Upload {
        source: ctx.inputs.relative(&u.source),
        file: super::file::resolve(&as_file, ctx)?,
    })
}

/// How plans name the upload of the local `source` (relative to the config's directory).
pub fn label(source: &str, dest: &str) -> String {
    format!("upload {source} → {dest}")
}

impl Resource for Upload {
    fn id(&self) -> String {
        ResourceType::Upload.id(&self.file.spec.path)
    }

    fn path(&self) -> Option<&str> {
        Some(&self.file.spec.path)
    }

    fn label(&self) -> String {
        label(&self.source, &self.file.spec.path)
    }

    fn probe(&self) -> String {
        self.file.probe()
    }

    fn probe_batch(&self) -> Option<ProbeBatch> {
        self.file.probe_batch()
    }

    fn probe_inline(&self) -> bool {
        self.file.probe_inline()
    }

    fn plan(&self, observed: &Observed) -> Result<Change, ResourceError> {
        self.file.plan(observed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::inputs::Inputs;

    #[test]
    fn compares_like_a_file_and_writes_atomically() {
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
        let cfg = Spec {
            source: PathBuf::from("/cfg/dist/app.tar.gz"),
            dest: "/opt/app.tar.gz".into(),
            owner: Some("deploy".into()),
            group: None,
            mode: Some(Mode(0o600)),
        };
        let u = resolve(&cfg, &ctx).unwrap();
        assert_eq!(u.id(), "upload:/opt/app.tar.gz");
        assert_eq!(u.label(), "upload dist/app.tar.gz → /opt/app.tar.gz");
        assert_eq!(u.probe_batch(), u.file.probe_batch());
        let c = u.plan(&Observed::parse("exists=false\n").unwrap()).unwrap();
        assert_eq!(c.action, Action::Create);
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
             if [ ! -d /opt ]; then { printf '%s\\n' 'nexus: directory /opt does not exist (add a directory resource for it)' >&2; exit 1; }; fi\n\
             if [ -d /opt/app.tar.gz ]; then { printf '%s\\n' 'nexus: /opt/app.tar.gz is a directory' >&2; exit 1; }; fi\n\
             if [ -L /opt/app.tar.gz ]; then { printf '%s\\n' 'nexus: /opt/app.tar.gz became a symbolic link since planning; nothing was replaced (plan again)' >&2; exit 1; }; fi\n\
             for _nx_o in /opt/.nexus-*; do [ -f \"$_nx_o\" ] || continue; _nx_p=${_nx_o##*/.nexus-}; _nx_p=${_nx_p%%-*}\n\
             case $_nx_p in '' | *[!0-9]*) find \"$_nx_o\" -mmin +60 -delete 2>/dev/null || : ;; *) [ -d \"/proc/$_nx_p\" ] || rm -f -- \"$_nx_o\" 2>/dev/null || : ;; esac; done\n\
             tmp=$(mktemp /opt/.nexus-$$-XXXXXXXX)\n\
             trap 'rm -f \"$tmp\"' EXIT\n\
             trap 'exit 143' TERM\n\
             cat > \"$tmp\"\n\
             sum=$(sha256sum < \"$tmp\") || sum=\n\
             [ \"${sum%% *}\" = d42c623275bd23a983f68ccc47e1ffa46155e3621998ac2f5f5edacabbb8f486 ] || { printf '%s\\n' 'nexus: the content written to /opt/app.tar.gz does not match the plan' >&2; exit 1; }\n\
             if [ -e /opt/app.tar.gz ]; then chown \"$(stat -c %u:%g /opt/app.tar.gz)\" \"$tmp\" 2>/dev/null || :; fi\n\
             chown -- deploy \"$tmp\"\n\
             chmod 0600 \"$tmp\"\n\
             mv -f -- \"$tmp\" /opt/app.tar.gz\n\
             trap - EXIT"
        );

        let missing = Spec {
            source: PathBuf::from("/cfg/nope"),
            ..cfg
        };
        let e = resolve(&missing, &ctx).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
