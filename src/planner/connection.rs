//! A host's connection, derived from the configuration in this one place: planning connects with
//! it, the plan records it, and apply and `run` build their transports from it and nothing else.
//! Paths are recorded as written, relative to the configuration's directory when beneath it, so
//! plans made in different checkouts are identical.

use std::path::Path;

use crate::config::{Config, Host, LOCAL_HOST};
use crate::discovery::{Discovered, DiscoveredHost};
use crate::plan::{Connection, SshSettings, TransportKind};

/// Named jump hosts nest at most this deep; validation rejects cycles, this only bounds
/// unvalidated input.
const MAX_JUMPS: usize = 8;

/// How `host` is reached: a configured host with its jump chain, `local`, or a bare address.
pub fn of_host(cfg: &Config, host: &str) -> Connection {
    match cfg.host(host) {
        Some(h) => configured(cfg, h, 0),
        None if host == LOCAL_HOST => Connection {
            transport: TransportKind::Local,
            address: None,
            ..bare(cfg, None)
        },
        None => bare(cfg, Some(host.to_string())),
    }
}

/// How a discovered (Tailscale) host is reached: its address, the group's user (else defaults).
/// A configured host of the same name keeps its own settings.
pub fn of_discovered(cfg: &Config, h: &DiscoveredHost) -> Connection {
    if cfg.host(&h.name).is_some() {
        return of_host(cfg, &h.name);
    }
    let d = &cfg.defaults;
    Connection {
        port: d.port,
        user: h.user.clone().or(d.user.clone()),
        identity: d.identity.as_ref().map(|p| relative_to(&cfg.base_dir, p)),
        ..bare(cfg, Some(h.address.clone()))
    }
}

/// Every host a command may contact: the configured ones, `local`, and those discovery pinned.
pub fn all(cfg: &Config, discovered: &Discovered) -> Vec<(String, Connection)> {
    let mut out: Vec<(String, Connection)> = cfg
        .hosts
        .iter()
        .map(|h| (h.name.value.clone(), configured(cfg, h, 0)))
        .collect();
    out.push((LOCAL_HOST.to_string(), of_host(cfg, LOCAL_HOST)));
    for h in discovered.values().flatten() {
        if cfg.host(&h.name).is_none() {
            out.push((h.name.clone(), of_discovered(cfg, h)));
        }
    }
    out
}

/// The SSH settings of `defaults`, as the plan records them.
pub fn ssh_settings(cfg: &Config) -> SshSettings {
    let d = &cfg.defaults;
    SshSettings {
        known_hosts: d
            .known_hosts
            .as_ref()
            .map(|p| relative_to(&cfg.base_dir, p)),
        ssh_config: d.ssh_config.as_ref().map(|p| relative_to(&cfg.base_dir, p)),
        host_key_checking: d.host_key_checking,
        connect_timeout: d.connect_timeout,
        keepalive: d.keepalive,
        max_channels: d.max_channels,
    }
}

/// A host known only by its address: the defaults' escalation, nothing else.
fn bare(cfg: &Config, address: Option<String>) -> Connection {
    let d = &cfg.defaults;
    Connection {
        transport: TransportKind::Ssh,
        address,
        port: None,
        user: None,
        identity: None,
        jump: None,
        connect_timeout: None,
        become_user: d.become_user.clone().unwrap_or_else(|| "root".into()),
        sudo_password: d.sudo_password.clone(),
    }
}

fn configured(cfg: &Config, h: &Host, depth: usize) -> Connection {
    let d = &cfg.defaults;
    let jump = h
        .jump
        .as_ref()
        .filter(|_| depth < MAX_JUMPS)
        .map(|j| Box::new(jump(cfg, &j.value, depth + 1)));
    Connection {
        transport: TransportKind::Ssh,
        address: Some(h.address.clone()),
        port: h.port.or(d.port),
        user: h.user.clone().or(d.user.clone()),
        identity: h
            .identity
            .as_ref()
            .or(d.identity.as_ref())
            .map(|p| relative_to(&cfg.base_dir, p)),
        jump,
        connect_timeout: h.connect_timeout,
        become_user: h
            .become_user
            .clone()
            .or(d.become_user.clone())
            .unwrap_or_else(|| "root".into()),
        sudo_password: h.sudo_password.clone().or(d.sudo_password.clone()),
    }
}

/// A jump host: another configured host (with its own settings and jumps), or an address
/// `[user@]host[:port]` that validation accepted.
fn jump(cfg: &Config, spec: &str, depth: usize) -> Connection {
    if let Some(h) = cfg.host(spec) {
        return configured(cfg, h, depth);
    }
    let (user, address, port) = match crate::transport::target::parse_jump_spec(spec) {
        Ok(t) => (t.user, t.name, t.port),
        Err(_) => (None, spec.to_string(), None),
    };
    Connection {
        user,
        port,
        ..bare(cfg, Some(address))
    }
}

/// A local path as the plan records it.
pub(crate) fn relative_to(base: &Path, p: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::load_str(text, "nexus.kdl", Path::new("/proj"))
            .expect("valid configuration")
            .config
    }

    #[test]
    fn an_address_jump_is_parsed_once_into_its_parts() {
        let cfg = config(
            "host \"web\" \"10.0.0.5\" jump=\"ops@bastion.example:2222\" connect-timeout=\"3s\"\n",
        );
        let c = of_host(&cfg, "web");
        let j = c.jump.expect("a jump");
        assert_eq!(j.address.as_deref(), Some("bastion.example"));
        assert_eq!(j.user.as_deref(), Some("ops"));
        assert_eq!(j.port, Some(2222));
        assert_eq!(c.connect_timeout, Some(std::time::Duration::from_secs(3)));
    }

    #[test]
    fn a_named_jump_carries_that_hosts_settings() {
        let cfg = config(
            "defaults user=\"deploy\"\nhost \"b\" \"10.0.0.1\" port=2200\nhost \"web\" \"10.0.0.5\" jump=\"b\"\n",
        );
        let j = of_host(&cfg, "web").jump.expect("a jump");
        assert_eq!(j.address.as_deref(), Some("10.0.0.1"));
        assert_eq!(j.port, Some(2200));
        assert_eq!(j.user.as_deref(), Some("deploy"));
    }

    #[test]
    fn local_is_not_reached_over_ssh() {
        let cfg = config("task \"t\" { command \"true\" }\n");
        assert_eq!(of_host(&cfg, LOCAL_HOST).transport, TransportKind::Local);
        assert!(
            all(&cfg, &Discovered::default())
                .iter()
                .any(|(n, _)| n == LOCAL_HOST)
        );
    }
}
