//! The shadow entry of an account a run deletes (`/etc/shadow` of a `user`, `/etc/gshadow` of a
//! `group`): what its pre-image keeps of it, and the steps that put it back once the account's
//! undo step has re-created it (docs/rollback.md). The password hash is a secret: the pre-image
//! keeps it only encrypted with the vault's content key (`resources::preimage`), and it reaches
//! the host only on a step's stdin.

use zeroize::Zeroizing;

use super::q;
use crate::plan::vocab::ResourceType;
use crate::plan::{FieldChange, Step};

/// A user's ageing fields after its password, in /etc/shadow's order: each one's `chage` flag
/// and the name plans show it under.
const AGEING: [(&str, &str); 6] = [
    ("-d", "lastchg"),
    ("-m", "min"),
    ("-M", "max"),
    ("-W", "warn"),
    ("-I", "inactive"),
    ("-E", "expire"),
];

/// An account's shadow entry, as `getent shadow NAME` or `getent gshadow NAME` printed it.
pub struct Entry {
    /// The password field (a hash, or a locked or empty one: `!…`, `*`, ``); wiped on drop.
    pub password: Zeroizing<String>,
    /// The fields after it that hold no secret and are restored: a user's [`AGEING`] fields, a
    /// group's administrators (its members come back with the group's own undo step).
    pub rest: Vec<String>,
}

