//! Benchmark: nexus against pyinfra and Ansible, on the same loopback sshd hosts and the same work.
//!
//! For N hosts (each an sshd from the test harness with its own /srv), the workload of
//! [`workload`] is written three ways and each tool is timed as a whole process (median of several
//! runs) in three situations: a cold converge (empty /srv), a no-op re-run (everything already in
//! place) and a dry run (`nexus plan`, `pyinfra --dry`, `ansible-playbook --check`), with the peak
//! RSS of the largest process. nexus's plan is also timed with twice the resources per host.
//!
//! Run with `cargo bench --bench peers` as root after `bash tests/setup.sh` (see
//! docs/benchmarks.md). pyinfra and ansible-core are installed into `target/bench-venv` with pip on
//! first use. Settings (environment):
//!
//! - `NEXUS_PEERS_N`: host counts, comma-separated (default `1,10,50`)
//! - `NEXUS_PEERS_RUNS`: repetitions of each measurement (default 5)
//! - `NEXUS_PEERS_RUNS_<TOOL>_<N>`: repetitions for one tool at one N, e.g. `NEXUS_PEERS_RUNS_ANSIBLE_50=2`
//! - `NEXUS_PEERS_TOOLS`: which tools, comma-separated (default `nexus,pyinfra,ansible`)
//! - `NEXUS_PEERS_TIMEOUT`: seconds before one process is killed as hung (default 3600)
//! - `NEXUS_PEERS_QUIET`: start each process only once the CPUs were less than this % busy for a
//!   second (default 30; 0 turns the wait off), waiting at most `NEXUS_PEERS_QUIET_WAIT` seconds
//!   (default 300): on a shared machine, other work skews timings
//! - `NEXUS_BIN`: the nexus binary (default: the one cargo built for this benchmark)
//! - `NEXUS_PEERS_PYTHON`: the Python that creates the virtualenv (default `python3`)
//!
//! Results are merged into `target/bench-peers/results.json` (a later run replaces the
//! measurements it repeats and keeps the others, so a slow tool can be measured separately); the
//! tables are printed and written to `target/bench-peers/results.md`, and the plot to
//! `docs/benchmark-peers.svg`.
//!
//! Under `cargo test --all-targets` (no `--bench`) it only runs nexus once on one host: a smoke
//! test of the generated configuration, without Python, pip or any network but loopback.

#[path = "../../harness/mod.rs"]
mod harness;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{SshHost, TEST_USER};
use report::{Key, Results, Series};
use workload::{Size, Workload};

const PINS: &[&str] = &["pyinfra==3.10.0", "ansible-core==2.19.14"];
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Nexus,
    Pyinfra,
    Ansible,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Nexus => "nexus",
            Tool::Pyinfra => "pyinfra",
            Tool::Ansible => "ansible",
        }
    }
    fn parse(s: &str) -> Tool {
        match s.trim() {
            "nexus" => Tool::Nexus,
            "pyinfra" => Tool::Pyinfra,
            "ansible" => Tool::Ansible,
            other => {
                panic!("unknown tool {other:?} in NEXUS_PEERS_TOOLS (nexus, pyinfra, ansible)")
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Cold,
    Noop,
    Dry,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Cold => "cold",
            Phase::Noop => "noop",
            Phase::Dry => "dry",
        }
    }
}

/// One timed process.
struct Sample {
    secs: f64,
    rss_kib: u64,
    /// User + system CPU seconds of the process and its children.
    cpu: f64,
    /// How busy the machine's CPUs were (%) in the second before it started.
    busy: f64,
    /// CPU seconds the whole machine spent while it ran: the tool, and the sshd processes, shells
    /// and programs on the hosts, which share this machine's CPUs.
    machine_cpu: f64,
    /// stdout, then stderr.
    output: String,
}

