//! Fuzz at scale: mutated plan files through the plan reader (decode, validate, apply's checks).
//!
//! - `cargo bench --bench fuzz_plan` runs `NEXUS_FUZZ_PLAN_N` mutants (default 200,000) of a
//!   real plan file and prints the figures; `NEXUS_FUZZ_PLAN_SEED` picks the sequence.
//! - `cargo test --all-targets` runs this binary without `--bench`: 2,000 mutants, the same
//!   checks, so a finding fails CI.
//!
//! Mutations: byte flips, truncations, header edits (id, order, fields, version), JSON-level edits
//! of the body (values, removed and unknown fields, diffs and blobs out of step), most of them
//! re-hashed so they reach validation. Findings: a panic, or a file that apply accepts although
//! it is not byte for byte what nexus writes for the plan it decodes to, or whose diff shows
//! lines its blob does not write. Figures are recorded in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use nexus::plan::Plan;
use nexus::plan::lockfile::{self, LockfileError};
use serde_json::Value;

#[path = "../plan_fixture/mod.rs"]
mod plan_fixture;

/// Added to the fixture's configuration: a second file with a diff, an empty file (whose diff is
/// empty), and an unguarded command.
const MORE: &str = r#"
task "more" on="web" {
    file "/srv/app/app.conf" content="port = 8080\nworkers = 4\n" mode="0640"
    file "/srv/app/maintenance" content=""
    command "echo ran >> /srv/count"
}
"#;

fn real_plan() -> Plan {
    plan_fixture::plan(
        &format!("{}{MORE}", plan_fixture::CONFIG),
        &["web1", "web2"],
    )
}

/// xorshift64*: a reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn split(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&x| x == b'\n') {
        Some(nl) => (&b[..nl], &b[nl + 1..]),
        None => (b, &[]),
    }
}

