//! The plan file (`plan.lock`): a one-line JSON header, then the plan as canonical JSON.
//!
//! ```text
//! {"format":"nexus-plan","format_version":"1.2","blake3":"<hex>","id":"<plan-file id>"}\n
//! <the Plan as compact JSON>\n
//! ```
//!
//! From format 1.2 the hash covers the header's `id`, a newline, then every byte after the
//! header's newline, so a reader detects any edit or truncation of the body or the id before it
//! trusts a single field. The body is `serde_json::to_vec` of [`Plan`]: struct fields in
//! declaration order, maps are `BTreeMap`s, no timestamps, so the same plan always encodes to the
//! same bytes. See docs/plan-format.md.
//!
//! Decoding is meant for files that came from anywhere (a CI artifact, an edited copy): it never
//! panics, refuses another major version, and checks that the plan is internally consistent
//! before returning it. What it returns can always be shown; [`PlanFile::applicable`] says
//! whether this nexus may apply it: only a plan of exactly its own version, whose header and body
//! are byte for byte what this nexus writes (so no field was dropped unread).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::Action;
use super::diff_check;
use super::model::{FORMAT_VERSION, Plan, Role, Summary};

/// The `format` value of the header line.
pub const FORMAT_NAME: &str = "nexus-plan";

/// The first minor version (of major 1) whose hash covers the header's `id`.
const ID_HASHED_SINCE: u64 = 2;

/// Name used in error messages when decoding bytes that did not come from a named file.
const UNNAMED: &str = "plan";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockfileError {
    #[error("cannot read plan file {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("cannot write plan file {file}: {reason}")]
    Write { file: String, reason: String },
    /// The header line is missing or is not a nexus plan header.
    #[error("{file} is not a nexus plan file: {reason}")]
    NotAPlan { file: String, reason: String },
    /// A major version this nexus does not read.
    #[error(
        "{file} has plan format version {found}, but this nexus reads version {supported}; \
         use the nexus version that wrote the plan, or plan again with this one"
    )]
    UnsupportedVersion {
        file: String,
        found: String,
        supported: String,
    },
    /// A newer minor version: its fields this nexus does not know could change what applying
    /// means, so it can show the plan but not apply it.
    #[error(
        "{file} has plan format version {found}, newer than this nexus's {supported}: it may hold \
         fields this nexus does not understand; apply it with a nexus that reads {found}, or plan \
         again with this one"
    )]
    NewerVersion {
        file: String,
        found: String,
        supported: String,
    },
    /// An older minor version whose hash does not cover its id: a replay could not be told.
    #[error(
        "{file} has plan format version {found}, whose hash does not cover the plan file's id, so \
         apply could not tell whether it already ran; plan again with this nexus (`nexus plan -o FILE`)"
    )]
    Unprotected { file: String, found: String },
    /// The hash is consistent but the bytes are not what this nexus writes for that plan: a field
    /// it does not know, or a header or body rewritten by another program.
    #[error(
        "{file} is not as nexus writes it: {reason}; make a new plan with `nexus plan -o FILE` \
         instead of editing one"
    )]
    NotCanonical { file: String, reason: String },
    /// The content does not hash to what the header says: edited, truncated or corrupted.
    #[error(
        "{file} was modified or truncated after it was written: its content hashes to {actual}, \
         the header records {expected}; make a new plan with `nexus plan -o FILE` instead of editing one"
    )]
    Tampered {
        file: String,
        expected: String,
        actual: String,
    },
    /// The body is intact but not a usable plan (a bug in whatever wrote it).
    #[error("{file} is not a valid plan: {reason}")]
    Invalid { file: String, reason: String },
}

/// The header line, fields in the order nexus writes them.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: String,
    blake3: String,
    /// Identifies one `nexus plan -o` invocation: apply's replay protection keys on the plan's
    /// hash and this id, so a plan file runs once while a fresh plan of an unchanged world (same
    /// body, new id) can still apply. The hash covers it (1.2), so editing it is tampering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// The body: canonical JSON of the plan followed by one newline.
