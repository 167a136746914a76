//! Tier-2 test hosts: real Debian systems with systemd, dpkg/apt and the shadow tools, booted with
//! `systemd-nspawn -b` from a root filesystem that debootstrap makes once and caches.
//!
//! - [`rootfs`] returns `/var/cache/nexus-tests/rootfs-<key>`, where the key is a blake3 of the
//!   debootstrap arguments and the preparation recipe. It is built in a temporary directory and
//!   renamed into place, under a file lock, so concurrent tests and test binaries build it once.
//! - [`Container::boot`] starts one host over a fresh overlay (writes land in a temporary upper
//!   directory, so every host starts clean), with sshd on its own 127.0.0.x address and port, a
//!   host key generated for it, and the harness's user key authorized for root. It waits until
//!   SSH answers and systemd has finished booting. Dropping it powers the container off.
//!
//! Machine prerequisites (debootstrap, systemd-container, openssh-client) come from
//! `tests/setup.sh`; the tests run as root.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nexus::transport::SshTarget;

use super::{KeyPair, descendants};

/// The Debian release the hosts run.
pub const SUITE: &str = "bookworm";
/// Packages beyond `minbase`: a booting systemd host reachable over SSH, with sudo and the
/// shadow tools (useradd and friends).
pub const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "dbus",
    "sudo",
    "passwd",
];
/// Bump when [`prepare_rootfs`] changes, so cached trees made by the old recipe are not reused.
const RECIPE: &str = "nexus-tier2-rootfs-1";
const DEFAULT_CACHE: &str = "/var/cache/nexus-tests";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Where cached root filesystems live (`NEXUS_TESTS_CACHE` overrides).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NEXUS_TESTS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// Panics with instructions when the machine cannot run tier-2 hosts.
pub fn require_prerequisites() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let hint = "run `bash tests/setup.sh` as root first (it installs debootstrap, systemd-container and openssh)";
        for tool in ["debootstrap", "systemd-nspawn", "ssh", "ssh-keygen"] {
            if which(tool).is_none() {
                return Err(format!("{tool} is missing: {hint}"));
            }
        }
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("tier-2 tests boot containers and must run as root".into());
        }
        Ok(())
    });
    if let Err(msg) = result {
        panic!("tier-2 test prerequisites missing: {msg}");
    }
}

