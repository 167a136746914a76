//! Which host to reach and how: the nexus-side description of an SSH host, the invocation-wide
//! options (flags), and their merge with ~/.ssh/config into final connection settings.
//!
//! Precedence: command-line flags, then the nexus config, then ssh_config, then defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::TransportError;
pub use super::ssh_config::HostKeyPolicy;
use super::ssh_config::{SshConfigFile, SshConfigSource};

/// Connect timeout when neither flags, config nor ssh_config set one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Channels per connection when not configured: below OpenSSH's default `MaxSessions 10`.
pub const DEFAULT_MAX_CHANNELS: usize = 8;
/// Keepalive interval when not configured.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
// Bounds ProxyJump chains, which ssh_config can make circular.
const MAX_JUMP_DEPTH: usize = 8;

/// Where ssh-agent is found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AgentSource {
    /// The socket named by `SSH_AUTH_SOCK`, when set.
    #[default]
    Env,
    /// This socket.
    Socket(PathBuf),
    /// Do not use an agent.
    Disabled,
}

/// Settings for every SSH connection of one nexus invocation (mostly from command-line flags).
#[derive(Clone)]
pub struct SshOptions {
    /// OpenSSH client configuration to honour.
    pub ssh_config: SshConfigSource,
    /// `-u`: log in as this user on every host, overriding config and ssh_config.
    pub user: Option<String>,
    /// `-i`: identity files tried first, on every host.
    pub identity_files: Vec<PathBuf>,
    /// Passphrase for encrypted identity files.
    pub key_passphrase: Option<String>,
    /// ssh-agent to use.
    pub agent: AgentSource,
    /// Try `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` when no identity file is configured.
    pub default_identities: bool,
    /// `--accept-new-host-keys` sets `Some(AcceptNew)`; `None` defers to config, ssh_config,
    /// then strict.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// known_hosts files to use instead of ssh_config's `UserKnownHostsFile` or
    /// `~/.ssh/known_hosts`. New keys are recorded in the first.
    pub known_hosts_files: Vec<PathBuf>,
    /// Read-only system known_hosts files.
    pub global_known_hosts_files: Vec<PathBuf>,
    /// Connect timeout from a flag: overrides config and ssh_config.
    pub connect_timeout: Option<Duration>,
    /// Keepalive interval (ssh_config's `ServerAliveInterval` wins); `None` disables.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is declared dead.
    pub keepalive_max: usize,
    /// Concurrent channels per connection.
    pub max_channels: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            ssh_config: SshConfigSource::Default,
            user: None,
            identity_files: Vec::new(),
            key_passphrase: None,
            agent: AgentSource::Env,
            default_identities: true,
            host_key_policy: None,
            known_hosts_files: Vec::new(),
            global_known_hosts_files: vec![
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts2"),
            ],
            connect_timeout: None,
            keepalive_interval: Some(DEFAULT_KEEPALIVE),
            keepalive_max: 3,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

impl fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshOptions")
            .field("ssh_config", &self.ssh_config)
            .field("user", &self.user)
            .field("identity_files", &self.identity_files)
            .field(
                "key_passphrase",
                &self.key_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("agent", &self.agent)
            .field("default_identities", &self.default_identities)
            .field("host_key_policy", &self.host_key_policy)
            .field("known_hosts_files", &self.known_hosts_files)
            .field("global_known_hosts_files", &self.global_known_hosts_files)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_max", &self.keepalive_max)
            .field("max_channels", &self.max_channels)
            .finish()
    }
}

/// One host as the nexus config describes it; unset fields fall back to ssh_config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshTarget {
    /// The host's name in the config; also the ssh_config `Host` lookup key without `address`.
    pub name: String,
    /// Address to connect to. When set, it is the ssh_config lookup key (as with
    /// `ansible_host`), and ssh_config's `HostName` may still rewrite it.
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Login user.
    pub user: Option<String>,
    /// Identity files for this host.
    pub identity_files: Vec<PathBuf>,
    /// Jump host; replaces ssh_config's `ProxyJump` for this host.
    pub jump: Option<Box<SshTarget>>,
    /// Host key policy for this host (the `--accept-new-host-keys` flag still wins).
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Connect timeout for this host.
    pub connect_timeout: Option<Duration>,
}

