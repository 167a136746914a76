//! Integration-test harness: real sshd servers on 127.0.0.x loopback addresses.
//!
//! Each [`SshHost`] is one `sshd -D` child process with its own address, port, host key,
//! authorized user key and temporary directory, killed (with everything it started) on drop.
//! Machine prerequisites (openssh-server, sudo, the test users) come from `tests/setup.sh`.
//! Include it with `mod harness;` from any integration test.
#![allow(dead_code)]
pub mod ca;
pub mod nspawn;
pub mod phase;
pub mod postgres;
pub mod project;
pub mod records;
pub mod webhook;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nexus::transport::{AgentSource, SshConfigSource, SshOptions, SshTarget};

/// Logs in with the harness keys; may sudo to anyone without a password.
pub const TEST_USER: &str = "nexus-test";
/// Needs its password for sudo, and may only become [`TEST_USER`].
pub const SUDO_PW_USER: &str = "nexus-test-pw";
/// The password of [`SUDO_PW_USER`] (set by tests/setup.sh).
pub const SUDO_PW: &str = "nexus-test-sudo-pw";

const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Panics with instructions when the machine lacks what the tests need.
pub fn require_prerequisites() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let hint = "run `bash tests/setup.sh` as root first (it installs openssh-server and sudo and creates the test users)";
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} is missing: {hint}"));
        }
        if which("ssh-keygen").is_none() {
            return Err(format!("ssh-keygen is missing: {hint}"));
        }
        for user in [TEST_USER, SUDO_PW_USER] {
            if uid_of(user).is_none() {
                return Err(format!("test user {user} does not exist: {hint}"));
            }
        }
        if current_uid() != Some(0) {
            return Err("the SSH tests start sshd and must run as root".into());
        }
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("mkdir /run/sshd: {e}"))?;
        Ok(())
    });
    if let Err(msg) = result {
        panic!("SSH test prerequisites missing: {msg}");
    }
}

/// A key pair made by ssh-keygen.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Private key file.
    pub private: PathBuf,
    /// `<type> <base64>` of the public key.
    pub public: String,
}

impl KeyPair {
    /// Generates an ed25519 key at `path` (with `passphrase`, or none).
    pub fn generate(path: &Path, passphrase: &str) -> KeyPair {
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "nexus-test",
                "-N",
                passphrase,
                "-f",
            ])
            .arg(path));
        let public =
            std::fs::read_to_string(path.with_extension("pub")).expect("read generated public key");
        let mut parts = public.split_whitespace();
        let public = format!(
            "{} {}",
            parts.next().expect("key type"),
            parts.next().expect("key blob")
        );
        KeyPair {
            private: path.to_path_buf(),
            public,
        }
    }

    /// `SHA256:...` as ssh-keygen prints it.
    pub fn fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.private.with_extension("pub")));
        out.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }
}

/// Options for starting a host.
#[derive(Debug, Clone, Default)]
pub struct HostBuilder {
    name: String,
    private_srv: bool,
    host_cert: Option<HostCert>,
    user_ca: Option<PathBuf>,
    no_authorized_keys: bool,
    no_sftp: bool,
    options: Vec<String>,
}

/// How a host's key is certified (sshd's `HostCertificate`).
#[derive(Debug, Clone)]
struct HostCert {
    ca: ca::Ca,
    /// `None`: the host's own address, which is only known once it is chosen.
    principals: Option<Vec<String>>,
    validity: String,
}

impl HostBuilder {
    /// Gives the host its own `/srv` (a private mount namespace bound onto [`SshHost::srv`]),
    /// for tests that need hosts with separate filesystems.
    pub fn private_srv(mut self) -> Self {
        self.private_srv = true;
        self
    }

    /// Presents a host certificate signed by `ca`, naming the host's address as its principal,
    /// valid for `validity` (ssh-keygen's `-V`).
    pub fn host_certificate(mut self, ca: &ca::Ca, validity: &str) -> Self {
        self.host_cert = Some(HostCert {
            ca: ca.clone(),
            principals: None,
            validity: validity.to_string(),
        });
        self
    }

    /// Like [`HostBuilder::host_certificate`], naming `principals` instead of the address.
    pub fn host_certificate_for(
        mut self,
        ca: &ca::Ca,
        principals: &[&str],
        validity: &str,
    ) -> Self {
        self.host_cert = Some(HostCert {
            ca: ca.clone(),
            principals: Some(principals.iter().map(|p| p.to_string()).collect()),
            validity: validity.to_string(),
        });
        self
    }

