//! Benchmark (issue 18): how many programs the host executes per resource, counted on the host.
//!
//! One loopback sshd from the test harness (private `/srv`) is traced with
//! `strace -f -e trace=execve,...` attached to its listener, so every process it forks for a
//! connection, a session or a script is followed; only execve calls that succeed are counted. For
//! each workload (files only, directories only, guarded commands only, and the mixed workload of
//! the peers benchmark: 20 directories, 50 files, 20 guarded commands) it runs, from an empty
//! `/srv/bench` and empty state, a cold `nexus plan -o plan.lock`, `nexus apply plan.lock` and a
//! no-op `nexus plan`, and counts each of the three separately.
//!
//! Every successful execve is put in one of three classes, none dropped:
//! - `sshd`: sshd re-executing itself for a new connection (OpenSSH's `sshd -R`), i.e. one per
//!   SSH connection;
//! - session: a program the per-connection sshd starts directly, i.e. the login shell that runs
//!   each exec channel's command (one per channel);
//! - script: everything those shells run in turn, i.e. the programs nexus's scripts start.
//!
//! Failed execve calls (a PATH search trying a directory) are reported, not counted.
//!
//! `cargo bench --bench host_programs` as root, after `tests/setup.sh`, with strace installed.
//! Under `cargo test --all-targets` (no `--bench`) it runs only 3 files, as a smoke test of the
//! counting: the counts must be positive and the apply must succeed. Timings under ptrace mean
//! nothing, so none are taken. `NEXUS_BIN` picks the nexus binary.

#[path = "../harness/mod.rs"]
mod harness;
// Shared with the peers benchmark so the mixed workload is issue 18's, line for line; its pyinfra
// and Ansible writers are not used here.
#[allow(dead_code)]
#[path = "peers/workload.rs"]
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::phase::Phase;
use harness::{SshHost, TEST_USER};
use workload::{Size, Workload};

const STRACE: &str = "/usr/bin/strace";

/// Who executed a program, as seen from the host.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    /// sshd re-executing itself for a connection.
    Sshd,
    /// Started by the per-connection sshd: the shell of an exec channel.
    Session,
    /// Started by those shells or their children: the scripts' programs.
    Script,
}

/// The execve calls of one traced nexus command.
#[derive(Default)]
struct Counts {
    /// Successful execve calls by class and program (basename of the executed path).
    ok: BTreeMap<(Class, String), usize>,
    /// Failed execve calls, by program: not counted above.
    failed: BTreeMap<String, usize>,
}

impl Counts {
    fn total(&self) -> usize {
        self.ok.values().sum()
    }

    fn class(&self, c: Class) -> usize {
        self.ok
            .iter()
            .filter(|((k, _), _)| *k == c)
            .map(|(_, n)| n)
            .sum()
    }

