//! Benchmark: one large `upload` with `nexus run` (over SFTP) against `scp` of the same file, to
//! one loopback sshd host, as the login user into its own /srv. Prints each run's wall time and
//! throughput, and the peak RSS of its children (getrusage: nexus's, scp's being smaller).
//! `cargo bench --bench sftp_upload` (as root, after tests/setup.sh); the size in MiB from
//! NEXUS_BENCH_MIB (1024), runs from NEXUS_BENCH_RUNS (3); NEXUS_BENCH_BIN=old:new alternates the
//! runs of several nexus binaries (this build's own without it). Under `cargo test --all-targets` (no
//! `--bench`) it runs once with 2 MiB as a smoke test.

#[path = "../harness/mod.rs"]
mod harness;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::SshHost;
use harness::project::Project;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `mib` MiB of pseudo-random bytes (incompressible, as a release tarball is).
fn make_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let t = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// Peak resident set of the largest child waited for so far, in MiB (Linux reports KiB).
fn children_max_rss_mib() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    usage.max_rss() as f64 / 1024.0
}

/// The nexus binaries to compare, alternated run by run: NEXUS_BENCH_BIN, paths separated by
/// `:` (an old build copied aside, say, and the new one); this build's own binary without it.
fn binaries() -> Vec<String> {
    match std::env::var("NEXUS_BENCH_BIN") {
        Ok(v) if !v.is_empty() => v.split(':').map(str::to_string).collect(),
        _ => vec![env!("CARGO_BIN_EXE_nexus").to_string()],
    }
}

/// `cmd` (a [`Project::command`]) with `bin` as its program, under `wrapper` when given.
fn with_binary(cmd: &Command, bin: &str, wrapper: &[&str]) -> Command {
    let mut out = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    out.args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    out
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mib = if bench {
        env_num("NEXUS_BENCH_MIB", 1024)
    } else {
        2
    };
    let runs = if bench {
        env_num("NEXUS_BENCH_RUNS", 3)
    } else {
        1
    };
    let bins = binaries();
    let h = SshHost::builder("sftp-bench").private_srv().start();
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"sftp-bench\" {\n    upload \"big.bin\" \"/srv/nexus.bin\" mode=\"0644\"\n}\n",
    );
    make_file(&p.path("big.bin"), mib);
    let secs = |d: Duration| d.as_secs_f64();
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let scp_once = || {
        std::fs::remove_file(h.srv().join("scp.bin")).ok();
        timed(
            Command::new("scp")
                .args(["-q", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    p.path("known_hosts").display()
                ))
                .arg("-i")
                .arg(&h.user_key.private)
                .args(["-P", &h.port.to_string()])
                .arg(p.path("big.bin"))
                .arg(format!("{}@{}:/srv/scp.bin", harness::TEST_USER, h.ip)),
        )
    };

    println!(
        "upload of {mib} MiB to one loopback sshd, {runs} run(s) each, alternated: {} then scp",
        bins.join(", ")
    );
    // Alternated, so that the load other processes put on the machine falls on all of them.
    let mut nexus: Vec<Vec<Duration>> = vec![Vec::new(); bins.len()];
    let mut scp = Vec::new();
    for i in 0..runs {
        for (b, bin) in bins.iter().enumerate() {
            // A different target each time: an unchanged file would be a no-op.
            std::fs::remove_file(h.srv().join("nexus.bin")).ok();
            let d = timed(&mut with_binary(&p.command(&["run", "-q"]), bin, &[]));
            assert_eq!(
                std::fs::metadata(h.srv().join("nexus.bin")).unwrap().len(),
                (mib as u64) << 20
            );
            println!(
                "nexus run {} ({bin}): {:.2} s, {:.0} MiB/s",
                i + 1,
                secs(d),
                rate(d)
            );
            nexus[b].push(d);
        }
        let d = scp_once();
        println!("scp run {}: {:.2} s, {:.0} MiB/s", i + 1, secs(d), rate(d));
        scp.push(d);
    }
    let rss = children_max_rss_mib();
    println!("nexus peak RSS (max over its runs): {rss:.0} MiB");

    // Where nexus's time and memory go: planning (reading, hashing and embedding the content)
    // apart from applying (the transfer), each with its own peak RSS from GNU time. Then a plan
    // with the file in place: what every later `nexus plan` of this host pays (the host's hash
    // of the file in the probe, and nexus's of the local one).
    for bin in &bins {
        std::fs::remove_file(h.srv().join("nexus.bin")).ok();
        for (phase, args) in [
            ("plan -o", &["plan", "-q", "-o", "phase.lock"][..]),
            ("apply", &["apply", "-q", "phase.lock"][..]),
            ("plan (no-op)", &["plan", "-q", "-o", "noop.lock"][..]),
        ] {
            let mut timed_cmd = with_binary(
                &p.command(args),
                bin,
                &["/usr/bin/time", "-f", "%e s, peak RSS %M KiB"],
            );
            let out = timed_cmd.output().unwrap();
            assert!(out.status.success(), "{phase}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            println!(
                "nexus {phase} ({bin}): {}",
                err.trim().lines().last().unwrap_or("")
            );
        }
    }

    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    for (bin, times) in bins.iter().zip(&nexus) {
        let ratio = secs(best(&scp)) / secs(best(times));
        println!(
            "best: nexus {:.2} s ({bin}), scp {:.2} s; nexus throughput = {:.0}% of scp's",
            secs(best(times)),
            secs(best(&scp)),
            ratio * 100.0
        );
    }
}
