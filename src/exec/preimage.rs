//! Capturing pre-images during apply's re-probe: the resources a plan is about to change get
//! their current state recorded (docs/rollback.md). The contents of files to be replaced, and
//! the shadow entries of accounts to be deleted, travel back in the same script as the re-probe,
//! in a section of their own after it, so capturing costs no round trip. Packages and commands
//! carry their undo steps in the plan instead.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::plan::Action;
use crate::plan::ResourceType;
use crate::plan::{Observed, PlannedResource};
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
    (r.kind == ResourceType::File && wanted(r))
        .then(|| r.kind.subject_of(&r.id))
        .flatten()
}

/// The account whose shadow entry the capture sends back, and the `getent` database holding it:
/// a user or group the plan deletes. Its rollback re-creates it from the plan's probe, which
/// never reads the entry (the password hash and ageing fields are only there).
fn shadow_entry(r: &PlannedResource) -> Option<(&'static str, &str)> {
    if r.action != Action::Delete || !wanted(r) {
        return None;
    }
    Some((r.kind.shadow_database()?, r.kind.subject_of(&r.id)?))
}

/// A shell condition that holds when `userdel NAME` will remove the user's own group with it, as
/// shadow's userdel decides: `USERGROUPS_ENAB yes` in /etc/login.defs, a group named as the user
/// that is its primary group (same gid), with no member but the user, and that is no other
/// user's primary group. Apply's capture reads that group's /etc/gshadow entry then, for the
/// rollback to put back after this user's re-creation (whose step re-creates the group).
fn own_group_taken(name: &str) -> String {
    own_group_taken_per(name, "/etc/login.defs")
}

/// [`own_group_taken`] with `login_defs` in place of /etc/login.defs.
fn own_group_taken_per(name: &str, login_defs: &str) -> String {
    let (n, defs) = (q(name), q(login_defs));
    format!(
        "{{ _nx_p=$(getent passwd {n} 2>/dev/null) && _nx_o=$(getent group {n} 2>/dev/null) && \
         awk '$1 == \"USERGROUPS_ENAB\" {{ v = tolower($2); gsub(/\"/, \"\", v) }} END {{ exit v != \"yes\" }}' {defs} 2>/dev/null && \
         _nx_ug=${{_nx_p#*:*:*:}} && _nx_ug=${{_nx_ug%%:*}} && _nx_gg=${{_nx_o#*:*:}} && _nx_gm=${{_nx_gg#*:}} && _nx_gg=${{_nx_gg%%:*}} && \
         [ \"$_nx_ug\" = \"$_nx_gg\" ] && \
         ! printf '%s\\n' \"$_nx_gm\" | tr ',' '\\n' | grep -qvxF -e {n} -e '' && \
         ! getent passwd | awk -F: -v g=\"$_nx_gg\" -v u={n} '$4 == g && $1 != u {{ f = 1 }} END {{ exit !f }}'; }}"
    )
}

