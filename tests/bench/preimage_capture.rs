//! Benchmark: what capturing pre-images (issue 16) costs `nexus apply`, on N loopback sshd hosts
//! with F files each whose content changes, for several file sizes. Three figures per size:
//! the whole `nexus apply plan.lock` process; the re-probe alone, timed in this process with
//! `stale::check` (capture on) against `stale::fingerprints` (the same probe script without the
//! capture section) on the same plan and warm connections; and the growth of the SQLite state
//! database (file plus WAL) per apply.
//! `cargo bench --bench preimage_capture` (as root, after tests/setup.sh); N, F and runs from
//! NEXUS_BENCH_HOSTS (10), NEXUS_BENCH_FILES (4), NEXUS_BENCH_RUNS (5); sizes in bytes from
//! NEXUS_BENCH_SIZES (1024,65536,1048576). Under `cargo test --all-targets` (no `--bench`) it
//! runs once on 1 host with 2 small files and checks correctness only.

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::SshHost;
use nexus::app::secrets::{Needs, Source};
use nexus::exec::stale;
use nexus::inventory::{Inventory, Overrides};
use nexus::plan::{Plan, lockfile};

/// `nexus apply`'s default `-j`, so the in-process re-probe runs as apply's does.
const PARALLEL: usize = 32;

/// Text that looks like a configuration file and is different for every seed: the state
/// database keeps blobs by hash, so repeated contents would hide its growth.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(if out.len() % 64 == 63 {
            b'\n'
        } else {
            b' ' + (x % 95) as u8
        });
    }
    out
}

