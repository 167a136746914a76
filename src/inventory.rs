//! Configured hosts plus command-line overrides, turned into ready transports: `local` runs through
//! tokio::process, every other host through the shared SSH pool (one connection per host).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, HostKeyChecking, LOCAL_HOST, Value};
use crate::transport::ssh_config::SshConfigSource;
use crate::transport::target::parse_jump_spec;
use crate::transport::{
    Become, HostKeyPolicy, LocalTransport, SshOptions, SshPool, SshTarget, Transport,
    TransportError,
};

/// Connection settings given on the command line; they win over the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-i`: identities tried first on every host.
    pub identity: Vec<PathBuf>,
    /// `-u`: login user for every host.
    pub user: Option<String>,
    /// `--accept-new-host-keys`: record unknown host keys (changed keys are still refused).
    pub accept_new_host_keys: bool,
    /// `--connect-timeout`.
    pub connect_timeout: Option<Duration>,
}

/// Why a host's privilege escalation settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BecomeError {
    #[error("{host}: sudo-password reads environment variable {var}, which is not set")]
    EnvUnset { host: String, var: String },
    #[error("{host}: sudo-password comes from secret {name:?}, which was not read from the vault")]
    SecretUnavailable { host: String, name: String },
}

pub struct Inventory {
    /// Secret values for sudo passwords that come from the vault (resolved by the caller).
    secrets: std::sync::Arc<crate::secrets::Resolved>,
    pool: SshPool,
    targets: HashMap<String, SshTarget>,
    become_: HashMap<String, BecomeSpec>,
    local: Arc<LocalTransport>,
}

#[derive(Debug, Clone)]
struct BecomeSpec {
    enabled: bool,
    user: String,
    password: Option<Value>,
}

impl Inventory {
    pub fn new(cfg: &Config, ov: &Overrides) -> Result<Inventory, TransportError> {
        let d = &cfg.defaults;
        let mut opts = SshOptions {
            user: ov.user.clone(),
            identity_files: ov.identity.clone(),
            connect_timeout: ov.connect_timeout.or(d.connect_timeout),
            ..SshOptions::default()
        };
        if ov.accept_new_host_keys {
            opts.host_key_policy = Some(HostKeyPolicy::AcceptNew);
        } else if let Some(h) = d.host_key_checking {
            opts.host_key_policy = Some(match h {
                HostKeyChecking::Strict => HostKeyPolicy::Strict,
                HostKeyChecking::AcceptNew => HostKeyPolicy::AcceptNew,
            });
        }
        if let Some(k) = &d.known_hosts {
            opts.known_hosts_files = vec![k.clone()];
        }
        if let Some(c) = &d.ssh_config {
            opts.ssh_config = SshConfigSource::File(c.clone());
        }
        if let Some(k) = d.keepalive {
            opts.keepalive_interval = Some(k);
        }
        if let Some(m) = d.max_channels {
            opts.max_channels = m as usize;
        }
        let pool = SshPool::new(opts)?;
        let mut targets = HashMap::new();
        let mut become_ = HashMap::new();
        for h in &cfg.hosts {
            targets.insert(h.name.value.clone(), ssh_target(cfg, &h.name.value, 0));
            become_.insert(
                h.name.value.clone(),
                BecomeSpec {
                    enabled: h.become_.or(d.become_).unwrap_or(false),
                    user: h
                        .become_user
                        .clone()
                        .or(d.become_user.clone())
                        .unwrap_or_else(|| "root".into()),
                    password: h.sudo_password.clone().or(d.sudo_password.clone()),
                },
            );
        }
        become_.insert(
            LOCAL_HOST.to_string(),
            BecomeSpec {
                enabled: d.become_.unwrap_or(false),
                user: d.become_user.clone().unwrap_or_else(|| "root".into()),
                password: d.sudo_password.clone(),
            },
        );
        Ok(Inventory {
            secrets: Default::default(),
            pool,
            targets,
            become_,
            local: Arc::new(LocalTransport::new(LOCAL_HOST)),
        })
    }

