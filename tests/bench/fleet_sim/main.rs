//! Benchmark (issue 18): nexus's own cost on a fleet of 1,000 to 10,000 hosts, simulated.
//!
//! One russh server in this process plays every host ([`sim`]): one listener per host on its own
//! loopback address (127.100.0.1 upwards, one port for all), answering nexus's requests with
//! outputs recorded from a real host. The recording is taken first, each time: nexus runs a
//! cold `plan -o plan.lock`, `apply plan.lock` and a no-op `plan --detailed-exitcode` against one
//! harness sshd (its own /srv) through a relaying listener of the simulator, which keeps every
//! exec channel's command line, input, output and exit status. Each fleet run replays the
//! recording of the same command. A request not recorded fails on purpose, and every run must
//! show every host answering each of its requests, with the exit status the real host gave.
//!
//! The workload per host is ten resources (3 directories, 5 files with content, 2 commands
//! guarded by `creates`) taken from the peers benchmark's workload.
//!
//! Each nexus run is measured by a process of its own ([`measure`]): wall time, user and system
//! CPU and peak RSS from getrusage of its only child, and peak open descriptors sampled from
//! /proc/PID/fd. nexus starts with a soft RLIMIT_NOFILE of 1024 (below what 10,000 connections
//! need) and the machine's hard limit, so the runs show whether nexus raises its own limit
//! (src/fd_limit.rs); the simulator raises its own for its listeners and connections.
//!
//! `cargo bench --bench fleet_sim`, as root after `tests/setup.sh` (the recording needs the
//! harness sshd). Settings (environment):
//! - `NEXUS_FLEET_N`: fleet sizes, comma-separated (default `1000,5000,10000`)
//! - `NEXUS_FLEET_J`: `-j` values for the no-op plan (default `32,256,1024`)
//! - `NEXUS_FLEET_RUNS`: no-op plans per size and `-j` (default 3)
//! - `NEXUS_FLEET_APPLY`: `0` skips the cold plan and apply per size (run once, at the first `-j`)
//! - `NEXUS_FLEET_KNOWN_HOSTS`: `pattern` (default), one known_hosts line for every host, or
//!   `lines`, one per host (nexus parses known_hosts once per run and looks hosts up by name, so
//!   both are linear in the fleet; before that, `lines` grew with its square)
//! - `NEXUS_BIN`: the nexus binary (default: the one cargo built with this benchmark)
//! - `NEXUS_FLEET_DUMP`: a directory to write each recorded request and each one the
//!   simulator could not answer to, for comparing them by hand
//!
//! Tables go to stdout and `target/bench-fleet/results.md`. Under `cargo test --all-targets`
//! (no `--bench`) it runs the three commands once on 20 simulated hosts and checks only that
//! they are correct: no timing is asserted.

#[path = "../../harness/mod.rs"]
mod harness;
mod measure;
mod sim;
// The peers benchmark's workload, so the files, directories and commands are issue 18's; only
// its nexus writer is used here.
#[allow(dead_code)]
#[path = "../peers/workload.rs"]
mod workload;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use russh::keys::PublicKey;

use harness::phase::Phase;
use harness::{KeyPair, SshHost, TEST_USER};
use measure::Cost;
use sim::{Shared, Table};
use workload::{Size, Workload};

/// The soft open-file limit nexus starts with: the usual default, too low for a large fleet.
const NEXUS_SOFT_NOFILE: u64 = 1024;

/// How known_hosts names the simulated hosts (all of which present the same key).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Known {
    /// One line per host, as a fleet without a host CA has.
    Lines,
    /// One line for all, `[127.100.*]:PORT`: known_hosts no longer grows with the fleet.
    Pattern,
}

struct Settings {
    known: Known,
    sizes: Vec<usize>,
    jobs: Vec<usize>,
    runs: usize,
    apply: bool,
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: comma-separated numbers"))
        })
        .collect()
}

