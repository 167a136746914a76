//! The apply lock's holder and guard, and whether a process that wrote to the state is still
//! alive: the basis of stale lock recovery and of showing killed runs as interrupted.
//!
//! A process is identified by hostname, pid, the kernel's boot id and the process's start time.
//! The pid alone is not enough: pids are recycled, and after a reboot they start over.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{RunId, StateError, format_duration, format_time, now_ms};

/// Who holds (or wants) the apply lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub hostname: String,
    /// What the holder is doing, for the person who finds the state locked
    /// (`nexus apply plan.lock`).
    pub command: String,
    /// Unix milliseconds.
    pub since: i64,
    /// The kernel boot id of the holder's machine: a different one on the same hostname means the
    /// machine rebooted, which no process of the old boot survived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's start time (clock ticks after boot, field 22 of /proc/PID/stat). With the pid it
    /// identifies the process, so a recycled pid is not mistaken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
}

impl LockHolder {
    /// This process, doing `command`, from now.
    pub fn current(command: impl Into<String>) -> LockHolder {
        let me = Identity::current();
        LockHolder {
            pid: me.pid,
            hostname: me.hostname.clone(),
            command: command.into(),
            since: now_ms(),
            boot_id: me.boot_id.clone(),
            process_start: me.process_start,
        }
    }

    /// Why this holder is provably gone (so the next apply will take the lock over), or `None`
    /// when it runs or cannot be checked from here.
    pub fn gone(&self) -> Option<String> {
        match liveness(
            self.pid,
            &self.hostname,
            self.boot_id.as_deref(),
            self.process_start,
        ) {
            Liveness::Dead(reason) => Some(reason),
            Liveness::Alive | Liveness::Unknown => None,
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on {} running `{}` since {} ({} ago)",
            self.pid,
            self.hostname,
            self.command,
            format_time(self.since),
            format_duration(now_ms() - self.since)
        )
    }
}

/// A stale lock that [`super::StateStore::lock`] took over, and why it was judged stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    pub holder: LockHolder,
    pub reason: String,
}

type Release = Box<dyn FnOnce() -> Result<(), StateError> + Send>;
type Lost = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The apply lock, held until [`LockGuard::release`] or drop.
pub struct LockGuard {
    holder: LockHolder,
    recovered: Option<Recovered>,
    interrupted: Vec<RunId>,
    release: Option<Release>,
    lost: Option<Lost>,
}

impl LockGuard {
    /// For backends: `release` removes exactly this lock (not one taken after a force-unlock).
    pub fn new(
        holder: LockHolder,
        recovered: Option<Recovered>,
        interrupted: Vec<RunId>,
        release: impl FnOnce() -> Result<(), StateError> + Send + 'static,
    ) -> LockGuard {
        LockGuard {
            holder,
            recovered,
            interrupted,
            release: Some(Box::new(release)),
            lost: None,
        }
    }

    /// For backends whose lock lives in a connection: `lost` says why the lock is gone, once
    /// it is (the connection dropped).
    pub fn watched(
        mut self,
        lost: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> LockGuard {
        self.lost = Some(std::sync::Arc::new(lost));
        self
    }

    /// A probe that says why the lock was lost, for the run to stop on; `None` for a lock that
    /// cannot be lost while this process lives (SQLite's).
    pub fn loss_probe(&self) -> Option<Lost> {
        self.lost.clone()
    }

    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The stale lock this one replaced, if any: worth telling the user.
    pub fn recovered(&self) -> Option<&Recovered> {
        self.recovered.as_ref()
    }

    /// Runs found running whose process is gone, marked interrupted when the lock was taken.
    pub fn interrupted_runs(&self) -> &[RunId] {
        &self.interrupted
    }

    /// Releases the lock, reporting a failure to do so (drop cannot).
    pub fn release(mut self) -> Result<(), StateError> {
        match self.release.take() {
            Some(release) => release(),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // A failed release leaves a lock naming this process, which is recovered as stale once
        // the process has exited: nothing better to do with the error here.
        if let Some(release) = self.release.take() {
            let _ = release();
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("holder", &self.holder)
            .field("recovered", &self.recovered)
            .field("interrupted", &self.interrupted)
            .finish_non_exhaustive()
    }
}

/// This process, as recorded in locks and runs.
pub(crate) struct Identity {
    pub pid: u32,
    pub hostname: String,
    pub boot_id: Option<String>,
    pub process_start: Option<u64>,
}

impl Identity {
    pub fn current() -> &'static Identity {
        static ME: OnceLock<Identity> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Identity {
                pid,
                hostname: hostname(),
                boot_id: boot_id(),
                process_start: proc_stat(pid).map(|(_, start)| start),
            }
        })
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn boot_id() -> Option<String> {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// A process's state letter and start time from /proc/PID/stat, or `None` if there is no such
/// process. The command name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process that wrote a lock or a run is still running.
pub(crate) enum Liveness {
    Alive,
    /// Provably gone, and why.
    Dead(String),
    /// Cannot be checked from here (another host, or no /proc).
    Unknown,
}

pub(crate) fn liveness(
    pid: u32,
    host: &str,
    boot: Option<&str>,
    process_start: Option<u64>,
) -> Liveness {
    let me = Identity::current();
    if host != me.hostname {
        return Liveness::Unknown;
    }
    if let (Some(theirs), Some(ours)) = (boot, me.boot_id.as_deref())
        && theirs != ours
    {
        return Liveness::Dead(format!("{host} has rebooted since"));
    }
    if !Path::new("/proc/self/stat").exists() {
        return Liveness::Unknown;
    }
    match proc_stat(pid) {
        None => Liveness::Dead(format!("process {pid} no longer exists")),
        // A zombie has exited; only its parent has not collected it yet.
        Some(('Z' | 'X', _)) => Liveness::Dead(format!("process {pid} has exited")),
        Some((_, start)) if process_start.is_some_and(|want| want != start) => {
            Liveness::Dead(format!("pid {pid} now belongs to another process"))
        }
        Some(_) => Liveness::Alive,
    }
}

/// A unique lock token, so that a guard releases its own lock and never one taken after a
/// force-unlock or a recovery.
pub(crate) fn new_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let me = Identity::current();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    blake3::hash(format!("{}\0{}\0{nanos}\0{n}", me.hostname, me.pid).as_bytes()).to_hex()[..32]
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_identified() {
        let me = Identity::current();
        assert!(
            me.process_start.is_some(),
            "/proc/self/stat has a start time"
        );
        assert!(matches!(
            liveness(
                me.pid,
                &me.hostname,
                me.boot_id.as_deref(),
                me.process_start
            ),
            Liveness::Alive
        ));
        assert!(matches!(
            liveness(me.pid, "elsewhere.invalid", None, None),
            Liveness::Unknown
        ));
        assert!(matches!(
            liveness(me.pid, &me.hostname, Some("another-boot"), None),
            Liveness::Dead(_)
        ));
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(new_token(), new_token());
    }
}
