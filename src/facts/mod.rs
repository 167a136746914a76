//! Host facts (OS, distribution, hardware, user, network), gathered in one round trip per host
//! by a single POSIX sh script on one channel, and parsed into a typed [`Facts`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::transport::{CommandSpec, Transport, TransportError};

/// The gathering script, run by `sh -c` on the host.
pub const FACTS_SCRIPT: &str = include_str!("facts.sh");

// Output format version printed by the script; bump both together.
const FORMAT: &str = "1";

/// What nexus knows about a host. Templates see these fields; the planner branches on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Kernel name in lower case: `linux`, `darwin`, `freebsd`.
    pub os: String,
    /// Distribution family: `debian`, `redhat`, `suse`, `arch`, `alpine`, `gentoo`, or the
    /// distribution id (or `os`) when the family is not one of those.
    pub os_family: String,
    /// Distribution details from os-release.
    pub distribution: Distribution,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`uname -m`), e.g. `x86_64`, `aarch64`.
    pub architecture: String,
    /// Short host name (`uname -n`).
    pub hostname: String,
    /// Fully qualified name (`hostname -f`), or the host name when that fails.
    pub fqdn: String,
    /// Online CPUs.
    pub cpu_count: u32,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// The system package manager, if one nexus supports is installed.
    pub package_manager: Option<PackageManager>,
    /// The running init system.
    pub init_system: InitSystem,
    /// Login user name.
    pub user: String,
    /// Login user id.
    pub uid: u32,
    /// Login user's primary group id.
    pub gid: u32,
    /// Login user's home directory.
    pub home: String,
    /// Login user's shell.
    pub shell: String,
    /// Address of the interface holding the default route, if there is one.
    pub default_ipv4: Option<Ipv4Addr>,
    /// `/etc/machine-id`, if present.
    pub machine_id: Option<String>,
}

/// Distribution identity, from `/etc/os-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    /// `ID`, e.g. `debian`, `ubuntu`, `alpine`, `fedora`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`, `22.04`; empty for rolling releases.
    pub version: String,
    /// `VERSION_CODENAME` (or `UBUNTU_CODENAME`), e.g. `bookworm`.
    pub codename: Option<String>,
    /// `ID_LIKE`, split: the distributions this one derives from.
    pub like: Vec<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
}

/// Package managers nexus drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    /// Debian, Ubuntu.
    Apt,
    /// Fedora, RHEL 8+.
    Dnf,
    /// RHEL/CentOS 7.
    Yum,
    /// Alpine.
    Apk,
    /// Arch.
    Pacman,
    /// SUSE.
    Zypper,
}

/// The init systems nexus manages services with: what a service resource runs under, and what
/// a service's pre-image records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    Openrc,
}

/// The init system a host runs, as its facts say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    /// systemd is PID 1.
    Systemd,
    /// OpenRC.
    Openrc,
    /// Anything else (a container's shell, sysvinit...): services cannot be managed.
    Other,
}

/// Why facts could not be gathered. Messages name the host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FactsError {
    /// The host could not be reached or the command not run.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The script exited non-zero (it is written never to).
    #[error("{host}: fact gathering failed: {detail}")]
    ScriptFailed {
        /// Host label.
        host: String,
        /// Exit status and last line of stderr.
        detail: String,
    },
    /// The output was not what the script prints (wrong shell? an old script version?).
    #[error("{host}: cannot parse facts: {reason}")]
    Malformed {
        /// Host label.
        host: String,
        /// What was wrong.
        reason: ParseError,
    },
}