fn body(plan: &Plan) -> Vec<u8> {
    // Serializing the model cannot fail: every map key is a string and no type has a fallible
    // Serialize impl. A failure would be a programming error, not something input can cause.
    let mut b = serde_json::to_vec(plan).expect("a plan always serializes to JSON");
    b.push(b'\n');
    b
}

fn hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// What the header's `blake3` records: from 1.2 the id, a newline and the body; before, the body.
fn file_hash(id: Option<&str>, body: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    if let Some(id) = id {
        h.update(id.as_bytes()).update(b"\n");
    }
    h.update(body).finalize().to_hex().to_string()
}

/// The plan's hash: blake3 (hex) of the body. The plan's identity (deterministic: the same world
/// plans to the same hash), shown by `show` and recorded in the run history.
pub fn hash(plan: &Plan) -> String {
    // Streamed into the hasher: the body of a large fleet's plan is tens of MiB, and a no-op
    // `nexus plan` needs only its hash (the same bytes `body` would hold).
    // Buffered: serde writes a token at a time, and blake3 hashes large updates much faster.
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, blake3::Hasher::new());
    serde_json::to_writer(&mut w, plan).expect("a plan always serializes to JSON");
    let mut h = w.into_inner().expect("a hasher's writes cannot fail");
    h.update(b"\n").finalize().to_hex().to_string()
}

/// Encodes a plan as the bytes of a plan file, with an id derived from the plan (deterministic,
/// for tests and golden files; `nexus plan -o` gives each file a fresh one, see [`write`]).
pub fn encode(plan: &Plan) -> Vec<u8> {
    encode_with_id(plan, &hash(plan)[..16])
}

/// Encodes a plan with plan-file id `id` in its header (see `Header::id`).
pub fn encode_with_id(plan: &Plan, id: &str) -> Vec<u8> {
    let body = body(plan);
    let header = Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION.into(),
        blake3: file_hash(Some(id), &body),
        id: Some(id.to_string()),
    };
    let mut out = serde_json::to_vec(&header).expect("the header always serializes");
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// A decoded plan file: a plan that can be shown, and whether this nexus may apply it.
#[derive(Debug, Clone)]
pub struct PlanFile {
    pub plan: Plan,
    /// The plan-file id, when its hash covers it.
    id: Option<String>,
    /// Why apply refuses a plan that can still be shown.
    refusal: Option<LockfileError>,
}

impl PlanFile {
    /// Why this nexus would refuse to apply the plan, if it would.
    pub fn refusal(&self) -> Option<&LockfileError> {
        self.refusal.as_ref()
    }

    /// The plan-file id from the header, covered by the hash.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The plan and its replay key (`HASH#ID`: bytes the header hash covers), if this nexus may
    /// apply it.
    pub fn applicable(self) -> Result<(Plan, String), LockfileError> {
        if let Some(e) = self.refusal {
            return Err(e);
        }
        let id = self
            .id
            .expect("a plan of this nexus's version without an id is refused when decoded");
        let key = format!("{}#{id}", hash(&self.plan));
        Ok((self.plan, key))
    }
}

/// Decodes plan file bytes into the plan; see [`decode_named`].
pub fn decode(bytes: &[u8]) -> Result<Plan, LockfileError> {
    decode_named(bytes, UNNAMED).map(|f| f.plan)
}

/// `MAJOR.MINOR`, if `version` has that shape.
fn version(version: &str) -> Option<(u64, u64)> {
    let (maj, min) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(maj) && digits(min))
        .then(|| Some((maj.parse().ok()?, min.parse().ok()?)))
        .flatten()
}

/// Major part of a `MAJOR.MINOR` version, if it has that shape.
fn major(v: &str) -> Option<u64> {
    version(v).map(|(m, _)| m)
}

