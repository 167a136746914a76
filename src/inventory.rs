//! Transports for the hosts of one command, built only from their [`Connection`]s (derived once,
//! in `planner::connection`): `local` runs through tokio::process, every other host through the
//! shared SSH pool (one connection per host). Command-line overrides win over the connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LOCAL_HOST, Value};
use crate::plan::{Connection, SshSettings, TransportKind};
use crate::transport::ssh_config::SshConfigSource;
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
    secrets: Arc<crate::secrets::Resolved>,
    pool: SshPool,
    targets: HashMap<String, SshTarget>,
    become_: HashMap<String, BecomeSpec>,
    local: Arc<LocalTransport>,
}

#[derive(Debug, Clone)]
struct BecomeSpec {
    user: String,
    password: Option<Value>,
}

impl Inventory {
    /// The transports of `hosts`. Relative paths (identities, known_hosts, ssh config) resolve
    /// against `base_dir`, the configuration's directory.
    pub fn new<'a>(
        settings: &SshSettings,
        hosts: impl IntoIterator<Item = (&'a str, &'a Connection)>,
        base_dir: &Path,
        ov: &Overrides,
    ) -> Result<Inventory, TransportError> {
        let mut opts = SshOptions {
            user: ov.user.clone(),
            identity_files: ov.identity.clone(),
            connect_timeout: ov.connect_timeout,
            ..SshOptions::default()
        };
        if ov.accept_new_host_keys {
            opts.host_key_policy = Some(HostKeyPolicy::AcceptNew);
        } else if let Some(h) = settings.host_key_checking {
            opts.host_key_policy = Some(h);
        }
        let home = crate::local_user::home_dir();
        let resolve = |p: &str| {
            let e = crate::local_user::expand_tilde(p, home.as_deref());
            if e.is_absolute() { e } else { base_dir.join(e) }
        };
        if let Some(k) = &settings.known_hosts {
            opts.known_hosts_files = vec![resolve(k)];
        }
        if let Some(c) = &settings.ssh_config {
            opts.ssh_config = SshConfigSource::File(resolve(c));
        }
        if let Some(k) = settings.keepalive {
            opts.keepalive_interval = Some(k);
        }
        if let Some(m) = settings.max_channels {
            opts.max_channels = m as usize;
        }
        let pool = SshPool::new(opts)?;
        let mut targets = HashMap::new();
        let mut become_ = HashMap::new();
        for (name, c) in hosts {
            if c.transport == TransportKind::Ssh {
                let t = target(name, c, settings.connect_timeout, &resolve);
                targets.insert(name.to_string(), t);
            }
            become_.insert(
                name.to_string(),
                BecomeSpec {
                    user: c.become_user.clone(),
                    password: c.sudo_password.clone(),
                },
            );
        }
        // One connection per SSH host and per jump host on its way, held for the whole run.
        let jumps: u64 = targets.values().map(jump_hops).sum();
        crate::fd_limit::ensure(targets.len() as u64 + jumps)?;
        Ok(Inventory {
            secrets: Default::default(),
            pool,
            targets,
            become_,
            local: Arc::new(LocalTransport::new(LOCAL_HOST)),
        })
    }

    /// The inventory of a saved plan: hosts as the plan records them, so apply needs no config.
    pub fn for_plan(
        plan: &crate::plan::Plan,
        base_dir: &Path,
        ov: &Overrides,
    ) -> Result<Inventory, TransportError> {
        Inventory::new(
            &plan.ssh,
            plan.hosts.iter().map(|h| (h.name.as_str(), &h.connection)),
            base_dir,
            ov,
        )
    }

    /// The inventory of a configuration: every host it names, `local`, and the hosts that
    /// discovery pinned, connected exactly as a plan of it would record them.
    pub fn for_config(
        cfg: &crate::config::Config,
        discovered: &crate::discovery::Discovered,
        ov: &Overrides,
    ) -> Result<Inventory, TransportError> {
        let hosts = crate::planner::connection::all(cfg, discovered);
        Inventory::new(
            &crate::planner::connection::ssh_settings(cfg),
            hosts.iter().map(|(n, c)| (n.as_str(), c)),
            &cfg.base_dir,
            ov,
        )
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

    /// The escalation to use when a resource asks for sudo, with the password resolved.
    pub fn become_for(
        &self,
        host: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Become, BecomeError> {
        let spec = self.become_.get(host).cloned().unwrap_or(BecomeSpec {
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
    pub fn set_secrets(&mut self, secrets: Arc<crate::secrets::Resolved>) {
        self.secrets = secrets;
    }

    /// Closes `host`'s own connection (not the jump hosts it goes through); a later command
    /// connects again.
    pub async fn release(&self, host: &str) {
        if host != LOCAL_HOST {
            self.pool.release(host).await;
        }
    }

    /// Closes every SSH connection cleanly.
    pub async fn close(&self) {
        self.pool.close_all().await;
    }

    pub fn connections_opened(&self) -> u64 {
        self.pool.connections_opened()
    }
}

/// The SSH target of a connection, with its jump chain; relative identities resolve by `resolve`.
/// A host's own connect timeout wins over the defaults' (and `--connect-timeout` over both).
fn target(
    name: &str,
    c: &Connection,
    default_timeout: Option<Duration>,
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
    t.connect_timeout = c.connect_timeout.or(default_timeout);
    if let Some(j) = &c.jump {
        let jname = j.address.clone().unwrap_or_else(|| format!("{name}-jump"));
        t = t.jump(target(&jname, j, default_timeout, resolve));
    }
    t
}

/// How many jump hosts stand before `t` (each is a connection of its own; shared ones are
/// counted once per host, an upper bound).
fn jump_hops(t: &SshTarget) -> u64 {
    let mut n = 0;
    let mut next = t.jump.as_deref();
    while let Some(j) = next {
        n += 1;
        next = j.jump.as_deref();
    }
    n
}
