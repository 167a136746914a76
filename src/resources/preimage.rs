//! What a resource's state just before apply means for its type: the pre-image recorded for
//! `nexus rollback` (docs/rollback.md), from what apply's re-probe captured of it, and the
//! change that restores it.

use crate::plan::vocab::ResourceType;
use crate::plan::{Observed, PlannedResource};
use crate::secrets::Resolved;
use std::collections::BTreeMap;

use base64::Engine as _;

use super::file::{WriteContent, write_step};
use super::q;
use crate::plan::{Action, FieldChange, Step};
use crate::state::{Blob, Image, OwnGroup, Preimage, RunId, StateError, StateStore};
use crate::syntax::values::Mode;

/// The pre-image of `r` from what the re-probe observed and, for a file, its content. A content
/// that holds (or may hold) a secret is encrypted with the vault's content key, or not kept.
pub fn image(
    run: RunId,
    host: &str,
    seq: usize,
    r: &PlannedResource,
    observed: Option<&Observed>,
    content: Option<Vec<u8>>,
    secrets: &Resolved,
) -> (Preimage, Option<Blob>) {
    let mut blob = None;
    let irreversible = |reason: &str| Image::Irreversible {
        reason: reason.to_string(),
    };
    let attr = |o: &Observed, k: &str| o.get(k).unwrap_or_default().to_string();
    let image = match (r.kind, observed) {
        (ResourceType::File | ResourceType::Directory, None) => {
            irreversible("its state could not be probed")
        }
        (ResourceType::File | ResourceType::Directory, Some(o))
            if o.get("exists") == Some("false") =>
        {
            Image::Absent
        }
        (ResourceType::Directory, Some(o)) if o.get("type") == Some("directory") => {
            Image::Directory {
                owner: attr(o, "owner"),
                group: attr(o, "group"),
                mode: attr(o, "mode"),
            }
        }
        (ResourceType::File, Some(o)) if o.get("type") == Some("file") => match content {
            None => irreversible("its content could not be read, or is larger than 64 MiB"),
            Some(bytes) => {
                let sealed = r.probe_batch.as_ref().is_some_and(|b| b.sealed)
                    || secrets.recognises(&bytes)
                    || secrets.is_blind();
                let kept = match sealed {
                    false => Some(Blob::new(bytes, false)),
                    true => seal(&bytes, secrets),
                };
                match kept {
                    Some(b) => {
                        blob = Some(b);
                        Image::File {
                            owner: attr(o, "owner"),
                            group: attr(o, "group"),
                            mode: attr(o, "mode"),
                        }
                    }
                    None => irreversible("its content holds secrets and the vault is not open"),
                }
            }
        },
        (ResourceType::File | ResourceType::Directory, Some(o))
            if o.get("type") == Some("link") =>
        {
            match super::link_target_bytes(o).map(String::from_utf8) {
                Some(Ok(target)) if !target.is_empty() => Image::Link { target },
                _ => irreversible("it was a symbolic link whose target could not be read as text"),
            }
        }
        (ResourceType::File | ResourceType::Directory, Some(_)) => {
            irreversible("it was neither a regular file nor a directory")
        }
        (ResourceType::Service, Some(o)) if o.get("exists") == Some("true") => Image::Service {
            manager: super::service::manager_of(o),
            running: o.get("active") == Some("active"),
            enabled: o.get("enabled") == Some("enabled"),
        },
        (ResourceType::Service, _) => irreversible("the service did not exist"),
        (ResourceType::User | ResourceType::Group, Some(o)) => match o.get("exists") {
            Some("false") => Image::Absent,
            // Its undo step re-creates it from the plan's probe; the password is only here.
            _ if r.action == Action::Delete => {
                let (image, kept) = account(r, content.as_deref(), secrets);
                blob = kept;
                image
            }
            _ => Image::Existed,
        },
        // Packages carry their own undo (the versions before, from the plan's probe); one
        // without it is under a manager that cannot install an older version.
        (ResourceType::Package, _) => irreversible(
            "its package manager (pacman) cannot install the version it had before again",
        ),
        (kind, _) => irreversible(&format!(
            "nexus keeps no pre-image of a {} yet",
            kind.as_str()
        )),
    };
    let preimage = Preimage {
        run,
        host: host.to_string(),
        key: r.key.clone(),
        seq: seq as i64,
        resource_id: r.id.clone(),
        image,
        blob: blob.as_ref().map(|b| b.hash.clone()),
        fingerprint_after: None,
    };
    (preimage, blob)
}

