//! Running one planned resource on its host: guards re-checked, contents fed on stdin, retries
//! with backoff, downloads written locally.

use std::time::{Duration, Instant};

use base64::Engine;

use std::collections::BTreeMap;

use crate::plan::PlannedResource;
use crate::plan::{EnvValue, Step};
use crate::shell::quote as q;
use crate::transport::{Become, CommandSpec, Transport};

/// How a step escalates: the host's sudo settings, resolved before execution.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub become_: Option<Become>,
    /// Why escalation is unavailable (e.g. a sudo password from an unset variable).
    pub error: Option<String>,
}

/// The outcome of running one resource's steps.
#[derive(Debug, Clone)]
pub struct StepsOutcome {
    pub ok: bool,
    /// Whether anything ran (false when every step's guard said skip).
    pub ran: bool,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub duration: Duration,
    pub output_tail: String,
    pub error: Option<String>,
    /// The connection to the host is gone: nothing more can run there in this apply.
    pub connection_lost: bool,
}

/// Why a step could not be started; the outcome records its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("secret {name:?} was not read from the vault")]
    SecretNotRead { name: String },
    /// Text because [`Escalation::error`] is resolved, and worded, before execution.
    #[error("{0}")]
    Escalation(String),
    #[error("plan has no content {hash}")]
    NoContent { hash: String },
    #[error("content {hash} is not valid base64")]
    ContentEncoding { hash: String },
    #[error("content {hash} does not match its hash")]
    ContentHash { hash: String },
    #[error("content {hash} holds secrets and {reason}")]
    Sealed { hash: String, reason: String },
}

const TAIL: usize = 4096;

pub(super) fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let start = s.len().saturating_sub(TAIL);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

pub(super) fn spec(
    step: &Step,
    script: String,
    esc: &Escalation,
    secrets: &crate::secrets::Resolved,
) -> Result<CommandSpec, StepError> {
    let mut cmd = CommandSpec::new(step.in_cwd(script));
    for (k, v) in &step.env {
        match v {
            EnvValue::Literal(s) => cmd = cmd.env(k.clone(), s.clone()),
            // Secrets travel like every env value: over stdin, never on the command line.
            EnvValue::Secret { name, .. } => match secrets.get(name) {
                Some(v) => cmd = cmd.env(k.clone(), v.to_string()),
                None => return Err(StepError::SecretNotRead { name: name.clone() }),
            },
        }
    }
    if let Some(user) = &step.user {
        let mut b = Become::user(user.clone());
        if let Some(base) = &esc.become_ {
            b.password = base.password.clone();
        }
        cmd = cmd.sudo(b);
    } else if step.sudo {
        match (&esc.become_, &esc.error) {
            (_, Some(e)) => return Err(StepError::Escalation(e.clone())),
            (Some(b), None) => cmd = cmd.sudo(b.clone()),
            (None, None) => cmd = cmd.sudo(Become::root()),
        }
    }
    Ok(cmd)
}

/// Printed by a merged command whose guard said skip; no step's output is exactly this line.
pub(super) const SKIPPED: &str = "nexus: step skipped by its guard 6f1c2a9e\n";

/// The commands a resource's steps run as. Without retries or a timeout, which count per
/// command, a step's guard and the step run as one command, and so do consecutive steps that
/// share their context (user, sudo, directory, environment) when only the last reads stdin and
/// none downloads: each SSH command costs the host a session and two shells, which dominated a
/// cold apply. Each step keeps its own subshell, so `exit`, `set -e`, `cd` and variables stay
/// its own; the first failure ends the command with that step's status, and a guard runs once,
/// before its step, as it did as a command of its own.
pub(super) fn merged(r: &PlannedResource) -> Vec<(Step, bool)> {
    if r.retry.retries > 0 || r.retry.timeout.is_some() {
        return r.steps.iter().map(|s| (s.clone(), false)).collect();
    }
    let mut units: Vec<(Step, bool)> = Vec::new();
    let mut parts: Vec<&Step> = Vec::new();
    let flush = |parts: &mut Vec<&Step>, units: &mut Vec<(Step, bool)>| {
        let Some(last) = parts.last() else { return };
        // A write alone stays as it is, so a batch can still see what it writes, and so does
        // a download, so that its transfer can see what it reads (exec/transfer.rs).
        if parts.len() == 1
            && (last.write.is_some() || last.mkdir.is_some() || last.download_to.is_some())
            && last.skip_if.is_none()
        {
            units.push(((*last).clone(), false));
            parts.clear();
            return;
        }
        // The merged unit runs its script: a structured write, creation or download (which the
        // executor could do without the script, and its guard) no longer describes it.
        let mut unit = (*last).clone();
        unit.write = None;
        unit.mkdir = None;
        unit.download_from = None;
        let mut script = String::new();
        if let Some(cond) = &parts[0].skip_if {
            script.push_str(&format!(
                "if ( {cond}\n) </dev/null >/dev/null 2>&1; then printf '%s' {}; exit 0; fi\n",
                q(SKIPPED)
            ));
        }
        for (i, step) in parts.iter().enumerate() {
            if i + 1 < parts.len() {
                script.push_str(&format!("( {}\n) </dev/null || exit $?\n", step.script));
            } else {
                script.push_str(&format!("( {}\n)\n", step.script));
            }
        }
        unit.script = script;
        unit.skip_if = None;
        units.push((unit, parts[0].skip_if.is_some()));
        parts.clear();
    };
    for step in &r.steps {
        let joins = parts.last().is_some_and(|prev| {
            same_context(prev, step)
                && prev.stdin.is_none()
                && prev.download_to.is_none()
                && step.download_to.is_none()
                && step.skip_if.is_none()
        });
        if !joins {
            flush(&mut parts, &mut units);
        }
        parts.push(step);
    }
    flush(&mut parts, &mut units);
    units
}