    /// Accepts user certificates signed by `ca` (sshd's `TrustedUserCAKeys`).
    pub fn trusted_user_ca(mut self, ca: &ca::Ca) -> Self {
        self.user_ca = Some(ca.public_file());
        self
    }

    /// Leaves authorized_keys empty: only a certificate can log in.
    pub fn without_authorized_keys(mut self) -> Self {
        self.no_authorized_keys = true;
        self
    }

    /// Leaves out sshd's `Subsystem sftp` line: the host refuses SFTP, as some hardened hosts do.
    pub fn without_sftp(mut self) -> Self {
        self.no_sftp = true;
        self
    }

    /// Adds an sshd_config line (`Ciphers chacha20-poly1305@openssh.com`), ahead of the
    /// harness's own: sshd takes the first value of a keyword, so it can override them
    /// (`LogLevel DEBUG1`).
    pub fn sshd_option(mut self, line: &str) -> Self {
        self.options.push(line.to_string());
        self
    }

    /// Starts sshd and waits until it accepts connections.
    pub fn start(self) -> SshHost {
        SshHost::launch(self)
    }
}

/// One test host: an sshd on its own loopback address.
pub struct SshHost {
    /// Name used in targets (and so in error messages).
    pub name: String,
    /// Loopback address.
    pub ip: Ipv4Addr,
    /// Listening port.
    pub port: u16,
    /// The host's key pair (its public key goes into known_hosts).
    pub host_key: KeyPair,
    /// The user key authorized for both test users.
    pub user_key: KeyPair,
    dir: tempfile::TempDir,
    child: Option<Child>,
    private_srv: bool,
    host_cert: Option<HostCert>,
    user_ca: Option<PathBuf>,
    no_sftp: bool,
    options: Vec<String>,
}

impl SshHost {
    /// Starts a host named `name` with default settings.
    pub fn start(name: &str) -> SshHost {
        SshHost::builder(name).start()
    }

    /// Builder for a host named `name`.
    pub fn builder(name: &str) -> HostBuilder {
        HostBuilder {
            name: name.to_string(),
            ..HostBuilder::default()
        }
    }

    fn launch(b: HostBuilder) -> SshHost {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix(&format!("nexus-sshd-{}-", b.name))
            .tempdir()
            .expect("temp dir");
        // The test users read authorized_keys themselves (sshd drops privileges for that).
        set_mode(dir.path(), 0o755);
        let host_key = KeyPair::generate(&dir.path().join("ssh_host_ed25519_key"), "");
        let user_key = KeyPair::generate(&dir.path().join("id_ed25519"), "");
        let auth = dir.path().join("authorized_keys");
        let authorized = if b.no_authorized_keys {
            String::new()
        } else {
            format!("{}\n", user_key.public)
        };
        std::fs::write(&auth, authorized).expect("authorized_keys");
        set_mode(&auth, 0o644);
        if b.private_srv {
            let srv = dir.path().join("srv");
            std::fs::create_dir(&srv).expect("srv dir");
            run(Command::new("chown")
                .arg(format!("{TEST_USER}:{TEST_USER}"))
                .arg(&srv));
        }

        let mut host = SshHost {
            name: b.name.clone(),
            ip: Ipv4Addr::LOCALHOST,
            port: 0,
            host_key,
            user_key,
            dir,
            child: None,
            private_srv: b.private_srv,
            host_cert: b.host_cert.clone(),
            user_ca: b.user_ca.clone(),
            no_sftp: b.no_sftp,
            options: b.options.clone(),
        };
        // A port found free may be taken again before sshd binds it: retry elsewhere.
        let mut last_log = String::new();
        for _attempt in 0..5 {
            host.ip = next_ip();
            host.port = free_port(host.ip);
            host.certify_host_key();
            host.write_sshd_config();
            host.spawn();
            match host.wait_ready() {
                Ok(()) => return host,
                Err(log) => {
                    last_log = log;
                    host.kill();
                }
            }
        }
        panic!("sshd for {} did not start; its log:\n{last_log}", b.name);
    }

    fn certify_host_key(&self) {
        let Some(hc) = &self.host_cert else {
            return;
        };
        let ip = self.ip.to_string();
        let principals: Vec<&str> = match &hc.principals {
            Some(p) => p.iter().map(String::as_str).collect(),
            None => vec![ip.as_str()],
        };
        hc.ca.sign_host(
            &self.host_key.private.with_extension("pub"),
            &principals,
            &hc.validity,
        );
    }

