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
use crate::state::{Blob, Image, Preimage, RunId, StateError, StateStore};
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
/// (`None`: it could not be read), and the blob holding its password, sealed.
fn account(r: &PlannedResource, entry: Option<&[u8]>, secrets: &Resolved) -> (Image, Option<Blob>) {
    let name = r.kind.subject_of(&r.id).unwrap_or_default();
    let not_kept = |why: String| Image::Account {
        shadow: Vec::new(),
        password_not_kept: Some(why),
    };
    let entry = match entry.map(|e| super::shadow::parse(r.kind, name, e)) {
        None => {
            let file = super::shadow::file(r.kind);
            return (
                not_kept(format!(
                    "{file} could not be read (that needs root), or has no entry for it"
                )),
                None,
            );
        }
        Some(Err(e)) => return (not_kept(e.to_string()), None),
        Some(Ok(entry)) => entry,
    };
    let blob = seal(&entry.stdin(name), secrets);
    let image = Image::Account {
        shadow: entry.rest,
        password_not_kept: blob
            .is_none()
            .then(|| "no vault is open to keep it encrypted".to_string()),
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
/// adds: a deleted account's shadow entry, put back after the account is re-created.
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
    };
    let (
        Image::Account {
            shadow,
            password_not_kept,
        },
        Some(name),
    ) = (&image.image, changed.kind.subject_of(&changed.id))
    else {
        return Ok(Ok(restore));
    };
    let sealed;
    let password = match (password_not_kept, &image.blob) {
        (Some(why), _) => super::shadow::Password::NotKept(why),
        (None, None) => return Ok(Err(Unrestorable::ContentNotKept)),
        (None, Some(hash)) => {
            let Some(blob) = store.blob(hash)? else {
                return Ok(Err(Unrestorable::ContentPruned));
            };
            sealed = carry(&blob, blobs);
            super::shadow::Password::Sealed(&sealed)
        }
    };
    let sudo = changed.undo.first().is_some_and(|s| s.sudo);
    let (fields, steps) = super::shadow::restore(changed.kind, name, shadow, password, sudo);
    restore.fields = fields;
    restore.steps.extend(steps);
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
            action: Action::Update,
            fields: vec![
                field("running", running.to_string()),
                field("enabled", enabled.to_string()),
            ],
            steps: super::service::restore_steps(path, *manager, *running, *enabled, sudo),
        },
        // The account is removed, not its home: files in it may be someone's work since.
        (ResourceType::User, Image::Absent) => Restore {
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
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            steps: vec![Step::new(format!("rm -f -- {}", q(path)), sudo)],
        },
        (ResourceType::Directory, Image::Absent) => Restore {
            action: Action::Delete,
            fields: vec![field("exists", "false".into())],
            // Only an empty directory: whatever else is in it was not put there by the run.
            steps: vec![Step::new(format!("rmdir -- {}", q(path)), sudo)],
        },
        (ResourceType::Directory, Image::Directory { owner, group, mode }) => Restore {
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
                password_not_kept: None
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
}
