//! Reading ~/.ssh/config with the ssh2-config crate, reduced to the settings nexus honours.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{DefaultAlgorithms, ParseRule, SshConfig};

use super::TransportError;

/// The host-key policy is part of the configuration's model (`host-key-checking`), which the
/// transport follows.
pub use crate::plan::vocab::HostKeyChecking as HostKeyPolicy;

/// Where to read OpenSSH client configuration from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SshConfigSource {
    /// `~/.ssh/config`, if it exists.
    #[default]
    Default,
    /// This file (it must exist).
    File(PathBuf),
    /// Ignore ssh_config entirely (tests, or `-F none`).
    Disabled,
}

/// The settings ssh_config gives one host; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`.
    pub host_name: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// `IdentityFile` (all matching blocks, in order).
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile` (the parser keeps the first value only).
    pub certificate_files: Vec<PathBuf>,
    /// `ProxyJump` hops; `Some(empty)` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<String>>,
    /// `StrictHostKeyChecking`.
    pub strict_host_key_checking: Option<HostKeyPolicy>,
    /// `UserKnownHostsFile`.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`.
    pub server_alive_interval: Option<Duration>,
    /// `Ciphers`, applied to nexus's own order (transport/ciphers.rs) as OpenSSH applies it to
    /// its own: `None` where ssh_config does not set it.
    pub ciphers: Option<Vec<String>>,
}

/// A parsed ssh_config file (or none).
#[derive(Debug, Clone, Default)]
pub struct SshConfigFile {
    config: Option<SshConfig>,
    home: Option<PathBuf>,
}

