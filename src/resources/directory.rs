//! `directory`: a directory with owner, group and mode, optionally applied to its contents; or
//! its absence.

use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub path: String,
    pub state: Presence,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    /// Owner and group also apply to everything inside (mode applies to the directory only, so
    /// files do not become executable).
    pub recursive: bool,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(
        cx,
        1,
        1,
        "directory PATH [owner=..] [group=..] [mode=\"0755\"] [recursive=#true] [state=\"absent\"]",
    );
    let path = remote_arg(cx, r, 0);
    let state = presence(cx, r);
    let (owner, group, mode) = ownership(cx, r);
    let recursive = r.bool(cx, "recursive").unwrap_or(false);
    if let Some(p) = &path
        && p.trim_end_matches('/').is_empty()
        && state == Presence::Absent
    {
        cx.push(
            Diag::new("config::dangerous-path", "refusing to remove \"/\"")
                .at(r.name_span(), "state=\"absent\" on the root directory"),
        );
        return None;
    }
    Some(Spec {
        path: path?,
        state,
        owner,
        group,
        mode,
        recursive,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub spec: Spec,
    pub sudo: bool,
}

pub fn resolve(d: &Spec, ctx: &ResolveCtx<'_>) -> Result<Directory, ResourceError> {
    Ok(Directory {
        spec: d.clone(),
        sudo: ctx.sudo,
    })
}

impl Directory {
    /// The step and fields that create the directory with its final mode, then its owner.
    fn create(&self) -> Change {
        let make = crate::plan::make_dir::MakeDir {
            path: self.spec.path.clone(),
            mode: self.spec.mode.map(|m| m.to_string()),
            owner: self.spec.owner.clone(),
            group: self.spec.group.clone(),
        };
        let mut step = Step::new(make.script(), self.sudo);
        step.mkdir = Some(make);
        let nothing = Observed::default();
        let (mut fields, _) = ownership_changes(
            &self.spec.path,
            &nothing,
            self.spec.owner.as_deref(),
            self.spec.group.as_deref(),
            None,
            self.sudo,
        );
        if let Some(m) = self.spec.mode {
            fields.push(FieldChange::new("mode", None, Some(&m.to_string())));
        }
        let mut c = Change::new(Action::Create, "does not exist", vec![step]);
        c.fields = fields;
        c
    }

    /// The symbolic link `o` saw removed (only the link: what it points to stays), then, when
    /// the directory is wanted, a directory in its place. The plan says which link it was.
    fn replace_link(&self, o: &Observed) -> Change {
        let label = link_label(o);
        let p = q(&self.spec.path);
        // Something that replaced the link since planning is not what the plan showed: leave it.
        let rm = Step::new(
            format!(
                "if [ -e {p} ] && [ ! -L {p} ]; then {{ printf '%s\\n' {} >&2; exit 1; }}; fi; rm -f -- {p}",
                q(&format!(
                    "nexus: {} is no longer a symbolic link since planning; nothing was removed (plan again)",
                    self.spec.path
                ))
            ),
            self.sudo,
        );
        if self.spec.state == Presence::Absent {
            return Change::new(Action::Delete, format!("exists ({label})"), vec![rm]);
        }
        let mut c = self.create();
        c.action = Action::Update;
        c.reason = format!("replace {label}");
        c.steps.insert(0, rm);
        c.fields
            .insert(0, FieldChange::new("type", Some(&label), Some("directory")));
        c.replaces_link = true;
        c
    }
    /// `find` condition matching entries whose owner or group differ from the desired ones.
    fn mismatch_condition(&self) -> Option<String> {
        let mut conds = Vec::new();
        for (flag, want) in [("user", &self.spec.owner), ("group", &self.spec.group)] {
            if let Some(w) = want {
                // Numeric ids and names both work with find's -user/-group.
                conds.push(format!("! -{flag} {}", q(w)));
            }
        }
        (!conds.is_empty()).then(|| conds.join(" -o "))
    }
}

/// How plans name the directory, planned or skipped.
pub fn label(d: &Spec) -> String {
    format!("directory {}", d.path)
}

impl Resource for Directory {
    fn id(&self) -> String {
        ResourceType::Directory.id(&self.spec.path)
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn path(&self) -> Option<&str> {
        Some(&self.spec.path)
    }

    fn probe(&self) -> String {
        // The batch gathers the path facts and the link's target; without it, the snippet.
        let mut s = match self.probe_batch() {
            Some(_) => Vec::new(),
            None => vec![stat_probe(&self.spec.path), link_probe(&self.spec.path)],
        };
        if self.spec.recursive
            && self.spec.state == Presence::Present
            && let Some(cond) = self.mismatch_condition()
        {
            s.push(format!(
                    "if [ -d {p} ]; then if [ -n \"$(find {p} -mindepth 1 \\( {cond} \\) -print 2>/dev/null | head -n 1)\" ]; then echo contents_match=false; else echo contents_match=true; fi; fi",
                    p = q(&self.spec.path)
                ));
        }
        s.join("\n")
    }

    fn probe_batch(&self) -> Option<ProbeBatch> {
        ProbeBatch::for_path(&self.spec.path, false).map(|b| ProbeBatch {
            link: true,
            ..b.wanting(self.spec.owner.as_deref(), self.spec.group.as_deref())
        })
    }

    fn probe_inline(&self) -> bool {
        self.probe_batch().is_some()
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let p = q(&self.spec.path);
        let exists = o.require("exists")? == "true";
        let kind = o.get("type").unwrap_or("");
        if exists && kind == "link" {
            return Ok(self.replace_link(o));
        }
        if exists && kind != "directory" {
            return Err(ResourceError::Unsupported(format!(
                "{} exists and is a {kind}, not a directory; remove it first or pick another path",
                self.spec.path
            )));
        }
        match (self.spec.state, exists) {
            (Presence::Absent, false) => Ok(Change::no_op("absent")),
            (Presence::Absent, true) => Ok(Change::new(
                Action::Delete,
                "exists",
                vec![Step::new(format!("rm -rf -- {p}"), self.sudo)],
            )),
            (Presence::Present, false) => Ok(self.create()),
            (Presence::Present, true) => {
                let (mut fields, mut steps) = ownership_changes(
                    &self.spec.path,
                    o,
                    self.spec.owner.as_deref(),
                    self.spec.group.as_deref(),
                    self.spec.mode,
                    self.sudo,
                );
                if self.spec.recursive && o.get("contents_match") == Some("false") {
                    fields.push(FieldChange::new(
                        "contents owner",
                        Some("differs"),
                        Some("matches"),
                    ));
                    let who = match (&self.spec.owner, &self.spec.group) {
                        (Some(u), Some(g)) => format!("chown -R -- {} {p}", q(&format!("{u}:{g}"))),
                        (Some(u), None) => format!("chown -R -- {} {p}", q(u)),
                        (None, Some(g)) => format!("chgrp -R -- {} {p}", q(g)),
                        (None, None) => {
                            unreachable!("contents are only probed with an owner or group")
                        }
                    };
                    // The recursive change covers the directory's own owner too.
                    steps.retain(|s| {
                        !s.script.starts_with("chown") && !s.script.starts_with("chgrp")
                    });
                    steps.insert(0, Step::new(who, self.sudo));
                }
                if steps.is_empty() {
                    return Ok(Change::no_op("up to date"));
                }
                let mut c = Change::new(Action::Update, "attributes differ", steps);
                c.fields = fields;
                Ok(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(state: Presence) -> Directory {
        Directory {
            spec: Spec {
                path: "/srv/my app".into(),
                state,
                owner: Some("deploy".into()),
                group: None,
                mode: Some(Mode(0o755)),
                recursive: false,
            },
            sudo: true,
        }
    }

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    #[test]
    fn a_symlink_is_replaced_by_a_directory_or_removed() {
        let o = obs("exists=true\ntype=link\nlink_target=2f6f70742f782f0a");
        let c = dir(Presence::Present).plan(&o).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "replace symlink -> /opt/x/");
        let scripts: Vec<&str> = c.steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "if [ -e '/srv/my app' ] && [ ! -L '/srv/my app' ]; then { printf '%s\\n' 'nexus: /srv/my app is no longer a symbolic link since planning; nothing was removed (plan again)' >&2; exit 1; }; fi; rm -f -- '/srv/my app'",
                "set -e\nmkdir -p -m 0755 -- '/srv/my app'\nchown -- deploy '/srv/my app'",
            ]
        );
        assert_eq!(
            c.fields[0],
            FieldChange::new("type", Some("symlink -> /opt/x/"), Some("directory"))
        );
        let c = dir(Presence::Absent).plan(&o).unwrap();
        assert_eq!(
            (c.action, c.reason.as_str(), c.steps[0].script.as_str()),
            (
                Action::Delete,
                "exists (symlink -> /opt/x/)",
                "if [ -e '/srv/my app' ] && [ ! -L '/srv/my app' ]; then { printf '%s\\n' 'nexus: /srv/my app is no longer a symbolic link since planning; nothing was removed (plan again)' >&2; exit 1; }; fi; rm -f -- '/srv/my app'"
            )
        );
        // Other non-directories are still refused.
        assert!(
            dir(Presence::Present)
                .plan(&obs("exists=true\ntype=file"))
                .is_err()
        );
    }

    #[test]
    fn creates_with_attributes() {
        let c = dir(Presence::Present).plan(&obs("exists=false")).unwrap();
        assert_eq!(c.action, Action::Create);
        let scripts: Vec<&str> = c.steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            ["set -e\nmkdir -p -m 0755 -- '/srv/my app'\nchown -- deploy '/srv/my app'"]
        );
        assert!(c.steps.iter().all(|s| s.sudo));
        assert!(c.steps[0].mkdir.is_some());
        assert_eq!(
            c.fields,
            vec![
                FieldChange::new("owner", None, Some("deploy")),
                FieldChange::new("mode", None, Some("0755")),
            ]
        );
        let mut plain = dir(Presence::Present);
        plain.spec.mode = None;
        let c = plain.plan(&obs("exists=false")).unwrap();
        assert_eq!(
            c.steps[0].script,
            "set -e\nmkdir -p -- '/srv/my app'\nchown -- deploy '/srv/my app'"
        );
    }

    #[test]
    fn no_op_and_update() {
        let up = "exists=true\ntype=directory\nowner=deploy\nowner_id=1000\ngroup=deploy\ngroup_id=1000\nmode=0755";
        assert_eq!(
            dir(Presence::Present).plan(&obs(up)).unwrap().action,
            Action::NoOp
        );
        let c = dir(Presence::Present)
            .plan(&obs(&up.replace("0755", "0700")))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.fields,
            vec![FieldChange::new("mode", Some("0700"), Some("0755"))]
        );
    }

    #[test]
    fn absent_and_wrong_type() {
        assert_eq!(
            dir(Presence::Absent)
                .plan(&obs("exists=false"))
                .unwrap()
                .action,
            Action::NoOp
        );
        let c = dir(Presence::Absent)
            .plan(&obs("exists=true\ntype=directory"))
            .unwrap();
        assert_eq!(c.steps[0].script, "rm -rf -- '/srv/my app'");
        assert!(
            dir(Presence::Present)
                .plan(&obs("exists=true\ntype=file"))
                .is_err()
        );
    }

    #[test]
    fn recursive_ownership() {
        let mut d = dir(Presence::Present);
        d.spec.recursive = true;
        assert!(
            d.probe()
                .contains("find '/srv/my app' -mindepth 1 \\( ! -user deploy \\)")
        );
        let o = obs("exists=true\ntype=directory\nowner=deploy\nmode=0755\ncontents_match=false");
        let c = d.plan(&o).unwrap();
        assert_eq!(c.steps[0].script, "chown -R -- deploy '/srv/my app'");
    }
}