/// What is wrong with an output of the facts script. A separate type because [`Facts::parse`]
/// does not know the host that [`FactsError`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no `format=` line in the script output")]
    NoFormat,
    #[error("unsupported facts format {found:?}")]
    UnsupportedFormat { found: String },
    #[error("no kernel name (uname -s) in the script output")]
    NoKernelName,
    #[error("{key} is not a number: {value:?}")]
    NotANumber { key: &'static str, value: String },
    #[error("{what} out of range")]
    OutOfRange { what: &'static str },
}

/// Gathers the facts of the host behind `transport`: one command, one channel.
pub async fn gather_facts<T: Transport + ?Sized>(transport: &T) -> Result<Facts, FactsError> {
    let out = transport.run(&facts_command()).await?;
    from_output(transport.label(), &out)
}

/// The command that gathers facts.
pub fn facts_command() -> CommandSpec {
    CommandSpec::new(FACTS_SCRIPT)
}

/// The facts in the output of [`facts_command`] on the host `label` names.
#[allow(clippy::result_large_err)] // the error type of gather_facts, which wraps transport errors
pub fn from_output(label: &str, out: &crate::transport::Output) -> Result<Facts, FactsError> {
    if !out.success() {
        return Err(FactsError::ScriptFailed {
            host: label.to_string(),
            detail: out.failure_summary(),
        });
    }
    Facts::parse(&out.stdout_str()).map_err(|reason| FactsError::Malformed {
        host: label.to_string(),
        reason,
    })
}

impl Facts {
    /// Parses the output of [`FACTS_SCRIPT`].
    pub fn parse(output: &str) -> Result<Facts, ParseError> {
        let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
        let mut os_release: BTreeMap<String, String> = BTreeMap::new();
        for line in output.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if let Some(k) = key.strip_prefix("os_release.") {
                os_release
                    .entry(k.trim().to_string())
                    .or_insert_with(|| unquote_os_release(value));
            } else {
                kv.entry(key).or_insert(value);
            }
        }
        match kv.get("format") {
            Some(&FORMAT) => {}
            Some(other) => {
                return Err(ParseError::UnsupportedFormat {
                    found: other.to_string(),
                });
            }
            None => return Err(ParseError::NoFormat),
        }
        let get = |k: &str| kv.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let opt = |k: &str| Some(get(k)).filter(|v| !v.is_empty());
        let number = |key: &'static str| -> Result<u64, ParseError> {
            let value = get(key);
            if value.is_empty() {
                return Ok(0);
            }
            value
                .parse::<u64>()
                .map_err(|_| ParseError::NotANumber { key, value })
        };
        let out_of_range = |what| ParseError::OutOfRange { what };
        let os_rel = |k: &str| os_release.get(k).cloned().filter(|v| !v.is_empty());

        let os = get("kernel_name").to_ascii_lowercase();
        if os.is_empty() {
            return Err(ParseError::NoKernelName);
        }
        let distribution = Distribution {
            id: os_rel("ID").unwrap_or_default().to_ascii_lowercase(),
            version: os_rel("VERSION_ID").unwrap_or_default(),
            codename: os_rel("VERSION_CODENAME").or_else(|| os_rel("UBUNTU_CODENAME")),
            like: os_rel("ID_LIKE")
                .map(|l| l.split_whitespace().map(str::to_ascii_lowercase).collect())
                .unwrap_or_default(),
            pretty_name: os_rel("PRETTY_NAME")
                .or_else(|| os_rel("NAME"))
                .unwrap_or_default(),
        };
        let hostname = get("hostname");
        let uid = number("uid")?;
        let gid = number("gid")?;
        Ok(Facts {
            os_family: os_family(&distribution, &os),
            os,
            distribution,
            kernel: get("kernel"),
            architecture: get("arch"),
            fqdn: opt("fqdn").unwrap_or_else(|| hostname.clone()),
            hostname,
            cpu_count: u32::try_from(number("cpus")?).map_err(|_| out_of_range("cpu count"))?,
            memory_total_bytes: number("mem_kb")?.saturating_mul(1024),
            package_manager: match get("pkg").as_str() {
                "apt-get" | "apt" => Some(PackageManager::Apt),
                "dnf" => Some(PackageManager::Dnf),
                "yum" => Some(PackageManager::Yum),
                "apk" => Some(PackageManager::Apk),
                "pacman" => Some(PackageManager::Pacman),
                "zypper" => Some(PackageManager::Zypper),
                _ => None,
            },
            init_system: match get("init").as_str() {
                "systemd" => InitSystem::Systemd,
                "openrc" => InitSystem::Openrc,
                _ => InitSystem::Other,
            },
            user: get("user"),
            uid: u32::try_from(uid).map_err(|_| out_of_range("uid"))?,
            gid: u32::try_from(gid).map_err(|_| out_of_range("gid"))?,
            home: get("home"),
            shell: get("shell"),
            default_ipv4: opt("ipv4").and_then(|v| v.parse().ok()),
            machine_id: opt("machine_id"),
        })
    }
}