impl Settings {
    fn new(bench: bool) -> Settings {
        if !bench {
            return Settings {
                known: Known::Lines,
                sizes: vec![20],
                // Fewer than the hosts, so that planning shows it keeps no more than `-j`
                // connections open (see `Bench::run`).
                jobs: vec![2],
                runs: 1,
                apply: true,
            };
        }
        let known = match std::env::var("NEXUS_FLEET_KNOWN_HOSTS").as_deref() {
            Ok("lines") => Known::Lines,
            Ok("pattern") | Err(_) => Known::Pattern,
            Ok(other) => panic!("NEXUS_FLEET_KNOWN_HOSTS={other:?}: lines or pattern"),
        };
        Settings {
            known,
            sizes: env_list("NEXUS_FLEET_N", "1000,5000,10000"),
            jobs: env_list("NEXUS_FLEET_J", "32,256,1024"),
            runs: env_list("NEXUS_FLEET_RUNS", "3")[0],
            apply: std::env::var("NEXUS_FLEET_APPLY").as_deref() != Ok("0"),
        }
    }
}

/// Ten resources: the first 3 directories of the peers workload, 5 of their files and 2 of
/// their commands.
fn workload() -> Workload {
    let w = Workload::new(Size::One);
    let dirs = w.dirs[..3].to_vec();
    let inside = |p: &String| {
        dirs.iter()
            .any(|d| Path::new(p).parent() == Some(Path::new(d)))
    };
    Workload {
        files: w
            .files
            .into_iter()
            .filter(|(p, _)| inside(p))
            .take(5)
            .collect(),
        commands: w
            .commands
            .into_iter()
            .filter(|(_, c)| inside(c))
            .take(2)
            .collect(),
        dirs,
    }
}

/// A project in `dir` for hosts at `addrs`, all presenting `host_key` and accepting `identity`.
fn write_project(
    dir: &Path,
    addrs: &[SocketAddr],
    (form, host_key): (Known, &str),
    identity: &Path,
    w: &Workload,
) {
    std::fs::create_dir_all(dir).expect("project dir");
    let (mut known, mut hosts, mut group) = (String::new(), String::new(), String::new());
    if form == Known::Pattern {
        let _ = writeln!(known, "[127.100.*]:{} {host_key}", addrs[0].port());
    }
    for (i, a) in addrs.iter().enumerate() {
        if form == Known::Lines {
            let _ = writeln!(known, "[{}]:{} {host_key}", a.ip(), a.port());
        }
        let _ = writeln!(
            hosts,
            "host \"h{i:05}\" \"{TEST_USER}@{a}\" identity=\"{}\"",
            identity.display()
        );
        let _ = write!(group, " \"h{i:05}\"");
    }
    std::fs::write(dir.join("known_hosts"), known).expect("known_hosts");
    std::fs::write(dir.join("ssh_config"), "").expect("ssh_config");
    // Handshakes queue behind each other on 2 CPUs at -j 1024: a generous connect timeout.
    let config = format!(
        "defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\" connect-timeout=\"300s\"\n\
         {hosts}group \"fleet\"{group}\n\n{}",
        workload::nexus_task(w, "fleet")
    );
    std::fs::write(dir.join("nexus.kdl"), config).expect("nexus.kdl");
}

/// One measured nexus run.
struct Row {
    phase: Phase,
    n: usize,
    jobs: usize,
    cost: Cost,
    /// CPU seconds this process (the simulator) spent meanwhile.
    sim_cpu_s: f64,
    /// The machine's 1-minute load average when it started: other work on the shared CPUs.
    load: f64,
}

fn self_cpu() -> f64 {
    let ru = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(ru.user_time()) + secs(ru.system_time())
}

struct Bench {
    nexus: PathBuf,
    shared: Arc<Shared>,
    /// The machine's hard open-file limit, before this process raised its own.
    hard_nofile: u64,
}

