//! Many resources of one host in one command.
//!
//! Each SSH command costs the host a session and two shells, which dominated a cold apply: a
//! host with 90 resources to converge paid for 90 of them. Consecutive resources that run as a
//! single command each ([`step::merged`]), share their context (sudo, user, directory,
//! environment), have no retries or timeout (which count per command) and no download, run as
//! one command: each resource in its own subshell, framed by markers on stdout and stderr, so
//! its output, exit status and guard verdict are its own; the first failure ends the command
//! with that resource's status and the resources after it are left to the caller. Contents
//! travel on stdin one after the other, each handed to its resource by `head -c`. A resource's
//! duration is measured here, from when the end marker of the resource before it arrived.

use std::collections::BTreeMap;
use std::time::Instant;

use super::step::{self, Escalation, StepsOutcome};
use crate::plan::PlannedResource;
use crate::plan::{Action, Step};
use crate::plan::{file_write, make_dir};
use crate::transport::{ExitStatus, Output, OutputChunk, OutputStream, Transport};

/// Most resources one command carries.
pub const MAX_RESOURCES: usize = 128;

/// The largest content that joins a batch, and the most content bytes one command carries: a
/// bigger upload goes on its own, by SFTP where the host has it (exec/transfer.rs).
const MAX_STDIN: usize = super::transfer::SFTP_OVER;

/// The most script bytes one command carries, so that it stays on the command line (quoted, and
/// quoted again under sudo) while its contents take stdin.
pub const MAX_SCRIPT: usize = 24 * 1024;

/// The single command `r` runs as, and whether it starts with a merged guard, when `r` may share
/// a command with others.
pub fn unit(r: &PlannedResource) -> Option<(Step, bool)> {
    if r.action == Action::NoOp || r.retry.retries > 0 || r.retry.timeout.is_some() {
        return None;
    }
    let mut units = step::merged(r);
    if units.len() != 1 {
        return None;
    }
    let (s, guarded) = units.pop()?;
    (s.download_to.is_none()
        && s.stdin_secrets.is_empty()
        && !s.stdin_sealed
        && s.skip_if.is_none())
    .then_some((s, guarded))
}

/// One resource of a batch: its command, whether a guard may skip it, its content, and whether
/// that content is written by the script itself (a file write, see resources/file_write.rs)
/// rather than read from stdin.
pub struct Member<'a> {
    pub step: &'a Step,
    pub guarded: bool,
    pub stdin: Option<Vec<u8>>,
    pub embedded: bool,
}

/// The batch script for `members`, each run in a subshell between markers. A member with
/// content on stdin reads exactly its bytes through `head -c`; what it leaves unread is
/// drained, so the next member's content starts where it should. Consecutive file writes
/// with embedded contents share their checks, modes and owners ([`file_write::run_prepare`]);
/// `nonce` names their temporary files.
pub fn script(members: &[Member<'_>], token: &str, nonce: &str) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < members.len() {
        let run: Vec<file_write::RunMember<'_>> = members[i..]
            .iter()
            .zip(i..)
            .map_while(|(m, index)| {
                let write = m.step.write.as_ref().filter(|_| m.embedded)?;
                Some(file_write::RunMember {
                    index,
                    write,
                    content: m.stdin.as_deref()?,
                })
            })
            .collect();
        if !run.is_empty() {
            s.push_str(&file_write::run_prepare(&run, nonce));
            for r in &run {
                let body = file_write::run_member(r.index, r.write);
                s.push_str(&frame(r.index, token, &format!("( {body}\n) </dev/null\n")));
            }
            i += run.len();
            continue;
        }
        let dirs: Vec<(usize, &make_dir::MakeDir)> = members[i..]
            .iter()
            .zip(i..)
            .map_while(|(m, index)| Some((index, m.step.mkdir.as_ref()?)))
            .collect();
        if dirs.len() > 1 {
            s.push_str(&make_dir::run_prepare(&dirs));
            for (index, d) in &dirs {
                let body = make_dir::run_member(d);
                s.push_str(&frame(*index, token, &format!("( {body}\n) </dev/null\n")));
            }
            i += dirs.len();
            continue;
        }
        let m = &members[i];
        let body = match &m.stdin {
            Some(bytes) => format!(
                "head -c {} | {{ ( {}\n); _nx_rc=$?; while read -r _nx_x; do :; done; exit $_nx_rc; }}\n",
                bytes.len(),
                m.step.script
            ),
            None => format!("( {}\n) </dev/null\n", m.step.script),
        };
        s.push_str(&frame(i, token, &body));
        i += 1;
    }
    s
}