impl SshTarget {
    /// A target known only by name.
    pub fn new(name: impl Into<String>) -> Self {
        SshTarget {
            name: name.into(),
            ..SshTarget::default()
        }
    }

    /// Sets the address.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sets the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the login user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds an identity file.
    pub fn identity(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_files.push(path.into());
        self
    }

    /// Sets the jump host.
    pub fn jump(mut self, jump: SshTarget) -> Self {
        self.jump = Some(Box::new(jump));
        self
    }
}

/// Final connection settings for one host, after flags, config and ssh_config are merged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedTarget {
    /// Name from the config (or the jump spec).
    pub name: String,
    /// Address connected to and looked up in known_hosts.
    pub host_name: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Identity files, in the order tried.
    pub identity_files: Vec<PathBuf>,
    /// Certificates named by ssh_config's `CertificateFile`, offered with the identity or agent
    /// key they certify (a `NAME-cert.pub` beside an identity is found without this).
    pub certificate_files: Vec<PathBuf>,
    /// Jump host, connected first.
    pub jump: Option<Box<ResolvedTarget>>,
    /// Policy for unknown host keys.
    pub host_key_policy: HostKeyPolicy,
    /// User known_hosts files; new keys go to the first.
    pub known_hosts_files: Vec<PathBuf>,
    /// System known_hosts files (read only).
    pub global_known_hosts_files: Vec<PathBuf>,
    /// Connect timeout (TCP, key exchange and authentication).
    pub connect_timeout: Duration,
    /// Keepalive interval.
    pub keepalive_interval: Option<Duration>,
    /// ssh_config's `Ciphers` for this host, applied to nexus's order
    /// ([`super::ciphers::default_order`]); `None`: that order.
    pub ciphers: Option<Vec<String>>,
}

impl ResolvedTarget {
    /// `name (user@host:port)`: how messages name this host.
    pub fn label(&self) -> String {
        format!(
            "{} ({}@{}:{})",
            self.name, self.user, self.host_name, self.port
        )
    }
}

/// Merges `target`, `opts` and ssh_config into final settings.
pub fn resolve(
    target: &SshTarget,
    opts: &SshOptions,
    cfg: &SshConfigFile,
) -> Result<ResolvedTarget, TransportError> {
    resolve_at(target, opts, cfg, 0)
}