/// `bytes` as a blob encrypted with the vault's content key; `None` when no vault is open. The
/// one way a pre-image keeps what holds a secret.
fn seal(bytes: &[u8], secrets: &Resolved) -> Option<Blob> {
    let key = secrets.content_key()?;
    key.encrypt(bytes).ok().map(|c| Blob::new(c, true))
}

/// The pre-image of the account `r` deletes, from its shadow entry as the capture sent it
/// (`None`: it could not be read), and the blob holding its password, sealed. Of a user whose
/// own group userdel removes with it, the capture sent that group's gshadow entry on a second
/// line (exec/preimage.rs): its password is sealed in the same blob, on the line before the
/// user's (each line as `chpasswd -e` or `chgpasswd -e` reads it), and the rest is kept as the
/// user's is.
fn account(r: &PlannedResource, entry: Option<&[u8]>, secrets: &Resolved) -> (Image, Option<Blob>) {
    let name = r.kind.subject_of(&r.id).unwrap_or_default();
    let (own, own_group) = match entry {
        None => (None, None),
        Some(e) => match (r.kind, e.iter().position(|b| *b == b'\n')) {
            (ResourceType::User, Some(at)) if at + 1 < e.len() => {
                (Some(&e[..=at]), Some(&e[at + 1..]))
            }
            _ => (Some(e), None),
        },
    };
    // An empty line: the entry could not be read.
    let read = |kind: ResourceType, line: Option<&[u8]>| match line
        .filter(|l| !l.iter().all(|b| *b == b'\n'))
    {
        None => Err(format!(
            "{} could not be read (that needs root), or has no entry for it",
            super::shadow::file(kind)
        )),
        Some(line) => super::shadow::parse(kind, name, line).map_err(|e| e.to_string()),
    };
    let own = read(r.kind, own);
    let own_group = own_group.map(|line| read(ResourceType::Group, Some(line)));
    let mut stdin = zeroize::Zeroizing::new(Vec::new());
    // The user's own line last: a nexus from before own groups were kept pipes the whole blob
    // to `chpasswd -e`, which takes the last line for the user, so it still restores the user's
    // hash, never the group's password field (`!`, or empty).
    for entry in own_group.iter().chain(std::iter::once(&own)).flatten() {
        stdin.extend_from_slice(&entry.stdin(name));
    }
    let blob = match stdin.is_empty() {
        true => None,
        false => seal(&stdin, secrets),
    };
    let not_kept = |entry: &Result<super::shadow::Entry, String>| match entry {
        Err(why) => Some(why.clone()),
        Ok(_) if blob.is_none() => Some("no vault is open to keep it encrypted".to_string()),
        Ok(_) => None,
    };
    let rest = |entry: &Result<super::shadow::Entry, String>| match entry {
        Ok(e) => e.rest.clone(),
        Err(_) => Vec::new(),
    };
    let image = Image::Account {
        shadow: rest(&own),
        password_not_kept: not_kept(&own),
        own_group: own_group.as_ref().map(|g| OwnGroup {
            shadow: rest(g),
            password_not_kept: not_kept(g),
        }),
    };
    (image, blob)
}