    /// The inventory of a saved plan: hosts as the plan records them, so apply needs no config.
    /// Relative paths in the plan resolve against `base_dir` (the plan's config directory).
    pub fn for_plan(
        plan: &crate::plan::Plan,
        base_dir: &std::path::Path,
        ov: &Overrides,
    ) -> Result<Inventory, TransportError> {
        let s = &plan.ssh;
        let mut opts = SshOptions {
            user: ov.user.clone(),
            identity_files: ov.identity.clone(),
            connect_timeout: ov.connect_timeout.or(s.connect_timeout),
            ..SshOptions::default()
        };
        if ov.accept_new_host_keys || s.host_key_checking.as_deref() == Some("accept-new") {
            opts.host_key_policy = Some(HostKeyPolicy::AcceptNew);
        } else if s.host_key_checking.is_some() {
            opts.host_key_policy = Some(HostKeyPolicy::Strict);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let resolve = |p: &str| {
            let e = crate::transport::ssh_config::expand_tilde(p, home.as_deref());
            if e.is_absolute() { e } else { base_dir.join(e) }
        };
        if let Some(k) = &s.known_hosts {
            opts.known_hosts_files = vec![resolve(k)];
        }
        if let Some(c) = &s.ssh_config {
            opts.ssh_config = SshConfigSource::File(resolve(c));
        }
        if let Some(k) = s.keepalive {
            opts.keepalive_interval = Some(k);
        }
        if let Some(m) = s.max_channels {
            opts.max_channels = m as usize;
        }
        let pool = SshPool::new(opts)?;
        let mut targets = HashMap::new();
        let mut become_ = HashMap::new();
        fn target(
            name: &str,
            c: &crate::plan::Connection,
            resolve: &dyn Fn(&str) -> PathBuf,
        ) -> SshTarget {
            let mut t = SshTarget::new(name);
            if let Some(a) = &c.address {
                t = t.address(a.clone());
            }
            if let Some(p) = c.port {
                t = t.port(p);
            }
            if let Some(u) = &c.user {
                t = t.user(u.clone());
            }
            if let Some(i) = &c.identity {
                t = t.identity(resolve(i));
            }
            if let Some(j) = &c.jump {
                let jname = j.address.clone().unwrap_or_else(|| format!("{name}-jump"));
                t = t.jump(target(&jname, j, resolve));
            }
            t
        }
        for h in &plan.hosts {
            if h.connection.transport == "ssh" {
                targets.insert(h.name.clone(), target(&h.name, &h.connection, &resolve));
            }
            become_.insert(
                h.name.clone(),
                BecomeSpec {
                    enabled: false,
                    user: h.connection.become_user.clone(),
                    password: h.connection.sudo_password.clone(),
                },
            );
        }
        Ok(Inventory {
            secrets: Default::default(),
            pool,
            targets,
            become_,
            local: Arc::new(LocalTransport::new(LOCAL_HOST)),
        })
    }

    /// The transport for a host; SSH connections open lazily on first use and are then reused.
    pub fn transport(&self, host: &str) -> Result<Arc<dyn Transport>, TransportError> {
        if host == LOCAL_HOST {
            return Ok(self.local.clone());
        }
        let target = self
            .targets
            .get(host)
            .cloned()
            .unwrap_or_else(|| SshTarget::new(host));
        Ok(self.pool.transport(&target)?)
    }

    /// Opens the connection now (preflight wants the failure up front, not on first command).
    pub async fn connect(&self, host: &str) -> Result<(), TransportError> {
        if host == LOCAL_HOST {
            return Ok(());
        }
        let target = self
            .targets
            .get(host)
            .cloned()
            .unwrap_or_else(|| SshTarget::new(host));
        self.pool.transport(&target)?.connect().await
    }

    /// Whether the host escalates by default (`become=#true`).
    pub fn becomes(&self, host: &str) -> bool {
        self.become_.get(host).is_some_and(|b| b.enabled)
    }

    /// The escalation to use when a resource asks for sudo, with the password resolved.
    pub fn become_for(
        &self,
        host: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Become, BecomeError> {
        let spec = self.become_.get(host).cloned().unwrap_or(BecomeSpec {
            enabled: false,
            user: "root".into(),
            password: None,
        });
        let mut b = Become::user(spec.user);
        match spec.password {
            None => {}
            Some(Value::Literal(p)) => b = b.with_password(p),
            Some(Value::Env(var)) => match env(&var) {
                Some(p) => b = b.with_password(p),
                None => {
                    return Err(BecomeError::EnvUnset {
                        host: host.into(),
                        var,
                    });
                }
            },
            Some(Value::Secret(name)) => match self.secrets.get(&name) {
                Some(p) => b = b.with_password(p),
                None => {
                    return Err(BecomeError::SecretUnavailable {
                        host: host.into(),
                        name,
                    });
                }
            },
        }
        Ok(b)
    }

    /// Secret values for sudo passwords that come from the vault.
    pub fn set_secrets(&mut self, secrets: std::sync::Arc<crate::secrets::Resolved>) {
        self.secrets = secrets;
    }

    /// Adds SSH targets for discovered hosts (pinned in nexus.lock): the Tailscale address, the
    /// tailscale group's user (else `defaults`), the default port, identity and sudo settings.
    /// Configured hosts of the same name keep their own settings.
    pub fn add_discovered(&mut self, cfg: &Config, discovered: &crate::discovery::Discovered) {
        let d = &cfg.defaults;
        for h in discovered.values().flatten() {
            if cfg.host(&h.name).is_some() {
                continue;
            }
            let mut t = SshTarget::new(&h.name).address(h.address.clone());
            if let Some(p) = d.port {
                t = t.port(p);
            }
            if let Some(u) = h.user.as_ref().or(d.user.as_ref()) {
                t = t.user(u.clone());
            }
            if let Some(i) = &d.identity {
                t = t.identity(i.clone());
            }
            self.targets.insert(h.name.clone(), t);
            self.become_.insert(
                h.name.clone(),
                BecomeSpec {
                    enabled: d.become_.unwrap_or(false),
                    user: d.become_user.clone().unwrap_or_else(|| "root".into()),
                    password: d.sudo_password.clone(),
                },
            );
        }
    }

    /// The sudo-password secrets of every host, by name (to read them from the vault).
    pub fn sudo_secret_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .become_
            .values()
            .filter_map(|b| match &b.password {
                Some(Value::Secret(n)) => Some(n.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Closes every SSH connection cleanly.
    pub async fn close(&self) {
        self.pool.close_all().await;
    }

    pub fn connections_opened(&self) -> u64 {
        self.pool.connections_opened()
    }
}

/// Builds the SSH target of a configured host; a `jump` naming another host uses that host's own
/// settings. Validation rejects jump cycles; the depth bound only guards unvalidated input.
fn ssh_target(cfg: &Config, name: &str, depth: usize) -> SshTarget {
    let Some(h) = cfg.host(name) else {
        return parse_jump_spec(name).unwrap_or_else(|_| SshTarget::new(name));
    };
    let mut t = SshTarget::new(name).address(h.address.clone());
    if let Some(p) = h.port.or(cfg.defaults.port) {
        t = t.port(p);
    }
    if let Some(u) = h.user.as_ref().or(cfg.defaults.user.as_ref()) {
        t = t.user(u.clone());
    }
    if let Some(i) = h.identity.as_ref().or(cfg.defaults.identity.as_ref()) {
        t = t.identity(i.clone());
    }
    t.connect_timeout = h.connect_timeout;
    if let Some(j) = &h.jump
        && depth < 8
    {
        t = t.jump(ssh_target(cfg, &j.value, depth + 1));
    }
    t
}
