//! known_hosts files: matching (plain, `[host]:port`, wildcards, negation, hashed `|1|` entries,
//! `@revoked`) and recording newly accepted keys.
//!
//! Written here rather than taken from russh, whose helper splits on single spaces, fails the
//! whole file on one unparsable key, and knows neither patterns nor markers.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_encoding::base64::{Base64, Encoding};
use russh::keys::{Algorithm, Certificate, HashAlg, PublicKey};
use sha1::Sha1;

use super::certificate;

/// The name a host's keys are recorded under: `host` for port 22, else `[host]:port`.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// SSH fingerprint of a key, `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Entry {
    // Shared by every entry of one file: a fleet's known_hosts has a line per host.
    file: Arc<Path>,
    line: usize,
    marker: Marker,
    patterns: String,
    key: PublicKey,
}

impl Entry {
    fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A recorded key that disagrees with the presented one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Key algorithm, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `SHA256:...`.
    pub fingerprint: String,
    /// `file:line`.
    pub location: String,
    /// The file.
    pub file: PathBuf,
}

/// The outcome of checking a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A recorded entry matches the key.
    Trusted,
    /// Nothing is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, and none is the presented one.
    Changed(Vec<Recorded>),
    /// The presented key is marked `@revoked` (location given).
    Revoked(String),
}

/// The outcome of checking a presented host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    /// Signed by a CA that a matching `@cert-authority` line trusts, valid now, naming the host.
    Trusted,
    /// Its CA key or its certified key is marked `@revoked`: refused outright (why given).
    Revoked(String),
    /// Not trusted as a certificate (why given); the key inside may still be known plainly.
    Untrusted(String),
}

/// All entries of a set of known_hosts files.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    // Entries whose patterns are plain names, by name, so that looking a host up in a fleet's
    // known_hosts does not match every line; the rest (wildcards, negations, hashed names)
    // are matched one by one in `scanned`. Both hold indices into `entries`, ascending.
    by_name: HashMap<String, Vec<usize>>,
    scanned: Vec<usize>,
}

impl KnownHosts {
    /// Reads the files in order. A missing file counts as empty; lines that cannot be parsed are
    /// skipped, as OpenSSH does.
    pub fn load(files: &[PathBuf]) -> Result<Self, (PathBuf, io::Error)> {
        let mut entries = Vec::new();
        for file in files {
            match std::fs::read_to_string(file) {
                Ok(text) => entries.extend(KnownHosts::parse(&text, file).entries),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((file.clone(), e)),
            }
        }
        Ok(KnownHosts::indexed(entries))
    }