fn nexus(bin: &str, dir: &Path, args: &[&str]) -> (Duration, String) {
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
    (t, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bytes of the SQLite state database with its write-ahead log. A checkpoint first moves the
/// log into the database and truncates it: a log file is reused without shrinking, so its size
/// alone would not say what one apply added. Also the bytes held in the blobs table and in the
/// recorded plans, to tell the pre-images' contents from the rest of what an apply records.
fn state_bytes(dir: &Path) -> [u64; 3] {
    let db = dir.join(".nexus/state.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let sum = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    let blobs = sum("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM blobs");
    let plans = sum("SELECT COALESCE(SUM(LENGTH(plan)), 0) FROM run_plans");
    drop(conn);
    let file = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(".nexus").join(f)).ok())
        .map(|m| m.len())
        .sum();
    [file, blobs, plans]
}

/// The re-probe of `plan` as `nexus apply` makes it (app/apply.rs): the same secrets, inventory
/// and parallelism. Returns the time of `stale::check` and of `stale::fingerprints`, measured
/// on connections already open so that the difference is the capture alone, and the bytes
/// captured.
fn reprobe(plan: &Plan, base: &Path, check_first: bool) -> (Duration, Duration, u64, usize) {
    let needs = Needs::of_plan(plan);
    let env = |k: &str| std::env::var(k).ok();
    let source = Source::Plan {
        vault: plan.vault.as_ref(),
        base,
    };
    let secrets = nexus::app::secrets::resolve(&source, &needs, &env).unwrap();
    // Every probed resource, so both calls send the same probe script.
    let keys: BTreeMap<String, BTreeSet<String>> = plan
        .hosts
        .iter()
        .map(|h| {
            let keys = h
                .resources
                .iter()
                .filter(|r| !r.id.is_empty())
                .map(|r| r.key.clone())
                .collect();
            (h.name.clone(), keys)
        })
        .collect();
    let rt = nexus::app::plan::runtime().unwrap();
    rt.block_on(async {
        let mut inv = Inventory::for_plan(plan, base, &Overrides::default()).unwrap();
        inv.set_secrets(secrets.clone());
        let warm = stale::fingerprints(plan, &keys, &inv, PARALLEL, &env, &secrets).await;
        assert_eq!(warm.len(), keys.values().map(BTreeSet::len).sum::<usize>());
        let opened = inv.connections_opened();
        let mut with = None;
        let mut without = None;
        for first in [check_first, !check_first] {
            let start = Instant::now();
            if first {
                let c = stale::check(plan, &inv, PARALLEL, &env, &secrets).await;
                with = Some((start.elapsed(), c));
            } else {
                let f = stale::fingerprints(plan, &keys, &inv, PARALLEL, &env, &secrets).await;
                without = Some((start.elapsed(), f));
            }
        }
        assert_eq!(
            inv.connections_opened(),
            opened,
            "the timed probes must reuse the warm connections"
        );
        inv.close().await;
        let (with, check) = with.unwrap();
        let (without, fingerprints) = without.unwrap();
        assert!(
            check.is_fresh(),
            "{:?} {:?}",
            check.drift,
            check.unreachable
        );
        assert_eq!(fingerprints.len(), warm.len());
        let contents: Vec<&Vec<u8>> = check
            .captured
            .iter()
            .filter_map(|c| c.content.as_ref())
            .collect();
        let captured = contents.iter().map(|c| c.len() as u64).sum();
        (with, without, captured, contents.len())
    })
}

struct Size {
    bytes: usize,
    apply: Vec<Duration>,
    check: Vec<Duration>,
    fingerprints: Vec<Duration>,
    growth: Vec<u64>,
    blobs: Vec<u64>,
    plans: Vec<u64>,
    captured: u64,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("NEXUS_BENCH_HOSTS", if bench { 10 } else { 1 });
    let files = env("NEXUS_BENCH_FILES", if bench { 4 } else { 2 });
    let runs = env("NEXUS_BENCH_RUNS", if bench { 5 } else { 1 });
    let sizes: Vec<usize> = match std::env::var("NEXUS_BENCH_SIZES") {
        Ok(s) => s.split(',').map(|v| v.trim().parse().unwrap()).collect(),
        Err(_) if bench => vec![1024, 64 * 1024, 1024 * 1024],
        Err(_) => vec![1024],
    };
    let bin = std::env::var("NEXUS_BIN").unwrap_or_else(|_| {
        let release = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nexus");
        if bench && Path::new(release).exists() {
            release.into()
        } else {
            env!("CARGO_BIN_EXE_nexus").into()
        }
    });
    let hosts: Vec<SshHost> = (0..n)
        .map(|i| SshHost::builder(&format!("p{i:02}")).private_srv().start())
        .collect();
    for h in &hosts {
        // Owned like /srv, so the login user can replace the files seeded below as root.
        let srv = std::fs::metadata(h.srv()).unwrap();
        let cap = h.srv().join("cap");
        std::fs::create_dir(&cap).unwrap();
        std::os::unix::fs::chown(&cap, Some(srv.uid()), Some(srv.gid())).unwrap();
    }
    let refs: Vec<&SshHost> = hosts.iter().collect();
    let names: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.name)).collect();

    let mut results = Vec::new();
    for (s, &bytes) in sizes.iter().enumerate() {
        // A fresh project per size: its state database grows from the same start.
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = harness::project_config(dir.path(), &refs, "");
        cfg.push_str(&format!(
            "group \"fleet\" {{\n    members {}\n}}\ntask \"capture\" on=\"fleet\" {{\n",
            names.join(" ")
        ));
        for f in 0..files {
            cfg.push_str(&format!(
                "    file \"/srv/cap/f{f}.conf\" source=\"files/f{f}.conf\" mode=\"0640\"\n"
            ));
        }
        cfg.push_str("}\n");
        std::fs::write(dir.path().join("nexus.kdl"), cfg).unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();

        let mut r = Size {
            bytes,
            apply: Vec::new(),
            check: Vec::new(),
            fingerprints: Vec::new(),
            growth: Vec::new(),
            blobs: Vec::new(),
            plans: Vec::new(),
            captured: 0,
        };
        // One more run than measured: the first creates the state database and warms caches.
        let warmup = usize::from(bench);
        for run in 0..runs + warmup {
            let measured = run >= warmup;
            let seed =
                |host: usize, f: usize| ((s * 1000 + run) * 1000 + host) as u64 * 64 + f as u64;
            let mut olds: Vec<Vec<Vec<u8>>> = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                let srv = std::fs::metadata(h.srv()).unwrap();
                let mut mine = Vec::new();
                for f in 0..files {
                    let path = h.srv().join(format!("cap/f{f}.conf"));
                    let old = content(seed(i + 1, f), bytes);
                    std::fs::write(&path, &old).unwrap();
                    std::os::unix::fs::chown(&path, Some(srv.uid()), Some(srv.gid())).unwrap();
                    mine.push(old);
                }
                olds.push(mine);
            }
            let news: Vec<Vec<u8>> = (0..files).map(|f| content(seed(0, f), bytes)).collect();
            for (f, new) in news.iter().enumerate() {
                std::fs::write(dir.path().join(format!("files/f{f}.conf")), new).unwrap();
            }
            nexus(&bin, dir.path(), &["plan", "-o", "plan.lock"]);

            let plan_bytes = std::fs::read(dir.path().join("plan.lock")).unwrap();
            let plan = lockfile::decode(&plan_bytes).unwrap();
            // Relative to the directory nexus runs in, which is not this process's.
            let base = dir.path().join(nexus::plan::base_dir(&plan.config));
            let (with, without, captured, images) = reprobe(&plan, &base, run % 2 == 0);
            assert_eq!(
                images,
                n * files,
                "every changed file's content is captured"
            );
            assert_eq!(captured, (n * files * bytes) as u64);
            let before = (run > 0).then(|| state_bytes(dir.path()));
            let (t, _) = nexus(&bin, dir.path(), &["apply", "plan.lock"]);
            let after = state_bytes(dir.path());
            if let Some(before) = before.filter(|_| measured) {
                r.check.push(with);
                r.fingerprints.push(without);
                r.captured = captured;
                r.apply.push(t);
                r.growth.push(after[0] - before[0]);
                r.blobs.push(after[1] - before[1]);
                r.plans.push(after[2] - before[2]);
            }

            for h in &hosts {
                for (f, new) in news.iter().enumerate() {
                    let now = std::fs::read(h.srv().join(format!("cap/f{f}.conf"))).unwrap();
                    assert!(now == *new, "{}: f{f} was not replaced", h.name);
                }
            }
            for h in &hosts {
                let (_, out) = nexus(
                    &bin,
                    dir.path(),
                    &["history", "--host", &h.name, "--format", "json"],
                );
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                let newest = &v["generations"][0];
                assert_eq!(newest["reversible"], true, "{}: {out}", h.name);
            }
            if !bench {
                // The pre-image restores what the host had: roll back and compare.
                nexus(&bin, dir.path(), &["rollback", "-o", "undo.lock"]);
                nexus(&bin, dir.path(), &["apply", "undo.lock"]);
                for (h, mine) in hosts.iter().zip(&olds) {
                    for (f, old) in mine.iter().enumerate() {
                        let now = std::fs::read(h.srv().join(format!("cap/f{f}.conf"))).unwrap();
                        assert!(now == *old, "{}: f{f} was not restored", h.name);
                    }
                }
            }
        }
        results.push(r);
    }
    if bench {
        report(n, files, runs, &bin, &results);
    }
}

