//! The plan file encoding (`src/plan/lockfile.rs`): round trips, determinism, tamper detection,
//! versioning, validation, atomic writes, and a decoder that never panics whatever it is fed.

mod harness;
mod plan_fixture;

use harness::SshHost;
use harness::project::{Project, Run};
use nexus::plan::Plan;
use nexus::plan::lockfile::{self, LockfileError};
use proptest::prelude::*;

/// A small real plan: two hosts, a directory and a file whose content travels as a blob.
fn sample() -> Plan {
    plan_fixture::plan(plan_fixture::CONFIG, &["web1", "web2"])
}

/// Splits a plan file into its header (without newline) and body.
fn split(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    (bytes[..nl].to_vec(), bytes[nl + 1..].to_vec())
}

/// Reassembles a plan file around `body` with a correct hash and the given version.
fn with_body(version: &str, body: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({
        "format": "nexus-plan",
        "format_version": version,
        "blake3": blake3::hash(body).to_hex().to_string(),
    });
    let mut out = serde_json::to_vec(&header).unwrap();
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// The body as JSON, edited by `f`, re-serialized with its newline.
fn edit_body(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (_, body) = split(bytes);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    f(&mut v);
    let mut b = serde_json::to_vec(&v).unwrap();
    b.push(b'\n');
    b
}

#[test]
fn layout_is_a_header_line_then_the_body() {
    let p = sample();
    let bytes = lockfile::encode(&p);
    let (header, body) = split(&bytes);
    let header = String::from_utf8(header).unwrap();
    let hash = lockfile::hash(&p);
    // The id of `encode` is derived from the plan; the header's hash covers it and the body.
    let id = &hash[..16];
    let file_hash = blake3::hash(&[id.as_bytes(), b"\n", &body].concat())
        .to_hex()
        .to_string();
    assert_eq!(
        header,
        format!(
            r#"{{"format":"nexus-plan","format_version":"{}","blake3":"{file_hash}","id":"{id}"}}"#,
            nexus::plan::FORMAT_VERSION
        )
    );
    assert_eq!(blake3::hash(&body).to_hex().to_string(), hash);
    assert!(body.ends_with(b"}\n"));
    assert_eq!(
        body.iter().filter(|&&b| b == b'\n').count(),
        1,
        "compact JSON on one line"
    );
    assert!(
        !p.blobs.is_empty(),
        "the sample uploads a file, so it has a blob"
    );
}

#[test]
fn round_trip() {
    let p = sample();
    let bytes = lockfile::encode(&p);
    let back = lockfile::decode(&bytes).unwrap();
    assert_eq!(back, p);
    assert_eq!(lockfile::encode(&back), bytes);
}

#[test]
fn same_plan_gives_identical_bytes() {
    let (a, b) = (sample(), sample());
    assert_eq!(lockfile::encode(&a), lockfile::encode(&b));
    assert_eq!(lockfile::hash(&a), lockfile::hash(&b));
    assert_eq!(lockfile::encode(&a), lockfile::encode(&a.clone()));
}

#[test]
fn blobs_are_returned_verified() {
    let p = sample();
    let step = p.hosts[0]
        .resources
        .iter()
        .flat_map(|r| &r.steps)
        .find(|s| s.stdin.is_some())
        .unwrap();
    let key = step.stdin.as_deref().unwrap();
    assert_eq!(lockfile::blob(&p, key).unwrap(), b"hello from nexus\n");
    assert_eq!(lockfile::blob(&p, "0000"), None);
    let mut bad = p.clone();
    bad.blobs.insert(key.to_string(), "aGVsbG8K".into());
    assert_eq!(
        lockfile::blob(&bad, key),
        None,
        "content not matching its hash is not returned"
    );
}

#[test]
fn edited_body_is_tampered() {
    let bytes = lockfile::encode(&sample());
    let text = String::from_utf8(bytes.clone()).unwrap();
    let edited = text.replacen("0755", "0777", 1);
    assert_ne!(edited, text);
    match lockfile::decode(edited.as_bytes()) {
        Err(LockfileError::Tampered {
            expected, actual, ..
        }) => {
            assert_ne!(expected, actual);
            assert_eq!(expected, header_of(&bytes)["blake3"]);
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
    // Truncated, or with the final newline lost: also tampered.
    for cut in [bytes.len() - 1, bytes.len() - 10, bytes.len() / 2] {
        assert!(
            matches!(
                lockfile::decode(&bytes[..cut]),
                Err(LockfileError::Tampered { .. })
            ),
            "cut at {cut}"
        );
    }
    // Line endings converted by a checkout.
    let crlf = text.replace('\n', "\r\n");
    assert!(lockfile::decode(crlf.as_bytes()).is_err());
}

#[test]
fn unknown_major_version_is_refused() {
    let bytes = lockfile::encode(&sample());
    let (_, body) = split(&bytes);
    for v in ["2.0", "2.7", "0.9", "10.0"] {
        let err = lockfile::decode(&with_body(v, &body)).unwrap_err();
        match &err {
            LockfileError::UnsupportedVersion {
                found, supported, ..
            } => {
                assert_eq!(found, v);
                assert_eq!(supported, nexus::plan::FORMAT_VERSION);
            }
            other => panic!("{v}: expected UnsupportedVersion, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(v) && msg.contains(nexus::plan::FORMAT_VERSION),
            "{msg}"
        );
    }
    for v in ["1", "one", "", "1.0.0"] {
        assert!(
            matches!(
                lockfile::decode(&with_body(v, &body)),
                Err(LockfileError::NotAPlan { .. })
            ),
            "{v:?}"
        );
    }
}

#[test]
fn unknown_fields_of_a_newer_minor_version_are_shown_not_applied() {
    let p = sample();
    let bytes = lockfile::encode(&p);
    let body = edit_body(&bytes, |v| {
        v["format_version"] = "1.3".into();
        v["future"] = serde_json::json!({"anything": [1, 2]});
        v["hosts"][0]["future"] = 1.into();
        v["hosts"][0]["resources"][0]["future"] = "x".into();
        v["tasks"][0]["future"] = serde_json::Value::Null;
        v["summary"]["future"] = 7.into();
    });
    let file = file_with("1.3", Some("0123456789abcdef"), &body);
    let mut expected = p.clone();
    expected.format_version = "1.3".into();
    let decoded = lockfile::decode_named(&file, "plan.lock").unwrap();
    assert_eq!(decoded.plan, expected);
    match decoded.applicable() {
        Err(e @ LockfileError::NewerVersion { .. }) => {
            assert!(e.to_string().contains("1.3"), "{e}")
        }
        other => panic!("expected NewerVersion, got {other:?}"),
    }
    // Unknown header fields are ignored too, for showing.
    let text = String::from_utf8(file).unwrap().replacen(
        "\"format\"",
        "\"written_by\":\"nexus 1.9\",\"format\"",
        1,
    );
    assert!(text.contains("written_by"));
    assert_eq!(lockfile::decode(text.as_bytes()).unwrap(), expected);
}

#[test]
fn older_plans_are_shown_not_applied() {
    let p = sample();
    let (_, body) = split(&lockfile::encode(&p));
    let body = String::from_utf8(body)
        .unwrap()
        .replacen(nexus::plan::FORMAT_VERSION, "1.1", 1);
    let decoded = lockfile::decode_named(&with_body("1.1", body.as_bytes()), "plan.lock").unwrap();
    assert_eq!(decoded.plan.hosts, p.hosts);
    assert!(matches!(
        decoded.applicable(),
        Err(LockfileError::Unprotected { .. })
    ));
}

#[test]
fn a_plan_of_this_version_as_nexus_writes_it_applies_once_per_file() {
    let p = sample();
    let decoded = lockfile::decode(&lockfile::encode(&p)).unwrap();
    assert_eq!(decoded, p);
    let file = lockfile::decode_named(&lockfile::encode_with_id(&p, "abc"), "plan.lock").unwrap();
    assert_eq!(file.id(), Some("abc"));
    let (plan, key) = file.applicable().unwrap();
    assert_eq!(plan, p);
    assert_eq!(key, format!("{}#abc", lockfile::hash(&p)));
}

#[test]
fn missing_blob_is_invalid() {
    let p = sample();
    let bytes = lockfile::encode(&p);
    let body = edit_body(&bytes, |v| {
        v["blobs"] = serde_json::json!({});
    });
    match lockfile::decode(&with_body("1.0", &body)) {
        Err(LockfileError::Invalid { reason, .. }) => assert!(reason.contains("blob"), "{reason}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The first step of the plan body `v` that writes a file.
fn first_write(v: &mut serde_json::Value) -> &mut serde_json::Value {
    v["hosts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .flat_map(|h| h["resources"].as_array_mut().unwrap().iter_mut())
        .flat_map(|r| r["steps"].as_array_mut().unwrap().iter_mut())
        .find(|s| s.get("write").is_some())
        .expect("the sample plan writes a file")
}

#[test]
fn inconsistent_plans_are_invalid() {
    let bytes = lockfile::encode(&sample());
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "blob",
            Box::new(|v| {
                let key = v["blobs"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .clone();
                v["blobs"][&key] = "aGVsbG8K".into();
            }),
        ),
        (
            "base64",
            Box::new(|v| {
                let key = v["blobs"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .clone();
                v["blobs"][&key] = "!!!".into();
            }),
        ),
        (
            "depends on",
            Box::new(|v| v["tasks"][0]["deps"] = serde_json::json!(["nowhere"])),
        ),
        (
            "twice",
            Box::new(|v| {
                let h = v["hosts"][0].clone();
                v["hosts"].as_array_mut().unwrap().push(h);
            }),
        ),
        (
            "no plan",
            Box::new(|v| v["tasks"][0]["hosts"] = serde_json::json!(["web1", "web9"])),
        ),
        ("summary", Box::new(|v| v["summary"]["create"] = 99.into())),
        (
            "not in the plan",
            Box::new(|v| v["hosts"][0]["resources"][0]["task"] = "other".into()),
        ),
        (
            "cannot parse",
            Box::new(|v| v["hosts"][0]["resources"][0]["action"] = "explode".into()),
        ),
        ("cannot parse", Box::new(|v| v["hosts"] = 3.into())),
        (
            "format version",
            Box::new(|v| v["format_version"] = "2.0".into()),
        ),
        // A file write in structured form must be exactly its script: apply may run either.
        (
            "its script is not the file write it describes",
            Box::new(|v| first_write(v)["write"]["mode"] = "4777".into()),
        ),
        (
            "its file write names a sha256 its content does not have",
            Box::new(|v| first_write(v)["write"]["sha256"] = "00".repeat(32).into()),
        ),
        // An existence answer must not stand for a fact of the path batch.
        (
            "is not one nexus plans",
            Box::new(|v| {
                v["hosts"][0]["resources"][0]["probe_exists"] =
                    serde_json::json!([{"key": "exists", "path": "/srv/app"}]);
            }),
        ),
        (
            "its script is not the download it describes",
            Box::new(|v| {
                let s = first_write(v);
                s["script"] = "cat -- /etc/shadow".into();
                s.as_object_mut().unwrap().remove("write");
                s["download_from"] = "/etc/shadow".into();
                s["download_to"] = "x".into();
                s["cwd"] = "/".into();
            }),
        ),
        // So must a download: apply may fetch `download_from` instead of running the script.
        (
            "its script is not the download it describes",
            Box::new(|v| {
                let s = first_write(v);
                s["download_from"] = "/etc/shadow".into();
                s["download_to"] = "stolen".into();
            }),
        ),
        (
            "its script is not the download it describes",
            Box::new(|v| {
                let s = first_write(v);
                s["script"] = "cat -- /etc/shadow".into();
                s.as_object_mut().unwrap().remove("write");
                s["download_from"] = "/etc/shadow".into();
            }),
        ),
        (
            "its file write sends no content",
            Box::new(|v| {
                first_write(v).as_object_mut().unwrap().remove("stdin");
            }),
        ),
    ];
    for (needle, f) in cases {
        let body = edit_body(&bytes, f);
        match lockfile::decode(&with_body("1.0", &body)) {
            Err(e @ LockfileError::Invalid { .. }) => {
                assert!(e.to_string().contains(needle), "{needle}: {e}")
            }
            other => panic!("{needle}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn not_a_plan() {
    for bytes in [
        &b""[..],
        b"hello",
        b"hello\nworld\n",
        b"{\"format\":\"other\",\"format_version\":\"1.0\",\"blake3\":\"\"}\n{}\n",
        b"[]\n",
    ] {
        assert!(
            matches!(lockfile::decode(bytes), Err(LockfileError::NotAPlan { .. })),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn write_is_atomic_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.lock");
    let p = sample();
    lockfile::write(&path, &p).unwrap();
    // The written file differs from `encode` only by the plan-file id in its header.
    let written = std::fs::read(&path).unwrap();
    let read = lockfile::read(&path).unwrap();
    assert_eq!(read.plan, p);
    let id = read
        .id()
        .expect("written plan files carry an id")
        .to_string();
    assert_eq!(written, lockfile::encode_with_id(&p, &id));
    // Each write gets a new id; the body and its hash stay the same.
    lockfile::write(&path, &p).unwrap();
    let again = lockfile::read(&path).unwrap();
    assert_ne!(Some(id.as_str()), again.id());
    assert_eq!(again.plan, p);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // Overwriting replaces the file; no temporary files are left behind.
    lockfile::write(&path, &p).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["plan.lock"]);
}

#[test]
fn write_failure_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no such dir").join("plan.lock");
    let err = lockfile::write(&missing, &sample()).unwrap_err();
    assert!(matches!(err, LockfileError::Write { .. }));
    assert!(err.to_string().contains("plan.lock"), "{err}");
    // A directory where the file should go: the rename fails, the temporary file is removed.
    let target = dir.path().join("plan.lock");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(lockfile::write(&target, &sample()).is_err());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["plan.lock"]);
}

#[test]
fn read_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.lock");
    let e = lockfile::read(&path).unwrap_err();
    assert!(
        matches!(e, LockfileError::Read { .. }) && e.to_string().contains("plan.lock"),
        "{e}"
    );
    let mut bytes = lockfile::encode(&sample());
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = lockfile::read(&path).unwrap_err();
    assert!(matches!(e, LockfileError::Tampered { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

fn valid_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| lockfile::encode(&sample()))
}

/// Ways to damage a valid plan file.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Replace the header line with arbitrary text.
    Header(String),
    /// A different version string in the header (hash kept).
    Version(String),
    /// Duplicate line `n` (0: the header, 1: the body).
    Duplicate {
        line: usize,
    },
    /// Edit the body's bytes, then recompute the hash so the edit reaches the parser.
    Rehashed {
        at: usize,
        byte: u8,
    },
    RehashedTruncate {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        ".{0,80}".prop_map(Mutation::Header),
        prop_oneof![
            Just("2.0".to_string()),
            Just("1.99999".to_string()),
            Just("".to_string()),
            "[0-9]{0,12}\\.[0-9]{0,12}",
            ".{0,12}"
        ]
        .prop_map(Mutation::Version),
        (0usize..2).prop_map(|line| Mutation::Duplicate { line }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Rehashed { at, byte }),
        any::<usize>().prop_map(|at| Mutation::RehashedTruncate { at }),
    ]
}

fn apply(m: &Mutation, orig: &[u8]) -> Vec<u8> {
    let mut b = orig.to_vec();
    let n = b.len();
    let (header, body) = split(orig);
    match m {
        Mutation::Flip { at, bit } => b[at % n] ^= 1 << bit,
        Mutation::Set { at, byte } => b[at % n] = *byte,
        Mutation::Truncate { at } => b.truncate(at % n),
        Mutation::Insert { at, bytes } => {
            let at = at % (n + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            b.drain(at..(at + len).min(n));
        }
        Mutation::Header(h) => {
            b = h.as_bytes().to_vec();
            b.push(b'\n');
            b.extend_from_slice(&body);
        }
        Mutation::Version(v) => {
            // An earlier mutation may have broken the header; then there is no version to edit.
            let Ok(serde_json::Value::Object(mut h)) = serde_json::from_slice(&header) else {
                return b;
            };
            h.insert("format_version".into(), v.clone().into());
            b = serde_json::to_vec(&h).unwrap();
            b.push(b'\n');
            b.extend_from_slice(&body);
        }
        Mutation::Duplicate { line } => {
            b = header.clone();
            b.push(b'\n');
            if *line == 0 {
                b.extend_from_slice(&header);
                b.push(b'\n');
            }
            b.extend_from_slice(&body);
            if *line == 1 {
                b.extend_from_slice(&body);
            }
        }
        Mutation::Rehashed { at, byte } => {
            let mut body = body.clone();
            let i = at % body.len();
            body[i] = *byte;
            b = with_body("1.0", &body);
        }
        Mutation::RehashedTruncate { at } => {
            let mut body = body.clone();
            body.truncate(at % body.len());
            body.push(b'\n');
            b = with_body("1.0", &body);
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = lockfile::decode(&bytes);
    }

    #[test]
    fn decoding_random_text_lines_never_panics(head in ".{0,100}", body in ".{0,300}") {
        let _ = lockfile::decode(format!("{head}\n{body}\n").as_bytes());
        let _ = lockfile::decode(&with_body("1.0", body.as_bytes()));
    }

    #[test]
    fn damaged_plan_files_never_panic(ms in proptest::collection::vec(mutation(), 1..4)) {
        let orig = valid_bytes();
        let mut b = orig.to_vec();
        for m in &ms {
            // Mutations need a header line and a non-empty body to work on.
            let Some(nl) = b.iter().position(|&x| x == b'\n') else { break };
            if nl + 1 >= b.len() {
                break;
            }
            b = apply(m, &b);
        }
        match lockfile::decode(&b) {
            // A mutation may leave the plan intact (a version edit to another 1.x, a flip that
            // was undone): then it must still be the same plan.
            Ok(p) => {
                let canonical = lockfile::encode(&p);
                let again = lockfile::decode(&canonical).unwrap();
                prop_assert_eq!(again, p);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
            }
        }
    }
}

#[test]
fn decoding_a_file_named_in_errors() {
    let e = lockfile::decode_named(b"", "ci/plan.lock").unwrap_err();
    assert!(e.to_string().contains("ci/plan.lock"), "{e}");
}

/// The header of plan file bytes as a JSON object.
fn header_of(bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let (header, _) = split(bytes);
    serde_json::from_slice(&header).unwrap()
}

/// A header line with `fields` in this order (values as JSON strings).
fn header_line(fields: &[(&str, &str)]) -> Vec<u8> {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::json!(k), serde_json::json!(v)))
        .collect();
    format!("{{{}}}", parts.join(",")).into_bytes()
}

/// A plan file as nexus would hash it: the hash covers the id (when there is one), a newline,
/// and the body; the header's fields in nexus's order.
fn file_with(version: &str, id: Option<&str>, body: &[u8]) -> Vec<u8> {
    let hashed = match id {
        Some(id) => [id.as_bytes(), b"\n", body].concat(),
        None => body.to_vec(),
    };
    let hash = blake3::hash(&hashed).to_hex().to_string();
    let mut fields = vec![
        ("format", "nexus-plan"),
        ("format_version", version),
        ("blake3", &hash),
    ];
    fields.extend(id.map(|id| ("id", id)));
    [header_line(&fields), b"\n".to_vec(), body.to_vec()].concat()
}

/// The canonical body of the plan `v` describes (fields nexus does not know are dropped).
fn canonical_body(v: &serde_json::Value) -> Vec<u8> {
    let plan: nexus::plan::Plan = serde_json::from_value(v.clone()).unwrap();
    split(&lockfile::encode(&plan)).1
}

/// The sample's body, edited by `edit`, with every host at 127.0.0.1 port 9, where nothing
/// listens, so an apply that got past the plan file fails fast (exit 4) instead of hanging.
fn unreachable_sample(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let bytes = lockfile::encode(&sample());
    let (_, body) = split(&bytes);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for h in v["hosts"].as_array_mut().unwrap() {
        h["connection"]["address"] = "127.0.0.1".into();
        h["connection"]["port"] = 9.into();
    }
    edit(&mut v);
    canonical_body(&v)
}

/// Runs `nexus ARGS` in a fresh directory holding `plan.lock` = `bytes`.
fn nexus_on_plan(bytes: &[u8], args: &[&str]) -> Run {
    let p = Project::new().no_config_arg();
    std::fs::write(p.path("plan.lock"), bytes).unwrap();
    p.nexus(args)
}

/// The sample's file resource on web1, its write step's blob key and the blob.
fn file_blob(v: &serde_json::Value) -> (usize, String) {
    let resources = v["hosts"][0]["resources"].as_array().unwrap();
    let i = resources
        .iter()
        .position(|r| r["diff"].is_string())
        .expect("the sample's file has a diff");
    let key = resources[i]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["stdin"].as_str())
        .unwrap()
        .to_string();
    (i, key)
}

/// Replaces the blob web1's file writes with `content`, keeping the diff that shows the old one.
fn swap_blob(v: &mut serde_json::Value, content: &[u8]) {
    use base64::Engine as _;
    let (i, old_key) = file_blob(v);
    let key = blake3::hash(content).to_hex().to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    for s in v["hosts"][0]["resources"][i]["steps"]
        .as_array_mut()
        .unwrap()
    {
        if s["stdin"] == old_key.as_str() {
            s["stdin"] = key.clone().into();
            // A consistent forgery: the write names the new content's sha256 and the script
            // is the one that write derives, so only the diff check is left to catch it.
            if s["write"].is_object() {
                s["write"]["sha256"] = nexus::resources::file::sha256_hex(content).into();
                let write: nexus::plan::file_write::FileWrite =
                    serde_json::from_value(s["write"].clone()).unwrap();
                s["script"] = write.script().into();
            }
        }
    }
    v["blobs"][&key] = b64.into();
}

#[test]
fn a_diff_that_does_not_show_what_the_blob_writes_is_refused() {
    let p = sample();
    let bytes = lockfile::encode(&p);
    // The shown diff adds "hello from nexus"; web1's write step now writes something else, and
    // the hash is recomputed, so only a check of the diff against the blob can tell.
    let body = edit_body(&bytes, |v| {
        swap_blob(v, b"hello from nexus\nrm -rf /\n");
    });
    match lockfile::decode(&file_with(
        nexus::plan::FORMAT_VERSION,
        Some("0123456789abcdef"),
        &body,
    )) {
        Err(e @ LockfileError::Invalid { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("diff") && msg.contains("web1"), "{msg}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A diff edited to show other content than the unchanged blob: refused as well.
    let body = edit_body(&bytes, |v| {
        let (i, _) = file_blob(v);
        let r = &mut v["hosts"][0]["resources"][i];
        let diff = r["diff"].as_str().unwrap().replace("+hello", "+harmless");
        r["diff"] = diff.into();
    });
    assert!(matches!(
        lockfile::decode(&file_with(
            nexus::plan::FORMAT_VERSION,
            Some("0123456789abcdef"),
            &body
        )),
        Err(LockfileError::Invalid { .. })
    ));
}

#[test]
fn show_and_apply_refuse_a_diff_that_hides_the_written_content() {
    let body = unreachable_sample(|v| swap_blob(v, b"hello from nexus\nrm -rf /\n"));
    let crafted = file_with(nexus::plan::FORMAT_VERSION, Some("0123456789abcdef"), &body);
    for args in [&["show", "plan.lock"][..], &["apply", "plan.lock"]] {
        let run = nexus_on_plan(&crafted, args);
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("diff") && run.stderr.contains("not a valid plan"),
            "{args:?}: {run:?}"
        );
        assert!(!run.stdout.contains("rm -rf"), "{run:?}");
    }
}

/// The unreachable sample at `version`, with a field no nexus wrote in its first resource,
/// hashed the way nexus hashes.
fn sample_file_at(version: &str) -> Vec<u8> {
    let body =
        String::from_utf8(unreachable_sample(|v| v["format_version"] = version.into())).unwrap();
    let body = body.replacen(
        "\"key\":\"setup#1\"",
        "\"key\":\"setup#1\",\"future_semantics\":\"only-if-safe\"",
        1,
    );
    assert!(body.contains("future_semantics"));
    file_with(version, Some("0123456789abcdef"), body.as_bytes())
}

#[test]
fn apply_refuses_a_newer_minor_version_that_show_still_renders() {
    let newer = sample_file_at("1.99");
    let run = nexus_on_plan(&newer, &["apply", "plan.lock"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains("1.99")
            && run.stderr.contains("newer")
            && run.stderr.contains("Nothing was executed"),
        "{run:?}"
    );
    let run = nexus_on_plan(&newer, &["show", "plan.lock"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("/srv/app/motd"), "{run:?}");
    assert!(
        run.stderr.contains("note:") && run.stderr.contains("cannot apply"),
        "{run:?}"
    );
}

#[test]
fn apply_refuses_unknown_fields_in_a_plan_of_its_own_version() {
    let unknown = sample_file_at(nexus::plan::FORMAT_VERSION);
    let run = nexus_on_plan(&unknown, &["apply", "plan.lock"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr
            .contains("hosts[0].resources[0].future_semantics"),
        "{run:?}"
    );
}

/// `nexus apply FILE` in `env`, and how many times the unguarded command has run on `host`.
fn apply_count(env: &Project, host: &SshHost, file: &str) -> (Run, usize) {
    let run = env.nexus(&["apply", file]);
    let count = std::fs::read_to_string(host.srv().join("count"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    (run, count)
}

#[test]
fn header_edits_never_replay_an_applied_plan() {
    let h = SshHost::builder("pf1").private_srv().start();
    let env = Project::over(
        &[&h],
        " connect-timeout=\"5s\"",
        "task \"t\" on=\"pf1\" { command \"echo ran >> /srv/count\" }\n",
    );
    assert!(env.nexus(&["plan", "-o", "plan.lock"]).success());
    let original = std::fs::read(env.path("plan.lock")).unwrap();
    let (run, count) = apply_count(&env, &h, "plan.lock");
    assert_eq!((run.code, count), (0, 1), "{run:?}");

    let (head, body) = split(&original);
    let header = header_of(&original);
    let field = |k: &str| header[k].as_str().unwrap().to_string();
    let (version, id, hash) = (field("format_version"), field("id"), field("blake3"));
    let line =
        |fields: &[(&str, &str)]| [header_line(fields), b"\n".to_vec(), body.clone()].concat();
    let text = String::from_utf8(head.clone()).unwrap();
    assert_eq!(
        head,
        header_line(&[
            ("format", "nexus-plan"),
            ("format_version", &version),
            ("blake3", &hash),
            ("id", &id)
        ]),
        "nexus writes its header fields in this order"
    );
    let other_id = "0123456789abcdef";
    let longer_id = format!("{id}x");
    let edits: Vec<(&str, Vec<u8>)> = vec![
        (
            "id changed",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("id", other_id),
                ("blake3", &hash),
            ]),
        ),
        (
            "id extended",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("id", &longer_id),
                ("blake3", &hash),
            ]),
        ),
        (
            "id removed",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("blake3", &hash),
            ]),
        ),
        (
            "fields reordered",
            line(&[
                ("blake3", &hash),
                ("id", &id),
                ("format_version", &version),
                ("format", "nexus-plan"),
            ]),
        ),
        (
            "field added",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("id", &id),
                ("blake3", &hash),
                ("rerun", "please"),
            ]),
        ),
        (
            "id duplicated",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("id", other_id),
                ("id", &id),
                ("blake3", &hash),
            ]),
        ),
        (
            "hash in upper case",
            line(&[
                ("format", "nexus-plan"),
                ("format_version", &version),
                ("blake3", &hash.to_uppercase()),
                ("id", &id),
            ]),
        ),
        (
            "whitespace",
            [text.replacen(',', ", ", 1).as_bytes(), b"\n", &body].concat(),
        ),
        (
            "downgraded to 1.1 without an id, hash recomputed",
            file_with("1.1", None, &body),
        ),
        ("downgraded to 1.1 with another id, hash recomputed", {
            let b = file_with("1.1", None, &body);
            let (head, _) = split(&b);
            let head = String::from_utf8(head).unwrap();
            let head = head.replacen('}', ",\"id\":\"0123456789abcdef\"}", 1);
            [head.as_bytes(), b"\n", &body].concat()
        }),
    ];
    for (what, bytes) in &edits {
        std::fs::write(env.path("edited.lock"), bytes).unwrap();
        let (run, count) = apply_count(&env, &h, "edited.lock");
        assert!(
            run.code == 5 || run.code == 6,
            "{what}: refused or already applied, got {run:?}"
        );
        assert_eq!(count, 1, "{what}: the command ran again: {run:?}");
    }
    // The original file is recognised as applied, and a new plan of the same world applies.
    let (run, count) = apply_count(&env, &h, "plan.lock");
    assert_eq!((run.code, count), (6, 1), "{run:?}");
    assert!(env.nexus(&["plan", "-o", "plan.lock"]).success());
    let (run, count) = apply_count(&env, &h, "plan.lock");
    assert_eq!((run.code, count), (0, 2), "{run:?}");
}

/// Someone who can edit the plan artifact re-hashes it with a diff whose old side is not what the
/// host has (here: showing harmless content where the host has real data). The diff still
/// describes the blob, so the file reads as valid; apply's re-probe must refuse it, write
/// nothing, and say why. The honest plan applies.
#[test]
fn apply_refuses_a_diff_whose_old_side_is_not_on_the_host() {
    let h = SshHost::builder("pf2").private_srv().start();
    let target = h.srv().join("app.conf");
    std::fs::write(&target, "password_auth yes\n").unwrap();
    harness::run(
        std::process::Command::new("chown")
            .arg(format!("{0}:{0}", harness::TEST_USER))
            .arg(&target),
    );
    let env = Project::over(
        &[&h],
        " connect-timeout=\"5s\"",
        "task \"t\" on=\"pf2\" { file \"/srv/app.conf\" content=\"password_auth no\\n\" }\n",
    );
    assert!(env.nexus(&["plan", "-o", "plan.lock"]).success());
    let original = std::fs::read(env.path("plan.lock")).unwrap();
    let id = header_of(&original)["id"].as_str().unwrap().to_string();
    let (_, body) = split(&original);
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    {
        let r = &mut v["hosts"][0]["resources"][0];
        assert!(r["diff"].as_str().unwrap().contains("-password_auth yes"));
        r["diff"] = nexus::resources::file::text_diff(
            "/srv/app.conf",
            b"# nothing configured\n",
            b"password_auth no\n",
        )
        .unwrap()
        .into();
    }
    let forged = file_with(nexus::plan::FORMAT_VERSION, Some(&id), &canonical_body(&v));
    std::fs::write(env.path("forged.lock"), &forged).unwrap();
    // The file itself is consistent: show renders the forged old side.
    let shown = env.nexus(&["show", "forged.lock"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("nothing configured"), "{shown:?}");

    let run = env.nexus(&["apply", "forged.lock"]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stderr
            .contains("the plan's diff shows an old content the host's file does not have")
            && run.stderr.contains("Nothing was executed"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "password_auth yes\n"
    );

    let run = env.nexus(&["apply", "plan.lock"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "password_auth no\n"
    );
}

/// The sample with web1's file write streaming its content from a local file instead of
/// carrying it, then edited by `f`; its body re-encoded with a correct hash.
fn streamed_sample(f: impl FnOnce(&mut serde_json::Value, &str)) -> Vec<u8> {
    let bytes = lockfile::encode(&sample());
    let body = edit_body(&bytes, |v| {
        let (i, key) = file_blob(v);
        let sha256 = first_write(v)["write"]["sha256"].clone();
        v["hosts"][0]["resources"][i]
            .as_object_mut()
            .unwrap()
            .remove("diff");
        // web2 writes the same content: it streams it too.
        v["blobs"].as_object_mut().unwrap().remove(&key);
        v["streamed"] = serde_json::json!({
            key.clone(): {"source": "dist/app.bin", "size": 2 * 1024 * 1024, "sha256": sha256}
        });
        for h in v["hosts"].as_array_mut().unwrap() {
            for r in h["resources"].as_array_mut().unwrap() {
                if r["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["stdin"] == key.as_str())
                {
                    r.as_object_mut().unwrap().remove("diff");
                }
            }
        }
        f(v, &key);
    });
    file_with(nexus::plan::FORMAT_VERSION, Some("streamed"), &body)
}

#[test]
fn streamed_contents_are_checked_like_blobs() {
    let plan = lockfile::decode(&streamed_sample(|_, _| {})).expect("a plan that streams");
    assert_eq!(plan.streamed.len(), 1);
    type Edit = Box<dyn FnOnce(&mut serde_json::Value, &str)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "small enough to be carried",
            Box::new(|v, k| v["streamed"][k]["size"] = 100.into()),
        ),
        (
            "lower-case hex",
            Box::new(|v, k| v["streamed"][k]["sha256"] = "ABC".into()),
        ),
        (
            "names no local file",
            Box::new(|v, k| v["streamed"][k]["source"] = "".into()),
        ),
        (
            "a sha256 its content does not have",
            Box::new(|v, k| v["streamed"][k]["sha256"] = "0".repeat(64).into()),
        ),
        (
            "no step sends it",
            Box::new(|v, k| {
                let entry = v["streamed"][k].clone();
                v["streamed"][&"f".repeat(64)] = entry;
            }),
        ),
        (
            "only a file write may stream",
            Box::new(|v, k| {
                let step = v["hosts"][0]["resources"][0]["steps"][0]
                    .as_object_mut()
                    .unwrap();
                step.insert("stdin".into(), k.into());
            }),
        ),
    ];
    for (want, edit) in cases {
        match lockfile::decode(&streamed_sample(edit)) {
            Err(LockfileError::Invalid { reason, .. }) => {
                assert!(reason.contains(want), "{want}: {reason}")
            }
            other => panic!("{want}: expected Invalid, got {other:?}"),
        }
    }
}
