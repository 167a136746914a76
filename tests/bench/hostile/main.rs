//! Fuzz at scale (issue 14): N generated inputs per target (config loader, `when` expressions,
//! templates), each batch in a child process running the cases on the stack nexus gives that
//! target, so that a stack overflow or abort is counted and the run goes on.
//!
//! - `cargo bench --bench hostile_fuzz` runs `NEXUS_HOSTILE_N` cases per target (default 20,000)
//!   from seed `NEXUS_HOSTILE_SEED` (default 14) and prints, per target, executions, accepted,
//!   refused, panics, crashes (stack overflows and other signals) and timeouts
//!   (`NEXUS_HOSTILE_TIMEOUT_S` per case, default 10), then times 20,000 errors through load and
//!   render. Findings are written to `target/hostile-findings/TARGET-SEED-CASE.txt`.
//!   `NEXUS_HOSTILE_TARGETS=config,template` runs only those targets (config cases are the
//!   slowest: about 0.25 s each in release, some of them megabytes with 100,000 errors).
//! - `cargo bench --bench hostile_fuzz -- --case TARGET SEED CASE` prints one case's input.
//! - Under `cargo test` (no `--bench`) it runs 50 cases per target, with 120 s per case: there a
//!   timeout means a hang, not slowness.
//!
//! `tests/hostile_fuzz.rs` runs a few hundred cases in process on every CI run.

#[path = "cases.rs"]
mod cases;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Child: runs cases `start..end`, printing `D CASE OUTCOME` after each, flushed.
fn child(target: &str, seed: u64, start: u64, end: u64) {
    let corpus = cases::corpus(root());
    let dir = tempfile::tempdir().expect("scratch dir");
    let target = target.to_string();
    let dir_path = dir.path().to_path_buf();
    let worker = std::thread::Builder::new()
        .stack_size(cases::stack_size(&target))
        .spawn(move || {
            let out = std::io::stdout();
            for case in start..end {
                let text = cases::input(&target, seed, case, &corpus);
                let got = std::panic::catch_unwind(|| cases::run(&target, &text, &dir_path));
                let word = match got {
                    Ok(cases::Outcome::Accepted) => "accepted",
                    Ok(cases::Outcome::Refused) => "refused",
                    Err(_) => "panic",
                };
                let mut o = out.lock();
                let _ = writeln!(o, "D {case} {word}");
                let _ = o.flush();
            }
        })
        .expect("worker");
    worker.join().expect("worker");
}

#[derive(Default)]
struct Figures {
    executions: u64,
    accepted: u64,
    refused: u64,
    panics: u64,
    overflows: u64,
    crashes: u64,
    timeouts: u64,
    findings: Vec<u64>,
}

/// Parent: runs `n` cases of `target` in child processes, restarting after a crash or timeout.
fn campaign(target: &str, seed: u64, n: u64, timeout: Duration, corpus: &[String]) -> Figures {
    let exe = std::env::current_exe().expect("current exe");
    let mut f = Figures::default();
    let mut next = 0;
    while next < n {
        let mut proc = Command::new(&exe)
            .args([
                "--child",
                target,
                &seed.to_string(),
                &next.to_string(),
                &n.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = proc.stdout.take().expect("stdout");
        let mut stderr = proc.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut failed_case = None;
        loop {
            match rx.recv_timeout(timeout) {
                Ok(line) => {
                    let mut parts = line.split(' ');
                    let (Some("D"), Some(case), Some(word)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let case: u64 = case.parse().expect("case number");
                    f.executions += 1;
                    match word {
                        "accepted" => f.accepted += 1,
                        "refused" => f.refused += 1,
                        _ => {
                            f.panics += 1;
                            f.findings.push(case);
                            save(target, seed, case, corpus, "panic");
                        }
                    }
                    next = case + 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = proc.kill();
                    f.executions += 1;
                    f.timeouts += 1;
                    failed_case = Some((next, "timeout"));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = proc.wait().expect("wait child");
        let err = err_reader.join().unwrap_or_default();
        if failed_case.is_none() && !status.success() && next < n {
            f.executions += 1;
            if err.contains("overflowed its stack") {
                f.overflows += 1;
                failed_case = Some((next, "overflow"));
            } else {
                f.crashes += 1;
                failed_case = Some((next, "crash"));
            }
        }
        if let Some((case, why)) = failed_case {
            f.findings.push(case);
            save(target, seed, case, corpus, why);
            next = case + 1;
        }
    }
    f
}

fn save(target: &str, seed: u64, case: u64, corpus: &[String], why: &str) {
    let dir = root().join("target/hostile-findings");
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join(format!("{target}-{seed}-{case}.txt"));
    let _ = std::fs::write(&path, cases::input(target, seed, case, corpus));
    eprintln!("  finding: {why} at {}", path.display());
}

/// 20,000 configuration errors through load and render (issue 14: reporting must be linear).
fn many_errors() {
    let text: String = (0..20_000)
        .map(|i| format!("task \"t{i}\" deps=\"missing-{i}\" {{\n    package \"x\" bogus=1\n}}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("scratch");
    let start = Instant::now();
    let e = nexus::config::load_str(&text, "nexus.kdl", dir.path()).expect_err("invalid");
    let loaded = start.elapsed();
    let out = e.render(nexus::config::RenderOptions {
        color: false,
        width: 100,
    });
    let json = e.to_json().to_string();
    println!(
        "many errors: {} errors, load {:.3} s, load+render+json {:.3} s ({} + {} bytes)",
        e.diags.len(),
        loaded.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        out.len(),
        json.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let num = |i: usize| args[i].parse::<u64>().expect("number");
        child(&args[2], num(3), num(4), num(5));
        return;
    }
    let corpus = cases::corpus(root());
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let num = |i: usize| args[i].parse::<u64>().expect("number");
        print!(
            "{}",
            cases::input(&args[i + 1], num(i + 2), num(i + 3), &corpus)
        );
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let n = env_u64("NEXUS_HOSTILE_N", if bench { 20_000 } else { 50 });
    let seed = env_u64("NEXUS_HOSTILE_SEED", 14);
    // Under `cargo test` the timeout only catches a hang: a debug build on a loaded machine takes
    // several seconds for a megabyte of broken KDL, and a test must not fail on speed.
    let timeout = Duration::from_secs(env_u64(
        "NEXUS_HOSTILE_TIMEOUT_S",
        if bench { 10 } else { 120 },
    ));
    println!("hostile fuzz: {n} cases per target, seed {seed}, {timeout:?} per case");
    let mut total_findings = 0;
    let only = std::env::var("NEXUS_HOSTILE_TARGETS").unwrap_or_default();
    for target in cases::TARGETS {
        if !only.is_empty() && !only.split(',').any(|t| t == target) {
            continue;
        }
        let start = Instant::now();
        let f = campaign(target, seed, n, timeout, &corpus);
        println!(
            "{target:<10} executions {:>7}  accepted {:>7}  refused {:>7}  panics {}  stack overflows {}  other crashes {}  timeouts {}  ({:.1} s)",
            f.executions,
            f.accepted,
            f.refused,
            f.panics,
            f.overflows,
            f.crashes,
            f.timeouts,
            start.elapsed().as_secs_f64()
        );
        total_findings += f.findings.len();
    }
    if bench {
        many_errors();
    }
    if total_findings > 0 {
        eprintln!("{total_findings} findings under target/hostile-findings/");
        std::process::exit(1);
    }
}