/// The section appended to a host's probe script: `INDEX=BASE64` of each wanted file that is a
/// regular, readable file no larger than [`CONTENT_LIMIT`], and of the shadow entry of each
/// account to be deleted (as `getent` prints it; nothing when it cannot be read, as without
/// root), INDEX counting the host's resources. Of a user whose own group `userdel` will remove
/// with it ([`own_group_taken`]), a second line follows its entry: that group's
/// /etc/gshadow entry (empty when it cannot be read; the user's own line is then empty too when
/// its entry cannot be read).
/// A file whose old content the probe's batch sent already (for the plan's diff: a small file
/// whose content the plan replaces, listed in `$_nx_sent` by `plan::probe`) is left out:
/// [`content_of`] takes it from the probe's output.
pub fn script(resources: &[&PlannedResource], token: &str) -> String {
    let mut s = format!("printf '\\n@@{token} pre begin\\n'\n_nx_nl='\n'\n");
    for (i, r) in resources.iter().enumerate() {
        if let Some((database, name)) = shadow_entry(r) {
            // The entry holds a password hash: it goes through `printf`, a shell builtin, to
            // base64's stdin, so it is never an argument of a process (visible in `ps`).
            let n = q(name);
            let own_group = match r.kind {
                ResourceType::User => format!(
                    "if {}; then _nx_g=$(getent gshadow {n} 2>/dev/null) || _nx_g=; \
                     _nx_e=\"$_nx_e$_nx_nl$_nx_g\"; fi; ",
                    own_group_taken(name)
                ),
                _ => String::new(),
            };
            s.push_str(&format!(
                "_nx_e=$(getent {database} {n} 2>/dev/null) || _nx_e=; {own_group}\
                 if [ -n \"$_nx_e\" ]; then \
                 printf '%s=' {i}; printf '%s\\n' \"$_nx_e\" | base64 | tr -d '\\n'; echo; fi; _nx_e=; _nx_g=\n"
            ));
            continue;
        }
        let Some(path) = content_path(r) else {
            continue;
        };
        let p = q(path);
        s.push_str(&format!(
            "case \"$_nx_nl${{_nx_sent:-}}\" in *\"$_nx_nl\"{p}\"$_nx_nl\"*) ;; *) \
             if [ -f {p} ] && [ ! -L {p} ] && [ -r {p} ] && [ \"$(wc -c < {p})\" -le {CONTENT_LIMIT} ]; \
             then printf '%s=' {i}; base64 < {p} | tr -d '\\n'; echo; fi ;; esac\n"
        ));
    }
    s.push_str(&format!("printf '\\n@@{token} pre end\\n'\n"));
    s
}

