//! Parsers for the small value languages inside config strings: durations, modes, percentages,
//! batch sizes and host addresses. Pure functions, so they are unit tested here.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::plan::vocab::{BatchSize, Percent};

/// A parse failure: what was wrong and a hint showing the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({help})")]
pub struct ValueError {
    pub message: String,
    pub help: String,
}

fn err(message: impl Into<String>, help: impl Into<String>) -> ValueError {
    ValueError {
        message: message.into(),
        help: help.into(),
    }
}

/// `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`. Zero is refused: a zero timeout is always a mistake.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let help = "write a duration with a unit, such as \"500ms\", \"30s\", \"5m\" or \"1h 30m\"";
    // humantime's messages mention byte offsets ("expected number at 0"): say it in words.
    let d = humantime::parse_duration(s.trim()).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => err(
            format!("duration {s:?} has no unit"),
            format!("add a unit, such as \"{value}s\" or \"{value}m\""),
        ),
        humantime::DurationError::UnknownUnit { unit, .. } => err(
            format!("unknown time unit {unit:?} in duration {s:?}"),
            "units are ms, s, m, h and d (also sec, min, hours, days, weeks), e.g. \"30s\" or \"1h 30m\"",
        ),
        humantime::DurationError::NumberOverflow => err(format!("duration {s:?} is too large"), help),
        humantime::DurationError::Empty => err("empty duration", help),
        _ => err(format!("invalid duration {s:?}"), help),
    })?;
    if d.is_zero() {
        return Err(err(format!("duration {s:?} is zero"), help));
    }
    Ok(d)
}

/// A Unix permission mode, 0 to 0o7777.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Modes are written as octal strings (`"0644"`, `"755"`); see [`mode_from_integer`] for literals.
pub fn parse_mode(s: &str) -> Result<Mode, ValueError> {
    let help = "write the mode as an octal string such as \"0644\" or \"0755\", or as an octal literal 0o644";
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(err(
            format!("invalid mode {s:?}: expected 3 or 4 octal digits"),
            help,
        ));
    }
    let v = u32::from_str_radix(digits, 8).map_err(|_| err(format!("invalid mode {s:?}"), help))?;
    Ok(Mode(v))
}

/// An integer mode is only accepted when it was written as an octal literal (`0o755`): a decimal
/// `755` is 0o1363, which is never what anyone means.
pub fn mode_from_integer(value: i128, repr: &str) -> Result<Mode, ValueError> {
    let help = "write the mode as an octal string such as \"0755\", or as an octal literal 0o755";
    if !repr.trim_start_matches('+').starts_with("0o") {
        return Err(err(
            format!("mode {repr} is a decimal number, not an octal mode"),
            help,
        ));
    }
    if !(0..=0o7777).contains(&value) {
        return Err(err(
            format!("mode {repr} is out of range (0o0..0o7777)"),
            help,
        ));
    }
    Ok(Mode(value as u32))
}

pub fn parse_percent(s: &str) -> Result<Percent, ValueError> {
    let help = "write a percentage from 0% to 100%, such as \"25%\"";
    let Some(num) = s.trim().strip_suffix('%') else {
        return Err(err(format!("invalid percentage {s:?}: missing '%'"), help));
    };
    match num.trim().parse::<u8>() {
        Ok(v) if v <= 100 => Ok(Percent(v)),
        _ => Err(err(format!("invalid percentage {s:?}"), help)),
    }
}

pub fn batch_from_integer(v: i128) -> Result<BatchSize, ValueError> {
    if v < 1 || v > u32::MAX as i128 {
        return Err(err(
            format!("batch size {v} must be at least 1"),
            "a batch is a number of hosts (1 or more) or a percentage such as \"20%\"",
        ));
    }
    Ok(BatchSize::Hosts(v as u32))
}

pub fn batch_from_str(s: &str) -> Result<BatchSize, ValueError> {
    let p = parse_percent(s)?;
    if p.0 == 0 {
        return Err(err(
            "batch percentage must be above 0%",
            "a batch is a number of hosts (1 or more) or a percentage such as \"20%\"",
        ));
    }
    Ok(BatchSize::Percent(p))
}