/// Why a captured entry is not used. It never quotes the entry: that holds the hash.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadEntry {
    #[error("its {0} entry is not text")]
    NotText(&'static str),
    #[error("its {0} entry is not one line")]
    Lines(&'static str),
    #[error("its {0} entry names another account")]
    Name(&'static str),
    #[error("its {file} entry has {got} fields, not {want}")]
    Fields {
        file: &'static str,
        got: usize,
        want: usize,
    },
    #[error("its {file} entry's {field} is not a number")]
    NotNumber {
        file: &'static str,
        field: &'static str,
    },
    #[error("its {0} entry's administrators are not a list of account names")]
    Admins(&'static str),
}

/// The file an account of `kind` has its password in, for messages.
pub fn file(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Group => "/etc/gshadow",
        _ => "/etc/shadow",
    }
}

/// Reads the entry of the account `name` of `kind` from what `getent` printed. Fields are split
/// at every `:` (no field of a valid entry holds one), so an entry with more or fewer fields than
/// its file has is refused rather than guessed at; so are ageing fields that are not numbers.
pub fn parse(kind: ResourceType, name: &str, line: &[u8]) -> Result<Entry, BadEntry> {
    let file = file(kind);
    let line = std::str::from_utf8(line).map_err(|_| BadEntry::NotText(file))?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.contains(['\n', '\r']) {
        return Err(BadEntry::Lines(file));
    }
    let fields: Vec<&str> = line.split(':').collect();
    // shadow: name, password, six ageing fields, a reserved one; gshadow: name, password,
    // administrators, members.
    let want = match kind {
        ResourceType::Group => 4,
        _ => 9,
    };
    if fields.len() != want {
        return Err(BadEntry::Fields {
            file,
            got: fields.len(),
            want,
        });
    }
    if fields[0] != name {
        return Err(BadEntry::Name(file));
    }
    let rest = match kind {
        ResourceType::Group => {
            let admins = fields[2];
            let names_only = admins
                .split(',')
                .all(|a| !a.is_empty() && !a.starts_with('-') && !a.contains(char::is_whitespace));
            if !admins.is_empty() && !names_only {
                return Err(BadEntry::Admins(file));
            }
            vec![admins.to_string()]
        }
        _ => {
            let ageing = &fields[2..8];
            for (value, (_, field)) in ageing.iter().zip(AGEING) {
                let digits = value.strip_prefix('-').unwrap_or(value);
                if !digits.chars().all(|c| c.is_ascii_digit())
                    || (digits.is_empty() && !value.is_empty())
                {
                    return Err(BadEntry::NotNumber { file, field });
                }
            }
            ageing.iter().map(|s| s.to_string()).collect()
        }
    };
    Ok(Entry {
        password: Zeroizing::new(fields[1].to_string()),
        rest,
    })
}

impl Entry {
    /// What the restoring step reads on its stdin, `NAME:PASSWORD` (as `chpasswd -e` and
    /// `chgpasswd -e` read it): the plaintext the pre-image keeps encrypted.
    pub fn stdin(&self, name: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(format!("{name}:{}\n", self.password.as_str()).into_bytes())
    }
}

/// Where the password of a restored account comes from.
pub enum Password<'a> {
    /// The blob (by its blake3) holding [`Entry::stdin`], encrypted with the vault's content key;
    /// `line`: when it holds the entries of two accounts, one a line (a user's and its own
    /// group's), this account's (1-based).
    Sealed { blob: &'a str, line: Option<usize> },
    /// It was not kept, for this reason.
    NotKept(&'a str),
}

/// What of an account's entry a rollback puts back only once every account it re-creates exists:
/// a group's administrators (`gpasswd -A` refuses an unknown user, and an administrator deleted
/// before the group is re-created after it). The rollback plan's last entries of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    pub fields: Vec<FieldChange>,
    pub steps: Vec<Step>,
    /// Its undo, for a rollback of that rollback: the administrators cleared while the group is
    /// there (its re-creation is undone after it).
    pub undo: Vec<Step>,
}

/// How the entry of the account `name` of `kind` is put back, after its undo step re-created it:
/// the fields a plan shows, the steps, and what is put back last ([`Last`]). `rest` is
/// [`Entry::rest`], empty when the entry could not be read.
///
/// The password goes in with `chpasswd -e` (`chgpasswd -e` for a group), which reads
/// `NAME:HASH` on stdin: `usermod -p HASH` would put the hash on a command line, where `ps` on
/// the host shows it to every user. `chpasswd` also sets the password's last change to today,
/// so the ageing fields (`chage`, not secret) follow it. An empty field is given as -1, which
/// `chage` writes back as empty. Without the password, the account stays as `useradd` or
/// `groupadd` made it: locked (`!`).
pub fn restore(
    kind: ResourceType,
    name: &str,
    rest: &[String],
    password: Password<'_>,
    sudo: bool,
) -> (Vec<FieldChange>, Vec<Step>, Option<Last>) {
    let field = |f: &str, to: String| FieldChange::new(f, None, Some(&to));
    let (mut fields, mut steps, mut last) = (Vec::new(), Vec::new(), None);
    let n = q(name);
    match password {
        Password::Sealed { blob, line } => {
            fields.push(field("password", "as before (holds secrets)".into()));
            let tool = match kind {
                ResourceType::Group => "chgpasswd",
                _ => "chpasswd",
            };
            // Its own line only, through a pipe: never on a command line.
            let pipe = match line {
                None => format!("{tool} -e"),
                Some(line) => format!("sed -n {line}p | {tool} -e"),
            };
            // A group whose re-creation was skipped (a user's own group, when another group has
            // its gid by now: resources/user.rs) gets nothing, and the step says so.
            let script = match kind {
                ResourceType::Group => format!(
                    "if getent group {n} >/dev/null 2>&1; then {pipe}; \
                     else printf 'nexus: group %s was not re-created, so its password is not restored\\n' {n} >&2; fi"
                ),
                _ => pipe,
            };
            let mut step = Step::new(script, sudo);
            step.stdin = Some(blob.to_string());
            step.stdin_sealed = true;
            steps.push(step);
        }
        Password::NotKept(why) => {
            let what = match kind {
                ResourceType::Group => "the group comes back without one (locked)",
                _ => "the account comes back locked",
            };
            fields.push(field("password", format!("not kept ({why}): {what}")));
        }
    }
    match (kind, rest) {
        (ResourceType::Group, [admins]) if !admins.is_empty() => {
            // Only those that exist by then: gpasswd refuses an unknown one. It runs last, so
            // those the same rollback re-creates exist by then; one that does not is left out.
            let list: Vec<String> = admins.split(',').map(q).collect();
            last = Some(Last {
                fields: vec![field("administrators", admins.clone())],
                steps: vec![Step::new(
                    format!(
                        "a=; for x in {}; do if getent passwd \"$x\" >/dev/null 2>&1; then a=\"$a${{a:+,}}$x\"; fi; done; \
                         if getent group {n} >/dev/null 2>&1; then gpasswd -A \"$a\" {n}; fi",
                        list.join(" ")
                    ),
                    sudo,
                )],
                undo: vec![Step::new(
                    format!("if getent group {n} >/dev/null 2>&1; then gpasswd -A '' {n}; fi"),
                    sudo,
                )],
            });
        }
        (ResourceType::User, ageing) if ageing.len() == AGEING.len() => {
            let shown: Vec<String> = ageing
                .iter()
                .zip(AGEING)
                .map(|(v, (_, f))| format!("{f} {}", if v.is_empty() { "-" } else { v }))
                .collect();
            fields.push(field("ageing", shown.join(", ")));
            let args: Vec<String> = ageing
                .iter()
                .zip(AGEING)
                .map(|(v, (flag, _))| format!("{flag} {}", if v.is_empty() { "-1" } else { v }))
                .collect();
            steps.push(Step::new(format!("chage {} -- {n}", args.join(" ")), sudo));
        }
        _ => {}
    }
    (fields, steps, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceType::{Group, User};

    const HASH: &str = "$6$salt$abcdefghijklmnopqrstuvwxyz./0123456789";

    fn user(line: &str) -> Result<Entry, BadEntry> {
        parse(User, "deploy", line.as_bytes())
    }

    #[test]
    fn reads_a_shadow_entry_with_locked_and_empty_fields() {
        let e = user(&format!("deploy:{HASH}:19000:1:90:5:3:20500:\n")).unwrap();
        assert_eq!(e.password.as_str(), HASH);
        assert_eq!(e.rest, ["19000", "1", "90", "5", "3", "20500"]);
        assert_eq!(&*e.stdin("deploy"), format!("deploy:{HASH}\n").as_bytes());
        // Locked, disabled and empty passwords are kept as they are; empty ageing stays empty.
        for password in ["!", "*", "!*", "", &format!("!{HASH}")] {
            let e = user(&format!("deploy:{password}:::::::")).unwrap();
            assert_eq!(e.password.as_str(), password);
            assert_eq!(e.rest, ["", "", "", "", "", ""]);
        }
        assert_eq!(user("deploy:x:-1:0:99999:7:::").unwrap().rest[0], "-1");
    }

    #[test]
    fn refuses_a_hostile_shadow_entry_without_quoting_it() {
        let cases = [
            // A colon too many: where the hash ends cannot be known.
            (
                format!("deploy:{HASH}:extra:19000:1:90:5:3:20500:"),
                "10 fields, not 9",
            ),
            (format!("deploy:{HASH}:19000"), "3 fields, not 9"),
            (String::new(), "1 fields, not 9"),
            (
                format!("root:{HASH}:19000:1:90:5:3:20500:"),
                "names another account",
            ),
            (
                format!("deploy:{HASH}:19000:1:90:5:3:20500:\ndeploy:x:::::::"),
                "not one line",
            ),
            (
                format!("deploy:{HASH}:19000:1:90:5:3:$(reboot):"),
                "expire is not a number",
            ),
            (
                format!("deploy:{HASH}:-:1:90:5:3::"),
                "lastchg is not a number",
            ),
        ];
        for (line, why) in cases {
            let err = user(&line).err().unwrap().to_string();
            assert!(err.contains(why), "{line:?}: {err}");
            assert!(!err.contains("$6$"), "{err}");
        }
        assert_eq!(
            parse(User, "deploy", b"deploy:\xff:::::::").err(),
            Some(BadEntry::NotText("/etc/shadow"))
        );
    }

    #[test]
    fn reads_a_gshadow_entry() {
        let e = parse(
            Group,
            "ops",
            format!("ops:{HASH}:alice,bob:carol\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (e.password.as_str(), e.rest.clone()),
            (HASH, vec!["alice,bob".to_string()])
        );
        assert_eq!(parse(Group, "ops", b"ops:!::").unwrap().rest, [""]);
        for bad in [
            "ops:!:a,,b:",
            "ops:!:-rf:",
            "ops:!:a b:",
            "ops:!:a:b:c",
            "ops:!:a",
        ] {
            assert!(parse(Group, "ops", bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn restores_by_stdin_and_chage() {
        let ageing: Vec<String> = ["19000", "", "90", "5", "", "20500"]
            .map(String::from)
            .into();
        let sealed = Password::Sealed {
            blob: "b3",
            line: None,
        };
        let (fields, steps, last) = restore(User, "deploy", &ageing, sealed, true);
        assert_eq!(last, None);
        let scripts: Vec<&str> = steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "chpasswd -e",
                "chage -d 19000 -m -1 -M 90 -W 5 -I -1 -E 20500 -- deploy"
            ]
        );
        assert_eq!(
            (steps[0].stdin.as_deref(), steps[0].stdin_sealed),
            (Some("b3"), true)
        );
        assert!(steps.iter().all(|s| s.sudo));
        assert_eq!(
            fields[1].to.as_deref(),
            Some("lastchg 19000, min -, max 90, warn 5, inactive -, expire 20500")
        );
        // Not kept: no password step, and the plan says the account comes back locked.
        let (fields, steps, _) =
            restore(User, "deploy", &ageing, Password::NotKept("no vault"), true);
        assert_eq!(steps.len(), 1);
        assert_eq!(
            fields[0].to.as_deref(),
            Some("not kept (no vault): the account comes back locked")
        );
        // Unread: nothing but the note.
        let (fields, steps, _) = restore(User, "deploy", &[], Password::NotKept("unread"), true);
        assert_eq!((fields.len(), steps.len()), (1, 0));
        // A group: its password (its own line of a blob holding two), and last, once every
        // account the rollback re-creates exists, the administrators that exist by then.
        let sealed = Password::Sealed {
            blob: "b3",
            line: Some(2),
        };
        let (fields, steps, last) = restore(Group, "ops", &["alice,bob".into()], sealed, false);
        assert_eq!(fields.len(), 1);
        let scripts: Vec<&str> = steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "if getent group ops >/dev/null 2>&1; then sed -n 2p | chgpasswd -e; \
              else printf 'nexus: group %s was not re-created, so its password is not restored\\n' ops >&2; fi"
            ]
        );
        let last = last.expect("administrators");
        assert_eq!(last.fields[0].to.as_deref(), Some("alice,bob"));
        assert_eq!(
            last.steps[0].script,
            "a=; for x in alice bob; do if getent passwd \"$x\" >/dev/null 2>&1; then a=\"$a${a:+,}$x\"; fi; done; \
             if getent group ops >/dev/null 2>&1; then gpasswd -A \"$a\" ops; fi"
        );
        assert_eq!(
            last.undo[0].script,
            "if getent group ops >/dev/null 2>&1; then gpasswd -A '' ops; fi"
        );
        // No administrators: nothing to put back last.
        let (_, _, last) = restore(Group, "ops", &["".into()], Password::NotKept("x"), false);
        assert_eq!(last, None);
    }
}
