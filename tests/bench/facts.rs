//! Benchmark: `nexus facts` over N loopback sshd hosts, whole process (connect, authenticate,
//! gather, disconnect), and the round trips each host cost. Run with
//! `cargo bench --bench facts` (as root, after tests/setup.sh); N from NEXUS_BENCH_HOSTS (20).
//! Under `cargo test --all-targets` (no `--bench`) it runs once on 2 hosts as a smoke test.

#[path = "../harness/mod.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::SshHost;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("NEXUS_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 20 } else { 2 });
    let runs: usize = std::env::var("NEXUS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 10 } else { 1 });
    let bin = std::env::var("NEXUS_BIN").unwrap_or_else(|_| {
        let release = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nexus");
        if std::path::Path::new(release).exists() {
            release.into()
        } else {
            env!("CARGO_BIN_EXE_nexus").into()
        }
    });
    let hosts: Vec<SshHost> = (0..n)
        .map(|i| SshHost::start(&format!("h{i:02}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let cfg = harness::project_config(dir.path(), &refs, "");
    let config = dir.path().join("nexus.kdl");
    std::fs::write(&config, cfg).unwrap();

    let mut times: Vec<Duration> = Vec::new();
    let mut round_trips = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(&bin)
            .args([
                "-c",
                config.to_str().unwrap(),
                "facts",
                "--format",
                "json",
                "-j",
                "64",
            ])
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        times.push(start.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for h in v["hosts"].as_array().unwrap() {
            round_trips.push(h["round_trips"].as_u64().unwrap());
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let max_rt = round_trips.iter().max().copied().unwrap_or(0);
    let min_rt = round_trips.iter().min().copied().unwrap_or(0);
    println!("nexus facts over {n} loopback hosts, {runs} runs, whole process ({bin})");
    println!("  min    {:>8.1} ms", times[0].as_secs_f64() * 1e3);
    println!("  median {:>8.1} ms", median.as_secs_f64() * 1e3);
    println!(
        "  max    {:>8.1} ms",
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    println!("  round trips per host: min {min_rt}, max {max_rt}");
}
