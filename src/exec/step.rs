//! Running one planned resource on its host: guards re-checked, contents fed on stdin, retries
//! with backoff, downloads written locally.

use std::time::{Duration, Instant};

use base64::Engine;

use crate::plan::{Plan, PlannedResource};
use crate::resources::{EnvValue, Step, q};
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

const TAIL: usize = 4096;

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let start = s.len().saturating_sub(TAIL);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

fn spec(
    step: &Step,
    script: String,
    esc: &Escalation,
    secrets: &crate::secrets::Resolved,
) -> Result<CommandSpec, String> {
    let script = match &step.cwd {
        Some(dir) => format!("cd -- {} || exit 1\n{script}", q(dir)),
        None => script,
    };
    let mut cmd = CommandSpec::new(script);
    for (k, v) in &step.env {
        match v {
            EnvValue::Literal(s) => cmd = cmd.env(k.clone(), s.clone()),
            // Secrets travel like every env value: over stdin, never on the command line.
            EnvValue::Secret { name, .. } => match secrets.get(name) {
                Some(v) => cmd = cmd.env(k.clone(), v.to_string()),
                None => return Err(format!("secret {name:?} was not read from the vault")),
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
            (_, Some(e)) => return Err(e.clone()),
            (Some(b), None) => cmd = cmd.sudo(b.clone()),
            (None, None) => cmd = cmd.sudo(Become::root()),
        }
    }
    Ok(cmd)
}

/// Runs the resource's steps in order, stopping at the first failure.
pub async fn run(
    t: &dyn Transport,
    plan: &Plan,
    r: &PlannedResource,
    esc: &Escalation,
    seed: u64,
    opts: &super::Options,
) -> StepsOutcome {
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
    let attempts_allowed = 1 + r.retry.retries;
    let base_delay = r.retry.retry_delay.unwrap_or(Duration::from_secs(1));
    for step in &r.steps {
        if let Some(cond) = &step.skip_if {
            // The guard runs in the step's own context (user, sudo, cwd) so it sees what the
            // step would see.
            let check = match spec(step, cond.clone(), esc, secrets) {
                Ok(c) => c,
                Err(e) => return fail(out, start, e),
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
            Err(e) => return fail(out, start, e),
        };
        if let Some(hash) = &step.stdin {
            let Some(b64) = plan.blobs.get(hash) else {
                return fail(out, start, format!("plan has no content {hash}"));
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return fail(out, start, format!("content {hash} is not valid base64"));
            };
            // The plan was verified on load; check again so a corrupted blob never lands.
            if blake3::hash(&bytes).to_hex().as_str() != hash {
                return fail(
                    out,
                    start,
                    format!("content {hash} does not match its hash"),
                );
            }
            if step.stdin_secrets.is_empty() {
                cmd = cmd.stdin(bytes);
            } else {
                // Content that holds secrets: the values go in here, at the last moment, and
                // travel on stdin; the step checks the sha256 of what arrived against this one.
                let lookup = |n: &str| secrets.get(n).map(str::to_string);
                let real = match crate::secrets::placeholder::substitute(&bytes, &lookup) {
                    Ok(r) => r,
                    Err(e) => return fail(out, start, e),
                };
                cmd = cmd
                    .env(
                        "NEXUS_CONTENT_SHA256".to_string(),
                        crate::resources::file::sha256_hex(&real),
                    )
                    .stdin(real.to_vec());
            }
        }
        if let Some(t) = r.retry.timeout {
            cmd = cmd.timeout(t);
        }
        out.ran = true;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Attempts of the step that needed the most: retries are what the user wants to see.
            out.attempts = out.attempts.max(attempt);
            let res = t.run(&cmd).await;
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

/// Writes a downloaded file atomically, creating its directory.
fn write_local(dest: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = std::path::Path::new(dest);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("nexus-tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
