//! `download`: copies a file from the host to this machine. It runs on every apply: one step
//! prints the remote file and the executor writes its stdout to the local path.

use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub source: String,
    /// Local destination; `{host}` is replaced by the host name so hosts do not overwrite each other.
    /// Relative paths are relative to the config's directory and resolved by the executor.
    pub dest: String,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(
        cx,
        2,
        2,
        "download REMOTE_PATH LOCAL_PATH (\"{host}\" in LOCAL_PATH is the host name)",
    );
    let source = remote_arg(cx, r, 0);
    let dest = r.arg_str(cx, 1);
    Some(Spec {
        source: source?,
        dest: dest?.value,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The configured download with `{host}` in `dest` already replaced by this host's name.
    pub spec: Spec,
    pub sudo: bool,
}

pub fn resolve(d: &Spec, ctx: &ResolveCtx<'_>) -> Result<Download, ResourceError> {
    let mut spec = d.clone();
    spec.dest = d.dest.replace("{host}", ctx.host);
    Ok(Download {
        spec,
        sudo: ctx.sudo,
    })
}

/// How plans name the download, planned or skipped.
pub fn label(d: &Spec) -> String {
    format!("download {} → {}", d.source, d.dest)
}

impl Resource for Download {
    fn id(&self) -> String {
        ResourceType::Download.id(&self.spec.dest)
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    /// Nothing to compare: the remote file may be produced by an earlier step of the same apply.
    fn probe(&self) -> String {
        String::new()
    }

    fn plan(&self, _observed: &Observed) -> Result<Change, ResourceError> {
        let step = Step::download(&self.spec.source, &self.spec.dest, self.sudo);
        Ok(Change::new(
            Action::Run,
            format!("copies to {}", self.spec.dest),
            vec![step],
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn one_cat_step_into_the_host_specific_path() {
        let facts = crate::facts::Facts::parse("format=1\nkernel_name=Linux\n").unwrap();
        let inputs = crate::inputs::Inputs::from_parts(
            PathBuf::from("/cfg"),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let vars = BTreeMap::new();
        let ctx = ResolveCtx {
            host: "web1",
            facts: &facts,
            sudo: false,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let cfg = Spec {
            source: "/var/log/my app's.log".into(),
            dest: "logs/{host}/app-{host}.log".into(),
        };
        let d = resolve(&cfg, &ctx).unwrap();
        assert_eq!(d.spec.dest, "logs/web1/app-web1.log");
        assert_eq!(d.id(), "download:logs/web1/app-web1.log");
        assert_eq!(
            d.label(),
            "download /var/log/my app's.log → logs/web1/app-web1.log"
        );
        assert_eq!(d.probe(), "");
        let c = d.plan(&Observed::default()).unwrap();
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.reason, "copies to logs/web1/app-web1.log");
        let mut want = Step::new(r#"cat -- "/var/log/my app's.log""#, false);
        want.download_to = Some("logs/web1/app-web1.log".into());
        want.download_from = Some("/var/log/my app's.log".into());
        assert_eq!(c.steps, vec![want]);
    }
}