    /// Programs of one class, most executed first.
    fn ranked(&self, c: Class) -> Vec<(&str, usize)> {
        let mut v: Vec<(&str, usize)> = self
            .ok
            .iter()
            .filter(|((k, _), _)| *k == c)
            .map(|((_, p), n)| (p.as_str(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

enum Event {
    Exec { pid: u32, path: String, ok: bool },
    Fork { parent: u32, child: u32 },
}

/// Reads `strace -f -o FILE` output (no timestamps). A syscall interrupted by another process's
/// line is split into `<unfinished ...>` and `<... NAME resumed>` lines of the same pid.
fn events(trace: &str) -> Vec<Event> {
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let (call, arg) = if let Some(r) = rest.strip_prefix("<... ") {
            let Some(name) = r.split(' ').next() else {
                continue;
            };
            let path = pending.remove(&pid).unwrap_or_default();
            (name.to_string(), path)
        } else {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            let path = args
                .strip_prefix('"')
                .and_then(|a| a.split_once('"'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            if rest.ends_with("<unfinished ...>") {
                pending.insert(pid, path);
                continue;
            }
            (name.to_string(), path)
        };
        // The result is the last ` = ` of the line: arguments are quoted and abbreviated, and the
        // errno description after it has no ` = `.
        let result = line
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|r| r.parse::<i64>().ok());
        match call.as_str() {
            "execve" | "execveat" => out.push(Event::Exec {
                pid,
                path: arg,
                ok: result == Some(0),
            }),
            "clone" | "clone3" | "fork" | "vfork" => {
                if let Some(child) = result.filter(|&c| c > 0) {
                    out.push(Event::Fork {
                        parent: pid,
                        child: child as u32,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn basename(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Counts the successful execve calls of a trace of the sshd listener `root`, by class.
fn count(trace: &str, root: u32) -> Counts {
    let events = events(trace);
    // Each pid's own lines are in order, but a child's first lines may come before its parent's
    // fork returns: a process's image is looked up by event position, not in one sweep.
    let mut forked: HashMap<u32, (u32, usize)> = HashMap::new();
    let mut execs: HashMap<u32, Vec<(usize, String)>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Fork { parent, child } => {
                forked.insert(*child, (*parent, i));
            }
            Event::Exec {
                pid,
                path,
                ok: true,
            } => {
                execs.entry(*pid).or_default().push((i, basename(path)));
            }
            Event::Exec { .. } => {}
        }
    }
    fn image(
        pid: u32,
        before: usize,
        root: u32,
        forked: &HashMap<u32, (u32, usize)>,
        execs: &HashMap<u32, Vec<(usize, String)>>,
    ) -> String {
        if let Some((_, name)) = execs
            .get(&pid)
            .and_then(|v| v.iter().rev().find(|(i, _)| *i < before))
        {
            return name.clone();
        }
        if pid == root {
            return "sshd".into();
        }
        match forked.get(&pid) {
            Some(&(parent, at)) => image(parent, at, root, forked, execs),
            None => "?".into(),
        }
    }
    let mut c = Counts::default();
    for (i, e) in events.iter().enumerate() {
        let Event::Exec { pid, path, ok } = e else {
            continue;
        };
        let program = basename(path);
        if !ok {
            *c.failed.entry(program).or_default() += 1;
            continue;
        }
        let class = if program == "sshd" {
            Class::Sshd
        } else if image(*pid, i, root, &forked, &execs) == "sshd" {
            Class::Session
        } else {
            Class::Script
        };
        *c.ok.entry((class, program)).or_default() += 1;
    }
    c
}

/// Traces the sshd `pid` (and everything it forks from now on) while `f` runs; returns `f`'s
/// result and the trace. Waits for the host's sessions to end before detaching, so the programs
/// of a closing connection are not cut off.
fn traced<T>(pid: u32, out_dir: &Path, f: impl FnOnce() -> T) -> (T, String) {
    let file = out_dir.join("trace.txt");
    let _ = std::fs::remove_file(&file);
    let mut strace = Command::new(STRACE)
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=execve,execveat,clone,clone3,fork,vfork",
            "-e",
            "signal=none",
            "-s",
            "512",
            "-o",
        ])
        .arg(&file)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {STRACE}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracer_of(pid) != Some(strace.id()) {
        if let Ok(Some(status)) = strace.try_wait() {
            panic!(
                "strace exited ({status}) before attaching to sshd {pid}: {}",
                stderr_of(&mut strace)
            );
        }
        assert!(
            Instant::now() < deadline,
            "strace did not attach to sshd {pid} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = f();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !harness::descendants(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sshd {pid} still has sessions 30 s after the command ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGINT makes strace detach and flush its output; the process is ours, named by its pid.
    harness::run(Command::new("kill").args(["-INT", &strace.id().to_string()]));
    let status = strace.wait().expect("wait for strace");
    let trace = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {} (strace {status}): {e}", file.display()));
    (result, trace)
}

fn tracer_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
        .filter(|&t| t != 0)
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// One workload: its resources, and the directories made beforehand (outside the trace) so that
/// a kind can be measured without the directories its resources live in.
struct Kind {
    name: &'static str,
    work: Workload,
    premade: Vec<String>,
}

impl Kind {
    fn resources(&self) -> usize {
        self.work.dirs.len() + self.work.files.len() + self.work.commands.len()
    }
}

fn only(dirs: bool, files: bool, commands: bool) -> Workload {
    let w = Workload::new(Size::One);
    Workload {
        dirs: if dirs { w.dirs } else { Vec::new() },
        files: if files { w.files } else { Vec::new() },
        commands: if commands { w.commands } else { Vec::new() },
    }
}

fn kinds(bench: bool) -> Vec<Kind> {
    let all_dirs = Workload::new(Size::One).dirs;
    if !bench {
        let mut w = only(false, true, false);
        w.files.truncate(3);
        return vec![Kind {
            name: "files (smoke)",
            work: w,
            premade: all_dirs,
        }];
    }
    vec![
        Kind {
            name: "files",
            work: only(false, true, false),
            premade: all_dirs.clone(),
        },
        Kind {
            name: "directories",
            work: only(true, false, false),
            premade: Vec::new(),
        },
        Kind {
            name: "commands",
            work: only(false, false, true),
            premade: all_dirs,
        },
        Kind {
            name: "mixed",
            work: Workload::new(Size::One),
            premade: Vec::new(),
        },
    ]
}

/// The local path of the host's `remote` (under /srv).
fn local(host: &SshHost, remote: &str) -> PathBuf {
    host.srv()
        .join(remote.strip_prefix("/srv/").expect("under /srv"))
}

/// An empty /srv/bench (with `premade` directories, owned by the login user) and no state.
fn reset(host: &SshHost, dir: &Path, premade: &[String]) {
    let bench = host.srv().join("bench");
    if bench.exists() {
        std::fs::remove_dir_all(&bench).expect("remove /srv/bench");
    }
    let _ = std::fs::remove_dir_all(dir.join(".nexus"));
    let _ = std::fs::remove_file(dir.join("plan.lock"));
    let uid = harness::uid_of(TEST_USER).expect("test user");
    for d in premade {
        let p = local(host, d);
        std::fs::create_dir_all(&p).expect("premade directory");
        for a in [p.parent().expect("parent"), p.as_path()] {
            std::os::unix::fs::chown(a, Some(uid), Some(uid)).expect("chown premade directory");
            std::fs::set_permissions(a, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
}

/// After the apply: every resource of the workload is in place.
fn verify(host: &SshHost, w: &Workload) {
    for d in &w.dirs {
        let m = std::fs::metadata(local(host, d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert!(m.is_dir(), "{d} is not a directory");
        assert_eq!(m.mode() & 0o7777, workload::DIR_MODE, "mode of {d}");
    }
    for (p, c) in &w.files {
        let l = local(host, p);
        let text = std::fs::read_to_string(&l).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(text == *c, "content of {p}");
        let m = std::fs::metadata(&l).expect("metadata");
        assert_eq!(m.mode() & 0o7777, workload::FILE_MODE, "mode of {p}");
    }
    for (_, creates) in &w.commands {
        assert!(local(host, creates).exists(), "{creates} missing");
    }
}

fn nexus(bin: &Path, dir: &Path, phase: Phase) {
    let out = Command::new(bin)
        .current_dir(dir)
        .args(["-c", "nexus.kdl", "-q"])
        .args(phase.args())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    // The no-op plan's `--detailed-exitcode` must say "no changes" (0). The cold plan's would not
    // say "changes" for guarded commands alone, which it counts as runs, not changes.
    assert_eq!(
        out.status.code(),
        Some(0),
        "nexus {:?}: {}{}",
        phase.args(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Row {
    workload: &'static str,
    resources: usize,
    phase: Phase,
    counts: Counts,
}

fn per(n: usize, r: usize) -> String {
    format!("{:.2}", n as f64 / r as f64)
}

fn list(v: &[(&str, usize)], max: usize) -> String {
    let mut s: Vec<String> = v
        .iter()
        .take(max)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    if v.len() > max {
        s.push("…".into());
    }
    s.join(", ")
}

fn report(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | resources | phase | execve total | per resource | sshd (connections) | session shells | script programs | script per resource | top script programs |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let c = &r.counts;
        let script = c.class(Class::Script);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.resources,
            r.phase.name(),
            c.total(),
            per(c.total(), r.resources),
            c.class(Class::Sshd),
            c.class(Class::Session),
            script,
            per(script, r.resources),
            list(&c.ranked(Class::Script), 6),
        );
    }
    s.push_str("\nEvery program, by class (failed execve calls are not counted above):\n\n");
    for r in rows {
        let c = &r.counts;
        let failed: Vec<(&str, usize)> = c.failed.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        let _ = writeln!(
            s,
            "- {} / {}: sshd: {}; session: {}; script: {}; failed execve: {}",
            r.workload,
            r.phase.name(),
            list(&c.ranked(Class::Sshd), usize::MAX),
            list(&c.ranked(Class::Session), usize::MAX),
            list(&c.ranked(Class::Script), usize::MAX),
            if failed.is_empty() {
                "none".into()
            } else {
                list(&failed, usize::MAX)
            },
        );
    }
    s
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    assert!(
        Path::new(STRACE).exists(),
        "{STRACE} is missing: this benchmark counts the programs the test host executes with \
         strace attached to its sshd; install it (apt-get install strace) and run it again"
    );
    let bin = std::env::var_os("NEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nexus")));
    let host = SshHost::builder("hp").private_srv().start();
    let pid = host.sshd_pid().expect("sshd runs");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim_end(),
        "sshd",
        "the harness's child {pid} is not sshd itself: its wrapper did not exec into sshd"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    harness::write_known_hosts(&dir.join("known_hosts"), &[&host]);
    std::fs::write(dir.join("ssh_config"), "").expect("ssh_config");

    let mut rows = Vec::new();
    for kind in kinds(bench) {
        reset(&host, dir, &kind.premade);
        std::fs::write(
            dir.join("nexus.kdl"),
            workload::nexus_config(&kind.work, std::slice::from_ref(&host)),
        )
        .expect("nexus.kdl");
        for phase in [Phase::Plan, Phase::Apply, Phase::NoopPlan] {
            let ((), trace) = traced(pid, dir, || nexus(&bin, dir, phase));
            if let Some(keep) = std::env::var_os("NEXUS_HOST_PROGRAMS_TRACES") {
                let name = format!("{}-{}.txt", kind.name, phase.name()).replace(' ', "_");
                std::fs::create_dir_all(&keep).expect("trace directory");
                std::fs::write(Path::new(&keep).join(name), &trace).expect("keep trace");
            }
            rows.push(Row {
                workload: kind.name,
                resources: kind.resources(),
                phase,
                counts: count(&trace, pid),
            });
            if let Phase::Apply = phase {
                verify(&host, &kind.work);
            }
        }
    }
    println!(
        "Programs executed on one loopback sshd host, per nexus command ({})\n",
        bin.display()
    );
    println!("{}", report(&rows));
    for r in &rows {
        // A trace without a login or a session would mean the counting broke, not that nexus got
        // cheaper: every command connects (one sshd re-exec) and runs its scripts in a channel's
        // shell. Scripts may some day start no program at all, so that class is not checked.
        assert!(
            r.counts.class(Class::Sshd) > 0 && r.counts.class(Class::Session) > 0,
            "{} / {}: the trace saw no login or no session: {}",
            r.workload,
            r.phase.name(),
            report(std::slice::from_ref(r))
        );
    }
}