/// The contents a plan's steps send: carried (base64, by blake3), or pinned and read from
/// local files as they are sent.
#[derive(Debug, Clone, Copy)]
pub struct Contents<'a> {
    pub blobs: &'a BTreeMap<String, String>,
    pub streamed: &'a BTreeMap<String, crate::plan::StreamedContent>,
    /// The plan's root configuration, whose directory streamed files are relative to.
    pub config: &'a str,
}

impl<'a> Contents<'a> {
    pub fn of(plan: &'a crate::plan::Plan) -> Contents<'a> {
        Contents {
            blobs: &plan.blobs,
            streamed: &plan.streamed,
            config: &plan.config,
        }
    }
}

/// Runs the resource's steps in order, stopping at the first failure.
pub async fn run(
    t: &dyn Transport,
    contents: Contents<'_>,
    r: &PlannedResource,
    esc: &Escalation,
    seed: u64,
    opts: &super::Options,
    progress: super::transfer::Progress<'_>,
) -> StepsOutcome {
    let Contents {
        blobs,
        streamed,
        config,
    } = contents;
    let base_dir = opts.base_dir.as_path();
    let secrets = opts.secrets.as_ref();
    let start = Instant::now();
    let mut out = StepsOutcome {
        ok: true,
        ran: false,
        exit_code: None,
        attempts: 0,
        duration: Duration::ZERO,
        output_tail: String::new(),
        error: None,
        connection_lost: false,
    };
    // Where streamed files are read from: asked of the filesystem only when there are some.
    let source_dir = (!streamed.is_empty()).then(|| crate::plan::source_dir(config));
    let attempts_allowed = 1 + r.retry.retries;
    let base_delay = r.retry.retry_delay.unwrap_or(Duration::from_secs(1));
    for (step, guarded) in &merged(r) {
        if let Some(cond) = &step.skip_if {
            // The guard runs in the step's own context (user, sudo, cwd) so it sees what the
            // step would see.
            let check = match spec(step, cond.clone(), esc, secrets) {
                Ok(c) => c,
                Err(e) => return fail(out, start, e.to_string()),
            };
            match t.run(&check).await {
                Ok(o) if o.success() => continue,
                Ok(_) => {}
                Err(e) => {
                    out.connection_lost = e.is_connection_error();
                    return fail(out, start, e.to_string());
                }
            }
        }
        let mut cmd = match spec(step, step.script.clone(), esc, secrets) {
            Ok(c) => c,
            Err(e) => return fail(out, start, e.to_string()),
        };
        // A content the plan pins but does not carry is read from its file as it is sent.
        let pinned = step
            .stdin
            .as_ref()
            .and_then(|h| streamed.get_key_value(h))
            .map(|(blake3, content)| super::transfer::Pinned {
                blake3,
                content,
                base: source_dir.as_deref().unwrap_or(base_dir),
            });
        if let Some(hash) = step.stdin.as_ref().filter(|_| pinned.is_none()) {
            let bytes = match content(blobs, hash) {
                Ok(b) => b,
                Err(e) => return fail(out, start, e.to_string()),
            };
            let real = if step.stdin_sealed {
                // A restored content that held secrets: decrypted only here, sent on stdin.
                let sealed = |reason: &str| StepError::Sealed {
                    hash: hash.clone(),
                    reason: reason.to_string(),
                };
                match secrets.content_key() {
                    None => Err(sealed("the vault is not open").to_string()),
                    Some(key) => key
                        .decrypt(&bytes)
                        .map(|r| Some(r.to_vec()))
                        .map_err(|e| sealed(&format!("cannot be decrypted: {e}")).to_string()),
                }
            } else if step.stdin_secrets.is_empty() {
                Ok(None)
            } else {
                // Content that holds secrets: the values go in here, at the last moment, and
                // travel on stdin; the step checks the sha256 of what arrived against this one.
                let lookup = |n: &str| secrets.get(n).map(str::to_string);
                crate::secrets::placeholder::substitute(&bytes, &lookup)
                    .map(|r| Some(r.to_vec()))
                    .map_err(|e| e.to_string())
            };
            cmd = match real {
                Err(e) => return fail(out, start, e),
                Ok(None) => cmd.stdin(bytes),
                Ok(Some(real)) => cmd
                    .env(
                        "NEXUS_CONTENT_SHA256".to_string(),
                        crate::plan::file_write::sha256_hex(&real),
                    )
                    .stdin(real),
            };
        }
        if let Some(t) = r.retry.timeout {
            cmd = cmd.timeout(t);
        }
        let before = out.clone();
        out.ran = true;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Attempts of the step that needed the most: retries are what the user wants to see.
            out.attempts = out.attempts.max(attempt);
            if let (Some(dest), Some(source)) = (&step.download_to, &step.download_from)
                && step.skip_if.is_none()
            {
                let dest = base_dir.join(dest);
                match super::transfer::download(t, source, &dest, progress).await {
                    Ok(true) => {
                        out.exit_code = Some(0);
                        out.output_tail.clear();
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        out.connection_lost = false;
                        return fail(out, start, e.to_string());
                    }
                }
            }
            let staged = match super::transfer::staged_write(t, step, &cmd, pinned, progress).await
            {
                Ok(c) => c,
                Err(e) => {
                    // A local file that is not what the plan pinned will not become it by retrying.
                    let local = matches!(e, super::transfer::TransferError::Pinned(_));
                    if attempt >= attempts_allowed || local {
                        return fail(out, start, e.to_string());
                    }
                    tokio::time::sleep(super::retry::delay(base_delay, attempt + 1, seed)).await;
                    continue;
                }
            };
            let res = t.run(&staged).await;
            let (ok, msg) = match &res {
                Ok(o) => {
                    out.exit_code = o.code();
                    let mut both = o.stdout.clone();
                    if step.download_to.is_some() {
                        both.clear();
                    }
                    both.extend_from_slice(&o.stderr);
                    out.output_tail = tail(&both);
                    (o.success(), (!o.success()).then(|| o.failure_summary()))
                }
                Err(e) => (false, Some(e.to_string())),
            };
            if ok {
                if let (true, Ok(o)) = (guarded, &res)
                    && o.stdout == SKIPPED.as_bytes()
                {
                    out = before;
                    break;
                }
                if let (Some(dest), Ok(o)) = (&step.download_to, &res) {
                    // Download destinations are relative to the config file, like every local path.
                    let dest = base_dir.join(dest).display().to_string();
                    if let Err(e) = write_local(&dest, &o.stdout) {
                        return fail(out, start, format!("cannot write {dest}: {e}"));
                    }
                }
                break;
            }
            // A lost connection will not come back by retrying on it.
            let fatal = matches!(&res, Err(e) if e.is_connection_error());
            out.connection_lost = fatal;
            if attempt >= attempts_allowed || fatal {
                return fail(out, start, msg.unwrap_or_else(|| "failed".into()));
            }
            tokio::time::sleep(super::retry::delay(base_delay, attempt + 1, seed)).await;
        }
    }
    out.duration = start.elapsed();
    out
}

