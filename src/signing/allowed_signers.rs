//! OpenSSH's allowed_signers file (ssh-keygen(1), "ALLOWED SIGNERS"; git uses it for commit
//! signing): one key per line, `principals [options] keytype base64 [comment]`, with `#` comments.
//! Parsed here rather than by calling ssh-keygen so apply needs no OpenSSH binaries; the tests in
//! tests/signed_plans.rs check the same files against `ssh-keygen -Y verify`.

use ssh_key::public::KeyData;

/// One line: the key, who it stands for, and where and when it may sign.
#[derive(Debug, Clone)]
pub struct Entry {
    /// As written (comma-separated patterns); recorded as the signer.
    pub principals: String,
    pub key: KeyData,
    /// `namespaces="..."`: the patterns a signature's namespace must match, when given.
    pub namespaces: Option<String>,
    /// `valid-after` / `valid-before`, in seconds since the epoch.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub line: usize,
}

/// A line that could not be read, at file:line:col.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {what}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub what: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the quoted principals are not closed")]
    UnclosedPrincipals,
    #[error("expected `principals [options] keytype base64`")]
    Fields,
    #[error("expected a key: keytype base64")]
    NoKey,
    #[error("not a public key ({0})")]
    NotAKey(String),
    #[error("`{0}` needs a quoted value: {0}=\"...\"")]
    Unquoted(String),
    #[error("cert-authority (certificate signers) is not supported yet; list each signer's key")]
    CertAuthority,
    #[error("unknown option `{0}` (known: cert-authority, namespaces, valid-after, valid-before)")]
    UnknownOption(String),
    #[error("`{0}` is not a time: YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]")]
    NotATime(String),
}

/// Why no line of the file lets the signature's key sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    #[error("the signing key {0} is not in allowed_signers")]
    UnknownKey(String),
    #[error("the signer {principals} expired at {at} (valid-before, line {line})")]
    Expired {
        principals: String,
        at: String,
        line: usize,
    },
    #[error("the signer {principals} is not valid until {at} (valid-after, line {line})")]
    NotYetValid {
        principals: String,
        at: String,
        line: usize,
    },
    #[error(
        "the signer {principals} may only sign in the namespaces \"{namespaces}\", not `{namespace}` (line {line})"
    )]
    Namespace {
        principals: String,
        namespaces: String,
        namespace: String,
        line: usize,
    },
}

/// Reads every line of `text` (the file `file`).
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let start = raw.len() - raw.trim_start().len();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |offset: usize, what: Problem| ParseError {
            file: file.to_string(),
            line: i + 1,
            col: start + offset + 1,
            what,
        };
        out.push(parse_line(line, i + 1).map_err(|(offset, what)| fail(offset, what))?);
    }
    Ok(out)
}

/// The first line whose key is `key` and whose options allow `namespace` at `now`; otherwise why
/// not (the reason of the first line with that key, or that no line has it).
pub fn find<'a>(
    entries: &'a [Entry],
    key: &KeyData,
    namespace: &str,
    now: i64,
) -> Result<&'a Entry, NotAllowed> {
    let mut first_refusal = None;
    for e in entries.iter().filter(|e| e.key == *key) {
        match e.allows(namespace, now) {
            Ok(()) => return Ok(e),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.unwrap_or_else(|| NotAllowed::UnknownKey(fingerprint(key))))
}

/// `SHA256:...`, as ssh-keygen prints a key.
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

impl Entry {
    fn allows(&self, namespace: &str, now: i64) -> Result<(), NotAllowed> {
        let principals = self.principals.clone();
        let line = self.line;
        if let Some(ns) = &self.namespaces
            && !crate::pattern::list_matches(ns, namespace)
        {
            return Err(NotAllowed::Namespace {
                principals,
                namespaces: ns.clone(),
                namespace: namespace.to_string(),
                line,
            });
        }
        if let Some(after) = self.valid_after
            && now < after
        {
            return Err(NotAllowed::NotYetValid {
                principals,
                at: format_time(after),
                line,
            });
        }
        if let Some(before) = self.valid_before
            && now > before
        {
            return Err(NotAllowed::Expired {
                principals,
                at: format_time(before),
                line,
            });
        }
        Ok(())
    }
}