impl SshConfigFile {
    /// Reads the configuration named by `source`.
    pub fn load(source: &SshConfigSource) -> Result<Self, TransportError> {
        let home = crate::local_user::home_dir();
        let path = match source {
            SshConfigSource::Disabled => return Ok(SshConfigFile { config: None, home }),
            SshConfigSource::File(p) => p.clone(),
            SshConfigSource::Default => match &home {
                Some(h) if h.join(".ssh/config").exists() => h.join(".ssh/config"),
                _ => return Ok(SshConfigFile { config: None, home }),
            },
        };
        let err = |reason: String| TransportError::SshConfig {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(&path).map_err(|e| err(e.to_string()))?;
        let mut parser = parser();
        if let Some(h) = &home {
            parser = parser.home_dir(h);
        }
        // Options the crate does not model (StrictHostKeyChecking, UserKnownHostsFile) are kept
        // as "unsupported fields", and options nobody knows must not make the file unusable.
        let config = parser
            .parse(
                &mut BufReader::new(file),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| err(e.to_string()))?;
        Ok(SshConfigFile {
            config: Some(config),
            home,
        })
    }

    /// Parses configuration text (for tests and callers holding the text already).
    pub fn parse_str(text: &str, home: &Path) -> Result<Self, TransportError> {
        let config = parser()
            .home_dir(home)
            .parse(
                &mut BufReader::new(text.as_bytes()),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| TransportError::SshConfig {
                path: "<text>".into(),
                reason: e.to_string(),
            })?;
        Ok(SshConfigFile {
            config: Some(config),
            home: Some(home.to_path_buf()),
        })
    }

    /// The settings for `host` (matched against `Host` patterns, first value wins).
    pub fn query(&self, host: &str) -> HostConfig {
        let Some(config) = &self.config else {
            return HostConfig::default();
        };
        let p = config.query(host);
        let unsupported = |name: &str| p.unsupported_fields.get(name).cloned();
        HostConfig {
            host_name: p.host_name.as_deref().map(|h| expand_host_tokens(h, host)),
            port: p.port,
            user: p.user.clone(),
            identity_files: p.identity_file.clone().unwrap_or_default(),
            certificate_files: p.certificate_file.clone().into_iter().collect(),
            proxy_jump: p.proxy_jump.clone().map(|hops| {
                if hops.len() == 1 && hops[0].eq_ignore_ascii_case("none") {
                    Vec::new()
                } else {
                    hops
                }
            }),
            strict_host_key_checking: unsupported("stricthostkeychecking")
                .and_then(|v| v.first().and_then(|s| parse_strict(s))),
            user_known_hosts_files: unsupported("userknownhostsfile").map(|files| {
                files
                    .iter()
                    .filter(|f| !f.eq_ignore_ascii_case("none"))
                    .map(|f| crate::local_user::expand_tilde(f, self.home.as_deref()))
                    .collect()
            }),
            connect_timeout: p.connect_timeout,
            server_alive_interval: p.server_alive_interval,
            ciphers: (!p.ciphers.is_default()).then(|| p.ciphers.algorithms().to_vec()),
        }
    }
}

/// A parser whose `Ciphers` rules (`+`, `-`, `^`) apply to nexus's cipher order, as OpenSSH's
/// apply to its own; the other algorithm lists are not read.
fn parser() -> SshConfig {
    let ciphers = super::ciphers::default_order()
        .iter()
        .map(|c| c.as_ref().to_string())
        .collect();
    SshConfig::default().default_algorithms(DefaultAlgorithms {
        ciphers,
        ..DefaultAlgorithms::default()
    })
}

/// `%h` (the name looked up) and `%%` in `HostName`, as OpenSSH expands them.
fn expand_host_tokens(value: &str, host: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('%', Some('h')) => {
                out.push_str(host);
                chars.next();
            }
            ('%', Some('%')) => {
                out.push('%');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// OpenSSH's values for StrictHostKeyChecking. `no`/`off` become accept-new: nexus never
/// connects to a host whose key changed, whatever the configuration says; `ask` is strict,
/// since nexus never prompts.
fn parse_strict(value: &str) -> Option<HostKeyPolicy> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "ask" => Some(HostKeyPolicy::Strict),
        "accept-new" | "no" | "off" => Some(HostKeyPolicy::AcceptNew),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
Host web*
    HostName %h.example.com
    User deploy
    Port 2222
    IdentityFile ~/.ssh/web_key
    CertificateFile ~/.ssh/web_key-ca-cert.pub
    StrictHostKeyChecking accept-new
    UserKnownHostsFile ~/.ssh/kh_web /etc/kh_extra

Host db1
    HostName db1.internal
    ProxyJump bastion
    IdentityFile /keys/db
    ConnectTimeout 7

Host direct
    ProxyJump none

Host *
    User fallback
    IdentityFile ~/.ssh/id_all
    StrictHostKeyChecking yes
    ServerAliveInterval 30
    SomeFutureOption yes
";

    /// `Ciphers` as OpenSSH reads it, applied to nexus's own order: a list, `-` and `^`.
    #[test]
    fn ciphers_apply_to_nexus_order() {
        let text = "Host set\n    Ciphers aes128-ctr,chacha20-poly1305@openssh.com\n\
                    Host minus\n    Ciphers -aes256-gcm@openssh.com\n\
                    Host head\n    Ciphers ^aes128-ctr\n";
        let cfg = SshConfigFile::parse_str(text, Path::new("/home/u")).unwrap();
        let own: Vec<String> = crate::transport::ciphers::default_order()
            .iter()
            .map(|c| c.as_ref().to_string())
            .collect();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cfg.query("set").ciphers,
            Some(names(&["aes128-ctr", "chacha20-poly1305@openssh.com"]))
        );
        let minus = cfg.query("minus").ciphers.unwrap();
        let want: Vec<String> = own
            .iter()
            .filter(|c| *c != "aes256-gcm@openssh.com")
            .cloned()
            .collect();
        assert_eq!(minus, want);
        let head = cfg.query("head").ciphers.unwrap();
        assert_eq!(head[0], "aes128-ctr");
        assert_eq!(cfg.query("other").ciphers, None);
    }

    #[test]
    fn host_blocks_first_value_wins() {
        let cfg = SshConfigFile::parse_str(CONFIG, Path::new("/home/u")).unwrap();
        let web = cfg.query("web1");
        assert_eq!(web.host_name.as_deref(), Some("web1.example.com"));
        assert_eq!(web.user.as_deref(), Some("deploy"));
        assert_eq!(web.port, Some(2222));
        assert_eq!(
            web.identity_files,
            vec![
                PathBuf::from("/home/u/.ssh/web_key"),
                PathBuf::from("/home/u/.ssh/id_all")
            ]
        );
        assert_eq!(
            web.certificate_files,
            vec![PathBuf::from("/home/u/.ssh/web_key-ca-cert.pub")]
        );
        assert_eq!(web.strict_host_key_checking, Some(HostKeyPolicy::AcceptNew));
        assert_eq!(
            web.user_known_hosts_files,
            Some(vec![
                PathBuf::from("/home/u/.ssh/kh_web"),
                PathBuf::from("/etc/kh_extra")
            ])
        );
        assert_eq!(web.server_alive_interval, Some(Duration::from_secs(30)));

        let db = cfg.query("db1");
        assert_eq!(db.host_name.as_deref(), Some("db1.internal"));
        assert_eq!(db.user.as_deref(), Some("fallback"));
        assert_eq!(db.proxy_jump, Some(vec!["bastion".to_string()]));
        assert_eq!(db.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(db.strict_host_key_checking, Some(HostKeyPolicy::Strict));

        assert_eq!(cfg.query("direct").proxy_jump, Some(vec![]));
        assert_eq!(cfg.query("other").proxy_jump, None);
    }

    #[test]
    fn disabled_source_gives_nothing() {
        let cfg = SshConfigFile::load(&SshConfigSource::Disabled).unwrap();
        assert_eq!(cfg.query("any"), HostConfig::default());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = SshConfigFile::load(&SshConfigSource::File("/nonexistent/ssh_config".into()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ssh config /nonexistent/ssh_config: ")
        );
    }
}