/// Decodes plan file bytes, naming `file` in errors: checks the header, the version, the hash,
/// then parses and validates the plan. A plan this nexus can show but not apply is returned with
/// the reason ([`PlanFile::applicable`]).
pub fn decode_named(bytes: &[u8], file: &str) -> Result<PlanFile, LockfileError> {
    let not_a_plan = |reason: String| LockfileError::NotAPlan {
        file: file.into(),
        reason,
    };
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(not_a_plan(if bytes.is_empty() {
            "the file is empty".into()
        } else {
            "no header line (a plan file starts with a JSON header line)".into()
        }));
    };
    let (head, rest) = (&bytes[..nl], &bytes[nl + 1..]);
    let header: Header = serde_json::from_slice(head).map_err(|e| {
        not_a_plan(format!("the first line is not a plan header ({e}); plan files are written by `nexus plan -o FILE`"))
    })?;
    if header.format != FORMAT_NAME {
        return Err(not_a_plan(format!(
            "header format is {:?}, expected {FORMAT_NAME:?}",
            header.format
        )));
    }
    let ours = version(FORMAT_VERSION).expect("FORMAT_VERSION is MAJOR.MINOR");
    let found = match version(&header.format_version) {
        None => {
            return Err(not_a_plan(format!(
                "malformed format version {:?}",
                header.format_version
            )));
        }
        Some(v) if v.0 != ours.0 => {
            return Err(LockfileError::UnsupportedVersion {
                file: file.into(),
                found: header.format_version,
                supported: FORMAT_VERSION.into(),
            });
        }
        Some(v) => v,
    };
    let id_hashed = found.1 >= ID_HASHED_SINCE;
    if id_hashed && header.id.as_deref().is_none_or(|id| id.is_empty()) {
        return Err(not_a_plan(format!(
            "the header of a version {} plan has no id",
            header.format_version
        )));
    }
    let id = header.id.as_deref().filter(|_| id_hashed);
    let actual = file_hash(id, rest);
    if !actual.eq_ignore_ascii_case(&header.blake3) {
        return Err(LockfileError::Tampered {
            file: file.into(),
            expected: header.blake3,
            actual,
        });
    }
    // The body is exactly one JSON document and its newline; anything after it would be bytes
    // the hash vouches for but nobody reads.
    let json = rest
        .strip_suffix(b"\n")
        .ok_or_else(|| invalid(file, "the body does not end with a newline".into()))?;
    // Unknown fields are ignored here (serde's default) so a newer minor version can be shown;
    // apply refuses them below, through `refusal`.
    let plan: Plan = serde_json::from_slice(json)
        .map_err(|e| invalid(file, format!("cannot parse the plan: {e}")))?;
    let agrees = if id_hashed {
        plan.format_version == header.format_version
    } else {
        major(&plan.format_version) == Some(ours.0)
    };
    if !agrees {
        return Err(invalid(
            file,
            format!(
                "the body's format version {:?} disagrees with the header's {:?}",
                plan.format_version, header.format_version
            ),
        ));
    }
    validate(file, &plan)?;
    let refusal = if found.1 < ID_HASHED_SINCE {
        Some(LockfileError::Unprotected {
            file: file.into(),
            found: header.format_version.clone(),
        })
    } else if found > ours {
        Some(LockfileError::NewerVersion {
            file: file.into(),
            found: header.format_version.clone(),
            supported: FORMAT_VERSION.into(),
        })
    } else {
        not_canonical(head, &header, rest, &plan).map(|reason| LockfileError::NotCanonical {
            file: file.into(),
            reason,
        })
    };
    Ok(PlanFile {
        plan,
        id: id.map(str::to_string),
        refusal,
    })
}

/// Why a plan file of this nexus's version is not byte for byte what this nexus writes for its
/// plan, if it is not: a header with other fields, order or spacing, or a body with a field this
/// nexus does not know (which it would have dropped) or other formatting.
fn not_canonical(head: &[u8], header: &Header, body_bytes: &[u8], plan: &Plan) -> Option<String> {
    // Re-serialized with the hash as computed, so an upper-case hash is not canonical either.
    let canonical = Header {
        format: FORMAT_NAME.into(),
        format_version: header.format_version.clone(),
        blake3: file_hash(header.id.as_deref(), body_bytes),
        id: header.id.clone(),
    };
    let canonical_head = serde_json::to_vec(&canonical).expect("the header always serializes");
    if head != canonical_head.as_slice() {
        return Some(format!(
            "its header line is not `{}`",
            String::from_utf8_lossy(&canonical_head)
        ));
    }
    if body_bytes == body(plan).as_slice() {
        return None;
    }
    let known = serde_json::to_value(plan).expect("a plan always serializes to JSON");
    let unknown = serde_json::from_slice::<serde_json::Value>(body_bytes)
        .ok()
        .and_then(|found| unknown_field(&found, &known, String::new()));
    Some(match unknown {
        Some(path) => format!("it has a field this nexus does not know, {path}"),
        None => "its body is not in the canonical encoding".into(),
    })
}

