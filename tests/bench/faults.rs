//! Fault runs: `nexus apply` of a 5-host plan interrupted at random moments, by `kill -9`, by
//! SIGINT and by SIGINT twice, and one host's sshd killed mid-apply. For each it prints what
//! history recorded against what happened on the hosts: SQLite integrity, remote processes left
//! behind, whether a new plan and apply converge, and the temp files left after that. `cargo bench --bench faults` (as root, after tests/setup.sh);
//! NEXUS_FAULT_TRIALS (20) per signal, NEXUS_FAULT_SEED to repeat a run's random moments. Under
//! `cargo test --all-targets` (no `--bench`) it runs one trial of each as a smoke test.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::SshHost;

/// Each host runs commands that sleep (a marker duration, counted on the machine afterwards)
/// and files, so an interruption lands in a command, between commands or in a write.
fn workload(hosts: &[&SshHost]) -> String {
    let names: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.name)).collect();
    let mut s = format!(
        "group \"fleet\" {}\ntask \"deploy\" on=\"fleet\" {{\n",
        names.join(" ")
    );
    for i in 0..3 {
        s.push_str(&format!(
            "    command \"sleep 0.77 && echo {i} >> /srv/log\" timeout=\"30s\"\n    file \"/srv/f{i}\" content=\"{i}\\n\"\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Processes on this machine (every test host is on it) running the workload's marker sleep.
fn left_behind() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x000.77\x00")
                })
                .count()
        })
        .unwrap_or(0)
}

