//! `group`: a local group with an optional fixed gid, created with `groupadd`, renumbered with
//! `groupmod`, removed with `groupdel`. The probe prints `exists` and, when it does, `gid` and
//! `members` (the comma-joined member list of the group file).

use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    pub state: Presence,
    pub gid: Option<u32>,
    /// Create as a system group (only when creating).
    pub system: bool,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(
        cx,
        1,
        1,
        "group NAME [gid=1001] [system=#true] [state=\"absent\"]",
    );
    let name = r.arg_str(cx, 0).and_then(|s| account_name(cx, s, "group"));
    let state = presence(cx, r);
    let gid = r.u32(cx, "gid");
    let system = r.bool(cx, "system").unwrap_or(false);
    Some(Spec {
        name: name?,
        state,
        gid,
        system,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRes {
    pub spec: Spec,
    pub sudo: bool,
}

pub fn resolve(g: &Spec, ctx: &ResolveCtx<'_>) -> Result<GroupRes, ResourceError> {
    Ok(GroupRes {
        spec: g.clone(),
        sudo: ctx.sudo,
    })
}

impl GroupRes {
    /// The step that brings back the group `o` observed, after it was deleted: same gid, and the
    /// members that exist by then (a member deleted in the same run re-joins when it is
    /// re-created: user.rs).
    fn recreate(&self, o: &Observed) -> Result<Step, ResourceError> {
        let n = q(&self.spec.name);
        let mut script = format!("groupadd -g {} -- {n}", q(o.require("gid")?));
        let members: Vec<String> = o
            .require("members")?
            .split(',')
            .filter(|m| !m.is_empty())
            .map(q)
            .collect();
        if !members.is_empty() {
            script.push_str(&format!(
                " && for m in {}; do if getent passwd \"$m\" >/dev/null 2>&1; then usermod -a -G {n} -- \"$m\" || exit; fi; done",
                members.join(" ")
            ));
        }
        Ok(Step::new(script, self.sudo))
    }
}

/// How plans name the group, planned or skipped.
pub fn label(g: &Spec) -> String {
    format!("group {}", g.name)
}

impl Resource for GroupRes {
    fn id(&self) -> String {
        ResourceType::Group.id(&self.spec.name)
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn probe(&self) -> String {
        format!(
            "if l=$(getent group {n} 2>/dev/null) && [ -n \"$l\" ]; then\n  \
             r=${{l#*:*:}}; printf 'exists=true\\ngid=%s\\nmembers=%s\\n' \"${{r%%:*}}\" \"${{r#*:}}\"\n\
             else echo exists=false; fi",
            n = q(&self.spec.name)
        )
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let exists = o.require("exists")? == "true";
        let n = q(&self.spec.name);
        match (self.spec.state, exists) {
            (Presence::Absent, false) => Ok(Change::no_op("absent")),
            (Presence::Absent, true) => {
                let mut c = Change::new(
                    Action::Delete,
                    "exists",
                    vec![Step::new(format!("groupdel -- {n}"), self.sudo)],
                );
                c.undo = vec![self.recreate(o)?];
                Ok(c)
            }
            (Presence::Present, false) => {
                let mut args = String::new();
                let mut fields = Vec::new();
                if self.spec.system {
                    args.push_str(" -r");
                    fields.push(FieldChange::new("system", None, Some("true")));
                }
                if let Some(gid) = self.spec.gid {
                    args.push_str(&format!(" -g {gid}"));
                    fields.push(FieldChange::new("gid", None, Some(&gid.to_string())));
                }
                let mut c = Change::new(
                    Action::Create,
                    "does not exist",
                    vec![Step::new(format!("groupadd{args} -- {n}"), self.sudo)],
                );
                c.fields = fields;
                Ok(c)
            }
            (Presence::Present, true) => {
                let have = o.require("gid")?;
                match self.spec.gid {
                    Some(gid) if gid.to_string() != have => {
                        let mut c = Change::new(
                            Action::Update,
                            "gid differs",
                            vec![Step::new(format!("groupmod -g {gid} -- {n}"), self.sudo)],
                        );
                        c.fields =
                            vec![FieldChange::new("gid", Some(have), Some(&gid.to_string()))];
                        c.undo = vec![Step::new(
                            format!("groupmod -g {} -- {n}", q(have)),
                            self.sudo,
                        )];
                        Ok(c)
                    }
                    _ => Ok(Change::no_op("up to date")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(state: Presence, gid: Option<u32>, system: bool) -> GroupRes {
        GroupRes {
            spec: Spec {
                name: "app-data".into(),
                state,
                gid,
                system,
            },
            sudo: true,
        }
    }

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    #[test]
    fn create() {
        let c = group(Presence::Present, Some(2001), true)
            .plan(&obs("exists=false"))
            .unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.steps,
            vec![Step::new("groupadd -r -g 2001 -- app-data", true)]
        );
        assert_eq!(
            c.fields,
            vec![
                FieldChange::new("system", None, Some("true")),
                FieldChange::new("gid", None, Some("2001"))
            ]
        );
        let c = group(Presence::Present, None, false)
            .plan(&obs("exists=false"))
            .unwrap();
        assert_eq!(c.steps[0].script, "groupadd -- app-data");
    }

    #[test]
    fn changes_to_an_existing_group_carry_their_undo() {
        let g = group(Presence::Present, Some(2001), false);
        let c = g.plan(&obs("exists=true\ngid=1003\nmembers=a,b")).unwrap();
        assert_eq!(
            c.undo,
            vec![Step::new("groupmod -g 1003 -- app-data", true)]
        );
        let gone = group(Presence::Absent, None, false);
        let c = gone
            .plan(&obs("exists=true\ngid=1003\nmembers=a,b"))
            .unwrap();
        assert_eq!(
            c.undo[0].script,
            "groupadd -g 1003 -- app-data && for m in a b; do if getent passwd \"$m\" >/dev/null 2>&1; \
             then usermod -a -G app-data -- \"$m\" || exit; fi; done"
        );
        let c = gone.plan(&obs("exists=true\ngid=1003\nmembers=")).unwrap();
        assert_eq!(c.undo[0].script, "groupadd -g 1003 -- app-data");
        let c = group(Presence::Present, None, false)
            .plan(&obs("exists=false"))
            .unwrap();
        assert!(c.undo.is_empty());
    }

    #[test]
    fn gid_change_and_no_op() {
        let g = group(Presence::Present, Some(2001), false);
        let c = g.plan(&obs("exists=true\ngid=1003")).unwrap();
        assert_eq!(
            (c.action, c.steps[0].script.as_str()),
            (Action::Update, "groupmod -g 2001 -- app-data")
        );
        assert_eq!(
            c.fields,
            vec![FieldChange::new("gid", Some("1003"), Some("2001"))]
        );
        assert_eq!(
            g.plan(&obs("exists=true\ngid=2001")).unwrap(),
            Change::no_op("up to date")
        );
        // Without a gid, any existing group will do; `system` only matters when creating.
        let any = group(Presence::Present, None, true);
        assert_eq!(
            any.plan(&obs("exists=true\ngid=1003")).unwrap().action,
            Action::NoOp
        );
    }

    #[test]
    fn absent() {
        let g = group(Presence::Absent, None, false);
        let c = g.plan(&obs("exists=true\ngid=1003\nmembers=")).unwrap();
        assert_eq!(
            (c.action, c.steps[0].script.as_str()),
            (Action::Delete, "groupdel -- app-data")
        );
        assert_eq!(
            g.plan(&obs("exists=false")).unwrap(),
            Change::no_op("absent")
        );
        assert!(matches!(g.plan(&obs("")), Err(ResourceError::Probe(_))));
    }

    #[test]
    fn probe_parses_group_lines() {
        let g = group(Presence::Present, None, false);
        assert_eq!(g.id(), "group:app-data");
        assert_eq!(g.label(), "group app-data");
        // The probe against the machine's own group database: root always exists.
        let mut root = g.clone();
        root.spec.name = "root".into();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("( {} )", root.probe()))
            .output()
            .unwrap();
        assert_eq!(
            Observed::parse(&String::from_utf8_lossy(&out.stdout)).unwrap(),
            obs("exists=true\ngid=0\nmembers=")
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("( {} )", g.probe()))
            .output()
            .unwrap();
        assert_eq!(
            Observed::parse(&String::from_utf8_lossy(&out.stdout)).unwrap(),
            obs("exists=false")
        );
    }
}