struct Bench {
    nexus: PathBuf,
    venv: Option<PathBuf>,
    timeout: Duration,
    /// Start a measurement only when the CPUs were less busy than this (%) for a second.
    quiet: f64,
    /// ... but wait at most this long for that.
    quiet_wait: Duration,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        smoke();
        return;
    }
    if let Some(n) = env_usize("NEXUS_PEERS_HOLD") {
        hold(n);
        return;
    }
    let ns: Vec<usize> = std::env::var("NEXUS_PEERS_N")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("NEXUS_PEERS_N: comma-separated numbers")
        })
        .collect();
    let runs = env_usize("NEXUS_PEERS_RUNS").unwrap_or(5);
    let tools: Vec<Tool> = std::env::var("NEXUS_PEERS_TOOLS")
        .unwrap_or_else(|_| "nexus,pyinfra,ansible".into())
        .split(',')
        .map(Tool::parse)
        .collect();
    let out_dir = Path::new(MANIFEST).join("target/bench-peers");
    std::fs::create_dir_all(&out_dir).expect("target/bench-peers");
    let needs_python = tools.iter().any(|t| *t != Tool::Nexus);
    let b = Bench {
        nexus: pinned_nexus(&out_dir),
        venv: needs_python.then(venv),
        timeout: Duration::from_secs(env_usize("NEXUS_PEERS_TIMEOUT").unwrap_or(3600) as u64),
        quiet: env_usize("NEXUS_PEERS_QUIET").unwrap_or(30) as f64,
        quiet_wait: Duration::from_secs(env_usize("NEXUS_PEERS_QUIET_WAIT").unwrap_or(300) as u64),
    };
    let results_path = out_dir.join("results.json");
    let mut results = Results::load(&results_path);
    results.meta = meta(&b);
    eprintln!("peers benchmark: N = {ns:?}, {runs} runs, tools {tools:?}");
    for (k, v) in &results.meta {
        eprintln!("  {k}: {v}");
    }

    for &n in &ns {
        let hosts: Vec<SshHost> = (0..n)
            .map(|i| SshHost::builder(&format!("h{i:02}")).private_srv().start())
            .collect();
        let dir = out_dir.join(format!("n{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        write_inputs(&dir, &hosts);
        for &tool in &tools {
            // Ansible takes about 15 minutes per run at N=50 on 2 CPUs: one run there unless asked.
            let default_runs = if tool == Tool::Ansible && n >= 50 {
                1
            } else {
                runs
            };
            let runs = env_usize(&format!(
                "NEXUS_PEERS_RUNS_{}_{n}",
                tool.name().to_uppercase()
            ))
            .unwrap_or(default_runs);
            if runs == 0 {
                continue;
            }
            let mut series: BTreeMap<Phase, Series> = BTreeMap::new();
            for run in 0..runs {
                reset(&hosts, &dir);
                for phase in [Phase::Cold, Phase::Noop, Phase::Dry] {
                    let s = b
                        .measure(tool, phase, &dir, "", n)
                        .unwrap_or_else(|e| panic!("{e}"));
                    eprintln!(
                        "  N={n:<3} {:<8} {:<5} run {}/{runs}: {:>9.3} s  {:>7.1} MiB",
                        tool.name(),
                        phase.name(),
                        run + 1,
                        s.secs,
                        s.rss_kib as f64 / 1024.0
                    );
                    check_outcome(tool, phase, &s.output, n);
                    if phase == Phase::Cold {
                        verify(&hosts, &Workload::new(Size::One));
                    }
                    series.entry(phase).or_default().push(&s);
                }
            }
            for (phase, s) in series {
                results.insert(
                    Key {
                        tool: tool.name().into(),
                        n,
                        phase: phase.name().into(),
                    },
                    s,
                );
            }
            results.save(&results_path);
        }
        if tools.contains(&Tool::Nexus) {
            // Plan time against the work per host: converge the largest size nexus can do (sizes
            // nest), then time no-op plans of every size, alternating.
            reset(&hosts, &dir);
            let mut sizes = vec![Size::Half, Size::One];
            let note = format!("nexus N={n} {}", Size::Two.suffix());
            match b.measure(Tool::Nexus, Phase::Cold, &dir, Size::Two.suffix(), n) {
                Ok(s) => {
                    eprintln!("  N={n:<3} nexus    cold-2x:           {:>9.3} s", s.secs);
                    verify(&hosts, &Workload::new(Size::Two));
                    sizes.push(Size::Two);
                    results.notes.remove(&note);
                }
                Err(e) => {
                    let why = e
                        .lines()
                        .find(|l| l.contains("error"))
                        .unwrap_or("failed")
                        .trim()
                        .to_string();
                    eprintln!("  N={n:<3} nexus    cold-2x FAILED: {why}");
                    results.notes.insert(note, why);
                    reset(&hosts, &dir);
                    b.measure(Tool::Nexus, Phase::Cold, &dir, "", n)
                        .unwrap_or_else(|e| panic!("{e}"));
                    verify(&hosts, &Workload::new(Size::One));
                }
            }
            let mut series: Vec<Series> = vec![Series::default(); sizes.len()];
            for run in 0..runs {
                for (size, series) in sizes.iter().zip(series.iter_mut()) {
                    let s = b
                        .measure(Tool::Nexus, Phase::Dry, &dir, size.suffix(), n)
                        .unwrap_or_else(|e| panic!("{e}"));
                    eprintln!(
                        "  N={n:<3} nexus    plan{:<5} run {}/{runs}: {:>9.3} s  {:>7.1} MiB",
                        size.suffix(),
                        run + 1,
                        s.secs,
                        s.rss_kib as f64 / 1024.0
                    );
                    series.push(&s);
                }
            }
            for (size, s) in sizes.iter().zip(series) {
                let phase = match size {
                    Size::Half => "plan-half",
                    Size::One => "plan-1x",
                    Size::Two => "plan-2x",
                };
                results.insert(
                    Key {
                        tool: "nexus".into(),
                        n,
                        phase: phase.into(),
                    },
                    s,
                );
            }
            results.save(&results_path);
        }
        drop(hosts);
    }

    let md = report::markdown(&results);
    println!("{md}");
    std::fs::write(out_dir.join("results.md"), &md).expect("results.md");
    let svg = report::svg(&results);
    let svg_path = Path::new(MANIFEST).join("docs/benchmark-peers.svg");
    std::fs::write(&svg_path, svg).expect("write the plot");
    eprintln!(
        "wrote {}, {} and {}",
        results_path.display(),
        out_dir.join("results.md").display(),
        svg_path.display()
    );
}

/// `cargo test --all-targets`: nexus only, one host, one converge, re-run and plan.
fn smoke() {
    let hosts = vec![SshHost::builder("h00").private_srv().start()];
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    write_inputs(dir, &hosts);
    let b = Bench {
        nexus: nexus_bin(),
        venv: None,
        timeout: Duration::from_secs(300),
        quiet: 0.0,
        quiet_wait: Duration::ZERO,
    };
    for phase in [Phase::Cold, Phase::Noop, Phase::Dry] {
        let s = b
            .measure(Tool::Nexus, phase, dir, "", 1)
            .unwrap_or_else(|e| panic!("{e}"));
        if phase == Phase::Cold {
            verify(&hosts, &Workload::new(Size::One));
        }
        println!(
            "smoke: nexus {} on 1 host: {:.3} s (debug build, not a measurement)",
            phase.name(),
            s.secs
        );
    }
}

/// `NEXUS_PEERS_HOLD=N`: starts N hosts, writes the inputs into target/bench-peers/hold-nN and
/// keeps the hosts up until a file named `stop` appears there: for profiling by hand.
fn hold(n: usize) {
    let hosts: Vec<SshHost> = (0..n)
        .map(|i| SshHost::builder(&format!("h{i:02}")).private_srv().start())
        .collect();
    let dir = Path::new(MANIFEST).join(format!("target/bench-peers/hold-n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("hold dir");
    write_inputs(&dir, &hosts);
    eprintln!(
        "{n} hosts up; inputs in {}; touch {}/stop to end",
        dir.display(),
        dir.display()
    );
    while !dir.join("stop").exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(hosts);
}

fn nexus_bin() -> PathBuf {
    std::env::var_os("NEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nexus")))
}

/// A private copy of the nexus binary, so that a rebuild of target/release during a long run
/// cannot change what is measured halfway.
fn pinned_nexus(out_dir: &Path) -> PathBuf {
    let src = nexus_bin();
    let dst = out_dir.join("nexus");
    let _ = std::fs::remove_file(&dst);
    std::fs::copy(&src, &dst)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    dst
}

/// Every input file of the three tools, for these hosts, into `dir`.
fn write_inputs(dir: &Path, hosts: &[SshHost]) {
    let refs: Vec<&SshHost> = hosts.iter().collect();
    harness::write_known_hosts(&dir.join("known_hosts"), &refs);
    std::fs::write(dir.join("ssh_config"), "").expect("ssh_config");
    let one = Workload::new(Size::One);
    let files = [
        (
            "nexus-half.kdl",
            workload::nexus_config(&Workload::new(Size::Half), hosts),
        ),
        ("nexus.kdl", workload::nexus_config(&one, hosts)),
        (
            "nexus-2x.kdl",
            workload::nexus_config(&Workload::new(Size::Two), hosts),
        ),
        ("inventory.py", workload::pyinfra_inventory(hosts, dir)),
        ("deploy.py", workload::pyinfra_deploy(&one)),
        ("inventory.ini", workload::ansible_inventory(hosts)),
        ("ansible.cfg", workload::ansible_cfg(dir)),
        ("playbook.yml", workload::ansible_playbook(&one)),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    for sub in ["cp", "ansible-local", "ansible-home", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("work subdirectory");
    }
}

/// Empties every host's /srv/bench and forgets nexus's state: the next run is a cold converge.
fn reset(hosts: &[SshHost], dir: &Path) {
    for h in hosts {
        let bench = h.srv().join("bench");
        if bench.exists() {
            std::fs::remove_dir_all(&bench).expect("remove /srv/bench");
        }
    }
    let _ = std::fs::remove_dir_all(dir.join(".nexus"));
}

/// After a cold converge: every directory, file (content, owner, mode) and command output is in
/// place on every host.
fn verify(hosts: &[SshHost], w: &Workload) {
    let uid = harness::uid_of(TEST_USER).expect("test user");
    for h in hosts {
        let local = |remote: &str| {
            h.srv()
                .join(remote.strip_prefix("/srv/").expect("under /srv"))
        };
        for d in &w.dirs {
            let m = std::fs::metadata(local(d)).unwrap_or_else(|e| panic!("{}: {d}: {e}", h.name));
            assert!(m.is_dir(), "{}: {d} is not a directory", h.name);
            assert_eq!(
                m.mode() & 0o7777,
                workload::DIR_MODE,
                "{}: mode of {d}",
                h.name
            );
            assert_eq!(m.uid(), uid, "{}: owner of {d}", h.name);
        }
        for (p, c) in &w.files {
            let text = std::fs::read_to_string(local(p))
                .unwrap_or_else(|e| panic!("{}: {p}: {e}", h.name));
            assert!(text == *c, "{}: content of {p}", h.name);
            let m = std::fs::metadata(local(p)).expect("metadata");
            assert_eq!(
                m.mode() & 0o7777,
                workload::FILE_MODE,
                "{}: mode of {p}",
                h.name
            );
            assert_eq!(m.uid(), uid, "{}: owner of {p}", h.name);
        }
        for (_, creates) in &w.commands {
            assert!(local(creates).exists(), "{}: {creates} missing", h.name);
        }
    }
}

/// What each tool reports must match the phase: a no-op re-run changes nothing, and a dry run of
/// converged hosts plans nothing. (`output` is stdout, then stderr.)
fn check_outcome(tool: Tool, phase: Phase, output: &str, n: usize) {
    if phase == Phase::Cold {
        return;
    }
    let what = format!("{} {} on {n} hosts", tool.name(), phase.name());
    match tool {
        // The dry phase is `nexus plan --detailed-exitcode`, which exits 2 on changes (an error
        // for `measure`).
        Tool::Nexus => {
            if phase == Phase::Noop {
                assert!(
                    output.contains("Resources: 0 changed, 0 failed"),
                    "{what} was not a no-op:\n{}",
                    tail(output)
                );
            }
        }
        Tool::Pyinfra => {
            // The results table: columns separated by runs of spaces, `-` for zero. A deploy has
            // `Hosts Success Error No Change` (a changed operation counts as a success); a dry
            // run has `Change Conditional Change` per operation.
            let table = pyinfra_table(output)
                .unwrap_or_else(|| panic!("{what}: no results table:\n{}", tail(output)));
            let zero = |v: Option<&String>| v.is_none_or(|v| v == "-" || v == "0");
            for row in &table {
                let ok = match phase {
                    Phase::Noop => zero(row.get("Success")) && zero(row.get("Error")),
                    _ => zero(row.get("Change")),
                };
                assert!(ok, "{what} was not a no-op: {row:?}\n{}", tail(output));
            }
        }
        Tool::Ansible => {
            let recap: Vec<&str> = output.lines().filter(|l| l.contains(" ok=")).collect();
            assert_eq!(recap.len(), n, "{what}: recap lines:\n{}", tail(output));
            for l in recap {
                assert!(
                    l.contains("changed=0")
                        && l.contains("failed=0")
                        && l.contains("unreachable=0"),
                    "{what} was not a no-op: {l}"
                );
            }
        }
    }
}

/// pyinfra's results table (after the line starting with `Operation`), as rows of column → value.
fn pyinfra_table(output: &str) -> Option<Vec<BTreeMap<String, String>>> {
    let split = |l: &str| -> Vec<String> {
        l.trim()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let mut lines = output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Operation "));
    let header = split(lines.next()?);
    let rows = lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| header.iter().cloned().zip(split(l)).collect())
        .collect();
    Some(rows)
}

impl Bench {
    fn command(&self, tool: Tool, phase: Phase, dir: &Path, suffix: &str) -> Command {
        match tool {
            Tool::Nexus => {
                let mut c = Command::new(&self.nexus);
                c.args(["-c", &format!("nexus{suffix}.kdl")]);
                match phase {
                    Phase::Cold | Phase::Noop => c.args(["run", "-j", "100"]),
                    Phase::Dry => c.args(["plan", "-j", "100", "--detailed-exitcode"]),
                };
                c.env_remove("SSH_AUTH_SOCK").env("NO_COLOR", "1");
                c
            }
            Tool::Pyinfra => {
                let venv = self.venv.as_ref().expect("venv");
                let mut c = Command::new(venv.join("bin/pyinfra"));
                match phase {
                    Phase::Cold | Phase::Noop => c.arg("-y"),
                    Phase::Dry => c.arg("--dry"),
                };
                c.args(["inventory.py", "deploy.py"]);
                c.env_remove("SSH_AUTH_SOCK")
                    .env("PYINFRA_PROGRESS", "off")
                    .env("NO_COLOR", "1");
                c
            }
            Tool::Ansible => {
                let venv = self.venv.as_ref().expect("venv");
                let mut c = Command::new(venv.join("bin/ansible-playbook"));
                c.arg("playbook.yml");
                if phase == Phase::Dry {
                    c.arg("--check");
                }
                c.env_remove("SSH_AUTH_SOCK")
                    .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
                    .env("ANSIBLE_HOME", dir.join("ansible-home"))
                    .env("ANSIBLE_NOCOLOR", "1")
                    .env("ANSIBLE_FORCE_COLOR", "0");
                c
            }
        }
    }

    /// Runs one whole process under `/usr/bin/time` (for its peak RSS) and times it. A process
    /// that fails is an error with the end of its output.
    fn measure(
        &self,
        tool: Tool,
        phase: Phase,
        dir: &Path,
        suffix: &str,
        n: usize,
    ) -> Result<Sample, String> {
        let inner = self.command(tool, phase, dir, suffix);
        let tag = format!("{}{suffix}-{}", tool.name(), phase.name());
        let rss_file = dir.join("logs").join(format!("{tag}.rss"));
        let out_file = dir.join("logs").join(format!("{tag}.out"));
        let err_file = dir.join("logs").join(format!("{tag}.err"));
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "%M %U %S", "-o"])
            .arg(&rss_file)
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file).expect("stdout file"))
            .stderr(std::fs::File::create(&err_file).expect("stderr file"));
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let busy = self.wait_quiet();
        let (jiffies_before, _) = cpu_jiffies();
        let children_before = children_cpu();
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start /usr/bin/time (apt-get install time): {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(self.timeout) {
            Ok(s) => s.expect("wait"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "{tag} on {n} hosts did not finish within {:?}",
                    self.timeout
                );
            }
        };
        let secs = start.elapsed().as_secs_f64();
        let cpu = children_cpu() - children_before;
        let machine_cpu = (cpu_jiffies().0.saturating_sub(jiffies_before)) as f64 / clock_ticks();
        let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "{tag} on {n} hosts failed ({status}) in {}:\n{}\n{}",
                dir.display(),
                tail(&stdout),
                tail(&stderr)
            ));
        }
        // The last line of /usr/bin/time's output: "MAXRSS_KIB USER_S SYS_S".
        let usage = std::fs::read_to_string(&rss_file).unwrap_or_default();
        let fields: Vec<f64> = usage
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let rss_kib = match fields[..] {
            [rss, _, _] => rss as u64,
            _ => panic!(
                "unexpected /usr/bin/time output in {}: {usage:?}",
                rss_file.display()
            ),
        };
        Ok(Sample {
            secs,
            rss_kib,
            cpu,
            busy,
            machine_cpu,
            output: format!("{stdout}\n{stderr}"),
        })
    }
}