    fn indexed(entries: Vec<Entry>) -> Self {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut scanned = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let plain = !e.patterns.starts_with("|1|") && !e.patterns.contains(['*', '?', '!']);
            if plain {
                let mut names: Vec<String> = e
                    .patterns
                    .split(',')
                    .map(|n| n.to_ascii_lowercase())
                    .collect();
                names.dedup();
                for name in names {
                    by_name.entry(name).or_default().push(i);
                }
            } else {
                scanned.push(i);
            }
        }
        KnownHosts {
            entries,
            by_name,
            scanned,
        }
    }

    /// The entries whose patterns match `name` (a lookup name), in file order.
    fn matching(&self, name: &str) -> Vec<&Entry> {
        let mut hits: Vec<usize> = self.by_name.get(name).cloned().unwrap_or_default();
        hits.extend(
            self.scanned
                .iter()
                .copied()
                .filter(|&i| host_matches(&self.entries[i].patterns, name)),
        );
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter().map(|i| &self.entries[i]).collect()
    }

    /// Parses the text of one known_hosts file (`file` is used in locations).
    pub fn parse(text: &str, file: &Path) -> Self {
        let mut entries = Vec::new();
        let file: Arc<Path> = Arc::from(file);
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next();
            let marker = match first {
                Some("@revoked") => Marker::Revoked,
                Some("@cert-authority") => Marker::CertAuthority,
                Some(m) if m.starts_with('@') => continue,
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields.next();
            }
            let (Some(patterns), Some(_key_type), Some(blob)) =
                (first, fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(key) = russh::keys::parse_public_key_base64(blob) else {
                continue;
            };
            entries.push(Entry {
                file: file.clone(),
                line: idx + 1,
                marker,
                patterns: patterns.to_string(),
                key,
            });
        }
        KnownHosts::indexed(entries)
    }

    /// Checks the key presented by `host`:`port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let matching: Vec<&Entry> = self
            .matching(&name)
            .into_iter()
            .filter(|e| e.marker != Marker::CertAuthority)
            .collect();
        if let Some(revoked) = matching
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
        {
            return Verdict::Revoked(revoked.location());
        }
        let recorded: Vec<&&Entry> = matching
            .iter()
            .filter(|e| e.marker == Marker::None)
            .collect();
        if recorded.iter().any(|e| e.key.key_data() == key.key_data()) {
            return Verdict::Trusted;
        }
        if recorded.is_empty() {
            return Verdict::Unknown;
        }
        Verdict::Changed(
            recorded
                .iter()
                .map(|e| Recorded {
                    key_type: e.key.algorithm().as_str().to_string(),
                    fingerprint: fingerprint(&e.key),
                    location: e.location(),
                    file: e.file.to_path_buf(),
                })
                .collect(),
        )
    }

    /// Checks the certificate presented by `host`:`port` at `now` (Unix seconds): a matching
    /// `@cert-authority` line must hold its CA key, `@revoked` may name neither that CA key nor
    /// the certified key, and the certificate must be a host certificate, valid now, with a
    /// principal naming `host` (see [`certificate::host_problem`]), signed by that CA.
    pub fn check_certificate(
        &self,
        host: &str,
        port: u16,
        cert: &Certificate,
        now: u64,
    ) -> CertVerdict {
        let name = lookup_name(host, port);
        let all = self.matching(&name);
        let matching = || all.iter().copied();
        let ca = cert.signature_key();
        for e in matching().filter(|e| e.marker == Marker::Revoked) {
            let what = if e.key.key_data() == ca {
                "CA key"
            } else if e.key.key_data() == cert.public_key() {
                "certificate key"
            } else {
                continue;
            };
            return CertVerdict::Revoked(format!(
                "its {what} {} is marked @revoked in {}",
                fingerprint(&e.key),
                e.location()
            ));
        }
        if !matching().any(|e| e.marker == Marker::CertAuthority && e.key.key_data() == ca) {
            return CertVerdict::Untrusted(format!(
                "it is signed by the CA {}, which no @cert-authority line trusts for this host",
                certificate::fingerprint(ca)
            ));
        }
        if let Some(why) = certificate::host_problem(cert, host, now) {
            return CertVerdict::Untrusted(why);
        }
        let ca_fingerprint = ca.fingerprint(HashAlg::Sha256);
        // Checked above in words; what is left to fail here is the CA's signature.
        if cert.validate_at(now, [&ca_fingerprint]).is_err() {
            return CertVerdict::Untrusted(format!(
                "its signature does not verify with the CA key {ca_fingerprint}"
            ));
        }
        CertVerdict::Trusted
    }

    /// Whether a `@cert-authority` line applies to `host`:`port`: only then are host
    /// certificates asked for, as OpenSSH does.
    pub fn has_authority_for(&self, host: &str, port: u16) -> bool {
        let name = lookup_name(host, port);
        self.matching(&name)
            .iter()
            .any(|e| e.marker == Marker::CertAuthority)
    }

    /// Algorithms of the keys recorded for `host`:`port`, to ask the server for one of those
    /// first; otherwise a host known by its RSA key that also has an ed25519 key would present
    /// the latter and look changed.
    pub fn recorded_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut algs: Vec<Algorithm> = Vec::new();
        for e in self.matching(&name) {
            if e.marker == Marker::None {
                let alg = e.key.algorithm();
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
        }
        algs
    }
}

/// known_hosts files parsed once per set of files and shared by every connection of one run,
/// since a fleet's file has a line per host and a copy per connection would grow with the
/// square of the fleet. A set is read again only when one of its files changed size or time:
/// a key recorded under accept-new, or an edit meanwhile.
#[derive(Default)]
pub struct Cache {
    loaded: Mutex<HashMap<Vec<PathBuf>, Parsed>>,
}

/// The files' stamps when they were parsed, and what they held.
type Parsed = (Vec<Stamp>, Arc<KnownHosts>);

// None: the file does not exist (or cannot be read, which `load` then reports).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Cache {
    /// The entries of `files`, in order, as [`KnownHosts::load`] reads them.
    pub fn get(&self, files: &[PathBuf]) -> Result<Arc<KnownHosts>, (PathBuf, io::Error)> {
        // Stamped before reading: a change in between is seen as a change next time.
        let stamps: Vec<Stamp> = files.iter().map(stamp).collect();
        // Held while parsing, so that hosts connecting at once wait for one parse.
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, known)) = loaded.get(files)
            && *seen == stamps
        {
            return Ok(known.clone());
        }
        let known = Arc::new(KnownHosts::load(files)?);
        loaded.insert(files.to_vec(), (stamps, known.clone()));
        Ok(known)
    }
}