fn os_family(d: &Distribution, os: &str) -> String {
    let family = |id: &str| -> Option<&'static str> {
        Some(match id {
            "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" => "debian",
            "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "ol" | "amzn" => "redhat",
            "suse" | "sles" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => "suse",
            "arch" | "archlinux" | "manjaro" | "endeavouros" => "arch",
            "alpine" => "alpine",
            "gentoo" => "gentoo",
            _ => return None,
        })
    };
    std::iter::once(d.id.as_str())
        .chain(d.like.iter().map(String::as_str))
        .find_map(family)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if d.id.is_empty() {
                os.to_string()
            } else {
                d.id.clone()
            }
        })
}

/// os-release values are shell-quoted: `"a \"b\""`, `'c'` or bare.
fn unquote_os_release(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on a Debian 12 machine (not systemd as PID 1) by running facts.sh.
    const DEBIAN: &str = r#"format=1
kernel_name=Linux
kernel=6.18.44-fc-v669
arch=x86_64
hostname=vm
fqdn=vm
cpus=2
mem_kb=24684084
pkg=apt-get
init=other
pid1=process_api
user=root
uid=0
gid=0
home=/root
shell=/bin/bash
ipv4=192.0.2.2
machine_id=3d1219c7c4c5404aaa1f6d2a48adfda4
os_release.PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
os_release.NAME="Debian GNU/Linux"
os_release.VERSION_ID="12"
os_release.VERSION="12 (bookworm)"
os_release.VERSION_CODENAME=bookworm
os_release.ID=debian
os_release.HOME_URL="https://www.debian.org/"
"#;

    // An Alpine container shaped like busybox output: no fqdn, no machine id, no route.
    const ALPINE: &str = "format=1
kernel_name=Linux
kernel=6.1.0
arch=aarch64
hostname=box
fqdn=
cpus=4
mem_kb=2048000
pkg=apk
init=openrc
user=app
uid=1000
gid=1000
home=/home/app
shell=/bin/ash
ipv4=
machine_id=
os_release.NAME=\"Alpine Linux\"
os_release.ID=alpine
os_release.VERSION_ID=3.19.1
os_release.PRETTY_NAME='Alpine Linux v3.19'
";

    #[test]
    fn parses_recorded_debian_output() {
        let f = Facts::parse(DEBIAN).unwrap();
        assert_eq!(f.os, "linux");
        assert_eq!(f.os_family, "debian");
        assert_eq!(
            f.distribution,
            Distribution {
                id: "debian".into(),
                version: "12".into(),
                codename: Some("bookworm".into()),
                like: vec![],
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            }
        );
        assert_eq!(f.kernel, "6.18.44-fc-v669");
        assert_eq!(f.architecture, "x86_64");
        assert_eq!((f.hostname.as_str(), f.fqdn.as_str()), ("vm", "vm"));
        assert_eq!(f.cpu_count, 2);
        assert_eq!(f.memory_total_bytes, 24684084 * 1024);
        assert_eq!(f.package_manager, Some(PackageManager::Apt));
        assert_eq!(f.init_system, InitSystem::Other);
        assert_eq!((f.user.as_str(), f.uid, f.gid), ("root", 0, 0));
        assert_eq!((f.home.as_str(), f.shell.as_str()), ("/root", "/bin/bash"));
        assert_eq!(f.default_ipv4, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(
            f.machine_id.as_deref(),
            Some("3d1219c7c4c5404aaa1f6d2a48adfda4")
        );
    }

    #[test]
    fn parses_sparse_alpine_output() {
        let f = Facts::parse(ALPINE).unwrap();
        assert_eq!(f.os_family, "alpine");
        assert_eq!(f.distribution.pretty_name, "Alpine Linux v3.19");
        assert_eq!(f.distribution.codename, None);
        assert_eq!(f.fqdn, "box");
        assert_eq!(f.package_manager, Some(PackageManager::Apk));
        assert_eq!(f.init_system, InitSystem::Openrc);
        assert_eq!(f.default_ipv4, None);
        assert_eq!(f.machine_id, None);
    }

    #[test]
    fn families_follow_id_like() {
        let d = |id: &str, like: &[&str]| Distribution {
            id: id.into(),
            like: like.iter().map(|s| s.to_string()).collect(),
            ..Distribution::default()
        };
        assert_eq!(os_family(&d("ubuntu", &["debian"]), "linux"), "debian");
        assert_eq!(
            os_family(&d("rocky", &["rhel", "centos", "fedora"]), "linux"),
            "redhat"
        );
        assert_eq!(os_family(&d("myos", &["fedora"]), "linux"), "redhat");
        assert_eq!(os_family(&d("nixos", &[]), "linux"), "nixos");
        assert_eq!(os_family(&d("", &[]), "darwin"), "darwin");
    }

    #[test]
    fn rejects_foreign_output() {
        assert_eq!(Facts::parse("hello\n").unwrap_err(), ParseError::NoFormat);
        assert_eq!(
            Facts::parse("format=2\n").unwrap_err().to_string(),
            "unsupported facts format \"2\""
        );
        assert_eq!(
            Facts::parse("format=1\nkernel_name=Linux\ncpus=two\n")
                .unwrap_err()
                .to_string(),
            "cpus is not a number: \"two\""
        );
        assert_eq!(
            Facts::parse("format=1\nkernel_name=Linux\nuid=4294967296\n").unwrap_err(),
            ParseError::OutOfRange { what: "uid" }
        );
    }

    #[test]
    fn serde_round_trip() {
        let f = Facts::parse(DEBIAN).unwrap();
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["package_manager"], "apt");
        assert_eq!(json["init_system"], "other");
        assert_eq!(json["default_ipv4"], "192.0.2.2");
        let back: Facts = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }

    /// The script reads /proc, /sys and /etc with shell builtins instead of running uname, id,
    /// getconf, ip route and cat; on this machine its values must still be what those print.
    #[cfg(target_os = "linux")]
    #[test]
    fn script_agrees_with_the_tools_it_replaces() {
        use std::process::Command;
        let tool = |args: &[&str]| -> Option<String> {
            let out = Command::new(args[0])
                .args(&args[1..])
                .env("LC_ALL", "C")
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            out.status
                .success()
                .then(|| text.trim_end_matches('\n').to_string())
        };
        let mut shells = vec![vec!["sh"]];
        if tool(&["busybox", "true"]).is_some() {
            shells.push(vec!["busybox", "ash"]);
        }
        for shell in shells {
            let out = Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(FACTS_SCRIPT)
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell:?}: {out:?}");
            assert!(out.stderr.is_empty(), "{shell:?}: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let mut kv = BTreeMap::new();
            for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
                kv.entry(k).or_insert(v);
            }
            let mut checks: Vec<(&str, &[&str])> = vec![
                ("kernel_name", &["uname", "-s"]),
                ("kernel", &["uname", "-r"]),
                ("arch", &["uname", "-m"]),
                ("hostname", &["uname", "-n"]),
                ("fqdn", &["hostname", "-f"]),
                ("uid", &["id", "-u"]),
                ("gid", &["id", "-g"]),
                ("user", &["id", "-un"]),
                ("pid1", &["cat", "/proc/1/comm"]),
            ];
            // musl's getconf counts the CPUs this process may run on, glibc's the online ones.
            if cfg!(target_env = "gnu") {
                checks.push(("cpus", &["getconf", "_NPROCESSORS_ONLN"]));
            }
            for (key, args) in checks {
                if let Some(expected) = tool(args) {
                    assert_eq!(kv.get(key), Some(&expected.as_str()), "{shell:?}: {key}");
                }
            }
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
            let mem_kb = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix(" kB"))
                .unwrap();
            assert_eq!(kv.get("mem_kb"), Some(&mem_kb), "{shell:?}");
            if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
                assert_eq!(kv.get("machine_id"), Some(&id.trim_end()), "{shell:?}");
            }
            // The address of the default route's interface, as `ip` reports it.
            if let Some(route) = tool(&["ip", "-4", "route", "show", "default"]) {
                let dev = route
                    .lines()
                    .find_map(|l| l.rsplit_once(" dev ").map(|(_, d)| d))
                    .map(|d| d.split(' ').next().unwrap_or_default().to_string());
                let addr = dev
                    .and_then(|d| tool(&["ip", "-4", "-o", "addr", "show", "dev", &d]))
                    .and_then(|a| {
                        let rest = a.split_once(" inet ")?.1;
                        Some(rest.split(['/', ' ']).next()?.to_string())
                    })
                    .unwrap_or_default();
                assert_eq!(kv.get("ipv4"), Some(&addr.as_str()), "{shell:?}");
            }
            let facts = Facts::parse(&text).unwrap();
            assert_eq!(facts.os, "linux");
        }
    }

    #[test]
    fn os_release_quoting() {
        assert_eq!(unquote_os_release(r#""a \"b\" \\c""#), r#"a "b" \c"#);
        assert_eq!(unquote_os_release("'x y'"), "x y");
        assert_eq!(unquote_os_release("bare"), "bare");
    }
}