/// CPU seconds (user and system) of every child waited for so far: the measured process and
/// what it waited for, through `/usr/bin/time`. Linux scales these to the scheduler's nanosecond
/// runtime, so a difference is exact to the microsecond, where `/usr/bin/time` prints
/// hundredths: 10 ms steps that made a per-host figure over 40 extra hosts move by 0.25 ms.
/// `/usr/bin/time`'s own ~1 ms is in it too, the same for every N: it cancels in per-host slopes.
fn children_cpu() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// Clock ticks per second, the unit of /proc/stat (USER_HZ, 100 on Linux for all architectures
/// that matter here; `getconf` says for sure).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (busy, total) jiffies of all CPUs so far, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

impl Bench {
    /// Waits until the CPUs were less than `quiet` % busy over one second (other work on a shared
    /// machine skews timings), for at most `quiet_wait`. Returns the last second's busy %.
    fn wait_quiet(&self) -> f64 {
        let deadline = Instant::now() + self.quiet_wait;
        loop {
            let (b0, t0) = cpu_jiffies();
            std::thread::sleep(Duration::from_secs(1));
            let (b1, t1) = cpu_jiffies();
            let busy = 100.0 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
            if self.quiet <= 0.0 || busy < self.quiet || Instant::now() >= deadline {
                return busy;
            }
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The virtualenv with the peers, made (and the pinned versions installed with pip) on first use.
fn venv() -> PathBuf {
    let v = Path::new(MANIFEST).join("target/bench-venv");
    let marker = v.join(".nexus-peers-pins");
    let pins = PINS.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(pins.as_str()) {
        return v;
    }
    let python = std::env::var("NEXUS_PEERS_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!(
        "creating {} with {python} and pip install {pins}",
        v.display()
    );
    harness::run(Command::new(&python).args(["-m", "venv"]).arg(&v));
    harness::run(
        Command::new(v.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PINS),
    );
    std::fs::write(&marker, &pins).expect("venv marker");
    v
}

/// Versions, commit, date and machine, recorded with the results.
fn meta(b: &Bench) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let first_line = |c: &mut Command| -> String {
        c.output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    m.insert(
        "date".into(),
        first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
    );
    m.insert(
        "nexus_sha256".into(),
        first_line(Command::new("sha256sum").arg(&b.nexus))
            .chars()
            .take(12)
            .collect(),
    );
    m.insert(
        "nexus".into(),
        first_line(Command::new(&b.nexus).arg("--version")),
    );
    let commit = first_line(Command::new("git").current_dir(MANIFEST).args([
        "rev-parse",
        "--short",
        "HEAD",
    ]));
    let dirty = !first_line(Command::new("git").current_dir(MANIFEST).args([
        "status",
        "--porcelain",
        "--",
        "src",
    ]))
    .is_empty();
    m.insert(
        "commit".into(),
        if dirty {
            format!("{commit} (with uncommitted changes in src/)")
        } else {
            commit
        },
    );
    if let Some(v) = &b.venv {
        m.insert(
            "pyinfra".into(),
            first_line(Command::new(v.join("bin/pyinfra")).arg("--version")),
        );
        m.insert(
            "ansible".into(),
            first_line(Command::new(v.join("bin/ansible-playbook")).arg("--version")),
        );
        m.insert(
            "python".into(),
            first_line(Command::new(v.join("bin/python")).arg("--version")),
        );
    }
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    m.insert("cpu".into(), cpu);
    m.insert("kernel".into(), first_line(Command::new("uname").arg("-r")));
    m
}
