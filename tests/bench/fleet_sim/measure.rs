//! Runs one nexus command and measures it from outside, in a process of its own (this benchmark's
//! binary started again with [`FLAG`]): then the only child it waits for is nexus, so
//! `getrusage(RUSAGE_CHILDREN)` afterwards is exactly nexus's user and system time and peak RSS,
//! what `wait4` reports; and nexus starts with the open-file limits given here, not with the
//! ones the simulator raised for itself.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, UsageWho, getrusage, setrlimit};

pub const FLAG: &str = "--fleet-sim-measure";

/// What one nexus run cost, as the measuring process saw it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    pub exit: Option<i32>,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub max_rss_kib: u64,
    /// Most entries seen in /proc/PID/fd, sampled every [`SAMPLE`].
    pub peak_fds: usize,
    /// nexus's soft RLIMIT_NOFILE as last seen in /proc/PID/limits, after it may have raised it.
    pub nofile_seen: Option<u64>,
}

/// Sampling costs the shared CPUs a directory read of up to one entry per host: not too often.
const SAMPLE: Duration = Duration::from_millis(50);

/// The command line that measures `nexus ARGS` in `dir` under the limits `soft`/`hard`,
/// writing its stdout and stderr to `out`/`err`.
pub fn command(
    soft: u64,
    hard: u64,
    out: &std::path::Path,
    err: &std::path::Path,
    nexus: &std::path::Path,
) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("this benchmark's binary"));
    c.arg(FLAG)
        .arg(soft.to_string())
        .arg(hard.to_string())
        .arg(out)
        .arg(err)
        .arg(nexus);
    c
}

/// The measuring process: `SOFT HARD OUT ERR NEXUS ARGS...`; prints one [`Cost`] as JSON.
pub fn child(args: &[String]) {
    let [soft, hard, out, err, nexus, rest @ ..] = args else {
        panic!("{FLAG} SOFT HARD OUT ERR NEXUS ARGS...");
    };
    let limit = |s: &String| s.parse::<u64>().expect("a limit");
    setrlimit(Resource::RLIMIT_NOFILE, limit(soft), limit(hard)).expect("set RLIMIT_NOFILE");
    let start = Instant::now();
    let mut child = Command::new(nexus)
        .args(rest)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(File::create(PathBuf::from(out)).expect("stdout file"))
        .stderr(File::create(PathBuf::from(err)).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {nexus}: {e}"));
    let pid = child.id();
    let (mut peak_fds, mut nofile_seen) = (0, None);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for nexus") {
            break s;
        }
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            peak_fds = peak_fds.max(d.count());
        }
        if let Some(n) = soft_nofile(pid) {
            nofile_seen = Some(n);
        }
        std::thread::sleep(SAMPLE);
    };
    let wall_s = start.elapsed().as_secs_f64();
    let ru = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cost = Cost {
        exit: status.code(),
        wall_s,
        user_s: secs(ru.user_time()),
        sys_s: secs(ru.system_time()),
        max_rss_kib: ru.max_rss() as u64,
        peak_fds,
        nofile_seen,
    };
    println!("{}", serde_json::to_string(&cost).expect("cost as JSON"));
}

fn soft_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