/// A file around `body` hashed as nexus hashes format 1.2 (id, newline, body).
fn rehashed(version: &str, id: &str, body: &[u8]) -> Vec<u8> {
    let hash = blake3::hash(&[id.as_bytes(), b"\n", body].concat()).to_hex();
    let mut out = format!(
        r#"{{"format":"nexus-plan","format_version":"{version}","blake3":"{hash}","id":"{id}"}}"#
    )
    .into_bytes();
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Every value of `v` by JSON pointer.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| pointers(x, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// Edits one value of the body's JSON.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let mut ps = Vec::new();
    pointers(v, String::new(), &mut ps);
    let p = ps[rng.below(ps.len())].clone();
    let Some(target) = v.pointer_mut(&p) else {
        return;
    };
    *target = match (rng.below(9), &*target) {
        (0, Value::String(s)) => {
            let mut s = s.clone();
            if !s.is_empty() {
                let i = rng.below(s.len());
                if s.is_char_boundary(i) {
                    s.insert(i, ['a', '\n', '0', '+', ' ', '-'][rng.below(6)]);
                }
            }
            Value::String(s)
        }
        (1, Value::String(s)) => Value::String(s.lines().rev().collect::<Vec<_>>().join("\n")),
        (2, Value::Number(_)) => Value::from(rng.next() % 1000),
        (3, Value::Bool(b)) => Value::Bool(!b),
        (4, Value::Object(m)) => {
            let mut m = m.clone();
            if rng.below(2) == 0 {
                let k = m.keys().nth(rng.below(m.len())).cloned();
                k.map(|k| m.remove(&k));
            } else {
                m.insert("future_field".into(), Value::from(1));
            }
            Value::Object(m)
        }
        (5, Value::Array(a)) => {
            let mut a = a.clone();
            if !a.is_empty() {
                let x = a[rng.below(a.len())].clone();
                a.insert(rng.below(a.len() + 1), x);
            }
            Value::Array(a)
        }
        (6, Value::Array(a)) => {
            let mut a = a.clone();
            if !a.is_empty() {
                a.remove(rng.below(a.len()));
            }
            Value::Array(a)
        }
        (7, _) => Value::Null,
        _ => Value::from("x"),
    };
}

/// Makes a file diff and its blob disagree: a line added to the blob (hash key updated) or to
/// the diff. This is the class of edit hole 11 of issue 14 was about.
fn desync_diff(rng: &mut Rng, v: &mut Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let h = rng.below(2);
    let Some(resources) = v["hosts"][h]["resources"].as_array_mut() else {
        return;
    };
    let with_diff: Vec<usize> = (0..resources.len())
        .filter(|&i| resources[i]["diff"].is_string())
        .collect();
    if with_diff.is_empty() {
        return;
    }
    let r = &mut resources[with_diff[rng.below(with_diff.len())]];
    if rng.below(2) == 0 {
        let d = r["diff"].as_str().unwrap_or_default().to_string();
        r["diff"] = Value::from(format!("{d}+injected\n"));
        return;
    }
    let Some(step) = r["steps"]
        .as_array_mut()
        .and_then(|s| s.iter_mut().find(|s| s["stdin"].is_string()))
    else {
        return;
    };
    let key = step["stdin"].as_str().unwrap_or_default().to_string();
    let Some(old) = v["blobs"][&key].as_str().and_then(|b| b64.decode(b).ok()) else {
        return;
    };
    let mut new = old;
    new.extend_from_slice(b"rm -rf /\n");
    let new_key = blake3::hash(&new).to_hex().to_string();
    v["hosts"][h]["resources"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .flat_map(|r| r["steps"].as_array_mut().into_iter().flatten())
        .filter(|s| s["stdin"] == key.as_str())
        .for_each(|s| s["stdin"] = Value::from(new_key.clone()));
    v["blobs"][&new_key] = Value::from(b64.encode(&new));
}

/// One mutant of `orig` (whose header id is `id`).
fn mutant(rng: &mut Rng, orig: &[u8], id: &str) -> Vec<u8> {
    let (head, body) = split(orig);
    let version = nexus::plan::FORMAT_VERSION;
    match rng.below(8) {
        0 => {
            let mut b = orig.to_vec();
            for _ in 0..=rng.below(3) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            b
        }
        1 => orig[..rng.below(orig.len())].to_vec(),
        2 => {
            // Header edits: the id, the field order, extra or missing fields, the version.
            let text = String::from_utf8_lossy(head).into_owned();
            let edited = match rng.below(6) {
                0 => text.replace(id, &format!("{:016x}", rng.next())),
                1 => text.replace(&format!(",\"id\":\"{id}\""), ""),
                2 => text.replacen('}', ",\"rerun\":true}", 1),
                3 => text.replacen("\"format\":\"nexus-plan\",", "", 1).replacen(
                    '}',
                    ",\"format\":\"nexus-plan\"}",
                    1,
                ),
                4 => text.replace(version, ["1.1", "1.3", "1.10", "2.2", "1.02"][rng.below(5)]),
                _ => text.replacen(',', ", ", 1),
            };
            [edited.as_bytes(), b"\n", body].concat()
        }
        3 => {
            // Another version or id, re-hashed by that version's rule, the body's version too.
            let new_id = format!("{:016x}", rng.next());
            let v = ["1.2", "1.3", "1.1", "1.0"][rng.below(4)];
            let body = String::from_utf8_lossy(body).replacen(
                &format!("\"format_version\":\"{version}\""),
                &format!("\"format_version\":\"{v}\""),
                1,
            );
            if v == "1.1" || v == "1.0" {
                let hash = blake3::hash(body.as_bytes()).to_hex();
                format!(r#"{{"format":"nexus-plan","format_version":"{v}","blake3":"{hash}"}}"#)
                    .into_bytes()
                    .into_iter()
                    .chain(*b"\n")
                    .chain(body.into_bytes())
                    .collect()
            } else {
                rehashed(v, &new_id, body.as_bytes())
            }
        }
        n => {
            let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
                return orig.to_vec();
            };
            if n == 4 {
                desync_diff(rng, &mut v);
            } else {
                for _ in 0..=rng.below(2) {
                    mutate_json(rng, &mut v);
                }
            }
            // Half re-encoded canonically (so they can pass apply's byte check), half as the
            // edited JSON (sorted keys), both re-hashed so they reach validation.
            let canonical = (rng.below(2) == 0)
                .then(|| serde_json::from_value::<Plan>(v.clone()).ok())
                .flatten();
            let mut b = match canonical {
                Some(p) => serde_json::to_vec(&p).unwrap(),
                None => serde_json::to_vec(&v).unwrap(),
            };
            b.push(b'\n');
            rehashed(version, id, &b)
        }
    }
}

#[derive(Default, Debug)]
struct Figures {
    executions: u64,
    panics: u64,
    /// Refused by every reader.
    refused: u64,
    /// Shown but refused by apply.
    show_only: u64,
    /// Accepted by apply, bytes different from the original (re-hashed edits nexus could write).
    accepted_changed: u64,
    accepted_same: u64,
    inconsistent: u64,
    by_error: BTreeMap<&'static str, u64>,
}

fn kind(e: &LockfileError) -> &'static str {
    match e {
        LockfileError::Read { .. } => "read",
        LockfileError::Write { .. } => "write",
        LockfileError::NotAPlan { .. } => "not a plan",
        LockfileError::UnsupportedVersion { .. } => "other major version",
        LockfileError::NewerVersion { .. } => "newer minor (apply)",
        LockfileError::Unprotected { .. } => "older minor (apply)",
        LockfileError::NotCanonical { .. } => "not canonical (apply)",
        LockfileError::Tampered { .. } => "tampered",
        LockfileError::Invalid { .. } => "invalid",
    }
}

/// Why an accepted file is inconsistent, if it is.
fn inconsistency(bytes: &[u8], plan: &Plan, id: &str) -> Option<String> {
    if lockfile::encode_with_id(plan, id) != bytes {
        return Some("accepted bytes are not what nexus writes for the plan".into());
    }
    for h in &plan.hosts {
        for r in &h.resources {
            let Some(diff) = &r.diff else { continue };
            let Some(blob) = r
                .steps
                .iter()
                .find_map(|s| s.stdin.as_ref())
                .and_then(|k| lockfile::blob(plan, k))
            else {
                return Some(format!("{}: a diff without a blob", r.key));
            };
            let blob = String::from_utf8_lossy(&blob);
            // Independently of the reader: each hunk's new side (context and added lines) is
            // a contiguous run of the blob's text.
            for hunk in diff.split("\n@@ ").skip(1) {
                let new_side: String = hunk
                    .split_inclusive('\n')
                    .skip(1)
                    .filter_map(|l| l.strip_prefix(' ').or_else(|| l.strip_prefix('+')))
                    .collect();
                if !blob.contains(&new_side) {
                    return Some(format!(
                        "{}: the diff shows lines the blob does not write",
                        r.key
                    ));
                }
            }
        }
    }
    None
}

fn run(n: u64, seed: u64) -> Figures {
    let plan = real_plan();
    let id = "0123456789abcdef";
    let orig = lockfile::encode_with_id(&plan, id);
    assert!(
        lockfile::decode_named(&orig, "plan")
            .unwrap()
            .applicable()
            .is_ok()
    );
    // Panics are caught and counted; their default message would repeat each one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed | 1);
    let mut f = Figures::default();
    let mut current = orig.clone();
    for i in 0..n {
        // Mostly one mutation of the original; sometimes a mutation of the last mutant.
        let base = if i % 4 == 3 {
            current.clone()
        } else {
            orig.clone()
        };
        let bytes = mutant(&mut rng, &base, id);
        f.executions += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            lockfile::decode_named(&bytes, "plan").map(|file| {
                let file_id = file.id().map(str::to_string);
                (file.applicable(), file_id)
            })
        }));
        match outcome {
            Err(_) => {
                f.panics += 1;
                eprintln!("PANIC on mutant {i}: {:?}", String::from_utf8_lossy(&bytes));
            }
            Ok(Err(e)) => {
                f.refused += 1;
                *f.by_error.entry(kind(&e)).or_default() += 1;
            }
            Ok(Ok((Err(e), _))) => {
                f.show_only += 1;
                *f.by_error.entry(kind(&e)).or_default() += 1;
            }
            Ok(Ok((Ok((p, _)), file_id))) => {
                if bytes == orig {
                    f.accepted_same += 1;
                } else {
                    f.accepted_changed += 1;
                }
                if let Some(why) = inconsistency(&bytes, &p, file_id.as_deref().unwrap_or("")) {
                    f.inconsistent += 1;
                    eprintln!("INCONSISTENT mutant {i}: {why}");
                }
                current = bytes;
            }
        }
    }
    let _ = std::panic::take_hook();
    f
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::var("NEXUS_FUZZ_PLAN_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 200_000 } else { 2_000 });
    let seed = std::env::var("NEXUS_FUZZ_PLAN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let start = std::time::Instant::now();
    let f = run(n, seed);
    println!(
        "fuzz_plan: seed {seed}, {:.1}s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "executions {}, panics {}, accepted-but-inconsistent {}",
        f.executions, f.panics, f.inconsistent
    );
    println!(
        "refused by every reader {}, shown but refused by apply {}, accepted by apply {} ({} re-hashed edits, {} unchanged)",
        f.refused,
        f.show_only,
        f.accepted_changed + f.accepted_same,
        f.accepted_changed,
        f.accepted_same
    );
    for (k, c) in &f.by_error {
        println!("  {k}: {c}");
    }
    assert!(
        f.panics == 0 && f.inconsistent == 0,
        "the plan reader has findings: {f:?}"
    );
}
