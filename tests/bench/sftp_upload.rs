//! Benchmark: one large `upload` with `nexus run` (over SFTP) against `scp` of the same file, to
//! one loopback sshd host, as the login user into its own /srv. Prints each run's wall time and
//! throughput, and nexus's peak RSS (getrusage of the children, read before scp runs).
//! `cargo bench --bench sftp_upload` (as root, after tests/setup.sh); the size in MiB from
//! NEXUS_BENCH_MIB (1024), runs from NEXUS_BENCH_RUNS (3). Under `cargo test --all-targets` (no
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
    let h = SshHost::builder("sftp-bench").private_srv().start();
    let p = Project::over(
        &[&h],
        "",
        "task \"t\" on=\"sftp-bench\" {\n    upload \"big.bin\" \"/srv/nexus.bin\" mode=\"0644\"\n}\n",
    );
    make_file(&p.path("big.bin"), mib);
    let secs = |d: Duration| d.as_secs_f64();
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();

    println!("upload of {mib} MiB to one loopback sshd, {runs} run(s) each");
    let mut nexus = Vec::new();
    for i in 0..runs {
        // A different target each time: an unchanged file would be a no-op.
        std::fs::remove_file(h.srv().join("nexus.bin")).ok();
        let d = timed(&mut p.command(&["run", "-q"]));
        assert_eq!(
            std::fs::metadata(h.srv().join("nexus.bin")).unwrap().len(),
            (mib as u64) << 20
        );
        println!(
            "nexus run {}: {:.2} s, {:.0} MiB/s",
            i + 1,
            secs(d),
            rate(d)
        );
        nexus.push(d);
    }
    let rss = children_max_rss_mib();
    println!("nexus peak RSS (max over its runs): {rss:.0} MiB");

    // Where nexus's time and memory go: planning (reading, hashing and embedding the content)
    // apart from applying (the transfer), each with its own peak RSS from GNU time. Then a plan
    // with the file in place: what every later `nexus plan` of this host pays (the host's hash
    // of the file in the probe, and nexus's of the local one).
    std::fs::remove_file(h.srv().join("nexus.bin")).ok();
    for (phase, args) in [
        ("plan -o", &["plan", "-q", "-o", "phase.lock"][..]),
        ("apply", &["apply", "-q", "phase.lock"][..]),
        ("plan (no-op)", &["plan", "-q", "-o", "noop.lock"][..]),
    ] {
        let cmd = p.command(args);
        let program = cmd.get_program().to_owned();
        let mut timed_cmd = Command::new("/usr/bin/time");
        timed_cmd
            .args(["-f", "%e s, peak RSS %M KiB"])
            .arg(program)
            .args(cmd.get_args())
            .current_dir(p.dir())
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1");
        let out = timed_cmd.output().unwrap();
        assert!(out.status.success(), "{phase}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        println!("nexus {phase}: {}", err.trim().lines().last().unwrap_or(""));
    }

    let mut scp = Vec::new();
    for i in 0..runs {
        std::fs::remove_file(h.srv().join("scp.bin")).ok();
        let d = timed(
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
        );
        println!("scp run {}: {:.2} s, {:.0} MiB/s", i + 1, secs(d), rate(d));
        scp.push(d);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let ratio = secs(best(&scp)) / secs(best(&nexus));
    println!(
        "best: nexus {:.2} s, scp {:.2} s; nexus throughput = {:.0}% of scp's",
        secs(best(&nexus)),
        secs(best(&scp)),
        ratio * 100.0
    );
}