/// The path of the first field of `found` that `known` (the re-encoded plan) does not have.
fn unknown_field(
    found: &serde_json::Value,
    known: &serde_json::Value,
    at: String,
) -> Option<String> {
    use serde_json::Value;
    match (found, known) {
        (Value::Object(f), Value::Object(k)) => f.iter().find_map(|(name, v)| {
            let path = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            match k.get(name) {
                None => Some(path),
                Some(kv) => unknown_field(v, kv, path),
            }
        }),
        (Value::Array(f), Value::Array(k)) => f
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (v, kv))| unknown_field(v, kv, format!("{at}[{i}]"))),
        _ => None,
    }
}

/// The body is intact but not a usable plan; `file` names it.
fn invalid(file: &str, reason: String) -> LockfileError {
    LockfileError::Invalid {
        file: file.into(),
        reason,
    }
}

/// Decodes a blob of plan `file`: base64, and its blake3 must be its key.
fn decode_blob(file: &str, key: &str, b64: &str) -> Result<Vec<u8>, LockfileError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| invalid(file, format!("blob {key} is not valid base64: {e}")))?;
    let actual = hex(&bytes);
    if actual != key {
        return Err(invalid(
            file,
            format!("blob {key} holds content whose blake3 is {actual}"),
        ));
    }
    Ok(bytes)
}

/// Checks what the types cannot: references between parts of the plan resolve, names are unique,
/// blobs are what their keys say, and the summary counts what is there.
fn validate(file: &str, plan: &Plan) -> Result<(), LockfileError> {
    let fail = |reason: String| Err(invalid(file, reason));
    let mut tasks: BTreeSet<&str> = BTreeSet::new();
    for t in &plan.tasks {
        for d in &t.deps {
            if !tasks.contains(d.as_str()) {
                return fail(if plan.tasks.iter().any(|x| &x.name == d) {
                    format!("task {:?} comes before its dependency {d:?}", t.name)
                } else {
                    format!(
                        "task {:?} depends on {d:?}, which is not in the plan",
                        t.name
                    )
                });
            }
        }
        if !tasks.insert(&t.name) {
            return fail(format!("task {:?} appears twice", t.name));
        }
    }
    let mut hosts: BTreeSet<&str> = BTreeSet::new();
    for h in &plan.hosts {
        if !hosts.insert(&h.name) {
            return fail(format!("host {:?} appears twice", h.name));
        }
    }
    for t in &plan.tasks {
        if let Some(h) = t.hosts.iter().find(|h| !hosts.contains(h.as_str())) {
            return fail(format!(
                "task {:?} runs on host {h:?}, which has no plan",
                t.name
            ));
        }
    }
    let mut verified: BTreeSet<&str> = BTreeSet::new();
    for (key, b64) in &plan.blobs {
        decode_blob(file, key, b64)?;
        verified.insert(key);
    }
    for (key, s) in &plan.streamed {
        check_streamed(key, s, plan).map_err(|why| {
            invalid(
                file,
                format!("streamed content {key} ({}): {why}", s.source),
            )
        })?;
    }
    // Streamed contents some step sends, gathered by the walk over the steps below.
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    let mut summary = Summary::default();
    for h in &plan.hosts {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for r in &h.resources {
            if !keys.insert(&r.key) {
                return fail(format!("host {:?} has resource {:?} twice", h.name, r.key));
            }
            if r.role != Role::Handler && !tasks.contains(r.task.as_str()) {
                return fail(format!(
                    "resource {:?} on host {:?} belongs to task {:?}, which is not in the plan",
                    r.key, h.name, r.task
                ));
            }
            if r.role != Role::Handler {
                summary.add(r.action);
            }
            if let Some(e) = r
                .probe_exists
                .iter()
                .find(|e| !super::ProbeExists::valid_key(&e.key))
            {
                return fail(format!(
                    "resource {:?} on host {:?}: its existence check {:?} is not one nexus plans",
                    r.key, h.name, e.key
                ));
            }
            for s in &r.steps {
                if let Some(b) = &s.stdin
                    && !verified.contains(b.as_str())
                    && !plan.streamed.contains_key(b)
                {
                    return fail(format!(
                        "resource {:?} on host {:?} reads blob {b}, which the plan does not contain",
                        r.key, h.name
                    ));
                }
                if let Some(b) = s
                    .stdin
                    .as_deref()
                    .filter(|b| plan.streamed.contains_key(*b))
                {
                    if s.write.is_none() {
                        return fail(format!(
                            "resource {:?} on host {:?}: only a file write may stream a content",
                            r.key, h.name
                        ));
                    }
                    sent.insert(b);
                }
                if s.mkdir.as_ref().is_some_and(|d| d.script() != s.script) {
                    return fail(format!(
                        "resource {:?} on host {:?}: its script is not the directory creation it describes",
                        r.key, h.name
                    ));
                }
                // A guard or a directory would change what the script reads; SFTP would not see them.
                if let Some(from) = &s.download_from
                    && (s.script != super::Step::download_script(from)
                        || s.download_to.is_none()
                        || s.skip_if.is_some()
                        || s.cwd.is_some())
                {
                    return fail(format!(
                        "resource {:?} on host {:?}: its script is not the download it describes",
                        r.key, h.name
                    ));
                }
                if let Some(w) = &s.write {
                    check_write(s, w, plan).map_err(|why| {
                        invalid(
                            file,
                            format!("resource {:?} on host {:?}: {why}", r.key, h.name),
                        )
                    })?;
                }
            }
            if let Some(diff) = &r.diff
                && let Err(e) = check_diff(plan, r, diff)
            {
                return fail(format!("resource {:?} on host {:?}: {e}", r.key, h.name));
            }
        }
    }
    if let Some((key, s)) = plan
        .streamed
        .iter()
        .find(|(k, _)| !sent.contains(k.as_str()))
    {
        return fail(format!(
            "streamed content {key} ({}): no step sends it",
            s.source
        ));
    }
    if summary != plan.summary {
        return fail(format!(
            "the summary ({:?}) does not count the planned resources ({:?})",
            plan.summary, summary
        ));
    }
    Ok(())
}