fn fail(mut out: StepsOutcome, start: Instant, error: String) -> StepsOutcome {
    out.ok = false;
    out.error = Some(error);
    out.duration = start.elapsed();
    out
}

/// A content blob of the plan, checked against its hash once more: the plan was verified on
/// load, but a corrupted blob must never land.
pub(super) fn content(blobs: &BTreeMap<String, String>, hash: &str) -> Result<Vec<u8>, StepError> {
    let b64 = blobs
        .get(hash)
        .ok_or_else(|| StepError::NoContent { hash: hash.into() })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| StepError::ContentEncoding { hash: hash.into() })?;
    if blake3::hash(&bytes).to_hex().as_str() != hash {
        return Err(StepError::ContentHash { hash: hash.into() });
    }
    Ok(bytes)
}

/// Writes a downloaded file atomically, creating its directory. The file is 0600: nothing says
/// who may read what it copied (often logs, dumps or keys), and the remote mode means nothing
/// for local users. A new temporary file replaces the destination, so an existing file's wider
/// mode does not carry over.
fn write_local(dest: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = std::path::Path::new(dest);
    let tmp = super::transfer::local_temp(path)?;
    let written = crate::nexus_dir::new_private_file()
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether two units may share a command: the same escalation, directory and environment.
pub fn same_context(a: &Step, b: &Step) -> bool {
    a.sudo == b.sudo && a.user == b.user && a.cwd == b.cwd && a.env == b.env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    fn resource(steps: Vec<Step>, retries: u32) -> PlannedResource {
        let mut r: PlannedResource = serde_json::from_value(serde_json::json!({
            "key": "t#1", "task": "t", "role": "task", "id": "command:x", "kind": "command",
            "label": "x", "action": "run", "reason": "test",
        }))
        .unwrap();
        r.steps = steps;
        r.retry.retries = retries;
        r
    }

    fn opts() -> super::super::Options {
        super::super::Options {
            parallel: 1,
            continue_on_error: false,
            base_dir: std::env::temp_dir(),
            secrets: Default::default(),
            stop: Default::default(),
            generation: false,
        }
    }

    async fn apply(t: &LocalTransport, r: &PlannedResource) -> StepsOutcome {
        let esc = Escalation {
            become_: None,
            error: None,
        };
        let blob = b"from stdin\n";
        let hash = blake3::hash(blob).to_hex().to_string();
        let blobs =
            BTreeMap::from([(hash, base64::engine::general_purpose::STANDARD.encode(blob))]);
        let streamed = BTreeMap::new();
        let contents = Contents {
            blobs: &blobs,
            streamed: &streamed,
            config: "nexus.kdl",
        };
        run(t, contents, r, &esc, 1, &opts(), &|_, _| {}).await
    }

    fn step(script: &str) -> Step {
        Step::new(script, false)
    }

    #[tokio::test]
    async fn merged_steps_behave_like_separate_commands() {
        let dir = tempfile::tempdir().unwrap();
        let d = q(dir.path().to_str().unwrap());
        let blob = blake3::hash(b"from stdin\n").to_hex().to_string();
        let mut last = step(&format!(
            "cat > {d}/in; echo \"x=${{x:-unset}}\" >> {d}/log"
        ));
        last.stdin = Some(blob);
        let steps = vec![
            // Each step's options, variables and exit stay its own; exit 0 goes on.
            step(&format!("set -e; x=1; echo one > {d}/log; exit 0")),
            step(&format!(
                "cd /; echo \"two $x $(pwd)\" >> {d}/log; false || :"
            )),
            last,
        ];
        let t = LocalTransport::new("local");
        let out = apply(&t, &resource(steps.clone(), 0)).await;
        assert!(out.ok && out.ran, "{out:?}");
        assert_eq!(t.commands_run(), 1, "three steps, one command");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "one\ntwo  /\nx=unset\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("in")).unwrap(),
            "from stdin\n",
            "only the last step reads stdin"
        );
        // With retries every step is its own command, as before.
        let t = LocalTransport::new("local");
        assert!(apply(&t, &resource(steps, 2)).await.ok);
        assert_eq!(t.commands_run(), 3);
    }

    #[tokio::test]
    async fn the_first_failure_stops_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let d = q(dir.path().to_str().unwrap());
        let steps = vec![
            step(&format!("touch {d}/a")),
            step("echo failing >&2; exit 3"),
            step(&format!("touch {d}/c")),
        ];
        let t = LocalTransport::new("local");
        let out = apply(&t, &resource(steps, 0)).await;
        assert!(!out.ok);
        assert_eq!(out.exit_code, Some(3));
        assert!(out.output_tail.contains("failing"), "{out:?}");
        assert!(dir.path().join("a").exists());
        assert!(!dir.path().join("c").exists());
    }

    #[tokio::test]
    async fn a_merged_guard_skips_or_runs_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let d = q(dir.path().to_str().unwrap());
        let guarded = |cond: &str| {
            let mut s = step(&format!("echo ran >> {d}/log"));
            // A guard's own output never reaches the result.
            s.skip_if = Some(format!(
                "echo noise; echo more >&2; {cond} # trailing comment"
            ));
            s
        };
        let t = LocalTransport::new("local");
        let out = apply(&t, &resource(vec![guarded("true")], 0)).await;
        assert!(out.ok && !out.ran, "{out:?}");
        assert_eq!((out.exit_code, out.attempts), (None, 0));
        assert!(!dir.path().join("log").exists());
        let out = apply(&t, &resource(vec![guarded("false")], 0)).await;
        assert!(out.ok && out.ran, "{out:?}");
        assert_eq!(t.commands_run(), 2, "a guard and its step are one command");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "ran\n"
        );
        // With retries the guard is checked once, apart, as before.
        let out = apply(&t, &resource(vec![guarded("true")], 1)).await;
        assert!(out.ok && !out.ran);
        assert_eq!(t.commands_run(), 3);
    }
}
