//! Which resource types exist, and what every type's node shares: its presence, its ownership
//! options, and what it reads besides its configuration. Each type reads the rest of its node in
//! its own module (`parse`), next to how it resolves, probes and plans.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{command, directory, download, file, group, package, service, upload, user, wait_for};
use crate::plan::vocab::{ResourceType, Value};
use crate::syntax::diagnostic::Spanned;
use crate::syntax::fields::{FileCtx, account_name};
use crate::syntax::reader::{Cx, NodeR};
use crate::syntax::values::Mode;

/// Resource node names accepted inside `task`, `handler` and `health-check` blocks, in the order
/// the docs present them.
pub const NAMES: &[&str] = &[
    "package",
    "service",
    "file",
    "directory",
    "user",
    "group",
    "command",
    "upload",
    "download",
    "wait-for",
];

/// A resource as configured, of any type.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ResourceKind {
    Package(package::Spec),
    Service(service::Spec),
    File(file::Spec),
    Directory(directory::Spec),
    User(user::Spec),
    Group(group::Spec),
    Command(command::Spec),
    Upload(upload::Spec),
    Download(download::Spec),
    WaitFor(wait_for::Spec),
}

/// Reads a resource node of type `name` (one of [`NAMES`]), whose common options the caller has
/// read. `timeout` is the common option, which `wait-for` takes as its deadline.
pub fn parse(
    name: &str,
    cx: &mut Cx,
    fc: &FileCtx<'_>,
    r: &mut NodeR<'_>,
    timeout: Option<Duration>,
) -> Option<ResourceKind> {
    Some(match name {
        "package" => ResourceKind::Package(package::parse(cx, r)?),
        "service" => ResourceKind::Service(service::parse(cx, r)?),
        "file" => ResourceKind::File(file::parse(cx, fc, r)?),
        "directory" => ResourceKind::Directory(directory::parse(cx, r)?),
        "user" => ResourceKind::User(user::parse(cx, r)?),
        "group" => ResourceKind::Group(group::parse(cx, r)?),
        "command" => ResourceKind::Command(command::parse(cx, r)?),
        "upload" => ResourceKind::Upload(upload::parse(cx, fc, r)?),
        "download" => ResourceKind::Download(download::parse(cx, r)?),
        "wait-for" => ResourceKind::WaitFor(wait_for::parse(cx, r, timeout)?),
        _ => return None,
    })
}

/// What a resource reads besides its configuration, gathered once before planning by
/// `app::inputs::collect` so that planning stays pure.
#[derive(Debug, Default)]
pub struct InputNeeds<'a> {
    /// Local files, each with the size above which it is refused (a template is held whole as
    /// text). `None`: copied byte for byte, whatever its size; a large one is pinned by its
    /// digest and streamed when applying (see [`crate::plan::STREAM_OVER`]).
    pub files: Vec<(&'a Path, Option<u64>)>,
    /// Values resolved for the resource, any of which may name an environment variable.
    pub values: Vec<&'a Value>,
    /// The values among them a file's content may hold: a secret there is read at plan time, so
    /// that contents are compared.
    pub content_values: Vec<&'a Value>,
    /// Remote contents, with the blake3 the configuration pins.
    pub urls: Vec<(&'a str, Option<&'a str>)>,
}

impl ResourceKind {
    /// See [`InputNeeds`].
    pub fn input_needs(&self) -> InputNeeds<'_> {
        let mut needs = InputNeeds::default();
        match self {
            ResourceKind::File(f) => f.input_needs(&mut needs),
            ResourceKind::Upload(u) => u.input_needs(&mut needs),
            ResourceKind::Command(c) => c.input_needs(&mut needs),
            ResourceKind::Package(_)
            | ResourceKind::Service(_)
            | ResourceKind::Directory(_)
            | ResourceKind::User(_)
            | ResourceKind::Group(_)
            | ResourceKind::Download(_)
            | ResourceKind::WaitFor(_) => {}
        }
        needs
    }

    pub fn type_name(&self) -> &'static str {
        self.resource_type().as_str()
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceKind::Package(_) => ResourceType::Package,
            ResourceKind::Service(_) => ResourceType::Service,
            ResourceKind::File(_) => ResourceType::File,
            ResourceKind::Directory(_) => ResourceType::Directory,
            ResourceKind::User(_) => ResourceType::User,
            ResourceKind::Group(_) => ResourceType::Group,
            ResourceKind::Command(_) => ResourceType::Command,
            ResourceKind::Upload(_) => ResourceType::Upload,
            ResourceKind::Download(_) => ResourceType::Download,
            ResourceKind::WaitFor(_) => ResourceType::WaitFor,
        }
    }
}

/// Whether a file, directory, user or group should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

const PRESENCE: &[&str] = &["present", "absent"];

pub(super) fn presence(cx: &mut Cx, r: &mut NodeR<'_>) -> Presence {
    match r.choice(cx, "state", PRESENCE).map(|s| *s) {
        Some("absent") => Presence::Absent,
        _ => Presence::Present,
    }
}

/// `owner`, `group` and `mode`, as files, directories and uploads take them.
pub(super) fn ownership(
    cx: &mut Cx,
    r: &mut NodeR<'_>,
) -> (Option<String>, Option<String>, Option<Mode>) {
    let owner = r.str(cx, "owner").and_then(|s| owner_name(cx, s, "owner"));
    let group = r.str(cx, "group").and_then(|s| owner_name(cx, s, "group"));
    let mode = r.mode(cx, "mode");
    (owner, group, mode)
}

/// Owners may be names or numeric ids.
pub(super) fn owner_name(cx: &mut Cx, s: Spanned<String>, what: &str) -> Option<String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Some(s.value);
    }
    account_name(cx, s, what)
}