/// A step's `write` says what its script does, so that apply may write several files at once
/// instead of running their scripts: the two must agree, or the reviewed script is not what runs.
fn check_write(
    s: &super::Step,
    w: &super::file_write::FileWrite,
    plan: &Plan,
) -> Result<(), &'static str> {
    let Some(blob) = &s.stdin else {
        return Err("its file write sends no content");
    };
    if !s.stdin_secrets.is_empty() || s.stdin_sealed {
        return Err("its file write sends a content the plan cannot check");
    }
    let sha256 = match plan.streamed.get(blob) {
        Some(streamed) => Some(streamed.sha256.clone()),
        None => plan
            .blobs
            .get(blob)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|bytes| super::file_write::sha256_hex(&bytes)),
    };
    if sha256.as_ref() != Some(&w.sha256) {
        return Err("its file write names a sha256 its content does not have");
    }
    if s.script != w.script() {
        return Err("its script is not the file write it describes");
    }
    Ok(())
}

/// A streamed content is only ever a file write's, too large to carry, named by a local path
/// and hashes of the right form, and never also carried.
fn check_streamed(key: &str, s: &super::StreamedContent, plan: &Plan) -> Result<(), &'static str> {
    let hex = |h: &str, len: usize| {
        h.len() == len
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(key, 64) || !hex(&s.sha256, 64) {
        return Err("its hashes are not lower-case hex of the right length");
    }
    if s.size <= super::STREAM_OVER {
        return Err("it is small enough to be carried in the plan");
    }
    if s.source.is_empty() || s.source.contains('\0') {
        return Err("it names no local file");
    }
    if plan.blobs.contains_key(key) {
        return Err("the plan also carries it");
    }
    Ok(())
}