/// `body` between member `i`'s markers, ending the batch when it failed.
fn frame(i: usize, token: &str, body: &str) -> String {
    format!(
        "printf '\\n@@{token} {i} begin\\n'; printf '\\n@@{token} {i} begin\\n' >&2\n\
         {body}\
         _nx_rc=$?\nprintf '\\n@@{token} {i} end %s\\n' \"$_nx_rc\"; printf '\\n@@{token} {i} end\\n' >&2\n\
         [ \"$_nx_rc\" -eq 0 ] || exit \"$_nx_rc\"\n"
    )
}

/// A marker token that output cannot forge by accident: derived from the scripts.
pub fn token(members: &[Member<'_>]) -> String {
    let mut h = blake3::Hasher::new();
    for m in members {
        h.update(m.step.script.as_bytes());
        h.update(b"\0");
    }
    format!("NEXUSB{}", &h.finalize().to_hex()[..16])
}

/// What one member printed, and its exit status if it finished.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Part {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<i32>,
}

/// A member's text in one stream, and its status if its end marker carried one.
type Frame = (Vec<u8>, Option<i32>);

/// Splits one stream by the markers: per member that began, its text and, from an end marker
/// with a status, the status. Text outside the frames (a failing `cd` before the first member)
/// is returned apart.
fn frames(text: &[u8], token: &str, n: usize) -> (Vec<Frame>, Vec<u8>) {
    let prefix = format!("@@{token} ");
    let mut parts: Vec<Frame> = Vec::new();
    let mut outside = Vec::new();
    let mut open = false;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    for (j, line) in lines.iter().enumerate() {
        let target = match parts.last_mut() {
            Some(part) if open => &mut part.0,
            _ => &mut outside,
        };
        let Some(rest) = line.strip_prefix(prefix.as_bytes()) else {
            target.extend_from_slice(line);
            // The last piece has no newline after it (empty when the text ended with one).
            if j + 1 < lines.len() {
                target.push(b'\n');
            }
            continue;
        };
        // Each marker's printf starts with a newline of its own.
        if target.last() == Some(&b'\n') {
            target.pop();
        }
        let rest = String::from_utf8_lossy(rest);
        let mut words = rest.split(' ');
        let (Some(Ok(i)), Some(kind)) = (words.next().map(str::parse::<usize>), words.next())
        else {
            continue;
        };
        match kind {
            "begin" if i == parts.len() && i < n => {
                parts.push((Vec::new(), None));
                open = true;
            }
            "end" if open && i + 1 == parts.len() => {
                let last = parts.last_mut().expect("a part is open");
                last.1 = Some(words.next().and_then(|s| s.parse().ok()).unwrap_or(-1));
                open = false;
            }
            _ => {}
        }
    }
    (parts, outside)
}

/// Splits a batch's output into its members' parts, in order, for the members that began. The
/// status comes from the stdout frames; stderr frames carry only text.
pub fn split(stdout: &[u8], stderr: &[u8], token: &str, n: usize) -> (Vec<Part>, Vec<u8>) {
    let (outs, _) = frames(stdout, token, n);
    let (errs, outside) = frames(stderr, token, n);
    let mut errs = errs.into_iter();
    let parts = outs
        .into_iter()
        .map(|(stdout, status)| Part {
            stdout,
            stderr: errs.next().map(|e| e.0).unwrap_or_default(),
            status,
        })
        .collect();
    (parts, outside)
}

/// What arrived of a batch's output, and when each member's end marker came.
#[derive(Default)]
struct Arrived {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    ends: Vec<Instant>,
}