/// Whether a comma-separated known_hosts pattern list matches `name` (already a lookup name).
pub fn host_matches(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    crate::pattern::list_matches(&patterns.to_ascii_lowercase(), name)
}

fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (Base64::decode_vec(salt), Base64::decode_vec(hash)) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

// Several hosts may be accepted at once; their lines must not interleave.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Records `key` for `host`:`port` at the end of `path`, creating the file (0600) and its
/// directory (0700) when missing.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut line = String::new();
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    let blob = key
        .to_openssh()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    // to_openssh() appends the key's comment; a server's key has none worth keeping.
    let mut parts = blob.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "cannot encode host key",
        ));
    };
    line.push_str(&format!("{} {kind} {b64}\n", lookup_name(host, port)));
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!(
            "|1|{}|{}",
            Base64::encode_string(salt),
            Base64::encode_string(&hash)
        )
    }

    #[test]
    fn lookup_names() {
        assert_eq!(lookup_name("Web1.Example.com", 22), "web1.example.com");
        assert_eq!(lookup_name("127.0.0.2", 2222), "[127.0.0.2]:2222");
    }

    #[test]
    fn patterns() {
        assert!(host_matches("web1,web2", "web2"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches(
            "*.example.com,!bad.example.com",
            "bad.example.com"
        ));
        assert!(host_matches("[10.0.0.?]:2222", "[10.0.0.5]:2222"));
        assert!(!host_matches("10.0.0.5", "[10.0.0.5]:2222"));
        assert!(host_matches("WEB1", "web1"));
    }

    #[test]
    fn trusted_unknown_changed() {
        let text = format!(
            "# comment\n\nweb1,10.0.0.1 ssh-ed25519 {ED1}\n[web2]:2222\tssh-ed25519   {ED2} a comment\n"
        );
        let kh = KnownHosts::parse(&text, Path::new("/kh"));
        assert_eq!(kh.check("web1", 22, &key(ED1)), Verdict::Trusted);
        assert_eq!(kh.check("10.0.0.1", 22, &key(ED1)), Verdict::Trusted);
        assert_eq!(kh.check("web2", 2222, &key(ED2)), Verdict::Trusted);
        assert_eq!(kh.check("web2", 22, &key(ED2)), Verdict::Unknown);
        match kh.check("web1", 22, &key(ED2)) {
            Verdict::Changed(r) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].location, "/kh:3");
                assert_eq!(r[0].key_type, "ssh-ed25519");
                assert_eq!(r[0].fingerprint, fingerprint(&key(ED1)));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn hashed_entries() {
        let text = format!(
            "{} ssh-ed25519 {ED1}\n{} ssh-ed25519 {ED2}\n",
            hashed("web1", b"0123456789abcdefghij"),
            hashed("[web2]:2200", b"jihgfedcba9876543210")
        );
        let kh = KnownHosts::parse(&text, Path::new("/kh"));
        assert_eq!(kh.check("web1", 22, &key(ED1)), Verdict::Trusted);
        assert_eq!(kh.check("web2", 2200, &key(ED2)), Verdict::Trusted);
        assert!(matches!(
            kh.check("web1", 22, &key(ED2)),
            Verdict::Changed(_)
        ));
        assert_eq!(kh.check("web3", 22, &key(ED1)), Verdict::Unknown);
    }

    #[test]
    fn revoked_and_bad_lines() {
        let text = format!(
            "garbage line\nweb1 ssh-ed25519 !!notbase64\n@revoked * ssh-ed25519 {ED2}\n@cert-authority * ssh-ed25519 {ED1}\nweb1 ssh-ed25519 {ED2}\n"
        );
        let kh = KnownHosts::parse(&text, Path::new("/kh"));
        assert_eq!(
            kh.check("web1", 22, &key(ED2)),
            Verdict::Revoked("/kh:3".into())
        );
        // A CA line does not make a plain key trusted.
        assert_eq!(kh.check("other", 22, &key(ED1)), Verdict::Unknown);
    }

    #[test]
    fn certificates_need_a_ca_for_the_host_and_nothing_revoked() {
        use crate::transport::certificate::tests::{key, signed};
        use russh::keys::ssh_key::certificate::CertType;
        let (host_key, ca, other_ca) = (key(1), key(2), key(3));
        let b64 = |k: &russh::keys::PrivateKey| k.public_key().to_openssh().unwrap();
        let text = format!("@cert-authority *.example.com {}\n", b64(&ca));
        let kh = KnownHosts::parse(&text, Path::new("/kh"));
        let cert = signed(
            CertType::Host,
            &["web1.example.com"],
            0,
            u64::MAX,
            &host_key,
            &ca,
        );
        assert!(kh.has_authority_for("web1.example.com", 22));
        assert!(!kh.has_authority_for("web1.example.org", 22));
        assert_eq!(
            kh.check_certificate("web1.example.com", 22, &cert, 100),
            CertVerdict::Trusted
        );
        // The CA line does not cover the host: as if it were absent.
        assert!(matches!(
            kh.check_certificate("web1.example.org", 22, &cert, 100),
            CertVerdict::Untrusted(why) if why.contains("no @cert-authority line")
        ));
        let stranger = signed(
            CertType::Host,
            &["web1.example.com"],
            0,
            u64::MAX,
            &host_key,
            &other_ca,
        );
        assert!(matches!(
            kh.check_certificate("web1.example.com", 22, &stranger, 100),
            CertVerdict::Untrusted(_)
        ));
        assert!(matches!(
            kh.check_certificate("web2.example.com", 22, &cert, 100),
            CertVerdict::Untrusted(why) if why.contains("do not name the host")
        ));

        for (revoked, what) in [(&ca, "CA key"), (&host_key, "certificate key")] {
            let text = format!("{text}@revoked * {}\n", b64(revoked));
            let kh = KnownHosts::parse(&text, Path::new("/kh"));
            assert_eq!(
                kh.check_certificate("web1.example.com", 22, &cert, 100),
                CertVerdict::Revoked(format!(
                    "its {what} {} is marked @revoked in /kh:2",
                    fingerprint(revoked.public_key())
                ))
            );
        }
    }

    #[test]
    fn append_then_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        append(&path, "web1", 2222, &key(ED1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"# no newline")
            .unwrap();
        append(&path, "web2", 22, &key(ED2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("[web1]:2222 ssh-ed25519 {ED1}\n# no newline\nweb2 ssh-ed25519 {ED2}\n")
        );
        let kh = KnownHosts::load(&[path, dir.path().join("missing")]).unwrap();
        assert_eq!(kh.check("web1", 2222, &key(ED1)), Verdict::Trusted);
        assert_eq!(kh.recorded_algorithms("web2", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn indexed_names_and_patterns_match_in_file_order() {
        let h = hashed("web3", b"salt-salt-salt-salt!");
        let text = format!(
            "*.example.com ssh-ed25519 {ED2}\nWEB1,web1 ssh-ed25519 {ED1}\n\
             web1,!web2 ssh-ed25519 {ED2}\n{h} ssh-ed25519 {ED1}\n@revoked web4 ssh-ed25519 {ED1}\n"
        );
        let kh = KnownHosts::parse(&text, Path::new("/kh"));
        // Line 2 is indexed by name (listed twice, counted once), line 3 is scanned; both
        // are reported, in file order.
        assert_eq!(kh.check("web1", 22, &key(ED1)), Verdict::Trusted);
        let locations: Vec<String> = kh.matching("web1").iter().map(|e| e.location()).collect();
        assert_eq!(locations, ["/kh:2", "/kh:3"]);
        assert_eq!(kh.matching("a.example.com").len(), 1);
        assert_eq!(kh.check("web3", 22, &key(ED1)), Verdict::Trusted);
        assert_eq!(
            kh.check("web4", 22, &key(ED1)),
            Verdict::Revoked("/kh:5".into())
        );
        assert_eq!(kh.check("web2", 22, &key(ED2)), Verdict::Unknown);
    }

    #[test]
    fn cache_parses_once_and_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![dir.path().join("known_hosts"), dir.path().join("missing")];
        append(&files[0], "web1", 22, &key(ED1)).unwrap();
        let cache = Cache::default();
        let first = cache.get(&files).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&files).unwrap()));
        assert_eq!(first.check("web2", 22, &key(ED2)), Verdict::Unknown);
        // As accept-new records a key: the next connection must see it.
        append(&files[0], "web2", 22, &key(ED2)).unwrap();
        let second = cache.get(&files).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.check("web2", 22, &key(ED2)), Verdict::Trusted);
        // A file that appears later counts as well.
        append(&files[1], "web3", 22, &key(ED1)).unwrap();
        assert_eq!(
            cache.get(&files).unwrap().check("web3", 22, &key(ED1)),
            Verdict::Trusted
        );
    }
}
