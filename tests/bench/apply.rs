//! Benchmark: `nexus apply` of a cold plan and a no-op `nexus run`, on N loopback sshd hosts with
//! R resources each (files with content and mode, directories, commands with `creates` guards),
//! whole process. `cargo bench --bench apply` (as root, after tests/setup.sh); N and R from
//! NEXUS_BENCH_HOSTS (20) and NEXUS_BENCH_RESOURCES (200). Under `cargo test --all-targets` (no
//! `--bench`) it runs once on 2 hosts with 12 resources as a smoke test.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::SshHost;

fn workload(resources: usize) -> String {
    // 40% files, 20% directories, 40% guarded commands, in directories the task creates first.
    let files = resources * 2 / 5;
    let dirs = resources / 5;
    let cmds = resources - files - dirs;
    let mut s = String::from("group \"fleet\"");
    s.push_str(" {\n    members ");
    s.push_str("HOSTS");
    s.push_str("\n}\ntask \"bench\" on=\"fleet\" {\n    directory \"/srv/bench\" mode=\"0755\"\n");
    for d in 0..dirs.saturating_sub(1) {
        s.push_str(&format!(
            "    directory \"/srv/bench/d{d}\" mode=\"0750\"\n"
        ));
    }
    for f in 0..files {
        s.push_str(&format!(
            "    file \"/srv/bench/f{f}.conf\" content=\"key = {f}\\n\" mode=\"0640\"\n"
        ));
    }
    for c in 0..cmds {
        s.push_str(&format!(
            "    command \"touch /srv/bench/c{c}.done\" creates=\"/srv/bench/c{c}.done\"\n"
        ));
    }
    s.push_str("}\n");
    s
}

fn time(bin: &str, dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(bin)
        .current_dir(dir)
        .args(["-c", "nexus.kdl", "-q"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let t = start.elapsed();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("NEXUS_BENCH_HOSTS", if bench { 20 } else { 2 });
    let r = env("NEXUS_BENCH_RESOURCES", if bench { 200 } else { 12 });
    let runs = env("NEXUS_BENCH_RUNS", if bench { 5 } else { 1 });
    let bin = std::env::var("NEXUS_BIN").unwrap_or_else(|_| {
        let release = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nexus");
        if bench && Path::new(release).exists() {
            release.into()
        } else {
            env!("CARGO_BIN_EXE_nexus").into()
        }
    });
    let hosts: Vec<SshHost> = (0..n)
        .map(|i| SshHost::builder(&format!("b{i:02}")).private_srv().start())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let mut cfg = harness::project_config(dir.path(), &refs, "");
    let names: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.name)).collect();
    cfg.push_str(&workload(r).replace("HOSTS", &names.join(" ")));
    std::fs::write(dir.path().join("nexus.kdl"), cfg).unwrap();

    let mut cold = Vec::new();
    let mut noop = Vec::new();
    for _ in 0..runs {
        for h in &hosts {
            let _ = std::fs::remove_dir_all(h.srv().join("bench"));
        }
        let _ = std::fs::remove_dir_all(dir.path().join(".nexus"));
        // Cold: plan (not timed), then apply exactly that plan.
        time(&bin, dir.path(), &["plan", "-o", "plan.lock"]);
        cold.push(time(&bin, dir.path(), &["apply", "plan.lock", "-j", "64"]));
        noop.push(time(&bin, dir.path(), &["run", "-j", "64"]));
    }
    cold.sort();
    noop.sort();
    println!("nexus on {n} loopback hosts x {r} resources, {runs} run(s), whole process ({bin})");
    println!(
        "  cold apply:  min {}  median {}",
        ms(cold[0]),
        ms(cold[cold.len() / 2])
    );
    println!(
        "  no-op run:   min {}  median {}",
        ms(noop[0]),
        ms(noop[noop.len() / 2])
    );
}