fn ms(d: &Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn median<T: Ord + Copy>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Milliseconds the capture added to each re-probe pair.
fn deltas(r: &Size) -> Vec<f64> {
    r.check
        .iter()
        .zip(&r.fingerprints)
        .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
        .collect()
}

fn report(n: usize, files: usize, runs: usize, bin: &str, results: &[Size]) {
    println!(
        "pre-image capture on {n} loopback hosts x {files} changed files, {runs} runs per size ({bin})"
    );
    let join = |v: &[Duration]| v.iter().map(ms).collect::<Vec<_>>().join(" ");
    for r in results {
        let mib = r.captured as f64 / (1 << 20) as f64;
        println!(
            "\nfile size {} ({:.2} MiB captured per apply)",
            size_name(r.bytes),
            mib
        );
        println!("  apply (whole process) raw ms:    {}", join(&r.apply));
        println!("  re-probe with capture raw ms:    {}", join(&r.check));
        println!(
            "  re-probe without capture raw ms: {}",
            join(&r.fingerprints)
        );
        println!(
            "  capture (with - without) raw ms: {}",
            deltas(r)
                .iter()
                .map(|d| format!("{d:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let bytes = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        println!("  state growth raw bytes:          {}", bytes(&r.growth));
        println!("    of which blobs (pre-images):   {}", bytes(&r.blobs));
        println!("    of which recorded plan:        {}", bytes(&r.plans));
    }
    println!(
        "\n| file size | MiB captured | apply ms | re-probe with capture ms | without ms | capture ms | capture ms per MiB | share of apply | state growth per apply | blobs | recorded plan |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // Medians throughout; the capture is the median of the paired differences.
    for r in results {
        let mib = r.captured as f64 / (1 << 20) as f64;
        let (a, c, f) = (median(&r.apply), median(&r.check), median(&r.fingerprints));
        // The median of the paired differences: each pair ran back to back on one connection
        // set, so the machine's load drifts less within a pair than across runs.
        let mut deltas = deltas(r);
        deltas.sort_by(f64::total_cmp);
        let capture = deltas[deltas.len() / 2];
        let growth = median(&r.growth);
        let in_mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "| {} | {:.2} | {} | {} | {} | {:.1} | {:.1} | {:.1}% | {:.2} MiB ({:.2}x captured) | {:.2} MiB | {:.2} MiB |",
            size_name(r.bytes),
            mib,
            ms(&a),
            ms(&c),
            ms(&f),
            capture,
            capture / mib,
            capture / (a.as_secs_f64() * 1e3) * 100.0,
            growth as f64 / (1 << 20) as f64,
            growth as f64 / r.captured as f64,
            in_mib(median(&r.blobs)),
            in_mib(median(&r.plans)),
        );
    }
}