/// A host address split from `user@host:port`; IPv6 addresses go in brackets: `[::1]:2222`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn parse_address(s: &str) -> Result<Address, ValueError> {
    let help = "write an address as HOST, USER@HOST, HOST:PORT or USER@HOST:PORT (IPv6 in brackets: [::1]:22)";
    let (user, rest) = match s.rsplit_once('@') {
        Some(("", _)) => {
            return Err(err(format!("empty user in address {s:?}"), help));
        }
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((h, after)) = inner.split_once(']') else {
            return Err(err(format!("unclosed '[' in address {s:?}"), help));
        };
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(err(format!("unexpected text after ']' in {s:?}"), help)),
            },
        }
    } else if rest.matches(':').count() > 1 {
        return Err(err(
            format!("ambiguous address {s:?}"),
            "put IPv6 addresses in brackets, e.g. [2001:db8::1]:22",
        ));
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(err(format!("empty host in address {s:?}"), help));
    }
    let bracketed = rest.starts_with('[');
    if !valid_host(host, bracketed) {
        return Err(err(
            format!("invalid host {host:?} in address {s:?}"),
            "a host is a name or IPv4 address (letters, digits, '.', '-', '_', not starting with '-'), or an IPv6 address in brackets",
        ));
    }
    if let Some(u) = &user {
        check_account_name(u)
            .map_err(|e| err(format!("invalid user {u:?} in address {s:?}"), e.help))?;
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            parse_port_str(p).map_err(|e| err(format!("{} in address {s:?}", e.message), help))?,
        ),
    };
    Ok(Address {
        user,
        host: host.to_string(),
        port,
    })
}

/// Host names and IPv4 addresses, or (in brackets) IPv6 addresses with an optional `%zone`:
/// nothing a shell, ssh's option parser (a leading '-') or a URL would read differently.
fn valid_host(host: &str, bracketed: bool) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if bracketed {
        let (addr, zone) = host.split_once('%').unwrap_or((host, "a"));
        addr.contains(':')
            && addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
            && !zone.is_empty()
            && zone.chars().all(name_char)
    } else {
        host.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && host.chars().all(name_char)
    }
}

/// User and group names, POSIX-portable as useradd takes them by default: a lowercase letter or
/// '_', then lowercase letters, digits, '_', '-' or '.', with an optional final '$' (Samba machine
/// accounts), at most 32 characters. Dots are allowed as Debian and Red Hat allow them; upper case
/// is not (useradd refuses it without --badname). Nothing else reaches a command line.
pub fn check_account_name(s: &str) -> Result<(), ValueError> {
    let body = s.strip_suffix('$').unwrap_or(s);
    let ok = s.len() <= 32
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        return Ok(());
    }
    Err(err(
        format!("invalid user or group name {s:?}"),
        "user and group names start with a lowercase letter or '_', then use lowercase letters, digits, '_', '-' and '.' (an optional final '$'), at most 32 characters",
    ))
}

fn parse_port_str(p: &str) -> Result<u16, ValueError> {
    match p.parse::<u16>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(err(
            format!("invalid port {p:?}"),
            "a port is a number from 1 to 65535",
        )),
    }
}

pub fn port_from_integer(v: i128) -> Result<u16, ValueError> {
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(err(
            format!("port {v} is out of range"),
            "a port is a number from 1 to 65535",
        ))
    }
}

/// Names of hosts, groups, tasks, handlers and notifiers: identifiers that are safe in shell
/// words, file names and DOT output without quoting surprises.
pub fn check_name(s: &str) -> Result<(), ValueError> {
    let help = "names use letters, digits, '-', '_' and '.', and start with a letter or digit";
    let mut chars = s.chars();
    match chars.next() {
        None => Err(err("empty name", help)),
        Some(c) if !c.is_ascii_alphanumeric() => Err(err(format!("invalid name {s:?}"), help)),
        _ if s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Ok(())
        }
        _ => Err(err(format!("invalid name {s:?}"), help)),
    }
}