fn format_time(secs: i64) -> String {
    crate::state::format_time(secs.saturating_mul(1000))
}

type LineError = (usize, Problem);

fn parse_line(line: &str, number: usize) -> Result<Entry, LineError> {
    let (principals, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let end = quoted.find('"').ok_or((0, Problem::UnclosedPrincipals))?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        line.split_at(line.find(char::is_whitespace).unwrap_or(line.len()))
    };
    let at = |s: &str| line.len() - s.len();
    let rest = rest.trim_start();
    if principals.is_empty() || rest.is_empty() {
        return Err((at(rest), Problem::Fields));
    }
    // As ssh-keygen does: a field that starts a key is the key, anything else is options.
    let (options, key_text) = if starts_key(rest) {
        ("", rest)
    } else {
        let end = options_end(rest);
        (&rest[..end], rest[end..].trim_start())
    };
    let mut entry = Entry {
        principals: principals.to_string(),
        key: read_key(key_text).map_err(|what| (at(key_text), what))?,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        line: number,
    };
    for option in split_options(options) {
        let col = at(rest) + (option.as_ptr() as usize - options.as_ptr() as usize);
        apply_option(&mut entry, option).map_err(|what| (col, what))?;
    }
    Ok(entry)
}

fn starts_key(s: &str) -> bool {
    let word = s.split_whitespace().next().unwrap_or("");
    word.parse::<ssh_key::Algorithm>().is_ok()
}

/// Where the options field ends: the first whitespace outside double quotes.
fn options_end(s: &str) -> usize {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut from) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    if from < s.len() {
        out.push(&s[from..]);
    }
    out
}

fn apply_option(entry: &mut Entry, option: &str) -> Result<(), Problem> {
    let (name, value) = match option.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (option, None),
    };
    let value = || {
        value
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .ok_or_else(|| Problem::Unquoted(name.to_string()))
    };
    match name.to_ascii_lowercase().as_str() {
        "cert-authority" => Err(Problem::CertAuthority),
        "namespaces" => {
            entry.namespaces = Some(value()?.to_string());
            Ok(())
        }
        "valid-after" => {
            entry.valid_after = Some(parse_time(value()?)?);
            Ok(())
        }
        "valid-before" => {
            entry.valid_before = Some(parse_time(value()?)?);
            Ok(())
        }
        _ => Err(Problem::UnknownOption(name.to_string())),
    }
}