impl Bench {
    /// Runs `phase` in `dir` against `hosts` hosts replaying `table`, and checks that it did what
    /// the real host did: the recorded exit status, every host answering every request.
    fn run(&self, dir: &Path, phase: Phase, hosts: usize, jobs: usize, table: &Arc<Table>) -> Row {
        let (out, err) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        let soft = NEXUS_SOFT_NOFILE.min(self.hard_nofile);
        let mut cmd = measure::command(soft, self.hard_nofile, &out, &err, &self.nexus);
        cmd.current_dir(dir)
            .args(["-c", "nexus.kdl", "-q"])
            .args(phase.args())
            .args(["-j", &jobs.to_string()]);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        let before = self_cpu();
        let result = cmd.output().expect("run the measuring process");
        let sim_cpu_s = self_cpu() - before;
        assert!(
            result.status.success(),
            "measuring process: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let cost: Cost = serde_json::from_slice(&result.stdout).expect("a cost line");
        let show = || {
            format!(
                "nexus {:?} on {hosts} simulated hosts, -j {jobs}: {cost:?}\n{}{}",
                phase.args(),
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        };
        let unknown = self.shared.unknown.load(Ordering::Relaxed);
        assert_eq!(
            unknown,
            0,
            "requests the recording does not have: {}",
            show()
        );
        let short: Vec<usize> = (0..hosts)
            .filter(|&i| self.shared.answered[i].load(Ordering::Relaxed) != table.requests as u64)
            .collect();
        assert!(
            short.is_empty(),
            "{} hosts did not answer all {} recorded requests (first: h{:05}): {}",
            short.len(),
            table.requests,
            short.first().copied().unwrap_or_default(),
            show()
        );
        // The no-op plan's `--detailed-exitcode` 0 is "no changes"; the cold plan and the apply
        // exit 0 when every host succeeded.
        assert_eq!(cost.exit, Some(0), "{}", show());
        // Planning closes each host's connection once the host is planned, and apply once the
        // host has no task left, so what either holds open is bounded by `-j`, not by the fleet
        // (about 11 descriptors are nexus's own). The count is sampled, so this can miss a
        // breach but never invent one.
        if jobs + 11 < hosts {
            assert!(
                cost.peak_fds < hosts,
                "{phase:?} held {} descriptors open at once with -j {jobs}: {}",
                cost.peak_fds,
                show()
            );
        }
        Row {
            phase,
            n: hosts,
            jobs,
            cost,
            sim_cpu_s,
            load,
        }
    }
}

/// Raises this process's soft open-file limit to its hard one, for `n` listeners and the
/// connections nexus has open at once (see `sim::serve_fleet`); returns the hard limit, which
/// nexus gets too.
fn raise_own_nofile(n: usize) -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = n as u64 + 1024;
    assert!(
        hard >= want,
        "the simulator needs about {want} open files for {n} hosts, but ulimit -Hn is {hard}"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    }
    hard
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(measure::FLAG) {
        measure::child(&args[2..]);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    let bench = args.iter().any(|a| a == "--bench");
    let settings = Settings::new(bench);
    let nexus = std::env::var_os("NEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nexus")));
    let max_n = settings.sizes.iter().copied().max().unwrap_or(0);
    let hard_nofile = raise_own_nofile(max_n);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _in_rt = rt.enter();

    let real = SshHost::builder("fleet-rec").private_srv().start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let sim_key = KeyPair::generate(&tmp.path().join("sim_host_key"), "");
    let user_key = PublicKey::from_openssh(&real.user_key.public).expect("user public key");
    let shared = Shared::new(max_n, user_key);
    let config = sim::server_config(
        russh::keys::load_secret_key(&sim_key.private, None).expect("sim host key"),
    );
    let w = workload();
    let b = Bench {
        nexus,
        shared: shared.clone(),
        hard_nofile,
    };

    // The recording: nexus against the real host, through the relay.
    let relay = rt
        .block_on(tokio::net::TcpListener::bind((harness::next_ip(), 0)))
        .expect("bind the relay");
    let relay_addr = relay.local_addr().expect("relay address");
    sim::serve_recorder(
        relay,
        config.clone(),
        shared.clone(),
        SocketAddr::from((real.ip, real.port)),
        TEST_USER.to_string(),
        &real.user_key.private,
    );
    let rec_dir = tmp.path().join("record");
    write_project(
        &rec_dir,
        &[relay_addr],
        (Known::Lines, &sim_key.public),
        &real.user_key.private,
        &w,
    );
    let tables: Vec<Arc<Table>> = Phase::ALL
        .iter()
        .map(|&phase| {
            let row = b.run(&rec_dir, phase, 0, 32, &Arc::new(Table::default()));
            let raws = std::mem::take(&mut *shared.recorded.lock().expect("recorded"));
            let t = Table::from_raw(&phase.name().replace(' ', "-"), &raws).unwrap_or_else(|e| {
                panic!("recording of {}: {e}", phase.name());
            });
            eprintln!(
                "recorded {}: {} exec channels, {} requests, {:.0} ms on the real host",
                phase.name(),
                raws.len(),
                t.requests,
                row.cost.wall_s * 1e3
            );
            Arc::new(t)
        })
        .collect();
    let table = |p: Phase| tables[Phase::ALL.iter().position(|&q| q == p).expect("phase")].clone();