/// Remote paths must be absolute and must not contain characters that no shell quoting can carry
/// through every tool we drive (NUL) or that break line-oriented probe output (newlines). They
/// must also be normalised: `/tmp/..` is `/` to `rm -rf`, but not to a check for `/`, and two
/// spellings of one path would be two resources that fight each other.
pub fn check_remote_path(s: &str) -> Result<(), ValueError> {
    if !s.starts_with('/') {
        return Err(err(
            format!("path {s:?} is not absolute"),
            "remote paths must be absolute, such as \"/etc/nginx/nginx.conf\"",
        ));
    }
    if s.contains(['\n', '\r', '\0']) {
        return Err(err(
            format!("path {s:?} contains a newline or NUL"),
            "remote paths may contain spaces, quotes and other characters, but not newlines or NUL",
        ));
    }
    let normal = normalise(s);
    if normal != s {
        return Err(err(
            format!("path {s:?} is not normalised"),
            format!(
                "write it as {normal:?}: remote paths have no empty, '.' or '..' components and no trailing '/'"
            ),
        ));
    }
    Ok(())
}

/// `s` (absolute) with empty and `.` components dropped and `..` applied, as the kernel would
/// resolve it without symlinks; `/` stays `/`.
fn normalise(s: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), Mode(0o644));
        assert_eq!(parse_mode("755").unwrap(), Mode(0o755));
        assert_eq!(parse_mode("4755").unwrap(), Mode(0o4755));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rwx").is_err());
        assert!(parse_mode("").is_err());
        assert_eq!(mode_from_integer(0o755, "0o755").unwrap(), Mode(0o755));
        assert!(mode_from_integer(755, "755").is_err());
        assert!(mode_from_integer(0o17777, "0o17777").is_err());
        assert_eq!(Mode(0o644).to_string(), "0644");
    }

    #[test]
    fn percents_and_batches() {
        assert_eq!(parse_percent("20%").unwrap(), Percent(20));
        assert!(parse_percent("20").is_err());
        assert!(parse_percent("101%").is_err());
        assert_eq!(batch_from_integer(5).unwrap(), BatchSize::Hosts(5));
        assert!(batch_from_integer(0).is_err());
        assert!(batch_from_str("0%").is_err());
        assert_eq!(
            batch_from_str("25%").unwrap(),
            BatchSize::Percent(Percent(25))
        );
    }

    #[test]
    fn addresses() {
        let a = parse_address("deploy@192.168.1.10:2222").unwrap();
        assert_eq!(a.user.as_deref(), Some("deploy"));
        assert_eq!(a.host, "192.168.1.10");
        assert_eq!(a.port, Some(2222));
        let b = parse_address("[::1]:22").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", Some(22)));
        assert_eq!(parse_address("web.example.com").unwrap().port, None);
        assert!(parse_address("::1").is_err());
        assert!(parse_address("a@b:0").is_err());
        assert!(parse_address("a@b:x").is_err());
        assert!(parse_address("@b").is_err());
        assert!(parse_address("a b").is_err());
    }

    #[test]
    fn names_and_paths() {
        assert!(check_name("web-1.prod_a").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_remote_path("/opt/my app/it's").is_ok());
        assert!(check_remote_path("relative").is_err());
        assert!(check_remote_path("/a\nb").is_err());
        assert!(check_remote_path("/").is_ok());
        for bad in [
            "/.",
            "/tmp/..",
            "//etc",
            "/srv/app/",
            "/a/./b",
            "/a/../b",
            "/a//b",
        ] {
            assert!(check_remote_path(bad).is_err(), "{bad}");
        }
        assert_eq!(normalise("/tmp/.."), "/");
        assert_eq!(normalise("/a/./b//c/"), "/a/b/c");
    }

    #[test]
    fn account_names_and_hosts() {
        for ok in ["deploy", "_apt", "www-data", "first.last", "machine$", "a1"] {
            assert!(check_account_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Root",
            "root;id",
            "$(id)",
            "-x",
            "1abc",
            "a b",
            "a$b",
            &"a".repeat(33),
        ] {
            assert!(check_account_name(bad).is_err(), "{bad}");
        }
        assert!(parse_address("u@[::1;id]:22").is_err());
        assert!(parse_address("$(touch x)@host").is_err());
        assert!(parse_address("-oProxyCommand=x").is_err());
        assert!(parse_address("h;id").is_err());
        assert!(parse_address("[fe80::1%eth0]:22").is_ok());
        assert!(parse_address("deploy@web-1.example.com").is_ok());
    }
}