/// Checks a resource's diff against the one content its steps send (docs/plan-format.md, "Diffs").
fn check_diff(plan: &Plan, r: &super::PlannedResource, diff: &str) -> Result<(), DiffProblem> {
    let (key, new) = diffed_content(plan, r)?;
    diff_check::verify(&r.id, diff, key, &new, r.action == Action::Create)?;
    Ok(())
}

/// The blob key and content of the one content a resource with a diff sends.
fn diffed_content<'p>(
    plan: &'p Plan,
    r: &'p super::PlannedResource,
) -> Result<(&'p str, Vec<u8>), DiffProblem> {
    let mut sent = r
        .steps
        .iter()
        .filter_map(|s| s.stdin.as_ref().map(|b| (s, b)));
    let (Some((step, key)), None) = (sent.next(), sent.next()) else {
        return Err(DiffProblem::NotOneBlob);
    };
    if !step.stdin_secrets.is_empty() {
        return Err(DiffProblem::Secret);
    }
    let new = blob(plan, key).ok_or(DiffProblem::NotOneBlob)?;
    Ok((key, new))
}

/// For a resource that updates a file and shows a diff, the sha256 of the old content the diff
/// shows: apply requires the host's file to have exactly that content (exec/stale.rs).
pub fn shown_old_sha256(plan: &Plan, r: &super::PlannedResource) -> Option<String> {
    if r.action != Action::Update {
        return None;
    }
    let diff = r.diff.as_deref()?;
    let (_, new) = diffed_content(plan, r).ok()?;
    diff_check::old_side_sha256(diff, &new)
}

/// Why a resource's diff cannot be trusted to show what apply writes.
#[derive(Debug, thiserror::Error)]
enum DiffProblem {
    #[error("it has a diff but does not send exactly one content")]
    NotOneBlob,
    #[error("it has a diff but its content holds secrets, which are never diffed")]
    Secret,
    #[error(transparent)]
    Mismatch(#[from] diff_check::DiffMismatch),
}

/// The content of blob `hash`, verified against its hash; `None` if absent or corrupt.
pub fn blob(plan: &Plan, hash: &str) -> Option<Vec<u8>> {
    plan.blobs
        .get(hash)
        .and_then(|b| decode_blob(UNNAMED, hash, b).ok())
}

/// Reads and decodes a plan file.
pub fn read(path: &Path) -> Result<PlanFile, LockfileError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LockfileError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    decode_named(&bytes, &file)
}

/// A fresh plan-file id: unique per write, meaningless otherwise.
fn new_id(plan: &Plan) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}/{}/{}", std::process::id(), hash(plan));
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

/// Writes a plan file atomically: the bytes go to a new temporary file in the same directory,
/// which is flushed to disk and renamed over `path`. A reader sees the old file or the new one,
/// never a partial one; on failure the temporary file is removed.
pub fn write(path: &Path, plan: &Plan) -> Result<(), LockfileError> {
    let file = path.display().to_string();
    let fail = |what: &str, e: std::io::Error| LockfileError::Write {
        file: file.clone(),
        reason: format!("{what}: {e}"),
    };
    let name = path.file_name().ok_or_else(|| LockfileError::Write {
        file: file.clone(),
        reason: "not a file name".into(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let bytes = encode_with_id(plan, &new_id(plan));
    // A name no other writer picks: our pid, plus a counter for writers within this process.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o644);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| fail("cannot create a temporary file", e))?;
        // The umask may have narrowed the mode; plans hold no secrets and are meant to be shared.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| fail("cannot set the mode", e))?;
        }
        f.write_all(&bytes).map_err(|e| fail("cannot write", e))?;
        f.sync_all().map_err(|e| fail("cannot flush to disk", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| fail("cannot move the new plan into place", e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; failing to sync a directory (some filesystems refuse) does
    // not make the written file any less complete, so it is not an error.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major("1.0"), Some(1));
        assert_eq!(major("12.345"), Some(12));
        for bad in [
            "1",
            "1.",
            ".1",
            "a.b",
            "1.0.0",
            "-1.0",
            "+1.0",
            "",
            "99999999999999999999.0",
        ] {
            assert_eq!(major(bad), None, "{bad}");
        }
    }
}