/// Collects the output as it arrives, noting when each end marker came: the members' durations,
/// and what finished when the connection is lost part-way.
async fn watch(
    mut chunks: tokio::sync::mpsc::UnboundedReceiver<OutputChunk>,
    token: String,
) -> Arrived {
    let needle = format!("\n@@{token} ");
    let mut got = Arrived::default();
    let mut scanned = 0;
    while let Some(chunk) = chunks.recv().await {
        if chunk.stream != OutputStream::Stdout {
            got.stderr.extend_from_slice(&chunk.data);
            continue;
        }
        got.stdout.extend_from_slice(&chunk.data);
        let now = Instant::now();
        let buf = &got.stdout;
        // Complete marker lines only; a marker split across chunks is found with the next one.
        while let Some(at) = find(&buf[scanned..], needle.as_bytes()).map(|p| p + scanned) {
            let Some(eol) = buf[at + 1..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &buf[at + 1..at + 1 + eol];
            if line.split(|&b| b == b' ').nth(2) == Some(b"end") {
                got.ends.push(now);
            }
            scanned = at + 1 + eol;
        }
    }
    got
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `units` (one per resource, in order) as one command and returns the outcomes of the
/// resources that ran, in order: all of them, or up to and including the one
/// that failed. Resources after that are the caller's.
pub async fn run(
    t: &dyn Transport,
    blobs: &BTreeMap<String, String>,
    units: &[(Step, bool)],
    esc: &Escalation,
    secrets: &crate::secrets::Resolved,
) -> Option<Vec<StepsOutcome>> {
    let start = Instant::now();
    // Before anything ran (a bad blob, an unreadable secret), or when the command could not run
    // or finish (connection, sudo): the first resource's failure, as it would have been alone.
    let fail_first = |error: String, lost: bool, ran: bool| {
        vec![StepsOutcome {
            ok: false,
            ran,
            exit_code: None,
            attempts: u32::from(ran),
            duration: start.elapsed(),
            output_tail: String::new(),
            error: Some(error),
            connection_lost: lost,
        }]
    };
    let mut members = Vec::with_capacity(units.len());
    for (step, guarded) in units {
        let stdin = match &step.stdin {
            None => None,
            Some(hash) => match step::content(blobs, hash) {
                Ok(bytes) => Some(bytes),
                Err(e) => return Some(fail_first(e.to_string(), false, false)),
            },
        };
        members.push(Member {
            step,
            guarded: *guarded,
            stdin,
            embedded: false,
        });
    }
    // Contents go into the script only when nothing else needs stdin: then a script too long
    // for a command line can travel on stdin instead.
    if members
        .iter()
        .all(|m| m.stdin.is_none() || m.step.write.is_some())
    {
        for m in &mut members {
            m.embedded = m.step.write.is_some();
        }
    }
    let token = token(&members);
    let mut nonce = [0u8; 6];
    if getrandom::fill(&mut nonce).is_err() {
        return None;
    }
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = match step::spec(&units[0].0, script(&members, &token, &nonce), esc, secrets) {
        Ok(c) => c,
        Err(e) => return Some(fail_first(e.to_string(), false, false)),
    };
    let stdin: Vec<u8> = members
        .iter()
        .filter(|m| !m.embedded)
        .filter_map(|m| m.stdin.as_deref())
        .flatten()
        .copied()
        .collect();
    if members.iter().any(|m| m.stdin.is_some() && !m.embedded) {
        cmd = cmd.stdin(stdin);
    }
    // As the SSH transport sends it, the longest form.
    match crate::transport::wrap::wrap_watched(&cmd, None) {
        Ok(w) if w.ssh_command_line().len() <= crate::transport::wrap::COMMAND_LINE_MAX => {}
        _ => return None,
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(rx, token.clone()));
    let res = t.run_streaming(&cmd, Some(tx)).await;
    let arrived = watcher.await.unwrap_or_default();
    Some(match res {
        Ok(out) => outcomes(&members, &out, &token, start, &arrived.ends),
        Err(e) => {
            // The members that finished before the command broke did run; the one in flight
            // fails with the error, as it would have alone.
            let (parts, _) = split(&arrived.stdout, &arrived.stderr, &token, members.len());
            let done = parts.iter().take_while(|p| p.status == Some(0)).count();
            if done == 0 {
                return Some(fail_first(e.to_string(), e.is_connection_error(), true));
            }
            let partial = Output {
                exit: ExitStatus::Code(0),
                stdout: arrived.stdout,
                stderr: arrived.stderr,
                duration: start.elapsed(),
            };
            let mut result = outcomes(&members[..done], &partial, &token, start, &arrived.ends);
            result.extend(fail_first(e.to_string(), e.is_connection_error(), true));
            result
        }
    })
}

/// The outcomes of the members that began, from the batch's output.
fn outcomes(
    members: &[Member<'_>],
    out: &Output,
    token: &str,
    start: Instant,
    ends: &[Instant],
) -> Vec<StepsOutcome> {
    let (parts, outside) = split(&out.stdout, &out.stderr, token, members.len());
    if parts.is_empty() {
        // Nothing began: the batch failed before its first member (a `cd` into a missing
        // directory, sudo): that is the first resource's failure, as it would have been alone.
        let alone = Output {
            exit: out.exit.clone(),
            stdout: Vec::new(),
            stderr: outside,
            duration: out.duration,
        };
        return vec![StepsOutcome {
            ok: false,
            ran: true,
            exit_code: out.code(),
            attempts: 1,
            duration: start.elapsed(),
            output_tail: step::tail(&alone.stderr),
            error: Some(alone.failure_summary()),
            connection_lost: false,
        }];
    }
    let mut result = Vec::with_capacity(parts.len());
    let mut since = start;
    for (i, (part, m)) in parts.into_iter().zip(members).enumerate() {
        let until = ends.get(i).copied().unwrap_or_else(Instant::now);
        let duration = until.saturating_duration_since(since);
        since = until;
        // A member cut short (its end marker never came) ended with the batch.
        let exit = match part.status {
            Some(code) => ExitStatus::Code(code),
            None => out.exit.clone(),
        };
        let alone = Output {
            exit,
            stdout: part.stdout,
            stderr: part.stderr,
            duration,
        };
        if alone.success() && m.guarded && alone.stdout == step::SKIPPED.as_bytes() {
            result.push(StepsOutcome {
                ok: true,
                ran: false,
                exit_code: None,
                attempts: 0,
                duration,
                output_tail: String::new(),
                error: None,
                connection_lost: false,
            });
            continue;
        }
        let mut both = alone.stdout.clone();
        both.extend_from_slice(&alone.stderr);
        let ok = alone.success();
        result.push(StepsOutcome {
            ok,
            ran: true,
            exit_code: alone.code(),
            attempts: 1,
            duration,
            output_tail: step::tail(&both),
            error: (!ok).then(|| alone.failure_summary()),
            connection_lost: false,
        });
        if !ok {
            break;
        }
    }
    result
}

/// Whether a unit's content may join a batch that already carries `carried` bytes.
pub fn fits(blobs: &BTreeMap<String, String>, step: &Step, carried: usize) -> Option<usize> {
    let Some(hash) = &step.stdin else {
        return Some(0);
    };
    // base64 is 4 bytes per 3: a bound that needs no decoding.
    let size = blobs.get(hash)?.len() / 4 * 3;
    (size <= MAX_STDIN && carried + size <= MAX_STDIN).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::q;
    use crate::transport::LocalTransport;

    fn blob(map: &mut BTreeMap<String, String>, bytes: &[u8]) -> String {
        use base64::Engine as _;
        let hash = blake3::hash(bytes).to_hex().to_string();
        map.insert(
            hash.clone(),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        );
        hash
    }

    fn unit(script: &str) -> (Step, bool) {
        (Step::new(script, false), false)
    }

    async fn run_units(
        units: &[(Step, bool)],
        blobs: &BTreeMap<String, String>,
    ) -> (Vec<StepsOutcome>, u64) {
        let t = LocalTransport::new("local");
        let esc = Escalation {
            become_: None,
            error: None,
        };
        let out = run(&t, blobs, units, &esc, &Default::default())
            .await
            .unwrap();
        (out, t.commands_run())
    }

    #[tokio::test]
    async fn members_keep_their_output_status_content_and_guard() {
        let dir = tempfile::tempdir().unwrap();
        let d = q(dir.path().to_str().unwrap());
        let mut blobs = BTreeMap::new();
        let mut with = |script: String, bytes: &[u8]| {
            let mut s = Step::new(script, false);
            s.stdin = Some(blob(&mut blobs, bytes));
            (s, false)
        };
        let first = with(format!("cat > {d}/one"), b"first\ncontent\n");
        // Reads none of its content: the next member must still get exactly its own.
        let ignores = with("echo ignoring".into(), &vec![b'x'; 200_000]);
        let binary = with(format!("cat > {d}/two"), b"\0\xff no newline");
        let empty = with(format!("cat > {d}/three"), b"");
        let mut skipped = Step::new(format!("echo ran >> {d}/guarded"), false);
        skipped.skip_if = Some(format!("[ -e {d}/one ]"));
        let mut runs = Step::new(format!("echo ran >> {d}/guarded"), false);
        runs.skip_if = Some(format!("[ -e {d}/missing ]"));
        let merge = |s: Step| {
            let mut r: PlannedResource = serde_json::from_value(serde_json::json!({
                "key": "t#1", "task": "t", "role": "task", "id": "x", "kind": "command",
                "label": "x", "action": "run", "reason": "test",
            }))
            .unwrap();
            r.steps = vec![s];
            super::unit(&r).unwrap()
        };
        let units = vec![
            first,
            unit("printf 'out, no newline'; echo err >&2"),
            ignores,
            binary,
            empty,
            merge(skipped),
            merge(runs),
            unit("set -e; x=1; exit 0"),
            unit("echo \"x=${x:-unset}\""),
        ];
        let (out, commands) = run_units(&units, &blobs).await;
        assert_eq!(commands, 1);
        assert_eq!(out.len(), units.len());
        assert!(out.iter().all(|o| o.ok), "{out:?}");
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(read("one"), b"first\ncontent\n");
        assert_eq!(read("two"), b"\0\xff no newline");
        assert_eq!(read("three"), b"");
        assert_eq!(read("guarded"), b"ran\n");
        assert_eq!(out[1].output_tail, "out, no newlineerr\n");
        assert_eq!(out[2].output_tail, "ignoring\n");
        assert!(!out[5].ran && out[6].ran && out[0].ran);
        assert_eq!((out[5].exit_code, out[5].attempts), (None, 0));
        assert_eq!(out[8].output_tail, "x=unset\n");
    }

    /// A write step of `bytes` to `path`, as a file resource plans it.
    fn write(
        blobs: &mut BTreeMap<String, String>,
        path: &std::path::Path,
        bytes: &[u8],
        mode: Option<u32>,
    ) -> (Step, bool) {
        use crate::resources::file::{Over, WriteContent, write_step};
        blob(blobs, bytes);
        let step = write_step(
            path.to_str().unwrap(),
            WriteContent::Bytes(bytes),
            None,
            None,
            mode.map(crate::syntax::values::Mode),
            Over::File { backup_to: None },
            false,
        );
        assert!(step.write.is_some());
        (step, false)
    }

    fn mode_of(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn writes_share_one_command_and_land_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("kept"), b"old").unwrap();
        std::fs::set_permissions(
            p("kept"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut blobs = BTreeMap::new();
        let binary: Vec<u8> = (0..=255u8).rev().chain(*b"%s '\\0 \n").collect();
        let units = vec![
            write(
                &mut blobs,
                &p("text"),
                b"line one\nsecond 'quoted' 100%\n",
                Some(0o640),
            ),
            write(&mut blobs, &p("binary"), &binary, Some(0o600)),
            write(&mut blobs, &p("new default"), b"", None),
            // Keeps its existing mode: settled alone, inside the shared command.
            write(&mut blobs, &p("kept"), b"new", None),
            unit(&format!(
                "echo between > {}",
                q(p("between").to_str().unwrap())
            )),
            write(&mut blobs, &p("after"), b"-n not an option\n", Some(0o4755)),
        ];
        let (out, commands) = run_units(&units, &blobs).await;
        assert_eq!(commands, 1);
        assert!(out.iter().all(|o| o.ok && o.ran), "{out:?}");
        assert_eq!(
            std::fs::read(p("text")).unwrap(),
            b"line one\nsecond 'quoted' 100%\n"
        );
        assert_eq!(std::fs::read(p("binary")).unwrap(), binary);
        assert_eq!(std::fs::read(p("new default")).unwrap(), b"");
        assert_eq!(std::fs::read(p("kept")).unwrap(), b"new");
        assert_eq!(std::fs::read(p("after")).unwrap(), b"-n not an option\n");
        assert_eq!(
            [
                mode_of(&p("text")),
                mode_of(&p("binary")),
                mode_of(&p("new default"))
            ],
            [0o640, 0o600, 0o644]
        );
        assert_eq!((mode_of(&p("kept")), mode_of(&p("after"))), (0o600, 0o4755));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".nexus-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_write_that_cannot_happen_fails_alone_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::create_dir(p("a directory")).unwrap();
        let mut blobs = BTreeMap::new();
        let units = vec![
            write(&mut blobs, &p("first"), b"1", Some(0o644)),
            write(&mut blobs, &p("missing/inner"), b"2", Some(0o644)),
            write(&mut blobs, &p("third"), b"3", Some(0o644)),
        ];
        let (out, _) = run_units(&units, &blobs).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok);
        assert!(!out[1].ok);
        assert!(
            out[1]
                .output_tail
                .contains("missing does not exist (add a directory resource for it)"),
            "{out:?}"
        );
        assert_eq!(std::fs::read(p("first")).unwrap(), b"1");
        assert!(!p("third").exists());
        // A directory where the file goes; a shared command failing (an unknown owner) leaves
        // each write to settle alone, so the error is the member's own.
        let mut owned = write(&mut blobs, &p("owned"), b"4", Some(0o644));
        let w = owned.0.write.as_mut().unwrap();
        w.owner = Some("no-such-user-nexus".into());
        w.group = Some("root".into());
        owned.0.script = w.script();
        let units = vec![
            write(&mut blobs, &p("fine"), b"5", Some(0o600)),
            owned,
            write(&mut blobs, &p("a directory"), b"6", None),
        ];
        let (out, _) = run_units(&units, &blobs).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok, "{out:?}");
        assert_eq!(mode_of(&p("fine")), 0o600);
        assert!(!out[1].ok);
        assert!(out[1].output_tail.contains("no-such-user-nexus"), "{out:?}");
        assert!(!p("owned").exists());
        let units = vec![
            write(&mut blobs, &p("fine"), b"7", Some(0o600)),
            write(&mut blobs, &p("a directory"), b"6", None),
        ];
        let (out, _) = run_units(&units, &blobs).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok && !out[1].ok, "{out:?}");
        assert!(
            out[1].output_tail.contains("a directory is a directory"),
            "{out:?}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".nexus-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A directory creation step, as a directory resource plans it.
    fn mkdir(path: &std::path::Path, mode: Option<&str>, owner: Option<&str>) -> (Step, bool) {
        let d = crate::plan::make_dir::MakeDir {
            path: path.to_str().unwrap().into(),
            mode: mode.map(str::to_string),
            owner: owner.map(str::to_string),
            group: None,
        };
        let mut step = Step::new(d.script(), false);
        step.mkdir = Some(d);
        (step, false)
    }

    #[tokio::test]
    async fn directories_share_one_mkdir_in_order_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let units = vec![
            mkdir(&p("a"), Some("0755"), None),
            mkdir(&p("a/private"), Some("0700"), None),
            mkdir(&p("a/private/deeper"), Some("0700"), None),
            mkdir(&p("b"), Some("0750"), None),
        ];
        let (out, commands) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(commands, 1);
        assert!(out.iter().all(|o| o.ok && o.ran), "{out:?}");
        assert_eq!(
            ["a", "a/private", "a/private/deeper", "b"].map(|n| mode_of(&p(n))),
            [0o755, 0o700, 0o700, 0o750]
        );
    }

    #[tokio::test]
    async fn directories_under_missing_parents_share_one_command_and_undo_the_parents() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        // Parents no resource declares are made as `mkdir -p` makes them alone.
        let units = vec![
            mkdir(&p("new/a"), Some("0750"), None),
            mkdir(&p("new/deeper/b"), Some("0700"), None),
            mkdir(&p("other/c"), Some("0750"), None),
        ];
        let (out, commands) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(commands, 1);
        assert!(out.iter().all(|o| o.ok && o.ran), "{out:?}");
        assert_eq!(
            ["new/a", "new/deeper/b", "other/c"].map(|n| mode_of(&p(n))),
            [0o750, 0o700, 0o750]
        );
        // The shared chown fails: the parents the shared mkdir made go with what it made, so
        // the second member's parent is not left behind by a batch that stopped at the first.
        let units = vec![
            mkdir(&p("x1/y/a"), Some("0755"), Some("no-such-user-nexus")),
            mkdir(&p("x2/b"), Some("0755"), None),
        ];
        let (out, _) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(!out[0].ok, "{out:?}");
        assert!(out[0].output_tail.contains("no-such-user-nexus"), "{out:?}");
        assert!(
            p("x1/y/a").is_dir(),
            "the member alone made it, as mkdir -p does"
        );
        assert!(
            !p("x2").exists(),
            "a parent the shared mkdir made was left behind"
        );
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_made_fails_alone_and_later_ones_are_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("in the way"), b"").unwrap();
        // Seen beforehand: each runs alone.
        let units = vec![
            mkdir(&p("one"), Some("0755"), None),
            mkdir(&p("in the way"), Some("0755"), None),
            mkdir(&p("three"), Some("0755"), None),
        ];
        let (out, _) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok && !out[1].ok, "{out:?}");
        assert!(out[1].output_tail.contains("File exists"), "{out:?}");
        assert!(p("one").is_dir() && !p("three").exists());
        // Seen only when the shared chown fails: what the shared mkdir made is removed, and
        // each runs alone, as it would have without the others.
        let units = vec![
            mkdir(&p("four"), Some("0755"), None),
            mkdir(&p("five"), Some("0755"), Some("no-such-user-nexus")),
            mkdir(&p("six"), Some("0755"), None),
        ];
        let (out, _) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok && !out[1].ok, "{out:?}");
        assert!(out[1].output_tail.contains("no-such-user-nexus"), "{out:?}");
        assert!(p("four").is_dir() && !p("six").exists());
    }

    #[tokio::test]
    async fn the_first_failure_ends_the_batch_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let d = q(dir.path().to_str().unwrap());
        let units = vec![
            unit(&format!("touch {d}/a; echo warning >&2")),
            unit("echo partial; echo 'it broke' >&2; exit 4"),
            unit(&format!("touch {d}/c")),
        ];
        let (out, _) = run_units(&units, &BTreeMap::new()).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].ok && out[0].output_tail == "warning\n");
        assert!(!out[1].ok);
        assert_eq!(out[1].exit_code, Some(4));
        assert_eq!(out[1].error.as_deref(), Some("exit code 4: it broke"));
        assert_eq!(out[1].output_tail, "partial\nit broke\n");
        assert!(!dir.path().join("c").exists());
        // A failure before the first member (its directory is missing) is the first's.
        let mut a = Step::new("true", false);
        a.cwd = Some(dir.path().join("missing").to_str().unwrap().to_string());
        let b = a.clone();
        let (out, _) = run_units(&[(a, false), (b, false)], &BTreeMap::new()).await;
        assert_eq!(out.len(), 1);
        assert!(!out[0].ok && out[0].exit_code == Some(1), "{out:?}");
    }

    #[tokio::test]
    async fn a_command_too_long_beside_its_contents_runs_nothing() {
        let mut blobs = BTreeMap::new();
        // Quoting doubles each backslash: 70,000 of them make a command line too long.
        let mut with_content =
            Step::new(format!("cat >/dev/null # {}", "\\".repeat(70_000)), false);
        with_content.stdin = Some(blob(&mut blobs, b"x"));
        let t = LocalTransport::new("local");
        let esc = Escalation {
            become_: None,
            error: None,
        };
        let units = [(with_content, false), unit("true")];
        assert!(
            run(&t, &blobs, &units, &esc, &Default::default())
                .await
                .is_none()
        );
        assert_eq!(t.commands_run(), 0);
    }

    #[test]
    fn markers_split_both_streams() {
        let token = "NEXUSBx";
        let out = b"\n@@NEXUSBx 0 begin\na\nb\n\n@@NEXUSBx 0 end 0\n\n@@NEXUSBx 1 begin\nc\n@@NEXUSBx 1 end 2\n\n@@NEXUSBx 2 begin\ncut";
        let err = b"early\n\n@@NEXUSBx 0 begin\n\n@@NEXUSBx 0 end\n\n@@NEXUSBx 1 begin\noops\n\n@@NEXUSBx 1 end\n";
        let (parts, outside) = split(out, err, token, 3);
        assert_eq!(outside, b"early\n");
        assert_eq!(
            parts,
            vec![
                Part {
                    stdout: b"a\nb\n".to_vec(),
                    stderr: b"".to_vec(),
                    status: Some(0)
                },
                Part {
                    stdout: b"c".to_vec(),
                    stderr: b"oops\n".to_vec(),
                    status: Some(2)
                },
                Part {
                    stdout: b"cut".to_vec(),
                    stderr: b"".to_vec(),
                    status: None
                },
            ]
        );
        // Markers beyond the batch or out of order are text.
        let (parts, _) = split(b"\n@@NEXUSBx 1 begin\nx\n", b"", token, 1);
        assert!(parts.is_empty());
    }

    /// A directory of every program in /usr/bin, `mv` and `rename.ul` logging each call to
    /// `log` before doing their work; `rename.ul` left out when `rename` is false, and `mv`
    /// refusing to write over a name ending in `refuse_mv` when given.
    fn programs(rename: bool, refuse_mv: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let bin = tempfile::tempdir().unwrap();
        let log = bin.path().join("calls.log");
        for e in std::fs::read_dir("/usr/bin").unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name == "mv" || name == "rename.ul" {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), bin.path().join(&name)).unwrap();
        }
        let refuse = match refuse_mv {
            Some(end) => format!(
                "for last; do :; done; case $last in *{end}) echo \"mv: refused $last\" >&2; exit 1;; esac\n"
            ),
            None => String::new(),
        };
        let wrap = |name: &str, body: &str| {
            let p = bin.path().join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> {}\n{body}",
                    q(log.to_str().unwrap())
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        wrap("mv", &format!("{refuse}exec /usr/bin/mv \"$@\"\n"));
        if rename {
            wrap("rename.ul", "exec /usr/bin/rename.ul \"$@\"\n");
        }
        (bin, log)
    }

    /// Runs the batch of file writes `files` (path, content) with the programs of `bin`; returns
    /// the script's exit status and the calls logged.
    fn run_writes(files: &[(std::path::PathBuf, &[u8])], bin: &std::path::Path) -> (bool, String) {
        run_writes_after("", files, bin)
    }

    /// [`run_writes`], with `before` run first in the same shell (it shares `$$`).
    fn run_writes_after(
        before: &str,
        files: &[(std::path::PathBuf, &[u8])],
        bin: &std::path::Path,
    ) -> (bool, String) {
        let mut blobs = BTreeMap::new();
        let units: Vec<(Step, bool)> = files
            .iter()
            .map(|(p, c)| write(&mut blobs, p, c, Some(0o640)))
            .collect();
        let members: Vec<Member<'_>> = units
            .iter()
            .zip(files)
            .map(|((step, guarded), (_, c))| Member {
                step,
                guarded: *guarded,
                stdin: Some(c.to_vec()),
                embedded: true,
            })
            .collect();
        let text = script(&members, &token(&members), "n0nce");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{before}\n{text}"))
            .env("PATH", bin)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(bin.join("calls.log")).unwrap_or_default();
        (out.status.success(), calls)
    }

    fn temps_left(dirs: &[&std::path::Path]) -> Vec<String> {
        dirs.iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".nexus-"))
            .collect()
    }

    #[test]
    fn new_files_of_a_batch_are_renamed_into_place_by_one_program() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files: Vec<(std::path::PathBuf, &[u8])> = vec![
            (a.path().join("one.conf"), b"1\n"),
            (b.path().join("two.conf"), b"2\n"),
            (a.path().join("three"), b"3\n"),
            (b.path().join("four with space"), b""),
        ];
        let (bin, _) = programs(true, None);
        let (ok, calls) = run_writes(&files, bin.path());
        assert!(ok, "{calls}");
        for (p, c) in &files {
            assert_eq!(std::fs::read(p).unwrap(), *c, "{}", p.display());
            assert_eq!(mode_of(p), 0o640);
        }
        assert_eq!(calls.matches("rename.ul ").count(), 1, "{calls}");
        assert_eq!(calls.matches("mv ").count(), 0, "{calls}");
        assert_eq!(temps_left(&[a.path(), b.path()]), Vec::<String>::new());

        // An existing target is replaced by its own `mv`; the new files before it share the
        // rename, those after it each take their own: the order of what lands stays the plan's.
        std::fs::write(a.path().join("three"), b"old").unwrap();
        for (p, _) in [&files[0], &files[1], &files[3]] {
            std::fs::remove_file(p).unwrap();
        }
        let (bin, _) = programs(true, None);
        let (ok, calls) = run_writes(&files, bin.path());
        assert!(ok, "{calls}");
        for (p, c) in &files {
            assert_eq!(std::fs::read(p).unwrap(), *c, "{}", p.display());
        }
        assert_eq!(calls.matches("rename.ul ").count(), 1, "{calls}");
        assert_eq!(calls.matches("mv ").count(), 2, "{calls}");

        // A host without util-linux's rename: one `mv` each, as before.
        for (p, _) in &files {
            std::fs::remove_file(p).unwrap();
        }
        let (bin, _) = programs(false, None);
        let (ok, calls) = run_writes(&files, bin.path());
        assert!(ok, "{calls}");
        for (p, c) in &files {
            assert_eq!(std::fs::read(p).unwrap(), *c, "{}", p.display());
        }
        assert_eq!(calls.matches("mv ").count(), 4, "{calls}");
        assert_eq!(temps_left(&[a.path(), b.path()]), Vec::<String>::new());
    }

    /// Where the temporary file named for the shared rename cannot be made (a filesystem with
    /// short names; here a directory already has that name), the write takes the plain name
    /// and its own `mv`.
    #[test]
    fn a_write_whose_named_temporary_file_cannot_be_made_takes_the_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(std::path::PathBuf, &[u8])> = vec![
            (dir.path().join("first"), b"1"),
            (dir.path().join("second"), b"2"),
        ];
        let d = q(dir.path().to_str().unwrap());
        let (bin, _) = programs(true, None);
        let (ok, calls) = run_writes_after(
            &format!("mkdir {d}/.nexus-$$-n0nce-first"),
            &files,
            bin.path(),
        );
        assert!(ok, "{calls}");
        assert_eq!(std::fs::read(&files[0].0).unwrap(), b"1");
        assert_eq!(std::fs::read(&files[1].0).unwrap(), b"2");
        // The first could not join the shared rename, so neither did the second (in order).
        assert_eq!(calls.matches("mv ").count(), 2, "{calls}");
        assert_eq!(calls.matches("rename.ul").count(), 0, "{calls}");
    }

    /// A shared rename that fails part way (here: a directory took the second name after the
    /// checks) must not leave files in place that the batch then reports as not run: what it
    /// renamed after its first failure is put back, and each write goes on alone, in order.
    #[test]
    fn a_shared_rename_that_fails_part_way_leaves_only_what_ran_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(std::path::PathBuf, &[u8])> = vec![
            (dir.path().join("first"), b"1"),
            (dir.path().join("second"), b"2"),
            (dir.path().join("third"), b"3"),
        ];
        // rename.ul that makes `second` a directory just before renaming, as a race would.
        let (bin, _) = programs(true, Some("second"));
        let second = q(files[1].0.to_str().unwrap());
        std::fs::write(
            bin.path().join("rename.ul"),
            format!(
                "#!/bin/sh\necho \"rename.ul $*\" >> {}\nmkdir {second}\nexec /usr/bin/rename.ul \"$@\"\n",
                q(bin.path().join("calls.log").to_str().unwrap())
            ),
        )
        .unwrap();
        let (ok, calls) = run_writes(&files, bin.path());
        assert!(!ok, "{calls}");
        assert_eq!(std::fs::read(&files[0].0).unwrap(), b"1");
        assert!(files[1].0.is_dir());
        // The batch stopped at the second write: the third was not left in place.
        assert!(!files[2].0.exists(), "{calls}");
        assert_eq!(temps_left(&[dir.path()]), Vec::<String>::new());
    }
}
