//! Generations and pre-images: what `nexus rollback` restores (docs/rollback.md).
//!
//! Every apply records, before it executes, the plan it executes and, for each resource it is
//! about to change, the resource's pre-image: what the host had before. Contents are stored once
//! by hash in `blobs`; a content that holds a secret only ever as AES-256-GCM ciphertext under
//! the vault key. After the run, the resources it changed get the fingerprint the host then
//! showed: a rollback plan is stale-checked against it, so a host that drifted since is refused.

use serde::{Deserialize, Serialize};

use super::RunId;

/// What a resource was on a host before a run changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Image {
    /// Nothing was at the path.
    Absent,
    /// A regular file; its content is the pre-image's blob.
    File {
        owner: String,
        group: String,
        mode: String,
    },
    Directory {
        owner: String,
        group: String,
        mode: String,
    },
    /// A service: whether it was running and enabled, and under which init system.
    Service {
        manager: crate::facts::Init,
        running: bool,
        enabled: bool,
    },
    /// A symbolic link (where a `file` or `directory` now is) and its target.
    Link { target: String },
    /// A user or group that existed: its changes carry undo steps with the old attributes.
    Existed,
    /// A user or group that the run deleted (its undo step re-creates it), with what apply read
    /// of its shadow entry (/etc/shadow, /etc/gshadow) for the rollback to put back
    /// (`resources::shadow`). The password is only ever in the pre-image's blob, encrypted.
    Account {
        /// The entry's fields that hold no secret: a user's ageing fields, a group's
        /// administrators. Empty when the entry could not be read.
        shadow: Vec<String>,
        /// Why the password was not kept (the account then comes back locked); `None` when
        /// the blob holds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_not_kept: Option<String>,
        /// Of a user whose own group `userdel` removed with it (as exec/preimage.rs's
        /// `own_group_taken` decides): what apply read of that group's /etc/gshadow entry. Its
        /// password, when kept, is in the same blob, on the line before the user's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        own_group: Option<OwnGroup>,
    },
    /// The pre-image could not be kept; the reason says why (listed as irreversible).
    Irreversible { reason: String },
}

/// What a deleted user's pre-image keeps of the /etc/gshadow entry of its own group, which
/// `userdel` removed with it: as [`Image::Account`] keeps the account's own entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnGroup {
    /// Its administrators, comma-joined as one element (empty: none); no element when its
    /// entry could not be read.
    pub shadow: Vec<String>,
    /// Why its password was not kept (the group then comes back locked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_not_kept: Option<String>,
}

/// One resource's pre-image, as recorded for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preimage {
    pub run: RunId,
    pub host: String,
    /// The key of the resource in the run's plan.
    pub key: String,
    /// Its place among the host's resources in that plan.
    pub seq: i64,
    pub resource_id: String,
    pub image: Image,
    /// The hash of its content in the blob store.
    pub blob: Option<String>,
    /// The fingerprint the host showed after the run changed the resource; `None` while the run
    /// has not changed it (or failed to).
    pub fingerprint_after: Option<String>,
}

/// Content kept for a pre-image.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// blake3 of `data` (as stored: of the ciphertext when sealed).
    pub hash: String,
    /// `data` is AES-256-GCM ciphertext under the vault key.
    pub sealed: bool,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(data: Vec<u8>, sealed: bool) -> Blob {
        Blob {
            hash: blake3::hash(&data).to_hex().to_string(),
            sealed,
            data,
        }
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("hash", &self.hash)
            .field("sealed", &self.sealed)
            .field("len", &self.data.len())
            .finish()
    }
}

/// What an apply records before it executes.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// The plan's JSON.
    pub plan: String,
    /// The run a rollback plan restores (it is then recorded as a rollback).
    pub rollback_of: Option<RunId>,
    pub preimages: Vec<Preimage>,
    pub blobs: Vec<Blob>,
}

/// A run's recorded plan.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub run: RunId,
    pub plan: String,
    pub rollback_of: Option<RunId>,
}
