//! Benchmark: a no-op `nexus apply plan.lock` on N loopback sshd hosts with SQLite state versus
//! PostgreSQL state (a real server on loopback, started here), alternating, whole process.
//! `cargo bench --bench state_backends` (as root, after tests/setup.sh); N, R and the number of
//! alternations from NEXUS_BENCH_HOSTS (10), NEXUS_BENCH_RESOURCES (50), NEXUS_BENCH_RUNS (11).
//! Under `cargo test --all-targets` it runs twice on 2 hosts as a smoke test.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::SshHost;
use harness::postgres::Postgres;

fn nexus(bin: &str, dir: &Path, state: &str, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(bin)
        .current_dir(dir)
        .args(["-c", "nexus.kdl", "-q", "--state", state])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("PGPASSWORD")
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("NEXUS_BENCH_HOSTS", if bench { 10 } else { 2 });
    let r = env("NEXUS_BENCH_RESOURCES", if bench { 50 } else { 6 });
    let runs = env("NEXUS_BENCH_RUNS", if bench { 11 } else { 2 });
    let bin = std::env::var("NEXUS_BIN").unwrap_or_else(|_| {
        let release = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nexus");
        if bench && Path::new(release).exists() {
            release.into()
        } else {
            env!("CARGO_BIN_EXE_nexus").into()
        }
    });
    let pg = Postgres::start();
    let hosts: Vec<SshHost> = (0..n)
        .map(|i| SshHost::builder(&format!("s{i:02}")).private_srv().start())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let mut cfg = harness::project_config(dir.path(), &refs, "");
    let names: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.name)).collect();
    cfg.push_str(&format!(
        "group \"fleet\" {{\n    members {}\n}}\ntask \"bench\" on=\"fleet\" {{\n",
        names.join(" ")
    ));
    cfg.push_str("    directory \"/srv/bench\" mode=\"0755\"\n");
    for f in 0..r.saturating_sub(1) {
        cfg.push_str(&format!(
            "    file \"/srv/bench/f{f}.conf\" content=\"key = {f}\\n\" mode=\"0640\"\n"
        ));
    }
    cfg.push_str("}\n");
    std::fs::write(dir.path().join("nexus.kdl"), cfg).unwrap();

    let sqlite = dir.path().join("state.db").display().to_string();
    let url = pg.url("sslmode=disable");
    // Converge once, so every later apply is a no-op.
    nexus(&bin, dir.path(), &sqlite, &["run"]);
    let (mut lite, mut post) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order: [(&str, &mut Vec<Duration>); 2] = if i % 2 == 0 {
            [(&sqlite, &mut lite), (&url, &mut post)]
        } else {
            [(&url, &mut post), (&sqlite, &mut lite)]
        };
        for (state, times) in order {
            nexus(&bin, dir.path(), state, &["plan", "-o", "plan.lock"]);
            times.push(nexus(&bin, dir.path(), state, &["apply", "plan.lock"]));
        }
    }
    println!(
        "no-op apply on {n} loopback hosts x {r} resources, {runs} alternations, whole process ({bin})"
    );
    println!(
        "  sqlite raw ms:     {}",
        lite.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(" ")
    );
    println!(
        "  postgresql raw ms: {}",
        post.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(" ")
    );
    let (a, b) = (median(lite), median(post));
    println!(
        "  median: sqlite {} ms, postgresql {} ms ({:+.1}%)",
        ms(a),
        ms(b),
        (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
    );
}