/// The Debian mirror the machine's own apt uses (so the containers reach the same archive),
/// or `NEXUS_TESTS_DEBIAN_MIRROR`, or deb.debian.org.
pub fn mirror() -> String {
    if let Ok(m) = std::env::var("NEXUS_TESTS_DEBIAN_MIRROR")
        && !m.is_empty()
    {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            // One-line format (`deb [opts] URI suite...`) or deb822 (`URIs: URI...`).
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("deb ") {
                let rest = rest.trim_start();
                let rest = match rest.strip_prefix('[') {
                    Some(r) => r.split_once(']').map_or("", |(_, after)| after),
                    None => rest,
                };
                rest.split_whitespace().take(1).collect()
            } else if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else {
                continue;
            };
            if let Some(u) = uris
                .into_iter()
                .find(|u| u.starts_with("http") && u.trim_end_matches('/').ends_with("/debian"))
            {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    DEFAULT_MIRROR.to_string()
}

/// debootstrap's arguments, without the target directory: what the cache key covers.
fn debootstrap_args(mirror: &str) -> Vec<String> {
    vec![
        "--variant=minbase".into(),
        format!("--include={}", INCLUDE.join(",")),
        SUITE.into(),
        // The target directory goes here.
        mirror.into(),
    ]
}

/// The cached root filesystem, built on first use.
pub fn rootfs() -> PathBuf {
    static ROOTFS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    require_prerequisites();
    match ROOTFS.get_or_init(build_rootfs) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot build the tier-2 root filesystem: {e}"),
    }
}

fn build_rootfs() -> Result<PathBuf, String> {
    let mirror = mirror();
    let args = debootstrap_args(&mirror);
    let arch = String::from_utf8_lossy(
        &Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .map_err(|e| format!("dpkg --print-architecture: {e}"))?
            .stdout,
    )
    .trim()
    .to_string();
    let key_text = format!("{RECIPE}\n{arch}\n{}\n", args.join("\n"));
    let key = &blake3::hash(key_text.as_bytes()).to_hex()[..16];
    let cache = cache_dir();
    let final_dir = cache.join(format!("rootfs-{key}"));
    if final_dir.join("etc/os-release").exists() {
        return Ok(final_dir);
    }
    fs::create_dir_all(&cache).map_err(|e| format!("mkdir {}: {e}", cache.display()))?;
    // One builder at a time across processes; the others wait and then find it built.
    let lock_path = cache.join(format!("rootfs-{key}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    if final_dir.join("etc/os-release").exists() {
        return Ok(final_dir);
    }
    // Leftovers of an interrupted build (this key only; the lock is ours).
    let tmp_prefix = format!("rootfs-{key}.tmp-");
    if let Ok(entries) = fs::read_dir(&cache) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&tmp_prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    if final_dir.exists() {
        // A directory without os-release is not a finished tree.
        let _ = fs::remove_dir_all(&final_dir);
    }
    let tmp = cache.join(format!("{tmp_prefix}{}", std::process::id()));
    let log_path = cache.join(format!("rootfs-{key}.log"));
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    eprintln!(
        "tier-2: building {} with debootstrap from {mirror} (once; log in {})",
        final_dir.display(),
        log_path.display()
    );
    let started = Instant::now();
    let mut cmd = Command::new(which("debootstrap").expect("checked"));
    cmd.args(&args[..3]).arg(&tmp).arg(&args[3]);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        return Err(format!(
            "debootstrap {} failed with {status}; last lines of {}:\n{}",
            args.join(" "),
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    prepare_rootfs(&tmp).inspect_err(|_| {
        let _ = fs::remove_dir_all(&tmp);
    })?;
    fs::rename(&tmp, &final_dir).map_err(|e| format!("rename to {}: {e}", final_dir.display()))?;
    eprintln!("tier-2: root filesystem ready in {:.0?}", started.elapsed());
    Ok(final_dir)
}

/// Adjusts a fresh debootstrap tree for test hosts.
fn prepare_rootfs(root: &Path) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // Background apt runs would hold the dpkg lock while a test installs packages.
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).map_err(|e| io("mkdir etc/systemd/system", e))?;
    for unit in [
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "apt-daily.service",
        "apt-daily-upgrade.service",
    ] {
        let link = units.join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(|e| io(unit, e))?;
    }
    // Each host writes its own name; debootstrap copied the build machine's.
    let _ = fs::remove_file(root.join("etc/hostname"));
    // Host keys made at install time would be shared by every host: each gets its own.
    if let Ok(entries) = fs::read_dir(root.join("etc/ssh")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    // Never wait on a slow mirror for long.
    fs::write(
        root.join("etc/apt/apt.conf.d/90nexus-tests"),
        "Acquire::Retries \"3\";\nAcquire::http::Timeout \"30\";\nAPT::Install-Recommends \"false\";\n",
    )
    .map_err(|e| io("apt.conf.d", e))?;
    Ok(())
}

/// One booted test host.
pub struct Container {
    /// Name used in targets (and so in error messages).
    pub name: String,
    /// The nspawn machine name (also the host name inside), unique among running containers.
    pub machine: String,
    /// Loopback address sshd listens on.
    pub ip: Ipv4Addr,
    /// Listening port.
    pub port: u16,
    /// The host key sshd uses (its public half goes into known_hosts).
    pub host_key: KeyPair,
    /// The key authorized for root.
    pub user_key: KeyPair,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Container {
    /// Boots a fresh host named `name` and waits until it is ready.
    pub fn boot(name: &str) -> Container {
        let rootfs = rootfs();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let machine = format!(
            "nx-{}-{}-{}",
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                })
                .take(30)
                .collect::<String>(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("nexus-nspawn-{name}-"))
            .tempdir()
            .expect("temp dir");
        let upper = dir.path().join("upper");
        let ssh_dir = upper.join("etc/ssh");
        fs::create_dir_all(ssh_dir.join("sshd_config.d")).expect("mkdir upper/etc/ssh");
        let root_ssh = upper.join("root/.ssh");
        fs::create_dir_all(&root_ssh).expect("mkdir upper/root/.ssh");
        set_mode(&upper.join("root"), 0o700);
        set_mode(&root_ssh, 0o700);
        let host_key = KeyPair::generate(&ssh_dir.join("nexus_test_host_ed25519_key"), "");
        let user_key = KeyPair::generate(&dir.path().join("id_ed25519"), "");
        let auth = root_ssh.join("authorized_keys");
        fs::write(&auth, format!("{}\n", user_key.public)).expect("authorized_keys");
        set_mode(&auth, 0o600);
        fs::write(upper.join("etc/hostname"), format!("{machine}\n")).expect("hostname");

        let mut c = Container {
            name: name.to_string(),
            machine,
            ip: Ipv4Addr::LOCALHOST,
            port: 0,
            host_key,
            user_key,
            dir,
            child: None,
        };
        c.ip = next_ip();
        c.port = free_port(c.ip);
        let sshd = format!(
            "# Written by the nexus tier-2 test harness.\n\
             ListenAddress {ip}:{port}\n\
             HostKey /etc/ssh/nexus_test_host_ed25519_key\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             MaxSessions 64\n",
            ip = c.ip,
            port = c.port
        );
        fs::write(ssh_dir.join("sshd_config.d/nexus-test.conf"), sshd).expect("sshd drop-in");
        fs::write(
            c.dir.path().join("known_hosts"),
            format!("{}\n", c.known_hosts_line()),
        )
        .expect("known_hosts");
        c.spawn(&rootfs, &upper);
        if let Err(e) = c.wait_ready() {
            let log = c.boot_log();
            c.stop();
            panic!(
                "tier-2 host {} did not come up: {e}\nconsole log:\n{log}",
                c.name
            );
        }
        c
    }

    fn spawn(&mut self, rootfs: &Path, upper: &Path) {
        let d = self.dir.path();
        let log = File::create(d.join("boot.log")).expect("boot.log");
        // A watchdog shell: if the test process dies without dropping us, the container is
        // still powered off instead of outliving the run.
        let nspawn = format!(
            "systemd-nspawn --register=no --keep-unit -q --console=read-only -D {root} --overlay={root}:{upper}:/ -M {machine} -b",
            root = sh_quote(&rootfs.display().to_string()),
            upper = sh_quote(&upper.display().to_string()),
            machine = self.machine,
        );
        let script = format!(
            "{nspawn} & n=$!\n\
             echo $n > {pidfile}\n\
             while kill -0 $n 2>/dev/null && kill -0 {parent} 2>/dev/null; do sleep 1; done\n\
             kill -TERM $n 2>/dev/null\n\
             wait $n",
            pidfile = sh_quote(&d.join("nspawn.pid").display().to_string()),
            parent = std::process::id(),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn systemd-nspawn");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let addr = SocketAddr::from((self.ip, self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("systemd-nspawn exited with {status}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("sshd did not listen on {addr} within 90 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SSH answers; now let systemd finish booting so units are in their settled states.
        let out = self.ssh_output("timeout 90 systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match state.as_str() {
            "running" | "degraded" => Ok(()),
            _ => Err(format!(
                "systemctl is-system-running said {state:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    fn ssh_output(&self, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ))
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-i"])
            .arg(&self.user_key.private)
            .args(["-p", &self.port.to_string()])
            .arg(format!("root@{}", self.ip))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Runs `command` as root on the host through the OpenSSH client; panics unless it succeeds.
    /// For set-up outside what a test exercises (tests use nexus's own transport).
    pub fn exec(&self, command: &str) -> String {
        let out = self.ssh_output(command);
        assert!(
            out.status.success(),
            "{}: {command:?} failed with {}: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `[ip]:port ssh-ed25519 AAAA...`: the known_hosts line for this host.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.ip, self.port, self.host_key.public)
    }

    /// A target for this host as root with the authorized key.
    pub fn target(&self) -> SshTarget {
        SshTarget::new(&self.name)
            .address(self.ip.to_string())
            .port(self.port)
            .user("root")
            .identity(&self.user_key.private)
    }

    /// A scratch directory of this host's own, outside the container.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The console output so far.
    pub fn boot_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("boot.log")).unwrap_or_default()
    }

    /// Powers the container off (SIGTERM makes nspawn shut the system down cleanly) and waits;
    /// kills it if that takes too long.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let nspawn_pid = fs::read_to_string(self.dir.path().join("nspawn.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = nspawn_pid {
            signal("TERM", pid);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // A container that would not stop: kill everything nspawn started, then nspawn.
        if let Some(pid) = nspawn_pid {
            for p in descendants(pid) {
                signal("KILL", p);
            }
            signal("KILL", pid);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a known_hosts file trusting `hosts`.
pub fn write_known_hosts(path: &Path, hosts: &[&Container]) {
    let text: String = hosts
        .iter()
        .map(|h| format!("{}\n", h.known_hosts_line()))
        .collect();
    fs::write(path, text).expect("write known_hosts");
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

// Loopback addresses 127.0.0.10..=127.0.0.249, from an offset of this process's id that differs
// from the tier-1 harness's, so the two rarely pick the same address; ports are free ones anyway.
fn next_ip() -> Ipv4Addr {
    static NEXT: OnceLock<AtomicU8> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU8::new(((std::process::id() + 120) % 240) as u8));
    let n = next.fetch_add(1, Ordering::Relaxed) % 240;
    Ipv4Addr::new(127, 0, 0, 10 + n)
}

fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Publishes versions of small packages in a local apt repository inside the host, so pinning,
/// downgrades and `latest` are exercised deterministically. Each `(name, version)` is built into
/// `/srv/nexus-repo` next to what is there already; with `refresh`, the host's lists are then
/// updated for that repository (only: the Debian archive is not contacted), otherwise the lists
/// stay as they were, as on a host whose repositories moved since its last `apt-get update`
/// (the source is a `copy:` one, so apt keeps copies of the index as for a remote repository,
/// where `file:` would read the repository's own index).
pub fn publish(packages: &[(&str, &str)], refresh: bool) -> String {
    let mut s = String::from("set -e\nR=/srv/nexus-repo\nmkdir -p \"$R\"\n");
    for (name, version) in packages {
        s.push_str(&format!(
            r#"d=$(mktemp -d)
mkdir -p "$d/DEBIAN" "$d/usr/share/{name}"
printf 'Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: nexus tests <tests@example.invalid>\nDescription: nexus tier-2 test package\n' > "$d/DEBIAN/control"
echo '{version}' > "$d/usr/share/{name}/version"
dpkg-deb --root-owner-group -b "$d" "$R/{name}_{version}_all.deb" >/dev/null
rm -rf "$d"
"#
        ));
    }
    s.push_str(
        r#"cd "$R"
: > Packages
for f in *.deb; do
  dpkg-deb -f "$f" >> Packages
  printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" >> Packages
done
chmod -R a+rX "$R"
echo 'deb [trusted=yes] copy:/srv/nexus-repo ./' > /etc/apt/sources.list.d/nexus-test.list
"#,
    );
    if refresh {
        s.push_str("apt-get update -q -o Dir::Etc::sourcelist=sources.list.d/nexus-test.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >/dev/null\n");
    }
    s
}

/// The local repository as the only source: `apt-get update` (which `update-cache` runs) then
/// reads nothing from the network.
pub const LOCAL_SOURCES_ONLY: &str =
    "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources";