fn resolve_at(
    target: &SshTarget,
    opts: &SshOptions,
    cfg: &SshConfigFile,
    depth: usize,
) -> Result<ResolvedTarget, TransportError> {
    let config_err = |reason: String| TransportError::Config {
        host: target.name.clone(),
        reason,
    };
    if depth > MAX_JUMP_DEPTH {
        return Err(config_err(format!(
            "jump host chain deeper than {MAX_JUMP_DEPTH} hops (a ProxyJump loop?)"
        )));
    }
    let lookup = target.address.as_deref().unwrap_or(&target.name);
    let hc = cfg.query(lookup);
    let home = crate::local_user::home_dir();

    let host_name = hc.host_name.clone().unwrap_or_else(|| lookup.to_string());
    let port = target.port.or(hc.port).unwrap_or(22);
    // `-u` is about the hosts being managed, not the bastions in front of them.
    let flag_user = if depth == 0 { opts.user.clone() } else { None };
    let user = flag_user
        .or_else(|| target.user.clone())
        .or_else(|| hc.user.clone())
        .or_else(crate::local_user::name)
        .ok_or_else(|| config_err("no user configured and the current user is unknown".into()))?;

    let mut identity_files: Vec<PathBuf> = Vec::new();
    for p in opts
        .identity_files
        .iter()
        .chain(&target.identity_files)
        .chain(&hc.identity_files)
    {
        let p = crate::local_user::expand_tilde(&p.to_string_lossy(), home.as_deref());
        if !identity_files.contains(&p) {
            identity_files.push(p);
        }
    }
    if identity_files.is_empty()
        && opts.default_identities
        && let Some(home) = &home
    {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = home.join(".ssh").join(name);
            if p.exists() {
                identity_files.push(p);
            }
        }
    }

    let certificate_files = hc
        .certificate_files
        .iter()
        .map(|p| crate::local_user::expand_tilde(&p.to_string_lossy(), home.as_deref()))
        .collect();

    let host_key_policy = opts
        .host_key_policy
        .or(target.host_key_policy)
        .or(hc.strict_host_key_checking)
        .unwrap_or_default();
    let known_hosts_files = if !opts.known_hosts_files.is_empty() {
        opts.known_hosts_files.clone()
    } else if let Some(files) = hc.user_known_hosts_files.clone().filter(|f| !f.is_empty()) {
        files
    } else {
        let ssh_dir = home.unwrap_or_else(|| PathBuf::from("/")).join(".ssh");
        vec![ssh_dir.join("known_hosts"), ssh_dir.join("known_hosts2")]
    };
    let connect_timeout = opts
        .connect_timeout
        .or(target.connect_timeout)
        .or(hc.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let keepalive_interval = match hc.server_alive_interval {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => opts.keepalive_interval,
    };

    let jump = match (&target.jump, &hc.proxy_jump) {
        (Some(j), _) => Some(Box::new(resolve_at(j, opts, cfg, depth + 1)?)),
        (None, Some(hops)) if !hops.is_empty() => {
            let chain = jump_chain(hops).map_err(|e| config_err(e.to_string()))?;
            Some(Box::new(resolve_at(&chain, opts, cfg, depth + 1)?))
        }
        _ => None,
    };

    Ok(ResolvedTarget {
        name: target.name.clone(),
        host_name,
        port,
        user,
        identity_files,
        certificate_files,
        jump,
        host_key_policy,
        known_hosts_files,
        global_known_hosts_files: opts.global_known_hosts_files.clone(),
        connect_timeout,
        keepalive_interval,
        ciphers: hc.ciphers,
    })
}

/// Why a jump host (`ProxyJump`, `-J`) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JumpError {
    #[error("invalid jump host {spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
    #[error("empty ProxyJump")]
    Empty,
}

/// `ProxyJump a,b` reaches the target through b, itself reached through a. Only the first hop
/// may use its own ssh_config ProxyJump, as with OpenSSH's `-J`.
fn jump_chain(hops: &[String]) -> Result<SshTarget, JumpError> {
    let mut chain: Option<SshTarget> = None;
    for hop in hops {
        let mut t = parse_jump_spec(hop)?;
        t.jump = chain.take().map(Box::new);
        chain = Some(t);
    }
    chain.ok_or(JumpError::Empty)
}

