//! `user`: a local account (uid, primary group, supplementary groups, home, shell, comment,
//! system account), created with `useradd`, changed with `usermod`, removed with `userdel`
//! (the home directory is kept).
//!
//! The probe prints `exists` and, for an existing account, `uid`, `gid`, `group` (the primary
//! group's name), `home`, `shell`, `comment` (GECOS) and `groups`: the supplementary groups,
//! sorted and comma-joined, without the primary group.

use std::collections::BTreeSet;

use super::*;
use crate::config::{self, Presence};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub state: Presence,
    pub uid: Option<u32>,
    /// Primary group, by name or number.
    pub group: Option<String>,
    /// Supplementary groups; empty means they are not managed.
    pub groups: Vec<String>,
    /// Add the listed groups and keep the others (`usermod -a`), instead of the exact set.
    pub append: bool,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    /// Create as a system account (only when creating).
    pub system: bool,
    /// Create the home directory (only when creating).
    pub create_home: bool,
    pub sudo: bool,
}

pub fn resolve(u: &config::User, ctx: &ResolveCtx<'_>) -> Result<User, ResourceError> {
    let mut groups: Vec<String> = Vec::new();
    for g in &u.groups {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    Ok(User {
        name: u.name.clone(),
        state: u.state,
        uid: u.uid,
        group: u.group.clone(),
        groups,
        append: u.append,
        home: u.home.clone(),
        shell: u.shell.clone(),
        comment: u.comment.clone(),
        system: u.system,
        create_home: u.create_home,
        sudo: ctx.sudo,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

impl User {
    /// The supplementary groups wanted, without the primary group (which `groups` never shows).
    fn wanted_groups(&self, primary: Option<&str>) -> BTreeSet<&str> {
        self.groups
            .iter()
            .map(String::as_str)
            .filter(|g| Some(*g) != primary)
            .collect()
    }

    fn create(&self) -> Change {
        let mut args: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        if self.system {
            args.push("-r".into());
            fields.push(FieldChange::new("system", None, Some("true")));
        }
        if let Some(uid) = self.uid {
            args.push(format!("-u {uid}"));
            fields.push(FieldChange::new("uid", None, Some(&uid.to_string())));
        }
        let mut script = String::new();
        match &self.group {
            Some(g) => {
                args.push(format!("-g {}", q(g)));
                fields.push(FieldChange::new("group", None, Some(g)));
            }
            // useradd refuses to create the user's own group when one of that name exists: use
            // it. Decided when the step runs, since an earlier step may create the group.
            None => script.push_str(&format!(
                "set --; if getent group {n} >/dev/null 2>&1; then set -- -g {n}; fi; ",
                n = q(&self.name)
            )),
        }
        let groups = self.wanted_groups(self.group.as_deref());
        if !groups.is_empty() {
            let list = groups.iter().copied().collect::<Vec<_>>().join(",");
            args.push(format!("-G {}", q(&list)));
            fields.push(FieldChange::new("groups", None, Some(&list)));
        }
        for (flag, field, value) in [
            ("-d", "home", &self.home),
            ("-s", "shell", &self.shell),
            ("-c", "comment", &self.comment),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag} {}", q(v)));
                fields.push(FieldChange::new(field, None, Some(v)));
            }
        }
        args.push(if self.create_home { "-m" } else { "-M" }.into());
        let group_args = if self.group.is_none() { " \"$@\"" } else { "" };
        script.push_str(&format!(
            "useradd{group_args} {} -- {}",
            args.join(" "),
            q(&self.name)
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

impl Resource for User {
    fn id(&self) -> String {
        format!("user:{}", self.name)
    }

    fn label(&self) -> String {
        format!("user {}", self.name)
    }

    fn probe(&self) -> String {
        let n = q(&self.name);
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
        let n = q(&self.name);
        match (self.state, exists) {
            (Presence::Absent, false) => return Ok(Change::no_op("absent")),
            (Presence::Absent, true) => {
                return Ok(Change::new(
                    Action::Delete,
                    "exists",
                    vec![Step::new(format!("userdel -- {n}"), self.sudo)],
                ));
            }
            (Presence::Present, false) => return Ok(self.create()),
            (Presence::Present, true) => {}
        }
        let mut args: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        if let Some(uid) = self.uid {
            let (want, have) = (uid.to_string(), o.require("uid")?);
            if want != have {
                args.push(format!("-u {uid}"));
                fields.push(FieldChange::new("uid", Some(have), Some(&want)));
            }
        }
        let (have_group, have_gid) = (o.require("group")?, o.require("gid")?);
        if let Some(g) = &self.group {
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
                fields.push(FieldChange::new("group", Some(from), Some(g)));
            }
        }
        if !self.groups.is_empty() {
            // The primary group the user will have: the named one, else the current one.
            let primary = match &self.group {
                Some(g) if !is_number(g) => Some(g.as_str()),
                Some(g) if g == have_gid => Some(have_group),
                Some(_) => None,
                None => Some(have_group),
            };
            let want = self.wanted_groups(primary);
            let have_list = o.require("groups")?;
            let have: BTreeSet<&str> = have_list.split(',').filter(|g| !g.is_empty()).collect();
            if self.append {
                let missing: Vec<&str> = want.difference(&have).copied().collect();
                if !missing.is_empty() {
                    let list = missing.join(",");
                    args.push(format!("-a -G {}", q(&list)));
                    let to = have.union(&want).copied().collect::<Vec<_>>().join(",");
                    fields.push(FieldChange::new("groups", Some(have_list), Some(&to)));
                }
            } else if want != have {
                let list = want.iter().copied().collect::<Vec<_>>().join(",");
                args.push(format!("-G {}", q(&list)));
                fields.push(FieldChange::new("groups", Some(have_list), Some(&list)));
            }
        }
        for (flag, field, value) in [
            ("-d", "home", &self.home),
            ("-s", "shell", &self.shell),
            ("-c", "comment", &self.comment),
        ] {
            if let Some(v) = value {
                let have = o.require(field)?;
                if have != v {
                    args.push(format!("{flag} {}", q(v)));
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
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
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
            sudo: true,
        }
    }

    const UP: &str = "exists=true\nuid=1500\ngid=1500\ngroup=deploy\nhome=/srv/deploy\nshell=/bin/bash\ncomment=Deploy User\ngroups=adm,www-data";

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
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

        let sys = User {
            uid: None,
            group: Some("daemon".into()),
            groups: vec!["daemon".into()],
            home: None,
            shell: Some("/usr/sbin/nologin".into()),
            comment: None,
            system: true,
            create_home: false,
            ..user()
        };
        assert_eq!(
            script(&sys.plan(&obs("exists=false")).unwrap()),
            "useradd -r -g daemon -s /usr/sbin/nologin -M -- deploy"
        );
    }

    #[test]
    fn no_op_when_everything_matches() {
        assert_eq!(user().plan(&obs(UP)).unwrap(), Change::no_op("up to date"));
        // Unmanaged attributes are not compared.
        let bare = User {
            uid: None,
            groups: vec![],
            home: None,
            shell: None,
            comment: None,
            ..user()
        };
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

        let g = User {
            group: Some("staff".into()),
            ..user()
        };
        let c = g.plan(&obs(UP)).unwrap();
        assert_eq!(script(&c), "usermod -g staff -- deploy");
        assert_eq!(c.reason, "group differs");
        let by_id = User {
            group: Some("1500".into()),
            ..user()
        };
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

        let add = User {
            append: true,
            ..user()
        };
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
        let with_primary = User {
            groups: vec!["deploy".into(), "adm".into(), "www-data".into()],
            ..user()
        };
        assert_eq!(with_primary.plan(&obs(UP)).unwrap().action, Action::NoOp);
        // Only the primary group listed: no supplementary groups at all.
        let only = User {
            groups: vec!["deploy".into()],
            ..user()
        };
        assert_eq!(
            script(&only.plan(&obs(UP)).unwrap()),
            "usermod -G '' -- deploy"
        );
    }

    #[test]
    fn absent() {
        let gone = User {
            state: Presence::Absent,
            ..user()
        };
        let c = gone.plan(&obs(UP)).unwrap();
        assert_eq!(
            (c.action, script(&c)),
            (Action::Delete, "userdel -- deploy")
        );
        assert_eq!(
            gone.plan(&obs("exists=false")).unwrap(),
            Change::no_op("absent")
        );
    }

    #[test]
    fn probe_parses_passwd_lines() {
        // Run the probe with stand-ins for getent and id, as a host would.
        let dir = tempfile::tempdir().unwrap();
        let getent = "#!/bin/sh\ncase \"$1 $2\" in\n'passwd deploy') echo 'deploy:x:1500:1500:Deploy User,Room 1,,:/srv/deploy:/bin/bash';;\n'group 1500') echo 'deploy:x:1500:';;\n*) exit 2;;\nesac\n";
        let id = "#!/bin/sh\necho 'deploy www-data adm'\n";
        for (name, text) in [("getent", getent), ("id", id)] {
            std::fs::write(dir.path().join(name), text).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(dir.path().join(name))
                .status()
                .unwrap();
        }
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
            run(&User {
                name: "nobody-here".into(),
                ..user()
            }),
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
        let cfg = config::User {
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
            (u.id(), u.label(), u.groups.clone(), u.sudo),
            (
                "user:app".into(),
                "user app".into(),
                vec!["a".to_string()],
                false
            )
        );
    }
}