fn nexus(bin: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .current_dir(dir)
        .args(["-c", "nexus.kdl"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run nexus")
}

/// xorshift64*: repeatable random moments from a printed seed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct Tally {
    trials: usize,
    integrity_ok: usize,
    left: usize,
    trials_with_left: usize,
    /// Trials where a host's log grew after nexus had exited.
    wrote_after: usize,
    converged: usize,
    /// `.nexus-*` temp files on the hosts once the converging run is done.
    temp_left: usize,
    exit_codes: Vec<Option<i32>>,
}

fn integrity(db: &Path) -> bool {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        .is_ok_and(|v| v == "ok")
}

fn reset(hosts: &[SshHost], dir: &Path) {
    for h in hosts {
        for e in std::fs::read_dir(h.srv()).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir_all(dir.join(".nexus"));
}

/// One apply of a fresh plan, `signal` sent to nexus `after` it started (twice, 0.2 s apart, when
/// `twice`); then the checks.
fn trial(
    bin: &str,
    dir: &Path,
    hosts: &[SshHost],
    (signal, twice): (&str, bool),
    after: Duration,
    t: &mut Tally,
) {
    let plan = nexus(bin, dir, &["plan", "-o", "plan.lock"]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let child = Command::new(bin)
        .current_dir(dir)
        .args(["-c", "nexus.kdl", "apply", "plan.lock"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nexus");
    std::thread::sleep(after);
    let send = || {
        // The process may be gone by the second signal: `kill` then fails, which is fine.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
    };
    send();
    if twice {
        std::thread::sleep(Duration::from_millis(200));
        send();
    }
    let out = child.wait_with_output().expect("wait");
    t.exit_codes.push(out.status.code());
    t.trials += 1;
    // What the hosts still do once nexus is gone: a marker sleep lasts 0.77 s, so one counted
    // 0.3 s after nexus exited was not stopped with it, and a log line written later means a
    // command went on to finish.
    let lines = |hosts: &[SshHost]| -> usize {
        hosts
            .iter()
            .map(|h| std::fs::read_to_string(h.srv().join("log")).map_or(0, |s| s.lines().count()))
            .sum()
    };
    let at_exit = lines(hosts);
    std::thread::sleep(Duration::from_millis(300));
    let left = left_behind();
    t.left += left;
    t.trials_with_left += usize::from(left > 0);
    std::thread::sleep(Duration::from_millis(1500));
    t.wrote_after += usize::from(lines(hosts) > at_exit);
    if integrity(&dir.join(".nexus/state.db")) {
        t.integrity_ok += 1;
    }
    let run = nexus(bin, dir, &["run"]);
    let check = nexus(bin, dir, &["plan", "--detailed-exitcode"]);
    // Commands run every time and are no drift: converged means the run succeeded and the
    // next plan has nothing to create, update or delete (exit 0).
    if run.status.success() && check.status.code() == Some(0) {
        t.converged += 1;
    }
    t.temp_left += hosts
        .iter()
        .flat_map(|h| std::fs::read_dir(h.srv()).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".nexus-"))
        .count();
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let trials: usize = std::env::var("NEXUS_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 20 } else { 1 });
    let seed: u64 = std::env::var("NEXUS_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let bin = std::env::var("NEXUS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nexus").into());
    let hosts: Vec<SshHost> = (0..5)
        .map(|i| SshHost::builder(&format!("fault{i}")).private_srv().start())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let mut cfg = harness::project_config(dir.path(), &refs, " connect-timeout=\"10s\"");
    cfg.push_str(&workload(&refs));
    std::fs::write(dir.path().join("nexus.kdl"), cfg).unwrap();

    // How long an undisturbed apply takes: the random moments fall inside it.
    reset(&hosts, dir.path());
    assert!(
        nexus(&bin, dir.path(), &["plan", "-o", "plan.lock"])
            .status
            .success()
    );
    let start = Instant::now();
    let out = nexus(&bin, dir.path(), &["apply", "plan.lock"]);
    let span = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "nexus apply of 5 hosts x 6 resources: {:.2} s undisturbed ({bin})",
        span.as_secs_f64()
    );
    println!("seed {seed} (NEXUS_FAULT_SEED), {trials} trial(s) per signal");

    let mut rng = Rng(seed);
    for (signal, twice) in [("KILL", false), ("INT", false), ("INT", true)] {
        let mut t = Tally::default();
        for _ in 0..trials {
            reset(&hosts, dir.path());
            let after = span.mul_f64(rng.next_f64());
            trial(&bin, dir.path(), &hosts, (signal, twice), after, &mut t);
        }
        let codes: std::collections::BTreeMap<String, usize> =
            t.exit_codes.iter().fold(Default::default(), |mut m, c| {
                *m.entry(c.map_or("signal".into(), |c| c.to_string()))
                    .or_default() += 1;
                m
            });
        println!(
            "SIG{signal}{}: DB integrity ok {}/{}; remote processes left {} (in {} trial(s)); \
             hosts written to after nexus exited in {} trial(s); re-plan + apply converges {}/{}; \
             temp files left after converging {}; exit codes {codes:?}",
            if twice { " twice" } else { "" },
            t.integrity_ok,
            t.trials,
            t.left,
            t.trials_with_left,
            t.wrote_after,
            t.converged,
            t.trials,
            t.temp_left
        );
    }

    // One host's sshd killed mid-apply: the other hosts finish.
    reset(&hosts, dir.path());
    assert!(
        nexus(&bin, dir.path(), &["plan", "-o", "plan.lock"])
            .status
            .success()
    );
    let child = Command::new(&bin)
        .current_dir(dir.path())
        .args(["-c", "nexus.kdl", "apply", "plan.lock", "--format", "json"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(span / 3);
    let mut hosts = hosts;
    hosts[2].kill();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let empty = Vec::new();
    let results = v["resources"].as_array().unwrap_or(&empty);
    let others_ok = results
        .iter()
        .filter(|r| r["host"] != "fault2")
        .all(|r| r["status"] == "succeeded" || r["status"] == "skipped");
    let finished: std::collections::BTreeSet<&str> = results
        .iter()
        .filter(|r| r["host"] != "fault2" && r["status"] == "succeeded")
        .filter_map(|r| r["host"].as_str())
        .collect();
    println!(
        "sshd of fault2 killed mid-apply: exit {:?}; other hosts all succeeded: {others_ok} ({} of 4 with results)",
        out.status.code(),
        finished.len()
    );
}