/// Parses `[user@]host[:port]` or `ssh://[user@]host[:port]`, with the rules of a host's address
/// in the configuration (one parser, so a jump host from ssh_config is held to the same checks:
/// POSIX user names, no shell or URL metacharacters in the host).
pub fn parse_jump_spec(spec: &str) -> Result<SshTarget, JumpError> {
    let s = spec.strip_prefix("ssh://").unwrap_or(spec);
    let a = crate::syntax::values::parse_address(s).map_err(|e| JumpError::Invalid {
        spec: spec.to_string(),
        reason: e.message,
    })?;
    Ok(SshTarget {
        name: a.host,
        port: a.port,
        user: a.user,
        ..SshTarget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts() -> SshOptions {
        SshOptions {
            ssh_config: SshConfigSource::Disabled,
            default_identities: false,
            ..SshOptions::default()
        }
    }

    #[test]
    fn jump_specs() {
        let t = parse_jump_spec("admin@bastion:2200").unwrap();
        assert_eq!(
            (t.name.as_str(), t.user.as_deref(), t.port),
            ("bastion", Some("admin"), Some(2200))
        );
        let t = parse_jump_spec("ssh://[::1]:22").unwrap();
        assert_eq!((t.name.as_str(), t.port), ("::1", Some(22)));
        assert_eq!(parse_jump_spec("b").unwrap().port, None);
        assert_eq!(
            parse_jump_spec("@x").unwrap_err().to_string(),
            "invalid jump host \"@x\": empty user in address \"@x\""
        );
        assert!(
            parse_jump_spec("x:notaport")
                .unwrap_err()
                .to_string()
                .starts_with("invalid jump host \"x:notaport\": ")
        );
        // The same checks as a configured address: no shell words in users or hosts.
        for hostile in [
            "$(touch x)@bastion",
            "u@[::1;id]:22",
            "bastion;id",
            "-oProxyCommand=x",
        ] {
            assert!(
                matches!(parse_jump_spec(hostile), Err(JumpError::Invalid { .. })),
                "{hostile} was accepted"
            );
        }
        assert_eq!(jump_chain(&[]).unwrap_err(), JumpError::Empty);
        let chain = jump_chain(&["a".into(), "b".into()]).unwrap();
        assert_eq!(chain.name, "b");
        assert_eq!(chain.jump.unwrap().name, "a");
    }

    #[test]
    fn flags_beat_config_beat_ssh_config() {
        let home = Path::new("/home/u");
        let cfg = SshConfigFile::parse_str(
            "Host web1\n  HostName 10.1.1.1\n  User cfguser\n  Port 2222\n  ProxyJump jumper@bastion:2201\n  StrictHostKeyChecking accept-new\n  IdentityFile /k/cfg\nHost bastion\n  HostName 10.9.9.9\n",
            home,
        )
        .unwrap();
        let target = SshTarget::new("web1").user("confuser").identity("/k/host");
        let mut o = opts();
        let r = resolve(&target, &o, &cfg).unwrap();
        assert_eq!(r.host_name, "10.1.1.1");
        assert_eq!(r.port, 2222);
        assert_eq!(r.user, "confuser");
        assert_eq!(
            r.identity_files,
            vec![PathBuf::from("/k/host"), PathBuf::from("/k/cfg")]
        );
        assert_eq!(r.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let jump = r.jump.as_ref().unwrap();
        assert_eq!(
            (jump.host_name.as_str(), jump.port, jump.user.as_str()),
            ("10.9.9.9", 2201, "jumper")
        );
        assert_eq!(r.label(), "web1 (confuser@10.1.1.1:2222)");

        o.user = Some("flaguser".into());
        o.identity_files = vec![PathBuf::from("/k/flag")];
        o.connect_timeout = Some(Duration::from_secs(3));
        let r = resolve(&target, &o, &cfg).unwrap();
        assert_eq!(r.user, "flaguser");
        assert_eq!(r.identity_files[0], PathBuf::from("/k/flag"));
        assert_eq!(r.connect_timeout, Duration::from_secs(3));
        // -u does not change who logs in to the bastion.
        assert_eq!(r.jump.as_ref().unwrap().user, "jumper");

        let explicit = SshTarget::new("web1").address("192.0.2.7").port(22);
        let r = resolve(&explicit, &o, &cfg).unwrap();
        assert_eq!((r.host_name.as_str(), r.port), ("192.0.2.7", 22));
        assert!(r.jump.is_none());
        assert_eq!(r.host_key_policy, HostKeyPolicy::Strict);
    }

    #[test]
    fn proxy_jump_loops_are_reported() {
        let cfg = SshConfigFile::parse_str(
            "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n",
            Path::new("/home/u"),
        )
        .unwrap();
        let err = resolve(&SshTarget::new("a").user("x"), &opts(), &cfg).unwrap_err();
        assert!(err.to_string().contains("ProxyJump loop"), "{err}");
    }
}