/// The content captured of the `i`th re-probed resource: what the pre-image section sent, or
/// else the old content the probe's batch sent for the diff (`_old_b64`), which the section
/// leaves out.
pub fn content_of(
    i: usize,
    contents: &mut BTreeMap<usize, Vec<u8>>,
    observed: Option<&Observed>,
) -> Option<Vec<u8>> {
    contents.remove(&i).or_else(|| {
        let b64 = observed?.get("_old_b64")?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    })
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
            id: format!("file:{}", path.display()),
            ..planned_file()
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

    /// A small file whose content the plan replaces travels back once: the probe's batch sends
    /// it for the plan's diff check, and the pre-image section leaves it out and takes it from
    /// there. A mode-only change (the content as wanted, so the batch sends nothing) still gets
    /// its content from the section.
    #[test]
    fn a_content_the_probe_sends_is_not_sent_again() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let old = b"old content, sent once\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(old);
        for (want, sent_by_probe) in [("new content\n", true), ("old content, sent once\n", false)]
        {
            let path = dir.path().join("app's.conf");
            std::fs::write(&path, old).unwrap();
            let path = path.to_str().unwrap().to_string();
            let mut batch = crate::plan::ProbeBatch::for_path(&path, true).unwrap();
            batch.old_unless = Some(crate::plan::file_write::sha256_hex(want.as_bytes()));
            let r = PlannedResource {
                id: ResourceType::File.id(&path),
                probe_batch: Some(batch),
                ..planned_file()
            };
            let resources = [&r];
            let specs: Vec<_> = resources.iter().map(|r| r.probe_spec()).collect();
            let mut script = crate::plan::probe::script(&specs);
            let token = token(&script);
            script.push_str(&super::script(&resources, &token));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                text.matches(&b64).count(),
                1,
                "sent by probe: {sent_by_probe}\n{text}"
            );
            let (own, mut contents) = split_off(&text, &token);
            let sections = crate::plan::probe::split(&specs, own, None).unwrap();
            let observed = Observed::parse(&sections[0].output).unwrap();
            assert_eq!(observed.get("_old_b64").is_some(), sent_by_probe);
            assert_eq!(
                content_of(0, &mut contents, Some(&observed)).as_deref(),
                Some(&old[..])
            );
        }
    }

    /// The shadow entry of an account the plan deletes comes back in the same section; one
    /// that cannot be read (no root) sends nothing; an account the plan keeps is not read.
    #[test]
    fn a_deleted_accounts_shadow_entry_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let getent = dir.path().join("getent");
        crate::shell::stand_in(
            &getent,
            "case \"$1 $2\" in\n'shadow gone') echo 'gone:$6$s$h:19000:0:99999:7:::';;\n\
             'gshadow ops') echo 'ops:!:alice:';;\n*) exit 2;;\nesac",
        );
        let account = |kind: ResourceType, name: &str, action: Action| PlannedResource {
            id: kind.id(name),
            kind,
            action,
            ..planned_file()
        };
        let resources = [
            account(ResourceType::User, "gone", Action::Delete),
            account(ResourceType::User, "unreadable", Action::Delete),
            account(ResourceType::Group, "ops", Action::Delete),
            account(ResourceType::User, "gone", Action::Update),
        ];
        let resources: Vec<&PlannedResource> = resources.iter().collect();
        let token = token("x");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&resources, &token))
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let (_, contents) = split_off(&String::from_utf8(out.stdout).unwrap(), &token);
        assert_eq!(contents.len(), 2, "{contents:?}");
        assert_eq!(contents[&0], b"gone:$6$s$h:19000:0:99999:7:::\n");
        assert_eq!(contents[&2], b"ops:!:alice:\n");
    }

    fn planned_file() -> PlannedResource {
        PlannedResource {
            id: String::new(),
            label: "file".into(),
            ..PlannedResource::example(ResourceType::File, "")
        }
    }

    /// Whether userdel takes the user's own group, as shadow's userdel decides (checked against
    /// it in tests/rollback.rs): with USERGROUPS_ENAB yes, a group of the user's name that is
    /// its primary group, with no member but the user, and no other user's primary group.
    #[test]
    fn userdel_takes_the_own_group_only_when_it_would_remove_it() {
        let dir = tempfile::tempdir().unwrap();
        let getent = "case \"$1 $2\" in\n\
             'passwd ') printf 'own:x:1500:1500::/h:/bin/sh\\nmember:x:1510:1510::/h:/bin/sh\\n\
             self:x:1520:1520::/h:/bin/sh\\nshared:x:1530:1530::/h:/bin/sh\\nother:x:1531:1530::/h:/bin/sh\\n\
             moved:x:1540:100::/h:/bin/sh\\n';;\n\
             'passwd own') echo 'own:x:1500:1500::/h:/bin/sh';;\n\
             'passwd member') echo 'member:x:1510:1510::/h:/bin/sh';;\n\
             'passwd self') echo 'self:x:1520:1520::/h:/bin/sh';;\n\
             'passwd shared') echo 'shared:x:1530:1530::/h:/bin/sh';;\n\
             'passwd moved') echo 'moved:x:1540:100::/h:/bin/sh';;\n\
             'group own') echo 'own:x:1500:';;\n\
             'group member') echo 'member:x:1510:member,daemon';;\n\
             'group self') echo 'self:x:1520:self';;\n\
             'group shared') echo 'shared:x:1530:';;\n\
             'group moved') echo 'moved:x:1540:';;\n\
             *) exit 2;;\nesac\n";
        crate::shell::stand_in(&dir.path().join("getent"), getent);
        let defs = dir.path().join("login.defs");
        let taken = |name: &str| {
            let script = format!(
                "if {}; then echo taken; else echo kept; fi",
                own_group_taken_per(name, defs.to_str().unwrap())
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim() == "taken"
        };
        std::fs::write(
            &defs,
            "# USERGROUPS_ENAB yes\nUSERGROUPS_ENAB no\nUSERGROUPS_ENAB   YES\n",
        )
        .unwrap();
        let cases = [
            ("own", true),
            // Another member keeps it; the user itself listed as one does not.
            ("member", false),
            ("self", true),
            // Another user's primary group.
            ("shared", false),
            // Not the user's primary group.
            ("moved", false),
            ("missing", false),
        ];
        for (name, want) in cases {
            assert_eq!(taken(name), want, "{name}");
        }
        // USERGROUPS_ENAB not yes (the last setting counts), or no login.defs: userdel keeps it.
        std::fs::write(&defs, "USERGROUPS_ENAB yes\nUSERGROUPS_ENAB no\n").unwrap();
        assert!(!taken("own"));
        // Quoted, as shadow reads it too.
        std::fs::write(&defs, "USERGROUPS_ENAB \"yes\"\n").unwrap();
        assert!(taken("own"));
        std::fs::remove_file(&defs).unwrap();
        assert!(!taken("own"));
    }
}