/// Puts a stored content into the rollback plan's `blobs` (as stored: ciphertext when sealed),
/// under the blake3 its step's stdin names; returns that.
fn carry(blob: &Blob, blobs: &mut BTreeMap<String, String>) -> String {
    let hash = blake3::hash(&blob.data).to_hex().to_string();
    blobs.insert(
        hash.clone(),
        base64::engine::general_purpose::STANDARD.encode(&blob.data),
    );
    hash
}

/// How the change `changed` is undone by its own undo steps, with what its pre-image `image`
/// adds: a deleted account's shadow entry (and a user's own group's, which userdel removed with
/// it), put back after the account is re-created; a group's administrators last.
pub fn undo(
    store: &dyn StateStore,
    image: &Preimage,
    changed: &PlannedResource,
    blobs: &mut BTreeMap<String, String>,
) -> Result<Result<Restore, Unrestorable>, StateError> {
    let mut restore = Restore {
        action: Action::Run,
        fields: Vec::new(),
        steps: changed.undo.clone(),
        last: Vec::new(),
    };
    let (
        Image::Account {
            shadow,
            password_not_kept,
            own_group,
        },
        Some(name),
    ) = (&image.image, changed.kind.subject_of(&changed.id))
    else {
        return Ok(Ok(restore));
    };
    // The blob holds the passwords kept, one a line when there are two: the own group's, then
    // the account's ([`account`]).
    let own_group_kept = own_group
        .as_ref()
        .is_some_and(|g| g.password_not_kept.is_none());
    let lines = usize::from(password_not_kept.is_none()) + usize::from(own_group_kept);
    let sealed = match (lines, &image.blob) {
        (0, _) => String::new(),
        (_, None) => return Ok(Err(Unrestorable::ContentNotKept)),
        (_, Some(hash)) => {
            let Some(blob) = store.blob(hash)? else {
                return Ok(Err(Unrestorable::ContentPruned));
            };
            carry(&blob, blobs)
        }
    };
    fn password<'a>(
        not_kept: &'a Option<String>,
        blob: &'a str,
        line: Option<usize>,
    ) -> super::shadow::Password<'a> {
        match not_kept {
            Some(why) => super::shadow::Password::NotKept(why),
            None => super::shadow::Password::Sealed { blob, line },
        }
    }
    let line = |n: usize| (lines > 1).then_some(n);
    let sudo = changed.undo.first().is_some_and(|s| s.sudo);
    let (fields, steps, last) = super::shadow::restore(
        changed.kind,
        name,
        shadow,
        password(password_not_kept, &sealed, line(lines)),
        sudo,
    );
    restore.fields = fields;
    restore.steps.extend(steps);
    restore.last.extend(last);
    if let Some(group) = own_group {
        // Re-created by the user's undo step (resources/user.rs), before what follows.
        let (fields, steps, last) = super::shadow::restore(
            ResourceType::Group,
            name,
            &group.shadow,
            password(&group.password_not_kept, &sealed, line(1)),
            sudo,
        );
        let own = |mut f: FieldChange| {
            f.field = format!("own group's {}", f.field);
            f
        };
        restore.fields.extend(fields.into_iter().map(own));
        restore.steps.extend(steps);
        restore.last.extend(last.map(|mut l| {
            l.fields = l.fields.into_iter().map(own).collect();
            l
        }));
    }
    Ok(Ok(restore))
}

/// Whether one resource's changes by consecutive runs (`changes`, oldest first), each undone by
/// its own undo steps, are all undone by the oldest one's alone: only for a type whose undo puts
/// back an absolute state (`package`: the versions installed before, pinned), where that provably
/// leaves what undoing each, newest first, would. The undo of `command`, `user` and `group` knows
/// only the state its own run found: each runs.
pub fn oldest_undo_suffices(changes: &[&PlannedResource]) -> bool {
    match changes.first().map(|r| r.kind) {
        Some(ResourceType::Package) => super::package::oldest_undo_suffices(changes),
        _ => false,
    }
}

