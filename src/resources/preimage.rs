//! What a resource's state just before apply means for its type: the pre-image recorded for
//! `nexus rollback` (docs/rollback.md), from what apply's re-probe captured of it.

use crate::config::ResourceType;
use crate::plan::{Observed, PlannedResource};
use crate::secrets::Resolved;
use crate::state::{Blob, Image, Preimage, RunId};

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
                let kept = match (sealed, secrets.content_key()) {
                    (false, _) => Some(Blob::new(bytes, false)),
                    (true, Some(key)) => key.encrypt(&bytes).ok().map(|c| Blob::new(c, true)),
                    (true, None) => None,
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
