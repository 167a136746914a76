//! The plan file (`plan.lock`): a one-line JSON header, then the plan as canonical JSON.
//!
//! ```text
//! {"format":"nexus-plan","format_version":"1.0","blake3":"<hex>"}\n
//! <the Plan as compact JSON>\n
//! ```
//!
//! The hash covers every byte after the header's newline (the JSON and its final newline), so a
//! reader detects any edit or truncation before it trusts a single field. The body is
//! `serde_json::to_vec` of [`Plan`]: struct fields in declaration order, maps are `BTreeMap`s,
//! no timestamps, so the same plan always encodes to the same bytes. See docs/plan-format.md.
//!
//! Decoding is meant for files that came from anywhere (a CI artifact, an edited copy): it never
//! panics, refuses another major version, ignores fields it does not know (a newer minor version
//! may add some), and checks that the plan is internally consistent before returning it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::model::{FORMAT_VERSION, Plan, Role, Summary};

/// The `format` value of the header line.
pub const FORMAT_NAME: &str = "nexus-plan";

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
    /// The body does not hash to what the header says: edited, truncated or corrupted.
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

/// The header line. Unknown header fields are ignored, like unknown body fields.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: String,
    blake3: String,
    /// Identifies one `nexus plan -o` invocation. Not part of the hashed body (planning is
    /// deterministic, so the same world plans to the same hash); apply's replay protection keys
    /// on it, so a plan file runs once while a fresh plan of an unchanged world can still apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// The body: canonical JSON of the plan followed by one newline. This is what the hash covers.
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

/// The plan's hash as the header records it: blake3 (hex) of the body.
pub fn hash(plan: &Plan) -> String {
    hex(&body(plan))
}

/// Encodes a plan as the bytes of a plan file.
pub fn encode(plan: &Plan) -> Vec<u8> {
    encode_with_id(plan, None)
}

/// Encodes a plan with a plan-file id in its header (see `Header::id`).
pub fn encode_with_id(plan: &Plan, id: Option<&str>) -> Vec<u8> {
    let body = body(plan);
    let header = Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION.into(),
        blake3: hex(&body),
        id: id.map(str::to_string),
    };
    let mut out = serde_json::to_vec(&header).expect("the header always serializes");
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// Decodes plan file bytes; see [`decode_named`].
pub fn decode(bytes: &[u8]) -> Result<Plan, LockfileError> {
    decode_named(bytes, UNNAMED)
}

/// Major part of a `MAJOR.MINOR` version, if it has that shape.
fn major(version: &str) -> Option<u64> {
    let (maj, min) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(maj) && digits(min))
        .then(|| maj.parse().ok())
        .flatten()
}

/// Decodes plan file bytes, naming `file` in errors: checks the header, the version, the hash,
/// then parses and validates the plan.
pub fn decode_named(bytes: &[u8], file: &str) -> Result<Plan, LockfileError> {
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
    let ours = major(FORMAT_VERSION).expect("FORMAT_VERSION is MAJOR.MINOR");
    match major(&header.format_version) {
        None => {
            return Err(not_a_plan(format!(
                "malformed format version {:?}",
                header.format_version
            )));
        }
        Some(m) if m != ours => {
            return Err(LockfileError::UnsupportedVersion {
                file: file.into(),
                found: header.format_version,
                supported: FORMAT_VERSION.into(),
            });
        }
        Some(_) => {}
    }
    let actual = hex(rest);
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
    // Unknown fields are ignored (serde's default): minor versions only add fields.
    let plan: Plan = serde_json::from_slice(json)
        .map_err(|e| invalid(file, format!("cannot parse the plan: {e}")))?;
    if major(&plan.format_version) != Some(ours) {
        return Err(invalid(
            file,
            format!(
                "the body's format version {:?} disagrees with the header's {:?}",
                plan.format_version, header.format_version
            ),
        ));
    }
    validate(file, &plan)?;
    Ok(plan)
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
            for s in &r.steps {
                if let Some(b) = &s.stdin
                    && !verified.contains(b.as_str())
                {
                    return fail(format!(
                        "resource {:?} on host {:?} reads blob {b}, which the plan does not contain",
                        r.key, h.name
                    ));
                }
            }
        }
    }
    if summary != plan.summary {
        return fail(format!(
            "the summary ({:?}) does not count the planned resources ({:?})",
            plan.summary, summary
        ));
    }
    Ok(())
}

/// The content of blob `hash`, verified against its hash; `None` if absent or corrupt.
pub fn blob(plan: &Plan, hash: &str) -> Option<Vec<u8>> {
    plan.blobs
        .get(hash)
        .and_then(|b| decode_blob(UNNAMED, hash, b).ok())
}

/// Reads and decodes a plan file.
pub fn read(path: &Path) -> Result<Plan, LockfileError> {
    read_with_id(path).map(|(p, _)| p)
}

/// Reads a plan file with its plan-file id, if it has one.
pub fn read_with_id(path: &Path) -> Result<(Plan, Option<String>), LockfileError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LockfileError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let plan = decode_named(&bytes, &file)?;
    // The header parsed in decode_named; read its id again here rather than widen that API.
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let id = serde_json::from_slice::<Header>(&bytes[..nl])
        .ok()
        .and_then(|h| h.id);
    Ok((plan, id))
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
    let bytes = encode_with_id(plan, Some(&new_id(plan)));
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