fn read_key(text: &str) -> Result<KeyData, Problem> {
    let mut words = text.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Err(Problem::NoKey);
    };
    ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}"))
        .map(|k| k.key_data().clone())
        .map_err(|e| Problem::NotAKey(e.to_string()))
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, local time unless suffixed `Z` (UTC), as
/// ssh-keygen reads them.
fn parse_time(text: &str) -> Result<i64, Problem> {
    let bad = || Problem::NotATime(text.to_string());
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (text, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).map_or(Ok(0), str::parse::<u32>);
    let field = |r| num(r).map_err(|_| bad());
    let date = chrono::NaiveDate::from_ymd_opt(field(0..4)? as i32, field(4..6)?, field(6..8)?);
    let time = chrono::NaiveTime::from_hms_opt(field(8..10)?, field(10..12)?, field(12..14)?);
    let naive = date.zip(time).map(|(d, t)| d.and_time(t)).ok_or_else(bad)?;
    if utc {
        return Ok(naive.and_utc().timestamp());
    }
    use chrono::TimeZone as _;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgC/ozaWPFPIfOqqG5J/NrzCqqE1cCaD8BPVJS9Gu0z";

    fn one(line: &str) -> Result<Entry, ParseError> {
        parse(line, "allowed_signers").map(|mut v| v.remove(0))
    }

    #[test]
    fn reads_principals_options_key_and_comment() {
        let e = one(&format!(
            "a@x,b@y namespaces=\"nexus-plan,git\",valid-after=\"20200101Z\" {ED} laptop"
        ))
        .unwrap();
        assert_eq!(e.principals, "a@x,b@y");
        assert_eq!(e.namespaces.as_deref(), Some("nexus-plan,git"));
        assert_eq!(e.valid_after, Some(1_577_836_800));
        assert_eq!(e.valid_before, None);
        let e = one(&format!("\"quoted principal\" {ED}")).unwrap();
        assert_eq!(e.principals, "quoted principal");
    }

    #[test]
    fn skips_comments_and_blank_lines_and_numbers_lines() {
        let v = parse(&format!("# team\n\n  a@x {ED}\n"), "f").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 3);
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        let e = one(&format!("a@x cert-authority {ED}")).unwrap_err();
        assert_eq!((e.line, e.col), (1, 5), "{e}");
        assert!(
            e.to_string()
                .starts_with("allowed_signers:1:5: cert-authority"),
            "{e}"
        );
        let e = one(&format!("a@x bogus=\"1\" {ED}")).unwrap_err();
        assert!(e.what.to_string().contains("unknown option `bogus`"), "{e}");
        let e = one("a@x ssh-ed25519 notbase64").unwrap_err();
        assert!(e.what.to_string().contains("not a public key"), "{e}");
        let e = one("a@x").unwrap_err();
        assert!(e.what.to_string().contains("expected"), "{e}");
        let e = one(&format!("a@x valid-before=\"2020\" {ED}")).unwrap_err();
        assert!(e.what.to_string().contains("not a time"), "{e}");
        let e = one(&format!("a@x valid-before=20200101 {ED}")).unwrap_err();
        assert!(e.what.to_string().contains("quoted value"), "{e}");
    }

    #[test]
    fn times_take_three_lengths_and_utc() {
        assert_eq!(parse_time("19700101Z"), Ok(0));
        assert_eq!(parse_time("197001010001Z"), Ok(60));
        assert_eq!(parse_time("19700101000001Z"), Ok(1));
        assert!(parse_time("19701301Z").is_err());
        assert!(parse_time("1970010100Z").is_err());
    }

    #[test]
    fn find_checks_key_namespace_and_validity() {
        let entries = parse(
            &format!(
                "old@x valid-before=\"20000101Z\" {ED}\nnew@x valid-after=\"20000101Z\",namespaces=\"nexus-*,!nexus-test\" {ED}"
            ),
            "f",
        )
        .unwrap();
        let key = entries[0].key.clone();
        let now = 1_000_000_000; // 2001
        assert_eq!(
            find(&entries, &key, "nexus-plan", now).unwrap().principals,
            "new@x"
        );
        assert!(matches!(
            find(&entries, &key, "nexus-test", now),
            Err(NotAllowed::Expired { .. })
        ));
        assert!(matches!(
            find(&entries[1..], &key, "nexus-plan", 0),
            Err(NotAllowed::NotYetValid { .. })
        ));
        assert!(matches!(
            find(&entries[1..], &key, "git", now),
            Err(NotAllowed::Namespace { .. })
        ));
        assert!(matches!(
            find(&[], &key, "nexus-plan", now),
            Err(NotAllowed::UnknownKey(_))
        ));
    }

    #[test]
    fn patterns_match_as_openssh_does() {
        assert!(crate::pattern::list_matches("git,nexus-plan", "nexus-plan"));
        assert!(crate::pattern::list_matches("*", "nexus-plan"));
        assert!(crate::pattern::list_matches("nexus-pla?", "nexus-plan"));
        assert!(!crate::pattern::list_matches("*,!nexus-*", "nexus-plan"));
        assert!(!crate::pattern::list_matches("git", "nexus-plan"));
    }
}