    fn write_sshd_config(&self) {
        let d = self.dir.path();
        let mut extra = String::new();
        if self.host_cert.is_some() {
            extra.push_str(&format!(
                "HostCertificate {}/ssh_host_ed25519_key-cert.pub\n",
                d.display()
            ));
        }
        if let Some(ca) = &self.user_ca {
            extra.push_str(&format!("TrustedUserCAKeys {}\n", ca.display()));
        }
        if !self.no_sftp {
            extra.push_str(&format!("Subsystem sftp {SFTP_SERVER}\n"));
        }
        let options: String = self.options.iter().map(|o| format!("{o}\n")).collect();
        let config = format!(
            "{options}ListenAddress {ip}:{port}\n\
             HostKey {d}/ssh_host_ed25519_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             MaxSessions 64\n\
             PermitRootLogin no\n\
             AllowUsers {TEST_USER} {SUDO_PW_USER}\n\
             LogLevel VERBOSE\n\
             {extra}",
            ip = self.ip,
            port = self.port,
            d = d.display(),
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd.log");
        let sshd_cmd = format!("exec {SSHD} -D -e -f {}/sshd_config", d.display());
        let mut cmd = if self.private_srv {
            // A private mount namespace: this host's /srv is its own directory.
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {}/srv /srv && {sshd_cmd}",
                    d.display()
                ));
            c
        } else {
            let mut c = Command::new("sh");
            c.arg("-c").arg(&sshd_cmd);
            c
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((self.ip, self.port));
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("sshd exited with {status}\n{}", self.log()));
            }
            // Our own sshd must say it bound the address: a connect alone could reach another
            // process's server that took the same address and port (parallel test binaries).
            if self.log().contains("Server listening on")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("sshd did not listen within 10 s\n{}", self.log()))
    }

    /// `[ip]:port ssh-ed25519 AAAA...`: the known_hosts line for this host.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.ip, self.port, self.host_key.public)
    }

    /// A known_hosts line recording some other key for this host (a "changed" key).
    pub fn wrong_known_hosts_line(&self) -> String {
        let other = KeyPair::generate(&self.dir.path().join("other_host_key"), "");
        format!("[{}]:{} {}", self.ip, self.port, other.public)
    }

    /// A target for this host as [`TEST_USER`] with the authorized key.
    pub fn target(&self) -> SshTarget {
        SshTarget::new(&self.name)
            .address(self.ip.to_string())
            .port(self.port)
            .user(TEST_USER)
            .identity(&self.user_key.private)
    }

    /// Authorizes another public key (`<type> <base64>`) for the test users.
    pub fn authorize(&self, public: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(f, "{public}").expect("append authorized key");
    }

    /// This host's private directory: what the host sees as `/srv` (with `private_srv`).
    pub fn srv(&self) -> PathBuf {
        assert!(
            self.private_srv,
            "host {} was started without private_srv",
            self.name
        );
        self.dir.path().join("srv")
    }

    /// A scratch directory of this host's own (keys, configs a test writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The listening sshd's pid, while it runs. The `sh -c` and `unshare` wrappers exec into sshd,
    /// so this is the process every connection is forked from: a tracer attached to it sees all
    /// the host runs (tests/bench/host_programs.rs).
    pub fn sshd_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills sshd and every process it started (sessions, commands), like a crashed host.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Per-connection sshd processes call setsid(), so a process group kill would miss
        // them: walk the process tree instead, collecting it before anything is reparented.
        let mut pids = descendants(child.id());
        pids.push(child.id());
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts sshd again after [`SshHost::kill`], with the same address, port, keys and /srv:
    /// the host "comes back".
    pub fn restart(mut self) -> SshHost {
        self.spawn();
        if let Err(log) = self.wait_ready() {
            panic!("sshd for {} did not restart:\n{log}", self.name);
        }
        self
    }

    /// True while sshd runs.
    /// How many processes named `comm` run below this host's sshd now: commands in flight,
    /// counted from the server's side.
    pub fn running(&self, comm: &str) -> usize {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        descendants(child.id())
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .count()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a known_hosts file trusting `hosts`.
pub fn write_known_hosts(path: &Path, hosts: &[&SshHost]) {
    let text: String = hosts
        .iter()
        .map(|h| format!("{}\n", h.known_hosts_line()))
        .collect();
    std::fs::write(path, text).expect("write known_hosts");
}

/// Prepares a nexus project in `dir` for `hosts`: a known_hosts file trusting them and an empty
/// ssh config; returns the start of its configuration, a `defaults` node naming both (with
/// `extra_defaults` appended) and one `host` node per host, logging in as [`TEST_USER`].
pub fn project_config(dir: &Path, hosts: &[&SshHost], extra_defaults: &str) -> String {
    let logins: Vec<(&SshHost, &str)> = hosts.iter().map(|h| (*h, TEST_USER)).collect();
    project_config_logins(dir, &logins, hosts, extra_defaults)
}

/// Like [`project_config`], with each host's login user given, and known_hosts trusting only
/// `trusted`.
pub fn project_config_logins(
    dir: &Path,
    logins: &[(&SshHost, &str)],
    trusted: &[&SshHost],
    extra_defaults: &str,
) -> String {
    write_known_hosts(&dir.join("known_hosts"), trusted);
    std::fs::write(dir.join("ssh_config"), "").expect("write ssh_config");
    let mut text =
        format!("defaults known-hosts=\"known_hosts\" ssh-config=\"ssh_config\"{extra_defaults}\n");
    for (h, user) in logins {
        text.push_str(&format!(
            "host \"{}\" \"{user}@{}:{}\" identity=\"{}\"\n",
            h.name,
            h.ip,
            h.port,
            h.user_key.private.display()
        ));
    }
    text
}

/// SSH options isolated from the machine: no ~/.ssh/config, no agent, no default keys,
/// and `known_hosts` as the only known_hosts file.
pub fn isolated_options(known_hosts: &Path) -> SshOptions {
    SshOptions {
        ssh_config: SshConfigSource::Disabled,
        agent: AgentSource::Disabled,
        default_identities: false,
        known_hosts_files: vec![known_hosts.to_path_buf()],
        global_known_hosts_files: vec![],
        connect_timeout: Some(Duration::from_secs(10)),
        ..SshOptions::default()
    }
}

/// An ssh-agent of the test's own, on a private socket.
pub struct Agent {
    /// The agent's socket.
    pub socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `ssh-agent -D` and waits for its socket.
    pub fn start() -> Agent {
        require_prerequisites();
        let dir = tempfile::tempdir().expect("agent dir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            socket,
            child,
            _dir: dir,
        }
    }

    /// Loads a private key into the agent.
    pub fn add(&self, key: &Path) {
        run(Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &self.socket)
            .arg("-q")
            .arg(key));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The uid of `user`, from the user database.
pub fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn current_uid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// Loopback addresses 127.0.0.10..=127.0.0.249, handed out in turn. The process id offsets the
// start so that test binaries running at the same time rarely share an address.
pub fn next_ip() -> Ipv4Addr {
    static NEXT: OnceLock<AtomicU8> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU8::new((std::process::id() % 240) as u8));
    let n = next.fetch_add(1, Ordering::Relaxed) % 240;
    Ipv4Addr::new(127, 0, 0, 10 + n)
}

pub fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// All processes below `root` in the process tree (from /proc).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == p && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Every way a secret can be found in an artifact: the value, its base64 at each of the three
/// alignments it can have inside a longer base64 text, and its hex.
pub fn leak_needles(values: &[&str]) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for v in values {
        let v = v.as_bytes();
        out.push(String::from_utf8_lossy(v).into_owned());
        out.push(v.iter().map(|b| format!("{b:02x}")).collect());
        for k in 0..3 {
            let whole = (v.len() - k) / 3 * 3;
            out.push(b64.encode(&v[k..k + whole]));
        }
    }
    out
}

/// Panics naming the first file under `dir` (the vault aside) that holds any of `needles`
/// (from [`leak_needles`]): a secret must be in no artifact a project leaves behind.
pub fn assert_no_file_holds(dir: &Path, needles: &[impl AsRef<str>]) {
    let mut files = Vec::new();
    all_files_under(dir, &mut files);
    for f in files.iter().filter(|f| !f.ends_with("secrets.vault")) {
        let bytes = std::fs::read(f).unwrap();
        for needle in needles.iter().map(AsRef::as_ref) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                f.display()
            );
        }
    }
}

/// Samples the command line of every process on this machine (the sshd hosts run here) until
/// dropped: a secret must never be an argument of a process on a host.
pub struct CmdlineSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl CmdlineSampler {
    pub fn start() -> CmdlineSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let (s, out) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        out.lock()
                            .unwrap()
                            .insert(String::from_utf8_lossy(&c).replace('\0', " "));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        CmdlineSampler { stop, seen }
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for CmdlineSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every file under `dir`, recursively (for searches of everything a project left behind).
pub fn all_files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}
