//! `user`: a local account (uid, primary group, supplementary groups, home, shell, comment,
//! system account), created with `useradd`, changed with `usermod`, removed with `userdel`
//! (the home directory is kept).
//!
//! The probe prints `exists` and, for an existing account, `uid`, `gid`, `group` (the primary
//! group's name), `home`, `shell`, `comment` (GECOS) and `groups`: the supplementary groups,
//! sorted and comma-joined, without the primary group.

use std::collections::BTreeSet;

use super::*;

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    pub state: Presence,
    pub uid: Option<u32>,
    /// Primary group, by name or number.
    pub group: Option<String>,
    /// Supplementary groups; empty means they are not managed.
    pub groups: Vec<String>,
    /// Keep existing supplementary groups that are not listed (`append=#true`, `usermod -a`)
    /// instead of setting the exact set.
    pub append: bool,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    /// Create as a system account (only when creating).
    pub system: bool,
    /// Create the home directory (only when creating).
    pub create_home: bool,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    r.expect_args(cx, 1, 1, "user NAME [uid=1001] [group=\"staff\"] [home=\"/home/NAME\"] [shell=\"/bin/bash\"] { groups \"a\" \"b\" }");
    let name = r.arg_str(cx, 0).and_then(|s| account_name(cx, s, "user"));
    let state = presence(cx, r);
    let uid = r.u32(cx, "uid");
    let group = r.str(cx, "group").and_then(|s| owner_name(cx, s, "group"));
    let groups = r
        .str_list(cx, "groups")
        .into_iter()
        .filter_map(|s| account_name(cx, s, "group"))
        .collect();
    let append = r.bool(cx, "append").unwrap_or(false);
    let home = remote_option(cx, r, "home");
    let shell = remote_option(cx, r, "shell");
    let comment = r.str(cx, "comment");
    if let Some(c) = &comment
        && c.contains([':', '\n'])
    {
        cx.push(
            Diag::new(
                "config::invalid-comment",
                "a user comment cannot contain ':' or a newline",
            )
            .at(c.span, "invalid comment"),
        );
    }
    let system = r.bool(cx, "system").unwrap_or(false);
    let create_home = r.bool(cx, "create-home").unwrap_or(!system);
    Some(Spec {
        name: name?,
        state,
        uid,
        group,
        groups,
        append,
        home,
        shell,
        comment: comment.map(|c| c.value),
        system,
        create_home,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The configured user with each supplementary group listed once.
    pub spec: Spec,
    pub sudo: bool,
}

pub fn resolve(u: &Spec, ctx: &ResolveCtx<'_>) -> Result<User, ResourceError> {
    Ok(User {
        spec: Spec {
            groups: once_each(&u.groups),
            ..u.clone()
        },
        sudo: ctx.sudo,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

impl User {
    /// The supplementary groups wanted, without the primary group (which `groups` never shows).
    fn wanted_groups(&self, primary: Option<&str>) -> BTreeSet<&str> {
        self.spec
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| Some(*g) != primary)
            .collect()
    }

    fn create(&self) -> Change {
        let mut args: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        if self.spec.system {
            args.push("-r".into());
            fields.push(FieldChange::new("system", None, Some("true")));
        }
        if let Some(uid) = self.spec.uid {
            args.push(format!("-u {uid}"));
            fields.push(FieldChange::new("uid", None, Some(&uid.to_string())));
        }
        let mut script = String::new();
        match &self.spec.group {
            Some(g) => {
                args.push(format!("-g {}", q(g)));
                fields.push(FieldChange::new("group", None, Some(g)));
            }
            // useradd refuses to create the user's own group when one of that name exists: use
            // it. Decided when the step runs, since an earlier step may create the group.
            None => script.push_str(&format!(
                "set --; if getent group {n} >/dev/null 2>&1; then set -- -g {n}; fi; ",
                n = q(&self.spec.name)
            )),
        }
        let groups = self.wanted_groups(self.spec.group.as_deref());
        if !groups.is_empty() {
            let list = groups.iter().copied().collect::<Vec<_>>().join(",");
            args.push(format!("-G {}", q(&list)));
            fields.push(FieldChange::new("groups", None, Some(&list)));
        }
        for (flag, field, value) in [
            ("-d", "home", &self.spec.home),
            ("-s", "shell", &self.spec.shell),
            ("-c", "comment", &self.spec.comment),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag} {}", q(v)));
                fields.push(FieldChange::new(field, None, Some(v)));
            }
        }
        args.push(if self.spec.create_home { "-m" } else { "-M" }.into());
        let group_args = if self.spec.group.is_none() {
            " \"$@\""
        } else {
            ""
        };
        script.push_str(&format!(
            "useradd{group_args} {} -- {}",
            args.join(" "),
            q(&self.spec.name)
        ));
        let mut c = Change::new(
            Action::Create,
            "does not exist",
            vec![Step::new(script, self.sudo)],
        );
        c.fields = fields;
        c
    }
}

impl User {
    /// The step that brings back the account `o` observed, after it was deleted: same uid,
    /// primary group (re-created with its gid when userdel took the user's own group with it),
    /// supplementary groups that exist by then, home, shell and comment. The home directory was
    /// kept by userdel. The password and ageing fields are not the plan's to hold: apply's
    /// pre-image keeps them, and the rollback puts them back after this step (`shadow`).
    fn recreate(&self, o: &Observed) -> Result<Step, ResourceError> {
        let (uid, gid, group) = (o.require("uid")?, o.require("gid")?, o.require("group")?);
        let n = q(&self.spec.name);
        let mut script = String::new();
        if !group.is_empty() {
            script.push_str(&format!(
                "if ! getent group {g} >/dev/null 2>&1; then groupadd -g {g} -- {name}; fi; ",
                g = q(gid),
                name = q(group)
            ));
        }
        // A supplementary group deleted in the same run may come back after this step; it then
        // re-adds its members itself (group.rs).
        let groups: Vec<String> = o
            .require("groups")?
            .split(',')
            .filter(|g| !g.is_empty())
            .map(q)
            .collect();
        script.push_str("set --; ");
        if !groups.is_empty() {
            script.push_str(&format!(
                "g=; for x in {}; do if getent group \"$x\" >/dev/null 2>&1; then g=\"$g${{g:+,}}$x\"; fi; done; \
                 if [ -n \"$g\" ]; then set -- -G \"$g\"; fi; ",
                groups.join(" ")
            ));
        }
        script.push_str(&format!(
            "useradd -u {} -g {} \"$@\" -d {} -s {} -c {} -M -- {n}",
            q(uid),
            q(gid),
            q(o.require("home")?),
            q(o.require("shell")?),
            q(o.require("comment")?),
        ));
        Ok(Step::new(script, self.sudo))
    }
}

/// How plans name the user, planned or skipped.
pub fn label(u: &Spec) -> String {
    format!("user {}", u.name)
}

impl Resource for User {
    fn id(&self) -> String {
        ResourceType::User.id(&self.spec.name)
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn probe(&self) -> String {
        let n = q(&self.spec.name);
        // Fields are cut with parameter expansion: GECOS may hold spaces but never ':'.
        format!(
            "LC_ALL=C; export LC_ALL\n\
             if l=$(getent passwd {n} 2>/dev/null) && [ -n \"$l\" ]; then\n  \
             echo exists=true\n  \
             r=${{l#*:*:}}; uid=${{r%%:*}}; r=${{r#*:}}; gid=${{r%%:*}}; r=${{r#*:}}\n  \
             gecos=${{r%%:*}}; r=${{r#*:}}; home=${{r%%:*}}; shell=${{r#*:}}\n  \
             g=$(getent group \"$gid\" 2>/dev/null); g=${{g%%:*}}\n  \
             printf 'uid=%s\\ngid=%s\\ngroup=%s\\nhome=%s\\nshell=%s\\ncomment=%s\\n' \"$uid\" \"$gid\" \"$g\" \"$home\" \"$shell\" \"$gecos\"\n  \
             printf 'groups=%s\\n' \"$(id -Gn {n} 2>/dev/null | tr ' ' '\\n' | grep -vx -e \"$g\" | sort | tr '\\n' ',' | sed 's/,$//')\"\n\
             else echo exists=false; fi"
        )
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        let exists = o.require("exists")? == "true";
        let n = q(&self.spec.name);
        match (self.spec.state, exists) {
            (Presence::Absent, false) => return Ok(Change::no_op("absent")),
            (Presence::Absent, true) => {
                let mut c = Change::new(
                    Action::Delete,
                    "exists",
                    vec![Step::new(format!("userdel -- {n}"), self.sudo)],
                );
                c.undo = vec![self.recreate(o)?];
                return Ok(c);
            }
            (Presence::Present, false) => return Ok(self.create()),
            (Presence::Present, true) => {}
        }
        let mut args: Vec<String> = Vec::new();
        // What puts each changed attribute back to what was observed: the rollback's usermod.
        let mut undo: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        if let Some(uid) = self.spec.uid {
            let (want, have) = (uid.to_string(), o.require("uid")?);
            if want != have {
                args.push(format!("-u {uid}"));
                undo.push(format!("-u {}", q(have)));
                fields.push(FieldChange::new("uid", Some(have), Some(&want)));
            }
        }
        let (have_group, have_gid) = (o.require("group")?, o.require("gid")?);
        if let Some(g) = &self.spec.group {
            let same = if is_number(g) {
                g == have_gid
            } else {
                g == have_group
            };
            if !same {
                args.push(format!("-g {}", q(g)));
                let from = if have_group.is_empty() {
                    have_gid
                } else {
                    have_group
                };
                // By name: a group renumbered in the same run is put back after the user. A
                // name that is all digits would be read as a gid, so that one goes by number.
                let back = if is_number(have_group) || have_group.is_empty() {
                    have_gid
                } else {
                    have_group
                };
                undo.push(format!("-g {}", q(back)));
                fields.push(FieldChange::new("group", Some(from), Some(g)));
            }
        }
        if !self.spec.groups.is_empty() {
            // The primary group the user will have: the named one, else the current one.
            let primary = match &self.spec.group {
                Some(g) if !is_number(g) => Some(g.as_str()),
                Some(g) if g == have_gid => Some(have_group),
                Some(_) => None,
                None => Some(have_group),
            };
            let want = self.wanted_groups(primary);
            let have_list = o.require("groups")?;
            let have: BTreeSet<&str> = have_list.split(',').filter(|g| !g.is_empty()).collect();
            if self.spec.append {
                let missing: Vec<&str> = want.difference(&have).copied().collect();
                if !missing.is_empty() {
                    let list = missing.join(",");
                    args.push(format!("-a -G {}", q(&list)));
                    undo.push(format!("-G {}", q(have_list)));
                    let to = have.union(&want).copied().collect::<Vec<_>>().join(",");
                    fields.push(FieldChange::new("groups", Some(have_list), Some(&to)));
                }
            } else if want != have {
                let list = want.iter().copied().collect::<Vec<_>>().join(",");
                args.push(format!("-G {}", q(&list)));
                undo.push(format!("-G {}", q(have_list)));
                fields.push(FieldChange::new("groups", Some(have_list), Some(&list)));
            }
        }
        for (flag, field, value) in [
            ("-d", "home", &self.spec.home),
            ("-s", "shell", &self.spec.shell),
            ("-c", "comment", &self.spec.comment),
        ] {
            if let Some(v) = value {
                let have = o.require(field)?;
                if have != v {
                    args.push(format!("{flag} {}", q(v)));
                    undo.push(format!("{flag} {}", q(have)));
                    fields.push(FieldChange::new(field, Some(have), Some(v)));
                }
            }
        }
        if args.is_empty() {
            return Ok(Change::no_op("up to date"));
        }
        let reason = format!(
            "{} differ{}",
            fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if fields.len() == 1 { "s" } else { "" }
        );
        let mut c = Change::new(
            Action::Update,
            reason,
            vec![Step::new(
                format!("usermod {} -- {n}", args.join(" ")),
                self.sudo,
            )],
        );
        c.fields = fields;
        c.undo = vec![Step::new(
            format!("usermod {} -- {n}", undo.join(" ")),
            self.sudo,
        )];
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "deploy".into(),
            state: Presence::Present,
            uid: Some(1500),
            group: None,
            groups: vec!["www-data".into(), "adm".into()],
            append: false,
            home: Some("/srv/deploy".into()),
            shell: Some("/bin/bash".into()),
            comment: Some("Deploy User".into()),
            system: false,
            create_home: true,
        }
    }

    fn with_sudo(spec: Spec) -> User {
        User { spec, sudo: true }
    }

    fn user() -> User {
        with_sudo(spec())
    }

    const UP: &str = "exists=true\nuid=1500\ngid=1500\ngroup=deploy\nhome=/srv/deploy\nshell=/bin/bash\ncomment=Deploy User\ngroups=adm,www-data";

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    /// Executables in `dir` standing in for the host's tools, for running a script as a host would.
    fn stand_ins(dir: &std::path::Path, tools: &[(&str, &str)]) {
        use std::os::unix::fs::PermissionsExt;
        for (name, text) in tools {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn script(c: &Change) -> &str {
        assert_eq!(c.steps.len(), 1);
        &c.steps[0].script
    }

    #[test]
    fn creates_with_every_attribute() {
        let c = user().plan(&obs("exists=false")).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            script(&c),
            "set --; if getent group deploy >/dev/null 2>&1; then set -- -g deploy; fi; \
             useradd \"$@\" -u 1500 -G 'adm,www-data' -d /srv/deploy -s /bin/bash -c 'Deploy User' -m -- deploy"
        );
        assert!(c.steps[0].sudo);
        assert_eq!(c.fields[0], FieldChange::new("uid", None, Some("1500")));
        assert_eq!(
            c.fields[1],
            FieldChange::new("groups", None, Some("adm,www-data"))
        );

        let sys = with_sudo(Spec {
            uid: None,
            group: Some("daemon".into()),
            groups: vec!["daemon".into()],
            home: None,
            shell: Some("/usr/sbin/nologin".into()),
            comment: None,
            system: true,
            create_home: false,
            ..spec()
        });
        assert_eq!(
            script(&sys.plan(&obs("exists=false")).unwrap()),
            "useradd -r -g daemon -s /usr/sbin/nologin -M -- deploy"
        );
    }

    #[test]
    fn no_op_when_everything_matches() {
        assert_eq!(user().plan(&obs(UP)).unwrap(), Change::no_op("up to date"));
        // Unmanaged attributes are not compared.
        let bare = with_sudo(Spec {
            uid: None,
            groups: vec![],
            home: None,
            shell: None,
            comment: None,
            ..spec()
        });
        assert_eq!(
            bare.plan(&obs(
                "exists=true\nuid=9\ngid=9\ngroup=x\nhome=/\nshell=/bin/sh\ncomment=\ngroups=a"
            ))
            .unwrap()
            .action,
            Action::NoOp
        );
    }

    #[test]
    fn modifies_what_differs() {
        let o = obs(&UP
            .replace("uid=1500", "uid=1001")
            .replace("/bin/bash", "/bin/sh")
            .replace("Deploy User", ""));
        let c = user().plan(&o).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "uid, shell, comment differ");
        assert_eq!(
            script(&c),
            "usermod -u 1500 -s /bin/bash -c 'Deploy User' -- deploy"
        );
        assert_eq!(
            c.fields[1],
            FieldChange::new("shell", Some("/bin/sh"), Some("/bin/bash"))
        );

        let g = with_sudo(Spec {
            group: Some("staff".into()),
            ..spec()
        });
        let c = g.plan(&obs(UP)).unwrap();
        assert_eq!(script(&c), "usermod -g staff -- deploy");
        assert_eq!(c.reason, "group differs");
        let by_id = with_sudo(Spec {
            group: Some("1500".into()),
            ..spec()
        });
        assert_eq!(by_id.plan(&obs(UP)).unwrap().action, Action::NoOp);
    }

    #[test]
    fn supplementary_groups_exact_or_appended() {
        let o = obs(&UP.replace("groups=adm,www-data", "groups=adm,sudo"));
        let c = user().plan(&o).unwrap();
        assert_eq!(script(&c), "usermod -G 'adm,www-data' -- deploy");
        assert_eq!(
            c.fields,
            vec![FieldChange::new(
                "groups",
                Some("adm,sudo"),
                Some("adm,www-data")
            )]
        );

        let add = with_sudo(Spec {
            append: true,
            ..spec()
        });
        let c = add.plan(&o).unwrap();
        assert_eq!(script(&c), "usermod -a -G www-data -- deploy");
        assert_eq!(
            c.fields,
            vec![FieldChange::new(
                "groups",
                Some("adm,sudo"),
                Some("adm,sudo,www-data")
            )]
        );
        let all = obs(&UP.replace("groups=adm,www-data", "groups=adm,sudo,www-data"));
        assert_eq!(add.plan(&all).unwrap().action, Action::NoOp);
        assert_eq!(user().plan(&all).unwrap().action, Action::Update);

        // The primary group is never a supplementary one.
        let with_primary = with_sudo(Spec {
            groups: vec!["deploy".into(), "adm".into(), "www-data".into()],
            ..spec()
        });
        assert_eq!(with_primary.plan(&obs(UP)).unwrap().action, Action::NoOp);
        // Only the primary group listed: no supplementary groups at all.
        let only = with_sudo(Spec {
            groups: vec!["deploy".into()],
            ..spec()
        });
        assert_eq!(
            script(&only.plan(&obs(UP)).unwrap()),
            "usermod -G '' -- deploy"
        );
    }

    #[test]
    fn every_change_to_an_existing_account_carries_its_undo() {
        let undo = |c: &Change| c.undo.iter().map(|s| s.script.clone()).collect::<Vec<_>>();
        let o = obs(&UP
            .replace("uid=1500", "uid=1001")
            .replace("groups=adm,www-data", "groups=")
            .replace("Deploy User", ""));
        let c = with_sudo(Spec {
            group: Some("staff".into()),
            ..spec()
        })
        .plan(&o)
        .unwrap();
        assert_eq!(
            undo(&c),
            ["usermod -u 1001 -g deploy -G '' -c '' -- deploy"]
        );
        assert!(c.undo[0].sudo);
        // Appended groups are undone by the exact set seen before.
        let add = with_sudo(Spec {
            append: true,
            ..spec()
        });
        let o = obs(&UP.replace("groups=adm,www-data", "groups=adm"));
        assert_eq!(undo(&add.plan(&o).unwrap()), ["usermod -G adm -- deploy"]);
        // A primary group without a name, or named with digits only (by name it would be read
        // as a gid), is put back by number.
        let to_staff = with_sudo(Spec {
            group: Some("staff".into()),
            ..spec()
        });
        for seen in ["group=", "group=4000"] {
            let o = obs(&UP.replace("group=deploy", seen));
            assert_eq!(
                undo(&to_staff.plan(&o).unwrap()),
                ["usermod -g 1500 -- deploy"]
            );
        }
        // Creating has nothing to undo here: its pre-image (absent) says to delete.
        assert!(user().plan(&obs("exists=false")).unwrap().undo.is_empty());
        assert!(user().plan(&obs(UP)).unwrap().undo.is_empty());
    }

    #[test]
    fn absent_and_recreated_with_what_was_observed() {
        let gone = with_sudo(Spec {
            state: Presence::Absent,
            ..spec()
        });
        let c = gone.plan(&obs(UP)).unwrap();
        assert_eq!(
            (c.action, script(&c)),
            (Action::Delete, "userdel -- deploy")
        );
        assert_eq!(
            gone.plan(&obs("exists=false")).unwrap(),
            Change::no_op("absent")
        );
        assert_eq!(
            c.undo,
            vec![Step::new(
                "if ! getent group 1500 >/dev/null 2>&1; then groupadd -g 1500 -- deploy; fi; \
                 set --; g=; for x in adm www-data; do if getent group \"$x\" >/dev/null 2>&1; then g=\"$g${g:+,}$x\"; fi; done; \
                 if [ -n \"$g\" ]; then set -- -G \"$g\"; fi; \
                 useradd -u 1500 -g 1500 \"$@\" -d /srv/deploy -s /bin/bash -c 'Deploy User' -M -- deploy",
                true
            )]
        );
        // Run it with stand-ins: only the groups that exist by then are given.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        stand_ins(
            dir.path(),
            &[
                (
                    "getent",
                    "#!/bin/sh\n[ \"$2\" = www-data ] && exit 0; exit 2\n",
                ),
                (
                    "groupadd",
                    &format!("#!/bin/sh\necho groupadd \"$@\" >> {}\n", log.display()),
                ),
                (
                    "useradd",
                    &format!("#!/bin/sh\necho useradd \"$@\" >> {}\n", log.display()),
                ),
            ],
        );
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&c.undo[0].script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "groupadd -g 1500 -- deploy\n\
             useradd -u 1500 -g 1500 -G www-data -d /srv/deploy -s /bin/bash -c Deploy User -M -- deploy\n"
        );
    }

    #[test]
    fn probe_parses_passwd_lines() {
        // Run the probe with stand-ins for getent and id, as a host would.
        let dir = tempfile::tempdir().unwrap();
        let getent = "#!/bin/sh\ncase \"$1 $2\" in\n'passwd deploy') echo 'deploy:x:1500:1500:Deploy User,Room 1,,:/srv/deploy:/bin/bash';;\n'group 1500') echo 'deploy:x:1500:';;\n*) exit 2;;\nesac\n";
        let id = "#!/bin/sh\necho 'deploy www-data adm'\n";
        stand_ins(dir.path(), &[("getent", getent), ("id", id)]);
        let run = |u: &User| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("( {} )", u.probe()))
                .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                .output()
                .unwrap();
            Observed::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
        };
        let want = "exists=true\nuid=1500\ngid=1500\ngroup=deploy\nhome=/srv/deploy\nshell=/bin/bash\ncomment=Deploy User,Room 1,,\ngroups=adm,www-data";
        assert_eq!(run(&user()), obs(want));
        assert_eq!(
            run(&with_sudo(Spec {
                name: "nobody-here".into(),
                ..spec()
            })),
            obs("exists=false")
        );
    }

    #[test]
    fn resolve_and_ids() {
        let f = crate::facts::Facts::parse("format=1\nkernel_name=Linux\n").unwrap();
        let inputs = crate::inputs::Inputs::default();
        let vars = BTreeMap::new();
        let ctx = ResolveCtx {
            host: "web1",
            facts: &f,
            sudo: false,
            inputs: &inputs,
            vars: &vars,
            host_tags: &[],
        };
        let cfg = Spec {
            name: "app".into(),
            state: Presence::Present,
            uid: None,
            group: None,
            groups: vec!["a".into(), "a".into()],
            append: false,
            home: None,
            shell: None,
            comment: None,
            system: false,
            create_home: true,
        };
        let u = resolve(&cfg, &ctx).unwrap();
        assert_eq!(
            (u.id(), u.label(), u.spec.groups.clone(), u.sudo),
            (
                "user:app".into(),
                "user app".into(),
                vec!["a".to_string()],
                false
            )
        );
    }
}