/// Whether a change of type `kind` that a rollback undid by restoring its pre-image is redone by
/// its own forward steps, as a rollback of that rollback does: a `user`'s or `group`'s (only a
/// creation is undone so, and its step needs nothing but the plan). The pre-image that rollback's
/// apply captures says only that the account existed, not how to make it again. Other types'
/// steps may carry contents the rollback plan does not hold: their pre-images are restored.
pub fn redone_by_its_steps(kind: ResourceType) -> bool {
    matches!(kind, ResourceType::User | ResourceType::Group)
}

/// Why a resource cannot be restored (listed as irreversible).
#[derive(Debug, thiserror::Error)]
pub enum Unrestorable {
    /// Why the pre-image could not be kept, as recorded when it was captured.
    #[error("{0}")]
    Recorded(String),
    #[error("nexus keeps no pre-image of a {}", .0.as_str())]
    NoImage(ResourceType),
    #[error(
        "the {} existed before, and a run that changed it was planned by a nexus that recorded no undo for it",
        .0.as_str()
    )]
    NoUndo(ResourceType),
    #[error("its content was not kept")]
    ContentNotKept,
    #[error("its content is no longer stored (pruned by `nexus state gc`)")]
    ContentPruned,
    #[error("its recorded mode {0:?} is not octal")]
    Mode(String),
    #[error("its pre-image ({image}) does not fit a {}", .kind.as_str())]
    Mismatch { image: String, kind: ResourceType },
}

/// How one resource is restored.
pub struct Restore {
    pub action: Action,
    pub fields: Vec<FieldChange>,
    pub steps: Vec<Step>,
    /// What is put back only once every account the rollback re-creates exists (a group's
    /// administrators): the rollback plan's last entries of the host, for this resource.
    pub last: Vec<super::shadow::Last>,
}