    let mut rows = Vec::new();
    for &n in &settings.sizes {
        let dir = tmp.path().join(format!("n{n}"));
        let mut phases = Vec::new();
        if settings.apply {
            phases.push((Phase::Plan, settings.jobs[0]));
            phases.push((Phase::Apply, settings.jobs[0]));
        }
        for &j in &settings.jobs {
            phases.extend(std::iter::repeat_n((Phase::NoopPlan, j), settings.runs));
        }
        // One port per size: the plan file names the hosts' addresses.
        let mut port = None;
        for (phase, j) in phases {
            let listeners = rt.block_on(sim::bind_fleet(n, port));
            let addrs: Vec<SocketAddr> = listeners
                .iter()
                .map(|l| l.local_addr().expect("listener address"))
                .collect();
            port = Some(addrs[0].port());
            write_project(
                &dir,
                &addrs,
                (settings.known, &sim_key.public),
                &real.user_key.private,
                &w,
            );
            shared.replay(table(phase));
            let accepting = sim::serve_fleet(listeners, &config, &shared);
            let row = b.run(&dir, phase, n, j, &table(phase));
            accepting.iter().for_each(|t| t.abort());
            // Their listeners must be closed before the next phase binds the same port.
            rt.block_on(async {
                for t in accepting {
                    let _ = t.await;
                }
            });
            eprintln!("{}", line(&row));
            rows.push(row);
        }
    }
    let report = report(&rows, &nexus_version(&b.nexus), hard_nofile, settings.known);
    println!("{report}");
    if bench {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-fleet");
        std::fs::create_dir_all(&out).expect("target/bench-fleet");
        std::fs::write(out.join("results.md"), &report).expect("results.md");
    }
}

fn nexus_version(bin: &Path) -> String {
    let out = std::process::Command::new(bin).arg("--version").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn ms_per_host(r: &Row) -> f64 {
    (r.cost.user_s + r.cost.sys_s) * 1e3 / r.n as f64
}

fn line(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.1} | {} | {} | {:.2} | {:.1} |",
        r.phase.name(),
        r.n,
        r.jobs,
        r.cost.wall_s,
        r.cost.user_s,
        r.cost.sys_s,
        ms_per_host(r),
        r.cost.max_rss_kib as f64 / 1024.0,
        r.cost.peak_fds,
        r.cost.nofile_seen.map_or("?".into(), |n| n.to_string()),
        r.sim_cpu_s,
        r.load,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(rows: &[Row], version: &str, hard: u64, known: Known) -> String {
    let mut s = format!(
        "nexus ({version}) on simulated hosts, known_hosts: {known:?}; nexus starts with \
         RLIMIT_NOFILE {NEXUS_SOFT_NOFILE} soft, {hard} hard.\n\n\
         | command | hosts | -j | wall s | user s | sys s | CPU ms/host | peak RSS MiB | peak fds | nofile seen | sim CPU s | load |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for r in rows {
        let _ = writeln!(s, "{}", line(r));
    }
    s.push_str(
        "\nMedians:\n\n\
         | command | hosts | -j | runs | wall s | CPU ms/host | peak RSS MiB | peak fds |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut keys: Vec<(Phase, usize, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.phase, r.n, r.jobs)) {
            keys.push((r.phase, r.n, r.jobs));
        }
    }
    for (phase, n, j) in keys {
        let g: Vec<&Row> = rows
            .iter()
            .filter(|r| (r.phase, r.n, r.jobs) == (phase, n, j))
            .collect();
        let med = |f: &dyn Fn(&Row) -> f64| median(g.iter().map(|r| f(r)).collect());
        let _ = writeln!(
            s,
            "| {} | {n} | {j} | {} | {:.2} | {:.3} | {:.1} | {:.0} |",
            phase.name(),
            g.len(),
            med(&|r| r.cost.wall_s),
            med(&ms_per_host),
            med(&|r| r.cost.max_rss_kib as f64 / 1024.0),
            med(&|r| r.cost.peak_fds as f64),
        );
    }
    s
}