/// The restoration of `image` for the resource `changed` (as the run that captured it planned
/// it); the reason it cannot be restored as `Err` inside.
pub fn restore(
    store: &dyn StateStore,
    image: &Preimage,
    changed: &PlannedResource,
    blobs: &mut BTreeMap<String, String>,
) -> Result<Result<Restore, Unrestorable>, StateError> {
    let sudo = changed.steps.first().is_some_and(|s| s.sudo);
    let path = match changed.kind {
        ResourceType::File
        | ResourceType::Directory
        | ResourceType::Service
        | ResourceType::User
        | ResourceType::Group => changed.kind.subject_of(&changed.id),
        _ => None,
    };
    let (Some(path), image_state) = (path, &image.image) else {
        return Ok(Err(match &image.image {
            Image::Irreversible { reason } => Unrestorable::Recorded(reason.clone()),
            _ => Unrestorable::NoImage(changed.kind),
        }));
    };
    let field = |name: &str, to: String| FieldChange::new(name, None, Some(&to));
    let restore = match (changed.kind, image_state) {
        (_, Image::Irreversible { reason }) => {
            return Ok(Err(Unrestorable::Recorded(reason.clone())));
        }
        (
            ResourceType::Service,
            Image::Service {
                manager,
                running,
                enabled,
            },
        ) => Restore {
            last: Vec::new(),
            action: Action::Update,
            fields: vec![
                field("running", running.to_string()),
                field("enabled", enabled.to_string()),
            ],
            steps: super::service::restore_steps(path, *manager, *running, *enabled, sudo),
        },
        // The account is removed, not its home: files in it may be someone's work since.
        (ResourceType::User, Image::Absent) => Restore {
            last: Vec::new(),
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            // Only if it is there: a later run of the same rollback may have removed it already.
            steps: vec![Step::new(
                format!(
                    "if getent passwd {p} >/dev/null 2>&1; then userdel -- {p}; fi",
                    p = q(path)
                ),
                sudo,
            )],
        },
        (ResourceType::Group, Image::Absent) => Restore {
            last: Vec::new(),
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            steps: vec![Step::new(
                format!(
                    "if getent group {p} >/dev/null 2>&1; then groupdel -- {p}; fi",
                    p = q(path)
                ),
                sudo,
            )],
        },
        // Since the undo steps (resources/user.rs, group.rs): only a run planned without them.
        (ResourceType::User | ResourceType::Group, Image::Existed | Image::Account { .. }) => {
            return Ok(Err(Unrestorable::NoUndo(changed.kind)));
        }
        // What the run put in the link's place goes (a directory only if empty: what else is in
        // it was not put there by the run), then the link comes back.
        (ResourceType::File | ResourceType::Directory, Image::Link { target }) => Restore {
            last: Vec::new(),
            action: Action::Update,
            fields: vec![field("type", format!("symlink -> {target}"))],
            steps: vec![Step::new(
                format!(
                    "{} && ln -s -- {} {p}",
                    match changed.kind {
                        // A later run may have removed the directory already.
                        ResourceType::Directory => format!(
                            "if [ -d {p} ] && [ ! -L {p} ]; then rmdir -- {p}; else rm -f -- {p}; fi",
                            p = q(path)
                        ),
                        _ => format!("rm -f -- {}", q(path)),
                    },
                    q(target),
                    p = q(path)
                ),
                sudo,
            )],
        },
        (ResourceType::File, Image::Absent) => Restore {
            last: Vec::new(),
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            steps: vec![Step::new(format!("rm -f -- {}", q(path)), sudo)],
        },
        (ResourceType::Directory, Image::Absent) => Restore {
            last: Vec::new(),
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            // Only an empty directory: whatever else is in it was not put there by the run.
            steps: vec![Step::new(format!("rmdir -- {}", q(path)), sudo)],
        },
        (ResourceType::Directory, Image::Directory { owner, group, mode }) => Restore {
            last: Vec::new(),
            action: Action::Update,
            fields: vec![
                field("owner", owner.clone()),
                field("group", group.clone()),
                field("mode", mode.clone()),
            ],
            steps: vec![Step::new(
                format!(
                    "chown -- {} {p} && chmod -- {} {p}",
                    q(&format!("{owner}:{group}")),
                    q(mode),
                    p = q(path)
                ),
                sudo,
            )],
        },
        (ResourceType::File, Image::File { owner, group, mode }) => {
            let Some(hash) = &image.blob else {
                return Ok(Err(Unrestorable::ContentNotKept));
            };
            let Some(blob) = store.blob(hash)? else {
                return Ok(Err(Unrestorable::ContentPruned));
            };
            let Ok(mode) = u32::from_str_radix(mode, 8) else {
                return Ok(Err(Unrestorable::Mode(mode.clone())));
            };
            let content = match blob.sealed {
                false => WriteContent::Bytes(&blob.data),
                true => WriteContent::WithSecrets {
                    blob: &blob.data,
                    names: &[],
                },
            };
            let mut step = write_step(
                path,
                content,
                Some(owner),
                Some(group),
                Some(Mode(mode)),
                super::file::Over::File { backup_to: None },
                sudo,
            );
            step.stdin_sealed = blob.sealed;
            carry(&blob, blobs);
            let content = match blob.sealed {
                true => "as before (holds secrets)".to_string(),
                false => format!(
                    "as before (sha256:{})",
                    &crate::plan::file_write::sha256_hex(&blob.data)[..12]
                ),
            };
            Restore {
                last: Vec::new(),
                action: Action::Update,
                fields: vec![
                    field("content", content),
                    field("owner", owner.clone()),
                    field("group", group.clone()),
                    field("mode", Mode(mode).to_string()),
                ],
                steps: vec![step],
            }
        }
        (_, other) => {
            return Ok(Err(Unrestorable::Mismatch {
                image: format!("{other:?}"),
                kind: changed.kind,
            }));
        }
    };
    Ok(Ok(restore))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted_user() -> PlannedResource {
        PlannedResource {
            action: Action::Delete,
            steps: vec![Step::new("userdel -- deploy", true)],
            undo: vec![Step::new("useradd -u 1500 -M -- deploy", true)],
            ..PlannedResource::example(ResourceType::User, "deploy")
        }
    }

    /// A deleted user's password is kept only encrypted; without a vault, or without its
    /// entry, it is not kept and the rollback says the account comes back locked.
    #[test]
    fn a_deleted_accounts_password_is_kept_only_sealed() {
        let hash = "$6$salt$secret-hash-value";
        let entry = format!("deploy:{hash}:19000:0:99999:7:::\n");
        let o = Observed::parse("exists=true\nuid=1500").unwrap();
        let r = deleted_user();
        let image_of = |entry: Option<&str>, secrets: &Resolved| {
            image(
                RunId(1),
                "h",
                0,
                &r,
                Some(&o),
                entry.map(|e| e.as_bytes().to_vec()),
                secrets,
            )
        };
        let vault = Resolved::from_pairs(&[], [7; 32]);
        let (p, blob) = image_of(Some(&entry), &vault);
        let blob = blob.expect("kept");
        assert!(blob.sealed);
        assert!(!blob.data.windows(hash.len()).any(|w| w == hash.as_bytes()));
        let plain = vault.content_key().unwrap().decrypt(&blob.data).unwrap();
        assert_eq!(&*plain, format!("deploy:{hash}\n").as_bytes());
        assert_eq!(p.blob.as_deref(), Some(blob.hash.as_str()));
        assert_eq!(
            p.image,
            Image::Account {
                shadow: ["19000", "0", "99999", "7", "", ""]
                    .map(String::from)
                    .into(),
                password_not_kept: None,
                own_group: None,
            }
        );
        // (Its restoration, sealed on stdin, is tests/rollback.rs's against a real host.)
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::open(&dir.path().join("state.db")).unwrap();
        let cases = [
            (
                Some(entry.as_str()),
                Resolved::default(),
                "no vault is open",
            ),
            (None, vault, "/etc/shadow could not be read"),
        ];
        for (entry, secrets, why) in cases {
            let (p, blob) = image_of(entry, &secrets);
            assert!(blob.is_none());
            let Image::Account {
                password_not_kept: Some(reason),
                ..
            } = &p.image
            else {
                panic!("{p:?}");
            };
            assert!(reason.contains(why), "{reason}");
            let restored = undo(&store, &p, &r, &mut BTreeMap::new()).unwrap().unwrap();
            let shown = &restored.fields[0];
            assert!(
                shown
                    .to
                    .as_deref()
                    .unwrap()
                    .ends_with("the account comes back locked"),
                "{shown:?}"
            );
            assert_eq!(restored.steps[0].script, "useradd -u 1500 -M -- deploy");
            assert!(restored.steps.iter().all(|s| !s.stdin_sealed));
        }
    }

    /// A user whose own group userdel removes with it: the capture sends the group's gshadow
    /// entry on a second line. Both passwords are sealed in one blob, one a line, and each
    /// restoring step reads its own line; the group's administrators come back last. Without a
    /// vault neither password is kept; a group line that is empty (unreadable) keeps nothing of
    /// the group, and the user's own entry is read as before.
    #[test]
    fn a_deleted_users_own_group_is_kept_with_it() {
        let (user_hash, group_hash) = ("$6$salt$user-hash", "$6$salt$group-hash");
        let entry =
            format!("deploy:{user_hash}:19000:0:99999:7:::\ndeploy:{group_hash}:alice,bob:\n");
        let o = Observed::parse("exists=true\nuid=1500").unwrap();
        let r = deleted_user();
        let image_of = |entry: &str, secrets: &Resolved| {
            image(
                RunId(1),
                "h",
                0,
                &r,
                Some(&o),
                Some(entry.as_bytes().to_vec()),
                secrets,
            )
        };
        let vault = Resolved::from_pairs(&[], [7; 32]);
        let opened = |blob: Option<Blob>| {
            let blob = blob.expect("kept");
            assert!(blob.sealed);
            let plain = vault.content_key().unwrap().decrypt(&blob.data).unwrap();
            String::from_utf8(plain.to_vec()).unwrap()
        };
        // Why the user's password was not kept, and what was kept of its own group.
        let parts = |p: &Preimage| match &p.image {
            Image::Account {
                password_not_kept,
                own_group: Some(group),
                ..
            } => (password_not_kept.clone(), group.clone()),
            other => panic!("{other:?}"),
        };
        let (p, blob) = image_of(&entry, &vault);
        assert_eq!(
            opened(blob.clone()),
            format!("deploy:{group_hash}\ndeploy:{user_hash}\n"),
            "the user's line last: an older nexus pipes the whole blob to chpasswd, whose last line wins"
        );
        let blob = blob.unwrap();
        let (user, group) = parts(&p);
        assert_eq!(user, None);
        assert_eq!(
            group,
            OwnGroup {
                shadow: vec!["alice,bob".into()],
                password_not_kept: None
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::open(&dir.path().join("state.db")).unwrap();
        let run = store
            .begin_run(&crate::state::NewRun {
                plan_hash: "p".into(),
                config: "nexus.kdl".into(),
                kind: crate::state::RunKind::Apply,
                tasks: Vec::new(),
                hosts: vec!["h".into()],
                started_at: 0,
                signer: None,
            })
            .unwrap();
        let generation = crate::state::NewGeneration {
            plan: "{}".into(),
            rollback_of: None,
            preimages: Vec::new(),
            blobs: vec![blob.clone()],
        };
        store.record_generation(run, &generation).unwrap();
        let mut blobs = BTreeMap::new();
        let restored = undo(&store, &p, &r, &mut blobs).unwrap().unwrap();
        let scripts: Vec<&str> = restored.steps.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "useradd -u 1500 -M -- deploy",
                "sed -n 2p | chpasswd -e",
                "chage -d 19000 -m 0 -M 99999 -W 7 -I -1 -E -1 -- deploy",
                "if getent group deploy >/dev/null 2>&1; then sed -n 1p | chgpasswd -e; \
                 else printf 'nexus: group %s was not re-created, so its password is not restored\\n' deploy >&2; fi",
            ]
        );
        assert!(restored.steps[1].stdin_sealed && restored.steps[3].stdin_sealed);
        assert_eq!(restored.steps[3].stdin.as_deref(), Some(blob.hash.as_str()));
        assert!(blobs.contains_key(&blob.hash));
        let fields: Vec<&str> = restored.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["password", "ageing", "own group's password"]);
        let [last] = restored.last.as_slice() else {
            panic!("one last entry");
        };
        assert_eq!(last.fields[0].field, "own group's administrators");
        assert!(
            last.steps[0]
                .script
                .ends_with("then gpasswd -A \"$a\" deploy; fi")
        );

        // Without a vault: neither password is kept, the administrators are.
        let (p, blob) = image_of(&entry, &Resolved::default());
        assert!(blob.is_none());
        let (user, group) = parts(&p);
        assert!(user.is_some());
        assert_eq!(
            group.password_not_kept.as_deref(),
            Some("no vault is open to keep it encrypted")
        );
        let restored = undo(&store, &p, &r, &mut BTreeMap::new()).unwrap().unwrap();
        assert_eq!(restored.steps.len(), 2, "useradd and chage only");
        assert_eq!(restored.last.len(), 1);

        // The group's entry unreadable: only the user's password is kept, read by `chpasswd -e`
        // alone; nothing of the group but why.
        let (p, blob) = image_of(
            &format!("deploy:{user_hash}:19000:0:99999:7:::\n\n"),
            &vault,
        );
        assert_eq!(opened(blob), format!("deploy:{user_hash}\n"));
        let (user, group) = parts(&p);
        assert_eq!(user, None);
        assert!(group.shadow.is_empty());
        assert!(
            group
                .password_not_kept
                .as_deref()
                .unwrap()
                .starts_with("/etc/gshadow could not be read")
        );
    }
}
